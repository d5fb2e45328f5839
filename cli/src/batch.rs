//! `stowage budget report-batch`: reports read as JSON lines, sent in batches (SEMANTICS §4.4).
//!
//! Each input line is one item: `{"budget": "team-a", "dimensions": {"tokens": 1200},
//! "dedup_key": "req-1"}` (`dedup_key` optional). Lines are sent `--batch-size` at a time with
//! `report_usage_batch`; every item's answer is printed with its line number. A line that is not
//! such an item stops the command before its batch is sent (the batches before it were sent and
//! answered); an `Unavailable` batch stops it too, and the message says which lines to send again
//! (safe for keyed items: the applied ones replay).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Deserialize;
use serde_json::json;
use stowage::{Backend, Error, Result, UsageOutcome, UsageReceipt, UsageReport, MAX_BATCH_ITEMS};

use crate::admin::{Target, EXIT_REFUSED};

/// Arguments of `budget report-batch`.
#[derive(Debug, Args)]
pub struct ReportBatchArgs {
    /// JSON lines to read (default: standard input).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Items per batch, 1 to 10,000.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    #[command(flatten)]
    target: Target,
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    budget: String,
    dimensions: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    dedup_key: Option<String>,
}

/// What the items answered, for the summary and the exit status.
#[derive(Debug, Default)]
struct Tally {
    applied: u64,
    replayed: u64,
    refused: u64,
    failed: u64,
}

/// Runs the command.
pub async fn run(args: ReportBatchArgs) -> Result<ExitCode> {
    if args.batch_size == 0 || args.batch_size > MAX_BATCH_ITEMS {
        return Err(Error::invalid_input(format!(
            "--batch-size {} is out of range: 1 to {MAX_BATCH_ITEMS}",
            args.batch_size
        )));
    }
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| Error::invalid_input(format!("cannot read {}: {e}", path.display())),
        )?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let store = args.target.connect().await?;
    let mut tally = Tally::default();
    let mut batch: Vec<(usize, (String, UsageReport))> = Vec::with_capacity(args.batch_size);
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| Error::invalid_input(format!("line {number}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Line = serde_json::from_str(&line).map_err(|e| {
            Error::invalid_input(format!(
                "line {number} is not a report item ({e}); lines before {} were sent",
                batch.first().map_or(number, |(n, _)| *n)
            ))
        })?;
        let report = UsageReport {
            dimensions: item.dimensions,
            dedup_key: item.dedup_key,
        };
        batch.push((number, (item.budget, report)));
        if batch.len() == args.batch_size {
            send(&*store, &args.target, &mut batch, &mut tally).await?;
        }
    }
    send(&*store, &args.target, &mut batch, &mut tally).await?;
    let Tally {
        applied,
        replayed,
        refused,
        failed,
    } = tally;
    args.target.print(
        json!({"summary": {"applied": applied, "replayed": replayed, "refused": refused, "failed": failed}}),
        || {
            format!(
                "{} items: {applied} applied, {replayed} replayed (nothing applied), {refused} refused by a hard limit, {failed} failed",
                applied + replayed + refused + failed
            )
        },
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if refused > 0 {
        ExitCode::from(EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends the pending lines as one batch, prints every answer, and empties `batch`.
async fn send(
    store: &dyn Backend,
    target: &Target,
    batch: &mut Vec<(usize, (String, UsageReport))>,
    tally: &mut Tally,
) -> Result<()> {
    let Some(((first, _), (last, _))) = batch.first().zip(batch.last()) else {
        return Ok(());
    };
    let (first, last) = (*first, *last);
    let (lines, items): (Vec<usize>, Vec<(String, UsageReport)>) = batch.drain(..).unzip();
    let answers = store.report_usage_batch(&items).await.map_err(|e| {
        Error::unavailable(format!(
            "lines {first} to {last}: {e}; their outcome is unknown: send them again (keyed items replay)"
        ))
    })?;
    for ((line, (budget, _)), answer) in lines.iter().zip(&items).zip(answers) {
        print_answer(target, *line, budget, answer, tally);
    }
    Ok(())
}

/// Prints one item's answer (humans see only the items that did not apply) and counts it.
fn print_answer(
    target: &Target,
    line: usize,
    budget: &str,
    answer: Result<UsageReceipt>,
    tally: &mut Tally,
) {
    match answer {
        Ok(UsageReceipt { outcome, replayed }) => {
            let refused = matches!(outcome, UsageOutcome::HardBreach(_));
            let count = match (replayed, refused) {
                (true, _) => &mut tally.replayed,
                (false, true) => &mut tally.refused,
                (false, false) => &mut tally.applied,
            };
            *count += 1;
            let value =
                json!({"line": line, "budget": budget, "outcome": outcome, "replayed": replayed});
            if target.json() {
                target.print(value, String::new);
            } else if refused && !replayed {
                println!("line {line}: {budget}: REFUSED by a hard limit, nothing applied");
            }
        }
        Err(e) => {
            tally.failed += 1;
            target.print(
                json!({"line": line, "budget": budget, "error": e.kind().as_str(), "message": e.to_string()}),
                || format!("line {line}: {budget}: {e}"),
            );
        }
    }
}
