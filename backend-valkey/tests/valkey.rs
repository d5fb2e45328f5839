//! Valkey-specific facts: honest capabilities (durability asked of every primary), the error kinds
//! of a full, busy or locked-down server, purge, the expiry each dedup record carries, reconnecting
//! after a server restart, process races. Tests that change, flush or kill their server start one
//! of their own, whatever STOWAGE_VALKEY_URL says.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage_conformance::process_race::{self, RaceSize};
use stowage_conformance::servers::resp;
use stowage_conformance::servers::valkey::{self, ValkeySettings};
use stowage_conformance::START_MS;
use stowage_core::Checked;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, ConnectOptions, DimensionLimit, ErrorKind, ManualClock,
    PersistenceBackend, QueryParams, UsageReport, DEFAULT_DEDUP_TTL_MS,
};
use stowage_core::{Breach, ReserveRequest, UsageOutcome};
use stowage_valkey::{raw, ValkeyBackend};

fn standalone() -> Option<String> {
    common::url_or_skip("valkey", valkey::shared_url())
}

fn cluster() -> Option<String> {
    common::url_or_skip("valkey-cluster", valkey::shared_cluster_url())
}

/// Opens and initializes a backend (loads the scripts), as `stowage::connect` does.
async fn open_initialized(
    url: &str,
    options: ConnectOptions,
) -> stowage_core::Result<Checked<ValkeyBackend>> {
    let backend = ValkeyBackend::open(url, options).await?;
    backend.initialize().await?;
    Ok(backend)
}

fn options() -> ConnectOptions {
    ConnectOptions::new().namespace(stowage_conformance::unique_namespace("vk"))
}

#[tokio::test]
async fn capabilities_follow_topology() {
    let (Some(single), Some(many)) = (standalone(), cluster()) else {
        return;
    };
    let a = open_initialized(&single, options()).await.unwrap();
    let b = open_initialized(&many, options()).await.unwrap();
    assert!(!a.capabilities().distributed && a.capabilities().shared);
    assert!(b.capabilities().distributed && b.capabilities().shared);
}

async fn durable(url: &str) -> bool {
    open_initialized(url, options())
        .await
        .unwrap()
        .capabilities()
        .durable
}

fn config_set(port: u16, name: &str, value: &str) {
    resp::ok(port, &["CONFIG", "SET", name, value]).unwrap();
}

