//! Reliability on Valkey: client crashes and server crashes (SIGKILL, restart from the AOF with
//! appendfsync always), sustained load on a standalone server and on the cluster.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stowage_conformance::reliability::crash::{self, CrashPlan};
use stowage_conformance::reliability::load::{self, LoadPlan};
use stowage_conformance::reliability::outage::{self, OutagePlan};
use stowage_conformance::reliability::reserve_crash::{self, ReserveCrashPlan};
use stowage_conformance::servers::valkey::{self, ValkeySettings};
use stowage_core::ConnectOptions;

const DURABLE_URL_ENV: &str = "STOWAGE_VALKEY_DURABLE_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_crashes_lose_nothing_and_count_nothing_twice() {
    // A durable server (appendonly yes, appendfsync always): STOWAGE_VALKEY_DURABLE_URL (the
    // children get it), else one of its own, whatever STOWAGE_VALKEY_URL says.
    let mut server = None;
    let url = match std::env::var(DURABLE_URL_ENV) {
        Ok(url) => url,
        Err(_) => {
            let Some(s) = common::own_server(ValkeySettings { durable: true }) else {
                return;
            };
            let url = s.url();
            server = Some(s);
            url
        }
    };
    crash::run(
        common::valkey_harness(url.clone()),
        "process_crashes_lose_nothing_and_count_nothing_twice",
        &[(DURABLE_URL_ENV, url)],
        CrashPlan::from_env(),
    )
    .await;
    drop(server);
}

/// The reservation crash scenario on a durable server (`cluster`: false) or a durable 3-master
/// cluster of the test's own, where `reserve_all`/`commit_all` are composed budget by budget.
async fn reservation_crashes(test_name: &str, cluster: bool) {
    const URL_ENV: &str = "STOWAGE_VALKEY_RESERVE_CRASH_URL";
    let mut servers = (None, None);
    let url = match std::env::var(URL_ENV) {
        Ok(url) => url,
        Err(_) if cluster => {
            let Some(c) = common::own_cluster(ValkeySettings { durable: true }) else {
                return;
            };
            let url = c.url();
            servers.1 = Some(c);
            url
        }
        Err(_) => {
            let Some(s) = common::own_server(ValkeySettings { durable: true }) else {
                return;
            };
            let url = s.url();
            servers.0 = Some(s);
            url
        }
    };
    reserve_crash::run(
        common::valkey_harness(url.clone()),
        test_name,
        &[(URL_ENV, url)],
        ReserveCrashPlan::from_env(),
    )
    .await;
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_crashes_count_once_and_leave_no_hold() {
    reservation_crashes("reservation_crashes_count_once_and_leave_no_hold", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_crashes_on_the_cluster_count_once_and_leave_no_hold() {
    reservation_crashes(
        "reservation_crashes_on_the_cluster_count_once_and_leave_no_hold",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crashes_fail_fast_and_recover_without_double_counting() {
    // A durable server of its own to crash, whatever STOWAGE_VALKEY_URL says.
    let Some(server) = common::own_server(ValkeySettings { durable: true }) else {
        return;
    };
    let server = Arc::new(server);
    let url = format!(
        "{}?operation_timeout_ms=1000&connect_timeout_ms=1000",
        server.url()
    );
    let backend = common::valkey_harness(url)
        .open(ConnectOptions::new().namespace("outage"))
        .await
        .unwrap();
    outage::run(
        backend,
        server,
        OutagePlan::from_env(Duration::from_secs(4)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_matches_the_reference_model() {
    for (name, url) in [
        ("valkey", valkey::shared_url()),
        ("valkey-cluster", valkey::shared_cluster_url()),
    ] {
        let Some(url) = common::url_or_skip(name, url) else {
            continue;
        };
        let backend = common::valkey_harness(url)
            .open(ConnectOptions::new().namespace(stowage_conformance::unique_namespace("load")))
            .await
            .unwrap();
        load::run(backend, LoadPlan::from_env()).await;
    }
}
