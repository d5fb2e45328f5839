//! `PostgresBackend`: the handle and its `Access` impl — one statement (or one function call) per
//! operation, every one of them run by the same loop ([`Inner::run_with`]).

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use std::collections::BTreeMap;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::{Arguments, Row};
use stowage_core::dump::{DumpItem, DumpPage, Section};
use stowage_core::raw::validate::to_i64;
use stowage_core::raw::BatchItem;
use stowage_core::raw::{
    bounds_always_computable, cleanup_error, commit_answer, commit_fingerprint, dedup_fingerprint,
    idempotent_repeat, refusal_answer, release_answer, report_all_request, reserve_answer,
    reserve_fingerprint, show, window_kept_changing, within, Access, NewRow, Pattern, QueryPlan,
    ReservationReply, ResolvedOptions, WindowStep, MAX_WINDOW_CALLS,
};
use stowage_core::{
    BudgetPolicy, BudgetUsage, Capabilities, Checked, ConnectOptions, Error, ErrorKind,
    MultiReceipt, MultiReserveReceipt, QueryParams, Reservation, ReserveReceipt, ReserveRequest,
    Result, StoreResult, StoredValue, UsageReceipt, UsageReport, Window,
};

use crate::budget::{
    decode_policy, decode_report, decode_reservation, decode_steps, decode_usage, BudgetSql,
    Report, Step,
};
use crate::config::PostgresConfig;
use crate::dump::{self as dumps, After, DumpSql, Shape};
use crate::error::{self, classify, connection_survives, Fail, Failure};
use crate::pool::{ConnPool, Lease};
use crate::records::{self, RecordSql};
use crate::schema::{self, Schema};

/// How many tries a call gets against transient failures (serialization, deadlock, unique race,
/// a row that vanished under a concurrent cleanup).
const TRANSIENT_TRIES: usize = 8;

/// What the window-changing functions answered.
enum Changed {
    /// Applied.
    Done,
    /// Nothing applied: the old policy's window could be computed at now; call again, checked.
    OldChecked,
    /// Nothing applied: the new window's bounds are needed (computing them failed).
    NeedBounds,
}

/// Decodes `set_policy`/`delete_policy`'s status. For `check-old`, computes the old policy's
/// window at `now` (its error is the operation's, as in `WindowChange::at`).
fn window_change(op: &str, row: &PgRow, now: u64) -> Result<Changed> {
    let e = |err| error::map(op, err);
    let status: String = row.try_get(0).map_err(e)?;
    match status.as_str() {
        "done" => Ok(Changed::Done),
        "bounds" => Ok(Changed::NeedBounds),
        "check-old" => {
            let old: Option<String> = row.try_get(1).map_err(e)?;
            let old = old.ok_or_else(|| {
                Error::corruption(format!("{op}: an old window to check was not named"))
            })?;
            Window::from_spec(op, &old)?.bounds_at(now)?;
            Ok(Changed::OldChecked)
        }
        other => Err(Error::corruption(format!(
            "{op}: unexpected status {}",
            show(other)
        ))),
    }
}

/// The PostgreSQL backend: a connection pool and the SQL of one namespace's schema.
///
/// [`PostgresBackend::open`] only connects; `initialize` creates or migrates the namespace's
/// schema. A handle whose namespace is not initialized yet (or was purged) initializes it on
/// demand at its first operation.
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
    /// The namespace's schema and statements: none before this handle initialized the namespace;
    /// replaced when it is initialized again (after a purge it lives in a new schema).
    sql: RwLock<Option<Arc<Sql>>>,
}

/// Where the namespace lives, and the statements that reach it.
#[derive(Debug)]
struct Sql {
    schema: Schema,
    records: RecordSql,
    budget: BudgetSql,
    dump: DumpSql,
}

impl Sql {
    fn new(schema: Schema) -> Arc<Sql> {
        Arc::new(Sql {
            records: RecordSql::new(&schema.name),
            budget: BudgetSql::new(&schema.name),
            dump: DumpSql::new(&schema.name),
            schema,
        })
    }
}

/// Whether a call may be sent again after its connection died with the outcome unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Sending it twice is the same as once: reads, keyed reports (the second replays),
    /// `store_idempotent` (the second finds the row), `purge`, `initialize`.
    Safe,
    /// Sending it twice could apply it twice or change its answer: unkeyed reports, `store`,
    /// `set_policy`, `delete_policy`, `reset_usage`, `cleanup`.
    Once,
}

/// What an attempt needs: the namespace's statements (initializing the namespace first when this
/// handle has not), or nothing but a connection to the server.
type Target<S> = fn(Option<Arc<Sql>>) -> Option<S>;

/// Statements on the namespace's objects.
const NAMESPACE: Target<Arc<Sql>> = |sql| sql;

/// Statements on the server only (settings, the registry, the initialization itself).
const SERVER: Target<()> = |_| Some(());

impl PostgresBackend {
    /// Connects to `url` (builds the pool and reads whether the sessions are durable); creates
    /// nothing: `initialize` creates and migrates the namespace's schema.
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Checked<PostgresBackend>> {
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
        let mut inner = Inner {
            pool: ConnPool::new(connect, config.max_connections, config.acquire_timeout),
            config,
            options,
            durable: false,
            sql: RwLock::new(None),
        };
        inner.durable = inner
            .run_with(
                "connect",
                Repeat::Safe,
                SERVER,
                |mut lease, ()| async move {
                    let result = durable(&mut lease).await;
                    (lease, result)
                },
            )
            .await?;
        Ok(Checked::new(PostgresBackend {
            inner: Arc::new(inner),
        }))
    }

