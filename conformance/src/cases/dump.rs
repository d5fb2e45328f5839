//! SEMANTICS §4.5: export, import, digest — a copy holds the same state, has the same digest and
//! answers every operation as the original.
//!
//! [`fill`] and [`probe`] are public so that a test holding several backends at once can chain
//! copies across them (the facade's `tests/copy.rs`): a probe's transcript is plain data, equal
//! on every backend given the same calls at the same clock readings.

use std::collections::BTreeMap;

use serde_json::json;
use stowage_core::dump::{DumpItem, FORMAT, VERSION};
use stowage_core::{
    Backend, Clock, ErrorKind, ManualClock, QueryParams, StoreResult, Window, DEFAULT_DEDUP_TTL_MS,
    MAX_AMOUNT,
};

use super::{assert_kind, keyed, policy, report, request};
use crate::Ctx;

/// One day of milliseconds.
const DAY_MS: u64 = 86_400_000;

/// The digest of an empty namespace: SHA-256 of `stowage-dump 1\n` alone, on every backend.
pub const EMPTY_DIGEST: &str = "015fcb9aa682e8abf79d90e0af8d4f2495d74167fc9bea3fae136488cfb8c8dc";

/// Gives `b` (an empty namespace read through `clock`) one of everything a dump holds, and some of
/// what it leaves out: a dedup record past its expiry, a forgotten reservation, a passed window's
/// counters. Moves the clock by a day and a minute.
pub async fn fill(b: &dyn Backend, clock: &ManualClock) {
    let ok = |what: &str, r: stowage_core::Result<()>| {
        r.unwrap_or_else(|e| panic!("fill: {what}: {e}"));
    };
    // What the dump leaves out once a day has passed.
    ok(
        "fixed policy",
        b.set_policy(
            "minute",
            &policy(&[("t", None, Some(1_000))]).window(Window::fixed(60_000, 0)),
        )
        .await,
    );
    must(
        b.report_usage("minute", &report(&[("t", 7)])).await,
        "minute",
    );
    must(
        b.report_usage("free", &keyed(&[("t", 1)], "stale")).await,
        "stale key",
    );
    must(
        b.reserve("free", &request("gone", &[("t", 1)], 10)).await,
        "gone",
    );
    clock.advance(DEFAULT_DEDUP_TTL_MS + 60_000);

    // Policies: windowed (day, fixed), lifetime, without limits.
    ok(
        "day policy",
        b.set_policy(
            "day",
            &policy(&[("t", Some(50), Some(100)), ("usd", None, Some(MAX_AMOUNT))])
                .window(Window::day("Europe/Berlin")),
        )
        .await,
    );
    ok(
        "life policy",
        b.set_policy("life", &policy(&[("t", Some(5), None)])).await,
    );
    ok("empty policy", b.set_policy("open", &policy(&[])).await);
    ok(
        "reset policy",
        b.set_policy(
            "reset",
            &policy(&[]).window(Window::fixed(3_600_000, 60_000)),
        )
        .await,
    );
    // Counters: ok, soft, hard breaches; keyed and not; a budget without a policy; big numbers.
    must(
        b.report_usage("day", &keyed(&[("t", 30)], "k1")).await,
        "k1",
    );
    must(
        b.report_usage("day", &keyed(&[("t", 30)], "k2")).await,
        "k2",
    );
    must(
        b.report_usage("day", &keyed(&[("t", 50)], "k3")).await,
        "k3",
    );
    must(
        b.report_usage("day", &report(&[("usd", MAX_AMOUNT - 1)]))
            .await,
        "usd",
    );
    must(
        b.report_usage("life", &keyed(&[("t", 9)], "a")).await,
        "life",
    );
    must(
        b.report_usage("free", &keyed(&[("t", 7), ("x", 0)], "x"))
            .await,
        "free",
    );
    must(b.report_usage("reset", &report(&[("t", 3)])).await, "reset");
    ok("reset_usage", b.reset_usage("reset").await);
    // Reservations: held, expiring, refused, committed, released.
    must(
        b.reserve("day", &request("held", &[("t", 10)], 600_000))
            .await,
        "held",
    );
    must(
        b.reserve("day", &request("short", &[("t", 1)], 1_000))
            .await,
        "short",
    );
    must(
        b.reserve("day", &request("refused", &[("t", 1_000)], 600_000))
            .await,
        "refused",
    );
    must(
        b.reserve("day", &request("done", &[("t", 5)], 600_000))
            .await,
        "done",
    );
    must(
        b.commit("day", "done", &BTreeMap::from([("t".to_owned(), 3)]))
            .await,
        "commit done",
    );
    must(
        b.reserve("life", &request("freed", &[("t", 2)], 600_000))
            .await,
        "freed",
    );
    must(b.release("life", "freed").await, "release freed");
    // Records: ties in time (store order), idempotency keys, every kind of JSON value.
    let now = clock.now_ms();
    let values = [
        json!({"temp": 21.5, "unit": "°C", "tags": ["a", "b"]}),
        json!(1e-7),
        json!("text with \"quotes\" and \n newline"),
        json!(null),
        json!([1, 2, {"deep": {"deeper": true}}]),
        json!(-12345678901234_i64),
        json!(18446744073709551615_u64),
    ];
    for (i, value) in values.iter().enumerate() {
        let at = now - 1_000 + u64::try_from(i % 3).unwrap_or(0);
        ok("store", b.store("sensor/1", value, at).await.map(|_| ()));
    }
    for (i, key) in ["k-a", "k-b"].iter().enumerate() {
        let stored = b
            .store_idempotent("sensor/2", &json!({"i": i}), now, key)
            .await
            .unwrap_or_else(|e| panic!("fill: store_idempotent: {e}"));
        assert_eq!(stored, StoreResult::Appended);
    }
    ok("store", b.store("sensor/2", &json!({"i": 9}), now).await);
    ok("store", b.store("é/ü", &json!("unicode"), 0).await);
    clock.advance(500);
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("fill: {what}: {e}"))
}

