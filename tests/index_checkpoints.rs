//! Index checkpoints of the active segment (spec 17.5, issue 15): a clean
//! close writes the in-memory index of the active segment as checkpoint
//! files, and the next open reads none of the batches they cover. Proven
//! without timing: a payload byte of a covered batch is damaged on disk, so
//! any open that walked the segment would fail; the open succeeds, and only
//! a read of that batch reports the damage.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};

fn opts() -> Options {
    Options::default().format_version(2).durability(Durability::Fsync)
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    v.sort();
    v
}

/// `n` batches of 2 events over 7 streams `s-{i}`, each batch's events
/// carrying payloads tagged by batch.
fn append_batches(log: &Log, from: u64, n: u64) {
    for i in from..from + n {
        let events = [
            EventData::new("A", format!("batch {i} event 0").into_bytes()),
            EventData::new("B", format!("batch {i} event 1").into_bytes()),
        ];
        log.append(&format!("s-{}", i % 7), ExpectedVersion::Any, &events)
            .unwrap();
    }
}

fn stream_payloads(view: &annal::LogView, stream: &str) -> Vec<String> {
    view.read_stream(stream, 0, Direction::Forward, u64::MAX)
        .map(|r| String::from_utf8(r.unwrap().payload().to_vec()).unwrap())
        .collect()
}

fn all_payloads(view: &annal::LogView) -> Vec<String> {
    view.read_all(0)
        .map(|r| String::from_utf8(r.unwrap().payload().to_vec()).unwrap())
        .collect()
}

fn expected_stream(total: u64, s: u64) -> Vec<String> {
    (0..total)
        .filter(|i| i % 7 == s)
        .flat_map(|i| [format!("batch {i} event 0"), format!("batch {i} event 1")])
        .collect()
}

#[test]
fn close_writes_a_checkpoint_and_reopen_reads_through_it() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 100);
    log.close().unwrap();
    let ck = checkpoints(dir.path());
    assert_eq!(ck.len(), 1, "{ck:?}");

    // Reopen: every read through the checkpoint and the new tail.
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 100, 20);
    let view = log.view().unwrap();
    for s in 0..7 {
        assert_eq!(stream_payloads(&view, &format!("s-{s}")), expected_stream(120, s));
    }
    assert_eq!(all_payloads(&view).len(), 240);
    assert_eq!(view.read_category("s", 0).count(), 240);
    assert_eq!(view.read_event_type("B", 0).count(), 120);
    // Expected versions come through the checkpoint too.
    let v = view
        .read_stream("s-3", u64::MAX, Direction::Backward, 1)
        .next()
        .unwrap()
        .unwrap()
        .stream_version();
    assert!(matches!(
        log.append(
            "s-3",
            ExpectedVersion::Exact(v - 1),
            &[EventData::new("A", b"x".as_slice())]
        ),
        Err(Error::WrongExpectedVersion { .. })
    ));
    log.append(
        "s-3",
        ExpectedVersion::Exact(v),
        &[EventData::new("A", b"x".as_slice())],
    )
    .unwrap();
    log.close().unwrap();
    // Two checkpoints: the new one covers less than half of what the first
    // does, so it is not merged into it.
    let ck = checkpoints(dir.path());
    assert_eq!(ck.len(), 2, "{ck:?}");

    // A cross-process reader uses the checkpoints as well.
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();
    let mut want = expected_stream(120, 3);
    want.push("x".into());
    assert_eq!(stream_payloads(&view, "s-3"), want);
    assert_eq!(all_payloads(&view).len(), 241);
}

