//! Shipping to object storage beside appends (feature `remote`, issue 18).
//!
//! * `append_with_replicator`: appends of 100 × 256 B (`Durability::Fsync`,
//!   one group commit per batch), without and with `Options::replicate_to`
//!   (a round every 10 ms) to an in-memory store (the replicator's own
//!   cost: reading, validating, hashing and copying every durable byte on
//!   its thread) and to a local-folder store on the same disk (plus the
//!   store's writes competing with the log's fsyncs). Target: with ≥ 0.9×
//!   without.
//! * lag (printed, not a criterion group): appends at a steady rate
//!   (default 50,000 events/s, batches of 100, `ANNAL_BENCH_RATE`) for
//!   `ANNAL_BENCH_SECONDS` (default 5) with the in-process replicator (a
//!   round every 10 ms); for each batch, the time from its acknowledgement
//!   (durable) to the first manifest version holding it (visible to any
//!   restore or remote reader): p50, p99, max.
//! * `restore`: a restore of the shipped log and a replay through a remote
//!   reader (cold: a new cache; warm: a cache up to date) against a replay
//!   of the local one (the same events).
//!
//! `cargo bench --features remote --bench replication`.

mod common;

use std::time::{Duration, Instant};

use annal::remote::{Follow, RemoteLog, RestoreTo, restore};
use annal::{Durability, EventData, ExpectedVersion, Log, Options};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const BATCH: usize = 100;

fn open(dir: &std::path::Path, remote: Option<RemoteLog>) -> Log {
    let mut opts = Options::default().durability(Durability::Fsync);
    if let Some(r) = remote {
        opts = opts.replicate_to(r, Follow::every(Duration::from_millis(10)));
    }
    opts.open(dir).expect("open")
}

fn folder(dir: &std::path::Path) -> RemoteLog {
    RemoteLog::open(&format!("file://{}", dir.display())).expect("remote")
}

fn batch(payload: &[u8]) -> Vec<EventData<'_>> {
    (0..BATCH).map(|_| EventData::new("E", payload)).collect()
}

fn append_with_replicator(c: &mut Criterion) {
    let payload = common::payload(PAYLOAD);
    let evs = batch(&payload);
    let mut g = c.benchmark_group("append_with_replicator");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(BATCH as u64));
    for name in ["off", "on_memory_store", "on_folder_store"] {
        let tmp = common::scratch("annal-bench-repl-");
        let remote = match name {
            "on_memory_store" => Some(RemoteLog::from_store(
                std::sync::Arc::new(object_store::memory::InMemory::new()),
                "bench",
                "memory://bench",
            )),
            "on_folder_store" => Some(folder(&tmp.path().join("store"))),
            _ => None,
        };
        let log = open(&tmp.path().join("log"), remote);
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                log.append(&format!("s-{}", i % 100), ExpectedVersion::Any, &evs)
                    .expect("append")
            })
        });
        log.close().expect("close");
    }
    g.finish();
}

