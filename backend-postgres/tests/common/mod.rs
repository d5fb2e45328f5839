//! The PostgreSQL harness shared by this crate's test files.

use std::sync::Arc;

use stowage_conformance::servers::postgres;
use stowage_conformance::{Availability, Harness};
use stowage_core::raw::connect_with_drivers;
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};

/// A harness that opens and initializes backends on `url` (as `stowage::connect` does).
pub fn postgres_harness(url: String) -> Arc<dyn Harness> {
    Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move {
                connect_with_drivers(&[stowage_postgres::DRIVER], &url, options).await
            })
        },
    )
}

/// The shared server's URL, or why there is none (a failure when postgres is required).
#[allow(dead_code)]
pub fn shared_url() -> Option<String> {
    stowage_testkit::available("postgres", postgres::shared_url())
}

/// The harness on the shared server.
#[allow(dead_code)]
pub fn availability() -> Availability {
    Ok(postgres_harness(postgres::shared_url()?))
}

/// A throwaway server of this test's own (never `STOWAGE_POSTGRES_URL`: the test stops, restarts
/// or configures it), or why there is none: a failure when postgres is required.
#[allow(dead_code)]
pub fn own_server(settings: postgres::PostgresSettings) -> Option<postgres::PostgresServer> {
    stowage_testkit::available(
        "postgres",
        postgres::PostgresServer::start(settings)
            .map_err(|reason| format!("cannot start a server of this test's own: {reason}")),
    )
}

/// `url` with `param` (`key=value`) appended to its query string.
#[allow(dead_code)]
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// `url` connecting as `user` (without password) instead of its own user.
#[allow(dead_code)]
pub fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

/// The shared server's URL behind a round-trip-counting proxy (one connection), and the counter.
#[allow(dead_code)]
pub async fn proxied() -> Option<(String, Arc<stowage_conformance::round_trips::RoundTrips>)> {
    let url = shared_url()?;
    let server_port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the URL names a port");
    let (turns, port) = stowage_conformance::round_trips::RoundTrips::proxy(server_port).await;
    Some((
        format!("postgres://stowage@127.0.0.1:{port}/postgres?max_connections=1"),
        turns,
    ))
}
