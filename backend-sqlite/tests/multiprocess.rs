//! Two OS processes on one SQLite file: no overshoot of a hard limit, shared dedup keys apply once.

mod common;

use stowage_conformance::process_race::{self, RaceSize};

const FILE_ENV: &str = "STOWAGE_SQLITE_RACE_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_one_file() {
    let url = std::env::var(FILE_ENV).unwrap_or_else(|_| common::fresh_file_url("race"));
    process_race::run(
        common::sqlite_harness(url.clone()),
        "two_processes_race_on_one_file",
        &[(FILE_ENV, url)],
        RaceSize::default(),
    )
    .await;
}
