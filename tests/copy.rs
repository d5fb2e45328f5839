//! SEMANTICS §4.5 across every backend: a chain of copies — model → SQLite → PostgreSQL → Valkey
//! cluster → Valkey → SQLite — never changes the digest, and every copy answers every later
//! operation exactly as the original (replays replay, keys conflict, holds expire and windows
//! roll at the same clock readings).
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "valkey"))]

use std::sync::Arc;

use stowage::{Backend, Clock, ConnectOptions, ManualClock};
use stowage_conformance::cases::dump::{fill, probe};
use stowage_conformance::servers::{postgres, valkey};
use stowage_conformance::START_MS;
use stowage_testkit::{available, unique_namespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_copies_across_every_backend_keeps_the_digest_and_the_answers() {
    let (Some(pg), Some(cluster), Some(standalone)) = (
        available("postgres", postgres::shared_url()),
        available("valkey-cluster", valkey::shared_cluster_url()),
        available("valkey", valkey::shared_url()),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first_file = format!("sqlite://{}", dir.path().join("first.db").display());
    let last_file = format!("sqlite://{}", dir.path().join("last.db").display());
    let clock = Arc::new(ManualClock::new(START_MS));
    let namespace = unique_namespace("chain");
    let mut chain: Vec<(&str, Arc<dyn Backend>)> = Vec::new();
    for (name, url) in [
        ("model", "memory://"),
        ("sqlite", first_file.as_str()),
        ("postgres", pg.as_str()),
        ("valkey-cluster", cluster.as_str()),
        ("valkey", standalone.as_str()),
        ("sqlite again", last_file.as_str()),
    ] {
        let options = ConnectOptions::new()
            .namespace(namespace.clone())
            .clock(clock.clone());
        let backend = stowage::connect_with(url, options)
            .await
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        backend.purge().await.unwrap();
        chain.push((name, backend));
    }
    fill(&*chain[0].1, &clock).await;
    let digest = chain[0].1.digest().await.unwrap();
    for pair in chain.windows(2) {
        let ((from_name, from), (to_name, to)) = (&pair[0], &pair[1]);
        let summary = stowage::copy(&**from, &**to, &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("copy {from_name} → {to_name}: {e}"));
        assert!(summary.items > 20, "{from_name} → {to_name}: {summary:?}");
        assert_eq!(
            to.digest().await.unwrap(),
            digest,
            "{from_name} → {to_name}: the digest is unchanged"
        );
    }
    // Every copy answers the same operations as the model, from the same clock reading.
    let at = clock.now_ms();
    let reference = probe(&*chain[0].1, &clock).await;
    for (name, backend) in &chain[1..] {
        clock.set(at);
        let answers = probe(&**backend, &clock).await;
        for (want, got) in reference.iter().zip(&answers) {
            assert_eq!(want, got, "{name} answers as the model");
        }
        assert_eq!(reference.len(), answers.len(), "{name}");
    }
    for (_, backend) in &chain {
        backend.purge().await.unwrap();
    }
}
