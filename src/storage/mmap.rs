//! The one module that maps files. Everything else parses `&[u8]`.
//!
//! # Soundness argument
//!
//! `memmap2::Mmap::map` is `unsafe` because the bytes of a mapping can change
//! under the program if the file changes, and Rust forbids a live `&[u8]` whose
//! bytes change. A [`Mapping`] hands out a `&[u8]` over its whole length, so
//! annal only ever maps byte ranges that no one will modify while the mapping
//! lives:
//!
//! 1. **Sealed segments** (spec 1, 3.4) are never written again by annal: the
//!    writer only appends to the active segment and never reopens a sealed one
//!    for writing. They are mapped whole.
//! 2. **The active segment** is mapped only up to an end that lies at or before
//!    the end of complete batches: for the writer's own views, the end it has
//!    written (annal never rewrites a byte it wrote below that end); for
//!    readers in other processes, the end they validated by *copying* the bytes
//!    (`pread`), never through a mapping, or the end of the segment's index
//!    checkpoints (spec 17.5), which cover only complete batches that were
//!    durable when the checkpoint was written (its last batch is copied and
//!    validated first). The writer only writes past those
//!    ends (appending) and only truncates past every complete batch (recovery
//!    cuts torn tails, which no reader validated), so no mapped byte changes
//!    and no mapped page is cut from under a reader (no SIGBUS).
//! 3. Index and snapshot files (later versions) are replaced by writing a new
//!    file and renaming it over the old name, never rewritten in place, so an
//!    existing mapping keeps the old inode's bytes.
//! 4. Iterators and views hold an `Arc<Mapping>`, so a mapping outlives every
//!    slice borrowed from it. A lazy mapping ([`Mapping::lazy`], sealed
//!    segments) is made on first use and then lives as long as its `Arc`: a
//!    reader that bounds the number of live mappings lets go of its own `Arc`
//!    of the least recently mapped ones and hands later views a fresh, unmapped
//!    [`Mapping`]; a view that still holds the old one keeps it mapped, with
//!    every slice borrowed from it, until the view is dropped.
//! 5. **Recovery** maps the whole active segment while it holds the writer lock
//!    (so no annal process writes to the file), reads it, and drops the
//!    mapping before it truncates a torn tail.
//! 6. **Cached copies of sealed segments kept in an object store, and of
//!    their index files** (spec 23.7, [`Mapping::fetched`], fetched index
//!    files) are written whole under a temporary name, renamed into place
//!    and never written again; the cache removes one only while no mapping
//!    pins it, and removing a name leaves a mapping of the file intact.
//!    [`Fetch`] is an `unsafe trait`: each implementation vouches for this
//!    of the files it returns.
//!
//! Changes to the files by anything other than annal (an editor, a disk fault)
//! are outside this contract; `annal check` exists to detect them, and every
//! parser is written to return an error, never to panic, on any content.
//!
//! # Advice to the kernel
//!
//! Left alone, the kernel reads ahead around every page fault in a file
//! mapping (up to the device's `read_ahead_kb`, 8 MiB on some disks): a
//! cold stream read that touches a hundred scattered 4 KiB pages would read
//! hundreds of MiB. So every mapping is advised `MADV_RANDOM` as soon as it
//! is made ([`mmap`]): a fault reads the page it needs (and the kernel maps
//! the neighbours already cached). Point reads and index probes (stream
//! reads, lookups, the stream table, snapshots) are random access and need
//! nothing more.
//!
//! Sequential consumers say so themselves, since `MADV_RANDOM` turned the
//! kernel's readahead off for them:
//!
//! * replay (`read_all`) and the parallel rebuild of projections walk a
//!   segment forward: while one does, its mapping is advised
//!   `MADV_SEQUENTIAL` (the kernel's readahead), and `MADV_RANDOM` again
//!   when the last lets go ([`Readahead`]; two calls a segment, and no
//!   per-page cost on cached pages, where a `MADV_WILLNEED` window cost a
//!   warm replay about 3%);
//! * a backward replay (`read_all_backward`), which the kernel does not
//!   detect, keeps a [`Readahead`] window of `MADV_WILLNEED` below the
//!   cursor, advised once per [`READAHEAD_WINDOW`] bytes (in a few system
//!   calls of [`WILLNEED_CHUNK`] bytes, as much as Linux reads per call);
//! * `check` walks each sealed segment in full, several times, and recovery
//!   and index rebuilds walk a segment from front to back: they advise the
//!   whole mapping `MADV_SEQUENTIAL` ([`Mapping::sequential`]);
//! * opening an index file, index checkpoint or the stream table reads its
//!   footer and its whole block CRC table, at the end of the file: one
//!   `MADV_WILLNEED` of that end ([`Mapping::prefetch`]), not a fault per
//!   page. Their rows are found by interpolation on the (uniform) hashes, so
//!   a lookup reads two or three pages of rows, not one per step of a
//!   binary search (`index::lower_bound_by_hash`).
//!
//! Advice is a hint: it changes no byte a mapping exposes (only which pages
//! the kernel reads, and when), so it leaves the soundness argument above
//! untouched, and a failure to give it is ignored. The advice calls go
//! through memmap2's safe `advise` / `advise_range` (no `unsafe` here).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::{Advice, Mmap, MmapOptions};

