//! SQLite's own batch and replay paths: a batch is one write of the writer (one transaction, one
//! commit) with a savepoint per item, and a live dedup record is answered by a read connection
//! without entering the writer's queue.

mod common;

use std::sync::Arc;

use stowage_core::{
    BudgetBackend, BudgetPolicy, Checked, ConnectOptions, DimensionLimit, ErrorKind, ManualClock,
    PersistenceBackend, UsageOutcome, UsageReport, MAX_AMOUNT, MAX_BATCH_ITEMS,
};
use stowage_sqlite::SqliteBackend;

async fn open(url: &str, options: ConnectOptions) -> Checked<SqliteBackend> {
    let backend = SqliteBackend::open(url, options).await.unwrap();
    backend.initialize().await.unwrap();
    backend
}

fn path_of(url: &str) -> String {
    let path = url.strip_prefix("sqlite://").unwrap();
    path.split('?').next().unwrap().to_owned()
}

fn keyed(delta: u64, key: &str) -> UsageReport {
    UsageReport::new().add("t", delta).dedup_key(key)
}

#[tokio::test]
async fn a_batch_is_one_transaction_with_the_answers_of_the_calls_one_by_one() {
    let url = common::fresh_file_url("batch-one-tx");
    let backend = open(&url, ConnectOptions::new()).await;
    backend
        .set_policy(
            "capped",
            &BudgetPolicy::new().limit("t", DimensionLimit::hard(10)),
        )
        .await
        .unwrap();
    backend
        .report_usage("full", &UsageReport::new().add("t", MAX_AMOUNT))
        .await
        .unwrap();
    let before = backend.stats();
    let items = vec![
        ("a".to_owned(), keyed(1, "k1")),
        ("capped".to_owned(), keyed(8, "c1")),
        ("a".to_owned(), keyed(1, "k1")), // the same key again: a replay of the first
        ("a".to_owned(), keyed(2, "k1")), // the same key, other deltas: Conflict
        ("capped".to_owned(), keyed(3, "c2")), // 8 + 3 > 10: refused whole
        ("full".to_owned(), keyed(1, "f1")), // overflow
        ("a".to_owned(), UsageReport::new().add("t", 5)),
        ("capped".to_owned(), keyed(2, "c3")), // 8 + 2 = 10: fits (the refused item left nothing)
    ];
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert_eq!(answers.len(), items.len());
    let ok = |i: usize| answers[i].as_ref().unwrap().clone();
    assert_eq!(ok(0).outcome, UsageOutcome::Ok);
    assert!(!ok(0).replayed);
    assert_eq!(ok(1).outcome, UsageOutcome::Ok);
    assert!(ok(2).replayed);
    assert_eq!(answers[3].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
    assert!(matches!(ok(4).outcome, UsageOutcome::HardBreach(_)));
    assert_eq!(answers[5].as_ref().unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(ok(6).outcome, UsageOutcome::Ok);
    assert_eq!(ok(7).outcome, UsageOutcome::Ok);
    let after = backend.stats();
    assert_eq!(after.writes - before.writes, 1, "one write for the batch");
    assert_eq!(
        after.commits - before.commits,
        1,
        "one commit for the batch"
    );
    assert_eq!(backend.usage("a").await.unwrap().counters["t"], 6);
    assert_eq!(backend.usage("capped").await.unwrap().counters["t"], 10);
    assert_eq!(
        backend.usage("full").await.unwrap().counters["t"],
        MAX_AMOUNT
    );
}

/// The crate's write that fails after it has written (a trigger refuses the dedup record once
/// `report_usage` has upserted the counters), inside a batch: its savepoint is rolled back, so its
/// counters vanish, and the items before and after it stay, all in one commit.
#[tokio::test]
async fn an_item_failing_after_it_wrote_undoes_only_itself() {
    let url = common::fresh_file_url("batch-poison");
    let backend = open(&url, ConnectOptions::new()).await;
    rusqlite::Connection::open(path_of(&url))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON stowage_dedup
                 WHEN NEW.dedup_key LIKE 'poison%'
                 BEGIN SELECT RAISE(ABORT, 'poisoned dedup key'); END;",
        )
        .unwrap();
    let before = backend.stats();
    let items = vec![
        ("b".to_owned(), keyed(1, "fine1")),
        ("b".to_owned(), keyed(10, "poison1")),
        ("b".to_owned(), keyed(100, "fine2")),
        ("other".to_owned(), keyed(1000, "poison2")),
        ("b".to_owned(), keyed(1, "fine1")),
    ];
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert!(!answers[0].as_ref().unwrap().replayed);
    assert_eq!(answers[1].as_ref().unwrap_err().kind(), ErrorKind::Internal);
    assert!(!answers[2].as_ref().unwrap().replayed);
    assert_eq!(answers[3].as_ref().unwrap_err().kind(), ErrorKind::Internal);
    assert!(answers[4].as_ref().unwrap().replayed);
    let after = backend.stats();
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 101);
    assert!(
        backend.usage("other").await.unwrap().counters.is_empty(),
        "a failed item's counters survived its failure"
    );
}

