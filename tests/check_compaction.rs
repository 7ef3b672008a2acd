//! `annal check` after compaction (spec 3.10), end to end through
//! `Log::compact`:
//!
//! * a log with a deleted stream, a `max_count` stream and a `max_age`
//!   stream across many small sealed segments, compacted: `check` is clean
//!   and lists every compacted segment with the record that accounts for
//!   it;
//! * anchors taken before compaction strictly inside a compacted segment
//!   are superseded by compaction (not a problem, never "rewritten"); the
//!   others, and anchors taken after, hold; a wrong hash after is still
//!   "rewritten";
//! * single bytes flipped in the compacted segment (its header and a dense
//!   sample of its frames) and in the compaction record's payload are always
//!   reported as problems;
//! * a segment that says it is compacted with no record accounting for it is
//!   a problem at its seal;
//! * a crash between the record and the swap (an image of the directory
//!   taken before the rename) is a warning, not a problem; a crash after
//!   the swap leaves an index file that describes the original, a warning
//!   (and the stream table, when a stream left the segment, a problem),
//!   which repair fixes;
//! * a compacted file from another compaction of the same log is a problem;
//!   a `max_age` boundary inside a compacted segment is no problem (one
//!   warning says what only the runs' timestamps could tell);
//! * with a public key, compacted segments (which keep no signed checkpoint)
//!   are accounted for by their records;
//! * `annal check` prints one line per compacted segment (and `--json` a
//!   `compaction` array) and says an anchor inside one is superseded.

mod cli_support;
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::{
    Anchor, ChainKey, CheckOptions, CheckReport, CompactionReport, Direction, EventData, ExpectedVersion, Log, Options,
    Reader, SigningKey, StreamMetadata,
};
use cli_support::{ok, p, run, text};
use common::scratch;

const SEGMENT: u64 = 4096;

fn opts_at(clock: &Arc<Mutex<u64>>) -> Options {
    let c = clock.clone();
    Options::default()
        .segment_size(SEGMENT)
        .clock(Arc::new(move || *c.lock().unwrap()))
}

/// Four streams across many small segments (`gone` deleted, `count` with
/// `max_count` 3, `age` with `max_age` 10 s, `keep` without rules); returns
/// the log and the anchor after each round of appends.
fn build(dir: &Path, clock: &Arc<Mutex<u64>>, o: Options) -> (Log, Vec<Anchor>) {
    let log = Log::open_with(dir, o).unwrap();
    let mut anchors = Vec::new();
    for i in 0..50u64 {
        *clock.lock().unwrap() += 1_000_000_000;
        for s in ["keep", "gone", "count", "age"] {
            let p = format!("{s}:{i:0150}").into_bytes();
            log.append(s, ExpectedVersion::Any, &[EventData::new("E", p)]).unwrap();
        }
        anchors.push(log.anchor().unwrap());
    }
    log.delete_stream("gone", ExpectedVersion::Any).unwrap();
    log.set_stream_metadata("count", StreamMetadata::new().max_count(3))
        .unwrap();
    log.set_stream_metadata("age", StreamMetadata::new().max_age(Duration::from_secs(10)))
        .unwrap();
    // Every event of `age` but its newest is older than 10 s now.
    *clock.lock().unwrap() += 100_000_000_000;
    (log, anchors)
}

fn check(dir: &Path, o: CheckOptions) -> CheckReport {
    annal::check(dir, o).unwrap()
}

#[track_caller]
fn assert_clean(r: &CheckReport) {
    assert!(r.is_ok(), "{:#?}", r.problems);
}

/// A compacted log: the log (closed), the report of `compact`, the anchors
/// taken before it, and the clock.
fn compacted(dir: &Path) -> (CompactionReport, Vec<Anchor>, Arc<Mutex<u64>>) {
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, anchors) = build(dir, &clock, opts_at(&clock));
    let report = log.compact().unwrap();
    assert!(report.compacted.len() >= 3, "{report:?}");
    log.close().unwrap();
    (report, anchors, clock)
}

