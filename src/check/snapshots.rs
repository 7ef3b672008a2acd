//! Snapshot files (spec 20): every `*.snap` in `snapshots/` decoded and
//! checked (format versions 1 and 2); a large one streamed in bounded
//! chunks (header, key list and CRC).
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
use crate::format::snapshot::{SNAPSHOT_CRC_OFFSET, SNAPSHOT_HEADER_LEN, SnapshotHeader, check_header, read_key_list};
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
/// against its header, its CRC, computed in bounded chunks, then its key
/// list (version 2).
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
    if want != stored {
        return Ok(Some((
            SNAPSHOT_CRC_OFFSET as u64,
            format!("snapshot CRC mismatch: expected {want:#010x}, found {stored:#010x}"),
        )));
    }
    // The key list (spec 20.3, check 9), within the file (check_header),
    // in bounded pieces.
    let keys = read_key_list(h, 1 << 20, |at, n, out| read_at_into(f, path, at, n, out), |_| {})?;
    Ok(keys.err().map(|d| (d.offset, d.detail())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 file of `len` bytes (stream "s", then `keys`, then a
    /// zero payload), its CRC valid.
    fn large_v2(keys: &[u64], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..8].copy_from_slice(b"ANNALSNP");
        f[8] = 2;
        f[12] = 1;
        f[36..40].copy_from_slice(&(keys.len() as u32).to_le_bytes());
        f.push(b's');
        for k in keys {
            f.extend_from_slice(&k.to_le_bytes());
        }
        let payload = len - f.len();
        f[40..48].copy_from_slice(&(payload as u64).to_le_bytes());
        f.resize(len, 0);
        let crc = crate::format::snapshot::file_crc(&f);
        f[60..64].copy_from_slice(&crc.to_le_bytes());
        f
    }

    /// The streamed check of a large version 2 file checks its key list,
    /// across the chunks it is read in.
    #[test]
    fn large_files_have_their_key_lists_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.snap");
        let len = (SNAPSHOT_READ_MAX + 100) as usize;
        let ascending: Vec<u64> = (1..=200_000).collect();
        let check = |keys: &[u64]| {
            std::fs::write(&path, large_v2(keys, len)).unwrap();
            let f = std::fs::File::open(&path).unwrap();
            check_large_snapshot(&f, &path, len as u64).unwrap()
        };
        assert_eq!(check(&ascending), None);
        // The first id of the second 1 MiB chunk not above the last of the first.
        let mut bad = ascending.clone();
        let at = (1 << 20) / 8;
        bad[at] = bad[at - 1];
        assert_eq!(check(&bad).map(|d| d.0), Some(65 + 8 * at as u64));
        let mut bad = ascending;
        bad[7] = 3;
        assert_eq!(check(&bad).map(|d| d.0), Some(65 + 8 * 7));
        assert_eq!(check(&[0]).map(|d| d.0), Some(65));
    }
}
