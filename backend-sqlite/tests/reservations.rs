//! Reservations and several budgets (SEMANTICS §4.2, §4.3) on SQLite: a seeded random walk in
//! lockstep with the reference model (`MemoryBackend`) on one `ManualClock` — every answer and
//! every read (`usage`, `reservation`, `reservations`) must be the model's — and targeted tests
//! for what the model cannot show: holds survive a restart, a multi-budget call is one write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ErrorKind, ManualClock,
    MultiReserveOutcome, PersistenceBackend, ReservationState, ReserveOutcome, ReserveRequest,
    UsageOutcome, UsageReport, Window, MAX_AMOUNT,
};
use stowage_sqlite::SqliteBackend;
use stowage_testkit::rng::Rng;

const BUDGETS: &[&str] = &["a", "b", "c"];
const DIMENSIONS: &[&str] = &["t", "u"];
const IDS: &[&str] = &["r0", "r1", "r2", "r3", "k0", "k1"];
/// Short enough that the walk crosses many id-memory boundaries.
const REMEMBER_MS: u64 = 4_000;

async fn lockstep(url: &str, now: u64) -> Lockstep {
    let clock = Arc::new(ManualClock::new(now));
    let options = ConnectOptions::new()
        .clock(clock.clone())
        .dedup_ttl_ms(REMEMBER_MS);
    let sqlite = SqliteBackend::open(url, options.clone()).await.unwrap();
    sqlite.initialize().await.unwrap();
    Lockstep::new(Arc::new(sqlite), clock, options)
}

fn amount(rng: &mut Rng) -> u64 {
    match rng.below(20) {
        0 => 0,
        1 => MAX_AMOUNT - rng.below(3),
        _ => rng.below(40),
    }
}

fn dimensions(rng: &mut Rng) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for d in DIMENSIONS {
        if out.is_empty() || rng.chance(50) {
            out.insert((*d).to_owned(), amount(rng));
        }
    }
    out
}

fn policy(rng: &mut Rng) -> BudgetPolicy {
    let mut policy = BudgetPolicy::new();
    for d in DIMENSIONS {
        let limit = match rng.below(4) {
            0 => continue,
            1 => DimensionLimit::hard(20 + rng.below(100)),
            2 => DimensionLimit::soft(10 + rng.below(60)),
            _ => DimensionLimit::both(10 + rng.below(40), 40 + rng.below(100)),
        };
        policy = policy.limit(*d, limit);
    }
    if rng.chance(30) {
        policy = policy.window(Window::fixed(5_000 + 1_000 * rng.below(3), 0));
    }
    policy
}

/// 1 to 3 distinct budgets, in a random order (the checked layer sorts them).
fn some_budgets(rng: &mut Rng) -> Vec<&'static str> {
    let mut chosen: Vec<&'static str> =
        BUDGETS.iter().copied().filter(|_| rng.chance(50)).collect();
    if chosen.is_empty() {
        chosen.push(*rng.pick(BUDGETS));
    }
    if rng.chance(50) {
        chosen.reverse();
    }
    chosen
}

/// `actual` for a commit of `id` on `budget`: mostly within what the model holds, sometimes not.
async fn actual_for(p: &Lockstep, rng: &mut Rng, budget: &str, id: &str) -> BTreeMap<String, u64> {
    let known = p.model().reservation(budget, id).await.unwrap();
    match known {
        Some(r) if rng.chance(80) => {
            let mut actual = BTreeMap::new();
            for (d, a) in &r.dimensions {
                if rng.chance(20) {
                    continue;
                }
                let a = match rng.below(10) {
                    0 => a.saturating_add(1),
                    1 => *a,
                    _ => rng.below(a.saturating_add(1).min(1_000)),
                };
                actual.insert(d.clone(), a);
            }
            actual
        }
        _ => dimensions(rng),
    }
}

/// Moves the clock forward: a little, a lot, or exactly onto (or next to) a boundary of a
/// reservation the model remembers (its expiry or the time its id is forgotten).
async fn move_clock(p: &Lockstep, rng: &mut Rng) {
    let now = p.now();
    let mut boundaries = Vec::new();
    for b in BUDGETS {
        for r in p.model().reservations(b).await.unwrap() {
            boundaries.push(r.expires_at);
            boundaries.push(r.forget_at());
        }
    }
    boundaries.retain(|t| *t >= now && *t < now + 100_000);
    let target = match rng.below(4) {
        0 if !boundaries.is_empty() => {
            let t = *rng.pick(&boundaries);
            match rng.below(3) {
                0 => t.saturating_sub(1).max(now),
                1 => t,
                _ => t + 1,
            }
        }
        1 => now + rng.below(8_000),
        _ => now + rng.below(600),
    };
    p.at(target);
}

