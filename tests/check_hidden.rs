//! `check` and `dump` show what stream metadata hides (spec 3.7, issue 16):
//! hidden events are reported as hidden, with the rule that hides them, never
//! as damage; a metadata event that does not decode is damage naming its
//! segment; `dump` decodes every rules record.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annal::{
    CheckOptions, CheckReport, Direction, EventData, ExpectedVersion, Hidden, HiddenBy, Log, Options, StreamMetadata,
    inspect,
};

mod cli_support;
use cli_support::{run, text};

const SEC: u64 = 1_000_000_000;

/// One test at a time: a child process this file spawns inherits, until it
/// execs, the descriptor of another test's writer lock, and a check that
/// ran then would see a writer.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Append one event to `stream`; its position.
fn one(log: &Log, stream: &str) -> u64 {
    log.append(stream, ExpectedVersion::Any, &[EventData::new("E", b"{}".as_slice())])
        .expect("append")
        .first_position
}

fn many(log: &Log, stream: &str, n: usize) -> Vec<u64> {
    (0..n).map(|_| one(log, stream)).collect()
}

fn check_at(dir: &Path, now: u64) -> CheckReport {
    annal::check(dir, CheckOptions::default().now(now)).expect("check runs")
}

/// `(stream, rule, events, first, last, set_at)` of each entry.
fn rows(r: &CheckReport) -> Vec<(String, HiddenBy, u64, u64, u64, u64)> {
    r.hidden
        .iter()
        .map(|h: &Hidden| {
            (
                h.stream.clone(),
                h.rule,
                h.events,
                h.first_position,
                h.last_position,
                h.set_at,
            )
        })
        .collect()
}

/// The segments of a log, in order.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A log with one stream hidden by each rule, and one by two rules. The
/// clock is the test's: it starts at second 100 and each reading of it is
/// one second later than the one before.
struct Built {
    dir: tempfile::TempDir,
    expect: Vec<(String, HiddenBy, u64, u64, u64, u64)>,
    /// The check's clock: two events of "e" are older than 15 s.
    now: u64,
}

fn build() -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(AtomicU64::new(100 * SEC));
    let clock = t.clone();
    let opts = Options::default()
        .chain(false)
        .clock(Arc::new(move || clock.fetch_add(SEC, Ordering::SeqCst)));
    let log = Log::open_with(dir.path(), opts).expect("open");
    assert_eq!(log.format_version(), 5);
    let mut expect: Vec<(String, HiddenBy, u64, u64, u64, u64)> = Vec::new();

    // Tombstone: every event.
    let a = many(&log, "a", 3);
    let set = log
        .hard_delete_stream("a", ExpectedVersion::Any)
        .expect("hard delete")
        .first_position;
    expect.push(("a".into(), HiddenBy::Tombstone, 3, a[0], a[2], set));

    // Soft deletion, then two more events: the first three stay hidden.
    let b = many(&log, "b", 3);
    let set = log
        .delete_stream("b", ExpectedVersion::Any)
        .expect("delete")
        .first_position;
    many(&log, "b", 2);
    expect.push(("b".into(), HiddenBy::Deleted { truncate_before: 3 }, 3, b[0], b[2], set));

    // truncate_before 2 of 4.
    let c = many(&log, "c", 4);
    let set = log
        .set_stream_metadata("c", StreamMetadata::new().truncate_before(2))
        .expect("metadata")
        .first_position;
    expect.push(("c".into(), HiddenBy::TruncateBefore { version: 2 }, 2, c[0], c[1], set));

    // max_count 2 of 5.
    let d = many(&log, "d", 5);
    let set = log
        .set_stream_metadata("d", StreamMetadata::new().max_count(2))
        .expect("metadata")
        .first_position;
    expect.push(("d".into(), HiddenBy::MaxCount { count: 2 }, 3, d[0], d[2], set));

    // Two rules: version 0 by truncate_before, 1 and 2 by max_count.
    let f = many(&log, "f", 5);
    let set_f = log
        .set_stream_metadata("f", StreamMetadata::new().truncate_before(1).max_count(2))
        .expect("metadata")
        .first_position;

    // max_age: the events of "e" older than 15 s at the check's time (their
    // timestamps, from the writer's clock, read before the rule hides them).
    let e = many(&log, "e", 4);
    let view = log.view().expect("view");
    let stamps: Vec<(u64, u64)> = view
        .read_stream("e", 0, Direction::Forward, u64::MAX)
        .map(|r| r.map(|r| (r.position(), r.timestamp())).expect("read"))
        .collect();
    drop(view);
    assert_eq!(stamps.iter().map(|x| x.0).collect::<Vec<_>>(), e);
    let set_e = log
        .set_stream_metadata("e", StreamMetadata::new().max_age(Duration::from_secs(15)))
        .expect("metadata")
        .first_position;
    // A stream without metadata, and a few events after "e"'s.
    many(&log, "plain", 10);
    log.close().expect("close");

    // Between the second and the third event of "e" turning 15 s old.
    let now = stamps[1].1 + 15 * SEC + SEC / 2;
    let old: Vec<u64> = stamps
        .iter()
        .filter(|(_, ts)| ts + 15 * SEC < now)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(old, e[..2], "{stamps:?} now {now}");
    expect.push((
        "e".into(),
        HiddenBy::MaxAge { nanos: 15 * SEC },
        old.len() as u64,
        old[0],
        old[old.len() - 1],
        set_e,
    ));
    expect.push((
        "f".into(),
        HiddenBy::TruncateBefore { version: 1 },
        1,
        f[0],
        f[0],
        set_f,
    ));
    expect.push(("f".into(), HiddenBy::MaxCount { count: 2 }, 2, f[1], f[2], set_f));
    expect.sort_by(|x, y| x.0.cmp(&y.0));
    Built { dir, expect, now }
}

