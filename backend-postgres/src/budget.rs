//! Budget statements and the decoding of what the plpgsql functions answer.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::{show, ReportReply};
use stowage_core::{Breach, BudgetPolicy, DimensionLimit, Error, Result};

use crate::error;
use stowage_core::raw::validate::from_i64;

/// The SQL of the budget operations for one schema.
#[derive(Debug)]
pub(crate) struct BudgetSql {
    pub(crate) report: String,
    pub(crate) set_policy: String,
    pub(crate) policy: String,
    pub(crate) delete_policy: String,
    pub(crate) usage: String,
    pub(crate) reset: String,
}

impl BudgetSql {
    pub(crate) fn new(schema: &str) -> Self {
        BudgetSql {
            report: format!(
                "SELECT status, b_dims, b_usage, b_limits, b_crossed \
                 FROM {schema}.report_usage($1, $2, $3, $4, $5, $6, $7)"
            ),
            set_policy: format!("SELECT {schema}.set_policy($1, $2, $3, $4)"),
            policy: format!(
                "SELECT l.dimension, l.soft, l.hard FROM {schema}.policies p \
                 LEFT JOIN {schema}.limits l ON l.budget = p.budget WHERE p.budget = $1"
            ),
            delete_policy: format!("SELECT {schema}.delete_policy($1)"),
            usage: format!("SELECT dimension, value FROM {schema}.counters WHERE budget = $1"),
            reset: format!("SELECT {schema}.reset_usage($1)"),
        }
    }
}

/// Decodes the row `report_usage` returned into the shared reply (the status decides the rest).
///
/// For `overflow` the arrays hold the dimension, its counter and the delta; otherwise they are
/// the breaches, one entry per dimension in each array.
pub(crate) fn decode_report(budget: &str, row: &PgRow) -> Result<ReportReply> {
    let op = "report_usage";
    let e = |err| error::map(op, err);
    let status: String = row.try_get(0).map_err(e)?;
    let dims: Vec<String> = array(op, row, 1)?;
    let usage: Vec<i64> = array(op, row, 2)?;
    let limits: Vec<i64> = array(op, row, 3)?;
    let crossed: Vec<bool> = array(op, row, 4)?;
    let first = |values: &[i64]| values.first().copied().unwrap_or_default().to_string();
    let detail = (
        dims.first().cloned().unwrap_or_default(),
        first(&usage),
        first(&limits),
    );
    let breaches = if status == "overflow" {
        Vec::new()
    } else {
        if usage.len() != dims.len() || limits.len() != dims.len() || crossed.len() != dims.len() {
            return Err(Error::corruption(format!(
                "{op}: breach arrays of budget {} have different lengths",
                show(budget)
            )));
        }
        dims.into_iter()
            .zip(usage)
            .zip(limits)
            .zip(crossed)
            .map(|(((dimension, usage), limit), crossed)| {
                Ok(Breach {
                    dimension,
                    usage: from_i64(op, "usage", usage)?,
                    limit: from_i64(op, "limit", limit)?,
                    crossed,
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    Ok(ReportReply {
        status,
        breaches,
        detail,
    })
}

/// Array column `i` of `row`; NULL reads as empty.
fn array<T>(op: &str, row: &PgRow, i: usize) -> Result<Vec<T>>
where
    Vec<T>: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<Option<Vec<T>>, _>(i)
        .map(Option::unwrap_or_default)
        .map_err(|e| error::map(op, e))
}

/// Decodes the rows of the policy query: none means no policy; a NULL dimension means no limits.
pub(crate) fn decode_policy(rows: &[PgRow]) -> Result<Option<BudgetPolicy>> {
    let op = "policy";
    let e = |err| error::map(op, err);
    if rows.is_empty() {
        return Ok(None);
    }
    let mut limits = BTreeMap::new();
    for row in rows {
        let dimension: Option<String> = row.try_get(0).map_err(e)?;
        let soft: Option<i64> = row.try_get(1).map_err(e)?;
        let hard: Option<i64> = row.try_get(2).map_err(e)?;
        if let Some(dimension) = dimension {
            let limit = DimensionLimit {
                soft: soft.map(|v| from_i64(op, "soft limit", v)).transpose()?,
                hard: hard.map(|v| from_i64(op, "hard limit", v)).transpose()?,
            };
            limits.insert(dimension, limit);
        }
    }
    Ok(Some(BudgetPolicy {
        limits,
        ..BudgetPolicy::default()
    }))
}

/// Decodes counters rows.
pub(crate) fn decode_usage(rows: &[PgRow]) -> Result<BTreeMap<String, u64>> {
    let op = "usage";
    let e = |err| error::map(op, err);
    let mut counters = BTreeMap::new();
    for row in rows {
        let dimension: String = row.try_get(0).map_err(e)?;
        let value: i64 = row.try_get(1).map_err(e)?;
        counters.insert(dimension, from_i64(op, "counter", value)?);
    }
    Ok(counters)
}
