//! Dumps (SEMANTICS §4.5): the statements that read a namespace page by page in canonical order
//! and write a batch of a dump into it, and their encoding.
//!
//! Every page is one statement: a keyset range scan on an index after the page's token (the key
//! of the last item of the previous page), at most `PAGE_ITEMS` items. Tokens: a budget
//! (policies, counters); the JSON `[budget, id]` (reservations) or `[budget, key]` (dedup);
//! the JSON `[name, stored_at, id]` (records). Names are never empty, so `''` (and `0` for the
//! numbers) starts a section.
//!
//! A batch is one statement: one multi-row insert per table (`unnest` of one array per column),
//! all in data-modifying CTEs, so the batch is one round trip and one transaction whatever its
//! size. Only when its record values add up to more than `RECORD_CHUNK_BYTES` do the rest of its
//! records follow in more statements of the same transaction (bounded: a batch holds at most
//! `LOAD_ITEMS` values of at most 1 MiB).

use std::collections::BTreeMap;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::Row;
use stowage_core::dump::{
    CountersItem, DedupItem, DumpItem, DumpPage, PolicyItem, RecordItem, ReservationItem,
    PAGE_ITEMS,
};
use stowage_core::raw::validate::{from_i64, to_i64};
use stowage_core::raw::{commit_fingerprint, reserve_fingerprint, show};
use stowage_core::{
    Breach, DimensionLimit, Error, ReservationState, ReserveRequest, Result, UsageOutcome, Window,
};

use crate::backend::Bind;
use crate::budget::{self, array, RESERVATION};
use crate::error;

/// Record values one statement of a load carries at most (a batch of bigger values is split
/// into several statements of one transaction, each well under PostgreSQL's 1 GB per value).
const RECORD_CHUNK_BYTES: usize = 64 << 20;

/// The statements of dumps for one schema.
#[derive(Debug)]
pub(crate) struct DumpSql {
    pub(crate) policies: String,
    pub(crate) counters: String,
    pub(crate) reservations: String,
    pub(crate) dedup: String,
    pub(crate) records: String,
    pub(crate) load: String,
    pub(crate) load_records: String,
    pub(crate) is_empty: String,
}

/// The records insert of a load: rows in the order of the arrays, so the identity column (store
/// order) follows the dump's order.
fn insert_records(schema: &str, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        "INSERT INTO {schema}.records (name, stored_at, value, idempotency_key) \
         SELECT u.name, u.stored_at, u.value, u.key \
           FROM unnest({}::text[], {}::bigint[], {}::text[], {}::text[]) WITH ORDINALITY \
                AS u(name, stored_at, value, key, ord) \
          ORDER BY u.ord",
        p(0),
        p(1),
        p(2),
        p(3)
    )
}

