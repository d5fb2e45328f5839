//! Budget windows (SEMANTICS §4.1) on Valkey, standalone and cluster: every step runs on Valkey
//! and on `MemoryBackend` driven by the same `ManualClock`, and both must answer the same (equal
//! values, or errors of the same kind). Also the round trips a windowed report costs.

mod common;

use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_conformance::servers::valkey::{self, ValkeySettings};
use stowage_core::{
    BudgetPolicy, BudgetUsage, ConnectOptions, DimensionLimit, ManualClock, PersistenceBackend,
    UsageReceipt, UsageReport, Window, WindowBounds, MAX_AMOUNT,
};
use stowage_valkey::ValkeyBackend;

const HOUR: u64 = 3_600_000;
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;

fn standalone() -> Option<String> {
    common::url_or_skip("valkey", valkey::shared_url())
}

fn cluster() -> Option<String> {
    common::url_or_skip("valkey-cluster", valkey::shared_cluster_url())
}

/// Valkey and the reference model on one manual clock.
struct Pair {
    url: String,
    namespace: String,
    lockstep: Lockstep,
}

impl std::ops::Deref for Pair {
    type Target = Lockstep;
    fn deref(&self) -> &Lockstep {
        &self.lockstep
    }
}

impl Pair {
    async fn open(url: &str, now: u64) -> Pair {
        let clock = Arc::new(ManualClock::new(now));
        let namespace = stowage_conformance::unique_namespace("win");
        let options = ConnectOptions::new()
            .namespace(namespace.clone())
            .clock(clock.clone());
        let valkey = ValkeyBackend::open(url, options.clone()).await.unwrap();
        valkey.initialize().await.unwrap();
        Pair {
            url: url.to_owned(),
            namespace,
            lockstep: Lockstep::new(Arc::new(valkey), clock, options),
        }
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) {
        self.lockstep.set_policy(budget, policy).await.unwrap();
        self.lockstep.policy(budget).await.unwrap();
    }

    async fn delete_policy(&self, budget: &str) -> bool {
        self.lockstep.delete_policy(budget).await.unwrap()
    }

    async fn report(&self, budget: &str, report: &UsageReport) -> UsageReceipt {
        let receipt = self.lockstep.report_usage(budget, report).await.unwrap();
        self.usage(budget).await;
        receipt
    }

    async fn usage(&self, budget: &str) -> BudgetUsage {
        self.lockstep.usage(budget).await.unwrap()
    }

    /// Both fail, with the same kind.
    async fn report_fails(&self, budget: &str, report: &UsageReport) {
        self.lockstep
            .report_usage(budget, report)
            .await
            .unwrap_err();
    }
}

fn add(dimension: &str, delta: u64) -> UsageReport {
    UsageReport::new().add(dimension, delta)
}

fn hourly(hard: u64) -> BudgetPolicy {
    BudgetPolicy::new()
        .limit("t", DimensionLimit::both(hard / 2, hard))
        .window(Window::fixed(HOUR, 0))
}

/// The hour containing `now`.
fn hour_of(now: u64) -> WindowBounds {
    let start = now - now % HOUR;
    WindowBounds {
        start_ms: start,
        end_ms: start + HOUR,
    }
}

