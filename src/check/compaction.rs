//! Compaction as `check` sees it (spec 3.10, format version 4): every
//! segment whose header has `segment_flags` bit `COMPACTED` must be
//! accounted for by a compaction record (an event of `$compaction`), and
//! that record must say exactly which events are missing from it, each of
//! them hidden by a recorded rule.
//!
//! This module owns two steps:
//!
//! * in the parallel pass, per segment: the batches of a compacted segment
//!   ([`batch_span`]) and the events of `$compaction` and of the metadata
//!   streams `$meta-S` ([`system_events`]), read from the segment's own
//!   bytes (not through a view, so a log the readers refuse is still
//!   checked);
//! * in the sequential pass ([`check_compaction`]): for each compacted
//!   segment, the newest record of its base whose `next_base`,
//!   `compacted_len`, `original_end` and `compacted_end` match the file
//!   (its seal's `first_position`, its length, its seal's chain slot, the
//!   chain after its last batch, when it can be computed: not for a keyed
//!   chain checked without its key) and that lies at or after the segment's
//!   end (a record is appended after the segment it describes was sealed);
//!   the positions the segment skips against
//!   that record's runs; stream versions of the segment and the runs
//!   contiguous together; and each run against the rules of its stream.
//!
//! **What a run must satisfy.** The rules are the newest `$meta-S` event
//! before the record's position; `now` is the record's timestamp; `last` is
//! the newest version of `S` before the record's position, counting the
//! events every accepted record's runs account for (they were there when the
//! record was written). The runs hold no timestamps, so a run is accounted
//! for if every version of it is below the lowest version the rules leave
//! visible (`TOMBSTONE`, `truncate_before`, `max_count`: spec 3.7), or if
//! the rules have `max_age` and the run's timestamp (which the record
//! states) is older than `now − max_age`. The stated timestamp must lie
//! within the bounds the segment gives (timestamps never go back along
//! positions, spec 9): from below the last batch it keeps before the run (or
//! its header's `prev_timestamp`), from above the first batch it keeps after
//! the run (the rest of the run's own batch, when it kept one), or, for a
//! run after its last batch, the next segment's `prev_timestamp`; outside
//! them, the record lies: a problem.
//! A run may not remove the newest event of its stream (version `last`)
//! unless the rules have `TOMBSTONE`, nor events of a system stream:
//! problems.
//!
//! Invariants: a compacted segment no record accounts for is one problem,
//! at its seal, a break of the chain for every anchor after its base (its
//! events' history can no longer be recomputed, and nothing vouches for
//! it), and damage for the sequential pass (what later segments are
//! compared with is not compared past it, as past any damaged segment); one
//! that a record accounts for is listed in
//! [`CheckReport::compaction`], and anchors strictly inside it are
//! superseded, never "rewritten" (see `anchors`). A record that does not
//! decode is a problem at the byte of its payload that fails; a record whose
//! segment was not swapped in (a crash between the record and the swap) is
//! a warning, not a problem. The seal of a compacted segment is not
//! compared with the chain after its last batch (`links`): it holds the
//! original's end, which the record states and the next segment joins.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::links::slot_at;
use super::outcome::{BatchSpan, Break, FoundRecord, SegOut, StreamSpan, SystemEvent};
use super::report::{CheckReport, CompactedSegment, Finding, finding};
use crate::audit::chain::{ChainHash, hex};
use crate::format::Layout;
use crate::format::batch::peek_stream;
use crate::format::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_STREAM, CompactionRecord, RemovedRun};
use crate::format::frame::{Frame, frame_records};
use crate::format::meta::{StreamRules, is_system_stream, meta_target};
use crate::format::record::RecordRef;
use crate::read::rules::Visible;

/// The span of one batch of a compacted segment (the frame `frame`, at
/// file offset `off`, described by `f`).
pub(super) fn batch_span(frame: &[u8], f: &Frame, off: u64, layout: &Layout) -> Option<BatchSpan> {
    let r = frame_records(frame, layout).next()?;
    let last = frame_records(frame, layout)
        .last()
        .map_or(r.timestamp(), |l| l.timestamp());
    Some(BatchSpan {
        first_position: f.first_position,
        count: u64::from(f.count),
        first_version: r.stream_version(),
        stream: r.stream().into(),
        offset: off,
        first_timestamp: r.timestamp(),
        last_timestamp: last,
    })
}