use crate::error::{Error, Result};

/// A read-only mapping of the first `len` bytes of a file: mapped at once
/// ([`Mapping::map`]), or on first use ([`Mapping::lazy`], for sealed
/// segments, so that a log of any number of segments maps only those read).
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The mapping once made (`None` inside: an empty range).
    map: OnceLock<Option<Mmap>>,
    /// Serialises lazy mapping (a failure is not kept: a later use retries).
    init: Mutex<()>,
    /// What to map lazily: the file's path (reopened without following
    /// links) and the length to map.
    source: Option<PathBuf>,
    /// Or a cache that fetches the file on first use ([`Mapping::fetched`]).
    fetch: Option<Arc<dyn Fetch>>,
    /// What keeps a fetched file in its cache while this mapping lives.
    pin: OnceLock<Pin>,
    len: u64,
    /// The identity of the file a lazy mapping maps (when it was opened):
    /// a file put under its name since is told from it.
    id: Option<FileId>,
    /// When it was mapped or last handed out by [`Mapping::try_bytes`], on a
    /// process-wide clock: for evicting the least recently used.
    used: AtomicU64,
    /// Forward cursors walking the mapping now ([`Readahead`]): advised
    /// sequential while there is one.
    sequential_users: AtomicUsize,
}

/// A file's identity (device, inode), on Unix.
pub(crate) type FileId = (u64, u64);

/// What keeps a fetched file in its cache (see [`Fetch`]): the cache lets
/// go of a file only while nothing holds its pin.
pub(crate) type Pin = Arc<dyn std::any::Any + Send + Sync>;

/// A file that lives outside the log directory (a sealed segment kept in an
/// object store, spec 23.7, or its index file) and is fetched into a local
/// cache on first use: [`Mapping::fetched`] and fetched index files map
/// what it returns.
///
/// # Safety
///
/// Every file [`Fetch::fetch`] returns is a private copy (in a directory
/// its cache owns, under a name the cache made): written whole before it
/// was named, and never written nor cut again while the pin it returns (or
/// any clone of it) is held; the cache may only remove its name (which
/// leaves a mapping of it intact). This is case 6 of the module
/// documentation, and mappings of the file rely on it: an implementation
/// that breaks it makes a live `&[u8]` change.
pub(crate) unsafe trait Fetch: Send + Sync + std::fmt::Debug {
    /// The file's local copy, opened, and a pin that keeps it in the cache
    /// (see the trait's safety contract).
    fn fetch(&self) -> Result<Fetched>;
}

