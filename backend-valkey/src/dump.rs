//! Dumps (SEMANTICS §4.5) on Valkey: pages of a section in canonical order, the verbatim load
//! of an import's batches, and whether a namespace holds anything.
//!
//! **Budget sections** (policies, counters, reservations, dedup records) have no index: their
//! keys are found by `SCAN MATCH` (on every primary of a cluster), whose order is arbitrary. The
//! first page of such a section therefore builds, on the server, a temporary sorted set (scores
//! 0, ordered by bytes) of the section's members: the budget, or budget, NUL and reservation id
//! (or dedup key) — names never contain NUL, so byte order of members is the canonical order of
//! (budget, id). Every page then reads the next [`PAGE_ITEMS`] members by `ZRANGEBYLEX` and the
//! items they name, pipelined (per slot on a cluster). The page token is the temporary key, a
//! newline and the last member; the section's last page deletes the key. The key is of kind `t`
//! in the namespace's key space (`purge` removes it; [`is_empty`] ignores it) with a random
//! suffix (exports running at once never share one) and expires an hour after the page that
//! last touched it, so an abandoned export leaves nothing for long. The client never holds more
//! than one `SCAN` batch or one page.
//!
//! **Records**: the name index gives names in byte order; a record's rows are its sorted set in
//! member order, that is (`stored_at`, store order). The token is the last row's position (its
//! first 32 hex digits: time and store order) followed by the record's name.
//!
//! **Load** writes each batch in one pipeline (one per slot on a cluster, sent concurrently),
//! keys as the scripts write them: policy and counter hashes, stored windows, the reservation
//! records with their forget order, the holds still holding at the import's clock reading in
//! `held` with their amounts summed into `pending` (as a sweep at that reading leaves them),
//! dedup strings (with a server-side expiry as `report_usage.lua` sets it, from the time left),
//! and record rows as `store.lua` writes them, numbered in dump order from each record's sequence
//! counter (one `INCRBY` per record and batch, one round trip before the batch's pipelines), so
//! store order, the counter and the idempotency hash are what stores in that order make; the
//! names listed in the name index.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use futures_util::{StreamExt, TryStreamExt};
use redis::{Cmd, FromRedisValue, Pipeline, Value as RedisValue};
use stowage_core::dump::{
    CountersItem, DedupItem, DumpItem, DumpPage, PolicyItem, RecordItem, ReservationItem, Section,
    PAGE_ITEMS,
};
use stowage_core::raw::{show, StoredWindow, FINGERPRINT_LEN};
use stowage_core::{
    Breach, Error, Reservation, ReservationState, Result, UsageOutcome, WindowBounds,
};

use crate::batch::batch_timeout;
use crate::budget::{breaches, decode_policy, parse_decimal, NO_WINDOW};
use crate::connection::Connection;
use crate::error;
use crate::keys::{
    budget_keys, dedup_key, kind_of, kind_pattern, name_index, names_of, namespace_pattern,
    record_keys, slot_of, temp_key,
};
use crate::reservations::decode_reservation;
use crate::rows::{encode_row, split_row};
use crate::scripts::{DEDUP_GC_MARGIN_MS, MAX_DEDUP_GC_MS};

/// How long a temporary sorted set outlives the page that last touched it.
const TEMP_TTL_MS: u64 = 3_600_000;
/// Record names read from the name index at once.
const NAMES_AT_ONCE: usize = 256;
/// Pipelines (one per slot) in flight at once on a cluster.
const PARALLEL_SLOTS: usize = 64;
/// Members added to a temporary sorted set per `ZADD`.
const ZADD_AT_ONCE: usize = 1_000;

/// The handle's parts a dump needs; `namespace` is the namespace's id, as keys spell it.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) namespace: &'a str,
}

/// One page of `section` after `after` (see the module's documentation).
pub(crate) async fn dump_page(
    ctx: Ctx<'_>,
    section: Section,
    after: Option<&str>,
) -> Result<DumpPage> {
    match section {
        Section::Records => records_page(ctx, after).await,
        _ => sorted_page(ctx, section, after).await,
    }
}

