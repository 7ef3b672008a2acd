//! Frames: checking that a frame is complete, and walking the frames of a
//! segment, in both layouts (versions 1 and 2: spec 3.1 to 3.5; version 3:
//! 3.6, whose body is `batch`'s); `frame_fields` encodes seals and headers.
//!
//! This module owns spec sections 3.3 and 3.6 (when a batch is complete),
//! 3.4 (seals), 6 (resynchronisation) and [`FrameCursor`], the one walk over a
//! segment's frames that recovery, readers, projections, the anchor and
//! `check` share (through it or [`walk_segment_records`]), with the
//! continuity checks between frames (positions, timestamps, nothing after a
//! seal, `frame_len` within the bytes). Everything here works on `&[u8]`: the
//! caller decides whether the bytes come from a copy (`pread`) or from a
//! mapping.
//!
//! Invariants upheld by `validate_frame` and the cursor: a frame reported
//! valid is complete (spec 3.3), so any record parsed from it afterwards
//! parses without error; the cursor never moves past a frame it did not
//! accept, so after a stop its offset is where the complete frames end.

use crate::format::batch::parse_body;
use crate::format::damage::Damage;
use crate::format::record::{RecordRef, parse_record_with};
use crate::format::{
    CheckpointBody, FRAME_FIRST_POSITION_OFFSET, FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, FRAME_KIND_BATCH,
    FRAME_KIND_CHECKPOINT, FRAME_KIND_SEAL, FRAME_LEN_OFFSET, FRAME_V3_BODY_CRC_OFFSET, FRAME_V3_FIRST_POSITION_OFFSET,
    FRAME_V3_LEN_OFFSET, Layout, RECORD_HEADER_LEN, RECORD_POSITION_OFFSET, RECORD_STREAM_VERSION_OFFSET,
    RECORD_TIMESTAMP_OFFSET, SEGMENT_HEADER_LEN, SegmentHeader,
};

pub(crate) use crate::format::frame_fields::*;
pub(crate) use crate::format::frame_header::{Frame, body_context, parse_header};

/// Check that the frame at the start of `bytes` (at file offset `off`) is
/// complete (spec 3.3), with or without record CRCs. `bytes` may extend past
/// the frame. Record structure is always checked; with `verify_crc` also the
/// CRCs, reserved fields and padding.
pub(crate) fn validate_frame(bytes: &[u8], off: u64, verify_crc: bool, layout: &Layout) -> Result<Frame, Damage> {
    validate_frame_each(bytes, off, verify_crc, layout, |_, _| {})
}

/// [`validate_frame`], calling `each(offset in frame, record)` for every
/// record as it is checked (one pass). If it returns an error, records already
/// passed to `each` belong to a batch that is not complete: discard them.
pub(crate) fn validate_frame_each<'a>(
    bytes: &'a [u8],
    off: u64,
    verify_crc: bool,
    layout: &Layout,
    each: impl FnMut(usize, RecordRef<'a>),
) -> Result<Frame, Damage> {
    let frame = parse_header(bytes, off, layout)?;
    let frame_bytes = frame_span(bytes, off, frame.len)?;
    validate_body(frame, frame_bytes, off, verify_crc, layout, each)
}

/// The first `len` bytes of `bytes` (a frame's, at file offset `off`), or the
/// damage of a `frame_len` that runs past the end of the file.
#[inline]
fn frame_span(bytes: &[u8], off: u64, len: u64) -> Result<&[u8], Damage> {
    match usize::try_from(len).ok().and_then(|l| bytes.get(..l)) {
        Some(b) => Ok(b),
        None => Err(Damage::corrupt(
            off.saturating_add(FRAME_LEN_OFFSET as u64),
            format!(
                "frame_len {len} runs past the end of the file ({} bytes remain)",
                bytes.len()
            ),
        )),
    }
}

