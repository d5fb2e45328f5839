//! Driver errors → stowage `ErrorKind`s.

use redis::{ErrorKind as RedisKind, RedisError};
use stowage_core::{Error, ErrorKind};

/// Maps a driver error met during `op`: connection trouble and cluster churn → `Unavailable`.
pub(crate) fn map(op: &str, error: RedisError) -> Error {
    let kind = if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
    {
        ErrorKind::Unavailable
    } else {
        match error.kind() {
            RedisKind::BusyLoadingError
            | RedisKind::TryAgain
            | RedisKind::ClusterDown
            | RedisKind::MasterDown
            | RedisKind::IoError
            | RedisKind::ClusterConnectionNotFound
            | RedisKind::ReadOnly => ErrorKind::Unavailable,
            RedisKind::TypeError => ErrorKind::Corruption,
            RedisKind::InvalidClientConfig => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        }
    };
    Error::new(kind, format!("{op}: Valkey error")).with_source(error)
}
