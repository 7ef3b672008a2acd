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
//! A subscription owns what it reads from (a clone of the [`crate::Log`], or
//! the [`Reader`]): it is `'static` and `Send`, so it moves into a spawned
//! thread or task. [`Subscription::event_types`] narrows any subscription to
//! some event types. With the feature `tokio`,
//! [`Subscription::into_stream`] turns it into a `futures::Stream`: a
//! caught-up stream on a log is woken by the writer (a waker, no thread),
//! one on a [`Reader`] polls with a tokio timer.
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
//! log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
//! let mut sub = log.subscribe_category("order", 0);
//! let first = sub.next_timeout(Duration::from_secs(1))?.expect("caught up");
//! assert_eq!((first.position, first.stream.as_str()), (0, "order-1"));
//! assert!(sub.try_next()?.is_none(), "nothing new yet");
//! log.append("order-2", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
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
#[non_exhaustive]
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
    /// The payload is JSON (the record flag of format version 5, spec 3.11).
    pub json: bool,
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
            json: r.is_json(),
        }
    }
}

/// Which events a subscription delivers (see also
/// [`Subscription::event_types`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Have `waker` woken when the published epoch changes from `seen`;
    /// `false` (and nothing kept) if it already has.
    #[cfg(feature = "tokio")]
    fn wake_on_publish(&self, seen: u64, waker: &std::task::Waker) -> bool;
    /// Why the log will publish nothing more ([`Error::Closed`], or
    /// poisoned), if so; read before taking a view: a view taken after
    /// holds everything it will ever publish.
    fn ended(&self) -> Option<Error>;
}

#[derive(Debug)]
enum Source {
    Log(Box<dyn Live>),
    Reader(Box<Reader>),
}

/// Catch-up then live delivery of a log's events, created by
/// [`crate::Log::subscribe_all`], [`crate::Log::subscribe_stream`],
/// [`crate::Log::subscribe_category`] and the same methods of [`Reader`].
///
/// Pull events with [`Subscription::next_timeout`] /
/// [`Subscription::try_next`], or iterate: the iterator blocks until the next
/// event and never ends on its own (it ends only after yielding an error).
///
/// A subscription owns its source (a clone of the log, or the reader): move
/// it into a thread or a task freely.
pub struct Subscription {
    source: Source,
    filter: SubscriptionFilter,
    /// Deliver only events of these types (all if empty).
    event_types: Vec<String>,
    /// Every event below this position has been delivered or skipped.
    next_position: u64,
    /// For a stream subscription: the next version to deliver.
    next_version: u64,
    buffered: VecDeque<OwnedRecord>,
    poll_interval: Duration,
    /// The iterator yielded an error.
    failed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("source", &self.source)
            .field("filter", &self.filter)
            .field("event_types", &self.event_types)
            .field("next_position", &self.next_position)
            .field("next_version", &self.next_version)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Subscribe to every event from position `from` on, following the files
    /// as the writer (in any process) grows and rolls them. The subscription
    /// owns the reader.
    pub fn subscribe_all(self, from: u64) -> Subscription {
        Subscription::new(Source::Reader(Box::new(self)), SubscriptionFilter::All, from, 0)
    }

    /// Subscribe to the events of `stream` from version `from_version` on.
    /// See [`Reader::subscribe_all`].
    pub fn subscribe_stream(self, stream: &str, from_version: u64) -> Subscription {
        Subscription::new(
            Source::Reader(Box::new(self)),
            SubscriptionFilter::Stream(stream.to_owned()),
            0,
            from_version,
        )
    }

    /// Subscribe to the events of every stream of `category` from position
    /// `from` on. See [`Reader::subscribe_all`].
    pub fn subscribe_category(self, category: &str, from: u64) -> Subscription {
        Subscription::new(
            Source::Reader(Box::new(self)),
            SubscriptionFilter::Category(category.to_owned()),
            from,
            0,
        )
    }
}

impl Subscription {
    /// A subscription fed by a live log (the writer, in process).
    pub(crate) fn live(log: Box<dyn Live>, filter: SubscriptionFilter, next_position: u64, next_version: u64) -> Self {
        Subscription::new(Source::Log(log), filter, next_position, next_version)
    }

    fn new(source: Source, filter: SubscriptionFilter, next_position: u64, next_version: u64) -> Self {
        Subscription {
            source,
            filter,
            event_types: Vec::new(),
            next_position,
            next_version,
            buffered: VecDeque::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            failed: false,
        }
    }

    /// Deliver only events of these types (the others are passed over: the
    /// cursor, [`Subscription::position`], moves past them). Calling it
    /// again replaces the list; an empty list delivers every type.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}"), EventData::new("Paid", b"{}")])?;
    /// let mut paid = log.subscribe_all(0).event_types(["Paid"]);
    /// assert_eq!(paid.try_next()?.map(|r| r.position), Some(1));
    /// assert_eq!(paid.try_next()?, None);
    /// # Ok(()) }
    /// ```
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
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

    /// Read before taking a view, from a log in this process: its published
    /// epoch (a publish after this wakes the wait that follows, one before
    /// it is in the view) and whether it ended (then the view holds all it
    /// will ever publish). `(None, None)` for a [`Reader`].
    fn before_view(&self) -> (Option<u64>, Option<Error>) {
        match &self.source {
            Source::Log(log) => (Some(log.published_epoch()), log.ended()),
            Source::Reader(_) => (None, None),
        }
    }

