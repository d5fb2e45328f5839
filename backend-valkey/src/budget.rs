//! Budget operations: one script call for each write (`report_usage`, `set_policy`), one command
//! for each read or delete, and the decoding of what the scripts and hashes hold.

use std::collections::BTreeMap;

use stowage_core::raw::{show, ReportReply, ResolvedOptions};
use stowage_core::{
    Breach, BudgetPolicy, BudgetUsage, DimensionLimit, Error, Result, UsageReceipt, UsageReport,
    MAX_AMOUNT,
};

use crate::connection::Connection;
use crate::keys::budget_keys;
use crate::scripts::{report_usage_call, Scripts};

/// One atomic, deduplicated report: one EVALSHA.
pub(crate) async fn report_usage(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    budget: &str,
    report: &UsageReport,
) -> Result<UsageReceipt> {
    let op = "report_usage";
    let now = options.now(op)?;
    let call = report_usage_call(
        &options.namespace,
        budget,
        report,
        now,
        options.dedup_ttl_ms,
    );
    let (status, blob) = scripts.report(conn, call).await?;
    report_reply(op, status, &blob)?.into_receipt(op, budget, report.dedup_key.as_deref())
}

/// Decodes the script's answer: the breaches of `ok`/`soft`/`hard` (replayed or not) as
/// `dim\0usage\0limit\0crossed\0` groups, the `dim\0counter\0delta\0` of `overflow`, the
/// undecodable dimension of `corrupt`.
fn report_reply(op: &str, status: String, blob: &str) -> Result<ReportReply> {
    let mut reply = ReportReply {
        status,
        breaches: Vec::new(),
        detail: Default::default(),
    };
    let parts: Vec<&str> = blob.split('\0').collect();
    match reply.status.as_str() {
        "overflow" => {
            let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
            reply.detail = (part(0), part(1), part(2));
        }
        "corrupt" => reply.detail.0 = blob.to_owned(),
        _ => {
            for group in parts.chunks(4).filter(|g| g.len() == 4) {
                reply.breaches.push(Breach {
                    dimension: group[0].to_owned(),
                    usage: parse_decimal(op, "usage", group[1])?,
                    limit: parse_decimal(op, "limit", group[2])?,
                    crossed: group[3] == "1",
                });
            }
        }
    }
    Ok(reply)
}

fn parse_decimal(op: &str, what: &str, text: &str) -> Result<u64> {
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

/// Replaces the policy: one EVALSHA.
pub(crate) async fn set_policy(
    conn: &Connection,
    scripts: &Scripts,
    namespace: &str,
    budget: &str,
    policy: &BudgetPolicy,
) -> Result<()> {
    let keys = budget_keys(namespace, budget);
    let text = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let limits = policy
        .limits
        .iter()
        .map(|(dimension, limit)| (dimension.as_str(), text(limit.soft), text(limit.hard)));
    scripts.set_policy(conn, &keys.policy, limits).await
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
    Ok(Some(BudgetPolicy {
        limits,
        ..BudgetPolicy::default()
    }))
}

/// Removes the policy: one `DEL`.
pub(crate) async fn delete_policy(
    conn: &Connection,
    namespace: &str,
    budget: &str,
) -> Result<bool> {
    let keys = budget_keys(namespace, budget);
    let deleted: i64 = conn
        .run("delete_policy", redis::cmd("DEL").arg(&keys.policy))
        .await?;
    Ok(deleted > 0)
}

/// The counters: one `HGETALL`.
pub(crate) async fn usage(conn: &Connection, namespace: &str, budget: &str) -> Result<BudgetUsage> {
    let op = "usage";
    let keys = budget_keys(namespace, budget);
    let fields: Vec<(String, String)> = conn
        .run(op, redis::cmd("HGETALL").arg(&keys.counters))
        .await?;
    let mut counters = BTreeMap::new();
    for (dimension, value) in fields {
        let value = parse_decimal(op, "counter", &value)?;
        counters.insert(dimension, value);
    }
    Ok(BudgetUsage {
        counters,
        ..BudgetUsage::default()
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
                crossed: true
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
