//! stowage-conformance: the one suite every backend passes, written once against `Arc<dyn Backend>`.
//!
//! A backend crate (inside this workspace or outside it) implements [`Harness`] and writes, in a
//! test file:
//!
//! ```text
//! stowage_conformance::conformance_tests!("mybackend", my_harness());
//! ```
//!
//! where `my_harness()` returns an [`Availability`]: the harness, or the reason the backend
//! cannot run here (the tests then print the reason and pass, unless the name is listed in
//! `STOWAGE_REQUIRE_BACKENDS`, in which case they fail: the rule is
//! [`stowage_testkit::available`]). The macro makes one `#[test]` per case, named
//! `<module>::<case>`: 188 cases in 13 groups (`records` 28, `budget` 23, `dedup` 15, `names` 8,
//! `numbers` 7, `lifecycle` 6, `races` 8, `windows` 21, `reservations` 40, `several` 16,
//! `batch` 9, `dump` 6, `differential` 1). Each case module lists its own cases
//! at its end, with `cases! { … }` (see `src/macros.rs`); a new case is a function plus one line
//! there. [`all_cases`] lists the same cases for other runners (for example a command-line tool,
//! through [`run_all`]).
//!
//! Each case runs in namespaces of its own, and every namespace it opens through its [`Ctx`] is
//! destroyed with [`Backend::purge`] when it ends, pass or fail, so
//! that running the suite against a live deployment leaves nothing behind: a backend must
//! implement `purge` to pass (a purge that fails fails the case). The differential test opens two
//! handles on one namespace, with different dedup TTLs, when the backend is `shared`.
//!
//! The reliability scenarios every backend runs from its own tests live here too
//! ([`reliability`], [`process_race`]). What tests, benchmarks and the CLI share to reach real
//! servers — throwaway servers, the seeded RNG, environment knobs, the child-process protocol —
//! is in `stowage-testkit`; [`servers`], [`rng`], [`is_required`] and [`unique_namespace`] are
//! re-exported from it for compatibility.
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod cases;
mod context;
pub mod differential;
pub mod lockstep;
mod memory;
pub mod process_race;
pub mod reliability;
pub mod round_trips;
mod runner;

use std::sync::Arc;

use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};

pub use context::{Ctx, START_MS};
pub use memory::MemoryHarness;
pub use runner::{run_all, run_case, run_case_within, run_test, CaseOutcome, CASE_TIMEOUT};

/// Kept for compatibility: the throwaway servers live in `stowage_testkit::servers`.
pub use stowage_testkit::servers;

/// Kept for compatibility: the seeded generator lives in `stowage_testkit::rng`.
pub use stowage_testkit::rng;

/// Kept for compatibility: these live in `stowage_testkit` (with `stowage_testkit::available`,
/// the skip-or-require rule built on `is_required`).
pub use stowage_testkit::{is_required, unique_namespace};

/// Opens backends of one kind on one store (file, server, cluster) for the suite.
pub trait Harness: Send + Sync + 'static {
    /// Opens and initializes a backend on this harness's store, with `options` (namespace, clock, TTL).
    ///
    /// Backends opened with the same namespace must see the same data when the backend is `shared`
    /// or `durable`; a different namespace must see none of it. The suite purges every namespace
    /// it opened through a handle opened here, so a namespace opened again must be the same one.
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>>;
}

/// Any function from options to an opened backend is a harness.
impl<F> Harness for F
where
    F: Fn(ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync + 'static,
{
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        self(options)
    }
}

/// A harness, or why this backend cannot be tested here.
pub type Availability = std::result::Result<Arc<dyn Harness>, String>;

/// One conformance case: a name (`module::function`) and the function that runs it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// `module::function`, e.g. `budget::hard_breach_applies_nothing`.
    pub name: &'static str,
    /// Runs the case; it panics on failure.
    pub run: fn(Ctx) -> BoxFuture<'static, ()>,
}

/// Every conformance case, in suite order: each case module's own list (in the order
/// [`conformance_tests!`] makes their tests).
pub fn all_cases() -> Vec<Case> {
    [
        cases::records::cases(),
        cases::budget::cases(),
        cases::dedup::cases(),
        cases::names::cases(),
        cases::numbers::cases(),
        cases::lifecycle::cases(),
        cases::races::cases(),
        cases::windows::cases(),
        cases::reservations::cases(),
        cases::several::cases(),
        cases::batch::cases(),
        cases::dump::cases(),
        differential::cases(),
    ]
    .concat()
}
