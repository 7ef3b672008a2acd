//! Reads served by the indexes: one stream (forward or backward), a category,
//! an event type, and the whole log backward.
//!
//! A stream read finds the stream's newest segment (the segments the stream
//! table does not cover, newest first, then the table) and follows each index
//! row's `prev` pointer to the previous segment holding the stream: one row per
//! segment that holds the stream, never a search per segment or per event
//! (spec 19). Records are read from the mapped segments, each batch validated
//! (CRCs included) before any of its records is returned.

use std::mem::size_of;

use crate::error::{Damage, Error, Result, corrupt};
use crate::format::frame::validate_frame_each;
use crate::format::names::index_file_name;
use crate::format::record::{RecordRef, parse_record};
use crate::format::{
    FRAME_FIRST_POSITION_OFFSET, FRAME_HEADER_LEN, FRAME_RECORD_COUNT_OFFSET, RECORD_POSITION_OFFSET,
    RECORD_TIMESTAMP_OFFSET,
};
use crate::index::{Index, NO_SEGMENT, Named, StreamInfo};
use crate::read::logview::{LogView, ViewSegment};

pub use crate::types::Direction;

/// Bytes of the `u64` and `u32` fields read in place by the searches.
const U64_LEN: usize = size_of::<u64>();
const U32_LEN: usize = size_of::<u32>();

/// One segment holding a stream, with the index the row was read from: entry
/// numbers are only meaningful within that index, so a read keeps using it.
#[derive(Debug, Clone)]
struct Link {
    seg: usize,
    index: Index,
    info: StreamInfo,
}

type Hit = (usize, Index, StreamInfo);

