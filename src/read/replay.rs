//! Replay: [`LogView::read_all`] and its iterator [`ReadAll`], every visible
//! record in position order.
//!
//! Invariants: each batch is validated as a whole (structure always, CRCs
//! unless [`ReadOptions::verify_crc`] is off) before any of its records is
//! returned, so a reader never returns part of an incomplete batch nor a
//! record whose bytes fail their CRC; frames are contiguous in position
//! across and within segments, and a gap or overlap is corruption naming the
//! segment. Frames are walked with the one [`FrameCursor`], so replay agrees
//! with recovery and `check` on what a valid frame is.
//!
//! This is the hot path of a replay: `next` stays small and inlined, frames
//! wholly before `from` (and seals, checkpoints) are stepped over with their
//! header checked but their body unread, and nothing allocates per record or
//! per frame.
//!
//! Segment mappings are advised for random access (see `storage::mmap`), so
//! the kernel would not read ahead for a replay: while the cursor reads a
//! segment it holds a [`Readahead`], which advises that mapping sequential
//! (and random again once no cursor walks it).

use crate::error::{Damage, Error, Result};
use crate::format::batch::BodyRecords;
use crate::format::frame::{FrameCursor, FrameRef, body_context};
use crate::format::record::{RecordRef, parse_validated};
use crate::format::{FRAME_HEADER_LEN, FRAME_KIND_BATCH, Layout, SEGMENT_BASE_POSITION_OFFSET, SEGMENT_HEADER_LEN};
use crate::read::logview::{LogView, ReadOptions, ViewSegment};
use crate::read::rules::Hide;
use crate::storage::mmap::Readahead;

/// Bytes of a CPU cache line, the stride of the prefetch before a batch is
/// validated without CRCs (not a format offset).
const CACHE_LINE: usize = 64;

impl LogView {
    /// Replay every visible record from position `from` on, in position order,
    /// checking CRCs. Events of system streams, and events that stream
    /// metadata hides, are skipped (spec 3.7).
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
        let (hide, err) = match self.hide(false) {
            Ok(h) => (h, None),
            Err(e) => (None, Some(e)),
        };
        ReadAll {
            hide,
            err,
            view: self,
            seg,
            frames: None,
            off,
            pos,
            from,
            verify: opts.verify_crc,
            batch: &[],
            compact: None,
            until: u64::MAX,
            done: false,
            ahead: Readahead::forward(),
        }
    }
}

impl<'a> ReadAll<'a> {
    /// Every record, also those of system streams and those stream
    /// metadata hides (for `check`).
    pub(crate) fn unhidden(mut self) -> ReadAll<'a> {
        self.hide = None;
        self.err = None;
        self
    }

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
    /// The segment being read.
    seg: usize,
    /// The frames of segment `seg` not read yet, once it is open.
    frames: Option<FrameCursor<'a>>,
    /// Where segment `seg` is to be read from when it is opened: the file
    /// offset of a frame, and the position that frame must start at.
    off: usize,
    pos: u64,
    from: u64,
    verify: bool,
    /// Remaining records of the current, validated batch (versions 1, 2).
    batch: &'a [u8],
    /// Remaining records of the current, validated batch (version 3).
    compact: Option<BodyRecords<'a>>,
    /// Stop before this position.
    until: u64,
    done: bool,
    /// Read ahead in segment `seg` once it is open.
    ahead: Readahead,
    /// What metadata hides (spec 3.7): events of system streams, and what
    /// each stream's rules hide.
    hide: Option<Hide>,
    /// An error to yield first (the rules could not be read).
    err: Option<Error>,
}

