//! Shipping a log directory's durable bytes to a remote log (spec 23.4).
//!
//! Invariants: only durable bytes are shipped (sealed segments, and the
//! active segment up to the head file's `durable_end`, every frame of it
//! validated with its CRCs first); every object a manifest names is
//! written before the manifest; the replicator holds the remote log by its
//! epoch and stops at the first sign of a newer one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audit::chain::hex;
use crate::error::{Error, Result};
use crate::format::frame::FrameCursor;
use crate::format::names::{index_file_name, segment_file_name};
use crate::format::{Layout, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::read::view::{list_segments, pread};

use super::manifest::{ActiveEntry, MANIFEST_VERSION, Manifest, Part, SealedEntry, Shipped, manifest_object};
use super::transfer::hash_file;
use super::{Created, RemoteLog};

/// What one [`Replicator::ship_once`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShipReport {
    /// The manifest version written (or the one that was current, if there
    /// was nothing new).
    pub manifest_seq: u64,
    /// This replicator's epoch.
    pub epoch: u64,
    /// Objects uploaded.
    pub objects: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The position after the last batch the remote log holds.
    pub shipped_position: u64,
    /// The position after the last durable batch of the local log.
    pub durable_position: u64,
    /// Positions durable locally and not shipped (`durable - shipped`).
    pub lag_positions: u64,
    /// Every sealed segment of the local log based below this position is
    /// confirmed in the store: its object was read back after the manifest
    /// named it and its BLAKE3 equals the local file's (spec 23.4). What
    /// local retention may remove when the log ships (`Options::replicate_to`).
    /// 0 unless the replicator is [`confirming`](Replicator::confirming).
    pub confirmed_below: u64,
    /// Why the segment at `confirmed_below` could not be confirmed this round
    /// (the store did not answer, or its object does not match), if a read
    /// back failed; the next round tries again.
    pub unconfirmed: Option<String>,
    /// How long since a round of this replicator last left the store
    /// holding everything that was durable here (zero when this one did):
    /// the store is at most this far behind in time.
    pub lag: Duration,
}

/// How a following replicator ([`Replicator::follow`]) paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Follow {
    /// Time between rounds.
    pub interval: Duration,
    /// The first wait after a failed round; doubled after each failure.
    pub min_backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// Collect the remote log's garbage between rounds, keeping this much
    /// ([`Follow::keep`]; `None`, the default: never).
    pub keep: Option<super::Keep>,
}

impl Default for Follow {
    fn default() -> Follow {
        Follow {
            interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            keep: None,
        }
    }
}

impl Follow {
    /// Rounds every `interval`, the default backoff.
    pub fn every(interval: Duration) -> Follow {
        Follow {
            interval,
            ..Follow::default()
        }
    }

    /// Collect the remote log's garbage between rounds (spec 23.8): once
    /// twice `keep.versions` versions pile up above the floor, the older
    /// half goes, with the objects only they named (older than
    /// `keep.grace`). See [`Replicator::collect_garbage`].
    pub fn keep(mut self, keep: super::Keep) -> Follow {
        self.keep = Some(keep);
        self
    }

    /// Back off after failed rounds: wait `min` after a first failed round,
    /// doubling up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Follow {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }
}

/// Ships a log directory to a remote log, one round per [`ship_once`](Replicator::ship_once).
#[derive(Debug)]
pub struct Replicator {
    dir: PathBuf,
    remote: RemoteLog,
    writer: String,
    epoch: Option<u64>,
    last: Option<Manifest>,
    /// `(ours, found)` once another writer's newer epoch was seen: every
    /// later round is refused.
    fenced: Option<(u64, u64)>,
    /// When a round last left the store holding everything durable here.
    caught_up: Instant,
    /// Whether rounds confirm sealed segments ([`Replicator::confirming`]).
    confirming: bool,
    /// Sealed segments confirmed in the store: base → BLAKE3 of the content.
    confirmed: std::collections::HashMap<u64, String>,
    /// Told the sealed segments of each manifest a round leaves (the
    /// writer's views read those below the local front, spec 23.7).
    tier: Option<std::sync::Arc<super::RemoteTier>>,
    /// Garbage collection between rounds ([`Follow::keep`]), and the floor
    /// the last collection left.
    keep: Option<(super::Keep, u64)>,
    /// Objects a collection found named by no kept version, and since when
    /// (spec 23.8: removed once unnamed for the grace period).
    pub(super) unnamed_since: std::collections::HashMap<String, Instant>,
}

