//! Dumps (SEMANTICS §4.5): export a namespace as JSON lines in one canonical order, import it
//! into an empty namespace of any backend, hash it into a digest, copy between two backends.
//!
//! The format is specified in `docs/dump-format.md`; this module is its one implementation. An
//! engine only reads its store page by page in canonical order ([`Access::dump_page`]) and writes
//! verbatim what it is given ([`Access::load`]); everything else lives here once: the line
//! format, the "as of the export's clock reading" filter, the order check, the validation of
//! every line of an import, the batching, the digest and the copy pipe.
//!
//! Memory: export, digest and copy hold one page (at most [`PAGE_ITEMS`] items) at a time, so a
//! namespace of any size exports in bounded memory. Import holds one batch ([`LOAD_ITEMS`]
//! items), the window spec of every windowed policy (to check the counters against), and the
//! idempotency keys of the record being read (to refuse a key given twice).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf,
};

use crate::raw::{show, validate, Access, StoredWindow};
use crate::{
    Backend, Breach, BudgetPolicy, DimensionLimit, Error, Reservation, ReservationState, Result,
    UsageOutcome, Window,
};

/// The `format` of a dump's header line.
pub const FORMAT: &str = "stowage-dump";
/// The version of the format this build writes and reads.
pub const VERSION: u64 = 1;
/// The most items an engine returns in one page of an export.
pub const PAGE_ITEMS: usize = 1000;
/// The most items an import hands an engine in one [`Access::load`].
pub const LOAD_ITEMS: usize = 1000;
/// The longest line an import reads: a record's value (at most 1 MiB) with its names and quoting.
pub const MAX_LINE_BYTES: usize = validate::MAX_VALUE_BYTES + 64 * 1024;
/// The buffer between the export and the import of [`copy`].
const PIPE_BYTES: usize = 1 << 20;
/// How often [`copy`] reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The sections of a dump, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Budget policies, by budget.
    Policies,
    /// Counters with their window, by budget.
    Counters,
    /// Holds and remembered reservations, by budget then id.
    Reservations,
    /// Live dedup records, by budget then dedup key.
    Dedup,
    /// Record rows, by name, then `stored_at`, then store order.
    Records,
}

impl Section {
    /// Every section, in dump order.
    pub const ALL: [Section; 5] = [
        Section::Policies,
        Section::Counters,
        Section::Reservations,
        Section::Dedup,
        Section::Records,
    ];

    /// The section's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Section::Policies => "policies",
            Section::Counters => "counters",
            Section::Reservations => "reservations",
            Section::Dedup => "dedup records",
            Section::Records => "records",
        }
    }
}

/// A budget's policy (line `{"policy": budget, "limits": …, "window": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyItem {
    /// The budget.
    #[serde(rename = "policy")]
    pub budget: String,
    /// Dimension → limits.
    pub limits: BTreeMap<String, DimensionLimit>,
    /// The window, or `null` for lifetime counters.
    pub window: Option<Window>,
}

impl PolicyItem {
    /// The item of `budget`'s `policy`.
    pub fn new(budget: impl Into<String>, policy: BudgetPolicy) -> Self {
        PolicyItem {
            budget: budget.into(),
            limits: policy.limits,
            window: policy.window,
        }
    }

    /// The policy.
    pub fn policy(&self) -> BudgetPolicy {
        BudgetPolicy {
            limits: self.limits.clone(),
            window: self.window.clone(),
        }
    }
}

/// A budget's counters and the window they belong to (line `{"counters": budget, …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersItem {
    /// The budget.
    #[serde(rename = "counters")]
    pub budget: String,
    /// The stored window (the policy's window spec and the bounds), or `null` when none is
    /// stored (lifetime counters, or a windowed budget whose counters predate any window).
    pub window: Option<StoredWindow>,
    /// Dimension → counter.
    pub values: BTreeMap<String, u64>,
}

/// A reservation its budget remembers (line `{"reservation": budget, "id": …, …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationItem {
    /// The budget.
    #[serde(rename = "reservation")]
    pub budget: String,
    /// The reservation's id.
    pub id: String,
    /// Dimension → amount requested.
    pub dimensions: BTreeMap<String, u64>,
    /// The TTL requested.
    pub ttl_ms: u64,
    /// When the hold stops counting.
    pub expires_at: u64,
    /// How long the id is remembered after the reservation ended.
    pub remember_ms: u64,
    /// What became of it.
    pub state: ReservationState,
}

impl ReservationItem {
    /// The item of `budget`'s `reservation`.
    pub fn new(budget: impl Into<String>, reservation: Reservation) -> Self {
        ReservationItem {
            budget: budget.into(),
            id: reservation.id,
            dimensions: reservation.dimensions,
            ttl_ms: reservation.ttl_ms,
            expires_at: reservation.expires_at,
            remember_ms: reservation.remember_ms,
            state: reservation.state,
        }
    }

