//! Proves that `report_usage` costs one round trip: a proxy between the backend and the server
//! counts turns — each time the client sends after the server has answered is one round trip.

mod common;

use std::sync::Arc;

use std::collections::BTreeMap;

use stowage_conformance::round_trips::RoundTrips;
use stowage_core::{
    BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ManualClock, PersistenceBackend,
    ReserveRequest, UsageReport, Window,
};
use stowage_postgres::PostgresBackend;

/// The round trips `report` takes.
async fn trips(turns: &RoundTrips, backend: &dyn BudgetBackend, report: &UsageReport) -> u64 {
    let (spent, answer) = turns.of(backend.report_usage("b", report)).await;
    answer.unwrap();
    spent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_usage_is_one_round_trip() {
    let Some((proxied, turns)) = common::proxied().await else {
        return;
    };
    let namespace = stowage_conformance::unique_namespace("rt");
    let backend = PostgresBackend::open(&proxied, ConnectOptions::new().namespace(namespace))
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    backend
        .set_policy(
            "b",
            &BudgetPolicy::new().limit("t", DimensionLimit::both(5, 10)),
        )
        .await
        .unwrap();
    // Warm up: the first call on a connection prepares the statement (one extra exchange, once).
    backend
        .report_usage("b", &UsageReport::new().add("t", 1))
        .await
        .unwrap();

    let reports = [
        UsageReport::new().add("t", 1),                   // ok
        UsageReport::new().add("t", 4).dedup_key("k1"),   // soft breach, recorded
        UsageReport::new().add("t", 4).dedup_key("k1"),   // replay
        UsageReport::new().add("t", 100).dedup_key("k2"), // hard breach, recorded
        UsageReport::new().add("t", 1).add("u", 7),       // two dimensions
    ];
    for report in &reports {
        let spent = trips(&turns, &backend, report).await;
        assert_eq!(spent, 1, "report {report:?} took {spent} round trips");
    }
}

/// A windowed report inside its window is one round trip; the first after a rollover two (the
/// server names the window, Rust computes its bounds, the call is repeated); the next one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_report_round_trips() {
    let Some((proxied, turns)) = common::proxied().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(10_500));
    let backend = initialized(&proxied, "rtw", &clock).await;
    backend
        .set_policy(
            "b",
            &BudgetPolicy::new()
                .limit("t", DimensionLimit::both(5, 10))
                .window(Window::fixed(1_000, 0)),
        )
        .await
        .unwrap();
    // Warm up (statement preparation), inside the window set_policy stored.
    let one = UsageReport::new().add("t", 1);
    backend.report_usage("b", &one).await.unwrap();

    let steps: [(u64, UsageReport, u64); 7] = [
        (10_600, one.clone(), 1),                                      // inside
        (10_700, UsageReport::new().add("t", 4).dedup_key("k1"), 1),   // soft, inside
        (11_000, one.clone(), 2),                                      // first after the rollover
        (11_001, one.clone(), 1),                                      // inside the new window
        (15_000, UsageReport::new().add("t", 100).dedup_key("k2"), 2), // hard after a rollover: nothing written
        (15_001, one.clone(), 2),                                      // so this one rolls over
        (15_002, UsageReport::new().add("t", 4).dedup_key("k1"), 1), // replay of k1 in a later window
    ];
    for (at, report, want) in &steps {
        clock.set(*at);
        let spent = trips(&turns, &backend, report).await;
        assert_eq!(
            spent, *want,
            "report {report:?} at {at} took {spent} round trips"
        );
    }
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 1);
}

/// The plpgsql functions need READ COMMITTED; stowage pins it even where the database default differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_run_read_committed_whatever_the_database_default() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let admin = PostgresBackend::open(&url, ConnectOptions::new().namespace("admin"))
        .await
        .unwrap();
    admin.initialize().await.unwrap();
    let database = stowage_conformance::unique_namespace("iso").to_lowercase();
    let conn_url = url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{database}"))
        .unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {database}").as_str())
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut conn,
        format!("ALTER DATABASE {database} SET default_transaction_isolation = 'repeatable read'")
            .as_str(),
    )
    .await
    .unwrap();
    let mut plain = <sqlx::PgConnection as sqlx::Connection>::connect(&conn_url)
        .await
        .unwrap();
    let default: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(
        default, "repeatable read",
        "the database default really differs"
    );
    let backend = PostgresBackend::open(&conn_url, ConnectOptions::new())
        .await
        .unwrap();
    backend.initialize().await.unwrap();
    assert_eq!(
        backend
            .session_setting("transaction_isolation")
            .await
            .unwrap(),
        "read committed"
    );
    assert_eq!(
        admin
            .session_setting("bad name; drop")
            .await
            .unwrap_err()
            .kind(),
        stowage_core::ErrorKind::InvalidInput
    );
}

