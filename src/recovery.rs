//! Opening a log for writing: deciding whether a directory is a log, taking the
//! writer lock (on `annal.lock` and on the directory itself), checking the
//! segment chain (which starts at position 0), and recovering the active
//! segment after a crash (spec section 6). No frame longer than the format's
//! `MAX_FRAME_LEN` is read, whatever its header claims (spec 3.1).
//!
//! Invariant: recovery removes bytes only at or past the durable boundary of
//! the active segment, and only after everything before them was validated;
//! any other damage is returned as [`Error::Corrupt`] with nothing modified.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use zerocopy::IntoBytes;

use crate::audit::chain::{ChainHash, Chainer};
use crate::error::{Error, Result, corrupt};
use crate::format::frame::{validate_frame, walk_segment_records};
use crate::format::names::{parse_segment_file_name, segment_file_name};
use crate::format::{FRAME_CHAIN_OFFSET, FRAME_HEADER_LEN, LogFormat, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::format::{LOG_FLAG_CHAIN, LOG_FLAG_KEYED};
use crate::index::streamtable::{self, STREAM_TABLE_FILE, StreamTable};
use crate::index::{self, IndexBuilder, MemIndex};
use crate::log::{Options, Recovery, Truncation, index_file_name, rebuild_table, resolve_prev, write_derived};
use crate::read::view::{ViewSegment, open_sealed, open_sealed_header};
use crate::storage::head::{self, HEAD_FILE};
use crate::storage::io::Io;
use crate::storage::mmap::Mapping;
use crate::storage::resync::resync_file;

pub use crate::format::names::LOCK_FILE;

/// The state a writer starts from.
pub(crate) struct Recovered {
    pub lock: WriterLock,
    pub format: LogFormat,
    /// The chain hash after the last complete batch (zero without a chain).
    pub chain: ChainHash,
    pub next_position: u64,
    pub last_timestamp: u64,
    pub sealed: Vec<ViewSegment>,
    pub table: Option<Arc<StreamTable>>,
    pub active_index: Arc<RwLock<MemIndex>>,
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

/// The writer's exclusion: an exclusive `flock` on `annal.lock` (what older
/// annal versions take and what readers and `check` probe), and one on the
/// log directory itself. The directory lock cannot be removed under a
/// running writer: deleting or replacing `annal.lock` lets a second writer
/// lock the new file, but not the directory, so it still gets
/// [`Error::Locked`].
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
    _dir: File,
}

/// Take an exclusive lock on `file`, retrying a few times: a lock released
/// by a closing writer can look held for a moment (a child process forked by
/// another thread shares the lock file's description between its fork and
/// its exec, the descriptor being close-on-exec); about 30 ms in all before
/// reporting `Locked`.
fn lock_exclusive(file: &File, path: &Path, locked: &Path) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(2);
    for attempt in 0.. {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if attempt < 4 => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
    }
    Err(Error::Locked {
        path: locked.to_owned(),
    })
}

