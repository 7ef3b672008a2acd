//! Log retention (spec 3.9): whole sealed segments dropped from the front of
//! the log, oldest first, by age ([`Retention::max_age`]) or by the log's
//! total size ([`Retention::max_bytes`]), never the active segment.
//!
//! The protocol (spec 3.9, "Order of operations"), run by the sealer thread
//! after each seal, at open and by [`Log::apply_retention`]:
//!
//! 1. decide the new first segment `P` (only among segments that are indexed
//!    and covered by the stream table);
//! 2. append again, to `$meta-S`, the rules of every stream whose newest
//!    metadata event lies below `P` (so no deletion or tombstone is lost);
//! 3. append the retention record to `$retention` and make it durable;
//! 4. drop the segments below `P` from what new views see, and the stream
//!    table from memory; remove the stream table file (a directory fsync);
//! 5. remove each segment below `P`, oldest first, then its index file, each
//!    removal followed by a directory fsync;
//! 6. rebuild the stream table from the segments left, and install it.
//!
//! Invariants: no file is removed before a durable retention record names
//! it; a crash at any step leaves a log that opens, whose first segment is
//! its start; an open finishes a recorded removal that a crash interrupted
//! (the newest record's `removed_before` above the first segment's base).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::SegmentHeader;
use crate::format::meta::{META_EVENT_TYPE, meta_stream};
use crate::format::names::{index_file_name, parse_checkpoint_file_name, segment_file_name};
use crate::format::record::EventData;
use crate::format::retention::{RETENTION_EVENT_TYPE, RETENTION_STREAM, RetentionRecord};
use crate::read::front::{missing_front, newest_retention};
use crate::read::view::{ViewSegment, read_segment_header};
use crate::types::{Direction, ExpectedVersion};

use super::derived::rebuild_table;
pub use super::retention_rule::{Retention, RetentionReport};
use super::state::Inner;
use super::{Durability, Log, lock, write_lock};

/// The segments to remove: those below `removed_before`.
struct Plan {
    record: RetentionRecord,
}

/// The header of the segment based at `base`, file `path` (checked as
/// readers check it).
fn header_of(path: &std::path::Path, base: u64) -> Result<SegmentHeader> {
    let file = crate::storage::io::open_read(path).map_err(|e| Error::io("open", path, e))?;
    read_segment_header(&file, path, base)
}

/// Bytes of a file, 0 if it is missing.
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
}

impl Inner {
    /// The sealed segments retention may remove (indexed, and covered by the
    /// stream table), the active segment's base, and every segment's base.
    fn removable(&self) -> (Vec<ViewSegment>, u64) {
        let p = lock(&self.published);
        let covered = p.table.as_ref().map_or(0, |t| t.next_segment());
        let sealed = p.sealed.iter().filter(|s| s.base < covered).cloned().collect();
        (sealed, p.active_base)
    }

