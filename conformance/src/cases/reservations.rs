//! SEMANTICS §4.2: reservations — hold before the work, commit or release after, expiry by the
//! backend's clock, ids remembered for the creator's dedup TTL after they ended.

use std::collections::BTreeMap;

use stowage_core::{
    Backend, ErrorKind, Reservation, ReservationState, UsageOutcome, Window, WindowBounds,
    DEFAULT_DEDUP_TTL_MS, MAX_AMOUNT,
};

use super::{
    assert_kind, breach, counters, fresh, held_breach, keyed, must_commit, must_release,
    must_report, must_reserve, pending_in, policy, refused, replay_of, replayed, report, request,
    reservation_of, reserved, usage_of,
};
use crate::{Ctx, START_MS};

/// The TTL most cases reserve with.
const TTL: u64 = 10_000;

/// The hard limit `hard` (and no soft one) on `dimension` of `budget`.
async fn hard_limit(b: &dyn Backend, budget: &str, dimension: &str, hard: u64) {
    b.set_policy(budget, &policy(&[(dimension, None, Some(hard))]))
        .await
        .unwrap();
}

/// Asserts that `budget` holds nothing, has the counters `want` and remembers no reservation.
#[track_caller]
fn assert_untouched(
    usage: stowage_core::BudgetUsage,
    reservations: Vec<Reservation>,
    want: &[(&str, u64)],
) {
    assert!(usage.pending.is_empty(), "pending: {:?}", usage.pending);
    assert_eq!(usage.counters, counters(want));
    assert!(reservations.is_empty(), "reservations: {reservations:?}");
}

async fn untouched(b: &dyn Backend, budget: &str, want: &[(&str, u64)]) {
    assert_untouched(
        b.usage(budget).await.unwrap(),
        b.reservations(budget).await.unwrap(),
        want,
    );
}

/// `reserve` holds the amounts, answers `Reserved` with `expires_at = now + ttl_ms`, and the budget remembers a `Held` reservation.
pub async fn reserve_holds_the_amounts(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r1", &[("tok", 5), ("usd", 2)], 1_000);
    assert_eq!(must_reserve(b, "p", &r).await, reserved(START_MS + 1_000));
    let usage = b.usage("p").await.unwrap();
    assert_eq!(usage.pending, counters(&[("tok", 5), ("usd", 2)]));
    assert!(usage.counters.is_empty(), "a hold is not usage");
    assert_eq!(
        reservation_of(b, "p", "r1").await,
        Some(Reservation {
            id: "r1".into(),
            dimensions: counters(&[("tok", 5), ("usd", 2)]),
            ttl_ms: 1_000,
            expires_at: START_MS + 1_000,
            remember_ms: DEFAULT_DEDUP_TTL_MS,
            state: ReservationState::Held,
        })
    );
}

/// `expires_at` is `min(now + ttl_ms, MAX_AMOUNT)`: a TTL of `MAX_AMOUNT`, or a clock near the end of time, expires at `MAX_AMOUNT`.
pub async fn expires_at_is_capped_at_max_amount(ctx: Ctx) {
    let b = &*ctx.backend;
    let longest = request("r1", &[("t", 1)], MAX_AMOUNT);
    assert_eq!(must_reserve(b, "p", &longest).await, reserved(MAX_AMOUNT));
    ctx.clock.set(MAX_AMOUNT - 10);
    let late = request("r2", &[("t", 1)], 100);
    assert_eq!(must_reserve(b, "p", &late).await, reserved(MAX_AMOUNT));
    assert_eq!(
        must_reserve(b, "p", &request("r3", &[("t", 1)], 3)).await,
        reserved(MAX_AMOUNT - 7)
    );
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 3)]));
}

/// A `ttl_ms` of 0 or above `MAX_AMOUNT` is `InvalidInput`; nothing is held or remembered.
pub async fn ttl_out_of_range_is_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    for ttl in [0, MAX_AMOUNT + 1, u64::MAX] {
        assert_kind(
            b.reserve("p", &request("r", &[("t", 1)], ttl)).await,
            ErrorKind::InvalidInput,
            "ttl out of range",
        );
    }
    untouched(b, "p", &[]).await;
    // The id was never taken.
    assert_eq!(
        must_reserve(b, "p", &request("r", &[("t", 1)], 1)).await,
        reserved(START_MS + 1)
    );
}

/// A request of 0 or 65 dimensions is `InvalidInput` and changes nothing; 64 are allowed.
pub async fn dimension_count_out_of_range_is_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_kind(
        b.reserve("p", &request("r", &[], TTL)).await,
        ErrorKind::InvalidInput,
        "no dimensions",
    );
    let names: Vec<String> = (0..65).map(|i| format!("d{i:02}")).collect();
    let mut r = request("r", &[], TTL);
    for name in &names {
        r = r.add(name.clone(), 1);
    }
    assert_kind(
        b.reserve("p", &r).await,
        ErrorKind::InvalidInput,
        "65 dimensions",
    );
    untouched(b, "p", &[]).await;
    r.dimensions.remove("d64");
    assert_eq!(must_reserve(b, "p", &r).await, reserved(START_MS + TTL));
    assert_eq!(pending_in(b, "p").await.len(), 64);
}

