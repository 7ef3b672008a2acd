//! Opening a log for writing: deciding whether a directory is a log, taking the
//! writer lock (on `annal.lock` and on the directory itself), checking the
//! segment chain (which starts at position 0, or where log retention left
//! it, spec 3.9), and recovering the active
//! segment after a crash (spec section 6). No frame longer than the format's
//! `MAX_FRAME_LEN` is read, whatever its header claims (spec 3.1).
//!
//! Invariant: recovery removes bytes only at or past the durable boundary of
//! the active segment, and only after everything before them was validated;
//! any other damage is returned as [`Error::Corrupt`] with nothing modified.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use zerocopy::IntoBytes;

use crate::audit::chain::{ChainHash, Chainer};
use crate::error::{Error, Result, corrupt};
use crate::format::frame::{
    FrameCursor, Walk, binding_at, chain_slot, validate_frame, walk_segment_records, walk_segment_records_from,
};
use crate::format::names::{parse_segment_file_name, segment_file_name};
use crate::format::{FRAME_KIND_BATCH, Layout, LogFormat, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::index::checkpoint::{self, CheckpointFile};
use crate::index::streamtable::StreamTable;
use crate::index::{Index, IndexBuilder, MemIndex};
use crate::read::view::{ViewSegment, open_sealed, open_sealed_in};
use crate::storage::head::{self, HEAD_FILE, Head};
use crate::storage::io::Io;
use crate::storage::mmap::Mapping;
use crate::storage::resync::resync_file;

use super::derived::{ensure_indexes, ensure_table};
use super::log_format::{check_key, genesis, new_format, seal_chain};
use super::options::Options;
use super::results::{Recovery, Truncation};
pub use crate::storage::writer_lock::LOCK_FILE;
use crate::storage::writer_lock::{WriterLock, take_lock};

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
    /// Index checkpoints covering the active segment's start (spec 17.5):
    /// the opened files, their paths, and where they end (the in-memory
    /// index holds the batches from there on).
    pub active_layered: Option<(Vec<Index>, Vec<CheckpointFile>, u64)>,
    pub active_base: u64,
    pub active_end: u64,
    /// The head file's current slot, if it already describes the log as
    /// opened (a clean close, nothing recovered): the writer keeps it.
    pub clean_head: Option<Head>,
    /// The layout of the active segment's frames.
    pub active_layout: Layout,
    /// File offset of the active segment's last batch, if it holds one.
    pub last_batch: Option<u64>,
    pub report: Recovery,
}

struct Listing {
    segments: Vec<u64>,
    temp: Vec<PathBuf>,
    /// Originals of compacted segments kept for other processes' views
    /// (spec 3.10), and when they were retired (seconds).
    retired: Vec<(PathBuf, u64)>,
    other: Vec<String>,
}

fn list(dir: &Path) -> Result<Listing> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut l = Listing {
        segments: Vec::new(),
        temp: Vec::new(),
        retired: Vec::new(),
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
        } else if let Some((_, at)) = crate::format::names::parse_retired_file_name(&name) {
            l.retired.push((entry.path(), at));
        } else if name != LOCK_FILE && name != HEAD_FILE {
            l.other.push(name.into_owned());
        }
    }
    l.segments.sort_unstable();
    Ok(l)
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

/// Open `dir` for writing: see the module docs. The steps, in order: make
/// sure `dir` is (or may become) a log, take the writer lock, remove
/// temporary files, then either create the log or check its sealed
/// segments and recover its active one, and bring the derived files up to
/// date. Traced as span `annal.open` (what it did, recorded at the end).
pub(crate) fn open(dir: &Path, opts: &Options) -> Result<Recovered> {
    let _span = crate::trace::span!(INFO, "annal.open", dir = %dir.display(), segments = crate::trace::Empty,
        created = crate::trace::Empty, truncated_bytes = crate::trace::Empty, rebuilt_indexes = crate::trace::Empty);
    let recovered = open_log(dir, opts)?;
    crate::trace::when! { recovered.report.trace(&_span, recovered.sealed.len() + 1); }
    Ok(recovered)
}