/// A backend on `url` in a fresh namespace named from `prefix`, reading `clock`, initialized.
async fn initialized(
    url: &str,
    prefix: &str,
    clock: &Arc<ManualClock>,
) -> stowage_core::Checked<PostgresBackend> {
    let backend = PostgresBackend::open(
        url,
        ConnectOptions::new()
            .namespace(stowage_conformance::unique_namespace(prefix))
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    backend
}

/// `reserve`, `commit`, `release` and each call over several budgets are one round trip (the whole
/// §4.3 sequence runs in one plpgsql call); a commit that applies after a rollover of a windowed
/// budget at most one more (the server names the window, Rust brings its bounds). A reserve
/// writes no counters: right after a rollover it is still one round trip (no window can fail to
/// compute at these times, so the server counts the passed window's counters as zero unasked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_calls_are_one_round_trip() {
    let Some((proxied, turns)) = common::proxied().await else {
        return;
    };
    // 2023-11-14T22:13:20Z, on a 1 s window boundary.
    const T: u64 = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(T + 500));
    let backend = initialized(&proxied, "rtr", &clock).await;
    let limits = BudgetPolicy::new().limit("t", DimensionLimit::both(50, 100));
    backend
        .set_policy("a", &limits.clone().window(Window::fixed(1_000, 0)))
        .await
        .unwrap();
    backend.set_policy("b", &limits).await.unwrap();
    let hold = |id: &str| ReserveRequest::new(id, 10_000).add("t", 5);
    let actual = BTreeMap::from([("t".to_owned(), 3)]);
    let report = |key: &str| UsageReport::new().add("t", 2).dedup_key(key);
    let all: &[&str] = &["c", "a", "b"];
    // Warm up: each statement's first use on the connection prepares it (one extra exchange, once).
    backend.reserve("a", &hold("w")).await.unwrap();
    backend.commit("a", "w", &actual).await.unwrap();
    backend.reserve("a", &hold("w2")).await.unwrap();
    assert!(backend.release("a", "w2").await.unwrap());
    backend.reserve_all(all, &hold("wa")).await.unwrap();
    backend.commit_all(all, "wa", &actual).await.unwrap();
    backend.reserve_all(all, &hold("wb")).await.unwrap();
    backend.release_all(all, "wb").await.unwrap();
    backend.report_usage_all(all, &report("wr")).await.unwrap();

    let (n, r) = turns.of(backend.reserve("a", &hold("r1"))).await;
    assert!(r.unwrap().outcome.is_reserved());
    assert_eq!(n, 1, "reserve");
    let (n, r) = turns.of(backend.reserve("a", &hold("r1"))).await;
    assert!(r.unwrap().replayed);
    assert_eq!(n, 1, "reserve replayed");
    let (n, r) = turns.of(backend.commit("a", "r1", &actual)).await;
    r.unwrap();
    assert_eq!(n, 1, "commit");
    let (n, r) = turns.of(backend.commit("a", "r1", &actual)).await;
    assert!(r.unwrap().replayed);
    assert_eq!(n, 1, "commit replayed");
    backend.reserve("a", &hold("r2")).await.unwrap();
    let (n, r) = turns.of(backend.release("a", "r2")).await;
    assert!(r.unwrap());
    assert_eq!(n, 1, "release");
    let (n, r) = turns.of(backend.reserve_all(all, &hold("m1"))).await;
    r.unwrap();
    assert_eq!(n, 1, "reserve_all");
    let (n, r) = turns.of(backend.commit_all(all, "m1", &actual)).await;
    r.unwrap();
    assert_eq!(n, 1, "commit_all");
    backend.reserve_all(all, &hold("m2")).await.unwrap();
    let (n, r) = turns.of(backend.release_all(all, "m2")).await;
    r.unwrap();
    assert_eq!(n, 1, "release_all");
    let (n, r) = turns.of(backend.report_usage_all(all, &report("k1"))).await;
    r.unwrap();
    assert_eq!(n, 1, "report_usage_all");

    // After a rollover of "a": reserve needs no bounds; commit and the multi calls that apply
    // need one more call.
    backend.reserve("a", &hold("r3")).await.unwrap();
    backend.reserve_all(all, &hold("m3")).await.unwrap();
    clock.set(T + 1_200);
    let (n, r) = turns.of(backend.reserve("a", &hold("r4"))).await;
    r.unwrap();
    assert_eq!(n, 1, "reserve after a rollover");
    let (n, r) = turns.of(backend.reserve_all(all, &hold("m4"))).await;
    r.unwrap();
    assert_eq!(n, 1, "reserve_all after a rollover");
    let (n, r) = turns.of(backend.commit("a", "r3", &actual)).await;
    r.unwrap();
    assert_eq!(n, 2, "commit after a rollover");
    let (n, r) = turns.of(backend.commit("a", "r4", &actual)).await;
    r.unwrap();
    assert_eq!(n, 1, "commit inside the new window");
    clock.set(T + 2_300);
    let (n, r) = turns.of(backend.commit_all(all, "m3", &actual)).await;
    r.unwrap();
    assert_eq!(n, 2, "commit_all after a rollover");
    clock.set(T + 3_400);
    let (n, r) = turns.of(backend.report_usage_all(all, &report("k2"))).await;
    r.unwrap();
    assert_eq!(n, 2, "report_usage_all after a rollover");
    let (n, r) = turns.of(backend.report_usage_all(all, &report("k3"))).await;
    r.unwrap();
    assert_eq!(n, 1, "report_usage_all inside the new window");
}

