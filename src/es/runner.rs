//! The projection runner (spec 24.5): a [`Projection`] kept up to date as a
//! service, its model and its checkpoint saved together in one file of the
//! log directory (`annal.proj.<name>`), so that after a crash or a restart
//! it continues from exactly what the file holds.
//!
//! Invariants: the file's model is the fold of exactly the events below the
//! file's position (they are written as one file: a temporary file,
//! fsynced, renamed, the directory fsynced), so a restart never applies an
//! event twice nor skips one (exactly once, for the model); the runner
//! folds with the same code as [`LogView::rebuild`](crate::LogView::rebuild),
//! so its model equals a rebuild over the same events; one runner per name
//! at a time (an exclusive lock on `annal.proj.<name>.lock`).
//!
//! Versions (spec 24.8): a runner opened with
//! [`version`](ProjectionBuilder::version) keeps its model in
//! `annal.proj.<name>~v<version>` and its lock beside; which version serves
//! is the serving file's, switched by [`ProjectionRunner::take_over`]
//! (`es::serving` holds the protocol). A runner reads the serving file at
//! each step and save: once it finds a higher version serving, it is
//! superseded and begins no save again.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::es::projection::Projection;
use crate::es::serving::{self, ServingProjection};
use crate::format::consumer::{encode_projection, fingerprint};
use crate::format::serving::{lock_file_name, model_file_name};
use crate::read::view::{LogView, Reader};
use crate::storage::io::StdIo;
use crate::writer::Log;

/// The prefix of a projection's file name: `annal.proj.<name>`.
pub use crate::format::serving::PROJECTION_FILE_PREFIX;

/// What a runner reads: the writer in this process, or a [`Reader`] in
/// any process.
#[derive(Debug)]
enum Source {
    Log(Log),
    Reader(Box<Reader>),
}

impl Source {
    fn dir(&self) -> &std::path::Path {
        match self {
            Source::Log(l) => l.dir(),
            Source::Reader(r) => r.dir(),
        }
    }

    fn view(&self) -> Result<LogView> {
        match self {
            Source::Log(l) => l.view(),
            Source::Reader(r) => r.view(),
        }
    }

    /// Wait up to `timeout` for something new: woken by the writer, or (a
    /// reader) one poll interval.
    fn wait(&self, epoch: u64, timeout: Duration) {
        match self {
            Source::Log(l) => {
                l.wait_published(epoch, timeout);
            }
            Source::Reader(_) => std::thread::sleep(timeout.min(crate::read::subscription::DEFAULT_POLL_INTERVAL)),
        }
    }

    /// The I/O seam of the writer in this process, or the file system.
    fn io(&self) -> std::sync::Arc<dyn crate::storage::io::Io> {
        match self {
            Source::Log(l) => std::sync::Arc::clone(l.io()),
            Source::Reader(_) => std::sync::Arc::new(StdIo),
        }
    }

    fn epoch(&self) -> u64 {
        match self {
            Source::Log(l) => l.published_epoch(),
            Source::Reader(_) => 0,
        }
    }

    /// Why nothing more will come (a closed or poisoned writer in this
    /// process); read before a view.
    fn ended(&self) -> Option<Error> {
        match self {
            Source::Log(l) => l.ended(),
            Source::Reader(_) => None,
        }
    }
}

/// When a version of a projection takes over serving its name from the
/// version serving (spec 24.8), besides by
/// [`ProjectionRunner::take_over`]: the builder's
/// [`take_over`](ProjectionBuilder::take_over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TakeOver {
    /// Only when [`ProjectionRunner::take_over`] is called (the default).
    /// A version opened when nothing serves (no serving file, no
    /// unversioned projection file) takes over at once all the same, unless
    /// another version took over while it caught up: it then builds beside
    /// that one.
    #[default]
    Manual,
    /// As soon as it has caught up with the log's visible end: at
    /// [`open`](ProjectionBuilder::open), after its first catch-up.
    WhenCaughtUp,
    /// At the first step (or open) after which its position is at least
    /// this one.
    AtPosition(u64),
}

/// What [`ProjectionRunner::take_over`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TakenOver {
    /// The version it took over from (0: the unversioned projection, or
    /// none); `None` if this version already served.
    pub previous: Option<u64>,
    /// Whether the previous version's files were removed (no runner held
    /// its lock); if not, its runner's [`retire`](ProjectionRunner::retire)
    /// or [`ServingProjection::retire_superseded`] removes them later.
    pub retired: bool,
}

