//! Format version 3 (spec 3.6, 9, 21.2 v3), from the spec's tables alone:
//! an assembler of v3 frames and batch bodies, and an independent reader of
//! v3 segments and head files. It reads version 4 segments too (3.7, a v3
//! segment byte for byte) and version 5 ones (3.11: a v4 segment whose
//! records may have the `JSON` flag), those rewritten by compaction included (3.10:
//! `segment_flags` `COMPACTED`, forward position gaps in such a segment
//! only, its seal keeping the original chain). Used by the golden tests of
//! versions 3 and 4 (`tests/golden_v3_vectors.rs`, `golden_v4_*.rs`,
//! `golden_retention_vector.rs`, `golden_compacted_vector.rs`).
//!
//! Nothing here calls annal: only `crc32fast` (spec "Conventions") and the
//! `blake3` crate (spec 9, 21.1).

#![allow(dead_code)]

use crate::golden::{crc, put};

// ================================================================ varints

/// Spec 3.6 "Varints": unsigned LEB128, 7 bits per byte, least significant
/// group first, the high bit on every byte but the last; the shortest
/// encoding.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Parses the varint at `b[at..end)`. `Err(offset)`: the finding of spec 3.6
/// "Complete" step 3 (the field's first byte, for an invalid varint or one
/// that runs past the frame).
pub fn get_varint(b: &[u8], at: usize, end: usize) -> Result<(u64, usize), usize> {
    let mut v: u64 = 0;
    let mut i = 0;
    loop {
        if at + i >= end {
            return Err(at);
        }
        if i == 10 {
            return Err(at);
        }
        let byte = b[at + i];
        if i == 9 && byte > 1 {
            return Err(at);
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        i += 1;
        if byte & 0x80 == 0 {
            if byte == 0 && i > 1 {
                return Err(at); // not the shortest encoding
            }
            return Ok((v, at + i));
        }
    }
}

// ================================================================ hashes

/// H(x) of spec 21.1: BLAKE3, or BLAKE3 keyed mode with the log's key.
pub fn h(key: Option<&[u8; 32]>, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    for p in parts {
        hasher.update(p);
    }
    *hasher.finalize().as_bytes()
}

/// Spec 21.2: genesis = H("annal chain v2" 00 00 || log_id).
pub fn genesis(key: Option<&[u8; 32]>, log_id: &[u8; 16]) -> [u8; 32] {
    h(key, &[b"annal chain v2\0\0", log_id])
}

/// Spec 21.2 "Link, version 3": H(prev || frame[6, 28) || frame[header_len,
/// frame_len)).
pub fn link(key: Option<&[u8; 32]>, prev: &[u8; 32], frame: &[u8], header_len: usize) -> [u8; 32] {
    h(key, &[prev, &frame[6..28], &frame[header_len..]])
}

/// Spec 9: `S` = the first 16 bytes of BLAKE3("annal event id v3" ||
/// log_id), big-endian, modulo 2^74 (always unkeyed: it is no chain hash).
pub fn id_seed(log_id: &[u8; 16]) -> u128 {
    let digest = h(None, &[b"annal event id v3", log_id]);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first) % (1u128 << 74)
}

