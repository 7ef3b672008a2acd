//! The cross-process reader validates the active segment in big reads
//! (issue 15): opening a log whose active segment holds many small frames
//! costs about one `pread` per MiB of segment, not two per frame; a refresh
//! reads only the new bytes the same way; a frame larger than a read chunk
//! is read whole. Counted with the `fuzzing::reader_preads` seam, never
//! timed.

mod common;

use std::path::Path;
use std::sync::Mutex;

use annal::fuzzing::reader_preads;
use annal::{EventData, ExpectedVersion, Log, Reader};

/// The reader's read chunk (`read::active`).
const CHUNK: u64 = 1 << 20;

/// Reads made outside the active-segment walk: the segment header (when the
/// active segment is opened) and a read that meets the end of the file.
const OVERHEAD: u64 = 4;

/// The counter is process-wide: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn active_len(dir: &Path) -> u64 {
    let seg = dir.join(annal::segment::segment_file_name(0));
    std::fs::metadata(seg).expect("stat the active segment").len()
}

/// Append `n` single-event batches (one frame each) of `payload`-byte events.
fn append_singles(log: &Log, from: u64, n: u64, payload: usize) {
    for i in from..from + n {
        let events = [EventData::new("Added", common::payload(i, payload))];
        log.append(&format!("s-{}", i % 100), ExpectedVersion::Any, &events)
            .expect("append");
    }
}

/// `Reader::open`, a view and its first event; returns the view's next
/// position and the reads it took.
fn open_and_read_one(dir: &Path) -> (u64, u64) {
    let before = reader_preads();
    let reader = Reader::open(dir).expect("reader");
    let view = reader.view().expect("view");
    let first = view.read_all(0).next().expect("an event").expect("read");
    assert_eq!(first.position(), 0);
    let reads = reader_preads() - before;
    eprintln!("{reads} reads to open a {}-byte active segment", active_len(dir));
    (view.next_position(), reads)
}

#[test]
fn opening_reads_the_active_segment_in_chunks_not_per_frame() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const N: u64 = 25_000;
    let dir = common::scratch();
    let log = Log::open(dir.path()).expect("open");
    append_singles(&log, 0, N, 200);
    log.close().expect("close");
    let len = active_len(dir.path());
    assert!(len > 5 * CHUNK, "a segment of several chunks: {len} bytes");

    let (next, reads) = open_and_read_one(dir.path());
    assert_eq!(next, N, "every batch validated and visible");
    // Two reads per frame before issue 15: 40,000 here.
    let bound = len.div_ceil(CHUNK) + 1 + OVERHEAD;
    assert!(
        reads <= bound,
        "{reads} reads for a {len}-byte active segment (bound {bound})"
    );

    // The same reader sees the same log: a second view reads nothing new.
    let reader = Reader::open(dir.path()).expect("reader");
    reader.view().expect("view");
    let before = reader_preads();
    let view = reader.view().expect("view again");
    assert_eq!(view.next_position(), N);
    assert_eq!(reader_preads() - before, 0, "nothing new to validate");
}

#[test]
fn a_refresh_reads_only_the_new_bytes_in_chunks() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch();
    let log = Log::open(dir.path()).expect("open");
    append_singles(&log, 0, 1_000, 200);
    log.sync().expect("sync");
    let reader = Reader::open(dir.path()).expect("reader");
    let first = reader.view().expect("view");
    assert_eq!(first.next_position(), 1_000);
    let old = first.len_bytes();

    // While the writer holds the log: 9,000 more frames (about 2.5 MiB).
    append_singles(&log, 1_000, 9_000, 200);
    log.sync().expect("sync");
    let before = reader_preads();
    let view = reader.view().expect("refresh");
    let reads = reader_preads() - before;
    assert_eq!(view.next_position(), 10_000);
    let new = view.len_bytes() - old;
    eprintln!("{reads} reads to refresh over {new} new bytes");
    let bound = new.div_ceil(CHUNK) + 1 + OVERHEAD;
    assert!(reads <= bound, "{reads} reads for {new} new bytes (bound {bound})");
    assert_eq!(
        view.read_all(9_999).next().expect("last").expect("read").position(),
        9_999
    );
    log.close().expect("close");
}

#[test]
fn frames_larger_than_a_chunk_are_read_whole_between_small_ones() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch();
    let log = Log::open(dir.path()).expect("open");
    // Small frames, a frame of 2.5 chunks, small frames, another big one
    // cut by a chunk's end, small frames.
    let mut pos = 0;
    for big in [5 * CHUNK as usize / 2, 3 * CHUNK as usize / 2] {
        append_singles(&log, pos, 3_000, 100);
        pos += 3_000;
        log.append("big", ExpectedVersion::Any, &[EventData::new("Big", vec![7u8; big])])
            .expect("append a big event");
        pos += 1;
    }
    append_singles(&log, pos, 3_000, 100);
    pos += 3_000;
    log.close().expect("close");
    let len = active_len(dir.path());

    let (next, reads) = open_and_read_one(dir.path());
    assert_eq!(next, pos);
    // Each big frame may cost a read of its own besides the chunks.
    let bound = len.div_ceil(CHUNK) + 3 + OVERHEAD;
    assert!(
        reads <= bound,
        "{reads} reads for a {len}-byte active segment (bound {bound})"
    );

    let reader = Reader::open(dir.path()).expect("reader");
    let view = reader.view().expect("view");
    let big: Vec<usize> = view
        .read_stream("big", 0, annal::Direction::Forward, u64::MAX)
        .map(|r| r.expect("read").payload().len())
        .collect();
    assert_eq!(big, [5 * CHUNK as usize / 2, 3 * CHUNK as usize / 2]);
    assert_eq!(view.read_all(0).count() as u64, pos);
}