/// The events of `$compaction` and `$meta-S` in the batch `frame` (at file
/// offset `off`, described by `f`; a batch holds one stream's events),
/// added to `out`.
/// `spans`: the segment's streams as walked so far (for each record, the
/// newest version before it of every stream its runs name).
pub(super) fn system_events(
    frame: &[u8],
    f: &Frame,
    off: u64,
    layout: &Layout,
    spans: &HashMap<Box<str>, StreamSpan>,
    out: &mut Vec<SystemEvent>,
) {
    // Most batches are not a system stream's: tell by the stream name's
    // first byte, without parsing a record.
    let body = frame.get(f.header_len as usize..).unwrap_or_default();
    if layout.compact() && peek_stream(body).is_some_and(|(s, _)| s.first() != Some(&b'$')) {
        return;
    }
    let mut records = frame_records(frame, layout).peekable();
    let Some(stream) = records.peek().map(|r| r.stream()) else {
        return;
    };
    if stream == COMPACTION_STREAM {
        out.extend(records.map(|r| SystemEvent::Compaction(found_record(frame, off, &r, spans))));
    } else if let Some(target) = meta_target(stream) {
        out.extend(records.map(|r| SystemEvent::Meta {
            position: r.position(),
            target: target.into(),
            rules: StreamRules::decode(r.payload()).ok(),
        }));
    }
}

/// The `$compaction` event `r` of the batch `frame` at file offset `off`.
fn found_record(frame: &[u8], off: u64, r: &RecordRef<'_>, spans: &HashMap<Box<str>, StreamSpan>) -> FoundRecord {
    let within = (r.payload().as_ptr() as usize).saturating_sub(frame.as_ptr() as usize) as u64;
    let payload_at = off.saturating_add(within);
    let record = if r.event_type() != COMPACTION_EVENT_TYPE || r.schema_version() != 0 || !r.metadata().is_empty() {
        Err((
            off,
            format!(
                "the event at position {} of {COMPACTION_STREAM} is not a {COMPACTION_EVENT_TYPE} event with \
                 schema version 0 and no metadata (spec 3.10)",
                r.position()
            ),
        ))
    } else {
        CompactionRecord::decode(r.payload()).map_err(|(at, why)| {
            (
                payload_at.saturating_add(at as u64),
                format!(
                    "the compaction record at position {} does not decode (spec 3.10): payload byte {at}: {why}",
                    r.position()
                ),
            )
        })
    };
    let mut before: Vec<(Box<str>, u64)> = Vec::new();
    if let Ok(rec) = &record {
        let names: HashSet<&str> = rec.removed.iter().map(|x| x.stream.as_str()).collect();
        before = names
            .into_iter()
            .filter_map(|n| spans.get(n).map(|s| (Box::from(n), s.last_version)))
            .collect();
    }
    FoundRecord {
        position: r.position(),
        timestamp: r.timestamp(),
        payload_at,
        record,
        before,
    }
}

/// A compacted segment a record accounts for: what the anchors need.
pub(super) struct Accounted {
    /// The segment's base.
    pub(super) base: u64,
    /// Its seal's `first_position` (the next segment's base).
    pub(super) next_base: u64,
    /// The position of the record that accounts for it.
    pub(super) record_position: u64,
    /// The segment file.
    pub(super) path: PathBuf,
    /// The file offset of its seal's chain slot, and the slot: the chain at
    /// `next_base`.
    pub(super) seal_slot: u64,
    pub(super) seal_chain: ChainHash,
}

