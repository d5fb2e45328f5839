//! Test-only harnesses around the reference model, shared by this crate's test files: one that
//! records which namespaces were opened and purged, one that is `shared` (one model per namespace,
//! every handle a [`MemoryBackend::share`] of it, as processes on one store), and deliberately
//! broken variants that prove the suite catches each defect.
#![allow(dead_code)] // each test binary uses a part of it

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use stowage_conformance::Harness;
use stowage_core::dump::{DedupItem, DumpItem};
use stowage_core::raw::{
    self, decide, dedup_expiry, dedup_fingerprint, dedup_is_live, reserve_answer, sorted_budgets,
    validate, OverBackend, Pattern, ResolvedOptions,
};
use stowage_core::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, Checked,
    ConnectOptions, DumpSummary, Error, ErrorKind, MemoryBackend, MultiReceipt,
    MultiReserveReceipt, PersistenceBackend, QueryParams, Reservation, ReservationState,
    ReserveReceipt, ReserveRequest, Result, StoreResult, StoredValue, UsageOutcome, UsageReceipt,
    UsageReport, Value, Window,
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
    /// A dedup record lives while `now < written_at + ttl`, without the cap at `MAX_AMOUNT`
    /// (`dedup_expiry`): at the end of time, a record of a long TTL still replays.
    UncappedDedupExpiry,
    /// A pattern query narrowed by its literal prefix finds nothing when the prefix ends in
    /// U+10FFFF (no successor character, so an empty range instead of an unbounded one).
    PrefixBoundWithoutCarry,
    /// `report_usage` refuses 256-byte names (a column one byte too short).
    Rejects256ByteNames,
    /// Windows are stored and shown, but counters never start again: usage counts for the
    /// budget's lifetime (an engine that never rolls over).
    NeverRollsOver,
    /// A `set_policy` or `delete_policy` that changes the window drops the counters, even those of
    /// the current window (an engine that forgets `keep_counters`).
    WindowChangeDropsCounters,
    /// `report_usage` judges hard limits by the counters alone: holds do not count against them.
    ReportsIgnoreHolds,
    /// A hold past its `expires_at` still shows in `usage.pending` (an engine that frees holds
    /// only when something writes).
    ExpiredHoldsStillCount,
    /// `release` of a committed reservation answers `true` instead of `Conflict`.
    ReleaseAfterCommitIsTrue,
    /// An id is forgotten at its `expires_at` instead of `dedup_ttl_ms` after it ended: commits,
    /// releases and reads after `expires_at` find nothing.
    ForgetsIdsAtExpiry,
    /// `reserve_all` keeps the holds it made on the other budgets when one budget refuses or
    /// fails (an engine that forgets to undo).
    ReserveAllKeepsHolds,
    /// `report_usage_batch` runs its items last to first (an engine that sends its pipeline
    /// backwards): later items do not see earlier ones.
    BatchInReverse,
    /// An item's error fails the whole batch (an engine that aborts its transaction on the
    /// first error instead of rolling back the one item).
    BatchFailsWhole,
    /// A dedup key sent twice in one batch applies twice (an engine that checks keys only
    /// against the records written before the batch).
    BatchKeysOnlyFromBefore,
}

