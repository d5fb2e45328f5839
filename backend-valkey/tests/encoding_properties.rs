//! Seeded property tests of the Valkey key and row encodings (the fuzz targets under `fuzz/`
//! explore them without bounds): injective keys, one slot per call that names cannot steer,
//! and rows that decode to what was encoded.

use std::collections::HashMap;

use stowage_valkey::{hash_slot, raw};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn name(&mut self) -> String {
        const PIECES: &[&str] = &["a", "b", ":", "{", "}", "1", ".", "2.", "{x}", "é", " "];
        let len = 1 + self.next() % 5;
        (0..len)
            .map(|_| {
                PIECES[usize::try_from(self.next() % u64::try_from(PIECES.len()).unwrap()).unwrap()]
            })
            .collect()
    }
}

#[test]
fn keys_are_injective_and_each_call_stays_in_one_slot() {
    let mut rng = Rng(42);
    let mut owner: HashMap<String, (String, String, String)> = HashMap::new();
    for _ in 0..20_000 {
        let (ns, budget, key) = (rng.name(), rng.name(), rng.name());
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
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let at = rng.next() >> 1;
        let key = if rng.next() % 2 == 0 {
            String::new()
        } else {
            rng.name()
        };
        let member = raw::encode_row(at, rng.next() >> 12, &key, "[1,\"x\"]");
        let row = raw::decode_row("r", member.as_bytes()).unwrap();
        assert_eq!(row.stored_at, at);
        assert_eq!(row.value, serde_json::json!([1, "x"]));
        let cut = usize::try_from(rng.next() % 40).unwrap();
        assert!(raw::decode_row("r", &member.as_bytes()[..cut]).is_err());
    }
}
