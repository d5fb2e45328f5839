//! SEMANTICS §3 step 2 and 6: dedup keys, replays, conflicts and expiry by the backend's clock.

use stowage_core::{ErrorKind, UsageOutcome, DEFAULT_DEDUP_TTL_MS};

use super::{
    assert_kind, breach, counters, fresh, keyed, must_report, policy, replayed, report, usage_of,
};
use crate::Ctx;

/// A retry with the same key and report answers the recorded outcome, `replayed: true`, and applies nothing.
pub async fn retry_with_same_key_replays_without_applying(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = keyed(&[("tokens", 7), ("usd", 2)], "req-1");
    assert_eq!(must_report(b, "p", &r).await, fresh(UsageOutcome::Ok));
    for _ in 0..3 {
        assert_eq!(must_report(b, "p", &r).await, replayed(UsageOutcome::Ok));
    }
    assert_eq!(
        usage_of(b, "p").await,
        counters(&[("tokens", 7), ("usd", 2)])
    );
}

/// A replay answers the outcome recorded then, even after the policy changed.
pub async fn replay_answers_the_recorded_outcome_after_limits_change(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(5), None)]))
        .await
        .unwrap();
    let r = keyed(&[("a", 6)], "k");
    let first = must_report(b, "p", &r).await;
    assert_eq!(
        first,
        fresh(UsageOutcome::SoftBreach(vec![breach("a", 6, 5, true)]))
    );
    b.set_policy("p", &policy(&[("a", None, Some(1))]))
        .await
        .unwrap();
    assert_eq!(must_report(b, "p", &r).await, replayed(first.outcome));
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 6)]));
}

/// A hard breach is recorded under its key: the retry answers the breach even after the limit is lifted.
pub async fn hard_breach_is_recorded_and_replayed(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", None, Some(3))]))
        .await
        .unwrap();
    let r = keyed(&[("a", 4)], "k");
    let breach_outcome = UsageOutcome::HardBreach(vec![breach("a", 0, 3, true)]);
    assert_eq!(must_report(b, "p", &r).await, fresh(breach_outcome.clone()));
    b.delete_policy("p").await.unwrap();
    assert_eq!(must_report(b, "p", &r).await, replayed(breach_outcome));
    assert!(usage_of(b, "p").await.is_empty());
}

/// The same key with different deltas is `Conflict`.
pub async fn same_key_different_deltas_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &keyed(&[("a", 1)], "k")).await;
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 2)], "k")).await,
        ErrorKind::Conflict,
        "other delta",
    );
}

/// The same key with a different set of dimensions is `Conflict`, even with a zero delta added.
pub async fn same_key_different_dimensions_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &keyed(&[("a", 1)], "k")).await;
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1), ("b", 0)], "k"))
            .await,
        ErrorKind::Conflict,
        "extra zero dimension",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("b", 1)], "k")).await,
        ErrorKind::Conflict,
        "other dimension",
    );
}

/// A reused key with another payload is `Conflict`, applies nothing and leaves the recorded outcome in place.
pub async fn conflict_changes_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &keyed(&[("a", 1)], "k")).await;
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 50)], "k")).await,
        ErrorKind::Conflict,
        "another delta under a live key",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 1)]));
    assert_eq!(
        must_report(b, "p", &keyed(&[("a", 1)], "k")).await,
        replayed(UsageOutcome::Ok)
    );
}

/// A record written at t replays while now < t + TTL and is absent from t + TTL on.
pub async fn dedup_record_expires_exactly_at_ttl(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = keyed(&[("a", 1)], "k");
    must_report(b, "p", &r).await;
    ctx.clock.advance(DEFAULT_DEDUP_TTL_MS - 1);
    assert_eq!(must_report(b, "p", &r).await, replayed(UsageOutcome::Ok));
    ctx.clock.advance(1);
    assert_eq!(must_report(b, "p", &r).await, fresh(UsageOutcome::Ok));
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 2)]));
    assert_eq!(must_report(b, "p", &r).await, replayed(UsageOutcome::Ok));
}

/// After expiry the key applies afresh, even with a payload that would have conflicted.
pub async fn expired_key_applies_afresh_even_with_new_payload(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &keyed(&[("a", 1)], "k")).await;
    ctx.clock.advance(DEFAULT_DEDUP_TTL_MS);
    assert_eq!(
        must_report(b, "p", &keyed(&[("b", 5)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], "k")).await,
        ErrorKind::Conflict,
        "the new record holds the new payload",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 1), ("b", 5)]));
}

/// `reset_usage` keeps dedup records: a retry after a reset still replays and applies nothing.
pub async fn replay_survives_reset(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = keyed(&[("a", 3)], "k");
    must_report(b, "p", &r).await;
    b.reset_usage("p").await.unwrap();
    assert_eq!(must_report(b, "p", &r).await, replayed(UsageOutcome::Ok));
    assert!(usage_of(b, "p").await.is_empty());
}

/// `ConnectOptions::dedup_ttl_ms` sets the TTL.
pub async fn custom_dedup_ttl_is_respected(ctx: Ctx) {
    let b = ctx.open_with_ttl("_ttl", 1_000).await;
    let r = keyed(&[("a", 1)], "k");
    must_report(&*b, "p", &r).await;
    ctx.clock.advance(999);
    assert_eq!(must_report(&*b, "p", &r).await, replayed(UsageOutcome::Ok));
    ctx.clock.advance(1);
    assert_eq!(must_report(&*b, "p", &r).await, fresh(UsageOutcome::Ok));
    assert_eq!(usage_of(&*b, "p").await, counters(&[("a", 2)]));
}

