//! Reservations (SEMANTICS §4.2) and several budgets (§4.3) on Valkey, standalone and cluster:
//! seeded random sequences run on Valkey and on `MemoryBackend` driven by the same `ManualClock`,
//! and both must answer the same after every step (equal values, or errors of the same kind),
//! including `usage`, `reservation` and `reservations`. Also the round trips each call costs and
//! that purge removes what reservations store.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_conformance::rng::Rng;
use stowage_conformance::servers::valkey::{self, ValkeySettings};
use stowage_core::{
    BudgetPolicy, ConnectOptions, DimensionLimit, ManualClock, MultiReserveOutcome,
    PersistenceBackend, ReserveOutcome, ReserveRequest, UsageReport, Window, MAX_AMOUNT,
};
use stowage_valkey::ValkeyBackend;

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;
/// The dedup TTL of the handles: how long an ended reservation's id is remembered.
const REMEMBER_MS: u64 = 5_000;
const BUDGETS: [&str; 3] = ["a", "b", "c"];
const DIMENSIONS: [&str; 3] = ["t", "u", "v"];
const IDS: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
const TWO_53: u64 = 1 << 53;

fn any_id(rng: &mut Rng) -> &'static str {
    IDS[rng.index(IDS.len())]
}

fn standalone() -> Option<String> {
    common::url_or_skip("valkey", valkey::shared_url())
}

fn cluster() -> Option<String> {
    common::url_or_skip("valkey-cluster", valkey::shared_cluster_url())
}

async fn open(url: &str, now: u64) -> (Lockstep, String) {
    let clock = Arc::new(ManualClock::new(now));
    let namespace = stowage_conformance::unique_namespace("res");
    let options = ConnectOptions::new()
        .namespace(namespace.clone())
        .clock(clock.clone())
        .dedup_ttl_ms(REMEMBER_MS);
    let backend = ValkeyBackend::open(url, options.clone()).await.unwrap();
    backend.initialize().await.unwrap();
    (Lockstep::new(Arc::new(backend), clock, options), namespace)
}

/// An amount: mostly small, sometimes near 2^53 or `MAX_AMOUNT`.
fn amount(rng: &mut Rng) -> u64 {
    match rng.below(20) {
        0 => TWO_53 - 1 + rng.below(3),
        1 => MAX_AMOUNT - rng.below(3),
        2 => MAX_AMOUNT / 2 + rng.below(2),
        3 => 0,
        _ => 1 + rng.below(8),
    }
}

/// A limit: mostly small, sometimes near 2^53 or `MAX_AMOUNT`.
fn limit(rng: &mut Rng) -> Option<u64> {
    match rng.below(8) {
        0 => None,
        1 => Some(TWO_53 + rng.below(3)),
        2 => Some(MAX_AMOUNT - rng.below(2)),
        _ => Some(rng.below(30)),
    }
}

fn policy(rng: &mut Rng) -> BudgetPolicy {
    let mut policy = BudgetPolicy::new();
    for dimension in DIMENSIONS {
        if rng.chance(60) {
            let (a, b) = (limit(rng), limit(rng));
            let (soft, hard) = match (a, b) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            policy = policy.limit(dimension, DimensionLimit { soft, hard });
        }
    }
    if rng.chance(40) {
        policy = policy.window(Window::fixed(10_000, rng.below(3) * 1_000));
    }
    policy
}

fn dimensions(rng: &mut Rng) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for _ in 0..1 + rng.below(3) {
        out.insert((*rng.pick(&DIMENSIONS)).to_owned(), amount(rng));
    }
    out
}

fn request(rng: &mut Rng) -> ReserveRequest {
    let ttl = *rng.pick(&[1, 50, 1_000, 4_000, 30_000, MAX_AMOUNT]);
    ReserveRequest {
        id: any_id(rng).to_owned(),
        dimensions: dimensions(rng),
        ttl_ms: ttl,
    }
}

/// An `actual` for a commit: usually within what `request` might have reserved, sometimes not.
fn actual(rng: &mut Rng) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for _ in 0..rng.below(3) {
        let amount = match rng.below(4) {
            0 => amount(rng),
            _ => rng.below(4),
        };
        out.insert((*rng.pick(&DIMENSIONS)).to_owned(), amount);
    }
    out
}

/// 1 to 3 distinct budgets, in any order.
fn some_budgets(rng: &mut Rng) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let b = *rng.pick(&BUDGETS);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    if rng.chance(3) {
        out.push(out[0]); // a budget twice: InvalidInput on both
    }
    out
}

