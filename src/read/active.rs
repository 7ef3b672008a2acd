//! The active segment as a [`Reader`](crate::Reader) in another process sees
//! it: every new frame is copied (`pread`, never through a mapping: spec 7)
//! and validated before the bytes up to it are mapped, and damage is told
//! from a torn or in-progress write by the durable boundary (spec 5.1). The
//! copies are made in big reads (a chunk of 1 MiB holds many frames; a frame
//! cut by a chunk's end is carried over to the next read), never a read per
//! frame.
//!
//! Invariants: `validated_end` only grows over complete frames whose
//! positions follow each other from the segment's base; an incomplete frame
//! below the durable boundary is [`Error::Corrupt`] naming the segment, at or
//! past it the walk stops quietly; nothing past the head's visible end is
//! delivered (nor read by the validating walk); memory stays bounded (one
//! chunk, or one frame when it is larger, at most `MAX_FRAME_LEN`, and a
//! resync scan in bounded pieces).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Damage, Error, Result};
use crate::format::frame::{Frame, FrameCursor};
use crate::format::frame::{binding, parse_header};
use crate::format::names::{LOCK_FILE, segment_file_name};
use crate::format::{
    FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, FRAME_KIND_BATCH, FRAME_LEN_OFFSET, Layout, SEGMENT_HEADER_LEN,
};
use crate::index::checkpoint;
use crate::index::{Index, IndexCell, Layered, MemIndex};
use crate::read::logview::ViewSegment;
use crate::read::sealed::{cut_while_read, pread, pread_upto, read_segment_header};
use crate::storage::head::Head;
use crate::storage::mmap::Mapping;
use crate::storage::resync::resync_file;

/// The active segment of a [`Reader`](crate::Reader): its file (read by
/// copying), what has been validated of it, and the index built from the
/// validated frames.
#[derive(Debug)]
pub(super) struct ActiveRead {
    pub(super) base: u64,
    pub(super) path: Arc<PathBuf>,
    file: File,
    index: Arc<RwLock<MemIndex>>,
    cell: Arc<IndexCell>,
    /// The end of the last complete, valid frame: what a view may map.
    pub(super) validated_end: u64,
    /// The position the next frame must start at.
    pub(super) next_position: u64,
    /// Largest `durable_end` among the validated frames (spec 5.1, rule 2).
    max_durable: u64,
    /// The file's length at the last validation.
    pub(super) file_len: u64,
    /// The last resynchronisation scan: (from, file length, its maximum).
    resync: Option<(u64, u64, u64)>,
    /// The last check of the bytes past the visible end: (validated end,
    /// file length) it covered.
    probed: Option<(u64, u64)>,
    map: Option<Arc<Mapping>>,
    /// The bytes the current walk copied.
    window: Window,
    /// Whether the segment's index checkpoints were looked for.
    checkpoints_tried: bool,
    /// The layout of the segment's frames (from its header).
    layout: Layout,
    /// The log's id (from the segment header).
    pub(super) log_id: [u8; 16],
}

impl ActiveRead {
    /// Open the segment based at `base` in `dir` (its header checked),
    /// with nothing validated yet.
    pub(super) fn open(dir: &Path, base: u64) -> Result<ActiveRead> {
        let path = dir.join(segment_file_name(base));
        let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
        let header = read_segment_header(&file, &path, base)?;
        let layout = Layout::of(&header);
        let index = Arc::new(RwLock::new(MemIndex::default()));
        Ok(ActiveRead {
            base,
            path: Arc::new(path),
            file,
            cell: Arc::new(IndexCell::new(base, None, Some(Index::Mem(index.clone())))),
            index,
            validated_end: SEGMENT_HEADER_LEN as u64,
            next_position: base,
            max_durable: SEGMENT_HEADER_LEN as u64,
            file_len: 0,
            resync: None,
            probed: None,
            map: None,
            window: Window::default(),
            checkpoints_tried: false,
            layout,
            log_id: header.log_id,
        })
    }

