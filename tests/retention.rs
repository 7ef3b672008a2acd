//! Log retention (issue 16, spec 3.9): whole sealed segments dropped from
//! the front of the log by age and by total size, oldest first, never the
//! active one, after a durable `$retention` record says so.
//!
//! * size and age retention remove the right segments (small segments, so a
//!   log has many), never the active one, never an unindexed one;
//! * after retention every read kind (all forward and backward, a stream
//!   both ways, a category, an event type, the cross-process `Reader`)
//!   returns exactly the surviving events, before and after a reopen, and
//!   appends go on (versions of partly removed streams continue);
//! * a `Reader` view taken before retention keeps reading what it held (in
//!   this process and in another one); a new view starts at the new first
//!   segment; readers racing the sealer's retention see no fault and no
//!   wrong event;
//! * stream metadata whose events lay in removed segments is carried
//!   forward: a deleted stream stays deleted; projections rebuild exactly
//!   the surviving events; a stream whose events were all removed starts
//!   again at version 0;
//! * `check` is clean after retention, reports anchors before the new start
//!   as superseded (not a problem), verifies anchors after it, and still
//!   catches a real rewrite after it; a front segment deleted without a
//!   record is reported by `check` and refused by the writer and readers;
//! * a crash at every file operation of retention (an image of the
//!   directory taken before each one, through the I/O seam) leaves a log
//!   that opens, reads a suffix of the events that contains every event the
//!   record did not remove, finishes the recorded removal, and checks clean.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::io::{Io, IoFile, StdIo};
use annal::{
    CheckOptions, Direction, Error, EventData, ExpectedVersion, Log, Options, Reader, Retention, StreamMetadata,
};
use common::{Rec, scratch};

const SEGMENT: u64 = 4096;
const STREAMS: u64 = 5;

/// One appended event: `(position, stream, version, payload)`.
type Ev = (u64, String, u64, Vec<u8>);

fn opts() -> Options {
    Options::default().segment_size(SEGMENT)
}

/// Append `n` events of 300 bytes to streams `s-0` .. `s-4` in turn, one
/// per batch, at times from the clock; returns them.
fn fill(log: &Log, n: u64, from: u64) -> Vec<Ev> {
    let mut out = Vec::new();
    for i in from..from + n {
        let stream = format!("s-{}", i % STREAMS);
        let payload = format!("{i:0300}").into_bytes();
        let r = log
            .append(&stream, ExpectedVersion::Any, &[EventData::new("E", payload.clone())])
            .expect("append");
        out.push((r.first_position, stream, r.stream_version, payload));
    }
    out
}