/// A file [`Fetch`] made available.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The local copy, opened.
    pub file: File,
    /// Its path (for messages).
    pub path: PathBuf,
    /// Held while the copy is mapped.
    pub pin: Pin,
}

/// The identity of the file whose metadata is `m` (`None` off Unix).
pub(crate) fn file_id(m: &std::fs::Metadata) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// The original of the segment file `path` that compaction replaced (spec
/// 3.10): the retired hard link beside it that is the file `id`, `len` bytes
/// long, opened; `None` if there is none (any more).
fn retired_original(path: &Path, id: FileId, len: u64) -> Option<File> {
    use crate::format::names::{parse_retired_file_name, parse_segment_file_name};
    let base = parse_segment_file_name(path.file_name()?.to_str()?)?;
    let dir = path.parent()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        if name
            .to_str()
            .and_then(parse_retired_file_name)
            .is_none_or(|(b, _)| b != base)
        {
            continue;
        }
        let Ok(f) = crate::storage::io::open_read(&e.path()) else {
            continue;
        };
        if f.metadata().is_ok_and(|m| m.len() == len && file_id(&m) == Some(id)) {
            return Some(f);
        }
    }
    None
}

/// The clock of [`Mapping::used`].
static TICK: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    TICK.fetch_add(1, Ordering::Relaxed)
}

fn mmap(file: &File, len: u64, path: &Path) -> Result<Option<Mmap>> {
    if len == 0 {
        return Ok(None);
    }
    let Ok(len_usize) = usize::try_from(len) else {
        return Err(Error::InvalidArgument(format!(
            "{}: {len} bytes cannot be mapped",
            path.display()
        )));
    };
    // SAFETY: per the module documentation, the bytes `[0, len)` of this
    // file are never modified by annal while any mapping of them lives
    // (sealed segments are immutable; the active segment is mapped only up
    // to complete batches the writer never rewrites, and truncation happens
    // only past them; a cached copy from a `Fetch` is never written again,
    // by that unsafe trait's contract). The mapping is read-only.
    let map = unsafe { MmapOptions::new().len(len_usize).map(file) }.map_err(|e| Error::io("mmap", path, e))?;
    // Random access until a sequential consumer says otherwise (module
    // documentation, "Advice to the kernel"); a hint, so a failure is ignored.
    let _ = map.advise(Advice::Random);
    count(Kind::Random, 1);
    Ok(Some(map))
}

/// Bytes advised `MADV_WILLNEED` at a time by a [`Readahead`]: large enough
/// that the disk reads in long runs and the advice calls are few (one per
/// window), small enough not to crowd the page cache.
pub(crate) const READAHEAD_WINDOW: u64 = 8 << 20;

/// Bytes per `MADV_WILLNEED` system call. Linux reads at most
/// `max(read_ahead_kb, max_sectors_kb)` of the range of one call (the rest
/// is silently dropped: a 16 MiB call on a disk with 8 MiB of readahead
/// leaves half the range to be faulted in page by page), and the default
/// `read_ahead_kb` is 128 KiB; `max_sectors_kb` is 512 KiB or more on
/// common disks. So a window is advised in calls of this many bytes.
const WILLNEED_CHUNK: usize = 512 << 10;

/// The size of a page for aligning advised ranges (a smaller value than the
/// real page size only makes ranges start a little earlier: memmap2 aligns
/// the start down to the real page).
const PAGE: u64 = 4096;

/// How far ahead of its cursor a [`Readahead`] keeps advised bytes: between
/// one and two windows, so that the disk always has a window queued while
/// the consumer parses (with one window, the disk idles whenever parsing
/// catches up with it).
const READAHEAD_LEAD: u64 = 2 * READAHEAD_WINDOW;