    /// Step 1: the new first segment under `rule`, if any segment goes.
    fn plan(&self, rule: &Retention) -> Result<Option<Plan>> {
        let (sealed, active_base) = self.removable();
        let Some(first) = sealed.first().map(|s| s.base) else {
            return Ok(None);
        };
        // Every segment: base, path, and its header's `prev_timestamp` (the
        // layouts the writer holds: no file is read for them).
        let all: Vec<(u64, PathBuf, u64)> = {
            let p = lock(&self.published);
            let mut v: Vec<(u64, PathBuf, u64)> = p
                .sealed
                .iter()
                .map(|s| (s.base, (*s.path).clone(), s.layout.prev_timestamp))
                .collect();
            v.push((p.active_base, (*p.active_path).clone(), p.active_layout.prev_timestamp));
            v
        };
        // The segment after the `i`-th removable one (removable or not).
        let next = |i: usize| {
            let b = sealed.get(i).map_or(active_base, |s| s.base);
            all.iter().find(|(x, ..)| *x > b)
        };
        let next_base = |i: usize| next(i).map_or(active_base, |(x, ..)| *x);
        let mut by_age = 0usize;
        if let Some(age) = rule.max_age {
            let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            let now = (self.opts.clock)();
            for i in 0..sealed.len() {
                // A segment's newest event is the next segment's floor.
                let Some(&(_, _, newest)) = next(i) else { break };
                if newest.checked_add(age).is_some_and(|t| t < now) {
                    by_age = i + 1;
                } else {
                    break;
                }
            }
        }
        let mut by_size = 0usize;
        if let Some(max) = rule.max_bytes {
            let size_of = |base: u64, path: &std::path::Path| {
                file_len(path).saturating_add(file_len(&self.dir.join(index_file_name(base))))
            };
            let mut total: u64 = all.iter().map(|(b, p, _)| size_of(*b, p)).sum();
            for s in &sealed {
                if total <= max {
                    break;
                }
                total = total.saturating_sub(size_of(s.base, &s.path));
                by_size += 1;
            }
        }
        // A log that ships removes only what the store holds confirmed.
        let k = match self.confirmed_count(&sealed) {
            Some(confirmed) => by_age.max(by_size).min(confirmed),
            None => by_age.max(by_size),
        };
        let (by_age, by_size) = (by_age.min(k), by_size.min(k));
        if k == 0 {
            return Ok(None);
        }
        let removed_before = next_base(k - 1);
        let path = next(k - 1).map(|(_, p, _)| p.clone()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "retention: segment {} is not in the log",
                segment_file_name(removed_before)
            ))
        })?;
        let h = header_of(&path, removed_before)?;
        Ok(Some(Plan {
            record: RetentionRecord {
                removed_before,
                previous_start: first,
                newest_removed_timestamp: h.prev_timestamp.get(),
                max_age: (by_age > 0)
                    .then(|| rule.max_age.map(|a| u64::try_from(a.as_nanos()).unwrap_or(u64::MAX)))
                    .flatten(),
                max_bytes: (by_size > 0).then_some(rule.max_bytes).flatten(),
                chain_at: h.chain_start,
            },
        }))
    }

    /// How many of the removable `sealed` segments (oldest first) the store
    /// holds confirmed, if the log ships (`Options::replicate_to`).
    #[cfg(feature = "remote")]
    fn confirmed_count(&self, sealed: &[ViewSegment]) -> Option<usize> {
        let limit = self.retention_limit()?;
        Some(sealed.iter().take_while(|s| s.base < limit).count())
    }

    /// Without the `remote` feature nothing ships: nothing limits retention.
    #[cfg(not(feature = "remote"))]
    fn confirmed_count(&self, _sealed: &[ViewSegment]) -> Option<usize> {
        None
    }

    /// Append one event of a system stream. `Ok(None)`: it would roll a
    /// segment while the sealer is behind, and `wait` is false (the
    /// sealer's own call cannot wait for itself).
    pub(super) fn append_system(
        &self,
        stream: &str,
        event_type: &str,
        payload: &[u8],
        wait: bool,
    ) -> Result<Option<(u64, u64)>> {
        let events = [EventData::new(event_type, payload)];
        let batch_len = self.check_batch(stream, &events)?;
        loop {
            let mut st = self.lock_open()?;
            match self.enqueue_locked(&mut st, stream, ExpectedVersion::Any, &events, batch_len, None)? {
                Some((target, r)) => return Ok(Some((target, r.first_position))),
                None if wait => {
                    drop(st);
                    self.wait_for_sealer()?;
                }
                None => return Ok(None),
            }
        }
    }

    /// Steps 2 and 3: carry forward the rules whose newest metadata event
    /// lies below the new start, then the retention record, durable.
    /// `Ok(None)` when it could not be queued without waiting.
    fn record(&self, rec: &RetentionRecord, wait: bool) -> Result<Option<u64>> {
        // The sealer thread cannot wait for the rules: an append holds them
        // while it waits for the sealer (back-pressure).
        let mut rules = if wait {
            write_lock(&self.rules)
        } else {
            loop {
                match self.rules.try_write() {
                    Ok(g) => break g,
                    Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                    // An append waiting for the sealer may hold them: give up
                    // (the next seal tries again).
                    Err(std::sync::TryLockError::WouldBlock) if lock(&self.backlog).waiting > 0 => return Ok(None),
                    Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_micros(20)),
                }
            }
        };
        if rules.is_none() {
            *rules = Some(self.view()?.all_stream_rules()?);
        }
        let view = self.view()?;
        let mut carry: Vec<(String, [u8; crate::format::meta::RULES_LEN])> = Vec::new();
        for (stream, r) in rules.iter().flatten() {
            let meta = meta_stream(stream);
            let newest = view.read_stream_raw(&meta, u64::MAX, Direction::Backward, 1).next();
            if let Some(Ok(e)) = newest
                && e.position() < rec.removed_before
            {
                carry.push((meta, r.encode()));
            }
        }
        carry.sort();
        drop(view);
        let mut target = 0;
        for (meta, payload) in &carry {
            match self.append_system(meta, META_EVENT_TYPE, payload, wait)? {
                Some((t, _)) => target = t,
                None => return Ok(None),
            }
        }
        let Some((t, position)) = self.append_system(RETENTION_STREAM, RETENTION_EVENT_TYPE, &rec.encode(), wait)?
        else {
            // The carried rules are in: harmless repeats of the same rules.
            self.commit_until(target, true)?;
            return Ok(None);
        };
        drop(rules);
        self.commit_until(t, true)?;
        Ok(Some(position))
    }

    /// Steps 4 to 6: remove the segments below `removed_before`, oldest
    /// first (they must be covered by the stream table).
    fn remove_front(&self, removed_before: u64, report: &mut RetentionReport) -> Result<()> {
        // Not while the sealer merges a segment into the stream table.
        let _one = lock(&self.retention_lock);
        let removed: Vec<ViewSegment> = {
            let mut p = lock(&self.published);
            let covered = p.table.as_ref().map_or(0, |t| t.next_segment());
            if removed_before > covered {
                return Err(Error::InvalidArgument(format!(
                    "retention: segments below {removed_before} are not all indexed yet (the stream table covers \
                     those below {covered})"
                )));
            }
            let (gone, kept): (Vec<ViewSegment>, Vec<ViewSegment>) = std::mem::take(&mut p.sealed)
                .into_iter()
                .partition(|s| s.base < removed_before);
            p.sealed = kept;
            gone
        };
        // From here the stream table is not in memory: a failure poisons
        // the writer (no append may decide a version, nor the sealer merge a
        // segment, without it) until a reopen finishes the removal.
        let covered = self.drop_table()?;
        if let Err(e) = self.remove_files(&removed, covered, report) {
            self.poison(&e);
            return Err(e);
        }
        report.removed_before = Some(removed_before);
        Ok(())
    }

    /// Steps 4 and 5 of [`Inner::remove_front`] (the stream table already
    /// dropped): each segment below the new start and its index file, then
    /// the rebuilt table (covering what the old one covered).
    fn remove_files(&self, removed: &[ViewSegment], covered: Option<u64>, report: &mut RetentionReport) -> Result<()> {
        let fs = &*self.opts.io;
        for seg in removed {
            // Views taken before keep reading what they hold: map it now, so
            // that the removal does not take a segment from under them.
            let _ = seg.map.try_bytes();
            let idx = self.dir.join(index_file_name(seg.base));
            report.removed_bytes += file_len(&seg.path) + file_len(&idx);
            remove_durably(fs, &self.dir, &seg.path)?;
            remove_durably(fs, &self.dir, &idx)?;
            crate::trace::event!(INFO, file = %seg.path.display(), base = seg.base, "annal retention removed a segment");
            report.removed_segments.push((*seg.path).clone());
        }
        self.remove_orphans()?;
        let sealed = lock(&self.published).sealed.clone();
        if let Some(next) = covered {
            let under: Vec<ViewSegment> = sealed.into_iter().filter(|s| s.base < next).collect();
            let bytes = rebuild_table(&under, next, self.opts.hash_mask)?;
            self.install_table(&bytes, None)?;
        }
        Ok(())
    }

    /// Apply `rule` once; `wait`: the caller may wait for the sealer.
    pub(super) fn apply_retention_rule(&self, rule: &Retention, wait: bool) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if !rule.is_set() || !self.has_rules() {
            return Ok(report);
        }
        // A removal a crash interrupted first (`removed_before` never
        // decreases from one record to the next).
        if let Some(r) = self.finish_recorded(false)? {
            return Ok(r);
        }
        let Some(plan) = self.plan(rule)? else {
            return Ok(report);
        };
        let Some(position) = self.record(&plan.record, wait)? else {
            return Ok(report);
        };
        report.record_position = Some(position);
        report.rule = Some(plan.record.rule());
        self.remove_front(plan.record.removed_before, &mut report)?;
        Ok(report)
    }

    /// Finish a removal that the newest retention record states and a
    /// crash interrupted (its `removed_before` above the first segment's
    /// base); with `strict`, also refuse a first segment above 0 that no
    /// record accounts for. `Some` if it removed anything.
    fn finish_recorded(&self, strict: bool) -> Result<Option<RetentionReport>> {
        let view = self.view()?;
        let first = view.segments.first().map_or(0, |s| s.base);
        let newest = newest_retention(&view)?;
        drop(view);
        match newest {
            Some((_, rec)) if rec.removed_before > first => {
                let mut report = RetentionReport {
                    rule: Some("recorded"),
                    ..RetentionReport::default()
                };
                self.remove_front(rec.removed_before, &mut report)?;
                self.remove_orphans()?;
                Ok(Some(report))
            }
            Some((_, rec)) if rec.removed_before == first => Ok(None),
            _ if first > 0 && strict => Err(missing_front(&self.dir, first)),
            _ => Ok(None),
        }
    }

    /// At open: refuse a first segment above 0 that no retention record
    /// accounts for, finish a recorded removal a crash interrupted, then
    /// apply the options' rule. A log that starts at 0 opened without a
    /// rule reads nothing here (an open stays cheap); a removal interrupted
    /// before its first file went is then finished by the next open with a
    /// rule or the next [`Log::apply_retention`].
    pub(super) fn retention_at_open(&self) -> Result<RetentionReport> {
        let first = self.first_base();
        if !self.has_rules() {
            if first > 0 {
                return Err(missing_front(&self.dir, first));
            }
            if self.opts.retention.is_some() {
                self.warn(format!(
                    "retention needs format version {}; this log is version {}: nothing is removed",
                    crate::format::meta::META_FORMAT_VERSION,
                    self.format.version
                ));
            }
            return Ok(RetentionReport::default());
        }
        if first == 0 && self.opts.retention.is_none() {
            return Ok(RetentionReport::default());
        }
        if let Some(r) = self.finish_recorded(true)? {
            return Ok(r);
        }
        if first > 0 {
            self.remove_orphans()?;
        }
        match self.opts.retention {
            Some(rule) => self.apply_retention_rule(&rule, true),
            None => Ok(RetentionReport::default()),
        }
    }

    /// The base of the first segment.
    fn first_base(&self) -> u64 {
        let p = lock(&self.published);
        p.sealed.first().map_or(p.active_base, |s| s.base)
    }

    /// Derived files left below the first segment: index files (a crash
    /// between a segment's removal and its index file's) and index
    /// checkpoints of a segment removed (spec 3.9).
    fn remove_orphans(&self) -> Result<()> {
        let first = self.first_base();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let idx = name
                .strip_suffix(".idx")
                .filter(|b| b.len() == 20 && b.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|b| b.parse::<u64>().ok());
            let ckpt = parse_checkpoint_file_name(name).map(|(base, _, _)| base);
            if idx.or(ckpt).is_some_and(|base| base < first) {
                remove_durably(&*self.opts.io, &self.dir, &e.path())?;
            }
        }
        Ok(())
    }

    /// Wait until every sealed segment is indexed (or the writer is
    /// poisoned or closing).
    pub(super) fn wait_for_index(&self) -> Result<()> {
        let mut b = lock(&self.backlog);
        while b.unindexed > 0 && !self.poisoned.load(Ordering::Acquire) && !self.sealer_stopped.load(Ordering::Acquire)
        {
            b = self.backlog_cv.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        drop(b);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        Ok(())
    }

    /// After a seal (the sealer thread): apply the options' rule, without
    /// waiting for the sealer (this is it). A failure is a warning: the
    /// next seal or open tries again, and nothing is lost.
    pub(super) fn retain_after_seal(&self) {
        let Some(rule) = self.opts.retention.filter(|r| r.is_set()) else {
            return;
        };
        if self.poisoned.load(Ordering::Acquire) || !self.sealer_running() {
            return;
        }
        if let Err(e) = self.apply_retention_rule(&rule, false) {
            self.warn(format!("retention: {e}"));
        }
    }
}

