//! One look at the whole log: the head, the stream table and the directory
//! read first, every segment checked in parallel ([`check_segment`]), then
//! one sequential pass in log order over what they found (positions across
//! segments, one `log_id`, stream versions, index back pointers, the rows
//! the stream table must hold), the audit chain across segments, the stream
//! table and the snapshots.
//!
//! Invariants: the head is read before the segments and the stream table
//! before they are listed, so no roll during the check shows a file newer
//! than those it is compared with. Past the first damaged segment, what
//! depends on earlier segments is not compared (one warning says so).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::chain::check_chain;
use super::compaction::check_compaction;
use super::derived::prev_text;
use super::files::{check_dir_safety, list_segments};
use super::head::check_head;
use super::hidden::check_hidden;
use super::outcome::{IdxState, SegCtx, SegOut, StreamSpan};
use super::report::{CheckOptions, CheckReport, SignatureSummary, finding};
use super::retention::{check_retention, facts};
use super::segment::check_segment;
use super::snapshots::check_snapshots;
use super::subjects::check_subjects;
use super::table::{TableExpect, check_table, read_table, table_next};
use crate::error::{Error, Result};
use crate::format::meta::META_FORMAT_VERSION;
use crate::format::names::LOCK_FILE;
use crate::format::names::index_file_name;
use crate::format::names::segment_file_name;
use crate::format::subject_keys::KEYS_FILE;
use crate::format::{FRAME_HEADER_LEN, IDX_HEADER_LEN};
use crate::index::Prev;
use crate::index::streamtable::TableEntry;
use crate::storage::head::{HEAD_FILE, Head};