impl Defect {
    /// Whether the wrapper keeps dedup records itself (and judges their liveness its own way).
    fn own_dedup(self) -> bool {
        matches!(self, Defect::ReadersTtl | Defect::UncappedDedupExpiry)
    }
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

/// One namespace's model and, for the dedup defects, the wrapper's own dedup bookkeeping.
#[derive(Debug)]
struct Store {
    model: Checked<MemoryBackend>,
    /// (budget, key) → the record, held across the report so that keyed reports stay atomic.
    keys: tokio::sync::Mutex<BTreeMap<(String, String), KeyRecord>>,
    /// Budget → its policy's window, kept by the wrapper (for `NeverRollsOver`).
    windows: Mutex<BTreeMap<String, Window>>,
}

/// A dedup record kept by the wrapper itself (for the dedup defects).
#[derive(Debug, Clone)]
struct KeyRecord {
    fingerprint: String,
    outcome: UsageOutcome,
    written_at: u64,
    /// The writing handle's TTL.
    ttl: u64,
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
                keys: tokio::sync::Mutex::new(BTreeMap::new()),
                windows: Mutex::new(BTreeMap::new()),
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
            let inner = store.model.share(options.clone())?;
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
    inner: Checked<MemoryBackend>,
    store: Arc<Store>,
    stores: Arc<Mutex<BTreeMap<String, Arc<Store>>>>,
    resolved: ResolvedOptions,
    shared: bool,
    defect: Defect,
    log: Arc<Log>,
}

impl Model {
    /// The shared model (the harness of `tests/shared_model.rs`) runs the multi-budget calls
    /// budget by budget over its own single calls (`raw::OverBackend`, as a Valkey cluster
    /// composes them) instead of the model's one atomic step: the suite then holds the composed
    /// sequence to the same answers.
    fn composed(&self) -> bool {
        self.shared && self.defect == Defect::None
    }

    /// Whether a record written at `written_at` by a handle with TTL `writer_ttl` is live at
    /// `now`, as this (broken) wrapper judges it.
    fn judged_live(&self, written_at: u64, writer_ttl: u64, now: u64) -> bool {
        match self.defect {
            Defect::ReadersTtl => {
                dedup_is_live(dedup_expiry(written_at, self.resolved.dedup_ttl_ms), now)
            }
            Defect::UncappedDedupExpiry => now < written_at.saturating_add(writer_ttl),
            _ => dedup_is_live(dedup_expiry(written_at, writer_ttl), now),
        }
    }

    /// A keyed report deduplicated by the wrapper, which judges liveness by
    /// [`Model::judged_live`]; what applies goes to the model without its key.
    async fn report_with_own_dedup(
        &self,
        budget: &str,
        report: &UsageReport,
        key: &str,
    ) -> Result<UsageReceipt> {
        let op = "report_usage";
        validate::report(op, budget, report)?;
        let now = self.resolved.now(op)?;
        let fingerprint = dedup_fingerprint(report);
        let slot = (budget.to_owned(), key.to_owned());
        let mut keys = self.store.keys.lock().await;
        if let Some(record) = keys.get(&slot) {
            if self.judged_live(record.written_at, record.ttl, now) {
                if record.fingerprint != fingerprint {
                    return Err(Error::dedup_conflict(op, budget, key));
                }
                return Ok(UsageReceipt {
                    outcome: record.outcome.clone(),
                    replayed: true,
                });
            }
        }
        let mut keyless = report.clone();
        keyless.dedup_key = None;
        let receipt = self.inner.report_usage(budget, &keyless).await?;
        keys.insert(
            slot,
            KeyRecord {
                fingerprint,
                outcome: receipt.outcome.clone(),
                written_at: now,
                ttl: self.resolved.dedup_ttl_ms,
            },
        );
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
        Box::pin(async move {
            let rows = self.inner.query(p, q).await?;
            let pattern = Pattern::parse("query", p)?;
            if self.defect == Defect::PrefixBoundWithoutCarry
                && !pattern.is_exact()
                && pattern.literal_prefix().ends_with('\u{10FFFF}')
            {
                return Ok(Vec::new());
            }
            Ok(rows)
        })
    }
    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.initialize()
    }
    fn cleanup(&self, t: u64) -> BoxFuture<'_, Result<u64>> {
        self.inner.cleanup(t)
    }
}

impl Model {
    /// `report_usage` for `ReportsIgnoreHolds`: hard limits judged by the counters alone; a report
    /// that fits them is applied with the hard limits lifted for a moment.
    async fn report_ignoring_holds(&self, b: &str, r: &UsageReport) -> Result<UsageReceipt> {
        validate::report("report_usage", b, r)?;
        let usage = self.inner.usage(b).await?;
        let policy = self.inner.policy(b).await?;
        let Some(policy) = policy.filter(|_| !usage.pending.is_empty()) else {
            return self.inner.report_usage(b, r).await;
        };
        let blind = decide(b, &usage.counters, &BTreeMap::new(), Some(&policy), r)?;
        if !blind.outcome.is_applied() {
            return self.inner.report_usage(b, r).await;
        }
        let mut lifted = policy.clone();
        for limit in lifted.limits.values_mut() {
            limit.hard = None;
        }
        self.inner.set_policy(b, &lifted).await?;
        let answer = self.inner.report_usage(b, r).await;
        self.inner.set_policy(b, &policy).await?;
        answer
    }

