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
use crate::read::cold::ColdFront;
use crate::read::view::LogView;
use crate::remote::{Follow, RemoteLog, RemoteTier, Replicator, SegmentCache, ShipReport};

/// The cache of the store's segments inside the log directory.
const CACHE_DIR: &str = "annal.cache";

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
        let retains = self.opts.retention.is_some_and(|r| r.is_set());
        // A log whose retention removes confirmed segments reads them from
        // the store (spec 23.7), through a cache in the log directory.
        let tier = match retains {
            true => {
                let cache = SegmentCache::open(&self.dir.join(CACHE_DIR), self.opts.remote_cache_bytes, false)?;
                Some(Arc::new(RemoteTier::new(remote.clone(), Arc::new(cache))))
            }
            false => None,
        };
        let shared = Shared {
            status: Arc::clone(&status),
            confirmed_below: Arc::clone(&confirmed_below),
            inner: self.this.get().cloned().unwrap_or_default(),
            retains,
            tier: tier.clone(),
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
            cold: tier
                .clone()
                .map(|t| Arc::new(Mutex::new(ColdFront::new(t as Arc<dyn crate::read::cold::ColdTier>)))),
            tier,
        });
        Ok(())
    }

    /// `view` with the store's sealed segments below its first one in
    /// front (spec 23.7), if local retention removed segments of a log that
    /// ships. If the store cannot say which it holds (it cannot be
    /// reached), the view is the local one: reads of removed events are
    /// then [`Error::RemovedByRetention`], as without a store.
    pub(super) fn with_cold(&self, view: LogView) -> LogView {
        let Some(first) = view.first_base().filter(|&b| b > 0) else {
            return view;
        };
        let (cold, tier) = match lock(&self.replication).as_ref() {
            Some(ReplicationThread {
                cold: Some(c),
                tier: Some(t),
                ..
            }) => (c.clone(), t.clone()),
            _ => return view,
        };
        tier.cache().trim();
        match lock(&cold).below(Some(first), self.format.log_id) {
            Ok(segs) if !segs.is_empty() => view.with_front(segs),
            Ok(_) => view,
            Err(e) => {
                crate::trace::event!(WARN, dir = %self.dir.display(), error = %e,
                    "annal could not read the store's segments below the local front");
                let _ = e;
                view
            }
        }
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
    /// The store's segments as the log's views read them, kept up to date
    /// by each round.
    tier: Option<Arc<RemoteTier>>,
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
        match round {
            Ok(r) => {
                // What the store holds confirmed first, then the round's
                // report: a status showing the round lets retention remove
                // what it confirmed; then the removals the round allows.
                let before = shared.confirmed_below.fetch_max(r.confirmed_below, Ordering::AcqRel);
                let mut s = lock(status);
                s.rounds += 1;
                s.last = Some(r.clone());
                s.error = None;
                drop(s);
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
                let mut s = lock(status);
                s.rounds += 1;
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
    if let Some(t) = &shared.tier {
        rep = rep.feeding(t.clone());
    }
    let followed = rt.block_on(rep.follow(follow, &record, async {
        let _ = stopped.await;
    }));
    if followed.is_ok() {
        let last = rt.block_on(rep.ship_once());
        record(&last);
    }
    lock(status).stopped = true;
}
