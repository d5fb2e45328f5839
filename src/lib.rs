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

pub use stowage_core::*;

/// The URL schemes this build can connect to, for error messages and discovery.
pub fn available_schemes() -> Vec<&'static str> {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "sqlite") {
        schemes.extend(["sqlite://PATH", "sqlite::memory:"]);
    }
    if cfg!(feature = "postgres") {
        schemes.extend(["postgres://…", "postgresql://…"]);
    }
    if cfg!(feature = "valkey") {
        schemes.extend([
            "valkey://…",
            "redis://…",
            "valkey+cluster://h:p,h:p",
            "redis+cluster://h:p,h:p",
        ]);
    }
    schemes
}

/// Connects to the backend named by `url` with default options and initializes it.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    connect_with(url, ConnectOptions::default()).await
}

/// Connects to the backend named by `url` with `options` and initializes it (harmless to repeat).
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    let backend: Arc<dyn Backend> = if url == "memory://" || url == "memory:" {
        Arc::new(MemoryBackend::with_options(options)?)
    } else if is_sqlite(url) {
        connect_sqlite(url, options).await?
    } else if is_postgres(url) {
        connect_postgres(url, options).await?
    } else if is_valkey(url) {
        connect_valkey(url, options).await?
    } else {
        return Err(unknown_scheme(url));
    };
    backend.initialize().await?;
    Ok(backend)
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn is_valkey(url: &str) -> bool {
    [
        "valkey://",
        "redis://",
        "valkey+cluster://",
        "redis+cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

#[cfg(feature = "valkey")]
async fn connect_valkey(url: &str, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(
        stowage_valkey::ValkeyBackend::open(url, options).await?,
    ))
}

#[cfg(not(feature = "valkey"))]
async fn connect_valkey(url: &str, _options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Err(unknown_scheme(url))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(
        stowage_postgres::PostgresBackend::open(url, options).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(url: &str, _options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Err(unknown_scheme(url))
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(
        stowage_sqlite::SqliteBackend::open(url, options).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(url: &str, _options: ConnectOptions) -> Result<Arc<dyn Backend>> {
    Err(unknown_scheme(url))
}

fn unknown_scheme(url: &str) -> Error {
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Error::invalid_input(format!(
        "connect: URL scheme {} is unknown or not compiled in; available: {}",
        show(scheme),
        available_schemes().join(", ")
    ))
}
