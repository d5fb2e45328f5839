//! `report_usage` on every backend side by side, with the seed design and raw-engine baselines:
//! a fresh key per report, a replayed key, and 32 (and, for Valkey, 50) concurrent callers.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use stowage_benches::ceiling::{RedisBenchmark, MIN_REQUESTS};
use stowage_benches::raw::{RawPostgres, RawSqlite, RawValkey};
use stowage_benches::seed::SeedPostgres;
use stowage_benches::{connect_prepared, deployments, gateway_report, runtime, BUDGET};

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
}

fn fresh_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "req-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `iters` operations spread over `callers` concurrent tasks; the time per `iters` operations.
async fn concurrently<F, Fut>(iters: u64, callers: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let per_caller = iters.div_ceil(callers).max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let work: Vec<Fut> = (0..per_caller)
            .map(|i| op(caller * per_caller + i))
            .collect();
        tasks.push(tokio::spawn(async move {
            for w in work {
                w.await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller task");
    }
    let total = u128::from(per_caller * callers);
    let nanos = start.elapsed().as_nanos() * u128::from(iters) / total;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Concurrent callers spread over [`TEAMS`] budgets, as a gateway serving many teams does.
fn team(i: u64) -> String {
    format!("team-{}", i % TEAMS)
}

/// Budgets the concurrent groups spread over (reports to one budget serialize by design).
const TEAMS: u64 = 16;

fn single_caller(c: &mut Criterion, group_name: &str, key: fn() -> String) {
    let rt = runtime();
    let d = deployments();
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    for (name, url) in d.urls() {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    backend
                        .report_usage(BUDGET, &gateway_report(key()))
                        .await
                        .expect("report")
                }
            })
        });
    }
    let raw_sqlite = rt.block_on(RawSqlite::start(&d.sqlite_url));
    group.bench_function("raw-sqlite", |b| {
        b.iter(|| raw_sqlite.report(BUDGET, &gateway_report(key())))
    });
    let raw_pg = rt.block_on(RawPostgres::start(&d.postgres_url, 1));
    group.bench_function("raw-postgres", |b| {
        b.to_async(rt).iter(|| {
            let raw = raw_pg.clone();
            async move { raw.report(0, BUDGET, &gateway_report(key())).await }
        })
    });
    let seed = rt.block_on(SeedPostgres::start(&d.postgres_url, 1));
    group.bench_function("seed-postgres", |b| {
        b.to_async(rt).iter(|| {
            let seed = seed.clone();
            async move {
                seed.report(BUDGET, &gateway_report(key()))
                    .await
                    .expect("seed report")
            }
        })
    });
    let raw_vk = rt.block_on(RawValkey::start(&d.valkey_url));
    group.bench_function("raw-valkey", |b| {
        b.to_async(rt).iter(|| {
            let raw = raw_vk.clone();
            async move { raw.report(BUDGET, &gateway_report(key())).await }
        })
    });
    group.finish();
}

fn report_fresh_key(c: &mut Criterion) {
    single_caller(c, "report_usage/fresh_key", fresh_key);
}

/// The same fresh-key report on a lifetime budget and on a budget with a monthly window (UTC),
/// side by side per backend: what a window costs inside it (one round trip on PostgreSQL and
/// Valkey; the first report of the run rolls the window in).
fn report_windowed(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let mut group = c.benchmark_group("report_usage/windowed_vs_lifetime");
    configure(&mut group);
    for (name, url) in d.urls() {
        let backend = rt.block_on(connect_prepared(&url));
        let monthly = rt
            .block_on(backend.policy(BUDGET))
            .expect("policy")
            .expect("prepared")
            .window(stowage::Window::month("UTC"));
        rt.block_on(backend.set_policy("team-monthly", &monthly))
            .expect("set a windowed policy");
        for (variant, budget) in [("lifetime", BUDGET), ("windowed", "team-monthly")] {
            group.bench_function(format!("{name}/{variant}"), |b| {
                b.to_async(rt).iter(|| {
                    let backend = backend.clone();
                    async move {
                        backend
                            .report_usage(budget, &gateway_report(fresh_key()))
                            .await
                            .expect("report")
                    }
                })
            });
        }
    }
    group.finish();
}

fn report_replay(c: &mut Criterion) {
    single_caller(c, "report_usage/replay", || "the-same-request".to_owned());
}

