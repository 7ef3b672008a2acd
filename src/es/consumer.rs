//! Named durable subscriptions (spec 24): a [`Subscription`] whose place in
//! the log is kept in a checkpoint file of the log directory
//! (`annal.sub.<name>`), so that a consumer resumes after a crash or a
//! restart at the next event it had not acknowledged.
//!
//! Delivery is at least once: the checkpoint moves only over events the
//! consumer acknowledged ([`DurableSubscription::ack`]), and is written
//! (fsynced) every `commit_every` acknowledgements, every `commit_interval`,
//! on [`commit`](DurableSubscription::commit) and on close; a crash repeats
//! at most what was acknowledged since the last commit, and never skips.
//!
//! Invariants: the checkpoint never moves past an event that was delivered
//! and not acknowledged; it is written in place to the slot the previous
//! write did not use, so a torn write leaves the previous checkpoint
//! readable (spec 24.2); a damaged file is an error naming it, never a
//! fresh start; one consumer at a time holds a name (an exclusive lock on
//! its file); the name is a plain file name inside the log directory, and
//! the file is never followed through a link.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::consumer::{
    CONSUMER_FILE_LEN, Checkpoint, ConsumerSlot, decode_checkpoint, fingerprint, slot_offset,
};
use crate::read::subscription::{OwnedRecord, Subscription, SubscriptionFilter};
use crate::read::view::Reader;
use crate::storage::io::{Io, IoFile, StdIo};
use crate::writer::Log;

/// The prefix of a subscription's checkpoint file name: `annal.sub.<name>`.
pub const SUBSCRIPTION_FILE_PREFIX: &str = "annal.sub.";

/// The longest subscription name.
pub const MAX_SUBSCRIPTION_NAME: usize = 100;

/// A test on an event a durable subscription may deliver.
type Predicate = Arc<dyn Fn(&OwnedRecord) -> bool + Send + Sync>;

/// Where a durable subscription reads from.
enum From {
    Log(Log),
    Reader(Box<Reader>),
}

/// Options of a named durable subscription, from
/// [`Log::durable_subscription`] or [`Reader::durable_subscription`];
/// [`open`](DurableBuilder::open) opens it.
#[must_use = "a builder does nothing until it is opened"]
pub struct DurableBuilder {
    from: From,
    dir: PathBuf,
    name: String,
    filter: SubscriptionFilter,
    event_types: Vec<String>,
    predicate: Option<Predicate>,
    start: u64,
    commit_every: u64,
    commit_interval: Duration,
    /// `(k, n)`: the partition `k` of `n` of a competing subscription (spec
    /// 24.7): only streams whose hash is `k` modulo `n`.
    partition: Option<(u32, u32)>,
}

impl std::fmt::Debug for DurableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableBuilder")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("event_types", &self.event_types)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// The named durable subscription `name` of this log (see
    /// [`DurableSubscription`]): every event by default; narrow it with the
    /// builder, then [`open`](DurableBuilder::open) it.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Paid", b"{}")])?;
    /// let mut billing = log.durable_subscription("billing").category("order").open()?;
    /// let first = billing.try_next()?.expect("an event");
    /// billing.ack(&first)?;
    /// billing.close()?;
    /// // Opened again (after a restart, say): it resumes after what was acknowledged.
    /// let mut billing = log.durable_subscription("billing").category("order").open()?;
    /// assert_eq!(billing.try_next()?.expect("the next one").event_type, "Paid");
    /// # Ok(()) }
    /// ```
    pub fn durable_subscription(&self, name: &str) -> DurableBuilder {
        DurableBuilder::new(From::Log(self.clone()), self.dir().to_owned(), name)
    }
}

impl Reader {
    /// The named durable subscription `name` of this reader's log, for a
    /// consumer in another process than the writer (see
    /// [`Log::durable_subscription`]). Its checkpoint file is the one file a
    /// reader writes in the log directory.
    pub fn durable_subscription(self, name: &str) -> DurableBuilder {
        let dir = self.dir().to_owned();
        DurableBuilder::new(From::Reader(Box::new(self)), dir, name)
    }
}

impl DurableBuilder {
    fn new(from: From, dir: PathBuf, name: &str) -> DurableBuilder {
        DurableBuilder {
            from,
            dir,
            name: name.to_owned(),
            filter: SubscriptionFilter::All,
            event_types: Vec::new(),
            predicate: None,
            start: 0,
            commit_every: 100,
            commit_interval: Duration::from_secs(1),
            partition: None,
        }
    }

