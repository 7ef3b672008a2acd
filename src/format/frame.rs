//! Segment files: naming, frames, batch validation, and walking a segment.
//!
//! This module owns spec sections 1 (segment naming), 3.3 (when a batch is
//! complete), 3.4 (seals) and the frame walk that recovery, readers and
//! `check` share. Everything here works on `&[u8]`: the caller decides whether
//! the bytes come from a copy (`pread`) or from a mapping.
//!
//! Invariants upheld by `validate_frame`: a frame reported valid is complete
//! (spec 3.3), so any record parsed from it afterwards parses without error.

use zerocopy::IntoBytes;

use crate::format::damage::Damage;
use crate::format::record::{RecordRef, parse_record, parse_record_with};
use crate::format::{
    ALIGN, FRAME_CHAIN_OFFSET, FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_CHECKPOINT, FRAME_KIND_SEAL, FrameHeader,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
};

/// What a complete frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: u8,
    pub len: u64,
    pub first_position: u64,
    pub count: u32,
    pub durable_end: u64,
    /// Timestamp of the last record (batches only; 0 for a seal).
    pub last_timestamp: u64,
}

impl Frame {
    /// One past the last position of this frame.
    pub fn next_position(&self) -> u64 {
        self.first_position + self.count as u64
    }
}