    /// The schema that holds this namespace (`stowage_ns_<id>`; a new one after a purge), empty
    /// before the namespace was initialized through this handle.
    pub fn schema_name(&self) -> String {
        self.inner
            .sql()
            .map(|sql| sql.schema.name.clone())
            .unwrap_or_default()
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
                show(name)
            )));
        }
        let sql = &format!("SHOW {name}");
        self.inner
            .run_with(op, Repeat::Safe, SERVER, |mut lease, ()| async move {
                let result = sqlx::query_scalar::<_, String>(sql)
                    .fetch_one(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await
    }

    /// The SQL statement `report_usage` sends (one call of a plpgsql function), empty before the
    /// namespace was initialized through this handle.
    pub fn report_usage_sql(&self) -> String {
        self.inner
            .sql()
            .map(|sql| sql.budget.report.clone())
            .unwrap_or_default()
    }

    /// The SQL statement a page of an export's `section` sends (one keyset range scan; its
    /// parameters: the previous page's last budget; or its last budget, id or key, and `now`; or
    /// its last record name, `stored_at` and row id), empty before the namespace was initialized
    /// through this handle.
    pub fn dump_page_sql(&self, section: Section) -> String {
        self.inner
            .sql()
            .map(|sql| {
                let dump = &sql.dump;
                match section {
                    Section::Policies => dump.policies.clone(),
                    Section::Counters => dump.counters.clone(),
                    Section::Reservations => dump.reservations.clone(),
                    Section::Dedup => dump.dedup.clone(),
                    Section::Records => dump.records.clone(),
                }
            })
            .unwrap_or_default()
    }

    /// The SQL statement `report_usage_batch` sends (one call of a plpgsql function; its eleven
    /// parameters: budgets, dimension counts, dimensions, deltas, dedup keys, fingerprints, now,
    /// dedup TTL, window specs, starts, ends), empty before the namespace was initialized through
    /// this handle.
    pub fn report_usage_batch_sql(&self) -> String {
        self.inner
            .sql()
            .map(|sql| sql.budget.report_batch.clone())
            .unwrap_or_default()
    }
}

/// Whether the sessions are durable: an acknowledged write survives a crash or restart of the
/// server.
///
/// That takes `fsync` on (WAL reaches the disk), `full_page_writes` on (no torn pages after an OS
/// crash) and `synchronous_commit` anything but `off` (`local`, `on`, `remote_write` and
/// `remote_apply` all wait for the local WAL flush before a commit is acknowledged; they differ
/// only in what they also wait for on synchronous standbys).
async fn durable(lease: &mut Lease<'_>) -> std::result::Result<bool, Fail> {
    let row = sqlx::query(
        "SELECT current_setting('fsync'), current_setting('full_page_writes'), \
         current_setting('synchronous_commit')",
    )
    .fetch_one(lease.conn())
    .await?;
    let (fsync, full_pages, commit): (String, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(fsync == "on" && full_pages == "on" && commit != "off")
}

impl Inner {
    /// The namespace's current statements, if this handle initialized it.
    fn sql(&self) -> Option<Arc<Sql>> {
        self.sql.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Initializes the namespace on `lease` (create, migrate) and switches to the schema it
    /// lives in now.
    async fn initialize_on(&self, lease: &mut Lease<'_>) -> std::result::Result<(), Fail> {
        let schema = schema::initialize(lease.conn(), &self.options.namespace).await?;
        let mut sql = self.sql.write().unwrap_or_else(|e| e.into_inner());
        if sql.as_ref().map(|sql| sql.schema.name.as_str()) != Some(schema.name.as_str()) {
            *sql = Some(Sql::new(schema));
        }
        Ok(())
    }

    /// Runs an attempt on the namespace's statements (see [`Inner::run_with`]).
    async fn run<'p, T, F, Fut>(&'p self, op: &'static str, repeat: Repeat, attempt: F) -> Result<T>
    where
        F: FnMut(Lease<'p>, Arc<Sql>) -> Fut,
        Fut: Future<Output = (Lease<'p>, std::result::Result<T, Fail>)>,
    {
        self.run_with(op, repeat, NAMESPACE, attempt).await
    }

    /// The one way an operation runs: `attempt` on a pooled connection, within the operation
    /// timeout, with bounded retries.
    ///
    /// `attempt` gets the lease and what `target` picks (the namespace's statements, or nothing),
    /// and gives the lease back with its result. A connection is reused only when its last use
    /// ended with an answer from a live session; when one turns out dead, the idle ones are
    /// dropped too. Before the attempt, and again after a missing schema, table or function (the
    /// namespace was purged), the namespace is initialized on the lease, once. Retries:
    /// - transient failures (serialization, deadlock, unique race: rolled back; or
    ///   [`Fail::Again`]) up to `TRANSIENT_TRIES` tries;
    /// - a missing schema, table or function: initialize again, then one more try (the failed
    ///   statement applied nothing);
    /// - a connection taken from the idle list that turns out dead: one more try on a new
    ///   connection, for `Repeat::Safe` calls (and the initialization) only. The failure does not
    ///   show whether the statement ran before the session died (a FATAL or an EOF reads the same
    ///   either way), so an unkeyed report, a `store` and the like are never sent twice: they
    ///   answer `Unavailable`, and the caller decides.
    ///
    /// No statement is sent with less than `PostgresConfig::start_margin` left, so the server's
    /// statement timeout fires before the client gives up.
    async fn run_with<'p, S, T, F, Fut>(
        &'p self,
        op: &'static str,
        repeat: Repeat,
        target: Target<S>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Lease<'p>, S) -> Fut,
        Fut: Future<Output = (Lease<'p>, std::result::Result<T, Fail>)>,
    {
        let deadline = Instant::now() + self.config.operation_timeout;
        let tries = async {
            let mut tried = 0;
            let mut fresh = false;
            let mut reinitialize = false;
            let mut reinitialized = false;
            loop {
                tried += 1;
                let mut lease = self.pool.acquire(op, fresh).await?;
                if deadline.saturating_duration_since(Instant::now()) < self.config.start_margin() {
                    lease.release();
                    return Err(Error::unavailable(format!(
                        "{op}: less than {:?} of the operation timeout ({:?}) left to send a statement",
                        self.config.start_margin(),
                        self.config.operation_timeout
                    )));
                }
                let reused = lease.reused();
                let picked = target(self.sql()).filter(|_| !reinitialize);
                let initializing = picked.is_none();
                let (mut lease, result) = match picked {
                    Some(arg) => {
                        let (lease, result) = attempt(lease, arg).await;
                        (lease, result.map(Some))
                    }
                    None => {
                        let result = self.initialize_on(&mut lease).await;
                        (lease, result.map(|()| None))
                    }
                };
                let e = match result {
                    Ok(Some(value)) => {
                        lease.release();
                        return Ok(value);
                    }
                    Ok(None) => {
                        reinitialize = false;
                        lease.release();
                        continue;
                    }
                    Err(Fail::Sql(e)) => e,
                    Err(Fail::Again(e)) => {
                        lease.release();
                        if tried >= TRANSIENT_TRIES {
                            return Err(e);
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(Fail::Final(e)) => {
                        lease.release();
                        return Err(e);
                    }
                };
                if !connection_survives(&e) {
                    lease.discard();
                    drop(lease);
                    self.pool.drop_idle();
                    if reused && !fresh && (repeat == Repeat::Safe || initializing) {
                        fresh = true;
                        continue;
                    }
                    return Err(error::map(op, e));
                }
                lease.release();
                match classify(op, e) {
                    Failure::Undefined(_) if !reinitialized => {
                        reinitialized = true;
                        reinitialize = true;
                    }
                    Failure::Transient(_) if tried < TRANSIENT_TRIES => {
                        tokio::task::yield_now().await;
                    }
                    Failure::Transient(e) | Failure::Undefined(e) => {
                        return Err(error::map(op, e));
                    }
                    Failure::Final(e) => return Err(e),
                }
            }
        };
        within(op, self.config.operation_timeout, tries).await
    }
}

impl Access for PostgresBackend {
    fn now(&self, op: &str) -> Result<u64> {
        self.inner.options.now(op)
    }

    fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// One statement per page: a keyset range scan of at most `PAGE_ITEMS` rows on an index
    /// (policies, windows, counters, reservations and dedup by their primary keys, records by
    /// `records_in_order`), after the last row of the previous page. Forgotten reservations and
    /// expired dedup records are left out by the statement; passed windows by core.
    async fn dump_page(&self, section: Section, after: Option<&str>, now: u64) -> Result<DumpPage> {
        let op = "export";
        let now = to_i64(op, "clock", now)?;
        type Decode = fn(&str, &PgRow) -> Result<(DumpItem, After)>;
        let (shape, statement, decode): (Shape, fn(&DumpSql) -> &String, Decode) = match section {
            Section::Policies => (Shape::Budget, |s| &s.policies, dumps::decode_policy),
            Section::Counters => (Shape::Budget, |s| &s.counters, dumps::decode_counters),
            Section::Reservations => (Shape::Pair, |s| &s.reservations, dumps::decode_reservation),
            Section::Dedup => (Shape::Pair, |s| &s.dedup, dumps::decode_dedup),
            Section::Records => (Shape::Row, |s| &s.records, dumps::decode_record),
        };
        let start = &After::parse(op, shape, after)?;
        let rows = self
            .inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let query = sqlx::query(statement(&sql.dump));
                let query = match start {
                    After::Budget(budget) => query.bind(budget),
                    After::Pair(budget, id) => query.bind(budget).bind(id).bind(now),
                    After::Row(name, at, id) => query.bind(name).bind(at).bind(id),
                };
                let result = query.fetch_all(lease.conn()).await;
                (lease, result.map_err(Fail::from))
            })
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let (item, key) = decode(op, row)?;
            items.push(item);
            last = Some(key);
        }
        Ok(dumps::page(items, last))
    }

    /// One statement per batch (one multi-row insert per table, in data-modifying CTEs): one
    /// round trip, one transaction. A batch whose record values exceed 64 MiB sends the rest of
    /// its records in more statements of the same transaction. Nothing is derived that the
    /// tables do not hold (pending is summed from the held rows at every call), so the rows are
    /// the whole state. Never sent again after a dead connection: a second try could add the
    /// records twice.
    async fn load(&self, items: &[DumpItem]) -> Result<()> {
        let op = "import";
        let load = &dumps::encode(op, items, self.now(op)?)?;
        self.inner
            .run(op, Repeat::Once, |mut lease, sql| async move {
                let result = load_batch(lease.conn(), &sql.dump, load).await;
                (lease, result.map_err(Fail::from))
            })
            .await
    }

    /// One statement over every table of the namespace.
    async fn is_empty(&self) -> Result<bool> {
        self.inner
            .run("import", Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query_scalar::<_, bool>(&sql.dump.is_empty)
                    .fetch_one(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await
    }

    /// One call: a reserve writes no counters, so after a rollover the server counts the passed
    /// window's counters as zero without its bounds. Only where some window may fail to compute
    /// at now (`bounds_always_computable` is false) does the server name a rolled window first and
    /// a second call bring its bounds, or that they failed, so that the call fails where the
    /// model does. Sent again after a dead connection: a second `reserve` with the id replays.
    async fn reserve(&self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        let op = "reserve";
        let now = self.now(op)?;
        let computable = bounds_always_computable(now);
        let (steps, now) = self
            .call_windowed(
                op,
                budget,
                |s| &s.reserve,
                Some(now),
                true,
                |now| {
                    let args =
                        self.reserve_args(op, Bind::new(op).add(budget.to_owned()), request, now)?;
                    Ok(args.add(computable))
                },
            )
            .await?;
        let reply = window_error(op, budget, one(op, budget, steps)?, now)?;
        reply.into_reserve(op, budget, &request.id)
    }

    /// One call; after a rollover the server names the policy's window and a second call brings
    /// its bounds. Sent again after a dead connection: a second `commit` replays.
    async fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        let op = "commit";
        let (steps, _) = self
            .call_windowed(
                op,
                budget,
                |s| &s.commit,
                None,
                false,
                |now| self.commit_args(op, Bind::new(op).add(budget.to_owned()), id, actual, now),
            )
            .await?;
        one(op, budget, steps)?.into_commit(op, budget, id)
    }

    /// One call, never sent again after a dead connection: a second `release` would answer
    /// `false` for the hold the first one freed, so the caller hears `Unavailable` instead.
    async fn release(&self, budget: &str, id: &str) -> Result<bool> {
        let op = "release";
        let args = Bind::new(op)
            .add(budget.to_owned())
            .add(id.to_owned())
            .add(self.now_i64(op)?)
            .done()?;
        let steps = self.call(op, Repeat::Once, |s| &s.release, &args).await?;
        one(op, budget, steps)?.into_release(op, budget, id)
    }

    async fn reservation(&self, budget: &str, id: &str) -> Result<Option<Reservation>> {
        let op = "reservation";
        let now = self.now_i64(op)?;
        let row = self
            .inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.reservation)
                    .bind(budget)
                    .bind(now)
                    .bind(id)
                    .fetch_optional(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await?;
        row.map(|row| decode_reservation(op, &row)).transpose()
    }

    async fn reservations(&self, budget: &str) -> Result<Vec<Reservation>> {
        let op = "reservations";
        let now = self.now_i64(op)?;
        let rows = self
            .inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.reservations)
                    .bind(budget)
                    .bind(now)
                    .fetch_all(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await?;
        rows.iter().map(|row| decode_reservation(op, row)).collect()
    }

    /// One call (a second with window bounds after a rollover), the whole §4.3 sequence inside
    /// it. Sent again after a dead connection: keyed, a second call replays.
    async fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> Result<MultiReceipt> {
        let op = "report_usage_all";
        let request = report_all_request(op, report)?;
        let commit_fp = commit_fingerprint(&request.dimensions);
        let first = budgets.first().copied().unwrap_or_default();
        let (steps, now) = self
            .call_windowed(
                op,
                first,
                |s| &s.report_all,
                None,
                true,
                |now| {
                    let args =
                        self.reserve_args(op, Bind::new(op).add(names(budgets)), &request, now)?;
                    // reserve_args bound: budgets, id, dims, amounts, ttl, fingerprint, now, remember.
                    Ok(args.add(commit_fp.clone()))
                },
            )
            .await?;
        let reserved = reserve_part(budgets, &request.id, &steps, now)?;
        match refusal_answer(reserved) {
            Some(refused) => Ok(refused),
            None => commit_part(budgets, &request.id, &steps),
        }
    }

    /// One call, the whole §4.3 sequence inside it (a second only where some window may fail to
    /// compute at now, as `reserve`). Sent again after a dead connection: every `reserve` in it
    /// replays.
    async fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        let op = "reserve_all";
        let now = self.now(op)?;
        let computable = bounds_always_computable(now);
        let first = budgets.first().copied().unwrap_or_default();
        let (steps, now) = self
            .call_windowed(
                op,
                first,
                |s| &s.reserve_all,
                Some(now),
                true,
                |now| {
                    let args =
                        self.reserve_args(op, Bind::new(op).add(names(budgets)), request, now)?;
                    Ok(args.add(computable))
                },
            )
            .await?;
        reserve_part(budgets, &request.id, &steps, now)
    }

    /// One call (a second with window bounds after a rollover). Sent again after a dead
    /// connection: every `commit` in it replays.
    async fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<MultiReceipt> {
        let op = "commit_all";
        let first = budgets.first().copied().unwrap_or_default();
        let (steps, _) = self
            .call_windowed(
                op,
                first,
                |s| &s.commit_all,
                None,
                false,
                |now| self.commit_args(op, Bind::new(op).add(names(budgets)), id, actual, now),
            )
            .await?;
        commit_part(budgets, id, &steps)
    }

    /// One call, never sent again after a dead connection (as `release`).
    async fn release_all(&self, budgets: &[&str], id: &str) -> Result<()> {
        let op = "release_all";
        let args = Bind::new(op)
            .add(names(budgets))
            .add(id.to_owned())
            .add(self.now_i64(op)?)
            .done()?;
        let steps = self
            .call(op, Repeat::Once, |s| &s.release_all, &args)
            .await?;
        if steps.len() != budgets.len() {
            return Err(unexpected(op, budgets.first().copied().unwrap_or_default()));
        }
        let answers = budgets
            .iter()
            .zip(steps)
            .map(|(budget, step)| step.reply.into_release("release", budget, id));
        release_answer(answers)
    }

    const NAME: &'static str = "postgres";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.inner.durable,
            shared: true,
            distributed: false,
            max_value_bytes: Capabilities::MAX_VALUE_BYTES,
            atomic_multi_budget: true,
        }
    }

    /// Registers the namespace, creates its schema and applies missing migrations.
    async fn initialize(&self) -> Result<()> {
        let inner = &*self.inner;
        inner
            .run_with(
                "initialize",
                Repeat::Safe,
                SERVER,
                |mut lease, ()| async move {
                    let result = inner.initialize_on(&mut lease).await;
                    (lease, result)
                },
            )
            .await
    }

    /// Drops the namespace's schema and registry row. Every handle on the namespace, this one
    /// included, keeps working: its next call meets the missing schema, initializes the namespace
    /// again (empty, in a new schema) and retries once.
    async fn purge(&self) -> Result<()> {
        let namespace = self.inner.options.namespace.as_str();
        self.inner
            .run_with("purge", Repeat::Safe, SERVER, |mut lease, ()| async move {
                let result = schema::purge(lease.conn(), namespace).await;
                (lease, result.map_err(Fail::from))
            })
            .await
    }

    async fn store(&self, row: NewRow<'_>) -> Result<()> {
        let op = "store";
        let at = to_i64(op, "timestamp", row.stored_at)?;
        let (name, text) = (row.record, row.text.as_str());
        self.inner
            .run(op, Repeat::Once, |mut lease, sql| async move {
                let result = sqlx::query(&sql.records.store)
                    .bind(name)
                    .bind(at)
                    .bind(text)
                    .execute(lease.conn())
                    .await;
                (lease, result.map(drop).map_err(Fail::from))
            })
            .await
    }

    async fn store_idempotent(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        let op = "store_idempotent";
        let at = to_i64(op, "timestamp", row.stored_at)?;
        let (name, text) = (row.record, row.text.as_str());
        let found = self
            .inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query(&sql.records.store_idempotent)
                    .bind(name)
                    .bind(at)
                    .bind(text)
                    .bind(key)
                    .fetch_optional(lease.conn())
                    .await;
                let result = match result {
                    Ok(Some(row)) => Ok(row),
                    // The conflicting row was cleaned up between insert and read: try again.
                    Ok(None) => Err(Fail::Again(Error::unavailable(format!(
                        "{op}: record {} kept changing under a concurrent cleanup; retry",
                        show(name)
                    )))),
                    Err(e) => Err(Fail::Sql(e)),
                };
                (lease, result)
            })
            .await?;
        let column = |e| error::map(op, e);
        let status: String = found.try_get(0).map_err(column)?;
        if status == "appended" {
            return Ok(StoreResult::Appended);
        }
        let stored: String = found.try_get(1).map_err(column)?;
        let stored_at: i64 = found.try_get(2).map_err(column)?;
        idempotent_repeat(op, name, key, (&stored, stored_at), (text, at))
    }

    async fn query(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        let op = "query";
        let Some(plan) = QueryPlan::new(pattern, params) else {
            return Ok(Vec::new());
        };
        let start = to_i64(op, "start_time", plan.start)?;
        let end = to_i64(op, "end_time", plan.end)?;
        let plan = &plan;
        self.inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let (statement, upper) = records::statement(&sql.records, plan);
                let mut query = sqlx::query(statement)
                    .bind(records::first_name(plan))
                    .bind(start)
                    .bind(end);
                if let Some(upper) = upper {
                    query = query.bind(upper);
                }
                let result = records::collect(query.fetch(lease.conn()), plan).await;
                // Only a fully read answer leaves the connection clean for reuse.
                if matches!(result, Err(Fail::Final(_))) {
                    lease.discard();
                }
                (lease, result)
            })
            .await
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        let op = "cleanup";
        let before = to_i64(op, "older_than", older_than)?;
        self.inner
            .run(op, Repeat::Once, |mut lease, sql| async move {
                let result = sqlx::query(&sql.records.cleanup)
                    .bind(before)
                    .execute(lease.conn())
                    .await;
                (
                    lease,
                    result.map(|done| done.rows_affected()).map_err(Fail::from),
                )
            })
            .await
    }

    /// One call in the common case; a second one when the old policy's window has to be computed
    /// at now first (its stored window is missing or passed), as `WindowChange::at` does.
    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let op = "set_policy";
        let now = self.inner.options.now(op)?;
        let dims: Vec<&str> = policy.limits.keys().map(String::as_str).collect();
        let limits = |pick: fn(&stowage_core::DimensionLimit) -> Option<u64>, what| {
            policy
                .limits
                .values()
                .map(|l| pick(l).map(|v| to_i64(op, what, v)).transpose())
                .collect::<Result<Vec<Option<i64>>>>()
        };
        let softs = limits(|l| l.soft, "soft limit")?;
        let hards = limits(|l| l.hard, "hard limit")?;
        let spec = policy.window.as_ref().map(Window::spec);
        // The new window's bounds at now; the server asks for them only when the window changes
        // (WindowChange::at computes them only then), so a failure waits until it does.
        let bounds = policy.window.as_ref().map(|w| w.bounds_at(now));
        let (start, end) = match &bounds {
            Some(Ok(b)) => (
                Some(to_i64(op, "window start", b.start_ms)?),
                Some(to_i64(op, "window end", b.end_ms)?),
            ),
            _ => (None, None),
        };
        let now_i = to_i64(op, "clock", now)?;
        let (dims, softs, hards, spec) = (&dims, &softs, &hards, spec.as_deref());
        let mut old_checked = false;
        for _ in 0..MAX_WINDOW_CALLS {
            let row = self
                .inner
                .run(op, Repeat::Once, |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.set_policy)
                        .bind(budget)
                        .bind(dims)
                        .bind(softs)
                        .bind(hards)
                        .bind(spec)
                        .bind(start)
                        .bind(end)
                        .bind(now_i)
                        .bind(old_checked)
                        .fetch_one(lease.conn())
                        .await;
                    (lease, result.map_err(Fail::from))
                })
                .await?;
            match window_change(op, &row, now)? {
                Changed::Done => return Ok(()),
                Changed::OldChecked => old_checked = true,
                Changed::NeedBounds => {
                    return Err(match bounds {
                        Some(Err(e)) => e,
                        _ => Error::corruption(format!(
                            "{op}: budget {} asked for bounds it was given",
                            show(budget)
                        )),
                    })
                }
            }
        }
        Err(window_kept_changing(op, budget))
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        let rows = self
            .inner
            .run("policy", Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.policy)
                    .bind(budget)
                    .fetch_all(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await?;
        decode_policy(&rows)
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let op = "delete_policy";
        let now = self.inner.options.now(op)?;
        let now_i = to_i64(op, "clock", now)?;
        let mut old_checked = false;
        for _ in 0..MAX_WINDOW_CALLS {
            let row = self
                .inner
                .run(op, Repeat::Once, |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.delete_policy)
                        .bind(budget)
                        .bind(now_i)
                        .bind(old_checked)
                        .fetch_one(lease.conn())
                        .await;
                    (lease, result.map_err(Fail::from))
                })
                .await?;
            match window_change(op, &row, now)? {
                Changed::Done => return row.try_get(2).map_err(|e| error::map(op, e)),
                Changed::OldChecked => old_checked = true,
                Changed::NeedBounds => {
                    return Err(Error::corruption(format!(
                        "{op}: budget {} asked for the bounds of no window",
                        show(budget)
                    )))
                }
            }
        }
        Err(window_kept_changing(op, budget))
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
        let options = &self.inner.options;
        let now_u = options.now(op)?;
        let now = to_i64(op, "clock", now_u)?;
        let ttl = to_i64(op, "dedup TTL", options.dedup_ttl_ms)?;
        let dims: Vec<&str> = report.dimensions.keys().map(String::as_str).collect();
        let deltas = report
            .dimensions
            .values()
            .map(|d| to_i64(op, "delta", *d))
            .collect::<Result<Vec<i64>>>()?;
        let key = report.dedup_key.as_deref();
        let fingerprint = key.map(|_| dedup_fingerprint(report));
        let (dims, deltas, fingerprint) = (&dims, &deltas, fingerprint.as_deref());
        // A keyed report sent twice replays the first; an unkeyed one would apply twice.
        let repeat = if key.is_some() {
            Repeat::Safe
        } else {
            Repeat::Once
        };
        // Inside the stored window one call; after a rollover the server names the policy's
        // window, Rust computes its bounds at now (Window::bounds_at, never the server) and calls
        // again with them. More calls only when the policy's window changes in between.
        let mut window: Option<(String, i64, i64)> = None;
        for _ in 0..MAX_WINDOW_CALLS {
            let bounds = window
                .as_ref()
                .map(|(spec, start, end)| (spec.as_str(), *start, *end));
            let (spec, start, end) = (
                bounds.map(|b| b.0),
                bounds.map(|b| b.1),
                bounds.map(|b| b.2),
            );
            let row = self
                .inner
                .run(op, repeat, |mut lease, sql| async move {
                    let result = sqlx::query(&sql.budget.report)
                        .bind(budget)
                        .bind(dims)
                        .bind(deltas)
                        .bind(key)
                        .bind(fingerprint)
                        .bind(now)
                        .bind(ttl)
                        .bind(spec)
                        .bind(start)
                        .bind(end)
                        .fetch_one(lease.conn())
                        .await;
                    (lease, result.map_err(Fail::from))
                })
                .await?;
            match decode_report(budget, &row)? {
                Report::Reply(reply) => return reply.into_receipt(op, budget, key),
                Report::Window(policy_window) => {
                    let bounds = policy_window.bounds_at(now_u)?;
                    window = Some((
                        policy_window.spec(),
                        to_i64(op, "window start", bounds.start_ms)?,
                        to_i64(op, "window end", bounds.end_ms)?,
                    ));
                }
            }
        }
        Err(window_kept_changing(op, budget))
    }

    /// One call of `report_usage_batch` (every item in order, in one transaction, each by the
    /// same `report_step` as `report_usage`), one answer row per item. After a rollover the first
    /// item of a budget whose window needs bounds answers `window`, and so does every later item
    /// of that budget, unapplied; Rust computes the bounds of the windows named (at the same now)
    /// and sends those items again, in order, with them: two calls right after a rollover, more
    /// only when a policy's window changes in between (at most `MAX_WINDOW_CALLS`).
    ///
    /// Sent again after a dead connection only when every item sent has a dedup key (each one
    /// then replays, as a keyed `report_usage` sent twice does); otherwise the outcome is unknown
    /// and the batch answers `Unavailable`. A failure of the whole statement that is not
    /// `Unavailable` applied nothing: it is the answer of every item sent.
    async fn report_usage_batch(
        &self,
        items: &[BatchItem<'_>],
    ) -> Result<Vec<Result<UsageReceipt>>> {
        let op = "report_usage_batch";
        let options = &self.inner.options;
        let now = options.now(op)?;
        let ttl = to_i64(op, "dedup TTL", options.dedup_ttl_ms)?;
        let mut answers: Vec<Option<Result<UsageReceipt>>> = items.iter().map(|_| None).collect();
        let mut sent: Vec<usize> = (0..items.len()).collect();
        let mut bounds = Bounds::default();
        for _ in 0..MAX_WINDOW_CALLS {
            let args = bounds.bind(batch_args(op, items, &sent, now, ttl)?)?;
            let repeat = if sent.iter().all(|&i| items[i].report.dedup_key.is_some()) {
                Repeat::Safe
            } else {
                Repeat::Once
            };
            let rows = self
                .inner
                .run(op, repeat, |mut lease, sql| {
                    let args = args.clone();
                    async move {
                        let result = sqlx::query_with(&sql.budget.report_batch, args)
                            .fetch_all(lease.conn())
                            .await;
                        (lease, result.map_err(Fail::from))
                    }
                })
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(error) if error.kind() == ErrorKind::Unavailable => return Err(error),
                Err(error) => {
                    for &i in &sent {
                        answers[i] = Some(Err(error.clone()));
                    }
                    break;
                }
            };
            if rows.len() != sent.len() {
                return Err(Error::unavailable(format!(
                    "{op}: the server answered {} rows for {} items",
                    rows.len(),
                    sent.len()
                )));
            }
            let mut again = Vec::new();
            let mut asked: Vec<String> = Vec::new();
            for (&i, row) in sent.iter().zip(&rows) {
                let item = items[i];
                let answer = match decode_report(item.budget, row) {
                    Err(error) => Err(error),
                    Ok(Report::Reply(reply)) => {
                        reply.into_receipt(op, item.budget, item.report.dedup_key.as_deref())
                    }
                    Ok(Report::Window(window)) => {
                        let spec = window.spec();
                        if bounds.specs.contains(&spec) {
                            // Brought as NULL: the error computing them is the item's answer.
                            window.bounds_at(now).and_then(|_| {
                                Err(Error::internal(format!(
                                    "{op}: the server asked again for the bounds of window \
                                     {spec} it was given"
                                )))
                            })
                        } else {
                            again.push(i);
                            if !asked.contains(&spec) {
                                asked.push(spec);
                            }
                            continue;
                        }
                    }
                };
                answers[i] = Some(answer);
            }
            if again.is_empty() {
                break;
            }
            for spec in &asked {
                bounds.add_or_mark(op, spec, now)?;
            }
            sent = again;
        }
        answers
            .into_iter()
            .zip(items)
            .map(|(answer, item)| answer.ok_or_else(|| window_kept_changing(op, item.budget)))
            .collect()
    }

    /// One statement reads the counters, the stored window and the policy's window; the window
    /// step is applied here (`WindowStep::at`), never written.
    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let op = "usage";
        let now = self.inner.options.now(op)?;
        let now_i = to_i64(op, "clock", now)?;
        let row = self
            .inner
            .run(op, Repeat::Safe, |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.usage)
                    .bind(budget)
                    .bind(now_i)
                    .fetch_one(lease.conn())
                    .await;
                (lease, result.map_err(Fail::from))
            })
            .await?;
        let read = decode_usage(&row)?;
        let step = WindowStep::at(read.window.as_ref(), read.stored.as_ref(), now)?;
        Ok(BudgetUsage {
            counters: if step.keeps_counters() {
                read.counters
            } else {
                BTreeMap::new()
            },
            pending: read.pending,
            window: step.bounds(),
        })
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        self.inner
            .run("reset_usage", Repeat::Once, |mut lease, sql| async move {
                let result = sqlx::query(&sql.budget.reset)
                    .bind(budget)
                    .execute(lease.conn())
                    .await;
                (lease, result.map(drop).map_err(Fail::from))
            })
            .await
    }
}

