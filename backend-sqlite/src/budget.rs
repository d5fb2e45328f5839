//! Budget statements; `report_usage` is one `BEGIN IMMEDIATE` transaction around the core's `decide`.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use stowage_core::raw::{
    decide, decode_outcome, dedup_expiry, dedup_fingerprint, dedup_is_live, encode_outcome, show,
    StoredWindow, WindowChange, WindowStep,
};
use stowage_core::{
    BudgetPolicy, BudgetUsage, Error, ErrorKind, Result, UsageReceipt, UsageReport, Window,
    WindowBounds,
};

use crate::error;
use stowage_core::raw::validate::{from_i64, to_i64};

/// How many expired dedup records one keyed report removes on the side, so the table stays bounded.
const DEDUP_GC_BATCH: i64 = 8;

/// Replaces the policy of `budget` (`json` is `policy` serialized), applying the window change
/// at `now` in the same step (`WindowChange::at`, as the reference model does).
pub(crate) fn set_policy(
    conn: &Connection,
    ns: &str,
    budget: &str,
    policy: &BudgetPolicy,
    json: &str,
    now: u64,
) -> Result<()> {
    change_window(conn, "set_policy", ns, budget, policy.window.as_ref(), now)?;
    conn.prepare_cached(
        "INSERT INTO stowage_policies (ns, budget, policy) VALUES (?1, ?2, ?3)
         ON CONFLICT (ns, budget) DO UPDATE SET policy = excluded.policy",
    )
    .and_then(|mut s| s.execute(params![ns, budget, json]))
    .map_err(|e| error::map("set_policy", e))?;
    Ok(())
}

/// Reads the policy of `budget`.
pub(crate) fn policy(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
) -> Result<Option<BudgetPolicy>> {
    let json: Option<String> = conn
        .prepare_cached("SELECT policy FROM stowage_policies WHERE ns = ?1 AND budget = ?2")
        .and_then(|mut s| s.query_row(params![ns, budget], |r| r.get(0)).optional())
        .map_err(|e| error::map(op, e))?;
    json.map(|json| {
        serde_json::from_str(&json).map_err(|e| {
            Error::corruption(format!(
                "{op}: stored policy of budget {} cannot be decoded",
                show(budget)
            ))
            .with_source(e)
        })
    })
    .transpose()
}

/// Removes the policy; returns whether one existed. The counters stay as lifetime counters, as
/// `usage` showed them at `now` (`WindowChange::at` to no window).
pub(crate) fn delete_policy(conn: &Connection, ns: &str, budget: &str, now: u64) -> Result<bool> {
    change_window(conn, "delete_policy", ns, budget, None, now)?;
    let n = conn
        .prepare_cached("DELETE FROM stowage_policies WHERE ns = ?1 AND budget = ?2")
        .and_then(|mut s| s.execute(params![ns, budget]))
        .map_err(|e| error::map("delete_policy", e))?;
    Ok(n > 0)
}

/// SEMANTICS §3 steps 2–6, inside the caller's transaction (the worker's savepoint makes it atomic).
pub(crate) fn report_usage(
    conn: &Connection,
    ns: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
    dedup_ttl_ms: u64,
) -> Result<UsageReceipt> {
    let op = "report_usage";
    let fingerprint = report.dedup_key.as_ref().map(|_| dedup_fingerprint(report));
    if let (Some(key), Some(fingerprint)) = (&report.dedup_key, &fingerprint) {
        if let Some(answer) = recorded(conn, ns, budget, key, fingerprint, now)? {
            return answer;
        }
    }
    let policy = policy(conn, op, ns, budget)?;
    let window = policy.as_ref().and_then(|p| p.window.as_ref());
    let step = WindowStep::at(window, stored_window(conn, op, ns, budget)?.as_ref(), now)?;
    let current = if step.keeps_counters() {
        counters_of(conn, op, ns, budget, &report.dimensions)?
    } else {
        BTreeMap::new()
    };
    let pending = crate::reservation::pending(conn, op, ns, budget, now)?;
    let decision = decide(budget, &current, &pending, policy.as_ref(), report)?;
    apply(conn, op, ns, budget, window, step, &decision.new_counters)?;
    if let (Some(key), Some(fingerprint)) = (&report.dedup_key, &fingerprint) {
        record_dedup(
            conn,
            ns,
            budget,
            key,
            fingerprint,
            &encode_outcome(&decision.outcome),
            now,
            dedup_ttl_ms,
        )?;
    }
    Ok(UsageReceipt {
        outcome: decision.outcome,
        replayed: false,
    })
}

