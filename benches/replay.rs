//! Replay of a whole log beside its baselines, measured in the same group.
//!
//! Group `replay`: a log of N events (256-byte payloads, type `ItemAdded`,
//! appended with `Durability::Buffered` in batches of 100, batch `b` to stream
//! `order-{b % 1000}`), read from a `LogView` of the open log. Every
//! function reads every event once per iteration and sums the payload lengths
//! (or, for the limits, the bytes):
//!
//! * `annal_crc`: `view.read_all(0)`, every record's CRC checked (the default);
//! * `annal_no_crc`: `view.read_all_with(0, ReadOptions { verify_crc: false })`
//!   (structure still checked);
//! * `sqlite_scan`: the same events in SQLite (WAL, `UNIQUE(stream, version)`,
//!   `synchronous = NORMAL`, see `common::sqlite_open`), `SELECT data FROM
//!   events ORDER BY position` through a cached prepared statement, summing the
//!   blob lengths;
//! * `limit_crc32fast`: crc32fast over the same mapped segment bytes
//!   (`view.segment_bytes()`), the cost of checking every byte once;
//! * `limit_sum`: a plain sum of the same mapped bytes as little-endian u64
//!   words, the memory bandwidth.
//!
//! Everything is in the page cache (the log was just written and is read once
//! before timing), so these are CPU figures, not disk figures.
//!
//! `cargo bench --bench replay`; `ANNAL_BENCH_REPLAY_EVENTS` sets N (default
//! 1,000,000; `ANNAL_BENCH_SCALE` multiplies the default; 20,000 under
//! `-- --test`). Filter with e.g. `-- replay/annal_crc`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use annal::{LogView, ReadOptions};
use common::Figure;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;

const PAYLOAD: usize = 256;
const EVENT_TYPE: &str = "ItemAdded";

fn annal_sum(view: &LogView, opts: ReadOptions) -> u64 {
    let mut sum = 0u64;
    for r in view.read_all_with(0, opts) {
        sum += r.expect("read").payload().len() as u64;
    }
    sum
}

fn sqlite_sum(db: &Connection) -> u64 {
    let mut stmt = db
        .prepare_cached("SELECT data FROM events ORDER BY position")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut sum = 0u64;
    while let Some(row) = rows.next().expect("step") {
        let data = row.get_ref(0).expect("column").as_blob().expect("blob");
        sum += data.len() as u64;
    }
    sum
}

fn crc_limit(view: &LogView) -> u64 {
    view.segment_bytes().map(|b| crc32fast::hash(b) as u64).sum()
}

fn sum_limit(view: &LogView) -> u64 {
    let mut sum = 0u64;
    for bytes in view.segment_bytes() {
        let words = bytes.chunks_exact(8);
        let tail: u64 = words.remainder().iter().map(|&b| b as u64).sum();
        sum = words.fold(sum.wrapping_add(tail), |s, w| {
            s.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")))
        });
    }
    sum
}

fn replay(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_REPLAY_EVENTS", 1_000_000, 20_000);
    let payload = common::payload(PAYLOAD);

    let start = Instant::now();
    let (dir, log) = common::batched_log("annal-bench-replay-", n, &payload, &[EVENT_TYPE]);
    let view = log.view().expect("view");
    assert_eq!(view.next_position(), n);
    let db = common::sqlite_copy(&dir.path().join("events.sqlite"), &view);
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    eprintln!(
        "replay: {n} events, {} segment(s), {:.1} MB mapped, built in {:.1} s",
        view.segment_count(),
        view.len_bytes() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    // Every function sees the same events (and warms the page cache).
    let want = n * PAYLOAD as u64;
    assert_eq!(annal_sum(&view, ReadOptions::default()), want);
    assert_eq!(annal_sum(&view, ReadOptions { verify_crc: false }), want);
    assert_eq!(sqlite_sum(&db), want);
    black_box((crc_limit(&view), sum_limit(&view)));

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(n));
    // Iterations take tens to hundreds of milliseconds.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    g.bench_function("annal_crc", |b| {
        b.iter(|| black_box(annal_sum(&view, ReadOptions::default())))
    });
    g.bench_function("annal_no_crc", |b| {
        b.iter(|| black_box(annal_sum(&view, ReadOptions { verify_crc: false })))
    });
    g.bench_function("sqlite_scan", |b| b.iter(|| black_box(sqlite_sum(&db))));
    g.bench_function("limit_crc32fast", |b| b.iter(|| black_box(crc_limit(&view))));
    g.bench_function("limit_sum", |b| b.iter(|| black_box(sum_limit(&view))));
    g.finish();

    Figure::new("replay", n, n * PAYLOAD as u64)
        .row(
            "annal_crc",
            &[
                ("SQLite scan", "sqlite_scan", Some(2.5)),
                ("crc32fast", "limit_crc32fast", Some(0.5)),
                ("memory sum", "limit_sum", None),
            ],
        )
        .row(
            "annal_no_crc",
            &[("SQLite scan", "sqlite_scan", None), ("memory sum", "limit_sum", None)],
        )
        .save();
    drop(view);
    log.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = replay
}
criterion_main!(benches);
