//! `SqliteBackend`: the handle and its [`Access`] impl; every statement runs on the worker's threads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::collections::BTreeMap;

use stowage_core::{
    BudgetPolicy, BudgetUsage, Capabilities, Checked, ConnectOptions, Error, ErrorKind,
    MultiReceipt, MultiReserveReceipt, QueryParams, Reservation, ReserveReceipt, ReserveRequest,
    Result, StoreResult, StoredValue, UsageReceipt, UsageReport,
};

use stowage_core::dump::{DumpItem, DumpPage, Section};
use stowage_core::raw::{
    commit_all, release_all, report_usage_all, reserve_all, run_now, Access, BatchItem, NewRow,
    Pattern, ResolvedOptions,
};

use crate::config::{SqliteConfig, SqliteLocation};
use crate::reservation::Tx;
use crate::worker::Worker;
use crate::{budget, dump, records, reservation, schema};

/// Write and commit counts of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStats {
    /// Writes executed (each in its own savepoint).
    pub writes: u64,
    /// Transactions committed (or attempted) for them.
    pub commits: u64,
}

/// The SQLite backend, used behind the checked layer ([`Checked<SqliteBackend>`], what
/// [`SqliteBackend::open`] returns). Cheap to share behind an `Arc`; dropping the last handle
/// closes the database.
#[derive(Debug)]
pub struct SqliteBackend {
    worker: Worker,
    options: ResolvedOptions,
    namespace: Arc<str>,
    config: SqliteConfig,
}

impl SqliteBackend {
    /// Opens the database named by a `sqlite://PATH` or `sqlite::memory:` URL (starts the writer
    /// and reader threads and opens their connections); call `initialize()` before use.
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Checked<SqliteBackend>> {
        Self::open_config(SqliteConfig::from_url(url)?, options).await
    }

    /// Opens the database described by `config`; call `initialize()` before use.
    pub async fn open_config(
        config: SqliteConfig,
        options: ConnectOptions,
    ) -> Result<Checked<SqliteBackend>> {
        let options = options.resolve()?;
        let worker = Worker::start(&config).await?;
        Ok(Checked::new(SqliteBackend {
            worker,
            namespace: Arc::from(options.namespace.as_str()),
            options,
            config,
        }))
    }

    /// The configuration this backend was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// How many writes and how many commits this backend has made (writes / commits = group size).
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            writes: self.worker.counters().writes.load(Ordering::Relaxed),
            commits: self.worker.counters().commits.load(Ordering::Relaxed),
        }
    }

    /// Runs `steps` as one write (one savepoint of the writer's group-committed transaction) on a
    /// [`Tx`] at one clock reading: the effects are kept whatever the answer, unless the store
    /// itself failed, which rolls the write back.
    async fn in_transaction<T, F>(&self, op: &'static str, steps: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let ns = self.namespace.clone();
        let options = self.options.clone();
        self.worker
            .write(op, move |c| {
                // Read the clock inside the serialized step: expiry is judged at apply time.
                let now = options.now(op)?;
                let mut tx = Tx::new(c, &ns, now, options.dedup_ttl_ms);
                let answer = steps(&mut tx);
                tx.finish(answer)
            })
            .await?
    }

    /// Test hooks that put the backend's threads in states a test cannot otherwise provoke.
    /// Not part of the API: they break the backend on purpose.
    #[doc(hidden)]
    pub async fn test_hook(&self, hook: TestHook) -> Result<()> {
        match hook {
            TestHook::LeaveWriterInTransaction => {
                let ns = self.namespace.clone();
                self.worker
                    .call("test hook", move |c| {
                        c.execute_batch("BEGIN IMMEDIATE")
                            .and_then(|()| {
                                c.execute(
                                    "INSERT INTO stowage_policies (ns, budget, policy)
                                     VALUES (?1, 'stray', '{\"limits\":{}}')",
                                    [&*ns],
                                )
                            })
                            .map(|_| ())
                            .map_err(|e| crate::error::map("test hook", e))
                    })
                    .await
            }
            TestHook::FailNextRollback => {
                self.worker.fail_next_rollback();
                Ok(())
            }
            TestHook::KillWriterThread => self.worker.kill(false).await,
            TestHook::KillReaderThreads => self.worker.kill(true).await,
        }
    }
}

/// What [`SqliteBackend::test_hook`] does.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestHook {
    /// The writer's connection opens a transaction, writes a policy `stray` and leaves it open,
    /// as a failed `ROLLBACK` would.
    LeaveWriterInTransaction,
    /// The writer's next `ROLLBACK` of a transaction left open counts as failed.
    FailNextRollback,
    /// The writer thread panics outside its `catch_unwind`; returns once it has exited.
    KillWriterThread,
    /// Every reader thread panics outside its `catch_unwind`; returns once they have exited.
    KillReaderThreads,
}