    /// For `ForgetsIdsAtExpiry`: `NotFound` when the budget knows `id` but its `expires_at` has passed.
    async fn forgotten_at_expiry(&self, op: &str, b: &str, id: &str) -> Result<()> {
        if self.defect != Defect::ForgetsIdsAtExpiry {
            return Ok(());
        }
        let now = self.resolved.now(op)?;
        match self.inner.reservation(b, id).await {
            Ok(Some(known)) if now >= known.expires_at => {
                Err(Error::reservation_not_found(op, b, id))
            }
            _ => Ok(()),
        }
    }

    /// `reserve_all` for `ReserveAllKeepsHolds`: every budget's `reserve`, the answer built from
    /// them, and nothing released.
    async fn reserve_all_keeping_holds(
        &self,
        budgets: &[&str],
        r: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        let budgets = sorted_budgets("reserve_all", budgets)?;
        validate::reserve("reserve_all", budgets[0], r)?;
        let mut answers = Vec::new();
        for budget in &budgets {
            answers.push(self.inner.reserve(budget, r).await);
        }
        reserve_answer(&budgets, answers)
    }

    /// The window of `budget`'s policy (as the wrapper keeps it for `NeverRollsOver`).
    fn own_window(&self, budget: &str) -> Option<Window> {
        lock(&self.store.windows).get(budget).cloned()
    }

    /// `set_policy` (`None`: `delete_policy`) with the window defects.
    async fn change_policy(&self, b: &str, p: Option<&BudgetPolicy>) -> Result<bool> {
        let old = self.inner.policy(b).await?.and_then(|p| p.window);
        let changed = old != p.and_then(|p| p.window.clone());
        let existed = match (self.defect, p) {
            (Defect::NeverRollsOver, Some(p)) => {
                // Validated and stored like a window, then counted as a lifetime policy.
                if let Some(w) = &p.window {
                    w.validate("set_policy")?;
                    w.bounds_at(self.resolved.now("set_policy")?)?;
                }
                let mut lifetime = p.clone();
                lifetime.window = None;
                self.inner.set_policy(b, &lifetime).await?;
                let mut windows = lock(&self.store.windows);
                match &p.window {
                    Some(w) => windows.insert(b.to_owned(), w.clone()),
                    None => windows.remove(b),
                };
                true
            }
            (Defect::NeverRollsOver, None) => {
                lock(&self.store.windows).remove(b);
                self.inner.delete_policy(b).await?
            }
            (_, Some(p)) => {
                self.inner.set_policy(b, p).await?;
                true
            }
            (_, None) => self.inner.delete_policy(b).await?,
        };
        if self.defect == Defect::WindowChangeDropsCounters && changed {
            self.inner.reset_usage(b).await?;
        }
        Ok(existed)
    }
}