fn take_lock(dir: &Path, io: &dyn Io) -> Result<WriterLock> {
    let path = dir.join(LOCK_FILE);
    // `symlink_metadata`: a (dangling) symlink counts as existing, and is then
    // refused by the open below (`O_NOFOLLOW`), never followed.
    if fs::symlink_metadata(&path).is_err() {
        match io.create(&path) {
            Ok(_) => io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
    // Never through a symlink, never blocking on a FIFO, only a regular file.
    let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
    lock_exclusive(&file, &path, &path)?;
    let dir_file = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    lock_exclusive(&dir_file, dir, &path)?;
    Ok(WriterLock {
        _file: file,
        _dir: dir_file,
    })
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
    let mut report = Recovery {
        warnings: place_warnings(dir),
        ..Recovery::default()
    };
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
        let format = new_format(opts)?;
        let chain = genesis(&format, opts);
        let header = SegmentHeader::new(&format, 0, 0, (opts.clock)(), chain);
        create_segment(io, dir, &header, true)?;
        report.created = true;
        return Ok(Recovered {
            lock,
            format,
            chain,
            next_position: 0,
            last_timestamp: 0,
            sealed: Vec::new(),
            table: None,
            active_index: Arc::new(RwLock::new(MemIndex::default())),
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

    let mut format: Option<LogFormat> = None;
    let mut check_format = |h: &SegmentHeader, path: &Path| -> Result<()> {
        let found = LogFormat::of(h);
        match format {
            None => {
                check_key(&found, opts, path)?;
                format = Some(found);
                Ok(())
            }
            Some(f) if f == found => Ok(()),
            Some(f) => {
                let (offset, what) = if f.log_id != found.log_id {
                    (16, "log_id differs from the log's: it belongs to another log")
                } else if f.version != found.version {
                    (8, "format version differs from the log's")
                } else if f.flags != found.flags {
                    (10, "log_flags (audit chain) differ from the log's")
                } else {
                    (88, "chain key id differs from the log's")
                };
                Err(corrupt(path, offset, format!("the segment's {what}")))
            }
        }
    };
    // The first segment starts at position 0 (spec 2; retention, which will
    // record removals, does not exist yet): a log whose first segment is
    // missing is refused, as readers refuse it, never appended to.
    if let Some(&first) = listing.segments.first()
        && first != 0
    {
        return Err(corrupt(
            &dir.join(segment_file_name(0)),
            0,
            format!(
                "expected the log's first segment {} (position 0), found none: the first segment present is {} \
                 (a segment file is missing)",
                segment_file_name(0),
                segment_file_name(first)
            ),
        ));
    }
    // Sealed segments: header and seal only; their records are not read.
    let mut next = 0;
    let mut sealed: Vec<ViewSegment> = Vec::with_capacity(sealed_bases.len() + 1);
    for &base in sealed_bases {
        let path = dir.join(segment_file_name(base));
        if base != next {
            return Err(corrupt(
                &path,
                32,
                format!("expected a segment starting at position {next} (is one missing?), found {base}"),
            ));
        }
        // Header and seal read by copying: nothing of a sealed segment is
        // mapped before it is read.
        let (seg, seal_next, header) = open_sealed_header(dir, base)?;
        check_format(&header, &path)?;
        if let Some(h) = head
            && h.segment_base == base
            && h.durable_end > seg.len()
        {
            return Err(corrupt(
                &path,
                seg.len(),
                format!(
                    "the head says bytes up to {} are durable, but the file ends here",
                    h.durable_end
                ),
            ));
        }
        next = seal_next;
        sealed.push(seg);
    }

    // The active segment.
    let path = dir.join(segment_file_name(last));
    let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    // Mapped, not copied: we hold the writer lock, so no annal process changes
    // the file while this mapping lives (see `mmap`, case 5). It is dropped
    // before recovery truncates the file.
    let map = Mapping::map(&file, file_len, &path)?;
    let bytes = map.bytes();
    let mut active_base = last;
    let mut active_index = MemIndex::default();
    let mut active_end = SEGMENT_HEADER_LEN as u64;
    let last_ts;
    let chain: ChainHash;
    let mut active_sealed = false;
    if !sealed_bases.is_empty() && last != next {
        return Err(corrupt(
            &path,
            32,
            format!("expected a segment starting at position {next} (is one missing?), found {last}"),
        ));
    }
    match SegmentHeader::parse(bytes) {
        Err(_) if bytes.len() <= SEGMENT_HEADER_LEN && head.is_none_or(|h| h.segment_base != last) => {
            // Torn while being created: it cannot hold a frame (spec 6, step 4).
            last_ts = match sealed.last() {
                Some(prev) => last_timestamp_of(prev)?,
                None => 0,
            };
            let f = match format {
                Some(f) => f,
                None => new_format(opts)?,
            };
            format = Some(f);
            chain = match sealed.last() {
                Some(prev) => seal_chain(prev.bytes()?),
                None => genesis(&f, opts),
            };
            drop(map);
            let header = SegmentHeader::new(&f, last, last_ts, (opts.clock)(), chain);
            create_segment(io, dir, &header, false)?;
            report.reinitialized = Some(path.clone());
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
            check_format(&header, &path)?;
            // No frame is read past `MAX_FRAME_LEN`, whatever its header
            // claims (a sparse file can claim gigabytes of zeros): such a
            // header fails `FrameHeader::parse`, so it is an incomplete frame
            // and the durable boundary decides (spec 5.1).
            // One pass: every record is validated (CRC included) and indexed
            // as the walk reads it; a batch enters the index once complete.
            let mut builder = IndexBuilder::default();
            let walk = walk_segment_records(bytes, &header, true, &mut builder);
            active_index = builder.finish();
            let head_durable = head.filter(|h| h.segment_base == last).map_or(0, |h| h.durable_end);
            if let Some(d) = walk.stop {
                let x = walk.end;
                let boundary = (SEGMENT_HEADER_LEN as u64)
                    .max(walk.max_durable)
                    .max(resync_file(&file, &path, x, file_len)?)
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
            chain = walk.chain;
            next = walk.next_position;
            active_end = walk.end;
            active_sealed = walk.sealed;
        }
    }
    // Everything kept is made durable before the head says so (spec 6, step 5).
    let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
    f.sync().map_err(|e| Error::io("fsync", &path, e))?;
    drop(f);
    let Some(format) = format else {
        return Err(corrupt(&path, 0, "no segment header was read"));
    };
    if active_sealed {
        // Sealed, but the next segment was never created (spec 6, step 4).
        let (seg, _) = open_sealed(dir, last)?;
        sealed.push(seg);
        let header = SegmentHeader::new(&format, next, last_ts, (opts.clock)(), chain);
        create_segment(io, dir, &header, true)?;
        active_base = next;
        active_end = SEGMENT_HEADER_LEN as u64;
        active_index = MemIndex::default();
    }
    ensure_indexes(io, dir, &sealed, opts.hash_mask, &mut report)?;
    let table = ensure_table(io, dir, &sealed, active_base, opts.hash_mask, &mut report)?;
    Ok(Recovered {
        lock,
        format,
        chain,
        next_position: next,
        last_timestamp: last_ts,
        sealed,
        table,
        active_index: Arc::new(RwLock::new(active_index)),
        active_base,
        active_end,
        report,
    })
}

/// Warnings about where the log lives (issue 9): a log directory or
/// `snapshots/` folder that is a symlink (files may live outside the place
/// named), or that others may write to (anyone could plant, replace or remove
/// its files). `snapshots/` as a symlink is never followed by the writer:
/// snapshot saves fail and loads skip it.
fn place_warnings(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let snapshots = dir.join(crate::format::names::SNAPSHOT_DIR);
    for (path, what) in [(dir, "the log directory"), (snapshots.as_path(), "the snapshot folder")] {
        let Ok(link) = fs::symlink_metadata(path) else {
            continue;
        };
        if link.file_type().is_symlink() {
            let target = fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
            out.push(if path == dir {
                format!(
                    "{what} {} is a symbolic link (to {target}): annal works in the directory it points to",
                    path.display()
                )
            } else {
                format!(
                    "{what} {} is a symbolic link (to {target}): annal never follows it, so no snapshot is saved \
                     or loaded; replace it with a directory",
                    path.display()
                )
            });
        }
        #[cfg(unix)]
        if let Ok(m) = fs::metadata(path)
            && m.is_dir()
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o002 != 0 {
                out.push(format!(
                    "{what} {} has mode {mode:04o}: writable by others, who can replace or remove the log's files; \
                     chmod o-w {}",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    out
}

/// The format of a log created by this open.
fn new_format(opts: &Options) -> Result<LogFormat> {
    let chained = opts.chain && opts.format_version >= 2;
    if (opts.chain_key.is_some() || opts.signing_key.is_some()) && !chained {
        return Err(Error::InvalidArgument(
            "a chain key or signing key was given for a log created without the audit chain".into(),
        ));
    }
    let mut flags = 0;
    if chained {
        flags |= LOG_FLAG_CHAIN;
    }
    if opts.chain_key.is_some() {
        flags |= LOG_FLAG_KEYED;
    }
    Ok(LogFormat {
        log_id: opts.log_id.unwrap_or_else(|| uuid::Uuid::new_v4().into_bytes()),
        version: opts.format_version,
        flags,
        key_id: opts.chain_key.as_ref().map(|k| k.id()).unwrap_or_default(),
    })
}

/// The chain hash before a log's first batch (zero without a chain).
fn genesis(format: &LogFormat, opts: &Options) -> ChainHash {
    if format.chained() {
        Chainer::new(opts.chain_key.as_ref()).genesis(&format.log_id)
    } else {
        [0; 32]
    }
}

/// The chain hash in the seal of a sealed segment (its last frame).
fn seal_chain(bytes: &[u8]) -> ChainHash {
    let at = bytes.len().saturating_sub(FRAME_HEADER_LEN) + FRAME_CHAIN_OFFSET;
    let mut out = [0; 32];
    if let Some(c) = bytes.get(at..at + 32) {
        out.copy_from_slice(c);
    }
    out
}

/// A writer of a keyed log needs its key; a key for a log that is not keyed
/// is refused (it would protect nothing).
fn check_key(found: &LogFormat, opts: &Options, path: &Path) -> Result<()> {
    if opts.signing_key.is_some() && !found.chained() {
        return Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "a signing key was given, but the log has no audit chain to sign".into(),
        });
    }
    match (&opts.chain_key, found.keyed()) {
        (None, true) => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "the log's audit chain is keyed: opening it for writing needs its key".into(),
        }),
        (Some(_), false) => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "a chain key was given, but the log's audit chain is not keyed".into(),
        }),
        (Some(k), true) if k.id() != found.key_id => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: format!(
                "the key given (id {}) is not the log's chain key (id {})",
                crate::audit::chain::hex(&k.id()),
                crate::audit::chain::hex(&found.key_id)
            ),
        }),
        _ => Ok(()),
    }
}

/// The timestamp of the last record of a sealed segment (from its index).
fn last_timestamp_of(seg: &ViewSegment) -> Result<u64> {
    let bytes = seg.bytes()?;
    let n = seg.with_index(|i| Ok(i.frame_count()))?;
    let Some(last) = n.checked_sub(1) else {
        return Ok(SegmentHeader::parse(bytes)
            .map_err(|d| d.at(&*seg.path))?
            .prev_timestamp
            .get());
    };
    let Some((_, off)) = seg.with_index(|i| i.frame(last))? else {
        return Ok(0);
    };
    let rest = bytes.get(off as usize..).unwrap_or(&[]);
    Ok(validate_frame(rest, off, true)
        .map_err(|d| d.at(&*seg.path))?
        .last_timestamp)
}

/// Write the index of every sealed segment that has none (a crash between
/// sealing and indexing), spec 17.4. Existing indexes are not read.
fn ensure_indexes(io: &dyn Io, dir: &Path, sealed: &[ViewSegment], mask: u64, report: &mut Recovery) -> Result<()> {
    for (i, seg) in sealed.iter().enumerate() {
        let idx_path = dir.join(index_file_name(seg.base));
        if idx_path.exists() {
            continue;
        }
        let bytes = seg.bytes()?;
        let mem = MemIndex::rebuild(bytes).map_err(|d| d.at(&*seg.path))?;
        let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
        let earlier = &sealed[..i];
        let (idx, _) = mem.encode(seg.base, bytes.len() as u64, seal_crc, mask, &mut |name| {
            resolve_prev(None, earlier, name)
        });
        write_derived(io, dir, &idx_path, &idx)?;
        // The segment's cell may already hold an index rebuilt in memory
        // (recovery looked the segment up before this): switch it to the file,
        // so that the stream table built next records the file's rows.
        seg.index.retry_disk(bytes);
        report.rebuilt_indexes.push(idx_path);
    }
    Ok(())
}

/// Open the stream table, bringing it up to date with the sealed segments
/// (spec 18): merge the segments it does not cover, or rebuild it.
fn ensure_table(
    io: &dyn Io,
    dir: &Path,
    sealed: &[ViewSegment],
    active_base: u64,
    mask: u64,
    report: &mut Recovery,
) -> Result<Option<Arc<StreamTable>>> {
    let path = dir.join(STREAM_TABLE_FILE);
    if sealed.is_empty() {
        return Ok(None);
    }
    let reopen = |path: &Path| -> Result<StreamTable> {
        StreamTable::open(path)
            .map_err(|d| d.at(path))?
            .ok_or_else(|| corrupt(path, 0, "the stream table just written is missing"))
    };
    let table = match StreamTable::open(&path) {
        Ok(Some(t)) if t.next_segment() == active_base => Some(t),
        Ok(Some(mut t)) if sealed.iter().any(|s| s.base == t.next_segment()) => {
            // Merge the segments sealed after the table was written.
            for (i, seg) in sealed.iter().enumerate() {
                if seg.base < t.next_segment() {
                    continue;
                }
                let next_segment = sealed.get(i + 1).map_or(active_base, |s| s.base);
                let rows = seg.stream_rows(&seg.index.get(seg.bytes()?)?)?;
                let bytes = match streamtable::merge(Some(&t), &rows, seg.base, next_segment, mask) {
                    Ok(b) => b,
                    Err(_) => rebuild_table(sealed, active_base, mask)?,
                };
                write_derived(io, dir, &path, &bytes)?;
                t = reopen(&path)?;
                if t.next_segment() == active_base {
                    break;
                }
            }
            report.rebuilt_stream_table = true;
            Some(t)
        }
        // An I/O failure is not damage: the table may be intact.
        Err(d) if d.is_io() => return Err(d.at(&path)),
        _ => None,
    };
    let table = match table {
        Some(t) => Some(t),
        None => {
            let b = rebuild_table(sealed, active_base, mask)?;
            write_derived(io, dir, &path, &b)?;
            report.rebuilt_stream_table = true;
            Some(reopen(&path)?)
        }
    };
    Ok(table.map(Arc::new))
}
