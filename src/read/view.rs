//! Reading: consistent views of a log, replay, and readers in other processes.
//!
//! A [`LogView`] is a point-in-time view: the segments visible when it was
//! taken, each held by an `Arc` of its mapping, so records borrowed from a
//! view stay valid for as long as the view lives, whatever the writer does
//! meanwhile. [`LogView::read_all`] replays it: each batch is validated
//! (structure always, CRCs unless disabled) before any of its records is
//! returned, so a reader never returns part of an incomplete batch and never
//! returns a record whose bytes fail their CRC.
//!
//! [`Reader`] gives views to a process that does not hold the writer lock: it
//! learns the visible end from the head file (spec 7) and validates new bytes
//! of the active segment by copying them before mapping them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Damage, Error, Result};
use crate::format::frame::{Frame, validate_frame};
use crate::format::names::LOCK_FILE;
use crate::format::names::{parse_segment_file_name, segment_file_name};
use crate::format::record::{RecordRef, parse_validated};
use crate::format::{
    FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_SEAL, FrameHeader, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::index::streamtable::{STREAM_TABLE_FILE, StreamTable};
use crate::index::{Index, IndexCell, MemIndex, NO_ROW, StreamInfo};
use crate::storage::head;
use crate::storage::io::read_exact_at;
use crate::storage::mmap::Mapping;
use crate::storage::resync::{RESYNC_CHUNK, resync_file};

/// One segment as seen by a view.
#[derive(Debug, Clone)]
pub(crate) struct ViewSegment {
    pub base: u64,
    pub path: Arc<PathBuf>,
    pub map: Arc<Mapping>,
    pub index: Arc<IndexCell>,
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
        let idx = self.index.get(self.bytes()?)?;
        match f(&idx) {
            Ok(t) => Ok((idx, t)),
            Err(d) if matches!(idx, Index::Disk(_)) => self.repinned(d, f),
            Err(d) => Err(d.at(&*self.path)),
        }
    }

    /// The index file is damaged (`d`): switch to the index rebuilt from the
    /// segment and run `f` on it.
    pub(crate) fn repinned<T>(&self, d: Damage, f: impl Fn(&Index) -> Result<T, Damage>) -> Result<(Index, T)> {
        let idx = self.index.damaged(self.bytes()?, d)?;
        let t = f(&idx).map_err(|d| d.at(&*self.path))?;
        Ok((idx, t))
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
                    let idx = self.index.damaged(self.bytes()?, d)?;
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
/// let log = Log::open(dir.path(), Options::default())?;
/// log.append("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}".as_slice())])?;
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
    unrecovered: Option<Unrecovered>,
}

/// Where a [`Reader`]'s view stops vouching for a log that was not cleanly
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

impl LogView {
    pub(crate) fn new(segments: Vec<ViewSegment>, next_position: u64, table: Option<Arc<StreamTable>>) -> LogView {
        LogView {
            segments: segments.into(),
            table,
            next_position,
            unrecovered: None,
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
            path: Path::new(""),
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
    /// The file `batch` lies in.
    path: &'a Path,
    done: bool,
}

impl<'a> ReadAll<'a> {
    fn fail(&mut self, path: &Path, d: Damage) -> Option<Result<RecordRef<'a>>> {
        self.done = true;
        self.batch = &[];
        Some(Err(d.at(path)))
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
                self.done = true;
                self.batch = &[];
                return Some(Err(Error::Corrupt {
                    path: self.path.to_owned(),
                    offset: 0,
                    detail: "a record of a validated batch no longer parses (the file changed under the reader)".into(),
                }));
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
                    32,
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
                    off + 16,
                    format!("expected a frame starting at position {}, found {first}", self.pos),
                );
                return self.fail(&seg.path, d);
            }
            if len > rest.len() as u64 {
                let d = Damage::corrupt(
                    off + 8,
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
                let lines = rest.get(..len as usize).unwrap_or_default().chunks(64);
                std::hint::black_box(lines.fold(0u8, |a, l| a ^ l.first().copied().unwrap_or(0)));
            }
            if let Err(d) = validate_frame(rest, off, self.verify) {
                return self.fail(&seg.path, d);
            }
            // `validate_frame` checked that the frame fits in `rest`.
            self.batch = rest.get(FRAME_HEADER_LEN..len as usize).unwrap_or_default();
            self.path = &seg.path;
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

/// Reads a log without holding the writer lock, from any process.
///
/// Each call to [`Reader::view`] refreshes: it reads the head file to learn
/// what the writer has made visible (with `Durability::Fsync`, only what is
/// durable), validates the new bytes of the active segment by copying them,
/// and maps only what it validated.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    sealed: Vec<ViewSegment>,
    /// Next position after the sealed segments.
    sealed_next: u64,
    /// Boxed: a `Reader` stays small to move around.
    active: Option<Box<ActiveRead>>,
    /// At most this many sealed segments stay mapped between views.
    max_mapped: usize,
}

#[derive(Debug)]
struct ActiveRead {
    base: u64,
    path: Arc<PathBuf>,
    file: File,
    index: Arc<RwLock<MemIndex>>,
    cell: Arc<IndexCell>,
    validated_end: u64,
    next_position: u64,
    /// Largest `durable_end` among the validated frames (spec 5.1, rule 2).
    max_durable: u64,
    /// The file's length at the last validation.
    file_len: u64,
    /// The last resynchronisation scan: (from, file length, its maximum).
    resync: Option<(u64, u64, u64)>,
    /// The last check of the bytes past the visible end: (validated end,
    /// file length) it covered.
    probed: Option<(u64, u64)>,
    map: Option<Arc<Mapping>>,
    buf: Vec<u8>,
}

/// `pread` exactly `buf.len()` bytes at `off` of `path`: an OS failure is
/// [`Error::Io`]; a file that ends first (it shrank under the reader) is
/// [`Error::Corrupt`] at the offset where the bytes are missing.
fn pread(file: &File, buf: &mut [u8], off: u64, path: &Path) -> Result<()> {
    match read_exact_at(file, buf, off) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Corrupt {
            path: path.to_owned(),
            offset: off,
            detail: format!(
                "expected {} bytes here, found the end of the file (it was cut while being read)",
                buf.len()
            ),
        }),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut bases = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Read and check the segment header of `file`.
pub(crate) fn read_segment_header(file: &File, path: &Path, base: u64) -> Result<SegmentHeader> {
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(SEGMENT_HEADER_LEN);
    pread(file, &mut buf[..n], 0, path)?;
    let h = *SegmentHeader::parse(&buf[..n]).map_err(|d| d.at(path))?;
    if h.base_position.get() != base {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: 32,
            detail: format!(
                "expected base_position {base} (from the file name), found {}",
                h.base_position.get()
            ),
        });
    }
    Ok(h)
}

