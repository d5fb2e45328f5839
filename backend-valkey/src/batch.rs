//! `report_usage_batch` (SEMANTICS §4.4): the batch's `report_usage` calls pipelined.
//!
//! Every item is the EVALSHA a single `report_usage` sends ([`report_usage_call_in`],
//! [`Scripts::report_invocation`]), and its reply is decoded as a single report's
//! ([`ReportReply`]). A standalone server gets one pipeline of all of them, in order; a cluster
//! one pipeline per hash slot (every key of one budget shares its slot, see `keys.rs`), each
//! with that slot's items in order, the pipelines sent concurrently.
//!
//! Two replies ask for a repeat: `window` (the budget's window rolled over: nothing applied; the
//! client computes `Window::bounds_at(now)`) and NOSCRIPT (the server lost its script cache: the
//! script is loaded first). For each budget, the first item that must be repeated and every
//! later item of that budget are repeated, in order, in one more pipeline, with the bounds the
//! budget's window needs. One exception: a later item that answered a new application (not a
//! replay, not an error) is kept, since repeating it would apply it twice; this happens only
//! when another client rolled the window (or loaded the script) between the two items, and the
//! item's answer is then the one it got at that point. Repeating a replay, a conflict or an
//! error is harmless: nothing was applied, so the repeat answers in order. At most
//! [`MAX_WINDOW_CALLS`] pipelines are sent; an item still asking for a repeat then answers
//! `Unavailable` in its slot, as a single call would.
//!
//! The batch's `now` is read once. Each round of pipelines (the first, then each repeat) is
//! bounded by the handle's operation timeout scaled by the items it sends ([`batch_timeout`]);
//! the driver's own bound is raised to the largest batch's (`connection.rs`). A timeout or a lost connection is the outer `Unavailable` (the
//! items' outcomes are unknown). A per-item server error is that item's answer, with the kind a
//! single call would give. On a cluster the driver reduces a pipeline's replies to its first
//! error, so a slot's pipeline that meets one is the outer `Unavailable` (its items' outcomes are
//! unknown); to keep NOSCRIPT out of them, each slot's pipeline starts with a `SCRIPT LOAD` of the
//! report script.

use std::collections::HashMap;
use std::time::Duration;

use redis::{FromRedisValue, Pipeline, RedisResult, Value as RedisValue};
use stowage_core::raw::{window_kept_changing, BatchItem, ResolvedOptions, MAX_WINDOW_CALLS};
use stowage_core::{Error, ErrorKind, Result, UsageReceipt, Window, WindowBounds};

use crate::budget::report_reply;
use crate::connection::Connection;
use crate::error;
use crate::keys::slot_of;
use crate::scripts::{report_usage_call_in, Scripts};

/// The operation name of a batch's outer errors; items' errors name `report_usage`, as a single
/// call's do (the checked layer then names the batch).
const OUTER: &str = "report_usage_batch";
/// The operation name of an item's errors.
const ITEM: &str = "report_usage";

/// Items whose pipelines the operation timeout bounds as it is; a larger batch gets the timeout
/// scaled by `items / TIMEOUT_ITEMS` (rounded up). See [`batch_timeout`].
pub(crate) const TIMEOUT_ITEMS: usize = 1_000;

/// The bound of one batch's pipelines: the operation timeout for up to [`TIMEOUT_ITEMS`] items,
/// that many times more for every further (started) [`TIMEOUT_ITEMS`].
pub(crate) fn batch_timeout(operation_timeout: Duration, items: usize) -> Duration {
    let scale = items.div_ceil(TIMEOUT_ITEMS).max(1);
    operation_timeout.saturating_mul(u32::try_from(scale).unwrap_or(u32::MAX))
}

/// What one item's reply asks of the batch.
enum Reply {
    /// The item's answer.
    Answer(Result<UsageReceipt>),
    /// The policy's window (spec) needs bounds at now: nothing applied.
    Window(String),
    /// The server lost the script: nothing applied.
    NoScript,
}

/// The batch: one pipeline (standalone) or one per slot (cluster), and one more per repeat.
pub(crate) async fn report_usage_batch(
    conn: &Connection,
    scripts: &Scripts,
    options: &ResolvedOptions,
    items: &[BatchItem<'_>],
) -> Result<Vec<Result<UsageReceipt>>> {
    let now = options.now(OUTER)?;
    let mut answers: Vec<Option<Result<UsageReceipt>>> = items.iter().map(|_| None).collect();
    // The window each budget's repeats bring: the last one a reply of that budget named.
    let mut windows: HashMap<&str, (String, WindowBounds)> = HashMap::new();
    // Positions of the items still to send, increasing.
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut lost_script = false;
    for _ in 0..MAX_WINDOW_CALLS {
        if pending.is_empty() {
            break;
        }
        if lost_script {
            scripts.load_report(conn, OUTER).await?;
            lost_script = false;
        }
        let calls: Vec<_> = pending
            .iter()
            .map(|&i| {
                let item = &items[i];
                report_usage_call_in(
                    &options.namespace,
                    item.budget,
                    item.report,
                    now,
                    options.dedup_ttl_ms,
                    windows
                        .get(item.budget)
                        .map(|(spec, bounds)| (spec.as_str(), *bounds)),
                )
            })
            .collect();
        let replies = send(conn, scripts, calls).await?;
        // The first item of each budget that must be repeated.
        let mut first_repeat: HashMap<&str, usize> = HashMap::new();
        for (&i, reply) in pending.iter().zip(replies) {
            let item = &items[i];
            let repeat = match classify(item, reply) {
                Reply::Answer(answer) => {
                    answers[i] = Some(answer);
                    false
                }
                Reply::Window(spec) => {
                    match Window::from_spec(ITEM, &spec).and_then(|w| w.bounds_at(now)) {
                        Ok(bounds) => {
                            windows.insert(item.budget, (spec, bounds));
                            true
                        }
                        Err(e) => {
                            answers[i] = Some(Err(e));
                            false
                        }
                    }
                }
                Reply::NoScript => {
                    lost_script = true;
                    true
                }
            };
            if repeat {
                first_repeat.entry(item.budget).or_insert(i);
            }
        }
        pending.retain(|&i| {
            let Some(&first) = first_repeat.get(items[i].budget) else {
                return false;
            };
            // Before the budget's first repeat: answered. A new application after it: kept
            // (repeating would apply it twice). Anything else from it on: repeated.
            let applied = matches!(&answers[i], Some(Ok(receipt)) if !receipt.replayed);
            if i < first || (i > first && applied) {
                return false;
            }
            answers[i] = None;
            true
        });
    }
    for &i in &pending {
        answers[i] = Some(Err(if lost_script {
            Error::unavailable(format!(
                "{ITEM}: the server kept losing its scripts (NOSCRIPT {MAX_WINDOW_CALLS} times)"
            ))
        } else {
            window_kept_changing(ITEM, items[i].budget)
        }));
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| Error::unavailable(format!("{OUTER}: an item got no answer")))
        })
        .collect()
}

