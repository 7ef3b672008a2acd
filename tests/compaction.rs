//! Compaction (issue 16, spec 3.10): sealed segments rewritten without the
//! events that stream metadata hides, positions kept (with gaps).
//!
//! * a deleted stream, a `max_count` stream, a `truncate_before` stream and
//!   a `max_age` stream across many small segments: after `compact` every
//!   read (all both ways, by stream both ways, by category, by event type,
//!   a cross-process `Reader`, after a reopen) returns exactly the events it
//!   returned before, and the removed payloads are in no file of the log;
//! * the newest event of a stream that is not tombstoned stays (hidden):
//!   a deleted stream's next append goes on at the deletion's version;
//! * a view taken before the compaction keeps reading the original files;
//! * a second compaction after more rules removes more, and its record
//!   lists every run; a log with nothing hidden is left as it is;
//! * a crash at every file operation of a compaction (an image of the
//!   directory before each one, through the I/O seam) leaves a log that
//!   opens and reads exactly the same visible events;
//! * so does a power cut (the simulator of `tests/support`: before every
//!   sync and a sample of the other operations, durable bytes plus pending
//!   writes dropped, kept, cut or torn, directory operations lost or kept),
//!   and `check` finds no problem in any image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
mod support;

use annal::{Direction, Error, EventData, ExpectedVersion, Log, Options, Reader, StreamMetadata};

const SEGMENT: u64 = 4096;

fn opts() -> Options {
    Options::default().segment_size(SEGMENT)
}

fn opts_at(clock: &Arc<Mutex<u64>>) -> Options {
    let c = clock.clone();
    opts().clock(Arc::new(move || *c.lock().unwrap()))
}

/// `(position, stream, version, payload)` of every event a read returns.
type Seen = Vec<(u64, String, u64, String)>;

fn short(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.chars().filter(|c| *c != '0').collect()
}

fn all(log_view: &annal::LogView, dir: Direction) -> Seen {
    let mut out: Seen = log_view
        .read_all(0)
        .map(|r| {
            let r = r.unwrap();
            (
                r.position(),
                r.stream().to_owned(),
                r.stream_version(),
                short(r.payload()),
            )
        })
        .collect();
    if dir == Direction::Backward {
        out.reverse();
    }
    out
}

fn stream(view: &annal::LogView, s: &str, dir: Direction) -> Result<Seen, Error> {
    let from = if dir == Direction::Forward { 0 } else { u64::MAX };
    view.read_stream(s, from, dir, u64::MAX)
        .map(|r| {
            r.map(|r| {
                (
                    r.position(),
                    r.stream().to_owned(),
                    r.stream_version(),
                    short(r.payload()),
                )
            })
        })
        .collect()
}

fn category(view: &annal::LogView, c: &str) -> Seen {
    view.read_category(c, 0)
        .map(|r| {
            let r = r.unwrap();
            (
                r.position(),
                r.stream().to_owned(),
                r.stream_version(),
                short(r.payload()),
            )
        })
        .collect()
}

/// Everything a reader can see, as one comparable value.
#[track_caller]
fn same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "{k}");
    }
    assert_eq!(a.len(), b.len());
}

fn snapshot(view: &annal::LogView) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("all".into(), format!("{:?}", all(view, Direction::Forward)));
    for s in ["keep-0", "keep-1", "gone-0", "count-0", "trunc-0", "age-0", "tomb-0"] {
        for d in [Direction::Forward, Direction::Backward] {
            m.insert(format!("{s} {d:?}"), format!("{:?}", stream(view, s, d)));
        }
    }
    for c in ["keep", "gone", "count", "trunc", "age", "tomb"] {
        m.insert(format!("category {c}"), format!("{:?}", category(view, c)));
    }
    let types: Vec<u64> = view.read_event_type("Odd", 0).map(|r| r.unwrap().position()).collect();
    m.insert("type Odd".into(), format!("{types:?}"));
    m
}

fn payload(stream: &str, i: u64) -> Vec<u8> {
    format!("{stream}:{i:0200}:payload-marker").into_bytes()
}

