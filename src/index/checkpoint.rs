//! Index checkpoints of the active segment (spec 17.5): which files cover
//! its start, opening them, and checking each against the segment's bytes,
//! so that opening a log reads the batches appended since the last
//! checkpoint, not the whole active segment.
//!
//! Invariants: a chain starts at offset 128 and its files cover consecutive
//! ranges; a file is used only if its header matches its name and the frame
//! it names as its last is a batch of the segment, with the header CRC the
//! file records, ending exactly where the file's range ends. A checkpoint is
//! a hint like every derived file: what it says about a stream is checked
//! against the batch it points to when used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Damage, Error};
use crate::format::frame::FrameBinding;
use crate::format::names::parse_checkpoint_file_name;
use crate::format::{FRAME_KIND_BATCH, IDX_MAGIC, SEGMENT_HEADER_LEN};
use crate::index::IdxFile;
use crate::index::blockfile::BlockFile;

/// An index checkpoint file: the segment bytes `[from, to)` it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointFile {
    pub base: u64,
    pub from: u64,
    pub to: u64,
    pub path: PathBuf,
}

/// Every index checkpoint file in `dir` (by name; nothing is opened).
pub(crate) fn list(dir: &Path) -> Result<Vec<CheckpointFile>, Error> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        if let Some((base, from, to)) = name.to_str().and_then(parse_checkpoint_file_name) {
            out.push(CheckpointFile {
                base,
                from,
                to,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|c| (c.base, c.from, std::cmp::Reverse(c.to)));
    Ok(out)
}

/// Of the checkpoint files `all`, those of the segment based at `base` that
/// chain from offset 128 within its first `len` bytes (from each offset, the
/// file that reaches furthest), and every other file (of this segment or
/// any other: left over from a merge or a seal, or past a torn end).
pub(crate) fn chain(all: Vec<CheckpointFile>, base: u64, len: u64) -> (Vec<CheckpointFile>, Vec<CheckpointFile>) {
    let mut chain: Vec<CheckpointFile> = Vec::new();
    let mut rest = Vec::new();
    let mut ours: Vec<CheckpointFile> = Vec::new();
    for c in all {
        if c.base == base && c.to <= len {
            ours.push(c);
        } else {
            rest.push(c);
        }
    }
    let mut at = SEGMENT_HEADER_LEN as u64;
    loop {
        let best = ours
            .iter()
            .enumerate()
            .filter(|(_, c)| c.from == at)
            .max_by_key(|(_, c)| c.to)
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let c = ours.swap_remove(i);
        at = c.to;
        chain.push(c);
    }
    rest.extend(ours);
    (chain, rest)
}

/// Open the checkpoint `c` and check it against the segment: `frame_header`
/// gives what binds the segment's frame at an offset (`None` past its
/// end). Returns the file; damage names the offset in the checkpoint file.
pub(crate) fn open(c: &CheckpointFile, frame: impl Fn(u64) -> Option<FrameBinding>) -> Result<IdxFile, Damage> {
    let Some(bf) = BlockFile::open_path(&c.path, IDX_MAGIC)? else {
        return Err(Damage::corrupt(0, "the checkpoint file disappeared"));
    };
    let f = IdxFile::open_checkpoint(bf, c.base, c.from, c.to)?;
    let (last, crc) = f.checkpoint_binding();
    let holds = frame(last)
        .is_some_and(|b| b.header_crc == crc && b.kind == FRAME_KIND_BATCH && last.checked_add(b.len) == Some(c.to));
    if !holds {
        return Err(Damage::corrupt(
            crate::format::IDX_SEAL_CRC_OFFSET as u64,
            format!(
                "the checkpoint's last frame (at byte {last} of the segment, header CRC {crc:#010x}, ending at \
                 {}) is not a batch of the segment",
                c.to
            ),
        ));
    }
    Ok(f)
}

/// Open every file of `chain` in order, stopping at the first that fails:
/// the files opened (a prefix of the chain) and, if one failed, which and
/// why.
pub(crate) fn open_chain(
    chain: &[CheckpointFile],
    frame: impl Fn(u64) -> Option<FrameBinding>,
) -> (Vec<Arc<IdxFile>>, Option<Error>) {
    let mut out = Vec::with_capacity(chain.len());
    for c in chain {
        match open(c, &frame) {
            Ok(f) => out.push(Arc::new(f)),
            Err(d) => return (out, Some(d.at(&c.path))),
        }
    }
    (out, None)
}
