//! Process crash: a child reports usage with dedup keys and is killed with SIGKILL at random
//! moments; each restart re-sends every key (acknowledged or not). Nothing acknowledged may be
//! lost, nothing may count twice.
//!
//! The child prints `ACK <key> <replayed>` after each answered report; the parent reads those
//! lines (the log of acknowledgements) and kills the child after a random number of them.

use std::collections::HashSet;
use std::sync::Arc;

use stowage_core::{ConnectOptions, UsageReport};
use stowage_testkit::child::{child_command, child_spec, tell, told};
use stowage_testkit::env_number;
use stowage_testkit::rng::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::Harness;

/// Set in the child: `<namespace>\t<first key>`.
pub const CHILD_ENV: &str = "STOWAGE_CRASH_CHILD";

/// The tag of a child's acknowledgement line: `<key> <replayed>`.
pub(crate) const ACK: &str = "ACK";

/// Size of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct CrashPlan {
    /// Distinct dedup keys the child cycles through.
    pub keys: u64,
    /// SIGKILLs before the last, uninterrupted run.
    pub kills: u64,
    /// Seed of the kill points.
    pub seed: u64,
}

impl CrashPlan {
    /// `STOWAGE_CRASH_KILLS` (default 20) kill points over `STOWAGE_CRASH_KEYS` (default 200) keys.
    pub fn from_env() -> CrashPlan {
        CrashPlan {
            keys: env_number("STOWAGE_CRASH_KEYS", 200),
            kills: env_number("STOWAGE_CRASH_KILLS", 20),
            seed: env_number("STOWAGE_CRASH_SEED", 7),
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashStats {
    /// Children killed with SIGKILL.
    pub kills: u64,
    /// Acknowledged reports (all runs).
    pub acknowledged: u64,
    /// Keys acknowledged as applied more than once (must be 0).
    pub double_counts: u64,
    /// Final counter minus the sum over distinct keys (must be 0).
    pub lost_or_extra: i128,
}

/// The delta reported under key `i`.
pub fn delta_of(key: u64) -> u64 {
    1 + key % 7
}

async fn child(harness: Arc<dyn Harness>, spec: &str, keys: u64) {
    let (namespace, first) = spec.split_once('\t').expect("namespace<TAB>first key");
    let first: u64 = first.parse().expect("first key");
    let backend = harness
        .open(ConnectOptions::new().namespace(namespace))
        .await
        .expect("child opens the store");
    for j in 0..keys {
        let key = (first + j) % keys;
        let report = UsageReport::new()
            .add("tokens", delta_of(key))
            .dedup_key(format!("k{key}"));
        let receipt = loop {
            match backend.report_usage("budget", &report).await {
                Ok(receipt) => break receipt,
                Err(e) if e.is_retryable() => continue,
                Err(e) => panic!("child report failed: {e}"),
            }
        };
        tell(ACK, format_args!("{key} {}", receipt.replayed));
    }
}

/// The parent's side of a crash scenario: runs the child `kills + 1` times, each from a random
/// first item, reads its `ACK <item> <replayed>` lines and kills it with SIGKILL after a random
/// number of them; the last run is left to answer every item and must succeed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KillPlan<'a> {
    /// The `#[test]` that plays the child.
    pub test_name: &'a str,
    /// The environment variable that carries the child's spec, `<namespace>\t<first item>`.
    pub child_env: &'a str,
    /// The namespace the children use.
    pub namespace: &'a str,
    /// More environment for the child (a server's URL).
    pub extra_env: &'a [(&'a str, String)],
    /// Items the child cycles through.
    pub items: u64,
    /// SIGKILLs before the last run.
    pub kills: u64,
    /// Seed of the first items and kill points.
    pub seed: u64,
}

impl KillPlan<'_> {
    /// Runs the scenario, calling `on_ack(item, replayed)` for each acknowledgement; returns the
    /// number of children killed.
    pub async fn run(&self, mut on_ack: impl FnMut(u64, bool)) -> u64 {
        let mut rng = Rng::new(self.seed);
        let mut kills = 0;
        for run in 0..=self.kills {
            let first = rng.below(self.items);
            let mut command = Command::from(child_command(
                self.test_name,
                self.child_env,
                &format!("{}\t{first}", self.namespace),
                self.extra_env,
            ));
            command.kill_on_drop(true);
            let mut child = command.spawn().expect("spawn the child");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let last_run = run == self.kills;
            let kill_after = 1 + rng.below(self.items / 2);
            let mut seen = 0;
            while let Some(line) = lines.next_line().await.expect("read the child") {
                let Some(rest) = told(&line, ACK) else {
                    continue;
                };
                let mut parts = rest.split_whitespace();
                let item: u64 = parts.next().and_then(|k| k.parse().ok()).expect("item");
                on_ack(item, parts.next() == Some("true"));
                seen += 1;
                if !last_run && seen == kill_after {
                    child.start_kill().expect("SIGKILL");
                    kills += 1;
                    break;
                }
            }
            let status = child.wait().await.expect("wait for the child");
            if last_run {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    // The child's stderr only explains a failure the asserts find; a stderr that
                    // cannot be read says so in that explanation.
                    if let Err(e) = stderr.read_to_string(&mut err).await {
                        err.push_str(&format!(" (its stderr could not be read: {e})"));
                    }
                }
                assert!(status.success(), "the last run failed: {err}");
                assert_eq!(seen, self.items, "the last run must answer every item");
            }
        }
        kills
    }
}

/// In a child: the child's part. In the parent: the whole scenario; panics on a loss or a double count.
pub async fn run(
    harness: Arc<dyn Harness>,
    test_name: &str,
    extra_env: &[(&str, String)],
    plan: CrashPlan,
) -> CrashStats {
    if let Some(spec) = child_spec(CHILD_ENV) {
        child(harness, &spec, plan.keys).await;
        return CrashStats::default();
    }
    let namespace = stowage_testkit::unique_namespace("crash");
    let mut applied: HashSet<u64> = HashSet::new();
    let mut stats = CrashStats::default();
    let runs = KillPlan {
        test_name,
        child_env: CHILD_ENV,
        namespace: &namespace,
        extra_env,
        items: plan.keys,
        kills: plan.kills,
        seed: plan.seed,
    };
    stats.kills = runs
        .run(|key, replayed| {
            stats.acknowledged += 1;
            if !replayed && !applied.insert(key) {
                stats.double_counts += 1;
            }
        })
        .await;
    let backend = harness
        .open(ConnectOptions::new().namespace(namespace))
        .await
        .expect("parent opens the store");
    let usage = backend.usage("budget").await.expect("usage");
    let expected: u64 = (0..plan.keys).map(delta_of).sum();
    let got = usage.counters.get("tokens").copied().unwrap_or(0);
    stats.lost_or_extra = i128::from(got) - i128::from(expected);
    assert_eq!(
        stats.double_counts, 0,
        "acknowledged reports applied twice: {stats:?}"
    );
    assert_eq!(
        got, expected,
        "final counter differs from the sum over distinct keys: {stats:?}"
    );
    // Keys applied by a run killed before it could acknowledge them replay in later runs: they
    // were never acknowledged as applied, and the final counter shows they count exactly once.
    eprintln!("crash: {stats:?}");
    stats
}