/// Invalid ids, budgets, dimension names and amounts are `InvalidInput` in every reservation call; nothing changes.
pub async fn invalid_names_and_amounts_are_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    let long = "x".repeat(257);
    for bad in ["", long.as_str(), "a\0b"] {
        assert_kind(
            b.reserve("p", &request(bad, &[("t", 1)], TTL)).await,
            ErrorKind::InvalidInput,
            "invalid id",
        );
        assert_kind(
            b.reserve(bad, &request("r", &[("t", 1)], TTL)).await,
            ErrorKind::InvalidInput,
            "invalid budget",
        );
        assert_kind(
            b.reserve("p", &request("r", &[(bad, 1)], TTL)).await,
            ErrorKind::InvalidInput,
            "invalid dimension",
        );
        assert_kind(
            b.commit("p", bad, &BTreeMap::new()).await,
            ErrorKind::InvalidInput,
            "commit: invalid id",
        );
        assert_kind(
            b.release("p", bad).await,
            ErrorKind::InvalidInput,
            "release: invalid id",
        );
        assert_kind(
            b.reservation("p", bad).await,
            ErrorKind::InvalidInput,
            "reservation: invalid id",
        );
        assert_kind(
            b.reservations(bad).await,
            ErrorKind::InvalidInput,
            "reservations: invalid budget",
        );
    }
    assert_kind(
        b.reserve("p", &request("r", &[("t", MAX_AMOUNT + 1)], TTL))
            .await,
        ErrorKind::InvalidInput,
        "amount above MAX_AMOUNT",
    );
    untouched(b, "p", &[]).await;
    // 256 bytes is a valid id.
    let id = "i".repeat(256);
    assert_eq!(
        must_reserve(b, "p", &request(&id, &[("t", 1)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert!(must_release(b, "p", &id).await);
}

/// A retry with the same request replays the first receipt (`replayed`, same `expires_at`) and holds nothing more.
pub async fn retry_with_the_same_request_replays(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r", &[("t", 4), ("u", 0)], TTL);
    let first = must_reserve(b, "p", &r).await;
    assert_eq!(first, reserved(START_MS + TTL));
    ctx.clock.advance(500);
    for _ in 0..3 {
        assert_eq!(must_reserve(b, "p", &r).await, replay_of(&first));
    }
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 4)]));
    assert_eq!(b.reservations("p").await.unwrap().len(), 1);
    // Even after the hold expired, a retry replays `Reserved` (and holds nothing).
    ctx.clock.set(START_MS + TTL);
    assert_eq!(must_reserve(b, "p", &r).await, replay_of(&first));
    assert!(pending_in(b, "p").await.is_empty());
}

/// The same id with other amounts, other dimensions or another TTL is `Conflict`, and changes nothing.
pub async fn same_id_with_another_request_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    let first = must_reserve(b, "p", &request("r", &[("t", 4)], TTL)).await;
    for (other, what) in [
        (request("r", &[("t", 5)], TTL), "other amount"),
        (request("r", &[("u", 4)], TTL), "other dimension"),
        (
            request("r", &[("t", 4), ("u", 0)], TTL),
            "extra zero dimension",
        ),
        (request("r", &[("t", 4)], TTL + 1), "other ttl"),
    ] {
        assert_kind(b.reserve("p", &other).await, ErrorKind::Conflict, what);
    }
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 4)]));
    assert_eq!(
        must_reserve(b, "p", &request("r", &[("t", 4)], TTL)).await,
        replay_of(&first)
    );
}

/// In `reserve`, holds count against hard limits: `counters + pending + amount > hard` refuses (usage, pending, crossed); reaching it exactly holds.
pub async fn holds_count_against_hard_limits_in_reserve(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_report(b, "p", &report(&[("t", 1)])).await;
    assert_eq!(
        must_reserve(b, "p", &request("a", &[("t", 5)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_eq!(
        must_reserve(b, "p", &request("b", &[("t", 5)], TTL)).await,
        refused(START_MS + TTL, vec![held_breach("t", 1, 5, 10, true)])
    );
    assert_eq!(
        must_reserve(b, "p", &request("c", &[("t", 4)], TTL)).await,
        reserved(START_MS + TTL),
        "1 + 5 + 4 reaches the limit exactly"
    );
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 9)]));
    // Full: even a zero amount is checked, and passes (10 + 0 is not above 10).
    assert_eq!(
        must_reserve(b, "p", &request("d", &[("t", 0)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_eq!(
        must_reserve(b, "p", &request("e", &[("t", 1)], TTL)).await,
        refused(START_MS + TTL, vec![held_breach("t", 1, 9, 10, true)])
    );
}

/// In `report_usage`, holds count against hard limits: the breach has `usage = counters` and `pending`; a report that reaches the limit exactly applies.
pub async fn holds_count_against_hard_limits_in_reports(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_report(b, "p", &report(&[("t", 3)])).await;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    assert_eq!(
        must_report(b, "p", &report(&[("t", 3)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 3, 5, 10, true
        )]))
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 3)]));
    assert_eq!(
        must_report(b, "p", &report(&[("t", 2)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 5)]));
    // Dimensions without a hold are unaffected by it.
    assert_eq!(
        must_report(b, "p", &report(&[("u", 50)])).await,
        fresh(UsageOutcome::Ok)
    );
}

