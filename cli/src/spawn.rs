//! `--spawn postgres,valkey,valkey-cluster`: throwaway local servers (from `stowage-testkit`), stopped when the command ends.

use std::any::Any;

use stowage::{Error, Result};
use stowage_testkit::servers::postgres::{PostgresServer, PostgresSettings};
use stowage_testkit::servers::valkey::{ValkeyCluster, ValkeyServer, ValkeySettings};

/// Running servers; dropping this stops them.
#[derive(Default)]
pub struct Spawned {
    keep: Vec<Box<dyn Any>>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("servers", &self.keep.len())
            .finish()
    }
}

/// The names `--spawn` accepts.
pub const KINDS: &[&str] = &["postgres", "valkey", "valkey-cluster"];

impl Spawned {
    /// Starts one server per name and returns `(name, url)` for each.
    pub fn start(&mut self, list: &str) -> Result<Vec<(String, String)>> {
        let mut urls = Vec::new();
        for kind in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let failed = |e: String| Error::unavailable(format!("--spawn {kind}: {e}"));
            let url = match kind {
                "postgres" => {
                    let server = PostgresServer::start(PostgresSettings {
                        durable: true,
                        synchronous_commit: true,
                        max_connections: 200,
                    })
                    .map_err(failed)?;
                    let url = format!("{}?max_connections=32", server.url());
                    self.keep.push(Box::new(server));
                    url
                }
                "valkey" => {
                    let server =
                        ValkeyServer::start(ValkeySettings::default(), false).map_err(failed)?;
                    let url = server.url();
                    self.keep.push(Box::new(server));
                    url
                }
                "valkey-cluster" => {
                    let cluster =
                        ValkeyCluster::start(ValkeySettings::default()).map_err(failed)?;
                    let url = cluster.url();
                    self.keep.push(Box::new(cluster));
                    url
                }
                other => {
                    return Err(Error::invalid_input(format!(
                        "--spawn {} is unknown; choose from {}",
                        stowage::raw::show(other),
                        KINDS.join(", ")
                    )))
                }
            };
            urls.push((kind.to_owned(), url));
        }
        Ok(urls)
    }
}
