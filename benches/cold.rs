//! Cold reads and open: what a process pays when the log's pages are not in
//! the page cache (issue 15).
//!
//! One data set, built once and cached under `<target>/bench-data/cold-<N>-<S>/`
//! (a rerun with the same sizes skips building): N events in S interleaved
//! streams `order-{i}` (appends of 1 to 5 events, seeded, round-robin over the
//! streams, 256-byte payloads: the `read_stream` log of `benches/streams.rs`),
//! stored three ways:
//!
//! * an annal log (`log/`);
//! * SQLite (`events.sqlite`): the events table of `common::sqlite_open` (WAL,
//!   `UNIQUE(stream, version)`), filled from the log, WAL checkpointed;
//! * redb (`events.redb`): a table keyed `(stream, version)` → payload.
//!
//! Defaults: N = 1,000,000, S = 10,000; `ANNAL_BENCH_SCALE=10` gives 10M
//! events in 100,000 streams (about 15 GB of disk for the three stores);
//! `ANNAL_BENCH_EVENTS` / `ANNAL_BENCH_STREAMS` set them exactly.
//!
//! Groups (every store is closed, and every one of its files dropped from the
//! page cache with `posix_fadvise(DONTNEED)`, before each cold iteration; only
//! open + read is timed, with `iter_custom`):
//!
//! * `cold_read_stream`: a random stream (seeded, the same draws for every
//!   store), read whole from a freshly opened store, summing payload lengths.
//!   `annal`: `Reader::open` + `view` + `read_stream` (what `annal read
//!   --stream` does); `sqlite_mmap_off` (SQLite's default); `sqlite_mmap_on`
//!   (`PRAGMA mmap_size` as large as SQLite allows); `redb` (`Database::open`,
//!   a read transaction, a range over the stream's keys).
//! * `cold_replay`: `Reader::open` + `view` + `read_all(0)` of the whole log,
//!   summing payload lengths (annal only: how a sequential read fares once
//!   mappings are advised for random access).
//! * `open_cold`, `open_warm`: open + close of each store: `annal_log`
//!   (`Log::open` + `close`), `annal_reader` (`Reader::open` + `view`),
//!   `sqlite` (open + prepare the stream select, which reads the schema),
//!   `redb` (`Database::open`).
//!
//! Bytes on disk per event of each store are printed. `cargo bench --bench
//! cold`; `-- --test` (CI) builds a tiny data set (20,000 events in 200
//! streams) and runs each routine once.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annal::{Direction, Reader};
use common::Rng;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use rusqlite::Connection;

const EVENT_TYPE: &str = "ItemAdded";
const PAYLOAD: usize = 256;
const MAX_BATCH: u64 = 5;
/// The redb table: `(stream, version)` → payload.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const SELECT: &str = "SELECT data FROM events WHERE stream = ?1 ORDER BY version";
/// The SQLite `mmap_size` of `sqlite_mmap_on` (SQLite clamps it to its
/// compile-time maximum).
const SQLITE_MMAP: u64 = 1 << 40;

/// The cached data set.
struct Data {
    dir: PathBuf,
    n: u64,
    names: Vec<String>,
}

impl Data {
    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    fn sqlite(&self) -> PathBuf {
        self.dir.join("events.sqlite")
    }
    fn redb(&self) -> PathBuf {
        self.dir.join("events.redb")
    }
    /// The files of the SQLite store (the database, and its WAL and shared
    /// memory files when they exist).
    fn sqlite_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|s| self.dir.join(format!("events.sqlite{s}")))
            .collect()
    }
    fn evict_log(&self) {
        common::evict(&self.log());
    }
    fn evict_sqlite(&self) {
        for f in self.sqlite_files() {
            common::evict(&f);
        }
    }
    fn evict_redb(&self) {
        common::evict(&self.redb());
    }
}