/// `crossed` of a hard breach is `usage + pending <= limit`: false once holds alone are above a lowered limit (zero deltas are checked too).
pub async fn hard_breach_crossed_counts_pending(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("t", 3)])).await;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    hard_limit(b, "p", "t", 4).await;
    assert_eq!(
        must_report(b, "p", &report(&[("t", 0)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 3, 5, 4, false
        )]))
    );
    assert_eq!(
        must_reserve(b, "p", &request("z", &[("t", 0)], TTL)).await,
        refused(START_MS + TTL, vec![held_breach("t", 3, 5, 4, false)])
    );
    hard_limit(b, "p", "t", 8).await;
    assert_eq!(
        must_report(b, "p", &report(&[("t", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 3, 5, 8, true
        )]))
    );
}

/// Soft limits look at counters only: holds never make a soft breach, and a report is judged by `counters + delta`.
pub async fn soft_limits_ignore_holds(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("t", Some(5), None)]))
        .await
        .unwrap();
    assert_eq!(
        must_reserve(b, "p", &request("r", &[("t", 100)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_eq!(
        must_report(b, "p", &report(&[("t", 5)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "p", &report(&[("t", 1)])).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("t", 6, 5, true)]))
    );
}

/// `counters + pending + amount > MAX_AMOUNT` is `Overflow` in `reserve` and `report_usage`: nothing is held, applied or recorded.
pub async fn overflow_counts_pending(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("t", MAX_AMOUNT - 10)])).await;
    assert_eq!(
        must_reserve(b, "p", &request("a", &[("t", 10)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_kind(
        b.reserve("p", &request("b", &[("t", 1), ("u", 1)], TTL))
            .await,
        ErrorKind::Overflow,
        "reserve past MAX_AMOUNT",
    );
    assert_eq!(reservation_of(b, "p", "b").await, None, "nothing recorded");
    assert_kind(
        b.report_usage("p", &keyed(&[("t", 1)], "k")).await,
        ErrorKind::Overflow,
        "report past MAX_AMOUNT",
    );
    let usage = b.usage("p").await.unwrap();
    assert_eq!(usage.counters, counters(&[("t", MAX_AMOUNT - 10)]));
    assert_eq!(usage.pending, counters(&[("t", 10)]));
    // Once the hold is gone, the same id and the same key are free and fit.
    assert!(must_release(b, "p", "a").await);
    assert_eq!(
        must_reserve(b, "p", &request("b", &[("t", 1), ("u", 1)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_eq!(
        must_report(b, "p", &keyed(&[("t", 1)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
}

/// A refused reserve is recorded: a retry replays the `HardBreach` after the limit is lifted, `commit` is `Conflict`, `release` is false.
pub async fn refused_reserve_is_recorded(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 5).await;
    let r = request("r", &[("t", 6)], TTL);
    let first = must_reserve(b, "p", &r).await;
    let breaches = vec![breach("t", 0, 5, true)];
    assert_eq!(first, refused(START_MS + TTL, breaches.clone()));
    b.delete_policy("p").await.unwrap();
    ctx.clock.advance(1);
    assert_eq!(must_reserve(b, "p", &r).await, replay_of(&first));
    assert_kind(
        b.commit("p", "r", &counters(&[("t", 1)])).await,
        ErrorKind::Conflict,
        "commit of a refused reservation",
    );
    assert!(!must_release(b, "p", "r").await);
    let usage = b.usage("p").await.unwrap();
    assert!(usage.pending.is_empty() && usage.counters.is_empty());
    assert_eq!(
        reservation_of(b, "p", "r").await.map(|r| r.state),
        Some(ReservationState::Refused {
            at: START_MS,
            breaches
        })
    );
}

/// `commit` frees the hold, applies `actual` to the counters and records the commit.
pub async fn commit_frees_the_hold_and_applies_actual(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "p", &report(&[("tok", 1)])).await;
    must_reserve(b, "p", &request("r", &[("tok", 10), ("usd", 5)], TTL)).await;
    ctx.clock.advance(7);
    assert_eq!(
        must_commit(b, "p", "r", &[("tok", 7), ("usd", 5)]).await,
        fresh(UsageOutcome::Ok)
    );
    let usage = b.usage("p").await.unwrap();
    assert!(usage.pending.is_empty());
    assert_eq!(usage.counters, counters(&[("tok", 8), ("usd", 5)]));
    assert_eq!(
        reservation_of(b, "p", "r").await.map(|r| r.state),
        Some(ReservationState::Committed {
            at: START_MS + 7,
            actual: counters(&[("tok", 7), ("usd", 5)]),
            outcome: UsageOutcome::Ok,
        })
    );
}

/// An explicit 0 in `actual` creates a counter; a reserved dimension missing from `actual` is committed as 0 and creates none.
pub async fn commit_zero_creates_a_counter_missing_does_not(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("a", 10), ("b", 5)], TTL)).await;
    assert_eq!(
        must_commit(b, "p", "r", &[("a", 0)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("a", 0)]));
    assert!(pending_in(b, "p").await.is_empty());
}

/// An empty `actual` is allowed (the work cost nothing): the hold is freed and no counter is created.
pub async fn commit_with_empty_actual_frees_the_hold(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("a", 10)], TTL)).await;
    assert_eq!(must_commit(b, "p", "r", &[]).await, fresh(UsageOutcome::Ok));
    let usage = b.usage("p").await.unwrap();
    assert!(usage.pending.is_empty() && usage.counters.is_empty());
    assert_eq!(
        must_commit(b, "p", "r", &[]).await,
        replayed(UsageOutcome::Ok)
    );
}

/// `commit` checks soft limits as a report does (usage after, crossed) and answers `SoftBreach`.
pub async fn commit_reports_soft_breaches(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("t", Some(5), Some(100))]))
        .await
        .unwrap();
    must_report(b, "p", &report(&[("t", 4)])).await;
    must_reserve(b, "p", &request("a", &[("t", 10)], TTL)).await;
    must_reserve(b, "p", &request("b", &[("t", 10)], TTL)).await;
    assert_eq!(
        must_commit(b, "p", "a", &[("t", 3)]).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("t", 7, 5, true)]))
    );
    assert_eq!(
        must_commit(b, "p", "b", &[("t", 1)]).await,
        fresh(UsageOutcome::SoftBreach(vec![breach("t", 8, 5, false)]))
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 8)]));
}

