//! The Valkey harness shared by this crate's test files.

use std::sync::Arc;

use stowage_conformance::Harness;
use stowage_core::{Backend, BoxFuture, ConnectOptions, Result};
use stowage_valkey::ValkeyBackend;

/// A harness that opens backends on `url` (standalone or cluster).
pub fn valkey_harness(url: String) -> Arc<dyn Harness> {
    Arc::new(
        move |options: ConnectOptions| -> BoxFuture<'static, Result<Arc<dyn Backend>>> {
            let url = url.clone();
            Box::pin(async move {
                let backend: Arc<dyn Backend> = Arc::new(ValkeyBackend::open(&url, options).await?);
                Ok(backend)
            })
        },
    )
}

/// `url`, or why there is none (a failure when `backend` is required).
#[allow(dead_code)]
pub fn url_or_skip(backend: &str, url: std::result::Result<String, String>) -> Option<String> {
    match url {
        Ok(url) => Some(url),
        Err(reason) if !stowage_conformance::is_required(backend) => {
            eprintln!("skipped: {backend} is unavailable: {reason}");
            None
        }
        Err(reason) => {
            panic!("{backend} is required (STOWAGE_REQUIRE_BACKENDS) but unavailable: {reason}")
        }
    }
}
