//! `report_usage_batch` on PostgreSQL (SEMANTICS §4.4): one plpgsql call per batch whose items run
//! the same `report_step` as `report_usage`. The differential test pins that the batch never
//! diverges from the single report (nor from the model); the others cover locking and size.

mod common;

use std::sync::Arc;

use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, Error, ErrorKind, ManualClock,
    MemoryBackend, PersistenceBackend, ReserveRequest, Result, UsageOutcome, UsageReceipt,
    UsageReport, Window, MAX_AMOUNT,
};
use stowage_postgres::PostgresBackend;

/// A deterministic pseudo-random sequence (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

const BUDGETS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The policies of the differential test: a fixed window, lifetime limits, no policy, a calendar
/// window (whose bounds cannot be computed past year 9999), and zero hard limits.
fn policies() -> Vec<(&'static str, BudgetPolicy)> {
    vec![
        (
            "a",
            BudgetPolicy::new()
                .limit("t", DimensionLimit::both(60, 120))
                .limit("u", DimensionLimit::soft(30))
                .window(Window::fixed(1_000, 0)),
        ),
        (
            "b",
            BudgetPolicy::new()
                .limit("t", DimensionLimit::hard(400))
                .limit("u", DimensionLimit::both(100, 300)),
        ),
        (
            "d",
            BudgetPolicy::new()
                .limit("t", DimensionLimit::both(40, 90))
                .window(Window::day("Europe/Berlin")),
        ),
        ("e", BudgetPolicy::new().limit("u", DimensionLimit::hard(0))),
    ]
}

/// One random item: budget, one or two dimensions, small deltas (sometimes one that overflows),
/// and often a key from a small set (so replays and conflicts happen, within a batch too).
fn item(rng: &mut Lcg) -> (String, UsageReport) {
    let budget = BUDGETS[usize::try_from(rng.next(5)).unwrap()].to_owned();
    let mut report = UsageReport::new();
    match rng.next(3) {
        0 => report = report.add("t", rng.next(25)),
        1 => report = report.add("u", rng.next(25)),
        _ => report = report.add("t", rng.next(25)).add("u", rng.next(10)),
    }
    if rng.next(15) == 0 {
        report = report.add("v", MAX_AMOUNT - rng.next(3));
    }
    if rng.next(3) > 0 {
        report = report.dedup_key(format!("k{}", rng.next(12)));
    }
    (budget, report)
}

/// What an answer must agree on: the receipt exactly, an error by kind.
fn shape(answer: &Result<UsageReceipt>) -> std::result::Result<UsageReceipt, ErrorKind> {
    answer.clone().map_err(|e: Error| e.kind())
}

async fn open_pg(url: &str, prefix: &str, clock: &Arc<ManualClock>) -> Arc<dyn BudgetBackend> {
    let backend = PostgresBackend::open(
        url,
        ConnectOptions::new()
            .namespace(stowage_conformance::unique_namespace(prefix))
            .clock(clock.clone())
            .dedup_ttl_ms(2_500),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    Arc::new(backend)
}

/// Batches on PostgreSQL answer exactly what `report_usage` one by one answers on PostgreSQL and
/// on the model, and leave the same counters: across window rollovers (two calls), dedup expiry,
/// replays and conflicts inside one batch, hard breaches, overflows, live holds, and windows whose
/// bounds cannot be computed (a calendar window past year 9999: those items answer its error, a
/// replay of an earlier record still replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_as_reports_one_by_one() {
    let Some(url) = common::shared_url() else {
        return;
    };
    // 2023-11-14T22:13:20Z.
    const T: u64 = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(T));
    let batched = open_pg(&url, "batch", &clock).await;
    let single = open_pg(&url, "single", &clock).await;
    let model: Arc<dyn BudgetBackend> = Arc::new(
        MemoryBackend::with_options(
            ConnectOptions::new()
                .clock(clock.clone())
                .dedup_ttl_ms(2_500),
        )
        .unwrap(),
    );
    let backends = [&batched, &single, &model];
    for backend in backends {
        for (budget, policy) in policies() {
            backend.set_policy(budget, &policy).await.unwrap();
        }
    }
    let mut rng = Lcg(13);
    let steps: &[u64] = &[
        0, 300, 900, 1, 5_000, 200, 86_400_000, 2_000, 700, 10, 3_000,
    ];
    let mut compared = 0;
    let mut history: Vec<(String, UsageReport)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (round, &advance) in steps.iter().enumerate() {
        clock.advance(advance);
        if round == 4 {
            // A live hold counts in the hard limits and overflow checks.
            for backend in backends {
                let hold = ReserveRequest::new("h", 60_000).add("t", 50).add("u", 40);
                backend.reserve("b", &hold).await.unwrap();
            }
        }
        if round == 9 {
            // Past year 9999: the calendar window of "d" cannot be computed.
            clock.set(253_402_300_800_000 + 5_000);
        }
        let len = 1 + usize::try_from(rng.next(60)).unwrap();
        let mut items: Vec<(String, UsageReport)> = Vec::with_capacity(len);
        for _ in 0..len {
            // Now and then an earlier item again (of this batch or an earlier one): a replay.
            let next = match rng.next(5) {
                0 if !history.is_empty() => {
                    let at = usize::try_from(rng.next(u64::try_from(history.len()).unwrap()));
                    history[at.unwrap()].clone()
                }
                _ => item(&mut rng),
            };
            history.push(next.clone());
            items.push(next);
        }
        let got = batched.report_usage_batch(&items).await.unwrap();
        assert_eq!(got.len(), items.len());
        for (i, (budget, report)) in items.iter().enumerate() {
            let one = single.report_usage(budget, report).await;
            let reference = model.report_usage(budget, report).await;
            assert_eq!(
                shape(&got[i]),
                shape(&one),
                "round {round}, item {i}: {budget} {report:?}"
            );
            assert_eq!(
                shape(&one),
                shape(&reference),
                "round {round}, item {i} against the model: {budget} {report:?}"
            );
            compared += 1;
            seen.insert(match shape(&one) {
                Ok(r) if r.replayed => "replayed",
                Ok(UsageReceipt {
                    outcome: UsageOutcome::Ok,
                    ..
                }) => "ok",
                Ok(UsageReceipt {
                    outcome: UsageOutcome::SoftBreach(_),
                    ..
                }) => "soft",
                Ok(_) => "hard",
                Err(ErrorKind::Conflict) => "conflict",
                Err(ErrorKind::Overflow) => "overflow",
                Err(ErrorKind::InvalidInput) => "window error",
                Err(_) => "other error",
            });
        }
        for budget in BUDGETS {
            // (Past year 9999 the usage of "d" is the error of its window, on every backend.)
            let kind = |usage: Result<_>| usage.map_err(|e: Error| e.kind());
            let want = kind(model.usage(budget).await);
            assert_eq!(kind(batched.usage(budget).await), want, "round {round}");
            assert_eq!(kind(single.usage(budget).await), want, "round {round}");
        }
    }
    assert!(compared > 200, "{compared} items compared");
    let want = [
        "conflict",
        "hard",
        "ok",
        "overflow",
        "replayed",
        "soft",
        "window error",
    ];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), want);
}

