//! The randomized differential test: seeded operation sequences on a backend and on `MemoryBackend` must agree step by step.
//!
//! Size and seed come from the environment: `STOWAGE_DIFF_SEQUENCES` (default 24),
//! `STOWAGE_DIFF_OPS` (operations per sequence, default 60) and `STOWAGE_DIFF_SEED` (the first
//! sequence's seed; sequence i uses seed + i). A failure prints the seed that reproduces it with
//! `STOWAGE_DIFF_SEQUENCES=1`.

use std::sync::Arc;

use serde_json::{json, Value};
use stowage_core::{
    Backend, BudgetPolicy, BudgetUsage, DimensionLimit, ErrorKind, ManualClock, MemoryBackend,
    QueryParams, Result, StoreResult, StoredValue, UsageReceipt, UsageReport, MAX_AMOUNT,
};

use crate::context::START_MS;
use crate::rng::Rng;
use crate::Ctx;

/// The dedup TTL of differential sequences, short so that clock moves expire keys.
pub const TTL_MS: u64 = 1_000;

const BUDGETS: &[&str] = &["b", "b:x", "b:", "B", "{b}"];
const DIMENSIONS: &[&str] = &["t", "t:x", "x:t", "%", "T"];
const KEYS: &[&str] = &["k1", "k2", "k:1"];
const RECORDS: &[&str] = &["r", "r:1", "r1", "s", "r*", "é"];
const PATTERNS: &[&str] = &[
    "*", "r*", "r", "*1", "r:*", "r*1", "é*", "", "s", "*:*", "r\\*", "?",
];
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
        use crate::reliability::env_number as var;
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
    Advance(u64),
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
    Failed(ErrorKind),
}

fn answer<T>(result: Result<T>, wrap: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(v) => wrap(v),
        Err(e) => Answer::Failed(e.kind()),
    }
}

fn random_name(rng: &mut Rng, names: &[&str]) -> String {
    // Now and then an invalid name, to check that both sides reject it alike.
    if rng.chance(2) {
        String::new()
    } else {
        (*rng.pick(names)).to_owned()
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

/// A random operation drawn from every part of the API.
pub fn random_op(rng: &mut Rng) -> Op {
    match rng.below(100) {
        0..=7 => {
            let mut policy = BudgetPolicy::new();
            for _ in 0..rng.below(4) {
                let limit = DimensionLimit {
                    hard: random_limit(rng),
                    soft: random_limit(rng),
                };
                policy = policy.limit(random_name(rng, DIMENSIONS), limit);
            }
            Op::SetPolicy(random_name(rng, BUDGETS), policy)
        }
        8..=9 => Op::Policy(random_name(rng, BUDGETS)),
        10..=12 => Op::DeletePolicy(random_name(rng, BUDGETS)),
        13..=49 => {
            let mut report = UsageReport::new();
            let dims = if rng.chance(3) { 0 } else { 1 + rng.below(3) };
            for _ in 0..dims {
                let delta = if rng.chance(2) {
                    MAX_AMOUNT + 1
                } else {
                    *rng.pick(DELTAS)
                };
                report = report.add(random_name(rng, DIMENSIONS), delta);
            }
            if rng.chance(60) {
                report = report.dedup_key(random_name(rng, KEYS));
            }
            Op::Report(random_name(rng, BUDGETS), report)
        }
        50..=55 => Op::Usage(random_name(rng, BUDGETS)),
        56..=58 => Op::Reset(random_name(rng, BUDGETS)),
        59..=68 => Op::Store(
            random_name(rng, RECORDS),
            random_value(rng),
            *rng.pick(TIMESTAMPS),
        ),
        69..=78 => Op::StoreIdempotent(
            random_name(rng, RECORDS),
            random_value(rng),
            *rng.pick(TIMESTAMPS),
            random_name(rng, KEYS),
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
            Op::Query((*rng.pick(PATTERNS)).to_owned(), params)
        }
        89..=91 => Op::Cleanup(*rng.pick(TIMESTAMPS)),
        _ => Op::Advance(*rng.pick(&[1, 10, TTL_MS - 1, TTL_MS, TTL_MS + 1, 3 * TTL_MS])),
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
        Op::Advance(ms) => {
            clock.advance(*ms);
            Answer::Unit
        }
    }
}

/// Everything observable in a namespace: policies and usage of every budget, every row.
async fn final_state(backend: &dyn Backend) -> Vec<Answer> {
    let mut state = Vec::new();
    for budget in BUDGETS {
        state.push(answer(backend.policy(budget).await, Answer::Policy));
        state.push(answer(backend.usage(budget).await, Answer::Usage));
    }
    state.push(answer(
        backend.query("*", QueryParams::default()).await,
        Answer::Rows,
    ));
    state
}

/// Runs one seeded sequence on a fresh namespace of the context's store and on a fresh model.
pub async fn run_sequence(ctx: &Ctx, seed: u64, ops: usize) -> std::result::Result<(), String> {
    let clock = Arc::new(ManualClock::new(START_MS));
    let options = ctx
        .options_for(&format!("{}_d{seed}", ctx.namespace()))
        .clock(clock.clone())
        .dedup_ttl_ms(TTL_MS);
    let model = MemoryBackend::with_options(options.clone()).map_err(|e| e.to_string())?;
    let backend = ctx.open(options).await.map_err(|e| format!("open: {e}"))?;
    let mut rng = Rng::new(seed);
    let mut log = Vec::with_capacity(ops);
    for step in 0..ops {
        let op = random_op(&mut rng);
        log.push(format!("{step}: {op:?}"));
        let want = apply(&model, &clock, &op).await;
        let got = match op {
            Op::Advance(_) => Answer::Unit,
            _ => apply(&*backend, &clock, &op).await,
        };
        if matches!(
            got,
            Answer::Failed(ErrorKind::Unavailable | ErrorKind::Internal)
        ) {
            return Err(fail(seed, step, &log, &want, &got));
        }
        if got != want {
            return Err(fail(seed, step, &log, &want, &got));
        }
    }
    let want = final_state(&model).await;
    let got = final_state(&*backend).await;
    if got != want {
        return Err(format!(
            "seed {seed}: final state differs\nmodel:   {want:?}\nbackend: {got:?}\nops:\n{}",
            log.join("\n")
        ));
    }
    Ok(())
}

fn fail(seed: u64, step: usize, log: &[String], want: &Answer, got: &Answer) -> String {
    let from = log.len().saturating_sub(25);
    format!(
        "seed {seed} (reproduce: STOWAGE_DIFF_SEED={seed} STOWAGE_DIFF_SEQUENCES=1), step {step}:\n\
         model answered   {want:?}\nbackend answered {got:?}\nlast operations:\n{}",
        log[from..].join("\n")
    )
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
