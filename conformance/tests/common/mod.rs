//! Test-only harnesses around the reference model, shared by this crate's test files: one that
//! records which namespaces were opened and purged, one that is `shared` (one model per namespace,
//! every handle a [`MemoryBackend::share`] of it, as processes on one store), and deliberately
//! broken variants that prove the suite catches each defect.
#![allow(dead_code)] // each test binary uses a part of it

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use stowage_conformance::Harness;
use stowage_core::{
    dedup_expiry, dedup_is_live, validate, Backend, BoxFuture, BudgetBackend, BudgetPolicy,
    BudgetUsage, Capabilities, ConnectOptions, Error, MemoryBackend, PersistenceBackend,
    QueryParams, ResolvedOptions, Result, StoreResult, StoredValue, UsageReceipt, UsageReport,
    Value, MAX_AMOUNT,
};

/// A deliberate defect of the wrapped model (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The reference model as it is.
    None,
    /// A report's dedup key is ignored: a retry counts twice.
    ForgetsDedupKeys,
    /// A dedup record lives by the TTL of the handle that *reads* it, not of the one that wrote it
    /// (the defect `dedup_expiry` was introduced against).
    ReadersTtl,
    /// `purge` answers `Unsupported` (as the engine backends did before they implemented it).
    PurgeUnsupported,
    /// `purge` empties every namespace of the store, not only the handle's (shared harness only).
    PurgesEveryNamespace,
}

/// Namespaces opened (successfully) and purged through a [`ModelHarness`], since the last `take`.
#[derive(Debug, Default)]
pub struct Log {
    opened: Mutex<BTreeSet<String>>,
    purged: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// (opened, purged) since the last call, and starts afresh.
    pub fn take(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        (
            std::mem::take(&mut *lock(&self.opened)),
            std::mem::take(&mut *lock(&self.purged)),
        )
    }
}

/// Opens wrapped reference models: a fresh model per `open` (like `MemoryHarness`), or, when
/// `shared`, one model per namespace that every handle of that namespace shares.
#[derive(Debug)]
pub struct ModelHarness {
    shared: bool,
    defect: Defect,
    stores: Arc<Mutex<BTreeMap<String, Arc<Store>>>>,
    /// What was opened and purged.
    pub log: Arc<Log>,
}

/// One namespace's model and, for [`Defect::ReadersTtl`], its own dedup bookkeeping.
#[derive(Debug)]
struct Store {
    model: MemoryBackend,
    keys: Mutex<BTreeMap<(String, String), KeyState>>,
}

/// Where a dedup key stands for [`Defect::ReadersTtl`]: the model sees it as `<id>.<generation>`.
#[derive(Debug, Clone, Copy)]
struct KeyState {
    id: usize,
    generation: u64,
    written_at: Option<u64>,
}

impl ModelHarness {
    /// A harness with `defect`, shared (one model per namespace) or not (a fresh model per open).
    pub fn new(shared: bool, defect: Defect) -> Arc<ModelHarness> {
        Arc::new(ModelHarness {
            shared,
            defect,
            stores: Arc::new(Mutex::new(BTreeMap::new())),
            log: Arc::new(Log::default()),
        })
    }

    fn store_for(&self, namespace: &str, options: &ConnectOptions) -> Result<Arc<Store>> {
        let fresh = || -> Result<Arc<Store>> {
            Ok(Arc::new(Store {
                model: MemoryBackend::with_options(options.clone())?,
                keys: Mutex::new(BTreeMap::new()),
            }))
        };
        if !self.shared {
            return fresh();
        }
        let mut stores = lock(&self.stores);
        if let Some(store) = stores.get(namespace) {
            return Ok(store.clone());
        }
        let store = fresh()?;
        stores.insert(namespace.to_owned(), store.clone());
        Ok(store)
    }
}

impl Harness for ModelHarness {
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        Box::pin(async move {
            let resolved = options.resolve()?;
            let store = self.store_for(&resolved.namespace, &options)?;
            let inner = if self.defect == Defect::ReadersTtl {
                // The model keeps every record; the wrapper decides liveness (wrongly).
                store
                    .model
                    .share(options.clone().dedup_ttl_ms(MAX_AMOUNT))?
            } else {
                store.model.share(options.clone())?
            };
            lock(&self.log.opened).insert(resolved.namespace.clone());
            let backend: Arc<dyn Backend> = Arc::new(Model {
                inner,
                store,
                stores: self.stores.clone(),
                resolved,
                shared: self.shared,
                defect: self.defect,
                log: self.log.clone(),
            });
            Ok(backend)
        })
    }
}

