//! Durable appends from many async tasks against many threads (feature
//! `tokio`).
//!
//! * `async_tasks_1000`: 1,000 tokio tasks on a multi-thread runtime (one
//!   worker per core) each appending one 256-byte event per call to its own
//!   stream with `Durability::Fsync` through `Log::append_async`: a task
//!   waiting for its group commit holds no thread, the write and fsync run
//!   on the log's committer thread.
//! * `sync_threads_32`: 32 threads on the blocking API (`Log::append`), the
//!   `group_commit_t32` shape.
//!
//! Both count fsyncs through the I/O seam and report events per fsync.
//! `cargo bench --features tokio --bench async_append`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annal::{Durability, EventData, ExpectedVersion, Log, Options};
use common::{CountingIo, Figure};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const TASKS: usize = 1000;
const THREADS: usize = 32;

fn open(dir: &std::path::Path, name: &str) -> (Log, Arc<AtomicU64>) {
    let io = CountingIo::default();
    let syncs = io.syncs.clone();
    let opts = Options::default().durability(Durability::Fsync).io(Arc::new(io));
    (opts.open(dir.join(name)).expect("open"), syncs)
}

/// `iters` appends by `TASKS` tasks that take calls from a shared counter.
fn run_tasks(
    rt: &tokio::runtime::Runtime,
    log: &Log,
    names: &Arc<Vec<String>>,
    payload: &Arc<Vec<u8>>,
    iters: u64,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (log, names, payload, next) = (log.clone(), names.clone(), payload.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < iters {
                        let events = [EventData::new("ItemAdded", payload.as_slice())];
                        log.append_async(&names[t], ExpectedVersion::Any, &events)
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

/// `iters` appends by `THREADS` threads that take calls from a shared counter.
fn run_threads(log: &Log, names: &[String], payload: &[u8], iters: u64) -> Duration {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for name in names.iter().take(THREADS) {
            let next = &next;
            s.spawn(move || {
                let events = [EventData::new("ItemAdded", payload)];
                while next.fetch_add(1, Ordering::Relaxed) < iters {
                    log.append(name, ExpectedVersion::Any, &events).expect("append");
                }
            });
        }
    });
    start.elapsed()
}

fn async_append(c: &mut Criterion) {
    let payload = Arc::new(common::payload(PAYLOAD));
    let names: Arc<Vec<String>> = Arc::new((0..TASKS).map(|t| format!("account-{t}")).collect());
    let group = "async_append";
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = common::scratch("annal-bench-async-");
    let rt = tokio::runtime::Builder::new_multi_thread().build().expect("runtime");

    let mut per_fsync = Vec::new();
    for (name, tasks) in [("async_tasks_1000", true), ("sync_threads_32", false)] {
        let (log, syncs) = open(dir.path(), name);
        let (before, appended) = (syncs.load(Ordering::Relaxed), AtomicU64::new(0));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                appended.fetch_add(iters, Ordering::Relaxed);
                if tasks {
                    run_tasks(&rt, &log, &names, &payload, iters)
                } else {
                    run_threads(&log, &names, &payload, iters)
                }
            })
        });
        let (events, fsyncs) = (appended.load(Ordering::Relaxed), syncs.load(Ordering::Relaxed) - before);
        if events > 0 {
            let ratio = events as f64 / fsyncs.max(1) as f64;
            eprintln!("{group}/{name}: {events} events, {fsyncs} fsyncs: {ratio:.1} events per fsync");
            per_fsync.push((name, ratio));
        }
        log.close().expect("close");
    }
    g.finish();
    let mut figure = Figure::new(group, 1, PAYLOAD as u64).row(
        "async_tasks_1000",
        &[("32 threads, blocking append", "sync_threads_32", None)],
    );
    for (name, ratio) in per_fsync {
        figure = figure.metric(name, "events per fsync", ratio, None);
    }
    figure.save();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = async_append
}
criterion_main!(benches);
