//! JSON and text renderings of records, RFC 3339 timestamps and base64.

use annal::RecordRef;
use serde_json::{Map, Value};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decode standard base64 (padding optional; whitespace not allowed).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in s.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 character {:?} at index {i}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if s.len() % 4 == 1 {
        return Err("invalid base64 length".into());
    }
    Ok(out)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with nanoseconds,
/// e.g. `2026-11-27T05:52:41.123456789Z`.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Insert `bytes` as `key` (a JSON value) when they are UTF-8 JSON, otherwise as
/// `key_base64`.
fn put_bytes(obj: &mut Map<String, Value>, key: &str, bytes: &[u8]) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if !bytes.is_empty() => {
            obj.insert(key.into(), v);
        }
        _ => {
            obj.insert(format!("{key}_base64"), Value::String(base64_encode(bytes)));
        }
    }
}

/// One record as a JSON object (the line format of `read --json` and `import`),
/// its fields in a fixed, readable order.
pub fn record_json(rec: &RecordRef<'_>) -> String {
    let mut o = Map::new();
    put_bytes(&mut o, "data", rec.payload());
    if !rec.metadata().is_empty() {
        put_bytes(&mut o, "metadata", rec.metadata());
    }
    let mut s = format!(
        "{{\"position\":{},\"stream\":{},\"version\":{},\"type\":{},\"timestamp\":\"{}\",\"id\":\"{}\"",
        rec.position(),
        Value::from(rec.stream()),
        rec.stream_version(),
        Value::from(rec.event_type()),
        rfc3339(rec.timestamp()),
        rec.event_id().hyphenated()
    );
    if rec.schema_version() != 0 {
        s.push_str(&format!(",\"schema_version\":{}", rec.schema_version()));
    }
    for key in ["data", "data_base64", "metadata", "metadata_base64"] {
        if let Some(v) = o.get(key) {
            s.push_str(&format!(",\"{key}\":{v}"));
        }
    }
    s.push('}');
    s
}

/// A short, readable rendering of bytes for the text format.
fn text_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\t') => {
            if s.len() > MAX {
                let mut end = MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}... ({} bytes)", &s[..end], bytes.len())
            } else {
                s.to_owned()
            }
        }
        _ => format!("<{} bytes binary>", bytes.len()),
    }
}

/// One record as one readable line.
pub fn record_text(rec: &RecordRef<'_>) -> String {
    let mut line = format!(
        "{:>8}  {}  {}@{}  {}  {}",
        rec.position(),
        rfc3339(rec.timestamp()),
        rec.stream(),
        rec.stream_version(),
        rec.event_type(),
        text_bytes(rec.payload())
    );
    if !rec.metadata().is_empty() {
        line.push_str("  meta=");
        line.push_str(&text_bytes(rec.metadata()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&v)).ok(), Some(v));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    }
}
