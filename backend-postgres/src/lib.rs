//! PostgreSQL backend of stowage (`postgres://`, `postgresql://`) on sqlx.
//!
//! One schema per namespace (`stowage_ns_<id>`, registered in `stowage_registry.namespaces`),
//! created and migrated by `initialize()`. Every budget operation is one call of a plpgsql
//! function: one round trip, one transaction, serialized per budget by an advisory lock.
//!
//! Budget windows (SEMANTICS §4.1): the server stores a policy's window spec and, per budget, the
//! window its counters belong to, but never computes a window — `Window::bounds_at` runs in Rust.
//! A report inside the stored window is one call; the first report after a rollover is two (the
//! server answers `window` with the policy's spec, applying nothing; Rust computes the bounds at
//! now and repeats the call with them). `usage` reads counters, stored window and policy window in
//! one statement and applies `WindowStep::at` in Rust. `set_policy`/`delete_policy` pass the new
//! window's bounds and the server keeps or drops the counters as `WindowChange::at` does (a second
//! call only when the old window has to be computed at now, i.e. it passed or is missing).
//!
//! Reservations and several budgets (SEMANTICS §4.2, §4.3, migration 4): a reservation is one row
//! in the canonical form of `Reservation` (its expiry is read, never written); pending is summed
//! over the held rows with `expires_at > now`. `reserve`, `commit`, `release` and the four calls
//! over several budgets are each one plpgsql call answering `ReservationReply`'s status words,
//! one row per step; the multi calls lock their budgets in name order and run the sequence of
//! `stowage_core::raw::reserve_all` (and the others) inside that call, and Rust builds the answer
//! with `raw::reserve_answer` / `raw::commit_answer`. A commit that applies after a rollover
//! takes one more call (the server names the windows whose bounds it needs).
//!
//! Dumps (SEMANTICS §4.5, migration 7): an export page is one statement, a keyset range scan of at
//! most 1000 rows on an index after the previous page's last key (records by `records_in_order`,
//! `(name, stored_at, id)`; every other section by its primary key). An import batch is one
//! statement (one multi-row insert per table, `unnest` of one array per column, in data-modifying
//! CTEs): one round trip, one transaction; records keep the dump's order as their identity order.
//!
//! - `PostgresBackend::open` only connects; `initialize` registers the namespace and creates or
//!   migrates its schema (a handle that skipped it initializes the namespace at its first call).
//! - `durable` is read at connect from what the backend's sessions see: `fsync` and
//!   `full_page_writes` on and `synchronous_commit` not `off`.
//! - Every session runs with `statement_timeout` and `lock_timeout` at two fifths of
//!   `operation_timeout_ms` (they override the same settings given in the URL), and no statement
//!   is sent with less than half of the operation timeout left: the server gives a statement up
//!   before the client does, so a call that answered `Unavailable` on its timeout never applies.
//! - A connection is reused only after an ordinary answer from a live session; one that meets
//!   an I/O error, a FATAL message or a connection exception is closed with every idle one. A call
//!   whose idle connection turns out dead is sent once more on a new connection when sending it
//!   twice is harmless (reads, keyed reports, `store_idempotent`, `purge`, `reserve`, `commit`
//!   and the multi calls but `release_all`), never otherwise (`release` and `release_all`
//!   included: resent, a release would answer `false` for the hold its first try freed).
//! - `purge` drops the namespace's schema and registry row; a handle that then meets a missing
//!   schema, table or function initializes the namespace again and retries once.
#![deny(missing_docs)]

mod backend;
mod budget;
mod config;
mod dump;
mod error;
mod pool;
mod records;
mod schema;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;

/// This backend's entry in the facade's driver table: its URL schemes and how to open it
/// (connect only; `stowage::connect` then runs `initialize`).
pub const DRIVER: stowage_core::raw::Driver = stowage_core::raw::Driver {
    name: "postgres",
    schemes: &["postgres", "postgresql"],
    open: |url, options| {
        Box::pin(async move {
            let backend: std::sync::Arc<dyn stowage_core::Backend> =
                std::sync::Arc::new(PostgresBackend::open(&url, options).await?);
            Ok(backend)
        })
    },
};
