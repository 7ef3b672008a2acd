//! Stream deletion and metadata on the writer's side (spec 3.7, format
//! version 4): the appends to `$meta-S`, the refusal of appends to system
//! streams and to tombstoned streams, and the writer's copy of every
//! stream's rules.
//!
//! Invariants: the rules of a stream change only through
//! [`Inner::change_rules`], which checks the expected version of the stream
//! and queues its metadata event under one state lock, so no append to the
//! stream can slip between the check and the deletion; an append holds the
//! rules' read lock from its tombstone check until it is queued, so a hard
//! deletion queued after it cannot be overtaken by it, nor it by an append
//! the tombstone refuses. The writer's copy is loaded from the log on first
//! need and kept up to date by the metadata appends it queues.

use std::sync::RwLockReadGuard;

use crate::error::{Error, Result};
use crate::format::meta::{META_EVENT_TYPE, META_FORMAT_VERSION, StreamRules, is_system_stream, meta_stream};
use crate::format::record::EventData;
use crate::read::rules::StreamMetadata;

use super::results::{AppendResult, ExpectedVersion};
use super::state::{Inner, Rules};
use super::{Durability, Log, read_lock as read, write_lock as write};

/// The rules, read-locked.
pub(super) type RulesGuard<'a> = RwLockReadGuard<'a, Option<Rules>>;

impl Inner {
    /// Whether this log gives system streams and metadata their meaning.
    pub(super) fn has_rules(&self) -> bool {
        self.format.version >= META_FORMAT_VERSION
    }

    /// The rules, loaded (from the log's `$meta` category) if they were not.
    pub(super) fn rules(&self) -> Result<RulesGuard<'_>> {
        loop {
            let r = read(&self.rules);
            if r.is_some() {
                return Ok(r);
            }
            drop(r);
            let mut w = write(&self.rules);
            if w.is_none() {
                *w = Some(self.view()?.all_stream_rules()?);
            }
        }
    }

    /// The checks of an application's append to `stream` in a log with
    /// metadata: not a system stream, not tombstoned. Returns the rules'
    /// read guard (to be held until the append is queued) and the stream's
    /// rules.
    pub(super) fn check_append_rules(&self, stream: &str) -> Result<Option<(RulesGuard<'_>, Option<StreamRules>)>> {
        if !self.has_rules() {
            return Ok(None);
        }
        if is_system_stream(stream) {
            return Err(Error::InvalidArgument(format!(
                "stream {stream:?}: names starting with '$' are system streams (spec 3.7); the application cannot append to them"
            )));
        }
        let guard = self.rules()?;
        let rules = guard.as_ref().and_then(|m| m.get(stream)).copied();
        if rules.is_some_and(|r| r.tombstone) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
                tombstoned: true,
            });
        }
        Ok(Some((guard, rules)))
    }

    /// Append the new rules of `stream` (`change` of its current rules and
    /// current version) to `$meta-<stream>`, after checking `expected`
    /// against the stream, atomically with that check.
    fn change_rules(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        change: impl Fn(StreamRules, Option<u64>) -> StreamRules,
    ) -> Result<AppendResult> {
        if !self.has_rules() {
            return Err(Error::InvalidArgument(format!(
                "stream deletion and metadata need format version {META_FORMAT_VERSION}; this log is version {} (spec 10)",
                self.format.version
            )));
        }
        if is_system_stream(stream) {
            return Err(Error::InvalidArgument(format!(
                "stream {stream:?} is a system stream (spec 3.7): it has no metadata of its own"
            )));
        }
        let meta = meta_stream(stream);
        let mut rules = write(&self.rules);
        if rules.is_none() {
            *rules = Some(self.view()?.all_stream_rules()?);
        }
        let old = rules.as_ref().and_then(|m| m.get(stream)).copied().unwrap_or_default();
        if old.tombstone {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
                tombstoned: true,
            });
        }
        let (target, result, new) = loop {
            let mut st = self.lock_open()?;
            let current = self.current_version(&st, stream)?;
            check_expected_for_rules(stream, expected, current, &old)?;
            let new = change(old, current);
            let payload = new.encode();
            let events = [EventData::new(META_EVENT_TYPE, payload.as_slice())];
            let batch_len = self.check_batch(&meta, &events)?;
            match self.enqueue_locked(&mut st, &meta, ExpectedVersion::Any, &events, batch_len, None)? {
                Some((target, result)) => break (target, result, new),
                None => {
                    drop(st);
                    self.wait_for_sealer()?;
                }
            }
        };
        if let Some(m) = rules.as_mut() {
            m.insert(stream.into(), new);
        }
        drop(rules);
        self.commit_until(target, self.opts.durability == Durability::Fsync)?;
        Ok(result)
    }
}

