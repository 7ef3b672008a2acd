//! Replay: [`LogView::read_all`] and its iterator [`ReadAll`], every visible
//! record in position order.
//!
//! Invariants: each batch is validated as a whole (structure always, CRCs
//! unless [`ReadOptions::verify_crc`] is off) before any of its records is
//! returned, so a reader never returns part of an incomplete batch nor a
//! record whose bytes fail their CRC; frames are contiguous in position
//! across and within segments, and a gap or overlap is corruption naming the
//! segment. This is the hot path of a replay: `next` stays small and inlined,
//! frames wholly before `from` are skipped without validation, and no record
//! or frame allocates.

use std::mem::offset_of;
use std::path::Path;

use crate::error::{Damage, Result};
use crate::format::frame::validate_frame;
use crate::format::record::{RecordRef, parse_validated};
use crate::format::{
    FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_SEAL, FrameHeader, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::read::view::{LogView, ReadOptions};

/// Where a segment header holds its base position (spec 2.1).
const SEGMENT_BASE_POSITION_AT: u64 = offset_of!(SegmentHeader, base_position) as u64;
/// Where a frame header holds `frame_len` (spec 3.1).
const FRAME_LEN_AT: u64 = offset_of!(FrameHeader, frame_len) as u64;
/// Where a frame header holds `first_position` (spec 3.1).
const FIRST_POSITION_AT: u64 = offset_of!(FrameHeader, first_position) as u64;
/// Bytes of a CPU cache line, the stride of the prefetch before a batch is
/// validated without CRCs (not a format offset).
const CACHE_LINE: usize = 64;

impl LogView {
    /// Replay every visible record from position `from` on, in position order,
    /// checking CRCs.
    pub fn read_all(&self, from: u64) -> ReadAll<'_> {
        self.read_all_with(from, ReadOptions::default())
    }

    /// Replay with explicit [`ReadOptions`].
    pub fn read_all_with(&self, from: u64, opts: ReadOptions) -> ReadAll<'_> {
        // The last segment whose base is <= from.
        let seg = self.segments.partition_point(|s| s.base <= from).saturating_sub(1);
        let mut pos = self.segments.get(seg).map_or(0, |s| s.base);
        let mut off = SEGMENT_HEADER_LEN;
        // Seek with the index's frame list: the last batch starting at or
        // before `from`. Without it (an error), walk the frames from the start.
        if let Some(s) = self.segments.get(seg)
            && from > s.base
            && let Ok(Some((p, o))) = s.with_index(|x| {
                let (mut lo, mut hi) = (0u32, x.frame_count());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if x.frame(mid)?.is_some_and(|f| f.0 <= from) {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                match lo.checked_sub(1) {
                    Some(i) => x.frame(i),
                    None => Ok(None),
                }
            })
            && o < s.len()
            && o as usize >= SEGMENT_HEADER_LEN
        {
            (pos, off) = (p, o as usize);
        }
        ReadAll {
            view: self,
            seg,
            off,
            pos,
            from,
            verify: opts.verify_crc,
            batch: &[],
            until: u64::MAX,
            done: false,
        }
    }
}

impl<'a> ReadAll<'a> {
    /// Stop before position `until` (exclusive).
    pub fn until(mut self, until: u64) -> ReadAll<'a> {
        self.until = until;
        self
    }
}

/// Iterator over records of a [`LogView`], created by [`LogView::read_all`].
///
/// Yields `Err` once (then ends) if it meets damaged data.
#[derive(Debug)]
pub struct ReadAll<'a> {
    view: &'a LogView,
    seg: usize,
    off: usize,
    /// Position of the next frame's first record.
    pos: u64,
    from: u64,
    verify: bool,
    /// Remaining records of the current, validated batch.
    batch: &'a [u8],
    /// Stop before this position.
    until: u64,
    done: bool,
}

