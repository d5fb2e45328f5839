//! `PostgresBackend`: validation in Rust, then one statement (or one function call) per operation.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use sqlx::postgres::PgConnectOptions;
use sqlx::Row;
use stowage_core::raw::{dedup_fingerprint, validate, Pattern, ResolvedOptions};
use stowage_core::{
    Backend, BoxFuture, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities, ConnectOptions,
    Error, PersistenceBackend, QueryParams, Result, StoreResult, StoredValue, UsageReceipt,
    UsageReport, Value, MAX_AMOUNT,
};

use crate::budget::{decode_policy, decode_report, decode_usage, BudgetSql};
use crate::config::PostgresConfig;
use crate::error::{self, classify, connection_survives, Failure};
use crate::pool::{ConnPool, Lease};
use crate::records::{collect_matching, RecordSql};
use crate::schema::{self, Schema};
use stowage_core::raw::validate::to_i64;

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
    /// Whether the server and this backend's sessions make acknowledged writes survive a crash.
    durable: bool,
    /// The namespace's schema and statements; replaced when the namespace is initialized again
    /// (after a purge it lives in a new schema).
    sql: RwLock<Arc<Sql>>,
}

/// Where the namespace lives, and the statements that reach it.
#[derive(Debug)]
struct Sql {
    schema: Schema,
    records: RecordSql,
    budget: BudgetSql,
}

impl Sql {
    fn new(schema: Schema) -> Arc<Sql> {
        Arc::new(Sql {
            records: RecordSql::new(&schema.name),
            budget: BudgetSql::new(&schema.name),
            schema,
        })
    }
}

