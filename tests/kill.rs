//! The kill test (issue 8): a writer process is killed with SIGKILL at random
//! instants, again and again, and no acknowledged event may be lost, no torn
//! or corrupted event may be returned, and the log must stay checkable and
//! writable.
//!
//! Each round spawns this test binary as a child (`kill_child`). The child
//! opens the log with `Durability::Fsync` and 64 KiB segments (so rolls,
//! seals and index writes happen every few dozen batches) and appends batches
//! as fast as it can: a random stream among five, 1 to 20 events, payloads of
//! random size (a few up to 12 KiB), some events with application ids. After
//! each `append` returns `Ok` it prints one line: stream, first position,
//! count, the stream's new version and a digest of the payloads. Every
//! payload is self-verifying (`support::sv_payload`: a batch key, index,
//! count, length, then bytes generated from them), so any record can be
//! checked from its bytes alone, acknowledged or not. The batches of stream
//! `kill-0` name a subject (stored sealed, spec 3.8); after every 4 of them
//! the child erases that subject, prints `ERASED key ~` once the erasure
//! returned, and names a new one.
//!
//! The parent kills the child after a random delay: in about one round in
//! five just after the child announced that it is about to open the log (so
//! the kill lands in startup and in recovery of the previous round's kill), in
//! the others after 0 to 150 ms of appending (appends, rolls, seals and the
//! sealer thread's index writes). Then it:
//!
//! * runs `annal::check` on the killed log: no problem (warnings, such as a
//!   torn tail, allowed);
//! * reopens the log (counting torn tails cut and other recovery actions) and
//!   reads everything: `read_all` never fails, positions are contiguous,
//!   stream versions are contiguous, every record verifies from its bytes,
//!   every batch is whole (all its events, in order, in one stream);
//! * finds every batch ever acknowledged in this directory at its positions,
//!   with its stream versions and payload digest (an erased batch: whole,
//!   every record erased; and every record of a key whose `ERASED` line was
//!   printed reads as erased: no erased key comes back; keys erased without
//!   a line, an erasure the kill interrupted, are at most one per kill); unacknowledged batches (an
//!   append that completed but whose line was not printed) are at most one
//!   per kill;
//! * appends a batch itself (positions and versions continue), closes, and
//!   checks again: no problem and the audit chain verified with no broken
//!   link.
//!
//! The next round continues on the same directory (recovery after recovery),
//! except every few rounds, when it starts afresh.
//!
//! A second, deterministic scenario kills a writer whose sealer thread is
//! stuck (its index writes never finish) after several rolls: the crash
//! leaves sealed segments without an index and a stream table behind them,
//! which `check` must report as warnings only, and recovery must repair.
//!
//! Environment: `ANNAL_KILL_ROUNDS` (default 50), `ANNAL_TEST_SEED` (the seed
//! is printed).

mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annal::io::{Io, IoFile, StdIo};
use annal::{ChainStatus, CheckOptions, Direction, Durability, EventData, ExpectedVersion, Log, Options, Uuid};
use support::{ChildProc, Rng, SV_HEADER, SvHeader, child_say, payload_digest, sv_check, sv_payload};

const CHILD_FN: &str = "kill_child";
const ENV_DIR: &str = "ANNAL_KILL_DIR";
const ENV_SEED: &str = "ANNAL_KILL_CHILD_SEED";
const ENV_STALL: &str = "ANNAL_KILL_STALL_SEALER";
const SEGMENT_SIZE: u64 = 64 << 10;
const STREAMS: u64 = 5;
/// The stream whose batches name a subject.
const SEALED_STREAM: u64 = 0;
/// The child erases its subject after this many of its batches.
const ERASE_EVERY: u64 = 4;
/// Flag of a self-verifying payload: the event carries the id `event_id`.
const HAS_ID: u32 = 1;
/// The last word of every complete report line (a line cut by the kill lacks it).
const EOL: &str = "~";
const PATIENCE: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: a child spawned by one test
/// shares every open file description of this process until its exec, the
/// writer lock included, so a log another test just closed could look held
/// (`CheckReport::writer_active`) or locked for a moment (see
/// `writer_lock.rs`).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn opts() -> Options {
    Options::default()
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Fsync)
}

fn stream_name(i: u64) -> String {
    format!("kill-{i}")
}

fn event_id(key: u64, index: u32) -> Uuid {
    Uuid::from_u64_pair(key, u64::from(index))
}

