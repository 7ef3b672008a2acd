//! Subscriptions: catch up on the events already in the log, then follow new
//! ones as they are appended, in order, each exactly once.
//!
//! A [`Subscription`] keeps a cursor (the next position, and for a stream
//! the next version) and, each time it runs out of buffered events, takes a
//! fresh point-in-time view and reads from the cursor on. Because the log is
//! append-only and views are consistent, reading "everything from the cursor"
//! in each new view leaves no gap and repeats nothing, including at the switch
//! from catch-up to live: there is no separate live channel to splice in.
//!
//! * From a [`crate::Log`] (the writer, in process), a caught-up subscription sleeps
//!   until the writer publishes new events (it is woken by the commit leader).
//! * From a [`Reader`] (any process), it polls the head file at a bounded
//!   interval ([`Subscription::poll_interval`], default 20 ms): never a busy
//!   loop. It follows segment rolls like [`Reader::view`] does.
//!
//! Events are delivered as [`OwnedRecord`]s (owned copies), so a subscriber
//! may keep them, send them to other threads, and take as long as it likes:
//! the log keeps everything, so a slow subscriber never loses an event.
//!
//! # Checkpoints
//!
//! The caller keeps a checkpoint: the position (for
//! [`crate::Log::subscribe_stream`], the stream version) of the last event it
//! handled. Subscribing again with `from = checkpoint + 1` delivers the next
//! event exactly once. For filtered subscriptions [`Subscription::position`]
//! may be saved instead: it also skips the non-matching events already passed.
//!
//! ```
//! # fn main() -> annal::Result<()> {
//! use std::time::Duration;
//! use annal::{EventData, ExpectedVersion, Log, Options};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path())?;
//! log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}".as_slice())])?;
//! let mut sub = log.subscribe_category("order", 0);
//! let first = sub.next_timeout(Duration::from_secs(1))?.expect("caught up");
//! assert_eq!((first.position, first.stream.as_str()), (0, "order-1"));
//! assert!(sub.try_next()?.is_none(), "nothing new yet");
//! log.append("order-2", ExpectedVersion::Any, &[EventData::new("Placed", b"{}".as_slice())])?;
//! let live = sub.next_timeout(Duration::from_secs(1))?.expect("live");
//! assert_eq!(live.position, 1);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::record::RecordRef;
use crate::format::sealed::KeyId;
use crate::read::logview::LogView;
use crate::read::reader::Reader;
use crate::types::Direction;

/// How many events a subscription copies out of one view at most before
/// handing them out (bounds its memory, whatever the backlog).
const MAX_BUFFERED: usize = 1024;

/// The default interval at which a [`Reader`]-based subscription polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// An owned copy of one record, as delivered by a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Global position.
    pub position: u64,
    /// The stream the event belongs to.
    pub stream: String,
    /// Version of the event within its stream (0 for the first).
    pub stream_version: u64,
    /// The event type.
    pub event_type: String,
    /// Append timestamp, nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// The event id.
    pub event_id: Uuid,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// Metadata bytes (decrypted for an event that names a subject; empty
    /// if erased).
    pub metadata: Vec<u8>,
    /// Payload bytes (decrypted for an event that names a subject; empty if
    /// erased).
    pub payload: Vec<u8>,
    /// The key of the subject the event names, if any (spec 3.8).
    pub subject_key: Option<KeyId>,
    /// The event's subject was erased: only the envelope is left.
    pub erased: bool,
}

impl OwnedRecord {
    /// An owned copy of `r` (a record of `view`), unsealed (spec 3.8).
    pub(crate) fn unsealed(view: &LogView, r: RecordRef<'_>) -> Result<OwnedRecord> {
        if r.is_sealed() {
            Ok(view.unseal(r)?.record().into())
        } else {
            Ok(r.into())
        }
    }
}

