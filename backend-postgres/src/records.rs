//! Record statements and their decoding.

use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::{decode_value, Pattern, RowSelector};
use stowage_core::{Result, StoredValue};

use crate::error;
use stowage_core::raw::validate::from_i64;

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

/// Streams rows (ordered by name, newest first) through the core matcher and the per-record limit.
///
/// The outer error is the engine's (for the caller's retry and connection handling); the inner
/// one a row that does not decode (the answer is then not read to its end).
pub(crate) async fn collect_matching<'c, S>(
    mut rows: S,
    pattern: &Pattern,
    limit_per_record: Option<usize>,
) -> Result<Result<Vec<StoredValue>>, sqlx::Error>
where
    S: futures_util::Stream<Item = Result<PgRow, sqlx::Error>> + Unpin + Send + 'c,
{
    let op = "query";
    let mut out = Vec::new();
    let mut selector = RowSelector::new(pattern, limit_per_record);
    while let Some(row) = rows.try_next().await? {
        let decoded = (|| {
            let name: String = row.try_get(0).map_err(|e| error::map(op, e))?;
            if !selector.keep(&name) {
                return Ok(None);
            }
            let text: String = row.try_get(1).map_err(|e| error::map(op, e))?;
            let stored_at: i64 = row.try_get(2).map_err(|e| error::map(op, e))?;
            Ok(Some(StoredValue {
                value: decode_value(op, &name, &text)?,
                stored_at: from_i64(op, "timestamp", stored_at)?,
                record_name: name,
            }))
        })();
        match decoded {
            Ok(Some(value)) => out.push(value),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}
