//! The answer grammar of server-side reports (PostgreSQL's plpgsql, Valkey's Lua), decoded once.
//!
//! A script or function answers a status word — `ok`, `soft`, `hard`, each optionally prefixed
//! `replay-`, or `conflict`, `overflow`, `corrupt` — plus breaches or the overflowing dimension in
//! whatever encoding the engine has. The engine decodes its encoding into [`ReportReply`]'s
//! fields; [`ReportReply::into_receipt`] turns the status into the receipt or the error.

use crate::raw::show;
use crate::reservation::{not_within, refusal, Refusal};
use crate::{Breach, Error, ReserveOutcome, ReserveReceipt, Result, UsageOutcome, UsageReceipt};

/// A server-side report's answer, with the engine's encoding already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportReply {
    /// The status word, e.g. `"replay-soft"`.
    pub status: String,
    /// The breaches, for `soft` and `hard`.
    pub breaches: Vec<Breach>,
    /// For `overflow`: the dimension, its counter and the delta; for `corrupt`: what could not be
    /// decoded, in the first field.
    pub detail: (String, String, String),
}

impl ReportReply {
    /// The receipt the status stands for, or the error it signals (`Conflict` names `key`).
    pub fn into_receipt(self, op: &str, budget: &str, key: Option<&str>) -> Result<UsageReceipt> {
        let (replayed, status) = match self.status.strip_prefix("replay-") {
            Some(rest) => (true, rest),
            None => (false, self.status.as_str()),
        };
        let outcome = match status {
            "ok" if self.breaches.is_empty() => UsageOutcome::Ok,
            "soft" => UsageOutcome::SoftBreach(self.breaches),
            "hard" => UsageOutcome::HardBreach(self.breaches),
            "conflict" if !replayed => {
                return Err(Error::dedup_conflict(op, budget, key.unwrap_or_default()))
            }
            "overflow" if !replayed => {
                let (dimension, current, delta) = &self.detail;
                return Err(Error::counter_overflow(
                    op, budget, dimension, current, delta,
                ));
            }
            "corrupt" if !replayed => {
                return Err(Error::corruption(format!(
                    "{op}: stored data {} of budget {} cannot be decoded",
                    show(&self.detail.0),
                    show(budget)
                )))
            }
            _ => {
                return Err(Error::corruption(format!(
                    "{op}: unknown status {} for budget {}",
                    show(&self.status),
                    show(budget)
                )))
            }
        };
        Ok(UsageReceipt { outcome, replayed })
    }
}

/// A server-side reservation call's answer (`reserve`, `commit`, `release`), with the engine's
/// encoding already decoded. Status words:
///
/// - `reserve`: `reserved`, `hard` (breaches), each optionally prefixed `replay-`; `conflict`
///   (the id was made with another request); `overflow` (detail: dimension, counters + pending,
///   amount). `expires_at` is the hold's expiry.
/// - `commit`: `ok`, `soft` (breaches), each optionally prefixed `replay-`; `not-found`;
///   `outside` (detail: dimension, amount, reserved amount or empty when not reserved);
///   `conflict` (committed with another `actual`); `released`; `refused`; `expired`
///   (`expires_at`).
/// - `release`: `freed` (true), `nothing` (false), `committed` (`Conflict`), `not-found`.
///
/// Any reply may be `corrupt` (detail: what could not be decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationReply {
    /// The status word.
    pub status: String,
    /// The breaches, for `hard` and `soft`.
    pub breaches: Vec<Breach>,
    /// The hold's expiry (`reserve` answers, `expired`).
    pub expires_at: u64,
    /// For `overflow`, `outside` and `corrupt`, as above.
    pub detail: (String, String, String),
}

