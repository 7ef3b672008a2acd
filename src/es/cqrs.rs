//! annal as a [cqrs-es](https://docs.rs/cqrs-es/0.5) 0.5 backend (feature
//! `cqrs-es`): [`AnnalEventRepository`] implements cqrs-es's
//! [`PersistedEventRepository`] over a [`Log`], and [`annal_cqrs`] /
//! [`annal_snapshot_cqrs`] / [`annal_aggregate_cqrs`] build a
//! [`CqrsFramework`] over it, as postgres-es's `postgres_cqrs` does.
//!
//! This module owns the mapping between cqrs-es's rows and annal's records:
//!
//! | cqrs-es | annal |
//! |---|---|
//! | aggregate type `T`, aggregate id `I` | stream `T-I`: category `T` ([`crate::category_of`]) |
//! | sequence `n` (from 1) | stream version `n - 1` (from 0) |
//! | event type | the record's event type |
//! | payload (JSON) | the record's payload: JSON bytes |
//! | event version (a string) and metadata (JSON) | the record's metadata: the JSON object `{"event_version": .., "metadata": ..}` |
//! | snapshot (aggregate JSON, sequence, snapshot number) | a snapshot file (spec 20) of stream `T-I`, schema [`SNAPSHOT_SCHEMA`], whose payload is the JSON object `{"aggregate": .., "current_sequence": .., "current_snapshot": ..}` |
//!
//! Invariants:
//! - An aggregate type is 1 or more bytes without `-` and not starting with
//!   `$` (system streams), so the category of `T-I` is exactly `T` whatever
//!   `I` holds (ids may contain `-`, as UUIDs do); any other type is refused
//!   ([`PersistenceError::UnknownError`]) before anything is read or written.
//! - A commit is one annal append, atomic: its expected version is the one
//!   its first sequence implies (`NoStream` for sequence 1, else
//!   `Exact(first - 2)`), so a concurrent commit fails whole with
//!   [`PersistenceError::OptimisticLockError`]. Sequences within a commit
//!   must follow each other.
//! - Every append goes through one private async function, which runs the
//!   append on tokio's blocking pool: a runtime worker never waits for a
//!   group commit or an fsync. Snapshot files are written there too. Reads
//!   (memory-mapped) run inline.
//! - A snapshot is written after its events are appended, never before, and
//!   a snapshot is returned only if the event at its sequence is the one it
//!   was taken after (same global position): a snapshot that a crash left
//!   ahead of its events (with [`crate::Durability::Buffered`]) is ignored.
//!   Snapshots and events are not one atomic step, so a crash between the
//!   two leaves the snapshot behind its stream: cqrs-es's snapshot mode
//!   replays the events after it, and a repository made for the aggregate
//!   mode ([`AnnalEventRepository::for_aggregate_store`]) applies the
//!   events after such a snapshot before it returns it.
//! - A snapshot update without events checks the snapshot number (it must
//!   be the stored one plus 1, else an optimistic-lock error), as
//!   postgres-es does; with events, the append's version check decides.
//!
//! A snapshot's sequence is the last committed event's, as the other
//! cqrs-es backends record it.
//!
//! Note (cqrs-es 0.5.0, any backend): through [`CqrsFramework::execute`], a
//! snapshot gets each new event applied twice (once by the handler's
//! `EventSink::write`, once by the store's snapshot update), so the
//! snapshot and aggregate modes suit only an `apply` that is idempotent
//! (one that sets state the event carries). `tests/cqrs_es.rs` holds a
//! tripwire that fails once cqrs-es fixes it.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use annal::cqrs::{annal_cqrs, AnnalEventRepository};
//! use cqrs_es::persist::PersistedEventRepository;
//! use cqrs_es::event_sink::EventSink;
//! use cqrs_es::{Aggregate, DomainEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { n: u64 }
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! struct Added(u64);
//! impl DomainEvent for Added {
//!     fn event_type(&self) -> String { "Added".into() }
//!     fn event_version(&self) -> String { "1.0".into() }
//! }
//! #[derive(Debug, thiserror::Error)]
//! #[error("refused")]
//! struct Refused;
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "counter";
//!     type Command = u64;
//!     type Event = Added;
//!     type Error = Refused;
//!     type Services = ();
//!     async fn handle(&mut self, by: u64, _: &(), sink: &EventSink<Self>) -> Result<(), Refused> {
//!         sink.write(Added(by), self).await;
//!         Ok(())
//!     }
//!     fn apply(&mut self, e: Added) { self.n += e.0; }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let log = annal::Log::open(dir.path())?;
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let cqrs = annal_cqrs::<Counter>(log.clone(), vec![], ());
//!     cqrs.execute("c-1", 2).await?;
//!     cqrs.execute("c-1", 3).await?;
//!     // The events are annal records of stream "counter-c-1", versions 0 and 1.
//!     let events = AnnalEventRepository::new(log.clone()).get_events::<Counter>("c-1").await?;
//!     assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
//!     assert_eq!(log.stream_version("counter-c-1")?, Some(1));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```

