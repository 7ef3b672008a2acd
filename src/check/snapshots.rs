//! Snapshot files (spec 20): every `*.snap` in `snapshots/` decoded and
//! checked; a large one streamed in bounded chunks (header and CRC).
//!
//! Invariants: a symlinked `snapshots/` is not followed (the directory
//! safety check warns about it); a damaged snapshot is a problem and is
//! listed for repair to remove (the aggregate is replayed from events).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::files::{Opened, open_checked, read_at_into, read_prefix};
use super::report::{CheckReport, finding};
use crate::error::{Error, Result};
use crate::format::names::SNAPSHOT_DIR;
use crate::format::snapshot::{SNAPSHOT_CRC_OFFSET, SNAPSHOT_HEADER_LEN, SnapshotHeader, check_header};
use zerocopy::FromBytes;

/// Snapshot files larger than this are checked by streaming (header and
/// CRC), never held in memory whole.
const SNAPSHOT_READ_MAX: u64 = 64 << 20;

/// Check every snapshot file; damaged ones are added to `remove`.
pub(super) fn check_snapshots(
    dir: &Path,
    report: &mut CheckReport,
    remove: &mut Vec<(PathBuf, &'static str)>,
) -> Result<()> {
    let sdir = dir.join(SNAPSHOT_DIR);
    match fs::symlink_metadata(&sdir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", &sdir, e)),
        // Not followed (check_dir_safety warns about it).
        Ok(m) if m.file_type().is_symlink() => return Ok(()),
        Ok(m) if !m.is_dir() => {
            report.problems.push(finding(
                &sdir,
                0,
                format!(
                    "expected a directory, found {}",
                    crate::storage::io::file_kind(&m.file_type())
                ),
            ));
            return Ok(());
        }
        Ok(_) => {}
    }
    let rd = match fs::read_dir(&sdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", &sdir, e)),
    };
    let mut paths = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", &sdir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".snap") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    for p in paths {
        let (f, len) = match open_checked(&p)? {
            // Pruned by a writer meanwhile.
            Opened::Missing => continue,
            Opened::NotRegular(d) => {
                report.problems.push(finding(&p, 0, d));
                continue;
            }
            Opened::File(f, len) => (f, len),
        };
        report.files += 1;
        report.bytes += len;
        let damage = if len > SNAPSHOT_READ_MAX {
            check_large_snapshot(&f, &p, len)?
        } else {
            let bytes = read_prefix(&f, &p, len)?;
            match crate::format::snapshot::decode(p.file_name().and_then(|n| n.to_str()), &bytes).map_err(|d| d.at(&p))
            {
                Ok(_) => None,
                Err(Error::Corrupt { offset, detail, .. }) => Some((offset, detail)),
                Err(e) => Some((0, e.to_string())),
            }
        };
        if let Some((offset, detail)) = damage {
            report.problems.push(finding(&p, offset, detail));
            remove.push((p, "a damaged snapshot; the aggregate is replayed from events instead"));
        }
    }
    Ok(())
}

/// A snapshot file too large to hold in memory (spec 20.2): its length
/// against its header, and its CRC, computed in bounded chunks.
fn check_large_snapshot(f: &fs::File, path: &Path, len: u64) -> Result<Option<(u64, String)>> {
    let header = read_prefix(f, path, SNAPSHOT_HEADER_LEN as u64)?;
    let Ok((h, _)) = SnapshotHeader::ref_from_prefix(&header) else {
        return Ok(Some((
            0,
            format!("expected a {SNAPSHOT_HEADER_LEN}-byte snapshot header"),
        )));
    };
    // Magic, version and lengths: the decoder's own checks (spec 20.3).
    if let Err(d) = check_header(h, len) {
        return Ok(Some((d.offset, d.detail())));
    }
    // The CRC of spec 20.2, streamed: the header without its CRC field, then
    // the body, read in pieces.
    let mut crc = crc32fast::Hasher::new();
    crc.update(header.get(..SNAPSHOT_CRC_OFFSET).unwrap_or_default());
    let mut off = SNAPSHOT_HEADER_LEN as u64;
    let mut buf = Vec::with_capacity(1 << 20);
    while off < len {
        buf.clear();
        read_at_into(f, path, off, (len - off).min(1 << 20), &mut buf)?;
        if buf.is_empty() {
            break;
        }
        crc.update(&buf);
        off += buf.len() as u64;
    }
    let want = crc.finalize();
    let stored = h.crc.get();
    Ok((want != stored).then(|| {
        (
            SNAPSHOT_CRC_OFFSET as u64,
            format!("snapshot CRC mismatch: expected {want:#010x}, found {stored:#010x}"),
        )
    }))
}