/// Build (or find cached) the data set of `n` events in `s` streams.
fn data() -> Data {
    let n = common::size("ANNAL_BENCH_EVENTS", 1_000_000, 20_000);
    let s = common::size("ANNAL_BENCH_STREAMS", 10_000, 200).min(n);
    let names: Vec<String> = (0..s).map(|i| format!("order-{i}")).collect();
    let target = common::criterion_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let dir = target.join("bench-data").join(format!("cold-{n}-{s}"));
    let data = Data { dir, n, names };
    let done = data.dir.join("complete");
    if done.exists() {
        eprintln!("cold: using the cached data set {}", data.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&data.dir);
        std::fs::create_dir_all(&data.dir).expect("create the data set directory");
        eprintln!("cold: building {n} events in {s} streams in {}", data.dir.display());
        let t = Instant::now();
        let payload = common::payload(PAYLOAD);
        common::build_interleaved_log(&data.log(), n, &data.names, &payload, EVENT_TYPE, MAX_BATCH);
        build_copies(&data);
        common::sync_tree(&data.dir);
        std::fs::write(&done, b"").expect("mark the data set complete");
        eprintln!("cold: built in {:.1} s", t.elapsed().as_secs_f64());
    }
    common::sync_tree(&data.dir);
    for (what, path) in [("annal", data.log()), ("sqlite", data.sqlite()), ("redb", data.redb())] {
        let (len, alloc) = match what {
            "sqlite" => data
                .sqlite_files()
                .iter()
                .map(|f| common::tree_bytes(f))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            _ => common::tree_bytes(&path),
        };
        eprintln!(
            "cold: {what}: {:.1} MB, {:.1} bytes per event ({:.1} allocated)",
            len as f64 / 1e6,
            len as f64 / n as f64,
            alloc as f64 / n as f64
        );
    }
    data
}

/// The SQLite and redb copies of the log's events.
fn build_copies(data: &Data) {
    let reader = Reader::open(data.log()).expect("open the log");
    let view = reader.view().expect("view");
    assert_eq!(view.next_position(), data.n);
    let db = common::sqlite_copy(&data.sqlite(), &view);
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    drop(db);
    let db = redb::Database::create(data.redb()).expect("create redb");
    let mut recs = view.read_all(0).peekable();
    while recs.peek().is_some() {
        let tx = db.begin_write().expect("begin");
        {
            let mut t = tx.open_table(EVENTS).expect("table");
            for r in recs.by_ref().take(100_000) {
                let r = r.expect("read");
                t.insert((r.stream(), r.stream_version()), r.payload()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
}

// ------------------------------------------------------------------ reads

/// Every event of `stream` from a freshly opened reader: `(events, payload
/// bytes)`.
fn annal_read(dir: &Path, stream: &str) -> (u64, u64) {
    let reader = Reader::open(dir).expect("open");
    let view = reader.view().expect("view");
    let (mut n, mut sum) = (0, 0);
    for r in view.read_stream(stream, 0, Direction::Forward, u64::MAX) {
        sum += r.expect("read").payload().len() as u64;
        n += 1;
    }
    (n, sum)
}

/// Every event of the log from a freshly opened reader.
fn annal_replay(dir: &Path) -> (u64, u64) {
    let reader = Reader::open(dir).expect("open");
    let view = reader.view().expect("view");
    let (mut n, mut sum) = (0, 0);
    for r in view.read_all(0) {
        sum += r.expect("read").payload().len() as u64;
        n += 1;
    }
    (n, sum)
}

fn sqlite_conn(path: &Path, mmap: bool) -> Connection {
    let db = Connection::open(path).expect("open sqlite");
    if mmap {
        db.execute_batch(&format!("PRAGMA mmap_size = {SQLITE_MMAP};"))
            .expect("mmap_size");
    }
    db
}

fn sqlite_read(path: &Path, mmap: bool, stream: &str) -> (u64, u64) {
    common::sqlite_stream_sum(&sqlite_conn(path, mmap), stream)
}

fn redb_read(path: &Path, stream: &str) -> (u64, u64) {
    let db = redb::Database::open(path).expect("open redb");
    let tx = db.begin_read().expect("begin");
    let t = tx.open_table(EVENTS).expect("table");
    let (mut n, mut sum) = (0, 0);
    for e in t.range((stream, 0u64)..=(stream, u64::MAX)).expect("range") {
        let (_, v) = e.expect("entry");
        sum += v.value().len() as u64;
        n += 1;
    }
    (n, sum)
}

/// Time `iters` runs of `run`, each after `evict` (not timed); whatever
/// `run` returns is dropped after the clock stops.
fn cold<T>(iters: u64, evict: impl Fn(), mut run: impl FnMut() -> T) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        evict();
        let t = Instant::now();
        let out = run();
        total += t.elapsed();
        drop(black_box(out));
    }
    total
}

fn cold_read_stream(c: &mut Criterion, d: &Data) {
    let s = d.names.len() as u64;
    // Every store returns the same events.
    let mut rng = Rng(0xc4ec);
    for _ in 0..20 {
        let name = &d.names[rng.below(s) as usize];
        let a = annal_read(&d.log(), name);
        assert!(a.0 > 0, "{name}");
        assert_eq!(a, sqlite_read(&d.sqlite(), false, name), "{name}");
        assert_eq!(a, sqlite_read(&d.sqlite(), true, name), "{name}");
        assert_eq!(a, redb_read(&d.redb(), name), "{name}");
    }
    eprintln!("cold_read_stream: ~{} events per stream", d.n / s);

    let mut g = c.benchmark_group("cold_read_stream");
    g.sampling_mode(SamplingMode::Flat);
    let pick = |rng: &mut Rng| d.names[rng.below(s) as usize].as_str();
    let mut rng = Rng(0x5eed);
    g.bench_function("annal", |b| {
        b.iter_custom(|iters| {
            let mut names = (0..iters).map(|_| pick(&mut rng));
            cold(
                iters,
                || d.evict_log(),
                || annal_read(&d.log(), names.next().unwrap_or("order-0")),
            )
        })
    });
    for (label, mmap) in [("sqlite_mmap_off", false), ("sqlite_mmap_on", true)] {
        let mut rng = Rng(0x5eed);
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut names = (0..iters).map(|_| pick(&mut rng));
                cold(
                    iters,
                    || d.evict_sqlite(),
                    || sqlite_read(&d.sqlite(), mmap, names.next().unwrap_or("order-0")),
                )
            })
        });
    }
    let mut rng = Rng(0x5eed);
    g.bench_function("redb", |b| {
        b.iter_custom(|iters| {
            let mut names = (0..iters).map(|_| pick(&mut rng));
            cold(
                iters,
                || d.evict_redb(),
                || redb_read(&d.redb(), names.next().unwrap_or("order-0")),
            )
        })
    });
    g.finish();
}

