//! What one `report_usage` sends, for baselines and tools: the script, its keys and arguments.
//!
//! Applications should use [`crate::ValkeyBackend`]; this lets a benchmark issue the very same
//! EVALSHA through the driver with nothing around it.

use stowage_core::UsageReport;

use stowage_core::raw::{dedup_expiry, dedup_fingerprint};

use crate::keys;

/// The Lua source of `report_usage`.
pub const REPORT_USAGE_LUA: &str = include_str!("../scripts/report_usage.lua");

/// The keys and arguments of one `report_usage` call, in the order the script reads them: a
/// record written by this call expires at `dedup_expiry(now, dedup_ttl_ms)`, passed as a decimal.
pub fn report_usage_call(
    namespace: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
    dedup_ttl_ms: u64,
) -> (Vec<String>, Vec<String>) {
    let budget_keys = keys::budget_keys(namespace, budget);
    let mut call_keys = vec![budget_keys.counters, budget_keys.policy];
    if let Some(key) = &report.dedup_key {
        call_keys.push(keys::dedup_key(namespace, budget, key));
    }
    let gc_ms = dedup_ttl_ms
        .saturating_mul(2)
        .saturating_add(crate::backend::DEDUP_GC_MARGIN_MS)
        .min(crate::backend::MAX_DEDUP_GC_MS);
    let mut args = vec![
        now.to_string(),
        dedup_expiry(now, dedup_ttl_ms).to_string(),
        report
            .dedup_key
            .as_ref()
            .map(|_| dedup_fingerprint(report))
            .unwrap_or_default(),
        gc_ms.to_string(),
        report.dimensions.len().to_string(),
    ];
    args.extend(report.dimensions.keys().cloned());
    args.extend(report.dimensions.values().map(u64::to_string));
    (call_keys, args)
}

/// Every key a budget call touches (counters, policy, and the dedup record when `dedup_key` is given).
pub fn budget_call_keys(namespace: &str, budget: &str, dedup_key: Option<&str>) -> Vec<String> {
    let k = keys::budget_keys(namespace, budget);
    let mut all = vec![k.counters, k.policy];
    if let Some(key) = dedup_key {
        all.push(keys::dedup_key(namespace, budget, key));
    }
    all
}

/// Every key a record call touches (rows, store-order counter, idempotency keys).
pub fn record_call_keys(namespace: &str, record: &str) -> Vec<String> {
    let k = keys::record_keys(namespace, record);
    vec![k.rows, k.seq, k.idempotency]
}

/// The member `store.lua` writes for one row: time, store order, key length, key, value.
pub fn encode_row(stored_at: u64, seq: u64, key: &str, value: &str) -> String {
    format!(
        "{}{seq:016x}{:08x}{key}{value}",
        crate::records::time_hex(stored_at),
        key.len()
    )
}

/// Decodes a row member of `record`; anything malformed is `Corruption`.
pub fn decode_row(record: &str, member: &[u8]) -> stowage_core::Result<stowage_core::StoredValue> {
    crate::records::decode_member("query", record, member)
}

/// The namespace's name index (a sorted set of its record names).
pub fn name_index_key(namespace: &str) -> String {
    keys::name_index(namespace)
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_without_an_expiry_live_the_default_ttl() {
        let line = format!(
            "local LEGACY_TTL = '{}'",
            stowage_core::DEFAULT_DEDUP_TTL_MS
        );
        assert!(super::REPORT_USAGE_LUA.contains(&line));
    }
}
