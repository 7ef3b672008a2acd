//! Stream reads and open time.
//!
//! * `read_stream`: a log of N events in S interleaved streams `order-{i}`
//!   (appends of 1 to 5 events, seeded, round-robin over the streams, 256-byte
//!   payloads, so every segment holds nearly every stream). Each iteration
//!   reads every event of a random stream (seeded, a different draw each
//!   iteration) forward with `read_stream` and sums the payload lengths:
//!   `annal`. Baseline `sqlite_indexed_select`: the same events (positions,
//!   versions and timestamps copied from the annal log) in the SQLite events
//!   table of `common::sqlite_open` (WAL, `synchronous = NORMAL`,
//!   `UNIQUE(stream, version)`), read with `SELECT data FROM events WHERE
//!   stream = ?1 ORDER BY version` through a cached statement, summing the
//!   blob lengths. Defaults: N = 1,000,000, S = 10,000 (~100 events per
//!   stream); `ANNAL_BENCH_SCALE=10` gives the 10M events in 100,000
//!   streams; `ANNAL_BENCH_EVENTS` / `ANNAL_BENCH_STREAMS` set them exactly.
//!
//! * `read_stream_max_count` (issue 16): then the first half of the streams
//!   get the metadata `max_count(10)` (spec 3.7): `annal_max_count_10` reads
//!   one of them whole (its 10 visible events), `annal_whole` a stream of the
//!   other half whole (~100 events), `annal_newest_10_backward` the newest 10
//!   of such a stream backward (what an application does without the rule).
//!
//! * `open`: `Log::open` + `close` of a log of 1M events (`annal_1m`) and of
//!   one of 10M events (`annal_10m`), 32-byte payloads in appends of 100
//!   events round-robin over 10,000 streams. These are already the issue's
//!   sizes, so `ANNAL_BENCH_SCALE` does not change them
//!   (`ANNAL_BENCH_OPEN_SMALL` / `ANNAL_BENCH_OPEN_LARGE` set them).
//!
//!   What open costs: sealed segments are checked by their header and seal
//!   only (their records, index files and the stream table are mapped, not
//!   read), but the active segment is scanned in full to rebuild its in-memory
//!   index. Open time therefore follows how full the active segment happens to
//!   be, not the number of events: left to chance, a 10M-event log whose
//!   active segment was just rolled opens faster than a 1M-event log that sits
//!   in one 130 MB active segment, and the ratio would say nothing about log
//!   size. So both logs are built with the same active segment: the last
//!   `ANNAL_BENCH_OPEN_ACTIVE` events (default 50,000, ~6.4 MB) go into a
//!   segment of their own (the bench reopens the log with a tiny segment size
//!   for one append to force the roll). The two logs then differ only in what
//!   they hold in sealed segments, which is what the 1.2× target is about.
//!
//! * `open_active`: the dependency that remains, on the active segment. Two
//!   logs of 1M events each (same events as `open`), one whose active segment
//!   holds a single append (`active_tiny`), one whose active segment holds the
//!   last ~64 MB (`active_64mb`, 500,000 events; `ANNAL_BENCH_OPEN_FULL` sets
//!   the count).
//!
//! * `open_checkpoints`: `Log::open` alone of the `open_active` log with the
//!   active segment's index checkpoints (spec 17.5) and without them.
//!
//! The open groups use flat sampling (an open of a large active segment takes
//! tens of milliseconds) and time `open` + `close` (close fsyncs the head
//! file): what a process pays to open a log and let go of it.
//!
//! Every log's events, segment count, size and active segment size are
//! printed. `cargo bench --bench streams`; `-- --test` (CI) builds small logs
//! (20,000 events in 200 streams; open: 10,000 and 100,000 events).

mod common;

use std::hint::black_box;
use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, LogView, Options};
use common::{Figure, Rng};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::Connection;

