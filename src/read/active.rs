//! The active segment as a [`Reader`](crate::Reader) in another process sees
//! it: every new frame is copied (`pread`, never through a mapping: spec 7)
//! and validated before the bytes up to it are mapped, and damage is told
//! from a torn or in-progress write by the durable boundary (spec 5.1).
//!
//! Invariants: `validated_end` only grows over complete frames whose
//! positions follow each other from the segment's base; an incomplete frame
//! below the durable boundary is [`Error::Corrupt`] naming the segment, at or
//! past it the walk stops quietly; memory stays bounded (one frame, at most
//! `MAX_FRAME_LEN`, and a resync scan in bounded pieces).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Damage, Error, Result};
use crate::format::frame::{Frame, FrameCursor};
use crate::format::names::{LOCK_FILE, segment_file_name};
use crate::format::{FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_LEN_OFFSET, FrameHeader, SEGMENT_HEADER_LEN};
use crate::index::{Index, IndexCell, MemIndex};
use crate::read::logview::ViewSegment;
use crate::read::sealed::{pread, read_segment_header};
use crate::storage::head::Head;
use crate::storage::mmap::Mapping;
use crate::storage::resync::{RESYNC_CHUNK, resync_file};

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
    buf: Vec<u8>,
}

impl ActiveRead {
    /// Open the segment based at `base` in `dir` (its header checked),
    /// with nothing validated yet.
    pub(super) fn open(dir: &Path, base: u64) -> Result<ActiveRead> {
        let path = dir.join(segment_file_name(base));
        let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
        read_segment_header(&file, &path, base)?;
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
            buf: Vec::new(),
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
        })
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
        return damaged(
            Damage::corrupt(
                off,
                format!(
                    "expected a {FRAME_HEADER_LEN}-byte frame header, found {} bytes before the end of the file",
                    file_len.saturating_sub(off)
                ),
            ),
            path,
        );
    };
    if hdr_end > end {
        return Ok(Step::NotVisible);
    }
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    pread(file, &mut hdr, off, path)?;
    let len = match FrameHeader::parse(&hdr, off) {
        Ok(h) => h.frame_len.get(),
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
    // `FrameHeader::parse` checked len <= MAX_FRAME_LEN: a bounded allocation.
    let Ok(len_usize) = usize::try_from(len) else {
        return damaged(
            Damage::corrupt(
                off.saturating_add(FRAME_LEN_OFFSET as u64),
                format!("frame_len {len} cannot be held in memory"),
            ),
            path,
        );
    };
    buf.resize(len_usize, 0);
    pread(file, buf, off, path)?;
    // The copy holds exactly this frame: the cursor checks its header, that
    // it starts at `next`, and its body, as every reader of frames does.
    let step = FrameCursor::new(buf, off, next, true).step();
    match step.unwrap_or_else(|| Err(Damage::corrupt(off, "expected a frame, found no bytes"))) {
        Ok(f) => Ok(Step::Frame(f.frame, frame_end)),
        Err(d) => damaged(d, path),
    }
}

/// Damage met while copying a frame: a [`Step::Damaged`] (whether it is
/// corruption depends on the durable boundary), unless it is an I/O failure,
/// which is [`Error::Io`] naming the segment, never damage.
fn damaged(d: Damage, path: &Path) -> Result<Step> {
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
