//! Budget windows on PostgreSQL against the reference model: both driven by one `ManualClock`,
//! every answer (values, or error kinds) must be the same.

mod common;

use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_core::{
    BudgetPolicy, ConnectOptions, DimensionLimit, ManualClock, PersistenceBackend, Result,
    UsageReport, Window, WindowBounds, MAX_AMOUNT,
};
use stowage_postgres::PostgresBackend;

/// The engine under test and the model, on the same clock.
struct Pair(Lockstep);

impl std::ops::Deref for Pair {
    type Target = Lockstep;
    fn deref(&self) -> &Lockstep {
        &self.0
    }
}

impl Pair {
    async fn new(at: u64) -> Option<Pair> {
        let url = common::shared_url()?;
        let clock = Arc::new(ManualClock::new(at));
        let options = ConnectOptions::new().clock(clock.clone());
        let namespace = stowage_conformance::unique_namespace("win");
        let pg = PostgresBackend::open(&url, options.clone().namespace(namespace))
            .await
            .unwrap();
        pg.initialize().await.unwrap();
        Some(Pair(Lockstep::new(Arc::new(pg), clock, options)))
    }

    async fn set(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        self.0.set_policy(budget, policy).await?;
        self.0.policy(budget).await.unwrap();
        Ok(())
    }

    async fn report(
        &self,
        budget: &str,
        report: UsageReport,
    ) -> Result<stowage_core::UsageReceipt> {
        self.0.report_usage(budget, &report).await
    }

    async fn delete(&self, budget: &str) -> Result<bool> {
        self.0.delete_policy(budget).await
    }

    async fn reset(&self, budget: &str) -> Result<()> {
        self.0.reset_usage(budget).await
    }
}

fn bounds(start_ms: u64, end_ms: u64) -> Option<WindowBounds> {
    Some(WindowBounds { start_ms, end_ms })
}

fn add(dimension: &str, amount: u64) -> UsageReport {
    UsageReport::new().add(dimension, amount)
}

fn hourly() -> BudgetPolicy {
    BudgetPolicy::new()
        .limit("t", DimensionLimit::both(5, 10))
        .window(Window::fixed(1_000, 0))
}

#[tokio::test]
async fn fixed_window_rolls_over_lazily() {
    let Some(p) = Pair::new(500).await else {
        return;
    };
    // No policy yet: lifetime usage, no window.
    assert_eq!(p.usage("b").await.unwrap().window, None);
    p.set("b", &hourly()).await.unwrap();
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.window, bounds(0, 1_000));
    assert!(u.counters.is_empty());
    p.report("b", add("t", 3)).await.unwrap();
    p.report("b", add("t", 3)).await.unwrap(); // soft
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 6);
    // Next window, before any write: counters are gone, bounds are the new window's.
    p.at(1_500);
    let u = p.usage("b").await.unwrap();
    assert!(u.counters.is_empty());
    assert_eq!(u.window, bounds(1_000, 2_000));
    p.report("b", add("t", 2).add("u", 1)).await.unwrap();
    p.usage("b").await.unwrap();
    // Several windows later.
    p.at(7_000);
    p.usage("b").await.unwrap();
    p.report("b", add("u", 4)).await.unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters.get("t"), None);
    p.at(7_999);
    p.report("b", add("t", 10)).await.unwrap();
    p.usage("b").await.unwrap();
    // reset_usage keeps the window.
    p.reset("b").await.unwrap();
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.window, bounds(7_000, 8_000));
}

#[tokio::test]
async fn lagging_clock_counts_into_the_stored_window() {
    let Some(p) = Pair::new(1_500).await else {
        return;
    };
    p.set("b", &hourly()).await.unwrap();
    p.report("b", add("t", 2)).await.unwrap();
    p.at(900);
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.window, bounds(1_000, 2_000));
    p.report("b", add("t", 2)).await.unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 4);
    p.at(2_000);
    p.usage("b").await.unwrap();
    p.report("b", add("t", 1)).await.unwrap();
    p.at(1_999);
    p.usage("b").await.unwrap();
    p.report("b", add("t", 1)).await.unwrap();
    p.usage("b").await.unwrap();
}