#[tokio::test]
async fn durable_follows_the_standalone_servers_persistence() {
    let Some(lax) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let Some(strict) = common::own_server(ValkeySettings { durable: true }) else {
        return;
    };
    assert!(!durable(&lax.url()).await, "appendonly no");
    assert!(
        durable(&strict.url()).await,
        "appendonly yes, appendfsync always"
    );
    config_set(strict.port(), "appendfsync", "everysec");
    assert!(!durable(&strict.url()).await, "appendfsync everysec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_asks_every_primary_of_the_cluster_not_only_the_seeds() {
    let Some(cluster) = common::own_cluster(ValkeySettings { durable: true }) else {
        return;
    };
    let nodes = cluster.nodes();
    // One seed only: the other two primaries are found through the cluster's topology.
    let seed = format!("valkey+cluster://127.0.0.1:{}", nodes[0].port());
    assert!(durable(&seed).await, "every primary is strict");
    config_set(nodes[2].port(), "appendfsync", "everysec");
    assert!(
        !durable(&seed).await,
        "a non-seed primary fsyncs every second"
    );
    config_set(nodes[2].port(), "appendfsync", "always");
    assert!(durable(&seed).await, "strict again");
    // A primary that refuses CONFIG to this user cannot vouch for its persistence.
    for (i, node) in nodes.iter().enumerate() {
        let config = if i == 1 { "-config" } else { "+config" };
        resp::ok(
            node.port(),
            &["ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", config],
        )
        .unwrap();
    }
    let as_app = format!("valkey+cluster://app:pw@127.0.0.1:{}", nodes[0].port());
    assert!(!durable(&as_app).await, "a non-seed primary refuses CONFIG");
    resp::ok(nodes[1].port(), &["ACL", "SETUSER", "app", "+config"]).unwrap();
    assert!(durable(&as_app).await, "CONFIG allowed again");
    config_set(nodes[1].port(), "appendonly", "no");
    assert!(!durable(&seed).await, "a non-seed primary without AOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_out_of_memory_answers_unavailable() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let backend = open_initialized(&server.url(), options()).await.unwrap();
    let report = UsageReport::new().add("t", 1).dedup_key("k");
    config_set(server.port(), "maxmemory", "1");
    let full = backend.report_usage("b", &report).await.unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Unavailable, "{full}");
    assert!(full.is_retryable());
    let store = backend
        .store("r", &serde_json::json!(1), 1)
        .await
        .unwrap_err();
    assert_eq!(store.kind(), ErrorKind::Unavailable, "{store}");
    config_set(server.port(), "maxmemory", "0");
    // Nothing was applied: the retry applies once.
    assert!(!backend.report_usage("b", &report).await.unwrap().replayed);
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_with_a_long_script_answers_unavailable() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let backend = open_initialized(&server.url(), options()).await.unwrap();
    config_set(server.port(), "busy-reply-threshold", "10");
    let port = server.port();
    let long = std::thread::spawn(move || resp::command(port, &["EVAL", "while true do end", "0"]));
    // Bounded poll of the server's state: other clients get an error while the script runs.
    let start = Instant::now();
    while !matches!(resp::command(port, &["PING"]), Ok(resp::Reply::Error(_))) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the script never ran"
        );
        std::thread::yield_now();
    }
    let busy = backend.usage("b").await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    assert!(busy.is_retryable());
    resp::ok(port, &["SCRIPT", "KILL"]).unwrap();
    assert!(matches!(long.join().unwrap(), Ok(resp::Reply::Error(_))));
    assert!(backend.usage("b").await.unwrap().counters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_and_authentication_failures_are_misconfigured() {
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let port = server.port();
    let at = |user: &str| format!("valkey://{user}@127.0.0.1:{port}");
    let misconfigured = |result: stowage_core::Result<Checked<ValkeyBackend>>, what: &str| {
        let e = result.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Misconfigured, "{what}: {e}");
        assert!(!e.is_retryable(), "{what}");
    };
    // NOPERM on an operation: the user may do everything but read a hash whole.
    resp::ok(
        port,
        &[
            "ACL",
            "SETUSER",
            "nohgetall",
            "on",
            ">pw",
            "~*",
            "+@all",
            "-hgetall",
        ],
    )
    .unwrap();
    let limited = open_initialized(&at("nohgetall:pw"), options())
        .await
        .unwrap();
    let e = limited.usage("b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misconfigured, "{e}");
    assert!(!e.is_retryable());
    // NOPERM inside a script: the script's HSET is refused.
    resp::ok(
        port,
        &[
            "ACL", "SETUSER", "nohset", "on", ">pw", "~*", "+@all", "-hset",
        ],
    )
    .unwrap();
    let limited = open_initialized(&at("nohset:pw"), options()).await.unwrap();
    let e = limited
        .report_usage("b", &UsageReport::new().add("t", 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misconfigured, "{e}");
    // NOPERM at connect: loading the scripts is refused.
    resp::ok(
        port,
        &[
            "ACL",
            "SETUSER",
            "noscripts",
            "on",
            ">pw",
            "~*",
            "+@all",
            "-@scripting",
        ],
    )
    .unwrap();
    misconfigured(
        open_initialized(&at("noscripts:pw"), options()).await,
        "NOPERM (SCRIPT LOAD)",
    );
    // WRONGPASS.
    misconfigured(
        open_initialized(&at("nohset:wrong"), options()).await,
        "WRONGPASS",
    );
    // NOAUTH: the server wants a password, none is given.
    config_set(port, "requirepass", "secret");
    misconfigured(open_initialized(&server.url(), options()).await, "NOAUTH");
}

/// Every key stowage may write for `budget`/`key` and records `rec`, `rec2` of namespace `ns`.
fn keys_of(ns: &str) -> Vec<String> {
    let mut keys = raw::budget_call_keys(ns, "budget", Some("k"));
    keys.extend(raw::record_call_keys(ns, "rec"));
    keys.extend(raw::record_call_keys(ns, "rec2"));
    keys.push(raw::name_index_key(ns));
    keys
}

async fn fill(backend: &Checked<ValkeyBackend>) {
    backend
        .set_policy(
            "budget",
            &BudgetPolicy::new().limit("t", DimensionLimit::hard(100)),
        )
        .await
        .unwrap();
    backend
        .report_usage("budget", &UsageReport::new().add("t", 5).dedup_key("k"))
        .await
        .unwrap();
    backend
        .store_idempotent("rec", &serde_json::json!(1), 10, "ik")
        .await
        .unwrap();
    backend
        .store("rec2", &serde_json::json!(2), 11)
        .await
        .unwrap();
}

async fn assert_filled(backend: &Checked<ValkeyBackend>, what: &str) {
    assert!(backend.policy("budget").await.unwrap().is_some(), "{what}");
    assert_eq!(
        backend.usage("budget").await.unwrap().counters["t"],
        5,
        "{what}"
    );
    let replay = backend
        .report_usage("budget", &UsageReport::new().add("t", 5).dedup_key("k"))
        .await
        .unwrap();
    assert!(replay.replayed, "{what}");
    assert_eq!(
        backend.query("*", QueryParams::new()).await.unwrap().len(),
        2,
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_the_namespace_and_nothing_else() {
    for url in [standalone(), cluster()].into_iter().flatten() {
        let base = stowage_conformance::unique_namespace("purge");
        // Glob characters in the namespace: unescaped, `<base>*?` would also match `<base>zz`.
        let target = format!("{base}*?");
        let neighbour = format!("{base}zz");
        let open = |ns: &str| {
            let ns = ns.to_owned();
            let url = url.clone();
            async move {
                open_initialized(&url, ConnectOptions::new().namespace(ns))
                    .await
                    .unwrap()
            }
        };
        // On the cluster, the purging handle knows one seed: it must find every primary itself.
        let first_seed = url.split(',').next().unwrap_or_default().to_owned();
        let a = open_initialized(&first_seed, ConnectOptions::new().namespace(&target))
            .await
            .unwrap();
        let b = open(&neighbour).await;
        fill(&a).await;
        fill(&b).await;
        let (a_ns, b_ns) = (
            a.key_namespace().await.unwrap(),
            b.key_namespace().await.unwrap(),
        );
        // Records of many hash slots, so that the namespace spreads over every primary.
        let spread: Vec<String> = (0..30).map(|i| format!("spread-{i}")).collect();
        let mut spread_keys = Vec::new();
        for name in &spread {
            a.store(name, &serde_json::json!(0), 1).await.unwrap();
            spread_keys.extend(raw::record_call_keys(&a_ns, name));
        }
        let raw = common::RawClient::open(&url).await;
        assert_eq!(raw.existing(&spread_keys).await.len(), 60, "{url}");
        let (a_keys, b_keys) = (
            raw.existing(&keys_of(&a_ns)).await,
            raw.existing(&keys_of(&b_ns)).await,
        );
        assert_eq!(a_keys.len(), 9, "{url}: {a_keys:?}");
        assert_eq!(b_keys.len(), 9, "{url}: {b_keys:?}");

        a.purge().await.unwrap();
        assert_eq!(
            raw.existing(&keys_of(&a_ns)).await,
            Vec::<String>::new(),
            "{url}"
        );
        assert_eq!(
            raw.existing(&spread_keys).await,
            Vec::<String>::new(),
            "{url}"
        );
        assert_eq!(raw.existing(&keys_of(&b_ns)).await, b_keys, "{url}");
        assert_filled(&b, "the neighbour is untouched").await;

        // The purged namespace is empty, and the same handle (and a new one) keep working.
        assert_eq!(a.policy("budget").await.unwrap(), None);
        assert!(a.usage("budget").await.unwrap().counters.is_empty());
        assert!(a.query("*", QueryParams::new()).await.unwrap().is_empty());
        fill(&a).await;
        let replay = a
            .report_usage("budget", &UsageReport::new().add("t", 5).dedup_key("k"))
            .await
            .unwrap();
        assert!(
            replay.replayed,
            "the key was applied afresh after the purge"
        );
        assert_filled(&open(&target).await, "a second handle after the purge").await;
        a.purge().await.unwrap();
        a.purge().await.unwrap();
        assert_eq!(
            raw.existing(&keys_of(&a_ns)).await,
            Vec::<String>::new(),
            "{url}"
        );
        assert_filled(&b, "the neighbour is untouched").await;
        b.purge().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_using_a_new_namespace_at_once_agree_on_its_id() {
    for url in [standalone(), cluster()].into_iter().flatten() {
        let ns = stowage_conformance::unique_namespace("ids");
        let mut handles = Vec::new();
        for _ in 0..8 {
            handles.push(
                ValkeyBackend::open(&url, ConnectOptions::new().namespace(ns.clone()))
                    .await
                    .unwrap(),
            );
        }
        let ids = futures_util::future::join_all(handles.iter().map(|h| h.key_namespace())).await;
        let first = ids[0].as_ref().unwrap().clone();
        for id in ids {
            assert_eq!(id.unwrap(), first, "{url}");
        }
        let other = common::key_namespace(&url, &format!("{ns}-other")).await;
        assert_ne!(other, first, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_records_live_by_their_own_expiry() {
    for url in [standalone(), cluster()].into_iter().flatten() {
        let ns = stowage_conformance::unique_namespace("exp");
        let clock = Arc::new(ManualClock::new(START_MS));
        let open = |ttl: u64| {
            let (url, ns, clock) = (url.clone(), ns.clone(), clock.clone());
            async move {
                open_initialized(
                    &url,
                    ConnectOptions::new()
                        .namespace(ns)
                        .clock(clock)
                        .dedup_ttl_ms(ttl),
                )
                .await
                .unwrap()
            }
        };
        let (short, long) = (open(1_000).await, open(DEFAULT_DEDUP_TTL_MS).await);
        let raw = common::RawClient::open(&url).await;
        let key_ns = short.key_namespace().await.unwrap();
        assert_eq!(
            long.key_namespace().await.unwrap(),
            key_ns,
            "one id per namespace"
        );
        let record = |key: &str| raw::budget_call_keys(&key_ns, "b", Some(key))[2].clone();
        // A record is one string: the fingerprint digest, the status letter, the expiry.
        let value = |key: String| {
            let raw = &raw;
            async move {
                raw.query::<Option<String>>(redis::cmd("GET").arg(key))
                    .await
                    .unwrap()
            }
        };
        let pttl = |key: String| {
            let raw = &raw;
            async move { raw.query::<i64>(redis::cmd("PTTL").arg(key)).await.unwrap() }
        };

        // Each record carries the expiry its writer computed, exactly.
        let by_long = UsageReport::new().add("t", 1).dedup_key("long");
        long.report_usage("b", &by_long).await.unwrap();
        assert_eq!(
            value(record("long")).await,
            Some(format!(
                "{}o{}",
                raw::fingerprint_digest(&by_long),
                START_MS + DEFAULT_DEDUP_TTL_MS
            ))
        );
        let by_short = UsageReport::new().add("t", 1).dedup_key("short");
        short.report_usage("b", &by_short).await.unwrap();
        assert_eq!(
            value(record("short")).await,
            Some(format!(
                "{}o{}",
                raw::fingerprint_digest(&by_short),
                START_MS + 1_000
            ))
        );
        // Server-side garbage collection follows the writer's TTL, and a reader leaves it alone.
        let gc_short = pttl(record("short")).await;
        assert!(
            gc_short > 0 && gc_short <= 2 * 1_000 + 3_600_000,
            "{gc_short}"
        );
        clock.advance(5_000);
        assert!(short.report_usage("b", &by_long).await.unwrap().replayed);
        let gc_long = pttl(record("long")).await;
        assert!(
            gc_long > i64::try_from(DEFAULT_DEDUP_TTL_MS).unwrap(),
            "{gc_long}"
        );

        long.purge().await.unwrap();
    }
}
/// Retries `report` until it succeeds or `limit` passes; every failure must be `Unavailable`.
async fn report_until_ok(
    backend: &Checked<ValkeyBackend>,
    report: &UsageReport,
    limit: Duration,
) -> u32 {
    let start = Instant::now();
    let mut failures = 0;
    loop {
        match backend.report_usage("b", report).await {
            Ok(_) => return failures,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(e.is_retryable());
                failures += 1;
                assert!(start.elapsed() < limit, "no recovery within {limit:?}: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backend_works_again_after_a_server_restart() {
    // A server of its own to kill, whatever STOWAGE_VALKEY_URL says.
    let Some(server) = common::own_server(ValkeySettings { durable: true }) else {
        return;
    };
    let url = format!(
        "{}?operation_timeout_ms=500&connect_timeout_ms=500",
        server.url()
    );
    let backend = open_initialized(&url, options()).await.unwrap();
    let first = UsageReport::new().add("t", 5).dedup_key("before");
    backend.report_usage("b", &first).await.unwrap();
    server.kill().unwrap();
    let during = backend
        .report_usage("b", &UsageReport::new().add("t", 1))
        .await;
    assert_eq!(during.unwrap_err().kind(), ErrorKind::Unavailable);
    server.start_again().unwrap();
    // The script cache is empty after the restart: the call reloads the script (NOSCRIPT).
    report_until_ok(
        &backend,
        &UsageReport::new().add("t", 1).dedup_key("after"),
        Duration::from_secs(20),
    )
    .await;
    // The AOF kept the first report and its dedup record: a retry replays, nothing counts twice.
    let retry = backend.report_usage("b", &first).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(backend.usage("b").await.unwrap().counters["t"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_one_server() {
    let Some(url) = standalone() else { return };
    process_race::run(
        common::valkey_harness(url.clone()),
        "two_processes_race_on_one_server",
        &[(valkey::URL_ENV, url)],
        RaceSize::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_on_the_cluster() {
    let Some(url) = cluster() else { return };
    process_race::run(
        common::valkey_harness(url.clone()),
        "two_processes_race_on_the_cluster",
        &[(valkey::CLUSTER_URL_ENV, url)],
        RaceSize::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_listed_after_the_server_loses_its_data() {
    // A server of its own to flush, whatever STOWAGE_VALKEY_URL says.
    let Some(server) = common::own_server(ValkeySettings::default()) else {
        return;
    };
    let backend = open_initialized(&server.url(), options()).await.unwrap();
    backend
        .store("sensor::a", &serde_json::json!(1), 1)
        .await
        .unwrap();
    // A restart without persistence (or a failover) loses everything, the name index included.
    stowage_conformance::servers::resp::ok(server.port(), &["FLUSHALL"]).unwrap();
    backend
        .store("sensor::a", &serde_json::json!(2), 2)
        .await
        .unwrap();
    let rows = backend
        .query("sensor::*", QueryParams::new())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the row stored after the loss is listed");
    assert_eq!(backend.cleanup(3).await.unwrap(), 1, "and cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_at_the_fifteen_digit_boundary_are_exact() {
    // The scripts add and subtract operands of at most 15 digits as Lua numbers, longer ones
    // digit by digit: sums and differences on both sides of the boundary stay exact.
    const LONGEST_SHORT: u64 = 999_999_999_999_999;
    const TEN_POW_15: u64 = 1_000_000_000_000_000;
    for url in [standalone(), cluster()].into_iter().flatten() {
        let ns = stowage_conformance::unique_namespace("digits");
        let b = open_initialized(&url, ConnectOptions::new().namespace(ns))
            .await
            .unwrap();
        let cases = [
            (LONGEST_SHORT, LONGEST_SHORT),
            (LONGEST_SHORT, 1),
            (1, LONGEST_SHORT),
            (LONGEST_SHORT, TEN_POW_15),
            (TEN_POW_15, TEN_POW_15 - 1),
        ];
        for (i, (x, y)) in cases.into_iter().enumerate() {
            let budget = format!("b{i}");
            let policy = BudgetPolicy::new().limit("d", DimensionLimit::both(x + y - 1, x + y));
            b.set_policy(&budget, &policy).await.unwrap();
            b.report_usage(&budget, &UsageReport::new().add("d", x))
                .await
                .unwrap();
            let receipt = b
                .report_usage(&budget, &UsageReport::new().add("d", y))
                .await
                .unwrap();
            assert_eq!(b.usage(&budget).await.unwrap().counters["d"], x + y);
            let breach = |usage: u64, limit: u64| {
                vec![Breach {
                    dimension: "d".into(),
                    usage,
                    limit,
                    crossed: true,
                    pending: 0,
                }]
            };
            assert_eq!(
                receipt.outcome,
                UsageOutcome::SoftBreach(breach(x + y, x + y - 1)),
                "{url} {x} + {y}"
            );
            // One more is exactly one past the hard limit.
            let refused = b
                .report_usage(&budget, &UsageReport::new().add("d", 1))
                .await
                .unwrap();
            assert_eq!(
                refused.outcome,
                UsageOutcome::HardBreach(breach(x + y, x + y)),
                "{url} {x} + {y} + 1"
            );
            // Pending amounts: two holds summed, one released (a difference).
            let hold = |id: &str, amount: u64| ReserveRequest::new(id, 60_000).add("h", amount);
            b.reserve(&budget, &hold("p", x)).await.unwrap();
            b.reserve(&budget, &hold("q", y)).await.unwrap();
            assert_eq!(b.usage(&budget).await.unwrap().pending["h"], x + y);
            assert!(b.release(&budget, "p").await.unwrap());
            assert_eq!(b.usage(&budget).await.unwrap().pending["h"], y);
        }
        b.purge().await.unwrap();
    }
}