#[test]
fn every_rule_hides_what_it_hides_and_nothing_is_damage() {
    let _serial = serial();
    let b = build();
    let r = check_at(b.dir.path(), b.now);
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    assert_eq!(rows(&r), b.expect);
    // Much later, max_age hides every event of "e"; the rest is unchanged.
    let later = check_at(b.dir.path(), b.now + 3600 * SEC);
    let e: Vec<_> = rows(&later).into_iter().filter(|x| x.0 == "e").collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].2, 4);
    // Before any event is old enough, max_age hides nothing.
    let early = check_at(b.dir.path(), 0);
    assert!(rows(&early).iter().all(|x| x.0 != "e"));
}

#[test]
fn the_cli_prints_a_line_per_stream_and_json_carries_the_field() {
    let _serial = serial();
    let b = build();
    let out = run(&["check", p(b.dir.path())]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let c = b.expect.iter().find(|x| x.0 == "c").expect("c");
    assert!(
        stdout.contains(&format!(
            "stream c: 2 events hidden by truncate_before 2 (set at position {}; positions {} to {})",
            c.5, c.3, c.4
        )),
        "{stdout}"
    );
    let f = b.expect.iter().find(|x| x.0 == "f").expect("f");
    assert!(
        stdout.contains(&format!(
            "stream f: 1 event hidden by truncate_before 1, 2 by max_count 2 (set at position {};",
            f.5
        )),
        "{stdout}"
    );
    assert!(stdout.contains("stream a: 3 events hidden by tombstone"), "{stdout}");
    assert!(
        stdout.contains("stream b: 3 events hidden by deleted below version 3 (set at position"),
        "{stdout}"
    );
    assert!(!stdout.contains("PROBLEM"), "{stdout}");

    let out = run(&["check", "--json", p(b.dir.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hidden = v["hidden"].as_array().expect("hidden array");
    let d = b.expect.iter().find(|x| x.0 == "d").expect("d");
    let row = hidden.iter().find(|h| h["stream"] == "d").expect("d hidden");
    assert_eq!(row["rule"], "max_count");
    assert_eq!(row["count"], 2);
    assert_eq!(row["events"], 3);
    assert_eq!(row["first_position"], d.3);
    assert_eq!(row["last_position"], d.4);
    assert_eq!(row["set_at"], d.5);
    assert!(hidden.iter().any(|h| h["stream"] == "a" && h["rule"] == "tombstone"));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));
}

/// Rewrite the 40-byte payload `from` in the segment to `to`, fixing the
/// checksums of its frame (version 3 layout: header and body CRC).
fn rewrite_payload(seg: &Path, from: &[u8], to: &[u8]) -> u64 {
    let mut bytes = std::fs::read(seg).expect("read segment");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the payload");
    bytes[at..at + to.len()].copy_from_slice(to);
    let d = inspect::segment(&bytes);
    let f = d
        .frames
        .iter()
        .find(|f| f.offset as usize <= at && at < (f.offset + f.len) as usize)
        .expect("its frame");
    let (off, len, header_len) = (f.offset as usize, f.len as usize, f.v3.expect("v3").0 as usize);
    let body_crc = crc32fast::hash(&bytes[off + header_len..off + len]);
    bytes[off + 28..off + 32].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[off + 4..off + header_len]);
    bytes[off..off + 4].copy_from_slice(&header_crc.to_le_bytes());
    // The version 1/2 CRCs this does not know are left as they are.
    annal::fuzzing::fix_segment_crcs(&mut bytes);
    std::fs::write(seg, &bytes).expect("write segment");
    at as u64
}

/// The rules record `set_stream_metadata(truncate_before(n))` writes.
fn truncate_record(n: u64) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[0] = 1;
    b[1] = 4;
    b[8..16].copy_from_slice(&n.to_le_bytes());
    b
}