use std::sync::Mutex;

pub use cqrs_es;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayFeed, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, CqrsFramework, EventEnvelope, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::es::snapshot::{Snapshot, SnapshotStore};
use crate::format::record::{EventData, RecordRef};
use crate::read::view::LogView;
use crate::types::{Direction, ExpectedVersion};
use crate::writer::{AppendResult, Log};

/// The schema version of the snapshot files this backend writes (spec 20:
/// an application's choice): `"cqrs"` in ASCII, so that annal's own
/// [`crate::Repository`] never takes one of them for its state.
pub const SNAPSHOT_SCHEMA: u32 = u32::from_be_bytes(*b"cqrs");

/// How many snapshot files of one aggregate are kept (the newest).
const SNAPSHOTS_KEPT: usize = 2;

/// The replay channel's default size (as postgres-es's).
const DEFAULT_STREAM_CHANNEL_SIZE: usize = 200;

/// Snapshot updates of this process, one at a time: a snapshot update
/// without events reads the stored snapshot number and writes the next.
static SNAPSHOT_LOCK: Mutex<()> = Mutex::new(());

/// A [`CqrsFramework`] whose events live in an annal log.
pub type AnnalCqrs<A> = CqrsFramework<A, PersistedEventStore<AnnalEventRepository, A>>;

/// A [`CqrsFramework`] over `log` that loads aggregates from their events
/// (no snapshots): postgres-es's `postgres_cqrs`, on annal.
pub fn annal_cqrs<A: Aggregate>(log: Log, queries: Vec<Box<dyn Query<A>>>, services: A::Services) -> AnnalCqrs<A> {
    let store = PersistedEventStore::new_event_store(AnnalEventRepository::new(log));
    CqrsFramework::new(store, queries, services)
}

/// A [`CqrsFramework`] over `log` that writes a snapshot every
/// `snapshot_size` events and loads an aggregate from its newest snapshot
/// and the events after it.
pub fn annal_snapshot_cqrs<A: Aggregate>(
    log: Log,
    queries: Vec<Box<dyn Query<A>>>,
    snapshot_size: usize,
    services: A::Services,
) -> AnnalCqrs<A> {
    let store = PersistedEventStore::new_snapshot_store(AnnalEventRepository::new(log), snapshot_size);
    CqrsFramework::new(store, queries, services)
}

