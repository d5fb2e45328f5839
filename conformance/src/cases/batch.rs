//! SEMANTICS §4.4: batches — many reports in one call, answered exactly as the calls one by one.
//!
//! The reference for "one by one" is the same backend: a twin namespace given the same items as
//! single `report_usage` calls must answer the same and end in the same state.

use std::sync::Arc;

use stowage_core::{
    Backend, BudgetPolicy, ErrorKind, Result, UsageOutcome, UsageReceipt, UsageReport, Window,
    MAX_AMOUNT, MAX_BATCH_ITEMS,
};
use tokio::sync::Barrier;

use super::{
    assert_kind, breach, counters, fresh, held_breach, keyed, must_report, must_reserve, policy,
    replayed, report, request, usage_of,
};
use crate::{Ctx, START_MS};

/// An item of a batch.
fn item(budget: &str, report: UsageReport) -> (String, UsageReport) {
    (budget.to_owned(), report)
}

/// The batch's answers, unwrapping the outer result.
async fn must_batch(b: &dyn Backend, items: &[(String, UsageReport)]) -> Vec<Result<UsageReceipt>> {
    let answers = b
        .report_usage_batch(items)
        .await
        .unwrap_or_else(|e| panic!("report_usage_batch of {} items failed: {e}", items.len()));
    assert_eq!(answers.len(), items.len(), "one answer per item");
    answers
}

/// The answer of one slot, which must be a receipt.
#[track_caller]
fn receipt(answers: &[Result<UsageReceipt>], slot: usize) -> UsageReceipt {
    match &answers[slot] {
        Ok(receipt) => receipt.clone(),
        Err(e) => panic!("item {slot}: expected a receipt, got {e}"),
    }
}

/// The error kind of one slot, which must be an error.
#[track_caller]
fn kind(answers: &[Result<UsageReceipt>], slot: usize) -> ErrorKind {
    match &answers[slot] {
        Ok(receipt) => panic!("item {slot}: expected an error, got {receipt:?}"),
        Err(e) => e.kind(),
    }
}

/// What an answer is, comparable: the receipt or the error kind.
fn shape(answer: &Result<UsageReceipt>) -> std::result::Result<UsageReceipt, ErrorKind> {
    answer.clone().map_err(|e| e.kind())
}

/// The answers of `items` sent to `b` as single `report_usage` calls, in order.
async fn one_by_one(
    b: &dyn Backend,
    items: &[(String, UsageReport)],
) -> Vec<std::result::Result<UsageReceipt, ErrorKind>> {
    let mut answers = Vec::with_capacity(items.len());
    for (budget, r) in items {
        answers.push(shape(&b.report_usage(budget, r).await));
    }
    answers
}

/// Sets the same policies on both backends.
async fn set_policies(backends: &[&dyn Backend], policies: &[(&str, BudgetPolicy)]) {
    for b in backends {
        for (budget, p) in policies {
            b.set_policy(budget, p).await.expect("set_policy");
        }
    }
}

/// The mixed items of [`a_batch_answers_exactly_as_the_calls_one_by_one`].
fn mixed_items() -> Vec<(String, UsageReport)> {
    vec![
        item("a", keyed(&[("t", 4)], "k1")),         // ok
        item("b", report(&[("t", 3), ("u", 1)])),    // ok, other budget
        item("a", keyed(&[("t", 4)], "k2")),         // crosses soft 6
        item("a", keyed(&[("t", 4)], "k3")),         // hard 10: breach, recorded
        item("", keyed(&[("t", 1)], "k4")),          // invalid budget
        item("a", keyed(&[("t", 4)], "k1")),         // replays the first item
        item("a", keyed(&[("t", 5)], "k2")),         // conflicts with the third
        item("a", keyed(&[("t", 2)], "old")),        // replays a record from before the batch
        item("a", keyed(&[("t", 9)], "older")),      // conflicts with one from before
        item("b", report(&[("u", MAX_AMOUNT)])),     // overflow on b
        item("a", report(&[("t", 2)])),              // a is full: hard breach
        item("a", UsageReport::new()),               // invalid: no dimension
        item("b", keyed(&[("t", 1)], "k1")),         // k1 on another budget: fresh
        item("a", keyed(&[("t", 1)], "k3")),         // conflicts with the recorded breach
        item("a", keyed(&[("t", 4)], "k3")),         // replays the recorded breach
        item("a", report(&[("t", MAX_AMOUNT + 1)])), // invalid delta
    ]
}