/// Hard limits are not checked again at `commit`: a limit lowered since `reserve` may end below the usage.
pub async fn commit_does_not_recheck_hard_limits(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_reserve(b, "p", &request("r", &[("t", 8)], TTL)).await;
    hard_limit(b, "p", "t", 2).await;
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 8)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 8)]));
    assert_eq!(
        must_report(b, "p", &report(&[("t", 0)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("t", 8, 2, false)]))
    );
}

/// A second commit with an equal `actual` replays the recorded receipt (even after expiry and a policy change); another `actual` is `Conflict`.
pub async fn commit_replays_the_same_actual_and_conflicts_on_another(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &policy(&[("t", Some(2), None)]))
        .await
        .unwrap();
    must_reserve(b, "p", &request("r", &[("t", 5), ("u", 5)], TTL)).await;
    let first = must_commit(b, "p", "r", &[("t", 3)]).await;
    assert_eq!(
        first,
        fresh(UsageOutcome::SoftBreach(vec![breach("t", 3, 2, true)]))
    );
    b.delete_policy("p").await.unwrap();
    ctx.clock.advance(TTL);
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 3)]).await,
        replayed(first.outcome)
    );
    for (other, what) in [
        (counters(&[("t", 2)]), "other amount"),
        (counters(&[("t", 3), ("u", 0)]), "extra zero"),
        (counters(&[]), "empty"),
    ] {
        assert_kind(b.commit("p", "r", &other).await, ErrorKind::Conflict, what);
    }
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 3)]));
}

/// A released reservation cannot be committed: `Conflict`, nothing applied.
pub async fn commit_after_release_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    assert!(must_release(b, "p", "r").await);
    assert_kind(
        b.commit("p", "r", &counters(&[("t", 1)])).await,
        ErrorKind::Conflict,
        "commit after release",
    );
    assert!(usage_of(b, "p").await.is_empty());
}

/// A commit at or after `expires_at` is `Expired` and applies nothing; one just before applies.
pub async fn commit_after_expiry_is_expired(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("late", &[("t", 5)], TTL)).await;
    must_reserve(b, "p", &request("in-time", &[("t", 5)], TTL)).await;
    ctx.clock.set(START_MS + TTL - 1);
    assert_eq!(
        must_commit(b, "p", "in-time", &[("t", 1)]).await,
        fresh(UsageOutcome::Ok)
    );
    ctx.clock.set(START_MS + TTL);
    assert_kind(
        b.commit("p", "late", &counters(&[("t", 1)])).await,
        ErrorKind::Expired,
        "commit at expires_at",
    );
    ctx.clock.advance(1_000);
    assert_kind(
        b.commit("p", "late", &counters(&[])).await,
        ErrorKind::Expired,
        "commit after expires_at",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 1)]));
    assert_eq!(
        reservation_of(b, "p", "late").await.map(|r| r.state),
        Some(ReservationState::Held),
        "expiry is never written"
    );
}

/// Committing an id the budget does not know is `NotFound`, on any budget.
pub async fn commit_of_an_unknown_id_is_not_found(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_kind(
        b.commit("p", "nope", &counters(&[])).await,
        ErrorKind::NotFound,
        "unknown id",
    );
    must_reserve(b, "p", &request("r", &[("t", 1)], TTL)).await;
    assert_kind(
        b.commit("other", "r", &counters(&[])).await,
        ErrorKind::NotFound,
        "ids are per budget",
    );
    assert!(usage_of(b, "other").await.is_empty());
}

/// An `actual` outside the reservation (unknown dimension, amount above the reserved one) is `InvalidInput` and leaves the hold.
pub async fn commit_outside_the_reservation_is_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5), ("z", 0)], TTL)).await;
    for (actual, what) in [
        (counters(&[("u", 0)]), "unknown dimension"),
        (counters(&[("t", 6)]), "more than reserved"),
        (counters(&[("t", 1), ("z", 1)]), "more than a zero hold"),
    ] {
        assert_kind(
            b.commit("p", "r", &actual).await,
            ErrorKind::InvalidInput,
            what,
        );
    }
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 5)]));
    assert!(usage_of(b, "p").await.is_empty());
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 5), ("z", 0)]).await,
        fresh(UsageOutcome::Ok)
    );
}

