//! A local log rebuilt from a remote log (spec 23.5): every object the
//! newest manifest names, checked against its length and BLAKE3, written
//! into an empty directory, then cut at a batch boundary if asked.
//!
//! Invariants: nothing is written outside `dir`, and nothing into a `dir`
//! that holds files; the cut keeps whole batches only (every record of a
//! kept batch, none of a dropped one); the result is an ordinary log whose
//! first `Log::open` rebuilds the derived files it lacks.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::frame::FrameCursor;
use crate::format::names::{index_file_name, segment_file_name};
use crate::format::{FRAME_KIND_BATCH, SegmentHeader};

use super::RemoteLog;

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreTo {
    /// Everything the newest manifest holds.
    Latest,
    /// Every batch whose positions are all at or below this position.
    Position(u64),
    /// Every batch whose events were all appended at or before this time
    /// (nanoseconds since the Unix epoch).
    Time(u64),
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The manifest version restored.
    pub manifest_seq: u64,
    /// Segment files written.
    pub segments: usize,
    /// Bytes written (segments and index files, before the cut).
    pub bytes: u64,
    /// The position after the last batch kept.
    pub next_position: u64,
    /// Where the log was cut: `(segment base, file offset)`, if it was.
    pub cut: Option<(u64, u64)>,
}

/// Rebuild the log of `remote` in `dir` (created if missing; it must hold
/// no file), up to `to`.
pub async fn restore(remote: &RemoteLog, dir: &Path, to: RestoreTo) -> Result<RestoreReport> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        if entries.next().is_some() {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "expected an empty directory to restore into, found files".into(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let m = remote
        .latest_manifest()
        .await?
        .ok_or_else(|| remote.error("manifest/", "expected a manifest, found none (nothing was shipped)"))?;
    // The version a writer takes the remote log with names nothing until
    // its first round ships (a crash or a failed round can leave it the
    // newest): nothing was shipped, and an empty directory is no log.
    if m.sealed.is_empty() && m.active.as_ref().is_none_or(|a| a.parts.is_empty()) {
        return Err(remote.error(
            &super::manifest::manifest_object(m.seq),
            "expected a manifest naming a segment, found only the one taking the remote log (nothing was shipped)",
        ));
    }
    let mut bases = Vec::new();
    let mut bytes = 0u64;
    for e in &m.sealed {
        bytes += write(remote, &dir.join(segment_file_name(e.base)), &[&e.segment]).await?;
        if let Some(i) = &e.index {
            bytes += write(remote, &dir.join(index_file_name(e.base)), &[i]).await?;
        }
        bases.push(e.base);
    }
    if let Some(a) = m.active.as_ref().filter(|a| !a.parts.is_empty()) {
        let parts: Vec<&super::Shipped> = a.parts.iter().map(|p| &p.shipped).collect();
        bytes += write(remote, &dir.join(segment_file_name(a.base)), &parts).await?;
        bases.push(a.base);
    }
    let mut next_position = m.next_position;
    let cut = match to {
        RestoreTo::Latest => None,
        _ => cut(dir, &bases, to)?,
    };
    if let Some((_, _, next)) = cut {
        next_position = next;
    }
    for &b in &bases {
        let path = dir.join(segment_file_name(b));
        if path.exists() {
            sync(&path)?;
        }
    }
    sync(dir)?;
    Ok(RestoreReport {
        manifest_seq: m.seq,
        segments: bases.len(),
        bytes,
        next_position,
        cut: cut.map(|(b, o, _)| (b, o)),
    })
}

/// Create the file at `path` from the objects `from`, one after the other,
/// each streamed in and checked as it arrives. Returns the bytes written.
async fn write(remote: &RemoteLog, path: &Path, from: &[&super::Shipped]) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create_new(path).map_err(|e| Error::io("create", path, e))?;
    let mut at = 0u64;
    for s in from {
        remote
            .download(s, |chunk| {
                file.write_all_at(chunk, at).map_err(|e| Error::io("write", path, e))?;
                at += chunk.len() as u64;
                Ok(())
            })
            .await?;
    }
    Ok(at)
}

/// Cut the restored segments `bases` (in order) before the first batch `to`
/// does not keep: that segment is truncated there (it becomes the active
/// one, its index file removed), later segments removed. Returns the cut
/// and the position after the last batch kept.
fn cut(dir: &Path, bases: &[u64], to: RestoreTo) -> Result<Option<(u64, u64, u64)>> {
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment_file_name(base));
        let file = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let header = *SegmentHeader::parse(&file).map_err(|d| d.at(&path))?;
        let mut c = FrameCursor::segment(&file, &header, true);
        let mut kept_next = header.base_position.get();
        while let Some(peeked) = c.peek() {
            let f = peeked.map_err(|d| d.at(&path))?;
            let offset = f.offset;
            if f.frame.kind != FRAME_KIND_BATCH {
                c.skip(&f);
                continue;
            }
            let next = f.frame.next_position();
            let mut newest = 0u64;
            c.validate_each(f, |_, r| newest = newest.max(r.timestamp()))
                .map_err(|d| d.at(&path))?;
            let keep = match to {
                RestoreTo::Position(p) => next <= p.saturating_add(1),
                RestoreTo::Time(t) => newest <= t,
                RestoreTo::Latest => true,
            };
            if !keep {
                truncate(&path, offset)?;
                let idx = dir.join(index_file_name(base));
                if idx.exists() {
                    std::fs::remove_file(&idx).map_err(|e| Error::io("remove", &idx, e))?;
                }
                for &later in bases.get(i + 1..).unwrap_or_default() {
                    for name in [segment_file_name(later), index_file_name(later)] {
                        let p = dir.join(name);
                        if p.exists() {
                            std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
                        }
                    }
                }
                return Ok(Some((base, offset, kept_next)));
            }
            kept_next = next;
        }
    }
    Ok(None)
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    f.set_len(len).map_err(|e| Error::io("truncate", path, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", path, e))
}
