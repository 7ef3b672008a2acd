//! Sealed segments as a reader opens them: the segment header checked
//! against the file name, the seal found at the end, both by copying (`pread`)
//! so that opening a log maps nothing; the mapping is made on first use.
//!
//! Invariants: a sealed segment is handed out only if its header is valid,
//! names the base its file name says, and its last frame is a valid seal;
//! a failed OS call is [`Error::Io`] naming the file, never corruption.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Damage, Error, Result};
use crate::format::frame::{Frame, seal_len, validate_frame};
use crate::format::names::{index_file_name, segment_file_name};
use crate::format::{
    FRAME_HEADER_LEN, FRAME_KIND_SEAL, Layout, SEGMENT_BASE_POSITION_OFFSET, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::index::IndexCell;
use crate::read::logview::ViewSegment;
use crate::storage::io::read_exact_at;
use crate::storage::mmap::Mapping;

/// OS reads made by the cross-process reader's `pread` helpers (a test
/// seam, read by `fuzzing::reader_preads`).
#[cfg(feature = "fuzzing")]
pub(crate) static READER_PREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `pread` exactly `buf.len()` bytes at `off` of `path`: an OS failure is
/// [`Error::Io`]; a file that ends first (it shrank under the reader) is
/// [`Error::Corrupt`] at the offset where the bytes are missing.
pub(crate) fn pread(file: &File, buf: &mut [u8], off: u64, path: &Path) -> Result<()> {
    count_pread();
    match read_exact_at(file, buf, off) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(cut_while_read(path, off, buf.len())),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// `pread` up to `buf.len()` bytes at `off` of `path`, fewer only where the
/// file ends: returns how many were read. An OS failure is [`Error::Io`].
pub(super) fn pread_upto(file: &File, buf: &mut [u8], off: u64, path: &Path) -> Result<usize> {
    let mut done = 0usize;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        count_pread();
        let at = off.saturating_add(done as u64);
        match read_at(file, rest, at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(done)
}

/// The error of a read of `len` bytes at `off` of `path` that met the end of
/// the file: it was cut while being read.
pub(super) fn cut_while_read(path: &Path, off: u64, len: usize) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset: off,
        detail: format!("expected {len} bytes here, found the end of the file (it was cut while being read)"),
    }
}

/// One OS read of up to `buf.len()` bytes at `off` (0: the file ends there).
fn read_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, off)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(off))?;
        f.read(buf)
    }
}

/// Count one OS read of the reader's `pread` helpers, for tests that prove a
/// walk reads in big pieces (`fuzzing::reader_preads`, the one counter; only
/// with the test hooks built).
#[inline]
fn count_pread() {
    #[cfg(feature = "fuzzing")]
    READER_PREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Read and check the segment header of `file`.
pub(crate) fn read_segment_header(file: &File, path: &Path, base: u64) -> Result<SegmentHeader> {
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(SEGMENT_HEADER_LEN);
    pread(file, &mut buf[..n], 0, path)?;
    parse_segment_header(&buf[..n], path, base)
}

/// Check the segment header at the start of `bytes` (the first bytes of the
/// segment `path`, of any length): valid, and naming `base`.
pub(crate) fn parse_segment_header(bytes: &[u8], path: &Path, base: u64) -> Result<SegmentHeader> {
    let h = *SegmentHeader::parse(bytes).map_err(|d| d.at(path))?;
    if h.base_position.get() != base {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: SEGMENT_BASE_POSITION_OFFSET as u64,
            detail: format!(
                "expected base_position {base} (from the file name), found {}",
                h.base_position.get()
            ),
        });
    }
    Ok(h)
}

/// Check the end of a sealed segment of `len` bytes whose last
/// `min(len, 72)` bytes are `tail`: it holds a header and a seal as its last
/// frame. Any length is handled (the file may have been cut, or shrink while
/// being read): no slice is taken unchecked.
fn sealed_segment_seal(len: u64, tail: &[u8], layout: &Layout) -> Result<Frame, Damage> {
    let seal_len = seal_len(layout);
    let min = (SEGMENT_HEADER_LEN + seal_len) as u64;
    if len < min || tail.len() < seal_len {
        return Err(Damage::corrupt(
            len,
            format!(
                "expected at least a {SEGMENT_HEADER_LEN}-byte header and a {seal_len}-byte seal ({min} bytes), found a file of {len} bytes"
            ),
        ));
    }
    let seal_at = len - seal_len as u64;
    let tail = tail.get(tail.len() - seal_len..).unwrap_or_default();
    let f = validate_frame(tail, seal_at, true, layout)?;
    if f.kind != FRAME_KIND_SEAL {
        return Err(Damage::corrupt(
            seal_at,
            "expected a seal frame at the end of a sealed segment, found a batch",
        ));
    }
    Ok(f)
}

/// Check that a sealed segment `path` of `len` bytes, whose last bytes are
/// `tail` (at most a seal's length), ends with a seal; returns the seal.
pub(crate) fn check_seal(len: u64, tail: &[u8], layout: &Layout, path: &Path) -> Result<Frame> {
    sealed_segment_seal(len, tail, layout).map_err(|d| match d.is_io() {
        true => d.at(path),
        false => Error::Corrupt {
            path: path.to_owned(),
            offset: d.offset,
            detail: format!(
                "a segment followed by another must end with a seal (is it truncated?): {}",
                d.detail()
            ),
        },
    })
}