/// Options of a projection runner, from [`Log::projection`] or
/// [`Reader::projection`]; [`open`](ProjectionBuilder::open) opens it.
#[must_use = "a builder does nothing until it is opened"]
#[derive(Debug)]
pub struct ProjectionBuilder<P> {
    source: Source,
    name: String,
    projection: P,
    save_every: u64,
    save_interval: Duration,
    version: u64,
    take_over: TakeOver,
}

impl Log {
    /// A runner of `projection` under `name` (see [`ProjectionRunner`]).
    /// A new version of a projection (a new model, another fold) is opened
    /// with [`version`](ProjectionBuilder::version): it builds beside the
    /// version serving, which keeps serving until the new one takes over
    /// ([`ProjectionRunner::take_over`]).
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Log, Projection, RecordRef};
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
    /// let mut count = log.projection("count", Count).open()?;   // caught up
    /// assert_eq!(*count.model(), 1);
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Paid", b"{}")])?;
    /// count.step(std::time::Duration::from_secs(1))?;            // live
    /// assert_eq!(*count.model(), 2);
    /// count.close()?;                                            // saved with its position
    /// assert_eq!(*log.projection("count", Count).open()?.model(), 2);
    /// # Ok(()) }
    /// ```
    pub fn projection<P: Projection>(&self, name: &str, projection: P) -> ProjectionBuilder<P> {
        ProjectionBuilder::new(Source::Log(self.clone()), name, projection)
    }

    /// The serving model of the projection `name` in this log's directory
    /// (see [`ServingProjection`]); retiring goes through the log's I/O.
    pub fn serving_projection(&self, name: &str) -> Result<ServingProjection> {
        ServingProjection::with_io(self.dir(), name, std::sync::Arc::clone(self.io()))
    }
}

impl Reader {
    /// A runner of `projection` under `name` in a process other than the
    /// writer's (see [`Log::projection`]): it polls for new events, and its
    /// file and lock are the files it writes in the log directory.
    pub fn projection<P: Projection>(self, name: &str, projection: P) -> ProjectionBuilder<P> {
        ProjectionBuilder::new(Source::Reader(Box::new(self)), name, projection)
    }

    /// The serving model of the projection `name` in this log's directory
    /// (see [`ServingProjection`]).
    pub fn serving_projection(&self, name: &str) -> Result<ServingProjection> {
        ServingProjection::new(self.dir(), name)
    }
}

impl<P> ProjectionBuilder<P> {
    fn new(source: Source, name: &str, projection: P) -> ProjectionBuilder<P> {
        ProjectionBuilder {
            source,
            name: name.to_owned(),
            projection,
            save_every: 1000,
            save_interval: Duration::from_secs(1),
            version: 0,
            take_over: TakeOver::Manual,
        }
    }
}

