//! The randomized differential test: seeded operation sequences on a backend and on `MemoryBackend` must agree step by step.
//!
//! Four operations in ten are reservations and several-budget calls (SEMANTICS §4.2, §4.3, see
//! [`random_reservation_op`]): reserves with fresh ids, retried requests and other requests under
//! a known id, commits with right and wrong `actual`s, releases, `check_commit`, `reservation(s)`,
//! and `reserve_all` / `commit_all` / `release_all` / `report_usage_all` over 1–3 budgets (now and
//! then one twice or an invalid one); clock moves by the reservation TTLs cross expiries exactly,
//! and those by the dedup TTLs make ids forgotten.
//!
//! Policies are windowed half of the time (fixed windows of a few seconds with offsets, a
//! calendar day in UTC and in America/New_York: see [`WINDOWS`]), and the clock moves to, or just
//! before, the end of a window now and then, so that reports, usage and policy changes cross
//! window boundaries (the clock's moves use `Window::bounds_at`; the model answers for the rest).
//!
//! Each sequence draws its dedup TTLs from [`TTLS`]; on a `shared` backend it opens a second
//! handle on the same namespace with the second TTL (the model side: [`MemoryBackend::share`],
//! same clock) and sends every operation through one of the two at random. Names include
//! 256-byte ones, U+10FFFF, and names that share a prefix ending in the highest code points.
//! At the end it compares the full state (reservations of every budget included), re-sends the
//! last report of every (budget, dedup key), the last reserve of every (budget, id) and the last
//! `report_usage_all` of every (budgets, key) through the handle that sent it and compares the
//! answers (replayed, fresh or conflict), compares the full state again, and purges the
//! sequence's namespace.
//!
//! Size and seed come from the environment: `STOWAGE_DIFF_SEQUENCES` (default 24),
//! `STOWAGE_DIFF_OPS` (operations per sequence, default 60) and `STOWAGE_DIFF_SEED` (the first
//! sequence's seed; sequence i uses seed + i). A failure prints the seed that reproduces it with
//! `STOWAGE_DIFF_SEQUENCES=1`, and the index of the operation that differed.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::{json, Value};
use stowage_core::{
    Backend, BudgetPolicy, BudgetUsage, Clock, DimensionLimit, ErrorKind, ManualClock,
    MemoryBackend, MultiReceipt, MultiReserveReceipt, QueryParams, Reservation, ReserveReceipt,
    ReserveRequest, Result, StoreResult, StoredValue, UsageReceipt, UsageReport, Window,
    MAX_AMOUNT,
};
use stowage_testkit::rng::Rng;

use crate::context::START_MS;
use crate::Ctx;

/// The dedup TTLs a sequence draws its handles' TTLs from: 1 ms, 1 s, 24 h and `MAX_AMOUNT`.
pub const TTLS: &[u64] = &[1, 1_000, 86_400_000, MAX_AMOUNT];

/// The names sequences use. The first [`COMMON`] of each list are drawn most of the time, so that
/// keys, budgets and dimensions repeat within a sequence; the others are edge cases.
struct Vocabulary {
    budgets: Vec<String>,
    dimensions: Vec<String>,
    keys: Vec<String>,
    /// Reservation ids; "k1" is a dedup key too (the spaces are separate).
    ids: Vec<String>,
    records: Vec<String>,
    patterns: Vec<String>,
    /// Invalid names: empty, 257 bytes, with NUL.
    invalid: Vec<String>,
}

/// How many names at the head of a list are the common ones.
const COMMON: usize = 3;

const MAX_CHAR: char = '\u{10FFFF}';

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn max_chars(n: usize) -> String {
    std::iter::repeat_n(MAX_CHAR, n).collect()
}

static VOCABULARY: LazyLock<Vocabulary> = LazyLock::new(|| {
    let long = |first: &str, fill: &str| format!("{first}{}", fill.repeat(256 - first.len()));
    let mut budgets = owned(&["b", "b:x", "B", "b:", "{b}"]);
    budgets.extend([long("b", "x"), max_chars(64)]);
    let mut dimensions = owned(&["t", "t:x", "T", "x:t", "%", "é\u{10FFFF}"]);
    dimensions.push(long("t", "t"));
    let mut keys = owned(&["k1", "k2", "k:1", "\u{10FFFF}"]);
    keys.push(long("k", "k"));
    let mut ids = owned(&["r1", "k1", "r2", "r:1", "\u{10FFFF}"]);
    ids.push(long("r", "r"));
    // Records that share prefixes ending in the highest code points (U+10FFFF has no successor,
    // U+D7FF is followed by U+E000), so that a backend narrowing a pattern by its literal prefix
    // must get the upper bound right; and 256-byte names.
    let mut records = owned(&[
        "r",
        "r:1",
        "r1",
        "s",
        "r*",
        "é",
        "é\u{10FFFF}",
        "z\u{10FFFF}",
        "z\u{10FFFF}\u{10FFFF}",
        "z\u{10FFFF}a",
        "{",
        "z\u{D7FF}",
        "z\u{E000}",
    ]);
    records.extend([long("r", "x"), max_chars(64), max_chars(63)]);
    let mut patterns = owned(&[
        "*",
        "r*",
        "r",
        "*1",
        "r:*",
        "r*1",
        "é*",
        "",
        "s",
        "*:*",
        "r\\*",
        "?",
        "z*",
        "z\u{10FFFF}*",
        "z\u{10FFFF}\u{10FFFF}*",
        "z\u{D7FF}*",
        "é\u{10FFFF}*",
        "\u{10FFFF}*",
        "*\u{10FFFF}",
        "*\u{10FFFF}*a",
        "rx*",
    ]);
    patterns.extend([
        long("r", "x"),
        format!("{}*", long("r", "x")),
        max_chars(64),
        format!("{}*", max_chars(63)),
        format!("{}*", max_chars(64)),
    ]);
    Vocabulary {
        budgets,
        dimensions,
        keys,
        ids,
        records,
        patterns,
        invalid: vec![String::new(), "x".repeat(257), "a\0b".to_owned()],
    }
});

