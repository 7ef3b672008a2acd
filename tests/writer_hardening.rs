//! Scenario: the writer's defences of issue 13 (defects 8b, 9, 11, 13, 15,
//! 20, 21, 25, 26), each against the attack or failure that broke it.
//!
//! * 8b, 21: a stream table with valid CRCs that lies about a stream's last
//!   version (lower, or near `u64::MAX`) does not decide an expected version:
//!   the segments are asked, the table is rebuilt, a warning names it.
//! * 11: an append whose batch was written and fsynced is acknowledged even
//!   though the sealer failed meanwhile; the next call reports the poison.
//! * 15: idempotent retries are recognised after a reopen (`Any`, `Exact`,
//!   `NoStream`), within the documented window.
//! * 20: deleting (or replacing) `annal.lock` under a running writer does
//!   not let a second writer in.
//! * 25: a log whose first segment is missing is refused, nothing modified.
//! * 26: back-pressure: appends that would roll wait while 4 sealed segments
//!   are unindexed, not before, and go on once the sealer catches up.
//! * 9: a symlinked or world-writable log directory or `snapshots/` gets a
//!   warning; a symlinked `snapshots/` is never written or read through.
//! * 13: key files readable by group or others, special files and oversized
//!   files are refused.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use annal::io::{Io, IoFile, StdIo};
use annal::{
    ChainKey, Durability, Error, EventData, ExpectedVersion, LOCK_FILE, Log, Options, PublicKey, STREAM_TABLE_FILE,
    SigningKey, Uuid,
};

const DEADLINE: Duration = Duration::from_secs(120);

fn ev(payload: &[u8]) -> EventData<'_> {
    EventData::new("E", payload)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A log of several 4 KiB segments whose stream `victim` is at version 10,
/// all in sealed segments, with a stream table covering them.
fn victim_log(dir: &Path) {
    let log = Log::open_with(dir, Options::default().segment_size(4096)).expect("open");
    let pad = vec![b'p'; 300];
    for _ in 0..11 {
        log.append("victim", ExpectedVersion::Any, &[ev(&pad)]).expect("append");
    }
    for i in 0..40 {
        log.append(&format!("other-{i}"), ExpectedVersion::Any, &[ev(&pad)])
            .expect("append");
    }
    log.close().expect("close");
    assert!(segments(dir).len() >= 4, "several segments");
    assert!(dir.join(STREAM_TABLE_FILE).exists());
}

/// Rewrite the stream table's `last_version` of `stream` to `version`, with
/// every CRC recomputed (spec 16, 18): a forgery no CRC catches.
fn forge_table(dir: &Path, stream: &str, version: u64) {
    let path = dir.join(STREAM_TABLE_FILE);
    let bytes = fs::read(&path).expect("read table");
    let footer = &bytes[bytes.len() - 32..];
    let table_offset = u64::from_le_bytes(footer[0..8].try_into().expect("8")) as usize;
    let mut body = bytes[..table_offset].to_vec();
    let count = u64::from_le_bytes(body[32..40].try_into().expect("8")) as usize;
    let names_at = 64 + 40 * count;
    let mut hit = false;
    for i in 0..count {
        let r = 64 + 40 * i;
        let off = u32::from_le_bytes(body[r + 8..r + 12].try_into().expect("4")) as usize;
        let len = u16::from_le_bytes(body[r + 12..r + 14].try_into().expect("2")) as usize;
        if &body[names_at + off..names_at + off + len] == stream.as_bytes() {
            body[r + 16..r + 24].copy_from_slice(&version.to_le_bytes());
            hit = true;
        }
    }
    assert!(hit, "the table holds {stream}");
    // Block CRC table and footer (spec 16).
    let mut table = Vec::new();
    for chunk in body.chunks(4096) {
        table.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
    }
    let blocks = body.len().div_ceil(4096);
    let mut foot = [0u8; 32];
    foot[0..8].copy_from_slice(&(body.len() as u64).to_le_bytes());
    foot[8..16].copy_from_slice(&(blocks as u64).to_le_bytes());
    foot[16..20].copy_from_slice(&crc32fast::hash(&table).to_le_bytes());
    let fc = crc32fast::hash(&foot[..20]);
    foot[20..24].copy_from_slice(&fc.to_le_bytes());
    foot[24..32].copy_from_slice(&bytes[bytes.len() - 8..]);
    body.extend_from_slice(&table);
    body.extend_from_slice(&foot);
    fs::write(&path, body).expect("write forged table");
}