/// A log of six streams across many small segments, with rules on four.
fn build(dir: &Path, clock: Arc<Mutex<u64>>) -> Log {
    build_with(dir, opts_at(&clock), clock)
}

fn build_with(dir: &Path, opts: Options, clock: Arc<Mutex<u64>>) -> Log {
    let log = Log::open_with(dir, opts).unwrap();
    for i in 0..60u64 {
        *clock.lock().unwrap() += 1_000_000_000;
        for s in ["keep-0", "keep-1", "gone-0", "count-0", "trunc-0", "age-0", "tomb-0"] {
            let ty = if i % 2 == 1 { "Odd" } else { "Even" };
            let evs = [EventData::new(ty, payload(s, i))];
            log.append(s, ExpectedVersion::Any, &evs).unwrap();
        }
    }
    log.delete_stream("gone-0", ExpectedVersion::Any).unwrap();
    log.hard_delete_stream("tomb-0", ExpectedVersion::Any).unwrap();
    log.set_stream_metadata("count-0", StreamMetadata::new().max_count(5))
        .unwrap();
    log.set_stream_metadata("trunc-0", StreamMetadata::new().truncate_before(50))
        .unwrap();
    log.set_stream_metadata("age-0", StreamMetadata::new().max_age(Duration::from_secs(10)))
        .unwrap();
    log
}

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                // A temporary file the writer renamed meanwhile reads as empty.
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn compaction_removes_hidden_events_and_every_read_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    // No retired originals: the removed bytes leave the directory at once.
    let log = build_with(tmp.path(), opts_at(&clock).retired_grace(Duration::ZERO), clock.clone());
    let before = snapshot(&log.view().unwrap());
    let old_view = log.view().unwrap();
    // A reader in another process reads with the system clock.
    let r = Reader::open(tmp.path()).unwrap();
    let by_reader = snapshot(&r.view().unwrap());
    let bytes_before: u64 = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();

    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty(), "{report:?}");
    assert!(report.removed_events > 60, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(report.record_positions.len(), report.compacted.len());

    // Every read is the same, in this process, in a new view, after a
    // reopen and through a cross-process reader.
    same(&snapshot(&log.view().unwrap()), &before);
    same(&snapshot(&old_view), &before);
    same(&snapshot(&r.view().unwrap()), &by_reader);
    assert!(matches!(
        stream(&log.view().unwrap(), "gone-0", Direction::Forward),
        Err(Error::StreamDeleted { .. })
    ));
    // The deleted stream's and the truncated events' payloads are gone
    // from every file (the active segment holds only newer events; each
    // stream's newest event stays).
    for i in 0..40 {
        for s in ["gone-0", "trunc-0", "count-0", "age-0"] {
            let hits = files_contain(tmp.path(), &payload(s, i));
            assert!(hits.is_empty(), "{s} {i} still in {hits:?}");
        }
        for s in ["keep-0", "keep-1"] {
            assert!(!files_contain(tmp.path(), &payload(s, i)).is_empty(), "{s} {i}");
        }
    }
    let bytes_after: u64 = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes_after < bytes_before);

    // A deleted stream goes on at its deletion's version.
    let r = log
        .append(
            "gone-0",
            ExpectedVersion::NoStream,
            &[EventData::new("Even", b"again".as_slice())],
        )
        .unwrap();
    assert_eq!(r.stream_version, 60);
    let expect_after = snapshot(&log.view().unwrap());
    log.close().unwrap();
    let log = Log::open_with(tmp.path(), opts_at(&clock).retired_grace(Duration::ZERO)).unwrap();
    same(&snapshot(&log.view().unwrap()), &expect_after);
    assert_eq!(log.stream_version("gone-0").unwrap(), Some(60));
    // Compacting again removes two more events: the deleted stream's old
    // newest, now that a newer one carries its version, and the tombstoned
    // stream's newest, whose segment was the active one before.
    let again = log.compact().unwrap();
    assert_eq!(again.removed_events, 2, "{again:?}");
    assert!(files_contain(tmp.path(), &payload("tomb-0", 59)).is_empty());
    same(&snapshot(&log.view().unwrap()), &expect_after);
    assert!(files_contain(tmp.path(), &payload("gone-0", 59)).is_empty());
    assert_eq!(log.compact().unwrap().removed_events, 0);
    log.close().unwrap();
}

