//! One segment file, checked on its own (the parallel pass): its header,
//! the framing and CRC of every frame, stream versions within it, the
//! durable boundary and torn tail of the active segment, its seal, its part
//! of the audit chain ([`ChainLinks`]) and its index file
//! ([`check_index`]).
//!
//! Invariants: sealed segments are mapped, the active one copied frame by
//! frame; no frame longer than [`CheckOptions::max_batch_bytes`] is read,
//! and memory is bounded by the limits, never by a length read from the
//! file. Damage below the durable boundary (or anywhere in a sealed
//! segment) is a problem; a torn tail past it is a warning.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::checkpoints::check_checkpoints;
use super::compaction::{batch_span, system_events};
use super::files::{Opened, open_checked, read_at_into};
use super::idx::check_index;
use super::links::{ChainLinks, chain_slot};
use super::outcome::{BatchSpan, SegCtx, SegOut, StreamSpan, SystemEvent};
#[cfg(doc)]
use super::report::CheckOptions;
use super::report::{Finding, damage_finding, finding};
use crate::audit::chain::Chainer;
use crate::error::{Damage, Result};
use crate::format::frame::{Walk, frame_records, resync_max_durable, walk_segment};
use crate::format::frame::{parse_header, seal_len};
use crate::format::names::segment_file_name;
use crate::format::{
    FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_CHECKPOINT, FRAME_KIND_SEAL, Layout, LogFormat, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::index::MemIndex;
use crate::storage::mmap::Mapping;
use crate::storage::resync::resync_file;

/// Read a segment: sealed segments are mapped (annal never writes them
/// again); the last one is copied, because a writer may append to it.
enum SegBytes {
    Map(Mapping),
    Copy(Vec<u8>),
}

impl SegBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            SegBytes::Map(m) => m.bytes(),
            SegBytes::Copy(v) => v,
        }
    }
}

/// A frame claiming more than a writer writes: `(file offset, frame_len)`.
type Oversized = (u64, u64);

/// Bytes of the rest of the file `check` copies after a frame header that
/// does not parse (the walk reports the damage at its start; the durable
/// boundary past it is found by [`resync_file`] without a copy).
const TAIL_PEEK: u64 = 64 << 10;

/// Copy the active segment (a writer may append to it, so it is not mapped),
/// frame by frame: each frame header is read first, and a frame is copied
/// only if its `frame_len` is at most `max_frame`. Memory is bounded by the
/// frames that fit the limits, never by a length read from the file (a
/// sparse file of any length, a frame claiming 4 GiB). Returns the copy (a
/// prefix of the file, at the file's offsets) and the first frame claiming
/// more than `max_frame`, if any, as `(offset, frame_len)`.
fn read_active(f: &fs::File, path: &Path, len: u64, max_frame: u64) -> Result<(Vec<u8>, Option<Oversized>)> {
    let mut out = Vec::new();
    read_at_into(f, path, 0, len.min(SEGMENT_HEADER_LEN as u64), &mut out)?;
    let layout = layout_of(&out);
    let mut off = SEGMENT_HEADER_LEN as u64;
    while off < len && out.len() as u64 == off {
        let mut hdr = Vec::with_capacity(FRAME_HEADER_LEN);
        read_at_into(f, path, off, (len - off).min(FRAME_HEADER_LEN as u64), &mut hdr)?;
        let parsed = parse_header(&hdr, off, &layout).ok().map(|h| (h.len, h.kind));
        out.extend_from_slice(&hdr);
        let got = hdr.len() as u64;
        match parsed {
            Some((fl, _)) if fl > max_frame => return Ok((out, Some((off, fl)))),
            Some((fl, kind)) => {
                // frame_len >= the header's length (checked by the parse),
                // but a version-3 frame may be shorter than the bytes read
                // for its header: keep only the frame's.
                let n = fl.min(len - off);
                if n <= got {
                    out.truncate((off + n) as usize);
                } else {
                    read_at_into(f, path, off + got, n - got, &mut out)?;
                }
                if n < fl {
                    break;
                }
                // Copy on only past a frame that is whole and valid (the walk
                // stops at the first that is not): what is held is bounded by
                // valid frames, not by headers claiming lengths.
                let frame = out.get(off as usize..).unwrap_or_default();
                if crate::format::frame::validate_frame(frame, off, true, &layout).is_err() {
                    break;
                }
                off += fl;
                if off >= active_copy_max(max_frame) {
                    break;
                }
                if kind == FRAME_KIND_SEAL {
                    // Whatever follows a seal is reported as such by the walk.
                    read_at_into(f, path, off, (len - off).min(TAIL_PEEK), &mut out)?;
                    break;
                }
            }
            None => {
                let rest = len - off - got;
                read_at_into(f, path, off + got, rest.min(TAIL_PEEK), &mut out)?;
                break;
            }
        }
    }
    Ok((out, None))
}