fn segs(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn user(recs: Vec<Rec>) -> Vec<(u64, String, u64, Vec<u8>)> {
    recs.into_iter()
        .filter(|r| !r.stream.starts_with('$'))
        .map(|r| (r.position, r.stream, r.stream_version, r.payload))
        .collect()
}

/// Every read kind of `view` returns exactly the events of `model` at or
/// after `first`.
fn assert_reads(view: &annal::LogView, model: &[Ev], first: u64) {
    let want: Vec<Ev> = model.iter().filter(|e| e.0 >= first).cloned().collect();
    let all: Vec<Rec> = view
        .read_all(0)
        .map(|r| r.map(|r| Rec::of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_all");
    assert_eq!(user(all), want, "read_all from 0");
    let mut back: Vec<Rec> = view
        .read_all_backward(u64::MAX)
        .map(|r| r.map(|r| Rec::of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_all_backward");
    back.reverse();
    assert_eq!(user(back), want, "read_all_backward");
    for s in 0..STREAMS {
        let name = format!("s-{s}");
        let w: Vec<Ev> = want.iter().filter(|e| e.1 == name).cloned().collect();
        let fwd: Vec<Rec> = view
            .read_stream(&name, 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| Rec::of(&r)))
            .collect::<annal::Result<_>>()
            .unwrap_or_else(|e| panic!("read_stream {name}: {e}"));
        assert_eq!(user(fwd), w, "read_stream {name} forward");
        let mut bwd: Vec<Rec> = view
            .read_stream(&name, u64::MAX, Direction::Backward, u64::MAX)
            .map(|r| r.map(|r| Rec::of(&r)))
            .collect::<annal::Result<_>>()
            .expect("read_stream backward");
        bwd.reverse();
        assert_eq!(user(bwd), w, "read_stream {name} backward");
        if let Some(last) = w.last() {
            assert_eq!(view.stream_version(&name).expect("version"), Some(last.2));
        }
    }
    let cat: Vec<Rec> = view
        .read_category("s", 0)
        .map(|r| r.map(|r| Rec::of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_category");
    assert_eq!(user(cat), want, "read_category");
    let typ: Vec<Rec> = view
        .read_event_type("E", 0)
        .map(|r| r.map(|r| Rec::of(&r)))
        .collect::<annal::Result<_>>()
        .expect("read_event_type");
    assert_eq!(user(typ), want, "read_event_type");
}

fn first_of(dir: &Path) -> u64 {
    segs(dir)[0]
}

fn assert_check_clean(dir: &Path) -> annal::CheckReport {
    let r = annal::check(dir, CheckOptions::default()).expect("check");
    assert!(r.is_ok(), "problems: {:#?}", r.problems);
    r
}

#[test]
fn size_retention_removes_the_oldest_sealed_segments_never_the_active_one() {
    let dir = scratch();
    let max = 6 * SEGMENT;
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let model = fill(&log, 200, 0);
    let before = segs(dir.path());
    assert!(before.len() > 10, "{before:?}");
    let r = log
        .apply_retention_with(Retention::new().max_bytes(max))
        .expect("retain");
    let after = segs(dir.path());
    assert!(after.len() < before.len(), "{after:?}");
    assert_eq!(r.removed_before, Some(after[0]));
    assert_eq!(r.rule, Some("size"));
    assert_eq!(r.removed_segments.len(), before.len() - after.len());
    assert_eq!(log.first_position(), after[0]);
    // Oldest first: what is left is a suffix of the segments.
    assert_eq!(&before[before.len() - after.len()..], &after[..]);
    let total: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().into_string().unwrap_or_default();
            n.ends_with(".seg") || n.ends_with(".idx")
        })
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(total <= max + SEGMENT, "{total} bytes left, limit {max}");
    assert_reads(&log.view().expect("view"), &model, after[0]);
    // A read from a version retention removed (other than 0) is refused.
    let s1_first = model
        .iter()
        .find(|e| e.1 == "s-1" && e.0 >= after[0])
        .map(|e| e.2)
        .expect("s-1 left");
    assert!(s1_first > 1);
    match log
        .view()
        .expect("view")
        .read_stream("s-1", 1, Direction::Forward, 10)
        .next()
    {
        Some(Err(Error::RemovedByRetention {
            from_version: 1,
            first_version,
            ..
        })) => assert_eq!(first_version, s1_first),
        other => panic!("{other:?}"),
    }
    // The active segment is never removed, however small the limit.
    log.apply_retention_with(Retention::new().max_bytes(1))
        .expect("retain all");
    let only = segs(dir.path());
    assert!(!only.is_empty());
    let active = *only.last().expect("active");
    assert!(only.iter().all(|&b| b >= active.min(only[0])));
    assert_reads(&log.view().expect("view"), &model, only[0]);
    // Appends go on, versions of partly removed streams continue.
    let more = fill(&log, 20, 200);
    log.close().expect("close");
    let model: Vec<Ev> = model.into_iter().chain(more).collect();
    let log = Log::open_with(dir.path(), opts()).expect("reopen");
    assert_reads(&log.view().expect("view"), &model, first_of(dir.path()));
    let reader = Reader::open(dir.path()).expect("reader");
    assert_reads(&reader.view().expect("reader view"), &model, first_of(dir.path()));
    log.close().expect("close");
    let rep = assert_check_clean(dir.path());
    let ret = rep.retention.expect("retention reported");
    assert_eq!(ret.first_position, first_of(dir.path()));
}

#[test]
fn age_retention_removes_segments_whose_newest_event_is_older_than_max_age() {
    let dir = scratch();
    let now = Arc::new(AtomicU64::new(1_000_000_000_000));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let age = Duration::from_secs(3600);
    let o = opts().clock(clock);
    let log = Log::open_with(dir.path(), o.clone()).expect("open");
    let mut model = Vec::new();
    // Ten minutes between batches of 10 events.
    for k in 0..12u64 {
        model.extend(fill(&log, 10, k * 10));
        now.fetch_add(600_000_000_000, Ordering::SeqCst);
    }
    let before = segs(dir.path());
    let r = log.apply_retention_with(Retention::new().max_age(age)).expect("retain");
    let t_now = now.load(Ordering::SeqCst);
    let first = first_of(dir.path());
    assert_eq!(r.rule, Some("age"));
    assert!(first > 0);
    // Every removed event is older than max_age; the newest event of the
    // last removed segment was too, and the first event kept is not older
    // than the newest removed one.
    let view = log.view().expect("view");
    for e in &model {
        // A read from a removed version: from 0 it starts at the first
        // version left; from a later one it is refused.
        let got = view.read_stream(&e.1, e.2, Direction::Forward, 1).next();
        if e.0 < first {
            match got {
                Some(Ok(r)) => assert!(e.2 == 0 && r.stream_version() > 0, "event {} should be gone", e.0),
                Some(Err(Error::RemovedByRetention {
                    from_version,
                    first_version,
                    ..
                })) => {
                    assert_eq!(from_version, e.2);
                    assert!(first_version > e.2);
                }
                other => panic!("event {}: {other:?}", e.0),
            }
        } else {
            assert_eq!(got.expect("one").expect("read").stream_version(), e.2);
        }
    }
    let kept_first_ts = view.read_all(0).next().expect("one").expect("read").timestamp();
    assert!(kept_first_ts + age.as_nanos() as u64 >= t_now - 600_000_000_000 || segs(dir.path()).len() == 1);
    assert!(segs(dir.path()).len() < before.len());
    assert_reads(&view, &model, first);
    drop(view);
    // Nothing newer than max_age goes.
    let again = log.apply_retention_with(Retention::new().max_age(age)).expect("again");
    assert_eq!(again.removed_before, None);
    log.close().expect("close");
    assert_check_clean(dir.path());
}

#[test]
fn options_retention_applies_after_each_seal_and_at_open() {
    let dir = scratch();
    let rule = Retention::new().max_bytes(5 * SEGMENT);
    let log = Log::open_with(dir.path(), opts().retention(rule)).expect("open");
    let model = fill(&log, 300, 0);
    let warnings = log.warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
    log.close().expect("close");
    // The sealer applied it while the appends went on (it may lag behind
    // them: it never makes an append wait).
    assert!(first_of(dir.path()) > 0);
    // An open applies it too.
    drop(Log::open_with(dir.path(), opts().retention(rule)).expect("reopen with the rule"));
    let n = segs(dir.path()).len();
    assert!(n <= 7, "retention kept {n} segments");
    let first = first_of(dir.path());
    let log = Log::open_with(dir.path(), opts()).expect("reopen without the rule");
    assert_reads(&log.view().expect("view"), &model, first);
    log.close().expect("close");
    assert_check_clean(dir.path());
}

#[test]
fn a_reader_view_taken_before_retention_keeps_reading_it() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let model = fill(&log, 150, 0);
    let reader = Reader::open(dir.path()).expect("reader");
    let old = reader.view().expect("view");
    // Read it once (the mappings are made).
    assert_reads(&old, &model, 0);
    let own = log.view().expect("writer view");
    log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT))
        .expect("retain");
    let first = first_of(dir.path());
    assert!(first > 0);
    // The views taken before still read every event, consistently.
    assert_reads(&old, &model, 0);
    assert_reads(&own, &model, 0);
    // A new view starts at the new first segment.
    let new = reader.view().expect("new view");
    assert_reads(&new, &model, first);
    assert_reads(&log.view().expect("view"), &model, first);
    log.close().expect("close");
}

#[test]
fn stream_metadata_in_removed_segments_is_carried_forward() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    log.append(
        "gone",
        ExpectedVersion::NoStream,
        &[EventData::new("E", b"x".as_slice())],
    )
    .expect("append");
    log.delete_stream("gone", ExpectedVersion::Exact(0)).expect("delete");
    log.append(
        "kept",
        ExpectedVersion::NoStream,
        &[EventData::new("E", b"y".as_slice())],
    )
    .expect("append");
    log.hard_delete_stream("kept", ExpectedVersion::Exact(0))
        .expect("tombstone");
    log.set_stream_metadata("s-1", StreamMetadata::new().max_count(3))
        .expect("max_count");
    let model = fill(&log, 150, 0);
    log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT))
        .expect("retain");
    assert!(first_of(dir.path()) > 0);
    log.close().expect("close");
    let log = Log::open_with(dir.path(), opts()).expect("reopen");
    let view = log.view().expect("view");
    assert!(matches!(
        view.read_stream("kept", 0, Direction::Forward, 10).next(),
        Some(Err(Error::StreamDeleted { tombstoned: true, .. }))
    ));
    assert!(matches!(
        log.append("kept", ExpectedVersion::Any, &[EventData::new("E", b"z".as_slice())]),
        Err(Error::StreamDeleted { tombstoned: true, .. })
    ));
    let s1: Vec<u64> = view
        .read_stream("s-1", 0, Direction::Forward, u64::MAX)
        .map(|r| r.map(|r| r.stream_version()))
        .collect::<annal::Result<_>>()
        .expect("s-1");
    let last = model.iter().filter(|e| e.1 == "s-1").map(|e| e.2).max().expect("s-1");
    assert_eq!(s1, [last - 2, last - 1, last]);
    assert_eq!(
        log.stream_metadata("s-1").expect("meta").and_then(|m| m.max_count),
        Some(3)
    );
    drop(view);
    log.close().expect("close");
    assert_check_clean(dir.path());
}