/// Both agree on everything a budget shows.
async fn compare(p: &Lockstep, rng: &mut Rng) {
    for budget in BUDGETS {
        p.usage(budget).await.unwrap();
        p.reservations(budget).await.unwrap();
    }
    p.reservation(BUDGETS[rng.index(3)], any_id(rng))
        .await
        .unwrap();
}

/// `steps` random calls in lockstep with the model; with `batches`, a third of the reports are
/// batches of one to eight items instead.
async fn randomized(url: String, seed: u64, steps: usize, seen: &mut Seen, batches: bool) {
    let (p, _) = open(&url, T0).await;
    let mut rng = Rng::new(seed);
    // Requests made before, so retries (same id, same request) are frequent.
    let mut made: Vec<(Vec<&str>, ReserveRequest)> = Vec::new();
    for budget in BUDGETS {
        if rng.chance(70) {
            p.set_policy(budget, &policy(&mut rng)).await.unwrap();
        }
    }
    for step in 0..steps {
        let budget = *rng.pick(&BUDGETS);
        match rng.below(16) {
            0 | 1 => {
                let mut report = UsageReport {
                    dimensions: dimensions(&mut rng),
                    dedup_key: None,
                };
                if rng.chance(40) {
                    report.dedup_key = Some(format!("k{}", rng.below(3)));
                }
                if batches && rng.chance(30) {
                    // A batch (§4.4): this report and a few more, over the budgets, with the
                    // same keys (replays and conflicts inside the batch and with earlier calls).
                    let mut items = vec![(budget.to_owned(), report)];
                    for _ in 0..rng.below(8) {
                        if rng.chance(25) {
                            let again = items[items.len() - 1].clone();
                            items.push(again); // the same item twice: a replay when keyed
                            continue;
                        }
                        let mut more = UsageReport {
                            dimensions: dimensions(&mut rng),
                            dedup_key: None,
                        };
                        if rng.chance(40) {
                            more.dedup_key = Some(format!("k{}", rng.below(3)));
                        }
                        items.push(((*rng.pick(&BUDGETS)).to_owned(), more));
                    }
                    let answers = p.report_usage_batch(&items).await;
                    seen.note("report_usage_batch", &answers);
                    for answer in answers.iter().flatten() {
                        seen.note("report_usage_batch item", answer);
                    }
                } else {
                    seen.note("report_usage", &p.report_usage(budget, &report).await);
                }
            }
            2 | 3 => {
                let request = match made.last() {
                    Some((_, old)) if rng.chance(30) => old.clone(),
                    _ => request(&mut rng),
                };
                seen.note("reserve", &p.reserve(budget, &request).await);
                made.push((vec![budget], request));
            }
            4 | 5 => {
                let (id, actual) = match made.get(rng.index(made.len().max(1))) {
                    Some((_, r)) if rng.chance(70) => {
                        let mut within = BTreeMap::new();
                        for (d, a) in &r.dimensions {
                            if rng.chance(70) {
                                within.insert(d.clone(), rng.below(a.saturating_add(1)));
                            }
                        }
                        (r.id.clone(), within)
                    }
                    _ => (any_id(&mut rng).to_owned(), actual(&mut rng)),
                };
                seen.note("commit", &p.commit(budget, &id, &actual).await);
                if rng.chance(40) {
                    seen.note("commit", &p.commit(budget, &id, &actual).await); // a retry
                }
                seen.note("check_commit", &p.check_commit(budget, &id, &actual).await);
            }
            6 => {
                seen.note("release", &p.release(budget, any_id(&mut rng)).await);
            }
            7 | 8 => {
                let (budgets, request) = match made.last() {
                    Some(old) if rng.chance(20) => old.clone(),
                    _ => (some_budgets(&mut rng), request(&mut rng)),
                };
                seen.note("reserve_all", &p.reserve_all(&budgets, &request).await);
                if rng.chance(30) {
                    seen.note("reserve_all", &p.reserve_all(&budgets, &request).await);
                    // a retry
                }
                made.push((budgets, request));
            }
            9 => {
                let (budgets, id, actual) = match made.get(rng.index(made.len().max(1))) {
                    Some((budgets, r)) if rng.chance(70) => {
                        (budgets.clone(), r.id.clone(), r.dimensions.clone())
                    }
                    _ => (
                        some_budgets(&mut rng),
                        any_id(&mut rng).to_owned(),
                        actual(&mut rng),
                    ),
                };
                seen.note("commit_all", &p.commit_all(&budgets, &id, &actual).await);
            }
            10 => {
                let budgets = some_budgets(&mut rng);
                seen.note(
                    "release_all",
                    &p.release_all(&budgets, any_id(&mut rng)).await,
                );
            }
            11 => {
                let budgets = some_budgets(&mut rng);
                let mut report = UsageReport {
                    dimensions: dimensions(&mut rng),
                    dedup_key: Some(any_id(&mut rng).to_owned()),
                };
                if rng.chance(10) {
                    report.dedup_key = None; // InvalidInput on both
                }
                seen.note(
                    "report_usage_all",
                    &p.report_usage_all(&budgets, &report).await,
                );
                if rng.chance(30) {
                    let retry = p.report_usage_all(&budgets, &report).await;
                    seen.note("report_usage_all", &retry);
                }
            }
            12 => match rng.below(4) {
                0 => {
                    p.delete_policy(budget).await.unwrap();
                }
                1 => p.reset_usage(budget).await.unwrap(),
                _ => p.set_policy(budget, &policy(&mut rng)).await.unwrap(),
            },
            _ => {
                // The clock moves forward: over expiries, id memory and windows.
                let by = *rng.pick(&[0, 1, 49, 50, 999, 1_000, 3_000, 5_000, 12_000]);
                p.at(p.now() + by);
            }
        }
        compare(&p, &mut rng).await;
        if step % 50 == 49 && rng.chance(20) {
            p.purge().await.unwrap();
            made.clear();
        }
    }
}

