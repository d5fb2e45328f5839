//! Rows as sorted-set members: `stored_at`(16 hex) `seq`(16 hex) `keylen`(8 hex) `key` `value`.
//!
//! All scores are 0, so members order by bytes: by time, then by store order, exactly, with no
//! double ever involved. Time windows are lexicographic ranges over the first 16 hex digits.

use stowage_core::{Error, Result, StoredValue};

use stowage_core::raw::show;

/// 16 lowercase hex digits of `ms`.
pub(crate) fn time_hex(ms: u64) -> String {
    format!("{ms:016x}")
}

/// The `ZRANGEBYLEX` minimum that keeps rows at or after `start`.
pub(crate) fn lex_min(start: Option<u64>) -> String {
    start.map_or_else(|| "-".to_owned(), |s| format!("[{}", time_hex(s)))
}

/// The `ZRANGEBYLEX` maximum that keeps rows at or before `end` (`end <= MAX_AMOUNT`, so `end + 1` fits).
pub(crate) fn lex_max(end: Option<u64>) -> String {
    end.map_or_else(|| "+".to_owned(), |e| format!("({}", time_hex(e + 1)))
}

/// Decodes one member of record `name`.
pub(crate) fn decode_member(op: &str, name: &str, member: &[u8]) -> Result<StoredValue> {
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
    let value =
        serde_json::from_slice(&member[value_at..]).map_err(|e| corrupt().with_source(e))?;
    Ok(StoredValue {
        record_name: name.to_owned(),
        value,
        stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_decode_and_order_by_time_then_store_order() {
        let member = |at: u64, seq: u64, key: &str, value: &str| {
            format!("{}{seq:016x}{:08x}{key}{value}", time_hex(at), key.len())
        };
        let a = member(5, 2, "", "1");
        let b = member(5, 10, "k", "{\"v\":2}");
        let c = member(9_007_199_254_740_993, 1, "", "3");
        assert!(a < b && b < c);
        let row = decode_member("query", "r", b.as_bytes()).unwrap();
        assert_eq!((row.stored_at, row.value), (5, serde_json::json!({"v": 2})));
        assert_eq!(
            decode_member("query", "r", c.as_bytes()).unwrap().stored_at,
            9_007_199_254_740_993
        );
        assert!(decode_member("query", "r", b"short").is_err());
        assert!(lex_max(Some(4)).as_str() < format!("[{a}").as_str());
    }
}