impl BudgetBackend for Model {
    fn set_policy<'a>(&'a self, b: &'a str, p: &'a BudgetPolicy) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.change_policy(b, Some(p)).await.map(|_| ()) })
    }
    fn policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        Box::pin(async move {
            let mut policy = self.inner.policy(b).await?;
            if let Some(p) = policy.as_mut().filter(|p| p.window.is_none()) {
                p.window = self.own_window(b);
            }
            Ok(policy)
        })
    }
    fn delete_policy<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.change_policy(b, None).await })
    }
    fn report_usage<'a>(
        &'a self,
        b: &'a str,
        r: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move {
            let names = std::iter::once(b)
                .chain(r.dimensions.keys().map(String::as_str))
                .chain(r.dedup_key.as_deref());
            if self.defect == Defect::Rejects256ByteNames
                && names.into_iter().any(|n| n.len() == 256)
            {
                return Err(Error::invalid_input("report_usage: a name is too long"));
            }
            if self.defect == Defect::ReportsIgnoreHolds {
                return self.report_ignoring_holds(b, r).await;
            }
            match (self.defect, &r.dedup_key) {
                (Defect::ForgetsDedupKeys, Some(_)) => {
                    let mut keyless = r.clone();
                    keyless.dedup_key = None;
                    self.inner.report_usage(b, &keyless).await
                }
                (defect, Some(key)) if defect.own_dedup() => {
                    self.report_with_own_dedup(b, r, key).await
                }
                _ => self.inner.report_usage(b, r).await,
            }
        })
    }
    fn report_usage_batch<'a>(
        &'a self,
        items: &'a [(String, UsageReport)],
    ) -> BoxFuture<'a, Result<Vec<Result<UsageReceipt>>>> {
        Box::pin(async move {
            let op = "report_usage_batch";
            let (valid, invalid) = raw::split_batch(op, items)?;
            let mut order: Vec<raw::BatchItem<'_>> = valid.clone();
            if self.defect == Defect::BatchInReverse {
                order.reverse();
            }
            let mut seen = BTreeSet::new();
            let mut answers = BTreeMap::new();
            for item in &order {
                let mut report = item.report.clone();
                if let Some(key) = &report.dedup_key {
                    let first = seen.insert((item.budget, key.clone()));
                    if self.defect == Defect::BatchKeysOnlyFromBefore && !first {
                        report.dedup_key = None;
                    }
                }
                let answer = self.report_usage(item.budget, &report).await;
                match &answer {
                    Err(e) if self.defect == Defect::BatchFailsWhole => return Err(e.clone()),
                    Err(e) if e.kind() == ErrorKind::Unavailable => return Err(e.clone()),
                    _ => {}
                }
                answers.insert(item.index, answer);
            }
            let answers = valid
                .iter()
                .map(|item| answers.remove(&item.index).expect("answered"))
                .collect();
            raw::merge_batch(op, items.len(), &valid, answers, invalid)
        })
    }
    fn usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        Box::pin(async move {
            let mut usage = self.inner.usage(b).await?;
            if let Some(w) = self.own_window(b) {
                usage.window = Some(w.bounds_at(self.resolved.now("usage")?)?);
            }
            if self.defect == Defect::ExpiredHoldsStillCount {
                let now = self.resolved.now("usage")?;
                for known in self.inner.reservations(b).await? {
                    if known.state == ReservationState::Held && now >= known.expires_at {
                        for (dimension, amount) in known.dimensions.iter().filter(|(_, a)| **a > 0)
                        {
                            *usage.pending.entry(dimension.clone()).or_default() += amount;
                        }
                    }
                }
            }
            Ok(usage)
        })
    }
    fn reset_usage<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.reset_usage(b)
    }
    fn reserve<'a>(
        &'a self,
        b: &'a str,
        r: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<ReserveReceipt>> {
        self.inner.reserve(b, r)
    }
    fn commit<'a>(
        &'a self,
        b: &'a str,
        id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move {
            validate::commit("commit", b, id, actual)?;
            self.forgotten_at_expiry("commit", b, id).await?;
            self.inner.commit(b, id, actual).await
        })
    }
    fn release<'a>(&'a self, b: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            validate::name("release", "reservation id", id)?;
            self.forgotten_at_expiry("release", b, id).await?;
            match self.inner.release(b, id).await {
                Err(e)
                    if e.kind() == ErrorKind::Conflict
                        && self.defect == Defect::ReleaseAfterCommitIsTrue =>
                {
                    Ok(true)
                }
                answer => answer,
            }
        })
    }
    fn check_commit<'a>(
        &'a self,
        b: &'a str,
        id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate::commit("check_commit", b, id, actual)?;
            self.forgotten_at_expiry("check_commit", b, id).await?;
            self.inner.check_commit(b, id, actual).await
        })
    }
    fn reservation<'a>(
        &'a self,
        b: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Reservation>>> {
        Box::pin(async move {
            let known = self.inner.reservation(b, id).await?;
            if self.defect == Defect::ForgetsIdsAtExpiry {
                let now = self.resolved.now("reservation")?;
                return Ok(known.filter(|r| now < r.expires_at));
            }
            Ok(known)
        })
    }
    fn reservations<'a>(&'a self, b: &'a str) -> BoxFuture<'a, Result<Vec<Reservation>>> {
        Box::pin(async move {
            let mut known = self.inner.reservations(b).await?;
            if self.defect == Defect::ForgetsIdsAtExpiry {
                let now = self.resolved.now("reservations")?;
                known.retain(|r| now < r.expires_at);
            }
            Ok(known)
        })
    }
    fn report_usage_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        r: &'a UsageReport,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        if self.composed() {
            return Box::pin(async move {
                let budgets = sorted_budgets("report_usage_all", budgets)?;
                raw::report_usage_all(&mut OverBackend(self), &budgets, r).await
            });
        }
        self.inner.report_usage_all(budgets, r)
    }
    fn reserve_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        r: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<MultiReserveReceipt>> {
        if self.defect == Defect::ReserveAllKeepsHolds {
            return Box::pin(self.reserve_all_keeping_holds(budgets, r));
        }
        if self.composed() {
            return Box::pin(async move {
                let budgets = sorted_budgets("reserve_all", budgets)?;
                raw::reserve_all(&mut OverBackend(self), &budgets, r).await
            });
        }
        self.inner.reserve_all(budgets, r)
    }
    fn commit_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        if self.composed() {
            return Box::pin(async move {
                let budgets = sorted_budgets("commit_all", budgets)?;
                raw::commit_all(&mut OverBackend(self), &budgets, id, actual).await
            });
        }
        self.inner.commit_all(budgets, id, actual)
    }
    fn release_all<'a>(&'a self, budgets: &'a [&'a str], id: &'a str) -> BoxFuture<'a, Result<()>> {
        if self.composed() {
            return Box::pin(async move {
                let budgets = sorted_budgets("release_all", budgets)?;
                raw::release_all(&mut OverBackend(self), &budgets, id).await
            });
        }
        self.inner.release_all(budgets, id)
    }
}