/// Spec 9: the generated id of the event at `position` appended at
/// `timestamp`: `ms` (48 bits), `0111`, `R >> 62` (12 bits), `10`, `R mod
/// 2^62` (62 bits), big-endian, with `R = (S + position) mod 2^74`.
pub fn generated_id(log_id: &[u8; 16], position: u64, timestamp: u64) -> [u8; 16] {
    let s = id_seed(log_id);
    let r = (s + u128::from(position)) % (1u128 << 74);
    let ms = u128::from(timestamp / 1_000_000) % (1u128 << 48);
    let rand_a = r >> 62;
    let rand_b = r % (1u128 << 62);
    let v = (ms << 80) | (0b0111 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
    v.to_be_bytes()
}

// ============================================================= assembly

/// Spec 3.6: record flags.
pub const RFLAG_ID: u8 = 1;
pub const RFLAG_SCHEMA: u8 = 2;
pub const RFLAG_TYPE: u8 = 4;
pub const RFLAG_METADATA: u8 = 8;
/// Spec 3.8 (version 4): record flag `SUBJECT`.
pub const RFLAG_SUBJECT: u8 = 16;
/// Spec 3.11 (version 5): record flag `JSON`.
pub const RFLAG_JSON: u8 = 32;
/// Spec 3.6: frame flag `CHAINED`.
pub const FLAG_CHAINED: u8 = 1;
/// Spec 3.6: the 16 KiB blocks of the chain-slot rule.
pub const CHAIN_BLOCK: u64 = 16384;

/// One event as the application gives it (`id: None`: generated, spec 9).
#[derive(Debug, Clone, Copy)]
pub struct Ev {
    pub event_type: &'static str,
    pub payload: &'static str,
    pub metadata: &'static str,
    pub id: Option<[u8; 16]>,
    pub schema_version: u32,
}

/// Where one record lies in a body, and its `rflags`.
#[derive(Debug, Clone, Copy)]
pub struct RecordPlace {
    /// Offset of its `rflags` byte from the body's start.
    pub at: usize,
    pub len: usize,
    pub rflags: u8,
}

/// Spec 3.6 "Batch body", without the padding: `timestamp_delta`,
/// `stream_len`, stream, `first_version`, then each record.
pub fn batch_body(
    timestamp_delta: u64,
    stream: &str,
    first_version: u64,
    events: &[Ev],
) -> (Vec<u8>, Vec<RecordPlace>) {
    let mut b = Vec::new();
    put_varint(&mut b, timestamp_delta);
    put_varint(&mut b, stream.len() as u64);
    b.extend_from_slice(stream.as_bytes());
    put_varint(&mut b, first_version);
    let mut places = Vec::new();
    let mut prev_type: Option<&str> = None;
    for ev in events {
        let at = b.len();
        let mut rflags = 0u8;
        if ev.id.is_some() {
            rflags |= RFLAG_ID;
        }
        if ev.schema_version != 0 {
            rflags |= RFLAG_SCHEMA;
        }
        if prev_type != Some(ev.event_type) {
            rflags |= RFLAG_TYPE;
        }
        if !ev.metadata.is_empty() {
            rflags |= RFLAG_METADATA;
        }
        b.push(rflags);
        if let Some(id) = ev.id {
            b.extend_from_slice(&id);
        }
        if rflags & RFLAG_SCHEMA != 0 {
            put_varint(&mut b, u64::from(ev.schema_version));
        }
        if rflags & RFLAG_TYPE != 0 {
            put_varint(&mut b, ev.event_type.len() as u64);
            b.extend_from_slice(ev.event_type.as_bytes());
        }
        if rflags & RFLAG_METADATA != 0 {
            put_varint(&mut b, ev.metadata.len() as u64);
            b.extend_from_slice(ev.metadata.as_bytes());
        }
        put_varint(&mut b, ev.payload.len() as u64);
        b.extend_from_slice(ev.payload.as_bytes());
        places.push(RecordPlace {
            at,
            len: b.len() - at,
            rflags,
        });
        prev_type = Some(ev.event_type);
    }
    (b, places)
}

/// The values of one v3 frame header (spec 3.6).
#[derive(Debug, Clone, Copy)]
pub struct FrameHead {
    pub kind: u8,
    pub chained: bool,
    pub frame_len: u32,
    pub record_count: u32,
    pub first_position: u64,
    pub durable_end: u32,
}

impl FrameHead {
    pub fn header_len(&self) -> usize {
        if self.chained { 64 } else { 32 }
    }
}

/// Spec 3.6 "Frame header": fills header `[0, header_len)` of `frame`
/// (whose body, if any, is already in place): `magic`, `kind`, `flags`,
/// `frame_len`, `record_count`, `first_position`, `durable_end`, `body_crc`
/// (batches: CRC of `[header_len, frame_len)`; else zero), the chain slot,
/// then `header_crc` over `[4, header_len)`.
pub fn fill_header(frame: &mut [u8], fh: &FrameHead, chain: Option<&[u8; 32]>) {
    let hl = fh.header_len();
    put(frame, 4, b"F3");
    frame[6] = fh.kind;
    frame[7] = if fh.chained { FLAG_CHAINED } else { 0 };
    put(frame, 8, &fh.frame_len.to_le_bytes());
    put(frame, 12, &fh.record_count.to_le_bytes());
    put(frame, 16, &fh.first_position.to_le_bytes());
    put(frame, 24, &fh.durable_end.to_le_bytes());
    let body_crc = if fh.kind == 1 { crc(&frame[hl..]) } else { 0 };
    put(frame, 28, &body_crc.to_le_bytes());
    if fh.chained {
        put(frame, 32, chain.expect("a chained header has a chain slot"));
    }
    let c = crc(&frame[4..hl]);
    put(frame, 0, &c.to_le_bytes());
}

/// A v3 batch frame: header, `body`, zero padding to a multiple of 8
/// (spec 3.6). `chain_before` is the running chain hash (`None`: a log
/// without the chain); returns the frame and the chain after it (spec
/// 21.2, every batch is a link, stored in the slot only if `chained`).
pub fn batch_frame(
    key: Option<&[u8; 32]>,
    chain_before: Option<&[u8; 32]>,
    chained: bool,
    first_position: u64,
    record_count: u32,
    durable_end: u32,
    body: &[u8],
) -> (Vec<u8>, Option<[u8; 32]>) {
    let hl = if chained { 64 } else { 32 };
    let frame_len = (hl + body.len()).next_multiple_of(8);
    let mut f = vec![0u8; frame_len];
    put(&mut f, hl, body);
    let fh = FrameHead {
        kind: 1,
        chained,
        frame_len: frame_len as u32,
        record_count,
        first_position,
        durable_end,
    };
    // The link reads [6, 28) and the body only, neither the CRCs nor the
    // slot: fill the header once without a slot to get those bytes.
    fill_header(&mut f, &fh, Some(&[0; 32]).filter(|_| chained));
    let after = chain_before.map(|prev| link(key, prev, &f, hl));
    fill_header(&mut f, &fh, after.as_ref());
    (f, after)
}

/// A v3 seal (spec 3.6: a header alone, chained exactly in a log with the
/// chain, `first_position` the position after the segment).
pub fn seal_frame(chain: Option<&[u8; 32]>, next_position: u64, durable_end: u32) -> Vec<u8> {
    let chained = chain.is_some();
    let hl = if chained { 64 } else { 32 };
    let mut f = vec![0u8; hl];
    let fh = FrameHead {
        kind: 2,
        chained,
        frame_len: hl as u32,
        record_count: 0,
        first_position: next_position,
        durable_end,
    };
    fill_header(&mut f, &fh, chain);
    f
}

/// Spec 3.6 "Which batches store a chain slot": the first batch of a
/// segment, or the first whose offset lies in a new 16 KiB block.
pub fn stores_slot(log_chain: bool, offset: u64, prev_batch: Option<u64>) -> bool {
    log_chain && prev_batch.is_none_or(|p| offset / CHAIN_BLOCK != p / CHAIN_BLOCK)
}

// ================================================================ reader

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Spec 8: `MAX_FRAME_LEN` = 2^30.
pub const MAX_FRAME_LEN: u64 = 1 << 30;

/// Spec 2.1 / 3.10: `segment_flags` bit 0 `COMPACTED` (version 4 only).
pub const SEGMENT_FLAG_COMPACTED: u16 = 1;

/// A segment header (spec 2.1, `format_version` 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegHeader {
    /// 3, or 4 (spec 3.7: a version 4 segment is a version 3 one byte for
    /// byte).
    pub format_version: u16,
    pub log_flags: u16,
    /// Version 4: bit 0 `COMPACTED` (spec 3.10); zero otherwise.
    pub segment_flags: u16,
    pub log_id: [u8; 16],
    pub base_position: u64,
    pub prev_timestamp: u64,
    pub created_at: u64,
    pub chain_start: [u8; 32],
    pub key_id: [u8; 16],
}

