//! The same work without stowage around it: one rusqlite connection on the caller's thread.
//!
//! For baselines ("how close does stowage run to the engine?") and tools; applications should use
//! [`crate::SqliteBackend`], which keeps SQLite off the async executor and group-commits.

use rusqlite::{Connection, TransactionBehavior};
use stowage_core::{Result, UsageReceipt, UsageReport};

use crate::config::SqliteConfig;
use crate::{budget, error, schema, worker};

/// Opens a connection configured exactly as the backend's (WAL, busy timeout, synchronous) and migrates it.
pub fn open(url: &str) -> Result<Connection> {
    let config = SqliteConfig::from_url(url)?;
    let mut conn = worker::open(&config)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// `report_usage` as one `BEGIN IMMEDIATE` transaction with cached prepared statements. `budget`
/// and `report` must be valid (as the checked layer ensures for the backend); nothing checks them here.
pub fn report_usage(
    conn: &mut Connection,
    namespace: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
    dedup_ttl_ms: u64,
) -> Result<UsageReceipt> {
    let op = "report_usage";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| error::map(op, e))?;
    let receipt = budget::report_usage(&tx, namespace, budget, report, now, dedup_ttl_ms)?;
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(receipt)
}

/// `report_usage` of every `(budget, report)` of `items`, in order, in one `BEGIN IMMEDIATE`
/// transaction with the same cached statements and one commit: the raw ceiling of a batch (no
/// savepoints, so an item that fails after writing is not undone; the first failure rolls the
/// whole transaction back and is returned). Items must be valid, as for [`report_usage`].
pub fn report_usage_batch(
    conn: &mut Connection,
    namespace: &str,
    items: &[(String, UsageReport)],
    now: u64,
    dedup_ttl_ms: u64,
) -> Result<Vec<UsageReceipt>> {
    let op = "report_usage_batch";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| error::map(op, e))?;
    let mut receipts = Vec::with_capacity(items.len());
    for (budget, report) in items {
        receipts.push(budget::report_usage(
            &tx,
            namespace,
            budget,
            report,
            now,
            dedup_ttl_ms,
        )?);
    }
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(receipts)
}
