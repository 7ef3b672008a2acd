//! The index of one segment as readers see it: [`IndexCell`] opens the
//! `.idx` file lazily and, if it is missing or damaged, replaces it by an
//! index rebuilt from the segment (recording the damage, and telling the
//! writer, which rewrites the file), so reads stay correct; [`Index`] is the
//! one interface over the in-memory and the on-disk form.
//!
//! Invariants: an I/O failure opening the file is returned as `Error::Io` and
//! nothing is rebuilt or rewritten because of it; every error names a file
//! (the index file, or the segment it describes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::error::{Damage, Error};
use crate::format::IDX_HEADER_LEN;
use crate::index::{IdxFile, Layered, MemIndex, NO_ROW, Named, StreamInfo};
use crate::storage::mmap::{Fetch, Mapping, Pin};

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// A segment's index as readers use it.
#[derive(Debug, Clone)]
pub(crate) enum Index {
    Mem(Arc<RwLock<MemIndex>>),
    Disk(Arc<IdxFile>),
    /// An active segment's index checkpoints and in-memory tail (spec 17.5).
    Layered(Arc<Layered>),
}

/// The index of one segment, shared by every view of it.
#[derive(Debug)]
pub(crate) struct IndexCell {
    /// The `.idx` path (sealed segments) or `None` (active segment).
    path: Option<PathBuf>,
    base: u64,
    state: RwLock<Option<Index>>,
    /// Damage found in the index file (reported; the index was rebuilt).
    damage: Mutex<Option<Error>>,
    /// The writer rewrote the file after the damage.
    rewritten: AtomicBool,
    /// The index in use was rebuilt because the file did not exist.
    missing: AtomicBool,
    /// Counter the writer watches: bumped when damage is found.
    notify: OnceLock<Arc<AtomicU64>>,
    /// The index file is fetched into a local cache, not in the log
    /// directory (a sealed segment kept in an object store, spec 23.7).
    fetched: Option<FetchedIndex>,
    /// The segment this index describes, in messages, when it is not the
    /// file beside the index file (`segment_path`): an object of a store.
    segment: Option<PathBuf>,
    /// Streams known to be in none of the segments of the run this one
    /// belongs to (the segments a store holds in front of a log
    /// directory's, spec 23.7), shared by every cell of the run.
    absent: Option<Arc<KnownAbsent>>,
}

/// Streams known to be in none of a run of immutable segments below a
/// position (the sealed segments a store holds in front of a log
/// directory's, spec 23.7): a stream the stream table does not know is
/// looked for in them once, not at every read. Valid because those
/// segments never change (compaction only removes events) and the run only
/// grows at its end; bounded: forgotten all at once beyond
/// [`KnownAbsent::MAX`] names.
#[derive(Debug, Default)]
pub(crate) struct KnownAbsent {
    /// Stream name -> the position below which no segment of the run holds
    /// it.
    below: Mutex<HashMap<Box<str>, u64>>,
}

impl KnownAbsent {
    /// Names remembered at most.
    pub(crate) const MAX: usize = 1 << 16;

    /// The position below which no segment of the run holds `name` (0:
    /// nothing known).
    pub(crate) fn below(&self, name: &str) -> u64 {
        self.lock().get(name).copied().unwrap_or(0)
    }

