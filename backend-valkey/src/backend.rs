//! `ValkeyBackend`: validation in Rust, one script call per budget operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use redis::{Script, ScriptInvocation, Value as RedisValue};
use stowage_core::raw::{show, validate, Pattern, ResolvedOptions};
use stowage_core::{
    Backend, BoxFuture, Breach, BudgetBackend, BudgetPolicy, BudgetUsage, Capabilities,
    ConnectOptions, DimensionLimit, Error, PersistenceBackend, QueryParams, Result, StoreResult,
    StoredValue, UsageOutcome, UsageReceipt, UsageReport, Value, MAX_AMOUNT,
};

use crate::config::ValkeyConfig;
use crate::connection::Connection;
use crate::keys::{budget_keys, name_index, namespace_pattern, record_keys, slot_of};
use crate::records::{decode_member, lex_max, lex_min, time_hex};

/// Server-side expiry of dedup records beyond their TTL: they only garbage-collect, with this margin.
pub(crate) const DEDUP_GC_MARGIN_MS: u64 = 3_600_000;
/// The longest server-side expiry set (about 31,700 years): `PEXPIRE` refuses times that would
/// pass `i64::MAX` once added to the server's clock, and a refusal after the writes would be too late.
pub(crate) const MAX_DEDUP_GC_MS: u64 = 1_000_000_000_000_000;
/// Names read from the name index per call, and rows deleted per cleanup call.
const BATCH: usize = 1_000;
/// Keys asked for per `SCAN` call of `purge`.
const SCAN_COUNT: usize = 1_000;
/// Records read or cleaned at once (the connection pipelines them).
const PARALLEL_RECORDS: usize = 32;

/// The Valkey backend (standalone or cluster). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ValkeyBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    options: ResolvedOptions,
    scripts: Scripts,
    durable: bool,
}

#[derive(Debug)]
struct Scripts {
    report: Script,
    set_policy: Script,
    store: Script,
    cleanup: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            report: Script::new(include_str!("../scripts/report_usage.lua")),
            set_policy: Script::new(include_str!("../scripts/set_policy.lua")),
            store: Script::new(include_str!("../scripts/store.lua")),
            cleanup: Script::new(include_str!("../scripts/cleanup.lua")),
        }
    }

    fn sources() -> [&'static str; 4] {
        [
            include_str!("../scripts/report_usage.lua"),
            include_str!("../scripts/set_policy.lua"),
            include_str!("../scripts/store.lua"),
            include_str!("../scripts/cleanup.lua"),
        ]
    }
}

/// Every string in a reply, depth first (replies of several cluster nodes arrive nested).
fn strings(value: &RedisValue, out: &mut Vec<String>) {
    match value {
        RedisValue::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => out.push(s.clone()),
        RedisValue::Array(items) | RedisValue::Set(items) => {
            items.iter().for_each(|v| strings(v, out))
        }
        RedisValue::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

impl ValkeyBackend {
    /// Connects to the server or cluster named by `url` and loads the scripts.
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Self> {
        let config = ValkeyConfig::from_url(url)?;
        let options = options.resolve()?;
        let conn = Connection::open(&config).await?;
        let durable = Self::persistence_is_durable(
            &conn,
            config
                .connect_timeout
                .saturating_add(config.operation_timeout),
        )
        .await;
        let backend = ValkeyBackend {
            inner: Arc::new(Inner {
                conn,
                options,
                scripts: Scripts::new(),
                durable,
            }),
        };
        backend.load_scripts().await?;
        Ok(backend)
    }

    /// Durable means every write reaches the AOF before it is acknowledged: `appendonly yes` and
    /// `appendfsync always` on the server, or on every primary of a cluster (found through the
    /// cluster's topology, not only the seeds, and each asked directly). A node that cannot be
    /// asked (CONFIG refused or disabled, unreachable), or a topology that cannot be read, makes
    /// the answer "not durable".
    async fn persistence_is_durable(conn: &Connection, patience: Duration) -> bool {
        let op = "connect";
        let ask = async {
            let primaries = conn.primaries(op).await.ok()?;
            if primaries.is_empty() {
                return None;
            }
            for info in &primaries {
                let node = conn.node(op, info).await.ok()?;
                let mut values = Vec::new();
                for name in ["appendonly", "appendfsync"] {
                    let reply: RedisValue = node
                        .run(op, redis::cmd("CONFIG").arg("GET").arg(name))
                        .await
                        .ok()?;
                    let mut all = Vec::new();
                    strings(&reply, &mut all);
                    values.push(all.get(1).cloned()?);
                }
                if values != ["yes", "always"] {
                    return Some(false);
                }
            }
            Some(true)
        };
        tokio::time::timeout(patience, ask).await.ok().flatten() == Some(true)
    }

    async fn load_scripts(&self) -> Result<()> {
        for source in Scripts::sources() {
            let _: RedisValue = self
                .inner
                .conn
                .run("initialize", redis::cmd("SCRIPT").arg("LOAD").arg(source))
                .await?;
        }
        Ok(())
    }
}

fn parse_decimal(op: &str, what: &str, text: &str) -> Result<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|v| *v <= MAX_AMOUNT)
        .ok_or_else(|| {
            Error::corruption(format!(
                "{op}: stored {what} {} is not an amount",
                show(text)
            ))
        })
}

