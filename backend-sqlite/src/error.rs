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

/// A u64 known to be at most `MAX_AMOUNT`, as SQLite's i64.
pub(crate) fn to_sql_int(op: &str, what: &str, value: u64) -> Result<i64, Error> {
    i64::try_from(value)
        .map_err(|_| Error::invalid_input(format!("{op}: {what} {value} is above MAX_AMOUNT")))
}

/// An i64 read from SQLite as a u64; a negative value is `Corruption`.
pub(crate) fn from_sql_int(op: &str, what: &str, value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| Error::corruption(format!("{op}: stored {what} {value} is negative")))
}
