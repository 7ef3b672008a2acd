//! `check --repair`: take the writer lock by opening the log (its recovery
//! cuts a torn tail and rebuilds missing derived files), remove the damaged
//! derived files a scan found (index files, the stream table, snapshots),
//! reopen so that they are rebuilt from the segments, and check again.
//!
//! Invariants: never removes events from sealed segments; removes only
//! regular files directly in the log directory or its `snapshots/`, never
//! through a symlink; refuses (changing nothing) a log whose open fails on
//! damage, a version or a key; fails with `Locked` while a writer holds it.

use std::io;
use std::path::Path;
use std::time::Instant;

use super::files::{hash_mask_of, writer_holds_lock};
use super::report::{CheckOptions, CheckReport};
use super::scan::scan;
use crate::error::{Error, Result};
use crate::format::names::SNAPSHOT_DIR;
use crate::index::streamtable::STREAM_TABLE_FILE;
use crate::writer::{Log, Options};

/// Check the log in `dir` with [`CheckOptions::repair`] (see the module
/// documentation); `start` is when the check began.
pub(super) fn repair(dir: &Path, opts: &CheckOptions, start: Instant) -> Result<CheckReport> {
    let mut repairs = Vec::new();
    let log_opts = || {
        let mut o = Options::default().create(false).with_hash_mask(hash_mask_of(dir));
        if let Some(k) = &opts.master_key {
            o = o.master_key(k.clone());
        }
        match &opts.key {
            Some(k) => o.chain_key(k.clone()),
            None => o,
        }
    };
    let log = match Log::open_with(dir, log_opts()) {
        Ok(log) => Some(log),
        Err(e @ Error::Locked { .. }) => return Err(e),
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. } | Error::ChainKey { .. })) => {
            repairs.push(format!("repair refused, nothing was changed: {e}"));
            None
        }
        Err(e) => return Err(e),
    };
    let Some(log) = log else {
        let mut report = scan(dir, writer_holds_lock(dir), opts)?.report;
        report.repairs = repairs;
        report.elapsed = start.elapsed();
        return Ok(report);
    };
    describe_recovery(log.recovery(), &mut repairs);
    let first = scan(dir, false, opts);
    let first = match first {
        Ok(s) => s,
        Err(e) => {
            log.close()?;
            return Err(e);
        }
    };
    if first.remove.is_empty() {
        log.close()?;
        let mut report = first.report;
        report.repairs = repairs;
        report.elapsed = start.elapsed();
        return Ok(report);
    }
    for (path, why) in &first.remove {
        match remove_inside(dir, path) {
            Ok(true) => repairs.push(format!("removed {} ({why})", path.display())),
            Ok(false) => repairs.push(format!(
                "did not remove {} ({why}): it is not a regular file inside the log directory",
                path.display()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = log.close();
                return Err(Error::io("remove", path, e));
            }
        }
    }
    log.close()?;
    // Reopening rebuilds the removed index files and stream table.
    let log = Log::open_with(dir, log_opts())?;
    describe_recovery(log.recovery(), &mut repairs);
    let second = scan(dir, false, opts);
    log.close()?;
    let mut report = second?.report;
    report.repairs = repairs;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Remove the damaged derived file `path` for repair, only if it is a
/// regular file directly in the log directory or in its `snapshots/` folder,
/// never through a symlink: the folder is opened without following a link
/// (the log directory itself as named by the caller), the entry is looked at
/// without following it, and removed relative to that open folder, so a link
/// swapped in meanwhile is not followed either. `Ok(false)`: not removed.
fn remove_inside(dir: &Path, path: &Path) -> io::Result<bool> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let folder = if parent == dir {
        rustix::fs::open(dir, flags, Mode::empty())?
    } else if parent == dir.join(SNAPSHOT_DIR) {
        let log = rustix::fs::open(dir, flags, Mode::empty())?;
        rustix::fs::openat(&log, SNAPSHOT_DIR, flags | OFlags::NOFOLLOW, Mode::empty())?
    } else {
        return Ok(false);
    };
    let st = rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(false);
    }
    rustix::fs::unlinkat(&folder, name, AtFlags::empty())?;
    Ok(true)
}

/// What the recovery of a writer open did, one line per action.
fn describe_recovery(r: &crate::writer::Recovery, out: &mut Vec<String>) {
    if let Some(t) = &r.truncated {
        out.push(format!(
            "cut the torn tail of {} at byte {} ({} bytes removed: {})",
            t.path.display(),
            t.offset,
            t.bytes_removed,
            t.reason
        ));
    }
    if let Some(p) = &r.reinitialized {
        out.push(format!("rewrote the torn header of the empty segment {}", p.display()));
    }
    for p in &r.removed_temp_files {
        out.push(format!("removed the temporary file {}", p.display()));
    }
    for p in &r.rebuilt_indexes {
        out.push(format!("rebuilt the index {} from its segment", p.display()));
    }
    if r.rebuilt_stream_table {
        out.push(format!("rebuilt the stream table {STREAM_TABLE_FILE}"));
    }
}
