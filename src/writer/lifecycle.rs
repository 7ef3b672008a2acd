//! Building the writer from what recovery found, and closing it cleanly.
//!
//! Invariants: the head file (spec 5.2) is created before the writer takes any
//! append; `close` makes everything durable and writes a head whose durable
//! boundary is the log's end, so the next open finds nothing to recover.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::audit::keyring::KeyRing;
use crate::error::{Error, Result};
use crate::format::Layout;
use crate::format::SEGMENT_HEADER_LEN;
use crate::format::names::segment_file_name;
use crate::index::streamtable::StreamTable;
use crate::index::{Index, IndexCell, Layered, MemIndex};
use crate::storage::head::{Head, HeadWriter};

use super::lock;
use super::options::Options;
use super::recovery::Recovered;
use super::state::{Backlog, Checkpoints, Commit, Epoch, IdGen, Inner, IoState, Published, SealerLine, State};

impl Inner {
    /// The writer's state over what recovery found: opens the active segment
    /// for writing and reading and creates the head file (spec 5.2).
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
            active_layered,
            active_base,
            active_end,
            clean_head,
            active_layout,
            last_batch,
            report,
        } = recovered;
        let io = &*opts.io;
        let active_path = dir.join(segment_file_name(active_base));
        let file = io.open(&active_path).map_err(|e| Error::io("open", &active_path, e))?;
        let head = match clean_head {
            Some(h) => HeadWriter::reuse(io, &dir, h, format.version)?,
            None => HeadWriter::create(
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
            )?,
        };
        let active_file =
            crate::storage::io::open_read(&active_path).map_err(|e| Error::io("open", &active_path, e))?;
        let keys = KeyRing::writer(opts.io.clone(), &dir, format.log_id, opts.master_key.clone())?;
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(seed) = opts.fixed_random {
            keys.use_fixed_random(seed);
        }
        let index_damage = Arc::new(AtomicU64::new(0));
        for seg in &sealed {
            seg.index.notify(&index_damage);
        }
        let (layered, files) = match active_layered {
            Some((indexes, files, end)) => {
                let paths = files.iter().map(|c| c.path.clone()).collect();
                let l = Arc::new(Layered::new(indexes, paths, end, active_index.clone()));
                (Some(l), files)
            }
            None => (None, Vec::new()),
        };
        let checkpoints = Checkpoints {
            base: active_base,
            files,
        };
        let mut state = State::new(
            active_index.clone(),
            table.clone(),
            next_position,
            last_timestamp,
            active_base,
            active_end,
        );
        state.layered = layered.clone();
        state.seg_layout = active_layout;
        state.seg_last_batch = last_batch;
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
            hasher: None,
            hasher_tried: false,
        };
        let published = Published {
            sealed,
            table,
            active_index: Arc::new(IndexCell::new(
                active_base,
                None,
                Some(match layered {
                    Some(l) => Index::Layered(l),
                    None => Index::Mem(active_index),
                }),
            )),
            active_base,
            active_path: Arc::new(active_path),
            active_file,
            visible_end: active_end,
            next_position,
            map: None,
            active_layout,
        };
        Ok(Inner {
            format,
            writer_lock: Mutex::new(Some(lock)),
            state: Mutex::new(state),
            commit: Mutex::new(Commit {
                busy: false,
                parked: Vec::new(),
                wakers: Vec::new(),
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
            sealer_tx: Mutex::new(SealerLine::Idle),
            this: std::sync::OnceLock::new(),
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
            closed: AtomicBool::new(false),
            #[cfg(feature = "remote")]
            replication: Mutex::new(None),
            checkpoints: Mutex::new(checkpoints),
            checkpoint_mark: AtomicU64::new(active_end),
            rules: Default::default(),
            keys: Arc::new(keys),
            retention_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            #[cfg(feature = "tokio")]
            committer: Default::default(),
            dir,
            opts,
        })
    }

    /// Close the log (see `close_log`), then, whatever the outcome, mark it
    /// closed and let go of the writer lock: no handle appends after this,
    /// and another writer may open the log.
    pub(super) fn close(&self) -> Result<()> {
        let closed = self.close_log();
        lock(&self.state).closed = true;
        drop(lock(&self.writer_lock).take());
        // Subscriptions and waiters see that nothing more will come.
        self.closed.store(true, Ordering::Release);
        self.bump_published_epoch();
        // The replicator's last round reads the closed log's final files.
        #[cfg(feature = "remote")]
        self.stop_replicator();
        closed
    }

    /// Make everything durable and mark the log cleanly closed.
    fn close_log(&self) -> Result<()> {
        {
            let st = lock(&self.state);
            if st.closed {
                return Ok(());
            }
        }
        // Async waiters are woken by the commit below (or the poisoning).
        #[cfg(feature = "tokio")]
        self.stop_committer();
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
        // A log opened and closed without a change keeps its head file as it
        // is (nothing to write, nothing to sync).
        if !io.head.already_says(&head) {
            io.head.write(head)?;
            io.head.sync()?;
        }
        let durable = io.durable;
        drop(io);
        // The next open reads none of the batches the checkpoints cover.
        self.write_index_checkpoint(durable)
    }
}

impl State {
    /// The appenders' state of a writer opened at `next_position`, the active
    /// segment based at `seg_base` ending at `seg_end`.
    pub(super) fn new(
        index: Arc<RwLock<MemIndex>>,
        table: Option<Arc<StreamTable>>,
        next_position: u64,
        last_timestamp: u64,
        seg_base: u64,
        seg_end: u64,
    ) -> State {
        State {
            index,
            layered: None,
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
            seg_layout: Layout::V2,
            seg_last_batch: None,
        }
    }
}
