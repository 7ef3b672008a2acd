//! How `check` reaches the log's files: listing the segments, opening a
//! file (never through a symlink, never blocking on a FIFO, only a regular
//! file), reading bounded prefixes and ranges, telling whether a path still
//! names the file opened, and the safety of the log directory itself.
//!
//! Invariants: no read here is sized by a length found in a file; every
//! read is bounded by its caller's `max`. A file that is not a regular file
//! is described ([`Opened::NotRegular`]), never read.

use std::fs;
use std::io;
use std::path::Path;

use super::report::{CheckReport, finding};
use crate::error::{Error, Result};
use crate::format::names::LOCK_FILE;
use crate::format::names::SNAPSHOT_DIR;
use crate::format::names::parse_segment_file_name;
use crate::index::streamtable::STREAM_TABLE_FILE;

/// Whether a writer holds the log's lock file.
pub(super) fn writer_holds_lock(dir: &Path) -> bool {
    crate::storage::io::lock_held(&dir.join(LOCK_FILE))
}

/// The bases of the log's segment files, sorted; `NotALog` if `dir` is not
/// a directory.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "it is not a directory".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "it does not exist".into(),
            });
        }
        Err(e) => return Err(Error::io("stat", dir, e)),
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(base) = parse_segment_file_name(&entry.file_name().to_string_lossy()) {
            out.push(base);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The little-endian `u64` at byte `at` of `b`, if `b` holds it.
pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(s);
    Some(u64::from_le_bytes(x))
}

/// The hash mask the log's derived files use (default if none is readable).
/// Reads the stream table's first 32 bytes only, never through a link or
/// from a special file.
pub(super) fn hash_mask_of(dir: &Path) -> u64 {
    let path = dir.join(STREAM_TABLE_FILE);
    match open_checked(&path) {
        Ok(Opened::File(f, _)) => read_prefix(&f, &path, crate::format::STB_HEADER_LEN as u64)
            .ok()
            .and_then(|b| u64_at(&b, crate::format::STB_HASH_MASK_OFFSET))
            .unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

/// A log file as `check` opened it.
pub(super) enum Opened {
    /// No file of that name.
    Missing,
    /// A regular file (opened with [`crate::storage::io::open_read`]), and its length.
    File(fs::File, u64),
    /// Something else under the name (a FIFO, a device, a symlink, a
    /// directory): what was found, for a finding. It was not read.
    NotRegular(String),
}

/// Open a log file for reading the one way `check` does: never following a
/// symlink, never blocking on a FIFO, refusing anything but a regular file
/// (which is then described, not read).
pub(super) fn open_checked(path: &Path) -> Result<Opened> {
    match crate::storage::io::open_read(path) {
        Ok(f) => {
            let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
            Ok(Opened::File(f, len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
        Err(e) => {
            // What is there, without following it.
            if let Ok(m) = fs::symlink_metadata(path) {
                let kind = m.file_type();
                if !kind.is_file() {
                    let target = if kind.is_symlink() {
                        fs::read_link(path).map_or(String::new(), |t| format!(" to {}", t.display()))
                    } else {
                        String::new()
                    };
                    return Ok(Opened::NotRegular(format!(
                        "expected a regular file, found {}{target}: not read (check never follows a link out of \
                         the log directory nor reads a special file)",
                        crate::storage::io::file_kind(&kind)
                    )));
                }
            }
            Err(Error::io("open", path, e))
        }
    }
}

/// Read at most `max` bytes from the start of `f` (memory bounded by `max`,
/// never by the file's length).
pub(super) fn read_prefix(f: &fs::File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut out = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    read_at_into(f, path, 0, len.min(max), &mut out)?;
    Ok(out)
}

/// Append the bytes `[offset, offset + n)` of `f` to `out` (fewer if the file
/// ends first).
pub(super) fn read_at_into(f: &fs::File, path: &Path, offset: u64, n: u64, out: &mut Vec<u8>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let start = out.len();
    let Ok(n_usize) = usize::try_from(n) else {
        return Err(Error::io(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "read too large"),
        ));
    };
    out.resize(start + n_usize, 0);
    let mut done = 0usize;
    while done < n_usize {
        let at = offset + done as u64;
        match f.read_at(&mut out[start + done..], at) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(start);
                return Err(Error::io("read", path, e));
            }
        }
    }
    out.truncate(start + done);
    Ok(())
}

/// The identity (device, inode) of an open file or of a path (not followed).
fn identity(m: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Whether `path` still names the open file `f`: a derived file replaced
/// (renamed over) by a writer between two reads is a new inode.
pub(super) fn still_names(path: &Path, f: &fs::File) -> bool {
    match (fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => identity(&a) == identity(&b),
        _ => false,
    }
}

/// Warn about a log directory or `snapshots/` that is a symlink or that
/// anyone may write to: whoever can write there can replace the log's files.
pub(super) fn check_dir_safety(dir: &Path, report: &mut CheckReport) {
    for (path, what) in [
        (dir.to_owned(), "the log directory"),
        (dir.join(SNAPSHOT_DIR), "snapshots/"),
    ] {
        let Ok(m) = fs::symlink_metadata(&path) else { continue };
        if m.file_type().is_symlink() {
            let target = fs::read_link(&path).map_or(String::new(), |t| format!(" to {}", t.display()));
            let tail = if what == "snapshots/" {
                ": check does not follow it (its files were not checked) and --repair never deletes through it"
            } else {
                ""
            };
            report
                .warnings
                .push(finding(&path, 0, format!("{what} is a symlink{target}{tail}")));
            continue;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode();
            if m.is_dir() && mode & 0o002 != 0 {
                report.warnings.push(finding(
                    &path,
                    0,
                    format!(
                        "{what} is writable by anyone (mode {:o}): any user can replace or remove the log's files",
                        mode & 0o7777
                    ),
                ));
            }
        }
    }
}