impl ReservationReply {
    /// Errors every reservation call may answer.
    fn common_error(&self, op: &str, budget: &str, id: &str) -> Error {
        match self.status.as_str() {
            "not-found" => Error::reservation_not_found(op, budget, id),
            "corrupt" => Error::corruption(format!(
                "{op}: stored data {} of budget {} cannot be decoded",
                show(&self.detail.0),
                show(budget)
            )),
            _ => Error::corruption(format!(
                "{op}: unknown status {} for reservation {} of budget {}",
                show(&self.status),
                show(id),
                show(budget)
            )),
        }
    }

    /// The receipt of `reserve`, or its error.
    pub fn into_reserve(self, op: &str, budget: &str, id: &str) -> Result<ReserveReceipt> {
        let (replayed, status) = split_replay(&self.status);
        let outcome = match status {
            "reserved" if self.breaches.is_empty() => ReserveOutcome::Reserved,
            "hard" => ReserveOutcome::HardBreach(self.breaches),
            "conflict" if !replayed => return Err(refusal(op, budget, id, Refusal::OtherRequest)),
            "overflow" if !replayed => {
                let (dimension, current, delta) = &self.detail;
                return Err(Error::counter_overflow(
                    op, budget, dimension, current, delta,
                ));
            }
            _ => return Err(self.common_error(op, budget, id)),
        };
        Ok(ReserveReceipt {
            outcome,
            expires_at: self.expires_at,
            replayed,
        })
    }

    /// The receipt of `commit`, or its error.
    pub fn into_commit(self, op: &str, budget: &str, id: &str) -> Result<UsageReceipt> {
        let (replayed, status) = split_replay(&self.status);
        let outcome = match status {
            "ok" if self.breaches.is_empty() => UsageOutcome::Ok,
            "soft" => UsageOutcome::SoftBreach(self.breaches),
            _ if replayed => return Err(self.common_error(op, budget, id)),
            "outside" => {
                let (dimension, amount, reserved) = &self.detail;
                let amount = amount.parse::<u64>();
                let reserved = match reserved.as_str() {
                    "" => Ok(None),
                    text => text.parse::<u64>().map(Some),
                };
                return match (amount, reserved) {
                    (Ok(amount), Ok(reserved)) => {
                        Err(not_within(op, budget, id, dimension, amount, reserved))
                    }
                    _ => Err(self.common_error(op, budget, id)),
                };
            }
            "conflict" => return Err(refusal(op, budget, id, Refusal::CommittedOtherwise)),
            "released" => return Err(refusal(op, budget, id, Refusal::Released)),
            "refused" => return Err(refusal(op, budget, id, Refusal::Refused)),
            "expired" => return Err(Error::reservation_expired(op, budget, id, self.expires_at)),
            _ => return Err(self.common_error(op, budget, id)),
        };
        Ok(UsageReceipt { outcome, replayed })
    }

    /// The answer of `release`, or its error.
    pub fn into_release(self, op: &str, budget: &str, id: &str) -> Result<bool> {
        match self.status.as_str() {
            "freed" => Ok(true),
            "nothing" => Ok(false),
            "committed" => Err(refusal(op, budget, id, Refusal::Committed)),
            _ => Err(self.common_error(op, budget, id)),
        }
    }
}