/// Check the body of a frame whose header parsed as `frame`: `frame_bytes`
/// are exactly its `frame.len` bytes, at file offset `off`.
#[inline]
fn validate_body<'a>(
    frame: Frame,
    frame_bytes: &'a [u8],
    off: u64,
    verify_crc: bool,
    layout: &Layout,
    each: impl FnMut(usize, RecordRef<'a>),
) -> Result<Frame, Damage> {
    let header_len = frame.header_len as usize;
    let body = frame_bytes.get(header_len..).unwrap_or_default();
    match frame.kind {
        FRAME_KIND_SEAL => Ok(frame),
        FRAME_KIND_CHECKPOINT => CheckpointBody::check(body, off + header_len as u64).map(|_| frame),
        _ if layout.compact() => {
            let cx = body_context(&frame, off, layout);
            let crc = verify_crc.then_some((frame.body_crc, off + FRAME_V3_BODY_CRC_OFFSET as u64));
            let head = parse_body(body, &cx, crc, each)?;
            Ok(Frame {
                first_timestamp: head.timestamp,
                last_timestamp: head.timestamp,
                ..frame
            })
        }
        _ => validate_batch(frame, body, off, verify_crc, each),
    }
}

/// The records of a batch (`body`: the bytes after its header at file offset
/// `off`): `frame.count` of them, numbered from `first_position`, one stream
/// with contiguous versions, timestamps not going back, filling the frame.
fn validate_batch<'a>(
    frame: Frame,
    body: &'a [u8],
    off: u64,
    verify_crc: bool,
    mut each: impl FnMut(usize, RecordRef<'a>),
) -> Result<Frame, Damage> {
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
                at + RECORD_POSITION_OFFSET as u64,
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
            Some(r0) => continues_batch(r0, &rec, i, last_ts, at)?,
        }
        last_ts = rec.timestamp();
        each((at - off) as usize, rec);
        rest = rest.get(rlen..).unwrap_or_default();
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
        first_timestamp: first.map_or(0, |r| r.timestamp()),
        last_timestamp: last_ts,
        ..frame
    })
}

/// Record `i` (> 0) of a batch, at file offset `at`, continues the batch
/// that `r0` starts: same stream, the next version, no earlier timestamp than
/// `last_ts` (the previous record's).
#[inline(always)]
fn continues_batch(r0: &RecordRef<'_>, rec: &RecordRef<'_>, i: u64, last_ts: u64, at: u64) -> Result<(), Damage> {
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
            at + RECORD_STREAM_VERSION_OFFSET as u64,
            format!(
                "expected stream version {} + {i}, found {}",
                r0.stream_version(),
                rec.stream_version()
            ),
        ));
    }
    if rec.timestamp() < last_ts {
        return Err(Damage::corrupt(
            at + RECORD_TIMESTAMP_OFFSET as u64,
            format!("timestamp {} goes back from {last_ts}", rec.timestamp()),
        ));
    }
    Ok(())
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
    /// The chain slot of the last complete batch that stores one, or the
    /// header's `chain_start` if there is none (stored values, not
    /// verified). In version 3 batches after it may store none: see
    /// `chain_through`.
    pub chain: [u8; 32],
    /// File offset just past the batch whose chain slot `chain` is (128 for
    /// `chain_start`): the batches from there to `end` are not yet linked
    /// into `chain` (always `end` in versions 1 and 2).
    pub chain_through: u64,
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
    let cursor = FrameCursor::segment(file, header, verify_crc);
    let w = Walk {
        end: cursor.offset(),
        next_position: cursor.next_position(),
        last_timestamp: header.prev_timestamp.get(),
        max_durable: SEGMENT_HEADER_LEN as u64,
        chain: header.chain_start,
        chain_through: SEGMENT_HEADER_LEN as u64,
        sealed: false,
        stop: None,
    };
    walk_records(cursor, w, sink)
}

/// [`walk_segment_records`] from the middle of a segment: `rest` holds the
/// segment's bytes from file offset `start`, just past a complete batch
/// whose end state `after` gives (its `end` must be `start`: the position,
/// last timestamp, chain slot and `durable_end` after it).
pub(crate) fn walk_segment_records_from<'a>(
    rest: &'a [u8],
    after: Walk,
    verify_crc: bool,
    layout: &Layout,
    sink: &mut impl RecordSink<'a>,
) -> Walk {
    let cursor = FrameCursor::new(rest, after.end, after.next_position, verify_crc, *layout)
        .with_timestamps(after.last_timestamp);
    walk_records(cursor, after, sink)
}

