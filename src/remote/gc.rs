//! Collecting a remote log's garbage (spec 23.8): manifest versions older
//! than the newest few, and objects that no kept version names (parts of a
//! segment since shipped whole, a segment that compaction rewrote, uploads
//! that no manifest ever named).
//!
//! Invariants: only the replicator that holds the remote log (its epoch is
//! the newest manifest's) collects, between its own rounds; the floor
//! object is written before any manifest below it is removed, so a reader
//! that starts at the floor finds the versions from there on contiguous;
//! an object is removed only if no manifest from the floor on names it
//! (read from those manifests, never from a listing), and both its upload
//! and the time since a version last named it are older than the grace
//! period (a listing only offers candidates); the floor never passes the
//! newest version, and a collector that finds a newer writer (or a floor
//! above its newest) is fenced and removes nothing.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::{Error, Result};

use super::RemoteLog;
use super::manifest::{FLOOR_OBJECT, Manifest, decode_floor, encode_floor, manifest_object};
use super::ship::Replicator;

/// How much history a following replicator keeps in the store
/// ([`Follow::keep`](super::Follow::keep), [`Replicator::collect_garbage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keep {
    /// The newest manifest versions kept (at least 1).
    pub versions: u64,
    /// Objects no kept version names are removed only once they are this
    /// old (by the store's last-modified time): what a reader holding an
    /// older manifest, or a writer's upload not yet named, may still need.
    pub grace: Duration,
}

impl Keep {
    /// Keep the newest `n` manifest versions (at least 1), and unnamed
    /// objects for an hour.
    pub fn versions(n: u64) -> Keep {
        Keep {
            versions: n.max(1),
            grace: Duration::from_secs(3600),
        }
    }

    /// Remove unnamed objects only once they are `grace` old.
    pub fn grace(mut self, grace: Duration) -> Keep {
        self.grace = grace;
        self
    }
}

/// What one collection removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// The oldest manifest version kept (the floor, spec 23.8).
    pub floor: u64,
    /// Manifest versions removed.
    pub manifests_removed: u64,
    /// Objects removed (segments, index files, parts).
    pub objects_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
}

impl RemoteLog {
    /// The floor (spec 23.8): the oldest manifest version that may still
    /// exist; 1 if there is no floor object.
    pub(crate) async fn floor(&self) -> Result<u64> {
        match self.get(FLOOR_OBJECT).await? {
            None => Ok(1),
            Some(b) => decode_floor(&b).map_err(|(at, what)| self.error(FLOOR_OBJECT, format!("at byte {at}: {what}"))),
        }
    }

    /// Remove `object`; one that is gone already counts as removed.
    pub(super) async fn remove(&self, object: &str) -> Result<()> {
        match self
            .request(object, "DELETE", self.store.delete(&self.path(object)))
            .await?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(object, format!("DELETE: {e}"))),
        }
    }

    /// The objects under `dir`, as a listing returns them (it may miss
    /// objects, which are then collected later), streamed: a listing of
    /// any length takes bounded memory.
    fn listing<'a>(&'a self, dir: &'a str) -> Listing<'a> {
        Listing {
            remote: self,
            dir,
            stream: self.store.list(Some(&self.path(dir))),
        }
    }
}

/// A listing in progress ([`RemoteLog::listing`]).
struct Listing<'a> {
    remote: &'a RemoteLog,
    dir: &'a str,
    stream: std::pin::Pin<
        Box<dyn futures_core::Stream<Item = object_store::Result<object_store::ObjectMeta>> + Send + 'static>,
    >,
}

impl Listing<'_> {
    /// The next object's `(name, bytes, age)`, `None` at the end.
    async fn next(&mut self) -> Result<Option<(String, u64, Duration)>> {
        let stream = &mut self.stream;
        let next = async { Ok(std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await) };
        let meta = match self.remote.request(self.dir, "LIST", next).await? {
            Ok(None) => return Ok(None),
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) | Err(e) => return Err(self.remote.error(self.dir, format!("LIST: {e}"))),
        };
        let full = meta.location.as_ref();
        let name = full
            .strip_prefix(self.remote.prefix.as_ref())
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_owned();
        let now = crate::types::now_nanos();
        let modified = meta.last_modified.timestamp_nanos_opt().map_or(0, |n| n.max(0) as u64);
        Ok(Some((
            name,
            meta.size,
            Duration::from_nanos(now.saturating_sub(modified)),
        )))
    }
}

/// Manifest versions removed by one collection at most: a log that turns
/// collection on with millions of versions behind it catches up over many
/// collections, each a bounded pause between rounds.
const MAX_VERSIONS_REMOVED: u64 = 4096;

