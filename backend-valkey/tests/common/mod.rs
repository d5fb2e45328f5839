//! The Valkey harness shared by this crate's test files.

use std::sync::Arc;

use stowage_conformance::servers::valkey::{ValkeyCluster, ValkeyServer, ValkeySettings};
use stowage_conformance::Harness;
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_valkey::{ValkeyBackend, ValkeyConfig, ValkeyTopology};

/// A harness that opens backends on `url` (standalone or cluster).
#[allow(dead_code)]
pub fn valkey_harness(url: String) -> Arc<dyn Harness> {
    Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move {
                let backend: Arc<dyn Backend> = Arc::new(ValkeyBackend::open(&url, options).await?);
                backend.initialize().await?;
                Ok(backend)
            })
        },
    )
}

/// `url`, or why there is none (a failure when `backend` is required).
#[allow(dead_code)]
pub fn url_or_skip(backend: &str, url: std::result::Result<String, String>) -> Option<String> {
    stowage_testkit::available(backend, url)
}

/// A throwaway standalone server of the test's own, whatever `STOWAGE_VALKEY_URL` says (crash,
/// restart and configuration tests change or kill their server); `None` (skipped, with the reason
/// printed) only when valkey-server cannot start and `valkey` is not required.
#[allow(dead_code)]
pub fn own_server(settings: ValkeySettings) -> Option<ValkeyServer> {
    match ValkeyServer::start(settings, false) {
        Ok(server) => Some(server),
        Err(reason) => {
            let _ = url_or_skip("valkey", Err(reason));
            None
        }
    }
}

/// A throwaway 3-master cluster of the test's own, whatever `STOWAGE_VALKEY_CLUSTER_URL` says;
/// `None` (skipped) only when it cannot start and `valkey-cluster` is not required.
#[allow(dead_code)]
pub fn own_cluster(settings: ValkeySettings) -> Option<ValkeyCluster> {
    match ValkeyCluster::start(settings) {
        Ok(cluster) => Some(cluster),
        Err(reason) => {
            let _ = url_or_skip("valkey-cluster", Err(reason));
            None
        }
    }
}

/// A driver connection to the server or cluster of a stowage Valkey URL, for checks below the API.
#[allow(dead_code)]
pub struct RawClient {
    standalone: Option<redis::aio::MultiplexedConnection>,
    cluster: Option<redis::cluster_async::ClusterConnection>,
}

#[allow(dead_code)]
impl RawClient {
    pub async fn open(url: &str) -> RawClient {
        let config = ValkeyConfig::from_url(url).expect("a Valkey URL");
        match config.topology {
            ValkeyTopology::Standalone(url) => RawClient {
                standalone: Some(
                    redis::Client::open(url.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap(),
                ),
                cluster: None,
            },
            ValkeyTopology::Cluster(seeds) => RawClient {
                standalone: None,
                cluster: Some(
                    redis::cluster::ClusterClient::new(seeds)
                        .unwrap()
                        .get_async_connection()
                        .await
                        .unwrap(),
                ),
            },
        }
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match (&self.standalone, &self.cluster) {
            (Some(c), _) => cmd.query_async(&mut c.clone()).await,
            (_, Some(c)) => cmd.query_async(&mut c.clone()).await,
            _ => unreachable!(),
        }
    }

    /// Which of `keys` exist (one EXISTS per key: keys of different slots).
    pub async fn existing(&self, keys: &[String]) -> Vec<String> {
        let mut found = Vec::new();
        for key in keys {
            let n: i64 = self
                .query(redis::cmd("EXISTS").arg(key))
                .await
                .expect("EXISTS");
            if n > 0 {
                found.push(key.clone());
            }
        }
        found
    }
}

/// The namespace `ns` as the keys of the server at `url` spell it (its registered id).
#[allow(dead_code)]
pub async fn key_namespace(url: &str, ns: &str) -> String {
    let backend = ValkeyBackend::open(url, ConnectOptions::new().namespace(ns))
        .await
        .unwrap();
    backend.key_namespace().await.unwrap()
}
