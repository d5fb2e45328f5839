//! The one record-name pattern matcher: `*` matches any sequence, every other character is literal.

use crate::{Error, Result};

use crate::raw::show;

/// A parsed record pattern. Backends may narrow candidates by [`Pattern::literal_prefix`], then must ask [`Pattern::matches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal pieces between stars, in order.
    pieces: Vec<String>,
    /// Whether the pattern contains at least one `*`.
    has_star: bool,
}

impl Pattern {
    /// Parses `pattern` for operation `op`; the empty pattern is `InvalidInput`.
    pub fn parse(op: &str, pattern: &str) -> Result<Pattern> {
        if pattern.is_empty() {
            return Err(Error::invalid_input(format!(
                "{op}: record pattern is empty; use \"*\" to match every record"
            )));
        }
        if pattern.len() > 4 * crate::raw::validate::MAX_NAME_BYTES {
            return Err(Error::invalid_input(format!(
                "{op}: record pattern {} is {} bytes; at most {}",
                show(pattern),
                pattern.len(),
                4 * crate::raw::validate::MAX_NAME_BYTES
            )));
        }
        if pattern.contains('\0') {
            return Err(Error::invalid_input(format!(
                "{op}: record pattern {} contains a NUL character",
                show(pattern)
            )));
        }
        let pieces = pattern.split('*').map(str::to_owned).collect::<Vec<_>>();
        Ok(Pattern {
            text: pattern.to_owned(),
            has_star: pieces.len() > 1,
            pieces,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has no `*` and so names exactly one record.
    pub fn is_exact(&self) -> bool {
        !self.has_star
    }

    /// The literal text before the first `*` (the whole pattern when there is none).
    pub fn literal_prefix(&self) -> &str {
        &self.pieces[0]
    }

    /// Whether `name` matches: the pieces appear in order, the first at the start and the last at the end.
    pub fn matches(&self, name: &str) -> bool {
        if !self.has_star {
            return name == self.text;
        }
        let first = &self.pieces[0];
        let last = &self.pieces[self.pieces.len() - 1];
        if name.len() < first.len() + last.len()
            || !name.starts_with(first.as_str())
            || !name.ends_with(last.as_str())
        {
            return false;
        }
        // Greedy leftmost matching of the middle pieces is exact for patterns with `*` only.
        let mut rest = &name[first.len()..name.len() - last.len()];
        for piece in &self.pieces[1..self.pieces.len() - 1] {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// The smallest string greater than every string that starts with `prefix`, or `None` if there is none.
///
/// With `lower = prefix`, every name starting with `prefix` lies in `lower <= name < upper` in byte order,
/// which lets an ordered index narrow a pattern query by its literal prefix.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn next_char(c: char) -> Option<char> {
    let mut code = u32::from(c) + 1;
    if (0xD800..=0xDFFF).contains(&code) {
        code = 0xE000;
    }
    char::from_u32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::parse("test", pattern).unwrap().matches(name)
    }

    #[test]
    fn star_matches_any_sequence_including_empty_and_separators() {
        assert!(m("*", ""));
        assert!(m("*", "a::b.c"));
        assert!(m("a*", "a"));
        assert!(m("a*c", "ac"));
        assert!(m("a*c", "a::b.c"));
        assert!(m("*b*", "abc"));
        assert!(m("a**b", "ab"));
        assert!(!m("a*c", "ab"));
        assert!(!m("a*a", "a"));
        assert!(m("a*a", "aa"));
        assert!(m("*ab*ab", "xabyab"));
        assert!(!m("*ab*ab", "xab"));
    }

    #[test]
    fn other_characters_are_literal() {
        assert!(m("a?c", "a?c"));
        assert!(!m("a?c", "abc"));
        assert!(m("[x]%_\\", "[x]%_\\"));
        assert!(!m("%", "anything"));
        assert!(!m("_", "a"));
        assert!(!m("A*", "a"));
    }

    #[test]
    fn empty_pattern_is_invalid() {
        assert_eq!(
            Pattern::parse("query", "").unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn prefix_bounds_cover_exactly_the_prefixed_names() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        let upper = prefix_upper_bound("a\u{7F}").unwrap();
        for name in ["a\u{7F}", "a\u{7F}\u{10FFFF}\u{10FFFF}", "a\u{7F}zzz"] {
            assert!(name >= "a\u{7F}" && name < upper.as_str(), "{name:?}");
        }
        assert!("a\u{80}" >= upper.as_str());
    }
}