#[test]
fn a_compacted_log_checks_clean_and_lists_its_compacted_segments() {
    let dir = scratch();
    let (report, _, _) = compacted(dir.path());
    let r = check(dir.path(), CheckOptions::default());
    assert_clean(&r);
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    let listed: Vec<(PathBuf, u64)> = r
        .compaction
        .iter()
        .map(|c| (c.path.clone(), c.record_position))
        .collect();
    let made: Vec<(PathBuf, u64)> = report
        .compacted
        .iter()
        .cloned()
        .zip(report.record_positions.iter().copied())
        .collect();
    assert_eq!(listed, made);
    assert_eq!(
        r.compaction.iter().map(|c| c.removed_events).sum::<u64>(),
        report.removed_events
    );
    for c in &r.compaction {
        assert!(c.base < c.next_base && c.runs > 0 && c.record_signed.is_none(), "{c:?}");
        assert!(c.to_string().contains("was compacted"), "{c}");
    }
    // The hidden events left (in the active segment) are still reported as
    // hidden, not as damage.
    assert!(!r.hidden.is_empty());
}

#[test]
fn a_second_compaction_checks_clean_against_the_newest_record() {
    let dir = scratch();
    let (_, _, clock) = compacted(dir.path());
    let log = Log::open_with(dir.path(), opts_at(&clock)).unwrap();
    log.set_stream_metadata("keep", StreamMetadata::new().max_count(2))
        .unwrap();
    let second = log.compact().unwrap();
    assert!(!second.compacted.is_empty(), "{second:?}");
    log.close().unwrap();
    let r = check(dir.path(), CheckOptions::default());
    assert_clean(&r);
    for (p, at) in second.compacted.iter().zip(&second.record_positions) {
        let c = r.compaction.iter().find(|c| &c.path == p).unwrap();
        assert_eq!(c.record_position, *at);
    }
}

#[test]
fn anchors_inside_a_compacted_segment_are_superseded_and_the_others_hold() {
    let dir = scratch();
    let (_, before, clock) = compacted(dir.path());
    let log = Log::open_with(dir.path(), opts_at(&clock)).unwrap();
    log.append(
        "keep",
        ExpectedVersion::Any,
        &[EventData::new("E", b"after".as_slice())],
    )
    .unwrap();
    let after = log.anchor().unwrap();
    log.close().unwrap();
    let wrong = Anchor {
        position: after.position,
        hash: [7; 32],
    };
    let mut o = CheckOptions::default().anchor(after).anchor(wrong);
    for a in &before {
        o = o.anchor(*a);
    }
    let r = check(dir.path(), o);
    let segs: Vec<(u64, u64, u64)> = r
        .compaction
        .iter()
        .map(|c| (c.base, c.next_base, c.record_position))
        .collect();
    assert!(!segs.is_empty());
    // After compaction: holds; a wrong hash: rewritten, a problem.
    assert!(r.anchors[0].ok, "{:?}", r.anchors[0]);
    assert!(!r.anchors[1].ok);
    assert!(
        r.anchors[1].detail.contains("it was rewritten"),
        "{}",
        r.anchors[1].detail
    );
    assert!(!r.anchors[1].superseded());
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    let mut superseded = 0;
    for v in &r.anchors[2..] {
        let p = v.anchor.position;
        match segs.iter().find(|s| s.0 < p && p < s.1) {
            Some(s) => {
                superseded += 1;
                assert!(!v.ok, "{v:?}");
                assert_eq!(v.superseded_by_compaction, Some(s.2), "{v:?}");
                assert!(v.detail.contains("superseded by compaction at"), "{}", v.detail);
            }
            None => assert!(v.ok, "{v:?}"),
        }
    }
    assert!(superseded > 0);
    // Anchors at a compacted segment's end (the next segment's base) hold.
    assert!(
        r.anchors[2..]
            .iter()
            .any(|v| segs.iter().any(|s| s.1 == v.anchor.position) && v.ok)
            || !before.iter().any(|a| segs.iter().any(|s| s.1 == a.position))
    );
}