impl LogView {
    /// The position in `segments` of the segment based at `base`.
    fn segment_at(&self, base: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&base, |s| s.base).ok()
    }

    /// The segment holding `position`, if any.
    fn segment_of(&self, position: u64) -> usize {
        self.segments.partition_point(|s| s.base <= position).saturating_sub(1)
    }

    /// Search segments `[0, below)` newest first for `name`.
    fn search_before(&self, below: usize, name: &str) -> Result<Option<Hit>> {
        for i in (0..below).rev() {
            if let (idx, Some(info)) = self.segments[i].pinned(|x| x.find_stream(name))? {
                return Ok(Some((i, idx, info)));
            }
        }
        Ok(None)
    }

    /// The stream's row `row` in segment `i` (checked against the name).
    fn row_at(&self, i: usize, row: u32, name: &str) -> Result<Option<Hit>> {
        Ok(match self.segments[i].pinned(|x| x.stream_at(row, name))? {
            (idx, Some(info)) => Some((i, idx, info)),
            (_, None) => None,
        })
    }

    /// The newest segment holding `name`.
    fn newest_link(&self, name: &str) -> Result<Option<Hit>> {
        let covered = self.table.as_ref().map_or(0, |t| t.next_segment());
        let mut i = self.segments.len();
        while i > 0 {
            i -= 1;
            let seg = &self.segments[i];
            if seg.base < covered {
                i += 1;
                break;
            }
            if let (idx, Some(info)) = seg.pinned(|x| x.find_stream(name))? {
                return Ok(Some((i, idx, info)));
            }
        }
        let Some(table) = &self.table else { return Ok(None) };
        match table.lookup(name) {
            Ok(None) => Ok(None),
            Ok(Some(e)) => match self.segment_at(e.at.segment).filter(|&j| j < i) {
                Some(j) => match self.row_at(j, e.at.row, name)? {
                    Some(hit) => Ok(Some(hit)),
                    None => self.search_before(i, name),
                },
                None => self.search_before(i, name),
            },
            // A damaged table is not trusted: search the indexes it covers.
            Err(_) => self.search_before(i, name),
        }
    }

    /// The segments holding `name`, oldest first; with `stop_at`, no older
    /// than the newest one whose first version is at or below it.
    fn stream_chain(&self, name: &str, stop_at: Option<u64>) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        let mut cur = self.newest_link(name)?;
        while let Some((j, index, info)) = cur {
            links.push(Link { seg: j, index, info });
            if stop_at.is_some_and(|v| info.first_version <= v) {
                break;
            }
            cur = match info.prev {
                Some(p) if p.segment == NO_SEGMENT => None,
                Some(p) => match self.segment_at(p.segment).filter(|&k| k < j) {
                    Some(k) => match self.row_at(k, p.row, name)? {
                        Some(hit) => Some(hit),
                        None => self.search_before(j, name)?,
                    },
                    None => {
                        let seg = &self.segments[j];
                        return Err(corrupt(
                            &seg.path.with_extension("idx"),
                            0,
                            format!(
                                "stream {name:?}'s previous segment {} is not an earlier segment of this log",
                                p.segment
                            ),
                        ));
                    }
                },
                // An index rebuilt in memory does not know: search.
                None => self.search_before(j, name)?,
            };
        }
        links.reverse();
        Ok(links)
    }

    /// Read the events of one stream: from version `from_version` on
    /// (`Forward`) or down (`Backward`; pass `u64::MAX` for the newest), at
    /// most `max_count` of them.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Direction, EventData, ExpectedVersion, Log, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), Options::default())?;
    /// for i in 0..5u8 {
    ///     log.append("order-1", ExpectedVersion::Any, &[EventData::new("E", vec![i])])?;
    ///     log.append("order-2", ExpectedVersion::Any, &[EventData::new("E", vec![i])])?;
    /// }
    /// let view = log.view()?;
    /// let newest_two: Vec<u64> = view
    ///     .read_stream("order-1", u64::MAX, Direction::Backward, 2)
    ///     .map(|r| r.map(|r| r.stream_version()))
    ///     .collect::<annal::Result<_>>()?;
    /// assert_eq!(newest_two, [4, 3]);
    /// # Ok(()) }
    /// ```
    pub fn read_stream(&self, stream: &str, from_version: u64, dir: Direction, max_count: u64) -> ReadStream<'_> {
        let stop = match dir {
            Direction::Forward => Some(from_version),
            Direction::Backward => None,
        };
        let (links, err) = match self.stream_chain(stream, stop) {
            Ok(l) => (l, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let link = match dir {
            Direction::Forward => 0,
            Direction::Backward => links.len(),
        };
        ReadStream {
            view: self,
            name: stream.into(),
            links,
            link,
            entry: None,
            dir,
            from_version,
            remaining: max_count,
            buf: Vec::new(),
            last: None,
            err,
            done: false,
        }
    }

    /// The version of the newest visible event of `stream`, or `None` if it
    /// has none.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        self.read_stream(stream, u64::MAX, Direction::Backward, 1)
            .next()
            .transpose()
            .map(|r| r.map(|r| r.stream_version()))
    }

    /// Read the events of every stream of `category` (streams named
    /// `<category>-<id>`, spec 19) from position `from` on, in position order.
    pub fn read_category(&self, category: &str, from: u64) -> ReadNamed<'_> {
        self.read_named(Named::Category, category, from)
    }

    /// Read the events of type `event_type` from position `from` on, in
    /// position order.
    pub fn read_event_type(&self, event_type: &str, from: u64) -> ReadNamed<'_> {
        self.read_named(Named::Type, event_type, from)
    }

    fn read_named(&self, kind: Named, name: &str, from: u64) -> ReadNamed<'_> {
        ReadNamed {
            view: self,
            kind,
            name: name.into(),
            from,
            seg: self.segment_of(from),
            cur: None,
            buf: Vec::new(),
            done: self.segments.is_empty(),
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
    /// let log = Log::open(dir.path(), opts)?;
    /// for t in [1_000, 2_000, 3_000] {
    ///     now.store(t, Ordering::SeqCst);
    ///     log.append("s-1", ExpectedVersion::Any, &[EventData::new("E", b"".as_slice())])?;
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
        let first_ts = |seg: &ViewSegment, off: u64| -> Result<Option<u64>> {
            let at = offset_plus(off, FRAME_HEADER_LEN + RECORD_TIMESTAMP_OFFSET);
            Ok(seg
                .bytes()?
                .get(at..at.saturating_add(U64_LEN))
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])))
        };
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
        validate_frame_each(rest, off, true, |_, r| {
            if r.timestamp() <= time {
                after = r.position() + 1;
            }
        })
        .map_err(|d| d.at(&*seg.path))?;
        Ok(after)
    }

    /// Read every record from position `from` down to position 0, newest
    /// first.
    pub fn read_all_backward(&self, from: u64) -> ReadAllBackward<'_> {
        ReadAllBackward {
            view: self,
            from,
            seg: self.segment_of(from.min(self.next_position().saturating_sub(1))) + 1,
            frame: None,
            buf: Vec::new(),
            done: self.segments.is_empty(),
        }
    }
}

