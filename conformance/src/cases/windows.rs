//! SEMANTICS §4.1: windows — counters that start again every fixed period or calendar unit.
//!
//! Every expected bound is a constant computed independently of stowage (Python's `zoneinfo`,
//! tzdata 2025b, for calendar windows; by hand for fixed ones), never with `Window::bounds_at`.
//! Each case moves its context's `ManualClock`, which starts at `START_MS`
//! (2023-11-14T22:13:20Z).

use std::collections::BTreeMap;

use stowage_core::{
    Backend, BudgetPolicy, BudgetUsage, DimensionLimit, ErrorKind, UsageOutcome, Window,
    WindowBounds, MAX_AMOUNT,
};

use super::{
    assert_kind, breach, counters, fresh, keyed, must_report, policy, replayed, report, usage_of,
};
use crate::{Ctx, START_MS};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// `[start_ms, end_ms)`.
fn bounds(start_ms: u64, end_ms: u64) -> WindowBounds {
    WindowBounds { start_ms, end_ms }
}

/// A policy without limits counting per `window`.
fn windowed(window: Window) -> BudgetPolicy {
    BudgetPolicy::new().window(window)
}

/// Asserts the whole usage of `budget`: these counters, nothing pending, this window.
#[track_caller]
fn assert_usage(got: BudgetUsage, pairs: &[(&str, u64)], window: Option<WindowBounds>) {
    assert_eq!(
        got,
        BudgetUsage {
            counters: counters(pairs),
            pending: BTreeMap::new(),
            window,
        }
    );
}

async fn usage(b: &dyn Backend, budget: &str) -> BudgetUsage {
    b.usage(budget)
        .await
        .unwrap_or_else(|e| panic!("usage {budget:?} failed: {e}"))
}

/// Moves the clock to the first instant of `next` and asserts that `usage` shows it with empty
/// counters, before any write.
async fn starts_empty(ctx: &Ctx, b: &dyn Backend, next: WindowBounds) {
    ctx.clock.set(next.start_ms);
    assert_usage(usage(b, "p").await, &[], Some(next));
}

/// Reports `a = delta` without a key and asserts it was applied with `Ok`.
async fn add(b: &dyn Backend, budget: &str, delta: u64) {
    assert_eq!(
        must_report(b, budget, &report(&[("a", delta)])).await,
        fresh(UsageOutcome::Ok),
        "report a={delta} to {budget:?}"
    );
}

/// Fixed windows start at `offset` past every multiple of the period and end exactly one period later.
pub async fn fixed_windows_follow_their_offset(ctx: Ctx) {
    let b = &*ctx.backend;
    // START_MS is a multiple of 10 s: windows start at …3_000 past it.
    b.set_policy("p", &windowed(Window::fixed(10_000, 3_000)))
        .await
        .unwrap();
    b.set_policy("zero", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    let first = bounds(1_699_999_993_000, 1_700_000_003_000);
    add(b, "p", 5).await;
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(first));
    assert_usage(
        usage(b, "zero").await,
        &[],
        Some(bounds(START_MS, 1_700_000_010_000)),
    );
    ctx.clock.set(1_700_000_002_999);
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 6)], Some(first));
    ctx.clock.set(1_700_000_003_000);
    let second = bounds(1_700_000_003_000, 1_700_000_013_000);
    assert_usage(usage(b, "p").await, &[], Some(second));
    add(b, "p", 2).await;
    assert_usage(usage(b, "p").await, &[("a", 2)], Some(second));
}

/// A Europe/Berlin month runs from 1 March 00:00 CET to 1 April 00:00 CEST, across the DST change.
pub async fn a_berlin_month_spans_the_march_dst_change(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_772_319_599_999); // 2026-02-28 23:59:59.999 CET
    b.set_policy("p", &windowed(Window::month("Europe/Berlin")))
        .await
        .unwrap();
    add(b, "p", 7).await;
    assert_usage(
        usage(b, "p").await,
        &[("a", 7)],
        Some(bounds(1_769_900_400_000, 1_772_319_600_000)),
    );
    let march = bounds(1_772_319_600_000, 1_774_994_400_000);
    ctx.clock.set(1_772_319_600_000); // 2026-03-01 00:00 CET
    assert_usage(usage(b, "p").await, &[], Some(march));
    add(b, "p", 1).await;
    ctx.clock.set(1_774_778_400_000); // 2026-03-29 12:00 CEST, after the change
    add(b, "p", 2).await;
    ctx.clock.set(1_774_994_399_999); // 2026-03-31 23:59:59.999 CEST
    add(b, "p", 3).await;
    assert_usage(usage(b, "p").await, &[("a", 6)], Some(march));
    starts_empty(&ctx, b, bounds(1_774_994_400_000, 1_777_586_400_000)).await; // 2026-04-01 00:00 CEST
}

