//! Opening a log for writing: deciding whether a directory is a log, taking the
//! writer lock, checking the segment chain, and recovering the active segment
//! after a crash (spec section 6).
//!
//! Invariant: recovery removes bytes only at or past the durable boundary of
//! the active segment, and only after everything before them was validated;
//! any other damage is returned as [`Error::Corrupt`] with nothing modified.

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::head::{self, HEAD_FILE};
use crate::io::Io;
use crate::log::{Options, Recovery, Truncation};
use crate::mmap::Mapping;
use crate::segment::{frame_records, parse_segment_file_name, resync_max_durable, segment_file_name, walk_segment};
use crate::view::{ViewSegment, open_sealed};

/// File name of the lock file.
pub const LOCK_FILE: &str = "annal.lock";

/// The state a writer starts from.
pub(crate) struct Recovered {
    pub lock: File,
    pub log_id: [u8; 16],
    pub streams: HashMap<String, u64>,
    pub next_position: u64,
    pub last_timestamp: u64,
    pub sealed: Vec<ViewSegment>,
    pub active_base: u64,
    pub active_end: u64,
    pub report: Recovery,
}

struct Listing {
    segments: Vec<u64>,
    temp: Vec<PathBuf>,
    other: Vec<String>,
}

fn list(dir: &Path) -> Result<Listing> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut l = Listing {
        segments: Vec::new(),
        temp: Vec::new(),
        other: Vec::new(),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_segment_file_name(&name) {
            l.segments.push(base);
        } else if name.ends_with(".tmp") {
            l.temp.push(entry.path());
        } else if name != LOCK_FILE && name != HEAD_FILE {
            l.other.push(name.into_owned());
        }
    }
    l.segments.sort_unstable();
    Ok(l)
}

