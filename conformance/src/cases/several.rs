//! SEMANTICS §4.3: several budgets in one call — the §4.2 sequence over the budgets in name order,
//! all or nothing, with the same answers whether the backend runs it atomically or call by call.

use std::collections::BTreeMap;

use stowage_core::{
    Backend, Breach, ErrorKind, MultiOutcome, MultiReceipt, MultiReserveOutcome,
    MultiReserveReceipt, ReservationState, UsageOutcome, MAX_AMOUNT,
};

use super::{
    assert_kind, breach, counters, fresh, held_breach, keyed, must_commit, must_report,
    must_reserve, pending_in, policy, report, request, reservation_of, reserved, usage_of,
};
use crate::{Ctx, START_MS};

const TTL: u64 = 10_000;

/// The TTL of `report_usage_all`'s reservations (60 s).
const REPORT_ALL_TTL_MS: u64 = 60_000;

fn multi_reserved(expires_at: u64, replayed: bool) -> MultiReserveReceipt {
    MultiReserveReceipt {
        outcome: MultiReserveOutcome::Reserved,
        expires_at,
        replayed,
    }
}

fn multi_refused(
    expires_at: u64,
    replayed: bool,
    breaches: &[(&str, Vec<Breach>)],
) -> MultiReserveReceipt {
    MultiReserveReceipt {
        outcome: MultiReserveOutcome::HardBreach(per_budget(breaches)),
        expires_at,
        replayed,
    }
}

fn per_budget(breaches: &[(&str, Vec<Breach>)]) -> BTreeMap<String, Vec<Breach>> {
    breaches
        .iter()
        .map(|(b, list)| ((*b).to_owned(), list.clone()))
        .collect()
}

fn multi(outcome: MultiOutcome, replayed: bool) -> MultiReceipt {
    MultiReceipt { outcome, replayed }
}

async fn hard_limit(b: &dyn Backend, budget: &str, dimension: &str, hard: u64) {
    b.set_policy(budget, &policy(&[(dimension, None, Some(hard))]))
        .await
        .unwrap();
}

/// The state of reservation `id` on `budget`, `None` when the budget does not know it.
async fn state_of(b: &dyn Backend, budget: &str, id: &str) -> Option<ReservationState> {
    reservation_of(b, budget, id).await.map(|r| r.state)
}

/// 0 or 17 budgets, a budget named twice, or an invalid budget name is `InvalidInput` in every multi call, and nothing changes; 16 are allowed.
pub async fn budget_lists_out_of_range_are_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    let names: Vec<String> = (0..17).map(|i| format!("b{i:02}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let long = "x".repeat(257);
    let lists: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "no budget"),
        (all.clone(), "17 budgets"),
        (vec!["b00", "b01", "b00"], "a budget twice"),
        (vec!["b00", ""], "empty name"),
        (vec!["b00", long.as_str()], "257 bytes"),
        (vec!["a\0b", "b00"], "NUL"),
    ];
    let r = request("r", &[("t", 1)], TTL);
    for (list, what) in &lists {
        assert_kind(
            b.reserve_all(list, &r).await,
            ErrorKind::InvalidInput,
            &format!("reserve_all: {what}"),
        );
        assert_kind(
            b.report_usage_all(list, &keyed(&[("t", 1)], "k")).await,
            ErrorKind::InvalidInput,
            &format!("report_usage_all: {what}"),
        );
        assert_kind(
            b.commit_all(list, "r", &counters(&[])).await,
            ErrorKind::InvalidInput,
            &format!("commit_all: {what}"),
        );
        assert_kind(
            b.release_all(list, "r").await,
            ErrorKind::InvalidInput,
            &format!("release_all: {what}"),
        );
    }
    for name in &names {
        assert!(b.reservations(name).await.unwrap().is_empty(), "{name}");
        assert!(usage_of(b, name).await.is_empty(), "{name}");
    }
    // An invalid request is InvalidInput too.
    assert_kind(
        b.reserve_all(&["b00"], &request("r", &[("t", 1)], 0)).await,
        ErrorKind::InvalidInput,
        "ttl 0",
    );
    assert_eq!(
        b.reserve_all(&all[..16], &r).await.unwrap(),
        multi_reserved(START_MS + TTL, false)
    );
    assert_eq!(
        b.commit_all(&all[..16], "r", &counters(&[("t", 1)]))
            .await
            .unwrap(),
        multi(MultiOutcome::Ok, false)
    );
    for name in &all[..16] {
        assert_eq!(usage_of(b, name).await, counters(&[("t", 1)]));
    }
    assert!(usage_of(b, "b16").await.is_empty());
}

