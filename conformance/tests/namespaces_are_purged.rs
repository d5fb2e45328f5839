//! Every namespace a case opens is purged after it, pass or fail; a purge that fails fails the case.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Defect, ModelHarness};
use stowage_conformance::{run_all, run_case_within, Case, Ctx, Harness, CASE_TIMEOUT};
use stowage_core::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_purges_every_namespace_it_opened() {
    for shared in [false, true] {
        let harness = ModelHarness::new(shared, Defect::None);
        let log = harness.log.clone();
        let mut checked = 0;
        let outcomes = run_all(harness, None, |outcome| {
            let (opened, purged) = log.take();
            assert!(
                !opened.is_empty(),
                "{} (shared: {shared}) opened no namespace",
                outcome.name
            );
            assert_eq!(
                opened, purged,
                "{} (shared: {shared}): namespaces opened vs purged",
                outcome.name
            );
            checked += 1;
        })
        .await;
        let failed: Vec<_> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
        assert!(failed.is_empty(), "shared: {shared}: {failed:#?}");
        assert_eq!(checked, stowage_conformance::all_cases().len());
    }
}

/// Opens two more namespaces, then fails as `how` says.
async fn open_more_then(ctx: Ctx, how: &str) {
    let _one = ctx.open_namespace("_one").await;
    let _two = ctx.open_with_ttl("_two", 1).await;
    match how {
        "panic" => panic!("deliberate failure"),
        "hang" => std::future::pending::<()>().await,
        _ => {}
    }
}

const PANICS: Case = Case {
    name: "test::panics",
    run: |ctx| Box::pin(open_more_then(ctx, "panic")),
};
const HANGS: Case = Case {
    name: "test::hangs",
    run: |ctx| Box::pin(open_more_then(ctx, "hang")),
};
const PASSES: Case = Case {
    name: "test::passes",
    run: |ctx| Box::pin(open_more_then(ctx, "pass")),
};

/// Runs `case` on a fresh model harness with `defect`; (failure, namespaces opened, purged).
async fn run(
    case: &Case,
    defect: Defect,
    timeout: Duration,
) -> (Option<String>, Vec<String>, Vec<String>) {
    let harness = ModelHarness::new(false, defect);
    let log = harness.log.clone();
    let as_harness: Arc<dyn Harness> = harness;
    let failure = run_case_within(as_harness, case, timeout).await.err();
    let (opened, purged) = log.take();
    (
        failure,
        opened.into_iter().collect(),
        purged.into_iter().collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_case_still_purges_its_namespaces() {
    let (failure, opened, purged) = run(&PANICS, Defect::None, CASE_TIMEOUT).await;
    assert_eq!(failure.as_deref(), Some("deliberate failure"));
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert_eq!(opened, purged);
    // A case that never finishes: the runner gives up on it (a short limit, so the test is quick),
    // stops it and purges what it opened.
    let (failure, opened, purged) = run(&HANGS, Defect::None, Duration::from_secs(1)).await;
    assert!(
        failure
            .as_deref()
            .is_some_and(|f| f.starts_with("timed out")),
        "{failure:?}"
    );
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert_eq!(opened, purged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_that_fails_fails_the_case_after_its_own_failure() {
    let (failure, opened, purged) = run(&PASSES, Defect::None, CASE_TIMEOUT).await;
    assert_eq!(failure, None);
    assert_eq!(opened, purged);
    let (failure, _, purged) = run(&PASSES, Defect::PurgeUnsupported, CASE_TIMEOUT).await;
    let failure = failure.expect("a case whose namespaces cannot be purged fails");
    assert!(purged.is_empty());
    assert!(
        failure.starts_with("the case passed but left namespaces behind"),
        "{failure}"
    );
    // One line per namespace, naming the kind of the purge's error.
    let unsupported = format!("failed ({:?})", ErrorKind::Unsupported);
    assert_eq!(failure.matches(&unsupported).count(), 3, "{failure}");
    let (failure, _, _) = run(&PANICS, Defect::PurgeUnsupported, CASE_TIMEOUT).await;
    let failure = failure.expect("fails");
    assert!(failure.starts_with("deliberate failure"), "{failure}");
    assert!(failure.contains("left behind"), "{failure}");
}
