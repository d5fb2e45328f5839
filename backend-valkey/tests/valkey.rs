//! Valkey-specific facts: honest capabilities, reconnecting after a server restart, process races.

mod common;

use std::time::{Duration, Instant};

use stowage_conformance::process_race::{self, RaceSize};
use stowage_conformance::servers::valkey::{self, ValkeyServer, ValkeySettings};
use stowage_core::{Backend, BudgetBackend, ConnectOptions, ErrorKind, UsageReport};
use stowage_valkey::ValkeyBackend;

fn standalone() -> Option<String> {
    common::url_or_skip("valkey", valkey::shared_url())
}

fn cluster() -> Option<String> {
    common::url_or_skip("valkey-cluster", valkey::shared_cluster_url())
}

fn options() -> ConnectOptions {
    ConnectOptions::new().namespace(stowage_conformance::unique_namespace("vk"))
}

#[tokio::test]
async fn capabilities_follow_topology_and_persistence() {
    let (Some(single), Some(many)) = (standalone(), cluster()) else {
        return;
    };
    let a = ValkeyBackend::open(&single, options()).await.unwrap();
    let b = ValkeyBackend::open(&many, options()).await.unwrap();
    assert!(!a.capabilities().distributed && a.capabilities().shared);
    assert!(b.capabilities().distributed && b.capabilities().shared);
    // The shared test servers run without persistence: not durable.
    if std::env::var(valkey::URL_ENV).is_err() {
        assert!(!a.capabilities().durable && !b.capabilities().durable);
        let durable = ValkeyServer::start(ValkeySettings { durable: true }, false).unwrap();
        let c = ValkeyBackend::open(&durable.url(), options())
            .await
            .unwrap();
        assert!(c.capabilities().durable);
    }
}

/// Retries `report` until it succeeds or `limit` passes; every failure must be `Unavailable`.
async fn report_until_ok(backend: &ValkeyBackend, report: &UsageReport, limit: Duration) -> u32 {
    let start = Instant::now();
    let mut failures = 0;
    loop {
        match backend.report_usage("b", report).await {
            Ok(_) => return failures,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(e.is_retryable());
                failures += 1;
                assert!(start.elapsed() < limit, "no recovery within {limit:?}: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backend_works_again_after_a_server_restart() {
    if standalone().is_none() || std::env::var(valkey::URL_ENV).is_ok() {
        return;
    }
    let server = ValkeyServer::start(ValkeySettings { durable: true }, false).unwrap();
    let url = format!(
        "{}?operation_timeout_ms=500&connect_timeout_ms=500",
        server.url()
    );
    let backend = ValkeyBackend::open(&url, options()).await.unwrap();
    let first = UsageReport::new().add("t", 5).dedup_key("before");
    backend.report_usage("b", &first).await.unwrap();
    server.kill().unwrap();
    let during = backend
        .report_usage("b", &UsageReport::new().add("t", 1))
        .await;
    assert_eq!(during.unwrap_err().kind(), ErrorKind::Unavailable);
    server.start_again().unwrap();
    // The script cache is empty after the restart: the call reloads the script (NOSCRIPT).
    report_until_ok(
        &backend,
        &UsageReport::new().add("t", 1).dedup_key("after"),
        Duration::from_secs(20),
    )
    .await;
    // The AOF kept the first report and its dedup record: a retry replays, nothing counts twice.
    let retry = backend.report_usage("b", &first).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_one_server() {
    let Some(url) = standalone() else { return };
    process_race::run(
        common::valkey_harness(url.clone()),
        "two_processes_race_on_one_server",
        &[(valkey::URL_ENV, url)],
        RaceSize::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_the_cluster() {
    let Some(url) = cluster() else { return };
    process_race::run(
        common::valkey_harness(url.clone()),
        "two_processes_race_on_the_cluster",
        &[(valkey::CLUSTER_URL_ENV, url)],
        RaceSize::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_listed_after_the_server_loses_its_data() {
    if standalone().is_none() || std::env::var(valkey::URL_ENV).is_ok() {
        return;
    }
    let server = ValkeyServer::start(ValkeySettings::default(), false).unwrap();
    let backend = ValkeyBackend::open(&server.url(), options()).await.unwrap();
    use stowage_core::{PersistenceBackend, QueryParams};
    backend
        .store("sensor::a", &serde_json::json!(1), 1)
        .await
        .unwrap();
    // A restart without persistence (or a failover) loses everything, the name index included.
    stowage_conformance::servers::resp::ok(server.port(), &["FLUSHALL"]).unwrap();
    backend
        .store("sensor::a", &serde_json::json!(2), 2)
        .await
        .unwrap();
    let rows = backend
        .query("sensor::*", QueryParams::new())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the row stored after the loss is listed");
    assert_eq!(backend.cleanup(3).await.unwrap(), 1, "and cleaned up");
}