/// A handle: the model, with this handle's options and the harness's defect.
#[derive(Debug)]
struct Model {
    inner: MemoryBackend,
    store: Arc<Store>,
    stores: Arc<Mutex<BTreeMap<String, Arc<Store>>>>,
    resolved: ResolvedOptions,
    shared: bool,
    defect: Defect,
    log: Arc<Log>,
}

impl Model {
    /// [`Defect::ReadersTtl`]: a keyed report whose record counts as live while
    /// `now < written_at + this handle's TTL`, whoever wrote it.
    async fn report_by_readers_ttl(
        &self,
        budget: &str,
        report: &UsageReport,
        key: &str,
    ) -> Result<UsageReceipt> {
        let op = "report_usage";
        validate::report(op, budget, report)?;
        let now = self.resolved.now(op)?;
        let slot = (budget.to_owned(), key.to_owned());
        let (internal, generation) = {
            let mut keys = lock(&self.store.keys);
            let id = keys.len();
            let state = keys.entry(slot.clone()).or_insert(KeyState {
                id,
                generation: 0,
                written_at: None,
            });
            let live = state.written_at.is_some_and(|written_at| {
                dedup_is_live(dedup_expiry(written_at, self.resolved.dedup_ttl_ms), now)
            });
            let generation = if live {
                state.generation
            } else {
                state.generation + 1
            };
            (format!("{}.{generation}", state.id), generation)
        };
        let mut inner_report = report.clone();
        inner_report.dedup_key = Some(internal);
        let receipt = self.inner.report_usage(budget, &inner_report).await?;
        if !receipt.replayed {
            let mut keys = lock(&self.store.keys);
            if let Some(state) = keys.get_mut(&slot) {
                if state.generation <= generation {
                    state.generation = generation;
                    state.written_at = Some(now);
                }
            }
        }
        Ok(receipt)
    }
}

impl PersistenceBackend for Model {
    fn store<'a>(&'a self, r: &'a str, v: &'a Value, t: u64) -> BoxFuture<'a, Result<()>> {
        self.inner.store(r, v, t)
    }
    fn store_idempotent<'a>(
        &'a self,
        r: &'a str,
        v: &'a Value,
        t: u64,
        k: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        self.inner.store_idempotent(r, v, t, k)
    }
    fn query<'a>(&'a self, p: &'a str, q: QueryParams) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        self.inner.query(p, q)
    }
    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.initialize()
    }
    fn cleanup(&self, t: u64) -> BoxFuture<'_, Result<u64>> {
        self.inner.cleanup(t)
    }
}

impl BudgetBackend for Model {
    fn set_policy<'a>(&'a self, b: &'a str, p: &'a BudgetPolicy) -> BoxFuture<'a, Result<()>> {
        self.inner.set_policy(b, p)
    }
    fn policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        self.inner.policy(b)
    }
    fn delete_policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.delete_policy(b)
    }
    fn report_usage<'a>(
        &'a self,
        b: &'a str,
        r: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move {
            match (self.defect, &r.dedup_key) {
                (Defect::ForgetsDedupKeys, Some(_)) => {
                    let mut keyless = r.clone();
                    keyless.dedup_key = None;
                    self.inner.report_usage(b, &keyless).await
                }
                (Defect::ReadersTtl, Some(key)) => self.report_by_readers_ttl(b, r, key).await,
                _ => self.inner.report_usage(b, r).await,
            }
        })
    }
    fn usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        self.inner.usage(b)
    }
    fn reset_usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.reset_usage(b)
    }
}

impl Backend for Model {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            shared: self.shared,
            ..self.inner.capabilities()
        }
    }
    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.defect == Defect::PurgeUnsupported {
                return Err(Error::unsupported(format!(
                    "purge: not implemented (namespace {:?})",
                    self.resolved.namespace
                )));
            }
            if self.defect == Defect::PurgesEveryNamespace {
                let stores: Vec<Arc<Store>> = lock(&self.stores).values().cloned().collect();
                for store in stores {
                    store.model.purge().await?;
                }
            }
            self.inner.purge().await?;
            lock(&self.store.keys).clear();
            lock(&self.log.purged).insert(self.resolved.namespace.clone());
            Ok(())
        })
    }
}