    /// No segment of the run below position `end` (a segment boundary)
    /// holds `name`.
    pub(crate) fn record(&self, name: &str, end: u64) {
        let mut m = self.lock();
        if m.len() >= Self::MAX && !m.contains_key(name) {
            m.clear();
        }
        let e = m.entry(name.into()).or_default();
        *e = (*e).max(end);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, u64>> {
        self.below.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a fetched index file comes from and what it must describe.
#[derive(Debug)]
struct FetchedIndex {
    fetch: Arc<dyn Fetch>,
    segment_len: u64,
    seal_crc: u32,
    /// Keeps the fetched copy in its cache while the index is open.
    pin: OnceLock<Pin>,
}

impl IndexCell {
    /// A cell for the segment based at `base` whose index file is `path`
    /// (`None` for the active segment, whose index lives only in memory),
    /// holding `index` or, if `None`, opening the file on first use.
    pub(crate) fn new(base: u64, path: Option<PathBuf>, index: Option<Index>) -> IndexCell {
        IndexCell {
            path,
            base,
            state: RwLock::new(index),
            damage: Mutex::new(None),
            rewritten: AtomicBool::new(false),
            missing: AtomicBool::new(false),
            notify: OnceLock::new(),
            fetched: None,
            segment: None,
            absent: None,
        }
    }

    /// A cell for the sealed segment `segment` (its name in messages: an
    /// object of a store) based at `base`, `segment_len` bytes long and
    /// sealed by a seal whose CRC is `seal_crc`, whose index file `fetch`
    /// brings into a local cache on first use ([`IndexCell::get_fetched`]:
    /// no byte of the segment is needed to open it). `name` names the index
    /// file in messages.
    #[cfg(feature = "remote")]
    pub(crate) fn fetched(
        base: u64,
        name: PathBuf,
        segment: PathBuf,
        fetch: Arc<dyn Fetch>,
        segment_len: u64,
        seal_crc: u32,
    ) -> IndexCell {
        let mut cell = IndexCell::new(base, Some(name), None);
        cell.fetched = Some(FetchedIndex {
            fetch,
            segment_len,
            seal_crc,
            pin: OnceLock::new(),
        });
        cell.segment = Some(segment);
        cell
    }

    /// A cell for the sealed segment `segment` (its name in messages: an
    /// object of a store) based at `base`, which has no index file: the
    /// index is built from the segment's bytes on first use.
    #[cfg(feature = "remote")]
    pub(crate) fn unindexed(base: u64, segment: PathBuf) -> IndexCell {
        let mut cell = IndexCell::new(base, None, None);
        cell.segment = Some(segment);
        cell
    }

    /// The cell, one of the run of segments `other` belongs to (whose
    /// absent streams its [`KnownAbsent`] remembers), or the first of a new
    /// run if `other` is `None` or in none.
    #[cfg(feature = "remote")]
    pub(crate) fn in_run_of(mut self, other: Option<&IndexCell>) -> IndexCell {
        let run = other.and_then(|o| o.absent.clone()).unwrap_or_default();
        self.absent = Some(run);
        self
    }

    /// The streams known absent from the run of segments this cell's
    /// belongs to ([`IndexCell::in_run`]).
    pub(crate) fn known_absent(&self) -> Option<&Arc<KnownAbsent>> {
        self.absent.as_ref()
    }

    /// The index file (for messages; `None`: the index lives in memory, or
    /// is built from the segment).
    pub(crate) fn file(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the index file is fetched into a cache
    /// ([`IndexCell::fetched`]).
    pub(crate) fn is_fetched(&self) -> bool {
        self.fetched.is_some()
    }

    /// The index of a cell made by [`IndexCell::fetched`], fetching and
    /// opening the file on first use without the segment's bytes:
    /// `Ok(Err(damage))` if the file is damaged (then [`IndexCell::get`]
    /// with the segment rebuilds it and records the damage); an error to
    /// fetch or open it is returned as such.
    pub(crate) fn get_fetched(&self) -> Result<Result<Index, Damage>, Error> {
        if let Some(i) = lock_read(&self.state).as_ref() {
            return Ok(Ok(i.clone()));
        }
        let mut st = lock_write(&self.state);
        if let Some(i) = st.as_ref() {
            return Ok(Ok(i.clone()));
        }
        match self.open_fetched()? {
            Ok(idx) => {
                *st = Some(idx.clone());
                Ok(Ok(idx))
            }
            Err(d) => Ok(Err(d)),
        }
    }

    /// Fetch and open the index file of a fetched cell: the copy the fetch
    /// opened, mapped (not reopened by its name).
    fn open_fetched(&self) -> Result<Result<Index, Damage>, Error> {
        let Some(f) = &self.fetched else {
            return Err(Error::InvalidArgument("not an index fetched into a cache".into()));
        };
        let got = f.fetch.fetch()?;
        let len = got.file.metadata().map_err(|e| Error::io("stat", &got.path, e))?.len();
        // SAFETY: a `Fetch` returns a private copy, written whole before it
        // was named and never written again, kept in its cache while its
        // pin is held (mmap module, case 6): the pin is kept below for as
        // long as the index opened from this mapping is the cell's.
        let map = unsafe { Mapping::map(&got.file, len, &got.path) }?;
        // Opening reads the footer and the block CRC table, at the end.
        let tail = crate::index::blockfile::tail_len(len);
        map.prefetch(len - tail, tail);
        let opened = crate::index::blockfile::BlockFile::from_bytes(map, crate::format::IDX_MAGIC)
            .and_then(|bf| IdxFile::open(bf, self.base, f.segment_len, f.seal_crc));
        match opened {
            Ok(file) => {
                let _ = f.pin.set(got.pin);
                Ok(Ok(Index::Disk(Arc::new(file))))
            }
            Err(d) if d.is_io() => Err(d.at(&got.path)),
            Err(d) => Ok(Err(d)),
        }
    }

    /// Have `counter` bumped whenever damage is found in this index (the
    /// writer then rewrites the file).
    pub(crate) fn notify(&self, counter: &Arc<AtomicU64>) {
        let _ = self.notify.set(counter.clone());
    }

    /// If the index in use was rebuilt because its file did not exist, and
    /// the file exists now, switch to it (frees the in-memory index).
    pub(crate) fn retry_disk(&self, segment: &[u8]) {
        if !self.missing.load(Ordering::Acquire) {
            return;
        }
        if let Some(p) = &self.path
            && let Ok(Some(f)) = IdxFile::open_for(p, self.base, segment)
        {
            self.set(Index::Disk(Arc::new(f)));
            self.missing.store(false, Ordering::Release);
        }
    }

    /// Whether the index in use was rebuilt because its file did not exist
    /// (so [`IndexCell::retry_disk`] may switch to the file).
    pub(crate) fn is_missing(&self) -> bool {
        self.missing.load(Ordering::Acquire)
    }

    /// A cell for the same segment and index file holding nothing yet (it
    /// opens the file on first use): for a cache that lets go of this one's
    /// mapping. Damage found in this cell is not carried over (the file is
    /// checked again when opened); the writer's notification is.
    pub(crate) fn fresh(&self) -> IndexCell {
        let mut cell = IndexCell::new(self.base, self.path.clone(), None);
        cell.fetched = self.fetched.as_ref().map(|f| FetchedIndex {
            fetch: f.fetch.clone(),
            segment_len: f.segment_len,
            seal_crc: f.seal_crc,
            pin: OnceLock::new(),
        });
        cell.segment = self.segment.clone();
        cell.absent = self.absent.clone();
        if let Some(n) = self.notify.get() {
            cell.notify(n);
        }
        cell
    }

    /// The index file was rewritten from the in-memory index now in use.
    pub(crate) fn mark_rewritten(&self) {
        self.rewritten.store(true, Ordering::Release);
    }

    /// Replace the index in use (the writer, once it wrote the file).
    pub(crate) fn set(&self, index: Index) {
        *lock_write(&self.state) = Some(index);
    }

    /// The index, opening the file on first use; a missing or damaged file is
    /// replaced by an index rebuilt from `segment` (and the damage recorded).
    pub(crate) fn get(&self, segment: &[u8]) -> Result<Index, Error> {
        if let Some(i) = lock_read(&self.state).as_ref() {
            return Ok(i.clone());
        }
        let mut st = lock_write(&self.state);
        if let Some(i) = st.as_ref() {
            return Ok(i.clone());
        }
        let idx = match &self.path {
            Some(p) if self.fetched.is_some() => match self.open_fetched()? {
                Ok(idx) => idx,
                Err(d) => self.rebuilt(p, segment, Some(d))?,
            },
            Some(p) => match IdxFile::open_for(p, self.base, segment) {
                Ok(Some(f)) => Index::Disk(Arc::new(f)),
                Ok(None) => self.rebuilt(p, segment, None)?,
                // Not damage: the file may well be intact (EMFILE, ENOMEM,
                // ...). Reported as such, and nothing is rebuilt or rewritten.
                Err(d) if d.is_io() => return Err(d.at(p)),
                Err(d) => self.rebuilt(p, segment, Some(d))?,
            },
            None => {
                // Live cells are created with their index; nothing to open.
                let mem = MemIndex::rebuild(segment).map_err(|d| d.at(self.segment_path()))?;
                Index::Mem(Arc::new(RwLock::new(mem)))
            }
        };
        *st = Some(idx.clone());
        Ok(idx)
    }

    /// Whether the index is open (or built) already.
    pub(crate) fn is_open(&self) -> bool {
        lock_read(&self.state).is_some()
    }

    /// Ask the kernel for what opening the index file reads (its header
    /// page, its block CRC table and footer) and, with `row`, for the page
    /// of stream row `row` (taken to be `row_len` bytes, as in the index
    /// files of the segments after it), without waiting; nothing if the
    /// index is open already, and for an index file kept in a store (its
    /// name is no local path: the file is fetched when first used). A hint.
    pub(crate) fn prefetch_file(&self, row: Option<(u32, usize)>) {
        if let Some(p) = &self.path
            && self.fetched.is_none()
            && !self.is_open()
        {
            let _ = crate::storage::io::advise_will_need(p, |len| {
                let tail = crate::index::blockfile::tail_len(len);
                let row = row.map_or((0, 0), |(r, l)| ((IDX_HEADER_LEN + r as usize * l) as u64, l as u64));
                [(0, 4096), (len - tail, tail), row]
            });
        }
    }

    /// Rebuild from the segment; `damage`: what was wrong with the file
    /// (`None`: it does not exist).
    fn rebuilt(&self, path: &Path, segment: &[u8], damage: Option<Damage>) -> Result<Index, Error> {
        let seg_path = self.segment_path();
        let mem = MemIndex::rebuild(segment).map_err(|d| d.at(&seg_path))?;
        if let Some(d) = damage {
            crate::trace::event!(WARN, file = %path.display(), offset = d.offset, why = %d.detail(),
                "annal found an index file damaged; its segment's index is rebuilt in memory");
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.at(path));
            if let Some(n) = self.notify.get() {
                n.fetch_add(1, Ordering::AcqRel);
            }
        } else {
            // Not written yet (a reader racing the writer's sealer) or
            // deleted (the writer rebuilds it when it opens the log): not
            // damage; `retry_disk` picks the file up once it exists.
            self.missing.store(true, Ordering::Release);
        }
        Ok(Index::Mem(Arc::new(RwLock::new(mem))))
    }

    /// Replace a disk index found damaged while in use by one rebuilt from
    /// `segment` (the file `segment_path`, named in errors: an in-memory
    /// index has no file to rebuild, so its damage is the error).
    pub(crate) fn damaged(&self, segment_path: &std::path::Path, segment: &[u8], d: Damage) -> Result<Index, Error> {
        let Some(p) = self.path.clone() else {
            // The active segment: damage of its index checkpoints (spec
            // 17.5) replaces them by an index rebuilt from the bytes they
            // cover; an index built from the segment itself cannot be wrong.
            if let Some(Index::Layered(l)) = self.current()
                && l.base_on_disk()
            {
                let covered = segment.get(..l.base_end as usize).unwrap_or(segment);
                let rebuilt = MemIndex::rebuild(covered).map_err(|e| e.at(segment_path))?;
                l.replace_base(rebuilt);
                let file = l.files.last().cloned().unwrap_or_else(|| segment_path.to_owned());
                crate::trace::event!(WARN, file = %file.display(), offset = d.offset, why = %d.detail(),
                    "annal found an index checkpoint damaged; the index it covers is rebuilt in memory");
                *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.at(file));
                if let Some(n) = self.notify.get() {
                    n.fetch_add(1, Ordering::AcqRel);
                }
                return Ok(Index::Layered(l));
            }
            return Err(d.at(segment_path));
        };
        let idx = self.rebuilt(&p, segment, Some(d))?;
        *lock_write(&self.state) = Some(idx.clone());
        Ok(idx)
    }

    /// The segment file this index describes (for messages): the object
    /// a store holds it in, else beside the index file, or, for the active
    /// segment's cell (no index file), its name alone, the directory being
    /// unknown here.
    fn segment_path(&self) -> PathBuf {
        match (&self.segment, &self.path) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => p.with_extension("seg"),
            (None, None) => PathBuf::from(crate::format::names::segment_file_name(self.base)),
        }
    }

    /// The damage found in this segment's index file, if any.
    pub(crate) fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string())
    }

    /// Whether the index in use was rebuilt (its file is damaged or missing).
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.damage.lock().unwrap_or_else(|p| p.into_inner()).is_some() && !self.rewritten.load(Ordering::Acquire)
    }

    /// The index currently in use, if one was loaded.
    pub(crate) fn current(&self) -> Option<Index> {
        lock_read(&self.state).clone()
    }
}