/// A batch of valid, invalid, breaching, replayed, conflicting and overflowing items answers exactly what the same calls one by one answer, and leaves the same state.
pub async fn a_batch_answers_exactly_as_the_calls_one_by_one(ctx: Ctx) {
    let b = &*ctx.backend;
    let twin = ctx.open_namespace("-twin").await;
    let limits = policy(&[("t", Some(6), Some(10))]);
    set_policies(&[b, &*twin], &[("a", limits)]).await;
    for backend in [b, &*twin] {
        must_report(backend, "a", &keyed(&[("t", 2)], "old")).await;
        must_report(backend, "a", &keyed(&[("t", 0)], "older")).await;
    }
    let items = mixed_items();
    let answers = must_batch(b, &items).await;
    let expected = one_by_one(&*twin, &items).await;
    let got: Vec<_> = answers.iter().map(shape).collect();
    assert_eq!(got, expected);
    assert_eq!(usage_of(b, "a").await, usage_of(&*twin, "a").await);
    assert_eq!(usage_of(b, "b").await, usage_of(&*twin, "b").await);
    // And what they are, so that a twin as wrong as the batch cannot hide it.
    assert_eq!(receipt(&answers, 0), fresh(UsageOutcome::Ok));
    assert_eq!(
        receipt(&answers, 2),
        fresh(UsageOutcome::SoftBreach(vec![breach("t", 10, 6, true)]))
    );
    let hard = UsageOutcome::HardBreach(vec![breach("t", 10, 10, true)]);
    assert_eq!(receipt(&answers, 3), fresh(hard.clone()));
    assert_eq!(kind(&answers, 4), ErrorKind::InvalidInput);
    assert_eq!(receipt(&answers, 5), replayed(UsageOutcome::Ok));
    assert_eq!(kind(&answers, 6), ErrorKind::Conflict);
    assert_eq!(receipt(&answers, 7), replayed(UsageOutcome::Ok));
    assert_eq!(kind(&answers, 8), ErrorKind::Conflict);
    assert_eq!(kind(&answers, 9), ErrorKind::Overflow);
    assert_eq!(
        receipt(&answers, 10),
        fresh(UsageOutcome::HardBreach(vec![breach("t", 10, 10, true)]))
    );
    assert_eq!(kind(&answers, 11), ErrorKind::InvalidInput);
    assert_eq!(receipt(&answers, 12), fresh(UsageOutcome::Ok));
    assert_eq!(kind(&answers, 13), ErrorKind::Conflict);
    assert_eq!(receipt(&answers, 14), replayed(hard));
    assert_eq!(kind(&answers, 15), ErrorKind::InvalidInput);
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 10)]));
    assert_eq!(usage_of(b, "b").await, counters(&[("t", 4), ("u", 1)]));
}

/// An empty batch answers no item and changes nothing.
pub async fn an_empty_batch_answers_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    assert!(must_batch(b, &[]).await.is_empty());
    assert!(usage_of(b, "a").await.is_empty());
}

/// More than `MAX_BATCH_ITEMS` items is `InvalidInput` for the whole call and applies nothing.
pub async fn more_than_the_most_items_is_refused_whole(ctx: Ctx) {
    let b = &*ctx.backend;
    let items = vec![item("a", report(&[("t", 1)])); MAX_BATCH_ITEMS + 1];
    assert_kind(
        b.report_usage_batch(&items).await,
        ErrorKind::InvalidInput,
        "10,001 items",
    );
    assert!(usage_of(b, "a").await.is_empty());
}

/// A batch of `MAX_BATCH_ITEMS` keyed items over 16 budgets applies every one; sent again whole, it replays every one and applies nothing.
pub async fn the_largest_batch_applies_once_and_replays_whole(ctx: Ctx) {
    let b = &*ctx.backend;
    let items: Vec<_> = (0..MAX_BATCH_ITEMS)
        .map(|i| {
            let delta = u64::try_from(i % 7).expect("small");
            item(
                &format!("b{:02}", i % 16),
                keyed(&[("t", delta), ("n", 1)], &format!("req-{i}")),
            )
        })
        .collect();
    let first = must_batch(b, &items).await;
    assert!(first
        .iter()
        .all(|a| matches!(a, Ok(r) if *r == fresh(UsageOutcome::Ok))));
    let again = must_batch(b, &items).await;
    assert!(again
        .iter()
        .all(|a| matches!(a, Ok(r) if *r == replayed(UsageOutcome::Ok))));
    for budget in 0..16usize {
        let (mut t, mut n) = (0u64, 0u64);
        for i in (budget..MAX_BATCH_ITEMS).step_by(16) {
            t += u64::try_from(i % 7).expect("small");
            n += 1;
        }
        assert_eq!(
            usage_of(b, &format!("b{budget:02}")).await,
            counters(&[("t", t), ("n", n)])
        );
    }
}