fn versions_of(dir: &Path, stream: &str) -> Vec<u64> {
    support::read_log(dir)
        .into_iter()
        .filter(|r| r.stream == stream)
        .map(|r| r.version)
        .collect()
}

/// Defect 8b: the table says `victim` is at version 0; the log says 10.
/// `Exact(0)` must be refused (it wrote a duplicate version 1).
#[test]
fn a_stream_table_that_lies_low_does_not_decide_an_expected_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    victim_log(dir.path());
    forge_table(dir.path(), "victim", 0);
    let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).expect("reopen");
    let e = log
        .append("victim", ExpectedVersion::Exact(0), &[ev(b"dup")])
        .expect_err("the stream is at 10");
    assert!(matches!(e, Error::WrongExpectedVersion { actual: Some(10), .. }), "{e}");
    let w = log.warnings();
    assert!(
        w.iter().any(|w| w.contains(STREAM_TABLE_FILE) && w.contains("victim")),
        "a warning names the table: {w:?}"
    );
    let r = log
        .append("victim", ExpectedVersion::Exact(10), &[ev(b"next")])
        .expect("append at the true version");
    assert_eq!(r.stream_version, 11);
    log.close().expect("close");
    assert_eq!(versions_of(dir.path(), "victim"), (0..=11).collect::<Vec<_>>());
    let report = annal::check(dir.path(), annal::CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Defect 21: the table claims version 2^64-2; `append` reported
/// 18446744073709551615 and the next ones wrapped to 0.
#[test]
fn a_stream_table_claiming_a_huge_version_wraps_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    victim_log(dir.path());
    forge_table(dir.path(), "victim", u64::MAX - 1);
    let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).expect("reopen");
    let a = log.append("victim", ExpectedVersion::Any, &[ev(b"a")]).expect("append");
    assert_eq!(a.stream_version, 11);
    let b = log
        .append("victim", ExpectedVersion::Any, &[ev(b"b"), ev(b"c")])
        .expect("append");
    assert_eq!(b.stream_version, 13);
    // Noticed either way: the table parser refuses a last_version that no
    // log can hold (spec 18), so recovery rebuilds the table; or the writer
    // finds the hit contradicted by the segments and warns.
    assert!(
        log.recovery().rebuilt_stream_table || !log.warnings().is_empty(),
        "the forged table went unnoticed"
    );
    log.close().expect("close");
    assert_eq!(versions_of(dir.path(), "victim"), (0..=13).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- defect 11

/// A seam that fails the sealer's first index temp file (ENOSPC) and holds
/// the writer's first batch write into a fresh segment until that failure
/// happened: the sealer is then certainly poisoned before the append that
/// rolled returns.
#[derive(Debug, Default)]
struct SealerFails {
    failed: Mutex<bool>,
    cv: Condvar,
    armed: AtomicBool,
}

#[derive(Debug)]
struct HoldFile {
    inner: Box<dyn IoFile>,
    io: Arc<SealerFails>,
    seg: bool,
}

#[derive(Debug, Clone)]
struct SealerFailsIo(Arc<SealerFails>);

impl Io for SealerFailsIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let s = &self.0;
        if s.armed.load(Ordering::SeqCst)
            && std::thread::current().name() == Some("annal-sealer")
            && path.to_string_lossy().ends_with(".idx.tmp")
        {
            let mut f = s.failed.lock().expect("lock");
            if !*f {
                *f = true;
                s.cv.notify_all();
                return Err(io::Error::from_raw_os_error(28));
            }
        }
        Ok(Box::new(HoldFile {
            inner: StdIo.create(path)?,
            io: s.clone(),
            seg: path.extension().is_some_and(|e| e == "seg"),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(HoldFile {
            inner: StdIo.open(path)?,
            io: self.0.clone(),
            seg: false,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

impl IoFile for HoldFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // The first batch written into a segment created by a roll.
        if self.seg && offset == 128 && self.io.armed.load(Ordering::SeqCst) {
            let start = Instant::now();
            let mut f = self.io.failed.lock().expect("lock");
            while !*f {
                assert!(start.elapsed() < DEADLINE, "the sealer never ran");
                f = self.io.cv.wait_timeout(f, Duration::from_millis(100)).expect("wait").0;
            }
        }
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

#[test]
fn an_append_made_durable_is_acknowledged_although_the_sealer_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seam = Arc::new(SealerFails::default());
    let opts = Options::default()
        .segment_size(4096)
        .durability(Durability::Fsync)
        .io(Arc::new(SealerFailsIo(seam.clone())));
    let log = Log::open_with(dir.path(), opts).expect("open");
    let pad = vec![b'x'; 1000];
    log.append("s", ExpectedVersion::Any, &[ev(&pad)]).expect("first");
    log.append("s", ExpectedVersion::Any, &[ev(&pad)]).expect("second");
    log.append("s", ExpectedVersion::Any, &[ev(&pad)]).expect("third");
    seam.armed.store(true, Ordering::SeqCst);
    // This one rolls: the sealer fails while its batch is written.
    let rolled: Vec<Vec<u8>> = (b'1'..=b'3').map(|c| vec![c; 300]).collect();
    let r = log
        .append("s", ExpectedVersion::Any, &support::events("E", &rolled))
        .expect("written and fsynced: acknowledged");
    assert_eq!(r.stream_version, 5);
    assert!(*seam.failed.lock().expect("lock"), "the sealer failed");
    // The failure is reported by the next call.
    let e = log
        .append("s", ExpectedVersion::Any, &[ev(b"later")])
        .expect_err("poisoned");
    match &e {
        Error::Poisoned { cause } => assert!(cause.contains(".idx.tmp"), "{e}"),
        other => panic!("expected Poisoned, got {other}"),
    }
    assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
    drop(log);
    // Reopened: the acknowledged events are there, the refused one is not.
    let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).expect("reopen");
    assert_eq!(log.stream_version("s").expect("version"), Some(5));
    log.close().expect("close");
    let recs = support::read_log(dir.path());
    let tail: Vec<Vec<u8>> = recs.iter().skip(3).map(|r| r.payload.clone()).collect();
    assert_eq!(tail, rolled);
    assert_eq!(segments(dir.path()).len(), 2, "the append rolled");
}

// ---------------------------------------------------------------- defect 15

fn with_id(payload: &'static [u8], id: u128) -> EventData<'static> {
    EventData::new("E", payload).with_id(Uuid::from_u128(id))
}

#[test]
fn idempotent_retries_are_recognised_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (any1, exact, nostream) = {
        let log = Log::open(dir.path()).expect("open");
        log.append("noise", ExpectedVersion::Any, &[ev(b"n")]).expect("noise");
        let any1 = log
            .append("a", ExpectedVersion::Any, &[with_id(b"1", 1), with_id(b"2", 2)])
            .expect("any");
        let exact = log
            .append("a", ExpectedVersion::Exact(1), &[with_id(b"3", 3)])
            .expect("exact");
        let nostream = log
            .append("b", ExpectedVersion::NoStream, &[with_id(b"4", 4)])
            .expect("nostream");
        log.close().expect("close");
        (any1, exact, nostream)
    };
    // A new open is what a second process or CLI call does.
    for round in 0..2 {
        let log = Log::open(dir.path()).expect("reopen");
        let before = log.next_position();
        let r = log
            .append("a", ExpectedVersion::Any, &[with_id(b"1", 1), with_id(b"2", 2)])
            .expect("retry any");
        assert_eq!(r, any1, "round {round}");
        let r = log
            .append(
                "a",
                ExpectedVersion::StreamExists,
                &[with_id(b"1", 1), with_id(b"2", 2)],
            )
            .expect("retry stream-exists");
        assert_eq!(r, any1);
        let r = log
            .append("a", ExpectedVersion::Exact(1), &[with_id(b"3", 3)])
            .expect("retry exact");
        assert_eq!(r, exact);
        let r = log
            .append("b", ExpectedVersion::NoStream, &[with_id(b"4", 4)])
            .expect("retry nostream");
        assert_eq!(r, nostream);
        let e = log
            .append("a", ExpectedVersion::Any, &[with_id(b"1", 1), with_id(b"9", 9)])
            .expect_err("half a retry");
        assert!(matches!(e, Error::IdempotencyConflict { .. }), "{e}");
        assert_eq!(log.next_position(), before, "the retries wrote nothing");
        log.close().expect("close");
    }
    assert_eq!(support::read_log(dir.path()).len(), 5);
}

/// The window after a reopen is the last `idempotency_window` events: an id
/// older than that is not recognised (documented bound), one inside it is.
#[test]
fn the_window_rebuilt_after_reopen_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path()).expect("open");
        log.append("a", ExpectedVersion::Any, &[with_id(b"old", 100)])
            .expect("old");
        for _ in 0..3 {
            log.append("n", ExpectedVersion::Any, &[ev(b"n")]).expect("noise");
        }
        log.append("a", ExpectedVersion::Any, &[with_id(b"new", 101)])
            .expect("new");
        log.close().expect("close");
    }
    let log = Log::open_with(dir.path(), Options::default().idempotency_window(3)).expect("reopen");
    let r = log
        .append("a", ExpectedVersion::Any, &[with_id(b"new", 101)])
        .expect("inside the window");
    assert_eq!((r.first_position, r.stream_version), (4, 1));
    assert_eq!(log.next_position(), 5);
    let r = log
        .append("a", ExpectedVersion::Any, &[with_id(b"old", 100)])
        .expect("outside the window: appended again");
    assert_eq!(r.first_position, 5);
    log.close().expect("close");
}

// ---------------------------------------------------------------- defect 20

#[test]
fn deleting_or_replacing_the_lock_file_lets_no_second_writer_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Log::open(dir.path()).expect("open");
    a.append("s", ExpectedVersion::Any, &[ev(b"a0")]).expect("append");
    fs::remove_file(dir.path().join(LOCK_FILE)).expect("rm annal.lock");
    let e = Log::open(dir.path()).expect_err("a second writer");
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    // Replaced by a fresh file: still locked.
    fs::write(dir.path().join(LOCK_FILE), b"").expect("new lock file");
    let e = Log::open(dir.path()).expect_err("a second writer");
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    // The first writer keeps working, and nothing it acknowledged is lost.
    a.append("s", ExpectedVersion::Exact(0), &[ev(b"a1")]).expect("append");
    a.close().expect("close");
    let b = Log::open(dir.path()).expect("free once closed");
    b.append("s", ExpectedVersion::Exact(1), &[ev(b"b2")]).expect("append");
    b.close().expect("close");
    let p: Vec<Vec<u8>> = support::read_log(dir.path()).into_iter().map(|r| r.payload).collect();
    assert_eq!(p, [b"a0".to_vec(), b"a1".to_vec(), b"b2".to_vec()]);
}

