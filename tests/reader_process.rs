//! Scenario: a writer in a child process, a `Reader` in this one (spec 7).
//!
//! The child (this test binary, running `child_writer`) appends batches of 1
//! to 50 events to a log with 64 KiB segments, so it rolls many segments, and
//! reports every acknowledged batch. Meanwhile the parent refreshes a `Reader`
//! in a tight loop and reads from where it left off. It checks that no read
//! fails, that positions are contiguous, that no record is delivered twice,
//! and that every view ends at a batch boundary (a batch is seen whole or not
//! at all). Once the child has exited, the parent has seen every batch the
//! child acknowledged, at the positions the child was told. This runs with
//! `Durability::Buffered`, with `Durability::Fsync` (fewer batches), and with
//! `Buffered` over a seam whose fsyncs do nothing (rolls every few hundred
//! microseconds, so the reader races with many more of them).
//!
//! The same with a writer killed (SIGKILL) mid-stream: the reader, a fresh
//! reader and a new writer (after recovery) all see every acknowledged batch,
//! whole, and the new writer appends after them.
//!
//! Each event's payload is three little-endian `u32`s: batch id, index in the
//! batch, batch size. Batches go to 7 streams in turn.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::io::{Io, IoFile, StdIo};
use annal::{Durability, EventData, ExpectedVersion, Log, LogView, Options, Reader};
use support::{ChildProc, Rng, child_say};

const CHILD_FN: &str = "child_writer";
const ENV_DIR: &str = "ANNAL_CHILD_DIR";
const ENV_MODE: &str = "ANNAL_CHILD_MODE";
const ENV_BATCHES: &str = "ANNAL_CHILD_BATCHES";
const ENV_MILLIS: &str = "ANNAL_CHILD_MILLIS";
const SEGMENT_SIZE: u64 = 64 << 10;
const STREAMS: u32 = 7;

