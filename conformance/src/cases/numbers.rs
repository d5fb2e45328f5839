//! SEMANTICS §1 numbers: exact over 0..=MAX_AMOUNT, `InvalidInput` above, `Overflow` on counters.

use serde_json::json;
use stowage_core::{ErrorKind, QueryParams, UsageOutcome, MAX_AMOUNT};

use super::{
    assert_kind, breach, counters, fresh, keyed, must_report, policy, report, rows, rows_with,
    usage_of,
};
use crate::Ctx;

/// 2^53 + 1 (not representable as a double).
pub const TWO_POW_53_PLUS_1: u64 = 9_007_199_254_740_993;
/// 10^15 + 1.
pub const TEN_POW_15_PLUS_1: u64 = 1_000_000_000_000_001;

/// 2^53 + 1, 10^15 + 1 and MAX_AMOUNT − 1 come back exactly as deltas, counters, limits and timestamps.
pub async fn amounts_beyond_double_precision_are_exact(ctx: Ctx) {
    let b = &*ctx.backend;
    for (i, v) in [TWO_POW_53_PLUS_1, TEN_POW_15_PLUS_1, MAX_AMOUNT - 1]
        .into_iter()
        .enumerate()
    {
        let budget = format!("b{i}");
        let p = policy(&[("d", Some(v), Some(v))]);
        b.set_policy(&budget, &p).await.unwrap();
        assert_eq!(b.policy(&budget).await.unwrap(), Some(p));
        assert_eq!(
            must_report(b, &budget, &report(&[("d", v - 1)])).await,
            fresh(UsageOutcome::Ok)
        );
        assert_eq!(
            must_report(b, &budget, &report(&[("d", 1)])).await,
            fresh(UsageOutcome::Ok)
        );
        assert_eq!(usage_of(b, &budget).await, counters(&[("d", v)]));
        assert_eq!(
            must_report(b, &budget, &report(&[("d", 1)])).await,
            fresh(UsageOutcome::HardBreach(vec![breach("d", v, v, true)]))
        );
        b.store("t", &json!(i), v).await.unwrap();
    }
    let ats: Vec<u64> = rows(b, "t")
        .await
        .into_iter()
        .map(|(_, _, at)| at)
        .collect();
    assert_eq!(
        ats,
        vec![MAX_AMOUNT - 1, TWO_POW_53_PLUS_1, TEN_POW_15_PLUS_1]
    );
    let window = QueryParams::new()
        .start_time(TWO_POW_53_PLUS_1)
        .end_time(TWO_POW_53_PLUS_1);
    assert_eq!(
        rows_with(b, "t", window).await.len(),
        1,
        "the window is exact at 2^53 + 1"
    );
}

/// MAX_AMOUNT itself is a valid delta, counter, limit, timestamp and cleanup bound.
pub async fn max_amount_is_accepted_everywhere(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("d", Some(MAX_AMOUNT), Some(MAX_AMOUNT))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("d", MAX_AMOUNT)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("d", MAX_AMOUNT)]));
    assert_eq!(
        must_report(b, "p", &report(&[("d", 0)])).await,
        fresh(UsageOutcome::Ok)
    );
    b.store("r", &json!(1), MAX_AMOUNT).await.unwrap();
    b.store_idempotent("r", &json!(2), MAX_AMOUNT, "k")
        .await
        .unwrap();
    assert_eq!(
        rows_with(
            b,
            "r",
            QueryParams::new()
                .start_time(MAX_AMOUNT)
                .end_time(MAX_AMOUNT)
        )
        .await
        .len(),
        2
    );
    assert_eq!(b.cleanup(MAX_AMOUNT).await.unwrap(), 0);
}

