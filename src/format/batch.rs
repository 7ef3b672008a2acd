//! The compact batch of format version 3 (spec 3.6): one frame header, then a
//! body that states once what every record of the batch shares (timestamp,
//! stream, first version) and, per record, only what is its own, in
//! LEB128 varints. Encoding a batch and parsing one from bytes; the frame
//! header itself is `frame_header`'s, the walk over frames `frame`'s.
//!
//! Invariants of a body [`parse_body`] accepts: its CRC (when asked), every
//! varint minimal and in range, every length within the frame, names
//! non-empty UTF-8, the first record naming its type and no record repeating
//! the type of the record before it, versions that fit in 64 bits, and zero
//! padding that brings the frame to a multiple of 8 bytes and no more.

use uuid::Uuid;

use crate::format::damage::Damage;
use crate::format::record::{EventData, RecordRef};
use crate::format::sealed::{MAX_KEY_ID, NONCE_LEN, TAG_LEN};
pub(crate) use crate::format::varint::{VarintError, get_varint, put_varint, varint_len};

/// Record flag: a 16-byte event id follows (otherwise the id is the
/// generated one of [`generated_id`]).
pub const RECORD_FLAG_ID: u8 = 1;
/// Record flag: a schema version follows (otherwise it is 0).
pub const RECORD_FLAG_SCHEMA: u8 = 2;
/// Record flag: an event type follows (otherwise the previous record's).
pub const RECORD_FLAG_TYPE: u8 = 4;
/// Record flag: metadata follows (otherwise it is empty).
pub const RECORD_FLAG_METADATA: u8 = 8;
/// Every record flag of version 3.
pub const RECORD_FLAGS_V3: u8 = RECORD_FLAG_ID | RECORD_FLAG_SCHEMA | RECORD_FLAG_TYPE | RECORD_FLAG_METADATA;
/// Record flag (version 4): the record is sealed for a subject (spec 3.8):
/// its key id and nonce follow the type, its payload is the ciphertext of
/// the metadata and payload, and it has no metadata of its own.
pub const RECORD_FLAG_SUBJECT: u8 = 16;
/// Every record flag of version 4.
pub const RECORD_FLAGS_V4: u8 = RECORD_FLAGS_V3 | RECORD_FLAG_SUBJECT;
/// Record flag (version 5): the payload is JSON text (spec 3.11). It adds no
/// field: it only says how the payload is encoded.
pub const RECORD_FLAG_JSON: u8 = 32;
/// Every record flag of version 5.
pub const RECORD_FLAGS_V5: u8 = RECORD_FLAGS_V4 | RECORD_FLAG_JSON;
/// The first format version whose records may carry [`RECORD_FLAG_JSON`].
pub const JSON_FORMAT_VERSION: u16 = 5;

/// The record flags a segment of format `version` (3 or later) allows.
pub(crate) const fn record_flags_of(version: u16) -> u8 {
    match version {
        0..=3 => RECORD_FLAGS_V3,
        4 => RECORD_FLAGS_V4,
        _ => RECORD_FLAGS_V5,
    }
}

/// The 17 ASCII bytes that start the input of the generated-id seed.
const ID_SEED_CONTEXT: &[u8; 17] = b"annal event id v3";
/// Bits of a generated id that count positions (`rand_a` and `rand_b` of RFC 9562).
const ID_RAND_BITS: u32 = 74;

/// The seed of the generated event ids of a log (spec 9): the first 16 bytes
/// of BLAKE3(`"annal event id v3"` || `log_id`) as a big-endian integer,
/// reduced modulo 2^74.
pub(crate) fn id_seed(log_id: &[u8; 16]) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(ID_SEED_CONTEXT);
    h.update(log_id);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_be_bytes(first) & ((1 << ID_RAND_BITS) - 1)
}

/// The generated id of the event at `position`, appended at `timestamp`
/// (spec 9): a UUID version 7 whose 48-bit time is the timestamp's
/// milliseconds and whose 74 other free bits are `(seed + position) mod
/// 2^74`, so ids grow with position within a millisecond.
pub(crate) fn generated_id(seed: u128, position: u64, timestamp: u64) -> [u8; 16] {
    let ms = u128::from(timestamp / 1_000_000) & ((1 << 48) - 1);
    let r = (seed + u128::from(position)) & ((1 << ID_RAND_BITS) - 1);
    let v = (ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1));
    v.to_be_bytes()
}