    /// Validate new frames up to what the head (`head`, its current slot)
    /// declares visible, check the bytes past that when no writer accounts
    /// for them, and return the segment as a view shows it (mapped up to the
    /// validated end), with whether a writer holds the log in `dir` (`None`:
    /// not probed, nothing lay past the visible end).
    pub(super) fn refresh(&mut self, dir: &Path, head: Option<Head>) -> Result<(ViewSegment, Option<bool>)> {
        // Spec 5.1 rule 3: the head's current slot counts if it names the
        // active segment (whether it is the newer slot or, the newer one
        // being torn, the older).
        let (limit, head_durable) = match head {
            Some(h) if h.segment_base == self.base => (h.visible_end, h.durable_end),
            _ => (u64::MAX, 0),
        };
        self.validate(limit, head_durable)?;
        // Bytes past the visible end with no writer to account for them (a
        // crash left the head behind): damage there below the durable
        // boundary is corruption too, found by checking them (not
        // delivered).
        let mut writer: Option<bool> = None;
        if self.file_len > self.validated_end {
            let held = crate::storage::io::lock_held(&dir.join(LOCK_FILE));
            writer = Some(held);
            if !held {
                self.probe_past_visible(head_durable)?;
            }
        }
        Ok((self.segment()?, writer))
    }

    /// The segment as a view shows it: mapped up to the validated end (the
    /// mapping is reused while that end does not move).
    fn segment(&mut self) -> Result<ViewSegment> {
        let map = match &self.map {
            Some(m) if m.bytes().len() as u64 == self.validated_end => m.clone(),
            _ => {
                // SAFETY: `[0, validated_end)` holds only complete batches this
                // reader validated by copying them (`validate`); the writer
                // never rewrites those bytes and truncates only past every
                // complete batch (mmap module, case 2).
                let m = Arc::new(unsafe { Mapping::map(&self.file, self.validated_end, &self.path) }?);
                self.map = Some(m.clone());
                m
            }
        };
        Ok(ViewSegment {
            base: self.base,
            path: self.path.clone(),
            map,
            index: self.cell.clone(),
            layout: self.layout,
        })
    }
}

/// How much of the active segment one read copies ahead (a frame larger than
/// this gets a read of its own size, at most `MAX_FRAME_LEN`).
const CHUNK: u64 = 1 << 20;

/// The bytes of the active segment copied in big reads (`pread`, never
/// through a mapping: spec 7): `bytes` are the file's bytes from offset
/// `start`. A walk asks for each frame's bytes in turn; a frame the window
/// does not hold whole is read with the [`CHUNK`] bytes from its start, the
/// part already held carried over (moved to the front, not read again).
/// Memory: one chunk, or one frame when it is larger.
#[derive(Debug, Default)]
struct Window {
    start: u64,
    bytes: Vec<u8>,
}

impl Window {
    /// Forget the bytes held (a new walk reads the file afresh); large
    /// buffers are not kept.
    fn reset(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > CHUNK as usize {
            self.bytes = Vec::new();
        }
    }

