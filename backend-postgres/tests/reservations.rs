//! Reservations (SEMANTICS §4.2) and several budgets (§4.3) on PostgreSQL against the reference
//! model: both driven by one `ManualClock`, every answer (values, or error kinds) and every
//! budget's usage and reservations must be the same after each step.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ManualClock, PersistenceBackend,
    ReserveOutcome, ReserveRequest, UsageReport, Window, MAX_AMOUNT,
};
use stowage_postgres::PostgresBackend;
use stowage_testkit::rng::Rng;

const BUDGETS: [&str; 4] = ["key", "org", "team", "zz"];
const DIMS: [&str; 3] = ["tok", "usd", "x"];

async fn pair(at: u64, dedup_ttl_ms: u64) -> Option<Lockstep> {
    let url = common::shared_url()?;
    let clock = Arc::new(ManualClock::new(at));
    let options = ConnectOptions::new()
        .clock(clock.clone())
        .dedup_ttl_ms(dedup_ttl_ms);
    let namespace = stowage_conformance::unique_namespace("res");
    let pg = PostgresBackend::open(&url, options.clone().namespace(namespace))
        .await
        .unwrap();
    pg.initialize().await.unwrap();
    Some(Lockstep::new(Arc::new(pg), clock, options))
}

fn amounts(rng: &mut Rng, big: bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let n = 1 + rng.below(2);
    for _ in 0..n {
        let amount = if big && rng.chance(5) {
            MAX_AMOUNT - rng.below(3)
        } else {
            rng.below(8)
        };
        out.insert((*rng.pick(&DIMS)).to_owned(), amount);
    }
    out
}

fn policy(rng: &mut Rng) -> BudgetPolicy {
    let mut policy = BudgetPolicy::new();
    for dim in DIMS {
        match rng.below(4) {
            0 => {}
            1 => policy = policy.limit(dim, DimensionLimit::hard(5 + rng.below(20))),
            2 => policy = policy.limit(dim, DimensionLimit::soft(3 + rng.below(10))),
            _ => {
                let soft = 2 + rng.below(10);
                policy = policy.limit(dim, DimensionLimit::both(soft, soft + rng.below(15)));
            }
        }
    }
    if rng.chance(40) {
        policy = policy.window(Window::fixed(1_000 + 500 * rng.below(3), rng.below(200)));
    }
    policy
}