/// Read ahead for a cursor walking one mapping in order.
///
/// * **Forward**, the kernel's own readahead does it: the mapping is
///   advised `MADV_SEQUENTIAL` while at least one forward cursor walks it
///   ([`Mapping::begin_sequential`]), and `MADV_RANDOM` again when the last
///   one is dropped. Two advice calls per segment walked, whether its pages
///   are cached or not (a `MADV_WILLNEED` costs the kernel a look at every
///   page it names, cached or not: about 3% of a warm replay).
/// * **Backward**, which the kernel does not detect: a window of
///   `MADV_WILLNEED` kept below the cursor (between one and two
///   [`READAHEAD_WINDOW`]s of bytes), one advice per window: [`Readahead::at`]
///   is a comparison per call until the cursor comes within
///   [`READAHEAD_LEAD`] of the advised edge.
#[derive(Debug)]
pub(crate) struct Readahead {
    /// Backward: the start of the range advised so far.
    edge: u64,
    /// Nothing advised yet.
    fresh: bool,
    backward: bool,
    /// Forward: the mapping advised sequential for this cursor.
    sequential: Option<Arc<Mapping>>,
}

impl Drop for Readahead {
    fn drop(&mut self) {
        if let Some(m) = self.sequential.take() {
            m.end_sequential();
        }
    }
}

impl Readahead {
    /// A window for a cursor moving towards the end of the mapping.
    pub(crate) fn forward() -> Readahead {
        Readahead {
            edge: 0,
            fresh: true,
            backward: false,
            sequential: None,
        }
    }

    /// A window for a cursor moving towards the start of the mapping.
    pub(crate) fn backward() -> Readahead {
        Readahead {
            edge: u64::MAX,
            fresh: true,
            backward: true,
            sequential: None,
        }
    }

    /// The cursor is at byte `at` of `map` (always the same mapping for one
    /// `Readahead`): forward, the mapping is advised sequential on the first
    /// call; backward, if fewer than [`READAHEAD_LEAD`] bytes below the
    /// cursor are advised, the next window is.
    #[inline]
    pub(crate) fn at(&mut self, map: &Arc<Mapping>, at: u64) {
        if self.backward {
            if self.fresh || at < self.edge.saturating_add(READAHEAD_LEAD) {
                self.advance_backward(map, at);
            }
        } else if self.sequential.is_none() {
            self.start_sequential(map);
        }
    }

    #[cold]
    fn start_sequential(&mut self, map: &Arc<Mapping>) {
        map.begin_sequential();
        self.sequential = Some(map.clone());
    }

    #[cold]
    fn advance_backward(&mut self, map: &Mapping, at: u64) {
        let end = if self.fresh || at < self.edge { at } else { self.edge }.min(map.len());
        if end == 0 {
            return;
        }
        let start = end.saturating_sub(READAHEAD_WINDOW);
        map.prefetch(start, end - start);
        (self.edge, self.fresh) = (start, false);
    }
}

impl Mapping {
    /// Map `[0, len)` of `file` now.
    ///
    /// # Safety
    ///
    /// No byte of `[0, len)` of the file may change, and the file may not be
    /// cut below `len`, while the mapping (or any slice borrowed from it)
    /// lives: one of the cases of the module documentation must hold for the
    /// range, and the caller says which in a `// SAFETY:` comment.
    pub(crate) unsafe fn map(file: &File, len: u64, path: &Path) -> Result<Mapping> {
        let m = mmap(file, len, path)?;
        Ok(Mapping {
            map: OnceLock::from(m),
            init: Mutex::new(()),
            source: Some(path.to_owned()),
            fetch: None,
            pin: OnceLock::new(),
            len,
            id: None,
            used: AtomicU64::new(tick()),
            sequential_users: AtomicUsize::new(0),
        })
    }

