//! Dumps on PostgreSQL, what the conformance cases cannot see: a load batch is one round trip and
//! one transaction whatever its size (a failure anywhere in it leaves nothing of it, records
//! beyond the first statement included), and a page is one round trip.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stowage_conformance::round_trips::RoundTrips;
use stowage_core::dump::{
    CountersItem, DedupItem, DumpItem, PolicyItem, RecordItem, ReservationItem, Section,
};
use stowage_core::raw::{dedup_fingerprint, Access, StoredWindow};
use stowage_core::{
    Breach, BudgetPolicy, ConnectOptions, DimensionLimit, Reservation, ReservationState,
    UsageOutcome, UsageReport, Window, WindowBounds,
};
use stowage_postgres::PostgresBackend;

/// The shared server's URL behind a counting proxy (one connection), and the counter.
async fn proxied() -> Option<(String, Arc<RoundTrips>)> {
    let url = common::shared_url()?;
    let server_port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the URL names a port");
    let (turns, port) = RoundTrips::proxy(server_port).await;
    Some((
        format!("postgres://stowage@127.0.0.1:{port}/postgres?max_connections=1"),
        turns,
    ))
}

async fn open(url: &str, name: &str) -> stowage_core::Checked<PostgresBackend> {
    let namespace = stowage_conformance::unique_namespace(name);
    let backend = PostgresBackend::open(url, ConnectOptions::new().namespace(namespace))
        .await
        .unwrap();
    backend.engine().initialize().await.unwrap();
    backend
}

fn breach(dimension: &str, usage: u64, limit: u64, pending: u64) -> Breach {
    Breach {
        dimension: dimension.to_owned(),
        usage,
        limit,
        crossed: true,
        pending,
    }
}

fn amounts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect()
}

/// `n` items of every section (in canonical order), `n` records of `value_bytes` bytes each.
fn batch(tag: &str, n: usize, value_bytes: usize) -> Vec<DumpItem> {
    let budget = |i: usize| format!("{tag}-b{i:05}");
    let window = Window::fixed(60_000, 0);
    let mut items = Vec::new();
    for i in 0..n {
        let mut policy = BudgetPolicy::new()
            .limit("t", DimensionLimit::both(5, 10))
            .limit("u", DimensionLimit::hard(7));
        if i % 2 == 0 {
            policy = policy.window(window.clone());
        }
        items.push(DumpItem::Policy(PolicyItem::new(budget(i), policy)));
    }
    for i in 0..n {
        items.push(DumpItem::Counters(CountersItem {
            budget: budget(i),
            window: (i % 2 == 0).then(|| StoredWindow {
                spec: window.spec(),
                bounds: WindowBounds {
                    start_ms: 0,
                    end_ms: 60_000,
                },
            }),
            values: if i % 4 == 0 {
                BTreeMap::new()
            } else {
                amounts(&[("t", 3), ("u", 1)])
            },
        }));
    }
    for i in 0..n {
        let state = match i % 5 {
            0 => ReservationState::Held,
            1 => ReservationState::Released { at: 5 },
            2 => ReservationState::Refused {
                at: 5,
                breaches: vec![breach("t", 9, 10, 2)],
            },
            3 => ReservationState::Committed {
                at: 6,
                actual: amounts(&[("t", 1)]),
                outcome: UsageOutcome::Ok,
            },
            _ => ReservationState::Committed {
                at: 6,
                actual: amounts(&[("t", 2), ("u", 0)]),
                outcome: UsageOutcome::SoftBreach(vec![breach("t", 6, 5, 0)]),
            },
        };
        let reservation = Reservation {
            id: format!("r{i:05}"),
            dimensions: amounts(&[("t", 2), ("u", 1)]),
            ttl_ms: 1_000_000_000,
            expires_at: 1_000_000_000,
            remember_ms: 1_000_000_000,
            state,
        };
        items.push(DumpItem::Reservation(ReservationItem::new(
            budget(0),
            reservation,
        )));
    }
    for i in 0..n {
        let report = UsageReport::new().add("t", 1);
        items.push(DumpItem::Dedup(DedupItem {
            budget: budget(0),
            key: format!("k{i:05}"),
            fingerprint: dedup_fingerprint(&report),
            outcome: match i % 3 {
                0 => UsageOutcome::Ok,
                1 => UsageOutcome::SoftBreach(vec![breach("t", 6, 5, 0)]),
                _ => UsageOutcome::HardBreach(vec![breach("t", 9, 10, 3)]),
            },
            expires_at: 1_000_000_000_000,
        }));
    }
    for i in 0..n {
        let value = serde_json::to_string(&format!("{i:08}{}", "x".repeat(value_bytes))).unwrap();
        items.push(DumpItem::Record(RecordItem {
            name: format!("{tag}-rec"),
            stored_at: 7,
            idempotency_key: (i % 2 == 0).then(|| format!("key{i}")),
            value,
        }));
    }
    items
}

/// Every item of `section`, page after page.
async fn section(engine: &PostgresBackend, section: Section) -> Vec<DumpItem> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = engine
            .dump_page(section, after.as_deref(), 0)
            .await
            .unwrap();
        items.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return items,
        }
    }
}