#[tokio::test]
async fn a_batch_of_the_most_items_is_one_commit() {
    let url = common::fresh_file_url("batch-max");
    let backend = open(&url, ConnectOptions::new()).await;
    let items: Vec<(String, UsageReport)> = (0..MAX_BATCH_ITEMS)
        .map(|i| (format!("team-{}", i % 16), keyed(1, &format!("req-{i}"))))
        .collect();
    let before = backend.stats();
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert_eq!(answers.len(), MAX_BATCH_ITEMS);
    assert!(answers.iter().all(|a| !a.as_ref().unwrap().replayed));
    let after = backend.stats();
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(backend.usage("team-0").await.unwrap().counters["t"], 625);
    // Again: every item replays from its record, still one commit.
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert!(answers.iter().all(|a| a.as_ref().unwrap().replayed));
    assert_eq!(backend.stats().commits - after.commits, 1);
    assert_eq!(backend.usage("team-0").await.unwrap().counters["t"], 625);
}

/// A batch whose transaction cannot start (another connection holds the write lock and the busy
/// timeout is 0) is the outer `Unavailable`: nothing of it is applied.
#[tokio::test]
async fn a_batch_whose_transaction_fails_is_unavailable_whole() {
    let url = common::fresh_file_url("batch-busy");
    let backend = open(&format!("{url}?busy_timeout_ms=0"), ConnectOptions::new()).await;
    let blocker = rusqlite::Connection::open(path_of(&url)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let items = vec![
        ("b".to_owned(), keyed(1, "x")),
        ("b".to_owned(), keyed(2, "y")),
    ];
    let error = backend.report_usage_batch(&items).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    blocker.execute_batch("ROLLBACK").unwrap();
    assert!(backend.usage("b").await.unwrap().counters.is_empty());
}

/// While another connection holds the write lock (so the writer could not even begin), a replay
/// and a conflict of a live record are still answered: by a read connection, not the writer.
#[tokio::test]
async fn a_live_record_is_answered_without_the_writer() {
    let url = common::fresh_file_url("replay-reader");
    let backend = open(&format!("{url}?busy_timeout_ms=0"), ConnectOptions::new()).await;
    let first = backend.report_usage("r", &keyed(3, "once")).await.unwrap();
    assert!(!first.replayed);
    let writes = backend.stats().writes;
    let blocker = rusqlite::Connection::open(path_of(&url)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let replay = backend.report_usage("r", &keyed(3, "once")).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.outcome, first.outcome);
    let conflict = backend
        .report_usage("r", &keyed(4, "once"))
        .await
        .unwrap_err();
    assert_eq!(conflict.kind(), ErrorKind::Conflict);
    // A fresh key needs the writer, which cannot begin: Unavailable, nothing applied.
    let fresh = backend
        .report_usage("r", &keyed(3, "fresh"))
        .await
        .unwrap_err();
    assert_eq!(fresh.kind(), ErrorKind::Unavailable);
    assert_eq!(
        backend.stats().writes - writes,
        1,
        "only the fresh key was sent to the writer"
    );

    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(backend.usage("r").await.unwrap().counters["t"], 3);
}

/// A record is live while `now < expires_at`: one millisecond before its TTL it is replayed by the
/// reader; at exactly its TTL it is not, and the report goes to the writer (which, here, cannot
/// begin while another connection holds the lock).
#[tokio::test]
async fn a_record_expiring_at_its_ttl_goes_to_the_writer() {
    let url = common::fresh_file_url("replay-expiry");
    let clock = Arc::new(ManualClock::new(1_000));
    let options = ConnectOptions::new().clock(clock.clone()).dedup_ttl_ms(500);
    let backend = open(&format!("{url}?busy_timeout_ms=0"), options).await;
    assert!(
        !backend
            .report_usage("e", &keyed(1, "k"))
            .await
            .unwrap()
            .replayed
    );
    let blocker = rusqlite::Connection::open(path_of(&url)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    clock.set(1_499);
    assert!(
        backend
            .report_usage("e", &keyed(1, "k"))
            .await
            .unwrap()
            .replayed
    );
    clock.set(1_500);
    let expired = backend.report_usage("e", &keyed(1, "k")).await.unwrap_err();
    assert_eq!(expired.kind(), ErrorKind::Unavailable, "went to the writer");
    blocker.execute_batch("ROLLBACK").unwrap();
    let again = backend.report_usage("e", &keyed(1, "k")).await.unwrap();
    assert!(!again.replayed, "an expired record is written anew");
    assert_eq!(backend.usage("e").await.unwrap().counters["t"], 2);
}
