//! Versions of a projection and the switch between them (spec 24.8): a new
//! version builds beside the one serving and takes over atomically.
//!
//! The protocol. Version `v` of a projection `<name>` keeps its model in
//! `annal.proj.<name>~v<v>` (the unversioned projection, version 0, in
//! `annal.proj.<name>`), each written whole like any projection file (24.5).
//! One small file, `annal.proj.<name>~serving`, names the version that
//! serves; none names version 0. A take-over by `v` from `u`, the version
//! its runner last read from the serving file (at its open, a step or a
//! save; the take-over itself does not read it again for this):
//!
//! 1. saves `v`'s model (durable before anything names it);
//! 2. takes the switch lock `annal.proj.<name>~serving.lock` (one switch at
//!    a time; waiting at most [`SWITCH_LOCK_WAIT`], then
//!    [`Error::Locked`]);
//! 3. reads the serving file: a version above `v` is
//!    [`Error::Superseded`]; any version but `u` (or, for `u` = 0, a file
//!    at all) is [`Error::ServingChanged`]: of two take-overs from one
//!    version, one wins, and a version promoted from a stale `u` does not
//!    go live;
//! 4. writes the serving file naming `v` whole (a temporary file of its own
//!    name, fsync, rename, directory fsync) and lets go of the lock;
//! 5. retires the previous version: its files are removed if no runner
//!    holds its lock (else by [`ProjectionRunner::retire`] or
//!    [`ServingProjection::retire_superseded`] later), under the switch
//!    lock and after a directory fsync, so the switch is durable first.
//!
//! Invariants: the serving file changes only by a rename, so a crash at any
//! step leaves it naming the old version or the new one, and the model of
//! either was made durable before the switch (step 1) and is removed only
//! once superseded, durably (step 5); versions only go up, so a superseded
//! runner never serves again: no save it begins after it has seen the
//! switch (at its next step or save) writes anything, and a runner of a
//! superseded version is not opened. (A save that had read the serving file
//! before the switch may still land after it: no reader follows that file
//! any more, and it is removed when the runner's lock is free.)
//!
//! [`ProjectionRunner::retire`]: crate::ProjectionRunner::retire

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::format::consumer::{MAX_PROJECTION_MODEL, PROJECTION_HEADER_LEN, decode_projection};
use crate::format::serving::{
    SERVING_FILE_LEN, Serving, decode_serving, encode_serving, lock_file_name, model_file_name, parse_model_file_name,
    serving_file_name, switch_lock_name,
};
use crate::storage::io::{Io, StdIo};

/// What the serving file of `name` in `dir` says (`None`: there is none).
pub(crate) fn read_serving(dir: &Path, name: &str) -> Result<Option<Serving>> {
    use std::io::Read;
    let path = dir.join(serving_file_name(name));
    let f = match crate::storage::io::open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut bytes = Vec::with_capacity(SERVING_FILE_LEN + 1);
    f.take(SERVING_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &path, e))?;
    decode_serving(&bytes).map(Some).map_err(|d| d.at(&path))
}

/// The version the serving file of `name` names, 0 if there is none.
pub(crate) fn serving_version(dir: &Path, name: &str) -> Result<u64> {
    Ok(read_serving(dir, name)?.map_or(0, |s| s.serving))
}

/// The position, last event and model bytes of the projection file at
/// `path` (spec 24.5), `None` if there is none.
pub(crate) fn read_model_file(path: &Path) -> Result<Option<(u64, u64, Vec<u8>)>> {
    use std::io::Read;
    let f = match crate::storage::io::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let cap = MAX_PROJECTION_MODEL + PROJECTION_HEADER_LEN as u64 + 4;
    if len > cap {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: 0,
            detail: format!("expected a projection file of at most {cap} bytes, found {len}"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    let (next, last, model) = decode_projection(&bytes).map_err(|d| d.at(path))?;
    Ok(Some((next, last, model.to_vec())))
}

/// Open (creating it if missing, never through a link) the lock file at
/// `path`.
fn open_lock(path: &Path) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true);
    crate::storage::io::no_follow(&mut o);
    o.open(path).map_err(|e| Error::io("open", path, e))
}

