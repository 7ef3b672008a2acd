//! Segment rolls and the sealer thread. A roll (queued by an append, done
//! by the commit leader) makes the sealed segment durable and creates the
//! next; the sealer thread then writes the sealed segment's index file and
//! the new stream table (spec 17, 18), so appends never wait for indexing.
//!
//! Invariants: segments are indexed in the order they were sealed; at most
//! [`MAX_UNINDEXED`] sealed segments wait for the sealer before an append
//! that would roll another waits (back-pressure); a failure to index poisons
//! the writer but never un-acknowledges an append.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, mpsc};

use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::Layout;
use crate::format::names::segment_file_name;
use crate::format::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::index::streamtable::{self, STREAM_TABLE_FILE, StreamTable};
use crate::index::{self, IdxFile, Index, IndexCell, Layered, MemIndex};
use crate::read::view::ViewSegment;
use crate::storage::mmap::Mapping;

use super::derived::{index_file_name, rebuild_table, resolve_prev, write_derived};
use super::lock;
use super::state::{Inner, IoState, MAX_UNINDEXED, SealJob, SealerJob, SealerLine, read_index};
use crate::trace;

impl Inner {
    /// Let a writer just built start its sealer thread when it first has a
    /// job for it (a log opened and closed without one never starts it).
    pub(super) fn start_sealer(inner: &Arc<Inner>) {
        let _ = inner.this.set(Arc::downgrade(inner));
    }

    /// Hand `job` to the sealer thread, starting it if this is its first.
    /// `Err(job)` if no thread takes it (it could not be started, or it
    /// stopped): the caller does it itself or drops it. `None` once the
    /// sealer was stopped (the log is closing).
    fn to_sealer(&self, job: SealerJob) -> Option<std::result::Result<(), SealerJob>> {
        let mut line = lock(&self.sealer_tx);
        if let SealerLine::Idle = *line {
            let Some(worker) = self.this.get().and_then(std::sync::Weak::upgrade) else {
                return Some(Err(job));
            };
            let (tx, rx) = mpsc::channel::<SealerJob>();
            let spawned = std::thread::Builder::new()
                .name("annal-sealer".into())
                .spawn(move || worker.run_sealer(rx));
            match spawned {
                Ok(handle) => {
                    *lock(&self.sealer) = Some(handle);
                    *line = SealerLine::Open(tx);
                }
                Err(e) => {
                    self.warn(format!("the sealer thread could not be started ({e}): indexing inline"));
                    return Some(Err(job));
                }
            }
        }
        match &*line {
            SealerLine::Open(tx) => Some(tx.send(job).map_err(|e| e.0)),
            SealerLine::Idle => Some(Err(job)),
            SealerLine::Closed => None,
        }
    }

    /// Whether the sealer thread is running (it is the caller, if asked
    /// from it).
    pub(super) fn sealer_running(&self) -> bool {
        matches!(*lock(&self.sealer_tx), SealerLine::Open(_))
    }

