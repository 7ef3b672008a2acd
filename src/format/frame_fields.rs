//! What is read from and written into a frame header outside the walk of
//! `frame`: encoding seals and batch headers (both layouts, spec 3.1, 3.6),
//! the chain slot a frame stores, the fields that bind index files to a
//! segment (spec 17.1, 17.5), the fields that binary searches read
//! unchecked (they validate what they find before using it), and the rule
//! of which version-3 batches store a chain slot.

use zerocopy::IntoBytes;

use crate::format::batch::BodyRecords;
use crate::format::frame_header::{Frame, body_context, parse_header};
use crate::format::record::{RecordRef, parse_record};
use crate::format::{
    ALIGN, CHAIN_SLOT_LEN, FRAME_CHAIN_OFFSET, FRAME_FIRST_POSITION_OFFSET, FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN,
    FRAME_KIND_BATCH, FRAME_KIND_SEAL, FRAME_MAGIC_V3, FrameHeader, FrameHeaderV3, Layout, RECORD_TIMESTAMP_OFFSET,
    SEGMENT_HEADER_LEN, SegmentHeader,
};

/// The chain slot of the frame whose bytes start `frame` (its header
/// parsed as `f`), if it stores one.
#[inline]
pub(crate) fn chain_slot(frame: &[u8], f: &Frame) -> Option<[u8; 32]> {
    let at = if f.header_len as usize == FRAME_HEADER_LEN {
        FRAME_CHAIN_OFFSET
    } else if f.chained {
        FRAME_HEADER_V3_LEN
    } else {
        return None;
    };
    let mut c = [0; 32];
    c.copy_from_slice(frame.get(at..at + CHAIN_SLOT_LEN)?);
    Some(c)
}

/// Encode a seal frame (spec 3.4; 3.6 in version 3), its chain slot zero.
pub(crate) fn encode_seal(next_position: u64, durable_end: u64, layout: &Layout) -> Vec<u8> {
    if layout.compact() {
        let len = FrameHeaderV3::len_with(u8::from(layout.chained));
        let h = FrameHeaderV3::new(
            FRAME_KIND_SEAL,
            layout.chained,
            len as u64,
            next_position,
            0,
            durable_end,
            0,
        );
        let mut out = h.as_bytes().to_vec();
        out.resize(len, 0);
        FrameHeaderV3::seal_crc(&mut out);
        return out;
    }
    let h = FrameHeader::new(FRAME_KIND_SEAL, FRAME_HEADER_LEN as u64, next_position, 0, durable_end);
    h.as_bytes().to_vec()
}

/// What binds an index checkpoint or index file to a frame of its segment:
/// the frame's kind, length and `header_crc` (spec 17.1, 17.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameBinding {
    pub kind: u8,
    pub len: u64,
    pub header_crc: u32,
}

/// The [`FrameBinding`] of the frame whose bytes start `frame` (at file
/// offset `off`), if its header passes the header checks.
pub(crate) fn binding(frame: &[u8], off: u64, layout: &Layout) -> Option<FrameBinding> {
    let f = parse_header(frame, off, layout).ok()?;
    let at = if layout.compact() { 0 } else { 4 };
    let crc = u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?);
    Some(FrameBinding {
        kind: f.kind,
        len: f.len,
        header_crc: crc,
    })
}

/// [`binding`] of the frame at file offset `off` of `segment` (a segment's
/// bytes from its start).
pub(crate) fn binding_at(segment: &[u8], off: u64, layout: &Layout) -> Option<FrameBinding> {
    binding(segment.get(usize::try_from(off).ok()?..)?, off, layout)
}

/// The `header_crc` of the seal that ends the sealed segment `segment` (its
/// bytes, header first), which an index file binds to (spec 17.1).
pub(crate) fn seal_header_crc(segment: &[u8]) -> Option<u32> {
    let layout = Layout::of(SegmentHeader::parse(segment).ok()?);
    let at = segment.len().checked_sub(seal_len(&layout))?;
    if at < SEGMENT_HEADER_LEN {
        return None;
    }
    seal_crc_in_tail(segment, &layout)
}

