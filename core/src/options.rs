//! Options every backend accepts when it is connected.

use std::fmt;
use std::sync::Arc;

use crate::{Clock, Error, Result, SystemClock};

use crate::raw::show;

/// How long a dedup record stays live by default: 24 hours.
pub const DEFAULT_DEDUP_TTL_MS: u64 = 86_400_000;

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Options for `connect_with`; `Default` plus builder methods.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Isolates the data of several users of one server; `None` means [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
    /// Where "now" comes from; `None` means [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
    /// How long dedup records stay live; `None` means [`DEFAULT_DEDUP_TTL_MS`].
    pub dedup_ttl_ms: Option<u64>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("namespace", &self.namespace)
            .field("clock", &self.clock.as_ref().map(|_| "<custom>"))
            .field("dedup_ttl_ms", &self.dedup_ttl_ms)
            .finish()
    }
}

impl ConnectOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `namespace` to isolate this user's data.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Reads "now" from `clock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps dedup records live for `ms` milliseconds.
    pub fn dedup_ttl_ms(mut self, ms: u64) -> Self {
        self.dedup_ttl_ms = Some(ms);
        self
    }

    /// Validates the options and fills in the defaults.
    pub fn resolve(&self) -> Result<ResolvedOptions> {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        crate::raw::validate::name("connect", "namespace", &namespace)?;
        let dedup_ttl_ms = self.dedup_ttl_ms.unwrap_or(DEFAULT_DEDUP_TTL_MS);
        if dedup_ttl_ms == 0 || dedup_ttl_ms > crate::MAX_AMOUNT {
            return Err(Error::invalid_input(format!(
                "connect: dedup_ttl_ms {dedup_ttl_ms} is out of range 1..={}",
                crate::MAX_AMOUNT
            )));
        }
        let clock = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        Ok(ResolvedOptions {
            namespace,
            clock,
            dedup_ttl_ms,
        })
    }
}

/// Options with defaults filled in and validated; what a backend keeps.
#[derive(Clone)]
pub struct ResolvedOptions {
    /// The namespace (valid name).
    pub namespace: String,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Dedup TTL in milliseconds, `1..=MAX_AMOUNT`.
    pub dedup_ttl_ms: u64,
}

impl fmt::Debug for ResolvedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedOptions")
            .field("namespace", &self.namespace)
            .field("dedup_ttl_ms", &self.dedup_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl ResolvedOptions {
    /// Reads the clock for operation `op`; a time above `MAX_AMOUNT` is `InvalidInput`.
    pub fn now(&self, op: &str) -> Result<u64> {
        let now = self.clock.now_ms();
        if now > crate::MAX_AMOUNT {
            return Err(Error::invalid_input(format!(
                "{op}: the clock reads {now}, above MAX_AMOUNT; namespace {}",
                show(&self.namespace)
            )));
        }
        Ok(now)
    }
}