impl Backend for Model {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            shared: self.shared,
            atomic_multi_budget: !self.composed(),
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
            self.store.keys.lock().await.clear();
            lock(&self.store.windows).clear();
            lock(&self.log.purged).insert(self.resolved.namespace.clone());
            Ok(())
        })
    }

    fn export<'a>(
        &'a self,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>> {
        if !self.defect.own_dedup() {
            return self.inner.export(out);
        }
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let (dump, summary) = self.dump_with_own_dedup().await?;
            out.write_all(&dump)
                .await
                .map_err(|e| Error::unavailable("export: write").with_source(e))?;
            Ok(summary)
        })
    }

    fn import<'a>(
        &'a self,
        input: &'a mut (dyn tokio::io::AsyncBufRead + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>> {
        if !self.defect.own_dedup() {
            return self.inner.import(input);
        }
        Box::pin(self.import_with_own_dedup(input))
    }

    fn is_empty(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            Ok(self.store.keys.lock().await.is_empty() && self.inner.is_empty().await?)
        })
    }

    fn digest(&self) -> BoxFuture<'_, Result<String>> {
        if !self.defect.own_dedup() {
            return self.inner.digest();
        }
        Box::pin(async move {
            let (dump, _) = self.dump_with_own_dedup().await?;
            stowage_core::dump::digest_of_dump(dump.as_slice()).await
        })
    }
}

