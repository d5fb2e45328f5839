//! Operator commands: budgets and records, human-readable or `--json`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use stowage::raw::show;
use stowage::{
    Backend, Breach, BudgetPolicy, ConnectOptions, DimensionLimit, Error, ErrorKind, MultiOutcome,
    MultiReceipt, MultiReserveOutcome, MultiReserveReceipt, QueryParams, ReserveOutcome,
    ReserveRequest, Result, UsageOutcome, UsageReport,
};
use stowage_core::{CalendarUnit, Window, WindowBounds, MAX_AMOUNT};

/// Where to connect, shared by the admin commands.
#[derive(Debug, Args)]
pub struct Target {
    /// The store (also from STOWAGE_URL).
    #[arg(long, env = "STOWAGE_URL", default_value = "sqlite://stowage.db")]
    url: String,
    /// The namespace (default: "default").
    #[arg(long)]
    namespace: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

impl Target {
    pub(crate) async fn connect(&self) -> Result<std::sync::Arc<dyn Backend>> {
        connect(&self.url, self.namespace.as_deref()).await
    }

    /// Whether `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    pub(crate) fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// Prints an answer and gives its exit status.
    fn answer(&self, answer: Answer) -> ExitCode {
        let Answer { json, human, code } = answer;
        self.print(json, || human);
        ExitCode::from(code)
    }
}

/// Connects to `url` in `namespace` (default: "default"), as every command does.
pub(crate) async fn connect(
    url: &str,
    namespace: Option<&str>,
) -> Result<std::sync::Arc<dyn Backend>> {
    let mut options = ConnectOptions::new();
    if let Some(ns) = namespace {
        options = options.namespace(ns.to_owned());
    }
    stowage::connect_with(url, options).await
}

/// The exit status of `budget reserve` when a hard limit refused the reservation (nothing held).
pub const EXIT_REFUSED: u8 = 3;

/// What a budget command answers: its JSON, its human text and its exit status.
#[derive(Debug)]
struct Answer {
    json: serde_json::Value,
    human: String,
    code: u8,
}

/// The budgets of `reserve`, `commit` and `release`, and the reservation id.
#[derive(Debug, Args)]
pub struct Hold {
    /// A budget; repeat it (up to 16) to act on several at once, all or nothing, e.g.
    /// `--budget key:1 --budget team:a --budget org:x`.
    #[arg(long = "budget", short = 'b', value_name = "BUDGET", required = true)]
    budgets: Vec<String>,
    /// The reservation id, e.g. the request id; a retry with it replays the first answer.
    #[arg(long)]
    id: String,
}

impl Hold {
    fn names(&self) -> Vec<&str> {
        self.budgets.iter().map(String::as_str).collect()
    }
}

/// Budget commands.
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Replace a budget's policy: --limit DIMENSION=SOFT:HARD (either side may be empty for no
    /// limit), counted per --window (in --tz) or per --period (from --offset), else for its lifetime.
    Set {
        /// The budget.
        budget: String,
        /// A limit, e.g. tokens=8000:10000, usd_micros=:2000000, requests=100: .
        #[arg(long = "limit", value_name = "DIM=SOFT:HARD")]
        limits: Vec<String>,
        #[command(flatten)]
        window: WindowArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Show a budget's policy, usage, pending amounts and live holds.
    Show {
        /// The budget.
        budget: String,
        #[command(flatten)]
        target: Target,
    },
    /// Report usage: DIMENSION=DELTA pairs, optionally deduplicated by --key.
    Report {
        /// The budget.
        budget: String,
        /// Deltas, e.g. tokens=1200 usd_micros=56.
        #[arg(value_name = "DIM=DELTA", required = true)]
        deltas: Vec<String>,
        /// A dedup key: a retry with it applies nothing.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Report many items read as JSON lines ({"budget": …, "dimensions": {…}, "dedup_key": …}) from
    /// --input or standard input, in batches; one answer per line (exit status 3 if a hard limit
    /// refused an item, 1 if an item failed).
    ReportBatch(crate::batch::ReportBatchArgs),
    /// Hold DIMENSION=AMOUNT pairs (the most the work can cost) on one or several budgets until
    /// commit, release or --ttl; refused whole (exit status 3) when a hard limit would be exceeded.
    Reserve {
        #[command(flatten)]
        hold: Hold,
        /// How long the hold lives, e.g. 30s, 5m.
        #[arg(long, value_parser = crate::duration::parse)]
        ttl: std::time::Duration,
        /// Amounts to hold, e.g. tokens=4000 usd_micros=120.
        #[arg(value_name = "DIM=AMOUNT", required = true)]
        amounts: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Settle a reservation: free its hold and apply what the work really cost (each amount at
    /// most the reserved one; none at all: it cost nothing).
    Commit {
        #[command(flatten)]
        hold: Hold,
        /// Actual amounts, e.g. tokens=1234 usd_micros=37.
        #[arg(value_name = "DIM=AMOUNT")]
        amounts: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Free a reservation's hold without applying anything (the work did not happen).
    Release {
        #[command(flatten)]
        hold: Hold,
        #[command(flatten)]
        target: Target,
    },
    /// Remove every counter of a budget (the policy stays).
    Reset {
        /// The budget.
        budget: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a budget's policy.
    Delete {
        /// The budget.
        budget: String,
        #[command(flatten)]
        target: Target,
    },
}

/// When a budget's counters start again (none of these: lifetime counters).
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Count usage per calendar day, ISO week (from Monday), month or year, in --tz.
    #[arg(long, value_enum, conflicts_with_all = ["period", "offset"])]
    window: Option<WindowUnit>,
    /// The IANA time zone of --window, e.g. Europe/Berlin (default UTC).
    #[arg(
        long = "tz",
        value_name = "ZONE",
        requires = "window",
        conflicts_with_all = ["period", "offset"]
    )]
    time_zone: Option<String>,
    /// Count usage per fixed period, e.g. 90s, 1h, 7d.
    #[arg(long, value_parser = crate::duration::parse)]
    period: Option<std::time::Duration>,
    /// Where fixed periods start, past every multiple of --period since the epoch (default 0).
    #[arg(long, value_parser = crate::duration::parse, requires = "period")]
    offset: Option<std::time::Duration>,
}

/// The calendar units of `--window`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WindowUnit {
    Day,
    Week,
    Month,
    Year,
}

fn millis(what: &str, duration: std::time::Duration) -> Result<u64> {
    u64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_AMOUNT)
        .ok_or_else(|| Error::invalid_input(format!("{what} is too long")))
}

impl WindowArgs {
    /// The window these flags ask for (`None`: lifetime), validated before anything connects.
    fn window(&self) -> Result<Option<Window>> {
        let window = match (self.window, self.period) {
            (Some(unit), _) => {
                let unit = match unit {
                    WindowUnit::Day => CalendarUnit::Day,
                    WindowUnit::Week => CalendarUnit::Week,
                    WindowUnit::Month => CalendarUnit::Month,
                    WindowUnit::Year => CalendarUnit::Year,
                };
                let zone = self.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
                Window::calendar(unit, zone)
            }
            (None, Some(period)) => {
                let offset = self.offset.unwrap_or_default();
                Window::fixed(millis("--period", period)?, millis("--offset", offset)?)
            }
            (None, None) => return Ok(None),
        };
        window.validate("budget set")?;
        Ok(Some(window))
    }
}

/// A time in ms as RFC 3339 UTC text (or the ms themselves when out of range).
fn instant(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms} ms"), |t| t.to_string())
}

