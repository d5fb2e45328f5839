//! stowage-conformance: the one suite every backend passes, written once against `Arc<dyn Backend>`.
//!
//! A backend crate (inside this workspace or outside it) implements [`Harness`] and writes, in a
//! test file:
//!
//! ```text
//! stowage_conformance::conformance_tests!("mybackend", my_harness());
//! ```
//!
//! where `my_harness()` returns an [`Availability`]: the harness, or the reason the backend
//! cannot run here (the tests then print the reason and pass, unless the name is listed in
//! `STOWAGE_REQUIRE_BACKENDS`, in which case they fail). The macro makes one `#[test]` per case:
//! 93 cases in 8 groups (`records` 28, `budget` 23, `dedup` 15, `names` 8, `numbers` 7,
//! `lifecycle` 6, `races` 5, `differential` 1), listed once in `__case_list!` below.
//! [`all_cases`] lists the same cases for other runners (for example a command-line tool).
//!
//! Each case runs in namespaces of its own, and every namespace it opens through its [`Ctx`] is
//! destroyed with [`Backend::purge`] when it ends, pass or fail, so that running the suite against
//! a live deployment leaves nothing behind: a backend must implement `purge` to pass (a purge
//! that fails fails the case). The differential test opens two handles on one namespace, with
//! different dedup TTLs, when the backend is `shared`.
#![deny(missing_docs)]

pub mod cases;
mod context;
pub mod differential;
mod memory;
pub mod process_race;
pub mod reliability;
pub mod rng;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};

pub use context::{unique_namespace, Ctx, START_MS};
pub use memory::MemoryHarness;

/// Opens backends of one kind on one store (file, server, cluster) for the suite.
pub trait Harness: Send + Sync + 'static {
    /// Opens and initializes a backend on this harness's store, with `options` (namespace, clock, TTL).
    ///
    /// Backends opened with the same namespace must see the same data when the backend is `shared`
    /// or `durable`; a different namespace must see none of it. The suite purges every namespace
    /// it opened through a handle opened here, so a namespace opened again must be the same one.
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>>;
}

/// Any function from options to an opened backend is a harness.
impl<F> Harness for F
where
    F: Fn(ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync + 'static,
{
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        self(options)
    }
}

/// A harness, or why this backend cannot be tested here.
pub type Availability = std::result::Result<Arc<dyn Harness>, String>;

/// One conformance case: a name (`module::function`) and the function that runs it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// `module::function`, e.g. `budget::hard_breach_applies_nothing`.
    pub name: &'static str,
    /// Runs the case; it panics on failure.
    pub run: fn(Ctx) -> BoxFuture<'static, ()>,
}

/// How long one case may run before it counts as failed (a hang is a failure, not a stuck CI).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether `STOWAGE_REQUIRE_BACKENDS` (comma-separated, or `all`) names `backend`.
pub fn is_required(backend: &str) -> bool {
    std::env::var("STOWAGE_REQUIRE_BACKENDS")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .any(|name| name == backend || name == "all")
        })
        .unwrap_or(false)
}

/// Runs one case on a fresh namespace of `harness`; `Err` carries the failure (panic message or error).
///
/// Every namespace the case opened through its [`Ctx`] is purged afterwards, pass or fail
/// (timed out or panicked included); a purge that fails fails the case. When the case failed
/// itself, its own failure comes first in the message.
pub async fn run_case(harness: Arc<dyn Harness>, case: &Case) -> std::result::Result<(), String> {
    run_case_within(harness, case, CASE_TIMEOUT).await
}

/// [`run_case`] with another time limit for the case (and, separately, for purging its namespaces).
pub async fn run_case_within(
    harness: Arc<dyn Harness>,
    case: &Case,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let ctx = Ctx::new(harness)
        .await
        .map_err(|e| format!("opening the backend failed: {e}"))?;
    let namespaces = ctx.namespaces();
    let mut task = tokio::spawn((case.run)(ctx));
    let outcome = match tokio::time::timeout(timeout, &mut task).await {
        Err(_) => {
            // Stop the case (and drop its handles) before its namespaces are purged.
            task.abort();
            let _ = task.await;
            Err(format!("timed out after {timeout:?}"))
        }
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => match join.try_into_panic() {
            Ok(payload) => Err(panic_message(payload.as_ref())),
            Err(join) => Err(format!("the case task was cancelled: {join}")),
        },
    };
    let purged = match tokio::time::timeout(timeout, namespaces.purge_all()).await {
        Ok(purged) => purged,
        Err(_) => Err(format!(
            "purging the case's namespaces timed out after {timeout:?}"
        )),
    };
    match (outcome, purged) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(left)) => Err(format!(
            "the case passed but left namespaces behind:\n{left}"
        )),
        (Err(failure), Ok(())) => Err(failure),
        (Err(failure), Err(left)) => Err(format!(
            "{failure}\n\nafterwards, namespaces were left behind:\n{left}"
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the case panicked".to_owned()
    }
}

