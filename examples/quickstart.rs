//! A tour of stowage on the embedded default (SQLite): budgets with dedup keys, and JSON readings.
//!
//! Run: `cargo run --example quickstart` (or pass a URL, e.g. `cargo run --example quickstart -- memory://`).

use serde_json::json;
use stowage::{
    BudgetPolicy, DimensionLimit, ErrorKind, QueryParams, UsageOutcome, UsageReceipt, UsageReport,
};

fn describe(receipt: &UsageReceipt) -> String {
    let replay = if receipt.replayed {
        " (replayed: nothing applied again)"
    } else {
        ""
    };
    let outcome = match &receipt.outcome {
        UsageOutcome::Ok => "ok".to_owned(),
        UsageOutcome::SoftBreach(breaches) => breaches
            .iter()
            .map(|b| {
                let alert = if b.crossed {
                    ", just crossed: alert once"
                } else {
                    ""
                };
                format!(
                    "soft limit on {}: {} > {}{alert}",
                    b.dimension, b.usage, b.limit
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        UsageOutcome::HardBreach(breaches) => breaches
            .iter()
            .map(|b| {
                format!(
                    "REFUSED by hard limit on {}: usage {} + this report > {}",
                    b.dimension, b.usage, b.limit
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    format!("{outcome}{replay}")
}

#[tokio::main]
async fn main() -> stowage::Result<()> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let path = std::env::temp_dir().join("stowage-quickstart.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            format!("sqlite://{}", path.display())
        }
    };
    let store = stowage::connect(&url).await?;
    println!("connected to {url} ({:?})\n", store.capabilities());

    // Budgets: tokens and money (in micro-dollars, integers only) with soft and hard limits.
    println!("== budget \"team-a\": tokens soft 8000 / hard 10000, usd_micros hard 2000000");
    let policy = BudgetPolicy::new()
        .limit("tokens", DimensionLimit::both(8_000, 10_000))
        .limit("usd_micros", DimensionLimit::hard(2_000_000));
    store.set_policy("team-a", &policy).await?;

    let request = |tokens: u64, usd: u64, key: &str| {
        UsageReport::new()
            .add("tokens", tokens)
            .add("usd_micros", usd)
            .dedup_key(key)
    };
    let steps = [
        ("req-1: 5000 tokens", request(5_000, 900_000, "req-1")),
        (
            "req-1 retried by the gateway",
            request(5_000, 900_000, "req-1"),
        ),
        ("req-2: 3500 tokens", request(3_500, 600_000, "req-2")),
        ("req-3: 2000 tokens", request(2_000, 300_000, "req-3")),
        (
            "req-3 retried after limits",
            request(2_000, 300_000, "req-3"),
        ),
    ];
    for (label, report) in &steps {
        let receipt = store.report_usage("team-a", report).await?;
        println!("{label:<32} -> {}", describe(&receipt));
    }
    match store.report_usage("team-a", &request(1, 1, "req-1")).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            println!(
                "{:<32} -> Conflict: {}",
                "req-1 reused with other numbers",
                e.message()
            )
        }
        other => println!("unexpected: {other:?}"),
    }
    println!("usage now: {:?}\n", store.usage("team-a").await?.counters);

    // Readings: JSON values per record, queried by pattern and time window.
    println!("== readings");
    let readings = [
        ("sensor::kitchen::temp", 1_000, json!({"celsius": 21.5})),
        ("sensor::kitchen::temp", 2_000, json!({"celsius": 21.7})),
        ("sensor::kitchen::temp", 3_000, json!({"celsius": 22.0})),
        ("sensor::garage::temp", 2_500, json!({"celsius": 9.25})),
        ("sensor::garage::door", 2_600, json!({"open": true})),
    ];
    for (record, at, value) in &readings {
        store.store(record, value, *at).await?;
    }
    let temps = store
        .query(
            "sensor::*::temp",
            QueryParams::new()
                .start_time(1_500)
                .end_time(3_000)
                .limit_per_record(2),
        )
        .await?;
    println!("sensor::*::temp between 1500 and 3000 ms, newest 2 per record:");
    for row in temps {
        println!(
            "  {:<24} at {:>5}: {}",
            row.record_name, row.stored_at, row.value
        );
    }
    let removed = store.cleanup(2_000).await?;
    println!("cleanup(2000) removed {removed} reading(s) older than 2000 ms");
    Ok(())
}
