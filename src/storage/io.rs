//! The I/O seam: every file operation of the writer goes through [`Io`].
//!
//! The writer creates, writes, syncs, renames and truncates files only through
//! this trait, so tests substitute a backend that injects failures or
//! simulates a crash (keeping written and durable bytes apart). [`StdIo`] is
//! the real implementation over `std::fs`. Readers do not use the seam: they
//! only read (and map) files.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// File-system operations of the writer.
pub trait Io: Send + Sync + Debug {
    /// Create a new file (failing if it exists), open for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>>;
    /// Open an existing file for writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>>;
    /// Rename `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make the directory's entries (creates, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Give the file at `from` a second name `to` (a hard link), which must
    /// not exist.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
    /// Create a directory and its missing parents (mode [`DIR_MODE`]).
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(DIR_MODE);
        }
        b.create(dir)
    }
}

/// A file open for writing through the seam.
pub trait IoFile: Send + Sync + Debug {
    /// Write all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Make the written data durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Set the file's length.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserve disk space for `len` bytes from `offset` without changing the
    /// file's length, so later writes there need not allocate block by block.
    /// A hint: a backend may do nothing (and return `Ok(false)`), and the
    /// writer ignores its errors (the write itself reports a full disk).
    /// Returns whether space was reserved; the writer then releases what is
    /// left past the end with [`IoFile::truncate`] to the file's length when
    /// it seals the segment or closes the log.
    fn reserve(&self, offset: u64, len: u64) -> io::Result<bool> {
        let _ = (offset, len);
        Ok(false)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdIo;

/// A file of [`StdIo`].
#[derive(Debug)]
pub struct StdFile(File);

/// Mode of every file annal creates: read and write for the owner, read for
/// the group and others, never world-writable.
pub const FILE_MODE: u32 = 0o644;

/// Mode of every directory annal creates (the log directory, `snapshots/`):
/// never world-writable.
pub const DIR_MODE: u32 = 0o755;

/// Options to open a file for writing: mode [`FILE_MODE`] when created, and
/// never through a symlink (`O_NOFOLLOW` on Linux): a link planted under a
/// name annal writes is an error, not a way out of the log directory.
fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    no_follow(&mut o);
    o
}

/// Add `O_NOFOLLOW` (Linux): opening a symlink fails with `ELOOP`.
pub(crate) fn no_follow(o: &mut OpenOptions) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = o;
}

impl Io for StdIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(StdFile(options().create_new(true).open(path)?)))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(StdFile(options().open(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl IoFile for StdFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.0.write_all_at(buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = &self.0;
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(buf)
        }
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    /// `fallocate` with `FALLOC_FL_KEEP_SIZE` on Linux (a no-op elsewhere).
    fn reserve(&self, offset: u64, len: u64) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{FallocateFlags, fallocate};
            fallocate(&self.0, FallocateFlags::KEEP_SIZE, offset, len)?;
            Ok(true)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (offset, len);
            Ok(false)
        }
    }
}

/// Open a file of the log for reading, the one way every reader, `check` and
/// recovery open a file:
///
/// * never through a symlink (`O_NOFOLLOW` on Linux): a link under a log's
///   file name is refused (`ELOOP`), never followed out of the directory;
/// * never blocking (`O_NONBLOCK`): a FIFO under a log's file name opens at
///   once instead of waiting for a writer, and is then refused;
/// * only a regular file: a FIFO, device, socket or directory is an error of
///   kind [`io::ErrorKind::InvalidInput`] that says what was found.
///
/// `O_NONBLOCK` has no effect on reads of a regular file.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    no_follow(&mut o);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32);
    }
    let file = o.open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("expected a regular file, found {}", file_kind(&kind)),
    ))
}

/// Whether a process (this one included, through another open) holds the
/// writer lock on the lock file at `path`, or on the log directory holding
/// it (a writer locks both; the directory lock survives the lock file being
/// deleted or replaced). Takes a shared lock on a separate read-only open and
/// releases it at once, so a writer is never kept waiting longer than its
/// retry. A missing or non-regular lock file is not held.
pub(crate) fn lock_held(path: &Path) -> bool {
    if let Ok(f) = open_read(path)
        && held(&f)
    {
        return true;
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).is_ok_and(|d| d.metadata().is_ok_and(|m| m.is_dir()) && held(&d)),
        None => File::open(".").is_ok_and(|d| held(&d)),
    }
}

