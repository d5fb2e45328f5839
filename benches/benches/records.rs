//! Records on every backend side by side: `store`, `store_idempotent` replay, and a pattern query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use stowage::QueryParams;
use stowage_benches::{connect, deployments, runtime};

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group
}

fn store(c: &mut Criterion) {
    let rt = runtime();
    let mut g = group(c, "store");
    for (name, url) in deployments().urls() {
        let backend = rt.block_on(connect(&url));
        let next = AtomicU64::new(0);
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                let i = next.fetch_add(1, Ordering::Relaxed);
                async move {
                    let record = format!("sensor::{}::temp", i % 100);
                    backend
                        .store(&record, &json!({"celsius": 21.5, "seq": i}), i)
                        .await
                        .expect("store")
                }
            })
        });
    }
    g.finish();
}

fn store_idempotent_replay(c: &mut Criterion) {
    let rt = runtime();
    let mut g = group(c, "store_idempotent/replay");
    for (name, url) in deployments().urls() {
        let backend = rt.block_on(connect(&url));
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    backend
                        .store_idempotent(
                            "sensor::kitchen::temp",
                            &json!({"celsius": 21.5}),
                            7,
                            "reading-7",
                        )
                        .await
                        .expect("store_idempotent")
                }
            })
        });
    }
    g.finish();
}

fn query(c: &mut Criterion) {
    let rt = runtime();
    let mut g = group(c, "query/pattern_limit_10");
    for (name, url) in deployments().urls() {
        let backend = rt.block_on(async {
            let backend = connect(&url).await;
            // 50 sensors x 40 readings; the query matches 25 of them and keeps the newest 10 each.
            for sensor in 0..50u64 {
                let kind = if sensor % 2 == 0 { "temp" } else { "door" };
                for at in 0..40u64 {
                    let record = format!("sensor::{sensor:02}::{kind}");
                    backend
                        .store(&record, &json!({"v": at}), at)
                        .await
                        .expect("fill");
                }
            }
            backend
        });
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    let rows = backend
                        .query("sensor::*::temp", QueryParams::new().limit_per_record(10))
                        .await
                        .expect("query");
                    assert_eq!(rows.len(), 250);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(records, store, store_idempotent_replay, query);
criterion_main!(records);