/// A [`CqrsFramework`] over `log` whose aggregates load from a snapshot
/// written at every commit (cqrs-es's aggregate store), with the repository
/// of [`AnnalEventRepository::for_aggregate_store`].
pub fn annal_aggregate_cqrs<A: Aggregate>(
    log: Log,
    queries: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> AnnalCqrs<A> {
    let store = PersistedEventStore::new_aggregate_store(AnnalEventRepository::for_aggregate_store(log));
    CqrsFramework::new(store, queries, services)
}

/// cqrs-es's [`PersistedEventRepository`] over an annal [`Log`] (see the
/// [module documentation](self) for the mapping). Cheap to clone: clones
/// share the log.
#[derive(Clone, Debug)]
pub struct AnnalEventRepository {
    log: Log,
    stream_channel_size: usize,
    current_snapshots: bool,
}

impl AnnalEventRepository {
    /// A repository over `log` (a clone of the caller's handle is fine: the
    /// log closes when its last clone drops).
    pub fn new(log: Log) -> AnnalEventRepository {
        AnnalEventRepository {
            log,
            stream_channel_size: DEFAULT_STREAM_CHANNEL_SIZE,
            current_snapshots: false,
        }
    }

    /// A repository for cqrs-es's aggregate store
    /// (`PersistedEventStore::new_aggregate_store`), which trusts a snapshot
    /// as the whole state and reads no event after it: a snapshot that is
    /// missing or behind its stream's newest event (a crash between an
    /// append and its snapshot) is brought up to date here, with the
    /// events after it applied (not upcast: an event that does not
    /// deserialize as it is stored is an error).
    pub fn for_aggregate_store(log: Log) -> AnnalEventRepository {
        AnnalEventRepository {
            current_snapshots: true,
            ..AnnalEventRepository::new(log)
        }
    }

    /// The number of events buffered between a reader of
    /// [`PersistedEventRepository::stream_events`] and the task that reads
    /// the log (at least 1; default 200).
    pub fn with_streaming_channel_size(mut self, size: usize) -> AnnalEventRepository {
        self.stream_channel_size = size.max(1);
        self
    }

    /// The log this repository reads and appends to.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The stream of aggregate `aggregate_id` of type `aggregate_type`:
    /// `<aggregate_type>-<aggregate_id>`. Refuses a type that is empty,
    /// holds a `-` or starts with `$`.
    ///
    /// ```
    /// use annal::cqrs::AnnalEventRepository;
    /// assert_eq!(AnnalEventRepository::stream_name("account", "a-1").unwrap(), "account-a-1");
    /// assert_eq!(annal::category_of("account-a-1"), Some("account"));
    /// assert!(AnnalEventRepository::stream_name("bank-account", "1").is_err());
    /// ```
    pub fn stream_name(aggregate_type: &str, aggregate_id: &str) -> Result<String, PersistenceError> {
        check_type(aggregate_type)?;
        Ok(format!("{aggregate_type}-{aggregate_id}"))
    }

    /// Every event of `stream` from version `from` on, as cqrs-es rows.
    fn read_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = Self::stream_name(aggregate_type, aggregate_id)?;
        let view = self.log.view().map_err(persistence)?;
        let mut out = Vec::new();
        for r in view.read_stream(&stream, from, Direction::Forward, u64::MAX) {
            let r = r.map_err(persistence)?;
            out.push(serialized(&view, r, aggregate_type, aggregate_id)?);
        }
        Ok(out)
    }

    /// `snap` (or the default state) with the events after it applied: the
    /// state after the stream's newest event, for cqrs-es's aggregate store
    /// (which reads no event after a snapshot). The events are not upcast
    /// (the repository does not know the store's upcasters): one that does
    /// not deserialize is an error.
    fn catch_up<A: Aggregate>(
        &self,
        aggregate_id: &str,
        snap: Option<SnapshotBody>,
    ) -> Result<SnapshotBody, PersistenceError> {
        // A snapshot of another shape of the state is replayed over, as
        // cqrs-es does with one that does not deserialize.
        let (mut state, mut current_sequence, current_snapshot) = match snap {
            Some(s) => match serde_json::from_value::<A>(s.aggregate) {
                Ok(state) => (state, s.current_sequence, s.current_snapshot),
                Err(_) => (A::default(), 0, s.current_snapshot),
            },
            None => (A::default(), 0, 0),
        };
        for e in self.read_events(A::TYPE, aggregate_id, current_sequence as u64)? {
            current_sequence = e.sequence;
            state.apply(EventEnvelope::<A>::try_from(e)?.payload);
        }
        Ok(SnapshotBody {
            aggregate: serde_json::to_value(&state)?,
            current_sequence,
            current_snapshot,
        })
    }

    /// Feed what `read` yields into a new replay stream, from a blocking
    /// thread (the reads may walk the whole log). Stops when the stream is
    /// dropped.
    fn replay<F>(&self, read: F) -> Result<ReplayStream, PersistenceError>
    where
        F: FnOnce(&LogView, &mut dyn FnMut(Result<SerializedEvent, PersistenceError>) -> bool) + Send + 'static,
    {
        let (mut feed, stream) = ReplayStream::new(self.stream_channel_size);
        let log = self.log.clone();
        let handle = runtime()?;
        // The task ends by itself: when the reads end or the stream is dropped.
        drop(handle.clone().spawn_blocking(move || {
            let mut push = |e: Result<SerializedEvent, PersistenceError>| push_blocking(&handle, &mut feed, e);
            match log.view() {
                Ok(view) => read(&view, &mut push),
                Err(e) => {
                    push(Err(persistence(e)));
                }
            }
        }));
        Ok(stream)
    }
}