impl SegHeader {
    pub fn chain(&self) -> bool {
        self.log_flags & 1 != 0
    }
    /// The segment was rewritten by compaction (spec 3.10): its frames may
    /// skip positions, forward only.
    pub fn compacted(&self) -> bool {
        self.segment_flags & SEGMENT_FLAG_COMPACTED != 0
    }
}

/// Spec 2.1, the checks in their order; `Err(offset)` of the first failure.
pub fn parse_segment_header(seg: &[u8], file_base: u64) -> Result<SegHeader, usize> {
    if seg.len() < 128 {
        return Err(0);
    }
    if &seg[0..8] != b"ANNALSEG" {
        return Err(0);
    }
    let format_version = u16_at(seg, 8);
    if !(3..=5).contains(&format_version) {
        return Err(8);
    }
    if u32_at(seg, 124) != crc(&seg[..124]) {
        return Err(124);
    }
    let log_flags = u16_at(seg, 10);
    if log_flags & !3 != 0 || log_flags == 2 {
        return Err(10);
    }
    let chain = log_flags & 1 != 0;
    let keyed = log_flags & 2 != 0;
    // `segment_flags`: zero, but for `COMPACTED` in version 4 (spec 2.1,
    // 3.10); then `reserved0`, its own field at 14.
    let allowed = if format_version >= 4 { SEGMENT_FLAG_COMPACTED } else { 0 };
    if u16_at(seg, 12) & !allowed != 0 {
        return Err(12);
    }
    if u16_at(seg, 14) != 0 {
        return Err(14);
    }
    if !chain && seg[56..88].iter().any(|&b| b != 0) {
        return Err(56);
    }
    if !keyed && seg[88..104].iter().any(|&b| b != 0) {
        return Err(88);
    }
    if seg[104..124].iter().any(|&b| b != 0) {
        return Err(104);
    }
    let base_position = u64_at(seg, 32);
    if base_position != file_base {
        return Err(32);
    }
    Ok(SegHeader {
        format_version,
        log_flags,
        segment_flags: u16_at(seg, 12),
        log_id: seg[16..32].try_into().expect("16"),
        base_position,
        prev_timestamp: u64_at(seg, 40),
        created_at: u64_at(seg, 48),
        chain_start: seg[56..88].try_into().expect("32"),
        key_id: seg[88..104].try_into().expect("16"),
    })
}

/// One event a reader returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub timestamp: u64,
    pub id: [u8; 16],
    /// The id was stored (`ID`), not generated.
    pub id_stored: bool,
    pub schema_version: u32,
    pub event_type: String,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
    /// File offset of the record's `rflags` byte, and the record's length.
    pub offset: u64,
    pub len: u64,
    pub rflags: u8,
    /// Version 4, `SUBJECT` (spec 3.8): the key id and nonce; `payload` is
    /// then the sealed payload.
    pub sealed: Option<(u64, [u8; 24])>,
}

/// One complete frame a reader walked.
#[derive(Debug, Clone)]
pub struct ReadFrame {
    pub offset: u64,
    pub head: FrameHead,
    pub header_crc: u32,
    pub body_crc: u32,
    /// The stored chain slot (`CHAINED` only).
    pub slot: Option<[u8; 32]>,
    /// Batches: the body fields.
    pub timestamp: u64,
    pub stream: String,
    pub first_version: u64,
    /// Bytes of the body parsed (without padding), and the padding.
    pub body_used: usize,
    pub padding: usize,
    pub events: Vec<ReadEvent>,
}

impl ReadFrame {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.head.frame_len)
    }
}

/// The result of walking a segment from offset 128 (spec 3.6, 5.1).
#[derive(Debug, Clone)]
pub struct Walk {
    pub header: SegHeader,
    pub frames: Vec<ReadFrame>,
    /// The first frame that is not complete: `(X, finding offset)`.
    pub incomplete: Option<(u64, u64)>,
}

impl Walk {
    pub fn events(&self) -> Vec<ReadEvent> {
        self.frames.iter().flat_map(|f| f.events.iter().cloned()).collect()
    }
    /// The end of the complete frames (`X`, or the file's end).
    pub fn end(&self) -> u64 {
        self.frames.last().map_or(128, ReadFrame::end)
    }
    /// The positions the frames skip (spec 3.10, a segment with
    /// `COMPACTED` only), as `(first position, count)` in position order:
    /// from the segment's base to its first frame, between frames, and up
    /// to the seal's `first_position`.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut at = self.header.base_position;
        let mut gaps = Vec::new();
        for f in &self.frames {
            if f.head.first_position > at {
                gaps.push((at, f.head.first_position - at));
            }
            at = f.head.first_position + u64::from(f.head.record_count);
        }
        gaps
    }
}

/// Spec 3.6 "Header checks" of the frame at `off`; `Err(finding)`.
/// A frame header that passed the checks: its fields, `header_crc`,
/// `body_crc` and the stored chain slot.
type CheckedHeader = (FrameHead, u32, u32, Option<[u8; 32]>);