/// Whether another open holds an exclusive lock on `f`.
fn held(f: &File) -> bool {
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Whether an error of [`open_read`] says the name holds something other
/// than a regular file (a symlink refused by `O_NOFOLLOW`, a FIFO, device,
/// socket or directory): that is damage of the log's file (it must be a
/// regular file), not a failure of the operating system such as `EMFILE`.
pub(crate) fn not_a_regular_file(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return true;
    }
    e.kind() == io::ErrorKind::InvalidInput
}

/// A word for a file type, for messages.
pub(crate) fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Read exactly `buf.len()` bytes at `offset` (readers' `pread`).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Open `path` for reading and ask the kernel for the byte ranges
/// `ranges(len)` of it (`(offset, length)` pairs, given the file's length;
/// `POSIX_FADV_WILLNEED`), without waiting: a hint for a caller about to read
/// them, so that the disk gets every such request at once. The open file is
/// returned (`None` if it cannot be opened: the read that follows reports
/// why). Empty ranges are skipped.
pub(crate) fn advise_will_need<const N: usize>(
    path: &Path,
    ranges: impl FnOnce(u64) -> [(u64, u64); N],
) -> Option<File> {
    let file = open_read(path).ok()?;
    #[cfg(target_os = "linux")]
    {
        let len = file.metadata().ok()?.len();
        for (at, n) in ranges(len) {
            // (A length of zero would advise the whole file.)
            if let Some(n) = std::num::NonZeroU64::new(n)
                && at < len
            {
                let _ = rustix::fs::fadvise(&file, at, Some(n), rustix::fs::Advice::WillNeed);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ranges;
    Some(file)
}

/// Write a derived file atomically through the seam: temp file, fsync,
/// rename, directory fsync (spec 1).
pub(crate) fn write_derived(io: &dyn Io, dir: &Path, path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = io.remove(&tmp);
    let f = io.create(&tmp).map_err(|e| crate::Error::io("create", &tmp, e))?;
    f.write_at(0, bytes).map_err(|e| crate::Error::io("write", &tmp, e))?;
    f.sync().map_err(|e| crate::Error::io("fsync", &tmp, e))?;
    drop(f);
    io.rename(&tmp, path).map_err(|e| crate::Error::io("rename", &tmp, e))?;
    io.sync_dir(dir)
        .map_err(|e| crate::Error::io("fsync directory", dir, e))
}

/// Tries of [`write_shared`] and [`create_shared`] before they report a
/// rename or link that found no source.
const SHARED_WRITE_TRIES: usize = 8;

/// How a shared write puts its temporary file in place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Renamed over the file.
    Replace,
    /// Linked to the name, which a link never replaces: if the file exists
    /// (another creator's link won), it is left as it is.
    IfAbsent,
}

/// Write a file of the log directory that processes other than the writer
/// write (a projection's model, a serving file: spec 24.5, 24.8)
/// atomically through the seam: the bytes go to a temporary file of a name
/// of this call's own ([`shared_temp_name`]: `<path>.<16 hex digits>.tmp`),
/// fsynced, renamed over `path`, the directory fsynced.
///
/// A writer opening the directory in another process removes every
/// `*.tmp` it finds (spec 6, recovery), which may be this call's temporary
/// file between its creation and its rename: the rename then finds no
/// source (`NotFound`), and the write starts again under a new name, which
/// that sweep (it listed the directory before) never removes. Up to 8
/// tries; the last failure is reported. The writer's own derived files use
/// [`write_derived`]: no other process's recovery runs while it holds the
/// log.
pub(crate) fn write_shared(io: &dyn Io, dir: &Path, path: &Path, bytes: &[u8]) -> crate::Result<()> {
    shared(io, dir, path, bytes, Place::Replace)
}

/// Create `path` holding `bytes` unless it exists, whole and durably, even
/// when other processes race to create it (a subscription's checkpoint
/// file, spec 24.2): as [`write_shared`], but the temporary file is
/// hard-linked to `path` (one racer's link wins, the others find the file
/// there), then removed. A link that finds its temporary file swept starts
/// again, as a rename does there.
pub(crate) fn create_shared(io: &dyn Io, dir: &Path, path: &Path, bytes: &[u8]) -> crate::Result<()> {
    shared(io, dir, path, bytes, Place::IfAbsent)
}

fn shared(io: &dyn Io, dir: &Path, path: &Path, bytes: &[u8], place: Place) -> crate::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shared_try(io, dir, path, bytes, place) {
            Err(crate::Error::Io {
                op: "rename" | "link",
                ref source,
                ..
            }) if source.kind() == io::ErrorKind::NotFound && attempt < SHARED_WRITE_TRIES => {}
            other => return other,
        }
    }
}

fn shared_try(io: &dyn Io, dir: &Path, path: &Path, bytes: &[u8], place: Place) -> crate::Result<()> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| crate::Error::io("draw a name in", dir, io::Error::other(e)))?;
    let tmp = shared_temp_name(path, u64::from_le_bytes(id));
    let f = io.create(&tmp).map_err(|e| crate::Error::io("create", &tmp, e))?;
    let written = f
        .write_at(0, bytes)
        .map_err(|e| crate::Error::io("write", &tmp, e))
        .and_then(|()| f.sync().map_err(|e| crate::Error::io("fsync", &tmp, e)));
    drop(f);
    let placed = written.and_then(|()| match place {
        Place::Replace => io.rename(&tmp, path).map_err(|e| crate::Error::io("rename", &tmp, e)),
        Place::IfAbsent => match io.hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(crate::Error::io("link", path, e)),
        },
    });
    // Nothing of it is left for the next try or a later sweep (a rename
    // that succeeded left nothing to remove).
    if placed.is_err() || place == Place::IfAbsent {
        let _ = io.remove(&tmp);
    }
    placed?;
    io.sync_dir(dir)
        .map_err(|e| crate::Error::io("fsync directory", dir, e))
}

