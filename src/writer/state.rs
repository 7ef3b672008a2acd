//! The shared state behind a [`Log`] (`Inner`) and its parts: the
//! appenders' state, the commit and I/O state of the leader, what views see,
//! the sealer's queue; plus views and warnings. Building and closing it is
//! in `lifecycle`; the behaviour is in the sibling files, each an
//! `impl Inner`.
//!
//! Invariants: `state` is the appenders' lock (versions, positions, the
//! pending bytes), and an expected version is decided only under it;
//! `published` is what views see; the I/O state is touched only by the
//! commit leader. No lock is held across a write or an fsync except `io`,
//! by the leader.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};

use crate::audit::chain::ChainHash;
use crate::audit::chaining::HasherThread;
use crate::error::Result;
use crate::format::Layout;
use crate::format::LogFormat;
use crate::index::checkpoint::CheckpointFile;
use crate::index::streamtable::StreamTable;
use crate::index::{IndexCell, Layered, MemIndex};
use crate::read::view::{LogView, ViewSegment};
use crate::storage::head::HeadWriter;
use crate::storage::io::IoFile;
use crate::storage::mmap::Mapping;

#[cfg(doc)]
use super::Log;
use super::lock;
use super::options::Options;
use super::results::Recovery;
use crate::storage::writer_lock::WriterLock;

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) opts: Options,
    pub(super) format: LogFormat,
    /// The writer lock, let go of when the log is closed (other handles on
    /// `Inner`, such as a clone of the `Log` kept by a repository, must not
    /// keep it).
    pub(super) writer_lock: Mutex<Option<WriterLock>>,
    pub(super) state: Mutex<State>,
    pub(super) commit: Mutex<Commit>,
    /// `Commit::written` and `Commit::durable`, readable without the lock.
    pub(super) written_end: AtomicU64,
    pub(super) durable_end: AtomicU64,
    pub(super) poisoned: AtomicBool,
    /// A lookup found the stream table damaged; the leader rebuilds it.
    pub(super) table_damaged: AtomicBool,
    /// Jobs for the sealer thread, which indexes sealed segments and writes
    /// index checkpoints. The thread starts with its first job (a log
    /// opened and closed without one never starts it): `SealerLine`.
    pub(super) sealer_tx: Mutex<SealerLine>,
    /// This writer, for the sealer thread it starts (set once it is built).
    pub(super) this: std::sync::OnceLock<std::sync::Weak<Inner>>,
    pub(super) sealer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bumped by index cells when a reader finds an index file damaged.
    pub(super) index_damage: Arc<AtomicU64>,
    /// The value of `index_damage` the leader last handled.
    pub(super) index_damage_handled: AtomicU64,
    pub(super) io: Mutex<IoState>,
    pub(super) published: Mutex<Published>,
    /// Bumped (and notified) each time the leader publishes new visible ends,
    /// for subscriptions waiting for new events.
    pub(super) published_epoch: (Mutex<Epoch>, Condvar),
    pub(super) recovery: Recovery,
    /// Threads inside `append` (for the group commit's gathering).
    pub(super) appenders: AtomicUsize,
    /// Appends queued since the leader last took the pending bytes (changed
    /// under the state lock; read without it while gathering).
    pub(super) queued_appends: AtomicUsize,
    /// How long the last fsync of a group took, in microseconds.
    pub(super) last_sync_micros: AtomicU64,
    /// Warnings found after opening (see [`Log::warnings`]).
    pub(super) warnings: Mutex<Vec<String>>,
    /// Sealed segments not yet indexed (queued rolls included), and appends
    /// waiting for it to fall below [`MAX_UNINDEXED`] (back-pressure).
    pub(super) backlog: Mutex<Backlog>,
    pub(super) backlog_cv: Condvar,
    /// The sealer thread has exited (the log is closing).
    pub(super) sealer_stopped: AtomicBool,
    /// The replicator of `Options::replicate_to` (feature `remote`).
    #[cfg(feature = "remote")]
    pub(super) replication: Mutex<Option<ReplicationThread>>,
    /// The log was closed: nothing more will be published (read without
    /// the state lock by subscriptions and waiters, `Log::ended`).
    pub(super) closed: AtomicBool,
    /// The index checkpoint files of the active segment (spec 17.5).
    pub(super) checkpoints: Mutex<Checkpoints>,
    /// The active segment's durable end when the last index checkpoint was
    /// asked for (the commit leader's; reset by a roll).
    pub(super) checkpoint_mark: AtomicU64,
    /// Every stream's rules (spec 3.7), loaded on first need.
    pub(super) rules: RulesMap,
    /// The subject keys (spec 22), shared with every view.
    pub(super) keys: Arc<crate::audit::keyring::KeyRing>,
    /// Held by the sealer while it merges a segment into the stream table
    /// and by retention while it removes segments (spec 3.9).
    pub(super) retention_lock: Mutex<()>,
    /// Held by one compaction at a time (spec 3.10).
    pub(super) compact_lock: Mutex<()>,
    /// The thread that leads group commits for async appenders.
    #[cfg(feature = "tokio")]
    pub(super) committer: Committer,
}

