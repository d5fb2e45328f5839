//! The one encoding of names into Valkey keys (key layout 2).
//!
//! **Namespace ids.** A namespace is spelled in keys by a short id registered once per
//! namespace, as PostgreSQL registers its namespaces: the hash [`NAMESPACE_IDS`] maps the
//! namespace name to a decimal id drawn from the counter [`NAMESPACE_NEXT`] (`INCR`), written by
//! `HSETNX` so that two processes using a new namespace at once agree on the first id written
//! (see `backend.rs`). Both registry keys share the hash tag `{ns}` (their own slot on a cluster).
//! An id is never reused and never removed (`purge` deletes the namespace's data, not its id), so
//! name → id is injective, and a namespace used again after `purge` keeps its id.
//!
//! **Data keys** are `stw:{TAG}:<kind>:` followed by length-prefixed names (`<byte length>.<name>`):
//! the namespace id first, then the budget or record name, then (dedup records) the dedup key. The
//! length prefixes make the encoding injective: `a:b`/`c` and `a`/`b:c` never meet, so two
//! different (namespace, budget, key) triples never share a key. `TAG` is 4 hex digits folded from
//! a 64-bit FNV-1a hash of the encoded namespace id and budget (or record): it contains no brace
//! and comes first, so the hash slot is decided by the tag alone and no name can steer it (the
//! tag only places keys: two budgets may share a tag, never a key). Every key one call touches
//! shares the tag, so each script runs on one cluster slot.
//!
//! Layout 1 (before issue 13) spelled the namespace name in full and a 16-digit tag; its keys
//! (`stw:{<16 hex>}:…`) are never read by layout 2 (the project is unreleased: no migration).
//!
//! **Temporary keys** (kind `t`, [`temp_key`]): an export's sorted set of one section's names
//! (`dump.rs`), with an expiry; in the namespace's key space so that `purge` removes them, and no
//! part of its data (`is_empty` ignores them).
//!
//! In this module, `namespace` arguments are the namespace's id as keys spell it (see
//! `ValkeyBackend::key_namespace`), except in the registry functions.

/// Hash: namespace name → its decimal id (key layout 2).
pub const NAMESPACE_IDS: &str = "stw:{ns}:ids";
/// Counter: the last namespace id drawn.
pub const NAMESPACE_NEXT: &str = "stw:{ns}:next";