impl Replicator {
    /// A replicator of the log in `dir` to `remote`. It takes the remote log
    /// (a new fencing epoch) at its first round.
    pub fn new(dir: impl AsRef<Path>, remote: RemoteLog) -> Replicator {
        let mut id = [0u8; 16];
        let _ = getrandom::fill(&mut id);
        Replicator {
            dir: dir.as_ref().to_owned(),
            remote,
            writer: hex(&id),
            epoch: None,
            last: None,
            fenced: None,
            caught_up: Instant::now(),
            confirming: false,
            confirmed: std::collections::HashMap::new(),
            tier: None,
            keep: None,
            unnamed_since: std::collections::HashMap::new(),
        }
    }

    /// Whether each round also confirms the sealed segments the store holds
    /// (reads each back once and compares it with the local file), for
    /// [`ShipReport::confirmed_below`]: what local retention may remove.
    /// Off by default (it reads every sealed segment back once).
    pub fn confirming(mut self, yes: bool) -> Replicator {
        self.confirming = yes;
        self
    }

    /// Tell `tier` the sealed segments of each manifest a round leaves.
    pub(crate) fn feeding(mut self, tier: std::sync::Arc<super::RemoteTier>) -> Replicator {
        self.tier = Some(tier);
        self
    }

    /// The remote log.
    pub fn remote(&self) -> &RemoteLog {
        &self.remote
    }

    /// Take the remote log: a new manifest version with the next epoch,
    /// created only if absent. Another writer that created that version
    /// first wins; this one is fenced.
    async fn acquire(&mut self, log_id: &str) -> Result<()> {
        let latest = self.remote.latest_manifest().await?;
        if let Some(m) = &latest
            && m.log_id != log_id
        {
            return Err(self.remote.error(
                &manifest_object(m.seq),
                format!(
                    "expected the log {log_id} (the local log's id), found the log {}",
                    m.log_id
                ),
            ));
        }
        let epoch = latest.as_ref().map_or(1, |m| m.epoch + 1);
        let m = latest.unwrap_or_else(|| Manifest {
            version: MANIFEST_VERSION,
            seq: 0,
            epoch: 0,
            writer: String::new(),
            log_id: log_id.to_owned(),
            sealed: Vec::new(),
            active: None,
            next_position: 0,
            written_at: 0,
            newest_event_at: None,
        });
        let m = self.commit(m, epoch).await?;
        self.epoch = Some(epoch);
        self.last = Some(m);
        Ok(())
    }

    /// Write `m` as the next manifest version (after `m.seq`), by this
    /// writer at epoch `ours`; [`Error::Fenced`] (for good: later rounds are
    /// refused too) if another writer wrote that version.
    async fn commit(&mut self, mut m: Manifest, ours: u64) -> Result<Manifest> {
        m.seq += 1;
        m.epoch = ours;
        m.writer = self.writer.clone();
        m.written_at = crate::types::now_nanos();
        let object = manifest_object(m.seq);
        match self.remote.create(&object, m.encode()).await? {
            Created::Created => {
                // A version garbage collection removed can be created again
                // (spec 23.3): below the floor, it is not the newest, and
                // this writer is fenced. The floor is written before any
                // version below it is removed, so it is read here.
                let floor = self.remote.floor().await?;
                if floor > m.seq {
                    let _ = self.remote.remove(&object).await;
                    let found = self
                        .remote
                        .latest_manifest_from(floor)
                        .await?
                        .map_or(ours.saturating_add(1), |f| f.epoch);
                    self.fenced = Some((ours, found));
                    return Err(self.fenced_error(ours, found));
                }
                Ok(m)
            }
            Created::Existed => {
                let found = self.remote.manifest(m.seq).await?;
                match found {
                    // Our own earlier attempt, whose answer was lost.
                    Some(f) if f.writer == self.writer && f.epoch == ours => Ok(f),
                    Some(f) => {
                        self.fenced = Some((ours, f.epoch));
                        Err(self.fenced_error(ours, f.epoch))
                    }
                    None => Err(self
                        .remote
                        .error(&object, "expected the manifest version another put created, found none")),
                }
            }
        }
    }

    fn fenced_error(&self, ours: u64, found: u64) -> Error {
        Error::Fenced {
            url: self.remote.url().to_owned(),
            ours,
            found,
        }
    }

