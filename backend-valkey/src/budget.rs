//! Budget operations: one script call for each write (`report_usage`, `set_policy`), one command
//! for each read or delete, and the decoding of what the scripts and hashes hold.

use std::collections::BTreeMap;

use stowage_core::raw::{
    show, window_kept_changing, ReportReply, ResolvedOptions, StoredWindow, WindowStep,
    MAX_WINDOW_CALLS,
};
use stowage_core::{
    Breach, BudgetPolicy, BudgetUsage, DimensionLimit, Error, Result, UsageReceipt, UsageReport,
    Window, WindowBounds, MAX_AMOUNT,
};

use crate::connection::Connection;
use crate::keys::budget_keys;
use crate::scripts::{report_usage_call_in, Scripts};

/// The policy hash's `""` field for a policy without a window.
pub(crate) const NO_WINDOW: &str = "1";

/// One atomic, deduplicated report: one EVALSHA inside a window; after a rollover the script
/// answers `window` with the policy's spec, and the call is repeated once with
/// `Window::bounds_at(now)`.
pub(crate) async fn report_usage(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    budget: &str,
    report: &UsageReport,
) -> Result<UsageReceipt> {
    let op = "report_usage";
    let now = options.now(op)?;
    let mut window: Option<(String, WindowBounds)> = None;
    for _ in 0..MAX_WINDOW_CALLS {
        let call = report_usage_call_in(
            &options.namespace,
            budget,
            report,
            now,
            options.dedup_ttl_ms,
            window
                .as_ref()
                .map(|(spec, bounds)| (spec.as_str(), *bounds)),
        );
        let (status, blob) = scripts.report(conn, call).await?;
        if status == "window" {
            let bounds = Window::from_spec(op, &blob)?.bounds_at(now)?;
            window = Some((blob, bounds));
            continue;
        }
        return report_reply(op, status, &blob)?.into_receipt(
            op,
            budget,
            report.dedup_key.as_deref(),
        );
    }
    Err(window_kept_changing(op, budget))
}

/// Decodes the script's answer: the breaches of `ok`/`soft`/`hard` (replayed or not) as
/// `dim\0usage\0limit\0crossed\0` groups (see [`breaches`]), the `dim\0counter\0delta\0` of
/// `overflow`, the undecodable dimension of `corrupt`.
pub(crate) fn report_reply(op: &str, status: String, blob: &str) -> Result<ReportReply> {
    let mut reply = ReportReply {
        status,
        breaches: Vec::new(),
        detail: Default::default(),
    };
    match reply.status.as_str() {
        "overflow" => reply.detail = detail(blob),
        "corrupt" => reply.detail.0 = blob.to_owned(),
        _ => reply.breaches = breaches(op, blob)?,
    }
    Ok(reply)
}

/// The three NUL-separated fields of a script's detail (missing ones empty).
pub(crate) fn detail(blob: &str) -> (String, String, String) {
    let parts: Vec<&str> = blob.split('\0').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
    (part(0), part(1), part(2))
}

/// Breaches as the scripts write them: groups of dimension, usage, limit, crossed separated by
/// NUL, where crossed is `0` or `1`, followed for hard breaches by `+` and the pending amount (a
/// group without it, as dedup records written before reservations hold, has pending 0).
pub(crate) fn breaches(op: &str, blob: &str) -> Result<Vec<Breach>> {
    let parts: Vec<&str> = blob.split('\0').collect();
    breaches_of(op, &parts)
}

/// [`breaches`] of a blob already split at its NULs.
pub(crate) fn breaches_of(op: &str, parts: &[&str]) -> Result<Vec<Breach>> {
    let mut out = Vec::new();
    for group in parts.chunks(4).filter(|g| g.len() == 4) {
        let (crossed, pending) = match group[3].split_once('+') {
            Some((crossed, pending)) => (crossed, parse_decimal(op, "pending", pending)?),
            None => (group[3], 0),
        };
        out.push(Breach {
            dimension: group[0].to_owned(),
            usage: parse_decimal(op, "usage", group[1])?,
            limit: parse_decimal(op, "limit", group[2])?,
            crossed: crossed == "1",
            pending,
        });
    }
    Ok(out)
}