/// `reserve_all` holds the amounts on every budget: `Reserved`, `expires_at = now + ttl`, one `Held` record per budget.
pub async fn reserve_all_holds_on_every_budget(ctx: Ctx) {
    let b = &*ctx.backend;
    let budgets = ["key", "team", "org"];
    let r = request("r", &[("tok", 5), ("usd", 1)], TTL);
    assert_eq!(
        b.reserve_all(&budgets, &r).await.unwrap(),
        multi_reserved(START_MS + TTL, false)
    );
    for budget in budgets {
        assert_eq!(
            pending_in(b, budget).await,
            counters(&[("tok", 5), ("usd", 1)])
        );
        assert_eq!(state_of(b, budget, "r").await, Some(ReservationState::Held));
    }
    assert!(b.reservations("other").await.unwrap().is_empty());
}

/// A `HardBreach` on one budget releases the holds this call created on the others and answers every refused budget's breaches; a retry replays it.
pub async fn reserve_all_refusal_releases_the_other_holds(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "org", "t", 100).await;
    hard_limit(b, "team", "t", 4).await;
    hard_limit(b, "zeta", "t", 3).await;
    let budgets = ["zeta", "team", "org", "key"];
    let r = request("r", &[("t", 5)], TTL);
    let want = multi_refused(
        START_MS + TTL,
        false,
        &[
            ("team", vec![breach("t", 0, 4, true)]),
            ("zeta", vec![breach("t", 0, 3, true)]),
        ],
    );
    assert_eq!(b.reserve_all(&budgets, &r).await.unwrap(), want);
    for budget in budgets {
        assert!(pending_in(b, budget).await.is_empty(), "{budget} holds");
        assert!(usage_of(b, budget).await.is_empty());
    }
    for budget in ["key", "org"] {
        assert_eq!(
            state_of(b, budget, "r").await,
            Some(ReservationState::Released { at: START_MS })
        );
    }
    assert!(matches!(
        state_of(b, "team", "r").await,
        Some(ReservationState::Refused { .. })
    ));
    // A retry replays every reservation: the same refusal, `replayed`, nothing held anywhere.
    b.delete_policy("team").await.unwrap();
    let retry = b.reserve_all(&budgets, &r).await.unwrap();
    assert_eq!(
        retry,
        MultiReserveReceipt {
            replayed: true,
            ..want
        }
    );
    for budget in budgets {
        assert!(pending_in(b, budget).await.is_empty(), "{budget} holds");
    }
}

/// Holds that `reserve_all` only replayed (made by an earlier call) are not released when another budget refuses.
pub async fn reserve_all_refusal_keeps_holds_it_did_not_create(ctx: Ctx) {
    let b = &*ctx.backend;
    hard_limit(b, "team", "t", 4).await;
    let r = request("r", &[("t", 5)], TTL);
    must_reserve(b, "key", &r).await;
    let answer = b.reserve_all(&["key", "team"], &r).await.unwrap();
    assert_eq!(
        answer,
        multi_refused(
            START_MS + TTL,
            false,
            &[("team", vec![breach("t", 0, 4, true)])]
        )
    );
    assert_eq!(pending_in(b, "key").await, counters(&[("t", 5)]));
    assert_eq!(state_of(b, "key", "r").await, Some(ReservationState::Held));
}

