//! Budget statements and the decoding of what the plpgsql functions answer.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use stowage_core::raw::{show, ReportReply, ReservationReply, StoredWindow};
use stowage_core::{
    Breach, BudgetPolicy, DimensionLimit, Error, Reservation, ReservationState, Result,
    UsageOutcome, Window, WindowBounds,
};

use crate::error;
use stowage_core::raw::validate::from_i64;

/// The SQL of the budget operations for one schema.
#[derive(Debug)]
pub(crate) struct BudgetSql {
    pub(crate) report: String,
    pub(crate) report_batch: String,
    pub(crate) set_policy: String,
    pub(crate) policy: String,
    pub(crate) delete_policy: String,
    pub(crate) usage: String,
    pub(crate) reset: String,
    pub(crate) reserve: String,
    pub(crate) commit: String,
    pub(crate) release: String,
    pub(crate) reserve_all: String,
    pub(crate) commit_all: String,
    pub(crate) release_all: String,
    pub(crate) report_all: String,
    pub(crate) reservation: String,
    pub(crate) reservations: String,
}

/// The columns of a `res_reply` row, in the order [`decode_reply`] reads them.
const REPLY: &str = "step, budget, status, b_dims, b_usage, b_limits, b_crossed, b_pending, \
                     expires_at, d1, d2, d3";

/// The columns of a reservation row, in the order [`decode_reservation`] reads them.
pub(crate) const RESERVATION: &str =
    "id, dims, amounts, ttl_ms, expires_at, remember_ms, state, resolved_at, \
                           actual_dims, actual_amounts, outcome, b_dims, b_usage, b_limits, \
                           b_crossed, b_pending";