pub(crate) fn parse_decimal(op: &str, what: &str, text: &str) -> Result<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|v| *v <= MAX_AMOUNT)
        .ok_or_else(|| {
            Error::corruption(format!(
                "{op}: stored {what} {} is not an amount",
                show(text)
            ))
        })
}

/// Replaces the policy, with the window change of `WindowChange::at` decided by the script:
/// one EVALSHA (a second only when the old window has passed and changes, to check its bounds).
pub(crate) async fn set_policy(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    budget: &str,
    policy: &BudgetPolicy,
) -> Result<()> {
    let text = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let limits = || {
        policy
            .limits
            .iter()
            .map(|(dimension, limit)| (dimension.as_str(), text(limit.soft), text(limit.hard)))
    };
    change_policy(
        conn,
        scripts,
        options,
        "set_policy",
        budget,
        policy.window.as_ref(),
        Some(limits),
    )
    .await
    .map(|_| ())
}

/// One `set_policy.lua` exchange: the new window's bounds at now go with the call; the script
/// asks back for a check of the old window's bounds (`old`), or fails the change where the new
/// bounds could not be computed (`new`).
async fn change_policy<'a, I: Iterator<Item = (&'a str, String, String)>>(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    op: &str,
    budget: &str,
    new: Option<&Window>,
    limits: Option<impl Fn() -> I>,
) -> Result<bool> {
    let now = options.now(op)?;
    let keys = budget_keys(&options.namespace, budget);
    let new_spec = new.map(Window::spec).unwrap_or_default();
    let new_bounds = new.map(|w| w.bounds_at(now));
    let (start, end) = match &new_bounds {
        Some(Ok(b)) => (b.start_ms.to_string(), b.end_ms.to_string()),
        _ => (String::new(), String::new()),
    };
    let now_text = now.to_string();
    let mut checked_old = String::new();
    for _ in 0..MAX_WINDOW_CALLS {
        let change = [
            now_text.as_str(),
            new_spec.as_str(),
            start.as_str(),
            end.as_str(),
            checked_old.as_str(),
        ];
        let (status, detail): (String, String) = scripts
            .set_policy(conn, op, &keys, change, limits.as_ref().map(|f| f()))
            .await?;
        match status.as_str() {
            "ok" => return Ok(detail == "1"),
            "old" => {
                Window::from_spec(op, &detail)?.bounds_at(now)?;
                checked_old = detail;
            }
            "new" => {
                return match new_bounds {
                    Some(Err(e)) => Err(e),
                    _ => Err(Error::internal(format!(
                        "{op}: the script asked for window bounds it was given"
                    ))),
                }
            }
            _ => {
                return Err(Error::corruption(format!(
                    "{op}: unexpected script answer {}",
                    show(&status)
                )))
            }
        }
    }
    Err(window_kept_changing(op, budget))
}

/// The policy last set: one `HGETALL`.
pub(crate) async fn policy(
    conn: &Connection,
    namespace: &str,
    budget: &str,
) -> Result<Option<BudgetPolicy>> {
    let op = "policy";
    let keys = budget_keys(namespace, budget);
    let fields: Vec<(String, String)> = conn
        .run(op, redis::cmd("HGETALL").arg(&keys.policy))
        .await?;
    if fields.is_empty() {
        return Ok(None);
    }
    decode_policy(op, fields).map(Some)
}

/// A policy hash's fields (not empty) as the policy: field `""` holds the window spec (`"1"`:
/// none), every other a dimension's `soft,hard` (empty for no limit).
pub(crate) fn decode_policy(op: &str, fields: Vec<(String, String)>) -> Result<BudgetPolicy> {
    let mut window = None;
    if let Some((_, spec)) = fields.iter().find(|(d, _)| d.is_empty()) {
        if spec != NO_WINDOW {
            window = Some(Window::from_spec(op, spec)?);
        }
    }
    let mut limits = BTreeMap::new();
    for (dimension, value) in fields.into_iter().filter(|(d, _)| !d.is_empty()) {
        let (soft, hard) = value.split_once(',').ok_or_else(|| {
            Error::corruption(format!(
                "{op}: stored limit {} cannot be decoded",
                show(&value)
            ))
        })?;
        let parse = |t: &str| {
            (!t.is_empty())
                .then(|| parse_decimal(op, "limit", t))
                .transpose()
        };
        limits.insert(
            dimension,
            DimensionLimit {
                soft: parse(soft)?,
                hard: parse(hard)?,
            },
        );
    }
    Ok(BudgetPolicy { limits, window })
}

