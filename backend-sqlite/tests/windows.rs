//! Budget windows (SEMANTICS §4.1) on SQLite, step by step against the reference model
//! (`MemoryBackend`) driven by the same `ManualClock`: every answer must be the model's, and the
//! tests also pin the answers the contract spells out.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_conformance::lockstep::Lockstep;
use stowage_core::{
    BudgetPolicy, ConnectOptions, DimensionLimit, ErrorKind, ManualClock, PersistenceBackend,
    UsageOutcome, UsageReceipt, UsageReport, Window, WindowBounds,
};
use stowage_sqlite::SqliteBackend;

const HOUR: u64 = 3_600_000;

/// The reference model and a SQLite backend reading the same clock.
struct Pair(Lockstep);

impl std::ops::Deref for Pair {
    type Target = Lockstep;
    fn deref(&self) -> &Lockstep {
        &self.0
    }
}

impl Pair {
    /// A fresh file (reads on the reader threads) or `sqlite::memory:` (reads on the writer thread).
    async fn new(url: &str, now: u64) -> Pair {
        let clock = Arc::new(ManualClock::new(now));
        let options = ConnectOptions::new().clock(clock.clone());
        let sqlite = SqliteBackend::open(url, options.clone()).await.unwrap();
        sqlite.initialize().await.unwrap();
        Pair(Lockstep::new(Arc::new(sqlite), clock, options))
    }

    async fn file(name: &str, now: u64) -> Pair {
        Pair::new(&common::fresh_file_url(name), now).await
    }

    async fn report(&self, budget: &str, report: &UsageReport) -> UsageReceipt {
        self.0.report_usage(budget, report).await.unwrap()
    }

    /// `usage` of `budget`, checked against the expected counters and window.
    async fn expect(&self, budget: &str, counters: &[(&str, u64)], window: Option<(u64, u64)>) {
        let usage = self.usage(budget).await.unwrap();
        let counters: BTreeMap<String, u64> = counters
            .iter()
            .map(|(d, v)| ((*d).to_owned(), *v))
            .collect();
        assert_eq!(usage.counters, counters, "counters at {}", self.now());
        assert!(usage.pending.is_empty());
        assert_eq!(
            usage.window,
            window.map(|(start_ms, end_ms)| WindowBounds { start_ms, end_ms }),
            "window at {}",
            self.now()
        );
    }
}

fn hourly(limit: DimensionLimit) -> BudgetPolicy {
    BudgetPolicy::new()
        .limit("t", limit)
        .window(Window::fixed(HOUR, 0))
}

fn add(dimension: &str, amount: u64) -> UsageReport {
    UsageReport::new().add(dimension, amount)
}

fn ok() -> UsageReceipt {
    UsageReceipt {
        outcome: UsageOutcome::Ok,
        replayed: false,
    }
}

// 10_000_000 ms lies in the hour window [7_200_000, 10_800_000).
const IN_W2: u64 = 10_000_000;
const W2: (u64, u64) = (2 * HOUR, 3 * HOUR);
const W3: (u64, u64) = (3 * HOUR, 4 * HOUR);

