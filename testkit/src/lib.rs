//! stowage-testkit: what the conformance suite, the backends' tests, the benchmarks and the
//! `stowage` command share to run against real servers.
//!
//! - [`servers`]: throwaway PostgreSQL (`initdb` + `pg_ctl`) and Valkey (standalone, and a
//!   3-master cluster) on loopback ports in temp dirs, stopped when the process exits; the
//!   shared server of a test process (`shared_url`), unless `STOWAGE_POSTGRES_URL`,
//!   `STOWAGE_VALKEY_URL` or `STOWAGE_VALKEY_CLUSTER_URL` name an existing one; a minimal RESP
//!   client.
//! - [`env`](mod@env): the environment knobs — [`is_required`] (`STOWAGE_REQUIRE_BACKENDS`),
//!   [`env_number`], the URL and binary variables — and [`available`], the skip-or-require rule
//!   every test harness applies: an unavailable backend is skipped with its reason printed, unless
//!   it is required, in which case the test fails.
//! - [`rng`]: a seeded generator (SplitMix64) that reproduces a sequence everywhere.
//! - [`child`]: the protocol of scenarios that re-run a test as child processes (process races,
//!   client crashes).
//! - [`unique_namespace`]: names no other test, process or run uses.
//!
//! It depends on nothing but the standard library, so the CLI and the benchmarks can spawn
//! servers without the conformance suite.
#![deny(missing_docs)]

pub mod child;
pub mod env;
mod names;
pub mod rng;
pub mod servers;

pub use env::{available, env_number, is_required};
pub use names::unique_namespace;
