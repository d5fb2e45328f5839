//! `ValkeyBackend`: the handle and its engine impl; one script call per budget operation (and, on
//! a standalone server, per multi-budget operation).

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_core::dump::{DumpItem, DumpPage, Section};
use stowage_core::raw::{self as multi, Access, Composed, NewRow, Pattern, ResolvedOptions};
use stowage_core::{
    BudgetPolicy, BudgetUsage, Capabilities, Checked, ConnectOptions, MultiReceipt,
    MultiReserveReceipt, QueryParams, Reservation, ReserveReceipt, ReserveRequest, Result,
    StoreResult, StoredValue, UsageReceipt, UsageReport,
};

use crate::config::ValkeyConfig;
use crate::connection::Connection;
use crate::keys::{namespace_pattern, NAMESPACE_IDS, NAMESPACE_NEXT};
use crate::scripts::Scripts;
use crate::{batch, budget, dump, records, reservations};

/// The Valkey backend (standalone or cluster). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ValkeyBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    options: ResolvedOptions,
    /// `options` with the namespace replaced by its registered id, as every key spells it
    /// (`keys.rs`): learned on first use, then kept (an id never changes).
    keyed: tokio::sync::OnceCell<ResolvedOptions>,
    scripts: Scripts,
    durable: bool,
}

/// The id of `namespace` in the registry (`keys.rs`), registering it on first use: `HGET`; when
/// absent, a fresh id by `INCR`, offered by `HSETNX` (of two processes registering at once, the
/// first write wins), then `HGET` again to answer the id that won.
async fn register(conn: &Connection, namespace: &str) -> Result<String> {
    let op = "namespace";
    let read = || redis::cmd("HGET").arg(NAMESPACE_IDS).arg(namespace).clone();
    if let Some(id) = conn.run::<Option<String>>(op, &read()).await? {
        return Ok(id);
    }
    let fresh: u64 = conn.run(op, redis::cmd("INCR").arg(NAMESPACE_NEXT)).await?;
    let _: i64 = conn
        .run(
            op,
            redis::cmd("HSETNX")
                .arg(NAMESPACE_IDS)
                .arg(namespace)
                .arg(fresh),
        )
        .await?;
    conn.run::<Option<String>>(op, &read())
        .await?
        .ok_or_else(|| stowage_core::Error::internal(format!("{op}: the registered id vanished")))
}

impl ValkeyBackend {
    /// Connects to the server or cluster named by `url` and asks whether its persistence is
    /// durable; `initialize` loads the scripts.
    pub async fn open(url: &str, options: ConnectOptions) -> Result<Checked<ValkeyBackend>> {
        let config = ValkeyConfig::from_url(url)?;
        let options = options.resolve()?;
        let conn = Connection::open(&config).await?;
        let durable = conn
            .is_durable(
                config
                    .connect_timeout
                    .saturating_add(config.operation_timeout),
            )
            .await;
        Ok(Checked::new(ValkeyBackend {
            inner: Arc::new(Inner {
                conn,
                options,
                keyed: tokio::sync::OnceCell::new(),
                scripts: Scripts::new(),
                durable,
            }),
        }))
    }

    /// The options every key is built from: the namespace is its registered id (see [`key_namespace`]).
    ///
    /// [`key_namespace`]: ValkeyBackend::key_namespace
    async fn keyed(&self) -> Result<&ResolvedOptions> {
        let inner = &*self.inner;
        inner
            .keyed
            .get_or_try_init(|| async {
                let id = register(&inner.conn, &inner.options.namespace).await?;
                let mut keyed = inner.options.clone();
                keyed.namespace = id;
                Ok(keyed)
            })
            .await
    }

    /// The namespace as this backend's keys spell it: its id in the server's namespace registry,
    /// registered on first use (one `HGET` per handle once registered). What the key builders of
    /// [`crate::raw`] take as their namespace.
    pub async fn key_namespace(&self) -> Result<String> {
        Ok(self.keyed().await?.namespace.clone())
    }

    async fn ns(&self) -> Result<&str> {
        Ok(&self.keyed().await?.namespace)
    }

    fn conn(&self) -> &Connection {
        &self.inner.conn
    }

    async fn dump_ctx(&self) -> Result<dump::Ctx<'_>> {
        Ok(dump::Ctx {
            conn: &self.inner.conn,
            namespace: self.ns().await?,
        })
    }

    async fn ctx(&self) -> Result<reservations::Ctx<'_>> {
        Ok(reservations::Ctx {
            conn: &self.inner.conn,
            scripts: &self.inner.scripts,
            options: self.keyed().await?,
        })
    }
}

impl Access for ValkeyBackend {
    fn now(&self, op: &str) -> Result<u64> {
        self.inner.options.now(op)
    }

    fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// Budget sections: a temporary sorted set of the section's names built on the server on the
    /// first page, then read page by page; records: the name index, then each record's rows
    /// (see `dump.rs`).
    async fn dump_page(
        &self,
        section: Section,
        after: Option<&str>,
        _now: u64,
    ) -> Result<DumpPage> {
        dump::dump_page(self.dump_ctx().await?, section, after).await
    }

