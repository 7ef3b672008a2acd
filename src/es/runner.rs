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

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::es::projection::Projection;
use crate::format::consumer::{decode_projection, encode_projection, fingerprint};
use crate::read::view::{LogView, Reader};
use crate::storage::io::StdIo;
use crate::writer::Log;

/// The prefix of a projection's file name: `annal.proj.<name>`.
pub const PROJECTION_FILE_PREFIX: &str = "annal.proj.";

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
}

impl Log {
    /// A runner of `projection` under `name` (see [`ProjectionRunner`]).
    /// A new version of a projection is a new name (`revenue-v2`): it builds
    /// beside the running one, which keeps serving until the new one has
    /// caught up.
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
}

impl Reader {
    /// A runner of `projection` under `name` in a process other than the
    /// writer's (see [`Log::projection`]): it polls for new events, and its
    /// file and lock are the files it writes in the log directory.
    pub fn projection<P: Projection>(self, name: &str, projection: P) -> ProjectionBuilder<P> {
        ProjectionBuilder::new(Source::Reader(Box::new(self)), name, projection)
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

    /// Open the runner: take its name ([`Error::Locked`] if another runner
    /// holds it), load its file (the model and position; [`Error::Corrupt`]
    /// naming it if damaged, [`Error::InvalidArgument`] if the model no
    /// longer deserializes), and catch up with the log: from nothing with a
    /// parallel rebuild, else from the file's position on. The caught-up
    /// model is saved.
    pub fn open(self) -> Result<ProjectionRunner<P>> {
        super::consumer::check_name(&self.name)?;
        let dir = self.source.dir().to_owned();
        let path = dir.join(format!("{PROJECTION_FILE_PREFIX}{}", self.name));
        let lock_path = dir.join(format!("{PROJECTION_FILE_PREFIX}{}.lock", self.name));
        let lock = lock_name(&lock_path)?;
        let loaded = match crate::storage::io::open_read(&path) {
            Ok(f) => Some(read_projection::<P>(f, &path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut runner = ProjectionRunner {
            source: self.source,
            path,
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

/// The position, last event and model a projection file holds.
fn read_projection<P: Projection>(f: File, path: &std::path::Path) -> Result<(u64, u64, P::Model)>
where
    P::Model: DeserializeOwned,
{
    use std::io::Read;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let cap = crate::format::consumer::MAX_PROJECTION_MODEL + 64;
    if len > cap {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: 0,
            detail: format!("expected a projection file of at most {cap} bytes, found {len}"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    let (next, last, model) = decode_projection(&bytes).map_err(|d| d.at(path))?;
    let model = postcard::from_bytes(model).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: the saved model does not deserialize as this projection's model ({e}); a projection whose model \
             type changed takes a new name",
            path.display()
        ))
    })?;
    Ok((next, last, model))
}

/// A projection kept up to date from the log: its model, and the position
/// after the last event folded into it, saved together (spec 24.5).
/// [`step`](ProjectionRunner::step) folds what is new (waiting for it up to
/// a timeout); [`run`](ProjectionRunner::run) steps until told to stop.
pub struct ProjectionRunner<P: Projection> {
    source: Source,
    path: PathBuf,
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
    pub fn step(&mut self, timeout: Duration) -> Result<u64> {
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
    pub fn save(&mut self) -> Result<()> {
        if self.pending == 0 && self.path.exists() {
            return Ok(());
        }
        let model = postcard::to_allocvec(&self.model).map_err(|e| {
            Error::InvalidArgument(format!("{}: the model does not serialize: {e}", self.path.display()))
        })?;
        let bytes = encode_projection(self.next_position, self.last_event, &model);
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        crate::storage::io::write_derived(&*self.source.io(), dir, &self.path, &bytes)?;
        self.pending = 0;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Save and let go of the name.
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
