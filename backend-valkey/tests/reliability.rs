//! Reliability on Valkey: client crashes and server crashes (SIGKILL, restart from the AOF with
//! appendfsync always), sustained load on a standalone server and on the cluster.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stowage_conformance::reliability::crash::{self, CrashPlan};
use stowage_conformance::reliability::load::{self, LoadPlan};
use stowage_conformance::reliability::outage::{self, OutagePlan};
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
