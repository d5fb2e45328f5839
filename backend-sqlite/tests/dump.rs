//! Dumps on SQLite beyond the conformance cases: a batch of an import is kept or undone whole, and
//! pages resume inside a run of rows of one name and one `stored_at` (store order kept), and the
//! model's golden dump goes through SQLite byte for byte.

mod common;

use std::sync::Arc;

use serde_json::json;
use stowage_core::dump::{DumpItem, PolicyItem, RecordItem, Section, PAGE_ITEMS};
use stowage_core::raw::Access;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, Checked, Clock, ConnectOptions, ManualClock,
    PersistenceBackend, QueryParams,
};
use stowage_sqlite::SqliteBackend;

async fn open(url: &str, namespace: &str, clock: &Arc<ManualClock>) -> Checked<SqliteBackend> {
    let backend = SqliteBackend::open(
        url,
        ConnectOptions::new()
            .namespace(namespace)
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    backend.initialize().await.unwrap();
    backend
}

fn record(name: &str, key: &str) -> DumpItem {
    DumpItem::Record(RecordItem {
        name: name.to_owned(),
        stored_at: 5,
        idempotency_key: Some(key.to_owned()),
        value: "1".to_owned(),
    })
}

#[tokio::test]
async fn a_batch_that_fails_in_the_store_leaves_nothing_of_itself() {
    let clock = Arc::new(ManualClock::new(1_000));
    for url in [
        common::fresh_file_url("dump-rollback"),
        "sqlite::memory:".to_owned(),
    ] {
        let b = open(&url, "n", &clock).await;
        // Core never passes such a batch (one key twice in a record): the unique index refuses
        // the last row, after a policy and a row were written.
        let items = vec![
            DumpItem::Policy(PolicyItem::new("b", BudgetPolicy::new())),
            record("r", "k"),
            record("r", "k"),
        ];
        assert!(b.engine().load(&items).await.is_err());
        assert!(b.engine().is_empty().await.unwrap(), "{url}");
        assert_eq!(b.policy("b").await.unwrap(), None);
        assert!(b
            .query("r", QueryParams::default())
            .await
            .unwrap()
            .is_empty());
        // The writer goes on: the same batch without the duplicate is written whole.
        b.engine().load(&items[..2]).await.unwrap();
        assert!(!b.engine().is_empty().await.unwrap());
        assert_eq!(b.policy("b").await.unwrap(), Some(BudgetPolicy::new()));
    }
}

#[tokio::test]
async fn pages_resume_inside_one_millisecond_of_one_name_in_store_order() {
    let clock = Arc::new(ManualClock::new(1_000));
    let url = common::fresh_file_url("dump-pages");
    let b = open(&url, "from", &clock).await;
    let rows = 2 * PAGE_ITEMS + PAGE_ITEMS / 2;
    for i in 0..rows {
        b.store("r", &json!(i), 7).await.unwrap();
    }
    b.store("q", &json!("first name"), 9).await.unwrap();
    b.store("s", &json!("last name"), 1).await.unwrap();
    let mut after: Option<String> = None;
    let mut seen: Vec<(String, u64, String)> = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = b
            .engine()
            .dump_page(Section::Records, after.as_deref(), 1_000)
            .await
            .unwrap();
        sizes.push(page.items.len());
        for item in page.items {
            let DumpItem::Record(r) = item else {
                panic!("a record page holds records only");
            };
            seen.push((r.name, r.stored_at, r.value));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![PAGE_ITEMS, PAGE_ITEMS, PAGE_ITEMS / 2 + 2]);
    let mut expected = vec![("q".to_owned(), 9, "\"first name\"".to_owned())];
    expected.extend((0..rows).map(|i| ("r".to_owned(), 7, i.to_string())));
    expected.push(("s".to_owned(), 1, "\"last name\"".to_owned()));
    assert_eq!(seen, expected);

    let copy = open(&url, "to", &clock).await;
    let mut dump = Vec::new();
    b.export(&mut dump).await.unwrap();
    copy.import(&mut dump.as_slice()).await.unwrap();
    assert_eq!(copy.digest().await.unwrap(), b.digest().await.unwrap());
    assert_eq!(
        copy.query("*", QueryParams::new()).await.unwrap(),
        b.query("*", QueryParams::new()).await.unwrap(),
        "newest first, ties in reverse store order, as on the source"
    );
}

/// The reference model's dump of `cases::dump::fill`, committed by the conformance crate.
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conformance/tests/golden/v1.dump"
);

#[tokio::test]
async fn the_golden_dump_imports_and_exports_byte_for_byte() {
    let golden = std::fs::read(GOLDEN).expect("the golden dump is committed");
    let header: serde_json::Value =
        serde_json::from_slice(golden.split(|c| *c == b'\n').next().unwrap()).unwrap();
    let exported_at = header["exported_at"].as_u64().unwrap();
    let clock = Arc::new(ManualClock::new(exported_at));
    for url in [
        common::fresh_file_url("dump-golden"),
        "sqlite::memory:".to_owned(),
    ] {
        // The namespace is the golden dump's, so the header is equal too.
        let b = open(&url, header["namespace"].as_str().unwrap(), &clock).await;
        b.import(&mut golden.as_slice()).await.unwrap();
        let mut dump = Vec::new();
        b.export(&mut dump).await.unwrap();
        assert_eq!(clock.now_ms(), exported_at);
        assert_eq!(
            String::from_utf8_lossy(&dump),
            String::from_utf8_lossy(&golden),
            "{url}"
        );
        assert_eq!(
            b.digest().await.unwrap(),
            stowage_core::dump::digest_of_dump(golden.as_slice())
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn pages_of_many_small_names_and_a_large_one_export_as_the_model_does() {
    let clock = Arc::new(ManualClock::new(1_000));
    let model = stowage_core::MemoryBackend::with_options(
        ConnectOptions::new().namespace("n").clock(clock.clone()),
    )
    .unwrap();
    let b = open(&common::fresh_file_url("dump-names"), "n", &clock).await;
    // Names of 1 to 7 rows with ties of stored_at, and one name of 1 500 rows among them.
    let mut rows = Vec::new();
    for i in 0..600u64 {
        let name = format!("n/{:03}", (i * 37) % 600);
        for j in 0..=(i % 7) {
            rows.push((name.clone(), 10 + (i + j) % 3, json!([i, j])));
        }
        if i % 200 == 100 {
            for k in 0..500u64 {
                rows.push(("n/big".to_owned(), k % 4, json!(k)));
            }
        }
    }
    for (name, at, value) in &rows {
        model.store(name, value, *at).await.unwrap();
        b.store(name, value, *at).await.unwrap();
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    b.export(&mut ours).await.unwrap();
    model.export(&mut theirs).await.unwrap();
    assert!(ours.len() > 100_000);
    assert_eq!(String::from_utf8(ours), String::from_utf8(theirs));
}
