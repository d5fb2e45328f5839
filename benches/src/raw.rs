//! The raw engine ceilings: the same work issued through each driver with nothing around it.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::Script;
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use stowage::{ConnectOptions, UsageReport, DEFAULT_DEDUP_TTL_MS};
use stowage_postgres::PostgresBackend;
use stowage_valkey::raw::{report_usage_call, REPORT_USAGE_LUA};
use tokio::sync::Mutex;

/// The ms clock used by raw calls (wall clock, like the default backend clock).
fn now_ms() -> u64 {
    stowage::Clock::now_ms(&stowage::SystemClock)
}

/// Raw PostgreSQL: the installed `report_usage` function called on dedicated connections.
#[derive(Debug)]
pub struct RawPostgres {
    sql: String,
    batch_sql: String,
    connections: Vec<Mutex<PgConnection>>,
}

impl RawPostgres {
    /// Installs a namespace (through stowage, once) and opens `connections` plain connections.
    pub async fn start(url: &str, connections: usize) -> Arc<RawPostgres> {
        let options = ConnectOptions::new().namespace(stowage_testkit::unique_namespace("raw"));
        let backend = PostgresBackend::open(url, options).await.expect("connect");
        stowage::PersistenceBackend::initialize(&backend)
            .await
            .expect("install the schema");
        crate::prepare_budget(&backend).await;
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(Mutex::new(
                PgConnection::connect(url).await.expect("raw connection"),
            ));
        }
        Arc::new(RawPostgres {
            sql: backend.report_usage_sql().to_owned(),
            batch_sql: backend.report_usage_batch_sql(),
            connections: conns,
        })
    }

    /// One call on connection `slot`.
    pub async fn report(&self, slot: usize, budget: &str, report: &UsageReport) {
        let dims: Vec<&str> = report.dimensions.keys().map(String::as_str).collect();
        let deltas: Vec<i64> = report
            .dimensions
            .values()
            .map(|d| i64::try_from(*d).expect("small"))
            .collect();
        let key = report.dedup_key.as_deref();
        let fingerprint = key.map(|_| stowage::raw::dedup_fingerprint(report));
        let now = i64::try_from(now_ms()).expect("ms fit");
        let ttl = i64::try_from(DEFAULT_DEDUP_TTL_MS).expect("fits");
        let mut conn = self.connections[slot % self.connections.len()].lock().await;
        sqlx::query(&self.sql)
            .bind(budget)
            .bind(&dims)
            .bind(&deltas)
            .bind(key)
            .bind(fingerprint.as_deref())
            .bind(now)
            .bind(ttl)
            .bind(None::<&str>) // no window bounds: a lifetime budget
            .bind(None::<i64>)
            .bind(None::<i64>)
            .fetch_one(&mut *conn)
            .await
            .expect("raw report");
    }
}

impl RawPostgres {
    /// One call of the installed `report_usage_batch` function on connection `slot`: the items
    /// as arrays (budgets, dimension counts, dimensions and deltas concatenated, keys,
    /// fingerprints), no window bounds, one answer row per item.
    pub async fn report_batch(&self, slot: usize, items: &[(String, UsageReport)]) {
        let budgets: Vec<&str> = items.iter().map(|(b, _)| b.as_str()).collect();
        let counts: Vec<i32> = items
            .iter()
            .map(|(_, r)| i32::try_from(r.dimensions.len()).expect("few"))
            .collect();
        let dims: Vec<&str> = items
            .iter()
            .flat_map(|(_, r)| r.dimensions.keys().map(String::as_str))
            .collect();
        let deltas: Vec<i64> = items
            .iter()
            .flat_map(|(_, r)| r.dimensions.values())
            .map(|d| i64::try_from(*d).expect("small"))
            .collect();
        let keys: Vec<Option<&str>> = items.iter().map(|(_, r)| r.dedup_key.as_deref()).collect();
        let fingerprints: Vec<Option<String>> = items
            .iter()
            .map(|(_, r)| {
                r.dedup_key
                    .as_ref()
                    .map(|_| stowage::raw::dedup_fingerprint(r))
            })
            .collect();
        let now = i64::try_from(now_ms()).expect("ms fit");
        let ttl = i64::try_from(DEFAULT_DEDUP_TTL_MS).expect("fits");
        let no_specs: Vec<String> = Vec::new();
        let no_bounds: Vec<i64> = Vec::new();
        let mut conn = self.connections[slot % self.connections.len()].lock().await;
        let rows = sqlx::query(&self.batch_sql)
            .bind(&budgets)
            .bind(&counts)
            .bind(&dims)
            .bind(&deltas)
            .bind(&keys)
            .bind(&fingerprints)
            .bind(now)
            .bind(ttl)
            .bind(&no_specs)
            .bind(&no_bounds)
            .bind(&no_bounds)
            .fetch_all(&mut *conn)
            .await
            .expect("raw batch");
        assert_eq!(rows.len(), items.len(), "one row per item");
    }
}

