//! Reads served by the indexes: a category, an event type, the whole log
//! backward, and the position at a time; one stream's reads are in `stream`
//! (re-exported here), the index-hit checks they share in `hits`.
//!
//! Invariants: index files are hints, checked against the records they point
//! to; records are read from the mapped segments, each batch validated (CRCs
//! included) before any of its records is returned.

use crate::error::{Error, Result, corrupt};
use crate::format::Layout;
use crate::format::frame::validate_frame_each;
use crate::format::frame::{peek_positions, peek_timestamp};
use crate::format::record::RecordRef;
use crate::index::{Index, Named};
use crate::read::hits::{batch_head, fused, load_batch, mismatch, offset_plus};
use crate::read::logview::{LogView, ViewSegment};
use crate::read::rules::Hide;
use crate::storage::mmap::Readahead;

pub use crate::read::stream::ReadStream;

impl LogView {
    /// Read the events of every stream of `category` (streams named
    /// `<category>-<id>`, spec 19) from position `from` on, in position order.
    ///
    /// Events that stream metadata hides are skipped (spec 3.7); events of
    /// system streams are delivered only to a read of a system category
    /// (such as `$meta`).
    pub fn read_category(&self, category: &str, from: u64) -> ReadNamed<'_> {
        self.read_named(Named::Category, category, from).hiding(self, category)
    }

    /// Every event of a category, nothing hidden (the `$meta` category
    /// itself is read so).
    pub(crate) fn read_named_raw(&self, category: &str) -> ReadNamed<'_> {
        self.read_named(Named::Category, category, 0)
    }

    /// Read the events of type `event_type` from position `from` on, in
    /// position order.
    ///
    /// Events that stream metadata hides are skipped, as by
    /// [`LogView::read_category`].
    pub fn read_event_type(&self, event_type: &str, from: u64) -> ReadNamed<'_> {
        self.read_named(Named::Type, event_type, from).hiding(self, event_type)
    }

    fn read_named(&self, kind: Named, name: &str, from: u64) -> ReadNamed<'_> {
        ReadNamed {
            view: self,
            kind,
            name: name.into(),
            from,
            seg: self.segment_of(from),
            cur: None,
            last_hit: None,
            buf: Vec::new(),
            done: self.segments.is_empty(),
            hide: None,
            err: None,
        }
    }

    /// The first position whose append time is after `time` (nanoseconds
    /// since the Unix epoch): the number of events appended at or before
    /// `time`. Found by binary search, over segments and then over the batches
    /// of one segment (timestamps never decrease with position, spec 9).
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log, Options};
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// let now = Arc::new(AtomicU64::new(1_000));
    /// let clock = now.clone();
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = Options::default().clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    /// let log = Log::open_with(dir.path(), opts)?;
    /// for t in [1_000, 2_000, 3_000] {
    ///     now.store(t, Ordering::SeqCst);
    ///     log.append("s-1", ExpectedVersion::Any, &[EventData::new("E", b"")])?;
    /// }
    /// let view = log.view()?;
    /// assert_eq!(view.position_at_time(2_500)?, 2);
    /// // The log as it was at time 2,500:
    /// assert_eq!(view.read_all(0).until(view.position_at_time(2_500)?).count(), 2);
    /// # Ok(()) }
    /// ```
    pub fn position_at_time(&self, time: u64) -> Result<u64> {
        // Timestamp of the first record of batch `off` in `seg` (search only;
        // the batch that decides is validated below).
        let first_ts =
            |seg: &ViewSegment, off: u64| -> Result<Option<u64>> { Ok(peek_timestamp(seg.bytes()?, off, &seg.layout)) };
        let first_of = |seg: &ViewSegment| -> Result<Option<u64>> {
            Ok(match seg.with_index(|x| x.frame(0))? {
                Some((_, off)) if off < seg.len() => first_ts(seg, off)?,
                _ => None,
            })
        };
        // The last segment whose first event is at or before `time`.
        let (mut lo, mut hi) = (0usize, self.segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match first_of(&self.segments[mid])? {
                Some(ts) if ts <= time => lo = mid + 1,
                Some(_) => hi = mid,
                // An empty (active) segment: treat as after `time`.
                None => hi = mid,
            }
        }
        let Some(si) = lo.checked_sub(1) else {
            return Ok(self.segments.first().map_or(0, |s| s.base));
        };
        let seg = &self.segments[si];
        let n = seg.with_index(|x| Ok(x.frame_count()))?;
        let visible = seg.len();
        // The last visible batch whose first event is at or before `time`.
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let before = match seg.with_index(|x| x.frame(mid))? {
                Some((_, off)) if off < visible => first_ts(seg, off)?.is_some_and(|ts| ts <= time),
                _ => false,
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some((first, off)) = lo
            .checked_sub(1)
            .map(|f| seg.with_index(|x| x.frame(f)))
            .transpose()?
            .flatten()
        else {
            return Ok(seg.base);
        };
        let rest = seg.bytes()?.get(offset_plus(off, 0)..).unwrap_or(&[]);
        let mut after = first;
        validate_frame_each(rest, off, true, &seg.layout, |_, r| {
            if r.timestamp() <= time {
                after = r.position() + 1;
            }
        })
        .map_err(|d| d.at(&*seg.path))?;
        Ok(after)
    }

    /// Read every record from position `from` down to position 0, newest
    /// first (skipping, as [`LogView::read_all`], events of system streams
    /// and events that stream metadata hides).
    pub fn read_all_backward(&self, from: u64) -> ReadAllBackward<'_> {
        let (hide, err) = match self.hide(false) {
            Ok(h) => (h, None),
            Err(e) => (None, Some(e)),
        };
        ReadAllBackward {
            hide,
            err,
            view: self,
            from,
            seg: self.segment_of(from.min(self.next_position().saturating_sub(1))) + 1,
            frame: None,
            buf: Vec::new(),
            done: self.segments.is_empty(),
            ahead: (usize::MAX, Readahead::backward()),
        }
    }
}