/// Whether a call may be sent again after its connection died with the outcome unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Sending it twice is the same as once: reads, keyed reports (the second replays),
    /// `store_idempotent` (the second finds the row), `purge`.
    Safe,
    /// Sending it twice could apply it twice or change its answer: unkeyed reports, `store`,
    /// `set_policy`, `delete_policy`, `reset_usage`, `cleanup`.
    Once,
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
            .options([("default_transaction_isolation", r"read\ committed")])
            // The server gives a statement up before the client does (see
            // `PostgresConfig::statement_timeout`), lock waits included.
            .options([
                ("statement_timeout", config.statement_timeout().as_millis()),
                ("lock_timeout", config.statement_timeout().as_millis()),
            ]);
        let pool = ConnPool::new(connect, config.max_connections, config.acquire_timeout);
        let (schema, durable) =
            tokio::time::timeout(config.operation_timeout, open_on(&pool, &options.namespace))
                .await
                .map_err(|_| {
                    Error::unavailable("initialize: no answer from PostgreSQL in time")
                })??;
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                sql: RwLock::new(Sql::new(schema)),
                durable,
                pool,
                config,
                options,
            }),
        })
    }

    /// The schema that holds this namespace (`stowage_ns_<id>`; a new one after a purge).
    pub fn schema_name(&self) -> String {
        self.inner.sql().schema.name.clone()
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
                stowage_core::raw::show(name)
            )));
        }
        let sql = format!("SHOW {name}");
        self.inner
            .run(op, Repeat::Safe, self.inner.deadline(), |mut lease, _| {
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
    pub fn report_usage_sql(&self) -> String {
        self.inner.sql().budget.report.clone()
    }
}

/// Creates or migrates the namespace's schema on one pooled connection, and reads whether the
/// sessions are durable.
///
/// Durable means an acknowledged write survives a crash or restart of the server: `fsync` on
/// (WAL reaches the disk), `full_page_writes` on (no torn pages after an OS crash) and
/// `synchronous_commit` anything but `off` (`local`, `on`, `remote_write` and `remote_apply` all
/// wait for the local WAL flush before a commit is acknowledged; they differ only in what they
/// also wait for on synchronous standbys).
async fn open_on(pool: &ConnPool, namespace: &str) -> Result<(Schema, bool)> {
    let op = "initialize";
    let mut lease = pool.acquire(op, false).await?;
    let schema = schema::initialize(lease.conn(), namespace).await?;
    let row = sqlx::query(
        "SELECT current_setting('fsync'), current_setting('full_page_writes'), \
         current_setting('synchronous_commit')",
    )
    .fetch_one(lease.conn())
    .await
    .map_err(|e| error::map(op, e))?;
    let setting = |i: usize| -> Result<String> { row.try_get(i).map_err(|e| error::map(op, e)) };
    let durable = setting(0)? == "on" && setting(1)? == "on" && setting(2)? != "off";
    lease.release();
    Ok((schema, durable))
}

impl Inner {
    /// The namespace's current statements.
    fn sql(&self) -> Arc<Sql> {
        self.sql.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The deadline of a call starting now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.operation_timeout
    }

    /// Initializes the namespace again on `lease` and switches to the schema it lives in now.
    async fn reinitialize(&self, lease: &mut Lease<'_>) -> Result<()> {
        let schema = schema::initialize(lease.conn(), &self.options.namespace).await?;
        let mut sql = self.sql.write().unwrap_or_else(|e| e.into_inner());
        if sql.schema.name != schema.name {
            *sql = Sql::new(schema);
        }
        Ok(())
    }

    /// Runs `attempt` on a pooled connection until `deadline`, with bounded retries.
    ///
    /// `attempt` gets the lease and the namespace's statements, and gives the lease back with its
    /// result. A connection is reused only when its last use ended with an answer from a live
    /// session; when one turns out dead, the idle ones are dropped too. Retries:
    /// - transient failures (serialization, deadlock, unique race: rolled back) up to
    ///   `TRANSIENT_TRIES` tries;
    /// - a missing schema, table or function (the namespace was purged): initialize again, then
    ///   one more try (the failed statement applied nothing);
    /// - a connection taken from the idle list that turns out dead: one more try on a new
    ///   connection, for `Repeat::Safe` calls only. The failure does not show whether the
    ///   statement ran before the session died (a FATAL or an EOF reads the same either way),
    ///   so an unkeyed report, a `store` and the like are never sent twice: they answer
    ///   `Unavailable`, and the caller decides.
    ///
    /// No statement is sent with less than `PostgresConfig::start_margin` left, so the
    /// server's statement timeout fires before the deadline.
    async fn run<'p, T, F, Fut>(
        &'p self,
        op: &'static str,
        repeat: Repeat,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Lease<'p>, Arc<Sql>) -> Fut,
        Fut: Future<Output = (Lease<'p>, std::result::Result<T, sqlx::Error>)>,
    {
        let tries = async {
            let mut tried = 0;
            let mut fresh = false;
            let mut reinitialized = false;
            loop {
                tried += 1;
                let lease = self.pool.acquire(op, fresh).await?;
                if deadline.saturating_duration_since(Instant::now()) < self.config.start_margin() {
                    lease.release();
                    return Err(Error::unavailable(format!(
                        "{op}: less than {:?} of the operation timeout ({:?}) left to send a statement",
                        self.config.start_margin(),
                        self.config.operation_timeout
                    )));
                }
                let reused = lease.reused();
                let (mut lease, result) = attempt(lease, self.sql()).await;
                let e = match result {
                    Ok(value) => {
                        lease.release();
                        return Ok(value);
                    }
                    Err(e) => e,
                };
                if !connection_survives(&e) {
                    lease.discard();
                    drop(lease);
                    self.pool.drop_idle();
                    if reused && !fresh && repeat == Repeat::Safe {
                        fresh = true;
                        continue;
                    }
                    return Err(error::map(op, e));
                }
                match classify(op, e) {
                    Failure::Undefined(_) if !reinitialized => {
                        reinitialized = true;
                        self.reinitialize(&mut lease).await?;
                        lease.release();
                    }
                    Failure::Transient(_) if tried < TRANSIENT_TRIES => {
                        lease.release();
                        tokio::task::yield_now().await;
                    }
                    Failure::Transient(e) | Failure::Undefined(e) => {
                        lease.release();
                        return Err(error::map(op, e));
                    }
                    Failure::Final(e) => {
                        lease.release();
                        return Err(e);
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), tries)
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
        self.run(
            op,
            Repeat::Once,
            self.deadline(),
            |mut lease, sql| async move {
                let result = sqlx::query(&sql.records.store)
                    .bind(name)
                    .bind(at)
                    .bind(text)
                    .execute(lease.conn())
                    .await;
                (lease, result)
            },
        )
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
        // One deadline for every try: the whole call stays within the operation timeout.
        let deadline = self.deadline();
        // No row back means the conflicting row was cleaned up between insert and read: try again, a few times.
        for _ in 0..TRANSIENT_TRIES {
            let row = self
                .run(op, Repeat::Safe, deadline, |mut lease, sql| async move {
                    let result = sqlx::query(&sql.records.store_idempotent)
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
            return stowage_core::raw::idempotent_repeat(
                op,
                name,
                key,
                (&stored, stored_at),
                (&text, at),
            );
        }
        Err(Error::unavailable(format!(
            "{op}: record {} kept changing under a concurrent cleanup; retry",
            stowage_core::raw::show(name)
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
            stowage_core::raw::pattern::prefix_upper_bound(prefix)
        };
        let (upper, pattern) = (upper.as_deref(), &pattern);
        let limit = params.limit_per_record;
        self.run(
            op,
            Repeat::Safe,
            self.deadline(),
            |mut lease, sql| async move {
                let query = match (upper, pattern.is_exact()) {
                    (_, true) => sqlx::query(&sql.records.query_exact),
                    (Some(_), false) => sqlx::query(&sql.records.query_range),
                    (None, false) => sqlx::query(&sql.records.query_from),
                };
                let mut query = query.bind(prefix).bind(start).bind(end);
                if let (Some(upper), false) = (upper, pattern.is_exact()) {
                    query = query.bind(upper);
                }
                let result = collect_matching(query.fetch(lease.conn()), pattern, limit).await;
                // Only a fully read answer leaves the connection clean for reuse.
                if matches!(result, Ok(Err(_))) {
                    lease.discard();
                }
                (lease, result)
            },
        )
        .await?
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        let op = "cleanup";
        validate::amount(op, "older_than", older_than)?;
        let before = to_i64(op, "older_than", older_than)?;
        let done = self
            .run(
                op,
                Repeat::Once,
                self.deadline(),
                |mut lease, sql| async move {
                    let result = sqlx::query(&sql.records.cleanup)
                        .bind(before)
                        .execute(lease.conn())
                        .await;
                    (lease, result)
                },
            )
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
        self.run(
            op,
            Repeat::Once,
            self.deadline(),
            |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.set_policy)
                    .bind(budget)
                    .bind(dims)
                    .bind(softs)
                    .bind(hards)
                    .execute(lease.conn())
                    .await;
                (lease, result)
            },
        )
        .await?;
        Ok(())
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        let op = "policy";
        validate::name(op, "budget", budget)?;
        let rows = self
            .run(
                op,
                Repeat::Safe,
                self.deadline(),
                |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.policy)
                        .bind(budget)
                        .fetch_all(lease.conn())
                        .await;
                    (lease, result)
                },
            )
            .await?;
        decode_policy(&rows)
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let op = "delete_policy";
        validate::name(op, "budget", budget)?;
        let row = self
            .run(
                op,
                Repeat::Once,
                self.deadline(),
                |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.delete_policy)
                        .bind(budget)
                        .fetch_one(lease.conn())
                        .await;
                    (lease, result)
                },
            )
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
        // A keyed report sent twice replays the first; an unkeyed one would apply twice.
        let repeat = if key.is_some() {
            Repeat::Safe
        } else {
            Repeat::Once
        };
        let row = self
            .run(op, repeat, self.deadline(), |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.report)
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
            .run(
                op,
                Repeat::Safe,
                self.deadline(),
                |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.usage)
                        .bind(budget)
                        .fetch_all(lease.conn())
                        .await;
                    (lease, result)
                },
            )
            .await?;
        Ok(BudgetUsage {
            counters: decode_usage(&rows)?,
        })
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        let op = "reset_usage";
        validate::name(op, "budget", budget)?;
        self.run(
            op,
            Repeat::Once,
            self.deadline(),
            |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.reset)
                    .bind(budget)
                    .execute(lease.conn())
                    .await;
                (lease, result)
            },
        )
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
            let inner = &self.inner;
            let init = async {
                let mut lease = inner.pool.acquire("initialize", false).await?;
                inner.reinitialize(&mut lease).await?;
                lease.release();
                Ok(())
            };
            tokio::time::timeout_at(inner.deadline().into(), init)
                .await
                .map_err(|_| Error::unavailable("initialize: no answer from PostgreSQL in time"))?
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
            durable: self.inner.durable,
            shared: true,
            distributed: false,
            max_value_bytes: 1_048_576,
        }
    }

    /// Drops the namespace's schema and registry row. Every handle on the namespace, this one
    /// included, keeps working: its next call meets the missing schema, initializes the namespace
    /// again (empty, in a new schema) and retries once.
    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        let inner = &*self.inner;
        let namespace = inner.options.namespace.as_str();
        Box::pin(inner.run(
            "purge",
            Repeat::Safe,
            inner.deadline(),
            move |mut lease, _| async move {
                let result = schema::purge(lease.conn(), namespace).await;
                (lease, result)
            },
        ))
    }
}
