//! Reservations (SEMANTICS §4.2) and several budgets (§4.3): one script call for each write,
//! one command for each read, and the decoding of what the scripts answer and the records hold.
//!
//! The scripts (`reserve.lua`, `commit.lua`, `release.lua`, `report_all.lua`, each preceded by
//! `lib.lua`) take one or more budgets: a single-budget call is the multi-budget sequence of
//! `stowage_core::multi` over one budget, which is exactly the §4.2 call. On a standalone server
//! the multi-budget calls run as one script over every budget's keys; a cluster composes them
//! call by call (`Access`'s default), since the budgets may live in different slots.
//!
//! A budget's reservations live in a hash (id → record, see `lib.lua` for the encoding); its
//! unresolved holds in a lexicographic sorted set of `<19-digit expiry><id>` (sorted set scores
//! are doubles, exact only to 2^53); the amounts they hold in a hash of decimal strings, swept of
//! expired holds on every write; the order ids are forgotten in another lexicographic sorted set.

use std::collections::BTreeMap;

use stowage_core::raw::{
    bounds_always_computable, commit_answer, refusal_answer, release_answer, reserve_answer, show,
    window_kept_changing, ReservationReply, ResolvedOptions, MAX_WINDOW_CALLS, REPORT_ALL_TTL_MS,
};
use stowage_core::{
    Error, MultiReceipt, MultiReserveReceipt, Reservation, ReservationState, ReserveReceipt,
    ReserveRequest, Result, UsageOutcome, UsageReceipt, Window,
};

use crate::budget::{breaches_of, detail, parse_decimal};
use crate::connection::Connection;
use crate::keys::budget_keys;
use crate::scripts::{ReservationScript, Scripts};

/// The handle's parts a reservation call needs.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) scripts: &'a Scripts,
    pub(crate) options: &'a ResolvedOptions,
}

/// One budget's answer, decoded, with the budget it belongs to.
struct Answer<'a> {
    budget: &'a str,
    reply: ReservationReply,
}

impl Answer<'_> {
    /// The reply, or the error of a window whose bounds could not be computed at `now`.
    fn reply(self, op: &str, now: u64) -> Result<ReservationReply> {
        if self.reply.status != "window-error" {
            return Ok(self.reply);
        }
        let spec = &self.reply.detail.0;
        match Window::from_spec(op, spec)?.bounds_at(now) {
            Err(error) => Err(error),
            Ok(_) => Err(Error::internal(format!(
                "{op}: the script found no bounds for the window of budget {} it was given",
                show(self.budget)
            ))),
        }
    }

    fn into_reserve(self, op: &str, id: &str, now: u64) -> Result<ReserveReceipt> {
        let budget = self.budget;
        self.reply(op, now)?.into_reserve(op, budget, id)
    }

    fn into_commit(self, op: &str, id: &str, now: u64) -> Result<UsageReceipt> {
        let budget = self.budget;
        self.reply(op, now)?.into_commit(op, budget, id)
    }

    fn into_release(self, op: &str, id: &str, now: u64) -> Result<bool> {
        let budget = self.budget;
        self.reply(op, now)?.into_release(op, budget, id)
    }
}

/// A script's answer: its tag (`reserved`, `committed`, `released`) and the budgets' answers.
struct Answers<'a> {
    tag: String,
    answers: Vec<Answer<'a>>,
}

