//! JSON and text renderings of records, RFC 3339 timestamps and base64.

use annal::RecordRef;
use serde_json::Value;

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

/// Deepest nesting of arrays and objects that `read --json` writes as JSON
/// (serde_json's default recursion limit when parsing into a `Value`).
pub const MAX_JSON_DEPTH: usize = 128;

/// `bytes` as JSON text if they are exactly one JSON value that a JSON-lines
/// consumer can take back byte for byte: valid UTF-8, one value by
/// serde_json's grammar (numbers of any size and duplicate keys are kept as
/// written, never re-serialised), nested at most [`MAX_JSON_DEPTH`] deep, with
/// no whitespace around it and no line break in it. Otherwise the reason it is not.
pub fn exact_json(bytes: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 ({e})"))?;
    let raw = json_value(s)?;
    if raw.len() != s.len() {
        return Err("it has whitespace before or after the JSON value".into());
    }
    if s.contains(['\n', '\r']) {
        return Err("it has a line break".into());
    }
    Ok(s)
}

/// Check that `s` is one JSON value (whitespace around it allowed) nested at
/// most [`MAX_JSON_DEPTH`] deep; return the value's text without the
/// whitespace. Nothing is re-serialised: the text is kept as written.
pub fn json_value(s: &str) -> Result<&str, String> {
    let raw: &serde_json::value::RawValue = serde_json::from_str(s).map_err(|e| json_error(&e))?;
    check_depth(raw.get())?;
    // `raw` borrows from `s`: find its place to return a slice of `s`.
    let start = raw.get().as_ptr() as usize - s.as_ptr() as usize;
    Ok(&s[start..start + raw.get().len()])
}

/// A serde_json error without its "at line L column C" suffix (the caller
/// says where: JSON given on the command line or in an import line is one line).
pub fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    if e.column() > 0 {
        format!("{msg} at column {}", e.column())
    } else {
        msg
    }
}

/// Refuse JSON text (already known to be valid) nested deeper than
/// [`MAX_JSON_DEPTH`].
pub fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_JSON_DEPTH {
        Err(format!(
            "it nests arrays and objects {max} deep, more than {MAX_JSON_DEPTH} (what serde_json parses)"
        ))
    } else {
        Ok(())
    }
}

/// Append `,"key":<bytes>` when the bytes are exact JSON (see [`exact_json`]),
/// otherwise `,"key_base64":"..."`.
fn push_bytes(out: &mut String, key: &str, bytes: &[u8]) {
    match exact_json(bytes) {
        Ok(json) => {
            out.push_str(&format!(",\"{key}\":"));
            out.push_str(json);
        }
        Err(_) => out.push_str(&format!(",\"{key}_base64\":\"{}\"", base64_encode(bytes))),
    }
}

/// One record as a JSON object (the line format of `read --json` and `import`),
/// its fields in a fixed, readable order. `data` and `metadata` are written
/// byte for byte as stored when they are JSON (see [`exact_json`]);
/// `schema_version` only when it is not 0, `codec` (`"json"`) only for a
/// record flagged JSON (spec 3.11), `metadata` only when not empty.
pub fn record_json(rec: &RecordRef<'_>) -> String {
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
    if let Some(k) = rec.subject_key() {
        s.push_str(&format!(",\"subject_key\":{}", k.0));
    }
    if rec.is_json() {
        // The record says its payload is JSON text (spec 3.11): `import`
        // marks it again.
        s.push_str(",\"codec\":\"json\"");
    }
    if rec.is_erased() {
        s.push_str(",\"erased\":true}");
        return s;
    }
    push_bytes(&mut s, "data", rec.payload());
    if !rec.metadata().is_empty() {
        push_bytes(&mut s, "metadata", rec.metadata());
    }
    s.push('}');
    s
}

/// Whether `c` must not reach a terminal raw: C0 controls, DEL, C1 controls,
/// the Unicode line and paragraph separators (a line break to some
/// terminals and viewers) and the bidirectional controls (which reorder what
/// is displayed).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || c == '\u{2028}'
        || c == '\u{2029}'
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` made safe for human output: control characters (C0, DEL, C1), the
/// bidirectional controls and the backslash are escaped (`\n`, `\0`,
/// `\u{1b}`, `\\`), so that a stream name, type or message can neither
/// forge an output line nor drive the terminal. Everything else is unchanged.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    escape_with(s, true)
}

/// As [`escape`], but a backslash stays as it is: for whole messages, whose
/// names were escaped where they were formatted.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    escape_with(s, false)
}

fn escape_with(s: &str, backslash: bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| (backslash && c == '\\') || is_unsafe(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A short, readable rendering of bytes for the text format: UTF-8 text with
/// its control characters escaped (see [`escape`]), cut at 200 bytes; other
/// bytes as `<N bytes binary>`.
fn text_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            if s.len() > MAX {
                let mut end = MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}... ({} bytes)", escape(&s[..end]), bytes.len())
            } else {
                escape(s).into_owned()
            }
        }
        _ => format!("<{} bytes binary>", bytes.len()),
    }
}

/// One record as one readable line (names, types and text escaped).
pub fn record_text(rec: &RecordRef<'_>) -> String {
    let mut line = format!(
        "{:>8}  {}  {}@{}  {}  {}",
        rec.position(),
        rfc3339(rec.timestamp()),
        escape(rec.stream()),
        rec.stream_version(),
        escape(rec.event_type()),
        if rec.is_erased() {
            "<erased>".to_owned()
        } else {
            text_bytes(rec.payload())
        }
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
    fn escape_neutralises_controls_and_bidi() {
        assert_eq!(escape("order-1"), "order-1");
        assert_eq!(
            escape("a\nb\0c\u{1b}[31m\u{7f}\u{85}\u{202e}\\"),
            "a\\nb\\0c\\u{1b}[31m\\u{7f}\\u{85}\\u{202e}\\\\"
        );
        assert_eq!(escape_controls("a\\b\n"), "a\\b\\n");
        assert_eq!(escape("p\u{2028}q\u{2066}"), "p\\u{2028}q\\u{2066}");
    }

    #[test]
    fn exact_json_keeps_bytes_and_refuses_what_does_not_round_trip() {
        for ok in [
            "18446744073709551616",
            "{\"a\":1E5,\"a\":12345678901234567890123}",
            "{\"z\":1,\"a\":2}",
            "[1e400]",
            "null",
            "{\"a\" : [ 1 ,2 ]}",
        ] {
            assert_eq!(exact_json(ok.as_bytes()), Ok(ok));
        }
        for bad in ["", " 1", "1 ", "{\n}", "{", "[1,]", "\u{1}", "{\"a\":\"\u{1}\"}"] {
            assert!(exact_json(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(exact_json(b"\xff").is_err());
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(exact_json(deep.as_bytes()).unwrap_err().contains("129 deep"));
        let ok = format!("{}\"[[\"{}", "[".repeat(128), "]".repeat(128));
        assert!(exact_json(ok.as_bytes()).is_ok());
        assert_eq!(json_value(" {} \n"), Ok("{}"));
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    }
}