/// Whether the namespace holds no key (its export's temporary keys aside).
pub(crate) async fn is_empty(conn: &Connection, namespace: &str) -> Result<bool> {
    let op = "import";
    let mut scan = conn.scan(op, &namespace_pattern(namespace)).await?;
    while let Some(keys) = scan.next(op).await? {
        if keys.iter().any(|key| kind_of(key) != Some(b't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

const OP: &str = "export";

fn internal(message: String) -> Error {
    Error::internal(format!("{OP}: {message}"))
}

fn corrupt(message: String) -> Error {
    Error::corruption(format!("{OP}: {message}"))
}

/// A random suffix for a temporary key (the standard library's random hash keys).
fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}

/// The kinds of key a budget section is found by.
fn kinds(section: Section) -> &'static str {
    match section {
        Section::Policies => "p",
        Section::Counters => "cw",
        Section::Reservations => "v",
        _ => "d",
    }
}

/// A page of a budget section: the temporary sorted set built on the first page, read from the
/// token's member on.
async fn sorted_page(ctx: Ctx<'_>, section: Section, after: Option<&str>) -> Result<DumpPage> {
    let conn = ctx.conn;
    let (temp, min) = match after {
        None => {
            let temp = temp_key(ctx.namespace, &random_suffix());
            build(ctx, section, &temp).await?;
            (temp, "-".to_owned())
        }
        Some(token) => {
            let (temp, last) = token.split_once('\n').ok_or_else(|| {
                internal(format!("page token {} is not this engine's", show(token)))
            })?;
            // A page that handed out a token had a full page of members: the key still exists
            // unless it expired (the export paused for an hour) or the namespace was purged.
            let kept: i64 = conn
                .run(OP, redis::cmd("PEXPIRE").arg(temp).arg(TEMP_TTL_MS))
                .await?;
            if kept == 0 {
                return Err(Error::unavailable(format!(
                    "{OP}: the {} section's temporary index is gone (expired after an hour \
                     without a page, or purged); export again",
                    section.name()
                )));
            }
            (temp.to_owned(), format!("({last}"))
        }
    };
    let members: Vec<String> = conn
        .run(
            OP,
            redis::cmd("ZRANGEBYLEX")
                .arg(&temp)
                .arg(&min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE_ITEMS),
        )
        .await?;
    let items = items_of(ctx, section, &members).await?;
    let next = if members.len() < PAGE_ITEMS {
        let _: i64 = conn.run(OP, redis::cmd("DEL").arg(&temp)).await?;
        None
    } else {
        members.last().map(|last| format!("{temp}\n{last}"))
    };
    Ok(DumpPage { items, next })
}

/// Fills the temporary sorted set `temp` with the members of `section`.
async fn build(ctx: Ctx<'_>, section: Section, temp: &str) -> Result<()> {
    let conn = ctx.conn;
    let mut scan = conn
        .scan(OP, &kind_pattern(ctx.namespace, kinds(section)))
        .await?;
    while let Some(keys) = scan.next(OP).await? {
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            let names = names_of(&key)
                .filter(|names| names.first().map(String::as_str) == Some(ctx.namespace))
                .ok_or_else(|| {
                    corrupt(format!(
                        "key {} cannot be decoded",
                        show(&String::from_utf8_lossy(&key))
                    ))
                })?;
            match (section, names.as_slice()) {
                (Section::Dedup, [_, budget, key]) => members.push(format!("{budget}\0{key}")),
                (Section::Reservations, [_, budget]) => {
                    reservation_ids(ctx, temp, &key, budget).await?;
                }
                (_, [_, budget]) => members.push(budget.clone()),
                _ => {
                    return Err(corrupt(format!(
                        "key {} has {} names",
                        show(&String::from_utf8_lossy(&key)),
                        names.len()
                    )))
                }
            }
        }
        add_members(conn, temp, &members).await?;
    }
    Ok(())
}

/// Adds `budget\0id` for every id of the reservations hash `key` to `temp`, by `HSCAN`.
async fn reservation_ids(ctx: Ctx<'_>, temp: &str, key: &[u8], budget: &str) -> Result<()> {
    let mut cursor = "0".to_owned();
    loop {
        let (next, fields): (String, Vec<String>) = ctx
            .conn
            .run(
                OP,
                redis::cmd("HSCAN")
                    .arg(key)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(ZADD_AT_ONCE),
            )
            .await?;
        let members: Vec<String> = fields
            .iter()
            .step_by(2)
            .map(|id| format!("{budget}\0{id}"))
            .collect();
        add_members(ctx.conn, temp, &members).await?;
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// `ZADD`s `members` (scores 0) to `temp` and sets its expiry.
async fn add_members(conn: &Connection, temp: &str, members: &[String]) -> Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    for chunk in members.chunks(ZADD_AT_ONCE) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(temp);
        for member in chunk {
            cmd.arg(0).arg(member);
        }
        let _: i64 = conn.run(OP, &cmd).await?;
    }
    let _: i64 = conn
        .run(OP, redis::cmd("PEXPIRE").arg(temp).arg(TEMP_TTL_MS))
        .await?;
    Ok(())
}

/// The items `members` of a budget section name, read in one pipeline (one per slot on a
/// cluster); a member whose keys vanished meanwhile gives no item.
async fn items_of(ctx: Ctx<'_>, section: Section, members: &[String]) -> Result<Vec<DumpItem>> {
    let ns = ctx.namespace;
    let mut cmds = Vec::new();
    for member in members {
        match section {
            Section::Policies => {
                let key = budget_keys(ns, member).policy;
                cmds.push(command(key, |c, k| {
                    c.arg("HGETALL").arg(k);
                }));
            }
            Section::Counters => {
                let keys = budget_keys(ns, member);
                cmds.push(command(keys.counters, |c, k| {
                    c.arg("HGETALL").arg(k);
                }));
                cmds.push(command(keys.window, |c, k| {
                    c.arg("HMGET").arg(k).arg("spec").arg("start").arg("end");
                }));
            }
            Section::Reservations => {
                let (budget, id) = split(member);
                cmds.push(command(budget_keys(ns, budget).reservations, |c, k| {
                    c.arg("HGET").arg(k).arg(id);
                }));
            }
            _ => {
                let (budget, key) = split(member);
                cmds.push(command(dedup_key(ns, budget, key), |c, k| {
                    c.arg("GET").arg(k);
                }));
            }
        }
    }
    let replies = fetch(ctx.conn, OP, cmds).await?;
    let mut items = Vec::with_capacity(members.len());
    match section {
        Section::Policies => {
            for (budget, reply) in members.iter().zip(&replies) {
                let fields: Vec<(String, String)> = decode(reply)?;
                if !fields.is_empty() {
                    let policy = decode_policy(OP, fields)?;
                    items.push(DumpItem::Policy(PolicyItem::new(budget.clone(), policy)));
                }
            }
        }
        Section::Counters => {
            for (budget, pair) in members.iter().zip(replies.chunks(2)) {
                let [counters, window] = pair else {
                    return Err(internal("a reply is missing".to_owned()));
                };
                let counters: Vec<(String, String)> = decode(counters)?;
                let window: Vec<Option<String>> = decode(window)?;
                let window = match window.as_slice() {
                    [Some(spec), Some(start), Some(end)] => Some(StoredWindow {
                        spec: spec.clone(),
                        bounds: WindowBounds {
                            start_ms: parse_decimal(OP, "window start", start)?,
                            end_ms: parse_decimal(OP, "window end", end)?,
                        },
                    }),
                    _ => None,
                };
                let mut values = BTreeMap::new();
                for (dimension, value) in counters {
                    let value = parse_decimal(OP, "counter", &value)?;
                    values.insert(dimension, value);
                }
                if window.is_some() || !values.is_empty() {
                    items.push(DumpItem::Counters(CountersItem {
                        budget: budget.clone(),
                        window,
                        values,
                    }));
                }
            }
        }
        Section::Reservations => {
            for (member, reply) in members.iter().zip(&replies) {
                let (budget, id) = split(member);
                let text: Option<String> = decode(reply)?;
                if let Some(text) = text {
                    let reservation = decode_reservation(OP, id, &text)?;
                    items.push(DumpItem::Reservation(ReservationItem::new(
                        budget,
                        reservation,
                    )));
                }
            }
        }
        _ => {
            for (member, reply) in members.iter().zip(&replies) {
                let (budget, key) = split(member);
                let text: Option<String> = decode(reply)?;
                if let Some(text) = text {
                    items.push(DumpItem::Dedup(decode_dedup(budget, key, &text)?));
                }
            }
        }
    }
    Ok(items)
}

/// A dedup record as `report_usage.lua` writes it: the fingerprint digest, the status's first
/// letter, the expiry, then (with breaches) NUL and the breaches.
fn decode_dedup(budget: &str, key: &str, text: &str) -> Result<DedupItem> {
    let bad = || {
        corrupt(format!(
            "the dedup record of budget {} under key {} cannot be decoded",
            show(budget),
            show(key)
        ))
    };
    let fingerprint = text.get(..FINGERPRINT_LEN).ok_or_else(bad)?;
    let letter = text
        .get(FINGERPRINT_LEN..=FINGERPRINT_LEN)
        .ok_or_else(bad)?;
    let rest = text.get(FINGERPRINT_LEN + 1..).ok_or_else(bad)?;
    let (expiry, blob) = rest.split_once('\0').unwrap_or((rest, ""));
    let expires_at = parse_decimal(OP, "dedup expiry", expiry)?;
    let breaches = breaches(OP, blob)?;
    let outcome = match letter {
        "o" if breaches.is_empty() => UsageOutcome::Ok,
        "s" => UsageOutcome::SoftBreach(breaches),
        "h" => UsageOutcome::HardBreach(breaches),
        _ => return Err(bad()),
    };
    Ok(DedupItem {
        budget: budget.to_owned(),
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        outcome,
        expires_at,
    })
}

/// A member of the reservations or dedup section: budget, then id or key.
fn split(member: &str) -> (&str, &str) {
    member.split_once('\0').unwrap_or((member, ""))
}

/// A reply as `T`; a reply of another shape is `Corruption`.
fn decode<T: FromRedisValue>(value: &RedisValue) -> Result<T> {
    redis::from_redis_value(value).map_err(|e| error::map(OP, e))
}

/// A dedup record as `report_usage.lua` writes it (see [`decode_dedup`]).
fn encode_dedup(d: &DedupItem) -> String {
    let (letter, breaches, hard) = match &d.outcome {
        UsageOutcome::Ok => ('o', &[][..], false),
        UsageOutcome::SoftBreach(b) => ('s', b.as_slice(), false),
        UsageOutcome::HardBreach(b) => ('h', b.as_slice(), true),
    };
    let mut value = format!("{}{letter}{}", d.fingerprint, d.expires_at);
    if !breaches.is_empty() {
        value.push('\0');
        value.push_str(&encode_breaches(breaches, hard, true));
    }
    value
}

/// A command and the key that places it (its slot).
struct Keyed {
    key: String,
    cmd: Cmd,
}

fn command(key: String, build: impl FnOnce(&mut Cmd, &str)) -> Keyed {
    let mut cmd = Cmd::new();
    build(&mut cmd, &key);
    Keyed { key, cmd }
}

/// Runs `cmds` and answers their replies in order: one pipeline on a standalone server, one per
/// slot on a cluster (at most [`PARALLEL_SLOTS`] at once). A server error is the answer.
async fn fetch(conn: &Connection, op: &str, cmds: Vec<Keyed>) -> Result<Vec<RedisValue>> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    let limit = batch_timeout(conn.timeout(), cmds.len());
    let total = cmds.len();
    let mut slots: BTreeMap<u16, (Vec<usize>, Pipeline)> = BTreeMap::new();
    for (position, keyed) in cmds.into_iter().enumerate() {
        let slot = if conn.is_cluster() {
            slot_of(keyed.key.as_bytes())
        } else {
            0
        };
        let (positions, pipe) = slots
            .entry(slot)
            .or_insert_with(|| (Vec::new(), Pipeline::new()));
        positions.push(position);
        pipe.add_command(keyed.cmd);
    }
    let replies = futures_util::stream::iter(slots.into_values())
        .map(|(positions, pipe)| async move {
            let replies = conn.pipeline(op, &pipe, 0, positions.len(), limit).await?;
            if replies.len() != positions.len() {
                return Err(Error::unavailable(format!(
                    "{op}: {} replies to {} commands",
                    replies.len(),
                    positions.len()
                )));
            }
            let replies = replies
                .into_iter()
                .map(|reply| reply.map_err(|e| error::map(op, e)))
                .collect::<Result<Vec<_>>>()?;
            Ok::<_, Error>((positions, replies))
        })
        .buffer_unordered(PARALLEL_SLOTS)
        .try_collect::<Vec<_>>()
        .await?;
    let mut out: Vec<Option<RedisValue>> = (0..total).map(|_| None).collect();
    for (positions, replies) in replies {
        for (position, reply) in positions.into_iter().zip(replies) {
            out[position] = Some(reply);
        }
    }
    out.into_iter()
        .map(|reply| reply.ok_or_else(|| Error::unavailable(format!("{op}: a reply is missing"))))
        .collect()
}

