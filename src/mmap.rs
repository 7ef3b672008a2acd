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
//!    (`pread`), never through a mapping. The writer only writes past those
//!    ends (appending) and only truncates past every complete batch (recovery
//!    cuts torn tails, which no reader validated), so no mapped byte changes
//!    and no mapped page is cut from under a reader (no SIGBUS).
//! 3. Index and snapshot files (later versions) are replaced by writing a new
//!    file and renaming it over the old name, never rewritten in place, so an
//!    existing mapping keeps the old inode's bytes.
//! 4. Iterators and views hold an `Arc<Mapping>`, so a mapping outlives every
//!    slice borrowed from it.
//! 5. **Recovery** maps the whole active segment while it holds the writer lock
//!    (so no annal process writes to the file), reads it, and drops the
//!    mapping before it truncates a torn tail.
//!
//! Changes to the files by anything other than annal (an editor, a disk fault)
//! are outside this contract; `annal check` exists to detect them, and every
//! parser is written to return an error, never to panic, on any content.

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// A read-only mapping of the first `len` bytes of a file.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: Option<Mmap>,
}

impl Mapping {
    /// Map `[0, len)` of `file`. The caller guarantees the conditions of the
    /// module documentation for that range.
    pub(crate) fn map(file: &File, len: u64, path: &Path) -> Result<Mapping> {
        if len == 0 {
            return Ok(Mapping { map: None });
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
        Ok(Mapping { map: Some(map) })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