/// Runs one reservation script over `budgets` (name order) with the operation's arguments
/// `tail`: one EVALSHA, repeated only when a windowed budget's stored window has passed and the
/// script asks for the bounds of the window containing now (once per such budget). The script
/// learns whether every window is computable at `now` (`bounds_always_computable`): then
/// `reserve.lua` decides a rollover without bounds and never asks.
async fn run<'a>(
    ctx: Ctx<'_>,
    op: &str,
    script: ReservationScript,
    budgets: &[&'a str],
    tail: &[String],
    now: u64,
) -> Result<Answers<'a>> {
    let keys: Vec<_> = budgets
        .iter()
        .map(|b| budget_keys(&ctx.options.namespace, b))
        .collect();
    let mut windows = vec![(String::new(), String::new(), String::new()); budgets.len()];
    for _ in 0..MAX_WINDOW_CALLS + budgets.len() {
        let mut args = vec![
            now.to_string(),
            ctx.options.dedup_ttl_ms.to_string(),
            budgets.len().to_string(),
            String::from(if bounds_always_computable(now) {
                "1"
            } else {
                "0"
            }),
        ];
        for (spec, start, end) in &windows {
            args.extend([spec.clone(), start.clone(), end.clone()]);
        }
        args.extend(tail.iter().cloned());
        let reply = ctx
            .scripts
            .reservation(ctx.conn, op, script, &keys, &args)
            .await?;
        let Some((tag, rest)) = reply.split_first() else {
            return Err(Error::corruption(format!("{op}: empty script answer")));
        };
        if tag == "window" {
            let (Some(index), Some(spec)) = (rest.first(), rest.get(1)) else {
                return Err(Error::corruption(format!("{op}: short window answer")));
            };
            let slot = index
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| windows.get_mut(i))
                .ok_or_else(|| Error::corruption(format!("{op}: bad budget index")))?;
            *slot = match Window::from_spec(op, spec)?.bounds_at(now) {
                Ok(b) => (spec.clone(), b.start_ms.to_string(), b.end_ms.to_string()),
                // The script answers the error where the model would meet it.
                Err(_) => (spec.clone(), String::new(), String::new()),
            };
            continue;
        }
        let mut answers = Vec::new();
        for group in rest.chunks(4) {
            let [index, status, blob, expires_at] = group else {
                return Err(Error::corruption(format!("{op}: short script answer")));
            };
            let budget = index
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| budgets.get(i))
                .ok_or_else(|| Error::corruption(format!("{op}: bad budget index")))?;
            answers.push(Answer {
                budget,
                reply: decode_reply(op, status, blob, expires_at)?,
            });
        }
        return Ok(Answers {
            tag: tag.clone(),
            answers,
        });
    }
    Err(window_kept_changing(
        op,
        budgets.first().copied().unwrap_or(""),
    ))
}

/// One budget's `{status, blob, expires_at}` as a [`ReservationReply`].
fn decode_reply(op: &str, status: &str, blob: &str, expires_at: &str) -> Result<ReservationReply> {
    let bare = status.strip_prefix("replay-").unwrap_or(status);
    let (breaches, detail) = match bare {
        "hard" | "soft" | "ok" => (crate::budget::breaches(op, blob)?, Default::default()),
        _ => (Vec::new(), detail(blob)),
    };
    let expires_at = if expires_at.is_empty() {
        0
    } else {
        parse_decimal(op, "expiry", expires_at)?
    };
    Ok(ReservationReply {
        status: status.to_owned(),
        breaches,
        expires_at,
        detail,
    })
}

/// `n`, the dimensions, then the amounts: how the scripts read a dimension map.
fn push_dimensions(args: &mut Vec<String>, dimensions: &BTreeMap<String, u64>) {
    args.push(dimensions.len().to_string());
    args.extend(dimensions.keys().cloned());
    args.extend(dimensions.values().map(u64::to_string));
}

/// The tail of `reserve.lua` and `report_all.lua`: ttl, id, the dimensions.
fn reserve_tail(request: &ReserveRequest) -> Vec<String> {
    let mut tail = vec![request.ttl_ms.to_string(), request.id.clone()];
    push_dimensions(&mut tail, &request.dimensions);
    tail
}

/// The tail of `commit.lua`: id, the actual amounts.
fn commit_tail(id: &str, actual: &BTreeMap<String, u64>) -> Vec<String> {
    let mut tail = vec![id.to_owned()];
    push_dimensions(&mut tail, actual);
    tail
}

