//! `stowage bench`: a fixed, seeded mixed workload against each backend in turn, side by side.
//!
//! Each of `--concurrency` workers draws operations from its own seeded generator: 40 % reports
//! with a fresh dedup key, 15 % replays of one of its earlier keys, 30 % stores of a JSON reading,
//! 15 % pattern queries with a per-record limit. Latencies are measured per operation.
//!
//! `--mix report` sends only fresh-key reports; `--mix batch` sends batches of `--batch-size`
//! fresh-key reports through `report_usage_batch`, counted twice: as reports (`report`) and as
//! batches (`batch`); the latency of each is that of its batch (a report is answered when its
//! batch is).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use stowage::{
    Backend, BudgetPolicy, ConnectOptions, DimensionLimit, Error, QueryParams, Result, UsageReport,
};
use stowage_testkit::rng::Rng;

use crate::results::{BackendStats, OpStats, OPS};
use crate::spawn::Spawned;

/// Arguments of `stowage bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A deployment to include (repeatable); with neither --url nor --spawn, an embedded SQLite file.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Start throwaway local servers and include them: postgres,valkey,valkey-cluster.
    #[arg(long)]
    spawn: Option<String>,
    /// Also include the embedded SQLite default next to --url/--spawn.
    #[arg(long)]
    with_sqlite: bool,
    /// Concurrent callers per backend.
    #[arg(long, default_value_t = 8)]
    concurrency: u64,
    /// How long each backend runs, e.g. 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
    duration: Duration,
    /// Seed of the workload (the same seed gives the same operations).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `mixed` (reports, replays, stores, queries), `report` (only reports with fresh keys) or
    /// `batch` (batches of --batch-size fresh-key reports through `report_usage_batch`).
    #[arg(long, default_value = "mixed", value_parser = ["mixed", "report", "batch"])]
    mix: String,
    /// Reports per `report_usage_batch` call of `--mix batch`.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Write results.json and chart.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Slots of [`OPS`] the samples are kept in.
const REPORT: usize = 0;
const BATCH: usize = 4;

#[derive(Debug, Default)]
struct Samples {
    nanos: [Vec<u64>; OPS.len()],
    errors: [u64; OPS.len()],
}

/// What the workers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Reports, replays, stores and queries.
    Mixed,
    /// Fresh-key reports only.
    Report,
    /// Batches of this many fresh-key reports.
    Batch(usize),
}

async fn worker(
    backend: Arc<dyn Backend>,
    seed: u64,
    id: u64,
    until: Instant,
    mix: Mix,
) -> Samples {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    if let Mix::Batch(size) = mix {
        return batch_worker(&*backend, &mut rng, id, until, size).await;
    }
    let only_reports = mix == Mix::Report;
    let mut samples = Samples::default();
    let mut sent: Vec<UsageReport> = Vec::new();
    let mut n = 0u64;
    let budget = format!("team-{}", id % 4);
    while Instant::now() < until {
        n += 1;
        let roll = if only_reports { 0 } else { rng.below(100) };
        let (slot, started) = (
            usize::from(roll >= 40) + usize::from(roll >= 55) + usize::from(roll >= 85),
            Instant::now(),
        );
        let ok = match slot {
            0 => {
                let report = UsageReport::new()
                    .add("tokens", 100 + rng.below(900))
                    .add("usd_micros", rng.below(50))
                    .dedup_key(format!("w{id}-r{n}"));
                let ok = backend.report_usage(&budget, &report).await.is_ok();
                if sent.len() == 64 {
                    sent.swap_remove(rng.index(64));
                }
                sent.push(report);
                ok
            }
            1 => {
                // A gateway retry: exactly an earlier report of this worker (the first is fresh).
                let report = if sent.is_empty() {
                    UsageReport::new()
                        .add("tokens", 1)
                        .dedup_key(format!("w{id}-first"))
                } else {
                    sent[rng.index(sent.len())].clone()
                };
                backend.report_usage(&budget, &report).await.is_ok()
            }
            2 => {
                let record = format!("sensor::{id}::{}", rng.below(20));
                let value = json!({"celsius": rng.below(400), "seq": n});
                backend.store(&record, &value, n).await.is_ok()
            }
            _ => backend
                .query(
                    &format!("sensor::{id}::*"),
                    QueryParams::new().limit_per_record(5),
                )
                .await
                .is_ok(),
        };
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if ok {
            samples.nanos[slot].push(elapsed);
        } else {
            samples.errors[slot] += 1;
        }
    }
    samples
}

