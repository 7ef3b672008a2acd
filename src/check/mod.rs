//! `annal check`: verify every file of a log against the format (spec
//! sections 2–6, 16–18, 20), and optionally repair what can be repaired
//! without removing events from sealed segments.
//!
//! What is checked:
//!
//! * every segment (in parallel): its header, the framing of every frame,
//!   every record's CRC, positions contiguous within and across segments,
//!   stream versions contiguous per stream (within and across segments,
//!   starting at 0), batch completeness (spec 3.3), the seal of every sealed
//!   segment, and one `log_id` throughout;
//! * every index file: its blocks, header and counts, and its whole content,
//!   byte for byte, against the index rebuilt from its segment; its `prev`
//!   pointers against the newest earlier segment holding each stream;
//! * the stream table: blocks, header and content against the table rebuilt
//!   from the segments it covers;
//! * the head file, and every snapshot file (decoded and checked, spec 20.3);
//! * the audit chain (spec 21), in logs that carry it: every batch's link is
//!   recomputed from the chain hash stored before it (in the same parallel
//!   pass over each segment), every seal against its segment's last batch,
//!   and the segments' `chain_start` against the genesis hash and the previous
//!   segment's seal. A keyed chain needs its key ([`CheckOptions::key`]);
//!   without it only the stored values are compared with each other (a
//!   warning says so). Each [`Anchor`] given ([`CheckOptions::anchor`]) is
//!   checked against the history before its position; the verdicts are in
//!   [`CheckReport::anchors`] and a summary in [`CheckReport::chain`]. In logs
//!   without the chain, every chain slot must be zero. Checkpoint frames
//!   (spec 3.5) repeat the stored chain; with a public key
//!   ([`CheckOptions::public_key`]) their signatures are verified and every
//!   sealed segment must end with one ([`CheckReport::signatures`]); without
//!   one, each signature is verified against the public key the checkpoint
//!   names, which catches damage and careless forgery but proves nothing
//!   about who signed ([`CheckReport::signature_note`] says so).
//!
//! How files are read: every file with [`crate::io::open_read`] (never
//! through a symlink, never blocking on a FIFO, only a regular file; anything
//! else is a problem naming the file and what it is), and never more than
//! its structure allows: the head's 128 bytes (and one more, to tell a longer
//! file), a derived file's bytes up to the length rebuilt from the segments
//! (and one more), the active segment frame by frame with no frame longer
//! than [`CheckOptions::max_batch_bytes`] (a longer one is reported, not
//! read), sealed segments and derived files through a mapping, and large
//! snapshots in bounded chunks. A symlinked `snapshots/` is not followed (a
//! warning); a symlinked or world-writable log directory or `snapshots/` is
//! a warning.
//!
//! A finding names the damaged bytes and only those: the first byte that
//! differs (for a derived file, from the file rebuilt from the segments),
//! or the field whose check failed. What later files are compared with
//! (stream versions, index back pointers, the stream table) depends on
//! every earlier segment: past a damaged segment those comparisons are
//! skipped, and one warning on the damaged segment, starting with "a
//! consequence", says so.
//!
//! While a writer holds the log, the head is read first, then the stream
//! table, then the segments are listed: a writer writes a table only after
//! the segments it covers exist, so no roll during the check shows a table
//! newer than the listing. Index files and the table are compared only if
//! the file decoded is still the one the path names (a replaced file is not
//! compared, with a warning). Should a check with a writer active still find
//! a problem, it looks once more and reports the second look.
//!
//! How findings are classified:
//!
//! * damage below the durable boundary of the active segment (spec 5.1), or
//!   anywhere in a sealed segment, or in a derived file, is a **problem**;
//! * in the head file, a slot that fails its checks while the other slot is
//!   valid is a **warning** naming the slot (a crash while the writer wrote
//!   it leaves that); neither slot valid, or a head that is not 128 bytes
//!   long, is a **problem**;
//! * a missing index file is a **problem** (the next writer open, or
//!   `--repair`, rebuilds it), except while a writer holds the log and may
//!   still be writing it, or for a sealed last segment or the sealed segments
//!   after the newest one that has an index (a crash right after sealing, or
//!   while the sealer thread lagged behind), which are **warnings**; a missing
//!   stream table is a **warning** (a crash before its first write leaves
//!   none; the next writer open builds it);
//! * with no writer, a torn tail past the durable boundary is a **warning**: the
//!   next writer open (or `--repair`) removes it. While a writer holds the log,
//!   the end it is writing is in progress and only noted as a warning.
//!
//! Checking is read-only. With [`CheckOptions::repair`], the check takes the
//! writer lock (by opening the log, whose recovery cuts a torn tail and
//! rebuilds missing derived files), removes damaged index files, a damaged
//! stream table and damaged snapshot files, reopens the log so that the derived
//! files are rebuilt from the segments, and checks again. It never removes
//! events from sealed segments.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::chain::{Anchor, ChainHash, ChainKey, Chainer, PublicKey, hex};
use crate::error::{Damage, DamageKind, Error, Result};
use crate::format::{
    CHECKPOINT_FRAME_LEN, FRAME_CHAIN_OFFSET, FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_CHECKPOINT,
    FRAME_KIND_SEAL, FrameHeader, HEAD_FILE_LEN, HEAD_SLOT_LEN, HeadSlot, IDX_HEADER_LEN, IDX_STREAM_ROW_LEN,
    LogFormat, SEGMENT_HEADER_LEN, STB_HEADER_LEN, STB_ROW_LEN, SegmentHeader,
};
use crate::head::{self, HEAD_FILE, Head};
use crate::index::{self, IdxFile, MemIndex, NO_ROW, NO_SEGMENT, Prev};
use crate::log::{Log, Options, index_file_name};
use crate::mmap::Mapping;
use crate::recovery::LOCK_FILE;
use crate::segment::{
    frame_records, parse_segment_file_name, resync_file, resync_max_durable, segment_file_name, walk_segment,
};
use crate::snapshot::{SNAPSHOT_DIR, SnapshotStore};
use crate::streamtable::{self, STREAM_TABLE_FILE, StreamTable, TableEntry};

/// A progress callback: `(bytes checked so far, bytes to check in all)`.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Options of [`check`].
#[derive(Clone, Default)]
pub struct CheckOptions {
    repair: bool,
    progress: Option<ProgressFn>,
    key: Option<ChainKey>,
    anchors: Vec<Anchor>,
    public_key: Option<PublicKey>,
    max_batch_bytes: Option<u64>,
}

impl fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckOptions")
            .field("repair", &self.repair)
            .field("progress", &self.progress.is_some())
            .field("key", &self.key)
            .field("anchors", &self.anchors)
            .field("public_key", &self.public_key)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .finish()
    }
}

impl CheckOptions {
    /// Repair what can be repaired (see the module documentation): takes the
    /// writer lock, so it fails with [`Error::Locked`] while a writer holds
    /// the log.
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Call `f(done, total)` (in bytes) as the check progresses, from any
    /// thread.
    pub fn progress(mut self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The secret key of a keyed audit chain (spec 21.4), to recompute its
    /// links. Without it, a keyed chain is not verified (a warning). A key
    /// whose id is not the log's `key_id`, or a key given for a log whose
    /// chain is not keyed, is a problem. With [`CheckOptions::repair`], the
    /// key is also given to the writer open that repairs (a keyed log needs
    /// it).
    pub fn key(mut self, key: ChainKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Check that the log's history up to `anchor.position` is the one the
    /// anchor was taken from (see [`AnchorVerdict`]). May be given several
    /// times.
    pub fn anchor(mut self, anchor: Anchor) -> Self {
        self.anchors.push(anchor);
        self
    }

    /// Verify the signed checkpoints (spec 21.5) with `key`: every
    /// checkpoint must be signed by it and its signature must verify, and
    /// every sealed segment must end with a checkpoint before its seal. The
    /// result is in [`CheckReport::signatures`].
    pub fn public_key(mut self, key: PublicKey) -> Self {
        self.public_key = Some(key);
        self
    }

    /// The largest frame to read (default: the format's
    /// [`MAX_FRAME_LEN`](crate::format::MAX_FRAME_LEN), 1 GiB, which bounds
    /// every writer's [`Options::max_batch_bytes`]): a frame claiming more is
    /// reported without being read, so that a length in a file never decides
    /// how much `check` reads or holds in memory. A lower value (the writer's
    /// `max_batch_bytes`) bounds `check`'s memory further.
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = Some(bytes);
        self
    }

    /// The largest frame a writer with these limits writes.
    fn max_frame(&self) -> u64 {
        self.max_batch_bytes
            .unwrap_or(DEFAULT_MAX_BATCH_BYTES)
            .max(CHECKPOINT_FRAME_LEN as u64)
    }
}

/// The format's limit on a frame (spec 8).
const DEFAULT_MAX_BATCH_BYTES: u64 = crate::format::MAX_FRAME_LEN;

/// What [`check`] found of the signed checkpoints (spec 21.5), when given a
/// public key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignatureSummary {
    /// Checkpoints whose signature verified with the key given.
    pub verified: u64,
    /// The position of the newest verified checkpoint: the history before it
    /// is attested by the key's holder (if the chain verified too).
    pub last_signed_position: Option<u64>,
    /// Events after the newest verified checkpoint (not yet signed).
    pub unsigned_events: u64,
}

/// What [`check`] found of the audit chain (spec 21).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChainStatus {
    /// The log carries no audit chain (format version 1, or created without
    /// it), or no segment header could be read.
    #[default]
    Absent,
    /// Every link was recomputed from the batches' bytes.
    Verified {
        /// The chain is keyed (and the key given was the log's).
        keyed: bool,
        /// Batches whose link was recomputed.
        batches: u64,
        /// Broken links found (each is also a problem).
        broken: u64,
    },
    /// The links could not be recomputed; only the stored chain values were
    /// compared with each other.
    NotVerified {
        /// The chain is keyed.
        keyed: bool,
        /// Why (no key given, a wrong key, segments that disagree on the
        /// log's format).
        reason: String,
    },
}

impl fmt::Display for ChainStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainStatus::Absent => write!(f, "absent (the log has no audit chain)"),
            ChainStatus::Verified { keyed, batches, broken } => {
                let kind = if *keyed { "keyed" } else { "unkeyed" };
                if *broken == 0 {
                    write!(f, "verified ({kind}): {batches} batch links recomputed, all hold")
                } else {
                    write!(
                        f,
                        "verified ({kind}): {batches} batch links recomputed, {broken} broken"
                    )
                }
            }
            ChainStatus::NotVerified { keyed, reason } => {
                let kind = if *keyed { "keyed" } else { "unkeyed" };
                write!(f, "not verified ({kind}): {reason}")
            }
        }
    }
}

/// The verdict on one anchor given to [`check`] ([`CheckOptions::anchor`]).
///
/// An anchor holds iff the log has the audit chain, its position is a batch
/// boundary of the log (or 0), no link of the chain before it is broken, and
/// the chain hash recomputed there equals the anchor's hash: then the history
/// before the anchor's position is the one the anchor was taken from. An
/// anchor that does not hold is also a problem in [`CheckReport::problems`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorVerdict {
    /// The anchor, as given.
    #[serde(serialize_with = "anchor_as_text")]
    pub anchor: Anchor,
    /// It holds.
    pub ok: bool,
    /// Why it holds, or where the history differs from it.
    pub detail: String,
}

