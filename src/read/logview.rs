//! [`LogView`], a consistent point-in-time set of segments, and
//! [`ViewSegment`], one segment as a view sees it.
//!
//! A [`LogView`] holds the segments visible when it was taken, each by an
//! `Arc` of its mapping, so records borrowed from a view stay valid for as
//! long as the view lives, whatever the writer does meanwhile. What a view
//! does lives beside it: replay ([`LogView::read_all`], in `replay`), the
//! index-served reads (`query`); views are made by the writer and by the
//! cross-process [`Reader`](crate::Reader) (`reader`).
//!
//! Invariants: a view's segments are in log order, contiguous in position;
//! every byte a view's mapping exposes was validated before the view was
//! handed out (a sealed segment by its header and seal, the active segment by
//! copying each frame), so records parsed from it never fail structurally.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::keyring::KeyRing;
use crate::error::{Damage, Error, Result};
use crate::format::Layout;
use crate::format::names::index_file_name;
use crate::index::streamtable::StreamTable;
use crate::index::{Index, IndexCell, NO_ROW, StreamInfo};
use crate::read::visibility::RulesCell;
use crate::storage::mmap::Mapping;

/// A clock: nanoseconds since the Unix epoch.
pub(crate) type NowFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A view's clock (see [`LogView::now`]).
#[derive(Clone)]
struct ViewClock(NowFn);

impl std::fmt::Debug for ViewClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewClock")
    }
}

/// One segment as seen by a view.
#[derive(Debug, Clone)]
pub(crate) struct ViewSegment {
    pub base: u64,
    pub path: Arc<PathBuf>,
    pub map: Arc<Mapping>,
    pub index: Arc<IndexCell>,
    /// The layout of its frames (from its header).
    pub layout: Layout,
}

impl ViewSegment {
    /// Run `f` on this segment's index; if the index file turns out damaged,
    /// rebuild the index from the segment (reported by the cell) and retry.
    pub(crate) fn with_index<T>(&self, f: impl Fn(&Index) -> Result<T, Damage>) -> Result<T> {
        self.pinned(f).map(|(_, t)| t)
    }

    /// [`ViewSegment::with_index`], also returning the index used, so that a
    /// read can keep using the same index (entry numbers and row handles are
    /// only meaningful within one index).
    pub(crate) fn pinned<T>(&self, f: impl Fn(&Index) -> Result<T, Damage>) -> Result<(Index, T)> {
        // An index fetched into a cache opens without the segment's bytes
        // (a cold segment is then fetched only to read its records); a
        // damaged one is rebuilt from them.
        let fetched = match self.index.is_fetched() {
            true => self.index.get_fetched()?.ok(),
            false => None,
        };
        let idx = match fetched {
            Some(idx) => idx,
            None => self.index.get(self.bytes()?)?,
        };
        match f(&idx) {
            Ok(t) => Ok((idx, t)),
            Err(d) if idx.is_from_files() => self.repinned(d, f),
            Err(d) => Err(d.at(&*self.path)),
        }
    }

    /// The index file is damaged (`d`): switch to the index rebuilt from the
    /// segment and run `f` on it.
    /// An I/O failure (`d.is_io()`) is no damage: it is returned as
    /// [`Error::Io`](crate::Error::Io) naming the index file, and nothing is
    /// rebuilt.
    pub(crate) fn repinned<T>(&self, d: Damage, f: impl Fn(&Index) -> Result<T, Damage>) -> Result<(Index, T)> {
        if d.is_io() {
            return Err(d.at(self.index_name()));
        }
        let idx = self.index.damaged(&self.path, self.bytes()?, d)?;
        let t = f(&idx).map_err(|d| d.at(&*self.path))?;
        Ok((idx, t))
    }

