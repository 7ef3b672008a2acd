//! The index file of one sealed segment (spec 16, 17): decoded, then
//! compared byte for byte with the index rebuilt from the segment, leaving
//! out its back pointers (which the sequential pass checks against earlier
//! segments).
//!
//! Invariants: no more of the file is read than the rebuilt index and one
//! byte; a file replaced while it was read is not compared (a warning); a
//! missing index is a warning where a crash or a writer in progress leaves
//! one, a problem otherwise; so is the index of a compacted segment that
//! still describes the original (a crash between compaction's swap and the
//! index file's rewrite, spec 3.10). The segment's stream rows (`SegOut::rows`) are
//! always filled for a sealed segment, for the stream table.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::derived::{compare_derived, exact_finding, first_difference};
use super::files::{Opened, hash_mask_of, open_checked, read_prefix, still_names, u64_at};
use super::outcome::{IdxState, SegCtx, SegOut};
use super::report::{damage_finding, finding};
use crate::error::{Damage, Result};
use crate::format::names::index_file_name;
use crate::format::{IDX_HEADER_LEN, IDX_SEGMENT_BASE_OFFSET, INDEX_VERSION_1, INDEX_VERSION_2, idx_lens};
use crate::index::{self, IdxFile, MemIndex, NO_ROW, Prev};

/// The index of a sealed segment, and what it is compared with.
struct SealedIdx<'a> {
    ctx: &'a SegCtx<'a>,
    base: u64,
    /// The segment's bytes up to the end of its seal.
    bytes: &'a [u8],
    /// The index rebuilt from those bytes (without back pointers).
    mem: &'a MemIndex,
    path: PathBuf,
    seal_crc: u32,
}

/// Check the index file of the sealed segment at `base`, whose bytes up to
/// its seal are `bytes` and whose rebuilt index is `mem`; sets `out.idx`,
/// `out.idx_bytes` and `out.rows`.
pub(super) fn check_index(
    ctx: &SegCtx<'_>,
    base: u64,
    bytes: &[u8],
    is_last: bool,
    mem: &MemIndex,
    out: &mut SegOut,
) -> Result<()> {
    let idx = SealedIdx {
        ctx,
        base,
        bytes,
        mem,
        path: ctx.dir.join(index_file_name(base)),
        seal_crc: index::seal_crc(bytes).unwrap_or(0),
    };
    let opened = open_checked(&idx.path)?;
    let idx_open = match &opened {
        Opened::NotRegular(d) => Err(Damage::corrupt(0, d.clone())),
        Opened::Missing => Ok((None, None)),
        Opened::File(f, len) => IdxFile::open_for(&idx.path, base, bytes).map(|x| (x, Some((f, *len)))),
    };
    match idx_open {
        Err(d) if d.is_io() => return Err(d.at(&idx.path)),
        Ok((None, _)) => idx.missing(is_last, out),
        Err(d) => idx.damaged(&d, &opened, out)?,
        Ok((Some(_), None)) => {}
        Ok((Some(file), Some((f, idx_len)))) => idx.compare(&file, f, idx_len, out)?,
    }
    if out.rows.is_empty() && !mem.streams.is_empty() {
        let (_, rows) = mem.encode(
            base,
            bytes.len() as u64,
            idx.seal_crc,
            hash_mask_of(ctx.dir),
            &mut |_| Prev::NONE,
            bytes,
        );
        out.rows = rows;
    }
    debug_assert!(out.rows.iter().all(|r| r.1 != NO_ROW));
    Ok(())
}

