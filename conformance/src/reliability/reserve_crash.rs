//! Process crash during admission control: a child runs the gateway's flow — `reserve_all` on a
//! key, a team and an org budget, then `commit_all` of the real cost — for request ids `r0…`, and
//! is killed with SIGKILL at random moments (between the two calls, or inside one of them: on a
//! Valkey cluster, inside the composed budget-by-budget sequence). Each restart re-sends every
//! request id, acknowledged or not, from a random starting point. Nothing may count twice, nothing
//! acknowledged may be lost, and no hold may be left once every request was retried.
//!
//! The child prints `ACK <request> <replayed>` after each answered `commit_all`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use stowage_core::{
    BudgetPolicy, ConnectOptions, DimensionLimit, MultiReserveOutcome, ReservationState,
    ReserveRequest, Result,
};
use stowage_testkit::child::{child_spec, tell};
use stowage_testkit::env_number;

use super::crash::{KillPlan, ACK};
use crate::Harness;

/// Set in the child: `<namespace>\t<first request>`.
pub const CHILD_ENV: &str = "STOWAGE_RESERVE_CRASH_CHILD";

/// How long a hold lives: long enough that every retry of a killed run comes before it expires.
const HOLD_TTL_MS: u64 = 600_000;

/// Size of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct ReserveCrashPlan {
    /// Distinct request ids the child cycles through.
    pub requests: u64,
    /// SIGKILLs before the last, uninterrupted run.
    pub kills: u64,
    /// Seed of the kill points.
    pub seed: u64,
}

impl ReserveCrashPlan {
    /// `STOWAGE_RESERVE_CRASH_KILLS` (default 12) kill points over `STOWAGE_RESERVE_CRASH_REQUESTS`
    /// (default 120) requests.
    pub fn from_env() -> ReserveCrashPlan {
        ReserveCrashPlan {
            requests: env_number("STOWAGE_RESERVE_CRASH_REQUESTS", 120),
            kills: env_number("STOWAGE_RESERVE_CRASH_KILLS", 12),
            seed: env_number("STOWAGE_RESERVE_CRASH_SEED", 11),
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReserveCrashStats {
    /// Children killed with SIGKILL.
    pub kills: u64,
    /// Acknowledged `commit_all`s (all runs).
    pub acknowledged: u64,
    /// Requests acknowledged as applied more than once (must be 0).
    pub double_counts: u64,
    /// Budgets whose final counter differs from the sum of their requests' costs (must be 0).
    pub wrong_counters: u64,
    /// Holds left after every request was retried to its end (must be 0).
    pub holds_left: u64,
}

/// The three budgets of request `i`, as a gateway names them.
pub fn budgets_of(i: u64) -> [String; 3] {
    [
        format!("key:{}", i % 4),
        format!("team:{}", i % 2),
        "org".to_owned(),
    ]
}

/// What request `i` reserves (the most it can cost) and what it really costs.
pub fn cost_of(i: u64) -> (u64, u64) {
    let reserved = 100 + i % 13;
    (reserved, reserved - i % 5)
}

async fn attempt(backend: &dyn stowage_core::Backend, i: u64) -> Result<bool> {
    let names = budgets_of(i);
    let budgets: Vec<&str> = names.iter().map(String::as_str).collect();
    let (reserved, actual) = cost_of(i);
    let id = format!("r{i}");
    let request = ReserveRequest::new(id.clone(), HOLD_TTL_MS).add("tokens", reserved);
    let receipt = backend.reserve_all(&budgets, &request).await?;
    assert_eq!(
        receipt.outcome,
        MultiReserveOutcome::Reserved,
        "limits are set so that every request fits"
    );
    let actual = BTreeMap::from([("tokens".to_owned(), actual)]);
    Ok(backend.commit_all(&budgets, &id, &actual).await?.replayed)
}

async fn child(harness: Arc<dyn Harness>, spec: &str, requests: u64) {
    let (namespace, first) = spec.split_once('\t').expect("namespace<TAB>first request");
    let first: u64 = first.parse().expect("first request");
    let backend = harness
        .open(ConnectOptions::new().namespace(namespace))
        .await
        .expect("child opens the store");
    for j in 0..requests {
        let i = (first + j) % requests;
        let replayed = loop {
            match attempt(&*backend, i).await {
                Ok(replayed) => break replayed,
                Err(e) if e.is_retryable() => continue,
                Err(e) => panic!("child request r{i} failed: {e}"),
            }
        };
        tell(ACK, format_args!("{i} {replayed}"));
    }
}

/// In a child: the child's part. In the parent: the whole scenario; panics on a double count, a
/// wrong counter or a hold left behind.
pub async fn run(
    harness: Arc<dyn Harness>,
    test_name: &str,
    extra_env: &[(&str, String)],
    plan: ReserveCrashPlan,
) -> ReserveCrashStats {
    if let Some(spec) = child_spec(CHILD_ENV) {
        child(harness, &spec, plan.requests).await;
        return ReserveCrashStats::default();
    }
    let namespace = stowage_testkit::unique_namespace("reserve-crash");
    let backend = harness
        .open(ConnectOptions::new().namespace(namespace.clone()))
        .await
        .expect("parent opens the store");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..plan.requests {
        for budget in budgets_of(i) {
            *expected.entry(budget).or_insert(0) += cost_of(i).1;
        }
    }
    // Hard limits every request fits under, even with all holds live at once: admission is
    // exercised, never refused.
    for (budget, total) in &expected {
        let limit = DimensionLimit::both(*total, total * 2);
        let policy = BudgetPolicy::new().limit("tokens", limit);
        backend
            .set_policy(budget, &policy)
            .await
            .expect("set_policy");
    }
    let mut applied: HashSet<u64> = HashSet::new();
    let mut stats = ReserveCrashStats::default();
    let runs = KillPlan {
        test_name,
        child_env: CHILD_ENV,
        namespace: &namespace,
        extra_env,
        items: plan.requests,
        kills: plan.kills,
        seed: plan.seed,
    };
    stats.kills = runs
        .run(|i, replayed| {
            stats.acknowledged += 1;
            if !replayed && !applied.insert(i) {
                stats.double_counts += 1;
            }
        })
        .await;
    for (budget, total) in &expected {
        let usage = backend.usage(budget).await.expect("usage");
        if usage.counters.get("tokens") != Some(total) {
            stats.wrong_counters += 1;
            eprintln!(
                "reserve crash: budget {budget} counts {:?}, expected {total}",
                usage.counters
            );
        }
        let held = backend.reservations(budget).await.expect("reservations");
        let unresolved = held
            .iter()
            .filter(|r| !matches!(r.state, ReservationState::Committed { .. }));
        let left = u64::try_from(unresolved.count()).expect("a count fits u64");
        stats.holds_left += left;
        if !usage.pending.is_empty() {
            stats.holds_left += 1;
        }
    }
    eprintln!("reserve crash: {stats:?}");
    assert_eq!(
        stats,
        ReserveCrashStats {
            kills: plan.kills,
            acknowledged: stats.acknowledged,
            ..ReserveCrashStats::default()
        },
        "double counts, wrong counters or holds left"
    );
    stats
}
