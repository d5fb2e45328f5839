//! Initialization, capabilities, purge, and that rejected input leaves every kind of state untouched.

use std::collections::BTreeMap;

use serde_json::json;
use stowage_core::{
    Backend, BudgetPolicy, ErrorKind, QueryParams, StoreResult, StoredValue, UsageOutcome,
    UsageReceipt, UsageReport, MAX_AMOUNT,
};

use super::{
    assert_kind, breach, counters, fresh, keyed, must_report, policy, replayed, report, rows,
    usage_of,
};
use crate::Ctx;

/// `initialize` may run again, and concurrently, without touching data.
pub async fn initialize_twice_is_harmless(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 1)])).await;
    b.store("r", &json!(1), 1).await.unwrap();
    let other = ctx.reopen().await;
    let (x, y) = tokio::join!(b.initialize(), other.initialize());
    x.unwrap();
    y.unwrap();
    b.initialize().await.unwrap();
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 1)]));
    assert_eq!(rows(b, "r").await.len(), 1);
}

/// Capabilities are true facts: the value limit is 1 MiB, a durable backend keeps data across reopening, a shared one shows writes to another handle.
pub async fn capabilities_are_honest(ctx: Ctx) {
    let caps = ctx.backend.capabilities();
    assert_eq!(caps.max_value_bytes, 1_048_576);
    if !(caps.shared || caps.durable) {
        return;
    }
    {
        let b = &*ctx.backend;
        b.set_policy("p", &policy(&[("a", None, Some(9))]))
            .await
            .unwrap();
        must_report(b, "p", &keyed(&[("a", 2)], "k")).await;
        b.store("r", &json!({"kept": true}), 5).await.unwrap();
    }
    let mut ctx = ctx;
    let other = if caps.durable {
        // Drop the only handle, then open again: what survives must be on disk or on the server.
        let placeholder: std::sync::Arc<dyn Backend> =
            std::sync::Arc::new(stowage_core::MemoryBackend::new());
        drop(std::mem::replace(&mut ctx.backend, placeholder));
        ctx.open(ctx.options_for(ctx.namespace())).await.unwrap()
    } else {
        ctx.reopen().await
    };
    assert_eq!(usage_of(&*other, "p").await, counters(&[("a", 2)]));
    assert_eq!(
        other.policy("p").await.unwrap(),
        Some(policy(&[("a", None, Some(9))]))
    );
    assert!(
        must_report(&*other, "p", &keyed(&[("a", 2)], "k"))
            .await
            .replayed
    );
    assert_eq!(
        rows(&*other, "r").await,
        vec![("r".to_owned(), json!({"kept": true}), 5)]
    );
}

/// Everything observable in a namespace, for before/after comparisons: policies, counters, rows,
/// and how the live dedup key `k` and idempotency key `ik` answer a retry of their original call
/// (a replay and a repeat change nothing while the keys are live).
#[derive(Debug, PartialEq)]
struct Snapshot {
    policies: BTreeMap<String, Option<BudgetPolicy>>,
    usage: BTreeMap<String, BTreeMap<String, u64>>,
    records: Vec<StoredValue>,
    dedup_retry: UsageReceipt,
    idempotent_retry: StoreResult,
}

/// The report recorded under the live dedup key `k` of budget `p` by [`invalid_inputs_change_nothing`].
fn live_keyed_report() -> UsageReport {
    keyed(&[("a", 6)], "k")
}

async fn snapshot(b: &dyn Backend, budgets: &[&str]) -> Snapshot {
    let mut policies = BTreeMap::new();
    let mut usage = BTreeMap::new();
    for budget in budgets {
        policies.insert((*budget).to_owned(), b.policy(budget).await.unwrap());
        usage.insert((*budget).to_owned(), usage_of(b, budget).await);
    }
    Snapshot {
        policies,
        usage,
        records: b.query("*", QueryParams::default()).await.unwrap(),
        dedup_retry: must_report(b, "p", &live_keyed_report()).await,
        idempotent_retry: b.store_idempotent("r", &json!(2), 2, "ik").await.unwrap(),
    }
}

