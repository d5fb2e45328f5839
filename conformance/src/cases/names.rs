//! SEMANTICS §1 names: literal characters, unambiguous storage, case, length, NUL, namespaces.

use serde_json::json;
use stowage_core::{ErrorKind, QueryParams, StoreResult, UsageOutcome};

use super::{
    assert_kind, counters, fresh, keyed, must_report, names_of, policy, report, rows, usage_of,
};
use crate::Ctx;

/// Names full of characters that engines treat specially.
pub const HOSTILE_NAMES: &[&str] = &[
    "a:b",
    "{tag}",
    "}{",
    "{",
    "}",
    "*",
    "%",
    "_",
    "?",
    "[x]",
    "\\",
    "a b",
    "🦀💸",
    "'; DROP TABLE x; --",
    "\"quoted\"",
    "$1",
    "ns:{b}:c",
    "\t\n",
    "é",
    "%_\\'\"",
];

/// Every listed character is literal in budgets, dimensions, records and keys, and round-trips.
pub async fn special_characters_are_literal_in_every_name(ctx: Ctx) {
    let b = &*ctx.backend;
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        let i = u64::try_from(i).unwrap();
        b.set_policy(name, &policy(&[(name, Some(1), Some(1000))]))
            .await
            .unwrap();
        assert!(
            !must_report(b, name, &keyed(&[(name, i + 1)], name))
                .await
                .replayed
        );
        assert!(
            must_report(b, name, &keyed(&[(name, i + 1)], name))
                .await
                .replayed
        );
        assert_eq!(usage_of(b, name).await, counters(&[(name, i + 1)]));
        assert_eq!(
            b.policy(name).await.unwrap(),
            Some(policy(&[(name, Some(1), Some(1000))]))
        );
        b.store(name, &json!(name), i).await.unwrap();
        assert_eq!(
            b.store_idempotent(name, &json!(i), i, name).await.unwrap(),
            StoreResult::Appended
        );
    }
    for name in HOSTILE_NAMES.iter().filter(|n| !n.contains('*')) {
        assert_eq!(
            names_of(b, name).await,
            vec![(*name).to_owned(); 2],
            "record {name:?}"
        );
    }
    assert_eq!(names_of(b, "*").await.len(), 2 * HOSTILE_NAMES.len());
}