/// What a writer decides for a version-3 batch besides its events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchStamp {
    pub first_version: u64,
    /// The batch's timestamp minus the segment header's `prev_timestamp`.
    pub timestamp_delta: u64,
}

/// The most bytes the body of a version-3 batch of `events` in `stream` can
/// take, padding included (the exact length depends on the varints of the
/// first version and the timestamp, at most 10 bytes each).
pub(crate) fn max_body_len(stream: &str, events: &[EventData<'_>]) -> u64 {
    let head = 10 + varint_len(stream.len() as u64) + stream.len() + 10;
    let mut sum = head as u64;
    let mut prev: Option<&str> = None;
    for ev in events {
        sum = sum.saturating_add(record_len(ev, prev) as u64);
        prev = Some(&ev.event_type);
    }
    sum.saturating_add(7)
}

/// Bytes of one record of a version-3 body: its flags, id, schema, type (if
/// it differs from `prev`, the previous record's), metadata and payload.
fn record_len(ev: &EventData<'_>, prev: Option<&str>) -> usize {
    let mut n = 1usize;
    if ev.id.is_some() {
        n += 16;
    }
    if ev.schema_version != 0 {
        n += varint_len(u64::from(ev.schema_version));
    }
    if prev != Some(&*ev.event_type) {
        n += varint_len(ev.event_type.len() as u64) + ev.event_type.len();
    }
    if let Some(s) = &ev.sealed {
        n += varint_len(s.key) + NONCE_LEN;
    }
    if !ev.metadata.is_empty() {
        n += varint_len(ev.metadata.len() as u64) + ev.metadata.len();
    }
    n.saturating_add(varint_len(ev.payload.len() as u64))
        .saturating_add(ev.payload.len())
}

/// Append the body of a version-3 batch to `out`, padded with zero bytes so
/// that `frame_start` (the index in `out` where its frame begins) to the end
/// is a multiple of 8. The caller has checked every length against the
/// limits of spec 8.
pub(crate) fn encode_body(
    out: &mut Vec<u8>,
    frame_start: usize,
    stream: &str,
    events: &[EventData<'_>],
    stamp: &BatchStamp,
) {
    put_varint(out, stamp.timestamp_delta);
    put_varint(out, stream.len() as u64);
    out.extend_from_slice(stream.as_bytes());
    put_varint(out, stamp.first_version);
    let mut prev: Option<&str> = None;
    for ev in events {
        let mut flags = 0;
        if ev.id.is_some() {
            flags |= RECORD_FLAG_ID;
        }
        if ev.schema_version != 0 {
            flags |= RECORD_FLAG_SCHEMA;
        }
        if prev != Some(&*ev.event_type) {
            flags |= RECORD_FLAG_TYPE;
        }
        if !ev.metadata.is_empty() {
            flags |= RECORD_FLAG_METADATA;
        }
        if ev.sealed.is_some() {
            flags |= RECORD_FLAG_SUBJECT;
        }
        if ev.json {
            flags |= RECORD_FLAG_JSON;
        }
        out.push(flags);
        if let Some(id) = ev.id {
            out.extend_from_slice(id.as_bytes());
        }
        if ev.schema_version != 0 {
            put_varint(out, u64::from(ev.schema_version));
        }
        if flags & RECORD_FLAG_TYPE != 0 {
            put_varint(out, ev.event_type.len() as u64);
            out.extend_from_slice(ev.event_type.as_bytes());
        }
        if let Some(s) = &ev.sealed {
            put_varint(out, s.key);
            out.extend_from_slice(&s.nonce);
        }
        if !ev.metadata.is_empty() {
            put_varint(out, ev.metadata.len() as u64);
            out.extend_from_slice(&ev.metadata);
        }
        put_varint(out, ev.payload.len() as u64);
        out.extend_from_slice(&ev.payload);
        prev = Some(&ev.event_type);
    }
    let len = out.len().saturating_sub(frame_start);
    out.resize(out.len() + (len.next_multiple_of(8) - len), 0);
}

/// What a reader needs to parse a version-3 body besides its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyContext {
    /// The frame's `first_position` and `record_count`.
    pub first_position: u64,
    pub count: u32,
    /// The segment header's `prev_timestamp` (timestamps are stored from it).
    pub prev_timestamp: u64,
    /// The log's generated-id seed ([`id_seed`]).
    pub id_seed: u128,
    /// File offset of the body's first byte, and the frame's length before
    /// it (for the padding rule).
    pub at: u64,
    pub header_len: usize,
    /// The format version of the segment (3 or later): which record flags
    /// it allows ([`record_flags_of`]).
    pub version: u16,
}

/// The batch-wide fields of a parsed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyHead {
    pub timestamp: u64,
    pub first_version: u64,
}