/// The segment file whose base is `base`.
fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

#[test]
fn every_byte_flipped_in_a_compacted_segment_is_a_problem() {
    let dir = scratch();
    let (report, _, _) = compacted(dir.path());
    let r = check(dir.path(), CheckOptions::default());
    assert_clean(&r);
    let c = &r.compaction[1];
    assert_eq!(c.path, seg_path(dir.path(), c.base));
    let original = fs::read(&c.path).unwrap();
    let start = std::time::Instant::now();
    // Every byte of the header, then a dense sample of the frames (every
    // fourth byte, and the last 80: the seal), under ~10 s.
    let mut at: Vec<usize> = (0..128).collect();
    at.extend((128..original.len()).step_by(4));
    at.extend(original.len().saturating_sub(80)..original.len());
    for &i in &at {
        let mut b = original.clone();
        b[i] ^= 0x10;
        fs::write(&c.path, &b).unwrap();
        let r = check(dir.path(), CheckOptions::default());
        assert!(!r.is_ok(), "byte {i} of {} flipped, not reported", c.path.display());
    }
    fs::write(&c.path, &original).unwrap();
    assert_clean(&check(dir.path(), CheckOptions::default()));
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
    let _ = report;
}

/// The file and offset of the payload of the `$compaction` record at
/// `position`.
fn record_payload(dir: &Path, position: u64) -> (PathBuf, usize, usize) {
    let view = Reader::open(dir).unwrap().view().unwrap();
    let r = view
        .read_stream("$compaction", 0, Direction::Forward, u64::MAX)
        .map(|r| r.unwrap())
        .find(|r| r.position() == position)
        .unwrap();
    let payload = r.payload().to_vec();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "seg") {
            let b = fs::read(&p).unwrap();
            if let Some(at) = b.windows(payload.len()).position(|w| w == payload.as_slice()) {
                return (p, at, payload.len());
            }
        }
    }
    panic!("the record's payload is in no segment")
}

#[test]
fn every_byte_flipped_in_a_compaction_record_is_a_problem() {
    let dir = scratch();
    let (report, _, _) = compacted(dir.path());
    let (path, at, len) = record_payload(dir.path(), report.record_positions[0]);
    let original = fs::read(&path).unwrap();
    for i in at..at + len {
        let mut b = original.clone();
        b[i] ^= 0x01;
        fs::write(&path, &b).unwrap();
        let r = check(dir.path(), CheckOptions::default());
        assert!(!r.is_ok(), "payload byte {} flipped, not reported", i - at);
    }
    fs::write(&path, &original).unwrap();
    assert_clean(&check(dir.path(), CheckOptions::default()));
}

#[test]
fn a_segment_flagged_compacted_without_a_record_is_a_problem_at_its_seal() {
    let dir = scratch();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, anchors) = build(dir.path(), &clock, opts_at(&clock));
    log.close().unwrap();
    // The second segment, never compacted, made to say it was.
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let p = &segs[1];
    let mut b = fs::read(p).unwrap();
    b[12] |= 1;
    let crc = crc32fast::hash(&b[..124]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    fs::write(p, &b).unwrap();
    let last = *anchors.last().unwrap();
    let r = check(dir.path(), CheckOptions::default().anchor(last));
    let f = r
        .problems
        .iter()
        .find(|f| {
            f.detail
                .contains("a compacted segment no compaction record accounts for")
        })
        .unwrap_or_else(|| panic!("{:#?}", r.problems));
    assert_eq!(&f.file, p);
    // The seal: the last 32 + 32 bytes (a version 4 seal with its slot).
    assert!(
        f.offset + 32 < b.len() as u64 && f.offset + 96 >= b.len() as u64,
        "{f:?}"
    );
    assert!(r.compaction.is_empty());
    // Nothing vouches for that segment: an anchor after it does not hold.
    assert!(!r.anchors[0].ok, "{:?}", r.anchors[0]);
}

