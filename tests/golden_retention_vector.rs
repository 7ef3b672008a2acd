//! Golden vector of log retention (`spec/format.md` sections 3.9 and 15), in
//! `spec/vectors/v4/retained/` + `retained.json`: a format version 4 log
//! written by annal's writer (fixed log id, a scripted clock,
//! `Durability::Buffered`, the audit chain on, `segment_size` 512) that
//! appended 12 events to `order-1` .. `order-3` (one per batch), removed its
//! oldest segments with `apply_retention_with(max_bytes 1200)` (by size), appended
//! one more event and closed. Its first segment starts at `P > 0`, and the
//! `$retention` record (80 bytes, spec 3.9) says so.
//!
//! The JSON is computed from the committed bytes by code written from the
//! spec alone: the v3 reader of `tests/golden/v3.rs` (which reads version 4
//! segments) and the retention record decoder below (never annal's). The
//! test checks that
//!
//! 1. the independent reader reads the committed bytes to the committed
//!    JSON: every segment (base, `prev_timestamp`, `chain_start`), the
//!    record field by field, and every surviving event;
//! 2. the record accounts for the front: `removed_before` is the first
//!    segment's base, `chain_at` its `chain_start`, `previous_start` 0, the
//!    `SIZE` flag with `max_bytes` 1200, `newest_removed_timestamp` the first
//!    segment's `prev_timestamp`; each segment's chain verifies from its
//!    `chain_start`, and each seal's chain is the next segment's start;
//! 3. annal's readers (a `Reader`) return exactly the surviving events,
//!    and `annal::check` passes and reports the retention;
//! 4. annal's writer, given the same log id, clock and calls, writes the
//!    committed segment files byte for byte.
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --all-features --test golden_retention_vector
//! ```

mod golden;
#[path = "golden/v3.rs"]
mod v3;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{CheckOptions, Durability, EventData, ExpectedVersion, Log, Options, Reader, Retention};
use serde::{Deserialize, Serialize};

use golden::{assert_bytes_eq, hex, regenerating};

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const CLOCK_START: u64 = 1_700_000_000_000_000_000;
const CLOCK_STEP: u64 = 1_000;
const MAX_BYTES: u64 = 1200;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/v4")
}

/// Write the vector's log into `dir` with annal's writer.
fn write_log(dir: &Path) {
    let n = Arc::new(AtomicU64::new(0));
    let clock = Arc::new(move || CLOCK_START + n.fetch_add(1, Ordering::SeqCst) * CLOCK_STEP);
    let opts = Options::default()
        // A version 4 vector (new logs are version 5).
        .format_version(4)
        .log_id(LOG_ID)
        .clock(clock)
        .durability(Durability::Buffered)
        .segment_size(512);
    let log = Log::open_with(dir, opts).expect("open");
    for i in 0..12u64 {
        let stream = format!("order-{}", i % 3 + 1);
        let payload = format!("{{\"n\":{i}}}");
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[EventData::new("Placed", payload.into_bytes())],
        )
        .expect("append");
    }
    let r = log
        .apply_retention_with(Retention::new().max_bytes(MAX_BYTES))
        .expect("retain");
    assert!(r.removed_before.is_some_and(|p| p > 0), "{r:?}");
    log.append(
        "order-1",
        ExpectedVersion::Any,
        &[EventData::new("Placed", b"{\"n\":12}".to_vec())],
    )
    .expect("append");
    log.close().expect("close");
}

/// The files of the vector: the segments (derived files and the head are
/// checked by `annal::check`, not pinned).
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            Some((n.strip_suffix(".seg")?.parse().ok()?, e.path()))
        })
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    file: String,
    base_position: u64,
    prev_timestamp: u64,
    chain_start: String,
    /// The chain after the segment's last batch (its seal's, if sealed).
    chain_end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    position: u64,
    payload: String,
    retention_version: u8,
    flags: u8,
    flag_names: Vec<String>,
    removed_before: u64,
    previous_start: u64,
    newest_removed_timestamp: u64,
    max_age: u64,
    max_bytes: u64,
    chain_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    position: u64,
    stream: String,
    stream_version: u64,
    event_type: String,
    payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Vector {
    note: String,
    log_id: String,
    first_position: u64,
    segments: Vec<Segment>,
    retention: Vec<Record>,
    /// Surviving events of application streams, in position order.
    events: Vec<Event>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8"))
}

/// Spec 3.9, the retention record, decoded from its table alone.
fn decode_record(position: u64, p: &[u8]) -> Record {
    assert_eq!(p.len(), 80, "a retention record is 80 bytes");
    assert_eq!(p[0], 1, "retention_version");
    assert_eq!(p[1] & !3, 0, "unknown flags");
    assert_ne!(p[1], 0, "at least one rule");
    assert!(p[2..8].iter().all(|&b| b == 0), "reserved0");
    let (max_age, max_bytes) = (u64_at(p, 32), u64_at(p, 40));
    assert_eq!(p[1] & 1 != 0, max_age != 0, "max_age with AGE only");
    assert_eq!(p[1] & 2 != 0, max_bytes != 0, "max_bytes with SIZE only");
    assert!(u64_at(p, 8) > u64_at(p, 16), "removed_before above previous_start");
    let mut flag_names = Vec::new();
    if p[1] & 1 != 0 {
        flag_names.push("AGE".to_owned());
    }
    if p[1] & 2 != 0 {
        flag_names.push("SIZE".to_owned());
    }
    Record {
        position,
        payload: hex(p),
        retention_version: p[0],
        flags: p[1],
        flag_names,
        removed_before: u64_at(p, 8),
        previous_start: u64_at(p, 16),
        newest_removed_timestamp: u64_at(p, 24),
        max_age,
        max_bytes,
        chain_at: hex(&p[48..80]),
    }
}