/// `(true, rest)` for `replay-rest`, else `(false, status)`.
fn split_replay(status: &str) -> (bool, &str) {
    match status.strip_prefix("replay-") {
        Some(rest) => (true, rest),
        None => (false, status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn reply(status: &str, breaches: Vec<Breach>) -> ReportReply {
        ReportReply {
            status: status.to_owned(),
            breaches,
            detail: ("d".to_owned(), "7".to_owned(), "9".to_owned()),
        }
    }

    #[test]
    fn statuses_become_receipts_or_errors() {
        let b = vec![Breach {
            dimension: "t".into(),
            usage: 5,
            limit: 4,
            crossed: true,
            pending: 0,
        }];
        let r = reply("replay-soft", b.clone()).into_receipt("op", "x", None);
        assert_eq!(
            r.unwrap(),
            UsageReceipt {
                outcome: UsageOutcome::SoftBreach(b.clone()),
                replayed: true
            }
        );
        let r = reply("hard", b.clone())
            .into_receipt("op", "x", None)
            .unwrap();
        assert_eq!(r.outcome, UsageOutcome::HardBreach(b.clone()));
        assert!(!r.replayed);
        let ok = reply("ok", vec![]).into_receipt("op", "x", None).unwrap();
        assert_eq!(ok.outcome, UsageOutcome::Ok);
        for (status, kind) in [
            ("conflict", ErrorKind::Conflict),
            ("overflow", ErrorKind::Overflow),
            ("corrupt", ErrorKind::Corruption),
            ("replay-conflict", ErrorKind::Corruption),
            ("weird", ErrorKind::Corruption),
        ] {
            let e = reply(status, vec![]).into_receipt("op", "x", Some("k"));
            assert_eq!(e.unwrap_err().kind(), kind, "{status}");
        }
        let e = reply("ok", b).into_receipt("op", "x", None);
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Corruption);
    }

    #[test]
    fn reservation_statuses_become_receipts_or_errors() {
        let r = |status: &str, detail: (&str, &str, &str)| ReservationReply {
            status: status.to_owned(),
            breaches: Vec::new(),
            expires_at: 77,
            detail: (
                detail.0.to_owned(),
                detail.1.to_owned(),
                detail.2.to_owned(),
            ),
        };
        let none = ("", "", "");
        assert_eq!(
            r("replay-reserved", none)
                .into_reserve("op", "b", "i")
                .unwrap(),
            ReserveReceipt {
                outcome: ReserveOutcome::Reserved,
                expires_at: 77,
                replayed: true
            }
        );
        let kind = |reply: ReservationReply, call: u8| match call {
            0 => reply
                .into_reserve("op", "b", "i")
                .map(|_| ())
                .unwrap_err()
                .kind(),
            1 => reply
                .into_commit("op", "b", "i")
                .map(|_| ())
                .unwrap_err()
                .kind(),
            _ => reply
                .into_release("op", "b", "i")
                .map(|_| ())
                .unwrap_err()
                .kind(),
        };
        assert_eq!(kind(r("conflict", none), 0), ErrorKind::Conflict);
        assert_eq!(kind(r("overflow", ("d", "1", "2")), 0), ErrorKind::Overflow);
        assert_eq!(kind(r("replay-conflict", none), 0), ErrorKind::Corruption);
        assert_eq!(kind(r("not-found", none), 1), ErrorKind::NotFound);
        assert_eq!(
            kind(r("outside", ("d", "5", "")), 1),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(r("outside", ("d", "5", "4")), 1),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(r("outside", ("d", "x", "4")), 1),
            ErrorKind::Corruption
        );
        assert_eq!(kind(r("released", none), 1), ErrorKind::Conflict);
        assert_eq!(kind(r("refused", none), 1), ErrorKind::Conflict);
        assert_eq!(kind(r("conflict", none), 1), ErrorKind::Conflict);
        assert_eq!(kind(r("expired", none), 1), ErrorKind::Expired);
        assert_eq!(kind(r("replay-expired", none), 1), ErrorKind::Corruption);
        assert_eq!(kind(r("committed", none), 2), ErrorKind::Conflict);
        assert_eq!(kind(r("not-found", none), 2), ErrorKind::NotFound);
        assert_eq!(kind(r("corrupt", ("x", "", "")), 2), ErrorKind::Corruption);
        assert!(r("freed", none).into_release("op", "b", "i").unwrap());
        assert!(!r("nothing", none).into_release("op", "b", "i").unwrap());
        assert_eq!(
            r("soft", none).into_commit("op", "b", "i").unwrap(),
            UsageReceipt {
                outcome: UsageOutcome::SoftBreach(Vec::new()),
                replayed: false
            }
        );
    }
}
