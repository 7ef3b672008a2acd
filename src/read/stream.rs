//! One stream's events, forward or backward: [`LogView::read_stream`] and
//! its iterator [`ReadStream`].
//!
//! A stream read finds the stream's newest segment (the segments the stream
//! table does not cover, newest first, then the table) and follows each index
//! row's `prev` pointer to the previous segment holding the stream: one row per
//! segment that holds the stream, never a search per segment or per event
//! (spec 19).
//!
//! Invariants: versions are delivered contiguous (a gap or a repeat, which
//! only damaged index files could cause, is an error naming the index file);
//! every batch is validated (CRCs included) before any of its records is
//! returned; a hit that does not match its batch switches the segment to its
//! rebuilt index, and nothing already delivered is delivered again.

use crate::error::{Error, Result, corrupt};
use crate::format::IDX_STREAM_ROW_V2_LEN;
use crate::format::meta::{is_system_stream, meta_stream};
use crate::format::record::RecordRef;
use crate::index::{Index, NO_ROW, NO_SEGMENT, StreamInfo};
use crate::read::hits::{batch_head, fused, load_batch, mismatch};
use crate::read::logview::{LogView, ViewSegment};
use crate::read::rules::Visible;
use crate::types::{Direction, StreamPosition};

/// One segment holding a stream, with the index the row was read from: entry
/// numbers are only meaningful within that index, so a read keeps using it.
#[derive(Debug, Clone)]
struct Link {
    seg: usize,
    index: Index,
    info: StreamInfo,
}

type Hit = (usize, Index, StreamInfo);

/// Batches a stream read asks the kernel for at once, ahead of reading them
/// (the first page of each): a cold read then waits for the disk about once
/// per window, not once per batch (spec 7, "Reading ahead").
const AHEAD_BATCHES: u32 = 128;
/// A first batch that takes longer than this to load came from the disk: a
/// read that did not look cold (its indexes were open) reads ahead from then
/// on. (A warm batch loads in about a microsecond; a disk read takes tens.)
const COLD_BATCH: std::time::Duration = std::time::Duration::from_micros(40);
/// Sealed segments whose index files a cold stream read asks for ahead of
/// its chain walk ([`LogView::prefetch_rows`]).
const AHEAD_SEGMENTS: usize = 64;
/// Bytes asked for at each batch's offset: its first page, which holds a
/// batch of a few events whole.
const AHEAD_BYTES: u64 = 4096;

impl LogView {
    /// Search segments `[0, below)` newest first for `name`.
    fn search_before(&self, below: usize, name: &str) -> Result<Option<Hit>> {
        for i in (0..below).rev() {
            if let (idx, Some(info)) = self.segments[i].pinned(|x| x.find_stream(name))? {
                return Ok(Some((i, idx, info)));
            }
        }
        Ok(None)
    }

    /// The stream's row `row` in segment `i`, checked against the name
    /// (`strict`) or only against its hash (see [`ReadStream::relink_strict`]).
    fn row_at(&self, i: usize, row: u32, name: &str, strict: bool) -> Result<Option<Hit>> {
        let found = if strict {
            self.segments[i].pinned(|x| x.stream_at(row, name))?
        } else {
            self.segments[i].pinned(|x| x.stream_at_hash(row, name))?
        };
        Ok(match found {
            (idx, Some(info)) => Some((i, idx, info)),
            (_, None) => None,
        })
    }

    /// Before a chain walk: if the read looks cold (an index file of the
    /// newest [`AHEAD_SEGMENTS`] sealed segments is not open yet, as in the
    /// first read of a process), ask the kernel for what the walk will read
    /// first, all at once: the rows where `name` should be in the stream
    /// table and in the active segment's index checkpoints, and the headers
    /// and block tables of those index files. Returns whether it did. Hints:
    /// nothing is mapped, checked, reported or rebuilt here. (A warm read
    /// makes no system call for them.)
    fn prefetch_rows(&self, name: &str) -> bool {
        let sealed = &self.segments[..self.segments.len().saturating_sub(1)];
        let window = || sealed.iter().rev().take(AHEAD_SEGMENTS);
        if window().all(|s| s.index.is_open()) {
            return false;
        }
        self.prefetch_lookups(name);
        for s in window() {
            s.index.prefetch_file(None);
        }
        true
    }