/// A batch of `count` self-verifying payloads; the flags of each.
fn make_batch(rng: &mut Rng) -> (u64, Vec<Vec<u8>>) {
    let key = rng.next_u64();
    let count = rng.range(1, 20) as u32;
    let with_ids = rng.range(0, 3) == 0;
    let payloads = (0..count)
        .map(|index| {
            let len = if rng.range(0, 40) == 0 {
                rng.range(1024, 12 << 10)
            } else {
                rng.range(0, 300)
            } as usize;
            let flags = if with_ids { HAS_ID } else { 0 };
            sv_payload(
                SvHeader {
                    key,
                    index,
                    count,
                    flags,
                },
                SV_HEADER + len,
            )
        })
        .collect();
    (key, payloads)
}

fn events_of(key: u64, payloads: &[Vec<u8>]) -> Vec<EventData<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let e = EventData::new("Killed", p.as_slice());
            if sv_check(p).is_ok_and(|h| h.flags & HAS_ID != 0) {
                e.with_id(event_id(key, i as u32))
            } else {
                e
            }
        })
        .collect()
}

/// The writer process: `OPENING`, `READY next_position ~`, then one
/// `ACK stream first count stream_version digest ~` per acknowledged batch,
/// until it is killed.
#[test]
fn kill_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(ENV_DIR), std::env::var(ENV_SEED)) else {
        return;
    };
    let mut rng = Rng::new(seed.parse().expect("child seed"));
    let stall_mode = std::env::var(ENV_STALL).ok();
    let stall = stall_mode.is_some();
    child_say(&format!("OPENING {EOL}"));
    let opts = match stall_mode.as_deref() {
        None => opts(),
        Some(m) => opts().io(Arc::new(StallIdx { roll: m == "roll" })),
    };
    let log = Log::open_with(&dir, opts).expect("child open");
    child_say(&format!("READY {} {EOL}", log.next_position()));
    let start_segments = log.view().expect("child view").segment_count();
    let start = Instant::now();
    let (mut subject, mut sealed_batches) = (0u64, 0u64);
    // Killed long before this; the bound only keeps a lost child from running on.
    while start.elapsed() < Duration::from_secs(60) {
        let s = rng.range(0, STREAMS - 1);
        let (key, payloads) = make_batch(&mut rng);
        let mut events = events_of(key, &payloads);
        let who = format!("ks-{seed}-{subject}");
        if s == SEALED_STREAM {
            events = events.into_iter().map(|e| e.with_subject(who.as_str())).collect();
        }
        let r = log
            .append(&stream_name(s), ExpectedVersion::Any, &events)
            .expect("child append");
        let digest = payload_digest(payloads.iter().map(Vec::as_slice));
        child_say(&format!(
            "ACK {s} {} {} {} {digest} {EOL}",
            r.first_position,
            payloads.len(),
            r.stream_version
        ));
        if s == SEALED_STREAM {
            sealed_batches += 1;
            if sealed_batches.is_multiple_of(ERASE_EVERY) {
                let erased = log.erase_subject(&who).expect("child erase").expect("a live key");
                child_say(&format!("ERASED {} {EOL}", erased.0));
                subject += 1;
            }
        }
        // 4 rolls: 4 sealed segments unindexed, the back-pressure bound (the
        // next roll waits for the stalled sealer).
        if stall && log.view().expect("child view").segment_count() >= start_segments + 4 {
            child_say(&format!("ROLLED {EOL}"));
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// `StdIo`, except that writing an index file (its temp file) never finishes:
/// the sealer thread creates the temp file and then hangs. With `roll`, the
/// header write of a new segment hangs too (the roll stops after creating
/// the file).
#[derive(Debug)]
struct StallIdx {
    roll: bool,
}

#[derive(Debug)]
struct StallSeg(Box<dyn IoFile>);

impl IoFile for StallSeg {
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if offset == 0 {
            std::thread::sleep(Duration::from_secs(3600));
        }
        self.0.write_at(offset, buf)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len)
    }
}