/// Open a sealed segment: check its header and that it ends with a seal (by
/// copying those bytes), and give it a mapping made on first use (so opening
/// a log maps nothing of its sealed segments). Returns the segment, the
/// seal's next position and the header.
pub(crate) fn open_sealed_header(dir: &Path, base: u64) -> Result<(ViewSegment, u64, SegmentHeader)> {
    open_sealed_in(dir, base, None)
}

/// [`open_sealed_header`] with the file already open (by [`prefetch_open`]),
/// if it is.
pub(crate) fn open_sealed_in(dir: &Path, base: u64, opened: Option<File>) -> Result<(ViewSegment, u64, SegmentHeader)> {
    let path = dir.join(segment_file_name(base));
    let file = match opened {
        Some(f) => f,
        None => crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?,
    };
    let header = read_segment_header(&file, &path, base)?;
    let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
    let (len, id) = (meta.len(), crate::storage::mmap::file_id(&meta));
    let layout = Layout::of(&header);
    let want = seal_len(&layout);
    let mut tail = [0u8; FRAME_HEADER_LEN];
    let n = if len >= (SEGMENT_HEADER_LEN + want) as u64 {
        pread(&file, &mut tail[..want], len - want as u64, &path)?;
        want
    } else {
        0
    };
    let seal = check_seal(len, &tail[..n], &layout, &path)?;
    let idx_path = dir.join(index_file_name(base));
    Ok((
        ViewSegment {
            base,
            // SAFETY: a sealed segment (its seal was just checked) is never
            // written again by annal (mmap module, case 1); the lazy mapping
            // also requires the file to still be `len` bytes long.
            map: Arc::new(unsafe { Mapping::lazy(path.clone(), len, id) }),
            path: Arc::new(path),
            index: Arc::new(IndexCell::new(base, Some(idx_path), None)),
            layout,
        },
        seal.first_position,
        header,
    ))
}

/// Ask the OS to start reading, all at once, what opening a log reads
/// before it can answer (`POSIX_FADV_WILLNEED`): the header and the seal of
/// each sealed segment of `sealed`, the head file, the header and the last
/// pages of the active segment `active`, the first page of its index checkpoints and of
/// the stream table and their whole block CRC tables and footers (what
/// opening them reads). Opening then
/// copies them one file after another, but a cold open waits for the disk
/// about once instead of once a read. Advice only: a file that cannot be
/// opened here is reported when it is opened. Returns the sealed segments'
/// files, opened (`None` where that failed), for [`open_sealed_in`].
pub(crate) fn prefetch_open(dir: &Path, sealed: &[u64], active: Option<u64>) -> Vec<Option<File>> {
    // `tail`: how many bytes at the end, for a file of `len` bytes.
    let advise = |path: &Path, head: u64, tail: fn(u64) -> u64| {
        crate::storage::io::advise_will_need(path, |len| {
            let at = len.saturating_sub(tail(len)).max(head);
            [(0, head), (at, len.saturating_sub(at))]
        })
    };
    // Derived files: opening one reads its whole block CRC table and footer.
    let block_tail = crate::index::blockfile::tail_len;
    let files = sealed
        .iter()
        .map(|&base| {
            advise(&dir.join(segment_file_name(base)), SEGMENT_HEADER_LEN as u64, |_| {
                FRAME_HEADER_LEN as u64
            })
        })
        .collect();
    if let Some(active) = active {
        advise(&dir.join(crate::format::names::HEAD_FILE), 4096, |_| 0);
        // Its header, and its last pages: the last batch, which the reader
        // checks and the writer continues from.
        advise(&dir.join(segment_file_name(active)), SEGMENT_HEADER_LEN as u64, |_| {
            ACTIVE_TAIL
        });
        advise(&dir.join(crate::format::names::STREAM_TABLE_FILE), 4096, block_tail);
        if let Ok(all) = crate::index::checkpoint::list(dir) {
            for c in all.iter().filter(|c| c.base == active) {
                advise(&c.path, 4096, block_tail);
            }
        }
    }
    files
}

/// Bytes at the end of the active segment that opening asks for ahead (the
/// last batch of a log of small batches; a larger one is read as usual).
const ACTIVE_TAIL: u64 = 8192;

/// [`open_sealed_header`] without the header.
pub(crate) fn open_sealed(dir: &Path, base: u64) -> Result<(ViewSegment, u64)> {
    open_sealed_header(dir, base).map(|(s, n, _)| (s, n))
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
        let log = Log::open_with(dir.path(), Options::default().segment_size(600)).unwrap();
        for i in 0..8u8 {
            log.append("s", ExpectedVersion::Any, &[EventData::new("E", vec![i; 100])])
                .unwrap();
        }
        log.close().unwrap();
        let bytes = std::fs::read(dir.path().join(segment_file_name(0))).unwrap();
        assert!(bytes.len() > 300);
        let layout = Layout::of(&SegmentHeader::parse(&bytes).unwrap().clone());
        let tail = |len: usize| &bytes[len.saturating_sub(FRAME_HEADER_LEN)..len];
        assert!(sealed_segment_seal(bytes.len() as u64, tail(bytes.len()), &layout).is_ok());
        for len in 0..bytes.len() {
            let d = sealed_segment_seal(len as u64, tail(len), &layout).unwrap_err();
            assert!(d.offset <= len as u64, "{len}: {d:?}");
        }
    }
}