/// Push one event into `feed` from a blocking thread: whether the stream
/// still listens.
fn push_blocking(
    handle: &tokio::runtime::Handle,
    feed: &mut ReplayFeed,
    event: Result<SerializedEvent, PersistenceError>,
) -> bool {
    handle.block_on(feed.push(event)).is_ok()
}

impl PersistedEventRepository for AnnalEventRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read_events(A::TYPE, aggregate_id, 0)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        // Sequences after `last_sequence`: versions from `last_sequence` on.
        self.read_events(A::TYPE, aggregate_id, last_sequence as u64)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let stream = Self::stream_name(A::TYPE, aggregate_id)?;
        let view = self.log.view().map_err(persistence)?;
        let newest = newest_event(&view, &stream)?;
        let mut found = load_snapshot(&self.log, &view, &stream, newest)?;
        let want = newest.map_or(0, |(seq, _)| seq);
        if self.current_snapshots && found.as_ref().map_or(0, |s| s.current_sequence) != want {
            found = Some(self.catch_up::<A>(aggregate_id, found)?);
        }
        Ok(found.map(|s| SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: s.aggregate,
            current_sequence: s.current_sequence,
            current_snapshot: s.current_snapshot,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let appended = match events.first() {
            None => None,
            Some(first) => {
                let stream = Self::stream_name(A::TYPE, &first.aggregate_id)?;
                let (expected, data) = commit_data(A::TYPE, events)?;
                let result = append(&self.log, stream, expected, data).await?;
                Some((first.sequence + events.len() - 1, result))
            }
        };
        if let Some((aggregate_id, aggregate, current_snapshot)) = snapshot_update {
            let stream = Self::stream_name(A::TYPE, &aggregate_id)?;
            let log = self.log.clone();
            runtime()?
                .spawn_blocking(move || save_snapshot(&log, &stream, aggregate, current_snapshot, appended))
                .await
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))??;
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        let stream = Self::stream_name(A::TYPE, aggregate_id)?;
        let id = aggregate_id.to_owned();
        self.replay(move |view, push| {
            for r in view.read_stream(&stream, 0, Direction::Forward, u64::MAX) {
                let e = r.map_err(persistence).and_then(|r| serialized(view, r, A::TYPE, &id));
                let failed = e.is_err();
                if !push(e) || failed {
                    return;
                }
            }
        })
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        check_type(A::TYPE)?;
        self.replay(move |view, push| {
            for r in view.read_category(A::TYPE, 0) {
                let e = r.map_err(persistence).and_then(|r| {
                    let id = aggregate_id_of(A::TYPE, r.stream())?.to_owned();
                    serialized(view, r, A::TYPE, &id)
                });
                let failed = e.is_err();
                if !push(e) || failed {
                    return;
                }
            }
        })
    }
}

/// Append `events` to `stream`: the one path of every append of this
/// backend. [`Log::append_async`]: no runtime worker waits for a group
/// commit or an fsync, and no thread is held per waiting commit.
async fn append(
    log: &Log,
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EventData<'static>>,
) -> Result<AppendResult, PersistenceError> {
    log.append_async(&stream, expected, &events).await.map_err(persistence)
}

/// The record metadata of one event: its version and cqrs-es metadata.
#[derive(Serialize)]
struct MetaOut<'a> {
    event_version: &'a str,
    metadata: &'a Value,
}

/// [`MetaOut`], read back.
#[derive(Deserialize)]
struct MetaIn {
    event_version: String,
    metadata: Value,
}

/// The payload of a snapshot file.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    aggregate: Value,
    current_sequence: usize,
    current_snapshot: usize,
}

/// The expected version and the records of a commit of `events` (one
/// aggregate of type `aggregate_type`, consecutive sequences).
fn commit_data(
    aggregate_type: &str,
    events: &[SerializedEvent],
) -> Result<(ExpectedVersion, Vec<EventData<'static>>), PersistenceError> {
    let Some(first) = events.first() else {
        return Ok((ExpectedVersion::Any, Vec::new()));
    };
    if first.sequence == 0 {
        return Err(invalid("cqrs-es sequences start at 1, got 0"));
    }
    let mut data = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if e.aggregate_id != first.aggregate_id || e.aggregate_type != aggregate_type {
            return Err(invalid(format!(
                "one commit holds events of one aggregate: {aggregate_type}/{} and {}/{}",
                first.aggregate_id, e.aggregate_type, e.aggregate_id
            )));
        }
        let want = first.sequence + i;
        if e.sequence < want {
            // It names a sequence an earlier event of the commit (or of the
            // stream) holds: the commit lost a race or was built on a stale
            // state.
            return Err(PersistenceError::OptimisticLockError);
        }
        if e.sequence > want {
            return Err(invalid(format!("sequence {} follows {}: a gap", e.sequence, want - 1)));
        }
        let payload = serde_json::to_vec(&e.payload).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let meta = MetaOut {
            event_version: &e.event_version,
            metadata: &e.metadata,
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        data.push(EventData::new(e.event_type.clone(), payload).with_metadata(meta));
    }
    let expected = match first.sequence {
        1 => ExpectedVersion::NoStream,
        n => ExpectedVersion::Exact(n as u64 - 2),
    };
    Ok((expected, data))
}

