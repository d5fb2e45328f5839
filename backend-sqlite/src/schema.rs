//! Versioned migrations, embedded in the binary and applied by `initialize()`.

use rusqlite::{Connection, TransactionBehavior};
use stowage_core::{Error, Result};

use crate::error;

/// Every migration in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_dedup_expiry.sql"),
    include_str!("../migrations/0003_windows.sql"),
    include_str!("../migrations/0004_reservations.sql"),
];

/// Applies the migrations this file lacks, in one `BEGIN IMMEDIATE` transaction (safe to race).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let op = "initialize";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| error::map(op, e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS stowage_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
         )",
    )
    .map_err(|e| error::map(op, e))?;
    let applied: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM stowage_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(|e| error::map(op, e))?;
    let applied = usize::try_from(applied)
        .map_err(|_| Error::corruption(format!("{op}: schema version {applied} is negative")))?;
    if applied > MIGRATIONS.len() {
        return Err(Error::unsupported(format!(
            "{op}: the database has schema version {applied}; this build knows up to {}",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i64::try_from(index + 1).expect("few migrations");
        tx.execute_batch(sql).map_err(|e| error::map(op, e))?;
        tx.execute(
            "INSERT INTO stowage_migrations (version) VALUES (?1)",
            [version],
        )
        .map_err(|e| error::map(op, e))?;
    }
    tx.commit().map_err(|e| error::map(op, e))
}

/// Every table that holds namespaced rows; `purge` empties all of them for one namespace.
const NAMESPACED_TABLES: &[&str] = &[
    "stowage_records",
    "stowage_policies",
    "stowage_counters",
    "stowage_dedup",
    "stowage_windows",
    "stowage_reservations",
    "stowage_reservation_amounts",
];

/// Deletes every row of namespace `ns` from every table, inside the caller's transaction.
pub(crate) fn purge(conn: &Connection, ns: &str) -> Result<()> {
    for table in NAMESPACED_TABLES {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE ns = ?1"))
            .and_then(|mut s| s.execute([ns]))
            .map_err(|e| error::map("purge", e))?;
    }
    Ok(())
}