const EVENT_TYPE: &str = "ItemAdded";
/// Payload of the `read_stream` log.
const READ_PAYLOAD: usize = 256;
/// Appends to the `read_stream` log hold 1 to this many events.
const READ_MAX_BATCH: u64 = 5;
/// Payload of the `open` logs.
const OPEN_PAYLOAD: usize = 32;
/// Events per append in the `open` logs.
const OPEN_BATCH: u64 = 100;
/// Streams of the `open` logs.
const OPEN_STREAMS: u64 = 10_000;

fn names(s: u64) -> Vec<String> {
    (0..s).map(|i| format!("order-{i}")).collect()
}

/// A size that `ANNAL_BENCH_SCALE` leaves alone: `var` if set, else `ci` in
/// test mode, else `default`.
fn fixed_size(var: &str, default: u64, ci: u64) -> u64 {
    common::env_u64(var)
        .unwrap_or(if common::test_mode() { ci } else { default })
        .max(1)
}

/// `annal_1m`, `annal_10k`, ... for `n` events.
fn label(prefix: &str, n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{prefix}_{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{prefix}_{}k", n / 1_000),
        n => format!("{prefix}_{n}"),
    }
}

/// Print what a log holds; returns the size of its active segment in bytes.
fn describe(what: &str, dir: &Path) -> u64 {
    let log = Log::open(dir).expect("open");
    let view = log.view().expect("view");
    let active = view
        .segment_bytes()
        .last()
        .map_or(0, |b| b.expect("segment maps").len());
    eprintln!(
        "{what}: {} events, {} segments, {:.1} MB, active segment {:.2} MB",
        view.next_position(),
        view.segment_count(),
        view.len_bytes() as f64 / 1e6,
        active as f64 / 1e6
    );
    drop(view);
    log.close().expect("close");
    active as u64
}

// ------------------------------------------------------------------ read_stream

/// Append `n` events round-robin over `names` in appends of 1..=5 (seeded).
fn build_read_log(dir: &Path, n: u64, names: &[String]) {
    let payload = common::payload(READ_PAYLOAD);
    let batch: Vec<EventData<'_>> = (0..READ_MAX_BATCH)
        .map(|_| EventData::new(EVENT_TYPE, payload.as_slice()))
        .collect();
    let log = Log::open(dir).expect("open");
    let mut rng = Rng(0x5eed_0001);
    let (mut written, mut s) = (0u64, 0usize);
    while written < n {
        let k = (1 + rng.below(READ_MAX_BATCH)).min(n - written);
        log.append(&names[s], ExpectedVersion::Any, &batch[..k as usize])
            .expect("append");
        written += k;
        s = (s + 1) % names.len();
    }
    log.close().expect("close");
}

/// Every event of `stream`, forward: `(events, payload bytes)`.
fn annal_read(view: &LogView, stream: &str) -> (u64, u64) {
    let (mut n, mut sum) = (0, 0);
    for r in view.read_stream(stream, 0, Direction::Forward, u64::MAX) {
        sum += r.expect("read").payload().len() as u64;
        n += 1;
    }
    (n, sum)
}

/// Stream metadata (issue 16, spec 3.7): the first half of the streams get
/// `max_count(10)`; reading one of them (its 10 visible events, found by
/// the rules lookup) against reading a stream of the other half whole
/// (~100 events) and its newest 10 backward (what an application does
/// without the rule).
fn read_stream_max_count(c: &mut Criterion, log: &Log, names: &[String]) {
    let half = names.len() / 2;
    for name in &names[..half] {
        log.set_stream_metadata(name, annal::StreamMetadata::new().max_count(10))
            .expect("metadata");
    }
    let view = log.view().expect("view");
    assert_eq!(annal_read(&view, &names[0]).0, 10);
    let mut g = c.benchmark_group("read_stream_max_count");
    let mut rng = Rng(0x5eed);
    g.bench_function("annal_max_count_10", |b| {
        b.iter(|| black_box(annal_read(&view, &names[rng.below(half as u64) as usize])))
    });
    let mut rng = Rng(0x5eed);
    g.bench_function("annal_whole", |b| {
        b.iter(|| black_box(annal_read(&view, &names[half + rng.below(half as u64) as usize])))
    });
    let mut rng = Rng(0x5eed);
    g.bench_function("annal_newest_10_backward", |b| {
        b.iter(|| {
            let name = &names[half + rng.below(half as u64) as usize];
            let n = view.read_stream(name, u64::MAX, Direction::Backward, 10).count();
            black_box(n)
        })
    });
    g.finish();
}