// ---------------------------------------------------------------- defect 25

fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                fs::read(&p).expect("read"),
            )
        })
        .collect()
}

#[test]
fn a_log_missing_its_first_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    victim_log(dir.path());
    let first = segments(dir.path())[0].clone();
    assert!(first.ends_with("00000000000000000000.seg"));
    fs::remove_file(&first).expect("rm the first segment");
    let _ = fs::remove_file(first.with_extension("idx"));
    let before = listing(dir.path());
    let e = Log::open_with(dir.path(), Options::default().segment_size(4096)).expect_err("refused");
    match &e {
        Error::Corrupt { path, detail, .. } => {
            assert_eq!(path, &first, "{e}");
            assert!(detail.contains("missing"), "{e}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(listing(dir.path()), before, "nothing was modified");
    // As the reader does.
    let reader = annal::Reader::open(dir.path()).expect("reader");
    assert!(reader.view().is_err());
}

// ---------------------------------------------------------------- defect 26

/// A seam whose gate, while closed, holds the sealer in the creation of
/// every index temp file.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn release(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }
}

/// Opens the gate when dropped, so that a failing test does not leave the
/// sealer (and the `close` that joins it) waiting forever.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[derive(Debug, Clone)]
struct GateIo(Arc<Gate>);

impl Io for GateIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        if path.to_string_lossy().ends_with(".idx.tmp") {
            let mut open = self.0.open.lock().expect("lock");
            while !*open {
                open = self.0.cv.wait(open).expect("wait");
            }
        }
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

#[test]
fn appends_wait_for_the_sealer_at_the_bound_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let opts = Options::default().segment_size(4096).io(Arc::new(GateIo(gate.clone())));
    let log = Arc::new(Log::open_with(dir.path(), opts).expect("open"));
    // Declared after the log: dropped (the gate opened) before it.
    let _release = OpenOnDrop(gate.clone());
    let pad = vec![b'x'; 1500];
    // Every roll up to the bound: the appends return although the sealer
    // indexes nothing.
    let mut appended = 0u64;
    while log.sealer_backlog().0 < 4 {
        log.append("s", ExpectedVersion::Any, &[ev(&pad)]).expect("append");
        appended += 1;
        assert!(appended < 100, "the backlog never grew");
    }
    assert_eq!(log.sealer_backlog(), (4, 0));
    // The next roll waits.
    let position = log.next_position();
    let l = log.clone();
    let blocked = std::thread::spawn(move || {
        let pad = vec![b'y'; 1500];
        let mut last = None;
        for _ in 0..3 {
            last = Some(
                l.append("s", ExpectedVersion::Any, &[ev(&pad)])
                    .expect("append after the wait"),
            );
        }
        last.expect("appended")
    });
    let start = Instant::now();
    while log.sealer_backlog().1 == 0 {
        assert!(start.elapsed() < DEADLINE, "no append waited for the sealer");
        assert!(
            !blocked.is_finished(),
            "three appends rolled past the bound without waiting"
        );
        std::thread::yield_now();
    }
    assert_eq!(log.sealer_backlog(), (4, 1), "waits at the bound");
    assert!(!blocked.is_finished());
    assert!(log.next_position() <= position + 1, "the waiting append queued nothing");
    // Released: the sealer catches up, the append goes on.
    gate.release();
    let r = blocked.join().expect("appender");
    assert!(r.last_position >= position);
    let log = Arc::into_inner(log).expect("sole owner");
    log.close().expect("close");
    let recs = support::read_log(dir.path());
    support::assert_contiguous(&recs);
    assert_eq!(recs.len() as u64, appended + 3);
    for seg in segments(dir.path()).iter().rev().skip(1) {
        assert!(seg.with_extension("idx").exists(), "{} is indexed", seg.display());
    }
}

