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
//!
//! Changes to the files by anything other than annal (an editor, a disk fault)
//! are outside this contract; `annal check` exists to detect them, and every
//! parser is written to return an error, never to panic, on any content.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use memmap2::{Mmap, MmapOptions};

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
    len: u64,
    /// When it was mapped or last handed out by [`Mapping::try_bytes`], on a
    /// process-wide clock: for evicting the least recently used.
    used: AtomicU64,
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
    // only past them). The mapping is read-only.
    let map = unsafe { MmapOptions::new().len(len_usize).map(file) }.map_err(|e| Error::io("mmap", path, e))?;
    Ok(Some(map))
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
            len,
            used: AtomicU64::new(tick()),
        })
    }

    /// A mapping of `[0, len)` of the file at `path`, made on first use: the
    /// file is then opened again (never through a symlink, only a regular
    /// file) and must still be `len` bytes long. For sealed segments, which
    /// annal never modifies (case 1 of the module documentation).
    ///
    /// # Safety
    ///
    /// As for [`Mapping::map`]: the file at `path` is one annal never
    /// modifies again (a sealed segment), and the caller says so in a
    /// `// SAFETY:` comment.
    pub(crate) unsafe fn lazy(path: PathBuf, len: u64) -> Mapping {
        Mapping {
            map: OnceLock::new(),
            init: Mutex::new(()),
            source: Some(path),
            len,
            used: AtomicU64::new(0),
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
        let Some(path) = &self.source else {
            return Ok(&[]);
        };
        let file = crate::storage::io::open_read(path).map_err(|e| Error::io("open", path, e))?;
        let found = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        if found != self.len {
            return Err(Error::Corrupt {
                path: path.clone(),
                offset: found.min(self.len),
                detail: format!(
                    "expected the sealed segment to be {} bytes long (as when the log was opened), found {found}",
                    self.len
                ),
            });
        }
        let m = mmap(&file, self.len, path)?;
        self.used.store(tick(), Ordering::Relaxed);
        Ok(self.map.get_or_init(|| m).as_deref().unwrap_or(&[]))
    }

    /// The mapped bytes; empty if a lazy mapping cannot be made (callers
    /// that can report an error use [`Mapping::try_bytes`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.try_bytes().unwrap_or(&[])
    }

    /// The length mapped (or to be mapped), without mapping anything.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the bytes are mapped now (an empty range counts as not).
    pub(crate) fn is_mapped(&self) -> bool {
        self.map.get().is_some_and(|m| m.is_some())
    }

    /// When it was mapped (see [`Mapping::used`]).
    pub(crate) fn mapped_at(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A lazy mapping of the same range of the same file, not mapped yet
    /// (for a cache that lets go of this one). Only for a file that annal
    /// never changes again (a sealed segment): the lazy mapping requires the
    /// file to still be `len` bytes long.
    pub(crate) fn fresh(&self) -> Option<Mapping> {
        // SAFETY: the same range of the same file as `self`, which was made
        // under the same guarantee (`map` or `lazy`); a file whose length
        // changed is refused when the lazy mapping is made.
        self.source
            .as_ref()
            .map(|p| unsafe { Mapping::lazy(p.clone(), self.len) })
    }
}
