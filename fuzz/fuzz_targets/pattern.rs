//! The pattern matcher agrees with a naive backtracking matcher on any pattern and name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_core::raw::Pattern;

fn naive(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| naive(rest, &name[skip..])),
        Some((c, rest)) => name.first() == Some(c) && naive(rest, &name[1..]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((pattern, name)) = text.split_once('\n') else { return };
    if pattern.chars().filter(|c| *c == '*').count() > 6 || name.len() > 64 {
        return; // keep the naive matcher fast
    }
    let Ok(parsed) = Pattern::parse("fuzz", pattern) else {
        assert!(pattern.is_empty() || pattern.contains('\0') || pattern.len() > 1024);
        return;
    };
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    assert_eq!(parsed.matches(name), naive(&p, &n), "pattern {pattern:?} name {name:?}");
});
