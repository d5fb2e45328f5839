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

use crate::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, ErrorKind,
    PersistenceBackend, QueryParams, Result, StoreResult, StoredValue, UsageOutcome, UsageReceipt,
    UsageReport, Value,
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
pub trait Access: Send + Sync + 'static {
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

    /// The counters (`BudgetBackend::usage`).
    fn usage(&self, budget: &str) -> impl Future<Output = Result<BudgetUsage>> + Send;

    /// Removes the counters (`BudgetBackend::reset_usage`).
    fn reset_usage(&self, budget: &str) -> impl Future<Output = Result<()>> + Send;
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
}

impl<A: Access> Backend for Checked<A> {
    fn capabilities(&self) -> Capabilities {
        self.engine.capabilities()
    }

    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        self.run("purge", "", self.engine.purge())
    }
}