/// America/New_York days last 23 hours on 2026-03-08 and 25 hours on 2026-11-01.
pub async fn new_york_days_last_23_and_25_hours(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_772_946_000_000); // 2026-03-08 00:00 EST
    b.set_policy("p", &windowed(Window::day("America/New_York")))
        .await
        .unwrap();
    let spring = bounds(1_772_946_000_000, 1_773_028_800_000);
    assert_eq!(spring.end_ms - spring.start_ms, 23 * HOUR);
    add(b, "p", 1).await;
    ctx.clock.set(1_773_028_799_999); // 2026-03-08 23:59:59.999 EDT
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 2)], Some(spring));
    starts_empty(&ctx, b, bounds(1_773_028_800_000, 1_773_115_200_000)).await; // 2026-03-09 00:00 EDT
    let autumn = bounds(1_793_505_600_000, 1_793_595_600_000);
    assert_eq!(autumn.end_ms - autumn.start_ms, 25 * HOUR);
    ctx.clock.set(1_793_505_600_000); // 2026-11-01 00:00 EDT
    add(b, "p", 4).await;
    ctx.clock.set(1_793_595_599_999); // 2026-11-01 23:59:59.999 EST
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(autumn));
    starts_empty(&ctx, b, bounds(1_793_595_600_000, 1_793_682_000_000)).await; // 2026-11-02 00:00 EST
}

/// ISO weeks run from Monday 00:00 to the next Monday 00:00: Sunday belongs to the week before.
pub async fn iso_weeks_start_on_monday(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_795_391_999_999); // Sunday 2026-11-22 23:59:59.999 UTC
    b.set_policy("p", &windowed(Window::week("UTC")))
        .await
        .unwrap();
    add(b, "p", 1).await;
    assert_usage(
        usage(b, "p").await,
        &[("a", 1)],
        Some(bounds(1_794_787_200_000, 1_795_392_000_000)),
    );
    let week = bounds(1_795_392_000_000, 1_795_996_800_000);
    ctx.clock.set(1_795_392_000_000); // Monday 2026-11-23 00:00
    assert_usage(usage(b, "p").await, &[], Some(week));
    add(b, "p", 2).await;
    ctx.clock.set(1_795_996_799_999); // Sunday 2026-11-29 23:59:59.999
    add(b, "p", 3).await;
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(week));
    starts_empty(&ctx, b, bounds(1_795_996_800_000, 1_796_601_600_000)).await; // Monday 2026-11-30 00:00
}

/// February 2028 has 29 days: the leap day counts into February, 1 March starts a new month.
pub async fn a_leap_day_belongs_to_its_february(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_835_438_400_000); // 2028-02-29 12:00 UTC
    b.set_policy("p", &windowed(Window::month("UTC")))
        .await
        .unwrap();
    let february = bounds(1_832_976_000_000, 1_835_481_600_000);
    assert_eq!(february.end_ms - february.start_ms, 29 * DAY);
    add(b, "p", 1).await;
    ctx.clock.set(1_835_481_599_999);
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 2)], Some(february));
    starts_empty(&ctx, b, bounds(1_835_481_600_000, 1_838_160_000_000)).await; // 2028-03-01 00:00
}

/// A year runs from 1 January 00:00 to the next 1 January 00:00.
pub async fn a_year_runs_to_the_next_first_of_january(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_782_864_000_000); // 2026-07-01 00:00 UTC
    b.set_policy("p", &windowed(Window::year("UTC")))
        .await
        .unwrap();
    b.set_policy("ny", &windowed(Window::year("America/New_York")))
        .await
        .unwrap();
    let year = bounds(1_767_225_600_000, 1_798_761_600_000);
    add(b, "p", 1).await;
    ctx.clock.set(1_798_761_599_999); // 2026-12-31 23:59:59.999 UTC
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 2)], Some(year));
    // 2027-01-01 00:00 UTC is still 2026 in New York.
    assert_usage(
        usage(b, "ny").await,
        &[],
        Some(bounds(1_767_243_600_000, 1_798_779_600_000)),
    );
    starts_empty(&ctx, b, bounds(1_798_761_600_000, 1_830_297_600_000)).await;
}