/// 1 to 3 distinct budgets, in any order (the checked layer sorts them).
fn some_budgets(rng: &mut Rng) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    let n = 1 + rng.below(3);
    while u64::try_from(out.len()).unwrap() < n {
        let b = *rng.pick(&BUDGETS);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// What a commit names: mostly a reservation made (its budgets, id, and amounts within it),
/// sometimes anything (wrong inputs: other amounts, dimensions, ids).
fn commit_target(
    rng: &mut Rng,
    made: &[(Vec<&'static str>, String, BTreeMap<String, u64>)],
    budget: &'static str,
    id: String,
) -> (Vec<&'static str>, String, BTreeMap<String, u64>) {
    if made.is_empty() || rng.chance(15) {
        return (vec![budget], id, amounts(rng, false));
    }
    // Recent ones mostly.
    let recent = &made[made.len().saturating_sub(3)..];
    let (budgets, id, dims) = rng.pick(recent).clone();
    let mut actual = BTreeMap::new();
    for (dim, amount) in dims {
        if rng.chance(80) {
            let amount = if amount > 8 {
                rng.below(8)
            } else {
                rng.below(amount + 1)
            };
            actual.insert(dim, amount);
        }
    }
    if rng.chance(5) {
        actual.insert("tok".to_owned(), 9);
    }
    (budgets, id, actual)
}

async fn compare_all(p: &Lockstep) {
    for budget in BUDGETS {
        p.usage(budget).await.unwrap();
        p.reservations(budget).await.unwrap();
    }
}

async fn run(seed: u64, steps: usize) {
    let Some(p) = pair(10_000, 2_000 + seed % 3 * 1_500).await else {
        return;
    };
    let mut rng = Rng::new(seed);
    let mut ids: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    // Reservations made: their budgets, id and amounts (commits mostly name one of them).
    let mut made: Vec<(Vec<&'static str>, String, BTreeMap<String, u64>)> = Vec::new();
    for budget in BUDGETS {
        if rng.chance(75) {
            p.set_policy(budget, &policy(&mut rng)).await.unwrap();
        }
    }
    for step in 0..steps {
        let id = if ids.is_empty() || rng.chance(30) {
            let id = format!("r{step}");
            ids.push(id.clone());
            id
        } else {
            rng.pick(&ids).clone()
        };
        let budget = *rng.pick(&BUDGETS);
        match rng.below(16) {
            0 | 1 => {
                let dims = amounts(&mut rng, true);
                let ttl = if rng.chance(5) {
                    MAX_AMOUNT
                } else {
                    1 + rng.below(3_000)
                };
                let request = ReserveRequest {
                    id,
                    dimensions: dims,
                    ttl_ms: ttl,
                };
                made.push((vec![budget], request.id.clone(), request.dimensions.clone()));
                let answer = p.reserve(budget, &request).await;
                if matches!(&answer, Ok(r) if !r.outcome.is_reserved()) {
                    tally.note("reserve refused", &answer);
                }
                tally.note("reserve", &answer);
                // A retry, sometimes.
                if rng.chance(30) {
                    tally.note("reserve", &p.reserve(budget, &request).await);
                }
            }
            2 | 3 => {
                let (budgets, id, actual) = commit_target(&mut rng, &made, budget, id);
                let budget = *rng.pick(&budgets);
                let answer = p.commit(budget, &id, &actual).await;
                if matches!(&answer, Ok(r) if r.outcome != stowage_core::UsageOutcome::Ok) {
                    tally.note("commit soft", &answer);
                }
                tally.note("commit", &answer);
                if rng.chance(30) {
                    tally.note("commit", &p.commit(budget, &id, &actual).await);
                }
            }
            4 => {
                let (budgets, id, _) = commit_target(&mut rng, &made, budget, id);
                let budget = *rng.pick(&budgets);
                tally.note("release", &p.release(budget, &id).await);
            }
            5 => {
                let mut report = UsageReport {
                    dimensions: amounts(&mut rng, true),
                    dedup_key: None,
                };
                if rng.chance(50) {
                    report.dedup_key = Some(format!("k{}", rng.below(6)));
                }
                tally.note("report_usage", &p.report_usage(budget, &report).await);
            }
            6 | 7 => {
                let budgets = some_budgets(&mut rng);
                let request = ReserveRequest {
                    id,
                    dimensions: amounts(&mut rng, true),
                    ttl_ms: 1 + rng.below(3_000),
                };
                made.push((
                    budgets.clone(),
                    request.id.clone(),
                    request.dimensions.clone(),
                ));
                tally.note("reserve_all", &p.reserve_all(&budgets, &request).await);
                if rng.chance(20) {
                    tally.note("reserve_all", &p.reserve_all(&budgets, &request).await);
                }
            }
            8 | 9 => {
                let (mut budgets, id, actual) = commit_target(&mut rng, &made, budget, id);
                if rng.chance(15) {
                    budgets = some_budgets(&mut rng);
                }
                tally.note("commit_all", &p.commit_all(&budgets, &id, &actual).await);
                if rng.chance(20) {
                    tally.note("commit_all", &p.commit_all(&budgets, &id, &actual).await);
                }
            }
            10 => {
                let (budgets, id, _) = commit_target(&mut rng, &made, budget, id);
                tally.note("release_all", &p.release_all(&budgets, &id).await);
            }
            11 | 12 => {
                let budgets = some_budgets(&mut rng);
                let mut report = UsageReport {
                    dimensions: amounts(&mut rng, true),
                    dedup_key: Some(format!("m{}", rng.below(8))),
                };
                if rng.chance(5) {
                    report.dedup_key = None; // wrong input: a report over several budgets needs a key
                }
                tally.note(
                    "report_usage_all",
                    &p.report_usage_all(&budgets, &report).await,
                );
            }
            13 => {
                let (budgets, id, actual) = commit_target(&mut rng, &made, budget, id);
                let budget = *rng.pick(&budgets);
                tally.note("check_commit", &p.check_commit(budget, &id, &actual).await);
                tally.note("reservation", &p.reservation(budget, &id).await);
            }
            14 => {
                // Clock moves: small, across expiries, across windows and id memory.
                let now = p.now();
                p.at(now + *rng.pick(&[1, 10, 300, 1_000, 2_500, 6_000]));
            }
            _ => match rng.below(4) {
                0 => p
                    .set_policy(budget, &policy(&mut rng))
                    .await
                    .map(drop)
                    .unwrap_or(()),
                1 => {
                    tally.note("reset_usage", &p.reset_usage(budget).await);
                }
                2 => {
                    tally.note("delete_policy", &p.delete_policy(budget).await);
                }
                _ => {
                    let now = p.now();
                    p.at(now + 1);
                }
            },
        }
        compare_all(&p).await;
    }
    eprintln!("seed {seed}: (ok, err) per call: {:?}", tally.0);
    // The run is not vacuous: every call answered successfully several times.
    for op in [
        "reserve",
        "commit",
        "release",
        "report_usage",
        "reserve_all",
        "commit_all",
        "release_all",
        "report_usage_all",
    ] {
        let (ok, err) = tally.0.get(op).copied().unwrap_or_default();
        assert!(
            ok >= 3,
            "seed {seed}: {op} answered Ok {ok} times, Err {err} times"
        );
    }
}

/// Ok / Err answers per call.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, (u32, u32)>);

impl Tally {
    fn note<T>(&mut self, op: &'static str, answer: &stowage_core::Result<T>) {
        let entry = self.0.entry(op).or_default();
        if answer.is_ok() {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
}

#[tokio::test]
async fn lockstep_seed_1() {
    run(1, 400).await;
}

#[tokio::test]
async fn lockstep_seed_2() {
    run(2, 400).await;
}

#[tokio::test]
async fn lockstep_seed_3() {
    run(3, 400).await;
}

#[tokio::test]
async fn lockstep_seed_4() {
    run(4, 400).await;
}

/// Calendar windows cannot be computed past 9999: reservation calls on a windowed budget whose
/// window has passed fail there exactly as in the model (`InvalidInput` where `WindowStep::at`
/// fails, after replays, conflicts and earlier budgets in name order; what the call did on the
/// other budgets stays as the model has it), and budgets without a window are unaffected.
#[tokio::test]
async fn windows_that_cannot_be_computed() {
    // 2023-11-14T22:13:20Z.
    let Some(p) = pair(1_700_000_000_000, 5_000).await else {
        return;
    };
    stowage_conformance::lockstep::windows_that_cannot_be_computed(&p).await;
}

/// The basics, spelled out: a hold counts against the hard limit (and in reports) until it
/// expires; commit applies, release frees; a reservation over several budgets is all or nothing.
#[tokio::test]
async fn holds_count_until_resolved_or_expired() {
    let Some(p) = pair(1_000, 10_000).await else {
        return;
    };
    let hard = BudgetPolicy::new().limit("t", DimensionLimit::hard(10));
    p.set_policy("a", &hard).await.unwrap();
    p.set_policy("b", &hard).await.unwrap();
    let r = p
        .reserve("a", &ReserveRequest::new("r1", 100).add("t", 8))
        .await
        .unwrap();
    assert_eq!(r.outcome, ReserveOutcome::Reserved);
    assert_eq!(r.expires_at, 1_100);
    // 8 held: a report of 3 breaches with pending 8.
    let refused = p
        .report_usage("a", &UsageReport::new().add("t", 3))
        .await
        .unwrap();
    assert!(!refused.outcome.is_applied());
    assert_eq!(p.usage("a").await.unwrap().pending.get("t"), Some(&8));
    // Several budgets: b could, a cannot: nothing held on b afterwards.
    let multi = p
        .reserve_all(&["b", "a"], &ReserveRequest::new("r2", 100).add("t", 5))
        .await
        .unwrap();
    assert!(!matches!(
        multi.outcome,
        stowage_core::MultiReserveOutcome::Reserved
    ));
    assert!(p.usage("b").await.unwrap().pending.is_empty());
    p.at(1_100);
    assert!(p.usage("a").await.unwrap().pending.is_empty());
    assert!(!p.release("a", "r1").await.unwrap());
    p.reservations("a").await.unwrap();
}

/// Concurrent reports over overlapping sets of budgets (taken in name order, so never a deadlock):
/// each applies on every budget or none, and no hard limit is ever exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_over_several_budgets_are_all_or_nothing() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let namespace = stowage_conformance::unique_namespace("resc");
    let pg = PostgresBackend::open(
        &common::with_param(&url, "max_connections=6"),
        ConnectOptions::new().namespace(namespace),
    )
    .await
    .unwrap();
    pg.initialize().await.unwrap();
    let pg = Arc::new(pg);
    let limit = 60;
    for budget in ["a", "b", "c"] {
        pg.set_policy(
            budget,
            &BudgetPolicy::new().limit("t", DimensionLimit::hard(limit)),
        )
        .await
        .unwrap();
    }
    let sets: [&[&str]; 4] = [&["a", "b"], &["c", "b"], &["a", "c"], &["c", "a", "b"]];
    let mut tasks = Vec::new();
    for task in 0..8 {
        let pg = pg.clone();
        tasks.push(tokio::spawn(async move {
            let mut applied: BTreeMap<&str, u64> = BTreeMap::new();
            for i in 0..20 {
                let set = sets[(task + i) % sets.len()];
                let report = UsageReport::new()
                    .add("t", 1)
                    .dedup_key(format!("{task}-{i}"));
                let receipt = pg.report_usage_all(set, &report).await.unwrap();
                if !matches!(receipt.outcome, stowage_core::MultiOutcome::HardBreach(_)) {
                    for budget in set {
                        *applied.entry(budget).or_default() += 1;
                    }
                }
            }
            applied
        }));
    }
    let mut applied: BTreeMap<&str, u64> = BTreeMap::new();
    for task in tasks {
        for (budget, n) in task.await.unwrap() {
            *applied.entry(budget).or_default() += n;
        }
    }
    for budget in ["a", "b", "c"] {
        let usage = pg.usage(budget).await.unwrap();
        let counted = usage.counters.get("t").copied().unwrap_or(0);
        assert_eq!(
            counted,
            applied.get(budget).copied().unwrap_or(0),
            "{budget}"
        );
        assert!(counted <= limit, "{budget}: {counted} above the hard limit");
        assert!(
            usage.pending.is_empty(),
            "{budget}: every hold was committed or released"
        );
    }
}

/// Forgotten reservations are removed a few at a time by the budget's next reserves, so the table
/// stays bounded; forgotten ids are never answered in between.
#[tokio::test]
async fn forgotten_reservations_are_removed_by_later_reserves() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(0));
    let namespace = stowage_conformance::unique_namespace("resgc");
    let pg = PostgresBackend::open(
        &url,
        ConnectOptions::new()
            .namespace(namespace)
            .clock(clock.clone())
            .dedup_ttl_ms(100),
    )
    .await
    .unwrap();
    pg.initialize().await.unwrap();
    for i in 0..20 {
        pg.reserve("b", &ReserveRequest::new(format!("old{i}"), 10).add("t", 1))
            .await
            .unwrap();
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let count = format!(
        "SELECT count(*) FROM {}.reservations WHERE budget = 'b'",
        pg.schema_name()
    );
    assert_eq!(rows(&mut conn, &count).await, 20);
    clock.set(110); // every one expired at 10 and is forgotten at 110
    assert!(pg.reservations("b").await.unwrap().is_empty());
    assert_eq!(pg.reservation("b", "old3").await.unwrap(), None);
    for i in 0..3 {
        pg.reserve("b", &ReserveRequest::new(format!("new{i}"), 10).add("t", 1))
            .await
            .unwrap();
    }
    assert_eq!(
        rows(&mut conn, &count).await,
        3,
        "8 forgotten rows go per reserve"
    );
    assert_eq!(pg.reservations("b").await.unwrap().len(), 3);
}

async fn rows(conn: &mut sqlx::PgConnection, count: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(count)
        .fetch_one(conn)
        .await
        .unwrap()
}