/// Runs the statements of one load batch: one, or (records beyond the first chunk) several in one
/// transaction.
async fn load_batch(
    conn: &mut sqlx::PgConnection,
    sql: &DumpSql,
    load: &dumps::Load,
) -> std::result::Result<(), sqlx::Error> {
    if load.more.is_empty() {
        sqlx::query_with(&sql.load, load.first.clone())
            .execute(conn)
            .await?;
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query_with(&sql.load, load.first.clone())
        .execute(&mut *tx)
        .await?;
    for args in &load.more {
        sqlx::query_with(&sql.load_records, args.clone())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Bind parameters built up front (owned), so a call sent again binds the same values; the
/// first failure to bind is kept and answered by `done`.
pub(crate) struct Bind {
    op: &'static str,
    args: PgArguments,
    failed: Option<Error>,
}

impl Bind {
    pub(crate) fn new(op: &'static str) -> Bind {
        Bind {
            op,
            args: PgArguments::default(),
            failed: None,
        }
    }

    fn add<T>(mut self, value: T) -> Bind
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'static,
    {
        self.push(value);
        self
    }

    /// Binds `value` next.
    pub(crate) fn push<T>(&mut self, value: T)
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'static,
    {
        if let Err(e) = self.args.add(value) {
            let op = self.op;
            self.failed.get_or_insert_with(|| {
                Error::internal(format!("{op}: a parameter cannot be bound: {e}"))
            });
        }
    }

    pub(crate) fn done(self) -> Result<PgArguments> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.args),
        }
    }
}

