//! Reads do not wait for writes, and every operation has a bound (`operation_timeout_ms`) past
//! which the caller gets `Unavailable` — and a write answered so is never applied.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ErrorKind, PersistenceBackend,
    QueryParams, UsageReport,
};
use stowage_sqlite::SqliteBackend;

const TIMEOUT_MS: u64 = 1_500;
/// How late past its bound an answer may come on a loaded machine (scheduling only).
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "current_thread")]
async fn reads_answer_while_another_connection_holds_the_write_lock() {
    let base = common::fresh_file_url("timeouts");
    let path = base.strip_prefix("sqlite://").unwrap().to_owned();
    // The busy timeout (10 s by default) is longer than the operation timeout: the bound wins.
    let url = format!("{base}?operation_timeout_ms={TIMEOUT_MS}");
    let backend = Arc::new(
        SqliteBackend::open(&url, ConnectOptions::new())
            .await
            .unwrap(),
    );
    backend.initialize().await.unwrap();
    let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(100));
    backend.set_policy("b", &policy).await.unwrap();
    backend
        .report_usage("b", &UsageReport::new().add("t", 7))
        .await
        .unwrap();
    backend.store("r", &json!("committed"), 1).await.unwrap();

    // Another connection holds the write lock with a write of its own, not committed.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker
        .execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO stowage_records (ns, name, stored_at, value)
                 VALUES ('default', 'r', 2, '\"uncommitted\"');",
        )
        .unwrap();

    // A keyed report queues first and waits for the lock...
    let started = Instant::now();
    let blocked = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let result = backend
                .report_usage("b", &UsageReport::new().add("t", 5).dedup_key("late"))
                .await;
            (result, started.elapsed())
        })
    };
    // On a current-thread runtime, yielding lets the spawned report send its write first.
    tokio::task::yield_now().await;

    // ...while reads sent after it answer with the committed data, before the report's bound.
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 7);
    assert_eq!(backend.policy("b").await.unwrap(), Some(policy));
    let rows = backend.query("r", QueryParams::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, json!("committed"));
    assert!(
        !blocked.is_finished(),
        "the reads waited for the blocked write"
    );
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS));

    // The report gives up at its bound.
    let (result, elapsed) = blocked.await.unwrap();
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(error.is_retryable());
    assert!(elapsed >= Duration::from_millis(TIMEOUT_MS), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(TIMEOUT_MS) + SLACK,
        "{elapsed:?}"
    );

    // Once the lock is free, the timed-out report has not been applied, and never will be: a
    // later write that passes through the writer after it sees no trace of it.
    blocker.execute_batch("ROLLBACK").unwrap();
    backend
        .report_usage("other", &UsageReport::new().add("t", 1))
        .await
        .unwrap();
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 7);
    let retry = backend
        .report_usage("b", &UsageReport::new().add("t", 5).dedup_key("late"))
        .await
        .unwrap();
    assert!(!retry.replayed, "the timed-out report left a dedup record");
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 12);
}

#[tokio::test]
async fn a_busy_timeout_below_the_bound_answers_unavailable_unapplied() {
    let base = common::fresh_file_url("busy");
    let path = base.strip_prefix("sqlite://").unwrap().to_owned();
    let url = format!("{base}?busy_timeout_ms=100&operation_timeout_ms=20000");
    let backend = SqliteBackend::open(&url, ConnectOptions::new())
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    for error in [
        backend
            .set_policy("b", &BudgetPolicy::new())
            .await
            .unwrap_err(),
        backend.store("r", &json!(1), 1).await.unwrap_err(),
        backend.delete_policy("b").await.unwrap_err(),
        backend.reset_usage("b").await.unwrap_err(),
        backend.cleanup(5).await.unwrap_err(),
    ] {
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }
    // Five busy timeouts of 100 ms, far below the 20 s bound.
    assert!(started.elapsed() < Duration::from_secs(10));
    blocker.execute_batch("COMMIT").unwrap();
    assert_eq!(backend.policy("b").await.unwrap(), None);
    assert!(backend
        .query("r", QueryParams::default())
        .await
        .unwrap()
        .is_empty());
}

#[test]
fn the_operation_timeout_is_a_url_parameter() {
    let config =
        stowage_sqlite::SqliteConfig::from_url("sqlite::memory:?operation_timeout_ms=1234")
            .unwrap();
    assert_eq!(config.operation_timeout, Duration::from_millis(1234));
    assert_eq!(
        stowage_sqlite::SqliteConfig::from_url("sqlite::memory:?operation_timeout_ms=0")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}