    /// A mapping of `[0, len)` of the file at `path`, made on first use: the
    /// file is then opened again (never through a symlink, only a regular
    /// file) and must still be `len` bytes long and, if `id` is given, be
    /// the file `id` (else, for a segment compaction replaced since, its
    /// retired original is mapped if it is still there, spec 3.10). For
    /// sealed segments, which annal never modifies (case 1 of the module
    /// documentation).
    ///
    /// # Safety
    ///
    /// As for [`Mapping::map`]: the file at `path` is one annal never
    /// modifies again (a sealed segment), and the caller says so in a
    /// `// SAFETY:` comment.
    pub(crate) unsafe fn lazy(path: PathBuf, len: u64, id: Option<FileId>) -> Mapping {
        Mapping {
            map: OnceLock::new(),
            init: Mutex::new(()),
            source: Some(path),
            fetch: None,
            pin: OnceLock::new(),
            len,
            id,
            used: AtomicU64::new(0),
            sequential_users: AtomicUsize::new(0),
        }
    }

    /// A mapping of the first `len` bytes of a file that `fetch` makes
    /// available on first use (then checked to be `len` bytes long), held
    /// in its cache for as long as the mapping lives. For sealed segments
    /// kept in an object store: case 6 of the module documentation, which
    /// every implementation of the `unsafe` trait [`Fetch`] vouches for
    /// (so this needs no `unsafe` of its caller).
    pub(crate) fn fetched(fetch: Arc<dyn Fetch>, len: u64) -> Mapping {
        Mapping {
            map: OnceLock::new(),
            init: Mutex::new(()),
            source: None,
            fetch: Some(fetch),
            pin: OnceLock::new(),
            len,
            id: None,
            used: AtomicU64::new(0),
            sequential_users: AtomicUsize::new(0),
        }
    }

