//! Concurrency across processes (issue 8): what `reader_process.rs`,
//! `subscriptions.rs` and `writer_lock.rs` do not cover already.
//!
//! Those cover: a writer child followed by a `Reader` in the parent (Buffered,
//! Fsync, fast rolls, killed writer); a writer child followed by `Reader`
//! subscriptions in the parent and in one child (Buffered); a second writer
//! in the same process, threads racing to create a log, a child locked out
//! of a log the parent holds, a killed child releasing the lock, readers
//! needing no lock. Added here:
//!
//! * **Several reader processes against a writer in the parent**, with
//!   `Durability::Buffered` and with `Durability::Fsync`, segments of 256 KiB
//!   rolled every few dozen batches, and payloads of random size (up to
//!   48 KiB, so records span pages and segments fill unevenly). Each reader
//!   child runs two threads: one replays with `Reader` views (reading on from
//!   where it was, and every few views replaying everything from position 0
//!   again), one tails with a `Reader` subscription. Every record must verify
//!   from its own bytes (self-verifying payloads, `support::sv_payload`, on
//!   top of annal's CRC), positions must be contiguous without duplicates,
//!   stream versions contiguous, and every view must end at a batch boundary
//!   (no partial batch). Both threads run until the writer's end event and
//!   report a count and a digest of everything they saw, which must equal the
//!   writer's. A reader that dies (SIGBUS from a mapping, a panic) fails the
//!   test through its exit status.
//! * **Writer processes racing**: several child processes, released at the
//!   same instant, open the same new log: exactly one gets it, the others get
//!   `Error::Locked` at once; once the winner closes, a loser opens it.
//!
//! Environment: `ANNAL_CONC_MILLIS` (how long the writer appends, default
//! 1200), `ANNAL_TEST_SEED` (printed).

mod common;
mod support;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use support::{ChildProc, Rng, SV_HEADER, SvHeader, child_say, payload_digest, sv_check, sv_payload};

const CHILD_FN: &str = "conc_child";
const ENV_MODE: &str = "ANNAL_CONC_MODE";
const ENV_DIR: &str = "ANNAL_CONC_DIR";
const SEGMENT_SIZE: u64 = 256 << 10;
const END_STREAM: &str = "control-end";
const PATIENCE: Duration = Duration::from_secs(60);

/// The tests of this file run one at a time (see `writer_lock.rs`: a child
/// spawned by one test shares the parent's lock descriptions until its exec).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Digest of one record, combined in position order by [`Digest`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, position: u64, stream: &str, version: u64, payload: &[u8]) {
        let h = payload_digest([
            position.to_le_bytes().as_slice(),
            stream.as_bytes(),
            version.to_le_bytes().as_slice(),
            payload,
        ]);
        self.sum = self.sum.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(h);
        self.count += 1;
    }
}

/// What a reader checks of every record it is given, in position order.
#[derive(Default)]
struct Follower {
    next: u64,
    versions: HashMap<String, u64>,
    /// The batch being read: (key, next index, count).
    open: Option<(u64, u32, u32)>,
    digest: Digest,
    ended: bool,
}

impl Follower {
    fn take(&mut self, who: &str, position: u64, stream: &str, version: u64, payload: &[u8]) {
        assert!(!self.ended, "{who}: an event after the end event");
        assert_eq!(position, self.next, "{who}: positions contiguous, no duplicate");
        let want = self.versions.get(stream).map_or(0, |v| v + 1);
        assert_eq!(version, want, "{who}: position {position}: version of stream {stream}");
        self.versions.insert(stream.to_owned(), version);
        self.digest.add(position, stream, version, payload);
        self.next += 1;
        if stream == END_STREAM {
            assert!(self.open.is_none(), "{who}: the end event inside a batch");
            self.ended = true;
            return;
        }
        let h = sv_check(payload).unwrap_or_else(|e| panic!("{who}: position {position}: corrupted payload: {e}"));
        match self.open {
            Some((key, index, count)) => assert_eq!(
                (h.key, h.index, h.count),
                (key, index, count),
                "{who}: position {position}: the batch continues"
            ),
            None => assert_eq!(h.index, 0, "{who}: position {position}: a batch starts at index 0"),
        }
        self.open = (h.index + 1 < h.count).then_some((h.key, h.index + 1, h.count));
    }
}

/// Replay with `Reader` views until the end event: `REPLAY count sum views
/// full_replays`.
fn replay(dir: &Path) -> String {
    let reader = Reader::open(dir).expect("child Reader::open");
    let mut f = Follower::default();
    let (mut views, mut full) = (0u64, 0u64);
    let start = Instant::now();
    while !f.ended {
        assert!(start.elapsed() < PATIENCE, "replay: no end event");
        let view = reader.view().unwrap_or_else(|e| panic!("replay: view {views}: {e}"));
        views += 1;
        if views.is_multiple_of(7) {
            // Everything again from 0: the same records, the same bytes.
            let mut again = Follower::default();
            for r in view.read_all(0) {
                let r = r.unwrap_or_else(|e| panic!("replay: full replay {full}: {e}"));
                again.take("full replay", r.position(), r.stream(), r.stream_version(), r.payload());
            }
            assert!(again.open.is_none(), "replay: a view ends inside a batch");
            assert!(again.next >= f.next, "replay: a newer view has fewer events");
            full += 1;
        }
        for r in view.read_all(f.next) {
            let r = r.unwrap_or_else(|e| panic!("replay: view {views}: {e}"));
            f.take("replay", r.position(), r.stream(), r.stream_version(), r.payload());
        }
        assert!(f.open.is_none(), "replay: view {views} ends inside a batch");
        assert_eq!(view.next_position(), f.next, "replay: LogView::next_position");
        std::thread::sleep(Duration::from_millis(1));
    }
    format!("REPLAY {} {} {views} {full}", f.digest.count, f.digest.sum)
}

