//! Shared by every bench: sizes and their scaling, criterion settings, a
//! seeded RNG, the SQLite baseline's schema, and the figure descriptions that
//! `benches/ratios.rs` turns into the table of ratios.
//!
//! Sizes: each bench has a default that keeps a full `cargo bench` short on 2
//! cores; `ANNAL_BENCH_SCALE` multiplies every size (e.g. `10` for the issue's
//! 10M-event shapes), and `cargo bench -- --test` (CI) uses small sizes so
//! every bench runs once quickly.
#![allow(dead_code)] // each bench uses part of this module

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annal::io::{Io, IoFile, StdIo};
use criterion::Criterion;
use rusqlite::Connection;

/// True when the bench binary runs in criterion's test mode
/// (`cargo bench -- --test`): build small inputs, run each routine once.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// An environment variable as an integer (`_` separators allowed).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.replace('_', "").parse().ok())
}

/// `ANNAL_BENCH_SCALE` (default 1).
pub fn scale() -> f64 {
    std::env::var("ANNAL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// A size: `ci` in test mode, else `default` times the scale, unless the
/// variable `var` gives it exactly.
pub fn size(var: &str, default: u64, ci: u64) -> u64 {
    if let Some(v) = env_u64(var) {
        return v.max(1);
    }
    if test_mode() {
        return ci.max(1);
    }
    ((default as f64 * scale()) as u64).max(1)
}

/// Criterion settings shared by all benches: short warm-up and measurement so
/// that a full `cargo bench` stays within minutes. Command-line flags
/// (`--measurement-time`, `--warm-up-time`, `--sample-size`) override them.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .without_plots()
}

/// splitmix64: a small seeded generator (no `rand` dependency needed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// A payload of `len` bytes that does not compress to nothing.
pub fn payload(len: usize) -> Vec<u8> {
    let mut rng = Rng(len as u64);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A scratch directory for a bench's files, under `ANNAL_BENCH_DIR` if set
/// (default: the system temp directory).
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    match std::env::var_os("ANNAL_BENCH_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).expect("create ANNAL_BENCH_DIR");
            b.tempdir_in(d)
        }
        None => b.tempdir(),
    }
    .expect("create a scratch directory")
}

/// A fresh log of `n` events (`Durability::Buffered`) in a new scratch
/// directory: batches of 100 events with payload `payload`, batch `b` to
/// stream `order-{b % 1000}`, event `i` of a batch of type
/// `types[i % types.len()]`; synced before it is returned.
pub fn batched_log(prefix: &str, n: u64, payload: &[u8], types: &[&str]) -> (tempfile::TempDir, annal::Log) {
    batched_log_with(prefix, n, payload, types, annal::Options::default())
}

/// [`batched_log`] with the log opened with `opts` (its durability replaced
/// by `Buffered`), e.g. `Options::default().chain(false)`.
pub fn batched_log_with(
    prefix: &str,
    n: u64,
    payload: &[u8],
    types: &[&str],
    opts: annal::Options,
) -> (tempfile::TempDir, annal::Log) {
    const BATCH: u64 = 100;
    const STREAMS: u64 = 1000;
    let dir = scratch(prefix);
    let opts = opts.durability(annal::Durability::Buffered);
    let log = annal::Log::open_with(dir.path().join("log"), opts).expect("open");
    let names: Vec<String> = (0..STREAMS).map(|i| format!("order-{i}")).collect();
    let full: Vec<annal::EventData<'_>> = (0..BATCH as usize)
        .map(|i| annal::EventData::new(types[i % types.len()], payload))
        .collect();
    let (mut done, mut b) = (0, 0);
    while done < n {
        let k = (n - done).min(BATCH);
        let stream = &names[(b % STREAMS) as usize];
        log.append(stream, annal::ExpectedVersion::Any, &full[..k as usize])
            .expect("append");
        done += k;
        b += 1;
    }
    log.sync().expect("sync");
    (dir, log)
}

/// `synchronous` setting of the SQLite baseline.
#[derive(Clone, Copy, Debug)]
pub enum Sync {
    /// `synchronous = NORMAL` (WAL: no fsync per commit), against `Buffered`.
    Normal,
    /// `synchronous = FULL` (an fsync per commit), against `Fsync`.
    Full,
}