#[test]
fn a_crash_between_the_record_and_the_swap_is_a_warning_not_a_problem() {
    let root = scratch();
    let dir = root.path().join("log");
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, _) = build(&dir, &clock, opts_at(&clock));
    log.close().unwrap();
    // An image just before the first swap (spec 3.10 step 3).
    let seam = Arc::new(common::DirImages::new(
        &dir,
        root.path(),
        common::segment_rename,
        common::never,
        1,
    ));
    let log = Log::open_with(&dir, opts_at(&clock).io(seam.clone())).unwrap();
    let report = log.compact().unwrap();
    log.close().unwrap();
    let swapped = report.compacted[0].clone();
    // The image: the record is durable, the segment is still the original
    // (and the rewritten file waits under its .tmp name), its index file
    // removed (spec 3.10, step 3): the one problem, which an open or
    // `--repair` mends.
    let image = seam.images()[0].clone();
    let r = check(&image, CheckOptions::default());
    let idx = image.join(swapped.with_extension("idx").file_name().unwrap());
    assert!(
        r.problems.iter().all(|p| p.file == idx && p.detail.contains("missing")),
        "{:#?}",
        r.problems
    );
    let r = check(&image, CheckOptions::default().repair(true));
    assert_clean(&r);
    assert!(r.compaction.is_empty(), "{:#?}", r.compaction);
    let w: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.detail.contains("not swapped in"))
        .collect();
    assert_eq!(w.len(), 1, "{:#?}", r.warnings);
    assert_eq!(w[0].file, image.join(swapped.file_name().unwrap()));
    assert!(w[0].detail.contains("is the original"), "{}", w[0].detail);
    // The next open and compaction finish the job; then it checks clean.
    let log = Log::open_with(&image, opts_at(&clock)).unwrap();
    log.compact().unwrap();
    log.close().unwrap();
    let r = check(&image, CheckOptions::default());
    assert_clean(&r);
    assert!(!r.compaction.is_empty());
}

#[test]
fn with_a_public_key_compacted_segments_are_accounted_for_by_their_records() {
    let dir = scratch();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let key = SigningKey::from_bytes([0x5a; 32]);
    let pk = key.public_key();
    let (log, _) = build(dir.path(), &clock, opts_at(&clock).signing_key(key));
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    // No "expected a signed checkpoint" for the compacted segments.
    let r = check(dir.path(), CheckOptions::default().public_key(pk));
    assert_clean(&r);
    assert_eq!(r.compaction.len(), report.compacted.len());
    assert!(
        r.compaction.iter().all(|c| c.record_signed.is_some()),
        "{:#?}",
        r.compaction
    );
    // The close signs every record.
    log.close().unwrap();
    let r = check(dir.path(), CheckOptions::default().public_key(pk));
    assert_clean(&r);
    assert!(
        r.compaction.iter().all(|c| c.record_signed == Some(true)),
        "{:#?}",
        r.compaction
    );
}

#[test]
fn annal_check_prints_one_line_per_compacted_segment_and_superseded_anchors() {
    let dir = scratch();
    let (report, before, _) = compacted(dir.path());
    let r = check(dir.path(), CheckOptions::default());
    let inside = before
        .iter()
        .find(|a| {
            r.compaction
                .iter()
                .any(|c| c.base < a.position && a.position < c.next_base)
        })
        .unwrap();
    let anchor = inside.to_string();
    let out = ok(run(&["check", p(dir.path()), "--anchor", &anchor]));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("compaction: segment "))
        .collect();
    assert_eq!(lines.len(), report.compacted.len(), "{stdout}");
    assert!(
        stdout.contains(&format!("anchor {anchor}: superseded: superseded by compaction at")),
        "{stdout}"
    );
    let out = ok(run(&["check", "--json", p(dir.path())]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["compaction"].as_array().map(Vec::len),
        Some(report.compacted.len()),
        "{doc}"
    );
}

