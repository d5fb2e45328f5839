//! The PostgreSQL harness shared by this crate's test files.

use std::sync::Arc;

use stowage_conformance::servers::postgres;
use stowage_conformance::{Availability, Harness};
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_postgres::PostgresBackend;

/// A harness that opens backends on `url`.
pub fn postgres_harness(url: String) -> Arc<dyn Harness> {
    Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move {
                let backend: Arc<dyn Backend> =
                    Arc::new(PostgresBackend::open(&url, options).await?);
                Ok(backend)
            })
        },
    )
}

/// The shared server's URL, or why there is none (a failure when postgres is required).
#[allow(dead_code)]
pub fn shared_url() -> Option<String> {
    match postgres::shared_url() {
        Ok(url) => Some(url),
        Err(reason) if !stowage_conformance::is_required("postgres") => {
            eprintln!("skipped: postgres is unavailable: {reason}");
            None
        }
        Err(reason) => {
            panic!("postgres is required (STOWAGE_REQUIRE_BACKENDS) but unavailable: {reason}")
        }
    }
}

/// The harness on the shared server.
#[allow(dead_code)]
pub fn availability() -> Availability {
    Ok(postgres_harness(postgres::shared_url()?))
}