/// Appends `<byte length>.<name>` to `out`.
fn push_name(out: &mut String, name: &str) {
    out.push_str(&name.len().to_string());
    out.push('.');
    out.push_str(name);
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `stw:{TAG}:<kind>:<names…>` where TAG folds the hash of the first `tagged` names to 16 bits
/// (more than the 14 bits of a cluster slot).
fn key(kind: &str, names: &[&str], tagged: usize) -> String {
    let mut tag_source = String::new();
    for name in &names[..tagged] {
        push_name(&mut tag_source, name);
    }
    let hash = fnv1a(tag_source.as_bytes());
    let tag = (hash ^ (hash >> 16) ^ (hash >> 32) ^ (hash >> 48)) & 0xffff;
    let mut key = format!("stw:{{{tag:04x}}}:{kind}:");
    for name in names {
        push_name(&mut key, name);
    }
    key
}

/// The keys of one budget.
#[derive(Debug, Clone)]
pub(crate) struct BudgetKeys {
    /// Hash: dimension → counter.
    pub(crate) counters: String,
    /// Hash: dimension → "soft,hard"; field "" marks that a policy exists and holds its window
    /// spec (`"1"`: no window).
    pub(crate) policy: String,
    /// Hash: the window the counters belong to: `spec`, `start`, `end` (decimal ms).
    pub(crate) window: String,
    /// Hash: reservation id → the encoded `Reservation` (see `reservations.rs`).
    pub(crate) reservations: String,
    /// Sorted set (scores 0, read by `ZRANGEBYLEX`): `<expires_at, 19 digits><id>` of every hold
    /// not yet resolved or swept.
    pub(crate) held: String,
    /// Hash: dimension → amount held by the holds of `held` (decimal; absent when 0).
    pub(crate) pending: String,
    /// Sorted set (scores 0, lexicographic): `<forget_at, 19 digits><id>`, the order in which
    /// reservation ids are forgotten (a stale member is checked against the record first).
    pub(crate) forget: String,
}

impl BudgetKeys {
    /// The keys of a reservation script for this budget, in the order `lib.lua` reads them.
    pub(crate) fn reservation_keys(&self) -> [&str; 7] {
        [
            &self.counters,
            &self.policy,
            &self.window,
            &self.reservations,
            &self.held,
            &self.pending,
            &self.forget,
        ]
    }
}

pub(crate) fn budget_keys(namespace: &str, budget: &str) -> BudgetKeys {
    BudgetKeys {
        counters: key("c", &[namespace, budget], 2),
        policy: key("p", &[namespace, budget], 2),
        window: key("w", &[namespace, budget], 2),
        reservations: key("v", &[namespace, budget], 2),
        held: key("x", &[namespace, budget], 2),
        pending: key("h", &[namespace, budget], 2),
        forget: key("f", &[namespace, budget], 2),
    }
}

/// String holding the dedup record of (budget, key): same tag as the budget's keys; its value is
/// described in `report_usage.lua`.
pub(crate) fn dedup_key(namespace: &str, budget: &str, dedup_key: &str) -> String {
    key("d", &[namespace, budget, dedup_key], 2)
}

/// The keys of one record.
#[derive(Debug, Clone)]
pub(crate) struct RecordKeys {
    /// Sorted set of rows (member = time, store order, key, value).
    pub(crate) rows: String,
    /// Store-order counter.
    pub(crate) seq: String,
    /// Hash: idempotency key → member.
    pub(crate) idempotency: String,
}

pub(crate) fn record_keys(namespace: &str, record: &str) -> RecordKeys {
    RecordKeys {
        rows: key("r", &[namespace, record], 2),
        seq: key("q", &[namespace, record], 2),
        idempotency: key("i", &[namespace, record], 2),
    }
}

/// Sorted set (scores 0) of the record names of a namespace, for prefix-narrowed pattern queries.
pub(crate) fn name_index(namespace: &str) -> String {
    key("n", &[namespace], 1)
}

/// Every key a budget call touches: counters, policy, the dedup record when `dedup_key` is
/// given, and last the stored window.
pub fn budget_call_keys(namespace: &str, budget: &str, dedup_key: Option<&str>) -> Vec<String> {
    let k = budget_keys(namespace, budget);
    let mut all = vec![k.counters, k.policy];
    if let Some(key) = dedup_key {
        all.push(self::dedup_key(namespace, budget, key));
    }
    all.push(k.window);
    all
}

/// Every key a record call touches (rows, store-order counter, idempotency keys).
pub fn record_call_keys(namespace: &str, record: &str) -> Vec<String> {
    let k = record_keys(namespace, record);
    vec![k.rows, k.seq, k.idempotency]
}

/// A `SCAN MATCH` glob matching every key of `namespace` and no other: every kind of key is
/// `stw:{<16 hex>}:<one letter>:` followed by the length-prefixed namespace first, so the glob is
/// that prefix with the namespace's glob characters (`*?[]\`) escaped, then `*`. The length
/// prefix ends at the first `.`, so `<len>.<namespace>` can only begin a key of this namespace.
pub(crate) fn namespace_pattern(namespace: &str) -> String {
    let mut pattern = String::from("stw:{????}:?:");
    pattern.push_str(&namespace.len().to_string());
    pattern.push('.');
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// A `SCAN MATCH` glob matching the keys of `namespace` whose kind letter is one of `kinds`
/// (e.g. `"cw"`): [`namespace_pattern`] narrowed to those kinds.
pub(crate) fn kind_pattern(namespace: &str, kinds: &str) -> String {
    let all = namespace_pattern(namespace);
    let rest = &all["stw:{????}:?".len()..];
    format!("stw:{{????}}:[{kinds}]{rest}")
}

/// The kind letter of a data key (`c`, `p`, `d`, …), or `None` for a key of another shape.
pub(crate) fn kind_of(key: &[u8]) -> Option<u8> {
    (key.len() > 13 && key.starts_with(b"stw:{") && key[9] == b'}' && key[12] == b':')
        .then(|| key[11])
}

/// The names a data key spells after its kind (namespace id first), decoded from their length
/// prefixes; `None` when the key is not one of layout 2's or a name is not UTF-8.
pub(crate) fn names_of(key: &[u8]) -> Option<Vec<String>> {
    kind_of(key)?;
    let mut rest = &key[13..];
    let mut names = Vec::new();
    while !rest.is_empty() {
        let dot = rest.iter().position(|b| *b == b'.')?;
        let len: usize = std::str::from_utf8(&rest[..dot]).ok()?.parse().ok()?;
        let end = dot.checked_add(1)?.checked_add(len)?;
        let name = rest.get(dot + 1..end)?;
        names.push(String::from_utf8(name.to_vec()).ok()?);
        rest = &rest[end..];
    }
    Some(names)
}

/// A temporary key of the namespace (kind `t`, so that `purge` removes it and no other kind
/// meets it): an export's sorted set of the names of one section, `suffix` telling exports apart.
pub(crate) fn temp_key(namespace: &str, suffix: &str) -> String {
    key("t", &[namespace, suffix], 2)
}

/// The cluster hash slot of `key`, by Valkey's rules (CRC16/XMODEM of the hash tag or the whole key, mod 16384).
pub fn hash_slot(key: &str) -> u16 {
    slot_of(key.as_bytes())
}

/// [`hash_slot`] of a key as bytes.
pub(crate) fn slot_of(bytes: &[u8]) -> u16 {
    let mut hashed = bytes;
    if let Some(open) = bytes.iter().position(|b| *b == b'{') {
        if let Some(len) = bytes[open + 1..].iter().position(|b| *b == b'}') {
            if len > 0 {
                hashed = &bytes[open + 1..open + 1 + len];
            }
        }
    }
    let mut crc: u16 = 0;
    for b in hashed {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NAMES: &[&str] = &[
        "a", "b", "a:b", "b:c", "c", "{x}", "}", "{", "1.a", "", "2.ab", "a.b", "{}", "🦀",
    ];

    #[test]
    fn slot_function_matches_valkey_examples() {
        // Known values from the cluster specification: keys with the same tag share a slot.
        assert_eq!(hash_slot("123456789"), 0x31C3); // CRC16/XMODEM check value
        assert_eq!(
            hash_slot("{user1000}.following"),
            hash_slot("{user1000}.followers")
        );
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
        assert_ne!(hash_slot("foo{}{bar}"), hash_slot("bar"));
    }

    #[test]
    fn the_namespace_pattern_escapes_glob_characters() {
        assert_eq!(
            namespace_pattern(r"a*?[x]\b"),
            r"stw:{????}:?:8.a\*\?\[x\]\\b*"
        );
        assert_eq!(namespace_pattern("é"), "stw:{????}:?:2.é*");
        // Every kind of key of the namespace starts with the pattern's literal prefix.
        for key in [
            name_index("ns"),
            budget_keys("ns", "b").counters,
            budget_keys("ns", "b").policy,
            budget_keys("ns", "b").window,
            budget_keys("ns", "b").reservations,
            budget_keys("ns", "b").held,
            budget_keys("ns", "b").pending,
            budget_keys("ns", "b").forget,
            dedup_key("ns", "b", "k"),
            record_keys("ns", "r").rows,
            record_keys("ns", "r").seq,
            record_keys("ns", "r").idempotency,
        ] {
            assert!(
                key.starts_with("stw:{") && key[9..].starts_with("}:"),
                "{key}"
            );
            assert!(key.as_bytes()[11].is_ascii_lowercase(), "{key}");
            assert!(key[12..].starts_with(":2.ns"), "{key}");
            // The registry is no key of any namespace.
            assert!(!NAMESPACE_IDS.starts_with(&key[..10]));
        }
    }

    #[test]
    fn data_keys_decode_into_their_names() {
        for ns in NAMES {
            for a in NAMES {
                let b = budget_keys(ns, a);
                for key in [b.counters, b.policy, b.window, b.reservations, b.held] {
                    assert_eq!(
                        names_of(key.as_bytes()),
                        Some(vec![ns.to_string(), a.to_string()])
                    );
                }
                for k in NAMES {
                    let key = dedup_key(ns, a, k);
                    assert_eq!(kind_of(key.as_bytes()), Some(b'd'));
                    assert_eq!(
                        names_of(key.as_bytes()),
                        Some(vec![ns.to_string(), a.to_string(), k.to_string()])
                    );
                }
            }
            let temp = temp_key(ns, "0123");
            assert_eq!(kind_of(temp.as_bytes()), Some(b't'));
            // The namespace comes first, as in every data key: its pattern (purge) covers it.
            assert_eq!(
                names_of(temp.as_bytes()),
                Some(vec![ns.to_string(), "0123".to_string()])
            );
        }
        assert_eq!(names_of(b"stw:{abcd}:c:3.ab"), None, "a name cut short");
        assert_eq!(names_of(b"stw:{abcd}:c:x.a"), None);
        assert_eq!(kind_of(NAMESPACE_IDS.as_bytes()), None);
        assert_eq!(kind_pattern("1*", "cw"), r"stw:{????}:[cw]:2.1\**");
    }

    #[test]
    fn encodings_are_injective() {
        // Every key, mapped back to what it stores; a second, different owner would be a collision.
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut claim = |key: String, owner: String| {
            if let Some(previous) = owners.insert(key.clone(), owner.clone()) {
                assert_eq!(previous, owner, "key {key} is shared");
            }
        };
        for ns in NAMES {
            claim(name_index(ns), format!("index {ns:?}"));
            for a in NAMES {
                let b = budget_keys(ns, a);
                claim(b.counters, format!("counters {ns:?} {a:?}"));
                claim(b.policy, format!("policy {ns:?} {a:?}"));
                claim(b.window, format!("window {ns:?} {a:?}"));
                claim(b.reservations, format!("reservations {ns:?} {a:?}"));
                claim(b.held, format!("held {ns:?} {a:?}"));
                claim(b.pending, format!("pending {ns:?} {a:?}"));
                claim(b.forget, format!("forget {ns:?} {a:?}"));
                let r = record_keys(ns, a);
                claim(r.rows, format!("rows {ns:?} {a:?}"));
                claim(r.seq, format!("seq {ns:?} {a:?}"));
                claim(r.idempotency, format!("idempotency {ns:?} {a:?}"));
                for k in NAMES {
                    claim(dedup_key(ns, a, k), format!("dedup {ns:?} {a:?} {k:?}"));
                }
            }
        }
        assert_ne!(
            budget_keys("n", "a:b").counters,
            budget_keys("n", "a").counters
        );
        assert_ne!(dedup_key("n", "a:b", "c"), dedup_key("n", "a", "b:c"));
        assert_ne!(record_keys("n", "x:k").rows, record_keys("n", "x").rows);
    }

    #[test]
    fn every_key_of_a_call_shares_a_slot_that_names_cannot_steer() {
        for ns in NAMES {
            for name in NAMES {
                let b = budget_keys(ns, name);
                let slot = hash_slot(&b.counters);
                assert_eq!(hash_slot(&b.policy), slot);
                assert_eq!(hash_slot(&b.window), slot);
                for k in b.reservation_keys() {
                    assert_eq!(hash_slot(k), slot);
                }
                for key in NAMES {
                    assert_eq!(hash_slot(&dedup_key(ns, name, key)), slot);
                }
                let r = record_keys(ns, name);
                let slot = hash_slot(&r.rows);
                assert_eq!(hash_slot(&r.seq), slot);
                assert_eq!(hash_slot(&r.idempotency), slot);
                // The tag is the first braces: exactly the 4 hex digits after "stw:".
                assert_eq!(&r.rows[4..5], "{");
                assert_eq!(&r.rows[9..10], "}");
                assert!(r.rows[5..9].bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
    }
}