/// A batch of 1000 items (every table) is one round trip, as is one of 5, and so is a page of
/// 1000 records; what was loaded reads back verbatim, in store order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_batch_and_a_page_are_one_round_trip_each() {
    let Some((url, turns)) = proxied().await else {
        return;
    };
    let backend = open(&url, "dump_rt").await;
    let engine = backend.engine();
    // Warm up: the first use of a statement on a connection prepares it (one more exchange).
    assert!(engine.is_empty().await.unwrap());
    engine.load(&batch("a", 1, 10)).await.unwrap();
    engine.dump_page(Section::Records, None, 0).await.unwrap();

    let (spent, answer) = turns.of(engine.is_empty()).await;
    assert!(!answer.unwrap());
    assert_eq!(spent, 1, "is_empty");
    let big = batch("b", 200, 10);
    assert_eq!(big.len(), 1000);
    let (spent, answer) = turns.of(engine.load(&big)).await;
    answer.unwrap();
    assert_eq!(spent, 1, "a batch of 1000 items");
    let small = batch("c", 1, 10);
    let (spent, answer) = turns.of(engine.load(&small)).await;
    answer.unwrap();
    assert_eq!(spent, 1, "a batch of {} items", small.len());

    let more: Vec<DumpItem> = (0..1000)
        .map(|i| {
            DumpItem::Record(RecordItem {
                name: "d-rec".to_owned(),
                stored_at: 9,
                idempotency_key: None,
                value: format!("{i}"),
            })
        })
        .collect();
    engine.load(&more).await.unwrap();
    let (spent, page) = turns.of(engine.dump_page(Section::Records, None, 0)).await;
    let page = page.unwrap();
    assert_eq!(spent, 1, "a page of records");
    assert_eq!(page.items.len(), 1000);
    assert!(page.next.is_some());

    let records: Vec<DumpItem> = section(engine, Section::Records)
        .await
        .into_iter()
        .filter(
            |item| matches!(item, DumpItem::Record(r) if r.name == "b-rec" || r.name == "d-rec"),
        )
        .collect();
    let want: Vec<DumpItem> = big
        .iter()
        .chain(&more)
        .filter(|item| matches!(item, DumpItem::Record(_)))
        .cloned()
        .collect();
    assert_eq!(records, want, "records read back verbatim, in store order");
    let reservations = section(engine, Section::Reservations).await;
    let want: Vec<&DumpItem> = big
        .iter()
        .filter(|item| matches!(item, DumpItem::Reservation(_)))
        .collect();
    let got: Vec<&DumpItem> = reservations
        .iter()
        .filter(|item| matches!(item, DumpItem::Reservation(r) if r.budget.starts_with("b-")))
        .collect();
    assert_eq!(got, want, "reservations read back verbatim");
}

/// A batch that fails in its last statement leaves nothing of it: the records of its earlier
/// statements (its values exceed one statement's 64 MiB) and the rows of every other table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_batch_leaves_nothing_of_it() {
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = open(&url, "dump_tx").await;
    let engine = backend.engine();
    // 70 values of 1 MiB: two statements of one transaction, the second one failing on a value
    // PostgreSQL refuses (a NUL character: core never hands one over; here it stands for any
    // failure of the engine's).
    let mut items = batch("a", 70, 1 << 20);
    let mut poison = items.last().cloned().unwrap();
    if let DumpItem::Record(r) = &mut poison {
        r.value = "\"\0\"".to_owned();
        r.idempotency_key = None;
    }
    items.push(poison.clone());
    assert!(engine.load(&items).await.is_err());
    assert!(engine.is_empty().await.unwrap(), "nothing of the batch");

    // One statement: fails whole.
    let mut items = batch("b", 3, 10);
    items.push(poison);
    assert!(engine.load(&items).await.is_err());
    assert!(engine.is_empty().await.unwrap(), "nothing of the batch");

    // Without the poison both load, the big records in order across the two statements.
    let items = batch("a", 70, 1 << 20);
    engine.load(&items).await.unwrap();
    let records = section(engine, Section::Records).await;
    let want: Vec<DumpItem> = items
        .into_iter()
        .filter(|item| matches!(item, DumpItem::Record(_)))
        .collect();
    assert!(
        records == want,
        "the big records read back verbatim, in store order"
    );
}

/// Every page statement reads an index, never a whole table, even as a generic plan (what a
/// prepared statement may settle on): a table of millions of rows exports page by page. (At this
/// size the planner would not hash the windows table even where a statement let it: that was
/// seen with 10,000 stored windows, and the counters statement looks each one up by its key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_reads_an_index() {
    use sqlx::Connection;
    let Some(url) = common::shared_url() else {
        return;
    };
    let backend = open(&url, "dump_plan").await;
    let engine = backend.engine();
    // 20,000 budgets and rows per section (10,000 stored windows): enough for the planner to
    // hash a whole table if a statement let it.
    for k in 0..10 {
        engine
            .load(&batch(&format!("e{k}"), 200, 10))
            .await
            .unwrap();
    }
    let schema = engine.schema_name();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("ANALYZE {schema}.records, {schema}.policies, {schema}.limits, {schema}.counters, {schema}.windows, {schema}.reservations, {schema}.dedup"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    for (section, args) in [
        (Section::Policies, "('e5-b00100')"),
        (Section::Counters, "('e5-b00100')"),
        (Section::Reservations, "('e5-b00000', 'r00100', 0)"),
        (Section::Dedup, "('e5-b00000', 'k00100', 0)"),
        (Section::Records, "('e5-rec', 7, 0)"),
    ] {
        let name = format!("page_{}", section.name().replace(' ', "_"));
        sqlx::query(&format!(
            "PREPARE {name} AS {}",
            engine.dump_page_sql(section)
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}{args}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{section:?}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{section:?}: {plan}");
    }
}
