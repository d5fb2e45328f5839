//! The suite on the reference model shared the way processes share a store: one model per
//! namespace, each handle a `MemoryBackend::share` of it with its own options, `shared: true`.
//! So the cases and the differential test that need two handles on one namespace (two dedup
//! TTLs, races over several handles) check the model too.

mod common;

stowage_conformance::conformance_tests!(
    "memory",
    Ok(common::ModelHarness::new(true, common::Defect::None))
);