impl BudgetSql {
    pub(crate) fn new(schema: &str) -> Self {
        BudgetSql {
            report: format!(
                "SELECT status, b_dims, b_usage, b_limits, b_crossed, b_pending, spec \
                 FROM {schema}.report_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            // The same columns as `report`, one row per item: decode_report reads both.
            report_batch: format!(
                "SELECT status, b_dims, b_usage, b_limits, b_crossed, b_pending, spec \
                 FROM {schema}.report_usage_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
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
                               WHERE c.budget = $1 ORDER BY c.dimension), \
                        ARRAY(SELECT x.dim FROM {schema}.reservations r, \
                                     unnest(r.dims, r.amounts) AS x(dim, amount) \
                               WHERE r.budget = $1 AND r.state = 'held' AND r.expires_at > $2 \
                               GROUP BY x.dim HAVING sum(x.amount) > 0 ORDER BY x.dim), \
                        ARRAY(SELECT sum(x.amount)::bigint FROM {schema}.reservations r, \
                                     unnest(r.dims, r.amounts) AS x(dim, amount) \
                               WHERE r.budget = $1 AND r.state = 'held' AND r.expires_at > $2 \
                               GROUP BY x.dim HAVING sum(x.amount) > 0 ORDER BY x.dim) \
                 FROM (SELECT $1::text AS budget) b \
                 LEFT JOIN {schema}.policies p ON p.budget = b.budget \
                 LEFT JOIN {schema}.windows w ON w.budget = b.budget"
            ),
            reset: format!("SELECT {schema}.reset_usage($1)"),
            reserve: format!(
                "SELECT {REPLY} FROM {schema}.reserve\
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            commit: format!(
                "SELECT {REPLY} FROM {schema}.commit\
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            release: format!("SELECT {REPLY} FROM {schema}.release($1, $2, $3)"),
            reserve_all: format!(
                "SELECT {REPLY} FROM {schema}.reserve_all\
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            commit_all: format!(
                "SELECT {REPLY} FROM {schema}.commit_all\
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            release_all: format!("SELECT {REPLY} FROM {schema}.release_all($1, $2, $3)"),
            report_all: format!(
                "SELECT {REPLY} FROM {schema}.report_usage_all\
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            reservation: format!(
                "SELECT {RESERVATION} FROM {schema}.reservations \
                 WHERE budget = $1 AND forget_at > $2 AND id = $3"
            ),
            reservations: format!(
                "SELECT {RESERVATION} FROM {schema}.reservations \
                 WHERE budget = $1 AND forget_at > $2 ORDER BY id"
            ),
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
        let spec: Option<String> = row.try_get(6).map_err(e)?;
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
    let pending: Vec<i64> = array(op, row, 5)?;
    let first = |values: &[i64]| values.first().copied().unwrap_or_default().to_string();
    let detail = (
        dims.first().cloned().unwrap_or_default(),
        first(&usage),
        first(&limits),
    );
    let breaches = if status == "overflow" {
        Vec::new()
    } else {
        breaches(op, budget, dims, usage, limits, crossed, pending)?
    };
    Ok(Report::Reply(ReportReply {
        status,
        breaches,
        detail,
    }))
}

/// The breaches of a reply, one per entry of the arrays (which must have the same lengths).
pub(crate) fn breaches(
    op: &str,
    budget: &str,
    dims: Vec<String>,
    usage: Vec<i64>,
    limits: Vec<i64>,
    crossed: Vec<bool>,
    pending: Vec<i64>,
) -> Result<Vec<Breach>> {
    let n = dims.len();
    if usage.len() != n || limits.len() != n || crossed.len() != n || pending.len() != n {
        return Err(Error::corruption(format!(
            "{op}: breach arrays of budget {} have different lengths",
            show(budget)
        )));
    }
    dims.into_iter()
        .zip(usage)
        .zip(limits)
        .zip(crossed)
        .zip(pending)
        .map(|((((dimension, usage), limit), crossed), pending)| {
            Ok(Breach {
                dimension,
                usage: from_i64(op, "usage", usage)?,
                limit: from_i64(op, "limit", limit)?,
                crossed,
                pending: from_i64(op, "pending", pending)?,
            })
        })
        .collect()
}

/// One row a reservation function answered: the step, its budget and its reply.
#[derive(Debug)]
pub(crate) struct Step {
    /// `reserve`, `release`, `check`, `commit` or `window` (the reply's `detail.0` is then the
    /// spec of a window whose bounds at now are needed).
    pub(crate) step: String,
    /// The budget it is about.
    pub(crate) budget: String,
    /// Its answer.
    pub(crate) reply: ReservationReply,
}

/// Decodes every row of a reservation function.
pub(crate) fn decode_steps(op: &str, rows: &[PgRow]) -> Result<Vec<Step>> {
    rows.iter().map(|row| decode_step(op, row)).collect()
}

fn decode_step(op: &str, row: &PgRow) -> Result<Step> {
    let e = |err| error::map(op, err);
    let step: String = row.try_get(0).map_err(e)?;
    let budget: String = row.try_get(1).map_err(e)?;
    let status: String = row.try_get(2).map_err(e)?;
    let breaches = breaches(
        op,
        &budget,
        array(op, row, 3)?,
        array(op, row, 4)?,
        array(op, row, 5)?,
        array(op, row, 6)?,
        array(op, row, 7)?,
    )?;
    let expires_at: Option<i64> = row.try_get(8).map_err(e)?;
    let text = |i: usize| -> Result<String> {
        row.try_get::<Option<String>, _>(i)
            .map(Option::unwrap_or_default)
            .map_err(e)
    };
    let detail = (text(9)?, text(10)?, text(11)?);
    let expires_at = expires_at
        .map(|v| from_i64(op, "expiry", v))
        .transpose()?
        .unwrap_or_default();
    Ok(Step {
        step,
        budget,
        reply: ReservationReply {
            status,
            breaches,
            expires_at,
            detail,
        },
    })
}

/// Dimension → amount from two arrays of the same length.
fn amounts(op: &str, dims: Vec<String>, values: Vec<i64>) -> Result<BTreeMap<String, u64>> {
    if dims.len() != values.len() {
        return Err(Error::corruption(format!(
            "{op}: amount arrays have different lengths"
        )));
    }
    dims.into_iter()
        .zip(values)
        .map(|(d, v)| Ok((d, from_i64(op, "amount", v)?)))
        .collect()
}

/// Decodes a reservation row into the canonical `Reservation`.
pub(crate) fn decode_reservation(op: &str, row: &PgRow) -> Result<Reservation> {
    let e = |err| error::map(op, err);
    let id: String = row.try_get(0).map_err(e)?;
    let dimensions = amounts(op, array(op, row, 1)?, array(op, row, 2)?)?;
    let number = |i: usize, what: &str| -> Result<u64> {
        let v: i64 = row.try_get(i).map_err(e)?;
        from_i64(op, what, v)
    };
    let ttl_ms = number(3, "ttl")?;
    let expires_at = number(4, "expiry")?;
    let remember_ms = number(5, "remember")?;
    let state: String = row.try_get(6).map_err(e)?;
    let at = || -> Result<u64> {
        let v: Option<i64> = row.try_get(7).map_err(e)?;
        let v = v.ok_or_else(|| {
            Error::corruption(format!(
                "{op}: reservation {} has no resolution time",
                show(&id)
            ))
        })?;
        from_i64(op, "resolution time", v)
    };
    let breaches = || {
        breaches(
            op,
            &id,
            array(op, row, 11)?,
            array(op, row, 12)?,
            array(op, row, 13)?,
            array(op, row, 14)?,
            array(op, row, 15)?,
        )
    };
    let state = match state.as_str() {
        "held" => ReservationState::Held,
        "released" => ReservationState::Released { at: at()? },
        "refused" => ReservationState::Refused {
            at: at()?,
            breaches: breaches()?,
        },
        "committed" => {
            let outcome: Option<String> = row.try_get(10).map_err(e)?;
            let outcome = match outcome.as_deref() {
                Some("ok") => UsageOutcome::Ok,
                Some("soft") => UsageOutcome::SoftBreach(breaches()?),
                _ => {
                    return Err(Error::corruption(format!(
                        "{op}: reservation {} has an unknown outcome",
                        show(&id)
                    )))
                }
            };
            ReservationState::Committed {
                at: at()?,
                actual: amounts(op, array(op, row, 8)?, array(op, row, 9)?)?,
                outcome,
            }
        }
        other => {
            return Err(Error::corruption(format!(
                "{op}: reservation {} has unknown state {}",
                show(&id),
                show(other)
            )))
        }
    };
    Ok(Reservation {
        id,
        dimensions,
        ttl_ms,
        expires_at,
        remember_ms,
        state,
    })
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

/// What `usage` reads in one statement: the counters, the stored window, the policy's window and
/// what live reservations hold.
#[derive(Debug)]
pub(crate) struct UsageRow {
    pub(crate) counters: BTreeMap<String, u64>,
    pub(crate) pending: BTreeMap<String, u64>,
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
    let pending = amounts(op, array(op, row, 6)?, array(op, row, 7)?)?;
    Ok(UsageRow {
        counters,
        pending,
        stored,
        window,
    })
}