async fn lockstep_seeds(url: String) {
    let mut seen = Seen::default();
    for seed in 1..=6u64 {
        randomized(url.clone(), seed, 200, &mut seen, false).await;
    }
    eprintln!("{:#?}", seen.0);
    // The sequences reached the cases that matter.
    for label in [
        "reserve Reserved",
        "reserve HardBreach",
        "reserve replayed",
        "reserve Overflow",
        "commit Ok",
        "commit_all SoftBreach",
        "commit_all replayed",
        "commit replayed",
        "commit Expired",
        "commit NotFound",
        "commit Conflict",
        "commit InvalidInput",
        "release true",
        "release false",
        "reserve_all Reserved",
        "reserve_all HardBreach",
        "commit_all Ok",
        "release_all ok",
        "report_usage HardBreach",
        "report_usage_all Ok",
        "report_usage_all HardBreach",
    ] {
        assert!(seen.0.contains_key(label), "never seen: {label}");
    }
}

/// The random sequences with batches (§4.4): each batch and each of its items answers as the
/// model's, and the state stays the model's.
async fn lockstep_batches(url: String) {
    let mut seen = Seen::default();
    for seed in 1..=6u64 {
        randomized(url.clone(), seed, 200, &mut seen, true).await;
    }
    for label in [
        "report_usage_batch item Ok",
        "report_usage_batch item SoftBreach",
        "report_usage_batch item HardBreach",
        "report_usage_batch item replayed",
        "report_usage_batch item Conflict",
        "report_usage_batch item Overflow",
    ] {
        assert!(seen.0.contains_key(label), "never seen: {label}");
    }
}

/// How often each kind of answer was seen: `op Outcome`, `op replayed`, `op ErrorKind`.
#[derive(Default)]
struct Seen(BTreeMap<String, usize>);

impl Seen {
    fn note<T: std::fmt::Debug>(&mut self, op: &str, answer: &stowage_core::Result<T>) {
        let mut labels = Vec::new();
        match answer {
            Err(e) => labels.push(format!("{:?}", e.kind())),
            Ok(value) => {
                let text = format!("{value:?}");
                match text.split_once("outcome: ") {
                    Some((_, rest)) => {
                        let end = rest
                            .find(|c: char| !c.is_alphanumeric())
                            .unwrap_or(rest.len());
                        labels.push(rest[..end].to_owned());
                    }
                    None if text == "()" => labels.push("ok".to_owned()),
                    None => labels.push(text.clone()),
                }
                if text.contains("replayed: true") {
                    labels.push("replayed".to_owned());
                }
            }
        }
        for label in labels {
            *self.0.entry(format!("{op} {label}")).or_default() += 1;
        }
    }
}