/// Iterator over a category's or an event type's records, created by
/// [`LogView::read_category`] and [`LogView::read_event_type`].
#[derive(Debug)]
pub struct ReadNamed<'a> {
    view: &'a LogView,
    kind: Named,
    name: std::sync::Arc<str>,
    from: u64,
    seg: usize,
    /// The current segment's index (pinned), `(entry_start, entry_count)` in
    /// it, and the next entry.
    cur: Option<(Index, u32, u32, u32)>,
    /// The batch of the last hit in the current segment: a version 1 index
    /// lists an event type's records, which give one batch each; the batch
    /// is read once.
    last_hit: Option<u64>,
    buf: Vec<RecordRef<'a>>,
    done: bool,
    /// What metadata hides (spec 3.7).
    hide: Option<Hide>,
    /// An error to yield first (the rules could not be read).
    err: Option<Error>,
}

impl<'a> ReadNamed<'a> {
    /// Skip what metadata hides; a name starting with `$` names system
    /// streams, whose events are then delivered.
    fn hiding(mut self, view: &LogView, name: &str) -> ReadNamed<'a> {
        match view.hide(name.starts_with('$')) {
            Ok(h) => self.hide = h,
            Err(e) => self.err = Some(e),
        }
        self
    }
}

/// Whether the batch at `off` lies wholly before position `from`: its first
/// position plus its record count, as stored in its frame header (for the
/// binary search only; reading validates).
fn batch_before(bytes: &[u8], off: u64, from: u64, layout: &Layout) -> bool {
    let (first, count) = peek_positions(bytes, off, layout).unwrap_or((u64::MAX, 0));
    first.saturating_add(u64::from(count)) <= from
}

/// What a category or type read does after one index hit.
enum Flow {
    /// Go on with the next entry (or the records just buffered).
    Next,
    /// The hit lies past the visible end: the read is over.
    End,
}