/// The windows policies draw from: fixed ones of a few seconds (with offsets, one right below
/// its period) and a calendar day in UTC and in America/New_York.
pub static WINDOWS: LazyLock<Vec<Window>> = LazyLock::new(|| {
    vec![
        Window::fixed(2_000, 0),
        Window::fixed(3_000, 1_000),
        Window::fixed(5_000, 4_999),
        Window::day("UTC"),
        Window::day("America/New_York"),
    ]
});

/// The share (percent) of a sequence's operations drawn from reservations and several budgets.
const RESERVATION_SHARE: u64 = 40;

const DELTAS: &[u64] = &[0, 1, 1, 2, 3, 5, 8, 13, 100, MAX_AMOUNT / 2, MAX_AMOUNT];
const LIMITS: &[u64] = &[0, 1, 5, 10, 20, 50, 100, MAX_AMOUNT];
const TIMESTAMPS: &[u64] = &[0, 1, 2, 3, 5, 8, 13, 9_007_199_254_740_993, MAX_AMOUNT];

/// Sequence count, operations per sequence and first seed, read from the environment.
#[derive(Debug, Clone, Copy)]
pub struct DiffConfig {
    /// How many sequences.
    pub sequences: u64,
    /// Operations per sequence.
    pub ops: usize,
    /// The seed of sequence 0; sequence i uses `seed + i`.
    pub seed: u64,
}

impl DiffConfig {
    /// Reads `STOWAGE_DIFF_SEQUENCES`, `STOWAGE_DIFF_OPS` and `STOWAGE_DIFF_SEED`.
    pub fn from_env() -> Self {
        use stowage_testkit::env_number as var;
        DiffConfig {
            sequences: var("STOWAGE_DIFF_SEQUENCES", 24),
            ops: usize::try_from(var("STOWAGE_DIFF_OPS", 60)).expect("ops fit usize"),
            seed: var("STOWAGE_DIFF_SEED", 0x5707_A6E0),
        }
    }
}

/// One operation of a sequence.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Op {
    SetPolicy(String, BudgetPolicy),
    Policy(String),
    DeletePolicy(String),
    Report(String, UsageReport),
    Usage(String),
    Reset(String),
    Store(String, Value, u64),
    StoreIdempotent(String, Value, u64, String),
    Query(String, QueryParams),
    Cleanup(u64),
    Reserve(String, ReserveRequest),
    Commit(String, String, BTreeMap<String, u64>),
    CheckCommit(String, String, BTreeMap<String, u64>),
    Release(String, String),
    Reservation(String, String),
    Reservations(String),
    ReserveAll(Vec<String>, ReserveRequest),
    CommitAll(Vec<String>, String, BTreeMap<String, u64>),
    ReleaseAll(Vec<String>, String),
    ReportAll(Vec<String>, UsageReport),
    /// `report_usage_batch` of these items.
    Batch(Vec<(String, UsageReport)>),
    /// Moves the shared clock forward by this many milliseconds, stopping at `MAX_AMOUNT`.
    Advance(u64),
    /// Moves the shared clock forward to this time, if it is not there yet (the end of time).
    AdvanceTo(u64),
    /// Moves the shared clock to this many milliseconds before the end of the window (of this
    /// kind) containing now (0: onto the next window's start); nothing if there is no such window.
    AdvanceToWindowEnd(Window, u64),
}

/// An operation's answer, with errors reduced to their kind.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Answer {
    Unit,
    Bool(bool),
    Count(u64),
    Store(StoreResult),
    Policy(Option<BudgetPolicy>),
    Receipt(UsageReceipt),
    Usage(BudgetUsage),
    Rows(Vec<StoredValue>),
    Reserve(ReserveReceipt),
    MultiReserve(MultiReserveReceipt),
    Multi(MultiReceipt),
    Reservation(Option<Reservation>),
    Reservations(Vec<Reservation>),
    /// A batch's answers, item by item (`Receipt` or `Failed`).
    Batch(Vec<Answer>),
    Failed(ErrorKind),
}