/// The first 32 hex digits of a row member (time and store order) → the `ZRANGEBYLEX` minimum
/// of the rows after it.
fn after_position(position: &str) -> Option<String> {
    let time = position.get(..16)?;
    let seq = u64::from_str_radix(position.get(16..32)?, 16).ok()?;
    u64::from_str_radix(time, 16).ok()?;
    Some(format!("[{time}{:016x}", seq.checked_add(1)?))
}

/// A page of records: names from the index in order, each record's rows in member order. The
/// rows each record has (`ZLEXCOUNT`, pipelined) decide how many of them the page reads
/// (`ZRANGEBYLEX … LIMIT`, pipelined), so no more rows than the page holds are ever read.
async fn records_page(ctx: Ctx<'_>, after: Option<&str>) -> Result<DumpPage> {
    let conn = ctx.conn;
    let index = name_index(ctx.namespace);
    // The record to read first and where its rows start (the token's, or where a short read
    // stopped); then the names after it (or after `after_name`) in the index.
    let mut from: Option<(String, String)> = match after {
        None => None,
        Some(token) => {
            let min = token.get(..32).and_then(after_position).ok_or_else(|| {
                internal(format!("page token {} is not this engine's", show(token)))
            })?;
            Some((token[32..].to_owned(), min))
        }
    };
    let mut after_name: Option<String> = None;
    let mut items = Vec::new();
    // The position (first 32 hex digits) and record of the last row read.
    let mut last: Option<(String, String)> = None;
    loop {
        let mut names: Vec<(String, String)> = from.take().into_iter().collect();
        let min = match names.first().map(|(name, _)| name).or(after_name.as_ref()) {
            Some(name) => format!("({name}"),
            None => "-".to_owned(),
        };
        let more: Vec<String> = conn
            .run(
                OP,
                redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(&min)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(NAMES_AT_ONCE),
            )
            .await?;
        let index_done = more.len() < NAMES_AT_ONCE;
        names.extend(more.into_iter().map(|name| (name, "-".to_owned())));
        if names.is_empty() {
            return Ok(DumpPage { items, next: None });
        }
        let rows_key = |name: &str| record_keys(ctx.namespace, name).rows;
        let counts = fetch(
            conn,
            OP,
            names
                .iter()
                .map(|(name, min)| {
                    command(rows_key(name), |c, k| {
                        c.arg("ZLEXCOUNT").arg(k).arg(min).arg("+");
                    })
                })
                .collect(),
        )
        .await?;
        let mut wanted = PAGE_ITEMS - items.len();
        let mut considered = 0;
        let mut reads = Vec::new();
        let mut read_names = Vec::new();
        for ((name, min), count) in names.iter().zip(&counts) {
            if wanted == 0 {
                break;
            }
            considered += 1;
            let count: usize = decode(count)?;
            let take = count.min(wanted);
            wanted -= take;
            if take > 0 {
                reads.push(command(rows_key(name), |c, k| {
                    c.arg("ZRANGEBYLEX")
                        .arg(k)
                        .arg(min)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(take);
                }));
                read_names.push(name);
            }
        }
        let replies = fetch(conn, OP, reads).await?;
        for (name, reply) in read_names.into_iter().zip(&replies) {
            let members: Vec<Vec<u8>> = decode(reply)?;
            for member in &members {
                let (stored_at, key, value) = split_row(OP, name, member)?;
                items.push(DumpItem::Record(RecordItem {
                    name: name.clone(),
                    stored_at,
                    idempotency_key: (!key.is_empty()).then(|| key.to_owned()),
                    value: value.to_owned(),
                }));
                let position = String::from_utf8_lossy(&member[..32]).into_owned();
                last = Some((position, name.clone()));
            }
        }
        if items.len() >= PAGE_ITEMS {
            let (position, name) =
                last.ok_or_else(|| internal("a full page without rows".into()))?;
            return Ok(DumpPage {
                items,
                next: Some(format!("{position}{name}")),
            });
        }
        if wanted == 0 {
            // A read came back shorter than counted (rows deleted meanwhile): go on from the
            // last record considered, after its last row read.
            let (name, min) = &names[considered - 1];
            let min = match &last {
                Some((position, last_name)) if last_name == name => {
                    after_position(position).unwrap_or_else(|| min.clone())
                }
                _ => min.clone(),
            };
            from = Some((name.clone(), min));
            continue;
        }
        if index_done {
            return Ok(DumpPage { items, next: None });
        }
        after_name = names.last().map(|(name, _)| name.clone());
    }
}