async fn fixed_window_rollover(url: String) {
    let p = Pair::open(&url, T0).await;
    p.set_policy("b", &hourly(10)).await;
    // Before any write: empty counters, the window containing now.
    let usage = p.usage("b").await;
    assert!(usage.counters.is_empty());
    assert_eq!(usage.window, Some(hour_of(T0)));
    p.report("b", &add("t", 4)).await;
    p.report("b", &add("t", 3)).await;
    assert_eq!(p.usage("b").await.counters["t"], 7);
    // The next hour: usage before any write shows nothing, with the new bounds.
    let next = hour_of(T0).end_ms;
    p.at(next);
    let usage = p.usage("b").await;
    assert!(usage.counters.is_empty());
    assert_eq!(usage.window, Some(hour_of(next)));
    p.report("b", &add("t", 9)).await;
    assert_eq!(p.usage("b").await.counters["t"], 9);
    // Several hours later, other dimensions: the old ones are gone too.
    p.at(next + 5 * HOUR + 17);
    p.report("b", &add("u", 1)).await;
    let usage = p.usage("b").await;
    assert_eq!(usage.counters.len(), 1);
    // reset_usage keeps the window; purge removes it.
    p.reset_usage("b").await.unwrap();
    p.usage("b").await;
    p.report("b", &add("t", 2)).await;
    let raw = common::RawClient::open(&p.url).await;
    let ns = common::key_namespace(&p.url, &p.namespace).await;
    let keys = stowage_valkey::raw::budget_call_keys(&ns, "b", None);
    assert_eq!(raw.existing(&keys).await, keys, "counters, policy, window");
    p.purge().await.unwrap();
    assert!(raw.existing(&keys).await.is_empty());
    assert_eq!(p.usage("b").await, BudgetUsage::default());
}

async fn lagging_clock(url: String) {
    let p = Pair::open(&url, T0).await;
    p.set_policy("b", &hourly(10)).await;
    let next = hour_of(T0).end_ms;
    p.at(next + 10);
    p.report("b", &add("t", 2)).await;
    // A process whose clock lags counts into the stored (later) window.
    p.at(T0);
    let usage = p.usage("b").await;
    assert_eq!(usage.counters["t"], 2);
    assert_eq!(usage.window, Some(hour_of(next)));
    p.report("b", &add("t", 3)).await;
    assert_eq!(p.usage("b").await.counters["t"], 5);
}

async fn window_change_keeps_counters(url: String) {
    let p = Pair::open(&url, T0).await;
    // Lifetime counters first, then a window: they become the window's usage.
    p.set_policy(
        "b",
        &BudgetPolicy::new().limit("t", DimensionLimit::hard(100)),
    )
    .await;
    p.report("b", &add("t", 5)).await;
    p.set_policy("b", &hourly(100)).await;
    assert_eq!(p.usage("b").await.counters["t"], 5);
    // Same window again: nothing changes.
    p.set_policy("b", &hourly(50)).await;
    p.report("b", &add("t", 1)).await;
    // A different window keeps the counters usage shows.
    p.set_policy("b", &hourly(50).window(Window::fixed(2 * HOUR, HOUR / 2)))
        .await;
    assert_eq!(p.usage("b").await.counters["t"], 6);
    // A window that has passed: changing then drops the counters.
    p.at(T0 + 10 * HOUR);
    p.set_policy("b", &hourly(50).window(Window::day("UTC")))
        .await;
    assert!(p.usage("b").await.counters.is_empty());
    p.report("b", &add("t", 7)).await;
    // Removing the window keeps them as lifetime counters.
    p.set_policy("b", &BudgetPolicy::new()).await;
    let usage = p.usage("b").await;
    assert_eq!((usage.counters["t"], usage.window), (7, None));
    // Setting a window on a budget whose policy never had one, with counters: kept.
    p.at(T0 + 100 * HOUR);
    p.set_policy("b", &hourly(50)).await;
    assert_eq!(p.usage("b").await.counters["t"], 7);
}

async fn delete_policy(url: String) {
    let p = Pair::open(&url, T0).await;
    assert!(!p.delete_policy("b").await);
    p.set_policy("b", &hourly(10)).await;
    p.report("b", &add("t", 3)).await;
    assert!(p.delete_policy("b").await);
    let usage = p.usage("b").await;
    assert_eq!((usage.counters["t"], usage.window), (3, None));
    // Deleted after the window passed: the counters are gone.
    p.set_policy("c", &hourly(10)).await;
    p.report("c", &add("t", 3)).await;
    p.at(T0 + 2 * HOUR);
    assert!(p.delete_policy("c").await);
    assert_eq!(p.usage("c").await, BudgetUsage::default());
    p.report("c", &add("t", 1)).await;
    // A windowed policy set again starts from what is there.
    p.set_policy("c", &hourly(10)).await;
    assert_eq!(p.usage("c").await.counters["t"], 1);
}

