//! The Lua scripts (`scripts/*.lua`): their sources, their loading, and how each is invoked.
//!
//! Every call runs by EVALSHA; a server that lost its script cache (restart, `SCRIPT FLUSH`)
//! answers NOSCRIPT and the driver reloads the script and repeats the call, so loading at
//! `initialize` only saves that first round trip.

use redis::{Script, ScriptInvocation};
use stowage_core::raw::{dedup_expiry, dedup_fingerprint, NewRow};
use stowage_core::{Result, UsageReport, WindowBounds};

use crate::connection::Connection;
use crate::keys;
use crate::rows::time_hex;

/// The Lua source of `report_usage` (after `holds.lua`, the functions it counts holds with).
pub const REPORT_USAGE_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/report_usage.lua")
);
/// The Lua source of `set_policy`.
const SET_POLICY_LUA: &str = include_str!("../scripts/set_policy.lua");
/// The Lua source of `usage`.
const USAGE_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/usage.lua")
);
/// The Lua source of `reserve` and `reserve_all`.
const RESERVE_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/lib.lua"),
    include_str!("../scripts/reserve.lua")
);
/// The Lua source of `commit` and `commit_all`.
const COMMIT_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/lib.lua"),
    include_str!("../scripts/commit.lua")
);
/// The Lua source of `release` and `release_all`.
const RELEASE_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/lib.lua"),
    include_str!("../scripts/release.lua")
);
/// The Lua source of `report_usage_all`.
const REPORT_ALL_LUA: &str = concat!(
    include_str!("../scripts/holds.lua"),
    include_str!("../scripts/lib.lua"),
    include_str!("../scripts/report_all.lua")
);
/// The Lua source of `store` and `store_idempotent`.
const STORE_LUA: &str = include_str!("../scripts/store.lua");
/// The Lua source of one `cleanup` batch of one record.
const CLEANUP_LUA: &str = include_str!("../scripts/cleanup.lua");

/// Server-side expiry of dedup records beyond their TTL: they only garbage-collect, with this margin.
pub(crate) const DEDUP_GC_MARGIN_MS: u64 = 3_600_000;
/// The longest server-side expiry set (about 31,700 years): `PEXPIRE` refuses times that would
/// pass `i64::MAX` once added to the server's clock, and a refusal after the writes would be too late.
pub(crate) const MAX_DEDUP_GC_MS: u64 = 1_000_000_000_000_000;

/// Every script source, in the order `Scripts::load` loads them.
const SOURCES: [&str; 9] = [
    REPORT_USAGE_LUA,
    SET_POLICY_LUA,
    USAGE_LUA,
    STORE_LUA,
    CLEANUP_LUA,
    RESERVE_LUA,
    COMMIT_LUA,
    RELEASE_LUA,
    REPORT_ALL_LUA,
];

/// The largest bulk string a client that has not authenticated yet may send: a longer `SCRIPT
/// LOAD` would fail with a protocol error instead of the authentication error it should meet.
const MAX_UNAUTHENTICATED_BULK: usize = 16 * 1024;