fn encode(batch: u32, index: u32, size: u32) -> Vec<u8> {
    [batch, index, size].iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(p: &[u8]) -> (u32, u32, u32) {
    assert_eq!(p.len(), 12, "payload of 3 u32s");
    let w = |i: usize| u32::from_le_bytes(p[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    (w(0), w(1), w(2))
}

fn stream_of(batch: u32) -> String {
    format!("stream-{}", batch % STREAMS)
}

/// The real file system, except that `sync` and `sync_dir` do nothing: rolls
/// take microseconds instead of milliseconds, so the reader races with far
/// more of them. (Durability is not what this scenario checks.)
#[derive(Debug)]
struct NoSyncIo;

#[derive(Debug)]
struct NoSyncFile(Box<dyn IoFile>);

impl Io for NoSyncIo {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        Ok(Box::new(NoSyncFile(StdIo.create(path)?)))
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        Ok(Box::new(NoSyncFile(StdIo.open(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

impl IoFile for NoSyncFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_at(offset, buf)
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len)
    }
}

/// The writer process. Reports `READY`, one `ACK batch first last` per
/// acknowledged batch, and `DONE batches next_position`.
#[test]
fn child_writer() {
    let (Ok(dir), Ok(mode)) = (std::env::var(ENV_DIR), std::env::var(ENV_MODE)) else {
        return;
    };
    let max_batches: u32 = std::env::var(ENV_BATCHES).expect("batches").parse().expect("number");
    let millis: u64 = std::env::var(ENV_MILLIS).expect("millis").parse().expect("number");
    let opts = Options::default().segment_size(SEGMENT_SIZE);
    let opts = match mode.as_str() {
        "buffered" => opts.durability(Durability::Buffered),
        "fsync" => opts.durability(Durability::Fsync),
        "buffered-nosync" => opts.durability(Durability::Buffered).io(Arc::new(NoSyncIo)),
        other => panic!("unknown mode {other}"),
    };
    let log = Log::open_with(&dir, opts).expect("child open");
    child_say("READY");
    let mut rng = Rng::new(0xA11CE);
    let start = Instant::now();
    let mut batch = 0u32;
    while batch < max_batches && start.elapsed() < Duration::from_millis(millis) {
        let size = rng.range(1, 50) as u32;
        let payloads: Vec<Vec<u8>> = (0..size).map(|i| encode(batch, i, size)).collect();
        let evs: Vec<EventData<'_>> = payloads
            .iter()
            .map(|p| EventData::new("Batched", p.as_slice()))
            .collect();
        let r = log
            .append(&stream_of(batch), ExpectedVersion::Any, &evs)
            .expect("child append");
        child_say(&format!("ACK {batch} {} {}", r.first_position, r.last_position));
        batch += 1;
    }
    let next = log.next_position();
    log.close().expect("child close");
    child_say(&format!("DONE {batch} {next}"));
}

/// What the parent has read so far.
#[derive(Default, Clone)]
struct Seen {
    next_position: u64,
    /// (first, last) position of each batch, indexed by batch id.
    batches: Vec<(u64, u64)>,
    /// The batch being read: (id, next index, size).
    open: Option<(u32, u32, u32)>,
    views: u64,
    max_segments: usize,
}

impl Seen {
    /// Read `view` from where we left off and check everything it delivers.
    fn consume(&mut self, view: &LogView) {
        self.views += 1;
        self.max_segments = self.max_segments.max(view.segment_count());
        for rec in view.read_all(self.next_position) {
            let rec = rec.unwrap_or_else(|e| panic!("view {}: read failed: {e}", self.views));
            assert_eq!(
                rec.position(),
                self.next_position,
                "positions must be contiguous, without duplicates"
            );
            let (b, i, size) = decode(rec.payload());
            assert_eq!(rec.stream(), stream_of(b), "stream of batch {b}");
            match self.open {
                Some((ob, oi, osize)) => {
                    assert_eq!(
                        (b, i, size),
                        (ob, oi, osize),
                        "position {}: batch continues",
                        rec.position()
                    );
                }
                None => {
                    assert_eq!(
                        b as usize,
                        self.batches.len(),
                        "position {}: next batch",
                        rec.position()
                    );
                    assert_eq!(i, 0, "position {}: a batch starts at index 0", rec.position());
                    self.batches.push((rec.position(), rec.position()));
                }
            }
            self.batches[b as usize].1 = rec.position();
            self.open = if i + 1 == size { None } else { Some((b, i + 1, size)) };
            self.next_position += 1;
        }
        if let Some((b, i, size)) = self.open {
            panic!(
                "view {} ends inside batch {b}: {i} of its {size} events delivered",
                self.views
            );
        }
        assert_eq!(view.next_position(), self.next_position, "LogView::next_position");
    }
}

fn run(mode: &str, max_batches: u32, millis: u64) {
    follow(mode, max_batches, millis, None);
}

/// Run the child writer and follow it with a `Reader`; with `kill_after`, kill
/// the child (SIGKILL) mid-stream after that long.
fn follow(mode: &str, max_batches: u32, millis: u64, kill_after: Option<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_s = dir.path().to_str().expect("utf-8 temp dir");
    let (b, m) = (max_batches.to_string(), millis.to_string());
    let mut child = ChildProc::spawn(
        CHILD_FN,
        &[(ENV_DIR, dir_s), (ENV_MODE, mode), (ENV_BATCHES, &b), (ENV_MILLIS, &m)],
    );
    assert_eq!(child.line(Duration::from_secs(30)).as_deref(), Some("READY"));

    let reader = Reader::open(dir.path()).expect("Reader::open");
    let mut seen = Seen::default();
    let mut acks: Vec<(u32, u64, u64)> = Vec::new();
    let mut done: Option<(u32, u64)> = None;
    let start = Instant::now();
    loop {
        // Killed once the scenario has what it wants (several segment
        // rolls seen), not at a time alone: a loaded machine rolls slower.
        if kill_after.is_some_and(|k| start.elapsed() >= k && seen.max_segments > 2) {
            child.child.kill().expect("kill the writer");
        }
        let exited = child.child.try_wait().expect("try_wait").is_some();
        // Acknowledged before this view was taken: must be in it (Buffered:
        // written; Fsync: durable).
        while let Some(line) = child.try_line() {
            record(&line, &mut acks, &mut done);
        }
        let acked_before = acks.len();
        let view = reader
            .view()
            .unwrap_or_else(|e| panic!("{mode}: Reader::view failed after {} views: {e}", seen.views));
        seen.consume(&view);
        assert!(
            seen.batches.len() >= acked_before,
            "{mode}: batch {} was acknowledged before the view was taken, but the view ends at batch {}",
            acked_before - 1,
            seen.batches.len()
        );
        if exited {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the child runs too long");
        std::thread::yield_now();
    }
    let status = child.wait(Duration::from_secs(30));
    for line in child.rest() {
        record(&line, &mut acks, &mut done);
    }
    // One more refresh after the child closed the log (or died).
    let view = reader.view().expect("final view");
    seen.consume(&view);
    // Bytes the killed writer wrote past what its head announced: held back
    // by the reader (spec 7), recovered by the next writer.
    let held_back = view.unrecovered().is_some();
    drop(view);
    println!(
        "{mode}{}: {} batches acknowledged, {} batches / {} events seen, {} views, up to {} segments",
        if kill_after.is_some() { " (writer killed)" } else { "" },
        acks.len(),
        seen.batches.len(),
        seen.next_position,
        seen.views,
        seen.max_segments
    );
    for (b, first, last) in &acks {
        assert_eq!(
            seen.batches.get(*b as usize),
            Some(&(*first, *last)),
            "positions of batch {b}"
        );
    }
    assert!(seen.max_segments > 2, "the scenario wants several segment rolls");

    if kill_after.is_none() {
        assert!(status.success(), "child writer failed: {status}");
        let (batches, next) = done.expect("the child reports DONE");
        assert_eq!(acks.len() as u32, batches, "one ACK per batch");
        assert_eq!(
            seen.batches.len() as u32,
            batches,
            "the parent saw every acknowledged batch"
        );
        assert_eq!(seen.next_position, next, "and nothing else");
        return;
    }

    // The writer was killed: every batch it handed to the OS is there (a
    // batch written but not yet acknowledged may be too, whole). A new writer
    // recovers the log, and both it and a fresh reader see the same batches.
    assert!(!status.success(), "the writer was killed before it finished");
    assert!(done.is_none());
    let log = Log::open_with(dir.path(), Options::default().segment_size(SEGMENT_SIZE)).expect("reopen after the kill");
    println!("{mode}: recovery after the kill: {:?}", log.recovery());
    let mut recovered = Seen::default();
    recovered.consume(&log.view().expect("view"));
    // The new writer sees what the reader saw, and, if the reader held
    // bytes back, whole batches the writer wrote but never announced
    // (never acknowledged: every acknowledged batch was seen above).
    assert!(
        recovered.batches.starts_with(&seen.batches),
        "the new writer sees what the reader saw"
    );
    if recovered.batches.len() > seen.batches.len() {
        assert!(
            held_back,
            "batches past what the reader saw, which it did not say it held back"
        );
        println!(
            "{mode}: {} batch(es) written but not announced before the kill, recovered whole",
            recovered.batches.len() - seen.batches.len()
        );
        seen = recovered.clone();
    }
    let mut fresh = Seen::default();
    fresh.consume(&Reader::open(dir.path()).expect("Reader::open").view().expect("view"));
    assert_eq!(fresh.batches, seen.batches, "a fresh reader sees the same");
    // And the new writer appends after them.
    let b = seen.batches.len() as u32;
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| encode(b, i, 3)).collect();
    let evs: Vec<EventData<'_>> = payloads
        .iter()
        .map(|p| EventData::new("Batched", p.as_slice()))
        .collect();
    let r = log
        .append(&stream_of(b), ExpectedVersion::Any, &evs)
        .expect("append after recovery");
    assert_eq!(r.first_position, seen.next_position);
    log.close().expect("close");
    let mut last = Seen::default();
    last.consume(&reader.view().expect("refresh after the new writer"));
    assert_eq!(last.batches.len(), seen.batches.len() + 1);
}

fn record(line: &str, acks: &mut Vec<(u32, u64, u64)>, done: &mut Option<(u32, u64)>) {
    let w: Vec<&str> = line.split(' ').collect();
    let n = |i: usize| -> u64 { w[i].parse().unwrap_or_else(|_| panic!("bad child line {line:?}")) };
    match w[0] {
        "ACK" => {
            assert_eq!(n(1) as usize, acks.len(), "ACKs in batch order");
            acks.push((n(1) as u32, n(2), n(3)));
        }
        "DONE" => *done = Some((n(1) as u32, n(2))),
        _ => panic!("unexpected child line {line:?}"),
    }
}

#[test]
fn reader_follows_a_buffered_writer_process() {
    run("buffered", 4000, 2000);
}

#[test]
fn reader_follows_an_fsync_writer_process() {
    run("fsync", 400, 2000);
}

#[test]
fn reader_follows_a_writer_process_rolling_fast() {
    run("buffered-nosync", 12_000, 2000);
}

#[test]
fn reader_and_new_writer_see_every_batch_of_a_killed_writer() {
    follow("buffered", u32::MAX, 60_000, Some(Duration::from_millis(700)));
}
