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
//!   opens and reads exactly the same visible events.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::io::{Io, IoFile, StdIo};
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
    for s in ["keep-0", "keep-1", "gone-0", "count-0", "trunc-0", "age-0"] {
        for d in [Direction::Forward, Direction::Backward] {
            m.insert(format!("{s} {d:?}"), format!("{:?}", stream(view, s, d)));
        }
    }
    for c in ["keep", "gone", "count", "trunc", "age"] {
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
    let log = Log::open(dir, opts_at(&clock)).unwrap();
    for i in 0..60u64 {
        *clock.lock().unwrap() += 1_000_000_000;
        for s in ["keep-0", "keep-1", "gone-0", "count-0", "trunc-0", "age-0"] {
            let ty = if i % 2 == 1 { "Odd" } else { "Even" };
            let evs = [EventData::new(ty, payload(s, i))];
            log.append(s, ExpectedVersion::Any, &evs).unwrap();
        }
    }
    log.delete_stream("gone-0", ExpectedVersion::Any).unwrap();
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
            } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
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
    let log = build(tmp.path(), clock.clone());
    let before = snapshot(&log.view().unwrap());
    let old_view = log.view().unwrap();
    // A reader in another process reads with the system clock.
    let mut r = Reader::open(tmp.path()).unwrap();
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
    let log = Log::open(tmp.path(), opts_at(&clock)).unwrap();
    same(&snapshot(&log.view().unwrap()), &expect_after);
    assert_eq!(log.stream_version("gone-0").unwrap(), Some(60));
    // Compacting again removes one more event: the deleted stream's old
    // newest, now that a newer one carries its version.
    let again = log.compact().unwrap();
    assert_eq!(again.removed_events, 1, "{again:?}");
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
    let mut r = Reader::open(tmp.path()).unwrap();
    let expected = snapshot(&r.view().unwrap());
    let mut idle = Reader::open(tmp.path()).unwrap();
    let unmapped = idle.view().unwrap();
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty());
    // Its next view reads the rewritten segments, the same events.
    same(&snapshot(&r.view().unwrap()), &expected);
    same(&snapshot(&idle.view().unwrap()), &expected);
    // A view taken before, that had not mapped a segment yet, says that the
    // segment was replaced: an error naming it, never other events.
    let e = unmapped.read_all(0).find_map(|r| r.err());
    match e {
        Some(Error::Corrupt { detail, .. }) => assert!(detail.contains("compaction"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_compaction_removes_more_and_its_record_lists_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(tmp.path(), clock.clone());
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
    let log = Log::open(tmp.path(), opts_at(&clock)).unwrap();
    same(&snapshot(&log.view().unwrap()), &before);
}

#[test]
fn a_log_with_nothing_hidden_is_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), opts()).unwrap();
    for i in 0..100u64 {
        log.append("a", ExpectedVersion::Any, &[EventData::new("E", payload("a", i))])
            .unwrap();
    }
    let r = log.compact().unwrap();
    assert!(r.compacted.is_empty());
    assert!(r.unchanged > 0);
    assert_eq!(r.removed_events, 0);
}

/// An I/O seam that copies the log directory before each file operation
/// of interest, to simulate a crash there.
#[derive(Debug)]
struct Imaging {
    dir: PathBuf,
    images: Mutex<Vec<PathBuf>>,
    root: PathBuf,
    on: Mutex<bool>,
}

impl Imaging {
    fn image(&self) {
        if !*self.on.lock().unwrap() {
            return;
        }
        let mut imgs = self.images.lock().unwrap();
        // The first segments' every step (the rest repeat them).
        if imgs.len() >= 24 {
            return;
        }
        let to = self.root.join(format!("img-{}", imgs.len()));
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        imgs.push(to);
    }
}

impl Io for Imaging {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.image();
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.image();
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.image();
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.image();
        StdIo.sync_dir(dir)
    }
}

#[test]
fn a_crash_at_every_step_of_a_compaction_leaves_the_same_visible_events() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    let clock = Arc::new(Mutex::new(1_000_000_000_000u64));
    let log = build(&dir, clock.clone());
    log.close().unwrap();
    let expected = snapshot(&Log::open(&dir, opts_at(&clock)).unwrap().view().unwrap());
    let seam = Arc::new(Imaging {
        dir: dir.clone(),
        images: Mutex::new(Vec::new()),
        root: root.path().to_path_buf(),
        on: Mutex::new(false),
    });
    let log = Log::open(&dir, opts_at(&clock).io(seam.clone())).unwrap();
    *seam.on.lock().unwrap() = true;
    let report = log.compact().unwrap();
    *seam.on.lock().unwrap() = false;
    assert!(!report.compacted.is_empty());
    drop(log);
    let images = seam.images.lock().unwrap().clone();
    assert!(images.len() > 5, "{}", images.len());
    for img in images {
        let log = Log::open(&img, opts_at(&clock)).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        same(&snapshot(&log.view().unwrap()), &expected);
        // The next compaction finishes the job.
        log.compact().unwrap();
        same(&snapshot(&log.view().unwrap()), &expected);
        log.close().unwrap();
    }
}