#[tokio::test]
async fn window_changes_keep_or_drop_counters() {
    let Some(p) = Pair::new(10_500).await else {
        return;
    };
    let limits = BudgetPolicy::new().limit("t", DimensionLimit::hard(100));
    p.set("b", &limits).await.unwrap();
    p.report("b", add("t", 4)).await.unwrap();
    // Lifetime → window: the counters stay and become the window's usage.
    p.set("b", &limits.clone().window(Window::fixed(1_000, 0)))
        .await
        .unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 4);
    // Same window, other limits: nothing changes.
    p.set(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::soft(1))
            .window(Window::fixed(1_000, 0)),
    )
    .await
    .unwrap();
    p.usage("b").await.unwrap();
    // Another window while the current one runs: the counters stay.
    p.set("b", &limits.clone().window(Window::fixed(2_000, 100)))
        .await
        .unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 4);
    p.report("b", add("t", 1)).await.unwrap();
    // The window passed: a change drops the counters.
    p.at(13_000);
    p.set("b", &limits.clone().window(Window::fixed(5_000, 0)))
        .await
        .unwrap();
    assert!(p.usage("b").await.unwrap().counters.is_empty());
    p.report("b", add("t", 7)).await.unwrap();
    // Window → lifetime inside the window: kept; and lifetime again is unchanged.
    p.set("b", &limits).await.unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 7);
    p.at(100_000);
    p.set("b", &limits).await.unwrap();
    p.usage("b").await.unwrap();
    // A calendar window whose local year is out of range fails as the model does, changing nothing.
    p.at(5);
    let err = p
        .set("b", &limits.clone().window(Window::day("America/New_York")))
        .await;
    assert!(err.is_err());
    p.usage("b").await.unwrap();
    // An old calendar window whose stored window passed beyond year 9999 cannot be stepped.
    p.at(1_000_000_000_000);
    p.set("c", &limits.clone().window(Window::day("Europe/Berlin")))
        .await
        .unwrap();
    p.report("c", add("t", 1)).await.unwrap();
    p.at(260_000_000_000_000);
    assert!(p.usage("c").await.is_err());
    assert!(p.report("c", add("t", 1)).await.is_err());
    assert!(p
        .set("c", &limits.clone().window(Window::fixed(1_000, 0)))
        .await
        .is_err());
    assert!(p.delete("c").await.is_err());
    p.at(1_000_000_000_000);
    assert_eq!(p.usage("c").await.unwrap().counters["t"], 1);
}

#[tokio::test]
async fn delete_policy_keeps_or_drops_counters() {
    let Some(p) = Pair::new(500).await else {
        return;
    };
    p.set("b", &hourly()).await.unwrap();
    p.report("b", add("t", 3)).await.unwrap();
    assert!(p.delete("b").await.unwrap());
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 3);
    assert!(!p.delete("b").await.unwrap());
    p.set("b", &hourly()).await.unwrap();
    p.report("b", add("t", 1)).await.unwrap();
    p.at(2_500);
    assert!(p.delete("b").await.unwrap());
    let u = p.usage("b").await.unwrap();
    assert!(u.counters.is_empty());
    assert_eq!(u.window, None);
    p.report("b", add("t", 20)).await.unwrap();
    p.usage("b").await.unwrap();
}

#[tokio::test]
async fn hard_breach_in_a_new_window_writes_nothing() {
    let Some(p) = Pair::new(500).await else {
        return;
    };
    p.set("b", &hourly()).await.unwrap();
    p.report("b", add("t", 9).add("u", 2)).await.unwrap();
    p.at(1_500);
    p.report("b", add("t", 11).dedup_key("k")).await.unwrap(); // hard, recorded
    p.report("b", add("t", 11).dedup_key("k")).await.unwrap(); // replay
    let u = p.usage("b").await.unwrap();
    assert!(u.counters.is_empty());
    assert_eq!(u.window, bounds(1_000, 2_000));
    // Back into the stored window (lagging clock): its counters were not touched.
    p.at(999);
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 9);
    // An overflow error in a new window writes nothing either.
    p.at(1_600);
    p.report("b", add("t", 3)).await.unwrap();
    p.report("b", add("t", MAX_AMOUNT)).await.unwrap_err();
    p.usage("b").await.unwrap();
}