/// What the sequential pass and the anchors take from compaction.
#[derive(Default)]
pub(super) struct Compaction {
    /// The compacted segments records account for, in log order.
    pub(super) accounted: Vec<Accounted>,
    /// A compacted segment no record accounts for breaks the history of
    /// every anchor after its base (the finding is already a problem).
    pub(super) breaks: Vec<Break>,
    /// The stream spans of each accounted segment (by its index), counting
    /// the versions its record's runs account for: what the next segments'
    /// versions continue from.
    pub(super) spans: HashMap<usize, Vec<(Box<str>, StreamSpan)>>,
    /// The compacted segments (by index) no record accounts for: what later
    /// segments are compared with depends on events nothing accounts for,
    /// so the sequential pass treats them as damaged.
    pub(super) unaccounted: HashSet<usize>,
}

/// A decoded record, where it was found.
struct Rec<'o> {
    /// The index of the segment holding it.
    seg: usize,
    found: &'o FoundRecord,
    rec: &'o CompactionRecord,
}

/// A run of an accepted record, with the frame after it.
struct RunAt<'o> {
    run: &'o RemovedRun,
    /// The file offset of the frame after the run's gap (a batch or the seal).
    frame: u64,
    /// An upper bound of the run's timestamps, if one is known.
    newest: Option<u64>,
    /// A lower bound of the run's timestamps.
    oldest: u64,
}

/// The version of the last event of `run`.
fn last_version(run: &RemovedRun) -> u64 {
    run.first_version.saturating_add(run.count.saturating_sub(1))
}

/// Check every compacted segment and every compaction record of `outs` (in
/// log order); `chained`: the log carries the audit chain; `public_key`: a
/// public key was given (the report then says whether a signed checkpoint
/// covers each record).
pub(super) fn check_compaction(
    outs: &[SegOut],
    chained: bool,
    public_key: bool,
    report: &mut CheckReport,
) -> Compaction {
    let mut c = Compaction::default();
    let recs = records(outs, report);
    if recs.is_empty() && !outs.iter().any(|o| o.compacted) {
        return c;
    }
    let rules = rules_by_stream(outs);
    // The records by the base they name, in log order.
    let mut by_base: HashMap<u64, Vec<&Rec<'_>>> = HashMap::new();
    for r in &recs {
        by_base.entry(r.rec.segment_base).or_default().push(r);
    }
    // Each compacted segment, matched with the newest record that accounts
    // for it.
    let mut accepted: Vec<(usize, &Rec<'_>)> = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        if !o.compacted || !o.complete || !o.sealed {
            // Damage of the segment itself is reported by its walk.
            continue;
        }
        let Some((seal_off, _)) = o.seal_chain else {
            continue;
        };
        let named: &[&Rec<'_>] = by_base.get(&o.base).map_or(&[], Vec::as_slice);
        match named.iter().rev().find(|r| mismatch(o, r).is_none()) {
            Some(r) => accepted.push((i, r)),
            None => {
                let why = match named.last() {
                    None => format!("no compaction record names base position {}", o.base),
                    Some(r) => format!(
                        "the newest compaction record of base position {}, at position {}, {}",
                        o.base,
                        r.found.position,
                        mismatch(o, r).unwrap_or_default()
                    ),
                };
                let f = finding(
                    &o.path,
                    seal_off,
                    format!("a compacted segment no compaction record accounts for (spec 3.10): {why}"),
                );
                report.problems.push(f.clone());
                c.unaccounted.insert(i);
                c.breaks.push(Break {
                    finding: f,
                    affects: o.base.saturating_add(1),
                });
            }
        }
    }
    let runs = RunIndex::new(outs, &accepted);
    let last_signed = outs.iter().filter_map(|o| o.last_signed).max();
    for &(i, r) in &accepted {
        let Some(o) = outs.get(i) else { continue };
        let next = outs.get(i + 1).filter(|n| n.base == o.next_position);
        let SegmentRuns {
            problems,
            runs_at,
            spans,
        } = segment_runs(o, r, next);
        report.problems.extend(problems);
        for x in &runs_at {
            match run_verdict(r, x, &rules, &runs) {
                RunVerdict::Hidden => {}
                RunVerdict::Problem(p) => report.problems.push(finding(&o.path, x.frame, p)),
            }
        }
        c.spans.insert(i, spans);
        let (seal_off, seal_chain) = o.seal_chain.unwrap_or((0, [0; 32]));
        let layout_slot = o
            .format
            .map_or(seal_off, |f| slot_at(seal_off, &Layout::for_log(&f, o.prev_timestamp)));
        c.accounted.push(Accounted {
            base: o.base,
            next_base: o.next_position,
            record_position: r.found.position,
            path: o.path.clone(),
            seal_slot: layout_slot,
            seal_chain,
        });
        report.compaction.push(CompactedSegment {
            path: o.path.clone(),
            base: o.base,
            next_base: o.next_position,
            record_position: r.found.position,
            removed_events: r.rec.removed_count(),
            runs: r.rec.removed.len() as u64,
            record_signed: (public_key && chained).then(|| last_signed.is_some_and(|s| s > r.found.position)),
        });
    }
    unswapped(outs, &recs, &accepted, report);
    c
}