impl<'a> ReadNamed<'a> {
    /// Entry `i` of the current segment's list, from the pinned index; if the
    /// index file turns out damaged, move to the rebuilt index.
    fn entry(&mut self, i: u32) -> Result<Option<u64>> {
        let (kind, name) = (self.kind, &*self.name);
        let seg = &self.view.segments[self.seg];
        let Some((index, start, count, _)) = self.cur.as_mut() else {
            return Ok(None);
        };
        match index.named_entry(kind, name, *start, i) {
            Ok(x) => Ok(x),
            Err(d) => {
                let (idx, found) = seg.repinned(d, |x| x.find_named(kind, name))?;
                let Some((s, c)) = found else {
                    return Err(corrupt(&seg.path, 0, format!("{name:?} is not in the rebuilt index")));
                };
                (*index, *start, *count) = (idx, s, c);
                index.named_entry(kind, name, s, i).map_err(|d| d.at(&*seg.path))
            }
        }
    }

    /// An entry of the current segment's index did not match its record
    /// (`detail`): switch to the index rebuilt from the segment (reporting the
    /// file's damage) and read the segment again from `from`.
    fn rebuilt(&mut self, seg: &ViewSegment, detail: String) -> Result<()> {
        let Some((index, ..)) = self.cur.as_ref() else {
            return Ok(());
        };
        let (kind, name) = (self.kind, &*self.name);
        mismatch(seg, index, detail, |x| x.find_named(kind, name))?;
        self.cur = None;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<RecordRef<'a>>> {
        loop {
            if let Some(r) = self.buf.pop() {
                // Nothing at or before it is returned again (after a switch
                // to a rebuilt index, the segment is read again).
                self.from = r.position().saturating_add(1);
                return Ok(Some(r));
            }
            let view: &'a LogView = self.view;
            let Some(seg) = view.segments.get(self.seg) else {
                return Ok(None);
            };
            if self.cur.is_none() && !self.open_segment(seg)? {
                self.seg += 1;
                continue;
            }
            let Some((count, i)) = self.cur.as_ref().map(|c| (c.2, c.3)) else {
                continue;
            };
            if i >= count {
                self.cur = None;
                self.seg += 1;
                continue;
            }
            if let Some(c) = self.cur.as_mut() {
                c.3 = i + 1;
            }
            let Some(off) = self.entry(i)? else {
                self.cur = None;
                self.seg += 1;
                continue;
            };
            if self.last_hit.replace(off) == Some(off) {
                continue;
            }
            let flow = match self.kind {
                Named::Category => self.category_batch(seg, off)?,
                Named::Type => self.type_batch(seg, off)?,
            };
            match flow {
                Flow::Next => continue,
                Flow::End => return Ok(None),
            }
        }
    }

