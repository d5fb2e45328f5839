//! The SQLite harness shared by this crate's test files.

use std::sync::Arc;

use stowage_conformance::Harness;
use stowage_core::{Backend, BoxFuture, ConnectOptions, PersistenceBackend, Result};
use stowage_sqlite::SqliteBackend;

/// A harness that opens (and initializes, as `stowage::connect` does) backends on `url`.
#[allow(dead_code)]
pub fn sqlite_harness(url: String) -> Arc<dyn Harness> {
    Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move {
                let backend = SqliteBackend::open(&url, options).await?;
                backend.initialize().await?;
                let backend: Arc<dyn Backend> = Arc::new(backend);
                Ok(backend)
            })
        },
    )
}

/// A fresh database file in this test target's temp dir (left-overs of an earlier run removed).
#[allow(dead_code)]
pub fn fresh_file_url(name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}
