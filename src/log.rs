//! The writer: [`Log`], its [`Options`], appends with optimistic concurrency,
//! group commit, segment rolls, and clean close.
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

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::audit::chain::{Anchor, ChainHash, ChainKey, Chainer, SigningKey};
use crate::audit::chaining::{ChainState, HasherThread, write_chained};
use crate::error::{Damage, Error, Result};
use crate::format::frame::{encode_seal, finish_batch_header, frame_records, validate_frame};
use crate::format::hash::stream_hash;
use crate::format::names::segment_file_name;
use crate::format::record::{EventData, Stamp, encode_record};
use crate::format::{
    CHECKPOINT_FRAME_LEN, FRAME_HEADER_LEN, FRAME_KIND_CHECKPOINT, FrameHeader, LogFormat, MAX_RECORD_LEN,
    SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::index::streamtable::{self, STREAM_TABLE_FILE, StreamTable, TableEntry};
use crate::index::{self, IdxFile, Index, IndexCell, MemIndex, Prev};
use crate::read::view::{LogView, ViewSegment};
use crate::recovery::{self, Recovered};
use crate::storage::head::{Head, HeadWriter};
use crate::storage::io::{Io, IoFile, StdIo};
use crate::storage::mmap::Mapping;
use crate::types::Direction;

use zerocopy::IntoBytes;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The batch is handed to the operating system before `append` returns: a
    /// killed process loses nothing, a power cut may lose the unsynced tail.
    /// Call [`Log::sync`] to make everything appended so far durable.
    #[default]
    Buffered,
    /// The batch is durable (fsynced) before `append` returns. Concurrent
    /// appenders share fsyncs (group commit).
    Fsync,
}

pub use crate::types::ExpectedVersion;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Global position of the batch's first event.
    pub first_position: u64,
    /// Global position of the batch's last event.
    pub last_position: u64,
    /// The stream's version after the append (the version of its last event):
    /// pass it as `ExpectedVersion::Exact` to the next append.
    pub stream_version: u64,
}

/// A clock returning nanoseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How to open a log for writing.
///
/// ```
/// use annal::{Durability, Options};
/// let opts = Options::default().durability(Durability::Fsync).segment_size(64 << 20);
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) segment_size: u64,
    pub(crate) durability: Durability,
    pub(crate) max_event_bytes: u64,
    pub(crate) max_batch_bytes: u64,
    pub(crate) create: bool,
    pub(crate) io: Arc<dyn Io>,
    pub(crate) clock: Clock,
    pub(crate) log_id: Option<[u8; 16]>,
    pub(crate) hash_mask: u64,
    pub(crate) idempotency_window: usize,
    pub(crate) chain: bool,
    pub(crate) chain_key: Option<ChainKey>,
    pub(crate) signing_key: Option<SigningKey>,
    pub(crate) checkpoint_every: u64,
    pub(crate) format_version: u16,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("durability", &self.durability)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("create", &self.create)
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 256 << 20,
            durability: Durability::Buffered,
            max_event_bytes: 64 << 20,
            max_batch_bytes: 256 << 20,
            create: true,
            io: Arc::new(StdIo),
            clock: Arc::new(system_clock),
            log_id: None,
            hash_mask: u64::MAX,
            idempotency_window: 100_000,
            chain: true,
            chain_key: None,
            signing_key: None,
            checkpoint_every: 100_000,
            format_version: crate::format::CURRENT_FORMAT_VERSION,
        }
    }
}

impl Options {
    /// Target size of a segment file in bytes (default 256 MiB). A batch that
    /// does not fit starts a new segment; a batch larger than this is written
    /// alone into a segment of its own.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
    /// Durability of appends (default [`Durability::Buffered`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Largest metadata + payload of one event (default 64 MiB; at most what
    /// the format's `u32` record length allows, about 4 GiB).
    pub fn max_event_bytes(mut self, bytes: u64) -> Self {
        self.max_event_bytes = bytes;
        self
    }
    /// Largest encoded batch, its frame header included (default 256 MiB;
    /// at most the format's [`format::MAX_FRAME_LEN`](crate::format::MAX_FRAME_LEN),
    /// 1 GiB: a larger value is taken as that).
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = bytes.min(crate::format::MAX_FRAME_LEN);
        self
    }
    /// Create the log if the directory is missing or empty (default `true`).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
    /// Route every file operation of the writer through `io` (the I/O seam;
    /// used by tests to inject failures and simulate crashes).
    pub fn io(mut self, io: Arc<dyn Io>) -> Self {
        self.io = io;
        self
    }
    /// Use `clock` (nanoseconds since the Unix epoch) for append timestamps.
    /// Timestamps never go backwards whatever the clock does.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// Use this log id when creating a log (default: random). For golden
    /// vectors and tests.
    pub fn log_id(mut self, id: [u8; 16]) -> Self {
        self.log_id = Some(id);
        self
    }
    /// How many of the most recent events with application-supplied ids are
    /// remembered for idempotent retries with `ExpectedVersion::Any` (default
    /// 100,000; about 80 bytes each). After a reopen the window is rebuilt
    /// from the last this many events of the log, read once at the first
    /// lookup that needs them. See [`Log::append`].
    pub fn idempotency_window(mut self, events: usize) -> Self {
        self.idempotency_window = events;
        self
    }
    /// Whether a log created by this open carries the audit chain (spec 21;
    /// default `true`). A log's segment headers say whether it has the chain;
    /// an existing log keeps what it was created with, whatever this says.
    /// A writer of a chained log runs one helper thread that hashes large
    /// batches while they are written (it spins for 200 µs after each, then
    /// sleeps until the next).
    pub fn chain(mut self, on: bool) -> Self {
        self.chain = on;
        self
    }
    /// The secret key of a keyed audit chain (spec 21.4). A log created with
    /// a key is keyed for good: opening it for writing needs the same key
    /// (its id is in every segment header), and verifying its chain needs it
    /// too. Giving a key to an existing log that is not keyed is an error.
    /// The key is never written to the log.
    pub fn chain_key(mut self, key: ChainKey) -> Self {
        self.chain_key = Some(key);
        self
    }
    /// Sign the head of the audit chain with `key` (spec 21.5): the writer
    /// writes a signed checkpoint after every
    /// [`checkpoint_every`](Options::checkpoint_every) events, before every
    /// seal and when the log is closed. Anyone with the
    /// [`PublicKey`](crate::PublicKey) can then verify the history up to each
    /// checkpoint without any secret. Needs a log with the chain.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }
    /// Events between signed checkpoints (default 100,000; at least 1).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }
    /// Create new logs in an older format version (`1`: no audit chain).
    /// Only for compatibility tests; existing logs keep their version.
    #[doc(hidden)]
    pub fn format_version(mut self, version: u16) -> Self {
        self.format_version = version;
        self
    }
    /// Narrow the stream hash written into new index files and stream tables
    /// (spec 19) to `mask`. Only for tests that force hash collisions: with a
    /// narrow mask, many streams share a hash, which costs lookups time but
    /// never mixes streams.
    #[doc(hidden)]
    pub fn stream_hash_mask(mut self, mask: u64) -> Self {
        self.hash_mask = mask;
        self
    }
}

