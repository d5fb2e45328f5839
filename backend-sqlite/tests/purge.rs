//! `purge` empties the handle's namespace in every table and leaves other namespaces alone.

mod common;

use serde_json::json;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, Checked, ConnectOptions, DimensionLimit,
    PersistenceBackend, QueryParams, StoreResult, UsageReport, Window,
};
use stowage_sqlite::SqliteBackend;

async fn open(url: &str, namespace: &str) -> Checked<SqliteBackend> {
    let backend = SqliteBackend::open(url, ConnectOptions::new().namespace(namespace))
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    backend
}

/// Fills every table for the backend's namespace (a windowed policy, so a window is stored).
async fn fill(backend: &Checked<SqliteBackend>) {
    backend.store("r", &json!(1), 10).await.unwrap();
    assert_eq!(
        backend
            .store_idempotent("r", &json!(2), 11, "idem")
            .await
            .unwrap(),
        StoreResult::Appended
    );
    backend
        .set_policy(
            "b",
            &BudgetPolicy::new()
                .limit("t", DimensionLimit::hard(100))
                .window(Window::day("UTC")),
        )
        .await
        .unwrap();
    let receipt = backend
        .report_usage("b", &UsageReport::new().add("t", 5).dedup_key("k"))
        .await
        .unwrap();
    assert!(!receipt.replayed);
}

/// Rows of `ns` in each of the backend's tables, counted on a separate connection.
fn rows_of(path: &str, ns: &str) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    [
        "stowage_records",
        "stowage_policies",
        "stowage_counters",
        "stowage_dedup",
        "stowage_windows",
    ]
    .iter()
    .map(|table| {
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE ns = ?1"),
            [ns],
            |r| r.get(0),
        )
        .unwrap()
    })
    .collect()
}

#[tokio::test]
async fn purge_empties_one_namespace_and_keeps_the_others() {
    let url = common::fresh_file_url("purge");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let a = open(&url, "a").await;
    let a2 = open(&url, "a").await;
    let b = open(&url, "b").await;
    fill(&a).await;
    fill(&b).await;
    assert_eq!(rows_of(&path, "a"), vec![2, 1, 1, 1, 1]);

    a.purge().await.unwrap();

    assert_eq!(rows_of(&path, "a"), vec![0, 0, 0, 0, 0]);
    assert_eq!(rows_of(&path, "b"), vec![2, 1, 1, 1, 1]);
    for handle in [&a, &a2] {
        assert!(handle
            .query("*", QueryParams::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(handle.policy("b").await.unwrap(), None);
        assert!(handle.usage("b").await.unwrap().counters.is_empty());
    }
    // The other namespace still replays its key and keeps its rows.
    let replay = b
        .report_usage("b", &UsageReport::new().add("t", 5).dedup_key("k"))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(b.query("*", QueryParams::default()).await.unwrap().len(), 2);
    assert_eq!(b.usage("b").await.unwrap().counters["t"], 5);

    // Both handles of the purged namespace keep working: keys are free again.
    fill(&a2).await;
    assert_eq!(rows_of(&path, "a"), vec![2, 1, 1, 1, 1]);
    a.purge().await.unwrap();
    a.purge().await.unwrap();
    assert_eq!(rows_of(&path, "a"), vec![0, 0, 0, 0, 0]);
    fill(&a).await;
    assert_eq!(a.usage("b").await.unwrap().counters["t"], 5);
}

#[tokio::test]
async fn purge_works_in_memory() {
    let a = open("sqlite::memory:", "a").await;
    fill(&a).await;
    a.purge().await.unwrap();
    assert!(a
        .query("*", QueryParams::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(a.policy("b").await.unwrap(), None);
    assert!(a.usage("b").await.unwrap().counters.is_empty());
    fill(&a).await;
}