/// A script as sent: without comment lines, blank lines and indentation (the scripts hold no
/// multi-line strings), so that every one stays below [`MAX_UNAUTHENTICATED_BULK`].
fn sent(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines().map(str::trim) {
        if !line.is_empty() && !line.starts_with("--") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// The sources as sent, in the order of [`SOURCES`].
    sources: Vec<String>,
    report: Script,
    set_policy: Script,
    usage: Script,
    store: Script,
    cleanup: Script,
    reserve: Script,
    commit: Script,
    release: Script,
    report_all: Script,
}

/// Which reservation script a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReservationScript {
    /// `reserve.lua`.
    Reserve,
    /// `commit.lua`.
    Commit,
    /// `release.lua`.
    Release,
    /// `report_all.lua`.
    ReportAll,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let sources: Vec<String> = SOURCES.iter().map(|s| sent(s)).collect();
        debug_assert!(sources.iter().all(|s| s.len() < MAX_UNAUTHENTICATED_BULK));
        let script = |i: usize| Script::new(&sources[i]);
        Scripts {
            report: script(0),
            set_policy: script(1),
            usage: script(2),
            store: script(3),
            cleanup: script(4),
            reserve: script(5),
            commit: script(6),
            release: script(7),
            report_all: script(8),
            sources,
        }
    }

    /// `SCRIPT LOAD`s every script on the server, or on every primary of a cluster (the driver
    /// sends `SCRIPT LOAD` to all of them).
    pub(crate) async fn load(&self, conn: &Connection) -> Result<()> {
        for source in &self.sources {
            let _: redis::Value = conn
                .run("initialize", redis::cmd("SCRIPT").arg("LOAD").arg(source))
                .await?;
        }
        Ok(())
    }

    /// One `report_usage` call: `(status, breaches or detail)`.
    pub(crate) async fn report(
        &self,
        conn: &Connection,
        call: (Vec<String>, Vec<String>),
    ) -> Result<(String, String)> {
        conn.script("report_usage", &self.report_invocation(call))
            .await
    }

    /// The EVALSHA of one `report_usage` call, from the keys and arguments of
    /// [`report_usage_call_in`]: what [`Scripts::report`] sends, and each item of a batch.
    pub(crate) fn report_invocation(
        &self,
        (call_keys, args): (Vec<String>, Vec<String>),
    ) -> ScriptInvocation<'_> {
        let mut call: ScriptInvocation<'_> = self.report.prepare_invoke();
        for key in call_keys {
            call.key(key);
        }
        for arg in args {
            call.arg(arg);
        }
        call
    }

    /// The `report_usage` script, for a pipeline that loads it (`SCRIPT LOAD`) before its calls.
    pub(crate) fn report_script(&self) -> &Script {
        &self.report
    }

    /// `SCRIPT LOAD`s the `report_usage` script (on every primary of a cluster), after a server
    /// answered NOSCRIPT to a pipelined call.
    pub(crate) async fn load_report(&self, conn: &Connection, op: &str) -> Result<()> {
        let _: redis::Value = conn
            .run(op, redis::cmd("SCRIPT").arg("LOAD").arg(&self.sources[0]))
            .await?;
        Ok(())
    }

    /// Replaces (`limits` given) or removes the policy of the budget `keys`, with the window
    /// change: `change` is now, the new window's spec (`""`: none) and bounds (`""` when they
    /// cannot be computed), and the old spec the client checked (see `set_policy.lua`).
    /// Answers `(status, existed)`.
    pub(crate) async fn set_policy<'a>(
        &self,
        conn: &Connection,
        op: &str,
        keys: &keys::BudgetKeys,
        change: [&str; 5],
        limits: Option<impl Iterator<Item = (&'a str, String, String)>>,
    ) -> Result<(String, String)> {
        let mut call = self.set_policy.prepare_invoke();
        call.key(&keys.policy).key(&keys.counters).key(&keys.window);
        for arg in change {
            call.arg(arg);
        }
        call.arg(if limits.is_some() { "set" } else { "delete" });
        for (dimension, soft, hard) in limits.into_iter().flatten() {
            call.arg(dimension).arg(soft).arg(hard);
        }
        conn.script(op, &call).await
    }

    /// What `usage` needs: policy window spec, stored window (spec, start, end), the number of
    /// counter fields, counters as dimension, value pairs, then pending pairs at `now`.
    pub(crate) async fn usage(
        &self,
        conn: &Connection,
        keys: &keys::BudgetKeys,
        now: u64,
    ) -> Result<Vec<String>> {
        let mut call = self.usage.prepare_invoke();
        call.key(&keys.counters)
            .key(&keys.policy)
            .key(&keys.window)
            .key(&keys.reservations)
            .key(&keys.held)
            .key(&keys.pending)
            .arg(now.to_string());
        conn.script("usage", &call).await
    }

    /// One reservation script call over the budgets of `keys` (in name order): answers the
    /// script's flat list of strings.
    pub(crate) async fn reservation(
        &self,
        conn: &Connection,
        op: &str,
        script: ReservationScript,
        keys: &[keys::BudgetKeys],
        args: &[String],
    ) -> Result<Vec<String>> {
        let script = match script {
            ReservationScript::Reserve => &self.reserve,
            ReservationScript::Commit => &self.commit,
            ReservationScript::Release => &self.release,
            ReservationScript::ReportAll => &self.report_all,
        };
        let mut call = script.prepare_invoke();
        for budget in keys {
            for key in budget.reservation_keys() {
                call.key(key);
            }
        }
        for arg in args {
            call.arg(arg);
        }
        conn.script(op, &call).await
    }

    /// Appends `row` (`key` is `""` for a plain store); `index` is the name index the script
    /// lists the record in (standalone), or `None` when the caller listed it (cluster).
    /// Answers `appended`, `exists` or `conflict`.
    pub(crate) async fn store(
        &self,
        conn: &Connection,
        op: &str,
        record_keys: &keys::RecordKeys,
        index: Option<&str>,
        row: &NewRow<'_>,
        key: &str,
    ) -> Result<String> {
        let mut call = self.store.prepare_invoke();
        call.key(&record_keys.rows)
            .key(&record_keys.seq)
            .key(&record_keys.idempotency)
            .arg(time_hex(row.stored_at))
            .arg(&row.text)
            .arg(key);
        if let Some(index) = index {
            call.key(index).arg(row.record);
        }
        conn.script(op, &call).await
    }

    /// Deletes at most `batch` rows of one record below `bound` (a `ZRANGEBYLEX` maximum);
    /// answers how many it deleted.
    pub(crate) async fn cleanup(
        &self,
        conn: &Connection,
        record_keys: &keys::RecordKeys,
        bound: &str,
        batch: usize,
    ) -> Result<u64> {
        let mut call = self.cleanup.prepare_invoke();
        call.key(&record_keys.rows)
            .key(&record_keys.idempotency)
            .arg(bound)
            .arg(batch);
        conn.script("cleanup", &call).await
    }
}