/// An owned copy of a record as it is: for a record still sealed
/// ([`RecordRef::is_sealed`]) that is the ciphertext; subscriptions copy
/// records unsealed.
impl From<RecordRef<'_>> for OwnedRecord {
    fn from(r: RecordRef<'_>) -> Self {
        OwnedRecord {
            position: r.position(),
            stream: r.stream().to_owned(),
            stream_version: r.stream_version(),
            event_type: r.event_type().to_owned(),
            timestamp: r.timestamp(),
            event_id: r.event_id(),
            schema_version: r.schema_version(),
            metadata: r.metadata().to_vec(),
            payload: r.payload().to_vec(),
            subject_key: r.subject_key(),
            erased: r.is_erased(),
        }
    }
}

/// Which events a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionFilter {
    /// Every event, in position order.
    All,
    /// The events of one stream, in version order.
    Stream(String),
    /// The events of every stream of a category (`<category>-<id>`), in
    /// position order.
    Category(String),
}

/// A log that publishes views as it grows and wakes those waiting for the
/// next one: the writer, in process. (The read layer does not know the
/// writer; the writer implements this.)
pub(crate) trait Live: Send + Sync + std::fmt::Debug {
    /// How many times new visible ends were published; read it before
    /// taking a view, then wait for it to change.
    fn published_epoch(&self) -> u64;
    /// A view of everything published so far.
    fn live_view(&self) -> Result<LogView>;
    /// Wait until the published epoch differs from `seen` or `timeout`
    /// passes; returns the current epoch.
    fn wait_published(&self, seen: u64, timeout: Duration) -> u64;
}

#[derive(Debug)]
enum Source<'a> {
    Log(&'a dyn Live),
    Reader(Box<Reader>),
}

/// Catch-up then live delivery of a log's events, created by
/// [`crate::Log::subscribe_all`], [`crate::Log::subscribe_stream`],
/// [`crate::Log::subscribe_category`] and the same methods of [`Reader`].
///
/// Pull events with [`Subscription::next_timeout`] /
/// [`Subscription::try_next`], or iterate: the iterator blocks until the next
/// event and never ends on its own (it ends only after yielding an error).
#[derive(Debug)]
pub struct Subscription<'a> {
    source: Source<'a>,
    filter: SubscriptionFilter,
    /// Every event below this position has been delivered or skipped.
    next_position: u64,
    /// For a stream subscription: the next version to deliver.
    next_version: u64,
    buffered: VecDeque<OwnedRecord>,
    poll_interval: Duration,
    /// The iterator yielded an error.
    failed: bool,
}

impl Reader {
    /// Subscribe to every event from position `from` on, following the files
    /// as the writer (in any process) grows and rolls them. The subscription
    /// owns the reader.
    pub fn subscribe_all(self, from: u64) -> Subscription<'static> {
        Subscription::new(Source::Reader(Box::new(self)), SubscriptionFilter::All, from, 0)
    }

    /// Subscribe to the events of `stream` from version `from_version` on.
    /// See [`Reader::subscribe_all`].
    pub fn subscribe_stream(self, stream: &str, from_version: u64) -> Subscription<'static> {
        Subscription::new(
            Source::Reader(Box::new(self)),
            SubscriptionFilter::Stream(stream.to_owned()),
            0,
            from_version,
        )
    }

    /// Subscribe to the events of every stream of `category` from position
    /// `from` on. See [`Reader::subscribe_all`].
    pub fn subscribe_category(self, category: &str, from: u64) -> Subscription<'static> {
        Subscription::new(
            Source::Reader(Box::new(self)),
            SubscriptionFilter::Category(category.to_owned()),
            from,
            0,
        )
    }
}

impl<'a> Subscription<'a> {
    /// A subscription fed by a live log (the writer, in process).
    pub(crate) fn live(log: &'a dyn Live, filter: SubscriptionFilter, next_position: u64, next_version: u64) -> Self {
        Subscription::new(Source::Log(log), filter, next_position, next_version)
    }