    /// The reservation.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            id: self.id.clone(),
            dimensions: self.dimensions.clone(),
            ttl_ms: self.ttl_ms,
            expires_at: self.expires_at,
            remember_ms: self.remember_ms,
            state: self.state.clone(),
        }
    }
}

/// A live dedup record (line `{"dedup": budget, "key": …, …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupItem {
    /// The budget.
    #[serde(rename = "dedup")]
    pub budget: String,
    /// The dedup key.
    pub key: String,
    /// [`crate::raw::dedup_fingerprint`] of the report that wrote it.
    pub fingerprint: String,
    /// The recorded outcome, answered to a replay.
    pub outcome: UsageOutcome,
    /// `written_at + ttl` of the handle that wrote it (capped): live while `now < expires_at`.
    pub expires_at: u64,
}

/// One row of a record (line `{"record": name, "stored_at": …, "key": …, "value": …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordItem {
    /// The record's name.
    pub name: String,
    /// The timestamp given to `store`.
    pub stored_at: u64,
    /// The idempotency key of `store_idempotent`, if any.
    pub idempotency_key: Option<String>,
    /// The value serialized by `serde_json::to_string`: the exact text backends store.
    pub value: String,
}

/// One item of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpItem {
    /// A policy.
    Policy(PolicyItem),
    /// A budget's counters.
    Counters(CountersItem),
    /// A remembered reservation.
    Reservation(ReservationItem),
    /// A live dedup record.
    Dedup(DedupItem),
    /// A record row.
    Record(RecordItem),
}

/// Where an item stands in canonical order: section, first name, second name, time. Items of a
/// section are strictly increasing, except record rows of one name and time (store order).
type Place<'a> = (Section, &'a str, &'a str, u64);

impl DumpItem {
    /// The section the item belongs to.
    pub fn section(&self) -> Section {
        match self {
            DumpItem::Policy(_) => Section::Policies,
            DumpItem::Counters(_) => Section::Counters,
            DumpItem::Reservation(_) => Section::Reservations,
            DumpItem::Dedup(_) => Section::Dedup,
            DumpItem::Record(_) => Section::Records,
        }
    }

