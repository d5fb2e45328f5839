//! The seed design: `report_usage` as a FlowFabric-style multi-statement transaction through sqlx.
//!
//! Insert the dedup row (on conflict do nothing), select the policy for share, then per dimension
//! insert the counter (on conflict do nothing), select it for update and update it, then update
//! the dedup row and commit: 2 + 3N + 1 statements and as many round trips.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use stowage::UsageReport;

/// The seed design's tables in their own schema, and a sqlx pool.
#[derive(Debug, Clone)]
pub struct SeedPostgres {
    pool: PgPool,
    schema: String,
}

impl SeedPostgres {
    /// Creates the seed schema (`seed_<unique>`) and a pool of `connections`.
    pub async fn start(url: &str, connections: u32) -> SeedPostgres {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(url)
            .await
            .expect("seed pool");
        let schema = stowage_testkit::unique_namespace("seed").replace('-', "_");
        pool.execute(
            format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.budgets (budget text PRIMARY KEY, hard_tokens bigint, hard_usd bigint);
                 CREATE TABLE {schema}.usage (budget text, dimension text, value bigint NOT NULL,
                                               PRIMARY KEY (budget, dimension));
                 CREATE TABLE {schema}.dedup (budget text, key text, outcome text,
                                               PRIMARY KEY (budget, key));
                 INSERT INTO {schema}.budgets SELECT b, 4611686018427387903, 4611686018427387903
                   FROM unnest(ARRAY['{budget}'] || ARRAY(SELECT 'team-' || i FROM generate_series(0, 15) i)) b;",
                budget = crate::BUDGET
            )
            .as_str(),
        )
        .await
        .expect("seed schema");
        SeedPostgres { pool, schema }
    }

    /// One report the seed way; returns whether it was applied (false: a replay).
    pub async fn report(&self, budget: &str, report: &UsageReport) -> Result<bool, sqlx::Error> {
        let s = &self.schema;
        let key = report.dedup_key.as_deref().unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(&format!(
            "INSERT INTO {s}.dedup (budget, key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1"
        ))
        .bind(budget)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            tx.commit().await?;
            return Ok(false);
        }
        let policy = sqlx::query(&format!(
            "SELECT hard_tokens, hard_usd FROM {s}.budgets WHERE budget = $1 FOR SHARE"
        ))
        .bind(budget)
        .fetch_optional(&mut *tx)
        .await?;
        let hard: Option<i64> = policy.map(|row| row.get(0));
        for (dimension, delta) in &report.dimensions {
            let delta = i64::try_from(*delta).expect("bench deltas are small");
            sqlx::query(&format!(
                "INSERT INTO {s}.usage (budget, dimension, value) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING"
            ))
            .bind(budget)
            .bind(dimension)
            .execute(&mut *tx)
            .await?;
            let current: i64 = sqlx::query(&format!(
                "SELECT value FROM {s}.usage WHERE budget = $1 AND dimension = $2 FOR UPDATE"
            ))
            .bind(budget)
            .bind(dimension)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            if hard.is_some_and(|h| current + delta > h) {
                continue;
            }
            sqlx::query(&format!(
                "UPDATE {s}.usage SET value = value + $3 WHERE budget = $1 AND dimension = $2"
            ))
            .bind(budget)
            .bind(dimension)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE {s}.dedup SET outcome = 'ok' WHERE budget = $1 AND key = $2"
        ))
        .bind(budget)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
