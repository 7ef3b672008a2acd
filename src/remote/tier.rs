//! The store as a cold tier (spec 23.7): a remote log's sealed segments read
//! in place by views, through ranged reads (each segment's header and seal,
//! when a view first opens it) and a bounded local cache (the whole segment
//! and its index file, fetched when a view first reads it).
//!
//! Invariants: a cached copy is the object the manifest names, checked
//! against its length and BLAKE3 before it is named; it is written whole
//! under a temporary name, renamed into place, and never written again; the
//! cache removes a copy only while no mapping holds it (least recently used
//! first, once the copies exceed the budget), so the copies no view holds
//! stay within the budget; nothing is written outside the cache directory,
//! whose names are made here (never taken from the store).

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::read::cold::{ColdSegment, ColdTier};
use crate::storage::mmap::{Fetch, Fetched, Pin};

use super::RemoteLog;
use super::manifest::{SealedEntry, Shipped};

/// The default budget of a remote reader's segment cache: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// How many ranged reads run at once.
const RANGE_READS_AT_ONCE: usize = 16;

/// The sealed segments of a remote log, as a [`ColdTier`].
#[derive(Debug)]
pub(crate) struct RemoteTier {
    remote: RemoteLog,
    cache: Arc<SegmentCache>,
    /// The sealed segments of the newest manifest taken, as segments and as
    /// the manifest's entries (by object name).
    sealed: Mutex<Sealed>,
    /// Whether `sealed` was set (else the first use reads the newest
    /// manifest).
    loaded: std::sync::atomic::AtomicBool,
}

/// The sealed segments a tier holds: in log order, and the manifest's
/// entries by object name.
type Sealed = (Arc<[ColdSegment]>, Arc<HashMap<PathBuf, SealedEntry>>);

impl RemoteTier {
    /// A tier over `remote`'s sealed segments, caching them in `cache`.
    pub(crate) fn new(remote: RemoteLog, cache: Arc<SegmentCache>) -> RemoteTier {
        RemoteTier {
            remote,
            cache,
            sealed: Mutex::new((Arc::from(Vec::new()), Arc::new(HashMap::new()))),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Hold the sealed segments `sealed` (a manifest's) from now on.
    pub(crate) fn set_sealed(&self, sealed: &[SealedEntry]) {
        let mut segs = Vec::with_capacity(sealed.len());
        let mut by_name = HashMap::with_capacity(sealed.len());
        for e in sealed {
            let name = self.name_of(&e.segment);
            segs.push(ColdSegment {
                base: e.base,
                len: e.segment.len,
                name: name.clone(),
                index: e.index.as_ref().map(|i| self.name_of(i)),
            });
            by_name.insert(name, e.clone());
        }
        *lock(&self.sealed) = (Arc::from(segs), Arc::new(by_name));
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The name of `s` in messages: the remote log's URL and the object.
    fn name_of(&self, s: &Shipped) -> PathBuf {
        PathBuf::from(format!("{}/{}", self.remote.url().trim_end_matches('/'), s.object))
    }

    /// What fetches the object `s` of the segment based at `base` (its
    /// file or its index file, `ext`).
    fn fetch_of(&self, base: u64, s: Option<&Shipped>, name: &Path, ext: &'static str) -> Arc<dyn Fetch> {
        Arc::new(ObjectFetch {
            remote: self.remote.clone(),
            cache: self.cache.clone(),
            object: s.cloned(),
            base,
            ext,
            name: name.to_owned(),
        })
    }

    /// The manifest's entry of `seg`.
    fn entry(&self, seg: &ColdSegment) -> Result<SealedEntry> {
        lock(&self.sealed)
            .1
            .get(&seg.name)
            .cloned()
            .ok_or_else(|| Error::Remote {
                object: seg.name.display().to_string(),
                detail: "expected a segment of the newest manifest, found one it no longer names".into(),
            })
    }

    /// The cache.
    pub(crate) fn cache(&self) -> &Arc<SegmentCache> {
        &self.cache
    }
}

impl ColdTier for RemoteTier {
    fn segments(&self) -> Result<Arc<[ColdSegment]>> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            self.refresh()?;
        }
        Ok(lock(&self.sealed).0.clone())
    }

    fn refresh(&self) -> Result<()> {
        let remote = self.remote.clone();
        let newest = self.remote.block(async move { remote.latest_manifest().await })?;
        self.set_sealed(newest.as_ref().map_or(&[], |m| &m.sealed));
        Ok(())
    }

    fn read_ranges(&self, asks: &[(ColdSegment, Range<u64>)]) -> Result<Vec<Vec<u8>>> {
        let mut jobs = Vec::with_capacity(asks.len());
        for (seg, range) in asks {
            jobs.push((self.entry(seg)?.segment.object, range.clone()));
        }
        let remote = self.remote.clone();
        remote.clone().block(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(RANGE_READS_AT_ONCE));
            let mut set = tokio::task::JoinSet::new();
            for (i, (object, range)) in jobs.into_iter().enumerate() {
                let (remote, limit) = (remote.clone(), limit.clone());
                set.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    (i, remote.get_range(&object, range).await)
                });
            }
            let mut out = vec![Vec::new(); set.len()];
            while let Some(done) = set.join_next().await {
                let (i, got) = done.map_err(|e| remote.error("", format!("a ranged read failed: {e}")))?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = got?;
                }
            }
            Ok(out)
        })
    }

    fn fetcher(&self, seg: &ColdSegment) -> Arc<dyn Fetch> {
        let entry = self.entry(seg).ok();
        self.fetch_of(seg.base, entry.as_ref().map(|e| &e.segment), &seg.name, "seg")
    }

    fn index_fetcher(&self, seg: &ColdSegment) -> Option<Arc<dyn Fetch>> {
        let entry = self.entry(seg).ok()?;
        let index = entry.index.as_ref()?;
        Some(self.fetch_of(seg.base, Some(index), &self.name_of(index), "idx"))
    }
}

