//! What each case gets: a fresh backend in its own namespace, its `ManualClock`, and ways to open more.
//!
//! Every namespace a case opens through its [`Ctx`] is remembered and purged with
//! [`Backend::purge`] when the case ends, pass or fail, so a run of the suite against a live
//! deployment leaves nothing behind.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use stowage_core::{Backend, ConnectOptions, ManualClock, Result, DEFAULT_NAMESPACE};

use stowage_testkit::unique_namespace;

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
    namespaces: Arc<Namespaces>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespaces.own)
            .finish_non_exhaustive()
    }
}

/// The namespaces one case opened and has not purged yet; kept apart from [`Ctx`] so that the
/// runner can purge them after the case without holding any of the case's backend handles.
pub(crate) struct Namespaces {
    harness: Arc<dyn Harness>,
    /// The case's own namespace; every other one it opens must start with it.
    own: String,
    open: Mutex<BTreeSet<String>>,
}

impl Ctx {
    /// Opens a backend of `harness` in a fresh namespace with a new manual clock.
    pub async fn new(harness: Arc<dyn Harness>) -> Result<Ctx> {
        let clock = Arc::new(ManualClock::new(START_MS));
        let namespaces = Arc::new(Namespaces {
            harness,
            own: unique_namespace("conf"),
            open: Mutex::new(BTreeSet::new()),
        });
        let backend = namespaces
            .open(
                ConnectOptions::new()
                    .namespace(namespaces.own.clone())
                    .clock(clock.clone()),
            )
            .await?;
        Ok(Ctx {
            backend,
            clock,
            namespaces,
        })
    }

    /// The namespace of [`Ctx::backend`].
    pub fn namespace(&self) -> &str {
        &self.namespaces.own
    }

    /// Opens another backend with `options` exactly as given (no namespace or clock filled in).
    ///
    /// The namespace is purged when the case ends; it must be this context's namespace or start
    /// with it (anything else fails the case and is left alone: it may hold someone's data).
    pub async fn open(&self, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
        self.namespaces.open(options).await
    }

    /// Opens another handle on the same namespace with the same clock.
    pub async fn reopen(&self) -> Arc<dyn Backend> {
        self.open(self.options_for(self.namespace()))
            .await
            .expect("reopening the backend")
    }

    /// Opens a backend on the namespace `<this namespace><suffix>`, same clock.
    pub async fn open_namespace(&self, suffix: &str) -> Arc<dyn Backend> {
        self.open(self.options_for(&format!("{}{suffix}", self.namespace())))
            .await
            .expect("opening another namespace")
    }

    /// Opens a backend on the namespace `<this namespace><suffix>` with dedup TTL `ttl_ms`.
    pub async fn open_with_ttl(&self, suffix: &str, ttl_ms: u64) -> Arc<dyn Backend> {
        self.open(
            self.options_for(&format!("{}{suffix}", self.namespace()))
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

    /// Purges `namespace` through `handle` (a handle on it) now, for a namespace this case no
    /// longer uses: it is then no longer purged at the end (nothing may use it afterwards, or it
    /// would be left behind).
    pub async fn purge_finished(&self, namespace: &str, handle: &dyn Backend) -> Result<()> {
        handle.purge().await?;
        self.namespaces.lock().remove(namespace);
        Ok(())
    }

    /// The namespaces this context opened, for the runner to purge after the case.
    pub(crate) fn namespaces(&self) -> Arc<Namespaces> {
        self.namespaces.clone()
    }
}

impl Namespaces {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn open(&self, options: ConnectOptions) -> Result<Arc<dyn Backend>> {
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let backend = self.harness.open(options).await?;
        self.lock().insert(namespace);
        Ok(backend)
    }

    /// Purges every namespace opened and not yet purged, each through a new handle; `Err` lists
    /// every namespace that could not be purged (or was not the case's to purge) and why.
    pub(crate) async fn purge_all(&self) -> std::result::Result<(), String> {
        let namespaces = std::mem::take(&mut *self.lock());
        let mut failures = Vec::new();
        for namespace in namespaces {
            if !namespace.starts_with(&self.own) {
                failures.push(format!(
                    "namespace {namespace:?} was opened by the case but is not its own \
                     (does not start with {:?}); left alone, not purged",
                    self.own
                ));
                continue;
            }
            let options = ConnectOptions::new()
                .namespace(namespace.clone())
                .clock(Arc::new(ManualClock::new(START_MS)));
            let purged = match self.harness.open(options).await {
                Ok(handle) => handle.purge().await,
                Err(e) => Err(e),
            };
            if let Err(e) = purged {
                failures.push(format!(
                    "purging namespace {namespace:?} failed ({:?}): {e}",
                    e.kind()
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}
