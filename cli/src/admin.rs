//! Operator commands: budgets and records, human-readable or `--json`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use stowage::raw::show;
use stowage::{
    Backend, BudgetPolicy, ConnectOptions, DimensionLimit, Error, QueryParams, Result,
    UsageOutcome, UsageReport,
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
    async fn connect(&self) -> Result<std::sync::Arc<dyn Backend>> {
        let mut options = ConnectOptions::new();
        if let Some(ns) = &self.namespace {
            options = options.namespace(ns.clone());
        }
        stowage::connect_with(&self.url, options).await
    }

    fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
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
    /// Show a budget's policy and usage.
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

fn outcome_json(outcome: &UsageOutcome) -> serde_json::Value {
    serde_json::to_value(outcome).unwrap_or_default()
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
            let policy = store.policy(&budget).await?;
            let usage = store.usage(&budget).await?;
            let window = policy.as_ref().and_then(|p| p.window.as_ref());
            target.print(
                json!({
                    "budget": budget,
                    "policy": policy,
                    "usage": usage.counters,
                    "window": window_json(window, usage.window),
                }),
                || {
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
                    let mut dims: BTreeMap<&str, (Option<DimensionLimit>, Option<u64>)> =
                        BTreeMap::new();
                    if let Some(p) = &policy {
                        for (d, l) in &p.limits {
                            dims.entry(d).or_default().0 = Some(*l);
                        }
                    }
                    for (d, v) in &usage.counters {
                        dims.entry(d).or_default().1 = Some(*v);
                    }
                    let text = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
                    out.push_str(&format!(
                        "  {:<24} {:>20} {:>20} {:>20}\n",
                        "dimension", "usage", "soft", "hard"
                    ));
                    for (d, (limit, used)) in dims {
                        out.push_str(&format!(
                            "  {:<24} {:>20} {:>20} {:>20}\n",
                            d,
                            used.unwrap_or(0),
                            text(limit.and_then(|l| l.soft)),
                            text(limit.and_then(|l| l.hard))
                        ));
                    }
                    if policy.is_none() {
                        out.push_str("  (no policy: no limits)\n");
                    }
                    out.trim_end().to_owned()
                },
            );
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
}
