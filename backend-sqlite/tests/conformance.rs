//! The conformance suite on SQLite: a shared file (several connections, namespaces) and `sqlite::memory:`.

use std::path::PathBuf;
use std::sync::Arc;

use stowage_conformance::{Availability, Harness};
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_sqlite::SqliteBackend;

/// Opens backends on one URL; `initialize` runs on every open, as `stowage::connect` does.
struct SqliteHarness {
    url: String,
}

impl Harness for SqliteHarness {
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        Box::pin(async move {
            let backend = SqliteBackend::open(&self.url, options).await?;
            stowage_core::PersistenceBackend::initialize(&backend).await?;
            let backend: Arc<dyn Backend> = Arc::new(backend);
            Ok(backend)
        })
    }
}

fn file_harness() -> Availability {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("conformance-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(Arc::new(SqliteHarness {
        url: format!("sqlite://{}", path.display()),
    }))
}

mod file {
    stowage_conformance::conformance_tests!("sqlite", super::file_harness());
}

mod in_memory {
    stowage_conformance::conformance_tests!(
        "sqlite",
        Ok(std::sync::Arc::new(super::SqliteHarness {
            url: "sqlite::memory:".to_owned()
        }))
    );
}
