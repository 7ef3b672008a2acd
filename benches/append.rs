//! Append throughput beside its baselines, measured in the same group.
//!
//! One group per shape `append_{buffered|fsync}_{payload}B_x{batch}`: batches
//! of 1, 10, 100 and 1000 events, payloads of 64 B, 256 B and 4 KiB, each
//! batch to one of 1,000 streams in turn. In every group:
//!
//! * `annal`: `Log::append` with `ExpectedVersion::Any` and the group's
//!   `Durability`;
//! * `sqlite`: the same events inserted into the SQLite events table (WAL,
//!   `UNIQUE(stream, version)`, see `common::sqlite_open`) through a cached
//!   prepared statement, one transaction per batch, `synchronous = NORMAL`
//!   against `Buffered` and `FULL` against `Fsync`. Stream versions come from
//!   an in-memory map, which spares SQLite the lookup annal does;
//! * `limit`: one thread doing `write_all` of the same number of bytes annal
//!   writes for the batch, plus crc32fast over them, to a plain file (and
//!   `sync_data` after each batch for the Fsync shapes).
//!
//! In the Buffered 256 B groups, two more rows give the cost of the audit
//! chain (format v2: a BLAKE3 hash per batch, on by default, so `annal`
//! above includes it):
//!
//! * `annal_nochain`: the same appends to a log opened with
//!   `Options::chain(false)`;
//! * `annal_keyed`: the same appends to a keyed chain
//!   (`Options::chain_key`, BLAKE3 keyed mode).
//!
//! * `annal_subjects`: the same appends with every event naming a subject
//!   (`EventData::with_subject`, spec 3.8): payload and metadata sealed with
//!   XChaCha20-Poly1305 under the subject's key (the key exists after the
//!   first batch, so this is the steady cost of sealing, not of making keys).
//!
//! The figure "chain on ÷ chain off" is `time(annal_nochain) / time(annal)`,
//! the throughput with the chain over the throughput without it; the issue
//! asks for at least 0.75× at batches of 100 × 256 B.
//!
//! All of them write into a fresh file, log or database every 64 MiB (outside
//! the timed region), so they run in the same page-cache regime and annal's
//! segment rolls (one per 256 MiB) are not part of these figures.
//!
//! `cargo bench --bench append`; filter with e.g. `-- append_buffered_256B_x100`.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use annal::{ChainKey, Durability, EventData, ExpectedVersion, Log, Options};
use common::{Figure, Sync};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;

const STREAMS: u64 = 1000;
const EVENT_TYPE: &str = "ItemAdded";
/// Each target is replaced by a fresh one after this many bytes.
const ROTATE_BYTES: u64 = 64 << 20;

/// A target that is written `iters` times, replaced every `ROTATE_BYTES`,
/// with only the writes timed.
trait Target {
    fn fresh(&mut self);
    fn write_one(&mut self);
}

fn timed<T: Target>(t: &mut T, written: &mut u64, per_iter: u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if *written >= ROTATE_BYTES {
            t.fresh();
            *written = 0;
        }
        let room = (ROTATE_BYTES - *written).div_ceil(per_iter.max(1)).max(1);
        let n = left.min(room);
        let start = Instant::now();
        for _ in 0..n {
            t.write_one();
        }
        total += start.elapsed();
        *written += n * per_iter;
        left -= n;
    }
    total
}

struct AnnalTarget<'a> {
    dir: tempfile::TempDir,
    opts: Options,
    log: Option<Log>,
    events: &'a [EventData<'a>],
    names: &'a [String],
    next: u64,
}

impl Target for AnnalTarget<'_> {
    fn fresh(&mut self) {
        if let Some(log) = self.log.take() {
            log.close().expect("close");
        }
        let path = self.dir.path().join("log");
        let _ = std::fs::remove_dir_all(&path);
        self.log = Some(Log::open_with(&path, self.opts.clone()).expect("open"));
    }

    fn write_one(&mut self) {
        self.next += 1;
        let stream = &self.names[(self.next % STREAMS) as usize];
        let log = self.log.as_ref().expect("open log");
        black_box(log.append(stream, ExpectedVersion::Any, self.events).expect("append"));
    }
}

struct SqliteTarget<'a> {
    dir: tempfile::TempDir,
    sync: Sync,
    db: Option<Connection>,
    payload: &'a [u8],
    batch: u64,
    names: &'a [String],
    versions: HashMap<u64, i64>,
    next: u64,
    position: i64,
}