    /// The partition `k` of `n` of the competing subscription of this name
    /// (spec 24.7): its own checkpoint file `annal.sub.<name>~<k>`, and only
    /// the events of streams whose hash is `k` modulo `n`.
    pub(crate) fn partition(mut self, k: u32, n: u32) -> DurableBuilder {
        self.partition = Some((k, n.max(1)));
        self
    }

    /// Only the events of `stream` (in version order).
    pub fn stream(mut self, stream: &str) -> DurableBuilder {
        self.filter = SubscriptionFilter::Stream(stream.to_owned());
        self
    }

    /// Only the events of the streams of `category` (`<category>-<id>`).
    pub fn category(mut self, category: &str) -> DurableBuilder {
        self.filter = SubscriptionFilter::Category(category.to_owned());
        self
    }

    /// Only events of these types.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> DurableBuilder {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events `keep` accepts (the others are passed over and count as
    /// handled). A predicate is code, not data: it is not part of the
    /// filter the checkpoint file records (spec 24.3), so change it only
    /// knowingly.
    pub fn matching(mut self, keep: impl Fn(&OwnedRecord) -> bool + Send + Sync + 'static) -> DurableBuilder {
        self.predicate = Some(Arc::new(keep));
        self
    }

    /// Where a subscription that has no checkpoint yet starts: a position
    /// (a version, for a stream subscription). Default 0. Ignored once the
    /// checkpoint file exists.
    pub fn start_at(mut self, position: u64) -> DurableBuilder {
        self.start = position;
        self
    }

    /// Write the checkpoint after this many acknowledgements (at least 1;
    /// default 100): at most this many events are delivered again after a
    /// crash.
    pub fn commit_every(mut self, acks: u64) -> DurableBuilder {
        self.commit_every = acks.max(1);
        self
    }

    /// Write the checkpoint when this long has passed since the last write
    /// and something was acknowledged since (default 1 s).
    pub fn commit_interval(mut self, interval: Duration) -> DurableBuilder {
        self.commit_interval = interval;
        self
    }