/// Every event of `stream` through SQLite's index: `(events, payload bytes)`.
fn sqlite_read(db: &Connection, stream: &str) -> (u64, u64) {
    common::sqlite_stream_sum(db, stream)
}

fn read_stream(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_EVENTS", 1_000_000, 20_000);
    let s = common::size("ANNAL_BENCH_STREAMS", 10_000, 200).min(n);
    let names = names(s);
    let tmp = common::scratch("annal-bench-streams-");
    let log_dir = tmp.path().join("log");
    build_read_log(&log_dir, n, &names);
    describe("read_stream log", &log_dir);
    let log = Log::open(&log_dir).expect("open");
    let view = log.view().expect("view");
    let db = common::sqlite_copy(&tmp.path().join("events.sqlite"), &view);
    // Both sides return the same events: every stream's (together, every
    // event of the log) if there are at most 10,000 streams, else a sample.
    assert_eq!(view.next_position(), n);
    let check: Vec<&String> = if s <= 10_000 {
        names.iter().collect()
    } else {
        let mut rng = Rng(0xc4ec);
        (0..1_000).map(|_| &names[rng.below(s) as usize]).collect()
    };
    let mut total = 0;
    for name in &check {
        let a = annal_read(&view, name);
        assert_eq!(a, sqlite_read(&db, name), "{name}");
        total += a.0;
    }
    assert!(check.len() < names.len() || total == n);
    eprintln!("read_stream: {n} events in {s} streams, ~{} events per stream", n / s);

    let mut g = c.benchmark_group("read_stream");
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
    read_stream_max_count(c, &log, &names);
    log.close().expect("close");
    Figure::new("read_stream", n / s, n / s * READ_PAYLOAD as u64)
        .row(
            "annal",
            &[("SQLite indexed select", "sqlite_indexed_select", Some(3.0))],
        )
        .save();
}

// ------------------------------------------------------------------ open

/// Append `n` events of `OPEN_PAYLOAD` bytes in appends of `OPEN_BATCH`
/// round-robin over `names`, the last `active` of them (rounded up to whole
/// appends) into a segment of their own, which stays the active segment.
fn build_open_log(dir: &Path, n: u64, active: u64, names: &[String]) {
    let payload = common::payload(OPEN_PAYLOAD);
    let batch: Vec<EventData<'_>> = (0..OPEN_BATCH)
        .map(|_| EventData::new(EVENT_TYPE, payload.as_slice()))
        .collect();
    let active = active.clamp(1, n);
    let mut s = 0usize;
    let mut append = |log: &Log, from: u64, to: u64| {
        let mut i = from;
        while i < to {
            let k = OPEN_BATCH.min(to - i);
            log.append(&names[s], ExpectedVersion::Any, &batch[..k as usize])
                .expect("append");
            s = (s + 1) % names.len();
            i += k;
        }
    };
    let sealed = n - active;
    let log = Log::open(dir).expect("open");
    append(&log, 0, sealed);
    log.close().expect("close");
    // With a 1-byte segment size, the next append starts a new segment
    // (unless the log is still empty).
    let first = OPEN_BATCH.min(active);
    let log = Log::open_with(dir, Options::default().segment_size(1)).expect("open");
    append(&log, sealed, sealed + first);
    log.close().expect("close");
    let log = Log::open(dir).expect("open");
    append(&log, sealed + first, n);
    log.close().expect("close");
}

fn open_close(dir: &Path) {
    let log = Log::open(dir).expect("open");
    black_box(log.next_position());
    log.close().expect("close");
}

