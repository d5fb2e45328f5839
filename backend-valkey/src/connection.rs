//! One multiplexed connection (standalone, auto-reconnecting) or one cluster connection, with a timeout on every call.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    ScriptInvocation, Value as RedisValue,
};
use stowage_core::raw::{show, within};
use stowage_core::{Error, ErrorKind, Result};

use crate::config::{ValkeyConfig, ValkeyTopology};
use crate::error;
use crate::keys::slot_of;

/// Keys asked for per `SCAN` call of [`Connection::scan`].
const SCAN_COUNT: usize = 1_000;

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
    connect_timeout: Duration,
    /// How to reach one node directly: the server's URL, or the first seed's (its credentials
    /// serve for every node of a cluster, as they do for the driver's own cluster connections).
    node: ConnectionInfo,
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
        let node = match &config.topology {
            ValkeyTopology::Standalone(url) => url.as_str(),
            ValkeyTopology::Cluster(seeds) => seeds.first().map(String::as_str).unwrap_or(""),
        }
        .into_connection_info()
        .map_err(|e| error::map(op, e))?;
        let connect = async {
            // One plain connection first, without the driver's reconnection backoff (which would
            // wait out the connect timeout): refused credentials answer `Misconfigured` at once,
            // an unreachable server `Unavailable`. On a cluster only the first seed is probed,
            // and only refused credentials count (another seed may answer).
            let probe = direct(&node, config.connect_timeout, config.operation_timeout);
            if let Err(e) = probe.await {
                let e = error::map(op, e);
                if !matches!(config.topology, ValkeyTopology::Cluster(_))
                    || e.kind() == ErrorKind::Misconfigured
                {
                    return Err(e);
                }
            }
            let link = match &config.topology {
                ValkeyTopology::Standalone(url) => {
                    let client =
                        redis::Client::open(url.as_str()).map_err(|e| error::map(op, e))?;
                    let manager = ConnectionManagerConfig::new()
                        .set_connection_timeout(config.connect_timeout)
                        .set_response_timeout(driver_timeout(config.operation_timeout))
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
                        .response_timeout(driver_timeout(config.operation_timeout))
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
        let link = within(op, config.connect_timeout, connect).await?;
        Ok(Connection {
            link,
            timeout: config.operation_timeout,
            connect_timeout: config.connect_timeout,
            node,
        })
    }

    /// How to reach every primary directly: the server itself, or every primary the cluster's
    /// topology (`CLUSTER SHARDS`, asked of any node) lists, not only the seeds.
    pub(crate) async fn primaries(&self, op: &str) -> Result<Vec<ConnectionInfo>> {
        if !self.is_cluster() {
            return Ok(vec![self.node.clone()]);
        }
        let reply: RedisValue = self.run(op, redis::cmd("CLUSTER").arg("SHARDS")).await?;
        let addresses = shard_primaries(&reply).ok_or_else(|| {
            Error::internal(format!(
                "{op}: the cluster topology (CLUSTER SHARDS) cannot be read: {}",
                show(&format!("{reply:?}"))
            ))
        })?;
        Ok(addresses
            .into_iter()
            .map(|(host, port)| ConnectionInfo {
                addr: ConnectionAddr::Tcp(host, port),
                redis: self.node.redis.clone(),
            })
            .collect())
    }

    /// A connection of its own to one node, with this connection's timeouts.
    pub(crate) async fn node(&self, op: &str, info: &ConnectionInfo) -> Result<Node> {
        let addr = info.addr.to_string();
        let connect = async {
            direct(info, self.connect_timeout, self.timeout)
                .await
                .map_err(|e| error::map(op, e))
        };
        let conn = within(op, self.connect_timeout, connect).await?;
        Ok(Node {
            conn,
            timeout: self.timeout,
            addr,
        })
    }

    /// Durable means every write reaches the AOF before it is acknowledged: `appendonly yes` and
    /// `appendfsync always` on the server, or on every primary of a cluster (found through the
    /// cluster's topology, not only the seeds, and each asked directly). A node that cannot be
    /// asked (CONFIG refused or disabled, unreachable), or a topology that cannot be read within
    /// `patience`, makes the answer "not durable".
    pub(crate) async fn is_durable(&self, patience: Duration) -> bool {
        let op = "connect";
        let ask = async {
            let primaries = self.primaries(op).await.ok()?;
            if primaries.is_empty() {
                return None;
            }
            for info in &primaries {
                let node = self.node(op, info).await.ok()?;
                let mut values = Vec::new();
                for name in ["appendonly", "appendfsync"] {
                    let reply: RedisValue = node
                        .run(op, redis::cmd("CONFIG").arg("GET").arg(name))
                        .await
                        .ok()?;
                    let mut all = Vec::new();
                    strings(&reply, &mut all);
                    values.push(all.get(1).cloned()?);
                }
                if values != ["yes", "always"] {
                    return Some(false);
                }
            }
            Some(true)
        };
        tokio::time::timeout(patience, ask).await.ok().flatten() == Some(true)
    }

    /// Deletes every key matching the `SCAN MATCH` glob `pattern`: on the server, or on every
    /// primary of a cluster, `UNLINK`ing what it finds one command per hash slot. Not atomic:
    /// keys written while it runs may stay.
    pub(crate) async fn delete_matching(&self, op: &str, pattern: &str) -> Result<()> {
        let mut scan = self.scan(op, pattern).await?;
        while let Some(keys) = scan.next(op).await? {
            self.unlink(op, keys).await?;
        }
        Ok(())
    }

    /// A `SCAN MATCH pattern` over the server, or over every primary of a cluster one after the
    /// other: [`Scan::next`] answers the keys of one `SCAN` call at a time.
    pub(crate) async fn scan(&self, op: &str, pattern: &str) -> Result<Scan<'_>> {
        let primaries = if self.is_cluster() {
            self.primaries(op).await?
        } else {
            Vec::new()
        };
        Ok(Scan {
            conn: self,
            pattern: pattern.to_owned(),
            primaries,
            node: None,
            cursor: None,
            standalone_done: false,
        })
    }

    /// `UNLINK`s `keys`, one command per hash slot (a cluster refuses keys of several slots).
    async fn unlink(&self, op: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        let mut by_slot: std::collections::BTreeMap<u16, Vec<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for key in keys {
            by_slot.entry(slot_of(&key)).or_default().push(key);
        }
        for keys in by_slot.into_values() {
            let _: i64 = self.run(op, redis::cmd("UNLINK").arg(keys)).await?;
        }
        Ok(())
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

    /// The operation timeout: the bound of one call (and, scaled, of a batch's pipelines).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `pipe` in one write and reads its replies: the `count` replies after the first
    /// `offset`, each server error in its place as an `Err` (the driver's `query_async` would
    /// turn the first one into the whole answer). Connection trouble, or no answer within
    /// `limit`, is the outer `Unavailable`.
    ///
    /// On a cluster the pipeline goes to the node of its commands' slot (they must share one);
    /// the driver follows MOVED/ASK by sending the whole pipeline again to the node named, and
    /// it reduces the replies to the first server error among them (every reply is then lost).
    pub(crate) async fn pipeline(
        &self,
        op: &str,
        pipe: &redis::Pipeline,
        offset: usize,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<redis::RedisResult<RedisValue>>> {
        use redis::aio::ConnectionLike;
        let call = async {
            let replies = match &self.link {
                Link::Standalone(c) => c.clone().req_packed_commands(pipe, offset, count).await,
                Link::Cluster(c) => c.clone().req_packed_commands(pipe, offset, count).await,
            }
            .map_err(|e| error::map(op, e))?;
            Ok(replies
                .into_iter()
                .map(|reply| match reply {
                    RedisValue::ServerError(e) => Err(e.into()),
                    reply => Ok(reply),
                })
                .collect())
        };
        within(op, limit, call).await
    }

    async fn bounded<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        within(op, self.timeout, async {
            call.await.map_err(|e| error::map(op, e))
        })
        .await
    }
}

/// The driver's own bound on one request of the shared connection: long enough for the
/// pipelines of the largest batch (`batch::batch_timeout` of `MAX_BATCH_ITEMS` items). Every call
/// is bounded by its own, shorter limit around it ([`Connection::run`] and
/// [`Connection::script`]: the operation timeout; [`Connection::pipeline`]: the batch's).
fn driver_timeout(operation_timeout: Duration) -> Duration {
    crate::batch::batch_timeout(operation_timeout, stowage_core::MAX_BATCH_ITEMS)
}

/// A plain multiplexed connection to the node `info` names, without the driver's reconnection
/// backoff.
async fn direct(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(info.clone())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(response_timeout);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A direct connection to one node (a cluster primary, or the standalone server).
pub(crate) struct Node {
    conn: MultiplexedConnection,
    timeout: Duration,
    addr: String,
}

impl Node {
    /// Runs one command on this node.
    pub(crate) async fn run<T: FromRedisValue>(&self, op: &str, cmd: &Cmd) -> Result<T> {
        let call = async {
            cmd.query_async(&mut self.conn.clone())
                .await
                .map_err(|e| error::map(op, e))
        };
        within(
            &format!("{op} (Valkey node {})", self.addr),
            self.timeout,
            call,
        )
        .await
    }
}

/// A `SCAN` in progress (see [`Connection::scan`]). Keys written or deleted while it runs may
/// or may not be seen; every key present throughout is seen at least once.
pub(crate) struct Scan<'a> {
    conn: &'a Connection,
    pattern: String,
    /// Cluster: the primaries not scanned yet (the last one first).
    primaries: Vec<ConnectionInfo>,
    /// Cluster: the primary being scanned.
    node: Option<Node>,
    /// The cursor of the next call on the current server (`None`: not started there).
    cursor: Option<String>,
    standalone_done: bool,
}

impl Scan<'_> {
    /// The keys of the next `SCAN` call (possibly none), or `None` when every server is done.
    pub(crate) async fn next(&mut self, op: &str) -> Result<Option<Vec<Vec<u8>>>> {
        if self.cursor.as_deref() == Some("0") {
            self.cursor = None;
            if self.conn.is_cluster() {
                self.node = None;
            } else {
                self.standalone_done = true;
            }
        }
        if self.conn.is_cluster() && self.node.is_none() {
            let Some(info) = self.primaries.pop() else {
                return Ok(None);
            };
            self.node = Some(self.conn.node(op, &info).await?);
        }
        if self.standalone_done {
            return Ok(None);
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor.as_deref().unwrap_or("0"))
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (String, Vec<Vec<u8>>) = match &self.node {
            Some(node) => node.run(op, &cmd).await?,
            None => self.conn.run(op, &cmd).await?,
        };
        self.cursor = Some(next);
        Ok(Some(keys))
    }
}