#[test]
fn the_newest_event_of_a_stream_hidden_whole_stays_and_the_versions_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(tmp.path(), clock.clone());
    // Everything of age-0 is older than 10 s now.
    *clock.lock().unwrap() += 100_000_000_000;
    let before = snapshot(&log.view().unwrap());
    log.compact().unwrap();
    same(&snapshot(&log.view().unwrap()), &before);
    assert_eq!(log.stream_version("age-0").unwrap(), Some(59));
    let r = log
        .append(
            "age-0",
            ExpectedVersion::Exact(59),
            &[EventData::new("Even", b"next".as_slice())],
        )
        .unwrap();
    assert_eq!(r.stream_version, 60);
    // Lowering the rules later shows what is left: from the version kept on.
    log.set_stream_metadata("age-0", StreamMetadata::new()).unwrap();
    let versions: Vec<u64> = stream(&log.view().unwrap(), "age-0", Direction::Forward)
        .unwrap()
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert!(versions.ends_with(&[59, 60]), "{versions:?}");
    assert!(versions.len() < 61, "{versions:?}");
    // A read from a version compaction removed says so.
    let view = log.view().unwrap();
    let e = view.read_stream("age-0", 3, Direction::Forward, 10).next().unwrap();
    assert!(matches!(e, Err(Error::RemovedByCompaction { .. })), "{e:?}");
    log.close().unwrap();
}

#[test]
fn a_reader_in_another_process_follows_a_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(tmp.path(), clock.clone());
    // A reader that opened every sealed segment (unmapped until read).
    let r = Reader::open(tmp.path()).unwrap();
    let expected = snapshot(&r.view().unwrap());
    let idle = Reader::open(tmp.path()).unwrap();
    let unmapped = idle.view().unwrap();
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    // Its next view reads the rewritten segments, the same events.
    same(&snapshot(&r.view().unwrap()), &expected);
    same(&snapshot(&idle.view().unwrap()), &expected);
    // A view taken before, that had not mapped a segment yet, maps the
    // original, which compaction kept under a retired name (spec 3.10).
    same(&snapshot(&unmapped), &expected);
    let retired: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".retired"))
        .collect();
    assert_eq!(retired.len(), report.compacted.len());
    // Once they are gone (after their grace, at an open or a compaction),
    // such a view says the segment was replaced: an error naming it, never
    // other events.
    let late = Reader::open(tmp.path()).unwrap();
    let stale = late.view().unwrap();
    log.set_stream_metadata("keep-1", StreamMetadata::new().max_count(2))
        .unwrap();
    log.compact().unwrap();
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".retired") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let e = stale.read_all(0).find_map(|r| r.err());
    match e {
        Some(Error::Corrupt { detail, .. }) => assert!(detail.contains("compaction"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

/// An I/O seam that holds the first swap of a compaction (the rename of a
/// rewritten segment over its original) until released: the record is
/// durable and the original linked as retired by then.
#[derive(Debug)]
struct HoldSwap {
    at_swap: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl annal::io::Io for HoldSwap {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn annal::io::IoFile>> {
        annal::io::StdIo.create(path)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn annal::io::IoFile>> {
        annal::io::StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if from.to_string_lossy().ends_with(".seg.tmp")
            && let Some(tx) = self.at_swap.lock().unwrap().take()
        {
            tx.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        }
        annal::io::StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        annal::io::StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        annal::io::StdIo.sync_dir(dir)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        annal::io::StdIo.hard_link(from, to)
    }
}

/// A reader whose first view is taken between a compaction's record and its
/// swap opens the originals; it must still follow the swap (a first view
/// skips the records below its end only when no compaction is in flight),
/// or once the retired originals are gone it could read nothing.
#[test]
fn a_reader_first_opened_mid_compaction_follows_its_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let (at_swap, reached) = std::sync::mpsc::channel();
    let (release, go) = std::sync::mpsc::channel();
    let seam = Arc::new(HoldSwap {
        at_swap: Mutex::new(Some(at_swap)),
        go: Mutex::new(go),
    });
    let log = build_with(tmp.path(), opts_at(&clock).io(seam), clock.clone());
    // (A reader's clock is the system's: compare readers with readers.)
    let expected = snapshot(&Reader::open(tmp.path()).unwrap().view().unwrap());
    let compacting = std::thread::spawn(move || {
        let report = log.compact().unwrap();
        (log, report)
    });
    reached.recv().unwrap();
    // Its first view opens every sealed segment (the originals) and maps
    // none: nothing is read through it.
    let r = Reader::open(tmp.path()).unwrap();
    let first = r.view().unwrap();
    release.send(()).unwrap();
    let (log, report) = compacting.join().unwrap();
    assert!(!report.compacted.is_empty());
    // The held swap's record is below the first view's end.
    assert!(report.record_positions[0] < first.next_position());
    drop(first);
    // The originals' grace is over.
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".retired") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    same(&snapshot(&r.view().unwrap()), &expected);
    log.close().unwrap();
}

/// Retired originals go once their grace has passed: at the next
/// compaction or open.
#[test]
fn retired_originals_are_removed_after_their_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(tmp.path(), clock.clone());
    log.compact().unwrap();
    let count = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".retired"))
            .count()
    };
    assert!(count() > 0);
    log.close().unwrap();
    // Within the grace an open keeps them; after it (their names say
    // when they were retired, on the system clock), removes them.
    drop(Log::open_with(tmp.path(), opts_at(&clock)).unwrap());
    let n = count();
    assert!(n > 0);
    let mut aged = 0;
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".retired").and_then(|r| r.split('.').next()) {
            let old = format!("{base}.{:020}.retired", aged);
            std::fs::rename(e.path(), tmp.path().join(old)).unwrap();
            aged += 1;
        }
    }
    assert_eq!(count(), n);
    drop(Log::open_with(tmp.path(), opts_at(&clock)).unwrap());
    assert_eq!(count(), 0);
}

