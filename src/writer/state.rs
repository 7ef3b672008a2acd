//! The shared state behind a [`Log`](super::Log) (`Inner`), how it is built
//! from what recovery found, views, warnings, and clean close.
//!
//! Invariants: `state` is the appenders' lock (versions, positions, the
//! pending bytes); `published` is what views see and only ever moves
//! forward; the I/O state (`commit::IoState`) is touched only by the commit
//! leader. Lock order: `state` before `published`; `io` before `published`
//! and `state` (the leader); no lock is held across a write or an fsync
//! except `io` by the leader.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};

use crate::chaining::HasherThread;
use crate::error::{Error, Result};
use crate::format::{LogFormat, SEGMENT_HEADER_LEN};
use crate::head::{Head, HeadWriter};
use crate::index::{Index, IndexCell, MemIndex};
use crate::mmap::Mapping;
use crate::segment::segment_file_name;
use crate::streamtable::StreamTable;
use crate::view::{LogView, ViewSegment};

use super::append::{IdGen, Op};
use super::commit::{Commit, IoState};
use super::idempotency::RecentId;
use super::lock::WriterLock;
use super::recovery::Recovered;
use super::seal::{Backlog, SealJob};
use super::{Options, Recovery, lock};

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) opts: Options,
    pub(super) format: LogFormat,
    pub(super) _lock: WriterLock,
    pub(super) state: Mutex<State>,
    pub(super) commit: Mutex<Commit>,
    /// `Commit::written` and `Commit::durable`, readable without the lock.
    pub(super) written_end: AtomicU64,
    pub(super) durable_end: AtomicU64,
    pub(super) poisoned: AtomicBool,
    /// A lookup found the stream table damaged; the leader rebuilds it.
    pub(super) table_damaged: AtomicBool,
    /// Jobs for the sealer thread, which indexes sealed segments.
    pub(super) sealer_tx: Mutex<Option<mpsc::Sender<SealJob>>>,
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
}

/// Appender-side state: what has been assigned (written or pending).
pub(super) struct State {
    /// Index of the active segment, including batches not yet written.
    pub(super) index: Arc<RwLock<MemIndex>>,
    /// Sealed segments whose streams are not yet in the stream table, oldest
    /// first (between a roll being queued and the leader writing the table).
    pub(super) unpersisted: Vec<(u64, Arc<RwLock<MemIndex>>)>,
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
}

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
}

/// The published epoch and how many threads wait for it to change (a
/// notification costs a system call, so it is sent only to waiters).
#[derive(Default)]
pub(super) struct Epoch {
    pub(super) value: u64,
    pub(super) waiters: usize,
}

impl State {
    /// The appenders' state of a writer opened at `next_position`, the active
    /// segment based at `seg_base` ending at `seg_end`.
    fn new(
        index: Arc<RwLock<MemIndex>>,
        table: Option<Arc<StreamTable>>,
        next_position: u64,
        last_timestamp: u64,
        seg_base: u64,
        seg_end: u64,
    ) -> State {
        State {
            index,
            unpersisted: Vec::new(),
            table,
            recent_ids: HashMap::new(),
            recent_order: VecDeque::new(),
            next_position,
            last_timestamp,
            seg_end,
            seg_has_batches: seg_end > SEGMENT_HEADER_LEN as u64,
            seg_durable: seg_end,
            seg_base,
            pending: Vec::new(),
            cur: Vec::new(),
            spare: Vec::new(),
            lsn: 0,
            closed: false,
            ids: IdGen::default(),
            unsigned_events: u64::from(seg_end > SEGMENT_HEADER_LEN as u64),
            open_position: next_position,
            window_loaded: next_position == 0,
        }
    }

    /// Queue `bytes` (a seal or a checkpoint frame) in the open buffer.
    pub(super) fn push_bytes(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
        self.lsn += bytes.len() as u64;
        self.seg_end += bytes.len() as u64;
    }
}

impl Inner {
    /// The writer's state over what recovery found: opens the active segment
    /// for writing and reading and creates the head file (spec 7).
    pub(super) fn new(dir: PathBuf, opts: Options, recovered: Recovered) -> Result<Inner> {
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
        } = recovered;
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
        let active_file = crate::io::open_read(&active_path).map_err(|e| Error::io("open", &active_path, e))?;
        let index_damage = Arc::new(AtomicU64::new(0));
        for seg in &sealed {
            seg.index.notify(&index_damage);
        }
        let state = State::new(
            active_index.clone(),
            table.clone(),
            next_position,
            last_timestamp,
            active_base,
            active_end,
        );
        let io_state = IoState {
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
        };
        let published = Published {
            sealed,
            table,
            active_index: Arc::new(IndexCell::new(active_base, None, Some(Index::Mem(active_index)))),
            active_base,
            active_path: Arc::new(active_path),
            active_file,
            visible_end: active_end,
            next_position,
            map: None,
        };
        Ok(Inner {
            format,
            _lock: lock,
            state: Mutex::new(state),
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
            io: Mutex::new(io_state),
            published: Mutex::new(published),
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
        })
    }

    /// A view of everything visible now.
    pub(super) fn view(&self) -> Result<LogView> {
        let mut p = lock(&self.published);
        let map = match &p.map {
            Some(m) if m.bytes().len() as u64 == p.visible_end => m.clone(),
            _ => {
                let m = Arc::new(Mapping::map(&p.active_file, p.visible_end, &p.active_path)?);
                p.map = Some(m.clone());
                m
            }
        };
        crate::view::trim_mappings(&mut p.sealed, crate::view::max_mapped());
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

    /// Record a warning for [`Log::warnings`] (at most [`MAX_WARNINGS`]).
    pub(super) fn warn(&self, w: String) {
        let mut ws = lock(&self.warnings);
        if ws.len() < MAX_WARNINGS {
            ws.push(w);
        }
    }

    pub(super) fn close(&self) -> Result<()> {
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

    pub(super) fn bump_published_epoch(&self) {
        let mut e = lock(&self.published_epoch.0);
        e.value += 1;
        if e.waiters > 0 {
            self.published_epoch.1.notify_all();
        }
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
