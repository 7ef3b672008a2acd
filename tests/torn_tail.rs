//! A torn tail past the durable boundary is cut, whatever shape it has
//! (spec 5.1, 6 and the crash table of 12).
//!
//! The log: a sealed first segment, then an active segment holding two batches
//! that were synced (so the durable boundary is after them) and one last batch
//! that was written but never synced. A crash image is taken while the writer
//! is still open. For every byte offset inside the last batch the image is
//! damaged in three ways (cut there; the bytes from there on replaced by
//! garbage; cut there and garbage appended past the new end) and reopened.

mod common;

use std::fs;
use std::path::PathBuf;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, Recovery};
use common::{Rec, Rng, crash_image, file_len, fresh_copy, read_all, read_with_reader, segments};

const SEGMENT_SIZE: u64 = 2048;

struct Fixture {
    _src: tempfile::TempDir,
    image: tempfile::TempDir,
    /// File name of the active segment.
    active: String,
    /// File offset where the unsynced last batch starts (the durable boundary).
    start: u64,
    /// File offset where it ends (the image's active segment length).
    end: u64,
    /// Every record before the last batch.
    earlier: Vec<Rec>,
    /// Every record, the last batch included.
    all: Vec<Rec>,
}

fn opts() -> Options {
    Options::default()
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Buffered)
}

fn ev(ty: &str, tag: u64, meta: usize, pay: usize) -> EventData<'static> {
    EventData::new(ty.to_owned(), common::payload(tag, pay))
        .with_metadata(common::payload(tag + 1000, meta))
        .with_schema_version(tag as u32)
}

fn build() -> Fixture {
    let src = common::scratch();
    let log = Log::open(src.path(), opts()).expect("create log");
    // Fill the first segment so that it is sealed and a second one is active.
    let mut tag = 0;
    let mut i = 0;
    while segments(src.path()).len() < 2 {
        let stream = format!("fill-{}", i % 3);
        tag += 1;
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[ev("Filled", tag, 10, 150), ev("Filled", tag + 1, 0, 90)],
        )
        .expect("append filler");
        i += 1;
    }
    log.append("order-1", ExpectedVersion::NoStream, &[ev("Placed", 50, 20, 100)])
        .expect("append");
    log.append(
        "order-2",
        ExpectedVersion::NoStream,
        &[ev("Placed", 51, 0, 0), ev("Paid", 52, 5, 33)],
    )
    .expect("append");
    log.sync().expect("sync");
    let segs = segments(src.path());
    assert_eq!(segs.len(), 2, "the synced batches stay in the second segment");
    let active_path = segs[1].clone();
    let start = file_len(&active_path);
    let earlier = read_all(&log.view().expect("view"), 0).expect("read");

    // The last batch: written to the OS, never synced.
    log.append(
        "order-1",
        ExpectedVersion::Exact(0),
        &[
            ev("Shipped", 60, 17, 61),
            ev("Delivered", 61, 0, 7),
            ev("Rated", 62, 3, 120),
        ],
    )
    .expect("append last batch");
    assert_eq!(segments(src.path()), segs, "the last batch did not roll the segment");
    let end = file_len(&active_path);
    assert!(end > start + 72);
    let all = read_all(&log.view().expect("view"), 0).expect("read");
    assert_eq!(all.len(), earlier.len() + 3);

    let image = crash_image(src.path());
    drop(log);
    Fixture {
        _src: src,
        image,
        active: common::file_name(&active_path),
        start,
        end,
        earlier,
        all,
    }
}

