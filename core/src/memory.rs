//! `MemoryBackend`: the reference model of SEMANTICS, written for clarity; not durable, not shared.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    budget, validate, Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities,
    ConnectOptions, Error, Pattern, PersistenceBackend, QueryParams, ResolvedOptions, Result,
    StoreResult, StoredValue, UsageReceipt, UsageReport, Value,
};

/// The in-memory reference model: every rule of the contract in plain Rust, behind one mutex.
#[derive(Debug)]
pub struct MemoryBackend {
    options: ResolvedOptions,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Record name → rows in store order.
    records: BTreeMap<String, Vec<Row>>,
    policies: BTreeMap<String, BudgetPolicy>,
    /// Budget → dimension → counter.
    counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// (budget, dedup key) → what was recorded.
    dedup: BTreeMap<(String, String), DedupRecord>,
}

#[derive(Debug)]
struct Row {
    seq: u64,
    stored_at: u64,
    /// The serialized value, exactly as a persistent backend would store it.
    text: String,
    idempotency_key: Option<String>,
}

#[derive(Debug)]
struct DedupRecord {
    fingerprint: String,
    outcome: crate::UsageOutcome,
    /// `written_at + ttl` of the handle that wrote it (capped); the record is live while `now < expires_at`.
    expires_at: u64,
}

impl MemoryBackend {
    /// A fresh, empty model with default options.
    pub fn new() -> Self {
        Self::with_options(ConnectOptions::default()).expect("default options are valid")
    }