    /// The filter's identity as the checkpoint file records it (spec 24.3):
    /// the first 16 bytes of BLAKE3 of its canonical text.
    fn filter_id(&self) -> [u8; 16] {
        let mut text = match &self.filter {
            SubscriptionFilter::All => "all".to_owned(),
            SubscriptionFilter::Stream(s) => format!("stream:{s}"),
            SubscriptionFilter::Category(c) => format!("category:{c}"),
        };
        let mut types = self.event_types.clone();
        types.sort();
        types.dedup();
        for t in &types {
            text.push_str("\ntype:");
            text.push_str(t);
        }
        if let Some((k, n)) = self.partition {
            text.push_str(&format!("\npartition:{k}/{n}"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(blake3::hash(text.as_bytes()).as_bytes().get(..16).unwrap_or(&[0; 16]));
        id
    }

    /// Open the subscription: take its checkpoint file (created with the
    /// start position if missing; [`Error::Locked`] if another consumer
    /// holds it; [`Error::Corrupt`] naming it if no slot is valid;
    /// [`Error::InvalidArgument`] if it was created with another filter),
    /// and resume after what it says.
    pub fn open(mut self) -> Result<DurableSubscription> {
        check_name(&self.name)?;
        let path = match self.partition {
            None => self.dir.join(format!("{SUBSCRIPTION_FILE_PREFIX}{}", self.name)),
            Some((k, _)) => self.dir.join(format!("{SUBSCRIPTION_FILE_PREFIX}{}~{k}", self.name)),
        };
        let filter = self.filter_id();
        let predicate = match (self.partition, self.predicate.take()) {
            (None, p) => p,
            (Some((k, n)), p) => {
                let mine = move |r: &OwnedRecord| {
                    crate::format::hash::stream_hash(r.stream.as_bytes()) % u64::from(n) == u64::from(k)
                };
                Some(match p {
                    Some(p) => Arc::new(move |r: &OwnedRecord| mine(r) && p(r)) as Predicate,
                    None => Arc::new(mine) as Predicate,
                })
            }
        };
        // Through the log's I/O seam when the writer is in this process.
        let io: Arc<dyn Io> = match &self.from {
            From::Log(log) => Arc::clone(log.io()),
            From::Reader(_) => Arc::new(StdIo),
        };
        if std::fs::symlink_metadata(&path).is_err() {
            let first = Checkpoint {
                sequence: 1,
                next_position: if matches!(self.filter, SubscriptionFilter::Stream(_)) {
                    0
                } else {
                    self.start
                },
                next_version: if matches!(self.filter, SubscriptionFilter::Stream(_)) {
                    self.start
                } else {
                    0
                },
                filter,
                last_event: 0,
            };
            let mut bytes = [0u8; CONSUMER_FILE_LEN];
            let slot = ConsumerSlot::new(&first);
            bytes
                .get_mut(..slot.as_bytes().len())
                .unwrap_or_default()
                .copy_from_slice(slot.as_bytes());
            crate::storage::io::create_shared(&*io, &self.dir, &path, &bytes)?;
        }
        // Never through a link, never a FIFO: a regular file only.
        let lock = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
        if self.partition.is_some() {
            // A partition of a competing subscription: held or not, at once
            // (a member tries many; a held one is another member's lease).
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path }),
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
        } else {
            // Retried briefly: a lock let go of can look held while a child
            // process forked by another thread has not yet exec'd.
            crate::storage::writer_lock::lock_exclusive(&lock, &path, &path)?;
        }
        let current = read_checkpoint(&lock, &path)?;
        if current.filter != filter {
            return Err(Error::InvalidArgument(format!(
                "{}: the subscription {:?} was created with another filter (stream, category or event types); \
                 open it with the filter it was created with, or delete the file to start it again",
                path.display(),
                self.name
            )));
        }
        let file = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
        let current = settle(&self.from, &self.filter, current, &path, &*file)?;
        let sub = match self.from {
            From::Log(log) => match &self.filter {
                SubscriptionFilter::All => log.subscribe_all(current.next_position),
                SubscriptionFilter::Stream(s) => log.subscribe_stream(s, current.next_version),
                SubscriptionFilter::Category(c) => log.subscribe_category(c, current.next_position),
            },
            From::Reader(r) => match &self.filter {
                SubscriptionFilter::All => r.subscribe_all(current.next_position),
                SubscriptionFilter::Stream(s) => r.subscribe_stream(s, current.next_version),
                SubscriptionFilter::Category(c) => r.subscribe_category(c, current.next_position),
            },
        };
        let sub = if self.event_types.is_empty() {
            sub
        } else {
            sub.event_types(self.event_types.clone())
        };
        Ok(DurableSubscription {
            name: self.name,
            path,
            sub,
            file,
            _lock: lock,
            stream: matches!(self.filter, SubscriptionFilter::Stream(_)),
            predicate,
            committed: current,
            acked: (current.next_position, current.next_version),
            acked_event: current.last_event,
            delivered: (current.next_position, current.next_version),
            pending: 0,
            last_commit: Instant::now(),
            commit_every: self.commit_every,
            commit_interval: self.commit_interval,
            abandoned: false,
        })
    }
}

/// Check that the log still holds what `current` says was handled, before a
/// subscription resumes from it (spec 24.4). A checkpoint past the log's
/// end (the log lost events the consumer had seen: appended with
/// `Durability::Buffered`, then a power loss) resumes at the end, the
/// clamped checkpoint written at once: new events take those positions, and
/// none is skipped. A checkpoint whose last event is in the log under
/// another id (lost, then its position taken by a new event) is
/// [`Error::LostEvents`]: where the new events begin cannot be told.
fn settle(
    from: &From,
    filter: &SubscriptionFilter,
    current: Checkpoint,
    path: &Path,
    file: &dyn IoFile,
) -> Result<Checkpoint> {
    let view = match from {
        From::Log(log) => log.view()?,
        From::Reader(r) => r.view()?,
    };
    let end = view.next_position();
    let stream_end = match filter {
        SubscriptionFilter::Stream(s) => view
            .read_stream(
                s,
                crate::types::StreamPosition::End,
                crate::types::Direction::Backward,
                1,
            )
            .next()
            .and_then(|r| r.ok())
            .map_or(0, |r| r.stream_version() + 1),
        _ => u64::MAX,
    };
    if current.next_position > end || current.next_version > stream_end {
        let clamped = Checkpoint {
            sequence: current.sequence + 1,
            next_position: current.next_position.min(end),
            next_version: current.next_version.min(stream_end),
            filter: current.filter,
            last_event: 0,
        };
        crate::trace::event!(WARN, path = %path.display(), from = current.next_position, to = clamped.next_position, "annal subscription checkpoint past the log's end (events lost); resuming at the end");
        let slot = ConsumerSlot::new(&clamped);
        file.write_at(slot_offset(clamped.sequence), slot.as_bytes())
            .and_then(|()| file.sync())
            .map_err(|e| Error::io("write", path, e))?;
        return Ok(clamped);
    }
    if current.last_event != 0 && current.next_position > 0 {
        let at = current.next_position - 1;
        if let Some(Ok(r)) = view.read_all(at).next()
            && r.position() == at
            && fingerprint(r.event_id().as_bytes()) != current.last_event
        {
            return Err(Error::LostEvents {
                path: path.to_owned(),
                detail: format!(
                    "the event at position {at} is not the one this subscription handled there: the log lost \
                     events it had delivered (appended with Durability::Buffered, then a power loss) and new \
                     events took their positions; remove the checkpoint file, or open it with start_at, to say \
                     where it resumes"
                ),
            });
        }
    }
    Ok(current)
}

/// The endings a subscription's or projection's name must not have (spec
/// 24.1), in any case: every file of a name is `annal.sub.<name>` or
/// `annal.proj.<name>` followed by nothing, `~...`, `.lock`, `.parked` or
/// `.<16 hex digits>.tmp`, so a name ending so could name another name's
/// file (the lock of `b` is the model of `b.lock`), and a writer's recovery
/// removes every `*.tmp`.
const REFUSED_NAME_ENDINGS: [&str; 3] = [".lock", ".tmp", ".parked"];

/// A subscription name (and a projection's) is a plain file name: 1 to 100
/// ASCII letters, digits, `-`, `_` and `.`, not starting with `.`, not
/// ending in `.lock`, `.tmp` or `.parked` (in any case; spec 24.1).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SUBSCRIPTION_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "subscription name {name:?}: expected 1 to {MAX_SUBSCRIPTION_NAME} ASCII letters, digits, '-', '_' or \
             '.', not starting with '.'"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if let Some(end) = REFUSED_NAME_ENDINGS.iter().find(|e| lower.ends_with(*e)) {
        return Err(Error::InvalidArgument(format!(
            "subscription name {name:?}: a name must not end in '.lock', '.tmp' or '.parked' (in any case; this \
             one ends in {end:?}): those endings are of other names' files (spec 24.1)"
        )));
    }
    Ok(())
}