/// `expected` against a stream's current version, as an append checks it
/// (a stream that reads as deleted also passes `NoStream`).
fn check_expected_for_rules(
    stream: &str,
    expected: ExpectedVersion,
    current: Option<u64>,
    rules: &StreamRules,
) -> Result<()> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none() || rules.reads_as_deleted(current),
        ExpectedVersion::StreamExists => current.is_some(),
        ExpectedVersion::Exact(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: current,
        })
    }
}

/// The lowest version a deletion at current version `current` hides below.
fn deletion_point(old: &StreamRules, current: Option<u64>) -> Option<u64> {
    let next = current.map_or(0, |v| v.saturating_add(1));
    Some(old.truncate_before.unwrap_or(0).max(next))
}

impl Log {
    /// Soft-delete `stream` (spec 3.7): after `expected` is checked against
    /// it, it reads as deleted ([`Error::StreamDeleted`], distinct from a
    /// stream that never existed) and its events are hidden from every read.
    /// A later append starts a new life: its versions go on from the last
    /// one, and [`ExpectedVersion::NoStream`] is accepted while the stream
    /// reads as deleted. Returns the position of the metadata event. Needs a
    /// log of format version 4.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Direction, Error, EventData, ExpectedVersion, Log, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("cart-1", ExpectedVersion::NoStream, &[EventData::new("Added", b"{}")])?;
    /// log.delete_stream("cart-1", ExpectedVersion::Exact(0))?;
    /// let view = log.view()?;
    /// let first = view.read_stream("cart-1", 0, Direction::Forward, 10).next();
    /// assert!(matches!(first, Some(Err(Error::StreamDeleted { tombstoned: false, .. }))));
    /// // A new life, at the next version:
    /// let r = log.append("cart-1", ExpectedVersion::NoStream, &[EventData::new("Added", b"{}")])?;
    /// assert_eq!(r.stream_version, 1);
    /// # Ok(()) }
    /// ```
    pub fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<AppendResult> {
        self.inner.change_rules(stream, expected, |old, current| StreamRules {
            deleted: true,
            truncate_before: deletion_point(&old, current),
            ..old
        })
    }

    /// Hard-delete `stream` (a tombstone, spec 3.7): it reads as deleted for
    /// good, and every later append to it, or change of its metadata, is
    /// refused with [`Error::StreamDeleted`]. Needs a log of format version 4.
    pub fn hard_delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<AppendResult> {
        self.inner.change_rules(stream, expected, |old, current| StreamRules {
            deleted: true,
            tombstone: true,
            truncate_before: deletion_point(&old, current),
            ..old
        })
    }

    /// Set `stream`'s metadata (spec 3.7): its `truncate_before`,
    /// `max_count` and `max_age` are replaced by those of `metadata`; a soft
    /// deletion is kept, and so is its `truncate_before` unless `metadata`
    /// gives one (a lower one shows deleted events again, until the log is
    /// compacted); `deleted` and `tombstoned` of `metadata` are ignored. Reads hide what the rules hide from the moment this
    /// returns; compaction removes it from the disk. Needs a log of format
    /// version 4.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Direction, EventData, ExpectedVersion, Log, Options, StreamMetadata};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// for i in 0..5u8 {
    ///     log.append("sensor-1", ExpectedVersion::Any, &[EventData::new("Read", vec![i])])?;
    /// }
    /// log.set_stream_metadata("sensor-1", StreamMetadata::new().max_count(2))?;
    /// let view = log.view()?;
    /// let kept: Vec<u64> = view
    ///     .read_stream("sensor-1", 0, Direction::Forward, u64::MAX)
    ///     .map(|r| r.map(|r| r.stream_version()))
    ///     .collect::<annal::Result<_>>()?;
    /// assert_eq!(kept, [3, 4]);
    /// # Ok(()) }
    /// ```
    pub fn set_stream_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<AppendResult> {
        if metadata.max_count == Some(0) {
            return Err(Error::InvalidArgument("max_count must be at least 1".into()));
        }
        let max_age = match metadata.max_age {
            Some(d) if d.is_zero() => return Err(Error::InvalidArgument("max_age must be at least 1 ns".into())),
            Some(d) => Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => None,
        };
        self.inner
            .change_rules(stream, ExpectedVersion::Any, move |old, _| StreamRules {
                truncate_before: match (old.deleted, metadata.truncate_before) {
                    // A deletion keeps its TRUNCATE_BEFORE unless another
                    // is given (spec 3.7).
                    (true, None) => old.truncate_before,
                    (_, t) => t,
                },
                max_count: metadata.max_count,
                max_age,
                ..old
            })
    }

    /// The metadata of `stream` as the writer holds it (`None`: no rules).
    pub fn stream_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>> {
        if !self.inner.has_rules() {
            return Ok(None);
        }
        let rules = self.inner.rules()?;
        Ok(rules
            .as_ref()
            .and_then(|m| m.get(stream))
            .map(StreamMetadata::from_rules))
    }
}
