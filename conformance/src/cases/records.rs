//! SEMANTICS §2: append, idempotent append, pattern queries, ordering, time windows, cleanup.

use serde_json::json;
use stowage_core::{ErrorKind, QueryParams, StoreResult, Value};

use super::{assert_kind, names_of, rows, rows_with};
use crate::Ctx;

/// A stored value comes back from `query` with its record name and timestamp.
pub async fn store_then_query_returns_the_value(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store("sensor", &json!({"t": 21.5, "ok": true}), 10)
        .await
        .unwrap();
    assert_eq!(
        rows(b, "sensor").await,
        vec![("sensor".to_owned(), json!({"t": 21.5, "ok": true}), 10)]
    );
}

/// Two stores of one record at one timestamp are two rows.
pub async fn two_stores_at_one_timestamp_are_two_rows(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store("r", &json!(1), 5).await.unwrap();
    b.store("r", &json!(1), 5).await.unwrap();
    assert_eq!(rows(b, "r").await.len(), 2);
}

/// Values read back serialize to the same bytes as stored: floats, big integers, escapes, `\u0000`, keys (in order where serde_json keeps it).
pub async fn values_round_trip_byte_exact(ctx: Ctx) {
    // Key order is observable only where serde_json keeps insertion order (its `preserve_order`
    // feature, which a user's crate graph may enable): then the order as written must survive.
    // Without it (this workspace) maps are sorted, so the objects parsed below from text with keys
    // out of order check the keys and values, not their order.
    let b = &*ctx.backend;
    let mut values: Vec<Value> = vec![
        json!(0.1),
        json!(1e300),
        json!(-0.0),
        json!(5e-324),
        json!(123_456_789.123_456_79),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(9007199254740993u64),
        json!("nul \u{0000} inside, quote \" backslash \\ tab \t emoji 🦀 é"),
        json!({"z": 1, "a": [1, 2.5, null, false], "m": {"": "empty key"}}),
        json!([]),
        json!({}),
        json!(null),
        json!(""),
    ];
    // Keys out of every order an engine might impose (bytes, length, insertion), nested.
    for text in [
        r#"{"zz": 1, "b": 2, "a": 3, "é": 4, "A": 5, "": 6, "aa": 7, "🦀": 8}"#,
        r#"{"outer": {"z": [{"y": 1, "x": 2}], "a": {"d": null, "c": 0.5}}, "b": true}"#,
        r#"[{"2": "two", "10": "ten", "1": "one"}, {"\u0000": 0, "\u00e9": 1, "e\u0301": 2}]"#,
    ] {
        values.push(serde_json::from_str(text).expect("valid JSON text"));
    }
    for (i, v) in values.iter().enumerate() {
        b.store("exact", v, u64::try_from(i).unwrap())
            .await
            .unwrap();
    }
    let back = rows(b, "exact").await;
    assert_eq!(back.len(), values.len());
    for (_, value, at) in back {
        let original = &values[usize::try_from(at).unwrap()];
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string(original).unwrap(),
            "value stored at {at}"
        );
    }
}

/// A value of exactly 1 MiB serialized is accepted; one byte more is `InvalidInput` and stores nothing.
pub async fn value_size_limit_is_one_mebibyte(ctx: Ctx) {
    let b = &*ctx.backend;
    let limit = 1_048_576;
    let fits = Value::String("x".repeat(limit - 2)); // two quote characters
    assert_eq!(serde_json::to_string(&fits).unwrap().len(), limit);
    b.store("big", &fits, 1).await.unwrap();
    let too_big = Value::String("x".repeat(limit - 1));
    assert_kind(
        b.store("big", &too_big, 2).await,
        ErrorKind::InvalidInput,
        "store 1 MiB + 1",
    );
    assert_kind(
        b.store_idempotent("big", &too_big, 2, "k").await,
        ErrorKind::InvalidInput,
        "store_idempotent 1 MiB + 1",
    );
    let back = rows(b, "big").await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1, fits);
    assert_eq!(ctx.backend.capabilities().max_value_bytes, 1_048_576);
}

/// Results come by record name ascending, and newest first within a record.
pub async fn results_order_by_name_then_newest_first(ctx: Ctx) {
    let b = &*ctx.backend;
    for (name, at) in [("b", 1), ("a", 1), ("b", 3), ("a", 2), ("c", 0), ("a", 3)] {
        b.store(name, &json!(at), at).await.unwrap();
    }
    let got: Vec<(String, u64)> = rows(b, "*")
        .await
        .into_iter()
        .map(|(n, _, at)| (n, at))
        .collect();
    let want: Vec<(String, u64)> = [("a", 3), ("a", 2), ("a", 1), ("b", 3), ("b", 1), ("c", 0)]
        .iter()
        .map(|(n, at)| ((*n).to_owned(), *at))
        .collect();
    assert_eq!(got, want);
}

