//! `postgres://` URLs → pool and timeout settings plus sqlx connect options.

use std::time::Duration;

use stowage_core::raw::{show, UrlParams};
use stowage_core::{Error, Result};

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
    ///
    /// stowage's own parameters are `max_connections` (1..=2^32-1), `acquire_timeout_ms` and
    /// `operation_timeout_ms` (at least 1 ms each); they are checked here. Every other parameter
    /// follows PostgreSQL's rule: it belongs to the connection (libpq's parameters such as
    /// `sslmode`, `application_name`, `options[...]`) and is passed on to sqlx unchanged, which
    /// reads the ones it knows. sqlx 0.8 does not reject the others: it ignores them with a
    /// `tracing` warning (libpq would refuse them), so a misspelt connection parameter has no
    /// effect rather than failing the connect.
    pub fn from_url(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid_input(format!(
                "connect: {} is not a PostgreSQL URL (postgres://…)",
                show(url)
            )));
        }
        let (base, mut params) = UrlParams::parse(url)?;
        let max_connections = params
            .take_u64("max_connections", 1, u64::from(u32::MAX))?
            // In range: take_u64 checked it.
            .map_or(16, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let acquire_timeout = params
            .take_ms("acquire_timeout_ms")?
            .unwrap_or(Duration::from_millis(5_000));
        let operation_timeout = params
            .take_ms("operation_timeout_ms")?
            .unwrap_or(Duration::from_millis(30_000));
        let passed: Vec<String> = params
            .take_rest()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        params.finish()?;
        let url = if passed.is_empty() {
            base
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        Ok(PostgresConfig {
            url,
            max_connections,
            acquire_timeout,
            operation_timeout,
        })
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
            "postgres://h/db?operation_timeout_ms=0",
            "postgres://h/db?max_connections=1&max_connections=2",
            "mysql://h/db",
        ] {
            assert_eq!(
                PostgresConfig::from_url(url).unwrap_err().kind(),
                stowage_core::ErrorKind::InvalidInput,
                "{url}"
            );
        }
    }

    /// Parameters stowage does not know are PostgreSQL's: passed on, and sqlx ignores the ones it
    /// does not know either (it warns) rather than refusing them.
    #[test]
    fn unknown_parameters_go_to_sqlx_which_ignores_what_it_does_not_know() {
        let c = PostgresConfig::from_url("postgres://h/db?sslmode=disable&no_such_parameter=1")
            .unwrap();
        assert_eq!(c.url, "postgres://h/db?no_such_parameter=1&sslmode=disable");
        let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&c.url);
        assert!(options.is_ok());
    }
}
