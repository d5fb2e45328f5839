//! Valkey keys are injective, and every key of one call lands in one slot that names cannot steer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_valkey::{hash_slot, raw};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parts: Vec<&str> = text.split('\u{1}').collect();
    if parts.len() < 6 {
        return;
    }
    let (a, b) = ((parts[0], parts[1], parts[2]), (parts[3], parts[4], parts[5]));
    let keys_a = raw::budget_call_keys(a.0, a.1, Some(a.2));
    let keys_b = raw::budget_call_keys(b.0, b.1, Some(b.2));
    for (i, key) in keys_a.iter().enumerate() {
        // Counters and policy belong to (namespace, budget); the dedup record also to the key.
        let same_owner = if i < 2 { (a.0, a.1) == (b.0, b.1) } else { a == b };
        assert_eq!(key == &keys_b[i], same_owner, "{a:?} vs {b:?}: {key}");
        assert_eq!(hash_slot(key), hash_slot(&keys_a[0]), "one call, one slot");
    }
    let rows_a = raw::record_call_keys(a.0, a.1);
    let rows_b = raw::record_call_keys(b.0, b.1);
    assert_eq!(rows_a == rows_b, (a.0, a.1) == (b.0, b.1));
    assert!(rows_a.iter().all(|k| hash_slot(k) == hash_slot(&rows_a[0])));
});