/// An error on one budget (here `Conflict`, and `Overflow` after it) releases the holds this call created and answers the first error in name order, whatever order the budgets were given in.
pub async fn reserve_all_error_releases_and_answers_the_first_error(ctx: Ctx) {
    let b = &*ctx.backend;
    must_reserve(b, "b", &request("r", &[("t", 1)], TTL)).await;
    must_report(b, "c", &report(&[("t", MAX_AMOUNT)])).await;
    hard_limit(b, "d", "t", 0).await;
    let r = request("r", &[("t", 2)], TTL);
    assert_kind(
        b.reserve_all(&["d", "c", "b", "a"], &r).await,
        ErrorKind::Conflict,
        "b's Conflict comes before c's Overflow and d's refusal",
    );
    assert!(pending_in(b, "a").await.is_empty(), "a's hold is released");
    assert_eq!(
        state_of(b, "a", "r").await,
        Some(ReservationState::Released { at: START_MS })
    );
    assert_eq!(pending_in(b, "b").await, counters(&[("t", 1)]));
    assert_eq!(
        state_of(b, "c", "r").await,
        None,
        "an overflow records nothing"
    );
    assert!(matches!(
        state_of(b, "d", "r").await,
        Some(ReservationState::Refused { .. })
    ));
    // Without b, c's Overflow is the first error (before d's refusal).
    assert_kind(
        b.reserve_all(&["d", "c", "a"], &request("s", &[("t", 2)], TTL))
            .await,
        ErrorKind::Overflow,
        "an error beats a refusal",
    );
    assert!(pending_in(b, "a").await.is_empty());
}

/// A `reserve_all` that answered an error remembers the holds it released: a retry under the same id replays `Reserved` there though nothing is held; a new id holds everywhere.
pub async fn reserve_all_retry_after_an_error_replays_released_holds(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "c", &report(&[("t", MAX_AMOUNT)])).await;
    let r = request("r", &[("t", 2)], TTL);
    assert_kind(
        b.reserve_all(&["a", "c"], &r).await,
        ErrorKind::Overflow,
        "c is full",
    );
    b.reset_usage("c").await.unwrap();
    assert_eq!(
        b.reserve_all(&["a", "c"], &r).await.unwrap(),
        multi_reserved(START_MS + TTL, false)
    );
    assert!(
        pending_in(b, "a").await.is_empty(),
        "a replayed its released reservation"
    );
    assert_eq!(pending_in(b, "c").await, counters(&[("t", 2)]));
    assert_eq!(
        b.reserve_all(&["a", "c"], &request("s", &[("t", 2)], TTL))
            .await
            .unwrap(),
        multi_reserved(START_MS + TTL, false)
    );
    assert_eq!(pending_in(b, "a").await, counters(&[("t", 2)]));
    assert_eq!(pending_in(b, "c").await, counters(&[("t", 4)]));
}

/// `reserve_all` is `replayed` only when every budget's `reserve` was a replay; `expires_at` is the earliest of the budgets'.
pub async fn reserve_all_replayed_only_when_every_reserve_replays(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r", &[("t", 2)], TTL);
    assert_eq!(must_reserve(b, "a", &r).await, reserved(START_MS + TTL));
    ctx.clock.advance(100);
    assert_eq!(
        b.reserve_all(&["b", "a"], &r).await.unwrap(),
        multi_reserved(START_MS + TTL, false),
        "a's earlier hold expires first"
    );
    ctx.clock.advance(100);
    assert_eq!(
        b.reserve_all(&["a", "b"], &r).await.unwrap(),
        multi_reserved(START_MS + TTL, true)
    );
    assert_eq!(pending_in(b, "a").await, counters(&[("t", 2)]));
    assert_eq!(pending_in(b, "b").await, counters(&[("t", 2)]));
    assert_eq!(
        reservation_of(b, "b", "r").await.map(|r| r.expires_at),
        Some(START_MS + 100 + TTL)
    );
}