#[test]
fn check_reports_anchors_before_retention_as_superseded_and_catches_a_rewrite_after() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    fill(&log, 40, 0);
    let early = log.anchor().expect("anchor");
    fill(&log, 120, 40);
    log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT))
        .expect("retain");
    let first = first_of(dir.path());
    assert!(first > early.position, "{first} {}", early.position);
    fill(&log, 10, 160);
    let late = log.anchor().expect("anchor");
    log.close().expect("close");
    let at_start = {
        // The anchor at the log's new start: the first segment's chain_start.
        let b = std::fs::read(dir.path().join(format!("{first:020}.seg"))).expect("seg");
        let hash: [u8; 32] = b[56..88].try_into().expect("32");
        annal::Anchor { position: first, hash }
    };
    let r = annal::check(
        dir.path(),
        CheckOptions::default().anchor(early).anchor(at_start).anchor(late),
    )
    .expect("check");
    assert!(r.is_ok(), "{:#?}", r.problems);
    let v = &r.anchors;
    assert_eq!(v[0].superseded_by_retention, Some(first), "{v:#?}");
    assert!(
        v[0].detail.starts_with(&format!("superseded by retention at {first}")),
        "{}",
        v[0].detail
    );
    assert!(!v[0].detail.contains("rewritten"));
    assert!(v[1].ok, "{:?}", v[1]);
    assert!(v[2].ok, "{:?}", v[2]);
    // A real rewrite after the new start is still caught: change an event
    // of the first surviving segment and recompute its CRCs and the chain
    // slots of the whole segment would be needed; the stored slots catch it.
    let seg = dir.path().join(format!("{first:020}.seg"));
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");
    let r = annal::check(dir.path(), CheckOptions::default().anchor(late)).expect("check");
    assert!(!r.is_ok(), "a changed byte after the start is damage");
    assert!(!r.anchors[0].ok);
    assert_eq!(r.anchors[0].superseded_by_retention, None);
}

