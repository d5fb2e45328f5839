//! Reservations (SEMANTICS §4.2) and several budgets (§4.3): the §4.2 calls as functions of one
//! write transaction ([`Tx`]), which is also the [`Steps`] the core's §4.3 sequence runs on, so a
//! multi-budget call is one transaction with exactly the reference model's answers and effects.
//!
//! A reservation is stored in the canonical form of [`Reservation`]: a row of
//! `stowage_reservations` and one row per dimension in `stowage_reservation_amounts`, which repeats
//! `held` and `expires_at` so that `pending` is one sum over a partial index of live holds.
//! Expired holds are never rewritten; forgotten ids (`forget_at <= now`) are skipped by every read
//! and removed a few at a time by `reserve`.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use stowage_core::raw::validate::{from_i64, to_i64};
use stowage_core::raw::{
    admit, check_commit, check_release, check_reserve, decode_outcome, encode_outcome, settle,
    show, CommitStep, Steps, WindowStep,
};
use stowage_core::{
    Breach, Error, Reservation, ReservationState, ReserveReceipt, ReserveRequest, Result,
    UsageReceipt,
};

use crate::{budget, error};

/// How many forgotten reservations one `reserve` removes on the side, so the tables stay bounded.
const FORGET_BATCH: i64 = 8;