    /// The index file of this segment, for messages: the cell's (for a
    /// segment kept in a store, spec 23.7, the index object), else, for a
    /// segment kept in a store with no index object, the segment's object
    /// (its index is built from it), else the file beside the segment.
    pub(crate) fn index_name(&self) -> PathBuf {
        match self.index.file() {
            Some(p) => p.to_owned(),
            None if self.map.is_fetched() => self.path.to_path_buf(),
            None => self.path.with_file_name(index_file_name(self.base)),
        }
    }

    /// The segment's mapped bytes (a sealed segment is mapped on first use).
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        self.map.try_bytes()
    }

    /// The segment's length as mapped (or to be mapped), mapping nothing.
    pub(crate) fn len(&self) -> u64 {
        self.map.len()
    }

    /// Find a stream in this segment's index.
    pub(crate) fn find_stream(&self, name: &str) -> Result<Option<StreamInfo>> {
        self.with_index(|i| i.find_stream(name))
    }

    /// `(name, row, last_version)` of every stream in the segment (rows are
    /// `NO_ROW` for an index that lives in memory).
    pub(crate) fn stream_rows(&self, idx: &Index) -> Result<Vec<(Box<str>, u32, u64)>> {
        match idx {
            Index::Disk(f) => match f.stream_rows() {
                Ok(rows) => Ok(rows),
                Err(d) => {
                    let (idx, ()) = self.repinned(d, |_| Ok(()))?;
                    self.stream_rows(&idx)
                }
            },
            Index::Mem(m) => Ok(m
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .streams
                .iter()
                .map(|(n, s)| (n.clone(), NO_ROW, s.last_version))
                .collect()),
            Index::Layered(l) => match l.stream_versions() {
                Ok(v) => Ok(v.into_iter().map(|(n, v)| (n, NO_ROW, v)).collect()),
                Err(d) => {
                    let (idx, ()) = self.repinned(d, |_| Ok(()))?;
                    self.stream_rows(&idx)
                }
            },
        }
    }
}

/// A consistent, point-in-time view of a log's visible records.
///
/// Cheap to clone; `Send + Sync`. Records read through it borrow from its
/// memory mappings.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{EventData, ExpectedVersion, Log, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// log.append("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])?;
/// let view = log.view()?;
/// for rec in view.read_all(0) {
///     let rec = rec?;
///     assert_eq!(rec.stream(), "order-1");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LogView {
    pub(crate) segments: Arc<[ViewSegment]>,
    pub(crate) table: Option<Arc<StreamTable>>,
    next_position: u64,
    pub(super) unrecovered: Option<Unrecovered>,
    /// The clock `max_age` rules are measured against (spec 3.7;
    /// nanoseconds since the epoch): the writer's for its views, else the
    /// system's. Read only when a stream has such a rule.
    clock: Option<ViewClock>,
    /// The rules of the streams that have metadata, computed on first use.
    pub(crate) rules: RulesCell,
    /// A segment of the view was rewritten by compaction (spec 3.10).
    compacted: bool,
    /// The subject keys of the log (spec 22), shared with the writer or
    /// reader that made the view.
    pub(crate) keys: Option<Arc<KeyRing>>,
    /// How many of the first segments are kept in a store, not in the log
    /// directory (spec 23.7): local retention removed them, or a remote
    /// reader left them there.
    pub(crate) front: usize,
}

/// Where a [`Reader`](crate::Reader)'s view stops vouching for a log that was not cleanly
/// closed and has not been recovered since: what [`LogView::unrecovered`]
/// returns.
///
/// The view delivers every event below `position`, each validated. Past byte
/// `offset` of `segment` the files hold bytes that the head file does not
/// declare visible and durable (a writer crashed, or the power was cut, before
/// it recorded them), or the head has no valid slot for that segment: those
/// bytes may hold events that were acknowledged, or a torn write that recovery
/// will cut. Nothing past them is delivered until a writer opens the log
/// (which recovers it) or `annal check --repair` runs.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecovered {
    /// The segment file holding the bytes the view cannot vouch for.
    pub segment: PathBuf,
    /// The byte offset in `segment` past which the view cannot vouch.
    pub offset: u64,
    /// The first position the view does not deliver (its
    /// [`LogView::next_position`]).
    pub position: u64,
}

