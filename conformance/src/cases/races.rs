//! Atomicity under concurrency: one key applies once, hard limits never overshoot.

use std::sync::Arc;

use serde_json::json;
use stowage_core::{Backend, Result, StoreResult, UsageOutcome, UsageReceipt, UsageReport};
use stowage_testkit::rng::Rng;
use tokio::sync::Barrier;

use super::{counters, keyed, policy, report, rows, usage_of};
use crate::Ctx;

/// Runs `count` tasks at once (released together), task i on handle i mod len, and collects their results in order.
async fn race<T, F, Fut>(handles: &[Arc<dyn Backend>], count: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn Backend>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(count));
    let mut joins = Vec::with_capacity(count);
    for i in 0..count {
        let barrier = barrier.clone();
        let work = task(i, handles[i % handles.len()].clone());
        joins.push(tokio::spawn(async move {
            barrier.wait().await;
            work.await
        }));
    }
    let mut out = Vec::with_capacity(count);
    for join in joins {
        out.push(join.await.expect("racing task panicked"));
    }
    out
}

/// 50 concurrent reports with one dedup key apply exactly once; the other 49 are replays of the same outcome.
pub async fn concurrent_reports_with_one_key_apply_once(ctx: Ctx) {
    let handles = ctx.handles(4).await;
    let r = keyed(&[("tokens", 3), ("usd", 1)], "same-key");
    let results: Vec<Result<UsageReceipt>> = race(&handles, 50, |_, b| {
        let r = r.clone();
        async move { b.report_usage("p", &r).await }
    })
    .await;
    let receipts: Vec<UsageReceipt> = results.into_iter().map(|r| r.expect("report")).collect();
    assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1);
    assert!(receipts.iter().all(|r| r.outcome == UsageOutcome::Ok));
    assert_eq!(
        usage_of(&*ctx.backend, "p").await,
        counters(&[("tokens", 3), ("usd", 1)])
    );
}

/// 100 concurrent reports of 1 against a hard limit of 37: exactly 37 apply, 63 are hard breaches.
pub async fn concurrent_reports_never_overshoot_a_hard_limit(ctx: Ctx) {
    ctx.backend
        .set_policy("p", &policy(&[("tokens", Some(30), Some(37))]))
        .await
        .unwrap();
    let handles = ctx.handles(4).await;
    let results = race(&handles, 100, |i, b| async move {
        let r = if i % 2 == 0 {
            report(&[("tokens", 1)])
        } else {
            keyed(&[("tokens", 1)], &format!("k{i}"))
        };
        b.report_usage("p", &r).await
    })
    .await;
    let receipts: Vec<UsageReceipt> = results.into_iter().map(|r| r.expect("report")).collect();
    let applied = receipts.iter().filter(|r| r.outcome.is_applied()).count();
    assert_eq!(applied, 37);
    assert_eq!(receipts.len() - applied, 63);
    assert!(receipts.iter().all(|r| !r.replayed));
    let crossed_soft = receipts
        .iter()
        .filter(|r| matches!(&r.outcome, UsageOutcome::SoftBreach(b) if b[0].crossed))
        .count();
    assert_eq!(crossed_soft, 1, "exactly one report crosses the soft limit");
    assert_eq!(
        usage_of(&*ctx.backend, "p").await,
        counters(&[("tokens", 37)])
    );
}

/// Concurrent `store_idempotent` calls with one (record, key) append exactly one row.
pub async fn concurrent_idempotent_stores_append_once(ctx: Ctx) {
    let handles = ctx.handles(4).await;
    let results = race(&handles, 30, |_, b| async move {
        b.store_idempotent("r", &json!({"v": 1}), 9, "k").await
    })
    .await;
    let appended = results
        .into_iter()
        .map(|r| r.expect("store_idempotent"))
        .filter(|r| *r == StoreResult::Appended)
        .count();
    assert_eq!(appended, 1);
    assert_eq!(rows(&*ctx.backend, "r").await.len(), 1);
}

/// Concurrent multi-dimension reports leave counters equal to the sum of applied deltas, within every hard limit.
pub async fn concurrent_reports_on_several_dimensions_stay_consistent(ctx: Ctx) {
    ctx.backend
        .set_policy(
            "p",
            &policy(&[("a", None, Some(200)), ("b", None, Some(150))]),
        )
        .await
        .unwrap();
    let handles = ctx.handles(4).await;
    let mut rng = Rng::new(0x5EED_0001);
    let reports: Vec<UsageReport> = (0..80)
        .map(|i| {
            let r = report(&[("a", rng.below(10)), ("b", rng.below(10)), ("c", 1)]);
            if i % 3 == 0 {
                r.dedup_key(format!("k{}", i / 6))
            } else {
                r
            }
        })
        .collect();
    let shared = Arc::new(reports.clone());
    let results = race(&handles, reports.len(), |i, b| {
        let shared = shared.clone();
        async move { b.report_usage("p", &shared[i]).await }
    })
    .await;
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for (r, result) in reports.iter().zip(results) {
        match result {
            Ok(receipt) => {
                if receipt.outcome.is_applied() && !receipt.replayed {
                    for (d, v) in &r.dimensions {
                        *sums.entry(d.clone()).or_default() += v;
                    }
                }
            }
            // Keys k0.. are shared by pairs of reports with different deltas: the second is a Conflict.
            Err(e) => assert_eq!(e.kind(), stowage_core::ErrorKind::Conflict, "{e}"),
        }
    }
    let usage = usage_of(&*ctx.backend, "p").await;
    assert_eq!(usage, sums);
    assert!(usage.get("a").copied().unwrap_or(0) <= 200);
    assert!(usage.get("b").copied().unwrap_or(0) <= 150);
}

/// Expired keys reused at once on many budgets apply once more per budget (no deadlock, no double apply).
pub async fn expired_keys_reused_concurrently_apply_once_per_budget(ctx: Ctx) {
    let handles = ctx.handles(4).await;
    let budgets: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    for budget in &budgets {
        ctx.backend
            .report_usage(budget, &keyed(&[("t", 5)], "k"))
            .await
            .unwrap();
        ctx.backend
            .report_usage(budget, &keyed(&[("t", 1)], "other"))
            .await
            .unwrap();
    }
    ctx.clock.advance(stowage_core::DEFAULT_DEDUP_TTL_MS);
    let budgets = Arc::new(budgets);
    let results = race(&handles, 32, |i, b| {
        let budgets = budgets.clone();
        async move {
            let key = if i % 2 == 0 { "k" } else { "other" };
            let delta = if i % 2 == 0 { 5 } else { 1 };
            b.report_usage(&budgets[(i / 2) % 8], &keyed(&[("t", delta)], key))
                .await
        }
    })
    .await;
    let fresh = results
        .into_iter()
        .map(|r| r.expect("report"))
        .filter(|r| !r.replayed)
        .count();
    assert_eq!(fresh, 16, "each (budget, key) applies once after expiry");
    for budget in budgets.iter() {
        assert_eq!(
            usage_of(&*ctx.backend, budget).await,
            counters(&[("t", 12)])
        );
    }
}

cases! {
    __conformance_races;
    races: [
        concurrent_reports_with_one_key_apply_once,
        concurrent_reports_never_overshoot_a_hard_limit,
        concurrent_idempotent_stores_append_once,
        concurrent_reports_on_several_dimensions_stay_consistent,
        expired_keys_reused_concurrently_apply_once_per_budget,
    ]
}