/// `report_usage` of every `(budget, report)` of `items` in order, inside the caller's transaction
/// at one clock reading `now`: one answer per item, exactly those of the calls one by one (each
/// item sees the items before it). Every item runs in its own savepoint, so an item that fails
/// after writing undoes only its own writes. An item that fails `Unavailable` (the store itself)
/// ends the batch with that error as the outer `Err`, and so does a savepoint statement that
/// fails: the caller's transaction must then be rolled back whole.
pub(crate) fn report_usage_batch(
    conn: &Connection,
    ns: &str,
    items: &[(String, UsageReport)],
    now: u64,
    dedup_ttl_ms: u64,
) -> Result<Vec<Result<UsageReceipt>>> {
    let op = "report_usage_batch";
    let savepoint = |sql: &str| crate::worker::exec(conn, op, sql);
    let mut answers = Vec::with_capacity(items.len());
    for (budget, report) in items {
        savepoint("SAVEPOINT stowage_item")?;
        let answer = report_usage(conn, ns, budget, report, now, dedup_ttl_ms);
        if let Err(e) = &answer {
            if e.kind() == ErrorKind::Unavailable {
                return Err(e.clone());
            }
            savepoint("ROLLBACK TO stowage_item")?;
        }
        savepoint("RELEASE stowage_item")?;
        answers.push(answer);
    }
    Ok(answers)
}

/// What a live dedup record of `report`'s key says at `now`, read without writing anything: its
/// replay (same fingerprint) or `Conflict` (another one); `None` for an unkeyed report or without
/// a live record. The outer `Err` is a failure of the store.
pub(crate) fn recorded_answer(
    conn: &Connection,
    ns: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
) -> Result<Option<Result<UsageReceipt>>> {
    match &report.dedup_key {
        Some(key) => recorded(conn, ns, budget, key, &dedup_fingerprint(report), now),
        None => Ok(None),
    }
}

/// The answer of the live dedup record of `key`: the recorded outcome replayed for the same
/// fingerprint, `Conflict` for a different one; `None` when no record of `key` is live at `now`.
/// The outer `Err` is a failure of the store.
fn recorded(
    conn: &Connection,
    ns: &str,
    budget: &str,
    key: &str,
    fingerprint: &str,
    now: u64,
) -> Result<Option<Result<UsageReceipt>>> {
    let op = "report_usage";
    let found: Option<(String, String, i64)> = conn
        .prepare_cached(
            "SELECT fingerprint, outcome, expires_at FROM stowage_dedup
             WHERE ns = ?1 AND budget = ?2 AND dedup_key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![ns, budget, key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(|e| error::map(op, e))?;
    let Some((stored_fingerprint, outcome, expires_at)) = found else {
        return Ok(None);
    };
    // The record's own expiry, fixed by the handle that wrote it: the reader's TTL plays no part.
    let expires_at = from_i64(op, "dedup expiry", expires_at)?;
    if !dedup_is_live(expires_at, now) {
        return Ok(None);
    }
    if stored_fingerprint != fingerprint {
        return Ok(Some(Err(Error::dedup_conflict(op, budget, key))));
    }
    Ok(Some(Ok(UsageReceipt {
        outcome: decode_outcome(op, &outcome)?,
        replayed: true,
    })))
}

/// Writes the dedup record with its expiry (`dedup_expiry(now, dedup_ttl_ms)` of this, the
/// writing, handle) and removes a few records of the namespace whose own expiry has passed.
#[allow(clippy::too_many_arguments)]
fn record_dedup(
    conn: &Connection,
    ns: &str,
    budget: &str,
    key: &str,
    fingerprint: &str,
    outcome: &str,
    now: u64,
    dedup_ttl_ms: u64,
) -> Result<()> {
    let op = "report_usage";
    let at = to_i64(op, "clock", now)?;
    let expires_at = to_i64(op, "dedup expiry", dedup_expiry(now, dedup_ttl_ms))?;
    conn.prepare_cached(
        "INSERT INTO stowage_dedup
             (ns, budget, dedup_key, fingerprint, outcome, written_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (ns, budget, dedup_key) DO UPDATE SET
             fingerprint = excluded.fingerprint, outcome = excluded.outcome,
             written_at = excluded.written_at, expires_at = excluded.expires_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            ns,
            budget,
            key,
            fingerprint,
            outcome,
            at,
            expires_at
        ])
    })
    .map_err(|e| error::map(op, e))?;
    // Not live once now >= expires_at (`dedup_is_live`); served by stowage_dedup_by_expiry.
    conn.prepare_cached(
        "DELETE FROM stowage_dedup WHERE ns = ?1 AND (budget, dedup_key) IN (
             SELECT budget, dedup_key FROM stowage_dedup
             WHERE ns = ?1 AND expires_at <= ?2 LIMIT ?3)",
    )
    .and_then(|mut s| s.execute(params![ns, at, DEDUP_GC_BATCH]))
    .map_err(|e| error::map(op, e))?;
    Ok(())
}

