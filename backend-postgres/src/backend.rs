//! `PostgresBackend`: validation in Rust, then one statement (or one function call) per operation.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::Row;
use stowage_core::{
    dedup_fingerprint, validate, Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage,
    Capabilities, ConnectOptions, Error, Pattern, PersistenceBackend, QueryParams, ResolvedOptions,
    Result, StoreResult, StoredValue, UsageReceipt, UsageReport, Value, MAX_AMOUNT,
};

use crate::budget::{decode_policy, decode_report, decode_usage, BudgetSql};
use crate::config::PostgresConfig;
use crate::error::{self, classify, Failure};
use crate::pool::{ConnPool, Lease};
use crate::records::{collect_matching, RecordSql};
use crate::schema::{self, Schema};
use stowage_core::validate::to_i64;

/// How many times a transient failure (serialization, deadlock, unique race) is retried.
const TRANSIENT_TRIES: usize = 8;

/// The PostgreSQL backend: a sqlx pool and the SQL of one namespace's schema.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: ConnPool,
    config: PostgresConfig,
    options: ResolvedOptions,
    schema: Schema,
    records: RecordSql,
    budget: BudgetSql,
}

impl PostgresBackend {
    /// Connects to `url` and initializes the namespace's schema (create and migrate; harmless to repeat).
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Self> {
        let config = PostgresConfig::from_url(url)?;
        let options = options.resolve()?;
        let connect = PgConnectOptions::from_str(&config.url)
            .map_err(|e| {
                Error::invalid_input("connect: the PostgreSQL URL cannot be parsed").with_source(e)
            })?
            // The plpgsql functions read state after taking their lock: that needs a fresh
            // snapshot per statement, whatever the server's default isolation is.
            .options([("default_transaction_isolation", r"read\ committed")]);
        let pool = ConnPool::new(connect, config.max_connections, config.acquire_timeout);
        let schema = tokio::time::timeout(
            config.operation_timeout,
            initialize_on(&pool, &options.namespace),
        )
        .await
        .map_err(|_| Error::unavailable("initialize: no answer from PostgreSQL in time"))??;
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                records: RecordSql::new(&schema.name),
                budget: BudgetSql::new(&schema.name),
                pool,
                config,
                options,
                schema,
            }),
        })
    }

    /// The schema that holds this namespace (`stowage_ns_<id>`).
    pub fn schema_name(&self) -> &str {
        &self.inner.schema.name
    }

    /// The value of a server setting as stowage's connections see it (`SHOW <name>`), for operators
    /// and tests; `name` must be a plain setting name (letters, digits, `_`, `.`).
    pub async fn session_setting(&self, name: &str) -> Result<String> {
        let op = "session_setting";
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(Error::invalid_input(format!(
                "{op}: {} is not a setting name",
                stowage_core::show(name)
            )));
        }
        let sql = format!("SHOW {name}");
        self.inner
            .run(op, |mut lease| {
                let sql = &sql;
                async move {
                    let result = sqlx::query_scalar::<_, String>(sql)
                        .fetch_one(lease.conn())
                        .await;
                    (lease, result)
                }
            })
            .await
    }

    /// The SQL statement `report_usage` sends (one call of a plpgsql function).
    pub fn report_usage_sql(&self) -> &str {
        &self.inner.budget.report
    }
}

/// Creates or migrates the namespace's schema on one pooled connection.
async fn initialize_on(pool: &ConnPool, namespace: &str) -> Result<Schema> {
    let mut lease = pool.acquire("initialize").await?;
    let schema = schema::initialize(lease.conn(), namespace).await?;
    lease.release();
    Ok(schema)
}