#[test]
fn a_front_segment_deleted_without_a_record_is_reported() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    fill(&log, 60, 0);
    log.close().expect("close");
    let first = dir.path().join(format!("{:020}.seg", 0));
    std::fs::remove_file(&first).expect("rm");
    let _ = std::fs::remove_file(first.with_extension("idx"));
    let r = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(
        r.problems.iter().any(|p| p.detail.contains("no retention record")),
        "{:#?}",
        r.problems
    );
    assert!(r.retention.is_none());
    assert!(matches!(Log::open_with(dir.path(), opts()), Err(Error::Corrupt { .. })));
    assert!(Reader::open(dir.path()).expect("reader").view().is_err());
}

#[test]
fn a_front_removed_beyond_the_record_is_reported() {
    // Retention recorded up to P; then a segment at or after P deleted by
    // hand: the record does not account for it.
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    fill(&log, 150, 0);
    log.apply_retention_with(Retention::new().max_bytes(8 * SEGMENT))
        .expect("retain");
    log.close().expect("close");
    let s = segs(dir.path());
    assert!(s.len() > 3);
    std::fs::remove_file(dir.path().join(format!("{:020}.seg", s[0]))).expect("rm");
    let r = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(!r.is_ok());
    assert!(matches!(Log::open_with(dir.path(), opts()), Err(Error::Corrupt { .. })));
    // A segment missing in the middle is damage, as always.
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    fill(&log, 150, 0);
    log.apply_retention_with(Retention::new().max_bytes(8 * SEGMENT))
        .expect("retain");
    log.close().expect("close");
    let s = segs(dir.path());
    std::fs::remove_file(dir.path().join(format!("{:020}.seg", s[2]))).expect("rm");
    let r = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(
        r.problems.iter().any(|p| p.detail.contains("is one missing")),
        "{:#?}",
        r.problems
    );
}

