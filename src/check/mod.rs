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
//! * in logs of format version 4, what stream metadata hides (spec 3.7):
//!   every hidden event is counted against the rule that hides it, in
//!   [`CheckReport::hidden`] (not damage); a metadata event whose rules
//!   record does not decode is a problem;
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
//! * in logs of format version 4, compaction (spec 3.10): every segment
//!   whose header says it was compacted must be accounted for by the newest
//!   matching `$compaction` record (its length, its seal, both chain ends),
//!   the positions it skips must be exactly that record's runs, and every
//!   run must have been hidden by its stream's recorded rules; the seal of a
//!   compacted segment holds the original's end (the join with the next
//!   segment), anchors inside it are superseded by compaction, and it needs
//!   no signed checkpoint. The compacted segments are listed in
//!   [`CheckReport::compaction`].
//!
//! How files are read: every file with [`crate::storage::io::open_read`] (never
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
//!
//! # Layout
//!
//! * `report`: the options and the report (public types);
//! * `files`: how files are reached and read, bounded;
//! * `head`, `segment` (with `links`, the chain of one segment, and `idx`,
//!   its index file), `table`, `snapshots`: one kind of file each;
//! * `derived`: derived files against the bytes rebuilt from the segments;
//! * `outcome`: what the per-segment pass hands to the sequential one;
//! * `scan`: one look at the whole log (parallel, then sequential);
//! * `chain`, `anchors`: the audit chain across segments, and the anchors;
//! * `hidden`: what stream metadata hides, through a view of the log;
//! * `subjects`: every sealed record opened with its key (or erased), and
//!   the subject key file read in full (spec 3.8, 22);
//! * `retention`: a front removed by log retention, and the records that
//!   account for it (spec 3.9);
//! * `compaction`: segments rewritten by compaction, and the records that
//!   account for them (spec 3.10);
//! * `repair`: `--repair`.
//!
//! Within the folder the dependencies run one way: `report` < `files` <
//! `derived`, `head`, `snapshots`, `outcome` < `links`, `idx`, `table` <
//! `compaction` < `segment`, `anchors` < `chain`, `hidden` < `scan` <
//! `repair` < this module.

use std::path::Path;
use std::time::Instant;

#[cfg(doc)]
use crate::audit::chain::Anchor;
use crate::error::{Error, Result};

mod anchors;
mod chain;
mod checkpoints;
mod compaction;
mod derived;
mod files;
mod head;
mod hidden;
mod idx;
mod links;
mod outcome;
mod repair;
mod report;
mod retention;
mod scan;
mod segment;
mod snapshots;
mod subjects;
mod table;

use files::{list_segments, writer_holds_lock};
pub use report::{
    AnchorVerdict, ChainStatus, CheckOptions, CheckReport, CompactedSegment, Finding, Hidden, HiddenBy, ProgressFn,
    Retained, SignatureSummary, SubjectSummary,
};
use scan::scan;

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
/// let log = Log::open(dir.path())?;
/// log.append("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])?;
/// log.close()?;
/// let report = annal::check(dir.path(), CheckOptions::default())?;
/// assert!(report.is_ok(), "{:?}", report.problems);
/// assert_eq!(report.records, 1);
/// # Ok(()) }
/// ```
pub fn check(dir: &Path, opts: CheckOptions) -> Result<CheckReport> {
    let _span = crate::trace::span!(INFO, "annal.check", dir = %dir.display(), repair = opts.repair,
        files = crate::trace::Empty, records = crate::trace::Empty, bytes = crate::trace::Empty,
        problems = crate::trace::Empty, warnings = crate::trace::Empty);
    let report = check_log(dir, opts)?;
    crate::trace::record!(
        _span,
        files = report.files,
        records = report.records,
        bytes = report.bytes,
        problems = report.problems.len(),
        warnings = report.warnings.len()
    );
    Ok(report)
}

/// [`check`], untraced.
fn check_log(dir: &Path, opts: CheckOptions) -> Result<CheckReport> {
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
    repair::repair(dir, &opts, start)
}
