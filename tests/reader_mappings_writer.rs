//! The writer, too, keeps a bounded number of sealed segments mapped
//! between views (issue 13, defect 22), and reads through it stay exact.
//! (A test binary of its own: it sets the process-wide bound.)

mod common;

use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, Options};

const BOUND: usize = 8;
const EVENTS: u64 = 330;

fn mappings(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let needle = dir.to_str().expect("utf-8 path");
    maps.lines().filter(|l| l.contains(needle)).count()
}

fn stream_of(i: u64) -> String {
    format!("s-{}", i % 3)
}

fn check_reads(log: &Log, n: u64) {
    let view = log.view().expect("view");
    let all: Vec<u64> = view
        .read_all(0)
        .map(|r| r.map(|r| u64::from_le_bytes(r.payload().try_into().expect("8 bytes"))))
        .collect::<annal::Result<_>>()
        .expect("read_all");
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    for s in 0..3 {
        let name = format!("s-{s}");
        let got: Vec<u64> = view
            .read_stream(&name, 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| u64::from_le_bytes(r.payload().try_into().expect("8 bytes"))))
            .collect::<annal::Result<_>>()
            .expect("read_stream");
        assert_eq!(got, (0..n).filter(|i| i % 3 == s).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn a_writer_of_hundreds_of_segments_keeps_a_bounded_number_mapped() {
    annal::set_default_max_mapped_segments(BOUND);
    let dir = common::scratch();
    let opts = Options::default().segment_size(300);
    let log = Log::open_with(dir.path(), opts.clone()).expect("open");
    for i in 0..EVENTS {
        log.append(
            &stream_of(i),
            ExpectedVersion::Any,
            &[EventData::new("E", i.to_le_bytes().to_vec())],
        )
        .expect("append");
    }
    log.close().expect("close");
    let log = Log::open_with(dir.path(), opts).expect("reopen");
    assert!(common::segments(dir.path()).len() > 300);
    // Plus the index checkpoint of the active segment (spec 17.5) the
    // reopened writer maps.
    let limit = 2 * BOUND + 3;
    let mut n = EVENTS;
    for round in 0..3 {
        check_reads(&log, n);
        // The next view lets go of all but BOUND sealed segments.
        let view = log.view().expect("view");
        assert!(
            mappings(dir.path()) <= limit,
            "round {round}: {} mappings",
            mappings(dir.path())
        );
        drop(view);
        // Appends (and rolls) go on; expected versions stay right.
        for _ in 0..5 {
            let v = log
                .view()
                .expect("view")
                .stream_version(&stream_of(n))
                .expect("version");
            log.append(
                &stream_of(n),
                ExpectedVersion::Exact(v.expect("the stream exists")),
                &[EventData::new("E", n.to_le_bytes().to_vec())],
            )
            .expect("append");
            n += 1;
        }
    }
    check_reads(&log, n);
    log.close().expect("close");
}
