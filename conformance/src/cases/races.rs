//! Atomicity under concurrency: one key applies once, hard limits never overshoot.

use std::sync::Arc;

use serde_json::json;
use stowage_core::{
    Backend, ErrorKind, ReserveOutcome, Result, StoreResult, UsageOutcome, UsageReceipt,
    UsageReport,
};
use stowage_testkit::rng::Rng;
use tokio::sync::Barrier;

use super::{counters, keyed, policy, report, request, rows, usage_of};
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

/// 64 concurrent reserves of 7 against a hard limit of 100: exactly 14 hold, the others are refused, and 98 is held.
pub async fn concurrent_reserves_never_hold_more_than_a_hard_limit(ctx: Ctx) {
    let (limit, amount, tasks) = (100u64, 7u64, 64usize);
    ctx.backend
        .set_policy("p", &policy(&[("t", None, Some(limit))]))
        .await
        .unwrap();
    let handles = ctx.handles(4).await;
    let results = race(&handles, tasks, |i, b| async move {
        b.reserve("p", &request(&format!("r{i}"), &[("t", amount)], 600_000))
            .await
    })
    .await;
    let held = results
        .into_iter()
        .map(|r| r.expect("reserve"))
        .filter(|r| {
            assert!(!r.replayed);
            r.outcome == ReserveOutcome::Reserved
        })
        .count();
    assert_eq!(u64::try_from(held).unwrap(), limit / amount);
    let usage = ctx.backend.usage("p").await.unwrap();
    assert_eq!(usage.pending, counters(&[("t", limit / amount * amount)]));
    assert!(usage.counters.is_empty());
}

/// Tasks interleaving reserve, commit, release and report keep `counters + pending <= hard` at every `usage` read and end with counters equal to what was applied.
pub async fn interleaved_reservations_keep_holds_within_the_hard_limit(ctx: Ctx) {
    let hard = 60u64;
    ctx.backend
        .set_policy("p", &policy(&[("t", Some(20), Some(hard))]))
        .await
        .unwrap();
    let handles = ctx.handles(4).await;
    let workers = 24usize;
    let readers = 4usize;
    let results = race(&handles, workers + readers, |i, b| async move {
        let mut rng = Rng::new(0x5EED_1200 + u64::try_from(i).expect("small"));
        // What this task's commits and reports applied.
        let mut applied = 0u64;
        if i >= workers {
            // A reader: counters + pending never exceed the hard limit.
            for _ in 0..60 {
                let usage = b.usage("p").await.expect("usage");
                let counted = usage.counters.get("t").copied().unwrap_or(0)
                    + usage.pending.get("t").copied().unwrap_or(0);
                assert!(counted <= hard, "counters + pending = {counted} > {hard}");
                tokio::task::yield_now().await;
            }
            return applied;
        }
        for round in 0..6 {
            let id = format!("w{i}-{round}");
            let amount = 1 + rng.below(12);
            let receipt = b
                .reserve("p", &request(&id, &[("t", amount)], 600_000))
                .await
                .expect("reserve");
            if rng.chance(30) {
                let delta = rng.below(6);
                let r = b.report_usage("p", &report(&[("t", delta)])).await;
                if r.expect("report").outcome.is_applied() {
                    applied += delta;
                }
            }
            if receipt.outcome != ReserveOutcome::Reserved {
                continue;
            }
            tokio::task::yield_now().await;
            if rng.chance(70) {
                let actual = rng.below(amount + 1);
                let r = b
                    .commit("p", &id, &counters(&[("t", actual)]))
                    .await
                    .expect("commit");
                assert!(!r.replayed && r.outcome.is_applied());
                applied += actual;
            } else {
                assert!(b.release("p", &id).await.expect("release"));
            }
        }
        applied
    })
    .await;
    let applied: u64 = results.iter().sum();
    let usage = ctx.backend.usage("p").await.unwrap();
    assert!(usage.pending.is_empty(), "every hold was resolved");
    assert_eq!(usage.counters.get("t").copied().unwrap_or(0), applied);
    assert!(applied <= hard);
}

/// How one side of a commit/release race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Committed,
    CommitConflict,
    Released,
    ReleasedNothing,
    ReleaseConflict,
}

/// One reservation committed and released at once resolves exactly once: commit `Ok` and release `Conflict`, or release `true` and commit `Conflict`.
pub async fn concurrent_commit_and_release_resolve_once(ctx: Ctx) {
    let handles = ctx.handles(2).await;
    let mut committed = 0u64;
    for round in 0..24u64 {
        let id = format!("r{round}");
        ctx.backend
            .reserve("p", &request(&id, &[("t", 5)], 600_000))
            .await
            .unwrap();
        let shared_id = Arc::new(id);
        let sides = race(&handles, 2, |i, b| {
            let id = shared_id.clone();
            async move {
                if (i + usize::try_from(round).expect("small")) % 2 == 0 {
                    match b.commit("p", &id, &counters(&[("t", 3)])).await {
                        Ok(r) => {
                            assert_eq!(r.outcome, UsageOutcome::Ok);
                            assert!(!r.replayed);
                            Side::Committed
                        }
                        Err(e) if e.kind() == ErrorKind::Conflict => Side::CommitConflict,
                        Err(e) => panic!("commit: {e}"),
                    }
                } else {
                    match b.release("p", &id).await {
                        Ok(true) => Side::Released,
                        Ok(false) => Side::ReleasedNothing,
                        Err(e) if e.kind() == ErrorKind::Conflict => Side::ReleaseConflict,
                        Err(e) => panic!("release: {e}"),
                    }
                }
            }
        })
        .await;
        let mut sides = sides;
        sides.sort();
        match sides[..] {
            [Side::Committed, Side::ReleaseConflict] => committed += 3,
            [Side::CommitConflict, Side::Released] => {}
            _ => panic!("round {round}: {sides:?} resolved other than exactly once"),
        }
    }
    let usage = ctx.backend.usage("p").await.unwrap();
    assert!(usage.pending.is_empty());
    assert_eq!(usage.counters.get("t").copied().unwrap_or(0), committed);
}

cases! {
    __conformance_races;
    races: [
        concurrent_reports_with_one_key_apply_once,
        concurrent_reports_never_overshoot_a_hard_limit,
        concurrent_idempotent_stores_append_once,
        concurrent_reports_on_several_dimensions_stay_consistent,
        expired_keys_reused_concurrently_apply_once_per_budget,
        concurrent_reserves_never_hold_more_than_a_hard_limit,
        interleaved_reservations_keep_holds_within_the_hard_limit,
        concurrent_commit_and_release_resolve_once,
    ]
}