    /// Ask the kernel for the rows where `name` should be in the stream
    /// table and in the active segment's index checkpoints (hints).
    fn prefetch_lookups(&self, name: &str) {
        if let Some(t) = &self.table {
            t.prefetch_lookup(name);
        }
        if let Some(active) = self.segments.last()
            && let Some(idx) = active.index.current()
        {
            idx.prefetch_stream_row(name);
        }
    }

    /// Search the segments kept in a store (`[0, front)`, spec 23.7)
    /// newest first for `name`, skipping those it is known to be absent
    /// from. These segments never change (compaction only removes events)
    /// and their run only grows at its end, so once a search of all of
    /// them finds nothing, the stream is remembered absent below the
    /// run's end (shared by every view of the run, through its index
    /// cells): later reads search only segments added since. A segment
    /// with no index object is searched all the same (its index is built
    /// from the segment, which is downloaded for it, once for the run):
    /// reads never skip a segment that might hold the stream.
    fn search_front(&self, name: &str) -> Result<Option<Hit>> {
        let front = self.front.min(self.segments.len());
        let absent = self.segments[..front].first().and_then(|s| s.index.known_absent());
        let known = absent.map_or(0, |a| a.below(name));
        for i in (0..front).rev() {
            if self.segments[i].base < known {
                break;
            }
            if let (idx, Some(info)) = self.segments[i].pinned(|x| x.find_stream(name))? {
                return Ok(Some((i, idx, info)));
            }
        }
        if let (Some(a), Some(end)) = (absent, self.segments.get(front)) {
            a.record(name, end.base);
        }
        Ok(None)
    }

