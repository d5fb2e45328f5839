//! rusqlite errors → stowage `ErrorKind`s.
//!
//! | engine error | kind | retryable |
//! | --- | --- | --- |
//! | `SQLITE_READONLY` (every extended code), `SQLITE_PERM`, `SQLITE_AUTH`; permission denied (`EACCES`/`EPERM`) opening the file | `Misconfigured` | no |
//! | `SQLITE_BUSY`, `SQLITE_LOCKED` (after the busy timeout), `SQLITE_IOERR`, `SQLITE_FULL`, `SQLITE_NOMEM`, `SQLITE_CANTOPEN` (other causes), `SQLITE_PROTOCOL`, `SQLITE_INTERRUPT`; the operation timeout; a SQLite thread that stopped | `Unavailable` | yes |
//! | `SQLITE_CORRUPT`, `SQLITE_NOTADB`; a stored value of the wrong type or range | `Corruption` | no |
//! | anything else | `Internal` | no |

use std::path::Path;

use rusqlite::ErrorCode;
use stowage_core::raw::show;
use stowage_core::{Error, ErrorKind};

/// The kind of an engine error, by the table above.
fn kind_of(error: &rusqlite::Error) -> ErrorKind {
    match error {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied => ErrorKind::Misconfigured,
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OperationInterrupted => ErrorKind::Unavailable,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => ErrorKind::Corruption,
            _ => ErrorKind::Internal,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Corruption,
        _ => ErrorKind::Internal,
    }
}

/// Maps an engine error met during `op` to a stowage error by the table of this module.
pub(crate) fn map(op: &str, error: rusqlite::Error) -> Error {
    let kind = kind_of(&error);
    Error::new(kind, format!("{op}: SQLite error")).with_source(error)
}

/// Maps an error of opening the file at `path`. SQLite reports every failure to open as
/// `SQLITE_CANTOPEN`; the file system tells permission denied (a setup fault: `Misconfigured`)
/// apart from the rest (`Unavailable`) when asked to open the same path.
pub(crate) fn map_open(op: &str, path: &Path, error: rusqlite::Error) -> Error {
    let mut kind = kind_of(&error);
    if matches!(&error, rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::CannotOpen) {
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path);
        if let Err(e) = probe {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                kind = ErrorKind::Misconfigured;
            }
        }
    }
    Error::new(
        kind,
        format!(
            "{op}: SQLite cannot open {}",
            show(&path.display().to_string())
        ),
    )
    .with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{ffi, Connection, OpenFlags};

    fn code(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn kinds_follow_the_table() {
        for (error, kind) in [
            (ffi::SQLITE_READONLY, ErrorKind::Misconfigured),
            (ffi::SQLITE_READONLY_DBMOVED, ErrorKind::Misconfigured),
            (ffi::SQLITE_PERM, ErrorKind::Misconfigured),
            (ffi::SQLITE_BUSY, ErrorKind::Unavailable),
            (ffi::SQLITE_LOCKED, ErrorKind::Unavailable),
            (ffi::SQLITE_FULL, ErrorKind::Unavailable),
            (ffi::SQLITE_NOMEM, ErrorKind::Unavailable),
            (ffi::SQLITE_IOERR, ErrorKind::Unavailable),
            (ffi::SQLITE_IOERR_FSYNC, ErrorKind::Unavailable),
            (ffi::SQLITE_CANTOPEN, ErrorKind::Unavailable),
            (ffi::SQLITE_CORRUPT, ErrorKind::Corruption),
            (ffi::SQLITE_NOTADB, ErrorKind::Corruption),
            (ffi::SQLITE_MISUSE, ErrorKind::Internal),
        ] {
            let mapped = map("op", code(error));
            assert_eq!(mapped.kind(), kind, "code {error}");
            assert_eq!(mapped.is_retryable(), kind == ErrorKind::Unavailable);
        }
    }

    /// A real SQLITE_FULL: a database capped at a few pages fills up.
    #[test]
    fn a_full_database_is_unavailable() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 4;")
            .unwrap();
        let full = (0..100)
            .find_map(|_| {
                conn.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                    .err()
            })
            .expect("the database fills up");
        assert_eq!(map("store", full).kind(), ErrorKind::Unavailable);
    }

    /// A real SQLITE_READONLY: a write on a connection opened read-only.
    #[test]
    fn a_read_only_database_is_misconfigured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (v INTEGER)")
            .unwrap();
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let error = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        let mapped = map("store", error);
        assert_eq!(mapped.kind(), ErrorKind::Misconfigured);
        assert!(!mapped.is_retryable());
    }
}
