//! Records: append-only JSON values per record name, queried by pattern and time.

use serde::{Deserialize, Serialize};

use crate::{BoxFuture, Result, Value};

/// What `store_idempotent` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoreResult {
    /// The value was appended.
    Appended,
    /// The same (record, key) was stored before with an equal value and timestamp; nothing was stored.
    AlreadyExists,
}

/// One stored row, as `query` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredValue {
    /// The record the row belongs to.
    pub record_name: String,
    /// The value, byte-exact as stored.
    pub value: Value,
    /// The timestamp given to `store`.
    pub stored_at: u64,
}

/// Filters of a `query`; all optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryParams {
    /// Keep at most this many rows per record (newest first); `Some(0)` returns nothing.
    pub limit_per_record: Option<usize>,
    /// Keep rows with `stored_at >= start_time` (inclusive).
    pub start_time: Option<u64>,
    /// Keep rows with `stored_at <= end_time` (inclusive).
    pub end_time: Option<u64>,
}

impl QueryParams {
    /// No filters: every row of every matching record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `n` rows per record.
    pub fn limit_per_record(mut self, n: usize) -> Self {
        self.limit_per_record = Some(n);
        self
    }

    /// Keeps rows at or after `ms`.
    pub fn start_time(mut self, ms: u64) -> Self {
        self.start_time = Some(ms);
        self
    }

    /// Keeps rows at or before `ms`.
    pub fn end_time(mut self, ms: u64) -> Self {
        self.end_time = Some(ms);
        self
    }
}

/// Append-only storage of JSON values per record (SEMANTICS §2).
pub trait PersistenceBackend: Send + Sync {
    /// Appends `value` to `record_name` at `timestamp`; equal timestamps give separate rows.
    fn store<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
    ) -> BoxFuture<'a, Result<()>>;

    /// Appends once per (record, key): a repeat with equal value and timestamp is `AlreadyExists`, any difference `Conflict`.
    fn store_idempotent<'a>(
        &'a self,
        record_name: &'a str,
        value: &'a Value,
        timestamp: u64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<StoreResult>>;

    /// Rows of every record matching `record_pattern`, by name ascending, newest first within a record.
    fn query<'a>(
        &'a self,
        record_pattern: &'a str,
        params: QueryParams,
    ) -> BoxFuture<'a, Result<Vec<StoredValue>>>;

    /// Creates tables, schemas or scripts; harmless to repeat or to run from two processes at once.
    fn initialize(&self) -> BoxFuture<'_, Result<()>>;

    /// Deletes every row with `stored_at < older_than` and returns how many it deleted.
    fn cleanup(&self, older_than: u64) -> BoxFuture<'_, Result<u64>>;
}

/// Decides, for rows arriving ordered by record name, which to keep: rows of records the pattern
/// matches, at most `limit_per_record` of each. Backends that read rows in query order share it.
#[derive(Debug)]
pub struct RowSelector<'p> {
    pattern: &'p crate::raw::Pattern,
    limit_per_record: Option<usize>,
    /// The record of the last row seen: its name, whether it matches, rows kept so far.
    current: Option<(String, bool, usize)>,
}

impl<'p> RowSelector<'p> {
    /// A selector for one query.
    pub fn new(pattern: &'p crate::raw::Pattern, limit_per_record: Option<usize>) -> Self {
        RowSelector {
            pattern,
            limit_per_record,
            current: None,
        }
    }

    /// Whether the next row, of record `name`, belongs in the result.
    pub fn keep(&mut self, name: &str) -> bool {
        if self.current.as_ref().is_none_or(|(n, _, _)| n != name) {
            self.current = Some((name.to_owned(), self.pattern.matches(name), 0));
        }
        let (_, matches, kept) = self.current.as_mut().expect("set above");
        if !*matches || self.limit_per_record.is_some_and(|limit| *kept >= limit) {
            return false;
        }
        *kept += 1;
        true
    }
}

/// Parses a stored value of `record` read by `op`; anything undecodable is `Corruption`.
pub fn decode_value(op: &str, record: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        crate::Error::corruption(format!(
            "{op}: stored value of record {} cannot be decoded",
            crate::raw::show(record)
        ))
        .with_source(e)
    })
}

/// The answer to a repeated `store_idempotent`: the stored row's value text and time against the new ones.
pub fn idempotent_repeat<T: PartialEq>(
    op: &str,
    record: &str,
    key: &str,
    stored: (&str, T),
    new: (&str, T),
) -> Result<StoreResult> {
    if stored == new {
        Ok(StoreResult::AlreadyExists)
    } else {
        Err(crate::Error::idempotency_conflict(op, record, key))
    }
}