/// An iterator's answer for one step: an error or the end ends it for good.
fn fused<T>(done: &mut bool, step: Result<Option<T>>) -> Option<Result<T>> {
    match step {
        Ok(Some(r)) => Some(Ok(r)),
        Ok(None) => {
            *done = true;
            None
        }
        Err(e) => {
            *done = true;
            Some(Err(e))
        }
    }
}

/// The stream name and first stream version of the batch at `off` of `seg`
/// (the first record, parsed with its CRC checked), or `None` past the
/// visible end. Used to check an index hit before using it.
fn batch_head(seg: &ViewSegment, off: u64) -> Result<Option<(&[u8], u64)>> {
    let bytes = seg.bytes()?;
    let Some(rest) = bytes.get(offset_plus(off, 0)..).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let h = crate::format::FrameHeader::parse(rest, off).map_err(|d| d.at(&*seg.path))?;
    if h.kind != crate::format::FRAME_KIND_BATCH {
        return Ok(Some((&[], u64::MAX)));
    }
    let rec = rest.get(FRAME_HEADER_LEN..).unwrap_or_default();
    let (rec, _) = parse_record(rec, true)
        .map_err(|(o, d)| Damage::corrupt(off.saturating_add((FRAME_HEADER_LEN + o) as u64), d).at(&*seg.path))?;
    Ok(Some((rec.stream_bytes(), rec.stream_version())))
}

/// Validate the batch at `off` of `seg` and push its records accepted by
/// `keep` onto `buf` in the order they are to be popped (`rev`: reversed
/// position order is popped last-first, i.e. newest first). `Ok(false)` if the
/// batch lies past the visible end of the segment.
fn load_batch<'a>(
    seg: &'a ViewSegment,
    off: u64,
    buf: &mut Vec<RecordRef<'a>>,
    newest_first: bool,
    keep: impl Fn(&RecordRef<'a>) -> bool,
) -> Result<bool> {
    let bytes: &'a [u8] = seg.bytes()?;
    let Some(rest) = usize::try_from(off)
        .ok()
        .and_then(|o| bytes.get(o..))
        .filter(|r| !r.is_empty())
    else {
        return Ok(false);
    };
    let start = buf.len();
    let checked = validate_frame_each(rest, off, true, |_, r| {
        if keep(&r) {
            buf.push(r);
        }
    });
    if let Err(d) = checked {
        // Never return part of a batch that is not complete.
        buf.truncate(start);
        return Err(d.at(&*seg.path));
    }
    if !newest_first {
        buf[start..].reverse();
    }
    Ok(true)
}

