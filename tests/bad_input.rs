//! Bad input gives a clear error naming the file and the byte offset, and
//! nothing is modified (spec 1, 2.1, 3, 6 step 2, 10).

mod common;

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use common::{fresh_copy, segments, snapshot};

fn opts() -> Options {
    Options::default()
        .format_version(2)
        .segment_size(1024)
        .durability(Durability::Buffered)
}

/// A cleanly closed log of three segments (two sealed).
fn log3() -> tempfile::TempDir {
    let src = common::scratch();
    let log = Log::open_with(src.path(), opts()).expect("create");
    let mut i = 0u64;
    while segments(src.path()).len() < 3 {
        let events = [
            EventData::new("Deposited", common::payload(i, 40 + (i as usize * 7) % 50)),
            EventData::new("Noted", common::payload(i + 500, (i as usize * 11) % 30)).with_metadata(b"m".as_slice()),
        ];
        log.append(&format!("acct-{}", i % 3), ExpectedVersion::Any, &events)
            .expect("append");
        i += 1;
    }
    // One more batch so that the active segment holds frames.
    log.append(
        "acct-0",
        ExpectedVersion::Any,
        &[EventData::new("Closed", b"bye".as_slice())],
    )
    .expect("append");
    log.close().expect("close");
    src
}

/// How to reach the error: through the writer or a read-only reader.
#[derive(Debug, Clone, Copy)]
enum Via {
    Open,
    Reader,
}

/// The error `via` reports for the log in `dir` (open, view, or the first
/// error of a full replay). Panics if there is none. Checks that nothing in the
/// directory changed.
fn error_of(dir: &Path, via: Via, label: &str) -> Error {
    let before = snapshot(dir);
    let e = match via {
        Via::Open => match Log::open_with(dir, opts()) {
            Err(e) => e,
            Ok(log) => {
                let (_, e) = common::read_until_err(&log.view().expect("view"), 0);
                let e = e.unwrap_or_else(|| panic!("{label}: Log::open and read_all accepted damaged input"));
                // The damage was in a sealed segment, which open does not fully
                // validate (spec 6 step 2); closing may rewrite the head only.
                drop(log);
                let mut after = snapshot(dir);
                after.remove(annal::HEAD_FILE);
                let mut b = before.clone();
                b.remove(annal::HEAD_FILE);
                assert!(after == b, "{label}: segments changed");
                return e;
            }
        },
        Via::Reader => match Reader::open(dir).and_then(|r| r.view()) {
            Err(e) => e,
            Ok(view) => common::read_until_err(&view, 0)
                .1
                .unwrap_or_else(|| panic!("{label}: Reader accepted damaged input")),
        },
    };
    assert!(snapshot(dir) == before, "{label}: the failed attempt modified the log");
    e
}

/// Assert `e` is `Corrupt` in `file` at an offset in `range`, and that its
/// message names the file and the offset.
fn assert_corrupt(e: &Error, file: &Path, range: Range<u64>, what: &str) {
    match e {
        Error::Corrupt { path, offset, detail } => {
            assert_eq!(path, file, "{what}: {e}");
            assert!(
                range.contains(offset),
                "{what}: offset {offset} not in {range:?}: {detail}"
            );
            assert!(!detail.is_empty());
        }
        other => panic!("{what}: expected Error::Corrupt, got {other:?} ({other})"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&common::file_name(file)),
        "{what}: message does not name the file: {msg}"
    );
    let Error::Corrupt { offset, .. } = e else {
        unreachable!()
    };
    assert!(
        msg.contains(&offset.to_string()),
        "{what}: message does not give the offset: {msg}"
    );
}

fn seg(dir: &Path, i: usize) -> PathBuf {
    segments(dir)[i].clone()
}

#[test]
fn wrong_segment_magic() {
    let src = log3();
    for (i, what) in [(0, "sealed"), (2, "active")] {
        for via in [Via::Open, Via::Reader] {
            let label = format!("{what} segment, {via:?}");
            let copy = fresh_copy(src.path());
            let file = seg(copy.path(), i);
            common::edit(&file, |b| b[..8].copy_from_slice(b"ANNALSEX"));
            let e = error_of(copy.path(), via, &label);
            assert_corrupt(&e, &file, 0..1, &label);
            assert!(e.to_string().contains("magic"), "{label}: {e}");
        }
    }
}