/// The result of one scan, and what repair should remove.
pub(super) struct Scan {
    pub(super) report: CheckReport,
    pub(super) remove: Vec<(PathBuf, &'static str)>,
}

/// Look at the log once (`writer_active`: a writer held it when the look
/// began).
pub(super) fn scan(dir: &Path, writer_active: bool, opts: &CheckOptions) -> Result<Scan> {
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
    // A head naming a segment below the first one is from before log
    // retention removed it (spec 3.9): it vouches for nothing left.
    let head = head.filter(|h| bases.first().is_none_or(|&f| h.segment_base >= f));
    let ctx = seg_ctx(dir, head, writer_active, opts, &bases);
    if let Some(h) = head
        && bases.binary_search(&h.segment_base).is_err()
    {
        report.problems.push(finding(
            &dir.join(HEAD_FILE),
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
    let next = table_next(dir, &table_read, &bases);
    // Log retention (spec 3.9): a front removed and the records that say so.
    let v4 = outs
        .last()
        .and_then(|o| o.format)
        .is_some_and(|f| f.version >= META_FORMAT_VERSION);
    let front = facts(dir, &outs, v4);
    let chained = outs.iter().find_map(|o| o.format).is_some_and(|f| f.chained());
    // Compaction (spec 3.10): segments rewritten, and the records that
    // account for them.
    let compaction = check_compaction(&outs, chained, opts.public_key.is_some(), &mut report);
    let mut seq = Sequence::new(dir, next);
    seq.first_base = front.first_base;
    seq.compacted = outs.iter().filter(|o| o.compacted).map(|o| o.base).collect();
    for (i, o) in outs.iter().enumerate() {
        let spans = compaction.spans.get(&i).map_or(o.spans.as_slice(), Vec::as_slice);
        if compaction.unaccounted.contains(&i) && seq.damaged.is_none() {
            // Its stream versions skip what nothing accounts for.
            seq.damaged = Some(o);
        }
        seq.segment(i, o, spans, i + 1 == outs.len(), &mut report, &mut remove);
    }
    let entries = seq.finish(&outs, &mut report);
    check_chain(&outs, opts, front.accounted(), &compaction, &mut report);
    check_retention(&front, &outs, chained, &mut report);
    if opts.public_key.is_some() {
        report.signatures = Some(signature_summary(&outs));
    }

    let expect = TableExpect {
        dir,
        bases: &bases,
        outs: &outs,
        writer_active,
        any_sealed: seq.any_sealed,
        next,
        entries,
    };
    check_table(&expect, table_read, &mut report, &mut remove)?;
    check_snapshots(dir, &mut report, &mut remove)?;
    // Stream metadata has its meaning from format version 4 on (the newest
    // segment's version is the log's): older logs need no view.
    if outs
        .last()
        .and_then(|o| o.format)
        .is_some_and(|f| f.version >= META_FORMAT_VERSION)
    {
        check_hidden(dir, opts, &mut report);
        // Sealed records to open, or a key file to read: otherwise the log
        // has no subjects, and nothing is walked again.
        let sealed = outs.iter().map(|o| o.sealed_records).sum::<u64>();
        if sealed > 0 || std::fs::symlink_metadata(dir.join(KEYS_FILE)).is_ok() {
            check_subjects(dir, opts, &mut report);
        }
    }
    Ok(Scan { report, remove })
}

/// The context every segment's check shares.
fn seg_ctx<'a>(
    dir: &'a Path,
    head: Option<Head>,
    writer_active: bool,
    opts: &'a CheckOptions,
    bases: &[u64],
) -> SegCtx<'a> {
    let mut total = 0u64;
    for &b in bases {
        let p = dir.join(segment_file_name(b));
        // Not followed: a link or special file is reported when it is opened.
        total = total.saturating_add(fs::symlink_metadata(&p).map_or(0, |m| m.len()));
    }
    SegCtx {
        dir,
        head,
        writer_active,
        progress: opts.progress.as_deref(),
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
    }
}

/// The signed checkpoints found, for a public key given.
fn signature_summary(outs: &[SegOut]) -> SignatureSummary {
    let end = outs.last().map_or(0, |o| o.next_position);
    let last_signed_position = outs.iter().filter_map(|o| o.last_signed).max();
    SignatureSummary {
        verified: outs.iter().map(|o| o.signed).sum(),
        last_signed_position,
        unsigned_events: end.saturating_sub(last_signed_position.unwrap_or(0)),
    }
}

/// The sequential pass over the segments' outcomes, in log order: what a
/// segment is compared with depends on every earlier one.
struct Sequence<'o> {
    dir: &'o Path,
    next_expected: Option<u64>,
    log_id: Option<[u8; 16]>,
    versions: HashMap<Box<str>, u64>,
    /// Per stream: its newest sealed segment and row, and its last version there.
    latest: HashMap<Box<str>, TableEntry>,
    /// The stream table's `next_segment` as read.
    table_next: Option<u64>,
    /// The rows the stream table must hold: `latest` as of the segment at
    /// `table_next`.
    table_expect: Option<HashMap<Box<str>, TableEntry>>,
    any_sealed: bool,
    chain_ok: bool,
    /// The first damaged segment: what later segments and the stream table
    /// are compared with (versions, back pointers, table rows) depends on
    /// every earlier segment, so past it those comparisons are skipped (one
    /// warning on the damaged segment says so) instead of reported as more
    /// damage.
    damaged: Option<&'o SegOut>,
    /// The first segment's base: above 0, log retention removed the front
    /// (spec 3.9), so a stream's first surviving version and back pointers
    /// may lie below it.
    first_base: u64,
    /// The bases of the segments compaction rewrote (spec 3.10): their
    /// index files were written again, and the back pointers of later index
    /// files into them may name the rows of the original (a row number that
    /// changed, or a stream that left the segment).
    compacted: HashSet<u64>,
}

impl<'o> Sequence<'o> {
    fn new(dir: &'o Path, table_next: Option<u64>) -> Self {
        Sequence {
            dir,
            next_expected: None,
            log_id: None,
            versions: HashMap::new(),
            latest: HashMap::new(),
            table_next,
            table_expect: None,
            any_sealed: false,
            chain_ok: true,
            damaged: None,
            first_base: 0,
            compacted: HashSet::new(),
        }
    }