/// `commit_all` checks every budget first: one unknown, expired or released reservation answers (first in name order) and nothing is applied anywhere.
pub async fn commit_all_checks_every_budget_before_applying(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r", &[("t", 5)], TTL);
    b.reserve_all(&["a", "b", "c"], &r).await.unwrap();
    let actual = counters(&[("t", 3)]);
    assert_kind(
        b.commit_all(&["c", "b", "a", "d"], "r", &actual).await,
        ErrorKind::NotFound,
        "d does not know r",
    );
    assert!(b.release("b", "r").await.unwrap());
    assert_kind(
        b.commit_all(&["c", "b", "a"], "r", &actual).await,
        ErrorKind::Conflict,
        "b was released",
    );
    assert_kind(
        b.commit_all(&["c", "a"], "r", &counters(&[("t", 6)])).await,
        ErrorKind::InvalidInput,
        "outside the reservation",
    );
    must_reserve(b, "e", &request("r", &[("t", 5)], 1)).await;
    ctx.clock.advance(1);
    assert_kind(
        b.commit_all(&["e", "c", "a"], "r", &actual).await,
        ErrorKind::Expired,
        "e expired",
    );
    for budget in ["a", "b", "c", "e"] {
        assert!(usage_of(b, budget).await.is_empty(), "{budget} applied");
    }
    assert_eq!(pending_in(b, "a").await, counters(&[("t", 5)]));
    assert_eq!(pending_in(b, "c").await, counters(&[("t", 5)]));
    assert_eq!(
        b.commit_all(&["c", "a"], "r", &actual).await.unwrap(),
        multi(MultiOutcome::Ok, false)
    );
}

/// `commit_all` applies on every budget, lists soft breaches per budget, replays an equal `actual` and refuses another with `Conflict`.
pub async fn commit_all_applies_everywhere_with_soft_breaches_per_budget(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("team", &policy(&[("t", Some(2), None)]))
        .await
        .unwrap();
    b.set_policy(
        "org",
        &policy(&[("t", Some(3), Some(4)), ("u", Some(0), None)]),
    )
    .await
    .unwrap();
    let budgets = ["key", "team", "org"];
    let r = request("r", &[("t", 4), ("u", 1)], TTL);
    b.reserve_all(&budgets, &r).await.unwrap();
    // Hard limits are not checked again at commit.
    b.set_policy(
        "org",
        &policy(&[("t", Some(3), Some(3)), ("u", Some(0), None)]),
    )
    .await
    .unwrap();
    let actual = counters(&[("t", 4), ("u", 1)]);
    let want = MultiOutcome::SoftBreach(per_budget(&[
        (
            "org",
            vec![breach("t", 4, 3, true), breach("u", 1, 0, true)],
        ),
        ("team", vec![breach("t", 4, 2, true)]),
    ]));
    assert_eq!(
        b.commit_all(&budgets, "r", &actual).await.unwrap(),
        multi(want.clone(), false)
    );
    for budget in budgets {
        assert_eq!(usage_of(b, budget).await, actual);
        assert!(pending_in(b, budget).await.is_empty());
    }
    assert_eq!(
        b.commit_all(&budgets, "r", &actual).await.unwrap(),
        multi(want, true)
    );
    assert_kind(
        b.commit_all(&budgets, "r", &counters(&[("t", 4)])).await,
        ErrorKind::Conflict,
        "another actual",
    );
    for budget in budgets {
        assert_eq!(usage_of(b, budget).await, actual);
    }
}

/// `commit_all` is `replayed` only when every budget's commit was a replay.
pub async fn commit_all_replayed_only_when_every_commit_replays(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r", &[("t", 4)], TTL);
    b.reserve_all(&["a", "b"], &r).await.unwrap();
    assert_eq!(
        must_commit(b, "a", "r", &[("t", 1)]).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        b.commit_all(&["b", "a"], "r", &counters(&[("t", 1)]))
            .await
            .unwrap(),
        multi(MultiOutcome::Ok, false)
    );
    assert_eq!(
        b.commit_all(&["a", "b"], "r", &counters(&[("t", 1)]))
            .await
            .unwrap(),
        multi(MultiOutcome::Ok, true)
    );
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 1)]));
    assert_eq!(usage_of(b, "b").await, counters(&[("t", 1)]));
}

/// `release_all` releases on every budget, even after one failed, and answers the first error in name order.
pub async fn release_all_tries_every_budget_and_answers_the_first_error(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = request("r", &[("t", 4)], TTL);
    b.reserve_all(&["a", "b", "d"], &r).await.unwrap();
    must_commit(b, "b", "r", &[("t", 1)]).await;
    assert_kind(
        b.release_all(&["d", "c", "b", "a"], "r").await,
        ErrorKind::Conflict,
        "b was committed (before c's NotFound)",
    );
    for budget in ["a", "d"] {
        assert!(pending_in(b, budget).await.is_empty(), "{budget} holds");
        assert_eq!(
            state_of(b, budget, "r").await,
            Some(ReservationState::Released { at: START_MS })
        );
    }
    assert_kind(
        b.release_all(&["d", "c", "a"], "r").await,
        ErrorKind::NotFound,
        "c does not know r",
    );
    b.release_all(&["d", "a"], "r").await.unwrap();
    assert_eq!(usage_of(b, "b").await, counters(&[("t", 1)]));
}

