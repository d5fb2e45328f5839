//! The hand-written cases, one module per area; each case is a function with a one-line contract.
//!
//! Each module ends with `cases! { __conformance_<module>; <module>: [ … ] }`, the list of its
//! cases in suite order: that list alone makes the module's `cases()` (for `all_cases`) and its
//! `#[test]`s in every backend's test file (through `conformance_tests!`).

pub mod batch;
pub mod budget;
pub mod dedup;
pub mod dump;
pub mod lifecycle;
pub mod names;
pub mod numbers;
pub mod races;
pub mod records;
pub mod reservations;
pub mod several;
pub mod windows;

pub use crate::differential;

use std::collections::BTreeMap;
use std::fmt::Debug;

use stowage_core::{
    Backend, Breach, BudgetPolicy, DimensionLimit, ErrorKind, QueryParams, Reservation,
    ReserveOutcome, ReserveReceipt, ReserveRequest, Result, UsageOutcome, UsageReceipt,
    UsageReport, Value,
};

/// A report of `dims` without a dedup key.
pub fn report(dims: &[(&str, u64)]) -> UsageReport {
    dims.iter()
        .fold(UsageReport::new(), |r, (d, v)| r.add(*d, *v))
}

/// A report of `dims` with dedup key `key`.
pub fn keyed(dims: &[(&str, u64)], key: &str) -> UsageReport {
    report(dims).dedup_key(key)
}

/// A policy from `(dimension, soft, hard)` triples.
pub fn policy(limits: &[(&str, Option<u64>, Option<u64>)]) -> BudgetPolicy {
    limits
        .iter()
        .fold(BudgetPolicy::new(), |p, (d, soft, hard)| {
            p.limit(
                *d,
                DimensionLimit {
                    hard: *hard,
                    soft: *soft,
                },
            )
        })
}

/// One breach with nothing pending (every soft breach; hard ones where nothing is held).
pub fn breach(dimension: &str, usage: u64, limit: u64, crossed: bool) -> Breach {
    held_breach(dimension, usage, pending_none(), limit, crossed)
}

/// One hard breach where `pending` is held by live reservations.
pub fn held_breach(dimension: &str, usage: u64, pending: u64, limit: u64, crossed: bool) -> Breach {
    Breach {
        dimension: dimension.to_owned(),
        usage,
        limit,
        crossed,
        pending,
    }
}

/// Nothing held.
const fn pending_none() -> u64 {
    0
}

/// A fresh (not replayed) receipt with `outcome`.
pub fn fresh(outcome: UsageOutcome) -> UsageReceipt {
    UsageReceipt {
        outcome,
        replayed: false,
    }
}

/// A replayed receipt with `outcome`.
pub fn replayed(outcome: UsageOutcome) -> UsageReceipt {
    UsageReceipt {
        outcome,
        replayed: true,
    }
}

/// Counters from pairs.
pub fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect()
}

/// Asserts that `result` is an error of `kind`.
#[track_caller]
pub fn assert_kind<T: Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected {kind:?}, got Ok({value:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind ({e})"),
    }
}

/// Every row matching `pattern` as `(record, value, stored_at)`.
pub async fn rows(backend: &dyn Backend, pattern: &str) -> Vec<(String, Value, u64)> {
    rows_with(backend, pattern, QueryParams::default()).await
}

/// Rows matching `pattern` under `params` as `(record, value, stored_at)`.
pub async fn rows_with(
    backend: &dyn Backend,
    pattern: &str,
    params: QueryParams,
) -> Vec<(String, Value, u64)> {
    backend
        .query(pattern, params)
        .await
        .unwrap_or_else(|e| panic!("query {pattern:?} failed: {e}"))
        .into_iter()
        .map(|s| (s.record_name, s.value, s.stored_at))
        .collect()
}

/// The record names (with repeats) that `pattern` returns.
pub async fn names_of(backend: &dyn Backend, pattern: &str) -> Vec<String> {
    rows(backend, pattern)
        .await
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

/// The counters of `budget`.
pub async fn usage_of(backend: &dyn Backend, budget: &str) -> BTreeMap<String, u64> {
    backend
        .usage(budget)
        .await
        .unwrap_or_else(|e| panic!("usage {budget:?} failed: {e}"))
        .counters
}

/// Reports and unwraps.
pub async fn must_report(backend: &dyn Backend, budget: &str, r: &UsageReport) -> UsageReceipt {
    backend
        .report_usage(budget, r)
        .await
        .unwrap_or_else(|e| panic!("report_usage {budget:?} {r:?} failed: {e}"))
}

/// A reserve request for `id` holding `dims` for `ttl_ms`.
pub fn request(id: &str, dims: &[(&str, u64)], ttl_ms: u64) -> ReserveRequest {
    dims.iter()
        .fold(ReserveRequest::new(id, ttl_ms), |r, (d, v)| r.add(*d, *v))
}

/// A fresh `Reserved` receipt expiring at `expires_at`.
pub fn reserved(expires_at: u64) -> ReserveReceipt {
    ReserveReceipt {
        outcome: ReserveOutcome::Reserved,
        expires_at,
        replayed: false,
    }
}

/// A fresh `HardBreach` receipt of a refused reservation expiring (had it held) at `expires_at`.
pub fn refused(expires_at: u64, breaches: Vec<Breach>) -> ReserveReceipt {
    ReserveReceipt {
        outcome: ReserveOutcome::HardBreach(breaches),
        expires_at,
        replayed: false,
    }
}

/// `receipt` as a replay answers it.
pub fn replay_of(receipt: &ReserveReceipt) -> ReserveReceipt {
    ReserveReceipt {
        replayed: true,
        ..receipt.clone()
    }
}

/// Reserves and unwraps.
pub async fn must_reserve(
    backend: &dyn Backend,
    budget: &str,
    r: &ReserveRequest,
) -> ReserveReceipt {
    backend
        .reserve(budget, r)
        .await
        .unwrap_or_else(|e| panic!("reserve {budget:?} {r:?} failed: {e}"))
}

/// Commits `actual` (pairs) and unwraps.
pub async fn must_commit(
    backend: &dyn Backend,
    budget: &str,
    id: &str,
    actual: &[(&str, u64)],
) -> UsageReceipt {
    backend
        .commit(budget, id, &counters(actual))
        .await
        .unwrap_or_else(|e| panic!("commit {budget:?} {id:?} {actual:?} failed: {e}"))
}

/// Releases and unwraps.
pub async fn must_release(backend: &dyn Backend, budget: &str, id: &str) -> bool {
    backend
        .release(budget, id)
        .await
        .unwrap_or_else(|e| panic!("release {budget:?} {id:?} failed: {e}"))
}

/// The amounts held on `budget` (`usage().pending`).
pub async fn pending_in(backend: &dyn Backend, budget: &str) -> BTreeMap<String, u64> {
    backend
        .usage(budget)
        .await
        .unwrap_or_else(|e| panic!("usage {budget:?} failed: {e}"))
        .pending
}

/// The reservation `budget` remembers under `id`.
pub async fn reservation_of(backend: &dyn Backend, budget: &str, id: &str) -> Option<Reservation> {
    backend
        .reservation(budget, id)
        .await
        .unwrap_or_else(|e| panic!("reservation {budget:?} {id:?} failed: {e}"))
}
