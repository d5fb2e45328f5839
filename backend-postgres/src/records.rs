//! Record statements and their decoding.

use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::validate::from_i64;
use stowage_core::raw::{NameRange, QueryPlan};
use stowage_core::StoredValue;

use crate::error::{self, Fail};

/// The SQL of the record operations for one schema.
#[derive(Debug)]
pub(crate) struct RecordSql {
    pub(crate) store: String,
    pub(crate) store_idempotent: String,
    pub(crate) query_exact: String,
    pub(crate) query_range: String,
    pub(crate) query_from: String,
    pub(crate) cleanup: String,
}

impl RecordSql {
    pub(crate) fn new(schema: &str) -> Self {
        let select = format!("SELECT name, value, stored_at FROM {schema}.records WHERE ");
        let tail =
            " AND stored_at >= $2 AND stored_at <= $3 ORDER BY name, stored_at DESC, id DESC";
        RecordSql {
            store: format!(
                "INSERT INTO {schema}.records (name, stored_at, value) VALUES ($1, $2, $3)"
            ),
            store_idempotent: format!(
                "SELECT status, value, stored_at FROM {schema}.store_idempotent($1, $2, $3, $4)"
            ),
            query_exact: format!("{select}name = $1{tail}"),
            query_range: format!("{select}name >= $1 AND name < $4{tail}"),
            query_from: format!("{select}name >= $1{tail}"),
            cleanup: format!("DELETE FROM {schema}.records WHERE stored_at < $1"),
        }
    }
}

/// The statement `plan` reads with, and the name bound as `$4` when it has an upper end.
pub(crate) fn statement<'s>(
    sql: &'s RecordSql,
    plan: &'s QueryPlan<'_>,
) -> (&'s str, Option<&'s str>) {
    match &plan.names {
        NameRange::Exact(_) => (&sql.query_exact, None),
        NameRange::From { end: Some(end), .. } => (&sql.query_range, Some(end)),
        NameRange::From { end: None, .. } => (&sql.query_from, None),
    }
}

/// The name bound as `$1`: the exact name or the range's start.
pub(crate) fn first_name<'p>(plan: &QueryPlan<'p>) -> &'p str {
    match plan.names {
        NameRange::Exact(name) | NameRange::From { start: name, .. } => name,
    }
}

/// Reads rows (ordered by name, newest first) into `plan`'s answer.
///
/// A stream error is the engine's (`Fail::Sql`, for the run loop's retry and connection
/// handling); a row that does not decode is `Fail::Final`, and the answer was then not read to
/// its end, so the caller must not reuse the connection.
pub(crate) async fn collect<S>(mut rows: S, plan: &QueryPlan<'_>) -> Result<Vec<StoredValue>, Fail>
where
    S: futures_util::Stream<Item = Result<PgRow, sqlx::Error>> + Unpin + Send,
{
    let op = "query";
    let decode = |e| Fail::Final(error::map(op, e));
    let mut answer = plan.collector();
    while let Some(row) = rows.try_next().await? {
        let name: String = row.try_get(0).map_err(decode)?;
        if !answer.wants(&name) {
            continue;
        }
        let text: String = row.try_get(1).map_err(decode)?;
        let stored_at: i64 = row.try_get(2).map_err(decode)?;
        answer.push(op, name, &text, from_i64(op, "timestamp", stored_at)?)?;
    }
    Ok(answer.finish())
}