/// `report_usage_all` without a dedup key is `InvalidInput` and applies nothing.
pub async fn report_usage_all_needs_a_key(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_kind(
        b.report_usage_all(&["a", "b"], &report(&[("t", 1)])).await,
        ErrorKind::InvalidInput,
        "no key",
    );
    assert_kind(
        b.report_usage_all(&["a", "b"], &keyed(&[], "k")).await,
        ErrorKind::InvalidInput,
        "no dimension",
    );
    for budget in ["a", "b"] {
        assert!(usage_of(b, budget).await.is_empty());
        assert!(b.reservations(budget).await.unwrap().is_empty());
    }
}

/// `report_usage_all` applies on every budget or none: a hard breach anywhere (holds counted) is a per-budget `HardBreach` and applies nothing; retries replay.
pub async fn report_usage_all_applies_on_all_or_none(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("team", &policy(&[("t", Some(1), Some(10))]))
        .await
        .unwrap();
    let budgets = ["org", "team", "key"];
    let ok = keyed(&[("t", 2)], "first");
    let soft = multi(
        MultiOutcome::SoftBreach(per_budget(&[("team", vec![breach("t", 2, 1, true)])])),
        false,
    );
    assert_eq!(b.report_usage_all(&budgets, &ok).await.unwrap(), soft);
    assert_eq!(
        b.report_usage_all(&budgets, &ok).await.unwrap(),
        MultiReceipt {
            replayed: true,
            ..soft
        }
    );
    must_reserve(b, "team", &request("hold", &[("t", 5)], TTL)).await;
    let big = keyed(&[("t", 4)], "second");
    let refused = multi(
        MultiOutcome::HardBreach(per_budget(&[(
            "team",
            vec![held_breach("t", 2, 5, 10, true)],
        )])),
        false,
    );
    assert_eq!(b.report_usage_all(&budgets, &big).await.unwrap(), refused);
    for budget in budgets {
        assert_eq!(usage_of(b, budget).await, counters(&[("t", 2)]));
    }
    assert_eq!(pending_in(b, "team").await, counters(&[("t", 5)]));
    assert!(pending_in(b, "org").await.is_empty());
    b.delete_policy("team").await.unwrap();
    assert_eq!(
        b.report_usage_all(&budgets, &big).await.unwrap(),
        MultiReceipt {
            replayed: true,
            ..refused
        }
    );
    for budget in budgets {
        assert_eq!(usage_of(b, budget).await, counters(&[("t", 2)]));
    }
}

/// `report_usage_all`'s key lives in the reservation-id space: each budget remembers a committed reservation under it, and a `report_usage` with the same dedup key is independent.
pub async fn report_usage_all_key_is_a_reservation_id(ctx: Ctx) {
    let b = &*ctx.backend;
    let r = keyed(&[("t", 3)], "k");
    b.report_usage_all(&["a", "b"], &r).await.unwrap();
    for budget in ["a", "b"] {
        let known = reservation_of(b, budget, "k").await.expect("a reservation");
        assert_eq!(known.dimensions, counters(&[("t", 3)]));
        assert_eq!(known.ttl_ms, REPORT_ALL_TTL_MS);
        assert_eq!(known.expires_at, START_MS + REPORT_ALL_TTL_MS);
        assert_eq!(
            known.state,
            ReservationState::Committed {
                at: START_MS,
                actual: counters(&[("t", 3)]),
                outcome: UsageOutcome::Ok,
            }
        );
    }
    // The dedup-key space of report_usage knows nothing of it.
    assert_eq!(must_report(b, "a", &r).await, fresh(UsageOutcome::Ok));
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 6)]));
    // The same reservation made by hand replays it; another request under the key conflicts.
    assert!(
        must_reserve(b, "b", &request("k", &[("t", 3)], REPORT_ALL_TTL_MS))
            .await
            .replayed
    );
    assert_kind(
        b.report_usage_all(&["b"], &keyed(&[("t", 4)], "k")).await,
        ErrorKind::Conflict,
        "another report under the key",
    );
    // A key first used by report_usage is free for report_usage_all.
    must_report(b, "c", &keyed(&[("t", 1)], "kk")).await;
    assert_eq!(
        b.report_usage_all(&["c"], &keyed(&[("t", 1)], "kk"))
            .await
            .unwrap(),
        multi(MultiOutcome::Ok, false)
    );
    assert_eq!(usage_of(b, "c").await, counters(&[("t", 2)]));
}