/// The CRC field of the seal frame that ends `tail` (the last bytes of a
/// sealed segment of `layout`, at least a seal's length), unchecked.
pub(crate) fn seal_crc_in_tail(tail: &[u8], layout: &Layout) -> Option<u32> {
    let at = tail.len().checked_sub(seal_len(layout))?;
    let crc_at = at + if layout.compact() { 0 } else { 4 };
    Some(u32::from_le_bytes(tail.get(crc_at..crc_at + 4)?.try_into().ok()?))
}

/// `(first_position, record_count)` as stored in the frame header at file
/// offset `off` of `segment`, unchecked: for binary searches, whose result
/// is validated before use.
pub(crate) fn peek_positions(segment: &[u8], off: u64, layout: &Layout) -> Option<(u64, u32)> {
    let at = usize::try_from(off).ok()?;
    let count_at = if layout.compact() {
        crate::format::FRAME_V3_RECORD_COUNT_OFFSET
    } else {
        crate::format::FRAME_RECORD_COUNT_OFFSET
    };
    let first = segment.get(at + FRAME_FIRST_POSITION_OFFSET..at + FRAME_FIRST_POSITION_OFFSET + 8)?;
    let count = segment.get(at + count_at..at + count_at + 4)?;
    Some((
        u64::from_le_bytes(first.try_into().ok()?),
        u32::from_le_bytes(count.try_into().ok()?),
    ))
}

/// The timestamp of the first record of the batch at file offset `off` of
/// `segment` (version 3: the batch's), unchecked: for binary searches.
pub(crate) fn peek_timestamp(segment: &[u8], off: u64, layout: &Layout) -> Option<u64> {
    let at = usize::try_from(off).ok()?;
    if layout.compact() {
        let flags = *segment.get(at + crate::format::FRAME_V3_FLAGS_OFFSET)?;
        let body = segment.get(at + FrameHeaderV3::len_with(flags)..)?;
        let (delta, _) = crate::format::batch::get_varint(body).ok()?;
        return Some(layout.prev_timestamp.saturating_add(delta));
    }
    let ts = at + FRAME_HEADER_LEN + RECORD_TIMESTAMP_OFFSET;
    Some(u64::from_le_bytes(segment.get(ts..ts + 8)?.try_into().ok()?))
}

/// Bytes of a seal frame in `layout` (spec 3.4, 3.6).
pub(crate) fn seal_len(layout: &Layout) -> usize {
    if layout.compact() {
        FrameHeaderV3::len_with(u8::from(layout.chained))
    } else {
        FRAME_HEADER_LEN
    }
}

/// Fill in the version-3 header of the batch frame that is `frame` (whole:
/// header, chain slot if `chained`, body and padding), its chain slot left
/// as it is: `body_crc`, then `header_crc`.
pub(crate) fn finish_batch_header_v3(
    frame: &mut [u8],
    chained: bool,
    first_position: u64,
    count: u32,
    durable_end: u64,
) {
    let header_len = FrameHeaderV3::len_with(u8::from(chained));
    let body_crc = crc32fast::hash(frame.get(header_len..).unwrap_or_default());
    let h = FrameHeaderV3::new(
        FRAME_KIND_BATCH,
        chained,
        frame.len() as u64,
        first_position,
        count,
        durable_end,
        body_crc,
    );
    if let Some(head) = frame.get_mut(..FRAME_HEADER_V3_LEN) {
        head.copy_from_slice(h.as_bytes());
    }
    FrameHeaderV3::seal_crc(frame);
}

/// Whether the version-3 batch at segment offset `off` carries a chain slot
/// in a chained log (spec 3.6): it is the segment's first batch
/// (`prev_batch` is `None`), or the first whose offset falls in a new
/// [`crate::format::CHAIN_BLOCK`]-byte block.
#[inline]
pub(crate) fn batch_is_chained(off: u64, prev_batch: Option<u64>) -> bool {
    prev_batch.is_none_or(|p| p / crate::format::CHAIN_BLOCK != off / crate::format::CHAIN_BLOCK)
}