async fn hard_breach_in_a_new_window_writes_nothing(url: String) {
    let p = Pair::open(&url, T0).await;
    p.set_policy("b", &hourly(10)).await;
    p.report("b", &add("t", 8)).await;
    p.at(hour_of(T0).end_ms + 1);
    let receipt = p.report("b", &add("t", 11).dedup_key("k")).await;
    assert!(!receipt.outcome.is_applied());
    // Nothing was written: back in the old window's time, the old counters are still there.
    p.at(T0);
    assert_eq!(p.usage("b").await.counters["t"], 8);
    // The dedup key was recorded all the same.
    p.at(hour_of(T0).end_ms + 2);
    assert!(p.report("b", &add("t", 11).dedup_key("k")).await.replayed);
    // The first report that applies rolls the window over.
    p.report("b", &add("t", 1)).await;
    p.at(T0);
    assert_eq!(p.usage("b").await.counters["t"], 1);
}

async fn dedup_replay_in_the_next_window(url: String) {
    let p = Pair::open(&url, T0).await;
    p.set_policy("b", &hourly(10)).await;
    p.report("b", &add("t", 4).dedup_key("k")).await;
    p.at(hour_of(T0).end_ms + 5);
    let receipt = p.report("b", &add("t", 4).dedup_key("k")).await;
    assert!(receipt.replayed);
    let usage = p.usage("b").await;
    assert!(usage.counters.is_empty());
    p.report_fails("b", &add("t", 5).dedup_key("k")).await;
}

async fn calendar_month_in_berlin(url: String) {
    // 2024-03-31T21:59:59.999Z is the last millisecond of March in Berlin (CEST, +2).
    let end_of_march = 1_711_922_399_999;
    let p = Pair::open(&url, end_of_march - 3 * 24 * HOUR).await;
    p.set_policy(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::hard(10))
            .window(Window::month("Europe/Berlin")),
    )
    .await;
    p.report("b", &add("t", 6)).await;
    p.at(end_of_march);
    p.report("b", &add("t", 4)).await;
    p.report_fails_or_breach("b").await;
    p.at(end_of_march + 1);
    let usage = p.usage("b").await;
    assert!(usage.counters.is_empty());
    assert_eq!(usage.window.unwrap().start_ms, end_of_march + 1);
    p.report("b", &add("t", 10)).await;
    // Outside the calendar's years: the same error kind on both.
    p.at(MAX_AMOUNT);
    p.report_fails("b", &add("t", 1)).await;
    p.lockstep.usage("b").await.unwrap_err();
    // Setting the same window again changes nothing and needs no bounds; a new calendar window
    // whose bounds cannot be computed fails on both, writing nothing.
    p.set_policy(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::hard(20))
            .window(Window::month("Europe/Berlin")),
    )
    .await;
    let day = BudgetPolicy::new().window(Window::day("Europe/Berlin"));
    p.lockstep.set_policy("b", &day).await.unwrap_err();
    p.lockstep.delete_policy("b").await.unwrap_err();
    p.at(end_of_march + 2);
    assert_eq!(p.usage("b").await.counters["t"], 10);
    p.policy("b").await.unwrap();
}

impl Pair {
    async fn report_fails_or_breach(&self, budget: &str) {
        let receipt = self.report(budget, &add("t", 1)).await;
        assert!(!receipt.outcome.is_applied());
    }
}

