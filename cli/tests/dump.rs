//! `stowage export`, `import`, `digest`, `copy` and `purge` end to end on SQLite files and the
//! in-memory model: round trips with equal digests, refused targets and hostile dumps with their
//! exit statuses.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use stowage_conformance::cases::dump::EMPTY_DIGEST;

fn stowage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(args)
        .output()
        .expect("run stowage")
}

/// Runs `stowage` with `input` on standard input.
fn stowage_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stowage");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for stowage")
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

fn digest(url: &str, namespace: &str) -> String {
    let out = stowage(&["digest", url, "--namespace", namespace]);
    let text = String::from_utf8(ok(&out).stdout.clone()).unwrap();
    let digest = text.trim().to_owned();
    assert_eq!(digest.len(), 64, "a SHA-256 in hex: {text:?}");
    digest
}

/// Item lines of a dump: everything but the header (which carries the export's clock reading).
fn items_of(dump: &[u8]) -> Vec<&[u8]> {
    dump.split(|b| *b == b'\n').skip(1).collect()
}

/// Fills namespace `ns` of `url` through the CLI: a windowed and a lifetime policy, usage with a
/// dedup key, a live hold and records (one with an idempotency key).
fn fill(url: &str, ns: &str) {
    let t = ["--url", url, "--namespace", ns];
    let run = |args: &[&str]| {
        ok(&stowage(&[args, &t[..]].concat()));
    };
    run(&["budget", "set", "team", "--limit", "tokens=8:10"]);
    run(&[
        "budget", "set", "daily", "--limit", "usd=:500", "--window", "day",
    ]);
    run(&["budget", "report", "team", "tokens=4", "--key", "req-1"]);
    run(&["budget", "report", "daily", "usd=7"]);
    run(&[
        "budget", "reserve", "-b", "team", "--id", "job-1", "--ttl", "1h", "tokens=2",
    ]);
    run(&[
        "records",
        "put",
        "orders",
        r#"{"id":1,"total":12.5}"#,
        "--at",
        "100",
    ]);
    run(&[
        "records",
        "put",
        "orders",
        r#"{"id":2}"#,
        "--at",
        "100",
        "--key",
        "o-2",
    ]);
    run(&["records", "put", "users/ada", r#""hello""#, "--at", "50"]);
}

#[test]
fn export_then_import_between_sqlite_files_keeps_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (
        sqlite_url(dir.path(), "a.db"),
        sqlite_url(dir.path(), "b.db"),
    );
    fill(&source, "app");
    let before = digest(&source, "app");
    assert_ne!(before, EMPTY_DIGEST);

    let file = dir.path().join("app.dump");
    let file_arg = file.to_str().unwrap();
    ok(&stowage(&[
        "export",
        &source,
        "-o",
        file_arg,
        "--namespace",
        "app",
    ]));
    let dump = std::fs::read(&file).unwrap();
    // Standard output gets the same items.
    let streamed = stowage(&["export", &source, "--namespace", "app"]);
    assert_eq!(items_of(&ok(&streamed).stdout), items_of(&dump));

    ok(&stowage(&[
        "import",
        &target,
        "-i",
        file_arg,
        "--namespace",
        "app",
    ]));
    assert_eq!(digest(&target, "app"), before);
    let again = stowage(&["export", &target, "--namespace", "app"]);
    assert_eq!(items_of(&ok(&again).stdout), items_of(&dump));

    // From standard input into another namespace: the digest does not depend on it.
    ok(&stowage_with_input(
        &["import", &target, "--namespace", "other"],
        &dump,
    ));
    assert_eq!(digest(&target, "other"), before);
}

#[test]
fn export_does_not_overwrite_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "a.db");
    fill(&url, "default");
    let file = dir.path().join("kept.dump");
    std::fs::write(&file, b"precious").unwrap();
    let file_arg = file.to_str().unwrap();
    let refused = stowage(&["export", &url, "-o", file_arg]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    ok(&stowage(&["export", &url, "-o", file_arg, "--force"]));
    let dump = std::fs::read(&file).unwrap();
    assert!(dump.starts_with(b"{\"format\":\"stowage-dump\""));
    // No partial file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains(".partial-")),
        "{names:?}"
    );
}