/// Among rows with equal timestamps, the later store comes first.
pub async fn equal_timestamps_return_later_store_first(ctx: Ctx) {
    let b = &*ctx.backend;
    for i in 0..5 {
        b.store("tie", &json!(i), 7).await.unwrap();
    }
    b.store("tie", &json!("older"), 6).await.unwrap();
    let values: Vec<Value> = rows(b, "tie")
        .await
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    assert_eq!(
        values,
        vec![
            json!(4),
            json!(3),
            json!(2),
            json!(1),
            json!(0),
            json!("older")
        ]
    );
}

/// Record names order by bytes (Rust `str` order), never by a locale collation.
pub async fn record_names_order_by_bytes(ctx: Ctx) {
    let b = &*ctx.backend;
    let names = [
        "b", "B", "a", "A", "é", "e", "aa", "a b", "a-b", "_", "~", "Z", "🦀", "\u{7f}",
    ];
    for n in names {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    want.sort();
    assert_eq!(names_of(b, "*").await, want);
}

/// `limit_per_record: Some(n)` keeps the newest n rows of each record.
pub async fn limit_per_record_keeps_newest_rows_of_each_record(ctx: Ctx) {
    let b = &*ctx.backend;
    for at in 1..=5 {
        b.store("x", &json!(at), at).await.unwrap();
        b.store("y", &json!(at), at * 10).await.unwrap();
    }
    b.store("z", &json!(1), 1).await.unwrap();
    let got: Vec<(String, u64)> = rows_with(b, "*", QueryParams::new().limit_per_record(2))
        .await
        .into_iter()
        .map(|(n, _, at)| (n, at))
        .collect();
    let want = vec![
        ("x".to_owned(), 5),
        ("x".to_owned(), 4),
        ("y".to_owned(), 50),
        ("y".to_owned(), 40),
        ("z".to_owned(), 1),
    ];
    assert_eq!(got, want);
    let windowed = rows_with(b, "x", QueryParams::new().limit_per_record(2).end_time(3)).await;
    let ats: Vec<u64> = windowed.into_iter().map(|(_, _, at)| at).collect();
    assert_eq!(ats, vec![3, 2], "the limit applies after the time window");
}

/// `limit_per_record: Some(0)` returns nothing.
pub async fn limit_per_record_zero_returns_nothing(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store("x", &json!(1), 1).await.unwrap();
    assert!(rows_with(b, "*", QueryParams::new().limit_per_record(0))
        .await
        .is_empty());
}

/// `start_time` and `end_time` are inclusive; a single-point window works.
pub async fn time_window_is_inclusive_at_both_ends(ctx: Ctx) {
    let b = &*ctx.backend;
    for at in [9, 10, 11, 19, 20, 21] {
        b.store("w", &json!(at), at).await.unwrap();
    }
    let ats = |r: Vec<(String, Value, u64)>| r.into_iter().map(|(_, _, at)| at).collect::<Vec<_>>();
    assert_eq!(
        ats(rows_with(b, "w", QueryParams::new().start_time(10).end_time(20)).await),
        vec![20, 19, 11, 10]
    );
    assert_eq!(
        ats(rows_with(b, "w", QueryParams::new().start_time(20)).await),
        vec![21, 20]
    );
    assert_eq!(
        ats(rows_with(b, "w", QueryParams::new().end_time(10)).await),
        vec![10, 9]
    );
    assert_eq!(
        ats(rows_with(b, "w", QueryParams::new().start_time(11).end_time(11)).await),
        vec![11]
    );
}

/// `start_time > end_time` is `InvalidInput`.
pub async fn start_after_end_is_invalid(ctx: Ctx) {
    assert_kind(
        ctx.backend
            .query("*", QueryParams::new().start_time(11).end_time(10))
            .await,
        ErrorKind::InvalidInput,
        "query with start > end",
    );
}

/// A pattern without `*` matches exactly one record name.
pub async fn pattern_without_star_matches_one_record(ctx: Ctx) {
    let b = &*ctx.backend;
    for n in ["dev", "dev1", "de", "Dev", "dev:1"] {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    assert_eq!(names_of(b, "dev").await, vec!["dev".to_owned()]);
}

/// `*` matches any sequence, the empty one and separators such as `::` and `.` included.
pub async fn star_matches_any_sequence_including_separators(ctx: Ctx) {
    let b = &*ctx.backend;
    for n in [
        "device",
        "device::1::temp",
        "device.2.temp",
        "devic",
        "other",
    ] {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    assert_eq!(
        names_of(b, "device*").await,
        vec!["device", "device.2.temp", "device::1::temp"]
    );
    assert_eq!(
        names_of(b, "*temp").await,
        vec!["device.2.temp", "device::1::temp"]
    );
    assert_eq!(names_of(b, "*").await.len(), 5);
}

/// Stars in the middle and repeated stars match in order, anchored at both ends.
pub async fn star_in_the_middle_and_repeated(ctx: Ctx) {
    let b = &*ctx.backend;
    for n in ["ac", "abc", "abcabc", "ab", "bc", "xabc", "aXbXc"] {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    assert_eq!(
        names_of(b, "a*c").await,
        vec!["aXbXc", "abc", "abcabc", "ac"]
    );
    assert_eq!(names_of(b, "a**b*c").await, vec!["aXbXc", "abc", "abcabc"]);
    assert_eq!(
        names_of(b, "*b*").await,
        vec!["aXbXc", "ab", "abc", "abcabc", "bc", "xabc"]
    );
}

/// `?`, `[`, `%`, `_` and `\` are literal in patterns on every engine.
pub async fn pattern_metacharacters_of_engines_are_literal(ctx: Ctx) {
    let b = &*ctx.backend;
    let names = ["a?c", "abc", "a[b]c", "a%c", "a_c", "a\\c", "axc", "a.c"];
    for n in names {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    for n in ["a?c", "a[b]c", "a%c", "a_c", "a\\c", "a.c"] {
        assert_eq!(names_of(b, n).await, vec![n.to_owned()], "pattern {n:?}");
    }
    assert_eq!(names_of(b, "a%*").await, vec!["a%c"]);
    assert_eq!(names_of(b, "a_*").await, vec!["a_c"]);
    assert_eq!(names_of(b, "a\\*").await, vec!["a\\c"]);
    assert_eq!(names_of(b, "a[*").await, vec!["a[b]c"]);
}

/// Prefix narrowing is exact around multi-byte characters and the highest code point.
pub async fn multibyte_prefixes_narrow_correctly(ctx: Ctx) {
    let b = &*ctx.backend;
    let names = [
        "é",
        "éa",
        "é\u{10FFFF}",
        "ê",
        "e",
        "\u{10FFFF}",
        "\u{10FFFF}x",
        "\u{7f}",
        "\u{80}",
    ];
    for n in names {
        b.store(n, &json!(n), 1).await.unwrap();
    }
    assert_eq!(names_of(b, "é*").await, vec!["é", "éa", "é\u{10FFFF}"]);
    assert_eq!(
        names_of(b, "\u{10FFFF}*").await,
        vec!["\u{10FFFF}", "\u{10FFFF}x"]
    );
    assert_eq!(names_of(b, "\u{7f}*").await, vec!["\u{7f}"]);
}

/// The empty pattern is `InvalidInput`.
pub async fn empty_pattern_is_invalid(ctx: Ctx) {
    assert_kind(
        ctx.backend.query("", QueryParams::default()).await,
        ErrorKind::InvalidInput,
        "query with empty pattern",
    );
}

/// A pattern that matches no record returns an empty list, not an error.
pub async fn query_of_unknown_records_is_empty(ctx: Ctx) {
    assert!(rows(&*ctx.backend, "nothing*here").await.is_empty());
    assert!(rows(&*ctx.backend, "nothing").await.is_empty());
}

/// `cleanup(t)` deletes rows with `stored_at < t` (a row at `t` stays) and returns the count.
pub async fn cleanup_deletes_strictly_older_rows_and_counts_them(ctx: Ctx) {
    let b = &*ctx.backend;
    for (n, at) in [("a", 1), ("a", 5), ("b", 4), ("b", 5), ("c", 9)] {
        b.store(n, &json!(at), at).await.unwrap();
    }
    assert_eq!(b.cleanup(5).await.unwrap(), 2);
    let left: Vec<(String, u64)> = rows(b, "*")
        .await
        .into_iter()
        .map(|(n, _, at)| (n, at))
        .collect();
    assert_eq!(
        left,
        vec![
            ("a".to_owned(), 5),
            ("b".to_owned(), 5),
            ("c".to_owned(), 9)
        ]
    );
    assert_eq!(b.cleanup(5).await.unwrap(), 0);
    assert_eq!(b.cleanup(0).await.unwrap(), 0);
}

/// The first `store_idempotent` of a (record, key) appends and says `Appended`.
pub async fn store_idempotent_appends_once(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_eq!(
        b.store_idempotent("r", &json!({"v": 1}), 3, "k1")
            .await
            .unwrap(),
        StoreResult::Appended
    );
    assert_eq!(
        rows(b, "r").await,
        vec![("r".to_owned(), json!({"v": 1}), 3)]
    );
}

/// A repeat with equal value and timestamp is `AlreadyExists` and stores nothing.
pub async fn store_idempotent_repeat_is_already_exists(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store_idempotent("r", &json!([1, 2.5]), 3, "k1")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            b.store_idempotent("r", &json!([1, 2.5]), 3, "k1")
                .await
                .unwrap(),
            StoreResult::AlreadyExists
        );
    }
    assert_eq!(rows(b, "r").await.len(), 1);
}

/// A repeat with a different value is `Conflict` and stores nothing.
pub async fn store_idempotent_different_value_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store_idempotent("r", &json!(1), 3, "k1").await.unwrap();
    assert_kind(
        b.store_idempotent("r", &json!(2), 3, "k1").await,
        ErrorKind::Conflict,
        "same key, other value",
    );
    assert_kind(
        b.store_idempotent("r", &json!(1.0), 3, "k1").await,
        ErrorKind::Conflict,
        "1 and 1.0 serialize differently",
    );
    assert_eq!(rows(b, "r").await, vec![("r".to_owned(), json!(1), 3)]);
}

/// A repeat with a different timestamp is `Conflict` and stores nothing.
pub async fn store_idempotent_different_timestamp_conflicts(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store_idempotent("r", &json!(1), 3, "k1").await.unwrap();
    assert_kind(
        b.store_idempotent("r", &json!(1), 4, "k1").await,
        ErrorKind::Conflict,
        "same key, other timestamp",
    );
    assert_eq!(rows(b, "r").await.len(), 1);
}

/// The same idempotency key on two records appends to both.
pub async fn idempotency_keys_are_scoped_per_record(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_eq!(
        b.store_idempotent("r1", &json!(1), 1, "k").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(
        b.store_idempotent("r2", &json!(2), 2, "k").await.unwrap(),
        StoreResult::Appended
    );
    assert_eq!(names_of(b, "r*").await, vec!["r1", "r2"]);
}

/// Once `cleanup` removed the row, its idempotency key may be used again, with any value.
pub async fn idempotency_key_is_free_again_after_cleanup(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store_idempotent("r", &json!("old"), 1, "k")
        .await
        .unwrap();
    assert_eq!(b.cleanup(2).await.unwrap(), 1);
    assert_eq!(
        b.store_idempotent("r", &json!("new"), 5, "k")
            .await
            .unwrap(),
        StoreResult::Appended
    );
    assert_eq!(rows(b, "r").await, vec![("r".to_owned(), json!("new"), 5)]);
}

/// Plain `store` rows and keyed rows coexist; a plain store never blocks or is blocked by a key.
pub async fn plain_store_ignores_idempotency_keys(ctx: Ctx) {
    let b = &*ctx.backend;
    b.store("r", &json!(1), 1).await.unwrap();
    assert_eq!(
        b.store_idempotent("r", &json!(1), 1, "k").await.unwrap(),
        StoreResult::Appended
    );
    b.store("r", &json!(1), 1).await.unwrap();
    assert_eq!(
        b.store_idempotent("r", &json!(1), 1, "k").await.unwrap(),
        StoreResult::AlreadyExists
    );
    assert_eq!(rows(b, "r").await.len(), 3);
}

/// A `limit_per_record` larger than any engine's count type keeps every row.
pub async fn huge_limit_per_record_keeps_every_row(ctx: Ctx) {
    let b = &*ctx.backend;
    for at in 0..3 {
        b.store("r", &json!(at), at).await.unwrap();
    }
    let huge = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
    for limit in [usize::MAX, huge] {
        assert_eq!(
            rows_with(b, "*", QueryParams::new().limit_per_record(limit))
                .await
                .len(),
            3
        );
        assert_eq!(
            rows_with(b, "r", QueryParams::new().limit_per_record(limit))
                .await
                .len(),
            3
        );
    }
}

/// A pattern longer than 1024 bytes is `InvalidInput`; 1024 bytes is accepted.
pub async fn overlong_pattern_is_invalid(ctx: Ctx) {
    let b = &*ctx.backend;
    let fits = format!("{}*", "p".repeat(1023));
    assert!(rows(b, &fits).await.is_empty());
    assert_kind(
        b.query(&format!("{fits}*"), QueryParams::default()).await,
        ErrorKind::InvalidInput,
        "1025-byte pattern",
    );
}

cases! {
    __conformance_records;
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
    ]
}