/// A cursor over a body's bytes that names the file offset of what failed.
struct Bytes<'a> {
    rest: &'a [u8],
    at: u64,
}

impl<'a> Bytes<'a> {
    #[inline]
    fn varint(&mut self, what: &str) -> Result<u64, Damage> {
        match get_varint(self.rest) {
            Ok((v, n)) => {
                self.take_unchecked(n);
                Ok(v)
            }
            Err(e) => Err(bad_varint(self.at, what, e)),
        }
    }

    #[inline]
    fn take(&mut self, n: u64, what: &str, field_at: u64) -> Result<&'a [u8], Damage> {
        let Some((head, rest)) = usize::try_from(n).ok().and_then(|n| self.rest.split_at_checked(n)) else {
            return Err(past_frame(field_at, what, n, self.rest.len()));
        };
        self.rest = rest;
        self.at += n;
        Ok(head)
    }

    #[inline]
    fn take_unchecked(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
        self.at += n as u64;
    }
}

/// Parse and check the body of a version-3 batch (`body`: the frame's bytes
/// after its header, padding included), calling `each(offset in frame,
/// record)` for every record as it is parsed. Checks the body CRC first when
/// `body_crc` is given. On error, records already passed to `each` belong to
/// a batch that is not complete: discard them.
#[inline]
pub(crate) fn parse_body<'a>(
    body: &'a [u8],
    cx: &BodyContext,
    body_crc: Option<(u32, u64)>,
    mut each: impl FnMut(usize, RecordRef<'a>),
) -> Result<BodyHead, Damage> {
    if let Some((stored, crc_at)) = body_crc {
        let got = crc32fast::hash(body);
        if got != stored {
            return Err(Damage::corrupt(
                crc_at,
                format!("batch body CRC mismatch: stored {stored:#010x}, computed {got:#010x}"),
            ));
        }
    }
    let mut b = Bytes { rest: body, at: cx.at };
    let ts_at = b.at;
    let delta = b.varint("timestamp")?;
    let Some(timestamp) = cx.prev_timestamp.checked_add(delta) else {
        return Err(Damage::corrupt(
            ts_at,
            "expected the timestamp (prev_timestamp + delta) to fit in 64 bits",
        ));
    };
    let stream_at = b.at;
    let stream_len = b.varint("stream_len")?;
    if stream_len == 0 || stream_len > u64::from(u16::MAX) {
        return Err(Damage::corrupt(
            stream_at,
            format!("expected a stream name of 1 to 65535 bytes, found a length of {stream_len}"),
        ));
    }
    let name_at = b.at;
    let stream = b.take(stream_len, "the stream name", stream_at)?;
    if std::str::from_utf8(stream).is_err() {
        return Err(Damage::corrupt(name_at, "expected the stream name to be UTF-8"));
    }
    let version_at = b.at;
    let first_version = b.varint("first_version")?;
    if first_version.checked_add(u64::from(cx.count) - 1).is_none() {
        return Err(Damage::corrupt(
            version_at,
            format!("expected first_version + record_count - 1 to fit in 64 bits, found {first_version}"),
        ));
    }
    let mut event_type: &[u8] = &[];
    for i in 0..u64::from(cx.count) {
        let rec_at = b.at;
        let Some(&flags) = b.rest.first() else {
            return Err(Damage::corrupt(
                rec_at,
                format!("expected record {i} of {}, found the end of the frame", cx.count),
            ));
        };
        let allowed = record_flags_of(cx.version);
        if flags & !allowed != 0 {
            return Err(Damage::corrupt(
                rec_at,
                format!(
                    "expected record flags of format v{} (at most {allowed:#04x}), found {flags:#04x}",
                    cx.version
                ),
            ));
        }
        if flags & RECORD_FLAG_SUBJECT != 0 && flags & RECORD_FLAG_METADATA != 0 {
            return Err(Damage::corrupt(
                rec_at,
                "expected a sealed record (flag SUBJECT) without metadata of its own (its metadata is sealed)",
            ));
        }
        if i == 0 && flags & RECORD_FLAG_TYPE == 0 {
            return Err(Damage::corrupt(
                rec_at,
                "expected the batch's first record to name its event type",
            ));
        }
        b.take_unchecked(1);
        let position = cx.first_position + i;
        let event_id = if flags & RECORD_FLAG_ID != 0 {
            let id_at = b.at;
            let id = b.take(16, "the event id", id_at)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(id);
            a
        } else {
            generated_id(cx.id_seed, position, timestamp)
        };
        let schema_version = if flags & RECORD_FLAG_SCHEMA != 0 {
            let at = b.at;
            let s = b.varint("schema_version")?;
            match u32::try_from(s) {
                Ok(s) if s != 0 => s,
                _ => {
                    return Err(Damage::corrupt(
                        at,
                        format!("expected a schema version of 1 to 4294967295 (0 is not stored), found {s}"),
                    ));
                }
            }
        } else {
            0
        };
        if flags & RECORD_FLAG_TYPE != 0 {
            let at = b.at;
            let len = b.varint("type_len")?;
            if len == 0 || len > u64::from(u16::MAX) {
                return Err(Damage::corrupt(
                    at,
                    format!("expected an event type of 1 to 65535 bytes, found a length of {len}"),
                ));
            }
            let name_at = b.at;
            let t = b.take(len, "the event type", at)?;
            if i > 0 && t == event_type {
                return Err(Damage::corrupt(
                    rec_at,
                    "expected the event type to be stored only when it differs from the previous record's",
                ));
            }
            if std::str::from_utf8(t).is_err() {
                return Err(Damage::corrupt(name_at, "expected the event type to be UTF-8"));
            }
            event_type = t;
        }
        let seal = if flags & RECORD_FLAG_SUBJECT != 0 {
            let at = b.at;
            let key = b.varint("key_id")?;
            if key == 0 || key > MAX_KEY_ID {
                return Err(Damage::corrupt(
                    at,
                    format!("expected a key id of 1 to {MAX_KEY_ID}, found {key}"),
                ));
            }
            let nonce_at = b.at;
            let nonce = b.take(NONCE_LEN as u64, "the nonce", nonce_at)?;
            let Ok(nonce) = <&[u8; NONCE_LEN]>::try_from(nonce) else {
                return Err(past_frame(nonce_at, "the nonce", NONCE_LEN as u64, nonce.len()));
            };
            Some((key, nonce))
        } else {
            None
        };
        let metadata: &[u8] = if flags & RECORD_FLAG_METADATA != 0 {
            let at = b.at;
            let len = b.varint("metadata_len")?;
            if len == 0 || len > u64::from(u32::MAX) {
                return Err(Damage::corrupt(
                    at,
                    format!("expected stored metadata of 1 to 4294967295 bytes, found a length of {len}"),
                ));
            }
            b.take(len, "the metadata", at)?
        } else {
            &[]
        };
        let at = b.at;
        let len = b.varint("payload_len")?;
        if len > u64::from(u32::MAX) {
            return Err(Damage::corrupt(
                at,
                format!("expected a payload of at most 4294967295 bytes, found a length of {len}"),
            ));
        }
        let payload = b.take(len, "the payload", at)?;
        if seal.is_some() && len <= TAG_LEN as u64 {
            return Err(Damage::corrupt(
                at,
                format!(
                    "expected a sealed payload of more than {TAG_LEN} bytes (the tag and the sealed plaintext), found {len}"
                ),
            ));
        }
        let rec = RecordRef::from_parts(
            position,
            first_version + i,
            timestamp,
            event_id,
            schema_version,
            stream,
            event_type,
            metadata,
            payload,
        );
        let rec = match seal {
            Some((key, nonce)) => rec.sealed_with(key, nonce),
            None => rec,
        }
        .json_if(flags & RECORD_FLAG_JSON != 0);
        each((rec_at - cx.at) as usize + cx.header_len, rec);
    }
    // Zero padding to a multiple of 8, and nothing more.
    let used = (b.at - cx.at) as usize + cx.header_len;
    let pad = used.next_multiple_of(8) - used;
    if b.rest.len() != pad || b.rest.iter().any(|&x| x != 0) {
        let first_bad = b
            .rest
            .iter()
            .position(|&x| x != 0)
            .filter(|&p| p < pad)
            .unwrap_or(pad.min(b.rest.len()));
        return Err(Damage::corrupt(
            b.at + first_bad as u64,
            format!(
                "expected {pad} zero padding bytes to end the frame after its {} records, found {} bytes",
                cx.count,
                b.rest.len()
            ),
        ));
    }
    Ok(BodyHead {
        timestamp,
        first_version,
    })
}