/// Commit checks run in the contract's order: input validity, then unknown id (`NotFound`), then `actual` within the reservation (`InvalidInput`, before `Expired` or `Conflict`), then the state.
pub async fn commit_checks_run_in_order(ctx: Ctx) {
    let b = &*ctx.backend;
    let outside = counters(&[("t", 6)]);
    // Invalid input beats an unknown id.
    assert_kind(
        b.commit("p", "nope", &counters(&[("", 1)])).await,
        ErrorKind::InvalidInput,
        "invalid dimension name, unknown id",
    );
    assert_kind(
        b.commit("p", "nope", &counters(&[("t", MAX_AMOUNT + 1)]))
            .await,
        ErrorKind::InvalidInput,
        "amount above MAX_AMOUNT, unknown id",
    );
    // An unknown id beats an actual that could not fit.
    assert_kind(
        b.commit("p", "nope", &outside).await,
        ErrorKind::NotFound,
        "outside, unknown id",
    );
    for id in ["expired", "released", "committed"] {
        must_reserve(b, "p", &request(id, &[("t", 5)], TTL)).await;
    }
    assert!(must_release(b, "p", "released").await);
    must_commit(b, "p", "committed", &[("t", 1)]).await;
    ctx.clock.advance(TTL);
    for id in ["expired", "released", "committed"] {
        assert_kind(
            b.commit("p", id, &outside).await,
            ErrorKind::InvalidInput,
            &format!("outside beats the state of {id}"),
        );
    }
    assert_kind(
        b.commit("p", "expired", &counters(&[("t", 5)])).await,
        ErrorKind::Expired,
        "within, expired",
    );
    assert_kind(
        b.commit("p", "released", &counters(&[("t", 5)])).await,
        ErrorKind::Conflict,
        "within, released",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 1)]));
}

/// `check_commit` answers the error `commit` would, changing nothing, and `Ok` where it would apply or replay.
pub async fn check_commit_answers_like_commit_without_changes(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    b.check_commit("p", "r", &counters(&[("t", 5)]))
        .await
        .unwrap();
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 5)]));
    assert!(usage_of(b, "p").await.is_empty());
    assert_kind(
        b.check_commit("p", "nope", &counters(&[])).await,
        ErrorKind::NotFound,
        "unknown",
    );
    assert_kind(
        b.check_commit("p", "r", &counters(&[("t", 6)])).await,
        ErrorKind::InvalidInput,
        "outside",
    );
    must_commit(b, "p", "r", &[("t", 2)]).await;
    b.check_commit("p", "r", &counters(&[("t", 2)]))
        .await
        .unwrap();
    assert_kind(
        b.check_commit("p", "r", &counters(&[("t", 3)])).await,
        ErrorKind::Conflict,
        "other actual",
    );
    must_reserve(b, "p", &request("e", &[("t", 5)], TTL)).await;
    ctx.clock.advance(TTL);
    assert_kind(
        b.check_commit("p", "e", &counters(&[])).await,
        ErrorKind::Expired,
        "expired",
    );
}

/// `release` frees a live hold and answers true; a second release answers false; the record is `Released`.
pub async fn release_frees_the_hold_once(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    ctx.clock.advance(3);
    assert!(must_release(b, "p", "r").await);
    assert!(pending_in(b, "p").await.is_empty());
    ctx.clock.advance(3);
    assert!(!must_release(b, "p", "r").await);
    assert!(usage_of(b, "p").await.is_empty());
    assert_eq!(
        reservation_of(b, "p", "r").await.map(|r| r.state),
        Some(ReservationState::Released { at: START_MS + 3 })
    );
}

/// Releasing an expired hold answers false and writes nothing (the record stays `Held`).
pub async fn release_after_expiry_is_false(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    ctx.clock.advance(TTL);
    assert!(!must_release(b, "p", "r").await);
    assert_eq!(
        reservation_of(b, "p", "r").await.map(|r| r.state),
        Some(ReservationState::Held)
    );
}

/// Releasing a committed reservation is `Conflict` and changes nothing.
pub async fn release_after_commit_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    must_commit(b, "p", "r", &[("t", 4)]).await;
    assert_kind(
        b.release("p", "r").await,
        ErrorKind::Conflict,
        "release after commit",
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 4)]));
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 4)]).await,
        replayed(UsageOutcome::Ok)
    );
}

/// Releasing an id the budget does not know is `NotFound`.
pub async fn release_of_an_unknown_id_is_not_found(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_kind(
        b.release("p", "nope").await,
        ErrorKind::NotFound,
        "unknown id",
    );
    must_reserve(b, "p", &request("r", &[("t", 1)], TTL)).await;
    assert_kind(
        b.release("other", "r").await,
        ErrorKind::NotFound,
        "ids are per budget",
    );
}

/// An expired hold stops counting at `expires_at` with no write: `usage.pending` drops it and a report that now fits applies.
pub async fn expired_holds_stop_counting_at_expires_at(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_reserve(b, "p", &request("r", &[("t", 10)], 1_000)).await;
    ctx.clock.set(START_MS + 999);
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 10)]));
    assert_eq!(
        must_report(b, "p", &report(&[("t", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 0, 10, 10, true
        )]))
    );
    ctx.clock.set(START_MS + 1_000);
    assert!(
        pending_in(b, "p").await.is_empty(),
        "usage sees the expiry before any write"
    );
    assert_eq!(
        must_report(b, "p", &report(&[("t", 10)])).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_reserve(b, "p", &request("s", &[("t", 0)], 1_000)).await,
        reserved(START_MS + 2_000)
    );
}