impl Index {
    /// Whether damage found in this index is damage of files (which a
    /// rebuild from the segment replaces), not of the segment.
    pub(crate) fn is_from_files(&self) -> bool {
        match self {
            Index::Disk(_) => true,
            Index::Mem(_) => false,
            Index::Layered(l) => l.base_on_disk(),
        }
    }

    /// Find a stream in this segment.
    pub(crate) fn find_stream(&self, name: &str) -> Result<Option<StreamInfo>, Damage> {
        match self {
            Index::Disk(f) => f.find_stream(name),
            Index::Mem(m) => Ok(lock_read(m).streams.get(name).map(|s| StreamInfo {
                row: NO_ROW,
                first_version: s.first_version,
                last_version: s.last_version,
                entry_start: 0,
                entry_count: s.entries.len() as u32,
                prev: None,
            })),
            Index::Layered(l) => l.find_stream(name),
        }
    }

    /// A stream by its row (disk) or name (memory).
    pub(crate) fn stream_at(&self, row: u32, name: &str) -> Result<Option<StreamInfo>, Damage> {
        match self {
            Index::Disk(f) if row != NO_ROW => match f.stream_at(row, name)? {
                Some(i) => Ok(Some(i)),
                None => f.find_stream(name),
            },
            _ => self.find_stream(name),
        }
    }