impl DumpSql {
    pub(crate) fn new(schema: &str) -> Self {
        let limit = PAGE_ITEMS;
        DumpSql {
            // policies_pkey after $1; each policy's limits by limits_pkey.
            policies: format!(
                "SELECT p.budget, p.window_spec, l.dims, l.softs, l.hards \
                   FROM {schema}.policies p \
                   LEFT JOIN LATERAL ( \
                        SELECT array_agg(x.dimension ORDER BY x.dimension) AS dims, \
                               array_agg(x.soft ORDER BY x.dimension) AS softs, \
                               array_agg(x.hard ORDER BY x.dimension) AS hards \
                          FROM {schema}.limits x WHERE x.budget = p.budget) l ON true \
                  WHERE p.budget > $1 ORDER BY p.budget LIMIT {limit}"
            ),
            // The next budgets with a stored window (windows_pkey) or counters (counters_pkey),
            // each with its window and its counters (each looked up by its primary key: the
            // LIMIT keeps the planner from joining the whole windows table by hash).
            counters: format!(
                "WITH b AS ( \
                    SELECT x.budget FROM ( \
                        (SELECT w.budget FROM {schema}.windows w WHERE w.budget > $1 \
                          ORDER BY w.budget LIMIT {limit}) \
                        UNION \
                        (SELECT DISTINCT c.budget FROM {schema}.counters c WHERE c.budget > $1 \
                          ORDER BY c.budget LIMIT {limit})) x \
                     ORDER BY x.budget LIMIT {limit}) \
                 SELECT b.budget, w.spec, w.start_ms, w.end_ms, c.dims, c.vals \
                   FROM b \
                   LEFT JOIN LATERAL ( \
                        SELECT x.spec, x.start_ms, x.end_ms FROM {schema}.windows x \
                         WHERE x.budget = b.budget LIMIT 1) w ON true \
                   LEFT JOIN LATERAL ( \
                        SELECT array_agg(x.dimension ORDER BY x.dimension) AS dims, \
                               array_agg(x.value ORDER BY x.dimension) AS vals \
                          FROM {schema}.counters x WHERE x.budget = b.budget) c ON true \
                  ORDER BY b.budget"
            ),
            // reservations_pkey after ($1, $2); forgotten ones ($3: now) are left out, as
            // `reservation` leaves them out. Columns: decode_reservation's, then the budget.
            reservations: format!(
                "SELECT {RESERVATION}, budget FROM {schema}.reservations \
                  WHERE (budget, id) > ($1, $2) AND forget_at > $3 \
                  ORDER BY budget, id LIMIT {limit}"
            ),
            // dedup_pkey after ($1, $2); expired records ($3: now) are left out.
            dedup: format!(
                "SELECT budget, dedup_key, fingerprint, expires_at, status, \
                        b_dims, b_usage, b_limits, b_crossed, b_pending \
                   FROM {schema}.dedup \
                  WHERE (budget, dedup_key) > ($1, $2) AND expires_at > $3 \
                  ORDER BY budget, dedup_key LIMIT {limit}"
            ),
            // records_in_order (migration 7) after ($1, $2, $3).
            records: format!(
                "SELECT name, stored_at, idempotency_key, value, id FROM {schema}.records \
                  WHERE (name, stored_at, id) > ($1, $2, $3) \
                  ORDER BY name, stored_at, id LIMIT {limit}"
            ),
            load: format!(
                "WITH \
                 p AS (INSERT INTO {schema}.policies (budget, window_spec) \
                       SELECT * FROM unnest($1::text[], $2::text[])), \
                 l AS (INSERT INTO {schema}.limits (budget, dimension, soft, hard) \
                       SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[])), \
                 c AS (INSERT INTO {schema}.counters (budget, dimension, value) \
                       SELECT * FROM unnest($7::text[], $8::text[], $9::bigint[])), \
                 w AS (INSERT INTO {schema}.windows (budget, spec, start_ms, end_ms) \
                       SELECT * FROM unnest($10::text[], $11::text[], $12::bigint[], $13::bigint[])), \
                 r AS (INSERT INTO {schema}.reservations \
                       (budget, id, fingerprint, dims, amounts, ttl_ms, expires_at, remember_ms, \
                        forget_at, state, resolved_at, actual_fp, actual_dims, actual_amounts, \
                        outcome, b_dims, b_usage, b_limits, b_crossed, b_pending) \
                       SELECT u.budget, u.id, u.fp, \
                              ($31::text[])[u.d0 + 1 : u.d0 + u.dn], \
                              ($32::bigint[])[u.d0 + 1 : u.d0 + u.dn], \
                              u.ttl, u.expires, u.remember, u.forget, u.state, u.resolved, u.afp, \
                              CASE WHEN u.afp IS NOT NULL \
                                   THEN ($31::text[])[u.a0 + 1 : u.a0 + u.an] END, \
                              CASE WHEN u.afp IS NOT NULL \
                                   THEN ($32::bigint[])[u.a0 + 1 : u.a0 + u.an] END, \
                              u.outcome, \
                              CASE WHEN u.bn IS NOT NULL \
                                   THEN ($33::text[])[u.b0 + 1 : u.b0 + u.bn] END, \
                              CASE WHEN u.bn IS NOT NULL \
                                   THEN ($34::bigint[])[u.b0 + 1 : u.b0 + u.bn] END, \
                              CASE WHEN u.bn IS NOT NULL \
                                   THEN ($35::bigint[])[u.b0 + 1 : u.b0 + u.bn] END, \
                              CASE WHEN u.bn IS NOT NULL \
                                   THEN ($36::boolean[])[u.b0 + 1 : u.b0 + u.bn] END, \
                              CASE WHEN u.bn IS NOT NULL \
                                   THEN ($37::bigint[])[u.b0 + 1 : u.b0 + u.bn] END \
                         FROM unnest($14::text[], $15::text[], $16::text[], $17::int[], $18::int[], \
                                     $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[], \
                                     $23::text[], $24::bigint[], $25::text[], $26::int[], \
                                     $27::int[], $28::text[], $29::int[], $30::int[]) \
                              AS u(budget, id, fp, d0, dn, ttl, expires, remember, forget, state, \
                                   resolved, afp, a0, an, outcome, b0, bn)), \
                 d AS (INSERT INTO {schema}.dedup \
                       (budget, dedup_key, fingerprint, written_at, expires_at, status, \
                        b_dims, b_usage, b_limits, b_crossed, b_pending) \
                       SELECT u.budget, u.key, u.fp, u.written, u.expires, u.status, \
                              ($33::text[])[u.b0 + 1 : u.b0 + u.bn], \
                              ($34::bigint[])[u.b0 + 1 : u.b0 + u.bn], \
                              ($35::bigint[])[u.b0 + 1 : u.b0 + u.bn], \
                              ($36::boolean[])[u.b0 + 1 : u.b0 + u.bn], \
                              ($37::bigint[])[u.b0 + 1 : u.b0 + u.bn] \
                         FROM unnest($38::text[], $39::text[], $40::text[], $41::bigint[], \
                                     $42::bigint[], $43::text[], $44::int[], $45::int[]) \
                              AS u(budget, key, fp, written, expires, status, b0, bn)) \
                 {}",
                insert_records(schema, 46)
            ),
            load_records: insert_records(schema, 1),
            is_empty: format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {schema}.records) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.policies) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.limits) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.counters) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.windows) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.reservations) \
                    AND NOT EXISTS (SELECT 1 FROM {schema}.dedup)"
            ),
        }
    }
}

