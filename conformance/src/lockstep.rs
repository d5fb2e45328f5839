//! A backend and the reference model (`MemoryBackend`) driven step by step on one `ManualClock`:
//! every operation runs on both, and both must answer the same (equal values, or errors of the
//! same `ErrorKind`; messages are never compared).

use std::fmt::Debug;
use std::sync::Arc;

use stowage_core::{
    Backend, BudgetPolicy, BudgetUsage, Clock, ConnectOptions, ManualClock, MemoryBackend, Result,
    UsageReceipt, UsageReport,
};

/// A backend under test and the reference model, reading the same manual clock.
pub struct Lockstep {
    backend: Arc<dyn Backend>,
    model: Arc<dyn Backend>,
    clock: Arc<ManualClock>,
}

impl Debug for Lockstep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockstep")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

/// Both answers must agree (values equal, errors by kind); returns the backend's.
fn same<T: PartialEq + Debug>(op: &str, backend: Result<T>, model: Result<T>) -> Result<T> {
    match (&backend, &model) {
        (Ok(b), Ok(m)) => assert_eq!(b, m, "{op}: the backend and the model differ"),
        (Err(b), Err(m)) => assert_eq!(
            b.kind(),
            m.kind(),
            "{op}: the backend and the model fail differently"
        ),
        (b, m) => panic!("{op}: the backend answered {b:?}, the model {m:?}"),
    }
    backend
}

impl Lockstep {
    /// `backend` (already opened with `options` and `clock`, and initialized) beside a fresh
    /// `MemoryBackend` opened with the same options and clock.
    pub fn new(
        backend: Arc<dyn Backend>,
        clock: Arc<ManualClock>,
        options: ConnectOptions,
    ) -> Lockstep {
        let model = MemoryBackend::with_options(options.clock(clock.clone()))
            .expect("the reference model opens");
        Lockstep {
            backend,
            model: Arc::new(model),
            clock,
        }
    }

    /// The backend under test, for steps that must not run on the model.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The reference model.
    pub fn model(&self) -> &Arc<dyn Backend> {
        &self.model
    }

    /// Sets the shared clock to `ms`.
    pub fn at(&self, ms: u64) {
        self.clock.set(ms);
    }

    /// The shared clock's time.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// `set_policy` on both.
    pub async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        same(
            "set_policy",
            self.backend.set_policy(budget, policy).await,
            self.model.set_policy(budget, policy).await,
        )
    }

    /// `policy` on both.
    pub async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        same(
            "policy",
            self.backend.policy(budget).await,
            self.model.policy(budget).await,
        )
    }

    /// `delete_policy` on both.
    pub async fn delete_policy(&self, budget: &str) -> Result<bool> {
        same(
            "delete_policy",
            self.backend.delete_policy(budget).await,
            self.model.delete_policy(budget).await,
        )
    }

    /// `report_usage` on both.
    pub async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        same(
            "report_usage",
            self.backend.report_usage(budget, report).await,
            self.model.report_usage(budget, report).await,
        )
    }

    /// `usage` on both.
    pub async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        same(
            "usage",
            self.backend.usage(budget).await,
            self.model.usage(budget).await,
        )
    }

    /// `reset_usage` on both.
    pub async fn reset_usage(&self, budget: &str) -> Result<()> {
        same(
            "reset_usage",
            self.backend.reset_usage(budget).await,
            self.model.reset_usage(budget).await,
        )
    }

    /// `purge` on both.
    pub async fn purge(&self) -> Result<()> {
        same(
            "purge",
            self.backend.purge().await,
            self.model.purge().await,
        )
    }
}