/// Record `x` with key `k` and record `x:k` never share storage; neither do rows of `x` and `x:`.
pub async fn record_and_key_encodings_never_collide(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_eq!(
        b.store_idempotent("x", &json!(1), 1, "k").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(
        b.store_idempotent("x:k", &json!(2), 1, "k").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(
        b.store_idempotent("x:k", &json!(3), 1, "x").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(
        b.store_idempotent("x", &json!(4), 1, "k:x").await.unwrap(),
        StoreResult::Appended
    );
    b.store("x:", &json!(5), 1).await.unwrap();
    assert_eq!(rows(b, "x").await.len(), 2);
    assert_eq!(rows(b, "x:k").await.len(), 2);
    assert_eq!(rows(b, "x:").await.len(), 1);
}

/// Budget `a:b` with dimension `c` and budget `a` with dimension `b:c` are different counters and keys.
pub async fn budget_and_dimension_encodings_never_collide(ctx: Ctx) {
    let b = &*ctx.backend;
    b.set_policy("a", &policy(&[("b:c", None, Some(1))]))
        .await
        .unwrap();
    assert_eq!(
        must_report(b, "a:b", &keyed(&[("c", 5)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "a", &keyed(&[("b:c", 1)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "a", &keyed(&[("b", 2)], "c:k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(usage_of(b, "a:b").await, counters(&[("c", 5)]));
    assert_eq!(usage_of(b, "a").await, counters(&[("b", 2), ("b:c", 1)]));
    assert_eq!(b.policy("a:b").await.unwrap(), None);
}

/// Names are case-sensitive everywhere.
pub async fn names_are_case_sensitive(ctx: Ctx) {
    let b = &*ctx.backend;
    must_report(b, "Team", &keyed(&[("Tokens", 1)], "K")).await;
    assert_eq!(
        must_report(b, "team", &keyed(&[("Tokens", 1)], "K")).await,
        fresh(UsageOutcome::Ok)
    );
    assert_eq!(
        must_report(b, "Team", &keyed(&[("Tokens", 1)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    must_report(b, "Team", &report(&[("tokens", 1)])).await;
    assert_eq!(
        usage_of(b, "Team").await,
        counters(&[("Tokens", 2), ("tokens", 1)])
    );
    b.store("Rec", &json!(1), 1).await.unwrap();
    assert!(rows(b, "rec").await.is_empty());
    assert!(rows(b, "r*").await.is_empty());
}

/// A name of 256 bytes (multi-byte characters included) is valid; 257 bytes is `InvalidInput`.
pub async fn name_length_limit_is_256_bytes(ctx: Ctx) {
    let b = &*ctx.backend;
    let max = format!("{}{}", "é".repeat(127), "xy"); // 254 + 2 bytes
    assert_eq!(max.len(), 256);
    let over = format!("{max}z");
    must_report(b, &max, &keyed(&[(&max, 1)], &max)).await;
    b.store(&max, &json!(1), 1).await.unwrap();
    b.store_idempotent(&max, &json!(1), 1, &max).await.unwrap();
    assert_eq!(names_of(b, &max).await.len(), 2);
    assert_kind(
        b.report_usage(&over, &report(&[("a", 1)])).await,
        ErrorKind::InvalidInput,
        "budget 257",
    );
    assert_kind(
        b.report_usage("p", &report(&[(&over, 1)])).await,
        ErrorKind::InvalidInput,
        "dimension 257",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], &over)).await,
        ErrorKind::InvalidInput,
        "dedup key 257",
    );
    assert_kind(
        b.store(&over, &json!(1), 1).await,
        ErrorKind::InvalidInput,
        "record 257",
    );
    assert_kind(
        b.store_idempotent("r", &json!(1), 1, &over).await,
        ErrorKind::InvalidInput,
        "idempotency key 257",
    );
    assert!(usage_of(b, "p").await.is_empty());
    assert!(rows(b, "r").await.is_empty());
}

/// The empty string is `InvalidInput` wherever a name is expected.
pub async fn empty_names_are_invalid_everywhere(ctx: Ctx) {
    let b = &*ctx.backend;
    let k = ErrorKind::InvalidInput;
    assert_kind(
        b.report_usage("", &report(&[("a", 1)])).await,
        k,
        "empty budget",
    );
    assert_kind(
        b.report_usage("p", &report(&[("", 1)])).await,
        k,
        "empty dimension",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], "")).await,
        k,
        "empty dedup key",
    );
    assert_kind(
        b.set_policy("", &policy(&[])).await,
        k,
        "set_policy empty budget",
    );
    assert_kind(
        b.set_policy("p", &policy(&[("", None, None)])).await,
        k,
        "empty policy dimension",
    );
    assert_kind(b.policy("").await, k, "policy empty budget");
    assert_kind(b.delete_policy("").await, k, "delete_policy empty budget");
    assert_kind(b.usage("").await, k, "usage empty budget");
    assert_kind(b.reset_usage("").await, k, "reset_usage empty budget");
    assert_kind(b.store("", &json!(1), 1).await, k, "store empty record");
    assert_kind(
        b.store_idempotent("", &json!(1), 1, "k").await,
        k,
        "store_idempotent empty record",
    );
    assert_kind(
        b.store_idempotent("r", &json!(1), 1, "").await,
        k,
        "empty idempotency key",
    );
    assert_kind(ctx.open(ctx.options_for("")).await, k, "empty namespace");
    assert!(usage_of(b, "p").await.is_empty());
    assert_eq!(b.policy("p").await.unwrap(), None);
    assert!(rows(b, "*").await.is_empty());
}

/// A NUL character is `InvalidInput` wherever a name or pattern is expected.
pub async fn nul_in_names_is_invalid_everywhere(ctx: Ctx) {
    let b = &*ctx.backend;
    let k = ErrorKind::InvalidInput;
    let nul = "a\0b";
    assert_kind(b.report_usage(nul, &report(&[("a", 1)])).await, k, "budget");
    assert_kind(
        b.report_usage("p", &report(&[(nul, 1)])).await,
        k,
        "dimension",
    );
    assert_kind(
        b.report_usage("p", &keyed(&[("a", 1)], nul)).await,
        k,
        "dedup key",
    );
    assert_kind(
        b.set_policy(nul, &policy(&[])).await,
        k,
        "set_policy budget",
    );
    assert_kind(
        b.set_policy("p", &policy(&[(nul, None, None)])).await,
        k,
        "policy dimension",
    );
    assert_kind(b.policy(nul).await, k, "policy");
    assert_kind(b.delete_policy(nul).await, k, "delete_policy");
    assert_kind(b.usage(nul).await, k, "usage");
    assert_kind(b.reset_usage(nul).await, k, "reset_usage");
    assert_kind(b.store(nul, &json!(1), 1).await, k, "store");
    assert_kind(
        b.store_idempotent("r", &json!(1), 1, nul).await,
        k,
        "idempotency key",
    );
    assert_kind(b.query("a\0*", QueryParams::default()).await, k, "pattern");
    assert_kind(ctx.open(ctx.options_for(nul)).await, k, "namespace");
    assert!(usage_of(b, "p").await.is_empty());
    assert!(rows(b, "*").await.is_empty());
}

/// Two namespaces on one store see none of each other's records, policies, counters or keys.
pub async fn namespaces_isolate_data(ctx: Ctx) {
    let one = &*ctx.backend;
    let two = ctx.open_namespace("_other").await;
    let two = &*two;
    one.set_policy("p", &policy(&[("a", None, Some(1))]))
        .await
        .unwrap();
    must_report(one, "p", &keyed(&[("a", 1)], "k")).await;
    one.store("r", &json!(1), 1).await.unwrap();
    one.store_idempotent("r", &json!(1), 1, "k").await.unwrap();
    assert_eq!(two.policy("p").await.unwrap(), None);
    assert!(usage_of(two, "p").await.is_empty());
    assert_eq!(
        must_report(two, "p", &keyed(&[("a", 5)], "k")).await,
        fresh(UsageOutcome::Ok)
    );
    assert!(rows(two, "*").await.is_empty());
    assert_eq!(
        two.store_idempotent("r", &json!(2), 2, "k").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(two.cleanup(100).await.unwrap(), 1);
    assert_eq!(rows(one, "*").await.len(), 2);
    assert_eq!(usage_of(one, "p").await, counters(&[("a", 1)]));
}

cases! {
    __conformance_names;
    names: [
        special_characters_are_literal_in_every_name,
        record_and_key_encodings_never_collide,
        budget_and_dimension_encodings_never_collide,
        names_are_case_sensitive,
        name_length_limit_is_256_bytes,
        empty_names_are_invalid_everywhere,
        nul_in_names_is_invalid_everywhere,
        namespaces_isolate_data,
    ]
}
