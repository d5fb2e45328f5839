//! The `stowage` command end to end: admin commands, clear errors, conformance, bench output.

use std::process::{Command, Output};

fn stowage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(args)
        .env("STOWAGE_DIFF_SEQUENCES", "4")
        .output()
        .expect("run stowage")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn budget_commands_set_report_show_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    let u = ["--url", url.as_str(), "--json"];
    json(&stowage(
        &[&["budget", "set", "team", "--limit", "tokens=8:10"], &u[..]].concat(),
    ));
    let first = json(&stowage(
        &[
            &["budget", "report", "team", "tokens=9", "--key", "r1"],
            &u[..],
        ]
        .concat(),
    ));
    assert_eq!(first["replayed"], false);
    assert_eq!(first["outcome"]["SoftBreach"][0]["usage"], 9);
    let again = json(&stowage(
        &[
            &["budget", "report", "team", "tokens=9", "--key", "r1"],
            &u[..],
        ]
        .concat(),
    ));
    assert_eq!(again["replayed"], true);
    let hard = json(&stowage(
        &[&["budget", "report", "team", "tokens=2"], &u[..]].concat(),
    ));
    assert_eq!(hard["outcome"]["HardBreach"][0]["limit"], 10);
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(shown["usage"]["tokens"], 9);
    assert_eq!(shown["policy"]["limits"]["tokens"]["hard"], 10);
    json(&stowage(&[&["budget", "reset", "team"], &u[..]].concat()));
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(shown["usage"], serde_json::json!({}));
}

#[test]
fn budget_report_batch_answers_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("batch.db").display());
    let u = ["--url", url.as_str(), "--json"];
    json(&stowage(
        &[&["budget", "set", "team", "--limit", "tokens=:10"], &u[..]].concat(),
    ));
    let input = dir.path().join("items.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"budget\":\"team\",\"dimensions\":{\"tokens\":6},\"dedup_key\":\"r1\"}\n",
            "{\"budget\":\"team\",\"dimensions\":{\"tokens\":6}}\n",
            "\n",
            "{\"budget\":\"team\",\"dimensions\":{\"tokens\":6},\"dedup_key\":\"r1\"}\n",
            "{\"budget\":\"\",\"dimensions\":{\"tokens\":1}}\n",
            "{\"budget\":\"other\",\"dimensions\":{\"tokens\":4}}\n",
        ),
    )
    .unwrap();
    let file = input.to_str().unwrap();
    let out = stowage(
        &[
            &["budget", "report-batch", "-i", file, "--batch-size", "2"],
            &u[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "an item failed: exit status 1");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let numbers: Vec<_> = lines[..5].iter().map(|l| l["line"].as_u64()).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(4), Some(5), Some(6)]);
    assert_eq!(lines[0]["outcome"], "Ok");
    assert_eq!(lines[1]["outcome"]["HardBreach"][0]["usage"], 6);
    assert_eq!(lines[2]["replayed"], true);
    assert_eq!(lines[3]["error"], "InvalidInput");
    assert_eq!(lines[4]["outcome"], "Ok");
    assert_eq!(
        lines[5]["summary"],
        serde_json::json!({"applied": 2, "replayed": 1, "refused": 1, "failed": 1})
    );
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(shown["usage"]["tokens"], 6);

    // A line that is not an item: exit status 2, nothing from its batch on is sent.
    std::fs::write(
        &input,
        "{\"budget\":\"other\",\"dimensions\":{\"tokens\":1}}\n{\"budget\":\"other\"}\n",
    )
    .unwrap();
    let out = stowage(&[&["budget", "report-batch", "-i", file], &u[..]].concat());
    assert_eq!(out.status.code(), Some(2));
    let shown = json(&stowage(&[&["budget", "show", "other"], &u[..]].concat()));
    assert_eq!(shown["usage"]["tokens"], 4);
}