/// Copy every file of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_compacted_file_from_another_compaction_of_the_same_log_is_a_problem() {
    let root = scratch();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, _) = build(&a, &clock, opts_at(&clock));
    log.close().unwrap();
    // The same log (same log_id, same bytes) in two places, compacted under
    // different rules.
    copy_dir(&a, &b);
    let log = Log::open_with(&a, opts_at(&clock)).unwrap();
    let in_a = log.compact().unwrap();
    log.close().unwrap();
    let log = Log::open_with(&b, opts_at(&clock)).unwrap();
    log.set_stream_metadata("keep", StreamMetadata::new().max_count(1))
        .unwrap();
    let in_b = log.compact().unwrap();
    log.close().unwrap();
    // A segment of b, rewritten without its record, swapped into a.
    let name = in_b.compacted[0].file_name().unwrap();
    assert!(in_a.compacted.iter().any(|p| p.file_name() == Some(name)));
    let len_b = fs::read(b.join(name)).unwrap().len();
    assert_ne!(len_b, fs::read(a.join(name)).unwrap().len());
    fs::copy(b.join(name), a.join(name)).unwrap();
    let r = check(&a, CheckOptions::default());
    let f = r
        .problems
        .iter()
        .find(|f| {
            f.detail
                .contains("a compacted segment no compaction record accounts for")
        })
        .unwrap_or_else(|| panic!("{:#?}", r.problems));
    assert_eq!(f.file, a.join(name));
    assert!(f.detail.contains(&format!("is {len_b} bytes")), "{}", f.detail);
}

#[test]
fn a_max_age_boundary_inside_a_compacted_segment_is_no_problem() {
    let dir = scratch();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, _) = build(dir.path(), &clock, opts_at(&clock));
    // Back to the time of the last appends: `age` hides what is older than
    // 10 s, a boundary inside the sealed segments.
    *clock.lock().unwrap() -= 100_000_000_000;
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    log.close().unwrap();
    let r = check(dir.path(), CheckOptions::default());
    assert_clean(&r);
    // Each run states its events' timestamp (spec 3.10): the run just
    // before the boundary is proven hidden, nothing is left to a warning.
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
}

#[test]
fn a_crash_after_the_swap_before_the_index_is_written_leaves_it_missing_and_repair_writes_it() {
    let root = scratch();
    let dir = root.path().join("log");
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (log, _) = build(&dir, &clock, opts_at(&clock));
    log.close().unwrap();
    // An image right after each swap (spec 3.10 step 3), before the index
    // file and the stream table are written again.
    let seam = Arc::new(common::DirImages::new(
        &dir,
        root.path(),
        common::never,
        common::segment_rename,
        usize::MAX,
    ));
    let log = Log::open_with(&dir, opts_at(&clock).io(seam.clone())).unwrap();
    let report = log.compact().unwrap();
    log.close().unwrap();
    let images = seam.images();
    assert_eq!(images.len(), report.compacted.len());
    let mut stale_tables = 0;
    for (k, image) in images.iter().enumerate() {
        let r = check(image, CheckOptions::default());
        // The segment's index file was removed before the swap (spec 3.10,
        // step 3): missing, the one problem, which repair (or an open)
        // mends; a stream table is never stale (removed first when a
        // stream leaves the segment).
        let idx = image.join(report.compacted[k].with_extension("idx").file_name().unwrap());
        stale_tables += usize::from(r.problems.iter().any(|p| p.file != idx));
        assert!(
            r.problems.iter().all(|p| p.file == idx && p.detail.contains("missing")),
            "image {k}: {:#?}",
            r.problems
        );
        assert_eq!(r.compaction.len(), k + 1, "image {k}");
        // Repair writes the index file again.
        let r = check(image, CheckOptions::default().repair(true));
        assert_clean(&r);
        let r = check(image, CheckOptions::default());
        assert_clean(&r);
        assert!(r.warnings.is_empty(), "image {k}: {:#?}", r.warnings);
    }
    assert_eq!(stale_tables, 0);
}

