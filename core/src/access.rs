//! The engine side of a backend ([`Access`]) and the one checked layer ([`Checked`]) every backend
//! goes through.
//!
//! The shape is opendal's: an engine implements plain async functions over inputs that are already
//! validated; [`Checked`] wraps it, validates every call once (the same code for every engine),
//! names the operation, opens a `tracing` span, boxes the future, and is what users hold as a
//! [`Backend`]. Adding an operation means: the contract in core (the user-facing trait), its check
//! in [`Checked`], and one function per engine in [`Access`].

use std::future::Future;
use std::ops::Deref;
use std::time::Instant;

use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

use std::collections::BTreeMap;

use crate::batch::{self, BatchItem};
use crate::dump::{self, DumpItem, DumpPage, DumpSummary, Section};
use crate::multi::{self, MultiOutcome, MultiReserveOutcome, Steps};
use crate::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, ErrorKind,
    MultiReceipt, MultiReserveReceipt, PersistenceBackend, QueryParams, Reservation,
    ReserveOutcome, ReserveReceipt, ReserveRequest, Result, StoreResult, StoredValue, UsageOutcome,
    UsageReceipt, UsageReport, Value,
};

use crate::raw::{validate, Pattern};

/// A record row to append, validated: the record name is a valid name, `stored_at` is at most
/// `MAX_AMOUNT`, and `text` is the value serialized by `serde_json::to_string`, at most 1 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRow<'a> {
    /// The record.
    pub record: &'a str,
    /// The serialized value, exactly what is stored and read back.
    pub text: String,
    /// The timestamp given to `store`.
    pub stored_at: u64,
}

