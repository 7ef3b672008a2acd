//! Compaction (spec 3.10): sealed segments rewritten without the events
//! that stream metadata hides, each swapped in for the original after a
//! durable `$compaction` record accounts for it.
//!
//! The protocol, for each sealed segment with something to remove:
//!
//! 1. plan it from a view: walk its frames (verifying the chain the way
//!    `check` does, so a damaged or rewritten segment is never laundered),
//!    and for each batch take the longest prefix its stream's rules hide,
//!    never a system stream's events nor the newest event of a stream that
//!    is not deleted;
//! 2. write the rewritten file under a `.tmp` name and fsync it;
//! 3. under the rules' write lock (no metadata change in between), check
//!    that the rules the plan used still stand, append the compaction
//!    record and make it durable;
//! 4. under the retention lock (no retention or stream-table merge in
//!    between): map the original in the views handed out, rename the
//!    rewritten file over it, fsync the directory, write its index file,
//!    and rebuild the stream table if a stream left the segment.
//!
//! Invariants: a segment file is replaced only by `rename` and only after a
//! durable record names the replacement's chain hashes and every removed
//! run; a crash at any step leaves the original or the rewritten segment,
//! whole (a `.tmp` file is removed by the next open; an index file that no
//! longer matches is rebuilt); the positions, versions and bytes of the
//! events kept do not change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::audit::chain::{ChainHash, Chainer};
use crate::error::{Error, Result, corrupt};
use crate::format::batch::{BodyRecords, RECORD_FLAG_ID, RECORD_FLAG_SCHEMA, RECORD_FLAG_TYPE, get_varint, put_varint};
use crate::format::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_STREAM, CompactionRecord, RemovedRun};
use crate::format::frame::body_context;
use crate::format::frame::{FrameCursor, FrameRef, batch_is_chained, chain_slot, encode_seal, finish_batch_header_v3};
use crate::format::meta::StreamRules;
use crate::format::{
    FRAME_HEADER_V3_LEN, FRAME_KIND_BATCH, FRAME_KIND_SEAL, FrameHeaderV3, SEGMENT_FLAG_COMPACTED, SegmentHeader,
};
use crate::index::{self, MemIndex};
use crate::read::rules::{ViewRules, Visible};
use crate::read::view::{LogView, ViewSegment, open_sealed};
use crate::types::Direction;

use super::derived::{index_file_name, rebuild_table, resolve_prev, write_derived};
use super::state::Inner;
use super::{Log, lock, write_lock};
use crate::format::names::{parse_retired_file_name, retired_file_name};

/// The system's clock in whole seconds: the grace of retired originals is
/// about other processes' views, not the events' timestamps (the writer's
/// clock).
pub(crate) fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Remove the retired originals among `retired` (`(path, retired at)`)
/// past `grace` on the system clock. Errors are only space: returned as
/// warnings (the next open or compaction tries again).
pub(crate) fn remove_expired_retired(
    io: &dyn crate::storage::io::Io,
    retired: impl IntoIterator<Item = (PathBuf, u64)>,
    grace: std::time::Duration,
) -> Vec<String> {
    let now = wall_secs();
    let mut warnings = Vec::new();
    for (path, at) in retired {
        if at.saturating_add(grace.as_secs()) > now {
            continue;
        }
        match io.remove(&path) {
            Ok(()) => {
                crate::trace::event!(INFO, file = %path.display(), "annal removed a retired compacted original");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!("{}: not removed: {e}", path.display())),
        }
    }
    warnings
}

/// What [`Log::compact`] did.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The segment files rewritten, oldest first.
    pub compacted: Vec<PathBuf>,
    /// Events removed by this compaction.
    pub removed_events: u64,
    /// Bytes of the rewritten segment files before this compaction.
    pub bytes_before: u64,
    /// Bytes of the same files after it.
    pub bytes_after: u64,
    /// The positions of the `$compaction` records appended, one per
    /// segment rewritten.
    pub record_positions: Vec<u64>,
    /// Sealed segments left as they were (nothing to remove).
    pub unchanged: usize,
}

/// One segment's rewrite, planned and written to its `.tmp` file.
struct Rewrite {
    record: CompactionRecord,
    /// Events this compaction removes (the record's runs include earlier
    /// ones).
    removed_now: u64,
    /// The rules each removal relied on, to be still in force when the
    /// record is appended.
    relied_on: HashMap<String, Option<StreamRules>>,
    /// Whether some stream of the original has no event left.
    stream_gone: bool,
    tmp: PathBuf,
    bytes_before: u64,
}