/// The current checkpoint in the open file `file` (at `path`).
fn read_checkpoint(file: &File, path: &Path) -> Result<Checkpoint> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(CONSUMER_FILE_LEN + 1);
    file.take(CONSUMER_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    decode_checkpoint(&bytes).map_err(|d| d.at(path))
}

/// What [`DurableSubscription::run`] does with an event whose handler keeps
/// failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFailure {
    /// Stop the run with [`Error::Handler`]; the event is not acknowledged
    /// (the next run delivers it again).
    Stop,
    /// Park it (the parked list) and go on with the next event.
    Park,
}

/// How [`DurableSubscription::run`] retries a failing handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failure; doubled after each.
    pub min_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// What to do once the attempts are spent.
    pub then: OnFailure,
}

impl Retry {
    /// `attempts` in all (at least 1), waiting 10 ms doubling up to 1 s,
    /// then `then`.
    pub fn new(attempts: u32, then: OnFailure) -> Retry {
        Retry {
            attempts: attempts.max(1),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            then,
        }
    }

    /// Wait `min` after a first failure, doubling up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Retry {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }
}

/// An event a handler could not handle, parked by
/// [`DurableSubscription::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Parked {
    /// Its position.
    pub position: u64,
    /// Its stream version.
    pub stream_version: u64,
    /// The handler's last error (control characters made spaces).
    pub why: String,
}