/// Fetches one object (a sealed segment or its index file) into the cache.
#[derive(Debug)]
struct ObjectFetch {
    remote: RemoteLog,
    cache: Arc<SegmentCache>,
    /// `None`: the manifest no longer named it when the view opened it.
    object: Option<Shipped>,
    base: u64,
    ext: &'static str,
    name: PathBuf,
}

impl Fetch for ObjectFetch {
    fn fetch(&self) -> Result<Fetched> {
        let Some(object) = &self.object else {
            return Err(Error::Remote {
                object: self.name.display().to_string(),
                detail: "expected an object of the manifest, found one it no longer names".into(),
            });
        };
        self.cache.fetch(&self.remote, object, self.base, self.ext)
    }
}

/// A bounded local cache of whole sealed segments (and their index files).
#[derive(Debug)]
pub(crate) struct SegmentCache {
    dir: PathBuf,
    budget: u64,
    inner: Mutex<CacheInner>,
    /// Whether the directory is removed when the cache is dropped.
    temporary: bool,
}

impl Drop for SegmentCache {
    fn drop(&mut self) {
        if self.temporary {
            // Never follows a link out of the directory (std's
            // remove_dir_all removes links, not what they point to).
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug, Default)]
struct CacheInner {
    /// The copies, by object.
    held: HashMap<String, Held>,
    /// Bytes of all copies.
    total: u64,
    /// A counter ordering uses.
    clock: u64,
    /// Downloads under way, by object (one per object at a time).
    loading: HashMap<String, Arc<Mutex<()>>>,
    /// Downloads made (for tests and reports).
    fetches: u64,
}

#[derive(Debug)]
struct Held {
    copy: Arc<Copy>,
    used: u64,
}

/// One cached object: its file and its size.
#[derive(Debug)]
struct Copy {
    path: PathBuf,
    bytes: u64,
}

/// What a [`SegmentCache`] holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Objects cached (sealed segments and index files).
    pub objects: usize,
    /// Bytes of the cached objects.
    pub bytes: u64,
    /// Bytes of the cached copies that views hold now (these are never
    /// removed, whatever the budget).
    pub held_bytes: u64,
    /// Objects downloaded since the cache was made.
    pub fetches: u64,
    /// The budget: copies no view holds are removed beyond it.
    pub budget: u64,
}