/// Runs the same operations on `b` from the clock's current reading and writes down every
/// answer (errors by kind) and the digest at three points: replays, conflicts, holds that expire,
/// windows that roll, ids still remembered. Moves the clock by a day and a half.
pub async fn probe(b: &dyn Backend, clock: &ManualClock) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, answer: String| out.push(format!("{what}: {answer}"));
    macro_rules! answer {
        ($what:expr, $call:expr) => {
            note($what, format!("{:?}", $call.await.map_err(|e| e.kind())))
        };
    }
    answer!("digest", b.digest());
    answer!(
        "replay k1",
        b.report_usage("day", &keyed(&[("t", 30)], "k1"))
    );
    answer!(
        "replay k3",
        b.report_usage("day", &keyed(&[("t", 50)], "k3"))
    );
    answer!(
        "conflict k2",
        b.report_usage("day", &keyed(&[("t", 31)], "k2"))
    );
    answer!(
        "replay life",
        b.report_usage("life", &keyed(&[("t", 9)], "a"))
    );
    answer!(
        "replay free",
        b.report_usage("free", &keyed(&[("t", 7), ("x", 0)], "x"))
    );
    answer!(
        "stale key",
        b.report_usage("free", &keyed(&[("t", 1)], "stale"))
    );
    answer!(
        "reserve replay",
        b.reserve("day", &request("held", &[("t", 10)], 600_000))
    );
    answer!(
        "refused replay",
        b.reserve("day", &request("refused", &[("t", 1_000)], 600_000))
    );
    answer!(
        "reserve reuse",
        b.reserve("day", &request("done", &[("t", 6)], 600_000))
    );
    answer!(
        "gone reserve",
        b.reserve("free", &request("gone", &[("t", 1)], 10))
    );
    answer!(
        "commit replay",
        b.commit("day", "done", &BTreeMap::from([("t".to_owned(), 3)]))
    );
    answer!("release again", b.release("life", "freed"));
    answer!("soft breach", b.report_usage("day", &report(&[("t", 15)])));
    answer!("hard breach", b.report_usage("day", &report(&[("t", 30)])));
    answer!("overflow", b.report_usage("day", &report(&[("usd", 2)])));
    for budget in ["day", "life", "free", "open", "reset", "minute", "none"] {
        answer!(&format!("usage {budget}"), b.usage(budget));
        answer!(&format!("policy {budget}"), b.policy(budget));
        answer!(&format!("reservations {budget}"), b.reservations(budget));
    }
    answer!(
        "idempotent again",
        b.store_idempotent("sensor/2", &json!({"i": 0}), clock.now_ms() - 500, "k-a")
    );
    answer!(
        "idempotent conflict",
        b.store_idempotent("sensor/2", &json!({"i": 1}), clock.now_ms(), "k-a")
    );
    answer!("query", b.query("*", QueryParams::default()));
    answer!(
        "query latest",
        b.query(
            "sensor/*",
            QueryParams {
                limit_per_record: Some(2),
                ..QueryParams::default()
            }
        )
    );
    answer!("digest", b.digest());
    // The short hold expires; the long one still holds, then expires too.
    clock.advance(1_000);
    answer!("usage after short", b.usage("day"));
    answer!("commit short", b.commit("day", "short", &BTreeMap::new()));
    clock.advance(600_000);
    answer!("commit held", b.commit("day", "held", &BTreeMap::new()));
    answer!("usage after held", b.usage("day"));
    // The day rolls over in Berlin; the fixed hour window rolls; dedup keys lapse after a day.
    clock.advance(DAY_MS);
    answer!("new day", b.report_usage("day", &keyed(&[("t", 1)], "k1")));
    answer!("new hour", b.report_usage("reset", &report(&[("t", 1)])));
    answer!("usage day", b.usage("day"));
    answer!("usage reset", b.usage("reset"));
    answer!("digest", b.digest());
    out
}