/// The stream name and first version that lead a version-3 body, read
/// without checking its CRC or records (`None` if they do not parse): for a
/// reader that checks an index hit before it validates the whole batch.
pub(crate) fn peek_head(body: &[u8]) -> Option<(&[u8], u64)> {
    let (stream, at) = peek_stream(body)?;
    let (version, _) = get_varint(body.get(at..)?).ok()?;
    Some((stream, version))
}

/// The stream name of a version-3 body and the offset in the body of the
/// `first_version` varint after it.
pub(crate) fn peek_stream(body: &[u8]) -> Option<(&[u8], usize)> {
    let (_, a) = get_varint(body).ok()?;
    let rest = body.get(a..)?;
    let (len, b) = get_varint(rest).ok()?;
    let rest = rest.get(b..)?;
    let len = usize::try_from(len).ok()?;
    let stream = rest.get(..len)?;
    Some((stream, a + b + len))
}

/// The records of a body that [`parse_body`] accepted, parsed again
/// without checking anything (every slice is still bounds-checked: bytes
/// that do not parse end the iteration early, which
/// [`BodyRecords::left`] then tells): `(offset in frame, record)` for each.
#[derive(Debug, Clone)]
pub(crate) struct BodyRecords<'a> {
    rest: &'a [u8],
    /// Offset in the frame of `rest[0]`.
    at: usize,
    position: u64,
    version: u64,
    timestamp: u64,
    stream: &'a [u8],
    event_type: &'a [u8],
    id_seed: u128,
    left: u32,
}

