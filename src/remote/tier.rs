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
//! (nor the views' cold front: the index files it keeps open, at most half
//! the budget) stay within the budget; a copy counts once, whatever
//! downloads raced for it, and one whose file is gone is downloaded again;
//! nothing is written or removed outside the cache directory, which is a
//! directory (a link under its name is refused, never followed), and only
//! names made here (never taken from the store) are removed.

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
                index_len: e.index.as_ref().map_or(0, |i| i.len),
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
    fn segments(&self) -> Option<Arc<[ColdSegment]>> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(lock(&self.sealed).0.clone())
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

    fn index_budget(&self) -> u64 {
        self.cache.budget / 2
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

// SAFETY: what `fetch` returns is a copy in the cache directory that the
// cache made itself (names from the base and the BLAKE3, never taken from
// the store), wrote whole under a temporary name and renamed into place,
// and never writes again; it removes the name only while no pin is held
// (and a removed name leaves an existing mapping intact): the `Fetch`
// contract, case 6 of the mmap module's argument.
unsafe impl Fetch for ObjectFetch {
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
    /// Bytes of the cached copies that views hold now, and the index
    /// files the views' cold front keeps open between views (at most half
    /// the budget): these are never removed, whatever the budget.
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
    ///
    /// `dir` must be a directory itself, never a symbolic link (nor
    /// anything else): a link is refused, not followed, so that no file
    /// outside the cache is ever removed or written. Of what the directory
    /// holds, only files named as this cache names its copies
    /// ([`is_copy_name`]) are removed.
    pub(crate) fn open(dir: &Path, budget: u64, temporary: bool) -> Result<SegmentCache> {
        let made = match real_directory(dir)? {
            true => false,
            false => match std::fs::create_dir(dir) {
                Ok(()) => true,
                // Made meanwhile (by another process): checked below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(Error::io("create directory", dir, e)),
            },
        };
        if !made && !real_directory(dir)? {
            return Err(not_a_cache_directory(dir, "it does not exist"));
        }
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let ours = entry.file_name().to_str().is_some_and(is_copy_name);
            // The entry's own type: a link named like a copy is not one.
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
    /// downloaded first if the cache does not hold it (or holds it no
    /// more: a copy whose file is gone is forgotten and downloaded again).
    fn fetch(&self, remote: &RemoteLog, s: &Shipped, base: u64, ext: &str) -> Result<Fetched> {
        let key = s.object.clone();
        let gate = {
            let mut inner = lock(&self.inner);
            if let Some(got) = self.cached(&mut inner, &key)? {
                return Ok(got);
            }
            inner.loading.entry(key.clone()).or_default().clone()
        };
        let _one = lock(&gate);
        if let Some(got) = self.cached(&mut lock(&self.inner), &key)? {
            return Ok(got);
        }
        let got = self.download_one(remote, s, self.path_for(base, s, ext));
        let mut inner = lock(&self.inner);
        inner.done_loading(&key, &gate, got.is_ok());
        let copy = Arc::new(Copy {
            path: got?,
            bytes: s.len,
        });
        inner.fetches += 1;
        inner.insert(key, copy.clone());
        inner.evict(self.budget);
        drop(inner);
        open_copy(&copy).map_err(|e| Error::io("open", &copy.path, e))
    }

    /// The copy of `key` if the cache holds it, opened and marked used;
    /// `None` if it holds none, or held one whose file is gone (removed by
    /// hand: the entry is forgotten, and the caller downloads it again).
    fn cached(&self, inner: &mut CacheInner, key: &str) -> Result<Option<Fetched>> {
        let Some(copy) = inner.touch(key) else {
            return Ok(None);
        };
        match open_copy(&copy) {
            Ok(got) => Ok(Some(got)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                inner.forget(key, &copy);
                Ok(None)
            }
            Err(e) => Err(Error::io("open", &copy.path, e)),
        }
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
    /// Hold `copy` as the copy of `key`, used now. A copy it replaces (two
    /// downloads of one object, after a failed one let a second caller in)
    /// no longer counts: its file is the same name, now the new copy's.
    fn insert(&mut self, key: String, copy: Arc<Copy>) {
        self.clock += 1;
        let used = self.clock;
        self.total += copy.bytes;
        if let Some(old) = self.held.insert(key, Held { copy, used }) {
            self.total -= old.copy.bytes;
        }
    }

    /// Forget the copy of `key` if it is still `copy` (its file is gone).
    fn forget(&mut self, key: &str, copy: &Arc<Copy>) {
        if self.held.get(key).is_some_and(|h| Arc::ptr_eq(&h.copy, copy))
            && let Some(h) = self.held.remove(key)
        {
            self.total -= h.copy.bytes;
        }
    }

    /// The download of `key` under `gate` (which the caller holds) ended:
    /// the gate is dropped if the copy is held now, or if no other caller
    /// waits on it (a waiter downloads next, under the same gate, so that
    /// callers arriving meanwhile wait too rather than download at once).
    fn done_loading(&mut self, key: &str, gate: &Arc<Mutex<()>>, ok: bool) {
        let ours = self.loading.get(key).is_some_and(|g| Arc::ptr_eq(g, gate));
        // Clones of a gate are made only under the cache's lock: the map's
        // and the caller's are the only ones when nobody waits.
        if ours && (ok || Arc::strong_count(gate) <= 2) {
            self.loading.remove(key);
        }
    }

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

/// Whether `dir` is a directory (`false`: nothing under that name), looked
/// at without following a link: a symbolic link, or anything else that is
/// not a directory, is an error naming it.
fn real_directory(dir: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => Err(not_a_cache_directory(
            dir,
            "it is a symbolic link, which annal does not follow (it would remove the copies it finds there): \
             make it a directory, or remove it",
        )),
        Ok(_) => Err(not_a_cache_directory(dir, "it is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", dir, e)),
    }
}

/// The error of a cache directory `dir` that cannot be used, and `why`.
fn not_a_cache_directory(dir: &Path, why: &str) -> Error {
    Error::io(
        "open the segment cache directory",
        dir,
        std::io::Error::other(format!("refused: {why}")),
    )
}

/// Whether `name` is one this cache gives its files ([`SegmentCache::path_for`]
/// and the temporary names of [`SegmentCache::download_one`]):
/// `<base>-<h>.seg`, `<base>-<h>.idx` and `<base>-<h>.tmp.<id>`, with
/// `<base>` 20 decimal digits, `<h>` 32 hex digits and `<id>` 16.
fn is_copy_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((base, rest)) = name.split_once('-') else {
        return false;
    };
    let Some((hash, ext)) = rest.split_at_checked(32) else {
        return false;
    };
    base.len() == 20
        && base.bytes().all(|b| b.is_ascii_digit())
        && hex(hash, 32)
        && (ext == ".seg" || ext == ".idx" || ext.strip_prefix(".tmp.").is_some_and(|id| hex(id, 16)))
}

/// Open the file of `copy`, pinned by it.
fn open_copy(copy: &Arc<Copy>) -> std::io::Result<Fetched> {
    let file = crate::storage::io::open_read(&copy.path)?;
    let path = copy.path.clone();
    let pin: Pin = copy.clone();
    Ok(Fetched { file, path, pin })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn copy_names_are_only_those_the_cache_gives() {
        let base = "00000000000000000042";
        for ours in [
            format!("{base}-{HASH}.seg"),
            format!("{base}-{HASH}.idx"),
            format!("{base}-{HASH}.tmp.0011223344556677"),
        ] {
            assert!(is_copy_name(&ours), "{ours}");
        }
        for theirs in [
            "00000000000000000042.seg".to_owned(),
            "00000000000000000042.idx".to_owned(),
            format!("{base}-{HASH}.segx"),
            format!("{base}-{HASH}0.seg"),
            format!("0042-{HASH}.seg"),
            format!("{base}-{HASH}.tmp.zz"),
            "annal.head".to_owned(),
            "notes.tmp.txt".to_owned(),
        ] {
            assert!(!is_copy_name(&theirs), "{theirs}");
        }
    }

    #[test]
    fn opening_a_cache_removes_only_its_own_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("annal.cache");
        std::fs::create_dir(&dir).unwrap();
        let copy = dir.join(format!("00000000000000000000-{HASH}.seg"));
        let temp = dir.join(format!("00000000000000000000-{HASH}.tmp.0011223344556677"));
        let other = dir.join("00000000000000000000.seg");
        for f in [&copy, &temp, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        SegmentCache::open(&dir, 1 << 20, false).unwrap();
        assert!(!copy.exists() && !temp.exists());
        assert!(other.exists(), "a file the cache does not name is left alone");
        // Missing: created (the parent must exist).
        let fresh = tmp.path().join("fresh");
        SegmentCache::open(&fresh, 1 << 20, false).unwrap();
        assert!(fresh.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_cache_directory_is_refused_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("other-log");
        std::fs::create_dir(&target).unwrap();
        let files = [
            target.join("00000000000000000000.seg"),
            target.join("00000000000000000000.idx"),
            target.join(format!("00000000000000000000-{HASH}.seg")),
        ];
        for f in &files {
            std::fs::write(f, b"precious").unwrap();
        }
        let link = tmp.path().join("annal.cache");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = SegmentCache::open(&link, 1 << 20, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("annal.cache") && msg.contains("symbolic link"), "{msg}");
        for f in &files {
            assert_eq!(std::fs::read(f).unwrap(), b"precious", "{}", f.display());
        }
        // A dangling link is refused as well (not created through).
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
        assert!(SegmentCache::open(&link, 1 << 20, false).is_err());
        assert!(!tmp.path().join("nowhere").exists());
        // So is a file.
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        assert!(SegmentCache::open(&file, 1 << 20, false).is_err());
    }

    /// A remote log in memory holding one object, and its manifest entry.
    fn one_object(bytes: &[u8]) -> (RemoteLog, Shipped) {
        use object_store::ObjectStore;
        let store = Arc::new(object_store::memory::InMemory::new());
        let remote = RemoteLog::from_store(store.clone(), "t", "memory://t");
        let object = "segments/00000000000000000000-x.seg".to_owned();
        let (path, payload) = (
            object_store::path::Path::from(format!("t/{object}")),
            bytes::Bytes::copy_from_slice(bytes),
        );
        remote
            .block(async move {
                store.put(&path, payload.into()).await.unwrap();
                Ok(())
            })
            .unwrap();
        let shipped = Shipped {
            object,
            len: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
        };
        (remote, shipped)
    }

    #[test]
    fn a_copy_whose_file_is_gone_is_downloaded_again_and_counted_once() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = SegmentCache::open(&tmp.path().join("c"), 1 << 20, false).unwrap();
        let (remote, s) = one_object(&[7u8; 1000]);
        let got = cache.fetch(&remote, &s, 0, "seg").unwrap();
        let path = got.path.clone();
        drop(got);
        assert_eq!(cache.stats().fetches, 1);
        // Removed by hand: the next fetch downloads it again, not an error
        // forever.
        std::fs::remove_file(&path).unwrap();
        let got = cache.fetch(&remote, &s, 0, "seg").unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), [7u8; 1000]);
        let stats = cache.stats();
        assert_eq!((stats.fetches, stats.objects, stats.bytes), (2, 1, 1000), "{stats:?}");
        // Held: another fetch opens the same copy.
        drop(got);
        cache.fetch(&remote, &s, 0, "seg").unwrap();
        assert_eq!(cache.stats().fetches, 2);
    }

    #[test]
    fn a_copy_held_twice_counts_once() {
        let mut inner = CacheInner::default();
        let copy = |n| {
            Arc::new(Copy {
                path: PathBuf::from("x"),
                bytes: n,
            })
        };
        inner.insert("a".into(), copy(100));
        // A second download of the same object (see `done_loading`).
        inner.insert("a".into(), copy(100));
        inner.insert("b".into(), copy(10));
        assert_eq!((inner.held.len(), inner.total), (2, 110));
        // Forgetting a copy that is no longer the one held does nothing.
        let stale = copy(100);
        inner.forget("a", &stale);
        assert_eq!(inner.total, 110);
        let held = inner.held["a"].copy.clone();
        inner.forget("a", &held);
        assert_eq!((inner.held.len(), inner.total), (1, 10));
    }

    #[test]
    fn a_failed_download_leaves_its_gate_to_the_callers_waiting_on_it() {
        let mut inner = CacheInner::default();
        let gate = inner.loading.entry("a".into()).or_default().clone();
        let waiter = gate.clone();
        inner.done_loading("a", &gate, false);
        assert!(
            inner.loading.get("a").is_some_and(|g| Arc::ptr_eq(g, &gate)),
            "a caller waits: it downloads next, under the same gate"
        );
        drop(waiter);
        inner.done_loading("a", &gate, false);
        assert!(!inner.loading.contains_key("a"), "nobody waits");
        // A download that succeeded drops its gate whoever waits (they find
        // the copy).
        let gate = inner.loading.entry("b".into()).or_default().clone();
        let _waiter = gate.clone();
        inner.done_loading("b", &gate, true);
        assert!(!inner.loading.contains_key("b"));
    }
}