impl Replicator {
    /// Collect the remote log's garbage (spec 23.8): write the floor (the
    /// newest `keep.versions` manifest versions are kept), remove the
    /// versions below it (at most 4096 a collection), then every object
    /// under `segments/` and `tail/` that no kept version names, uploaded
    /// and unnamed for at least `keep.grace` (unnamed since the oldest kept
    /// version was written, or since an earlier collection of this
    /// replicator found it so).
    ///
    /// Only the replicator that holds the remote log collects: one that
    /// has not shipped a round yet collects nothing, and one whose epoch is
    /// no longer the newest manifest's gets [`Error::Fenced`] and removes
    /// nothing. Readers that start from the newest manifest (restores,
    /// replicas, remote readers) are unaffected; one that holds a manifest
    /// older than the floor may meet removed objects, an error naming them.
    pub async fn collect_garbage(&mut self, keep: Keep) -> Result<GcReport> {
        let Some(ours) = self.last_manifest().cloned() else {
            return Ok(GcReport::default());
        };
        let versions = keep.versions.max(1);
        let remote = self.remote().clone();
        let newest = remote.latest_manifest_from(ours.seq).await?.ok_or_else(|| {
            remote.error(
                &manifest_object(ours.seq),
                "expected this replicator's manifest, found none",
            )
        })?;
        let fenced = |found: u64| Error::Fenced {
            url: remote.url().to_owned(),
            ours: ours.epoch,
            found,
        };
        if newest.epoch != ours.epoch || newest.writer != ours.writer {
            return Err(fenced(newest.epoch));
        }
        let old_floor = remote.floor().await?;
        if old_floor > newest.seq {
            // Another collector moved the floor past this writer's newest.
            return Err(fenced(ours.epoch.saturating_add(1)));
        }
        // Never above the newest: it is kept whatever `keep` says.
        let floor = newest
            .seq
            .saturating_add(1)
            .saturating_sub(versions)
            .max(old_floor)
            .max(1)
            .min(newest.seq)
            .min(old_floor.saturating_add(MAX_VERSIONS_REMOVED));
        let mut report = GcReport {
            floor,
            ..GcReport::default()
        };
        // The floor first: from here a reader starts at it.
        if floor > old_floor {
            remote.put(FLOOR_OBJECT, encode_floor(floor)).await?;
            for seq in old_floor..floor {
                remote.remove(&manifest_object(seq)).await?;
                report.manifests_removed += 1;
            }
        }
        // What the kept versions name, and when the oldest kept was
        // written: an object none of them names has been unnamed since then
        // at least.
        let mut named: HashSet<String> = HashSet::new();
        let mut note = |m: &Manifest| {
            for e in &m.sealed {
                named.insert(e.segment.object.clone());
                if let Some(i) = &e.index {
                    named.insert(i.object.clone());
                }
            }
            for p in m.active.iter().flat_map(|a| &a.parts) {
                named.insert(p.shipped.object.clone());
            }
        };
        note(&newest);
        let mut oldest_kept_at = newest.written_at;
        for seq in floor..newest.seq {
            if let Some(m) = remote.manifest(seq).await? {
                oldest_kept_at = oldest_kept_at.min(m.written_at);
                note(&m);
            }
        }
        // Still the holder: a writer that took the remote log since would
        // have created the next version (objects it names may be old).
        if let Some(m) = remote.manifest(newest.seq.saturating_add(1)).await? {
            return Err(fenced(m.epoch));
        }
        let kept_for = Duration::from_nanos(crate::types::now_nanos().saturating_sub(oldest_kept_at));
        let now = std::time::Instant::now();
        let before = std::mem::take(&mut self.unnamed_since);
        let mut seen: std::collections::HashMap<String, std::time::Instant> = std::collections::HashMap::new();
        let listed: Result<()> = async {
            for dir in ["segments", "tail"] {
                let mut listing = remote.listing(dir);
                while let Some((name, bytes, age)) = listing.next().await? {
                    if named.contains(&name) {
                        continue;
                    }
                    // Unnamed for the grace period: since the oldest kept
                    // version was written, or since an earlier collection of
                    // this replicator found it so.
                    let since = before.get(&name).copied().unwrap_or(now);
                    let unnamed = kept_for.max(now.duration_since(since));
                    if age >= keep.grace && unnamed >= keep.grace {
                        remote.remove(&name).await?;
                        report.objects_removed += 1;
                        report.bytes_removed += bytes;
                    } else {
                        seen.insert(name, since);
                    }
                }
            }
            Ok(())
        }
        .await;
        // What this collection learnt is kept for the next, even if it
        // failed part way.
        self.unnamed_since = seen;
        listed?;
        Ok(report)
    }
}