impl std::fmt::Display for Unrecovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the log was not cleanly closed and has not been recovered: events from position {} on \
             (past byte {} of {}) cannot be vouched for; open it with a writer or run `annal check --repair`",
            self.position,
            self.offset,
            self.segment.display()
        )
    }
}

/// How to read.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Check every record's CRC as it is read (default `true`). Turn off only
    /// for trusted replays of logs that `annal check` verified.
    pub verify_crc: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { verify_crc: true }
    }
}

impl ReadOptions {
    /// Check every record's CRC as it is read, or not (see
    /// [`ReadOptions::verify_crc`](ReadOptions#structfield.verify_crc)).
    pub fn verify_crc(mut self, verify: bool) -> Self {
        self.verify_crc = verify;
        self
    }
}

impl LogView {
    pub(crate) fn new(segments: Vec<ViewSegment>, next_position: u64, table: Option<Arc<StreamTable>>) -> LogView {
        LogView {
            compacted: segments.iter().any(|s| s.layout.compacted),
            segments: segments.into(),
            table,
            next_position,
            unrecovered: None,
            clock: None,
            rules: RulesCell::default(),
            keys: None,
            front: 0,
        }
    }

    /// The view with `front` (sealed segments kept in a store, ending
    /// where its first starts, spec 23.7) before its segments.
    pub(crate) fn with_front(mut self, front: Vec<ViewSegment>) -> LogView {
        if front.is_empty() {
            return self;
        }
        self.compacted |= front.iter().any(|s| s.layout.compacted);
        self.front = front.len();
        let mut segs = front;
        segs.extend(self.segments.iter().cloned());
        self.segments = segs.into();
        self
    }

    /// The first position of the view's first segment (`None`: no segment).
    #[cfg(feature = "remote")]
    pub(crate) fn first_base(&self) -> Option<u64> {
        self.segments.first().map(|s| s.base)
    }

    /// The view, unsealing records with `keys`.
    pub(crate) fn with_keys(mut self, keys: Arc<KeyRing>) -> LogView {
        self.keys = Some(keys);
        self
    }

    /// The view's subject keys.
    pub(crate) fn keys(&self) -> Result<&KeyRing> {
        self.keys.as_deref().ok_or_else(|| {
            Error::InvalidArgument(
                "this view was made without the log's subject keys; take one from Log::view or Reader::view".into(),
            )
        })
    }

    /// The view, measuring `max_age` rules against `clock` (the writer's).
    pub(crate) fn with_clock(mut self, clock: NowFn) -> LogView {
        self.clock = Some(ViewClock(clock));
        self
    }

    /// Now, by the view's clock (nanoseconds since the epoch).
    pub(crate) fn now(&self) -> u64 {
        match &self.clock {
            Some(c) => (c.0)(),
            None => crate::types::now_nanos(),
        }
    }

    /// Set when no writer holds the log and it was not cleanly closed nor
    /// recovered since: the view delivers every event below
    /// [`Unrecovered::position`] and cannot vouch for what the files hold
    /// past [`Unrecovered::offset`] of [`Unrecovered::segment`] (bytes the
    /// head file does not declare visible and durable, or no valid head slot
    /// for the active segment). Such bytes may hold acknowledged events (the
    /// head file is not synced at every commit) or a torn write; they are
    /// delivered once a writer opens the log (which recovers it) or after
    /// `annal check --repair`.
    ///
    /// `None` for a cleanly closed or recovered log, while a writer holds the
    /// log (bytes past the visible end are then a write in progress), and for
    /// the writer's own views.
    pub fn unrecovered(&self) -> Option<&Unrecovered> {
        self.unrecovered.as_ref()
    }

