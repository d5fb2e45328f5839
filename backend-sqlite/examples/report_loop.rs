//! A tight loop of `report_usage` on a SQLite file, for profiling (`perf record -g`):
//!
//! `report_loop MODE ITERATIONS [CALLERS]` with MODE one of `replay` (one key, reported again and
//! again), `fresh` (a new key per report), `batch` (`report_usage_batch` of 100 fresh reports).
//! Prints the time per report and the writer's writes per commit.

use std::sync::Arc;
use std::time::Instant;

use stowage_core::{BudgetBackend, ConnectOptions, PersistenceBackend, UsageReport};
use stowage_sqlite::SqliteBackend;

fn report(key: String) -> UsageReport {
    UsageReport::new()
        .add("tokens", 1_234)
        .add("usd_micros", 56)
        .dedup_key(key)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("replay", String::as_str).to_owned();
    let iterations: u64 = args
        .get(2)
        .map_or(10_000, |a| a.parse().expect("iterations"));
    let callers: u64 = args.get(3).map_or(1, |a| a.parse().expect("callers"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = std::env::var("REPORT_LOOP_DB")
        .unwrap_or_else(|_| dir.path().join("loop.db").display().to_string());
    let url = format!("sqlite://{path}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let backend = Arc::new(
            SqliteBackend::open(&url, ConnectOptions::new())
                .await
                .expect("open"),
        );
        backend.initialize().await.expect("initialize");
        backend
            .report_usage("team-0", &report("the-same-request".into()))
            .await
            .expect("first report");
        let per_caller = iterations / callers;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let backend = backend.clone();
            let mode = mode.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while i < per_caller {
                    let budget = format!("team-{}", (caller + i) % 16);
                    match mode.as_str() {
                        "replay" => {
                            let r = backend
                                .report_usage("team-0", &report("the-same-request".into()))
                                .await
                                .expect("replay");
                            assert!(r.replayed);
                            i += 1;
                        }
                        "fresh" => {
                            backend
                                .report_usage(&budget, &report(format!("k-{caller}-{i}")))
                                .await
                                .expect("report");
                            i += 1;
                        }
                        "batch" => {
                            let items: Vec<_> = (0..100)
                                .map(|j| {
                                    (
                                        format!("team-{}", (i + j) % 16),
                                        report(format!("k-{caller}-{}", i + j)),
                                    )
                                })
                                .collect();
                            backend.report_usage_batch(&items).await.expect("batch");
                            i += 100;
                        }
                        "store" => {
                            let value = serde_json::json!({"celsius": 21.5, "seq": i});
                            backend
                                .store(&format!("sensor-{}-{}", caller, i % 100), &value, i)
                                .await
                                .expect("store");
                            i += 1;
                        }
                        other => panic!("unknown mode {other}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("caller");
        }
        let elapsed = start.elapsed();
        let done = per_caller * callers;
        let stats = backend.stats();
        println!(
            "{mode} x{callers}: {done} reports in {elapsed:?}: {:.1} µs/report, {:.0}/s; writes {} commits {}",
            elapsed.as_secs_f64() * 1e6 / done as f64,
            done as f64 / elapsed.as_secs_f64(),
            stats.writes,
            stats.commits
        );
    });
}