/// Whether something (a file, a link, anything) is at `path`; links are
/// never followed.
pub(crate) fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// How long a switch or a retirement waits for the switch lock before
/// [`Error::Locked`]: a switch holds it for one small write and two
/// fsyncs, so only a process stopped while holding it (or a disk stalled
/// that long) keeps it longer.
pub(crate) const SWITCH_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The switch lock of `name` (`annal.proj.<name>~serving.lock`, created if
/// missing), held while the returned file is open. Waits up to
/// [`SWITCH_LOCK_WAIT`], retrying with a backoff, then [`Error::Locked`]
/// naming the lock file.
fn lock_switch(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(switch_lock_name(name));
    let lock = open_lock(&path)?;
    let deadline = Instant::now() + SWITCH_LOCK_WAIT;
    let mut wait = Duration::from_millis(1);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
}

/// Switch the serving file of `name` to `version`, whose model, saved, is
/// at `position`, only if the serving file names `expected` (0: it does not
/// exist), the version the runner last read from it: what is found under
/// the lock is compared with `expected`, never taken in its place. Steps 2
/// to 4 of the protocol; the previous version on success.
pub(crate) fn switch(io: &dyn Io, dir: &Path, name: &str, version: u64, expected: u64, position: u64) -> Result<u64> {
    let lock = lock_switch(dir, name)?;
    let found = serving_version(dir, name)?;
    if found > version {
        return Err(Error::Superseded {
            name: name.to_owned(),
            version,
            by: found,
        });
    }
    if found == version {
        return Ok(found);
    }
    if found != expected {
        return Err(Error::ServingChanged {
            name: name.to_owned(),
            version,
            expected,
            found,
        });
    }
    let path = dir.join(serving_file_name(name));
    // Temporary files of a switch that crashed; no switch is under way but
    // this one (the lock).
    crate::storage::io::remove_shared_temps(io, dir, &[&serving_file_name(name)])?;
    let bytes = encode_serving(&Serving {
        serving: version,
        previous: found,
        position,
    });
    crate::storage::io::write_shared(io, dir, &path, &bytes)?;
    drop(lock);
    Ok(found)
}

/// Remove the files of `version` of `name` (its model, temporary files
/// left of it, its lock file), whose lock the caller holds, if a higher
/// version serves; then make the removals durable. Whether they were
/// removed (false: not superseded).
///
/// The serving file is read under the switch lock, and the directory is
/// fsynced before anything is removed: the rename that made a higher
/// version serve is durable before a file of the lower one is gone, even if
/// the switch that renamed it has not yet fsynced the directory (a process
/// that died between the two, whose lock is free). Without both, a power
/// cut could keep the removal and lose the switch: a serving file naming a
/// version without a model.
pub(crate) fn remove_version_files(io: &dyn Io, dir: &Path, name: &str, version: u64) -> Result<bool> {
    let switch_lock = lock_switch(dir, name)?;
    if serving_version(dir, name)? <= version {
        return Ok(false);
    }
    io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
    let model_name = model_file_name(name, version);
    let model = dir.join(&model_name);
    match io.remove(&model) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &model, e)),
    }
    crate::storage::io::remove_shared_temps(io, dir, &[&model_name])?;
    let lock = dir.join(lock_file_name(name, version));
    match io.remove(&lock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &lock, e)),
    }
    io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
    drop(switch_lock);
    Ok(true)
}

/// Retire `version` of `name` if it is superseded and no runner holds its
/// lock: its files are removed (step 5). Whether they were (false: not
/// superseded, held, or nothing to remove). Nothing is created for a
/// version that is not superseded (its lock file is opened only then).
pub(crate) fn retire(io: &dyn Io, dir: &Path, name: &str, version: u64) -> Result<bool> {
    let lock_path = dir.join(lock_file_name(name, version));
    if !present(&lock_path) && !present(&dir.join(model_file_name(name, version))) {
        return Ok(false);
    }
    // Versions only go up: once superseded, always. Read here first so
    // that a version still serving, or building, is not touched.
    if serving_version(dir, name)? <= version {
        return Ok(false);
    }
    let lock = open_lock(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
    }
    // A runner that opens the version now finds it superseded under this
    // lock (or, after the removal, under a lock file of its own) and stops.
    let removed = remove_version_files(io, dir, name, version)?;
    drop(lock);
    Ok(removed)
}