#[test]
fn a_second_compaction_removes_more_and_its_record_lists_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    // No retired originals: the removed bytes leave the directory at once.
    let log = build_with(tmp.path(), opts_at(&clock).retired_grace(Duration::ZERO), clock.clone());
    let first = log.compact().unwrap();
    log.set_stream_metadata("keep-0", StreamMetadata::new().max_count(3))
        .unwrap();
    let before = snapshot(&log.view().unwrap());
    let second = log.compact().unwrap();
    assert!(second.removed_events >= 50, "{second:?}");
    assert!(!second.compacted.is_empty());
    same(&snapshot(&log.view().unwrap()), &before);
    let _ = first;
    for i in 0..50 {
        assert!(
            files_contain(tmp.path(), &payload("keep-0", i)).is_empty(),
            "keep-0 {i}"
        );
    }
    log.close().unwrap();
    let log = Log::open_with(tmp.path(), opts_at(&clock)).unwrap();
    same(&snapshot(&log.view().unwrap()), &before);
}

#[test]
fn a_log_with_nothing_hidden_is_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open_with(tmp.path(), opts()).unwrap();
    for i in 0..100u64 {
        log.append("a", ExpectedVersion::Any, &[EventData::new("E", payload("a", i))])
            .unwrap();
    }
    let r = log.compact().unwrap();
    assert!(r.compacted.is_empty());
    assert!(r.unchanged > 0);
    assert_eq!(r.removed_events, 0);
}

#[test]
fn a_crash_at_every_step_of_a_compaction_leaves_the_same_visible_events() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(&dir, clock.clone());
    log.close().unwrap();
    let expected = snapshot(&Log::open_with(&dir, opts_at(&clock)).unwrap().view().unwrap());
    // An image before every file operation of the first segments'
    // compaction (the rest repeat them).
    let seam = Arc::new(common::DirImages::new(
        &dir,
        root.path(),
        common::always,
        common::never,
        24,
    ));
    seam.on.store(false, Ordering::SeqCst);
    let log = Log::open_with(&dir, opts_at(&clock).io(seam.clone())).unwrap();
    seam.on.store(true, Ordering::SeqCst);
    let report = log.compact().unwrap();
    seam.on.store(false, Ordering::SeqCst);
    assert!(!report.compacted.is_empty());
    drop(log);
    let images = seam.images();
    assert!(images.len() > 5, "{}", images.len());
    for img in images {
        let log = Log::open_with(&img, opts_at(&clock)).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        same(&snapshot(&log.view().unwrap()), &expected);
        // The next compaction finishes the job.
        log.compact().unwrap();
        same(&snapshot(&log.view().unwrap()), &expected);
        log.close().unwrap();
    }
}

