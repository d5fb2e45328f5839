//! `MemoryBackend`: the reference model of SEMANTICS, written for clarity; not durable, not shared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::raw::{CommitStep, Steps, StoredWindow, WindowChange, WindowStep};
use crate::{
    budget, multi, BudgetPolicy, BudgetUsage, Capabilities, Checked, ConnectOptions, Error,
    MultiReceipt, MultiReserveReceipt, QueryParams, Reservation, ReservationState, ReserveReceipt,
    ReserveRequest, Result, StoreResult, StoredValue, UsageReceipt, UsageReport,
};

use crate::dump::{
    CountersItem, DedupItem, DumpItem, DumpPage, PolicyItem, RecordItem, ReservationItem, Section,
    PAGE_ITEMS,
};
use crate::raw::{Access, NewRow, Pattern, ResolvedOptions};
use serde::{de::DeserializeOwned, Serialize};

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
    /// Budget → the window its counters belong to (windowed policies only).
    windows: BTreeMap<String, StoredWindow>,
    /// (budget, dedup key) → what was recorded.
    dedup: BTreeMap<(String, String), DedupRecord>,
    /// (budget, reservation id) → the reservation, while remembered (forgotten ones are skipped
    /// by every read and removed by the budget's next reserve).
    reservations: BTreeMap<(String, String), Reservation>,
    /// (budget, id) of the reservations still `Held` (live or expired): what `pending` reads, so a
    /// budget with many resolved reservations costs no more per call than one with few.
    held: BTreeSet<(String, String)>,
    /// (budget, forget_at, id) of every reservation in `reservations`: what `forget` reads.
    by_forget: BTreeSet<(String, u64, String)>,
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
    /// The driver-table entry of `memory://` (every connect opens a new, empty model).
    pub const DRIVER: crate::raw::Driver = crate::raw::Driver {
        name: "memory",
        schemes: &["memory"],
        open: |_url, options| {
            Box::pin(async move {
                let backend: std::sync::Arc<dyn crate::Backend> =
                    std::sync::Arc::new(MemoryBackend::with_options(options)?);
                Ok(backend)
            })
        },
    };

    /// A fresh, empty model with default options, behind the checked layer.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Checked<MemoryBackend> {
        Self::with_options(ConnectOptions::default()).expect("default options are valid")
    }

    /// A fresh, empty model with `options` (clock and dedup TTL; the namespace is checked but a model is its own store).
    pub fn with_options(options: ConnectOptions) -> Result<Checked<MemoryBackend>> {
        Ok(Checked::new(MemoryBackend {
            options: options.resolve()?,
            state: Arc::new(Mutex::new(State::default())),
        }))
    }

    /// Another handle on this model's state with its own `options` (clock and dedup TTL), as a
    /// second process on one shared store would be: what one handle writes, the other sees.
    pub fn share(&self, options: ConnectOptions) -> Result<Checked<MemoryBackend>> {
        Ok(Checked::new(MemoryBackend {
            options: options.resolve()?,
            state: self.state.clone(),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied step: every step validates before it mutates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store_now(&self, row: NewRow<'_>) {
        self.state()
            .append(row.record, row.stored_at, row.text, None);
    }

    fn store_idempotent_now(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        let op = "store_idempotent";
        let NewRow {
            record: record_name,
            text,
            stored_at: timestamp,
        } = row;
        let mut state = self.state();
        let existing = state.records.get(record_name).and_then(|rows| {
            rows.iter()
                .find(|row| row.idempotency_key.as_deref() == Some(key))
        });
        if let Some(row) = existing {
            return crate::raw::idempotent_repeat(
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

    fn query_now(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        let op = "query";
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
                let value = crate::raw::decode_value(op, name, &row.text)?;
                out.push(StoredValue {
                    record_name: name.clone(),
                    value,
                    stored_at: row.stored_at,
                });
            }
        }
        Ok(out)
    }

    fn cleanup_now(&self, older_than: u64) -> u64 {
        let mut state = self.state();
        let mut deleted = 0u64;
        state.records.retain(|_, rows| {
            let before = rows.len();
            rows.retain(|row| row.stored_at >= older_than);
            deleted += u64::try_from(before - rows.len()).unwrap_or(u64::MAX);
            !rows.is_empty()
        });
        deleted
    }

    fn report_usage_now(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
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
        let step = state.window_step(budget, now)?;
        let current = state.current(budget, &report.dimensions, &step);
        let pending = state.pending(budget, now);
        let policy = state.policies.get(budget);
        let decision = budget::decide(budget, &current, &pending, policy, report)?;
        state.apply(budget, step, decision.new_counters);
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

    /// Runs `steps` on one transaction over the state: the model's multi-budget calls are one
    /// atomic step, the §4.3 sequence run under one lock at one clock reading.
    fn atomically<T>(
        &self,
        op: &'static str,
        steps: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let now = self.options.now(op)?;
        let mut state = self.state();
        let mut tx = Transaction {
            state: &mut state,
            now,
            remember_ms: self.options.dedup_ttl_ms,
        };
        steps(&mut tx)
    }
}

/// The state under the lock at one clock reading: the §4.2 calls as plain functions.
struct Transaction<'a> {
    state: &'a mut State,
    now: u64,
    /// The handle's dedup TTL: how long a reservation it creates is remembered after it ends.
    remember_ms: u64,
}

impl Transaction<'_> {
    fn reserve(&mut self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        let op = "reserve";
        let now = self.now;
        let state = &mut *self.state;
        let known = state.known(budget, &request.id, now);
        if let Some(replay) = crate::raw::check_reserve(op, budget, known, request, now)? {
            return Ok(replay);
        }
        let step = state.window_step(budget, now)?;
        let current = state.current(budget, &request.dimensions, &step);
        let pending = state.pending(budget, now);
        let policy = state.policies.get(budget);
        let breaches = budget::admit(op, budget, &current, &pending, policy, &request.dimensions)?;
        let mut reservation = Reservation::new(request, now, self.remember_ms);
        if !breaches.is_empty() {
            reservation.state = ReservationState::Refused { at: now, breaches };
        }
        let receipt = reservation.receipt(false);
        state.forget(budget, now);
        state.put(budget, reservation);
        Ok(receipt)
    }

    fn commit_step(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<CommitStep> {
        let known = self.state.known(budget, id, self.now);
        crate::raw::check_commit("commit", budget, id, known, actual, self.now)
    }

    fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        let op = "commit";
        if let CommitStep::Replay(receipt) = self.commit_step(budget, id, actual)? {
            return Ok(receipt);
        }
        let now = self.now;
        let state = &mut *self.state;
        let step = state.window_step(budget, now)?;
        let current = state.current(budget, actual, &step);
        let policy = state.policies.get(budget);
        let decision = budget::settle(op, budget, &current, policy, actual)?;
        state.apply(budget, step, decision.new_counters);
        state.resolve(
            budget,
            id,
            ReservationState::Committed {
                at: now,
                actual: actual.clone(),
                outcome: decision.outcome.clone(),
            },
        );
        Ok(UsageReceipt {
            outcome: decision.outcome,
            replayed: false,
        })
    }

    fn release(&mut self, budget: &str, id: &str) -> Result<bool> {
        let now = self.now;
        let known = self.state.known(budget, id, now);
        let free = crate::raw::check_release("release", budget, id, known, now)?;
        if free {
            self.state
                .resolve(budget, id, ReservationState::Released { at: now });
        }
        Ok(free)
    }
}

impl Steps for Transaction<'_> {
    async fn reserve(&mut self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        Transaction::reserve(self, budget, request)
    }

    async fn check_commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<()> {
        self.commit_step(budget, id, actual).map(|_| ())
    }

    async fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        Transaction::commit(self, budget, id, actual)
    }

    async fn release(&mut self, budget: &str, id: &str) -> Result<bool> {
        Transaction::release(self, budget, id)
    }
}

/// The page of the keys after `after` (a key's JSON), in key order, and the token of the next.
fn page_of<K: Serialize + DeserializeOwned + Ord>(
    after: Option<&str>,
    keys: impl Iterator<Item = K>,
    item: impl Fn(&K) -> DumpItem,
) -> DumpPage {
    let from: Option<K> = after.and_then(|token| serde_json::from_str(token).ok());
    let mut page = DumpPage::default();
    let mut last: Option<K> = None;
    for key in keys.filter(|key| from.as_ref().is_none_or(|from| key > from)) {
        if page.items.len() == PAGE_ITEMS {
            page.next = last.map(|key| serde_json::to_string(&key).expect("keys serialize"));
            break;
        }
        page.items.push(item(&key));
        last = Some(key);
    }
    page
}

/// The spec of `budget`'s policy window (called only where the policy has one).
fn policy_window_spec(state: &State, budget: &str) -> String {
    state
        .policies
        .get(budget)
        .and_then(|p| p.window.as_ref())
        .map(crate::Window::spec)
        .unwrap_or_default()
}

impl State {
    /// Where `budget`'s counters stand at `now` (`WindowStep::at` of its policy window).
    fn window_step(&self, budget: &str, now: u64) -> Result<WindowStep> {
        WindowStep::at(
            self.policies.get(budget).and_then(|p| p.window.as_ref()),
            self.windows.get(budget),
            now,
        )
    }

    /// The counters of `dimensions` an operation at `step` counts into (missing: 0).
    fn current(
        &self,
        budget: &str,
        dimensions: &BTreeMap<String, u64>,
        step: &WindowStep,
    ) -> BTreeMap<String, u64> {
        self.counters
            .get(budget)
            .filter(|_| step.keeps_counters())
            .map(|counters| {
                dimensions
                    .keys()
                    .filter_map(|d| counters.get(d).map(|v| (d.clone(), *v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes `new_counters` (nothing when empty), replacing a passed window's counters first
    /// (lazy rollover).
    fn apply(&mut self, budget: &str, step: WindowStep, new_counters: BTreeMap<String, u64>) {
        if new_counters.is_empty() {
            return;
        }
        if let WindowStep::Roll {
            bounds,
            keep_counters,
        } = step
        {
            if !keep_counters {
                self.counters.remove(budget);
            }
            let spec = policy_window_spec(self, budget);
            self.windows
                .insert(budget.to_owned(), StoredWindow { spec, bounds });
        }
        self.counters
            .entry(budget.to_owned())
            .or_default()
            .extend(new_counters);
    }

    /// The reservations `budget` remembers (forgotten ones included; callers filter).
    fn reservations_of<'a>(&'a self, budget: &'a str) -> impl Iterator<Item = &'a Reservation> {
        self.reservations
            .range((budget.to_owned(), String::new())..)
            .take_while(move |((b, _), _)| b == budget)
            .map(|(_, reservation)| reservation)
    }

    /// The amounts `budget`'s live reservations hold at `now`.
    fn pending(&self, budget: &str, now: u64) -> BTreeMap<String, u64> {
        let held = self
            .held
            .range((budget.to_owned(), String::new())..)
            .take_while(|(b, _)| b == budget)
            .filter_map(|key| self.reservations.get(key));
        crate::raw::pending_of(held, now)
    }

    /// Stores a new reservation of `budget` (replacing a forgotten one of the same id).
    fn put(&mut self, budget: &str, reservation: Reservation) {
        let key = (budget.to_owned(), reservation.id.clone());
        if let Some(old) = self.reservations.remove(&key) {
            self.by_forget
                .remove(&(budget.to_owned(), old.forget_at(), old.id));
        }
        self.by_forget.insert((
            budget.to_owned(),
            reservation.forget_at(),
            reservation.id.clone(),
        ));
        if matches!(reservation.state, ReservationState::Held) {
            self.held.insert(key.clone());
        } else {
            self.held.remove(&key);
        }
        self.reservations.insert(key, reservation);
    }

    /// Resolves reservation `id` of `budget` (known to exist) to `state`.
    fn resolve(&mut self, budget: &str, id: &str, state: ReservationState) {
        if let Some(mut reservation) = self
            .reservations
            .get(&(budget.to_owned(), id.to_owned()))
            .cloned()
        {
            reservation.state = state;
            self.put(budget, reservation);
        }
    }

    /// The reservation `budget` remembers under `id` at `now`.
    fn known(&self, budget: &str, id: &str, now: u64) -> Option<&Reservation> {
        self.reservations
            .get(&(budget.to_owned(), id.to_owned()))
            .filter(|r| r.is_remembered(now))
    }

    /// Removes `budget`'s forgotten reservations (`forget_at <= now`).
    fn forget(&mut self, budget: &str, now: u64) {
        let from = (budget.to_owned(), 0, String::new());
        let forgotten: Vec<(String, u64, String)> = self
            .by_forget
            .range(from..)
            .take_while(|(b, forget_at, _)| b == budget && *forget_at <= now)
            .cloned()
            .collect();
        for entry in forgotten {
            self.by_forget.remove(&entry);
            let key = (entry.0, entry.2);
            self.held.remove(&key);
            self.reservations.remove(&key);
        }
    }

    /// Applies the window change of a new policy window `new` (`None`: lifetime) at `now`.
    fn change_window(&mut self, budget: &str, new: Option<&crate::Window>, now: u64) -> Result<()> {
        let old = self.policies.get(budget).and_then(|p| p.window.as_ref());
        match WindowChange::at(old, self.windows.get(budget), new, now)? {
            WindowChange::Unchanged => {}
            WindowChange::Set {
                stored,
                keep_counters,
            } => {
                if !keep_counters {
                    self.counters.remove(budget);
                }
                match stored {
                    Some(stored) => {
                        self.windows.insert(budget.to_owned(), stored);
                    }
                    None => {
                        self.windows.remove(budget);
                    }
                }
            }
        }
        Ok(())
    }

    /// One page of `section` after the token `after`: the model's tokens are the JSON of the
    /// last item's key (budget; budget and id or key; record name, `stored_at` and sequence).
    fn dump_page(&self, section: Section, after: Option<&str>) -> DumpPage {
        match section {
            Section::Policies => page_of(after, self.policies.keys().cloned(), |budget| {
                DumpItem::Policy(PolicyItem::new(
                    budget.clone(),
                    self.policies[budget].clone(),
                ))
            }),
            Section::Counters => {
                let budgets: BTreeSet<&String> =
                    self.counters.keys().chain(self.windows.keys()).collect();
                page_of(after, budgets.into_iter().cloned(), |budget| {
                    DumpItem::Counters(CountersItem {
                        budget: budget.clone(),
                        window: self.windows.get(budget).cloned(),
                        values: self.counters.get(budget).cloned().unwrap_or_default(),
                    })
                })
            }
            Section::Reservations => page_of(after, self.reservations.keys().cloned(), |key| {
                DumpItem::Reservation(ReservationItem::new(
                    key.0.clone(),
                    self.reservations[key].clone(),
                ))
            }),
            Section::Dedup => page_of(after, self.dedup.keys().cloned(), |key| {
                let record = &self.dedup[key];
                DumpItem::Dedup(DedupItem {
                    budget: key.0.clone(),
                    key: key.1.clone(),
                    fingerprint: record.fingerprint.clone(),
                    outcome: record.outcome.clone(),
                    expires_at: record.expires_at,
                })
            }),
            Section::Records => {
                let rows = self.records.iter().flat_map(|(name, rows)| {
                    let mut keys: Vec<(String, u64, u64)> = rows
                        .iter()
                        .map(|row| (name.clone(), row.stored_at, row.seq))
                        .collect();
                    keys.sort();
                    keys
                });
                page_of(after, rows, |(name, _, seq)| {
                    let row = self.records[name]
                        .iter()
                        .find(|row| row.seq == *seq)
                        .expect("the row of a key just read");
                    DumpItem::Record(RecordItem {
                        name: name.clone(),
                        stored_at: row.stored_at,
                        idempotency_key: row.idempotency_key.clone(),
                        value: row.text.clone(),
                    })
                })
            }
        }
    }

    fn load(&mut self, item: &DumpItem) {
        match item {
            DumpItem::Policy(p) => {
                self.policies.insert(p.budget.clone(), p.policy());
            }
            DumpItem::Counters(c) => {
                if !c.values.is_empty() {
                    self.counters.insert(c.budget.clone(), c.values.clone());
                }
                if let Some(window) = &c.window {
                    self.windows.insert(c.budget.clone(), window.clone());
                }
            }
            DumpItem::Reservation(r) => self.put(&r.budget, r.reservation()),
            DumpItem::Dedup(d) => {
                self.dedup.insert(
                    (d.budget.clone(), d.key.clone()),
                    DedupRecord {
                        fingerprint: d.fingerprint.clone(),
                        outcome: d.outcome.clone(),
                        expires_at: d.expires_at,
                    },
                );
            }
            DumpItem::Record(r) => {
                self.append(
                    &r.name,
                    r.stored_at,
                    r.value.clone(),
                    r.idempotency_key.clone(),
                );
            }
        }
    }

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

impl Access for MemoryBackend {
    const NAME: &'static str = "memory";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            shared: false,
            distributed: false,
            max_value_bytes: crate::Capabilities::MAX_VALUE_BYTES,
            atomic_multi_budget: true,
        }
    }

    async fn initialize(&self) -> Result<()> {
        Ok(())
    }

    async fn purge(&self) -> Result<()> {
        *self.state() = State::default();
        Ok(())
    }

    async fn store(&self, row: NewRow<'_>) -> Result<()> {
        self.store_now(row);
        Ok(())
    }

    async fn store_idempotent(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        self.store_idempotent_now(row, key)
    }

    async fn query(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        self.query_now(pattern, params)
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        Ok(self.cleanup_now(older_than))
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let now = self.options.now("set_policy")?;
        let mut state = self.state();
        state.change_window(budget, policy.window.as_ref(), now)?;
        state.policies.insert(budget.to_owned(), policy.clone());
        Ok(())
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        Ok(self.state().policies.get(budget).cloned())
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let now = self.options.now("delete_policy")?;
        let mut state = self.state();
        state.change_window(budget, None, now)?;
        Ok(state.policies.remove(budget).is_some())
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        self.report_usage_now(budget, report)
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let now = self.options.now("usage")?;
        let state = self.state();
        let step = state.window_step(budget, now)?;
        let counters = match state.counters.get(budget) {
            Some(counters) if step.keeps_counters() => counters.clone(),
            _ => BTreeMap::new(),
        };
        Ok(BudgetUsage {
            counters,
            pending: state.pending(budget, now),
            window: step.bounds(),
        })
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        self.state().counters.remove(budget);
        Ok(())
    }

    fn now(&self, op: &str) -> Result<u64> {
        self.options.now(op)
    }

    fn namespace(&self) -> &str {
        &self.options.namespace
    }

    async fn dump_page(
        &self,
        section: Section,
        after: Option<&str>,
        _now: u64,
    ) -> Result<DumpPage> {
        Ok(self.state().dump_page(section, after))
    }

    async fn load(&self, items: &[DumpItem]) -> Result<()> {
        let mut state = self.state();
        for item in items {
            state.load(item);
        }
        Ok(())
    }

    async fn is_empty(&self) -> Result<bool> {
        let state = self.state();
        Ok(state.records.is_empty()
            && state.policies.is_empty()
            && state.counters.is_empty()
            && state.windows.is_empty()
            && state.dedup.is_empty()
            && state.reservations.is_empty())
    }

    async fn reserve(&self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        self.atomically("reserve", |tx| tx.reserve(budget, request))
    }

    async fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        self.atomically("commit", |tx| tx.commit(budget, id, actual))
    }

    async fn release(&self, budget: &str, id: &str) -> Result<bool> {
        self.atomically("release", |tx| tx.release(budget, id))
    }

    async fn reservation(&self, budget: &str, id: &str) -> Result<Option<Reservation>> {
        let now = self.options.now("reservation")?;
        Ok(self.state().known(budget, id, now).cloned())
    }

    async fn reservations(&self, budget: &str) -> Result<Vec<Reservation>> {
        let now = self.options.now("reservations")?;
        let state = self.state();
        Ok(state
            .reservations_of(budget)
            .filter(|r| r.is_remembered(now))
            .cloned()
            .collect())
    }

    async fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> Result<MultiReceipt> {
        let op = "report_usage_all";
        self.atomically(op, |tx| {
            multi::run_now(op, multi::report_usage_all(tx, budgets, report))
        })
    }

    async fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        let op = "reserve_all";
        self.atomically(op, |tx| {
            multi::run_now(op, multi::reserve_all(tx, budgets, request))
        })
    }

    async fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<MultiReceipt> {
        let op = "commit_all";
        self.atomically(op, |tx| {
            multi::run_now(op, multi::commit_all(tx, budgets, id, actual))
        })
    }

    async fn release_all(&self, budgets: &[&str], id: &str) -> Result<()> {
        let op = "release_all";
        self.atomically(op, |tx| {
            multi::run_now(op, multi::release_all(tx, budgets, id))
        })
    }
}