fn take_lock(dir: &Path, io: &dyn Io) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    if !path.exists() {
        match io.create(&path) {
            Ok(_) => io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    // A lock released by a closing writer can look held for a moment: a child
    // process forked by another thread shares the lock file's description
    // between its fork and its exec (the descriptor is close-on-exec). Retry a
    // few times, about 30 ms in all, before reporting `Locked`.
    let mut wait = std::time::Duration::from_millis(2);
    for attempt in 0.. {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if attempt < 4 => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
    Err(Error::Locked { path })
}

fn create_segment(io: &dyn Io, dir: &Path, header: &SegmentHeader, fresh: bool) -> Result<()> {
    let path = dir.join(segment_file_name(header.base_position.get()));
    let file = if fresh {
        io.create(&path).map_err(|e| Error::io("create", &path, e))?
    } else {
        let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
        f.truncate(0).map_err(|e| Error::io("truncate", &path, e))?;
        f
    };
    file.write_at(0, header.as_bytes())
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync().map_err(|e| Error::io("fsync", &path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

/// Open `dir` for writing: see the module docs.
pub(crate) fn open(dir: &Path, opts: &Options) -> Result<Recovered> {
    let io = &*opts.io;
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "it is not a directory".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.create => {
            io.create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
            // The new directory's entry is durable once its parent is synced.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                io.sync_dir(parent)
                    .map_err(|e| Error::io("fsync directory", parent, e))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "it does not exist (open with create to make a new log)".into(),
            });
        }
        Err(e) => return Err(Error::io("stat", dir, e)),
    }
    let listing = list(dir)?;
    if listing.segments.is_empty() {
        if !listing.other.is_empty() {
            let mut names = listing.other.clone();
            names.sort();
            names.truncate(5);
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: format!(
                    "it holds no segment files (*.seg) but holds other files ({}); refusing to create a log here",
                    names.join(", ")
                ),
            });
        }
        if !opts.create {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "it holds no segment files (*.seg)".into(),
            });
        }
    }
    let lock = take_lock(dir, io)?;
    let mut report = Recovery::default();
    // Re-list under the lock: the directory is ours now.
    let listing = list(dir)?;
    for tmp in &listing.temp {
        io.remove(tmp).map_err(|e| Error::io("remove", tmp, e))?;
        report.removed_temp_files.push(tmp.clone());
    }
    if !listing.temp.is_empty() {
        io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
    }

    let Some((&last, sealed_bases)) = listing.segments.split_last() else {
        let log_id = opts.log_id.unwrap_or_else(|| uuid::Uuid::new_v4().into_bytes());
        let header = SegmentHeader::new(log_id, 0, 0, (opts.clock)());
        create_segment(io, dir, &header, true)?;
        report.created = true;
        return Ok(Recovered {
            lock,
            log_id,
            streams: HashMap::new(),
            next_position: 0,
            last_timestamp: 0,
            sealed: Vec::new(),
            active_base: 0,
            active_end: SEGMENT_HEADER_LEN as u64,
            report,
        });
    };

    let head = head::read(dir)?;
    if let Some(h) = head
        && listing.segments.binary_search(&h.segment_base).is_err()
    {
        return Err(corrupt(
            &dir.join(HEAD_FILE),
            24,
            format!(
                "the head says segment {} holds durable data, but that file does not exist",
                segment_file_name(h.segment_base)
            ),
        ));
    }

    let mut streams: HashMap<String, u64> = HashMap::new();
    let mut on_batch = |frame: &[u8], _: &crate::segment::Frame| {
        for rec in frame_records(frame) {
            match streams.get_mut(rec.stream()) {
                Some(v) => *v = rec.stream_version(),
                None => {
                    streams.insert(rec.stream().to_owned(), rec.stream_version());
                }
            }
        }
    };
    let mut log_id: Option<[u8; 16]> = None;
    let mut check_log_id = |h: &SegmentHeader, path: &Path| -> Result<()> {
        match log_id {
            None => {
                log_id = Some(h.log_id);
                Ok(())
            }
            Some(id) if id == h.log_id => Ok(()),
            Some(_) => Err(corrupt(
                path,
                16,
                "the segment's log_id differs from the log's: it belongs to another log",
            )),
        }
    };
    let mut next = listing.segments.first().copied().unwrap_or(0);
    let mut last_ts = 0;
    let mut sealed = Vec::with_capacity(sealed_bases.len() + 1);
    for &base in sealed_bases {
        let path = dir.join(segment_file_name(base));
        if base != next {
            return Err(corrupt(
                &path,
                32,
                format!("expected a segment starting at position {next} (is one missing?), found {base}"),
            ));
        }
        let (seg, _) = open_sealed(dir, base)?;
        let bytes = seg.map.bytes();
        let header = SegmentHeader::parse(bytes).map_err(|d| d.at(&path))?;
        check_log_id(header, &path)?;
        let walk = walk_segment(bytes, header, false, &mut on_batch);
        if let Some(d) = walk.stop {
            return Err(d.at(&path));
        }
        if let Some(h) = head
            && h.segment_base == base
            && h.durable_end > bytes.len() as u64
        {
            return Err(corrupt(
                &path,
                bytes.len() as u64,
                format!(
                    "the head says bytes up to {} are durable, but the file ends here",
                    h.durable_end
                ),
            ));
        }
        last_ts = walk.last_timestamp;
        next = walk.next_position;
        sealed.push(seg);
    }

    // The active segment.
    let path = dir.join(segment_file_name(last));
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    // Mapped, not copied: we hold the writer lock, so no annal process changes
    // the file while this mapping lives (see `mmap`, case 5). It is dropped
    // before recovery truncates the file.
    let map = Mapping::map(&file, file_len, &path)?;
    let bytes = map.bytes();
    let mut active_base = last;
    let active_end;
    match SegmentHeader::parse(bytes) {
        Err(d) if bytes.len() <= SEGMENT_HEADER_LEN && head.is_none_or(|h| h.segment_base != last) => {
            // Torn while being created: it cannot hold a frame (spec 6, step 4).
            let _ = d;
            if !sealed_bases.is_empty() && last != next {
                return Err(corrupt(
                    &path,
                    32,
                    format!("expected a segment starting at position {next}, found {last}"),
                ));
            }
            let id = log_id
                .or(opts.log_id)
                .unwrap_or_else(|| uuid::Uuid::new_v4().into_bytes());
            log_id = Some(id);
            let header = SegmentHeader::new(id, last, last_ts, (opts.clock)());
            create_segment(io, dir, &header, false)?;
            report.reinitialized = Some(path.clone());
            active_end = SEGMENT_HEADER_LEN as u64;
        }
        Err(d) => return Err(d.at(&path)),
        Ok(header) => {
            let header = *header;
            if header.base_position.get() != last {
                return Err(corrupt(
                    &path,
                    32,
                    format!(
                        "expected base_position {last} (from the file name), found {}",
                        header.base_position.get()
                    ),
                ));
            }
            if !sealed_bases.is_empty() && last != next {
                return Err(corrupt(
                    &path,
                    32,
                    format!("expected a segment starting at position {next} (is one missing?), found {last}"),
                ));
            }
            check_log_id(&header, &path)?;
            let walk = walk_segment(bytes, &header, true, &mut on_batch);
            let head_durable = head.filter(|h| h.segment_base == last).map_or(0, |h| h.durable_end);
            if let Some(d) = walk.stop {
                let x = walk.end;
                let boundary = (SEGMENT_HEADER_LEN as u64)
                    .max(walk.max_durable)
                    .max(resync_max_durable(bytes, x))
                    .max(head_durable);
                if x < boundary {
                    return Err(corrupt(
                        &path,
                        d.offset,
                        format!(
                            "{}; the damaged frame starts at byte {x}, below the durable boundary at byte {boundary}, \
                             so this is damage to durable data, not a torn write (nothing was removed)",
                            d.detail()
                        ),
                    ));
                }
                drop(map);
                let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
                f.truncate(x).map_err(|e| Error::io("truncate", &path, e))?;
                f.sync().map_err(|e| Error::io("fsync", &path, e))?;
                report.truncated = Some(Truncation {
                    path: path.clone(),
                    offset: x,
                    bytes_removed: file_len - x,
                    reason: d.detail(),
                });
            } else if head_durable > file_len {
                return Err(corrupt(
                    &path,
                    file_len,
                    format!("the head says bytes up to {head_durable} are durable, but the file ends here"),
                ));
            }
            last_ts = walk.last_timestamp;
            next = walk.next_position;
            active_end = walk.end;
            if walk.sealed {
                // Sealed, but the next segment was never created (spec 6, step 4).
                let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
                f.sync().map_err(|e| Error::io("fsync", &path, e))?;
                drop(f);
                let (seg, _) = open_sealed(dir, last)?;
                sealed.push(seg);
                let header = SegmentHeader::new(header.log_id, next, last_ts, (opts.clock)());
                create_segment(io, dir, &header, true)?;
                active_base = next;
                return Ok(Recovered {
                    lock,
                    log_id: header.log_id,
                    streams,
                    next_position: next,
                    last_timestamp: last_ts,
                    sealed,
                    active_base,
                    active_end: SEGMENT_HEADER_LEN as u64,
                    report,
                });
            }
        }
    }
    // Everything kept is made durable before the head says so (spec 6, step 5).
    let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
    f.sync().map_err(|e| Error::io("fsync", &path, e))?;
    Ok(Recovered {
        lock,
        log_id: log_id.unwrap_or_default(),
        streams,
        next_position: next,
        last_timestamp: last_ts,
        sealed,
        active_base,
        active_end,
        report,
    })
}
