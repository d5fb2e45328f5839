//! Two OS processes on one PostgreSQL database: no overshoot, shared dedup keys apply once.

mod common;

use stowage_conformance::process_race::{self, RaceSize};
use stowage_conformance::servers::postgres::URL_ENV;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_one_database() {
    let Some(url) = common::shared_url() else {
        return;
    };
    process_race::run(
        common::postgres_harness(url.clone()),
        "two_processes_race_on_one_database",
        &[(URL_ENV, url)],
        RaceSize::default(),
    )
    .await;
}
