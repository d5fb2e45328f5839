//! SEMANTICS §3: policies, hard and soft limits, counters, reset.

use stowage_core::{BudgetPolicy, DimensionLimit, ErrorKind, UsageOutcome};

use super::{assert_kind, breach, counters, fresh, must_report, policy, report, usage_of};
use crate::Ctx;

/// A budget without a policy accepts every report with `Ok` and applies it.
pub async fn budget_without_policy_accepts_everything(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = must_report(
        b,
        "free",
        &report(&[("tokens", 1_000_000), ("usd_micros", 5)]),
    )
    .await;
    assert_eq!(r, fresh(UsageOutcome::Ok));
    assert_eq!(
        usage_of(b, "free").await,
        counters(&[("tokens", 1_000_000), ("usd_micros", 5)])
    );
}

/// `policy` returns exactly what `set_policy` stored, `None`s and zeros included.
pub async fn policy_round_trips_exactly(ctx: Ctx) {
    let b = &*ctx.backend;
    let p = policy(&[
        ("a", None, None),
        ("b", Some(0), Some(0)),
        ("c", Some(5), None),
        ("d", None, Some(7)),
        (
            "e",
            Some(9_007_199_254_740_993),
            Some(9_223_372_036_854_775_807),
        ),
    ]);
    b.set_policy("p", &p).await.unwrap();
    assert_eq!(b.policy("p").await.unwrap(), Some(p));
    b.set_policy("empty", &BudgetPolicy::new()).await.unwrap();
    assert_eq!(b.policy("empty").await.unwrap(), Some(BudgetPolicy::new()));
}

/// `set_policy` replaces the whole policy: dimensions not in the new one lose their limits.
pub async fn set_policy_replaces_the_whole_policy(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(1)), ("b", None, Some(1))]))
        .await
        .unwrap();
    let second = policy(&[("b", None, Some(100))]);
    b.set_policy("p", &second).await.unwrap();
    assert_eq!(b.policy("p").await.unwrap(), Some(second));
    let r = must_report(b, "p", &report(&[("a", 50), ("b", 50)])).await;
    assert_eq!(r, fresh(UsageOutcome::Ok));
}

/// `set_policy` leaves usage as it is, even when the new limits are already exceeded.
pub async fn set_policy_leaves_usage_alone(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 10)])).await;
    b.set_policy("p", &policy(&[("a", None, Some(3))]))
        .await
        .unwrap();
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 10)]));
}

/// `delete_policy` returns whether a policy existed, and the budget then has no limits.
pub async fn delete_policy_says_whether_one_existed(ctx: Ctx) {
    let b = &*ctx.backend;
    assert!(!b.delete_policy("p").await.unwrap());
    b.set_policy("p", &policy(&[("a", None, Some(0))]))
        .await
        .unwrap();
    assert!(b.delete_policy("p").await.unwrap());
    assert!(!b.delete_policy("p").await.unwrap());
    assert_eq!(b.policy("p").await.unwrap(), None);
    assert_eq!(
        must_report(b, "p", &report(&[("a", 5)])).await,
        fresh(UsageOutcome::Ok)
    );
}

/// The policy of a budget that never had one is `None`.
pub async fn policy_of_unknown_budget_is_none(ctx: Ctx) {
    assert_eq!(ctx.backend.policy("never").await.unwrap(), None);
}

/// A soft limit above the hard limit is `InvalidInput`; equal limits are fine.
pub async fn soft_above_hard_is_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(5), Some(10))]))
        .await
        .unwrap();
    assert_kind(
        b.set_policy("p", &policy(&[("a", Some(11), Some(10))]))
            .await,
        ErrorKind::InvalidInput,
        "soft > hard",
    );
    assert_eq!(
        b.policy("p").await.unwrap(),
        Some(policy(&[("a", Some(5), Some(10))]))
    );
    b.set_policy("q", &policy(&[("a", Some(10), Some(10))]))
        .await
        .unwrap();
}