/// The window bounds at now a call brings, per spec the server asked for (NULL bounds: they
/// could not be computed, for the reservation functions to fail where the model fails).
#[derive(Default)]
struct Bounds {
    specs: Vec<String>,
    starts: Vec<Option<i64>>,
    ends: Vec<Option<i64>>,
}

impl Bounds {
    /// Computes the bounds of window `spec` at `now` (`Window::bounds_at`, never the server).
    fn add(&mut self, op: &str, spec: &str, now: u64) -> Result<()> {
        let bounds = Window::from_spec(op, spec)?.bounds_at(now)?;
        self.specs.push(spec.to_owned());
        self.starts
            .push(Some(to_i64(op, "window start", bounds.start_ms)?));
        self.ends
            .push(Some(to_i64(op, "window end", bounds.end_ms)?));
        Ok(())
    }

    /// As `add`, but bounds that cannot be computed go as NULL: `reserve` answers their error
    /// (`window-error`) where `WindowStep::at` meets it, after replays and earlier budgets. Asked
    /// again for a spec brought as NULL (a commit step that would roll it), the call fails with
    /// the error of its bounds.
    fn add_or_mark(&mut self, op: &str, spec: &str, now: u64) -> Result<()> {
        let computed = Window::from_spec(op, spec)?.bounds_at(now);
        if self.specs.iter().any(|s| s == spec) {
            computed?;
            return Err(Error::internal(format!(
                "{op}: the server asked again for the bounds of window {spec} it was given"
            )));
        }
        if computed.is_ok() {
            return self.add(op, spec, now);
        }
        self.specs.push(spec.to_owned());
        self.starts.push(None);
        self.ends.push(None);
        Ok(())
    }