#[test]
fn version_3_logs_refuse_retention() {
    // Format version 4 gives `$retention` its meaning; older logs keep
    // everything (their `$`-streams are ordinary).
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts().format_version(3)).expect("open");
    fill(&log, 60, 0);
    assert!(matches!(
        log.apply_retention_with(Retention::new().max_bytes(1)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(first_of(dir.path()), 0);
    log.close().expect("close");
}

// ---------------------------------------------------------------------------
// Crashes at every file operation of retention
// ---------------------------------------------------------------------------

/// The I/O seam: counts operations while `armed`, and before operation
/// number `cut` copies the directory (the state a crash there leaves, each
/// earlier removal made durable by its directory fsync) and fails that
/// operation and every later one.
#[derive(Debug, Default)]
struct CutIo {
    armed: std::sync::atomic::AtomicBool,
    count: AtomicUsize,
    cut: AtomicUsize,
    dir: Mutex<Option<PathBuf>>,
    image: Mutex<Option<tempfile::TempDir>>,
    /// Only the operations of this thread (the one applying retention)
    /// count; the sealer's index writes run beside them, not cut.
    thread: Mutex<Option<std::thread::ThreadId>>,
}

impl CutIo {
    fn step(&self, what: &str, path: &Path) -> io::Result<()> {
        if !self.armed.load(Ordering::SeqCst)
            || *self.thread.lock().expect("thread") != Some(std::thread::current().id())
        {
            return Ok(());
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let cut = self.cut.load(Ordering::SeqCst);
        if std::env::var_os("ANNAL_RETENTION_TRACE").is_some() {
            eprintln!("op {n}: {what} {}", path.display());
        }
        if n == cut {
            let dir = self.dir.lock().expect("dir").clone().expect("dir set");
            let img = scratch();
            for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
                if e.path().is_file() {
                    std::fs::copy(e.path(), img.path().join(e.file_name())).expect("copy");
                }
            }
            *self.image.lock().expect("image") = Some(img);
        }
        if n >= cut {
            return Err(io::Error::other(format!("crash before {what} of {}", path.display())));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Seam(Arc<CutIo>);

#[derive(Debug)]
struct SeamFile(Box<dyn IoFile>, Arc<CutIo>, PathBuf);

impl Io for Seam {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.0.step("create", path)?;
        Ok(Box::new(SeamFile(StdIo.create(path)?, self.0.clone(), path.to_owned())))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(SeamFile(StdIo.open(path)?, self.0.clone(), path.to_owned())))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.step("rename", to)?;
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.step("remove", path)?;
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.step("fsync directory", dir)?;
        StdIo.sync_dir(dir)
    }
}

impl IoFile for SeamFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.1.step("write", &self.2)?;
        self.0.write_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.1.step("fsync", &self.2)?;
        self.0.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.1.step("truncate", &self.2)?;
        self.0.truncate(len)
    }
}

/// Build the log and run retention with the seam cut at operation `cut`
/// (`usize::MAX`: never). Returns the events, the image (if the cut was
/// reached) and how many operations retention made.
fn crash_run(cut: usize) -> (Vec<Ev>, Option<tempfile::TempDir>, usize, tempfile::TempDir) {
    let dir = scratch();
    let io = Arc::new(CutIo::default());
    io.cut.store(cut, Ordering::SeqCst);
    *io.dir.lock().expect("dir") = Some(dir.path().to_owned());
    let o = opts().io(Arc::new(Seam(io.clone())));
    let log = Log::open_with(dir.path(), o).expect("open");
    log.append(
        "gone",
        ExpectedVersion::NoStream,
        &[EventData::new("E", b"x".as_slice())],
    )
    .expect("append");
    log.delete_stream("gone", ExpectedVersion::Exact(0)).expect("delete");
    let model = fill(&log, 120, 0);
    log.sync().expect("sync");
    // The sealer's index writes are not part of what is cut.
    while log.sealer_backlog() != (0, 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    *io.thread.lock().expect("thread") = Some(std::thread::current().id());
    io.armed.store(true, Ordering::SeqCst);
    let _ = log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT));
    io.armed.store(false, Ordering::SeqCst);
    let ops = io.count.load(Ordering::SeqCst);
    drop(log);
    let image = io.image.lock().expect("image").take();
    (model, image, ops, dir)
}

#[test]
fn a_crash_at_any_step_of_retention_leaves_a_log_that_opens_and_reads() {
    let (model, _, ops, done) = crash_run(usize::MAX);
    let final_first = first_of(done.path());
    assert!(final_first > 0);
    assert!(ops >= 6, "retention made {ops} file operations");
    for cut in 0..ops {
        let (m, image, _, _keep) = crash_run(cut);
        assert_eq!(m, model, "the workload is deterministic");
        let image = image.unwrap_or_else(|| panic!("cut {cut} of {ops} was not reached"));
        let first = first_of(image.path());
        assert!(first == 0 || first <= final_first, "cut {cut}: first {first}");
        // A reader before any writer: a suffix of the events.
        let reader = Reader::open(image.path()).expect("reader");
        let view = reader.view().unwrap_or_else(|e| panic!("cut {cut}: reader: {e}"));
        let seen = user(common::read_all(&view, 0).expect("read"));
        let want: Vec<Ev> = model.iter().filter(|e| e.0 >= first).cloned().collect();
        assert_eq!(seen, want, "cut {cut}: reader");
        drop(view);
        // The writer opens, finishes a recorded removal, reads the rest.
        let log = Log::open_with(image.path(), opts()).unwrap_or_else(|e| panic!("cut {cut}: open: {e}"));
        let now_first = log.first_position();
        assert!(now_first >= first);
        assert_reads(&log.view().expect("view"), &model, now_first);
        assert!(
            matches!(
                log.view()
                    .expect("view")
                    .read_stream("gone", 0, Direction::Forward, 1)
                    .next(),
                Some(Err(Error::StreamDeleted { .. })) | None
            ),
            "cut {cut}: a deleted stream stays deleted"
        );
        log.close().expect("close");
        let r = annal::check(image.path(), CheckOptions::default()).expect("check");
        assert!(r.is_ok(), "cut {cut}: {:#?}", r.problems);
    }
}