/// The temporary file of [`write_shared`] for `path` with the number `id`:
/// `<path>.<id as 16 lowercase hex digits>.tmp`.
pub(crate) fn shared_temp_name(path: &Path, id: u64) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{id:016x}.tmp"));
    std::path::PathBuf::from(tmp)
}

/// Whether `file` is a temporary file name of [`write_shared`] for the file
/// name `of`.
pub(crate) fn is_shared_temp_of(file: &str, of: &str) -> bool {
    file.strip_prefix(of)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Remove every temporary file of [`write_shared`] for the file names
/// `of` in `dir` (left by a write that crashed; the caller makes sure no
/// write of them is under way). Whether any was removed (the caller makes
/// the removals durable if it needs to).
pub(crate) fn remove_shared_temps(io: &dyn Io, dir: &Path, of: &[&str]) -> crate::Result<bool> {
    let rd = std::fs::read_dir(dir).map_err(|e| crate::Error::io("read directory", dir, e))?;
    let mut removed = false;
    for e in rd {
        let e = e.map_err(|e| crate::Error::io("read directory", dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if of.iter().any(|of| is_shared_temp_of(name, of)) {
            let path = e.path();
            match io.remove(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::Error::io("remove", &path, e)),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_special_file_is_told_from_an_operating_system_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).expect("mkdir");
        let e = open_read(&sub).expect_err("a directory is refused");
        assert!(not_a_regular_file(&e), "{e}");
        assert!(e.to_string().contains("a directory"), "{e}");
        #[cfg(unix)]
        {
            let link = dir.path().join("l");
            std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
            let e = open_read(&link).expect_err("a symlink is refused");
            assert!(not_a_regular_file(&e), "{e}");
        }
        // EMFILE, ENOMEM, EIO: failures of the system, not of the file.
        for errno in [24, 12, 5] {
            assert!(!not_a_regular_file(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }

    /// The real file system, but the first `sweeps` renames and links find
    /// their source removed just before, as a writer's recovery removing
    /// `*.tmp` in another process would.
    #[derive(Debug)]
    struct Sweeping {
        sweeps: std::sync::atomic::AtomicUsize,
    }

    impl Sweeping {
        fn sweep(&self, from: &Path) -> io::Result<()> {
            use std::sync::atomic::Ordering;
            if self
                .sweeps
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                std::fs::remove_file(from)?;
            }
            Ok(())
        }
    }

    impl Io for Sweeping {
        fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
            StdIo.create(path)
        }
        fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
            StdIo.open(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.sweep(from)?;
            StdIo.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            StdIo.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdIo.sync_dir(dir)
        }
        fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.sweep(from)?;
            StdIo.hard_link(from, to)
        }
    }

    #[test]
    fn a_creation_whose_temporary_a_recovery_removed_starts_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("annal.sub.x");
        let io = Sweeping {
            sweeps: std::sync::atomic::AtomicUsize::new(3),
        };
        create_shared(&io, dir.path(), &path, b"whole").expect("created on the fourth try");
        assert_eq!(std::fs::read(&path).expect("read"), b"whole");
        assert_eq!(names(dir.path()), ["annal.sub.x"], "no temporary left behind");
        // An existing file is left as it is.
        create_shared(&StdIo, dir.path(), &path, b"other").expect("exists");
        assert_eq!(std::fs::read(&path).expect("read"), b"whole");

        // A sweep at every try: reported, naming the file, nothing left.
        let path = dir.path().join("annal.sub.y");
        let io = Sweeping {
            sweeps: std::sync::atomic::AtomicUsize::new(usize::MAX),
        };
        let err = create_shared(&io, dir.path(), &path, b"whole").expect_err("every try swept");
        assert!(
            matches!(&err, crate::Error::Io { op: "link", path: p, .. } if *p == path),
            "{err}"
        );
        assert!(!path.exists());
        assert_eq!(names(dir.path()), ["annal.sub.x"]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_shared_write_whose_temporary_a_recovery_removed_starts_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("annal.proj.p");
        std::fs::write(&path, b"old").expect("write");
        let io = Sweeping {
            sweeps: std::sync::atomic::AtomicUsize::new(3),
        };
        write_shared(&io, dir.path(), &path, b"new").expect("written on the fourth try");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(names(dir.path()), ["annal.proj.p"], "no temporary left behind");

        // A sweep at every try: the rename reported, the old file intact.
        let io = Sweeping {
            sweeps: std::sync::atomic::AtomicUsize::new(usize::MAX),
        };
        let e = write_shared(&io, dir.path(), &path, b"newer").expect_err("every try swept");
        assert!(
            matches!(&e, crate::Error::Io { op: "rename", source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(names(dir.path()), ["annal.proj.p"]);
    }

    #[test]
    fn shared_temporaries_are_told_by_name_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("annal.proj.b");
        let tmp = shared_temp_name(&path, 0xfe);
        assert_eq!(
            tmp.file_name().and_then(|n| n.to_str()),
            Some("annal.proj.b.00000000000000fe.tmp")
        );
        assert!(is_shared_temp_of("annal.proj.b.00000000000000fe.tmp", "annal.proj.b"));
        for other in [
            "annal.proj.b.tmp",
            "annal.proj.b.00000000000000FE.tmp",
            "annal.proj.b.00000000000000fe0.tmp",
            "annal.proj.b.00000000000000fe.lock",
            "annal.proj.bc.00000000000000fe.tmp",
            "annal.proj.b.00000000000000fe.00000000000000fe.tmp",
        ] {
            assert!(!is_shared_temp_of(other, "annal.proj.b"), "{other}");
        }
        for n in [
            "annal.proj.b",
            "annal.proj.b.00000000000000fe.tmp",
            "annal.proj.b.0123456789abcdef.tmp",
            "annal.proj.b.0123456789abcdef",
            "annal.proj.b.0123456789abcdef.0123456789abcdef.tmp",
        ] {
            std::fs::write(dir.path().join(n), b"").expect("write");
        }
        assert!(remove_shared_temps(&StdIo, dir.path(), &["annal.proj.b"]).expect("removed"));
        assert_eq!(
            names(dir.path()),
            [
                "annal.proj.b",
                "annal.proj.b.0123456789abcdef",
                "annal.proj.b.0123456789abcdef.0123456789abcdef.tmp"
            ]
        );
        assert!(!remove_shared_temps(&StdIo, dir.path(), &["annal.proj.b"]).expect("none"));
    }
}