/// What opening the log did to recover from a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The log did not exist and was created.
    pub created: bool,
    /// A torn tail was removed from the active segment.
    pub truncated: Option<Truncation>,
    /// An active segment whose header was torn (a crash while creating it, so
    /// it held no events) was rewritten as an empty segment.
    pub reinitialized: Option<PathBuf>,
    /// Temporary files of an interrupted write that were deleted.
    pub removed_temp_files: Vec<PathBuf>,
    /// Index files that were missing (a crash between sealing a segment and
    /// indexing it) and were rebuilt from their segments.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// The stream table was missing, damaged or behind and was rebuilt.
    pub rebuilt_stream_table: bool,
    /// Things found while opening that did not stop it but need a person's
    /// attention: a log directory or `snapshots/` folder that is a symlink or
    /// writable by others, ... Each names the file and what was found.
    pub warnings: Vec<String>,
}

/// A torn tail removed by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// Where the file was cut (its new length).
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes_removed: u64,
    /// Why the data at `offset` was not a complete batch.
    pub reason: String,
}

/// An append-only event log, open for writing. `Send + Sync`: share it
/// between threads with an `Arc`.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{EventData, ExpectedVersion, Log, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Options::default())?;
/// let r = log.append("order-42", ExpectedVersion::NoStream, &[
///     EventData::new("OrderPlaced", br#"{"total":10}"#.as_slice()),
///     EventData::new("ItemAdded", br#"{"sku":"A"}"#.as_slice()),
/// ])?;
/// assert_eq!((r.first_position, r.stream_version), (0, 1));
/// let again = log.append("order-42", ExpectedVersion::Exact(0), &[EventData::new("X", b"".as_slice())]);
/// assert!(matches!(again, Err(annal::Error::WrongExpectedVersion { actual: Some(1), .. })));
/// log.close()?;
/// # Ok(()) }
/// ```
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    format: LogFormat,
    _lock: recovery::WriterLock,
    state: Mutex<State>,
    commit: Mutex<Commit>,
    /// `Commit::written` and `Commit::durable`, readable without the lock.
    written_end: AtomicU64,
    durable_end: AtomicU64,
    poisoned: AtomicBool,
    /// A lookup found the stream table damaged; the leader rebuilds it.
    table_damaged: AtomicBool,
    /// Jobs for the sealer thread, which indexes sealed segments.
    sealer_tx: Mutex<Option<mpsc::Sender<SealJob>>>,
    sealer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bumped by index cells when a reader finds an index file damaged.
    index_damage: Arc<AtomicU64>,
    /// The value of `index_damage` the leader last handled.
    index_damage_handled: AtomicU64,
    io: Mutex<IoState>,
    published: Mutex<Published>,
    /// Bumped (and notified) each time the leader publishes new visible ends,
    /// for subscriptions waiting for new events.
    published_epoch: (Mutex<Epoch>, Condvar),
    recovery: Recovery,
    /// Threads inside `append` (for the group commit's gathering).
    appenders: AtomicUsize,
    /// Appends queued since the leader last took the pending bytes (changed
    /// under the state lock; read without it while gathering).
    queued_appends: AtomicUsize,
    /// How long the last fsync of a group took, in microseconds.
    last_sync_micros: AtomicU64,
    /// Warnings found after opening (see [`Log::warnings`]).
    warnings: Mutex<Vec<String>>,
    /// Sealed segments not yet indexed (queued rolls included), and appends
    /// waiting for it to fall below [`MAX_UNINDEXED`] (back-pressure).
    backlog: Mutex<Backlog>,
    backlog_cv: Condvar,
    /// The sealer thread has exited (the log is closing).
    sealer_stopped: AtomicBool,
}

/// The sealer's backlog (see `Inner::backlog`).
#[derive(Debug, Default)]
struct Backlog {
    unindexed: usize,
    waiting: usize,
}

/// Most sealed segments left to index before an append that would roll
/// another segment waits for the sealer: bounds the work `close` (and a
/// crash's recovery) finds, whatever the rate of appends.
const MAX_UNINDEXED: usize = 4;

/// Counts a thread inside `append` for as long as it lives.
struct Appending<'a>(&'a AtomicUsize);

