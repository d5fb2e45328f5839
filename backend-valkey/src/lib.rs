//! Valkey backend of stowage: `valkey://`, `redis://` (standalone), `valkey+cluster://`, `redis+cluster://`.
//!
//! Every budget write is one atomic script call (EVALSHA, reloaded on NOSCRIPT). Windows (SEMANTICS
//! §4.1) are computed only in Rust (`Window::bounds_at`): a budget's stored window (spec and
//! bounds) lives in its own hash next to the counters; the first report after a rollover is
//! answered `window` by the script and repeated once with the new bounds, so a report costs one
//! round trip inside a window and two after a rollover. Amounts and times stay decimal strings
//! inside Lua, never doubles. Every key one call touches shares one hash tag
//! derived from namespace + budget (or namespace + record), so scripts are cluster-safe; names are
//! length-prefixed in keys, so no two names share storage and no name can steer the hash slot.
//! Keys spell the namespace by a short id registered once per namespace on the server, and a
//! dedup record is one string (fingerprint digest, status, expiry): key layout 2, see `keys.rs`.
//!
//! Reservations (SEMANTICS §4.2) live next to the counters under the budget's hash tag: a hash
//! of records (id → the canonical `Reservation`, NUL-separated decimal strings), a lexicographic
//! sorted set of unresolved holds by 19-digit expiry (sorted set scores are doubles, exact only to
//! 2^53), the pending amount per dimension (decimal strings, swept of expired holds on every
//! write; reads leave expired holds out), and the order in which ids are forgotten (a few removed
//! on each write). `reserve`, `commit` and `release` are one script call each (`commit` takes a
//! second after a window rollover, as reports do; `reserve` writes no counters, so it counts a
//! passed window's counters as zero without asking for bounds, except at times where some window
//! may fail to compute, `bounds_always_computable`, so that it fails there as the model does). Several budgets (§4.3): on a
//! standalone server one script runs the whole sequence of `stowage_core::multi` over every
//! budget's keys (`atomic_multi_budget`); a cluster composes the calls budget by budget.
//!
//! Batches (SEMANTICS §4.4): `report_usage_batch` pipelines the items' `report_usage` EVALSHAs,
//! one pipeline on a standalone server (one round trip, two right after a window rollover) and
//! one per hash slot on a cluster, sent concurrently; items that must be repeated (`window`,
//! NOSCRIPT) are repeated in order per budget in one more pipeline. See `batch.rs` and
//! `docs/semantics.md` ("Batches on Valkey") for the repeat rule, the timeout and the cluster's
//! limits.
#![deny(missing_docs)]

mod backend;
mod batch;
mod budget;
mod config;
mod connection;
mod dump;
mod error;
mod keys;
pub mod raw;
mod records;
mod reservations;
mod rows;
mod scripts;

pub use backend::ValkeyBackend;
pub use config::{ValkeyConfig, ValkeyTopology};
pub use keys::hash_slot;

/// This backend's entry in the facade's driver table: its URL schemes and how to open it (open
/// connects only; the caller initializes).
pub const DRIVER: stowage_core::raw::Driver = stowage_core::raw::Driver {
    name: "valkey",
    schemes: &["valkey", "redis", "valkey+cluster", "redis+cluster"],
    open: |url, options| {
        Box::pin(async move {
            let backend: std::sync::Arc<dyn stowage_core::Backend> =
                std::sync::Arc::new(ValkeyBackend::open(&url, options).await?);
            Ok(backend)
        })
    },
};
