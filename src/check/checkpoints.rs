//! The index checkpoints of the active segment (spec 17.5): each file of the
//! chain a reader would use is opened as a reader opens it (footer, blocks,
//! header, binding to the segment), then compared byte for byte with the
//! checkpoint rebuilt from the segment's batches of its range; files outside
//! the chain are reported as left over.
//!
//! Invariants: no more of a file is read than the rebuilt checkpoint and
//! one byte; damage of a checkpoint is a problem of that file, never of the
//! segment (a writer removes it and rebuilds what it said from the segment).

use std::path::Path;

use super::derived::compare_derived;
use super::files::{Opened, hash_mask_of, open_checked, read_prefix, u64_at};
use super::outcome::SegCtx;
use super::report::{Finding, damage_finding, finding};
use crate::error::Result;
use crate::format::{IDX_HASH_MASK_OFFSET, IDX_HEADER_LEN, idx_lens};
use crate::index::MemIndex;
use crate::index::checkpoint;

/// Check the checkpoints of the active segment based at `base`, whose
/// complete batches are `bytes` (up to the end of the last) and whose index,
/// rebuilt from them, is `mem`. Returns `(problems, warnings)`.
pub(super) fn check_checkpoints(
    ctx: &SegCtx<'_>,
    base: u64,
    bytes: &[u8],
    mem: &MemIndex,
) -> Result<(Vec<Finding>, Vec<Finding>)> {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let all = checkpoint::list(ctx.dir)?;
    let (chain, rest) = checkpoint::chain(all, base, bytes.len() as u64);
    // A checkpoint of this segment reaching past its complete batches is
    // explained by the segment's own findings (bytes a checkpoint covered
    // were durable, spec 17.5): not reported again here.
    for c in rest
        .into_iter()
        .filter(|c| c.base != base || c.to <= bytes.len() as u64)
    {
        warnings.push(finding(
            &c.path,
            0,
            format!(
                "index checkpoint of bytes [{}, {}) of segment {}: not part of the active segment's chain (left \
                 over from a merge, a seal or a crash); the next writer open removes it",
                c.from, c.to, c.base
            ),
        ));
    }
    let mask = hash_mask_of(ctx.dir);
    for c in &chain {
        let file = match open_checked(&c.path)? {
            Opened::File(f, len) => (f, len),
            Opened::Missing => continue,
            Opened::NotRegular(d) => {
                problems.push(finding(&c.path, 0, d));
                break;
            }
        };
        let layout =
            crate::format::SegmentHeader::parse(bytes).map_or(crate::format::Layout::V2, crate::format::Layout::of);
        let opened = match checkpoint::open(c, |o| crate::format::frame::binding_at(bytes, o, &layout)) {
            Ok(f) => f,
            Err(d) if d.is_io() => return Err(d.at(&c.path)),
            Err(d) => {
                problems.push(checkpoint_damage(&c.path, &damage_finding(&c.path, &d)));
                break;
            }
        };
        let (last_frame, crc) = opened.checkpoint_binding();
        // Rebuilt with the file's own hash mask (the stream table's may be
        // the damaged byte).
        let prefix = read_prefix(&file.0, &c.path, IDX_HEADER_LEN as u64)?;
        let mask = u64_at(&prefix, IDX_HASH_MASK_OFFSET).unwrap_or(mask);
        // In the file's own layout version (one that opened is 1 or 2), or
        // the writer's if the range does not fit version 2.
        let range = mem.range(c.from, c.to);
        let version = opened.version();
        let expected = range
            .encode_checkpoint_version(version, base, (c.from, c.to), last_frame, crc, mask, bytes)
            .unwrap_or_else(|| range.encode_checkpoint(base, (c.from, c.to), last_frame, crc, mask, bytes));
        let found = read_prefix(&file.0, &c.path, expected.len() as u64 + 1)?;
        let row_len = idx_lens(version).stream_row;
        if let Some(f) = compare_derived(&c.path, &expected, &found, file.1, IDX_HEADER_LEN, row_len) {
            problems.push(checkpoint_damage(&c.path, &f));
            break;
        }
    }
    Ok((problems, warnings))
}

/// A finding about a damaged checkpoint, saying what a writer does about it.
fn checkpoint_damage(path: &Path, f: &Finding) -> Finding {
    finding(
        path,
        f.offset,
        format!(
            "index checkpoint damaged: {}; readers check every hit against the segment and rebuild what it says \
             from the segment, and the next writer open removes it",
            f.detail
        ),
    )
}
