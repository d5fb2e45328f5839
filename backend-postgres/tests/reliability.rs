//! Reliability on PostgreSQL: client crashes, server crashes (immediate stop) under load, sustained load.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stowage_conformance::reliability::crash::{self, CrashPlan};
use stowage_conformance::reliability::load::{self, LoadPlan};
use stowage_conformance::reliability::outage::{self, OutagePlan};
use stowage_conformance::reliability::reserve_crash::{self, ReserveCrashPlan};
use stowage_conformance::servers::postgres::{PostgresSettings, URL_ENV};
use stowage_core::ConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_crashes_lose_nothing_and_count_nothing_twice() {
    let Some(url) = common::shared_url() else {
        return;
    };
    crash::run(
        common::postgres_harness(url.clone()),
        "process_crashes_lose_nothing_and_count_nothing_twice",
        &[(URL_ENV, url)],
        CrashPlan::from_env(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_crashes_count_once_and_leave_no_hold() {
    let Some(url) = common::shared_url() else {
        return;
    };
    reserve_crash::run(
        common::postgres_harness(url.clone()),
        "reservation_crashes_count_once_and_leave_no_hold",
        &[(URL_ENV, url)],
        ReserveCrashPlan::from_env(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crashes_fail_fast_and_recover_without_double_counting() {
    // Always a server of its own to crash, even when STOWAGE_POSTGRES_URL names a shared one; when
    // none can be started, postgres being required (STOWAGE_REQUIRE_BACKENDS) makes this a failure.
    let Some(server) = common::own_server(PostgresSettings {
        durable: true,
        synchronous_commit: true,
        max_connections: 100,
    }) else {
        return;
    };
    let server = Arc::new(server);
    let url = format!(
        "{}?operation_timeout_ms=3000&acquire_timeout_ms=2000",
        server.url()
    );
    let backend = common::postgres_harness(url)
        .open(ConnectOptions::new().namespace("outage"))
        .await
        .unwrap();
    outage::run(
        backend,
        server,
        OutagePlan::from_env(Duration::from_secs(6)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_matches_the_reference_model() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = common::postgres_harness(format!("{url}?max_connections=32"))
        .open(ConnectOptions::new().namespace(stowage_conformance::unique_namespace("load")))
        .await
        .unwrap();
    load::run(backend, LoadPlan::from_env()).await;
}