// ---------------------------------------------------------------- defect 9

#[cfg(unix)]
#[test]
fn symlinked_or_world_writable_places_get_a_warning_and_are_never_followed() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    let real = root.path().join("real");
    let outside = root.path().join("outside");
    fs::create_dir(&real).expect("mkdir");
    fs::create_dir(&outside).expect("mkdir");
    Log::open(&real).expect("create").close().expect("close");
    // A symlinked log directory.
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let log = Log::open(&link).expect("open through a link");
    assert!(
        log.recovery().warnings.iter().any(|w| w.contains("symbolic link")),
        "{:?}",
        log.recovery().warnings
    );
    log.close().expect("close");
    // A world-writable log directory.
    fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).expect("chmod");
    let log = Log::open(&real).expect("open");
    assert!(
        log.warnings()
            .iter()
            .any(|w| w.contains("0777") && w.contains("writable by others")),
        "{:?}",
        log.warnings()
    );
    log.close().expect("close");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).expect("chmod");
    // A symlinked snapshots/: a warning; saves fail, loads skip, nothing
    // written, read or deleted in the folder it points to.
    let victim = outside.join(annal::snapshot_testing::file_name("s", 0));
    fs::write(&victim, b"not a snapshot of this log").expect("plant");
    std::os::unix::fs::symlink(&outside, real.join("snapshots")).expect("symlink");
    let log = Log::open(&real).expect("open");
    assert!(
        log.recovery()
            .warnings
            .iter()
            .any(|w| w.contains("snapshot folder") && w.contains("symbolic link")),
        "{:?}",
        log.recovery().warnings
    );
    log.close().expect("close");
    let snap = annal::Snapshot {
        stream: "s".into(),
        stream_version: 0,
        position: 0,
        schema_version: 1,
        payload: b"state".to_vec(),
        subject_keys: Vec::new(),
    };
    let e = annal::snapshot_testing::save(&real, Arc::new(StdIo), &snap, 1).expect_err("never through a link");
    assert!(e.to_string().contains("symlink"), "{e}");
    let (found, warnings) = annal::snapshot_testing::load(&real, "s", 1, None).expect("load");
    assert!(found.is_none());
    assert!(!warnings.is_empty());
    let outside_files: Vec<_> = fs::read_dir(&outside).expect("read").collect();
    assert_eq!(outside_files.len(), 1, "nothing written or deleted outside the log");
    assert_eq!(fs::read(&victim).expect("still there"), b"not a snapshot of this log");
}