impl Io for StallIdx {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        let f = StdIo.create(path)?;
        let name = path.to_string_lossy();
        if name.ends_with(".idx.tmp") {
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Not the first segment, which the open creates.
        if self.roll && name.ends_with(".seg") && !name.ends_with(&format!("{:020}.seg", 0)) {
            return Ok(Box::new(StallSeg(f)));
        }
        Ok(f)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

/// A writer killed while its sealer thread lags several segments behind
/// (deterministic: the sealer is stuck in its first index write). `check`
/// reports the missing indexes and the stale stream table as warnings, not
/// problems (spec 17.4: a crash between sealing and indexing); recovery
/// rebuilds them and loses nothing.
#[test]
fn kill_while_the_sealer_lags_behind() {
    let _serial = serial();
    for round in 0..2u64 {
        let dir = common::scratch();
        let dir_s = dir.path().to_str().expect("utf-8 scratch dir").to_owned();
        let mut acked = Vec::new();
        if round == 1 {
            // An earlier life with indexes, so that the missing ones follow an
            // indexed segment.
            let log = Log::open_with(dir.path(), opts()).expect("open");
            let mut rng = Rng::new(99);
            while log.view().expect("view").segment_count() < 3 {
                let (key, payloads) = make_batch(&mut rng);
                let r = log
                    .append("early", ExpectedVersion::Any, &events_of(key, &payloads))
                    .expect("append");
                acked.push(Acked {
                    stream: "early".into(),
                    first: r.first_position,
                    count: payloads.len() as u64,
                    version: r.stream_version,
                    digest: payload_digest(payloads.iter().map(Vec::as_slice)),
                });
            }
            log.close().expect("close");
        }
        let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s), (ENV_SEED, "7"), (ENV_STALL, "1")]);
        loop {
            let line = child.line(PATIENCE).expect("child line");
            if line.starts_with("ROLLED") {
                break;
            }
            if let Some(a) = parse_ack(&line) {
                acked.push(a);
            }
        }
        child.child.kill().expect("kill");
        child.wait(PATIENCE);
        for line in child.rest() {
            if let Some(a) = parse_ack(&line) {
                acked.push(a);
            }
        }
        let when = format!("sealer stalled, round {round}");
        let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
        let missing = report
            .warnings
            .iter()
            .filter(|w| w.detail.contains("index file is missing"))
            .count();
        println!(
            "{when}: {} acknowledged batches; check: {} problems, {} warnings ({missing} missing indexes)",
            acked.len(),
            report.problems.len(),
            report.warnings.len()
        );
        assert!(report.is_ok(), "{when}: {:#?}", report.problems);
        assert!(
            missing >= 3,
            "{when}: the sealer lagged several segments: {:#?}",
            report.warnings
        );
        let log = Log::open_with(dir.path(), opts()).expect("reopen");
        assert!(log.recovery().rebuilt_indexes.len() >= 3, "{:?}", log.recovery());
        let (got, _) = read_and_verify(&log, &when, &mut Erasures::default());
        assert_acked(&got, &acked, &when);
        log.close().expect("close");
        check_ok(dir.path(), &format!("{when}: after recovery"), true);
    }
}

/// An acknowledged batch.
#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    first: u64,
    count: u64,
    /// The stream's version after the batch.
    version: u64,
    digest: u64,
}

#[derive(Debug, Default)]
struct Stats {
    rounds: u64,
    kills: u64,
    kills_at_startup: u64,
    kills_before_ready: u64,
    kills_before_first_ack: u64,
    fresh_dirs: u64,
    acks: u64,
    ack_checks: u64,
    unacked_batches: u64,
    torn_tails: u64,
    bytes_cut: u64,
    reinitialized: u64,
    rebuilt_indexes: u64,
    rebuilt_tables: u64,
    temp_removed: u64,
    check_warnings: u64,
    max_segments: usize,
    max_events: u64,
    erasures: u64,
    erased_events: u64,
}

fn parse_ack(line: &str) -> Option<Acked> {
    let w: Vec<&str> = line.split(' ').collect();
    if w.len() != 7 || w[0] != "ACK" || w[6] != EOL {
        return None;
    }
    let n = |i: usize| w[i].parse::<u64>().ok();
    Some(Acked {
        stream: stream_name(n(1)?),
        first: n(2)?,
        count: n(3)?,
        version: n(4)?,
        digest: n(5)?,
    })
}

