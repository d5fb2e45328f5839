//! Budget statements and the decoding of what the plpgsql functions answer.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::show;
use stowage_core::{
    Breach, BudgetPolicy, DimensionLimit, Error, Result, UsageOutcome, UsageReceipt,
};

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

/// Decodes the row `report_usage` returned into a receipt, or the `Conflict`/`Overflow` it signals.
pub(crate) fn decode_report(budget: &str, key: Option<&str>, row: &PgRow) -> Result<UsageReceipt> {
    let op = "report_usage";
    let e = |err| error::map(op, err);
    let status: String = row.try_get(0).map_err(e)?;
    let dims: Option<Vec<String>> = row.try_get(1).map_err(e)?;
    let usage: Option<Vec<i64>> = row.try_get(2).map_err(e)?;
    let limits: Option<Vec<i64>> = row.try_get(3).map_err(e)?;
    let crossed: Option<Vec<bool>> = row.try_get(4).map_err(e)?;
    let (replayed, status) = match status.strip_prefix("replay-") {
        Some(rest) => (true, rest),
        None => (false, status.as_str()),
    };
    match status {
        "conflict" => return Err(Error::dedup_conflict(op, budget, key.unwrap_or_default())),
        "overflow" => {
            let dims = dims.unwrap_or_default();
            let (current, delta) = (usage.unwrap_or_default(), limits.unwrap_or_default());
            return Err(Error::counter_overflow(
                op,
                budget,
                dims.first().map(String::as_str).unwrap_or_default(),
                current.first().copied().unwrap_or_default(),
                delta.first().copied().unwrap_or_default(),
            ));
        }
        _ => {}
    }
    let dims = dims.unwrap_or_default();
    let usage = usage.unwrap_or_default();
    let limits = limits.unwrap_or_default();
    let crossed = crossed.unwrap_or_default();
    if usage.len() != dims.len() || limits.len() != dims.len() || crossed.len() != dims.len() {
        return Err(Error::corruption(format!(
            "{op}: breach arrays of budget {} have different lengths",
            show(budget)
        )));
    }
    let mut breaches = Vec::with_capacity(dims.len());
    for (((dimension, usage), limit), crossed) in
        dims.into_iter().zip(usage).zip(limits).zip(crossed)
    {
        breaches.push(Breach {
            dimension,
            usage: from_i64(op, "usage", usage)?,
            limit: from_i64(op, "limit", limit)?,
            crossed,
        });
    }
    let outcome = match status {
        "ok" if breaches.is_empty() => UsageOutcome::Ok,
        "soft" => UsageOutcome::SoftBreach(breaches),
        "hard" => UsageOutcome::HardBreach(breaches),
        other => {
            return Err(Error::corruption(format!(
                "{op}: unknown status {} for budget {}",
                show(other),
                show(budget)
            )))
        }
    };
    Ok(UsageReceipt { outcome, replayed })
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
    Ok(Some(BudgetPolicy { limits }))
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
