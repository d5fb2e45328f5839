//! Running cases: one case with its namespaces purged afterwards, the body of a generated
//! `#[test]`, and a whole run for other runners (the CLI).

use std::sync::Arc;
use std::time::Duration;

use crate::{all_cases, Availability, Case, Ctx, Harness};

/// How long one case may run before it counts as failed (a hang is a failure, not a stuck CI).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs one case on a fresh namespace of `harness`; `Err` carries the failure (panic message or error).
///
/// Every namespace the case opened through its [`Ctx`] is purged afterwards, pass or fail
/// (timed out or panicked included); a purge that fails fails the case. When the case failed
/// itself, its own failure comes first in the message.
pub async fn run_case(harness: Arc<dyn Harness>, case: &Case) -> std::result::Result<(), String> {
    run_case_within(harness, case, CASE_TIMEOUT).await
}

/// [`run_case`] with another time limit for the case (and, separately, for purging its namespaces).
pub async fn run_case_within(
    harness: Arc<dyn Harness>,
    case: &Case,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let ctx = Ctx::new(harness)
        .await
        .map_err(|e| format!("opening the backend failed: {e}"))?;
    let namespaces = ctx.namespaces();
    let mut task = tokio::spawn((case.run)(ctx));
    let outcome = match tokio::time::timeout(timeout, &mut task).await {
        Err(_) => {
            // Stop the case (and drop its handles) before its namespaces are purged.
            task.abort();
            // Its result is the cancellation (or a finish that raced the abort): the timeout is
            // the verdict either way; awaiting makes sure the task is gone, and says how it ended.
            let ended = match task.await {
                Ok(()) => " (it finished as it was stopped)",
                Err(join) if join.is_panic() => " (it panicked as it was stopped)",
                Err(_) => "",
            };
            Err(format!("timed out after {timeout:?}{ended}"))
        }
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => match join.try_into_panic() {
            Ok(payload) => Err(panic_message(payload.as_ref())),
            Err(join) => Err(format!("the case task was cancelled: {join}")),
        },
    };
    let purged = match tokio::time::timeout(timeout, namespaces.purge_all()).await {
        Ok(purged) => purged,
        Err(_) => Err(format!(
            "purging the case's namespaces timed out after {timeout:?}"
        )),
    };
    match (outcome, purged) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(left)) => Err(format!(
            "the case passed but left namespaces behind:\n{left}"
        )),
        (Err(failure), Ok(())) => Err(failure),
        (Err(failure), Err(left)) => Err(format!(
            "{failure}\n\nafterwards, namespaces were left behind:\n{left}"
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the case panicked".to_owned()
    }
}

/// The body of every generated `#[test]`: skip (or fail, if required) when unavailable, else run `case_name`.
///
/// Skipping or requiring follows [`stowage_testkit::available`], the rule every harness shares.
pub fn run_test(backend: &str, availability: &Availability, case_name: &str) {
    let Some(harness) = stowage_testkit::available(backend, availability.clone()) else {
        return;
    };
    let case = all_cases()
        .into_iter()
        .find(|c| c.name == case_name)
        .unwrap_or_else(|| panic!("no conformance case named {case_name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(failure) = runtime.block_on(run_case(harness, &case)) {
        panic!("conformance case {case_name} failed on {backend}: {failure}");
    }
}

/// What one case did when run by [`run_all`].
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// `module::function`.
    pub name: &'static str,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs every case whose name contains `filter` (all when `None`), one after another, each in a fresh
/// namespace of `harness`; calls `on_done` after each. For runners other than `cargo test` (the CLI).
pub async fn run_all(
    harness: Arc<dyn Harness>,
    filter: Option<&str>,
    mut on_done: impl FnMut(&CaseOutcome),
) -> Vec<CaseOutcome> {
    let mut outcomes = Vec::new();
    for case in all_cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
    {
        let start = std::time::Instant::now();
        let failure = run_case(harness.clone(), &case).await.err();
        let outcome = CaseOutcome {
            name: case.name,
            failure,
            elapsed: start.elapsed(),
        };
        on_done(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}
