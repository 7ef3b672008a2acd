//! The replicator a writer runs in its own process (feature `remote`,
//! `Options::replicate_to`): a thread with a current-thread tokio runtime
//! that follows the log's files into a remote log (spec 23.4).
//!
//! Invariants: the thread reads the log's files only (the head file and
//! the segments), never the appenders' state, so shipping never holds an
//! append; it stops when the log closes, after a last round over the
//! cleanly closed files; what it saw is in [`ReplicationStatus`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::remote::{Follow, RemoteLog, Replicator, ShipReport};

use super::lock;
use super::results::ReplicationStatus;
use super::state::{Inner, ReplicationThread};

impl Inner {
    /// Start the replicator of `Options::replicate_to`, if set.
    pub(super) fn start_replicator(&self) -> Result<()> {
        let Some((remote, follow)) = self.opts.replicate.clone() else {
            return Ok(());
        };
        let dir = self.dir.clone();
        let status = Arc::new(Mutex::new(ReplicationStatus::default()));
        let confirmed_below = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Shared {
            status: Arc::clone(&status),
            confirmed_below: Arc::clone(&confirmed_below),
            inner: self.this.get().cloned().unwrap_or_default(),
            retains: self.opts.retention.is_some_and(|r| r.is_set()),
        };
        let thread = std::thread::Builder::new()
            .name("annal-replicator".into())
            .spawn(move || run(&dir, remote, follow, stopped, &shared))
            .map_err(|e| Error::io("spawn the replicator thread for", self.dir.clone(), e))?;
        *lock(&self.replication) = Some(ReplicationThread {
            stop: Some(stop),
            thread: Some(thread),
            status,
            confirmed_below,
        });
        Ok(())
    }

    /// Stop the replicator (after its last round) and wait for it.
    pub(super) fn stop_replicator(&self) {
        let running = lock(&self.replication)
            .as_mut()
            .map(|r| (r.stop.take(), r.thread.take()));
        if let Some((stop, thread)) = running {
            if let Some(s) = stop {
                let _ = s.send(());
            }
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }

    /// Where local retention must stop when the log ships: the base of the
    /// first sealed segment the store does not hold confirmed (`None`: the
    /// log does not ship, nothing limits retention).
    pub(super) fn retention_limit(&self) -> Option<u64> {
        self.opts.replicate.as_ref()?;
        Some(
            lock(&self.replication)
                .as_ref()
                .map_or(0, |r| r.confirmed_below.load(Ordering::Acquire)),
        )
    }

    /// The replicator's status, if the log runs one.
    pub(super) fn replication_status(&self) -> Option<ReplicationStatus> {
        lock(&self.replication).as_ref().map(|r| lock(&r.status).clone())
    }
}

/// What the replicator thread shares with the log.
struct Shared {
    status: Arc<Mutex<ReplicationStatus>>,
    confirmed_below: Arc<AtomicU64>,
    /// The log, to apply its retention rule once more segments are
    /// confirmed in the store.
    inner: Weak<Inner>,
    /// Whether the log has a retention rule (then rounds confirm).
    retains: bool,
}

/// The replicator thread: follow until stopped, then one last round (the
/// log is closed by then: its files are final).
fn run(
    dir: &std::path::Path,
    remote: RemoteLog,
    follow: Follow,
    stopped: tokio::sync::oneshot::Receiver<()>,
    shared: &Shared,
) {
    let status = &*shared.status;
    let record = |round: &Result<ShipReport>| {
        let mut s = lock(status);
        s.rounds += 1;
        match round {
            Ok(r) => {
                s.last = Some(r.clone());
                s.error = None;
                drop(s);
                let before = shared.confirmed_below.fetch_max(r.confirmed_below, Ordering::AcqRel);
                // Segments newly confirmed in the store: the rule may remove
                // them now (not only at the next seal).
                if r.confirmed_below > before
                    && let Some(inner) = shared.inner.upgrade()
                {
                    inner.retain_after_seal();
                }
            }
            Err(e) => {
                crate::trace::event!(WARN, dir = %dir.display(), error = %e, "annal replication round failed");
                s.error = Some(e.to_string());
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let mut s = lock(status);
            s.error = Some(format!("cannot start the replicator's runtime: {e}"));
            s.stopped = true;
            return;
        }
    };
    let mut rep = Replicator::new(dir, remote).confirming(shared.retains);
    let followed = rt.block_on(rep.follow(follow, &record, async {
        let _ = stopped.await;
    }));
    if followed.is_ok() {
        let last = rt.block_on(rep.ship_once());
        record(&last);
    }
    lock(status).stopped = true;
}