fn report_concurrent(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let callers = 32;
    let mut group = c.benchmark_group("report_usage/32_callers");
    configure(&mut group);
    let mut urls = d.urls();
    urls.insert(
        2,
        (
            "sqlite-no-group-commit",
            format!("{}?group_commit=off", d.sqlite_url),
        ),
    );
    for (name, url) in urls {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let backend = backend.clone();
                concurrently(iters, callers, move |i| {
                    let backend = backend.clone();
                    async move {
                        backend
                            .report_usage(&team(i), &gateway_report(fresh_key()))
                            .await
                            .expect("report");
                    }
                })
            })
        });
    }
    // The SQLite ceiling for 32 callers: what one connection commits when every transaction holds
    // 100 reports (more than 32 callers can ever have in flight), on the calling thread.
    let raw_sqlite = rt.block_on(RawSqlite::start(&d.sqlite_url));
    group.bench_function("raw-sqlite-100-per-tx", |b| {
        b.iter_custom(|iters| {
            const PER_TX: u64 = 100;
            let rounds = iters.div_ceil(PER_TX);
            let start = Instant::now();
            for round in 0..rounds {
                let items: Vec<_> = (0..PER_TX)
                    .map(|i| (team(round * PER_TX + i), gateway_report(fresh_key())))
                    .collect();
                raw_sqlite.report_batch(&items);
            }
            let nanos =
                start.elapsed().as_nanos() * u128::from(iters) / u128::from(rounds * PER_TX);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    });
    let raw_pg = rt.block_on(RawPostgres::start(&d.postgres_url, 32));
    group.bench_function("raw-postgres", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let raw = raw_pg.clone();
            concurrently(iters, callers, move |i| {
                let raw = raw.clone();
                async move {
                    raw.report(
                        usize::try_from(i).unwrap_or(0),
                        &team(i),
                        &gateway_report(fresh_key()),
                    )
                    .await
                }
            })
        })
    });
    let seed = rt.block_on(SeedPostgres::start(&d.postgres_url, 32));
    group.bench_function("seed-postgres", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let seed = seed.clone();
            concurrently(iters, callers, move |i| {
                let seed = seed.clone();
                async move {
                    seed.report(&team(i), &gateway_report(fresh_key()))
                        .await
                        .expect("seed report");
                }
            })
        })
    });
    group.finish();
}

fn report_valkey_50(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let callers = 50;
    let mut group = c.benchmark_group("report_usage/50_callers_valkey");
    configure(&mut group);
    for (name, url) in [
        ("valkey", d.valkey_url.clone()),
        ("valkey-cluster", d.cluster_url.clone()),
    ] {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let backend = backend.clone();
                concurrently(iters, callers, move |i| {
                    let backend = backend.clone();
                    async move {
                        backend
                            .report_usage(&team(i), &gateway_report(fresh_key()))
                            .await
                            .expect("report");
                    }
                })
            })
        });
    }
    let raw = Arc::new(rt.block_on(RawValkey::start(&d.valkey_url)));
    group.bench_function("raw-valkey", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let raw = raw.clone();
            concurrently(iters, callers, move |i| {
                let raw = raw.clone();
                async move { raw.report(&team(i), &gateway_report(fresh_key())).await }
            })
        })
    });
    // The same EVALSHAs spread over four multiplexed connections (caller i on connection i mod 4):
    // whether the one connection's driver task is what limits the 50 callers.
    let raws: Arc<Vec<RawValkey>> = Arc::new(rt.block_on(async {
        let mut raws = Vec::new();
        for _ in 0..4 {
            raws.push(RawValkey::start(&d.valkey_url).await);
        }
        raws
    }));
    group.bench_function("raw-valkey-4-connections", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let raws = raws.clone();
            concurrently(iters, callers, move |i| {
                let raws = raws.clone();
                async move {
                    let slot = usize::try_from(i % 4).unwrap_or(0);
                    raws[slot]
                        .report(&team(i), &gateway_report(fresh_key()))
                        .await
                }
            })
        })
    });
    group.bench_function("raw-valkey-pipelined", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let raw = raw.clone();
            async move {
                let rounds = iters.div_ceil(callers);
                let start = Instant::now();
                for _ in 0..rounds {
                    let reports: Vec<_> = (0..callers)
                        .map(|i| (team(i), gateway_report(fresh_key())))
                        .collect();
                    raw.report_pipelined(&reports).await;
                }
                let nanos =
                    start.elapsed().as_nanos() * u128::from(iters) / u128::from(rounds * callers);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        })
    });
    // The ceiling: redis-benchmark's 50 clients on the same server, same script and call.
    if let Some(ceiling) = rt.block_on(RedisBenchmark::prepare(&d.valkey_url, 50)) {
        let shown = std::sync::Once::new();
        group.bench_function("redis-benchmark", |b| {
            shown.call_once(|| eprintln!("{}", ceiling.command_line(MIN_REQUESTS)));
            b.iter_custom(|iters| ceiling.time(iters))
        });
    }
    group.finish();
}

