//! Compaction (spec 3.10) against replay of the same bytes.
//!
//! Group `compaction`: a log of N events (256-byte payloads, type
//! `ItemAdded`, `Durability::Buffered`, batches of 100, batch `b` to stream
//! `order-{b % 1000}`, see `common::batched_log`) in segments of about N × 34
//! bytes (so about 8 sealed segments and an active one); then half of the
//! 1,000 streams get rules: `order-0` to `order-249` are deleted,
//! `order-250` to `order-499` get `max_count(100)` (their 9 older batches of
//! 100 are hidden, the newest kept). Compaction then removes about 47% of
//! the events of every sealed segment; the active segment is never touched.
//!
//! * `compact`: `Log::compact` on a fresh copy of that log (the copy, the
//!   open and the close are outside the timed region): every sealed segment
//!   planned (chain verified), rewritten to a `.tmp` file and fsynced, one
//!   durable `$compaction` record per segment, the rename, the index file
//!   and the stream table written again.
//! * `replay_same_bytes`: `read_all(0)` of a `Reader` view of the original
//!   log up to the active segment's base, summing payload lengths: the same
//!   segment bytes read once, CRCs checked (hidden events are stepped over).
//! * `replay_compacted`: the same read over the compacted log (fewer bytes
//!   for the same visible events).
//!
//! Criterion's throughput is the bytes of the segments compaction rewrites
//! (`CompactionReport::bytes_before`), for all three rows, so their MB/s are
//! comparable; events/s of the rewritten segments is that rate times the
//! events per byte printed before the run. Everything is in the page cache
//! (the copies were just written), but `compact` includes its fsyncs.
//!
//! `cargo bench --bench compaction -- --warm-up-time 1 --measurement-time 3`;
//! `ANNAL_BENCH_COMPACTION_EVENTS` sets N (default 1,000,000;
//! `ANNAL_BENCH_SCALE` multiplies the default; 20,000 under `-- --test`).

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use annal::{CompactionReport, ExpectedVersion, Log, LogView, Options, Reader, StreamMetadata};
use common::Figure;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const STREAMS: usize = 1000;

/// Copy the files under `from` to `to` (created), recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy a file");
        }
    }
}

/// Base position of the log's newest segment (the active one after a clean
/// close), and the number of segment files.
fn active_base(dir: &Path) -> (u64, usize) {
    let bases: Vec<u64> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| annal::segment::parse_segment_file_name(e.ok()?.file_name().to_str()?))
        .collect();
    (bases.iter().copied().max().unwrap_or(0), bases.len())
}

/// A `Reader` view of the log in `dir` (opened outside the timed region).
fn view_of(dir: &Path) -> LogView {
    let reader = Reader::open(dir).expect("reader");
    reader.view().expect("view")
}

/// `read_all(0)` of `view` up to position `end`: `(events, payload bytes)`.
fn replay(view: &LogView, end: u64) -> (u64, u64) {
    let (mut n, mut sum) = (0u64, 0u64);
    for r in view.read_all(0) {
        let r = r.expect("read");
        if r.position() >= end {
            break;
        }
        n += 1;
        sum += r.payload().len() as u64;
    }
    (n, sum)
}

/// Compact a fresh copy of `pristine` in a new scratch directory; the time
/// `Log::compact` took, its report, and the scratch directory.
fn compact_copy(pristine: &Path) -> (Duration, CompactionReport, tempfile::TempDir) {
    let work = common::scratch("annal-bench-compaction-run-");
    let dir = work.path().join("log");
    copy_tree(pristine, &dir);
    let log = Log::open(&dir).expect("open the copy");
    let t = Instant::now();
    let report = log.compact().expect("compact");
    let took = t.elapsed();
    log.close().expect("close");
    (took, report, work)
}

fn bench(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_COMPACTION_EVENTS", 1_000_000, 20_000);
    let setup = Instant::now();
    let payload = common::payload(PAYLOAD);
    let segment = (n * 34).max(64 << 10);
    let (tmp, log) = common::batched_log_with(
        "annal-bench-compaction-",
        n,
        &payload,
        &["ItemAdded"],
        Options::default().segment_size(segment),
    );
    let names: Vec<String> = (0..STREAMS).map(|i| format!("order-{i}")).collect();
    for name in &names[..STREAMS / 4] {
        log.delete_stream(name, ExpectedVersion::Any).expect("delete");
    }
    for name in &names[STREAMS / 4..STREAMS / 2] {
        log.set_stream_metadata(name, StreamMetadata::new().max_count(100))
            .expect("metadata");
    }
    log.close().expect("close");
    let pristine = tmp.path().join("log");
    let (end, segments) = active_base(&pristine);
    let (seg_bytes, _) = common::tree_bytes(&pristine);

    // A first run: what compaction does to this log (and the compacted copy
    // the last row reads).
    let (took, report, compacted) = compact_copy(&pristine);
    let compacted_dir = compacted.path().join("log");
    assert!(report.removed_events > 0, "{report:?}");
    assert_eq!(report.compacted.len() + report.unchanged, segments - 1, "{report:?}");
    let (before, after) = (view_of(&pristine), view_of(&compacted_dir));
    let same = replay(&before, end);
    assert_eq!(replay(&after, end), same, "the same visible events");
    eprintln!(
        "compaction: {n} events in {segments} segments ({seg_bytes} bytes in all files), sealed segments end at \
         position {end}; compact rewrites {} segments, {} -> {} bytes, removes {} events ({:.1}%); {} bytes per \
         event rewritten; a first run took {:.3} s; setup {:.1} s",
        report.compacted.len(),
        report.bytes_before,
        report.bytes_after,
        report.removed_events,
        100.0 * report.removed_events as f64 / end.max(1) as f64,
        report.bytes_before as f64 / end.max(1) as f64,
        took.as_secs_f64(),
        setup.elapsed().as_secs_f64()
    );

    let mut g = c.benchmark_group("compaction");
    g.throughput(Throughput::Bytes(report.bytes_before));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("compact", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (took, r, work) = compact_copy(&pristine);
                total += took;
                black_box(r);
                drop(work);
            }
            total
        })
    });
    g.bench_function("replay_same_bytes", |b| b.iter(|| black_box(replay(&before, end))));
    g.bench_function("replay_compacted", |b| b.iter(|| black_box(replay(&after, end))));
    g.finish();
    Figure::new("compaction", end, end * PAYLOAD as u64)
        .row("compact", &[("replay of the same bytes", "replay_same_bytes", None)])
        .save();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