/// The body of every generated `#[test]`: skip (or fail, if required) when unavailable, else run `case_name`.
pub fn run_test(backend: &str, availability: &Availability, case_name: &str) {
    let harness = match availability {
        Ok(harness) => harness.clone(),
        Err(reason) => {
            if is_required(backend) {
                panic!("backend {backend} is required (STOWAGE_REQUIRE_BACKENDS) but unavailable: {reason}");
            }
            eprintln!("skipped: backend {backend} is unavailable: {reason}");
            return;
        }
    };
    let case = all_cases()
        .into_iter()
        .find(|c| c.name == case_name)
        .unwrap_or_else(|| panic!("no conformance case named {case_name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(failure) = runtime.block_on(run_case(harness, &case)) {
        panic!("conformance case {case_name} failed on {backend}: {failure}");
    }
}

/// Makes one `#[test]` per conformance case: `conformance_tests!("name", availability_expr);`.
///
/// `availability_expr` is evaluated once per test binary and must give an [`Availability`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:literal, $availability:expr) => {
        fn __stowage_conformance_availability() -> &'static $crate::Availability {
            static AVAILABILITY: ::std::sync::OnceLock<$crate::Availability> =
                ::std::sync::OnceLock::new();
            AVAILABILITY.get_or_init(|| $availability)
        }
        $crate::__case_list!(tests[$backend]);
    };
}

