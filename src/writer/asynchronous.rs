//! Async appends (feature `tokio`): [`Log::append_async`] and
//! [`Log::sync_async`], which never block the task's thread.
//!
//! An async append does the same atomic step as [`Log::append`] (check the
//! expected version, assign positions, encode into the pending buffer: a
//! short critical section, no I/O), then waits for its group commit as a
//! future: the task's waker is kept in the commit state and woken by the
//! leader that covers its bytes, and the write and fsync run on the log's
//! own *committer* thread (started by the first async call), never on the
//! task's. No thread is parked per waiting task: a thousand tasks waiting
//! for one fsync are a thousand wakers in a list. Back-pressure (an append
//! that would roll a segment while the sealer is behind) is waited for the
//! same way, with a waker in the sealer's backlog.
//!
//! Invariants: a registered waker is woken by every lead that ends (success
//! or failure), by poisoning and by close; a future re-checks the commit
//! state after registering, under the commit lock, so a wake-up between its
//! check and its registration is never lost. The committer thread leads
//! only through `commit_until`, the one group-commit path the synchronous
//! appenders use, so both kinds share groups and fsyncs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::error::{Error, Result};
use crate::format::record::EventData;

use super::Log;
use super::append::Appending;
use super::lock;
use super::options::Durability;
use super::results::{AppendResult, ExpectedVersion};
use super::state::{Inner, MAX_UNINDEXED};

impl Inner {
    /// Ask the committer thread (started on first use) to commit up to
    /// `target`, durably if `durable`.
    fn request_commit(self: &Arc<Inner>, target: u64, durable: bool) -> Result<()> {
        let c = &self.committer;
        {
            let mut r = lock(&c.requests);
            if r.stop {
                return Err(Error::Closed);
            }
            r.written = r.written.max(target);
            if durable {
                r.durable = r.durable.max(target);
            }
        }
        c.wake.notify_one();
        let mut thread = lock(&c.thread);
        if thread.is_none() {
            let worker = Arc::clone(self);
            let handle = std::thread::Builder::new()
                .name("annal-committer".into())
                .spawn(move || worker.run_committer())
                .map_err(|e| Error::io("spawn the committer thread for", self.dir.clone(), e))?;
            *thread = Some(handle);
        }
        Ok(())
    }

    /// The committer thread's loop: lead (or join) a group commit for the
    /// highest target asked for, until stopped.
    fn run_committer(&self) {
        let c = &self.committer;
        let (mut written, mut durable) = (0, 0);
        loop {
            let (want_written, want_durable) = {
                let mut r = lock(&c.requests);
                while !r.stop && r.written <= written && r.durable <= durable {
                    r = c.wake.wait(r).unwrap_or_else(|p| p.into_inner());
                }
                if r.stop {
                    return;
                }
                (r.written, r.durable)
            };
            // A failure poisons the writer and wakes every waiter, which
            // then reports it; the thread only moves on.
            let _ = if want_durable > durable {
                self.commit_until(want_durable.max(want_written), true)
            } else {
                self.commit_until(want_written, false)
            };
            written = want_written.max(written);
            durable = want_durable.max(durable);
        }
    }

    /// Stop the committer thread (closing): it finishes the commit it is in.
    pub(super) fn stop_committer(&self) {
        let c = &self.committer;
        lock(&c.requests).stop = true;
        c.wake.notify_all();
        let handle = lock(&c.thread).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Waits for the group commit that covers `target` (see the module docs).
struct CommitWait<'a> {
    inner: &'a Arc<Inner>,
    target: u64,
    durable: bool,
    requested: bool,
}

impl Future for CommitWait<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let inner = self.inner;
        let (target, durable) = (self.target, self.durable);
        {
            let mut c = lock(&inner.commit);
            if c.written >= target && (!durable || c.durable >= target) {
                return Poll::Ready(Ok(()));
            }
            if !c.busy
                && let Some(cause) = &c.poison
            {
                return Poll::Ready(Err(Error::Poisoned { cause: cause.clone() }));
            }
            if !c.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                c.wakers.push(cx.waker().clone());
            }
        }
        if !self.requested {
            self.requested = true;
            if let Err(e) = inner.request_commit(target, durable) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Pending
    }
}

/// Waits until the sealer's backlog lets an append roll a segment.
struct SealerWait<'a> {
    inner: &'a Inner,
}

impl Future for SealerWait<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let inner = self.inner;
        let mut b = lock(&inner.backlog);
        let stopped = inner.sealer_stopped.load(Ordering::Acquire);
        if inner.poisoned.load(Ordering::Acquire) {
            drop(b);
            return Poll::Ready(Err(inner.poison_error()));
        }
        if b.unindexed < MAX_UNINDEXED || stopped {
            return Poll::Ready(Ok(()));
        }
        b.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Log {
    /// [`Log::append`] as a future that never blocks the task's thread: the
    /// batch is queued at once (a short critical section, no I/O), then the
    /// task waits for its group commit, which the log's committer thread
    /// writes (and, with [`Durability::Fsync`], fsyncs). Async and
    /// synchronous appenders share group commits. Same results and errors as
    /// [`Log::append`]; dropping the future after its first poll does not
    /// withdraw the batch (it is queued and will be written).
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Durability, EventData, ExpectedVersion, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Options::default().durability(Durability::Fsync).open(dir.path())?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let r = rt.block_on(log.append_async("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")]))?;
    /// assert_eq!(r.stream_version, 0);
    /// # Ok(()) }
    /// ```
    pub async fn append_async(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
    ) -> Result<AppendResult> {
        let inner = &self.inner;
        let (events, batch_len) = inner.prepare_batch(stream, events)?;
        let _appending = Appending::enter(&inner.appenders);
        let (target, result) = loop {
            match inner.try_enqueue(stream, expected, &events, batch_len)? {
                Some(queued) => break queued,
                None => SealerWait { inner }.await?,
            }
        };
        CommitWait {
            inner,
            target,
            durable: inner.opts.durability == Durability::Fsync,
            requested: false,
        }
        .await?;
        Ok(result)
    }

    /// [`Log::sync`] as a future: everything appended so far is durable when
    /// it completes; the fsync runs on the log's committer thread.
    pub async fn sync_async(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(self.inner.poison_error());
        }
        let target = lock(&self.inner.state).lsn;
        CommitWait {
            inner: &self.inner,
            target,
            durable: true,
            requested: false,
        }
        .await
    }
}