    /// Wait until the sealer's backlog is below [`MAX_UNINDEXED`], or the
    /// writer is poisoned or closed.
    pub(super) fn wait_for_sealer(&self) -> Result<()> {
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
        let wakers = std::mem::take(&mut b.wakers);
        drop(b);
        self.backlog_cv.notify_all();
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// Wake appenders waiting for the backlog to check the writer's state.
    pub(super) fn wake_backlog(&self) {
        let wakers = std::mem::take(&mut lock(&self.backlog).wakers);
        self.backlog_cv.notify_all();
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// Seal is already written; make the segment durable, then create the next.
    pub(super) fn roll(
        &self,
        io: &mut IoState,
        base: u64,
        prev_timestamp: u64,
        (sealed, layered): (Arc<RwLock<MemIndex>>, Option<Arc<Layered>>),
        next: Arc<RwLock<MemIndex>>,
    ) -> Result<()> {
        let fs = &*self.opts.io;
        let _span = trace::span!(INFO, "annal.roll", sealed = %io.path.display(), bytes = io.offset, base);
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
            // SAFETY: the segment was just sealed and fsynced: annal never
            // writes it again (mmap module, case 1).
            let map = unsafe { Mapping::map(&p.active_file, sealed_len, &p.active_path) }?;
            let idx_path = self.dir.join(index_file_name(p.active_base));
            let seg = ViewSegment {
                base: p.active_base,
                path: p.active_path.clone(),
                map: Arc::new(map),
                index: Arc::new(IndexCell::new(
                    p.active_base,
                    Some(idx_path),
                    Some(match &layered {
                        Some(l) => Index::Layered(l.clone()),
                        None => Index::Mem(sealed.clone()),
                    }),
                )),
                layout: p.active_layout,
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
            p.active_layout = Layout::for_log(&self.format, prev_timestamp);
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
            layered,
            next_segment: base,
        };
        self.checkpoint_mark.store(SEGMENT_HEADER_LEN as u64, Ordering::Release);
        match self.to_sealer(SealerJob::Seal(job)) {
            Some(Ok(())) => Ok(()),
            // The sealed segment and the next one are durable: a failure to
            // index poisons the writer for the next call, like the sealer's.
            Some(Err(SealerJob::Seal(job))) => {
                if let Err(e) = self.index_sealed(&job) {
                    self.poison(&e);
                }
                self.sealed_done();
                Ok(())
            }
            Some(Err(_)) | None => Err(Error::Closed),
        }
    }

    /// After a group's fsync (the commit leader): ask the sealer thread for
    /// an index checkpoint of the active segment once `durable` is
    /// `Options::index_checkpoint_bytes` past the last one asked for, so
    /// that a crash's recovery walks at most about that many bytes.
    pub(super) fn maybe_checkpoint(&self, base: u64, durable: u64) {
        let mark = self.checkpoint_mark.load(Ordering::Acquire);
        if durable < mark.saturating_add(self.opts.index_checkpoint_bytes) {
            return;
        }
        self.checkpoint_mark.store(durable, Ordering::Release);
        // A hint: if no thread takes it, the next one (or close) writes it.
        let _ = self.to_sealer(SealerJob::Checkpoint { base, durable });
    }

    /// The sealer thread: index each sealed segment in order. A failure
    /// poisons the writer like any failed write.
    fn run_sealer(&self, rx: mpsc::Receiver<SealerJob>) {
        for job in rx {
            match job {
                SealerJob::Seal(job) => {
                    if !self.poisoned.load(Ordering::Acquire)
                        && let Err(e) = self.index_sealed(&job)
                    {
                        self.poison(&e);
                    }
                    self.sealed_done();
                    // Log retention (spec 3.9), once the segment is indexed.
                    self.retain_after_seal();
                }
                SealerJob::Checkpoint { base, durable } => {
                    // A hint for the next open: a failure to write it loses
                    // nothing and is reported, not fatal.
                    if !self.poisoned.load(Ordering::Acquire)
                        && let Err(e) = self.write_index_checkpoint_of(base, durable)
                    {
                        self.warn(format!("index checkpoint not written: {e}"));
                    }
                }
            }
        }
    }

    /// Stop the sealer thread after it has indexed every sealed segment.
    pub(super) fn stop_sealer(&self) {
        drop(std::mem::replace(&mut *lock(&self.sealer_tx), SealerLine::Closed));
        let handle = lock(&self.sealer).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.sealer_stopped.store(true, Ordering::Release);
        self.wake_backlog();
    }

    /// Write the index of a just-sealed segment and the new stream table
    /// (spec 17, 18), then let readers use them.
    fn index_sealed(&self, job: &SealJob) -> Result<()> {
        let (seg, next_segment) = (&job.seg, job.next_segment);
        let bytes = seg.bytes()?;
        let _span = trace::span!(INFO, "annal.seal", segment = %seg.path.display(), base = seg.base,
            bytes = bytes.len(), next_segment);
        // With index checkpoints, the whole index is theirs and the tail's.
        let merged = match &job.layered {
            Some(l) => Some(RwLock::new(l.merged().map_err(|d| d.at(&*seg.path))?)),
            None => None,
        };
        let mem = merged.as_ref().unwrap_or(&job.mem);
        let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
        // Not while retention removes segments (spec 3.9).
        let _one = lock(&self.retention_lock);
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
            bytes,
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
        self.remove_checkpoints_of(seg.base)?;
        let table_bytes =
            match streamtable::merge(old_table.as_deref(), &rows, seg.base, next_segment, self.opts.hash_mask) {
                Ok(b) => b,
                // The old table is damaged: rebuild it from every index.
                Err(_) => {
                    trace::event!(WARN, file = %self.dir.join(STREAM_TABLE_FILE).display(), why = "damaged",
                        "annal rebuilt the stream table from the segments");
                    let sealed = lock(&self.published).sealed.clone();
                    rebuild_table(&sealed, next_segment, self.opts.hash_mask)?
                }
            };
        self.install_table(&table_bytes, Some(seg.base))
    }

    /// Rewrite the index files that readers found damaged, from the indexes
    /// they rebuilt in memory (spec 17.4).
    pub(super) fn rewrite_damaged_indexes(&self) -> Result<()> {
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
                bytes,
            );
            let idx_path = self.dir.join(index_file_name(seg.base));
            write_derived(&*self.opts.io, &self.dir, &idx_path, &idx_bytes)?;
            trace::event!(WARN, file = %idx_path.display(), why = "found damaged by a read",
                "annal rewrote an index file from its segment");
            seg.index.mark_rewritten();
        }
        Ok(())
    }

    /// Take the stream table from memory and remove its file durably (log
    /// retention and compaction, which rebuild it after; the retention lock
    /// held); returns the segment it covered up to. A failure poisons the
    /// writer: without its table it may not decide a version.
    pub(super) fn drop_table(&self) -> Result<Option<u64>> {
        let covered = {
            let mut p = lock(&self.published);
            let c = p.table.as_ref().map(|t| t.next_segment());
            p.table = None;
            c
        };
        let covered = {
            let mut st = lock(&self.state);
            let c = st.table.as_ref().map(|t| t.next_segment()).or(covered);
            st.table = None;
            c
        };
        let path = self.dir.join(crate::index::streamtable::STREAM_TABLE_FILE);
        if let Err(e) = super::retention::remove_durably(&*self.opts.io, &self.dir, &path) {
            self.poison(&e);
            return Err(e);
        }
        Ok(covered)
    }

    /// Write `bytes` as the stream table and let readers and appenders use it;
    /// `covered` is a segment whose in-memory streams it now covers.
    pub(super) fn install_table(&self, bytes: &[u8], covered: Option<u64>) -> Result<()> {
        let path = self.dir.join(STREAM_TABLE_FILE);
        write_derived(&*self.opts.io, &self.dir, &path, bytes)?;
        let table = StreamTable::open(&path).map_err(|d| d.at(&path))?.map(Arc::new);
        lock(&self.published).table = table.clone();
        let mut st = lock(&self.state);
        st.table = table;
        if let Some(base) = covered {
            st.unpersisted.retain(|(b, _, _)| *b != base);
        }
        self.table_damaged.store(false, Ordering::Release);
        Ok(())
    }
}