#[test]
fn budget_windows_set_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("win.db").display());
    let u = ["--url", url.as_str(), "--json"];
    let set = json(&stowage(
        &[
            &[
                "budget",
                "set",
                "team",
                "--limit",
                "tokens=:10",
                "--window",
                "day",
                "--tz",
                "America/New_York",
            ],
            &u[..],
        ]
        .concat(),
    ));
    let day = serde_json::json!({"Calendar": {"unit": "Day", "time_zone": "America/New_York"}});
    assert_eq!(set["policy"]["window"], day);
    json(&stowage(
        &[&["budget", "report", "team", "tokens=3"], &u[..]].concat(),
    ));
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(shown["policy"]["window"], day);
    assert_eq!(shown["usage"]["tokens"], 3);
    let window = &shown["window"];
    assert_eq!(window["spec"], "calendar:day:America/New_York");
    let (start, end) = (
        window["start_ms"].as_u64().unwrap(),
        window["end_ms"].as_u64().unwrap(),
    );
    assert!(start <= now && now < end + 60_000, "{window}");
    assert!(
        [23, 24, 25].contains(&((end - start) / 3_600_000)) && (end - start) % 3_600_000 == 0,
        "{window}"
    );
    assert!(
        window["ends_at"].as_str().unwrap().ends_with('Z'),
        "{window}"
    );
    // A fixed period with an offset; the counters of the current window stay.
    json(&stowage(
        &[
            &["budget", "set", "team", "--period", "1h", "--offset", "15m"],
            &u[..],
        ]
        .concat(),
    ));
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(
        shown["policy"]["window"],
        serde_json::json!({"Fixed": {"period_ms": 3_600_000, "offset_ms": 900_000}})
    );
    assert_eq!(shown["usage"]["tokens"], 3);
    let window = &shown["window"];
    assert_eq!(window["spec"], "fixed:3600000:900000");
    let start = window["start_ms"].as_u64().unwrap();
    assert_eq!(start % 3_600_000, 900_000, "{window}");
    assert_eq!(window["end_ms"].as_u64().unwrap(), start + 3_600_000);
    // Human output names the window and when it ends.
    let out = stowage(&["budget", "show", "team", "--url", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("window fixed:3600000:900000") && text.contains("ends "),
        "{text}"
    );
    // Without a window: lifetime counters, no window shown.
    json(&stowage(&[&["budget", "set", "team"], &u[..]].concat()));
    let shown = json(&stowage(&[&["budget", "show", "team"], &u[..]].concat()));
    assert_eq!(shown["window"], serde_json::Value::Null);
    assert_eq!(shown["usage"]["tokens"], 3);
}

#[test]
fn bad_windows_exit_with_status_2_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("badwin.db").display());
    json(&stowage(&[
        "budget",
        "set",
        "team",
        "--limit",
        "tokens=:10",
        "--url",
        &url,
        "--json",
    ]));
    for bad in [
        &["--window", "day", "--tz", "Mars/Olympus_Mons"][..],
        &["--window", "day", "--period", "1h"],
        &["--window", "fortnight"],
        &["--tz", "UTC"],
        &["--period", "0"],
        &["--period", "1h", "--offset", "1h"],
        &["--period", "1h", "--tz", "UTC"],
        &["--offset", "5m"],
    ] {
        let args = [&["budget", "set", "team", "--url", &url], bad].concat();
        let out = stowage(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    let shown = json(&stowage(&[
        "budget", "show", "team", "--url", &url, "--json",
    ]));
    assert_eq!(
        shown["policy"],
        serde_json::json!({"limits": {"tokens": {"soft": null, "hard": 10}}, "window": null})
    );
}

/// Runs `stowage budget ARGS --url URL --json`; returns the exit status and the JSON printed.
fn budget_json(url: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = stowage(&[&["budget"], args, &["--url", url, "--json"]].concat());
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{args:?}: no JSON on stdout: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), value)
}

#[test]
fn reserve_show_commit_show_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hold.db").display());
    let url = url.as_str();
    json(&stowage(&[
        "budget",
        "set",
        "team",
        "--limit",
        "tokens=50:100",
        "--url",
        url,
        "--json",
    ]));
    let (code, reserved) = budget_json(
        url,
        &[
            "reserve",
            "-b",
            "team",
            "--id",
            "r1",
            "--ttl",
            "1h",
            "tokens=60",
            "usd=7",
        ],
    );
    assert_eq!(code, Some(0), "{reserved}");
    assert_eq!(reserved["outcome"], "Reserved");
    let expires_at = reserved["expires_at"].as_u64().unwrap();
    let (_, shown) = budget_json(url, &["show", "team"]);
    assert_eq!(
        shown["pending"],
        serde_json::json!({"tokens": 60, "usd": 7})
    );
    assert_eq!(shown["holds"][0]["id"], "r1");
    assert_eq!(shown["holds"][0]["expires_at"], expires_at);
    assert_eq!(
        shown["holds"][0]["amounts"],
        serde_json::json!({"tokens": 60, "usd": 7})
    );
    // Human output lists the hold too.
    let out = stowage(&["budget", "show", "team", "--url", url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 live hold(s)") && text.contains("r1"),
        "{text}"
    );
    let (code, committed) = budget_json(url, &["commit", "-b", "team", "--id", "r1", "tokens=55"]);
    assert_eq!(code, Some(0), "{committed}");
    assert_eq!(committed["outcome"]["SoftBreach"]["team"][0]["usage"], 55);
    let (_, again) = budget_json(url, &["commit", "-b", "team", "--id", "r1", "tokens=55"]);
    assert_eq!(again["replayed"], true);
    let (_, shown) = budget_json(url, &["show", "team"]);
    assert_eq!(shown["usage"], serde_json::json!({"tokens": 55}));
    assert_eq!(shown["pending"], serde_json::json!({}));
    assert_eq!(shown["holds"], serde_json::json!([]));
}

