//! Reading a remote log (spec 23.6, 23.7): a [`Reader`] over a replica kept
//! in a local cache directory, refreshed from the store before each view:
//! a partial replica (the newest segment only) whose sealed segments are
//! read from the store through ranged reads and a bounded cache, or a whole
//! replica.
//!
//! Invariants: a view holds only bytes checked against the manifest (length
//! and BLAKE3 per object) and then by the reader itself (CRCs, seals,
//! chain), exactly as a local view; a temporary cache is removed when the
//! reader is dropped, and nothing outside it is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::read::view::{LogView, Reader};

use super::tier::{CacheStats, DEFAULT_CACHE_BYTES, RemoteTier, SegmentCache};
use super::{RemoteLog, Replica, ReplicaReport};

/// The cache directory of sealed segments, inside a remote reader's
/// directory.
const CACHE_DIR: &str = "annal.cache";

/// A reader of a remote log: views with the same API and the same checks as
/// a local [`Reader`], over a local copy of the remote log's objects that
/// each [`view`](RemoteReader::view) brings up to date first (a manifest
/// read and the newest segment's new parts).
///
/// [`RemoteReader::open`] and [`Reader::open_remote`] copy only the newest
/// segment, into a temporary directory removed when the reader is dropped.
/// The sealed segments stay in the store: a view opens each by two ranged
/// reads (its header and its seal, checked as a local open checks them),
/// and the first read of a segment fetches it whole, with its index file,
/// into a bounded cache (checked against the manifest's length and BLAKE3;
/// [`RemoteReader::open_bounded`] sets the budget, [`cache_stats`](RemoteReader::cache_stats)
/// reports it). A stream read fetches only the segments that hold the
/// stream's events.
///
/// [`RemoteReader::open_in`] keeps a whole replica in a directory reused by
/// the next open (what `annal follow` keeps), and never reads from the
/// store but to copy.
///
/// ```no_run
/// # fn demo() -> annal::Result<()> {
/// let remote = annal::Reader::open_remote("s3://my-bucket/orders")?;
/// let view = remote.view()?;
/// for r in view.read_stream("order-1", 0u64, annal::Direction::Forward, 100) {
///     println!("{}", r?.event_type());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RemoteReader {
    replica: tokio::sync::Mutex<Replica>,
    reader: Reader,
    runtime: tokio::runtime::Runtime,
    /// The store's sealed segments, read through a bounded cache (`None`:
    /// the replica is whole).
    tier: Option<Arc<RemoteTier>>,
    /// Declared last: removed after the replica and the reader let go of
    /// its files.
    _cache: Cache,
}

/// A cache directory, removed on drop if it is a temporary one.
#[derive(Debug)]
struct Cache(Option<PathBuf>);

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            // Never follows a link out of the directory (std's remove_dir_all
            // removes links, not what they point to).
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Reader {
    /// A reader of the remote log at `url` (`s3://bucket/prefix`,
    /// `file:///path`; see [`RemoteLog::open`]) over a temporary cache of
    /// at most [`DEFAULT_CACHE_BYTES`] of sealed segments: see
    /// [`RemoteReader`].
    pub fn open_remote(url: &str) -> Result<RemoteReader> {
        RemoteReader::open(RemoteLog::open(url)?)
    }
}

impl Reader {
    /// Read the segments that local retention removed from this log from
    /// `remote`, the store its writer ships to ([`Options::replicate_to`](crate::Options::replicate_to),
    /// `annal replicate`): views show the whole log, the removed segments
    /// read as a [`RemoteReader`] reads sealed segments (two ranged reads to
    /// open each, fetched into a temporary cache of at most `cache_bytes`
    /// when first read, removed when the reader is dropped). The store's
    /// segments must be this log's (its id) and end where the directory's
    /// first segment starts, or a view is an error naming the object.
    pub fn with_remote(self, remote: RemoteLog, cache_bytes: u64) -> Result<Reader> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id)
            .map_err(|e| Error::io("draw a name for", std::env::temp_dir(), std::io::Error::other(e)))?;
        let dir = std::env::temp_dir().join(format!("annal-cache-{}", crate::audit::chain::hex(&id)));
        let cache = SegmentCache::open(&dir, cache_bytes, true)?;
        self.set_cold(Arc::new(RemoteTier::new(remote, Arc::new(cache))));
        Ok(self)
    }
}

