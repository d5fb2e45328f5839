//! Record operations: rows in one sorted set per record, record names in the namespace's name
//! index (a sorted set, scores 0) so pattern queries and cleanup read only what they need.

use futures_util::{StreamExt, TryStreamExt};
use stowage_core::raw::{NameRange, NewRow, Pattern, QueryPlan};
use stowage_core::{Error, QueryParams, Result, StoreResult, StoredValue};

use crate::connection::Connection;
use crate::keys::{name_index, record_keys};
use crate::rows::{lex_before, lex_max, lex_min, split_member};
use crate::scripts::Scripts;

/// Names read from the name index per call, and rows deleted per cleanup call.
const BATCH: usize = 1_000;
/// Records read or cleaned at once (the connection pipelines them).
const PARALLEL_RECORDS: usize = 32;

/// Appends a row; the record name enters the namespace's name index first (in the same script
/// on a standalone server, one call before on a cluster), so no row is ever unlisted. `key` is
/// `""` for a plain store. Answers `appended`, `exists` or `conflict`.
async fn append(
    conn: &Connection,
    scripts: &Scripts,
    namespace: &str,
    op: &str,
    row: &NewRow<'_>,
    key: &str,
) -> Result<String> {
    let index = name_index(namespace);
    if conn.is_cluster() {
        let _: i64 = conn
            .run(op, redis::cmd("ZADD").arg(&index).arg(0).arg(row.record))
            .await?;
    }
    let listed_here = (!conn.is_cluster()).then_some(index.as_str());
    scripts
        .store(
            conn,
            op,
            &record_keys(namespace, row.record),
            listed_here,
            row,
            key,
        )
        .await
}

/// Appends a row: one EVALSHA (plus one `ZADD` on a cluster).
pub(crate) async fn store(
    conn: &Connection,
    scripts: &Scripts,
    namespace: &str,
    row: NewRow<'_>,
) -> Result<()> {
    append(conn, scripts, namespace, "store", &row, "").await?;
    Ok(())
}

/// Appends once per (record, key): one EVALSHA (plus one `ZADD` on a cluster).
pub(crate) async fn store_idempotent(
    conn: &Connection,
    scripts: &Scripts,
    namespace: &str,
    row: NewRow<'_>,
    key: &str,
) -> Result<StoreResult> {
    let op = "store_idempotent";
    match append(conn, scripts, namespace, op, &row, key)
        .await?
        .as_str()
    {
        "appended" => Ok(StoreResult::Appended),
        "exists" => Ok(StoreResult::AlreadyExists),
        _ => Err(Error::idempotency_conflict(op, row.record, key)),
    }
}

/// Record names of the namespace in `[start, end)` (bytes; no end: every name from `start`),
/// in byte order, read in bounded batches.
async fn names_in(
    conn: &Connection,
    namespace: &str,
    op: &str,
    start: &str,
    end: Option<&str>,
) -> Result<Vec<String>> {
    let index = name_index(namespace);
    let max = end.map_or_else(|| "+".to_owned(), |upper| format!("({upper}"));
    let mut min = if start.is_empty() {
        "-".to_owned()
    } else {
        format!("[{start}")
    };
    let mut names = Vec::new();
    loop {
        let batch: Vec<String> = conn
            .run(
                op,
                redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(&min)
                    .arg(&max)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(BATCH),
            )
            .await?;
        let done = batch.len() < BATCH;
        if let Some(last) = batch.last() {
            min = format!("({last}");
        }
        names.extend(batch);
        if done {
            return Ok(names);
        }
    }
}

/// Rows of the records `pattern` matches: the names from the index (none read for an exact
/// name), then one `ZREVRANGEBYLEX` per record, pipelined.
pub(crate) async fn query(
    conn: &Connection,
    namespace: &str,
    pattern: &Pattern,
    params: QueryParams,
) -> Result<Vec<StoredValue>> {
    let op = "query";
    let Some(plan) = QueryPlan::new(pattern, params) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = match &plan.names {
        NameRange::Exact(name) => vec![(*name).to_owned()],
        NameRange::From { start, end } => names_in(conn, namespace, op, start, end.as_deref())
            .await?
            .into_iter()
            .filter(|n| pattern.matches(n))
            .collect(),
    };
    let (min, max) = (lex_min(plan.start), lex_max(plan.end));
    let limit = plan.limit_per_record;
    let per_record = futures_util::stream::iter(names)
        .map(|name| {
            let (min, max) = (&min, &max);
            async move {
                let rows_key = record_keys(namespace, &name).rows;
                let mut cmd = redis::cmd("ZREVRANGEBYLEX");
                cmd.arg(&rows_key).arg(max).arg(min);
                // LIMIT takes a signed 64-bit count; a larger limit keeps every row anyway.
                if let Some(limit) = limit.and_then(|l| i64::try_from(l).ok()) {
                    cmd.arg("LIMIT").arg(0).arg(limit);
                }
                let members: Vec<Vec<u8>> = conn.run(op, &cmd).await?;
                Ok::<_, Error>((name, members))
            }
        })
        .buffered(PARALLEL_RECORDS)
        .try_collect::<Vec<_>>()
        .await?;
    let mut rows = plan.collector();
    for (name, members) in per_record {
        for member in &members {
            if rows.wants(&name) {
                let (stored_at, text) = split_member(op, &name, member)?;
                rows.push(op, name.clone(), text, stored_at)?;
            }
        }
    }
    Ok(rows.finish())
}

/// Deletes rows older than `older_than` from every record, in batches of one EVALSHA each.
pub(crate) async fn cleanup(
    conn: &Connection,
    scripts: &Scripts,
    namespace: &str,
    older_than: u64,
) -> Result<u64> {
    let op = "cleanup";
    let bound = lex_before(older_than);
    let names = names_in(conn, namespace, op, "", None).await?;
    let counts = futures_util::stream::iter(names)
        .map(|name| {
            let bound = &bound;
            async move {
                let keys = record_keys(namespace, &name);
                let mut total = 0u64;
                loop {
                    let deleted = scripts.cleanup(conn, &keys, bound, BATCH).await?;
                    total += deleted;
                    if deleted < u64::try_from(BATCH).expect("small batch") {
                        return Ok::<u64, Error>(total);
                    }
                }
            }
        })
        .buffered(PARALLEL_RECORDS)
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(counts.into_iter().sum())
}