/// `pending` of `budget` at `now`: dimension → sum held by its live reservations (held and
/// `now < expires_at`); dimensions with nothing held are absent (`raw::pending_of`).
pub(crate) fn pending(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    now: u64,
) -> Result<BTreeMap<String, u64>> {
    let now = to_i64(op, "clock", now)?;
    // Read from the covering index stowage_reservation_holds alone: only the live rows. Summed
    // here, as `raw::pending_of` sums: exact in u64 even where holds that a lagging clock sees
    // live again add up beyond i64 (SQLite's SUM would fail there).
    let mut statement = conn
        .prepare_cached(
            "SELECT dimension, amount FROM stowage_reservation_amounts INDEXED BY stowage_reservation_holds
             WHERE ns = ?1 AND budget = ?2 AND held = 1 AND expires_at > ?3 AND amount > 0",
        )
        .map_err(|e| error::map(op, e))?;
    let rows = statement
        .query_map(params![ns, budget, now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(|e| error::map(op, e))?;
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        let (dimension, amount) = row.map_err(|e| error::map(op, e))?;
        let amount = from_i64(op, "reserved amount", amount)?;
        let sum = pending.entry(dimension).or_insert(0);
        *sum = sum.saturating_add(amount);
    }
    Ok(pending)
}

/// The stored columns of a reservation row, before decoding.
pub(crate) type StoredRow = (
    String,
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str = "id, ttl_ms, expires_at, remember_ms, state, at, actual, outcome, breaches";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    read_row_at(r, 0)
}

/// The [`COLUMNS`] of a reservation row, selected from column `first` on.
pub(crate) fn read_row_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredRow> {
    Ok((
        r.get(first)?,
        r.get(first + 1)?,
        r.get(first + 2)?,
        r.get(first + 3)?,
        r.get(first + 4)?,
        r.get(first + 5)?,
        r.get(first + 6)?,
        r.get(first + 7)?,
        r.get(first + 8)?,
    ))
}

/// Decodes a stored row and its amounts into the canonical [`Reservation`].
pub(crate) fn decode(
    op: &str,
    budget: &str,
    row: StoredRow,
    dimensions: BTreeMap<String, u64>,
) -> Result<Reservation> {
    let (id, ttl_ms, expires_at, remember_ms, state, at, actual, outcome, breaches) = row;
    let corrupt = |what: &str| {
        Error::corruption(format!(
            "{op}: stored reservation {} of budget {} has {what}",
            show(&id),
            show(budget)
        ))
    };
    let at = at
        .map(|at| from_i64(op, "reservation resolution time", at))
        .transpose()?;
    let state = match (state.as_str(), at) {
        ("held", None) => ReservationState::Held,
        ("released", Some(at)) => ReservationState::Released { at },
        ("refused", Some(at)) => {
            let text = breaches.ok_or_else(|| corrupt("no breaches"))?;
            let breaches: Vec<Breach> = serde_json::from_str(&text)
                .map_err(|e| corrupt("breaches that cannot be decoded").with_source(e))?;
            ReservationState::Refused { at, breaches }
        }
        ("committed", Some(at)) => {
            let text = actual.ok_or_else(|| corrupt("no committed amounts"))?;
            let actual: BTreeMap<String, u64> = serde_json::from_str(&text)
                .map_err(|e| corrupt("committed amounts that cannot be decoded").with_source(e))?;
            let outcome = outcome.ok_or_else(|| corrupt("no commit outcome"))?;
            ReservationState::Committed {
                at,
                actual,
                outcome: decode_outcome(op, &outcome)?,
            }
        }
        _ => return Err(corrupt("an unknown state")),
    };
    Ok(Reservation {
        ttl_ms: from_i64(op, "reservation TTL", ttl_ms)?,
        expires_at: from_i64(op, "reservation expiry", expires_at)?,
        remember_ms: from_i64(op, "reservation memory", remember_ms)?,
        id,
        dimensions,
        state,
    })
}

/// The amounts of reservation `id` of `budget`.
fn amounts_of(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    id: &str,
) -> Result<BTreeMap<String, u64>> {
    let mut statement = conn
        .prepare_cached(
            "SELECT dimension, amount FROM stowage_reservation_amounts
             WHERE ns = ?1 AND budget = ?2 AND id = ?3",
        )
        .map_err(|e| error::map(op, e))?;
    let rows = statement
        .query_map(params![ns, budget, id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(|e| error::map(op, e))?;
    let mut amounts = BTreeMap::new();
    for row in rows {
        let (dimension, amount) = row.map_err(|e| error::map(op, e))?;
        amounts.insert(dimension, from_i64(op, "reserved amount", amount)?);
    }
    Ok(amounts)
}

/// The reservation `budget` remembers under `id` at `now` (a forgotten one is `None`).
fn known(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    id: &str,
    now: u64,
) -> Result<Option<Reservation>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM stowage_reservations WHERE ns = ?1 AND budget = ?2 AND id = ?3"
        ))
        .and_then(|mut s| s.query_row(params![ns, budget, id], read_row).optional())
        .map_err(|e| error::map(op, e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let amounts = amounts_of(conn, op, ns, budget, id)?;
    let reservation = decode(op, budget, row, amounts)?;
    Ok(Some(reservation).filter(|r| r.is_remembered(now)))
}

/// Every reservation `budget` remembers at `now`, by id.
fn remembered(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    now: u64,
) -> Result<Vec<Reservation>> {
    let at = to_i64(op, "clock", now)?;
    let rows: Vec<StoredRow> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM stowage_reservations
             WHERE ns = ?1 AND budget = ?2 AND forget_at > ?3 ORDER BY id"
        ))
        .and_then(|mut s| {
            s.query_map(params![ns, budget, at], read_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| error::map(op, e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let amounts = amounts_of(conn, op, ns, budget, &row.0)?;
        let reservation = decode(op, budget, row, amounts)?;
        if reservation.is_remembered(now) {
            out.push(reservation);
        }
    }
    Ok(out)
}

/// Writes `reservation` as `budget`'s under its id, replacing what was stored there (a forgotten
/// reservation with the same id, or the same reservation before it was resolved).
pub(crate) fn store(
    conn: &Connection,
    op: &str,
    ns: &str,
    budget: &str,
    reservation: &Reservation,
) -> Result<()> {
    let (state, at, actual, outcome, breaches) = match &reservation.state {
        ReservationState::Held => ("held", None, None, None, None),
        ReservationState::Refused { at, breaches } => (
            "refused",
            Some(*at),
            None,
            None,
            Some(json(op, serde_json::to_string(breaches))?),
        ),
        ReservationState::Committed {
            at,
            actual,
            outcome,
        } => (
            "committed",
            Some(*at),
            Some(json(op, serde_json::to_string(actual))?),
            Some(encode_outcome(outcome)),
            None,
        ),
        ReservationState::Released { at } => ("released", Some(*at), None, None, None),
    };
    let at = at
        .map(|at| to_i64(op, "reservation resolution time", at))
        .transpose()?;
    let id = reservation.id.as_str();
    let expires_at = to_i64(op, "reservation expiry", reservation.expires_at)?;
    conn.prepare_cached(
        "INSERT INTO stowage_reservations
             (ns, budget, id, ttl_ms, expires_at, remember_ms, state, at, actual, outcome,
              breaches, forget_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (ns, budget, id) DO UPDATE SET
             ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at,
             remember_ms = excluded.remember_ms, state = excluded.state, at = excluded.at,
             actual = excluded.actual, outcome = excluded.outcome,
             breaches = excluded.breaches, forget_at = excluded.forget_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            ns,
            budget,
            id,
            to_i64(op, "reservation TTL", reservation.ttl_ms).map_err(into_sql)?,
            expires_at,
            to_i64(op, "reservation memory", reservation.remember_ms).map_err(into_sql)?,
            state,
            at,
            actual,
            outcome,
            breaches,
            to_i64(op, "reservation forget time", reservation.forget_at()).map_err(into_sql)?,
        ])
    })
    .map_err(|e| error::map(op, e))?;
    conn.prepare_cached(
        "DELETE FROM stowage_reservation_amounts WHERE ns = ?1 AND budget = ?2 AND id = ?3",
    )
    .and_then(|mut s| s.execute(params![ns, budget, id]))
    .map_err(|e| error::map(op, e))?;
    let held = i64::from(matches!(reservation.state, ReservationState::Held));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO stowage_reservation_amounts
                 (ns, budget, id, dimension, amount, held, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(|e| error::map(op, e))?;
    for (dimension, amount) in &reservation.dimensions {
        let amount = to_i64(op, "reserved amount", *amount)?;
        insert
            .execute(params![ns, budget, id, dimension, amount, held, expires_at])
            .map_err(|e| error::map(op, e))?;
    }
    Ok(())
}

/// A value range error met while binding parameters; it cannot happen for values the checked
/// layer let through (they are at most `MAX_AMOUNT`), and surfaces as an SQL error if it does.
fn into_sql(error: Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// The JSON text of a part of a reservation (breaches, committed amounts); these always serialize.
fn json(op: &str, text: serde_json::Result<String>) -> Result<String> {
    text.map_err(|e| {
        Error::internal(format!("{op}: a reservation cannot be serialized")).with_source(e)
    })
}

/// Removes a few reservations of the namespace that are forgotten at `now`, amounts first.
fn forget_some(conn: &Connection, op: &str, ns: &str, now: u64) -> Result<()> {
    let at = to_i64(op, "clock", now)?;
    // Served by stowage_reservations_by_forget.
    let forgotten: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT budget, id FROM stowage_reservations
             WHERE ns = ?1 AND forget_at <= ?2 LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![ns, at, FORGET_BATCH], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| error::map(op, e))?;
    for (budget, id) in forgotten {
        for table in ["stowage_reservation_amounts", "stowage_reservations"] {
            conn.prepare_cached(&format!(
                "DELETE FROM {table} WHERE ns = ?1 AND budget = ?2 AND id = ?3"
            ))
            .and_then(|mut s| s.execute(params![ns, budget, id]))
            .map_err(|e| error::map(op, e))?;
        }
    }
    Ok(())
}

/// `reservation`: what `budget` remembers under `id` now, read in one snapshot.
pub(crate) fn reservation(
    conn: &mut Connection,
    ns: &str,
    budget: &str,
    id: &str,
    now: u64,
) -> Result<Option<Reservation>> {
    let op = "reservation";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| error::map(op, e))?;
    let found = known(&tx, op, ns, budget, id, now)?;
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(found)
}

/// `reservations`: every reservation `budget` remembers now, by id, read in one snapshot.
pub(crate) fn reservations(
    conn: &mut Connection,
    ns: &str,
    budget: &str,
    now: u64,
) -> Result<Vec<Reservation>> {
    let op = "reservations";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| error::map(op, e))?;
    let found = remembered(&tx, op, ns, budget, now)?;
    tx.commit().map_err(|e| error::map(op, e))?;
    Ok(found)
}

