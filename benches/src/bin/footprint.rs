//! Bytes per live dedup record and per record row, as the engine itself counts them.
//!
//! ```text
//! cargo run --release -p stowage-benches --bin footprint -- --url URL --reports N --rows N
//! cargo run --release -p stowage-benches --bin footprint -- --engine postgres|sqlite|valkey ...
//! ```
//!
//! Into a fresh namespace it writes `--reports` keyed reports with fresh keys (2 dimensions, over
//! 16 budgets, through `report_usage_batch` in batches of 1,000), then `--rows` record rows (small
//! JSON values, over 100 records, 16 writers at once), and measures the engine before, between
//! and after:
//!
//! - PostgreSQL: `pg_total_relation_size` of every table of the namespace's schema (indexes and
//!   TOAST included);
//! - SQLite: the database file plus its WAL after `PRAGMA wal_checkpoint(TRUNCATE)` (use a fresh
//!   file: the tables are shared by every namespace of the file);
//! - Valkey: `used_memory_dataset` of `INFO memory` (use a server of its own: every key on it
//!   counts; whatever key layout the backend has is what is measured).
//!
//! Bytes per dedup record are the growth during the reports over `--reports` (the 32 counters
//! of the 16 budgets included), bytes per row the growth during the rows over `--rows`.
//!
//! `--url` names the deployment; without it `--engine` takes `STOWAGE_POSTGRES_URL` or
//! `STOWAGE_VALKEY_URL`, else starts a throwaway server (`stowage_testkit::servers`, PostgreSQL
//! durable; Valkey needs `STOWAGE_VALKEY_SERVER`), or for SQLite a fresh file in a temporary
//! directory. Defaults: 100,000 reports, 100,000 rows.

use std::sync::Arc;

use sqlx::Connection;
use stowage::{Backend, ConnectOptions, UsageReport};
use stowage_testkit::servers::postgres::{self, PostgresServer, PostgresSettings};
use stowage_testkit::servers::valkey::{self, ValkeyServer, ValkeySettings};

/// Reports per `report_usage_batch` call.
const BATCH: usize = 1_000;
/// Concurrent writers of rows.
const WRITERS: usize = 16;

/// What the engine counts, in bytes.
enum Meter {
    Postgres { url: String, namespace: String },
    Sqlite { path: String },
    Valkey { url: String },
}

impl Meter {
    async fn bytes(&self) -> u64 {
        match self {
            Meter::Postgres { url, namespace } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                let id: i64 = sqlx::query_scalar(
                    "SELECT id FROM stowage_registry.namespaces WHERE name = $1",
                )
                .bind(namespace)
                .fetch_one(&mut conn)
                .await
                .expect("the namespace is registered");
                let bytes: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                )
                .bind(format!("stowage_ns_{id}"))
                .fetch_one(&mut conn)
                .await
                .expect("relation sizes");
                u64::try_from(bytes).expect("a size")
            }
            Meter::Sqlite { path } => {
                let conn = rusqlite::Connection::open(path).expect("open the file");
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .expect("checkpoint");
                let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                size(path) + size(&format!("{path}-wal"))
            }
            Meter::Valkey { url } => {
                let client =
                    redis::Client::open(url.replacen("valkey://", "redis://", 1)).expect("client");
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .expect("INFO memory");
                info.lines()
                    .find_map(|l| l.strip_prefix("used_memory_dataset:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("used_memory_dataset")
            }
        }
    }
}

struct Args {
    url: Option<String>,
    engine: Option<String>,
    reports: usize,
    rows: usize,
}

fn args() -> Args {
    let mut args = Args {
        url: None,
        engine: None,
        reports: 100_000,
        rows: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = Some(value()),
            "--engine" => args.engine = Some(value()),
            "--reports" => args.reports = value().parse().expect("--reports N"),
            "--rows" => args.rows = value().parse().expect("--rows N"),
            other => panic!("unknown argument {other}; see the doc comment of footprint.rs"),
        }
    }
    args
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut _pg_server: Option<PostgresServer> = None;
    let mut _valkey_server: Option<ValkeyServer> = None;
    let url = match (args.url, args.engine.as_deref()) {
        (Some(url), _) => url,
        (None, Some("postgres")) => std::env::var(postgres::URL_ENV).unwrap_or_else(|_| {
            let server = PostgresServer::start(PostgresSettings {
                durable: true,
                synchronous_commit: true,
                max_connections: 100,
            })
            .expect("start PostgreSQL");
            let url = server.url().to_owned();
            _pg_server = Some(server);
            url
        }),
        (None, Some("valkey")) => std::env::var(valkey::URL_ENV).unwrap_or_else(|_| {
            let server =
                ValkeyServer::start(ValkeySettings::default(), false).expect("start Valkey");
            let url = server.url();
            _valkey_server = Some(server);
            url
        }),
        (None, Some("sqlite")) => format!("sqlite://{}", dir.path().join("footprint.db").display()),
        _ => panic!("--url URL or --engine postgres|sqlite|valkey"),
    };
    let namespace = stowage_testkit::unique_namespace("footprint");
    let backend: Arc<dyn Backend> =
        stowage::connect_with(&url, ConnectOptions::new().namespace(namespace.clone()))
            .await
            .expect("connect and initialize");
    let meter = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("postgres" | "postgresql") => Meter::Postgres {
            url: url.clone(),
            namespace: namespace.clone(),
        },
        Some("sqlite") => Meter::Sqlite {
            path: url["sqlite://".len()..]
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        },
        Some("valkey") => Meter::Valkey { url: url.clone() },
        other => panic!("no meter for scheme {other:?}"),
    };

    let before = meter.bytes().await;
    let mut written = 0;
    while written < args.reports {
        let n = BATCH.min(args.reports - written);
        let items: Vec<(String, UsageReport)> = (written..written + n)
            .map(|i| {
                (
                    format!("budget-{}", i % 16),
                    UsageReport::new()
                        .add("tokens", 100 + u64::try_from(i % 900).expect("small"))
                        .add("requests", 1)
                        .dedup_key(format!("req-{i:012}")),
                )
            })
            .collect();
        for answer in backend.report_usage_batch(&items).await.expect("a batch") {
            assert!(!answer.expect("a report").replayed, "fresh keys");
        }
        written += n;
    }
    let middle = meter.bytes().await;

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let backend = backend.clone();
        let rows = args.rows;
        writers.spawn(async move {
            for i in (w..rows).step_by(WRITERS) {
                let value = serde_json::json!({"n": i, "ok": true, "tag": "abc"});
                let at = 1_700_000_000_000 + u64::try_from(i).expect("small");
                backend
                    .store(&format!("record-{}", i % 100), &value, at)
                    .await
                    .expect("store");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer");
    }
    let after = meter.bytes().await;

    // Bytes per item with one decimal, in integers.
    let per = |grown: u64, n: usize| {
        let n = u64::try_from(n).expect("a count").max(1);
        let tenths = grown * 10 / n;
        format!("{}.{}", tenths / 10, tenths % 10)
    };
    let dedup = middle.saturating_sub(before);
    let rows = after.saturating_sub(middle);
    println!("engine: {url} (namespace {namespace})");
    println!("bytes before: {before}, after reports: {middle}, after rows: {after}");
    println!(
        "dedup records: {} keyed reports (2 dimensions, 16 budgets): +{dedup} bytes = {} bytes per live dedup record",
        args.reports,
        per(dedup, args.reports)
    );
    println!(
        "record rows: {} rows (100 records): +{rows} bytes = {} bytes per row",
        args.rows,
        per(rows, args.rows)
    );
    drop(backend);
}