/// The model of the version of a projection that serves, as its runner last
/// saved it (spec 24.5, 24.8), from [`ServingProjection::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served<M> {
    /// The version (0: the unversioned projection).
    pub version: u64,
    /// The position after the last event folded into `model`.
    pub position: u64,
    /// The model.
    pub model: M,
}

/// The serving model of a projection name, for readers of the model in any
/// process (an HTTP service, say) that need not know its versions: which
/// version serves, its model as last saved, whether another version took
/// over since the last load, and the removal of superseded versions' files.
/// Loading reads files and takes no lock; retiring takes the retired
/// version's lock and, briefly, the switch lock.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{EventData, ExpectedVersion, Log, Projection, RecordRef, ServingProjection};
/// struct Count;
/// impl Projection for Count {
///     type Model = u64;
///     fn empty(&self) -> u64 { 0 }
///     fn apply(&self, n: &mut u64, _: &RecordRef<'_>) { *n += 1 }
///     fn merge(&self, a: u64, b: u64) -> u64 { a + b }
/// }
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
/// let v1 = log.projection("count", Count).version(1).open()?;   // nothing served: v1 serves
/// let mut serving = ServingProjection::new(dir.path(), "count")?;
/// assert_eq!(serving.load::<u64>()?.map(|s| (s.version, s.model)), Some((1, 1)));
/// drop(v1);
/// let mut v2 = log.projection("count", Count).version(2).open()?; // builds beside v1
/// assert!(!serving.changed()?);
/// v2.take_over()?;                                                // v1's files retired
/// assert!(serving.changed()?);
/// assert_eq!(serving.load::<u64>()?.map(|s| s.version), Some(2));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ServingProjection {
    dir: PathBuf,
    name: String,
    io: Arc<dyn Io>,
    loaded: Option<u64>,
}

impl ServingProjection {
    /// The serving model of the projection `name` in the log directory
    /// `dir` ([`Error::InvalidArgument`] for a name that is not one, 24.1).
    pub fn new(dir: impl AsRef<Path>, name: &str) -> Result<ServingProjection> {
        ServingProjection::with_io(dir.as_ref(), name, Arc::new(StdIo))
    }

    pub(crate) fn with_io(dir: &Path, name: &str, io: Arc<dyn Io>) -> Result<ServingProjection> {
        super::consumer::check_name(name)?;
        Ok(ServingProjection {
            dir: dir.to_owned(),
            name: name.to_owned(),
            io,
            loaded: None,
        })
    }

    /// The version that serves now: the one the serving file names, else 0
    /// if the unversioned projection's file exists, else `None` (nothing
    /// serves yet). [`Error::Corrupt`] naming the serving file if damaged.
    pub fn version(&self) -> Result<Option<u64>> {
        match read_serving(&self.dir, &self.name)? {
            Some(s) => Ok(Some(s.serving)),
            None if present(&self.dir.join(model_file_name(&self.name, 0))) => Ok(Some(0)),
            None => Ok(None),
        }
    }

    /// Whether the version serving now is not the one of the last
    /// [`load`](ServingProjection::load) (or, before any, whether one
    /// serves): another version took over.
    pub fn changed(&self) -> Result<bool> {
        Ok(self.version()? != self.loaded)
    }

