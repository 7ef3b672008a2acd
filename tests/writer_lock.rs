//! Scenario: one writer per log, across threads and processes (spec 1:
//! `annal.lock`).
//!
//! * A second `Log::open` in the same process fails with `Error::Locked` and
//!   leaves the first writer working; once the first is closed or dropped,
//!   opening works.
//! * Threads racing to create a new log: exactly one opens it, the others get
//!   `Error::Locked`.
//! * A child process trying to open a log the parent holds gets
//!   `Error::Locked` at once (it does not block), and can open it once the
//!   parent closed it.
//! * A child holding the log locks the parent out; when the child is killed,
//!   the operating system releases the lock and the parent opens the log with
//!   every event the child acknowledged.
//! * Readers need no lock: `Reader::open` + `view` work, in this process and
//!   in a child, while the writer holds the log.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annal::{Error, EventData, ExpectedVersion, LOCK_FILE, Log, Options, Reader};
use support::{ChildProc, assert_contiguous, child_say, read_log, read_view};

const CHILD_FN: &str = "child_process";
const ENV_MODE: &str = "ANNAL_CHILD_MODE";
const ENV_DIR: &str = "ANNAL_CHILD_DIR";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time. `flock` locks belong to open
/// file descriptions, and a child spawned by any thread shares all of the
/// parent's descriptions between its fork and its exec: while one test spawns
/// a child, a log another test has just closed can still look locked to a
/// new `Log::open` for a moment (see the report of this suite).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn append_n(log: &Log, stream: &str, n: u64) {
    for i in 0..n {
        let payload = format!("{stream}-{i}");
        log.append(stream, ExpectedVersion::Any, &[EventData::new("E", payload.as_bytes())])
            .expect("append");
    }
}

fn assert_locked(res: Result<Log, Error>, dir: &Path) {
    match res {
        Err(Error::Locked { path }) => assert_eq!(path, dir.join(LOCK_FILE)),
        Err(e) => panic!("expected Error::Locked, got {e}"),
        Ok(_) => panic!("a second writer opened a locked log"),
    }
}

/// Child side of every cross-process test; does nothing unless a parent set
/// `ANNAL_CHILD_MODE`.
#[test]
fn child_process() {
    let (Ok(mode), Ok(dir)) = (std::env::var(ENV_MODE), std::env::var(ENV_DIR)) else {
        return;
    };
    let dir = Path::new(&dir);
    match mode.as_str() {
        // Try to open the log; report how it went and how long it took.
        "try-open" => {
            let start = Instant::now();
            let res = Log::open(dir);
            let ms = start.elapsed().as_millis();
            match res {
                Err(Error::Locked { path }) => child_say(&format!("LOCKED {ms} {}", path.display())),
                Err(e) => child_say(&format!("ERROR {ms} {e}")),
                Ok(log) => {
                    append_n(&log, "child", 3);
                    log.close().expect("child close");
                    child_say(&format!("OPENED {ms}"));
                }
            }
        }
        // Open the log, append, report, then hold it until stdin closes.
        "hold" => {
            let log = Log::open(dir).expect("child open");
            append_n(&log, "held", 10);
            child_say(&format!("HOLDING {}", log.next_position()));
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            log.close().expect("child close");
            child_say("RELEASED");
        }
        // Read the log without the lock; report the number of records.
        "read" => match Reader::open(dir).and_then(|r| r.view()) {
            Ok(view) => {
                let recs = read_view(&view, 0);
                assert_contiguous(&recs);
                child_say(&format!("READ {}", recs.len()));
            }
            Err(e) => child_say(&format!("ERROR {e}")),
        },
        other => panic!("unknown child mode {other}"),
    }
}

fn run_child(mode: &str, dir: &Path) -> String {
    let dir_s = dir.to_str().expect("utf-8 temp dir");
    let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_MODE, mode), (ENV_DIR, dir_s)]);
    let line = child.line(TIMEOUT).expect("child report");
    let status = child.wait(TIMEOUT);
    assert!(status.success(), "child {mode} exited with {status}");
    line
}

#[test]
fn second_open_in_process_is_locked_until_the_first_is_closed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    append_n(&log, "a", 5);

    assert_locked(Log::open(dir.path()), dir.path());
    // Locked again, from another thread, and with other options.
    let d = dir.path().to_owned();
    let res = std::thread::spawn(move || Log::open_with(&d, Options::default().segment_size(4096)))
        .join()
        .expect("thread");
    assert_locked(res, dir.path());

    // The failed attempts did not disturb the first writer.
    append_n(&log, "a", 5);
    assert_eq!(log.next_position(), 10);
    assert_eq!(read_view(&log.view().expect("view"), 0).len(), 10);

    // After close: opening works, and locks out others in turn.
    log.close().expect("close");
    let log = Log::open(dir.path()).expect("open after close");
    assert_locked(Log::open(dir.path()), dir.path());
    append_n(&log, "b", 5);
    // After drop (no close): opening works too.
    drop(log);
    let log = Log::open(dir.path()).expect("open after drop");
    assert_eq!(log.next_position(), 15);
    log.close().expect("close");
    assert_eq!(read_log(dir.path()).len(), 15);
}