/// Each kind of invalid input is `InvalidInput` and changes no state: invalid keyed calls neither overwrite nor remove a live key, nor record a fresh one.
pub async fn invalid_inputs_change_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(5), Some(10))]))
        .await
        .unwrap();
    let soft_breach = UsageOutcome::SoftBreach(vec![breach("a", 6, 5, true)]);
    assert_eq!(
        must_report(b, "p", &live_keyed_report()).await,
        fresh(soft_breach.clone())
    );
    b.store("r", &json!(1), 1).await.unwrap();
    b.store_idempotent("r", &json!(2), 2, "ik").await.unwrap();
    let before = snapshot(b, &["p", "q"]).await;
    assert_eq!(before.dedup_retry, replayed(soft_breach.clone()));
    assert_eq!(before.idempotent_retry, StoreResult::AlreadyExists);
    let long = "x".repeat(257);
    let too_many: UsageReport = (0..65).fold(UsageReport::new(), |r, i| r.add(format!("d{i}"), 1));
    let too_many_limits = (0..65).fold(BudgetPolicy::new(), |p, i| {
        p.limit(format!("d{i}"), stowage_core::DimensionLimit::hard(1))
    });
    let huge = serde_json::Value::String("x".repeat(1_048_576));
    let k = ErrorKind::InvalidInput;
    // Invalid reports under the live key `k` and under the fresh key `new`.
    for key in ["k", "new"] {
        let invalid_reports = [
            ("no dimensions", report(&[]).dedup_key(key)),
            ("65 dimensions", too_many.clone().dedup_key(key)),
            ("delta > MAX", keyed(&[("a", MAX_AMOUNT + 1)], key)),
            (
                "one delta > MAX",
                keyed(&[("a", 6), ("b", MAX_AMOUNT + 1)], key),
            ),
            ("empty dimension", keyed(&[("a", 6), ("", 1)], key)),
            ("long dimension", keyed(&[("a", 6), (&long, 1)], key)),
            ("NUL in dimension", keyed(&[("a\0", 6)], key)),
        ];
        for (what, invalid) in invalid_reports {
            assert_kind(
                b.report_usage("p", &invalid).await,
                k,
                &format!("{what}, key {key:?}"),
            );
        }
    }
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], &long)).await,
        k,
        "long key",
    );
    assert_kind(
        b.report_usage(&long, &report(&[("a", 1)])).await,
        k,
        "long budget",
    );
    assert_kind(
        b.set_policy("p", &policy(&[("a", Some(11), Some(10))]))
            .await,
        k,
        "soft > hard",
    );
    assert_kind(b.set_policy("p", &too_many_limits).await, k, "65 limits");
    assert_kind(
        b.set_policy("q", &policy(&[("a", None, Some(MAX_AMOUNT + 1))]))
            .await,
        k,
        "limit > MAX",
    );
    assert_kind(b.store("r", &huge, 3).await, k, "value > 1 MiB");
    assert_kind(
        b.store_idempotent("r", &huge, 2, "ik").await,
        k,
        "value > 1 MiB under the live idempotency key",
    );
    assert_kind(
        b.store_idempotent("r", &huge, 4, "new").await,
        k,
        "value > 1 MiB under a fresh idempotency key",
    );
    assert_kind(
        b.store_idempotent("r", &json!(2), 2, &long).await,
        k,
        "long idempotency key",
    );
    assert_kind(b.store(&long, &json!(1), 1).await, k, "long record");
    assert_kind(
        b.query("", QueryParams::default()).await,
        k,
        "empty pattern",
    );
    assert_kind(
        b.query("*", QueryParams::new().start_time(2).end_time(1))
            .await,
        k,
        "start > end",
    );
    assert_kind(b.cleanup(MAX_AMOUNT + 1).await, k, "cleanup > MAX");
    assert_kind(b.reset_usage(&long).await, k, "reset long budget");
    assert_kind(b.delete_policy(&long).await, k, "delete long budget");
    // The live key still replays its recorded outcome (in the snapshot) and still holds its payload.
    assert_eq!(snapshot(b, &["p", "q"]).await, before);
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], "k")).await,
        ErrorKind::Conflict,
        "the live key keeps its payload",
    );
    // The fresh keys were never recorded: they apply now.
    assert_eq!(
        must_report(b, "p", &keyed(&[("a", 1)], "new")).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("a", 7, 5, false)]))
    );
    assert_eq!(
        b.store_idempotent("r", &json!(4), 4, "new").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 7)]));
}

/// A clock reading above MAX_AMOUNT makes `report_usage` `InvalidInput` and changes nothing.
pub async fn clock_beyond_max_amount_is_invalid_input(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 1)])).await;
    let now = stowage_core::Clock::now_ms(&*ctx.clock);
    ctx.clock.set(MAX_AMOUNT + 1);
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], "k")).await,
        ErrorKind::InvalidInput,
        "clock above MAX_AMOUNT",
    );
    ctx.clock.set(now);
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 1)]));
    assert!(!must_report(b, "p", &keyed(&[("a", 1)], "k")).await.replayed);
}

/// A dedup TTL of 0 is `InvalidInput` when connecting (it would silently turn deduplication off).
pub async fn zero_dedup_ttl_is_invalid_input(ctx: Ctx) {
    assert_kind(
        ctx.open(ctx.options_for(ctx.namespace()).dedup_ttl_ms(0))
            .await,
        ErrorKind::InvalidInput,
        "dedup_ttl_ms = 0",
    );
}

