//! What one keyed `report_usage` costs a Valkey server, for `scripts/valkey-script-cost`.
//!
//! `valkey_cost call URL`: sets the hot path's policy (soft and hard limits on two dimensions,
//! no window) on a fresh namespace, loads `report_usage`, and prints, one per line, the EVALSHA
//! arguments stowage sends for a fresh-key report of two dimensions (sha, number of keys, keys,
//! arguments), with `__rand_int__` in the dedup key so that `redis-benchmark -r` makes every
//! request a fresh key.
//!
//! `valkey_cost memory URL N`: N fresh-key reports through the library on a fresh namespace, then
//! prints `used_memory_dataset` growth ÷ N (bytes per live dedup record) and the keys per report.

use stowage_core::{
    BudgetBackend, BudgetPolicy, Checked, ConnectOptions, DimensionLimit, PersistenceBackend,
    UsageReport, DEFAULT_DEDUP_TTL_MS, MAX_AMOUNT,
};
use stowage_valkey::raw::{report_usage_call, REPORT_USAGE_LUA};
use stowage_valkey::ValkeyBackend;

const BUDGET: &str = "team-0";

fn policy() -> BudgetPolicy {
    BudgetPolicy::new()
        .limit(
            "tokens",
            DimensionLimit::both(MAX_AMOUNT / 4, MAX_AMOUNT / 2),
        )
        .limit(
            "usd_micros",
            DimensionLimit::both(MAX_AMOUNT / 4, MAX_AMOUNT / 2),
        )
}

fn report(n: u64, key: &str) -> UsageReport {
    UsageReport::new()
        .add("tokens", 100 + n % 900)
        .add("usd_micros", n % 50)
        .dedup_key(key)
}

async fn open(url: &str) -> (Checked<ValkeyBackend>, String) {
    let namespace = stowage_testkit::unique_namespace("cost");
    let backend = ValkeyBackend::open(url, ConnectOptions::new().namespace(namespace.clone()))
        .await
        .expect("open");
    backend.initialize().await.expect("initialize");
    backend.set_policy(BUDGET, &policy()).await.expect("policy");
    (backend, namespace)
}

async fn server(url: &str) -> redis::aio::MultiplexedConnection {
    let url = url.replacen("valkey://", "redis://", 1);
    redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

async fn call(url: &str) {
    let (backend, _) = open(url).await;
    let key_namespace = backend.key_namespace().await.expect("namespace id");
    let mut conn = server(url).await;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(REPORT_USAGE_LUA)
        .query_async(&mut conn)
        .await
        .expect("SCRIPT LOAD");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let now = u64::try_from(now).expect("now");
    let (keys, args) = report_usage_call(
        &key_namespace,
        BUDGET,
        &report(7, "r__rand_int__"),
        now,
        DEFAULT_DEDUP_TTL_MS,
    );
    println!("{sha}");
    println!("{}", keys.len());
    for item in keys.iter().chain(args.iter()) {
        println!("{item}");
    }
}

async fn dataset(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    let bytes = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_dataset:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("used_memory_dataset");
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .expect("DBSIZE");
    (bytes, keys)
}

async fn memory(url: &str, n: u64) {
    let (backend, _) = open(url).await;
    let backend = std::sync::Arc::new(backend);
    // The budget's own keys exist before the measurement starts.
    backend
        .report_usage(BUDGET, &report(0, "warm-up"))
        .await
        .expect("report");
    let mut conn = server(url).await;
    let (before, keys_before) = dataset(&mut conn).await;
    let batch = 50;
    let mut i = 0;
    while i < n {
        let mut tasks = Vec::new();
        for j in i..(i + batch).min(n) {
            let backend = backend.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("w{}-r{j}", j % 50);
                backend.report_usage(BUDGET, &report(j, &key)).await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("report");
        }
        i += batch;
    }
    let (after, keys_after) = dataset(&mut conn).await;
    let grown = after.saturating_sub(before);
    println!(
        "reports {n}  keys +{}  used_memory_dataset +{grown}  bytes per live dedup record {}.{}",
        keys_after.saturating_sub(keys_before),
        grown / n,
        grown * 10 / n % 10
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("call") => call(&args[2]).await,
        Some("memory") => memory(&args[2], args[3].parse().expect("N")).await,
        _ => eprintln!("usage: valkey_cost call URL | valkey_cost memory URL N"),
    }
}
