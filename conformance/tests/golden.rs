//! The golden dump: a committed dump of `cases::dump::fill` on the reference model, and its pinned
//! digest. A change to the dump format (a field, its order, an encoding) or to what a dump holds
//! fails here: bump `dump::VERSION`, document the change in `docs/dump-format.md`, and
//! regenerate the file with `STOWAGE_BLESS=1 cargo test -p stowage-conformance --test golden`
//! (then update `GOLDEN_DIGEST`).

use std::sync::Arc;

use stowage_conformance::cases::dump::{export_of, fill, import_into};
use stowage_conformance::START_MS;
use stowage_core::dump::digest_of_dump;
use stowage_core::{Backend, Clock, ConnectOptions, ManualClock, MemoryBackend};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1.dump");

/// SHA-256 of `stowage-dump 1\n` and the golden dump's item lines.
const GOLDEN_DIGEST: &str = "e07dd7a9efedc860cde8914ebf0b3e7b5b0461529483067e92cbb666bee97c84";

fn model(clock: &Arc<ManualClock>) -> Arc<dyn Backend> {
    Arc::new(
        MemoryBackend::with_options(
            ConnectOptions::new()
                .namespace("golden")
                .clock(clock.clone()),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn the_golden_dump_is_what_the_model_exports_and_its_digest_is_pinned() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let b = model(&clock);
    fill(&*b, &clock).await;
    let dump = export_of(&*b).await;
    if std::env::var_os("STOWAGE_BLESS").is_some() {
        std::fs::write(GOLDEN, &dump).unwrap();
    }
    let golden = std::fs::read(GOLDEN).expect("the golden dump is committed");
    assert_eq!(
        String::from_utf8_lossy(&dump),
        String::from_utf8_lossy(&golden),
        "the model's export of fill() is the golden dump"
    );
    assert_eq!(b.digest().await.unwrap(), GOLDEN_DIGEST);
    assert_eq!(
        digest_of_dump(golden.as_slice()).await.unwrap(),
        GOLDEN_DIGEST
    );
}

#[tokio::test]
async fn the_golden_dump_imports_and_exports_byte_for_byte() {
    let golden = std::fs::read(GOLDEN).expect("the golden dump is committed");
    let clock = Arc::new(ManualClock::new(START_MS));
    let b = model(&clock);
    // The header's exported_at: the copy is read at the same clock reading.
    let header: serde_json::Value =
        serde_json::from_slice(golden.split(|c| *c == b'\n').next().unwrap()).unwrap();
    clock.set(header["exported_at"].as_u64().unwrap());
    assert!(import_into(&*b, &golden).await.unwrap() > 20);
    assert_eq!(clock.now_ms(), header["exported_at"].as_u64().unwrap());
    assert_eq!(export_of(&*b).await, golden);
    assert_eq!(b.digest().await.unwrap(), GOLDEN_DIGEST);
}