impl<'a> BodyRecords<'a> {
    /// The records of `body` (a validated body whose frame is described by
    /// `cx`).
    pub(crate) fn new(body: &'a [u8], cx: &BodyContext) -> BodyRecords<'a> {
        let mut it = BodyRecords {
            rest: &[],
            at: cx.header_len,
            position: cx.first_position,
            version: 0,
            timestamp: 0,
            stream: &[],
            event_type: &[],
            id_seed: cx.id_seed,
            left: cx.count,
        };
        let head = (|| {
            let (delta, a) = get_varint(body).ok()?;
            let (stream, at) = peek_stream(body)?;
            let (version, v) = get_varint(body.get(at..)?).ok()?;
            Some((cx.prev_timestamp.wrapping_add(delta), stream, version, at + v, a))
        })();
        if let Some((timestamp, stream, version, used, _)) = head {
            it.rest = body.get(used..).unwrap_or_default();
            it.at += used;
            it.timestamp = timestamp;
            it.stream = stream;
            it.version = version;
        }
        it
    }

    /// Offset in the frame of the next record (after the last one: of the
    /// padding).
    pub(crate) fn offset(&self) -> usize {
        self.at
    }

    /// Records not yet returned (more than zero after the end: the bytes
    /// did not parse, which a validated body never does unless it changed).
    pub(crate) fn left(&self) -> u32 {
        self.left
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        self.at += n;
        Some(head)
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let (v, n) = get_varint(self.rest).ok()?;
        self.take(n)?;
        Some(v)
    }

    #[inline]
    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }
}