/// Exports `b` into memory.
pub async fn export_of(b: &dyn Backend) -> Vec<u8> {
    let mut out = Vec::new();
    b.export(&mut out)
        .await
        .unwrap_or_else(|e| panic!("export failed: {e}"));
    out
}

/// Imports `dump` into `b`.
pub async fn import_into(b: &dyn Backend, dump: &[u8]) -> stowage_core::Result<u64> {
    let mut input = dump;
    b.import(&mut input).await.map(|summary| summary.items)
}

/// The lines of a dump after its header (the header names the namespace and time).
pub fn item_lines(dump: &[u8]) -> Vec<&[u8]> {
    dump.split(|b| *b == b'\n').skip(1).collect()
}

/// An export imported into an empty namespace gives the same digest, the same item lines and the
/// same item count.
pub async fn an_export_imports_into_an_empty_namespace_with_the_same_digest(ctx: Ctx) {
    let b = &*ctx.backend;
    fill(b, &ctx.clock).await;
    let dump = export_of(b).await;
    let copy = ctx.open_namespace("-copy").await;
    let items = import_into(&*copy, &dump).await.expect("import");
    assert_eq!(
        u64::try_from(item_lines(&dump).len() - 2).unwrap(),
        items,
        "every line between header and trailer is an item"
    );
    assert_eq!(copy.digest().await.unwrap(), b.digest().await.unwrap());
    assert_eq!(item_lines(&export_of(&*copy).await), item_lines(&dump));
    assert_ne!(b.digest().await.unwrap(), EMPTY_DIGEST);
}

/// A copy made by `copy` answers every later operation exactly as the original, at the same clock
/// readings: replays replay, keys conflict, holds expire and windows roll at the same time.
pub async fn a_copy_answers_every_operation_as_the_original(ctx: Ctx) {
    let b = &*ctx.backend;
    fill(b, &ctx.clock).await;
    let copy = ctx.open_namespace("-copy").await;
    let mut calls = 0;
    let summary = stowage_core::copy(b, &*copy, &mut |_| calls += 1)
        .await
        .expect("copy");
    assert!(calls >= 1, "progress is reported at least once");
    assert!(summary.items > 0);
    let at = ctx.clock.now_ms();
    let original = probe(b, &ctx.clock).await;
    ctx.clock.set(at);
    let copied = probe(&*copy, &ctx.clock).await;
    for (a, c) in original.iter().zip(&copied) {
        assert_eq!(a, c, "the copy answers as the original");
    }
    assert_eq!(original.len(), copied.len());
}

/// The digest of an empty namespace is the pinned constant; it changes with the state and with
/// time (a dedup record that lapses), never with what no operation can see.
pub async fn the_digest_follows_the_state_and_the_clock(ctx: Ctx) {
    let b = &*ctx.backend;
    assert_eq!(b.digest().await.unwrap(), EMPTY_DIGEST);
    must(
        b.report_usage("a", &keyed(&[("t", 1)], "k")).await,
        "report",
    );
    let with_key = b.digest().await.unwrap();
    assert_ne!(with_key, EMPTY_DIGEST);
    assert_eq!(
        b.digest().await.unwrap(),
        with_key,
        "a digest reads, never writes"
    );
    ctx.clock.advance(DEFAULT_DEDUP_TTL_MS);
    let lapsed = b.digest().await.unwrap();
    assert_ne!(lapsed, with_key, "the lapsed dedup record is left out");
    let other = ctx.open_namespace("-other").await;
    must(
        other.report_usage("a", &report(&[("t", 1)])).await,
        "report",
    );
    assert_eq!(
        other.digest().await.unwrap(),
        lapsed,
        "the same visible state has the same digest"
    );
}