/// Every `$compaction` event of the log that decodes; the others are
/// problems at the byte that fails.
fn records<'o>(outs: &'o [SegOut], report: &mut CheckReport) -> Vec<Rec<'o>> {
    let mut v = Vec::new();
    for (seg, o) in outs.iter().enumerate() {
        for e in &o.system {
            let SystemEvent::Compaction(found) = e else { continue };
            match &found.record {
                Ok(rec) => v.push(Rec { seg, found, rec }),
                Err((at, why)) => report.problems.push(finding(&o.path, *at, why.clone())),
            }
        }
    }
    v
}

/// Every stream's metadata events, in position order: `(position, rules)`.
fn rules_by_stream(outs: &[SegOut]) -> HashMap<&str, Vec<(u64, Option<StreamRules>)>> {
    let mut m: HashMap<&str, Vec<(u64, Option<StreamRules>)>> = HashMap::new();
    for o in outs {
        for e in &o.system {
            if let SystemEvent::Meta {
                position,
                target,
                rules,
            } = e
            {
                m.entry(target).or_default().push((*position, *rules));
            }
        }
    }
    m
}

/// Why the record `r` does not account for the compacted segment `o`, if
/// it does not.
fn mismatch(o: &SegOut, r: &Rec<'_>) -> Option<String> {
    let rec = r.rec;
    let (_, seal) = o.seal_chain?;
    if r.found.position < o.next_position {
        return Some(format!(
            "comes before the segment's end at position {}: it cannot describe it",
            o.next_position
        ));
    }
    if rec.next_base != o.next_position {
        return Some(format!(
            "says the segment ends at position {}, but its seal says {}",
            rec.next_base, o.next_position
        ));
    }
    if rec.compacted_len != o.bytes {
        return Some(format!(
            "says the rewritten file is {} bytes long, but it is {} bytes",
            rec.compacted_len, o.bytes
        ));
    }
    if rec.original_end != seal {
        return Some(format!(
            "says the original segment's chain ended at {}, but the seal's chain slot holds {}",
            hex(&rec.original_end),
            hex(&seal)
        ));
    }
    match o.chain_end {
        Some(end) if end != rec.compacted_end => Some(format!(
            "says the chain after the rewritten segment's last batch is {}, but it is {}",
            hex(&rec.compacted_end),
            hex(&end)
        )),
        _ => None,
    }
}

/// One item of a compacted segment in position order: a batch it keeps or
/// a run its record says was removed.
enum Item<'o> {
    Batch(&'o BatchSpan),
    Run(&'o RemovedRun),
}

impl Item<'_> {
    fn first_position(&self) -> u64 {
        match self {
            Item::Batch(b) => b.first_position,
            Item::Run(r) => r.first_position,
        }
    }
}

/// The gaps of a compacted segment as its frames are met in position order.
struct Gaps<'o, 'p> {
    o: &'o SegOut,
    /// The record's position.
    p: u64,
    /// The position after the last batch or run met.
    at: u64,
    /// Where the current gap starts (the end of the last batch).
    from: u64,
    /// The runs met since the last batch follow each other from `from`.
    ok: bool,
    /// The newest timestamp before the current gap (the last batch's, or
    /// the segment's `prev_timestamp`): a lower bound of the runs' in it.
    floor: u64,
    pending: Vec<&'o RemovedRun>,
    runs_at: Vec<RunAt<'o>>,
    problems: &'p mut Vec<Finding>,
}