impl Inner {
    /// Runs `attempt` on a pooled connection with bounded retries of transient failures, all within the operation timeout.
    ///
    /// `attempt` gets the lease and gives it back with its result; a connection whose last use did
    /// not end with an answer from the server is dropped instead of reused.
    async fn run<'p, T, F, Fut>(&'p self, op: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Lease<'p>) -> Fut,
        Fut: Future<Output = (Lease<'p>, std::result::Result<T, sqlx::Error>)>,
    {
        let tries = async {
            let mut tried = 0;
            loop {
                tried += 1;
                let lease = self.pool.acquire(op).await?;
                let (lease, result) = attempt(lease).await;
                match result {
                    Ok(value) => {
                        lease.release();
                        return Ok(value);
                    }
                    Err(e) => {
                        if matches!(e, sqlx::Error::Database(_)) {
                            lease.release();
                        }
                        match classify(op, e) {
                            Failure::Transient(e) if tried < TRANSIENT_TRIES => {
                                let _ = e;
                                tokio::task::yield_now().await;
                            }
                            Failure::Transient(e) => return Err(error::map(op, e)),
                            Failure::Final(e) => return Err(e),
                        }
                    }
                }
            }
        };
        tokio::time::timeout(self.config.operation_timeout, tries)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{op}: no answer from PostgreSQL within {:?}",
                    self.config.operation_timeout
                ))
            })?
    }

    async fn store(&self, name: &str, value: &Value, timestamp: u64) -> Result<()> {
        let op = "store";
        let text = validate::store(op, name, value, timestamp)?;
        let at = to_i64(op, "timestamp", timestamp)?;
        let text = &text;
        self.run(op, |mut lease| async move {
            let result = sqlx::query(&self.records.store)
                .bind(name)
                .bind(at)
                .bind(text)
                .execute(lease.conn())
                .await;
            (lease, result)
        })
        .await?;
        Ok(())
    }

    async fn store_idempotent(
        &self,
        name: &str,
        value: &Value,
        timestamp: u64,
        key: &str,
    ) -> Result<StoreResult> {
        let op = "store_idempotent";
        let text = validate::store(op, name, value, timestamp)?;
        validate::name(op, "idempotency key", key)?;
        let at = to_i64(op, "timestamp", timestamp)?;
        let text_ref = &text;
        // No row back means the conflicting row was cleaned up between insert and read: try again, a few times.
        for _ in 0..TRANSIENT_TRIES {
            let row = self
                .run(op, |mut lease| async move {
                    let result = sqlx::query(&self.records.store_idempotent)
                        .bind(name)
                        .bind(at)
                        .bind(text_ref)
                        .bind(key)
                        .fetch_optional(lease.conn())
                        .await;
                    (lease, result)
                })
                .await?;
            let Some(row) = row else { continue };
            let status: String = row.try_get(0).map_err(|e| error::map(op, e))?;
            if status == "appended" {
                return Ok(StoreResult::Appended);
            }
            let stored: String = row.try_get(1).map_err(|e| error::map(op, e))?;
            let stored_at: i64 = row.try_get(2).map_err(|e| error::map(op, e))?;
            return stowage_core::idempotent_repeat(
                op,
                name,
                key,
                (&stored, stored_at),
                (&text, at),
            );
        }
        Err(Error::unavailable(format!(
            "{op}: record {} kept changing under a concurrent cleanup; retry",
            stowage_core::show(name)
        )))
    }

    async fn query(&self, pattern: &str, params: QueryParams) -> Result<Vec<StoredValue>> {
        let op = "query";
        let pattern = Pattern::parse(op, pattern)?;
        validate::query_params(op, &params)?;
        if params.limit_per_record == Some(0) {
            return Ok(Vec::new());
        }
        let start = to_i64(op, "start_time", params.start_time.unwrap_or(0))?;
        let end = to_i64(op, "end_time", params.end_time.unwrap_or(MAX_AMOUNT))?;
        let prefix = pattern.literal_prefix();
        let upper = if pattern.is_exact() {
            None
        } else {
            stowage_core::pattern::prefix_upper_bound(prefix)
        };
        let fetch = async {
            let mut lease = self.pool.acquire(op).await?;
            let query = match (&upper, pattern.is_exact()) {
                (_, true) => sqlx::query(&self.records.query_exact),
                (Some(_), false) => sqlx::query(&self.records.query_range),
                (None, false) => sqlx::query(&self.records.query_from),
            };
            let mut query = query.bind(prefix).bind(start).bind(end);
            if let (Some(upper), false) = (&upper, pattern.is_exact()) {
                query = query.bind(upper.as_str());
            }
            let rows =
                collect_matching(query.fetch(lease.conn()), &pattern, params.limit_per_record)
                    .await?;
            // Only a fully read answer leaves the connection clean for reuse.
            lease.release();
            Ok(rows)
        };
        tokio::time::timeout(self.config.operation_timeout, fetch)
            .await
            .map_err(|_| Error::unavailable(format!("{op}: no answer from PostgreSQL in time")))?
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        let op = "cleanup";
        validate::amount(op, "older_than", older_than)?;
        let before = to_i64(op, "older_than", older_than)?;
        let done = self
            .run(op, |mut lease| async move {
                let result = sqlx::query(&self.records.cleanup)
                    .bind(before)
                    .execute(lease.conn())
                    .await;
                (lease, result)
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let op = "set_policy";
        validate::policy(op, budget, policy)?;
        let dims: Vec<&str> = policy.limits.keys().map(String::as_str).collect();
        let softs = policy
            .limits
            .values()
            .map(|l| l.soft.map(|v| to_i64(op, "soft limit", v)).transpose())
            .collect::<Result<Vec<Option<i64>>>>()?;
        let hards = policy
            .limits
            .values()
            .map(|l| l.hard.map(|v| to_i64(op, "hard limit", v)).transpose())
            .collect::<Result<Vec<Option<i64>>>>()?;
        let (dims, softs, hards) = (&dims, &softs, &hards);
        self.run(op, |mut lease| async move {
            let result = sqlx::query(&self.budget.set_policy)
                .bind(budget)
                .bind(dims)
                .bind(softs)
                .bind(hards)
                .execute(lease.conn())
                .await;
            (lease, result)
        })
        .await?;
        Ok(())
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        let op = "policy";
        validate::name(op, "budget", budget)?;
        let rows = self
            .run(op, |mut lease| async move {
                let result = sqlx::query(&self.budget.policy)
                    .bind(budget)
                    .fetch_all(lease.conn())
                    .await;
                (lease, result)
            })
            .await?;
        decode_policy(&rows)
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let op = "delete_policy";
        validate::name(op, "budget", budget)?;
        let row = self
            .run(op, |mut lease| async move {
                let result = sqlx::query(&self.budget.delete_policy)
                    .bind(budget)
                    .fetch_one(lease.conn())
                    .await;
                (lease, result)
            })
            .await?;
        row.try_get(0).map_err(|e| error::map(op, e))
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
        validate::report(op, budget, report)?;
        let now = self.options.now(op)?;
        let dims: Vec<&str> = report.dimensions.keys().map(String::as_str).collect();
        let deltas = report
            .dimensions
            .values()
            .map(|d| to_i64(op, "delta", *d))
            .collect::<Result<Vec<i64>>>()?;
        let key = report.dedup_key.as_deref();
        let fingerprint = key.map(|_| dedup_fingerprint(report));
        let now = to_i64(op, "clock", now)?;
        let ttl = to_i64(op, "dedup TTL", self.options.dedup_ttl_ms)?;
        let (dims, deltas, fingerprint) = (&dims, &deltas, fingerprint.as_deref());
        let row = self
            .run(op, |mut lease| async move {
                let result = sqlx::query(&self.budget.report)
                    .bind(budget)
                    .bind(dims)
                    .bind(deltas)
                    .bind(key)
                    .bind(fingerprint)
                    .bind(now)
                    .bind(ttl)
                    .fetch_one(lease.conn())
                    .await;
                (lease, result)
            })
            .await?;
        decode_report(budget, key, &row)
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let op = "usage";
        validate::name(op, "budget", budget)?;
        let rows = self
            .run(op, |mut lease| async move {
                let result = sqlx::query(&self.budget.usage)
                    .bind(budget)
                    .fetch_all(lease.conn())
                    .await;
                (lease, result)
            })
            .await?;
        Ok(BudgetUsage {
            counters: decode_usage(&rows)?,
        })
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        let op = "reset_usage";
        validate::name(op, "budget", budget)?;
        self.run(op, |mut lease| async move {
            let result = sqlx::query(&self.budget.reset)
                .bind(budget)
                .execute(lease.conn())
                .await;
            (lease, result)
        })
        .await?;
        Ok(())
    }
}

impl PersistenceBackend for PostgresBackend {
    fn store<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.store(record_name, value, timestamp))
    }

    fn store_idempotent<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>> {
        Box::pin(
            self.inner
                .store_idempotent(record_name, value, timestamp, idempotency_key),
        )
    }

    fn query<'a>(
        &'a self,
        record_pattern: &'a str,
        params: QueryParams,
    ) -> BoxFuture<'a, Result<Vec<StoredValue>>> {
        Box::pin(self.inner.query(record_pattern, params))
    }

    fn initialize(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            initialize_on(&self.inner.pool, &self.inner.options.namespace).await?;
            Ok(())
        })
    }

    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.inner.cleanup(older_than))
    }
}

impl BudgetBackend for PostgresBackend {
    fn set_policy<'a>(
        &'a self,
        budget: &'a str,
        policy: &'a BudgetPolicy,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.set_policy(budget, policy))
    }

    fn policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>> {
        Box::pin(self.inner.policy(budget))
    }

    fn delete_policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.inner.delete_policy(budget))
    }

    fn report_usage<'a>(
        &'a self,
        budget: &'a str,
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>> {
        Box::pin(self.inner.report_usage(budget, report))
    }

    fn usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<BudgetUsage>> {
        Box::pin(self.inner.usage(budget))
    }

    fn reset_usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.reset_usage(budget))
    }
}

impl Backend for PostgresBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            shared: true,
            distributed: false,
            max_value_bytes: 1_048_576,
        }
    }

    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        // TEMPORARY (issue 9 item 8, in progress): replaced by the real purge before this lands.
        Box::pin(async { Err(Error::unsupported("purge: not built yet on PostgreSQL")) })
    }
}