/// The rules of every stream that has metadata (spec 3.7; `None`: not
/// loaded yet): see `metadata`.
pub(super) type RulesMap = std::sync::RwLock<Option<Rules>>;
/// Stream name → its rules.
pub(super) type Rules = std::collections::HashMap<Box<str>, crate::format::meta::StreamRules>;

/// The index checkpoint files of the active segment on disk.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    /// The segment they belong to.
    pub(super) base: u64,
    /// Oldest first, covering consecutive ranges from offset 128.
    pub(super) files: Vec<CheckpointFile>,
}

/// The way to the sealer thread.
#[derive(Default)]
pub(super) enum SealerLine {
    /// Not started yet: the first job starts it.
    #[default]
    Idle,
    /// Running.
    Open(mpsc::Sender<SealerJob>),
    /// Stopped (the log is closing): no thread starts again.
    Closed,
}

/// Work for the sealer thread.
pub(super) enum SealerJob {
    /// Index a sealed segment.
    Seal(SealJob),
    /// Write an index checkpoint of the active segment based at `base`, up
    /// to `durable` (spec 17.5).
    Checkpoint { base: u64, durable: u64 },
}

/// Appender-side state: what has been assigned (written or pending).
pub(super) struct State {
    /// Index of the active segment, including batches not yet written (of
    /// the batches after its index checkpoints, if `layered`).
    pub(super) index: Arc<RwLock<MemIndex>>,
    /// The active segment's index checkpoints and `index`, if the writer
    /// opened the segment from checkpoints (spec 17.5).
    pub(super) layered: Option<Arc<Layered>>,
    /// Sealed segments whose streams are not yet in the stream table, oldest
    /// first (between a roll being queued and the leader writing the table).
    pub(super) unpersisted: Vec<Unpersisted>,
    /// The stream table covering the other sealed segments.
    pub(super) table: Option<Arc<StreamTable>>,
    /// Recently appended events with application-supplied ids, for
    /// idempotent retries (bounded by `Options::idempotency_window`).
    pub(super) recent_ids: HashMap<[u8; 16], RecentId>,
    pub(super) recent_order: VecDeque<[u8; 16]>,
    pub(super) next_position: u64,
    pub(super) last_timestamp: u64,
    pub(super) seg_end: u64,
    pub(super) seg_has_batches: bool,
    /// Durable end of the active segment as last reported by a commit (or 128
    /// for a segment not yet synced), carried into each frame header.
    pub(super) seg_durable: u64,
    pub(super) seg_base: u64,
    /// Complete chunks and rolls waiting for the leader, in order.
    pub(super) pending: Vec<Op>,
    /// The open write buffer (after everything in `pending`).
    pub(super) cur: Vec<u8>,
    pub(super) spare: Vec<u8>,
    /// Bytes assigned so far (a log sequence number of bytes, across segments).
    pub(super) lsn: u64,
    pub(super) closed: bool,
    pub(super) ids: IdGen,
    /// Events since the last signed checkpoint (with a signing key).
    pub(super) unsigned_events: u64,
    /// The position of the first event appended by this open.
    pub(super) open_position: u64,
    /// Whether the window of recent ids holds the log's tail from before
    /// this open (see `Inner::load_window`).
    pub(super) window_loaded: bool,
    /// The layout of the active segment (format version 3: the timestamps
    /// of its batches are stored from its `prev_timestamp`).
    pub(super) seg_layout: Layout,
    /// File offset of the active segment's last batch (version 3: whether
    /// the next one stores a chain slot, spec 3.6).
    pub(super) seg_last_batch: Option<u64>,
}

