//! The writer never answers `Ok` for a write it did not commit, and a dead SQLite thread is
//! replaced (files) or answers `Unavailable` (memory) — never `Internal` forever.

mod common;

use serde_json::json;
use stowage_core::{
    BudgetBackend, BudgetPolicy, Checked, ConnectOptions, DimensionLimit, ErrorKind,
    PersistenceBackend, QueryParams, UsageReport,
};
use stowage_sqlite::{SqliteBackend, TestHook};

async fn open(url: &str) -> Checked<SqliteBackend> {
    let backend = SqliteBackend::open(url, ConnectOptions::new())
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    backend
}

/// The policies committed in the file, read on a connection of its own.
fn committed_policies(path: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut s = conn
        .prepare("SELECT budget FROM stowage_policies ORDER BY budget")
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn committed_records(path: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM stowage_records", [], |r| r.get(0))
        .unwrap()
}

/// Every kind of write after the writer's connection was left inside a transaction.
async fn writes_are_committed(backend: &Checked<SqliteBackend>, path: &str) {
    let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(9));
    backend.set_policy("kept", &policy).await.unwrap();
    assert_eq!(committed_policies(path), vec!["kept".to_owned()]);
    backend.set_policy("gone", &policy).await.unwrap();
    assert!(backend.delete_policy("gone").await.unwrap());
    assert_eq!(committed_policies(path), vec!["kept".to_owned()]);
    backend.store("r", &json!(1), 5).await.unwrap();
    assert_eq!(committed_records(path), 1);
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_before_the_next_write() {
    let url = common::fresh_file_url("stuck");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let backend = open(&url).await;
    backend
        .test_hook(TestHook::LeaveWriterInTransaction)
        .await
        .unwrap();
    // The stray policy written inside the open transaction is not committed, and never will be.
    writes_are_committed(&backend, &path).await;
    assert_eq!(backend.policy("stray").await.unwrap(), None);
}

#[tokio::test]
async fn a_transaction_that_cannot_be_rolled_back_gets_a_new_connection() {
    let url = common::fresh_file_url("stuck-reopen");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let backend = open(&url).await;
    backend
        .test_hook(TestHook::LeaveWriterInTransaction)
        .await
        .unwrap();
    backend.test_hook(TestHook::FailNextRollback).await.unwrap();
    writes_are_committed(&backend, &path).await;
    assert_eq!(backend.policy("stray").await.unwrap(), None);
}

#[tokio::test]
async fn in_memory_a_stuck_transaction_is_rolled_back_or_the_write_refused() {
    let backend = open("sqlite::memory:").await;
    backend
        .test_hook(TestHook::LeaveWriterInTransaction)
        .await
        .unwrap();
    backend
        .set_policy("kept", &BudgetPolicy::new())
        .await
        .unwrap();
    assert_eq!(backend.policy("stray").await.unwrap(), None);
    assert_eq!(
        backend.policy("kept").await.unwrap(),
        Some(BudgetPolicy::new())
    );

    // When the rollback fails, an in-memory database cannot be reopened: the write is refused.
    backend
        .test_hook(TestHook::LeaveWriterInTransaction)
        .await
        .unwrap();
    backend.test_hook(TestHook::FailNextRollback).await.unwrap();
    let refused = backend
        .set_policy("refused", &BudgetPolicy::new())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    // The next write finds the transaction still open, rolls it back and commits.
    backend
        .set_policy("later", &BudgetPolicy::new())
        .await
        .unwrap();
    assert_eq!(backend.policy("refused").await.unwrap(), None);
    assert_eq!(backend.policy("stray").await.unwrap(), None);
    assert_eq!(
        backend.policy("later").await.unwrap(),
        Some(BudgetPolicy::new())
    );
}

#[tokio::test]
async fn a_dead_writer_thread_is_replaced() {
    let url = common::fresh_file_url("dead-writer");
    let backend = open(&url).await;
    backend
        .report_usage("b", &UsageReport::new().add("t", 1))
        .await
        .unwrap();
    backend.test_hook(TestHook::KillWriterThread).await.unwrap();
    backend
        .report_usage("b", &UsageReport::new().add("t", 1).dedup_key("k"))
        .await
        .unwrap();
    backend.store("r", &json!(1), 1).await.unwrap();
    backend.initialize().await.unwrap();
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 2);
    assert_eq!(
        backend
            .query("r", QueryParams::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn dead_reader_threads_are_replaced() {
    let url = common::fresh_file_url("dead-readers");
    let backend = open(&url).await;
    backend
        .report_usage("b", &UsageReport::new().add("t", 3))
        .await
        .unwrap();
    backend
        .test_hook(TestHook::KillReaderThreads)
        .await
        .unwrap();
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 3);
    assert_eq!(backend.policy("b").await.unwrap(), None);
    assert!(backend
        .query("*", QueryParams::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_dead_in_memory_thread_answers_unavailable() {
    let backend = open("sqlite::memory:").await;
    backend.test_hook(TestHook::KillWriterThread).await.unwrap();
    for _ in 0..2 {
        let write = backend
            .report_usage("b", &UsageReport::new().add("t", 1))
            .await
            .unwrap_err();
        assert_eq!(write.kind(), ErrorKind::Unavailable);
        assert_eq!(
            backend.usage("b").await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
    }
}