fn answer<T>(result: Result<T>, wrap: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(v) => wrap(v),
        Err(e) => Answer::Failed(e.kind()),
    }
}

/// Mostly one of the first [`COMMON`] names, sometimes any of `names`, now and then an invalid
/// name (to check that both sides reject it alike).
fn random_name(rng: &mut Rng, names: &[String]) -> String {
    let names = if rng.chance(70) {
        &names[..COMMON]
    } else {
        names
    };
    any_name(rng, names)
}

/// Any of `names`, or now and then an invalid name.
fn any_name(rng: &mut Rng, names: &[String]) -> String {
    if rng.chance(2) {
        rng.pick(&VOCABULARY.invalid).clone()
    } else {
        rng.pick(names).clone()
    }
}

fn random_limit(rng: &mut Rng) -> Option<u64> {
    if rng.chance(40) {
        None
    } else {
        Some(*rng.pick(LIMITS))
    }
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(rng.below(3)),
        1 => json!({"temp": 21.5, "ok": true}),
        2 => json!([1, "two", null]),
        3 => json!(0.1),
        _ => json!("text"),
    }
}

/// The clock moves of a sequence whose handles have dedup TTLs `ttls`: small steps (some across
/// the fixed windows of [`WINDOWS`]), and steps
/// just below, at and just above each TTL short enough to leave the clock far from the end.
pub fn advance_steps(ttls: &[u64]) -> Vec<u64> {
    let mut steps = vec![1, 10, 1_500, 2_000];
    for ttl in ttls.iter().filter(|ttl| **ttl < MAX_AMOUNT / 2) {
        steps.extend([ttl - 1, *ttl, ttl + 1]);
    }
    steps
}

/// A random operation drawn from every part of the API; clock moves from `advance_steps`.
pub fn random_op(rng: &mut Rng, advance_steps: &[u64]) -> Op {
    let words = &*VOCABULARY;
    match rng.below(100) {
        0..=7 => {
            let mut policy = BudgetPolicy::new();
            for _ in 0..rng.below(4) {
                let limit = DimensionLimit {
                    hard: random_limit(rng),
                    soft: random_limit(rng),
                };
                policy = policy.limit(random_name(rng, &words.dimensions), limit);
            }
            if rng.chance(50) {
                policy = policy.window(rng.pick(&WINDOWS).clone());
            }
            Op::SetPolicy(random_name(rng, &words.budgets), policy)
        }
        8..=9 => Op::Policy(random_name(rng, &words.budgets)),
        10..=12 => Op::DeletePolicy(random_name(rng, &words.budgets)),
        13..=44 => Op::Report(random_name(rng, &words.budgets), random_report(rng)),
        45..=49 => {
            // 0 to 8 items, now and then one sent twice (a replay or, changed, a conflict
            // inside the batch).
            let mut items: Vec<(String, UsageReport)> = Vec::new();
            for _ in 0..rng.below(9) {
                if !items.is_empty() && rng.chance(20) {
                    let (budget, mut report) = rng.pick(&items).clone();
                    if rng.chance(30) {
                        report = report.add(random_name(rng, &words.dimensions), 1);
                    }
                    items.push((budget, report));
                } else {
                    items.push((random_name(rng, &words.budgets), random_report(rng)));
                }
            }
            Op::Batch(items)
        }
        50..=55 => Op::Usage(random_name(rng, &words.budgets)),
        56..=58 => Op::Reset(random_name(rng, &words.budgets)),
        59..=68 => Op::Store(
            any_name(rng, &words.records),
            random_value(rng),
            *rng.pick(TIMESTAMPS),
        ),
        69..=78 => Op::StoreIdempotent(
            any_name(rng, &words.records),
            random_value(rng),
            *rng.pick(TIMESTAMPS),
            random_name(rng, &words.keys),
        ),
        79..=88 => {
            let mut params = QueryParams::new();
            if rng.chance(30) {
                params = params.limit_per_record(usize::try_from(rng.below(4)).expect("small"));
            }
            if rng.chance(30) {
                params = params.start_time(*rng.pick(TIMESTAMPS));
            }
            if rng.chance(30) {
                params = params.end_time(*rng.pick(TIMESTAMPS));
            }
            Op::Query(rng.pick(&words.patterns).clone(), params)
        }
        89..=91 => Op::Cleanup(*rng.pick(TIMESTAMPS)),
        _ if rng.chance(3) => Op::AdvanceTo(*rng.pick(&[MAX_AMOUNT - 1, MAX_AMOUNT])),
        _ if rng.chance(50) => {
            Op::AdvanceToWindowEnd(rng.pick(&WINDOWS).clone(), *rng.pick(&[0, 0, 1]))
        }
        _ => Op::Advance(*rng.pick(advance_steps)),
    }
}

