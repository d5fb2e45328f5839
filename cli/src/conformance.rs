//! `stowage conformance URL`: the whole suite against a live deployment, in fresh namespaces.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use stowage::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_conformance::{run_all, Harness};

/// Arguments of `stowage conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The deployment, e.g. postgres://user@host/db or valkey+cluster://h:p,h:p.
    url: String,
    /// Only cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Differential sequences to run (default: STOWAGE_DIFF_SEQUENCES or 24).
    #[arg(long)]
    sequences: Option<u64>,
}

/// Runs the suite; the exit status is non-zero when any case failed.
pub async fn run(args: ConformanceArgs) -> Result<ExitCode> {
    if let Some(n) = args.sequences {
        std::env::set_var("STOWAGE_DIFF_SEQUENCES", n.to_string());
    }
    // Check the URL once, so a typo is one clear error rather than a failure per case; the probe
    // namespace is purged at once, as every case's namespaces are when the case ends.
    let probe = stowage::connect_with(
        &args.url,
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("probe")),
    )
    .await?;
    probe.purge().await?;
    let url = args.url.clone();
    let harness: Arc<dyn Harness> = Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move { stowage::connect_with(&url, options).await })
        },
    );
    // Failures are reported in the table; the default hook would also print every panic.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "conformance of {} ({} cases)",
        args.url,
        stowage_conformance::all_cases().len()
    );
    let outcomes = run_all(harness, args.filter.as_deref(), |outcome| {
        let millis = outcome.elapsed.as_millis();
        match &outcome.failure {
            None => println!("  PASS  {:<64} {millis:>6} ms", outcome.name),
            Some(why) => {
                let first_line = why.lines().next().unwrap_or_default();
                println!("  FAIL  {:<64} {millis:>6} ms  {first_line}", outcome.name);
            }
        }
    })
    .await;
    let _ = std::panic::take_hook();
    let failed: Vec<_> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    println!(
        "conformance: {} of {} cases passed on {}",
        outcomes.len() - failed.len(),
        outcomes.len(),
        args.url
    );
    for outcome in &failed {
        println!(
            "\n--- {} ---\n{}",
            outcome.name,
            outcome.failure.as_deref().unwrap_or_default()
        );
    }
    Ok(if failed.is_empty() && !outcomes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