/// `annal::check` finds no problem; returns the report's warning count.
fn check_ok(dir: &Path, when: &str, expect_verified_chain: bool) -> u64 {
    let report = annal::check(dir, CheckOptions::default()).unwrap_or_else(|e| panic!("{when}: check failed: {e}"));
    assert!(
        report.is_ok(),
        "{when}: check found problems: {:#?}\nwarnings: {:#?}",
        report.problems,
        report.warnings
    );
    assert!(!report.writer_active, "{when}: no writer is running");
    match &report.chain {
        ChainStatus::Verified { broken: 0, .. } => {}
        ChainStatus::Verified { .. } | ChainStatus::Absent | ChainStatus::NotVerified { .. }
            if expect_verified_chain =>
        {
            panic!("{when}: audit chain {}", report.chain)
        }
        _ => {}
    }
    report.warnings.len() as u64
}

/// A record as read back.
struct Got {
    stream: String,
    version: u64,
    /// `None` for an erased record (no payload left to check).
    header: Option<SvHeader>,
    payload: Vec<u8>,
    /// The key of the record's subject, and whether it reads as erased.
    key: Option<u64>,
    erased: bool,
}

/// The subject keys the child said it erased (`ERASED key` lines), and the
/// erased keys found without such a line (an erasure a kill interrupted).
#[derive(Debug, Default)]
struct Erasures {
    said: std::collections::HashSet<u64>,
    unsaid: std::collections::HashSet<u64>,
}

/// Read the whole log and check everything that holds without knowing what
/// was acknowledged; returns the records and the number of batches.
fn read_and_verify(log: &Log, when: &str, erasures: &mut Erasures) -> (Vec<Got>, u64) {
    let view = log.view().expect("view");
    let mut out: Vec<Got> = Vec::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut batches = 0u64;
    for r in view.read_all(0) {
        let r = r.unwrap_or_else(|e| panic!("{when}: read_all failed after {} records: {e}", out.len()));
        let pos = r.position();
        assert_eq!(pos, out.len() as u64, "{when}: positions are not contiguous");
        let want = versions.get(r.stream()).map_or(0, |v| v + 1);
        assert_eq!(
            r.stream_version(),
            want,
            "{when}: position {pos}: stream {} version",
            r.stream()
        );
        versions.insert(r.stream().to_owned(), want);
        let key = r.subject_key().map(|k| k.0);
        assert!(
            key.is_none() || r.stream() == stream_name(SEALED_STREAM),
            "{when}: position {pos}: sealed, outside the subjects' stream"
        );
        let u = view
            .unseal(r)
            .unwrap_or_else(|e| panic!("{when}: position {pos}: unseal: {e}"));
        if let Some(k) = key {
            assert!(
                u.is_erased() || !erasures.said.contains(&k),
                "{when}: position {pos}: key {k} was erased, and came back"
            );
        }
        if u.is_erased() {
            let k = key.unwrap_or_default();
            if !erasures.said.contains(&k) {
                erasures.unsaid.insert(k);
            }
            // An erased batch is whole too: the next record starts one.
            if let Some(prev) = out.last().and_then(|g| g.header.filter(|_| !g.erased)) {
                assert_eq!(
                    prev.index + 1,
                    prev.count,
                    "{when}: position {pos}: erased inside a batch"
                );
            }
            out.push(Got {
                stream: r.stream().to_owned(),
                version: r.stream_version(),
                header: None,
                payload: Vec::new(),
                key,
                erased: true,
            });
            continue;
        }
        let r = u.record();
        let header = sv_check(r.payload()).unwrap_or_else(|e| panic!("{when}: position {pos}: corrupted payload: {e}"));
        if header.flags & HAS_ID != 0 {
            assert_eq!(
                r.event_id(),
                event_id(header.key, header.index),
                "{when}: position {pos}: event id"
            );
        }
        // Batches are whole: index 0 starts one, the next indexes continue it
        // in the same stream, and the last index ends it.
        if header.index == 0 {
            if let Some(prev) = out.last().and_then(|g| g.header) {
                assert_eq!(
                    prev.index + 1,
                    prev.count,
                    "{when}: position {pos}: a new batch starts while batch {prev:?} is incomplete"
                );
            }
            batches += 1;
        } else {
            let prev = out
                .last()
                .unwrap_or_else(|| panic!("{when}: position 0 is event {} of a batch", header.index));
            let ph = prev.header.unwrap_or_else(|| {
                panic!(
                    "{when}: position {pos}: event {} of a batch after an erased record",
                    header.index
                )
            });
            assert_eq!(
                (ph.key, ph.index + 1, ph.count, prev.stream.as_str()),
                (header.key, header.index, header.count, r.stream()),
                "{when}: position {pos}: the batch does not continue"
            );
        }
        out.push(Got {
            stream: r.stream().to_owned(),
            version: r.stream_version(),
            header: Some(header),
            payload: r.payload().to_vec(),
            key,
            erased: false,
        });
    }
    if let Some(last) = out.last().and_then(|g| g.header) {
        assert_eq!(
            last.index + 1,
            last.count,
            "{when}: the log ends inside a batch: {last:?}"
        );
    }
    assert_eq!(view.next_position(), out.len() as u64, "{when}: next_position");
    // Reads by stream (through the indexes and the stream table, which
    // recovery may just have rebuilt) agree with the full read, both ways,
    // and the writer knows each stream's version.
    for (stream, last) in &versions {
        let want: Vec<u64> = (0..out.len() as u64)
            .filter(|&p| out[p as usize].stream == *stream)
            .collect();
        for dir in [Direction::Forward, Direction::Backward] {
            let mut got: Vec<u64> = view
                .read_stream(
                    stream,
                    if dir == Direction::Forward { 0 } else { u64::MAX },
                    dir,
                    u64::MAX,
                )
                .map(|r| {
                    r.map(|r| r.position())
                        .unwrap_or_else(|e| panic!("{when}: read_stream({stream}, {dir:?}): {e}"))
                })
                .collect();
            if dir == Direction::Backward {
                got.reverse();
            }
            assert_eq!(got, want, "{when}: read_stream({stream}, {dir:?})");
        }
        assert_eq!(
            log.stream_version(stream).expect("stream_version"),
            Some(*last),
            "{when}: Log::stream_version({stream})"
        );
    }
    (out, batches)
}