    /// One round: take the remote log if not yet held, upload every sealed
    /// segment (and index file) the remote log lacks and the active
    /// segment's durable bytes past what was shipped, then write a new
    /// manifest version (only if something was shipped).
    pub async fn ship_once(&mut self) -> Result<ShipReport> {
        if let Some((ours, found)) = self.fenced {
            return Err(self.fenced_error(ours, found));
        }
        let local = LocalLog::scan(&self.dir)?;
        if self.epoch.is_none() {
            self.acquire(&local.log_id).await?;
        }
        let mut m = self.last.clone().ok_or(Error::Closed)?;
        let (mut objects, mut bytes) = (0usize, 0u64);
        // Sealed segments: new ones, ones rewritten by compaction (another
        // length), index files that appeared since.
        for &base in &local.sealed {
            let path = self.dir.join(segment_file_name(base));
            let len = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::io("stat", &path, e))?
                .len();
            let have = m.sealed.iter().position(|e| e.base == base);
            let same = have.is_some_and(|i| m.sealed[i].segment.len == len);
            if !same {
                let seg = self.upload_file(&path, "segments", base, "seg").await?;
                objects += 1;
                bytes += seg.len;
                let entry = SealedEntry {
                    base,
                    segment: seg,
                    index: None,
                };
                match have {
                    Some(i) => m.sealed[i] = entry,
                    None => {
                        m.sealed.push(entry);
                        m.sealed.sort_by_key(|e| e.base);
                    }
                }
            }
            let idx = self.dir.join(index_file_name(base));
            if let Some(e) = m.sealed.iter_mut().find(|e| e.base == base)
                && e.index.is_none()
                && std::fs::symlink_metadata(&idx).is_ok_and(|m| m.is_file())
            {
                let shipped = self.upload_file(&idx, "segments", base, "idx").await?;
                objects += 1;
                bytes += shipped.len;
                e.index = Some(shipped);
            }
        }
        // The active segment, up to its durable end.
        let mut next_position = m.next_position;
        if let Some(base) = local.active {
            if m.active.as_ref().is_none_or(|a| a.base != base) {
                // A new active segment: every sealed one below it is shipped.
                m.active = Some(ActiveEntry {
                    base,
                    parts: Vec::new(),
                });
                next_position = base;
            }
            let shipped_end = m.active.as_ref().map_or(0, ActiveEntry::end);
            if let Some(durable) = local.durable_end.filter(|&d| d > shipped_end) {
                let (part, next, newest) = self.ship_part(base, shipped_end, durable, next_position).await?;
                objects += 1;
                bytes += part.shipped.len;
                if let Some(a) = m.active.as_mut() {
                    a.parts.push(part);
                }
                next_position = next;
                m.newest_event_at = newest.or(m.newest_event_at);
            }
        }
        m.sealed.retain(|e| local.active.is_none_or(|a| e.base < a));
        let durable_position = local.durable_position.unwrap_or(next_position).max(next_position);
        if objects > 0 || next_position != m.next_position {
            m.next_position = next_position;
            let written = self.commit(m, self.epoch.unwrap_or(0)).await?;
            self.last = Some(written);
        }
        let (confirmed_below, unconfirmed) = self.confirm(&local).await?;
        let last = self.last.as_ref().ok_or(Error::Closed)?;
        if let Some(t) = &self.tier {
            t.set_sealed(&last.sealed);
        }
        let lag_positions = durable_position.saturating_sub(last.next_position);
        if lag_positions == 0 {
            self.caught_up = Instant::now();
        }
        Ok(ShipReport {
            manifest_seq: last.seq,
            epoch: last.epoch,
            objects,
            bytes,
            shipped_position: last.next_position,
            durable_position,
            lag_positions,
            confirmed_below,
            unconfirmed,
            lag: if lag_positions == 0 {
                Duration::ZERO
            } else {
                self.caught_up.elapsed()
            },
        })
    }

    /// Ship a round every `follow.interval` until `stop` completes. A round
    /// that fails on the store, the network or a timeout is retried after a
    /// backoff (doubling from `min_backoff` to `max_backoff`, reset by a
    /// round that succeeds); the replicator stops with the error only when
    /// another writer holds the remote log ([`Error::Fenced`]) or the local
    /// log is damaged. `each` sees every round's outcome.
    pub async fn follow(
        &mut self,
        follow: Follow,
        each: impl FnMut(&Result<ShipReport>),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        self.keep = follow.keep.map(|k| (k, 0));
        super::rounds(self, follow, each, stop).await
    }

    /// The newest manifest this replicator wrote or read (`None` before its
    /// first round).
    pub(crate) fn last_manifest(&self) -> Option<&Manifest> {
        self.last.as_ref()
    }

    /// After a round: collect garbage if [`Follow::keep`] asked for it and
    /// twice the versions it keeps piled up above the last floor. A failed
    /// collection is retried after the next rounds; only fencing ends the
    /// following.
    async fn collect_if_due(&mut self) -> Result<()> {
        let Some((keep, floor)) = self.keep else { return Ok(()) };
        let seq = self.last.as_ref().map_or(0, |m| m.seq);
        if seq < floor.max(1).saturating_add(keep.versions.saturating_mul(2)) {
            return Ok(());
        }
        match self.collect_garbage(keep).await {
            Ok(r) => {
                crate::trace::event!(DEBUG, url = %self.remote.url(), floor = r.floor, manifests = r.manifests_removed,
                    objects = r.objects_removed, bytes = r.bytes_removed, "annal collected a remote log's garbage");
                self.keep = Some((keep, r.floor));
                Ok(())
            }
            Err(e @ Error::Fenced { .. }) => Err(e),
            Err(e) => {
                crate::trace::event!(WARN, url = %self.remote.url(), error = %e, "annal could not collect a remote log's garbage");
                let _ = e;
                Ok(())
            }
        }
    }

    /// Confirm the local sealed segments, oldest first, that the newest
    /// manifest names: read each object back and compare its BLAKE3 with the
    /// local file's, once per content (a segment rewritten by compaction is
    /// confirmed again). Returns the base of the first sealed segment not
    /// confirmed (the active segment's base if all are), and why, if a read
    /// back failed (the store's failure does not fail the round: what it
    /// shipped is shipped).
    async fn confirm(&mut self, local: &LocalLog) -> Result<(u64, Option<String>)> {
        let Some(m) = self.last.clone().filter(|_| self.confirming) else {
            return Ok((0, None));
        };
        for &base in &local.sealed {
            let Some(e) = m.sealed.iter().find(|e| e.base == base) else {
                return Ok((base, None));
            };
            if self.confirmed.get(&base) == Some(&e.segment.blake3) {
                continue;
            }
            let path = self.dir.join(segment_file_name(base));
            let file = open(&path)?;
            let len = file.metadata().map_err(|err| Error::io("stat", &path, err))?.len();
            let here = hash_file(&file, &path, len)?;
            if here != e.segment.blake3 {
                // Rewritten here since it was shipped: the next round ships it.
                return Ok((base, None));
            }
            // Read back: its length and BLAKE3 must be the manifest's, which
            // are the local file's.
            if let Err(err) = self.remote.download(&e.segment, |_| Ok(())).await {
                return Ok((base, Some(err.to_string())));
            }
            self.confirmed.insert(base, here);
        }
        Ok((local.active.unwrap_or(0), None))
    }

    /// [`ship_once`](Replicator::ship_once) for callers without a tokio
    /// runtime: runs it on a current-thread runtime of its own.
    pub fn ship_once_blocking(&mut self) -> Result<ShipReport> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for", &self.dir, e))?;
        rt.block_on(self.ship_once())
    }

    /// Upload the file at `path` as `<folder>/<base>-<BLAKE3>.<ext>`
    /// (content-addressed: a retry or another writer uploads the same bytes
    /// under the same name), unless it is there already. The file is read
    /// through one open file (a file renamed over the name meanwhile, by
    /// compaction, is not mixed in), in chunks: hashed first, then uploaded
    /// (in parts if it is large).
    async fn upload_file(&self, path: &Path, folder: &str, base: u64, ext: &str) -> Result<Shipped> {
        let file = open(path)?;
        let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        let hash = hash_file(&file, path, len)?;
        let object = format!("{folder}/{base:020}-{}.{ext}", hash.get(..32).unwrap_or_default());
        self.remote.upload_file(&object, &file, path, len).await?;
        Ok(Shipped {
            object,
            len,
            blake3: hash,
        })
    }

    /// Ship bytes `[from, to)` of the active segment based at `base` as one
    /// part, after validating every frame in it (`next_position`: where the
    /// first frame after `from` starts). Returns the part, the position
    /// after its last batch and that batch's last timestamp.
    async fn ship_part(&self, base: u64, from: u64, to: u64, next_position: u64) -> Result<(Part, u64, Option<u64>)> {
        let path = self.dir.join(segment_file_name(base));
        let file = open(&path)?;
        let mut header = vec![0u8; SEGMENT_HEADER_LEN];
        pread(&file, &mut header, 0, &path)?;
        let h = *SegmentHeader::parse(&header).map_err(|d| d.at(&path))?;
        let mut bytes = vec![0u8; usize::try_from(to - from).unwrap_or(usize::MAX)];
        pread(&file, &mut bytes, from, &path)?;
        // Validate what is shipped: every frame whole, its CRCs right.
        let (start, first_position) = if from == 0 {
            (SEGMENT_HEADER_LEN as u64, h.base_position.get())
        } else {
            (from, next_position)
        };
        let skip = usize::try_from(start - from).unwrap_or(usize::MAX);
        let frames = bytes.get(skip..).unwrap_or_default();
        let mut cursor = FrameCursor::new(frames, start, first_position, true, Layout::of(&h));
        let mut newest = None;
        while let Some(step) = cursor.step_each(|_, r| newest = Some(r.timestamp())) {
            step.map_err(|d| d.at(&path))?;
        }
        let (end, next) = (cursor.offset(), cursor.next_position());
        if end != to {
            return Err(Error::Corrupt {
                path: path.clone(),
                offset: end,
                detail: format!("expected whole frames up to the durable end {to}, found a frame running past it"),
            });
        }
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let object = format!(
            "tail/{base:020}/{from:020}-{to:020}-{}",
            hash.get(..32).unwrap_or_default()
        );
        let shipped = Shipped {
            object: object.clone(),
            len: to - from,
            blake3: hash,
        };
        self.remote.put(&object, bytes).await?;
        Ok((Part { from, to, shipped }, next, newest))
    }
}

