//! Snapshot files (spec section 20): one stream's serialized aggregate state
//! at one stream version, in `<log>/snapshots/`.
//!
//! A snapshot is derived data: everything in it can be rebuilt by replaying
//! the stream. Files are written through the I/O seam (temp file, fsync,
//! rename, directory fsync) and never rewritten in place. A file is named by
//! the stream's hash and the global position of the event it reflects, never
//! by the stream name; the full stream name stored inside is always compared,
//! so two streams whose names hash alike never see each other's state. Every
//! byte of a file is checked (CRC over the whole file except the CRC field,
//! fixed magic and version, must-be-zero fields, lengths that fill the file
//! exactly) before anything is returned; a file that fails a check is skipped
//! and reported, never an error that stops a load.
//!
//! A snapshot of a state that folded sealed events (spec 3.8) names their
//! subject keys (format version 2). Under erasure (spec 20.4 to 20.6): a
//! save never keeps a file that names an erased key (it looks before and
//! after writing, under the save lock), a load skips one, and
//! [`SnapshotStore::remove_erased`] removes every one, under the same lock.
//!
//! [`SnapshotHeader`] is the normative byte layout of spec 20.2.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use zerocopy::FromBytes;

use crate::error::{Error, Result};
use crate::format::hash::stream_hash;
use crate::format::sealed::KeyId;
pub use crate::format::snapshot::Snapshot;
pub(crate) use crate::format::snapshot::file_name;
use crate::format::snapshot::{SNAPSHOT_FORMAT_V2, check_header, parse_file_name, read_key_list};
pub(crate) use crate::format::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SnapshotHeader};
use crate::storage::io::{Io, read_exact_at};

/// Name of the folder, inside the log directory, that holds snapshot files.
pub(crate) use crate::format::names::SNAPSHOT_DIR;
/// Saves of every store in this process, one at a time: two saves of the
/// same snapshot share a temp file name, and pruning lists what saves write.
static SAVE_LOCK: Mutex<()> = Mutex::new(());

/// Encode `snap` as the bytes of its file (spec 20.2): the format layer's
/// encoder, its refusals as [`Error::InvalidArgument`].
pub(crate) fn encode(snap: &Snapshot) -> Result<Vec<u8>> {
    crate::format::snapshot::encode(snap).map_err(Error::InvalidArgument)
}

/// What reading one file of the folder gave.
enum Read {
    /// The file no longer exists (pruned by a concurrent save).
    Gone,
    /// The file and its checked content.
    Valid(Snapshot),
    /// The file's bytes fail a check; the second field says whether its
    /// magic is ours and its format version another (a newer annal wrote
    /// it: never removed by this build).
    Damaged(Error, bool),
    /// The file cannot be read.
    Unreadable(Error),
}

/// Read and check the snapshot file at `path`. Only the header is read
/// before the lengths it states are checked against the file's size, so no
/// content decides how much is allocated.
fn read_file(path: &Path) -> Read {
    let file = match crate::storage::io::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Read::Gone,
        Err(e) => return Read::Unreadable(Error::io("open", path, e)),
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Read::Unreadable(Error::io("read", path, io::Error::other("not a regular file"))),
        Err(e) => return Read::Unreadable(Error::io("stat", path, e)),
    };
    let mut head = [0u8; SNAPSHOT_HEADER_LEN];
    let n = len.min(SNAPSHOT_HEADER_LEN as u64) as usize;
    if let Err(e) = read_exact_at(&file, &mut head[..n], 0) {
        return Read::Unreadable(Error::io("read", path, e));
    }
    let foreign = is_foreign(&head[..n]);
    let bytes = if n < SNAPSHOT_HEADER_LEN {
        head[..n].to_vec()
    } else {
        if let Ok(h) = SnapshotHeader::ref_from_bytes(&head[..])
            && let Err(d) = check_header(h, len)
        {
            return Read::Damaged(d.at(path), foreign);
        }
        // check_header: len = 64 + stream_len (u16) + 8 * key_count + payload_len, the file's real size.
        let Ok(size) = usize::try_from(len) else {
            return Read::Unreadable(Error::io("read", path, io::Error::other("file too large for memory")));
        };
        let mut buf = vec![0u8; size];
        if let Err(e) = read_exact_at(&file, &mut buf, 0) {
            return Read::Unreadable(Error::io("read", path, e));
        }
        buf
    };
    match decode(path, &bytes) {
        Ok(s) => Read::Valid(s),
        Err(e) => Read::Damaged(e, foreign),
    }
}