fn check_header(seg: &[u8], off: usize, log_chain: bool) -> Result<CheckedHeader, usize> {
    if off + 32 > seg.len() {
        return Err(off); // 1
    }
    if &seg[off + 4..off + 6] != b"F3" {
        return Err(off + 4); // 2
    }
    let flags = seg[off + 7];
    if !(flags == 0 || (flags == 1 && log_chain)) {
        return Err(off + 7); // 3
    }
    let chained = flags == 1;
    let hl = if chained { 64 } else { 32 };
    if off + hl > seg.len() {
        return Err(off); // 4
    }
    let header_crc = u32_at(seg, off);
    if header_crc != crc(&seg[off + 4..off + hl]) {
        return Err(off); // 5
    }
    let frame_len = u32_at(seg, off + 8);
    if !frame_len.is_multiple_of(8) || (frame_len as usize) < hl || u64::from(frame_len) > MAX_FRAME_LEN {
        return Err(off + 8); // 6
    }
    let kind = seg[off + 6];
    let record_count = u32_at(seg, off + 12);
    match kind {
        1 if record_count >= 1 => {}
        1 => return Err(off + 12),
        2 if record_count == 0 && frame_len as usize == hl && chained == log_chain => {}
        2 => return Err(off),
        3 if chained && record_count == 0 && frame_len == 168 => {}
        3 => return Err(off),
        _ => return Err(off + 6), // 7
    }
    let first_position = u64_at(seg, off + 16);
    if first_position.checked_add(u64::from(record_count)).is_none() {
        return Err(off + 16); // 8
    }
    let durable_end = u32_at(seg, off + 24);
    if !(128 <= durable_end as usize && durable_end as usize <= off) {
        return Err(off + 24); // 9
    }
    let body_crc = u32_at(seg, off + 28);
    if kind != 1 && body_crc != 0 {
        return Err(off + 28); // 10
    }
    let slot = chained.then(|| seg[off + 32..off + 64].try_into().expect("32"));
    Ok((
        FrameHead {
            kind,
            chained,
            frame_len,
            record_count,
            first_position,
            durable_end,
        },
        header_crc,
        body_crc,
        slot,
    ))
}

/// Reads `len` bytes at `at` of a frame ending at `end`; if they run past
/// it, the finding is `field_at` (the first byte of the length varint that
/// announced them, or of the field itself when it has no length: spec 3.6
/// "Complete" step 3).
fn take(seg: &[u8], at: usize, len: u64, end: usize, field_at: usize) -> Result<(&[u8], usize), usize> {
    let stop = (at as u64)
        .checked_add(len)
        .filter(|&s| s <= end as u64)
        .ok_or(field_at)? as usize;
    Ok((&seg[at..stop], stop))
}

fn varint_in(seg: &[u8], at: usize, end: usize, min: u64, max: u64) -> Result<(u64, usize), usize> {
    let (v, next) = get_varint(seg, at, end)?;
    if v < min || v > max { Err(at) } else { Ok((v, next)) }
}

fn utf8_at(bytes: &[u8], at: usize) -> Result<String, usize> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| at)
}

/// Spec 3.6 "Complete", steps 1 to 4, of the batch at `off` whose header
/// passed; the body fields and the events (ids generated where not stored,
/// spec 9). `Err(finding)`.
#[allow(clippy::too_many_arguments)]
fn parse_batch(
    seg: &[u8],
    off: usize,
    fh: &FrameHead,
    hdr: &SegHeader,
    header_crc: u32,
    body_crc: u32,
    slot: Option<[u8; 32]>,
) -> Result<ReadFrame, usize> {
    let hl = fh.header_len();
    let end = off + fh.frame_len as usize;
    if end > seg.len() {
        return Err(off + 8); // 1
    }
    if body_crc != crc(&seg[off + hl..end]) {
        return Err(off + 28); // 2
    }
    // 3: the body, field by field.
    let mut at = off + hl;
    let (delta, next) = varint_in(seg, at, end, 0, u64::MAX)?;
    let timestamp = hdr.prev_timestamp.checked_add(delta).ok_or(at)?;
    at = next;
    let len_at = at;
    let (stream_len, next) = varint_in(seg, at, end, 1, 65_535)?;
    // The `stream` field starts after `stream_len`: a name that is not
    // UTF-8 is found at its first byte.
    let stream_at = next;
    let (stream, next) = take(seg, next, stream_len, end, len_at)?;
    let stream = utf8_at(stream, stream_at)?;
    at = next;
    let (first_version, next) = get_varint(seg, at, end)?;
    if first_version.checked_add(u64::from(fh.record_count) - 1).is_none() {
        return Err(at);
    }
    at = next;
    let mut events = Vec::new();
    let mut prev_type: Option<String> = None;
    for i in 0..u64::from(fh.record_count) {
        let rec_at = at;
        if at >= end {
            return Err(end);
        }
        let rflags = seg[at];
        let unknown = match hdr.format_version {
            3 => 0xf0,
            4 => 0xe0,
            _ => 0xc0,
        };
        if rflags & unknown != 0 || rflags & (RFLAG_SUBJECT | RFLAG_METADATA) == RFLAG_SUBJECT | RFLAG_METADATA {
            return Err(at);
        }
        // Record 0 without TYPE: the `rflags` field itself fails, before
        // any field it announces is read.
        if i == 0 && rflags & RFLAG_TYPE == 0 {
            return Err(rec_at);
        }
        at += 1;
        let (id, id_stored) = if rflags & RFLAG_ID != 0 {
            let (b, next) = take(seg, at, 16, end, at)?;
            at = next;
            (b.try_into().expect("16"), true)
        } else {
            let position = fh.first_position + i;
            (generated_id(&hdr.log_id, position, timestamp), false)
        };
        let schema_version = if rflags & RFLAG_SCHEMA != 0 {
            let (v, next) = varint_in(seg, at, end, 1, u64::from(u32::MAX))?;
            at = next;
            v as u32
        } else {
            0
        };
        let event_type = if rflags & RFLAG_TYPE != 0 {
            let len_at = at;
            let (len, next) = varint_in(seg, at, end, 1, 65_535)?;
            // A type that is not UTF-8 is found at the name's first byte
            // (the record table's row is `type_len`, type: the name is the
            // part that fails).
            let name_at = next;
            let (b, next) = take(seg, next, len, end, len_at)?;
            let t = utf8_at(b, name_at)?;
            if prev_type.as_deref() == Some(t.as_str()) {
                return Err(rec_at); // a repeated type
            }
            at = next;
            t
        } else {
            match &prev_type {
                Some(t) => t.clone(),
                None => return Err(rec_at), // record 0 without TYPE
            }
        };
        let sealed = if rflags & RFLAG_SUBJECT != 0 {
            let (key, next) = varint_in(seg, at, end, 1, u64::MAX)?;
            let (nonce, next) = take(seg, next, 24, end, next)?;
            at = next;
            Some((key, nonce.try_into().expect("24")))
        } else {
            None
        };
        let metadata = if rflags & RFLAG_METADATA != 0 {
            let len_at = at;
            let (len, next) = varint_in(seg, at, end, 1, u64::from(u32::MAX))?;
            let (b, next) = take(seg, next, len, end, len_at)?;
            at = next;
            b.to_vec()
        } else {
            Vec::new()
        };
        let len_at = at;
        let min_payload = if sealed.is_some() { 17 } else { 0 };
        let (len, next) = varint_in(seg, at, end, min_payload, u64::from(u32::MAX))?;
        let (payload, next) = take(seg, next, len, end, len_at)?;
        at = next;
        events.push(ReadEvent {
            position: fh.first_position + i,
            stream: stream.clone(),
            stream_version: first_version + i,
            timestamp,
            id,
            id_stored,
            schema_version,
            event_type: event_type.clone(),
            metadata,
            payload: payload.to_vec(),
            offset: rec_at as u64,
            len: (at - rec_at) as u64,
            rflags,
            sealed,
        });
        prev_type = Some(event_type);
    }
    // 4: the padding.
    let used = at - off;
    let padding = (8 - used % 8) % 8;
    // "else at its first non-zero byte, or where more bytes remain than
    // that": a non-zero byte of the padding itself, else the byte past it.
    if let Some(nz) = seg[at..(at + padding).min(end)].iter().position(|&b| b != 0) {
        return Err(at + nz);
    }
    if end - at > padding {
        return Err(at + padding);
    }
    Ok(ReadFrame {
        offset: off as u64,
        head: *fh,
        header_crc,
        body_crc,
        slot,
        timestamp,
        stream,
        first_version,
        body_used: used - hl,
        padding,
        events,
    })
}

