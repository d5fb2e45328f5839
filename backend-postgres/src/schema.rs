//! The namespace registry and the versioned, embedded per-namespace migrations.

use sqlx::{Connection, Executor, PgConnection, Row};
use stowage_core::Error;

use crate::error::Fail;

/// Version N is `MIGRATIONS[N - 1]`; `__SCHEMA__` and `__LOCK__` are filled in per namespace.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_dedup_expiry.sql"),
    include_str!("../migrations/0003_windows.sql"),
    include_str!("../migrations/0004_reservations.sql"),
    include_str!("../migrations/0005_reserve_round_trip.sql"),
    include_str!("../migrations/0006_report_batch.sql"),
    include_str!("../migrations/0007_dump.sql"),
];

/// The advisory lock (bigint key space) that serializes every stowage initialization in a database.
const INIT_LOCK: i64 = 0x5354_4F57_4147_4531; // "STOWAGE1"

/// Where a namespace lives.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    /// `stowage_ns_<id>`: generated, never derived from the namespace text.
    pub(crate) name: String,
    /// The advisory-lock class of the namespace (two-int key space, disjoint from `INIT_LOCK`'s).
    pub(crate) lock_class: i32,
}

/// Registers `namespace`, creates its schema and applies missing migrations, in one transaction
/// under a database-wide advisory lock (so concurrent initializers, even in other processes, are harmless).
///
/// Multi-statement SQL goes through `Executor::execute(&str)`: `raw_sql(..).execute(..)` trips the
/// compiler's `Send` inference when the future is boxed (sqlx issue 3150).
pub(crate) async fn initialize(conn: &mut PgConnection, namespace: &str) -> Result<Schema, Fail> {
    let op = "initialize";
    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(&mut *conn)
        .await?;
    if encoding != "UTF8" {
        return Err(Fail::Final(Error::unsupported(format!(
            "{op}: the database encoding is {encoding}; stowage needs UTF8 (names are any UTF-8)"
        ))));
    }
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INIT_LOCK)
        .execute(&mut *tx)
        .await?;
    tx.execute(
        "CREATE SCHEMA IF NOT EXISTS stowage_registry;
         CREATE TABLE IF NOT EXISTS stowage_registry.namespaces (
             id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name    text COLLATE \"C\" NOT NULL UNIQUE,
             version integer NOT NULL DEFAULT 0
         );",
    )
    .await?;
    sqlx::query(
        "INSERT INTO stowage_registry.namespaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
    )
    .bind(namespace)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query("SELECT id, version FROM stowage_registry.namespaces WHERE name = $1")
        .bind(namespace)
        .fetch_one(&mut *tx)
        .await?;
    let id: i64 = row.try_get("id")?;
    let version: i32 = row.try_get("version")?;
    let schema = Schema {
        name: format!("stowage_ns_{id}"),
        lock_class: i32::try_from(id % i64::from(i32::MAX)).expect("below i32::MAX"),
    };
    let applied = usize::try_from(version)
        .map_err(|_| Error::corruption(format!("{op}: schema version {version} is negative")))?;
    if applied > MIGRATIONS.len() {
        return Err(Fail::Final(Error::unsupported(format!(
            "{op}: namespace schema {} has version {applied}; this build knows up to {}",
            schema.name,
            MIGRATIONS.len()
        ))));
    }
    if applied < MIGRATIONS.len() {
        tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {}", schema.name).as_str())
            .await?;
        for sql in &MIGRATIONS[applied..] {
            let sql = sql
                .replace("__SCHEMA__", &schema.name)
                .replace("__LOCK__", &schema.lock_class.to_string());
            tx.execute(sql.as_str()).await?;
        }
        let latest = i32::try_from(MIGRATIONS.len()).expect("few migrations");
        sqlx::query("UPDATE stowage_registry.namespaces SET version = $2 WHERE id = $1")
            .bind(id)
            .bind(latest)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(schema)
}

