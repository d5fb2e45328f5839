//! Valkey row members decode without panicking, and encode → decode gives back time and value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_valkey::raw;

fuzz_target!(|data: &[u8]| {
    let _ = raw::decode_row("r", data);
    if data.len() < 9 {
        return;
    }
    let at = u64::from_le_bytes(data[..8].try_into().unwrap()) >> 1;
    let Ok(key) = std::str::from_utf8(&data[8..data.len().min(40)]) else { return };
    let member = raw::encode_row(at, 7, key, "{\"v\":1}");
    let row = raw::decode_row("r", member.as_bytes()).expect("an encoded row decodes");
    assert_eq!(row.stored_at, at);
    assert_eq!(row.value, serde_json_value());
});

fn serde_json_value() -> stowage_core::Value {
    let mut map = stowage_core::Value::Object(Default::default());
    map["v"] = 1.into();
    map
}
