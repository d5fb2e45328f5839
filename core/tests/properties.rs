//! Seeded property tests of the shared encodings (the fuzz targets under `fuzz/` explore the same
//! properties without bounds): the pattern matcher against a naive matcher, and prefix narrowing.

use stowage_core::raw::pattern::prefix_upper_bound;
use stowage_core::raw::Pattern;

/// SplitMix64: a seed gives the same cases everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn text(&mut self, alphabet: &[char], max_len: u64) -> String {
        let len = self.next() % (max_len + 1);
        (0..len)
            .map(|_| {
                alphabet
                    [usize::try_from(self.next() % u64::try_from(alphabet.len()).unwrap()).unwrap()]
            })
            .collect()
    }
}

fn naive(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| naive(rest, &name[skip..])),
        Some((c, rest)) => name.first() == Some(c) && naive(rest, &name[1..]),
    }
}

const ALPHABET: &[char] = &[
    'a',
    'b',
    ':',
    '*',
    '?',
    '%',
    '_',
    '\\',
    '[',
    'é',
    '\u{10FFFF}',
    '\u{7f}',
    '\u{80}',
];

#[test]
fn matcher_agrees_with_a_naive_matcher() {
    let mut rng = Rng(0x5EED);
    for _ in 0..50_000 {
        let pattern = rng.text(ALPHABET, 8);
        let name = rng.text(&ALPHABET[..ALPHABET.len()], 10).replace('*', "a");
        let Ok(parsed) = Pattern::parse("test", &pattern) else {
            assert!(pattern.is_empty());
            continue;
        };
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        assert_eq!(parsed.matches(&name), naive(&p, &n), "{pattern:?} {name:?}");
    }
}

#[test]
fn prefix_range_holds_exactly_the_prefixed_names() {
    let mut rng = Rng(0xFEED);
    for _ in 0..50_000 {
        let prefix = rng.text(ALPHABET, 4);
        let name = rng.text(ALPHABET, 6);
        let in_range =
            name >= prefix && prefix_upper_bound(&prefix).is_none_or(|upper| name < upper);
        assert_eq!(in_range, name.starts_with(&prefix), "{prefix:?} {name:?}");
    }
}
