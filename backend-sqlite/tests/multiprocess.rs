//! Two OS processes on one SQLite file: no overshoot of a hard limit, shared dedup keys apply once.
//!
//! The test re-runs its own executable as the child processes (selected by an environment variable).

use std::io::Write;
use std::process::{Command, Stdio};

use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, PersistenceBackend, UsageReport,
};
use stowage_sqlite::SqliteBackend;

const CHILD_ENV: &str = "STOWAGE_SQLITE_CHILD_DB";
const TEST_NAME: &str = "two_processes_never_overshoot_and_share_dedup_keys";
const HARD_LIMIT: u64 = 1_500;
const UNKEYED_PER_CHILD: usize = 1_000;
const SHARED_KEYS: usize = 500;

async fn child(url: &str, child: &str) {
    let backend = SqliteBackend::open(url, ConnectOptions::new().namespace("mp"))
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    // Wait for the parent's go, so both children start together.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let (mut applied, mut replayed, mut breaches) = (0, 0, 0);
    for i in 0..UNKEYED_PER_CHILD + SHARED_KEYS {
        let report = UsageReport::new().add("tokens", 1);
        let report = if i % 3 == 0 && i / 3 < SHARED_KEYS {
            report.dedup_key(format!("shared-{}", i / 3))
        } else {
            report.dedup_key(format!("{child}-{i}"))
        };
        let receipt = backend.report_usage("budget", &report).await.unwrap();
        if receipt.replayed {
            replayed += 1;
        } else if receipt.outcome.is_applied() {
            applied += 1;
        } else {
            breaches += 1;
        }
    }
    println!("CHILD_RESULT {applied} {replayed} {breaches}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_overshoot_and_share_dedup_keys() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let name = std::env::var("STOWAGE_SQLITE_CHILD_NAME").unwrap();
        child(&format!("sqlite://{path}"), &name).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let url = format!("sqlite://{}", path.display());
    let setup = SqliteBackend::open(&url, ConnectOptions::new().namespace("mp"))
        .await
        .unwrap();
    setup.initialize().await.unwrap();
    setup
        .set_policy(
            "budget",
            &BudgetPolicy::new().limit("tokens", DimensionLimit::hard(HARD_LIMIT)),
        )
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .env("STOWAGE_SQLITE_CHILD_NAME", name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for child in &mut children {
        writeln!(child.stdin.take().unwrap(), "go").unwrap();
    }
    let (mut applied, mut replayed) = (0, 0);
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD_RESULT ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no result line in {stdout}"));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .take(3)
            .map(|n| n.parse().unwrap())
            .collect();
        applied += numbers[0];
        replayed += numbers[1];
    }
    // 2 x 1000 own keys + 500 shared keys = 2500 distinct reports of 1 against a limit of 1500.
    assert_eq!(applied, HARD_LIMIT);
    assert_eq!(replayed, u64::try_from(SHARED_KEYS).unwrap());
    assert_eq!(
        setup.usage("budget").await.unwrap().counters["tokens"],
        HARD_LIMIT
    );
}