/// Writes `new_counters` (nothing when empty) into the window `step` says the write counts into,
/// replacing a passed window's counters first (lazy rollover), as the reference model's `apply`.
pub(crate) fn apply(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    window: Option<&Window>,
    step: WindowStep,
    new_counters: &BTreeMap<String, u64>,
) -> Result<()> {
    if new_counters.is_empty() {
        return Ok(());
    }
    if let (
        WindowStep::Roll {
            bounds,
            keep_counters,
        },
        Some(window),
    ) = (step, window)
    {
        if !keep_counters {
            delete_counters(conn, op, ns, budget)?;
        }
        let stored = StoredWindow {
            spec: window.spec(),
            bounds,
        };
        write_window(conn, op, ns, budget, Some(&stored))?;
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO stowage_counters (ns, budget, dimension, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ns, budget, dimension) DO UPDATE SET value = excluded.value",
        )
        .map_err(|e| error::map(op, e))?;
    for (dimension, value) in new_counters {
        let value = to_i64(op, "counter", *value)?;
        upsert
            .execute(params![ns, budget, dimension, value])
            .map_err(|e| error::map(op, e))?;
    }
    Ok(())
}

/// The current counters of `dimensions` (absent ones are left out, meaning 0).
pub(crate) fn counters_of(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    dimensions: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>> {
    let mut select = conn
        .prepare_cached(
            "SELECT value FROM stowage_counters WHERE ns = ?1 AND budget = ?2 AND dimension = ?3",
        )
        .map_err(|e| error::map(op, e))?;
    let mut current = BTreeMap::new();
    for dimension in dimensions.keys() {
        let value: Option<i64> = select
            .query_row(params![ns, budget, dimension], |r| r.get(0))
            .optional()
            .map_err(|e| error::map(op, e))?;
        if let Some(value) = value {
            current.insert(dimension.clone(), from_i64(op, "counter", value)?);
        }
    }
    Ok(current)
}

/// The counters `budget` counts into at `now` (none once their window has passed) and the bounds
/// of that window, read in one snapshot (a read transaction: writers never wait for it).
pub(crate) fn usage(
    conn: &mut Connection,
    ns: &str,
    budget: &str,
    now: u64,
) -> Result<BudgetUsage> {
    let op = "usage";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| error::map(op, e))?;
    let policy = policy(&tx, op, ns, budget)?;
    let stored = stored_window(&tx, op, ns, budget)?;
    let step = WindowStep::at(
        policy.as_ref().and_then(|p| p.window.as_ref()),
        stored.as_ref(),
        now,
    )?;
    let counters = if step.keeps_counters() {
        all_counters(&tx, ns, budget)?
    } else {
        BTreeMap::new()
    };
    let pending = crate::reservation::pending(&tx, op, ns, budget, now)?;
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(BudgetUsage {
        counters,
        pending,
        window: step.bounds(),
    })
}