fn anchor_as_text<S: serde::Serializer>(a: &Anchor, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// One finding of [`check`]: where, and what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file concerned.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// What was expected and what was found.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.file.display(), self.offset, self.detail)
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Damage: the log (or a derived file) is not as the format requires.
    pub problems: Vec<Finding>,
    /// Things that are not damage but worth knowing (a torn tail that the
    /// next writer open removes, a writer in progress, ...).
    pub warnings: Vec<Finding>,
    /// What `repair` did, one line per action (empty without repair).
    pub repairs: Vec<String>,
    /// A writer held the log during the check.
    pub writer_active: bool,
    /// Files checked.
    pub files: u64,
    /// Records checked (CRC included).
    pub records: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Time taken.
    #[serde(skip)]
    pub elapsed: Duration,
    /// The audit chain: absent, verified, or not verified and why.
    pub chain: ChainStatus,
    /// One verdict per anchor given, in the order given.
    pub anchors: Vec<AnchorVerdict>,
    /// The signed checkpoints, if a public key was given
    /// ([`CheckOptions::public_key`]).
    pub signatures: Option<SignatureSummary>,
    /// Without a public key, every checkpoint's signature is verified against
    /// the public key the checkpoint itself names: that catches damage and a
    /// careless forgery, but not a forger who signs with a key of their own.
    /// When the log holds checkpoints and no public key was given, this says
    /// so (one line, for the CLI to print); `None` otherwise.
    pub signature_note: Option<String>,
}

impl CheckReport {
    /// No problems (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the log in `dir`; see the module documentation.
///
/// Returns `Err` only when the check could not run: `dir` is not a log, or a
/// file could not be read ([`Error::NotALog`], [`Error::Io`]), or repair was
/// asked for while another writer holds the log ([`Error::Locked`]). Damage is
/// reported in [`CheckReport::problems`], not as an error.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{CheckOptions, EventData, ExpectedVersion, Log, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Options::default())?;
/// log.append("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}".as_slice())])?;
/// log.close()?;
/// let report = annal::check(dir.path(), CheckOptions::default())?;
/// assert!(report.is_ok(), "{:?}", report.problems);
/// assert_eq!(report.records, 1);
/// # Ok(()) }
/// ```
pub fn check(dir: &Path, opts: CheckOptions) -> Result<CheckReport> {
    let start = Instant::now();
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(Error::NotALog {
            path: dir.to_owned(),
            detail: "it holds no segment files (*.seg)".into(),
        });
    }
    if !opts.repair {
        let writer_active = writer_holds_lock(dir);
        let mut report = scan(dir, writer_active, &opts)?.report;
        if writer_active && !report.is_ok() {
            // A writer changes files while they are read (it rolls segments,
            // replaces the stream table and index files). The reads are
            // ordered so that none sees a file newer than the ones it is
            // compared with; should anything still differ, look once more
            // before calling it damage: damage stays, a change in progress
            // does not.
            report = scan(dir, writer_holds_lock(dir), &opts)?.report;
        }
        report.elapsed = start.elapsed();
        return Ok(report);
    }

    let mut repairs = Vec::new();
    let log_opts = || {
        let o = Options::default().create(false).stream_hash_mask(hash_mask_of(dir));
        match &opts.key {
            Some(k) => o.chain_key(k.clone()),
            None => o,
        }
    };
    let log = match Log::open(dir, log_opts()) {
        Ok(log) => Some(log),
        Err(e @ Error::Locked { .. }) => return Err(e),
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. } | Error::ChainKey { .. })) => {
            repairs.push(format!("repair refused, nothing was changed: {e}"));
            None
        }
        Err(e) => return Err(e),
    };
    let Some(log) = log else {
        let mut report = scan(dir, writer_holds_lock(dir), &opts)?.report;
        report.repairs = repairs;
        report.elapsed = start.elapsed();
        return Ok(report);
    };
    describe_recovery(log.recovery(), &mut repairs);
    let first = scan(dir, false, &opts);
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
    let log = Log::open(dir, log_opts())?;
    describe_recovery(log.recovery(), &mut repairs);
    let second = scan(dir, false, &opts);
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

fn describe_recovery(r: &crate::log::Recovery, out: &mut Vec<String>) {
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

fn writer_holds_lock(dir: &Path) -> bool {
    crate::io::lock_held(&dir.join(LOCK_FILE))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
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

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(s);
    Some(u64::from_le_bytes(x))
}

/// The hash mask the log's derived files use (default if none is readable).
/// Reads the stream table's first 32 bytes only, never through a link or
/// from a special file.
fn hash_mask_of(dir: &Path) -> u64 {
    let path = dir.join(STREAM_TABLE_FILE);
    match open_checked(&path) {
        Ok(Opened::File(f, _)) => read_prefix(&f, &path, 32)
            .ok()
            .and_then(|b| u64_at(&b, 24))
            .unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

/// A log file as `check` opened it.
enum Opened {
    /// No file of that name.
    Missing,
    /// A regular file (opened with [`crate::io::open_read`]), and its length.
    File(fs::File, u64),
    /// Something else under the name (a FIFO, a device, a symlink, a
    /// directory): what was found, for a finding. It was not read.
    NotRegular(String),
}

/// Open a log file for reading the one way `check` does: never following a
/// symlink, never blocking on a FIFO, refusing anything but a regular file
/// (which is then described, not read).
fn open_checked(path: &Path) -> Result<Opened> {
    match crate::io::open_read(path) {
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
                        crate::io::file_kind(&kind)
                    )));
                }
            }
            Err(Error::io("open", path, e))
        }
    }
}

/// Read at most `max` bytes from the start of `f` (memory bounded by `max`,
/// never by the file's length).
fn read_prefix(f: &fs::File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut out = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    read_at_into(f, path, 0, len.min(max), &mut out)?;
    Ok(out)
}

/// Append the bytes `[offset, offset + n)` of `f` to `out` (fewer if the file
/// ends first).
fn read_at_into(f: &fs::File, path: &Path, offset: u64, n: u64, out: &mut Vec<u8>) -> Result<()> {
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
fn still_names(path: &Path, f: &fs::File) -> bool {
    match (fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => identity(&a) == identity(&b),
        _ => false,
    }
}

/// Warn about a log directory or `snapshots/` that is a symlink or that
/// anyone may write to: whoever can write there can replace the log's files.
fn check_dir_safety(dir: &Path, report: &mut CheckReport) {
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

/// Check the head file (spec 5.2), every byte of it, and return its current
/// slot.
///
/// * Its length must be 128 (it is created whole and written in place): any
///   other length is a problem.
/// * A slot that fails its checks while the other slot is valid is a
///   **warning** naming the slot's failed field: a crash while the writer
///   wrote that slot leaves exactly this, and readers use the other one;
///   the next writer open rewrites the file. The one exception is slot 1 all
///   zero beside a slot 0 of sequence 1 (a head never written since it was
///   created), which is not reported.
/// * Neither slot valid is a **problem** (a crash tears at most the slot
///   being written), except while a writer holds the log (a warning: the
///   slot read may be the one being written).
fn check_head(dir: &Path, writer_active: bool, report: &mut CheckReport) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    let (f, len) = match open_checked(&path)? {
        Opened::Missing => return Ok(None),
        Opened::NotRegular(d) => {
            report.problems.push(finding(&path, 0, d));
            return Ok(None);
        }
        Opened::File(f, len) => (f, len),
    };
    // One byte more than a head holds: enough to tell a longer file, never
    // more (a head may be a sparse file of any length).
    let bytes = read_prefix(&f, &path, HEAD_FILE_LEN as u64 + 1)?;
    report.files += 1;
    report.bytes += bytes.len().min(HEAD_FILE_LEN) as u64;
    if len != HEAD_FILE_LEN as u64 {
        report.problems.push(finding(
            &path,
            len.min(HEAD_FILE_LEN as u64),
            format!(
                "expected a {HEAD_FILE_LEN}-byte head file, found {len} bytes (the head is created whole and \
                 written in place: no crash changes its length)"
            ),
        ));
    }
    let bytes = &bytes[..bytes.len().min(HEAD_FILE_LEN)];
    let current = match head::decode(bytes) {
        Ok((current, _)) => current,
        Err(d) => {
            report.problems.push(damage_finding(&path, &d));
            return Ok(None);
        }
    };
    let mut invalid = Vec::new();
    for i in 0..2 {
        let at = i * HEAD_SLOT_LEN;
        let slot = bytes.get(at..(at + HEAD_SLOT_LEN).min(bytes.len())).unwrap_or(&[]);
        let Err(d) = HeadSlot::parse(slot, at as u64) else {
            continue;
        };
        let never_written = i == 1
            && slot.len() == HEAD_SLOT_LEN
            && slot.iter().all(|&b| b == 0)
            && current.is_some_and(|h| h.sequence == 1);
        if !never_written {
            invalid.push((i, d));
        }
    }
    for (i, d) in invalid {
        let f = if current.is_some() {
            finding(
                &path,
                d.offset,
                format!(
                    "head slot {i} is not valid ({}); the other slot is current, so nothing is lost: a crash while \
                     the writer wrote this slot leaves it so, and the next writer open rewrites the head",
                    d.detail()
                ),
            )
        } else {
            finding(
                &path,
                d.offset,
                format!(
                    "head slot {i} is not valid ({}), and neither is the other: a crash tears at most the slot being \
                     written, so this is damage; the durable boundary is taken from the frames alone, and the next \
                     writer open rewrites the head",
                    d.detail()
                ),
            )
        };
        if current.is_some() || writer_active {
            report.warnings.push(f);
        } else {
            report.problems.push(f);
        }
    }
    Ok(current)
}

/// The stream table as read before the segments are listed.
enum TableRead {
    Missing,
    /// Not a regular file (described).
    NotRegular(String),
    /// Damaged: what failed, and the open file (to name the first byte that
    /// differs from the rebuilt table) if it is a regular file.
    Damaged(Damage, Option<(fs::File, u64)>),
    /// Valid blocks and header; the open file (read again, bounded, for the
    /// byte comparison: the same inode as the one decoded) and its length.
    Valid(StreamTable, fs::File, u64),
}

/// Read the stream table once, consistently: the file decoded and the file
/// compared later are the same inode, even if a writer replaces the table
/// meanwhile (then the read is retried).
fn read_table(dir: &Path) -> Result<TableRead> {
    let path = dir.join(STREAM_TABLE_FILE);
    let mut tries = 0;
    loop {
        tries += 1;
        let (f, len) = match open_checked(&path)? {
            Opened::Missing => return Ok(TableRead::Missing),
            Opened::NotRegular(d) => return Ok(TableRead::NotRegular(d)),
            Opened::File(f, len) => (f, len),
        };
        let decoded = StreamTable::open(&path);
        if !still_names(&path, &f) && tries < 5 {
            // Replaced by a writer between the two opens: read it again.
            continue;
        }
        return Ok(match decoded {
            Ok(Some(t)) => TableRead::Valid(t, f, len),
            Ok(None) => TableRead::Missing,
            // An operating-system failure (EMFILE, ENOMEM) says nothing about
            // the file's bytes: an error of the check, never a finding.
            Err(d) if d.is_io() => return Err(d.at(&path)),
            Err(d) => TableRead::Damaged(d, Some((f, len))),
        });
    }
}

fn finding(file: &Path, offset: u64, detail: impl Into<String>) -> Finding {
    Finding {
        file: file.to_owned(),
        offset,
        detail: detail.into(),
    }
}

fn damage_finding(file: &Path, d: &Damage) -> Finding {
    let detail = match &d.kind {
        DamageKind::Corrupt(s) => s.clone(),
        DamageKind::Version(v) => format!("unsupported format version {v} (use a newer annal)"),
        DamageKind::Io(_) => d.detail(),
    };
    finding(file, d.offset, detail)
}

/// The result of one scan, and what repair should remove.
struct Scan {
    report: CheckReport,
    remove: Vec<(PathBuf, &'static str)>,
}

/// Where a stream's events are in one segment.
struct StreamSpan {
    first_version: u64,
    /// Offset of the first batch of the stream in the segment.
    first_offset: u64,
    last_version: u64,
}

/// Index status of a sealed segment.
enum IdxState {
    /// Not applicable (active segment, or the segment itself is damaged).
    None,
    Missing,
    Damaged,
    /// Valid; the prev pointers it holds, per stream row.
    Valid(Vec<(Box<str>, u32, Prev)>),
}

/// What checking one segment found.
struct SegOut {
    base: u64,
    path: PathBuf,
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
    records: u64,
    bytes: u64,
    log_id: Option<[u8; 16]>,
    /// Whether the segment was readable to its end (or its durable end).
    complete: bool,
    sealed: bool,
    next_position: u64,
    spans: Vec<(Box<str>, StreamSpan)>,
    /// `(name, row, last_version)` per stream row (sealed segments).
    rows: Vec<(Box<str>, u32, u64)>,
    idx: IdxState,
    idx_bytes: u64,
    /// The format its header states (`None` if the header is unreadable).
    format: Option<LogFormat>,
    /// The header's `chain_start`.
    chain_start: ChainHash,
    /// The seal's file offset and chain slot (sealed segments).
    seal_chain: Option<(u64, ChainHash)>,
    /// Batch links recomputed.
    links: u64,
    /// Broken links found in the segment (batch links, the seal).
    breaks: Vec<Break>,
    /// `(position, stored chain, frame offset)` for each anchor position at
    /// which a batch of this segment ends.
    anchor_points: Vec<(u64, ChainHash, u64)>,
    /// `(position, batch first position, batch end, frame offset)` for each
    /// anchor position strictly inside a batch of this segment.
    anchor_inside: Vec<(u64, u64, u64, u64)>,
    /// Checkpoints whose signature verified, and the newest one's position.
    signed: u64,
    last_signed: Option<u64>,
}

/// A broken link of the audit chain.
#[derive(Clone)]
struct Break {
    finding: Finding,
    /// The smallest anchor position whose history it concerns.
    affects: u64,
}

struct SegCtx<'a> {
    dir: &'a Path,
    head: Option<Head>,
    writer_active: bool,
    progress: Option<&'a (dyn Fn(u64, u64) + Send + Sync)>,
    done: AtomicU64,
    total: u64,
    /// The chain key given, if any.
    key: Option<&'a ChainKey>,
    /// The anchors' positions, sorted, without duplicates.
    anchors: Vec<u64>,
    /// The public key of signed checkpoints, if given.
    public_key: Option<&'a PublicKey>,
    /// The base of the newest segment that has an index file. The sealer
    /// indexes sealed segments in order (and recovery rebuilds missing ones
    /// in order), so the sealed segments after it lacking an index are what
    /// a crash while the sealer lagged behind leaves.
    last_indexed: Option<u64>,
    /// The largest frame a writer writes ([`CheckOptions::max_batch_bytes`]).
    max_frame: u64,
    /// Checkpoint signatures verified against the key they name (without a
    /// public key given).
    self_checked: AtomicU64,
}

impl SegCtx<'_> {
    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(p) = self.progress {
            p(done.min(self.total), self.total);
        }
    }
}