/// Tail with a `Reader` subscription until the end event: `TAIL count sum`.
fn tail(dir: &Path) -> String {
    let reader = Reader::open(dir).expect("child Reader::open");
    let mut sub = reader.subscribe_all(0).poll_interval(Duration::from_millis(2));
    let mut f = Follower::default();
    while !f.ended {
        let r = sub
            .next_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("tail: read after {} events: {e}", f.next))
            .unwrap_or_else(|| panic!("tail: no event within {PATIENCE:?} after {}", f.next));
        f.take("tail", r.position, &r.stream, r.stream_version, &r.payload);
    }
    assert!(f.open.is_none());
    format!("TAIL {} {}", f.digest.count, f.digest.sum)
}

/// Child side: `reader` (replay and tail, report both); `race` (wait for a
/// line on stdin, try to open the log, report `OPENED ms` or `LOCKED ms`, and
/// hold a won log until stdin closes, then report `CLOSED`); `retry` (try to
/// open once, report `OPENED` or `LOCKED`).
#[test]
fn conc_child() {
    let (Ok(mode), Ok(dir)) = (std::env::var(ENV_MODE), std::env::var(ENV_DIR)) else {
        return;
    };
    let dir = Path::new(&dir);
    match mode.as_str() {
        "reader" => {
            child_say("STARTED");
            let (a, b) = std::thread::scope(|s| {
                let r = s.spawn(|| replay(dir));
                let t = s.spawn(|| tail(dir));
                (r.join().expect("replay thread"), t.join().expect("tail thread"))
            });
            child_say(&a);
            child_say(&b);
        }
        "race" => {
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            // Released when the parent writes a line.
            let _ = stdin.read_line(&mut line);
            let start = Instant::now();
            match Log::open(dir) {
                Ok(log) => {
                    log.append(
                        "winner",
                        ExpectedVersion::NoStream,
                        &[EventData::new("Won", std::process::id().to_string().into_bytes())],
                    )
                    .expect("the winner appends");
                    child_say(&format!("OPENED {}", start.elapsed().as_millis()));
                    // Hold the log until stdin closes.
                    let _ = stdin.read_line(&mut line);
                    log.close().expect("close");
                    child_say("CLOSED");
                }
                Err(Error::Locked { .. }) => child_say(&format!("LOCKED {}", start.elapsed().as_millis())),
                Err(e) => child_say(&format!("ERROR {e}")),
            }
        }
        "retry" => match Log::open(dir) {
            Ok(log) => {
                log.append(
                    "loser",
                    ExpectedVersion::NoStream,
                    &[EventData::new("Late", b"".as_slice())],
                )
                .expect("append");
                log.close().expect("close");
                child_say("OPENED");
            }
            Err(Error::Locked { .. }) => child_say("LOCKED"),
            Err(e) => child_say(&format!("ERROR {e}")),
        },
        other => panic!("unknown mode {other}"),
    }
}