/// A sealed segment not yet in the stream table: its base, its in-memory
/// index, and its index checkpoints with it, if it had any.
pub(super) type Unpersisted = (u64, Arc<RwLock<MemIndex>>, Option<Arc<Layered>>);

/// What views see.
pub(super) struct Published {
    pub(super) sealed: Vec<ViewSegment>,
    pub(super) table: Option<Arc<StreamTable>>,
    pub(super) active_index: Arc<IndexCell>,
    pub(super) active_base: u64,
    pub(super) active_path: Arc<PathBuf>,
    pub(super) active_file: File,
    pub(super) visible_end: u64,
    pub(super) next_position: u64,
    pub(super) map: Option<Arc<Mapping>>,
    /// The layout of the active segment's frames.
    pub(super) active_layout: Layout,
}

/// The published epoch and how many threads wait for it to change (a
/// notification costs a system call, so it is sent only to waiters).
#[derive(Default)]
pub(super) struct Epoch {
    pub(super) value: u64,
    pub(super) waiters: usize,
    /// Async subscriptions waiting for the next publish (feature `tokio`).
    pub(super) wakers: Vec<std::task::Waker>,
}

/// Generated event ids: UUID v7 (RFC 9562). A fresh v7 (a random draw, one
/// system call) when the millisecond changes; otherwise the previous ids'
/// 62 random low bits counted on (RFC 9562 section 6.2, method 2), so ids stay
/// unique and ordered, within a batch and across batches.
#[derive(Default)]
pub(super) struct IdGen {
    pub(super) ms: u128,
    pub(super) next: u128,
}

pub(super) enum Op {
    Write(Vec<u8>),
    Roll {
        base: u64,
        prev_timestamp: u64,
        sealed: Arc<RwLock<MemIndex>>,
        /// The sealed segment's index checkpoints and `sealed`, if any.
        layered: Option<Arc<Layered>>,
        next: Arc<RwLock<MemIndex>>,
    },
}

pub(super) struct Commit {
    pub(super) busy: bool,
    /// Appenders waiting while another leads, parked: the leader unparks them
    /// all when it is done. Those whose bytes it covered return at once,
    /// checking [`Inner::reached`] without taking this lock; the others
    /// compete to lead next.
    pub(super) parked: Vec<std::thread::Thread>,
    /// Async appenders waiting the same way (feature `tokio`): woken with
    /// the parked threads.
    pub(super) wakers: Vec<std::task::Waker>,
    pub(super) written: u64,
    pub(super) durable: u64,
    pub(super) poison: Option<String>,
}

/// Owned by the commit leader (the `busy` flag makes it exclusive).
pub(super) struct IoState {
    pub(super) file: Box<dyn IoFile>,
    pub(super) path: PathBuf,
    pub(super) base: u64,
    pub(super) offset: u64,
    pub(super) durable: u64,
    pub(super) head: HeadWriter,
    /// Disk space of the active segment is reserved up to here (see
    /// [`IoFile::reserve`]); `reserved_past_end` says whether any was.
    pub(super) reserved: u64,
    pub(super) reserved_past_end: bool,
    /// The audit chain's hash after the last batch written (spec 21), and
    /// the position after that batch.
    pub(super) chain: ChainHash,
    pub(super) chain_position: u64,
    /// Hashes large chunks while they are written (see `chaining`), once
    /// started (by the first such chunk).
    pub(super) hasher: Option<HasherThread>,
    /// Whether the hasher thread was started (or could not be).
    pub(super) hasher_tried: bool,
}

/// What async waiters asked the committer thread for.
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Write everything up to here (a log-sequence target of `commit_until`).
    pub(super) written: u64,
    /// Make everything up to here durable.
    pub(super) durable: u64,
    pub(super) stop: bool,
}