impl<'a> ReadAll<'a> {
    /// The segment being read (or, past the end, the last one).
    fn segment(&self) -> Option<&'a ViewSegment> {
        let view: &'a LogView = self.view;
        view.segments.get(self.seg).or(view.segments.last())
    }

    /// End the iteration with `e`.
    #[cold]
    fn fail_with(&mut self, e: Error) -> Option<Result<RecordRef<'a>>> {
        self.done = true;
        self.batch = &[];
        self.compact = None;
        Some(Err(e))
    }

    /// End the iteration with damage `d` of the segment being read.
    #[cold]
    fn fail(&mut self, d: Damage) -> Option<Result<RecordRef<'a>>> {
        let seg = self.segment()?;
        self.fail_with(d.at(&*seg.path))
    }

    /// A record of the current, validated batch no longer parses: the
    /// segment's bytes changed under the reader. Names the segment and the
    /// record's offset (the batch is the tail of the frame the cursor just
    /// moved past).
    #[cold]
    fn changed_under_reader(&mut self) -> Option<Result<RecordRef<'a>>> {
        let end = self.frames.as_ref().map_or(0, |c| c.offset());
        let offset = end.saturating_sub(self.batch.len() as u64);
        let d = Damage::corrupt(
            offset,
            "a record of a validated batch no longer parses (the file changed under the reader)",
        );
        self.fail(d)
    }

    /// The next record of the current batch, which was validated as a whole
    /// (CRCs included) before its first record was returned; `None` when the
    /// batch is used up (or when a bad length would run past it, which a
    /// validated batch never has: `next_frame` then reports it).
    #[inline(always)]
    fn next_in_batch(&mut self) -> Option<Option<Result<RecordRef<'a>>>> {
        if let Some(it) = self.compact.as_mut() {
            let Some((_, rec)) = it.next() else {
                let broken = it.left() > 0;
                self.compact = None;
                return broken.then(|| self.changed_under_reader());
            };
            if rec.position() >= self.until {
                self.done = true;
                self.compact = None;
                return Some(None);
            }
            return Some(Some(Ok(rec)));
        }
        let (rec, rest) = parse_validated(self.batch)?;
        self.batch = rest;
        if rec.position() >= self.until {
            self.done = true;
            self.batch = &[];
            return Some(None);
        }
        Some(Some(Ok(rec)))
    }

    /// Open segment `seg` (mapping it) at `off`, checking that a segment
    /// read from its start begins at the expected position. `None` past the
    /// last segment.
    fn open_segment(&mut self) -> Option<Result<FrameCursor<'a>>> {
        let view: &'a LogView = self.view;
        let seg = view.segments.get(self.seg)?;
        let bytes = match seg.bytes() {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        if self.off == SEGMENT_HEADER_LEN && seg.base != self.pos {
            let d = Damage::corrupt(
                SEGMENT_BASE_POSITION_OFFSET as u64,
                format!(
                    "expected the segment to start at position {}, found base position {}",
                    self.pos, seg.base
                ),
            );
            return Some(Err(d.at(&*seg.path)));
        }
        let rest = bytes.get(self.off..).unwrap_or_default();
        self.ahead = Readahead::forward();
        self.ahead.at(&seg.map, self.off as u64);
        Some(Ok(FrameCursor::new(
            rest,
            self.off as u64,
            self.pos,
            self.verify,
            seg.layout,
        )))
    }

    /// Segment `seg` is read to its end: go on with the next one, from its
    /// first frame, at the position `frames` ended at.
    fn next_segment(&mut self, next_position: u64) {
        self.frames = None;
        self.seg += 1;
        self.off = SEGMENT_HEADER_LEN;
        self.pos = next_position;
    }

    /// Make the batch `f` (validated) the current one, less its records
    /// before `from`.
    #[inline]
    fn enter_batch(&mut self, f: &FrameRef<'a>, layout: &Layout) {
        if layout.compact() {
            let body = f.bytes.get(f.frame.header_len as usize..).unwrap_or_default();
            let mut it = BodyRecords::new(body, &body_context(&f.frame, f.offset, layout));
            for _ in f.frame.first_position..self.from {
                if it.next().is_none() {
                    break;
                }
            }
            self.compact = Some(it);
            return;
        }
        // The records after the header (`FrameRef::body` borrows the
        // `FrameRef`, not the mapping).
        self.batch = f.bytes.get(FRAME_HEADER_LEN..).unwrap_or_default();
        // Records are numbered contiguously from the frame's first position
        // (validated): skip those before `from`.
        for _ in f.frame.first_position..self.from {
            match parse_validated(self.batch) {
                Some((_, rest)) => self.batch = rest,
                None => break,
            }
        }
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
            if self.compact.is_some() {
                if let Some(r) = self.next_in_batch() {
                    return r;
                }
                continue;
            }
            let Some(frames) = self.frames.as_mut() else {
                match self.open_segment()? {
                    Ok(c) => self.frames = Some(c),
                    Err(e) => return self.fail_with(e),
                }
                continue;
            };
            let h = match frames.peek() {
                Some(Ok(h)) => h,
                Some(Err(d)) => return self.fail(d),
                None => {
                    let next = frames.next_position();
                    self.next_segment(next);
                    continue;
                }
            };
            if h.frame.kind != FRAME_KIND_BATCH || h.frame.next_position() <= self.from {
                // A seal or checkpoint, or a batch wholly before `from`: step
                // over it unread (its header and position checked).
                frames.skip(&h);
                continue;
            }
            if !self.verify {
                // Without CRCs, validation reads only the record headers,
                // each found from the previous one's length: a chain of
                // dependent loads from memory. Touch every cache line of
                // the frame first, with independent loads the CPU overlaps.
                let lines = h.bytes.chunks(CACHE_LINE);
                std::hint::black_box(lines.fold(0u8, |a, l| a ^ l.first().copied().unwrap_or(0)));
            }
            let layout = *frames.layout();
            match frames.validate(h) {
                Ok(f) => self.enter_batch(&f, &layout),
                Err(d) => return self.fail(d),
            }
        }
    }
}

impl<'a> Iterator for ReadAll<'a> {
    type Item = Result<RecordRef<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.err.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            let r = match self.next_in_batch() {
                Some(r) => r,
                None => self.next_frame(),
            };
            // (Without metadata, one test of `hide` per record, nothing copied.)
            if let Some(h) = &self.hide
                && let Some(Ok(rec)) = &r
                && h.hides(rec)
            {
                continue;
            }
            return r;
        }
    }
}
