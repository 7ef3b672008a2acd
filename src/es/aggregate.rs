//! Aggregates and their repository: commands in, events out, state rebuilt
//! from events (and snapshots), with optimistic concurrency and retries.
//!
//! [`Repository::load`] takes the newest valid snapshot whose schema version
//! matches (if any) and replays only the events after it; a corrupt or
//! mismatched snapshot is skipped with a warning and the state is rebuilt from
//! events, so the loaded state is the same with or without snapshots.
//! [`Repository::execute`] loads, handles the command, appends the resulting
//! events with `ExpectedVersion::Exact` (or `NoStream`), and on
//! `WrongExpectedVersion` reloads and retries a bounded number of times.
//! [`Repository::load_as_of`] answers temporal queries: the state as of a
//! version, a global position, or an append time.
//!
//! Events that name a subject (sealed, spec 3.8) are unsealed through the
//! view and decoded from their plaintext; an event whose subject was erased
//! goes to [`Aggregate::apply_erased`] instead of [`Aggregate::apply`]. The
//! repository remembers the subject keys of the sealed events a state
//! folded and saves them with its snapshot (spec 20.2, version 2); a load
//! skips a snapshot that names an erased key and rebuilds the state from the
//! events, and erasing a subject removes such snapshot files
//! ([`Log::erase_subject`]).
//!
//! Invariant: no payload is ever decoded from a record that is still
//! sealed (its bytes are ciphertext).

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::es::snapshot::{Snapshot, SnapshotStore};
use crate::es::typed::{Event, Typed, Upcasters};
use crate::format::record::RecordRef;
use crate::format::sealed::KeyId;
use crate::read::view::LogView;
use crate::types::Direction;
use crate::types::ExpectedVersion;
use crate::writer::{AppendResult, Log};

/// A consistency boundary: state folded from its events, deciding on commands.
///
/// The state is also what snapshots hold (postcard), so it is `Serialize +
/// DeserializeOwned`; bump [`Aggregate::SNAPSHOT_VERSION`] when its shape
/// changes and older snapshots are ignored.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// The events of this aggregate.
    type Event: Event + DeserializeOwned;
    /// The commands it handles.
    type Command;
    /// Why a command is refused.
    type Error: fmt::Display + fmt::Debug;
    /// Schema version of the snapshot payload.
    const SNAPSHOT_VERSION: u32 = 0;
    /// Decide: the events a command produces (none is fine), or a refusal.
    fn handle(&self, command: &Self::Command) -> std::result::Result<Vec<Self::Event>, Self::Error>;
    /// Evolve: fold one event into the state.
    fn apply(&mut self, event: &Self::Event);
    /// Evolve with an event whose subject was erased (spec 22): called
    /// instead of [`Aggregate::apply`] for it. `record` is its envelope
    /// (position, stream, version, event type, time, id; payload and
    /// metadata are empty, [`RecordRef::is_erased`] is true). The default
    /// ignores it: the state is what it would be without the event's data.
    fn apply_erased(&mut self, record: &RecordRef<'_>) {
        let _ = record;
    }
}

/// A loaded aggregate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version it reflects (`None`: no events).
    pub version: Option<u64>,
    /// The stream version of the snapshot it started from, if any.
    pub snapshot_version: Option<u64>,
    /// Events replayed on top of the snapshot (or from the start).
    pub replayed: u64,
    /// Snapshots skipped (corrupt, of another schema, or naming an erased
    /// subject key: superseded by the erasure), one message each.
    pub warnings: Vec<String>,
}

/// Which past state to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsOf {
    /// After the event with this stream version.
    Version(u64),
    /// After every event of the stream at or before this global position.
    Position(u64),
    /// After every event of the stream appended at or before this time
    /// (nanoseconds since the Unix epoch).
    Time(u64),
}

/// What [`Repository::execute`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Executed {
    /// The append, or `None` if the command produced no events.
    pub appended: Option<AppendResult>,
    /// Attempts made (1 unless another writer raced this one).
    pub attempts: u32,
    /// Whether a snapshot was written after the append (`false` also when
    /// a subject whose plaintext the state folded was erased meanwhile:
    /// such a snapshot is not kept, spec 20.4).
    pub snapshot_written: bool,
    /// Why the snapshot due after the append could not be written. The
    /// command's events are in the log all the same (so `execute` returns
    /// `Ok`: retrying it would apply the command twice); the aggregate loads
    /// from the previous snapshot and the events after it. A failure to save
    /// a snapshot file does not poison the log; a failure of the `sync` that
    /// precedes it does, like any failed fsync.
    pub snapshot_error: Option<std::sync::Arc<Error>>,
}

/// Why [`Repository::execute`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The aggregate refused the command.
    Rejected(E),
    /// Every attempt met a concurrent append to the stream.
    Conflict {
        /// The stream.
        stream: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The log failed.
    Log(Error),
}

