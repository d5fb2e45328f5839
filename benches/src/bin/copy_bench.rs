//! `stowage::copy` from SQLite to PostgreSQL and to Valkey: items per second and the peak RSS of
//! the copying process, for growing record counts (issue 14).
//!
//! ```text
//! cargo run --release -p stowage-benches --bin copy_bench -- \
//!     --records 100000,1000000 --budgets 100000 --to postgres,valkey [--verify] [--dir DIR]
//! ```
//!
//! For each record count N it builds a SQLite source (cached in `--dir`, default
//! `target/copy-bench`, as `source-N-M.db`): a dump written directly in canonical order (M
//! budgets, each a policy, counters and a live dedup record; N record rows over 300 record names,
//! ~100-byte JSON values, every tenth with an idempotency key), then imported with
//! `Backend::import` into a fresh `sqlite://` file: the engine's own load path, no knowledge of its
//! schema.
//!
//! Then, for each target (`postgres`: a throwaway durable server, fsync and synchronous_commit on;
//! `valkey`: a throwaway standalone server; `sqlite`: a fresh file; or URLs in
//! `STOWAGE_POSTGRES_URL` / `STOWAGE_VALKEY_URL`), it spawns itself as a child that does only the
//! copy (`copy_bench child FROM TO TO_NAMESPACE`: connect both ends, `stowage::copy`, print one JSON
//! line) and reads the child's peak resident set size (`VmHWM` of `/proc/self/status`: the value
//! `getrusage` reports as `ru_maxrss`) and its RSS right after connecting. `--verify` compares the
//! digests of both ends afterwards (outside the measured child). The target namespace is purged
//! after each run. Prints a Markdown table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use stowage::dump::{CountersItem, DedupItem, DumpItem, PolicyItem, RecordItem};
use stowage::{Backend, BudgetPolicy, ConnectOptions, DimensionLimit, UsageOutcome, UsageReport};
use stowage_testkit::servers::postgres::{self, PostgresServer, PostgresSettings};
use stowage_testkit::servers::valkey::{self, ValkeyServer, ValkeySettings};

/// Record names the rows are spread over.
const RECORD_NAMES: u64 = 300;
/// The source's namespace.
const SOURCE_NAMESPACE: &str = "bench";