/// A policy may have 64 dimensions; 65 is `InvalidInput`.
pub async fn policy_dimension_count_is_limited(ctx: Ctx) {
    let b = &*ctx.backend;
    let mut p = BudgetPolicy::new();
    for i in 0..64 {
        p = p.limit(format!("d{i:02}"), DimensionLimit::hard(1));
    }
    b.set_policy("p", &p).await.unwrap();
    assert_eq!(b.policy("p").await.unwrap().unwrap().limits.len(), 64);
    let p = p.limit("d64", DimensionLimit::hard(1));
    assert_kind(
        b.set_policy("q", &p).await,
        ErrorKind::InvalidInput,
        "65 dimensions",
    );
    assert_eq!(b.policy("q").await.unwrap(), None);
}

/// A report needs 1 to 64 dimensions; 0 or 65 is `InvalidInput` and applies nothing.
pub async fn report_dimension_count_is_limited(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_kind(
        b.report_usage("p", &report(&[])).await,
        ErrorKind::InvalidInput,
        "0 dimensions",
    );
    let mut r = stowage_core::UsageReport::new();
    for i in 0..64 {
        r = r.add(format!("d{i:02}"), 1);
    }
    must_report(b, "p", &r).await;
    assert_eq!(usage_of(b, "p").await.len(), 64);
    let r = r.add("d64", 1);
    assert_kind(
        b.report_usage("p", &r).await,
        ErrorKind::InvalidInput,
        "65 dimensions",
    );
    assert_eq!(usage_of(b, "p").await["d00"], 1);
}

/// Usage may reach a hard limit exactly; one more is a breach.
pub async fn reaching_hard_limit_exactly_is_allowed(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(10))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 10)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 10, 10, true)]))
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 10)]));
}

/// A hard breach on one dimension applies nothing to any dimension of the report.
pub async fn hard_breach_applies_nothing_to_any_dimension(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("b", None, Some(5))]))
        .await
        .unwrap();
    must_report(b, "p", &report(&[("a", 1), ("b", 1), ("c", 1)])).await;
    let r = must_report(b, "p", &report(&[("a", 100), ("b", 5), ("c", 100)])).await;
    assert_eq!(
        r,
        fresh(UsageOutcome::HardBreach(vec![breach("b", 1, 5, true)]))
    );
    assert_eq!(
        usage_of(b, "p").await,
        counters(&[("a", 1), ("b", 1), ("c", 1)])
    );
}

/// A hard breach lists every breaching dimension in name order with usage before and the hard limit.
pub async fn hard_breach_lists_every_breach_with_usage_before(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &policy(&[
            ("z", Some(1), Some(10)),
            ("a", None, Some(3)),
            ("m", None, Some(100)),
        ]),
    )
    .await
    .unwrap();
    must_report(b, "p", &report(&[("a", 2), ("z", 4)])).await;
    let r = must_report(b, "p", &report(&[("z", 7), ("m", 1), ("a", 2)])).await;
    assert_eq!(
        r,
        fresh(UsageOutcome::HardBreach(vec![
            breach("a", 2, 3, true),
            breach("z", 4, 10, true)
        ]))
    );
}

/// A limit of `Some(0)` is real: any positive use breaches, zero use does not.
pub async fn zero_limit_is_a_real_limit(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(0)), ("s", Some(0), None)]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 0, 0, true)]))
    );
    assert_eq!(
        must_report(b, "p", &report(&[("a", 0)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "p", &report(&[("s", 1)])).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("s", 1, 0, true)]))
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 0), ("s", 1)]));
}

/// A zero delta is checked too: with usage already above the hard limit it is a hard breach.
pub async fn zero_delta_is_checked_against_hard_limit(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 10)])).await;
    b.set_policy("p", &policy(&[("a", None, Some(5))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 0)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 10, 5, false)]))
    );
    b.set_policy("p", &policy(&[("a", None, Some(10))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 0)])).await,
        fresh(UsageOutcome::Ok)
    );
}

/// A soft breach applies the report and lists dimensions over their soft limit with usage after.
pub async fn soft_breach_applies_and_lists_usage_after(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &policy(&[
            ("b", Some(5), Some(100)),
            ("a", Some(1), None),
            ("c", Some(50), None),
        ]),
    )
    .await
    .unwrap();
    let r = must_report(b, "p", &report(&[("c", 3), ("b", 6), ("a", 2)])).await;
    assert_eq!(
        r,
        fresh(UsageOutcome::SoftBreach(vec![
            breach("a", 2, 1, true),
            breach("b", 6, 5, true)
        ]))
    );
    assert_eq!(
        usage_of(b, "p").await,
        counters(&[("a", 2), ("b", 6), ("c", 3)])
    );
}

