//! Dumps (SEMANTICS §4.5): the pages of an export, read in canonical order by keyset pagination
//! on the tables' indexes, and the batches of an import, written verbatim in one write.
//!
//! Every page is one read transaction (one snapshot) on a read connection, and runs index range
//! scans only, in the index's order (no sort): at most [`PAGE_ITEMS`] items, so a namespace of
//! any size exports in bounded memory. The resume token is the canonical key of the page's last
//! item, its parts joined by NUL (names never contain one).
//!
//! Records are read per name on `stowage_records_by_name` — `(ns, name, stored_at DESC, id
//! DESC)`, scanned backwards within one name, which is canonical order (`stored_at`, then store
//! order) — and the next name is one seek on the same index: no second index to keep up on every
//! `store`. A batch of an import is one write of the writer (one savepoint of its transaction):
//! it is kept or undone whole, and record rows are appended in the dump's order, so their rowids
//! (store order) follow it.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, TransactionBehavior};
use stowage_core::dump::{
    CountersItem, DedupItem, DumpItem, DumpPage, PolicyItem, RecordItem, ReservationItem, Section,
    PAGE_ITEMS,
};
use stowage_core::raw::validate::{from_i64, to_i64};
use stowage_core::raw::{decode_outcome, encode_outcome, show, StoredWindow};
use stowage_core::{BudgetPolicy, Error, Result, WindowBounds};

use crate::{error, reservation, schema};

/// [`PAGE_ITEMS`] as an SQL `LIMIT`.
fn limit() -> i64 {
    i64::try_from(PAGE_ITEMS).unwrap_or(i64::MAX)
}

/// The parts of a resume token (names never contain NUL; numbers are decimal).
const SEP: char = '\0';

fn token(parts: &[&str]) -> String {
    parts.join(&SEP.to_string())
}

/// The `n` parts of `after`; an engine's own token, so anything else is a bug.
fn parts<'a>(op: &str, after: &'a str, n: usize) -> Result<Vec<&'a str>> {
    let parts: Vec<&str> = after.split(SEP).collect();
    if parts.len() != n || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::internal(format!(
            "{op}: {} is not a resume token of the SQLite engine",
            show(after)
        )));
    }
    Ok(parts)
}

fn number(op: &str, text: &str) -> Result<i64> {
    text.parse().map_err(|_| {
        Error::internal(format!(
            "{op}: {} is not a number of a resume token",
            show(text)
        ))
    })
}

/// One page of `section` after `after` (`None`: from the start), read in one snapshot.
pub(crate) fn page(
    conn: &mut Connection,
    ns: &str,
    section: Section,
    after: Option<&str>,
    now: u64,
) -> Result<DumpPage> {
    let op = "export";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| error::map(op, e))?;
    let page = match section {
        Section::Policies => policies(&tx, ns, after),
        Section::Counters => counters(&tx, ns, after),
        Section::Reservations => reservations(&tx, ns, after, now),
        Section::Dedup => dedup(&tx, ns, after, now),
        Section::Records => records(&tx, ns, after),
    }?;
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(page)
}

/// The page's items and its token: the next page starts after the last item of a full page.
fn finish(items: Vec<DumpItem>, last: Option<String>) -> DumpPage {
    let next = if items.len() >= PAGE_ITEMS {
        last
    } else {
        None
    };
    DumpPage { items, next }
}

/// The SQL of the policy pages (the primary key's range, in its order).
pub(crate) const POLICIES_SQL: &str = "SELECT budget, policy FROM stowage_policies
     WHERE ns = ?1 AND budget > ?2 ORDER BY budget LIMIT ?3";

