//! Index checkpoints of the active segment (spec 17.5): when the log is
//! closed, the in-memory index of the batches not yet covered by a
//! checkpoint is written as a checkpoint file, so that the next open reads
//! no batch it covers. Small checkpoints are merged into the one before
//! them as they accumulate, so a segment has few.
//!
//! Invariants: a checkpoint covers only batches that are durable (the
//! segment was fsynced up to its end before it is written); the files of
//! a segment cover consecutive ranges from offset 128 on; a merged file is
//! durable (written by [`write_derived`]) before the files it replaces are
//! removed, so a crash leaves either set, and the next open chooses the
//! longest chain and removes the rest; each file is at least twice the
//! size of the range after it, so a segment of `n` bytes has at most about
//! `log2(n / 4096)` of them, and merging costs each byte `O(log n)` over
//! the segment's life.

use std::io;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::format::frame::binding_at;
use crate::format::names::checkpoint_file_name;
use crate::format::{Layout, SEGMENT_HEADER_LEN};
use crate::index::checkpoint::{self, CheckpointFile};
use crate::index::{Index, MemIndex};
use crate::storage::io::write_derived;

use super::lock;
use super::state::{Checkpoints, Inner, read_index};

impl Inner {
    /// Write an index checkpoint of the active segment's batches that end at
    /// or before `durable` (an offset up to which the segment is durable)
    /// and that no checkpoint covers yet, merging it with the smaller
    /// checkpoints before it.
    pub(super) fn write_index_checkpoint(&self, durable: u64) -> Result<()> {
        let base = lock(&self.published).active_base;
        self.write_index_checkpoint_of(base, durable)
    }

    /// [`Inner::write_index_checkpoint`] if the active segment is still the
    /// one based at `base`.
    pub(super) fn write_index_checkpoint_of(&self, base: u64, durable: u64) -> Result<()> {
        let seg = self.active_view_segment()?;
        if seg.base != base {
            return Ok(());
        }
        let bytes = seg.bytes()?;
        let (tail, layered) = match seg.index.current() {
            Some(Index::Mem(m)) => (m, None),
            Some(Index::Layered(l)) => (l.tail.clone(), Some(l)),
            _ => return Ok(()),
        };
        let mut ck = lock(&self.checkpoints);
        if ck.base != seg.base {
            *ck = Checkpoints {
                base: seg.base,
                files: Vec::new(),
            };
        }
        let Some((last_off, end, crc)) = last_durable_batch(&tail, bytes, durable, &seg.layout) else {
            return Ok(());
        };
        // A base found damaged is written again in full.
        let rewrite = layered.as_ref().filter(|l| !l.base_on_disk());
        let covered = ck.files.last().map_or(SEGMENT_HEADER_LEN as u64, |f| f.to);
        if end <= covered && rewrite.is_none() {
            return Ok(());
        }
        let mut replaced: Vec<CheckpointFile> = Vec::new();
        let (mut from, mut mem) = if let Some(l) = rewrite {
            replaced.append(&mut ck.files);
            let all = l.merged().map_err(|d| d.at(&*seg.path))?;
            (SEGMENT_HEADER_LEN as u64, all.range(0, end))
        } else {
            (covered, read_index(&tail).range(covered, end))
        };
        // Merge while the checkpoint before is not at least twice as large.
        while let Some(prev) = ck.files.last().cloned()
            && prev.to - prev.from <= 2 * (end - from)
        {
            let f = checkpoint::open(&prev, |o| binding_at(bytes, o, &seg.layout)).map_err(|d| d.at(&prev.path))?;
            let mut m = MemIndex::from_idx(&f).map_err(|d| d.at(&prev.path))?;
            m.append(&mem);
            mem = m;
            from = prev.from;
            replaced.extend(ck.files.pop());
        }
        let out = mem.encode_checkpoint(seg.base, (from, end), last_off, crc, self.opts.hash_mask, bytes);
        let path = self.dir.join(checkpoint_file_name(seg.base, from, end));
        let fs = &*self.opts.io;
        write_derived(fs, &self.dir, &path, &out)?;
        for r in &replaced {
            match fs.remove(&r.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &r.path, e)),
            }
        }
        ck.files.push(CheckpointFile {
            base: seg.base,
            from,
            to: end,
            path,
        });
        Ok(())
    }

    /// Remove the index checkpoints of the segment based at `base`, once its
    /// index file is written (the sealer).
    pub(super) fn remove_checkpoints_of(&self, base: u64) -> Result<()> {
        let fs = &*self.opts.io;
        let mut ck = lock(&self.checkpoints);
        if ck.base == base {
            for f in std::mem::take(&mut ck.files) {
                match fs.remove(&f.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &f.path, e)),
                }
            }
        }
        Ok(())
    }
}

/// The newest batch of `tail` that ends at or before `durable` within
/// `segment`: its offset, end and header CRC.
fn last_durable_batch(
    tail: &Arc<RwLock<MemIndex>>,
    segment: &[u8],
    durable: u64,
    layout: &Layout,
) -> Option<(u64, u64, u32)> {
    let t = read_index(tail);
    // The newest batches may lie past what the view maps (not yet visible)
    // or past `durable`: skipped.
    let limit = durable.min(segment.len() as u64);
    let n = t.frames.partition_point(|f| f.1 < limit);
    for &(_, off) in t.frames.get(..n).unwrap_or(&[]).iter().rev() {
        let Some(b) = binding_at(segment, off, layout) else {
            continue;
        };
        let Some(end) = off.checked_add(b.len) else {
            continue;
        };
        if end <= durable && end <= segment.len() as u64 {
            return Some((off, end, b.header_crc));
        }
    }
    None
}
