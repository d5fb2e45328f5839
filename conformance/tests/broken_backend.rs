//! The suite fails loudly on a backend that breaks one rule: replays that apply the usage again.

use std::sync::Arc;

use stowage_conformance::{run_all, Harness};
use stowage_core::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, ConnectOptions,
    MemoryBackend, PersistenceBackend, QueryParams, Result, StoreResult, StoredValue, UsageReceipt,
    UsageReport, Value,
};

/// The reference model, except that a report's dedup key is ignored (a retry counts twice).
struct ForgetsDedupKeys(MemoryBackend);

impl PersistenceBackend for ForgetsDedupKeys {
    fn store<'a>(&'a self, r: &'a str, v: &'a Value, t: u64) -> BoxFuture<'a, Result<()>> {
        self.0.store(r, v, t)
    }
    fn store_idempotent<'a>(
        &'a self,
        r: &'a str,
        v: &'a Value,
        t: u64,
        k: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        self.0.store_idempotent(r, v, t, k)
    }
    fn query<'a>(&'a self, p: &'a str, q: QueryParams) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        self.0.query(p, q)
    }
    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        self.0.initialize()
    }
    fn cleanup(&self, t: u64) -> BoxFuture<'_, Result<u64>> {
        self.0.cleanup(t)
    }
}

impl BudgetBackend for ForgetsDedupKeys {
    fn set_policy<'a>(&'a self, b: &'a str, p: &'a BudgetPolicy) -> BoxFuture<'a, Result<()>> {
        self.0.set_policy(b, p)
    }
    fn policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        self.0.policy(b)
    }
    fn delete_policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.0.delete_policy(b)
    }
    fn report_usage<'a>(
        &'a self,
        b: &'a str,
        r: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move {
            let mut keyless = r.clone();
            keyless.dedup_key = None;
            self.0.report_usage(b, &keyless).await
        })
    }
    fn usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        self.0.usage(b)
    }
    fn reset_usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<()>> {
        self.0.reset_usage(b)
    }
}

impl Backend for ForgetsDedupKeys {
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        self.0.purge()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_forgets_dedup_keys_fails_the_dedup_cases() {
    let harness: Arc<dyn Harness> = Arc::new(
        |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            Box::pin(async move {
                let backend: Arc<dyn Backend> =
                    Arc::new(ForgetsDedupKeys(MemoryBackend::with_options(options)?));
                Ok(backend)
            })
        },
    );
    let outcomes = run_all(harness, None, |_| {}).await;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.name)
        .collect();
    for must_fail in [
        "dedup::retry_with_same_key_replays_without_applying",
        "dedup::hard_breach_is_recorded_and_replayed",
        "races::concurrent_reports_with_one_key_apply_once",
        "differential::random_sequences_match_the_reference_model",
    ] {
        assert!(
            failed.contains(&must_fail),
            "{must_fail} passed on a broken backend; failed: {failed:?}"
        );
    }
    // Rules the wrapper keeps still pass: the suite pinpoints the broken one.
    let passed = outcomes.iter().filter(|o| o.failure.is_none()).count();
    assert!(passed > 50, "only {passed} cases passed");
}