/// How `show` describes a window: its spec and its current bounds.
fn window_json(window: Option<&Window>, bounds: Option<WindowBounds>) -> serde_json::Value {
    match (window, bounds) {
        (Some(w), Some(b)) => json!({
            "spec": w.spec(),
            "start_ms": b.start_ms,
            "end_ms": b.end_ms,
            "ends_at": instant(b.end_ms),
        }),
        _ => serde_json::Value::Null,
    }
}

/// Record commands.
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Append a JSON value to a record.
    Put {
        /// The record name.
        record: String,
        /// The value, as JSON.
        value: String,
        /// The timestamp in ms (default: now).
        #[arg(long)]
        at: Option<u64>,
        /// An idempotency key: a repeat with it stores nothing.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Rows of records matching a pattern (`*` is the only wildcard).
    Query {
        /// The pattern, e.g. 'sensor::*::temp'.
        pattern: String,
        /// Rows at or after this time (ms).
        #[arg(long)]
        from: Option<u64>,
        /// Rows at or before this time (ms).
        #[arg(long)]
        to: Option<u64>,
        /// At most this many rows per record, newest first.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete rows stored before a time.
    Cleanup {
        /// Delete rows with a timestamp below this (ms).
        #[arg(long)]
        older_than: u64,
        #[command(flatten)]
        target: Target,
    },
}

fn split_pair<'a>(what: &str, text: &'a str) -> Result<(&'a str, &'a str)> {
    text.split_once('=').ok_or_else(|| {
        Error::invalid_input(format!("{what} {} must look like NAME=VALUE", show(text)))
    })
}

