//! What each case gets: a fresh backend in its own namespace, its `ManualClock`, and ways to open more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use stowage_core::{Backend, ConnectOptions, ManualClock, Result};

use crate::Harness;

/// The time every case's clock starts at (2023-11-14T22:13:20Z).
pub const START_MS: u64 = 1_700_000_000_000;

/// A case's world: one backend in a namespace nobody else uses, driven by a manual clock.
#[derive(Clone)]
pub struct Ctx {
    /// The backend under test, in [`Ctx::namespace`].
    pub backend: Arc<dyn Backend>,
    /// The clock every backend opened through this context reads.
    pub clock: Arc<ManualClock>,
    harness: Arc<dyn Harness>,
    namespace: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A namespace no other test, process or earlier run uses.
pub fn unique_namespace(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Ctx {
    /// Opens a backend of `harness` in a fresh namespace with a new manual clock.
    pub async fn new(harness: Arc<dyn Harness>) -> Result<Ctx> {
        let clock = Arc::new(ManualClock::new(START_MS));
        let namespace = unique_namespace("conf");
        let backend = harness
            .open(
                ConnectOptions::new()
                    .namespace(namespace.clone())
                    .clock(clock.clone()),
            )
            .await?;
        Ok(Ctx {
            backend,
            clock,
            harness,
            namespace,
        })
    }

    /// The namespace of [`Ctx::backend`].
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Opens another backend with `options` exactly as given (no namespace or clock filled in).
    pub async fn open(&self, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
        self.harness.open(options).await
    }

    /// Opens another handle on the same namespace with the same clock.
    pub async fn reopen(&self) -> Arc<dyn Backend> {
        self.open(self.options_for(&self.namespace))
            .await
            .expect("reopening the backend")
    }

    /// Opens a backend on the namespace `<this namespace><suffix>`, same clock.
    pub async fn open_namespace(&self, suffix: &str) -> Arc<dyn Backend> {
        self.open(self.options_for(&format!("{}{suffix}", self.namespace)))
            .await
            .expect("opening another namespace")
    }

    /// Opens a backend on the namespace `<this namespace><suffix>` with dedup TTL `ttl_ms`.
    pub async fn open_with_ttl(&self, suffix: &str, ttl_ms: u64) -> Arc<dyn Backend> {
        self.open(
            self.options_for(&format!("{}{suffix}", self.namespace))
                .dedup_ttl_ms(ttl_ms),
        )
        .await
        .expect("opening a backend with a dedup TTL")
    }

    /// Options naming `namespace` and this context's clock.
    pub fn options_for(&self, namespace: &str) -> ConnectOptions {
        ConnectOptions::new()
            .namespace(namespace)
            .clock(self.clock.clone())
    }

    /// Several handles on this namespace when the backend is shared (else just this one), to spread racing tasks over connections.
    pub async fn handles(&self, wanted: usize) -> Vec<Arc<dyn Backend>> {
        let mut handles = vec![self.backend.clone()];
        if self.backend.capabilities().shared {
            while handles.len() < wanted {
                handles.push(self.reopen().await);
            }
        }
        handles
    }
}