/// An index hit that does not match the record it points to (`detail`): if
/// the index in use is a file, the mismatch is reported as damage of that file
/// ([`LogView::index_damage`]) and the index rebuilt from the segment is
/// returned, with `f` run on it; an index built from the segment itself
/// cannot disagree with it, so there it is corruption of the segment.
fn mismatch<T>(
    seg: &ViewSegment,
    index: &Index,
    detail: String,
    f: impl Fn(&Index) -> Result<T, Damage>,
) -> Result<(Index, T)> {
    match index {
        Index::Disk(_) => seg.repinned(Damage::corrupt(0, detail), f),
        Index::Mem(_) => Err(corrupt(&seg.path, 0, detail)),
    }
}

/// Iterator over one stream's records, created by [`LogView::read_stream`].
#[derive(Debug)]
pub struct ReadStream<'a> {
    view: &'a LogView,
    name: Box<str>,
    links: Vec<Link>,
    /// Forward: the link being read. Backward: one past it.
    link: usize,
    /// The next entry of the current link to read.
    entry: Option<u32>,
    dir: Direction,
    from_version: u64,
    remaining: u64,
    /// Records of the current batch still to yield, to be popped from the end.
    buf: Vec<RecordRef<'a>>,
    /// The version of the last record yielded: the next one must follow it
    /// (versions are contiguous), whatever the indexes say.
    last: Option<u64>,
    err: Option<Error>,
    done: bool,
}