    /// A fresh, empty model with `options` (clock and dedup TTL; the namespace is checked but a model is its own store).
    pub fn with_options(options: ConnectOptions) -> Result<Self> {
        Ok(MemoryBackend {
            options: options.resolve()?,
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    /// Another handle on this model's state with its own `options` (clock and dedup TTL), as a
    /// second process on one shared store would be: what one handle writes, the other sees.
    pub fn share(&self, options: ConnectOptions) -> Result<Self> {
        Ok(MemoryBackend {
            options: options.resolve()?,
            state: self.state.clone(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied step: every step validates before it mutates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store_now(&self, record_name: &str, value: &Value, timestamp: u64) -> Result<()> {
        let text = validate::store("store", record_name, value, timestamp)?;
        let mut state = self.state();
        state.append(record_name, timestamp, text, None);
        Ok(())
    }

    fn store_idempotent_now(
        &self,
        record_name: &str,
        value: &Value,
        timestamp: u64,
        key: &str,
    ) -> Result<StoreResult> {
        let op = "store_idempotent";
        let text = validate::store(op, record_name, value, timestamp)?;
        validate::name(op, "idempotency key", key)?;
        let mut state = self.state();
        let existing = state.records.get(record_name).and_then(|rows| {
            rows.iter()
                .find(|row| row.idempotency_key.as_deref() == Some(key))
        });
        if let Some(row) = existing {
            return crate::idempotent_repeat(
                op,
                record_name,
                key,
                (&row.text, row.stored_at),
                (&text, timestamp),
            );
        }
        state.append(record_name, timestamp, text, Some(key.to_owned()));
        Ok(StoreResult::Appended)
    }

    fn query_now(&self, pattern: &str, params: QueryParams) -> Result<Vec<StoredValue>> {
        let op = "query";
        let pattern = Pattern::parse(op, pattern)?;
        validate::query_params(op, &params)?;
        let state = self.state();
        let mut out = Vec::new();
        for (name, rows) in &state.records {
            if !pattern.matches(name) {
                continue;
            }
            let mut selected: Vec<&Row> = rows
                .iter()
                .filter(|row| params.start_time.is_none_or(|start| row.stored_at >= start))
                .filter(|row| params.end_time.is_none_or(|end| row.stored_at <= end))
                .collect();
            selected.sort_by(|a, b| b.stored_at.cmp(&a.stored_at).then(b.seq.cmp(&a.seq)));
            if let Some(limit) = params.limit_per_record {
                selected.truncate(limit);
            }
            for row in selected {
                let value = crate::decode_value(op, name, &row.text)?;
                out.push(StoredValue {
                    record_name: name.clone(),
                    value,
                    stored_at: row.stored_at,
                });
            }
        }
        Ok(out)
    }

    fn cleanup_now(&self, older_than: u64) -> Result<u64> {
        validate::amount("cleanup", "older_than", older_than)?;
        let mut state = self.state();
        let mut deleted = 0u64;
        state.records.retain(|_, rows| {
            let before = rows.len();
            rows.retain(|row| row.stored_at >= older_than);
            deleted += u64::try_from(before - rows.len()).unwrap_or(u64::MAX);
            !rows.is_empty()
        });
        Ok(deleted)
    }

    fn set_policy_now(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        validate::policy("set_policy", budget, policy)?;
        self.state()
            .policies
            .insert(budget.to_owned(), policy.clone());
        Ok(())
    }

    fn policy_now(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        validate::name("policy", "budget", budget)?;
        Ok(self.state().policies.get(budget).cloned())
    }

    fn delete_policy_now(&self, budget: &str) -> Result<bool> {
        validate::name("delete_policy", "budget", budget)?;
        Ok(self.state().policies.remove(budget).is_some())
    }

    fn report_usage_now(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
        validate::report(op, budget, report)?;
        let now = self.options.now(op)?;
        let mut state = self.state();
        let fingerprint = report
            .dedup_key
            .as_ref()
            .map(|_| budget::dedup_fingerprint(report));
        if let (Some(key), Some(fingerprint)) = (&report.dedup_key, &fingerprint) {
            let slot = (budget.to_owned(), key.clone());
            if let Some(record) = state.dedup.get(&slot) {
                if budget::dedup_is_live(record.expires_at, now) {
                    if &record.fingerprint != fingerprint {
                        return Err(Error::dedup_conflict(op, budget, key));
                    }
                    return Ok(UsageReceipt {
                        outcome: record.outcome.clone(),
                        replayed: true,
                    });
                }
            }
        }
        let current: BTreeMap<String, u64> = state
            .counters
            .get(budget)
            .map(|counters| {
                report
                    .dimensions
                    .keys()
                    .filter_map(|d| counters.get(d).map(|v| (d.clone(), *v)))
                    .collect()
            })
            .unwrap_or_default();
        let decision = budget::decide(budget, &current, state.policies.get(budget), report)?;
        if !decision.new_counters.is_empty() {
            let counters = state.counters.entry(budget.to_owned()).or_default();
            counters.extend(decision.new_counters);
        }
        if let (Some(key), Some(fingerprint)) = (&report.dedup_key, fingerprint) {
            state.dedup.insert(
                (budget.to_owned(), key.clone()),
                DedupRecord {
                    fingerprint,
                    outcome: decision.outcome.clone(),
                    expires_at: budget::dedup_expiry(now, self.options.dedup_ttl_ms),
                },
            );
        }
        Ok(UsageReceipt {
            outcome: decision.outcome,
            replayed: false,
        })
    }

    fn usage_now(&self, budget: &str) -> Result<BudgetUsage> {
        validate::name("usage", "budget", budget)?;
        Ok(BudgetUsage {
            counters: self
                .state()
                .counters
                .get(budget)
                .cloned()
                .unwrap_or_default(),
        })
    }

    fn reset_usage_now(&self, budget: &str) -> Result<()> {
        validate::name("reset_usage", "budget", budget)?;
        self.state().counters.remove(budget);
        Ok(())
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn append(&mut self, record_name: &str, stored_at: u64, text: String, key: Option<String>) {
        self.next_seq += 1;
        let row = Row {
            seq: self.next_seq,
            stored_at,
            text,
            idempotency_key: key,
        };
        self.records
            .entry(record_name.to_owned())
            .or_default()
            .push(row);
    }
}

impl PersistenceBackend for MemoryBackend {
    fn store<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.store_now(record_name, value, timestamp) })
    }

    fn store_idempotent<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        Box::pin(async move {
            self.store_idempotent_now(record_name, value, timestamp, idempotency_key)
        })
    }

    fn query<'a>(
        &'a self,
        record_pattern: &'a str,
        params: QueryParams,
    ) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        Box::pin(async move { self.query_now(record_pattern, params) })
    }

    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { self.cleanup_now(older_than) })
    }
}

impl BudgetBackend for MemoryBackend {
    fn set_policy<'a>(
        &'a self,
        budget: &'a str,
        policy: &'a BudgetPolicy,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.set_policy_now(budget, policy) })
    }

    fn policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        Box::pin(async move { self.policy_now(budget) })
    }

    fn delete_policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.delete_policy_now(budget) })
    }

    fn report_usage<'a>(
        &'a self,
        budget: &'a str,
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move { self.report_usage_now(budget, report) })
    }

    fn usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        Box::pin(async move { self.usage_now(budget) })
    }

    fn reset_usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.reset_usage_now(budget) })
    }
}

impl Backend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            shared: false,
            distributed: false,
            max_value_bytes: 1_048_576,
        }
    }

    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            *self.state() = State::default();
            Ok(())
        })
    }
}