#[test]
fn release_frees_the_hold_on_every_budget() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("release.db").display());
    let url = url.as_str();
    let budgets = ["-b", "key:1", "-b", "team:a", "-b", "org:x"];
    let (code, _) = budget_json(
        url,
        &[
            &["reserve", "--id", "r1", "--ttl", "5m", "tokens=10"],
            &budgets[..],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0));
    let (_, shown) = budget_json(url, &["show", "org:x"]);
    assert_eq!(shown["holds"][0]["id"], "r1");
    let (code, released) = budget_json(url, &[&["release", "--id", "r1"], &budgets[..]].concat());
    assert_eq!(code, Some(0), "{released}");
    for budget in ["key:1", "team:a", "org:x"] {
        let (_, shown) = budget_json(url, &["show", budget]);
        assert_eq!(shown["holds"], serde_json::json!([]), "{budget}");
        assert_eq!(shown["usage"], serde_json::json!({}), "{budget}");
    }
    // On one budget, release says whether it freed anything.
    budget_json(
        url,
        &[
            "reserve", "-b", "key:2", "--id", "r2", "--ttl", "5m", "tokens=1",
        ],
    );
    let (_, first) = budget_json(url, &["release", "-b", "key:2", "--id", "r2"]);
    assert_eq!(first["released"], true);
    let (_, second) = budget_json(url, &["release", "-b", "key:2", "--id", "r2"]);
    assert_eq!(second["released"], false);
}