/// Encode a seal frame (spec 3.4).
pub(crate) fn encode_seal(next_position: u64, durable_end: u64) -> [u8; FRAME_HEADER_LEN] {
    let h = FrameHeader::new(FRAME_KIND_SEAL, FRAME_HEADER_LEN as u64, next_position, 0, durable_end);
    let mut out = [0u8; FRAME_HEADER_LEN];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Write a batch frame header into `out[at..at + 72]` once its records follow it.
pub(crate) fn finish_batch_header(out: &mut [u8], first_position: u64, count: u32, durable_end: u64) {
    let len = out.len() as u64;
    let h = FrameHeader::new(FRAME_KIND_BATCH, len, first_position, count, durable_end);
    out[..FRAME_HEADER_LEN].copy_from_slice(h.as_bytes());
}

/// Check that the frame at the start of `bytes` (at file offset `off`) is
/// complete (spec 3.3), with or without record CRCs. `bytes` may extend past
/// the frame. Record structure is always checked; with `verify_crc` also the
/// CRCs, reserved fields and padding.
pub(crate) fn validate_frame(bytes: &[u8], off: u64, verify_crc: bool) -> Result<Frame, Damage> {
    validate_frame_each(bytes, off, verify_crc, |_, _| {})
}

/// [`validate_frame`], calling `each(offset in frame, record)` for every
/// record as it is checked (one pass). If it returns an error, records already
/// passed to `each` belong to a batch that is not complete: discard them.
pub(crate) fn validate_frame_each<'a>(
    bytes: &'a [u8],
    off: u64,
    verify_crc: bool,
    mut each: impl FnMut(usize, RecordRef<'a>),
) -> Result<Frame, Damage> {
    let h = FrameHeader::parse(bytes, off)?;
    let len = h.frame_len.get();
    let frame = Frame {
        kind: h.kind,
        len,
        first_position: h.first_position.get(),
        count: h.record_count.get(),
        durable_end: h.durable_end.get(),
        last_timestamp: 0,
    };
    let Some(body) = usize::try_from(len).ok().and_then(|l| bytes.get(FRAME_HEADER_LEN..l)) else {
        return Err(Damage::corrupt(
            off + 8,
            format!(
                "frame_len {len} runs past the end of the file ({} bytes remain)",
                bytes.len()
            ),
        ));
    };
    if h.kind == FRAME_KIND_SEAL {
        return Ok(frame);
    }
    if h.kind == FRAME_KIND_CHECKPOINT {
        // Public key and signature under the body CRC, then 4 zero bytes
        // (spec 3.5); the signature itself is `check`'s business.
        let want = crc32fast::hash(body.get(..96).unwrap_or_default());
        let found = body
            .get(96..100)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if want != found {
            return Err(Damage::corrupt(
                off + 168,
                format!("checkpoint body CRC mismatch: expected {want:#010x}, found {found:#010x}"),
            ));
        }
        if body.get(100..104).is_none_or(|r| r != [0; 4]) {
            return Err(Damage::corrupt(
                off + 172,
                "expected the checkpoint's reserved bytes to be zero",
            ));
        }
        return Ok(frame);
    }
    let mut rest = body;
    let mut at = off + FRAME_HEADER_LEN as u64;
    let mut first: Option<RecordRef<'_>> = None;
    let mut prev_type: &[u8] = &[];
    let mut last_ts = 0;
    let crc = verify_crc.then(crc32fast::Hasher::new);
    for i in 0..frame.count as u64 {
        let (rec, rlen) = parse_record_with(rest, crc.as_ref()).map_err(|(o, d)| Damage::corrupt(at + o as u64, d))?;
        let want_pos = frame.first_position + i;
        if rec.position() != want_pos {
            return Err(Damage::corrupt(
                at + 8,
                format!("expected record position {want_pos}, found {}", rec.position()),
            ));
        }
        // UTF-8 is checked once per distinct stream name and event type.
        if !same_bytes(rec.event_type_bytes(), prev_type) {
            if std::str::from_utf8(rec.event_type_bytes()).is_err() {
                let o = at + (RECORD_HEADER_LEN + rec.stream_bytes().len()) as u64;
                return Err(Damage::corrupt(o, "expected the event type to be UTF-8"));
            }
            prev_type = rec.event_type_bytes();
        }
        match &first {
            None => {
                if std::str::from_utf8(rec.stream_bytes()).is_err() {
                    return Err(Damage::corrupt(
                        at + RECORD_HEADER_LEN as u64,
                        "expected the stream name to be UTF-8",
                    ));
                }
                first = Some(rec);
            }
            Some(r0) => {
                if !same_bytes(rec.stream_bytes(), r0.stream_bytes()) {
                    return Err(Damage::corrupt(
                        at + RECORD_HEADER_LEN as u64,
                        format!(
                            "expected stream {:?} throughout the batch, found {:?}",
                            r0.stream(),
                            String::from_utf8_lossy(rec.stream_bytes())
                        ),
                    ));
                }
                // Checked: the first record's version comes from the file
                // (found by fuzzing: it overflowed, a panic in debug builds).
                if r0.stream_version().checked_add(i) != Some(rec.stream_version()) {
                    return Err(Damage::corrupt(
                        at + 16,
                        format!(
                            "expected stream version {} + {i}, found {}",
                            r0.stream_version(),
                            rec.stream_version()
                        ),
                    ));
                }
                if rec.timestamp() < last_ts {
                    return Err(Damage::corrupt(
                        at + 24,
                        format!("timestamp {} goes back from {last_ts}", rec.timestamp()),
                    ));
                }
            }
        }
        last_ts = rec.timestamp();
        each((at - off) as usize, rec);
        rest = &rest[rlen..];
        at += rlen as u64;
    }
    if !rest.is_empty() {
        return Err(Damage::corrupt(
            at,
            format!(
                "expected {} records to fill the frame, found {} bytes left over",
                frame.count,
                rest.len()
            ),
        ));
    }
    Ok(Frame {
        last_timestamp: last_ts,
        ..frame
    })
}

/// `a == b`, inline: names are short, and a call to `memcmp` for each record
/// costs more than comparing them here.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if p.iter().zip(q).fold(0u8, |acc, (i, j)| acc | (i ^ j)) != 0 {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(i, j)| i == j)
}

/// Iterate the records of a frame that [`validate_frame`] accepted.
pub(crate) fn frame_records(frame_bytes: &[u8]) -> impl Iterator<Item = RecordRef<'_>> {
    frame_records_at(frame_bytes).map(|(_, r)| r)
}