/// Every counter of `budget`.
fn all_counters(conn: &Connection, ns: &str, budget: &str) -> Result<BTreeMap<String, u64>> {
    let op = "usage";
    let mut statement = conn
        .prepare_cached(
            "SELECT dimension, value FROM stowage_counters WHERE ns = ?1 AND budget = ?2",
        )
        .map_err(|e| error::map(op, e))?;
    let rows = statement
        .query_map(params![ns, budget], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(|e| error::map(op, e))?;
    let mut counters = BTreeMap::new();
    for row in rows {
        let (dimension, value) = row.map_err(|e| error::map(op, e))?;
        counters.insert(dimension, from_i64(op, "counter", value)?);
    }
    Ok(counters)
}

/// Removes every counter of `budget`; the stored window stays.
pub(crate) fn reset_usage(conn: &Connection, ns: &str, budget: &str) -> Result<()> {
    delete_counters(conn, "reset_usage", ns, budget)
}

/// Removes every counter of `budget`.
fn delete_counters(conn: &Connection, op: &str, ns: &str, budget: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM stowage_counters WHERE ns = ?1 AND budget = ?2")
        .and_then(|mut s| s.execute(params![ns, budget]))
        .map_err(|e| error::map(op, e))?;
    Ok(())
}

/// The window `budget`'s counters belong to, if one is stored.
pub(crate) fn stored_window(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
) -> Result<Option<StoredWindow>> {
    let found: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT spec, start_ms, end_ms FROM stowage_windows WHERE ns = ?1 AND budget = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![ns, budget], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(|e| error::map(op, e))?;
    found
        .map(|(spec, start_ms, end_ms)| {
            Ok(StoredWindow {
                spec,
                bounds: WindowBounds {
                    start_ms: from_i64(op, "window start", start_ms)?,
                    end_ms: from_i64(op, "window end", end_ms)?,
                },
            })
        })
        .transpose()
}

/// Stores `stored` as the window of `budget`'s counters, or removes the stored window (`None`).
fn write_window(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    stored: Option<&StoredWindow>,
) -> Result<()> {
    match stored {
        Some(stored) => {
            let start = to_i64(op, "window start", stored.bounds.start_ms)?;
            let end = to_i64(op, "window end", stored.bounds.end_ms)?;
            conn.prepare_cached(
                "INSERT INTO stowage_windows (ns, budget, spec, start_ms, end_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (ns, budget) DO UPDATE SET
                     spec = excluded.spec, start_ms = excluded.start_ms, end_ms = excluded.end_ms",
            )
            .and_then(|mut s| s.execute(params![ns, budget, stored.spec, start, end]))
        }
        None => conn
            .prepare_cached("DELETE FROM stowage_windows WHERE ns = ?1 AND budget = ?2")
            .and_then(|mut s| s.execute(params![ns, budget])),
    }
    .map_err(|e| error::map(op, e))?;
    Ok(())
}

/// Applies the change from the stored policy's window to `new` (`None`: lifetime) at `now`, inside
/// the caller's transaction, before the policy itself is replaced (`WindowChange::at`).
fn change_window(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    new: Option<&Window>,
    now: u64,
) -> Result<()> {
    let old = policy(conn, op, ns, budget)?;
    let old = old.as_ref().and_then(|p| p.window.as_ref());
    let stored = stored_window(conn, op, ns, budget)?;
    match WindowChange::at(old, stored.as_ref(), new, now)? {
        WindowChange::Unchanged => Ok(()),
        WindowChange::Set {
            stored,
            keep_counters,
        } => {
            if !keep_counters {
                delete_counters(conn, op, ns, budget)?;
            }
            write_window(conn, op, ns, budget, stored.as_ref())
        }
    }
}