// ---------------------------------------------------------------- defect 13

#[cfg(unix)]
#[test]
fn key_files_open_to_group_or_others_special_or_oversized_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain.key");
    ChainKey::generate().expect("key").write_file(&chain).expect("write");
    let signing = dir.path().join("signing.key");
    let sk = SigningKey::generate().expect("key");
    sk.write_file(&signing).expect("write");
    let public = dir.path().join("signing.pub");
    sk.public_key().write_file(&public).expect("write");
    ChainKey::from_file(&chain).expect("0600 is fine");
    SigningKey::from_file(&signing).expect("0600 is fine");
    PublicKey::from_file(&public).expect("a public key may be readable");
    for mode in [0o644, 0o666, 0o640, 0o604, 0o620] {
        fs::set_permissions(&chain, fs::Permissions::from_mode(mode)).expect("chmod");
        let e = ChainKey::from_file(&chain).expect_err("too open");
        let m = e.to_string();
        assert!(
            m.contains(&format!("{mode:04o}")) && m.contains("chmod 600") && m.contains("chain.key"),
            "{m}"
        );
        fs::set_permissions(&signing, fs::Permissions::from_mode(mode)).expect("chmod");
        assert!(SigningKey::from_file(&signing).is_err(), "signing key {mode:o}");
    }
    // Special files: refused at once, never read without bound.
    let zero = dir.path().join("zero.key");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let e = support::within(DEADLINE, "reading /dev/zero as a key", move || {
        ChainKey::from_file(&zero).expect_err("a device").to_string()
    });
    assert!(e.contains("device"), "{e}");
    let fifo = dir.path().join("fifo.key");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let e = support::within(DEADLINE, "reading a FIFO as a key", move || {
        ChainKey::from_file(&fifo).expect_err("a FIFO").to_string()
    });
    assert!(e.contains("FIFO"), "{e}");
    let big = dir.path().join("big.key");
    fs::write(&big, vec![b'a'; 1 << 20]).expect("write");
    fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).expect("chmod");
    let e = ChainKey::from_file(&big).expect_err("too long");
    assert!(e.to_string().contains("more than 128 bytes"), "{e}");
}

