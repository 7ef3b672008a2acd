//! Durable appends from many threads: group commit.
//!
//! One group per thread count `group_commit_t{1,2,8,32}`. Each thread appends
//! one 256-byte event per call to its own stream with `Durability::Fsync`, so
//! every `append` returns only once its event is on disk. annal's writer lets
//! one appender lead: it writes everything queued with one write and makes
//! it durable with one fsync, so concurrent appenders share fsyncs. The bench
//! counts the fsyncs through the I/O seam (`Options::io`) and reports events
//! per fsync beside the rate.
//!
//! Baseline `sqlite_full`: the same threads inserting one event per
//! transaction into the SQLite events table with `synchronous = FULL` (an
//! fsync per commit), sharing one connection behind a mutex (SQLite has one
//! writer; a connection per thread would add lock-retry sleeps and only make
//! the baseline slower).
//!
//! `cargo bench --bench group_commit`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use annal::{Durability, EventData, ExpectedVersion, Log, Options};
use common::{CountingIo, Figure, Sync};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;

/// Run `iters` calls of `one(thread)` on `threads` threads that start
/// together and take calls from a shared counter until all are done (so no
/// thread idles while others still have a fixed share left); the wall time.
fn run_threads(threads: usize, iters: u64, one: &(dyn Fn(usize) + std::marker::Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (start, next) = (&start, &next);
            s.spawn(move || {
                start.wait();
                while next.fetch_add(1, Ordering::Relaxed) < iters {
                    one(t);
                }
            });
        }
        start.wait();
        // The scope joins every thread before returning.
        Instant::now()
    })
    .elapsed()
}

fn group_commit(c: &mut Criterion) {
    let payload = common::payload(PAYLOAD);
    let events = [EventData::new("ItemAdded", payload.as_slice())];
    for threads in [1usize, 2, 8, 32] {
        let names: Vec<String> = (0..threads).map(|t| format!("account-{t}")).collect();
        let group = format!("group_commit_t{threads}");
        let mut g = c.benchmark_group(&group);
        g.throughput(Throughput::Elements(1));
        g.sampling_mode(SamplingMode::Flat).sample_size(10);

        let dir = common::scratch("annal-bench-group-");
        let io = CountingIo::default();
        let syncs = io.syncs.clone();
        let opts = Options::default().durability(Durability::Fsync).io(Arc::new(io));
        let log = Log::open_with(dir.path().join("log"), opts).expect("open");
        let appended = AtomicU64::new(0);
        let synced_before = syncs.load(Ordering::Relaxed);
        g.bench_function("annal", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &|t| {
                    log.append(&names[t], ExpectedVersion::Any, &events).expect("append");
                    appended.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        let fsyncs = syncs.load(Ordering::Relaxed) - synced_before;
        let per_fsync = appended.load(Ordering::Relaxed) as f64 / fsyncs.max(1) as f64;
        let measured = appended.load(Ordering::Relaxed) > 0;
        if measured {
            eprintln!(
                "{group}: {} events, {fsyncs} fsyncs: {per_fsync:.1} events per fsync",
                appended.load(Ordering::Relaxed)
            );
        }
        log.close().expect("close");

        let db = Mutex::new(common::sqlite_open(&dir.path().join("events.sqlite"), Sync::Full));
        let position = AtomicU64::new(0);
        let versions: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
        g.bench_function("sqlite_full", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &|t| {
                    let mut db = db.lock().expect("lock");
                    let tx = db.transaction().expect("begin");
                    tx.prepare_cached(common::SQLITE_INSERT)
                        .expect("prepare")
                        .execute(rusqlite::params![
                            position.fetch_add(1, Ordering::Relaxed) as i64,
                            &names[t],
                            versions[t].fetch_add(1, Ordering::Relaxed) as i64,
                            "ItemAdded",
                            common::now_ms(),
                            payload.as_slice(),
                            &[] as &[u8]
                        ])
                        .expect("insert");
                    tx.commit().expect("commit");
                })
            })
        });
        g.finish();

        let target = if threads == 32 { Some(10.0) } else { None };
        let per_fsync_target = if threads == 32 { Some(20.0) } else { None };
        let figure =
            Figure::new(&group, 1, PAYLOAD as u64).row("annal", &[("SQLite FULL, 1 event/tx", "sqlite_full", target)]);
        if measured {
            figure
                .metric("annal", "events per fsync", per_fsync, per_fsync_target)
                .save();
        }
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = group_commit
}
criterion_main!(benches);