impl RemoteReader {
    /// A reader of `remote` over a new temporary directory, removed when
    /// the reader is dropped, caching at most [`DEFAULT_CACHE_BYTES`] of
    /// sealed segments that no view holds. The first round of copying runs
    /// here: an error if nothing was shipped to `remote` yet.
    pub fn open(remote: RemoteLog) -> Result<RemoteReader> {
        RemoteReader::open_bounded(remote, DEFAULT_CACHE_BYTES)
    }

    /// [`RemoteReader::open`] caching at most `cache_bytes` of sealed
    /// segments (and their index files) that no view holds: beyond it, the
    /// least recently used copy a view no longer holds is removed. A view
    /// holds the copies it read until it is dropped, whatever the budget.
    pub fn open_bounded(remote: RemoteLog, cache_bytes: u64) -> Result<RemoteReader> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id)
            .map_err(|e| Error::io("draw a name for", std::env::temp_dir(), std::io::Error::other(e)))?;
        let dir = std::env::temp_dir().join(format!("annal-remote-{}", crate::audit::chain::hex(&id)));
        std::fs::create_dir(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let cache = Cache(Some(dir.clone()));
        RemoteReader::start(remote, &dir, cache, Some(cache_bytes))
    }

    /// A reader of `remote` whose copy lives in `cache` (created if missing,
    /// kept after the reader is dropped, and brought up to date by the next
    /// open): a whole replica, as [`Replica::open`] takes it (every sealed
    /// segment is copied; reads never go to the store).
    pub fn open_in(remote: RemoteLog, cache: impl AsRef<Path>) -> Result<RemoteReader> {
        RemoteReader::start(remote, cache.as_ref(), Cache(None), None)
    }

    /// `budget`: a partial replica whose sealed segments are read from the
    /// store through a cache of that many bytes; `None`: a whole replica.
    fn start(remote: RemoteLog, dir: &Path, cache: Cache, budget: Option<u64>) -> Result<RemoteReader> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for", dir, e))?;
        let mut replica = Replica::open(remote.clone(), dir)?;
        let tier = match budget {
            Some(bytes) => {
                replica = replica.partial();
                let segments = Arc::new(SegmentCache::open(&dir.join(CACHE_DIR), bytes, false)?);
                Some(Arc::new(RemoteTier::new(remote, segments)))
            }
            None => None,
        };
        runtime.block_on(replica.sync_once())?;
        if replica.is_empty() {
            // No manifest, or only the one a writer takes the log with.
            return Err(replica.remote().error(
                "manifest/",
                "expected a manifest naming a segment, found none (nothing was shipped)",
            ));
        }
        let reader = Reader::open(dir)?;
        if let Some(t) = &tier {
            t.set_sealed(replica.sealed());
            reader.set_cold(t.clone());
        }
        Ok(RemoteReader {
            replica: tokio::sync::Mutex::new(replica),
            reader,
            runtime,
            tier,
            _cache: cache,
        })
    }

    /// What the cache of sealed segments holds now (`None` for a reader
    /// over a whole replica, [`RemoteReader::open_in`]).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.tier.as_ref().map(|t| t.cache().stats())
    }

    /// Bring the local copy up to the newest manifest (blocking: from async
    /// code, use [`refresh_async`](RemoteReader::refresh_async)).
    pub fn refresh(&self) -> Result<ReplicaReport> {
        self.runtime.block_on(self.refresh_async())
    }

    /// [`refresh`](RemoteReader::refresh) as a future.
    pub async fn refresh_async(&self) -> Result<ReplicaReport> {
        let mut replica = self.replica.lock().await;
        let report = replica.sync_once().await?;
        if let Some(t) = &self.tier {
            t.set_sealed(replica.sealed());
            t.cache().trim();
        }
        Ok(report)
    }

    /// Refresh, then a view of the remote log as the newest manifest has it
    /// (blocking; from async code, [`refresh_async`](RemoteReader::refresh_async)
    /// then `reader().view()`).
    pub fn view(&self) -> Result<LogView> {
        self.refresh()?;
        self.reader.view()
    }

    /// The reader of the local copy (its views do not refresh the copy).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The cache directory holding the local copy.
    pub fn dir(&self) -> &Path {
        self.reader.dir()
    }
}