/// Every acknowledged batch is there, whole, as acknowledged.
fn assert_acked(got: &[Got], acked: &[Acked], when: &str) {
    for a in acked {
        let end = a.first + a.count;
        assert!(
            end <= got.len() as u64,
            "{when}: acknowledged batch {a:?} is missing: the log has {} events",
            got.len()
        );
        let recs = &got[a.first as usize..end as usize];
        if recs[0].erased {
            // Erased: the batch is whole (one subject's key for all of it),
            // its envelope as acknowledged.
            for (i, r) in recs.iter().enumerate() {
                assert!(
                    r.erased && r.key == recs[0].key,
                    "{when}: {a:?}: event {i} of an erased batch"
                );
                assert_eq!(r.stream, a.stream, "{when}: {a:?}: stream of event {i}");
                assert_eq!(
                    r.version,
                    a.version + 1 - a.count + i as u64,
                    "{when}: {a:?}: version of event {i}"
                );
            }
            continue;
        }
        let h0 = recs[0].header.unwrap_or_else(|| panic!("{when}: {a:?}: no header"));
        assert_eq!(h0.index, 0, "{when}: {a:?} does not start a batch");
        assert_eq!(u64::from(h0.count), a.count, "{when}: {a:?}: batch size");
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.stream, a.stream, "{when}: {a:?}: stream of event {i}");
            assert_eq!(
                r.version,
                a.version + 1 - a.count + i as u64,
                "{when}: {a:?}: version of event {i}"
            );
        }
        assert_eq!(
            payload_digest(recs.iter().map(|r| r.payload.as_slice())),
            a.digest,
            "{when}: {a:?}: payload digest"
        );
    }
}

