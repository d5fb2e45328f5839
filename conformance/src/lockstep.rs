//! A backend and the reference model (`MemoryBackend`) driven step by step on one `ManualClock`:
//! every operation runs on both, and both must answer the same (equal values, or errors of the
//! same `ErrorKind`; messages are never compared).

use std::fmt::Debug;
use std::sync::Arc;

use std::collections::BTreeMap;

use stowage_core::{
    Backend, BudgetPolicy, BudgetUsage, Clock, ConnectOptions, ManualClock, MemoryBackend,
    MultiReceipt, MultiReserveReceipt, Reservation, ReserveReceipt, ReserveRequest, Result,
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

    /// `report_usage_batch` on both: the outer results agree, and each item's answer agrees
    /// (values equal, errors by kind). Returns the backend's.
    pub async fn report_usage_batch(
        &self,
        items: &[(String, UsageReport)],
    ) -> Result<Vec<Result<UsageReceipt>>> {
        let backend = self.backend.report_usage_batch(items).await;
        let model = self.model.report_usage_batch(items).await;
        match (&backend, &model) {
            (Ok(b), Ok(m)) => {
                let kinds = |answers: &[Result<UsageReceipt>]| -> Vec<_> {
                    answers
                        .iter()
                        .map(|a| a.as_ref().map_err(|e| e.kind()).cloned())
                        .collect()
                };
                assert_eq!(
                    kinds(b),
                    kinds(m),
                    "report_usage_batch: the backend and the model differ (errors by kind)"
                );
            }
            (Err(b), Err(m)) => assert_eq!(
                b.kind(),
                m.kind(),
                "report_usage_batch: the backend and the model fail differently"
            ),
            (b, m) => panic!("report_usage_batch: the backend answered {b:?}, the model {m:?}"),
        }
        backend
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

    /// `reserve` on both.
    pub async fn reserve(&self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        same(
            "reserve",
            self.backend.reserve(budget, request).await,
            self.model.reserve(budget, request).await,
        )
    }

    /// `commit` on both.
    pub async fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        same(
            "commit",
            self.backend.commit(budget, id, actual).await,
            self.model.commit(budget, id, actual).await,
        )
    }

    /// `release` on both.
    pub async fn release(&self, budget: &str, id: &str) -> Result<bool> {
        same(
            "release",
            self.backend.release(budget, id).await,
            self.model.release(budget, id).await,
        )
    }

    /// `check_commit` on both.
    pub async fn check_commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<()> {
        same(
            "check_commit",
            self.backend.check_commit(budget, id, actual).await,
            self.model.check_commit(budget, id, actual).await,
        )
    }

    /// `reservation` on both.
    pub async fn reservation(&self, budget: &str, id: &str) -> Result<Option<Reservation>> {
        same(
            "reservation",
            self.backend.reservation(budget, id).await,
            self.model.reservation(budget, id).await,
        )
    }

    /// `reservations` on both.
    pub async fn reservations(&self, budget: &str) -> Result<Vec<Reservation>> {
        same(
            "reservations",
            self.backend.reservations(budget).await,
            self.model.reservations(budget).await,
        )
    }

    /// `report_usage_all` on both.
    pub async fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> Result<MultiReceipt> {
        same(
            "report_usage_all",
            self.backend.report_usage_all(budgets, report).await,
            self.model.report_usage_all(budgets, report).await,
        )
    }

    /// `reserve_all` on both.
    pub async fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        same(
            "reserve_all",
            self.backend.reserve_all(budgets, request).await,
            self.model.reserve_all(budgets, request).await,
        )
    }

    /// `commit_all` on both.
    pub async fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<MultiReceipt> {
        same(
            "commit_all",
            self.backend.commit_all(budgets, id, actual).await,
            self.model.commit_all(budgets, id, actual).await,
        )
    }

    /// `release_all` on both.
    pub async fn release_all(&self, budgets: &[&str], id: &str) -> Result<()> {
        same(
            "release_all",
            self.backend.release_all(budgets, id).await,
            self.model.release_all(budgets, id).await,
        )
    }
}

/// Calendar windows cannot be computed past 9999: reservation calls on a windowed budget whose
/// window has passed fail there exactly as in the model (`InvalidInput` where `WindowStep::at`
/// fails, after replays, conflicts and earlier budgets in name order; what the call did on the
/// other budgets stays as the model has it), and budgets without a window are unaffected. Starts
/// at 2023-11-14T22:13:20Z on a fresh namespace; every call is compared by [`Lockstep`].
pub async fn windows_that_cannot_be_computed(p: &Lockstep) {
    use stowage_core::{DimensionLimit, Window, MAX_AMOUNT};
    p.at(1_700_000_000_000);
    let daily = BudgetPolicy::new()
        .limit("t", DimensionLimit::hard(10))
        .window(Window::day("UTC"));
    p.set_policy("a", &daily).await.unwrap();
    p.set_policy("b", &BudgetPolicy::new()).await.unwrap();
    p.set_policy("c", &daily).await.unwrap();
    let held = ReserveRequest::new("r", MAX_AMOUNT).add("t", 1);
    p.reserve("a", &held).await.unwrap();
    let both = ReserveRequest::new("m", MAX_AMOUNT).add("t", 1);
    p.reserve_all(&["a", "b"], &both).await.unwrap();
    for budget in ["a", "c"] {
        p.report_usage(budget, &UsageReport::new().add("t", 1))
            .await
            .unwrap();
    }
    // 10000-01-02T00:00:00Z.
    p.at(253_402_387_200_000);
    p.usage("a").await.unwrap_err();
    assert!(p.reserve("a", &held).await.unwrap().replayed);
    assert!(p.reserve_all(&["a", "b"], &both).await.unwrap().replayed);
    let other = ReserveRequest::new("s", 5).add("t", 1);
    p.reserve("a", &other).await.unwrap_err();
    p.reserve_all(&["a", "b"], &other).await.unwrap_err();
    p.reserve("b", &other).await.unwrap();
    // A conflict on a budget before the window's: the conflict answers.
    let conflicting = ReserveRequest::new("r", MAX_AMOUNT).add("t", 2);
    p.reserve_all(&["a", "b"], &conflicting).await.unwrap_err();
    // b reserves, then c fails: b's hold is released and remembered as such.
    let later = ReserveRequest::new("u", 5).add("t", 1);
    p.reserve_all(&["b", "c"], &later).await.unwrap_err();
    let none = BTreeMap::new();
    p.commit("a", "unknown", &none).await.unwrap_err();
    p.commit("a", "r", &none).await.unwrap_err();
    p.commit_all(&["a", "b"], "m", &none).await.unwrap_err();
    p.commit_all(&["b", "c"], "m", &none).await.unwrap_err();
    let report = UsageReport::new().add("t", 1).dedup_key("k");
    p.report_usage_all(&["a", "b"], &report).await.unwrap_err();
    p.report_usage_all(&["b", "c"], &report).await.unwrap_err();
    p.report_usage("a", &UsageReport::new().add("t", 1))
        .await
        .unwrap_err();
    assert!(p.release("a", "r").await.unwrap());
    p.release_all(&["a", "b"], "m").await.unwrap();
    for budget in ["a", "b", "c"] {
        p.reservations(budget).await.unwrap();
    }
    p.usage("b").await.unwrap();
}
