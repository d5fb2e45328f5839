//! Record statements: append, idempotent append, pattern query, cleanup.

use rusqlite::{params, Connection, OptionalExtension};
use stowage_core::raw::{idempotent_repeat, NameRange, NewRow, Pattern, QueryPlan};
use stowage_core::{Error, QueryParams, Result, StoreResult, StoredValue};

use crate::error;
use stowage_core::raw::validate::{from_i64, to_i64};

/// A row to append, owned so that it can travel to the writer thread.
#[derive(Debug)]
pub(crate) struct Row {
    name: String,
    text: String,
    stored_at: u64,
}

impl From<NewRow<'_>> for Row {
    fn from(row: NewRow<'_>) -> Self {
        Row {
            name: row.record.to_owned(),
            text: row.text,
            stored_at: row.stored_at,
        }
    }
}

/// Appends one row.
pub(crate) fn store(conn: &Connection, ns: &str, row: &Row) -> Result<()> {
    let op = "store";
    let at = to_i64(op, "timestamp", row.stored_at)?;
    conn.prepare_cached(
        "INSERT INTO stowage_records (ns, name, stored_at, value) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![ns, row.name, at, row.text]))
    .map_err(|e| error::map(op, e))?;
    Ok(())
}

/// Appends one row unless (record, key) exists; an existing row must be equal. Runs in the caller's transaction.
pub(crate) fn store_idempotent(
    conn: &Connection,
    ns: &str,
    row: &Row,
    key: &str,
) -> Result<StoreResult> {
    let op = "store_idempotent";
    let Row {
        name,
        text,
        stored_at,
    } = row;
    let at = to_i64(op, "timestamp", *stored_at)?;
    let existing: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT value, stored_at FROM stowage_records
             WHERE ns = ?1 AND name = ?2 AND idempotency_key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![ns, name, key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| error::map(op, e))?;
    if let Some((stored_text, stored_at)) = existing {
        return idempotent_repeat(op, name, key, (&stored_text, stored_at), (text, at));
    }
    conn.prepare_cached(
        "INSERT INTO stowage_records (ns, name, stored_at, value, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![ns, name, at, text, key]))
    .map_err(|e| error::map(op, e))?;
    Ok(StoreResult::Appended)
}

/// Rows of records matching `pattern`, narrowed in SQL by the plan's name range and time bounds,
/// decided by the core matcher and collector.
pub(crate) fn query(
    conn: &mut Connection,
    ns: &str,
    pattern: &Pattern,
    params: QueryParams,
) -> Result<Vec<StoredValue>> {
    let op = "query";
    let Some(plan) = QueryPlan::new(pattern, params) else {
        return Ok(Vec::new());
    };
    let start = to_i64(op, "start_time", plan.start)?;
    let end = to_i64(op, "end_time", plan.end)?;
    let base = "SELECT name, value, stored_at FROM stowage_records WHERE ns = ?1 AND ";
    let order = " AND stored_at >= ?2 AND stored_at <= ?3 ORDER BY name, stored_at DESC, id DESC";
    let (sql, bound): (String, Vec<&str>) = match &plan.names {
        NameRange::Exact(name) => (format!("{base}name = ?4{order}"), vec![name]),
        NameRange::From {
            start,
            end: Some(upper),
        } => (
            format!("{base}name >= ?4 AND name < ?5{order}"),
            vec![start, upper.as_str()],
        ),
        NameRange::From { start, end: None } => (format!("{base}name >= ?4{order}"), vec![start]),
    };
    let mut statement = conn.prepare_cached(&sql).map_err(|e| error::map(op, e))?;
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&ns, &start, &end];
    for b in &bound {
        args.push(b);
    }
    let mut rows = statement
        .query(args.as_slice())
        .map_err(|e| error::map(op, e))?;
    let mut collector = plan.collector();
    while let Some(row) = rows.next().map_err(|e| error::map(op, e))? {
        let name: String = row.get(0).map_err(|e| error::map(op, e))?;
        if !collector.wants(&name) {
            continue;
        }
        let text: String = row.get(1).map_err(|e| error::map(op, e))?;
        let stored_at: i64 = row.get(2).map_err(|e| error::map(op, e))?;
        let stored_at = from_i64(op, "timestamp", stored_at)?;
        collector.push(op, name, &text, stored_at)?;
    }
    Ok(collector.finish())
}

/// Deletes rows with `stored_at < older_than`; returns how many.
pub(crate) fn cleanup(conn: &Connection, ns: &str, older_than: u64) -> Result<u64> {
    let op = "cleanup";
    let before = to_i64(op, "older_than", older_than)?;
    let deleted = conn
        .prepare_cached("DELETE FROM stowage_records WHERE ns = ?1 AND stored_at < ?2")
        .and_then(|mut s| s.execute(params![ns, before]))
        .map_err(|e| error::map(op, e))?;
    u64::try_from(deleted).map_err(|_| Error::internal(format!("{op}: deleted count {deleted}")))
}
