//! The append path's atomic step: under the `state` lock, check the batch
//! and the expected version, assign positions, versions, a timestamp and
//! event ids, and encode the batch into the pending buffer (queuing a roll
//! first when the batch does not fit the active segment).
//!
//! Invariants: nothing is queued unless every check passed (no version or
//! position may wrap past `u64::MAX`); timestamps never go backwards;
//! generated ids are UUID v7, unique and ordered.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use uuid::Uuid;
use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::batch::{BatchStamp, JSON_FORMAT_VERSION, encode_body, max_body_len};
use crate::format::frame::{batch_is_chained, encode_seal, finish_batch_header, finish_batch_header_v3};
use crate::format::meta::StreamRules;
use crate::format::record::{EventData, Stamp, encode_record};
use crate::format::{
    CHAIN_SLOT_LEN, CHECKPOINT_FRAME_LEN, FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, FRAME_KIND_CHECKPOINT, FrameHeader,
    FrameHeaderV3, MAX_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use crate::index::MemIndex;

use super::lock;
use super::results::{AppendResult, ExpectedVersion};
use super::state::{IdGen, Inner, MAX_UNINDEXED, Op, State, write_index};

/// Counts a thread inside `append` for as long as it lives.
pub(super) struct Appending<'a>(&'a AtomicUsize);

impl<'a> Appending<'a> {
    pub(super) fn enter(count: &'a AtomicUsize) -> Appending<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Appending(count)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl IdGen {
    /// The first of `n` consecutive ids (see [`generated_id`]).
    fn take(&mut self, n: u64) -> u128 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if ms != self.ms || self.next == 0 {
            self.ms = ms;
            self.next = Uuid::now_v7().as_u128();
        }
        let base = self.next;
        self.next = u128::from_be_bytes(generated_id(base, n));
        base
    }
}