impl Model {
    /// The model's dump with the wrapper's own dedup records in the dedup section (the model
    /// itself holds none: keyed reports reach it without their keys), so the wrapper's dumps
    /// carry its whole state and only its defect can tell it apart.
    async fn dump_with_own_dedup(&self) -> Result<(Vec<u8>, DumpSummary)> {
        let mut inner = Vec::new();
        let summary = self.inner.export(&mut inner).await?;
        let now = self.resolved.now("export")?;
        let mut own = Vec::new();
        for ((budget, key), record) in self.store.keys.lock().await.iter() {
            let expires_at = dedup_expiry(record.written_at, record.ttl);
            if !dedup_is_live(expires_at, now) {
                continue;
            }
            DumpItem::Dedup(DedupItem {
                budget: budget.clone(),
                key: key.clone(),
                fingerprint: record.fingerprint.clone(),
                outcome: record.outcome.clone(),
                expires_at,
            })
            .write_line(&mut own);
            own.push(b'\n');
        }
        let added = u64::try_from(own.split(|b| *b == b'\n').count() - 1).unwrap_or(0);
        let lines: Vec<&[u8]> = inner.split_inclusive(|b| *b == b'\n').collect();
        let mut dump = Vec::with_capacity(inner.len() + own.len());
        let mut placed = false;
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            if !placed && i > 0 && (last || line.starts_with(b"{\"record\"")) {
                dump.extend_from_slice(&own);
                placed = true;
            }
            if last {
                let items = summary.items + added;
                dump.extend_from_slice(
                    format!(
                        "{{\"end\":\"{}\",\"items\":{items}}}\n",
                        stowage_core::dump::FORMAT
                    )
                    .as_bytes(),
                );
            } else {
                dump.extend_from_slice(line);
            }
        }
        let summary = DumpSummary {
            items: summary.items + added,
            ..summary
        };
        Ok((dump, summary))
    }

    /// Imports a dump: its dedup records into the wrapper's own store (written now, with this
    /// handle's TTL, as far as an expiry tells), everything else into the model.
    async fn import_with_own_dedup(
        &self,
        input: &mut (dyn tokio::io::AsyncBufRead + Unpin + Send),
    ) -> Result<DumpSummary> {
        use tokio::io::AsyncReadExt;
        let mut dump = Vec::new();
        input
            .read_to_end(&mut dump)
            .await
            .map_err(|e| Error::unavailable("import: read").with_source(e))?;
        // Every line checked as an import checks it, so errors name the lines of the whole dump.
        stowage_core::dump::digest_of_dump(dump.as_slice()).await?;
        let lines: Vec<&[u8]> = dump.split_inclusive(|b| *b == b'\n').collect();
        let mut rest = Vec::with_capacity(dump.len());
        let mut own = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 && line.starts_with(b"{\"dedup\"") {
                if let Ok(DumpItem::Dedup(d)) = DumpItem::parse_line(line.trim_ascii_end()) {
                    own.push(d);
                    continue;
                }
            }
            let trailer: Option<serde_json::Value> = serde_json::from_slice(line).ok();
            let declared = trailer
                .as_ref()
                .filter(|t| t.get("end").is_some())
                .and_then(|t| t.get("items"))
                .and_then(serde_json::Value::as_u64);
            if let (Some(declared), false) = (declared, own.is_empty()) {
                let count = declared.saturating_sub(u64::try_from(own.len()).unwrap_or(0));
                rest.extend_from_slice(
                    format!(
                        "{{\"end\":\"{}\",\"items\":{count}}}\n",
                        stowage_core::dump::FORMAT
                    )
                    .as_bytes(),
                );
                continue;
            }
            rest.extend_from_slice(line);
        }
        if !Backend::is_empty(self).await? {
            return Err(Error::invalid_input("import: the namespace is not empty"));
        }
        let summary = self.inner.import(&mut rest.as_slice()).await?;
        let mut keys = self.store.keys.lock().await;
        let ttl = self.resolved.dedup_ttl_ms;
        let added = u64::try_from(own.len()).unwrap_or(0);
        for d in own {
            keys.insert(
                (d.budget, d.key),
                KeyRecord {
                    fingerprint: d.fingerprint,
                    outcome: d.outcome,
                    written_at: d.expires_at.saturating_sub(ttl),
                    ttl,
                },
            );
        }
        Ok(DumpSummary {
            items: summary.items + added,
            ..summary
        })
    }
}