impl<'a> ReadAll<'a> {
    fn fail(&mut self, path: &Path, d: Damage) -> Option<Result<RecordRef<'a>>> {
        self.done = true;
        self.batch = &[];
        Some(Err(d.at(path)))
    }

    /// A record of the current, validated batch no longer parses: the
    /// segment's bytes changed under the reader. Names the segment the batch
    /// lies in (`seg`, whose frame ends at `off`) and the record's offset.
    #[cold]
    fn changed_under_reader(&mut self) -> Option<Result<RecordRef<'a>>> {
        let offset = self.off.saturating_sub(self.batch.len()) as u64;
        let view: &'a LogView = self.view;
        let seg = view.segments.get(self.seg).or(view.segments.last())?;
        let d = Damage::corrupt(
            offset,
            "a record of a validated batch no longer parses (the file changed under the reader)",
        );
        self.fail(&seg.path, d)
    }

    /// The next record of the current batch, which was validated as a whole
    /// (CRCs included) before its first record was returned; `None` when the
    /// batch is used up (or when a bad length would run past it, which a
    /// validated batch never has: `next_frame` then reports it).
    #[inline(always)]
    fn next_in_batch(&mut self) -> Option<Option<Result<RecordRef<'a>>>> {
        let (rec, rest) = parse_validated(self.batch)?;
        self.batch = rest;
        if rec.position() >= self.until {
            self.done = true;
            self.batch = &[];
            return Some(None);
        }
        Some(Some(Ok(rec)))
    }

    /// Move to the next batch frame (validating it) and return its first
    /// record at or after `from`; or the end, or the damage met.
    #[inline(never)]
    fn next_frame(&mut self) -> Option<Result<RecordRef<'a>>> {
        loop {
            if self.done {
                return None;
            }
            if !self.batch.is_empty() {
                if let Some(r) = self.next_in_batch() {
                    return r;
                }
                return self.changed_under_reader();
            }
            let view: &'a LogView = self.view;
            let seg = view.segments.get(self.seg)?;
            let bytes = match seg.bytes() {
                Ok(b) => b,
                Err(e) => {
                    self.done = true;
                    self.batch = &[];
                    return Some(Err(e));
                }
            };
            if self.off == SEGMENT_HEADER_LEN && seg.base != self.pos {
                let d = Damage::corrupt(
                    SEGMENT_BASE_POSITION_AT,
                    format!(
                        "expected the segment to start at position {}, found base position {}",
                        self.pos, seg.base
                    ),
                );
                return self.fail(&seg.path, d);
            }
            let Some(rest) = bytes.get(self.off..).filter(|r| !r.is_empty()) else {
                self.seg += 1;
                self.off = SEGMENT_HEADER_LEN;
                continue;
            };
            let off = self.off as u64;
            let h = match FrameHeader::parse(rest, off) {
                Ok(h) => h,
                Err(d) => return self.fail(&seg.path, d),
            };
            let (len, first, count) = (h.frame_len.get(), h.first_position.get(), h.record_count.get() as u64);
            if first != self.pos {
                let d = Damage::corrupt(
                    off + FIRST_POSITION_AT,
                    format!("expected a frame starting at position {}, found {first}", self.pos),
                );
                return self.fail(&seg.path, d);
            }
            if len > rest.len() as u64 {
                let d = Damage::corrupt(
                    off + FRAME_LEN_AT,
                    format!(
                        "frame_len {len} runs past the end of the segment ({} bytes remain)",
                        rest.len()
                    ),
                );
                return self.fail(&seg.path, d);
            }
            if h.kind == FRAME_KIND_SEAL && rest.len() as u64 != len {
                let d = Damage::corrupt(
                    off + len,
                    format!(
                        "expected the segment to end at its seal, found {} more bytes",
                        rest.len() as u64 - len
                    ),
                );
                return self.fail(&seg.path, d);
            }
            if h.kind != FRAME_KIND_BATCH || first + count <= self.from {
                // A seal or checkpoint, or a batch wholly before `from`: skip
                // it unread.
                self.off += len as usize;
                self.pos = first + count;
                continue;
            }
            if !self.verify {
                // Without CRCs, validation reads only the record headers,
                // each found from the previous one's length: a chain of
                // dependent loads from memory. Touch every cache line of
                // the frame first, with independent loads the CPU overlaps.
                let lines = rest.get(..len as usize).unwrap_or_default().chunks(CACHE_LINE);
                std::hint::black_box(lines.fold(0u8, |a, l| a ^ l.first().copied().unwrap_or(0)));
            }
            if let Err(d) = validate_frame(rest, off, self.verify) {
                return self.fail(&seg.path, d);
            }
            // `validate_frame` checked that the frame fits in `rest`.
            self.batch = rest.get(FRAME_HEADER_LEN..len as usize).unwrap_or_default();
            self.off += len as usize;
            self.pos = first + count;
            // Records are numbered contiguously from `first` (validated):
            // skip those before `from`.
            for _ in first..self.from {
                match parse_validated(self.batch) {
                    Some((_, rest)) => self.batch = rest,
                    None => break,
                }
            }
        }
    }
}

impl<'a> Iterator for ReadAll<'a> {
    type Item = Result<RecordRef<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_in_batch() {
            Some(r) => r,
            None => self.next_frame(),
        }
    }
}
