//! `stowage`: benchmark backends side by side, check a live deployment against the contract, and
//! administer budgets and records.
#![deny(missing_docs)]

mod admin;
mod bench;
mod chart;
mod conformance;
mod duration;
mod results;
mod spawn;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// One persistence and budget API on SQLite, PostgreSQL and Valkey.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about, propagate_version = true)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            match e.kind() {
                stowage::ErrorKind::InvalidInput => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
