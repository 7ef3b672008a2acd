//! Reading a remote log (spec 23.6): a [`Reader`] over a replica kept in a
//! local cache directory, refreshed from the store before each view.
//!
//! Invariants: a view holds only bytes checked against the manifest (length
//! and BLAKE3 per object) and then by the reader itself (CRCs, seals,
//! chain), exactly as a local view; a temporary cache is removed when the
//! reader is dropped, and nothing outside it is written.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::read::view::{LogView, Reader};

use super::{RemoteLog, Replica, ReplicaReport};

/// A reader of a remote log: views with the same API and the same checks as
/// a local [`Reader`], over a local copy of the remote log's objects that
/// each [`view`](RemoteReader::view) brings up to date first (a manifest
/// read and the objects the copy lacks: sealed segments once, the active
/// segment's new parts).
///
/// The copy lives in a cache directory: a new temporary one removed when
/// the reader is dropped ([`RemoteReader::open`], [`Reader::open_remote`]),
/// or one that is kept and reused by the next open
/// ([`RemoteReader::open_in`], which is also what `annal follow` keeps).
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
    /// `file:///path`; see [`RemoteLog::open`]) over a temporary cache: see
    /// [`RemoteReader`].
    pub fn open_remote(url: &str) -> Result<RemoteReader> {
        RemoteReader::open(RemoteLog::open(url)?)
    }
}

impl RemoteReader {
    /// A reader of `remote` whose copy lives in a new temporary directory,
    /// removed when the reader is dropped. The first round of copying runs
    /// here: an error if nothing was shipped to `remote` yet.
    pub fn open(remote: RemoteLog) -> Result<RemoteReader> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id)
            .map_err(|e| Error::io("draw a name for", std::env::temp_dir(), std::io::Error::other(e)))?;
        let dir = std::env::temp_dir().join(format!("annal-remote-{}", crate::audit::chain::hex(&id)));
        std::fs::create_dir(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let cache = Cache(Some(dir.clone()));
        RemoteReader::start(remote, &dir, cache)
    }

    /// A reader of `remote` whose copy lives in `cache` (created if missing,
    /// kept after the reader is dropped, and brought up to date by the next
    /// open): a replica directory, as [`Replica::open`] takes it.
    pub fn open_in(remote: RemoteLog, cache: impl AsRef<Path>) -> Result<RemoteReader> {
        RemoteReader::start(remote, cache.as_ref(), Cache(None))
    }

    fn start(remote: RemoteLog, dir: &Path, cache: Cache) -> Result<RemoteReader> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for", dir, e))?;
        let mut replica = Replica::open(remote, dir)?;
        runtime.block_on(replica.sync_once())?;
        if replica.is_empty() {
            // No manifest, or only the one a writer takes the log with.
            return Err(replica.remote().error(
                "manifest/",
                "expected a manifest naming a segment, found none (nothing was shipped)",
            ));
        }
        let reader = Reader::open(dir)?;
        Ok(RemoteReader {
            replica: tokio::sync::Mutex::new(replica),
            reader,
            runtime,
            _cache: cache,
        })
    }

    /// Bring the local copy up to the newest manifest (blocking: from async
    /// code, use [`refresh_async`](RemoteReader::refresh_async)).
    pub fn refresh(&self) -> Result<ReplicaReport> {
        self.runtime.block_on(self.refresh_async())
    }

    /// [`refresh`](RemoteReader::refresh) as a future.
    pub async fn refresh_async(&self) -> Result<ReplicaReport> {
        self.replica.lock().await.sync_once().await
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
