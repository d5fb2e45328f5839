//! Rows as sorted-set members: `stored_at`(16 hex) `seq`(16 hex) `keylen`(8 hex) `key` `value`.
//!
//! All scores are 0, so members order by bytes: by time, then by store order, exactly, with no
//! double ever involved. Time windows are lexicographic ranges over the first 16 hex digits.

use stowage_core::raw::show;
use stowage_core::{Error, Result, MAX_AMOUNT};

/// 16 lowercase hex digits of `ms`.
pub(crate) fn time_hex(ms: u64) -> String {
    format!("{ms:016x}")
}

/// The member `store.lua` writes for one row: time, store order, key length, key, value.
pub(crate) fn encode_row(stored_at: u64, seq: u64, key: &str, value: &str) -> String {
    format!(
        "{}{seq:016x}{:08x}{key}{value}",
        time_hex(stored_at),
        key.len()
    )
}

/// The `ZRANGEBYLEX` minimum that keeps rows at or after `start` (every row when `start` is 0).
pub(crate) fn lex_min(start: u64) -> String {
    if start == 0 {
        "-".to_owned()
    } else {
        format!("[{}", time_hex(start))
    }
}

/// The `ZRANGEBYLEX` maximum that keeps rows at or before `end` (every row when `end` is
/// `MAX_AMOUNT`; below it `end + 1` fits).
pub(crate) fn lex_max(end: u64) -> String {
    match end.checked_add(1).filter(|_| end < MAX_AMOUNT) {
        Some(above) => format!("({}", time_hex(above)),
        None => "+".to_owned(),
    }
}

/// The `ZRANGEBYLEX` maximum that keeps rows strictly before `older_than`.
pub(crate) fn lex_before(older_than: u64) -> String {
    format!("({}", time_hex(older_than))
}

/// Splits one member of record `name` into its time and its value text; anything malformed is
/// `Corruption`.
pub(crate) fn split_member<'m>(op: &str, name: &str, member: &'m [u8]) -> Result<(u64, &'m str)> {
    let corrupt = || {
        Error::corruption(format!(
            "{op}: a stored row of record {} cannot be decoded",
            show(name)
        ))
    };
    if member.len() < 40 {
        return Err(corrupt());
    }
    let hex = |range: std::ops::Range<usize>| {
        std::str::from_utf8(&member[range])
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    let stored_at = hex(0..16).ok_or_else(corrupt)?;
    let key_len = hex(32..40)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(corrupt)?;
    let value_at = 40usize
        .checked_add(key_len)
        .filter(|at| *at <= member.len())
        .ok_or_else(corrupt)?;
    let text = std::str::from_utf8(&member[value_at..]).map_err(|e| corrupt().with_source(e))?;
    Ok((stored_at, text))
}

/// Splits one member of record `name` into its time, its idempotency key (`""` for none) and
/// its value text; anything malformed is `Corruption`.
pub(crate) fn split_row<'m>(
    op: &str,
    name: &str,
    member: &'m [u8],
) -> Result<(u64, &'m str, &'m str)> {
    let (stored_at, value) = split_member(op, name, member)?;
    let key_at = 40;
    let key_end = member.len() - value.len();
    let key = std::str::from_utf8(&member[key_at..key_end]).map_err(|e| {
        Error::corruption(format!(
            "{op}: a stored row of record {} cannot be decoded",
            show(name)
        ))
        .with_source(e)
    })?;
    Ok((stored_at, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_split_and_order_by_time_then_store_order() {
        let a = encode_row(5, 2, "", "1");
        let b = encode_row(5, 10, "k", "{\"v\":2}");
        let c = encode_row(9_007_199_254_740_993, 1, "", "3");
        assert!(a < b && b < c);
        assert_eq!(
            split_member("query", "r", b.as_bytes()).unwrap(),
            (5, "{\"v\":2}")
        );
        assert_eq!(
            split_member("query", "r", c.as_bytes()).unwrap().0,
            9_007_199_254_740_993
        );
        assert!(split_member("query", "r", b"short").is_err());
        assert!(lex_max(4).as_str() < format!("[{a}").as_str());
        assert_eq!(
            (lex_min(0).as_str(), lex_max(MAX_AMOUNT).as_str()),
            ("-", "+")
        );
    }
}