fn scan(dir: &Path, writer_active: bool, opts: &CheckOptions) -> Result<Scan> {
    let progress = opts.progress.as_deref();
    let mut report = CheckReport {
        writer_active,
        ..CheckReport::default()
    };
    let mut remove = Vec::new();
    if writer_active {
        report.warnings.push(finding(
            &dir.join(LOCK_FILE),
            0,
            "a writer holds the log; what it is still writing is in progress and not reported as damage",
        ));
    }
    check_dir_safety(dir, &mut report);
    // The head is read before the segments, so that the durable end it states
    // was already written when the active segment is read.
    let head = check_head(dir, writer_active, &mut report)?;
    let head_path = dir.join(HEAD_FILE);
    // The stream table is read before the segments are listed: a writer
    // writes a table only after the segments it covers exist (sealed and
    // indexed), so the listing below holds every segment it covers, and a
    // roll while this check runs cannot show a table newer than the listing.
    let table_read = read_table(dir)?;

    let bases = list_segments(dir)?;
    if bases.is_empty() {
        return Err(Error::NotALog {
            path: dir.to_owned(),
            detail: "it holds no segment files (*.seg)".into(),
        });
    }
    let mut total = 0u64;
    for &b in &bases {
        let p = dir.join(segment_file_name(b));
        // Not followed: a link or special file is reported when it is opened.
        total = total.saturating_add(fs::symlink_metadata(&p).map_or(0, |m| m.len()));
    }
    let ctx = SegCtx {
        dir,
        head,
        writer_active,
        progress,
        done: AtomicU64::new(0),
        total,
        key: opts.key.as_ref(),
        anchors: {
            let mut a: Vec<u64> = opts.anchors.iter().map(|a| a.position).collect();
            a.sort_unstable();
            a.dedup();
            a
        },
        public_key: opts.public_key.as_ref(),
        last_indexed: bases
            .iter()
            .rev()
            .copied()
            .find(|&b| fs::symlink_metadata(dir.join(index_file_name(b))).is_ok()),
        max_frame: opts.max_frame(),
        self_checked: AtomicU64::new(0),
    };
    if let Some(h) = head
        && bases.binary_search(&h.segment_base).is_err()
    {
        report.problems.push(finding(
            &head_path,
            24,
            format!(
                "the head says segment {} holds durable data, but that file does not exist",
                segment_file_name(h.segment_base)
            ),
        ));
    }
    let last = bases.len() - 1;
    let outs: Vec<SegOut> = bases
        .par_iter()
        .enumerate()
        .map(|(i, &base)| check_segment(&ctx, base, i == last))
        .collect::<Result<_>>()?;
    let self_checked = ctx.self_checked.load(Ordering::Relaxed);
    if opts.public_key.is_none() && self_checked > 0 {
        report.signature_note = Some(format!(
            "{self_checked} checkpoint signature(s) were verified against the public key each checkpoint names: \
             that catches damage and careless forgery, but only --public-key proves who signed"
        ));
    }

    // Sequential checks across segments, in order.
    let mut next_expected: Option<u64> = None;
    let mut log_id: Option<[u8; 16]> = None;
    let mut versions: HashMap<Box<str>, u64> = HashMap::new();
    // Per stream: its newest sealed segment and row, and its last version there.
    let mut latest: HashMap<Box<str>, TableEntry> = HashMap::new();
    let table_path = dir.join(STREAM_TABLE_FILE);
    let table_next = match &table_read {
        TableRead::Valid(t, _, _) => Some(t.next_segment()),
        // A damaged table's next_segment, as it reads: the table is rebuilt
        // with it to name the first byte that differs.
        TableRead::Damaged(_, Some((f, _))) => read_prefix(f, &dir.join(STREAM_TABLE_FILE), 32)
            .ok()
            .and_then(|b| u64_at(&b, 16))
            .filter(|n| bases.contains(n)),
        _ => None,
    };
    let mut table_expect: Option<HashMap<Box<str>, TableEntry>> = None;
    let active_base = outs.last().map_or(0, |o| o.base);
    let mut any_sealed = false;
    let mut chain_ok = true;
    // The first damaged segment: what later segments and the stream table are
    // compared with (versions, back pointers, table rows) depends on every
    // earlier segment, so past it those comparisons are skipped (one warning
    // on the damaged segment says so) instead of reported as more damage.
    let mut damaged: Option<&SegOut> = None;
    for (i, o) in outs.iter().enumerate() {
        report.records += o.records;
        report.bytes += o.bytes + o.idx_bytes;
        report.files += 1 + u64::from(o.idx_bytes > 0);
        report.problems.extend(o.problems.iter().cloned());
        report.warnings.extend(o.warnings.iter().cloned());
        if table_next == Some(o.base) {
            table_expect = Some(latest.clone());
        }
        if let Some(n) = next_expected
            && n != o.base
        {
            chain_ok = false;
            report.problems.push(finding(
                &o.path,
                32,
                format!(
                    "expected a segment starting at position {n} (is one missing?), found {}",
                    o.base
                ),
            ));
        }
        next_expected = if o.complete && o.sealed {
            Some(o.next_position)
        } else {
            None
        };
        if let Some(id) = o.log_id {
            match log_id {
                None => log_id = Some(id),
                Some(l) if l != id => report.problems.push(finding(
                    &o.path,
                    16,
                    "the segment's log_id differs from the first segment's: it belongs to another log",
                )),
                Some(_) => {}
            }
        }
        for (name, s) in &o.spans {
            // Saturating: versions come from the files (found by fuzzing).
            let want = versions.get(name).map_or(0, |v: &u64| v.saturating_add(1));
            if s.first_version != want && (i == 0 || chain_ok) && damaged.is_none() {
                report.problems.push(finding(
                    &o.path,
                    s.first_offset + FRAME_HEADER_LEN as u64 + 16,
                    format!(
                        "expected stream {name:?} to continue at version {want}, found version {}",
                        s.first_version
                    ),
                ));
            }
            versions.insert(name.clone(), s.last_version);
        }
        if o.sealed && o.complete {
            any_sealed = true;
            let idx_path = dir.join(index_file_name(o.base));
            if let IdxState::Valid(prevs) = &o.idx
                && damaged.is_none()
            {
                for (name, row, prev) in prevs {
                    let want = latest.get(name).map_or(Prev::NONE, |e| e.at);
                    if *prev != want {
                        report.problems.push(finding(
                            &idx_path,
                            (IDX_HEADER_LEN + *row as usize * IDX_STREAM_ROW_LEN + 40) as u64,
                            format!(
                                "expected stream {name:?} (row {row}) to point back to {}, found {}",
                                prev_text(want),
                                prev_text(*prev)
                            ),
                        ));
                        remove.push((idx_path.clone(), "a damaged index"));
                    }
                }
            }
            if matches!(o.idx, IdxState::Damaged) {
                remove.push((idx_path.clone(), "a damaged index"));
            }
            for (name, row, last_version) in &o.rows {
                let at = Prev {
                    segment: o.base,
                    row: *row,
                };
                latest.insert(
                    name.clone(),
                    TableEntry {
                        last_version: *last_version,
                        at,
                    },
                );
            }
        }
        let is_last = i + 1 == outs.len();
        if damaged.is_none() && (!o.complete || (!o.sealed && !is_last)) {
            damaged = Some(o);
        }
    }
    // The table covers the segments below its next_segment only.
    let table_depends = damaged.is_some_and(|o| table_next.is_some_and(|n| o.base < n));
    if let Some(o) = damaged
        && (outs.last().is_some_and(|l| l.base > o.base) || table_depends)
    {
        report.warnings.push(finding(
            &o.path,
            0,
            "a consequence of the damage above, not more damage: the back pointers of later index files, the \
             stream versions of later segments and the stream table depend on this segment's events, so they \
             were not compared",
        ));
    }
    check_chain(&outs, opts, &mut report);
    if opts.public_key.is_some() {
        let end = outs.last().map_or(0, |o| o.next_position);
        let last_signed_position = outs.iter().filter_map(|o| o.last_signed).max();
        report.signatures = Some(SignatureSummary {
            verified: outs.iter().map(|o| o.signed).sum(),
            last_signed_position,
            unsigned_events: end.saturating_sub(last_signed_position.unwrap_or(0)),
        });
    }
    if table_next.is_some_and(|n| n > active_base) || (table_next.is_some() && table_expect.is_none()) {
        table_expect = Some(latest.clone());
    }
    if table_depends {
        table_expect = None;
    }

    // The stream table.
    match table_read {
        TableRead::Missing if any_sealed => {
            let f = finding(
                &table_path,
                0,
                "the stream table is missing; the next writer open (or annal check --repair) rebuilds it",
            );
            // The table is written for the first time after the first
            // sealed segment's index (by the sealer thread, or by the open
            // that recovers a log without one, after every missing index):
            // a crash before that write leaves no table, whatever indexes
            // exist. Once written it is only ever replaced by a rename. So a
            // missing table is a state a crash can leave, and it holds no
            // event: a warning.
            report.warnings.push(f);
        }
        TableRead::Missing => {}
        TableRead::NotRegular(d) => {
            report.problems.push(finding(&table_path, 0, d));
        }
        TableRead::Damaged(d, file) => {
            let mut f = damage_finding(&table_path, &d);
            if let (Some((file, _)), Some(entries), Some(next)) = (&file, &table_expect, table_next) {
                // The log's hash mask from an index file (the table's own may
                // be the damaged byte).
                let mask = bases
                    .iter()
                    .find_map(|&b| {
                        let p = dir.join(index_file_name(b));
                        match open_checked(&p) {
                            Ok(Opened::File(f, _)) => read_prefix(&f, &p, IDX_HEADER_LEN as u64)
                                .ok()
                                .and_then(|h| u64_at(&h, 32)),
                            _ => None,
                        }
                    })
                    .unwrap_or_else(|| hash_mask_of(dir));
                let expected = encode_table(entries, next, mask);
                let found = read_prefix(file, &table_path, expected.len() as u64 + 1)?;
                if let Some(at) = first_difference(&expected, &found, 0) {
                    f = exact_finding(&table_path, &d, at, &expected, &found);
                }
            }
            report.problems.push(f);
            remove.push((table_path.clone(), "a damaged stream table"));
        }
        TableRead::Valid(t, file, len) => {
            report.files += 1;
            report.bytes += len;
            let next = t.next_segment();
            let head_bytes = read_prefix(&file, &table_path, STB_HEADER_LEN as u64)?;
            let mask = u64_at(&head_bytes, 24).unwrap_or(u64::MAX);
            if !bases.contains(&next) && next != outs.last().map_or(0, |o| o.next_position) {
                report.problems.push(finding(
                    &table_path,
                    16,
                    format!("expected next_segment to be the base of a segment, found {next}"),
                ));
                remove.push((table_path.clone(), "a damaged stream table"));
            } else if let Some(entries) = &table_expect {
                let expected = encode_table(entries, next, mask);
                // No more than the rebuilt table and one byte: enough to
                // tell any difference, bounded by what the segments say.
                let bytes = read_prefix(&file, &table_path, expected.len() as u64 + 1)?;
                if let Some(f) = compare_derived(&table_path, &expected, &bytes, len, STB_HEADER_LEN, STB_ROW_LEN) {
                    report.problems.push(f);
                    remove.push((table_path.clone(), "a damaged stream table"));
                }
                if next < active_base && !outs.last().is_some_and(|o| o.sealed) {
                    let covered_sealed = outs.iter().any(|o| o.base >= next && o.base < active_base);
                    if covered_sealed && !writer_active {
                        report.warnings.push(finding(
                            &table_path,
                            16,
                            format!(
                                "the stream table covers segments below {next} only; the next writer open \
                                 brings it up to date"
                            ),
                        ));
                    }
                }
            }
        }
    }
    check_snapshots(dir, &mut report, &mut remove)?;
    Ok(Scan { report, remove })
}