/// Import refuses a namespace that holds anything, and changes nothing there.
pub async fn import_refuses_a_namespace_that_is_not_empty(ctx: Ctx) {
    let b = &*ctx.backend;
    fill(b, &ctx.clock).await;
    let dump = export_of(b).await;
    let target = ctx.open_namespace("-busy").await;
    assert!(target.is_empty().await.unwrap());
    target
        .set_policy("only", &policy(&[("t", None, Some(1))]))
        .await
        .unwrap();
    assert!(!target.is_empty().await.unwrap());
    let before = target.digest().await.unwrap();
    assert_kind(
        import_into(&*target, &dump).await,
        ErrorKind::InvalidInput,
        "import into a namespace with a policy",
    );
    assert_eq!(target.digest().await.unwrap(), before);
    assert_kind(
        import_into(b, &dump).await,
        ErrorKind::InvalidInput,
        "import into its own source",
    );
}

/// A small valid dump: header, one policy, counters, a dedup record, two records, trailer.
fn small_dump(lines: &[&str]) -> Vec<u8> {
    let mut text = format!(
        "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"namespace\":\"x\",\"exported_at\":1}}\n"
    );
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "{{\"end\":\"{FORMAT}\",\"items\":{}}}\n",
        lines.len()
    ));
    text.into_bytes()
}

const POLICY: &str = r#"{"policy":"a","limits":{"t":{"hard":10,"soft":null}},"window":null}"#;
const COUNTERS: &str = r#"{"counters":"a","window":null,"values":{"t":3}}"#;
const DEDUP: &str = r#"{"dedup":"a","key":"k","fingerprint":"AAAAAAAAAAAAAAAAAAAAAA","outcome":"Ok","expires_at":9223372036854775807}"#;
const RECORD: &str = r#"{"record":"r","stored_at":5,"value":{"v":1}}"#;