/// Write a batch frame header into `out[at..at + 72]` once its records follow it.
pub(crate) fn finish_batch_header(out: &mut [u8], first_position: u64, count: u32, durable_end: u64) {
    let len = out.len() as u64;
    let h = FrameHeader::new(FRAME_KIND_BATCH, len, first_position, count, durable_end);
    if let Some(header) = out.get_mut(..FRAME_HEADER_LEN) {
        header.copy_from_slice(h.as_bytes());
    }
}

/// Iterate the records of a frame that [`validate_frame`] accepted.
pub(crate) fn frame_records<'a>(frame_bytes: &'a [u8], layout: &Layout) -> impl Iterator<Item = RecordRef<'a>> {
    frame_records_at(frame_bytes, layout).map(|(_, r)| r)
}

/// Iterate `(offset within the frame, record)` for a frame that
/// [`validate_frame`] accepted (at any file offset: version 3 needs it only
/// in error messages, and the frame is valid).
pub(crate) fn frame_records_at<'a>(
    frame_bytes: &'a [u8],
    layout: &Layout,
) -> Box<dyn Iterator<Item = (usize, RecordRef<'a>)> + 'a> {
    if layout.compact() {
        let Ok(frame) = parse_header(frame_bytes, u64::from(u32::MAX), layout) else {
            return Box::new(std::iter::empty());
        };
        let body = frame_bytes.get(frame.header_len as usize..).unwrap_or_default();
        return Box::new(BodyRecords::new(body, &body_context(&frame, 0, layout)));
    }
    let mut at = FRAME_HEADER_LEN;
    Box::new(std::iter::from_fn(move || {
        if at >= frame_bytes.len() {
            return None;
        }
        let (rec, len) = parse_record(frame_bytes.get(at..)?, false).ok()?;
        let here = at;
        at += len;
        Some((here, rec))
    }))
}

/// The largest `durable_end` of any frame header (valid magic and CRC) at a
/// multiple-of-8 offset at or after `from` (spec 6, resynchronisation).
pub(crate) fn resync_max_durable(file: &[u8], from: u64, layout: &Layout) -> u64 {
    resync_max_durable_in(file, 0, from, u64::MAX, layout)
}

/// [`resync_max_durable`] over a piece of a file: `bytes` holds the file's
/// bytes from offset `at`, and only headers starting at a multiple-of-8
/// offset `o` with `from <= o < until` that lie wholly inside `bytes` count.
/// So a file read in pieces `[c_k, c_k + S + 72)` with `c_{k+1} = c_k + S`
/// (`S` a multiple of 8), each counted with `until = c_k + S`, considers
/// every offset exactly once and gives the same maximum as one pass over the
/// whole file: one definition for recovery, `check` and readers.
pub(crate) fn resync_max_durable_in(bytes: &[u8], at: u64, from: u64, until: u64, layout: &Layout) -> u64 {
    let mut best = 0;
    let Some(mut off) = from.max(at).checked_next_multiple_of(ALIGN) else {
        return 0;
    };
    while off < until {
        let Some(rel) = off.checked_sub(at).and_then(|r| usize::try_from(r).ok()) else {
            break;
        };
        let min = if layout.compact() {
            FRAME_HEADER_V3_LEN
        } else {
            FRAME_HEADER_LEN
        };
        let Some(h) = bytes.get(rel..).filter(|b| b.len() >= min) else {
            break;
        };
        let magic = if layout.compact() {
            h.get(4..6) == Some(&FRAME_MAGIC_V3[..])
        } else {
            h.starts_with(&crate::format::FRAME_MAGIC)
        };
        if magic && let Ok(f) = parse_header(h, off, layout) {
            best = best.max(f.durable_end);
        }
        let Some(next) = off.checked_add(ALIGN) else { break };
        off = next;
    }
    best
}