/// One write transaction at one clock reading: the §4.2 calls, and the [`Steps`] of §4.3.
///
/// Answers and storage failures are kept apart: a call's answer may be an error of the contract
/// (`NotFound`, `Conflict`, ...) after earlier steps of a §4.3 sequence changed things, which stay
/// changed as in the reference model; a failure of the store itself (an SQL error, undecodable
/// data) is remembered in `broken` and rolls the whole write back ([`Tx::finish`]).
pub(crate) struct Tx<'c> {
    conn: &'c Connection,
    ns: &'c str,
    now: u64,
    /// The handle's dedup TTL: how long a reservation it creates is remembered after it ended.
    remember_ms: u64,
    broken: Option<Error>,
}

impl<'c> Tx<'c> {
    /// The calls of a handle with dedup TTL `remember_ms` at `now`, on the writer's transaction.
    pub(crate) fn new(conn: &'c Connection, ns: &'c str, now: u64, remember_ms: u64) -> Self {
        Tx {
            conn,
            ns,
            now,
            remember_ms,
            broken: None,
        }
    }

    /// The write's result: `Err` (roll back) when the store failed, else `Ok(answer)` (keep
    /// what was done, whatever the answer).
    pub(crate) fn finish<T>(self, answer: Result<T>) -> Result<Result<T>> {
        match self.broken {
            Some(error) => Err(error),
            None => Ok(answer),
        }
    }

    /// Passes on the result of a storage step, remembering its failure.
    fn db<T>(&mut self, result: Result<T>) -> Result<T> {
        result.inspect_err(|error| {
            self.broken.get_or_insert_with(|| error.clone());
        })
    }

    fn known(&mut self, op: &str, budget: &str, id: &str) -> Result<Option<Reservation>> {
        let found = known(self.conn, op, self.ns, budget, id, self.now);
        self.db(found)
    }