/// Hand-picked steps: holds count against hard limits and in overflow checks, near 2^53 and
/// `MAX_AMOUNT`, and expire without being touched.
async fn holds_near_the_limits(url: String) {
    let (p, _) = open(&url, T0).await;
    p.set_policy(
        "a",
        &BudgetPolicy::new().limit("t", DimensionLimit::hard(TWO_53 + 1)),
    )
    .await
    .unwrap();
    let held = ReserveRequest::new("h", 100).add("t", TWO_53);
    assert!(p.reserve("a", &held).await.unwrap().outcome.is_reserved());
    // 2^53 + 2 > 2^53 + 1: refused (as doubles, 2^53 + 1 and 2^53 + 2 would not compare right).
    let receipt = p
        .report_usage("a", &UsageReport::new().add("t", 2))
        .await
        .unwrap();
    assert!(!receipt.outcome.is_applied());
    p.report_usage("a", &UsageReport::new().add("t", 1))
        .await
        .unwrap();
    assert_eq!(p.usage("a").await.unwrap().pending["t"], TWO_53);
    // Overflow counts pending too.
    let big = ReserveRequest::new("m", 10).add("u", MAX_AMOUNT);
    assert!(p.reserve("b", &big).await.unwrap().outcome.is_reserved());
    p.report_usage("b", &UsageReport::new().add("u", 1))
        .await
        .unwrap_err();
    p.reserve("b", &ReserveRequest::new("n", 10).add("u", 1))
        .await
        .unwrap_err();
    // Expired holds stop counting at expires_at, untouched.
    p.at(T0 + 10);
    assert!(p.usage("b").await.unwrap().pending.is_empty());
    assert_eq!(p.usage("a").await.unwrap().pending["t"], TWO_53);
    p.at(T0 + 100);
    assert!(p.usage("a").await.unwrap().pending.is_empty());
    let outcome = p
        .reserve("a", &ReserveRequest::new("x", 10).add("t", TWO_53 + 1))
        .await
        .unwrap()
        .outcome;
    assert!(matches!(outcome, ReserveOutcome::HardBreach(_)));
    // Commit after expiry: Expired; the id is remembered until expiry + REMEMBER_MS.
    p.commit("a", "h", &BTreeMap::new()).await.unwrap_err();
    p.at(T0 + 100 + REMEMBER_MS);
    assert!(p.reservation("a", "h").await.unwrap().is_none());
    p.reserve("a", &ReserveRequest::new("h", 100).add("t", 1))
        .await
        .unwrap();
    p.reservations("a").await.unwrap();
    p.reservations("b").await.unwrap();
}

/// A calendar window whose bounds cannot be computed (after year 9999): every call meets the
/// error exactly where the model does — after a replay, after the checks of a commit, on the
/// budget whose turn it is in a sequence over several.
async fn windows_that_cannot_be_computed(url: String) {
    let (p, _) = open(&url, T0).await;
    stowage_conformance::lockstep::windows_that_cannot_be_computed(&p).await;
}

/// Concurrent holds never overshoot a hard limit; concurrent holds over several budgets are held
/// on every budget or none (all at once on a standalone server, one script each; composed on a
/// cluster, where a caller may be refused because of another's passing holds).
async fn concurrent_holds_never_overshoot(url: String) {
    let (p, _) = open(&url, T0).await;
    let hard = |limit| BudgetPolicy::new().limit("t", DimensionLimit::hard(limit));
    p.set_policy("a", &hard(10)).await.unwrap();
    p.set_policy("b", &hard(5)).await.unwrap();
    let backend = p.backend().clone();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let single = ReserveRequest::new(format!("c{i}"), 60_000).add("t", 1);
            let multi = ReserveRequest::new(format!("m{i}"), 60_000).add("t", 1);
            let (single, multi) = if i % 2 == 0 {
                let multi = backend.reserve_all(&["a", "b"], &multi).await.unwrap();
                (backend.reserve("a", &single).await.unwrap(), multi)
            } else {
                let single = backend.reserve("a", &single).await.unwrap();
                (
                    single,
                    backend.reserve_all(&["a", "b"], &multi).await.unwrap(),
                )
            };
            (
                single.outcome.is_reserved(),
                matches!(multi.outcome, MultiReserveOutcome::Reserved),
            )
        }));
    }
    let (mut single, mut multi) = (0, 0);
    for task in tasks {
        let (s, m) = task.await.unwrap();
        single += u64::from(s);
        multi += u64::from(m);
    }
    let pending = |budget: &'static str| {
        let backend = backend.clone();
        async move {
            let usage = backend.usage(budget).await.unwrap();
            usage.pending.get("t").copied().unwrap_or(0)
        }
    };
    assert!(
        single + multi <= 10 && (1..=5).contains(&multi),
        "{single} + {multi}"
    );
    assert_eq!(pending("a").await, single + multi);
    assert_eq!(pending("b").await, multi);
    if backend.capabilities().atomic_multi_budget {
        assert_eq!(single + multi, 10);
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod standalone { $(
            #[tokio::test]
            async fn $name() {
                if let Some(url) = super::standalone() { super::$name(url).await }
            }
        )* }
        mod cluster { $(
            #[tokio::test]
            async fn $name() {
                if let Some(url) = super::cluster() { super::$name(url).await }
            }
        )* }
    };
}