/// Every string in a reply, depth first (replies of several cluster nodes arrive nested).
fn strings(value: &RedisValue, out: &mut Vec<String>) {
    match value {
        RedisValue::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => out.push(s.clone()),
        RedisValue::Array(items) | RedisValue::Set(items) => {
            items.iter().for_each(|v| strings(v, out))
        }
        RedisValue::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

fn text(value: &RedisValue) -> Option<String> {
    match value {
        RedisValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::VerbatimString { text, .. } => Some(text.clone()),
        RedisValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The fields of a RESP2 flat array of names and values, or of a RESP3 map.
fn fields(value: &RedisValue) -> Option<Vec<(String, &RedisValue)>> {
    match value {
        RedisValue::Array(items) => items
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => text(name).map(|n| (n, value)),
                _ => None,
            })
            .collect(),
        RedisValue::Map(pairs) => pairs.iter().map(|(k, v)| text(k).map(|n| (n, v))).collect(),
        _ => None,
    }
}

/// `(host, port)` of every node whose role is `master` in a `CLUSTER SHARDS` reply (its
/// `endpoint`, else its `ip`); `None` when the reply has another shape.
pub(crate) fn shard_primaries(reply: &RedisValue) -> Option<Vec<(String, u16)>> {
    let RedisValue::Array(shards) = reply else {
        return None;
    };
    let mut primaries = Vec::new();
    for shard in shards {
        let shard = fields(shard)?;
        let (_, nodes) = shard.iter().find(|(name, _)| name == "nodes")?;
        let RedisValue::Array(nodes) = nodes else {
            return None;
        };
        for node in nodes {
            let node = fields(node)?;
            let get = |name: &str| {
                node.iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| text(v))
            };
            if get("role").as_deref() != Some("master") {
                continue;
            }
            let host = get("endpoint")
                .filter(|e| !e.is_empty() && e != "?")
                .or_else(|| get("ip"))?;
            let port = get("port")?.parse::<u16>().ok()?;
            primaries.push((host, port));
        }
    }
    Some(primaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> RedisValue {
        RedisValue::BulkString(s.as_bytes().to_vec())
    }

    fn node(ip: &str, endpoint: &str, port: i64, role: &str) -> RedisValue {
        RedisValue::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            RedisValue::Int(port),
            bulk("ip"),
            bulk(ip),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk("online"),
        ])
    }

    #[test]
    fn every_primary_of_every_shard_is_found() {
        let shard = |nodes: Vec<RedisValue>| {
            RedisValue::Array(vec![
                bulk("slots"),
                RedisValue::Array(vec![RedisValue::Int(0), RedisValue::Int(5460)]),
                bulk("nodes"),
                RedisValue::Array(nodes),
            ])
        };
        let reply = RedisValue::Array(vec![
            shard(vec![
                node("10.0.0.1", "10.0.0.1", 7000, "master"),
                node("10.0.0.2", "10.0.0.2", 7001, "replica"),
            ]),
            shard(vec![node("10.0.0.3", "?", 7002, "master")]),
            shard(vec![node("10.0.0.4", "db-4.internal", 7003, "master")]),
        ]);
        assert_eq!(
            shard_primaries(&reply),
            Some(vec![
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.3".to_owned(), 7002),
                ("db-4.internal".to_owned(), 7003)
            ])
        );
        assert_eq!(shard_primaries(&bulk("nonsense")), None);
        assert_eq!(
            shard_primaries(&RedisValue::Array(vec![shard(vec![node(
                "10.0.0.1", "", 70000, "master"
            )])])),
            None,
            "a port out of range"
        );
    }
}