/// What a log directory holds durably, for a round of shipping.
struct LocalLog {
    log_id: String,
    /// Bases of the sealed segments (every segment but the newest).
    sealed: Vec<u64>,
    /// Base of the active (newest) segment.
    active: Option<u64>,
    /// The active segment's durable end, if the head file names it.
    durable_end: Option<u64>,
    /// The position after the last durable batch, if the head names the
    /// active segment with `durable_end == visible_end`.
    durable_position: Option<u64>,
}

impl LocalLog {
    fn scan(dir: &Path) -> Result<LocalLog> {
        // The head first: a segment the head names is in the listing after.
        let head = crate::storage::head::read(dir)?;
        let bases = list_segments(dir)?;
        let Some((&active, sealed)) = bases.split_last() else {
            return Err(Error::NotALog {
                path: dir.to_owned(),
                detail: "expected a log directory with segment files, found none".into(),
            });
        };
        let first = dir.join(segment_file_name(bases.first().copied().unwrap_or(active)));
        let file = open(&first)?;
        let mut header = vec![0u8; SEGMENT_HEADER_LEN];
        pread(&file, &mut header, 0, &first)?;
        let h = *SegmentHeader::parse(&header).map_err(|d| d.at(&first))?;
        let named = head.filter(|h| h.segment_base == active);
        Ok(LocalLog {
            log_id: hex(&h.log_id),
            sealed: sealed.to_vec(),
            active: Some(active),
            durable_end: named.map(|h| h.durable_end),
            durable_position: named
                .filter(|h| h.durable_end == h.visible_end)
                .map(|h| h.next_position),
        })
    }
}

/// Open a file of the log for reading, never following a link out of it.
fn open(path: &Path) -> Result<std::fs::File> {
    crate::storage::io::open_read(path).map_err(|e| Error::io("open", path, e))
}

impl super::Rounds for Replicator {
    type Report = ShipReport;

    async fn round(&mut self) -> Result<ShipReport> {
        let report = self.ship_once().await?;
        self.collect_if_due().await?;
        Ok(report)
    }

    /// Another writer holds the remote log, or the local log is damaged or
    /// gone. Anything else (the store, the network, a timeout) is retried.
    fn fatal(e: &Error) -> bool {
        matches!(
            e,
            Error::Fenced { .. } | Error::Corrupt { .. } | Error::NotALog { .. } | Error::Closed
        )
    }
}
