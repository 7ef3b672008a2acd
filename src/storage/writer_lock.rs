//! The writer's exclusion: one writer per log, across processes. The writer
//! holds an exclusive `flock` on `annal.lock` and one on the log directory
//! itself for as long as it lives.
//!
//! Invariant: a second writer gets [`Error::Locked`], even if `annal.lock`
//! was deleted or replaced under the first (the directory lock still holds).

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::io::Io;

pub use crate::format::names::LOCK_FILE;

/// The writer's exclusion: an exclusive `flock` on `annal.lock` (what older
/// annal versions take and what readers and `check` probe), and one on the
/// log directory itself. The directory lock cannot be removed under a
/// running writer: deleting or replacing `annal.lock` lets a second writer
/// lock the new file, but not the directory, so it still gets
/// [`Error::Locked`].
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
    _dir: File,
}

/// Take an exclusive lock on `file`, retrying a few times: a lock released
/// by a closing writer can look held for a moment (a child process forked by
/// another thread shares the lock file's description between its fork and
/// its exec, the descriptor being close-on-exec); about 30 ms in all before
/// reporting `Locked`.
pub(crate) fn lock_exclusive(file: &File, path: &Path, locked: &Path) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(2);
    for attempt in 0.. {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if attempt < 4 => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
    }
    Err(Error::Locked {
        path: locked.to_owned(),
    })
}

pub(crate) fn take_lock(dir: &Path, io: &dyn Io) -> Result<WriterLock> {
    let path = dir.join(LOCK_FILE);
    // `symlink_metadata`: a (dangling) symlink counts as existing, and is then
    // refused by the open below (`O_NOFOLLOW`), never followed.
    if fs::symlink_metadata(&path).is_err() {
        match io.create(&path) {
            Ok(_) => io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
    // Never through a symlink, never blocking on a FIFO, only a regular file.
    let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
    lock_exclusive(&file, &path, &path)?;
    let dir_file = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    lock_exclusive(&dir_file, dir, &path)?;
    Ok(WriterLock {
        _file: file,
        _dir: dir_file,
    })
}