    /// The `i`-th segment's outcome `o`, in order; `spans`: its streams
    /// (for a compacted segment, counting the versions its record's runs
    /// account for).
    fn segment(
        &mut self,
        i: usize,
        o: &'o SegOut,
        spans: &[(Box<str>, StreamSpan)],
        is_last: bool,
        report: &mut CheckReport,
        remove: &mut Vec<(PathBuf, &'static str)>,
    ) {
        report.records += o.records;
        report.bytes += o.bytes + o.idx_bytes;
        report.files += 1 + u64::from(o.idx_bytes > 0);
        report.problems.extend(o.problems.iter().cloned());
        report.warnings.extend(o.warnings.iter().cloned());
        if self.table_next == Some(o.base) {
            self.table_expect = Some(self.latest.clone());
        }
        self.join(o, report);
        self.stream_versions(i, o, spans, report);
        if o.sealed && o.complete {
            self.any_sealed = true;
            self.sealed(o, report, remove);
        }
        if self.damaged.is_none() && (!o.complete || (!o.sealed && !is_last)) {
            self.damaged = Some(o);
        }
    }

    /// The segment starts where the one before it ended, and belongs to the
    /// same log.
    fn join(&mut self, o: &SegOut, report: &mut CheckReport) {
        if let Some(n) = self.next_expected
            && n != o.base
        {
            self.chain_ok = false;
            report.problems.push(finding(
                &o.path,
                32,
                format!(
                    "expected a segment starting at position {n} (is one missing?), found {}",
                    o.base
                ),
            ));
        }
        self.next_expected = if o.complete && o.sealed {
            Some(o.next_position)
        } else {
            None
        };
        if let Some(id) = o.log_id {
            match self.log_id {
                None => self.log_id = Some(id),
                Some(l) if l != id => report.problems.push(finding(
                    &o.path,
                    16,
                    "the segment's log_id differs from the first segment's: it belongs to another log",
                )),
                Some(_) => {}
            }
        }
    }

    /// Each stream continues, in this segment, where earlier segments left it.
    fn stream_versions(&mut self, i: usize, o: &SegOut, spans: &[(Box<str>, StreamSpan)], report: &mut CheckReport) {
        for (name, s) in spans {
            // Saturating: versions come from the files (found by fuzzing).
            let want = self.versions.get(name).map_or(0, |v: &u64| v.saturating_add(1));
            // After retention a stream's first surviving version is anything.
            let cut = self.first_base > 0 && !self.versions.contains_key(name);
            if s.first_version != want && !cut && (i == 0 || self.chain_ok) && self.damaged.is_none() {
                report.problems.push(finding(
                    &o.path,
                    s.first_offset + (FRAME_HEADER_LEN + crate::format::RECORD_STREAM_VERSION_OFFSET) as u64,
                    format!(
                        "expected stream {name:?} to continue at version {want}, found version {}",
                        s.first_version
                    ),
                ));
            }
            self.versions.insert(name.clone(), s.last_version);
        }
    }

    /// A sealed, complete segment: its index's back pointers against the
    /// newest earlier segment holding each stream; then its rows become the
    /// newest.
    fn sealed(&mut self, o: &SegOut, report: &mut CheckReport, remove: &mut Vec<(PathBuf, &'static str)>) {
        let idx_path = self.dir.join(index_file_name(o.base));
        if let IdxState::Valid(prevs) = &o.idx
            && self.damaged.is_none()
        {
            for (name, row, prev) in prevs {
                let want = self.latest.get(name).map_or(Prev::NONE, |e| e.at);
                // A back pointer to a segment retention removed (spec 3.9).
                let removed = want == Prev::NONE && prev.segment < self.first_base;
                // A back pointer into a segment compaction rewrote, written
                // before the rewrite (spec 3.10): a hint, as readers use it.
                let stale = *prev != Prev::NONE
                    && self.compacted.contains(&prev.segment)
                    && (want == Prev::NONE || want.segment <= prev.segment);
                if *prev != want && !removed && !stale {
                    // The row's back pointer, where its index version puts it.
                    let lens = crate::format::idx_lens(index_version(&idx_path));
                    report.problems.push(finding(
                        &idx_path,
                        (IDX_HEADER_LEN + *row as usize * lens.stream_row + lens.back_pointer.0) as u64,
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
            self.latest.insert(
                name.clone(),
                TableEntry {
                    last_version: *last_version,
                    at,
                },
            );
        }
    }

    /// After the last segment: the warning on the first damaged segment, if
    /// later files depend on it, and the rows the stream table must hold
    /// (`None` if they cannot be told).
    fn finish(&mut self, outs: &[SegOut], report: &mut CheckReport) -> Option<HashMap<Box<str>, TableEntry>> {
        let table_next = self.table_next;
        // The table covers the segments below its next_segment only.
        let table_depends = self.damaged.is_some_and(|o| table_next.is_some_and(|n| o.base < n));
        if let Some(o) = self.damaged
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
        let active_base = outs.last().map_or(0, |o| o.base);
        let mut table_expect = self.table_expect.take();
        if table_next.is_some_and(|n| n > active_base) || (table_next.is_some() && table_expect.is_none()) {
            table_expect = Some(self.latest.clone());
        }
        if table_depends {
            table_expect = None;
        }
        table_expect
    }
}

/// The `index_version` of the index file at `path` (1 if it cannot be read:
/// only to name the offset of a finding in it).
fn index_version(path: &Path) -> u16 {
    let mut v = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|f| crate::storage::io::read_exact_at(&f, &mut v, 8))
        .map_or(1, |()| u16::from_le_bytes(v))
}