    /// Ask the kernel for the pages holding entries `[from, from + max)` of
    /// the stream described by `s` (index files only: an index in memory
    /// needs no pages). A hint: nothing is read or checked.
    pub(crate) fn prefetch_stream_entries(&self, s: &StreamInfo, from: u32, max: u32) {
        if let Index::Disk(f) = self {
            f.prefetch_stream_entries(s, from, max);
        }
    }

    /// [`Index::stream_at`], comparing the row's hash rather than its name
    /// ([`IdxFile::stream_at_hash`]); a row with another hash is searched by
    /// name.
    pub(crate) fn stream_at_hash(&self, row: u32, name: &str) -> Result<Option<StreamInfo>, Damage> {
        match self {
            Index::Disk(f) if row != NO_ROW => match f.stream_at_hash(row, name)? {
                Some(i) => Ok(Some(i)),
                None => f.find_stream(name),
            },
            _ => self.find_stream(name),
        }
    }

    /// The length of a stream row of the index file (`None` for an index in
    /// memory).
    pub(crate) fn stream_row_len(&self) -> Option<usize> {
        match self {
            Index::Disk(f) => Some(f.stream_row_len()),
            _ => None,
        }
    }

    /// Ask the kernel for the rows where a search for `name` looks first
    /// (index files only). A hint: nothing is read or checked.
    pub(crate) fn prefetch_stream_row(&self, name: &str) {
        match self {
            Index::Disk(f) => f.prefetch_stream_row(name),
            Index::Layered(l) => l.base().iter().for_each(|b| b.prefetch_stream_row(name)),
            Index::Mem(_) => {}
        }
    }