/// What the plan knows of a stream with rules: its visibility, and the
/// newest version it may not remove (`None`: it may remove all of them, the
/// stream being tombstoned).
#[derive(Clone, Copy)]
struct StreamPlan {
    visible: Visible,
    keep_from: Option<u64>,
}

/// What one compaction plans with: the view, its rules, each stream's plan,
/// and the compaction records.
struct Planning {
    view: LogView,
    rules: Option<Arc<ViewRules>>,
    plans: HashMap<Box<[u8]>, Option<StreamPlan>>,
    records: HashMap<u64, Vec<CompactionRecord>>,
}

impl Inner {
    /// Compact every sealed segment the stream table covers.
    fn compact_all(&self) -> Result<CompactionReport> {
        let _one = lock(&self.compact_lock);
        self.remove_retired();
        let mut report = CompactionReport::default();
        let segments: Vec<(ViewSegment, u64)> = {
            let p = lock(&self.published);
            let covered = p.table.as_ref().map_or(0, |t| t.next_segment());
            let sealed: Vec<ViewSegment> = p.sealed.iter().filter(|s| s.base < covered).cloned().collect();
            let mut nexts: Vec<u64> = p.sealed.iter().map(|s| s.base).skip(1).collect();
            nexts.push(p.active_base);
            let all: Vec<u64> = p.sealed.iter().map(|s| s.base).collect();
            sealed
                .into_iter()
                .filter_map(|s| {
                    let i = all.iter().position(|&b| b == s.base)?;
                    Some((s, nexts[i]))
                })
                .collect()
        };
        let view = self.view()?;
        let mut planning = Planning {
            rules: view.rules()?,
            records: Self::records_by_segment(&view)?,
            plans: HashMap::new(),
            view,
        };
        for (seg, next_base) in segments {
            match self.rewrite(&mut planning, &seg, next_base)? {
                None => report.unchanged += 1,
                Some(rw) => {
                    let path = (*seg.path).clone();
                    if let Some(position) = self.install(&seg, rw, &mut report)? {
                        report.record_positions.push(position);
                        report.compacted.push(path);
                    }
                }
            }
        }
        Ok(report)
    }

    /// The plan of the stream named `name` (its bytes) in `view`, whose
    /// rules are `rules`: `None` if nothing of it may go. Computed once per
    /// stream and compaction.
    fn stream_plan(
        view: &LogView,
        rules: &ViewRules,
        name: &[u8],
        plans: &mut HashMap<Box<[u8]>, Option<StreamPlan>>,
    ) -> Result<Option<StreamPlan>> {
        if let Some(p) = plans.get(name) {
            return Ok(*p);
        }
        let plan = match (name.first(), rules.get(name)) {
            // System streams keep every event; so do streams without rules.
            (Some(b'$'), _) | (_, None) => None,
            (_, Some(vis)) => {
                let last = match (vis.last, std::str::from_utf8(name)) {
                    (Some(l), _) => Some(l),
                    (None, Ok(n)) => view.raw_stream_version(n)?,
                    (None, Err(_)) => None,
                };
                // What the view's reads hide (its clock read once), with
                // the stream's newest version known.
                let visible = Visible {
                    last,
                    min_version: vis.rules.min_version(last),
                    ..*vis
                };
                // The newest event carries the stream's version: only a
                // tombstoned stream, never appended to again, loses it.
                Some(StreamPlan {
                    visible,
                    keep_from: if visible.rules.tombstone { None } else { last },
                })
            }
        };
        plans.insert(name.into(), plan);
        Ok(plan)
    }

    /// Every decoded compaction record of `view`, newest first, by the base
    /// of the segment it describes.
    fn records_by_segment(view: &LogView) -> Result<HashMap<u64, Vec<CompactionRecord>>> {
        let mut out: HashMap<u64, Vec<CompactionRecord>> = HashMap::new();
        for r in view.read_stream_raw(COMPACTION_STREAM, u64::MAX, Direction::Backward, u64::MAX) {
            if let Ok(rec) = CompactionRecord::decode(r?.payload()) {
                out.entry(rec.segment_base).or_default().push(rec);
            }
        }
        Ok(out)
    }