fn one<T>(op: &str, answers: Vec<T>) -> Result<T> {
    let mut answers = answers.into_iter();
    match (answers.next(), answers.next()) {
        (Some(answer), None) => Ok(answer),
        _ => Err(Error::corruption(format!(
            "{op}: the script did not answer for exactly one budget"
        ))),
    }
}

/// `reserve` on one budget: one EVALSHA (two after a rollover only where a window may fail at
/// now, so that it fails where the model does).
pub(crate) async fn reserve(
    ctx: Ctx<'_>,
    budget: &str,
    request: &ReserveRequest,
) -> Result<ReserveReceipt> {
    let op = "reserve";
    let now = ctx.options.now(op)?;
    let tail = reserve_tail(request);
    let answers = run(ctx, op, ReservationScript::Reserve, &[budget], &tail, now).await?;
    one(op, answers.answers)?.into_reserve(op, &request.id, now)
}

/// `reserve_all` in one script: the §4.3 sequence over every budget at once.
pub(crate) async fn reserve_all(
    ctx: Ctx<'_>,
    budgets: &[&str],
    request: &ReserveRequest,
) -> Result<MultiReserveReceipt> {
    let op = "reserve_all";
    let now = ctx.options.now(op)?;
    let tail = reserve_tail(request);
    let answers = run(ctx, op, ReservationScript::Reserve, budgets, &tail, now).await?;
    reserved(op, budgets, answers, &request.id, now)
}

/// `reserve_answer` of the budgets' reserve answers.
fn reserved(
    op: &str,
    budgets: &[&str],
    answers: Answers<'_>,
    id: &str,
    now: u64,
) -> Result<MultiReserveReceipt> {
    if answers.answers.len() != budgets.len() {
        return Err(Error::corruption(format!(
            "{op}: the script did not answer for every budget"
        )));
    }
    let receipts = answers
        .answers
        .into_iter()
        .map(|answer| answer.into_reserve(op, id, now))
        .collect();
    reserve_answer(budgets, receipts)
}

/// `commit` on one budget: one EVALSHA (two after a rollover of its window).
pub(crate) async fn commit(
    ctx: Ctx<'_>,
    budget: &str,
    id: &str,
    actual: &BTreeMap<String, u64>,
) -> Result<UsageReceipt> {
    let op = "commit";
    let now = ctx.options.now(op)?;
    let tail = commit_tail(id, actual);
    let answers = run(ctx, op, ReservationScript::Commit, &[budget], &tail, now).await?;
    one(op, answers.answers)?.into_commit(op, id, now)
}

/// `commit_all` in one script.
pub(crate) async fn commit_all(
    ctx: Ctx<'_>,
    budgets: &[&str],
    id: &str,
    actual: &BTreeMap<String, u64>,
) -> Result<MultiReceipt> {
    let op = "commit_all";
    let now = ctx.options.now(op)?;
    let tail = commit_tail(id, actual);
    let answers = run(ctx, op, ReservationScript::Commit, budgets, &tail, now).await?;
    committed(op, budgets, answers, id, now)
}

/// `commit_answer` of the budgets' commit answers (the first error when one failed).
fn committed(
    op: &str,
    budgets: &[&str],
    answers: Answers<'_>,
    id: &str,
    now: u64,
) -> Result<MultiReceipt> {
    let mut receipts = Vec::with_capacity(budgets.len());
    for answer in answers.answers {
        receipts.push(answer.into_commit(op, id, now)?);
    }
    if receipts.len() != budgets.len() {
        return Err(Error::corruption(format!(
            "{op}: the script did not answer for every budget"
        )));
    }
    commit_answer(budgets, receipts)
}

/// `release` on one budget: one EVALSHA.
pub(crate) async fn release(ctx: Ctx<'_>, budget: &str, id: &str) -> Result<bool> {
    let op = "release";
    let now = ctx.options.now(op)?;
    let tail = [id.to_owned()];
    let answers = run(ctx, op, ReservationScript::Release, &[budget], &tail, now).await?;
    one(op, answers.answers)?.into_release(op, id, now)
}