#[test]
fn a_refused_reservation_exits_with_status_3_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("refused.db").display());
    let url = url.as_str();
    json(&stowage(&[
        "budget",
        "set",
        "team:a",
        "--limit",
        "tokens=:100",
        "--url",
        url,
        "--json",
    ]));
    let budgets = ["-b", "key:1", "-b", "team:a"];
    let reserve = |id: &str| {
        budget_json(
            url,
            &[
                &["reserve", "--id", id, "--ttl", "1h", "tokens=60"],
                &budgets[..],
            ]
            .concat(),
        )
    };
    assert_eq!(reserve("r1").0, Some(0));
    let (code, refused) = reserve("r2");
    assert_eq!(code, Some(3), "{refused}");
    let breach = &refused["outcome"]["HardBreach"]["team:a"][0];
    assert_eq!(breach["pending"], 60);
    assert_eq!(breach["limit"], 100);
    // A retry gets the same answer and status.
    let (code, retry) = reserve("r2");
    assert_eq!(
        (code, &retry["replayed"]),
        (Some(3), &serde_json::json!(true))
    );
    let (_, shown) = budget_json(url, &["show", "key:1"]);
    assert_eq!(shown["pending"], serde_json::json!({"tokens": 60}));
    // Human output says REFUSED.
    let out = stowage(
        &[
            &[
                "budget",
                "reserve",
                "--id",
                "r3",
                "--ttl",
                "1h",
                "tokens=60",
                "--url",
                url,
            ],
            &budgets[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("REFUSED"));
}

#[test]
fn bad_reservation_input_exits_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("badhold.db").display());
    let url = url.as_str();
    for args in [
        &[
            "reserve",
            "-b",
            "k",
            "--id",
            "r",
            "--ttl",
            "1h",
            "tokens=ten",
        ][..],
        &["reserve", "-b", "k", "--id", "r", "--ttl", "1h", "tokens"],
        &[
            "reserve", "-b", "k", "--id", "r", "--ttl", "1h", "t=1", "t=2",
        ],
        &["reserve", "-b", "k", "--id", "r", "--ttl", "soon", "t=1"],
        &["reserve", "-b", "k", "--id", "r", "--ttl", "0s", "t=1"],
        &["reserve", "-b", "k", "--id", "r", "--ttl", "1h"],
        &["reserve", "--id", "r", "--ttl", "1h", "t=1"],
        &[
            "reserve", "-b", "k", "-b", "k", "--id", "r", "--ttl", "1h", "t=1",
        ],
        &["reserve", "-b", "k", "--id", "", "--ttl", "1h", "t=1"],
        &["commit", "-b", "k", "--id", "r", "t=x"],
        &["commit", "-b", "k", "t=1"],
        &["release", "-b", "k"],
    ] {
        let out = stowage(&[&["budget"], args, &["--url", url]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    // Committing more than was reserved is bad input too; nothing changes.
    budget_json(
        url,
        &["reserve", "-b", "k", "--id", "r", "--ttl", "1h", "t=5"],
    );
    let out = stowage(&[
        "budget", "commit", "-b", "k", "--id", "r", "t=6", "--url", url,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let (_, shown) = budget_json(url, &["show", "k"]);
    assert_eq!(shown["pending"], serde_json::json!({"t": 5}));
    // An unknown id is an error, not bad input.
    let out = stowage(&["budget", "commit", "-b", "k", "--id", "zz", "--url", url]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn records_commands_put_query_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("rec.db").display());
    let u = ["--url", url.as_str(), "--json"];
    for (record, at) in [
        ("sensor::a::temp", "10"),
        ("sensor::a::temp", "20"),
        ("sensor::b::temp", "15"),
    ] {
        json(&stowage(
            &[
                &["records", "put", record, r#"{"c":1.5}"#, "--at", at],
                &u[..],
            ]
            .concat(),
        ));
    }
    let rows = json(&stowage(
        &[
            &["records", "query", "sensor::*::temp", "--limit", "1"],
            &u[..],
        ]
        .concat(),
    ));
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["stored_at"], 20);
    let cleaned = json(&stowage(
        &[&["records", "cleanup", "--older-than", "16"], &u[..]].concat(),
    ));
    assert_eq!(cleaned["deleted"], 2);
}

#[test]
fn bad_input_is_a_clear_error_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bad.db").display());
    for args in [
        vec![
            "budget",
            "set",
            "team",
            "--limit",
            "tokens=ten:20",
            "--url",
            &url,
        ],
        vec!["budget", "report", "team", "tokens", "--url", &url],
        vec![
            "budget",
            "set",
            "team",
            "--limit",
            "tokens=30:20",
            "--url",
            &url,
        ],
        vec!["records", "put", "r", "{not json", "--url", &url],
        vec!["records", "query", "", "--url", &url],
        vec!["budget", "show", "team", "--url", "ftp://nowhere"],
    ] {
        let out = stowage(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

#[test]
fn conformance_passes_against_a_live_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("live.db").display());
    let out = stowage(&["conformance", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("PASS  dedup::retry_with_same_key_replays_without_applying"));
    assert!(!stdout.contains("FAIL"));
    // The suite purges every namespace it created: nothing is left behind in the live store.
    let db = rusqlite::Connection::open(dir.path().join("live.db")).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'stowage%' AND name <> 'stowage_migrations'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() >= 4, "stowage tables: {tables:?}");
    for table in tables {
        let rows: i64 = db
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0, "{table} keeps {rows} rows after the suite");
    }
}

#[test]
fn conformance_passes_against_spawned_servers() {
    use stowage_testkit::servers::{postgres, valkey};
    for (backend, url) in [
        ("postgres", postgres::shared_url()),
        ("valkey", valkey::shared_url()),
        ("valkey-cluster", valkey::shared_cluster_url()),
    ] {
        let Some(url) = stowage_testkit::available(backend, url) else {
            continue;
        };
        let out = stowage(&["conformance", &url]);
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn conformance_fails_on_an_unreachable_deployment() {
    let out = stowage(&[
        "conformance",
        "postgres://nobody@127.0.0.1:1/none?acquire_timeout_ms=300",
    ]);
    assert!(!out.status.success());
}

#[test]
fn bench_writes_a_table_json_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = stowage(&[
        "bench",
        "--duration",
        "300ms",
        "--concurrency",
        "2",
        "--no-progress",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sqlite") && stdout.contains("report"));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    for op in results["backends"][0]["ops"].as_array().unwrap() {
        assert!(op["count"].as_u64().unwrap() > 0, "{op}");
        assert_eq!(op["errors"], 0);
    }
    let svg = std::fs::read_to_string(out_dir.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("sqlite"));
}

#[test]
fn bench_batch_mix_counts_reports_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = stowage(&[
        "bench",
        "--mix",
        "batch",
        "--batch-size",
        "10",
        "--duration",
        "300ms",
        "--concurrency",
        "2",
        "--no-progress",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["mix"], "batch");
    assert_eq!(results["batch_size"], 10);
    let ops = results["backends"][0]["ops"].as_array().unwrap();
    let count = |name: &str| {
        let op = ops.iter().find(|o| o["op"] == name).unwrap();
        assert_eq!(op["errors"], 0, "{op}");
        op["count"].as_u64().unwrap()
    };
    let (reports, batches) = (count("report"), count("batch"));
    assert!(batches > 0);
    assert_eq!(reports, batches * 10, "every report of every batch applied");
    assert_eq!(ops.len(), 2, "only reports and batches: {ops:?}");
}

#[test]
fn bench_refuses_a_batch_size_of_zero() {
    let out = stowage(&[
        "bench",
        "--mix",
        "batch",
        "--batch-size",
        "0",
        "--duration",
        "100ms",
        "--no-progress",
    ]);
    assert!(!out.status.success());
}