/// Whether a file starting with `head` has our magic and a format version
/// this build does not know (a newer annal wrote it: never removed).
fn is_foreign(head: &[u8]) -> bool {
    let at = std::mem::offset_of!(SnapshotHeader, format_version);
    head.starts_with(&SNAPSHOT_MAGIC)
        && head
            .get(at..at + 2)
            .and_then(|v| <[u8; 2]>::try_from(v).ok())
            .map(u16::from_le_bytes)
            .is_some_and(|v| !(1..=SNAPSHOT_FORMAT_VERSION).contains(&v))
}

/// Whether a subject key is erased (asked of the log's key ring when called).
pub(crate) type Erased<'a> = &'a dyn Fn(KeyId) -> bool;

/// Whether the snapshot file at `path` must go after an erasure: a version
/// 2 file whose key list names a key `erased` says is erased, or whose
/// header or key list fails its checks (spec 20.6). Reads the header and
/// the key list only. Version 1 files, files of other versions and files
/// that are not ours are kept; a file gone meanwhile is not removed again.
fn names_erased_key(path: &Path, erased: Erased<'_>) -> Result<bool> {
    let file = match crate::storage::io::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Ok(false),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    let mut head = [0u8; SNAPSHOT_HEADER_LEN];
    let n = len.min(SNAPSHOT_HEADER_LEN as u64) as usize;
    read_exact_at(&file, &mut head[..n], 0).map_err(|e| Error::io("read", path, e))?;
    let Ok(h) = SnapshotHeader::ref_from_bytes(&head[..]) else {
        return Ok(false);
    };
    if h.magic != SNAPSHOT_MAGIC || h.format_version.get() != SNAPSHOT_FORMAT_V2 {
        return Ok(false);
    }
    if n < SNAPSHOT_HEADER_LEN || check_header(h, len).is_err() {
        return Ok(true);
    }
    // check_header: the key list lies within the file's real size; read in
    // bounded pieces.
    let mut names = false;
    let keys = read_key_list(
        h,
        1 << 20,
        |at, n, out| {
            let start = out.len();
            out.resize(start + usize::try_from(n).unwrap_or(0), 0);
            read_exact_at(&file, &mut out[start..], at).map_err(|e| Error::io("read", path, e))
        },
        |keys| names |= keys.iter().any(|&k| erased(k)),
    )?;
    Ok(names || keys.is_err())
}

/// The files named with one stream hash: (position, path) newest first, and
/// the leftover temp files.
type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// The snapshot files of one log: `<log>/snapshots/`.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    log_dir: PathBuf,
    dir: PathBuf,
    io: Arc<dyn Io>,
    /// The folder was created (if missing) and the log directory fsynced by
    /// this store.
    dir_ready: AtomicBool,
}

impl SnapshotStore {
    /// The snapshot store of the log in `log_dir`, writing through `io`.
    pub(crate) fn new(log_dir: &Path, io: Arc<dyn Io>) -> SnapshotStore {
        SnapshotStore {
            log_dir: log_dir.to_owned(),
            dir: log_dir.join(SNAPSHOT_DIR),
            io,
            dir_ready: AtomicBool::new(false),
        }
    }