/// The vector as the independent reader sees the log in `dir`.
fn describe(dir: &Path) -> Vector {
    let mut segments = Vec::new();
    let mut retention = Vec::new();
    let mut events = Vec::new();
    let files = segment_files(dir);
    let mut prev_end: Option<[u8; 32]> = None;
    let mut next_position = None;
    for (base, path) in &files {
        let bytes = fs::read(path).expect("read segment");
        let walk = v3::walk_segment(&bytes, *base).unwrap_or_else(|at| panic!("{}: damage at {at}", path.display()));
        assert!(walk.incomplete.is_none(), "{}: a complete segment", path.display());
        assert_eq!(walk.header.format_version, 4);
        if let Some(n) = next_position {
            assert_eq!(*base, n, "segments are contiguous");
        }
        let end = v3::verify_chain(&bytes, &walk, None).unwrap_or_else(|at| panic!("chain breaks at {at}"));
        if let Some(p) = prev_end {
            assert_eq!(walk.header.chain_start, p, "a seal's chain is the next segment's start");
        }
        prev_end = Some(end);
        let evs = walk.events();
        next_position = Some(evs.last().map_or(*base, |e| e.position + 1));
        for e in evs {
            if e.stream == "$retention" {
                assert_eq!((e.event_type.as_str(), e.schema_version), ("$retention", 0));
                assert!(e.metadata.is_empty());
                retention.push(decode_record(e.position, &e.payload));
            } else if !e.stream.starts_with('$') {
                events.push(Event {
                    position: e.position,
                    stream: e.stream.clone(),
                    stream_version: e.stream_version,
                    event_type: e.event_type.clone(),
                    payload: String::from_utf8(e.payload.clone()).expect("utf-8"),
                });
            }
        }
        segments.push(Segment {
            file: path.file_name().expect("name").to_string_lossy().into_owned(),
            base_position: *base,
            prev_timestamp: walk.header.prev_timestamp,
            chain_start: hex(&walk.header.chain_start),
            chain_end: hex(&end),
        });
    }
    Vector {
        note: "spec 3.9: a log whose oldest segments were removed by size retention (max_bytes 1200); \
               every field computed from the committed bytes by tests/golden_retention_vector.rs"
            .to_owned(),
        log_id: hex(&LOG_ID),
        first_position: files.first().map_or(0, |f| f.0),
        segments,
        retention,
        events,
    }
}

/// Copy the committed log to a scratch directory (checks and readers may
/// not touch the committed files; a writer would).
fn scratch_copy(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for e in fs::read_dir(src).expect("dir").flatten() {
        fs::copy(e.path(), d.path().join(e.file_name())).expect("copy");
    }
    d
}

#[test]
fn retained_log_vector() {
    let dir = vector_dir().join("retained");
    let json = vector_dir().join("retained.json");
    if regenerating() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        write_log(&dir);
        // Only the segments, the head and the index files are committed.
        for e in fs::read_dir(&dir).expect("dir").flatten() {
            let n = e.file_name().into_string().unwrap_or_default();
            if n.ends_with(".ckpt") || n == "annal.lock" {
                fs::remove_file(e.path()).expect("rm");
            }
        }
        let v = describe(&dir);
        fs::write(&json, serde_json::to_string_pretty(&v).expect("json") + "\n").expect("write json");
    }
    // 1. The committed bytes read to the committed JSON.
    let want: Vector = serde_json::from_str(&fs::read_to_string(&json).expect("read json")).expect("parse json");
    let got = describe(&dir);
    assert_eq!(got, want, "the committed bytes, read from the spec alone");
    // 2. The record accounts for the front.
    let first = &got.segments[0];
    assert!(got.first_position > 0);
    let rec = got.retention.last().expect("a retention record");
    assert_eq!(rec.removed_before, got.first_position);
    assert_eq!(rec.previous_start, 0);
    assert_eq!(rec.chain_at, first.chain_start);
    assert_eq!(rec.newest_removed_timestamp, first.prev_timestamp);
    assert_eq!(
        (rec.flag_names.clone(), rec.max_bytes, rec.max_age),
        (vec!["SIZE".to_owned()], MAX_BYTES, 0)
    );
    assert!(rec.position >= got.first_position, "the record survives");
    // 3. annal's readers and check.
    let copy = scratch_copy(&dir);
    let reader = Reader::open(copy.path()).expect("reader");
    let view = reader.view().expect("view");
    let read: Vec<Event> = view
        .read_all(0)
        .map(|r| {
            let r = r.expect("read");
            Event {
                position: r.position(),
                stream: r.stream().to_owned(),
                stream_version: r.stream_version(),
                event_type: r.event_type().to_owned(),
                payload: String::from_utf8(r.payload().to_vec()).expect("utf-8"),
            }
        })
        .collect();
    assert_eq!(read, got.events, "annal's read_all");
    drop(view);
    let report = annal::check(copy.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{:#?}", report.problems);
    let r = report.retention.expect("retention reported");
    assert_eq!(
        (r.first_position, r.removed_before),
        (got.first_position, got.first_position)
    );
    // 4. annal's writer writes the segments byte for byte.
    let fresh = tempfile::tempdir().expect("tempdir");
    write_log(fresh.path());
    let (a, b) = (segment_files(fresh.path()), segment_files(&dir));
    assert_eq!(
        a.iter().map(|f| f.0).collect::<Vec<_>>(),
        b.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    for ((_, p), (_, q)) in a.iter().zip(&b) {
        assert_bytes_eq(
            &p.file_name().expect("name").to_string_lossy(),
            &fs::read(p).expect("read"),
            &fs::read(q).expect("read"),
        );
    }
}