/// Removes the policy, keeping the counters `usage` shows as lifetime counters: one EVALSHA
/// (see [`set_policy`]).
pub(crate) async fn delete_policy(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    budget: &str,
) -> Result<bool> {
    type NoLimits = std::iter::Empty<(&'static str, String, String)>;
    change_policy(
        conn,
        scripts,
        options,
        "delete_policy",
        budget,
        None,
        None::<fn() -> NoLimits>,
    )
    .await
}

/// The counters an operation at now counts into, with their window: one EVALSHA reading the
/// policy's window, the stored window and the counters; `WindowStep::at` runs here.
pub(crate) async fn usage(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    budget: &str,
) -> Result<BudgetUsage> {
    let op = "usage";
    let now = options.now(op)?;
    let keys = budget_keys(&options.namespace, budget);
    let reply = scripts.usage(conn, &keys, now).await?;
    let (head, fields) = reply.split_at(reply.len().min(5));
    let [policy_spec, spec, start, end, count] = head else {
        return Err(Error::corruption(format!("{op}: short script answer")));
    };
    let count = count
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= fields.len())
        .ok_or_else(|| Error::corruption(format!("{op}: bad counter count {}", show(count))))?;
    let (fields, held) = fields.split_at(count);
    let window = match policy_spec.as_str() {
        "" | NO_WINDOW => None,
        spec => Some(Window::from_spec(op, spec)?),
    };
    let stored = if spec.is_empty() {
        None
    } else {
        Some(StoredWindow {
            spec: spec.clone(),
            bounds: WindowBounds {
                start_ms: parse_decimal(op, "window start", start)?,
                end_ms: parse_decimal(op, "window end", end)?,
            },
        })
    };
    let step = WindowStep::at(window.as_ref(), stored.as_ref(), now)?;
    let mut counters = BTreeMap::new();
    if step.keeps_counters() {
        for pair in fields.chunks(2) {
            let [dimension, value] = pair else {
                return Err(Error::corruption(format!("{op}: odd counter list")));
            };
            counters.insert(dimension.clone(), parse_decimal(op, "counter", value)?);
        }
    }
    let mut pending = BTreeMap::new();
    for pair in held.chunks(2) {
        let [dimension, value] = pair else {
            return Err(Error::corruption(format!("{op}: odd pending list")));
        };
        pending.insert(dimension.clone(), parse_decimal(op, "pending", value)?);
    }
    Ok(BudgetUsage {
        counters,
        pending,
        window: step.bounds(),
    })
}

/// Removes the counters: one `DEL`.
pub(crate) async fn reset_usage(conn: &Connection, namespace: &str, budget: &str) -> Result<()> {
    let keys = budget_keys(namespace, budget);
    let _: i64 = conn
        .run("reset_usage", redis::cmd("DEL").arg(&keys.counters))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::ErrorKind;

    #[test]
    fn script_answers_decode_into_their_fields() {
        let reply = report_reply("op", "replay-soft".into(), "t\u{0}5\u{0}4\u{0}1\u{0}").unwrap();
        assert_eq!(
            reply.breaches,
            vec![Breach {
                dimension: "t".into(),
                usage: 5,
                limit: 4,
                crossed: true,
                pending: 0,
            }]
        );
        let reply = report_reply("op", "hard".into(), "t\u{0}5\u{0}4\u{0}0+3\u{0}").unwrap();
        assert_eq!(
            reply.breaches,
            vec![Breach {
                dimension: "t".into(),
                usage: 5,
                limit: 4,
                crossed: false,
                pending: 3,
            }]
        );
        let reply = report_reply("op", "overflow".into(), "t\u{0}7\u{0}9\u{0}").unwrap();
        assert_eq!(reply.detail, ("t".into(), "7".into(), "9".into()));
        let reply = report_reply("op", "corrupt".into(), "t").unwrap();
        assert_eq!(reply.detail.0, "t");
        let e = report_reply("op", "hard".into(), "t\u{0}x\u{0}4\u{0}1\u{0}").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
    }
}