#[test]
fn a_keyed_log_compacted_checks_clean_with_its_key_and_a_deleted_stream_goes_on() {
    let dir = scratch();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let key = ChainKey::from_bytes([3; 32]);
    let o = || opts_at(&clock).chain_key(key.clone());
    let (log, _) = build(dir.path(), &clock, o());
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    // The deleted stream's events are all gone; its versions go on.
    let r = log
        .append(
            "gone",
            ExpectedVersion::NoStream,
            &[EventData::new("E", b"again".as_slice())],
        )
        .unwrap();
    assert_eq!(r.stream_version, 50);
    let after = log.anchor().unwrap();
    log.close().unwrap();
    let r = check(dir.path(), CheckOptions::default().key(key).anchor(after));
    assert_clean(&r);
    assert!(r.anchors[0].ok, "{:?}", r.anchors[0]);
    assert_eq!(r.compaction.len(), report.compacted.len());
    // Without the key the links are not recomputed: the compacted segments
    // are still accounted for by what their records state.
    let r = check(dir.path(), CheckOptions::default());
    assert_clean(&r);
    assert_eq!(r.compaction.len(), report.compacted.len());
}

/// `(offset, header_len, frame_len, kind)` of every frame of the version 4
/// segment `b`.
fn frames_v4(b: &[u8]) -> Vec<(usize, usize, usize, u8)> {
    use annal::format::{FRAME_V3_FLAGS_OFFSET, FRAME_V3_KIND_OFFSET, FRAME_V3_LEN_OFFSET};
    let mut v = Vec::new();
    let mut off = 128;
    while off + 32 <= b.len() {
        let len = u32::from_le_bytes(b[off + FRAME_V3_LEN_OFFSET..][..4].try_into().unwrap()) as usize;
        let header = if b[off + FRAME_V3_FLAGS_OFFSET] & 1 != 0 {
            64
        } else {
            32
        };
        v.push((off, header, len, b[off + FRAME_V3_KIND_OFFSET]));
        off += len;
    }
    v
}

/// Recompute the body and header CRCs of the version 4 frame at `off`.
fn fix_frame(b: &mut [u8], (off, header, len, _): (usize, usize, usize, u8)) {
    use annal::format::FRAME_V3_BODY_CRC_OFFSET;
    let body = crc32fast::hash(&b[off + header..off + len]);
    b[off + FRAME_V3_BODY_CRC_OFFSET..][..4].copy_from_slice(&body.to_le_bytes());
    let head = crc32fast::hash(&b[off + 4..off + header]);
    b[off..off + 4].copy_from_slice(&head.to_le_bytes());
}

#[test]
fn an_edit_of_a_kept_event_with_every_crc_fixed_is_a_problem() {
    let dir = scratch();
    compacted(dir.path());
    let r = check(dir.path(), CheckOptions::default());
    let c = &r.compaction[1];
    let original = fs::read(&c.path).unwrap();
    let batches: Vec<_> = frames_v4(&original).into_iter().filter(|f| f.3 == 1).collect();
    assert!(!batches.is_empty());
    for f in batches {
        // A byte in the middle of the body (a payload's), and the batch's
        // first_position: each with the CRCs fixed, so only the chain, the
        // record and the positions can tell.
        let (off, header, len, _) = f;
        for at in [
            off + header + (len - header) / 2,
            off + annal::format::FRAME_V3_FIRST_POSITION_OFFSET,
        ] {
            let mut b = original.clone();
            b[at] ^= 0x01;
            fix_frame(&mut b, f);
            fs::write(&c.path, &b).unwrap();
            let r = check(dir.path(), CheckOptions::default());
            assert!(!r.is_ok(), "byte {at} of the frame at {off}, CRCs fixed: not reported");
            // Later segments' versions are not reported as more damage.
            assert!(
                r.problems.iter().all(|p| !p.detail.contains("to continue at version")),
                "{:#?}",
                r.problems
            );
        }
    }
    fs::write(&c.path, &original).unwrap();
    assert_clean(&check(dir.path(), CheckOptions::default()));
}
