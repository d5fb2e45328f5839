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
