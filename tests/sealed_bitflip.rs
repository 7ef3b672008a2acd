//! Every byte of a sealed segment is checked (spec 4): one flipped bit anywhere
//! in it is reported, by `Reader` and by `Log`, and no record returned before
//! the report differs from the original.

mod common;

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options};
use common::{Rec, fresh_copy, read_until_err, segments};

const SEGMENT_SIZE: u64 = 2048;

fn build() -> (tempfile::TempDir, Vec<Rec>) {
    let src = common::scratch();
    let log = Log::open_with(
        src.path(),
        Options::default()
            .format_version(2)
            .segment_size(SEGMENT_SIZE)
            .durability(Durability::Buffered),
    )
    .expect("create");
    let mut i: u64 = 0;
    while segments(src.path()).len() < 3 {
        let n = 1 + i % 3;
        let events: Vec<EventData<'static>> = (0..n)
            .map(|j| {
                let tag = i * 10 + j;
                EventData::new(
                    if j % 2 == 0 { "Opened" } else { "Changed" },
                    common::payload(tag, (tag as usize * 29) % 70),
                )
                .with_metadata(common::payload(tag + 99, (tag as usize * 13) % 23))
                .with_schema_version(j as u32)
            })
            .collect();
        log.append(&format!("acct-{}", i % 4), ExpectedVersion::Any, &events)
            .expect("append");
        i += 1;
    }
    log.close().expect("close");
    let reader = annal::Reader::open(src.path()).expect("reader");
    let original = common::read_all(&reader.view().expect("view"), 0).expect("read");
    (src, original)
}

/// The records returned before an error must be a prefix of the original.
fn check_prefix(got: &[Rec], original: &[Rec], label: &str) {
    assert!(got.len() <= original.len(), "{label}: more records than written");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r, &original[i], "{label}: record {i} differs from the original");
    }
}

fn is_damage_report(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::UnsupportedVersion { .. })
}

#[test]
fn every_flipped_bit_in_a_sealed_segment_is_reported() {
    let (src, original) = build();
    let segs = segments(src.path());
    assert!(segs.len() >= 2);
    let first = common::file_name(&segs[0]);
    let len = common::file_len(&segs[0]);
    let frames = common::frames(&std::fs::read(&segs[0]).expect("read"));
    assert!(frames.len() >= 3, "a few batches and the seal: {frames:?}");
    assert_eq!(frames.last().map(|f| f.kind), Some(2), "the first segment is sealed");

    let (mut cases, mut by_open, mut by_read) = (0, 0, 0);
    // Every byte of the file: the header (0..128) as well as the frames.
    for off in 0..len {
        // One bit per byte; which one varies along the file (and not only with
        // the offset inside an 8-aligned field).
        let bit = (off + off / 8) % 8;
        let label = format!("bit {bit} of byte {off} of {first}");
        let copy = fresh_copy(src.path());
        common::edit(&copy.path().join(&first), |b| b[off as usize] ^= 1 << bit);

        // Read-only, through Reader.
        let reported = match annal::Reader::open(copy.path()).and_then(|r| r.view()) {
            Err(e) => Some(e),
            Ok(view) => {
                let (got, err) = read_until_err(&view, 0);
                check_prefix(&got, &original, &format!("{label} (Reader)"));
                err
            }
        };
        let e = reported.unwrap_or_else(|| panic!("{label}: Reader returned everything without an error"));
        assert!(is_damage_report(&e), "{label}: Reader: unexpected error kind: {e}");
        assert!(
            e.to_string().contains(&first),
            "{label}: the error does not name the file: {e}"
        );

        // Through the writer: open may refuse, else reading must report.
        match Log::open_with(
            copy.path(),
            Options::default().format_version(2).segment_size(SEGMENT_SIZE),
        ) {
            Err(e) => {
                assert!(is_damage_report(&e), "{label}: Log::open: unexpected error kind: {e}");
                assert!(
                    e.to_string().contains(&first),
                    "{label}: the error does not name the file: {e}"
                );
                by_open += 1;
            }
            Ok(log) => {
                let (got, err) = read_until_err(&log.view().expect("view"), 0);
                check_prefix(&got, &original, &format!("{label} (Log)"));
                let e = err.unwrap_or_else(|| panic!("{label}: Log::open and read_all accepted the damage"));
                assert!(is_damage_report(&e), "{label}: Log read: unexpected error kind: {e}");
                assert!(
                    e.to_string().contains(&first),
                    "{label}: the error does not name the file: {e}"
                );
                by_read += 1;
            }
        }
        cases += 1;
    }
    println!(
        "sealed bit flips: {cases} cases over {len} bytes of {first} ({} records in the log); \
         Log::open refused {by_open}, Log read reported {by_read}",
        original.len()
    );
}