on_both!(
    lockstep_seeds,
    lockstep_batches,
    holds_near_the_limits,
    concurrent_holds_never_overshoot,
    windows_that_cannot_be_computed,
);

/// EVALSHA calls the server has counted.
async fn evalsha_calls(raw: &common::RawClient) -> u64 {
    let info: String = raw
        .query(redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn each_call_is_one_round_trip_on_a_standalone_server() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let (p, namespace) = open(&server.url(), T0).await;
    let raw = common::RawClient::open(&server.url()).await;
    let backend = p.backend().clone();
    assert!(backend.capabilities().atomic_multi_budget);
    let policy = BudgetPolicy::new()
        .limit("t", DimensionLimit::both(5, 10))
        .window(Window::fixed(3_600_000, 0));
    backend.set_policy("a", &policy).await.unwrap();
    backend.set_policy("b", &policy).await.unwrap();
    let request = ReserveRequest::new("r", 1_000).add("t", 3);
    let actual = BTreeMap::from([("t".to_owned(), 2)]);
    let mut trips = Vec::new();
    macro_rules! trips {
        ($call:expr) => {{
            let before = evalsha_calls(&raw).await;
            let answer = $call.await;
            trips.push(evalsha_calls(&raw).await - before);
            answer
        }};
    }
    trips!(backend.reserve("a", &request)).unwrap();
    trips!(backend.commit("a", "r", &actual)).unwrap();
    trips!(backend.reserve("a", &ReserveRequest::new("s", 9).add("t", 1))).unwrap();
    assert!(trips!(backend.release("a", "s")).unwrap());
    trips!(backend.reserve_all(&["b", "a"], &ReserveRequest::new("m", 9).add("t", 1))).unwrap();
    trips!(backend.commit_all(&["a", "b"], "m", &actual)).unwrap_err();
    trips!(backend.release_all(&["a", "b"], "m")).unwrap();
    trips!(backend.report_usage_all(&["a", "b"], &UsageReport::new().add("t", 1).dedup_key("k")))
        .unwrap();
    trips!(backend.reservation("a", "r")).unwrap();
    trips!(backend.reservations("a")).unwrap();
    trips!(backend.usage("a")).unwrap();
    assert_eq!(trips, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1]);
    // Right after a rollover: a reserve writes no counters and needs no bounds (one round trip,
    // the passed window's counters count as zero); a commit rolls the window (two), after which
    // it is current again (one).
    trips.clear();
    p.at(T0 + 2 * 3_600_000);
    let fresh = |id: &str| ReserveRequest::new(id, 1_000).add("t", 3);
    let receipt = trips!(backend.reserve("a", &fresh("x"))).unwrap();
    assert!(
        receipt.outcome.is_reserved(),
        "the passed window's usage counts as zero"
    );
    let receipt = trips!(backend.reserve_all(&["a", "b"], &fresh("y"))).unwrap();
    assert!(matches!(receipt.outcome, MultiReserveOutcome::Reserved));
    trips!(backend.commit("a", "x", &actual)).unwrap();
    trips!(backend.reserve("a", &fresh("z"))).unwrap();
    trips!(backend.commit_all(&["a", "b"], "y", &actual)).unwrap();
    assert_eq!(trips, [1, 1, 2, 1, 2]);
    assert_eq!(backend.usage("a").await.unwrap().counters["t"], 4);
    // Purge removes every key reservations wrote (keys spell the namespace by its id).
    let id = common::key_namespace(&server.url(), &namespace).await;
    let pattern = format!("stw:{{????}}:?:{}.{id}*", id.len());
    let keys: Vec<String> = raw.query(redis::cmd("KEYS").arg(&pattern)).await.unwrap();
    assert!(keys.len() >= 8, "{keys:?}");
    p.purge().await.unwrap();
    let keys: Vec<String> = raw.query(redis::cmd("KEYS").arg(&pattern)).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_cluster_composes_several_budgets() {
    let Some(url) = cluster() else {
        return;
    };
    let (p, _) = open(&url, T0).await;
    assert!(!p.backend().capabilities().atomic_multi_budget);
    let request = ReserveRequest::new("m", 100).add("t", 4);
    let receipt = p.reserve_all(&["c", "a", "b"], &request).await.unwrap();
    assert!(!receipt.replayed);
    p.commit_all(&["a", "b", "c"], "m", &request.dimensions)
        .await
        .unwrap();
    for budget in BUDGETS {
        assert_eq!(p.usage(budget).await.unwrap().counters["t"], 4);
    }
}
