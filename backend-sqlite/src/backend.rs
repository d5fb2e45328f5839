//! `SqliteBackend`: validates in the caller's task, runs statements on the worker thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use stowage_core::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, ConnectOptions,
    Error, PersistenceBackend, QueryParams, Result, StoreResult, StoredValue, UsageReceipt,
    UsageReport, Value,
};

use stowage_core::raw::{validate, Pattern, ResolvedOptions};

use crate::config::{SqliteConfig, SqliteLocation};
use crate::worker::Worker;
use crate::{budget, records, schema};

/// Write and commit counts of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStats {
    /// Writes executed (each in its own savepoint).
    pub writes: u64,
    /// Transactions committed (or attempted) for them.
    pub commits: u64,
}

/// The SQLite backend. Cheap to share behind an `Arc`; dropping the last handle closes the database.
#[derive(Debug)]
pub struct SqliteBackend {
    worker: Worker,
    options: ResolvedOptions,
    namespace: Arc<str>,
    config: SqliteConfig,
}

impl SqliteBackend {
    /// Opens the database named by a `sqlite://PATH` or `sqlite::memory:` URL; call `initialize()` before use.
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Self> {
        Self::open_config(SqliteConfig::from_url(url)?, options).await
    }

    /// Opens the database described by `config`; call `initialize()` before use.
    pub async fn open_config(config: SqliteConfig, options: ConnectOptions) -> Result<Self> {
        let options = options.resolve()?;
        let worker = Worker::start(&config).await?;
        Ok(SqliteBackend {
            worker,
            namespace: Arc::from(options.namespace.as_str()),
            options,
            config,
        })
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

impl PersistenceBackend for SqliteBackend {
    fn store<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let text = validate::store("store", record_name, value, timestamp)?;
            let ns = self.namespace.clone();
            let name = record_name.to_owned();
            self.worker
                .write("store", move |c| {
                    records::store(c, &ns, &name, &text, timestamp)
                })
                .await
        })
    }

    fn store_idempotent<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        Box::pin(async move {
            let op = "store_idempotent";
            let text = validate::store(op, record_name, value, timestamp)?;
            validate::name(op, "idempotency key", idempotency_key)?;
            let ns = self.namespace.clone();
            let name = record_name.to_owned();
            let key = idempotency_key.to_owned();
            self.worker
                .write(op, move |c| {
                    records::store_idempotent(c, &ns, &name, &text, timestamp, &key)
                })
                .await
        })
    }

    fn query<'a>(
        &'a self,
        record_pattern: &'a str,
        params: QueryParams,
    ) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        Box::pin(async move {
            let pattern = Pattern::parse("query", record_pattern)?;
            validate::query_params("query", &params)?;
            let ns = self.namespace.clone();
            self.worker
                .read("query", move |c| records::query(c, &ns, &pattern, params))
                .await
        })
    }

    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.worker.call("initialize", schema::migrate))
    }

    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            validate::amount("cleanup", "older_than", older_than)?;
            let ns = self.namespace.clone();
            self.worker
                .write("cleanup", move |c| records::cleanup(c, &ns, older_than))
                .await
        })
    }
}

impl BudgetBackend for SqliteBackend {
    fn set_policy<'a>(
        &'a self,
        budget: &'a str,
        policy: &'a BudgetPolicy,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate::policy("set_policy", budget, policy)?;
            let json = serde_json::to_string(policy).map_err(|e| {
                Error::internal("set_policy: policy cannot be serialized").with_source(e)
            })?;
            let ns = self.namespace.clone();
            let budget = budget.to_owned();
            self.worker
                .write("set_policy", move |c| {
                    budget::set_policy(c, &ns, &budget, &json)
                })
                .await
        })
    }

    fn policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        Box::pin(async move {
            validate::name("policy", "budget", budget)?;
            let ns = self.namespace.clone();
            let budget = budget.to_owned();
            self.worker
                .read("policy", move |c| budget::policy(c, "policy", &ns, &budget))
                .await
        })
    }

    fn delete_policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            validate::name("delete_policy", "budget", budget)?;
            let ns = self.namespace.clone();
            let budget = budget.to_owned();
            self.worker
                .write("delete_policy", move |c| {
                    budget::delete_policy(c, &ns, &budget)
                })
                .await
        })
    }

    fn report_usage<'a>(
        &'a self,
        budget: &'a str,
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(async move {
            let op = "report_usage";
            validate::report(op, budget, report)?;
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
        })
    }

    fn usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        Box::pin(async move {
            validate::name("usage", "budget", budget)?;
            let ns = self.namespace.clone();
            let budget = budget.to_owned();
            self.worker
                .read("usage", move |c| budget::usage(c, &ns, &budget))
                .await
        })
    }

    fn reset_usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate::name("reset_usage", "budget", budget)?;
            let ns = self.namespace.clone();
            let budget = budget.to_owned();
            self.worker
                .write("reset_usage", move |c| budget::reset_usage(c, &ns, &budget))
                .await
        })
    }
}

impl Backend for SqliteBackend {
    fn capabilities(&self) -> Capabilities {
        let file = matches!(self.config.location, SqliteLocation::File(_));
        Capabilities {
            durable: file,
            shared: file,
            distributed: false,
            max_value_bytes: 1_048_576,
        }
    }

    /// Deletes every row of this namespace from every table in one transaction (the tables are
    /// shared by all namespaces of the file, so nothing is dropped); other namespaces are untouched.
    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let ns = self.namespace.clone();
            self.worker
                .write("purge", move |c| schema::purge(c, &ns))
                .await
        })
    }
}
