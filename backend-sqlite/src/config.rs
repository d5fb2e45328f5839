//! `sqlite://` URLs → configuration (query parameters read by the shared [`UrlParams`]).

use std::path::PathBuf;
use std::time::Duration;

use stowage_core::{Error, Result};

use stowage_core::raw::{show, UrlParams};

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A file, shared by every connection and process that opens it.
    File(PathBuf),
    /// A private in-memory database that lives as long as the backend. Only the backend's writer
    /// connection can see it, so reads run on the writer thread too (no separate read connections).
    Memory,
}

/// How hard SQLite pushes commits to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is durable once it returns (the default).
    Full,
    /// WAL commits may be lost on power failure (not on a process crash).
    Normal,
}

/// Configuration of one SQLite backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database.
    pub location: SqliteLocation,
    /// How long a writer waits for another process's lock before the call fails as `Unavailable`
    /// (`busy_timeout_ms`, default 10000). Never more than what is left of the operation timeout.
    pub busy_timeout: Duration,
    /// Bound of one operation (`operation_timeout_ms`, default 30000, at least 1), counted from
    /// the call. What holds:
    /// - A call whose work has not *started* by then is answered `Unavailable` at that moment,
    ///   and its work never runs afterwards: a write answered `Unavailable` for its timeout is
    ///   never applied. (A write starts only once the writer holds the write lock; the caller and
    ///   the thread decide atomically between "started" and "given up".)
    /// - Waiting for another connection's write lock (`busy_timeout`) never outlasts the bound.
    /// - A write that started before the bound finishes its batch's transaction and its caller
    ///   gets the real outcome, possibly after the bound: by then nothing waits for another
    ///   connection, only for its own statements and the commit's fsync.
    /// - A read that has not answered by the bound is `Unavailable` (it changes nothing).
    /// - An `Unavailable` for any other reason (a SQLite thread that died mid-write) may follow an
    ///   applied write; retrying with the same dedup or idempotency key is safe, as always.
    pub operation_timeout: Duration,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// How many waiting writes may share one commit (`group_commit=off` makes it 1; default 64).
    pub max_batch: usize,
}

impl SqliteConfig {
    /// Parses `sqlite::memory:` or
    /// `sqlite://PATH[?busy_timeout_ms=N&operation_timeout_ms=N&synchronous=full|normal&group_commit=on|off]`.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, mut params) = UrlParams::parse(url)?;
        let location = if base == "sqlite::memory:" || base == "sqlite://:memory:" {
            SqliteLocation::Memory
        } else if let Some(path) = base.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(Error::invalid_input(format!(
                    "connect: SQLite URL {} has no path; use sqlite://PATH or sqlite::memory:",
                    show(url)
                )));
            }
            SqliteLocation::File(PathBuf::from(path))
        } else {
            return Err(Error::invalid_input(format!(
                "connect: {} is not a SQLite URL; use sqlite://PATH or sqlite::memory:",
                show(url)
            )));
        };
        let busy_timeout = params.take_u64("busy_timeout_ms", 0, u64::MAX)?;
        let operation_timeout = params.take_u64("operation_timeout_ms", 1, u64::MAX)?;
        let synchronous =
            params.take_choice("synchronous", &["full", "FULL", "normal", "NORMAL"])?;
        let group_commit = params.take_choice("group_commit", &["on", "true", "off", "false"])?;
        params.finish()?;
        Ok(SqliteConfig {
            location,
            busy_timeout: Duration::from_millis(busy_timeout.unwrap_or(10_000)),
            operation_timeout: Duration::from_millis(operation_timeout.unwrap_or(30_000)),
            synchronous: match synchronous {
                Some("normal" | "NORMAL") => Synchronous::Normal,
                _ => Synchronous::Full,
            },
            max_batch: match group_commit {
                Some("off" | "false") => 1,
                _ => 64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::ErrorKind;

    #[test]
    fn parses_files_memory_and_parameters() {
        let c = SqliteConfig::from_url(
            "sqlite:///tmp/a.db?busy_timeout_ms=250&synchronous=normal&operation_timeout_ms=900",
        )
        .unwrap();
        assert_eq!(c.location, SqliteLocation::File("/tmp/a.db".into()));
        assert_eq!(c.busy_timeout, Duration::from_millis(250));
        assert_eq!(c.operation_timeout, Duration::from_millis(900));
        assert_eq!(
            SqliteConfig::from_url("sqlite:///tmp/a.db")
                .unwrap()
                .operation_timeout,
            Duration::from_millis(30_000)
        );
        assert_eq!(c.synchronous, Synchronous::Normal);
        assert_eq!(
            SqliteConfig::from_url("sqlite::memory:").unwrap().location,
            SqliteLocation::Memory
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "sqlite://",
            "sqlite://a.db?nope=1",
            "sqlite://a.db?synchronous=off",
            "sqlite://a.db?busy_timeout_ms=-1",
            "sqlite://a.db?group_commit=maybe",
            "sqlite://a.db?operation_timeout_ms=0",
            "sqlite://a.db?operation_timeout_ms=x",
            "sqlite://a.db?busy_timeout_ms=1&busy_timeout_ms=2",
            "postgres://x",
        ] {
            assert_eq!(
                SqliteConfig::from_url(url).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{url}"
            );
        }
    }
}