    fn place(&self) -> Place<'_> {
        match self {
            DumpItem::Policy(p) => (Section::Policies, &p.budget, "", 0),
            DumpItem::Counters(c) => (Section::Counters, &c.budget, "", 0),
            DumpItem::Reservation(r) => (Section::Reservations, &r.budget, &r.id, 0),
            DumpItem::Dedup(d) => (Section::Dedup, &d.budget, &d.key, 0),
            DumpItem::Record(r) => (Section::Records, &r.name, "", r.stored_at),
        }
    }

    /// Whether the item is part of the namespace's state as read at `now`: a dump leaves out what
    /// every operation at `now` would treat as absent (dedup records past their expiry,
    /// forgotten reservations, the counters of a passed window, an empty lifetime counter set).
    pub fn is_live(&self, now: u64) -> bool {
        match self {
            DumpItem::Policy(_) | DumpItem::Record(_) => true,
            DumpItem::Counters(c) => match &c.window {
                Some(window) => !window.bounds.has_passed(now),
                None => !c.values.is_empty(),
            },
            DumpItem::Reservation(r) => r.reservation().is_remembered(now),
            DumpItem::Dedup(d) => crate::raw::dedup_is_live(d.expires_at, now),
        }
    }

    /// Appends the item's line (without the newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let written = match self {
            DumpItem::Policy(p) => serde_json::to_writer(&mut *out, p),
            DumpItem::Counters(c) => serde_json::to_writer(&mut *out, c),
            DumpItem::Reservation(r) => serde_json::to_writer(&mut *out, r),
            DumpItem::Dedup(d) => serde_json::to_writer(&mut *out, d),
            DumpItem::Record(r) => {
                out.extend_from_slice(b"{\"record\":");
                let name = serde_json::to_writer(&mut *out, &r.name);
                out.extend_from_slice(b",\"stored_at\":");
                out.extend_from_slice(r.stored_at.to_string().as_bytes());
                let key = match &r.idempotency_key {
                    Some(key) => {
                        out.extend_from_slice(b",\"key\":");
                        serde_json::to_writer(&mut *out, key)
                    }
                    None => Ok(()),
                };
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(r.value.as_bytes());
                out.push(b'}');
                name.and(key)
            }
        };
        // Strings, integers and maps with string keys always serialize into a Vec.
        written.expect("a dump line always serializes");
    }

    /// Parses one item line; the message says what is wrong (the caller adds the line number).
    pub fn parse_line(line: &[u8]) -> std::result::Result<DumpItem, String> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("not a JSON line: {e}"))?;
        let serde_json::Value::Object(mut fields) = value else {
            return Err("not a JSON object".to_owned());
        };
        let parse = |fields| serde_json::Value::Object(fields);
        let shape = |e: serde_json::Error| e.to_string();
        if fields.contains_key("record") {
            let name = match fields.remove("record") {
                Some(serde_json::Value::String(name)) => name,
                _ => return Err("\"record\" is not a string".to_owned()),
            };
            let stored_at = fields
                .remove("stored_at")
                .ok_or("a record line has no \"stored_at\"")?;
            let stored_at = stored_at
                .as_u64()
                .ok_or("\"stored_at\" is not an integer from 0 to MAX_AMOUNT")?;
            let idempotency_key = match fields.remove("key") {
                None => None,
                Some(serde_json::Value::String(key)) => Some(key),
                Some(_) => return Err("\"key\" is not a string".to_owned()),
            };
            let value = fields
                .remove("value")
                .ok_or("a record line has no \"value\"")?;
            if let Some(unknown) = fields.keys().next() {
                return Err(format!("unknown field {} in a record line", show(unknown)));
            }
            let value = validate::value("import", &name, &value).map_err(|e| e.to_string())?;
            return Ok(DumpItem::Record(RecordItem {
                name,
                stored_at,
                idempotency_key,
                value,
            }));
        }
        if fields.contains_key("policy") {
            return serde_json::from_value(parse(fields))
                .map(DumpItem::Policy)
                .map_err(shape);
        }
        if fields.contains_key("counters") {
            return serde_json::from_value(parse(fields))
                .map(DumpItem::Counters)
                .map_err(shape);
        }
        if fields.contains_key("reservation") {
            return serde_json::from_value(parse(fields))
                .map(DumpItem::Reservation)
                .map_err(shape);
        }
        if fields.contains_key("dedup") {
            return serde_json::from_value(parse(fields))
                .map(DumpItem::Dedup)
                .map_err(shape);
        }
        if fields.contains_key("format") {
            return Err("a second header".to_owned());
        }
        if fields.contains_key("end") {
            return Err("the trailer is not the last line".to_owned());
        }
        Err("not an item: no \"policy\", \"counters\", \"reservation\", \"dedup\" or \"record\" field".to_owned())
    }

    /// Checks the item's names, amounts and shape as the operations that write them would.
    pub fn validate(&self) -> Result<()> {
        let op = "import";
        match self {
            DumpItem::Policy(p) => validate::policy(op, &p.budget, &p.policy()),
            DumpItem::Counters(c) => {
                validate::name(op, "budget", &c.budget)?;
                amounts(op, &c.values)?;
                if let Some(window) = &c.window {
                    let bounds = window.bounds;
                    validate::amount(op, "window end", bounds.end_ms)?;
                    if bounds.start_ms >= bounds.end_ms {
                        return Err(Error::invalid_input(format!(
                            "{op}: the window of budget {} starts at {} and ends at {}",
                            show(&c.budget),
                            bounds.start_ms,
                            bounds.end_ms
                        )));
                    }
                }
                Ok(())
            }
            DumpItem::Reservation(r) => {
                validate::name(op, "budget", &r.budget)?;
                validate::reserve(
                    op,
                    &r.budget,
                    &crate::ReserveRequest {
                        id: r.id.clone(),
                        dimensions: r.dimensions.clone(),
                        ttl_ms: r.ttl_ms,
                    },
                )?;
                validate::amount(op, "expires_at", r.expires_at)?;
                validate::amount(op, "remember_ms", r.remember_ms)?;
                match &r.state {
                    ReservationState::Held => Ok(()),
                    ReservationState::Released { at } => validate::amount(op, "resolved at", *at),
                    ReservationState::Refused { at, breaches } => {
                        validate::amount(op, "resolved at", *at)?;
                        self::breaches(op, breaches)
                    }
                    ReservationState::Committed {
                        at,
                        actual,
                        outcome,
                    } => {
                        validate::amount(op, "resolved at", *at)?;
                        amounts(op, actual)?;
                        if matches!(outcome, UsageOutcome::HardBreach(_)) {
                            return Err(Error::invalid_input(format!(
                                "{op}: reservation {} of budget {} is committed with a hard \
                                 breach, which no commit answers",
                                show(&r.id),
                                show(&r.budget)
                            )));
                        }
                        self::outcome(op, outcome)
                    }
                }
            }
            DumpItem::Dedup(d) => {
                validate::name(op, "budget", &d.budget)?;
                validate::name(op, "dedup key", &d.key)?;
                validate::amount(op, "expires_at", d.expires_at)?;
                if !crate::raw::is_fingerprint(&d.fingerprint) {
                    return Err(Error::invalid_input(format!(
                        "{op}: fingerprint {} is not 22 URL-safe base64 digits",
                        show(&d.fingerprint)
                    )));
                }
                outcome(op, &d.outcome)
            }
            DumpItem::Record(r) => {
                validate::name(op, "record name", &r.name)?;
                validate::amount(op, "stored_at", r.stored_at)?;
                if let Some(key) = &r.idempotency_key {
                    validate::name(op, "idempotency key", key)?;
                }
                Ok(())
            }
        }
    }
}