/// A time as 19 digits (`pad` of `holds.lua`).
fn pad(t: u64) -> String {
    format!("{t:019}")
}

/// Breaches as the scripts write them: dimension, usage, limit, crossed, followed by `+` and the
/// pending amount for hard breaches (`hard`) or a pending amount other than 0; each group ended
/// by NUL when `terminated` (dedup records), else groups joined by NUL (reservation records).
fn encode_breaches(breaches: &[Breach], hard: bool, terminated: bool) -> String {
    let groups: Vec<String> = breaches
        .iter()
        .map(|b| {
            let mut group = format!(
                "{}\0{}\0{}\0{}",
                b.dimension,
                b.usage,
                b.limit,
                if b.crossed { "1" } else { "0" }
            );
            if hard || b.pending != 0 {
                group.push('+');
                group.push_str(&b.pending.to_string());
            }
            group
        })
        .collect();
    if terminated {
        groups.iter().map(|g| format!("{g}\0")).collect()
    } else {
        groups.join("\0")
    }
}

/// `n, d1, a1, …` of `lib.lua`'s `encode`.
fn encode_dimensions(dimensions: &BTreeMap<String, u64>) -> String {
    let mut parts = vec![dimensions.len().to_string()];
    for (dimension, amount) in dimensions {
        parts.push(dimension.clone());
        parts.push(amount.to_string());
    }
    parts.join("\0")
}

