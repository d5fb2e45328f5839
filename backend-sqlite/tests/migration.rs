//! Migration 0002: dedup records written under schema 1 get `written_at + 24 h` (capped) as expiry.
//! Migration 0005: the fingerprint texts schemas 1 to 4 stored become digests, so a retry replays.
//! Migration 0004: a schema-3 database gains the reservation tables and keeps its data.

mod common;

use std::sync::Arc;

use rusqlite::params;
use stowage_core::raw::{dedup_fingerprint, dedup_fingerprint_text, encode_outcome};
use stowage_core::{
    BudgetBackend, ConnectOptions, ManualClock, PersistenceBackend, ReserveOutcome, ReserveRequest,
    UsageOutcome, UsageReport, DEFAULT_DEDUP_TTL_MS, MAX_AMOUNT,
};
use stowage_sqlite::SqliteBackend;

const SCHEMA_1: &str = include_str!("../migrations/0001_initial.sql");
const SCHEMA_2: &str = include_str!("../migrations/0002_dedup_expiry.sql");
const SCHEMA_3: &str = include_str!("../migrations/0003_windows.sql");

#[tokio::test]
async fn records_of_schema_1_get_the_default_ttl_as_expiry() {
    let url = common::fresh_file_url("migrate");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let report = UsageReport::new().add("t", 1).dedup_key("old");
    let near_max = i64::try_from(MAX_AMOUNT - 5).unwrap();
    {
        // A database as schema version 1 left it, with two dedup records.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_1).unwrap();
        conn.execute_batch(
            "CREATE TABLE stowage_migrations (version INTEGER PRIMARY KEY,
                 applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO stowage_migrations (version) VALUES (1);",
        )
        .unwrap();
        for (key, written_at) in [("old", 1_000), ("late", near_max)] {
            conn.execute(
                "INSERT INTO stowage_dedup (ns, budget, dedup_key, fingerprint, outcome, written_at)
                 VALUES ('n', 'b', ?1, ?2, ?3, ?4)",
                params![
                    key,
                    // What versions 1 to 4 stored: the text, not its digest.
                    dedup_fingerprint_text(&report),
                    encode_outcome(&UsageOutcome::Ok),
                    written_at
                ],
            )
            .unwrap();
        }
    }
    let clock = Arc::new(ManualClock::new(1_000 + DEFAULT_DEDUP_TTL_MS - 1));
    // A handle with a 1 s TTL: the old record still lives by its own (backfilled) expiry.
    let backend = SqliteBackend::open(
        &url,
        ConnectOptions::new()
            .namespace("n")
            .clock(clock.clone())
            .dedup_ttl_ms(1_000),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let expiries: Vec<(String, i64, String)> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut s = conn
            .prepare(
                "SELECT dedup_key, expires_at, fingerprint FROM stowage_dedup ORDER BY dedup_key",
            )
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let digest = dedup_fingerprint(&report);
    assert_eq!(
        expiries,
        vec![
            ("late".to_owned(), i64::MAX, digest.clone()),
            ("old".to_owned(), 1_000 + 86_400_000, digest),
        ]
    );
    // The garbage collection's search is served by the expiry index.
    let plan: Vec<String> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut s = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT budget, dedup_key FROM stowage_dedup
                 WHERE ns = 'n' AND expires_at <= 5 LIMIT 8",
            )
            .unwrap();
        s.query_map([], |r| r.get(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert!(
        plan.iter()
            .any(|step| step.contains("stowage_dedup_by_expiry")),
        "{plan:?}"
    );
    assert!(backend.report_usage("b", &report).await.unwrap().replayed);
    assert!(backend.usage("b").await.unwrap().counters.is_empty());
    clock.advance(1);
    assert!(!backend.report_usage("b", &report).await.unwrap().replayed);
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 1);
}

#[tokio::test]
async fn a_schema_3_database_gains_reservations_and_keeps_its_counters() {
    let url = common::fresh_file_url("migrate-4");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_1).unwrap();
        conn.execute_batch(SCHEMA_2).unwrap();
        conn.execute_batch(SCHEMA_3).unwrap();
        conn.execute_batch(
            "CREATE TABLE stowage_migrations (version INTEGER PRIMARY KEY,
                 applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO stowage_migrations (version) VALUES (1), (2), (3);
             INSERT INTO stowage_counters (ns, budget, dimension, value)
                 VALUES ('default', 'b', 't', 40);",
        )
        .unwrap();
    }
    let clock = Arc::new(ManualClock::new(1_000));
    let backend = SqliteBackend::open(&url, ConnectOptions::new().clock(clock))
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT MAX(version) FROM stowage_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, 5);
    let receipt = backend
        .reserve("b", &ReserveRequest::new("r", 100).add("t", 2))
        .await
        .unwrap();
    assert_eq!(receipt.outcome, ReserveOutcome::Reserved);
    let usage = backend.usage("b").await.unwrap();
    assert_eq!(usage.counters["t"], 40);
    assert_eq!(usage.pending["t"], 2);
}