/// A named durable subscription: a [`Subscription`] that resumes, after a
/// crash or a restart, at the first event it had not acknowledged (spec
/// 24). Deliver with [`next_timeout`](DurableSubscription::next_timeout) or
/// [`try_next`](DurableSubscription::try_next), acknowledge each event once
/// handled with [`ack`](DurableSubscription::ack).
pub struct DurableSubscription {
    name: String,
    path: PathBuf,
    sub: Subscription,
    file: Box<dyn IoFile>,
    /// Holds the exclusive lock on the checkpoint file.
    _lock: File,
    stream: bool,
    predicate: Option<Predicate>,
    /// What the file says.
    committed: Checkpoint,
    /// `(next position, next version)` after the last acknowledged event.
    acked: (u64, u64),
    /// The fingerprint of the last acknowledged event's id.
    acked_event: u64,
    /// The same after the last delivered event.
    delivered: (u64, u64),
    /// Acknowledgements since the last write.
    pending: u64,
    last_commit: Instant,
    commit_every: u64,
    commit_interval: Duration,
    /// Dropped without a last commit ([`DurableSubscription::abandon`]).
    abandoned: bool,
}

impl std::fmt::Debug for DurableSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSubscription")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("committed", &self.committed)
            .field("acked", &self.acked)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl DurableSubscription {
    /// Whether every event delivered was acknowledged.
    pub(crate) fn idle(&self) -> bool {
        self.delivered == self.acked
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it resumes if opened again now: the next position (for a
    /// stream subscription, the next version) the checkpoint file states.
    pub fn committed(&self) -> u64 {
        if self.stream {
            self.committed.next_version
        } else {
            self.committed.next_position
        }
    }

    /// The next event, waiting up to `timeout` for one; `Ok(None)` if none
    /// came. Events a [`matching`](DurableBuilder::matching) predicate
    /// refuses are passed over (and acknowledged when nothing delivered is
    /// waiting for its acknowledgement).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(r) = self.sub.next_timeout(left)? else {
                self.commit_if_due()?;
                return Ok(None);
            };
            let after = (r.position + 1, r.stream_version + 1);
            if self.predicate.as_ref().is_some_and(|keep| !keep(&r)) {
                if self.delivered == self.acked {
                    self.acked = after;
                    self.acked_event = fingerprint(r.event_id.as_bytes());
                    self.delivered = after;
                    self.pending += 1;
                    self.commit_if_due()?;
                } else {
                    self.delivered = after;
                }
                continue;
            }
            self.delivered = after;
            return Ok(Some(r));
        }
    }

    /// The next event if there is one now.
    pub fn try_next(&mut self) -> Result<Option<OwnedRecord>> {
        self.next_timeout(Duration::ZERO)
    }

    /// Acknowledge `r` and every event delivered before it: they are
    /// handled, the checkpoint may move past them (written when due).
    /// [`Error::InvalidArgument`] for an event this subscription has not
    /// delivered.
    pub fn ack(&mut self, r: &OwnedRecord) -> Result<()> {
        let after = (r.position + 1, r.stream_version + 1);
        let beyond = if self.stream {
            after.1 > self.delivered.1
        } else {
            after.0 > self.delivered.0
        };
        if beyond {
            return Err(Error::InvalidArgument(format!(
                "subscription {:?}: acknowledged position {} was not delivered yet",
                self.name, r.position
            )));
        }
        if after > self.acked {
            self.acked = after;
            self.acked_event = fingerprint(r.event_id.as_bytes());
            self.pending += 1;
        }
        self.commit_if_due()
    }

    fn commit_if_due(&mut self) -> Result<()> {
        if self.pending >= self.commit_every || (self.pending > 0 && self.last_commit.elapsed() >= self.commit_interval)
        {
            self.commit()?;
        }
        Ok(())
    }

    /// Write the checkpoint now (if anything was acknowledged since the
    /// last write): the next slot, then fsync.
    pub fn commit(&mut self) -> Result<()> {
        let next = Checkpoint {
            sequence: self.committed.sequence + 1,
            next_position: self.acked.0,
            next_version: if self.stream { self.acked.1 } else { 0 },
            filter: self.committed.filter,
            last_event: self.acked_event,
        };
        if (next.next_position, next.next_version) == (self.committed.next_position, self.committed.next_version) {
            self.pending = 0;
            return Ok(());
        }
        let slot = ConsumerSlot::new(&next);
        self.file
            .write_at(slot_offset(next.sequence), slot.as_bytes())
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file.sync().map_err(|e| Error::io("fsync", &self.path, e))?;
        self.committed = next;
        self.pending = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Deliver events to `handler` until `stop` returns true (asked between
    /// events, at least every `poll`) or the log is closed: each event is
    /// acknowledged once `handler` succeeds. A failure is retried as
    /// `retry` says (with a growing wait); when the attempts are spent the
    /// event is parked (written to the parked list first, then
    /// acknowledged: see [`parked`](DurableSubscription::parked)) or the run
    /// stops with [`Error::Handler`], as `retry.then` says. Commits what was
    /// acknowledged before returning.
    pub fn run<E: std::fmt::Display>(
        &mut self,
        retry: Retry,
        poll: Duration,
        mut handler: impl FnMut(&OwnedRecord) -> std::result::Result<(), E>,
        mut stop: impl FnMut() -> bool,
    ) -> Result<()> {
        while !stop() {
            let r = match self.next_timeout(poll) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(Error::Closed) => break,
                Err(e) => return Err(e),
            };
            let mut wait = retry.min_backoff;
            let mut attempt = 1u32;
            loop {
                match handler(&r) {
                    Ok(()) => break,
                    Err(e) if attempt < retry.attempts => {
                        crate::trace::event!(WARN, subscription = %self.name, position = r.position, error = %e, "annal handler failed; retrying");
                        let _ = &e;
                        std::thread::sleep(wait);
                        wait = wait.saturating_mul(2).min(retry.max_backoff);
                        attempt += 1;
                    }
                    Err(e) => match retry.then {
                        OnFailure::Park => {
                            self.park(&r, &e.to_string())?;
                            break;
                        }
                        OnFailure::Stop => {
                            self.commit()?;
                            return Err(Error::Handler {
                                subscription: self.name.clone(),
                                position: r.position,
                                detail: e.to_string(),
                            });
                        }
                    },
                }
            }
            self.ack(&r)?;
        }
        self.commit()
    }

    /// The parked list's file: `annal.sub.<name>.parked` (spec 24.6).
    pub fn parked_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".parked");
        PathBuf::from(p)
    }

    /// Append `r` to the parked list, durably, with why it was parked.
    fn park(&mut self, r: &OwnedRecord, why: &str) -> Result<()> {
        use std::io::Write;
        let path = self.parked_path();
        let mut o = std::fs::OpenOptions::new();
        o.append(true).create(true);
        crate::storage::io::no_follow(&mut o);
        let mut f = o.open(&path).map_err(|e| Error::io("open", &path, e))?;
        let why: String = why.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        writeln!(f, "{}\t{}\t{}", r.position, r.stream_version, why).map_err(|e| Error::io("write", &path, e))?;
        f.sync_data().map_err(|e| Error::io("fsync", &path, e))
    }

    /// The events parked so far, oldest first: `(position, why)`. A line
    /// that does not parse is an error naming the file and its offset.
    pub fn parked(&self) -> Result<Vec<Parked>> {
        let path = self.parked_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let mut out = Vec::new();
        let mut at = 0u64;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let bad = |detail: &str| Error::Corrupt {
                path: path.clone(),
                offset: at,
                detail: detail.to_owned(),
            };
            let body = line
                .strip_suffix(b"\n")
                .ok_or_else(|| bad("expected a line ending in a line feed"))?;
            let body = std::str::from_utf8(body).map_err(|_| bad("expected UTF-8 text"))?;
            let mut f = body.splitn(3, '\t');
            let (Some(p), Some(v), Some(why)) = (f.next(), f.next(), f.next()) else {
                return Err(bad("expected POSITION<TAB>VERSION<TAB>WHY"));
            };
            let (Ok(position), Ok(stream_version)) = (p.parse(), v.parse()) else {
                return Err(bad("expected decimal POSITION and VERSION"));
            };
            out.push(Parked {
                position,
                stream_version,
                why: why.to_owned(),
            });
            at += line.len() as u64;
        }
        Ok(out)
    }

    /// Commit what was acknowledged and let go of the subscription's name.
    pub fn close(mut self) -> Result<()> {
        self.commit()
    }

    /// Let go of the subscription's name without writing the checkpoint, as
    /// a crash would: what was acknowledged since the last commit is
    /// delivered again to the next consumer of the name.
    pub fn abandon(mut self) {
        self.abandoned = true;
    }
}

impl Drop for DurableSubscription {
    /// Commits what was acknowledged, unless [abandoned](DurableSubscription::abandon)
    /// (an error is lost: call [`close`](DurableSubscription::close) to see it).
    fn drop(&mut self) {
        if !self.abandoned {
            let _ = self.commit();
        }
    }
}

#[cfg(test)]
mod tests;