/// Items of one budget see the earlier ones, each on its own: a hard breach between two items that fit applies nothing, and the same key twice replays the first.
pub async fn later_items_see_earlier_ones(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("a", &policy(&[("t", None, Some(10))]))
        .await
        .unwrap();
    let items = vec![
        item("a", report(&[("t", 6)])),
        item("z", report(&[("t", 100)])),
        item("a", report(&[("t", 6)])),
        item("a", keyed(&[("t", 4)], "k")),
        item("a", keyed(&[("t", 4)], "k")),
        item("a", report(&[("t", 1)])),
    ];
    let answers = must_batch(b, &items).await;
    let expected = vec![
        fresh(UsageOutcome::Ok),
        fresh(UsageOutcome::Ok),
        fresh(UsageOutcome::HardBreach(vec![breach("t", 6, 10, true)])),
        fresh(UsageOutcome::Ok),
        replayed(UsageOutcome::Ok),
        fresh(UsageOutcome::HardBreach(vec![breach("t", 10, 10, true)])),
    ];
    let got: Vec<_> = (0..items.len()).map(|i| receipt(&answers, i)).collect();
    assert_eq!(got, expected);
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 10)]));
    assert_eq!(usage_of(b, "z").await, counters(&[("t", 100)]));
}

/// Records written by a batch replay to single calls and the other way round.
pub async fn batches_and_single_calls_share_dedup_records(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "a", &keyed(&[("t", 1)], "single")).await;
    let items = vec![
        item("a", keyed(&[("t", 1)], "single")),
        item("a", keyed(&[("t", 2)], "batched")),
    ];
    let answers = must_batch(b, &items).await;
    assert_eq!(receipt(&answers, 0), replayed(UsageOutcome::Ok));
    assert_eq!(receipt(&answers, 1), fresh(UsageOutcome::Ok));
    assert_eq!(
        must_report(b, "a", &keyed(&[("t", 2)], "batched")).await,
        replayed(UsageOutcome::Ok)
    );
    assert_kind(
        b.report_usage("a", &keyed(&[("t", 3)], "batched")).await,
        ErrorKind::Conflict,
        "another payload under a key a batch wrote",
    );
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 3)]));
}

/// Hard limits in a batch count the amounts held by live reservations, and the breach names them.
pub async fn a_batch_counts_what_reservations_hold(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("a", &policy(&[("t", None, Some(10))]))
        .await
        .unwrap();
    must_reserve(b, "a", &request("r", &[("t", 7)], 1_000)).await;
    let items = vec![
        item("a", report(&[("t", 3)])),
        item("a", report(&[("t", 1)])),
    ];
    let answers = must_batch(b, &items).await;
    assert_eq!(receipt(&answers, 0), fresh(UsageOutcome::Ok));
    assert_eq!(
        receipt(&answers, 1),
        fresh(UsageOutcome::HardBreach(vec![held_breach(
            "t", 3, 7, 10, true
        )]))
    );
    ctx.clock.advance(1_000);
    let answers = must_batch(b, &items[1..]).await;
    assert_eq!(receipt(&answers, 0), fresh(UsageOutcome::Ok));
    assert_eq!(usage_of(b, "a").await, counters(&[("t", 4)]));
}

