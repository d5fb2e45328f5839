//! Seeded property tests of the Valkey key and row encodings (the fuzz targets under `fuzz/`
//! explore them without bounds): injective keys, one slot per call that names cannot steer,
//! and rows that decode to what was encoded.

use std::collections::HashMap;

use stowage_conformance::rng::Rng;
use stowage_valkey::{hash_slot, raw};

/// Random names built from pieces that matter to the encoding: separators, braces, digits, dots.
fn name(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &["a", "b", ":", "{", "}", "1", ".", "2.", "{x}", "é", " "];
    let len = 1 + rng.below(5);
    (0..len).map(|_| *rng.pick(PIECES)).collect()
}

#[test]
fn keys_are_injective_and_each_call_stays_in_one_slot() {
    let mut rng = Rng::new(42);
    let mut owner: HashMap<String, (String, String, String)> = HashMap::new();
    for _ in 0..20_000 {
        let (ns, budget, key) = (name(&mut rng), name(&mut rng), name(&mut rng));
        let keys = raw::budget_call_keys(&ns, &budget, Some(&key));
        let slot = hash_slot(&keys[0]);
        assert!(keys.iter().all(|k| hash_slot(k) == slot), "{keys:?}");
        let dedup = keys[2].clone();
        let who = (ns.clone(), budget.clone(), key.clone());
        if let Some(previous) = owner.insert(dedup.clone(), who.clone()) {
            assert_eq!(previous, who, "{dedup} is shared");
        }
        let rows = raw::record_call_keys(&ns, &budget);
        assert!(rows.iter().all(|k| hash_slot(k) == hash_slot(&rows[0])));
        // The slot depends on the tag only: braces inside names never change it.
        let tag_end = keys[0].find('}').unwrap();
        assert_eq!(hash_slot(&keys[0][..=tag_end]), slot);
    }
}

#[test]
fn rows_decode_to_what_was_encoded() {
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let at = rng.next_u64() >> 1;
        let key = if rng.chance(50) {
            String::new()
        } else {
            name(&mut rng)
        };
        let member = raw::encode_row(at, rng.next_u64() >> 12, &key, "[1,\"x\"]");
        let row = raw::decode_row("r", member.as_bytes()).unwrap();
        assert_eq!(row.stored_at, at);
        assert_eq!(row.value, serde_json::json!([1, "x"]));
        let cut = rng.index(40);
        assert!(raw::decode_row("r", &member.as_bytes()[..cut]).is_err());
    }
}