/// Where a page starts: the decoded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum After {
    /// Policies, counters: the last budget.
    Budget(String),
    /// Reservations, dedup: the last budget and id or key.
    Pair(String, String),
    /// Records: the last name, `stored_at` and row id.
    Row(String, i64, i64),
}

fn bad_token(op: &str, token: &str) -> Error {
    Error::invalid_input(format!(
        "{op}: {} is not a page token of the postgres engine",
        show(token)
    ))
}

impl After {
    /// The start of a section of `shape` (names are never empty).
    pub(crate) fn parse(op: &str, shape: Shape, token: Option<&str>) -> Result<After> {
        let Some(token) = token else {
            return Ok(match shape {
                Shape::Budget => After::Budget(String::new()),
                Shape::Pair => After::Pair(String::new(), String::new()),
                Shape::Row => After::Row(String::new(), 0, 0),
            });
        };
        let bad = || bad_token(op, token);
        Ok(match shape {
            Shape::Budget => After::Budget(token.to_owned()),
            Shape::Pair => {
                let (a, b): (String, String) = serde_json::from_str(token).map_err(|_| bad())?;
                After::Pair(a, b)
            }
            Shape::Row => {
                let (a, b, c): (String, i64, i64) =
                    serde_json::from_str(token).map_err(|_| bad())?;
                After::Row(a, b, c)
            }
        })
    }

    /// The token naming this place.
    fn token(&self) -> String {
        match self {
            After::Budget(budget) => budget.clone(),
            After::Pair(a, b) => serde_json::json!([a, b]).to_string(),
            After::Row(a, b, c) => serde_json::json!([a, b, c]).to_string(),
        }
    }
}

/// The shape of a section's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Budget,
    Pair,
    Row,
}

/// The page of `items` read with a limit of `PAGE_ITEMS`, `last` the key of the last row read.
pub(crate) fn page(items: Vec<DumpItem>, last: Option<After>) -> DumpPage {
    let next = if items.len() >= PAGE_ITEMS {
        last.map(|after| after.token())
    } else {
        None
    };
    DumpPage { items, next }
}

fn column<'r, T>(op: &str, row: &'r PgRow, i: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(|e| error::map(op, e))
}