#[test]
fn a_power_cut_anywhere_in_a_compaction_loses_nothing_visible() {
    power_cut(false);
}

/// The same for log retention (spec 3.9): every image reads as before or as
/// after the removal, and the next application finishes it.
#[test]
fn a_power_cut_anywhere_in_log_retention_leaves_before_or_after() {
    power_cut(true);
}

fn power_cut(retain: bool) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let plan = support::CapturePlan {
        per_sync: 1,
        op_permille: 100,
        per_op: 1,
        seed: annal_seed(),
    };
    let power = support::PowerIo::new(&dir, plan);
    power.set_enabled(false);
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build_with(&dir, opts_at(&clock).io(Arc::new(power.clone())), clock.clone());
    log.sync().unwrap();
    let expected = snapshot(&log.view().unwrap());
    power.set_enabled(true);
    if retain {
        let r = log.apply_retention_with(kill_retention()).unwrap();
        assert!(r.removed_before.is_some(), "{r:?}");
    } else {
        let report = log.compact().unwrap();
        assert!(report.compacted.len() > 3, "{report:?}");
    }
    power.set_enabled(false);
    let after = snapshot(&log.view().unwrap());
    log.close().unwrap();
    let images = power.take_images();
    assert!(images.len() > 20, "{} images", images.len());
    let mut compacted_seen = 0;
    for img in &images {
        let label = format!(
            "power cut before op {} ({:?}, {}, variant {})",
            img.op, img.kind, img.mode, img.variant
        );
        let at = tempfile::tempdir().unwrap();
        img.write_to(at.path());
        let log = Log::open_with(at.path(), opts_at(&clock)).unwrap_or_else(|e| {
            let keep = std::env::temp_dir().join("power-image-debug");
            let _ = std::fs::remove_dir_all(&keep);
            img.write_to(&keep);
            panic!("{label}: open: {e} (image kept in {})", keep.display())
        });
        if retain {
            let now = snapshot(&log.view().unwrap());
            assert!(
                now == expected || now == after,
                "{label}: neither before nor after the removal"
            );
            compacted_seen += usize::from(now == after);
            log.apply_retention_with(kill_retention())
                .unwrap_or_else(|e| panic!("{label}: retain again: {e}"));
            same(&snapshot(&log.view().unwrap()), &after);
        } else {
            same(&snapshot(&log.view().unwrap()), &expected);
            compacted_seen += log
                .view()
                .unwrap()
                .read_stream("$compaction", 0, Direction::Forward, u64::MAX)
                .count();
        }
        log.close().unwrap();
        let r = annal::check(at.path(), annal::CheckOptions::default()).unwrap_or_else(|e| panic!("{label}: {e}"));
        if !r.is_ok() {
            let keep = std::env::temp_dir().join("power-image-debug");
            let _ = std::fs::remove_dir_all(&keep);
            img.write_to(&keep);
            panic!("{label}: {:#?} (image kept in {})", r.problems, keep.display());
        }
    }
    assert!(
        compacted_seen > 0,
        "no image holds a compaction record (or the removal)"
    );
}