/// A worker of `--mix batch`: batches of `size` fresh-key reports spread over the four budgets.
/// Each report answered `Ok` counts one `report`, each error in a slot one report error; each
/// batch counts one `batch` (an outer `Err` is a batch error, its reports uncounted). Both take
/// the batch's latency.
async fn batch_worker(
    backend: &dyn Backend,
    rng: &mut Rng,
    id: u64,
    until: Instant,
    size: usize,
) -> Samples {
    let mut samples = Samples::default();
    let mut n = 0u64;
    while Instant::now() < until {
        let items: Vec<(String, UsageReport)> = (0..size)
            .map(|_| {
                n += 1;
                let report = UsageReport::new()
                    .add("tokens", 100 + rng.below(900))
                    .add("usd_micros", rng.below(50))
                    .dedup_key(format!("w{id}-b{n}"));
                (format!("team-{}", (id + n) % 4), report)
            })
            .collect();
        let started = Instant::now();
        let answers = backend.report_usage_batch(&items).await;
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match answers {
            Ok(answers) => {
                samples.nanos[BATCH].push(elapsed);
                for answer in answers {
                    if answer.is_ok() {
                        samples.nanos[REPORT].push(elapsed);
                    } else {
                        samples.errors[REPORT] += 1;
                    }
                }
            }
            Err(_) => samples.errors[BATCH] += 1,
        }
    }
    samples
}

fn percentile(sorted: &[u64], per_mille: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() - 1) * per_mille / 1000]
}

async fn bench_one(
    name: &str,
    url: &str,
    args: &BenchArgs,
    progress: &ProgressBar,
) -> Result<BackendStats> {
    let namespace = stowage_testkit::unique_namespace("bench");
    let backend = stowage::connect_with(url, ConnectOptions::new().namespace(namespace)).await?;
    for team in 0..4 {
        let policy = BudgetPolicy::new()
            .limit(
                "tokens",
                DimensionLimit::both(stowage::MAX_AMOUNT / 4, stowage::MAX_AMOUNT / 2),
            )
            .limit("usd_micros", DimensionLimit::hard(stowage::MAX_AMOUNT / 2));
        backend.set_policy(&format!("team-{team}"), &policy).await?;
    }
    progress.set_message(name.to_owned());
    let start = Instant::now();
    let until = start + args.duration;
    let ticker = {
        let progress = progress.clone();
        let total = args.duration;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let done = start.elapsed().min(total);
                progress.set_position(u64::try_from(done.as_millis()).unwrap_or(u64::MAX));
                if done >= total {
                    break;
                }
            }
        })
    };
    let mix = match args.mix.as_str() {
        "report" => Mix::Report,
        "batch" => Mix::Batch(args.batch_size),
        _ => Mix::Mixed,
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|id| tokio::spawn(worker(backend.clone(), args.seed, id, until, mix)))
        .collect();
    let mut all = Samples::default();
    for w in workers {
        let s = w
            .await
            .map_err(|e| Error::internal(format!("bench worker: {e}")))?;
        for i in 0..OPS.len() {
            all.nanos[i].extend(&s.nanos[i]);
            all.errors[i] += s.errors[i];
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    let mut ops = Vec::new();
    // The table's operations: the four of the workloads, or a batch's two.
    let sent = |i: usize| (i == BATCH) == matches!(mix, Mix::Batch(_)) || i == REPORT;
    for (i, op) in OPS.iter().enumerate().filter(|(i, _)| sent(*i)) {
        let samples = &mut all.nanos[i];
        samples.sort_unstable();
        let count = u64::try_from(samples.len()).unwrap_or(u64::MAX);
        let per_sec = u128::from(count) * 1_000_000 / elapsed.as_micros().max(1);
        ops.push(OpStats {
            op,
            count,
            ops_per_sec: u64::try_from(per_sec).unwrap_or(u64::MAX),
            p50_us: percentile(samples, 500) / 1_000,
            p99_us: percentile(samples, 990) / 1_000,
            errors: all.errors[i],
        });
    }
    Ok(BackendStats {
        name: name.to_owned(),
        ops,
    })
}

fn table(results: &[BackendStats]) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>10} {:>10} {:>10} {:>8}\n",
        "backend", "op", "ops/s", "p50 µs", "p99 µs", "errors"
    );
    for backend in results {
        for op in backend.ops.iter().filter(|o| o.count > 0 || o.errors > 0) {
            out.push_str(&format!(
                "{:<16} {:<8} {:>10} {:>10} {:>10} {:>8}\n",
                backend.name, op.op, op.ops_per_sec, op.p50_us, op.p99_us, op.errors
            ));
        }
    }
    out
}

