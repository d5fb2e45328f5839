//! Valkey-specific facts of dumps (§4.5) that the conformance cases cannot see: an export leaves
//! no temporary key behind (and an abandoned one only an expiring key that `is_empty` ignores and
//! `purge` removes), budgets spread over many cluster slots export in canonical order, and an
//! import rebuilds the derived keys (pending amounts, holds, sequence counters, expiries) as the
//! scripts write them.

mod common;

use std::sync::Arc;

use stowage_conformance::servers::valkey;
use stowage_conformance::START_MS;
use stowage_core::dump::{DumpItem, Section, PAGE_ITEMS};
use stowage_core::raw::Access;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, Checked, Clock, ConnectOptions, DimensionLimit,
    ManualClock, MemoryBackend, PersistenceBackend, QueryParams, ReserveRequest, UsageReport,
    Window,
};
use stowage_valkey::{raw, ValkeyBackend};

fn urls() -> Vec<String> {
    [
        common::url_or_skip("valkey", valkey::shared_url()),
        common::url_or_skip("valkey-cluster", valkey::shared_cluster_url()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn options(clock: &Arc<ManualClock>, what: &str) -> ConnectOptions {
    ConnectOptions::new()
        .namespace(stowage_conformance::unique_namespace(what))
        .clock(clock.clone())
}

async fn open(url: &str, options: ConnectOptions) -> Checked<ValkeyBackend> {
    let backend = ValkeyBackend::open(url, options).await.unwrap();
    backend.initialize().await.unwrap();
    backend
}

/// Every key of the namespace `ns` (its id) on the server or every primary (`KEYS` through the
/// cluster client answers every primary's keys).
async fn keys_of(client: &common::RawClient, id: &str) -> Vec<String> {
    let pattern = format!("stw:{{????}}:?:{}.{id}*", id.len());
    let mut keys: Vec<String> = client
        .query(redis::cmd("KEYS").arg(&pattern))
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn export(b: &dyn Backend) -> Vec<u8> {
    let mut out = Vec::new();
    b.export(&mut out).await.unwrap();
    out
}

async fn import(b: &dyn Backend, dump: &[u8]) {
    b.import(&mut &dump[..]).await.unwrap();
}

/// The item lines of a dump (header and trailer left out).
fn items(dump: &[u8]) -> Vec<&[u8]> {
    let lines: Vec<&[u8]> = dump.split(|b| *b == b'\n').collect();
    lines[1..lines.len() - 2].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_leaves_no_temporary_key_and_an_abandoned_one_expires() {
    for url in urls() {
        let clock = Arc::new(ManualClock::new(START_MS));
        let b = open(&url, options(&clock, "dump-temp")).await;
        let client = common::RawClient::open(&url).await;
        let id = b.key_namespace().await.unwrap();
        for i in 0..30 {
            let budget = format!("b{i:02}");
            b.set_policy(
                &budget,
                &BudgetPolicy::new().limit("t", DimensionLimit::hard(9)),
            )
            .await
            .unwrap();
            b.report_usage(&budget, &UsageReport::new().add("t", 1).dedup_key("k"))
                .await
                .unwrap();
            b.reserve(&budget, &ReserveRequest::new("r", 60_000).add("t", 1))
                .await
                .unwrap();
        }
        let before = keys_of(&client, &id).await;
        let dump = export(&b).await;
        b.digest().await.unwrap();
        assert_eq!(
            keys_of(&client, &id).await,
            before,
            "{url}: only the data keys"
        );
        assert_eq!(items(&dump).len(), 30 * 4, "{url}");

        // A first page that is never followed: its temporary key expires within the hour, is
        // no part of the namespace for is_empty, and goes with purge.
        let empty = open(&url, options(&clock, "dump-temp-empty")).await;
        let empty_id = empty.key_namespace().await.unwrap();
        let page = Access::dump_page(&*b, Section::Policies, None, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(page.items.len(), 30);
        assert!(
            page.next.is_none(),
            "a short section ends on its first page"
        );
        assert_eq!(
            keys_of(&client, &id).await,
            before,
            "{url}: the last page deletes it"
        );
        for i in 0..PAGE_ITEMS + 1 {
            empty
                .store(&format!("x{i}"), &serde_json::json!(i), 1)
                .await
                .unwrap();
        }
        for i in 0..PAGE_ITEMS + 1 {
            empty
                .set_policy(&format!("p{i:04}"), &BudgetPolicy::new())
                .await
                .unwrap();
        }
        let page = Access::dump_page(&*empty, Section::Policies, None, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(page.items.len(), PAGE_ITEMS);
        assert!(page.next.is_some());
        let temp: Vec<String> = keys_of(&client, &empty_id)
            .await
            .into_iter()
            .filter(|k| k.as_bytes()[11] == b't')
            .collect();
        assert_eq!(temp.len(), 1, "{url}: {temp:?}");
        let ttl: i64 = client
            .query(redis::cmd("PTTL").arg(&temp[0]))
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{url}: {ttl}");
        empty.purge().await.unwrap();
        assert!(Access::is_empty(&*empty).await.unwrap());
        assert!(keys_of(&client, &empty_id).await.is_empty(), "{url}");
        // A token whose temporary key is gone is refused, not a silently short export.
        let e = Access::dump_page(
            &*empty,
            Section::Policies,
            page.next.as_deref(),
            clock.now_ms(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), stowage_core::ErrorKind::Unavailable);

        // A temporary key alone leaves the namespace empty for an import.
        empty.set_policy("p", &BudgetPolicy::new()).await.unwrap();
        for i in 0..PAGE_ITEMS {
            empty
                .set_policy(&format!("q{i:04}"), &BudgetPolicy::new())
                .await
                .unwrap();
        }
        let page = Access::dump_page(&*empty, Section::Policies, None, clock.now_ms())
            .await
            .unwrap();
        assert!(page.next.is_some());
        for i in 0..PAGE_ITEMS {
            empty.delete_policy(&format!("q{i:04}")).await.unwrap();
        }
        empty.delete_policy("p").await.unwrap();
        assert!(Access::is_empty(&*empty).await.unwrap(), "{url}");
        empty.purge().await.unwrap();
        b.purge().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_in_many_slots_export_in_order_and_round_trip_through_the_model() {
    for url in urls() {
        let clock = Arc::new(ManualClock::new(START_MS));
        let b = open(&url, options(&clock, "dump-slots")).await;
        let day = BudgetPolicy::new()
            .limit("t", DimensionLimit::soft(3))
            .window(Window::fixed(86_400_000, 0));
        // 1,200 budgets: more than a page, spread over the cluster's slots and primaries.
        let budgets: Vec<String> = (0..1_200)
            .map(|i| format!("budget/{}", 1_199 - i))
            .collect();
        let mut reports = Vec::new();
        for (i, budget) in budgets.iter().enumerate() {
            if i % 3 == 0 {
                b.set_policy(budget, &day).await.unwrap();
            }
            reports.push((
                budget.clone(),
                UsageReport::new().add("t", 4).dedup_key("k"),
            ));
        }
        for answer in b.report_usage_batch(&reports).await.unwrap() {
            answer.unwrap();
        }
        for budget in budgets.iter().take(50) {
            b.reserve(budget, &ReserveRequest::new("z", 60_000).add("t", 2))
                .await
                .unwrap();
            b.reserve(budget, &ReserveRequest::new("a", 60_000).add("t", 1))
                .await
                .unwrap();
        }
        let dump = export(&b).await;
        let parsed: Vec<DumpItem> = items_of(&dump);
        assert_eq!(parsed.len(), 400 + 1_200 + 100 + 1_200, "{url}");

        // Through the model and back, at the same clock reading.
        let model = MemoryBackend::with_options(
            ConnectOptions::new()
                .namespace(b.namespace())
                .clock(clock.clone()),
        )
        .unwrap();
        import(&model, &dump).await;
        assert_eq!(model.digest().await.unwrap(), b.digest().await.unwrap());
        let back = open(&url, options(&clock, "dump-slots-back")).await;
        import(&back, &export(&model).await).await;
        assert_eq!(items(&export(&back).await), items(&dump), "{url}");
        for budget in budgets.iter().take(60) {
            assert_eq!(
                back.usage(budget).await.unwrap(),
                b.usage(budget).await.unwrap()
            );
        }
        back.purge().await.unwrap();
        b.purge().await.unwrap();
    }
}

fn items_of(dump: &[u8]) -> Vec<DumpItem> {
    items(dump)
        .iter()
        .map(|l| DumpItem::parse_line(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_rebuilds_the_derived_keys_as_the_scripts_write_them() {
    for url in urls() {
        let clock = Arc::new(ManualClock::new(START_MS));
        let b = open(&url, options(&clock, "dump-derived")).await;
        let client = common::RawClient::open(&url).await;
        b.reserve(
            "b",
            &ReserveRequest::new("live", 60_000).add("t", 5).add("u", 0),
        )
        .await
        .unwrap();
        b.reserve("b", &ReserveRequest::new("short", 10).add("t", 7))
            .await
            .unwrap();
        b.reserve("b", &ReserveRequest::new("done", 60_000).add("t", 1))
            .await
            .unwrap();
        b.commit("b", "done", &[("t".to_owned(), 1)].into())
            .await
            .unwrap();
        b.report_usage("b", &UsageReport::new().add("t", 1).dedup_key("k"))
            .await
            .unwrap();
        b.store_idempotent("rec", &serde_json::json!(1), 5, "ik")
            .await
            .unwrap();
        b.store("rec", &serde_json::json!(2), 5).await.unwrap();
        // `short` has expired but no write swept it yet.
        clock.advance(100);
        let copy = open(&url, options(&clock, "dump-derived-copy")).await;
        import(&copy, &export(&b).await).await;

        let dst = copy.key_namespace().await.unwrap();
        let [_, held, pending] = raw::budget_hold_keys(&dst, "b");
        // The pending amounts count only the live hold, as a sweep at the import's reading.
        let amounts: Vec<(String, String)> = client
            .query(redis::cmd("HGETALL").arg(&pending))
            .await
            .unwrap();
        assert_eq!(amounts, vec![("t".to_owned(), "5".to_owned())], "{url}");
        let holds: Vec<String> = client
            .query(redis::cmd("ZRANGE").arg(&held).arg(0).arg(-1))
            .await
            .unwrap();
        assert_eq!(
            holds,
            vec![format!("{:019}live", START_MS + 60_000)],
            "{url}"
        );
        assert_eq!(copy.usage("b").await.unwrap(), b.usage("b").await.unwrap());
        // Releasing the live hold leaves nothing pending (the amounts were summed right).
        assert!(copy.release("b", "live").await.unwrap());
        assert!(copy.usage("b").await.unwrap().pending.is_empty());

        // Rows: store order continues after the imported ones; the idempotency key replays.
        copy.store("rec", &serde_json::json!(3), 5).await.unwrap();
        let rows = copy.query("rec", QueryParams::new()).await.unwrap();
        let values: Vec<_> = rows.iter().map(|r| r.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                serde_json::json!(3),
                serde_json::json!(2),
                serde_json::json!(1)
            ],
            "{url}: newest first, store order breaking the tie"
        );
        assert_eq!(
            copy.store_idempotent("rec", &serde_json::json!(1), 5, "ik")
                .await
                .unwrap(),
            stowage_core::StoreResult::AlreadyExists
        );

        // The dedup record replays, and the server forgets it some time after its expiry.
        let replay = copy
            .report_usage("b", &UsageReport::new().add("t", 1).dedup_key("k"))
            .await
            .unwrap();
        assert!(replay.replayed);
        let dedup = raw::budget_call_keys(&dst, "b", Some("k"))[2].clone();
        let ttl: i64 = client.query(redis::cmd("PTTL").arg(&dedup)).await.unwrap();
        assert!(ttl > 3_600_000, "{url}: {ttl}");
        copy.purge().await.unwrap();
        b.purge().await.unwrap();
    }
}