impl Inner {
    /// Check `events` for `stream` and seal those that name a subject (spec
    /// 3.8): the batch to enqueue and its length in bytes.
    pub(super) fn prepare_batch<'e, 'b>(
        &self,
        stream: &str,
        events: &'b [EventData<'e>],
    ) -> Result<(Cow<'b, [EventData<'e>]>, u64)> {
        let batch_len = self.check_batch(stream, events)?;
        let sealed = self.sealed_events(stream, events)?;
        // The ciphertexts are a little longer than what they seal.
        let batch_len = match &sealed {
            Cow::Owned(events) => self.check_batch(stream, events)?,
            Cow::Borrowed(_) => batch_len,
        };
        Ok((sealed, batch_len))
    }

    /// One try at queueing a checked batch under the stream's rules:
    /// `None` if it would roll a segment while the sealer is behind (wait for
    /// the sealer, then try again).
    pub(super) fn try_enqueue(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
        batch_len: u64,
    ) -> Result<Option<(u64, AppendResult)>> {
        // Held until the batch is queued (see `metadata`), but not while
        // waiting for the sealer (which takes them for retention).
        let rules = self.check_append_rules(stream)?;
        let stream_rules = rules.as_ref().and_then(|r| r.1.as_ref());
        self.enqueue(stream, expected, events, batch_len, stream_rules)
    }

    pub(super) fn check_batch(&self, stream: &str, events: &[EventData<'_>]) -> Result<u64> {
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if stream.is_empty() || stream.len() > u16::MAX as usize {
            return Err(Error::StreamNameLength { len: stream.len() });
        }
        if u32::try_from(events.len()).is_err() {
            return Err(Error::TooManyEvents { count: events.len() });
        }
        let mut total = FRAME_HEADER_LEN as u64;
        for (index, ev) in events.iter().enumerate() {
            if ev.is_json() && self.format.version < JSON_FORMAT_VERSION {
                return Err(Error::InvalidArgument(format!(
                    "event {index} is marked JSON (EventData::json, a typed event of the JSON codec): that needs \
                     format version {JSON_FORMAT_VERSION}; this log is version {} (spec 10), so nothing was written: \
                     append its bytes unmarked (EventData::new) or use a log created by this version",
                    self.format.version
                )));
            }
            if ev.event_type.is_empty() || ev.event_type.len() > u16::MAX as usize {
                return Err(Error::EventTypeLength {
                    index,
                    len: ev.event_type.len(),
                });
            }
            let size = ev.metadata.len() as u64 + ev.payload.len() as u64;
            let len = ev.record_len(stream);
            if size > self.opts.max_event_bytes || len > MAX_RECORD_LEN {
                return Err(Error::EventTooLarge {
                    index,
                    size,
                    limit: self.opts.max_event_bytes.min(MAX_RECORD_LEN),
                });
            }
            total += len;
        }
        if self.format.version >= 3 {
            // Version 3 (spec 3.6): at most this many bytes (the varints of
            // the timestamp and first version are known only when encoded).
            total = (FRAME_HEADER_V3_LEN + CHAIN_SLOT_LEN) as u64 + max_body_len(stream, events);
        }
        if total > self.opts.max_batch_bytes {
            return Err(Error::BatchTooLarge {
                size: total,
                limit: self.opts.max_batch_bytes,
            });
        }
        Ok(total)
    }

    /// The atomic step: check the expected version, assign positions, encode.
    /// `None`: the batch would roll a segment while [`MAX_UNINDEXED`] sealed
    /// segments wait for the sealer; nothing was queued.
    pub(super) fn enqueue(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
        batch_len: u64,
        rules: Option<&StreamRules>,
    ) -> Result<Option<(u64, AppendResult)>> {
        let mut st = self.lock_open()?;
        self.enqueue_locked(&mut st, stream, expected, events, batch_len, rules)
    }

    /// The state, locked, if the log is open and healthy.
    pub(super) fn lock_open(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.closed {
            return Err(Error::Closed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        Ok(st)
    }

    /// [`Inner::enqueue`] under the state lock. `rules`: the stream's
    /// metadata (spec 3.7): a stream that reads as deleted accepts
    /// `ExpectedVersion::NoStream`, its versions going on.
    pub(super) fn enqueue_locked(
        &self,
        st: &mut State,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
        batch_len: u64,
        rules: Option<&StreamRules>,
    ) -> Result<Option<(u64, AppendResult)>> {
        let current = self.current_version(st, stream)?;
        let expected = match expected {
            ExpectedVersion::NoStream if rules.is_some_and(|r| r.reads_as_deleted(current)) => ExpectedVersion::Any,
            e => e,
        };
        if events.iter().all(|e| e.id.is_some())
            && let Some(r) = self.idempotent(st, stream, expected, current, events)?
        {
            // A retry of an append that is already in the log: wait for it.
            return Ok(Some((st.lsn, r)));
        }
        check_expected(stream, expected, current)?;
        let n = events.len() as u64;
        let (first_version, last_version) = batch_versions(stream, current, n, st.next_position)?;
        if st.seg_has_batches && st.seg_end + batch_len > self.opts.segment_size && !self.queue_roll(st) {
            return Ok(None);
        }
        let (first_position, frame_offset) = self.encode_batch(st, stream, events, first_version, batch_len);
        if st.unsigned_events >= self.opts.checkpoint_every {
            self.push_checkpoint(st);
        }
        self.queued_appends.fetch_add(1, Ordering::AcqRel);
        let types = events.iter().map(|ev| &*ev.event_type);
        write_index(&st.index).add_batch(frame_offset, first_position, stream, first_version, n, types);
        if self.opts.idempotency_window > 0 && events.iter().any(|e| e.id.is_some()) {
            st.remember_batch(
                stream,
                events,
                first_version,
                first_position,
                self.opts.idempotency_window,
            );
        }
        Ok(Some((
            st.lsn,
            AppendResult {
                first_position,
                last_position: first_position + n - 1,
                stream_version: last_version,
            },
        )))
    }

    /// Queue the roll a batch needs when it does not fit the active segment:
    /// a checkpoint (with a signing key), the seal, then the next segment for
    /// the leader to create. `false`, with nothing queued, while
    /// [`MAX_UNINDEXED`] sealed segments wait for the sealer.
    fn queue_roll(&self, st: &mut State) -> bool {
        {
            let mut b = lock(&self.backlog);
            if b.unindexed >= MAX_UNINDEXED {
                return false;
            }
            b.unindexed += 1;
        }
        self.push_checkpoint(st);
        let seal = encode_seal(st.next_position, st.seg_durable, &st.seg_layout);
        let (base, prev_timestamp) = (st.next_position, st.last_timestamp);
        st.push_bytes(&seal);
        let chunk = std::mem::take(&mut st.cur);
        st.pending.push(Op::Write(chunk));
        let next = Arc::new(RwLock::new(MemIndex::default()));
        let sealed = std::mem::replace(&mut st.index, next.clone());
        let sealed_base = st.seg_base;
        let layered = st.layered.take();
        st.unpersisted.push((sealed_base, sealed.clone(), layered.clone()));
        st.pending.push(Op::Roll {
            base,
            prev_timestamp,
            sealed,
            layered,
            next,
        });
        st.seg_base = base;
        st.seg_end = SEGMENT_HEADER_LEN as u64;
        st.seg_has_batches = false;
        st.seg_durable = SEGMENT_HEADER_LEN as u64;
        st.seg_layout.prev_timestamp = prev_timestamp;
        st.seg_last_batch = None;
        true
    }

    /// Assign the batch its positions, timestamp and ids, encode it into the
    /// open buffer and advance the tail. Returns the batch's first position
    /// and the offset of its frame in the active segment.
    fn encode_batch(
        &self,
        st: &mut State,
        stream: &str,
        events: &[EventData<'_>],
        first_version: u64,
        batch_len: u64,
    ) -> (u64, u64) {
        let n = events.len() as u64;
        let timestamp = (self.opts.clock)().max(st.last_timestamp);
        let first_position = st.next_position;
        let durable = st.seg_durable;
        if st.seg_layout.compact() {
            // Version 3 (spec 3.6): ids the application did not give are
            // derived from the log's id and the position, never stored.
            let frame_offset = st.seg_end;
            let chained = self.format.chained() && batch_is_chained(frame_offset, st.seg_last_batch);
            let stamp = BatchStamp {
                first_version,
                timestamp_delta: timestamp.saturating_sub(st.seg_layout.prev_timestamp),
            };
            let buf = &mut st.cur;
            let start = buf.len();
            buf.resize(start + FrameHeaderV3::len_with(u8::from(chained)), 0);
            encode_body(buf, start, stream, events, &stamp);
            finish_batch_header_v3(&mut buf[start..], chained, first_position, n as u32, durable);
            let len = (buf.len() - start) as u64;
            debug_assert!(len <= batch_len, "the bound of check_batch holds");
            st.seg_last_batch = Some(frame_offset);
            st.next_position += n;
            st.last_timestamp = timestamp;
            st.seg_end += len;
            st.seg_has_batches = true;
            st.lsn += len;
            st.unsigned_events += n;
            return (first_position, frame_offset);
        }
        let id_base = if events.iter().any(|e| e.id.is_none()) {
            st.ids.take(n)
        } else {
            0
        };
        let frame_offset = st.seg_end;
        let crc = crc32fast::Hasher::new();
        let buf = &mut st.cur;
        let start = buf.len();
        buf.resize(start + FRAME_HEADER_LEN, 0);
        for (i, ev) in events.iter().enumerate() {
            let stamp = Stamp {
                position: first_position + i as u64,
                stream_version: first_version + i as u64,
                timestamp,
                event_id: ev.id.map_or_else(|| generated_id(id_base, i as u64), Uuid::into_bytes),
            };
            encode_record(buf, stream, ev, &stamp, &crc);
        }
        finish_batch_header(&mut buf[start..], first_position, events.len() as u32, durable);
        st.next_position += n;
        st.last_timestamp = timestamp;
        st.seg_end += batch_len;
        st.seg_has_batches = true;
        st.lsn += batch_len;
        st.unsigned_events += n;
        (first_position, frame_offset)
    }

    /// With a signing key, queue a checkpoint frame for the leader to sign
    /// (spec 3.5) if events were appended since the last one.
    pub(super) fn push_checkpoint(&self, st: &mut State) {
        if self.opts.signing_key.is_none() || st.unsigned_events == 0 {
            return;
        }
        if st.seg_layout.compact() {
            // Version 3: a chained header (its slot and the body are filled
            // in, and its CRC computed, when the leader signs it).
            let len = FRAME_HEADER_V3_LEN + CHAIN_SLOT_LEN + crate::format::CHECKPOINT_BODY_LEN;
            let h = FrameHeaderV3::new(
                FRAME_KIND_CHECKPOINT,
                true,
                len as u64,
                st.next_position,
                0,
                st.seg_durable,
                0,
            );
            let mut frame = vec![0u8; len];
            frame[..FRAME_HEADER_V3_LEN].copy_from_slice(h.as_bytes());
            st.push_bytes(&frame);
            st.unsigned_events = 0;
            return;
        }
        let h = FrameHeader::new(
            FRAME_KIND_CHECKPOINT,
            CHECKPOINT_FRAME_LEN as u64,
            st.next_position,
            0,
            st.seg_durable,
        );
        let mut frame = [0u8; CHECKPOINT_FRAME_LEN];
        frame[..FRAME_HEADER_LEN].copy_from_slice(h.as_bytes());
        st.push_bytes(&frame);
        st.unsigned_events = 0;
    }
}

/// The optimistic-concurrency check of an append to `stream`, whose version
/// is `current`.
fn check_expected(stream: &str, expected: ExpectedVersion, current: Option<u64>) -> Result<()> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::StreamExists => current.is_some(),
        ExpectedVersion::Exact(v) => current == Some(v),
    };
    if !ok {
        return Err(Error::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: current,
        });
    }
    Ok(())
}

