//! The writer layer: [`Log`], its [`Options`], appends with optimistic
//! concurrency, group commit, segment rolls, idempotent retries, recovery
//! when opening, and clean close. This file holds the [`Log`] handle and its
//! public methods; the work is in the submodules:
//!
//! * `options`, `types`: the configuration and the value types of the API.
//! * `log_format`, `derived`, `recovery`: opening a directory for writing
//!   (the lock, from `storage::writer_lock`; the log's format and key, the index files and
//!   stream table, crash recovery); none of them knows the running writer.
//! * `state`: the shared state behind a `Log` (`Inner` and its parts);
//!   `lifecycle` builds it from what recovery found and closes it.
//! * The running writer, each an `impl Inner` over `state` (none imports
//!   another): `append` (the atomic step of an append), `commit` (the group
//!   commit: leader, write, fsync, poisoning), `seal` (rolls, the sealer
//!   thread, index and stream-table upkeep), `idempotency` (the window of
//!   recent ids, the retry check), `versions` (a stream's current version),
//!   `metadata` (stream deletion and rules), `subjects` (sealing events that
//!   name a subject, erasing subjects' keys).
//! * `retention`, `retention_rule`: log retention (spec 3.9): the removal
//!   of sealed segments from the front, and its rule and report.
//! * `typed_append`: [`Log::append_typed`], apart because it depends on the
//!   typed-events layer above this one.
//!
//! # Concurrency
//!
//! * `state` (a mutex) holds the stream versions and the tail layout. An append
//!   checks the expected version, assigns positions and a timestamp, and
//!   encodes its batch into the pending buffer, all under `state`: the check
//!   and the append are one atomic step.
//! * Then the appender waits in `commit_until` for its bytes to be written (and
//!   made durable, with [`Durability::Fsync`]). The first waiter that finds no
//!   commit in progress becomes the leader: it takes *everything* pending, writes
//!   it with one `write`, makes it durable with one fsync, and wakes the others.
//!   No mutex is held across the write or the fsync (the leader holds only the
//!   `busy` flag), so appenders keep encoding into the next group meanwhile.
//! * A failed write or fsync poisons the writer: every later call fails with
//!   [`Error::Poisoned`] until the log is reopened (after a failed fsync Linux
//!   may drop dirty pages and report success later). A failure after a
//!   group's bytes were written (and made durable, if asked) — the head
//!   slot, the sealer indexing a sealed segment — poisons the writer too, but
//!   the appends of that group are acknowledged: the next call reports it.
//! * Back-pressure: an append that would roll a segment waits while
//!   `MAX_UNINDEXED` (4) sealed segments wait for the sealer thread, so the
//!   work left for `close` (or for recovery after a crash) stays bounded.
//! * The stream table is a hint: a hit decides an expected version only
//!   once the segments confirm it (`table_hit_holds`); otherwise the version
//!   comes from the segments, the table is rebuilt and a warning is kept
//!   ([`Log::warnings`]).

mod append;
#[cfg(feature = "tokio")]
mod asynchronous;
mod commit;
mod compaction;
mod derived;
mod idempotency;
mod index_checkpoint;
mod lifecycle;
mod live;
mod log_format;
mod metadata;
mod options;
pub(crate) mod recovery;
#[cfg(feature = "remote")]
mod replication;
mod results;
mod retention;
mod retention_rule;
mod seal;
mod state;
mod subjects;
mod versions;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::audit::chain::Anchor;
use crate::error::{Error, Result};
use crate::format::record::EventData;
use crate::read::view::LogView;
use crate::storage::io::Io;

use append::Appending;
use state::Inner;

pub use compaction::CompactionReport;
pub use options::{Clock, Durability, Options};
#[cfg(feature = "remote")]
pub use results::ReplicationStatus;
pub use results::{AppendResult, ExpectedVersion, Recovery, Truncation};
pub use retention_rule::{Retention, RetentionReport};

/// An append-only event log, open for writing.
///
/// A `Log` is a handle: `Clone` (cheap) and `Send + Sync`, so it lives in an
/// axum `State`, moves into spawned tasks and threads, and is shared without
/// an `Arc`. Every clone appends through the one writer (one group commit,
/// one lock on the directory). The log closes when [`Log::close`] is called
/// on any clone (the others then fail with [`Error::Closed`]) or when the
/// last clone is dropped.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{EventData, ExpectedVersion, Log, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// let r = log.append("order-42", ExpectedVersion::NoStream, &[
///     EventData::new("OrderPlaced", br#"{"total":10}"#),
///     EventData::new("ItemAdded", br#"{"sku":"A"}"#),
/// ])?;
/// assert_eq!((r.first_position, r.stream_version), (0, 1));
/// let again = log.append("order-42", ExpectedVersion::Exact(0), &[EventData::new("X", b"")]);
/// assert!(matches!(again, Err(annal::Error::WrongExpectedVersion { actual: Some(1), .. })));
/// log.close()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    /// Shared by the clones: the last one dropped closes the log.
    _open: Arc<CloseOnDrop>,
}