/// Two batches over the same budgets in opposite orders, again and again at once: the budgets are
/// locked in name order up front, so neither deadlocks (nor fails), and every item applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_orders_at_once_do_not_deadlock() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = PostgresBackend::open(
        &common::with_param(&url, "max_connections=4"),
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("order")),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let backend = Arc::new(backend);
    let names: Vec<String> = (0..20).map(|i| format!("b{i:02}")).collect();
    let forward: Vec<(String, UsageReport)> = names
        .iter()
        .map(|b| (b.clone(), UsageReport::new().add("t", 1)))
        .collect();
    let backward: Vec<(String, UsageReport)> = forward.iter().rev().cloned().collect();
    let rounds = 30;
    let run = |items: Vec<(String, UsageReport)>| {
        let backend = backend.clone();
        tokio::spawn(async move {
            for _ in 0..rounds {
                let answers = backend.report_usage_batch(&items).await.unwrap();
                assert!(answers
                    .iter()
                    .all(|a| a.as_ref().unwrap().outcome.is_applied()));
            }
        })
    };
    let (one, two) = tokio::join!(run(forward), run(backward));
    one.unwrap();
    two.unwrap();
    for name in &names {
        assert_eq!(backend.usage(name).await.unwrap().counters["t"], 2 * rounds);
    }
}

/// The largest batch (10,000 items, keyed, over 16 budgets, some breaching) answers every item
/// in one call, as the reports one by one would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_items() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = PostgresBackend::open(
        &url,
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("big")),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    backend
        .set_policy(
            "b0",
            &BudgetPolicy::new().limit("t", DimensionLimit::both(100, 1_000)),
        )
        .await
        .unwrap();
    let items: Vec<(String, UsageReport)> = (0..stowage_core::MAX_BATCH_ITEMS)
        .map(|i| {
            (
                format!("b{}", i % 16),
                UsageReport::new()
                    .add("t", 1)
                    .add("u", 2)
                    .dedup_key(format!("k{i}")),
            )
        })
        .collect();
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert_eq!(answers.len(), items.len());
    // b0 gets items 0, 16, 32, …: 625 of them; t reaches 100 at its 100th, soft from the 101st.
    let mut b0 = 0;
    for (i, answer) in answers.iter().enumerate() {
        let receipt = answer.as_ref().unwrap();
        assert!(!receipt.replayed);
        if i % 16 == 0 {
            b0 += 1;
            assert_eq!(
                matches!(receipt.outcome, UsageOutcome::SoftBreach(_)),
                b0 > 100,
                "item {i}"
            );
        } else {
            assert_eq!(receipt.outcome, UsageOutcome::Ok, "item {i}");
        }
    }
    let usage = backend.usage("b1").await.unwrap();
    assert_eq!((usage.counters["t"], usage.counters["u"]), (625, 1250));
    // Sent again, every item replays its first answer and nothing applies.
    let again = backend.report_usage_batch(&items).await.unwrap();
    for (first, second) in answers.iter().zip(&again) {
        let (first, second) = (first.as_ref().unwrap(), second.as_ref().unwrap());
        assert!(second.replayed);
        assert_eq!(first.outcome, second.outcome);
    }
    assert_eq!(backend.usage("b0").await.unwrap().counters["t"], 625);
}