fn parse_amount(what: &str, text: &str) -> Result<u64> {
    text.parse::<u64>()
        .map_err(|_| Error::invalid_input(format!("{what} {} is not a whole number", show(text))))
}

/// Parses `DIM=SOFT:HARD`.
fn parse_limit(text: &str) -> Result<(String, DimensionLimit)> {
    let (dimension, limits) = split_pair("--limit", text)?;
    let (soft, hard) = limits.split_once(':').ok_or_else(|| {
        Error::invalid_input(format!(
            "--limit {} must look like DIM=SOFT:HARD",
            show(text)
        ))
    })?;
    let side = |t: &str, what| (!t.is_empty()).then(|| parse_amount(what, t)).transpose();
    Ok((
        dimension.to_owned(),
        DimensionLimit {
            soft: side(soft, "soft limit")?,
            hard: side(hard, "hard limit")?,
        },
    ))
}

/// Parses `DIM=AMOUNT` pairs; a dimension given twice is bad input.
fn parse_amounts(what: &str, texts: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut amounts = BTreeMap::new();
    for text in texts {
        let (dimension, amount) = split_pair(what, text)?;
        let amount = parse_amount(what, amount)?;
        if amounts.insert(dimension.to_owned(), amount).is_some() {
            return Err(Error::invalid_input(format!(
                "{what}: dimension {} is given twice",
                show(dimension)
            )));
        }
    }
    Ok(amounts)
}