fn policies(conn: &Connection, ns: &str, after: Option<&str>) -> Result<DumpPage> {
    let op = "export";
    let rows: Vec<(String, String)> = conn
        .prepare_cached(POLICIES_SQL)
        .and_then(|mut s| {
            s.query_map(params![ns, after.unwrap_or(""), limit()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(|e| error::map(op, e))?;
    let last = rows.last().map(|(budget, _)| budget.clone());
    let mut items = Vec::with_capacity(rows.len());
    for (budget, json) in rows {
        let policy: BudgetPolicy = serde_json::from_str(&json).map_err(|e| {
            Error::corruption(format!(
                "{op}: stored policy of budget {} cannot be decoded",
                show(&budget)
            ))
            .with_source(e)
        })?;
        items.push(DumpItem::Policy(PolicyItem::new(budget, policy)));
    }
    Ok(finish(items, last))
}

/// The SQL of the counter pages: the next budgets with counters, the next budgets with a stored
/// window, then the counters and windows of the page's budgets (primary key ranges).
pub(crate) const COUNTER_BUDGETS_SQL: &str = "SELECT DISTINCT budget FROM stowage_counters
     WHERE ns = ?1 AND budget > ?2 ORDER BY budget LIMIT ?3";
pub(crate) const WINDOW_BUDGETS_SQL: &str = "SELECT budget FROM stowage_windows
     WHERE ns = ?1 AND budget > ?2 ORDER BY budget LIMIT ?3";
pub(crate) const COUNTERS_SQL: &str = "SELECT budget, dimension, value FROM stowage_counters
     WHERE ns = ?1 AND budget > ?2 AND budget <= ?3 ORDER BY budget, dimension";
pub(crate) const WINDOWS_SQL: &str = "SELECT budget, spec, start_ms, end_ms FROM stowage_windows
     WHERE ns = ?1 AND budget > ?2 AND budget <= ?3 ORDER BY budget";

/// One item per budget with counters or a stored window (the window verbatim, with its spec).
fn counters(conn: &Connection, ns: &str, after: Option<&str>) -> Result<DumpPage> {
    let op = "export";
    let from = after.unwrap_or("");
    let budgets_of = |sql: &str| -> Result<Vec<String>> {
        conn.prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map(params![ns, from, limit()], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| error::map(op, e))
    };
    // The first PAGE_ITEMS of the union: each list holds every budget of its table up to its
    // last, and the page's last budget is at most the last of a full list, so every budget of
    // either table up to it is in the page.
    let mut budgets: BTreeSet<String> = budgets_of(COUNTER_BUDGETS_SQL)?.into_iter().collect();
    budgets.extend(budgets_of(WINDOW_BUDGETS_SQL)?);
    let budgets: Vec<String> = budgets.into_iter().take(PAGE_ITEMS).collect();
    let Some(last) = budgets.last().cloned() else {
        return Ok(DumpPage::default());
    };
    let mut values: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    {
        let mut s = conn
            .prepare_cached(COUNTERS_SQL)
            .map_err(|e| error::map(op, e))?;
        let mut rows = s
            .query(params![ns, from, last])
            .map_err(|e| error::map(op, e))?;
        while let Some(r) = rows.next().map_err(|e| error::map(op, e))? {
            let budget: String = r.get(0).map_err(|e| error::map(op, e))?;
            let dimension: String = r.get(1).map_err(|e| error::map(op, e))?;
            let value: i64 = r.get(2).map_err(|e| error::map(op, e))?;
            values
                .entry(budget)
                .or_default()
                .insert(dimension, from_i64(op, "counter", value)?);
        }
    }
    let mut windows: BTreeMap<String, StoredWindow> = BTreeMap::new();
    {
        let mut s = conn
            .prepare_cached(WINDOWS_SQL)
            .map_err(|e| error::map(op, e))?;
        let mut rows = s
            .query(params![ns, from, last])
            .map_err(|e| error::map(op, e))?;
        while let Some(r) = rows.next().map_err(|e| error::map(op, e))? {
            let budget: String = r.get(0).map_err(|e| error::map(op, e))?;
            let spec: String = r.get(1).map_err(|e| error::map(op, e))?;
            let start: i64 = r.get(2).map_err(|e| error::map(op, e))?;
            let end: i64 = r.get(3).map_err(|e| error::map(op, e))?;
            let bounds = WindowBounds {
                start_ms: from_i64(op, "window start", start)?,
                end_ms: from_i64(op, "window end", end)?,
            };
            windows.insert(budget, StoredWindow { spec, bounds });
        }
    }
    let items = budgets
        .into_iter()
        .map(|budget| {
            DumpItem::Counters(CountersItem {
                window: windows.remove(&budget),
                values: values.remove(&budget).unwrap_or_default(),
                budget,
            })
        })
        .collect();
    Ok(finish(items, Some(last)))
}

/// The SQL of the reservation pages: the next reservations remembered at now (primary key range),
/// then their amounts (the amounts' primary key range up to the page's last reservation).
pub(crate) const RESERVATIONS_SQL: &str = "SELECT budget, id, ttl_ms, expires_at, remember_ms,
         state, at, actual, outcome, breaches FROM stowage_reservations
     WHERE ns = ?1 AND (budget, id) > (?2, ?3) AND forget_at > ?4 ORDER BY budget, id LIMIT ?5";
pub(crate) const AMOUNTS_SQL: &str = "SELECT budget, id, dimension, amount
     FROM stowage_reservation_amounts
     WHERE ns = ?1 AND (budget, id) > (?2, ?3) AND (budget, id) <= (?4, ?5)
     ORDER BY budget, id, dimension";

/// The reservations remembered at `now`, exactly as `reservation()` answers them.
fn reservations(conn: &Connection, ns: &str, after: Option<&str>, now: u64) -> Result<DumpPage> {
    let op = "export";
    let (from_budget, from_id) = match after {
        Some(after) => {
            let p = parts(op, after, 2)?;
            (p[0], p[1])
        }
        None => ("", ""),
    };
    let at = to_i64(op, "clock", now)?;
    let rows: Vec<(String, reservation::StoredRow)> = conn
        .prepare_cached(RESERVATIONS_SQL)
        .and_then(|mut s| {
            s.query_map(params![ns, from_budget, from_id, at, limit()], |r| {
                Ok((r.get(0)?, reservation::read_row_at(r, 1)?))
            })?
            .collect()
        })
        .map_err(|e| error::map(op, e))?;
    let Some((last_budget, last_row)) = rows.last() else {
        return Ok(DumpPage::default());
    };
    let last_id = &last_row.0;
    let mut amounts: BTreeMap<(String, String), BTreeMap<String, u64>> = rows
        .iter()
        .map(|(budget, row)| ((budget.clone(), row.0.clone()), BTreeMap::new()))
        .collect();
    {
        let mut s = conn
            .prepare_cached(AMOUNTS_SQL)
            .map_err(|e| error::map(op, e))?;
        let mut found = s
            .query(params![ns, from_budget, from_id, last_budget, last_id])
            .map_err(|e| error::map(op, e))?;
        while let Some(r) = found.next().map_err(|e| error::map(op, e))? {
            let key: (String, String) = (
                r.get(0).map_err(|e| error::map(op, e))?,
                r.get(1).map_err(|e| error::map(op, e))?,
            );
            // Amounts of reservations forgotten at now (skipped above) are passed over.
            if let Some(of) = amounts.get_mut(&key) {
                let dimension: String = r.get(2).map_err(|e| error::map(op, e))?;
                let amount: i64 = r.get(3).map_err(|e| error::map(op, e))?;
                of.insert(dimension, from_i64(op, "reserved amount", amount)?);
            }
        }
    }
    let last = token(&[last_budget, last_id]);
    let mut items = Vec::with_capacity(rows.len());
    for (budget, row) in rows {
        let dimensions = amounts
            .remove(&(budget.clone(), row.0.clone()))
            .unwrap_or_default();
        let decoded = reservation::decode(op, &budget, row, dimensions)?;
        items.push(DumpItem::Reservation(ReservationItem::new(budget, decoded)));
    }
    Ok(finish(items, Some(last)))
}

/// The SQL of the dedup pages: the next records live at now (primary key range).
pub(crate) const DEDUP_SQL: &str = "SELECT budget, dedup_key, fingerprint, outcome, expires_at
     FROM stowage_dedup
     WHERE ns = ?1 AND (budget, dedup_key) > (?2, ?3) AND expires_at > ?4
     ORDER BY budget, dedup_key LIMIT ?5";

/// The dedup records live at `now`: fingerprint, recorded outcome and expiry.
fn dedup(conn: &Connection, ns: &str, after: Option<&str>, now: u64) -> Result<DumpPage> {
    let op = "export";
    let (from_budget, from_key) = match after {
        Some(after) => {
            let p = parts(op, after, 2)?;
            (p[0], p[1])
        }
        None => ("", ""),
    };
    let at = to_i64(op, "clock", now)?;
    type Row = (String, String, String, String, i64);
    let rows: Vec<Row> = conn
        .prepare_cached(DEDUP_SQL)
        .and_then(|mut s| {
            s.query_map(params![ns, from_budget, from_key, at, limit()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(|e| error::map(op, e))?;
    let last = rows.last().map(|(b, k, ..)| token(&[b, k]));
    let mut items = Vec::with_capacity(rows.len());
    for (budget, key, fingerprint, outcome, expires_at) in rows {
        items.push(DumpItem::Dedup(DedupItem {
            budget,
            key,
            fingerprint,
            outcome: decode_outcome(op, &outcome)?,
            expires_at: from_i64(op, "dedup expiry", expires_at)?,
        }));
    }
    Ok(finish(items, last))
}

/// The SQL of the record pages, all on `stowage_records_by_name` in its order or backwards:
/// - the rows of the names after a name, newest first within each (the index's order): the
///   names whose rows all fit in the page are taken from it, each name's rows reversed;
/// - the rows of one name in canonical order (the index backwards: ascending time, then store
///   order), for a name with more rows than the page has room for: those of one `stored_at`
///   after a row id, and those after a `stored_at` (two plain ranges: SQLite seeks a row value
///   `(stored_at, id) > (?, ?)` on `stored_at` alone, which would read the rows of a crowded
///   millisecond again on every page).
pub(crate) const NAMES_AFTER_SQL: &str = "SELECT name, stored_at, id, idempotency_key, value
     FROM stowage_records INDEXED BY stowage_records_by_name
     WHERE ns = ?1 AND name > ?2 ORDER BY name, stored_at DESC, id DESC LIMIT ?3";
pub(crate) const ROWS_AT_SQL: &str = "SELECT stored_at, id, idempotency_key, value
     FROM stowage_records INDEXED BY stowage_records_by_name
     WHERE ns = ?1 AND name = ?2 AND stored_at = ?3 AND id > ?4
     ORDER BY stored_at, id LIMIT ?5";
pub(crate) const ROWS_AFTER_SQL: &str = "SELECT stored_at, id, idempotency_key, value
     FROM stowage_records INDEXED BY stowage_records_by_name
     WHERE ns = ?1 AND name = ?2 AND stored_at > ?3
     ORDER BY stored_at, id LIMIT ?4";

/// A stored row: name, stored_at, id (store order), idempotency key, value.
type RecordRow = (String, i64, i64, Option<String>, String);

/// Appends the row to the page; returns its `(stored_at, id)`.
fn push_row(op: &str, items: &mut Vec<DumpItem>, row: RecordRow) -> Result<(i64, i64)> {
    let (name, stored_at, id, idempotency_key, value) = row;
    items.push(DumpItem::Record(RecordItem {
        name,
        stored_at: from_i64(op, "timestamp", stored_at)?,
        idempotency_key,
        value,
    }));
    Ok((stored_at, id))
}

/// Appends the rows of `name` read by [`ROWS_AT_SQL`] or [`ROWS_AFTER_SQL`]; returns the last
/// row's `(stored_at, id)`.
fn push_rows_of(
    op: &str,
    items: &mut Vec<DumpItem>,
    name: &str,
    mut rows: rusqlite::Rows<'_>,
) -> Result<Option<(i64, i64)>> {
    let mut last = None;
    while let Some(r) = rows.next().map_err(|e| error::map(op, e))? {
        let row = (|| Ok((name.to_owned(), r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))()
            .map_err(|e| error::map(op, e))?;
        last = Some(push_row(op, items, row)?);
    }
    Ok(last)
}

/// Record rows by name, then `stored_at`, then store order (rowid), with their idempotency keys.
fn records(conn: &Connection, ns: &str, after: Option<&str>) -> Result<DumpPage> {
    let op = "export";
    // Where the page starts: inside a name (after its row (stored_at, id)), or at the name after.
    let (mut name, mut from) = match after {
        Some(after) => {
            let p = parts(op, after, 3)?;
            (
                p[0].to_owned(),
                Some((number(op, p[1])?, number(op, p[2])?)),
            )
        }
        None => (String::new(), None),
    };
    let mut names_after = conn
        .prepare_cached(NAMES_AFTER_SQL)
        .map_err(|e| error::map(op, e))?;
    let mut rows_at = conn
        .prepare_cached(ROWS_AT_SQL)
        .map_err(|e| error::map(op, e))?;
    let mut rows_after = conn
        .prepare_cached(ROWS_AFTER_SQL)
        .map_err(|e| error::map(op, e))?;
    let mut items: Vec<DumpItem> = Vec::new();
    let mut last: Option<(i64, i64)> = None;
    let room = |items: &Vec<DumpItem>| PAGE_ITEMS - items.len();
    let limit_of = |room: usize| i64::try_from(room).unwrap_or(i64::MAX);
    while items.len() < PAGE_ITEMS {
        let stored_at = match from.take() {
            Some((stored_at, id)) => {
                let rows = rows_at
                    .query(params![ns, name, stored_at, id, limit_of(room(&items))])
                    .map_err(|e| error::map(op, e))?;
                last = push_rows_of(op, &mut items, &name, rows)?.or(last);
                if items.len() == PAGE_ITEMS {
                    break;
                }
                stored_at
            }
            None => {
                let wanted = room(&items);
                let rows: Vec<RecordRow> = names_after
                    .query_map(params![ns, name, limit_of(wanted)], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .and_then(|rows| rows.collect())
                    .map_err(|e| error::map(op, e))?;
                let Some(tail) = rows.last().map(|r| r.0.clone()) else {
                    break;
                };
                // Without room for every row, the last name's rows may be cut: that name is read
                // on its own, from its oldest row.
                let full = rows.len() >= wanted;
                let whole = if full {
                    rows.iter().position(|r| r.0 == tail).unwrap_or(rows.len())
                } else {
                    rows.len()
                };
                let mut rows = rows;
                rows.truncate(whole);
                let mut group: Vec<RecordRow> = Vec::new();
                for row in rows {
                    if group.last().is_some_and(|g| g.0 != row.0) {
                        for row in group.drain(..).rev() {
                            last = Some(push_row(op, &mut items, row)?);
                        }
                    }
                    group.push(row);
                }
                for row in group.into_iter().rev() {
                    last = Some(push_row(op, &mut items, row)?);
                }
                name = tail;
                if !full {
                    break;
                }
                // Before every row: stored_at is never negative.
                -1
            }
        };
        let rows = rows_after
            .query(params![ns, name, stored_at, limit_of(room(&items))])
            .map_err(|e| error::map(op, e))?;
        last = push_rows_of(op, &mut items, &name, rows)?.or(last);
    }
    // The token names the last row's name (the rows of `name` may all be on the next page).
    let last = match (items.last(), last) {
        (Some(DumpItem::Record(r)), Some((stored_at, id))) => {
            Some(token(&[&r.name, &stored_at.to_string(), &id.to_string()]))
        }
        _ => None,
    };
    Ok(finish(items, last))
}

/// Writes `items` into namespace `ns` inside the caller's transaction (one write of the writer):
/// a failure undoes the whole batch. Reservations go through the same store as `reserve`, which
/// keeps the amounts' copy of `held` and `expires_at` that `pending` sums.
pub(crate) fn load(conn: &Connection, ns: &str, items: &[DumpItem]) -> Result<()> {
    let op = "import";
    let sql = |e| error::map(op, e);
    for item in items {
        match item {
            DumpItem::Policy(p) => {
                let json = serde_json::to_string(&p.policy()).map_err(|e| {
                    Error::internal(format!("{op}: a policy cannot be serialized")).with_source(e)
                })?;
                conn.prepare_cached(
                    "INSERT INTO stowage_policies (ns, budget, policy) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![ns, p.budget, json]))
                .map_err(sql)?;
            }
            DumpItem::Counters(c) => {
                let mut insert = conn
                    .prepare_cached(
                        "INSERT INTO stowage_counters (ns, budget, dimension, value)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql)?;
                for (dimension, value) in &c.values {
                    let value = to_i64(op, "counter", *value)?;
                    insert
                        .execute(params![ns, c.budget, dimension, value])
                        .map_err(sql)?;
                }
                if let Some(window) = &c.window {
                    let start = to_i64(op, "window start", window.bounds.start_ms)?;
                    let end = to_i64(op, "window end", window.bounds.end_ms)?;
                    conn.prepare_cached(
                        "INSERT INTO stowage_windows (ns, budget, spec, start_ms, end_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![ns, c.budget, window.spec, start, end]))
                    .map_err(sql)?;
                }
            }
            DumpItem::Reservation(r) => {
                reservation::store(conn, op, ns, &r.budget, &r.reservation())?;
            }
            DumpItem::Dedup(d) => {
                let expires_at = to_i64(op, "dedup expiry", d.expires_at)?;
                // A dump has no write time, and nothing reads it since schema version 2: 0.
                conn.prepare_cached(
                    "INSERT INTO stowage_dedup
                         (ns, budget, dedup_key, fingerprint, outcome, written_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        ns,
                        d.budget,
                        d.key,
                        d.fingerprint,
                        encode_outcome(&d.outcome),
                        expires_at
                    ])
                })
                .map_err(sql)?;
            }
            DumpItem::Record(r) => {
                let at = to_i64(op, "timestamp", r.stored_at)?;
                // A new rowid is above every other: rows keep the dump's order as store order.
                conn.prepare_cached(
                    "INSERT INTO stowage_records (ns, name, stored_at, value, idempotency_key)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![ns, r.name, at, r.value, r.idempotency_key]))
                .map_err(sql)?;
            }
        }
    }
    Ok(())
}

/// Whether namespace `ns` has no row in any table, read in one snapshot.
pub(crate) fn is_empty(conn: &mut Connection, ns: &str) -> Result<bool> {
    let op = "import";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| error::map(op, e))?;
    for table in schema::NAMESPACED_TABLES {
        let any: bool = tx
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE ns = ?1)"
            ))
            .and_then(|mut s| s.query_row([ns], |r| r.get(0)))
            .map_err(|e| error::map(op, e))?;
        if any {
            return Ok(false);
        }
    }
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of every page query: index searches only, in the index's order (no table scan,
    /// no sort into a temporary B-tree).
    #[test]
    fn every_page_query_is_an_index_range_scan_without_a_sort() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        let pk = |table: &str, range: &str| {
            format!("SEARCH {table} USING PRIMARY KEY (ns=? AND {range})")
        };
        let by_name = |how: &str, range: &str| {
            format!("SEARCH stowage_records USING {how}stowage_records_by_name (ns=? AND {range})")
        };
        let queries = [
            (POLICIES_SQL, pk("stowage_policies", "budget>?")),
            (COUNTER_BUDGETS_SQL, pk("stowage_counters", "budget>?")),
            (WINDOW_BUDGETS_SQL, pk("stowage_windows", "budget>?")),
            (
                COUNTERS_SQL,
                pk("stowage_counters", "budget>? AND budget<?"),
            ),
            (WINDOWS_SQL, pk("stowage_windows", "budget>? AND budget<?")),
            (
                RESERVATIONS_SQL,
                pk("stowage_reservations", "(budget,id)>(?,?)"),
            ),
            (
                AMOUNTS_SQL,
                pk(
                    "stowage_reservation_amounts",
                    "(budget,id)>(?,?) AND (budget,id)<(?,?)",
                ),
            ),
            (DEDUP_SQL, pk("stowage_dedup", "(budget,dedup_key)>(?,?)")),
            (NAMES_AFTER_SQL, by_name("INDEX ", "name>?")),
            (
                ROWS_AT_SQL,
                by_name("INDEX ", "name=? AND stored_at=? AND id>?"),
            ),
            (ROWS_AFTER_SQL, by_name("INDEX ", "name=? AND stored_at>?")),
        ];
        for (sql, expected) in queries {
            let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; s.parameter_count()];
            let plan: Vec<String> = s
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            // One step: no full scan, no "USE TEMP B-TREE FOR ORDER BY / DISTINCT".
            assert_eq!(plan, vec![expected], "{sql}");
        }
    }

    #[test]
    fn tokens_keep_their_parts() {
        let t = token(&["b;1", "id:2"]);
        assert_eq!(parts("export", &t, 2).unwrap(), vec!["b;1", "id:2"]);
        assert!(parts("export", &t, 3).is_err());
        assert!(parts("export", "", 1).is_err());
    }
}
