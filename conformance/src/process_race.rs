//! Two OS processes racing on one store: no overshoot of a hard limit, shared dedup keys apply once.
//!
//! A backend's test calls [`run`] from a `#[test]`; the test binary re-runs itself as the child
//! processes (selected by [`CHILD_ENV`]), so the children open the store through the same harness.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use stowage_core::{BudgetPolicy, ConnectOptions, DimensionLimit, UsageReport};
use stowage_testkit::child::{child_command, child_spec, tell, told};

use crate::Harness;

/// Set in child processes: `<namespace>\t<child name>`.
pub const CHILD_ENV: &str = "STOWAGE_PROCESS_RACE_CHILD";

/// The tag of a child's result line: `<applied> <replayed> <breaches>`.
const RESULT: &str = "PROCESS_RACE_RESULT";

/// Sizes of the race.
#[derive(Debug, Clone, Copy)]
pub struct RaceSize {
    /// Child processes.
    pub children: usize,
    /// Reports with a key of its own, per child.
    pub own_per_child: usize,
    /// Keys every child reports (each applies once in all).
    pub shared_keys: usize,
    /// The hard limit; below the number of distinct reports, so the race hits it.
    pub hard_limit: u64,
}

impl Default for RaceSize {
    fn default() -> Self {
        RaceSize {
            children: 2,
            own_per_child: 400,
            shared_keys: 200,
            hard_limit: 600,
        }
    }
}

async fn child(harness: Arc<dyn Harness>, namespace: &str, name: &str, size: RaceSize) {
    let backend = harness
        .open(ConnectOptions::new().namespace(namespace))
        .await
        .expect("child opens the store");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .expect("go from the parent");
    let (mut applied, mut replayed, mut breaches) = (0u64, 0u64, 0u64);
    let total = size.own_per_child + size.shared_keys;
    for i in 0..total {
        // Interleave shared keys with own keys so the children meet on them.
        let key = if i % 3 == 0 && i / 3 < size.shared_keys {
            format!("shared-{}", i / 3)
        } else {
            format!("{name}-{i}")
        };
        let receipt = backend
            .report_usage(
                "budget",
                &UsageReport::new().add("tokens", 1).dedup_key(key),
            )
            .await
            .expect("report in child");
        if receipt.replayed {
            replayed += 1;
        } else if receipt.outcome.is_applied() {
            applied += 1;
        } else {
            breaches += 1;
        }
    }
    tell(RESULT, format_args!("{applied} {replayed} {breaches}"));
}

/// In a child: the child's part. In the parent: sets up, starts the children of `test_name` with `extra_env`, checks totals.
pub async fn run(
    harness: Arc<dyn Harness>,
    test_name: &str,
    extra_env: &[(&str, String)],
    size: RaceSize,
) {
    if let Some(spec) = child_spec(CHILD_ENV) {
        let (namespace, name) = spec.split_once('\t').expect("namespace<TAB>name");
        child(harness, namespace, name, size).await;
        return;
    }
    let namespace = stowage_testkit::unique_namespace("race");
    let setup = harness
        .open(ConnectOptions::new().namespace(namespace.clone()))
        .await
        .expect("parent opens the store");
    setup
        .set_policy(
            "budget",
            &BudgetPolicy::new().limit("tokens", DimensionLimit::hard(size.hard_limit)),
        )
        .await
        .unwrap();
    let mut children = Vec::new();
    for i in 0..size.children {
        let mut command = child_command(
            test_name,
            CHILD_ENV,
            &format!("{namespace}\tchild{i}"),
            extra_env,
        );
        command.stdin(Stdio::piped());
        children.push(command.spawn().expect("spawn a child process"));
    }
    for child in &mut children {
        writeln!(child.stdin.take().expect("child stdin"), "go").expect("send go");
    }
    let (mut applied, mut replayed) = (0u64, 0u64);
    for child in children {
        let out = child.wait_with_output().expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| told(l, RESULT))
            .unwrap_or_else(|| panic!("no result line in {stdout}"));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .take(3)
            .map(|n| n.parse().expect("a number"))
            .collect();
        applied += numbers[0];
        replayed += numbers[1];
    }
    let children = u64::try_from(size.children).expect("few children");
    let shared = u64::try_from(size.shared_keys).expect("fits");
    let distinct = children * u64::try_from(size.own_per_child).expect("fits") + shared;
    assert!(distinct > size.hard_limit, "the race must reach the limit");
    assert_eq!(applied, size.hard_limit, "applied reports across processes");
    assert_eq!(
        replayed,
        shared * (children - 1),
        "each shared key applies once"
    );
    let usage = setup.usage("budget").await.unwrap();
    assert_eq!(usage.counters.get("tokens").copied(), Some(size.hard_limit));
}
