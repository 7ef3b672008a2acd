//! How a log is opened for writing: [`Options`] (a builder), [`Durability`]
//! and [`Clock`]. Plain values: nothing here does I/O.

use std::sync::Arc;

use crate::audit::chain::{ChainKey, SigningKey};
use crate::audit::subjects::MasterKey;
use crate::storage::io::{Io, StdIo};

#[cfg(doc)]
use super::Log;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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

/// The largest `segment_size` (2 GiB): with a batch of up to
/// `MAX_FRAME_LEN` alone in a segment, every segment file stays shorter than
/// 2^32 bytes (spec 3.6).
pub const MAX_SEGMENT_SIZE: u64 = 2 << 30;

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
    pub(crate) index_checkpoint_bytes: u64,
    pub(crate) format_version: u16,
    pub(crate) master_key: Option<MasterKey>,
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fixed_random: Option<u64>,
    pub(crate) retention: Option<super::retention_rule::Retention>,
    pub(crate) retired_grace: std::time::Duration,
    #[cfg(feature = "remote")]
    pub(crate) replicate: Option<(crate::remote::RemoteLog, crate::remote::Follow)>,
    /// Bytes of the store's segments cached for reads below the local
    /// front (feature `remote`).
    #[cfg(feature = "remote")]
    pub(crate) remote_cache_bytes: u64,
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

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 256 << 20,
            durability: Durability::Buffered,
            max_event_bytes: 64 << 20,
            max_batch_bytes: 256 << 20,
            create: true,
            io: Arc::new(StdIo),
            clock: Arc::new(crate::types::now_nanos),
            log_id: None,
            hash_mask: u64::MAX,
            idempotency_window: 100_000,
            chain: true,
            chain_key: None,
            signing_key: None,
            checkpoint_every: 100_000,
            index_checkpoint_bytes: 16 << 20,
            format_version: crate::format::CURRENT_FORMAT_VERSION,
            master_key: None,
            #[cfg(any(test, feature = "fuzzing"))]
            fixed_random: None,
            retention: None,
            retired_grace: std::time::Duration::from_secs(600),
            #[cfg(feature = "remote")]
            replicate: None,
            #[cfg(feature = "remote")]
            remote_cache_bytes: crate::remote::DEFAULT_CACHE_BYTES,
        }
    }
}

impl Options {
    /// Target size of a segment file in bytes (default 256 MiB, at most
    /// 2 GiB: a larger value is lowered to it, so that every offset in a
    /// segment fits 32 bits, spec 3.6). A batch that does not fit starts a
    /// new segment; a batch larger than this is written alone into a segment
    /// of its own.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.min(MAX_SEGMENT_SIZE);
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
    /// The master key that wraps the subjects' data keys in `annal.keys`
    /// (spec 22). The key file is wrapped for its whole life if it is
    /// created with a master key: opening the log then needs the same key,
    /// and giving one for a key file that is not wrapped is an error. The key
    /// is never written to the log; keep it elsewhere.
    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }
    /// Take subject keys and nonces from `seed` instead of the operating
    /// system's generator: deterministic files for golden vectors. A test
    /// hook (feature `fuzzing`); never for real data.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn fixed_random(mut self, seed: u64) -> Self {
        self.fixed_random = Some(seed);
        self
    }
    /// Events between signed checkpoints (default 100,000; at least 1).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }
    /// Bytes of the active segment made durable between index checkpoints
    /// (spec 17.5; default 16 MiB): a background thread writes the index of
    /// the batches since the last one to a checkpoint file, so that opening
    /// the log after a crash reads at most about this many bytes of batches
    /// (plus what was not yet durable). A clean close always writes one, so
    /// a cleanly closed log opens without reading any batch.
    pub fn index_checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.index_checkpoint_bytes = bytes.max(1);
        self
    }
    /// Create new logs in an older format version (`1`: no audit chain).
    /// Only for compatibility tests (feature `fuzzing`, the test hooks);
    /// existing logs keep their version.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn format_version(mut self, version: u16) -> Self {
        self.format_version = version;
        self
    }
    /// Narrow the stream hash written into new index files and stream tables
    /// (spec 19) to `mask`. Only for tests that force hash collisions: with a
    /// narrow mask, many streams share a hash, which costs lookups time but
    /// never mixes streams. A test hook (feature `fuzzing`).
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn stream_hash_mask(self, mask: u64) -> Self {
        self.with_hash_mask(mask)
    }
    /// The stream hash mask of new derived files: `check`'s repair keeps the
    /// mask the log's stream table already uses.
    pub(crate) fn with_hash_mask(mut self, mask: u64) -> Self {
        self.hash_mask = mask;
        self
    }
    /// Log retention (spec 3.9): drop whole sealed segments from the front
    /// of the log by age or total size, oldest first, never the active one,
    /// after a durable `$retention` record says so. Applied after each
    /// segment seal, at open, and by [`Log::apply_retention`](crate::Log::apply_retention).
    /// Needs a log of format version 4 (older logs keep everything, with a
    /// warning).
    pub fn retention(mut self, rule: super::retention_rule::Retention) -> Self {
        self.retention = Some(rule).filter(|r| r.is_set());
        self
    }

    /// Ship the log to `remote` from inside this process (feature `remote`,
    /// spec 23): a thread of the log's runs a [`Replicator`] at `follow`'s
    /// pace (failed rounds retried with backoff), reading the log's files,
    /// never its appenders' locks; `close` ships a last round after the log
    /// is cleanly closed, so the store then holds every event.
    /// [`Log::replication`](crate::Log::replication) says how far it got.
    ///
    /// [`Replicator`]: crate::remote::Replicator
    #[cfg(feature = "remote")]
    pub fn replicate_to(mut self, remote: crate::remote::RemoteLog, follow: crate::remote::Follow) -> Self {
        self.replicate = Some((remote, follow));
        self
    }

    /// At most `bytes` of the store's sealed segments (and index files)
    /// that no view holds stay cached in the log directory (`annal.cache/`)
    /// for reads below what local retention left (default
    /// [`DEFAULT_CACHE_BYTES`](crate::remote::DEFAULT_CACHE_BYTES); feature
    /// `remote`, with [`Options::replicate_to`] and a retention rule).
    #[cfg(feature = "remote")]
    pub fn remote_cache_bytes(mut self, bytes: u64) -> Self {
        self.remote_cache_bytes = bytes;
        self
    }

    /// How long [`Log::compact`](crate::Log::compact) keeps the original of
    /// each segment it rewrites, under a retired name (spec 3.10), for the
    /// views of other processes that had not mapped it yet: default 10
    /// minutes, removed by the first open or compaction after that. Zero
    /// keeps none: the removed events' bytes leave the directory at once,
    /// and such a view then gets an error naming the segment (never other
    /// events).
    pub fn retired_grace(mut self, grace: std::time::Duration) -> Self {
        self.retired_grace = grace;
        self
    }
}