#[derive(Debug)]
struct Args {
    records: Vec<u64>,
    budgets: u64,
    targets: Vec<String>,
    dir: PathBuf,
    verify: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: copy_bench [--records N,N…] [--budgets M] [--to postgres,valkey,sqlite] \
         [--dir DIR] [--verify]\n       copy_bench child FROM_URL TO_URL TO_NAMESPACE"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut args = Args {
        records: vec![100_000, 1_000_000],
        budgets: 100_000,
        targets: vec!["postgres".to_owned(), "valkey".to_owned()],
        dir: PathBuf::from("target/copy-bench"),
        verify: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--records" => {
                args.records = value()
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--budgets" => args.budgets = value().parse().unwrap_or_else(|_| usage()),
            "--to" => args.targets = value().split(',').map(str::to_owned).collect(),
            "--dir" => args.dir = PathBuf::from(value()),
            "--verify" => args.verify = true,
            _ => usage(),
        }
    }
    args
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("child") {
        let (Some(from), Some(to), Some(ns)) = (argv.next(), argv.next(), argv.next()) else {
            usage()
        };
        return child(&from, &to, &ns);
    }
    let args = args();
    std::fs::create_dir_all(&args.dir).expect("create --dir");
    let runtime = runtime();
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| Target::start(t, &args.dir))
        .collect();
    let mut rows = Vec::new();
    for &n in &args.records {
        let source = runtime.block_on(source(&args.dir, n, args.budgets));
        for target in &targets {
            let namespace = stowage_testkit::unique_namespace("copy");
            eprintln!(
                "copy: {n} records, {} budgets → {}",
                args.budgets, target.name
            );
            let run = copy_in_child(&source, &target.url, &namespace);
            let verified = if args.verify {
                Some(runtime.block_on(same_digest(&source, &target.url, &namespace)))
            } else {
                None
            };
            runtime.block_on(async {
                connect(&target.url, &namespace)
                    .await
                    .purge()
                    .await
                    .expect("purge the target namespace");
            });
            eprintln!("  {run:?} verified: {verified:?}");
            rows.push((n, args.budgets, target.name.clone(), run, verified));
        }
    }
    println!(
        "| records | budgets | target | items | MB | seconds | items/s | MB/s | RSS after connect (MiB) | peak RSS (MiB) | digests |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (n, m, target, run, verified) in rows {
        let seconds = run.millis as f64 / 1000.0;
        println!(
            "| {n} | {m} | sqlite → {target} | {} | {:.1} | {seconds:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            run.items,
            run.bytes as f64 / 1e6,
            run.items as f64 / seconds,
            run.bytes as f64 / 1e6 / seconds,
            run.rss_connected_kib as f64 / 1024.0,
            run.peak_rss_kib as f64 / 1024.0,
            match verified {
                Some(true) => "equal",
                Some(false) => "DIFFER",
                None => "-",
            }
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(url: &str, namespace: &str) -> std::sync::Arc<dyn Backend> {
    stowage::connect_with(url, ConnectOptions::new().namespace(namespace))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A copy target, with the server it runs on (kept alive while the bench runs).
struct Target {
    name: String,
    url: String,
    _postgres: Option<PostgresServer>,
    _valkey: Option<ValkeyServer>,
}

impl Target {
    fn start(name: &str, dir: &Path) -> Target {
        let mut target = Target {
            name: name.to_owned(),
            url: String::new(),
            _postgres: None,
            _valkey: None,
        };
        match name {
            "postgres" => match std::env::var(postgres::URL_ENV) {
                Ok(url) => target.url = url,
                Err(_) => {
                    let server = PostgresServer::start(PostgresSettings {
                        durable: true,
                        synchronous_commit: true,
                        max_connections: 50,
                    })
                    .expect("start PostgreSQL");
                    target.url = server.url().to_owned();
                    target._postgres = Some(server);
                }
            },
            "valkey" => match std::env::var(valkey::URL_ENV) {
                Ok(url) => target.url = url,
                Err(_) => {
                    let server = ValkeyServer::start(ValkeySettings::default(), false)
                        .expect("start Valkey");
                    target.url = server.url();
                    target._valkey = Some(server);
                }
            },
            "sqlite" => {
                let path = dir.join(format!("target-{}.db", std::process::id()));
                gone(std::fs::remove_file(&path), &path);
                target.url = format!("sqlite://{}", path.display());
            }
            _ => usage(),
        }
        target
    }
}

/// A removal or move of a file that may not exist: done, or nothing to do; anything else stops.
fn gone(result: std::io::Result<()>, path: &Path) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The SQLite source of `n` records and `m` budgets (built once, then reused).
async fn source(dir: &Path, n: u64, m: u64) -> String {
    let path = dir.join(format!("source-{n}-{m}.db"));
    let url = format!("sqlite://{}", path.display());
    if path.exists() {
        return url;
    }
    let dump_path = dir.join(format!("source-{n}-{m}.dump"));
    let started = Instant::now();
    let items = write_dump(&dump_path, n, m);
    let written = started.elapsed();
    let building = dir.join(format!("source-{n}-{m}.db.building"));
    for suffix in ["", "-wal", "-shm"] {
        let stale = format!("{}{suffix}", building.display());
        gone(std::fs::remove_file(&stale), Path::new(&stale));
    }
    let store = connect(
        &format!("sqlite://{}", building.display()),
        SOURCE_NAMESPACE,
    )
    .await;
    let file = tokio::fs::File::open(&dump_path)
        .await
        .expect("open the dump");
    let mut input = tokio::io::BufReader::with_capacity(1 << 20, file);
    let started_import = Instant::now();
    let summary = store.import(&mut input).await.expect("import the source");
    assert_eq!(summary.items, items);
    drop(store);
    std::fs::rename(&building, &path).expect("rename the source");
    for suffix in ["-wal", "-shm"] {
        let from = format!("{}{suffix}", building.display());
        gone(
            std::fs::rename(&from, format!("{}{suffix}", path.display())),
            Path::new(&from),
        );
    }
    gone(std::fs::remove_file(&dump_path), &dump_path);
    eprintln!(
        "source {}: {items} items, dump written in {:.1}s, imported in {:.1}s",
        path.display(),
        written.as_secs_f64(),
        started_import.elapsed().as_secs_f64()
    );
    url
}

/// Writes a dump of `m` budgets and `n` record rows in canonical order; returns the item count.
fn write_dump(path: &Path, n: u64, m: u64) -> u64 {
    let now = stowage::Clock::now_ms(&stowage::SystemClock);
    let file = std::fs::File::create(path).expect("create the dump");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let header = json!({"format": "stowage-dump", "version": 1, "namespace": SOURCE_NAMESPACE, "exported_at": now});
    writeln!(out, "{header}").expect("write");
    let mut items = 0u64;
    let mut line = Vec::with_capacity(256);
    let mut put = |out: &mut std::io::BufWriter<std::fs::File>, item: DumpItem| {
        line.clear();
        item.write_line(&mut line);
        line.push(b'\n');
        out.write_all(&line).expect("write");
        items += 1;
    };
    let budget = |i: u64| format!("tenant-{i:07}");
    let usage = |i: u64| (i * 7919 % 800_000, i * 104_729 % 4_000_000);
    for i in 0..m {
        let policy = BudgetPolicy::new()
            .limit("tokens", DimensionLimit::both(800_000, 1_000_000))
            .limit("usd_micros", DimensionLimit::hard(5_000_000));
        put(
            &mut out,
            DumpItem::Policy(PolicyItem::new(budget(i), policy)),
        );
    }
    for i in 0..m {
        let (tokens, usd) = usage(i);
        put(
            &mut out,
            DumpItem::Counters(CountersItem {
                budget: budget(i),
                window: None,
                values: [
                    ("tokens".to_owned(), tokens + 1),
                    ("usd_micros".to_owned(), usd + 1),
                ]
                .into(),
            }),
        );
    }
    for i in 0..m {
        let (tokens, usd) = usage(i);
        let report = UsageReport::new()
            .add("tokens", tokens + 1)
            .add("usd_micros", usd + 1)
            .dedup_key(format!("req-{i:07}"));
        put(
            &mut out,
            DumpItem::Dedup(DedupItem {
                budget: budget(i),
                key: format!("req-{i:07}"),
                fingerprint: stowage::raw::dedup_fingerprint(&report),
                outcome: UsageOutcome::Ok,
                expires_at: now + 7 * 24 * 3_600_000,
            }),
        );
    }
    for name in 0..RECORD_NAMES {
        let rows = n / RECORD_NAMES + u64::from(name < n % RECORD_NAMES);
        for j in 0..rows {
            let value = json!({
                "celsius": 18.0 + (j % 90) as f64 / 10.0,
                "humidity": 30 + j % 40,
                "battery": 100 - j % 100,
                "firmware": "2.4.1",
                "status": "ok",
                "seq": j,
            });
            put(
                &mut out,
                DumpItem::Record(RecordItem {
                    name: format!("sensor::{name:04}::reading"),
                    stored_at: now - 30 * 24 * 3_600_000 + j * 1_000,
                    idempotency_key: (j % 10 == 0).then(|| format!("msg-{j}")),
                    value: value.to_string(),
                }),
            );
        }
    }
    writeln!(out, "{}", json!({"end": "stowage-dump", "items": items})).expect("write");
    out.flush().expect("flush the dump");
    items
}

/// What the child measured.
#[derive(Debug)]
struct Run {
    items: u64,
    bytes: u64,
    millis: u64,
    rss_connected_kib: u64,
    peak_rss_kib: u64,
}

/// Runs the copy in a child process of its own and reads what it measured.
fn copy_in_child(from: &str, to: &str, namespace: &str) -> Run {
    let out = Command::new(std::env::current_exe().expect("this program"))
        .args(["child", from, to, namespace])
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "the copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the child's JSON line");
    let field = |name: &str| {
        line[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    Run {
        items: field("items"),
        bytes: field("bytes"),
        millis: field("millis"),
        rss_connected_kib: field("rss_connected_kib"),
        peak_rss_kib: field("peak_rss_kib"),
    }
}

/// `VmHWM` (peak resident set size) or `VmRSS` of this process, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// The child: connects both ends, copies, prints what it measured as one JSON line.
fn child(from: &str, to: &str, namespace: &str) {
    runtime().block_on(async {
        let source = connect(from, SOURCE_NAMESPACE).await;
        let target = connect(to, namespace).await;
        let rss_connected_kib = status_kib("VmRSS:");
        let started = Instant::now();
        let summary = stowage::copy(source.as_ref(), target.as_ref(), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("copy: {e}"));
        let millis = u64::try_from(started.elapsed().as_millis()).expect("millis");
        println!(
            "{}",
            json!({
                "items": summary.items,
                "bytes": summary.bytes,
                "millis": millis,
                "rss_connected_kib": rss_connected_kib,
                "peak_rss_kib": status_kib("VmHWM:"),
            })
        );
    });
}

/// Whether the source and the copy have the same digest.
async fn same_digest(source: &str, target: &str, namespace: &str) -> bool {
    let (a, b) = tokio::join!(
        async { connect(source, SOURCE_NAMESPACE).await.digest().await },
        async { connect(target, namespace).await.digest().await },
    );
    a.expect("digest of the source") == b.expect("digest of the target")
}