impl Target for SqliteTarget<'_> {
    fn fresh(&mut self) {
        self.db = None;
        let path = self.dir.path().join("events.sqlite");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        self.db = Some(common::sqlite_open(&path, self.sync));
        self.versions.clear();
        self.position = 0;
    }

    fn write_one(&mut self) {
        self.next += 1;
        let s = self.next % STREAMS;
        let stream = &self.names[s as usize];
        let version = self.versions.entry(s).or_insert(0);
        let db = self.db.as_mut().expect("open db");
        let tx = db.transaction().expect("begin");
        {
            let mut ins = tx.prepare_cached(common::SQLITE_INSERT).expect("prepare");
            let ts = common::now_ms();
            for _ in 0..self.batch {
                ins.execute(rusqlite::params![
                    self.position,
                    stream,
                    *version,
                    EVENT_TYPE,
                    ts,
                    self.payload,
                    &[] as &[u8]
                ])
                .expect("insert");
                self.position += 1;
                *version += 1;
            }
        }
        tx.commit().expect("commit");
    }
}

struct LimitTarget<'a> {
    dir: tempfile::TempDir,
    file: Option<std::fs::File>,
    bytes: &'a [u8],
    sync: bool,
}

impl Target for LimitTarget<'_> {
    fn fresh(&mut self) {
        let path: PathBuf = self.dir.path().join("plain");
        self.file = Some(std::fs::File::create(path).expect("create"));
    }

    fn write_one(&mut self) {
        let f = self.file.as_mut().expect("open file");
        black_box(crc32fast::hash(self.bytes));
        f.write_all(self.bytes).expect("write");
        if self.sync {
            f.sync_data().expect("sync");
        }
    }
}

/// Bytes annal writes for one batch of `events` to a stream named like ours.
fn batch_bytes(events: &[EventData<'_>]) -> u64 {
    let probe = common::scratch("annal-bench-probe-");
    let log = Log::open(probe.path()).expect("open");
    let before = log.view().expect("view").len_bytes();
    log.append("order-999", ExpectedVersion::Any, events).expect("append");
    log.view().expect("view").len_bytes() - before
}

fn append(c: &mut Criterion) {
    let names: Vec<String> = (0..STREAMS).map(|i| format!("order-{i}")).collect();
    for durability in [Durability::Buffered, Durability::Fsync] {
        for payload_len in [64usize, 256, 4096] {
            for batch in [1u64, 10, 100, 1000] {
                bench_shape(c, &names, durability, payload_len, batch);
            }
        }
    }
}

fn bench_shape(c: &mut Criterion, names: &[String], durability: Durability, payload_len: usize, batch: u64) {
    let fsync = durability == Durability::Fsync;
    let mode = if fsync { "fsync" } else { "buffered" };
    let group = format!("append_{mode}_{payload_len}B_x{batch}");
    let payload = common::payload(payload_len);
    let events: Vec<EventData<'_>> = (0..batch)
        .map(|_| EventData::new(EVENT_TYPE, payload.as_slice()))
        .collect();
    let on_disk = batch_bytes(&events);
    let raw = common::payload(on_disk as usize);

    let mut g = c.benchmark_group(&group);
    g.throughput(Throughput::Elements(batch));
    if fsync {
        g.sampling_mode(SamplingMode::Flat).sample_size(10);
    }
    let opts = Options::default().durability(durability);
    // The chain's cost, in the shapes the issue names (Buffered, 256 B).
    let chain_rows = !fsync && payload_len == 256;
    let shape = (&events[..], names, on_disk);
    let measured = bench_annal(&mut g, "annal", opts.clone(), (true, false), shape);
    let sealed: Vec<EventData<'_>> = events.iter().map(|e| e.clone().with_subject("customer-7")).collect();
    if chain_rows {
        let sealed_shape = (&sealed[..], names, batch_bytes(&sealed));
        bench_annal(&mut g, "annal_subjects", opts.clone(), (true, false), sealed_shape);
        let off = opts.clone().chain(false);
        bench_annal(&mut g, "annal_nochain", off, (false, false), shape);
        let keyed = opts.clone().chain_key(ChainKey::from_bytes([7; 32]));
        bench_annal(&mut g, "annal_keyed", keyed, (true, true), shape);
    }
    // Only when the group is not filtered out.
    let interleaved = (chain_rows && measured).then(|| interleaved_ratio(&opts, shape));

    let mut sqlite = SqliteTarget {
        dir: common::scratch("annal-bench-sqlite-"),
        sync: if fsync { Sync::Full } else { Sync::Normal },
        db: None,
        payload: &payload,
        batch,
        names,
        versions: HashMap::new(),
        next: 0,
        position: 0,
    };
    sqlite.fresh();
    let mut written = 0;
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| timed(&mut sqlite, &mut written, on_disk, iters))
    });
    drop(sqlite);

    let mut limit = LimitTarget {
        dir: common::scratch("annal-bench-limit-"),
        file: None,
        bytes: &raw,
        sync: fsync,
    };
    limit.fresh();
    let mut written = 0;
    g.bench_function("limit", |b| {
        b.iter_custom(|iters| timed(&mut limit, &mut written, on_disk, iters))
    });
    drop(limit);
    if chain_rows {
        g.bench_function("blake3", |b| b.iter(|| black_box(blake3::hash(black_box(&raw)))));
    }
    g.finish();

    let (sqlite_name, limit_name) = if fsync {
        ("SQLite FULL", "write_all+crc+sync_data")
    } else {
        ("SQLite NORMAL", "write_all+crc")
    };
    let (t_sqlite, t_limit, t_chain) = match (fsync, payload_len, batch) {
        (false, 256, 100) => (Some(3.0), Some(0.7), Some(0.75)),
        _ => (None, None, None),
    };
    let mut vs = vec![(sqlite_name, "sqlite", t_sqlite), (limit_name, "limit", t_limit)];
    if chain_rows {
        // time(annal_nochain) / time(annal): chain on ÷ chain off throughput.
        vs.push((CHAIN_OFF, "annal_nochain", t_chain));
    }
    let mut figure = Figure::new(&group, batch, batch * payload_len as u64).row("annal", &vs);
    if chain_rows {
        figure = figure
            .row("annal_nochain", &[(limit_name, "limit", None)])
            .row(
                "annal_keyed",
                &[(CHAIN_OFF, "annal_nochain", None), ("plain chain", "annal", None)],
            )
            .row("annal_subjects", &[("without subjects", "annal", None)])
            .row("blake3", &[]);
    }
    if let Some(r) = interleaved {
        figure = figure.metric("annal", "× chain on ÷ off (interleaved rounds)", r, None);
    }
    figure.save();
}