/// Hostile dumps are `InvalidInput` naming the line, and a dump refused before its first full
/// batch leaves the namespace empty.
pub async fn hostile_dumps_are_refused_naming_the_line(ctx: Ctx) {
    let valid = small_dump(&[POLICY, COUNTERS, DEDUP, RECORD]);
    let target = ctx.open_namespace("-hostile").await;
    let mut cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("empty input", Vec::new(), 1),
        ("wrong version", with_version_2(small_dump(&[POLICY])), 1),
        ("not a header", format!("{POLICY}\n").into_bytes(), 1),
        ("duplicate item", small_dump(&[POLICY, POLICY]), 3),
        ("sections out of order", small_dump(&[RECORD, POLICY]), 3),
        ("counters before policy", small_dump(&[COUNTERS, POLICY]), 3),
        (
            "amount above MAX_AMOUNT",
            small_dump(&[r#"{"counters":"a","window":null,"values":{"t":9223372036854775808}}"#]),
            2,
        ),
        (
            "negative amount",
            small_dump(&[r#"{"counters":"a","window":null,"values":{"t":-1}}"#]),
            2,
        ),
        (
            "fractional amount",
            small_dump(&[r#"{"counters":"a","window":null,"values":{"t":1.5}}"#]),
            2,
        ),
        (
            "empty budget name",
            small_dump(&[r#"{"policy":"","limits":{},"window":null}"#]),
            2,
        ),
        (
            "NUL in a name",
            small_dump(&[r#"{"record":"a\u0000b","stored_at":1,"value":1}"#]),
            2,
        ),
        (
            "soft above hard",
            small_dump(&[r#"{"policy":"a","limits":{"t":{"hard":1,"soft":2}},"window":null}"#]),
            2,
        ),
        (
            "window without a windowed policy",
            small_dump(&[
                POLICY,
                r#"{"counters":"a","window":{"spec":"fixed:60000:0","bounds":{"start_ms":0,"end_ms":60000}},"values":{}}"#,
            ]),
            3,
        ),
        (
            "bad fingerprint",
            small_dump(&[&DEDUP.replace("AAAAAAAAAAAAAAAAAAAAAA", "short")]),
            2,
        ),
        (
            "unknown field",
            small_dump(&[&POLICY.replace("\"window\"", "\"windows\"")]),
            2,
        ),
        ("unknown kind", small_dump(&[r#"{"thing":1}"#]), 2),
        (
            "a recorded breach above MAX_AMOUNT",
            small_dump(&[&DEDUP.replace(
                r#""outcome":"Ok""#,
                r#""outcome":{"SoftBreach":[{"dimension":"t","usage":9223372036854775808,"limit":1,"crossed":true}]}"#,
            )]),
            2,
        ),
        (
            "a commit that answered a hard breach",
            small_dump(&[
                r#"{"reservation":"a","id":"r","dimensions":{"t":1},"ttl_ms":1,"expires_at":2,"remember_ms":9223372036854775807,"state":{"Committed":{"at":1,"actual":{"t":1},"outcome":{"HardBreach":[]}}}}"#,
            ]),
            2,
        ),
        (
            "records out of time order",
            small_dump(&[RECORD, r#"{"record":"r","stored_at":4,"value":1}"#]),
            3,
        ),
        (
            "an idempotency key twice",
            small_dump(&[
                r#"{"record":"r","stored_at":1,"key":"k","value":1}"#,
                r#"{"record":"r","stored_at":2,"key":"k","value":1}"#,
            ]),
            3,
        ),
    ];
    // Cut inside the last item line: the line has no newline.
    let mut truncated = valid.clone();
    let cut = truncated.len() - 60;
    truncated.truncate(cut);
    let truncated_line =
        u64::try_from(truncated.iter().filter(|b| **b == b'\n').count()).unwrap() + 1;
    cases.push(("truncated line", truncated, truncated_line));
    // Cut at a line boundary: no trailer.
    let lines = item_lines(&valid).len();
    let no_trailer: Vec<u8> = valid
        .split_inclusive(|b| *b == b'\n')
        .take(lines - 1)
        .flatten()
        .copied()
        .collect();
    cases.push(("no trailer", no_trailer, u64::try_from(lines).unwrap()));
    let mut extra = valid.clone();
    extra.extend_from_slice(POLICY.as_bytes());
    extra.push(b'\n');
    cases.push((
        "a line after the trailer",
        extra,
        u64::try_from(lines + 1).unwrap(),
    ));
    let miscounted = String::from_utf8(valid.clone())
        .unwrap()
        .replace("\"items\":4", "\"items\":5")
        .into_bytes();
    cases.push(("wrong count", miscounted, u64::try_from(lines).unwrap()));

    for (what, dump, line) in &cases {
        match import_into(&*target, dump).await {
            Ok(items) => panic!("{what}: imported {items} items"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
                assert_eq!(e.line(), Some(*line), "{what}: the refused line ({e})");
            }
        }
        assert_eq!(
            target.digest().await.unwrap(),
            EMPTY_DIGEST,
            "{what}: nothing imported"
        );
    }
    // The valid dump itself imports.
    assert_eq!(import_into(&*target, &valid).await.unwrap(), 4);
}

/// `dump` with version 2 in its header.
fn with_version_2(dump: Vec<u8>) -> Vec<u8> {
    String::from_utf8(dump)
        .unwrap()
        .replacen(&format!("\"version\":{VERSION}"), "\"version\":2", 1)
        .into_bytes()
}

/// An export spans many pages in order: 2,500 rows with ties in time, 1,100 dedup records and
/// 1,001 reservations come back whole and in order through an import.
pub async fn an_export_crosses_pages_in_order(ctx: Ctx) {
    let b = &*ctx.backend;
    let now = ctx.clock.now_ms();
    for i in 0..2_500u64 {
        let name = ["p/a", "p/b", "p/c"][usize::try_from(i % 3).unwrap()];
        b.store(name, &json!(i), now - i / 7).await.unwrap();
    }
    let items: Vec<(String, stowage_core::UsageReport)> = (0..1_100)
        .map(|i| {
            (
                format!("b{}", i % 2),
                keyed(&[("t", 1)], &format!("key-{i:05}")),
            )
        })
        .collect();
    for answer in b.report_usage_batch(&items).await.unwrap() {
        answer.unwrap();
    }
    for i in 0..1_001 {
        let id = format!("r{i:05}");
        must(
            b.reserve("b1", &request(&id, &[("t", 1)], 600_000)).await,
            "reserve",
        );
    }
    let dump = export_of(b).await;
    let parsed: Vec<DumpItem> = item_lines(&dump)
        .iter()
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"end\""))
        .map(|l| DumpItem::parse_line(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 2 + 1_100 + 1_001 + 2_500);
    let copy = ctx.open_namespace("-pages").await;
    import_into(&*copy, &dump).await.unwrap();
    assert_eq!(copy.digest().await.unwrap(), b.digest().await.unwrap());
    assert_eq!(
        copy.query("p/*", QueryParams::default()).await.unwrap(),
        b.query("p/*", QueryParams::default()).await.unwrap(),
        "rows and their order"
    );
    assert_eq!(
        copy.reservations("b1").await.unwrap(),
        b.reservations("b1").await.unwrap()
    );
}

cases! {
    __conformance_dump;
    dump: [
        an_export_imports_into_an_empty_namespace_with_the_same_digest,
        a_copy_answers_every_operation_as_the_original,
        the_digest_follows_the_state_and_the_clock,
        import_refuses_a_namespace_that_is_not_empty,
        hostile_dumps_are_refused_naming_the_line,
        an_export_crosses_pages_in_order,
    ]
}
