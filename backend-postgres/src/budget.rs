//! Budget statements and the decoding of what the plpgsql functions answer.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::{show, ReportReply, StoredWindow};
use stowage_core::{Breach, BudgetPolicy, DimensionLimit, Error, Result, Window, WindowBounds};

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
                "SELECT status, b_dims, b_usage, b_limits, b_crossed, spec \
                 FROM {schema}.report_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            set_policy: format!(
                "SELECT status, old_spec \
                 FROM {schema}.set_policy($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            policy: format!(
                "SELECT l.dimension, l.soft, l.hard, p.window_spec FROM {schema}.policies p \
                 LEFT JOIN {schema}.limits l ON l.budget = p.budget WHERE p.budget = $1"
            ),
            delete_policy: format!(
                "SELECT status, old_spec, existed FROM {schema}.delete_policy($1, $2, $3)"
            ),
            // One statement, one snapshot: the counters, the stored window and the policy's window.
            usage: format!(
                "SELECT p.window_spec, w.spec, w.start_ms, w.end_ms, \
                        ARRAY(SELECT c.dimension FROM {schema}.counters c \
                               WHERE c.budget = $1 ORDER BY c.dimension), \
                        ARRAY(SELECT c.value FROM {schema}.counters c \
                               WHERE c.budget = $1 ORDER BY c.dimension) \
                 FROM (SELECT $1::text AS budget) b \
                 LEFT JOIN {schema}.policies p ON p.budget = b.budget \
                 LEFT JOIN {schema}.windows w ON w.budget = b.budget"
            ),
            reset: format!("SELECT {schema}.reset_usage($1)"),
        }
    }
}

/// Decodes the row `report_usage` returned into the shared reply (the status decides the rest).
///
/// For `overflow` the arrays hold the dimension, its counter and the delta; otherwise they are
/// the breaches, one entry per dimension in each array.
pub(crate) fn decode_report(budget: &str, row: &PgRow) -> Result<Report> {
    let op = "report_usage";
    let e = |err| error::map(op, err);
    let status: String = row.try_get(0).map_err(e)?;
    if status == "window" {
        let spec: Option<String> = row.try_get(5).map_err(e)?;
        let spec = spec.ok_or_else(|| {
            Error::corruption(format!(
                "{op}: budget {} needs a new window but none was named",
                show(budget)
            ))
        })?;
        return Ok(Report::Window(Window::from_spec(op, &spec)?));
    }
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
                    pending: 0, // TODO(issue-12): the breach's held amount
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    Ok(Report::Reply(ReportReply {
        status,
        breaches,
        detail,
    }))
}

/// What one `report_usage` call answered.
#[derive(Debug)]
pub(crate) enum Report {
    /// The outcome (or the error it signals).
    Reply(ReportReply),
    /// Nothing applied: the policy's window has rolled over; call again with its bounds at now.
    Window(Window),
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
    let mut window = None;
    for row in rows {
        let spec: Option<String> = row.try_get(3).map_err(e)?;
        window = spec.map(|spec| Window::from_spec(op, &spec)).transpose()?;
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
    Ok(Some(BudgetPolicy { limits, window }))
}

/// What `usage` reads in one statement: the counters, the stored window and the policy's window.
#[derive(Debug)]
pub(crate) struct UsageRow {
    pub(crate) counters: BTreeMap<String, u64>,
    pub(crate) stored: Option<StoredWindow>,
    pub(crate) window: Option<Window>,
}

/// Decodes the row of the usage statement.
pub(crate) fn decode_usage(row: &PgRow) -> Result<UsageRow> {
    let op = "usage";
    let e = |err| error::map(op, err);
    let policy_spec: Option<String> = row.try_get(0).map_err(e)?;
    let stored_spec: Option<String> = row.try_get(1).map_err(e)?;
    let start: Option<i64> = row.try_get(2).map_err(e)?;
    let end: Option<i64> = row.try_get(3).map_err(e)?;
    let dims: Vec<String> = array(op, row, 4)?;
    let values: Vec<i64> = array(op, row, 5)?;
    if dims.len() != values.len() {
        return Err(Error::corruption(format!(
            "{op}: counter arrays have different lengths"
        )));
    }
    let mut counters = BTreeMap::new();
    for (dimension, value) in dims.into_iter().zip(values) {
        counters.insert(dimension, from_i64(op, "counter", value)?);
    }
    let stored = match (stored_spec, start, end) {
        (Some(spec), Some(start), Some(end)) => Some(StoredWindow {
            spec,
            bounds: WindowBounds {
                start_ms: from_i64(op, "window start", start)?,
                end_ms: from_i64(op, "window end", end)?,
            },
        }),
        _ => None,
    };
    let window = policy_spec
        .map(|spec| Window::from_spec(op, &spec))
        .transpose()?;
    Ok(UsageRow {
        counters,
        stored,
        window,
    })
}