/// The answers above do not depend on `capabilities().atomic_multi_budget`: an atomic backend and a composed one answer alike.
pub async fn answers_do_not_depend_on_atomic_multi_budget(ctx: Ctx) {
    let b = &*ctx.backend;
    let atomic: bool = b.capabilities().atomic_multi_budget;
    hard_limit(b, "b", "t", 3).await;
    let r = request("r", &[("t", 2)], TTL);
    assert_eq!(
        b.reserve_all(&["a", "b"], &r).await.unwrap(),
        multi_reserved(START_MS + TTL, false),
        "atomic_multi_budget: {atomic}"
    );
    assert_eq!(
        b.reserve_all(&["a", "b", "c"], &request("s", &[("t", 2)], TTL))
            .await
            .unwrap(),
        multi_refused(
            START_MS + TTL,
            false,
            &[("b", vec![held_breach("t", 0, 2, 3, true)])]
        ),
        "atomic_multi_budget: {atomic}"
    );
    assert_eq!(
        b.commit_all(&["b", "a"], "r", &counters(&[("t", 1)]))
            .await
            .unwrap(),
        multi(MultiOutcome::Ok, false),
        "atomic_multi_budget: {atomic}"
    );
    for budget in ["a", "b", "c"] {
        assert!(pending_in(b, budget).await.is_empty(), "{budget}");
    }
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 1)]));
    assert_eq!(usage_of(b, "b").await, counters(&[("t", 1)]));
    assert!(usage_of(b, "c").await.is_empty());
}

/// At `now = MAX_AMOUNT` the holds a refused `reserve_all` made end and are forgotten at once: releasing them is no failure, the answer is the refusal.
pub async fn reserve_all_refused_at_the_end_of_time_answers_the_refusal(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("org", &policy(&[("t", None, Some(5))]))
        .await
        .unwrap();
    ctx.clock.set(MAX_AMOUNT);
    let r = request("r1", &[("t", 6)], 1_000);
    let receipt = b.reserve_all(&["key", "org", "team"], &r).await.unwrap();
    assert_eq!(
        receipt,
        MultiReserveReceipt {
            outcome: MultiReserveOutcome::HardBreach(BTreeMap::from([(
                "org".to_owned(),
                vec![breach("t", 0, 5, true)]
            )])),
            expires_at: MAX_AMOUNT,
            replayed: false,
        }
    );
    for budget in ["key", "org", "team"] {
        assert_eq!(reservation_of(b, budget, "r1").await, None);
        assert!(b.usage(budget).await.unwrap().pending.is_empty());
    }
}

cases! {
    __conformance_several;
    several: [
        budget_lists_out_of_range_are_invalid,
        reserve_all_holds_on_every_budget,
        reserve_all_refusal_releases_the_other_holds,
        reserve_all_refusal_keeps_holds_it_did_not_create,
        reserve_all_error_releases_and_answers_the_first_error,
        reserve_all_retry_after_an_error_replays_released_holds,
        reserve_all_replayed_only_when_every_reserve_replays,
        commit_all_checks_every_budget_before_applying,
        commit_all_applies_everywhere_with_soft_breaches_per_budget,
        commit_all_replayed_only_when_every_commit_replays,
        release_all_tries_every_budget_and_answers_the_first_error,
        report_usage_all_needs_a_key,
        report_usage_all_applies_on_all_or_none,
        report_usage_all_key_is_a_reservation_id,
        answers_do_not_depend_on_atomic_multi_budget,
        reserve_all_refused_at_the_end_of_time_answers_the_refusal,
    ]
}