/// Raw Valkey: EVALSHA of stowage's own script on one multiplexed connection.
#[derive(Clone)]
pub struct RawValkey {
    conn: MultiplexedConnection,
    script: Script,
    namespace: String,
}

impl std::fmt::Debug for RawValkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawValkey")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl RawValkey {
    /// Connects to a standalone `valkey://` URL, sets up a namespace with the benchmarks'
    /// policies and loads the script.
    pub async fn start(url: &str) -> RawValkey {
        let url = url.replacen("valkey://", "redis://", 1);
        let client = redis::Client::open(url.as_str()).expect("client");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let namespace = stowage_testkit::unique_namespace("raw");
        let backend = stowage_valkey::ValkeyBackend::open(
            &url,
            ConnectOptions::new().namespace(namespace.clone()),
        )
        .await
        .expect("set up the namespace");
        stowage::PersistenceBackend::initialize(&backend)
            .await
            .expect("load the scripts");
        crate::prepare_budget(&backend).await;
        // The keys spell the namespace by its registered id, as the backend's calls do.
        let namespace = backend.key_namespace().await.expect("the namespace's id");
        let raw = RawValkey {
            conn,
            script: Script::new(REPORT_USAGE_LUA),
            namespace,
        };
        raw.load().await;
        raw
    }

    /// One EVALSHA.
    pub async fn report(&self, budget: &str, report: &UsageReport) {
        let (keys, args) = report_usage_call(
            &self.namespace,
            budget,
            report,
            now_ms(),
            DEFAULT_DEDUP_TTL_MS,
        );
        let mut call = self.script.prepare_invoke();
        for key in keys {
            call.key(key);
        }
        for arg in args {
            call.arg(arg);
        }
        let _: (String, String) = call
            .invoke_async(&mut self.conn.clone())
            .await
            .expect("EVALSHA");
    }

    /// `reports.len()` EVALSHAs (budget, report) in one explicit pipeline (one round trip).
    pub async fn report_pipelined(&self, reports: &[(String, UsageReport)]) {
        let mut pipe = redis::pipe();
        for (budget, report) in reports {
            let (keys, args) = report_usage_call(
                &self.namespace,
                budget,
                report,
                now_ms(),
                DEFAULT_DEDUP_TTL_MS,
            );
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(keys.len());
            for key in keys {
                cmd.arg(key);
            }
            for arg in args {
                cmd.arg(arg);
            }
        }
        let _: Vec<(String, String)> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .expect("pipelined EVALSHA");
    }

    /// Loads the script so EVALSHA finds it.
    async fn load(&self) {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(REPORT_USAGE_LUA)
            .query_async(&mut self.conn.clone())
            .await
            .expect("SCRIPT LOAD");
        assert_eq!(
            sha,
            self.script.get_hash(),
            "the server's SHA of the script"
        );
    }

    /// The script's SHA (what EVALSHA names).
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// The namespace as the keys spell it (its registered id).
    pub fn key_namespace(&self) -> &str {
        &self.namespace
    }
}

/// Raw SQLite: stowage's transaction with cached prepared statements, on the calling thread.
#[derive(Debug)]
pub struct RawSqlite {
    conn: std::sync::Mutex<rusqlite::Connection>,
    namespace: String,
}

impl RawSqlite {
    /// Opens `url` with the backend's settings (the policies are set through stowage first).
    pub async fn start(url: &str) -> RawSqlite {
        let namespace = stowage_testkit::unique_namespace("raw");
        let backend =
            stowage::connect_with(url, ConnectOptions::new().namespace(namespace.clone()))
                .await
                .expect("set up the namespace");
        crate::prepare_budget(&*backend).await;
        RawSqlite {
            conn: std::sync::Mutex::new(stowage_sqlite::raw::open(url).expect("raw sqlite")),
            namespace,
        }
    }

    /// One `BEGIN IMMEDIATE … COMMIT`.
    pub fn report(&self, budget: &str, report: &UsageReport) {
        let mut conn = self.conn.lock().expect("not poisoned");
        stowage_sqlite::raw::report_usage(
            &mut conn,
            &self.namespace,
            budget,
            report,
            now_ms(),
            DEFAULT_DEDUP_TTL_MS,
        )
        .expect("raw report");
    }

    /// `items` in one `BEGIN IMMEDIATE … COMMIT` (stowage's statements, one fsync for all).
    pub fn report_batch(&self, items: &[(String, UsageReport)]) {
        let mut conn = self.conn.lock().expect("not poisoned");
        stowage_sqlite::raw::report_usage_batch(
            &mut conn,
            &self.namespace,
            items,
            now_ms(),
            DEFAULT_DEDUP_TTL_MS,
        )
        .expect("raw batch");
    }
}