fn amounts(op: &str, values: &BTreeMap<String, u64>) -> Result<()> {
    for (dimension, value) in values {
        validate::name(op, "dimension name", dimension)?;
        validate::amount(
            op,
            &format!("amount of dimension {}", show(dimension)),
            *value,
        )?;
    }
    Ok(())
}

fn breaches(op: &str, breaches: &[Breach]) -> Result<()> {
    for breach in breaches {
        validate::name(op, "dimension name", &breach.dimension)?;
        validate::amount(op, "breach usage", breach.usage)?;
        validate::amount(op, "breach limit", breach.limit)?;
        validate::amount(op, "breach pending", breach.pending)?;
    }
    Ok(())
}

fn outcome(op: &str, outcome: &UsageOutcome) -> Result<()> {
    match outcome {
        UsageOutcome::Ok => Ok(()),
        UsageOutcome::SoftBreach(b) | UsageOutcome::HardBreach(b) => breaches(op, b),
    }
}

/// One page of an engine's export ([`Access::dump_page`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DumpPage {
    /// Items of the section in canonical order, at most [`PAGE_ITEMS`]. An engine may include
    /// items that are not live at the export's clock reading; they are left out of the dump.
    pub items: Vec<DumpItem>,
    /// Where the next page starts (an engine's own token, handed back as `after`); `None` when
    /// the section is done.
    pub next: Option<String>,
}

/// What an export, an import or a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpSummary {
    /// Items written or read (header and trailer not counted).
    pub items: u64,
    /// Bytes written or read, header and trailer included.
    pub bytes: u64,
    /// The clock reading the dump was exported at (its header's `exported_at`).
    pub exported_at: u64,
}

/// The first line of a dump: the only line with metadata, left out of the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u64,
    namespace: String,
    exported_at: u64,
}

/// The last line: the item count, so that a dump cut at a line boundary is not taken whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: String,
    items: u64,
}

