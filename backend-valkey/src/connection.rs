//! One multiplexed connection (standalone, auto-reconnecting) or one cluster connection, with a timeout on every call.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, ScriptInvocation};
use stowage_core::{Error, Result};

use crate::config::{ValkeyConfig, ValkeyTopology};
use crate::error;

#[derive(Clone)]
enum Link {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A cheap-to-clone handle; concurrent calls are pipelined on the one connection.
#[derive(Clone)]
pub(crate) struct Connection {
    link: Link,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.link {
            Link::Standalone(_) => "standalone",
            Link::Cluster(_) => "cluster",
        };
        f.debug_struct("Connection")
            .field("kind", &kind)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Connection {
    /// Connects; `Unavailable` when the server cannot be reached in time.
    pub(crate) async fn open(config: &ValkeyConfig) -> Result<Connection> {
        let op = "connect";
        let connect = async {
            let link = match &config.topology {
                ValkeyTopology::Standalone(url) => {
                    let client =
                        redis::Client::open(url.as_str()).map_err(|e| error::map(op, e))?;
                    let manager = ConnectionManagerConfig::new()
                        .set_connection_timeout(config.connect_timeout)
                        .set_response_timeout(config.operation_timeout)
                        .set_number_of_retries(2);
                    Link::Standalone(
                        client
                            .get_connection_manager_with_config(manager)
                            .await
                            .map_err(|e| error::map(op, e))?,
                    )
                }
                ValkeyTopology::Cluster(nodes) => {
                    // The driver's retries also follow MOVED/ASK redirects, so they stay on. It
                    // resends a request cut off by a dropped connection: keyed reports replay,
                    // but an unkeyed report or a plain store could then apply twice
                    // (docs/semantics.md, "Valkey cluster resends").
                    let client = ClusterClientBuilder::new(nodes.clone())
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.operation_timeout)
                        .build()
                        .map_err(|e| error::map(op, e))?;
                    Link::Cluster(
                        client
                            .get_async_connection()
                            .await
                            .map_err(|e| error::map(op, e))?,
                    )
                }
            };
            Ok(link)
        };
        let link = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{op}: no Valkey connection within {:?}",
                    config.connect_timeout
                ))
            })??;
        Ok(Connection {
            link,
            timeout: config.operation_timeout,
        })
    }

    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// Runs one command.
    pub(crate) async fn run<T: FromRedisValue>(&self, op: &str, cmd: &Cmd) -> Result<T> {
        let call = async {
            match &self.link {
                Link::Standalone(c) => cmd.query_async(&mut c.clone()).await,
                Link::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            }
        };
        self.bounded(op, call).await
    }

    /// Runs one script by EVALSHA (loading it on NOSCRIPT).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        op: &str,
        call: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let run = async {
            match &self.link {
                Link::Standalone(c) => call.invoke_async(&mut c.clone()).await,
                Link::Cluster(c) => call.invoke_async(&mut c.clone()).await,
            }
        };
        self.bounded(op, run).await
    }

    async fn bounded<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{op}: no answer from Valkey within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|e| error::map(op, e))
    }
}
