//! What a cross-process [`Reader`](crate::Reader) does about compaction
//! (spec 3.10): a sealed segment it opened may be replaced by a rewritten
//! file under the same name. Views already taken keep the original they
//! mapped; a segment a reader holds but has not mapped yet must be opened
//! again, or its next mapping would find a file of another length.
//!
//! Invariants: a segment is reopened only once the file under its name is
//! the one a compaction record describes (its length, and `COMPACTED` in its
//! header): the record is durable before the swap, so a record alone proves
//! nothing about the file. Records are looked at once each when nothing is
//! pending (one stream lookup per view); a record whose swap has not
//! happened yet is looked at again by the next view.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::compaction::{COMPACTION_STREAM, CompactionRecord};
use crate::format::names::parse_segment_file_name;
use crate::read::logview::{LogView, ViewSegment};
use crate::read::sealed::open_sealed_in;
use crate::storage::mmap::file_id;
use crate::types::Direction;

/// Reopen the sealed segments of `sealed` that a compaction replaced, as
/// the records of `view` from position `from` on say. Returns whether any
/// was reopened, and the position from which records must be looked at
/// again. If the records cannot be read (through a segment replaced under
/// this reader), every sealed segment whose file changed length is
/// reopened instead.
pub(crate) fn follow_compactions(
    dir: &Path,
    sealed: &mut [ViewSegment],
    view: &LogView,
    from: u64,
) -> Result<(bool, u64)> {
    if !view.has_rules() {
        return Ok((false, from));
    }
    let mut records = Vec::new();
    for r in view.read_stream_raw(COMPACTION_STREAM, u64::MAX, Direction::Backward, u64::MAX) {
        match r {
            Ok(r) if r.position() < from => break,
            Ok(r) => records.push((r.position(), CompactionRecord::decode(r.payload()).ok())),
            Err(_) => return reopen_changed(dir, sealed).map(|c| (c, from)),
        }
    }
    records.reverse();
    let mut changed = false;
    let mut next = from;
    let mut pending = false;
    for (i, (position, rec)) in records.iter().enumerate() {
        // A record that does not decode is `check`'s to report.
        let done = match rec {
            None => true,
            Some(rec) => {
                let superseded = records[i + 1..]
                    .iter()
                    .any(|(_, r)| r.as_ref().is_some_and(|r| r.segment_base == rec.segment_base));
                match sealed.iter().position(|s| s.base == rec.segment_base) {
                    // Removed by retention since.
                    None => true,
                    Some(_) if superseded => true,
                    Some(k) => {
                        let s = &sealed[k];
                        if s.layout.compacted && s.map.len() == rec.compacted_len {
                            true
                        } else if file_len(&s.path) == Some(rec.compacted_len) {
                            let (seg, _, _) = open_sealed_in(dir, rec.segment_base, None)?;
                            let swapped = seg.layout.compacted;
                            if swapped {
                                sealed[k] = seg;
                                changed = true;
                            }
                            swapped
                        } else {
                            false
                        }
                    }
                }
            }
        };
        pending |= !done;
        if !pending {
            next = position.saturating_add(1);
        }
    }
    Ok((changed, next))
}

/// Whether a compaction may have swapped, or may still swap, a segment of
/// `sealed` (just opened by a reader's first view) since it was opened:
/// `dir` holds a rewrite not yet renamed over its segment
/// (`<segment>.tmp`, which exists from before the compaction's record is
/// appended until the swap), or a file under a segment's name is no longer
/// the one opened (another identity or length) (spec 3.10).
///
/// If neither, no record below the view's end names a swap the reader has
/// not seen: a swap before the segment was opened gave it the rewritten
/// file, one between the opening and the stat below changed the file
/// under the name, and one after the listing had its `.tmp` in it (the
/// listing comes first). So the records below the end need not be read:
/// that lookup is several cold page reads on a first view.
pub(crate) fn compaction_traces(dir: &Path, sealed: &[ViewSegment]) -> Result<bool> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let rewrite = name
            .to_str()
            .and_then(|n| n.strip_suffix(".tmp"))
            .is_some_and(|n| parse_segment_file_name(n).is_some());
        if rewrite {
            return Ok(true);
        }
    }
    Ok(sealed.iter().any(|s| match std::fs::symlink_metadata(&*s.path) {
        Ok(m) => m.len() != s.map.len() || file_id(&m) != s.map.identity(),
        // Gone (log retention) or unreadable: read the records.
        Err(_) => true,
    }))
}

/// Reopen every segment of `sealed` whose file is no longer the length it
/// had when it was opened.
fn reopen_changed(dir: &Path, sealed: &mut [ViewSegment]) -> Result<bool> {
    let mut changed = false;
    for s in sealed.iter_mut() {
        if file_len(&s.path).is_some_and(|l| l != s.map.len()) {
            let (seg, _, _) = open_sealed_in(dir, s.base, None)?;
            *s = seg;
            changed = true;
        }
    }
    Ok(changed)
}

/// The length of the file at `path`, without following a link.
fn file_len(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.len())
}