    /// The next event, if there is one now (never waits for the writer).
    pub fn try_next(&mut self) -> Result<Option<OwnedRecord>> {
        self.next_timeout(Duration::ZERO)
    }

    /// The next event, waiting up to `timeout` for one to be appended.
    /// `Ok(None)` if none came in time. On a [`Log`](crate::Log) that was
    /// closed (by any clone) or poisoned, once every event it published was
    /// delivered: [`Error::Closed`] or [`Error::Poisoned`], at once (nothing
    /// more can come).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedRecord>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Ok(Some(r));
            }
            // Read the epoch before the view: a publish after this read wakes
            // the wait below, one before it is in the view.
            let (epoch, ended) = self.before_view();
            if !self.refill()? {
                continue;
            }
            // Caught up with a view taken after the log ended.
            if let Some(e) = ended {
                return Err(e);
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

    /// Read past the cursor in a fresh view: `false` if more may be read at
    /// once (something was buffered, or the view was not read to its end),
    /// `true` if the subscription is caught up with everything published.
    fn refill(&mut self) -> Result<bool> {
        let view = match &mut self.source {
            Source::Log(log) => log.live_view()?,
            Source::Reader(r) => r.view()?,
        };
        let read_to_end = self.fill(&view)?;
        Ok(read_to_end && self.buffered.is_empty())
    }

    /// Consider up to [`MAX_BUFFERED`] events past the cursor in `view`,
    /// copying out those that match and advancing the cursor past all of
    /// them (or past the whole view if it held fewer): whether the view was
    /// read to its end.
    fn fill(&mut self, view: &LogView) -> Result<bool> {
        let mut n = 0;
        match &self.filter {
            SubscriptionFilter::All => {
                for r in view.read_all(self.next_position).take(MAX_BUFFERED) {
                    self.take(view, r?)?;
                    n += 1;
                }
            }
            SubscriptionFilter::Category(c) => {
                for r in view.read_category(c, self.next_position).take(MAX_BUFFERED) {
                    self.take(view, r?)?;
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
                    self.take(view, r)?;
                    n += 1;
                }
            }
        }
        let read_to_end = n < MAX_BUFFERED;
        if read_to_end {
            // Everything visible in this view has been considered.
            self.next_position = self.next_position.max(view.next_position());
        }
        Ok(read_to_end)
    }

    /// Move the cursor past `r`, buffering a copy of it if it matches.
    fn take(&mut self, view: &LogView, r: RecordRef<'_>) -> Result<()> {
        self.next_position = r.position() + 1;
        self.next_version = r.stream_version() + 1;
        if self.event_types.is_empty() || self.event_types.iter().any(|t| t == r.event_type()) {
            self.buffered.push_back(OwnedRecord::unsealed(view, r)?);
        }
        Ok(())
    }
}

impl Iterator for Subscription {
    type Item = Result<OwnedRecord>;

    /// Block until the next event. After an error, the iterator ends; on a
    /// [`Log`](crate::Log) that was closed, it ends once every event the log
    /// published was delivered (a poisoned log's cause is its last item).
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.next_timeout(self.poll_interval.max(Duration::from_millis(100))) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(Error::Closed) => {
                    self.failed = true;
                    return None;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(feature = "tokio")]
impl Subscription {
    /// This subscription as a `futures::Stream` of events (feature `tokio`),
    /// which never blocks the task's thread.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use futures::StreamExt;
    /// use annal::{EventData, ExpectedVersion, Log};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
    /// let mut events = log.subscribe_all(0).into_stream();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// let first = rt.block_on(events.next()).expect("an event")?;
    /// assert_eq!(first.event_type, "Placed");
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> SubscriptionStream {
        SubscriptionStream { sub: self, sleep: None }
    }
}

/// A [`Subscription`] as a `futures::Stream` (feature `tokio`): see
/// [`Subscription::into_stream`].
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct SubscriptionStream {
    sub: Subscription,
    /// The timer of a [`Reader`]-based stream waiting for its next poll.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

#[cfg(feature = "tokio")]
impl SubscriptionStream {
    /// The subscription: its [`Subscription::position`] to checkpoint, ...
    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }

    /// The subscription back, to use as a blocking iterator.
    pub fn into_subscription(self) -> Subscription {
        self.sub
    }
}

#[cfg(feature = "tokio")]
impl futures_core::Stream for SubscriptionStream {
    type Item = Result<OwnedRecord>;

    /// The next event; pending while caught up. Like the iterator, it ends
    /// after everything a closed log published (with the cause, if the log
    /// was poisoned). On a log the task is woken
    /// when the writer publishes new events; on a [`Reader`] it polls at
    /// [`Subscription::poll_interval`] with a tokio timer (so it needs a
    /// tokio runtime with the time driver). After an error, the stream ends.
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        let sub = &mut this.sub;
        loop {
            if sub.failed {
                return Poll::Ready(None);
            }
            if let Some(r) = sub.buffered.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            let (epoch, ended) = sub.before_view();
            match sub.refill() {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    sub.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            // Caught up with a view taken after the log ended: a close ends
            // the stream, a poisoning ends it with the cause.
            if let Some(e) = ended {
                sub.failed = true;
                return Poll::Ready(match e {
                    Error::Closed => None,
                    e => Some(Err(e)),
                });
            }
            match (&sub.source, epoch) {
                (Source::Log(log), Some(e)) => {
                    if log.wake_on_publish(e, cx.waker()) {
                        return Poll::Pending;
                    }
                }
                _ => {
                    let interval = sub.poll_interval;
                    let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
            }
        }
    }
}