/// Iterate `(offset within the frame, record)` for a frame that
/// [`validate_frame`] accepted.
pub(crate) fn frame_records_at(frame_bytes: &[u8]) -> impl Iterator<Item = (usize, RecordRef<'_>)> {
    let mut at = FRAME_HEADER_LEN;
    std::iter::from_fn(move || {
        if at >= frame_bytes.len() {
            return None;
        }
        let (rec, len) = parse_record(frame_bytes.get(at..)?, false).ok()?;
        let here = at;
        at += len;
        Some((here, rec))
    })
}

/// The result of walking a segment from its header to the first frame that is
/// not complete.
#[derive(Debug, Clone)]
pub(crate) struct Walk {
    /// File offset just past the last complete frame.
    pub end: u64,
    /// Position of the next record after the last complete frame.
    pub next_position: u64,
    /// Timestamp of the last record (or the header's `prev_timestamp`).
    pub last_timestamp: u64,
    /// Largest `durable_end` among the complete frames.
    pub max_durable: u64,
    /// The chain slot of the last complete batch, or the header's
    /// `chain_start` if there is none (stored values, not verified).
    pub chain: [u8; 32],
    /// The last complete frame is a seal.
    pub sealed: bool,
    /// Why the walk stopped before the end of the bytes, if it did.
    pub stop: Option<Damage>,
}

/// Walk the frames of a whole segment file held in `file`, calling `on_batch`
/// with each complete batch's (and checkpoint's) bytes. Stops at the first frame that is not
/// complete, at a position or timestamp that breaks the chain, or at bytes after
/// a seal.
pub(crate) fn walk_segment(
    file: &[u8],
    header: &SegmentHeader,
    verify_crc: bool,
    on_batch: impl FnMut(&[u8], &Frame),
) -> Walk {
    /// Hands each complete batch's bytes to `on_batch`; ignores records.
    struct Batches<'f, F> {
        file: &'f [u8],
        on_batch: F,
    }
    impl<'a, F: FnMut(&[u8], &Frame)> RecordSink<'a> for Batches<'_, F> {
        fn record(&mut self, _: u64, _: u64, _: &RecordRef<'a>) {}
        fn checkpoint(&mut self, frame_offset: u64, frame: &Frame) {
            self.batch(frame_offset, frame);
        }
        fn batch(&mut self, frame_offset: u64, frame: &Frame) {
            let bytes = self
                .file
                .get(frame_offset as usize..)
                .and_then(|b| b.get(..frame.len as usize))
                .unwrap_or_default();
            (self.on_batch)(bytes, frame);
        }
    }
    walk_segment_records(file, header, verify_crc, &mut Batches { file, on_batch })
}

/// The largest `durable_end` of any frame header (valid magic and CRC) at a
/// multiple-of-8 offset at or after `from` (spec 6, resynchronisation).
pub(crate) fn resync_max_durable(file: &[u8], from: u64) -> u64 {
    resync_max_durable_in(file, 0, from, u64::MAX)
}

/// [`resync_max_durable`] over a piece of a file: `bytes` holds the file's
/// bytes from offset `at`, and only headers starting at a multiple-of-8
/// offset `o` with `from <= o < until` that lie wholly inside `bytes` count.
/// So a file read in pieces `[c_k, c_k + S + 72)` with `c_{k+1} = c_k + S`
/// (`S` a multiple of 8), each counted with `until = c_k + S`, considers
/// every offset exactly once and gives the same maximum as one pass over the
/// whole file: one definition for recovery, `check` and readers.
pub(crate) fn resync_max_durable_in(bytes: &[u8], at: u64, from: u64, until: u64) -> u64 {
    let mut best = 0;
    let Some(mut off) = from.max(at).checked_next_multiple_of(ALIGN) else {
        return 0;
    };
    while off < until {
        let Some(rel) = off.checked_sub(at).and_then(|r| usize::try_from(r).ok()) else {
            break;
        };
        let Some(h) = bytes.get(rel..).filter(|b| b.len() >= FRAME_HEADER_LEN) else {
            break;
        };
        if h.starts_with(&crate::format::FRAME_MAGIC)
            && let Ok(h) = FrameHeader::parse(h, off)
        {
            best = best.max(h.durable_end.get());
        }
        let Some(next) = off.checked_add(ALIGN) else { break };
        off = next;
    }
    best
}

