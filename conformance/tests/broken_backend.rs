//! The suite fails loudly on a backend that breaks one rule, and pinpoints it: each deliberately
//! broken variant of the reference model (see `common`) fails the cases that guard that rule.

mod common;

use std::ops::Range;
use std::sync::Arc;

use common::{Defect, ModelHarness};
use stowage_conformance::differential::run_sequence;
use stowage_conformance::{run_all, Ctx, Harness};

/// Runs the cases whose name contains `filter` (all when `None`) on a model with `defect`
/// (`shared`: one model per namespace); the names of those that failed, and how many passed.
async fn failed_cases(
    shared: bool,
    defect: Defect,
    filter: Option<&str>,
) -> (Vec<&'static str>, usize) {
    let harness: Arc<dyn Harness> = ModelHarness::new(shared, defect);
    let outcomes = run_all(harness, filter, |_| {}).await;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.name)
        .collect();
    let passed = outcomes.len() - failed.len();
    (failed, passed)
}

/// How many of the differential sequences with `seeds` (60 operations each) fail on a model
/// with `defect`, and the first failure. Fixed seeds, whatever `STOWAGE_DIFF_*` say.
async fn differential_catches(
    shared: bool,
    defect: Defect,
    seeds: Range<u64>,
) -> (usize, Option<String>) {
    let harness: Arc<dyn Harness> = ModelHarness::new(shared, defect);
    let ctx = Ctx::new(harness).await.expect("a model opens");
    let mut caught = 0;
    let mut first = None;
    for seed in seeds {
        if let Err(failure) = run_sequence(&ctx, seed, 60).await {
            caught += 1;
            first.get_or_insert(failure);
        }
    }
    (caught, first)
}