    /// The mapped bytes, mapping them first if this mapping is lazy. An
    /// operating-system failure (`EMFILE`, `ENOMEM`, ...) is `Error::Io`; a
    /// file whose length changed is `Error::Corrupt`. A failure is not kept:
    /// the next call tries again.
    pub(crate) fn try_bytes(&self) -> Result<&[u8]> {
        if let Some(m) = self.map.get() {
            return Ok(m.as_deref().unwrap_or(&[]));
        }
        let _guard = self.init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self.map.get() {
            return Ok(m.as_deref().unwrap_or(&[]));
        }
        if let Some(fetch) = &self.fetch {
            return self.map_fetched(fetch.as_ref());
        }
        let Some(path) = &self.source else {
            return Ok(&[]);
        };
        let mut file = crate::storage::io::open_read(path).map_err(|e| Error::io("open", path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let mut found = meta.len();
        let replaced = self.id.is_some() && file_id(&meta) != self.id;
        if (found != self.len || replaced)
            && let Some(original) = self.id.and_then(|id| retired_original(path, id, self.len))
        {
            // A segment compaction replaced since this mapping was planned:
            // its original, kept under a retired name (spec 3.10).
            (file, found) = (original, self.len);
        }
        if found != self.len {
            return Err(Error::Corrupt {
                path: path.clone(),
                offset: found.min(self.len),
                detail: format!(
                    "expected the sealed segment to be {} bytes long (as when the log was opened), found {found}: \
                     it was replaced since (by compaction, spec 3.10); a new view reads it",
                    self.len
                ),
            });
        }
        let m = mmap(&file, self.len, path)?;
        self.used.store(tick(), Ordering::Relaxed);
        Ok(self.map.get_or_init(|| m).as_deref().unwrap_or(&[]))
    }

    /// Fetch the file, check its length and map it (the caller holds
    /// `init`).
    fn map_fetched(&self, fetch: &dyn Fetch) -> Result<&[u8]> {
        let got = fetch.fetch()?;
        let found = got.file.metadata().map_err(|e| Error::io("stat", &got.path, e))?.len();
        if found != self.len {
            return Err(Error::Corrupt {
                path: got.path,
                offset: found.min(self.len),
                detail: format!(
                    "expected the cached copy of a sealed segment to be {} bytes long, found {found}",
                    self.len
                ),
            });
        }
        // (`mmap`'s SAFETY holds for this file by the `Fetch` contract:
        // case 6, a private copy never written again while `got.pin`,
        // kept below for the mapping's life, is held.)
        let m = mmap(&got.file, self.len, &got.path)?;
        let _ = self.pin.set(got.pin);
        self.used.store(tick(), Ordering::Relaxed);
        Ok(self.map.get_or_init(|| m).as_deref().unwrap_or(&[]))
    }

    /// The bytes if they are mapped already (`None`: a lazy mapping not
    /// made yet, or an empty range), mapping nothing.
    pub(crate) fn mapped_bytes(&self) -> Option<&[u8]> {
        self.map.get()?.as_deref()
    }

    /// The mapped bytes; empty if a lazy mapping cannot be made (callers
    /// that can report an error use [`Mapping::try_bytes`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.try_bytes().unwrap_or(&[])
    }

    /// The identity of the file a lazy mapping maps (when it was opened).
    pub(crate) fn identity(&self) -> Option<FileId> {
        self.id
    }

    /// The length mapped (or to be mapped), without mapping anything.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is fetched into a cache on first use
    /// ([`Mapping::fetched`]).
    pub(crate) fn is_fetched(&self) -> bool {
        self.fetch.is_some()
    }

    /// Whether the bytes are mapped now (an empty range counts as not).
    pub(crate) fn is_mapped(&self) -> bool {
        self.map.get().is_some_and(|m| m.is_some())
    }

    /// When it was mapped (see [`Mapping::used`]).
    pub(crate) fn mapped_at(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Ask the kernel to read `[offset, offset + len)` of the mapping
    /// (`MADV_WILLNEED`, in calls of [`WILLNEED_CHUNK`] bytes), without
    /// waiting for it: the range is clamped to the mapping and widened to
    /// whole pages. Maps nothing: a lazy mapping not made yet is left alone.
    /// A hint, so a failure is ignored.
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        let Some(Some(m)) = self.map.get() else {
            return;
        };
        let Some((start, len)) = clamp_range(m.len() as u64, offset, len) else {
            return;
        };
        let end = start + len;
        for at in (start..end).step_by(WILLNEED_CHUNK) {
            let _ = m.advise_range(Advice::WillNeed, at, WILLNEED_CHUNK.min(end - at));
        }
        count(Kind::WillNeed, len as u64);
    }

    /// A forward cursor starts walking the mapping: the first one advises it
    /// `MADV_SEQUENTIAL` (see [`Readahead`]).
    pub(crate) fn begin_sequential(&self) {
        if self.sequential_users.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(Some(m)) = self.map.get()
        {
            let _ = m.advise(Advice::Sequential);
            count(Kind::Sequential, 1);
        }
    }

    /// A forward cursor is done with the mapping: the last one advises it
    /// `MADV_RANDOM` again, for point reads.
    pub(crate) fn end_sequential(&self) {
        if self.sequential_users.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(Some(m)) = self.map.get()
        {
            let _ = m.advise(Advice::Random);
            count(Kind::Random, 1);
        }
    }

    /// Advise the whole mapping `MADV_SEQUENTIAL` (for a consumer that walks
    /// it in full, in order): the kernel reads ahead aggressively again, and
    /// may drop pages behind the reader early. Maps nothing. A hint, so a
    /// failure is ignored.
    pub(crate) fn sequential(&self) {
        if let Some(Some(m)) = self.map.get() {
            let _ = m.advise(Advice::Sequential);
            count(Kind::Sequential, 1);
        }
    }

    /// A lazy mapping of the same range of the same file, not mapped yet
    /// (for a cache that lets go of this one). Only for a file that annal
    /// never changes again (a sealed segment): the lazy mapping requires the
    /// file to still be `len` bytes long.
    pub(crate) fn fresh(&self) -> Option<Mapping> {
        if let Some(fetch) = &self.fetch {
            return Some(Mapping::fetched(fetch.clone(), self.len));
        }
        // SAFETY: the same range of the same file as `self`, which was made
        // under the same guarantee (`map` or `lazy`); a file whose length
        // changed is refused when the lazy mapping is made.
        self.source
            .as_ref()
            .map(|p| unsafe { Mapping::lazy(p.clone(), self.len, self.id) })
    }
}

/// `[offset, offset + len)` clamped to a mapping of `map_len` bytes, its
/// start aligned down to a page: `(start, len)` as `usize`, or `None` if
/// nothing of it lies in the mapping.
fn clamp_range(map_len: u64, offset: u64, len: u64) -> Option<(usize, usize)> {
    let end = offset.saturating_add(len).min(map_len);
    let start = offset - offset % PAGE;
    if offset >= end {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(end - start).ok()?))
}