#[test]
fn unknown_format_version() {
    let src = log3();
    for (i, what) in [(0, "sealed"), (1, "sealed"), (2, "active")] {
        // 0 and every version after the current one (2: format v2, the
        // audit chain) are unknown; 1 and 2 are read.
        for version in [0u16, annal::format::CURRENT_FORMAT_VERSION + 1, 0xBEEF] {
            for via in [Via::Open, Via::Reader] {
                let label = format!("{what} segment {i}, version {version}, {via:?}");
                let copy = fresh_copy(src.path());
                let file = seg(copy.path(), i);
                common::edit(&file, |b| {
                    b[8..10].copy_from_slice(&version.to_le_bytes());
                    common::fix_segment_header_crc(b);
                });
                let e = error_of(copy.path(), via, &label);
                match &e {
                    Error::UnsupportedVersion {
                        path,
                        offset,
                        found,
                        oldest,
                        current,
                    } => {
                        assert_eq!(path, &file, "{label}");
                        assert_eq!(*offset, 8, "{label}");
                        assert_eq!(*found, version, "{label}");
                        assert_eq!(
                            (*oldest, *current),
                            (1, annal::format::CURRENT_FORMAT_VERSION),
                            "{label}"
                        );
                    }
                    other => panic!("{label}: expected UnsupportedVersion, got {other}"),
                }
                let msg = e.to_string();
                assert!(msg.contains(&common::file_name(&file)), "{label}: {msg}");
                assert!(msg.contains(&version.to_string()), "{label}: {msg}");
            }
        }
    }
}

#[test]
fn frame_len_past_the_end_of_a_sealed_segment() {
    let src = log3();
    for frame in [0usize, 1] {
        for via in [Via::Open, Via::Reader] {
            let label = format!("frame {frame}, {via:?}");
            let copy = fresh_copy(src.path());
            let file = seg(copy.path(), 0);
            let frames = common::frames(&fs::read(&file).expect("read"));
            let f = frames[frame];
            let len = common::file_len(&file);
            common::edit(&file, |b| {
                let at = f.offset as usize;
                // Valid-looking (a multiple of 8, CRC fixed) but past the end.
                b[at + 8..at + 16].copy_from_slice(&(len * 2).next_multiple_of(8).to_le_bytes());
                common::fix_frame_header_crc(b, at);
            });
            let e = error_of(copy.path(), via, &label);
            // The frame, or its frame_len field.
            assert_corrupt(&e, &file, f.offset..f.offset + 16, &label);
        }
    }
}

#[test]
fn record_crc_mismatch() {
    let src = log3();
    for (i, what) in [(0, "sealed"), (2, "active")] {
        for via in [Via::Open, Via::Reader] {
            let label = format!("{what} segment, {via:?}");
            let copy = fresh_copy(src.path());
            let file = seg(copy.path(), i);
            let frames = common::frames(&fs::read(&file).expect("read"));
            let f = frames[0];
            let rec = f.offset as usize + 72;
            let mut rec_len = 0;
            common::edit(&file, |b| {
                rec_len = common::u32_at(b, rec) as u64;
                // A payload byte of the first record: only the record CRC
                // covers it.
                let stream_len = u16::from_le_bytes([b[rec + 54], b[rec + 55]]) as usize;
                let type_len = u16::from_le_bytes([b[rec + 56], b[rec + 57]]) as usize;
                let metadata_len = common::u32_at(b, rec + 60) as usize;
                let payload_len = common::u32_at(b, rec + 64) as usize;
                assert!(payload_len > 0);
                b[rec + 72 + stream_len + type_len + metadata_len + payload_len / 2] ^= 0x08;
            });
            let e = error_of(copy.path(), via, &label);
            let rec = rec as u64;
            assert_corrupt(&e, &file, rec..rec + rec_len, &label);
            assert!(e.to_string().contains("CRC"), "{label}: {e}");
        }
    }
}

#[test]
fn truncated_sealed_segment() {
    let src = log3();
    for cut in [1u64, 7, 8, 71, 72, 100] {
        for i in [0, 1] {
            for via in [Via::Open, Via::Reader] {
                let label = format!("segment {i} cut by {cut}, {via:?}");
                let copy = fresh_copy(src.path());
                let file = seg(copy.path(), i);
                let len = common::file_len(&file) - cut;
                fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_len(len))
                    .expect("truncate");
                let e = error_of(copy.path(), via, &label);
                assert_corrupt(&e, &file, 128..len + 1, &label);
            }
        }
    }
}

#[test]
fn directory_holding_an_unrelated_file_is_not_a_log() {
    let dir = common::scratch();
    fs::write(dir.path().join("notes.txt"), b"my notes").expect("write");
    for create in [true, false] {
        match Log::open_with(dir.path(), Options::default().format_version(2).create(create)) {
            Err(Error::NotALog { path, detail }) => {
                assert_eq!(path, dir.path());
                assert!(!detail.is_empty());
            }
            Err(e) => panic!("expected NotALog, got {e}"),
            Ok(_) => panic!("a log was created in a directory holding other files"),
        }
    }
    let e = Reader::open(dir.path()).expect_err("Reader on a directory that is not a log");
    assert!(matches!(&e, Error::NotALog { path, .. } if path == dir.path()), "{e:?}");
    let e = Log::open_with(dir.path(), Options::default().format_version(2)).expect_err("not a log");
    assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
    assert_eq!(common::listing(dir.path()), ["notes.txt"], "nothing was created");
    assert_eq!(fs::read(dir.path().join("notes.txt")).expect("read"), b"my notes");
}