    /// Entry `i` of stream `name` described by `s`.
    pub(crate) fn stream_entry(&self, name: &str, s: &StreamInfo, i: u32) -> Result<Option<(u64, u64)>, Damage> {
        match self {
            Index::Disk(f) => {
                if i < s.entry_count {
                    f.stream_entry(s, i).map(Some)
                } else {
                    Ok(None)
                }
            }
            Index::Mem(m) => Ok(lock_read(m)
                .streams
                .get(name)
                .and_then(|st| st.entries.get(i as usize).copied())),
            Index::Layered(l) => l.stream_entry(name, i),
        }
    }

    /// Number of entries of a category or type, and a handle to read them.
    pub(crate) fn find_named(&self, kind: Named, name: &str) -> Result<Option<(u32, u32)>, Damage> {
        match self {
            Index::Disk(f) => f.find_named(kind, name),
            Index::Mem(m) => {
                let g = lock_read(m);
                let map = match kind {
                    Named::Category => &g.categories,
                    Named::Type => &g.types,
                };
                Ok(map.get(name).map(|v| (0, v.len() as u32)))
            }
            Index::Layered(l) => l.find_named(kind, name),
        }
    }

    /// Entry `start + i` of a category or type.
    pub(crate) fn named_entry(&self, kind: Named, name: &str, start: u32, i: u32) -> Result<Option<u64>, Damage> {
        match self {
            Index::Disk(f) => f.named_entry(kind, start + i).map(Some),
            Index::Mem(m) => {
                let g = lock_read(m);
                let map = match kind {
                    Named::Category => &g.categories,
                    Named::Type => &g.types,
                };
                Ok(map.get(name).and_then(|v| v.get(i as usize).copied()))
            }
            Index::Layered(l) => l.named_entry(kind, name, start + i),
        }
    }

