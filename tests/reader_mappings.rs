//! A log of many segments keeps a bounded number of files mapped (issue 13,
//! defect 22): sealed segments are mapped on first use, a `Reader` lets go
//! of the least recently mapped beyond its bound, and every read still
//! returns exactly what was written.

mod common;

use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, LogView, Options, Reader};

const BOUND: usize = 8;
const EVENTS: u64 = 330;

/// Mappings of this process naming a file of `dir` (lines of /proc/self/maps).
fn mappings(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let needle = dir.to_str().expect("utf-8 path");
    maps.lines().filter(|l| l.contains(needle)).count()
}

/// A log of one event per segment: `EVENTS` events over 3 streams of two
/// categories, closed.
fn build() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(300)).expect("open");
    for i in 0..EVENTS {
        let stream = format!("{}-{}", if i % 3 == 0 { "cat" } else { "dog" }, i % 3);
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[EventData::new("E", i.to_le_bytes().to_vec())],
        )
        .expect("append");
    }
    log.close().expect("close");
    dir
}

fn payload_of(r: &annal::RecordRef<'_>) -> u64 {
    u64::from_le_bytes(r.payload().try_into().expect("8 bytes"))
}

/// Every read a view offers, checked against what was written.
fn read_everything(view: &LogView) {
    let all: Vec<u64> = view
        .read_all(0)
        .map(|r| r.map(|r| payload_of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_all");
    assert_eq!(all, (0..EVENTS).collect::<Vec<_>>());
    let back: Vec<u64> = view
        .read_all_backward(u64::MAX)
        .map(|r| r.map(|r| payload_of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_all_backward");
    assert_eq!(back, (0..EVENTS).rev().collect::<Vec<_>>());
    for s in 0..3u64 {
        let name = format!("{}-{s}", if s == 0 { "cat" } else { "dog" });
        let want: Vec<u64> = (0..EVENTS).filter(|i| i % 3 == s).collect();
        for dir in [Direction::Forward, Direction::Backward] {
            let from = if dir == Direction::Forward { 0 } else { u64::MAX };
            let mut got: Vec<u64> = view
                .read_stream(&name, from, dir, u64::MAX)
                .map(|r| r.map(|r| payload_of(&r)))
                .collect::<annal::Result<_>>()
                .expect("read_stream");
            if dir == Direction::Backward {
                got.reverse();
            }
            assert_eq!(got, want, "{name} {dir:?}");
        }
    }
    let dogs: Vec<u64> = view
        .read_category("dog", 0)
        .map(|r| r.map(|r| payload_of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_category");
    assert_eq!(dogs, (0..EVENTS).filter(|i| i % 3 != 0).collect::<Vec<_>>());
}

#[test]
fn a_reader_of_hundreds_of_segments_keeps_a_bounded_number_mapped() {
    let log = build();
    let dir = log.path();
    let segments = common::segments(dir).len();
    assert!(segments > 300, "{segments} segments");
    assert_eq!(mappings(dir), 0, "nothing mapped once the writer closed");

    let mut reader = Reader::open(dir).expect("reader");
    reader.set_max_mapped_segments(BOUND);
    // Opening a view maps nothing of the sealed segments: only the active
    // segment and its index checkpoint (and nothing of the stream table
    // until a lookup).
    let view = reader.view().expect("view");
    assert_eq!(view.segment_count(), segments);
    assert!(mappings(dir) <= 3, "{} mappings after taking a view", mappings(dir));
    // A view holds what it read (records borrow from it) until dropped.
    read_everything(&view);
    assert!(mappings(dir) > 2 * BOUND, "the view maps what it reads");
    drop(view);
    // Later views: the reader keeps at most BOUND sealed segments (each with
    // its index file) mapped, plus the active segment, its index checkpoint
    // and the stream table.
    let limit = 2 * BOUND + 3;
    for round in 0..3 {
        let view = reader.view().expect("view");
        assert!(mappings(dir) <= limit, "round {round}: {} mappings", mappings(dir));
        // One stream from a recent version: touches only the segments
        // that hold those events (and the stream table).
        let cats: Vec<u64> = (0..EVENTS).filter(|i| i % 3 == 0).collect();
        let v = cats.len() as u64 - 2;
        let newest: Vec<u64> = view
            .read_stream("cat-0", v, Direction::Forward, 2)
            .map(|r| r.map(|r| payload_of(&r)))
            .collect::<annal::Result<_>>()
            .expect("read_stream");
        assert_eq!(newest, cats[cats.len() - 2..]);
        assert!(
            mappings(dir) <= limit + 2 * 3,
            "round {round}: {} mappings",
            mappings(dir)
        );
        read_everything(&view);
        drop(view);
    }
    let view = reader.view().expect("view");
    assert!(mappings(dir) <= limit, "{} mappings", mappings(dir));
    drop(view);
    drop(reader);
    assert_eq!(mappings(dir), 0, "a dropped reader maps nothing");
}

#[test]
fn a_writer_opening_hundreds_of_segments_maps_none_of_them() {
    let log = build();
    let dir = log.path();
    let w = Log::open_with(dir, Options::default().segment_size(300)).expect("open");
    assert!(
        mappings(dir) <= 2,
        "{} mappings after Log::open of {} segments",
        mappings(dir),
        common::segments(dir).len()
    );
    read_everything(&w.view().expect("view"));
    w.close().expect("close");
}