fn cold_replay(c: &mut Criterion, d: &Data) {
    assert_eq!(annal_replay(&d.log()).0, d.n);
    let mut g = c.benchmark_group("cold_replay");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.bench_function("annal", |b| {
        b.iter_custom(|iters| cold(iters, || d.evict_log(), || annal_replay(&d.log())))
    });
    g.finish();
}

// ------------------------------------------------------------------ open

fn annal_log_open(dir: &Path) {
    let log = annal::Log::open_with(dir, annal::Options::default()).expect("open");
    log.close().expect("close");
}

fn annal_reader_open(dir: &Path) -> u64 {
    let reader = Reader::open(dir).expect("open");
    reader.view().expect("view").next_position()
}

fn sqlite_open(path: &Path) -> usize {
    let db = sqlite_conn(path, false);
    let stmt = db.prepare(SELECT).expect("prepare");
    stmt.column_count()
}

fn redb_open(path: &Path) {
    drop(redb::Database::open(path).expect("open redb"));
}

fn open_groups(c: &mut Criterion, d: &Data) {
    for (group, evicting) in [("open_cold", true), ("open_warm", false)] {
        let mut g = c.benchmark_group(group);
        g.sampling_mode(SamplingMode::Flat);
        let when = |evict: &dyn Fn()| {
            if evicting {
                evict()
            }
        };
        g.bench_function("annal_log", |b| {
            b.iter_custom(|iters| {
                cold(
                    iters,
                    || {
                        // close wrote the head file: sync it so that it can
                        // be dropped from the cache too.
                        common::sync_tree(&d.log().join("annal.head"));
                        when(&|| d.evict_log())
                    },
                    || annal_log_open(&d.log()),
                )
            })
        });
        g.bench_function("annal_reader", |b| {
            b.iter_custom(|iters| cold(iters, || when(&|| d.evict_log()), || annal_reader_open(&d.log())))
        });
        g.bench_function("sqlite", |b| {
            b.iter_custom(|iters| cold(iters, || when(&|| d.evict_sqlite()), || sqlite_open(&d.sqlite())))
        });
        g.bench_function("redb", |b| {
            b.iter_custom(|iters| cold(iters, || when(&|| d.evict_redb()), || redb_open(&d.redb())))
        });
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    let d = data();
    cold_read_stream(c, &d);
    cold_replay(c, &d);
    open_groups(c, &d);
}

criterion_group! {
    name = cold_benches;
    config = common::config();
    targets = benches
}
criterion_main!(cold_benches);
