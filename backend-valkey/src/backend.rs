//! `ValkeyBackend`: the handle and its engine impl; one script call per budget operation.

use std::sync::Arc;

use stowage_core::raw::{Access, NewRow, Pattern, ResolvedOptions};
use stowage_core::{
    BudgetPolicy, BudgetUsage, Capabilities, Checked, ConnectOptions, QueryParams, Result,
    StoreResult, StoredValue, UsageReceipt, UsageReport,
};

use crate::config::ValkeyConfig;
use crate::connection::Connection;
use crate::keys::namespace_pattern;
use crate::scripts::Scripts;
use crate::{budget, records};

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
                scripts: Scripts::new(),
                durable,
            }),
        }))
    }

    fn ns(&self) -> &str {
        &self.inner.options.namespace
    }

    fn conn(&self) -> &Connection {
        &self.inner.conn
    }
}

impl Access for ValkeyBackend {
    // TODO(issue-12): placeholder until this engine implements SEMANTICS §4.2; must not be merged.
    fn now(&self, op: &str) -> Result<u64> {
        self.inner.options.now(op)
    }

    async fn reserve(
        &self,
        _budget: &str,
        _request: &stowage_core::ReserveRequest,
    ) -> Result<stowage_core::ReserveReceipt> {
        Err(stowage_core::Error::unsupported("TODO(issue-12)"))
    }

    async fn commit(
        &self,
        _budget: &str,
        _id: &str,
        _actual: &std::collections::BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        Err(stowage_core::Error::unsupported("TODO(issue-12)"))
    }

    async fn release(&self, _budget: &str, _id: &str) -> Result<bool> {
        Err(stowage_core::Error::unsupported("TODO(issue-12)"))
    }

    async fn reservation(
        &self,
        _budget: &str,
        _id: &str,
    ) -> Result<Option<stowage_core::Reservation>> {
        Err(stowage_core::Error::unsupported("TODO(issue-12)"))
    }

    async fn reservations(&self, _budget: &str) -> Result<Vec<stowage_core::Reservation>> {
        Err(stowage_core::Error::unsupported("TODO(issue-12)"))
    }

    const NAME: &'static str = "valkey";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.inner.durable,
            shared: true,
            distributed: self.inner.conn.is_cluster(),
            max_value_bytes: Capabilities::MAX_VALUE_BYTES,
            atomic_multi_budget: false,
        }
    }

    async fn initialize(&self) -> Result<()> {
        Scripts::load(self.conn()).await
    }

    /// Deletes every key of the namespace (`SCAN` with its key pattern, `UNLINK`). Nothing is
    /// cached in this process (the name index and the script cache live on the server), so
    /// every handle keeps working.
    async fn purge(&self) -> Result<()> {
        self.conn()
            .delete_matching("purge", &namespace_pattern(self.ns()))
            .await
    }

    async fn store(&self, row: NewRow<'_>) -> Result<()> {
        records::store(self.conn(), &self.inner.scripts, self.ns(), row).await
    }

    async fn store_idempotent(&self, row: NewRow<'_>, key: &str) -> Result<StoreResult> {
        records::store_idempotent(self.conn(), &self.inner.scripts, self.ns(), row, key).await
    }

    async fn query(&self, pattern: &Pattern, params: QueryParams) -> Result<Vec<StoredValue>> {
        records::query(self.conn(), self.ns(), pattern, params).await
    }

    async fn cleanup(&self, older_than: u64) -> Result<u64> {
        records::cleanup(self.conn(), &self.inner.scripts, self.ns(), older_than).await
    }

    async fn set_policy(&self, budget: &str, policy: &BudgetPolicy) -> Result<()> {
        let inner = &*self.inner;
        budget::set_policy(&inner.conn, &inner.scripts, &inner.options, budget, policy).await
    }

    async fn policy(&self, budget: &str) -> Result<Option<BudgetPolicy>> {
        budget::policy(self.conn(), self.ns(), budget).await
    }

    async fn delete_policy(&self, budget: &str) -> Result<bool> {
        let inner = &*self.inner;
        budget::delete_policy(&inner.conn, &inner.scripts, &inner.options, budget).await
    }

    async fn report_usage(&self, budget: &str, report: &UsageReport) -> Result<UsageReceipt> {
        let inner = &*self.inner;
        budget::report_usage(&inner.conn, &inner.scripts, &inner.options, budget, report).await
    }

    async fn usage(&self, budget: &str) -> Result<BudgetUsage> {
        let inner = &*self.inner;
        budget::usage(&inner.conn, &inner.scripts, &inner.options, budget).await
    }

    async fn reset_usage(&self, budget: &str) -> Result<()> {
        budget::reset_usage(self.conn(), self.ns(), budget).await
    }
}