fn walk_records<'a>(mut cursor: FrameCursor<'a>, mut w: Walk, sink: &mut impl RecordSink<'a>) -> Walk {
    loop {
        let off = cursor.offset();
        let step = cursor.step_each(|at, rec| sink.record(off, off + at as u64, &rec));
        let f = match step {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(d)) => {
                w.stop = Some(d);
                break;
            }
        };
        match f.frame.kind {
            FRAME_KIND_BATCH => {
                if let Some(c) = f.chain() {
                    w.chain = c;
                    w.chain_through = f.offset + f.frame.len;
                }
                sink.batch(f.offset, &f.frame);
            }
            FRAME_KIND_SEAL => {}
            _ => sink.checkpoint(f.offset, &f.frame),
        }
        w.max_durable = w.max_durable.max(f.frame.durable_end);
    }
    w.end = cursor.offset();
    w.next_position = cursor.next_position();
    w.last_timestamp = cursor.last_timestamp().unwrap_or(w.last_timestamp);
    w.sealed = cursor.sealed();
    w
}

/// A frame the [`FrameCursor`] stepped over: its file offset, what it holds
/// and its bytes (exactly `frame.len` of them, header first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef<'a> {
    /// File offset of the frame.
    pub offset: u64,
    /// The frame (from [`FrameCursor::peek`]: its header only).
    pub frame: Frame,
    /// The frame's bytes.
    pub bytes: &'a [u8],
}

impl FrameRef<'_> {
    /// The chain slot stored in the frame header (not verified), if the
    /// frame stores one.
    pub fn chain(&self) -> Option<[u8; 32]> {
        chain_slot(self.bytes, &self.frame)
    }

    /// The bytes after the header (a batch's records; empty for a seal).
    #[allow(dead_code, reason = "for the readers adopting the cursor")]
    pub fn body(&self) -> &[u8] {
        self.bytes.get(self.frame.header_len as usize..).unwrap_or_default()
    }
}

/// The one walk over the frames of a segment: every reader of frames
/// (replay, active-segment validation, parallel rebuild, recovery, `check`,
/// the anchor) steps through one of these, so they agree on what a valid
/// frame is and report the same damage.
///
/// A cursor holds the bytes of one segment from some file offset (`start`),
/// the position the next frame must start at, whether a seal was passed,
/// and optionally the last timestamp (checked when set). Each step checks:
///
/// 1. no bytes after a seal ("expected the segment to end at its seal");
/// 2. the frame header (magic, CRC, fields: [`FrameHeader::parse`]);
/// 3. `first_position` continues the previous frame;
/// 4. `frame_len` does not run past the end of the bytes;
/// 5. (full steps only) the body ([`validate_frame_each`]), and that a
///    batch's first timestamp does not go back from the previous batch's.
///
/// On damage the cursor does not move: its [`offset`](Self::offset) is the
/// start of the frame that is not complete (where recovery truncates).
///
/// How to use it:
///
/// ```text
/// // Every frame validated (recovery, check, projections):
/// let mut c = FrameCursor::new(&file[off..], off as u64, next_position, verify_crc);
/// while let Some(step) = c.step_each(|at, rec| { /* rec is at f.offset + at */ }) {
///     let f: FrameRef = step?;          // Damage: stop, f.offset / c.offset()
/// }
/// // Replay, skipping frames unread: check the header, then decide.
/// while let Some(h) = c.peek() {
///     let h = h?;
///     if h.frame.kind != FRAME_KIND_BATCH || h.frame.next_position() <= from {
///         c.skip(&h);                   // header and continuity only
///     } else {
///         let f = c.validate(h)?;       // body, then the cursor moves on
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub(crate) struct FrameCursor<'a> {
    bytes: &'a [u8],
    /// File offset of `bytes[0]`.
    start: u64,
    /// Index in `bytes` of the next frame.
    at: usize,
    next_position: u64,
    /// The last batch's last timestamp, when checked.
    last_timestamp: Option<u64>,
    sealed: bool,
    verify_crc: bool,
    layout: Layout,
}

impl<'a> FrameCursor<'a> {
    /// A cursor over `bytes`, the bytes of a segment of `layout` from file
    /// offset `start`, whose first frame must start at `next_position`.
    /// Timestamps are not checked across frames (see
    /// [`with_timestamps`](Self::with_timestamps)).
    pub fn new(bytes: &'a [u8], start: u64, next_position: u64, verify_crc: bool, layout: Layout) -> Self {
        FrameCursor {
            bytes,
            start,
            at: 0,
            next_position,
            last_timestamp: None,
            sealed: false,
            verify_crc,
            layout,
        }
    }