fn amount(op: &str, what: &str, value: Option<i64>) -> Result<Option<u64>> {
    value.map(|v| from_i64(op, what, v)).transpose()
}

/// A policies row: the item, and the key of the page's next start.
pub(crate) fn decode_policy(op: &str, row: &PgRow) -> Result<(DumpItem, After)> {
    let budget: String = column(op, row, 0)?;
    let spec: Option<String> = column(op, row, 1)?;
    let dims: Vec<String> = array(op, row, 2)?;
    let softs: Vec<Option<i64>> = array(op, row, 3)?;
    let hards: Vec<Option<i64>> = array(op, row, 4)?;
    if softs.len() != dims.len() || hards.len() != dims.len() {
        return Err(Error::corruption(format!(
            "{op}: limit arrays of budget {} have different lengths",
            show(&budget)
        )));
    }
    let mut limits = BTreeMap::new();
    for ((dimension, soft), hard) in dims.into_iter().zip(softs).zip(hards) {
        let limit = DimensionLimit {
            soft: amount(op, "soft limit", soft)?,
            hard: amount(op, "hard limit", hard)?,
        };
        limits.insert(dimension, limit);
    }
    let window = spec.map(|s| Window::from_spec(op, &s)).transpose()?;
    let item = DumpItem::Policy(PolicyItem {
        budget: budget.clone(),
        limits,
        window,
    });
    Ok((item, After::Budget(budget)))
}

/// A counters row: a budget's stored window (verbatim) and counters.
pub(crate) fn decode_counters(op: &str, row: &PgRow) -> Result<(DumpItem, After)> {
    let budget: String = column(op, row, 0)?;
    let spec: Option<String> = column(op, row, 1)?;
    let start: Option<i64> = column(op, row, 2)?;
    let end: Option<i64> = column(op, row, 3)?;
    let window = budget::stored_window(op, spec, start, end)?;
    let values = budget::counters(op, array(op, row, 4)?, array(op, row, 5)?)?;
    let item = DumpItem::Counters(CountersItem {
        budget: budget.clone(),
        window,
        values,
    });
    Ok((item, After::Budget(budget)))
}

/// A reservations row: `decode_reservation`'s columns, then the budget.
pub(crate) fn decode_reservation(op: &str, row: &PgRow) -> Result<(DumpItem, After)> {
    let reservation = budget::decode_reservation(op, row)?;
    let budget: String = column(op, row, 16)?;
    let after = After::Pair(budget.clone(), reservation.id.clone());
    Ok((
        DumpItem::Reservation(ReservationItem::new(budget, reservation)),
        after,
    ))
}

/// A dedup row: fingerprint, recorded outcome and expiry.
pub(crate) fn decode_dedup(op: &str, row: &PgRow) -> Result<(DumpItem, After)> {
    let budget: String = column(op, row, 0)?;
    let key: String = column(op, row, 1)?;
    let fingerprint: String = column(op, row, 2)?;
    let expires_at: i64 = column(op, row, 3)?;
    let status: String = column(op, row, 4)?;
    let breaches = || {
        budget::breaches(
            op,
            &budget,
            array(op, row, 5)?,
            array(op, row, 6)?,
            array(op, row, 7)?,
            array(op, row, 8)?,
            array(op, row, 9)?,
        )
    };
    let outcome = match status.as_str() {
        "ok" => UsageOutcome::Ok,
        "soft" => UsageOutcome::SoftBreach(breaches()?),
        "hard" => UsageOutcome::HardBreach(breaches()?),
        other => {
            return Err(Error::corruption(format!(
                "{op}: dedup record {} of budget {} has unknown status {}",
                show(&key),
                show(&budget),
                show(other)
            )))
        }
    };
    let after = After::Pair(budget.clone(), key.clone());
    let item = DumpItem::Dedup(DedupItem {
        budget,
        key,
        fingerprint,
        outcome,
        expires_at: from_i64(op, "dedup expiry", expires_at)?,
    });
    Ok((item, after))
}