impl<P: Projection> ProjectionBuilder<P>
where
    P::Model: Serialize + DeserializeOwned,
{
    /// Save after this many events folded (at least 1; default 1,000).
    pub fn save_every(mut self, events: u64) -> ProjectionBuilder<P> {
        self.save_every = events.max(1);
        self
    }

    /// Save when this long has passed since the last save and events were
    /// folded since (default 1 s).
    pub fn save_interval(mut self, interval: Duration) -> ProjectionBuilder<P> {
        self.save_interval = interval;
        self
    }

    /// Run version `version` (at least 1; 0, the default, is the
    /// unversioned projection) of the projection (spec 24.8):
    /// its model is kept in `annal.proj.<name>~v<version>`, beside the other
    /// versions'. If a lower version serves (or the unversioned projection,
    /// version 0), this one builds beside it, catching up with a parallel
    /// rebuild while the serving one keeps running and keeping its model,
    /// and serves once it [takes over](ProjectionRunner::take_over); if
    /// nothing serves, it serves at once. Without a version, the runner is
    /// the unversioned projection of `annal.proj.<name>` (version 0), which
    /// a version takes over from like from any other: that is how an
    /// unversioned projection is upgraded.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Error, EventData, ExpectedVersion, Log, Projection, RecordRef};
    /// struct Count(u64); // each event counts this much
    /// impl Projection for Count {
    ///     type Model = u64;
    ///     fn empty(&self) -> u64 { 0 }
    ///     fn apply(&self, n: &mut u64, _: &RecordRef<'_>) { *n += self.0 }
    ///     fn merge(&self, a: u64, b: u64) -> u64 { a + b }
    /// }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
    /// let mut v1 = log.projection("count", Count(1)).version(1).open()?; // serves
    /// let mut v2 = log.projection("count", Count(10)).version(2).open()?; // builds beside
    /// assert!(v1.is_serving() && !v2.is_serving());
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Paid", b"{}")])?;
    /// v1.step(std::time::Duration::ZERO)?;           // v1 keeps serving
    /// assert_eq!(*v1.model(), 2);
    /// v2.take_over()?;                               // caught up: switched
    /// assert_eq!(*v2.model(), 20);
    /// assert!(matches!(v1.step(std::time::Duration::ZERO),
    ///     Err(Error::Superseded { version: 1, by: 2, .. })));
    /// v1.retire()?;                                  // its files removed
    /// # Ok(()) }
    /// ```
    pub fn version(mut self, version: u64) -> ProjectionBuilder<P> {
        self.version = version;
        self
    }

    /// When this version takes over by itself (default
    /// [`TakeOver::Manual`]); for a version (see
    /// [`version`](ProjectionBuilder::version)).
    pub fn take_over(mut self, when: TakeOver) -> ProjectionBuilder<P> {
        self.take_over = when;
        self
    }

    /// Open the runner: take its name ([`Error::Locked`] if another runner
    /// holds it; [`Error::Superseded`] if a higher version serves), load its
    /// file (the model and position; [`Error::Corrupt`] naming it if
    /// damaged, [`Error::InvalidArgument`] if the model no longer
    /// deserializes), and catch up with the log: from nothing with a
    /// parallel rebuild, else from the file's position on. The caught-up
    /// model is saved. A version takes over if nothing serves (when it read
    /// the serving file, before catching up: from nothing, so that a
    /// version that took over meanwhile is not replaced), or if its
    /// [`take_over`](ProjectionBuilder::take_over) option says so.
    pub fn open(self) -> Result<ProjectionRunner<P>> {
        super::consumer::check_name(&self.name)?;
        if self.version == 0 && self.take_over != TakeOver::Manual {
            return Err(Error::InvalidArgument(format!(
                "projection {:?}: only a version (ProjectionBuilder::version, at least 1) takes over",
                self.name
            )));
        }
        let dir = self.source.dir().to_owned();
        let path = dir.join(model_file_name(&self.name, self.version));
        let lock_path = dir.join(lock_file_name(&self.name, self.version));
        // Before the lock (a superseded version leaves no lock file behind)
        // and again under it (a superseded version never saves again).
        let superseded = |serving: u64| Error::Superseded {
            name: self.name.clone(),
            version: self.version,
            by: serving,
        };
        let serving = serving::serving_version(&dir, &self.name)?;
        if serving > self.version {
            return Err(superseded(serving));
        }
        let lock = lock_name(&lock_path)?;
        let serving = serving::serving_version(&dir, &self.name)?;
        if serving > self.version {
            return Err(superseded(serving));
        }
        // Temporary files of a save of this version that crashed: no other
        // save of it is under way (the lock).
        crate::storage::io::remove_shared_temps(
            &*self.source.io(),
            &dir,
            &[&model_file_name(&self.name, self.version)],
        )?;
        let loaded = match serving::read_model_file(&path)? {
            Some((next, last, model)) => Some((next, last, deserialize_model::<P>(&model, &path)?)),
            None => None,
        };
        let mut runner = ProjectionRunner {
            source: self.source,
            path,
            dir,
            name: self.name,
            version: self.version,
            serving,
            superseded: None,
            take_over: self.take_over,
            _lock: lock,
            model: self.projection.empty(),
            projection: self.projection,
            next_position: 0,
            last_event: 0,
            pending: 0,
            last_save: Instant::now(),
            save_every: self.save_every,
            save_interval: self.save_interval,
        };
        // A file past the log's end, or whose last event the log holds
        // under another id, folded events the log lost (appended with
        // `Durability::Buffered`, then a power loss): its model is not this
        // log's; rebuild it.
        let loaded = match loaded {
            Some((next, last, model)) if runner.still_holds(next, last)? => Some((next, last, model)),
            Some(_) => {
                crate::trace::event!(WARN, path = %runner.path.display(), "annal projection file names events the log lost; rebuilding");
                None
            }
            None => None,
        };
        match loaded {
            Some((next, last, model)) => {
                runner.last_event = last;
                runner.model = model;
                runner.next_position = next;
                runner.catch_up()?;
            }
            None => {
                let view = runner.source.view()?;
                runner.model = view.par_rebuild(&runner.projection)?;
                runner.next_position = view.next_position();
                runner.last_event = last_event_below(&view, runner.next_position);
                runner.pending = 1;
            }
        }
        if runner.pending > 0 {
            runner.save()?;
        }
        // A version opened when nothing serves serves at once: from 0, as
        // read above, so that if another version took over meanwhile (this
        // one spent long in its rebuild) the switch finds it and this one
        // builds beside it instead.
        let nothing_serves =
            runner.version > 0 && serving == 0 && !serving::present(&runner.dir.join(model_file_name(&runner.name, 0)));
        let due = if nothing_serves {
            Some(0)
        } else if runner.take_over_due() {
            Some(runner.serving)
        } else {
            None
        };
        if let Some(expected) = due {
            match runner.take_over_from(expected) {
                // Another version took over first: this one builds beside it.
                Ok(_) | Err(Error::ServingChanged { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(runner)
    }
}

/// Take the exclusive lock on a runner's lock file (created if missing,
/// never through a link).
fn lock_name(path: &std::path::Path) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true);
    crate::storage::io::no_follow(&mut o);
    let f = o.open(path).map_err(|e| Error::io("open", path, e))?;
    // Retried briefly: a lock let go of can look held while a child process
    // forked by another thread has not yet exec'd.
    crate::storage::writer_lock::lock_exclusive(&f, path, path)?;
    Ok(f)
}

/// The fingerprint of the id of the event at `next - 1`, if there is one
/// there (0: none).
fn last_event_below(view: &LogView, next: u64) -> u64 {
    let Some(at) = next.checked_sub(1) else { return 0 };
    match view.read_all(at).next() {
        Some(Ok(r)) if r.position() == at => fingerprint(r.event_id().as_bytes()),
        _ => 0,
    }
}

/// The model of a projection file at `path`, deserialized.
fn deserialize_model<P: Projection>(model: &[u8], path: &std::path::Path) -> Result<P::Model>
where
    P::Model: DeserializeOwned,
{
    postcard::from_bytes(model).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: the saved model does not deserialize as this projection's model ({e}); a projection whose model \
             type changed takes a new version (ProjectionBuilder::version)",
            path.display()
        ))
    })
}