/// A report of 0 to 3 dimensions (now and then none, or a delta above `MAX_AMOUNT`), keyed
/// six times in ten.
fn random_report(rng: &mut Rng) -> UsageReport {
    let words = &*VOCABULARY;
    let mut report = UsageReport::new();
    let dims = if rng.chance(3) { 0 } else { 1 + rng.below(3) };
    for _ in 0..dims {
        let delta = if rng.chance(2) {
            MAX_AMOUNT + 1
        } else {
            *rng.pick(DELTAS)
        };
        report = report.add(random_name(rng, &words.dimensions), delta);
    }
    if rng.chance(60) {
        report = report.dedup_key(random_name(rng, &words.keys));
    }
    report
}

/// The TTLs reservations draw from (the short ones expire within a sequence; clock moves by them
/// cross the expiries exactly).
pub const RESERVE_TTLS: &[u64] = &[1, 10, 1_000, 1_500, 2_000, 60_000, MAX_AMOUNT];

/// The reserve requests a sequence made so far and the budgets they went to, so that later
/// operations retry them (the same request), misuse their ids (another request), and commit or
/// release them, on their budgets, with right or wrong amounts.
#[derive(Debug, Default)]
pub struct Reservations {
    made: Vec<(Vec<String>, ReserveRequest)>,
}

impl Reservations {
    /// The last request made with `id`, if any.
    fn request_of(&self, id: &str) -> Option<&ReserveRequest> {
        self.made.iter().rev().map(|(_, r)| r).find(|r| r.id == id)
    }

    /// Where to send a call about an id, and the id: mostly the budgets (`several`) or one budget
    /// of an earlier reservation and its id, else random ones.
    fn target(&self, rng: &mut Rng, several: bool) -> (Vec<String>, String) {
        if self.made.is_empty() || rng.chance(25) {
            let budgets = if several {
                random_budgets(rng)
            } else {
                vec![reservation_budget(rng)]
            };
            let id = if self.made.is_empty() || rng.chance(50) {
                random_name(rng, &VOCABULARY.ids)
            } else {
                rng.pick(&self.made).1.id.clone()
            };
            return (budgets, id);
        }
        let (budgets, request) = rng.pick(&self.made);
        let mut budgets = budgets.clone();
        if several {
            if rng.chance(15) {
                budgets.push(reservation_budget(rng));
            }
        } else {
            budgets = vec![rng.pick(&budgets).clone()];
        }
        (budgets, request.id.clone())
    }

    /// A reserve on one budget (`several`: on 1–3): a retry of an earlier one, an earlier id with
    /// another request, or a new request.
    fn reserve(&mut self, rng: &mut Rng, several: bool) -> (Vec<String>, ReserveRequest) {
        let (budgets, request) = if !self.made.is_empty() && rng.chance(40) {
            let (budgets, earlier) = rng.pick(&self.made).clone();
            let budgets = if several {
                budgets
            } else {
                vec![rng.pick(&budgets).clone()]
            };
            if rng.chance(75) {
                return (budgets, earlier);
            }
            let mut other = fresh_request(rng);
            other.id = earlier.id;
            (budgets, other)
        } else if several {
            (random_budgets(rng), fresh_request(rng))
        } else {
            (vec![reservation_budget(rng)], fresh_request(rng))
        };
        self.made.push((budgets.clone(), request.clone()));
        (budgets, request)
    }

    /// An `actual` for `id`: within its request most of the time, else above it or with another
    /// dimension (or anything, for an id never reserved).
    fn actual(&self, rng: &mut Rng, id: &str) -> BTreeMap<String, u64> {
        let Some(made) = self.request_of(id) else {
            return random_amounts(rng, 0);
        };
        let mut actual = BTreeMap::new();
        for (dimension, amount) in &made.dimensions {
            if rng.chance(75) {
                let within = if rng.chance(50) {
                    *amount
                } else {
                    rng.below(amount.saturating_add(1)).min(*amount)
                };
                actual.insert(dimension.clone(), within);
            }
        }
        if rng.chance(15) {
            match actual.iter_mut().next() {
                Some((_, amount)) if rng.chance(50) => *amount = amount.saturating_add(1),
                _ => {
                    actual.insert(random_name(rng, &VOCABULARY.dimensions), 1);
                }
            }
        }
        actual
    }
}

/// A small report on the common dimensions (where holds and tight policies are), unkeyed.
fn small_report(rng: &mut Rng) -> UsageReport {
    let mut report = UsageReport::new();
    for dimension in &VOCABULARY.dimensions[..COMMON] {
        if rng.chance(50) {
            report = report.add(dimension.clone(), rng.below(8));
        }
    }
    if report.dimensions.is_empty() {
        report = report.add(VOCABULARY.dimensions[0].clone(), 1);
    }
    report
}