/// A reservation record as `lib.lua` writes it (see `holds.lua`).
pub(crate) fn encode_reservation(r: &Reservation) -> Result<String> {
    let mut text = format!(
        "{}\0{}\0{}\0{}\0",
        r.ttl_ms,
        encode_dimensions(&r.dimensions),
        r.expires_at,
        r.remember_ms
    );
    match &r.state {
        ReservationState::Held => text.push_str("held"),
        ReservationState::Released { at } => text.push_str(&format!("released\0{at}")),
        ReservationState::Refused { at, breaches } => {
            text.push_str(&format!("refused\0{at}"));
            if !breaches.is_empty() {
                text.push('\0');
                text.push_str(&encode_breaches(breaches, true, false));
            }
        }
        ReservationState::Committed {
            at,
            actual,
            outcome,
        } => {
            text.push_str(&format!("committed\0{at}\0{}\0", encode_dimensions(actual)));
            match outcome {
                UsageOutcome::Ok => text.push_str("ok"),
                UsageOutcome::SoftBreach(breaches) => {
                    text.push_str("soft");
                    if !breaches.is_empty() {
                        text.push('\0');
                        text.push_str(&encode_breaches(breaches, false, false));
                    }
                }
                UsageOutcome::HardBreach(_) => {
                    return Err(Error::invalid_input(format!(
                        "import: reservation {} is committed with a hard breach",
                        show(&r.id)
                    )))
                }
            }
        }
    }
    Ok(text)
}