/// A projection kept up to date from the log: its model, and the position
/// after the last event folded into it, saved together (spec 24.5).
/// [`step`](ProjectionRunner::step) folds what is new (waiting for it up to
/// a timeout); [`run`](ProjectionRunner::run) steps until told to stop.
pub struct ProjectionRunner<P: Projection> {
    source: Source,
    path: PathBuf,
    dir: PathBuf,
    name: String,
    /// This runner's version (0: the unversioned projection).
    version: u64,
    /// The version serving, as last read from the serving file (0: none,
    /// or the unversioned projection).
    serving: u64,
    /// The version that superseded this one, once seen.
    superseded: Option<u64>,
    take_over: TakeOver,
    _lock: File,
    projection: P,
    model: P::Model,
    next_position: u64,
    /// The fingerprint of the last event folded (0: none known).
    last_event: u64,
    pending: u64,
    last_save: Instant,
    save_every: u64,
    save_interval: Duration,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("serving", &self.serving)
            .field("next_position", &self.next_position)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> ProjectionRunner<P>
where
    P::Model: Serialize + DeserializeOwned,
{
    /// The model, as of [`position`](ProjectionRunner::position).
    pub fn model(&self) -> &P::Model {
        &self.model
    }

    /// The position after the last event folded into the model.
    pub fn position(&self) -> u64 {
        self.next_position
    }

    /// This runner's version (0: the unversioned projection).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this runner's version served when the serving file was last
    /// read (at open, each step and save, and a take-over). The unversioned
    /// projection serves while no serving file exists.
    pub fn is_serving(&self) -> bool {
        self.superseded.is_none() && self.serving == self.version
    }

    /// Read the serving file and remember the version found as the one
    /// last seen serving: [`Error::Superseded`] once a higher version
    /// serves (and from then on, without reading it again).
    fn observe(&mut self) -> Result<()> {
        let found = self.serving_now()?;
        self.serving = found;
        Ok(())
    }

    /// The version the serving file names now (0: none), without
    /// remembering it as seen: [`Error::Superseded`] if it is above this
    /// one (remembered: from then on without reading it again).
    fn serving_now(&mut self) -> Result<u64> {
        let found = match self.superseded {
            Some(by) => by,
            None => serving::serving_version(&self.dir, &self.name)?,
        };
        if found > self.version {
            self.superseded = Some(found);
            return Err(Error::Superseded {
                name: self.name.clone(),
                version: self.version,
                by: found,
            });
        }
        Ok(found)
    }

    /// Whether the builder's [`TakeOver`] option says to take over now.
    fn take_over_due(&self) -> bool {
        if self.version == 0 || self.is_serving() {
            return false;
        }
        match self.take_over {
            TakeOver::Manual => false,
            TakeOver::WhenCaughtUp => true,
            TakeOver::AtPosition(p) => self.next_position >= p,
        }
    }

    /// Take over serving the projection's name (spec 24.8) from the
    /// version this runner last saw serve: fold every event visible now,
    /// save the model, then switch the serving file to this version,
    /// atomically and only if it still names that version; then retire
    /// that version's files if no runner holds its lock. A crash at any
    /// moment leaves one version serving, the old or this one, each with
    /// its saved model. From then on, readers ([`ServingProjection`]) load
    /// this version's model, and the old version's runner gets
    /// [`Error::Superseded`] at its next step or save.
    ///
    /// What is compared: the version this runner last read from the
    /// serving file, at its [open](ProjectionBuilder::open), its last
    /// [step](ProjectionRunner::step) or [save](ProjectionRunner::save), or
    /// a take-over that failed with [`Error::ServingChanged`] (0: no
    /// serving file, which the switch then requires). This call reads the
    /// serving file only to tell that a higher version serves, or that this
    /// one already does; it never takes what it finds as the version to
    /// take over from. So a take-over decided on what was seen serving
    /// replaces only that: if another version took over since, nothing is
    /// switched.
    ///
    /// Errors: [`Error::ServingChanged`] if the serving file no longer
    /// names the version this runner last saw (another version took over
    /// since; the runner now remembers the one found and builds beside it:
    /// a second call takes over from it), [`Error::Superseded`] if a higher
    /// version serves, [`Error::Locked`] naming the switch lock file if a
    /// switch in another process held it for more than a few seconds,
    /// [`Error::InvalidArgument`] for the unversioned projection. A failure
    /// to remove the old version's files after the switch is not an error
    /// of the take-over: `retired` is false.
    pub fn take_over(&mut self) -> Result<TakenOver> {
        if self.version == 0 {
            return Err(Error::InvalidArgument(format!(
                "projection {:?}: only a version (ProjectionBuilder::version, at least 1) takes over",
                self.name
            )));
        }
        self.take_over_from(self.serving)
    }

    /// [`take_over`](ProjectionRunner::take_over) from `expected`, the
    /// version the switch requires the serving file to name (0: none).
    fn take_over_from(&mut self, expected: u64) -> Result<TakenOver> {
        // Read to tell a higher version serving, or this one; what the
        // switch compares is `expected`, not what is read here.
        if self.serving_now()? == self.version {
            self.serving = self.version;
            return Ok(TakenOver {
                previous: None,
                retired: false,
            });
        }
        self.catch_up()?;
        self.write_model()?;
        let io = self.source.io();
        match serving::switch(&*io, &self.dir, &self.name, self.version, expected, self.next_position) {
            Ok(_) => {}
            Err(e) => {
                match e {
                    Error::ServingChanged { found, .. } => self.serving = found,
                    Error::Superseded { by, .. } => self.superseded = Some(by),
                    _ => {}
                }
                return Err(e);
            }
        }
        self.serving = self.version;
        // Not an error of the take-over, which is done: the files stay for
        // a later retirement, which reports why.
        let retired = serving::retire(&*io, &self.dir, &self.name, expected);
        crate::trace::when! {
            if let Err(e) = &retired {
                crate::trace::event!(WARN, error = %e, "annal could not retire a superseded projection version");
            }
        }
        let retired = retired.unwrap_or(false);
        Ok(TakenOver {
            previous: Some(expected),
            retired,
        })
    }

    /// Remove this superseded version's files (its model, its lock file):
    /// [`Error::InvalidArgument`] if it is not superseded (it serves, or may
    /// take over). Takes the switch lock while it removes them
    /// ([`Error::Locked`] naming it if a switch holds it longer than a few
    /// seconds), so the switch that superseded it is durable first.
    pub fn retire(mut self) -> Result<()> {
        match self.observe() {
            Err(Error::Superseded { .. }) => {}
            Ok(()) => {
                return Err(Error::InvalidArgument(format!(
                    "projection {:?}: version {} is not superseded; only a superseded version is retired",
                    self.name, self.version
                )));
            }
            Err(e) => return Err(e),
        }
        // Versions only go up: still superseded under the switch lock.
        serving::remove_version_files(&*self.source.io(), &self.dir, &self.name, self.version)?;
        Ok(())
    }

    /// Whether the log holds what a file at `next` with `last` folded: its
    /// end is not below `next`, and the event at `next - 1`, if there is one
    /// there, has the fingerprint `last` (0: not checked).
    fn still_holds(&self, next: u64, last: u64) -> Result<bool> {
        let view = self.source.view()?;
        if next > view.next_position() {
            return Ok(false);
        }
        let here = last_event_below(&view, next);
        Ok(last == 0 || here == 0 || here == last)
    }

    /// Fold every event visible now past the model's position.
    fn catch_up(&mut self) -> Result<u64> {
        let view = self.source.view()?;
        let mut folded = 0u64;
        let mut last = None;
        for r in view.read_all(self.next_position) {
            let r = r?;
            view.fold_into(&self.projection, &mut self.model, &r)?;
            last = Some((r.position(), r.event_id()));
            folded += 1;
        }
        let end = view.next_position();
        if end > self.next_position {
            self.next_position = end;
            // The event at `end - 1` if it is the last one folded (as
            // `last_event_below` would find it, without reading it again).
            self.last_event = match last {
                Some((p, id)) if p + 1 == end => fingerprint(id.as_bytes()),
                _ => 0,
            };
            self.pending += folded.max(1);
        }
        Ok(folded)
    }

    /// Fold what is new, waiting up to `timeout` for something to be
    /// appended if nothing is; save when due. Returns the events folded.
    /// [`Error::Closed`] once the log is closed and everything was folded.
    ///
    /// [`Error::Superseded`] once a higher version serves (spec 24.8): the
    /// runner begins no save from then on.
    pub fn step(&mut self, timeout: Duration) -> Result<u64> {
        self.observe()?;
        let epoch = self.source.epoch();
        let ended = self.source.ended();
        let mut folded = self.catch_up()?;
        if folded == 0 {
            if let Some(e) = ended {
                self.save()?;
                return Err(e);
            }
            self.source.wait(epoch, timeout);
            folded = self.catch_up()?;
        }
        if self.take_over_due() {
            match self.take_over() {
                // Another version took over first: builds beside it.
                Ok(_) | Err(Error::ServingChanged { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if self.pending >= self.save_every || (self.pending > 0 && self.last_save.elapsed() >= self.save_interval) {
            self.save()?;
        }
        Ok(folded)
    }

    /// Step until `stop` returns true (asked between steps, at least every
    /// `poll`) or the log is closed; then save.
    pub fn run(&mut self, poll: Duration, mut stop: impl FnMut(&Self) -> bool) -> Result<()> {
        while !stop(self) {
            match self.step(poll) {
                Ok(_) => {}
                Err(Error::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        self.save()
    }

    /// Save the model and its position now: one file, written whole
    /// (temporary file, fsync, rename, directory fsync).
    /// [`Error::Superseded`] (nothing written) once a higher version serves.
    /// The serving file is read before the write, not under the switch
    /// lock: a save that read it just before a switch may land just after
    /// (no reader follows this version's file any more then); no save begun
    /// after it saw the switch writes anything.
    pub fn save(&mut self) -> Result<()> {
        self.observe()?;
        self.write_model()
    }

    /// Write the model file if anything changed since it was written.
    fn write_model(&mut self) -> Result<()> {
        if self.pending == 0 && serving::present(&self.path) {
            return Ok(());
        }
        let model = postcard::to_allocvec(&self.model).map_err(|e| {
            Error::InvalidArgument(format!("{}: the model does not serialize: {e}", self.path.display()))
        })?;
        let bytes = encode_projection(self.next_position, self.last_event, &model);
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        crate::storage::io::write_shared(&*self.source.io(), dir, &self.path, &bytes)?;
        self.pending = 0;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Save and let go of the name ([`Error::Superseded`], nothing saved,
    /// once a higher version serves).
    pub fn close(mut self) -> Result<()> {
        self.save()
    }

    /// Let go of the name without saving, as a crash would: the next runner
    /// of the name continues from the last save.
    pub fn abandon(self) {}

    /// The model, taking it out of the runner (saved first).
    pub fn into_model(mut self) -> Result<P::Model> {
        self.save()?;
        Ok(self.model)
    }
}
