//! sqlx errors → stowage `ErrorKind`s, which of them are retried internally, and which leave the
//! connection unusable.

use sqlx::postgres::{PgDatabaseError, PgSeverity};
use stowage_core::{Error, ErrorKind};

/// How a failed statement should be handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Retry the same call: the statement was rolled back (serialization failure, deadlock, a
    /// unique-violation race).
    Transient(sqlx::Error),
    /// The namespace's schema, a table or a function is missing (the namespace was purged):
    /// initialize again and retry once. Nothing was applied: the statement failed as a whole.
    Undefined(sqlx::Error),
    /// Give up with this error.
    Final(Error),
}

/// How one attempt of an operation failed (what `PostgresBackend`'s one run loop acts on).
#[derive(Debug)]
pub(crate) enum Fail {
    /// The engine failed: classified by the run loop (retries, connection survival).
    Sql(sqlx::Error),
    /// Nothing was applied and another try may succeed (a row vanished between insert and
    /// read): retried like a transient failure; this error when the tries run out.
    Again(Error),
    /// Give up with this error (the connection is reused unless the attempt discarded it).
    Final(Error),
}

impl From<sqlx::Error> for Fail {
    fn from(error: sqlx::Error) -> Self {
        Fail::Sql(error)
    }
}

impl From<Error> for Fail {
    fn from(error: Error) -> Self {
        Fail::Final(error)
    }
}

/// What an SQLSTATE means to stowage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeClass {
    /// Retried internally.
    Transient,
    /// Schema objects missing: re-initialize and retry once.
    Undefined,
    /// A final error of this kind.
    Kind(ErrorKind),
}

/// The class of a PostgreSQL error code (SQLSTATE).
pub(crate) fn code_class(code: &str) -> CodeClass {
    match code {
        // serialization_failure, deadlock_detected, unique_violation (insert races).
        "40001" | "40P01" | "23505" => CodeClass::Transient,
        // invalid_schema_name, undefined_table, undefined_function.
        "3F000" | "42P01" | "42883" => CodeClass::Undefined,
        // query_canceled (statement_timeout), lock_not_available (lock_timeout), admin/crash
        // shutdown, cannot_connect_now, disk_full, out_of_memory, too_many_connections,
        // configuration_limit_exceeded, read_only_sql_transaction (a hot standby after failover).
        "57014" | "55P03" | "57P01" | "57P02" | "57P03" | "53100" | "53200" | "53300" | "53400"
        | "25006" => CodeClass::Kind(ErrorKind::Unavailable),
        // connection_exception and its subclasses.
        c if c.starts_with("08") => CodeClass::Kind(ErrorKind::Unavailable),
        // insufficient_privilege, invalid_authorization_specification, invalid_password.
        "42501" | "28000" | "28P01" => CodeClass::Kind(ErrorKind::Misconfigured),
        "22003" => CodeClass::Kind(ErrorKind::Overflow),
        "22P02" | "22021" => CodeClass::Kind(ErrorKind::InvalidInput),
        _ => CodeClass::Kind(ErrorKind::Internal),
    }
}

/// Classifies an engine error met during `op`.
pub(crate) fn classify(op: &str, error: sqlx::Error) -> Failure {
    let kind = match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code_class(&code) {
                CodeClass::Transient => return Failure::Transient(error),
                CodeClass::Undefined => return Failure::Undefined(error),
                CodeClass::Kind(kind) => kind,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorKind::Unavailable,
        // Certificates, a server without TLS where the URL requires it, unsupported modes: only
        // an operator can fix these.
        sqlx::Error::Tls(_) => ErrorKind::Misconfigured,
        sqlx::Error::Configuration(_) => ErrorKind::InvalidInput,
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => ErrorKind::Corruption,
        _ => ErrorKind::Internal,
    };
    Failure::Final(Error::new(kind, format!("{op}: PostgreSQL error")).with_source(error))
}

/// Maps an engine error to a final stowage error (transient ones become `Unavailable`).
pub(crate) fn map(op: &str, error: sqlx::Error) -> Error {
    match classify(op, error) {
        Failure::Final(e) => e,
        Failure::Transient(e) => {
            Error::unavailable(format!("{op}: PostgreSQL kept failing transiently")).with_source(e)
        }
        Failure::Undefined(e) => Error::internal(format!(
            "{op}: the namespace's schema objects are missing even after initializing again"
        ))
        .with_source(e),
    }
}

/// Whether the connection that met `error` can serve another statement: only when a live session
/// answered with an ordinary error. Everything else — I/O errors, a broken protocol, FATAL or
/// PANIC messages (57P01/57P02/57P03 when the server shuts down or crashes), connection
/// exceptions (08…) — leaves it dead or in an unknown state; and a read-only session (25006) is
/// on a standby, so a new connection may find the new primary.
pub(crate) fn connection_survives(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let fatal = db
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    !(fatal
        || code.starts_with("08")
        || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "25006"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let kind = |code| code_class(code);
        for code in [
            "57014", "55P03", "57P01", "57P02", "57P03", "53100", "53200", "53300", "53400",
            "25006", "08000", "08003", "08006", "08001", "08004", "08P01",
        ] {
            assert_eq!(
                kind(code),
                CodeClass::Kind(ErrorKind::Unavailable),
                "{code}"
            );
        }
        for code in ["42501", "28000", "28P01"] {
            assert_eq!(
                kind(code),
                CodeClass::Kind(ErrorKind::Misconfigured),
                "{code}"
            );
        }
        for code in ["40001", "40P01", "23505"] {
            assert_eq!(kind(code), CodeClass::Transient, "{code}");
        }
        for code in ["3F000", "42P01", "42883"] {
            assert_eq!(kind(code), CodeClass::Undefined, "{code}");
        }
        assert_eq!(kind("22003"), CodeClass::Kind(ErrorKind::Overflow));
        assert_eq!(kind("22P02"), CodeClass::Kind(ErrorKind::InvalidInput));
        assert_eq!(kind("22021"), CodeClass::Kind(ErrorKind::InvalidInput));
        assert_eq!(kind("XX000"), CodeClass::Kind(ErrorKind::Internal));
        assert_eq!(kind("42601"), CodeClass::Kind(ErrorKind::Internal));
    }

    #[test]
    fn errors_without_a_server_answer_are_unavailable_or_misconfigured() {
        let kind = |error| match classify("op", error) {
            Failure::Final(e) => (e.kind(), e.is_retryable()),
            other => panic!("not final: {other:?}"),
        };
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(kind(io()), (ErrorKind::Unavailable, true));
        assert_eq!(
            kind(sqlx::Error::Protocol("eof".into())),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            kind(sqlx::Error::Tls("server does not support TLS".into())),
            (ErrorKind::Misconfigured, false)
        );
        assert!(!connection_survives(&io()));
        assert!(!connection_survives(&sqlx::Error::Protocol("eof".into())));
    }
}
