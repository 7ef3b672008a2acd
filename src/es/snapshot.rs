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
//! [`SnapshotHeader`] is the normative byte layout of spec 20.2.

use std::io;
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Damage, Error, Result};
use crate::format::hash::stream_hash;
use crate::format::{SNAPSHOT_CRC_OFFSET, SNAPSHOT_LENGTH_OFFSET as LENGTH_OFFSET};
pub(crate) use crate::format::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SnapshotHeader};
use crate::storage::io::{Io, read_exact_at};

/// One stream's state at a version: the payload is the aggregate's state,
/// serialized by the caller (the typed layer uses postcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The full stream name (1 to 65,535 bytes of UTF-8).
    pub stream: String,
    /// The version of the last event of the stream reflected in the state.
    pub stream_version: u64,
    /// The global position of that event (the event at `stream_version`).
    pub position: u64,
    /// The version of the aggregate's snapshot schema, chosen by the
    /// application; a load asks for one schema version and skips the others.
    pub schema_version: u32,
    /// The serialized state (opaque to annal).
    pub payload: Vec<u8>,
}

/// Name of the folder, inside the log directory, that holds snapshot files.
pub(crate) use crate::format::names::SNAPSHOT_DIR;
/// Extension of snapshot file names.
const SNAPSHOT_EXT: &str = ".snap";

/// Saves of every store in this process, one at a time: two saves of the
/// same snapshot share a temp file name, and pruning lists what saves write.
static SAVE_LOCK: Mutex<()> = Mutex::new(());

/// The CRC of a snapshot file: CRC-32 of every byte except the CRC field.
/// `bytes` is at least [`SNAPSHOT_HEADER_LEN`] long.
fn file_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..SNAPSHOT_CRC_OFFSET]);
    h.update(&bytes[SNAPSHOT_HEADER_LEN..]);
    h.finalize()
}

/// The file name of the snapshot of the stream with hash `hash` at global
/// position `position` (spec 20.1).
pub(crate) fn file_name(hash: u64, position: u64) -> String {
    format!("{hash:016x}-{position:020}{SNAPSHOT_EXT}")
}

/// Parse a snapshot file name into (stream hash, position); `None` for any
/// other name (temp files included).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_EXT)?;
    let (hash, pos) = stem.split_once('-')?;
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hash.len() != 16 || !hash.bytes().all(hex) || pos.len() != 20 || !pos.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((u64::from_str_radix(hash, 16).ok()?, pos.parse().ok()?))
}

/// Encode `snap` as the bytes of its file (spec 20.2).
pub(crate) fn encode(snap: &Snapshot) -> Result<Vec<u8>> {
    let stream_len = u16::try_from(snap.stream.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a snapshot's stream name must be 1 to 65535 bytes, found {} bytes",
                snap.stream.len()
            ))
        })?;
    let header = SnapshotHeader {
        magic: SNAPSHOT_MAGIC,
        format_version: U16::new(SNAPSHOT_FORMAT_VERSION),
        flags: U16::ZERO,
        stream_len: U16::new(stream_len),
        reserved0: U16::ZERO,
        stream_version: U64::new(snap.stream_version),
        position: U64::new(snap.position),
        schema_version: U32::new(snap.schema_version),
        reserved1: U32::ZERO,
        payload_len: U64::new(snap.payload.len() as u64),
        reserved2: [0; 12],
        crc: U32::ZERO,
    };
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_LEN + snap.stream.len() + snap.payload.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(snap.stream.as_bytes());
    bytes.extend_from_slice(&snap.payload);
    let crc = file_crc(&bytes);
    bytes[SNAPSHOT_CRC_OFFSET..SNAPSHOT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// The checks of spec 20.3 that need only the header and the file length:
/// magic, format version, and lengths that fill the file exactly.
fn check_header(h: &SnapshotHeader, file_len: u64) -> Result<(), Damage> {
    if h.magic != SNAPSHOT_MAGIC {
        return Err(Damage::corrupt(
            0,
            format!("expected snapshot magic \"ANNALSNP\", found {:02x?}", h.magic),
        ));
    }
    let version = h.format_version.get();
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(Damage::corrupt(
            offset_of!(SnapshotHeader, format_version) as u64,
            format!(
                "snapshot format version {version} is not supported (this build reads version {SNAPSHOT_FORMAT_VERSION})"
            ),
        ));
    }
    let (stream_len, payload_len) = (h.stream_len.get(), h.payload_len.get());
    let want = (SNAPSHOT_HEADER_LEN as u64 + stream_len as u64).checked_add(payload_len);
    if want != Some(file_len) {
        return Err(Damage::corrupt(
            LENGTH_OFFSET,
            format!(
                "expected the file to be {SNAPSHOT_HEADER_LEN} + stream_len ({stream_len}) + payload_len \
                 ({payload_len}) bytes long, found {file_len} bytes"
            ),
        ));
    }
    Ok(())
}