/// Which advice was given (for the test counters).
#[derive(Clone, Copy)]
enum Kind {
    Random,
    WillNeed,
    Sequential,
}

/// Count advice given, for tests (`annal::fuzzing::advice`): no cost
/// outside test builds.
#[cfg(any(test, feature = "fuzzing"))]
fn count(kind: Kind, bytes: u64) {
    let c = &counters::COUNTERS;
    match kind {
        Kind::Random => c.random.fetch_add(1, Ordering::Relaxed),
        Kind::WillNeed => {
            c.willneed_bytes.fetch_add(bytes, Ordering::Relaxed);
            c.willneed.fetch_add(1, Ordering::Relaxed)
        }
        Kind::Sequential => c.sequential.fetch_add(1, Ordering::Relaxed),
    };
}

#[cfg(not(any(test, feature = "fuzzing")))]
#[inline(always)]
fn count(_: Kind, _: u64) {}

/// Process-wide counts of the advice given to mappings, for tests.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod counters {
    use std::sync::atomic::AtomicU64;

    /// Advice given since the process started.
    pub(crate) struct Counters {
        /// Mappings advised `MADV_RANDOM` (every mapping made).
        pub random: AtomicU64,
        /// `MADV_WILLNEED` calls, and the bytes they covered.
        pub willneed: AtomicU64,
        pub willneed_bytes: AtomicU64,
        /// Mappings advised `MADV_SEQUENTIAL`.
        pub sequential: AtomicU64,
    }

    pub(crate) static COUNTERS: Counters = Counters {
        random: AtomicU64::new(0),
        willneed: AtomicU64::new(0),
        willneed_bytes: AtomicU64::new(0),
        sequential: AtomicU64::new(0),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_range_aligns_and_clamps() {
        assert_eq!(clamp_range(10_000, 5_000, 100), Some((4096, 1004)));
        assert_eq!(clamp_range(10_000, 0, u64::MAX), Some((0, 10_000)));
        assert_eq!(clamp_range(10_000, 9_000, 5_000), Some((8192, 1808)));
        assert_eq!(clamp_range(10_000, 10_000, 5), None);
        assert_eq!(clamp_range(10_000, u64::MAX, u64::MAX), None);
        assert_eq!(clamp_range(0, 0, 10), None);
    }

    #[test]
    fn readahead_advises_once_per_segment_or_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 3 * READAHEAD_WINDOW + 100;
        std::fs::write(&path, vec![0u8; len as usize]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a file of this test that nothing writes while it is mapped.
        let m = Arc::new(unsafe { Mapping::map(&file, len, &path) }.unwrap());
        // Forward: sequential while a cursor walks it, counted per cursor.
        let (a, b) = (Readahead::forward(), Readahead::forward());
        let (mut a, mut b) = (a, b);
        for at in (0..len).step_by(4096) {
            a.at(&m, at);
            b.at(&m, at);
        }
        assert_eq!(m.sequential_users.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(m.sequential_users.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(m.sequential_users.load(Ordering::Relaxed), 0);
        // Backward: windows of 8 MiB below the cursor.
        let mut bw = Readahead::backward();
        let mut starts = Vec::new();
        for at in (0..=len).rev().step_by(4096) {
            let before = bw.edge;
            bw.at(&m, at);
            if bw.edge != before {
                starts.push(bw.edge);
            }
        }
        assert_eq!(starts.len(), 4, "{starts:?}");
        assert_eq!(starts.last(), Some(&0));
    }
}