/// Drops the namespace's schema (CASCADE) and its registry row, under the lock `initialize`
/// takes, in one transaction. The schema is found through the registry (not a handle's cached
/// name), so a namespace some handle re-created after an earlier purge goes too; purging a
/// namespace that does not exist does nothing.
pub(crate) async fn purge(conn: &mut PgConnection, namespace: &str) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INIT_LOCK)
        .execute(&mut *tx)
        .await?;
    let id: Option<i64> =
        sqlx::query_scalar("DELETE FROM stowage_registry.namespaces WHERE name = $1 RETURNING id")
            .bind(namespace)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = id {
        tx.execute(format!("DROP SCHEMA IF EXISTS stowage_ns_{id} CASCADE").as_str())
            .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::raw::dedup_expiry;
    use stowage_core::{DEFAULT_DEDUP_TTL_MS, MAX_AMOUNT};

    fn server() -> Option<String> {
        stowage_testkit::available("postgres", stowage_testkit::servers::postgres::shared_url())
    }

    /// Version 2 gives records written under version 1 the default TTL, capped at MAX_AMOUNT.
    #[tokio::test]
    async fn dedup_records_of_version_1_get_the_default_ttl_capped() {
        let Some(url) = server() else { return };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let schema = stowage_conformance::unique_namespace("stowage_migration").to_lowercase();
        let fill = |sql: &str| {
            sql.replace("__SCHEMA__", &schema)
                .replace("__LOCK__", "2147483646")
        };
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        conn.execute(fill(MIGRATIONS[0]).as_str()).await.unwrap();
        let max = i64::try_from(MAX_AMOUNT).unwrap();
        let ttl = i64::try_from(DEFAULT_DEDUP_TTL_MS).unwrap();
        let written = [
            0,
            1_000,
            max - ttl - 1,
            max - ttl,
            max - ttl + 1,
            max - 1,
            max,
        ];
        for (i, at) in written.iter().enumerate() {
            sqlx::query(&fill(
                "INSERT INTO __SCHEMA__.dedup (budget, dedup_key, fingerprint, written_at, status, \
                 b_dims, b_usage, b_limits, b_crossed) VALUES ('b', $1, 'f', $2, 'ok', '{}', '{}', '{}', '{}')",
            ))
            .bind(format!("k{i}"))
            .bind(at)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.execute(fill(MIGRATIONS[1]).as_str()).await.unwrap();
        for (i, at) in written.iter().enumerate() {
            let expires: i64 = sqlx::query_scalar(&fill(
                "SELECT expires_at FROM __SCHEMA__.dedup WHERE budget = 'b' AND dedup_key = $1",
            ))
            .bind(format!("k{i}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let want = dedup_expiry(u64::try_from(*at).unwrap(), DEFAULT_DEDUP_TTL_MS);
            assert_eq!(u64::try_from(expires).unwrap(), want, "written at {at}");
        }
        let indexed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'dedup_by_expiry'",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            indexed, 1,
            "garbage collection walks an index on expires_at"
        );
        conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    }

    /// Version 3 keeps the policies, limits and counters of version 2 as lifetime budgets, and
    /// replaces the functions whose signatures changed.
    #[tokio::test]
    async fn version_3_keeps_version_2_budgets_lifetime() {
        let Some(url) = server() else { return };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let schema = stowage_conformance::unique_namespace("stowage_migration").to_lowercase();
        let fill = |sql: &str| {
            sql.replace("__SCHEMA__", &schema)
                .replace("__LOCK__", "2147483645")
        };
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        conn.execute(fill(MIGRATIONS[0]).as_str()).await.unwrap();
        conn.execute(fill(MIGRATIONS[1]).as_str()).await.unwrap();
        conn.execute(
            fill(
                "SELECT __SCHEMA__.set_policy('b', ARRAY['t'], ARRAY[5::bigint], ARRAY[10::bigint]);
                 SELECT * FROM __SCHEMA__.report_usage('b', ARRAY['t'], ARRAY[4::bigint], NULL, NULL, 0, 1000);",
            )
            .as_str(),
        )
        .await
        .unwrap();
        conn.execute(fill(MIGRATIONS[2]).as_str()).await.unwrap();
        let status: String = sqlx::query_scalar(&fill(
            "SELECT status FROM __SCHEMA__.report_usage('b', ARRAY['t'], ARRAY[2::bigint], NULL, NULL, \
             5, 1000, NULL, NULL, NULL)",
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(status, "soft", "4 + 2 counts over the lifetime");
        let old: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname IN ('report_usage', 'set_policy', 'delete_policy')",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(old, 3, "one version of each function");
        conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    }

    /// Version 4 keeps the recorded answers of version 3: a hard breach recorded before it replays
    /// with pending 0 per breach; one report_usage remains, answering the pending column.
    #[tokio::test]
    async fn version_4_replays_version_3_breaches_with_pending_0() {
        let Some(url) = server() else { return };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let schema = stowage_conformance::unique_namespace("stowage_migration").to_lowercase();
        let fill = |sql: &str| {
            sql.replace("__SCHEMA__", &schema)
                .replace("__LOCK__", "2147483644")
        };
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        for migration in &MIGRATIONS[..3] {
            conn.execute(fill(migration).as_str()).await.unwrap();
        }
        conn.execute(
            fill(
                "SELECT * FROM __SCHEMA__.set_policy('b', ARRAY['t', 'u'], ARRAY[NULL::bigint, NULL], \
                 ARRAY[10::bigint, 3], NULL, NULL, NULL, 0, false);
                 SELECT * FROM __SCHEMA__.report_usage('b', ARRAY['t', 'u'], ARRAY[11::bigint, 4], 'k', 'f', \
                 0, 1000, NULL, NULL, NULL);",
            )
            .as_str(),
        )
        .await
        .unwrap();
        conn.execute(fill(MIGRATIONS[3]).as_str()).await.unwrap();
        let row = sqlx::query(&fill(
            "SELECT status, b_dims, b_pending FROM __SCHEMA__.report_usage('b', ARRAY['t', 'u'], \
             ARRAY[11::bigint, 4], 'k', 'f', 5, 1000, NULL, NULL, NULL)",
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let status: String = row.try_get(0).unwrap();
        let dims: Vec<String> = row.try_get(1).unwrap();
        let pending: Vec<i64> = row.try_get(2).unwrap();
        assert_eq!(status, "replay-hard");
        assert_eq!(dims, ["t", "u"]);
        assert_eq!(pending, [0, 0]);
        let functions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = 'report_usage'",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(functions, 1, "one version of report_usage");
        conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    }

    /// Version 5 keeps the reservations of version 4 (a hold made before it replays through the
    /// new reserve) and leaves one version of each reservation function.
    #[tokio::test]
    async fn version_5_keeps_version_4_reservations() {
        let Some(url) = server() else { return };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let schema = stowage_conformance::unique_namespace("stowage_migration").to_lowercase();
        let fill = |sql: &str| {
            sql.replace("__SCHEMA__", &schema)
                .replace("__LOCK__", "2147483643")
        };
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        for migration in &MIGRATIONS[..4] {
            conn.execute(fill(migration).as_str()).await.unwrap();
        }
        let status: String = sqlx::query_scalar(&fill(
            "SELECT status FROM __SCHEMA__.reserve('b', 'r', ARRAY['t'], ARRAY[3::bigint], 1000, 'f', \
             0, 500)",
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(status, "reserved");
        conn.execute(fill(MIGRATIONS[4]).as_str()).await.unwrap();
        let row = sqlx::query(&fill(
            "SELECT status, expires_at FROM __SCHEMA__.reserve('b', 'r', ARRAY['t'], ARRAY[3::bigint], \
             1000, 'f', 5, 500, true, '{}', '{}', '{}')",
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let status: String = row.try_get(0).unwrap();
        let expires_at: i64 = row.try_get(1).unwrap();
        assert_eq!((status.as_str(), expires_at), ("replay-reserved", 1000));
        let functions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT p.proname::text, count(*) FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname IN ('reserve', 'reserve_all', 'reserve_one', \
             'reserve_all_steps', 'commit', 'commit_all', 'commit_one', 'commit_all_steps', \
             'report_usage_all', 'reserve_needs') GROUP BY p.proname ORDER BY p.proname",
        )
        .bind(&schema)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let names: Vec<&str> = functions.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), 10, "{functions:?}");
        assert!(functions.iter().all(|(_, n)| *n == 1), "{functions:?}");
        conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    }

    /// Version 7 turns the fingerprints earlier builds stored (the text) into the digest this
    /// build compares (stowage_core::dedup_fingerprint): a keyed report repeated after the
    /// upgrade replays. Records get the index the export reads them by.
    #[tokio::test]
    async fn version_7_keeps_version_6_dedup_records_replaying() {
        use stowage_core::raw::{dedup_fingerprint, dedup_fingerprint_text};
        let Some(url) = server() else { return };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let schema = stowage_conformance::unique_namespace("stowage_migration").to_lowercase();
        let fill = |sql: &str| {
            sql.replace("__SCHEMA__", &schema)
                .replace("__LOCK__", "2147483642")
        };
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        for migration in &MIGRATIONS[..6] {
            conn.execute(fill(migration).as_str()).await.unwrap();
        }
        let report = stowage_core::UsageReport::new().add("t", 4).add("é;u", 1);
        let report_sql = fill(
            "SELECT status FROM __SCHEMA__.report_usage('b', ARRAY['t', 'é;u'], \
             ARRAY[4::bigint, 1], 'k', $1, 0, 1000, NULL, NULL, NULL)",
        );
        let status: String = sqlx::query_scalar(&report_sql)
            .bind(dedup_fingerprint_text(&report))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(status, "ok");
        conn.execute(fill(MIGRATIONS[6]).as_str()).await.unwrap();
        let stored: String = sqlx::query_scalar(&fill("SELECT fingerprint FROM __SCHEMA__.dedup"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, dedup_fingerprint(&report));
        let status: String = sqlx::query_scalar(&report_sql)
            .bind(dedup_fingerprint(&report))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(status, "replay-ok");
        let indexed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'records_in_order'",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(indexed, 1, "the export reads records by an index");
        conn.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
    }
}
