//! rusqlite errors → stowage `ErrorKind`s.

use rusqlite::ErrorCode;
use stowage_core::{Error, ErrorKind};

/// Maps an engine error met during `op` to a stowage error: busy/locked → `Unavailable`, corrupt → `Corruption`.
pub(crate) fn map(op: &str, error: rusqlite::Error) -> Error {
    let kind = match &error {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::Unavailable,
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::FileLockingProtocolFailed => ErrorKind::Unavailable,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => ErrorKind::Corruption,
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Corruption,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{op}: SQLite error")).with_source(error)
}