/// Parse and check a whole snapshot file (spec 20.3), in the order stated there.
fn parse(bytes: &[u8]) -> Result<Snapshot, Damage> {
    let Ok((h, _)) = SnapshotHeader::ref_from_prefix(bytes) else {
        return Err(Damage::corrupt(
            0,
            format!(
                "expected a {SNAPSHOT_HEADER_LEN}-byte snapshot header, found a file of {} bytes",
                bytes.len()
            ),
        ));
    };
    check_header(h, bytes.len() as u64)?;
    let want = file_crc(bytes);
    if h.crc.get() != want {
        return Err(Damage::corrupt(
            SNAPSHOT_CRC_OFFSET as u64,
            format!(
                "snapshot CRC mismatch: expected {want:#010x}, found {:#010x}",
                h.crc.get()
            ),
        ));
    }
    for (name, off, zero) in [
        ("flags", offset_of!(SnapshotHeader, flags), h.flags.get() == 0),
        (
            "reserved0",
            offset_of!(SnapshotHeader, reserved0),
            h.reserved0.get() == 0,
        ),
        (
            "reserved1",
            offset_of!(SnapshotHeader, reserved1),
            h.reserved1.get() == 0,
        ),
        (
            "reserved2",
            offset_of!(SnapshotHeader, reserved2),
            h.reserved2.iter().all(|&b| b == 0),
        ),
    ] {
        if !zero {
            return Err(Damage::corrupt(
                off as u64,
                format!("expected snapshot header field {name} to be zero"),
            ));
        }
    }
    // check_header proved 64 + stream_len + payload_len == bytes.len().
    let body = &bytes[SNAPSHOT_HEADER_LEN..];
    let (stream, payload) = body.split_at(h.stream_len.get() as usize);
    if stream.is_empty() {
        return Err(Damage::corrupt(
            LENGTH_OFFSET,
            "expected a stream name of at least 1 byte, found stream_len 0",
        ));
    }
    let stream = std::str::from_utf8(stream).map_err(|e| {
        Damage::corrupt(
            (SNAPSHOT_HEADER_LEN + e.valid_up_to()) as u64,
            "expected the stream name to be valid UTF-8",
        )
    })?;
    Ok(Snapshot {
        stream: stream.to_owned(),
        stream_version: h.stream_version.get(),
        position: h.position.get(),
        schema_version: h.schema_version.get(),
        payload: payload.to_vec(),
    })
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
    let foreign = n >= 10 && head[..8] == SNAPSHOT_MAGIC && head[8..10] != SNAPSHOT_FORMAT_VERSION.to_le_bytes();
    let bytes = if n < SNAPSHOT_HEADER_LEN {
        head[..n].to_vec()
    } else {
        if let Ok(h) = SnapshotHeader::ref_from_bytes(&head[..])
            && let Err(d) = check_header(h, len)
        {
            return Read::Damaged(d.at(path), foreign);
        }
        // check_header: len = 64 + stream_len (u16) + payload_len, the file's real size.
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
    pub(crate) fn save(&self, snap: &Snapshot, keep: usize) -> Result<PathBuf> {
        if keep == 0 {
            return Err(Error::InvalidArgument(
                "a snapshot save must keep at least 1 snapshot per stream".into(),
            ));
        }
        let bytes = encode(snap)?;
        let hash = stream_hash(snap.stream.as_bytes());
        let path = self.dir.join(file_name(hash, snap.position));
        let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_dir()?;
        crate::storage::io::write_derived(&*self.io, &self.dir, &path, &bytes)?;
        self.prune(snap, hash, &path, keep)?;
        Ok(path)
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
            match self.io.remove(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
        Ok(())
    }

    /// The newest valid snapshot of `stream` with this schema version and
    /// `stream_version <= max_version` (`None`: any version). Corrupt files,
    /// files of other streams with the same hash, and schema mismatches are
    /// skipped; each skipped file of this stream (or unreadable one) is
    /// reported as a warning naming the file and what was wrong.
    pub(crate) fn load(
        &self,
        stream: &str,
        schema_version: u32,
        max_version: Option<u64>,
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
                Read::Valid(s) => return Ok((Some(s), warnings)),
                Read::Gone => {}
                Read::Damaged(e, _) | Read::Unreadable(e) => warnings.push(format!("skipped snapshot: {e}")),
            }
        }
        Ok((None, warnings))
    }

    /// Decode and check a snapshot file's bytes (spec 20.3); `path` names the
    /// file in errors, and if its name is a snapshot file name, the position
    /// in it must equal the stored one. Errors are [`Error::Corrupt`].
    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
        decode(path, bytes)
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
    let snap = parse(bytes).map_err(|d| d.at(path))?;
    if let Some((_, pos)) = path.file_name().and_then(|n| n.to_str()).and_then(parse_file_name)
        && pos != snap.position
    {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: offset_of!(SnapshotHeader, position) as u64,
            detail: format!("expected position {pos} (from the file name), found {}", snap.position),
        });
    }
    Ok(snap)
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
        SnapshotStore::new(dir, io).save(snap, keep)
    }

    /// `SnapshotStore::load` on the log in `dir`.
    pub fn load(
        dir: &Path,
        stream: &str,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        SnapshotStore::new(dir, Arc::new(StdIo)).load(stream, schema_version, max_version)
    }

    /// `SnapshotStore::decode`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
        SnapshotStore::decode(path, bytes)
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
        assert_eq!(offset_of!(SnapshotHeader, reserved1), 36);
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
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes.len(), 64 + 8 + 3);
        assert_eq!(parse(&bytes).unwrap(), s);
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