impl SegmentCache {
    /// A cache in `dir` (created if missing; copies a former cache left
    /// there are removed) holding at most `budget` bytes of copies that no
    /// view holds; a `temporary` one removes `dir` when dropped.
    pub(crate) fn open(dir: &Path, budget: u64, temporary: bool) -> Result<SegmentCache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let name = entry.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| n.ends_with(".seg") || n.ends_with(".idx") || n.contains(".tmp."));
            let file = entry.file_type().is_ok_and(|t| t.is_file());
            if ours && file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(SegmentCache {
            dir: dir.to_owned(),
            budget,
            inner: Mutex::new(CacheInner::default()),
            temporary,
        })
    }

    /// Remove the least recently used copies that no view holds, while the
    /// copies exceed the budget (views let go of copies when dropped).
    pub(crate) fn trim(&self) {
        lock(&self.inner).evict(self.budget);
    }

    /// What the cache holds now.
    pub(crate) fn stats(&self) -> CacheStats {
        let inner = lock(&self.inner);
        CacheStats {
            objects: inner.held.len(),
            bytes: inner.total,
            held_bytes: inner
                .held
                .values()
                .filter(|h| Arc::strong_count(&h.copy) > 1)
                .map(|h| h.copy.bytes)
                .sum(),
            fetches: inner.fetches,
            budget: self.budget,
        }
    }

    /// The path of the copy of `s`, the file of the segment based at
    /// `base` with extension `ext`: made from the base and the object's
    /// BLAKE3 (hex digits only), never from a name the store gave.
    fn path_for(&self, base: u64, s: &Shipped, ext: &str) -> PathBuf {
        let hash: String = s.blake3.chars().filter(char::is_ascii_hexdigit).take(32).collect();
        self.dir.join(format!("{base:020}-{hash}.{ext}"))
    }

    /// The copy of `s` (the file `ext` of the segment based at `base`),
    /// downloaded first if the cache does not hold it.
    fn fetch(&self, remote: &RemoteLog, s: &Shipped, base: u64, ext: &str) -> Result<Fetched> {
        let key = s.object.clone();
        let gate = {
            let mut inner = lock(&self.inner);
            if let Some(copy) = inner.touch(&key) {
                drop(inner);
                return open_copy(copy);
            }
            inner.loading.entry(key.clone()).or_default().clone()
        };
        let _one = lock(&gate);
        if let Some(copy) = lock(&self.inner).touch(&key) {
            return open_copy(copy);
        }
        let got = self.download_one(remote, s, self.path_for(base, s, ext));
        let mut inner = lock(&self.inner);
        inner.loading.remove(&key);
        let copy = Arc::new(Copy {
            path: got?,
            bytes: s.len,
        });
        inner.total += copy.bytes;
        inner.fetches += 1;
        inner.clock += 1;
        let used = inner.clock;
        inner.held.insert(
            key,
            Held {
                copy: copy.clone(),
                used,
            },
        );
        inner.evict(self.budget);
        drop(inner);
        open_copy(copy)
    }

    /// Download `s` to `path`: a temporary file checked against the
    /// manifest as it streams in, renamed into place.
    fn download_one(&self, remote: &RemoteLog, s: &Shipped, path: PathBuf) -> Result<PathBuf> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::io("draw a name for", &path, std::io::Error::other(e)))?;
        let tmp = path.with_extension(format!("tmp.{}", crate::audit::chain::hex(&id)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let (r, s2, t2) = (remote.clone(), s.clone(), tmp.clone());
        let done = remote.block(async move {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            r.download(&s2, |chunk| {
                out.write_all(chunk).map_err(|e| Error::io("write", &t2, e))
            })
            .await?;
            out.flush().map_err(|e| Error::io("write", &t2, e))
        });
        let done = done.and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e)));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map(|()| path)
    }
}

impl CacheInner {
    /// The copy of `key`, marked used now.
    fn touch(&mut self, key: &str) -> Option<Arc<Copy>> {
        self.clock += 1;
        let now = self.clock;
        let h = self.held.get_mut(key)?;
        h.used = now;
        Some(h.copy.clone())
    }

    /// Remove the least recently used copies that no view holds while the
    /// copies exceed `budget`.
    fn evict(&mut self, budget: u64) {
        if self.total <= budget {
            return;
        }
        let mut free: Vec<(u64, String)> = self
            .held
            .iter()
            .filter(|(_, h)| Arc::strong_count(&h.copy) == 1)
            .map(|(k, h)| (h.used, k.clone()))
            .collect();
        free.sort_unstable();
        for (_, key) in free {
            if self.total <= budget {
                break;
            }
            if let Some(h) = self.held.remove(&key) {
                self.total -= h.copy.bytes;
                let _ = std::fs::remove_file(&h.copy.path);
            }
        }
    }
}

/// Open the segment file of `copy`, pinned by it.
fn open_copy(copy: Arc<Copy>) -> Result<Fetched> {
    let file = crate::storage::io::open_read(&copy.path).map_err(|e| Error::io("open", &copy.path, e))?;
    let path = copy.path.clone();
    let pin: Pin = copy;
    Ok(Fetched { file, path, pin })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
