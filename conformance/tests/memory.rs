//! The suite run on the reference model through `Arc<dyn Backend>`.

use std::sync::Arc;

stowage_conformance::conformance_tests!("memory", Ok(Arc::new(stowage_conformance::MemoryHarness)));