/// Writes one of everything (policy, counters, a dedup record, rows with an idempotency key).
async fn write_everything(b: &dyn Backend) {
    b.set_policy("p", &policy(&[("a", Some(5), Some(10))]))
        .await
        .unwrap();
    must_report(b, "p", &keyed(&[("a", 3)], "k")).await;
    must_report(b, "q", &report(&[("b", 1)])).await;
    b.store("r", &json!(1), 1).await.unwrap();
    b.store_idempotent("r", &json!(2), 2, "ik").await.unwrap();
}

/// Whether `b` holds exactly what [`write_everything`] wrote: policy, counters, the dedup
/// record (replays; another payload conflicts) and the rows (the idempotency key repeats).
async fn assert_holds_everything(b: &dyn Backend, what: &str) {
    assert_eq!(
        b.policy("p").await.unwrap(),
        Some(policy(&[("a", Some(5), Some(10))])),
        "{what}: policy"
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 3)]), "{what}");
    assert_eq!(usage_of(b, "q").await, counters(&[("b", 1)]), "{what}");
    assert_eq!(
        rows(b, "*").await,
        vec![("r".to_owned(), json!(2), 2), ("r".to_owned(), json!(1), 1)],
        "{what}: rows"
    );
    assert!(
        must_report(b, "p", &keyed(&[("a", 3)], "k")).await.replayed,
        "{what}: the dedup record replays"
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 4)], "k")).await,
        ErrorKind::Conflict,
        &format!("{what}: the dedup record holds its payload"),
    );
    assert_eq!(
        b.store_idempotent("r", &json!(2), 2, "ik").await.unwrap(),
        StoreResult::AlreadyExists,
        "{what}: the idempotency key"
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 3)]), "{what}");
}

/// Whether `b` is empty of all [`write_everything`] wrote: no policy, counters, dedup record or rows.
async fn assert_purged(b: &dyn Backend, what: &str) {
    assert_eq!(b.policy("p").await.unwrap(), None, "{what}: policy");
    assert!(usage_of(b, "p").await.is_empty(), "{what}: usage p");
    assert!(usage_of(b, "q").await.is_empty(), "{what}: usage q");
    assert!(rows(b, "*").await.is_empty(), "{what}: rows");
}

/// `purge` empties this namespace (rows, idempotency and dedup keys, policies, counters), leaves another intact, and the handles work on.
pub async fn purge_removes_only_this_namespace(ctx: Ctx) {
    let handles = ctx.handles(2).await;
    let b = &*ctx.backend;
    let other = ctx.open_namespace("_other").await;
    let other = &*other;
    write_everything(b).await;
    write_everything(other).await;
    assert_holds_everything(b, "before the purge").await;
    b.purge().await.unwrap();
    for (i, handle) in handles.iter().enumerate() {
        assert_purged(&**handle, &format!("after the purge, handle {i}")).await;
    }
    assert_holds_everything(other, "the other namespace").await;
    // The keys are free again: the dedup key applies afresh (with a payload that would have
    // conflicted), the idempotency key appends.
    assert_eq!(
        must_report(b, "p", &keyed(&[("a", 4)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        b.store_idempotent("r", &json!(3), 3, "ik").await.unwrap(),
        StoreResult::Appended
    );
    // The namespace works as before: policies apply, keys replay, rows come back.
    b.set_policy("p", &policy(&[("a", None, Some(5))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &keyed(&[("a", 2)], "k2")).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 4, 5, true)]))
    );
    assert_eq!(
        must_report(b, "p", &keyed(&[("a", 2)], "k2")).await,
        replayed(UsageOutcome::HardBreach(vec![breach("a", 4, 5, true)]))
    );
    // A handle opened before the purge works on too (where the backend is shared).
    let last = handles.last().expect("at least this handle");
    last.store("r", &json!(5), 5).await.unwrap();
    for handle in &handles {
        assert_eq!(usage_of(&**handle, "p").await, counters(&[("a", 4)]));
        assert_eq!(
            rows(&**handle, "*").await,
            vec![("r".to_owned(), json!(5), 5), ("r".to_owned(), json!(3), 3)]
        );
    }
    // Purging again is harmless.
    b.purge().await.unwrap();
    b.purge().await.unwrap();
    assert_purged(b, "after purging twice").await;
    assert_holds_everything(other, "the other namespace, at the end").await;
}

cases! {
    __conformance_lifecycle;
    lifecycle: [
        initialize_twice_is_harmless,
        capabilities_are_honest,
        invalid_inputs_change_nothing,
        clock_beyond_max_amount_is_invalid_input,
        zero_dedup_ttl_is_invalid_input,
        purge_removes_only_this_namespace,
    ]
}
