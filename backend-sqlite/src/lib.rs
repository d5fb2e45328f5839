//! SQLite backend of stowage (`sqlite://PATH`, `sqlite::memory:`).
//!
//! rusqlite with the bundled library; every statement runs on the backend's own thread, never on
//! the async executor. Files use WAL, `BEGIN IMMEDIATE` for writes and a busy timeout, so several
//! processes may share one file. Namespaces isolate data inside one file. Concurrent writes are
//! group-committed: one transaction and one fsync for all writes waiting, each in its own
//! savepoint, each answered after the commit.
#![deny(missing_docs)]

mod backend;
mod budget;
mod config;
mod error;
pub mod raw;
mod records;
mod schema;
mod worker;

pub use backend::{SqliteBackend, SqliteStats, TestHook};
pub use config::{SqliteConfig, SqliteLocation, Synchronous};