impl<'o> Gaps<'o, '_> {
    /// The frame at file offset `off` starts at position `first`: the runs
    /// since the last batch must fill `from..first` exactly. `newest`: the
    /// upper bound of their timestamps the frame gives.
    fn close(&mut self, first: u64, off: u64, newest: Option<u64>) {
        if !self.ok || first != self.at {
            let runs: Vec<String> = self
                .pending
                .iter()
                .map(|x| format!("{}..{}", x.first_position, x.end()))
                .collect();
            self.problems.push(finding(
                &self.o.path,
                off,
                format!(
                    "the compacted segment skips positions {}..{first} before this frame, but the runs of the \
                     compaction record at position {} there are [{}] (spec 3.10: they must be exactly the positions \
                     skipped)",
                    self.from,
                    self.p,
                    runs.join(", ")
                ),
            ));
        }
        for x in self.pending.drain(..) {
            self.runs_at.push(RunAt {
                run: x,
                frame: off,
                newest,
                oldest: self.floor,
            });
        }
        self.ok = true;
    }
}

/// What [`segment_runs`] found of one compacted segment.
struct SegmentRuns<'o> {
    problems: Vec<Finding>,
    /// Each run of the record, with the frame after it.
    runs_at: Vec<RunAt<'o>>,
    /// The segment's streams, counting the runs.
    spans: Vec<(Box<str>, StreamSpan)>,
}

/// The positions the compacted segment `o` skips against the runs of the
/// record `r`, and the stream versions of both together. Returns the
/// problems, each run with the frame after it, and the segment's stream
/// spans counting the runs. `next`: the segment after `o`.
fn segment_runs<'o>(o: &'o SegOut, r: &Rec<'o>, next: Option<&SegOut>) -> SegmentRuns<'o> {
    let mut problems = Vec::new();
    let mut items: Vec<Item<'o>> = o.batches.iter().map(Item::Batch).collect();
    items.extend(r.rec.removed.iter().map(Item::Run));
    items.sort_by_key(|i| i.first_position());
    let seal_off = o.seal_chain.map_or(0, |s| s.0);
    let p = r.found.position;
    // The positions, frame by frame: the runs since the last frame must
    // fill the positions the frame skips, exactly.
    let mut gaps = Gaps {
        o,
        p,
        at: o.base,
        from: o.base,
        ok: true,
        floor: o.prev_timestamp,
        pending: Vec::new(),
        runs_at: Vec::new(),
        problems: &mut problems,
    };
    for item in &items {
        match item {
            Item::Run(x) => {
                gaps.ok &= x.first_position == gaps.at;
                gaps.pending.push(x);
                gaps.at = x.end();
            }
            Item::Batch(b) => {
                gaps.close(b.first_position, b.offset, Some(b.first_timestamp));
                gaps.at = b.first_position.saturating_add(b.count);
                gaps.from = gaps.at;
                gaps.floor = b.last_timestamp;
            }
        }
    }
    gaps.close(o.next_position, seal_off, next.map(|n| n.prev_timestamp));
    let runs_at = gaps.runs_at;
    let frame_of: HashMap<*const RemovedRun, u64> =
        runs_at.iter().map(|x| (std::ptr::from_ref(x.run), x.frame)).collect();
    // Stream versions, batches and runs together, in position order.
    let mut spans: Vec<(Box<str>, StreamSpan)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for item in &items {
        let (stream, first, count, off) = match item {
            Item::Batch(b) => (&*b.stream, b.first_version, b.count, b.offset),
            Item::Run(x) => (
                x.stream.as_str(),
                x.first_version,
                x.count,
                frame_of.get(&std::ptr::from_ref(*x)).copied().unwrap_or(seal_off),
            ),
        };
        let last = first.saturating_add(count.saturating_sub(1));
        match index.get(stream).and_then(|&k| spans.get_mut(k)) {
            Some((_, s)) => {
                if s.last_version.checked_add(1) != Some(first) {
                    problems.push(finding(
                        &o.path,
                        off,
                        format!(
                            "expected stream {stream:?} to continue at version {} (counting the versions the \
                             compaction record at position {p} says were removed), found version {first}",
                            s.last_version.saturating_add(1)
                        ),
                    ));
                }
                s.last_version = last;
            }
            None => {
                index.insert(stream, spans.len());
                spans.push((
                    stream.into(),
                    StreamSpan {
                        first_version: first,
                        first_offset: off,
                        last_version: last,
                    },
                ));
            }
        }
    }
    SegmentRuns {
        problems,
        runs_at,
        spans,
    }
}