/// Every read must agree after each step.
async fn compare_reads(p: &Lockstep, rng: &mut Rng) {
    for b in BUDGETS {
        p.usage(b).await.unwrap();
        p.reservations(b).await.unwrap();
    }
    let (budget, id) = (*rng.pick(BUDGETS), *rng.pick(IDS));
    p.reservation(budget, id).await.unwrap();
}

/// `op:answer` for the tally of what a walk reached: the error kind, or the outcome's variant.
fn label<T: std::fmt::Debug>(op: &str, answer: &stowage_core::Result<T>) -> String {
    match answer {
        Err(e) => format!("{op}:{:?}", e.kind()),
        Ok(value) => {
            let text = format!("{value:?}");
            let variant = text
                .split_once("outcome: ")
                .map_or(text.as_str(), |(_, rest)| rest)
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned();
            format!("{op}:{variant}")
        }
    }
}

/// One random step; the answers are compared by `Lockstep` (errors by kind). Returns its label.
async fn step(p: &Lockstep, rng: &mut Rng) -> String {
    let budget = *rng.pick(BUDGETS);
    let id = *rng.pick(IDS);
    match rng.below(100) {
        0..=5 => label("set_policy", &p.set_policy(budget, &policy(rng)).await),
        6 => label("delete_policy", &p.delete_policy(budget).await),
        7 => label("reset_usage", &p.reset_usage(budget).await),
        8..=17 => {
            let mut report = UsageReport::new();
            for (d, a) in dimensions(rng) {
                report = report.add(d, a);
            }
            if rng.chance(50) {
                report = report.dedup_key(id);
            }
            label("report_usage", &p.report_usage(budget, &report).await)
        }
        18..=37 => {
            let ttl = match rng.below(10) {
                0 => MAX_AMOUNT,
                _ => 1 + rng.below(3_000),
            };
            // A retry of what the model remembers, or a new request.
            let request = match p.model().reservation(budget, id).await.unwrap() {
                Some(r) if rng.chance(40) => ReserveRequest {
                    id: r.id,
                    dimensions: r.dimensions,
                    ttl_ms: r.ttl_ms,
                },
                _ => ReserveRequest {
                    id: id.to_owned(),
                    dimensions: dimensions(rng),
                    ttl_ms: ttl,
                },
            };
            label("reserve", &p.reserve(budget, &request).await)
        }
        38..=49 => {
            let actual = actual_for(p, rng, budget, id).await;
            label("commit", &p.commit(budget, id, &actual).await)
        }
        50..=56 => label("release", &p.release(budget, id).await),
        57..=59 => {
            let actual = actual_for(p, rng, budget, id).await;
            label("check_commit", &p.check_commit(budget, id, &actual).await)
        }
        60..=69 => {
            let budgets = some_budgets(rng);
            let request = ReserveRequest {
                id: id.to_owned(),
                dimensions: dimensions(rng),
                ttl_ms: 1 + rng.below(3_000),
            };
            label("reserve_all", &p.reserve_all(&budgets, &request).await)
        }
        70..=77 => {
            let budgets = some_budgets(rng);
            let actual = actual_for(p, rng, budgets[0], id).await;
            label("commit_all", &p.commit_all(&budgets, id, &actual).await)
        }
        78..=81 => label("release_all", &p.release_all(&some_budgets(rng), id).await),
        82..=89 => {
            let mut report = UsageReport::new();
            for (d, a) in dimensions(rng) {
                report = report.add(d, a);
            }
            if rng.chance(95) {
                report = report.dedup_key(id);
            }
            label(
                "report_usage_all",
                &p.report_usage_all(&some_budgets(rng), &report).await,
            )
        }
        _ => {
            move_clock(p, rng).await;
            "clock".to_owned()
        }
    }
}