fn decode_breaches(op: &str, blob: &str) -> Result<Vec<Breach>> {
    let parts: Vec<&str> = blob.split('\0').collect();
    let mut breaches = Vec::new();
    for group in parts.chunks(4).filter(|g| g.len() == 4) {
        breaches.push(Breach {
            dimension: group[0].to_owned(),
            usage: parse_decimal(op, "usage", group[1])?,
            limit: parse_decimal(op, "limit", group[2])?,
            crossed: group[3] == "1",
        });
    }
    Ok(breaches)
}

impl Inner {
    fn ns(&self) -> &str {
        &self.options.namespace
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let op = "report_usage";
        validate::report(op, budget, report)?;
        let now = self.options.now(op)?;
        let ttl = self.options.dedup_ttl_ms;
        let (keys, args) = crate::raw::report_usage_call(self.ns(), budget, report, now, ttl);
        let mut call: ScriptInvocation<'_> = self.scripts.report.prepare_invoke();
        for key in keys {
            call.key(key);
        }
        for arg in args {
            call.arg(arg);
        }
        let (status, blob): (String, String) = self.conn.script(op, &call).await?;
        let (replayed, status) = match status.strip_prefix("replay-") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, status),
        };
        let outcome = match status.as_str() {
            "ok" => UsageOutcome::Ok,
            "soft" => UsageOutcome::SoftBreach(decode_breaches(op, &blob)?),
            "hard" => UsageOutcome::HardBreach(decode_breaches(op, &blob)?),
            "conflict" => {
                return Err(Error::dedup_conflict(
                    op,
                    budget,
                    report.dedup_key.as_deref().unwrap_or_default(),
                ))
            }
            "corrupt" => {
                return Err(Error::corruption(format!(
                    "{op}: the stored limit of dimension {} of budget {} cannot be decoded",
                    show(&blob),
                    show(budget)
                )))
            }
            "overflow" => {
                let parts: Vec<&str> = blob.split('\0').collect();
                let part = |i: usize| parts.get(i).copied().unwrap_or_default();
                return Err(Error::counter_overflow(
                    op,
                    budget,
                    part(0),
                    part(1),
                    part(2),
                ));
            }
            other => {
                return Err(Error::corruption(format!(
                    "{op}: unknown status {} for budget {}",
                    show(other),
                    show(budget)
                )))
            }
        };
        Ok(UsageReceipt { outcome, replayed })
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let op = "set_policy";
        validate::policy(op, budget, policy)?;
        let keys = budget_keys(self.ns(), budget);
        let mut call = self.scripts.set_policy.prepare_invoke();
        call.key(&keys.policy);
        let text = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        for (dimension, limit) in &policy.limits {
            call.arg(dimension.as_str())
                .arg(text(limit.soft))
                .arg(text(limit.hard));
        }
        let _: i64 = self.conn.script(op, &call).await?;
        Ok(())
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        let op = "policy";
        validate::name(op, "budget", budget)?;
        let keys = budget_keys(self.ns(), budget);
        let fields: Vec<(String, String)> = self
            .conn
            .run(op, redis::cmd("HGETALL").arg(&keys.policy))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut limits = BTreeMap::new();
        for (dimension, value) in fields.into_iter().filter(|(d, _)| !d.is_empty()) {
            let (soft, hard) = value.split_once(',').ok_or_else(|| {
                Error::corruption(format!(
                    "{op}: stored limit {} cannot be decoded",
                    show(&value)
                ))
            })?;
            let parse = |t: &str| {
                (!t.is_empty())
                    .then(|| parse_decimal(op, "limit", t))
                    .transpose()
            };
            limits.insert(
                dimension,
                DimensionLimit {
                    soft: parse(soft)?,
                    hard: parse(hard)?,
                },
            );
        }
        Ok(Some(BudgetPolicy { limits }))
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let op = "delete_policy";
        validate::name(op, "budget", budget)?;
        let keys = budget_keys(self.ns(), budget);
        let deleted: i64 = self
            .conn
            .run(op, redis::cmd("DEL").arg(&keys.policy))
            .await?;
        Ok(deleted > 0)
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let op = "usage";
        validate::name(op, "budget", budget)?;
        let keys = budget_keys(self.ns(), budget);
        let fields: Vec<(String, String)> = self
            .conn
            .run(op, redis::cmd("HGETALL").arg(&keys.counters))
            .await?;
        let mut counters = BTreeMap::new();
        for (dimension, value) in fields {
            let value = parse_decimal(op, "counter", &value)?;
            counters.insert(dimension, value);
        }
        Ok(BudgetUsage { counters })
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        let op = "reset_usage";
        validate::name(op, "budget", budget)?;
        let keys = budget_keys(self.ns(), budget);
        let _: i64 = self
            .conn
            .run(op, redis::cmd("DEL").arg(&keys.counters))
            .await?;
        Ok(())
    }

    /// Appends a row; the record name enters the namespace's name index first (in the same
    /// script on a standalone server, one call before on a cluster), so no row is ever unlisted.
    async fn append(
        &self,
        op: &str,
        record: &str,
        text: &str,
        timestamp: u64,
        key: &str,
    ) -> Result<String> {
        let index = name_index(self.ns());
        if self.conn.is_cluster() {
            let _: i64 = self
                .conn
                .run(op, redis::cmd("ZADD").arg(&index).arg(0).arg(record))
                .await?;
        }
        let keys = record_keys(self.ns(), record);
        let mut call = self.scripts.store.prepare_invoke();
        call.key(&keys.rows)
            .key(&keys.seq)
            .key(&keys.idempotency)
            .arg(time_hex(timestamp))
            .arg(text)
            .arg(key);
        if !self.conn.is_cluster() {
            call.key(&index).arg(record);
        }
        self.conn.script(op, &call).await
    }

    async fn store(&self, record: &str, value: &Value, timestamp: u64) -> Result<()> {
        let op = "store";
        let text = validate::store(op, record, value, timestamp)?;
        self.append(op, record, &text, timestamp, "").await?;
        Ok(())
    }

    async fn store_idempotent(
        &self,
        record: &str,
        value: &Value,
        timestamp: u64,
        key: &str,
    ) -> Result<StoreResult> {
        let op = "store_idempotent";
        let text = validate::store(op, record, value, timestamp)?;
        validate::name(op, "idempotency key", key)?;
        match self
            .append(op, record, &text, timestamp, key)
            .await?
            .as_str()
        {
            "appended" => Ok(StoreResult::Appended),
            "exists" => Ok(StoreResult::AlreadyExists),
            _ => Err(Error::idempotency_conflict(op, record, key)),
        }
    }

    /// Record names of the namespace starting with `prefix`, in byte order, read in bounded batches.
    async fn names_with_prefix(&self, op: &str, prefix: &str) -> Result<Vec<String>> {
        let index = name_index(self.ns());
        let max = stowage_core::raw::pattern::prefix_upper_bound(prefix)
            .map_or_else(|| "+".to_owned(), |upper| format!("({upper}"));
        let mut min = if prefix.is_empty() {
            "-".to_owned()
        } else {
            format!("[{prefix}")
        };
        let mut names = Vec::new();
        loop {
            let batch: Vec<String> = self
                .conn
                .run(
                    op,
                    redis::cmd("ZRANGEBYLEX")
                        .arg(&index)
                        .arg(&min)
                        .arg(&max)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(BATCH),
                )
                .await?;
            let done = batch.len() < BATCH;
            if let Some(last) = batch.last() {
                min = format!("({last}");
            }
            names.extend(batch);
            if done {
                return Ok(names);
            }
        }
    }

    async fn query(&self, pattern: &str, params: QueryParams) -> Result<Vec<StoredValue>> {
        let op = "query";
        let pattern = Pattern::parse(op, pattern)?;
        validate::query_params(op, &params)?;
        if params.limit_per_record == Some(0) {
            return Ok(Vec::new());
        }
        let names: Vec<String> = if pattern.is_exact() {
            vec![pattern.as_str().to_owned()]
        } else {
            self.names_with_prefix(op, pattern.literal_prefix())
                .await?
                .into_iter()
                .filter(|n| pattern.matches(n))
                .collect()
        };
        let (min, max) = (lex_min(params.start_time), lex_max(params.end_time));
        let per_record = futures_util::stream::iter(names)
            .map(|name| {
                let (min, max) = (&min, &max);
                async move {
                    let rows_key = record_keys(self.ns(), &name).rows;
                    let mut cmd = redis::cmd("ZREVRANGEBYLEX");
                    cmd.arg(&rows_key).arg(max).arg(min);
                    // LIMIT takes a signed 64-bit count; a larger limit keeps every row anyway.
                    if let Some(limit) = params.limit_per_record.and_then(|l| i64::try_from(l).ok())
                    {
                        cmd.arg("LIMIT").arg(0).arg(limit);
                    }
                    let members: Vec<Vec<u8>> = self.conn.run(op, &cmd).await?;
                    members
                        .iter()
                        .map(|m| decode_member(op, &name, m))
                        .collect::<Result<Vec<_>>>()
                }
            })
            .buffered(PARALLEL_RECORDS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(per_record.into_iter().flatten().collect())
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        let op = "cleanup";
        validate::amount(op, "older_than", older_than)?;
        let bound = format!("({}", time_hex(older_than));
        let names = self.names_with_prefix(op, "").await?;
        let counts = futures_util::stream::iter(names)
            .map(|name| {
                let bound = &bound;
                async move {
                    let keys = record_keys(self.ns(), &name);
                    let mut total = 0u64;
                    loop {
                        let mut call = self.scripts.cleanup.prepare_invoke();
                        call.key(&keys.rows)
                            .key(&keys.idempotency)
                            .arg(bound)
                            .arg(BATCH);
                        let deleted: u64 = self.conn.script(op, &call).await?;
                        total += deleted;
                        if deleted < u64::try_from(BATCH).expect("small batch") {
                            return Ok::<u64, Error>(total);
                        }
                    }
                }
            })
            .buffered(PARALLEL_RECORDS)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(counts.into_iter().sum())
    }
}