/// A batch right after a window rolls over counts every item in the new window, in order, and still replays and conflicts with records from before the rollover.
pub async fn a_batch_after_a_rollover_counts_in_the_new_window(ctx: Ctx) {
    let b = &*ctx.backend;
    let hour = 3_600_000;
    let windowed = policy(&[("t", None, Some(10))]).window(Window::fixed(hour, 0));
    b.set_policy("a", &windowed).await.unwrap();
    b.set_policy("c", &windowed).await.unwrap();
    must_report(b, "a", &keyed(&[("t", 9)], "before")).await;
    must_report(b, "c", &report(&[("t", 9)])).await;
    let next = (START_MS / hour + 1) * hour;
    ctx.clock.set(next);
    let items = vec![
        item("a", keyed(&[("t", 6)], "first")),
        item("a", keyed(&[("t", 9)], "before")),
        item("c", report(&[("t", 1)])),
        item("a", keyed(&[("t", 1)], "before")),
        item("a", report(&[("t", 5)])),
        item("a", report(&[("t", 4)])),
        item("c", report(&[("t", 10)])),
    ];
    let answers = must_batch(b, &items).await;
    assert_eq!(receipt(&answers, 0), fresh(UsageOutcome::Ok));
    assert_eq!(receipt(&answers, 1), replayed(UsageOutcome::Ok));
    assert_eq!(receipt(&answers, 2), fresh(UsageOutcome::Ok));
    assert_eq!(kind(&answers, 3), ErrorKind::Conflict);
    assert_eq!(
        receipt(&answers, 4),
        fresh(UsageOutcome::HardBreach(vec![breach("t", 6, 10, true)]))
    );
    assert_eq!(receipt(&answers, 5), fresh(UsageOutcome::Ok));
    assert_eq!(
        receipt(&answers, 6),
        fresh(UsageOutcome::HardBreach(vec![breach("t", 1, 10, true)]))
    );
    let usage = b.usage("a").await.unwrap();
    assert_eq!(usage.counters, counters(&[("t", 10)]));
    assert_eq!(usage.window.map(|w| w.start_ms), Some(next));
    assert_eq!(usage_of(b, "c").await, counters(&[("t", 1)]));
}

/// Concurrent batches that share keys and race for one hard limit apply each key once and never overshoot it.
pub async fn concurrent_batches_apply_each_key_once_within_the_hard_limit(ctx: Ctx) {
    ctx.backend
        .set_policy("a", &policy(&[("t", None, Some(60))]))
        .await
        .unwrap();
    let handles = ctx.handles(4).await;
    let tasks = 8;
    let barrier = Arc::new(Barrier::new(tasks));
    let mut joins = Vec::with_capacity(tasks);
    for task in 0..tasks {
        // Task t sends keys 25t/2 .. 25t/2 + 25: neighbours share about half their keys.
        let first = task * 25 / 2;
        let items: Vec<_> = (first..first + 25)
            .map(|k| item("a", keyed(&[("t", 1)], &format!("k{k}"))))
            .collect();
        let b = handles[task % handles.len()].clone();
        let barrier = barrier.clone();
        joins.push(tokio::spawn(async move {
            barrier.wait().await;
            let answers = b.report_usage_batch(&items).await;
            (items, answers)
        }));
    }
    let mut fresh_keys = std::collections::BTreeMap::new();
    let mut replays = Vec::new();
    for join in joins {
        let (items, answers) = join.await.expect("batch task");
        let answers = answers.expect("batch");
        for ((_, r), answer) in items.iter().zip(answers) {
            let receipt = answer.expect("item");
            let key = r.dedup_key.clone().expect("keyed");
            if receipt.replayed {
                replays.push((key, receipt.outcome));
            } else {
                assert!(
                    fresh_keys.insert(key, receipt.outcome).is_none(),
                    "a key applied twice"
                );
            }
        }
    }
    let distinct = 7 * 25 / 2 + 25;
    assert_eq!(fresh_keys.len(), distinct, "every key answered fresh once");
    assert_eq!(fresh_keys.len() + replays.len(), tasks * 25);
    for (key, outcome) in &replays {
        assert_eq!(
            Some(outcome),
            fresh_keys.get(key),
            "a replay answers the first outcome"
        );
    }
    let applied = fresh_keys.values().filter(|o| o.is_applied()).count();
    assert_eq!(applied, 60);
    assert_eq!(usage_of(&*ctx.backend, "a").await, counters(&[("t", 60)]));
}

cases! {
    __conformance_batch;
    batch: [
        a_batch_answers_exactly_as_the_calls_one_by_one,
        an_empty_batch_answers_nothing,
        more_than_the_most_items_is_refused_whole,
        the_largest_batch_applies_once_and_replays_whole,
        later_items_see_earlier_ones,
        batches_and_single_calls_share_dedup_records,
        a_batch_counts_what_reservations_hold,
        a_batch_after_a_rollover_counts_in_the_new_window,
        concurrent_batches_apply_each_key_once_within_the_hard_limit,
    ]
}