/// Where the export's pages go.
trait Sink {
    /// Takes the lines of one page (each ending in a newline).
    fn accept(&mut self, lines: &[u8]) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// Reads the namespace of `engine` at `now` in canonical order into `sink`; returns the items
/// and bytes given to it. An engine answering out of order is `Internal` (a bug, not bad data).
async fn walk<A: Access>(engine: &A, now: u64, sink: &mut impl Sink) -> Result<(u64, u64)> {
    let op = "export";
    let mut last: Option<(Section, String, String, u64)> = None;
    let (mut items, mut bytes) = (0u64, 0u64);
    let mut lines = Vec::new();
    for section in Section::ALL {
        let mut after: Option<String> = None;
        loop {
            let page = engine.dump_page(section, after.as_deref(), now).await?;
            lines.clear();
            for item in &page.items {
                if item.section() != section {
                    return Err(Error::internal(format!(
                        "{op}: the {} engine gave a {} item in the {} section",
                        A::NAME,
                        item.section().name(),
                        section.name()
                    )));
                }
                if !item.is_live(now) {
                    continue;
                }
                let place = item.place();
                if let Some(last) = &last {
                    let before = (last.0, last.1.as_str(), last.2.as_str(), last.3);
                    if !in_order(before, place) {
                        return Err(Error::internal(format!(
                            "{op}: the {} engine gave {} items out of canonical order",
                            A::NAME,
                            section.name()
                        )));
                    }
                }
                last = Some((place.0, place.1.to_owned(), place.2.to_owned(), place.3));
                item.write_line(&mut lines);
                lines.push(b'\n');
                items += 1;
            }
            bytes += u64::try_from(lines.len()).unwrap_or(u64::MAX);
            sink.accept(&lines).await?;
            match page.next {
                Some(next) if page.items.is_empty() && after.as_deref() == Some(next.as_str()) => {
                    return Err(Error::internal(format!(
                        "{op}: the {} engine's {} pages do not advance",
                        A::NAME,
                        section.name()
                    )));
                }
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok((items, bytes))
}

/// Whether `next` may follow `before` in a dump.
fn in_order(before: Place<'_>, next: Place<'_>) -> bool {
    if next.0 == Section::Records && before.0 == Section::Records {
        return (before.1, before.3) <= (next.1, next.3);
    }
    before < next
}

struct WriteSink<'a> {
    out: &'a mut (dyn AsyncWrite + Unpin + Send),
}

impl Sink for WriteSink<'_> {
    async fn accept(&mut self, lines: &[u8]) -> Result<()> {
        self.out.write_all(lines).await.map_err(write_error)
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::unavailable("export: the output cannot be written").with_source(e)
}

/// The hasher of [`digest`]: SHA-256 over the version line and every item line.
struct HashSink(Sha256);

impl Sink for HashSink {
    async fn accept(&mut self, lines: &[u8]) -> Result<()> {
        self.0.update(lines);
        Ok(())
    }
}

/// `Backend::export` of every engine: header, items, trailer.
pub(crate) async fn export<A: Access>(
    engine: &A,
    namespace: &str,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<DumpSummary> {
    let now = engine.now("export")?;
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        namespace: namespace.to_owned(),
        exported_at: now,
    };
    let mut line = serde_json::to_vec(&header).expect("a header always serializes");
    line.push(b'\n');
    out.write_all(&line).await.map_err(write_error)?;
    let (items, bytes) = walk(engine, now, &mut WriteSink { out: &mut *out }).await?;
    let mut trailer = serde_json::to_vec(&Trailer {
        end: FORMAT.to_owned(),
        items,
    })
    .expect("a trailer always serializes");
    trailer.push(b'\n');
    out.write_all(&trailer).await.map_err(write_error)?;
    out.flush().await.map_err(write_error)?;
    let framing = u64::try_from(line.len() + trailer.len()).unwrap_or(u64::MAX);
    Ok(DumpSummary {
        items,
        bytes: bytes.saturating_add(framing),
        exported_at: now,
    })
}

/// `Backend::digest` of every engine: lowercase hex SHA-256 of `stowage-dump 1\n` followed by the
/// item lines of the export at this clock reading (header and trailer left out).
pub(crate) async fn digest<A: Access>(engine: &A) -> Result<String> {
    let now = engine.now("digest")?;
    let mut sink = HashSink(Sha256::new());
    sink.0.update(format!("{FORMAT} {VERSION}\n").as_bytes());
    walk(engine, now, &mut sink).await?;
    Ok(hex(&sink.0.finalize()))
}

/// The digest of a dump read from `input` (what `Backend::digest` gives for the namespace it was
/// exported from, at its clock reading), checked line by line as an import checks it; for tools
/// and tests. Unlike the digest of a backend, this takes the lines as they are.
pub async fn digest_of_dump(input: impl AsyncBufRead + Unpin) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{FORMAT} {VERSION}\n").as_bytes());
    let mut reader = Reader::new(input);
    reader.header().await?;
    let mut check = Check::default();
    while let Some(item) = reader.item().await? {
        check.admit(&item, reader.line)?;
        hasher.update(reader.text());
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The order and consistency checks of an import that span lines.
#[derive(Debug, Default)]
struct Check {
    last: Option<(Section, String, String, u64)>,
    /// Budget → window spec of its policy, for windowed policies.
    windows: HashMap<String, String>,
    /// The idempotency keys seen in the record being read.
    record_keys: HashSet<String>,
}

impl Check {
    /// Admits `item` read on line `line` after every item before it, or says why not.
    fn admit(&mut self, item: &DumpItem, line: u64) -> Result<()> {
        let at = |message: String| {
            Error::invalid_input(format!("import: line {line}: {message}")).with_line(line)
        };
        item.validate().map_err(|e| at(e.message().to_owned()))?;
        let place = item.place();
        if let Some(last) = &self.last {
            let before = (last.0, last.1.as_str(), last.2.as_str(), last.3);
            if !in_order(before, place) {
                let what = if before == place {
                    "a duplicate item".to_owned()
                } else if place.0 < before.0 {
                    format!(
                        "{} come after {} in a dump",
                        place.0.name(),
                        before.0.name()
                    )
                } else {
                    format!("{} out of canonical order", place.0.name())
                };
                return Err(at(what));
            }
            if place.0 == Section::Records && before.0 == Section::Records && before.1 != place.1 {
                self.record_keys.clear();
            }
        }
        match item {
            DumpItem::Policy(p) => {
                if let Some(window) = &p.window {
                    self.windows.insert(p.budget.clone(), window.spec());
                }
            }
            DumpItem::Counters(c) => {
                if let Some(window) = &c.window {
                    if self.windows.get(&c.budget) != Some(&window.spec) {
                        return Err(at(format!(
                            "the counters of budget {} belong to window {} but its policy has {}",
                            show(&c.budget),
                            show(&window.spec),
                            self.windows
                                .get(&c.budget)
                                .map_or("no window".to_owned(), |s| show(s))
                        )));
                    }
                }
            }
            DumpItem::Record(r) => {
                if let Some(key) = &r.idempotency_key {
                    if !self.record_keys.insert(key.clone()) {
                        return Err(at(format!(
                            "record {} has idempotency key {} twice",
                            show(&r.name),
                            show(key)
                        )));
                    }
                }
            }
            DumpItem::Reservation(_) | DumpItem::Dedup(_) => {}
        }
        self.last = Some((place.0, place.1.to_owned(), place.2.to_owned(), place.3));
        Ok(())
    }
}

/// Reads a dump line by line: the framing rules of the format (header first, every line ends
/// with a newline, at most [`MAX_LINE_BYTES`], a trailer with the right count last).
struct Reader<R> {
    input: R,
    buffer: Vec<u8>,
    /// The number of the line in `buffer` (1 for the header).
    line: u64,
    items: u64,
    bytes: u64,
    done: bool,
}

impl<R: AsyncBufRead + Unpin> Reader<R> {
    fn new(input: R) -> Self {
        Reader {
            input,
            buffer: Vec::new(),
            line: 0,
            items: 0,
            bytes: 0,
            done: false,
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::invalid_input(format!("import: line {}: {message}", self.line)).with_line(self.line)
    }

    /// Reads the next line into `buffer` (newline removed); false at the end of the input.
    async fn next_line(&mut self) -> Result<bool> {
        self.buffer.clear();
        self.line += 1;
        let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
        let read = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "import: line {}: the input cannot be read",
                    self.line
                ))
                .with_line(self.line)
                .with_source(e)
            })?;
        if read == 0 {
            return Ok(false);
        }
        self.bytes += u64::try_from(read).unwrap_or(u64::MAX);
        if self.buffer.last() != Some(&b'\n') {
            if self.buffer.len() > MAX_LINE_BYTES {
                return Err(self.error(format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            return Err(self.error("cut short: the dump ends inside this line (truncated?)"));
        }
        self.buffer.pop();
        Ok(true)
    }

    /// The current line with its newline, as it enters the digest.
    fn text(&mut self) -> &[u8] {
        self.buffer.push(b'\n');
        &self.buffer
    }

    /// Reads and checks the header; returns it.
    async fn header(&mut self) -> Result<Header> {
        if !self.next_line().await? {
            return Err(self.error("the input is empty; a dump starts with its header"));
        }
        let header: Header = serde_json::from_slice(&self.buffer)
            .map_err(|e| self.error(format!("not a dump header: {e}")))?;
        if header.format != FORMAT {
            return Err(self.error(format!("format {} is not {FORMAT}", show(&header.format))));
        }
        if header.version != VERSION {
            return Err(self.error(format!(
                "dump version {} is not supported; this build reads version {VERSION}",
                header.version
            )));
        }
        Ok(header)
    }

    /// The next item, or `None` after the trailer (checked against the count, and last).
    async fn item(&mut self) -> Result<Option<DumpItem>> {
        if self.done {
            return Ok(None);
        }
        if !self.next_line().await? {
            return Err(self.error("the dump ends without its trailer (truncated?)"));
        }
        if self.buffer.starts_with(b"{\"end\"") {
            let trailer: Trailer = serde_json::from_slice(&self.buffer)
                .map_err(|e| self.error(format!("not a dump trailer: {e}")))?;
            if trailer.end != FORMAT || trailer.items != self.items {
                return Err(self.error(format!(
                    "the trailer counts {} items, the dump has {}",
                    trailer.items, self.items
                )));
            }
            if self.next_line().await? {
                return Err(self.error("a line after the trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        let item = DumpItem::parse_line(&self.buffer).map_err(|m| self.error(m))?;
        self.items += 1;
        Ok(Some(item))
    }
}

/// `Backend::import` of every engine: header, emptiness, then items in batches of [`LOAD_ITEMS`],
/// each checked whole before the engine sees it.
pub(crate) async fn import<A: Access>(
    engine: &A,
    input: &mut (dyn AsyncBufRead + Unpin + Send),
) -> Result<DumpSummary> {
    let mut reader = Reader::new(input);
    let header = reader.header().await?;
    if !engine.is_empty().await? {
        return Err(Error::invalid_input(
            "import: the namespace is not empty; import only into an empty namespace (purge it first)",
        ));
    }
    let mut check = Check::default();
    let mut batch = Vec::with_capacity(LOAD_ITEMS);
    let mut loaded = 0u64;
    let partial = |e: Error, loaded: u64| {
        if loaded == 0 {
            return e;
        }
        e.and_message(&format!(
            "; the {loaded} items before it were imported: purge the namespace before importing again"
        ))
    };
    let unfinished = |e: Error, loaded: u64| {
        e.and_message(&format!(
            "; the namespace may hold part of the dump ({loaded} items were imported before this \
             batch): purge it before importing again"
        ))
    };
    loop {
        let item = match reader.item().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(partial(e, loaded)),
        };
        check
            .admit(&item, reader.line)
            .map_err(|e| partial(e, loaded))?;
        batch.push(item);
        if batch.len() == LOAD_ITEMS {
            engine
                .load(&batch)
                .await
                .map_err(|e| unfinished(e, loaded))?;
            loaded += u64::try_from(batch.len()).unwrap_or(u64::MAX);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        engine
            .load(&batch)
            .await
            .map_err(|e| unfinished(e, loaded))?;
    }
    Ok(DumpSummary {
        items: reader.items,
        bytes: reader.bytes,
        exported_at: header.exported_at,
    })
}

/// How far a [`copy`] has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyProgress {
    /// Lines the import has read (header included).
    pub lines: u64,
    /// Bytes the import has read.
    pub bytes: u64,
    /// Time since the copy started.
    pub elapsed: Duration,
}

/// Copies the namespace of `from` into the empty namespace of `to`: `from.export` piped into
/// `to.import` through a 1 MiB buffer, so memory stays bounded whatever the size. `progress` is
/// called every 250 ms and once at the end. On an error the target may hold part of the copy
/// (the message says so): purge it before trying again.
pub async fn copy(
    from: &dyn Backend,
    to: &dyn Backend,
    progress: &mut (dyn FnMut(CopyProgress) + Send),
) -> Result<DumpSummary> {
    let start = Instant::now();
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let counted = Counted {
        inner: reader,
        bytes: Arc::default(),
        lines: Arc::default(),
    };
    let (bytes, lines) = (counted.bytes.clone(), counted.lines.clone());
    let mut input = tokio::io::BufReader::new(counted);
    let snapshot = || CopyProgress {
        lines: lines.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    };
    let export = async {
        let summary = from.export(&mut writer).await?;
        writer.shutdown().await.map_err(write_error)?;
        Ok::<_, Error>(summary)
    };
    let import = to.import(&mut input);
    let work = async { tokio::try_join!(export, import) };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            done = &mut work => {
                progress(snapshot());
                return done.map(|(_, imported)| imported);
            }
            _ = tick.tick() => progress(snapshot()),
        }
    }
}

/// The pipe's reading end, counting bytes and lines for [`copy`]'s progress.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        let newlines = fresh.iter().filter(|b| **b == b'\n').count();
        self.bytes.fetch_add(
            u64::try_from(fresh.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.lines.fetch_add(
            u64::try_from(newlines).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WindowBounds;

    fn record(name: &str, stored_at: u64, key: Option<&str>) -> DumpItem {
        DumpItem::Record(RecordItem {
            name: name.to_owned(),
            stored_at,
            idempotency_key: key.map(str::to_owned),
            value: r#"{"a":[1,2.5,"x"]}"#.to_owned(),
        })
    }

    fn dedup(expires_at: u64) -> DumpItem {
        DumpItem::Dedup(DedupItem {
            budget: "b".to_owned(),
            key: "k".to_owned(),
            fingerprint: "AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            outcome: UsageOutcome::Ok,
            expires_at,
        })
    }

    fn counters(window: Option<(u64, u64)>, values: &[(&str, u64)]) -> DumpItem {
        DumpItem::Counters(CountersItem {
            budget: "b".to_owned(),
            window: window.map(|(start_ms, end_ms)| StoredWindow {
                spec: "fixed:10:0".to_owned(),
                bounds: WindowBounds { start_ms, end_ms },
            }),
            values: values.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect(),
        })
    }

    fn line(item: &DumpItem) -> Vec<u8> {
        let mut out = Vec::new();
        item.write_line(&mut out);
        out
    }

    #[test]
    fn every_kind_of_item_reads_back_from_its_line() {
        let reservation = Reservation {
            id: "r".to_owned(),
            dimensions: BTreeMap::from([("t".to_owned(), 3)]),
            ttl_ms: 5,
            expires_at: 9,
            remember_ms: 7,
            state: ReservationState::Released { at: 6 },
        };
        let items = [
            DumpItem::Policy(PolicyItem::new(
                "b",
                BudgetPolicy::new()
                    .limit("t", DimensionLimit::hard(3))
                    .window(Window::fixed(10, 0)),
            )),
            counters(Some((0, 10)), &[("t", crate::MAX_AMOUNT)]),
            DumpItem::Reservation(ReservationItem::new("b", reservation.clone())),
            dedup(12),
            record("r", 3, Some("key")),
            record("r", 3, None),
        ];
        for item in &items {
            let text = line(item);
            assert_eq!(DumpItem::parse_line(&text).as_ref(), Ok(item), "{text:?}");
            assert!(item.validate().is_ok());
        }
        let DumpItem::Reservation(r) = &items[2] else {
            unreachable!()
        };
        assert_eq!(r.reservation(), reservation);
        assert_eq!(
            line(&items[5]),
            br#"{"record":"r","stored_at":3,"value":{"a":[1,2.5,"x"]}}"#
        );
    }

    #[test]
    fn a_dump_leaves_out_what_no_operation_at_now_sees() {
        assert!(dedup(10).is_live(9));
        assert!(!dedup(10).is_live(10));
        assert!(
            counters(Some((0, 10)), &[]).is_live(9),
            "a window kept after a reset"
        );
        assert!(
            !counters(Some((0, 10)), &[("t", 1)]).is_live(10),
            "a passed window"
        );
        assert!(counters(None, &[("t", 0)]).is_live(u64::MAX));
        assert!(!counters(None, &[]).is_live(0));
        let reservation = |state| {
            DumpItem::Reservation(ReservationItem {
                budget: "b".to_owned(),
                id: "r".to_owned(),
                dimensions: BTreeMap::new(),
                ttl_ms: 1,
                expires_at: 5,
                remember_ms: 10,
                state,
            })
        };
        assert!(reservation(ReservationState::Held).is_live(14));
        assert!(!reservation(ReservationState::Held).is_live(15));
        assert!(reservation(ReservationState::Released { at: 2 }).is_live(11));
        assert!(!reservation(ReservationState::Released { at: 2 }).is_live(12));
        assert!(record("r", 0, None).is_live(u64::MAX));
    }

    #[test]
    fn only_record_rows_of_one_name_and_time_may_tie() {
        let r = |name, at| (Section::Records, name, "", at);
        assert!(in_order(r("a", 1), r("a", 1)));
        assert!(in_order(r("a", 2), r("b", 1)));
        assert!(!in_order(r("a", 2), r("a", 1)));
        assert!(!in_order(r("b", 0), r("a", 9)));
        let d = |budget, key| (Section::Dedup, budget, key, 0);
        assert!(!in_order(d("a", "k"), d("a", "k")));
        assert!(in_order(d("a", "k"), d("a", "l")));
        assert!(in_order(d("a", "z"), d("b", "a")));
        assert!(!in_order(r("a", 0), (Section::Policies, "z", "", 0)));
        assert!(in_order((Section::Policies, "z", "", 0), r("a", 0)));
    }

    async fn refused(dump: &str) -> Option<u64> {
        digest_of_dump(dump.as_bytes())
            .await
            .err()
            .and_then(|e| e.line())
    }

    #[tokio::test]
    async fn framing_is_checked_line_by_line() {
        let header = r#"{"format":"stowage-dump","version":1,"namespace":"n","exported_at":0}"#;
        let end = |n: u64| format!("{{\"end\":\"stowage-dump\",\"items\":{n}}}");
        let rec = r#"{"record":"r","stored_at":1,"value":1}"#;
        let ok = format!("{header}\n{rec}\n{}\n", end(1));
        assert!(digest_of_dump(ok.as_bytes()).await.is_ok());
        assert_eq!(
            refused(&format!("{header}\n{rec}\n{}", end(1))).await,
            Some(3)
        );
        assert_eq!(refused(&format!("{header}\n{rec}\n")).await, Some(3));
        assert_eq!(
            refused(&format!("{header}\n{rec}\n{}\n", end(2))).await,
            Some(3)
        );
        assert_eq!(
            refused(&format!("{header}\n{header}\n{}\n", end(0))).await,
            Some(2)
        );
        // A value of almost 1 MiB written with spaces: a line of 1,110,000 bytes is read (the
        // value is stored in its canonical form, within 1 MiB).
        let spaced = format!("\"{}\"{}", "v".repeat(1_040_000), " ".repeat(69_961));
        let big = format!(
            "{header}\n{{\"record\":\"r\",\"stored_at\":1,\"value\":{spaced}}}\n{}\n",
            end(1)
        );
        assert_eq!(big.split('\n').nth(1).map(str::len), Some(1_110_000));
        assert!(digest_of_dump(big.as_bytes()).await.is_ok());
        let long = format!("{header}\n{}\n", "x".repeat(MAX_LINE_BYTES + 1));
        assert_eq!(refused(&long).await, Some(2));
        assert_eq!(
            refused(&header.replace("stowage-dump", "other")).await,
            Some(1)
        );
    }
}
