//! SQL backends narrow a pattern by `prefix <= name < prefix_upper_bound(prefix)`: exactly the names with that prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_core::raw::pattern::prefix_upper_bound;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((prefix, name)) = text.split_once('\n') else { return };
    let in_range = name >= prefix && prefix_upper_bound(prefix).is_none_or(|upper| name < upper.as_str());
    assert_eq!(in_range, name.starts_with(prefix), "prefix {prefix:?} name {name:?}");
});
