//! The hand-written cases, one module per area; each case is a function with a one-line contract.
//!
//! Each module ends with `cases! { __conformance_<module>; <module>: [ … ] }`, the list of its
//! cases in suite order: that list alone makes the module's `cases()` (for `all_cases`) and its
//! `#[test]`s in every backend's test file (through `conformance_tests!`).

pub mod budget;
pub mod dedup;
pub mod lifecycle;
pub mod names;
pub mod numbers;
pub mod races;
pub mod records;
pub mod windows;

pub use crate::differential;

use std::collections::BTreeMap;
use std::fmt::Debug;

use stowage_core::{
    Backend, Breach, BudgetPolicy, DimensionLimit, ErrorKind, QueryParams, Result, UsageOutcome,
    UsageReceipt, UsageReport, Value,
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
