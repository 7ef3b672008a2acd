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
//!   chain after its last batch); the positions the segment skips against
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
//! the rules have `max_age` and an upper bound of the run's timestamps is
//! older than `now − max_age`. The bound is the timestamp of the first
//! batch the rewritten segment keeps after the run, or, for a run after its
//! last batch, the next segment's `prev_timestamp` (the original segment's
//! newest timestamp): timestamps never go back along positions (spec 9), so
//! the bound is sound (a run this accepts was hidden), and it is exact for
//! a run at the segment's end. A run may not remove the newest event of its
//! stream (version `last`) unless the rules have `DELETED` or `TOMBSTONE`,
//! nor events of a system stream.
//!
//! Invariants: a compacted segment no record accounts for is one problem,
//! at its seal, and a break of the chain for every anchor after its base
//! (its events' history can no longer be recomputed, and nothing vouches
//! for it); one that a record accounts for is listed in
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
use crate::format::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_STREAM, CompactionRecord, RemovedRun};
use crate::format::frame::{Frame, frame_records};
use crate::format::meta::{StreamRules, is_system_stream, meta_target};
use crate::format::record::RecordRef;
use crate::read::rules::Visible;

/// The span of one batch of a compacted segment (the frame `frame`, at
/// file offset `off`, described by `f`).
pub(super) fn batch_span(frame: &[u8], f: &Frame, off: u64, layout: &Layout) -> Option<BatchSpan> {
    let r = frame_records(frame, layout).next()?;
    Some(BatchSpan {
        first_position: f.first_position,
        count: u64::from(f.count),
        first_version: r.stream_version(),
        stream: r.stream().into(),
        offset: off,
        first_timestamp: r.timestamp(),
    })
}