/// What [`walk_segment_records`] reports as it walks.
pub(crate) trait RecordSink<'a> {
    /// A record at file offset `record_offset` of the frame at `frame_offset`,
    /// just validated; its batch may still turn out not to be complete.
    fn record(&mut self, frame_offset: u64, record_offset: u64, rec: &RecordRef<'a>);
    /// The batch at `frame_offset`, whose records were just reported, is
    /// complete and continues the segment's chains.
    fn batch(&mut self, frame_offset: u64, frame: &Frame);
    /// The complete checkpoint frame at `frame_offset` (spec 3.5).
    fn checkpoint(&mut self, _frame_offset: u64, _frame: &Frame) {}
}

/// [`walk_segment`] in one pass over the bytes, for callers that want every
/// record (recovery and index rebuilds): each record is handed to
/// `sink.record` as its frame is validated, and `sink.batch` follows once the
/// whole batch is complete and continues the segment's chain of positions and
/// timestamps. Records reported since the last `batch` for which no `batch`
/// follows (the walk stopped in their frame) belong to a batch that is not
/// complete: the sink discards them. Offsets are file offsets.
pub(crate) fn walk_segment_records<'a>(
    file: &'a [u8],
    header: &SegmentHeader,
    verify_crc: bool,
    sink: &mut impl RecordSink<'a>,
) -> Walk {
    let mut w = Walk {
        end: SEGMENT_HEADER_LEN as u64,
        next_position: header.base_position.get(),
        last_timestamp: header.prev_timestamp.get(),
        max_durable: SEGMENT_HEADER_LEN as u64,
        chain: header.chain_start,
        sealed: false,
        stop: None,
    };
    loop {
        let off = w.end;
        let Some(bytes) = file.get(off as usize..) else { break };
        if bytes.is_empty() {
            break;
        }
        if w.sealed {
            w.stop = Some(Damage::corrupt(
                off,
                format!("expected the file to end at the seal, found {} more bytes", bytes.len()),
            ));
            break;
        }
        let mut first_ts = None;
        let frame = match validate_frame_each(bytes, off, verify_crc, |at, rec| {
            first_ts.get_or_insert(rec.timestamp());
            sink.record(off, off + at as u64, &rec);
        }) {
            Ok(f) => f,
            Err(d) => {
                w.stop = Some(d);
                break;
            }
        };
        if frame.first_position != w.next_position {
            w.stop = Some(Damage::corrupt(
                off + 16,
                format!(
                    "expected the frame to start at position {}, found {}",
                    w.next_position, frame.first_position
                ),
            ));
            break;
        }
        if frame.kind == FRAME_KIND_BATCH {
            let first_ts = first_ts.unwrap_or(0);
            if first_ts < w.last_timestamp {
                w.stop = Some(Damage::corrupt(
                    off + FRAME_HEADER_LEN as u64 + 24,
                    format!("timestamp {first_ts} goes back from {}", w.last_timestamp),
                ));
                break;
            }
            w.last_timestamp = frame.last_timestamp;
            if let Some(c) = bytes.get(FRAME_CHAIN_OFFSET..FRAME_HEADER_LEN) {
                w.chain.copy_from_slice(c);
            }
            sink.batch(off, &frame);
        } else if frame.kind == FRAME_KIND_SEAL {
            w.sealed = true;
        } else {
            sink.checkpoint(off, &frame);
        }
        w.max_durable = w.max_durable.max(frame.durable_end);
        w.next_position = frame.next_position();
        w.end = off + frame.len;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
}