/// The seed of the power-cut test (`ANNAL_TEST_SEED`, else fixed).
fn annal_seed() -> u64 {
    let s = std::env::var("ANNAL_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    println!("ANNAL_TEST_SEED={s}");
    s
}

const ENV_KILL_DIR: &str = "ANNAL_COMPACTION_KILL_DIR";
/// Set: the child applies log retention (spec 3.9) instead.
const ENV_KILL_RETAIN: &str = "ANNAL_COMPACTION_KILL_RETAIN";

/// The rule the retention rounds apply: about half the log goes.
fn kill_retention() -> annal::Retention {
    annal::Retention::new().max_bytes(60 << 10)
}

/// The child of [`a_writer_killed_while_it_compacts_loses_nothing_visible`]:
/// opens the log (with the parent's fixed clock), says `READY`, compacts,
/// says `DONE`, and waits to be killed.
#[test]
fn compaction_kill_child() {
    let Ok(dir) = std::env::var(ENV_KILL_DIR) else {
        return;
    };
    let clock = Arc::new(Mutex::new(KILL_CLOCK));
    let log = Log::open_with(&dir, opts_at(&clock)).expect("child open");
    support::child_say("READY");
    if std::env::var_os(ENV_KILL_RETAIN).is_some() {
        log.apply_retention_with(kill_retention()).expect("child retain");
    } else {
        log.compact().expect("child compact");
    }
    support::child_say("DONE");
    std::thread::sleep(Duration::from_secs(60));
}

/// The clock of the kill test's log, fixed: reads hide by age the same in
/// parent and child.
const KILL_CLOCK: u64 = 2_000_000_000_000;

/// A writer process killed (SIGKILL) at random instants of a compaction:
/// the log opens, every read is what it was, `check` finds no problem, and
/// the next compaction finishes the job. Every other round, the child
/// applies log retention instead: the log then reads as before or as after
/// the removal, never anything else, and the next application finishes it.
#[test]
fn a_writer_killed_while_it_compacts_loses_nothing_visible() {
    let root = tempfile::tempdir().unwrap();
    let original = root.path().join("original");
    let clock = Arc::new(Mutex::new(KILL_CLOCK - 100_000_000_000));
    let log = build(&original, clock.clone());
    log.close().unwrap();
    *clock.lock().unwrap() = KILL_CLOCK;
    let expected = snapshot(&Log::open_with(&original, opts_at(&clock)).unwrap().view().unwrap());
    // What retention leaves, without a kill.
    let retained_dir = root.path().join("retained");
    std::fs::create_dir(&retained_dir).unwrap();
    for e in std::fs::read_dir(&original).unwrap().flatten() {
        std::fs::copy(e.path(), retained_dir.join(e.file_name())).unwrap();
    }
    let retained = {
        let log = Log::open_with(&retained_dir, opts_at(&clock)).unwrap();
        let r = log.apply_retention_with(kill_retention()).unwrap();
        assert!(r.removed_before.is_some(), "{r:?}");
        snapshot(&log.view().unwrap())
    };
    let rounds: u64 = std::env::var("ANNAL_KILL_ROUNDS").map_or(8, |v| v.parse().expect("ANNAL_KILL_ROUNDS"));
    let mut rng = support::Rng::new(annal_seed());
    let (mut killed_before_done, mut finished) = (0, 0);
    for round in 0..rounds {
        let dir = root.path().join(format!("round-{round}"));
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&original).unwrap().flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let dir_s = dir.to_str().unwrap().to_owned();
        let retain = round % 2 == 1;
        let mut env = vec![(ENV_KILL_DIR, dir_s.as_str())];
        if retain {
            env.push((ENV_KILL_RETAIN, "1"));
        }
        let mut child = support::ChildProc::spawn("compaction_kill_child", &env);
        assert_eq!(child.line(Duration::from_secs(60)).as_deref(), Some("READY"));
        std::thread::sleep(Duration::from_micros(rng.range(0, 400_000)));
        child.child.kill().expect("kill");
        let _ = child.child.wait();
        match child.try_line().as_deref() {
            Some("DONE") => finished += 1,
            _ => killed_before_done += 1,
        }
        let label = format!("round {round} (retention {retain})");
        let log = Log::open_with(&dir, opts_at(&clock)).unwrap_or_else(|e| panic!("{label}: open: {e}"));
        if retain {
            let now = snapshot(&log.view().unwrap());
            assert!(
                now == expected || now == retained,
                "{label}: neither before nor after the removal"
            );
            log.apply_retention_with(kill_retention())
                .unwrap_or_else(|e| panic!("{label}: retain again: {e}"));
            same(&snapshot(&log.view().unwrap()), &retained);
        } else {
            same(&snapshot(&log.view().unwrap()), &expected);
            log.compact().unwrap_or_else(|e| panic!("{label}: compact again: {e}"));
            same(&snapshot(&log.view().unwrap()), &expected);
        }
        log.close().unwrap();
        let r = annal::check(&dir, annal::CheckOptions::default()).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(r.is_ok(), "{label}: {:#?}", r.problems);
    }
    println!("{killed_before_done} rounds killed while compacting, {finished} after");
}