    /// The file's bytes `[off, off + n)`, reading from `off` up to `ahead`
    /// bytes (at least `n`) when they are not all held. A file that ends
    /// before `off + n` (it shrank under the reader) is [`Error::Corrupt`]
    /// at `off`, naming how many bytes were expected.
    fn get(&mut self, file: &File, path: &Path, off: u64, n: usize, ahead: u64) -> Result<&[u8]> {
        let held = off
            .checked_sub(self.start)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i <= self.bytes.len());
        if let Some(i) = held
            && i.checked_add(n).is_some_and(|e| e <= self.bytes.len())
        {
            return Ok(&self.bytes[i..i + n]);
        }
        // Carry the bytes from `off` on over to the front, then read the rest.
        let keep = match held {
            Some(i) => {
                self.bytes.copy_within(i.., 0);
                self.bytes.len() - i
            }
            None => 0,
        };
        self.start = off;
        let want = usize::try_from(ahead).unwrap_or(usize::MAX).max(n);
        self.bytes.resize(want, 0);
        let got = keep + pread_upto(file, &mut self.bytes[keep..], off.saturating_add(keep as u64), path)?;
        self.bytes.truncate(got);
        if got < n {
            return Err(cut_while_read(path, off, n));
        }
        Ok(&self.bytes[..n])
    }

    /// Copy the frame at `off` of the active segment (read ahead up to
    /// `end`, never past it) and validate it: its header first (a frame
    /// header cut by the end of the file, or failing the header checks of
    /// spec 3.1, `frame_len` at most `MAX_FRAME_LEN` among them, is damage
    /// before its body is read), then its body, CRCs and the position it must
    /// start at (`next`). A frame that fits in the file but ends past `end`
    /// (the head's visible end) is [`Step::NotVisible`].
    #[expect(clippy::too_many_arguments, reason = "the walk's state, passed by the two walks")]
    fn frame(
        &mut self,
        file: &File,
        path: &Path,
        off: u64,
        end: u64,
        file_len: u64,
        next: u64,
        layout: Layout,
    ) -> Result<Step<'_>> {
        let min_hdr = if layout.compact() {
            FRAME_HEADER_V3_LEN
        } else {
            FRAME_HEADER_LEN
        };
        let Some(hdr_end) = off.checked_add(min_hdr as u64).filter(|&e| e <= file_len) else {
            return damaged(
                Damage::corrupt(
                    off,
                    format!(
                        "expected a {min_hdr}-byte frame header, found {} bytes before the end of the file",
                        file_len.saturating_sub(off)
                    ),
                ),
                path,
            );
        };
        if hdr_end > end {
            return Ok(Step::NotVisible);
        }
        let ahead = (end - off).min(CHUNK);
        // Version 3: up to the 64 bytes of a header with its chain slot.
        let hdr = (FRAME_HEADER_LEN as u64).min(file_len - off) as usize;
        let len = match parse_header(self.get(file, path, off, hdr.max(min_hdr), ahead)?, off, &layout) {
            Ok(h) => h.len,
            Err(d) => return damaged(d, path),
        };
        let Some(frame_end) = off.checked_add(len).filter(|&e| e <= file_len) else {
            return damaged(
                Damage::corrupt(
                    off.saturating_add(FRAME_LEN_OFFSET as u64),
                    format!(
                        "frame_len {len} runs past the end of the file ({} bytes remain)",
                        file_len.saturating_sub(off)
                    ),
                ),
                path,
            );
        };
        if frame_end > end {
            return Ok(Step::NotVisible);
        }
        // `parse_header` checked len <= MAX_FRAME_LEN: a bounded read.
        let Ok(len_usize) = usize::try_from(len) else {
            return damaged(
                Damage::corrupt(
                    off.saturating_add(FRAME_LEN_OFFSET as u64),
                    format!("frame_len {len} cannot be held in memory"),
                ),
                path,
            );
        };
        let bytes = self.get(file, path, off, len_usize, ahead)?;
        // A cursor over exactly this frame checks its header, that it starts
        // at `next`, and its body, as every reader of frames does.
        let step = FrameCursor::new(bytes, off, next, true, layout).step();
        match step.unwrap_or_else(|| Err(Damage::corrupt(off, "expected a frame, found no bytes"))) {
            Ok(f) => Ok(Step::Frame(f.frame, f.bytes)),
            Err(d) => damaged(d, path),
        }
    }
}

/// How many frames the validating walk adds to the in-memory index under
/// one taking of its write lock (views reading the index wait at most that
/// long).
const INDEX_LOCK_FRAMES: u32 = 1024;

/// One step of the copy-validating walk of the active segment.
enum Step<'a> {
    /// A complete, valid frame and its bytes (a copy).
    Frame(Frame, &'a [u8]),
    /// The frame at the offset runs past `end`: not visible yet.
    NotVisible,
    /// The frame at the offset is not complete (spec 3.1, 3.3).
    Damaged(Damage),
}