/// The stream table rebuilt from `entries`.
fn encode_table(entries: &HashMap<Box<str>, TableEntry>, next: u64, mask: u64) -> Vec<u8> {
    let mut rows: Vec<(u64, &[u8], TableEntry)> = entries
        .iter()
        .map(|(n, e)| (crate::hash::stream_hash(n.as_bytes()) & mask, n.as_bytes(), *e))
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    streamtable::encode(rows.into_iter(), next, mask)
}

fn prev_text(p: Prev) -> String {
    if p.segment == NO_SEGMENT {
        "no earlier segment".into()
    } else {
        format!("segment {} row {}", p.segment, p.row)
    }
}

/// The first byte at which an index file differs from the one rebuilt from
/// its segment, leaving out the back pointers of its `stream_rows` stream
/// rows (`prev_segment`, `prev_row`: bytes `[40, 52)` of a row), which the
/// segment alone cannot tell. Also used for the stream table with no rows to
/// leave out.
///
/// Only the checked region is compared (spec 16): the block CRC table and
/// the footer depend on the back pointers too, and their own checks name the
/// field that fails.
fn first_difference(expected: &[u8], found: &[u8], stream_rows: usize) -> Option<usize> {
    let rows = IDX_HEADER_LEN..IDX_HEADER_LEN + stream_rows * IDX_STREAM_ROW_LEN;
    let back_pointer = |i: usize| rows.contains(&i) && (40..52).contains(&((i - IDX_HEADER_LEN) % IDX_STREAM_ROW_LEN));
    let checked = expected
        .len()
        .checked_sub(crate::blockfile::FOOTER_LEN)
        .and_then(|f| u64_at(expected, f))
        .and_then(|t| usize::try_from(t).ok())
        .unwrap_or(0)
        .min(expected.len());
    expected[..checked]
        .iter()
        .zip(found)
        .enumerate()
        .position(|(i, (a, b))| a != b && !back_pointer(i))
}

/// A derived file's damage `d` (a failed block CRC, a header field),
/// named at the first byte `at` that differs from the rebuilt file.
fn exact_finding(path: &Path, d: &Damage, at: usize, expected: &[u8], found: &[u8]) -> Finding {
    finding(
        path,
        at as u64,
        format!(
            "{}; the first byte that differs from the file rebuilt from the segments is here: expected {:#04x}, \
             found {:#04x}",
            d.detail(),
            expected.get(at).copied().unwrap_or(0),
            found.get(at).copied().unwrap_or(0)
        ),
    )
}

/// Compare a derived file with the bytes rebuilt from the segments; on a
/// difference, say where and (for the block region) whether the block's CRC
/// fails too.
///
/// `found` is the file's first bytes (at most one more than `expected`
/// holds), `found_len` its length.
fn compare_derived(
    path: &Path,
    expected: &[u8],
    found: &[u8],
    found_len: u64,
    header_len: usize,
    row_len: usize,
) -> Option<Finding> {
    if expected == found && found_len == expected.len() as u64 {
        return None;
    }
    let at = expected.iter().zip(found).position(|(a, b)| a != b);
    let Some(at) = at else {
        return Some(finding(
            path,
            (expected.len() as u64).min(found_len),
            format!(
                "expected {} bytes (rebuilt from the segments), found {found_len} bytes",
                expected.len(),
            ),
        ));
    };
    let region = if at < header_len {
        "the header".to_owned()
    } else if found.len() >= blockfile_footer() && at >= found.len() - blockfile_footer() {
        "the footer".to_owned()
    } else {
        format!(
            "block {} (a row of {row_len} bytes at most starts near byte {})",
            at / crate::blockfile::BLOCK,
            at - (at - header_len) % row_len
        )
    };
    Some(finding(
        path,
        at as u64,
        format!(
            "the content differs from what the segments say, in {region}: expected byte {:#04x}, found {:#04x}",
            expected[at], found[at]
        ),
    ))
}

const fn blockfile_footer() -> usize {
    crate::blockfile::FOOTER_LEN
}

/// Read a segment: sealed segments are mapped (annal never writes them
/// again); the last one is copied, because a writer may append to it.
enum SegBytes {
    Map(Mapping),
    Copy(Vec<u8>),
}

impl SegBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            SegBytes::Map(m) => m.bytes(),
            SegBytes::Copy(v) => v,
        }
    }
}

/// A frame claiming more than a writer writes: `(file offset, frame_len)`.
type Oversized = (u64, u64);

/// Bytes of the rest of the file `check` copies after a frame header that
/// does not parse (the walk reports the damage at its start; the durable
/// boundary past it is found by [`resync_file`] without a copy).
const TAIL_PEEK: u64 = 64 << 10;

/// Copy the active segment (a writer may append to it, so it is not mapped),
/// frame by frame: each frame header is read first, and a frame is copied
/// only if its `frame_len` is at most `max_frame`. Memory is bounded by the
/// frames that fit the limits, never by a length read from the file (a
/// sparse file of any length, a frame claiming 4 GiB). Returns the copy (a
/// prefix of the file, at the file's offsets) and the first frame claiming
/// more than `max_frame`, if any, as `(offset, frame_len)`.
fn read_active(f: &fs::File, path: &Path, len: u64, max_frame: u64) -> Result<(Vec<u8>, Option<Oversized>)> {
    let mut out = Vec::new();
    read_at_into(f, path, 0, len.min(SEGMENT_HEADER_LEN as u64), &mut out)?;
    let mut off = SEGMENT_HEADER_LEN as u64;
    while off < len && out.len() as u64 == off {
        let mut hdr = Vec::with_capacity(FRAME_HEADER_LEN);
        read_at_into(f, path, off, (len - off).min(FRAME_HEADER_LEN as u64), &mut hdr)?;
        let parsed = FrameHeader::parse(&hdr, off).ok().map(|h| (h.frame_len.get(), h.kind));
        out.extend_from_slice(&hdr);
        let got = hdr.len() as u64;
        match parsed {
            Some((fl, _)) if fl > max_frame => return Ok((out, Some((off, fl)))),
            Some((fl, kind)) => {
                // frame_len >= the header's length (checked by the parse).
                let n = fl.min(len - off);
                read_at_into(f, path, off + got, n - got, &mut out)?;
                if n < fl {
                    break;
                }
                // Copy on only past a frame that is whole and valid (the walk
                // stops at the first that is not): what is held is bounded by
                // valid frames, not by headers claiming lengths.
                let frame = out.get(off as usize..).unwrap_or_default();
                if crate::segment::validate_frame(frame, off, true).is_err() {
                    break;
                }
                off += fl;
                if off >= active_copy_max(max_frame) {
                    break;
                }
                if kind == FRAME_KIND_SEAL {
                    // Whatever follows a seal is reported as such by the walk.
                    read_at_into(f, path, off, (len - off).min(TAIL_PEEK), &mut out)?;
                    break;
                }
            }
            None => {
                let rest = len - off - got;
                read_at_into(f, path, off + got, rest.min(TAIL_PEEK), &mut out)?;
                break;
            }
        }
    }
    Ok((out, None))
}