    fn bind(&self, args: Bind) -> Result<PgArguments> {
        args.add(self.specs.clone())
            .add(self.starts.clone())
            .add(self.ends.clone())
            .done()
    }
}

/// The arguments of `report_usage_batch` for `items[i]`, `i` in `sent` (in that order): budgets,
/// dimension counts, dimensions and deltas (concatenated), keys, fingerprints, `now`, dedup TTL.
fn batch_args(
    op: &'static str,
    items: &[BatchItem<'_>],
    sent: &[usize],
    now: u64,
    ttl: i64,
) -> Result<Bind> {
    let mut budgets = Vec::with_capacity(sent.len());
    let mut counts = Vec::with_capacity(sent.len());
    let mut keys = Vec::with_capacity(sent.len());
    let mut fingerprints = Vec::with_capacity(sent.len());
    let mut dims = Vec::with_capacity(sent.len() * 2);
    let mut deltas = Vec::with_capacity(sent.len() * 2);
    for &i in sent {
        let item = items[i];
        let report = item.report;
        budgets.push(item.budget.to_owned());
        counts.push(i32::try_from(report.dimensions.len()).map_err(|_| {
            Error::internal(format!("{op}: more dimensions than a report may have"))
        })?);
        for (dimension, delta) in &report.dimensions {
            dims.push(dimension.clone());
            deltas.push(to_i64(op, "delta", *delta)?);
        }
        keys.push(report.dedup_key.clone());
        fingerprints.push(report.dedup_key.as_ref().map(|_| dedup_fingerprint(report)));
    }
    Ok(Bind::new(op)
        .add(budgets)
        .add(counts)
        .add(dims)
        .add(deltas)
        .add(keys)
        .add(fingerprints)
        .add(to_i64(op, "clock", now)?)
        .add(ttl))
}

/// The budgets as owned names, for binding.
fn names(budgets: &[&str]) -> Vec<String> {
    budgets.iter().map(|b| (*b).to_owned()).collect()
}

/// Dimension names and amounts as parallel arrays (name order).
fn split(op: &str, amounts: &BTreeMap<String, u64>) -> Result<(Vec<String>, Vec<i64>)> {
    let values = amounts
        .values()
        .map(|v| to_i64(op, "amount", *v))
        .collect::<Result<Vec<i64>>>()?;
    Ok((amounts.keys().cloned().collect(), values))
}

fn unexpected(op: &str, budget: &str) -> Error {
    Error::corruption(format!(
        "{op}: unexpected answer rows for budget {}",
        show(budget)
    ))
}

/// The reply of a single-budget call: its one row.
fn one(op: &str, budget: &str, steps: Vec<Step>) -> Result<ReservationReply> {
    let mut steps = steps.into_iter();
    match (steps.next(), steps.next()) {
        (Some(step), None) => Ok(step.reply),
        _ => Err(unexpected(op, budget)),
    }
}

/// The specs of the windows whose bounds the server asked for, if it did (nothing was applied).
fn window_needed(steps: &[Step]) -> Option<Vec<String>> {
    let specs: Vec<String> = steps
        .iter()
        .filter(|s| s.step == "window")
        .map(|s| s.reply.detail.0.clone())
        .collect();
    (!specs.is_empty()).then_some(specs)
}

/// The reply, or for `window-error` (naming a window whose bounds the call brought as NULL) the
/// error `Window::bounds_at` gives at `now`.
fn window_error(
    op: &str,
    budget: &str,
    reply: ReservationReply,
    now: u64,
) -> Result<ReservationReply> {
    if reply.status != "window-error" {
        return Ok(reply);
    }
    match Window::from_spec(op, &reply.detail.0)?.bounds_at(now) {
        Err(error) => Err(error),
        Ok(_) => Err(Error::internal(format!(
            "{op}: the server found no bounds for the window of budget {} it was given",
            show(budget)
        ))),
    }
}

/// `reserve_all`'s answer from the `reserve` rows (one per budget, in order) and the `release`
/// rows of the holds it released, as `stowage_core::raw::reserve_all` builds it.
fn reserve_part(
    budgets: &[&str],
    id: &str,
    steps: &[Step],
    now: u64,
) -> Result<MultiReserveReceipt> {
    let op = "reserve";
    let reserves: Vec<&Step> = steps.iter().filter(|s| s.step == "reserve").collect();
    if reserves.len() != budgets.len() || reserves.iter().zip(budgets).any(|(s, b)| s.budget != *b)
    {
        return Err(unexpected(
            "reserve_all",
            budgets.first().copied().unwrap_or_default(),
        ));
    }
    let answers = reserves
        .iter()
        .map(|s| {
            window_error(op, &s.budget, s.reply.clone(), now)
                .and_then(|reply| reply.into_reserve(op, &s.budget, id))
        })
        .collect();
    let mut release_error = None;
    for step in steps.iter().filter(|s| s.step == "release") {
        // As stowage_core::raw::reserve_all: only a release that may have left a hold counts.
        let answer = step.reply.clone().into_release("release", &step.budget, id);
        if let Some(error) = cleanup_error(answer) {
            release_error.get_or_insert(error);
        }
    }
    let answer = reserve_answer(budgets, answers);
    match release_error {
        Some(error) if answer.is_ok() => Err(error),
        _ => answer,
    }
}

/// `commit_all`'s answer from the rows: the failed `check` (its error), or every `commit`.
fn commit_part(budgets: &[&str], id: &str, steps: &[Step]) -> Result<MultiReceipt> {
    let op = "commit";
    if let Some(check) = steps.iter().find(|s| s.step == "check") {
        check.reply.clone().into_commit(op, &check.budget, id)?;
        return Err(unexpected("commit_all", &check.budget));
    }
    let commits: Vec<&Step> = steps.iter().filter(|s| s.step == "commit").collect();
    if commits.len() != budgets.len() || commits.iter().zip(budgets).any(|(s, b)| s.budget != *b) {
        return Err(unexpected(
            "commit_all",
            budgets.first().copied().unwrap_or_default(),
        ));
    }
    let receipts = commits
        .iter()
        .map(|s| s.reply.clone().into_commit(op, &s.budget, id))
        .collect::<Result<Vec<_>>>()?;
    commit_answer(budgets, receipts)
}

impl PostgresBackend {
    fn now_i64(&self, op: &str) -> Result<i64> {
        to_i64(op, "clock", self.now(op)?)
    }

    /// Binds after `args` (the budget or budgets): id, dimensions, amounts, TTL, fingerprint,
    /// `now`, and how long the reservation is remembered (this handle's dedup TTL).
    fn reserve_args(
        &self,
        op: &'static str,
        args: Bind,
        request: &ReserveRequest,
        now: u64,
    ) -> Result<Bind> {
        let (dims, amounts) = split(op, &request.dimensions)?;
        Ok(args
            .add(request.id.clone())
            .add(dims)
            .add(amounts)
            .add(to_i64(op, "ttl", request.ttl_ms)?)
            .add(reserve_fingerprint(request))
            .add(to_i64(op, "clock", now)?)
            .add(to_i64(op, "dedup TTL", self.inner.options.dedup_ttl_ms)?))
    }

    /// Binds after `args` (the budget or budgets): id, dimensions, amounts, fingerprint, `now`,
    /// and whether no window can fail to compute at `now` (a commit of nothing then needs no
    /// bounds).
    fn commit_args(
        &self,
        op: &'static str,
        args: Bind,
        id: &str,
        actual: &BTreeMap<String, u64>,
        now: u64,
    ) -> Result<Bind> {
        let (dims, amounts) = split(op, actual)?;
        Ok(args
            .add(id.to_owned())
            .add(dims)
            .add(amounts)
            .add(commit_fingerprint(actual))
            .add(to_i64(op, "clock", now)?)
            .add(bounds_always_computable(now)))
    }

    /// Runs one reservation function (`statement` of the namespace's budget SQL) with `args`.
    async fn call(
        &self,
        op: &'static str,
        repeat: Repeat,
        statement: fn(&BudgetSql) -> &String,
        args: &PgArguments,
    ) -> Result<Vec<Step>> {
        let rows = self
            .inner
            .run(op, repeat, |mut lease, sql| {
                let args = args.clone();
                async move {
                    let result = sqlx::query_with(statement(&sql.budget), args)
                        .fetch_all(lease.conn())
                        .await;
                    (lease, result.map_err(Fail::from))
                }
            })
            .await?;
        decode_steps(op, &rows)
    }

    /// The window protocol of the reservation calls, once: sends `statement` with `args(now)` and
    /// the bounds gathered so far until the server names no window whose bounds it needs (at most
    /// `MAX_WINDOW_CALLS` calls, every one safe to resend), and returns its steps and the `now` they
    /// were computed at. `now` is `fixed` when given (the reserve calls: one reading for every
    /// try), else read again for each try. `tolerant`: bounds that cannot be computed go as NULL, for
    /// the server to answer that error in sequence (`Bounds::add_or_mark`), instead of failing here.
    async fn call_windowed(
        &self,
        op: &'static str,
        subject: &str,
        statement: fn(&BudgetSql) -> &String,
        fixed: Option<u64>,
        tolerant: bool,
        args: impl Fn(u64) -> Result<Bind>,
    ) -> Result<(Vec<Step>, u64)> {
        let mut bounds = Bounds::default();
        for _ in 0..MAX_WINDOW_CALLS {
            let now = match fixed {
                Some(now) => now,
                None => self.now(op)?,
            };
            let bound = bounds.bind(args(now)?)?;
            let steps = self.call(op, Repeat::Safe, statement, &bound).await?;
            let Some(specs) = window_needed(&steps) else {
                return Ok((steps, now));
            };
            for spec in specs {
                if tolerant {
                    bounds.add_or_mark(op, &spec, now)?;
                } else {
                    bounds.add(op, &spec, now)?;
                }
            }
        }
        Err(window_kept_changing(op, subject))
    }
}
