//! The Valkey ceiling measured by `redis-benchmark` in the same run: `-c 50` clients sending
//! EVALSHA of stowage's own `report_usage` script with exactly the keys and arguments stowage
//! sends for a fresh-key report (built by `stowage_valkey::raw::report_usage_call`), the dedup
//! key made fresh per request by `-r` and `__rand_int__`.
//!
//! `benches/benches/budget.rs` records it as the criterion entry
//! `report_usage/50_callers_valkey/redis-benchmark`, whose time per operation is derived from
//! the requests per second redis-benchmark prints (`iters / rps`), so `scripts/bench-table` shows
//! it beside stowage's own 50 callers.

use std::process::Command;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use stowage::DEFAULT_DEDUP_TTL_MS;
use stowage_valkey::raw::report_usage_call;

/// Where redis-benchmark is expected.
pub const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";

/// The placeholder redis-benchmark replaces by a random 12-digit number per request (`-r`).
const RANDOM: &str = "__rand_int__";

/// Requests per redis-benchmark run at least, so its ramp-up and the 50 connects do not dominate.
pub const MIN_REQUESTS: u64 = 5_000;

/// A prepared `redis-benchmark` command line.
#[derive(Debug, Clone)]
pub struct RedisBenchmark {
    /// Everything after the program name except `-n`.
    args: Vec<String>,
}

impl RedisBenchmark {
    /// Prepares a namespace on the standalone server `url` (its budgets' policies set through
    /// stowage, the script loaded) and the command line for `clients` clients; `None`, with the
    /// reason printed, when redis-benchmark is absent or the call cannot be expressed on a
    /// command line.
    pub async fn prepare(url: &str, clients: u32) -> Option<RedisBenchmark> {
        if !std::path::Path::new(REDIS_BENCHMARK).exists() {
            eprintln!("redis-benchmark ceiling skipped: {REDIS_BENCHMARK} is absent");
            return None;
        }
        let url = url.replacen("valkey://", "redis://", 1);
        let info = url.as_str().into_connection_info().expect("a Valkey URL");
        let ConnectionAddr::Tcp(host, port) = &info.addr else {
            eprintln!("redis-benchmark ceiling skipped: {url} is not a plain TCP address");
            return None;
        };
        // The raw baseline's setup: a namespace with the benchmarks' policies, the script loaded.
        let raw = crate::raw::RawValkey::start(&url).await;
        // The benchmarks' own report; the key's placeholder has the length of what replaces it.
        let report = crate::gateway_report(format!("ceil-{RANDOM}"));
        // The keys spell the namespace by its registered id, as the backend's calls do (key
        // layout 2): with the name instead, the call would meet no policy and take a cheaper path.
        let (keys, args) = report_usage_call(
            raw.key_namespace(),
            crate::BUDGET,
            &report,
            stowage::Clock::now_ms(&stowage::SystemClock),
            DEFAULT_DEDUP_TTL_MS,
        );
        if !keys.iter().any(|k| k.contains(RANDOM)) {
            eprintln!(
                "redis-benchmark ceiling skipped: the dedup key does not appear verbatim in the \
                 call's keys, so `{RANDOM}` cannot make it fresh"
            );
            return None;
        }
        if keys.iter().chain(&args).any(|a| a.contains('\0')) {
            eprintln!("redis-benchmark ceiling skipped: the call holds a NUL byte");
            return None;
        }
        let mut line: Vec<String> = vec![
            "-h".into(),
            host.clone(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            clients.to_string(),
            "-r".into(),
            "1000000000000".into(),
            "--csv".into(),
        ];
        if let Some(password) = &info.redis.password {
            line.extend(["-a".into(), password.clone()]);
        }
        if let Some(user) = &info.redis.username {
            line.extend(["--user".into(), user.clone()]);
        }
        if info.redis.db != 0 {
            line.extend(["--dbnum".into(), info.redis.db.to_string()]);
        }
        line.extend([
            "EVALSHA".into(),
            raw.sha().to_owned(),
            keys.len().to_string(),
        ]);
        line.extend(keys);
        line.extend(args);
        Some(RedisBenchmark { args: line })
    }

    /// The command line (for BENCHMARKS.md), with `-n requests`.
    pub fn command_line(&self, requests: u64) -> String {
        let mut out = format!("{REDIS_BENCHMARK} -n {requests}");
        for arg in &self.args {
            out.push(' ');
            out.push_str(arg);
        }
        out
    }

    /// Runs `requests` requests; the requests per second redis-benchmark reports.
    pub fn run(&self, requests: u64) -> f64 {
        let out = Command::new(REDIS_BENCHMARK)
            .arg("-n")
            .arg(requests.to_string())
            .args(&self.args)
            .output()
            .expect("run redis-benchmark");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-benchmark failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rps(&stdout)
            .unwrap_or_else(|| panic!("no requests/s in redis-benchmark's output: {stdout}"))
    }

    /// The time `iters` requests take at the rate of a run of `max(iters, MIN_REQUESTS)`.
    pub fn time(&self, iters: u64) -> Duration {
        let rate = self.run(iters.max(MIN_REQUESTS));
        Duration::from_secs_f64(u64_f64(iters) / rate)
    }
}

/// `u64` → `f64` for a request count (below 2^53 here).
fn u64_f64(n: u64) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The `rps` column of redis-benchmark's `--csv` output (header `"test","rps",…`, one line per test).
fn rps(csv: &str) -> Option<f64> {
    let line = csv
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.contains(','))?;
    let field = line.split("\",\"").nth(1)?;
    field.trim_matches('"').parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rate_is_read_from_the_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                   \"EVALSHA abc 1 k\",\"29585.80\",\"1.650\",\"0.300\"\n";
        assert_eq!(super::rps(csv), Some(29585.80));
    }
}
