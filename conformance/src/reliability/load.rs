//! Sustained load: many tasks run mixed operations at once; no unexpected error, no hard limit
//! ever exceeded, replays answer exactly the first answer, and the final state equals the
//! reference model fed the same applied operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, DimensionLimit, MemoryBackend, PersistenceBackend,
    QueryParams, UsageReceipt, UsageReport, Value,
};

use stowage_testkit::rng::Rng;

/// Size of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    /// Concurrent tasks.
    pub tasks: u64,
    /// Operations per task.
    pub ops_per_task: u64,
    /// Seed of the operation mix.
    pub seed: u64,
}

impl LoadPlan {
    /// 64 tasks × `STOWAGE_LOAD_OPS` (default 100) operations.
    pub fn from_env() -> LoadPlan {
        LoadPlan {
            tasks: 64,
            ops_per_task: stowage_testkit::env_number("STOWAGE_LOAD_OPS", 100),
            seed: stowage_testkit::env_number("STOWAGE_LOAD_SEED", 11),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadStats {
    /// Operations in all.
    pub operations: u64,
    /// Reports applied.
    pub applied: u64,
    /// Reports refused by a hard limit.
    pub hard_breaches: u64,
    /// Replays (all equal to the first answer).
    pub replays: u64,
}

const BUDGETS: u64 = 4;

fn hard_limit(plan: &LoadPlan) -> u64 {
    // About a quarter of what the tasks try to report, so the limits are reached under contention.
    (plan.tasks * plan.ops_per_task * 5 / 2 / BUDGETS / 4).max(10)
}

#[derive(Default)]
struct TaskLog {
    applied: Vec<(String, UsageReport)>,
    stores: Vec<(String, Value, u64)>,
    stats: LoadStats,
}

async fn task(backend: Arc<dyn Backend>, plan: LoadPlan, id: u64) -> TaskLog {
    let mut rng = Rng::new(plan.seed.wrapping_mul(1_000_003).wrapping_add(id));
    let mut log = TaskLog::default();
    let mut answered: Vec<(String, UsageReport, UsageReceipt)> = Vec::new();
    let mut stored_per_record: BTreeMap<String, u64> = BTreeMap::new();
    let limit = hard_limit(&plan);
    for i in 0..plan.ops_per_task {
        log.stats.operations += 1;
        match rng.below(100) {
            0..=44 => {
                let budget = format!("shared-{}", rng.below(BUDGETS));
                let report = UsageReport::new()
                    .add("tokens", 1 + rng.below(9))
                    .add("requests", 1)
                    .dedup_key(format!("t{id}-{i}"));
                let receipt = backend
                    .report_usage(&budget, &report)
                    .await
                    .expect("report under load");
                assert!(!receipt.replayed, "a fresh key replayed");
                if receipt.outcome.is_applied() {
                    log.stats.applied += 1;
                    log.applied.push((budget.clone(), report.clone()));
                } else {
                    log.stats.hard_breaches += 1;
                }
                answered.push((budget, report, receipt));
            }
            45..=54 if !answered.is_empty() => {
                let (budget, report, first) = &answered[rng.index(answered.len())];
                let receipt = backend
                    .report_usage(budget, report)
                    .await
                    .expect("replay under load");
                assert!(receipt.replayed, "a retried key was applied again");
                assert_eq!(
                    receipt.outcome, first.outcome,
                    "a replay answered differently"
                );
                log.stats.replays += 1;
            }
            45..=79 => {
                let record = format!("t{id}::r{}", rng.below(5));
                let at = i; // unique per task, increasing: one deterministic order per record
                let value = json!({"task": id, "op": i, "v": rng.below(1000)});
                backend
                    .store(&record, &value, at)
                    .await
                    .expect("store under load");
                *stored_per_record.entry(record.clone()).or_default() += 1;
                log.stores.push((record, value, at));
            }
            80..=89 => {
                let rows = backend
                    .query(&format!("t{id}::*"), QueryParams::default())
                    .await
                    .expect("query under load");
                let expected: u64 = stored_per_record.values().sum();
                assert_eq!(
                    u64::try_from(rows.len()).ok(),
                    Some(expected),
                    "own rows visible"
                );
            }
            _ => {
                let budget = format!("shared-{}", rng.below(BUDGETS));
                let usage = backend.usage(&budget).await.expect("usage under load");
                let tokens = usage.counters.get("tokens").copied().unwrap_or(0);
                assert!(tokens <= limit, "hard limit exceeded: {tokens} > {limit}");
            }
        }
    }
    log
}

/// Runs the scenario on `backend` (a fresh namespace) and checks it against the reference model.
pub async fn run(backend: Arc<dyn Backend>, plan: LoadPlan) -> LoadStats {
    let limit = hard_limit(&plan);
    for b in 0..BUDGETS {
        let policy = BudgetPolicy::new()
            .limit("tokens", DimensionLimit::both(limit / 2, limit))
            .limit("requests", DimensionLimit::soft(limit / 4));
        backend
            .set_policy(&format!("shared-{b}"), &policy)
            .await
            .expect("set_policy");
    }
    let tasks: Vec<_> = (0..plan.tasks)
        .map(|id| tokio::spawn(task(backend.clone(), plan, id)))
        .collect();
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.expect("a load task failed"));
    }
    // The model fed the same applied operations (without limits: they were applied).
    let model = MemoryBackend::new();
    let mut stats = LoadStats::default();
    for log in &logs {
        for (budget, report) in &log.applied {
            model
                .report_usage(budget, report)
                .await
                .expect("model report");
        }
        for (record, value, at) in &log.stores {
            model.store(record, value, *at).await.expect("model store");
        }
        stats.operations += log.stats.operations;
        stats.applied += log.stats.applied;
        stats.hard_breaches += log.stats.hard_breaches;
        stats.replays += log.stats.replays;
    }
    for b in 0..BUDGETS {
        let budget = format!("shared-{b}");
        let got = backend.usage(&budget).await.expect("usage");
        let want = model.usage(&budget).await.expect("model usage");
        assert_eq!(got, want, "final counters of {budget}");
        assert!(got.counters.get("tokens").copied().unwrap_or(0) <= limit);
    }
    let got = backend
        .query("*", QueryParams::default())
        .await
        .expect("query");
    let want = model
        .query("*", QueryParams::default())
        .await
        .expect("model query");
    assert_eq!(got, want, "final records");
    eprintln!("load: {stats:?}");
    stats
}