    fn new(source: Source<'a>, filter: SubscriptionFilter, next_position: u64, next_version: u64) -> Self {
        Subscription {
            source,
            filter,
            next_position,
            next_version,
            buffered: VecDeque::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            failed: false,
        }
    }

    /// Poll a [`Reader`]-based subscription at this interval while caught up
    /// (default [`DEFAULT_POLL_INTERVAL`]; at least 1 ms). Also the longest
    /// a [`crate::Log`]-based one sleeps between checks when iterated.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// What this subscription delivers.
    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    /// A position to resume from: past the last event delivered (and past
    /// non-matching events already passed over), at or before the next event
    /// to deliver. Subscribing again from here repeats nothing and misses
    /// nothing.
    pub fn position(&self) -> u64 {
        self.buffered.front().map_or(self.next_position, |r| r.position)
    }

    /// For a stream subscription, the next version it will deliver.
    pub fn next_version(&self) -> u64 {
        self.buffered.front().map_or(self.next_version, |r| r.stream_version)
    }

    /// The next event, if there is one now (never waits for the writer).
    pub fn try_next(&mut self) -> Result<Option<OwnedRecord>> {
        self.next_timeout(Duration::ZERO)
    }

    /// The next event, waiting up to `timeout` for one to be appended.
    /// `Ok(None)` if none came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedRecord>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Ok(Some(r));
            }
            // Read the epoch before the view: a publish after this read wakes
            // the wait below, one before it is in the view.
            let epoch = match &self.source {
                Source::Log(log) => Some(log.published_epoch()),
                Source::Reader(_) => None,
            };
            let view = match &mut self.source {
                Source::Log(log) => log.live_view()?,
                Source::Reader(r) => r.view()?,
            };
            self.fill(&view)?;
            drop(view);
            if !self.buffered.is_empty() {
                continue;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return Ok(None),
                Some(d) => d - now,
                None => Duration::MAX,
            };
            match (&self.source, epoch) {
                (Source::Log(log), Some(e)) => {
                    log.wait_published(e, left);
                }
                _ => std::thread::sleep(left.min(self.poll_interval)),
            }
        }
    }

    /// Copy up to [`MAX_BUFFERED`] events past the cursor out of `view` and
    /// advance the cursor past them (or past the whole view if it held fewer).
    fn fill(&mut self, view: &LogView) -> Result<()> {
        let mut n = 0;
        match &self.filter {
            SubscriptionFilter::All => {
                for r in view.read_all(self.next_position).take(MAX_BUFFERED) {
                    self.push(OwnedRecord::unsealed(view, r?)?);
                    n += 1;
                }
            }
            SubscriptionFilter::Category(c) => {
                for r in view.read_category(c, self.next_position).take(MAX_BUFFERED) {
                    self.push(OwnedRecord::unsealed(view, r?)?);
                    n += 1;
                }
            }
            SubscriptionFilter::Stream(s) => {
                let it = view.read_stream(s, self.next_version, Direction::Forward, MAX_BUFFERED as u64);
                for r in it {
                    let r = match r {
                        Ok(r) => r,
                        // A deleted stream has nothing to deliver now; a
                        // soft-deleted one may start a new life (spec 3.7).
                        Err(Error::StreamDeleted { .. }) => break,
                        Err(e) => return Err(e),
                    };
                    self.push(OwnedRecord::unsealed(view, r)?);
                    n += 1;
                }
            }
        }
        if n < MAX_BUFFERED {
            // Everything visible in this view has been considered.
            self.next_position = self.next_position.max(view.next_position());
        }
        Ok(())
    }

    fn push(&mut self, r: OwnedRecord) {
        self.next_position = r.position + 1;
        self.next_version = r.stream_version + 1;
        self.buffered.push_back(r);
    }
}

impl Iterator for Subscription<'_> {
    type Item = Result<OwnedRecord>;

    /// Block until the next event. After an error, the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.next_timeout(self.poll_interval.max(Duration::from_millis(100))) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
