//! What `stowage bench` measured, per backend and operation: the table, results.json and the chart read it.

use serde::Serialize;

/// The operations of the workload, in table order (`batch`: one `report_usage_batch` call of
/// `--mix batch`, whose reports are counted under `report`).
pub const OPS: [&str; 5] = ["report", "replay", "store", "query", "batch"];

/// One backend × operation line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    /// The operation.
    pub op: &'static str,
    /// Completed operations.
    pub count: u64,
    /// Operations per second.
    pub ops_per_sec: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Failed operations.
    pub errors: u64,
}

/// One backend's results.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    /// Its name in the table.
    pub name: String,
    /// Per operation.
    pub ops: Vec<OpStats>,
}
