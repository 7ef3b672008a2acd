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
use crate::format::{
    FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_SEAL, FrameHeader, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::head;
use crate::index::{Index, IndexCell, MemIndex, NO_ROW, StreamInfo};
use crate::io::read_exact_at;
use crate::mmap::Mapping;
use crate::record::{RecordRef, parse_validated};
use crate::segment::{parse_segment_file_name, segment_file_name, validate_frame};
use crate::streamtable::{STREAM_TABLE_FILE, StreamTable};

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
        let idx = self.index.get(self.map.bytes())?;
        match f(&idx) {
            Ok(t) => Ok((idx, t)),
            Err(d) if matches!(idx, Index::Disk(_)) => self.repinned(d, f),
            Err(d) => Err(d.at(&*self.path)),
        }
    }

    /// The index file is damaged (`d`): switch to the index rebuilt from the
    /// segment and run `f` on it.
    pub(crate) fn repinned<T>(&self, d: Damage, f: impl Fn(&Index) -> Result<T, Damage>) -> Result<(Index, T)> {
        let idx = self.index.damaged(self.map.bytes(), d)?;
        let t = f(&idx).map_err(|d| d.at(&*self.path))?;
        Ok((idx, t))
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
                    let idx = self.index.damaged(self.map.bytes(), d)?;
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
        }
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
        self.segments.iter().map(|s| s.map.bytes().len() as u64).sum()
    }

    /// The visible bytes of each segment, in log order: the memory mappings
    /// records borrow from (for verification tools and benchmarks).
    pub fn segment_bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.segments.iter().map(|s| s.map.bytes())
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
            && (o as usize) < s.map.bytes().len()
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
            let bytes = seg.map.bytes();
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
    active: Option<ActiveRead>,
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
    map: Option<Arc<Mapping>>,
    buf: Vec<u8>,
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
    let n = (len as usize).min(SEGMENT_HEADER_LEN);
    read_exact_at(file, &mut buf[..n], 0).map_err(|e| Error::io("read", path, e))?;
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
    let Ok(file) = crate::io::open_read(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else { return false };
    meta.len() <= SEGMENT_HEADER_LEN as u64 && read_segment_header(&file, path, base).is_err()
}

/// Open a sealed segment: check its header and that it ends with a seal, then
/// map it whole. Returns the segment and the seal's next position.
pub(crate) fn open_sealed(dir: &Path, base: u64) -> Result<(ViewSegment, u64)> {
    let path = dir.join(segment_file_name(base));
    let file = crate::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
    read_segment_header(&file, &path, base)?;
    let map = Mapping::map(
        &file,
        file.metadata().map_err(|e| Error::io("stat", &path, e))?.len(),
        &path,
    )?;
    let bytes = map.bytes();
    let seal_at = bytes.len().saturating_sub(FRAME_HEADER_LEN).max(SEGMENT_HEADER_LEN);
    let seal = validate_frame(&bytes[seal_at..], seal_at as u64, true)
        .and_then(|f| {
            if f.kind == FRAME_KIND_SEAL {
                Ok(f)
            } else {
                Err(Damage::corrupt(
                    seal_at as u64,
                    "expected a seal frame at the end of a sealed segment, found a batch",
                ))
            }
        })
        .map_err(|d| Error::Corrupt {
            path: path.clone(),
            offset: d.offset,
            detail: format!(
                "a segment followed by another must end with a seal (is it truncated?): {}",
                d.detail()
            ),
        })?;
    let idx_path = dir.join(crate::log::index_file_name(base));
    Ok((
        ViewSegment {
            base,
            path: Arc::new(path),
            map: Arc::new(map),
            index: Arc::new(IndexCell::new(base, Some(idx_path), None)),
        },
        seal.first_position,
    ))
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
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refresh and return a view of everything currently visible.
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
            let file = crate::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
            read_segment_header(&file, &path, last)?;
            let index = Arc::new(RwLock::new(MemIndex::default()));
            self.active = Some(ActiveRead {
                base: last,
                path: Arc::new(path),
                file,
                cell: Arc::new(IndexCell::new(last, None, Some(Index::Mem(index.clone())))),
                index,
                validated_end: SEGMENT_HEADER_LEN as u64,
                next_position: last,
                map: None,
                buf: Vec::new(),
            });
        }
        for seg in &self.sealed {
            seg.index.retry_disk(seg.map.bytes());
        }
        let table = match StreamTable::open(&self.dir.join(STREAM_TABLE_FILE)) {
            Ok(t) => t.map(Arc::new),
            // A damaged table is not used: lookups search the indexes.
            Err(_) => None,
        };
        let Some(active) = self.active.as_mut() else {
            return Ok(LogView::new(self.sealed.clone(), self.sealed_next, table));
        };
        let (limit, durable) = match head {
            Some(h) if h.segment_base == last => (h.visible_end, h.durable_end),
            _ => (u64::MAX, 0),
        };
        active.validate(limit, durable)?;
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
        Ok(LogView::new(segs, active.next_position, table))
    }
}

impl ActiveRead {
    /// Validate complete frames from `validated_end` up to `limit` by copying
    /// them. Damage below `durable` is corruption; past it, the writer may be
    /// mid-write (or crashed), so validation stops quietly.
    fn validate(&mut self, limit: u64, durable: u64) -> Result<()> {
        let file_len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &*self.path, e))?
            .len();
        let limit = limit.min(file_len);
        loop {
            let off = self.validated_end;
            if off + FRAME_HEADER_LEN as u64 > limit {
                break;
            }
            let mut hdr = [0u8; FRAME_HEADER_LEN];
            read_exact_at(&self.file, &mut hdr, off).map_err(|e| Error::io("read", &*self.path, e))?;
            let step = FrameHeader::parse(&hdr, off)
                .map(|h| h.frame_len.get())
                .and_then(|len| {
                    // frame_len comes from the file: checked (found by
                    // fuzzing, a frame_len near u64::MAX overflowed).
                    if off.checked_add(len).is_none_or(|end| end > limit) {
                        return Ok(None);
                    }
                    // len <= limit - off <= file length: a checked allocation.
                    self.buf.resize(len as usize, 0);
                    read_exact_at(&self.file, &mut self.buf, off)
                        .map_err(|e| Damage::corrupt(off, format!("read failed: {e}")))?;
                    let f = validate_frame(&self.buf, off, true)?;
                    if f.first_position != self.next_position {
                        return Err(Damage::corrupt(
                            off + 16,
                            format!(
                                "expected a frame starting at position {}, found {}",
                                self.next_position, f.first_position
                            ),
                        ));
                    }
                    Ok(Some(f))
                });
            match step {
                Ok(Some(f)) => {
                    if f.kind == FRAME_KIND_BATCH {
                        self.index
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .add_frame(&self.buf, off);
                    }
                    self.validated_end = off + f.len;
                    self.next_position = f.next_position();
                }
                Ok(None) => break,
                Err(d) if off < durable => return Err(d.at(&*self.path)),
                Err(_) => break,
            }
        }
        if self.validated_end < durable {
            return Err(Error::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.validated_end,
                detail: format!(
                    "the head file says bytes up to {durable} are durable, but complete batches end here                      (the file is {file_len} bytes long): durable data is missing or damaged"
                ),
            });
        }
        Ok(())
    }
}