/// An id is remembered until `dedup_ttl_ms` after it ended (released, committed, refused, expired at `expires_at`), then it is `NotFound`.
pub async fn ids_are_remembered_until_ended_plus_dedup_ttl(ctx: Ctx) {
    let ttl = 5_000;
    let b = ctx.open_with_ttl("_ttl", ttl).await;
    let b = &*b;
    hard_limit(b, "p", "t", 10).await;
    must_reserve(b, "p", &request("released", &[("t", 1)], TTL)).await;
    must_reserve(b, "p", &request("committed", &[("t", 1)], TTL)).await;
    must_reserve(b, "p", &request("refused", &[("t", 11)], TTL)).await;
    must_reserve(b, "p", &request("expired", &[("t", 1)], TTL)).await;
    ctx.clock.set(START_MS + 100);
    assert!(must_release(b, "p", "released").await);
    must_commit(b, "p", "committed", &[("t", 1)]).await;
    // Refused at START_MS: remembered until START_MS + ttl.
    ctx.clock.set(START_MS + ttl - 1);
    assert!(!must_release(b, "p", "refused").await);
    ctx.clock.set(START_MS + ttl);
    assert_kind(
        b.release("p", "refused").await,
        ErrorKind::NotFound,
        "refused, forgotten",
    );
    // Released and committed at START_MS + 100.
    ctx.clock.set(START_MS + 100 + ttl - 1);
    assert!(!must_release(b, "p", "released").await);
    assert_eq!(
        must_commit(b, "p", "committed", &[("t", 1)]).await,
        replayed(UsageOutcome::Ok)
    );
    ctx.clock.set(START_MS + 100 + ttl);
    assert_kind(
        b.release("p", "released").await,
        ErrorKind::NotFound,
        "released, forgotten",
    );
    assert_kind(
        b.commit("p", "committed", &counters(&[("t", 1)])).await,
        ErrorKind::NotFound,
        "committed, forgotten",
    );
    // Expired at START_MS + TTL (never resolved): remembered until START_MS + TTL + ttl.
    ctx.clock.set(START_MS + TTL + ttl - 1);
    assert_kind(
        b.commit("p", "expired", &counters(&[])).await,
        ErrorKind::Expired,
        "expired, remembered",
    );
    ctx.clock.set(START_MS + TTL + ttl);
    assert_kind(
        b.commit("p", "expired", &counters(&[])).await,
        ErrorKind::NotFound,
        "expired, forgotten",
    );
    assert!(b.reservations("p").await.unwrap().is_empty());
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 1)]));
}

/// A forgotten id may be used again, with any request: a fresh reservation, not a replay or a `Conflict`.
pub async fn forgotten_ids_can_be_reused(ctx: Ctx) {
    let b = ctx.open_with_ttl("_ttl", 1_000).await;
    let b = &*b;
    must_reserve(b, "p", &request("r", &[("t", 5)], TTL)).await;
    must_commit(b, "p", "r", &[("t", 5)]).await;
    ctx.clock.advance(999);
    assert_kind(
        b.reserve("p", &request("r", &[("u", 1)], 50)).await,
        ErrorKind::Conflict,
        "still remembered",
    );
    ctx.clock.advance(1);
    let again = must_reserve(b, "p", &request("r", &[("u", 1)], 50)).await;
    assert_eq!(again, reserved(START_MS + 1_000 + 50));
    assert_eq!(pending_in(b, "p").await, counters(&[("u", 1)]));
    assert_eq!(
        must_commit(b, "p", "r", &[("u", 1)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 5), ("u", 1)]));
}

/// An id lives by the dedup TTL of the handle that created it, whatever TTL the reading handle has (shared backends).
pub async fn ids_live_by_the_creators_ttl(ctx: Ctx) {
    if !ctx.backend.capabilities().shared {
        return;
    }
    let long = &*ctx.backend; // DEFAULT_DEDUP_TTL_MS
    let short = ctx
        .open(ctx.options_for(ctx.namespace()).dedup_ttl_ms(1_000))
        .await
        .expect("a second handle with a 1 s dedup TTL");
    let short = &*short;
    must_reserve(short, "p", &request("s", &[("t", 1)], TTL)).await;
    must_reserve(long, "p", &request("l", &[("t", 1)], TTL)).await;
    assert_eq!(
        reservation_of(long, "p", "s").await.map(|r| r.remember_ms),
        Some(1_000)
    );
    assert_eq!(
        reservation_of(short, "p", "l").await.map(|r| r.remember_ms),
        Some(DEFAULT_DEDUP_TTL_MS)
    );
    // Each released through the other handle.
    assert!(must_release(long, "p", "s").await);
    assert!(must_release(short, "p", "l").await);
    ctx.clock.advance(1_000);
    // New reservations through the short handle (any collection it runs must spare "l").
    for i in 0..10 {
        must_reserve(short, "p", &request(&format!("gc-{i}"), &[("t", 1)], 1)).await;
    }
    assert_kind(
        long.release("p", "s").await,
        ErrorKind::NotFound,
        "the short handle's id is forgotten for every reader",
    );
    assert!(!must_release(short, "p", "l").await);
    ctx.clock.set(START_MS + DEFAULT_DEDUP_TTL_MS - 1);
    assert!(!must_release(short, "p", "l").await);
    ctx.clock.set(START_MS + DEFAULT_DEDUP_TTL_MS);
    assert_kind(
        short.release("p", "l").await,
        ErrorKind::NotFound,
        "forgotten after the creator's TTL",
    );
}