/// A records row: name, `stored_at`, idempotency key, the stored text, and the row id.
pub(crate) fn decode_record(op: &str, row: &PgRow) -> Result<(DumpItem, After)> {
    let name: String = column(op, row, 0)?;
    let stored_at: i64 = column(op, row, 1)?;
    let idempotency_key: Option<String> = column(op, row, 2)?;
    let value: String = column(op, row, 3)?;
    let id: i64 = column(op, row, 4)?;
    let after = After::Row(name.clone(), stored_at, id);
    let item = DumpItem::Record(RecordItem {
        name,
        stored_at: from_i64(op, "stored_at", stored_at)?,
        idempotency_key,
        value,
    });
    Ok((item, after))
}

/// The arrays of one records insert.
#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    names: Vec<String>,
    stored_at: Vec<i64>,
    values: Vec<String>,
    keys: Vec<Option<String>>,
    bytes: usize,
}

impl Records {
    fn bind(self, args: &mut Bind) {
        args.push(self.names);
        args.push(self.stored_at);
        args.push(self.values);
        args.push(self.keys);
    }
}

/// The statements of one load batch: the arguments of `DumpSql::load` (every table, and the
/// first records), then those of `DumpSql::load_records` for the records beyond the first chunk.
pub(crate) struct Load {
    pub(crate) first: PgArguments,
    pub(crate) more: Vec<PgArguments>,
}

/// Flat arrays that the rows of a table slice (`offset`, `count`).
#[derive(Default)]
struct Flat {
    dims: Vec<String>,
    amounts: Vec<i64>,
}

#[derive(Default)]
struct FlatBreaches {
    dims: Vec<String>,
    usage: Vec<i64>,
    limits: Vec<i64>,
    crossed: Vec<bool>,
    pending: Vec<i64>,
}

fn count(op: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::internal(format!("{op}: more entries than a batch holds")))
}

impl Flat {
    /// Appends `amounts`; their (offset, count).
    fn push(&mut self, op: &str, amounts: &BTreeMap<String, u64>) -> Result<(i32, i32)> {
        let offset = count(op, self.dims.len())?;
        for (dimension, value) in amounts {
            self.dims.push(dimension.clone());
            self.amounts.push(to_i64(op, "amount", *value)?);
        }
        Ok((offset, count(op, amounts.len())?))
    }
}

impl FlatBreaches {
    /// Appends `breaches`; their (offset, count).
    fn push(&mut self, op: &str, breaches: &[Breach]) -> Result<(i32, i32)> {
        let offset = count(op, self.dims.len())?;
        for b in breaches {
            self.dims.push(b.dimension.clone());
            self.usage.push(to_i64(op, "breach usage", b.usage)?);
            self.limits.push(to_i64(op, "breach limit", b.limit)?);
            self.crossed.push(b.crossed);
            self.pending.push(to_i64(op, "breach pending", b.pending)?);
        }
        Ok((offset, count(op, breaches.len())?))
    }
}

/// The status word and breaches of a recorded outcome.
fn outcome_parts(outcome: &UsageOutcome) -> (&'static str, &[Breach]) {
    match outcome {
        UsageOutcome::Ok => ("ok", &[]),
        UsageOutcome::SoftBreach(b) => ("soft", b),
        UsageOutcome::HardBreach(b) => ("hard", b),
    }
}