/// America/Santiago skips 2026-09-06 00:00 local: that day starts at 01:00 -03 (04:00Z) and lasts 23 hours.
pub async fn a_day_whose_midnight_is_skipped_starts_after_the_gap(ctx: Ctx) {
    let b = &*ctx.backend;
    ctx.clock.set(1_788_667_199_999); // 2026-09-05 23:59:59.999 -04
    b.set_policy("p", &windowed(Window::day("America/Santiago")))
        .await
        .unwrap();
    add(b, "p", 3).await;
    assert_usage(
        usage(b, "p").await,
        &[("a", 3)],
        Some(bounds(1_788_580_800_000, 1_788_667_200_000)),
    );
    ctx.clock.set(1_788_667_200_000); // 2026-09-06 01:00 -03
    let day = bounds(1_788_667_200_000, 1_788_750_000_000);
    assert_eq!(day.end_ms - day.start_ms, 23 * HOUR);
    assert_usage(usage(b, "p").await, &[], Some(day));
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(day));
}

/// Once the stored window has passed, `usage` shows empty counters and the new bounds, and writes nothing.
pub async fn usage_sees_the_rollover_before_any_write(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::day("UTC")))
        .await
        .unwrap();
    add(b, "p", 5).await;
    let today = bounds(1_699_920_000_000, 1_700_006_400_000);
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(today));
    ctx.clock.set(1_700_006_400_000); // the next UTC midnight
    let tomorrow = bounds(1_700_006_400_000, 1_700_092_800_000);
    assert_usage(usage(b, "p").await, &[], Some(tomorrow));
    assert_usage(usage(b, "p").await, &[], Some(tomorrow));
    // Nothing was rolled over: a clock back in the stored window still sees its counters.
    ctx.clock.set(1_700_006_399_999);
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(today));
}

/// A report in a new window replaces the whole past window's counters, not only its own dimensions'.
pub async fn a_rollover_drops_every_counter_of_the_past_window(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::day("UTC")))
        .await
        .unwrap();
    let today = bounds(1_699_920_000_000, 1_700_006_400_000);
    let both = report(&[("a", 2), ("b", 3)]);
    assert_eq!(must_report(b, "p", &both).await, fresh(UsageOutcome::Ok));
    assert_usage(usage(b, "p").await, &[("a", 2), ("b", 3)], Some(today));
    ctx.clock.set(1_700_006_400_000); // the next UTC midnight
    add(b, "p", 1).await;
    let tomorrow = bounds(1_700_006_400_000, 1_700_092_800_000);
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(tomorrow));
}

/// After many idle windows the counters count as zero and the window is the one containing now.
pub async fn many_idle_windows_later_the_window_is_the_one_of_now(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &policy(&[("a", None, Some(7))]).window(Window::fixed(1_000, 250)),
    )
    .await
    .unwrap();
    add(b, "p", 7).await;
    assert_usage(
        usage(b, "p").await,
        &[("a", 7)],
        Some(bounds(1_699_999_999_250, 1_700_000_000_250)),
    );
    ctx.clock.set(2_700_000_123_456); // a billion windows later
    let now = bounds(2_700_000_123_250, 2_700_000_124_250);
    assert_usage(usage(b, "p").await, &[], Some(now));
    add(b, "p", 7).await;
    assert_usage(usage(b, "p").await, &[("a", 7)], Some(now));
}

/// A clock behind the stored window counts into it: usage is never moved backwards or lost.
pub async fn a_lagging_clock_counts_into_the_stored_window(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    add(b, "p", 4).await;
    ctx.clock.set(1_700_000_010_000);
    add(b, "p", 1).await;
    let second = bounds(1_700_000_010_000, 1_700_000_020_000);
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(second));
    // Another process whose clock is 5 s behind, in the first window.
    ctx.clock.set(1_700_000_005_000);
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(second));
    add(b, "p", 2).await;
    assert_usage(usage(b, "p").await, &[("a", 3)], Some(second));
    ctx.clock.set(1_700_000_015_000);
    assert_usage(usage(b, "p").await, &[("a", 3)], Some(second));
}