#[test]
fn a_metadata_event_that_does_not_decode_is_a_problem_naming_its_segment() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().chain(false)).expect("open");
    many(&log, "s", 3);
    let set = log
        .set_stream_metadata("s", StreamMetadata::new().truncate_before(2))
        .expect("metadata")
        .first_position;
    many(&log, "s", 1);
    log.close().expect("close");
    let seg = segments(dir.path()).remove(0);

    // Before: decoded by check and by dump.
    assert!(check_at(dir.path(), 0).problems.is_empty());
    let out = run(&["dump", p(&seg)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("    rules flags=TRUNCATE_BEFORE truncate_before=2 max_count=- max_age=-"),
        "{stdout}"
    );

    // reserved0 (payload byte 2) set.
    let mut bad = truncate_record(2);
    bad[2] = 1;
    let at = rewrite_payload(&seg, &truncate_record(2), &bad);
    let r = check_at(dir.path(), 0);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    let f = &r.problems[0];
    assert_eq!(f.file, seg);
    assert_eq!(f.offset, at + 2);
    assert!(
        f.detail.contains(&format!("position {set}")) && f.detail.contains("reserved0"),
        "{}",
        f.detail
    );
    assert!(r.hidden.is_empty(), "{:?}", r.hidden);

    let out = run(&["check", p(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("PROBLEM"), "{}", text(&out.stdout));

    let out = run(&["dump", p(&seg)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "    rules BAD at byte {} (payload byte 2): expected reserved0 to be zero",
            at + 2
        )),
        "{stdout}"
    );
}

#[test]
fn a_version_3_log_hides_nothing_and_dump_decodes_no_rules() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().format_version(3)).expect("open");
    many(&log, "x", 3);
    // In version 3 `$meta-x` is an ordinary stream, even with a rules record.
    log.append(
        "$meta-x",
        ExpectedVersion::Any,
        &[EventData::new("$metadata", truncate_record(3).as_slice())],
    )
    .expect("append");
    log.close().expect("close");
    let r = check_at(dir.path(), 0);
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert!(r.hidden.is_empty(), "{:?}", r.hidden);
    let out = run(&["dump", p(&segments(dir.path())[0])]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("rules"), "{}", text(&out.stdout));
}