/// Runs the benchmark and prints the table.
pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.concurrency == 0 {
        return Err(Error::invalid_input(
            "bench: --concurrency must be at least 1",
        ));
    }
    if args.mix == "batch" && !(1..=stowage::MAX_BATCH_ITEMS).contains(&args.batch_size) {
        return Err(Error::invalid_input(format!(
            "bench: --batch-size must be 1 to {}",
            stowage::MAX_BATCH_ITEMS
        )));
    }
    let mut spawned = Spawned::default();
    let dir = std::env::temp_dir().join(format!("stowage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::internal(format!("bench: temp dir: {e}")))?;
    let sqlite = (
        "sqlite".to_owned(),
        format!("sqlite://{}", dir.join("bench.db").display()),
    );
    let mut targets: Vec<(String, String)> = Vec::new();
    if (args.urls.is_empty() && args.spawn.is_none()) || args.with_sqlite {
        targets.push(sqlite);
    }
    for url in &args.urls {
        let name = url.split("://").next().unwrap_or(url).to_owned();
        targets.push((name, url.clone()));
    }
    if let Some(list) = &args.spawn {
        targets.extend(spawned.start(list)?);
    }
    let style =
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} ms").expect("template");
    let mut results = Vec::new();
    for (name, url) in &targets {
        let progress = if args.no_progress {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX))
                .with_style(style.clone())
        };
        let stats = bench_one(name, url, &args, &progress).await;
        progress.finish_and_clear();
        results.push(stats?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let batches = if args.mix == "batch" {
        format!(" of {} reports (latency per batch)", args.batch_size)
    } else {
        String::new()
    };
    println!(
        "stowage bench: {} workload{batches}, seed {}, {} callers, {:?} per backend\n",
        args.mix, args.seed, args.concurrency, args.duration
    );
    print!("{}", table(&results));
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)
            .map_err(|e| Error::invalid_input(format!("bench: --out {}: {e}", out.display())))?;
        let report = json!({
            "mix": args.mix,
            "batch_size": (args.mix == "batch").then_some(args.batch_size),
            "seed": args.seed,
            "concurrency": args.concurrency,
            "duration_ms": u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
            "backends": results,
        });
        let write = |file: &str, text: String| {
            std::fs::write(out.join(file), text).map_err(|e| {
                Error::invalid_input(format!("bench: writing {}: {e}", out.join(file).display()))
            })
        };
        write(
            "results.json",
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )?;
        write("chart.svg", crate::chart::svg(&results))?;
        println!(
            "\nwrote {} and {}",
            out.join("results.json").display(),
            out.join("chart.svg").display()
        );
    }
    let errors: u64 = results
        .iter()
        .flat_map(|b| b.ops.iter())
        .map(|o| o.errors)
        .sum();
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