/// A new window keeps the counters `usage` showed: they become the usage of the window containing now.
pub async fn changing_the_window_keeps_the_counters(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    add(b, "p", 5).await;
    ctx.clock.set(START_MS + 1_000);
    b.set_policy("p", &windowed(Window::day("UTC")))
        .await
        .unwrap();
    let today = bounds(1_699_920_000_000, 1_700_006_400_000);
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(today));
    // The day window holds the counters past the end of the old 10 s window.
    ctx.clock.set(START_MS + 60_000);
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 6)], Some(today));
    // Lifetime counters become the usage of the first window too.
    add(b, "life", 9).await;
    b.set_policy("life", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    assert_usage(
        usage(b, "life").await,
        &[("a", 9)],
        Some(bounds(1_700_000_060_000, 1_700_000_070_000)),
    );
    starts_empty(&ctx, b, bounds(1_700_006_400_000, 1_700_092_800_000)).await;
}

/// Changing the window after the stored one has passed keeps nothing: its counters stay zero.
pub async fn changing_a_passed_window_keeps_its_counters_at_zero(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    add(b, "p", 5).await;
    ctx.clock.set(1_700_000_010_000);
    b.set_policy("p", &windowed(Window::day("UTC")))
        .await
        .unwrap();
    let today = bounds(1_699_920_000_000, 1_700_006_400_000);
    assert_usage(usage(b, "p").await, &[], Some(today));
    // Even a lagging clock no longer sees them.
    ctx.clock.set(START_MS);
    assert_usage(usage(b, "p").await, &[], Some(today));
    add(b, "p", 1).await;
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(today));
}

/// Removing the window (`set_policy` without one, or `delete_policy`) keeps the counters usage showed, as lifetime counters.
pub async fn removing_the_window_keeps_the_counters_as_lifetime(ctx: Ctx) {
    let b = &*ctx.backend;
    for budget in ["set", "deleted", "passed"] {
        b.set_policy(budget, &windowed(Window::fixed(10_000, 0)))
            .await
            .unwrap();
    }
    add(b, "set", 5).await;
    add(b, "deleted", 3).await;
    add(b, "passed", 4).await;
    ctx.clock.set(START_MS + 1_000);
    b.set_policy("set", &policy(&[("a", None, Some(100))]))
        .await
        .unwrap();
    assert_usage(usage(b, "set").await, &[("a", 5)], None);
    assert!(b.delete_policy("deleted").await.unwrap());
    assert_usage(usage(b, "deleted").await, &[("a", 3)], None);
    // Lifetime counters survive any number of former windows.
    ctx.clock.set(START_MS + 10 * DAY);
    add(b, "set", 1).await;
    add(b, "deleted", 1).await;
    assert_usage(usage(b, "set").await, &[("a", 6)], None);
    assert_usage(usage(b, "deleted").await, &[("a", 4)], None);
    // The window of "passed" ended before it was removed: its counters are gone.
    assert!(b.delete_policy("passed").await.unwrap());
    assert_usage(usage(b, "passed").await, &[], None);
    add(b, "passed", 2).await;
    assert_usage(usage(b, "passed").await, &[("a", 2)], None);
}

/// Setting the same window again (with other limits) changes neither the counters nor the stored window.
pub async fn setting_the_same_window_again_changes_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("p", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    add(b, "p", 5).await;
    let first = bounds(START_MS, 1_700_000_010_000);
    ctx.clock.set(START_MS + 5_000);
    let limited = policy(&[("a", Some(1), Some(100))]).window(Window::fixed(10_000, 0));
    b.set_policy("p", &limited).await.unwrap();
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(first));
    assert_eq!(b.policy("p").await.unwrap(), Some(limited.clone()));
    // Set again after the window passed: nothing is stored, nothing dropped.
    ctx.clock.set(1_700_000_010_000);
    b.set_policy("p", &limited).await.unwrap();
    assert_usage(
        usage(b, "p").await,
        &[],
        Some(bounds(1_700_000_010_000, 1_700_000_020_000)),
    );
    ctx.clock.set(START_MS + 9_999);
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(first));
}