impl<'a> ReadStream<'a> {
    fn step(&mut self) -> Result<Option<RecordRef<'a>>> {
        loop {
            if self.remaining == 0 {
                return Ok(None);
            }
            if let Some(r) = self.buf.pop() {
                return self.deliver(r).map(Some);
            }
            let Some(li) = self.current_link() else {
                return Ok(None);
            };
            let Some(seg_i) = self.links.get(li).map(|l| l.seg) else {
                return Ok(None);
            };
            let view: &'a LogView = self.view;
            let seg: &'a ViewSegment = &view.segments[seg_i];
            let entry = match self.entry {
                Some(e) => Some(e),
                None => self.first_entry(li)?,
            };
            let Some(e) = entry else {
                self.next_link();
                continue;
            };
            let Some((first_version, off)) = self.entry_at(li, e)? else {
                self.next_link();
                continue;
            };
            // The hit is checked against the batch it points to: the stream's
            // full name and the entry's first version.
            if let Some(found) = batch_head(seg, off)?
                && (found.0 != self.name.as_bytes() || found.1 != first_version)
            {
                self.relink(li, seg, off, first_version, found)?;
                continue;
            }
            self.entry = match self.dir {
                Direction::Forward => Some(e + 1),
                Direction::Backward => e.checked_sub(1),
            };
            if self.dir == Direction::Backward && self.entry.is_none() {
                // After this batch, go on with the previous link.
                self.link = li;
            }
            if !self.load(seg, off)? {
                // Entries past the visible end of the active segment.
                match self.dir {
                    Direction::Forward => return Ok(None),
                    Direction::Backward => continue,
                }
            }
        }
    }

    /// Yield `r`, the next record of the stream: its version must follow
    /// the last one yielded (or be `from_version`, forward), whatever the
    /// indexes said.
    fn deliver(&mut self, r: RecordRef<'a>) -> Result<RecordRef<'a>> {
        let v = r.stream_version();
        let expected = match (self.dir, self.last) {
            (Direction::Forward, None) => Some(self.from_version),
            (Direction::Forward, Some(l)) => l.checked_add(1),
            (Direction::Backward, None) => None,
            (Direction::Backward, Some(l)) => l.checked_sub(1),
        };
        if expected.is_some_and(|e| e != v) {
            let seg = &self.view.segments[self.view.segment_of(r.position())];
            let path = seg.path.with_file_name(index_file_name(seg.base));
            return Err(corrupt(
                &path,
                0,
                format!(
                    "reading stream {:?}: expected version {}, found version {v} at position {}: \
                     the index files skip or repeat batches of the stream",
                    self.name,
                    expected.unwrap_or_default(),
                    r.position()
                ),
            ));
        }
        self.last = Some(v);
        self.remaining -= 1;
        Ok(r)
    }

    /// The link being read: forward `link`, backward the one before it;
    /// `None` when backward reading is past the oldest.
    fn current_link(&self) -> Option<usize> {
        match self.dir {
            Direction::Forward => Some(self.link),
            Direction::Backward => self.link.checked_sub(1),
        }
    }

    /// Entry `first_version` of link `li` points at the batch at `off` of
    /// `seg`, which holds `found` (stream name, first version) instead:
    /// switch the link to the index rebuilt from the segment (a damaged
    /// index file) and read it again from its start; what was already
    /// yielded is not yielded again (see [`ReadStream::load`]).
    fn relink(
        &mut self,
        li: usize,
        seg: &ViewSegment,
        off: u64,
        first_version: u64,
        found: (&[u8], u64),
    ) -> Result<()> {
        let name = &*self.name;
        let detail = format!(
            "the index entry for stream {name:?} version {first_version} points at the batch at byte {off} of {}, \
             which holds stream {:?} from version {}",
            seg.path.display(),
            String::from_utf8_lossy(found.0),
            found.1
        );
        let link = &mut self.links[li];
        let (idx, info) = mismatch(seg, &link.index, detail, |x| x.find_stream(name))?;
        let Some(info) = info else {
            return Err(corrupt(
                &seg.path,
                0,
                format!("stream {name:?} is not in the segment's rebuilt index"),
            ));
        };
        (link.index, link.info) = (idx, info);
        self.entry = None;
        if self.dir == Direction::Backward {
            self.link = li + 1;
        }
        Ok(())
    }

    /// Validate the batch at `off` of `seg` and buffer its records of the
    /// stream still to yield, in the order they are to be popped. `Ok(false)`
    /// if the batch lies past the visible end.
    fn load(&mut self, seg: &'a ViewSegment, off: u64) -> Result<bool> {
        let (dir, from, last) = (self.dir, self.from_version, self.last);
        load_batch(seg, off, &mut self.buf, dir == Direction::Backward, |r| match dir {
            Direction::Forward => r.stream_version() >= from && last.is_none_or(|l| r.stream_version() > l),
            Direction::Backward => r.stream_version() <= from && last.is_none_or(|l| r.stream_version() < l),
        })
    }

    /// Entry `e` of link `li`: `(first_version, frame_offset)`. If the index
    /// file turns out damaged, the link moves to the rebuilt index.
    fn entry_at(&mut self, li: usize, e: u32) -> Result<Option<(u64, u64)>> {
        let name = &*self.name;
        let link = &mut self.links[li];
        match link.index.stream_entry(name, &link.info, e) {
            Ok(x) => Ok(x),
            Err(d) => {
                let seg = &self.view.segments[link.seg];
                let (idx, info) = seg.repinned(d, |x| x.find_stream(name))?;
                let Some(info) = info else {
                    return Err(corrupt(
                        &seg.path,
                        0,
                        format!("stream {name:?} is not in its rebuilt index"),
                    ));
                };
                (link.index, link.info) = (idx, info);
                link.index
                    .stream_entry(name, &link.info, e)
                    .map_err(|d| d.at(&*seg.path))
            }
        }
    }

    /// The entry to start at in link `li`: the last batch whose first version
    /// is at or below `from_version` (forward: or the first batch).
    fn first_entry(&mut self, li: usize) -> Result<Option<u32>> {
        let n = self.links[li].info.entry_count;
        let from = self.from_version;
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let v = self.entry_at(li, mid)?.map_or(u64::MAX, |e| e.0);
            if v <= from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(match (self.dir, lo, n) {
            (_, _, 0) => None,
            (Direction::Forward, 0, _) => Some(0),
            (Direction::Forward, l, _) => Some(l - 1),
            (Direction::Backward, 0, _) => None,
            (Direction::Backward, l, _) => Some(l - 1),
        })
    }

    fn next_link(&mut self) {
        self.entry = None;
        match self.dir {
            Direction::Forward => self.link += 1,
            Direction::Backward => self.link = self.link.saturating_sub(1),
        }
    }
}

