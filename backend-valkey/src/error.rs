//! Driver errors → stowage `ErrorKind`s.
//!
//! | reply or failure | kind | retryable |
//! | --- | --- | --- |
//! | I/O errors, refused or dropped connections, timeouts | `Unavailable` | yes |
//! | `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `MOVED`/`ASK` left over, no connection to a slot's node | `Unavailable` | yes |
//! | `READONLY` (a replica, e.g. after a failover), `BUSY` (a script runs too long), `OOM` (maxmemory reached), `MISCONF` (persistence failing, writes refused) | `Unavailable` | yes |
//! | `NOPERM`, `ERR ACL failure in script` (`NOPERM` met inside a script), `WRONGPASS`, `NOAUTH`, failed authentication | `Misconfigured` | no |
//! | a reply of an unexpected type | `Corruption` | no |
//! | an invalid client configuration (URL) | `InvalidInput` | no |
//! | anything else | `Internal` | no |
//!
//! Server error codes the driver does not know arrive as extension errors and are matched by
//! their code (the first word of the reply), never by the rest of the message. A script that
//! fails inside (`redis.call` refused) answers with the refusing command's code.

use redis::{ErrorKind as RedisKind, RedisError};
use stowage_core::{Error, ErrorKind};

/// Server error codes that mean "not now, try again": the server is busy, full, loading, failing
/// to persist, or a replica.
const TRANSIENT_CODES: &[&str] = &[
    "BUSY",
    "OOM",
    "MISCONF",
    "READONLY",
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
];

/// Server error codes that mean "this setup refuses": only an operator can fix them.
const SETUP_CODES: &[&str] = &["NOPERM", "WRONGPASS", "NOAUTH"];

/// What Valkey answers (after `ERR `) when a script runs a command its user may not run.
const ACL_FAILURE_IN_SCRIPT: &str = "ACL failure in script";

/// The stowage kind of a driver error.
pub(crate) fn kind_of(error: &RedisError) -> ErrorKind {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
    {
        return ErrorKind::Unavailable;
    }
    if let Some(code) = error.code() {
        if TRANSIENT_CODES.contains(&code) {
            return ErrorKind::Unavailable;
        }
        if SETUP_CODES.contains(&code) {
            return ErrorKind::Misconfigured;
        }
        // A command a script may not run answers `NOPERM` outside a script but `ERR ACL failure
        // in script: …` inside one: the server gives no code of its own, so its fixed prefix is it.
        if code == "ERR"
            && error
                .detail()
                .is_some_and(|d| d.starts_with(ACL_FAILURE_IN_SCRIPT))
        {
            return ErrorKind::Misconfigured;
        }
    }
    match error.kind() {
        RedisKind::BusyLoadingError
        | RedisKind::TryAgain
        | RedisKind::ClusterDown
        | RedisKind::MasterDown
        | RedisKind::IoError
        | RedisKind::ClusterConnectionNotFound
        | RedisKind::ReadOnly => ErrorKind::Unavailable,
        RedisKind::AuthenticationFailed => ErrorKind::Misconfigured,
        RedisKind::TypeError => ErrorKind::Corruption,
        RedisKind::InvalidClientConfig => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

/// Maps a driver error met during `op`: connection trouble, cluster churn and a server that
/// cannot take writes now → `Unavailable`; permissions and authentication → `Misconfigured`.
pub(crate) fn map(op: &str, error: RedisError) -> Error {
    let kind = kind_of(&error);
    let code = error.code().unwrap_or("no code").to_owned();
    Error::new(kind, format!("{op}: Valkey error ({code})")).with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
    }

    fn known(kind: RedisKind) -> RedisError {
        RedisError::from((kind, "An error was signalled by the server", "x".to_owned()))
    }

    #[test]
    fn transient_server_replies_are_unavailable_and_retryable() {
        for code in ["BUSY", "OOM", "MISCONF"] {
            let e = map("report_usage", server(code, "details"));
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{code}");
            assert!(e.is_retryable(), "{code}");
        }
        for kind in [
            RedisKind::ReadOnly,
            RedisKind::BusyLoadingError,
            RedisKind::TryAgain,
            RedisKind::ClusterDown,
            RedisKind::MasterDown,
            RedisKind::ClusterConnectionNotFound,
        ] {
            let e = map("report_usage", known(kind));
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{kind:?}");
            assert!(e.is_retryable(), "{kind:?}");
        }
    }

    #[test]
    fn io_failures_and_timeouts_are_unavailable() {
        for io in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::Other,
        ] {
            let e = map("usage", RedisError::from(std::io::Error::from(io)));
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{io:?}");
        }
    }

    #[test]
    fn permission_and_authentication_failures_are_misconfigured() {
        for code in ["NOPERM", "WRONGPASS", "NOAUTH"] {
            let e = map("connect", server(code, "details"));
            assert_eq!(e.kind(), ErrorKind::Misconfigured, "{code}");
            assert!(!e.is_retryable(), "{code}");
        }
        let in_script = RedisError::from((
            RedisKind::ResponseError,
            "An error was signalled by the server",
            "ACL failure in script: User u has no permissions to run the 'hset' command".to_owned(),
        ));
        assert_eq!(
            map("report_usage", in_script).kind(),
            ErrorKind::Misconfigured
        );
        let e = map(
            "connect",
            RedisError::from((
                RedisKind::AuthenticationFailed,
                "Password authentication failed",
            )),
        );
        assert_eq!(e.kind(), ErrorKind::Misconfigured);
        assert!(!e.is_retryable());
    }

    #[test]
    fn other_replies_keep_their_kinds() {
        assert_eq!(
            map("usage", RedisError::from((RedisKind::TypeError, "bad"))).kind(),
            ErrorKind::Corruption
        );
        assert_eq!(
            map(
                "connect",
                RedisError::from((RedisKind::InvalidClientConfig, "bad"))
            )
            .kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            map("usage", known(RedisKind::ResponseError)).kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            map("usage", server("WRONGTYPE", "details")).kind(),
            ErrorKind::Internal
        );
    }
}