/// Walks the frames of the v3 segment `seg` (named for `file_base`) from
/// offset 128, checking each as spec 3.6 says ("Header checks", "Complete",
/// and step 5 against the frames before it), up to the end of the file or
/// the first frame that is not complete.
pub fn walk_segment(seg: &[u8], file_base: u64) -> Result<Walk, usize> {
    let header = parse_segment_header(seg, file_base)?;
    let mut frames: Vec<ReadFrame> = Vec::new();
    let mut off = 128usize;
    let mut position = header.base_position;
    let mut last_ts = header.prev_timestamp;
    let mut incomplete = None;
    let mut sealed = false;
    while off < seg.len() {
        if sealed {
            // Spec 3.4: bytes after a seal are a frame that is not complete.
            incomplete = Some((off as u64, off as u64));
            break;
        }
        let step = (|| {
            let (fh, header_crc, body_crc, slot) = check_header(seg, off, header.chain())?;
            let frame = match fh.kind {
                1 => parse_batch(seg, off, &fh, &header, header_crc, body_crc, slot)?,
                2 => ReadFrame {
                    offset: off as u64,
                    head: fh,
                    header_crc,
                    body_crc,
                    slot,
                    timestamp: 0,
                    stream: String::new(),
                    first_version: 0,
                    body_used: 0,
                    padding: 0,
                    events: Vec::new(),
                },
                // No checkpoint in these vectors; the reader of this file
                // does not implement their body (spec 3.5).
                _ => return Err(off + 6),
            };
            // 5: against the frames before it. In a segment with
            // `COMPACTED` a frame may start above the position the previous
            // one ended at (removed events are skipped), never below (spec
            // 3.10).
            let gap_ok = header.compacted() && fh.first_position > position;
            if fh.first_position != position && !gap_ok {
                return Err(off + 16);
            }
            if fh.kind == 1 && frame.timestamp < last_ts {
                return Err(off + fh.header_len());
            }
            Ok(frame)
        })();
        match step {
            Ok(f) => {
                off = f.end() as usize;
                position = f.head.first_position + u64::from(f.head.record_count);
                if f.head.kind == 1 {
                    last_ts = f.timestamp;
                } else {
                    sealed = true;
                }
                frames.push(f);
            }
            Err(at) => {
                incomplete = Some((off as u64, at as u64));
                break;
            }
        }
    }
    Ok(Walk {
        header,
        frames,
        incomplete,
    })
}

/// Spec 21.3 (version 3), step 1 for one segment: from `chain_start`, links
/// every batch; at a batch that stores a slot, compares the running hash
/// with it and goes on from the stored value; a seal's slot is compared
/// with the running hash, except in a segment with `COMPACTED`, whose seal
/// keeps the original seal's chain (spec 3.10: the join with the next
/// segment, not compared with the chain after the last batch). Returns the
/// chain after the last batch (the anchor's hash; for a compacted segment
/// not its seal's slot) or the offset of the first slot that differs.
pub fn verify_chain(seg: &[u8], walk: &Walk, key: Option<&[u8; 32]>) -> Result<[u8; 32], u64> {
    let mut running = walk.header.chain_start;
    for f in &walk.frames {
        let frame = &seg[f.offset as usize..f.end() as usize];
        if f.head.kind == 1 {
            running = link(key, &running, frame, f.head.header_len());
        }
        if f.head.kind == 2 && walk.header.compacted() {
            continue;
        }
        if let Some(slot) = f.slot {
            if slot != running {
                return Err(f.offset + 32);
            }
            running = slot;
        }
    }
    Ok(running)
}

/// One head slot (spec 5.2) as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSlot {
    pub format_version: u16,
    pub sequence: u64,
    pub segment_base: u64,
    pub durable_end: u64,
    pub visible_end: u64,
    pub next_position: u64,
}