/// The most of an active segment `check` copies: a writer's active segment
/// holds at most `segment_size` bytes of batches (256 MiB by default), or one
/// batch alone (spec 8), so this leaves room for both; past it the rest is
/// not checked (a warning says so).
fn active_copy_max(max_frame: u64) -> u64 {
    max_frame.saturating_mul(2).saturating_add(256 << 20)
}

/// The first frame of a mapped segment whose header claims more than
/// `max_frame` bytes, as `(offset, frame_len)`, found by stepping from header
/// to header (the bodies are not read).
fn oversized_frame(bytes: &[u8], max_frame: u64) -> Option<Oversized> {
    let layout = layout_of(bytes);
    let mut off = SEGMENT_HEADER_LEN as u64;
    loop {
        let b = bytes.get(usize::try_from(off).ok()?..)?;
        let fl = parse_header(b, off, &layout).ok()?.len;
        if fl > max_frame {
            return Some((off, fl));
        }
        off = off.checked_add(fl)?;
    }
}

/// The layout of the segment whose bytes start with `bytes` (versions 1 and
/// 2 if its header does not parse: it is reported as such elsewhere).
fn layout_of(bytes: &[u8]) -> Layout {
    SegmentHeader::parse(bytes).map_or(Layout::V2, Layout::of)
}

/// One segment file as read, and what deciding its durable boundary needs.
struct SegFile<'a> {
    ctx: &'a SegCtx<'a>,
    path: &'a Path,
    file: &'a fs::File,
    file_len: u64,
    /// The bytes read, never past a frame claiming more than a writer
    /// writes (at the file's offsets).
    bytes: &'a [u8],
    is_last: bool,
    /// The durable end the head states for this segment (0 if it names
    /// another).
    head_durable: u64,
}

/// What walking a segment's frames found.
struct Walked {
    walk: Walk,
    /// The segment's index, rebuilt from its batches.
    mem: MemIndex,
    spans: HashMap<Box<str>, StreamSpan>,
    /// Stream versions that do not continue within the segment.
    version_problems: Vec<Finding>,
    records: u64,
    /// Records sealed for a subject (spec 3.8).
    sealed_records: u64,
    /// A compacted segment's batches (spec 3.10).
    batches: Vec<BatchSpan>,
    /// The `$compaction` and `$meta-S` events (format version 4).
    system: Vec<SystemEvent>,
}

/// Check the segment at `base` (`is_last`: the active segment, which a
/// writer may still append to).
pub(super) fn check_segment(ctx: &SegCtx<'_>, base: u64, is_last: bool) -> Result<SegOut> {
    let path = ctx.dir.join(segment_file_name(base));
    let mut out = SegOut::new(base, path.clone());
    let Some((file, file_len)) = open_segment(&path, &mut out)? else {
        return Ok(out);
    };
    out.bytes = file_len;
    let (data, cut) = read_segment(ctx, &file, &path, file_len, is_last, &mut out)?;
    let all = data.bytes();
    // Never past a frame claiming more than a writer writes: its bytes are
    // not read (memory and time bounded by the limits, not by the file).
    let bytes = match cut {
        Some((off, _)) => all
            .get(..(off as usize).saturating_add(FRAME_HEADER_LEN))
            .unwrap_or(all),
        None => all,
    };
    let seg = SegFile {
        ctx,
        path: &path,
        file: &file,
        file_len,
        bytes,
        is_last,
        head_durable: ctx.head.filter(|h| h.segment_base == base).map_or(0, |h| h.durable_end),
    };
    let header = match SegmentHeader::parse(bytes) {
        Ok(h) => h,
        Err(d) => {
            seg.header_damage(&d, &mut out)?;
            ctx.advance(file_len);
            return Ok(out);
        }
    };
    let Walked { walk, mem, .. } = seg.walk(header, cut, &mut out);
    seg.classify_end(&walk, &mut out)?;

    // The index of a sealed segment.
    // (A sealed last segment followed by a torn tail, which the next writer
    // open cuts, is complete up to its seal: its index and the stream table
    // describe that part, spec 6.)
    if out.complete && walk.sealed {
        let bytes = bytes.get(..walk.end as usize).unwrap_or(bytes);
        check_index(ctx, base, bytes, is_last, &mem, &mut out)?;
    } else if out.complete && is_last {
        // The active segment's index checkpoints (spec 17.5).
        let bytes = bytes.get(..walk.end as usize).unwrap_or(bytes);
        let (problems, warnings) = check_checkpoints(ctx, base, bytes, &mem)?;
        out.problems.extend(problems);
        out.warnings.extend(warnings);
    }
    Ok(out)
}

