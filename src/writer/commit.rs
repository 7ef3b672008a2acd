//! The group commit: appenders wait in `commit_until`; the first that finds
//! no commit in progress leads, takes everything pending, writes it (hashing
//! the audit chain as it goes), rolls segments, fsyncs once if asked, and
//! publishes the new visible end and the head slot.
//!
//! Invariants: only the leader (the `busy` flag) touches the I/O state; bytes
//! reported written (and durable) never go back; a failed write or fsync
//! poisons the writer, and every later call fails with [`Error::Poisoned`]
//! until the log is reopened; a failure after a group's bytes are written
//! poisons the writer without failing that group's appends.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::audit::chain::Chainer;
use crate::audit::chaining::{ChainState, HasherThread, wants_hasher, write_chained};
use crate::error::{Error, Result};
use crate::format::Layout;
use crate::storage::head::Head;

use super::derived::rebuild_table;
use super::lock;
use super::options::Durability;
use super::state::{Commit, Inner, IoState, Op};
use crate::trace;

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
    pub(super) fn reserve_for(&mut self, len: u64, segment_size: u64) {
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
    pub(super) fn release_reservation(&mut self) -> Result<()> {
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

impl Inner {
    pub(super) fn poison_error(&self) -> Error {
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
    pub(super) fn commit_until(&self, target: u64, durable: bool) -> Result<()> {
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
                    self.poison_locked(c, &e);
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
        let _span = trace::span!(DEBUG, "annal.group_commit", dir = %self.dir.display(), events = trace::Empty,
            bytes = trace::Empty, synced = trace::Empty, fsync_us = trace::Empty);
        let _first = trace::value!(if _span.is_disabled() {
            0
        } else {
            lock(&self.published).next_position
        });
        let (ops, lsn, next_position) = self.take_pending();
        trace::record!(
            _span,
            events = next_position.saturating_sub(_first),
            bytes = ops.iter().map(Op::bytes).sum::<u64>()
        );
        let mut io = lock(&self.io);
        let mut spare = None;
        for op in ops {
            match op {
                Op::Write(bytes) => spare = Some(self.write_chunk(&mut io, bytes)?),
                Op::Roll {
                    base,
                    prev_timestamp,
                    sealed,
                    layered,
                    next,
                } => self.roll(&mut io, base, prev_timestamp, (sealed, layered), next)?,
            }
        }
        if sync && io.durable < io.offset {
            self.sync_group(&mut io)?;
            trace::record!(_span, fsync_us = self.last_sync_micros.load(Ordering::Relaxed));
        }
        trace::record!(_span, synced = sync);
        let (visible, visible_position) = self.publish(&io, next_position);
        // The group's bytes are written (and durable, if asked): they are
        // acknowledged whatever happens next. A failure of the work below
        // (the head slot, derived files) poisons the writer for the next call.
        if let Err(e) = self.upkeep(&mut io, visible, visible_position) {
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

    /// Take everything pending (the open buffer last, swapped for the spare
    /// one): the operations, and the LSN and next position after them.
    fn take_pending(&self) -> (Vec<Op>, u64, u64) {
        let mut st = lock(&self.state);
        let mut ops = std::mem::take(&mut st.pending);
        self.queued_appends.store(0, Ordering::Release);
        if !st.cur.is_empty() {
            let spare = std::mem::take(&mut st.spare);
            ops.push(Op::Write(std::mem::replace(&mut st.cur, spare)));
        }
        (ops, st.lsn, st.next_position)
    }

    /// Write one chunk at the end of the active segment, hashing the audit
    /// chain through it (and signing its checkpoints) if the log has one.
    /// Returns the chunk's buffer, emptied, for reuse.
    fn write_chunk(&self, io: &mut IoState, bytes: Vec<u8>) -> Result<Vec<u8>> {
        io.reserve_for(bytes.len() as u64, self.opts.segment_size);
        // The hasher thread starts with the first chunk it would hash (opening
        // a log starts no thread for it).
        // What chaining needs of the layout: the version (no id seed).
        let layout = Layout {
            version: self.format.version,
            ..Layout::V2
        };
        if self.format.chained() && io.hasher.is_none() && !io.hasher_tried && wants_hasher(&bytes, layout.compact()) {
            io.hasher_tried = true;
            io.hasher = HasherThread::start(self.opts.chain_key.clone(), layout);
        }
        let st: &IoState = io;
        let write = |off: usize, b: &[u8]| st.file.write_at(st.offset + off as u64, b);
        let (mut bytes, chained) = if self.format.chained() {
            let mut state = ChainState {
                chainer: Chainer::new(self.opts.chain_key.as_ref()).for_layout(&layout),
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
        Ok(bytes)
    }

    /// The group's one fsync; its duration tunes the next group's gathering.
    fn sync_group(&self, io: &mut IoState) -> Result<()> {
        let start = Instant::now();
        io.file.sync().map_err(|e| Error::io("fsync", &io.path, e))?;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_sync_micros.store(micros, Ordering::Relaxed);
        io.durable = io.offset;
        self.maybe_checkpoint(io.base, io.durable);
        Ok(())
    }

    /// Let views see the group (written, or durable with
    /// [`Durability::Fsync`]) and wake subscriptions. Returns the visible
    /// end and the position there.
    fn publish(&self, io: &IoState, next_position: u64) -> (u64, u64) {
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
        (visible, visible_position)
    }

    /// The work after a group is acknowledged: the head slot, index files
    /// readers found damaged, and a damaged stream table.
    fn upkeep(&self, io: &mut IoState, visible: u64, visible_position: u64) -> Result<()> {
        let head = Head {
            sequence: 0,
            segment_base: io.base,
            durable_end: io.durable,
            visible_end: visible,
            next_position: visible_position,
        };
        io.head.write(head)?;
        let damage = self.index_damage.load(Ordering::Acquire);
        if damage != self.index_damage_handled.load(Ordering::Acquire) {
            self.rewrite_damaged_indexes()?;
            self.index_damage_handled.store(damage, Ordering::Release);
        }
        if self.table_damaged.load(Ordering::Acquire) {
            trace::event!(WARN, file = %self.dir.join(crate::format::names::STREAM_TABLE_FILE).display(),
                why = "found damaged", "annal rebuilds the stream table from the segments");
            let sealed = lock(&self.published).sealed.clone();
            let bytes = rebuild_table(&sealed, io.base, self.opts.hash_mask)?;
            self.install_table(&bytes, None)?;
        }
        Ok(())
    }

    pub(super) fn poison(&self, e: &Error) {
        self.poison_locked(lock(&self.commit), e);
    }

    /// [`Inner::poison`] with the commit lock held (released here); the
    /// first cause is kept.
    fn poison_locked(&self, mut c: std::sync::MutexGuard<'_, Commit>, e: &Error) {
        // The cause first, then the flag (both under the commit lock): a
        // thread that sees the flag must find the cause.
        if c.poison.is_none() {
            trace::event!(ERROR, dir = %self.dir.display(), cause = %e, "annal writer poisoned");
            c.poison = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        unpark_all(&mut c);
        drop(c);
        self.wake_backlog();
        // Subscriptions and waiters for a publish see that none will come.
        self.bump_published_epoch();
    }
}

impl Op {
    /// The bytes this operation writes (a roll's are in the writes before it).
    #[cfg(feature = "tracing")]
    fn bytes(&self) -> u64 {
        match self {
            Op::Write(b) => b.len() as u64,
            Op::Roll { .. } => 0,
        }
    }
}

/// Wake every appender parked in `Inner::commit_until`, and every async
/// appender waiting for a commit.
fn unpark_all(c: &mut Commit) {
    for t in c.parked.drain(..) {
        t.unpark();
    }
    for w in c.wakers.drain(..) {
        w.wake();
    }
}