#[test]
fn killed_writers_lose_no_acknowledged_event() {
    let _serial = serial();
    let seed = common::seed("kill");
    let rounds: u64 = std::env::var("ANNAL_KILL_ROUNDS").map_or(50, |v| v.parse().expect("ANNAL_KILL_ROUNDS"));
    let mut rng = Rng::new(seed);
    let mut st = Stats::default();
    let started = Instant::now();

    let mut dir = common::scratch();
    let mut acked: Vec<Acked> = Vec::new();
    let mut erasures = Erasures::default();
    let mut kills_here = 0u64;
    let mut unacked_here = 0u64;
    for round in 0..rounds {
        st.rounds += 1;
        if round > 0 && round % 4 == 0 {
            dir = common::scratch();
            acked.clear();
            erasures = Erasures::default();
            kills_here = 0;
            st.unacked_batches += std::mem::take(&mut unacked_here);
            st.fresh_dirs += 1;
        }
        let dir_s = dir.path().to_str().expect("utf-8 scratch dir").to_owned();
        let child_seed = rng.next_u64().to_string();
        let at_startup = round % 5 == 2 || rng.range(0, 9) == 0;
        let delay = if at_startup {
            Duration::from_micros(rng.range(0, 4000))
        } else {
            Duration::from_micros(rng.range(0, 60_000))
        };
        let when = format!("round {round} (seed {seed}, startup {at_startup}, delay {delay:?})");

        let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s), (ENV_SEED, &child_seed)]);
        let mut lines: Vec<String> = Vec::new();
        let first = child
            .line(PATIENCE)
            .unwrap_or_else(|| panic!("{when}: the child said nothing"));
        assert_eq!(first, format!("OPENING {EOL}"), "{when}");
        if !at_startup {
            let ready = child.line(PATIENCE).unwrap_or_else(|| panic!("{when}: no READY"));
            lines.push(ready);
        }
        std::thread::sleep(delay);
        if let Ok(Some(status)) = child.child.try_wait() {
            let rest = child.rest();
            panic!("{when}: the child exited on its own ({status}) before the kill; it said {rest:?}");
        }
        child.child.kill().expect("kill the child");
        st.kills += 1;
        kills_here += 1;
        if at_startup {
            st.kills_at_startup += 1;
        }
        let status = child.wait(PATIENCE);
        assert!(!status.success(), "{when}: the child was killed");
        lines.extend(child.rest());

        // What the child acknowledged (only complete lines; a line cut by the
        // kill can only be the last one).
        let mut ready = false;
        let mut round_acks = 0u64;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("READY ") && line.ends_with(EOL) {
                let next: u64 = line.split(' ').nth(1).and_then(|n| n.parse().ok()).expect("READY n");
                let known = acked.last().map_or(0, |a| a.first + a.count);
                assert!(
                    next >= known,
                    "{when}: the child opened at {next}, before acknowledged {known}"
                );
                ready = true;
                continue;
            }
            if let Some(k) = line
                .strip_prefix("ERASED ")
                .and_then(|l| l.strip_suffix(EOL))
                .and_then(|k| k.trim().parse::<u64>().ok())
            {
                erasures.said.insert(k);
                erasures.unsaid.remove(&k);
                st.erasures += 1;
                continue;
            }
            match parse_ack(line) {
                Some(a) => {
                    acked.push(a);
                    round_acks += 1;
                }
                None => assert_eq!(i + 1, lines.len(), "{when}: malformed child line {line:?}"),
            }
        }
        if !ready {
            st.kills_before_ready += 1;
        } else if round_acks == 0 {
            st.kills_before_first_ack += 1;
        }
        st.acks += round_acks;

        // What the kill left, kept if a check below fails.
        let image = common::fresh_copy(dir.path());
        let verified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            verify_round(
                dir.path(),
                &when,
                &mut acked,
                &mut erasures,
                kills_here,
                &mut rng,
                &mut st,
            )
        }));
        match verified {
            Ok(unacked) => unacked_here = unacked,
            Err(p) => {
                let kept = image.keep();
                eprintln!("{when}: the log as the kill left it is kept in {}", kept.display());
                std::panic::resume_unwind(p);
            }
        }
    }
    st.unacked_batches += unacked_here;
    print_stats(&st, seed, started.elapsed());
    assert!(st.acks > 0, "no batch was acknowledged at all");
}