/// The file offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn open_reads_no_batch_a_checkpoint_covers() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 50);
    log.close().unwrap();
    assert_eq!(checkpoints(dir.path()).len(), 1);

    // Damage a payload byte of batch 3 (stream s-3): its CRC no longer holds.
    let seg = dir.path().join("00000000000000000000.seg");
    let mut bytes = fs::read(&seg).unwrap();
    let at = find(&bytes, b"batch 3 event 1");
    bytes[at] ^= 0x20;
    fs::write(&seg, &bytes).unwrap();

    // The writer opens without reading it, appends and reads other streams.
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 50, 1);
    let view = log.view().unwrap();
    assert_eq!(stream_payloads(&view, "s-2"), expected_stream(51, 2));
    // The damaged batch is reported when read, naming the segment and offset.
    let err = view
        .read_stream("s-3", 0, Direction::Forward, u64::MAX)
        .find_map(Result::err)
        .expect("the damaged batch is an error");
    match err {
        Error::Corrupt { path, .. } => assert_eq!(path, seg),
        e => panic!("{e}"),
    }
    log.close().unwrap();

    // So does a reader in another process: it opens without walking it.
    let r = Reader::open(dir.path()).unwrap();
    let view = r.view().unwrap();
    assert_eq!(stream_payloads(&view, "s-1"), expected_stream(51, 1));
    assert!(
        view.read_stream("s-3", 0, Direction::Forward, u64::MAX)
            .any(|r| r.is_err())
    );

    // `check` reads everything, and finds it.
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(!report.is_ok());
}

#[test]
fn a_checkpoint_that_does_not_match_the_segment_is_not_used() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 40);
    log.close().unwrap();
    let ck = checkpoints(dir.path());
    assert_eq!(ck.len(), 1);

    // A checkpoint whose blocks do not check: ignored, removed, warned about.
    let mut b = fs::read(&ck[0]).unwrap();
    b[200] ^= 1;
    fs::write(&ck[0], &b).unwrap();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    assert!(
        log.recovery().warnings.iter().any(|w| w.contains(".ckpt")),
        "{:?}",
        log.recovery().warnings
    );
    let view = log.view().unwrap();
    for s in 0..7 {
        assert_eq!(stream_payloads(&view, &format!("s-{s}")), expected_stream(40, s));
    }
    log.close().unwrap();
    // The close wrote a good one again.
    assert_eq!(checkpoints(dir.path()).len(), 1);
    let log = Log::open_with(dir.path(), opts()).unwrap();
    assert!(log.recovery().warnings.is_empty(), "{:?}", log.recovery().warnings);
    log.close().unwrap();
}

#[test]
fn a_checkpoint_that_lies_about_a_stream_is_caught_by_the_hit_check() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 40);
    log.close().unwrap();
    let ck = checkpoints(dir.path()).remove(0);

    // Swap two stream entries' frame offsets inside the checkpoint and fix
    // its block checksums: a well-formed file that points at wrong batches.
    let bytes = fs::read(&ck).unwrap();
    let forged = swap_first_entries(&bytes);
    fs::write(&ck, &forged).unwrap();

    let log = Log::open_with(dir.path(), opts()).unwrap();
    let view = log.view().unwrap();
    for s in 0..7 {
        assert_eq!(stream_payloads(&view, &format!("s-{s}")), expected_stream(40, s));
    }
    assert!(!view.index_damage().is_empty());
    // Expected versions still right.
    log.append(
        "s-0",
        ExpectedVersion::Exact(11),
        &[EventData::new("A", b"y".as_slice())],
    )
    .unwrap();
    log.close().unwrap();
}

#[test]
fn crash_after_checkpoint_recovers_from_it() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 30);
    log.close().unwrap();
    // A second session that does not close: its batches are recovered by
    // walking only them.
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 30, 30);
    std::mem::forget(log);
    let copy = common::fresh_copy(dir.path());
    let log = Log::open_with(copy.path(), opts()).unwrap();
    let view = log.view().unwrap();
    for s in 0..7 {
        assert_eq!(stream_payloads(&view, &format!("s-{s}")), expected_stream(60, s));
    }
    log.close().unwrap();
}

