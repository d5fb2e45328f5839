//! `report_usage_batch` on Valkey: the items pipelined (one round trip on a standalone server, two
//! right after a window rollover), answering exactly what the calls one by one answer, on a
//! standalone server and on a cluster; a server lost mid-batch is the outer `Unavailable`.

mod common;

use std::sync::Arc;

use stowage_conformance::round_trips::RoundTrips;
use stowage_conformance::servers::valkey::{self, ValkeySettings};
use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ErrorKind, ManualClock,
    PersistenceBackend, Result, UsageReceipt, UsageReport, Window, MAX_BATCH_ITEMS,
};
use stowage_valkey::ValkeyBackend;

/// The round trips `items` take as one batch, and its answers.
async fn batch_trips(
    turns: &RoundTrips,
    backend: &dyn BudgetBackend,
    items: &[(String, UsageReport)],
) -> (u64, Vec<Result<UsageReceipt>>) {
    let (spent, answers) = turns.of(backend.report_usage_batch(items)).await;
    (spent, answers.unwrap())
}

fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|p| p.parse().ok())
        .expect("the URL names a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_is_one_round_trip_and_two_after_a_rollover() {
    let Some(url) = common::url_or_skip("valkey", valkey::shared_url()) else {
        return;
    };
    let (turns, port) = RoundTrips::proxy(port_of(&url)).await;
    let clock = Arc::new(ManualClock::new(10_500));
    let backend = ValkeyBackend::open(
        &format!("valkey://127.0.0.1:{port}"),
        ConnectOptions::new()
            .namespace(stowage_conformance::unique_namespace("vbrt"))
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let policy = BudgetPolicy::new()
        .limit("t", DimensionLimit::both(150, 1_000))
        .window(Window::fixed(1_000, 0));
    for budget in ["a", "b"] {
        backend.set_policy(budget, &policy).await.unwrap();
        backend
            .report_usage(budget, &UsageReport::new().add("t", 1))
            .await
            .unwrap();
    }
    // 100 items over two budgets, keyed and not, with replays inside the batch.
    let items: Vec<(String, UsageReport)> = (0..100)
        .map(|i| {
            let budget = if i % 3 == 0 { "a" } else { "b" };
            let mut report = UsageReport::new().add("t", 2);
            if i % 4 == 0 {
                report = report.dedup_key(format!("k{}", i % 8));
            }
            (budget.to_owned(), report)
        })
        .collect();
    let (trips, answers) = batch_trips(&turns, &backend, &items).await;
    assert_eq!(trips, 1, "a batch inside the window");
    assert!(answers.iter().all(Result::is_ok));
    // Right after a rollover: every item of both budgets is repeated once, with the bounds.
    clock.set(11_000);
    let (trips, answers) = batch_trips(&turns, &backend, &items).await;
    assert_eq!(trips, 2, "a batch right after a rollover");
    assert!(answers.iter().all(Result::is_ok));
    let (trips, _) = batch_trips(&turns, &backend, &items).await;
    assert_eq!(trips, 1, "the next batch, inside the new window");
}

/// The answers of the items one by one, for comparison (kinds of errors, receipts).
fn shape(answers: &[Result<UsageReceipt>]) -> Vec<std::result::Result<UsageReceipt, ErrorKind>> {
    answers
        .iter()
        .map(|a| a.clone().map_err(|e| e.kind()))
        .collect()
}

/// A batch with breaches, overflows, conflicts, replays inside and before the batch, invalid
/// items and a rollover answers exactly what the calls one by one answer, and leaves the same
/// counters.
async fn answers_as_one_by_one(url: &str) {
    let clock = Arc::new(ManualClock::new(50_000));
    let open = |prefix: &str| {
        ValkeyBackend::open(
            url,
            ConnectOptions::new()
                .namespace(stowage_conformance::unique_namespace(prefix))
                .clock(clock.clone()),
        )
    };
    let (single, batched) = (open("vb1").await.unwrap(), open("vb2").await.unwrap());
    let budgets = ["w", "x", "y", "z"];
    for backend in [&single, &batched] {
        backend.initialize().await.unwrap();
        for (n, budget) in budgets.iter().enumerate() {
            let mut policy = BudgetPolicy::new().limit("t", DimensionLimit::both(20, 40));
            if n % 2 == 0 {
                policy = policy.window(Window::fixed(10_000, 0));
            }
            backend.set_policy(budget, &policy).await.unwrap();
            backend
                .report_usage(budget, &UsageReport::new().add("t", 3).dedup_key("old"))
                .await
                .unwrap();
        }
    }
    clock.set(60_000); // the windowed budgets roll over
    let mut items = Vec::new();
    for i in 0..120u64 {
        let budget = budgets[usize::try_from(i % 4).unwrap()].to_owned();
        let report = match i % 7 {
            0 => UsageReport::new().add("t", 3).dedup_key("old"), // replay of a pre-batch record
            1 => UsageReport::new().add("t", 4).dedup_key("old"), // conflict
            2 => UsageReport::new()
                .add("t", 5)
                .dedup_key(format!("k{}", i % 3)),
            3 => UsageReport::new().add("t", 30), // often a hard breach
            4 => UsageReport::new().add("t", u64::MAX >> 1), // overflow once counted
            5 => UsageReport::new(),              // invalid: no dimension
            _ => UsageReport::new().add("t", 1).add("u", 2),
        };
        items.push((budget, report));
    }
    let mut one_by_one = Vec::new();
    for (budget, report) in &items {
        one_by_one.push(single.report_usage(budget, report).await);
    }
    let batch = batched.report_usage_batch(&items).await.unwrap();
    assert_eq!(shape(&batch), shape(&one_by_one));
    for budget in budgets {
        assert_eq!(
            batched.usage(budget).await.unwrap(),
            single.usage(budget).await.unwrap(),
            "{budget}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_as_one_by_one() {
    let Some(url) = common::url_or_skip("valkey", valkey::shared_url()) else {
        return;
    };
    answers_as_one_by_one(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_the_cluster_answers_as_one_by_one() {
    let Some(url) = common::url_or_skip("valkey-cluster", valkey::shared_cluster_url()) else {
        return;
    };
    answers_as_one_by_one(&url).await;
}

/// A server that lost its script cache answers NOSCRIPT to every item: the script is loaded and
/// the items are repeated, in order.
async fn survives_a_script_flush(url: &str) {
    let backend = ValkeyBackend::open(
        url,
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("vbns")),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    backend
        .set_policy(
            "b",
            &BudgetPolicy::new().limit("t", DimensionLimit::both(5, 8)),
        )
        .await
        .unwrap();
    let raw = common::RawClient::open(url).await;
    let _: redis::Value = raw.query(redis::cmd("SCRIPT").arg("FLUSH")).await.unwrap();
    let items: Vec<(String, UsageReport)> = (0..5)
        .map(|_| {
            (
                "b".to_owned(),
                UsageReport::new().add("t", 2).dedup_key("k"),
            )
        })
        .chain((0..5).map(|_| ("b".to_owned(), UsageReport::new().add("t", 2))))
        .collect();
    let answers = backend.report_usage_batch(&items).await.unwrap();
    let replayed: Vec<bool> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().replayed)
        .collect();
    assert_eq!(replayed[..5], [false, true, true, true, true]);
    assert!(answers[9].is_ok());
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_a_script_flush() {
    // Its own server: flushing the shared one's scripts would disturb tests running beside it.
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    survives_a_script_flush(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_the_cluster_survives_a_script_flush() {
    let Some(cluster) = common::own_cluster(ValkeySettings::default()) else {
        return;
    };
    survives_a_script_flush(&cluster.url()).await;
}

/// The largest batch fits the default timeouts and counts every item once.
async fn the_largest_batch(url: &str) {
    let backend = ValkeyBackend::open(
        url,
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("vbmax")),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let items: Vec<(String, UsageReport)> = (0..MAX_BATCH_ITEMS)
        .map(|i| {
            let report = UsageReport::new().add("t", 1);
            let report = if i % 2 == 0 {
                report.dedup_key(format!("k{i}"))
            } else {
                report
            };
            (format!("b{}", i % 16), report)
        })
        .collect();
    let started = std::time::Instant::now();
    let answers = backend.report_usage_batch(&items).await.unwrap();
    eprintln!(
        "{MAX_BATCH_ITEMS} items on {url}: {:?} (informational, not asserted)",
        started.elapsed()
    );
    assert!(answers.iter().all(|a| !a.as_ref().unwrap().replayed));
    let mut total = 0;
    for b in 0..16 {
        total += backend.usage(&format!("b{b}")).await.unwrap().counters["t"];
    }
    assert_eq!(total, u64::try_from(MAX_BATCH_ITEMS).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_batch_standalone() {
    let Some(url) = common::url_or_skip("valkey", valkey::shared_url()) else {
        return;
    };
    the_largest_batch(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_batch_on_the_cluster() {
    let Some(url) = common::url_or_skip("valkey-cluster", valkey::shared_cluster_url()) else {
        return;
    };
    the_largest_batch(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_batch_is_the_outer_unavailable() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let backend = ValkeyBackend::open(
        &format!("{}?operation_timeout_ms=2000", server.url()),
        ConnectOptions::new().namespace(stowage_conformance::unique_namespace("vbkill")),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let items: Vec<(String, UsageReport)> = (0..MAX_BATCH_ITEMS)
        .map(|i| (format!("b{}", i % 7), UsageReport::new().add("t", 1)))
        .collect();
    let batch = tokio::spawn({
        let backend = backend.clone();
        async move { backend.report_usage_batch(&items).await }
    });
    // Killed while the batch is written, run or answered (or, on a fast machine, just before it
    // is sent): either way the items' outcomes are unknown to the caller.
    tokio::task::yield_now().await;
    server.kill().unwrap();
    let error = batch.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
}

/// `SCRIPT LOAD`s served by the nodes listening on `ports`: each of a cluster batch's pipelines
/// starts with one, so this counts pipelines.
fn script_loads(ports: &[u16]) -> u64 {
    use stowage_conformance::servers::resp::{command, Reply};
    let mut total = 0;
    for &port in ports {
        let Reply::Text(info) = command(port, &["INFO", "commandstats"]).unwrap() else {
            panic!("INFO answers text");
        };
        total += info
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_script|load:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse::<u64>().unwrap());
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_batch_is_one_pipeline_per_slot_and_two_after_a_rollover() {
    let Some(cluster) = common::own_cluster(ValkeySettings::default()) else {
        return;
    };
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let namespace = stowage_conformance::unique_namespace("vbslots");
    let clock = Arc::new(ManualClock::new(10_500));
    let backend = ValkeyBackend::open(
        &cluster.url(),
        ConnectOptions::new()
            .namespace(namespace.clone())
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    let budgets: Vec<String> = (0..10).map(|b| format!("b{b}")).collect();
    let policy = BudgetPolicy::new()
        .limit("t", DimensionLimit::both(150, 1_000))
        .window(Window::fixed(1_000, 0));
    for budget in &budgets {
        backend.set_policy(budget, &policy).await.unwrap();
        backend
            .report_usage(budget, &UsageReport::new().add("t", 1))
            .await
            .unwrap();
    }
    let key_namespace = backend.key_namespace().await.unwrap();
    let slots: std::collections::BTreeSet<u16> = budgets
        .iter()
        .map(|b| {
            let key = &stowage_valkey::raw::budget_call_keys(&key_namespace, b, None)[0];
            stowage_valkey::hash_slot(key)
        })
        .collect();
    let slots = u64::try_from(slots.len()).unwrap();
    let items: Vec<(String, UsageReport)> = (0..100)
        .map(|i| (budgets[i % 10].clone(), UsageReport::new().add("t", 1)))
        .collect();
    let before = script_loads(&ports);
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(
        script_loads(&ports) - before,
        slots,
        "one pipeline per slot"
    );
    clock.set(11_000);
    let before = script_loads(&ports);
    let answers = backend.report_usage_batch(&items).await.unwrap();
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(
        script_loads(&ports) - before,
        2 * slots,
        "two pipelines per slot right after a rollover"
    );
    for budget in &budgets {
        assert_eq!(backend.usage(budget).await.unwrap().counters["t"], 10);
    }
}