/// One item's reply decoded as a single `report_usage`'s.
fn classify(item: &BatchItem<'_>, reply: RedisResult<RedisValue>) -> Reply {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.kind() == redis::ErrorKind::NoScriptError => return Reply::NoScript,
        Err(e) => return Reply::Answer(Err(error::map(ITEM, e))),
    };
    let (status, blob) = match <(String, String)>::from_redis_value(&reply) {
        Ok(fields) => fields,
        Err(e) => return Reply::Answer(Err(error::map(ITEM, e))),
    };
    if status == "window" {
        return Reply::Window(blob);
    }
    Reply::Answer(
        report_reply(ITEM, status, &blob).and_then(|reply| {
            reply.into_receipt(ITEM, item.budget, item.report.dedup_key.as_deref())
        }),
    )
}

/// Sends `calls` and answers their replies in the same order: one pipeline on a standalone
/// server; on a cluster one per slot, concurrently, each led by a `SCRIPT LOAD` of the script.
async fn send(
    conn: &Connection,
    scripts: &Scripts,
    calls: Vec<(Vec<String>, Vec<String>)>,
) -> Result<Vec<RedisResult<RedisValue>>> {
    let limit = batch_timeout(conn.timeout(), calls.len());
    if !conn.is_cluster() {
        let mut pipe = Pipeline::with_capacity(calls.len());
        let count = calls.len();
        for call in calls {
            pipe.invoke_script(&scripts.report_invocation(call));
        }
        let replies = conn.pipeline(OUTER, &pipe, 0, count, limit).await?;
        return answered(replies, count);
    }
    // Slot → the positions (in `calls`) of its items, in order, and its pipeline.
    let mut slots: HashMap<u16, (Vec<usize>, Pipeline)> = HashMap::new();
    for (position, call) in calls.into_iter().enumerate() {
        let slot = call.0.first().map(|k| slot_of(k.as_bytes())).unwrap_or(0);
        let (positions, pipe) = slots.entry(slot).or_insert_with(|| {
            let mut pipe = Pipeline::new();
            pipe.load_script(scripts.report_script());
            (Vec::new(), pipe)
        });
        positions.push(position);
        pipe.invoke_script(&scripts.report_invocation(call));
    }
    let total: usize = slots.values().map(|(positions, _)| positions.len()).sum();
    let sent = slots.values().map(|(positions, pipe)| async move {
        let replies = conn
            .pipeline(OUTER, pipe, 1, positions.len(), limit)
            .await
            .map_err(outcome_unknown)?;
        answered(replies, positions.len()).map(|replies| (positions, replies))
    });
    let mut out: Vec<Option<RedisResult<RedisValue>>> = (0..total).map(|_| None).collect();
    for (positions, replies) in futures_util::future::try_join_all(sent).await? {
        for (&position, reply) in positions.iter().zip(replies) {
            out[position] = Some(reply);
        }
    }
    out.into_iter()
        .map(|reply| {
            reply.ok_or_else(|| Error::unavailable(format!("{OUTER}: a reply is missing")))
        })
        .collect()
}

/// A cluster pipeline's error: its items' outcomes are unknown (the driver keeps only the first
/// error of a pipeline's replies, and items before and after it ran), so the batch's outer
/// `Unavailable`.
fn outcome_unknown(error: Error) -> Error {
    if error.kind() == ErrorKind::Unavailable {
        return error;
    }
    Error::unavailable(format!(
        "{OUTER}: a slot's pipeline answered an error ({error}); the outcomes of its items are unknown"
    ))
    .with_source(error)
}

/// `replies`, checked to be one per call sent.
fn answered(
    replies: Vec<RedisResult<RedisValue>>,
    count: usize,
) -> Result<Vec<RedisResult<RedisValue>>> {
    if replies.len() != count {
        return Err(Error::unavailable(format!(
            "{OUTER}: {} replies to {count} calls",
            replies.len()
        )));
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_grows_with_every_started_thousand_items() {
        let op = Duration::from_millis(500);
        assert_eq!(batch_timeout(op, 0), op);
        assert_eq!(batch_timeout(op, 1), op);
        assert_eq!(batch_timeout(op, TIMEOUT_ITEMS), op);
        assert_eq!(batch_timeout(op, TIMEOUT_ITEMS + 1), op * 2);
        assert_eq!(batch_timeout(op, 10_000), op * 10);
    }
}
