//! `valkey://` and `valkey+cluster://` URLs → configuration.

use std::time::Duration;

use stowage_core::raw::{show, UrlParams};
use stowage_core::{Error, Result};

/// Both timeouts when the URL does not set them.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5_000);

/// Standalone server or cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValkeyTopology {
    /// One server: the `redis://` URL handed to the driver.
    Standalone(String),
    /// Cluster seed nodes as `redis://host:port` URLs.
    Cluster(Vec<String>),
}

/// Configuration of one Valkey backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValkeyConfig {
    /// Where to connect.
    pub topology: ValkeyTopology,
    /// Upper bound of one operation; past it the call is `Unavailable` (`operation_timeout_ms`, default 5000).
    pub operation_timeout: Duration,
    /// How long connecting may take (`connect_timeout_ms`, default 5000).
    pub connect_timeout: Duration,
}

impl ValkeyConfig {
    /// Parses `valkey://host:port[/db][?operation_timeout_ms=N&connect_timeout_ms=N]` (also `redis://`),
    /// or `valkey+cluster://host:port,host:port,…` (also `redis+cluster://`).
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, mut params) = UrlParams::parse(url)?;
        let cluster = base
            .strip_prefix("valkey+cluster://")
            .or_else(|| base.strip_prefix("redis+cluster://"));
        let standalone = base
            .strip_prefix("valkey://")
            .or_else(|| base.strip_prefix("redis://"));
        let topology = match (cluster, standalone) {
            (Some(seeds), _) => {
                let nodes: Vec<String> = seeds
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("redis://{s}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(Error::invalid_input(format!(
                        "connect: cluster URL {} names no seed node",
                        show(url)
                    )));
                }
                ValkeyTopology::Cluster(nodes)
            }
            (None, Some(rest)) if !rest.is_empty() => {
                ValkeyTopology::Standalone(format!("redis://{rest}"))
            }
            _ => {
                return Err(Error::invalid_input(format!(
                "connect: {} is not a Valkey URL (valkey://host:port or valkey+cluster://h:p,h:p)",
                show(url)
            )))
            }
        };
        let config = ValkeyConfig {
            topology,
            operation_timeout: params
                .take_ms("operation_timeout_ms")?
                .unwrap_or(DEFAULT_TIMEOUT),
            connect_timeout: params
                .take_ms("connect_timeout_ms")?
                .unwrap_or(DEFAULT_TIMEOUT),
        };
        params.finish()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standalone_and_cluster_urls() {
        let c =
            ValkeyConfig::from_url("valkey://127.0.0.1:7000/2?operation_timeout_ms=250").unwrap();
        assert_eq!(
            c.topology,
            ValkeyTopology::Standalone("redis://127.0.0.1:7000/2".into())
        );
        assert_eq!(c.operation_timeout, Duration::from_millis(250));
        let c = ValkeyConfig::from_url("redis+cluster://a:1, b:2,c:3").unwrap();
        assert_eq!(
            c.topology,
            ValkeyTopology::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into(),
                "redis://c:3".into()
            ])
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "valkey://",
            "valkey+cluster://",
            "valkey://h:1?x=1",
            "valkey://h:1?operation_timeout_ms=z",
            "http://h",
        ] {
            assert_eq!(
                ValkeyConfig::from_url(url).unwrap_err().kind(),
                stowage_core::ErrorKind::InvalidInput,
                "{url}"
            );
        }
    }
}