async fn rollover_on(p: &Pair) {
    p.set_policy("b", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    // Before any write: no counters, the bounds of the window holding now.
    p.expect("b", &[], Some(W2)).await;
    assert_eq!(p.report("b", &add("t", 30)).await, ok());
    p.expect("b", &[("t", 30)], Some(W2)).await;
    p.at(3 * HOUR - 1);
    assert_eq!(p.report("b", &add("t", 5)).await, ok());
    p.expect("b", &[("t", 35)], Some(W2)).await;
    // The end of the window: the counters are gone before any write, with the new bounds.
    p.at(3 * HOUR);
    p.expect("b", &[], Some(W3)).await;
    // A report in another dimension rolls over: the old window's counters are deleted.
    assert_eq!(p.report("b", &add("u", 7)).await, ok());
    p.expect("b", &[("u", 7)], Some(W3)).await;
    // Many idle windows later: the window holding now.
    p.at(27 * HOUR + 5);
    p.expect("b", &[], Some((27 * HOUR, 28 * HOUR))).await;
    assert_eq!(p.report("b", &add("t", 1)).await, ok());
    p.expect("b", &[("t", 1)], Some((27 * HOUR, 28 * HOUR)))
        .await;
    // reset_usage drops the counters and keeps the window.
    p.reset_usage("b").await.unwrap();
    p.expect("b", &[], Some((27 * HOUR, 28 * HOUR))).await;
    assert_eq!(p.report("b", &add("t", 2)).await, ok());
    p.expect("b", &[("t", 2)], Some((27 * HOUR, 28 * HOUR)))
        .await;
    // purge removes policies, counters and windows.
    p.purge().await.unwrap();
    p.expect("b", &[], None).await;
}

#[tokio::test]
async fn a_fixed_window_rolls_over_lazily() {
    rollover_on(&Pair::file("windows-rollover", IN_W2).await).await;
}

#[tokio::test]
async fn a_fixed_window_rolls_over_lazily_in_memory() {
    rollover_on(&Pair::new("sqlite::memory:", IN_W2).await).await;
}

#[tokio::test]
async fn a_lagging_clock_counts_into_the_stored_window() {
    let p = Pair::file("windows-lagging", IN_W2).await;
    p.set_policy("b", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("b", &add("t", 10)).await, ok());
    // A process whose clock lags, before the stored window's start.
    p.at(5_000_000);
    p.expect("b", &[("t", 10)], Some(W2)).await;
    assert_eq!(p.report("b", &add("t", 5)).await, ok());
    p.expect("b", &[("t", 15)], Some(W2)).await;
    p.at(3 * HOUR);
    p.expect("b", &[], Some(W3)).await;
    assert_eq!(p.report("b", &add("t", 1)).await, ok());
    // Lagging behind the new window again: it is the one counted into.
    p.at(IN_W2);
    p.expect("b", &[("t", 1)], Some(W3)).await;
}

#[tokio::test]
async fn set_policy_changes_the_window_keeping_the_counters_usage_shows() {
    let p = Pair::file("windows-set-policy", IN_W2).await;
    let daily = BudgetPolicy::new()
        .limit("t", DimensionLimit::hard(100))
        .window(Window::day("UTC"));
    let day = (0, 24 * HOUR);

    // Inside the stored window: the counters move to the new window.
    p.set_policy("b", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("b", &add("t", 40)).await, ok());
    p.set_policy("b", &daily).await.unwrap();
    p.expect("b", &[("t", 40)], Some(day)).await;
    assert_eq!(p.report("b", &add("t", 1)).await, ok());
    p.expect("b", &[("t", 41)], Some(day)).await;
    // The same window again (other limits) changes nothing.
    p.set_policy(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::hard(500))
            .window(Window::day("UTC")),
    )
    .await
    .unwrap();
    p.expect("b", &[("t", 41)], Some(day)).await;

    // The stored window has passed: its counters are zero and stay zero in the new window.
    p.set_policy("c", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("c", &add("t", 40)).await, ok());
    p.at(3 * HOUR + 1);
    p.set_policy("c", &daily).await.unwrap();
    p.expect("c", &[], Some(day)).await;
    assert_eq!(p.report("c", &add("t", 3)).await, ok());
    p.expect("c", &[("t", 3)], Some(day)).await;

    // Lifetime counters become the new window's usage.
    p.set_policy(
        "d",
        &BudgetPolicy::new().limit("t", DimensionLimit::hard(100)),
    )
    .await
    .unwrap();
    assert_eq!(p.report("d", &add("t", 9)).await, ok());
    p.expect("d", &[("t", 9)], None).await;
    p.set_policy("d", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    p.expect("d", &[("t", 9)], Some(W3)).await;
    // The window set by set_policy is stored: a lagging clock counts into it.
    p.at(IN_W2);
    p.expect("d", &[("t", 9)], Some(W3)).await;
}

#[tokio::test]
async fn delete_policy_keeps_the_counters_as_lifetime_counters() {
    let p = Pair::file("windows-delete-policy", IN_W2).await;
    p.set_policy("b", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("b", &add("t", 25)).await, ok());
    p.at(10_500_000);
    assert!(p.delete_policy("b").await.unwrap());
    p.expect("b", &[("t", 25)], None).await;
    assert_eq!(p.report("b", &add("t", 5)).await, ok());
    p.at(100 * HOUR);
    p.expect("b", &[("t", 30)], None).await;
    assert!(!p.delete_policy("b").await.unwrap());
    p.expect("b", &[("t", 30)], None).await;

    // Deleted after the window passed: its counters are zero and stay so.
    p.at(IN_W2);
    p.set_policy("c", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("c", &add("t", 25)).await, ok());
    p.at(3 * HOUR);
    assert!(p.delete_policy("c").await.unwrap());
    p.expect("c", &[], None).await;

    // Removing the window by set_policy works the same way.
    p.at(IN_W2);
    p.set_policy("e", &hourly(DimensionLimit::hard(100)))
        .await
        .unwrap();
    assert_eq!(p.report("e", &add("t", 4)).await, ok());
    p.set_policy(
        "e",
        &BudgetPolicy::new().limit("t", DimensionLimit::hard(100)),
    )
    .await
    .unwrap();
    p.at(50 * HOUR);
    p.expect("e", &[("t", 4)], None).await;
}

#[tokio::test]
async fn a_hard_breach_in_a_new_window_writes_nothing() {
    let p = Pair::file("windows-hard-breach", IN_W2).await;
    p.set_policy("b", &hourly(DimensionLimit::hard(50)))
        .await
        .unwrap();
    assert_eq!(p.report("b", &add("t", 40)).await, ok());
    p.at(3 * HOUR);
    let receipt = p.report("b", &add("t", 60)).await;
    assert!(!receipt.replayed);
    let UsageOutcome::HardBreach(breaches) = &receipt.outcome else {
        panic!("expected a hard breach, got {receipt:?}");
    };
    // Checked against the new window's counters (zero), not the old window's 40.
    assert_eq!(breaches.len(), 1);
    assert_eq!(breaches[0].dimension, "t");
    assert_eq!(breaches[0].usage, 0);
    p.expect("b", &[], Some(W3)).await;
    // Nothing was written: with a lagging clock the old window and its counters are still there.
    p.at(IN_W2);
    p.expect("b", &[("t", 40)], Some(W2)).await;
    // A report that fits in the new window then rolls over.
    p.at(3 * HOUR);
    assert_eq!(p.report("b", &add("t", 50)).await, ok());
    p.expect("b", &[("t", 50)], Some(W3)).await;
}

#[tokio::test]
async fn a_dedup_replay_in_the_next_window_applies_nothing() {
    let p = Pair::file("windows-dedup", IN_W2).await;
    p.set_policy("b", &hourly(DimensionLimit::soft(5)))
        .await
        .unwrap();
    let report = add("t", 10).dedup_key("k");
    let first = p.report("b", &report).await;
    assert!(!first.replayed);
    assert!(matches!(first.outcome, UsageOutcome::SoftBreach(_)));
    p.at(3 * HOUR);
    let again = p.report("b", &report).await;
    assert!(again.replayed);
    assert_eq!(again.outcome, first.outcome);
    p.expect("b", &[], Some(W3)).await;
    // The replay rolled nothing over: the old window is still stored.
    p.at(IN_W2);
    p.expect("b", &[("t", 10)], Some(W2)).await;
    // The same key with another report conflicts, in any window.
    p.at(3 * HOUR);
    let answer = p.report_usage("b", &add("t", 11).dedup_key("k")).await;
    assert_eq!(answer.map_err(|e| e.kind()), Err(ErrorKind::Conflict));
}

#[tokio::test]
async fn a_calendar_month_in_berlin() {
    // Bounds computed independently (Python zoneinfo): local midnight of the 1st in Berlin.
    const OCT: u64 = 1_790_805_600_000; // 2026-10-01 00:00 CEST = 2026-09-30T22:00Z
    const NOV: u64 = 1_793_487_600_000; // 2026-11-01 00:00 CET = 2026-10-31T23:00Z
    const DEC: u64 = 1_796_079_600_000; // 2026-12-01 00:00 CET = 2026-11-30T23:00Z
    const MID_OCT: u64 = 1_792_065_600_000; // 2026-10-15T12:00Z
    let p = Pair::file("windows-berlin", MID_OCT).await;
    p.set_policy(
        "b",
        &BudgetPolicy::new()
            .limit("t", DimensionLimit::hard(1_000))
            .window(Window::month("Europe/Berlin")),
    )
    .await
    .unwrap();
    p.expect("b", &[], Some((OCT, NOV))).await;
    assert_eq!(p.report("b", &add("t", 300)).await, ok());
    // The last millisecond of October in Berlin (after the switch back to CET).
    p.at(NOV - 1);
    assert_eq!(p.report("b", &add("t", 1)).await, ok());
    p.expect("b", &[("t", 301)], Some((OCT, NOV))).await;
    p.at(NOV);
    p.expect("b", &[], Some((NOV, DEC))).await;
    assert_eq!(p.report("b", &add("t", 2)).await, ok());
    p.expect("b", &[("t", 2)], Some((NOV, DEC))).await;
}
