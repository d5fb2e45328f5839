//! What one `report_usage` sends, and how keys and rows are encoded, for baselines, tools and
//! property tests. The key builders take the namespace as keys spell it: its registered id,
//! [`crate::ValkeyBackend::key_namespace`].
//!
//! Applications should use [`crate::ValkeyBackend`]; this lets a benchmark issue the very same
//! EVALSHA through the driver with nothing around it. This module only re-exports and wraps the
//! crate's own encodings; nothing in the crate depends on it.

use stowage_core::raw::decode_value;
use stowage_core::{Result, StoredValue};

pub use crate::keys::{budget_call_keys, record_call_keys};
pub use crate::keys::{NAMESPACE_IDS, NAMESPACE_NEXT};
pub use crate::scripts::{
    fingerprint_digest, report_usage_call, report_usage_call_in, REPORT_USAGE_LUA,
};

/// The member `store.lua` writes for one row: time, store order, key length, key, value.
pub fn encode_row(stored_at: u64, seq: u64, key: &str, value: &str) -> String {
    crate::rows::encode_row(stored_at, seq, key, value)
}

/// Decodes a row member of `record`; anything malformed is `Corruption`.
pub fn decode_row(record: &str, member: &[u8]) -> Result<StoredValue> {
    let op = "query";
    let (stored_at, text) = crate::rows::split_member(op, record, member)?;
    Ok(StoredValue {
        record_name: record.to_owned(),
        value: decode_value(op, record, text)?,
        stored_at,
    })
}

/// A budget's reservation keys: the reservations hash, the held sorted set and the pending hash
/// (see `holds.lua`); `namespace` is its id.
pub fn budget_hold_keys(namespace: &str, budget: &str) -> [String; 3] {
    let keys = crate::keys::budget_keys(namespace, budget);
    [keys.reservations, keys.held, keys.pending]
}

/// The namespace's name index (a sorted set of its record names); `namespace` is its id.
pub fn name_index_key(namespace: &str) -> String {
    crate::keys::name_index(namespace)
}