impl<'a> Iterator for BodyRecords<'a> {
    type Item = (usize, RecordRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let start = self.at;
        let flags = *self.take(1)?.first()?;
        let event_id = if flags & RECORD_FLAG_ID != 0 {
            let mut a = [0u8; 16];
            a.copy_from_slice(self.take(16)?);
            a
        } else {
            generated_id(self.id_seed, self.position, self.timestamp)
        };
        let schema = if flags & RECORD_FLAG_SCHEMA != 0 {
            u32::try_from(self.varint()?).ok()?
        } else {
            0
        };
        if flags & RECORD_FLAG_TYPE != 0 {
            self.event_type = self.sized()?;
        }
        let seal: Option<(u64, &[u8; NONCE_LEN])> = if flags & RECORD_FLAG_SUBJECT != 0 {
            let key = self.varint()?;
            Some((key, self.take(NONCE_LEN)?.try_into().ok()?))
        } else {
            None
        };
        let metadata = if flags & RECORD_FLAG_METADATA != 0 {
            self.sized()?
        } else {
            &[]
        };
        let payload = self.sized()?;
        let rec = RecordRef::from_parts(
            self.position,
            self.version,
            self.timestamp,
            event_id,
            schema,
            self.stream,
            self.event_type,
            metadata,
            payload,
        );
        let rec = match seal {
            Some((key, nonce)) => rec.sealed_with(key, nonce),
            None => rec,
        }
        .json_if(flags & RECORD_FLAG_JSON != 0);
        self.position = self.position.wrapping_add(1);
        self.version = self.version.wrapping_add(1);
        self.left -= 1;
        Some((start, rec))
    }
}

#[cold]
#[inline(never)]
fn bad_varint(at: u64, what: &str, e: VarintError) -> Damage {
    Damage::corrupt(
        at,
        match e {
            VarintError::Truncated => format!("expected the varint {what}, found the end of the frame"),
            VarintError::Invalid => {
                format!("expected the varint {what} in its shortest form and within 64 bits")
            }
        },
    )
}

#[cold]
#[inline(never)]
fn past_frame(at: u64, what: &str, n: u64, have: usize) -> Damage {
    Damage::corrupt(
        at,
        format!("expected {what} of {n} bytes, found {have} bytes before the end of the frame"),
    )
}