    /// One pipeline per batch (one per slot on a cluster), after one `INCRBY` per record that
    /// numbers its rows.
    async fn load(&self, items: &[DumpItem]) -> Result<()> {
        let now = self.inner.options.now("import")?;
        dump::load(self.dump_ctx().await?, items, now).await
    }

    /// No key of the namespace on the server (every primary of a cluster), an export's
    /// temporary keys aside.
    async fn is_empty(&self) -> Result<bool> {
        dump::is_empty(self.conn(), self.ns().await?).await
    }

    async fn reserve(&self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        reservations::reserve(self.ctx().await?, budget, request).await
    }

    async fn commit(
        &self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        reservations::commit(self.ctx().await?, budget, id, actual).await
    }

    async fn release(&self, budget: &str, id: &str) -> Result<bool> {
        reservations::release(self.ctx().await?, budget, id).await
    }

    async fn reservation(&self, budget: &str, id: &str) -> Result<Option<Reservation>> {
        reservations::reservation(self.ctx().await?, budget, id).await
    }

    async fn reservations(&self, budget: &str) -> Result<Vec<Reservation>> {
        reservations::reservations(self.ctx().await?, budget).await
    }

    /// Standalone: the §4.3 sequence as one script over every budget's keys. Cluster: composed
    /// call by call (the budgets may live in different slots).
    async fn report_usage_all(
        &self,
        budgets: &[&str],
        report: &UsageReport,
    ) -> Result<MultiReceipt> {
        if self.inner.conn.is_cluster() {
            return multi::report_usage_all(&mut Composed(self), budgets, report).await;
        }
        let request = multi::report_all_request("report_usage_all", report)?;
        reservations::report_usage_all(self.ctx().await?, budgets, &request).await
    }

    async fn reserve_all(
        &self,
        budgets: &[&str],
        request: &ReserveRequest,
    ) -> Result<MultiReserveReceipt> {
        if self.inner.conn.is_cluster() {
            return multi::reserve_all(&mut Composed(self), budgets, request).await;
        }
        reservations::reserve_all(self.ctx().await?, budgets, request).await
    }

    async fn commit_all(
        &self,
        budgets: &[&str],
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<MultiReceipt> {
        if self.inner.conn.is_cluster() {
            return multi::commit_all(&mut Composed(self), budgets, id, actual).await;
        }
        reservations::commit_all(self.ctx().await?, budgets, id, actual).await
    }

    async fn release_all(&self, budgets: &[&str], id: &str) -> Result<()> {
        if self.inner.conn.is_cluster() {
            return multi::release_all(&mut Composed(self), budgets, id).await;
        }
        reservations::release_all(self.ctx().await?, budgets, id).await
    }

    const NAME: &'static str = "valkey";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.inner.durable,
            shared: true,
            distributed: self.inner.conn.is_cluster(),
            max_value_bytes: Capabilities::MAX_VALUE_BYTES,
            atomic_multi_budget: !self.inner.conn.is_cluster(),
        }
    }

    async fn initialize(&self) -> Result<()> {
        self.inner.scripts.load(self.conn()).await
    }

    /// Deletes every key of the namespace (`SCAN` with its key pattern, `UNLINK`). The namespace
    /// keeps its registered id (the registry is no key of the namespace), and nothing else is
    /// cached in this process (the name index and the script cache live on the server), so
    /// every handle keeps working.
    async fn purge(&self) -> Result<()> {
        self.conn()
            .delete_matching("purge", &namespace_pattern(self.ns().await?))
            .await
    }

    async fn store(&self, row: NewRow<'_>) -> Result<()> {
        records::store(self.conn(), &self.inner.scripts, self.ns().await?, row).await
    }

    async fn store_idempotent(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        records::store_idempotent(self.conn(), &self.inner.scripts, self.ns().await?, row, key)
            .await
    }

    async fn query(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        records::query(self.conn(), self.ns().await?, pattern, params).await
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        records::cleanup(
            self.conn(),
            &self.inner.scripts,
            self.ns().await?,
            older_than,
        )
        .await
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let inner = &*self.inner;
        budget::set_policy(
            &inner.conn,
            &inner.scripts,
            self.keyed().await?,
            budget,
            policy,
        )
        .await
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        budget::policy(self.conn(), self.ns().await?, budget).await
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let inner = &*self.inner;
        budget::delete_policy(&inner.conn, &inner.scripts, self.keyed().await?, budget).await
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let inner = &*self.inner;
        budget::report_usage(
            &inner.conn,
            &inner.scripts,
            self.keyed().await?,
            budget,
            report,
        )
        .await
    }

    /// One pipeline of the items' EVALSHAs (one per hash slot on a cluster), one more after a
    /// window rollover or a lost script cache (see `batch.rs`).
    async fn report_usage_batch(
        &self,
        items: &[multi::BatchItem<'_>],
    ) -> Result<Vec<Result<UsageReceipt>>> {
        let inner = &*self.inner;
        batch::report_usage_batch(&inner.conn, &inner.scripts, self.keyed().await?, items).await
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let inner = &*self.inner;
        budget::usage(&inner.conn, &inner.scripts, self.keyed().await?, budget).await
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        budget::reset_usage(self.conn(), self.ns().await?, budget).await
    }
}
