//! Real servers in unusual states: durability derived from the server's settings, the pool after a
//! restart, server-side statement timeouts, error kinds of setup faults, and `purge`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sqlx::{Connection, PgConnection};
use stowage_conformance::servers::postgres::{PostgresServer, PostgresSettings};
use stowage_conformance::unique_namespace;
use stowage_core::{
    Backend, BudgetBackend, BudgetPolicy, Checked, ConnectOptions, DimensionLimit, ErrorKind,
    PersistenceBackend, QueryParams, ReserveRequest, UsageOutcome, UsageReport,
};
use stowage_postgres::PostgresBackend;

/// Opens and initializes a backend (as `stowage::connect` does).
async fn open_initialized(
    url: &str,
    options: ConnectOptions,
) -> stowage_core::Result<Checked<PostgresBackend>> {
    let backend = PostgresBackend::open(url, options).await?;
    backend.initialize().await?;
    Ok(backend)
}

async fn open(url: &str, namespace: &str) -> Checked<PostgresBackend> {
    open_initialized(url, ConnectOptions::new().namespace(namespace))
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// The advisory-lock class of a backend's namespace (`stowage_ns_<id>` → `id mod i32::MAX`).
fn lock_class(backend: &PostgresBackend) -> i32 {
    let id: i64 = backend
        .schema_name()
        .strip_prefix("stowage_ns_")
        .and_then(|id| id.parse().ok())
        .expect("schema names are stowage_ns_<id>");
    i32::try_from(id % i64::from(i32::MAX)).unwrap()
}

/// Waits (bounded) until `count` sessions wait for an advisory lock.
async fn wait_for_lock_waiters(probe: &mut PgConnection, count: i64) {
    for _ in 0..20_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&mut *probe)
        .await
        .unwrap();
        if waiting == count {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{count} sessions never waited for the advisory lock");
}

/// Waits (bounded) until no statement of the backend's schema is running on the server.
async fn wait_until_no_statement_runs(probe: &mut PgConnection, schema: &str) {
    let pattern = format!("%{schema}.%");
    for _ in 0..20_000 {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state <> 'idle' AND query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(&pattern)
        .fetch_one(&mut *probe)
        .await
        .unwrap();
        if running == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("a statement on {schema} kept running");
}

/// Leaves `n` idle connections in the backend's pool: `n` calls wait together on the budget's
/// lock (so each needs its own connection), then all finish.
async fn fill_pool(backend: &Checked<PostgresBackend>, url: &str, budget: &str, n: i64) {
    let policy = backend.policy(budget).await.unwrap().unwrap_or_default();
    let mut holder = PgConnection::connect(url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(lock_class(backend))
        .bind(budget)
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..n {
        let backend = backend.clone();
        let (budget, policy) = (budget.to_owned(), policy.clone());
        calls.push(tokio::spawn(async move {
            backend.set_policy(&budget, &policy).await
        }));
    }
    let mut probe = PgConnection::connect(url).await.unwrap();
    wait_for_lock_waiters(&mut probe, n).await;
    tx.commit().await.unwrap();
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

/// A way to stop the server.
type Stop = fn(&PostgresServer) -> Result<(), String>;

/// A strict server: fsync, full_page_writes and synchronous_commit on.
fn strict() -> PostgresSettings {
    PostgresSettings {
        durable: true,
        synchronous_commit: true,
        max_connections: 40,
    }
}

/// `durable` is what the backend's own sessions do: fsync on and a synchronous_commit that waits
/// for the local WAL flush. Checked on a strict server whose sessions switch synchronous_commit,
/// and on a lax one (fsync off, as the conformance runs' throwaway server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_follows_the_sessions_settings() {
    let Some(lax) = common::own_server(PostgresSettings::default()) else {
        return;
    };
    let backend = open(lax.url(), "lax").await;
    assert_eq!(backend.session_setting("fsync").await.unwrap(), "off");
    assert!(!backend.capabilities().durable, "fsync=off");
    drop(backend);
    drop(lax);
    let Some(server) = common::own_server(strict()) else {
        return;
    };
    for (setting, durable) in [
        ("on", true),
        ("off", false),
        ("local", true),
        ("remote_write", true),
        ("remote_apply", true),
    ] {
        let url = common::with_param(
            server.url(),
            &format!("options[synchronous_commit]={setting}"),
        );
        let backend = open(&url, &unique_namespace("durable")).await;
        assert_eq!(
            backend.session_setting("synchronous_commit").await.unwrap(),
            setting,
            "the session really runs with synchronous_commit={setting}"
        );
        assert_eq!(backend.session_setting("fsync").await.unwrap(), "on");
        assert_eq!(
            backend.capabilities().durable,
            durable,
            "synchronous_commit={setting}"
        );
    }
}

/// Idle connections killed by a restart (immediate or fast) never fail the first calls after it.
/// (A strict server: with synchronous_commit off, an immediate stop loses acknowledged writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_calls_after_a_server_restart_succeed() {
    let Some(server) = common::own_server(strict()) else {
        return;
    };
    let url = common::with_param(server.url(), "max_connections=4");
    let backend = open(&url, "restart").await;
    assert!(backend.capabilities().durable);
    let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(1_000));
    backend.set_policy("b", &policy).await.unwrap();
    let stops: [(&str, Stop); 2] = [
        ("immediate", PostgresServer::stop_immediate),
        ("fast", PostgresServer::stop_fast),
    ];
    let mut applied = 0;
    for (mode, stop) in stops {
        fill_pool(&backend, server.url(), "b", 4).await;
        stop(&server).unwrap();
        server.start_again().unwrap();
        let usage = backend
            .usage("b")
            .await
            .unwrap_or_else(|e| panic!("first usage after a {mode} restart: {e}"));
        assert_eq!(usage.counters.get("t").copied().unwrap_or(0), applied);
        assert_eq!(
            backend
                .policy("b")
                .await
                .unwrap_or_else(|e| panic!("first policy after a {mode} restart: {e}")),
            Some(policy.clone())
        );
        let receipt = backend
            .report_usage(
                "b",
                &UsageReport::new()
                    .add("t", 3)
                    .dedup_key(format!("after-{mode}")),
            )
            .await
            .unwrap_or_else(|e| panic!("first keyed report after a {mode} restart: {e}"));
        assert_eq!(receipt.outcome, UsageOutcome::Ok);
        assert!(!receipt.replayed);
        applied += 3;
        assert_eq!(
            backend.usage("b").await.unwrap().counters.get("t").copied(),
            Some(applied)
        );
    }
}

/// After a restart killed the idle connections, the calls safe to send again are sent again on a
/// new connection (`reserve`, `commit`, `reserve_all`, `commit_all`), while `release` and
/// `release_all` answer `Unavailable` (sent again, a release whose first try freed the hold would
/// answer `false`); the caller decides, and its retry finds the hold still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_calls_safe_to_resend_are_resent_after_a_restart() {
    let Some(server) = common::own_server(strict()) else {
        return;
    };
    let url = common::with_param(server.url(), "max_connections=2");
    let backend = open(&url, "resend").await;
    let restart = || async {
        fill_pool(&backend, server.url(), "b", 2).await;
        server.stop_fast().unwrap();
        server.start_again().unwrap();
    };
    let hold = |id: &str| ReserveRequest::new(id, 3_600_000).add("t", 5);
    let actual = BTreeMap::from([("t".to_owned(), 2)]);
    let both: &[&str] = &["a", "b"];
    backend.set_policy("b", &BudgetPolicy::new()).await.unwrap();

    restart().await;
    let receipt = backend.reserve("b", &hold("r1")).await.unwrap();
    assert!(receipt.outcome.is_reserved() && !receipt.replayed);
    restart().await;
    let receipt = backend.commit("b", "r1", &actual).await.unwrap();
    assert_eq!(receipt.outcome, UsageOutcome::Ok);
    restart().await;
    backend.reserve_all(both, &hold("m1")).await.unwrap();
    restart().await;
    backend.commit_all(both, "m1", &actual).await.unwrap();

    backend.reserve("b", &hold("r2")).await.unwrap();
    restart().await;
    let error = backend.release("b", "r2").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        backend.release("b", "r2").await.unwrap(),
        "the hold was still there"
    );

    backend.reserve_all(both, &hold("m2")).await.unwrap();
    restart().await;
    let error = backend.release_all(both, "m2").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    backend.release_all(both, "m2").await.unwrap();
    assert!(backend.usage("a").await.unwrap().pending.is_empty());
    assert_eq!(
        backend.usage("b").await.unwrap().counters.get("t"),
        Some(&4)
    );
}