/// Open the segment file; `None` (with a problem) if it is gone or is not
/// a regular file.
fn open_segment(path: &Path, out: &mut SegOut) -> Result<Option<(fs::File, u64)>> {
    match open_checked(path)? {
        Opened::File(f, len) => Ok(Some((f, len))),
        Opened::Missing => {
            out.problems.push(finding(
                path,
                0,
                "the segment file was listed, then could not be found: it was removed while the log was checked",
            ));
            Ok(None)
        }
        Opened::NotRegular(d) => {
            out.problems.push(finding(path, 0, d));
            Ok(None)
        }
    }
}

/// Read the segment (the active one copied, a sealed one mapped), and find
/// the first frame claiming more than a writer writes.
fn read_segment(
    ctx: &SegCtx<'_>,
    file: &fs::File,
    path: &Path,
    file_len: u64,
    is_last: bool,
    out: &mut SegOut,
) -> Result<(SegBytes, Option<Oversized>)> {
    if !is_last {
        // SAFETY: not the last segment, so a sealed one: annal never writes
        // it again (mmap module, case 1).
        let m = unsafe { Mapping::map(file, file_len, path) }?;
        // Walked whole, in order (more than once): undo the random-access
        // advice every mapping starts with (`storage::mmap`).
        m.sequential();
        let cut = oversized_frame(m.bytes(), ctx.max_frame);
        return Ok((SegBytes::Map(m), cut));
    }
    let (v, cut) = read_active(file, path, file_len, ctx.max_frame)?;
    let copied = v.len() as u64;
    if copied >= active_copy_max(ctx.max_frame) && copied < file_len {
        out.warnings.push(finding(
            path,
            copied,
            format!(
                "the active segment is {file_len} bytes, more than check holds of an active segment \
                 ({} bytes, from max_batch_bytes): the bytes from here on were not checked",
                active_copy_max(ctx.max_frame)
            ),
        ));
    }
    Ok((SegBytes::Copy(v), cut))
}