/// The events of `$compaction` and `$meta-S` in the batch `frame` (at file
/// offset `off`; a batch holds one stream's events), added to `out`.
/// `spans`: the segment's streams as walked so far (for each record, the
/// newest version before it of every stream its runs name).
pub(super) fn system_events(
    frame: &[u8],
    off: u64,
    layout: &Layout,
    spans: &HashMap<Box<str>, StreamSpan>,
    out: &mut Vec<SystemEvent>,
) {
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
        let named: Vec<&Rec<'_>> = recs.iter().filter(|r| r.rec.segment_base == o.base).collect();
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
            if let Some(p) = run_problem(r, x, &rules, &runs) {
                report.problems.push(finding(&o.path, x.frame, p));
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

/// Whether the run `x` of the accepted record `r` is hidden by a recorded
/// rule (see the module documentation); the problem if it is not.
fn run_problem(
    r: &Rec<'_>,
    x: &RunAt<'_>,
    rules: &HashMap<&str, Vec<(u64, Option<StreamRules>)>>,
    runs: &RunIndex<'_>,
) -> Option<String> {
    let run = x.run;
    let p = r.found.position;
    let s = run.stream.as_str();
    let what = format!(
        "the compaction record at position {p} says events of stream {s:?} were removed (versions {} to {}, \
         positions {} to {})",
        run.first_version,
        run.last_version(),
        run.first_position,
        run.end().saturating_sub(1)
    );
    if is_system_stream(s) {
        return Some(format!(
            "{what}, but events of system streams are never removed (spec 3.10)"
        ));
    }
    let newest = rules
        .get(s)
        .and_then(|v| v.get(v.partition_point(|m| m.0 < p).checked_sub(1)?));
    let Some(&(set_at, rules)) = newest else {
        return Some(format!(
            "{what}, but the stream had no metadata before the record: nothing hid them (spec 3.10)"
        ));
    };
    let Some(rules) = rules else {
        return Some(format!(
            "{what}, but the stream's metadata before the record (at position {set_at}) does not decode"
        ));
    };
    let last = runs.newest_before(r, s);
    let vis = Visible::new(rules, last, r.found.timestamp);
    let by_version = run.last_version() < vis.min_version;
    let by_age = rules.max_age.is_some() && x.newest.is_some_and(|t| t < vis.min_timestamp);
    if !by_version && !by_age {
        return Some(format!(
            "{what}, but the stream's rules (set at position {set_at}) did not hide them when the record was \
             written (at its timestamp {}, with the stream's newest version {}) (spec 3.10)",
            r.found.timestamp,
            last.map_or_else(|| "none".to_owned(), |l| l.to_string())
        ));
    }
    if last == Some(run.last_version()) && !rules.deleted && !rules.tombstone {
        return Some(format!(
            "{what}, but version {} was the stream's newest event, which compaction keeps unless the stream is \
             deleted (spec 3.10)",
            run.last_version()
        ));
    }
    None
}

/// Records that account for no compacted segment: a record of a segment
/// that is still the original, or newer than the rewrite swapped in (a
/// crash between the record and the swap), is a warning; one naming no
/// segment of the log is a problem.
fn unswapped(outs: &[SegOut], recs: &[Rec<'_>], accepted: &[(usize, &Rec<'_>)], report: &mut CheckReport) {
    let first_base = outs.first().map_or(0, |o| o.base);
    for r in recs {
        let base = r.rec.segment_base;
        let taken = accepted
            .iter()
            .find(|(i, _)| outs.get(*i).is_some_and(|o| o.base == base));
        if let Some((_, a)) = taken
            && a.found.position >= r.found.position
        {
            // The record swapped in, or an older one it replaces.
            continue;
        }
        let Some(holder) = outs.get(r.seg) else { continue };
        match outs.iter().find(|o| o.base == base) {
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::path::Path;

    /// A record of `$compaction` at `position`, written at `timestamp`.
    fn found(position: u64, timestamp: u64, rec: CompactionRecord, before: &[(&str, u64)]) -> SystemEvent {
        SystemEvent::Compaction(FoundRecord {
            position,
            timestamp,
            payload_at: 1000,
            record: Ok(rec),
            before: before.iter().map(|(s, v)| (Box::from(*s), *v)).collect(),
        })
    }

    fn meta(position: u64, target: &str, rules: StreamRules) -> SystemEvent {
        SystemEvent::Meta {
            position,
            target: target.into(),
            rules: Some(rules),
        }
    }

    fn run(first_position: u64, count: u64, first_version: u64, stream: &str) -> RemovedRun {
        RemovedRun {
            first_position,
            count,
            first_version,
            stream: stream.into(),
        }
    }

    fn batch(first_position: u64, count: u64, first_version: u64, stream: &str, offset: u64, ts: u64) -> BatchSpan {
        BatchSpan {
            first_position,
            count,
            first_version,
            stream: stream.into(),
            offset,
            first_timestamp: ts,
        }
    }

    fn span(first_version: u64, last_version: u64) -> StreamSpan {
        StreamSpan {
            first_version,
            first_offset: 128,
            last_version,
        }
    }

    fn seg(base: u64, next: u64) -> SegOut {
        let mut o = SegOut::new(base, Path::new("/log").join(format!("{base}.seg")));
        o.complete = true;
        o.sealed = true;
        o.next_position = next;
        o.bytes = 4096;
        o.seal_chain = Some((4000, [5; 32]));
        o
    }

    /// Segment 0 (positions 0..100: streams `a`, `x` and their rules), the
    /// compacted segment 1 (100..110), and the active segment 2 (from 110)
    /// that holds its record at position 120.
    ///
    /// Segment 1 originally held: `x` v10..12 at 100..103, `a` v5 at 103,
    /// `x` v13 at 104, `a` v6..8 at 105..108, `x` v14..15 at 108..110. Left:
    /// `a` v5 (103) and `a` v6..8 (105..108); removed: the three runs of `x`
    /// (`x` is deleted below version 16).
    fn log() -> (Vec<SegOut>, CompactionRecord) {
        let mut s0 = seg(0, 100);
        s0.spans = vec![("a".into(), span(0, 4)), ("x".into(), span(0, 9))];
        let deleted = StreamRules {
            deleted: true,
            truncate_before: Some(16),
            ..StreamRules::default()
        };
        s0.system = vec![meta(50, "x", StreamRules::default())];
        let mut s1 = seg(100, 110);
        s1.compacted = true;
        s1.chain_end = Some([9; 32]);
        s1.batches = vec![batch(103, 1, 5, "a", 128, 1_000), batch(105, 3, 6, "a", 256, 2_000)];
        s1.spans = vec![("a".into(), span(5, 8))];
        let rec = CompactionRecord {
            segment_base: 100,
            next_base: 110,
            compacted_len: 4096,
            original_end: [5; 32],
            compacted_end: [9; 32],
            removed: vec![run(100, 3, 10, "x"), run(104, 1, 13, "x"), run(108, 2, 14, "x")],
        };
        let mut s2 = seg(110, 130);
        s2.sealed = false;
        s2.seal_chain = None;
        s2.prev_timestamp = 3_000;
        s2.spans = vec![("$meta-x".into(), span(1, 1))];
        s2.system = vec![meta(115, "x", deleted), found(120, 10_000, rec.clone(), &[])];
        (vec![s0, s1, s2], rec)
    }

    fn check(outs: &[SegOut]) -> (CheckReport, Compaction) {
        let mut report = CheckReport::default();
        let c = check_compaction(outs, true, false, &mut report);
        (report, c)
    }

    /// Replace the record in the active segment of `outs`.
    fn with_record(outs: &mut [SegOut], rec: CompactionRecord) {
        outs[2].system[1] = found(120, 10_000, rec, &[]);
    }

    #[test]
    fn a_compacted_segment_its_record_accounts_for_is_clean_and_listed() {
        let (outs, _) = log();
        let (r, c) = check(&outs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.compaction.len(), 1);
        let s = &r.compaction[0];
        assert_eq!(
            (s.base, s.next_base, s.record_position, s.removed_events, s.runs),
            (100, 110, 120, 6, 3)
        );
        assert!(s.to_string().contains("6 event(s) in 3 run(s) removed"), "{s}");
        assert_eq!(c.accounted.len(), 1);
        assert!(c.breaks.is_empty());
        // The streams of the segment, counting the runs.
        let spans = &c.spans[&1];
        let x = spans.iter().find(|(s, _)| &**s == "x").unwrap();
        assert_eq!((x.1.first_version, x.1.last_version), (10, 15));
        let a = spans.iter().find(|(s, _)| &**s == "a").unwrap();
        assert_eq!((a.1.first_version, a.1.last_version), (5, 8));
    }

    #[test]
    fn without_a_matching_record_the_seal_is_a_problem_and_a_break() {
        let (mut outs, rec) = log();
        outs[2].system.pop();
        let (r, c) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].offset, 4000);
        assert!(r.problems[0].detail.contains("no compaction record accounts for"));
        assert_eq!(c.breaks.len(), 1);
        assert_eq!(c.breaks[0].affects, 101);
        assert!(r.compaction.is_empty());
        for (field, bad) in [
            (
                "compacted_len",
                CompactionRecord {
                    compacted_len: 4095,
                    ..rec.clone()
                },
            ),
            (
                "original_end",
                CompactionRecord {
                    original_end: [6; 32],
                    ..rec.clone()
                },
            ),
            (
                "compacted_end",
                CompactionRecord {
                    compacted_end: [6; 32],
                    ..rec.clone()
                },
            ),
        ] {
            let (mut outs, _) = log();
            with_record(&mut outs, bad);
            let (r, _) = check(&outs);
            assert_eq!(r.problems.len(), 1, "{field}: {:?}", r.problems);
            assert!(r.problems[0].detail.contains("the newest compaction record"), "{field}");
        }
    }

    #[test]
    fn the_newest_matching_record_is_used_and_a_newer_one_not_swapped_in_is_a_warning() {
        let (mut outs, rec) = log();
        // A newer compaction of the same segment whose file never replaced it.
        let newer = CompactionRecord {
            compacted_len: 2048,
            ..rec.clone()
        };
        outs[2].system.push(found(125, 11_000, newer, &[]));
        let (r, _) = check(&outs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].detail.contains("was not swapped in"));
        assert_eq!(r.compaction[0].record_position, 120);
    }

    #[test]
    fn a_record_of_an_original_segment_is_a_warning_and_one_naming_no_segment_a_problem() {
        let (mut outs, rec) = log();
        // The swap never happened: segment 1 is the original.
        outs[1].compacted = false;
        outs[1].batches.clear();
        let (r, _) = check(&outs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].detail.contains("is the original"),
            "{}",
            r.warnings[0].detail
        );
        assert!(r.compaction.is_empty());

        let (mut outs, _) = log();
        with_record(
            &mut outs,
            CompactionRecord {
                segment_base: 101,
                ..rec
            },
        );
        let (r, _) = check(&outs);
        assert!(
            r.problems.iter().any(|p| p.detail.contains("no segment starts there")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_record_that_does_not_decode_is_a_problem_at_its_byte() {
        let (mut outs, _) = log();
        outs[2].system.push(SystemEvent::Compaction(FoundRecord {
            position: 126,
            timestamp: 1,
            payload_at: 777,
            record: Err((779, "bad".into())),
            before: Vec::new(),
        }));
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(
            (r.problems[0].file.as_path(), r.problems[0].offset),
            (outs[2].path.as_path(), 779)
        );
    }

    #[test]
    fn gaps_must_be_exactly_the_runs() {
        let (_, rec) = log();
        // A run missing: positions 104..105 skipped, unaccounted.
        let mut missing = rec.clone();
        missing.removed.remove(1);
        // A run that overlaps a batch kept.
        let mut overlap = rec.clone();
        overlap.removed[1] = run(105, 1, 13, "x");
        // A run past the last batch that leaves a gap before the seal.
        let mut short = rec.clone();
        short.removed[2] = run(108, 1, 14, "x");
        for (what, bad, at) in [
            ("missing", missing, 256),
            ("overlap", overlap, 256),
            ("short", short, 4000),
        ] {
            let (mut outs, _) = log();
            with_record(&mut outs, bad);
            let (r, _) = check(&outs);
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.offset == at && p.detail.contains("skips positions")),
                "{what}: {:?}",
                r.problems
            );
        }
    }

    #[test]
    fn versions_of_the_segment_and_the_runs_are_contiguous_together() {
        let (mut outs, mut rec) = log();
        rec.removed[1].first_version = 14;
        rec.removed[2].first_version = 15;
        with_record(&mut outs, rec);
        let (r, _) = check(&outs);
        let p: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.detail.contains("to continue at version 13"))
            .collect();
        assert_eq!(p.len(), 1, "{:?}", r.problems);
        assert_eq!(p[0].offset, 256, "the frame after the run");
    }

    #[test]
    fn every_run_must_be_hidden_by_a_rule_recorded_before_the_record() {
        // The deletion comes after the record: nothing hid the runs then.
        let (mut outs, _) = log();
        let SystemEvent::Meta { position, .. } = &mut outs[2].system[0] else {
            panic!()
        };
        *position = 121;
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems.iter().all(|p| p.detail.contains("did not hide them")),
            "{:?}",
            r.problems
        );

        // No metadata at all.
        let (mut outs, _) = log();
        outs[0].system.clear();
        outs[2].system.remove(0);
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems[0].detail.contains("had no metadata"),
            "{}",
            r.problems[0].detail
        );

        // A system stream's events are never removed.
        let (mut outs, mut rec) = log();
        rec.removed[0].stream = "$meta-x".into();
        with_record(&mut outs, rec);
        let (r, _) = check(&outs);
        assert!(
            r.problems.iter().any(|p| p.detail.contains("system streams")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn max_count_keeps_the_newest_and_never_removes_the_last_event() {
        let keep = |n| StreamRules {
            max_count: Some(n),
            ..StreamRules::default()
        };
        // max_count 1: x's newest before the record is 15 (in a run): hides
        // 10..14 but not 15, and 15 is the newest event of x.
        let (mut outs, _) = log();
        outs[2].system[0] = meta(115, "x", keep(1));
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].detail.contains("did not hide them"),
            "{}",
            r.problems[0].detail
        );
        assert_eq!(r.problems[0].offset, 4000);

        // With x appended to after the segment (version 16, before the
        // record), max_count 1 hides every run.
        let (mut outs, _) = log();
        outs[2].system[0] = meta(115, "x", keep(1));
        outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
        let (r, _) = check(&outs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);

        // truncate_before above the newest: hides it, but compaction keeps
        // the newest event of a stream that is not deleted.
        let (mut outs, _) = log();
        outs[2].system[0] = meta(
            115,
            "x",
            StreamRules {
                truncate_before: Some(20),
                ..StreamRules::default()
            },
        );
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].detail.contains("newest event"),
            "{}",
            r.problems[0].detail
        );
    }

    #[test]
    fn max_age_is_judged_by_the_newest_timestamp_the_runs_can_have() {
        let age = |a| StreamRules {
            max_age: Some(a),
            ..StreamRules::default()
        };
        // The record is written at 10_000. Bounds: the run at 100..103 is
        // before the batch at 103 (timestamp 1_000), the one at 104 before
        // the batch at 105 (2_000), the one at 108..110 before the next
        // segment (prev_timestamp 3_000). Its last event is x's newest: a
        // stream with only max_age keeps it, so `x` v16 is appended first.
        let (mut outs, _) = log();
        outs[2].system[0] = meta(115, "x", age(5_000));
        outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
        let (r, _) = check(&outs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        // max_age 7_500: the bound 3_000 of the last run is too new (3_000 +
        // 7_500 >= 10_000); the others hold.
        outs[2].system[0] = meta(115, "x", age(7_500));
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].offset, 4000);
        // Without a next segment the tail run has no bound.
        let (mut outs, _) = log();
        outs[2].base = 111;
        outs[2].system[0] = meta(115, "x", age(5_000));
        outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    }

    #[test]
    fn the_newest_version_before_a_record_counts_runs_and_surviving_events() {
        let (outs, rec) = log();
        let recs = vec![Rec {
            seg: 2,
            found: match &outs[2].system[1] {
                SystemEvent::Compaction(f) => f,
                SystemEvent::Meta { .. } => unreachable!(),
            },
            rec: &rec,
        }];
        let accepted: Vec<(usize, &Rec<'_>)> = vec![(1, &recs[0])];
        let idx = RunIndex::new(&outs, &accepted);
        assert_eq!(idx.run_before("x", 120), Some(15));
        assert_eq!(idx.run_before("x", 109), Some(14));
        assert_eq!(idx.run_before("x", 101), Some(10));
        assert_eq!(idx.run_before("x", 100), None);
        assert_eq!(idx.surviving_before("x", 1), Some(9));
        assert_eq!(idx.surviving_before("x", 0), None);
        assert_eq!(idx.newest_before(&recs[0], "x"), Some(15));
        assert_eq!(idx.newest_before(&recs[0], "nope"), None);
    }

    #[test]
    fn with_a_public_key_the_report_says_whether_a_signature_covers_the_record() {
        let (mut outs, _) = log();
        outs[2].last_signed = Some(125);
        let mut report = CheckReport::default();
        check_compaction(&outs, true, true, &mut report);
        assert_eq!(report.compaction[0].record_signed, Some(true));
        outs[2].last_signed = Some(118);
        let mut report = CheckReport::default();
        check_compaction(&outs, true, true, &mut report);
        assert_eq!(report.compaction[0].record_signed, Some(false));
        assert!(
            report.compaction[0]
                .to_string()
                .contains("comes after the last signed checkpoint")
        );
    }
}