fn write_and_follow(durability: Durability, readers: usize) {
    let _serial = serial();
    let seed = common::seed(&format!("concurrency {durability:?}"));
    let millis: u64 = std::env::var("ANNAL_CONC_MILLIS").map_or(1200, |v| v.parse().expect("ANNAL_CONC_MILLIS"));
    let mut rng = Rng::new(seed);
    let dir = common::scratch();
    let dir_s = dir.path().to_str().expect("utf-8 scratch dir").to_owned();
    let log = Log::open_with(
        dir.path(),
        Options::default().segment_size(SEGMENT_SIZE).durability(durability),
    )
    .expect("open");
    let mut children: Vec<ChildProc> = (0..readers)
        .map(|_| ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "reader"), (ENV_DIR, &dir_s)]))
        .collect();
    for c in &mut children {
        assert_eq!(c.line(PATIENCE).as_deref(), Some("STARTED"));
    }

    let mut digest = Digest::default();
    let mut batches = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(millis) {
        let stream = format!("acct-{}", rng.range(0, 5));
        let key = rng.next_u64();
        let count = rng.range(1, 12) as u32;
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|index| {
                let len = match rng.range(0, 30) {
                    0 => rng.range(8 << 10, 48 << 10),
                    1..=5 => rng.range(1024, 6000),
                    _ => rng.range(0, 200),
                } as usize;
                sv_payload(
                    SvHeader {
                        key,
                        index,
                        count,
                        flags: 0,
                    },
                    SV_HEADER + len,
                )
            })
            .collect();
        let evs: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("C", p.as_slice())).collect();
        let r = log.append(&stream, ExpectedVersion::Any, &evs).expect("append");
        let first_version = r.stream_version + 1 - u64::from(count);
        for (i, p) in payloads.iter().enumerate() {
            digest.add(r.first_position + i as u64, &stream, first_version + i as u64, p);
        }
        batches += 1;
        if batches.is_multiple_of(16) {
            // Let the readers catch up now and then, so that they read both
            // at the tail and behind it.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let r = log
        .append(
            END_STREAM,
            ExpectedVersion::NoStream,
            &[EventData::new("End", b"".as_slice())],
        )
        .expect("end event");
    digest.add(r.first_position, END_STREAM, 0, b"");
    let segments = log.view().expect("view").segment_count();
    log.close().expect("close");
    println!(
        "{durability:?}: {batches} batches, {} events, {segments} segments in {:.1?}",
        digest.count,
        start.elapsed()
    );
    assert!(segments >= 4, "the writer must roll segments (got {segments})");

    for (i, c) in children.iter_mut().enumerate() {
        let mut got: Vec<String> = Vec::new();
        while got.len() < 2 {
            match c.line(PATIENCE) {
                Some(l) => got.push(l),
                None => break,
            }
        }
        let status = c.wait(PATIENCE);
        assert!(
            status.success(),
            "{durability:?}: reader process {i} failed ({status}; a signal means it crashed, SIGBUS included); it said {got:?}"
        );
        let replay = got.iter().find(|l| l.starts_with("REPLAY ")).expect("REPLAY report");
        let tail = got.iter().find(|l| l.starts_with("TAIL ")).expect("TAIL report");
        println!("{durability:?}: reader process {i}: {replay}; {tail}");
        let w: Vec<&str> = replay.split(' ').collect();
        assert_eq!(
            (w[1], w[2]),
            (digest.count.to_string().as_str(), digest.sum.to_string().as_str()),
            "reader {i}: the replay saw every event, exactly the writer's"
        );
        assert_eq!(
            tail.as_str(),
            format!("TAIL {} {}", digest.count, digest.sum),
            "reader {i}: the tail saw every event, exactly the writer's"
        );
    }
}

#[test]
fn reader_processes_follow_a_buffered_writer() {
    write_and_follow(Durability::Buffered, 2);
}

#[test]
fn reader_processes_follow_an_fsync_writer() {
    write_and_follow(Durability::Fsync, 2);
}

#[test]
fn writer_processes_racing_for_a_new_log_get_one_writer() {
    let _serial = serial();
    const PROCS: usize = 4;
    for round in 0..3 {
        let dir = common::scratch();
        let path = dir.path().join("log");
        let path_s = path.to_str().expect("utf-8 scratch dir").to_owned();
        let mut kids: Vec<ChildProc> = (0..PROCS)
            .map(|_| ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "race"), (ENV_DIR, &path_s)]))
            .collect();
        // Release them all at once.
        for k in &mut kids {
            use std::io::Write;
            let stdin = k.child.stdin.as_mut().expect("stdin");
            stdin.write_all(b"go\n").expect("release");
            stdin.flush().expect("flush");
        }
        let said: Vec<String> = kids.iter_mut().map(|k| k.line(PATIENCE).expect("report")).collect();
        let winners: Vec<usize> = (0..PROCS).filter(|&i| said[i].starts_with("OPENED")).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer: {said:?}");
        for (i, s) in said.iter().enumerate() {
            if i != winners[0] {
                assert!(
                    s.starts_with("LOCKED"),
                    "round {round}: the others are locked out: {said:?}"
                );
                let ms: u64 = s.split(' ').nth(1).and_then(|m| m.parse().ok()).expect("ms");
                assert!(ms < 5_000, "round {round}: Locked must come at once, took {ms} ms");
            }
        }
        // The losers have exited; the winner still holds the log.
        for (i, k) in kids.iter_mut().enumerate() {
            if i != winners[0] {
                assert!(k.wait(PATIENCE).success());
            }
        }
        let w = &mut kids[winners[0]];
        let mut retry = ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "retry"), (ENV_DIR, &path_s)]);
        let r = retry.line(PATIENCE).expect("retry report");
        assert_eq!(r, "LOCKED", "round {round}: while the winner holds it");
        assert!(retry.wait(PATIENCE).success());
        w.close_stdin();
        assert_eq!(w.line(PATIENCE).as_deref(), Some("CLOSED"));
        assert!(w.wait(PATIENCE).success());
        let mut retry = ChildProc::spawn(CHILD_FN, &[(ENV_MODE, "retry"), (ENV_DIR, &path_s)]);
        assert_eq!(
            retry.line(PATIENCE).as_deref(),
            Some("OPENED"),
            "round {round}: after the winner closed"
        );
        assert!(retry.wait(PATIENCE).success());
        let recs = support::read_log(&path);
        let streams: Vec<&str> = recs.iter().map(|r| r.stream.as_str()).collect();
        assert_eq!(streams, ["winner", "loser"], "round {round}");
    }
}
