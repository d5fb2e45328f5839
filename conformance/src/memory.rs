//! The harness of the reference model itself, so the suite checks the model too.

use std::sync::Arc;

use stowage_core::{Backend, BoxFuture, ConnectOptions, MemoryBackend, Result};

use crate::Harness;

/// Opens a fresh [`MemoryBackend`] for every `open` (a model is its own store: not shared, not durable).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHarness;

impl Harness for MemoryHarness {
    fn open(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Arc<dyn Backend>>> {
        Box::pin(async move {
            let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_options(options)?);
            Ok(backend)
        })
    }
}