#[test]
fn a_regular_file_is_not_a_log() {
    let dir = common::scratch();
    let file = dir.path().join("events.db");
    fs::write(&file, b"not a directory").expect("write");
    let e = Log::open_with(&file, Options::default().format_version(2)).expect_err("a file is not a log");
    match &e {
        Error::NotALog { path, .. } => assert_eq!(path, &file),
        other => panic!("expected NotALog, got {other}"),
    }
    assert!(e.to_string().contains("events.db"), "{e}");
    // Read-only: an error naming the file. (Reader::open currently reports
    // `Error::Io { op: "read directory", .. }` here where Log::open reports
    // NotALog; both name the path.)
    let e = Reader::open(&file).expect_err("a file is not a log to read");
    match &e {
        Error::NotALog { path, .. } | Error::Io { path, .. } => assert_eq!(path, &file),
        other => panic!("expected NotALog or Io naming the file, got {other}"),
    }
    assert!(e.to_string().contains("events.db"), "{e}");
    assert_eq!(fs::read(&file).expect("read"), b"not a directory");
    assert_eq!(common::listing(dir.path()), ["events.db"]);
}

#[test]
fn empty_directory_read_only_is_not_a_log() {
    let dir = common::scratch();
    let e = Reader::open(dir.path()).expect_err("an empty directory is not a log to read");
    match &e {
        Error::NotALog { path, .. } => assert_eq!(path, dir.path()),
        other => panic!("expected NotALog, got {other}"),
    }
    assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
    assert!(common::listing(dir.path()).is_empty(), "the reader created something");
    // Opening for writing without `create` refuses it too, creating nothing.
    let e = Log::open_with(dir.path(), Options::default().format_version(2).create(false)).expect_err("create(false)");
    assert!(matches!(e, Error::NotALog { .. }), "{e}");
    assert!(
        common::listing(dir.path()).is_empty(),
        "Log::open_with(create=false) created something"
    );
}

/// The active segment of a cleanly closed log is durable in full (spec 5.2:
/// "its boundary is its end, and any changed byte anywhere in the log is
/// reported as corruption"): losing its last bytes is corruption for the
/// writer and for a reader alike.
#[test]
fn truncated_active_segment_of_a_cleanly_closed_log() {
    let src = log3();
    let active = seg(src.path(), 2);
    let frames = common::frames(&fs::read(&active).expect("read"));
    let last = *frames.last().expect("a frame");
    let len = common::file_len(&active);
    let total = common::read_with_reader(src.path()).expect("read").len();
    // Cut inside the last frame, at its start (a frame boundary), and to the header.
    for new_len in [len - 1, len - 5, len - 8, last.offset + 72, last.offset, 128] {
        for via in [Via::Open, Via::Reader] {
            let label = format!("active segment cut from {len} to {new_len} bytes, {via:?}");
            let copy = fresh_copy(src.path());
            let file = seg(copy.path(), 2);
            fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_len(new_len))
                .expect("truncate");
            let before = snapshot(copy.path());
            let e = match via {
                Via::Open => error_of(copy.path(), via, &label),
                Via::Reader => {
                    let r = Reader::open(copy.path()).and_then(|r| r.view());
                    let e = match r {
                        Err(e) => e,
                        Ok(view) => {
                            let (got, e) = common::read_until_err(&view, 0);
                            e.unwrap_or_else(|| {
                                panic!(
                                    "{label}: the reader returned {} of {total} records and no error, \
                                     though the head says the segment is durable up to byte {len}",
                                    got.len()
                                )
                            })
                        }
                    };
                    assert!(snapshot(copy.path()) == before, "{label}: the reader modified the log");
                    e
                }
            };
            assert_corrupt(&e, &file, 128..len + 1, &label);
        }
    }
}

/// Bytes after the seal of a sealed segment must not exist (spec 3.4, 4).
#[test]
fn bytes_after_the_seal_of_a_sealed_segment() {
    let src = log3();
    let seed = common::seed("bytes after the seal");
    let mut rng = common::Rng::new(seed);
    let garbage = rng.bytes(100);
    let seal = {
        let b = fs::read(seg(src.path(), 0)).expect("read");
        b[b.len() - 72..].to_vec()
    };
    let len = common::file_len(&seg(src.path(), 0));
    let extras: [(&str, Vec<u8>); 4] = [
        ("8 zero bytes", vec![0; 8]),
        ("72 zero bytes", vec![0; 72]),
        ("100 random bytes", garbage),
        ("a copy of the seal", seal),
    ];
    for (what, extra) in &extras {
        for via in [Via::Open, Via::Reader] {
            let label = format!("{what} after the seal, {via:?} (seed {seed})");
            let copy = fresh_copy(src.path());
            let file = seg(copy.path(), 0);
            common::edit(&file, |b| b.extend_from_slice(extra));
            let e = error_of(copy.path(), via, &label);
            assert_corrupt(&e, &file, 128..len + extra.len() as u64 + 1, &label);
        }
    }
}