/// A policy of hard (and some soft) limits on the common dimensions, small enough that holds
/// and reports run into them.
fn tight_policy(rng: &mut Rng) -> BudgetPolicy {
    let mut policy = BudgetPolicy::new();
    for dimension in &VOCABULARY.dimensions[..COMMON] {
        if rng.chance(80) {
            let hard = *rng.pick(&[0, 3, 5, 10, 20]);
            let soft = Some(hard / 2).filter(|_| rng.chance(50));
            policy = policy.limit(
                dimension.clone(),
                DimensionLimit {
                    hard: Some(hard),
                    soft,
                },
            );
        }
    }
    if rng.chance(30) {
        policy = policy.window(rng.pick(&WINDOWS).clone());
    }
    policy
}

/// 0 to 3 random dimensions (at least `min`), amounts from [`DELTAS`], now and then one above
/// `MAX_AMOUNT`.
fn random_amounts(rng: &mut Rng, min: u64) -> BTreeMap<String, u64> {
    let mut amounts = BTreeMap::new();
    for _ in 0..min.max(rng.below(4)) {
        let amount = if rng.chance(2) {
            MAX_AMOUNT + 1
        } else if rng.chance(50) {
            rng.below(6)
        } else {
            *rng.pick(DELTAS)
        };
        amounts.insert(random_name(rng, &VOCABULARY.dimensions), amount);
    }
    amounts
}

/// A new reserve request (now and then invalid: no dimension, a TTL of 0, an invalid id).
fn fresh_request(rng: &mut Rng) -> ReserveRequest {
    let min = if rng.chance(3) { 0 } else { 1 };
    let ttl = if rng.chance(2) {
        0
    } else {
        *rng.pick(RESERVE_TTLS)
    };
    ReserveRequest {
        id: random_name(rng, &VOCABULARY.ids),
        dimensions: random_amounts(rng, min),
        ttl_ms: ttl,
    }
}

/// A budget for a reservation call: one of the common budgets nine times in ten (so that holds,
/// policies and reports meet), else any (or an invalid one).
fn reservation_budget(rng: &mut Rng) -> String {
    if rng.chance(90) {
        rng.pick(&VOCABULARY.budgets[..COMMON]).clone()
    } else {
        any_name(rng, &VOCABULARY.budgets)
    }
}

/// 1 to 3 budgets, now and then one twice or an invalid one.
fn random_budgets(rng: &mut Rng) -> Vec<String> {
    let mut budgets: Vec<String> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let budget = reservation_budget(rng);
        if !budgets.contains(&budget) || rng.chance(10) {
            budgets.push(budget);
        }
    }
    budgets
}

/// A random reservation or several-budget operation (§4.2, §4.3), or a clock move by a
/// reservation TTL.
pub fn random_reservation_op(rng: &mut Rng, made: &mut Reservations) -> Op {
    match rng.below(100) {
        0..=21 => {
            let (mut budgets, request) = made.reserve(rng, false);
            Op::Reserve(budgets.remove(0), request)
        }
        22..=37 => {
            let (mut budgets, id) = made.target(rng, false);
            let actual = made.actual(rng, &id);
            Op::Commit(budgets.remove(0), id, actual)
        }
        38..=41 => {
            let (mut budgets, id) = made.target(rng, false);
            let actual = made.actual(rng, &id);
            Op::CheckCommit(budgets.remove(0), id, actual)
        }
        42..=50 => {
            let (mut budgets, id) = made.target(rng, false);
            Op::Release(budgets.remove(0), id)
        }
        51..=53 => {
            let (mut budgets, id) = made.target(rng, false);
            Op::Reservation(budgets.remove(0), id)
        }
        54..=55 => Op::Reservations(reservation_budget(rng)),
        56..=65 => {
            let (budgets, request) = made.reserve(rng, true);
            Op::ReserveAll(budgets, request)
        }
        66..=73 => {
            let (budgets, id) = made.target(rng, true);
            let actual = made.actual(rng, &id);
            Op::CommitAll(budgets, id, actual)
        }
        74..=77 => {
            let (budgets, id) = made.target(rng, true);
            Op::ReleaseAll(budgets, id)
        }
        78..=86 => {
            let (budgets, id) = made.target(rng, true);
            let mut report = UsageReport {
                dimensions: random_amounts(rng, 1),
                dedup_key: None,
            };
            if rng.chance(90) {
                // A report over several budgets reserves under its key: ids and keys mix.
                report.dedup_key = Some(id);
            }
            Op::ReportAll(budgets, report)
        }
        87..=93 => Op::SetPolicy(reservation_budget(rng), tight_policy(rng)),
        94..=95 => Op::Report(reservation_budget(rng), small_report(rng)),
        96..=97 => {
            // Small reports where holds are, some keyed with reservation ids: a batch counts
            // holds item by item.
            let items = (0..1 + rng.below(6))
                .map(|_| {
                    let mut report = small_report(rng);
                    if rng.chance(30) {
                        report.dedup_key = Some(made.target(rng, false).1);
                    }
                    (reservation_budget(rng), report)
                })
                .collect();
            Op::Batch(items)
        }
        _ => Op::Advance(*rng.pick(&RESERVE_TTLS[..RESERVE_TTLS.len() - 1])),
    }
}