impl Access for SqliteBackend {
    const NAME: &'static str = "sqlite";

    fn capabilities(&self) -> Capabilities {
        let file = matches!(self.config.location, SqliteLocation::File(_));
        Capabilities {
            durable: file,
            shared: file,
            distributed: false,
            max_value_bytes: Capabilities::MAX_VALUE_BYTES,
            atomic_multi_budget: true,
        }
    }

    async fn initialize(&self) -> Result<()> {
        self.worker.call("initialize", schema::migrate).await
    }

    /// Deletes every row of this namespace from every table in one transaction (the tables are
    /// shared by all namespaces of the file, so nothing is dropped); other namespaces are untouched.
    async fn purge(&self) -> Result<()> {
        let ns = self.namespace.clone();
        self.worker
            .write("purge", move |c| schema::purge(c, &ns))
            .await
    }

    async fn store(&self, row: NewRow<'_>) -> Result<()> {
        let ns = self.namespace.clone();
        let row = records::Row::from(row);
        self.worker
            .write("store", move |c| records::store(c, &ns, &row))
            .await
    }

    async fn store_idempotent(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        let ns = self.namespace.clone();
        let row = records::Row::from(row);
        let key = key.to_owned();
        self.worker
            .write("store_idempotent", move |c| {
                records::store_idempotent(c, &ns, &row, &key)
            })
            .await
    }

    async fn query(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        let ns = self.namespace.clone();
        let pattern = pattern.clone();
        self.worker
            .read("query", move |c| records::query(c, &ns, &pattern, params))
            .await
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        let ns = self.namespace.clone();
        self.worker
            .write("cleanup", move |c| records::cleanup(c, &ns, older_than))
            .await
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let json = serde_json::to_string(policy).map_err(|e| {
            Error::internal("set_policy: policy cannot be serialized").with_source(e)
        })?;
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let policy = policy.clone();
        let options = self.options.clone();
        self.worker
            .write("set_policy", move |c| {
                // The window change is judged at apply time, inside the serialized step.
                let now = options.now("set_policy")?;
                budget::set_policy(c, &ns, &budget, &policy, &json, now)
            })
            .await
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        self.worker
            .read("policy", move |c| budget::policy(c, "policy", &ns, &budget))
            .await
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let options = self.options.clone();
        self.worker
            .write("delete_policy", move |c| {
                let now = options.now("delete_policy")?;
                budget::delete_policy(c, &ns, &budget, now)
            })
            .await
    }