/// `release_all` in one script: the first error in name order, after all were tried.
pub(crate) async fn release_all(ctx: Ctx<'_>, budgets: &[&str], id: &str) -> Result<()> {
    let op = "release_all";
    let now = ctx.options.now(op)?;
    let tail = [id.to_owned()];
    let answers = run(ctx, op, ReservationScript::Release, budgets, &tail, now).await?;
    if answers.answers.len() != budgets.len() {
        return Err(Error::corruption(format!(
            "{op}: the script did not answer for every budget"
        )));
    }
    release_answer(
        answers
            .answers
            .into_iter()
            .map(|answer| answer.into_release(op, id, now)),
    )
}

/// `report_usage_all` in one script: `reserve_all` under the dedup key, then `commit_all`.
pub(crate) async fn report_usage_all(
    ctx: Ctx<'_>,
    budgets: &[&str],
    request: &ReserveRequest,
) -> Result<MultiReceipt> {
    let op = "report_usage_all";
    let now = ctx.options.now(op)?;
    debug_assert_eq!(request.ttl_ms, REPORT_ALL_TTL_MS);
    let tail = reserve_tail(request);
    let answers = run(ctx, op, ReservationScript::ReportAll, budgets, &tail, now).await?;
    if answers.tag == "committed" {
        return committed(op, budgets, answers, &request.id, now);
    }
    let receipt = reserved(op, budgets, answers, &request.id, now)?;
    refusal_answer(receipt).ok_or_else(|| {
        Error::corruption(format!(
            "{op}: the script reserved every budget but did not commit"
        ))
    })
}

/// The reservation `budget` remembers under `id`: one `HGET`.
pub(crate) async fn reservation(
    ctx: Ctx<'_>,
    budget: &str,
    id: &str,
) -> Result<Option<Reservation>> {
    let op = "reservation";
    let now = ctx.options.now(op)?;
    let keys = budget_keys(&ctx.options.namespace, budget);
    let text: Option<String> = ctx
        .conn
        .run(op, redis::cmd("HGET").arg(&keys.reservations).arg(id))
        .await?;
    match text {
        None => Ok(None),
        Some(text) => Ok(Some(decode_reservation(op, id, &text)?).filter(|r| r.is_remembered(now))),
    }
}

