//! Initialization, capabilities, and that rejected input leaves every kind of state untouched.

use std::collections::BTreeMap;

use serde_json::json;
use stowage_core::{
    Backend, BudgetPolicy, ErrorKind, QueryParams, StoredValue, UsageReport, MAX_AMOUNT,
};

use super::{assert_kind, counters, keyed, must_report, policy, report, rows, usage_of};
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

/// Everything observable in a namespace, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    policies: BTreeMap<String, Option<BudgetPolicy>>,
    usage: BTreeMap<String, BTreeMap<String, u64>>,
    records: Vec<StoredValue>,
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
    }
}

/// Each kind of invalid input named in the contract is `InvalidInput` and leaves all state as it was.
pub async fn invalid_inputs_change_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(5), Some(10))]))
        .await
        .unwrap();
    must_report(b, "p", &keyed(&[("a", 3)], "k")).await;
    b.store("r", &json!(1), 1).await.unwrap();
    b.store_idempotent("r", &json!(2), 2, "ik").await.unwrap();
    let before = snapshot(b, &["p", "q"]).await;
    let long = "x".repeat(257);
    let too_many: UsageReport = (0..65).fold(UsageReport::new(), |r, i| r.add(format!("d{i}"), 1));
    let too_many_limits = (0..65).fold(BudgetPolicy::new(), |p, i| {
        p.limit(format!("d{i}"), stowage_core::DimensionLimit::hard(1))
    });
    let huge = serde_json::Value::String("x".repeat(1_048_576));
    let k = ErrorKind::InvalidInput;
    assert_kind(b.report_usage("p", &report(&[])).await, k, "no dimensions");
    assert_kind(b.report_usage("p", &too_many).await, k, "65 dimensions");
    assert_kind(
        b.report_usage("p", &report(&[("a", MAX_AMOUNT + 1)])).await,
        k,
        "delta > MAX",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], &long)).await,
        k,
        "long key",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 3), ("", 1)], "k")).await,
        k,
        "bad name with live key",
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
    assert_eq!(snapshot(b, &["p", "q"]).await, before);
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