/// A retry of a keyed report in the next window replays the first answer and applies nothing.
pub async fn a_retry_in_the_next_window_replays_and_applies_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &policy(&[("a", Some(3), None)]).window(Window::fixed(10_000, 0)),
    )
    .await
    .unwrap();
    let first = UsageOutcome::SoftBreach(vec![breach("a", 5, 3, true)]);
    let r = keyed(&[("a", 5)], "k");
    assert_eq!(must_report(b, "p", &r).await, fresh(first.clone()));
    ctx.clock.set(1_700_000_010_000);
    assert_eq!(must_report(b, "p", &r).await, replayed(first.clone()));
    let next = bounds(1_700_000_010_000, 1_700_000_020_000);
    assert_usage(usage(b, "p").await, &[], Some(next));
    add(b, "p", 1).await;
    assert_eq!(must_report(b, "p", &r).await, replayed(first));
    assert_usage(usage(b, "p").await, &[("a", 1)], Some(next));
}

/// Hard limits hold per window; a hard breach in a new window writes nothing, not even the rollover.
pub async fn hard_limits_apply_per_window(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &policy(&[("a", None, Some(10))]).window(Window::fixed(10_000, 0)),
    )
    .await
    .unwrap();
    let first = bounds(START_MS, 1_700_000_010_000);
    add(b, "p", 10).await;
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 10, 10, true)]))
    );
    ctx.clock.set(1_700_000_010_000);
    let second = bounds(1_700_000_010_000, 1_700_000_020_000);
    assert_eq!(
        must_report(b, "p", &report(&[("a", 11), ("b", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach("a", 0, 10, true)]))
    );
    assert_usage(usage(b, "p").await, &[], Some(second));
    // The breach rolled nothing over: a lagging clock still sees the first window's counters.
    ctx.clock.set(START_MS + 5_000);
    assert_usage(usage(b, "p").await, &[("a", 10)], Some(first));
    ctx.clock.set(1_700_000_010_000);
    add(b, "p", 10).await;
    assert_usage(usage(b, "p").await, &[("a", 10)], Some(second));
    ctx.clock.set(START_MS + 5_000);
    assert_usage(usage(b, "p").await, &[("a", 10)], Some(second));
}

/// Amounts near MAX_AMOUNT stay exact in a window, and each window may use up to the limit again.
pub async fn exact_amounts_near_max_in_a_window(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy(
        "p",
        &BudgetPolicy::new()
            .limit("a", DimensionLimit::both(MAX_AMOUNT - 2, MAX_AMOUNT - 1))
            .window(Window::fixed(10_000, 0)),
    )
    .await
    .unwrap();
    add(b, "p", 9_007_199_254_740_993).await;
    add(b, "p", MAX_AMOUNT - 9_007_199_254_740_993 - 2).await;
    let first = bounds(START_MS, 1_700_000_010_000);
    assert_usage(usage(b, "p").await, &[("a", MAX_AMOUNT - 2)], Some(first));
    let soft = UsageOutcome::SoftBreach(vec![breach("a", MAX_AMOUNT - 1, MAX_AMOUNT - 2, true)]);
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(soft.clone())
    );
    assert_eq!(
        must_report(b, "p", &report(&[("a", 1)])).await,
        fresh(UsageOutcome::HardBreach(vec![breach(
            "a",
            MAX_AMOUNT - 1,
            MAX_AMOUNT - 1,
            true
        )]))
    );
    ctx.clock.set(1_700_000_010_000);
    let second = bounds(1_700_000_010_000, 1_700_000_020_000);
    assert_eq!(
        must_report(b, "p", &report(&[("a", MAX_AMOUNT - 1)])).await,
        fresh(soft)
    );
    assert_usage(usage(b, "p").await, &[("a", MAX_AMOUNT - 1)], Some(second));
    // Without limits: MAX_AMOUNT in each window; one more is `Overflow` and applies nothing.
    b.set_policy("free", &windowed(Window::fixed(10_000, 0)))
        .await
        .unwrap();
    add(b, "free", MAX_AMOUNT).await;
    assert_kind(
        b.report_usage("free", &report(&[("a", 1)])).await,
        ErrorKind::Overflow,
        "MAX_AMOUNT + 1 in one window",
    );
    assert_usage(usage(b, "free").await, &[("a", MAX_AMOUNT)], Some(second));
    ctx.clock.set(1_700_000_020_000);
    add(b, "free", MAX_AMOUNT).await;
    assert_usage(
        usage(b, "free").await,
        &[("a", MAX_AMOUNT)],
        Some(bounds(1_700_000_020_000, 1_700_000_030_000)),
    );
}