#[tokio::test]
async fn dedup_replays_in_the_next_window_apply_nothing() {
    let Some(p) = Pair::new(500).await else {
        return;
    };
    p.set("b", &hourly()).await.unwrap();
    p.report("b", add("t", 6).dedup_key("k")).await.unwrap(); // soft
    p.at(1_200);
    let replay = p.report("b", add("t", 6).dedup_key("k")).await.unwrap();
    assert!(replay.replayed);
    let u = p.usage("b").await.unwrap();
    assert!(u.counters.is_empty());
    p.report("b", add("t", 7).dedup_key("k")).await.unwrap_err(); // conflict
    p.report("b", add("t", 1).dedup_key("k2")).await.unwrap();
    p.report("b", add("t", 6).dedup_key("k")).await.unwrap();
    assert_eq!(p.usage("b").await.unwrap().counters["t"], 1);
}

#[tokio::test]
async fn calendar_month_in_berlin() {
    // 2024-01-31T22:30:00Z = 23:30 in Berlin (CET): still January there.
    let Some(p) = Pair::new(1_706_740_200_000).await else {
        return;
    };
    let policy = BudgetPolicy::new()
        .limit("eur", DimensionLimit::hard(1_000))
        .window(Window::month("Europe/Berlin"));
    p.set("b", &policy).await.unwrap();
    p.report("b", add("eur", 600)).await.unwrap();
    let u = p.usage("b").await.unwrap();
    // January in Berlin: 2023-12-31T23:00Z to 2024-01-31T23:00Z.
    assert_eq!(u.window, bounds(1_704_063_600_000, 1_706_742_000_000));
    // 23:00Z: February 00:00 in Berlin.
    p.at(1_706_742_000_000);
    p.report("b", add("eur", 600)).await.unwrap();
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.counters["eur"], 600);
    // February 2024 (leap year) ends at 2024-02-29T23:00Z.
    assert_eq!(u.window, bounds(1_706_742_000_000, 1_709_247_600_000));
    p.at(1_709_247_599_999);
    p.report("b", add("eur", 500)).await.unwrap(); // hard
    p.at(1_709_247_600_000);
    p.report("b", add("eur", 500)).await.unwrap();
    p.usage("b").await.unwrap();
    // Across the switch to summer time (2024-03-31): April starts 2024-03-31T22:00Z.
    p.at(1_711_922_400_000);
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.window, bounds(1_711_922_400_000, 1_714_514_400_000));
}

#[tokio::test]
async fn exact_amounts_near_max_amount() {
    let max = MAX_AMOUNT;
    let Some(p) = Pair::new(max - 1_500).await else {
        return;
    };
    let policy = BudgetPolicy::new()
        .limit("t", DimensionLimit::both(max - 1, max))
        .window(Window::fixed(1_000, 0));
    p.set("b", &policy).await.unwrap();
    p.report("b", add("t", max - 2)).await.unwrap();
    p.report("b", add("t", 1)).await.unwrap();
    p.report("b", add("t", 1)).await.unwrap(); // soft: max
    p.report("b", add("t", 1)).await.unwrap_err(); // overflow
    p.usage("b").await.unwrap();
    // The last window ends at MAX_AMOUNT and holds MAX_AMOUNT itself.
    p.at(max - 100);
    let u = p.usage("b").await.unwrap();
    assert!(u.counters.is_empty());
    p.report("b", add("t", max)).await.unwrap();
    p.at(max);
    let u = p.usage("b").await.unwrap();
    assert_eq!(u.counters["t"], max);
    assert_eq!(u.window.map(|w| w.end_ms), Some(max));
    p.report("b", add("t", 1)).await.unwrap_err();
    p.report("b", add("u", max)).await.unwrap();
    p.usage("b").await.unwrap();
}