/// Defect 15 through the CLI, each call its own process: `annal append --id
/// U` three times stores one event ("Appending the same id again is a
/// no-op", as `append --help` says).
#[test]
fn the_cli_appending_the_same_id_three_times_stores_one_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let id = "0190a6f0-0000-7000-8000-000000000001";
    let mut outs = Vec::new();
    for _ in 0..3 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
            .arg("append")
            .arg(&log_dir)
            .args([
                "--stream", "order-1", "--type", "Paid", "--id", id, "--data", "{}", "--json",
            ])
            .output()
            .expect("run annal");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        outs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(
        outs.iter().all(|o| *o == outs[0]),
        "the same result each time: {outs:?}"
    );
    let recs = support::read_log(&log_dir);
    assert_eq!(recs.len(), 1, "one event stored");
}

/// The real file system, but a temporary file is gone by the time the
/// writer's recovery removes it: another process (a subscription's or a
/// projection's write) renamed it into place after the listing.
#[derive(Debug)]
struct TakenTempIo;

impl Io for TakenTempIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        if path.to_string_lossy().ends_with(".tmp") {
            let done = path.with_extension("done");
            fs::rename(path, &done)?;
        }
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

#[test]
fn a_temporary_file_another_process_renamed_after_the_listing_does_not_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.close().unwrap();
    fs::write(dir.path().join("annal.sub.x.0123456789abcdef.tmp"), b"theirs").unwrap();
    let log = Options::default().io(Arc::new(TakenTempIo)).open(dir.path()).unwrap();
    // Theirs, renamed by them, untouched.
    assert_eq!(
        fs::read(dir.path().join("annal.sub.x.0123456789abcdef.done")).unwrap(),
        b"theirs"
    );
    log.close().unwrap();
}