async fn bounds_near_max_amount(url: String) {
    // A period that does not divide MAX_AMOUNT: the last window is cut at MAX_AMOUNT and never ends.
    let period = 1_000_000_000_000_007;
    let last_start = MAX_AMOUNT - MAX_AMOUNT % period;
    let p = Pair::open(&url, last_start - 1).await;
    p.set_policy(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::hard(MAX_AMOUNT))
            .window(Window::fixed(period, 0)),
    )
    .await;
    p.report("b", &add("t", MAX_AMOUNT - 1)).await;
    assert_eq!(
        p.usage("b").await.window,
        Some(WindowBounds {
            start_ms: last_start - period,
            end_ms: last_start
        })
    );
    p.at(last_start);
    p.report("b", &add("t", MAX_AMOUNT)).await;
    p.at(MAX_AMOUNT);
    let usage = p.usage("b").await;
    assert_eq!(usage.counters["t"], MAX_AMOUNT);
    assert_eq!(
        usage.window,
        Some(WindowBounds {
            start_ms: last_start,
            end_ms: MAX_AMOUNT
        })
    );
    p.report_fails("b", &add("t", 1)).await;
    p.report("b", &add("u", MAX_AMOUNT)).await;
    // The last window never ends; a calendar window cannot start at MAX_AMOUNT: both refuse.
    let month = BudgetPolicy::new().window(Window::month("UTC"));
    p.lockstep.set_policy("b", &month).await.unwrap_err();
    assert_eq!(p.usage("b").await.counters["u"], MAX_AMOUNT);
    // Removing the window keeps the counters as lifetime counters.
    p.set_policy("b", &BudgetPolicy::new()).await;
    assert_eq!(p.usage("b").await.counters["t"], MAX_AMOUNT);
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod standalone { $(
            #[tokio::test]
            async fn $name() {
                if let Some(url) = super::standalone() { super::$name(url).await }
            }
        )* }
        mod cluster { $(
            #[tokio::test]
            async fn $name() {
                if let Some(url) = super::cluster() { super::$name(url).await }
            }
        )* }
    };
}

on_both!(
    fixed_window_rollover,
    lagging_clock,
    window_change_keeps_counters,
    delete_policy,
    hard_breach_in_a_new_window_writes_nothing,
    dedup_replay_in_the_next_window,
    calendar_month_in_berlin,
    bounds_near_max_amount,
);

/// EVALSHA calls the server has counted.
async fn evalsha_calls(raw: &common::RawClient) -> u64 {
    let info: String = raw
        .query(redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The EVALSHA calls one report takes.
async fn report_trips(p: &Pair, raw: &common::RawClient, report: UsageReport) -> u64 {
    let before = evalsha_calls(raw).await;
    p.backend().report_usage("b", &report).await.unwrap();
    evalsha_calls(raw).await - before
}

#[tokio::test]
async fn one_round_trip_inside_a_window_two_after_a_rollover() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let p = Pair::open(&server.url(), T0).await;
    let raw = common::RawClient::open(&server.url()).await;
    p.set_policy("b", &hourly(100)).await;
    // set_policy stored the window: the first report is inside it.
    assert_eq!(report_trips(&p, &raw, add("t", 1)).await, 1);
    assert_eq!(report_trips(&p, &raw, add("t", 1).dedup_key("k")).await, 1);
    p.at(T0 + HOUR);
    assert_eq!(
        report_trips(&p, &raw, add("t", 1)).await,
        2,
        "after a rollover"
    );
    assert_eq!(report_trips(&p, &raw, add("t", 1)).await, 1);
    // A replay in the next window: one round trip, nothing applied.
    p.at(T0 + 2 * HOUR);
    assert_eq!(report_trips(&p, &raw, add("t", 1).dedup_key("k")).await, 1);
    assert_eq!(report_trips(&p, &raw, add("t", 1)).await, 2);
    // usage: one round trip; set_policy changing a current window: one.
    let before = evalsha_calls(&raw).await;
    p.backend().usage("b").await.unwrap();
    p.backend()
        .set_policy("b", &hourly(100).window(Window::day("UTC")))
        .await
        .unwrap();
    assert_eq!(evalsha_calls(&raw).await - before, 2);
    // Changing a window that has passed: a second one checks the old window's bounds.
    p.at(T0 + 100 * HOUR);
    let before = evalsha_calls(&raw).await;
    p.backend().set_policy("b", &hourly(100)).await.unwrap();
    assert_eq!(evalsha_calls(&raw).await - before, 2);
}