/// The chain's cost measured a second way, robust to a machine whose load
/// changes between criterion's functions: rounds of a few batches to a log
/// with the chain and as many to a log without it (which goes first
/// alternates), for about 1.5 s; returns the median over rounds of
/// `time(off) / time(on)` (chain on ÷ chain off throughput).
fn interleaved_ratio(opts: &Options, (events, names, on_disk): (&[EventData<'_>], &[String], u64)) -> f64 {
    let target = |o: Options| {
        let mut t = AnnalTarget {
            dir: common::scratch("annal-bench-append-"),
            opts: o,
            log: None,
            events,
            names,
            next: 0,
        };
        t.fresh();
        t
    };
    let (mut on, mut off) = (target(opts.clone()), target(opts.clone().chain(false)));
    let (mut w_on, mut w_off) = (0, 0);
    let per_round = (1000 / events.len() as u64).max(1);
    let (min_rounds, budget) = if common::test_mode() {
        (2, Duration::ZERO)
    } else {
        (20, Duration::from_millis(1500))
    };
    let start = Instant::now();
    let mut ratios = Vec::new();
    while ratios.len() < min_rounds || start.elapsed() < budget {
        // Alternate which goes first, so neither always follows the other.
        let (t_on, t_off) = if ratios.len() % 2 == 0 {
            let t_on = timed(&mut on, &mut w_on, on_disk, per_round);
            (t_on, timed(&mut off, &mut w_off, on_disk, per_round))
        } else {
            let t_off = timed(&mut off, &mut w_off, on_disk, per_round);
            (timed(&mut on, &mut w_on, on_disk, per_round), t_off)
        };
        ratios.push(t_off.as_secs_f64() / t_on.as_secs_f64().max(1e-12));
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    eprintln!(
        "chain on ÷ off, interleaved: {median:.3} (median of {} rounds of {per_round} batches each)",
        ratios.len()
    );
    median
}

/// The name of the "chain on ÷ chain off" ratio in the table.
const CHAIN_OFF: &str = "chain off (on ÷ off)";

/// One `annal` row: appends of `events` (to streams `names`, `on_disk` bytes
/// each) to a fresh log opened with `opts`, whose `Log::chain_mode()` must be
/// `mode`. Returns whether criterion ran it (false when filtered out).
fn bench_annal(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    opts: Options,
    mode: (bool, bool),
    (events, names, on_disk): (&[EventData<'_>], &[String], u64),
) -> bool {
    let mut annal = AnnalTarget {
        dir: common::scratch("annal-bench-append-"),
        opts,
        log: None,
        events,
        names,
        next: 0,
    };
    annal.fresh();
    let log = annal.log.as_ref().expect("open log");
    assert_eq!(log.chain_mode(), mode, "{name}: (chained, keyed)");
    let mut written = 0;
    let mut ran = false;
    g.bench_function(name, |b| {
        ran = true;
        b.iter_custom(|iters| timed(&mut annal, &mut written, on_disk, iters))
    });
    ran
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = append
}
criterion_main!(benches);