/// The tokio runtime the caller runs on: appends, snapshot writes and
/// replays run on its blocking pool. Outside one, an error (never a panic).
fn runtime() -> Result<tokio::runtime::Handle, PersistenceError> {
    tokio::runtime::Handle::try_current().map_err(|e| PersistenceError::UnknownError(Box::new(e)))
}

/// Record `r` of stream `<aggregate_type>-<aggregate_id>` as a cqrs-es row.
fn serialized(
    view: &LogView,
    r: RecordRef<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<SerializedEvent, PersistenceError> {
    let sequence = usize::try_from(r.stream_version() + 1)
        .map_err(|_| invalid(format!("stream version {} is beyond usize", r.stream_version())))?;
    let position = r.position();
    let event_type = r.event_type().to_owned();
    let unsealed = view.unseal(r).map_err(persistence)?;
    let bad = |what: &str, e: serde_json::Error| {
        PersistenceError::DeserializationError(
            format!(
                "the event at position {position} of {aggregate_type}-{aggregate_id}: its {what} is not JSON ({e})"
            )
            .into(),
        )
    };
    let payload: Value = serde_json::from_slice(unsealed.payload()).map_err(|e| bad("payload", e))?;
    let meta: MetaIn = serde_json::from_slice(unsealed.metadata()).map_err(|e| bad("metadata envelope", e))?;
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        aggregate_type: aggregate_type.to_owned(),
        event_type,
        event_version: meta.event_version,
        payload,
        metadata: meta.metadata,
    })
}

/// The sequence and global position of the newest event of `stream`.
fn newest_event(view: &LogView, stream: &str) -> Result<Option<(usize, u64)>, PersistenceError> {
    match view.read_stream(stream, u64::MAX, Direction::Backward, 1).next() {
        None => Ok(None),
        Some(Err(e)) => Err(persistence(e)),
        Some(Ok(r)) => Ok(Some((r.stream_version() as usize + 1, r.position()))),
    }
}

/// The newest snapshot of `stream` that its events bear out: at a sequence
/// the stream has, taken after the event now at that sequence (`newest`:
/// the stream's newest event).
fn load_snapshot(
    log: &Log,
    view: &LogView,
    stream: &str,
    newest: Option<(usize, u64)>,
) -> Result<Option<SnapshotBody>, PersistenceError> {
    let store = SnapshotStore::new(log.dir(), log.io().clone());
    let max_version = newest.map_or(0, |(seq, _)| seq as u64 - 1);
    // This backend never writes a snapshot naming a subject key.
    let (found, _warnings) = store
        .load(stream, SNAPSHOT_SCHEMA, Some(max_version), &|_| false)
        .map_err(persistence)?;
    let Some(snap) = found else {
        return Ok(None);
    };
    let body: SnapshotBody = serde_json::from_slice(&snap.payload).map_err(PersistenceError::from)?;
    let borne_out = match body.current_sequence {
        0 => true,
        seq => view
            .read_stream(stream, seq as u64 - 1, Direction::Forward, 1)
            .next()
            .transpose()
            .map_err(persistence)?
            .is_some_and(|r| r.position() == snap.position && r.stream_version() + 1 == seq as u64),
    };
    Ok(borne_out.then_some(body))
}

