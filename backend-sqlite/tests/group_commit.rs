//! Group commit: writes waiting together share one commit, and a failing write undoes only itself.

mod common;

use std::sync::Arc;

use stowage_core::{BudgetBackend, ConnectOptions, ErrorKind, UsageReport, MAX_AMOUNT};
use stowage_sqlite::SqliteBackend;

#[tokio::test(flavor = "current_thread")]
async fn waiting_writes_share_a_commit_and_fail_alone() {
    let url = common::fresh_file_url("group");
    let backend = Arc::new(
        SqliteBackend::open(&url, ConnectOptions::new())
            .await
            .unwrap(),
    );
    stowage_core::PersistenceBackend::initialize(&*backend)
        .await
        .unwrap();
    backend
        .report_usage("full", &UsageReport::new().add("t", MAX_AMOUNT))
        .await
        .unwrap();
    let before = backend.stats();

    // Another connection holds the write lock, so the worker's writes queue up behind it.
    let path = url.strip_prefix("sqlite://").unwrap();
    let blocker = rusqlite::Connection::open(path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            // Odd tasks overflow a full counter; even ones are fine and must not be undone.
            let (budget, delta) = if i % 2 == 0 { ("ok", 1) } else { ("full", 1) };
            backend
                .report_usage(
                    budget,
                    &UsageReport::new()
                        .add("t", delta)
                        .dedup_key(format!("k{i}")),
                )
                .await
        }));
    }
    // On a current-thread runtime, yielding lets every spawned task send its write first.
    tokio::task::yield_now().await;
    let release = std::thread::spawn(move || blocker.execute_batch("COMMIT").unwrap());

    let mut overflows = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(receipt) => assert!(!receipt.replayed),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overflow);
                overflows += 1;
            }
        }
    }
    release.join().unwrap();
    assert_eq!(overflows, 16);
    assert_eq!(backend.usage("ok").await.unwrap().counters["t"], 16);
    assert_eq!(
        backend.usage("full").await.unwrap().counters["t"],
        MAX_AMOUNT
    );
    let after = backend.stats();
    assert_eq!(after.writes - before.writes, 32);
    assert!(
        after.commits - before.commits <= 2,
        "{before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn group_commit_can_be_turned_off() {
    let url = format!("{}?group_commit=off", common::fresh_file_url("nogroup"));
    let backend = Arc::new(
        SqliteBackend::open(&url, ConnectOptions::new())
            .await
            .unwrap(),
    );
    stowage_core::PersistenceBackend::initialize(&*backend)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            backend
                .report_usage("b", &UsageReport::new().add("t", 1))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = backend.stats();
    assert_eq!(stats.writes, stats.commits);
}

/// Regression: several connections opening a brand-new file at once all switch it to WAL (no "database is locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_of_a_new_file_succeed() {
    for round in 0..20 {
        let url = common::fresh_file_url(&format!("opens{round}"));
        let opens = (0..8).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let backend = SqliteBackend::open(&url, ConnectOptions::new()).await?;
                stowage_core::PersistenceBackend::initialize(&backend).await
            })
        });
        for open in opens.collect::<Vec<_>>() {
            open.await.unwrap().unwrap();
        }
    }
}

/// A write that fails after it has written, in a batch with writes of other callers: its
/// savepoint is rolled back (`ROLLBACK TO stowage_write`), so its changes vanish and theirs stay.
#[tokio::test(flavor = "current_thread")]
async fn a_write_failing_after_it_wrote_undoes_only_itself() {
    let url = common::fresh_file_url("savepoint");
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let backend = Arc::new(
        SqliteBackend::open(&url, ConnectOptions::new())
            .await
            .unwrap(),
    );
    stowage_core::PersistenceBackend::initialize(&*backend)
        .await
        .unwrap();
    // A real failure after the counters are written: recording a dedup key starting with
    // "poison" is refused by a trigger, after report_usage has upserted the counters.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON stowage_dedup
                 WHEN NEW.dedup_key LIKE 'poison%'
                 BEGIN SELECT RAISE(ABORT, 'poisoned dedup key'); END;",
        )
        .unwrap();
    let before = backend.stats();
    // The writer's batches queue up behind the lock.
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let (budget, key) = if i % 2 == 0 {
                ("ok", format!("fine{i}"))
            } else {
                ("poisoned", format!("poison{i}"))
            };
            backend
                .report_usage(budget, &UsageReport::new().add("t", 1).dedup_key(key))
                .await
        }));
    }
    tokio::task::yield_now().await;
    let release = std::thread::spawn(move || {
        blocker.execute_batch("COMMIT").unwrap();
        blocker
    });
    let mut failed = 0;
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            assert_eq!(e.kind(), ErrorKind::Internal);
            failed += 1;
        }
    }
    release.join().unwrap();
    assert_eq!(failed, 8);
    let after = backend.stats();
    assert_eq!(after.writes - before.writes, 16);
    // At most the first write went alone; the other 15 shared one commit, poisoned ones included.
    assert!(
        after.commits - before.commits <= 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(backend.usage("ok").await.unwrap().counters["t"], 8);
    assert!(
        backend.usage("poisoned").await.unwrap().counters.is_empty(),
        "a failed write's counters survived its failure"
    );
}