/// The most of an active segment `check` copies: a writer's active segment
/// holds at most `segment_size` bytes of batches (256 MiB by default), or one
/// batch alone (spec 8), so this leaves room for both; past it the rest is
/// not checked (a warning says so).
fn active_copy_max(max_frame: u64) -> u64 {
    max_frame.saturating_mul(2).saturating_add(256 << 20)
}

/// The first frame of a mapped segment whose header claims more than
/// `max_frame` bytes, as `(offset, frame_len)`, found by stepping from header
/// to header (the bodies are not read).
fn oversized_frame(bytes: &[u8], max_frame: u64) -> Option<Oversized> {
    let mut off = SEGMENT_HEADER_LEN as u64;
    loop {
        let b = bytes.get(usize::try_from(off).ok()?..)?;
        let fl = FrameHeader::parse(b, off).ok()?.frame_len.get();
        if fl > max_frame {
            return Some((off, fl));
        }
        off = off.checked_add(fl)?;
    }
}

fn check_segment(ctx: &SegCtx<'_>, base: u64, is_last: bool) -> Result<SegOut> {
    let path = ctx.dir.join(segment_file_name(base));
    let mut out = SegOut {
        base,
        path: path.clone(),
        problems: Vec::new(),
        warnings: Vec::new(),
        records: 0,
        bytes: 0,
        log_id: None,
        complete: false,
        sealed: false,
        next_position: base,
        spans: Vec::new(),
        rows: Vec::new(),
        idx: IdxState::None,
        idx_bytes: 0,
        format: None,
        chain_start: [0; 32],
        seal_chain: None,
        links: 0,
        breaks: Vec::new(),
        anchor_points: Vec::new(),
        anchor_inside: Vec::new(),
        signed: 0,
        last_signed: None,
    };
    let (file, file_len) = match open_checked(&path)? {
        Opened::File(f, len) => (f, len),
        Opened::Missing => {
            out.problems.push(finding(
                &path,
                0,
                "the segment file was listed, then could not be found: it was removed while the log was checked",
            ));
            return Ok(out);
        }
        Opened::NotRegular(d) => {
            out.problems.push(finding(&path, 0, d));
            return Ok(out);
        }
    };
    out.bytes = file_len;
    let (data, cut) = if is_last {
        let (v, cut) = read_active(&file, &path, file_len, ctx.max_frame)?;
        let copied = v.len() as u64;
        if copied >= active_copy_max(ctx.max_frame) && copied < file_len {
            out.warnings.push(finding(
                &path,
                copied,
                format!(
                    "the active segment is {file_len} bytes, more than check holds of an active segment \
                     ({} bytes, from max_batch_bytes): the bytes from here on were not checked",
                    active_copy_max(ctx.max_frame)
                ),
            ));
        }
        (SegBytes::Copy(v), cut)
    } else {
        let m = Mapping::map(&file, file_len, &path)?;
        let cut = oversized_frame(m.bytes(), ctx.max_frame);
        (SegBytes::Map(m), cut)
    };
    let all = data.bytes();
    // Never past a frame claiming more than a writer writes: its bytes are
    // not read (memory and time bounded by the limits, not by the file).
    let bytes = match cut {
        Some((off, _)) => all
            .get(..(off as usize).saturating_add(FRAME_HEADER_LEN))
            .unwrap_or(all),
        None => all,
    };
    // The durable boundary rule 2 (spec 5.1) looks at every frame header
    // past `from`, also in the part of the file not copied.
    let resync = |from: u64| -> Result<u64> {
        let copied = bytes.len() as u64;
        let mut best = resync_max_durable(bytes, from);
        if copied < file_len {
            let start = from.max(copied.saturating_sub(FRAME_HEADER_LEN as u64));
            best = best.max(resync_file(&file, &path, start, file_len)?);
        }
        Ok(best)
    };
    let head_durable = ctx.head.filter(|h| h.segment_base == base).map_or(0, |h| h.durable_end);
    let header = match SegmentHeader::parse(bytes) {
        Ok(h) => h,
        Err(d) => {
            let boundary = head_durable.max(resync(SEGMENT_HEADER_LEN as u64)?);
            if is_last && boundary <= SEGMENT_HEADER_LEN as u64 && !ctx.writer_active {
                out.warnings.push(finding(
                    &path,
                    d.offset,
                    format!(
                        "{} in the segment header of the active segment, which holds no durable data; the next \
                         writer open (or annal check --repair) rewrites it",
                        d.detail()
                    ),
                ));
            } else if !(is_last && ctx.writer_active && file_len < SEGMENT_HEADER_LEN as u64) {
                out.problems.push(damage_finding(&path, &d));
            }
            ctx.advance(file_len);
            return Ok(out);
        }
    };
    out.log_id = Some(header.log_id);
    let format = LogFormat::of(header);
    out.format = Some(format);
    out.chain_start = header.chain_start;
    // The links are recomputed when the chain is unkeyed, or keyed and the
    // key given is the log's (the sequential pass reports the other cases).
    let chainer = match (format.chained(), format.keyed(), ctx.key) {
        (true, false, _) => Some(Chainer::new(None)),
        (true, true, Some(k)) if k.id() == format.key_id => Some(Chainer::new(Some(k))),
        _ => None,
    };
    let mut chain = ChainLinks {
        prev: header.chain_start,
        links: 0,
        breaks: Vec::new(),
        zero_problems: Vec::new(),
        anchor_points: Vec::new(),
        anchor_inside: Vec::new(),
        last_is_checkpoint: false,
        signed: 0,
        last_signed: None,
    };
    if header.base_position.get() != base {
        out.problems.push(finding(
            &path,
            32,
            format!(
                "expected base_position {base} (from the file name), found {}",
                header.base_position.get()
            ),
        ));
    }

    let mut mem = MemIndex::default();
    let mut spans: HashMap<Box<str>, StreamSpan> = HashMap::new();
    let mut version_problems = Vec::new();
    let mut records = 0u64;
    let mut reported = 0u64;
    let seg_start = bytes.as_ptr() as usize;
    let mut walk = walk_segment(bytes, header, true, |frame, f| {
        let off = (frame.as_ptr() as usize - seg_start) as u64;
        if f.kind == FRAME_KIND_CHECKPOINT {
            chain.checkpoint(ctx, &path, &format, frame, f, off);
            return;
        }
        if f.kind != FRAME_KIND_BATCH {
            return;
        }
        records += f.count as u64;
        if let Some(r) = frame_records(frame).next() {
            let v = r.stream_version();
            // Batch validation checked that v + (count - 1) fits (count >= 1).
            let last = v.saturating_add(f.count as u64 - 1);
            match spans.get_mut(r.stream()) {
                Some(s) => {
                    // Checked: versions come from the file (found by fuzzing).
                    if s.last_version.checked_add(1) != Some(v) {
                        version_problems.push(finding(
                            &path,
                            off + FRAME_HEADER_LEN as u64 + 16,
                            format!(
                                "expected stream {:?} to continue at version {}, found version {v}",
                                r.stream(),
                                s.last_version.saturating_add(1)
                            ),
                        ));
                    }
                    s.last_version = last;
                }
                None => {
                    spans.insert(
                        r.stream().into(),
                        StreamSpan {
                            first_version: v,
                            first_offset: off,
                            last_version: last,
                        },
                    );
                }
            }
        }
        chain.batch(ctx, &path, format.chained(), chainer.as_ref(), frame, f, off);
        mem.add_frame(frame, off);
        let end = off + f.len;
        if end - reported >= 8 << 20 {
            ctx.advance(end - reported);
            reported = end;
        }
    });
    ctx.advance(file_len - reported.min(file_len));
    if let Some((off, len)) = cut
        && walk.end == off
        && walk.stop.is_some()
    {
        walk.stop = Some(Damage::corrupt(
            off + 8,
            format!(
                "frame_len {len} is more than the largest frame a writer writes (max_batch_bytes {}); the frame \
                 was not read (give the writer's max_batch_bytes if it was raised)",
                ctx.max_frame
            ),
        ));
    }
    out.records = records;
    out.problems.extend(version_problems);
    out.spans = spans.into_iter().collect();
    out.next_position = walk.next_position;
    out.sealed = walk.sealed;
    if walk.sealed {
        let seal_off = walk.end.saturating_sub(FRAME_HEADER_LEN as u64);
        let seal = chain_slot(bytes.get(seal_off as usize..).unwrap_or_default());
        out.seal_chain = Some((seal_off, seal));
        chain.seal(&path, format.chained(), seal, seal_off, walk.next_position);
        if ctx.public_key.is_some() && format.chained() && !chain.last_is_checkpoint {
            chain.zero_problems.push(finding(
                &path,
                seal_off,
                "expected a signed checkpoint just before the seal of a sealed segment (spec 21.5); it is missing: \
                 the checkpoint was removed, or the writer had no signing key",
            ));
        }
    }
    out.signed = chain.signed;
    out.last_signed = chain.last_signed;
    out.links = chain.links;
    out.breaks = chain.breaks;
    out.problems.extend(chain.zero_problems);
    out.anchor_points = chain.anchor_points;
    out.anchor_inside = chain.anchor_inside;

    match &walk.stop {
        None if !is_last && !walk.sealed => {
            out.problems.push(finding(
                &path,
                walk.end,
                "expected a seal frame at the end of a segment that has a successor, found the end of the file",
            ));
        }
        None => {
            out.complete = true;
            if head_durable > file_len {
                out.problems.push(finding(
                    &path,
                    file_len,
                    format!("the head says bytes up to {head_durable} are durable, but the file ends here"),
                ));
            }
        }
        Some(d) if !is_last => {
            out.problems.push(finding(
                &path,
                d.offset,
                format!(
                    "{} (in a sealed segment, which is durable in full: this is damage, not a torn write)",
                    d.detail()
                ),
            ));
        }
        Some(d) => {
            let x = walk.end;
            let boundary = (SEGMENT_HEADER_LEN as u64)
                .max(walk.max_durable)
                .max(resync(x)?)
                .max(head_durable);
            if x < boundary {
                out.problems.push(finding(
                    &path,
                    d.offset,
                    format!(
                        "{}; the damaged frame starts at byte {x}, below the durable boundary at byte {boundary}, \
                         so this is damage to durable data, not a torn write",
                        d.detail()
                    ),
                ));
            } else {
                out.complete = true;
                let n = file_len.saturating_sub(x);
                let detail = if ctx.writer_active {
                    format!("the writer is still writing bytes {x}..{file_len} ({n} bytes); not checked")
                } else {
                    format!(
                        "torn tail: the {n} bytes from byte {x} (past the durable boundary at byte {boundary}) are \
                         an incomplete write ({}); the next writer open (or annal check --repair) removes them",
                        d.detail()
                    )
                };
                out.warnings.push(finding(&path, x, detail));
            }
        }
    }

    // The index of a sealed segment.
    // (A sealed last segment followed by a torn tail, which the next writer
    // open cuts, is complete up to its seal: its index and the stream table
    // describe that part, spec 6.)
    if out.complete && walk.sealed {
        let bytes = bytes.get(..walk.end as usize).unwrap_or(bytes);
        let idx_path = ctx.dir.join(index_file_name(base));
        let seal_crc = index::seal_crc(bytes).unwrap_or(0);
        let opened = open_checked(&idx_path)?;
        let idx_open = match &opened {
            Opened::NotRegular(d) => Err(Damage::corrupt(0, d.clone())),
            Opened::Missing => Ok((None, None)),
            Opened::File(f, len) => IdxFile::open_for(&idx_path, base, bytes).map(|x| (x, Some((f, *len)))),
        };
        match idx_open {
            Err(d) if d.is_io() => return Err(d.at(&idx_path)),
            Ok((None, _)) => {
                out.idx = IdxState::Missing;
                let f = finding(
                    &idx_path,
                    0,
                    "the index file is missing; the next writer open (or annal check --repair) rebuilds it",
                );
                // A writer's sealer thread indexes sealed segments in the
                // background and may lag several segments behind a burst of
                // rolls: while a writer holds the log, a missing index is in
                // progress, and after a crash the sealed segments after the
                // last one indexed may all lack theirs (spec 17.4).
                let after_last_indexed = ctx.last_indexed.is_none_or(|b| base > b);
                if is_last || ctx.writer_active || after_last_indexed {
                    out.warnings.push(f);
                } else {
                    out.problems.push(f);
                }
            }
            Err(d) => {
                out.idx = IdxState::Damaged;
                out.idx_bytes = fs::symlink_metadata(&idx_path).map_or(0, |m| m.len());
                let mut f = damage_finding(&idx_path, &d);
                if let Opened::File(file, _) = &opened {
                    // Name the first byte that differs from the index
                    // rebuilt from the segment (spec 16), with the log's
                    // hash mask (the file's own may be the damaged byte).
                    let (expected, rows) =
                        mem.encode(base, bytes.len() as u64, seal_crc, hash_mask_of(ctx.dir), &mut |_| {
                            Prev::NONE
                        });
                    let found = read_prefix(file, &idx_path, expected.len() as u64 + 1)?;
                    if let Some(at) = first_difference(&expected, &found, rows.len()) {
                        f = exact_finding(&idx_path, &d, at, &expected, &found);
                    }
                    out.rows = rows;
                }
                out.problems.push(f);
            }
            Ok((Some(_), None)) => {}
            Ok((Some(file), Some((f, idx_len)))) => {
                out.idx_bytes = idx_len;
                let mask = u64_at(&read_prefix(f, &idx_path, IDX_HEADER_LEN as u64)?, 32).unwrap_or(u64::MAX);
                let mut prevs: HashMap<Box<str>, Prev> = HashMap::new();
                let mut lookup_damage = None;
                for name in mem.streams.keys() {
                    match file.find_stream(name) {
                        Ok(Some(info)) => {
                            prevs.insert(name.clone(), info.prev.unwrap_or(Prev::NONE));
                        }
                        Ok(None) => {}
                        Err(d) => {
                            lookup_damage.get_or_insert(d);
                        }
                    }
                }
                let (expected, rows) = mem.encode(base, bytes.len() as u64, seal_crc, mask, &mut |n| {
                    prevs.get(n).copied().unwrap_or(Prev::NONE)
                });
                // No more than the rebuilt index and one byte: enough to tell
                // any difference, bounded by what the segment says.
                let found = read_prefix(f, &idx_path, expected.len() as u64 + 1)?;
                if !still_names(&idx_path, f) {
                    // Replaced (a writer rebuilt it) while it was read: the
                    // file decoded is not the one compared.
                    out.idx = IdxState::Missing;
                    out.warnings.push(finding(
                        &idx_path,
                        0,
                        "the index file was replaced while it was checked (a writer rebuilt it); not compared",
                    ));
                } else if let Some(d) = lookup_damage {
                    // A block fails its CRC: name the first byte that differs
                    // from the rebuilt index (spec 16), leaving out the back
                    // pointers, which this segment alone cannot tell; if only
                    // those differ, the block.
                    out.idx = IdxState::Damaged;
                    out.problems
                        .push(match first_difference(&expected, &found, rows.len()) {
                            Some(at) => exact_finding(&idx_path, &d, at, &expected, &found),
                            None => damage_finding(&idx_path, &d),
                        });
                } else if let Some(f) = compare_derived(
                    &idx_path,
                    &expected,
                    &found,
                    idx_len,
                    IDX_HEADER_LEN,
                    IDX_STREAM_ROW_LEN,
                ) {
                    out.idx = IdxState::Damaged;
                    out.problems.push(f);
                } else {
                    out.idx = IdxState::Valid(
                        rows.iter()
                            .map(|(n, r, _)| (n.clone(), *r, prevs.get(n).copied().unwrap_or(Prev::NONE)))
                            .collect(),
                    );
                }
                out.rows = rows;
            }
        }
        if out.rows.is_empty() && !mem.streams.is_empty() {
            let (_, rows) = mem.encode(base, bytes.len() as u64, seal_crc, hash_mask_of(ctx.dir), &mut |_| {
                Prev::NONE
            });
            out.rows = rows;
        }
        debug_assert!(out.rows.iter().all(|r| r.1 != NO_ROW));
    }
    Ok(out)
}