/// A listing of file names and lengths, for messages.
#[allow(dead_code)]
fn listing(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map_or(0, |m| m.len()),
            )
        })
        .collect()
}

#[test]
fn readers_racing_retention_see_no_fault_and_no_wrong_event() {
    // A writer with a size rule applied after every seal, and a `Reader`
    // taking views and reading them whole meanwhile: every view reads
    // contiguous positions whose payloads are the ones appended there
    // (events of one stream, in order). A view that had not yet mapped a
    // segment removed since may say so with an error naming the file (the
    // next view starts after it); nothing else fails.
    let dir = scratch();
    let rule = Retention::new().max_bytes(6 * SEGMENT);
    let log = Arc::new(Log::open_with(dir.path(), opts().retention(rule)).expect("open"));
    fill(&log, 20, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.path().to_owned(), stop.clone());
        std::thread::spawn(move || {
            let r = Reader::open(&dir).expect("reader");
            let (mut views, mut removed_under) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let view = r.view().unwrap_or_else(|e| panic!("view: {e}"));
                views += 1;
                let mut last: Option<u64> = None;
                for rec in view.read_all(0) {
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                            removed_under += 1;
                            break;
                        }
                        Err(e) => panic!("read: {e}"),
                    };
                    if let Some(l) = last {
                        assert!(rec.position() > l, "positions grow");
                    }
                    last = Some(rec.position());
                    if !rec.stream().starts_with('$') {
                        let i: u64 = std::str::from_utf8(rec.payload()).expect("utf-8").parse().expect("n");
                        assert_eq!(rec.stream(), format!("s-{}", i % STREAMS), "event {i}");
                    }
                }
            }
            (views, removed_under)
        })
    };
    fill(&log, 400, 20);
    stop.store(true, Ordering::SeqCst);
    let (views, removed_under) = reader.join().expect("reader thread");
    assert!(views > 0);
    eprintln!("{views} views, {removed_under} met a segment removed under them");
    assert!(first_of(dir.path()) > 0);
    Arc::try_unwrap(log).expect("one").close().expect("close");
    assert_check_clean(dir.path());
}

#[test]
fn a_first_segment_whose_chain_start_the_record_does_not_state_is_reported() {
    // The retention record states the chain hash at the new start: a
    // first segment whose chain_start was changed (its header CRC fixed)
    // no longer joins it, and an anchor after the start no longer holds.
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    fill(&log, 150, 0);
    log.apply_retention_with(Retention::new().max_bytes(5 * SEGMENT))
        .expect("retain");
    let late = log.anchor().expect("anchor");
    log.close().expect("close");
    assert_check_clean(dir.path());
    let first = first_of(dir.path());
    let seg = dir.path().join(format!("{first:020}.seg"));
    common::edit(&seg, |b| {
        b[60] ^= 0x01;
        common::fix_segment_header_crc(b);
    });
    let r = annal::check(dir.path(), CheckOptions::default().anchor(late)).expect("check");
    assert!(
        r.problems
            .iter()
            .any(|p| p.offset == 56 && p.detail.contains("the retention record at position")),
        "{:#?}",
        r.problems
    );
    assert!(!r.anchors[0].ok);
    assert_eq!(r.anchors[0].superseded_by_retention, None);
}

/// Positions of the application events, in order (a projection).
struct Positions;

impl annal::Projection for Positions {
    type Model = Vec<u64>;
    fn empty(&self) -> Vec<u64> {
        Vec::new()
    }
    fn apply(&self, model: &mut Vec<u64>, record: &annal::RecordRef<'_>) {
        if !record.stream().starts_with('$') {
            model.push(record.position());
        }
    }
    fn merge(&self, mut earlier: Vec<u64>, later: Vec<u64>) -> Vec<u64> {
        earlier.extend(later);
        earlier
    }
}