#[track_caller]
fn assert_failed(failed: &[&str], must_fail: &[&str]) {
    for name in must_fail {
        assert!(
            failed.contains(name),
            "{name} passed on a broken backend; failed: {failed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_forgets_dedup_keys_fails_the_dedup_cases() {
    let (failed, passed) = failed_cases(false, Defect::ForgetsDedupKeys, None).await;
    assert_failed(
        &failed,
        &[
            "dedup::retry_with_same_key_replays_without_applying",
            "dedup::hard_breach_is_recorded_and_replayed",
            "dedup::conflict_changes_nothing",
            "races::concurrent_reports_with_one_key_apply_once",
            "lifecycle::purge_removes_only_this_namespace",
            "differential::random_sequences_match_the_reference_model",
        ],
    );
    // Rules the wrapper keeps still pass: the suite pinpoints the broken one.
    assert!(passed > 50, "only {passed} cases passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_backend_that_judges_dedup_by_the_readers_ttl_is_caught() {
    // Of the hand-written cases, exactly the one that mixes TTLs on one namespace catches it.
    let (failed, _) = failed_cases(true, Defect::ReadersTtl, None).await;
    let hand_written: Vec<&str> = failed
        .iter()
        .copied()
        .filter(|name| !name.starts_with("differential::"))
        .collect();
    assert_eq!(
        hand_written,
        ["dedup::dedup_record_lives_by_the_writers_ttl"]
    );
    // The differential test catches it through its two handles with two TTLs.
    let (caught, first) = differential_catches(true, Defect::ReadersTtl, 0..50).await;
    assert!(caught > 0, "no sequence caught the defect");
    eprintln!(
        "{caught} of 50 sequences caught it; the first:\n{}",
        first.unwrap_or_default()
    );
    // Not shared, a backend has one handle per namespace and the defect cannot show.
    let (caught, first) = differential_catches(false, Defect::ReadersTtl, 0..50).await;
    assert_eq!(caught, 0, "{first:?}");
    let (failed, _) = failed_cases(false, Defect::ReadersTtl, None).await;
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_differential_test_catches_edge_case_defects() {
    for (defect, seeds) in [
        (Defect::UncappedDedupExpiry, 0..200),
        (Defect::PrefixBoundWithoutCarry, 0..50),
        (Defect::Rejects256ByteNames, 0..50),
    ] {
        let (caught, first) = differential_catches(false, defect, seeds.clone()).await;
        assert!(caught > 0, "{defect:?}: none of seeds {seeds:?} caught it");
        eprintln!(
            "{defect:?}: {caught} of {} sequences caught it; the first:\n{}",
            seeds.end - seeds.start,
            first.unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_defects_fail_the_window_cases_and_the_differential_test() {
    for (defect, must_fail) in [
        (
            Defect::NeverRollsOver,
            &[
                "windows::fixed_windows_follow_their_offset",
                "windows::a_berlin_month_spans_the_march_dst_change",
                "windows::new_york_days_last_23_and_25_hours",
                "windows::usage_sees_the_rollover_before_any_write",
                "windows::a_rollover_drops_every_counter_of_the_past_window",
                "windows::hard_limits_apply_per_window",
            ][..],
        ),
        (
            Defect::WindowChangeDropsCounters,
            &[
                "windows::changing_the_window_keeps_the_counters",
                "windows::removing_the_window_keeps_the_counters_as_lifetime",
            ],
        ),
    ] {
        let (failed, _) = failed_cases(false, defect, Some("windows::")).await;
        assert_failed(&failed, must_fail);
        let (caught, first) = differential_catches(false, defect, 0..50).await;
        assert!(caught > 0, "{defect:?}: no sequence caught it");
        eprintln!(
            "{defect:?}: {caught} of 50 sequences caught it; the first:\n{}",
            first.unwrap_or_default()
        );
    }
    // The model itself passes them all.
    let (failed, passed) = failed_cases(false, Defect::None, Some("windows::")).await;
    assert!(failed.is_empty() && passed == 21, "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_purge_reaches_other_namespaces_is_caught() {
    let (failed, _) = failed_cases(true, Defect::PurgesEveryNamespace, Some("lifecycle::")).await;
    assert_eq!(failed, ["lifecycle::purge_removes_only_this_namespace"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_defects_fail_their_cases_and_the_differential_test() {
    for (defect, must_fail) in [
        (
            Defect::ReportsIgnoreHolds,
            &[
                "reservations::holds_count_against_hard_limits_in_reports",
                "reservations::hard_breach_crossed_counts_pending",
                "reservations::expired_holds_stop_counting_at_expires_at",
                "reservations::reset_usage_keeps_holds",
                "reservations::holds_are_not_windowed",
                "races::interleaved_reservations_keep_holds_within_the_hard_limit",
            ][..],
        ),
        (
            Defect::ExpiredHoldsStillCount,
            &[
                "reservations::retry_with_the_same_request_replays",
                "reservations::expired_holds_stop_counting_at_expires_at",
                "reservations::pending_lists_only_held_dimensions",
                "reservations::reservations_are_the_canonical_records",
            ],
        ),
        (
            Defect::ReleaseAfterCommitIsTrue,
            &[
                "reservations::release_after_commit_conflicts",
                "races::concurrent_commit_and_release_resolve_once",
            ],
        ),
        (
            Defect::ForgetsIdsAtExpiry,
            &[
                "reservations::commit_after_expiry_is_expired",
                "reservations::commit_replays_the_same_actual_and_conflicts_on_another",
                "reservations::commit_checks_run_in_order",
                "reservations::release_after_expiry_is_false",
                "reservations::ids_are_remembered_until_ended_plus_dedup_ttl",
                "reservations::ids_live_by_the_creators_ttl",
                "reservations::reservations_are_the_canonical_records",
            ],
        ),
        (
            Defect::BatchInReverse,
            &[
                "batch::a_batch_answers_exactly_as_the_calls_one_by_one",
                "batch::later_items_see_earlier_ones",
                "batch::a_batch_after_a_rollover_counts_in_the_new_window",
            ],
        ),
        (
            Defect::BatchFailsWhole,
            &[
                "batch::a_batch_answers_exactly_as_the_calls_one_by_one",
                "batch::a_batch_after_a_rollover_counts_in_the_new_window",
            ],
        ),
        (
            Defect::BatchKeysOnlyFromBefore,
            &[
                "batch::a_batch_answers_exactly_as_the_calls_one_by_one",
                "batch::later_items_see_earlier_ones",
            ],
        ),
        (
            Defect::ReserveAllKeepsHolds,
            &[
                "several::reserve_all_refusal_releases_the_other_holds",
                "several::reserve_all_error_releases_and_answers_the_first_error",
                "several::answers_do_not_depend_on_atomic_multi_budget",
            ],
        ),
    ] {
        // Shared, so that the cases needing two handles on one namespace run too.
        let (failed, passed) = failed_cases(true, defect, None).await;
        assert_failed(&failed, must_fail);
        assert_failed(
            &failed,
            &["differential::random_sequences_match_the_reference_model"],
        );
        // Rules the wrapper keeps still pass: the suite pinpoints the broken one.
        assert!(
            failed.len() <= must_fail.len() + 2 && passed > 150,
            "{defect:?}: {failed:?}"
        );
        let (caught, first) = differential_catches(false, defect, 0..50).await;
        assert!(caught > 0, "{defect:?}: no sequence caught it");
        eprintln!(
            "{defect:?}: {caught} of 50 sequences caught it; the first:\n{}",
            first.unwrap_or_default()
        );
    }
}