/// What an engine implements: one plain async function per operation.
///
/// Every input has been validated by [`Checked`] before the engine sees it: names are valid
/// (1–256 bytes, no NUL), amounts and times are at most `MAX_AMOUNT`, policies and reports keep
/// their limits, patterns are parsed, and query time ranges are ordered. Engines check nothing of
/// that again; they implement the semantics against their store.
pub trait Access: Sized + Send + Sync + 'static {
    /// The engine's name in spans: `"memory"`, `"sqlite"`, `"postgres"`, `"valkey"`.
    const NAME: &'static str;

    /// Honest facts about this engine (`Backend::capabilities`).
    fn capabilities(&self) -> Capabilities;

    /// Creates tables, schemas or scripts; harmless to repeat or to run from two processes at once.
    fn initialize(&self) -> impl Future<Output = Result<()>> + Send;

    /// Destroys everything of this handle's namespace (`Backend::purge`).
    fn purge(&self) -> impl Future<Output = Result<()>> + Send;

    /// Appends a row (`PersistenceBackend::store`).
    fn store(&self, row: NewRow<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Appends once per (record, key) (`PersistenceBackend::store_idempotent`); `key` is a valid name.
    fn store_idempotent(
        &self,
        row: NewRow<'_>,
        key: &str,
    ) -> impl Future<Output = Result<StoreResult>> + Send;

    /// Rows of the records `pattern` matches (`PersistenceBackend::query`); `params` are in range and ordered.
    fn query(
        &self,
        pattern: &Pattern,
        params: QueryParams,
    ) -> impl Future<Output = Result<Vec<StoredValue>>> + Send;

    /// Deletes rows with `stored_at < older_than` (`PersistenceBackend::cleanup`).
    fn cleanup(&self, older_than: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Replaces the policy (`BudgetBackend::set_policy`); the policy is valid.
    fn set_policy(
        &self,
        budget: &str,
        policy: &BudgetPolicy,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The policy last set (`BudgetBackend::policy`).
    fn policy(&self, budget: &str) -> impl Future<Output = Result<Option<BudgetPolicy>>> + Send;

    /// Removes the policy (`BudgetBackend::delete_policy`).
    fn delete_policy(&self, budget: &str) -> impl Future<Output = Result<bool>> + Send;

    /// One atomic, deduplicated report (`BudgetBackend::report_usage`); the report is valid.
    fn report_usage(
        &self,
        budget: &str,
        report: &UsageReport,
    ) -> impl Future<Output = Result<UsageReceipt>> + Send;

    /// `BudgetBackend::report_usage_batch` over the valid items (1 to `MAX_BATCH_ITEMS`, each
    /// a valid report, in the caller's order): one answer per item, in order, exactly those of
    /// [`Access::report_usage`] item by item. The outer `Err` only when the outcome of items is
    /// unknown. The default is [`one_by_one`](crate::raw::one_by_one); an engine overrides it to
    /// answer the batch in one round trip.
    fn report_usage_batch(
        &self,
        items: &[BatchItem<'_>],
    ) -> impl Future<Output = Result<Vec<Result<UsageReceipt>>>> + Send {
        async move {
            crate::batch::one_by_one(items, |item| self.report_usage(item.budget, item.report))
                .await
        }
    }

    /// The counters (`BudgetBackend::usage`).
    fn usage(&self, budget: &str) -> impl Future<Output = Result<BudgetUsage>> + Send;

    /// Removes the counters (`BudgetBackend::reset_usage`).
    fn reset_usage(&self, budget: &str) -> impl Future<Output = Result<()>> + Send;

    /// The handle's clock for operation `op` (`ResolvedOptions::now`): what "now" is to the
    /// checks core runs on the engine's behalf.
    fn now(&self, op: &str) -> Result<u64>;

    /// The handle's namespace (a dump's header names it).
    fn namespace(&self) -> &str;

    /// One page of a dump's `section` (SEMANTICS §4.5, `docs/dump-format.md`): the section's items
    /// in canonical order starting after the engine's own token `after` (`None`: from the start),
    /// at most [`dump::PAGE_ITEMS`], and the token of the next page (`None`: the section is done).
    /// Items read as they are stored, verbatim: core leaves out those not live at `now` (an engine
    /// may leave them out first) and checks the order. The default: `Unsupported`.
    fn dump_page(
        &self,
        _section: Section,
        _after: Option<&str>,
        _now: u64,
    ) -> impl Future<Output = Result<DumpPage>> + Send {
        async move {
            Err(crate::Error::unsupported(format!(
                "export: the {} engine cannot export",
                Self::NAME
            )))
        }
    }

    /// Writes `items` (checked by core: valid, in canonical order, consistent) into the
    /// namespace, verbatim, keeping the order of record rows as store order; called by `import`
    /// after [`Access::is_empty`], batch after batch. The default: `Unsupported`.
    fn load(&self, _items: &[DumpItem]) -> impl Future<Output = Result<()>> + Send {
        async move {
            Err(crate::Error::unsupported(format!(
                "import: the {} engine cannot import",
                Self::NAME
            )))
        }
    }

    /// Whether the namespace holds nothing at all (no record, policy, counter, window,
    /// reservation or dedup record, live or not). The default: `Unsupported`.
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send {
        async move {
            Err(crate::Error::unsupported(format!(
                "import: the {} engine cannot import",
                Self::NAME
            )))
        }
    }

    /// One atomic reservation (`BudgetBackend::reserve`); the request is valid.
    fn reserve(
        &self,
        budget: &str,
        request: &ReserveRequest,
    ) -> impl Future<Output = Result<ReserveReceipt>> + Send;

    /// One atomic commit (`BudgetBackend::commit`); `actual`'s names and amounts are valid.
    fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<UsageReceipt>> + Send;

    /// One atomic release (`BudgetBackend::release`).
    fn release(&self, budget: &str, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The reservation remembered under `id` at now, or `None` (`BudgetBackend::reservation`).
    fn reservation(
        &self,
        budget: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Reservation>>> + Send;

    /// Every reservation remembered at now, by id (`BudgetBackend::reservations`).
    fn reservations(&self, budget: &str) -> impl Future<Output = Result<Vec<Reservation>>> + Send;

    /// `BudgetBackend::check_commit`: the reservation read, then `raw::check_commit` at
    /// [`Access::now`]. An engine may answer it inside one read of its own.
    fn check_commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let op = "check_commit";
            let known = self.reservation(budget, id).await?;
            let now = self.now(op)?;
            crate::raw::check_commit(op, budget, id, known.as_ref(), actual, now).map(|_| ())
        }
    }

    /// `BudgetBackend::report_usage_all` over budgets in name order, distinct, 1 to 16, and a
    /// valid keyed report. The default is the composed sequence of §4.2 calls (not atomic); an
    /// engine that holds every budget in one store overrides it with one atomic step.
    fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> impl Future<Output = Result<MultiReceipt>> + Send {
        async move { multi::report_usage_all(&mut Composed(self), budgets, report).await }
    }

    /// `BudgetBackend::reserve_all` (budgets as for [`Access::report_usage_all`]).
    fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> impl Future<Output = Result<MultiReserveReceipt>> + Send {
        async move { multi::reserve_all(&mut Composed(self), budgets, request).await }
    }

    /// `BudgetBackend::commit_all` (budgets as for [`Access::report_usage_all`]).
    fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<MultiReceipt>> + Send {
        async move { multi::commit_all(&mut Composed(self), budgets, id, actual).await }
    }

    /// `BudgetBackend::release_all` (budgets as for [`Access::report_usage_all`]).
    fn release_all(&self, budgets: &[&str], id: &str) -> impl Future<Output = Result<()>> + Send {
        async move { multi::release_all(&mut Composed(self), budgets, id).await }
    }
}

/// The §4.3 sequence over an engine's single-budget calls, one network call each: the default of
/// [`Access`]'s multi-budget functions.
#[derive(Debug)]
pub struct Composed<'a, A>(pub &'a A);

#[allow(refining_impl_trait)]
impl<A: Access> Steps for Composed<'_, A> {
    fn reserve(
        &mut self,
        budget: &str,
        request: &ReserveRequest,
    ) -> impl Future<Output = Result<ReserveReceipt>> + Send {
        self.0.reserve(budget, request)
    }

    fn check_commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<()>> + Send {
        self.0.check_commit(budget, id, actual)
    }

    fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<UsageReceipt>> + Send {
        self.0.commit(budget, id, actual)
    }

    fn release(&mut self, budget: &str, id: &str) -> impl Future<Output = Result<bool>> + Send {
        self.0.release(budget, id)
    }
}

/// The checked layer: validates every call once, names the operation on errors, traces it, and
/// forwards to the engine. `Checked<E>` is the [`Backend`] of engine `E`; it dereferences to the
/// engine for engine-specific methods (statistics, configuration).
#[derive(Debug, Clone)]
pub struct Checked<A> {
    engine: A,
}

impl<A: Access> Checked<A> {
    /// Puts `engine` behind the checked layer.
    pub fn new(engine: A) -> Self {
        Checked { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &A {
        &self.engine
    }

    /// Runs one operation: validation and engine work in `work`, inside a span when tracing is on.
    fn run<'a, T: Traced + Send + 'a>(
        &'a self,
        op: &'static str,
        subject: &'a str,
        work: impl Future<Output = Result<T>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T>> {
        let span = tracing::debug_span!(
            "stowage",
            backend = A::NAME,
            op,
            name = subject,
            outcome = Empty,
            replayed = Empty,
            error_kind = Empty,
            elapsed_us = Empty,
        );
        if span.is_disabled() {
            // No subscriber wants it: no clock read, no recording, only the error's operation.
            return Box::pin(async move { work.await.map_err(|e| e.in_operation(op)) });
        }
        Box::pin(
            async move {
                let start = Instant::now();
                let result = work.await.map_err(|e| e.in_operation(op));
                record(&Span::current(), start, &result);
                result
            }
            .instrument(span),
        )
    }
}

impl<A> Deref for Checked<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.engine
    }
}

/// Writes the outcome of one operation into its span, and an event for an error.
fn record<T: Traced>(span: &Span, start: Instant, result: &Result<T>) {
    let elapsed = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("elapsed_us", elapsed);
    match result {
        Ok(value) => {
            span.record("outcome", value.outcome());
            if let Some(replayed) = value.replayed() {
                span.record("replayed", replayed);
            }
        }
        Err(error) => {
            span.record("outcome", "error");
            span.record("error_kind", error.kind().as_str());
            match error.kind() {
                ErrorKind::InvalidInput | ErrorKind::Conflict | ErrorKind::Overflow => {
                    tracing::event!(Level::DEBUG, kind = error.kind().as_str(), %error, "stowage call refused")
                }
                ErrorKind::Unavailable => {
                    tracing::event!(Level::WARN, kind = error.kind().as_str(), %error, "stowage call failed")
                }
                _ => {
                    tracing::event!(Level::ERROR, kind = error.kind().as_str(), %error, "stowage call failed")
                }
            }
        }
    }
}

/// What a span records of a successful answer.
trait Traced {
    /// A short word for the outcome.
    fn outcome(&self) -> &'static str;
    /// Whether the answer was replayed, for answers that can be.
    fn replayed(&self) -> Option<bool> {
        None
    }
}

impl Traced for DumpSummary {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for String {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for () {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for bool {
    fn outcome(&self) -> &'static str {
        if *self {
            "true"
        } else {
            "false"
        }
    }
}

impl Traced for u64 {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for StoreResult {
    fn outcome(&self) -> &'static str {
        match self {
            StoreResult::Appended => "appended",
            StoreResult::AlreadyExists => "already_exists",
        }
    }
}

impl Traced for Vec<StoredValue> {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for Option<BudgetPolicy> {
    fn outcome(&self) -> &'static str {
        if self.is_some() {
            "found"
        } else {
            "none"
        }
    }
}

impl Traced for BudgetUsage {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Traced for UsageReceipt {
    fn outcome(&self) -> &'static str {
        match self.outcome {
            UsageOutcome::Ok => "ok",
            UsageOutcome::SoftBreach(_) => "soft_breach",
            UsageOutcome::HardBreach(_) => "hard_breach",
        }
    }

    fn replayed(&self) -> Option<bool> {
        Some(self.replayed)
    }
}

impl Traced for Vec<Result<UsageReceipt>> {
    fn outcome(&self) -> &'static str {
        if self.iter().all(|answer| answer.is_ok()) {
            "ok"
        } else {
            "some_failed"
        }
    }
}

impl Traced for ReserveReceipt {
    fn outcome(&self) -> &'static str {
        match self.outcome {
            ReserveOutcome::Reserved => "reserved",
            ReserveOutcome::HardBreach(_) => "hard_breach",
        }
    }

    fn replayed(&self) -> Option<bool> {
        Some(self.replayed)
    }
}

impl Traced for MultiReceipt {
    fn outcome(&self) -> &'static str {
        match self.outcome {
            MultiOutcome::Ok => "ok",
            MultiOutcome::SoftBreach(_) => "soft_breach",
            MultiOutcome::HardBreach(_) => "hard_breach",
        }
    }

    fn replayed(&self) -> Option<bool> {
        Some(self.replayed)
    }
}

impl Traced for MultiReserveReceipt {
    fn outcome(&self) -> &'static str {
        match self.outcome {
            MultiReserveOutcome::Reserved => "reserved",
            MultiReserveOutcome::HardBreach(_) => "hard_breach",
        }
    }

    fn replayed(&self) -> Option<bool> {
        Some(self.replayed)
    }
}