    /// A keyed report whose dedup record is live is answered (replay or `Conflict`) by a read on
    /// the calling task when a read connection is free ([`Worker::read_now`]), without entering
    /// the writer's queue; everything else, and any failure of that read, goes to the writer,
    /// which checks the record again inside its transaction (a first write racing this read stays
    /// exact). A live record never changes until it expires, so the read's answer is the one the
    /// writer would give at the same instant.
    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
        if report.dedup_key.is_some() {
            let recorded = self.worker.read_now(|c| {
                let now = self.options.now(op)?;
                budget::recorded_answer(c, &self.namespace, budget, report, now)
            });
            if let Some(Ok(Some(answer))) = recorded {
                return answer;
            }
        }
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let report = report.clone();
        let options = self.options.clone();
        self.worker
            .write(op, move |c| {
                // Read the clock inside the serialized step so dedup expiry is judged at apply time.
                let now = options.now(op)?;
                budget::report_usage(c, &ns, &budget, &report, now, options.dedup_ttl_ms)
            })
            .await
    }

    /// The whole batch is one write (one job in the writer's queue, so one transaction and one
    /// commit, possibly shared with other writes), each item in its own savepoint, at one clock
    /// reading. A failure of the transaction (its commit included) is the outer `Unavailable`.
    async fn report_usage_batch(
        &self,
        items: &[BatchItem<'_>],
    ) -> Result<Vec<Result<UsageReceipt>>> {
        let op = "report_usage_batch";
        let ns = self.namespace.clone();
        let options = self.options.clone();
        let items: Vec<(String, UsageReport)> = items
            .iter()
            .map(|item| (item.budget.to_owned(), item.report.clone()))
            .collect();
        self.worker
            .write(op, move |c| match options.now(op) {
                Ok(now) => budget::report_usage_batch(c, &ns, &items, now, options.dedup_ttl_ms),
                // As each call would: every item answers the clock's error, nothing is written.
                Err(e) => Ok(items.iter().map(|_| Err(e.clone())).collect()),
            })
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Unavailable => e,
                _ => Error::unavailable(format!(
                    "{op}: the batch's transaction failed; whether its items were applied is \
                     unknown (retrying with the same keys is safe)"
                ))
                .with_source(e),
            })
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let options = self.options.clone();
        self.worker
            .read("usage", move |c| {
                let now = options.now("usage")?;
                budget::usage(c, &ns, &budget, now)
            })
            .await
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        self.worker
            .write("reset_usage", move |c| budget::reset_usage(c, &ns, &budget))
            .await
    }

    fn now(&self, op: &str) -> Result<u64> {
        self.options.now(op)
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// One read transaction on a read connection (the writer's for `sqlite::memory:`): index
    /// range scans in canonical order, as the `dump` module describes.
    async fn dump_page(&self, section: Section, after: Option<&str>, now: u64) -> Result<DumpPage> {
        let ns = self.namespace.clone();
        let after = after.map(str::to_owned);
        self.worker
            .read("export", move |c| {
                dump::page(c, &ns, section, after.as_deref(), now)
            })
            .await
    }

    /// The batch is one write (one savepoint of the writer's group-committed transaction): kept
    /// or undone whole.
    async fn load(&self, items: &[DumpItem]) -> Result<()> {
        let ns = self.namespace.clone();
        let items = items.to_vec();
        self.worker
            .write("import", move |c| dump::load(c, &ns, &items))
            .await
    }

    async fn is_empty(&self) -> Result<bool> {
        let ns = self.namespace.clone();
        self.worker
            .read("import", move |c| dump::is_empty(c, &ns))
            .await
    }

    async fn reserve(&self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        let budget = budget.to_owned();
        let request = request.clone();
        self.in_transaction("reserve", move |tx| tx.reserve(&budget, &request))
            .await
    }

    async fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        let budget = budget.to_owned();
        let id = id.to_owned();
        let actual = actual.clone();
        self.in_transaction("commit", move |tx| tx.commit(&budget, &id, &actual))
            .await
    }

    async fn release(&self, budget: &str, id: &str) -> Result<bool> {
        let budget = budget.to_owned();
        let id = id.to_owned();
        self.in_transaction("release", move |tx| tx.release(&budget, &id))
            .await
    }

    async fn reservation(&self, budget: &str, id: &str) -> Result<Option<Reservation>> {
        let op = "reservation";
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let id = id.to_owned();
        let options = self.options.clone();
        self.worker
            .read(op, move |c| {
                let now = options.now(op)?;
                reservation::reservation(c, &ns, &budget, &id, now)
            })
            .await
    }

    async fn reservations(&self, budget: &str) -> Result<Vec<Reservation>> {
        let op = "reservations";
        let ns = self.namespace.clone();
        let budget = budget.to_owned();
        let options = self.options.clone();
        self.worker
            .read(op, move |c| {
                let now = options.now(op)?;
                reservation::reservations(c, &ns, &budget, now)
            })
            .await
    }

    async fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> Result<MultiReceipt> {
        let op = "report_usage_all";
        let budgets = owned(budgets);
        let report = report.clone();
        self.in_transaction(op, move |tx| {
            let budgets = borrowed(&budgets);
            run_now(op, report_usage_all(tx, &budgets, &report))
        })
        .await
    }

    async fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        let op = "reserve_all";
        let budgets = owned(budgets);
        let request = request.clone();
        self.in_transaction(op, move |tx| {
            let budgets = borrowed(&budgets);
            run_now(op, reserve_all(tx, &budgets, &request))
        })
        .await
    }

    async fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<MultiReceipt> {
        let op = "commit_all";
        let budgets = owned(budgets);
        let id = id.to_owned();
        let actual = actual.clone();
        self.in_transaction(op, move |tx| {
            let budgets = borrowed(&budgets);
            run_now(op, commit_all(tx, &budgets, &id, &actual))
        })
        .await
    }

    async fn release_all(&self, budgets: &[&str], id: &str) -> Result<()> {
        let op = "release_all";
        let budgets = owned(budgets);
        let id = id.to_owned();
        self.in_transaction(op, move |tx| {
            let budgets = borrowed(&budgets);
            run_now(op, release_all(tx, &budgets, &id))
        })
        .await
    }
}

/// Budget names to move onto the writer thread.
fn owned(budgets: &[&str]) -> Vec<String> {
    budgets.iter().map(|b| (*b).to_owned()).collect()
}

/// The names again as the core's sequence takes them.
fn borrowed(budgets: &[String]) -> Vec<&str> {
    budgets.iter().map(String::as_str).collect()
}