/// Reports without a key always apply.
pub async fn reports_without_key_are_never_deduplicated(ctx: Ctx) {
    let b = &*ctx.backend;
    for _ in 0..3 {
        assert_eq!(
            must_report(b, "p", &report(&[("a", 1)])).await,
            fresh(UsageOutcome::Ok)
        );
    }
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 3)]));
}

/// Dedup keys are scoped per budget: one key on two budgets applies to both.
pub async fn dedup_keys_are_scoped_per_budget(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_eq!(
        must_report(b, "one", &keyed(&[("a", 1)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "two", &keyed(&[("a", 2)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "one").await, counters(&[("a", 1)]));
    assert_eq!(usage_of(b, "two").await, counters(&[("a", 2)]));
}

/// A replayed soft breach keeps its recorded `usage` and `crossed`, not values recomputed now.
pub async fn soft_breach_replay_keeps_crossed(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("a", Some(5), None)]))
        .await
        .unwrap();
    let r = keyed(&[("a", 6)], "k");
    must_report(b, "p", &r).await;
    must_report(b, "p", &report(&[("a", 10)])).await;
    assert_eq!(
        must_report(b, "p", &r).await,
        replayed(UsageOutcome::SoftBreach(vec![breach("a", 6, 5, true)]))
    );
}

/// The longest dedup TTLs (MAX_AMOUNT and MAX_AMOUNT / 2 + 1) work: the report applies once and replays.
pub async fn longest_dedup_ttls_work(ctx: Ctx) {
    for (i, ttl) in [stowage_core::MAX_AMOUNT, stowage_core::MAX_AMOUNT / 2 + 1]
        .into_iter()
        .enumerate()
    {
        let b = ctx.open_with_ttl(&format!("_ttl{i}"), ttl).await;
        let r = keyed(&[("a", 1)], "k");
        assert_eq!(must_report(&*b, "p", &r).await, fresh(UsageOutcome::Ok));
        ctx.clock.advance(DEFAULT_DEDUP_TTL_MS * 365);
        assert_eq!(must_report(&*b, "p", &r).await, replayed(UsageOutcome::Ok));
        assert_eq!(usage_of(&*b, "p").await, counters(&[("a", 1)]));
    }
}

/// A dedup record lives by the TTL of the handle that wrote it, whatever TTL the reading (or
/// collecting) handle has: a short-TTL handle neither drops nor collects a long-TTL handle's live
/// record, and a long-TTL handle does not revive a short-TTL handle's expired one. Needs two
/// handles on one store, so it checks shared backends (the differential test covers the model).
pub async fn dedup_record_lives_by_the_writers_ttl(ctx: Ctx) {
    if !ctx.backend.capabilities().shared {
        return;
    }
    let long = &*ctx.backend; // DEFAULT_DEDUP_TTL_MS
    let short = ctx
        .open(ctx.options_for(ctx.namespace()).dedup_ttl_ms(1_000))
        .await
        .expect("a second handle with a 1 s dedup TTL");
    let short = &*short;
    let long_key = keyed(&[("a", 1)], "long");
    assert_eq!(
        must_report(long, "p", &long_key).await,
        fresh(UsageOutcome::Ok)
    );
    let short_key = keyed(&[("b", 1)], "short");
    assert_eq!(
        must_report(short, "p", &short_key).await,
        fresh(UsageOutcome::Ok)
    );
    ctx.clock.advance(5_000);
    // Many keyed reports through the short handle: any garbage collection it runs must spare the
    // long handle's record, which is live for another 24 h minus 5 s.
    for i in 0..40 {
        must_report(short, "p", &keyed(&[("c", 1)], &format!("gc-{i}"))).await;
        must_report(long, "p", &keyed(&[("c", 0)], &format!("gc-long-{i}"))).await;
    }
    assert_eq!(
        must_report(short, "p", &long_key).await,
        replayed(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(long, "p", &long_key).await,
        replayed(UsageOutcome::Ok)
    );
    // The short handle's record expired 4 s ago for every reader, the long handle included.
    assert_eq!(
        must_report(long, "p", &short_key).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        usage_of(long, "p").await,
        counters(&[("a", 1), ("b", 2), ("c", 40)])
    );
    ctx.clock.advance(DEFAULT_DEDUP_TTL_MS - 5_000 - 1);
    assert_eq!(
        must_report(short, "p", &long_key).await,
        replayed(UsageOutcome::Ok)
    );
    ctx.clock.advance(1);
    assert_eq!(
        must_report(short, "p", &long_key).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        usage_of(long, "p").await,
        counters(&[("a", 2), ("b", 2), ("c", 40)])
    );
}

cases! {
    __conformance_dedup;
    dedup: [
        retry_with_same_key_replays_without_applying,
        replay_answers_the_recorded_outcome_after_limits_change,
        hard_breach_is_recorded_and_replayed,
        same_key_different_deltas_conflicts,
        same_key_different_dimensions_conflicts,
        conflict_changes_nothing,
        dedup_record_expires_exactly_at_ttl,
        expired_key_applies_afresh_even_with_new_payload,
        replay_survives_reset,
        custom_dedup_ttl_is_respected,
        reports_without_key_are_never_deduplicated,
        dedup_keys_are_scoped_per_budget,
        soft_breach_replay_keeps_crossed,
        longest_dedup_ttls_work,
        dedup_record_lives_by_the_writers_ttl,
    ]
}
