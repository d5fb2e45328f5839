//! sqlx errors → stowage `ErrorKind`s, and which of them are retried internally.

use stowage_core::{Error, ErrorKind};

/// How a failed statement should be handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Retry the same call (serialization failure, deadlock, a unique-violation race).
    Transient(sqlx::Error),
    /// Give up with this error.
    Final(Error),
}

/// Classifies an engine error met during `op`.
pub(crate) fn classify(op: &str, error: sqlx::Error) -> Failure {
    let kind = match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "40001" | "40P01" | "23505" => return Failure::Transient(error),
                "57014" | "57P01" | "57P02" | "57P03" | "53300" | "53400" => ErrorKind::Unavailable,
                c if c.starts_with("08") => ErrorKind::Unavailable,
                "22003" => ErrorKind::Overflow,
                "22P02" | "22021" => ErrorKind::InvalidInput,
                _ => ErrorKind::Internal,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorKind::Unavailable,
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
    }
}