fn open_log(dir: &Path, opts: &Options) -> Result<Recovered> {
    let io = &*opts.io;
    prepare_dir(io, dir, opts)?;
    check_log_dir(dir, &list(dir)?, opts)?;
    let lock = take_lock(dir, io)?;
    let mut report = Recovery {
        warnings: place_warnings(dir),
        ..Recovery::default()
    };
    // Re-list under the lock: the directory is ours now.
    let listing = list(dir)?;
    remove_temp_files(io, dir, &listing.temp, &mut report)?;
    // Retired originals of compacted segments, once their time is up (spec
    // 3.10).
    let retired = listing.retired.iter().cloned();
    let warnings = super::compaction::remove_expired_retired(io, retired, opts.retired_grace);
    report.warnings.extend(warnings);
    let Some((&last, sealed_bases)) = listing.segments.split_last() else {
        return create_log(io, dir, opts, lock, report);
    };
    // What opening reads, the head file included, asked for at once
    // (advice: a cold open waits for the disk about once, not once a file).
    let opened = crate::read::view::prefetch_open(dir, sealed_bases, Some(last));
    let mut opening = Opening {
        io,
        dir,
        opts,
        head: read_head(dir, &listing.segments)?,
        format: None,
        report,
        stale_checkpoints: Vec::new(),
    };
    let (sealed, next) = opening.check_sealed(first_base(&listing.segments), sealed_bases, opened)?;
    let _recover =
        crate::trace::span!(INFO, "annal.recover", segment = %segment_file_name(last), sealed = sealed.len());
    let tail = opening.recover_active(last, next, &sealed)?;
    opening.finish(lock, last, sealed, tail)
}