/// Write the snapshot of `stream` (`aggregate`, snapshot number
/// `current_snapshot`), after `appended` (the last sequence and the
/// append's result) or, without events, at the stream's newest event once
/// the snapshot number is checked.
fn save_snapshot(
    log: &Log,
    stream: &str,
    aggregate: Value,
    current_snapshot: usize,
    appended: Option<(usize, AppendResult)>,
) -> Result<(), PersistenceError> {
    let _guard = SNAPSHOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (current_sequence, position) = match appended {
        Some((seq, result)) => (seq, result.last_position),
        None => {
            let view = log.view().map_err(persistence)?;
            let newest = newest_event(&view, stream)?;
            let stored = load_snapshot(log, &view, stream, newest)?.map_or(0, |s| s.current_snapshot);
            if current_snapshot != stored + 1 {
                return Err(PersistenceError::OptimisticLockError);
            }
            newest.unwrap_or((0, 0))
        }
    };
    let body = SnapshotBody {
        aggregate,
        current_sequence,
        current_snapshot,
    };
    let snap = Snapshot {
        stream: stream.to_owned(),
        stream_version: current_sequence.saturating_sub(1) as u64,
        position,
        schema_version: SNAPSHOT_SCHEMA,
        payload: serde_json::to_vec(&body).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
        subject_keys: Vec::new(),
    };
    SnapshotStore::new(log.dir(), log.io().clone())
        .save(&snap, SNAPSHOTS_KEPT, &|_| false)
        .map_err(persistence)?;
    Ok(())
}

/// Refuse an aggregate type whose streams' category would not be itself.
fn check_type(aggregate_type: &str) -> Result<(), PersistenceError> {
    if aggregate_type.is_empty() || aggregate_type.contains('-') || aggregate_type.starts_with('$') {
        return Err(invalid(format!(
            "aggregate type {aggregate_type:?}: annal stores an aggregate in stream <type>-<id>, so a type is not \
             empty, holds no '-' and does not start with '$'"
        )));
    }
    Ok(())
}

/// The aggregate id of `stream`, one of category `aggregate_type`.
fn aggregate_id_of<'s>(aggregate_type: &str, stream: &'s str) -> Result<&'s str, PersistenceError> {
    stream
        .strip_prefix(aggregate_type)
        .and_then(|rest| rest.strip_prefix('-'))
        .ok_or_else(|| invalid(format!("stream {stream:?} is not of category {aggregate_type:?}")))
}

/// A refused argument.
fn invalid(msg: impl Into<String>) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(Error::InvalidArgument(msg.into())))
}

/// An annal error as cqrs-es sees it: a concurrency conflict is its
/// optimistic-lock error; a log that cannot be used (I/O, locked by another
/// process, poisoned, not a log) a connection error; the rest (damage,
/// refused arguments, deleted streams) unknown errors.
fn persistence(e: Error) -> PersistenceError {
    match e {
        Error::WrongExpectedVersion { .. } => PersistenceError::OptimisticLockError,
        e @ (Error::Io { .. } | Error::Locked { .. } | Error::Poisoned { .. } | Error::NotALog { .. }) => {
            PersistenceError::ConnectionError(Box::new(e))
        }
        e => PersistenceError::UnknownError(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: usize) -> SerializedEvent {
        SerializedEvent::new(
            "a".into(),
            seq,
            "T".into(),
            "E".into(),
            "1.0".into(),
            serde_json::json!({"x": seq}),
            serde_json::json!({}),
        )
    }

    #[test]
    fn the_first_sequence_decides_the_expected_version() {
        assert_eq!(
            commit_data("T", &[event(1), event(2)]).map(|c| c.0).ok(),
            Some(ExpectedVersion::NoStream)
        );
        assert_eq!(
            commit_data("T", &[event(3)]).map(|c| c.0).ok(),
            Some(ExpectedVersion::Exact(1))
        );
    }

    #[test]
    fn sequences_must_follow_each_other() {
        assert!(matches!(
            commit_data("T", &[event(3), event(2)]),
            Err(PersistenceError::OptimisticLockError)
        ));
        assert!(matches!(
            commit_data("T", &[event(3), event(5)]),
            Err(PersistenceError::UnknownError(_))
        ));
        assert!(matches!(
            commit_data("T", &[event(0)]),
            Err(PersistenceError::UnknownError(_))
        ));
        assert!(matches!(
            commit_data("U", &[event(1)]),
            Err(PersistenceError::UnknownError(_))
        ));
    }

    #[test]
    fn types_that_would_change_the_category_are_refused() {
        for t in ["", "bank-account", "$meta"] {
            assert!(check_type(t).is_err(), "{t:?}");
        }
        assert_eq!(aggregate_id_of("account", "account-a-b").ok(), Some("a-b"));
        assert!(aggregate_id_of("account", "accounts-1").is_err());
    }
}
