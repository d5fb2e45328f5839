//! The suite run on the reference model through `Arc<dyn Backend>`.

use std::sync::Arc;

stowage_conformance::conformance_tests!("memory", Ok(Arc::new(stowage_conformance::MemoryHarness)));

/// Each case module's own list makes the tests and `all_cases` alike: same names, same order.
#[test]
fn every_case_has_a_test_of_its_name() {
    let listed = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--list", "--format", "terse"])
        .output()
        .expect("list the tests");
    assert!(listed.status.success());
    let tests: std::collections::BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .filter(|name| name.contains("::"))
        .map(str::to_owned)
        .collect();
    let cases: Vec<&str> = stowage_conformance::all_cases()
        .iter()
        .map(|case| case.name)
        .collect();
    let distinct: std::collections::BTreeSet<String> =
        cases.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(distinct.len(), cases.len(), "case names repeat");
    assert_eq!(tests, distinct);
}