fn outcome_json(outcome: &UsageOutcome) -> serde_json::Value {
    serde_json::to_value(outcome).unwrap_or_default()
}

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// `dim=amount dim=amount`.
fn amounts_text(amounts: &BTreeMap<String, u64>) -> String {
    if amounts.is_empty() {
        return "nothing".to_owned();
    }
    amounts
        .iter()
        .map(|(d, a)| format!("{d}={a}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per budget: `budget: dim usage+pending vs limit; …`.
fn breaches_text(breaches: &BTreeMap<String, Vec<Breach>>, kind: &str) -> String {
    breaches
        .iter()
        .map(|(budget, list)| {
            let list = list
                .iter()
                .map(|b| {
                    let pending = if b.pending > 0 {
                        format!(" + {} pending", b.pending)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} {}{pending} vs {kind} limit {}",
                        b.dimension, b.usage, b.limit
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!("\n  {budget}: {list}")
        })
        .collect()
}

/// `budget reserve`: `reserve` on one budget, `reserve_all` on several.
async fn reserve(
    store: &dyn Backend,
    hold: &Hold,
    ttl: std::time::Duration,
    amounts: &[String],
) -> Result<Answer> {
    let request = ReserveRequest {
        id: hold.id.clone(),
        dimensions: parse_amounts("amount", amounts)?,
        ttl_ms: millis("--ttl", ttl)?,
    };
    let receipt = match hold.names().as_slice() {
        [budget] => {
            let receipt = store.reserve(budget, &request).await?;
            MultiReserveReceipt {
                outcome: match receipt.outcome {
                    ReserveOutcome::Reserved => MultiReserveOutcome::Reserved,
                    ReserveOutcome::HardBreach(breaches) => MultiReserveOutcome::HardBreach(
                        BTreeMap::from([((*budget).to_owned(), breaches)]),
                    ),
                },
                expires_at: receipt.expires_at,
                replayed: receipt.replayed,
            }
        }
        budgets => store.reserve_all(budgets, &request).await?,
    };
    let replay = if receipt.replayed {
        " (replayed: the first answer)"
    } else {
        ""
    };
    let (human, code) = match &receipt.outcome {
        MultiReserveOutcome::Reserved => (
            format!(
                "reserved {} as {} on {} until {}{replay}",
                amounts_text(&request.dimensions),
                hold.id,
                hold.budgets.join(", "),
                instant(receipt.expires_at)
            ),
            0,
        ),
        MultiReserveOutcome::HardBreach(breaches) => (
            format!(
                "REFUSED, nothing held{replay}:{}",
                breaches_text(breaches, "hard")
            ),
            EXIT_REFUSED,
        ),
    };
    Ok(Answer {
        json: json!({
            "budgets": hold.budgets,
            "id": hold.id,
            "outcome": to_json(&receipt.outcome),
            "expires_at": receipt.expires_at,
            "expires": instant(receipt.expires_at),
            "replayed": receipt.replayed,
        }),
        human,
        code,
    })
}

/// `budget commit`: `commit` on one budget, `commit_all` on several.
async fn commit(store: &dyn Backend, hold: &Hold, amounts: &[String]) -> Result<Answer> {
    let actual = parse_amounts("amount", amounts)?;
    let receipt = match hold.names().as_slice() {
        [budget] => {
            let receipt = store.commit(budget, &hold.id, &actual).await?;
            let one = |breaches| BTreeMap::from([((*budget).to_owned(), breaches)]);
            MultiReceipt {
                outcome: match receipt.outcome {
                    UsageOutcome::Ok => MultiOutcome::Ok,
                    UsageOutcome::SoftBreach(b) => MultiOutcome::SoftBreach(one(b)),
                    UsageOutcome::HardBreach(b) => MultiOutcome::HardBreach(one(b)),
                },
                replayed: receipt.replayed,
            }
        }
        budgets => store.commit_all(budgets, &hold.id, &actual).await?,
    };
    let replay = if receipt.replayed {
        " (replayed: nothing applied again)"
    } else {
        ""
    };
    let what = format!(
        "committed {} as {} on {}",
        amounts_text(&actual),
        hold.id,
        hold.budgets.join(", ")
    );
    let human = match &receipt.outcome {
        MultiOutcome::Ok => format!("{what}{replay}"),
        MultiOutcome::SoftBreach(b) => format!(
            "{what}, soft limit exceeded{replay}:{}",
            breaches_text(b, "soft")
        ),
        MultiOutcome::HardBreach(b) => {
            format!(
                "REFUSED, nothing applied{replay}:{}",
                breaches_text(b, "hard")
            )
        }
    };
    Ok(Answer {
        json: json!({
            "budgets": hold.budgets,
            "id": hold.id,
            "actual": actual,
            "outcome": to_json(&receipt.outcome),
            "replayed": receipt.replayed,
        }),
        human,
        code: 0,
    })
}

/// `budget release`: `release` on one budget (which says whether it freed a hold), `release_all`
/// on several.
async fn release(store: &dyn Backend, hold: &Hold) -> Result<Answer> {
    let released = match hold.names().as_slice() {
        [budget] => Some(store.release(budget, &hold.id).await?),
        budgets => {
            store.release_all(budgets, &hold.id).await?;
            None
        }
    };
    let on = hold.budgets.join(", ");
    let human = match released {
        Some(true) => format!("released {} on {on}", hold.id),
        Some(false) => format!(
            "{} held nothing on {on} (released before, expired, or refused)",
            hold.id
        ),
        None => format!("released {} on {on} (where it held)", hold.id),
    };
    Ok(Answer {
        json: json!({"budgets": hold.budgets, "id": hold.id, "released": released}),
        human,
        code: 0,
    })
}

/// `budget show`: policy, window, usage and pending per dimension, and the live holds.
async fn show_budget(store: &dyn Backend, budget: &str) -> Result<Answer> {
    let policy = store.policy(budget).await?;
    let usage = store.usage(budget).await?;
    // A backend without reservations has no holds to list.
    let holds = match store.reservations(budget).await {
        Ok(all) => {
            let now = stowage::Clock::now_ms(&stowage::SystemClock);
            Some(
                all.into_iter()
                    .filter(|r| r.is_holding(now))
                    .collect::<Vec<_>>(),
            )
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => None,
        Err(e) => return Err(e),
    };
    let window = policy.as_ref().and_then(|p| p.window.as_ref());
    let holds_json = holds.as_ref().map(|holds| {
        holds
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "amounts": r.dimensions,
                    "expires_at": r.expires_at,
                    "expires": instant(r.expires_at),
                })
            })
            .collect::<Vec<_>>()
    });
    let json = json!({
        "budget": budget,
        "policy": policy,
        "usage": usage.counters,
        "pending": usage.pending,
        "holds": holds_json,
        "window": window_json(window, usage.window),
    });
    let mut out = format!("budget {budget}\n");
    match (window, usage.window) {
        (Some(w), Some(b)) => out.push_str(&format!(
            "  window {w}: usage since {}, ends {}\n",
            instant(b.start_ms),
            instant(b.end_ms)
        )),
        (Some(w), None) => out.push_str(&format!("  window {w}\n")),
        (None, _) => out.push_str("  lifetime usage (no window)\n"),
    }
    #[derive(Default)]
    struct Row {
        limit: Option<DimensionLimit>,
        used: u64,
        pending: u64,
    }
    let mut dims: BTreeMap<&str, Row> = BTreeMap::new();
    if let Some(p) = &policy {
        for (d, l) in &p.limits {
            dims.entry(d).or_default().limit = Some(*l);
        }
    }
    for (d, v) in &usage.counters {
        dims.entry(d).or_default().used = *v;
    }
    for (d, v) in &usage.pending {
        dims.entry(d).or_default().pending = *v;
    }
    let text = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    out.push_str(&format!(
        "  {:<24} {:>20} {:>20} {:>20} {:>20}\n",
        "dimension", "usage", "pending", "soft", "hard"
    ));
    for (d, row) in dims {
        out.push_str(&format!(
            "  {:<24} {:>20} {:>20} {:>20} {:>20}\n",
            d,
            row.used,
            row.pending,
            text(row.limit.and_then(|l| l.soft)),
            text(row.limit.and_then(|l| l.hard))
        ));
    }
    if policy.is_none() {
        out.push_str("  (no policy: no limits)\n");
    }
    if let Some(holds) = &holds {
        out.push_str(&format!("  {} live hold(s)\n", holds.len()));
        for r in holds {
            out.push_str(&format!(
                "    {}  {}  expires {}\n",
                r.id,
                amounts_text(&r.dimensions),
                instant(r.expires_at)
            ));
        }
    }
    Ok(Answer {
        json,
        human: out.trim_end().to_owned(),
        code: 0,
    })
}

/// Runs a budget command.
pub async fn budget(command: BudgetCommand) -> Result<ExitCode> {
    match command {
        BudgetCommand::Set {
            budget,
            limits,
            window,
            target,
        } => {
            let mut policy = BudgetPolicy::new();
            for text in &limits {
                let (dimension, limit) = parse_limit(text)?;
                policy = policy.limit(dimension, limit);
            }
            policy.window = window.window()?;
            target.connect().await?.set_policy(&budget, &policy).await?;
            target.print(json!({"budget": budget, "policy": policy}), || {
                let per = policy
                    .window
                    .as_ref()
                    .map_or_else(|| "lifetime".to_owned(), |w| format!("per window {w}"));
                format!(
                    "policy of {budget} set: {} limit(s), {per}",
                    policy.limits.len()
                )
            });
        }
        BudgetCommand::Show { budget, target } => {
            let store = target.connect().await?;
            return Ok(target.answer(show_budget(store.as_ref(), &budget).await?));
        }
        BudgetCommand::Reserve {
            hold,
            ttl,
            amounts,
            target,
        } => {
            // Bad amounts or TTL are reported before anything connects.
            parse_amounts("amount", &amounts)?;
            millis("--ttl", ttl)?;
            let store = target.connect().await?;
            return Ok(target.answer(reserve(store.as_ref(), &hold, ttl, &amounts).await?));
        }
        BudgetCommand::Commit {
            hold,
            amounts,
            target,
        } => {
            parse_amounts("amount", &amounts)?;
            let store = target.connect().await?;
            return Ok(target.answer(commit(store.as_ref(), &hold, &amounts).await?));
        }
        BudgetCommand::Release { hold, target } => {
            let store = target.connect().await?;
            return Ok(target.answer(release(store.as_ref(), &hold).await?));
        }
        BudgetCommand::Report {
            budget,
            deltas,
            key,
            target,
        } => {
            let mut report = UsageReport::new();
            for text in &deltas {
                let (dimension, delta) = split_pair("delta", text)?;
                report = report.add(dimension, parse_amount("delta", delta)?);
            }
            if let Some(key) = key {
                report = report.dedup_key(key);
            }
            let receipt = target
                .connect()
                .await?
                .report_usage(&budget, &report)
                .await?;
            target.print(
                json!({"budget": budget, "outcome": outcome_json(&receipt.outcome), "replayed": receipt.replayed}),
                || {
                    let replay = if receipt.replayed { " (replayed: nothing applied)" } else { "" };
                    let list = |breaches: &[stowage::Breach], kind: &str| {
                        breaches
                            .iter()
                            .map(|b| {
                                let crossed = if b.crossed { ", crossed now" } else { "" };
                                format!("{} {} vs {kind} limit {}{crossed}", b.dimension, b.usage, b.limit)
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    match &receipt.outcome {
                        UsageOutcome::Ok => format!("ok{replay}"),
                        UsageOutcome::SoftBreach(b) => format!("applied, soft limit exceeded{replay}: {}", list(b, "soft")),
                        UsageOutcome::HardBreach(b) => {
                            format!("REFUSED, nothing applied{replay}: {} (usage before this report)", list(b, "hard"))
                        }
                    }
                },
            );
        }
        BudgetCommand::ReportBatch(args) => return crate::batch::run(args).await,
        BudgetCommand::Reset { budget, target } => {
            target.connect().await?.reset_usage(&budget).await?;
            target.print(json!({"budget": budget, "reset": true}), || {
                format!("usage of {budget} reset")
            });
        }
        BudgetCommand::Delete { budget, target } => {
            let existed = target.connect().await?.delete_policy(&budget).await?;
            target.print(json!({"budget": budget, "deleted": existed}), || {
                if existed {
                    format!("policy of {budget} deleted")
                } else {
                    format!("{budget} had no policy")
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a records command.
pub async fn records(command: RecordsCommand) -> Result<ExitCode> {
    match command {
        RecordsCommand::Put {
            record,
            value,
            at,
            key,
            target,
        } => {
            let value: serde_json::Value = serde_json::from_str(&value).map_err(|e| {
                Error::invalid_input(format!("records put: value {} is not JSON", show(&value)))
                    .with_source(e)
            })?;
            let at = at.unwrap_or_else(|| stowage::Clock::now_ms(&stowage::SystemClock));
            let store = target.connect().await?;
            let result = match &key {
                Some(key) => format!(
                    "{:?}",
                    store.store_idempotent(&record, &value, at, key).await?
                ),
                None => {
                    store.store(&record, &value, at).await?;
                    "Appended".to_owned()
                }
            };
            target.print(
                json!({"record": record, "at": at, "result": result}),
                || format!("{record} at {at}: {result}"),
            );
        }
        RecordsCommand::Query {
            pattern,
            from,
            to,
            limit,
            target,
        } => {
            let params = QueryParams {
                limit_per_record: limit,
                start_time: from,
                end_time: to,
            };
            let rows = target.connect().await?.query(&pattern, params).await?;
            target.print(serde_json::to_value(&rows).unwrap_or_default(), || {
                let mut out = String::new();
                for row in &rows {
                    out.push_str(&format!(
                        "{:<32} {:>15}  {}\n",
                        row.record_name, row.stored_at, row.value
                    ));
                }
                out.push_str(&format!("{} row(s)", rows.len()));
                out
            });
        }
        RecordsCommand::Cleanup { older_than, target } => {
            let deleted = target.connect().await?.cleanup(older_than).await?;
            target.print(json!({"deleted": deleted}), || {
                format!("deleted {deleted} row(s)")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(window: Option<WindowUnit>, tz: Option<&str>, period: Option<u64>) -> WindowArgs {
        WindowArgs {
            window,
            time_zone: tz.map(str::to_owned),
            period: period.map(std::time::Duration::from_millis),
            offset: Some(std::time::Duration::from_millis(5)),
        }
    }

    #[test]
    fn window_flags_make_the_window_or_invalid_input() {
        assert_eq!(args(None, None, None).window().unwrap(), None);
        assert_eq!(
            args(Some(WindowUnit::Week), None, None).window().unwrap(),
            Some(Window::week("UTC"))
        );
        assert_eq!(
            args(Some(WindowUnit::Month), Some("Europe/Berlin"), None)
                .window()
                .unwrap(),
            Some(Window::month("Europe/Berlin"))
        );
        assert_eq!(
            args(None, None, Some(3_600_000)).window().unwrap(),
            Some(Window::fixed(3_600_000, 5))
        );
        for bad in [
            args(Some(WindowUnit::Day), Some("Nowhere/Land"), None),
            args(None, None, Some(5)),
            args(None, None, Some(0)),
        ] {
            assert_eq!(
                bad.window().unwrap_err().kind(),
                stowage::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_parse_with_either_side_empty() {
        assert_eq!(
            parse_limit("tokens=8:10").unwrap().1,
            DimensionLimit::both(8, 10)
        );
        assert_eq!(parse_limit("usd=:5").unwrap().1, DimensionLimit::hard(5));
        assert_eq!(parse_limit("req=3:").unwrap().1, DimensionLimit::soft(3));
        for bad in ["tokens", "tokens=8", "tokens=x:1", "tokens=1:-2"] {
            assert_eq!(
                parse_limit(bad).unwrap_err().kind(),
                stowage::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    fn hold(budgets: &[&str], id: &str) -> Hold {
        Hold {
            budgets: budgets.iter().map(|b| (*b).to_owned()).collect(),
            id: id.to_owned(),
        }
    }

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3_600);

    #[tokio::test]
    async fn reserve_show_commit_show_on_the_reference_model() {
        let store = stowage::connect("memory://").await.unwrap();
        let store = store.as_ref();
        let policy = BudgetPolicy::new().limit("tokens", DimensionLimit::both(50, 100));
        store.set_policy("team", &policy).await.unwrap();
        let r1 = hold(&["team"], "r1");
        let reserved = reserve(store, &r1, HOUR, &strings(&["tokens=60", "usd=7"]))
            .await
            .unwrap();
        assert_eq!(reserved.code, 0);
        assert_eq!(reserved.json["outcome"], "Reserved");
        assert_eq!(reserved.json["replayed"], false);
        let expires_at = reserved.json["expires_at"].as_u64().unwrap();
        let shown = show_budget(store, "team").await.unwrap();
        assert_eq!(shown.json["pending"], json!({"tokens": 60, "usd": 7}));
        assert_eq!(
            shown.json["holds"],
            json!([{"id": "r1", "amounts": {"tokens": 60, "usd": 7},
                    "expires_at": expires_at, "expires": instant(expires_at)}])
        );
        assert!(
            shown.human.contains("1 live hold(s)") && shown.human.contains("r1  tokens=60 usd=7")
        );
        // A retry replays; another request under the id is a conflict.
        let again = reserve(store, &r1, HOUR, &strings(&["tokens=60", "usd=7"]))
            .await
            .unwrap();
        assert_eq!(again.json["replayed"], true);
        assert_eq!(
            reserve(store, &r1, HOUR, &strings(&["tokens=61"]))
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Conflict
        );
        let committed = commit(store, &r1, &strings(&["tokens=55"])).await.unwrap();
        assert_eq!(committed.code, 0);
        assert_eq!(committed.json["replayed"], false);
        assert_eq!(
            committed.json["outcome"]["SoftBreach"]["team"][0]["usage"],
            55
        );
        let shown = show_budget(store, "team").await.unwrap();
        assert_eq!(shown.json["usage"], json!({"tokens": 55}));
        assert_eq!(shown.json["pending"], json!({}));
        assert_eq!(shown.json["holds"], json!([]));
        let replay = commit(store, &r1, &strings(&["tokens=55"])).await.unwrap();
        assert_eq!(replay.json["replayed"], true);
        assert_eq!(
            release(store, &r1).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            commit(store, &hold(&["team"], "nope"), &[])
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn several_budgets_hold_all_or_nothing_and_a_refusal_exits_3() {
        let store = stowage::connect("memory://").await.unwrap();
        let store = store.as_ref();
        let policy = BudgetPolicy::new().limit("tokens", DimensionLimit::hard(100));
        store.set_policy("team:a", &policy).await.unwrap();
        let budgets = ["key:1", "org:x", "team:a"];
        let first = reserve(store, &hold(&budgets, "r1"), HOUR, &strings(&["tokens=60"]))
            .await
            .unwrap();
        assert_eq!(first.code, 0);
        let refused = reserve(store, &hold(&budgets, "r2"), HOUR, &strings(&["tokens=60"]))
            .await
            .unwrap();
        assert_eq!(refused.code, EXIT_REFUSED);
        let breach = &refused.json["outcome"]["HardBreach"]["team:a"][0];
        assert_eq!(
            (&breach["usage"], &breach["pending"], &breach["limit"]),
            (&json!(0), &json!(60), &json!(100))
        );
        assert!(refused.human.starts_with("REFUSED"), "{}", refused.human);
        // Nothing is held for r2 anywhere.
        for budget in budgets {
            let shown = show_budget(store, budget).await.unwrap();
            assert_eq!(shown.json["pending"], json!({"tokens": 60}), "{budget}");
            assert_eq!(shown.json["holds"][0]["id"], "r1", "{budget}");
            assert_eq!(shown.json["holds"].as_array().unwrap().len(), 1, "{budget}");
        }
        // The work cost nothing: an empty actual frees the holds and applies nothing.
        let committed = commit(store, &hold(&budgets, "r1"), &[]).await.unwrap();
        assert_eq!(committed.json["outcome"], "Ok");
        let again = reserve(store, &hold(&budgets, "r3"), HOUR, &strings(&["tokens=60"]))
            .await
            .unwrap();
        assert_eq!(again.code, 0);
        let released = release(store, &hold(&budgets, "r3")).await.unwrap();
        assert_eq!(released.json["released"], serde_json::Value::Null);
        for budget in budgets {
            let shown = show_budget(store, budget).await.unwrap();
            assert_eq!(shown.json["usage"], json!({}), "{budget}");
            assert_eq!(shown.json["holds"], json!([]), "{budget}");
        }
    }

    #[tokio::test]
    async fn release_says_whether_it_freed_a_hold() {
        let store = stowage::connect("memory://").await.unwrap();
        let store = store.as_ref();
        let r = hold(&["key"], "r");
        reserve(store, &r, HOUR, &strings(&["tokens=5"]))
            .await
            .unwrap();
        assert_eq!(release(store, &r).await.unwrap().json["released"], true);
        assert_eq!(release(store, &r).await.unwrap().json["released"], false);
        assert_eq!(
            commit(store, &r, &[]).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
    }

    #[tokio::test]
    async fn bad_amounts_are_invalid_input() {
        let store = stowage::connect("memory://").await.unwrap();
        let store = store.as_ref();
        let r = hold(&["key"], "r");
        for bad in [
            &["tokens"][..],
            &["tokens=-1"],
            &["tokens=1", "tokens=2"],
            &["tokens=1.5"],
        ] {
            assert_eq!(
                reserve(store, &r, HOUR, &strings(bad))
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        reserve(store, &r, HOUR, &strings(&["tokens=5"]))
            .await
            .unwrap();
        // More than reserved, or a dimension not reserved.
        for bad in [&["tokens=6"][..], &["usd=1"]] {
            assert_eq!(
                commit(store, &r, &strings(bad)).await.unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        assert_eq!(
            reserve(
                store,
                &hold(&["key"], "z"),
                std::time::Duration::ZERO,
                &strings(&["t=1"])
            )
            .await
            .unwrap_err()
            .kind(),
            ErrorKind::InvalidInput
        );
    }
}