/// What a dedup record stores of its report: [`dedup_fingerprint`], 22 digits (kept under
/// this name for the benches and tests that spell it).
pub fn fingerprint_digest(report: &UsageReport) -> String {
    dedup_fingerprint(report)
}

/// The keys and arguments of one `report_usage` call, in the order the script reads them: a
/// record written by this call expires at `dedup_expiry(now, dedup_ttl_ms)`, passed as a decimal.
/// Brings no window bounds: on a windowed budget whose stored window has passed, the script
/// answers `window` (see [`report_usage_call_in`]).
pub fn report_usage_call(
    namespace: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
    dedup_ttl_ms: u64,
) -> (Vec<String>, Vec<String>) {
    report_usage_call_in(namespace, budget, report, now, dedup_ttl_ms, None)
}

/// [`report_usage_call`] bringing the window containing `now` for a window spec, as the script
/// asks for it after a rollover.
pub fn report_usage_call_in(
    namespace: &str,
    budget: &str,
    report: &UsageReport,
    now: u64,
    dedup_ttl_ms: u64,
    window: Option<(&str, WindowBounds)>,
) -> (Vec<String>, Vec<String>) {
    let mut call_keys = keys::budget_call_keys(namespace, budget, report.dedup_key.as_deref());
    let holds = keys::budget_keys(namespace, budget);
    call_keys.extend([holds.reservations, holds.held, holds.pending]);
    let gc_ms = dedup_ttl_ms
        .saturating_mul(2)
        .saturating_add(DEDUP_GC_MARGIN_MS)
        .min(MAX_DEDUP_GC_MS);
    let mut args = vec![
        now.to_string(),
        dedup_expiry(now, dedup_ttl_ms).to_string(),
        report
            .dedup_key
            .as_ref()
            .map(|_| fingerprint_digest(report))
            .unwrap_or_default(),
        gc_ms.to_string(),
        report.dimensions.len().to_string(),
    ];
    args.extend(report.dimensions.keys().cloned());
    args.extend(report.dimensions.values().map(u64::to_string));
    if let Some((spec, bounds)) = window {
        args.push(spec.to_owned());
        args.push(bounds.start_ms.to_string());
        args.push(bounds.end_ms.to_string());
    }
    (call_keys, args)
}

#[cfg(test)]
mod tests {
    use stowage_core::UsageReport;

    #[test]
    fn fingerprint_digests_are_fixed_size_and_tell_reports_apart() {
        let a = super::fingerprint_digest(&UsageReport::new().add("t", 1).dedup_key("k"));
        let b = super::fingerprint_digest(&UsageReport::new().add("t", 2).dedup_key("k"));
        let c = super::fingerprint_digest(&UsageReport::new().add("t", 1).dedup_key("other"));
        assert_eq!(a.len(), stowage_core::raw::FINGERPRINT_LEN);
        assert_eq!(b.len(), stowage_core::raw::FINGERPRINT_LEN);
        assert_ne!(a, b);
        assert_eq!(a, c, "the key is not part of the fingerprint");
        assert!(a
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_'));
        // SHA-256("v1;1:t=1"), its first 16 bytes in base64url.
        assert_eq!(
            super::fingerprint_digest(&UsageReport::new().add("t", 1)),
            expected_digest("v1;1:t=1")
        );
    }

    #[test]
    fn the_script_reads_digests_of_the_length_written() {
        let line = format!("local DIGEST = {}", stowage_core::raw::FINGERPRINT_LEN);
        assert!(super::REPORT_USAGE_LUA.contains(&line));
    }

    /// An independent base64url of the first 16 bytes of SHA-256, from the bytes' bits.
    fn expected_digest(text: &str) -> String {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(text.as_bytes());
        let mut bits = String::new();
        for b in &hash[..16] {
            bits.push_str(&format!("{b:08b}"));
        }
        bits.push_str("0000");
        let digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        bits.as_bytes()
            .chunks(6)
            .map(|c| {
                let v = usize::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap();
                char::from(digits.as_bytes()[v])
            })
            .collect()
    }

    #[test]
    fn every_script_as_sent_fits_an_unauthenticated_bulk() {
        for source in super::SOURCES {
            let sent = super::sent(source);
            assert!(
                sent.len() < super::MAX_UNAUTHENTICATED_BULK,
                "{}",
                sent.len()
            );
            assert!(!sent.contains("\n--"));
        }
    }
}