/// Walks `steps` random steps from `seed`; returns how often each answer was met.
async fn walk(url: &str, seed: u64, steps: usize) -> BTreeMap<String, usize> {
    let p = lockstep(url, 1_000_000).await;
    let mut rng = Rng::new(seed);
    let mut tally = BTreeMap::new();
    for _ in 0..steps {
        *tally.entry(step(&p, &mut rng).await).or_insert(0) += 1;
        compare_reads(&p, &mut rng).await;
    }
    // Everything held must still be what the model holds after the walk; purge clears it all.
    p.purge().await.unwrap();
    for b in BUDGETS {
        assert!(p.reservations(b).await.unwrap().is_empty());
        assert!(p.usage(b).await.unwrap().pending.is_empty());
    }
    tally
}

#[tokio::test]
async fn a_random_walk_answers_as_the_model_does() {
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 1..=4 {
        let url = common::fresh_file_url(&format!("reservations-walk-{seed}"));
        for (answer, n) in walk(&url, seed, 400).await {
            *tally.entry(answer).or_insert(0) += n;
        }
    }
    // The walk reaches every answer that matters, so agreeing with the model means something.
    let reached = [
        "reserve:Reserved",
        "reserve:HardBreach",
        "reserve:Conflict",
        "reserve:Overflow",
        "report_usage:Ok",
        "report_usage:SoftBreach",
        "report_usage:HardBreach",
        "commit:Ok",
        "commit:SoftBreach",
        "commit:NotFound",
        "commit:Expired",
        "commit:Conflict",
        "commit:InvalidInput",
        "release:NotFound",
        "release:Conflict",
        "reserve_all:Reserved",
        "reserve_all:HardBreach",
        "commit_all:Ok",
        "commit_all:NotFound",
        "release_all:NotFound",
        "report_usage_all:Ok",
        "report_usage_all:HardBreach",
    ];
    let missing: Vec<&str> = reached
        .into_iter()
        .filter(|answer| !tally.contains_key(*answer))
        .collect();
    assert!(missing.is_empty(), "not reached: {missing:?} in {tally:?}");
}

#[tokio::test]
async fn a_random_walk_answers_as_the_model_does_in_memory() {
    let tally = walk("sqlite::memory:", 99, 300).await;
    assert!(tally.contains_key("commit_all:Ok"), "{tally:?}");
}

fn held(dimension: &str, amount: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(dimension.to_owned(), amount)])
}

#[tokio::test]
async fn a_hold_survives_a_restart_and_still_counts() {
    let url = common::fresh_file_url("reservations-restart");
    let clock = Arc::new(ManualClock::new(1_000));
    let options = ConnectOptions::new().clock(clock.clone());
    {
        let sqlite = SqliteBackend::open(&url, options.clone()).await.unwrap();
        sqlite.initialize().await.unwrap();
        let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(100));
        sqlite.set_policy("b", &policy).await.unwrap();
        let receipt = sqlite
            .reserve("b", &ReserveRequest::new("r", 10_000).add("t", 70))
            .await
            .unwrap();
        assert_eq!(receipt.outcome, ReserveOutcome::Reserved);
        assert_eq!(receipt.expires_at, 11_000);
    }
    clock.set(5_000);
    let sqlite = SqliteBackend::open(&url, options).await.unwrap();
    sqlite.initialize().await.unwrap();
    assert_eq!(sqlite.usage("b").await.unwrap().pending, held("t", 70));
    // The hold still counts against the hard limit: 70 held + 40 > 100.
    let receipt = sqlite
        .report_usage("b", &UsageReport::new().add("t", 40))
        .await
        .unwrap();
    let UsageOutcome::HardBreach(breaches) = receipt.outcome else {
        panic!("expected a hard breach, got {receipt:?}");
    };
    assert_eq!((breaches[0].usage, breaches[0].pending), (0, 70));
    let r = sqlite.reservation("b", "r").await.unwrap().unwrap();
    assert_eq!(r.state, ReservationState::Held);
    // And it settles after the restart.
    let receipt = sqlite.commit("b", "r", &held("t", 50)).await.unwrap();
    assert_eq!(receipt.outcome, UsageOutcome::Ok);
    let usage = sqlite.usage("b").await.unwrap();
    assert_eq!(usage.counters, held("t", 50));
    assert!(usage.pending.is_empty());
}