fn open(c: &mut Criterion) {
    let small = fixed_size("ANNAL_BENCH_OPEN_SMALL", 1_000_000, 10_000);
    let large = fixed_size("ANNAL_BENCH_OPEN_LARGE", 10_000_000, 100_000);
    let active = fixed_size("ANNAL_BENCH_OPEN_ACTIVE", 50_000, 1_000);
    let names = names(OPEN_STREAMS);
    let tmp = common::scratch("annal-bench-open-");
    let mut g = c.benchmark_group("open");
    g.sampling_mode(SamplingMode::Flat);
    let (small_name, large_name) = (label("annal", small), label("annal", large));
    // Both logs are built before either is measured, so both are measured in
    // the same state of the page cache.
    let logs = [(small, &small_name), (large, &large_name)].map(|(n, name)| {
        let dir = tmp.path().join(name);
        build_open_log(&dir, n, active, &names);
        describe(&format!("open {name}"), &dir);
        (name, dir)
    });
    for (name, dir) in &logs {
        g.bench_function(name.as_str(), |b| b.iter(|| open_close(dir)));
    }
    g.finish();
    drop(tmp);
    let vs = format!("open of the {} log", label("", small).trim_start_matches('_'));
    Figure::new("open", 0, 0)
        .row(&large_name, &[(vs.as_str(), small_name.as_str(), Some(1.0 / 1.2))])
        .save();
}

fn open_active(c: &mut Criterion) {
    let n = fixed_size("ANNAL_BENCH_OPEN_SMALL", 1_000_000, 10_000);
    let full = fixed_size("ANNAL_BENCH_OPEN_FULL", 500_000, 5_000).min(n);
    let names = names(OPEN_STREAMS);
    let tmp = common::scratch("annal-bench-open-active-");
    let mut g = c.benchmark_group("open_active");
    g.sampling_mode(SamplingMode::Flat);
    let mut full_name = String::new();
    for active in [1, full] {
        let dir = tmp.path().join("log");
        let _ = std::fs::remove_dir_all(&dir);
        build_open_log(&dir, n, active, &names);
        let what = format!("open_active {} events, last {active} active", n);
        let active_len = describe(&what, &dir);
        let name = if active == 1 {
            "active_tiny".to_owned()
        } else {
            full_name = format!("active_{}mb", (active_len as f64 / 1e6).round() as u64);
            full_name.clone()
        };
        g.bench_function(name.as_str(), |b| b.iter(|| open_close(&dir)));
    }
    g.finish();
    Figure::new("open_active", 0, 0)
        .row("active_tiny", &[(full_name.as_str(), full_name.as_str(), None)])
        .save();
}

/// `open_checkpoints`: `Log::open` alone (close is not timed) of a 1M-event
/// log whose active segment holds the last ~64 MB, with the index
/// checkpoints a clean close leaves (`checkpointed`) and with them removed
/// before each open (`walked`: the whole active segment is walked, as every
/// open did before checkpoints, and as recovery does after a crash before
/// any checkpoint).
fn open_checkpoints(c: &mut Criterion) {
    let n = fixed_size("ANNAL_BENCH_OPEN_SMALL", 1_000_000, 10_000);
    let full = fixed_size("ANNAL_BENCH_OPEN_FULL", 500_000, 5_000).min(n);
    let names = names(OPEN_STREAMS);
    let tmp = common::scratch("annal-bench-open-ckpt-");
    let dir = tmp.path().join("log");
    build_open_log(&dir, n, full, &names);
    describe(&format!("open_checkpoints {n} events, last {full} active"), &dir);
    let mut g = c.benchmark_group("open_checkpoints");
    g.sampling_mode(SamplingMode::Flat);
    for (name, walk) in [("checkpointed", false), ("walked", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    if walk {
                        common::remove_checkpoints(&dir);
                    }
                    let start = std::time::Instant::now();
                    let log = Log::open(&dir).expect("open");
                    total += start.elapsed();
                    black_box(log.next_position());
                    log.close().expect("close");
                }
                total
            })
        });
    }
    g.finish();
    Figure::new("open_checkpoints", 0, 0)
        .row("checkpointed", &[("walked", "walked", None)])
        .save();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = read_stream, open, open_active, open_checkpoints
}
criterion_main!(benches);