/// What the newest version of a stream before a record is found from, for
/// the streams the accepted records' runs name.
struct RunIndex<'o> {
    /// The runs of every accepted record, per stream, in position order:
    /// `(first position, first version, count)`.
    by_stream: HashMap<&'o str, Vec<(u64, u64, u64)>>,
    /// Per stream: `(segment index, the newest version its events in the
    /// segments up to that one reach)`, in log order (surviving events).
    surviving: HashMap<&'o str, Vec<(usize, u64)>>,
}

impl<'o> RunIndex<'o> {
    fn new(outs: &'o [SegOut], accepted: &[(usize, &Rec<'o>)]) -> RunIndex<'o> {
        let mut by_stream: HashMap<&'o str, Vec<(u64, u64, u64)>> = HashMap::new();
        for (_, r) in accepted {
            for x in &r.rec.removed {
                by_stream
                    .entry(x.stream.as_str())
                    .or_default()
                    .push((x.first_position, x.first_version, x.count));
            }
        }
        for v in by_stream.values_mut() {
            v.sort_unstable();
        }
        let mut surviving: HashMap<&'o str, Vec<(usize, u64)>> = HashMap::new();
        for (i, o) in outs.iter().enumerate() {
            for (name, span) in &o.spans {
                if let Some((key, _)) = by_stream.get_key_value(&**name) {
                    let v = surviving.entry(*key).or_default();
                    let top = v.last().map_or(span.last_version, |x| x.1.max(span.last_version));
                    v.push((i, top));
                }
            }
        }
        RunIndex { by_stream, surviving }
    }

    /// The newest version of `stream` the runs hold before position `p`.
    fn run_before(&self, stream: &str, p: u64) -> Option<u64> {
        let v = self.by_stream.get(stream)?;
        let k = v.partition_point(|x| x.0 < p);
        let &(first, version, count) = v.get(k.checked_sub(1)?)?;
        let n = count.min(p.saturating_sub(first));
        Some(version.saturating_add(n.saturating_sub(1)))
    }

    /// The newest version of `stream` in the segments before the one at
    /// index `seg`.
    fn surviving_before(&self, stream: &str, seg: usize) -> Option<u64> {
        let v = self.surviving.get(stream)?;
        let k = v.partition_point(|x| x.0 < seg);
        v.get(k.checked_sub(1)?).map(|x| x.1)
    }

    /// The newest version of `stream` before the record `r`: in the
    /// segments before the record's, in the record's own segment before it,
    /// and in the runs of every accepted record.
    fn newest_before(&self, r: &Rec<'_>, stream: &str) -> Option<u64> {
        let own = r.found.before.iter().find(|(s, _)| &**s == stream).map(|x| x.1);
        [
            self.surviving_before(stream, r.seg),
            own,
            self.run_before(stream, r.found.position),
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// What `check` can tell of one run against its stream's rules.
#[derive(Debug, PartialEq, Eq)]
enum RunVerdict {
    /// A recorded rule hid every event of the run.
    Hidden,
    /// No rule hid them, or the run breaks a rule of compaction: a problem.
    Problem(String),
}

/// Whether the run `x` of the accepted record `r` is hidden by a recorded
/// rule (see the module documentation).
fn run_verdict(
    r: &Rec<'_>,
    x: &RunAt<'_>,
    rules: &HashMap<&str, Vec<(u64, Option<StreamRules>)>>,
    runs: &RunIndex<'_>,
) -> RunVerdict {
    let run = x.run;
    let p = r.found.position;
    let s = run.stream.as_str();
    let what = format!(
        "the compaction record at position {p} says events of stream {s:?} were removed (versions {} to {}, \
         positions {} to {})",
        run.first_version,
        last_version(run),
        run.first_position,
        run.end().saturating_sub(1)
    );
    if is_system_stream(s) {
        return RunVerdict::Problem(format!(
            "{what}, but events of system streams are never removed (spec 3.10)"
        ));
    }
    let newest = rules
        .get(s)
        .and_then(|v| v.get(v.partition_point(|m| m.0 < p).checked_sub(1)?));
    let Some(&(set_at, rules)) = newest else {
        return RunVerdict::Problem(format!(
            "{what}, but the stream had no metadata before the record: nothing hid them (spec 3.10)"
        ));
    };
    let Some(rules) = rules else {
        return RunVerdict::Problem(format!(
            "{what}, but the stream's metadata before the record (at position {set_at}) does not decode"
        ));
    };
    let last = runs.newest_before(r, s);
    if last == Some(last_version(run)) && !rules.tombstone {
        return RunVerdict::Problem(format!(
            "{what}, but version {} was the stream's newest event, which compaction keeps unless the stream is \
             tombstoned (spec 3.10)",
            last_version(run)
        ));
    }
    let vis = Visible::new(rules, last, r.found.timestamp);
    if last_version(run) < vis.min_version {
        return RunVerdict::Hidden;
    }
    let newest = last.map_or_else(|| "none".to_owned(), |l| l.to_string());
    // The record states the run's timestamp: it must lie within the bounds
    // the segment gives (timestamps never go back along positions).
    let t = run.timestamp;
    if t < x.oldest || x.newest.is_some_and(|n| t > n) {
        return RunVerdict::Problem(format!(
            "{what} at timestamp {t}, but the segment's events around them bound it to [{}, {}] (spec 3.10)",
            x.oldest,
            x.newest.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        ));
    }
    if rules.max_age.is_some() && t < vis.min_timestamp {
        return RunVerdict::Hidden;
    }
    RunVerdict::Problem(format!(
        "{what}, but the stream's rules (set at position {set_at}) did not hide them when the record was written \
         (at its timestamp {}, with the stream's newest version {newest}; the events' timestamp {t}) (spec 3.10)",
        r.found.timestamp
    ))
}

/// Records that account for no compacted segment: a record of a segment
/// that is still the original, or newer than the rewrite swapped in (a
/// crash between the record and the swap), is a warning; one naming no
/// segment of the log is a problem.
fn unswapped(outs: &[SegOut], recs: &[Rec<'_>], accepted: &[(usize, &Rec<'_>)], report: &mut CheckReport) {
    let first_base = outs.first().map_or(0, |o| o.base);
    let taken: HashMap<u64, u64> = accepted
        .iter()
        .filter_map(|(i, a)| outs.get(*i).map(|o| (o.base, a.found.position)))
        .collect();
    for r in recs {
        let base = r.rec.segment_base;
        let taken = taken.get(&base);
        if taken.is_some_and(|&at| at >= r.found.position) {
            // The record swapped in, or an older one it replaces.
            continue;
        }
        let Some(holder) = outs.get(r.seg) else { continue };
        // The segments are in log order, by base.
        let named = outs
            .binary_search_by_key(&base, |o| o.base)
            .ok()
            .and_then(|i| outs.get(i));
        match named {
            Some(o) if !o.compacted || taken.is_some() => report.warnings.push(finding(
                &o.path,
                0,
                format!(
                    "the compaction record at position {} describes a rewrite of this segment that was not swapped \
                     in (a crash between the record and the swap, spec 3.10); the segment {} as it is: not damage",
                    r.found.position,
                    if o.compacted {
                        "is checked against the record that accounts for it"
                    } else {
                        "is the original and is checked"
                    }
                ),
            )),
            // A compacted segment no record accounts for: reported above.
            Some(_) => {}
            None if base < first_base => {}
            None => report.problems.push(finding(
                &holder.path,
                r.found.payload_at,
                format!(
                    "the compaction record at position {} names the segment at position {base}, but no segment \
                     starts there",
                    r.found.position
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