impl Inner {
    /// Deletes every key of the namespace: `SCAN` with the namespace's key pattern on the server,
    /// or on every primary of a cluster, and `UNLINK` of what it finds, one command per hash slot.
    /// Not atomic: keys written while it runs may stay. Nothing is cached in this process (the
    /// name index and the script cache live on the server), so every handle keeps working.
    async fn purge(&self) -> Result<()> {
        let op = "purge";
        let pattern = namespace_pattern(self.ns());
        let scan = |cursor: &str| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            cmd
        };
        if !self.conn.is_cluster() {
            let mut cursor = "0".to_owned();
            loop {
                let (next, keys): (String, Vec<Vec<u8>>) =
                    self.conn.run(op, &scan(&cursor)).await?;
                self.unlink(op, keys).await?;
                if next == "0" {
                    return Ok(());
                }
                cursor = next;
            }
        }
        for info in self.conn.primaries(op).await? {
            let node = self.conn.node(op, &info).await?;
            let mut cursor = "0".to_owned();
            loop {
                let (next, keys): (String, Vec<Vec<u8>>) = node.run(op, &scan(&cursor)).await?;
                self.unlink(op, keys).await?;
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// `UNLINK`s `keys`, one command per hash slot (a cluster refuses keys of several slots).
    async fn unlink(&self, op: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        let mut by_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for key in keys {
            by_slot.entry(slot_of(&key)).or_default().push(key);
        }
        for keys in by_slot.into_values() {
            let _: i64 = self.conn.run(op, redis::cmd("UNLINK").arg(keys)).await?;
        }
        Ok(())
    }
}

impl PersistenceBackend for ValkeyBackend {
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
        Box::pin(self.load_scripts())
    }

    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.inner.cleanup(older_than))
    }
}

impl BudgetBackend for ValkeyBackend {
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

impl Backend for ValkeyBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.inner.durable,
            shared: true,
            distributed: self.inner.conn.is_cluster(),
            max_value_bytes: 1_048_576,
        }
    }

    fn purge(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.purge())
    }
}
