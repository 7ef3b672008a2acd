//! Opening a log from another process: the cross-process `Reader` validates
//! the active segment by copying it before it maps it (issue 15).
//!
//! Group `reader_open`: a closed log whose one (active) segment holds about
//! S bytes of single-event batches (256-byte payloads, stream
//! `order-{i % 1000}`, `Durability::Buffered`), so one frame per event.
//! Each iteration does what `annal read --limit 1` does: `Reader::open`,
//! `Reader::view` (which validates the whole active segment) and the first
//! event of `read_all(0)`.
//!
//! * `open_read_1_checkpointed`: the above, on the log as its writer's clean
//!   close left it: the segment's index checkpoints (spec 17.5) cover it, so
//!   the reader walks nothing.
//! * `open_read_1`: the same with the checkpoints removed (as after a crash
//!   before any): the reader validates the whole segment; criterion's
//!   throughput is the segment's length, so its MB/s is the rate at which
//!   the segment is validated.
//!
//! Everything is in the page cache (the log was just written and is read
//! once before timing), so this is a CPU and system-call figure.
//!
//! `cargo bench --bench reader_open`; `ANNAL_BENCH_READER_OPEN_BYTES` sets S
//! (default 64 MiB; `ANNAL_BENCH_SCALE` multiplies the default; 1 MiB under
//! `-- --test`).

mod common;

use std::hint::black_box;

use annal::{EventData, ExpectedVersion, Options, Reader};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const STREAMS: u64 = 1000;

/// A closed log in a new scratch directory whose active segment holds at
/// least `bytes` bytes of single-event batches; returns the directory, the
/// log's path and the segment's length.
fn single_event_log(bytes: u64) -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let dir = common::scratch("reader-open");
    let path = dir.path().join("log");
    // One segment: the whole log stays in the active segment.
    let opts = Options::default()
        .durability(annal::Durability::Buffered)
        .segment_size(bytes.saturating_mul(2).max(64 << 20));
    let log = annal::Log::open_with(&path, opts).expect("open");
    let names: Vec<String> = (0..STREAMS).map(|i| format!("order-{i}")).collect();
    let payload = common::payload(PAYLOAD);
    let event = [EventData::new("ItemAdded", payload.as_slice())];
    let mut i = 0u64;
    loop {
        for _ in 0..1000 {
            log.append(&names[(i % STREAMS) as usize], ExpectedVersion::Any, &event)
                .expect("append");
            i += 1;
        }
        if log.view().expect("view").len_bytes() >= bytes {
            break;
        }
    }
    log.close().expect("close");
    let seg = path.join(annal::segment::segment_file_name(0));
    let len = std::fs::metadata(&seg).expect("stat").len();
    eprintln!("reader_open: {i} single-event batches, active segment {len} bytes");
    (dir, path, len)
}

/// `Reader::open`, a view, the first event: its payload length.
fn open_read_1(path: &std::path::Path) -> usize {
    let reader = Reader::open(path).expect("reader");
    let view = reader.view().expect("view");
    let first = view.read_all(0).next().expect("an event").expect("read");
    first.payload().len()
}

fn bench(c: &mut Criterion) {
    let bytes = common::size("ANNAL_BENCH_READER_OPEN_BYTES", 64 << 20, 1 << 20);
    let (_dir, path, len) = single_event_log(bytes);
    assert_eq!(open_read_1(&path), PAYLOAD);
    let mut g = c.benchmark_group("reader_open");
    g.throughput(Throughput::Bytes(len));
    // As the writer's clean close left it: the segment's index checkpoints
    // (spec 17.5) cover it all, so nothing is walked.
    g.bench_function("open_read_1_checkpointed", |b| b.iter(|| black_box(open_read_1(&path))));
    // Without them (as after a crash before any checkpoint): the whole
    // segment is copied and validated.
    common::remove_checkpoints(&path);
    g.bench_function("open_read_1", |b| b.iter(|| black_box(open_read_1(&path))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
