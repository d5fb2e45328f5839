//! `stowage`: benchmark backends side by side, check a live deployment against the contract, and
//! administer budgets and records.
#![deny(missing_docs)]

mod admin;
mod batch;
mod bench;
mod chart;
mod conformance;
mod dump;
mod duration;
mod results;
mod spawn;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// One persistence and budget API on SQLite, PostgreSQL and Valkey.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about, propagate_version = true)]
struct Cli {
    /// Print stowage's tracing spans and events to stderr at this level or above (error, warn,
    /// info, debug, trace), or an env-filter directive such as `stowage=debug`; `STOWAGE_LOG` too.
    /// Every operation is one `debug` span named `stowage` with the backend, operation, name,
    /// outcome, `replayed`, error kind and duration.
    #[arg(long, global = true, env = "STOWAGE_LOG", value_name = "LEVEL")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fixed, seeded mixed workload against backends and print them side by side.
    Bench(bench::BenchArgs),
    /// Run the conformance suite against a live deployment (in a fresh namespace).
    Conformance(conformance::ConformanceArgs),
    /// Set, show, report to and reset budgets.
    #[command(subcommand)]
    Budget(admin::BudgetCommand),
    /// Put, query and clean up records.
    #[command(subcommand)]
    Records(admin::RecordsCommand),
    /// Write a namespace as a dump (JSON lines, `docs/dump-format.md`) to -o FILE or standard
    /// output.
    Export(dump::ExportArgs),
    /// Read a dump from -i FILE or standard input into an empty namespace.
    Import(dump::ImportArgs),
    /// Print the SHA-256 digest of a namespace's state: equal on two stores holding the same data.
    Digest(dump::DigestArgs),
    /// Copy a namespace into an empty namespace of another store (export piped into import, in
    /// bounded memory), with progress on standard error; --verify compares the digests after.
    Copy(dump::CopyArgs),
    /// Destroy everything of one namespace (records, policies, counters, holds, dedup records).
    Purge(dump::PurgeArgs),
}

/// Installs a stderr subscriber for `filter`; a directive that does not parse is bad input.
fn install_log(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?} is not a level or filter directive: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(filter) = cli.log.as_deref() {
        if let Err(why) = install_log(filter) {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Conformance(args) => conformance::run(args).await,
            Command::Budget(command) => admin::budget(command).await,
            Command::Records(command) => admin::records(command).await,
            Command::Export(args) => dump::export(args).await,
            Command::Import(args) => dump::import(args).await,
            Command::Digest(args) => dump::digest(args).await,
            Command::Copy(args) => dump::copy(args).await,
            Command::Purge(args) => dump::purge(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

/// The exit status of a command that failed with `e`: 2 for bad input, 1 otherwise.
pub(crate) fn exit_code(e: &stowage::Error) -> ExitCode {
    match e.kind() {
        stowage::ErrorKind::InvalidInput => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
