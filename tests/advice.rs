//! The advice annal gives the kernel about its mappings (issue 15), through
//! the process-wide counters of `annal::fuzzing::advice`: every mapping is
//! advised for random access when it is made, point reads prefetch only the
//! pages they are about to read (index rows and entries, the first page of
//! each batch), and sequential readers (replay forward and backward, the parallel
//! rebuild) keep a `MADV_WILLNEED` window ahead of them, one advice call per
//! window (8 MiB), not one per frame; `check` advises each sealed segment it
//! walks as sequential.
//!
//! The counters are process-wide, so the tests of this file take a lock and
//! compare counts before and after what they do.

use std::path::Path;
use std::sync::Mutex;

use annal::fuzzing::{AdviceCounts, advice};
use annal::{CheckOptions, Direction, EventData, ExpectedVersion, Log, Options, Projection, Reader, RecordRef};

/// Serialises the tests of this file (the counters are process-wide).
static LOCK: Mutex<()> = Mutex::new(());

/// The readahead window (`storage::mmap::READAHEAD_WINDOW`).
const WINDOW: u64 = 8 << 20;
/// Segments of the multi-segment log: a little over two windows each.
const SEGMENT: u64 = 2 * WINDOW + (1 << 20);
const STREAMS: usize = 50;
const PAYLOAD: usize = 1000;

fn delta(before: AdviceCounts) -> AdviceCounts {
    let a = advice();
    AdviceCounts {
        random: a.random - before.random,
        willneed: a.willneed - before.willneed,
        willneed_bytes: a.willneed_bytes - before.willneed_bytes,
        sequential: a.sequential - before.sequential,
    }
}

/// A closed log of `events` events of `PAYLOAD` bytes, in appends of 10,
/// round-robin over `STREAMS` streams, in segments of `SEGMENT` bytes.
fn build(dir: &Path, events: usize) {
    let log = Log::open_with(dir, Options::default().segment_size(SEGMENT)).unwrap();
    let payload = vec![7u8; PAYLOAD];
    let batch: Vec<EventData<'_>> = (0..10).map(|_| EventData::new("E", payload.as_slice())).collect();
    for i in 0..events / 10 {
        log.append(&format!("s-{}", i % STREAMS), ExpectedVersion::Any, &batch)
            .unwrap();
    }
    log.close().unwrap();
}

/// A log of about 4.5 segments: `(dir, events, segments, bytes)`.
fn multi_segment_log() -> (tempfile::TempDir, usize, usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let events = 80_000;
    build(dir.path(), events);
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();
    assert_eq!(view.next_position(), events as u64);
    let (segments, bytes) = (view.segment_count(), view.len_bytes());
    assert!(segments >= 4, "{segments} segments");
    (dir, events, segments, bytes)
}

/// The number of records an iterator yields, none of them an error.
fn ok_count<'a>(mut it: impl Iterator<Item = annal::Result<RecordRef<'a>>>) -> usize {
    it.try_fold(0, |n, r| r.map(|_| n + 1)).unwrap()
}

/// The window calls a walk of `bytes` in `segments` segments may take: one
/// per window of each segment (and one more per segment for its tail).
fn max_windows(bytes: u64, segments: usize) -> u64 {
    bytes / WINDOW + 2 * segments as u64
}

#[test]
fn point_reads_map_for_random_access_and_prefetch_only_block_tables() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, events, segments, bytes) = multi_segment_log();
    let before = advice();
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();
    let n = ok_count(view.read_stream("s-3", 0, Direction::Forward, u64::MAX));
    assert_eq!(n, events / STREAMS);
    let d = delta(before);
    // The stream has events in every segment: each sealed one and its index
    // file were mapped, and every mapping made was advised random.
    assert!(d.random >= 2 * (segments as u64 - 1), "{d:?} for {segments} segments");
    // Per derived file opened (each sealed segment's index, the stream table,
    // the active segment's checkpoint): its end (its block CRC table and
    // footer, which opening it reads whole) and the rows where the stream
    // should be; per sealed segment, the page of the stream's row; per
    // segment, the stream's index entries; per batch of the stream, its first
    // page (10 events of 1,000 bytes a batch here). Never a segment whole.
    let batches = (n / 10) as u64;
    let files = segments as u64 + 2;
    assert!(
        d.willneed <= 2 * files + 2 * segments as u64 + batches,
        "{d:?} for {segments} segments"
    );
    assert!(d.willneed_bytes < bytes / 4, "{d:?} of {bytes} segment bytes");
    assert_eq!(d.sequential, 0, "{d:?}");
}

#[test]
fn replay_reads_ahead_with_an_advice_per_segment_not_per_frame() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, events, segments, bytes) = multi_segment_log();
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();

    // Forward: each segment is advised sequential while the replay walks it
    // (the kernel reads ahead), then random again: two calls a segment,
    // thousands of frames.
    let before = advice();
    assert_eq!(ok_count(view.read_all(0)), events);
    let d = delta(before);
    assert_eq!(d.sequential, segments as u64, "{d:?}, {segments} segments");
    assert!(d.random >= segments as u64, "{d:?}");
    // No window ahead: the kernel reads ahead. (Before it starts, the replay
    // looks the `$meta` category up in each segment's index, spec 3.7:
    // opening an index file asks for its block table, one advice a file.)
    assert!(d.willneed <= segments as u64, "{d:?}");
    // A replay in progress holds its segment sequential until it is dropped.
    let before = advice();
    let mut it = view.read_all(0);
    assert!(it.next().is_some());
    assert_eq!(delta(before).sequential, 1);
    drop(it);

    // Backward, which the kernel does not detect: windows below the cursor.

    let before = advice();
    assert_eq!(ok_count(view.read_all_backward(u64::MAX)), events);
    let d = delta(before);
    assert!(
        d.willneed_bytes + segments as u64 * (1 << 20) >= bytes,
        "{d:?}, {bytes} bytes"
    );
    assert!(d.willneed >= bytes / WINDOW, "{d:?}");
    assert!(d.willneed <= max_windows(bytes, segments), "{d:?}");
}

struct Count;

impl Projection for Count {
    type Model = u64;
    fn empty(&self) -> u64 {
        0
    }
    fn apply(&self, model: &mut u64, _: &RecordRef<'_>) {
        *model += 1;
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

#[test]
fn parallel_rebuild_reads_its_chunks_ahead() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, events, segments, bytes) = multi_segment_log();
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();
    let before = advice();
    assert_eq!(view.par_rebuild(&Count).unwrap(), events as u64);
    let d = delta(before);
    // Every segment is advised sequential while chunks walk it (at least
    // once; again when a chunk starts after the others let go of it), never
    // once per frame; the only prefetches are of index files' tables.
    let chunks = 4 * rayon_threads() as u64 * segments as u64;
    assert!(d.sequential >= segments as u64, "{d:?}, {segments} segments");
    assert!(d.sequential <= chunks, "{d:?}");
    assert!(d.willneed_bytes < bytes / 100, "{d:?}, {bytes} bytes");
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()).max(4)
}

#[test]
fn check_walks_sealed_segments_sequentially() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, _, segments, _) = multi_segment_log();
    let before = advice();
    let report = annal::check(dir.path(), CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let d = delta(before);
    // Every sealed segment (all but the last, which check copies).
    assert_eq!(d.sequential, segments as u64 - 1, "{d:?}");
}