/// Spec 5.2: the slot at `at` (0 or 64), checked in the table's order;
/// `None` if invalid (checks 1-3, 5, 6); a panic for an unsupported
/// version (check 4 is an error, not an invalid slot).
pub fn read_slot(head: &[u8], at: usize) -> Option<ReadSlot> {
    if head.len() < at + 64 || &head[at..at + 4] != b"HEAD" || u32_at(head, at + 4) != crc(&head[at + 8..at + 64]) {
        return None;
    }
    let format_version = u16_at(head, at + 8);
    assert!(
        (1..=5).contains(&format_version),
        "head slot at {at}: format_version {format_version}"
    );
    if u16_at(head, at + 10) != 0 || u32_at(head, at + 12) != 0 || u64_at(head, at + 56) != 0 {
        return None;
    }
    let durable_end = u64_at(head, at + 32);
    let visible_end = u64_at(head, at + 40);
    if !(128 <= durable_end && durable_end <= visible_end) {
        return None;
    }
    Some(ReadSlot {
        format_version,
        sequence: u64_at(head, at + 16),
        segment_base: u64_at(head, at + 24),
        durable_end,
        visible_end,
        next_position: u64_at(head, at + 48),
    })
}

/// Spec 5.2: the current slot, the valid one with the larger `sequence`.
pub fn current_slot(head: &[u8]) -> Option<ReadSlot> {
    [read_slot(head, 0), read_slot(head, 64)]
        .into_iter()
        .flatten()
        .max_by_key(|s| s.sequence)
}

/// Spec 5.1 for the active segment `seg` (based at `base`) whose walk is
/// `walk`: `B` = the largest of 128 (rule 1), the current head slot's
/// `durable_end` if it names this segment (rule 2), and the `durable_end`
/// of every frame header walked and of every header that passes the header
/// checks at a multiple of 8 from `X` to the end of the file (rule 3,
/// resynchronisation).
pub fn durable_boundary(seg: &[u8], walk: &Walk, head: Option<&ReadSlot>, base: u64) -> u64 {
    let mut b = 128u64;
    if let Some(s) = head.filter(|s| s.segment_base == base) {
        b = b.max(s.durable_end);
    }
    for f in &walk.frames {
        b = b.max(u64::from(f.head.durable_end));
    }
    if let Some((x, _)) = walk.incomplete {
        let mut at = x as usize;
        while at < seg.len() {
            if let Ok((fh, ..)) = check_header(seg, at, walk.header.chain()) {
                b = b.max(u64::from(fh.durable_end));
            }
            at += 8;
        }
    }
    b
}

// ======================================== derived files (spec 16 to 19)
//
// The index files (`.idx`, index version 2, spec 17) of the sealed segments
// and the stream table (spec 18), from the events of the segments, as
// `tests/golden_index_vectors.rs` assembles them for versions 1 and 2
// (its encoders, reduced to index version 2): the index files and the stream
// table are those of version 2 in a version 3 log (spec 10); `seal_crc` is
// the `header_crc` of the seal, at its frame offset 0 in version 3.

/// Spec 17.1 / 18: the stream hash mask of every derived file (all ones).
pub const HASH_MASK: u64 = u64::MAX;
const BLOCK: usize = 4096;
const FOOTER_LEN: usize = 32;
const IDX_HEADER_LEN: usize = 128;
const IDX_NAMED_ROW_LEN: usize = 32;
const IDX_STREAM_ROW_LEN: usize = 48;
const STB_HEADER_LEN: usize = 64;
const STB_ROW_LEN: usize = 40;
const NO_SEGMENT: u64 = u64::MAX;
const NO_ROW: u32 = u32::MAX;
/// Spec 17.1: the index layout version written.
pub const INDEX_VERSION: u16 = 2;
pub const STREAM_TABLE_FILE: &str = "annal.streams";

/// Spec 19: 64-bit FNV-1a over the UTF-8 bytes of the name.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn stream_hash(name: &str) -> u64 {
    fnv1a64(name.as_bytes()) & HASH_MASK
}

/// Spec 19: the part of the name before the first `-`; none without one.
pub fn category(stream: &str) -> Option<&str> {
    stream.find('-').map(|i| &stream[..i])
}

/// One batch of a sealed segment, as the index needs it.
#[derive(Debug, Clone)]
pub struct IdxFrame {
    pub offset: u64,
    pub first_position: u64,
    pub stream: String,
    pub first_version: u64,
    pub last_version: u64,
    /// The event types of its records, in record order.
    pub types: Vec<String>,
}

/// One segment, as the derived files need it.
#[derive(Debug, Clone)]
pub struct IdxSegment {
    pub base: u64,
    pub len: u64,
    /// The seal's `header_crc` and `first_position` (sealed segments).
    pub seal: Option<(u32, u64)>,
    pub frames: Vec<IdxFrame>,
}

impl IdxSegment {
    /// From the walk of a segment of `len` bytes.
    pub fn of(walk: &Walk, len: u64) -> IdxSegment {
        IdxSegment {
            base: walk.header.base_position,
            len,
            seal: walk
                .frames
                .iter()
                .find(|f| f.head.kind == 2)
                .map(|f| (f.header_crc, f.head.first_position)),
            frames: walk
                .frames
                .iter()
                .filter(|f| f.head.kind == 1)
                .map(|f| IdxFrame {
                    offset: f.offset,
                    first_position: f.head.first_position,
                    stream: f.stream.clone(),
                    first_version: f.first_version,
                    last_version: f.first_version + u64::from(f.head.record_count) - 1,
                    types: f.events.iter().map(|e| e.event_type.clone()).collect(),
                })
                .collect(),
        }
    }
}

