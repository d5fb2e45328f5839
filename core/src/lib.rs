//! stowage-core: the contract every stowage backend keeps.
//!
//! Traits ([`PersistenceBackend`], [`BudgetBackend`], [`Backend`]), request and result types,
//! errors, the shared input validation, the record pattern matcher, the [`Clock`], and
//! [`MemoryBackend`], the executable reference model every other backend is compared to.
//! The behaviour is specified in `docs/semantics.md` of the stowage repository.
#![deny(missing_docs)]

use std::future::Future;
use std::pin::Pin;

mod access;
mod batch;
mod budget;
mod capabilities;
mod clock;
mod driver;
pub mod dump;
mod error;
mod memory;
mod multi;
mod options;
mod query;
pub mod raw;
mod records;
mod reply;
mod reservation;
mod window;

pub use access::Checked;
pub use batch::MAX_BATCH_ITEMS;
pub use budget::{
    Breach, BudgetBackend, BudgetPolicy, BudgetUsage, DimensionLimit, UsageOutcome, UsageReceipt,
    UsageReport,
};
pub use capabilities::Capabilities;
pub use clock::{Clock, ManualClock, SystemClock};
pub use dump::{copy, CopyProgress, DumpSummary};
pub use error::{Error, ErrorKind, Result};
pub use memory::MemoryBackend;
pub use multi::{MultiOutcome, MultiReceipt, MultiReserveOutcome, MultiReserveReceipt};
pub use options::{ConnectOptions, DEFAULT_DEDUP_TTL_MS, DEFAULT_NAMESPACE};
pub use records::{PersistenceBackend, QueryParams, StoreResult, StoredValue};
pub use reservation::{
    Reservation, ReservationState, ReserveOutcome, ReserveReceipt, ReserveRequest,
};
/// Record values are JSON values.
pub use serde_json::Value;
pub use window::{CalendarUnit, Window, WindowBounds};

/// A boxed, sendable future: what every backend method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest amount, limit, counter or timestamp: `i64::MAX`, so every engine can hold it exactly.
pub const MAX_AMOUNT: u64 = 9_223_372_036_854_775_807;

/// Everything a backend offers; what `stowage::connect` returns.
pub trait Backend: PersistenceBackend + BudgetBackend {
    /// Honest facts about this backend.
    fn capabilities(&self) -> Capabilities;

    /// Destroys everything of this handle's namespace: records, policies, counters, dedup
    /// records, and the namespace's own schema or keys. Other namespaces are untouched.
    ///
    /// **Destructive and final**: meant for tests, tooling and tenants that leave. Other handles
    /// on the namespace may go on using it afterwards; they find it empty (a backend re-creates
    /// what it needs, so purging twice, or using the namespace again, is harmless).
    fn purge(&self) -> BoxFuture<'_, Result<()>>;

    /// Writes every item of this namespace into `out` as a dump (SEMANTICS §4.5,
    /// `docs/dump-format.md`): JSON lines in canonical order, the state as read at one clock
    /// reading (the header's `exported_at`). Reads page by page: memory stays bounded whatever the
    /// namespace's size. Writes happen on the calling task: give a buffered writer.
    ///
    /// A page is read at a time, not one snapshot: writes made while an export runs may or may not
    /// be in it. Stop writers for an exact copy.
    fn export<'a>(
        &'a self,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>>;

    /// Reads a dump from `input` into this namespace, which must be empty (`InvalidInput`
    /// otherwise); afterwards every operation answers as it would have on the source, at clock
    /// readings from the dump's `exported_at` on. Every line is checked before its batch is
    /// written: a bad line is `InvalidInput` naming it. Nothing is written when the header or the
    /// emptiness check fails; a bad line later leaves the batches before it imported (the error
    /// says how many): purge the namespace before importing again.
    fn import<'a>(
        &'a self,
        input: &'a mut (dyn tokio::io::AsyncBufRead + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>>;

    /// Whether this namespace holds nothing at all (no record, policy, counter, window,
    /// reservation or dedup record, live or not): what `import` requires of its target.
    fn is_empty(&self) -> BoxFuture<'_, Result<bool>>;

    /// The SHA-256 (lowercase hex) of this namespace's export at this clock reading, header and
    /// trailer left out: two backends given the same operations at the same clock readings have
    /// the same digest, and a copy has its source's.
    fn digest(&self) -> BoxFuture<'_, Result<String>>;
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dyn Backend")
            .field("capabilities", &self.capabilities())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_amount_is_i64_max() {
        assert_eq!(super::MAX_AMOUNT, u64::try_from(i64::MAX).unwrap());
    }
}