/// Encodes a batch (checked by core) into the parameters of its statements. `now` is the
/// import's clock reading (a dedup record's `written_at`, see below).
pub(crate) fn encode(op: &'static str, items: &[DumpItem], now: u64) -> Result<Load> {
    /// Columns of a table, one vector each.
    type Texts = Vec<String>;
    type Limits = (Texts, Texts, Vec<Option<i64>>, Vec<Option<i64>>);
    let mut policies: (Texts, Vec<Option<String>>) = Default::default();
    let mut limits: Limits = Default::default();
    let mut counters: (Texts, Texts, Vec<i64>) = Default::default();
    let mut windows: (Texts, Texts, Vec<i64>, Vec<i64>) = Default::default();
    let mut amounts = Flat::default();
    let mut breaches = FlatBreaches::default();
    #[derive(Default)]
    struct Res {
        budget: Vec<String>,
        id: Vec<String>,
        fp: Vec<String>,
        d0: Vec<i32>,
        dn: Vec<i32>,
        ttl: Vec<i64>,
        expires: Vec<i64>,
        remember: Vec<i64>,
        forget: Vec<i64>,
        state: Vec<&'static str>,
        resolved: Vec<Option<i64>>,
        afp: Vec<Option<String>>,
        a0: Vec<i32>,
        an: Vec<i32>,
        outcome: Vec<Option<&'static str>>,
        b0: Vec<i32>,
        bn: Vec<Option<i32>>,
    }
    let mut res = Res::default();
    #[derive(Default)]
    struct Dedup {
        budget: Vec<String>,
        key: Vec<String>,
        fp: Vec<String>,
        written: Vec<i64>,
        expires: Vec<i64>,
        status: Vec<&'static str>,
        b0: Vec<i32>,
        bn: Vec<i32>,
    }
    let mut dedup = Dedup::default();
    let mut chunks = vec![Records::default()];
    for item in items {
        match item {
            DumpItem::Policy(p) => {
                policies.0.push(p.budget.clone());
                policies.1.push(p.window.as_ref().map(Window::spec));
                for (dimension, limit) in &p.limits {
                    limits.0.push(p.budget.clone());
                    limits.1.push(dimension.clone());
                    limits.2.push(
                        limit
                            .soft
                            .map(|v| to_i64(op, "soft limit", v))
                            .transpose()?,
                    );
                    limits.3.push(
                        limit
                            .hard
                            .map(|v| to_i64(op, "hard limit", v))
                            .transpose()?,
                    );
                }
            }
            DumpItem::Counters(c) => {
                for (dimension, value) in &c.values {
                    counters.0.push(c.budget.clone());
                    counters.1.push(dimension.clone());
                    counters.2.push(to_i64(op, "counter", *value)?);
                }
                if let Some(window) = &c.window {
                    windows.0.push(c.budget.clone());
                    windows.1.push(window.spec.clone());
                    windows
                        .2
                        .push(to_i64(op, "window start", window.bounds.start_ms)?);
                    windows
                        .3
                        .push(to_i64(op, "window end", window.bounds.end_ms)?);
                }
            }
            DumpItem::Reservation(r) => {
                let reservation = r.reservation();
                // The columns the reservation functions read, as they write them: the request's
                // fingerprint (a repeated reserve replays), forget_at, and per state the
                // resolution time, the commit's actual amounts, fingerprint and outcome, the
                // breaches of a refusal or a soft commit (NULL where the functions leave them).
                let request = ReserveRequest {
                    id: r.id.clone(),
                    dimensions: r.dimensions.clone(),
                    ttl_ms: r.ttl_ms,
                };
                let (d0, dn) = amounts.push(op, &r.dimensions)?;
                res.budget.push(r.budget.clone());
                res.id.push(r.id.clone());
                res.fp.push(reserve_fingerprint(&request));
                res.d0.push(d0);
                res.dn.push(dn);
                res.ttl.push(to_i64(op, "ttl", r.ttl_ms)?);
                res.expires.push(to_i64(op, "expiry", r.expires_at)?);
                res.remember.push(to_i64(op, "remember_ms", r.remember_ms)?);
                res.forget
                    .push(to_i64(op, "forget_at", reservation.forget_at())?);
                let (state, at, actual, outcome, recorded) = match &r.state {
                    ReservationState::Held => ("held", None, None, None, None),
                    ReservationState::Released { at } => ("released", Some(*at), None, None, None),
                    ReservationState::Refused { at, breaches } => {
                        ("refused", Some(*at), None, None, Some(breaches.as_slice()))
                    }
                    ReservationState::Committed {
                        at,
                        actual,
                        outcome,
                    } => {
                        let (status, recorded) = outcome_parts(outcome);
                        if status == "hard" {
                            return Err(Error::invalid_input(format!(
                                "{op}: reservation {} of budget {} is committed with a hard \
                                 breach, which no commit answers",
                                show(&r.id),
                                show(&r.budget)
                            )));
                        }
                        (
                            "committed",
                            Some(*at),
                            Some(actual),
                            Some(status),
                            Some(recorded),
                        )
                    }
                };
                res.state.push(state);
                res.resolved
                    .push(at.map(|at| to_i64(op, "resolved at", at)).transpose()?);
                let (a0, an) = match actual {
                    Some(actual) => amounts.push(op, actual)?,
                    None => (0, 0),
                };
                res.afp.push(actual.map(commit_fingerprint));
                res.a0.push(a0);
                res.an.push(an);
                res.outcome.push(outcome);
                let (b0, bn) = match recorded {
                    Some(recorded) => {
                        let (b0, bn) = breaches.push(op, recorded)?;
                        (b0, Some(bn))
                    }
                    None => (0, None),
                };
                res.b0.push(b0);
                res.bn.push(bn);
            }
            DumpItem::Dedup(d) => {
                let (status, recorded) = outcome_parts(&d.outcome);
                let (b0, bn) = breaches.push(op, recorded)?;
                dedup.budget.push(d.budget.clone());
                dedup.key.push(d.key.clone());
                dedup.fp.push(d.fingerprint.clone());
                // written_at is not in a dump (only the expiry its writer gave it). Since version
                // 2 nothing reads it: liveness, replays and the collection of expired records go
                // by expires_at, and `cleanup` removes records by records.stored_at only. It
                // stays the time the row was written into this store — for an imported record
                // the import's clock reading — capped at expires_at, so that written_at <=
                // expires_at holds as for every record a report writes (ttl >= 0).
                dedup
                    .written
                    .push(to_i64(op, "written_at", now.min(d.expires_at))?);
                dedup
                    .expires
                    .push(to_i64(op, "dedup expiry", d.expires_at)?);
                dedup.status.push(status);
                dedup.b0.push(b0);
                dedup.bn.push(bn);
            }
            DumpItem::Record(r) => {
                let chunk = chunks.last_mut().expect("one chunk at least");
                let chunk = if !chunk.names.is_empty()
                    && chunk.bytes + r.value.len() > RECORD_CHUNK_BYTES
                {
                    chunks.push(Records::default());
                    chunks.last_mut().expect("just pushed")
                } else {
                    chunk
                };
                chunk.names.push(r.name.clone());
                chunk.stored_at.push(to_i64(op, "stored_at", r.stored_at)?);
                chunk.values.push(r.value.clone());
                chunk.keys.push(r.idempotency_key.clone());
                chunk.bytes += r.value.len();
            }
        }
    }
    let mut chunks = chunks.into_iter();
    let mut a = Bind::new(op);
    a.push(policies.0);
    a.push(policies.1);
    a.push(limits.0);
    a.push(limits.1);
    a.push(limits.2);
    a.push(limits.3);
    a.push(counters.0);
    a.push(counters.1);
    a.push(counters.2);
    a.push(windows.0);
    a.push(windows.1);
    a.push(windows.2);
    a.push(windows.3);
    // $14 .. $30: the reservations.
    a.push(res.budget);
    a.push(res.id);
    a.push(res.fp);
    a.push(res.d0);
    a.push(res.dn);
    a.push(res.ttl);
    a.push(res.expires);
    a.push(res.remember);
    a.push(res.forget);
    a.push(owned(res.state));
    a.push(res.resolved);
    a.push(res.afp);
    a.push(res.a0);
    a.push(res.an);
    a.push(
        res.outcome
            .into_iter()
            .map(|o| o.map(str::to_owned))
            .collect::<Vec<_>>(),
    );
    a.push(res.b0);
    a.push(res.bn);
    // $31 .. $37: the flat amounts and breaches.
    a.push(amounts.dims);
    a.push(amounts.amounts);
    a.push(breaches.dims);
    a.push(breaches.usage);
    a.push(breaches.limits);
    a.push(breaches.crossed);
    a.push(breaches.pending);
    // $38 .. $45: the dedup records.
    a.push(dedup.budget);
    a.push(dedup.key);
    a.push(dedup.fp);
    a.push(dedup.written);
    a.push(dedup.expires);
    a.push(owned(dedup.status));
    a.push(dedup.b0);
    a.push(dedup.bn);
    // $46 .. $49: the first records.
    chunks.next().unwrap_or_default().bind(&mut a);
    let first = a.done()?;
    let more = chunks
        .map(|chunk| {
            let mut a = Bind::new(op);
            chunk.bind(&mut a);
            a.done()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Load { first, more })
}

fn owned(words: Vec<&'static str>) -> Vec<String> {
    words.into_iter().map(str::to_owned).collect()
}