/// The list of every case, in one place; expands through [`__expand_cases`].
#[doc(hidden)]
#[macro_export]
macro_rules! __case_list {
    ($mode:ident [$($args:tt)*]) => {
        $crate::__expand_cases! { $mode [$($args)*]
            records: [
                store_then_query_returns_the_value,
                two_stores_at_one_timestamp_are_two_rows,
                values_round_trip_byte_exact,
                value_size_limit_is_one_mebibyte,
                results_order_by_name_then_newest_first,
                equal_timestamps_return_later_store_first,
                record_names_order_by_bytes,
                limit_per_record_keeps_newest_rows_of_each_record,
                limit_per_record_zero_returns_nothing,
                time_window_is_inclusive_at_both_ends,
                start_after_end_is_invalid,
                pattern_without_star_matches_one_record,
                star_matches_any_sequence_including_separators,
                star_in_the_middle_and_repeated,
                pattern_metacharacters_of_engines_are_literal,
                multibyte_prefixes_narrow_correctly,
                empty_pattern_is_invalid,
                query_of_unknown_records_is_empty,
                cleanup_deletes_strictly_older_rows_and_counts_them,
                store_idempotent_appends_once,
                store_idempotent_repeat_is_already_exists,
                store_idempotent_different_value_conflicts,
                store_idempotent_different_timestamp_conflicts,
                idempotency_keys_are_scoped_per_record,
                idempotency_key_is_free_again_after_cleanup,
                plain_store_ignores_idempotency_keys,
                huge_limit_per_record_keeps_every_row,
                overlong_pattern_is_invalid,
            ],
            budget: [
                budget_without_policy_accepts_everything,
                policy_round_trips_exactly,
                set_policy_replaces_the_whole_policy,
                set_policy_leaves_usage_alone,
                delete_policy_says_whether_one_existed,
                policy_of_unknown_budget_is_none,
                soft_above_hard_is_invalid,
                policy_dimension_count_is_limited,
                report_dimension_count_is_limited,
                reaching_hard_limit_exactly_is_allowed,
                hard_breach_applies_nothing_to_any_dimension,
                hard_breach_lists_every_breach_with_usage_before,
                zero_limit_is_a_real_limit,
                zero_delta_is_checked_against_hard_limit,
                soft_breach_applies_and_lists_usage_after,
                crossed_is_true_only_for_the_crossing_report,
                hard_breach_crossed_is_false_when_already_over,
                zero_delta_creates_a_counter,
                hard_breach_creates_no_counter,
                unknown_budget_has_empty_usage,
                reset_clears_counters_but_keeps_policy,
                limits_of_unreported_dimensions_are_not_checked,
                budgets_are_independent,
            ],
            dedup: [
                retry_with_same_key_replays_without_applying,
                replay_answers_the_recorded_outcome_after_limits_change,
                hard_breach_is_recorded_and_replayed,
                same_key_different_deltas_conflicts,
                same_key_different_dimensions_conflicts,
                conflict_changes_nothing,
                dedup_record_expires_exactly_at_ttl,
                expired_key_applies_afresh_even_with_new_payload,
                replay_survives_reset,
                custom_dedup_ttl_is_respected,
                reports_without_key_are_never_deduplicated,
                dedup_keys_are_scoped_per_budget,
                soft_breach_replay_keeps_crossed,
                longest_dedup_ttls_work,
                dedup_record_lives_by_the_writers_ttl,
            ],
            names: [
                special_characters_are_literal_in_every_name,
                record_and_key_encodings_never_collide,
                budget_and_dimension_encodings_never_collide,
                names_are_case_sensitive,
                name_length_limit_is_256_bytes,
                empty_names_are_invalid_everywhere,
                nul_in_names_is_invalid_everywhere,
                namespaces_isolate_data,
            ],
            numbers: [
                amounts_beyond_double_precision_are_exact,
                max_amount_is_accepted_everywhere,
                above_max_amount_is_invalid_everywhere,
                overflow_is_an_error_and_applies_nothing,
                overflow_in_one_dimension_applies_none,
                overflow_is_not_recorded_under_the_dedup_key,
                hard_limit_comparison_is_exact_above_two_pow_53,
            ],
            lifecycle: [
                initialize_twice_is_harmless,
                capabilities_are_honest,
                invalid_inputs_change_nothing,
                clock_beyond_max_amount_is_invalid_input,
                zero_dedup_ttl_is_invalid_input,
                purge_removes_only_this_namespace,
            ],
            races: [
                concurrent_reports_with_one_key_apply_once,
                concurrent_reports_never_overshoot_a_hard_limit,
                concurrent_idempotent_stores_append_once,
                concurrent_reports_on_several_dimensions_stay_consistent,
                expired_keys_reused_concurrently_apply_once_per_budget,
            ],
            differential: [
                random_sequences_match_the_reference_model,
            ],
        }
    };
}

/// Expands the case list into the registry ([`all_cases`]) or into `#[test]`s.
#[doc(hidden)]
#[macro_export]
macro_rules! __expand_cases {
    (registry [] $($module:ident : [$($case:ident),* $(,)?]),* $(,)?) => {
        /// Every conformance case, in suite order.
        pub fn all_cases() -> Vec<$crate::Case> {
            vec![$($(
                $crate::Case {
                    name: concat!(stringify!($module), "::", stringify!($case)),
                    run: |ctx| Box::pin($crate::cases::$module::$case(ctx)),
                },
            )*)*]
        }
    };
    (tests [$backend:literal] $($module:ident : [$($case:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $module {
                $(
                    #[test]
                    fn $case() {
                        $crate::run_test(
                            $backend,
                            super::__stowage_conformance_availability(),
                            concat!(stringify!($module), "::", stringify!($case)),
                        );
                    }
                )*
            }
        )*
    };
}

__case_list!(registry[]);

/// What one case did when run by [`run_all`].
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// `module::function`.
    pub name: &'static str,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs every case whose name contains `filter` (all when `None`), one after another, each in a fresh
/// namespace of `harness`; calls `on_done` after each. For runners other than `cargo test` (the CLI).
pub async fn run_all(
    harness: Arc<dyn Harness>,
    filter: Option<&str>,
    mut on_done: impl FnMut(&CaseOutcome),
) -> Vec<CaseOutcome> {
    let mut outcomes = Vec::new();
    for case in all_cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
    {
        let start = std::time::Instant::now();
        let failure = run_case(harness.clone(), &case).await.err();
        let outcome = CaseOutcome {
            name: case.name,
            failure,
            elapsed: start.elapsed(),
        };
        on_done(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}