impl<E: fmt::Display> fmt::Display for ExecuteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecuteError::Rejected(e) => write!(f, "command rejected: {e}"),
            ExecuteError::Conflict { stream, attempts } => write!(
                f,
                "stream {stream:?} kept changing under the command: gave up after {attempts} attempts"
            ),
            ExecuteError::Log(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for ExecuteError<E> {
    /// The log's error, for [`ExecuteError::Log`].
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExecuteError::Log(e) => Some(e),
            ExecuteError::Rejected(_) | ExecuteError::Conflict { .. } => None,
        }
    }
}

impl<E> From<Error> for ExecuteError<E> {
    fn from(e: Error) -> Self {
        ExecuteError::Log(e)
    }
}

/// One attempt of `execute`, decided: nothing to append, or events to
/// append at an expected version.
pub(super) enum Decided<A: Aggregate> {
    Nothing(Executed),
    Append(Pending<A>),
}

/// The events a command produced, with what was loaded to decide them.
pub(super) struct Pending<A: Aggregate> {
    loaded: Loaded<A>,
    keys: BTreeSet<KeyId>,
    pub(super) events: Vec<A::Event>,
    pub(super) expected: ExpectedVersion,
    attempt: u32,
}

/// Loads and runs aggregates of type `A` stored in a [`Log`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use annal::{Aggregate, Event, Log, Options, Repository};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter { value: i64 }
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Added(i64) }
/// impl Event for CounterEvent {
///     fn event_type(&self) -> &'static str { "Added" }
/// }
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     type Command = i64;
///     type Error = String;
///     fn handle(&self, add: &i64) -> Result<Vec<CounterEvent>, String> {
///         if self.value + add < 0 { return Err("would go negative".into()) }
///         Ok(vec![CounterEvent::Added(*add)])
///     }
///     fn apply(&mut self, CounterEvent::Added(n): &CounterEvent) { self.value += n }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path())?;
/// let repo = Repository::<Counter>::new(&log).snapshot_every(2, 1);
/// for n in [5, 3, -2] {
///     repo.execute("counter-1", &n)?;
/// }
/// assert!(repo.execute("counter-1", &-10).is_err());
/// let loaded = repo.load("counter-1")?;
/// assert_eq!((loaded.state.value, loaded.version), (6, Some(2)));
/// # Ok(()) }
/// ```
///
/// A repository owns a clone of the log and is cheap to clone itself (the
/// clones share the log, the upcasters and the snapshot settings' values):
/// keep one in an axum `State` or move it into a task.
pub struct Repository<A: Aggregate> {
    log: Log,
    upcasters: Arc<Upcasters>,
    store: Arc<SnapshotStore>,
    every: Option<u64>,
    keep: usize,
    use_snapshots: bool,
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            log: self.log.clone(),
            upcasters: Arc::clone(&self.upcasters),
            store: Arc::clone(&self.store),
            every: self.every,
            keep: self.keep,
            use_snapshots: self.use_snapshots,
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("log", &self.log)
            .field("snapshot_every", &self.every)
            .field("keep", &self.keep)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `log` (it keeps a clone of the handle), without
    /// snapshots, retrying a conflicting `execute` up to 5 times.
    pub fn new(log: &Log) -> Self {
        Repository {
            log: log.clone(),
            upcasters: Arc::new(Upcasters::new()),
            store: Arc::new(SnapshotStore::new(log.dir(), log.io().clone())),
            every: None,
            keep: 1,
            use_snapshots: true,
            max_attempts: 5,
            _aggregate: PhantomData,
        }
    }

    /// Apply these upcasters to every event read.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Write a snapshot whenever an append takes the stream across a multiple
    /// of `events` events, keeping the newest `keep` snapshots per stream.
    pub fn snapshot_every(mut self, events: u64, keep: usize) -> Self {
        self.every = (events > 0).then_some(events);
        self.keep = keep.max(1);
        self
    }

    /// Never read snapshots: every load replays the stream from its first
    /// event (to compare, or to rule snapshots out).
    pub fn ignore_snapshots(mut self) -> Self {
        self.use_snapshots = false;
        self
    }

    /// How many times `execute` tries before giving up on conflicts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Load the current state of `stream`.
    pub fn load(&self, stream: &str) -> Result<Loaded<A>> {
        self.load_upto(&self.log.view()?, stream, u64::MAX)
    }