/// The server gives up a statement before the client does: a report that timed out waiting for
/// the budget's lock is never applied once the lock frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_timed_out_is_never_applied_later() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = open(
        &common::with_param(&url, "operation_timeout_ms=1000"),
        &unique_namespace("timeout"),
    )
    .await;
    let mut holder = PgConnection::connect(&url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(lock_class(&backend))
        .bind("b")
        .execute(&mut *tx)
        .await
        .unwrap();
    let error = backend
        .report_usage("b", &UsageReport::new().add("t", 5))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.is_retryable());
    tx.commit().await.unwrap();
    let mut probe = PgConnection::connect(&url).await.unwrap();
    wait_until_no_statement_runs(&mut probe, &backend.schema_name()).await;
    assert!(
        backend.usage("b").await.unwrap().counters.is_empty(),
        "the report the client gave up on was applied after all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_privileges_and_unknown_roles_are_misconfigured() {
    let Some(url) = common::shared_url() else {
        return;
    };
    // The registry exists; the role may not use it.
    open(&url, "default").await;
    let role = unique_namespace("noprivs").to_lowercase();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    for (what, url) in [
        ("no privileges (42501)", common::as_user(&url, &role)),
        (
            "unknown role (28000)",
            common::as_user(&url, "stowage_no_such_role"),
        ),
    ] {
        let error = open_initialized(&url, ConnectOptions::new())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Misconfigured, "{what}: {error}");
        assert!(!error.is_retryable(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_sessions_are_unavailable() {
    let Some(url) = common::shared_url() else {
        return;
    };
    // What a client meets on a server that turned into a hot standby: 25006.
    let url = common::with_param(&url, "options[default_transaction_read_only]=on");
    let error = open_initialized(
        &url,
        ConnectOptions::new().namespace(unique_namespace("ro")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_the_namespace_and_every_handle_keeps_working() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let namespace = unique_namespace("purge");
    let kept_namespace = unique_namespace("kept");
    let a = open(&url, &namespace).await;
    let b = open(&url, &namespace).await;
    let kept = open(&url, &kept_namespace).await;
    let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(100));
    let keyed = UsageReport::new().add("t", 3).dedup_key("k");
    for backend in [&a, &kept] {
        backend.set_policy("b", &policy).await.unwrap();
        assert!(!backend.report_usage("b", &keyed).await.unwrap().replayed);
        backend.store("r", &json!(1), 5).await.unwrap();
    }
    let old_schema = a.schema_name().to_owned();
    let purger: Arc<dyn Backend> = Arc::new(a.clone());
    purger.purge().await.unwrap();

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&old_schema)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(schemas, 0, "the schema {old_schema} is dropped");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stowage_registry.namespaces WHERE name = $1")
            .bind(&namespace)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(rows, 0, "the registry row is gone");

    // The other handle of the purged namespace finds it empty and keeps working.
    assert!(b.usage("b").await.unwrap().counters.is_empty());
    assert_eq!(b.policy("b").await.unwrap(), None);
    assert!(b
        .query("*", QueryParams::default())
        .await
        .unwrap()
        .is_empty());
    assert!(
        !b.report_usage("b", &keyed).await.unwrap().replayed,
        "the dedup record is gone"
    );
    // So does the purging handle, which sees the other's write.
    assert_eq!(
        a.usage("b").await.unwrap().counters.get("t").copied(),
        Some(3)
    );
    assert!(a.report_usage("b", &keyed).await.unwrap().replayed);

    // The other namespace is untouched.
    assert_eq!(
        kept.usage("b").await.unwrap().counters.get("t").copied(),
        Some(3)
    );
    assert_eq!(kept.policy("b").await.unwrap(), Some(policy));
    assert_eq!(
        kept.query("r", QueryParams::default()).await.unwrap().len(),
        1
    );
    assert!(kept.report_usage("b", &keyed).await.unwrap().replayed);

    // Purging again (twice in a row) is harmless.
    purger.purge().await.unwrap();
    purger.purge().await.unwrap();
    assert!(b.usage("b").await.unwrap().counters.is_empty());
}

/// `store_idempotent` tries again when the row it conflicts with vanishes before it can read it;
/// all its tries share one operation timeout. A trigger makes every try slow (it waits 300 ms for
/// a lock this test holds) and then skips the insert, so every try finds no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_idempotent_keeps_all_its_tries_within_one_operation_timeout() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let timeout = std::time::Duration::from_millis(1_000);
    let backend = open(
        &common::with_param(&url, "operation_timeout_ms=1000"),
        &unique_namespace("idem"),
    )
    .await;
    let schema = backend.schema_name();
    let lock_key: i64 = 0x5354_4F57_5445_5354; // "STOWTEST"
    let mut holder = PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    for sql in [
        format!(
            "CREATE FUNCTION {schema}.slow_skip() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM set_config('lock_timeout', '300ms', true);
                 BEGIN
                     PERFORM pg_advisory_xact_lock({lock_key});
                 EXCEPTION WHEN lock_not_available THEN NULL;
                 END;
                 RETURN NULL;
             END $$"
        ),
        format!(
            "CREATE TRIGGER slow_skip BEFORE INSERT ON {schema}.records \
             FOR EACH ROW EXECUTE FUNCTION {schema}.slow_skip()"
        ),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    let started = std::time::Instant::now();
    let error = backend
        .store_idempotent("r", &json!(1), 5, "k")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        took < timeout + std::time::Duration::from_millis(300),
        "store_idempotent took {took:?} with an operation timeout of {timeout:?}"
    );
    assert!(backend
        .query("r", QueryParams::default())
        .await
        .unwrap()
        .is_empty());
}