    /// Write `snap` atomically (temp file, fsync, rename, directory fsync),
    /// then delete this stream's older snapshots beyond the newest `keep`
    /// (`keep >= 1`; the file just written is never deleted). Returns the
    /// path written.
    ///
    /// A snapshot that names a key `erased` says is erased is not written,
    /// and one whose key is erased while it is written is removed again
    /// (spec 20.4, 20.6): `Ok(None)`, and nothing is pruned. `erased` is
    /// asked under the lock that [`SnapshotStore::remove_erased`] holds, so
    /// an erasure either sees the file or the save sees the erasure.
    pub(crate) fn save(&self, snap: &Snapshot, keep: usize, erased: Erased<'_>) -> Result<Option<PathBuf>> {
        if keep == 0 {
            return Err(Error::InvalidArgument(
                "a snapshot save must keep at least 1 snapshot per stream".into(),
            ));
        }
        let bytes = encode(snap)?;
        let hash = stream_hash(snap.stream.as_bytes());
        let path = self.dir.join(file_name(hash, snap.position));
        let _span = crate::trace::span!(DEBUG, "annal.snapshot_save", file = %path.display(), stream = %snap.stream,
            version = snap.stream_version, bytes = bytes.len());
        let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if snap.subject_keys.iter().any(|&k| erased(k)) {
            return Ok(None);
        }
        self.ensure_dir()?;
        crate::storage::io::write_derived(&*self.io, &self.dir, &path, &bytes)?;
        if snap.subject_keys.iter().any(|&k| erased(k)) {
            self.remove(&path)?;
            self.sync_dir()?;
            return Ok(None);
        }
        self.prune(snap, hash, &path, keep)?;
        Ok(Some(path))
    }