/// Check the log a kill left in `dir`, recover it, append, check again.
/// Returns the number of batches in the log that nobody acknowledged.
fn verify_round(
    dir: &Path,
    when: &str,
    acked: &mut Vec<Acked>,
    erasures: &mut Erasures,
    kills_here: u64,
    rng: &mut Rng,
    st: &mut Stats,
) -> u64 {
    {
        // The killed log: check finds no problem. A kill before the first
        // segment was created leaves a directory that is not a log yet
        // (nothing acknowledged): check says so, and the open below creates
        // the log.
        let has_segment = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".seg")))
            .unwrap_or(false);
        if has_segment {
            st.check_warnings += check_ok(dir, &format!("{when}: check after the kill"), false);
        } else {
            assert!(
                acked.is_empty(),
                "{when}: batches were acknowledged, but no segment exists"
            );
            assert!(
                matches!(
                    annal::check(dir, CheckOptions::default()),
                    Err(annal::Error::NotALog { .. })
                ),
                "{when}: a directory without segments is not a log"
            );
        }

        // Recovery.
        let log = Log::open_with(dir, opts()).unwrap_or_else(|e| panic!("{when}: reopen after the kill: {e}"));
        let rec = log.recovery().clone();
        if let Some(t) = &rec.truncated {
            st.torn_tails += 1;
            st.bytes_cut += t.bytes_removed;
        }
        st.reinitialized += u64::from(rec.reinitialized.is_some());
        st.rebuilt_indexes += rec.rebuilt_indexes.len() as u64;
        st.rebuilt_tables += u64::from(rec.rebuilt_stream_table);
        st.temp_removed += rec.removed_temp_files.len() as u64;

        let (got, batches) = read_and_verify(&log, when, erasures);
        assert_acked(&got, acked, when);
        st.ack_checks += acked.len() as u64;
        assert!(
            erasures.unsaid.len() as u64 <= kills_here,
            "{when}: {} keys erased without an ERASED line, after only {kills_here} kills",
            erasures.unsaid.len()
        );
        st.erased_events = st.erased_events.max(got.iter().filter(|g| g.erased).count() as u64);
        // Batches of erased records are not counted (their boundaries are
        // in their payloads, which are gone).
        let acked_whole = acked.iter().filter(|a| !got[a.first as usize].erased).count() as u64;
        let unacked = batches - acked_whole;
        assert!(
            unacked <= kills_here,
            "{when}: {unacked} batches nobody acknowledged, after only {kills_here} kills"
        );
        st.max_events = st.max_events.max(got.len() as u64);
        st.max_segments = st.max_segments.max(log.view().expect("view").segment_count());

        // The recovered log takes new appends, continuing positions, versions
        // and the audit chain.
        let s = rng.range(0, STREAMS - 1);
        let stream = stream_name(s);
        let last_version = got.iter().rev().find(|g| g.stream == stream).map(|g| g.version);
        let (key, payloads) = make_batch(rng);
        let mut events = events_of(key, &payloads);
        if s == SEALED_STREAM {
            events = events.into_iter().map(|e| e.with_subject("ks-parent")).collect();
        }
        let r = log
            .append(&stream, ExpectedVersion::Any, &events)
            .unwrap_or_else(|e| panic!("{when}: append after recovery: {e}"));
        assert_eq!(r.first_position, got.len() as u64, "{when}: positions continue");
        assert_eq!(
            r.stream_version,
            last_version.map_or(0, |v| v + 1) + payloads.len() as u64 - 1,
            "{when}: versions continue"
        );
        acked.push(Acked {
            stream,
            first: r.first_position,
            count: payloads.len() as u64,
            version: r.stream_version,
            digest: payload_digest(payloads.iter().map(Vec::as_slice)),
        });
        log.close().unwrap_or_else(|e| panic!("{when}: close: {e}"));
        check_ok(dir, &format!("{when}: check after recovery and an append"), true);
        let log = Log::open_with(dir, opts()).unwrap_or_else(|e| panic!("{when}: clean reopen: {e}"));
        assert!(
            log.recovery().truncated.is_none(),
            "{when}: a clean close leaves no tail"
        );
        let (got, _) = read_and_verify(&log, when, erasures);
        assert_acked(&got, acked, when);
        log.close().expect("close");
        unacked
    }
}

fn print_stats(st: &Stats, seed: u64, elapsed: Duration) {
    println!(
        "kill: {} rounds in {:.1?} (seed {seed}): {} kills ({} aimed at startup/recovery, {} before the log was open, \
         {} after open but before the first ack), {} fresh directories; {} batches acknowledged, {} acknowledged-batch \
         checks; {} unacknowledged batches found whole; recovery cut {} torn tails ({} bytes), reinitialized {} \
         segments, rebuilt {} indexes and {} stream tables, removed {} temp files; {} check warnings; up to {} \
         segments and {} events in a log",
        st.rounds,
        elapsed,
        st.kills,
        st.kills_at_startup,
        st.kills_before_ready,
        st.kills_before_first_ack,
        st.fresh_dirs,
        st.acks,
        st.ack_checks,
        st.unacked_batches,
        st.torn_tails,
        st.bytes_cut,
        st.reinitialized,
        st.rebuilt_indexes,
        st.rebuilt_tables,
        st.temp_removed,
        st.check_warnings,
        st.max_segments,
        st.max_events
    );
    println!(
        "kill: {} subjects erased (ERASED lines), up to {} events read as erased in one log",
        st.erasures, st.erased_events
    );
}

