//! The answer grammar of server-side reports (PostgreSQL's plpgsql, Valkey's Lua), decoded once.
//!
//! A script or function answers a status word — `ok`, `soft`, `hard`, each optionally prefixed
//! `replay-`, or `conflict`, `overflow`, `corrupt` — plus breaches or the overflowing dimension in
//! whatever encoding the engine has. The engine decodes its encoding into [`ReportReply`]'s
//! fields; [`ReportReply::into_receipt`] turns the status into the receipt or the error.

use crate::raw::show;
use crate::{Breach, Error, Result, UsageOutcome, UsageReceipt};

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
}