impl<'a> Iterator for ReadStream<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.err.take() {
            self.done = true;
            return Some(Err(e));
        }
        let step = self.step();
        fused(&mut self.done, step)
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
    buf: Vec<RecordRef<'a>>,
    done: bool,
}

/// `off + k` as an index into a mapping, saturating: offsets come from index
/// files (hints), so `off` may be anything; a saturated index finds nothing.
fn offset_plus(off: u64, k: usize) -> usize {
    usize::try_from(off).unwrap_or(usize::MAX).saturating_add(k)
}

/// The position stored at an entry's offset: a frame's first position or a
/// record's position (for the binary search only; reading validates).
fn entry_position(bytes: &[u8], kind: Named, off: u64) -> u64 {
    let at = offset_plus(
        off,
        match kind {
            Named::Category => FRAME_FIRST_POSITION_OFFSET,
            Named::Type => RECORD_POSITION_OFFSET,
        },
    );
    bytes
        .get(at..at.saturating_add(U64_LEN))
        .map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8])))
}

/// What a category or type read does after one index hit.
enum Flow<'a> {
    /// Go on with the next entry (or the records just buffered).
    Next,
    /// Yield this record.
    Yield(RecordRef<'a>),
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
            let flow = match self.kind {
                Named::Category => self.category_batch(seg, off)?,
                Named::Type => self.type_record(seg, off)?,
            };
            match flow {
                Flow::Next => continue,
                Flow::Yield(r) => return Ok(Some(r)),
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
        // First entry at or after `from` (binary search).
        let bytes = seg.bytes()?;
        let (mut lo, mut hi) = (0u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let off = self.entry(mid)?.unwrap_or(u64::MAX);
            let before = match kind {
                // A batch wholly before `from`: its first position plus its count.
                Named::Category => {
                    let count = bytes
                        .get(
                            offset_plus(off, FRAME_RECORD_COUNT_OFFSET)
                                ..offset_plus(off, FRAME_RECORD_COUNT_OFFSET + U32_LEN),
                        )
                        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    entry_position(bytes, kind, off).saturating_add(count as u64) <= from
                }
                Named::Type => entry_position(bytes, kind, off) < from,
            };
            if before {
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
    fn category_batch(&mut self, seg: &'a ViewSegment, off: u64) -> Result<Flow<'a>> {
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

    /// An event type's hit: the record at `off` of `seg` (its CRC checked),
    /// checked to be of the type.
    fn type_record(&mut self, seg: &'a ViewSegment, off: u64) -> Result<Flow<'a>> {
        let bytes: &'a [u8] = seg.bytes()?;
        let Some(rest) = bytes.get(offset_plus(off, 0)..).filter(|r| !r.is_empty()) else {
            return Ok(Flow::End);
        };
        let (rec, _) = parse_record(rest, true)
            .map_err(|(o, d)| Damage::corrupt(off.saturating_add(o as u64), d).at(&*seg.path))?;
        if rec.event_type() != &*self.name {
            let detail = format!(
                "the index entry for type {:?} points at the record at byte {off} of {}, \
                 which is of type {:?}",
                self.name,
                seg.path.display(),
                rec.event_type()
            );
            self.rebuilt(seg, detail)?;
            return Ok(Flow::Next);
        }
        Ok(match rec.position() >= self.from {
            true => Flow::Yield(rec),
            false => Flow::Next,
        })
    }
}

impl<'a> Iterator for ReadNamed<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.step();
        fused(&mut self.done, step)
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
        let step = self.step();
        fused(&mut self.done, step)
    }
}
