//! The namespace registry and the versioned, embedded per-namespace migrations.

use sqlx::{Connection, Executor, PgConnection, Row};
use stowage_core::{Error, Result};

use crate::error;

/// Version N is `MIGRATIONS[N - 1]`; `__SCHEMA__` and `__LOCK__` are filled in per namespace.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_initial.sql")];

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
pub(crate) async fn initialize(conn: &mut PgConnection, namespace: &str) -> Result<Schema> {
    let op = "initialize";
    let e = |err| error::map(op, err);
    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(&mut *conn)
        .await
        .map_err(e)?;
    if encoding != "UTF8" {
        return Err(Error::unsupported(format!(
            "{op}: the database encoding is {encoding}; stowage needs UTF8 (names are any UTF-8)"
        )));
    }
    let mut tx = conn.begin().await.map_err(e)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INIT_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    tx.execute(
        "CREATE SCHEMA IF NOT EXISTS stowage_registry;
         CREATE TABLE IF NOT EXISTS stowage_registry.namespaces (
             id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name    text COLLATE \"C\" NOT NULL UNIQUE,
             version integer NOT NULL DEFAULT 0
         );",
    )
    .await
    .map_err(e)?;
    sqlx::query(
        "INSERT INTO stowage_registry.namespaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
    )
    .bind(namespace)
    .execute(&mut *tx)
    .await
    .map_err(e)?;
    let row = sqlx::query("SELECT id, version FROM stowage_registry.namespaces WHERE name = $1")
        .bind(namespace)
        .fetch_one(&mut *tx)
        .await
        .map_err(e)?;
    let id: i64 = row.try_get("id").map_err(e)?;
    let version: i32 = row.try_get("version").map_err(e)?;
    let schema = Schema {
        name: format!("stowage_ns_{id}"),
        lock_class: i32::try_from(id % i64::from(i32::MAX)).expect("below i32::MAX"),
    };
    let applied = usize::try_from(version)
        .map_err(|_| Error::corruption(format!("{op}: schema version {version} is negative")))?;
    if applied > MIGRATIONS.len() {
        return Err(Error::unsupported(format!(
            "{op}: namespace schema {} has version {applied}; this build knows up to {}",
            schema.name,
            MIGRATIONS.len()
        )));
    }
    if applied < MIGRATIONS.len() {
        tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {}", schema.name).as_str())
            .await
            .map_err(e)?;
        for sql in &MIGRATIONS[applied..] {
            let sql = sql
                .replace("__SCHEMA__", &schema.name)
                .replace("__LOCK__", &schema.lock_class.to_string());
            tx.execute(sql.as_str()).await.map_err(e)?;
        }
        let latest = i32::try_from(MIGRATIONS.len()).expect("few migrations");
        sqlx::query("UPDATE stowage_registry.namespaces SET version = $2 WHERE id = $1")
            .bind(id)
            .bind(latest)
            .execute(&mut *tx)
            .await
            .map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    Ok(schema)
}