    /// The serving version's model as its file holds it, its bytes not
    /// deserialized (postcard, spec 24.5): for readers that choose the type
    /// by the version. `None` if nothing serves yet.
    pub fn load_raw(&mut self) -> Result<Option<Served<Vec<u8>>>> {
        // A version retired between reading the serving file and its model
        // file was superseded: the serving file names another by then.
        for _ in 0..16 {
            let Some(version) = self.version()? else {
                self.loaded = None;
                return Ok(None);
            };
            let path = self.dir.join(model_file_name(&self.name, version));
            if let Some((position, _, model)) = read_model_file(&path)? {
                self.loaded = Some(version);
                return Ok(Some(Served {
                    version,
                    position,
                    model,
                }));
            }
            if self.version()? == Some(version) && version > 0 {
                return Err(Error::Corrupt {
                    path: self.dir.join(serving_file_name(&self.name)),
                    offset: 16,
                    detail: format!(
                        "the serving version {version} has no model file ({} is missing)",
                        path.display()
                    ),
                });
            }
        }
        Err(Error::InvalidArgument(format!(
            "projection {:?}: the serving version changed at every read",
            self.name
        )))
    }

    /// The serving version's model as its runner last saved it,
    /// deserialized as `M` ([`Error::InvalidArgument`] if it is not one:
    /// versions whose model types differ are read with
    /// [`load_raw`](ServingProjection::load_raw)). `None` if nothing serves
    /// yet.
    pub fn load<M: DeserializeOwned>(&mut self) -> Result<Option<Served<M>>> {
        let Some(raw) = self.load_raw()? else { return Ok(None) };
        let model = postcard::from_bytes(&raw.model).map_err(|e| {
            Error::InvalidArgument(format!(
                "{}: the model of version {} does not deserialize as the type asked for ({e})",
                self.dir.join(model_file_name(&self.name, raw.version)).display(),
                raw.version
            ))
        })?;
        Ok(Some(Served {
            version: raw.version,
            position: raw.position,
            model,
        }))
    }

    /// Remove the files of every version below the serving one whose lock
    /// no runner holds (a runner still open keeps its files until it is
    /// closed or retires them). The versions retired. Each removal takes
    /// the switch lock ([`Error::Locked`] naming it if a switch holds it
    /// longer than a few seconds).
    pub fn retire_superseded(&self) -> Result<Vec<u64>> {
        let serving = serving_version(&self.dir, &self.name)?;
        if serving == 0 {
            return Ok(Vec::new());
        }
        let mut versions = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))? {
            let e = e.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            let version = parse_model_file_name(&self.name, file).or_else(|| {
                file.strip_suffix(".lock")
                    .and_then(|f| parse_model_file_name(&self.name, f))
            });
            if let Some(v) = version.filter(|&v| v < serving)
                && !versions.contains(&v)
            {
                versions.push(v);
            }
        }
        versions.sort_unstable();
        let mut retired = Vec::new();
        for v in versions {
            if retire(&*self.io, &self.dir, &self.name, v)? {
                retired.push(v);
            }
        }
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn retiring_a_version_not_superseded_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Version 0's model alone, no lock file, nothing above it serving.
        std::fs::write(dir.path().join("annal.proj.p"), b"model").unwrap();
        assert!(!retire(&StdIo, dir.path(), "p", 0).unwrap());
        assert_eq!(names(dir.path()), ["annal.proj.p"]);
        // Version 1 serves: version 0 is retired, lock file and all.
        std::fs::write(
            dir.path().join("annal.proj.p~serving"),
            encode_serving(&Serving {
                serving: 1,
                previous: 0,
                position: 0,
            }),
        )
        .unwrap();
        assert!(!retire(&StdIo, dir.path(), "p", 1).unwrap(), "version 1 has no files");
        assert!(retire(&StdIo, dir.path(), "p", 0).unwrap());
        assert_eq!(names(dir.path()), ["annal.proj.p~serving", "annal.proj.p~serving.lock"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_under_a_model_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("model");
        // A dangling link: present, never followed to see what it names.
        std::os::unix::fs::symlink(&target, dir.path().join("annal.proj.p")).unwrap();
        assert!(present(&dir.path().join("annal.proj.p")));
        let serving = ServingProjection::new(dir.path(), "p").unwrap();
        assert_eq!(serving.version().unwrap(), Some(0));
        assert!(!target.exists());
    }
}