/// Every reservation `budget` remembers, by id: one `HGETALL`.
pub(crate) async fn reservations(ctx: Ctx<'_>, budget: &str) -> Result<Vec<Reservation>> {
    let op = "reservations";
    let now = ctx.options.now(op)?;
    let keys = budget_keys(&ctx.options.namespace, budget);
    let fields: Vec<(String, String)> = ctx
        .conn
        .run(op, redis::cmd("HGETALL").arg(&keys.reservations))
        .await?;
    let mut out = Vec::with_capacity(fields.len());
    for (id, text) in fields {
        let reservation = decode_reservation(op, &id, &text)?;
        if reservation.is_remembered(now) {
            out.push(reservation);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A record as `lib.lua` writes it: `ttl, n, d1, a1, …, expires_at, remember_ms, state[, at, …]`,
/// NUL-separated; anything malformed is `Corruption`.
pub(crate) fn decode_reservation(op: &str, id: &str, text: &str) -> Result<Reservation> {
    let corrupt = || {
        Error::corruption(format!(
            "{op}: stored reservation {} cannot be decoded",
            show(id)
        ))
    };
    let fields: Vec<&str> = text.split('\0').collect();
    let amount = |i: usize| {
        fields
            .get(i)
            .ok_or_else(corrupt)
            .and_then(|t| parse_decimal(op, "amount", t))
    };
    let dimensions_at = |start: usize| -> Result<(BTreeMap<String, u64>, usize)> {
        let n: usize = fields
            .get(start)
            .and_then(|t| t.parse().ok())
            .ok_or_else(corrupt)?;
        let mut dimensions = BTreeMap::new();
        for i in 0..n {
            let name = fields.get(start + 1 + 2 * i).ok_or_else(corrupt)?;
            dimensions.insert((*name).to_owned(), amount(start + 2 + 2 * i)?);
        }
        Ok((dimensions, start + 1 + 2 * n))
    };
    let ttl_ms = amount(0)?;
    let (dimensions, next) = dimensions_at(1)?;
    let expires_at = amount(next)?;
    let remember_ms = amount(next + 1)?;
    let state = fields.get(next + 2).ok_or_else(corrupt)?;
    let rest = fields.get(next + 3..).unwrap_or_default();
    let at = || amount(next + 3);
    let state = match (*state, rest.len()) {
        ("held", 0) => ReservationState::Held,
        ("released", 1) => ReservationState::Released { at: at()? },
        ("refused", _) => ReservationState::Refused {
            at: at()?,
            breaches: breaches_of(op, rest.get(1..).unwrap_or_default())?,
        },
        ("committed", _) => {
            let (actual, after) = dimensions_at(next + 4)?;
            let status = fields.get(after).ok_or_else(corrupt)?;
            let breaches = breaches_of(op, fields.get(after + 1..).unwrap_or_default())?;
            let outcome = match *status {
                "ok" if breaches.is_empty() => UsageOutcome::Ok,
                "soft" => UsageOutcome::SoftBreach(breaches),
                _ => return Err(corrupt()),
            };
            ReservationState::Committed {
                at: at()?,
                actual,
                outcome,
            }
        }
        _ => return Err(corrupt()),
    };
    Ok(Reservation {
        id: id.to_owned(),
        dimensions,
        ttl_ms,
        expires_at,
        remember_ms,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::{Breach, ErrorKind};

    #[test]
    fn records_decode_into_reservations() {
        let r = decode_reservation(
            "op",
            "i",
            "100\u{0}2\u{0}a\u{0}1\u{0}b\u{0}0\u{0}150\u{0}7\u{0}held",
        )
        .unwrap();
        assert_eq!(r.ttl_ms, 100);
        assert_eq!(
            r.dimensions,
            BTreeMap::from([("a".into(), 1), ("b".into(), 0)])
        );
        assert_eq!((r.expires_at, r.remember_ms), (150, 7));
        assert_eq!(r.state, ReservationState::Held);
        let r = decode_reservation(
            "op",
            "i",
            "5\u{0}1\u{0}a\u{0}9\u{0}9\u{0}1\u{0}committed\u{0}6\u{0}1\u{0}a\u{0}4\u{0}soft\u{0}a\u{0}4\u{0}3\u{0}1",
        )
        .unwrap();
        assert_eq!(
            r.state,
            ReservationState::Committed {
                at: 6,
                actual: BTreeMap::from([("a".into(), 4)]),
                outcome: UsageOutcome::SoftBreach(vec![Breach {
                    dimension: "a".into(),
                    usage: 4,
                    limit: 3,
                    crossed: true,
                    pending: 0
                }])
            }
        );
        let r = decode_reservation(
            "op",
            "i",
            "5\u{0}1\u{0}a\u{0}9\u{0}9\u{0}1\u{0}refused\u{0}4\u{0}a\u{0}2\u{0}3\u{0}0+8",
        )
        .unwrap();
        let ReservationState::Refused { at: 4, breaches } = r.state else {
            panic!("{r:?}")
        };
        assert_eq!((breaches[0].pending, breaches[0].crossed), (8, false));
        for bad in [
            "",
            "5\u{0}1\u{0}a",
            "5\u{0}0\u{0}9\u{0}1\u{0}gone",
            "x\u{0}0\u{0}9\u{0}1\u{0}held",
        ] {
            assert_eq!(
                decode_reservation("op", "i", bad).unwrap_err().kind(),
                ErrorKind::Corruption
            );
        }
    }
}