    /// Steps 1 and 2 for one segment: `None` if nothing is to be removed.
    fn rewrite(&self, planning: &mut Planning, seg: &ViewSegment, next_base: u64) -> Result<Option<Rewrite>> {
        let layout = seg.layout;
        if !layout.compact() || layout.version < crate::format::meta::META_FORMAT_VERSION {
            return Ok(None);
        }
        let bytes = seg.bytes()?;
        let path = &*seg.path;
        let header = *SegmentHeader::parse(bytes).map_err(|d| d.at(path))?;
        let earlier = if layout.compacted {
            let newest = planning
                .records
                .get(&seg.base)
                .and_then(|rs| rs.iter().find(|r| r.compacted_len == bytes.len() as u64));
            match newest.cloned() {
                Some(r) => Some(r),
                None => {
                    return Err(corrupt(
                        path,
                        0,
                        "a compacted segment that no compaction record accounts for (spec 3.10): not compacted again",
                    ));
                }
            }
        } else {
            None
        };
        let chainer = Chainer::new(self.opts.chain_key.as_ref()).for_layout(&layout);
        let chained = layout.chained;
        let mut running: ChainHash = header.chain_start;
        // Pass 1: verify, and find what each batch loses.
        let mut cuts: Vec<(FrameRef<'_>, u32)> = Vec::new();
        let mut runs: Vec<RemovedRun> = earlier.as_ref().map(|r| r.removed.clone()).unwrap_or_default();
        let mut removed_now = 0u64;
        let mut relied_on: HashMap<String, Option<StreamRules>> = HashMap::new();
        let mut seal_slot: Option<[u8; 32]> = None;
        let mut seal_next = next_base;
        let mut streams_before: HashMap<Box<[u8]>, bool> = HashMap::new();
        let mut cursor = FrameCursor::segment(bytes, &header, true);
        while let Some(step) = cursor.peek() {
            let f = step.map_err(|d| d.at(path))?;
            let f = cursor.validate(f).map_err(|d| d.at(path))?;
            match f.frame.kind {
                FRAME_KIND_BATCH => {
                    if chained {
                        running = chainer.link(&running, f.bytes);
                        if let Some(slot) = chain_slot(f.bytes, &f.frame)
                            && slot != running
                        {
                            return Err(corrupt(
                                path,
                                f.offset + FRAME_HEADER_V3_LEN as u64,
                                format!(
                                    "the chain does not verify before position {} (spec 21.3): the segment is not \
                                     compacted",
                                    f.frame.next_position()
                                ),
                            ));
                        }
                    }
                    let cx = body_context(&f.frame, f.offset, &layout);
                    let body = f.bytes.get(f.frame.header_len as usize..).unwrap_or_default();
                    let records = BodyRecords::new(body, &cx);
                    let Some((_, first)) = records.clone().next() else {
                        return Err(corrupt(path, f.offset, "a validated batch did not parse again"));
                    };
                    let name = first.stream_bytes();
                    let plan = match &planning.rules {
                        Some(rules) => Self::stream_plan(&planning.view, rules, name, &mut planning.plans)?,
                        None => None,
                    };
                    let (mut k, mut timestamp) = (0u32, 0u64);
                    if let Some(plan) = plan {
                        for (_, r) in records {
                            let v = r.stream_version();
                            let hidden = !plan.visible.shows(v, r.timestamp());
                            let keep = plan.keep_from.is_some_and(|last| v >= last);
                            if !hidden || keep {
                                break;
                            }
                            k += 1;
                            timestamp = r.timestamp();
                        }
                    }
                    let kept = k < f.frame.count;
                    match streams_before.get_mut(name) {
                        Some(e) => *e |= kept,
                        None => {
                            streams_before.insert(name.into(), kept);
                        }
                    }
                    if let Some(plan) = plan.filter(|_| k > 0) {
                        let stream = String::from_utf8_lossy(name).into_owned();
                        relied_on.insert(stream.clone(), Some(plan.visible.rules));
                        removed_now += u64::from(k);
                        runs.push(RemovedRun {
                            first_position: f.frame.first_position,
                            count: u64::from(k),
                            first_version: first.stream_version(),
                            timestamp,
                            stream,
                        });
                    }
                    cuts.push((f, k));
                }
                FRAME_KIND_SEAL => {
                    seal_slot = chain_slot(f.bytes, &f.frame);
                    seal_next = f.frame.first_position;
                }
                // Signed checkpoints are not kept (spec 3.10).
                _ => {}
            }
        }
        if !cursor.sealed() {
            return Err(corrupt(
                path,
                cursor.offset(),
                "expected the sealed segment to end with its seal",
            ));
        }
        if seal_next != next_base {
            return Err(corrupt(
                path,
                bytes.len() as u64,
                format!("expected the seal to name the next segment's base {next_base}, found {seal_next}"),
            ));
        }
        let original_end = seal_slot.unwrap_or_default();
        match &earlier {
            Some(r) if chained && (r.compacted_end != running || r.original_end != original_end) => {
                return Err(corrupt(
                    path,
                    bytes.len() as u64,
                    "the compacted segment's chain does not match its compaction record (spec 3.10)",
                ));
            }
            None if chained && original_end != running => {
                return Err(corrupt(
                    path,
                    bytes.len() as u64,
                    "the seal's chain slot is not the chain after the segment's last batch (spec 21.3): the segment \
                     is not compacted",
                ));
            }
            _ => {}
        }
        if removed_now == 0 {
            return Ok(None);
        }
        runs.sort();
        // Pass 2: the rewritten file.
        let mut new_header = header;
        new_header.segment_flags =
            zerocopy::little_endian::U16::new(header.segment_flags.get() | SEGMENT_FLAG_COMPACTED);
        new_header.header_crc = zerocopy::little_endian::U32::new(new_header.computed_crc());
        let mut out: Vec<u8> = new_header.as_bytes().to_vec();
        let mut prev_batch: Option<u64> = None;
        let mut chain: ChainHash = header.chain_start;
        for (f, k) in &cuts {
            if *k == f.frame.count {
                continue;
            }
            let off = out.len() as u64;
            let slot = chained && batch_is_chained(off, prev_batch);
            let header_len = FrameHeaderV3::len_with(u8::from(slot));
            let start = out.len();
            out.resize(start + header_len, 0);
            let body = f.bytes.get(f.frame.header_len as usize..).unwrap_or_default();
            if *k == 0 {
                out.extend_from_slice(body);
            } else {
                let cx = body_context(&f.frame, f.offset, &layout);
                cut_body(&mut out, body, &cx, *k).ok_or_else(|| {
                    corrupt(
                        path,
                        f.offset,
                        "a validated batch did not parse again (it changed under the compaction)",
                    )
                })?;
                let len = out.len() - start;
                out.resize(start + len.next_multiple_of(8), 0);
            }
            let frame = &mut out[start..];
            finish_batch_header_v3(
                frame,
                slot,
                f.frame.first_position + u64::from(*k),
                f.frame.count - k,
                off,
            );
            if chained {
                chain = chainer.link(&chain, frame);
                if slot {
                    FrameHeaderV3::set_chain(frame, &chain);
                }
            }
            prev_batch = Some(off);
        }
        let seal_at = out.len() as u64;
        let mut seal = encode_seal(next_base, seal_at, &layout);
        if chained {
            FrameHeaderV3::set_chain(&mut seal, &original_end);
        }
        out.extend_from_slice(&seal);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let fs = &*self.opts.io;
        let _ = fs.remove(&tmp);
        let file = fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_at(0, &out).map_err(|e| Error::io("write", &tmp, e))?;
        file.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
        let stream_gone = streams_before.values().any(|kept| !kept);
        Ok(Some(Rewrite {
            record: CompactionRecord {
                segment_base: seg.base,
                next_base,
                compacted_len: out.len() as u64,
                original_end: if chained { original_end } else { [0; 32] },
                compacted_end: if chained { chain } else { [0; 32] },
                removed: runs,
            },
            removed_now,
            relied_on,
            stream_gone,
            tmp,
            bytes_before: bytes.len() as u64,
        }))
    }

    /// Steps 3 and 4 for one rewritten segment: the record, then the swap.
    /// `Ok(None)` if the segment is no longer the log's (retention removed
    /// it) or a rule the plan used changed meanwhile: nothing is swapped in.
    fn install(&self, seg: &ViewSegment, rw: Rewrite, report: &mut CompactionReport) -> Result<Option<u64>> {
        let fs = &*self.opts.io;
        let discard = |rw: &Rewrite| {
            let _ = fs.remove(&rw.tmp);
        };
        // Step 3, atomically with the rules in force.
        let position = {
            let mut rules = write_lock(&self.rules);
            if rules.is_none() {
                *rules = Some(self.view()?.all_stream_rules()?);
            }
            let unchanged = rw
                .relied_on
                .iter()
                .all(|(s, r)| rules.as_ref().and_then(|m| m.get(s.as_str())).copied() == *r);
            if !unchanged {
                discard(&rw);
                return Ok(None);
            }
            let payload = rw.record.encode();
            let Some((target, position)) =
                self.append_system(COMPACTION_STREAM, COMPACTION_EVENT_TYPE, &payload, true)?
            else {
                discard(&rw);
                return Ok(None);
            };
            drop(rules);
            self.commit_until(target, true)?;
            position
        };
        // Step 4, not beside retention or the sealer's table merge.
        let _one = lock(&self.retention_lock);
        let still_here = lock(&self.published).sealed.iter().any(|s| s.base == seg.base);
        if !still_here {
            discard(&rw);
            return Ok(None);
        }
        // Views handed out keep the original: map it (and its index) now.
        let old = seg.map.try_bytes()?;
        let _ = seg.index.get(old);
        // A stream that leaves the segment shifts the rows of its index,
        // which the stream table names: the table goes first (as for
        // retention, spec 3.9), so that a crash leaves none rather than a
        // stale one, and is rebuilt after.
        let covered = if rw.stream_gone { self.drop_table()? } else { None };
        let swap = || -> Result<()> {
            // The original's index goes first: a crash after the rename
            // then leaves no index file (which an open writes) rather than
            // one of the original (which an open would not look at).
            // Views of other processes that planned to map the original
            // find it under a retired name for a while (spec 3.10).
            let retired = self.dir.join(retired_file_name(seg.base, wall_secs()));
            let _ = fs.remove(&retired);
            if !self.opts.retired_grace.is_zero()
                && let Err(e) = fs.hard_link(&seg.path, &retired)
            {
                self.warn(format!(
                    "{}: not kept under {} for readers that had not mapped it yet: {e}",
                    seg.path.display(),
                    retired.display()
                ));
            }
            let idx_path = self.dir.join(index_file_name(seg.base));
            super::retention::remove_durably(fs, &self.dir, &idx_path)?;
            fs.rename(&rw.tmp, &seg.path)
                .map_err(|e| Error::io("rename", &rw.tmp, e))?;
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
            let (new_seg, _) = open_sealed(&self.dir, seg.base)?;
            self.index_compacted(&new_seg)?;
            {
                let mut p = lock(&self.published);
                if let Some(s) = p.sealed.iter_mut().find(|s| s.base == seg.base) {
                    *s = new_seg;
                }
            }
            if let Some(next) = covered {
                let sealed = lock(&self.published).sealed.clone();
                let under: Vec<ViewSegment> = sealed.into_iter().filter(|s| s.base < next).collect();
                let bytes = rebuild_table(&under, next, self.opts.hash_mask)?;
                self.install_table(&bytes, None)?;
            }
            Ok(())
        };
        if let Err(e) = swap() {
            // Without its stream table in memory the writer may not decide
            // a version: poisoned until a reopen rebuilds it.
            if covered.is_some() {
                self.poison(&e);
            }
            return Err(e);
        }
        self.bump_published_epoch();
        crate::trace::event!(INFO, file = %seg.path.display(), removed_events = rw.removed_now,
            bytes_before = rw.bytes_before, bytes_after = rw.record.compacted_len, "annal compacted a segment");
        report.removed_events += rw.removed_now;
        report.bytes_before += rw.bytes_before;
        report.bytes_after += rw.record.compacted_len;
        Ok(Some(position))
    }

    /// Remove the retired originals of compacted segments (spec 3.10) kept
    /// longer than [`Options::retired_grace`](crate::Options::retired_grace).
    fn remove_retired(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let retired = rd.flatten().filter_map(|e| {
            let (_, at) = e.file_name().to_str().and_then(parse_retired_file_name)?;
            Some((e.path(), at))
        });
        for w in remove_expired_retired(&*self.opts.io, retired, self.opts.retired_grace) {
            self.warn(w);
        }
    }

    /// Write the index file of the rewritten segment `seg` (spec 17).
    fn index_compacted(&self, seg: &ViewSegment) -> Result<()> {
        let bytes = seg.bytes()?;
        seg.map.sequential();
        let mem = MemIndex::rebuild(bytes).map_err(|d| d.at(&*seg.path))?;
        let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
        let (table, earlier) = {
            let p = lock(&self.published);
            let earlier: Vec<ViewSegment> = p.sealed.iter().filter(|s| s.base < seg.base).cloned().collect();
            (p.table.clone(), earlier)
        };
        let (idx, _) = mem.encode(
            seg.base,
            bytes.len() as u64,
            seal_crc,
            self.opts.hash_mask,
            &mut |name| resolve_prev(table.as_deref(), &earlier, name),
            bytes,
        );
        let idx_path = self.dir.join(index_file_name(seg.base));
        write_derived(&*self.opts.io, &self.dir, &idx_path, &idx)
    }
}

/// Append to `out` the body of a batch (`body`, described by `cx`, parsed
/// and validated before) without its first `k` records (spec 3.10): the
/// same `timestamp_delta` and stream, `first_version + k`, the first record
/// kept given its type if it had none, the rest byte for byte. No padding.
/// `None` if the body does not parse.
fn cut_body(out: &mut Vec<u8>, body: &[u8], cx: &crate::format::batch::BodyContext, k: u32) -> Option<()> {
    let mut records = BodyRecords::new(body, cx);
    let (delta, _) = get_varint(body).ok()?;
    let mut first = None;
    let mut starts = Vec::new();
    for (i, (off, r)) in (&mut records).enumerate() {
        if i as u32 == k {
            first = Some(r);
        }
        starts.push(off);
    }
    let end = records.offset();
    let first = first?;
    put_varint(out, delta);
    put_varint(out, first.stream_bytes().len() as u64);
    out.extend_from_slice(first.stream_bytes());
    put_varint(out, first.stream_version());
    // Offsets from `BodyRecords` are in the frame: the body starts at
    // `cx.header_len`.
    let at = |o: usize| o.checked_sub(cx.header_len);
    let rec_start = at(*starts.get(k as usize)?)?;
    let rec_end = match starts.get(k as usize + 1) {
        Some(&o) => at(o)?,
        None => at(end)?,
    };
    let rec = body.get(rec_start..rec_end)?;
    let flags = *rec.first()?;
    if flags & RECORD_FLAG_TYPE != 0 {
        out.extend_from_slice(rec);
    } else {
        // The id and the schema version come before the type (spec 3.6).
        let mut head = 1;
        if flags & RECORD_FLAG_ID != 0 {
            head += 16;
        }
        if flags & RECORD_FLAG_SCHEMA != 0 {
            head += get_varint(rec.get(head..)?).ok()?.1;
        }
        out.push(flags | RECORD_FLAG_TYPE);
        out.extend_from_slice(rec.get(1..head)?);
        let t = first.event_type().as_bytes();
        put_varint(out, t.len() as u64);
        out.extend_from_slice(t);
        out.extend_from_slice(rec.get(head..)?);
    }
    out.extend_from_slice(body.get(rec_end..at(end)?)?);
    Some(())
}

impl Log {
    /// Compact the log (spec 3.10): rewrite every sealed segment (never the
    /// active one) without the events that stream metadata hides (deleted
    /// streams, `truncate_before`, `max_count`, `max_age`), keeping the
    /// newest event of each stream that is not tombstoned (it carries the
    /// stream's version), and swap each in
    /// crash-safely after a durable `$compaction` record accounts for it.
    /// Positions, versions and bytes of the events kept do not change;
    /// positions may then have gaps. Views taken before keep reading the
    /// original files. Only segments already indexed are compacted. Logs of
    /// a format version before 4 are left as they are (`unchanged`).
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open_with(dir.path(), Options::default().segment_size(4096))?;
    /// for i in 0..40u8 {
    ///     log.append("cart-1", ExpectedVersion::Any, &[EventData::new("Added", vec![i; 200])])?;
    ///     log.append("cart-2", ExpectedVersion::Any, &[EventData::new("Added", vec![i; 200])])?;
    /// }
    /// log.delete_stream("cart-1", ExpectedVersion::Any)?;
    /// let report = log.compact()?;
    /// assert!(report.removed_events > 0);
    /// let view = log.view()?;
    /// assert_eq!(view.read_stream("cart-2", 0, annal::Direction::Forward, u64::MAX).count(), 40);
    /// # Ok(()) }
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        if !self.inner.has_rules() {
            return Ok(CompactionReport::default());
        }
        self.inner.wait_for_index()?;
        self.inner.compact_all()
    }
}
