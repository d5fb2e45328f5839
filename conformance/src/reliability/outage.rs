//! Server crash and restart while tasks report: calls fail `Unavailable` (retryable) within a
//! bound, the same backend object works again afterwards, and retries never count twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage_core::{Backend, ErrorKind, UsageReport};
use tokio::sync::Notify;

/// Kept for compatibility: the trait lives with the servers it controls, in `stowage_testkit::servers`.
pub use stowage_testkit::servers::ServerControl;

/// Size of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct OutagePlan {
    /// Concurrent reporting tasks.
    pub tasks: u64,
    /// Distinct keys per task.
    pub keys_per_task: u64,
    /// Server crashes during the run.
    pub outages: u64,
    /// The longest one call may take before it counts as hanging.
    pub call_bound: Duration,
}

impl OutagePlan {
    /// 16 tasks; `STOWAGE_OUTAGE_KEYS` (default 60) keys each; `STOWAGE_OUTAGES` (default 2) crashes.
    pub fn from_env(call_bound: Duration) -> OutagePlan {
        OutagePlan {
            tasks: 16,
            keys_per_task: stowage_testkit::env_number("STOWAGE_OUTAGE_KEYS", 60),
            outages: stowage_testkit::env_number("STOWAGE_OUTAGES", 2),
            call_bound,
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutageStats {
    /// Server crashes.
    pub restarts: u64,
    /// Reports acknowledged.
    pub acknowledged: u64,
    /// Calls that failed `Unavailable` (and were retried).
    pub unavailable: u64,
    /// Final counter minus the sum over distinct keys (must be 0).
    pub lost_or_extra: i128,
}

#[derive(Default)]
struct Progress {
    acks: AtomicU64,
    errors: AtomicU64,
    changed: Notify,
}

impl Progress {
    async fn wait_until(&self, done: impl Fn(&Progress) -> bool) {
        loop {
            let notified = self.changed.notified();
            if done(self) {
                return;
            }
            notified.await;
        }
    }
}

fn delta(task: u64, key: u64) -> u64 {
    1 + (task * 31 + key) % 5
}

/// Runs the scenario; panics on a hang, a wrong error kind, a loss or a double count.
pub async fn run(
    backend: Arc<dyn Backend>,
    server: Arc<dyn ServerControl>,
    plan: OutagePlan,
) -> OutageStats {
    let progress = Arc::new(Progress::default());
    let mut tasks = Vec::new();
    for task in 0..plan.tasks {
        let backend = backend.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            for key in 0..plan.keys_per_task {
                let report = UsageReport::new()
                    .add("tokens", delta(task, key))
                    .dedup_key(format!("t{task}-k{key}"));
                loop {
                    let started = Instant::now();
                    let result = backend
                        .report_usage(&format!("b{}", task % 4), &report)
                        .await;
                    let took = started.elapsed();
                    assert!(
                        took <= plan.call_bound,
                        "a call took {took:?}, above {:?}",
                        plan.call_bound
                    );
                    match result {
                        Ok(_) => {
                            progress.acks.fetch_add(1, Ordering::SeqCst);
                            progress.changed.notify_waiters();
                            break;
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Unavailable, "during an outage: {e}");
                            assert!(e.is_retryable());
                            progress.errors.fetch_add(1, Ordering::SeqCst);
                            progress.changed.notify_waiters();
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
        }));
    }
    let total = plan.tasks * plan.keys_per_task;
    let mut stats = OutageStats::default();
    for outage in 0..plan.outages {
        // Crash when a share of the work is done; restart once the tasks have felt it.
        let at = total * (outage + 1) / (plan.outages + 1);
        progress
            .wait_until(|p| p.acks.load(Ordering::SeqCst) >= at)
            .await;
        let errors_before = progress.errors.load(Ordering::SeqCst);
        let stopper = server.clone();
        tokio::task::spawn_blocking(move || stopper.stop())
            .await
            .expect("stop task")
            .expect("stop the server");
        progress
            .wait_until(|p| p.errors.load(Ordering::SeqCst) >= errors_before + plan.tasks)
            .await;
        let starter = server.clone();
        tokio::task::spawn_blocking(move || starter.start())
            .await
            .expect("start task")
            .expect("start the server");
        stats.restarts += 1;
    }
    for task in tasks {
        task.await.expect("a reporting task failed");
    }
    // Nothing acknowledged was lost: re-sending every key replays, applying nothing.
    for task in 0..plan.tasks {
        for key in 0..plan.keys_per_task {
            let report = UsageReport::new()
                .add("tokens", delta(task, key))
                .dedup_key(format!("t{task}-k{key}"));
            let receipt = backend
                .report_usage(&format!("b{}", task % 4), &report)
                .await
                .expect("re-send");
            assert!(
                receipt.replayed,
                "key t{task}-k{key} applied again after the restarts: lost"
            );
        }
    }
    let mut got = 0u64;
    for budget in 0..4 {
        got += backend
            .usage(&format!("b{budget}"))
            .await
            .expect("usage")
            .counters
            .get("tokens")
            .copied()
            .unwrap_or(0);
    }
    let expected: u64 = (0..plan.tasks)
        .flat_map(|t| (0..plan.keys_per_task).map(move |k| delta(t, k)))
        .sum();
    stats.acknowledged = progress.acks.load(Ordering::SeqCst);
    stats.unavailable = progress.errors.load(Ordering::SeqCst);
    stats.lost_or_extra = i128::from(got) - i128::from(expected);
    assert_eq!(
        got, expected,
        "counters differ from the sum over distinct keys: {stats:?}"
    );
    eprintln!("outage: {stats:?}");
    stats
}