/// An event id as a [`Uuid`] (for tests and the dump).
#[allow(dead_code, reason = "used by tests and the inspector")]
pub(crate) fn uuid(id: [u8; 16]) -> Uuid {
    Uuid::from_bytes(id)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_long_forms() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(get_varint(&out), Ok((v, out.len())), "{v}");
            assert_eq!(get_varint(&out[..out.len() - 1]).unwrap_err(), VarintError::Truncated);
        }
        assert_eq!(get_varint(&[0x80, 0x00]), Err(VarintError::Invalid), "not minimal");
        assert_eq!(
            get_varint(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>()),
            Err(VarintError::Invalid)
        );
        assert_eq!(get_varint(&[0xff; 11]), Err(VarintError::Invalid));
    }

    #[test]
    fn generated_ids_are_v7_and_ordered() {
        let seed = id_seed(&[7; 16]);
        let a = Uuid::from_bytes(generated_id(seed, 5, 1_700_000_000_123_456_789));
        let b = Uuid::from_bytes(generated_id(seed, 6, 1_700_000_000_123_456_789));
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert!(a < b);
        let (secs, _) = a.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_700_000_000);
        assert_ne!(id_seed(&[8; 16]), seed);
    }

    fn cx(count: u32, header_len: usize) -> BodyContext {
        BodyContext {
            first_position: 10,
            count,
            prev_timestamp: 1_000,
            id_seed: 3,
            at: 1_000,
            header_len,
            version: JSON_FORMAT_VERSION,
        }
    }

    #[test]
    fn bodies_round_trip_with_every_flag() {
        let id = Uuid::from_u128(0x1234);
        let events = [
            EventData::new("A", b"p0".as_slice()),
            EventData::new("A", b"".as_slice())
                .with_id(id)
                .with_metadata(b"m".as_slice()),
            EventData::new("Bee", b"p2".as_slice()).with_schema_version(3),
        ];
        let mut out = vec![0u8; 32];
        let stamp = BatchStamp {
            first_version: 4,
            timestamp_delta: 77,
        };
        encode_body(&mut out, 0, "s-1", &events, &stamp);
        assert_eq!(out.len() % 8, 0);
        assert!(out.len() as u64 <= 32 + max_body_len("s-1", &events));
        let mut got = Vec::new();
        let head = parse_body(
            &out[32..],
            &cx(3, 32),
            Some((crc32fast::hash(&out[32..]), 0)),
            |at, r| got.push((at, r)),
        )
        .unwrap();
        assert_eq!(
            head,
            BodyHead {
                timestamp: 1_077,
                first_version: 4
            }
        );
        let r: Vec<_> = got.iter().map(|(_, r)| r).collect();
        assert_eq!(
            (r[0].position(), r[0].stream_version(), r[0].event_type()),
            (10, 4, "A")
        );
        assert_eq!(r[0].event_id().as_bytes(), &generated_id(3, 10, 1_077));
        assert_eq!(
            (r[1].event_type(), r[1].event_id(), r[1].metadata()),
            ("A", id, &b"m"[..])
        );
        assert_eq!(
            (r[2].event_type(), r[2].schema_version(), r[2].payload()),
            ("Bee", 3, &b"p2"[..])
        );
        assert!(r.iter().all(|r| r.stream() == "s-1" && r.timestamp() == 1_077));
        // Every byte of the body matters: a flip is caught by the CRC, and
        // without it by the structure, or changes what is read.
        for i in 32..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(
                parse_body(
                    &bad[32..],
                    &cx(3, 32),
                    Some((crc32fast::hash(&out[32..]), 0)),
                    |_, _| {}
                )
                .is_err()
            );
        }
    }

    #[test]
    fn the_json_flag_is_read_in_version_5_and_damage_before() {
        let events = [
            EventData::new("T", b"[1]".as_slice()).marked_json(),
            EventData::new("T", b"\x01".as_slice()),
        ];
        let mut out = vec![0u8; 32];
        let stamp = BatchStamp {
            first_version: 0,
            timestamp_delta: 0,
        };
        encode_body(&mut out, 0, "s", &events, &stamp);
        let body = out[32..].to_vec();
        let mut got = Vec::new();
        parse_body(&body, &cx(2, 32), None, |_, r| got.push(r.is_json())).unwrap();
        assert_eq!(got, [true, false], "the flag is per record, not carried like the type");
        let listed: Vec<bool> = BodyRecords::new(&body, &cx(2, 32)).map(|(_, r)| r.is_json()).collect();
        assert_eq!(listed, got);
        for version in [3, 4] {
            let old = BodyContext { version, ..cx(2, 32) };
            let err = parse_body(&body, &old, None, |_, _| {}).unwrap_err();
            // The first record's `rflags`: after the varints of the
            // timestamp (1), the stream's length (1), the stream (1) and
            // the first version (1).
            assert_eq!(err.offset, old.at + 4, "v{version}");
            assert!(err.detail().contains(&format!("format v{version}")), "{}", err.detail());
        }
    }

    #[test]
    fn padding_and_repeated_types_are_checked() {
        let events = [
            EventData::new("T", b"x".as_slice()),
            EventData::new("T", b"y".as_slice()),
        ];
        let mut out = vec![0u8; 32];
        let stamp = BatchStamp {
            first_version: 0,
            timestamp_delta: 0,
        };
        encode_body(&mut out, 0, "s", &events, &stamp);
        let body = out[32..].to_vec();
        assert!(parse_body(&body, &cx(2, 32), None, |_, _| {}).is_ok());
        let mut extra = body.clone();
        extra.extend_from_slice(&[0; 8]);
        assert!(
            parse_body(&extra, &cx(2, 32), None, |_, _| {}).is_err(),
            "8 more zero bytes"
        );
        let mut nonzero = body.clone();
        *nonzero.last_mut().unwrap() = 1;
        assert!(parse_body(&nonzero, &cx(2, 32), None, |_, _| {}).is_err());
        // (Zero padding reads as empty records of the previous type: a count
        // the padding could hold is another, valid batch, which the header's
        // CRC tells apart.)
        assert!(
            parse_body(&body, &cx(9, 32), None, |_, _| {}).is_err(),
            "fewer records than counted"
        );
    }
}