    /// A cursor over a whole segment file whose header is `header`: from the
    /// first frame, at the header's base position, checking timestamps from
    /// its `prev_timestamp`.
    pub fn segment(file: &'a [u8], header: &SegmentHeader, verify_crc: bool) -> Self {
        FrameCursor {
            at: SEGMENT_HEADER_LEN.min(file.len()),
            ..FrameCursor::new(file, 0, header.base_position.get(), verify_crc, Layout::of(header))
                .with_timestamps(header.prev_timestamp.get())
        }
    }

    /// The layout of the segment's frames.
    #[inline]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Check that each batch's first timestamp is not before `prev` (the
    /// previous batch's last one), and carry it from batch to batch.
    pub fn with_timestamps(mut self, prev: u64) -> Self {
        self.last_timestamp = Some(prev);
        self
    }

    /// File offset of the next frame (after a stop: of the frame that is not
    /// complete).
    #[inline]
    pub fn offset(&self) -> u64 {
        self.start + self.at as u64
    }

    /// The position the next frame must start at.
    #[inline]
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// The last batch's last timestamp, if timestamps are checked (and no
    /// batch was skipped unread since).
    pub fn last_timestamp(&self) -> Option<u64> {
        self.last_timestamp
    }

    /// Whether the cursor passed a seal.
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    /// The bytes from the next frame on.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }

