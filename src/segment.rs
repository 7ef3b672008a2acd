//! Segment files: naming, frames, batch validation, and walking a segment.
//!
//! This module owns spec sections 1 (segment naming), 3.3 (when a batch is
//! complete), 3.4 (seals) and the frame walk that recovery, readers and
//! `check` share. Everything here works on `&[u8]`: the caller decides whether
//! the bytes come from a copy (`pread`) or from a mapping.
//!
//! Invariants upheld by [`validate_frame`]: a frame reported valid is complete
//! (spec 3.3), so any record parsed from it afterwards parses without error.

use zerocopy::IntoBytes;

use crate::error::Damage;
use crate::format::{
    ALIGN, FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_SEAL, FrameHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::record::{RecordRef, parse_record};

/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record has position `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base position named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

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
    let mut rest = body;
    let mut at = off + FRAME_HEADER_LEN as u64;
    let mut first: Option<RecordRef<'_>> = None;
    let mut prev_type: &[u8] = &[];
    let mut last_ts = 0;
    for i in 0..frame.count as u64 {
        let (rec, rlen) = parse_record(rest, verify_crc).map_err(|(o, d)| Damage::corrupt(at + o as u64, d))?;
        let want_pos = frame.first_position + i;
        if rec.position() != want_pos {
            return Err(Damage::corrupt(
                at + 8,
                format!("expected record position {want_pos}, found {}", rec.position()),
            ));
        }
        // UTF-8 is checked once per distinct stream name and event type.
        if rec.event_type_bytes() != prev_type {
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
                if rec.stream_bytes() != r0.stream_bytes() {
                    return Err(Damage::corrupt(
                        at + RECORD_HEADER_LEN as u64,
                        format!(
                            "expected stream {:?} throughout the batch, found {:?}",
                            r0.stream(),
                            String::from_utf8_lossy(rec.stream_bytes())
                        ),
                    ));
                }
                if rec.stream_version() != r0.stream_version() + i {
                    return Err(Damage::corrupt(
                        at + 16,
                        format!(
                            "expected stream version {}, found {}",
                            r0.stream_version() + i,
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
    /// The last complete frame is a seal.
    pub sealed: bool,
    /// Why the walk stopped before the end of the bytes, if it did.
    pub stop: Option<Damage>,
}

/// Walk the frames of a whole segment file held in `file`, calling `on_batch`
/// with each complete batch's bytes. Stops at the first frame that is not
/// complete, at a position or timestamp that breaks the chain, or at bytes after
/// a seal.
pub(crate) fn walk_segment(
    file: &[u8],
    header: &SegmentHeader,
    verify_crc: bool,
    mut on_batch: impl FnMut(&[u8], &Frame),
) -> Walk {
    let mut w = Walk {
        end: SEGMENT_HEADER_LEN as u64,
        next_position: header.base_position.get(),
        last_timestamp: header.prev_timestamp.get(),
        max_durable: SEGMENT_HEADER_LEN as u64,
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
        let frame = match validate_frame(bytes, off, verify_crc) {
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
            let first_ts = frame_records(bytes).next().map_or(0, |r| r.timestamp());
            if first_ts < w.last_timestamp {
                w.stop = Some(Damage::corrupt(
                    off + FRAME_HEADER_LEN as u64 + 24,
                    format!("timestamp {first_ts} goes back from {}", w.last_timestamp),
                ));
                break;
            }
            w.last_timestamp = frame.last_timestamp;
            on_batch(&bytes[..frame.len as usize], &frame);
        } else {
            w.sealed = true;
        }
        w.max_durable = w.max_durable.max(frame.durable_end);
        w.next_position = frame.next_position();
        w.end = off + frame.len;
    }
    w
}

/// The largest `durable_end` of any frame header (valid magic and CRC) at a
/// multiple-of-8 offset at or after `from` (spec 6, resynchronisation).
pub(crate) fn resync_max_durable(file: &[u8], from: u64) -> u64 {
    let mut best = 0;
    let mut off = from.next_multiple_of(ALIGN);
    while let Some(bytes) = file.get(off as usize..) {
        if bytes.len() < FRAME_HEADER_LEN {
            break;
        }
        if bytes.starts_with(&crate::format::FRAME_MAGIC)
            && let Ok(h) = FrameHeader::parse(bytes, off)
        {
            best = best.max(h.durable_end.get());
        }
        off += ALIGN;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(81920), "00000000000000081920.seg");
        assert_eq!(parse_segment_file_name("00000000000000081920.seg"), Some(81920));
        assert_eq!(parse_segment_file_name("0000000000000008192.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000008192x.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000081920.idx"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
    }
}