/// Snapshot files larger than this are checked by streaming (header and
/// CRC), never held in memory whole.
const SNAPSHOT_READ_MAX: u64 = 64 << 20;

fn check_snapshots(dir: &Path, report: &mut CheckReport, remove: &mut Vec<(PathBuf, &'static str)>) -> Result<()> {
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
                format!("expected a directory, found {}", crate::io::file_kind(&m.file_type())),
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
            match SnapshotStore::decode(&p, &bytes) {
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
    let header = read_prefix(f, path, 64)?;
    if header.get(..8) != Some(b"ANNALSNP".as_slice()) {
        return Ok(Some((0, "expected snapshot magic \"ANNALSNP\"".to_owned())));
    }
    let stream_len = header
        .get(12..14)
        .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])));
    let payload_len = u64_at(&header, 40).unwrap_or(0);
    let want = 64u64.checked_add(stream_len).and_then(|x| x.checked_add(payload_len));
    if want != Some(len) {
        return Ok(Some((
            40,
            format!(
                "expected a file of 64 + stream_len {stream_len} + payload_len {payload_len} bytes, found {len} bytes"
            ),
        )));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..60]);
    let mut off = 64u64;
    let mut buf = Vec::with_capacity(1 << 20);
    while off < len {
        buf.clear();
        read_at_into(f, path, off, (len - off).min(1 << 20), &mut buf)?;
        if buf.is_empty() {
            break;
        }
        h.update(&buf);
        off += buf.len() as u64;
    }
    let crc = h.finalize();
    let stored = header
        .get(60..64)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Ok((crc != stored).then(|| {
        (
            60,
            format!("snapshot CRC mismatch: expected {crc:#010x}, found {stored:#010x}"),
        )
    }))
}

/// The 32-byte chain slot of the frame header at the start of `frame` (zero
/// if the frame is too short, which a validated frame never is).
fn chain_slot(frame: &[u8]) -> ChainHash {
    let mut c = [0u8; 32];
    if let Some(s) = frame.get(FRAME_CHAIN_OFFSET..FRAME_HEADER_LEN) {
        c.copy_from_slice(s);
    }
    c
}

/// The audit chain of one segment, as its batches are walked.
struct ChainLinks {
    /// The stored chain hash before the next batch.
    prev: ChainHash,
    links: u64,
    breaks: Vec<Break>,
    /// Non-zero chain slots in a log without the chain.
    zero_problems: Vec<Finding>,
    anchor_points: Vec<(u64, ChainHash, u64)>,
    anchor_inside: Vec<(u64, u64, u64, u64)>,
    /// The last frame seen is a checkpoint.
    last_is_checkpoint: bool,
    signed: u64,
    last_signed: Option<u64>,
}

impl ChainLinks {
    /// One complete checkpoint frame at file offset `off` (spec 3.5, 21.5):
    /// its chain slot repeats the stored chain after the batch before it; with
    /// a public key, its signature verifies.
    fn checkpoint(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        log: &LogFormat,
        frame: &[u8],
        f: &crate::segment::Frame,
        off: u64,
    ) {
        let stored = chain_slot(frame);
        let p = f.first_position;
        self.last_is_checkpoint = true;
        if !log.chained() {
            self.zero_problems.push(finding(
                path,
                off + 28,
                "expected no checkpoint frame in a log without the audit chain",
            ));
            return;
        }
        if stored != self.prev {
            self.breaks.push(Break {
                finding: finding(
                    path,
                    off + FRAME_CHAIN_OFFSET as u64,
                    format!(
                        "audit chain broken: the checkpoint at position {p} holds chain {}, but the chain after the \
                         batch before it is {}; the checkpoint was altered",
                        hex(&stored),
                        hex(&self.prev)
                    ),
                ),
                affects: p.saturating_add(1),
            });
        }
        let (Some(key), Some(sig)) = (frame.get(72..104), frame.get(104..168)) else {
            return;
        };
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        let Some(pk) = ctx.public_key else {
            // Without a public key: the key the checkpoint names. That
            // catches damage and a forger who does not sign (spec 21.5);
            // only a key given proves who signed (the report says so).
            let mut named = [0u8; 32];
            named.copy_from_slice(key);
            ctx.self_checked.fetch_add(1, Ordering::Relaxed);
            if !PublicKey(named).verify(&log.log_id, p, &stored, &signature) {
                self.zero_problems.push(finding(
                    path,
                    off + 104,
                    format!(
                        "the signature of the checkpoint at position {p} does not verify against the public key \
                         the checkpoint names ({}): the checkpoint (its key, signature, position or chain hash) \
                         was altered or forged",
                        hex(key)
                    ),
                ));
            }
            return;
        };
        if key != pk.0 {
            self.zero_problems.push(finding(
                path,
                off + 72,
                format!(
                    "the checkpoint at position {p} is signed by public key {}, not by the key given ({})",
                    hex(key),
                    hex(&pk.0)
                ),
            ));
        } else if !pk.verify(&log.log_id, p, &stored, &signature) {
            self.zero_problems.push(finding(
                path,
                off + 104,
                format!(
                    "the signature of the checkpoint at position {p} does not verify: the checkpoint (its position \
                     or chain hash) was forged or altered"
                ),
            ));
        } else {
            self.signed += 1;
            self.last_signed = Some(p);
        }
    }