impl<'a> Appending<'a> {
    fn enter(count: &'a AtomicUsize) -> Appending<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Appending(count)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Appender-side state: what has been assigned (written or pending).
struct State {
    /// Index of the active segment, including batches not yet written.
    index: Arc<RwLock<MemIndex>>,
    /// Sealed segments whose streams are not yet in the stream table, oldest
    /// first (between a roll being queued and the leader writing the table).
    unpersisted: Vec<(u64, Arc<RwLock<MemIndex>>)>,
    /// The stream table covering the other sealed segments.
    table: Option<Arc<StreamTable>>,
    /// Recently appended events with application-supplied ids, for
    /// idempotent retries (bounded by `Options::idempotency_window`).
    recent_ids: HashMap<[u8; 16], RecentId>,
    recent_order: VecDeque<[u8; 16]>,
    next_position: u64,
    last_timestamp: u64,
    seg_end: u64,
    seg_has_batches: bool,
    /// Durable end of the active segment as last reported by a commit (or 128
    /// for a segment not yet synced), carried into each frame header.
    seg_durable: u64,
    seg_base: u64,
    /// Complete chunks and rolls waiting for the leader, in order.
    pending: Vec<Op>,
    /// The open write buffer (after everything in `pending`).
    cur: Vec<u8>,
    spare: Vec<u8>,
    /// Bytes assigned so far (a log sequence number of bytes, across segments).
    lsn: u64,
    closed: bool,
    ids: IdGen,
    /// Events since the last signed checkpoint (with a signing key).
    unsigned_events: u64,
    /// The position of the first event appended by this open.
    open_position: u64,
    /// Whether the window of recent ids holds the log's tail from before
    /// this open (see `Inner::load_window`).
    window_loaded: bool,
}

/// Generated event ids: UUID v7 (RFC 9562). A fresh v7 (a random draw, one
/// system call) when the millisecond changes; otherwise the previous ids'
/// 62 random low bits counted on (RFC 9562 section 6.2, method 2), so ids stay
/// unique and ordered, within a batch and across batches.
#[derive(Default)]
struct IdGen {
    ms: u128,
    next: u128,
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

/// A sealed segment to index (spec 17) and fold into the stream table.
struct SealJob {
    seg: ViewSegment,
    mem: Arc<RwLock<MemIndex>>,
    next_segment: u64,
}

/// Where a recently appended event with an application-supplied id went.
struct RecentId {
    stream: Arc<str>,
    version: u64,
    position: u64,
}

enum Op {
    Write(Vec<u8>),
    Roll {
        base: u64,
        prev_timestamp: u64,
        sealed: Arc<RwLock<MemIndex>>,
        next: Arc<RwLock<MemIndex>>,
    },
}

/// The published epoch and how many threads wait for it to change (a
/// notification costs a system call, so it is sent only to waiters).
#[derive(Default)]
struct Epoch {
    value: u64,
    waiters: usize,
}

struct Commit {
    busy: bool,
    /// Appenders waiting while another leads, parked: the leader unparks them
    /// all when it is done. Those whose bytes it covered return at once,
    /// checking [`Inner::reached`] without taking this lock; the others
    /// compete to lead next.
    parked: Vec<std::thread::Thread>,
    written: u64,
    durable: u64,
    poison: Option<String>,
}

/// Owned by the commit leader (the `busy` flag makes it exclusive).
struct IoState {
    file: Box<dyn IoFile>,
    path: PathBuf,
    base: u64,
    offset: u64,
    durable: u64,
    head: HeadWriter,
    /// Disk space of the active segment is reserved up to here (see
    /// [`IoFile::reserve`]); `reserved_past_end` says whether any was.
    reserved: u64,
    reserved_past_end: bool,
    /// The audit chain's hash after the last batch written (spec 21), and
    /// the position after that batch.
    chain: ChainHash,
    chain_position: u64,
    /// Hashes large chunks while they are written (see `chaining`).
    hasher: Option<HasherThread>,
}

/// A group commit's leader stops gathering appenders after this long without
/// a new arrival (see `Inner::gather`).
const GATHER_GAP: Duration = Duration::from_micros(30);

/// How far ahead of its writes the active segment's disk space is reserved.
const RESERVE_AHEAD: u64 = 8 << 20;

impl IoState {
    /// Reserve disk space ahead of a write of `len` bytes at the current
    /// offset, in steps of [`RESERVE_AHEAD`], never past the segment size
    /// (unless this write itself goes past it). Writing into reserved space
    /// spares the file system's block-by-block allocation on the write path.
    fn reserve_for(&mut self, len: u64, segment_size: u64) {
        let end = self.offset + len;
        if end <= self.reserved {
            return;
        }
        let target = (end + RESERVE_AHEAD).min(segment_size.max(end));
        let from = self.reserved.max(self.offset);
        // A hint: a failure here leaves the write to report a full disk.
        if let Ok(true) = self.file.reserve(from, target - from) {
            self.reserved_past_end = true;
        }
        self.reserved = target;
    }

    /// Give back reserved space past the end of the file (before sealing it
    /// or closing the log), so a segment occupies exactly its bytes.
    fn release_reservation(&mut self) -> Result<()> {
        if self.reserved_past_end {
            self.file
                .truncate(self.offset)
                .map_err(|e| Error::io("truncate", &self.path, e))?;
            self.reserved_past_end = false;
        }
        self.reserved = self.offset;
        Ok(())
    }
}

/// What views see.
struct Published {
    sealed: Vec<ViewSegment>,
    table: Option<Arc<StreamTable>>,
    active_index: Arc<IndexCell>,
    active_base: u64,
    active_path: Arc<PathBuf>,
    active_file: File,
    visible_end: u64,
    next_position: u64,
    map: Option<Arc<Mapping>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the data consistent
    // enough to report errors; never propagate the poison as a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// Open (or create) the log in directory `dir` for writing, recovering
    /// from a crash if needed (see [`Log::recovery`]).
    ///
    /// Fails with [`Error::Locked`] if another writer holds the log (the
    /// writer locks `annal.lock` and the directory itself, so deleting or
    /// replacing `annal.lock` lets no second writer in), [`Error::NotALog`] if
    /// `dir` holds other files, and [`Error::Corrupt`] if data below the
    /// durable boundary is damaged, if the first segment (position 0) is
    /// missing, or if a frame of the active segment claims more than
    /// [`Options::max_batch_bytes`] (its body is not read; nothing is
    /// modified then). Warnings that did not stop the open (a symlinked or
    /// world-writable directory, ...) are in [`Recovery::warnings`].
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        let dir = dir.as_ref().to_owned();
        let Recovered {
            lock,
            format,
            chain,
            next_position,
            last_timestamp,
            sealed,
            table,
            active_index,
            active_base,
            active_end,
            report,
        } = recovery::open(&dir, &opts)?;
        let io = &*opts.io;
        let active_path = dir.join(segment_file_name(active_base));
        let file = io.open(&active_path).map_err(|e| Error::io("open", &active_path, e))?;
        let head = HeadWriter::create(
            io,
            &dir,
            Head {
                sequence: 1,
                segment_base: active_base,
                durable_end: active_end,
                visible_end: active_end,
                next_position,
            },
            format.version,
        )?;
        let active_file =
            crate::storage::io::open_read(&active_path).map_err(|e| Error::io("open", &active_path, e))?;
        let index_damage = Arc::new(AtomicU64::new(0));
        for seg in &sealed {
            seg.index.notify(&index_damage);
        }
        let inner = Inner {
            format,
            _lock: lock,
            state: Mutex::new(State {
                index: active_index.clone(),
                unpersisted: Vec::new(),
                table: table.clone(),
                recent_ids: HashMap::new(),
                recent_order: VecDeque::new(),
                next_position,
                last_timestamp,
                seg_end: active_end,
                seg_has_batches: active_end > SEGMENT_HEADER_LEN as u64,
                seg_durable: active_end,
                seg_base: active_base,
                pending: Vec::new(),
                cur: Vec::new(),
                spare: Vec::new(),
                lsn: 0,
                closed: false,
                ids: IdGen::default(),
                unsigned_events: u64::from(active_end > SEGMENT_HEADER_LEN as u64),
                open_position: next_position,
                window_loaded: next_position == 0,
            }),
            commit: Mutex::new(Commit {
                busy: false,
                parked: Vec::new(),
                written: 0,
                durable: 0,
                poison: None,
            }),
            written_end: AtomicU64::new(0),
            durable_end: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            table_damaged: AtomicBool::new(false),
            index_damage,
            index_damage_handled: AtomicU64::new(0),
            sealer_tx: Mutex::new(None),
            sealer: Mutex::new(None),
            io: Mutex::new(IoState {
                file,
                path: active_path.clone(),
                base: active_base,
                offset: active_end,
                durable: active_end,
                reserved: active_end,
                reserved_past_end: false,
                head,
                chain,
                chain_position: next_position,
                hasher: if format.chained() {
                    HasherThread::start(opts.chain_key.clone())
                } else {
                    None
                },
            }),
            published: Mutex::new(Published {
                sealed,
                table,
                active_index: Arc::new(IndexCell::new(active_base, None, Some(Index::Mem(active_index)))),
                active_base,
                active_path: Arc::new(active_path),
                active_file,
                visible_end: active_end,
                next_position,
                map: None,
            }),
            published_epoch: (Mutex::new(Epoch::default()), Condvar::new()),
            recovery: report,
            appenders: AtomicUsize::new(0),
            queued_appends: AtomicUsize::new(0),
            last_sync_micros: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
            backlog: Mutex::new(Backlog::default()),
            backlog_cv: Condvar::new(),
            sealer_stopped: AtomicBool::new(false),
            dir,
            opts,
        };
        let inner = Arc::new(inner);
        // Index files found damaged while opening (rebuilding the stream
        // table reads them) are replaced now.
        inner.rewrite_damaged_indexes()?;
        let (tx, rx) = mpsc::channel::<SealJob>();
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("annal-sealer".into())
            .spawn(move || worker.run_sealer(rx))
            .map_err(|e| Error::io("spawn the sealer thread for", inner.dir.clone(), e))?;
        *self::lock(&inner.sealer_tx) = Some(tx);
        *self::lock(&inner.sealer) = Some(handle);
        Ok(Log { inner })
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
    /// let log = Log::open(dir.path(), Options::default())?;
    /// let id = Uuid::from_u128(7);
    /// let batch = [EventData::new("Paid", b"{}".as_slice()).with_id(id)];
    /// let first = log.append("order-9", ExpectedVersion::NoStream, &batch)?;
    /// let retry = log.append("order-9", ExpectedVersion::NoStream, &batch)?;
    /// assert_eq!(first, retry);
    /// assert_eq!(log.view()?.next_position(), 1, "the retry wrote nothing");
    /// # Ok(()) }
    /// ```
    pub fn append(&self, stream: &str, expected: ExpectedVersion, events: &[EventData<'_>]) -> Result<AppendResult> {
        let inner = &*self.inner;
        let batch_len = inner.check_batch(stream, events)?;
        let _appending = Appending::enter(&inner.appenders);
        let (target, result) = loop {
            match inner.enqueue(stream, expected, events, batch_len)? {
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
    pub fn view(&self) -> Result<LogView> {
        self.inner.view()
    }

    /// Make everything durable, mark the log cleanly closed (its durable
    /// boundary is its end) and release the lock. Dropping a `Log` does the
    /// same but cannot report errors.
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
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.inner.close();
    }
}

impl Inner {
    fn check_batch(&self, stream: &str, events: &[EventData<'_>]) -> Result<u64> {
        if events.is_empty() {
            return Err(Error::InvalidArgument("an append needs at least one event".into()));
        }
        if stream.is_empty() || stream.len() > u16::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a stream name must be 1 to 65535 bytes, found {} bytes",
                stream.len()
            )));
        }
        if u32::try_from(events.len()).is_err() {
            return Err(Error::InvalidArgument("too many events in one batch".into()));
        }
        let mut total = FRAME_HEADER_LEN as u64;
        for (i, ev) in events.iter().enumerate() {
            if ev.event_type.is_empty() || ev.event_type.len() > u16::MAX as usize {
                return Err(Error::InvalidArgument(format!(
                    "event {i}: an event type must be 1 to 65535 bytes, found {} bytes",
                    ev.event_type.len()
                )));
            }
            let body = ev.metadata.len() as u64 + ev.payload.len() as u64;
            let len = ev.record_len(stream);
            if body > self.opts.max_event_bytes || len > MAX_RECORD_LEN {
                return Err(Error::InvalidArgument(format!(
                    "event {i}: metadata + payload is {body} bytes, more than max_event_bytes ({}) or the format limit",
                    self.opts.max_event_bytes.min(MAX_RECORD_LEN)
                )));
            }
            total += len;
        }
        if total > self.opts.max_batch_bytes {
            return Err(Error::InvalidArgument(format!(
                "the batch encodes to {total} bytes, more than max_batch_bytes ({})",
                self.opts.max_batch_bytes
            )));
        }
        Ok(total)
    }

    /// Wait until the sealer's backlog is below [`MAX_UNINDEXED`], or the
    /// writer is poisoned or closed.
    fn wait_for_sealer(&self) -> Result<()> {
        let mut b = lock(&self.backlog);
        b.waiting += 1;
        while b.unindexed >= MAX_UNINDEXED && !self.poisoned.load(Ordering::Acquire) && !self.sealer_stopped() {
            b = self.backlog_cv.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        b.waiting -= 1;
        drop(b);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        Ok(())
    }

    /// Whether the sealer thread was stopped (the log is closing).
    fn sealer_stopped(&self) -> bool {
        self.sealer_stopped.load(Ordering::Acquire)
    }

    /// One sealed segment indexed (or given up on): wake appenders waiting
    /// for the backlog.
    fn sealed_done(&self) {
        let mut b = lock(&self.backlog);
        b.unindexed = b.unindexed.saturating_sub(1);
        drop(b);
        self.backlog_cv.notify_all();
    }

    /// Wake appenders waiting for the backlog to check the writer's state.
    fn wake_backlog(&self) {
        drop(lock(&self.backlog));
        self.backlog_cv.notify_all();
    }

    /// The atomic step: check the expected version, assign positions, encode.
    /// `None`: the batch would roll a segment while [`MAX_UNINDEXED`] sealed
    /// segments wait for the sealer; nothing was queued.
    fn enqueue(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
        batch_len: u64,
    ) -> Result<Option<(u64, AppendResult)>> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(Error::Closed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        let current = self.current_version(&st, stream)?;
        if events.iter().all(|e| e.id.is_some())
            && let Some(r) = self.idempotent(&mut st, stream, expected, current, events)?
        {
            // A retry of an append that is already in the log: wait for it.
            return Ok(Some((st.lsn, r)));
        }
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
        // Versions and positions come from files (the stream table, the
        // segments): none may wrap. Checked before anything is queued.
        let n = events.len() as u64;
        let first_version = match current {
            None => 0,
            Some(v) => v.checked_add(1).ok_or_else(|| version_overflow(stream, v, n))?,
        };
        let last_version = first_version
            .checked_add(n - 1)
            .ok_or_else(|| version_overflow(stream, first_version - 1, n))?;
        if st.next_position.checked_add(n).is_none() {
            return Err(Error::InvalidArgument(format!(
                "the log's next position is {}: {n} more events would pass the largest position (2^64 - 1)",
                st.next_position
            )));
        }
        if st.seg_has_batches && st.seg_end + batch_len > self.opts.segment_size {
            {
                let mut b = lock(&self.backlog);
                if b.unindexed >= MAX_UNINDEXED {
                    return Ok(None);
                }
                b.unindexed += 1;
            }
            self.push_checkpoint(&mut st);
            let seal = encode_seal(st.next_position, st.seg_durable);
            let (base, prev_timestamp) = (st.next_position, st.last_timestamp);
            st.push_bytes(&seal);
            let chunk = std::mem::take(&mut st.cur);
            st.pending.push(Op::Write(chunk));
            let next = Arc::new(RwLock::new(MemIndex::default()));
            let sealed = std::mem::replace(&mut st.index, next.clone());
            let sealed_base = st.seg_base;
            st.unpersisted.push((sealed_base, sealed.clone()));
            st.pending.push(Op::Roll {
                base,
                prev_timestamp,
                sealed,
                next,
            });
            st.seg_base = base;
            st.seg_end = SEGMENT_HEADER_LEN as u64;
            st.seg_has_batches = false;
            st.seg_durable = SEGMENT_HEADER_LEN as u64;
        }
        let timestamp = (self.opts.clock)().max(st.last_timestamp);
        let first_position = st.next_position;
        let durable = st.seg_durable;
        let id_base = if events.iter().any(|e| e.id.is_none()) {
            st.ids.take(events.len() as u64)
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
        if st.unsigned_events >= self.opts.checkpoint_every {
            self.push_checkpoint(&mut st);
        }
        self.queued_appends.fetch_add(1, Ordering::AcqRel);
        let mut rec_off = frame_offset + FRAME_HEADER_LEN as u64;
        let records = events.iter().map(|ev| {
            let here = rec_off;
            rec_off += ev.record_len(stream);
            (here, &*ev.event_type)
        });
        write_index(&st.index).add_batch(frame_offset, first_position, stream, first_version, n, records);
        if self.opts.idempotency_window > 0 && events.iter().any(|e| e.id.is_some()) {
            let name: Arc<str> = stream.into();
            for (i, ev) in events.iter().enumerate() {
                if let Some(id) = ev.id {
                    st.remember(
                        id.into_bytes(),
                        &name,
                        first_version + i as u64,
                        first_position + i as u64,
                    );
                }
            }
            while st.recent_order.len() > self.opts.idempotency_window {
                if let Some(old) = st.recent_order.pop_front() {
                    st.recent_ids.remove(&old);
                }
            }
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

    /// With a signing key, queue a checkpoint frame for the leader to sign
    /// (spec 3.5) if events were appended since the last one.
    fn push_checkpoint(&self, st: &mut State) {
        if self.opts.signing_key.is_none() || st.unsigned_events == 0 {
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

    fn poison_error(&self) -> Error {
        let cause = lock(&self.commit).poison.clone().unwrap_or_default();
        Error::Poisoned { cause }
    }

    /// Wait until `target` is written (and durable if `durable`), leading a
    /// group commit if no one else is.
    ///
    /// Bytes that were written (and made durable, if asked) count as done
    /// even if the writer was poisoned since (by the sealer, or by work after
    /// the commit): the failure is reported by the next call. A poisoned
    /// writer reports [`Error::Poisoned`] only once no leader is in progress,
    /// so an appender never gives up on bytes a running leader still writes.
    fn commit_until(&self, target: u64, durable: bool) -> Result<()> {
        let mut c = lock(&self.commit);
        loop {
            if c.written >= target && (!durable || c.durable >= target) {
                return Ok(());
            }
            if !c.busy
                && let Some(cause) = &c.poison
            {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if c.busy {
                c.parked.push(std::thread::current());
                drop(c);
                // Unparked by the leader when it is done (or spuriously).
                std::thread::park();
                if self.reached(target, durable) {
                    return Ok(());
                }
                c = lock(&self.commit);
                continue;
            }
            c.busy = true;
            let need_sync = durable || self.opts.durability == Durability::Fsync;
            drop(c);
            if need_sync {
                self.gather();
            }
            let res = self.lead(need_sync);
            c = lock(&self.commit);
            c.busy = false;
            match res {
                Ok((written, synced)) => {
                    c.written = written;
                    self.written_end.store(written, Ordering::Release);
                    if synced {
                        c.durable = written;
                        self.durable_end.store(written, Ordering::Release);
                    }
                }
                Err(e) => {
                    self.poisoned.store(true, Ordering::Release);
                    c.poison = Some(e.to_string());
                    unpark_all(&mut c);
                    drop(c);
                    self.wake_backlog();
                    return Err(e);
                }
            }
            unpark_all(&mut c);
        }
    }

    /// Whether the bytes up to `target` are written (and durable, if asked),
    /// without taking the commit lock.
    fn reached(&self, target: u64, durable: bool) -> bool {
        self.written_end.load(Ordering::Acquire) >= target
            && (!durable || self.durable_end.load(Ordering::Acquire) >= target)
    }

    /// Before a group's fsync, give appenders that are on their way (inside
    /// `append` but not yet queued) a moment to join the group, so that
    /// concurrent durable appenders share one fsync instead of splitting into
    /// alternating small groups. Stops when every appender has queued, when
    /// none has arrived for [`GATHER_GAP`], or after half the last fsync's
    /// duration (capped at 1 ms); does not wait for a lone appender.
    fn gather(&self) {
        let limit = Duration::from_micros((self.last_sync_micros.load(Ordering::Relaxed) / 2).min(1000));
        let start = Instant::now();
        let (mut seen, mut changed) = (usize::MAX, start);
        loop {
            let queued = self.queued_appends.load(Ordering::Acquire);
            let now = Instant::now();
            if queued >= self.appenders.load(Ordering::Acquire) || now - start >= limit {
                return;
            }
            if queued != seen {
                (seen, changed) = (queued, now);
            } else if now - changed >= GATHER_GAP {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// The leader's work: write everything pending in one write per segment,
    /// roll segments, fsync if asked, publish the new ends and the head slot.
    fn lead(&self, sync: bool) -> Result<(u64, bool)> {
        let (ops, lsn, next_position) = {
            let mut st = lock(&self.state);
            let mut ops = std::mem::take(&mut st.pending);
            self.queued_appends.store(0, Ordering::Release);
            if !st.cur.is_empty() {
                let spare = std::mem::take(&mut st.spare);
                ops.push(Op::Write(std::mem::replace(&mut st.cur, spare)));
            }
            (ops, st.lsn, st.next_position)
        };
        let mut io = lock(&self.io);
        let mut spare = None;
        for op in ops {
            match op {
                Op::Write(bytes) => {
                    io.reserve_for(bytes.len() as u64, self.opts.segment_size);
                    let st: &IoState = &io;
                    let write = |off: usize, b: &[u8]| st.file.write_at(st.offset + off as u64, b);
                    let (mut bytes, chained) = if self.format.chained() {
                        let mut state = ChainState {
                            chainer: Chainer::new(self.opts.chain_key.as_ref()),
                            signer: self.opts.signing_key.as_ref().map(|k| (k, &self.format.log_id)),
                            chain: st.chain,
                            position: st.chain_position,
                        };
                        let bytes = write_chained(&mut state, st.hasher.as_ref(), bytes, write)
                            .map_err(|e| Error::io("write", &st.path, e))?;
                        (bytes, Some((state.chain, state.position)))
                    } else {
                        write(0, &bytes).map_err(|e| Error::io("write", &st.path, e))?;
                        (bytes, None)
                    };
                    if let Some(c) = chained {
                        (io.chain, io.chain_position) = c;
                    }
                    io.offset += bytes.len() as u64;
                    bytes.clear();
                    spare = Some(bytes);
                }
                Op::Roll {
                    base,
                    prev_timestamp,
                    sealed,
                    next,
                } => self.roll(&mut io, base, prev_timestamp, sealed, next)?,
            }
        }
        if sync && io.durable < io.offset {
            let start = Instant::now();
            io.file.sync().map_err(|e| Error::io("fsync", &io.path, e))?;
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.last_sync_micros.store(micros, Ordering::Relaxed);
            io.durable = io.offset;
        }
        let visible = match self.opts.durability {
            Durability::Fsync => io.durable,
            Durability::Buffered => io.offset,
        };
        let visible_position = if visible == io.offset {
            next_position
        } else {
            lock(&self.published).next_position
        };
        {
            let mut p = lock(&self.published);
            p.visible_end = visible;
            p.next_position = visible_position;
        }
        self.bump_published_epoch();
        // The group's bytes are written (and durable, if asked): they are
        // acknowledged whatever happens next. A failure of the work below
        // (the head slot, derived files) poisons the writer for the next call.
        let head = Head {
            sequence: 0,
            segment_base: io.base,
            durable_end: io.durable,
            visible_end: visible,
            next_position: visible_position,
        };
        let upkeep = io.head.write(head).and_then(|()| {
            let damage = self.index_damage.load(Ordering::Acquire);
            if damage != self.index_damage_handled.load(Ordering::Acquire) {
                self.rewrite_damaged_indexes()?;
                self.index_damage_handled.store(damage, Ordering::Release);
            }
            if self.table_damaged.load(Ordering::Acquire) {
                let sealed = lock(&self.published).sealed.clone();
                let bytes = rebuild_table(&sealed, io.base, self.opts.hash_mask)?;
                self.install_table(&bytes, None)?;
            }
            Ok(())
        });
        if let Err(e) = upkeep {
            self.poison(&e);
        }
        let (base, durable) = (io.base, io.durable);
        drop(io);
        let mut st = lock(&self.state);
        if st.seg_base == base {
            st.seg_durable = st.seg_durable.max(durable);
        }
        if let Some(b) = spare
            && st.spare.capacity() < b.capacity()
        {
            st.spare = b;
        }
        Ok((lsn, sync))
    }

    /// Seal is already written; make the segment durable, then create the next.
    fn roll(
        &self,
        io: &mut IoState,
        base: u64,
        prev_timestamp: u64,
        sealed: Arc<RwLock<MemIndex>>,
        next: Arc<RwLock<MemIndex>>,
    ) -> Result<()> {
        let fs = &*self.opts.io;
        io.release_reservation()?;
        io.file.sync().map_err(|e| Error::io("fsync", &io.path, e))?;
        let sealed_len = io.offset;
        let path = self.dir.join(segment_file_name(base));
        let file = fs.create(&path).map_err(|e| Error::io("create", &path, e))?;
        let header = SegmentHeader::new(&self.format, base, prev_timestamp, (self.opts.clock)(), io.chain);
        file.write_at(0, header.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        file.sync().map_err(|e| Error::io("fsync", &path, e))?;
        fs.sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        let read_file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
        let sealed_seg = {
            let mut p = lock(&self.published);
            let map = Mapping::map(&p.active_file, sealed_len, &p.active_path)?;
            let idx_path = self.dir.join(index_file_name(p.active_base));
            let seg = ViewSegment {
                base: p.active_base,
                path: p.active_path.clone(),
                map: Arc::new(map),
                index: Arc::new(IndexCell::new(
                    p.active_base,
                    Some(idx_path),
                    Some(Index::Mem(sealed.clone())),
                )),
            };
            seg.index.notify(&self.index_damage);
            p.sealed.push(seg.clone());
            p.active_base = base;
            p.active_path = Arc::new(path.clone());
            p.active_file = read_file;
            p.active_index = Arc::new(IndexCell::new(base, None, Some(Index::Mem(next))));
            p.visible_end = SEGMENT_HEADER_LEN as u64;
            p.next_position = base;
            p.map = None;
            seg
        };
        io.file = file;
        io.path = path;
        io.base = base;
        io.offset = SEGMENT_HEADER_LEN as u64;
        io.durable = SEGMENT_HEADER_LEN as u64;
        io.reserved = io.offset;
        // Indexing runs on the sealer thread, so appends never wait for it.
        let job = SealJob {
            seg: sealed_seg,
            mem: sealed,
            next_segment: base,
        };
        let sent = lock(&self.sealer_tx).as_ref().map(|tx| tx.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            // The sealed segment and the next one are durable: a failure to
            // index poisons the writer for the next call, like the sealer's.
            Some(Err(mpsc::SendError(job))) => {
                if let Err(e) = self.index_sealed(&job.seg, &job.mem, job.next_segment) {
                    self.poison(&e);
                }
                self.sealed_done();
                Ok(())
            }
            None => Err(Error::Closed),
        }
    }

    /// The sealer thread: index each sealed segment in order. A failure
    /// poisons the writer like any failed write.
    fn run_sealer(&self, rx: mpsc::Receiver<SealJob>) {
        for job in rx {
            if !self.poisoned.load(Ordering::Acquire)
                && let Err(e) = self.index_sealed(&job.seg, &job.mem, job.next_segment)
            {
                self.poison(&e);
            }
            self.sealed_done();
        }
    }

    fn bump_published_epoch(&self) {
        let mut e = lock(&self.published_epoch.0);
        e.value += 1;
        if e.waiters > 0 {
            self.published_epoch.1.notify_all();
        }
    }

    fn poison(&self, e: &Error) {
        // The cause first, then the flag (both under the commit lock): a
        // thread that sees the flag must find the cause.
        let mut c = lock(&self.commit);
        if c.poison.is_none() {
            c.poison = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        unpark_all(&mut c);
        drop(c);
        self.wake_backlog();
    }

    /// Stop the sealer thread after it has indexed every sealed segment.
    fn stop_sealer(&self) {
        drop(lock(&self.sealer_tx).take());
        let handle = lock(&self.sealer).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.sealer_stopped.store(true, Ordering::Release);
        self.wake_backlog();
    }

    /// Write the index of a just-sealed segment and the new stream table
    /// (spec 17, 18), then let readers use them.
    fn index_sealed(&self, seg: &ViewSegment, mem: &RwLock<MemIndex>, next_segment: u64) -> Result<()> {
        let bytes = seg.bytes()?;
        let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
        let old_table = lock(&self.published).table.clone();
        let earlier: Vec<ViewSegment> = {
            let p = lock(&self.published);
            p.sealed.iter().filter(|s| s.base < seg.base).cloned().collect()
        };
        let mut resolve = |name: &str| resolve_prev(old_table.as_deref(), &earlier, name);
        let (idx_bytes, rows) = read_index(mem).encode(
            seg.base,
            bytes.len() as u64,
            seal_crc,
            self.opts.hash_mask,
            &mut resolve,
        );
        let idx_path = self.dir.join(index_file_name(seg.base));
        write_derived(&*self.opts.io, &self.dir, &idx_path, &idx_bytes)?;
        let idx = IdxFile::open_for(&idx_path, seg.base, bytes)
            .map_err(|d| d.at(&idx_path))?
            .ok_or_else(|| Error::Corrupt {
                path: idx_path.clone(),
                offset: 0,
                detail: "the index file just written is missing".into(),
            })?;
        seg.index.set(Index::Disk(Arc::new(idx)));
        let table_bytes =
            match streamtable::merge(old_table.as_deref(), &rows, seg.base, next_segment, self.opts.hash_mask) {
                Ok(b) => b,
                // The old table is damaged: rebuild it from every index.
                Err(_) => {
                    let sealed = lock(&self.published).sealed.clone();
                    rebuild_table(&sealed, next_segment, self.opts.hash_mask)?
                }
            };
        self.install_table(&table_bytes, Some(seg.base))
    }

    /// Rewrite the index files that readers found damaged, from the indexes
    /// they rebuilt in memory (spec 17.4).
    fn rewrite_damaged_indexes(&self) -> Result<()> {
        let (sealed, table) = {
            let p = lock(&self.published);
            (p.sealed.clone(), p.table.clone())
        };
        for (i, seg) in sealed.iter().enumerate() {
            if !seg.index.needs_rewrite() {
                continue;
            }
            let Some(Index::Mem(mem)) = seg.index.current() else {
                continue;
            };
            let bytes = seg.bytes()?;
            let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
            let earlier = &sealed[..i];
            let (idx_bytes, _) = read_index(&mem).encode(
                seg.base,
                bytes.len() as u64,
                seal_crc,
                self.opts.hash_mask,
                &mut |name| resolve_prev(table.as_deref(), earlier, name),
            );
            let idx_path = self.dir.join(index_file_name(seg.base));
            write_derived(&*self.opts.io, &self.dir, &idx_path, &idx_bytes)?;
            seg.index.mark_rewritten();
        }
        Ok(())
    }

    /// Write `bytes` as the stream table and let readers and appenders use it;
    /// `covered` is a segment whose in-memory streams it now covers.
    fn install_table(&self, bytes: &[u8], covered: Option<u64>) -> Result<()> {
        let path = self.dir.join(STREAM_TABLE_FILE);
        write_derived(&*self.opts.io, &self.dir, &path, bytes)?;
        let table = StreamTable::open(&path).map_err(|d| d.at(&path))?.map(Arc::new);
        lock(&self.published).table = table.clone();
        let mut st = lock(&self.state);
        st.table = table;
        if let Some(base) = covered {
            st.unpersisted.retain(|(b, _)| *b != base);
        }
        self.table_damaged.store(false, Ordering::Release);
        Ok(())
    }

    /// If this append repeats one already in the log (same ids, same stream,
    /// consecutive versions), the original result. Errors if it repeats only
    /// part of one.
    fn idempotent(
        &self,
        st: &mut State,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData<'_>],
    ) -> Result<Option<AppendResult>> {
        let ids: Vec<[u8; 16]> = events.iter().filter_map(|e| e.id.map(Uuid::into_bytes)).collect();
        if matches!(expected, ExpectedVersion::Any | ExpectedVersion::StreamExists)
            && !st.recent_ids.contains_key(&ids[0])
        {
            self.load_window(st)?;
        }
        let st = &*st;
        let k = ids.len() as u64;
        // The stored (version, position, id) of the stream's events from `v0`.
        let stored = |v0: u64| -> Result<Vec<(u64, u64, [u8; 16])>> {
            let mut out = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                match st.recent_ids.get(id) {
                    Some(r) if &*r.stream == stream && v0.checked_add(i as u64) == Some(r.version) => {
                        out.push((r.version, r.position, *id))
                    }
                    _ => break,
                }
            }
            if out.len() == ids.len() || !out.is_empty() {
                return Ok(out);
            }
            // Not remembered: read what the log holds (written events).
            let view = self.view()?;
            let mut out = Vec::new();
            for r in view.read_stream(stream, v0, Direction::Forward, k) {
                let r = r?;
                out.push((r.stream_version(), r.position(), r.event_id().into_bytes()));
            }
            Ok(out)
        };
        let v0 = match expected {
            ExpectedVersion::Exact(n) if current.is_some_and(|c| c > n) => n + 1,
            ExpectedVersion::Exact(_) => return Ok(None),
            ExpectedVersion::NoStream if current.is_some() => 0,
            ExpectedVersion::NoStream => return Ok(None),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => match st.recent_ids.get(&ids[0]) {
                Some(r) if &*r.stream == stream => r.version,
                _ => return Ok(None),
            },
        };
        let found = stored(v0)?;
        let matching = found.iter().zip(&ids).take_while(|((_, _, a), b)| a == *b).count() as u64;
        if matching == 0 {
            return Ok(None);
        }
        if matching < k {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_owned(),
                detail: format!(
                    "the first {matching} of {k} event ids match the events stored at versions {v0}.., the rest do not: \
                     a retry must repeat the original batch exactly"
                ),
            });
        }
        let (first, last) = (found[0], found[k as usize - 1]);
        Ok(Some(AppendResult {
            first_position: first.1,
            last_position: last.1,
            stream_version: last.0,
        }))
    }

    /// Once per open, on the first idempotency lookup that misses: fill the
    /// window of recent ids from the log's tail, so that a retry is
    /// recognised across reopen and across processes. Reads the last
    /// `idempotency_window` events written before this open (whatever their
    /// ids: the format does not tell generated ids from supplied ones), in
    /// one sequential read; memory is bounded by the window (about 80 bytes
    /// an event). Ids appended since the open stay the newest.
    fn load_window(&self, st: &mut State) -> Result<()> {
        if st.window_loaded {
            return Ok(());
        }
        let window = self.opts.idempotency_window;
        let end = st.open_position;
        let from = end.saturating_sub(window as u64);
        let mut older: Vec<([u8; 16], Arc<str>, u64, u64)> = Vec::new();
        if window > 0 && end > from {
            let view = self.view()?;
            let mut last: Option<Arc<str>> = None;
            for r in view.read_all(from).until(end) {
                let r = r?;
                // One allocation per run of events of one stream.
                let name = match &last {
                    Some(n) if **n == *r.stream() => n.clone(),
                    _ => {
                        let n: Arc<str> = r.stream().into();
                        last = Some(n.clone());
                        n
                    }
                };
                older.push((r.event_id().into_bytes(), name, r.stream_version(), r.position()));
            }
        }
        // Older than everything remembered since the open: in front, newest
        // of them nearest the back.
        for (id, stream, version, position) in older.into_iter().rev() {
            if st.recent_ids.contains_key(&id) {
                continue;
            }
            st.recent_ids.insert(
                id,
                RecentId {
                    stream,
                    version,
                    position,
                },
            );
            st.recent_order.push_front(id);
        }
        while st.recent_order.len() > window {
            if let Some(old) = st.recent_order.pop_front() {
                st.recent_ids.remove(&old);
            }
        }
        st.window_loaded = true;
        Ok(())
    }

    /// A view of everything visible now.
    fn view(&self) -> Result<LogView> {
        let mut p = lock(&self.published);
        let map = match &p.map {
            Some(m) if m.bytes().len() as u64 == p.visible_end => m.clone(),
            _ => {
                let m = Arc::new(Mapping::map(&p.active_file, p.visible_end, &p.active_path)?);
                p.map = Some(m.clone());
                m
            }
        };
        crate::read::view::trim_mappings(&mut p.sealed, crate::read::view::max_mapped());
        let mut segs = Vec::with_capacity(p.sealed.len() + 1);
        segs.extend(p.sealed.iter().cloned());
        segs.push(ViewSegment {
            base: p.active_base,
            path: p.active_path.clone(),
            map,
            index: p.active_index.clone(),
        });
        Ok(LogView::new(segs, p.next_position, p.table.clone()))
    }

    /// The current version of `stream`: the active index, then segments sealed
    /// but not yet in the stream table, then the table (or, if the table is
    /// damaged, the sealed segments' indexes).
    fn current_version(&self, st: &State, stream: &str) -> Result<Option<u64>> {
        if let Some(s) = read_index(&st.index).streams.get(stream) {
            return Ok(Some(s.last_version));
        }
        for (_, m) in st.unpersisted.iter().rev() {
            if let Some(s) = read_index(m).streams.get(stream) {
                return Ok(Some(s.last_version));
            }
        }
        let sealed_now = || lock(&self.published).sealed.clone();
        if let Some(t) = &st.table {
            match t.lookup(stream) {
                Ok(None) => return Ok(None),
                // A hint: used only if the segments confirm it.
                Ok(Some(e)) if table_hit_holds(&sealed_now(), stream, e)? => return Ok(Some(e.last_version)),
                Ok(Some(e)) => {
                    self.warn(format!(
                        "{}: the stream table says stream {stream:?} is at version {} (segment {}), but the segments \
                         do not confirm it; the version was taken from the segments and the table is rebuilt",
                        self.dir.join(STREAM_TABLE_FILE).display(),
                        e.last_version,
                        segment_file_name(e.at.segment)
                    ));
                    self.table_damaged.store(true, Ordering::Release);
                }
                Err(d) => {
                    self.warn(format!(
                        "{}: the stream table is damaged at byte {} ({}); stream {stream:?}'s version was taken from \
                         the segments and the table is rebuilt",
                        self.dir.join(STREAM_TABLE_FILE).display(),
                        d.offset,
                        d.detail()
                    ));
                    self.table_damaged.store(true, Ordering::Release);
                }
            }
        }
        let sealed = sealed_now();
        for seg in sealed.iter().rev() {
            let Some(i) = seg.find_stream(stream)? else {
                continue;
            };
            if last_version_holds(seg, stream, i.last_version)? {
                return Ok(Some(i.last_version));
            }
            // The index file lies about the stream: rebuild the index from the
            // segment (reported, and the file rewritten by the leader).
            let detail = format!(
                "the index says stream {stream:?} ends at version {} here, but the segment's records do not",
                i.last_version
            );
            self.warn(format!("{}: {detail}; the index is rebuilt", seg.path.display()));
            let idx = seg.index.damaged(seg.bytes()?, Damage::corrupt(0, detail))?;
            if let Some(i) = idx.find_stream(stream).map_err(|d| d.at(&*seg.path))? {
                return Ok(Some(i.last_version));
            }
        }
        Ok(None)
    }

    /// Record a warning for [`Log::warnings`] (at most [`MAX_WARNINGS`]).
    fn warn(&self, w: String) {
        let mut ws = lock(&self.warnings);
        if ws.len() < MAX_WARNINGS {
            ws.push(w);
        }
    }

    fn close(&self) -> Result<()> {
        {
            let st = lock(&self.state);
            if st.closed {
                return Ok(());
            }
        }
        if self.poisoned.load(Ordering::Acquire) {
            lock(&self.state).closed = true;
            self.stop_sealer();
            return Err(self.poison_error());
        }
        let target = {
            let mut st = lock(&self.state);
            self.push_checkpoint(&mut st);
            st.lsn
        };
        let committed = self.commit_until(target, true);
        self.stop_sealer();
        committed?;
        if let Err(e) = self.rewrite_damaged_indexes() {
            self.poison(&e);
        }
        if self.poisoned.load(Ordering::Acquire) {
            lock(&self.state).closed = true;
            return Err(self.poison_error());
        }
        let next_position = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.next_position
        };
        let mut io = lock(&self.io);
        io.release_reservation()?;
        if io.durable < io.offset {
            io.file.sync().map_err(|e| Error::io("fsync", &io.path, e))?;
            io.durable = io.offset;
        }
        let head = Head {
            sequence: 0,
            segment_base: io.base,
            durable_end: io.durable,
            visible_end: io.offset,
            next_position,
        };
        io.head.write(head)?;
        io.head.sync()
    }
}

/// Most warnings a writer keeps (see [`Log::warnings`]).
const MAX_WARNINGS: usize = 100;

/// Whether the stream table's entry `e` for `stream` is confirmed by the
/// segments (spec 18: the table is a hint): the segment it names holds the
/// stream's records up to exactly `e.last_version`, and no later sealed
/// segment holds the stream. Costs one index lookup per sealed segment after
/// the one named, and one frame's CRC.
fn table_hit_holds(sealed: &[ViewSegment], stream: &str, e: TableEntry) -> Result<bool> {
    let Ok(i) = sealed.binary_search_by_key(&e.at.segment, |s| s.base) else {
        return Ok(false);
    };
    if !last_version_holds(&sealed[i], stream, e.last_version)? {
        return Ok(false);
    }
    for later in &sealed[i + 1..] {
        if later.find_stream(stream)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `seg` holds `stream`'s records up to exactly `last_version`: its
/// index lists the stream with that last version, and the last frame the
/// index gives for the stream is intact (CRC) and holds a record of the
/// stream at `last_version` and none at a later version.
fn last_version_holds(seg: &ViewSegment, stream: &str, last_version: u64) -> Result<bool> {
    let found = seg.with_index(|i| {
        let Some(info) = i.find_stream(stream)? else {
            return Ok(None);
        };
        let Some(last) = info.entry_count.checked_sub(1) else {
            return Ok(None);
        };
        Ok(i.stream_entry(stream, &info, last)?
            .map(|(_, off)| (info.last_version, off)))
    })?;
    let Some((indexed, frame_offset)) = found else {
        return Ok(false);
    };
    if indexed != last_version {
        return Ok(false);
    }
    let bytes = seg.bytes()?;
    let Some(rest) = usize::try_from(frame_offset).ok().and_then(|o| bytes.get(o..)) else {
        return Ok(false);
    };
    let Ok(frame) = validate_frame(rest, frame_offset, true) else {
        return Ok(false);
    };
    let Some(frame_bytes) = usize::try_from(frame.len).ok().and_then(|l| rest.get(..l)) else {
        return Ok(false);
    };
    let mut seen = false;
    for r in frame_records(frame_bytes) {
        if r.stream() == stream {
            match r.stream_version().cmp(&last_version) {
                std::cmp::Ordering::Equal => seen = true,
                std::cmp::Ordering::Greater => return Ok(false),
                std::cmp::Ordering::Less => {}
            }
        }
    }
    Ok(seen)
}

/// The newest segment before the one being indexed that holds `name`, and
/// its row there: from the stream table, or, if the table is damaged, by
/// searching the earlier segments' indexes.
pub(crate) fn resolve_prev(table: Option<&StreamTable>, earlier: &[ViewSegment], name: &str) -> Prev {
    let search = |segs: &[ViewSegment]| {
        for seg in segs.iter().rev() {
            if let Ok(Some(i)) = seg.find_stream(name) {
                return Some(Prev {
                    segment: seg.base,
                    row: i.row,
                });
            }
        }
        None
    };
    let Some(t) = table else {
        return search(earlier).unwrap_or(Prev::NONE);
    };
    // Segments the table does not cover are searched first (newest first).
    let covered = earlier.partition_point(|s| s.base < t.next_segment());
    if let Some(p) = search(&earlier[covered..]) {
        return p;
    }
    let below = earlier.last().map_or(0, |s| s.base + 1);
    match t.lookup(name) {
        Ok(None) => Prev::NONE,
        // The table may cover segments after the one being indexed.
        Ok(Some(e)) if e.at.segment < below => e.at,
        _ => search(&earlier[..covered]).unwrap_or(Prev::NONE),
    }
}

/// Build a stream table covering `sealed` (all sealed segments, in order)
/// from their indexes: the repair path, `O(segments × streams)`.
pub(crate) fn rebuild_table(sealed: &[ViewSegment], next_segment: u64, hash_mask: u64) -> Result<Vec<u8>> {
    let mut latest: HashMap<Box<str>, TableEntry> = HashMap::new();
    for seg in sealed {
        let idx = seg.index.get(seg.bytes()?)?;
        for (name, row, last_version) in seg.stream_rows(&idx)? {
            latest.insert(
                name,
                TableEntry {
                    last_version,
                    at: Prev { segment: seg.base, row },
                },
            );
        }
    }
    let mut rows: Vec<(u64, &[u8], TableEntry)> = latest
        .iter()
        .map(|(n, e)| (stream_hash(n.as_bytes()) & hash_mask, n.as_bytes(), *e))
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    Ok(streamtable::encode(rows.into_iter(), next_segment, hash_mask))
}

pub(crate) use crate::storage::io::write_derived;

/// The file name of the index of the segment based at `base`.
pub(crate) use crate::format::names::index_file_name;

/// The error of an append whose versions would pass `u64::MAX`.
fn version_overflow(stream: &str, current: u64, n: u64) -> Error {
    Error::InvalidArgument(format!(
        "stream {stream:?} is at version {current}: {n} more events would pass the largest version (2^64 - 1); \
         nothing was written"
    ))
}

/// Wake every appender parked in `Inner::commit_until`.
fn unpark_all(c: &mut Commit) {
    for t in c.parked.drain(..) {
        t.unpark();
    }
}

fn read_index(m: &RwLock<MemIndex>) -> std::sync::RwLockReadGuard<'_, MemIndex> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write_index(m: &RwLock<MemIndex>) -> std::sync::RwLockWriteGuard<'_, MemIndex> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// The `i`-th generated id of a batch whose first generated id is `base` (a UUID
/// v7): the low 62 bits (`rand_b`) count up, wrapping within those bits, so the
/// version and variant bits are untouched.
fn generated_id(base: u128, i: u64) -> [u8; 16] {
    const LOW: u128 = (1 << 62) - 1;
    ((base & !LOW) | (base.wrapping_add(i as u128) & LOW)).to_be_bytes()
}

impl State {
    fn remember(&mut self, id: [u8; 16], stream: &Arc<str>, version: u64, position: u64) {
        let prev = self.recent_ids.insert(
            id,
            RecentId {
                stream: stream.clone(),
                version,
                position,
            },
        );
        if prev.is_none() {
            self.recent_order.push_back(id);
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
        self.lsn += bytes.len() as u64;
        self.seg_end += bytes.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(n: usize) -> Vec<EventData<'static>> {
        (0..n).map(|_| EventData::new("E", b"{}".as_slice())).collect()
    }

    /// Issue 13, defect 21: a stream version or a position that would pass
    /// `u64::MAX` is an error and nothing is queued (it wrapped to 0).
    #[test]
    fn versions_and_positions_never_wrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Options::default()).expect("open");
        log.append("s", ExpectedVersion::Any, &one(1)).expect("append");
        // The active index says the stream is at u64::MAX - 1 (as a forged
        // file could make it say).
        {
            let st = lock(&log.inner.state);
            write_index(&st.index).add_batch(128, 1, "s", u64::MAX - 1, 1, std::iter::once((200u64, "E")));
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