/// `period_ms` 0, an offset not below the period and an unknown zone are `InvalidInput` at `set_policy`; nothing changes.
pub async fn invalid_windows_are_invalid_input_and_change_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    let good = policy(&[("a", None, Some(50))]).window(Window::fixed(10_000, 0));
    b.set_policy("p", &good).await.unwrap();
    add(b, "p", 5).await;
    let first = bounds(START_MS, 1_700_000_010_000);
    for window in [
        Window::fixed(0, 0),
        Window::fixed(10, 10),
        Window::fixed(10, 11),
        Window::fixed(MAX_AMOUNT + 1, 0),
        Window::day("Mars/Olympus_Mons"),
        Window::month(""),
        Window::week("utc/nowhere"),
    ] {
        let bad = policy(&[("a", None, Some(1))]).window(window.clone());
        assert_kind(
            b.set_policy("p", &bad).await,
            ErrorKind::InvalidInput,
            &format!("{window:?} on a windowed budget"),
        );
        assert_kind(
            b.set_policy("new", &bad).await,
            ErrorKind::InvalidInput,
            &format!("{window:?} on a new budget"),
        );
    }
    assert_eq!(b.policy("p").await.unwrap(), Some(good));
    assert_usage(usage(b, "p").await, &[("a", 5)], Some(first));
    assert_eq!(b.policy("new").await.unwrap(), None);
    assert_usage(usage(b, "new").await, &[], None);
}

/// `policy` returns the window exactly as set, for every kind of window.
pub async fn policy_returns_the_window_exactly_as_set(ctx: Ctx) {
    let b = &*ctx.backend;
    let windows = [
        Window::fixed(1, 0),
        Window::fixed(3_600_000, 900_000),
        Window::fixed(MAX_AMOUNT, MAX_AMOUNT - 1),
        Window::day("America/Argentina/Buenos_Aires"),
        Window::week("Europe/Berlin"),
        Window::month("UTC"),
        Window::year("America/New_York"),
    ];
    for (i, window) in windows.iter().enumerate() {
        let budget = format!("p{i}");
        let p = policy(&[("a", Some(1), Some(2))]).window(window.clone());
        b.set_policy(&budget, &p).await.unwrap();
        assert_eq!(b.policy(&budget).await.unwrap(), Some(p), "{window:?}");
    }
    // The one window of period MAX_AMOUNT before its offset: [0, MAX_AMOUNT − 1).
    assert_usage(usage(b, "p2").await, &[], Some(bounds(0, MAX_AMOUNT - 1)));
    assert_usage(
        usage(b, "p0").await,
        &[],
        Some(bounds(START_MS, START_MS + 1)),
    );
}

/// `usage.window` is `None` for a budget without a policy, or whose policy has no window.
pub async fn lifetime_budgets_have_no_window(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_usage(usage(b, "unknown").await, &[], None);
    add(b, "free", 3).await;
    assert_usage(usage(b, "free").await, &[("a", 3)], None);
    b.set_policy("p", &policy(&[("a", None, Some(10))]))
        .await
        .unwrap();
    add(b, "p", 4).await;
    ctx.clock.set(START_MS + 400 * DAY);
    assert_usage(usage(b, "p").await, &[("a", 4)], None);
    assert_eq!(usage_of(b, "free").await, counters(&[("a", 3)]));
}

cases! {
    __conformance_windows;
    windows: [
        fixed_windows_follow_their_offset,
        a_berlin_month_spans_the_march_dst_change,
        new_york_days_last_23_and_25_hours,
        iso_weeks_start_on_monday,
        a_leap_day_belongs_to_its_february,
        a_year_runs_to_the_next_first_of_january,
        a_day_whose_midnight_is_skipped_starts_after_the_gap,
        usage_sees_the_rollover_before_any_write,
        a_rollover_drops_every_counter_of_the_past_window,
        many_idle_windows_later_the_window_is_the_one_of_now,
        a_lagging_clock_counts_into_the_stored_window,
        changing_the_window_keeps_the_counters,
        changing_a_passed_window_keeps_its_counters_at_zero,
        removing_the_window_keeps_the_counters_as_lifetime,
        setting_the_same_window_again_changes_nothing,
        a_retry_in_the_next_window_replays_and_applies_nothing,
        hard_limits_apply_per_window,
        exact_amounts_near_max_in_a_window,
        invalid_windows_are_invalid_input_and_change_nothing,
        policy_returns_the_window_exactly_as_set,
        lifetime_budgets_have_no_window,
    ]
}