    /// One complete batch frame at file offset `off`: recompute its link from
    /// the stored hash before it (if `chainer`), and continue from its stored
    /// hash, so that one changed batch is one finding.
    #[expect(
        clippy::too_many_arguments,
        reason = "the walk callback hands over its state piecewise"
    )]
    fn batch(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        chained: bool,
        chainer: Option<&Chainer<'_>>,
        frame: &[u8],
        f: &crate::segment::Frame,
        off: u64,
    ) {
        self.last_is_checkpoint = false;
        let stored = chain_slot(frame);
        let slot = off + FRAME_CHAIN_OFFSET as u64;
        if !chained {
            if stored != [0; 32] {
                self.zero_problems.push(finding(
                    path,
                    slot,
                    format!(
                        "expected a zero chain slot in a log without the audit chain, found {}",
                        hex(&stored)
                    ),
                ));
            }
            return;
        }
        if let Some(c) = chainer {
            let computed = c.link(&self.prev, frame);
            self.links += 1;
            if computed != stored {
                let p = f.first_position;
                self.breaks.push(Break {
                    finding: finding(
                        path,
                        slot,
                        format!(
                            "audit chain broken: the batch at position {p} hashes to {}, but its chain slot holds \
                             {}; history differs from position {p} on",
                            hex(&computed),
                            hex(&stored)
                        ),
                    ),
                    affects: p.saturating_add(1),
                });
            }
        }
        self.prev = stored;
        let end = f.next_position();
        let mut i = ctx.anchors.partition_point(|&a| a <= f.first_position);
        while let Some(&a) = ctx.anchors.get(i)
            && a <= end
        {
            if a == end {
                self.anchor_points.push((a, stored, off));
            } else {
                self.anchor_inside.push((a, f.first_position, end, off));
            }
            i += 1;
        }
    }

    /// The seal (at file offset `off`, after position `next`): its chain slot
    /// must repeat the last batch's (or `chain_start` without a batch).
    fn seal(&mut self, path: &Path, chained: bool, seal: ChainHash, off: u64, next: u64) {
        let slot = off + FRAME_CHAIN_OFFSET as u64;
        if !chained {
            if seal != [0; 32] {
                self.zero_problems.push(finding(
                    path,
                    slot,
                    format!(
                        "expected a zero chain slot in the seal of a log without the audit chain, found {}",
                        hex(&seal)
                    ),
                ));
            }
        } else if seal != self.prev {
            self.breaks.push(Break {
                finding: finding(
                    path,
                    slot,
                    format!(
                        "audit chain broken: the seal's chain slot holds {}, but the chain after the segment's last \
                         batch is {}; history differs from position {next} on",
                        hex(&seal),
                        hex(&self.prev)
                    ),
                ),
                affects: next.saturating_add(1),
            });
        }
    }
}

/// The sequential part of the audit chain check: the log's format across
/// segments, the key, genesis and the joins between segments, then the
/// anchors. Sets `report.chain` and `report.anchors`.
fn check_chain(outs: &[SegOut], opts: &CheckOptions, report: &mut CheckReport) {
    let Some(first) = outs.iter().find(|o| o.format.is_some()) else {
        for a in &opts.anchors {
            let detail = "no segment header of the log could be read (see the problems above)".to_owned();
            if let Some(o) = outs.first() {
                report.problems.push(anchor_finding(a, &o.path, 0, &detail));
            }
            report.anchors.push(AnchorVerdict {
                anchor: *a,
                ok: false,
                detail,
            });
        }
        return;
    };
    let Some(fmt) = first.format else { return };
    let mut agree = true;
    for o in outs {
        if let Some(f) = o.format
            && (f.version, f.flags, f.key_id) != (fmt.version, fmt.flags, fmt.key_id)
        {
            agree = false;
            report.problems.push(finding(
                &o.path,
                8,
                format!(
                    "the segment's format (version {}, log_flags {:#06x}, key_id {}) differs from the first \
                     segment's (version {}, log_flags {:#06x}, key_id {})",
                    f.version,
                    f.flags,
                    hex(&f.key_id),
                    fmt.version,
                    fmt.flags,
                    hex(&fmt.key_id)
                ),
            ));
        }
    }

    if !fmt.chained() {
        if opts.key.is_some() {
            report.problems.push(finding(
                &first.path,
                10,
                format!(
                    "a chain key was given, but the log has no audit chain (format version {}, log_flags {:#06x})",
                    fmt.version, fmt.flags
                ),
            ));
        }
        report.chain = ChainStatus::Absent;
        for a in &opts.anchors {
            let detail = format!(
                "the log has no audit chain (format version {}, log_flags {:#06x}): no anchor can hold",
                fmt.version, fmt.flags
            );
            report.problems.push(anchor_finding(a, &first.path, 10, &detail));
            report.anchors.push(AnchorVerdict {
                anchor: *a,
                ok: false,
                detail,
            });
        }
        return;
    }

    let keyed = fmt.keyed();
    // Why the links could not be recomputed, if they could not.
    let mut not_verified = None;
    let mut key = None;
    match (keyed, &opts.key) {
        (false, Some(_)) => report.problems.push(finding(
            &first.path,
            10,
            "a chain key was given, but the log's audit chain is not keyed",
        )),
        (false, None) => {}
        (true, None) => {
            report.warnings.push(finding(
                &first.path,
                88,
                "keyed audit chain not verified: no key given (only the stored chain values were compared with \
                 each other; give the key to verify every link)",
            ));
            not_verified = Some("no key given".to_owned());
        }
        (true, Some(k)) if k.id() != fmt.key_id => {
            report.problems.push(finding(
                &first.path,
                88,
                format!(
                    "the key given is not the log's chain key: its id is {}, the log's key_id is {}",
                    hex(&k.id()),
                    hex(&fmt.key_id)
                ),
            ));
            not_verified = Some("the key given is not the log's chain key".to_owned());
        }
        (true, Some(k)) => key = Some(k),
    }
    if !agree && not_verified.is_none() {
        not_verified = Some("the segments disagree on the log's format (see the problems)".to_owned());
    }
    let chainer = not_verified.is_none().then(|| Chainer::new(key));

    // Breaks in log order: genesis, then per segment its join and its own.
    let mut breaks: Vec<Break> = Vec::new();
    if let (Some(c), Some(o), Some(log_id)) = (&chainer, outs.first(), first.log_id)
        && o.format.is_some()
    {
        let genesis = c.genesis(&log_id);
        if o.chain_start != genesis {
            breaks.push(Break {
                finding: finding(
                    &o.path,
                    56,
                    format!(
                        "audit chain broken: the first segment's chain_start holds {}, but the genesis hash of the \
                         log is {}; history differs from position {} on",
                        hex(&o.chain_start),
                        hex(&genesis),
                        o.base
                    ),
                ),
                affects: 0,
            });
        }
    }
    // Where reading the log stopped first (damage, a missing segment).
    let mut damaged_at: Option<u64> = outs.first().filter(|o| o.base != 0).map(|_| 0);
    let mut expect_next: Option<u64> = None;
    let mut links = 0;
    for (i, o) in outs.iter().enumerate() {
        if damaged_at.is_none() && (expect_next.is_some_and(|n| n != o.base) || o.format.is_none()) {
            damaged_at = Some(expect_next.unwrap_or(o.base));
        }
        if i > 0
            && let Some(prev) = outs.get(i - 1)
            && prev.complete
            && let Some((_, seal)) = prev.seal_chain
            && o.format.is_some()
            && o.chain_start != seal
        {
            breaks.push(Break {
                finding: finding(
                    &o.path,
                    56,
                    format!(
                        "audit chain broken: the segment's chain_start holds {}, but the previous segment's seal \
                         holds {}; history differs from position {} on",
                        hex(&o.chain_start),
                        hex(&seal),
                        o.base
                    ),
                ),
                affects: o.base.saturating_add(1),
            });
        }
        breaks.extend(o.breaks.iter().cloned());
        links += o.links;
        if damaged_at.is_none() && !o.complete {
            damaged_at = Some(o.next_position);
        }
        expect_next = Some(o.next_position);
    }
    report.problems.extend(breaks.iter().map(|b| b.finding.clone()));
    report.chain = match not_verified {
        None => ChainStatus::Verified {
            keyed,
            batches: links,
            broken: breaks.len() as u64,
        },
        Some(reason) => ChainStatus::NotVerified { keyed, reason },
    };

    // The anchors.
    let log_end = outs.last().map_or(0, |o| o.next_position);
    let mut verdicts: Vec<(AnchorVerdict, Finding, bool)> = Vec::new();
    for a in &opts.anchors {
        let p = a.position;
        let differs = format!(
            "history before position {p} differs from the anchor, though the stored chain is self-consistent: it \
             was rewritten"
        );
        // The stored chain hash at `p`, where it is stored.
        let point = if p == 0 {
            outs.first()
                .filter(|o| o.base == 0)
                .map(|o| (o.chain_start, &o.path, 56))
        } else {
            outs.iter().find_map(|o| {
                o.anchor_points
                    .iter()
                    .find(|x| x.0 == p)
                    .map(|x| (x.1, &o.path, x.2 + FRAME_CHAIN_OFFSET as u64))
            })
        };
        let (ok, detail, file, offset, rewritten) = if let Some(d) = damaged_at.filter(|&d| d < p || d == 0) {
            let o = outs.iter().rfind(|o| o.base <= d).or(outs.first());
            let (file, off) = o.map_or((first.path.clone(), 0), |o| (o.path.clone(), 0));
            (
                false,
                format!(
                    "the log cannot be read past position {d} (see the problems above), before the anchor at \
                     position {p}: the history before it cannot be verified"
                ),
                file,
                off,
                false,
            )
        } else if let Some(b) = breaks.iter().find(|b| b.affects <= p) {
            (
                false,
                format!(
                    "the audit chain is broken before the anchor at position {p}: {}",
                    b.finding
                ),
                b.finding.file.clone(),
                b.finding.offset,
                false,
            )
        } else if let Some((stored, file, offset)) = point {
            let expected = match &chainer {
                Some(c) if p == 0 => first.log_id.map(|id| c.genesis(&id)).unwrap_or(stored),
                _ => stored,
            };
            if expected == a.hash && chainer.is_some() {
                (
                    true,
                    format!("the history before position {p} is the one the anchor was taken from"),
                    file.clone(),
                    offset,
                    false,
                )
            } else if expected == a.hash {
                (
                    false,
                    format!(
                        "not verified: the stored chain at position {p} equals the anchor, but the links cannot be \
                         recomputed ({})",
                        match &report.chain {
                            ChainStatus::NotVerified { reason, .. } => reason.as_str(),
                            _ => "unknown",
                        }
                    ),
                    file.clone(),
                    offset,
                    false,
                )
            } else if chainer.is_some() {
                (false, differs, file.clone(), offset, true)
            } else {
                (
                    false,
                    format!(
                        "history before position {p} differs from the anchor: the chain stored there is {}",
                        hex(&stored)
                    ),
                    file.clone(),
                    offset,
                    false,
                )
            }
        } else if p > log_end {
            let o = outs.last().unwrap_or(first);
            (
                false,
                format!(
                    "the log ends at position {log_end}, before the anchor at position {p}: events were removed, or \
                     the anchor is from another log"
                ),
                o.path.clone(),
                o.bytes,
                false,
            )
        } else if let Some((o, x)) = outs
            .iter()
            .find_map(|o| o.anchor_inside.iter().find(|x| x.0 == p).map(|x| (o, x)))
        {
            (
                false,
                format!(
                    "position {p} is not a batch boundary of the log: the batch of positions {}..{} spans it; the \
                     anchor is from another log, or the history was rewritten",
                    x.1, x.2
                ),
                o.path.clone(),
                x.3,
                false,
            )
        } else {
            (
                false,
                format!("position {p} is not a batch boundary of the log"),
                first.path.clone(),
                0,
                false,
            )
        };
        let f = finding(&file, offset, format!("anchor {a}: {detail}"));
        verdicts.push((AnchorVerdict { anchor: *a, ok, detail }, f, rewritten));
    }
    // A rewrite lies between the latest anchor that holds and the earliest
    // that does not.
    let holding: Vec<u64> = verdicts
        .iter()
        .filter(|v| v.0.ok)
        .map(|v| v.0.anchor.position)
        .collect();
    for (mut v, mut f, rewritten) in verdicts {
        let p = v.anchor.position;
        if rewritten && let Some(q) = holding.iter().copied().filter(|&q| q < p).max() {
            let more = format!(" (the anchor at position {q} holds: the rewrite is between positions {q} and {p})");
            f.detail.push_str(&more);
            v.detail.push_str(&more);
        }
        if !v.ok {
            report.problems.push(f);
        }
        report.anchors.push(v);
    }
}