/// Reservation ids and dedup keys are separate spaces: a report keyed like a reservation id applies and dedups on its own.
pub async fn reservation_ids_and_dedup_keys_are_separate(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "p", &request("k", &[("t", 5)], TTL)).await;
    let r = keyed(&[("t", 2)], "k");
    assert_eq!(must_report(b, "p", &r).await, fresh(UsageOutcome::Ok));
    assert_eq!(must_report(b, "p", &r).await, replayed(UsageOutcome::Ok));
    assert_eq!(
        must_commit(b, "p", "k", &[("t", 3)]).await,
        fresh(UsageOutcome::Ok)
    );
    must_report(b, "p", &keyed(&[("t", 1)], "only-a-key")).await;
    assert_kind(
        b.commit("p", "only-a-key", &counters(&[])).await,
        ErrorKind::NotFound,
        "a dedup key is no reservation",
    );
    assert_eq!(
        must_reserve(b, "p", &request("only-a-key", &[("t", 1)], TTL)).await,
        reserved(START_MS + TTL)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 6)]));
}

/// `reset_usage` clears the counters but not the holds.
pub async fn reset_usage_keeps_holds(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_report(b, "p", &report(&[("t", 3)])).await;
    must_reserve(b, "p", &request("r", &[("t", 6)], TTL)).await;
    b.reset_usage("p").await.unwrap();
    let usage = b.usage("p").await.unwrap();
    assert!(usage.counters.is_empty());
    assert_eq!(usage.pending, counters(&[("t", 6)]));
    assert_eq!(
        must_report(b, "p", &report(&[("t", 5)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 0, 6, 10, true
        )]))
    );
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 6)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "p").await, counters(&[("t", 6)]));
}

/// `set_policy` and `delete_policy` leave holds alone: they keep counting and can be committed.
pub async fn policy_changes_leave_holds(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    must_reserve(b, "p", &request("a", &[("t", 6)], TTL)).await;
    must_reserve(b, "p", &request("b", &[("t", 2)], TTL)).await;
    assert!(b.delete_policy("p").await.unwrap());
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 8)]));
    hard_limit(b, "p", "t", 9).await;
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 8)]));
    assert_eq!(
        must_reserve(b, "p", &request("c", &[("t", 2)], TTL)).await,
        refused(START_MS + TTL, vec![held_breach("t", 0, 8, 9, true)])
    );
    b.set_policy(
        "p",
        &policy(&[("t", None, None)]).window(Window::fixed(1_000, 0)),
    )
    .await
    .unwrap();
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 8)]));
    assert_eq!(
        must_commit(b, "p", "a", &[("t", 6)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert!(must_release(b, "p", "b").await);
}

/// Holds are not windowed: they count in every window until they end, and a commit applies to the window containing the commit time.
pub async fn holds_are_not_windowed(ctx: Ctx) {
    let b = &*ctx.backend;
    let period = 10_000;
    b.set_policy(
        "p",
        &policy(&[("t", None, Some(6))]).window(Window::fixed(period, 0)),
    )
    .await
    .unwrap();
    let w0 = Window::fixed(period, 0).bounds_at(START_MS).unwrap();
    must_report(b, "p", &report(&[("t", 1)])).await;
    must_reserve(b, "p", &request("r", &[("t", 5)], 3 * period)).await;
    ctx.clock.set(w0.end_ms);
    let w1 = WindowBounds {
        start_ms: w0.end_ms,
        end_ms: w0.end_ms + period,
    };
    let usage = b.usage("p").await.unwrap();
    assert!(usage.counters.is_empty(), "the counters rolled over");
    assert_eq!(usage.pending, counters(&[("t", 5)]), "the hold did not");
    assert_eq!(usage.window, Some(w1));
    assert_eq!(
        must_report(b, "p", &report(&[("t", 2)])).await,
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 0, 5, 6, true
        )]))
    );
    assert_eq!(
        must_commit(b, "p", "r", &[("t", 4)]).await,
        fresh(UsageOutcome::Ok)
    );
    let usage = b.usage("p").await.unwrap();
    assert_eq!(usage.counters, counters(&[("t", 4)]));
    assert_eq!(usage.window, Some(w1));
    assert!(usage.pending.is_empty());
}

/// `usage.pending` sums the live holds per dimension and lists only dimensions with something held.
pub async fn pending_lists_only_held_dimensions(ctx: Ctx) {
    let b = &*ctx.backend;
    assert!(pending_in(b, "p").await.is_empty());
    must_reserve(b, "p", &request("a", &[("x", 5), ("zero", 0)], TTL)).await;
    must_reserve(b, "p", &request("b", &[("x", 2), ("y", 1)], 2 * TTL)).await;
    must_reserve(b, "p", &request("c", &[("y", 4)], TTL)).await;
    assert_eq!(pending_in(b, "p").await, counters(&[("x", 7), ("y", 5)]));
    must_commit(b, "p", "c", &[("y", 1)]).await;
    assert_eq!(pending_in(b, "p").await, counters(&[("x", 7), ("y", 1)]));
    ctx.clock.advance(TTL);
    assert_eq!(pending_in(b, "p").await, counters(&[("x", 2), ("y", 1)]));
    assert!(must_release(b, "p", "b").await);
    assert!(pending_in(b, "p").await.is_empty());
    assert!(pending_in(b, "other").await.is_empty());
}