impl SegFile<'_> {
    /// The durable boundary rule 2 (spec 5.1) looks at every frame header
    /// past `from`, also in the part of the file not copied.
    fn resync(&self, from: u64) -> Result<u64> {
        let copied = self.bytes.len() as u64;
        let layout = layout_of(self.bytes);
        let mut best = resync_max_durable(self.bytes, from, &layout);
        if copied < self.file_len {
            let start = from.max(copied.saturating_sub(FRAME_HEADER_LEN as u64));
            best = best.max(resync_file(self.file, self.path, start, self.file_len, &layout)?);
        }
        Ok(best)
    }

    /// A segment header that does not parse (`d`).
    fn header_damage(&self, d: &Damage, out: &mut SegOut) -> Result<()> {
        let (path, ctx) = (self.path, self.ctx);
        let boundary = self.head_durable.max(self.resync(SEGMENT_HEADER_LEN as u64)?);
        if self.is_last && boundary <= SEGMENT_HEADER_LEN as u64 && !ctx.writer_active {
            out.warnings.push(finding(
                path,
                d.offset,
                format!(
                    "{} in the segment header of the active segment, which holds no durable data; the next \
                     writer open (or annal check --repair) rewrites it",
                    d.detail()
                ),
            ));
        } else if !(self.is_last && ctx.writer_active && self.file_len < SEGMENT_HEADER_LEN as u64) {
            out.problems.push(damage_finding(path, d));
        }
        Ok(())
    }

    /// Walk the frames after a valid `header`: versions, records, the audit
    /// chain, the seal; fills `out` with all but how the walk ended.
    fn walk(&self, header: &SegmentHeader, cut: Option<Oversized>, out: &mut SegOut) -> Walked {
        let (path, ctx) = (self.path, self.ctx);
        out.log_id = Some(header.log_id);
        let format = LogFormat::of(header);
        out.format = Some(format);
        out.chain_start = header.chain_start;
        out.prev_timestamp = header.prev_timestamp.get();
        out.compacted = Layout::of(header).compacted;
        // The links are recomputed when the chain is unkeyed, or keyed and the
        // key given is the log's (the sequential pass reports the other cases).
        let layout = Layout::of(header);
        let chainer = match (format.chained(), format.keyed(), ctx.key) {
            (true, false, _) => Some(Chainer::new(None).for_layout(&layout)),
            (true, true, Some(k)) if k.id() == format.key_id => Some(Chainer::new(Some(k)).for_layout(&layout)),
            _ => None,
        };
        let mut chain = ChainLinks::new(header.chain_start, layout);
        let base = out.base;
        if header.base_position.get() != base {
            out.problems.push(finding(
                path,
                32,
                format!(
                    "expected base_position {base} (from the file name), found {}",
                    header.base_position.get()
                ),
            ));
        }
        let mut walked = self.walk_frames(header, &format, chainer.as_ref(), &mut chain);
        if let Some((off, len)) = cut
            && walked.walk.end == off
            && walked.walk.stop.is_some()
        {
            walked.walk.stop = Some(Damage::corrupt(
                off + crate::format::FRAME_LEN_OFFSET as u64,
                format!(
                    "frame_len {len} is more than the largest frame a writer writes (max_batch_bytes {}); the \
                     frame was not read (give the writer's max_batch_bytes if it was raised)",
                    ctx.max_frame
                ),
            ));
        }
        out.records = walked.records;
        out.batches = std::mem::take(&mut walked.batches);
        out.system = std::mem::take(&mut walked.system);
        out.sealed_records = walked.sealed_records;
        out.problems.append(&mut walked.version_problems);
        out.spans = std::mem::take(&mut walked.spans).into_iter().collect();
        out.next_position = walked.walk.next_position;
        out.sealed = walked.walk.sealed;
        if walked.walk.sealed {
            let seal_off = walked.walk.end.saturating_sub(seal_len(&layout) as u64);
            let seal = chain_slot(self.bytes.get(seal_off as usize..).unwrap_or_default(), &layout);
            out.seal_chain = Some((seal_off, seal));
            chain.seal(path, format.chained(), seal, seal_off, walked.walk.next_position);
            chain.require_checkpoint(ctx, path, format.chained(), layout.compacted, seal_off);
        }
        chain.finish(out);
        walked
    }

    /// The walk itself: each complete frame handed to the stream versions,
    /// the chain and the rebuilt index, with progress every 8 MiB.
    fn walk_frames(
        &self,
        header: &SegmentHeader,
        format: &LogFormat,
        chainer: Option<&Chainer<'_>>,
        chain: &mut ChainLinks,
    ) -> Walked {
        let (path, ctx) = (self.path, self.ctx);
        let mut mem = MemIndex::default();
        let mut spans: HashMap<Box<str>, StreamSpan> = HashMap::new();
        let mut version_problems = Vec::new();
        let mut records = 0u64;
        let mut sealed_records = 0u64;
        let mut batches = Vec::new();
        let mut system = Vec::new();
        let mut reported = 0u64;
        let seg_start = self.bytes.as_ptr() as usize;
        let layout = Layout::of(header);
        let walk = walk_segment(self.bytes, header, true, |frame, f| {
            let off = (frame.as_ptr() as usize - seg_start) as u64;
            if f.kind == FRAME_KIND_CHECKPOINT {
                chain.checkpoint(ctx, path, format, frame, f, off);
                return;
            }
            if f.kind != FRAME_KIND_BATCH {
                return;
            }
            records += f.count as u64;
            if layout.version >= 4 {
                sealed_records += frame_records(frame, &layout)
                    .filter(|r| r.subject_key().is_some())
                    .count() as u64;
            }
            if layout.version >= 4 {
                system_events(frame, f, off, &layout, &spans, &mut system);
            }
            if layout.compacted {
                batches.extend(batch_span(frame, f, off, &layout));
            }
            // In a compacted segment, versions skip where events were
            // removed: the compaction record's runs account for that
            // (`compaction`), not this walk.
            let versions = if layout.compacted {
                &mut Vec::new()
            } else {
                &mut version_problems
            };
            track_versions(path, frame, f, off, &layout, &mut spans, versions);
            chain.batch(ctx, path, format.chained(), chainer, frame, f, off);
            mem.add_frame(frame, off, &layout);
            let end = off + f.len;
            if end - reported >= 8 << 20 {
                ctx.advance(end - reported);
                reported = end;
            }
        });
        ctx.advance(self.file_len - reported.min(self.file_len));
        Walked {
            walk,
            mem,
            spans,
            version_problems,
            records,
            sealed_records,
            batches,
            system,
        }
    }

    /// How the walk ended: complete, a missing seal, damage in a sealed
    /// segment, damage below the durable boundary, or a torn tail past it.
    fn classify_end(&self, walk: &Walk, out: &mut SegOut) -> Result<()> {
        let (path, file_len) = (self.path, self.file_len);
        match &walk.stop {
            None if !self.is_last && !walk.sealed => {
                out.problems.push(finding(
                    path,
                    walk.end,
                    "expected a seal frame at the end of a segment that has a successor, found the end of the file",
                ));
            }
            None => {
                out.complete = true;
                let head_durable = self.head_durable;
                if head_durable > file_len {
                    out.problems.push(finding(
                        path,
                        file_len,
                        format!("the head says bytes up to {head_durable} are durable, but the file ends here"),
                    ));
                }
            }
            Some(d) if !self.is_last => {
                out.problems.push(finding(
                    path,
                    d.offset,
                    format!(
                        "{} (in a sealed segment, which is durable in full: this is damage, not a torn write)",
                        d.detail()
                    ),
                ));
            }
            Some(d) => self.tail_damage(walk, d, out)?,
        }
        Ok(())
    }

    /// The active segment's walk stopped at `d`: damage if below the
    /// durable boundary, else a torn tail (or the writer's work in progress).
    fn tail_damage(&self, walk: &Walk, d: &Damage, out: &mut SegOut) -> Result<()> {
        let (path, file_len) = (self.path, self.file_len);
        let x = walk.end;
        let boundary = (SEGMENT_HEADER_LEN as u64)
            .max(walk.max_durable)
            .max(self.resync(x)?)
            .max(self.head_durable);
        if x < boundary {
            out.problems.push(finding(
                path,
                d.offset,
                format!(
                    "{}; the damaged frame starts at byte {x}, below the durable boundary at byte {boundary}, \
                     so this is damage to durable data, not a torn write",
                    d.detail()
                ),
            ));
            return Ok(());
        }
        out.complete = true;
        let n = file_len.saturating_sub(x);
        let detail = if self.ctx.writer_active {
            format!("the writer is still writing bytes {x}..{file_len} ({n} bytes); not checked")
        } else {
            format!(
                "torn tail: the {n} bytes from byte {x} (past the durable boundary at byte {boundary}) are \
                 an incomplete write ({}); the next writer open (or annal check --repair) removes them",
                d.detail()
            )
        };
        out.warnings.push(finding(path, x, detail));
        Ok(())
    }
}