/// `crossed` is true for the report that moves usage over the soft limit, false afterwards.
pub async fn crossed_is_true_only_for_the_crossing_report(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(10), None)]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 10)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("a", 11, 10, true)]))
    );
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("a", 12, 10, false)]))
    );
}

/// A hard breach has `crossed: false` when usage was already above the limit, true otherwise.
pub async fn hard_breach_crossed_is_false_when_already_over(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 8), ("b", 3)])).await;
    b.set_policy("p", &policy(&[("a", None, Some(5)), ("b", None, Some(5))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1), ("b", 3)])).await,
        fresh(UsageOutcome::HardBreach(vec![
            breach("a", 8, 5, false),
            breach("b", 3, 5, true)
        ]))
    );
}

/// A zero delta in an applied report creates a counter at 0.
pub async fn zero_delta_creates_a_counter(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 0), ("b", 2)])).await;
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 0), ("b", 2)]));
}

/// A hard breach creates no counter for any dimension of the report.
pub async fn hard_breach_creates_no_counter(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(1))]))
        .await
        .unwrap();
    let r = must_report(b, "p", &report(&[("a", 2), ("new", 1)])).await;
    assert!(matches!(r.outcome, UsageOutcome::HardBreach(_)));
    assert!(usage_of(b, "p").await.is_empty());
}

/// A budget nobody reported to has empty counters.
pub async fn unknown_budget_has_empty_usage(ctx: Ctx) {
    assert!(usage_of(&*ctx.backend, "never").await.is_empty());
}

/// `reset_usage` removes every counter; the policy stays and is enforced from zero.
pub async fn reset_clears_counters_but_keeps_policy(ctx: Ctx) {
    let b = &*ctx.backend;
    let p = policy(&[("a", None, Some(10))]);
    b.set_policy("p", &p).await.unwrap();
    must_report(b, "p", &report(&[("a", 10), ("b", 1)])).await;
    b.reset_usage("p").await.unwrap();
    assert!(usage_of(b, "p").await.is_empty());
    assert_eq!(b.policy("p").await.unwrap(), Some(p));
    assert_eq!(
        must_report(b, "p", &report(&[("a", 10)])).await,
        fresh(UsageOutcome::Ok)
    );
    b.reset_usage("never-used").await.unwrap();
}

/// Limits of dimensions a report does not mention are not checked.
pub async fn limits_of_unreported_dimensions_are_not_checked(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("a", 10)])).await;
    b.set_policy("p", &policy(&[("a", Some(1), Some(5))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "p", &report(&[("b", 1)])).await,
        fresh(UsageOutcome::Ok)
    );
}

/// Policies and counters of one budget never affect another.
pub async fn budgets_are_independent(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("one", &policy(&[("a", None, Some(1))]))
        .await
        .unwrap();
    must_report(b, "two", &report(&[("a", 5)])).await;
    assert_eq!(
        must_report(b, "one", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "one").await, counters(&[("a", 1)]));
    assert_eq!(usage_of(b, "two").await, counters(&[("a", 5)]));
    b.reset_usage("one").await.unwrap();
    assert_eq!(usage_of(b, "two").await, counters(&[("a", 5)]));
}

cases! {
    __conformance_budget;
    budget: [
        budget_without_policy_accepts_everything,
        policy_round_trips_exactly,
        set_policy_replaces_the_whole_policy,
        set_policy_leaves_usage_alone,
        delete_policy_says_whether_one_existed,
        policy_of_unknown_budget_is_none,
        soft_above_hard_is_invalid,
        policy_dimension_count_is_limited,
        report_dimension_count_is_limited,
        reaching_hard_limit_exactly_is_allowed,
        hard_breach_applies_nothing_to_any_dimension,
        hard_breach_lists_every_breach_with_usage_before,
        zero_limit_is_a_real_limit,
        zero_delta_is_checked_against_hard_limit,
        soft_breach_applies_and_lists_usage_after,
        crossed_is_true_only_for_the_crossing_report,
        hard_breach_crossed_is_false_when_already_over,
        zero_delta_creates_a_counter,
        hard_breach_creates_no_counter,
        unknown_budget_has_empty_usage,
        reset_clears_counters_but_keeps_policy,
        limits_of_unreported_dimensions_are_not_checked,
        budgets_are_independent,
    ]
}