/// Applies `op` to `backend` (or to the shared clock) and reduces the result to an [`Answer`].
pub async fn apply(backend: &dyn Backend, clock: &ManualClock, op: &Op) -> Answer {
    match op {
        Op::SetPolicy(b, p) => answer(backend.set_policy(b, p).await, |_| Answer::Unit),
        Op::Policy(b) => answer(backend.policy(b).await, Answer::Policy),
        Op::DeletePolicy(b) => answer(backend.delete_policy(b).await, Answer::Bool),
        Op::Report(b, r) => answer(backend.report_usage(b, r).await, Answer::Receipt),
        Op::Usage(b) => answer(backend.usage(b).await, Answer::Usage),
        Op::Reset(b) => answer(backend.reset_usage(b).await, |_| Answer::Unit),
        Op::Store(n, v, t) => answer(backend.store(n, v, *t).await, |_| Answer::Unit),
        Op::StoreIdempotent(n, v, t, k) => {
            answer(backend.store_idempotent(n, v, *t, k).await, Answer::Store)
        }
        Op::Query(p, params) => answer(backend.query(p, *params).await, Answer::Rows),
        Op::Cleanup(t) => answer(backend.cleanup(*t).await, Answer::Count),
        Op::Reserve(b, r) => answer(backend.reserve(b, r).await, Answer::Reserve),
        Op::Commit(b, id, actual) => answer(backend.commit(b, id, actual).await, Answer::Receipt),
        Op::CheckCommit(b, id, actual) => {
            answer(backend.check_commit(b, id, actual).await, |_| Answer::Unit)
        }
        Op::Release(b, id) => answer(backend.release(b, id).await, Answer::Bool),
        Op::Reservation(b, id) => answer(backend.reservation(b, id).await, Answer::Reservation),
        Op::Reservations(b) => answer(backend.reservations(b).await, Answer::Reservations),
        Op::ReserveAll(budgets, r) => {
            let budgets: Vec<&str> = budgets.iter().map(String::as_str).collect();
            answer(backend.reserve_all(&budgets, r).await, Answer::MultiReserve)
        }
        Op::CommitAll(budgets, id, actual) => {
            let budgets: Vec<&str> = budgets.iter().map(String::as_str).collect();
            answer(
                backend.commit_all(&budgets, id, actual).await,
                Answer::Multi,
            )
        }
        Op::ReleaseAll(budgets, id) => {
            let budgets: Vec<&str> = budgets.iter().map(String::as_str).collect();
            answer(backend.release_all(&budgets, id).await, |_| Answer::Unit)
        }
        Op::ReportAll(budgets, r) => {
            let budgets: Vec<&str> = budgets.iter().map(String::as_str).collect();
            answer(backend.report_usage_all(&budgets, r).await, Answer::Multi)
        }
        Op::Batch(items) => answer(backend.report_usage_batch(items).await, |answers| {
            Answer::Batch(
                answers
                    .into_iter()
                    .map(|a| answer(a, Answer::Receipt))
                    .collect(),
            )
        }),
        Op::Advance(ms) => {
            clock.set(clock.now_ms().saturating_add(*ms).min(MAX_AMOUNT));
            Answer::Unit
        }
        Op::AdvanceTo(at) => {
            clock.set(clock.now_ms().max(*at));
            Answer::Unit
        }
        Op::AdvanceToWindowEnd(window, before) => {
            let now = clock.now_ms();
            if let Ok(bounds) = window.bounds_at(now) {
                clock.set(bounds.end_ms.saturating_sub(*before).max(now));
            }
            Answer::Unit
        }
    }
}

/// Everything observable in a namespace: policies, usage (pending included) and reservations of
/// every budget, every row.
async fn final_state(backend: &dyn Backend) -> Vec<Answer> {
    let mut state = Vec::new();
    for budget in &VOCABULARY.budgets {
        state.push(answer(backend.policy(budget).await, Answer::Policy));
        state.push(answer(backend.usage(budget).await, Answer::Usage));
        state.push(answer(
            backend.reservations(budget).await,
            Answer::Reservations,
        ));
    }
    state.push(answer(
        backend.query("*", QueryParams::default()).await,
        Answer::Rows,
    ));
    state
}

/// What a sequence ran, for its failure message: seed, handles and the operations so far.
struct Trace {
    seed: u64,
    /// The dedup TTL of each handle.
    ttls: Vec<u64>,
    log: Vec<String>,
}

impl Trace {
    fn push(&mut self, step: &str, via: usize, op: &Op) {
        self.log.push(format!("{step}: via handle {via}: {op:?}"));
    }