/// The state a kill leaves when it lands between a roll and the sealer's
/// index write (no index for the newest sealed segments, the stream table
/// behind or missing): recovery rebuilds the indexes and the stream table,
/// and the table it writes must be the one `check` derives from the
/// segments (it once recorded "no row" for the streams of the segments
/// whose index it had just rebuilt).
#[test]
fn recovery_after_a_kill_before_indexing_writes_a_correct_stream_table() {
    let _serial = serial();
    for (drop_table, drop_last) in [(true, 0usize), (true, 1), (true, 2), (false, 1), (false, 2)] {
        let dir = common::scratch();
        let log = Log::open_with(dir.path(), opts()).expect("open");
        let mut rng = Rng::new(5);
        let mut acked = Vec::new();
        while log.view().expect("view").segment_count() < 5 {
            let s = stream_name(rng.range(0, STREAMS - 1));
            let (key, payloads) = make_batch(&mut rng);
            let r = log
                .append(&s, ExpectedVersion::Any, &events_of(key, &payloads))
                .expect("append");
            acked.push(Acked {
                stream: s,
                first: r.first_position,
                count: payloads.len() as u64,
                version: r.stream_version,
                digest: payload_digest(payloads.iter().map(Vec::as_slice)),
            });
        }
        log.close().expect("close");
        // Undo the sealer's work for the newest sealed segments.
        let segs = common::segments(dir.path());
        let sealed = &segs[..segs.len() - 1];
        for seg in &sealed[sealed.len() - drop_last..] {
            std::fs::remove_file(seg.with_extension("idx")).expect("remove idx");
        }
        if drop_table {
            std::fs::remove_file(dir.path().join(annal::STREAM_TABLE_FILE)).expect("remove table");
        }
        let when = format!("table removed {drop_table}, {drop_last} indexes removed");
        let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
        assert!(
            report.is_ok(),
            "{when}: a crash state, not damage: {:#?}",
            report.problems
        );
        let log = Log::open_with(dir.path(), opts()).expect("reopen");
        assert_eq!(log.recovery().rebuilt_indexes.len(), drop_last, "{when}");
        let (got, _) = read_and_verify(&log, &when, &mut Erasures::default());
        assert_acked(&got, &acked, &when);
        log.close().expect("close");
        check_ok(dir.path(), &format!("{when}: after recovery"), true);
    }
}

/// A kill while a roll hangs after creating the next segment file (0 bytes)
/// and the sealer has not indexed the sealed one: recovery rewrites the new
/// segment's header, rebuilds the index and the stream table, and the table
/// must be correct (it once recorded "no row" here: recovery had already
/// looked the sealed segment up through an in-memory index).
#[test]
fn kill_during_a_roll_before_indexing() {
    let _serial = serial();
    let dir = common::scratch();
    let dir_s = dir.path().to_str().expect("utf-8 scratch dir").to_owned();
    let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s), (ENV_SEED, "11"), (ENV_STALL, "roll")]);
    let mut acked = Vec::new();
    let start = Instant::now();
    // The roll hangs, so the appends stop: wait for the second segment file.
    while common::segments(dir.path()).len() < 2 {
        while let Some(line) = child.try_line() {
            acked.extend(parse_ack(&line));
        }
        assert!(start.elapsed() < PATIENCE, "the child never rolled");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.child.kill().expect("kill");
    child.wait(PATIENCE);
    for line in child.rest() {
        acked.extend(parse_ack(&line));
    }
    let segs = common::segments(dir.path());
    assert_eq!(common::file_len(&segs[1]), 0, "the new segment has no header yet");
    let when = "kill during a roll";
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{when}: {:#?}", report.problems);
    let log = Log::open_with(dir.path(), opts()).expect("reopen");
    let rec = log.recovery().clone();
    assert!(rec.reinitialized.is_some() && rec.rebuilt_indexes.len() == 1, "{rec:?}");
    let (got, _) = read_and_verify(&log, when, &mut Erasures::default());
    assert_acked(&got, &acked, when);
    assert!(!acked.is_empty());
    log.close().expect("close");
    check_ok(dir.path(), &format!("{when}: after recovery"), true);
}