/// Closes the log when the last [`Log`] clone lets go of it (the sealer
/// thread holds `Inner` too, so `Inner`'s own drop cannot do it).
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Open (or create) the log in directory `dir` for writing with the
    /// default [`Options`]. See [`Log::open_with`] for what opening does and
    /// how it fails; [`Options::open`] reads better with options set.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = annal::Log::open(dir.path())?;
    /// log.append("order-1", annal::ExpectedVersion::NoStream, &[annal::EventData::new("Placed", b"{}")])?;
    /// # Ok(()) }
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(dir, Options::default())
    }

    /// Open (or create) the log in directory `dir` for writing, recovering
    /// from a crash if needed (see [`Log::recovery`]).
    ///
    /// Fails with [`Error::Locked`] if another writer holds the log (the
    /// writer locks `annal.lock` and the directory itself, so deleting or
    /// replacing `annal.lock` lets no second writer in), [`Error::NotALog`] if
    /// `dir` holds other files, and [`Error::Corrupt`] if data below the
    /// durable boundary is damaged, if the first segment (position 0) is
    /// missing and no retention record says it was removed (spec 3.9), or if a frame of the active segment claims more than
    /// [`Options::max_batch_bytes`] (its body is not read; nothing is
    /// modified then). Warnings that did not stop the open (a symlinked or
    /// world-writable directory, ...) are in [`Recovery::warnings`].
    ///
    /// With [`Options::retention`] the rule is applied at open (spec 3.9),
    /// after a removal that a crash interrupted is finished.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        let dir = dir.as_ref().to_owned();
        let recovered = recovery::open(&dir, &opts)?;
        let inner = Arc::new(Inner::new(dir, opts, recovered)?);
        // Index files found damaged while opening (rebuilding the stream
        // table reads them) are replaced now.
        inner.rewrite_damaged_indexes()?;
        Inner::start_sealer(&inner);
        #[cfg(feature = "remote")]
        inner.start_replicator()?;
        // Retention (spec 3.9): finish a recorded removal, then the rule.
        let log = Log {
            _open: Arc::new(CloseOnDrop(Arc::clone(&inner))),
            inner,
        };
        log.inner.retention_at_open()?;
        Ok(log)
    }

    /// How far the replicator of [`Options::replicate_to`] got (feature
    /// `remote`): `None` if the log runs none.
    #[cfg(feature = "remote")]
    pub fn replication(&self) -> Option<ReplicationStatus> {
        self.inner.replication_status()
    }

    /// What opening the log did: creation, a removed torn tail, ...
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// `(sealed segments not yet indexed, appends waiting for the sealer)`:
    /// for tests of the back-pressure that bounds the sealer's backlog.
    #[doc(hidden)]
    pub fn sealer_backlog(&self) -> (usize, usize) {
        let b = lock(&self.inner.backlog);
        (b.unindexed, b.waiting)
    }

    /// Warnings found while the log was open and while it was opened
    /// ([`Recovery::warnings`] first): derived files (the stream table, an
    /// index) that the segments did not confirm and that were rebuilt, ...
    /// Each names the file and what was found. At most 100 are kept.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.inner.recovery.warnings.clone();
        out.extend(lock(&self.inner.warnings).iter().cloned());
        out
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The I/O seam the writer uses (for derived files such as snapshots).
    /// Erase `subjects`' keys (the key ring's part of
    /// [`Log::erase_subject`], which the event-sourcing layer completes).
    pub(crate) fn erase_keys(&self, subjects: &[&str]) -> Result<Vec<Option<crate::format::sealed::KeyId>>> {
        self.inner.erase_keys(subjects)
    }

    pub(crate) fn io(&self) -> &Arc<dyn Io> {
        &self.inner.opts.io
    }

    /// The head of the audit chain (spec 21): the position after the last
    /// batch written and the chain hash there, for an auditor to keep outside
    /// the log (see [`crate::check`] with an anchor). `None` if the log has no
    /// chain. Waits for a group commit in progress.
    pub fn anchor(&self) -> Option<Anchor> {
        if !self.inner.format.chained() {
            return None;
        }
        let io = lock(&self.inner.io);
        Some(Anchor {
            position: io.chain_position,
            hash: io.chain,
        })
    }

    /// Whether the log carries the audit chain (spec 21), and whether it is
    /// keyed: `(chained, keyed)`.
    pub fn chain_mode(&self) -> (bool, bool) {
        (self.inner.format.chained(), self.inner.format.keyed())
    }

    /// The log's format version (`2` for logs this build creates; a log
    /// created in version 1 stays in version 1).
    pub fn format_version(&self) -> u16 {
        self.inner.format.version
    }

    /// The options the log was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.opts.durability
    }

    /// The current version of `stream` (the version of its last event), or
    /// `None` if it has no events. Includes appends not yet durable.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let st = lock(&self.inner.state);
        self.inner.current_version(&st, stream)
    }

    /// The position the next appended event will get.
    pub fn next_position(&self) -> u64 {
        lock(&self.inner.state).next_position
    }

    /// Append `events` to `stream` as one atomic batch, if the stream is at
    /// `expected`. With [`Durability::Fsync`] the batch is durable when this
    /// returns; with [`Durability::Buffered`] it is handed to the OS.
    ///
    /// # Idempotent retries
    ///
    /// When every event carries an id ([`EventData::with_id`]), repeating an
    /// append (a retry after a timeout) returns the original result and writes
    /// nothing:
    ///
    /// * `Exact(n)` (and `NoStream`, as `n` = none): if the stream is past `n`
    ///   and the events stored at versions `n+1..` have exactly these ids, in
    ///   order, it is a retry. If only the first few match, the append fails
    ///   with [`Error::IdempotencyConflict`]; if none match, with
    ///   [`Error::WrongExpectedVersion`].
    /// * `Any` and `StreamExists`: if the first id is among the most recent
    ///   [`Options::idempotency_window`] events with application-supplied ids
    ///   and belongs to this stream, the batch must repeat the stored events
    ///   exactly (a retry) or fails with [`Error::IdempotencyConflict`]. Ids
    ///   older than the window are not detected: use `Exact` for retries that
    ///   can come late.
    ///
    /// Retries are recognised across reopen and across processes: `Exact` and
    /// `NoStream` read the stored events; for `Any` and `StreamExists` the
    /// window is rebuilt, at the first lookup after an open that the window
    /// of this open does not answer, from the last `idempotency_window`
    /// events written before the open (all of them count, whether their ids
    /// were supplied or generated). That rebuild reads those events once per
    /// open, in one sequential read, holding about 80 bytes per event.
    ///
    /// # Errors, and what they mean for the events
    ///
    /// * [`Error::InvalidArgument`], [`Error::WrongExpectedVersion`],
    ///   [`Error::IdempotencyConflict`], [`Error::Closed`], and
    ///   [`Error::Poisoned`] or any error returned *before* the batch was
    ///   queued: nothing of this batch was or will be written.
    /// * [`Error::Io`] (a failed write, fsync or roll of the group commit
    ///   carrying this batch), or [`Error::Poisoned`] while waiting for it:
    ///   the outcome is unknown. The batch may be in the file, wholly or in
    ///   part, without being durable; after the log is reopened it is either
    ///   entirely present or entirely absent (batches are atomic), never
    ///   partly. Retry with event ids ([`EventData::with_id`]) to find out
    ///   without writing it twice.
    /// * `Ok` means the batch was written (and with [`Durability::Fsync`]
    ///   made durable): a failure that happens after that (writing the head
    ///   file, or indexing a sealed segment on the sealer thread) does not
    ///   turn it into an error. It poisons the writer instead, and the next
    ///   call returns [`Error::Poisoned`] naming the failure.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log, Options, Uuid};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// let id = Uuid::from_u128(7);
    /// let batch = [EventData::new("Paid", b"{}").with_id(id)];
    /// let first = log.append("order-9", ExpectedVersion::NoStream, &batch)?;
    /// let retry = log.append("order-9", ExpectedVersion::NoStream, &batch)?;
    /// assert_eq!(first, retry);
    /// assert_eq!(log.view()?.next_position(), 1, "the retry wrote nothing");
    /// # Ok(()) }
    /// ```
    pub fn append(&self, stream: &str, expected: ExpectedVersion, events: &[EventData<'_>]) -> Result<AppendResult> {
        let inner = &*self.inner;
        let (events, batch_len) = inner.prepare_batch(stream, events)?;
        let _appending = Appending::enter(&inner.appenders);
        let (target, result) = loop {
            match inner.try_enqueue(stream, expected, &events, batch_len)? {
                Some(queued) => break queued,
                // It would roll a segment while the sealer is behind.
                None => inner.wait_for_sealer()?,
            }
        };
        inner.commit_until(target, inner.opts.durability == Durability::Fsync)?;
        Ok(result)
    }

    /// Make every event appended so far durable (one fsync, shared with
    /// concurrent appenders).
    pub fn sync(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(self.inner.poison_error());
        }
        let target = lock(&self.inner.state).lsn;
        self.inner.commit_until(target, true)
    }

    /// A consistent view of everything visible now (written, or with
    /// [`Durability::Fsync`] durable), for reading.
    ///
    /// With [`Options::replicate_to`] and a retention rule, the segments
    /// retention removed here are read from the store (spec 23.7): a view
    /// shows the whole log, fetching a removed segment into a bounded cache
    /// in the log directory (`annal.cache/`,
    /// [`Options::remote_cache_bytes`]) when it is first read.
    pub fn view(&self) -> Result<LogView> {
        let view = self.inner.view()?;
        #[cfg(feature = "remote")]
        let view = self.inner.with_cold(view);
        Ok(view)
    }

    /// Make everything durable, mark the log cleanly closed (its durable
    /// boundary is its end) and release the lock. Dropping the last clone of
    /// a `Log` does the same but cannot report errors. Closing one clone
    /// closes the log for all of them: their later calls fail with
    /// [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }

    /// How many times new visible ends were published (for subscriptions:
    /// read it before taking a view, then wait for it to change).
    pub(crate) fn published_epoch(&self) -> u64 {
        lock(&self.inner.published_epoch.0).value
    }

    /// Wait until the published epoch differs from `seen` or `timeout` passes;
    /// returns the current epoch.
    pub(crate) fn wait_published(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let (m, cv) = &self.inner.published_epoch;
        let mut g = lock(m);
        g.waiters += 1;
        let mut g = cv
            .wait_timeout_while(g, timeout, |e| e.value == seen)
            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        g.waiters -= 1;
        g.value
    }

    /// Why this log will publish nothing more, if it will not: it was
    /// poisoned ([`Error::Poisoned`]) or closed ([`Error::Closed`]). Both
    /// wake everyone waiting for a publish. Two atomic loads while neither
    /// (subscriptions ask before every view).
    pub(crate) fn ended(&self) -> Option<Error> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Some(self.inner.poison_error());
        }
        self.inner.closed.load(Ordering::Acquire).then_some(Error::Closed)
    }

    /// One past the last position views show now (the published end).
    fn published_position(&self) -> u64 {
        lock(&self.inner.published).next_position
    }

    /// Wait until views show every position below `target` (positions the
    /// writer handed out: their commits publish them), or the log ended
    /// ([`Log::ended`]).
    pub(crate) fn wait_visible(&self, target: u64) {
        loop {
            let epoch = self.published_epoch();
            if self.published_position() >= target || self.ended().is_some() {
                return;
            }
            self.wait_published(epoch, std::time::Duration::MAX);
        }
    }

    /// [`Log::wait_visible`] for a task: the waker is woken by the publish.
    #[cfg(feature = "tokio")]
    pub(crate) async fn visible_async(&self, target: u64) {
        loop {
            let epoch = self.published_epoch();
            if self.published_position() >= target || self.ended().is_some() {
                return;
            }
            let mut registered = false;
            std::future::poll_fn(|cx| {
                if !registered && self.wake_on_publish(epoch, cx.waker()) {
                    registered = true;
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            })
            .await;
        }
    }

    /// Have `waker` woken at the next publish unless the published epoch
    /// already differs from `seen` (then `false`, nothing kept).
    #[cfg(feature = "tokio")]
    pub(crate) fn wake_on_publish(&self, seen: u64, waker: &std::task::Waker) -> bool {
        let mut g = lock(&self.inner.published_epoch.0);
        if g.value != seen {
            return false;
        }
        if !g.wakers.iter().any(|w| w.will_wake(waker)) {
            g.wakers.push(waker.clone());
        }
        true
    }
}

impl Options {
    /// Open (or create) the log in `dir` with these options:
    /// [`Log::open_with`] read left to right.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Durability, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Options::default().durability(Durability::Fsync).open(dir.path())?;
    /// # Ok(()) }
    /// ```
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(dir, self)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the data consistent
    // enough to report errors; never propagate the poison as a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `l` read-locked, whatever a panicking holder left.
fn read_lock<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// `l` write-locked, whatever a panicking holder left.
fn write_lock<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