    /// Load the state of `stream` as it was at a version, a global position
    /// or a time. Snapshots at or before that point are used.
    pub fn load_as_of(&self, stream: &str, as_of: AsOf) -> Result<Loaded<A>> {
        let view = self.log.view()?;
        let position = match as_of {
            AsOf::Version(v) => return self.load_upto(&view, stream, v),
            AsOf::Position(p) => p,
            AsOf::Time(t) => match view.position_at_time(t)?.checked_sub(1) {
                Some(p) => p,
                None => return Ok(empty()),
            },
        };
        // The stream's newest event at or before `position`.
        let mut version = None;
        for r in view.read_stream(stream, u64::MAX, Direction::Backward, u64::MAX) {
            let r = r?;
            if r.position() <= position {
                version = Some(r.stream_version());
                break;
            }
        }
        match version {
            Some(v) => self.load_upto(&view, stream, v),
            None => Ok(empty()),
        }
    }

    /// Load `stream` up to version `max` from `view`.
    fn load_upto(&self, view: &LogView, stream: &str, max: u64) -> Result<Loaded<A>> {
        Ok(self.load_keyed(view, stream, max)?.0)
    }

    /// [`Repository::load_upto`], and the subject keys of the sealed events
    /// the state folded (those of the snapshot it started from included).
    fn load_keyed(&self, view: &LogView, stream: &str, max: u64) -> Result<(Loaded<A>, BTreeSet<KeyId>)> {
        let mut loaded = empty::<A>();
        let mut keys = BTreeSet::new();
        let mut from = 0;
        if self.use_snapshots {
            // Asked of the keys as the view's ring holds them now; a view
            // without the ring cannot tell, so no keyed snapshot is used.
            let erased = |k: KeyId| view.keys().map_or(true, |r| r.is_erased(k));
            let (snap, warnings) = self.store.load(stream, A::SNAPSHOT_VERSION, Some(max), &erased)?;
            loaded.warnings = warnings;
            if let Some(s) = snap {
                match postcard::from_bytes::<A>(&s.payload) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = Some(s.stream_version);
                        loaded.snapshot_version = Some(s.stream_version);
                        keys.extend(s.subject_keys.iter().copied());
                        from = s.stream_version + 1;
                    }
                    Err(e) => loaded.warnings.push(format!(
                        "snapshot of {stream:?} at version {} does not decode ({e}); rebuilding from events",
                        s.stream_version
                    )),
                }
            }
        }
        for r in view.read_stream(stream, from, Direction::Forward, u64::MAX) {
            let r = r?;
            if r.stream_version() > max {
                break;
            }
            let unsealed = view.unseal(r)?;
            if unsealed.is_erased() {
                // Only its envelope is folded: the state holds nothing of
                // the subject, so a snapshot of it need not name the key.
                loaded.state.apply_erased(&unsealed.record());
            } else {
                keys.extend(r.subject_key());
                let typed = Typed::new(unsealed.record(), &self.upcasters)?;
                let event: A::Event = typed.decode()?;
                loaded.state.apply(&event);
            }
            loaded.version = Some(r.stream_version());
            loaded.replayed += 1;
        }
        Ok((loaded, keys))
    }

    /// Load, handle `command`, append the events; retry on conflicts.
    ///
    /// Before each retry it waits until views show the append that won (with
    /// [`Durability::Fsync`](crate::Durability::Fsync) that is after its
    /// fsync), so an attempt fails only when another append to the stream
    /// succeeded after the previous one loaded it: with N commands racing
    /// on one stream, N attempts each are enough.
    pub fn execute(&self, stream: &str, command: &A::Command) -> std::result::Result<Executed, ExecuteError<A::Error>> {
        for attempt in 1..=self.max_attempts {
            let pending = match self.decide(stream, command, attempt)? {
                Decided::Nothing(done) => return Ok(done),
                Decided::Append(p) => p,
            };
            match self.log.append_typed(stream, pending.expected, &pending.events) {
                Ok(r) => return Ok(self.after_append(stream, pending, r)),
                Err(Error::WrongExpectedVersion { .. }) => self.log.wait_visible(self.log.next_position()),
                Err(e) => return Err(ExecuteError::Log(e)),
            }
        }
        Err(self.gave_up(stream))
    }

    /// One attempt's decision: load `stream` and handle `command`.
    pub(super) fn decide(
        &self,
        stream: &str,
        command: &A::Command,
        attempt: u32,
    ) -> std::result::Result<Decided<A>, ExecuteError<A::Error>> {
        let view = self.log.view()?;
        let (loaded, keys) = self.load_keyed(&view, stream, u64::MAX)?;
        let events = loaded.state.handle(command).map_err(ExecuteError::Rejected)?;
        if events.is_empty() {
            return Ok(Decided::Nothing(Executed {
                appended: None,
                attempts: attempt,
                snapshot_written: false,
                snapshot_error: None,
            }));
        }
        let expected = match loaded.version {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        };
        Ok(Decided::Append(Pending {
            loaded,
            keys,
            events,
            expected,
            attempt,
        }))
    }

    /// Whether the append `r` of `pending` takes the stream across a
    /// multiple of the snapshot interval (a snapshot is due).
    pub(super) fn snapshot_due(&self, pending: &Pending<A>, r: &AppendResult) -> bool {
        self.every.is_some_and(|every| {
            let before = pending.loaded.version.map_or(0, |v| v + 1);
            before / every != (r.stream_version + 1) / every
        })
    }

    /// What `execute` returns once the events of `pending` are appended as
    /// `r`: with a snapshot written, if one is due.
    pub(super) fn after_append(&self, stream: &str, pending: Pending<A>, r: AppendResult) -> Executed {
        let attempts = pending.attempt;
        let (snapshot_written, snapshot_error) = if self.snapshot_due(&pending, &r) {
            match self.snapshot_after(stream, pending, &r) {
                Ok(written) => (written, None),
                Err(e) => (false, Some(std::sync::Arc::new(e))),
            }
        } else {
            (false, None)
        };
        Executed {
            appended: Some(r),
            attempts,
            snapshot_written,
            snapshot_error,
        }
    }

    /// Write the snapshot due after the events of `pending` were appended as
    /// `r`: whether it was written.
    fn snapshot_after(&self, stream: &str, pending: Pending<A>, r: &AppendResult) -> Result<bool> {
        let Pending {
            mut loaded,
            mut keys,
            events,
            ..
        } = pending;
        let before = loaded.version.map_or(0, |v| v + 1);
        for e in &events {
            loaded.state.apply(e);
        }
        self.appended_keys(stream, before, r, &mut keys)?;
        self.write_snapshot(stream, &loaded.state, r.stream_version, r.last_position, &keys)
    }

    /// The error of an `execute` whose every attempt met a conflict.
    pub(super) fn gave_up(&self, stream: &str) -> ExecuteError<A::Error> {
        ExecuteError::Conflict {
            stream: stream.to_owned(),
            attempts: self.max_attempts,
        }
    }

    /// Attempts an `execute` makes at most.
    #[cfg(feature = "tokio")]
    pub(super) fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The log this repository appends to.
    #[cfg(feature = "tokio")]
    pub(super) fn log(&self) -> &Log {
        &self.log
    }

    /// Write a snapshot of `stream`'s current state now: the version it
    /// reflects, or `None` if the stream has no events, or if the state
    /// folded an event of a subject whose key is erased (such a snapshot
    /// would be skipped by every load, spec 20.5, so none is kept).
    pub fn snapshot(&self, stream: &str) -> Result<Option<u64>> {
        let view = self.log.view()?;
        let (loaded, keys) = self.load_keyed(&view, stream, u64::MAX)?;
        let Some(version) = loaded.version else { return Ok(None) };
        let Some(last) = view
            .read_stream(stream, version, Direction::Forward, 1)
            .next()
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(self
            .write_snapshot(stream, &loaded.state, version, last.position(), &keys)?
            .then_some(version))
    }

    /// Add to `keys` the subject keys of the events `r` appended to
    /// `stream` from version `from` (read back: the log, not the command's
    /// events, says which were sealed and under which key).
    fn appended_keys(&self, stream: &str, from: u64, r: &AppendResult, keys: &mut BTreeSet<KeyId>) -> Result<()> {
        let view = self.log.view()?;
        for rec in view.read_stream(stream, from, Direction::Forward, r.stream_version + 1 - from) {
            keys.extend(rec?.subject_key());
        }
        Ok(())
    }

    /// Save the snapshot of `state` (which folded the sealed events of
    /// `keys`): whether it was written (`false`: one of `keys` was erased
    /// before or while it was saved, so there is none).
    fn write_snapshot(
        &self,
        stream: &str,
        state: &A,
        version: u64,
        position: u64,
        keys: &BTreeSet<KeyId>,
    ) -> Result<bool> {
        // The events a snapshot covers must be durable before it is: a power
        // cut must not keep a snapshot of events it took back (spec 20.4).
        self.log.sync()?;
        let payload = postcard::to_allocvec(state).map_err(|e| Error::Encode(e.to_string()))?;
        let snap = Snapshot {
            stream: stream.to_owned(),
            stream_version: version,
            position,
            schema_version: A::SNAPSHOT_VERSION,
            payload,
            subject_keys: keys.iter().copied().collect(),
        };
        // Asked under the save lock (spec 20.4); without the ring, not kept.
        let view = if keys.is_empty() { None } else { Some(self.log.view()?) };
        let erased = |k: KeyId| view.as_ref().is_none_or(|v| v.keys().map_or(true, |r| r.is_erased(k)));
        Ok(self.store.save(&snap, self.keep, &erased)?.is_some())
    }
}

fn empty<A: Aggregate>() -> Loaded<A> {
    Loaded {
        state: A::default(),
        version: None,
        snapshot_version: None,
        replayed: 0,
        warnings: Vec::new(),
    }
}