/// The SQLite events table a user would otherwise pick: WAL, an integer
/// primary key as the global position, `UNIQUE(stream, version)`. It holds
/// what annal stores of each event: position, stream, stream version, event
/// type, timestamp, the 16-byte event id (`RecordRef::event_id`), payload and
/// metadata. The payload's schema version is left out: every bench writes 0.
pub fn sqlite_open(path: &Path, sync: Sync) -> Connection {
    let db = Connection::open(path).expect("open sqlite");
    let sync = match sync {
        Sync::Normal => "NORMAL",
        Sync::Full => "FULL",
    };
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         CREATE TABLE IF NOT EXISTS events (
             position INTEGER PRIMARY KEY,
             stream TEXT NOT NULL,
             version INTEGER NOT NULL,
             type TEXT NOT NULL,
             ts INTEGER NOT NULL,
             id BLOB NOT NULL,
             data BLOB NOT NULL,
             metadata BLOB NOT NULL,
             UNIQUE (stream, version)
         );"
    ))
    .expect("create the sqlite schema");
    db
}

/// The insert statement of the SQLite baseline for new events: position,
/// stream, version, type, timestamp, payload, metadata; the event id is 16
/// random bytes that SQLite draws (`randomblob(16)`), as annal draws an id
/// for each event it appends.
pub const SQLITE_INSERT: &str = "INSERT INTO events (position, stream, version, type, ts, data, metadata, id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, randomblob(16))";

/// The insert statement of a copy of a log's events: [`SQLITE_INSERT`]'s
/// columns, then the event's own 16-byte id.
pub const SQLITE_INSERT_ID: &str = "INSERT INTO events (position, stream, version, type, ts, data, metadata, id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The same events in SQLite (a table of [`sqlite_open`]): every record of
/// `view`, positions, versions, timestamps and ids included, in transactions
/// of 10,000 rows.
pub fn sqlite_copy(path: &Path, view: &annal::LogView) -> Connection {
    sqlite_copy_in(path, view, 10_000)
}

