//! The conformance suite on PostgreSQL: a throwaway server (or `STOWAGE_POSTGRES_URL`).

use std::sync::Arc;

use stowage_conformance::servers::postgres;
use stowage_conformance::{Availability, Harness};
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_postgres::PostgresBackend;

struct PostgresHarness {
    url: String,
}

impl Harness for PostgresHarness {
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        Box::pin(async move {
            let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&self.url, options).await?);
            Ok(backend)
        })
    }
}

fn harness() -> Availability {
    let url = postgres::shared_url()?;
    Ok(Arc::new(PostgresHarness { url }))
}

stowage_conformance::conformance_tests!("postgres", harness());