#[tokio::test]
async fn a_multi_budget_call_is_one_write() {
    let url = common::fresh_file_url("reservations-one-write");
    let clock = Arc::new(ManualClock::new(1_000));
    let sqlite = SqliteBackend::open(&url, ConnectOptions::new().clock(clock.clone()))
        .await
        .unwrap();
    sqlite.initialize().await.unwrap();
    assert!(sqlite.capabilities().atomic_multi_budget);
    sqlite
        .set_policy(
            "org",
            &BudgetPolicy::new().limit("t", DimensionLimit::hard(10)),
        )
        .await
        .unwrap();
    let budgets = ["key", "team", "org"];
    let before = sqlite.stats();
    let refused = sqlite
        .reserve_all(&budgets, &ReserveRequest::new("r", 1_000).add("t", 20))
        .await
        .unwrap();
    assert!(matches!(
        refused.outcome,
        MultiReserveOutcome::HardBreach(_)
    ));
    let reserved = sqlite
        .reserve_all(&budgets, &ReserveRequest::new("s", 1_000).add("t", 5))
        .await
        .unwrap();
    assert_eq!(reserved.outcome, MultiReserveOutcome::Reserved);
    sqlite
        .commit_all(&budgets, "s", &held("t", 3))
        .await
        .unwrap();
    sqlite
        .report_usage_all(&budgets, &UsageReport::new().add("t", 1).dedup_key("k"))
        .await
        .unwrap();
    sqlite.release_all(&budgets, "s").await.unwrap_err();
    let after = sqlite.stats();
    // Five calls over three budgets: five writes, each one savepoint of a committed transaction.
    assert_eq!(after.writes - before.writes, 5);
    assert!(after.commits - before.commits <= 5);
    // The refused call held nothing anywhere; its id is remembered on every budget.
    for b in budgets {
        let usage = sqlite.usage(b).await.unwrap();
        assert_eq!(usage.counters, held("t", 4), "budget {b}");
        assert!(usage.pending.is_empty(), "budget {b}");
        let r = sqlite.reservation(b, "r").await.unwrap().unwrap();
        let refused_here = matches!(r.state, ReservationState::Refused { .. });
        assert_eq!(refused_here, b == "org", "budget {b}: {r:?}");
    }
}

#[tokio::test]
async fn another_connection_never_sees_half_a_multi_budget_call() {
    let url = common::fresh_file_url("reservations-snapshot");
    let path = url.trim_start_matches("sqlite://").to_owned();
    let clock = Arc::new(ManualClock::new(1_000));
    let sqlite = SqliteBackend::open(&url, ConnectOptions::new().clock(clock.clone()))
        .await
        .unwrap();
    sqlite.initialize().await.unwrap();
    let budgets: Vec<String> = (0..16).map(|i| format!("b{i:02}")).collect();
    let budgets: Vec<&str> = budgets.iter().map(String::as_str).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let watcher = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let holds: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM stowage_reservation_amounts WHERE held = 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            seen.push(holds);
        }
        seen
    });
    for round in 0..40u64 {
        let id = format!("r{round}");
        sqlite
            .reserve_all(&budgets, &ReserveRequest::new(id, 100_000).add("t", 1))
            .await
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen = watcher.join().unwrap();
    for held_rows in &seen {
        assert_eq!(held_rows % 16, 0, "a reader saw {held_rows} holds");
    }
    assert!(
        seen.iter().any(|n| *n > 0 && *n < 640),
        "the reader never saw a call land: {seen:?}"
    );
}