impl SealedIdx<'_> {
    /// The index rebuilt from the segment in layout `version` (the file's:
    /// `check` compares like with like, so a version 1 file written by an
    /// earlier writer is not a difference), or in the layout a writer
    /// chooses if `version` is neither 1 nor 2 or the segment does not fit
    /// version 2.
    fn rebuilt(
        &self,
        version: Option<u16>,
        mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
    ) -> (Vec<u8>, Vec<index::StreamRowSummary>) {
        let len = self.bytes.len() as u64;
        let own = version
            .filter(|v| matches!(*v, INDEX_VERSION_1 | INDEX_VERSION_2))
            .and_then(|v| {
                self.mem
                    .encode_version(v, self.base, len, self.seal_crc, mask, resolve, self.bytes)
            });
        match own {
            Some(e) => e,
            None => self
                .mem
                .encode(self.base, len, self.seal_crc, mask, resolve, self.bytes),
        }
    }

    /// No index file.
    fn missing(&self, is_last: bool, out: &mut SegOut) {
        out.idx = IdxState::Missing;
        let f = finding(
            &self.path,
            0,
            "the index file is missing; the next writer open (or annal check --repair) rebuilds it",
        );
        // A writer's sealer thread indexes sealed segments in the
        // background and may lag several segments behind a burst of
        // rolls: while a writer holds the log, a missing index is in
        // progress, and after a crash the sealed segments after the
        // last one indexed may all lack theirs (spec 17.4).
        let after_last_indexed = self.ctx.last_indexed.is_none_or(|b| self.base > b);
        if is_last || self.ctx.writer_active || after_last_indexed {
            out.warnings.push(f);
        } else {
            out.problems.push(f);
        }
    }

    /// An index file that does not decode (`d`), or is not a regular file.
    fn damaged(&self, d: &Damage, opened: &Opened, out: &mut SegOut) -> Result<()> {
        out.idx = IdxState::Damaged;
        out.idx_bytes = fs::symlink_metadata(&self.path).map_or(0, |m| m.len());
        let mut f = damage_finding(&self.path, d);
        let mut stale = false;
        if let Opened::File(file, _) = opened {
            // Name the first byte that differs from the index
            // rebuilt from the segment (spec 16), with the log's
            // hash mask (the file's own may be the damaged byte).
            let head = read_prefix(file, &self.path, IDX_HEADER_LEN as u64)?;
            // The index of the segment compaction rewrote, as it was before
            // (spec 3.10: a crash between the swap and the index file's
            // rewrite leaves it; it names the same base and the original's
            // greater length).
            stale = out.compacted
                && d.offset == IDX_SEGMENT_BASE_OFFSET as u64
                && u64_at(&head, IDX_SEGMENT_BASE_OFFSET) == Some(self.base)
                && u64_at(&head, IDX_SEGMENT_BASE_OFFSET + 8).is_some_and(|l| l > self.bytes.len() as u64);
            let version = index_version_of(&head);
            let (expected, rows) = self.rebuilt(version, hash_mask_of(self.ctx.dir), &mut |_| Prev::NONE);
            let found = read_prefix(file, &self.path, expected.len() as u64 + 1)?;
            if let Some(at) = first_difference(&expected, &found, rows.len()) {
                f = exact_finding(&self.path, d, at, &expected, &found);
            }
            out.rows = rows;
        }
        if stale {
            out.warnings.push(finding(
                &self.path,
                f.offset,
                format!(
                    "the index file still describes the segment as it was before compaction rewrote it (a crash \
                     between the swap and the index file's rewrite, spec 3.10), not damage of the log: readers \
                     rebuild what it says from the segment, and annal check --repair writes it again: {}",
                    f.detail
                ),
            ));
        } else {
            out.problems.push(f);
        }
        Ok(())
    }

    /// An index file that decodes (`file`, open as `f`, `idx_len` bytes):
    /// its bytes against the index rebuilt with the back pointers it holds.
    fn compare(&self, file: &IdxFile, f: &fs::File, idx_len: u64, out: &mut SegOut) -> Result<()> {
        let path: &Path = &self.path;
        out.idx_bytes = idx_len;
        let mask = u64_at(&read_prefix(f, path, IDX_HEADER_LEN as u64)?, 32).unwrap_or(u64::MAX);
        let mut prevs: HashMap<Box<str>, Prev> = HashMap::new();
        let mut lookup_damage = None;
        for name in self.mem.streams.keys() {
            match file.find_stream(name) {
                Ok(Some(info)) => {
                    prevs.insert(name.clone(), info.prev.unwrap_or(Prev::NONE));
                }
                Ok(None) => {}
                Err(d) => {
                    lookup_damage.get_or_insert(d);
                }
            }
        }
        let (expected, rows) = self.rebuilt(Some(file.version()), mask, &mut |n| {
            prevs.get(n).copied().unwrap_or(Prev::NONE)
        });
        // No more than the rebuilt index and one byte: enough to tell
        // any difference, bounded by what the segment says.
        let found = read_prefix(f, path, expected.len() as u64 + 1)?;
        if !still_names(path, f) {
            // Replaced (a writer rebuilt it) while it was read: the
            // file decoded is not the one compared.
            out.idx = IdxState::Missing;
            out.warnings.push(finding(
                path,
                0,
                "the index file was replaced while it was checked (a writer rebuilt it); not compared",
            ));
        } else if let Some(d) = lookup_damage {
            // A block fails its CRC: name the first byte that differs
            // from the rebuilt index (spec 16), leaving out the back
            // pointers, which this segment alone cannot tell; if only
            // those differ, the block.
            out.idx = IdxState::Damaged;
            out.problems
                .push(match first_difference(&expected, &found, rows.len()) {
                    Some(at) => exact_finding(path, &d, at, &expected, &found),
                    None => damage_finding(path, &d),
                });
        } else if let Some(f) = compare_derived(
            path,
            &expected,
            &found,
            idx_len,
            IDX_HEADER_LEN,
            idx_lens(file.version()).stream_row,
        ) {
            out.idx = IdxState::Damaged;
            out.problems.push(f);
        } else {
            out.idx = IdxState::Valid(
                rows.iter()
                    .map(|(n, r, _)| (n.clone(), *r, prevs.get(n).copied().unwrap_or(Prev::NONE)))
                    .collect(),
            );
        }
        out.rows = rows;
        Ok(())
    }
}

/// The `index_version` of an index file's first bytes, if it has them.
pub(super) fn index_version_of(head: &[u8]) -> Option<u16> {
    let at = std::mem::offset_of!(crate::format::IdxHeader, index_version);
    head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}