    /// Pin segment `seg`'s index and find the name's list in it, starting at
    /// its first entry at or after `from`; `false` if the segment does not
    /// hold the name.
    fn open_segment(&mut self, seg: &ViewSegment) -> Result<bool> {
        let name_arc = self.name.clone();
        let (kind, name, from) = (self.kind, &*name_arc, self.from);
        let (index, found) = seg.pinned(|x| x.find_named(kind, name))?;
        let Some((start, count)) = found else {
            return Ok(false);
        };
        self.cur = Some((index, start, count, 0));
        self.last_hit = None;
        // First entry whose batch is not wholly before `from` (binary
        // search; every entry names a batch).
        let bytes = seg.bytes()?;
        let (mut lo, mut hi) = (0u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let off = self.entry(mid)?.unwrap_or(u64::MAX);
            if batch_before(bytes, off, from, &seg.layout) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if let Some(c) = self.cur.as_mut() {
            c.3 = lo;
        }
        Ok(true)
    }

    /// A category's hit: the batch at `off` of `seg`, checked to hold a
    /// stream of the category, then validated and buffered from `from` on.
    fn category_batch(&mut self, seg: &'a ViewSegment, off: u64) -> Result<Flow> {
        let (name, from) = (self.name.clone(), self.from);
        if let Some((stream, _)) = batch_head(seg, off)?
            && std::str::from_utf8(stream)
                .ok()
                .and_then(crate::format::hash::category_of)
                != Some(&*name)
        {
            let detail = format!(
                "the index entry for category {name:?} points at the batch at byte {off} of {}, \
                 which holds stream {:?}",
                seg.path.display(),
                String::from_utf8_lossy(stream)
            );
            self.rebuilt(seg, detail)?;
            return Ok(Flow::Next);
        }
        if !load_batch(seg, off, &mut self.buf, false, |r| r.position() >= from)? {
            return Ok(Flow::End);
        }
        Ok(Flow::Next)
    }

    /// An event type's hit: the batch at `off` of `seg`, validated, checked
    /// to hold at least one record of the type (spec 17.4), and its records
    /// of the type from `from` on buffered.
    fn type_batch(&mut self, seg: &'a ViewSegment, off: u64) -> Result<Flow> {
        let (name, from) = (self.name.clone(), self.from);
        let holds = std::cell::Cell::new(false);
        let loaded = load_batch(seg, off, &mut self.buf, false, |r| {
            let of_type = r.event_type_bytes() == name.as_bytes();
            holds.set(holds.get() || of_type);
            of_type && r.position() >= from
        })?;
        if !loaded {
            return Ok(Flow::End);
        }
        if !holds.get() {
            let detail = format!(
                "the index entry for type {name:?} points at the batch at byte {off} of {}, which holds no record \
                 of that type",
                seg.path.display(),
            );
            self.rebuilt(seg, detail)?;
        }
        Ok(Flow::Next)
    }
}

impl<'a> Iterator for ReadNamed<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.err.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            let step = self.step();
            if !Hide::skips(&self.hide, &step) {
                return fused(&mut self.done, step);
            }
        }
    }
}

/// Iterator over every record, newest first, created by
/// [`LogView::read_all_backward`].
#[derive(Debug)]
pub struct ReadAllBackward<'a> {
    view: &'a LogView,
    from: u64,
    /// One past the segment being read.
    seg: usize,
    /// The next frame (index in the segment's frame list) to read, going down.
    frame: Option<u32>,
    buf: Vec<RecordRef<'a>>,
    done: bool,
    /// The segment the readahead window is kept in (segment mappings are
    /// advised for random access: `storage::mmap`), and the window, kept
    /// below the cursor.
    ahead: (usize, Readahead),
    /// What metadata hides (spec 3.7).
    hide: Option<Hide>,
    /// An error to yield first (the rules could not be read).
    err: Option<Error>,
}

impl<'a> ReadAllBackward<'a> {
    fn step(&mut self) -> Result<Option<RecordRef<'a>>> {
        loop {
            if let Some(r) = self.buf.pop() {
                return Ok(Some(r));
            }
            let view: &'a LogView = self.view;
            let Some(si) = self.seg.checked_sub(1) else {
                return Ok(None);
            };
            let seg = &view.segments[si];
            let from = self.from;
            let fi = match self.frame {
                Some(f) => f,
                None => {
                    // The last frame whose first position is at or below `from`.
                    let n = seg.with_index(|x| Ok(x.frame_count()))?;
                    let (mut lo, mut hi) = (0u32, n);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        let p = seg.with_index(|x| x.frame(mid))?.map_or(u64::MAX, |f| f.0);
                        if p <= from {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    match lo.checked_sub(1) {
                        Some(f) => f,
                        None => {
                            self.seg = si;
                            continue;
                        }
                    }
                }
            };
            self.frame = fi.checked_sub(1);
            if self.frame.is_none() {
                self.seg = si;
            }
            let Some((_, off)) = seg.with_index(|x| x.frame(fi))? else {
                continue;
            };
            if self.ahead.0 != si {
                self.ahead = (si, Readahead::backward());
            }
            self.ahead.1.at(&seg.map, off);
            // Frames past the visible end (active segment) are skipped.
            load_batch(seg, off, &mut self.buf, true, |r| r.position() <= from)?;
        }
    }
}

impl<'a> Iterator for ReadAllBackward<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.err.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            let step = self.step();
            if !Hide::skips(&self.hide, &step) {
                return fused(&mut self.done, step);
            }
        }
    }
}