/// Reports per batch in `report_usage_batch_100`.
const BATCH: u64 = 100;

/// `BATCH` fresh-key reports spread over the [`TEAMS`] budgets, as one batch.
fn fresh_batch() -> Vec<(String, stowage::UsageReport)> {
    (0..BATCH)
        .map(|i| (team(i), gateway_report(fresh_key())))
        .collect()
}

/// Batches of 100 fresh-key reports at one caller through `report_usage_batch`, per deployment,
/// beside the raw batched baselines; throughput is counted in reports (100 per batch), to be read
/// beside the same deployment's `report_usage/fresh_key` (one report per call).
fn report_batch_100(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let mut group = c.benchmark_group("report_usage_batch_100");
    configure(&mut group);
    group.throughput(Throughput::Elements(BATCH));
    for (name, url) in d.urls() {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    let items = fresh_batch();
                    let answers = backend
                        .report_usage_batch(&items)
                        .await
                        .expect("report_usage_batch");
                    assert!(answers.iter().all(Result::is_ok), "every report applies");
                }
            })
        });
    }
    let raw_sqlite = rt.block_on(RawSqlite::start(&d.sqlite_url));
    group.bench_function("raw-sqlite-batched", |b| {
        b.iter(|| raw_sqlite.report_batch(&fresh_batch()))
    });
    let raw_pg = rt.block_on(RawPostgres::start(&d.postgres_url, 1));
    group.bench_function("raw-postgres-batched", |b| {
        b.to_async(rt).iter(|| {
            let raw = raw_pg.clone();
            async move { raw.report_batch(0, &fresh_batch()).await }
        })
    });
    let raw_vk = rt.block_on(RawValkey::start(&d.valkey_url));
    group.bench_function("raw-valkey-pipelined", |b| {
        b.to_async(rt).iter(|| {
            let raw = raw_vk.clone();
            async move { raw.report_pipelined(&fresh_batch()).await }
        })
    });
    group.finish();
}

/// What a gateway's admission costs: `reserve` of the most a call can cost, then `commit` of
/// what it cost, beside one `report_usage` of the same amounts, per backend in the same run.
fn reserve_commit_vs_report(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let mut group = c.benchmark_group("reserve_commit_vs_report");
    configure(&mut group);
    for (name, url) in d.urls() {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(format!("{name}/report_usage"), |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    backend
                        .report_usage(BUDGET, &gateway_report(fresh_key()))
                        .await
                        .expect("report")
                }
            })
        });
        group.bench_function(format!("{name}/reserve+commit"), |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    let request = gateway_reservation(fresh_key());
                    let receipt = backend.reserve(BUDGET, &request).await.expect("reserve");
                    assert!(receipt.outcome.is_reserved());
                    let actual = gateway_report(String::new()).dimensions;
                    backend
                        .commit(BUDGET, &request.id, &actual)
                        .await
                        .expect("commit")
                }
            })
        });
    }
    group.finish();
}

/// The gateway's reservation: twice the report's amounts, for 60 s.
fn gateway_reservation(id: String) -> stowage::ReserveRequest {
    let report = gateway_report(String::new());
    let mut request = stowage::ReserveRequest::new(id, 60_000);
    for (dimension, amount) in report.dimensions {
        request = request.add(dimension, amount * 2);
    }
    request
}

/// Key → team → org: one `report_usage_all` over three budgets beside three `report_usage`s, per
/// backend in the same run (one atomic step where `atomic_multi_budget`, composed on a cluster).
fn report_all_vs_three_reports(c: &mut Criterion) {
    let rt = runtime();
    let d = deployments();
    let mut group = c.benchmark_group("report_usage_all_3_vs_3_reports");
    configure(&mut group);
    let budgets = ["key-1", BUDGET, "org"];
    for (name, url) in d.urls() {
        let backend = rt.block_on(connect_prepared(&url));
        group.bench_function(format!("{name}/report_usage_all"), |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    backend
                        .report_usage_all(&budgets, &gateway_report(fresh_key()))
                        .await
                        .expect("report_usage_all")
                }
            })
        });
        group.bench_function(format!("{name}/3x_report_usage"), |b| {
            b.to_async(rt).iter(|| {
                let backend = backend.clone();
                async move {
                    let report = gateway_report(fresh_key());
                    for budget in budgets {
                        backend.report_usage(budget, &report).await.expect("report");
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(
    budget,
    report_fresh_key,
    reserve_commit_vs_report,
    report_all_vs_three_reports,
    report_windowed,
    report_replay,
    report_concurrent,
    report_valkey_50,
    report_batch_100
);
criterion_main!(budget);