    /// Damage found in index files while reading (each was rebuilt from its
    /// segment, so reads stayed correct), as messages naming the file.
    pub fn index_damage(&self) -> Vec<String> {
        self.segments.iter().filter_map(|s| s.index.damage()).collect()
    }

    /// One past the position of the last visible record (the number of visible
    /// records).
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Whether a segment of the view was rewritten by compaction (spec
    /// 3.10): positions and a stream's versions may then have gaps.
    pub(crate) fn has_compacted(&self) -> bool {
        self.compacted
    }

    /// Number of segments in the view.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Total mapped bytes of the view.
    pub fn len_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len()).sum()
    }

    /// The bytes of the last segment of the view, mapping no other.
    pub(crate) fn last_segment_bytes(&self) -> Option<Result<&[u8]>> {
        self.segments.last().map(|s| s.bytes())
    }

    /// The segment file whose mapping holds `bytes` (a slice of a record
    /// this view returned), and the offset of `bytes` in it: for errors
    /// that name where a record's field is. Looks only at segments mapped
    /// already (a record's bytes can only be in one of those): maps
    /// nothing, and never fetches a segment kept in a store.
    pub(crate) fn file_offset(&self, bytes: &[u8]) -> Option<(&Path, u64)> {
        let at = bytes.as_ptr() as usize;
        self.segments.iter().find_map(|s| {
            let map = s.map.mapped_bytes()?;
            let start = map.as_ptr() as usize;
            (start..=start + map.len())
                .contains(&at)
                .then(|| (s.path.as_path(), (at - start) as u64))
        })
    }

    /// The path of the last segment of the view (for messages).
    pub(crate) fn last_segment_path(&self) -> Option<&Path> {
        self.segments.last().map(|s| s.path.as_path())
    }

    /// The visible bytes of each segment, in log order: the memory mappings
    /// records borrow from (for verification tools and benchmarks). Maps
    /// every segment it yields (for as long as the view lives); a segment that
    /// cannot be mapped (or whose file changed length) yields its error,
    /// never an empty or partial slice.
    pub fn segment_bytes(&self) -> impl Iterator<Item = Result<&[u8]>> {
        self.segments.iter().map(|s| s.map.try_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mmap::{Fetch, Fetched};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A segment kept in a store: counts its fetches, and fetches nothing.
    #[derive(Debug, Default)]
    struct Unreachable(AtomicU64);

    // SAFETY: returns no file.
    unsafe impl Fetch for Unreachable {
        fn fetch(&self) -> Result<Fetched> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Error::InvalidArgument("not fetched in this test".into()))
        }
    }

    #[test]
    fn the_file_of_a_records_bytes_is_found_without_mapping_or_fetching_others() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("00000000000000000100.seg");
        std::fs::write(&path, [5u8; 4096]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a file of this test that nothing writes while it is mapped.
        let local = Arc::new(unsafe { Mapping::map(&file, 4096, &path) }.unwrap());
        let fetch = Arc::new(Unreachable::default());
        let segment = |base, map, path: &Path| ViewSegment {
            base,
            path: Arc::new(path.to_owned()),
            map,
            index: Arc::new(IndexCell::new(base, None, None)),
            layout: Layout::V2,
        };
        let cold = segment(
            0,
            Arc::new(Mapping::fetched(fetch.clone(), 1 << 20)),
            Path::new("s3://b/segments/x.seg"),
        );
        let view = LogView::new(vec![segment(100, local.clone(), &path)], 200, None).with_front(vec![cold]);
        let bytes = &local.bytes()[1000..1010];
        assert_eq!(view.file_offset(bytes), Some((path.as_path(), 1000)));
        assert_eq!(view.file_offset(&[1, 2, 3]), None);
        assert_eq!(
            fetch.0.load(Ordering::SeqCst),
            0,
            "a segment of the store was fetched for a message"
        );
    }
}