#[test]
fn projections_rebuild_the_surviving_events() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let model = fill(&log, 200, 0);
    log.apply_retention_with(Retention::new().max_bytes(8 * SEGMENT))
        .expect("retain");
    let first = first_of(dir.path());
    let want: Vec<u64> = model.iter().filter(|e| e.0 >= first).map(|e| e.0).collect();
    let view = log.view().expect("view");
    assert_eq!(view.rebuild(&Positions).expect("rebuild"), want);
    assert_eq!(view.par_rebuild(&Positions).expect("par_rebuild"), want);
    assert_eq!(view.par_rebuild_chunks(&Positions, 5).expect("chunks"), want);
    let mut by_stream = view.par_rebuild_by_stream(&Positions).expect("by stream");
    by_stream.sort_unstable();
    assert_eq!(by_stream, want);
    drop(view);
    log.close().expect("close");
}

#[test]
fn a_stream_whose_events_were_all_removed_starts_again_at_version_0() {
    // Documented (spec 3.9): its versions went with its events.
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    log.append(
        "early",
        ExpectedVersion::NoStream,
        &[EventData::new("E", b"0".as_slice())],
    )
    .expect("append");
    log.append(
        "early",
        ExpectedVersion::Exact(0),
        &[EventData::new("E", b"1".as_slice())],
    )
    .expect("append");
    fill(&log, 150, 0);
    log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT))
        .expect("retain");
    assert_eq!(log.stream_version("early").expect("version"), None);
    assert!(matches!(
        log.append(
            "early",
            ExpectedVersion::Exact(1),
            &[EventData::new("E", b"2".as_slice())]
        ),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    let r = log
        .append(
            "early",
            ExpectedVersion::NoStream,
            &[EventData::new("E", b"2".as_slice())],
        )
        .expect("a new start");
    assert_eq!(r.stream_version, 0);
    log.close().expect("close");
    assert_check_clean(dir.path());
}

// ---------------------------------------------------------------------------
// A reader in another process
// ---------------------------------------------------------------------------

mod support;

/// The child side of the next test (runs only when spawned by it): a view
/// read whole (so its segments are mapped), then, after the parent's
/// retention, the same view read again, and a new view.
#[test]
fn child_reader_across_retention() {
    let Some(dir) = std::env::var_os("ANNAL_RETENTION_CHILD_DIR") else {
        return;
    };
    let digest = |view: &annal::LogView| -> (u64, u64, u64) {
        let (mut n, mut sum, mut first) = (0u64, 0u64, u64::MAX);
        for r in view.read_all(0) {
            let r = r.expect("read");
            first = first.min(r.position());
            n += 1;
            sum = sum
                .wrapping_mul(31)
                .wrapping_add(r.position() ^ r.payload().len() as u64);
        }
        (n, sum, first)
    };
    let reader = Reader::open(&dir).expect("reader");
    let view = reader.view().expect("view");
    let before = digest(&view);
    support::child_say(&format!("READ {} {} {}", before.0, before.1, before.2));
    // Wait for the parent: it closes our stdin after its retention.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    let again = digest(&view);
    support::child_say(&format!("AGAIN {} {} {}", again.0, again.1, again.2));
    drop(view);
    let new = digest(&reader.view().expect("new view"));
    support::child_say(&format!("NEW {} {} {}", new.0, new.1, new.2));
}

#[test]
fn a_reader_in_another_process_keeps_reading_the_segments_it_mapped() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let model = fill(&log, 150, 0);
    let d = dir.path().to_str().expect("utf-8").to_owned();
    let mut child = support::ChildProc::spawn(
        "child_reader_across_retention",
        &[("ANNAL_RETENTION_CHILD_DIR", d.as_str())],
    );
    let wait = Duration::from_secs(60);
    let read = child.line(wait).expect("READ");
    assert!(read.starts_with(&format!("READ {} ", model.len())), "{read}");
    log.apply_retention_with(Retention::new().max_bytes(4 * SEGMENT))
        .expect("retain");
    let first = first_of(dir.path());
    assert!(first > 0);
    child.close_stdin();
    let again = child.line(wait).expect("AGAIN");
    assert_eq!(
        again.strip_prefix("AGAIN"),
        read.strip_prefix("READ"),
        "the same view reads the same"
    );
    let new = child.line(wait).expect("NEW");
    let kept = model.iter().filter(|e| e.0 >= first).count();
    assert!(new.starts_with(&format!("NEW {kept} ")), "{new}");
    assert!(new.ends_with(&format!(" {first}")), "{new}");
    assert!(child.wait(wait).success());
    log.close().expect("close");
}