fn finish_derived(mut body: Vec<u8>, magic: &[u8; 8]) -> Vec<u8> {
    assert_eq!(body.len() % 8, 0, "table_offset is a multiple of 8");
    let table_offset = body.len();
    let block_count = table_offset.div_ceil(BLOCK);
    let mut table = Vec::new();
    for i in 0..block_count {
        let block = &body[BLOCK * i..(BLOCK * (i + 1)).min(table_offset)];
        table.extend_from_slice(&crc(block).to_le_bytes());
    }
    let mut footer = [0u8; FOOTER_LEN];
    put(&mut footer, 0, &(table_offset as u64).to_le_bytes());
    put(&mut footer, 8, &(block_count as u64).to_le_bytes());
    put(&mut footer, 16, &crc(&table).to_le_bytes()); // table_crc
    let c = crc(&footer[0..20]);
    put(&mut footer, 20, &c.to_le_bytes()); // footer_crc of [0, 20)
    put(&mut footer, 24, magic);
    body.extend_from_slice(&table);
    body.extend_from_slice(&footer);
    body
}

fn push_padded(body: &mut Vec<u8>, names: &[u8]) {
    body.extend_from_slice(names);
    body.resize(body.len().next_multiple_of(8), 0);
}

#[derive(Debug, Clone)]
struct StreamRow {
    name: String,
    hash: u64,
    name_offset: u32,
    first_version: u64,
    last_version: u64,
    entry_start: u32,
    entries: Vec<(u64, u64)>,
    prev_segment: u64,
    prev_row: u32,
}

#[derive(Debug, Clone)]
struct NamedRow {
    name: String,
    hash: u64,
    name_offset: u32,
    entry_start: u32,
    entries: Vec<u64>,
}

#[derive(Debug, Clone)]
struct IndexModel {
    file: String,
    segment_base: u64,
    segment_len: u64,
    seal_crc: u32,
    streams: Vec<StreamRow>,
    categories: Vec<NamedRow>,
    types: Vec<NamedRow>,
    frames: Vec<(u64, u64)>,
    names: Vec<u8>,
}

fn sort_by_hash_and_name<T>(rows: &mut [T], key: impl Fn(&T) -> (u64, &str)) {
    rows.sort_by(|a, b| {
        let (ha, na) = key(a);
        let (hb, nb) = key(b);
        (ha, na.as_bytes()).cmp(&(hb, nb.as_bytes()))
    });
}

fn named_rows(pairs: &[(&str, u64)]) -> Vec<NamedRow> {
    let mut rows: Vec<NamedRow> = Vec::new();
    for &(name, entry) in pairs {
        match rows.iter_mut().find(|r| r.name == name) {
            Some(r) => r.entries.push(entry),
            None => rows.push(NamedRow {
                name: name.to_owned(),
                hash: stream_hash(name),
                name_offset: 0,
                entry_start: 0,
                entries: vec![entry],
            }),
        }
    }
    sort_by_hash_and_name(&mut rows, |r| (r.hash, &r.name));
    let mut start = 0;
    for r in &mut rows {
        r.entry_start = start;
        start += r.entries.len() as u32;
    }
    rows
}

/// Spec 17.2 (index version 2): stream rows with one entry per batch,
/// category entries per batch, event type entries naming each batch that
/// holds a record of the type once, frame entries; names in a name area.
fn build_indexes(segments: &[IdxSegment]) -> Vec<IndexModel> {
    let mut out: Vec<IndexModel> = Vec::new();
    for seg in segments {
        let Some((seal_crc, _)) = seg.seal else { continue };
        let mut streams: Vec<StreamRow> = Vec::new();
        for f in &seg.frames {
            match streams.iter_mut().find(|r| r.name == f.stream) {
                Some(r) => {
                    r.last_version = f.last_version;
                    r.entries.push((f.first_version, f.offset));
                }
                None => streams.push(StreamRow {
                    name: f.stream.clone(),
                    hash: stream_hash(&f.stream),
                    name_offset: 0,
                    first_version: f.first_version,
                    last_version: f.last_version,
                    entry_start: 0,
                    entries: vec![(f.first_version, f.offset)],
                    prev_segment: NO_SEGMENT,
                    prev_row: NO_ROW,
                }),
            }
        }
        sort_by_hash_and_name(&mut streams, |r| (r.hash, &r.name));
        let mut start = 0;
        for r in &mut streams {
            r.entry_start = start;
            start += r.entries.len() as u32;
            if let Some((seg_base, row)) = out.iter().rev().find_map(|m| {
                m.streams
                    .iter()
                    .position(|s| s.name == r.name)
                    .map(|i| (m.segment_base, i))
            }) {
                r.prev_segment = seg_base;
                r.prev_row = row as u32;
            }
        }
        let cat_pairs: Vec<(&str, u64)> = seg
            .frames
            .iter()
            .filter_map(|f| category(&f.stream).map(|c| (c, f.offset)))
            .collect();
        let type_pairs: Vec<(&str, u64)> = seg
            .frames
            .iter()
            .flat_map(|f| {
                let mut seen: Vec<&str> = Vec::new();
                f.types.iter().filter_map(move |t| {
                    if seen.contains(&t.as_str()) {
                        return None;
                    }
                    seen.push(t.as_str());
                    Some((t.as_str(), f.offset))
                })
            })
            .collect();
        let mut categories = named_rows(&cat_pairs);
        let mut types = named_rows(&type_pairs);
        let mut names = Vec::new();
        for r in &mut streams {
            r.name_offset = names.len() as u32;
            names.extend_from_slice(r.name.as_bytes());
        }
        for r in categories.iter_mut().chain(types.iter_mut()) {
            r.name_offset = names.len() as u32;
            names.extend_from_slice(r.name.as_bytes());
        }
        out.push(IndexModel {
            file: format!("{:020}.idx", seg.base),
            segment_base: seg.base,
            segment_len: seg.len,
            seal_crc,
            streams,
            categories,
            types,
            frames: seg.frames.iter().map(|f| (f.first_position, f.offset)).collect(),
            names,
        });
    }
    out
}

fn entry_count<T>(rows: &[T], n: impl Fn(&T) -> usize) -> u32 {
    rows.iter().map(n).sum::<usize>() as u32
}