    fn differs(&self, step: &str, want: &Answer, got: &Answer) -> String {
        let seed = self.seed;
        let from = self.log.len().saturating_sub(25);
        format!(
            "seed {seed} (reproduce: STOWAGE_DIFF_SEED={seed} STOWAGE_DIFF_SEQUENCES=1), step {step}:\n\
             model answered   {want:?}\nbackend answered {got:?}\n\
             dedup TTLs of the handles: {:?}; last operations:\n{}",
            self.ttls,
            self.log[from..].join("\n")
        )
    }

    /// The failure of two dumps that differ: the first lines that differ, and the operations.
    fn dumps_differ(&self, when: &str, want: &[u8], got: &[u8]) -> String {
        let seed = self.seed;
        let lines = |dump: &[u8]| -> Vec<String> {
            dump.split(|b| *b == b'\n')
                .skip(1)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        };
        let (want, got) = (lines(want), lines(got));
        let first = want
            .iter()
            .zip(&got)
            .position(|(w, g)| w != g)
            .unwrap_or(want.len().min(got.len()));
        format!(
            "seed {seed} (reproduce: STOWAGE_DIFF_SEED={seed} STOWAGE_DIFF_SEQUENCES=1): \
             digests differ {when}; from item line {first}:\nmodel:   {:?}\nbackend: {:?}\n\
             dedup TTLs of the handles: {:?}; ops:\n{}",
            &want[first..(first + 3).min(want.len())],
            &got[first..(first + 3).min(got.len())],
            self.ttls,
            self.log.join("\n")
        )
    }

    fn state_differs(&self, when: &str, want: &[Answer], got: &[Answer]) -> String {
        let seed = self.seed;
        format!(
            "seed {seed} (reproduce: STOWAGE_DIFF_SEED={seed} STOWAGE_DIFF_SEQUENCES=1): \
             final state differs {when}\nmodel:   {want:?}\nbackend: {got:?}\n\
             dedup TTLs of the handles: {:?}; ops:\n{}",
            self.ttls,
            self.log.join("\n")
        )
    }
}

/// Compares the digests of `model` and `real`; when they differ, the failure shows where their
/// dumps part.
async fn same_digest(
    trace: &Trace,
    when: &str,
    model: &dyn Backend,
    real: &dyn Backend,
) -> std::result::Result<(), String> {
    let seed = trace.seed;
    let want = model
        .digest()
        .await
        .map_err(|e| format!("seed {seed}: model digest {when}: {e}"))?;
    let got = real
        .digest()
        .await
        .map_err(|e| format!("seed {seed}: backend digest {when}: {e}"))?;
    if want == got {
        return Ok(());
    }
    let (mut want, mut got) = (Vec::new(), Vec::new());
    let exported = async {
        model.export(&mut want).await?;
        real.export(&mut got).await
    };
    exported
        .await
        .map_err(|e| format!("seed {}: export {when}: {e}", trace.seed))?;
    Err(trace.dumps_differ(when, &want, &got))
}