/// Readers in other threads take views and read everything while a
/// compaction runs: every view reads exactly what a view read before it.
#[test]
fn readers_racing_a_compaction_never_fault_and_never_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = Arc::new(build(tmp.path(), clock.clone()));
    let expected = snapshot(&log.view().unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (log, stop, expected, dir) = (log.clone(), stop.clone(), expected.clone(), tmp.path().to_owned());
            std::thread::spawn(move || {
                let reader = Reader::open(&dir).unwrap();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 2 {
                    if i == 0 {
                        same(&snapshot(&log.view().unwrap()), &expected);
                    } else {
                        // A reader as in another process (its clock is the
                        // system's: compare what hides by age nowhere). A
                        // view that had not mapped a segment before it was
                        // swapped maps its retired original (spec 3.10).
                        let v = reader.view().unwrap();
                        let read: Result<Vec<(u64, String)>, Error> = v
                            .read_all(0)
                            .map(|r| r.map(|r| (r.position(), r.stream().to_owned())))
                            .collect();
                        match read {
                            Ok(all) => {
                                assert!(all.iter().all(|e| !e.1.starts_with("gone")), "a deleted event");
                                assert!(all.len() > 100, "{}", all.len());
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 2);
    }
    same(&snapshot(&log.view().unwrap()), &expected);
}

/// After erasure and compaction no file of the log holds the plaintext of
/// an erased subject's events, nor of a deleted stream's (spec 3.8, 3.10):
/// every byte of every file is searched.
#[test]
fn after_erasure_and_compaction_no_file_holds_the_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    // No retired originals: the removed bytes leave at once.
    let log = Log::open_with(tmp.path(), opts().retired_grace(Duration::ZERO)).unwrap();
    let secret = |i: u64| format!("alice-secret-address-{i:04}").into_bytes();
    for i in 0..60u64 {
        let ev = EventData::new("Moved", secret(i)).with_subject("alice");
        log.append("person-alice", ExpectedVersion::Any, &[ev]).unwrap();
        log.append(
            "noise",
            ExpectedVersion::Any,
            &[EventData::new("N", payload("noise", i))],
        )
        .unwrap();
        log.append(
            "plain-bob",
            ExpectedVersion::Any,
            &[EventData::new("Moved", payload("bob", i))],
        )
        .unwrap();
    }
    // Sealed records never put plaintext in a file.
    for i in [0, 30, 59] {
        assert!(files_contain(tmp.path(), &secret(i)).is_empty(), "sealed {i}");
    }
    log.erase_subject("alice").unwrap();
    log.hard_delete_stream("plain-bob", ExpectedVersion::Any).unwrap();
    let report = log.compact().unwrap();
    assert!(report.removed_events > 0, "{report:?}");
    log.close().unwrap();
    for i in 0..60 {
        assert!(files_contain(tmp.path(), &secret(i)).is_empty(), "alice {i}");
    }
    // A tombstoned stream loses every event of its sealed segments.
    let log = Log::open_with(tmp.path(), opts()).unwrap();
    let active = log.view().unwrap().segment_count();
    assert!(active > 3);
    let left: Vec<u64> = (0..60)
        .filter(|&i| !files_contain(tmp.path(), &payload("bob", i)).is_empty())
        .collect();
    // Only the newest ones, in the active segment, are left.
    assert!(
        left.len() < 20 && left.iter().rev().zip((0..60).rev()).all(|(a, b)| *a == b),
        "bob's events left in sealed segments: {left:?}"
    );
    // Erased events keep their envelope: still read, as erased.
    let view = log.view().unwrap();
    let n = view
        .read_stream("person-alice", 0, Direction::Forward, u64::MAX)
        .map(|r| view.unseal(r.unwrap()).unwrap().is_erased())
        .filter(|e| *e)
        .count();
    assert_eq!(n, 60);
}