    /// The newest segment holding `name`.
    fn newest_link(&self, name: &str, strict: bool) -> Result<Option<Hit>> {
        let covered = self.table.as_ref().map_or(0, |t| t.next_segment());
        let mut i = self.segments.len();
        // The segments kept in a store are in no stream table: searched
        // after the table (and through their own cache), never here.
        while i > self.front {
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
        // Segments kept in a store (spec 23.7) are in no stream table: a
        // stream the table does not know may have events only there.
        let in_front = || match self.front {
            0 => Ok(None),
            _ => self.search_front(name),
        };
        let Some(table) = &self.table else { return in_front() };
        match table.lookup(name) {
            Ok(None) => in_front(),
            Ok(Some(e)) => match self.segment_at(e.at.segment).filter(|&j| j < i) {
                Some(j) => match self.row_at(j, e.at.row, name, strict)? {
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
    /// than the newest one whose first version is at or below it. Not
    /// `strict`, rows reached through the stream table and back pointers
    /// are taken on their hash (a cold read then reads one page per
    /// segment, not two); the batches they lead to are checked all the same.
    ///
    /// `cold` (see [`LogView::prefetch_rows`]): once a back pointer names a
    /// row, the index files of the older segments not open yet are asked for
    /// that row's page, all at once (a stream often has the same row in the
    /// indexes of consecutive segments: they hold much the same streams).
    ///
    /// Also whether the chain may end at events that log retention removed
    /// (spec 3.9): in a view that does not start at position 0, the oldest
    /// link (a back pointer below the view's first segment ends the chain).
    fn stream_chain(&self, name: &str, stop_at: Option<u64>, strict: bool, cold: bool) -> Result<(Vec<Link>, bool)> {
        let mut links = Vec::new();
        let first_base = self.segments.first().map_or(0, |s| s.base);
        let mut cut = false;
        let mut cur = self.newest_link(name, strict)?;
        let mut hinted = !cold;
        while let Some((j, index, info)) = cur {
            if !hinted && let Some(p) = info.prev.filter(|p| p.row != NO_ROW) {
                hinted = true;
                let row_len = index.stream_row_len().unwrap_or(IDX_STREAM_ROW_V2_LEN);
                for s in self.segments[..j].iter().rev().take(AHEAD_SEGMENTS) {
                    s.index.prefetch_file(Some((p.row, row_len)));
                }
            }
            links.push(Link { seg: j, index, info });
            if stop_at.is_some_and(|v| info.first_version <= v) {
                break;
            }
            cur = match info.prev {
                // An index written after local retention removed the
                // segments the view reads from a store (spec 23.7) ends the
                // chain: the stream's earlier versions are looked for there.
                Some(p) if p.segment == NO_SEGMENT && self.front > 0 && j >= self.front && info.first_version > 0 => {
                    self.search_front(name)?
                }
                Some(p) if p.segment == NO_SEGMENT => None,
                // Removed by retention: the stream's surviving events
                // start here.
                Some(p) if p.segment < first_base => {
                    cut = true;
                    None
                }
                Some(p) => match self.segment_at(p.segment).filter(|&k| k < j) {
                    Some(k) => match self.row_at(k, p.row, name, strict)? {
                        Some(hit) => Some(hit),
                        None => self.search_before(j, name)?,
                    },
                    None => {
                        let seg = &self.segments[j];
                        return Err(corrupt(
                            &seg.index_name(),
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
            // In a view that does not start at 0, the oldest link may follow
            // removed events (an index written after the removal says NONE).
            if cur.is_none() && first_base > 0 {
                cut = true;
            }
        }
        links.reverse();
        Ok((links, cut))
    }

    /// Read the events of one stream: from `from` (a version, or
    /// [`StreamPosition::Start`] / [`StreamPosition::End`]) on (`Forward`)
    /// or down (`Backward`), at most `max_count` of them.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Direction, EventData, ExpectedVersion, Log, StreamPosition};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// for i in 0..5u8 {
    ///     log.append("order-1", ExpectedVersion::Any, &[EventData::new("E", vec![i])])?;
    ///     log.append("order-2", ExpectedVersion::Any, &[EventData::new("E", vec![i])])?;
    /// }
    /// let view = log.view()?;
    /// let newest_two: Vec<u64> = view
    ///     .read_stream("order-1", StreamPosition::End, Direction::Backward, 2)
    ///     .map(|r| r.map(|r| r.stream_version()))
    ///     .collect::<annal::Result<_>>()?;
    /// assert_eq!(newest_two, [4, 3]);
    /// # Ok(()) }
    /// ```
    pub fn read_stream(
        &self,
        stream: &str,
        from: impl Into<StreamPosition>,
        dir: Direction,
        max_count: u64,
    ) -> ReadStream<'_> {
        let from_version = from.into().version();
        let cold = self.prefetch_rows(stream);
        if !self.has_rules() || is_system_stream(stream) {
            return self.stream_reader(stream, from_version, dir, max_count, cold, None);
        }
        if cold {
            self.prefetch_lookups(&meta_stream(stream));
        }
        match self.visible(stream) {
            Ok(None) => self.stream_reader(stream, from_version, dir, max_count, cold, None),
            Ok(Some(v)) => {
                let mut r = match dir {
                    // Versions below the lowest visible one are hidden:
                    // start there.
                    Direction::Forward => {
                        let from = from_version.max(v.min_version);
                        self.stream_reader(stream, from, dir, max_count, cold, Some(v))
                    }
                    Direction::Backward => self.stream_reader(stream, from_version, dir, max_count, cold, Some(v)),
                };
                if let Some(e) = v.deleted(stream) {
                    r.err = Some(e);
                }
                r
            }
            Err(e) => {
                let mut r = self.stream_reader(stream, from_version, dir, 0, false, None);
                r.err = Some(e);
                r
            }
        }
    }

    /// [`LogView::read_stream`] with nothing hidden: every event of the
    /// stream, whatever its metadata says (for the metadata itself, and
    /// for the stream's newest version).
    pub(crate) fn read_stream_raw(
        &self,
        stream: &str,
        from_version: u64,
        dir: Direction,
        max_count: u64,
    ) -> ReadStream<'_> {
        self.stream_reader(stream, from_version, dir, max_count, false, None)
    }

    fn stream_reader(
        &self,
        stream: &str,
        from_version: u64,
        dir: Direction,
        max_count: u64,
        cold: bool,
        visible: Option<Visible>,
    ) -> ReadStream<'_> {
        let stop = match dir {
            Direction::Forward => Some(from_version),
            Direction::Backward => None,
        };
        let ((links, cut), err) = match self.stream_chain(stream, stop, false, cold) {
            Ok(l) => (l, None),
            Err(e) => ((Vec::new(), false), Some(e)),
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
            stop,
            strict: false,
            remaining: max_count,
            buf: Vec::new(),
            last: None,
            err,
            done: false,
            loaded: 0,
            ahead: cold,
            ahead_at: 0,
            visible,
            // A compacted segment (spec 3.10) may have removed the stream's
            // oldest events, as retention does.
            cut: cut || self.has_compacted(),
        }
    }

    /// The version of the newest visible event of `stream`, or `None` if it
    /// has none.
    ///
    /// (A stream that reads as deleted has none: `None`.)
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        match self
            .read_stream(stream, u64::MAX, Direction::Backward, 1)
            .next()
            .transpose()
        {
            Ok(r) => Ok(r.map(|r| r.stream_version())),
            Err(Error::StreamDeleted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
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
    /// `stop_at` of the chain (see [`LogView::stream_chain`]).
    stop: Option<u64>,
    /// The links were found comparing names, not hashes.
    strict: bool,
    remaining: u64,
    /// Records of the current batch still to yield, to be popped from the end.
    buf: Vec<RecordRef<'a>>,
    /// The version of the last record yielded: the next one must follow it
    /// (versions are contiguous), whatever the indexes say.
    last: Option<u64>,
    err: Option<Error>,
    done: bool,
    /// Batches loaded so far.
    loaded: u64,
    /// Read ahead ([`ReadStream::read_ahead`]): the read looked cold from
    /// the start, or its first batch took longer than [`COLD_BATCH`].
    ahead: bool,
    /// When `loaded` reaches it, the next window of batches is asked for.
    ahead_at: u64,
    /// What the stream's metadata leaves visible (spec 3.7; `None`: all).
    visible: Option<Visible>,
    /// Log retention removed the stream's oldest events (spec 3.9): a
    /// forward read starts at the first surviving version.
    cut: bool,
}

impl<'a> ReadStream<'a> {
    /// Ask the kernel for what the next [`AHEAD_BATCHES`] batches of this
    /// read need (the pages of the links' index entries, then the first page
    /// of each batch), without waiting: hints, so nothing is checked here and
    /// a failure is left to the read itself. Never more batches than events
    /// still wanted (a batch holds at least one).
    fn read_ahead(&mut self) {
        let view: &'a LogView = self.view;
        let want = u64::from(AHEAD_BATCHES).min(self.remaining);
        self.ahead_at = self.loaded.saturating_add(want.max(1));
        let Some(start) = self.current_link() else { return };
        let order: Vec<usize> = match self.dir {
            Direction::Forward => (start..self.links.len()).collect(),
            Direction::Backward => (0..=start).rev().collect(),
        };
        if self.loaded == 0 {
            for &li in &order {
                let l = &self.links[li];
                let from = match self.dir {
                    Direction::Forward => 0,
                    Direction::Backward => l.info.entry_count.saturating_sub(AHEAD_BATCHES),
                };
                l.index.prefetch_stream_entries(&l.info, from, AHEAD_BATCHES);
            }
        }
        let mut left = want;
        let mut entry = self.entry;
        for li in order {
            if left == 0 {
                return;
            }
            let seg = &view.segments[self.links[li].seg];
            // A hint never downloads: a segment kept in a store (spec 23.7)
            // is fetched when the read reaches it, not ahead.
            if seg.map.is_fetched() && !seg.map.is_mapped() {
                return;
            }
            if seg.bytes().is_err() {
                return;
            }
            let mut e = match entry.take() {
                Some(e) => Some(e),
                None if li == start && self.loaded == 0 => self.first_entry(li).ok().flatten(),
                None => match self.dir {
                    Direction::Forward => Some(0),
                    Direction::Backward => self.links[li].info.entry_count.checked_sub(1),
                },
            };
            while let Some(i) = e
                && left > 0
            {
                let l = &self.links[li];
                let Ok(Some((_, off))) = l.index.stream_entry(&self.name, &l.info, i) else {
                    break;
                };
                seg.map.prefetch(off, AHEAD_BYTES);
                left -= 1;
                e = match self.dir {
                    Direction::Forward => i.checked_add(1),
                    Direction::Backward => i.checked_sub(1),
                };
            }
        }
    }

    fn step(&mut self) -> Result<Option<RecordRef<'a>>> {
        loop {
            if self.remaining == 0 {
                return Ok(None);
            }
            if let Some(r) = self.buf.pop() {
                if let Some(v) = &self.visible
                    && !v.shows(r.stream_version(), r.timestamp())
                {
                    match self.dir {
                        // Hidden by age: an older prefix of the stream.
                        Direction::Forward => continue,
                        // Everything older is hidden too.
                        Direction::Backward => return Ok(None),
                    }
                }
                return self.deliver(r).map(Some);
            }
            if self.ahead && self.loaded >= self.ahead_at {
                self.read_ahead();
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
                if self.strict {
                    self.relink(li, seg, off, first_version, found)?;
                } else {
                    self.relink_strict()?;
                }
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
            self.loaded += 1;
            let t = (!self.ahead && self.loaded == 1).then(std::time::Instant::now);
            let loaded = self.load(seg, off)?;
            if t.is_some_and(|t| t.elapsed() > COLD_BATCH) {
                // The first batch waited for the disk: read the rest ahead.
                (self.ahead, self.ahead_at) = (true, self.loaded);
            }
            if !loaded {
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
        // Hidden by age, a stream's first visible event may come after
        // `from_version`.
        let by_age = self.visible.is_some_and(|v| v.min_timestamp > 0);
        // Removed by retention (spec 3.9): a read from version 0 (or from
        // the lowest version the stream's rules show) starts at the first
        // version left; a read from a later version that retention removed
        // is refused, never continued from a later version.
        if self.cut && self.last.is_none() && self.dir == Direction::Forward && v > self.from_version && !by_age {
            let shown_from = self.visible.map_or(0, |x| x.min_version);
            if self.from_version > shown_from {
                if self.view.has_compacted() {
                    return Err(Error::RemovedByCompaction {
                        stream: self.name.to_string(),
                        from_version: self.from_version,
                        first_version: v,
                    });
                }
                return Err(Error::RemovedByRetention {
                    stream: self.name.to_string(),
                    from_version: self.from_version,
                    first_version: v,
                });
            }
            self.last = Some(v);
            self.remaining -= 1;
            return Ok(r);
        }
        let expected = match (self.dir, self.last) {
            (Direction::Forward, None) if by_age && v >= self.from_version => None,
            (Direction::Forward, None) => Some(self.from_version),
            (Direction::Forward, Some(l)) => l.checked_add(1),
            (Direction::Backward, None) => None,
            (Direction::Backward, Some(l)) => l.checked_sub(1),
        };
        if expected.is_some_and(|e| e != v) {
            let seg = &self.view.segments[self.view.segment_of(r.position())];
            let path = seg.index_name();
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

    /// A batch reached through the links is not the one their index entry
    /// says: before any index is called damaged, find the links again
    /// comparing names (a row taken on its hash may be another stream's with
    /// the same hash) and read on from the start of the chain; what was
    /// already yielded is not yielded again (see [`ReadStream::load`]).
    fn relink_strict(&mut self) -> Result<()> {
        (self.links, self.cut) = self.view.stream_chain(&self.name, self.stop, true, false)?;
        self.strict = true;
        self.entry = None;
        self.link = match self.dir {
            Direction::Forward => 0,
            Direction::Backward => self.links.len(),
        };
        self.ahead_at = self.loaded;
        Ok(())
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