fn anchor_finding(a: &Anchor, file: &Path, offset: u64, detail: &str) -> Finding {
    finding(file, offset, format!("anchor {a}: {detail}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{EventData, ExpectedVersion};

    fn opts() -> Options {
        Options::default().segment_size(8 * 1024)
    }

    /// Append `n` batches of 2 events; returns the anchor after each batch.
    fn append(log: &Log, n: usize) -> Vec<Anchor> {
        (0..n)
            .map(|i| {
                let p = vec![b'x'; 100 + i % 40];
                log.append(
                    &format!("s-{}", i % 5),
                    ExpectedVersion::Any,
                    &[EventData::new("A", p.clone()), EventData::new("B", p)],
                )
                .unwrap();
                log.anchor().unwrap()
            })
            .collect()
    }

    fn segs(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|b| dir.join(segment_file_name(b)))
            .collect()
    }

    /// File offsets of the batch frames of a segment file.
    fn batch_offsets(bytes: &[u8]) -> Vec<(usize, crate::segment::Frame)> {
        let header = *SegmentHeader::parse(bytes).unwrap();
        let start = bytes.as_ptr() as usize;
        let mut v = Vec::new();
        walk_segment(bytes, &header, false, |frame, f| {
            v.push((frame.as_ptr() as usize - start, *f))
        });
        v
    }

    /// Change a payload byte of the first record of the frame at `off`, and
    /// fix that record's CRC, so that only the chain can tell.
    fn edit_record(bytes: &mut [u8], off: usize) {
        let rec = off + FRAME_HEADER_LEN;
        let len = u32::from_le_bytes(bytes[rec..rec + 4].try_into().unwrap()) as usize;
        // The payload ends the record body (before padding); flip a byte well
        // inside it.
        let at = rec + len - 20;
        bytes[at] ^= 0x20;
        let crc = crc32fast::hash(&bytes[rec + 8..rec + len]);
        bytes[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Recompute every chain value of the log (as a forger without a key
    /// would for an unkeyed log), fixing header and frame CRCs.
    fn rechain(dir: &Path) {
        let mut prev = None;
        for p in segs(dir) {
            let mut b = fs::read(&p).unwrap();
            let h = *SegmentHeader::parse(&b).unwrap();
            let c = Chainer::new(None);
            let start = prev.unwrap_or_else(|| c.genesis(&h.log_id));
            b[56..88].copy_from_slice(&start);
            let crc = crc32fast::hash(&b[..124]);
            b[124..128].copy_from_slice(&crc.to_le_bytes());
            let mut chain = start;
            let mut off = SEGMENT_HEADER_LEN;
            while off + FRAME_HEADER_LEN <= b.len() {
                let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap()) as usize;
                if b[off + 28] == FRAME_KIND_BATCH {
                    chain = c.link(&chain, &b[off..off + len]);
                }
                b[off + 40..off + 72].copy_from_slice(&chain);
                let crc = crc32fast::hash(&b[off + 8..off + 72]);
                b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
                off += len;
            }
            fs::write(&p, &b).unwrap();
            prev = Some(chain);
        }
    }

    fn run(dir: &Path, o: CheckOptions) -> CheckReport {
        check(dir, o).unwrap()
    }

    #[test]
    fn a_clean_chain_verifies_and_anchors_hold() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let genesis = log.anchor().unwrap();
        let anchors = append(&log, 60);
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), log.anchor());
        log.close().unwrap();
        assert!(segs(dir.path()).len() >= 3, "several segments");
        assert_eq!(genesis.position, 0);
        let mut o = CheckOptions::default().anchor(genesis);
        for a in anchors.iter().step_by(7) {
            o = o.anchor(*a);
        }
        let r = run(dir.path(), o);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(
            r.chain,
            ChainStatus::Verified {
                keyed: false,
                batches: 60,
                broken: 0
            }
        );
        assert_eq!(r.anchors.len(), 10);
        assert!(r.anchors.iter().all(|v| v.ok), "{:?}", r.anchors);
    }

    #[test]
    fn an_edited_batch_is_one_finding_with_file_offset_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let anchors = append(&log, 60);
        log.close().unwrap();
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, f) = batch_offsets(&b)[2];
        edit_record(&mut b, off);
        fs::write(&seg, &b).unwrap();

        let before = anchors.iter().rfind(|a| a.position <= f.first_position).unwrap();
        let after = anchors.iter().find(|a| a.position > f.first_position).unwrap();
        let r = run(dir.path(), CheckOptions::default().anchor(*before).anchor(*after));
        let chain: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.detail.starts_with("audit chain"))
            .collect();
        assert_eq!(chain.len(), 1, "{:?}", r.problems);
        assert_eq!(chain[0].file, seg);
        assert_eq!(chain[0].offset, off as u64 + 40);
        let pos = f.first_position;
        assert!(
            chain[0]
                .detail
                .contains(&format!("history differs from position {pos} on")),
            "{}",
            chain[0].detail
        );
        assert!(r.anchors[0].ok, "{:?}", r.anchors[0]);
        assert!(!r.anchors[1].ok);
        assert!(
            r.anchors[1].detail.contains("broken before the anchor"),
            "{}",
            r.anchors[1].detail
        );
        assert!(
            matches!(r.chain, ChainStatus::Verified { broken: 1, .. }),
            "{:?}",
            r.chain
        );
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_anchors_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let anchors = append(&log, 60);
        log.close().unwrap();
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, f) = batch_offsets(&b)[1];
        edit_record(&mut b, off);
        fs::write(&seg, &b).unwrap();
        rechain(dir.path());
        // The indexes name their segment's seal CRC: the forger rebuilds them.
        for e in fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "idx") {
                fs::remove_file(p).unwrap();
            }
        }
        Log::open(dir.path(), opts()).unwrap().close().unwrap();
        // Self-consistent: no finding without anchors.
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);

        let before = anchors.iter().rfind(|a| a.position <= f.first_position).unwrap();
        let after = anchors.iter().find(|a| a.position > f.first_position).unwrap();
        let last = anchors.last().unwrap();
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(*last).anchor(*before).anchor(*after),
        );
        assert!(!r.is_ok());
        assert!(
            !r.anchors[0].ok && r.anchors[1].ok && !r.anchors[2].ok,
            "{:?}",
            r.anchors
        );
        let d = &r.anchors[2].detail;
        assert!(d.contains("it was rewritten"), "{d}");
        assert!(
            d.contains(&format!("between positions {} and {}", before.position, after.position)),
            "{d}"
        );
    }

    #[test]
    fn anchors_past_the_end_or_inside_a_batch_fail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let anchors = append(&log, 5);
        log.close().unwrap();
        let end = anchors.last().unwrap();
        let past = Anchor {
            position: end.position + 2,
            hash: end.hash,
        };
        let inside = Anchor {
            position: end.position - 1,
            hash: end.hash,
        };
        let wrong = Anchor {
            position: end.position,
            hash: [7; 32],
        };
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(past).anchor(inside).anchor(wrong),
        );
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.anchors[0]
                .detail
                .contains("the log ends at position 10, before the anchor at position 12")
        );
        assert!(
            r.anchors[1].detail.contains("not a batch boundary"),
            "{}",
            r.anchors[1].detail
        );
        assert!(
            r.anchors[2].detail.contains("it was rewritten"),
            "{}",
            r.anchors[2].detail
        );
    }

    #[test]
    fn keyed_chains_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainKey::from_bytes([3; 32]);
        let log = Log::open(dir.path(), opts().chain_key(key.clone())).unwrap();
        let anchors = append(&log, 30);
        log.close().unwrap();
        let a = *anchors.last().unwrap();

        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.detail.starts_with("keyed audit chain not verified: no key given"))
        );
        assert!(matches!(r.chain, ChainStatus::NotVerified { keyed: true, .. }));

        let r = run(dir.path(), CheckOptions::default().key(key).anchor(a));
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(matches!(
            r.chain,
            ChainStatus::Verified {
                keyed: true,
                batches: 30,
                broken: 0
            }
        ));

        let r = run(dir.path(), CheckOptions::default().key(ChainKey::from_bytes([4; 32])));
        assert!(
            r.problems
                .iter()
                .any(|p| p.detail.starts_with("the key given is not the log's chain key"))
        );

        // An unkeyed rewrite of a keyed log's segment breaks a join.
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        b[56] ^= 1;
        let crc = crc32fast::hash(&b[..124]);
        b[124..128].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &b).unwrap();
        let r = run(dir.path(), CheckOptions::default());
        let p = r
            .problems
            .iter()
            .find(|p| p.detail.contains("previous segment's seal"))
            .unwrap();
        assert_eq!((p.file.clone(), p.offset), (seg, 56));
    }

    #[test]
    fn logs_without_the_chain_must_have_zero_slots() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts().chain(false)).unwrap();
        assert_eq!(log.anchor(), None);
        append_plain(&log);
        log.close().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), None);
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.chain, ChainStatus::Absent);

        let a = Anchor {
            position: 2,
            hash: [0; 32],
        };
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(a).key(ChainKey::from_bytes([1; 32])),
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(!r.anchors[0].ok);

        let seg = segs(dir.path())[0].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, _) = batch_offsets(&b)[0];
        b[off + 50] = 1;
        let crc = crc32fast::hash(&b[off + 8..off + 72]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &b).unwrap();
        let r = run(dir.path(), CheckOptions::default());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].offset, off as u64 + 40);
    }

    #[test]
    fn v1_logs_have_no_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts().format_version(1)).unwrap();
        append_plain(&log);
        log.close().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), None);
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.chain, ChainStatus::Absent);
    }

    fn append_plain(log: &Log) {
        for _ in 0..3 {
            log.append("s", ExpectedVersion::Any, &[EventData::new("A", b"x".as_slice())])
                .unwrap();
        }
    }

    #[test]
    fn head_anchor_of_an_empty_log_is_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let g = log.anchor().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), Some(g));
        let r = run(dir.path(), CheckOptions::default().anchor(g));
        assert!(r.is_ok() && r.anchors[0].ok, "{:?} {:?}", r.problems, r.anchors);
        log.close().unwrap();
    }
}