/// Spec 17.1 and 17.2, index version 2.
fn encode_index(m: &IndexModel) -> Vec<u8> {
    let mut h = vec![0u8; IDX_HEADER_LEN];
    put(&mut h, 0, b"ANNALIDX");
    put(&mut h, 8, &INDEX_VERSION.to_le_bytes());
    put(&mut h, 16, &m.segment_base.to_le_bytes());
    put(&mut h, 24, &m.segment_len.to_le_bytes());
    put(&mut h, 32, &HASH_MASK.to_le_bytes());
    put(&mut h, 40, &(m.streams.len() as u32).to_le_bytes());
    put(&mut h, 44, &entry_count(&m.streams, |r| r.entries.len()).to_le_bytes());
    put(&mut h, 48, &(m.categories.len() as u32).to_le_bytes());
    put(
        &mut h,
        52,
        &entry_count(&m.categories, |r| r.entries.len()).to_le_bytes(),
    );
    put(&mut h, 56, &(m.types.len() as u32).to_le_bytes());
    put(&mut h, 60, &entry_count(&m.types, |r| r.entries.len()).to_le_bytes());
    put(&mut h, 64, &(m.frames.len() as u32).to_le_bytes());
    put(&mut h, 68, &(m.names.len() as u32).to_le_bytes());
    put(&mut h, 72, &m.seal_crc.to_le_bytes());
    let mut body = h;
    for r in &m.streams {
        let mut row = vec![0u8; IDX_STREAM_ROW_LEN];
        put(&mut row, 0, &r.hash.to_le_bytes());
        put(&mut row, 8, &r.name_offset.to_le_bytes());
        put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
        put(&mut row, 16, &r.first_version.to_le_bytes());
        put(&mut row, 24, &((r.last_version - r.first_version) as u32).to_le_bytes());
        put(&mut row, 28, &r.entry_start.to_le_bytes());
        put(&mut row, 32, &(r.entries.len() as u32).to_le_bytes());
        put(&mut row, 36, &r.prev_row.to_le_bytes());
        put(&mut row, 40, &r.prev_segment.to_le_bytes());
        body.extend_from_slice(&row);
    }
    for r in &m.streams {
        for &(v, off) in &r.entries {
            body.extend_from_slice(&((v - r.first_version) as u32).to_le_bytes());
            body.extend_from_slice(&(off as u32).to_le_bytes());
        }
    }
    for rows in [&m.categories, &m.types] {
        for r in rows {
            let mut row = [0u8; IDX_NAMED_ROW_LEN];
            put(&mut row, 0, &r.hash.to_le_bytes());
            put(&mut row, 8, &r.name_offset.to_le_bytes());
            put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
            put(&mut row, 16, &r.entry_start.to_le_bytes());
            put(&mut row, 20, &(r.entries.len() as u32).to_le_bytes());
            body.extend_from_slice(&row);
        }
        for r in rows {
            for &off in &r.entries {
                body.extend_from_slice(&(off as u32).to_le_bytes());
            }
        }
    }
    for &(p, off) in &m.frames {
        body.extend_from_slice(&((p - m.segment_base) as u32).to_le_bytes());
        body.extend_from_slice(&(off as u32).to_le_bytes());
    }
    push_padded(&mut body, &m.names);
    finish_derived(body, b"ANNALIDX")
}

/// Spec 18: the stream table, one row per stream naming the newest index
/// row of the stream, `next_segment` the base of the first segment it does
/// not cover (the last seal's `first_position`).
fn encode_table(segments: &[IdxSegment], indexes: &[IndexModel]) -> Vec<u8> {
    struct Row {
        name: String,
        hash: u64,
        last_version: u64,
        segment: u64,
        row: u32,
    }
    let mut rows: Vec<Row> = Vec::new();
    for m in indexes {
        for (i, s) in m.streams.iter().enumerate() {
            rows.retain(|r| r.name != s.name);
            rows.push(Row {
                name: s.name.clone(),
                hash: s.hash,
                last_version: s.last_version,
                segment: m.segment_base,
                row: i as u32,
            });
        }
    }
    sort_by_hash_and_name(&mut rows, |r| (r.hash, &r.name));
    let next_segment = segments.iter().filter_map(|s| s.seal).next_back().map_or(0, |s| s.1);
    let names: Vec<u8> = rows.iter().flat_map(|r| r.name.bytes()).collect();
    let mut body = vec![0u8; STB_HEADER_LEN];
    put(&mut body, 0, b"ANNALSTB");
    put(&mut body, 8, &1u16.to_le_bytes()); // table_version
    put(&mut body, 16, &next_segment.to_le_bytes());
    put(&mut body, 24, &HASH_MASK.to_le_bytes());
    put(&mut body, 32, &(rows.len() as u64).to_le_bytes());
    put(&mut body, 40, &(names.len() as u64).to_le_bytes());
    let mut name_offset = 0u32;
    for r in &rows {
        let mut row = [0u8; STB_ROW_LEN];
        put(&mut row, 0, &r.hash.to_le_bytes());
        put(&mut row, 8, &name_offset.to_le_bytes());
        put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
        put(&mut row, 16, &r.last_version.to_le_bytes());
        put(&mut row, 24, &r.segment.to_le_bytes());
        put(&mut row, 32, &r.row.to_le_bytes());
        body.extend_from_slice(&row);
        name_offset += r.name.len() as u32;
    }
    push_padded(&mut body, &names);
    finish_derived(body, b"ANNALSTB")
}

/// The derived files of a log whose segments are `segments`: `(file name,
/// bytes)` of each sealed segment's index, then the stream table.
pub fn derived_files(segments: &[IdxSegment]) -> Vec<(String, Vec<u8>)> {
    let indexes = build_indexes(segments);
    let mut files: Vec<(String, Vec<u8>)> = indexes.iter().map(|m| (m.file.clone(), encode_index(m))).collect();
    files.push((STREAM_TABLE_FILE.to_owned(), encode_table(segments, &indexes)));
    files
}