#[test]
fn retention_in_logs_without_the_chain_keyed_and_signed() {
    // Without the chain `chain_at` is zero; with a keyed chain the record
    // states the keyed hash; with signed checkpoints every sealed segment
    // left still ends with one.
    let key = annal::ChainKey::from_bytes([7; 32]);
    let signing = annal::SigningKey::from_bytes([9; 32]);
    let cases: [(&str, Options, CheckOptions); 3] = [
        ("no chain", opts().chain(false), CheckOptions::default()),
        ("keyed", opts().chain_key(key.clone()), CheckOptions::default().key(key)),
        (
            "signed",
            opts().signing_key(signing.clone()),
            CheckOptions::default().public_key(signing.public_key()),
        ),
    ];
    for (what, o, c) in cases {
        let dir = scratch();
        let log = Log::open_with(dir.path(), o.clone()).expect("open");
        let model = fill(&log, 150, 0);
        log.apply_retention_with(Retention::new().max_bytes(5 * SEGMENT))
            .expect("retain");
        log.close().expect("close");
        let first = first_of(dir.path());
        assert!(first > 0, "{what}");
        let r = annal::check(dir.path(), c).expect("check");
        assert!(r.is_ok(), "{what}: {:#?}", r.problems);
        assert_eq!(r.retention.map(|x| x.first_position), Some(first), "{what}");
        let log = Log::open_with(dir.path(), o).expect("reopen");
        assert_reads(&log.view().expect("view"), &model, first);
        log.close().expect("close");
    }
}

#[test]
fn random_histories_with_retention_and_reopens_read_as_the_model() {
    // Seeded random histories of appends (batches of 1 to 3 events, to 7
    // streams), retention by size or by age (a clock that jumps), with
    // the rule in the options or applied by hand, and reopens: after every
    // step every read kind returns exactly the model's events at or after
    // the log's first position, and at the end `check` passes.
    let seed = common::seed("random_histories_with_retention");
    for round in 0..4u64 {
        let mut rng = common::Rng::new(seed ^ round);
        let dir = scratch();
        let now = Arc::new(AtomicU64::new(1_000_000_000_000));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let rule = Retention::new().max_bytes(8 * SEGMENT);
        let with_rule = rng.below(2) == 0;
        let o = |rule_on: bool| {
            let o = opts().clock(clock.clone());
            if rule_on { o.retention(rule) } else { o }
        };
        let mut log = Log::open_with(dir.path(), o(with_rule)).expect("open");
        let mut model: Vec<Ev> = Vec::new();
        for step in 0..120u64 {
            match rng.below(20) {
                0 => {
                    log.close().expect("close");
                    log = Log::open_with(dir.path(), o(with_rule)).expect("reopen");
                }
                1 => {
                    let r = Retention::new().max_bytes((3 + rng.below(8)) * SEGMENT);
                    log.apply_retention_with(r).expect("retain by size");
                }
                2 => {
                    now.fetch_add(rng.below(3_600) * 1_000_000_000, Ordering::SeqCst);
                    let r = Retention::new().max_age(Duration::from_secs(1_800));
                    log.apply_retention_with(r).expect("retain by age");
                }
                _ => {
                    let stream = format!("s-{}", rng.below(STREAMS));
                    let n = 1 + rng.below(3);
                    let payloads: Vec<Vec<u8>> =
                        (0..n).map(|k| format!("{:0280}", step * 10 + k).into_bytes()).collect();
                    let events: Vec<EventData<'_>> =
                        payloads.iter().map(|p| EventData::new("E", p.as_slice())).collect();
                    let r = log.append(&stream, ExpectedVersion::Any, &events).expect("append");
                    for (k, p) in payloads.into_iter().enumerate() {
                        let k = k as u64;
                        model.push((r.first_position + k, stream.clone(), r.stream_version + 1 - n + k, p));
                    }
                    now.fetch_add(1_000_000_000, Ordering::SeqCst);
                }
            }
            // The sealer's retention runs beside the appends: the view's
            // first event says where its log starts; every model event from
            // there on must be read, by every read kind.
            let f0 = log.first_position();
            let view = log.view().expect("view");
            let first = if log.first_position() == f0 {
                // No removal while the view was taken: it starts at f0.
                f0
            } else {
                view.read_all(0)
                    .next()
                    .map_or(u64::MAX, |r| r.expect("read").position())
            };
            assert_reads(&view, &model, first);
        }
        // A history may happen to remove nothing (a seed whose rules never
        // bit): a last rule by hand that keeps two segments' worth removes
        // the front for sure, and the reads still match the model.
        log.apply_retention_with(Retention::new().max_bytes(2 * SEGMENT))
            .expect("retain");
        assert!(log.first_position() > 0, "round {round}: something was removed");
        let view = log.view().expect("view");
        let first = view
            .read_all(0)
            .next()
            .map_or(u64::MAX, |r| r.expect("read").position());
        assert_reads(&view, &model, first);
        drop(view);
        log.close().expect("close");
        assert_check_clean(dir.path());
    }
}
