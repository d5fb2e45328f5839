//! What backend implementers need and users do not: the engine trait, validated inputs, the shared
//! decision functions, codecs, the pattern matcher, the row selector and input validation.
//!
//! Everything here is public so that a backend crate outside this workspace can be written on the
//! same layer; applications use the types at the crate root instead.

#[path = "pattern.rs"]
pub mod pattern;
#[path = "validate.rs"]
pub mod validate;

pub use crate::access::{Access, Composed, NewRow};
pub use crate::batch::{
    merge as merge_batch, one_by_one, split as split_batch, BatchItem, MAX_BATCH_ITEMS,
};
pub use crate::budget::{
    admit, decide, decode_outcome, dedup_expiry, dedup_fingerprint, dedup_fingerprint_text,
    dedup_is_live, encode_outcome, is_fingerprint, settle, Decision, OverBackend, FINGERPRINT_LEN,
};
pub use crate::driver::{connect_with_drivers, scheme_of, schemes_of, Driver, OpenFn, UrlParams};
pub use crate::error::show;
pub use crate::multi::{
    cleanup_error, commit_all, commit_answer, holds_to_release, refusal_answer, release_all,
    release_answer, report_all_request, report_usage_all, reserve_all, reserve_answer, run_now,
    sorted_budgets, Steps, MAX_BUDGETS, REPORT_ALL_TTL_MS,
};
pub use crate::options::ResolvedOptions;
pub use crate::query::{NameRange, QueryPlan, RowCollector};
pub use crate::records::{decode_value, idempotent_repeat, RowSelector};
pub use crate::reply::{ReportReply, ReservationReply};
pub use crate::reservation::{
    check_commit, check_release, check_reserve, commit_fingerprint, hold_expiry, not_within,
    pending_of, refusal, reserve_fingerprint, CommitStep, Refusal,
};
pub use crate::window::{
    bounds_always_computable, window_kept_changing, StoredWindow, WindowChange, WindowStep,
    MAX_WINDOW_CALLS,
};
pub use pattern::Pattern;

/// Runs `work` within `limit`; past it, `Unavailable` naming `op` and the limit (the one
/// "timeout becomes `Unavailable`" rule of every networked engine).
pub async fn within<T>(
    op: &str,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| crate::Error::unavailable(format!("{op}: no answer within {limit:?}")))?
}