/// A batch of 100 reports is one round trip whatever its items (several budgets, keys, replays,
/// breaches); right after a rollover two (the first call answers the items of the rolled budget
/// from its first one on with the window, Rust brings its bounds, the second call applies them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_round_trip_two_after_a_rollover() {
    let Some((proxied, turns)) = common::proxied().await else {
        return;
    };
    // 2023-11-14T22:13:20Z, on a 1 s window boundary.
    const T: u64 = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(T + 500));
    let backend = initialized(&proxied, "rtb", &clock).await;
    let limits = BudgetPolicy::new().limit("t", DimensionLimit::both(50, 150));
    backend
        .set_policy("w", &limits.clone().window(Window::fixed(1_000, 0)))
        .await
        .unwrap();
    backend.set_policy("p", &limits).await.unwrap();
    // Warm up (statement preparation), inside the window set_policy stored.
    let warm = [("p".to_owned(), UsageReport::new().add("t", 0))];
    backend.report_usage_batch(&warm).await.unwrap();

    let batch = |round: usize| -> Vec<(String, UsageReport)> {
        (0..100)
            .map(|i| {
                // Every fifth item repeats the one before it: a replay.
                let j = i - usize::from(i % 5 == 4);
                let budget = ["w", "p", "x"][j % 3].to_owned();
                let report = UsageReport::new().add("t", 2).add("u", 1);
                (budget, report.dedup_key(format!("r{round}-{j}")))
            })
            .collect()
    };
    let (n, answers) = turns.of(backend.report_usage_batch(&batch(0))).await;
    let answers = answers.unwrap();
    assert_eq!(n, 1, "a batch of 100");
    assert_eq!(answers.len(), 100);
    // w, p and x get 34, 32 and 34 items, of which 27, 26 and 27 apply (the others replay); w and
    // p breach their soft limit from their 26th.
    let replays = answers
        .iter()
        .filter(|a| a.as_ref().unwrap().replayed)
        .count();
    assert_eq!(replays, 20);
    assert_eq!(backend.usage("w").await.unwrap().counters["t"], 54);
    assert_eq!(backend.usage("x").await.unwrap().counters["u"], 27);

    clock.set(T + 1_500);
    let (n, answers) = turns.of(backend.report_usage_batch(&batch(1))).await;
    assert!(answers.unwrap().iter().all(Result::is_ok));
    assert_eq!(n, 2, "a batch of 100 right after a rollover");
    assert_eq!(backend.usage("w").await.unwrap().counters["t"], 54);
    assert_eq!(backend.usage("p").await.unwrap().counters["t"], 104);

    let (n, answers) = turns.of(backend.report_usage_batch(&batch(2))).await;
    assert!(answers.unwrap().iter().all(Result::is_ok));
    assert_eq!(n, 1, "a batch of 100 inside the new window");
    assert_eq!(backend.usage("w").await.unwrap().counters["t"], 108);
}