/// The first and last versions of a batch of `n` events to `stream`, at
/// version `current`. Versions and positions come from files (the stream
/// table, the segments): none may wrap, so an error if either would pass
/// `u64::MAX`. Checked before anything is queued.
fn batch_versions(stream: &str, current: Option<u64>, n: u64, next_position: u64) -> Result<(u64, u64)> {
    let first_version = match current {
        None => 0,
        Some(v) => v.checked_add(1).ok_or_else(|| version_overflow(stream, v, n))?,
    };
    let last_version = first_version
        .checked_add(n - 1)
        .ok_or_else(|| version_overflow(stream, first_version - 1, n))?;
    if next_position.checked_add(n).is_none() {
        return Err(Error::InvalidArgument(format!(
            "the log's next position is {next_position}: {n} more events would pass the largest position (2^64 - 1)"
        )));
    }
    Ok((first_version, last_version))
}

/// The error of an append whose versions would pass `u64::MAX`.
fn version_overflow(stream: &str, current: u64, n: u64) -> Error {
    Error::InvalidArgument(format!(
        "stream {stream:?} is at version {current}: {n} more events would pass the largest version (2^64 - 1); \
         nothing was written"
    ))
}

/// The `i`-th generated id of a batch whose first generated id is `base` (a UUID
/// v7): the low 62 bits (`rand_b`) count up, wrapping within those bits, so the
/// version and variant bits are untouched.
fn generated_id(base: u128, i: u64) -> [u8; 16] {
    const LOW: u128 = (1 << 62) - 1;
    ((base & !LOW) | (base.wrapping_add(i as u128) & LOW)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Log;

    fn one(n: usize) -> Vec<EventData<'static>> {
        (0..n).map(|_| EventData::new("E", b"{}".as_slice())).collect()
    }

    /// Issue 13, defect 21: a stream version or a position that would pass
    /// `u64::MAX` is an error and nothing is queued (it wrapped to 0).
    #[test]
    fn versions_and_positions_never_wrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        log.append("s", ExpectedVersion::Any, &one(1)).expect("append");
        // The active index says the stream is at u64::MAX - 1 (as a forged
        // file could make it say).
        {
            let st = lock(&log.inner.state);
            write_index(&st.index).add_batch(128, 1, "s", u64::MAX - 1, 1, std::iter::once("E"));
        }
        assert_eq!(log.stream_version("s").expect("version"), Some(u64::MAX - 1));
        let r = log
            .append("s", ExpectedVersion::Any, &one(1))
            .expect("the last version fits");
        assert_eq!(r.stream_version, u64::MAX);
        let lsn = lock(&log.inner.state).lsn;
        for n in [1, 2] {
            let e = log
                .append("s", ExpectedVersion::Any, &one(n))
                .expect_err("past u64::MAX");
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("largest version")),
                "{e}"
            );
        }
        assert_eq!(lock(&log.inner.state).lsn, lsn, "nothing was queued");
        // Positions: the next position near the end of the range.
        lock(&log.inner.state).next_position = u64::MAX - 1;
        let e = log
            .append("t", ExpectedVersion::Any, &one(2))
            .expect_err("past u64::MAX");
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("largest position")),
            "{e}"
        );
        assert_eq!(lock(&log.inner.state).lsn, lsn, "nothing was queued");
        assert_eq!(lock(&log.inner.state).next_position, u64::MAX - 1);
        // Not closed cleanly on purpose: the state was forged.
        std::mem::forget(log);
    }
}