#[test]
fn threads_racing_to_create_a_log_get_one_writer() {
    let _serial = serial();
    const THREADS: usize = 8;
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new-log");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let res = Log::open(&path);
                    if let Ok(log) = &res {
                        log.append(
                            "winner",
                            ExpectedVersion::NoStream,
                            &[EventData::new("Won", format!("{t}").as_bytes())],
                        )
                        .expect("the winner appends");
                    }
                    // Keep the winner open until every thread has tried.
                    barrier.wait();
                    res.map(|log| log.close())
                })
            })
            .collect();
        let mut winners = 0;
        for h in handles {
            match h.join().expect("thread") {
                Ok(close) => {
                    close.expect("close");
                    winners += 1;
                }
                Err(Error::Locked { .. }) => {}
                Err(e) => panic!("round {round}: a racing open failed with {e}, not Locked"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one writer");
        let recs = read_log(&path);
        assert_eq!(recs.len(), 1, "round {round}");
        assert_eq!(recs[0].stream, "winner");
    }
}

#[test]
fn child_process_is_locked_out_promptly_then_opens_after_close() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    append_n(&log, "parent", 4);

    let start = Instant::now();
    let line = run_child("try-open", dir.path());
    let elapsed = start.elapsed();
    let words: Vec<&str> = line.splitn(3, ' ').collect();
    assert_eq!(words[0], "LOCKED", "child reported {line:?}");
    let open_ms: u64 = words[1].parse().expect("ms");
    assert!(
        open_ms < 5_000,
        "Log::open took {open_ms} ms in the child: it must fail fast, not wait"
    );
    assert_eq!(Path::new(words[2]), dir.path().join(LOCK_FILE));
    println!("child locked out after {open_ms} ms (child process lifetime {elapsed:?})");

    // The parent still writes.
    append_n(&log, "parent", 4);
    log.close().expect("close");

    let line = run_child("try-open", dir.path());
    assert!(line.starts_with("OPENED"), "child reported {line:?}");
    let recs = read_log(dir.path());
    assert_contiguous(&recs);
    assert_eq!(recs.len(), 11);
    assert!(recs[8..].iter().all(|r| r.stream == "child"));
}

#[test]
fn killed_child_releases_the_lock() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_str().expect("utf-8 temp dir");

    // A child that closes cleanly.
    let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "hold"), (ENV_DIR, dir_s)]);
    assert_eq!(child.line(TIMEOUT).as_deref(), Some("HOLDING 10"));
    assert_locked(Log::open(dir.path()), dir.path());
    child.close_stdin();
    assert_eq!(child.line(TIMEOUT).as_deref(), Some("RELEASED"));
    assert!(child.wait(TIMEOUT).success());
    let log = Log::open(dir.path()).expect("open after the child closed");
    assert_eq!(log.next_position(), 10);
    log.close().expect("close");

    // A child that is killed while it holds the log.
    let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "hold"), (ENV_DIR, dir_s)]);
    assert_eq!(child.line(TIMEOUT).as_deref(), Some("HOLDING 20"));
    assert_locked(Log::open(dir.path()), dir.path());
    child.child.kill().expect("kill child");
    let status = child.wait(TIMEOUT);
    assert!(!status.success(), "the child was killed");
    let log = Log::open(dir.path()).expect("open after the child was killed");
    assert_eq!(
        log.next_position(),
        20,
        "a killed writer loses nothing it handed to the OS"
    );
    let recs = read_view(&log.view().expect("view"), 0);
    assert_contiguous(&recs);
    assert!(recs.iter().all(|r| r.stream == "held"));
    log.close().expect("close");
}

#[test]
fn readers_need_no_lock() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().segment_size(8 << 10)).expect("open");
    append_n(&log, "r", 300);

    // In this process.
    let reader = Reader::open(dir.path()).expect("Reader::open while the writer holds the lock");
    let view = reader.view().expect("view");
    let recs = read_view(&view, 0);
    assert_contiguous(&recs);
    assert_eq!(recs.len(), 300);
    assert!(view.segment_count() > 1, "the test wants several segments");

    // In a child process.
    assert_eq!(run_child("read", dir.path()), "READ 300");

    // The writer is unaffected, and a refreshed view sees its new events.
    append_n(&log, "r", 50);
    assert_eq!(read_view(&reader.view().expect("refresh"), 300).len(), 50);
    assert_eq!(run_child("read", dir.path()), "READ 350");
    log.close().expect("close");
}
