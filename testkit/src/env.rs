//! The environment knobs of tests, benchmarks and the CLI: which backends are required, numbers
//! that size scenarios, and the variables that name existing servers or server binaries.

/// Comma-separated backend names (or `all`) that must run: unavailable means failed, not skipped.
pub const REQUIRE_BACKENDS: &str = "STOWAGE_REQUIRE_BACKENDS";
/// Names an existing PostgreSQL server (`postgres://…`) instead of starting one.
pub const POSTGRES_URL: &str = "STOWAGE_POSTGRES_URL";
/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub const POSTGRES_BIN: &str = "STOWAGE_POSTGRES_BIN";
/// Names an existing standalone Valkey server (`valkey://…`) instead of starting one.
pub const VALKEY_URL: &str = "STOWAGE_VALKEY_URL";
/// Names an existing Valkey cluster (`valkey+cluster://h:p,h:p,…`) instead of starting one.
pub const VALKEY_CLUSTER_URL: &str = "STOWAGE_VALKEY_CLUSTER_URL";
/// The `valkey-server` binary to run.
pub const VALKEY_SERVER: &str = "STOWAGE_VALKEY_SERVER";

/// Whether `STOWAGE_REQUIRE_BACKENDS` (comma-separated, or `all`) names `backend`.
pub fn is_required(backend: &str) -> bool {
    std::env::var(REQUIRE_BACKENDS)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .any(|name| name == backend || name == "all")
        })
        .unwrap_or(false)
}

/// Reads a number from the environment, or `default`; a value that is not a number panics.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// The skip-or-require rule, written once: what `backend` needs (a URL, a server, a harness), or
/// `None` after printing why it is skipped; when `backend` is required (see [`is_required`]),
/// being unavailable panics instead, so a required backend never passes without running.
pub fn available<T>(backend: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(reason) if !is_required(backend) => {
            eprintln!("skipped: backend {backend} is unavailable: {reason}");
            None
        }
        Err(reason) => {
            panic!("backend {backend} is required ({REQUIRE_BACKENDS}) but unavailable: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_available_backend_is_returned() {
        assert_eq!(available("testkit-never-listed", Ok(3)), Some(3));
    }

    #[test]
    fn numbers_default_when_unset() {
        assert_eq!(env_number("STOWAGE_TESTKIT_NEVER_SET", 17), 17);
    }
}
