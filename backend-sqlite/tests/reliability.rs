//! Reliability on a SQLite file: client crashes, four processes against one limit, sustained load.

mod common;

use stowage_conformance::process_race::{self, RaceSize};
use stowage_conformance::reliability::crash::{self, CrashPlan};
use stowage_conformance::reliability::load::{self, LoadPlan};
use stowage_conformance::reliability::reserve_crash::{self, ReserveCrashPlan};
use stowage_core::ConnectOptions;

const FILE_ENV: &str = "STOWAGE_SQLITE_RELIABILITY_URL";

fn url(name: &str) -> String {
    std::env::var(FILE_ENV).unwrap_or_else(|_| common::fresh_file_url(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_crashes_lose_nothing_and_count_nothing_twice() {
    let url = url("crash");
    crash::run(
        common::sqlite_harness(url.clone()),
        "process_crashes_lose_nothing_and_count_nothing_twice",
        &[(FILE_ENV, url)],
        CrashPlan::from_env(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_crashes_count_once_and_leave_no_hold() {
    let url = url("reserve-crash");
    reserve_crash::run(
        common::sqlite_harness(url.clone()),
        "reservation_crashes_count_once_and_leave_no_hold",
        &[(FILE_ENV, url)],
        ReserveCrashPlan::from_env(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_by_2000_reports_never_overshoot() {
    let url = url("four");
    process_race::run(
        common::sqlite_harness(url.clone()),
        "four_processes_by_2000_reports_never_overshoot",
        &[(FILE_ENV, url)],
        RaceSize {
            children: 4,
            own_per_child: 1_500,
            shared_keys: 500,
            hard_limit: 5_000,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_matches_the_reference_model() {
    let harness = common::sqlite_harness(url("load"));
    let backend = harness
        .open(ConnectOptions::new().namespace(stowage_conformance::unique_namespace("load")))
        .await
        .unwrap();
    load::run(backend, LoadPlan::from_env()).await;
}