/// The committer thread (feature `tokio`; see `asynchronous`): it leads
/// group commits for async waiters, so that no write or fsync runs on a
/// task's thread.
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(super) struct Committer {
    pub(super) requests: Mutex<Requests>,
    pub(super) wake: Condvar,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The sealer's backlog (see `Inner::backlog`).
#[derive(Debug, Default)]
pub(super) struct Backlog {
    pub(super) unindexed: usize,
    pub(super) waiting: usize,
    /// Async appenders waiting for the backlog (feature `tokio`).
    pub(super) wakers: Vec<std::task::Waker>,
}

/// Most sealed segments left to index before an append that would roll
/// another segment waits for the sealer: bounds the work `close` (and a
/// crash's recovery) finds, whatever the rate of appends.
pub(super) const MAX_UNINDEXED: usize = 4;

/// A sealed segment to index (spec 17) and fold into the stream table.
pub(super) struct SealJob {
    pub(super) seg: ViewSegment,
    pub(super) mem: Arc<RwLock<MemIndex>>,
    /// The segment's index checkpoints and `mem`, if any.
    pub(super) layered: Option<Arc<Layered>>,
    pub(super) next_segment: u64,
}

/// Where a recently appended event with an application-supplied id went.
pub(super) struct RecentId {
    pub(super) stream: Arc<str>,
    pub(super) version: u64,
    pub(super) position: u64,
}

impl State {
    /// Queue `bytes` (a seal or a checkpoint frame) in the open buffer.
    pub(super) fn push_bytes(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
        self.lsn += bytes.len() as u64;
        self.seg_end += bytes.len() as u64;
    }
}

impl Inner {
    /// A view of everything visible now.
    pub(super) fn view(&self) -> Result<LogView> {
        let mut p = lock(&self.published);
        let active = Self::active_segment(&mut p)?;
        crate::read::view::trim_mappings(&mut p.sealed, crate::read::view::max_mapped());
        let mut segs = Vec::with_capacity(p.sealed.len() + 1);
        segs.extend(p.sealed.iter().cloned());
        segs.push(active);
        Ok(LogView::new(segs, p.next_position, p.table.clone())
            .with_clock(self.opts.clock.clone())
            .with_keys(self.keys.clone()))
    }

    /// The active segment as a view shows it now (without the sealed ones:
    /// for a lookup in it alone).
    pub(super) fn active_view_segment(&self) -> Result<ViewSegment> {
        Self::active_segment(&mut lock(&self.published))
    }

    /// The active segment of `p`, mapped up to its visible end (the mapping
    /// is reused while that end does not move).
    fn active_segment(p: &mut Published) -> Result<ViewSegment> {
        let map = match &p.map {
            Some(m) if m.bytes().len() as u64 == p.visible_end => m.clone(),
            _ => {
                // SAFETY: `[0, visible_end)` holds complete batches this writer
                // wrote and never rewrites; it truncates only past them
                // (mmap module, case 2).
                let m = Arc::new(unsafe { Mapping::map(&p.active_file, p.visible_end, &p.active_path) }?);
                p.map = Some(m.clone());
                m
            }
        };
        Ok(ViewSegment {
            base: p.active_base,
            path: p.active_path.clone(),
            map,
            index: p.active_index.clone(),
            layout: p.active_layout,
        })
    }

    /// Record a warning for [`Log::warnings`] (at most [`MAX_WARNINGS`]).
    pub(super) fn warn(&self, w: String) {
        crate::trace::event!(WARN, dir = %self.dir.display(), warning = %w, "annal warning");
        let mut ws = lock(&self.warnings);
        if ws.len() < MAX_WARNINGS {
            ws.push(w);
        }
    }

    pub(super) fn bump_published_epoch(&self) {
        let mut e = lock(&self.published_epoch.0);
        e.value += 1;
        if e.waiters > 0 {
            self.published_epoch.1.notify_all();
        }
        let wakers = std::mem::take(&mut e.wakers);
        drop(e);
        wakers.into_iter().for_each(std::task::Waker::wake);
    }
}

/// Most warnings a writer keeps (see [`Log::warnings`]).
pub(super) const MAX_WARNINGS: usize = 100;

pub(super) fn read_index(m: &RwLock<MemIndex>) -> std::sync::RwLockReadGuard<'_, MemIndex> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write_index(m: &RwLock<MemIndex>) -> std::sync::RwLockWriteGuard<'_, MemIndex> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// The running replicator: its thread, the way to stop it, its status.
#[cfg(feature = "remote")]
pub(super) struct ReplicationThread {
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) status: Arc<Mutex<super::results::ReplicationStatus>>,
    /// [`crate::remote::ShipReport::confirmed_below`] of the last round:
    /// local retention removes no segment based at or above it.
    pub(super) confirmed_below: Arc<std::sync::atomic::AtomicU64>,
    /// The store's sealed segments below the local front, read through a
    /// bounded cache (a log with a retention rule; spec 23.7).
    pub(super) cold: Option<Arc<Mutex<crate::read::cold::ColdFront>>>,
    pub(super) tier: Option<Arc<crate::remote::RemoteTier>>,
}
