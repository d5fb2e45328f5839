//! SQLite backend of stowage (`sqlite://PATH`, `sqlite::memory:`).
//!
//! rusqlite with the bundled library; every statement runs on the backend's own threads, never on
//! the async executor. Files use WAL, `BEGIN IMMEDIATE` for writes and a busy timeout, so several
//! processes may share one file. Namespaces isolate data inside one file. One writer thread
//! group-commits concurrent writes: one transaction and one fsync for all writes waiting, each in
//! its own savepoint, each answered after the commit. Reservations (`reserve`, `commit`,
//! `release`) are writes of that kind, and so is each multi-budget call (`reserve_all`,
//! `commit_all`, `release_all`, `report_usage_all`): the core's §4.3 sequence runs inside one
//! savepoint, so it is atomic (`atomic_multi_budget`). For a file, reads (`usage`, `policy`,
//! `query`, `reservation`, `reservations`) run on read-only connections of their own threads, each
//! in one snapshot, and never wait for a write; a
//! `sqlite::memory:` database is private to one connection, so its reads run on the writer thread.
//! Every call is bounded by `operation_timeout_ms` (default 30000): past it the caller gets
//! `Unavailable`, and a write answered so is never applied (the worker module documents the
//! exact guarantees).
//!
//! [`SqliteBackend::open`] only starts the threads and opens their connections; `initialize()`
//! applies the migrations. It returns the engine behind the checked layer
//! (`stowage_core::Checked<SqliteBackend>`), which validates every call; `stats()`, `config()`
//! and the other engine methods are reached through it.
#![deny(missing_docs)]

mod backend;
mod budget;
mod config;
mod dump;
mod error;
pub mod raw;
mod records;
mod reservation;
mod schema;
mod worker;

pub use backend::{SqliteBackend, SqliteStats, TestHook};
pub use config::{SqliteConfig, SqliteLocation, Synchronous};

/// This backend's entry in the facade's driver table: its URL schemes and how to open it.
pub const DRIVER: stowage_core::raw::Driver = stowage_core::raw::Driver {
    name: "sqlite",
    schemes: &["sqlite"],
    open: |url, options| {
        Box::pin(async move {
            let backend: std::sync::Arc<dyn stowage_core::Backend> =
                std::sync::Arc::new(SqliteBackend::open(&url, options).await?);
            Ok(backend)
        })
    },
};