/// Runs one seeded sequence on a fresh namespace of the context's store and on a fresh model.
pub async fn run_sequence(ctx: &Ctx, seed: u64, ops: usize) -> std::result::Result<(), String> {
    let mut rng = Rng::new(seed);
    let ttls = [*rng.pick(TTLS), *rng.pick(TTLS)];
    let steps = advance_steps(&ttls);
    let clock = Arc::new(ManualClock::new(START_MS));
    let namespace = format!("{}_d{seed}", ctx.namespace());
    let options = |ttl: u64| {
        ctx.options_for(&namespace)
            .clock(clock.clone())
            .dedup_ttl_ms(ttl)
    };
    let first = MemoryBackend::with_options(options(ttls[0])).map_err(|e| e.to_string())?;
    let backend = ctx
        .open(options(ttls[0]))
        .await
        .map_err(|e| format!("seed {seed}: open: {e}"))?;
    // Handle i of the model answers for handle i of the backend.
    let mut model: Vec<Arc<dyn Backend>> = Vec::new();
    let mut real = vec![backend.clone()];
    if backend.capabilities().shared {
        // A second process on the store, with the other TTL; the model shares its state alike.
        let second = first.share(options(ttls[1])).map_err(|e| e.to_string())?;
        real.push(
            ctx.open(options(ttls[1]))
                .await
                .map_err(|e| format!("seed {seed}: open a second handle: {e}"))?,
        );
        model.push(Arc::new(second));
    }
    model.insert(0, Arc::new(first));
    let mut trace = Trace {
        seed,
        ttls: ttls[..real.len()].to_vec(),
        log: Vec::with_capacity(ops),
    };
    // The last report (not rejected as invalid) of every (budget, key), and the handle that sent it.
    let mut last_keyed: BTreeMap<(String, String), (usize, Op)> = BTreeMap::new();
    let mut made = Reservations::default();
    for step in 0..ops {
        let via = rng.index(2) % real.len();
        let op = if rng.chance(RESERVATION_SHARE) {
            random_reservation_op(&mut rng, &mut made)
        } else {
            random_op(&mut rng, &steps)
        };
        let label = step.to_string();
        trace.push(&label, via, &op);
        let want = apply(&*model[via], &clock, &op).await;
        let got = match op {
            Op::Advance(_) | Op::AdvanceTo(_) | Op::AdvanceToWindowEnd(..) => Answer::Unit,
            _ => apply(&*real[via], &clock, &op).await,
        };
        if got != want
            || matches!(
                got,
                Answer::Failed(ErrorKind::Unavailable | ErrorKind::Internal)
            )
        {
            return Err(trace.differs(&label, &want, &got));
        }
        let retried = match &op {
            Op::Report(
                budget,
                UsageReport {
                    dedup_key: Some(key),
                    ..
                },
            ) => Some((budget.clone(), format!("key {key}"))),
            Op::Reserve(budget, request) => Some((budget.clone(), format!("id {}", request.id))),
            Op::ReportAll(budgets, report) => Some((
                budgets.join(","),
                format!("all {}", report.dedup_key.as_deref().unwrap_or("")),
            )),
            _ => None,
        };
        if let Some(slot) = retried {
            if want != Answer::Failed(ErrorKind::InvalidInput) {
                last_keyed.insert(slot, (via, op.clone()));
            }
        }
        if let (Op::Batch(items), Answer::Batch(answers)) = (&op, &want) {
            // Each keyed item is a report like any other: its retry comes at the end.
            for ((budget, report), answer) in items.iter().zip(answers) {
                if let (Some(key), false) = (
                    &report.dedup_key,
                    *answer == Answer::Failed(ErrorKind::InvalidInput),
                ) {
                    last_keyed.insert(
                        (budget.clone(), format!("key {key}")),
                        (via, Op::Report(budget.clone(), report.clone())),
                    );
                }
            }
        }
    }
    let want = final_state(&*model[0]).await;
    let got = final_state(&*real[0]).await;
    if got != want {
        return Err(trace.state_differs("after the operations", &want, &got));
    }
    same_digest(&trace, "after the operations", &*model[0], &*real[0]).await?;
    // The model's state imported into an empty namespace of the backend is the same state.
    let imported_ns = format!("{namespace}_i");
    let imported = ctx
        .open(
            ctx.options_for(&imported_ns)
                .clock(clock.clone())
                .dedup_ttl_ms(ttls[0]),
        )
        .await
        .map_err(|e| format!("seed {seed}: open the import namespace: {e}"))?;
    let mut dump = Vec::new();
    model[0]
        .export(&mut dump)
        .await
        .map_err(|e| format!("seed {seed}: model export: {e}"))?;
    imported
        .import(&mut dump.as_slice())
        .await
        .map_err(|e| format!("seed {seed}: import of the model's dump: {e}"))?;
    same_digest(
        &trace,
        "after importing the model's dump",
        &*model[0],
        &*imported,
    )
    .await?;
    ctx.purge_finished(&imported_ns, &*imported)
        .await
        .map_err(|e| format!("seed {seed}: purging the import namespace failed: {e}"))?;
    // Dedup and reservation state: a retry of each key's last report, each id's last reserve and
    // each multi-budget report answers alike (replayed, fresh or conflict).
    for (i, (via, op)) in last_keyed.values().enumerate() {
        let label = format!("retry {i} after the operations");
        trace.push(&label, *via, op);
        let want = apply(&*model[*via], &clock, op).await;
        let got = apply(&*real[*via], &clock, op).await;
        if got != want {
            return Err(trace.differs(&label, &want, &got));
        }
    }
    // The retries change counters, holds and reservations at most: the whole state again.
    let want = final_state(&*model[0]).await;
    let got = final_state(&*real[0]).await;
    if got != want {
        return Err(trace.state_differs("after the retries", &want, &got));
    }
    same_digest(&trace, "after the retries", &*model[0], &*real[0]).await?;
    ctx.purge_finished(&namespace, &*backend)
        .await
        .map_err(|e| format!("seed {seed}: purging the sequence's namespace failed: {e}"))
}

/// Seeded random sequences of every operation give the same answers and final state as the reference model.
pub async fn random_sequences_match_the_reference_model(ctx: Ctx) {
    let config = DiffConfig::from_env();
    let parallel = 4;
    let mut failures = Vec::new();
    let mut next = 0u64;
    while next < config.sequences {
        let mut batch = tokio::task::JoinSet::new();
        for i in next..(next + parallel).min(config.sequences) {
            let ctx = ctx.clone();
            let seed = config.seed.wrapping_add(i);
            batch.spawn(async move { run_sequence(&ctx, seed, config.ops).await });
        }
        next += parallel;
        while let Some(done) = batch.join_next().await {
            if let Err(failure) = done.expect("sequence task") {
                failures.push(failure);
            }
        }
        if !failures.is_empty() {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "differential: {} sequences x {} operations agree with the model (seeds {}..)",
        config.sequences, config.ops, config.seed
    );
}

cases! {
    __conformance_differential;
    differential: [
        random_sequences_match_the_reference_model,
    ]
}