    /// Check the next frame's header and continuity (steps 1 to 4), without
    /// reading its body or moving: `None` at the end of the bytes. Follow it
    /// with [`skip`](Self::skip) or [`validate`](Self::validate).
    #[inline]
    pub fn peek(&self) -> Option<Result<FrameRef<'a>, Damage>> {
        let rest = self.rest();
        if rest.is_empty() {
            return None;
        }
        let off = self.offset();
        if self.sealed {
            return Some(Err(Damage::corrupt(
                off,
                format!(
                    "expected the segment to end at its seal, found {} more bytes",
                    rest.len()
                ),
            )));
        }
        Some(self.check_header(rest, off))
    }

    #[inline]
    fn check_header(&self, rest: &'a [u8], off: u64) -> Result<FrameRef<'a>, Damage> {
        let frame = parse_header(rest, off, &self.layout)?;
        // A compacted segment (spec 3.10) may skip positions, never go back.
        let gap_allowed = self.layout.compacted && frame.first_position > self.next_position;
        if frame.first_position != self.next_position && !gap_allowed {
            let field = if self.layout.compact() {
                FRAME_V3_FIRST_POSITION_OFFSET
            } else {
                FRAME_FIRST_POSITION_OFFSET
            };
            return Err(Damage::corrupt(
                off.saturating_add(field as u64),
                format!(
                    "expected a frame starting at position {}, found {}",
                    self.next_position, frame.first_position
                ),
            ));
        }
        let bytes = frame_span(rest, off, frame.len)?;
        Ok(FrameRef {
            offset: off,
            frame,
            bytes,
        })
    }

    /// Move past `f` (just returned by [`peek`](Self::peek)) unread. A batch
    /// skipped so ends the timestamp checks (its timestamps are not read).
    #[inline]
    pub fn skip(&mut self, f: &FrameRef<'a>) {
        if f.frame.kind == FRAME_KIND_BATCH {
            self.last_timestamp = None;
        }
        self.advance(&f.frame);
    }

    #[inline]
    fn advance(&mut self, frame: &Frame) {
        self.at = self.at.saturating_add(frame.len as usize);
        self.next_position = frame.next_position();
        self.sealed |= frame.kind == FRAME_KIND_SEAL;
    }

    /// Validate the body of `f` (just returned by [`peek`](Self::peek)) and
    /// move past it.
    #[inline]
    #[allow(dead_code, reason = "for the readers adopting the cursor")]
    pub fn validate(&mut self, f: FrameRef<'a>) -> Result<FrameRef<'a>, Damage> {
        self.validate_each(f, |_, _| {})
    }

    /// [`validate`](Self::validate), calling `each(offset in frame, record)`
    /// for every record as it is checked. On error, records already passed to
    /// `each` belong to a batch that is not complete: discard them.
    #[inline]
    pub fn validate_each(
        &mut self,
        f: FrameRef<'a>,
        each: impl FnMut(usize, RecordRef<'a>),
    ) -> Result<FrameRef<'a>, Damage> {
        let frame = validate_body(f.frame, f.bytes, f.offset, self.verify_crc, &self.layout, each)?;
        if frame.kind == FRAME_KIND_BATCH
            && let Some(last) = self.last_timestamp
        {
            if frame.first_timestamp < last {
                // Version 3: the batch's timestamp is the first field of its body.
                let field = if self.layout.compact() {
                    frame.header_len as usize
                } else {
                    FRAME_HEADER_LEN + RECORD_TIMESTAMP_OFFSET
                };
                return Err(Damage::corrupt(
                    f.offset.saturating_add(field as u64),
                    format!("timestamp {} goes back from {last}", frame.first_timestamp),
                ));
            }
            self.last_timestamp = Some(frame.last_timestamp);
        }
        self.advance(&frame);
        Ok(FrameRef { frame, ..f })
    }

    /// One whole step: [`peek`](Self::peek), then
    /// [`validate_each`](Self::validate_each). `None` at the end of the bytes.
    #[inline]
    pub fn step_each(&mut self, each: impl FnMut(usize, RecordRef<'a>)) -> Option<Result<FrameRef<'a>, Damage>> {
        Some(match self.peek()? {
            Ok(f) => self.validate_each(f, each),
            Err(d) => Err(d),
        })
    }

    /// [`step_each`](Self::step_each) without a per-record callback.
    #[inline]
    #[allow(dead_code, reason = "for the readers adopting the cursor")]
    pub fn step(&mut self) -> Option<Result<FrameRef<'a>, Damage>> {
        self.step_each(|_, _| {})
    }

    /// `(offset, len)` of each frame in `bytes`, frames a writer just encoded
    /// (whole, possibly with their magic hidden: see `audit::chaining`), from
    /// their headers' `frame_len` alone, nothing validated. Not for bytes
    /// read from a file.
    pub fn encoded_spans(bytes: &[u8], layout: Layout) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut at = 0usize;
        let (len_at, min) = if layout.compact() {
            (FRAME_V3_LEN_OFFSET, FRAME_HEADER_V3_LEN)
        } else {
            (FRAME_LEN_OFFSET, FRAME_HEADER_LEN)
        };
        std::iter::from_fn(move || {
            let rest = bytes.get(at..)?;
            if rest.len() < min {
                return None;
            }
            let len = if layout.compact() {
                u64::from(u32::from_le_bytes(rest.get(len_at..len_at + 4)?.try_into().ok()?))
            } else {
                u64::from_le_bytes(rest.get(len_at..len_at + 8)?.try_into().ok()?)
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX).clamp(min, rest.len());
            let here = at;
            at += len;
            Some((here, len))
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;
    use crate::format::LogFormat;
    use crate::format::record::{EventData, Stamp, encode_record};
    use zerocopy::IntoBytes;

    /// A segment: header at base 10, then batches of `(count, timestamp)`,
    /// then a seal if `seal`.
    fn segment(batches: &[(u32, u64)], seal: bool) -> Vec<u8> {
        let log = LogFormat {
            log_id: [1; 16],
            version: 2,
            flags: 0,
            key_id: [0; 16],
        };
        let mut out = SegmentHeader::new(&log, 10, 0, 0, [0; 32]).as_bytes().to_vec();
        let (mut pos, mut version) = (10, 0);
        for &(count, ts) in batches {
            let at = out.len();
            out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
            let first = pos;
            for _ in 0..count {
                let stamp = Stamp {
                    position: pos,
                    stream_version: version,
                    timestamp: ts,
                    event_id: [2; 16],
                };
                encode_record(
                    &mut out,
                    "s",
                    &EventData::new("T", b"x".as_slice()),
                    &stamp,
                    &crc32fast::Hasher::new(),
                );
                (pos, version) = (pos + 1, version + 1);
            }
            finish_batch_header(&mut out[at..], first, count, 128);
        }
        if seal {
            out.extend_from_slice(&encode_seal(pos, 128, &Layout::V2));
        }
        out
    }

    #[test]
    fn the_cursor_walks_validates_and_skips() {
        let file = segment(&[(2, 5), (1, 6), (3, 7)], true);
        let header = SegmentHeader::parse(&file).unwrap();
        let mut c = FrameCursor::segment(&file, header, true);
        let mut records = 0;
        let mut kinds = Vec::new();
        while let Some(step) = c.step_each(|_, _| records += 1) {
            kinds.push(step.unwrap().frame.kind);
        }
        assert_eq!(kinds, [1, 1, 1, 2]);
        assert_eq!((records, c.next_position(), c.offset()), (6, 16, file.len() as u64));
        assert!(c.sealed());
        assert_eq!(c.last_timestamp(), Some(7));

        // Header-only: skip the first batch, validate the rest.
        let mut c = FrameCursor::segment(&file, header, false);
        let h = c.peek().unwrap().unwrap();
        c.skip(&h);
        assert_eq!(c.last_timestamp(), None, "a skipped batch ends timestamp checks");
        let h = c.peek().unwrap().unwrap();
        assert_eq!(c.validate(h).unwrap().frame.last_timestamp, 6);

        // A cursor from the middle of the segment.
        let off = SEGMENT_HEADER_LEN + kinds.len(); // not a frame: damage
        let mut c = FrameCursor::new(&file[off..], off as u64, 10, true, Layout::V2);
        assert_eq!(c.step().unwrap().unwrap_err().offset, off as u64);
    }

    #[test]
    fn the_cursor_checks_continuity() {
        // Timestamps going back across batches.
        let file = segment(&[(1, 9), (1, 3)], false);
        let header = SegmentHeader::parse(&file).unwrap();
        let mut c = FrameCursor::segment(&file, header, true);
        let first = c.step().unwrap().unwrap();
        let d = c.step().unwrap().unwrap_err();
        let second = first.offset + first.frame.len;
        assert_eq!(d.offset, second + (FRAME_HEADER_LEN + RECORD_TIMESTAMP_OFFSET) as u64);
        assert_eq!(c.offset(), second, "the cursor stays at the damaged frame");
        // ... not checked without `with_timestamps`.
        let mut c = FrameCursor::new(
            &file[SEGMENT_HEADER_LEN..],
            SEGMENT_HEADER_LEN as u64,
            10,
            true,
            Layout::V2,
        );
        assert!(c.step().unwrap().is_ok() && c.step().unwrap().is_ok());

        // A position that does not continue.
        let mut c = FrameCursor::new(
            &file[SEGMENT_HEADER_LEN..],
            SEGMENT_HEADER_LEN as u64,
            11,
            true,
            Layout::V2,
        );
        let d = c.step().unwrap().unwrap_err();
        assert_eq!(d.offset, (SEGMENT_HEADER_LEN + FRAME_FIRST_POSITION_OFFSET) as u64);

        // Bytes after a seal.
        let mut file = segment(&[(1, 1)], true);
        file.extend_from_slice(&[0; 8]);
        let header = SegmentHeader::parse(&file).unwrap();
        let w = walk_segment_records(&file, header, true, &mut NoSink);
        assert!(w.sealed);
        assert_eq!(w.stop.unwrap().offset, file.len() as u64 - 8);
        assert_eq!(w.end, file.len() as u64 - 8);

        // A frame_len past the end.
        let file = segment(&[(2, 1)], false);
        let header = SegmentHeader::parse(&file).unwrap();
        let cut = &file[..file.len() - 8];
        let w = walk_segment_records(cut, header, true, &mut NoSink);
        assert_eq!(w.end, SEGMENT_HEADER_LEN as u64);
        assert_eq!(w.stop.unwrap().offset, (SEGMENT_HEADER_LEN + FRAME_LEN_OFFSET) as u64);
    }

    struct NoSink;
    impl<'a> RecordSink<'a> for NoSink {
        fn record(&mut self, _: u64, _: u64, _: &RecordRef<'a>) {}
        fn batch(&mut self, _: u64, _: &Frame) {}
    }

    #[test]
    fn encoded_spans_follow_frame_len() {
        let file = segment(&[(1, 1), (2, 1)], true);
        let frames = &file[SEGMENT_HEADER_LEN..];
        let spans: Vec<_> = FrameCursor::encoded_spans(frames, Layout::V2).collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans.iter().map(|s| s.1).sum::<usize>(), frames.len());
    }
}
