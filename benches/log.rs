//! First benches of the format: append (batches of 100 × 256 B, Buffered) and
//! CRC-checked replay, each beside its hardware baseline measured in the same
//! group: `write_all` + crc32fast of the same bytes for append, crc32fast over
//! the same mapped bytes for replay.
//!
//! `cargo bench --bench log`; `ANNAL_BENCH_EVENTS` scales the replay log
//! (default 200,000 events).

use std::hint::black_box;
use std::io::Write;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, ReadOptions};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 100;
const PAYLOAD: usize = 256;

fn events(payload: &[u8]) -> Vec<EventData<'_>> {
    (0..BATCH).map(|_| EventData::new("ItemAdded", payload)).collect()
}

fn append(c: &mut Criterion) {
    let payload = vec![7u8; PAYLOAD];
    let evs = events(&payload);
    let mut g = c.benchmark_group("append_100x256B_buffered");
    // Bytes of one encoded batch, for throughput and for the baseline.
    let probe = tempfile::tempdir().unwrap();
    let batch_bytes = {
        let log = Log::open(probe.path(), Options::default()).unwrap();
        let before = log.view().unwrap().len_bytes();
        log.append("order-0", ExpectedVersion::Any, &evs).unwrap();
        log.view().unwrap().len_bytes() - before
    };
    g.throughput(Throughput::Bytes(batch_bytes));
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default().durability(Durability::Buffered)).unwrap();
    let mut i = 0u64;
    g.bench_function("annal", |b| {
        b.iter(|| {
            i += 1;
            let stream = format!("order-{}", i % 1000);
            black_box(log.append(&stream, ExpectedVersion::Any, &evs).unwrap());
        })
    });
    drop(log);
    let raw = vec![3u8; batch_bytes as usize];
    let file_dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(file_dir.path().join("plain")).unwrap();
    g.bench_function("limit_write_all_plus_crc", |b| {
        b.iter(|| {
            black_box(crc32fast::hash(&raw));
            f.write_all(&raw).unwrap();
        })
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    let n: u64 = std::env::var("ANNAL_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![7u8; PAYLOAD];
    let evs = events(&payload);
    {
        let log = Log::open(dir.path(), Options::default()).unwrap();
        for b in 0..n / BATCH as u64 {
            log.append(&format!("order-{}", b % 1000), ExpectedVersion::Any, &evs)
                .unwrap();
        }
        log.close().unwrap();
    }
    let mut reader = annal::Reader::open(dir.path()).unwrap();
    let view = reader.view().unwrap();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Bytes(view.len_bytes()));
    g.bench_function("annal_crc", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut sum = 0u64;
                for r in view.read_all(0) {
                    sum += r.unwrap().payload().len() as u64;
                }
                black_box(sum)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("annal_no_crc", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for r in view.read_all_with(0, ReadOptions { verify_crc: false }) {
                sum += r.unwrap().payload().len() as u64;
            }
            black_box(sum)
        })
    });
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    g.bench_function("limit_crc32fast", |b| {
        b.iter(|| black_box(files.iter().map(|f| crc32fast::hash(f) as u64).sum::<u64>()))
    });
    g.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