/// [`sqlite_copy`] in transactions of `rows_per_tx` rows.
pub fn sqlite_copy_in(path: &Path, view: &annal::LogView, rows_per_tx: usize) -> Connection {
    let mut db = sqlite_open(path, Sync::Normal);
    let mut recs = view.read_all(0).peekable();
    while recs.peek().is_some() {
        let tx = db.transaction().expect("begin");
        {
            let mut ins = tx.prepare_cached(SQLITE_INSERT_ID).expect("prepare");
            for r in recs.by_ref().take(rows_per_tx.max(1)) {
                let r = r.expect("read");
                ins.execute(rusqlite::params![
                    r.position() as i64,
                    r.stream(),
                    r.stream_version() as i64,
                    r.event_type(),
                    r.timestamp() as i64,
                    r.payload(),
                    r.metadata(),
                    &r.event_id().as_bytes()[..],
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    db
}

/// Milliseconds since the epoch, as annal stamps events.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where criterion writes its results (the same rule criterion uses).
pub fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    // Bench binaries run from the package root; the target dir is beside it
    // unless configured elsewhere, and the binary lives in <target>/release/deps.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// What one iteration of a benchmark group processes, and which ratios the
/// table shows: written to `<criterion dir>/<group>/annal-figure.json` for
/// `benches/ratios.rs`. Not written in test mode.
pub struct Figure {
    group: String,
    events: u64,
    bytes: u64,
    rows: Vec<serde_json::Value>,
    metrics: Vec<serde_json::Value>,
}

impl Figure {
    /// A group whose every iteration handles `events` events and `bytes`
    /// bytes of user data (payloads; 0 when not meaningful).
    pub fn new(group: &str, events: u64, bytes: u64) -> Figure {
        Figure {
            group: group.to_owned(),
            events,
            bytes,
            rows: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// A table row for the bench function `bench`, with ratios against other
    /// functions of the group: `(name, other bench, target)`; the ratio is
    /// `time(other) / time(bench)` (above 1: `bench` is faster), and `target`
    /// is the least ratio the issue asks for.
    pub fn row(mut self, bench: &str, vs: &[(&str, &str, Option<f64>)]) -> Figure {
        let vs: Vec<_> = vs
            .iter()
            .map(|(name, other, target)| serde_json::json!({"name": name, "bench": other, "target": target}))
            .collect();
        self.rows.push(serde_json::json!({"bench": bench, "vs": vs}));
        self
    }

    /// A measured quantity other than time (e.g. events per fsync) of the
    /// bench function `bench`, with the least value the issue asks for.
    pub fn metric(mut self, bench: &str, name: &str, value: f64, target: Option<f64>) -> Figure {
        self.metrics
            .push(serde_json::json!({"bench": bench, "name": name, "value": value, "target": target}));
        self
    }

    /// Write the description (not in test mode).
    pub fn save(self) {
        if test_mode() {
            return;
        }
        let dir = criterion_dir().join(&self.group);
        let body = serde_json::json!({
            "group": self.group,
            "events": self.events,
            "bytes": self.bytes,
            "rows": self.rows,
            "metrics": self.metrics,
        });
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("annal-figure.json"), format!("{body:#}\n"));
        }
    }
}

/// Drop every file under `path` (a file or a directory, recursively) from
/// the page cache: `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)` on each.
/// Only clean pages are dropped, and none that a live mapping holds: sync
/// the files once after writing them ([`sync_tree`]) and close the store
/// first. Returns the number of files advised.
pub fn evict(path: &Path) -> usize {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        return entries.flatten().map(|e| evict(&e.path())).sum();
    }
    if !meta.is_file() {
        return 0;
    }
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    evict_file(&f);
    1
}

#[cfg(target_os = "linux")]
fn evict_file(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a file descriptor that `f` owns for the
    // duration of the call; it touches no memory of the program.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

#[cfg(not(target_os = "linux"))]
fn evict_file(_: &std::fs::File) {}

/// `fsync` every file under `path`, so that [`evict`] can drop their pages
/// (the page cache keeps dirty pages).
pub fn sync_tree(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            sync_tree(&e.path());
        }
    } else if meta.is_file()
        && let Ok(f) = std::fs::File::open(path)
    {
        let _ = f.sync_all();
    }
}

/// Bytes of the files under `path` (recursively): `(apparent length, bytes
/// allocated on disk)`.
pub fn tree_bytes(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if meta.is_dir() {
        return std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| tree_bytes(&e.path()))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    }
    if meta.is_file() {
        (meta.len(), meta.blocks() * 512)
    } else {
        (0, 0)
    }
}

/// Append `n` events of `payload` (type `event_type`) round-robin over
/// `names`, in appends of 1 to `max_batch` events (seeded): the interleaved
/// streams of `benches/streams.rs`'s `read_stream` log.
pub fn build_interleaved_log(dir: &Path, n: u64, names: &[String], payload: &[u8], event_type: &str, max_batch: u64) {
    let batch: Vec<annal::EventData<'_>> = (0..max_batch)
        .map(|_| annal::EventData::new(event_type, payload))
        .collect();
    let log = annal::Log::open_with(dir, annal::Options::default()).expect("open");
    let mut rng = Rng(0x5eed_0001);
    let (mut written, mut s) = (0u64, 0usize);
    while written < n {
        let k = (1 + rng.below(max_batch)).min(n - written);
        log.append(&names[s], annal::ExpectedVersion::Any, &batch[..k as usize])
            .expect("append");
        written += k;
        s = (s + 1) % names.len();
    }
    log.close().expect("close");
}

/// The SQLite baseline's read of one stream (a cached statement on `db`):
/// `(events, payload bytes)`.
pub fn sqlite_stream_sum(db: &Connection, stream: &str) -> (u64, u64) {
    let mut stmt = db
        .prepare_cached("SELECT data FROM events WHERE stream = ?1 ORDER BY version")
        .expect("prepare");
    let mut rows = stmt.query([stream]).expect("query");
    let (mut n, mut sum) = (0, 0);
    while let Some(row) = rows.next().expect("step") {
        sum += row.get_ref(0).expect("column").as_blob().expect("blob").len() as u64;
        n += 1;
    }
    (n, sum)
}

/// Remove the index checkpoints (spec 17.5) of the log in `dir`: its next
/// open walks the whole active segment, as after a crash before any.
pub fn remove_checkpoints(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "ckpt") {
            std::fs::remove_file(&p).expect("remove checkpoint");
        }
    }
}

/// [`StdIo`] that counts fsyncs of files (not of the directory).
#[derive(Debug, Default)]
pub struct CountingIo {
    pub syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
pub struct CountingFile {
    inner: Box<dyn IoFile>,
    syncs: Arc<AtomicU64>,
}

impl Io for CountingIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let inner = StdIo.create(path)?;
        Ok(Box::new(CountingFile {
            inner,
            syncs: self.syncs.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let inner = StdIo.open(path)?;
        Ok(Box::new(CountingFile {
            inner,
            syncs: self.syncs.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

impl IoFile for CountingFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }

    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}
