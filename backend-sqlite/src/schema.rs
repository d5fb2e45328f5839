//! Versioned migrations, embedded in the binary and applied by `initialize()`.

use rusqlite::{params, Connection, TransactionBehavior};
use stowage_core::raw::{dedup_fingerprint, is_fingerprint, show};
use stowage_core::{Error, Result, UsageReport};

use crate::error;

/// One migration: SQL, or a step that needs Rust (run inside the same transaction).
enum Migration {
    Sql(&'static str),
    Rust(fn(&Connection) -> Result<()>),
}

/// Every migration in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("../migrations/0001_initial.sql")),
    Migration::Sql(include_str!("../migrations/0002_dedup_expiry.sql")),
    Migration::Sql(include_str!("../migrations/0003_windows.sql")),
    Migration::Sql(include_str!("../migrations/0004_reservations.sql")),
    Migration::Rust(fingerprint_digests),
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
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i64::try_from(index + 1).expect("few migrations");
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql).map_err(|e| error::map(op, e))?,
            Migration::Rust(step) => step(&tx)?,
        }
        tx.execute(
            "INSERT INTO stowage_migrations (version) VALUES (?1)",
            [version],
        )
        .map_err(|e| error::map(op, e))?;
    }
    tx.commit().map_err(|e| error::map(op, e))
}

/// Version 5: dedup records keep the 128-bit digest of their report (`raw::dedup_fingerprint`,
/// 22 URL-safe base64 digits) instead of its text (`raw::dedup_fingerprint_text`, which versions
/// 1 to 4 stored), so that a retry after the upgrade still replays and a dump carries one form.
/// The text is unambiguous: each one is parsed back into its report, whose digest replaces it.
/// SQLite has no SHA-256, hence a step in Rust.
fn fingerprint_digests(conn: &Connection) -> Result<()> {
    let op = "initialize";
    let texts: Vec<(String, String, String, String)> = conn
        .prepare("SELECT ns, budget, dedup_key, fingerprint FROM stowage_dedup")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(|e| error::map(op, e))?;
    let mut update = conn
        .prepare(
            "UPDATE stowage_dedup SET fingerprint = ?4
             WHERE ns = ?1 AND budget = ?2 AND dedup_key = ?3",
        )
        .map_err(|e| error::map(op, e))?;
    for (ns, budget, key, text) in texts {
        if is_fingerprint(&text) {
            continue;
        }
        let report = report_of_fingerprint_text(&text).ok_or_else(|| {
            Error::corruption(format!(
                "{op}: the dedup record {} of budget {} in namespace {} has fingerprint {},                  which is neither a digest nor the text of a report",
                show(&key),
                show(&budget),
                show(&ns),
                show(&text)
            ))
        })?;
        update
            .execute(params![ns, budget, key, dedup_fingerprint(&report)])
            .map_err(|e| error::map(op, e))?;
    }
    Ok(())
}

/// The report whose `raw::dedup_fingerprint_text` is `text` (`v1` then `;<byte length>:<name>=<delta>`
/// per dimension), or `None` when `text` is not of that form.
fn report_of_fingerprint_text(text: &str) -> Option<UsageReport> {
    let mut rest = text.strip_prefix("v1")?;
    let mut report = UsageReport::new();
    while !rest.is_empty() {
        let (length, after) = rest.strip_prefix(';')?.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let name = after.get(..length)?;
        let after = after.get(length..)?.strip_prefix('=')?;
        let end = after.find(';').unwrap_or(after.len());
        let delta: u64 = after[..end].parse().ok()?;
        report = report.add(name, delta);
        rest = &after[end..];
    }
    Some(report).filter(|r| {
        !r.dimensions.is_empty() && stowage_core::raw::dedup_fingerprint_text(r) == text
    })
}

/// Every table that holds namespaced rows; `purge` empties all of them for one namespace.
pub(crate) const NAMESPACED_TABLES: &[&str] = &[
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

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::raw::dedup_fingerprint_text;

    #[test]
    fn a_fingerprint_text_parses_back_into_its_report() {
        for report in [
            UsageReport::new().add("t", 1),
            UsageReport::new().add("a=1;1:b", 2).add("b", 0),
            UsageReport::new()
                .add("é;:=", u64::try_from(i64::MAX).unwrap())
                .add("z", 7),
        ] {
            let text = dedup_fingerprint_text(&report);
            assert_eq!(report_of_fingerprint_text(&text), Some(report));
        }
        for text in [
            "",
            "v1",
            "v2;1:t=1",
            "v1;2:t=1",
            "v1;1:t=",
            "v1;1:t=1;",
            "v1;1:t=-1",
        ] {
            assert_eq!(report_of_fingerprint_text(text), None, "{text}");
        }
    }
}