#[test]
fn copy_between_sqlite_files_verifies_the_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (
        sqlite_url(dir.path(), "a.db"),
        sqlite_url(dir.path(), "b.db"),
    );
    fill(&source, "app");
    let before = digest(&source, "app");
    ok(&stowage(&[
        "copy",
        &source,
        &target,
        "--namespace",
        "app",
        "--to-namespace",
        "moved",
        "--verify",
    ]));
    assert_eq!(digest(&target, "moved"), before);
    assert_eq!(digest(&target, "app"), EMPTY_DIGEST);
    // The copy answers as the original: the dedup key replays, the hold is still held.
    let replay = stowage(&[
        "budget",
        "report",
        "team",
        "tokens=4",
        "--key",
        "req-1",
        "--url",
        &target,
        "--namespace",
        "moved",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_slice(&ok(&replay).stdout).unwrap();
    assert_eq!(answer["replayed"], true);
    let shown = stowage(&[
        "budget",
        "show",
        "team",
        "--url",
        &target,
        "--namespace",
        "moved",
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_slice(&ok(&shown).stdout).unwrap();
    assert_eq!(shown["usage"]["tokens"], 4);
    assert_eq!(shown["pending"]["tokens"], 2);
}

#[test]
fn a_target_that_is_not_empty_is_refused_with_status_2_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (
        sqlite_url(dir.path(), "a.db"),
        sqlite_url(dir.path(), "b.db"),
    );
    fill(&source, "default");
    ok(&stowage(&[
        "records", "put", "mine", "1", "--at", "1", "--url", &target,
    ]));
    let kept = digest(&target, "default");

    let copied = stowage(&["copy", &source, &target]);
    assert_eq!(copied.status.code(), Some(2));
    let file = dir.path().join("a.dump");
    ok(&stowage(&["export", &source, "-o", file.to_str().unwrap()]));
    let imported = stowage(&["import", &target, "-i", file.to_str().unwrap()]);
    assert_eq!(imported.status.code(), Some(2));
    assert_eq!(digest(&target, "default"), kept);

    // A copy onto itself is refused before anything is read.
    let itself = stowage(&["copy", &source, &source]);
    assert_eq!(itself.status.code(), Some(2));
}

fn small_dump(lines: &[&str]) -> Vec<u8> {
    let mut dump = String::from(
        "{\"format\":\"stowage-dump\",\"version\":1,\"namespace\":\"x\",\"exported_at\":1}\n",
    );
    for line in lines {
        dump.push_str(line);
        dump.push('\n');
    }
    dump.push_str(&format!(
        "{{\"end\":\"stowage-dump\",\"items\":{}}}\n",
        lines.len()
    ));
    dump.into_bytes()
}

#[test]
fn hostile_dumps_exit_with_status_2_and_purge_empties_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "t.db");
    let policy = r#"{"policy":"a","limits":{"t":{"hard":10,"soft":null}},"window":null}"#;
    let record = r#"{"record":"r","stored_at":5,"value":{"v":1}}"#;
    let hostile = [
        b"not a dump\n".to_vec(),
        small_dump(&[record, policy]),
        small_dump(&[r#"{"counters":"a","window":null,"values":{"t":9223372036854775808}}"#]),
        {
            let cut = small_dump(&[policy]);
            cut[..cut.len() - 5].to_vec()
        },
    ];
    for dump in &hostile {
        let out = stowage_with_input(&["import", &url], dump);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(digest(&url, "default"), EMPTY_DIGEST);
    }
    // A good dump still imports afterwards.
    ok(&stowage_with_input(
        &["import", &url],
        &small_dump(&[policy, record]),
    ));
    assert_ne!(digest(&url, "default"), EMPTY_DIGEST);
    // Purge needs --namespace and --yes.
    assert_eq!(stowage(&["purge", &url, "--yes"]).status.code(), Some(2));
    assert_eq!(
        stowage(&["purge", &url, "--namespace", "default"])
            .status
            .code(),
        Some(2)
    );
    assert_ne!(digest(&url, "default"), EMPTY_DIGEST);
    ok(&stowage(&[
        "purge",
        &url,
        "--namespace",
        "default",
        "--yes",
    ]));
    assert_eq!(digest(&url, "default"), EMPTY_DIGEST);
}

#[test]
fn the_model_exports_an_empty_dump_and_refuses_hostile_input() {
    let out = stowage(&["digest", "memory://"]);
    assert_eq!(
        String::from_utf8(ok(&out).stdout.clone()).unwrap().trim(),
        EMPTY_DIGEST
    );
    let out = stowage(&["export", "memory://", "--namespace", "n"]);
    let lines: Vec<_> = ok(&out).stdout.split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 3, "header, trailer, and the empty rest");
    assert_eq!(lines[1], b"{\"end\":\"stowage-dump\",\"items\":0}");
    let out = stowage_with_input(&["import", "memory://"], b"{\"format\":\"stowage-dump\"}\n");
    assert_eq!(out.status.code(), Some(2));
    let out = stowage_with_input(&["import", "memory://"], &small_dump(&[]));
    ok(&out);
    // An unknown scheme is bad input; a missing input file too.
    assert_eq!(stowage(&["digest", "nosuch://x"]).status.code(), Some(2));
    assert_eq!(
        stowage(&["import", "memory://", "-i", "/nonexistent/dump"])
            .status
            .code(),
        Some(2)
    );
    // An unreachable server is not bad input.
    let out = stowage(&[
        "digest",
        "postgres://nobody@127.0.0.1:1/none?acquire_timeout_ms=300",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn copy_moves_a_sqlite_file_to_spawned_servers_and_back() {
    use stowage_testkit::servers::{postgres, valkey};
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite_url(dir.path(), "app.db");
    fill(&source, "default");
    let before = digest(&source, "default");
    for (backend, url) in [
        ("postgres", postgres::shared_url()),
        ("valkey", valkey::shared_url()),
        ("valkey-cluster", valkey::shared_cluster_url()),
    ] {
        let Some(url) = stowage_testkit::available(backend, url) else {
            continue;
        };
        let ns = stowage_testkit::unique_namespace("cli-copy");
        ok(&stowage(&[
            "copy",
            &source,
            &url,
            "--to-namespace",
            &ns,
            "--verify",
        ]));
        assert_eq!(digest(&url, &ns), before, "{backend}");
        // And back into a fresh SQLite file.
        let back = sqlite_url(dir.path(), &format!("{backend}.db"));
        ok(&stowage(&[
            "copy",
            &url,
            &back,
            "--namespace",
            &ns,
            "--to-namespace",
            "default",
        ]));
        assert_eq!(digest(&back, "default"), before, "{backend} → sqlite");
        ok(&stowage(&["purge", &url, "--namespace", &ns, "--yes"]));
        assert_eq!(digest(&url, &ns), EMPTY_DIGEST, "{backend} purged");
    }
}