    /// Number of batches.
    pub(crate) fn frame_count(&self) -> u32 {
        match self {
            Index::Disk(f) => f.frame_count(),
            Index::Mem(m) => lock_read(m).frames.len() as u32,
            Index::Layered(l) => l.frame_count(),
        }
    }

    /// Batch `i`: `(first_position, frame_offset)`.
    pub(crate) fn frame(&self, i: u32) -> Result<Option<(u64, u64)>, Damage> {
        match self {
            Index::Disk(f) => {
                if i < f.frame_count() {
                    f.frame(i).map(Some)
                } else {
                    Ok(None)
                }
            }
            Index::Mem(m) => Ok(lock_read(m).frames.get(i as usize).copied()),
            Index::Layered(l) => l.frame(i),
        }
    }
}

#[cfg(all(test, feature = "remote"))]
mod tests {
    use super::*;
    use crate::storage::mmap::Fetched;

    /// Fetches a file of the test (never written while mapped), counting.
    #[derive(Debug)]
    struct FileFetch(PathBuf, AtomicU64);

    // SAFETY: the test's file is written before it is fetched, never again.
    unsafe impl Fetch for FileFetch {
        fn fetch(&self) -> Result<Fetched, Error> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let file = std::fs::File::open(&self.0).map_err(|e| Error::io("open", &self.0, e))?;
            Ok(Fetched {
                file,
                path: self.0.clone(),
                pin: Arc::new(()),
            })
        }
    }

    const SEG: &str = "s3://b/log/segments/00000000000000000000-aaaa.seg";
    const IDX: &str = "s3://b/log/segments/00000000000000000000-bbbb.idx";

    fn error_path(e: &Error) -> PathBuf {
        match e {
            Error::Corrupt { path, .. } | Error::Io { path, .. } => path.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cells_of_segments_kept_in_a_store_name_their_objects() {
        // No index object: built from the segment, whose damage names it.
        let cell = IndexCell::unindexed(0, PathBuf::from(SEG));
        let err = cell.get(&[0u8; 300]).unwrap_err();
        assert_eq!(error_path(&err), Path::new(SEG));
        // A damaged index object: reported under its name, and a rebuild
        // from a damaged segment names the segment's object (not the index
        // object's name with another extension).
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy.idx");
        std::fs::write(&copy, [1u8; 200]).unwrap();
        let fetch = Arc::new(FileFetch(copy, AtomicU64::new(0)));
        let cell = IndexCell::fetched(0, PathBuf::from(IDX), PathBuf::from(SEG), fetch.clone(), 300, 7);
        assert!(matches!(cell.get_fetched(), Ok(Err(_))));
        let err = cell.get(&[0u8; 300]).unwrap_err();
        assert_eq!(error_path(&err), Path::new(SEG));
        assert_eq!(cell.file(), Some(Path::new(IDX)));
        // A read-ahead hint never opens a store's name as a local path,
        // and fetches nothing.
        let before = fetch.1.load(Ordering::SeqCst);
        cell.fresh().prefetch_file(Some((3, 48)));
        assert_eq!(fetch.1.load(Ordering::SeqCst), before);
        // A cell made fresh keeps the names and the run.
        let run = IndexCell::unindexed(1, PathBuf::from(SEG)).in_run_of(None);
        let other = IndexCell::unindexed(2, PathBuf::from(SEG)).in_run_of(Some(&run));
        assert!(Arc::ptr_eq(run.known_absent().unwrap(), other.known_absent().unwrap()));
        assert!(Arc::ptr_eq(
            run.known_absent().unwrap(),
            run.fresh().known_absent().unwrap()
        ));
        assert_eq!(error_path(&run.fresh().get(&[0u8; 300]).unwrap_err()), Path::new(SEG));
    }

    #[test]
    fn known_absent_streams_are_bounded_and_only_grow() {
        let a = KnownAbsent::default();
        assert_eq!(a.below("s"), 0);
        a.record("s", 100);
        a.record("s", 50);
        assert_eq!(a.below("s"), 100);
        for i in 0..KnownAbsent::MAX {
            a.record(&format!("x-{i}"), 1);
        }
        assert!(a.lock().len() <= KnownAbsent::MAX);
    }
}