impl Traced for Option<Reservation> {
    fn outcome(&self) -> &'static str {
        if self.is_some() {
            "found"
        } else {
            "none"
        }
    }
}

impl Traced for Vec<Reservation> {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl<A: Access> PersistenceBackend for Checked<A> {
    fn store<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
    ) -> BoxFuture<'a, Result<()>> {
        let op = "store";
        self.run(op, record_name, async move {
            let text = validate::store(op, record_name, value, timestamp)?;
            let row = NewRow {
                record: record_name,
                text,
                stored_at: timestamp,
            };
            self.engine.store(row).await
        })
    }

    fn store_idempotent<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        let op = "store_idempotent";
        self.run(op, record_name, async move {
            let text = validate::store(op, record_name, value, timestamp)?;
            validate::name(op, "idempotency key", idempotency_key)?;
            let row = NewRow {
                record: record_name,
                text,
                stored_at: timestamp,
            };
            self.engine.store_idempotent(row, idempotency_key).await
        })
    }

    fn query<'a>(
        &'a self,
        record_pattern: &'a str,
        params: QueryParams,
    ) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        let op = "query";
        self.run(op, record_pattern, async move {
            let pattern = Pattern::parse(op, record_pattern)?;
            validate::query_params(op, &params)?;
            self.engine.query(&pattern, params).await
        })
    }

    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        self.run("initialize", "", self.engine.initialize())
    }

    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>> {
        let op = "cleanup";
        self.run(op, "", async move {
            validate::amount(op, "older_than", older_than)?;
            self.engine.cleanup(older_than).await
        })
    }
}