#[tokio::test]
async fn pending_reads_only_the_live_holds() {
    let url = common::fresh_file_url("reservations-many");
    let path = url.trim_start_matches("sqlite://").to_owned();
    let clock = Arc::new(ManualClock::new(1_000));
    let sqlite = SqliteBackend::open(&url, ConnectOptions::new().clock(clock.clone()))
        .await
        .unwrap();
    sqlite.initialize().await.unwrap();
    for i in 0..300u64 {
        let request = ReserveRequest::new(format!("r{i}"), 1_000 + i).add("t", 2);
        sqlite.reserve("b", &request).await.unwrap();
    }
    assert_eq!(sqlite.usage("b").await.unwrap().pending, held("t", 600));
    // Half of them (those with i < 150) have expired at 2_149: they stop counting without being
    // rewritten.
    clock.set(2_149);
    assert_eq!(sqlite.usage("b").await.unwrap().pending, held("t", 300));
    assert_eq!(sqlite.reservations("b").await.unwrap().len(), 300);
    let conn = rusqlite::Connection::open(path).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT dimension, amount FROM stowage_reservation_amounts
             WHERE ns = 'default' AND budget = 'b' AND held = 1 AND expires_at > 5 AND amount > 0",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("stowage_reservation_holds")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn forgotten_ids_are_removed_on_writes() {
    let url = common::fresh_file_url("reservations-forget");
    let path = url.trim_start_matches("sqlite://").to_owned();
    let clock = Arc::new(ManualClock::new(1_000));
    let options = ConnectOptions::new().clock(clock.clone()).dedup_ttl_ms(500);
    let sqlite = SqliteBackend::open(&url, options).await.unwrap();
    sqlite.initialize().await.unwrap();
    for i in 0..20u64 {
        let request = ReserveRequest::new(format!("r{i}"), 100).add("t", 1);
        sqlite.reserve("b", &request).await.unwrap();
    }
    // Every one expired at 1_100 and is forgotten at 1_600.
    clock.set(1_600);
    assert!(sqlite.reservations("b").await.unwrap().is_empty());
    assert_eq!(
        sqlite
            .commit("b", "r0", &BTreeMap::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let conn = rusqlite::Connection::open(path).unwrap();
    let count = || -> i64 {
        conn.query_row("SELECT COUNT(*) FROM stowage_reservations", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(count(), 20);
    // A forgotten id starts afresh; each fresh reserve removes a few forgotten ones.
    for id in ["r0", "n1", "n2"] {
        let receipt = sqlite
            .reserve("b", &ReserveRequest::new(id, 100).add("t", 5))
            .await
            .unwrap();
        assert_eq!(receipt.outcome, ReserveOutcome::Reserved);
        assert!(!receipt.replayed);
        assert_eq!(receipt.expires_at, 1_700);
    }
    assert_eq!(count(), 3);
    let r = sqlite.reservation("b", "r0").await.unwrap().unwrap();
    assert_eq!(r.dimensions, held("t", 5));
}

#[tokio::test]
async fn holds_a_lagging_clock_sees_live_again_add_up_exactly() {
    let p = lockstep(&common::fresh_file_url("reservations-lagging"), 100).await;
    let whole = ReserveRequest::new("r1", 10).add("t", MAX_AMOUNT);
    assert!(p.reserve("b", &whole).await.unwrap().outcome.is_reserved());
    p.at(200);
    let again = ReserveRequest::new("r2", 1_000).add("t", MAX_AMOUNT);
    assert!(p.reserve("b", &again).await.unwrap().outcome.is_reserved());
    // A process whose clock lags sees both live: beyond i64, still exact, as the model has it.
    p.at(105);
    let usage = p.usage("b").await.unwrap();
    assert_eq!(usage.pending["t"], 2 * MAX_AMOUNT);
    let more = ReserveRequest::new("r3", 10).add("t", 1);
    assert_eq!(
        p.reserve("b", &more).await.unwrap_err().kind(),
        ErrorKind::Overflow
    );
}

#[tokio::test]
async fn a_reservation_is_remembered_for_its_creators_ttl() {
    let url = common::fresh_file_url("reservations-creator-ttl");
    let clock = Arc::new(ManualClock::new(1_000));
    let open = |ttl: u64| {
        let url = url.clone();
        let options = ConnectOptions::new().clock(clock.clone()).dedup_ttl_ms(ttl);
        async move {
            let sqlite = SqliteBackend::open(&url, options).await.unwrap();
            sqlite.initialize().await.unwrap();
            sqlite
        }
    };
    let short = open(500).await;
    let long = open(60_000).await;
    short
        .reserve("b", &ReserveRequest::new("r", 100).add("t", 1))
        .await
        .unwrap();
    assert!(long.release("b", "r").await.unwrap());
    let r = long.reservation("b", "r").await.unwrap().unwrap();
    assert_eq!(r.remember_ms, 500);
    assert_eq!(r.state, ReservationState::Released { at: 1_000 });
    // Forgotten at 1_500 by the creator's TTL, whichever handle asks.
    clock.set(1_499);
    assert!(long.reservation("b", "r").await.unwrap().is_some());
    clock.set(1_500);
    assert!(long.reservation("b", "r").await.unwrap().is_none());
    assert_eq!(
        long.release("b", "r").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