/// `reservation` and `reservations` return the canonical records, by id: `Held` (even past `expires_at`), `Refused`, `Committed`, `Released`.
pub async fn reservations_are_the_canonical_records(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    let record = |id: &str, amount: u64, ttl: u64, state: ReservationState| Reservation {
        id: id.to_owned(),
        dimensions: counters(&[("t", amount)]),
        ttl_ms: ttl,
        expires_at: START_MS + ttl,
        remember_ms: DEFAULT_DEDUP_TTL_MS,
        state,
    };
    must_reserve(b, "p", &request("d-held", &[("t", 1)], TTL)).await;
    must_reserve(b, "p", &request("c-expired", &[("t", 1)], 10)).await;
    must_reserve(b, "p", &request("b-refused", &[("t", 11)], TTL)).await;
    must_reserve(b, "p", &request("a-committed", &[("t", 2)], TTL)).await;
    must_reserve(b, "p", &request("e-released", &[("t", 3)], TTL)).await;
    ctx.clock.advance(20);
    must_commit(b, "p", "a-committed", &[("t", 2)]).await;
    assert!(must_release(b, "p", "e-released").await);
    let want = vec![
        record(
            "a-committed",
            2,
            TTL,
            ReservationState::Committed {
                at: START_MS + 20,
                actual: counters(&[("t", 2)]),
                outcome: UsageOutcome::Ok,
            },
        ),
        record(
            "b-refused",
            11,
            TTL,
            ReservationState::Refused {
                at: START_MS,
                breaches: vec![held_breach("t", 0, 2, 10, true)],
            },
        ),
        record("c-expired", 1, 10, ReservationState::Held),
        record("d-held", 1, TTL, ReservationState::Held),
        record(
            "e-released",
            3,
            TTL,
            ReservationState::Released { at: START_MS + 20 },
        ),
    ];
    assert_eq!(b.reservations("p").await.unwrap(), want);
    for r in &want {
        assert_eq!(reservation_of(b, "p", &r.id).await.as_ref(), Some(r));
    }
    assert_eq!(reservation_of(b, "p", "nope").await, None);
    assert!(b.reservations("other").await.unwrap().is_empty());
    assert_eq!(pending_in(b, "p").await, counters(&[("t", 1)]));
}

/// At `now = MAX_AMOUNT` a reservation expires as it is made: `Reserved`, nothing held, and the id is forgotten at once (commit and release answer `NotFound`).
pub async fn a_reservation_at_the_end_of_time_holds_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "p", "t", 10).await;
    ctx.clock.set(MAX_AMOUNT);
    let r = request("r1", &[("t", 10)], 1_000);
    assert_eq!(must_reserve(b, "p", &r).await, reserved(MAX_AMOUNT));
    untouched(b, "p", &[]).await;
    let actual = BTreeMap::from([("t".to_owned(), 1)]);
    assert_kind(
        b.commit("p", "r1", &actual).await,
        ErrorKind::NotFound,
        "commit at the end",
    );
    assert_kind(
        b.release("p", "r1").await,
        ErrorKind::NotFound,
        "release at the end",
    );
    // Nothing is held, so the whole limit is still free for a report.
    assert_eq!(
        must_report(b, "p", &report(&[("t", 10)])).await,
        fresh(UsageOutcome::Ok)
    );
}

cases! {
    __conformance_reservations;
    reservations: [
        reserve_holds_the_amounts,
        expires_at_is_capped_at_max_amount,
        ttl_out_of_range_is_invalid,
        dimension_count_out_of_range_is_invalid,
        invalid_names_and_amounts_are_invalid,
        retry_with_the_same_request_replays,
        same_id_with_another_request_conflicts,
        holds_count_against_hard_limits_in_reserve,
        holds_count_against_hard_limits_in_reports,
        hard_breach_crossed_counts_pending,
        soft_limits_ignore_holds,
        overflow_counts_pending,
        refused_reserve_is_recorded,
        commit_frees_the_hold_and_applies_actual,
        commit_zero_creates_a_counter_missing_does_not,
        commit_with_empty_actual_frees_the_hold,
        commit_reports_soft_breaches,
        commit_does_not_recheck_hard_limits,
        commit_replays_the_same_actual_and_conflicts_on_another,
        commit_after_release_conflicts,
        commit_after_expiry_is_expired,
        commit_of_an_unknown_id_is_not_found,
        commit_outside_the_reservation_is_invalid,
        commit_checks_run_in_order,
        check_commit_answers_like_commit_without_changes,
        release_frees_the_hold_once,
        release_after_expiry_is_false,
        release_after_commit_conflicts,
        release_of_an_unknown_id_is_not_found,
        expired_holds_stop_counting_at_expires_at,
        ids_are_remembered_until_ended_plus_dedup_ttl,
        forgotten_ids_can_be_reused,
        ids_live_by_the_creators_ttl,
        reservation_ids_and_dedup_keys_are_separate,
        reset_usage_keeps_holds,
        policy_changes_leave_holds,
        holds_are_not_windowed,
        pending_lists_only_held_dimensions,
        reservations_are_the_canonical_records,
        a_reservation_at_the_end_of_time_holds_nothing,
    ]
}
