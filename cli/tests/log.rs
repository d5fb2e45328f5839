//! `stowage --log LEVEL`: the library's spans reach stderr; a bad level is bad input.

use std::process::Command;

#[test]
fn log_prints_one_span_per_operation_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args([
            "--log",
            "stowage=debug",
            "budget",
            "report",
            "team",
            "tokens=5",
        ])
        .args(["--key", "k1", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let close = stderr
        .lines()
        .find(|l| l.contains("op=\"report_usage\"") && l.contains("close"))
        .unwrap_or_else(|| panic!("no closed report_usage span in:\n{stderr}"));
    for field in [
        "backend=\"sqlite\"",
        "name=\"team\"",
        "outcome=\"ok\"",
        "replayed=false",
    ] {
        assert!(close.contains(field), "{field} missing from {close}");
    }
}

#[test]
fn a_bad_log_level_is_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args([
            "--log",
            "stowage=[",
            "budget",
            "show",
            "team",
            "--url",
            "memory://",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