/// Damage a copy of the crash image's active segment with `damage`, then check
/// that a reader sees `expect`, that opening cuts the file at `cut_at` (and
/// reports it, unless the file already ends there) leaving exactly `expect`,
/// that a new append works, and that the next open is clean. With
/// `drop_head`, the head file is removed first, so that the durable boundary
/// comes from the frame headers alone (spec 5.1 rules 1 and 2).
fn check(fx: &Fixture, label: &str, drop_head: bool, damage: impl FnOnce(&mut Vec<u8>), expect: &[Rec], cut_at: u64) {
    let copy = fresh_copy(fx.image.path());
    let active: PathBuf = copy.path().join(&fx.active);
    common::edit(&active, damage);
    if drop_head {
        fs::remove_file(copy.path().join(annal::HEAD_FILE)).expect("remove head");
    }
    let damaged_len = file_len(&active);

    // A reader (no lock) never returns a record of the torn batch, and does not
    // report damage past the durable boundary as an error.
    let seen = read_with_reader(copy.path()).unwrap_or_else(|e| panic!("{label}: reader on the crash image: {e}"));
    assert_eq!(seen, expect, "{label}: reader on the crash image");
    assert_eq!(file_len(&active), damaged_len, "{label}: a reader modified the log");

    let log = Log::open(copy.path(), opts()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let rec = log.recovery().clone();
    assert!(!rec.created, "{label}");
    assert_eq!(rec.reinitialized, None, "{label}");
    assert!(rec.removed_temp_files.is_empty(), "{label}");
    if damaged_len == cut_at {
        assert_eq!(rec.truncated, None, "{label}: nothing to cut");
    } else {
        let t = rec
            .truncated
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: expected a truncation at {cut_at}, recovery: {rec:?}"));
        assert_eq!(t.path, active, "{label}");
        assert_eq!(t.offset, cut_at, "{label}: {t:?}");
        assert_eq!(t.bytes_removed, damaged_len - cut_at, "{label}: {t:?}");
        assert!(!t.reason.is_empty(), "{label}");
    }
    assert_eq!(file_len(&active), cut_at, "{label}: file length after recovery");
    let got = read_all(&log.view().expect("view"), 0).unwrap_or_else(|e| panic!("{label}: read: {e}"));
    assert_eq!(got, expect, "{label}: records after recovery");

    // New appends continue from the recovered state.
    let version = expect
        .iter()
        .rev()
        .find(|r| r.stream == "order-1")
        .map(|r| r.stream_version);
    let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    let r = log
        .append("order-1", expected, &[EventData::new("AfterCrash", b"new".as_slice())])
        .unwrap_or_else(|e| panic!("{label}: append after recovery: {e}"));
    assert_eq!(r.first_position, expect.len() as u64, "{label}");
    assert_eq!(r.stream_version, version.map_or(0, |v| v + 1), "{label}");
    log.close().unwrap_or_else(|e| panic!("{label}: close: {e}"));

    // A reopen after that is clean.
    let log = Log::open(copy.path(), opts()).unwrap_or_else(|e| panic!("{label}: reopen: {e}"));
    assert_eq!(log.recovery(), &Recovery::default(), "{label}: second open");
    let got = read_all(&log.view().expect("view"), 0).unwrap_or_else(|e| panic!("{label}: reread: {e}"));
    assert_eq!(got.len(), expect.len() + 1, "{label}");
    assert_eq!(&got[..expect.len()], expect, "{label}");
    let new = &got[expect.len()];
    assert_eq!(
        (
            new.position,
            new.stream.as_str(),
            new.event_type.as_str(),
            new.payload.as_slice()
        ),
        (expect.len() as u64, "order-1", "AfterCrash", b"new".as_slice()),
        "{label}"
    );
    log.close().expect("close");
}

fn truncate_to(b: &mut Vec<u8>, len: u64) {
    b.truncate(len as usize);
}

#[test]
fn every_cut_inside_the_unsynced_batch_is_removed() {
    let fx = build();
    let mut cases = 0;
    for off in fx.start..fx.end {
        for drop_head in [false, true] {
            let label = format!("cut at {off}, head file removed: {drop_head}");
            check(&fx, &label, drop_head, |b| truncate_to(b, off), &fx.earlier, fx.start);
            cases += 1;
        }
    }
    println!(
        "cut: {cases} cases (offsets {}..{}, with and without head file)",
        fx.start, fx.end
    );
}

#[test]
fn every_garbage_tail_inside_the_unsynced_batch_is_removed() {
    let fx = build();
    let seed = common::seed("garbage tail");
    let mut rng = Rng::new(seed);
    let original = fs::read(fx.image.path().join(&fx.active)).expect("read the image");
    let mut cases = 0;
    for off in fx.start..fx.end {
        let garbage = rng.bytes((fx.end - off) as usize);
        let label = format!("garbage from {off} (seed {seed})");
        // Garbage equal to the bytes it replaces (e.g. one zero byte over the
        // last record's zero padding) leaves the batch complete.
        let (expect, cut_at) = if garbage[..] == original[off as usize..fx.end as usize] {
            (&fx.all, fx.end)
        } else {
            (&fx.earlier, fx.start)
        };
        check(
            &fx,
            &label,
            false,
            |b| b[off as usize..].copy_from_slice(&garbage),
            expect,
            cut_at,
        );
        cases += 1;
    }
    println!("garbage: {cases} cases (offsets {}..{})", fx.start, fx.end);
}

#[test]
fn every_cut_with_garbage_appended_is_removed() {
    let fx = build();
    let seed = common::seed("garbage appended");
    let mut rng = Rng::new(seed);
    let original = fs::read(fx.image.path().join(&fx.active)).expect("read the image");
    let mut cases = 0;
    for off in fx.start..=fx.end {
        let n = 1 + rng.below(300) as usize;
        let garbage = rng.bytes(n);
        let label = format!("cut at {off} + {} garbage bytes (seed {seed})", garbage.len());
        // Cut at the batch end leaves the batch complete: it stays, and only
        // the garbage past it is removed. So does garbage that happens to
        // restore the cut bytes (e.g. a zero over the last padding byte).
        let missing = &original[off as usize..fx.end as usize];
        let (expect, cut_at) = if garbage.starts_with(missing) {
            (&fx.all, fx.end)
        } else {
            (&fx.earlier, fx.start)
        };
        check(
            &fx,
            &label,
            false,
            |b| {
                truncate_to(b, off);
                b.extend_from_slice(&garbage);
            },
            expect,
            cut_at,
        );
        cases += 1;
    }
    println!("garbage appended: {cases} cases (offsets {}..={})", fx.start, fx.end);
}

#[test]
fn an_intact_unsynced_batch_is_kept() {
    let fx = build();
    check(&fx, "intact image", false, |_| {}, &fx.all, fx.end);
    // Without a head file every complete batch is kept too.
    check(&fx, "intact image without head", true, |_| {}, &fx.all, fx.end);
}