fn lag(_c: &mut Criterion) {
    if common::test_mode() {
        return;
    }
    let rate = common::env_u64("ANNAL_BENCH_RATE").unwrap_or(50_000);
    let seconds = common::env_u64("ANNAL_BENCH_SECONDS").unwrap_or(5);
    let payload = common::payload(PAYLOAD);
    let evs = batch(&payload);
    let tmp = common::scratch("annal-bench-lag-");
    let log = open(&tmp.path().join("log"), Some(folder(&tmp.path().join("store"))));
    let every = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    // Acknowledged batches: (last position + 1, when).
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The watcher: when each position reached the store.
    let watcher = {
        let (log, acked, stop) = (log.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut lags = Vec::new();
            let mut seen = 0usize;
            loop {
                let shipped = log.replication().and_then(|s| s.last).map_or(0, |r| r.shipped_position);
                let now = Instant::now();
                let a = acked.lock().unwrap();
                while seen < a.len() && a[seen].0 <= shipped {
                    lags.push(now - a[seen].1);
                    seen += 1;
                }
                let done = stop.load(std::sync::atomic::Ordering::SeqCst) && seen == a.len();
                drop(a);
                if done {
                    return lags;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let start = Instant::now();
    let mut next = start;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let r = log
            .append(&format!("s-{}", i % 100), ExpectedVersion::Any, &evs)
            .expect("append");
        acked.lock().unwrap().push((r.last_position + 1, Instant::now()));
        i += 1;
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let achieved = (i * BATCH as u64) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut lags = watcher.join().expect("watcher");
    lags.sort_unstable();
    let q = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
    eprintln!(
        "replication lag at {achieved:.0} events/s (target {rate}), a round every 10 ms: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches)",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lags.len()
    );
    log.close().expect("close");
}

fn restore_vs_replay(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_EVENTS", 200_000, 2_000);
    let payload = common::payload(PAYLOAD);
    let evs = batch(&payload);
    let tmp = common::scratch("annal-bench-restore-");
    // Segments of 4 MiB: a log of many sealed segments, as a remote
    // reader meets it (the default 64 MiB would hold this one whole in its
    // active segment).
    let log = Options::default()
        .durability(Durability::Fsync)
        .segment_size(4 << 20)
        .replicate_to(
            folder(&tmp.path().join("store")),
            Follow::every(Duration::from_millis(10)),
        )
        .open(tmp.path().join("log"))
        .expect("open");
    for i in 0..n / BATCH as u64 {
        log.append(&format!("s-{}", i % 100), ExpectedVersion::Any, &evs)
            .expect("append");
    }
    log.close().expect("close");
    let remote = folder(&tmp.path().join("store"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("restore");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.throughput(Throughput::Elements(n));
    let mut k = 0;
    g.bench_function("restore_from_folder", |b| {
        b.iter(|| {
            k += 1;
            let dst = tmp.path().join(format!("restored-{k}"));
            rt.block_on(restore(&remote, &dst, RestoreTo::Latest)).expect("restore");
            std::fs::remove_dir_all(&dst).expect("remove");
        })
    });
    // A remote reader in a new cache: open (copies the newest segment,
    // opens each sealed one by two ranged reads), then the same replay,
    // which fetches each sealed segment whole (checked) on first read.
    g.bench_function("remote_replay_cold", |b| {
        b.iter(|| {
            let reader = annal::remote::RemoteReader::open(remote.clone()).expect("remote reader");
            let view = reader.reader().view().expect("view");
            view.read_all(0)
                .map(|r| r.expect("read").payload().len() as u64)
                .sum::<u64>()
        })
    });
    // A remote reader in a new cache: open and a first view, reading
    // nothing (the newest segment's parts, two ranged reads per sealed
    // segment).
    g.bench_function("remote_open_cold", |b| {
        b.iter(|| {
            let reader = annal::remote::RemoteReader::open(remote.clone()).expect("remote reader");
            reader.reader().view().expect("view").next_position()
        })
    });
    // A remote reader in a new cache reading one stream's newest 100
    // events: the index files it looks in and the segments holding them
    // are fetched, no other.
    g.bench_function("remote_stream_read_cold", |b| {
        b.iter(|| {
            let reader = annal::remote::RemoteReader::open(remote.clone()).expect("remote reader");
            let view = reader.reader().view().expect("view");
            view.read_stream("s-7", annal::StreamPosition::End, annal::Direction::Backward, 100)
                .map(|r| r.expect("read").payload().len() as u64)
                .sum::<u64>()
        })
    });
    // A remote reader whose cache holds the segments (within its budget):
    // a view costs a manifest probe, then the replay maps cached copies.
    let warm = annal::remote::RemoteReader::open(remote.clone()).expect("remote reader");
    g.bench_function("remote_replay_warm", |b| {
        b.iter(|| {
            let view = warm.view().expect("view");
            view.read_all(0)
                .map(|r| r.expect("read").payload().len() as u64)
                .sum::<u64>()
        })
    });
    g.bench_function("local_replay", |b| {
        b.iter(|| {
            let view = annal::Reader::open(tmp.path().join("log"))
                .expect("reader")
                .view()
                .expect("view");
            view.read_all(0)
                .map(|r| r.expect("read").payload().len() as u64)
                .sum::<u64>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = append_with_replicator, lag, restore_vs_replay
}
criterion_main!(benches);