/// Make sure `dir` is a directory, creating it (durably) if it is missing
/// and `opts` allow it.
fn prepare_dir(io: &dyn Io, dir: &Path, opts: &Options) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::NotALog {
            path: dir.to_owned(),
            detail: "it is not a directory".into(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.create => {
            io.create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
            // The new directory's entry is durable once its parent is synced.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                io.sync_dir(parent)
                    .map_err(|e| Error::io("fsync directory", parent, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotALog {
            path: dir.to_owned(),
            detail: "it does not exist (open with create to make a new log)".into(),
        }),
        Err(e) => Err(Error::io("stat", dir, e)),
    }
}

/// A directory without segment files becomes a log only if it holds no
/// other files and `opts` allow creating one.
fn check_log_dir(dir: &Path, listing: &Listing, opts: &Options) -> Result<()> {
    if !listing.segments.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// Delete the temporary files of an interrupted write (spec 1).
fn remove_temp_files(io: &dyn Io, dir: &Path, temp: &[PathBuf], report: &mut Recovery) -> Result<()> {
    for tmp in temp {
        match io.remove(tmp) {
            Ok(()) => report.removed_temp_files.push(tmp.clone()),
            // Gone since the listing: another process (a subscription's or
            // a projection's write, spec 24) renamed or removed its own.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", tmp, e)),
        }
    }
    if !temp.is_empty() {
        io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// Create a new log in `dir` (which holds no segment): its first segment,
/// empty.
fn create_log(io: &dyn Io, dir: &Path, opts: &Options, lock: WriterLock, mut report: Recovery) -> Result<Recovered> {
    let format = new_format(opts)?;
    let chain = genesis(&format, opts);
    let header = SegmentHeader::new(&format, 0, 0, (opts.clock)(), chain);
    create_segment(io, dir, &header, true)?;
    report.created = true;
    Ok(Recovered {
        lock,
        format,
        chain,
        next_position: 0,
        last_timestamp: 0,
        sealed: Vec::new(),
        table: None,
        active_index: Arc::new(RwLock::new(MemIndex::default())),
        active_layered: None,
        active_base: 0,
        active_end: SEGMENT_HEADER_LEN as u64,
        clean_head: None,
        active_layout: Layout::for_log(&format, 0),
        last_batch: None,
        report,
    })
}

/// The head file (spec 5.2), if any; the segment it names must exist.
fn read_head(dir: &Path, segments: &[u64]) -> Result<Option<Head>> {
    // A head naming a segment below the first one is from before log
    // retention removed it (spec 3.9): it vouches for nothing left.
    let head = head::read(dir)?.filter(|h| segments.first().is_none_or(|&f| h.segment_base >= f));
    if let Some(h) = head
        && segments.binary_search(&h.segment_base).is_err()
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
    Ok(head)
}

/// The first segment is the log's start: position 0, or, after log
/// retention removed segments from the front (spec 3.9), the base of the
/// first segment left (whose header's `chain_start` carries the chain on).
/// Whether a retention record accounts for a missing front is `check`'s
/// question (spec 3.9); a gap after the first segment is corruption
/// ([`Opening::check_sealed`]).
fn first_base(segments: &[u64]) -> u64 {
    segments.first().copied().unwrap_or(0)
}

/// An existing log being opened: what the steps after the lock share.
struct Opening<'a> {
    io: &'a dyn Io,
    dir: &'a Path,
    opts: &'a Options,
    /// The head file's record of the durable boundary, if there is one.
    head: Option<Head>,
    /// The log's format, decided by the first segment header read.
    format: Option<LogFormat>,
    report: Recovery,
    /// Index checkpoint files not used (spec 17.5), removed once the log
    /// is recovered.
    stale_checkpoints: Vec<PathBuf>,
}

/// The active segment's file, open for reading and mapped.
struct ActiveFile {
    path: PathBuf,
    file: File,
    len: u64,
    map: Mapping,
}

/// What recovering the active segment found.
struct ActiveTail {
    /// The timestamp of the last record kept.
    last_timestamp: u64,
    /// The chain hash after the last complete batch.
    chain: ChainHash,
    /// The position after the last record kept.
    next_position: u64,
    /// The end of the segment's last complete frame.
    end: u64,
    /// The segment's records, indexed.
    index: MemIndex,
    /// The segment ends with a seal: the next one was never created.
    sealed: bool,
    /// The index checkpoints covering the segment's start: the files, their
    /// names and where they end.
    base: Option<(Vec<Index>, Vec<CheckpointFile>, u64)>,
    /// The segment header's `prev_timestamp`.
    prev_timestamp: u64,
    /// File offset of the segment's last batch, if it holds one.
    last_batch: Option<u64>,
}

/// Index checkpoints found for the active segment.
struct CheckpointBase {
    files: Vec<Index>,
    names: Vec<CheckpointFile>,
    /// File offset of the last batch they cover.
    last_frame: u64,
    /// The state after the last batch they cover.
    after: Walk,
}

impl Opening<'_> {
    /// Every segment must belong to one log, in one format: the first header
    /// read decides it (and must suit the key given).
    fn check_format(&mut self, h: &SegmentHeader, path: &Path) -> Result<()> {
        let found = LogFormat::of(h);
        match self.format {
            None => {
                check_key(&found, self.opts, path)?;
                self.format = Some(found);
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
    }

    /// Check the sealed segments (`bases`, in order): header and seal only,
    /// their records are not read. Returns them and the position after the
    /// last of them.
    fn check_sealed(
        &mut self,
        first: u64,
        bases: &[u64],
        opened: Vec<Option<File>>,
    ) -> Result<(Vec<ViewSegment>, u64)> {
        let mut next = first;
        let mut sealed: Vec<ViewSegment> = Vec::with_capacity(bases.len() + 1);
        let mut opened = opened.into_iter();
        for &base in bases {
            let path = self.dir.join(segment_file_name(base));
            if base != next {
                return Err(corrupt(
                    &path,
                    32,
                    format!("expected a segment starting at position {next} (is one missing?), found {base}"),
                ));
            }
            // Header and seal read by copying: nothing of a sealed segment is
            // mapped before it is read.
            let (seg, seal_next, header) = open_sealed_in(self.dir, base, opened.next().flatten())?;
            self.check_format(&header, &path)?;
            if let Some(h) = self.head
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
        Ok((sealed, next))
    }

    /// Check the active segment (the last, based at `last`; the sealed
    /// segments end at position `next`) and recover it after a crash
    /// (spec 6): a header torn while the segment was created is rewritten,
    /// a torn tail past the durable boundary is cut.
    fn recover_active(&mut self, last: u64, next: u64, sealed: &[ViewSegment]) -> Result<ActiveTail> {
        let path = self.dir.join(segment_file_name(last));
        let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        // SAFETY: mapped, not copied: we hold the writer lock, so no annal
        // process changes the file while this mapping lives, and it is dropped
        // before recovery truncates the file (mmap module, case 5).
        let map = unsafe { Mapping::map(&file, file_len, &path) }?;
        if !sealed.is_empty() && last != next {
            return Err(corrupt(
                &path,
                32,
                format!("expected a segment starting at position {next} (is one missing?), found {last}"),
            ));
        }
        let bytes = map.bytes();
        match SegmentHeader::parse(bytes) {
            Err(_) if bytes.len() <= SEGMENT_HEADER_LEN && self.head.is_none_or(|h| h.segment_base != last) => {
                self.reinitialize(map, &path, last, next, sealed)
            }
            Err(d) => Err(d.at(&path)),
            Ok(header) => {
                let header = *header;
                let active = ActiveFile {
                    path,
                    file,
                    len: file_len,
                    map,
                };
                self.recover_tail(active, &header, last)
            }
        }
    }

    /// The active segment's header was torn while it was created: it cannot
    /// hold a frame (spec 6, step 4), so it is rewritten as an empty segment
    /// following the sealed ones.
    fn reinitialize(
        &mut self,
        map: Mapping,
        path: &Path,
        last: u64,
        next: u64,
        sealed: &[ViewSegment],
    ) -> Result<ActiveTail> {
        let last_timestamp = match sealed.last() {
            Some(prev) => last_timestamp_of(prev)?,
            None => 0,
        };
        let f = match self.format {
            Some(f) => f,
            None => new_format(self.opts)?,
        };
        self.format = Some(f);
        let chain = match sealed.last() {
            Some(prev) => seal_chain(prev.bytes()?),
            None => genesis(&f, self.opts),
        };
        drop(map);
        let header = SegmentHeader::new(&f, last, last_timestamp, (self.opts.clock)(), chain);
        create_segment(self.io, self.dir, &header, false)?;
        self.report.reinitialized = Some(path.to_owned());
        Ok(ActiveTail {
            last_timestamp,
            chain,
            next_position: next,
            end: SEGMENT_HEADER_LEN as u64,
            index: MemIndex::default(),
            sealed: false,
            base: None,
            prev_timestamp: last_timestamp,
            last_batch: None,
        })
    }

    /// Walk the active segment's records and cut a torn tail (spec 6): only
    /// at or past the durable boundary, else the damage is reported and
    /// nothing is modified.
    fn recover_tail(&mut self, active: ActiveFile, header: &SegmentHeader, last: u64) -> Result<ActiveTail> {
        let ActiveFile {
            path,
            file,
            len: file_len,
            map,
        } = active;
        let path = path.as_path();
        if header.base_position.get() != last {
            return Err(corrupt(
                path,
                32,
                format!(
                    "expected base_position {last} (from the file name), found {}",
                    header.base_position.get()
                ),
            ));
        }
        self.check_format(header, path)?;
        // No frame is read past `MAX_FRAME_LEN`, whatever its header
        // claims (a sparse file can claim gigabytes of zeros): such a
        // header fails `FrameHeader::parse`, so it is an incomplete frame
        // and the durable boundary decides (spec 5.1).
        // One pass: every record is validated (CRC included) and indexed
        // as the walk reads it; a batch enters the index once complete.
        // Index checkpoints (spec 17.5) cover the start of the segment:
        // only the batches after them are walked.
        let layout = Layout::of(header);
        let base = self.checkpoints(last, map.bytes(), &layout)?;
        // What is walked is read ahead (a mapping is advised random): the
        // whole segment without checkpoints, else only the bytes after them.
        match &base {
            None => map.sequential(),
            Some(b) => map.prefetch(b.after.end, file_len.saturating_sub(b.after.end)),
        }
        let mut builder = IndexBuilder::default();
        let walk = match &base {
            Some(b) => {
                let rest = map.bytes().get(b.after.end as usize..).unwrap_or(&[]);
                walk_segment_records_from(rest, b.after.clone(), true, &layout, &mut builder)
            }
            None => walk_segment_records(map.bytes(), header, true, &mut builder),
        };
        let index = builder.finish();
        // Version 3: the batches after the last stored chain slot are linked
        // here (spec 3.6), up to the end kept.
        let chain = self.link_tail(path, map.bytes(), &layout, walk.chain, walk.chain_through, walk.end)?;
        let last_batch = index
            .frames
            .last()
            .map(|&(_, off)| off)
            .or(base.as_ref().map(|b| b.last_frame));
        let head_durable = self
            .head
            .filter(|h| h.segment_base == last)
            .map_or(0, |h| h.durable_end);
        if let Some(d) = walk.stop {
            let x = walk.end;
            let boundary = (SEGMENT_HEADER_LEN as u64)
                .max(walk.max_durable)
                .max(resync_file(&file, path, x, file_len, &layout)?)
                .max(head_durable);
            if x < boundary {
                return Err(corrupt(
                    path,
                    d.offset,
                    format!(
                        "{}; the damaged frame starts at byte {x}, below the durable boundary at byte {boundary}, \
                         so this is damage to durable data, not a torn write (nothing was removed)",
                        d.detail()
                    ),
                ));
            }
            drop(map);
            let f = self.io.open(path).map_err(|e| Error::io("open", path, e))?;
            f.truncate(x).map_err(|e| Error::io("truncate", path, e))?;
            f.sync().map_err(|e| Error::io("fsync", path, e))?;
            crate::trace::event!(WARN, file = %path.display(), offset = x, bytes = file_len - x, reason = %d.detail(),
                "annal recovery cut a torn tail");
            self.report.truncated = Some(Truncation {
                path: path.to_owned(),
                offset: x,
                bytes_removed: file_len - x,
                reason: d.detail(),
            });
        } else if head_durable > file_len {
            return Err(corrupt(
                path,
                file_len,
                format!("the head says bytes up to {head_durable} are durable, but the file ends here"),
            ));
        }
        Ok(ActiveTail {
            last_timestamp: walk.last_timestamp,
            chain,
            next_position: walk.next_position,
            end: walk.end,
            index,
            sealed: walk.sealed,
            base: base.map(|b| (b.files, b.names, b.after.end)),
            prev_timestamp: header.prev_timestamp.get(),
            last_batch,
        })
    }

    /// The chain hash after the batches of `bytes` (the active segment) from
    /// file offset `from`, where the chain hash is `chain`, up to `end`
    /// (complete frames): `chain` itself unless version 3 left batches
    /// without a chain slot there, which are linked (and validated) here.
    fn link_tail(
        &self,
        path: &Path,
        bytes: &[u8],
        layout: &Layout,
        chain: ChainHash,
        from: u64,
        end: u64,
    ) -> Result<ChainHash> {
        let chained = self.format.is_some_and(|f| f.chained());
        if !layout.compact() || !chained || from >= end {
            return Ok(chain);
        }
        let rest = bytes.get(from as usize..end as usize).unwrap_or_default();
        let first = match crate::format::frame::parse_header(rest, from, layout) {
            Ok(f) => f.first_position,
            Err(d) => return Err(d.at(path)),
        };
        let chainer = Chainer::new(self.opts.chain_key.as_ref()).for_layout(layout);
        let mut cursor = FrameCursor::new(rest, from, first, true, *layout);
        let mut chain = chain;
        while let Some(step) = cursor.step() {
            let f = step.map_err(|d| d.at(path))?;
            if f.frame.kind == FRAME_KIND_BATCH {
                chain = chainer.link(&chain, f.bytes);
            }
        }
        Ok(chain)
    }

    /// The index checkpoints that cover the start of the active segment
    /// based at `base` (`bytes`, mapped whole), each checked against the
    /// segment, and the state after the last batch they cover (that batch
    /// validated in full). Every other checkpoint file is left for
    /// [`Opening::finish`] to remove; a checkpoint that does not hold is
    /// reported in the warnings and not used (nor any after it).
    fn checkpoints(&mut self, base: u64, bytes: &[u8], layout: &Layout) -> Result<Option<CheckpointBase>> {
        let all = match checkpoint::list(self.dir) {
            Ok(a) => a,
            Err(e) => {
                self.report.warnings.push(format!("index checkpoints not used: {e}"));
                return Ok(None);
            }
        };
        let (chain, stale) = checkpoint::chain(all, base, bytes.len() as u64);
        self.stale_checkpoints = stale.into_iter().map(|c| c.path).collect();
        let (files, failed) = checkpoint::open_chain(&chain, |off| binding_at(bytes, off, layout));
        if let Some(e) = failed {
            self.report
                .warnings
                .push(format!("{e}; the index checkpoint is not used and is removed"));
            self.stale_checkpoints
                .extend(chain.iter().skip(files.len()).map(|c| c.path.clone()));
        }
        let Some(last) = files.last().cloned() else {
            return Ok(None);
        };
        let (off, _) = last.checkpoint_binding();
        let (_, end) = last.covered();
        let Some(frame) = bytes
            .get(off as usize..)
            .map(|rest| validate_frame(rest, off, true, layout))
            .and_then(Result::ok)
        else {
            return Ok(None);
        };
        let path = self.dir.join(segment_file_name(base));
        let chain_hash = match bytes.get(off as usize..).and_then(|f| chain_slot(f, &frame)) {
            Some(c) => c,
            // Version 3: the last covered batch stores no chain slot; link
            // on from the last one that does (spec 3.6: within the last
            // 16 KiB block with a batch), found through the checkpoints'
            // frame entries.
            None => match self.chain_before(&path, bytes, layout, &files, end)? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let used = files.len();
        Ok(Some(CheckpointBase {
            files: files.into_iter().map(Index::Disk).collect(),
            names: chain.into_iter().take(used).collect(),
            last_frame: off,
            after: Walk {
                end,
                next_position: frame.next_position(),
                last_timestamp: frame.last_timestamp,
                max_durable: frame.durable_end,
                chain: chain_hash,
                chain_through: end,
                sealed: false,
                stop: None,
            },
        }))
    }

    /// The chain hash at `end` (where the checkpoints `files` end) in a
    /// version-3 segment whose batch ending there stores no chain slot: the
    /// newest batch that stores one, found newest first through the
    /// checkpoints' frame entries (each checked against the segment), and
    /// the batches from it to `end` linked. `None` if none is found (the
    /// checkpoints are then not used).
    fn chain_before(
        &self,
        path: &Path,
        bytes: &[u8],
        layout: &Layout,
        files: &[Arc<crate::index::IdxFile>],
        end: u64,
    ) -> Result<Option<ChainHash>> {
        for file in files.iter().rev() {
            for k in (0..file.frame_count()).rev() {
                let Ok((position, off)) = file.frame(k) else {
                    return Ok(None);
                };
                let Some(rest) = bytes.get(off as usize..) else {
                    return Ok(None);
                };
                let Ok(f) = crate::format::frame::parse_header(rest, off, layout) else {
                    return Ok(None);
                };
                if f.first_position != position || f.kind != FRAME_KIND_BATCH {
                    return Ok(None);
                }
                if let Some(c) = chain_slot(rest, &f) {
                    return self.link_tail(path, bytes, layout, c, off + f.len, end).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Make everything kept durable, create the next segment if the active
    /// one (based at `last`) was sealed, and bring the index files and the
    /// stream table up to date.
    fn finish(
        mut self,
        lock: WriterLock,
        last: u64,
        mut sealed: Vec<ViewSegment>,
        tail: ActiveTail,
    ) -> Result<Recovered> {
        let (io, dir, opts) = (self.io, self.dir, self.opts);
        let path = dir.join(segment_file_name(last));
        // A clean close: the head's current slot says the whole segment is
        // durable and visible, and nothing was cut or created since.
        let clean_head = self.head.filter(|h| {
            // (A sequence that could not be counted on is not kept.)
            h.sequence < u64::MAX / 2
                && h.segment_base == last
                && h.durable_end == tail.end
                && h.visible_end == tail.end
                && h.next_position == tail.next_position
                && !tail.sealed
                && self.report.truncated.is_none()
                && self.report.reinitialized.is_none()
        });
        // Everything kept is made durable before the head says so (spec 6,
        // step 5); after a clean close it already is.
        if clean_head.is_none() {
            let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
            f.sync().map_err(|e| Error::io("fsync", &path, e))?;
            drop(f);
        }
        let Some(format) = self.format else {
            return Err(corrupt(&path, 0, "no segment header was read"));
        };
        let (mut active_base, mut active_end, mut active_index) = (last, tail.end, tail.index);
        let (mut prev_timestamp, mut last_batch) = (tail.prev_timestamp, tail.last_batch);
        let mut base = tail.base;
        if tail.sealed {
            if let Some((_, names, _)) = base.take() {
                self.stale_checkpoints.extend(names.into_iter().map(|c| c.path));
            }
            // Sealed, but the next segment was never created (spec 6, step 4).
            let (seg, _) = open_sealed(dir, last)?;
            sealed.push(seg);
            let header = SegmentHeader::new(
                &format,
                tail.next_position,
                tail.last_timestamp,
                (opts.clock)(),
                tail.chain,
            );
            create_segment(io, dir, &header, true)?;
            active_base = tail.next_position;
            active_end = SEGMENT_HEADER_LEN as u64;
            active_index = MemIndex::default();
            (prev_timestamp, last_batch) = (tail.last_timestamp, None);
        }
        for p in &self.stale_checkpoints {
            match io.remove(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", p, e)),
            }
        }
        ensure_indexes(io, dir, &sealed, opts.hash_mask, &mut self.report)?;
        let table = ensure_table(io, dir, &sealed, active_base, opts.hash_mask, &mut self.report)?;
        Ok(Recovered {
            lock,
            format,
            chain: tail.chain,
            next_position: tail.next_position,
            last_timestamp: tail.last_timestamp,
            sealed,
            table,
            active_layered: base,
            active_index: Arc::new(RwLock::new(active_index)),
            active_base,
            active_end,
            clean_head,
            active_layout: Layout::for_log(&format, prev_timestamp),
            last_batch,
            report: self.report,
        })
    }
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
    Ok(validate_frame(rest, off, true, &seg.layout)
        .map_err(|d| d.at(&*seg.path))?
        .last_timestamp)
}