/// Remove `path` if it exists, then make the removal durable.
pub(super) fn remove_durably(
    fs: &dyn crate::storage::io::Io,
    dir: &std::path::Path,
    path: &std::path::Path,
) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("remove", path, e)),
    }
    fs.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

impl Log {
    /// Apply [`Options::retention`](crate::Options::retention) now (spec
    /// 3.9): remove whole sealed segments from the front of the log, oldest
    /// first, never the active one, after a durable retention record
    /// (`$retention`) says so. The writer also applies it after each segment
    /// seal and at open. Only segments already indexed are removed. Logs of
    /// a format version before 4 remove nothing.
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        match self.inner.opts.retention {
            Some(rule) => self.apply_retention_with(rule),
            None => Ok(RetentionReport::default()),
        }
    }

    /// Apply `rule` now, as [`Log::apply_retention`] applies the options'.
    /// Errors with [`Error::InvalidArgument`] in a log of a format version
    /// before 4.
    pub fn apply_retention_with(&self, rule: Retention) -> Result<RetentionReport> {
        if !self.inner.has_rules() {
            return Err(Error::InvalidArgument(format!(
                "retention needs format version {}; this log is version {} (spec 10)",
                crate::format::meta::META_FORMAT_VERSION,
                self.inner.format.version
            )));
        }
        // Segments sealed just before are indexed first.
        self.inner.wait_for_index()?;
        let r = self.inner.apply_retention_rule(&rule, true)?;
        if self.inner.opts.durability == Durability::Fsync {
            let target = lock(&self.inner.state).lsn;
            self.inner.commit_until(target, true)?;
        }
        Ok(r)
    }

    /// The first position of the log: the base of its first segment (0
    /// unless retention removed segments from its front).
    pub fn first_position(&self) -> u64 {
        self.inner.first_base()
    }
}
