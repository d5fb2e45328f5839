//! `postgres://` URLs → pool and timeout settings plus sqlx connect options.

use std::time::Duration;

use stowage_core::{Error, Result};

use stowage_core::raw::show;

/// URL parameters stowage reads itself (the rest go to sqlx/libpq semantics).
const OWN_PARAMETERS: &[&str] = &[
    "max_connections",
    "acquire_timeout_ms",
    "operation_timeout_ms",
];

/// Settings of one PostgreSQL backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The URL handed to sqlx, without stowage's own parameters.
    pub url: String,
    /// Pool size (`max_connections`, default 16).
    pub max_connections: u32,
    /// How long to wait for a pooled connection (`acquire_timeout_ms`, default 5000).
    pub acquire_timeout: Duration,
    /// Upper bound of one operation, retries included (`operation_timeout_ms`, default 30000); past it the call is `Unavailable`.
    pub operation_timeout: Duration,
}

impl PostgresConfig {
    /// The server-side `statement_timeout` and `lock_timeout` of every session: two fifths of
    /// the operation timeout (at least 1 ms).
    ///
    /// A statement starts only while at least half of the operation timeout remains
    /// ([`PostgresConfig::start_margin`]), so the server gives up any statement at least a tenth
    /// of the operation timeout before the client would: a call that answered `Unavailable`
    /// because of its timeout is never applied later.
    pub fn statement_timeout(&self) -> Duration {
        (self.operation_timeout * 2 / 5).max(Duration::from_millis(1))
    }

    /// How much of the operation timeout must remain for a statement to be sent: half of it.
    pub fn start_margin(&self) -> Duration {
        self.operation_timeout / 2
    }

    /// Parses `postgres://user@host:port/db?max_connections=32&acquire_timeout_ms=2000&…`.
    pub fn from_url(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid_input(format!(
                "connect: {} is not a PostgreSQL URL (postgres://…)",
                show(url)
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut config = PostgresConfig {
            url: base.to_owned(),
            max_connections: 16,
            acquire_timeout: Duration::from_millis(5_000),
            operation_timeout: Duration::from_millis(30_000),
        };
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !OWN_PARAMETERS.contains(&key) {
                passed.push(pair);
                continue;
            }
            let number: u64 = value.parse().map_err(|_| {
                Error::invalid_input(format!(
                    "connect: URL parameter {key}={} is not a whole number",
                    show(value)
                ))
            })?;
            let small = || {
                u32::try_from(number).map_err(|_| {
                    Error::invalid_input(format!(
                        "connect: URL parameter {key}={number} is too large"
                    ))
                })
            };
            match key {
                "max_connections" => config.max_connections = small()?,
                "acquire_timeout_ms" => config.acquire_timeout = Duration::from_millis(number),
                _ => config.operation_timeout = Duration::from_millis(number),
            }
        }
        if config.max_connections == 0 {
            return Err(Error::invalid_input(
                "connect: URL parameter max_connections=0; the pool needs at least one connection",
            ));
        }
        if !passed.is_empty() {
            config.url = format!("{base}?{}", passed.join("&"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_read_and_others_passed_on() {
        let c = PostgresConfig::from_url(
            "postgres://u@h:5/db?max_connections=32&sslmode=disable&operation_timeout_ms=900",
        )
        .unwrap();
        assert_eq!(c.max_connections, 32);
        assert_eq!(c.operation_timeout, Duration::from_millis(900));
        assert_eq!(c.url, "postgres://u@h:5/db?sslmode=disable");
        assert_eq!(c.statement_timeout(), Duration::from_millis(360));
        assert_eq!(c.start_margin(), Duration::from_millis(450));
        assert!(c.statement_timeout() < c.start_margin());
    }

    #[test]
    fn bad_parameters_are_invalid_input() {
        for url in [
            "postgres://h/db?max_connections=x",
            "postgres://h/db?max_connections=0",
            "postgres://h/db?max_connections=99999999999",
            "mysql://h/db",
        ] {
            assert_eq!(
                PostgresConfig::from_url(url).unwrap_err().kind(),
                stowage_core::ErrorKind::InvalidInput,
                "{url}"
            );
        }
    }
}