/// Stream versions within the segment: the batch `frame` (file offset
/// `off`) must continue its stream's versions (spans of earlier segments
/// are compared in the sequential pass).
fn track_versions(
    path: &Path,
    frame: &[u8],
    f: &crate::format::frame::Frame,
    off: u64,
    layout: &Layout,
    spans: &mut HashMap<Box<str>, StreamSpan>,
    version_problems: &mut Vec<Finding>,
) {
    let Some(r) = frame_records(frame, layout).next() else {
        return;
    };
    let v = r.stream_version();
    // Batch validation checked that v + (count - 1) fits (count >= 1).
    let last = v.saturating_add(f.count as u64 - 1);
    match spans.get_mut(r.stream()) {
        Some(s) => {
            // Checked: versions come from the file (found by fuzzing).
            if s.last_version.checked_add(1) != Some(v) {
                let field = if layout.compact() {
                    let body = frame.get(f.header_len as usize..).unwrap_or_default();
                    f.header_len as usize + crate::format::batch::peek_stream(body).map_or(0, |(_, at)| at)
                } else {
                    FRAME_HEADER_LEN + crate::format::RECORD_STREAM_VERSION_OFFSET
                };
                version_problems.push(finding(
                    path,
                    off + field as u64,
                    format!(
                        "expected stream {:?} to continue at version {}, found version {v}",
                        r.stream(),
                        s.last_version.saturating_add(1)
                    ),
                ));
            }
            s.last_version = last;
        }
        None => {
            spans.insert(
                r.stream().into(),
                StreamSpan {
                    first_version: v,
                    first_offset: off,
                    last_version: last,
                },
            );
        }
    }
}