/// Swap the `frame_offset` of the first stream entries of stream rows 0 and
/// 1 (both streams start at version 0 here), then recompute the block,
/// table and footer CRCs (spec 16). Index version 2 (spec 17.2): 48-byte
/// rows with `entry_start` at 28, 8-byte entries with `frame_offset` at 4.
fn swap_first_entries(idx: &[u8]) -> Vec<u8> {
    const HEADER: usize = 128;
    const ROW: usize = 48;
    assert_eq!(u16::from_le_bytes([idx[8], idx[9]]), 2, "index_version");
    let mut f = idx.to_vec();
    let streams = common::u32_at(&f, 40) as usize;
    let entries_at = HEADER + streams * ROW;
    let entry = |row: usize| entries_at + common::u32_at(idx, HEADER + row * ROW + 28) as usize * 8 + 4;
    let (a, b) = (entry(0), entry(1));
    for j in 0..4 {
        f.swap(a + j, b + j);
    }
    annal::fuzzing::fix_blockfile(&mut f);
    f
}

/// With `Durability::Fsync`, a checkpoint is written every
/// `index_checkpoint_bytes` of durable batches, so a crash's recovery walks
/// only the batches after the last one: a damaged payload in a covered
/// batch of the crash image does not stop the open.
#[test]
fn periodic_checkpoints_bound_what_recovery_walks() {
    let dir = common::scratch();
    let o = opts().index_checkpoint_bytes(4096);
    let log = Log::open_with(dir.path(), o.clone()).unwrap();
    append_batches(&log, 0, 200);
    // The sealer writes checkpoints in the background: wait for one that
    // covers batch 3 (a bounded poll on the directory, not a timing claim).
    let covered = |d: &Path| {
        checkpoints(d)
            .iter()
            .any(|p| p.to_str().unwrap().contains("-00000000000000000128-"))
    };
    for _ in 0..2000 {
        if covered(dir.path()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(covered(dir.path()), "{:?}", checkpoints(dir.path()));
    let image = common::crash_image(dir.path());
    std::mem::forget(log);

    let seg = image.path().join("00000000000000000000.seg");
    let mut bytes = fs::read(&seg).unwrap();
    let at = find(&bytes, b"batch 3 event 1");
    bytes[at] ^= 0x20;
    fs::write(&seg, &bytes).unwrap();
    let log = Log::open_with(image.path(), o).unwrap();
    let view = log.view().unwrap();
    assert_eq!(stream_payloads(&view, "s-5"), expected_stream(200, 5));
    assert!(
        view.read_stream("s-3", 0, Direction::Forward, u64::MAX)
            .any(|r| r.is_err())
    );
    log.close().unwrap();
}

/// `check` verifies the checkpoints of the active segment against the
/// batches they cover (spec 17.5), naming the file and the byte.
#[test]
fn check_compares_each_checkpoint_with_the_segment() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 0, 40);
    log.close().unwrap();
    let log = Log::open_with(dir.path(), opts()).unwrap();
    append_batches(&log, 40, 5);
    log.close().unwrap();
    assert_eq!(checkpoints(dir.path()).len(), 2);
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let ck = checkpoints(dir.path()).remove(0);
    fs::write(&ck, swap_first_entries(&fs::read(&ck).unwrap())).unwrap();
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(!report.is_ok());
    let p = report
        .problems
        .iter()
        .find(|p| p.file == ck)
        .expect("a problem naming the checkpoint");
    assert!(p.detail.contains("checkpoint"), "{}", p.detail);
    assert!(p.offset > 128, "{}", p.offset);
}