    /// `reserve` (SEMANTICS §4.2), as the reference model's `Transaction::reserve`.
    pub(crate) fn reserve(
        &mut self,
        budget: &str,
        request: &ReserveRequest,
    ) -> Result<ReserveReceipt> {
        let op = "reserve";
        let (conn, ns, now) = (self.conn, self.ns, self.now);
        let known = self.known(op, budget, &request.id)?;
        if let Some(replay) = check_reserve(op, budget, known.as_ref(), request, now)? {
            return Ok(replay);
        }
        let policy = self.db(budget::policy(conn, op, ns, budget))?;
        let window = policy.as_ref().and_then(|p| p.window.as_ref());
        let stored = self.db(budget::stored_window(conn, op, ns, budget))?;
        let step = WindowStep::at(window, stored.as_ref(), now)?;
        let current = if step.keeps_counters() {
            self.db(budget::counters_of(
                conn,
                op,
                ns,
                budget,
                &request.dimensions,
            ))?
        } else {
            BTreeMap::new()
        };
        let pending = self.db(pending(conn, op, ns, budget, now))?;
        let breaches = admit(
            op,
            budget,
            &current,
            &pending,
            policy.as_ref(),
            &request.dimensions,
        )?;
        let mut reservation = Reservation::new(request, now, self.remember_ms);
        if !breaches.is_empty() {
            reservation.state = ReservationState::Refused { at: now, breaches };
        }
        let receipt = reservation.receipt(false);
        self.db(forget_some(conn, op, ns, now))?;
        self.db(store(conn, op, ns, budget, &reservation))?;
        Ok(receipt)
    }

    /// `commit`'s checks (`raw::check_commit`) on what is stored now.
    fn commit_step(
        &mut self,
        op: &str,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<(CommitStep, Option<Reservation>)> {
        let known = self.known(op, budget, id)?;
        let step = check_commit(op, budget, id, known.as_ref(), actual, self.now)?;
        Ok((step, known))
    }

    /// `commit` (SEMANTICS §4.2): frees the hold, applies `actual` to the window containing now
    /// (lazy rollover, as `report_usage`), checks soft limits and records the receipt.
    pub(crate) fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        let op = "commit";
        let (conn, ns, now) = (self.conn, self.ns, self.now);
        let (step, known) = self.commit_step(op, budget, id, actual)?;
        if let CommitStep::Replay(receipt) = step {
            return Ok(receipt);
        }
        let Some(mut reservation) = known else {
            return Err(Error::internal(format!(
                "{op}: reservation {} of budget {} passed the checks unknown",
                show(id),
                show(budget)
            )));
        };
        let policy = self.db(budget::policy(conn, op, ns, budget))?;
        let window = policy.as_ref().and_then(|p| p.window.as_ref());
        let stored = self.db(budget::stored_window(conn, op, ns, budget))?;
        let step = WindowStep::at(window, stored.as_ref(), now)?;
        let current = if step.keeps_counters() {
            self.db(budget::counters_of(conn, op, ns, budget, actual))?
        } else {
            BTreeMap::new()
        };
        let decision = settle(op, budget, &current, policy.as_ref(), actual)?;
        self.db(budget::apply(
            conn,
            op,
            ns,
            budget,
            window,
            step,
            &decision.new_counters,
        ))?;
        reservation.state = ReservationState::Committed {
            at: now,
            actual: actual.clone(),
            outcome: decision.outcome.clone(),
        };
        self.db(store(conn, op, ns, budget, &reservation))?;
        Ok(UsageReceipt {
            outcome: decision.outcome,
            replayed: false,
        })
    }

    /// `release` (SEMANTICS §4.2): frees a live hold; `false` when nothing is held.
    pub(crate) fn release(&mut self, budget: &str, id: &str) -> Result<bool> {
        let op = "release";
        let (conn, ns, now) = (self.conn, self.ns, self.now);
        let known = self.known(op, budget, id)?;
        let free = check_release(op, budget, id, known.as_ref(), now)?;
        if let (true, Some(mut reservation)) = (free, known) {
            reservation.state = ReservationState::Released { at: now };
            self.db(store(conn, op, ns, budget, &reservation))?;
        }
        Ok(free)
    }
}

impl Steps for Tx<'_> {
    async fn reserve(&mut self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        Tx::reserve(self, budget, request)
    }

    async fn check_commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<()> {
        self.commit_step("commit", budget, id, actual).map(|_| ())
    }

    async fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        Tx::commit(self, budget, id, actual)
    }

    async fn release(&mut self, budget: &str, id: &str) -> Result<bool> {
        Tx::release(self, budget, id)
    }
}