/// Damage met while copying a frame: a [`Step::Damaged`] (whether it is
/// corruption depends on the durable boundary), unless it is an I/O failure,
/// which is [`Error::Io`] naming the segment, never damage.
fn damaged(d: Damage, path: &Path) -> Result<Step<'static>> {
    if d.is_io() {
        return Err(d.at(path));
    }
    Ok(Step::Damaged(d))
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
        if !self.checkpoints_tried {
            self.checkpoints_tried = true;
            self.use_checkpoints(end);
        }
        self.window.reset();
        // The index's lock is taken once for many frames, not once a frame.
        let mut index = None;
        let mut indexed = 0u32;
        let stop = loop {
            let off = self.validated_end;
            if off >= end {
                break None;
            }
            let (f, bytes) = match self.window.frame(
                &self.file,
                &self.path,
                off,
                end,
                file_len,
                self.next_position,
                self.layout,
            )? {
                Step::Frame(f, bytes) => (f, bytes),
                Step::NotVisible => break None,
                Step::Damaged(d) => break Some(d),
            };
            if f.kind == FRAME_KIND_BATCH {
                index
                    .get_or_insert_with(|| self.index.write().unwrap_or_else(|p| p.into_inner()))
                    .add_frame(bytes, off, &self.layout);
                indexed += 1;
                if indexed.is_multiple_of(INDEX_LOCK_FRAMES) {
                    index = None;
                }
            }
            self.validated_end = off + f.len;
            self.next_position = f.next_position();
            self.max_durable = self.max_durable.max(f.durable_end);
        };
        drop(index);
        // Large buffers are not kept between refreshes.
        self.window.reset();
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

    /// Before the first walk: if index checkpoints (spec 17.5) cover the
    /// segment's start within `end` (the visible end), take their index and
    /// start the walk where they end, after copying and validating the last
    /// batch they cover (its position, timestamp and durable end continue
    /// the walk). A checkpoint that does not open or does not match the
    /// segment is not used (nor any after it): the walk covers its bytes.
    fn use_checkpoints(&mut self, end: u64) {
        let Some(dir) = self.path.parent() else { return };
        let Ok(all) = checkpoint::list(dir) else { return };
        let (chain, _) = checkpoint::chain(all, self.base, end);
        if chain.is_empty() {
            return;
        }
        let (file, path) = (&self.file, &*self.path);
        let layout = self.layout;
        let (files, _) = checkpoint::open_chain(&chain, |off| {
            let mut h = vec![0u8; FRAME_HEADER_LEN];
            let n = pread_upto(file, &mut h, off, path).ok()?;
            binding(h.get(..n)?, off, &layout)
        });
        let Some(last) = files.last() else { return };
        let ((off, _), (_, to)) = (last.checkpoint_binding(), last.covered());
        // The last batch, copied (never through a mapping) and validated in
        // full; `open_chain` checked that it is a batch ending at `to`.
        let Ok(len) = usize::try_from(to - off) else { return };
        let mut buf = vec![0u8; len];
        if pread(file, &mut buf, off, path).is_err() {
            return;
        }
        let Ok(h) = parse_header(&buf, off, &self.layout) else {
            return;
        };
        let first = h.first_position;
        let Some(Ok(f)) = FrameCursor::new(&buf, off, first, true, self.layout).step() else {
            return;
        };
        self.validated_end = to;
        self.next_position = f.frame.next_position();
        self.max_durable = self.max_durable.max(f.frame.durable_end);
        let used = files.len();
        let layered = Layered::new(
            files.into_iter().map(Index::Disk).collect(),
            chain.into_iter().take(used).map(|c| c.path).collect(),
            to,
            self.index.clone(),
        );
        self.cell.set(Index::Layered(Arc::new(layered)));
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
        self.window.reset();
        let stop = loop {
            if off >= file_len {
                break None;
            }
            let f = match self
                .window
                .frame(&self.file, &self.path, off, file_len, file_len, next, self.layout)?
            {
                Step::Frame(f, _) => f,
                // `end` is the file's length: every frame that fits is visible.
                Step::NotVisible => break None,
                Step::Damaged(d) => break Some(d),
            };
            max_durable = max_durable.max(f.durable_end);
            next = f.next_position();
            off += f.len;
        };
        self.window.reset();
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
        let best = resync_file(&self.file, &self.path, from, file_len, &self.layout)?;
        self.resync = Some((from, file_len, best));
        Ok(best)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is a failure"
)]
mod tests {
    use super::*;

    /// The window hands out exactly the file's bytes, whatever the ranges
    /// asked (inside a chunk, cut by its end, larger than a chunk), keeps
    /// at most a chunk or the range asked for, and a file that ends first is
    /// corruption at the range's start naming the bytes expected.
    #[test]
    fn the_window_gives_the_files_bytes_in_big_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 4 * CHUNK as usize + 1000;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut w = Window::default();
        let end = len as u64;
        let mut off = 0usize;
        for n in [72usize, 1000, CHUNK as usize - 500, 2 * CHUNK as usize, 600, 72] {
            let ahead = (end - off as u64).min(CHUNK);
            let got = w.get(&file, &path, off as u64, n, ahead).unwrap();
            assert_eq!(got, &data[off..off + n], "{off} + {n}");
            assert!(w.bytes.len() <= n.max(CHUNK as usize));
            off += n;
        }
        // Past the end of the file: cut while being read.
        let at = len as u64 - 10;
        match w.get(&file, &path, at, 72, 72) {
            Err(Error::Corrupt { offset, detail, .. }) => {
                assert_eq!(offset, at);
                assert!(detail.contains("expected 72 bytes"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        w.reset();
        assert!(w.bytes.is_empty());
    }
}