/// Writes `items` (see the module's documentation); `now` is the import's clock reading.
pub(crate) async fn load(ctx: Ctx<'_>, items: &[DumpItem], now: u64) -> Result<()> {
    let op = "import";
    let ns = ctx.namespace;
    let mut writes: Vec<Keyed> = Vec::new();
    fn push(writes: &mut Vec<Keyed>, key: String, build: impl FnOnce(&mut Cmd, &str)) {
        writes.push(command(key, build));
    }
    // The batch's record rows, by record, in dump order.
    let mut records: Vec<(&str, Vec<&RecordItem>)> = Vec::new();
    for item in items {
        match item {
            DumpItem::Policy(p) => {
                let spec = p.window.as_ref().map_or(NO_WINDOW.to_owned(), |w| w.spec());
                push(&mut writes, budget_keys(ns, &p.budget).policy, |c, k| {
                    c.arg("HSET").arg(k).arg("").arg(&spec);
                    for (dimension, limit) in &p.limits {
                        let text = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
                        c.arg(dimension)
                            .arg(format!("{},{}", text(limit.soft), text(limit.hard)));
                    }
                });
            }
            DumpItem::Counters(counters) => {
                let keys = budget_keys(ns, &counters.budget);
                if !counters.values.is_empty() {
                    push(&mut writes, keys.counters, |c, k| {
                        c.arg("HSET").arg(k);
                        for (dimension, value) in &counters.values {
                            c.arg(dimension).arg(value.to_string());
                        }
                    });
                }
                if let Some(window) = &counters.window {
                    push(&mut writes, keys.window, |c, k| {
                        c.arg("HSET")
                            .arg(k)
                            .arg("spec")
                            .arg(&window.spec)
                            .arg("start")
                            .arg(window.bounds.start_ms.to_string())
                            .arg("end")
                            .arg(window.bounds.end_ms.to_string());
                    });
                }
            }
            DumpItem::Reservation(item) => {
                let keys = budget_keys(ns, &item.budget);
                let reservation = item.reservation();
                let text = encode_reservation(&reservation)?;
                push(&mut writes, keys.reservations.clone(), |c, k| {
                    c.arg("HSET").arg(k).arg(&item.id).arg(&text);
                });
                let forget = format!("{}{}", pad(reservation.forget_at()), item.id);
                push(&mut writes, keys.forget.clone(), |c, k| {
                    c.arg("ZADD").arg(k).arg(0).arg(&forget);
                });
                if reservation.is_holding(now) {
                    let held = format!("{}{}", pad(item.expires_at), item.id);
                    push(&mut writes, keys.held.clone(), |c, k| {
                        c.arg("ZADD").arg(k).arg(0).arg(&held);
                    });
                    for (dimension, amount) in item.dimensions.iter().filter(|(_, a)| **a > 0) {
                        push(&mut writes, keys.pending.clone(), |c, k| {
                            c.arg("HINCRBY")
                                .arg(k)
                                .arg(dimension)
                                .arg(amount.to_string());
                        });
                    }
                }
            }
            DumpItem::Dedup(d) => {
                let value = encode_dedup(d);
                // As report_usage.lua: twice the time the record has left, and a margin.
                let gc_ms = d
                    .expires_at
                    .saturating_sub(now)
                    .saturating_mul(2)
                    .saturating_add(DEDUP_GC_MARGIN_MS)
                    .min(MAX_DEDUP_GC_MS);
                push(&mut writes, dedup_key(ns, &d.budget, &d.key), |c, k| {
                    c.arg("SET").arg(k).arg(&value).arg("PX").arg(gc_ms);
                });
            }
            DumpItem::Record(r) => match records.last_mut() {
                Some((name, rows)) if *name == r.name => rows.push(r),
                _ => records.push((&r.name, vec![r])),
            },
        }
    }
    if !records.is_empty() {
        // Store order continues each record's sequence counter (a record may span batches): one
        // INCRBY per record reserves its rows' numbers, as store.lua's INCR would one by one.
        let reserved = fetch(
            ctx.conn,
            op,
            records
                .iter()
                .map(|(name, rows)| {
                    command(record_keys(ns, name).seq, |c, k| {
                        c.arg("INCRBY").arg(k).arg(rows.len());
                    })
                })
                .collect(),
        )
        .await?;
        // Listed in the name index, rows as store.lua writes them: member in the rows, member
        // under its idempotency key.
        push(&mut writes, name_index(ns), |c, k| {
            c.arg("ZADD").arg(k);
            for (name, _) in &records {
                c.arg(0).arg(*name);
            }
        });
        for ((name, rows), last) in records.iter().zip(&reserved) {
            let last: u64 = decode(last)?;
            let count = u64::try_from(rows.len()).unwrap_or(u64::MAX);
            let first = last
                .checked_sub(count)
                .ok_or_else(|| Error::internal(format!("{op}: a sequence counter went back")))?;
            let members: Vec<(String, Option<&str>)> = rows
                .iter()
                .zip(first + 1..)
                .map(|(row, seq)| {
                    let key = row.idempotency_key.as_deref();
                    let member = encode_row(row.stored_at, seq, key.unwrap_or(""), &row.value);
                    (member, key)
                })
                .collect();
            let keys = record_keys(ns, name);
            push(&mut writes, keys.rows, |c, k| {
                c.arg("ZADD").arg(k);
                for (member, _) in &members {
                    c.arg(0).arg(member);
                }
            });
            if members.iter().any(|(_, key)| key.is_some()) {
                push(&mut writes, keys.idempotency, |c, k| {
                    c.arg("HSET").arg(k);
                    for (member, key) in &members {
                        if let Some(key) = key {
                            c.arg(*key).arg(member);
                        }
                    }
                });
            }
        }
    }
    fetch(ctx.conn, op, writes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::ErrorKind;

    fn breach(dimension: &str, usage: u64, crossed: bool, pending: u64) -> Breach {
        Breach {
            dimension: dimension.to_owned(),
            usage,
            limit: 3,
            crossed,
            pending,
        }
    }

    #[test]
    fn reservations_encode_as_the_scripts_write_them_and_decode_back() {
        let base = Reservation {
            id: "r".to_owned(),
            dimensions: BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 0)]),
            ttl_ms: 100,
            expires_at: 150,
            remember_ms: 7,
            state: ReservationState::Held,
        };
        // What lib.lua writes for a hold (the decoder's own test spells the same text).
        assert_eq!(
            encode_reservation(&base).unwrap(),
            "100\u{0}2\u{0}a\u{0}1\u{0}b\u{0}0\u{0}150\u{0}7\u{0}held"
        );
        let states = [
            ReservationState::Held,
            ReservationState::Released { at: 120 },
            ReservationState::Refused {
                at: 9,
                breaches: vec![breach("a", 2, false, 8), breach("b", 0, true, 0)],
            },
            ReservationState::Committed {
                at: 6,
                actual: BTreeMap::from([("a".to_owned(), 1)]),
                outcome: UsageOutcome::Ok,
            },
            ReservationState::Committed {
                at: 6,
                actual: BTreeMap::new(),
                outcome: UsageOutcome::SoftBreach(vec![breach("a", 4, true, 0)]),
            },
        ];
        for state in states {
            let r = Reservation {
                state,
                ..base.clone()
            };
            let text = encode_reservation(&r).unwrap();
            assert_eq!(decode_reservation("op", "r", &text).unwrap(), r, "{text:?}");
        }
        let hard = Reservation {
            state: ReservationState::Committed {
                at: 6,
                actual: BTreeMap::new(),
                outcome: UsageOutcome::HardBreach(vec![]),
            },
            ..base
        };
        assert_eq!(
            encode_reservation(&hard).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn dedup_records_encode_as_report_usage_writes_them_and_decode_back() {
        let fingerprint = "A".repeat(FINGERPRINT_LEN);
        let item = |outcome| DedupItem {
            budget: "b".to_owned(),
            key: "k".to_owned(),
            fingerprint: fingerprint.clone(),
            outcome,
            expires_at: 9_007_199_254_740_993,
        };
        let soft = item(UsageOutcome::SoftBreach(vec![breach("t", 5, true, 0)]));
        assert_eq!(
            encode_dedup(&soft),
            format!("{fingerprint}s9007199254740993\0t\u{0}5\u{0}3\u{0}1\u{0}")
        );
        for d in [
            item(UsageOutcome::Ok),
            soft,
            item(UsageOutcome::HardBreach(vec![
                breach("t", 5, false, 2),
                breach("u", 1, true, 0),
            ])),
        ] {
            assert_eq!(decode_dedup("b", "k", &encode_dedup(&d)).unwrap(), d);
        }
        for bad in [
            "",
            "short",
            &format!("{fingerprint}x1"),
            &format!("{fingerprint}o"),
        ] {
            assert_eq!(
                decode_dedup("b", "k", bad).unwrap_err().kind(),
                ErrorKind::Corruption,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_row_position_resumes_after_its_row() {
        let row = crate::rows::encode_row(5, 9, "k", "1");
        let next = crate::rows::encode_row(5, 10, "", "0");
        let min = after_position(&row[..32]).unwrap();
        assert!(min.starts_with('['));
        assert!(row.as_str() < &min[1..] && &min[1..] <= next.as_str());
        assert_eq!(after_position("zz"), None);
    }
}
