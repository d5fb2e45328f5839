//! Shared setup of the benchmarks: the deployments (throwaway servers from `stowage-testkit`
//! unless URLs are given), one stowage backend per deployment, and the baselines:
//! the seed design (a FlowFabric-style multi-statement transaction on PostgreSQL) and the raw
//! engine ceilings (the same work through the driver with nothing around it).
#![deny(missing_docs)]

pub mod ceiling;
pub mod raw;
pub mod seed;

use std::sync::{Arc, OnceLock};

use stowage::{Backend, BudgetPolicy, ConnectOptions, DimensionLimit, UsageReport, MAX_AMOUNT};
use stowage_testkit::servers::postgres::{self, PostgresServer, PostgresSettings};
use stowage_testkit::servers::valkey::{self, ValkeyCluster, ValkeyServer, ValkeySettings};

/// The deployments of this benchmark process, started on first use.
pub fn deployments() -> &'static Deployments {
    static D: OnceLock<Deployments> = OnceLock::new();
    D.get_or_init(Deployments::start)
}

/// The benchmarks' runtime: two workers, like the machine's two cores.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The servers and files the benchmarks run against.
#[derive(Debug)]
pub struct Deployments {
    /// `sqlite://…` (synchronous=full, group commit on).
    pub sqlite_url: String,
    /// `postgres://…` (fsync on; synchronous_commit on unless `STOWAGE_BENCH_PG_SYNCHRONOUS_COMMIT=off`).
    pub postgres_url: String,
    /// `valkey://…`.
    pub valkey_url: String,
    /// `valkey+cluster://…`.
    pub cluster_url: String,
    _dir: tempfile::TempDir,
    _servers: (
        Option<PostgresServer>,
        Option<ValkeyServer>,
        Option<ValkeyCluster>,
    ),
}

impl Deployments {
    /// Starts what is not given by `STOWAGE_POSTGRES_URL`, `STOWAGE_VALKEY_URL`, `STOWAGE_VALKEY_CLUSTER_URL`.
    pub fn start() -> Deployments {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let (pg, postgres_url) = match std::env::var(postgres::URL_ENV) {
            Ok(url) => (None, url),
            Err(_) => {
                // fsync on; STOWAGE_BENCH_PG_SYNCHRONOUS_COMMIT=off measures without waiting for the flush.
                let synchronous_commit =
                    std::env::var("STOWAGE_BENCH_PG_SYNCHRONOUS_COMMIT").as_deref() != Ok("off");
                let server = PostgresServer::start(PostgresSettings {
                    durable: true,
                    synchronous_commit,
                    max_connections: 200,
                })
                .expect("start PostgreSQL");
                let url = server.url().to_owned();
                (Some(server), url)
            }
        };
        let (vk, valkey_url) = match std::env::var(valkey::URL_ENV) {
            Ok(url) => (None, url),
            Err(_) => {
                let server =
                    ValkeyServer::start(ValkeySettings::default(), false).expect("start Valkey");
                let url = server.url();
                (Some(server), url)
            }
        };
        let (cl, cluster_url) = match std::env::var(valkey::CLUSTER_URL_ENV) {
            Ok(url) => (None, url),
            Err(_) => {
                let cluster = ValkeyCluster::start(ValkeySettings::default())
                    .expect("start a Valkey cluster");
                let url = cluster.url();
                (Some(cluster), url)
            }
        };
        Deployments {
            sqlite_url,
            postgres_url,
            valkey_url,
            cluster_url,
            _dir: dir,
            _servers: (pg, vk, cl),
        }
    }

    /// `(name, url)` of every stowage deployment, in table order.
    pub fn urls(&self) -> Vec<(&'static str, String)> {
        vec![
            ("memory", "memory://".to_owned()),
            ("sqlite", self.sqlite_url.clone()),
            (
                "postgres",
                format!("{}?max_connections=32", self.postgres_url),
            ),
            ("valkey", self.valkey_url.clone()),
            ("valkey-cluster", self.cluster_url.clone()),
        ]
    }
}

/// Connects to `url` in a fresh namespace.
pub async fn connect(url: &str) -> Arc<dyn Backend> {
    let options = ConnectOptions::new().namespace(stowage_testkit::unique_namespace("bench"));
    stowage::connect_with(url, options).await.expect("connect")
}

/// Connects to `url` in a fresh namespace and sets the budgets' policies ([`prepare_budget`]).
pub async fn connect_prepared(url: &str) -> Arc<dyn Backend> {
    let backend = connect(url).await;
    prepare_budget(&*backend).await;
    backend
}

/// The budget every report goes to: limits high enough never to refuse.
pub const BUDGET: &str = "team-a";

/// Sets generous limits on [`BUDGET`] and on `team-0` … `team-15`, so every report takes the full
/// path (limits read and checked) and never breaches.
pub async fn prepare_budget(backend: &dyn Backend) {
    let policy = BudgetPolicy::new()
        .limit(
            "tokens",
            DimensionLimit::both(MAX_AMOUNT / 4, MAX_AMOUNT / 2),
        )
        .limit("usd_micros", DimensionLimit::hard(MAX_AMOUNT / 2));
    backend
        .set_policy(BUDGET, &policy)
        .await
        .expect("set_policy");
    for team in 0..16 {
        backend
            .set_policy(&format!("team-{team}"), &policy)
            .await
            .expect("set_policy");
    }
}

/// A typical gateway report: tokens and money, with dedup key `key`.
pub fn gateway_report(key: String) -> UsageReport {
    UsageReport::new()
        .add("tokens", 1_234)
        .add("usd_micros", 56)
        .dedup_key(key)
}