    /// Remove every snapshot file that names a key `erased` says is erased,
    /// reading only headers and key lists (never a payload); also damaged
    /// version 2 files (their key list cannot be trusted) and leftover temp
    /// files of saves (they may hold any state). Then fsync the folder.
    /// Holds the save lock throughout, so no save of this process writes
    /// between the scan and the removals (spec 20.6). Returns the removed
    /// paths. A folder that is missing, or not a real directory (never
    /// written through), has nothing to remove.
    pub(crate) fn remove_erased(&self, erased: Erased<'_>) -> Result<Vec<PathBuf>> {
        let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(self.checked_dir(), Ok(true)) {
            return Ok(Vec::new());
        }
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        // A file that cannot be read does not stop the others' removal:
        // the first error is returned after them.
        let (mut doomed, mut failed) = (Vec::new(), None);
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let temp = name.strip_suffix(".tmp").and_then(parse_file_name).is_some();
            let named = !temp
                && parse_file_name(name).is_some()
                && names_erased_key(&path, erased).unwrap_or_else(|e| {
                    failed.get_or_insert(e);
                    false
                });
            if temp || named {
                doomed.push(path);
            }
        }
        for path in &doomed {
            if let Err(e) = self.remove(path) {
                failed.get_or_insert(e);
            }
        }
        if !doomed.is_empty() {
            self.sync_dir()?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(doomed),
        }
    }

    /// Remove `path` through the seam; a file already gone is fine.
    fn remove(&self, path: &Path) -> Result<()> {
        match self.io.remove(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// Make removals from the folder durable.
    fn sync_dir(&self) -> Result<()> {
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Whether the folder exists, as a real directory: a symlink (or any
    /// other file) named `snapshots` is an error, so that nothing is ever
    /// read, written or deleted through it, outside the log directory.
    /// Checked before every save, load and prune.
    fn checked_dir(&self) -> Result<bool> {
        match std::fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(m) => Err(Error::io(
                "use snapshot folder",
                &self.dir,
                io::Error::other(format!(
                    "expected a directory, found {}; annal never follows a symlink out of the log directory",
                    crate::storage::io::file_kind(&m.file_type())
                )),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &self.dir, e)),
        }
    }

    /// Create the folder (once per store) and make its entry durable; check
    /// at every call that it is a real directory.
    fn ensure_dir(&self) -> Result<()> {
        if self.dir_ready.load(Ordering::Acquire) {
            self.checked_dir()?;
            return Ok(());
        }
        // Never create (or write) through a symlinked folder: checked before
        // `create_dir`, which would accept a symlink to a directory.
        if !self.checked_dir()? {
            self.io
                .create_dir(&self.dir)
                .map_err(|e| Error::io("create directory", &self.dir, e))?;
            self.checked_dir()?;
        }
        self.io
            .sync_dir(&self.log_dir)
            .map_err(|e| Error::io("fsync directory", &self.log_dir, e))?;
        self.dir_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The files named with `hash`, newest position first, and the leftover
    /// temp files named with it.
    fn list(&self, hash: u64) -> Result<Listing> {
        if !self.checked_dir()? {
            return Ok((Vec::new(), Vec::new()));
        }
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let (mut files, mut temps) = (Vec::new(), Vec::new());
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((h, pos)) = parse_file_name(name) {
                if h == hash {
                    files.push((pos, entry.path()));
                }
            } else if let Some((h, _)) = name.strip_suffix(".tmp").and_then(parse_file_name)
                && h == hash
            {
                temps.push(entry.path());
            }
        }
        files.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        Ok((files, temps))
    }

    /// After writing `written`: delete this stream's snapshots beyond the
    /// newest `keep` (never `written`), damaged files named with its hash, and
    /// leftover temp files named with its hash (spec 20.4).
    fn prune(&self, snap: &Snapshot, hash: u64, written: &Path, keep: usize) -> Result<()> {
        let (files, temps) = self.list(hash)?;
        let mut ours: Vec<(u64, u64, PathBuf)> = Vec::new();
        let mut doomed: Vec<PathBuf> = temps;
        for (_, path) in files {
            match read_file(&path) {
                Read::Valid(s) if s.stream == snap.stream => ours.push((s.stream_version, s.position, path)),
                Read::Damaged(_, false) => doomed.push(path),
                Read::Valid(_) | Read::Damaged(_, true) | Read::Gone | Read::Unreadable(_) => {}
            }
        }
        ours.sort_unstable_by_key(|o| std::cmp::Reverse((o.0, o.1)));
        doomed.extend(ours.into_iter().skip(keep).map(|(_, _, p)| p));
        for path in doomed.iter().filter(|p| p.as_path() != written) {
            self.remove(path)?;
        }
        Ok(())
    }

    /// The newest valid snapshot of `stream` with this schema version and
    /// `stream_version <= max_version` (`None`: any version). Corrupt files,
    /// files of other streams with the same hash, and schema mismatches are
    /// skipped; each skipped file of this stream (or unreadable one) is
    /// reported as a warning naming the file and what was wrong. So is a
    /// file that names a key `erased` says is erased: it is superseded by
    /// that erasure (spec 20.5). Traced as span `annal.snapshot_load`, each
    /// skip a `warn` event.
    pub(crate) fn load(
        &self,
        stream: &str,
        schema_version: u32,
        max_version: Option<u64>,
        erased: Erased<'_>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        let _span = crate::trace::span!(DEBUG, "annal.snapshot_load", dir = %self.dir.display(), stream,
            schema_version, version = crate::trace::Empty, bytes = crate::trace::Empty);
        let found = self.find(stream, schema_version, max_version, erased)?;
        crate::trace::when! {
            if let (Some(s), _) = &found {
                crate::trace::record!(_span, version = s.stream_version, bytes = s.payload.len());
            }
            for w in &found.1 {
                crate::trace::event!(WARN, dir = %self.dir.display(), stream, why = %w, "annal skipped a snapshot");
            }
        }
        Ok(found)
    }

    /// [`SnapshotStore::load`], untraced.
    fn find(
        &self,
        stream: &str,
        schema_version: u32,
        max_version: Option<u64>,
        erased: Erased<'_>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        // A symlinked folder is never read through: no snapshot, a warning,
        // and the aggregate is rebuilt from its events.
        if let Err(e) = self.checked_dir() {
            return Ok((None, vec![format!("skipped snapshots: {e}")]));
        }
        let (files, _) = self.list(stream_hash(stream.as_bytes()))?;
        let mut warnings = Vec::new();
        for (_, path) in files {
            match read_file(&path) {
                Read::Valid(s) if s.stream != stream => {}
                Read::Valid(s) if max_version.is_some_and(|m| s.stream_version > m) => {}
                Read::Valid(s) if s.schema_version != schema_version => warnings.push(format!(
                    "skipped snapshot {} of stream {stream:?} at version {}: schema version {}, expected {schema_version}",
                    path.display(),
                    s.stream_version,
                    s.schema_version
                )),
                Read::Valid(s) => match s.subject_keys.iter().find(|&&k| erased(k)) {
                    Some(k) => warnings.push(format!(
                        "skipped snapshot {} of stream {stream:?} at version {}: superseded by the erasure of key {}",
                        path.display(),
                        s.stream_version,
                        k.0
                    )),
                    None => return Ok((Some(s), warnings)),
                },
                Read::Gone => {}
                Read::Damaged(e, _) | Read::Unreadable(e) => warnings.push(format!("skipped snapshot: {e}")),
            }
        }
        Ok((None, warnings))
    }
}

/// [`crate::format::snapshot::decode`] with the file's path attached to its
/// errors ([`Error::Corrupt`]).
fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
    crate::format::snapshot::decode(path.file_name().and_then(|n| n.to_str()), bytes).map_err(|d| d.at(path))
}

