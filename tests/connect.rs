//! The facade: URL-scheme dispatch, options, and the same API on every scheme compiled in.

use stowage::{ConnectOptions, ErrorKind, QueryParams, UsageReport};

#[tokio::test]
async fn memory_and_sqlite_urls_connect_and_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite://{}", dir.path().join("facade.db").display());
    for url in ["memory://", "sqlite::memory:", file.as_str()] {
        let store = stowage::connect(url).await.unwrap();
        store
            .report_usage("b", &UsageReport::new().add("t", 2))
            .await
            .unwrap();
        assert_eq!(store.usage("b").await.unwrap().counters["t"], 2, "{url}");
        store.store("r", &serde_json::json!(1), 1).await.unwrap();
        assert_eq!(store.query("*", QueryParams::new()).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn sqlite_file_keeps_data_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keep.db").display());
    {
        let store = stowage::connect(&url).await.unwrap();
        store
            .report_usage("b", &UsageReport::new().add("t", 5))
            .await
            .unwrap();
    }
    let again = stowage::connect(&url).await.unwrap();
    assert_eq!(again.usage("b").await.unwrap().counters["t"], 5);
    assert!(again.capabilities().durable && again.capabilities().shared);
}

#[tokio::test]
async fn namespaces_given_to_connect_with_isolate_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ns.db").display());
    let a = stowage::connect_with(&url, ConnectOptions::new().namespace("a"))
        .await
        .unwrap();
    let b = stowage::connect_with(&url, ConnectOptions::new().namespace("b"))
        .await
        .unwrap();
    a.report_usage("x", &UsageReport::new().add("t", 1))
        .await
        .unwrap();
    assert!(b.usage("x").await.unwrap().counters.is_empty());
}

#[tokio::test]
async fn unknown_or_missing_schemes_are_invalid_input() {
    for url in ["ftp://x", "", "memory", "sqlite://", "mysql://localhost"] {
        let err = stowage::connect(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
    }
    let schemes = stowage::available_schemes();
    assert!(schemes.contains(&"memory") && schemes.contains(&"sqlite"));
}

#[tokio::test]
async fn invalid_options_are_invalid_input() {
    for options in [
        ConnectOptions::new().namespace(""),
        ConnectOptions::new().namespace("x".repeat(257)),
        ConnectOptions::new().dedup_ttl_ms(0),
    ] {
        for url in ["memory://", "sqlite::memory:"] {
            let err = stowage::connect_with(url, options.clone())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url} {options:?}");
        }
    }
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn postgres_without_its_feature_is_invalid_input() {
    let err = stowage::connect("postgres://localhost/x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls_connect_through_the_facade() {
    let Some(url) =
        stowage_testkit::available("postgres", stowage_testkit::servers::postgres::shared_url())
    else {
        return;
    };
    let options = ConnectOptions::new().namespace(stowage_conformance::unique_namespace("facade"));
    let store = stowage::connect_with(&url, options.clone()).await.unwrap();
    store
        .report_usage("b", &UsageReport::new().add("t", 3))
        .await
        .unwrap();
    let alias = url.replacen("postgres://", "postgresql://", 1);
    let again = stowage::connect_with(&alias, options).await.unwrap();
    assert_eq!(again.usage("b").await.unwrap().counters["t"], 3);
}

#[cfg(not(feature = "valkey"))]
#[tokio::test]
async fn valkey_without_its_feature_is_invalid_input() {
    for url in ["valkey://localhost", "redis+cluster://a:1,b:2"] {
        let err = stowage::connect(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
    }
}

#[cfg(feature = "valkey")]
#[tokio::test]
async fn valkey_urls_connect_through_the_facade() {
    use stowage_conformance::servers::valkey;
    for (backend, url) in [
        ("valkey", valkey::shared_url()),
        ("valkey-cluster", valkey::shared_cluster_url()),
    ] {
        let Some(url) = stowage_testkit::available(backend, url) else {
            continue;
        };
        let options =
            ConnectOptions::new().namespace(stowage_conformance::unique_namespace("facade"));
        let store = stowage::connect_with(&url, options.clone()).await.unwrap();
        store
            .report_usage("b", &UsageReport::new().add("t", 4))
            .await
            .unwrap();
        let alias = url.replacen("valkey", "redis", 1);
        let again = stowage::connect_with(&alias, options).await.unwrap();
        assert_eq!(again.usage("b").await.unwrap().counters["t"], 4, "{url}");
    }
}