/// A segment opened from its checkpoints and then sealed: its index file
/// is the checkpoints' index and the tail's, merged (byte for byte what a
/// rebuild from the segment gives, as `check` confirms), and the
/// checkpoints are removed.
#[test]
fn a_segment_sealed_after_opening_from_checkpoints_gets_its_whole_index() {
    let dir = common::scratch();
    let small = opts().segment_size(16 << 10);
    let log = Log::open_with(dir.path(), small.clone()).unwrap();
    append_batches(&log, 0, 60);
    log.close().unwrap();
    assert_eq!(checkpoints(dir.path()).len(), 1);
    let before = common::segments(dir.path()).len();
    let log = Log::open_with(dir.path(), small.clone()).unwrap();
    let mut n = 60;
    while common::segments(dir.path()).len() == before {
        append_batches(&log, n, 1);
        n += 1;
    }
    log.close().unwrap();
    // The sealed segment's checkpoints are gone; the new active segment has its own.
    let ck = checkpoints(dir.path());
    assert!(
        ck.iter().all(|p| !p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{:020}-", 0))),
        "{ck:?}"
    );
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let log = Log::open_with(dir.path(), small).unwrap();
    let view = log.view().unwrap();
    for s in 0..7 {
        assert_eq!(stream_payloads(&view, &format!("s-{s}")), expected_stream(n, s));
    }
    log.close().unwrap();
}

/// Reads never lie when a checkpoint file is damaged: random damage to it
/// (which its block checksums catch) leaves every reader returning exactly
/// the events that were written, or an error; the writer opens, decides
/// expected versions right, and `check` reports the file. (A checkpoint
/// rewritten with valid checksums is a forgery: its hits are still checked
/// against the segment, `a_checkpoint_that_lies_about_a_stream_is_caught_by_
/// the_hit_check`, and `check` compares every byte, `check_compares_each_
/// checkpoint_with_the_segment`; like an index file or the stream table, it
/// can hide batches from a reader, never invent them: spec 17.5.)
#[test]
fn damaged_checkpoints_never_change_what_is_read() {
    let src = common::scratch();
    let log = Log::open_with(src.path(), opts()).unwrap();
    append_batches(&log, 0, 80);
    log.close().unwrap();
    let ck_name = checkpoints(src.path())[0].file_name().unwrap().to_owned();
    let original = fs::read(src.path().join(&ck_name)).unwrap();
    let mut rng = common::Rng::new(common::seed("damaged_checkpoints_never_change_what_is_read"));
    for case in 0..150 {
        let dir = common::fresh_copy(src.path());
        let mut b = original.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 << rng.below(8);
        }
        fs::write(dir.path().join(&ck_name), &b).unwrap();
        let label = format!("case {case}");
        // A reader in another process.
        if let Ok(view) = Reader::open(dir.path()).and_then(|r| r.view()) {
            for s in 0..7 {
                let got: annal::Result<Vec<String>> = view
                    .read_stream(&format!("s-{s}"), 0, Direction::Forward, u64::MAX)
                    .map(|r| r.map(|r| String::from_utf8(r.payload().to_vec()).unwrap()))
                    .collect();
                if let Ok(got) = got {
                    assert_eq!(got, expected_stream(80, s), "{label}: s-{s}");
                }
            }
            let cat: annal::Result<usize> = view.read_category("s", 0).try_fold(0, |n, r| r.map(|_| n + 1));
            assert!(cat.as_ref().map_or(true, |&n| n == 160), "{label}: {cat:?}");
        }
        // The writer.
        let log = Log::open_with(dir.path(), opts()).unwrap_or_else(|e| panic!("{label}: {e}"));
        let view = log.view().unwrap();
        for s in 0..7 {
            assert_eq!(
                stream_payloads(&view, &format!("s-{s}")),
                expected_stream(80, s),
                "{label}"
            );
        }
        log.append(
            "s-4",
            ExpectedVersion::Exact(21),
            &[EventData::new("A", b"z".as_slice())],
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        drop(view);
        log.close().unwrap();
        let _ = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    }
    // And `check` names a damaged checkpoint (before a writer replaces it).
    let dir = common::fresh_copy(src.path());
    let mut b = original.clone();
    b[130] ^= 4;
    fs::write(dir.path().join(&ck_name), &b).unwrap();
    let r = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(
        r.problems.iter().any(|p| p.file == dir.path().join(&ck_name)),
        "{:?}",
        r.problems
    );
}