/// The segment file at `path` is no longer than a header and holds no valid
/// header: torn while being created.
fn torn_at_creation(path: &Path, base: u64) -> bool {
    let Ok(file) = crate::storage::io::open_read(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else { return false };
    meta.len() <= SEGMENT_HEADER_LEN as u64 && read_segment_header(&file, path, base).is_err()
}

/// Check the end of a sealed segment of `len` bytes whose last
/// `min(len, 72)` bytes are `tail`: it holds a header and a seal as its last
/// frame. Any length is handled (the file may have been cut, or shrink while
/// being read): no slice is taken unchecked.
fn sealed_segment_seal(len: u64, tail: &[u8]) -> Result<crate::format::frame::Frame, Damage> {
    let min = (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64;
    if len < min || tail.len() < FRAME_HEADER_LEN {
        return Err(Damage::corrupt(
            len,
            format!(
                "expected at least a {SEGMENT_HEADER_LEN}-byte header and a {FRAME_HEADER_LEN}-byte seal ({min} bytes), found a file of {len} bytes"
            ),
        ));
    }
    let seal_at = len - FRAME_HEADER_LEN as u64;
    let f = validate_frame(tail, seal_at, true)?;
    if f.kind != FRAME_KIND_SEAL {
        return Err(Damage::corrupt(
            seal_at,
            "expected a seal frame at the end of a sealed segment, found a batch",
        ));
    }
    Ok(f)
}

/// Open a sealed segment: check its header and that it ends with a seal (by
/// copying those bytes), and give it a mapping made on first use (so opening
/// a log maps nothing of its sealed segments). Returns the segment, the
/// seal's next position and the header.
pub(crate) fn open_sealed_header(dir: &Path, base: u64) -> Result<(ViewSegment, u64, SegmentHeader)> {
    let path = dir.join(segment_file_name(base));
    let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
    let header = read_segment_header(&file, &path, base)?;
    let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    let mut tail = [0u8; FRAME_HEADER_LEN];
    let n = if len >= (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64 {
        pread(&file, &mut tail, len - FRAME_HEADER_LEN as u64, &path)?;
        FRAME_HEADER_LEN
    } else {
        0
    };
    let seal = sealed_segment_seal(len, &tail[..n]).map_err(|d| Error::Corrupt {
        path: path.clone(),
        offset: d.offset,
        detail: format!(
            "a segment followed by another must end with a seal (is it truncated?): {}",
            d.detail()
        ),
    })?;
    let idx_path = dir.join(crate::format::names::index_file_name(base));
    Ok((
        ViewSegment {
            base,
            map: Arc::new(Mapping::lazy(path.clone(), len)),
            path: Arc::new(path),
            index: Arc::new(IndexCell::new(base, Some(idx_path), None)),
        },
        seal.first_position,
        header,
    ))
}

/// [`open_sealed_header`] without the header.
pub(crate) fn open_sealed(dir: &Path, base: u64) -> Result<(ViewSegment, u64)> {
    open_sealed_header(dir, base).map(|(s, n, _)| (s, n))
}

/// Default bound on the sealed segments a [`Reader`] (or the writer) keeps
/// mapped between views.
pub(crate) const DEFAULT_MAX_MAPPED: usize = 512;

static MAX_MAPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_MAPPED);

/// The bound on sealed segments kept mapped between views, for readers opened
/// from now on and for writers (default 512).
pub(crate) fn max_mapped() -> usize {
    MAX_MAPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Set the process-wide bound of [`max_mapped`]. For tests.
#[doc(hidden)]
pub fn set_default_max_mapped_segments(n: usize) {
    MAX_MAPPED.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Keep at most `max` of `sealed` mapped (segment or index file): let go of
/// the least recently mapped others, replacing them by segments that map
/// again on first use. Views taken before keep what they hold.
pub(crate) fn trim_mappings(sealed: &mut [ViewSegment], max: usize) {
    let mut live: Vec<(u64, usize)> = sealed
        .iter()
        .enumerate()
        .filter(|(_, s)| s.map.is_mapped() || s.index.current().is_some())
        .map(|(i, s)| (s.map.mapped_at(), i))
        .collect();
    if live.len() <= max {
        return;
    }
    live.sort_unstable();
    for &(_, i) in &live[..live.len() - max] {
        let s = &mut sealed[i];
        let Some(fresh) = s.map.fresh() else { continue };
        s.map = Arc::new(fresh);
        s.index = Arc::new(s.index.fresh());
    }
}

impl Reader {
    /// Open the log in `dir` for reading. Never modifies anything and never
    /// takes the writer lock.
    pub fn open(dir: impl AsRef<Path>) -> Result<Reader> {
        let dir = dir.as_ref().to_owned();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotALog {
                    path: dir,
                    detail: "it is not a directory".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotALog {
                    path: dir,
                    detail: "it does not exist".into(),
                });
            }
            Err(e) => return Err(Error::io("stat", &dir, e)),
        }
        if list_segments(&dir)?.is_empty() {
            return Err(Error::NotALog {
                path: dir,
                detail: "it holds no segment files (*.seg)".into(),
            });
        }
        Ok(Reader {
            dir,
            sealed: Vec::new(),
            sealed_next: 0,
            active: None,
            max_mapped: max_mapped(),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep at most `n` sealed segments (each with its index file) mapped
    /// between views (default 512): each view maps the segments it reads on
    /// first use, and holds them until it is dropped; this reader lets go of
    /// the least recently mapped beyond `n` when it takes the next view. For
    /// tests.
    #[doc(hidden)]
    pub fn set_max_mapped_segments(&mut self, n: usize) {
        self.max_mapped = n;
    }

    fn trim_mappings(&mut self) {
        trim_mappings(&mut self.sealed, self.max_mapped);
    }

    /// Refresh and return a view of everything currently visible.
    ///
    /// What is visible (spec 7): the segments before the head file's segment
    /// in full, and in the head's segment the complete batches up to the
    /// head's `visible_end`; with no valid head slot, every complete batch.
    /// Every batch of the active segment is validated (by copying it) before
    /// it is delivered.
    ///
    /// Damage is never a quiet end of the log: a batch that is not complete
    /// at an offset `X` below the active segment's durable boundary `B` (spec
    /// 5.1: the largest of 128, the head slot's `durable_end` if it names the
    /// segment, and the `durable_end` of every valid frame header in the
    /// segment, found past the damage by scanning) is [`Error::Corrupt`]
    /// naming the segment, the offset of the damage, `X` and `B`. Past `B` it
    /// is a torn or in-progress write, and the view ends before it.
    ///
    /// If no writer holds the log and it was not cleanly closed nor recovered
    /// since (a crash, a power cut), the files may hold events past what the
    /// head declares, which this view holds back: [`LogView::unrecovered`]
    /// then says from which position on the view cannot vouch for the log.
    /// A writer's [`Log::open`](crate::Log::open) (or `annal check --repair`)
    /// recovers it.
    ///
    /// Sealed segments are mapped when first read; the view keeps what it
    /// mapped until it is dropped, and this reader keeps at most 512 sealed
    /// segments mapped between views.
    pub fn view(&mut self) -> Result<LogView> {
        // The head first: the writer creates a segment before any head slot
        // names it, so every segment the head names is in the listing after.
        let head = head::read(&self.dir)?;
        let bases = list_segments(&self.dir)?;
        if let Some(h) = head
            && bases.binary_search(&h.segment_base).is_err()
        {
            return Err(Error::Corrupt {
                path: self.dir.join(head::HEAD_FILE),
                offset: 24,
                detail: format!(
                    "the head names segment {}, which does not exist",
                    segment_file_name(h.segment_base)
                ),
            });
        }
        // Segments visible: all, or up to the head's segment.
        let mut visible: Vec<u64> = match head {
            Some(h) => bases.iter().copied().filter(|&b| b <= h.segment_base).collect(),
            None => bases.clone(),
        };
        // Without a head to rule it out, a newest segment torn while being
        // created (no whole header: a power cut during a roll) holds nothing;
        // the next writer open rewrites it (spec 6, step 4). Not visible, so
        // that the segments before it stay readable.
        if head.is_none()
            && let [.., _, newest] = visible[..]
            && torn_at_creation(&self.dir.join(segment_file_name(newest)), newest)
        {
            visible.pop();
        }
        let Some((&last, sealed)) = visible.split_last() else {
            return Ok(LogView::new(Vec::new(), 0, None));
        };
        for &base in &sealed[self.sealed.len().min(sealed.len())..] {
            if base != self.sealed_next {
                return Err(Error::Corrupt {
                    path: self.dir.join(segment_file_name(base)),
                    offset: 32,
                    detail: format!(
                        "expected a segment starting at position {}, found {base}",
                        self.sealed_next
                    ),
                });
            }
            let (seg, next) = open_sealed(&self.dir, base)?;
            self.sealed.push(seg);
            self.sealed_next = next;
            if self.active.as_ref().is_some_and(|a| a.base == base) {
                self.active = None;
            }
        }
        if self.active.as_ref().is_none_or(|a| a.base != last) {
            let path = self.dir.join(segment_file_name(last));
            let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
            read_segment_header(&file, &path, last)?;
            let index = Arc::new(RwLock::new(MemIndex::default()));
            self.active = Some(Box::new(ActiveRead {
                base: last,
                path: Arc::new(path),
                file,
                cell: Arc::new(IndexCell::new(last, None, Some(Index::Mem(index.clone())))),
                index,
                validated_end: SEGMENT_HEADER_LEN as u64,
                next_position: last,
                max_durable: SEGMENT_HEADER_LEN as u64,
                file_len: 0,
                resync: None,
                probed: None,
                map: None,
                buf: Vec::new(),
            }));
        }
        for seg in &self.sealed {
            if seg.index.is_missing()
                && let Ok(bytes) = seg.bytes()
            {
                seg.index.retry_disk(bytes);
            }
        }
        self.trim_mappings();
        let table = match StreamTable::open(&self.dir.join(STREAM_TABLE_FILE)) {
            Ok(t) => t.map(Arc::new),
            // A damaged table is not used: lookups search the indexes.
            Err(_) => None,
        };
        let newest = bases.last().copied();
        let Some(active) = self.active.as_mut() else {
            return Ok(LogView::new(self.sealed.clone(), self.sealed_next, table));
        };
        // Spec 5.1 rule 3: the head's current slot counts if it names the
        // active segment (whether it is the newer slot or, the newer one
        // being torn, the older).
        let (limit, head_durable) = match head {
            Some(h) if h.segment_base == last => (h.visible_end, h.durable_end),
            _ => (u64::MAX, 0),
        };
        active.validate(limit, head_durable)?;
        // Bytes past the visible end with no writer to account for them (a
        // crash left the head behind): damage there below the durable
        // boundary is corruption too, found by checking them (not
        // delivered).
        let mut writer: Option<bool> = None;
        if active.file_len > active.validated_end {
            let held = crate::storage::io::lock_held(&self.dir.join(LOCK_FILE));
            writer = Some(held);
            if !held {
                active.probe_past_visible(head_durable)?;
            }
        }
        let mut segs = self.sealed.clone();
        let map = match &active.map {
            Some(m) if m.bytes().len() as u64 == active.validated_end => m.clone(),
            _ => {
                let m = Arc::new(Mapping::map(&active.file, active.validated_end, &active.path)?);
                active.map = Some(m.clone());
                m
            }
        };
        segs.push(ViewSegment {
            base: active.base,
            path: active.path.clone(),
            map,
            index: active.cell.clone(),
        });
        let mut view = LogView::new(segs, active.next_position, table);
        view.unrecovered = self.unrecovered(head, newest, view.next_position, writer)?;
        Ok(view)
    }

    /// The not-yet-recovered signal of a view just taken (see
    /// [`LogView::unrecovered`]): `head` is the head's current slot, `newest`
    /// the newest segment file, `position` the view's next position.
    fn unrecovered(
        &self,
        head: Option<head::Head>,
        newest: Option<u64>,
        position: u64,
        writer: Option<bool>,
    ) -> Result<Option<Unrecovered>> {
        let Some(active) = self.active.as_ref() else {
            return Ok(None);
        };
        let head_names_active = head.is_some_and(|h| h.segment_base == active.base);
        // Bytes past what the view delivers in the segment it reads last, or
        // no head slot vouching for that segment while it holds frames.
        let mut doubt = (active.file_len > active.validated_end
            || (!head_names_active && active.file_len > SEGMENT_HEADER_LEN as u64))
            .then(|| (active.path.to_path_buf(), active.validated_end));
        // A newer segment the (stale) head does not name yet, holding frames.
        if doubt.is_none()
            && let Some(n) = newest.filter(|&n| n > active.base)
        {
            let path = self.dir.join(segment_file_name(n));
            let len = match std::fs::symlink_metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(Error::io("stat", &path, e)),
            };
            if len > SEGMENT_HEADER_LEN as u64 {
                doubt = Some((path, SEGMENT_HEADER_LEN as u64));
            }
        }
        let Some((segment, offset)) = doubt else {
            return Ok(None);
        };
        // Probed last: a writer that took the lock since recovered the log
        // (or is appending, which is normal).
        if writer.unwrap_or_else(|| crate::storage::io::lock_held(&self.dir.join(LOCK_FILE))) {
            return Ok(None);
        }
        Ok(Some(Unrecovered {
            segment,
            offset,
            position,
        }))
    }
}

/// One step of the copy-validating walk of the active segment.
enum Step {
    /// A complete, valid frame (copied into the buffer), and its end offset.
    Frame(Frame, u64),
    /// The frame at the offset runs past `end`: not visible yet.
    NotVisible,
    /// The frame at the offset is not complete (spec 3.1, 3.3).
    Damaged(Damage),
}

/// Copy the frame at `off` of the active segment into `buf` (never through a
/// mapping: spec 7) and validate it: its header first, from the file alone
/// (a frame header cut by the end of the file, or failing the header checks
/// of spec 3.1, `frame_len` at most `MAX_FRAME_LEN` among them, is damage
/// before anything is allocated), then its body, CRCs and the position it
/// must start at (`next`). A frame that fits in the file but ends past `end`
/// (the head's visible end) is [`Step::NotVisible`].
fn copy_frame(
    file: &File,
    path: &Path,
    buf: &mut Vec<u8>,
    off: u64,
    end: u64,
    file_len: u64,
    next: u64,
) -> Result<Step> {
    let Some(hdr_end) = off.checked_add(FRAME_HEADER_LEN as u64).filter(|&e| e <= file_len) else {
        return Ok(Step::Damaged(Damage::corrupt(
            off,
            format!(
                "expected a {FRAME_HEADER_LEN}-byte frame header, found {} bytes before the end of the file",
                file_len.saturating_sub(off)
            ),
        )));
    };
    if hdr_end > end {
        return Ok(Step::NotVisible);
    }
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    pread(file, &mut hdr, off, path)?;
    let len = match FrameHeader::parse(&hdr, off) {
        Ok(h) => h.frame_len.get(),
        Err(d) => return Ok(Step::Damaged(d)),
    };
    let Some(frame_end) = off.checked_add(len).filter(|&e| e <= file_len) else {
        return Ok(Step::Damaged(Damage::corrupt(
            off + 8,
            format!(
                "frame_len {len} runs past the end of the file ({} bytes remain)",
                file_len.saturating_sub(off)
            ),
        )));
    };
    if frame_end > end {
        return Ok(Step::NotVisible);
    }
    // `FrameHeader::parse` checked len <= MAX_FRAME_LEN: a bounded allocation.
    let Ok(len_usize) = usize::try_from(len) else {
        return Ok(Step::Damaged(Damage::corrupt(
            off + 8,
            format!("frame_len {len} cannot be held in memory"),
        )));
    };
    buf.resize(len_usize, 0);
    pread(file, buf, off, path)?;
    let f = match validate_frame(buf, off, true) {
        Ok(f) => f,
        Err(d) => return Ok(Step::Damaged(d)),
    };
    if f.first_position != next {
        return Ok(Step::Damaged(Damage::corrupt(
            off + 16,
            format!(
                "expected a frame starting at position {next}, found {}",
                f.first_position
            ),
        )));
    }
    Ok(Step::Frame(f, frame_end))
}

impl ActiveRead {
    /// Validate complete frames from `validated_end` up to `limit` (the
    /// head's `visible_end`, or no limit) by copying them. A frame that is not
    /// complete at offset `X` below the durable boundary `B` (spec 5.1: the
    /// largest of 128, `head_durable` and the `durable_end` of every valid
    /// frame header in the file, found past the damage by resynchronisation)
    /// is corruption; at or past `B` it is a torn or in-progress write, and
    /// validation stops there quietly.
    fn validate(&mut self, limit: u64, head_durable: u64) -> Result<()> {
        let file_len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &*self.path, e))?
            .len();
        self.file_len = file_len;
        let end = limit.min(file_len);
        let stop = loop {
            let off = self.validated_end;
            if off >= end {
                break None;
            }
            let (f, frame_end) = match copy_frame(
                &self.file,
                &self.path,
                &mut self.buf,
                off,
                end,
                file_len,
                self.next_position,
            )? {
                Step::Frame(f, frame_end) => (f, frame_end),
                Step::NotVisible => break None,
                Step::Damaged(d) => break Some(d),
            };
            if f.kind == FRAME_KIND_BATCH {
                self.index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .add_frame(&self.buf, off);
            }
            self.validated_end = frame_end;
            self.next_position = f.next_position();
            self.max_durable = self.max_durable.max(f.durable_end);
        };
        // Large buffers are not kept between refreshes.
        if self.buf.capacity() > RESYNC_CHUNK as usize {
            self.buf = Vec::new();
        }
        if let Some(d) = stop {
            let x = self.validated_end;
            let boundary = self.boundary(x, head_durable, self.max_durable, file_len)?;
            if x < boundary {
                return Err(Error::Corrupt {
                    path: self.path.to_path_buf(),
                    offset: d.offset,
                    detail: format!(
                        "{}; the damaged frame starts at byte {x}, below the durable boundary at byte {boundary}, \
                         so this is damage to durable data, not a torn write (the events from position {} on \
                         cannot be read)",
                        d.detail(),
                        self.next_position
                    ),
                });
            }
        }
        if self.validated_end < head_durable {
            return Err(Error::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.validated_end,
                detail: format!(
                    "the head file says bytes up to {head_durable} are durable, but complete batches end here \
                     (the file is {file_len} bytes long): durable data is missing or damaged"
                ),
            });
        }
        Ok(())
    }

    /// With no writer holding the log: check the frames past the visible end
    /// (which are not delivered) as [`ActiveRead::validate`] checks those
    /// before it, so that damage below the durable boundary there is
    /// reported too, not hidden behind a head file a crash left behind. The
    /// result is kept until the visible end or the file's length changes.
    fn probe_past_visible(&mut self, head_durable: u64) -> Result<()> {
        let file_len = self.file_len;
        if self.probed == Some((self.validated_end, file_len)) {
            return Ok(());
        }
        let (mut off, mut next, mut max_durable) = (self.validated_end, self.next_position, self.max_durable);
        let mut buf = Vec::new();
        let stop = loop {
            if off >= file_len {
                break None;
            }
            let (f, frame_end) = match copy_frame(&self.file, &self.path, &mut buf, off, file_len, file_len, next)? {
                Step::Frame(f, frame_end) => (f, frame_end),
                // `end` is the file's length: every frame that fits is visible.
                Step::NotVisible => break None,
                Step::Damaged(d) => break Some(d),
            };
            max_durable = max_durable.max(f.durable_end);
            next = f.next_position();
            off = frame_end;
        };
        if let Some(d) = stop {
            let boundary = self.boundary(off, head_durable, max_durable, file_len)?;
            if off < boundary {
                return Err(Error::Corrupt {
                    path: self.path.to_path_buf(),
                    offset: d.offset,
                    detail: format!(
                        "{}; the damaged frame starts at byte {off}, past the end the head file declares visible \
                         ({}) but below the durable boundary at byte {boundary}, so this is damage to durable data \
                         in a log that was not recovered (the events from position {next} on cannot be read)",
                        d.detail(),
                        self.validated_end
                    ),
                });
            }
        }
        self.probed = Some((self.validated_end, file_len));
        Ok(())
    }

    /// The durable boundary B (spec 5.1) for an incomplete frame at `x`: the
    /// largest of 128, the head's `durable_end` and that of every frame walked
    /// (`walked`); only if `x` is not already below those is the rest of the
    /// file scanned for frame headers past the damage.
    fn boundary(&mut self, x: u64, head_durable: u64, walked: u64, file_len: u64) -> Result<u64> {
        let known = (SEGMENT_HEADER_LEN as u64).max(head_durable).max(walked);
        if x < known {
            return Ok(known);
        }
        Ok(known.max(self.resync(x, file_len)?))
    }

    /// The largest `durable_end` of a valid frame header at or past `from`
    /// (spec 6, resynchronisation), read by copying the file in bounded
    /// pieces: memory stays at one piece whatever the file's length. The
    /// result is kept until the file's length or `from` changes.
    fn resync(&mut self, from: u64, file_len: u64) -> Result<u64> {
        if let Some((f, l, best)) = self.resync
            && f == from
            && l == file_len
        {
            return Ok(best);
        }
        let best = resync_file(&self.file, &self.path, from, file_len)?;
        self.resync = Some((from, file_len, best));
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventData, ExpectedVersion, Log, Options};

    /// A sealed segment's bytes of any length (a file cut, or shrinking
    /// between the header check and the mapping) give damage naming an
    /// offset inside them, never a panic; only the whole segment passes.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn sealed_segment_bytes_of_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default().segment_size(600)).unwrap();
        for i in 0..8u8 {
            log.append("s", ExpectedVersion::Any, &[EventData::new("E", vec![i; 100])])
                .unwrap();
        }
        log.close().unwrap();
        let bytes = std::fs::read(dir.path().join(segment_file_name(0))).unwrap();
        assert!(bytes.len() > 300);
        let tail = |len: usize| &bytes[len.saturating_sub(FRAME_HEADER_LEN)..len];
        assert!(sealed_segment_seal(bytes.len() as u64, tail(bytes.len())).is_ok());
        for len in 0..bytes.len() {
            let d = sealed_segment_seal(len as u64, tail(len)).unwrap_err();
            assert!(d.offset <= len as u64, "{len}: {d:?}");
        }
    }
}
