//! Stream reads and open time, each beside its baseline in the same group.
//!
//! * `read_stream_random`: a log of N events in S interleaved streams (event
//!   `i` goes to `order-{i % S}`, one event per append, 256-byte payloads,
//!   several segments); each iteration reads every event of a random stream
//!   (seeded, a different stream each iteration) with `read_stream` and sums
//!   the payload lengths. Baseline `sqlite_indexed_select`: the same events in
//!   SQLite (WAL, `UNIQUE(stream, version)`), `SELECT data ... WHERE stream = ?
//!   ORDER BY version` through a cached prepared statement, summing the blob
//!   lengths.
//! * `open`: `Log::open` + `close` of logs of N1 and N2 events in the same S
//!   streams: open cost should not grow with the number of events.
//!
//! `cargo bench --bench streams`. Environment: `ANNAL_BENCH_EVENTS` (N, default
//! 200,000), `ANNAL_BENCH_STREAMS` (S, default N / 100, so ~100 events per
//! stream), `ANNAL_BENCH_OPEN_EVENTS` (N1,N2, default `100000,400000`),
//! `ANNAL_BENCH_SEGMENT_SIZE` (bytes, default 16 MiB).

use std::hint::black_box;
use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, Options};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rusqlite::Connection;

const PAYLOAD: usize = 256;
const EVENT_TYPE: &str = "ItemAdded";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.replace('_', "").parse().ok())
}

fn events() -> u64 {
    env_u64("ANNAL_BENCH_EVENTS").unwrap_or(200_000).max(1)
}

fn streams() -> u64 {
    env_u64("ANNAL_BENCH_STREAMS").unwrap_or(events() / 100).max(1)
}

fn options() -> Options {
    Options::default().segment_size(env_u64("ANNAL_BENCH_SEGMENT_SIZE").unwrap_or(16 << 20))
}

/// splitmix64: a small seeded generator (no `rand` dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

fn names(s: u64) -> Vec<String> {
    (0..s).map(|i| format!("order-{i}")).collect()
}

/// Write `n` events round-robin over `names`, one event per append, and close.
fn build_log(dir: &Path, n: u64, names: &[String]) {
    let payload = vec![7u8; PAYLOAD];
    let log = Log::open(dir, options()).unwrap();
    for i in 0..n {
        let ev = [EventData::new(EVENT_TYPE, payload.as_slice())];
        log.append(&names[(i % names.len() as u64) as usize], ExpectedVersion::Any, &ev)
            .unwrap();
    }
    log.close().unwrap();
}

/// The same events in SQLite, read back from the annal log (positions,
/// versions and timestamps included), in transactions of 10,000 rows.
fn build_sqlite(path: &Path, log: &Log) -> Connection {
    let mut db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE events (
             position INTEGER PRIMARY KEY,
             stream TEXT NOT NULL,
             version INTEGER NOT NULL,
             type TEXT NOT NULL,
             ts INTEGER NOT NULL,
             data BLOB NOT NULL,
             metadata BLOB NOT NULL,
             UNIQUE (stream, version)
         );",
    )
    .unwrap();
    let view = log.view().unwrap();
    let mut recs = view.read_all(0).peekable();
    while recs.peek().is_some() {
        let tx = db.transaction().unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO events (position, stream, version, type, ts, data, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for r in recs.by_ref().take(10_000) {
                let r = r.unwrap();
                ins.execute(rusqlite::params![
                    r.position() as i64,
                    r.stream(),
                    r.stream_version() as i64,
                    r.event_type(),
                    r.timestamp() as i64,
                    r.payload(),
                    r.metadata(),
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    db
}

fn annal_read(view: &annal::LogView, stream: &str) -> u64 {
    let mut sum = 0u64;
    for r in view.read_stream(stream, 0, Direction::Forward, u64::MAX) {
        sum += r.unwrap().payload().len() as u64;
    }
    sum
}

fn sqlite_read(db: &Connection, stream: &str) -> u64 {
    let mut stmt = db
        .prepare_cached("SELECT data FROM events WHERE stream = ?1 ORDER BY version")
        .unwrap();
    let mut rows = stmt.query([stream]).unwrap();
    let mut sum = 0u64;
    while let Some(row) = rows.next().unwrap() {
        sum += row.get_ref(0).unwrap().as_blob().unwrap().len() as u64;
    }
    sum
}

fn read_stream_random(c: &mut Criterion) {
    let (n, s) = (events(), streams());
    let names = names(s);
    let tmp = tempfile::Builder::new()
        .prefix("annal-bench-streams-")
        .tempdir()
        .unwrap();
    let log_dir = tmp.path().join("log");
    build_log(&log_dir, n, &names);
    let log = Log::open(&log_dir, options()).unwrap();
    let view = log.view().unwrap();
    let db = build_sqlite(&tmp.path().join("events.sqlite"), &log);
    // Both sides return every event of a stream.
    for name in [&names[0], &names[names.len() - 1]] {
        let expected = (n / s + u64::from((name[6..].parse::<u64>().unwrap()) < n % s)) * PAYLOAD as u64;
        assert_eq!(annal_read(&view, name), expected, "annal {name}");
        assert_eq!(sqlite_read(&db, name), expected, "sqlite {name}");
    }
    eprintln!(
        "read_stream_random: {n} events, {s} streams (~{} events each), {} segments, {:.1} MB",
        n / s,
        view.segment_count(),
        view.len_bytes() as f64 / 1e6
    );

    let mut g = c.benchmark_group("read_stream_random");
    let mut rng = Rng(0x5eed);
    g.bench_function("annal", |b| {
        b.iter(|| black_box(annal_read(&view, &names[rng.below(s) as usize])))
    });
    let mut rng = Rng(0x5eed);
    g.bench_function("sqlite_indexed_select", |b| {
        b.iter(|| black_box(sqlite_read(&db, &names[rng.below(s) as usize])))
    });
    g.finish();
    drop(view);
    log.close().unwrap();
}

fn open(c: &mut Criterion) {
    let sizes: Vec<u64> = std::env::var("ANNAL_BENCH_OPEN_EVENTS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|x| x.trim().replace('_', "").parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![100_000, 400_000]);
    let names = names(streams());
    let tmp = tempfile::Builder::new().prefix("annal-bench-open-").tempdir().unwrap();
    let mut g = c.benchmark_group("open");
    for &n in &sizes {
        let dir = tmp.path().join(format!("log-{n}"));
        build_log(&dir, n, &names);
        {
            let log = Log::open(&dir, options()).unwrap();
            let view = log.view().unwrap();
            let active = view.segment_bytes().last().map_or(0, <[u8]>::len);
            eprintln!(
                "open: {n} events, {} streams, {} segments, {:.1} MB (active segment {:.1} MB)",
                names.len(),
                view.segment_count(),
                view.len_bytes() as f64 / 1e6,
                active as f64 / 1e6
            );
        }
        g.bench_with_input(BenchmarkId::new("annal_open_close", n), &dir, |b, dir| {
            b.iter(|| {
                let log = Log::open(dir, options()).unwrap();
                black_box(log.next_position());
                log.close().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, read_stream_random, open);
criterion_main!(benches);