/// Every number above MAX_AMOUNT is `InvalidInput` and changes nothing.
pub async fn above_max_amount_is_invalid_everywhere(ctx: Ctx) {
    let b = &*ctx.backend;
    let k = ErrorKind::InvalidInput;
    for big in [MAX_AMOUNT + 1, u64::MAX] {
        assert_kind(
            b.report_usage("p", &report(&[("d", big)])).await,
            k,
            "delta",
        );
        assert_kind(
            b.report_usage("p", &report(&[("ok", 1), ("d", big)])).await,
            k,
            "delta among others",
        );
        assert_kind(
            b.set_policy("p", &policy(&[("d", None, Some(big))])).await,
            k,
            "hard limit",
        );
        assert_kind(
            b.set_policy("p", &policy(&[("d", Some(big), None)])).await,
            k,
            "soft limit",
        );
        assert_kind(b.store("r", &json!(1), big).await, k, "timestamp");
        assert_kind(
            b.store_idempotent("r", &json!(1), big, "k").await,
            k,
            "idempotent timestamp",
        );
        assert_kind(
            b.query("*", QueryParams::new().start_time(big)).await,
            k,
            "start_time",
        );
        assert_kind(
            b.query("*", QueryParams::new().end_time(big)).await,
            k,
            "end_time",
        );
        assert_kind(b.cleanup(big).await, k, "cleanup bound");
        assert_kind(
            ctx.open(ctx.options_for(ctx.namespace()).dedup_ttl_ms(big))
                .await,
            k,
            "dedup TTL",
        );
    }
    assert!(usage_of(b, "p").await.is_empty());
    assert_eq!(b.policy("p").await.unwrap(), None);
    assert!(rows(b, "*").await.is_empty());
}

/// A counter that would exceed MAX_AMOUNT is `Overflow` and nothing is applied.
pub async fn overflow_is_an_error_and_applies_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("d", MAX_AMOUNT - 1)])).await;
    assert_kind(
        b.report_usage("p", &report(&[("d", 2)])).await,
        ErrorKind::Overflow,
        "MAX - 1 + 2",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("d", MAX_AMOUNT - 1)]));
    assert_eq!(
        must_report(b, "p", &report(&[("d", 1)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_kind(
        b.report_usage("p", &report(&[("d", 1)])).await,
        ErrorKind::Overflow,
        "MAX + 1",
    );
}

/// Overflow on one dimension applies no dimension, even one that would also breach a hard limit.
pub async fn overflow_in_one_dimension_applies_none(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(1))]))
        .await
        .unwrap();
    must_report(b, "p", &report(&[("z", MAX_AMOUNT)])).await;
    assert_kind(
        b.report_usage("p", &report(&[("a", 5), ("m", 1), ("z", 1)]))
            .await,
        ErrorKind::Overflow,
        "overflow is decided before limits",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("z", MAX_AMOUNT)]));
}

/// An overflowing report records nothing under its dedup key: after a reset the same key applies.
pub async fn overflow_is_not_recorded_under_the_dedup_key(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("d", MAX_AMOUNT)])).await;
    let r = keyed(&[("d", 1)], "k");
    assert_kind(
        b.report_usage("p", &r).await,
        ErrorKind::Overflow,
        "overflow",
    );
    assert_kind(
        b.report_usage("p", &r).await,
        ErrorKind::Overflow,
        "retry overflows again",
    );
    b.reset_usage("p").await.unwrap();
    assert_eq!(must_report(b, "p", &r).await, fresh(UsageOutcome::Ok));
    assert_eq!(usage_of(b, "p").await, counters(&[("d", 1)]));
}

/// Limits compare exactly above 2^53 where doubles would round usage and limit together.
pub async fn hard_limit_comparison_is_exact_above_two_pow_53(ctx: Ctx) {
    let b = &*ctx.backend;
    let limit = 9_007_199_254_740_992; // 2^53
    b.set_policy("p", &policy(&[("d", Some(limit - 1), Some(limit))]))
        .await
        .unwrap();
    must_report(b, "p", &report(&[("d", limit)])).await;
    assert_eq!(
        must_report(b, "p", &report(&[("d", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach(
            "d", limit, limit, true
        )]))
    );
    let r = must_report(b, "q", &report(&[("d", TWO_POW_53_PLUS_1)])).await;
    assert_eq!(r, fresh(UsageOutcome::Ok));
    b.set_policy("q", &policy(&[("d", Some(TWO_POW_53_PLUS_1 - 1), None)]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "q", &report(&[("d", 0)])).await,
        fresh(UsageOutcome::SoftBreach(vec![breach(
            "d",
            TWO_POW_53_PLUS_1,
            limit,
            false
        )]))
    );
}

cases! {
    __conformance_numbers;
    numbers: [
        amounts_beyond_double_precision_are_exact,
        max_amount_is_accepted_everywhere,
        above_max_amount_is_invalid_everywhere,
        overflow_is_an_error_and_applies_nothing,
        overflow_in_one_dimension_applies_none,
        overflow_is_not_recorded_under_the_dedup_key,
        hard_limit_comparison_is_exact_above_two_pow_53,
    ]
}