/// Thin public wrappers over the crate-private snapshot store, for the
/// integration tests (`tests/snapshot_files.rs`) and fuzzing only. Not part
/// of annal's API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::{Snapshot, SnapshotStore};
    use crate::error::Result;
    use crate::storage::io::{Io, StdIo};

    /// Name of the snapshot folder inside a log directory.
    pub const SNAPSHOT_DIR: &str = super::SNAPSHOT_DIR;

    /// `SnapshotStore::save` on the log in `dir`.
    pub fn save(dir: &Path, io: Arc<dyn Io>, snap: &Snapshot, keep: usize) -> Result<PathBuf> {
        let saved = SnapshotStore::new(dir, io).save(snap, keep, &|_| false)?;
        Ok(saved.unwrap_or_default())
    }

    /// `SnapshotStore::load` on the log in `dir`.
    pub fn load(
        dir: &Path,
        stream: &str,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        SnapshotStore::new(dir, Arc::new(StdIo)).load(stream, schema_version, max_version, &|_| false)
    }

    /// `SnapshotStore::save` on the log in `dir`, asking `erased` whether a
    /// key is erased (before and after writing): the path written, `None`
    /// if the snapshot names an erased key and is not kept.
    pub fn save_with(
        dir: &Path,
        io: Arc<dyn Io>,
        snap: &Snapshot,
        keep: usize,
        erased: &dyn Fn(crate::KeyId) -> bool,
    ) -> Result<Option<PathBuf>> {
        SnapshotStore::new(dir, io).save(snap, keep, erased)
    }

    /// `SnapshotStore::load` on the log in `dir`, with the keys `erased`
    /// erased.
    pub fn load_erased(
        dir: &Path,
        stream: &str,
        schema_version: u32,
        erased: &[crate::KeyId],
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        SnapshotStore::new(dir, Arc::new(StdIo)).load(stream, schema_version, None, &|k| erased.contains(&k))
    }

    /// `SnapshotStore::remove_erased` on the log in `dir`, with the keys
    /// `erased` erased: the removed paths.
    pub fn remove_erased(dir: &Path, io: Arc<dyn Io>, erased: &[crate::KeyId]) -> Result<Vec<PathBuf>> {
        SnapshotStore::new(dir, io).remove_erased(&|k| erased.contains(&k))
    }

    /// `SnapshotStore::decode`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
        super::decode(path, bytes)
    }

    /// The bytes `save` writes for `snap`.
    pub fn encode(snap: &Snapshot) -> Result<Vec<u8>> {
        super::encode(snap)
    }

    /// The file name of the snapshot of `stream` at global position `position`.
    pub fn file_name(stream: &str, position: u64) -> String {
        super::file_name(crate::format::hash::stream_hash(stream.as_bytes()), position)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use crate::format::snapshot::parse;

    use super::*;

    /// The offsets of spec 20.2's table, written out by hand.
    #[test]
    fn offsets_match_the_spec_table() {
        assert_eq!(offset_of!(SnapshotHeader, magic), 0);
        assert_eq!(offset_of!(SnapshotHeader, format_version), 8);
        assert_eq!(offset_of!(SnapshotHeader, flags), 10);
        assert_eq!(offset_of!(SnapshotHeader, stream_len), 12);
        assert_eq!(offset_of!(SnapshotHeader, reserved0), 14);
        assert_eq!(offset_of!(SnapshotHeader, stream_version), 16);
        assert_eq!(offset_of!(SnapshotHeader, position), 24);
        assert_eq!(offset_of!(SnapshotHeader, schema_version), 32);
        assert_eq!(offset_of!(SnapshotHeader, key_count), 36);
        assert_eq!(offset_of!(SnapshotHeader, payload_len), 40);
        assert_eq!(offset_of!(SnapshotHeader, reserved2), 48);
        assert_eq!(offset_of!(SnapshotHeader, crc), 60);
        assert_eq!(SNAPSHOT_HEADER_LEN, 64);
    }

    #[test]
    fn file_names_round_trip() {
        let name = file_name(0xaf63_dc4c_8601_ec8c, 81920);
        assert_eq!(name, "af63dc4c8601ec8c-00000000000000081920.snap");
        assert_eq!(parse_file_name(&name), Some((0xaf63_dc4c_8601_ec8c, 81920)));
        assert_eq!(parse_file_name(&format!("{name}.tmp")), None);
        assert_eq!(parse_file_name("AF63DC4C8601EC8C-00000000000000081920.snap"), None);
        assert_eq!(parse_file_name("af63dc4c8601ec8c-0000000000000081920.snap"), None);
        assert_eq!(parse_file_name("af63dc4c8601ec8c-99999999999999999999.snap"), None);
        assert_eq!(parse_file_name("af63dc4c8601ec8c+00000000000000081920.snap"), None);
    }

    #[test]
    fn encode_then_parse() {
        let s = Snapshot {
            stream: "order-42".into(),
            stream_version: 2,
            position: 7,
            schema_version: 3,
            payload: vec![1, 2, 3],
            subject_keys: Vec::new(),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes.len(), 64 + 8 + 3);
        assert_eq!(bytes[8], 1, "no keys: version 1");
        assert_eq!(parse(&bytes).unwrap(), s);
        let keyed = Snapshot {
            subject_keys: vec![KeyId(2), KeyId(9)],
            ..s.clone()
        };
        let bytes = encode(&keyed).unwrap();
        assert_eq!(bytes.len(), 64 + 8 + 16 + 3);
        assert_eq!((bytes[8], bytes[36]), (2, 2), "keys: version 2, key_count 2");
        assert_eq!(&bytes[72..88], &[2, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&bytes).unwrap(), keyed);
        for bad in [vec![KeyId(0)], vec![KeyId(3), KeyId(3)], vec![KeyId(4), KeyId(2)]] {
            let bad = Snapshot {
                subject_keys: bad,
                ..s.clone()
            };
            assert!(matches!(encode(&bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        let empty = Snapshot {
            stream: String::new(),
            ..s.clone()
        };
        assert!(matches!(encode(&empty), Err(Error::InvalidArgument(_))));
        let long = Snapshot {
            stream: "x".repeat(65_536),
            ..s
        };
        assert!(matches!(encode(&long), Err(Error::InvalidArgument(_))));
    }
}
