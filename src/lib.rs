//! stowage: one persistence and budget API with identical semantics on every backend.
//!
//! Pick a backend by URL with [`connect`]; the backends compiled in are chosen by cargo features
//! (`sqlite`, the default; `postgres`; `valkey`; `all-backends`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stowage::Result<()> {
//! use stowage::{BudgetPolicy, DimensionLimit, UsageOutcome, UsageReport};
//!
//! let store = stowage::connect("memory://").await?;
//! store
//!     .set_policy("team-a", &BudgetPolicy::new().limit("tokens", DimensionLimit::both(800, 1000)))
//!     .await?;
//! let receipt = store
//!     .report_usage("team-a", &UsageReport::new().add("tokens", 900).dedup_key("req-1"))
//!     .await?;
//! assert!(matches!(receipt.outcome, UsageOutcome::SoftBreach(_)));
//! // A retry of the same request applies nothing and answers the same.
//! let retry = store
//!     .report_usage("team-a", &UsageReport::new().add("tokens", 900).dedup_key("req-1"))
//!     .await?;
//! assert!(retry.replayed);
//! assert_eq!(store.usage("team-a").await?.counters["tokens"], 900);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::sync::Arc;

/// Dumps (SEMANTICS §4.5): the format's items and constants (`docs/dump-format.md`).
pub use stowage_core::dump;
/// For backend implementers: the engine trait, validated inputs and shared helpers.
pub use stowage_core::raw;
pub use stowage_core::{copy, CopyProgress, DumpSummary};
pub use stowage_core::{
    Backend, BoxFuture, Breach, BudgetBackend, BudgetPolicy, BudgetUsage, CalendarUnit,
    Capabilities, Checked, Clock, ConnectOptions, DimensionLimit, Error, ErrorKind, ManualClock,
    MemoryBackend, MultiOutcome, MultiReceipt, MultiReserveOutcome, MultiReserveReceipt,
    PersistenceBackend, QueryParams, Reservation, ReservationState, ReserveOutcome, ReserveReceipt,
    ReserveRequest, Result, StoreResult, StoredValue, SystemClock, UsageOutcome, UsageReceipt,
    UsageReport, Value, Window, WindowBounds, DEFAULT_DEDUP_TTL_MS, DEFAULT_NAMESPACE, MAX_AMOUNT,
    MAX_BATCH_ITEMS,
};

/// The PostgreSQL backend crate (`PostgresBackend`, `PostgresConfig`, …).
#[cfg(feature = "postgres")]
pub use stowage_postgres as postgres;
/// The SQLite backend crate (`SqliteBackend`, `SqliteConfig`, …).
#[cfg(feature = "sqlite")]
pub use stowage_sqlite as sqlite;
/// The Valkey backend crate (`ValkeyBackend`, `ValkeyConfig`, …).
#[cfg(feature = "valkey")]
pub use stowage_valkey as valkey;

/// The backends compiled into this build, each with its URL schemes, in the order they are tried.
pub const DRIVERS: &[raw::Driver] = &[
    MemoryBackend::DRIVER,
    #[cfg(feature = "sqlite")]
    stowage_sqlite::DRIVER,
    #[cfg(feature = "postgres")]
    stowage_postgres::DRIVER,
    #[cfg(feature = "valkey")]
    stowage_valkey::DRIVER,
];

/// The URL schemes this build can connect to (plain names such as `"sqlite"`, `"postgres"`).
pub fn available_schemes() -> Vec<&'static str> {
    raw::schemes_of(DRIVERS)
}

/// Connects to the backend named by `url` with default options and initializes it.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    connect_with(url, ConnectOptions::default()).await
}

/// Connects to the backend named by `url` with `options` and initializes it (harmless to repeat).
///
/// The scheme (the part before the first `:`) picks the driver from [`DRIVERS`]: `memory`,
/// `sqlite` (`sqlite://PATH`, `sqlite::memory:`), `postgres`/`postgresql`, `valkey`/`redis`,
/// `valkey+cluster`/`redis+cluster`. An unknown scheme, or one whose feature is not compiled in,
/// is `InvalidInput` naming the schemes that are available.
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    raw::connect_with_drivers(DRIVERS, url, options).await
}