impl<A: Access> BudgetBackend for Checked<A> {
    fn set_policy<'a>(
        &'a self,
        budget: &'a str,
        policy: &'a BudgetPolicy,
    ) -> BoxFuture<'a, Result<()>> {
        let op = "set_policy";
        self.run(op, budget, async move {
            validate::policy(op, budget, policy)?;
            self.engine.set_policy(budget, policy).await
        })
    }

    fn policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        let op = "policy";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            self.engine.policy(budget).await
        })
    }

    fn delete_policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<bool>> {
        let op = "delete_policy";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            self.engine.delete_policy(budget).await
        })
    }

    fn report_usage<'a>(
        &'a self,
        budget: &'a str,
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        let op = "report_usage";
        self.run(op, budget, async move {
            validate::report(op, budget, report)?;
            self.engine.report_usage(budget, report).await
        })
    }

    fn report_usage_batch<'a>(
        &'a self,
        items: &'a [(String, UsageReport)],
    ) -> BoxFuture<'a, Result<Vec<Result<UsageReceipt>>>> {
        let op = "report_usage_batch";
        let subject = items.first().map_or("", |(budget, _)| budget.as_str());
        self.run(op, subject, async move {
            let (valid, invalid) = batch::split(op, items)?;
            let answers = if valid.is_empty() {
                Vec::new()
            } else {
                self.engine.report_usage_batch(&valid).await?
            };
            batch::merge(op, items.len(), &valid, answers, invalid)
        })
    }

    fn usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        let op = "usage";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            self.engine.usage(budget).await
        })
    }

    fn reset_usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<()>> {
        let op = "reset_usage";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            self.engine.reset_usage(budget).await
        })
    }

    fn reserve<'a>(
        &'a self,
        budget: &'a str,
        request: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<ReserveReceipt>> {
        let op = "reserve";
        self.run(op, budget, async move {
            validate::reserve(op, budget, request)?;
            self.engine.reserve(budget, request).await
        })
    }

    fn commit<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        let op = "commit";
        self.run(op, budget, async move {
            validate::commit(op, budget, reservation_id, actual)?;
            self.engine.commit(budget, reservation_id, actual).await
        })
    }

    fn release<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let op = "release";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            validate::name(op, "reservation id", reservation_id)?;
            self.engine.release(budget, reservation_id).await
        })
    }

    fn check_commit<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<()>> {
        let op = "check_commit";
        self.run(op, budget, async move {
            validate::commit(op, budget, reservation_id, actual)?;
            self.engine
                .check_commit(budget, reservation_id, actual)
                .await
        })
    }

    fn reservation<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Reservation>>> {
        let op = "reservation";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            validate::name(op, "reservation id", reservation_id)?;
            self.engine.reservation(budget, reservation_id).await
        })
    }

    fn reservations<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Vec<Reservation>>> {
        let op = "reservations";
        self.run(op, budget, async move {
            validate::name(op, "budget", budget)?;
            self.engine.reservations(budget).await
        })
    }

    fn report_usage_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        let op = "report_usage_all";
        self.run(op, budgets.first().copied().unwrap_or(""), async move {
            let budgets = multi::sorted_budgets(op, budgets)?;
            validate::report(op, budgets[0], report)?;
            multi::report_all_request(op, report)?;
            self.engine.report_usage_all(&budgets, report).await
        })
    }

    fn reserve_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        request: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<MultiReserveReceipt>> {
        let op = "reserve_all";
        self.run(op, budgets.first().copied().unwrap_or(""), async move {
            let budgets = multi::sorted_budgets(op, budgets)?;
            validate::reserve(op, budgets[0], request)?;
            self.engine.reserve_all(&budgets, request).await
        })
    }

    fn commit_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        let op = "commit_all";
        self.run(op, budgets.first().copied().unwrap_or(""), async move {
            let budgets = multi::sorted_budgets(op, budgets)?;
            validate::commit(op, budgets[0], reservation_id, actual)?;
            self.engine
                .commit_all(&budgets, reservation_id, actual)
                .await
        })
    }

    fn release_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let op = "release_all";
        self.run(op, budgets.first().copied().unwrap_or(""), async move {
            let budgets = multi::sorted_budgets(op, budgets)?;
            validate::name(op, "reservation id", reservation_id)?;
            self.engine.release_all(&budgets, reservation_id).await
        })
    }
}

impl<A: Access> Backend for Checked<A> {
    fn capabilities(&self) -> Capabilities {
        self.engine.capabilities()
    }

    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        self.run("purge", "", self.engine.purge())
    }

    fn export<'a>(
        &'a self,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>> {
        let namespace = self.engine.namespace();
        self.run(
            "export",
            namespace,
            dump::export(&self.engine, namespace, out),
        )
    }

    fn import<'a>(
        &'a self,
        input: &'a mut (dyn tokio::io::AsyncBufRead + Unpin + Send),
    ) -> BoxFuture<'a, Result<DumpSummary>> {
        self.run(
            "import",
            self.engine.namespace(),
            dump::import(&self.engine, input),
        )
    }

    fn is_empty(&self) -> BoxFuture<'_, Result<bool>> {
        self.run("is_empty", self.engine.namespace(), self.engine.is_empty())
    }

    fn digest(&self) -> BoxFuture<'_, Result<String>> {
        self.run(
            "digest",
            self.engine.namespace(),
            dump::digest(&self.engine),
        )
    }
}
