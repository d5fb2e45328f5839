//! PostgreSQL backend of stowage (`postgres://`, `postgresql://`) on sqlx.
//!
//! One schema per namespace (`stowage_ns_<id>`, registered in `stowage_registry.namespaces`),
//! created and migrated by `initialize()`. Every budget operation is one call of a plpgsql
//! function: one round trip, one transaction, serialized per budget by an advisory lock.
#![deny(missing_docs)]

mod backend;
mod budget;
mod config;
mod error;
mod pool;
mod records;
mod schema;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;
