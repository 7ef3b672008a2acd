//! Helpers shared by the concurrency and failure integration tests: owned
//! copies of records, checks of the log invariants, I/O seams that count,
//! fail or keep a "durable" image, and child processes running this very
//! test binary.
//!
//! Every test file uses only part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annal::io::{Io, IoFile, StdIo};
use annal::{AppendResult, EventData, LogView};

// ---------------------------------------------------------------------------
// Records and invariants
// ---------------------------------------------------------------------------

/// An owned copy of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub payload: Vec<u8>,
}

/// Every record of `view` from position `from` on; panics on the first `Err`.
pub fn read_view(view: &LogView, from: u64) -> Vec<Rec> {
    view.read_all(from)
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("read_all({from}) failed: {e}"));
            Rec {
                position: r.position(),
                stream: r.stream().to_owned(),
                version: r.stream_version(),
                event_type: r.event_type().to_owned(),
                payload: r.payload().to_vec(),
            }
        })
        .collect()
}

/// Open the log in `dir` for writing (plain `StdIo`), read every record, close.
/// Panics if the log does not open or a read fails.
pub fn read_log(dir: &Path) -> Vec<Rec> {
    let log = annal::Log::open_with(dir, annal::Options::default())
        .unwrap_or_else(|e| panic!("reopen {}: {e}", dir.display()));
    let recs = read_view(&log.view().expect("view"), 0);
    log.close().expect("close after reading");
    recs
}

/// Positions are 0, 1, 2, ... (spec 11.1).
pub fn assert_contiguous(recs: &[Rec]) {
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.position, i as u64, "positions are not contiguous at index {i}: {r:?}");
    }
}

/// Within each stream, versions are 0, 1, 2, ... in position order (spec
/// 11.2). Returns each stream's last version.
pub fn assert_stream_versions(recs: &[Rec]) -> HashMap<String, u64> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in recs {
        let want = last.get(&r.stream).map_or(0, |v| v + 1);
        assert_eq!(
            r.version, want,
            "stream {:?}: expected version {want} at position {}, found {}",
            r.stream, r.position, r.version
        );
        last.insert(r.stream.clone(), r.version);
    }
    last
}

/// What an append that returned `Ok` reported (an [`AppendResult`], or what
/// a test found appended when the call reported a later failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_position: u64,
    pub last_position: u64,
    pub stream_version: u64,
}

impl From<AppendResult> for Appended {
    fn from(r: AppendResult) -> Appended {
        Appended {
            first_position: r.first_position,
            last_position: r.last_position,
            stream_version: r.stream_version,
        }
    }
}

/// An append that returned `Ok`, with what it appended.
#[derive(Debug, Clone)]
pub struct Ack {
    pub stream: String,
    pub result: Appended,
    pub payloads: Vec<Vec<u8>>,
}

impl Ack {
    pub fn new(stream: &str, result: impl Into<Appended>, payloads: Vec<Vec<u8>>) -> Ack {
        let result = result.into();
        assert_eq!(
            result.last_position - result.first_position + 1,
            payloads.len() as u64,
            "AppendResult {result:?} does not cover {} events",
            payloads.len()
        );
        Ack {
            stream: stream.to_owned(),
            result,
            payloads,
        }
    }

    pub fn first_version(&self) -> u64 {
        self.result.stream_version + 1 - self.payloads.len() as u64
    }
}

/// Every acknowledged batch is present, at its positions, in its stream, at
/// its versions, with its payloads. `recs` must be contiguous from 0.
pub fn assert_acks_present(recs: &[Rec], acks: &[Ack]) {
    for a in acks {
        for (i, payload) in a.payloads.iter().enumerate() {
            let pos = a.result.first_position + i as u64;
            let r = recs.get(pos as usize).unwrap_or_else(|| {
                panic!(
                    "acknowledged event at position {pos} of {a:?} is missing (the log has {} records)",
                    recs.len()
                )
            });
            assert_eq!(r.position, pos);
            assert_eq!(r.stream, a.stream, "stream of position {pos}");
            assert_eq!(r.version, a.first_version() + i as u64, "version of position {pos}");
            assert_eq!(&r.payload, payload, "payload of position {pos}");
        }
    }
}

/// `n` single-use events with the given payloads.
pub fn events<'a>(event_type: &'a str, payloads: &'a [Vec<u8>]) -> Vec<EventData<'a>> {
    payloads
        .iter()
        .map(|p| EventData::new(event_type, p.as_slice()))
        .collect()
}

/// A small deterministic PRNG (xorshift64*), enough to vary test inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The seed of a randomized test: `ANNAL_TEST_SEED` if set, else drawn from
/// the clock; printed, so that a failure can be run again.
pub fn test_seed() -> u64 {
    let seed = std::env::var("ANNAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("ANNAL_TEST_SEED={seed}");
    seed
}

// ---------------------------------------------------------------------------
// An I/O seam that counts calls and injects failures
// ---------------------------------------------------------------------------

/// Counters and failure switches shared by a [`TestIo`] and its files. A
/// switch makes every matching call fail while it is on.
#[derive(Debug, Default)]
pub struct Ctl {
    /// `write_at` on a segment file fails.
    pub fail_seg_write: AtomicBool,
    /// With `fail_seg_write`: write the first half of the buffer before failing.
    pub torn_write: AtomicBool,
    /// `sync` of a segment file fails.
    pub fail_seg_sync: AtomicBool,
    /// `sync` of a segment file whose last write ended with a seal frame fails
    /// (the fsync of the segment being sealed by a roll).
    pub fail_sealed_sync: AtomicBool,
    /// `sync` of a segment file created through this seam fails while it has
    /// never been synced (the fsync of the new segment's header in a roll).
    pub fail_new_seg_sync: AtomicBool,
    /// `create` of a segment file fails.
    pub fail_seg_create: AtomicBool,
    /// `write_at` on the head file (`annal.head`) fails.
    pub fail_head_write: AtomicBool,
    /// Failures injected so far.
    pub injected: AtomicU64,
    /// Successful `write_at` calls on segment files.
    pub seg_writes: AtomicU64,
    /// Successful `sync` calls on segment files.
    pub seg_syncs: AtomicU64,
    /// Successful `write_at` calls on any file.
    pub writes: AtomicU64,
    /// Successful `sync` calls on any file.
    pub syncs: AtomicU64,
    /// `create` calls.
    pub creates: AtomicU64,
    /// `sync_dir` calls.
    pub dir_syncs: AtomicU64,
}

impl Ctl {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }
    fn on(flag: &AtomicBool) -> bool {
        flag.load(Ordering::SeqCst)
    }
    fn injected(&self, what: &str, path: &Path) -> io::Error {
        self.injected.fetch_add(1, Ordering::SeqCst);
        io::Error::other(format!("injected {what} failure on {}", path.display()))
    }
}

/// [`StdIo`] with counters and failure switches ([`Ctl`]).
#[derive(Debug, Clone, Default)]
pub struct TestIo {
    pub ctl: Arc<Ctl>,
}

impl TestIo {
    pub fn new() -> TestIo {
        TestIo::default()
    }
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

#[derive(Debug)]
struct TestFile {
    inner: Box<dyn IoFile>,
    path: PathBuf,
    seg: bool,
    /// The head file `annal.head`.
    head: bool,
    /// Created through the seam and never synced since.
    fresh: AtomicBool,
    /// The last write ended with a seal frame (spec 3.4).
    sealed: AtomicBool,
    ctl: Arc<Ctl>,
}

/// Whether `buf` ends with a seal frame: a 72-byte frame header with magic
/// `BTCH`, `frame_len` 72 and kind 2 (spec 3.1, 3.4), or a version-3 seal
/// of 64 or 32 bytes: magic `F3` at 4, kind 2 at 6, `frame_len` its length
/// (spec 3.6).
fn ends_with_seal(buf: &[u8]) -> bool {
    let v2 = buf.len().checked_sub(72).is_some_and(|start| {
        let h = &buf[start..];
        h[0..4] == *b"BTCH" && h[8..16] == 72u64.to_le_bytes() && h[28] == 2
    });
    let v3 = |len: usize| {
        buf.len().checked_sub(len).is_some_and(|start| {
            let h = &buf[start..];
            h[4..6] == *b"F3" && h[6] == 2 && h[8..12] == (len as u32).to_le_bytes()
        })
    };
    v2 || v3(64) || v3(32)
}

impl Io for TestIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.ctl.creates.fetch_add(1, Ordering::SeqCst);
        let seg = is_segment(path);
        if seg && Ctl::on(&self.ctl.fail_seg_create) {
            return Err(self.ctl.injected("create", path));
        }
        let inner = StdIo.create(path)?;
        Ok(Box::new(TestFile {
            inner,
            path: path.to_owned(),
            seg,
            head: path.file_name().is_some_and(|n| n == annal::HEAD_FILE),
            fresh: AtomicBool::new(true),
            sealed: AtomicBool::new(false),
            ctl: self.ctl.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let inner = StdIo.open(path)?;
        Ok(Box::new(TestFile {
            inner,
            path: path.to_owned(),
            seg: is_segment(path),
            head: path.file_name().is_some_and(|n| n == annal::HEAD_FILE),
            fresh: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            ctl: self.ctl.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.ctl.dir_syncs.fetch_add(1, Ordering::SeqCst);
        StdIo.sync_dir(dir)
    }
}

impl IoFile for TestFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.seg && Ctl::on(&self.ctl.fail_seg_write) {
            if Ctl::on(&self.ctl.torn_write) {
                self.inner.write_at(offset, &buf[..buf.len() / 2])?;
            }
            return Err(self.ctl.injected("write", &self.path));
        }
        if self.head && Ctl::on(&self.ctl.fail_head_write) {
            return Err(self.ctl.injected("write", &self.path));
        }
        self.inner.write_at(offset, buf)?;
        self.sealed.store(ends_with_seal(buf), Ordering::SeqCst);
        self.ctl.writes.fetch_add(1, Ordering::SeqCst);
        if self.seg {
            self.ctl.seg_writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        if self.seg {
            let fail = Ctl::on(&self.ctl.fail_seg_sync)
                || (Ctl::on(&self.ctl.fail_sealed_sync) && self.sealed.load(Ordering::SeqCst))
                || (Ctl::on(&self.ctl.fail_new_seg_sync) && self.fresh.load(Ordering::SeqCst));
            if fail {
                return Err(self.ctl.injected("fsync", &self.path));
            }
        }
        self.inner.sync()?;
        self.fresh.store(false, Ordering::SeqCst);
        self.ctl.syncs.fetch_add(1, Ordering::SeqCst);
        if self.seg {
            self.ctl.seg_syncs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

// ---------------------------------------------------------------------------
// An I/O seam that keeps what a power cut would leave
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Shadow {
    written: Vec<u8>,
    durable: Vec<u8>,
}

/// [`StdIo`] that also keeps, for every file it creates or opens, a copy of
/// the bytes written and of the bytes made durable (copied from the written
/// ones at each `sync`). [`CrashIo::durable_image`] writes the durable copies
/// into a directory: the log a power cut at that instant would leave, if no
/// unsynced write reached the disk.
#[derive(Debug, Clone, Default)]
pub struct CrashIo {
    files: Arc<Mutex<HashMap<PathBuf, Shadow>>>,
}

impl CrashIo {
    pub fn new() -> CrashIo {
        CrashIo::default()
    }

    fn files(&self) -> MutexGuard<'_, HashMap<PathBuf, Shadow>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the durable copy of every file into `dst` (one consistent instant).
    pub fn durable_image(&self, dst: &Path) {
        std::fs::create_dir_all(dst).expect("create image dir");
        let files = self.files();
        for (path, s) in files.iter() {
            let name = path.file_name().expect("file name");
            std::fs::write(dst.join(name), &s.durable).expect("write image file");
        }
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn IoFile>,
    path: PathBuf,
    io: CrashIo,
}

impl Io for CrashIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let mut files = self.files();
        let inner = StdIo.create(path)?;
        files.insert(path.to_owned(), Shadow::default());
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_owned(),
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let mut files = self.files();
        let inner = StdIo.open(path)?;
        if !files.contains_key(path) {
            // A file that existed before this seam saw it: all of it is durable.
            let bytes = std::fs::read(path)?;
            files.insert(
                path.to_owned(),
                Shadow {
                    written: bytes.clone(),
                    durable: bytes,
                },
            );
        }
        Ok(Box::new(CrashFile {
            inner,
            path: path.to_owned(),
            io: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files();
        StdIo.rename(from, to)?;
        if let Some(s) = files.remove(from) {
            files.insert(to.to_owned(), s);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut files = self.files();
        StdIo.remove(path)?;
        files.remove(path);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

impl IoFile for CrashFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut files = self.io.files();
        self.inner.write_at(offset, buf)?;
        let s = files.entry(self.path.clone()).or_default();
        let end = offset as usize + buf.len();
        if s.written.len() < end {
            s.written.resize(end, 0);
        }
        s.written[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()?;
        let mut files = self.io.files();
        let s = files.entry(self.path.clone()).or_default();
        s.durable = s.written.clone();
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut files = self.io.files();
        self.inner.truncate(len)?;
        let s = files.entry(self.path.clone()).or_default();
        s.written.resize(len as usize, 0);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Child processes: this test binary, running one test function
// ---------------------------------------------------------------------------

/// Prefix of the lines a child reports on stdout.
pub const CHILD_MARK: &str = "ANNAL_CHILD:";

/// Print one report line from a child (a fresh line, so that it never shares
/// a line with the test harness's own output).
pub fn child_say(msg: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{CHILD_MARK} {msg}");
    let _ = out.flush();
}

/// A child process running test function `test_fn` of this test binary.
pub struct ChildProc {
    pub child: Child,
    lines: Receiver<String>,
}

impl ChildProc {
    /// Spawn `test_fn` with the given environment; stdout is read line by line
    /// (report lines are delivered by [`ChildProc::line`]), stderr is inherited,
    /// stdin is a pipe (closing it tells a waiting child to go on).
    pub fn spawn(test_fn: &str, env: &[(&str, &str)]) -> ChildProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", test_fn, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child test process");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(CHILD_MARK) {
                    let msg = line[at + CHILD_MARK.len()..].trim().to_owned();
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
            }
        });
        ChildProc { child, lines: rx }
    }

    /// The next report line, or `None` if the child closed stdout first.
    /// Panics (after killing the child) if none comes within `timeout`.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("child sent no report line within {timeout:?}");
            }
        }
    }

    /// A report line that is already there, if any.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Close the child's stdin.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Wait for the child to exit; panics (after killing it) if it takes
    /// longer than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("child did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every remaining report line (after the child exited).
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            out.push(l);
        }
        out
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Never leave a child behind when a test fails.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `f` on a new thread and panic if it does not finish within `timeout`
/// (a deadlock detector).
pub fn within<T: Send + 'static>(timeout: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => {
            h.join().expect("join");
            v
        }
        Err(RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sent nothing but did not panic"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("{what} did not finish within {timeout:?} (deadlock?)"),
    }
}

// ---------------------------------------------------------------------------
// Self-verifying payloads: a record's content can be checked from the record
// alone (the kill test and the cross-process concurrency suite)
// ---------------------------------------------------------------------------

/// Length of the header of a self-verifying payload.
pub const SV_HEADER: usize = 24;

/// What the header of a self-verifying payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvHeader {
    /// Random per batch: ties the events of one batch together.
    pub key: u64,
    /// Index of the event in its batch.
    pub index: u32,
    /// Events in the batch.
    pub count: u32,
    /// Free bits for the test (for example: the event carries an id).
    pub flags: u32,
}

/// A payload of `len` bytes (at least [`SV_HEADER`]): the header (key, index,
/// count, len, flags) then bytes generated from key and index.
pub fn sv_payload(h: SvHeader, len: usize) -> Vec<u8> {
    assert!(
        len >= SV_HEADER,
        "a self-verifying payload has at least {SV_HEADER} bytes"
    );
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&h.key.to_le_bytes());
    p.extend_from_slice(&h.index.to_le_bytes());
    p.extend_from_slice(&h.count.to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    p.extend_from_slice(&h.flags.to_le_bytes());
    let mut r = Rng::new(h.key ^ (u64::from(h.index) << 40) ^ len as u64);
    while p.len() < len {
        let w = r.next_u64().to_le_bytes();
        let n = (len - p.len()).min(8);
        p.extend_from_slice(&w[..n]);
    }
    p
}

/// Check a self-verifying payload against its own header; the header, or why
/// the payload is not one.
pub fn sv_check(p: &[u8]) -> Result<SvHeader, String> {
    if p.len() < SV_HEADER {
        return Err(format!("payload of {} bytes is shorter than the header", p.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let mut key = [0u8; 8];
    key.copy_from_slice(&p[..8]);
    let h = SvHeader {
        key: u64::from_le_bytes(key),
        index: u32_at(8),
        count: u32_at(12),
        flags: u32_at(20),
    };
    let len = u32_at(16) as usize;
    if len != p.len() {
        return Err(format!("header says {len} bytes, the payload has {}", p.len()));
    }
    if h.index >= h.count {
        return Err(format!("index {} of a batch of {}", h.index, h.count));
    }
    if sv_payload(h, len) != p {
        return Err(format!("content differs from what header {h:?} generates"));
    }
    Ok(h)
}

/// FNV-1a (64 bits) over each payload's length and bytes: a digest of a batch.
pub fn payload_digest<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for p in payloads {
        for b in (p.len() as u64).to_le_bytes() {
            eat(b);
        }
        for &b in p {
            eat(b);
        }
    }
    h
}

// ---------------------------------------------------------------------------
// A power-cut simulator: durable vs pending file writes and directory entries
// ---------------------------------------------------------------------------

/// Bytes of a disk sector: the unit of a torn write.
pub const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    Truncate(u64),
}

/// One file (an inode): what the last `sync` made durable, and the writes and
/// truncations since, in order.
#[derive(Debug, Clone, Default)]
struct PInode {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
    /// Given a further name by [`Io::hard_link`] (may have several).
    linked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(usize),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, Entry),
    Rename(String, String, usize),
    Unlink(String),
}

/// One directory: its durable entries (as of its last `sync_dir`), the
/// entries operations since then, and the current entries.
#[derive(Debug, Clone, Default)]
struct PDir {
    durable: BTreeMap<String, Entry>,
    pending: Vec<DirOp>,
    current: BTreeMap<String, Entry>,
}

/// Why a crash point was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// Just before a file `sync` or a `sync_dir`.
    Sync,
    /// Just before any other operation (sampled).
    Op,
    /// Asked for by the workload ([`PowerIo::capture_now`]).
    Explicit,
}

/// What the workload has acknowledged, recorded with each image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCtx {
    /// Positions below this are durable-acknowledged.
    pub acked: u64,
    /// Positions below this were appended (acknowledged or not).
    pub written: u64,
    /// The workload's snapshot saves that returned `Ok`.
    pub snapshots: u64,
    /// The workload's erasures of subjects that returned.
    pub erased: u64,
}

/// Counts of what the random outcomes did to one image.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageStats {
    pub pending_writes: u64,
    pub dropped_writes: u64,
    pub kept_writes: u64,
    pub partial_writes: u64,
    pub torn_writes: u64,
    pub garbage_tails: u64,
    pub pending_truncates: u64,
    pub dropped_truncates: u64,
    pub pending_dir_ops: u64,
    pub lost_dir_ops: u64,
}

impl ImageStats {
    pub fn add(&mut self, o: &ImageStats) {
        self.pending_writes += o.pending_writes;
        self.dropped_writes += o.dropped_writes;
        self.kept_writes += o.kept_writes;
        self.partial_writes += o.partial_writes;
        self.torn_writes += o.torn_writes;
        self.garbage_tails += o.garbage_tails;
        self.pending_truncates += o.pending_truncates;
        self.dropped_truncates += o.dropped_truncates;
        self.pending_dir_ops += o.pending_dir_ops;
        self.lost_dir_ops += o.lost_dir_ops;
    }
}

/// What a power cut at one instant left on disk.
#[derive(Debug, Clone)]
pub struct CrashImage {
    /// Index of the operation the power was cut before (0-based).
    pub op: u64,
    pub kind: PointKind,
    /// Which of the images taken at this point (several outcomes per point).
    pub variant: u32,
    /// The outcome mode: "durable", "all-kept" or "random".
    pub mode: &'static str,
    pub ctx: PowerCtx,
    /// Directories (relative to the log directory) that exist in the image.
    pub dirs: Vec<PathBuf>,
    /// Files (relative to the log directory) and their bytes (every name
    /// of a file with several, each with the file's bytes).
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Names that are further hard links of one file: name, and the name
    /// under [`CrashImage::files`] it shares its inode with (in
    /// [`CrashImage::write_to`], a hard link to it).
    pub links: BTreeMap<PathBuf, PathBuf>,
    /// For each file of the image: the length its last `sync` made durable.
    pub durable_len: BTreeMap<PathBuf, u64>,
    pub stats: ImageStats,
}

impl CrashImage {
    /// Write the image into the (empty) directory `dst`.
    pub fn write_to(&self, dst: &Path) {
        std::fs::create_dir_all(dst).expect("create image dir");
        for d in &self.dirs {
            std::fs::create_dir_all(dst.join(d)).expect("create image dir");
        }
        for (p, bytes) in &self.files {
            if !self.links.contains_key(p) {
                std::fs::write(dst.join(p), bytes).expect("write image file");
            }
        }
        for (p, first) in &self.links {
            std::fs::hard_link(dst.join(first), dst.join(p)).expect("link image file");
        }
    }
}

/// Which operations become crash points.
#[derive(Debug, Clone)]
pub struct CapturePlan {
    /// Images taken before every `sync` and `sync_dir`.
    pub per_sync: u32,
    /// Probability (per mille) that any other operation is a crash point.
    pub op_permille: u64,
    /// Images taken at a sampled other operation.
    pub per_op: u32,
    pub seed: u64,
}

struct PState {
    root: PathBuf,
    inodes: Vec<PInode>,
    dirs: BTreeMap<PathBuf, PDir>,
    ops: u64,
    plan: CapturePlan,
    rng: Rng,
    ctx: PowerCtx,
    captured: Vec<CrashImage>,
    enabled: bool,
}

/// [`StdIo`] that also keeps what a power cut would leave: per file (inode)
/// its durable bytes and its pending writes and truncations; per directory
/// its durable entries and its pending creates, hard links, renames and
/// removes (durable after `sync_dir`). A hard link is a new entry for an
/// existing inode: durable only with its directory's sync, its bytes the
/// inode's (every name shows the same ones, as durable as the file's own
/// syncs made them). Before chosen operations (every sync, a sample of the
/// others) it takes crash images: durable bytes plus, for each pending
/// write independently, dropped, kept, kept in part (cut at a sector
/// boundary or a byte) or torn (garbage over some of its sectors); files
/// may grow with garbage; pending directory operations are lost or kept (a
/// rename is atomic, and kept only with what gave its source its name).
/// Images are kept in memory until [`PowerIo::take_images`].
#[derive(Clone)]
pub struct PowerIo {
    st: Arc<Mutex<PState>>,
}

impl std::fmt::Debug for PowerIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerIo")
    }
}

impl PowerIo {
    /// A simulator for the log directory `root` (which must exist and be empty).
    pub fn new(root: &Path, plan: CapturePlan) -> PowerIo {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), PDir::default());
        let rng = Rng::new(plan.seed);
        PowerIo {
            st: Arc::new(Mutex::new(PState {
                root: root.to_owned(),
                inodes: Vec::new(),
                dirs,
                ops: 0,
                plan,
                rng,
                ctx: PowerCtx::default(),
                captured: Vec::new(),
                enabled: true,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record what the workload has acknowledged so far.
    pub fn set_ctx(&self, ctx: PowerCtx) {
        self.lock().ctx = ctx;
    }

    /// Turn crash points on or off (operations are modelled either way).
    pub fn set_enabled(&self, on: bool) {
        self.lock().enabled = on;
    }

    /// Operations seen so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Take `n` images now (a crash point after the last operation).
    pub fn capture_now(&self, n: u32) {
        let mut st = self.lock();
        let op = st.ops;
        for v in 0..n {
            st.capture(op, PointKind::Explicit, v);
        }
    }

    /// The images taken since the last call.
    pub fn take_images(&self) -> Vec<CrashImage> {
        std::mem::take(&mut self.lock().captured)
    }

    /// The log directory as the model has it now with every pending
    /// operation kept (the live directory's files, for a self-check).
    pub fn current_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let st = self.lock();
        let mut out = BTreeMap::new();
        st.walk_current(Path::new(""), &mut out);
        out
    }
}

fn apply_ops(base: &[u8], ops: &[FileOp]) -> Vec<u8> {
    let mut b = base.to_vec();
    for op in ops {
        match op {
            FileOp::Write { offset, data } => write_into(&mut b, *offset, data),
            FileOp::Truncate(len) => b.resize(*len as usize, 0),
        }
    }
    b
}

fn write_into(b: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if b.len() < end {
        b.resize(end, 0);
    }
    b[offset as usize..end].copy_from_slice(data);
}

impl PState {
    fn rel(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root).ok().map(Path::to_owned)
    }

    fn split(rel: &Path) -> (PathBuf, String) {
        let parent = rel.parent().map(Path::to_owned).unwrap_or_default();
        let name = rel.file_name().expect("file name").to_string_lossy().into_owned();
        (parent, name)
    }

    fn dir_op(&mut self, dir: &Path, op: DirOp) {
        let d = self.dirs.entry(dir.to_owned()).or_default();
        match &op {
            DirOp::Link(name, e) => {
                d.current.insert(name.clone(), *e);
            }
            DirOp::Rename(from, to, ino) => {
                d.current.remove(from);
                d.current.insert(to.clone(), Entry::File(*ino));
            }
            DirOp::Unlink(name) => {
                d.current.remove(name);
            }
        }
        d.pending.push(op);
    }

    /// The inode of the file at `path` (`rel` in the log directory); one
    /// not made through the seam is taken as durable, its entry too.
    fn known(&mut self, path: &Path, rel: &Path) -> io::Result<usize> {
        if let Some(i) = self.lookup(rel) {
            return Ok(i);
        }
        let bytes = std::fs::read(path)?;
        let ino = self.inodes.len();
        self.inodes.push(PInode {
            durable: bytes,
            pending: Vec::new(),
            linked: false,
        });
        let (dir, name) = PState::split(rel);
        let d = self.dirs.entry(dir).or_default();
        d.durable.insert(name.clone(), Entry::File(ino));
        d.current.insert(name, Entry::File(ino));
        Ok(ino)
    }

    fn lookup(&self, rel: &Path) -> Option<usize> {
        let (parent, name) = Self::split(rel);
        match self.dirs.get(&parent)?.current.get(&name)? {
            Entry::File(i) => Some(*i),
            Entry::Dir => None,
        }
    }

    /// Count an operation; take images first if it is a crash point.
    fn point(&mut self, sync: bool, what: std::fmt::Arguments<'_>) {
        let op = self.ops;
        if std::env::var_os("ANNAL_POWER_TRACE").is_some() {
            eprintln!("power op {op}: {what}");
        }
        self.ops += 1;
        if !self.enabled {
            return;
        }
        let (kind, n) = if sync {
            (PointKind::Sync, self.plan.per_sync)
        } else if self.rng.range(0, 999) < self.plan.op_permille {
            (PointKind::Op, self.plan.per_op)
        } else {
            return;
        };
        for v in 0..n {
            self.capture(op, kind, v);
        }
    }

    fn walk_current(&self, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Some(d) = self.dirs.get(dir) else { return };
        for (name, e) in &d.current {
            let p = dir.join(name);
            match e {
                Entry::File(i) => {
                    let ino = &self.inodes[*i];
                    out.insert(p, apply_ops(&ino.durable, &ino.pending));
                }
                Entry::Dir => self.walk_current(&p, out),
            }
        }
    }

    fn capture(&mut self, op: u64, kind: PointKind, variant: u32) {
        // Variant 0 is the plain durable image a quarter of the time;
        // otherwise mostly random outcomes, sometimes everything kept.
        let roll = self.rng.range(0, 99);
        let mode = if variant == 0 && roll < 25 {
            "durable"
        } else if roll >= 92 {
            "all-kept"
        } else {
            "random"
        };
        let mut img = CrashImage {
            op,
            kind,
            variant,
            mode,
            ctx: self.ctx,
            dirs: Vec::new(),
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            durable_len: BTreeMap::new(),
            stats: ImageStats::default(),
        };
        // Directory operations: per directory, a prefix (journalled file
        // systems) or each independently. Each file's outcomes are drawn
        // from a generator of its own (of this image and its inode), so
        // that they do not depend on its names (temporary files may have
        // random ones).
        let files_seed = self.rng.next_u64();
        let mut rng = self.rng.clone();
        let dirs = self.dirs.clone();
        let mut done = HashMap::new();
        self.image_dir(&dirs, Path::new(""), &mut img, &mut rng, &mut done, files_seed);
        self.rng = rng;
        self.captured.push(img);
    }

    fn image_dir(
        &self,
        dirs: &BTreeMap<PathBuf, PDir>,
        dir: &Path,
        img: &mut CrashImage,
        rng: &mut Rng,
        done: &mut HashMap<usize, PathBuf>,
        files_seed: u64,
    ) {
        let Some(d) = dirs.get(dir) else { return };
        if !dir.as_os_str().is_empty() {
            img.dirs.push(dir.to_owned());
        }
        let mut names = d.durable.clone();
        let n = d.pending.len();
        img.stats.pending_dir_ops += n as u64;
        let mut keep: Vec<bool> = match img.mode {
            "durable" => vec![false; n],
            "all-kept" => vec![true; n],
            _ => {
                if rng.range(0, 1) == 0 {
                    let k = rng.range(0, n as u64) as usize;
                    (0..n).map(|i| i < k).collect()
                } else {
                    (0..n).map(|_| rng.range(0, 1) == 0).collect()
                }
            }
        };
        // A rename kept keeps what gave its source that name (the create,
        // link or rename before it, transitively): a rename moves the entry
        // it finds, so `a -> b` lost and `b -> c` kept cannot leave both
        // `a` and `c` (one file under two names it never had at once).
        for i in (0..n).rev() {
            if let (true, DirOp::Rename(from, _, _)) = (keep[i], &d.pending[i]) {
                let made = d.pending[..i].iter().rposition(|op| match op {
                    DirOp::Link(name, _) | DirOp::Rename(_, name, _) => name == from,
                    DirOp::Unlink(_) => false,
                });
                if let Some(j) = made {
                    keep[j] = true;
                }
            }
        }
        for (op, keep) in d.pending.iter().zip(keep) {
            if !keep {
                img.stats.lost_dir_ops += 1;
                continue;
            }
            match op {
                DirOp::Link(name, e) => {
                    names.insert(name.clone(), *e);
                }
                DirOp::Rename(from, to, ino) => {
                    // Atomic: the new name replaces the old one, all at once.
                    names.remove(from);
                    names.insert(to.clone(), Entry::File(*ino));
                }
                DirOp::Unlink(name) => {
                    names.remove(name);
                }
            }
        }
        for (name, e) in names {
            let p = dir.join(&name);
            match e {
                Entry::File(i) => {
                    let ino = &self.inodes[i];
                    img.durable_len.insert(p.clone(), ino.durable.len() as u64);
                    if let Some(first) = done.get(&i) {
                        // A further name of one file (a hard link): the
                        // same inode, so the same bytes.
                        assert!(
                            ino.linked,
                            "PowerIo: {} and {} name one file that was never linked",
                            first.display(),
                            p.display()
                        );
                        let bytes = img.files[first].clone();
                        img.links.insert(p.clone(), first.clone());
                        img.files.insert(p, bytes);
                        continue;
                    }
                    done.insert(i, p.clone());
                    let mut file_rng = Rng::new(files_seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                    let bytes = image_file(ino, img.mode, &mut file_rng, &mut img.stats);
                    img.files.insert(p, bytes);
                }
                Entry::Dir => self.image_dir(dirs, &p, img, rng, done, files_seed),
            }
        }
    }
}

/// The bytes a power cut leaves of one file.
fn image_file(ino: &PInode, mode: &str, rng: &mut Rng, stats: &mut ImageStats) -> Vec<u8> {
    let mut b = ino.durable.clone();
    for op in &ino.pending {
        match op {
            FileOp::Truncate(len) => {
                stats.pending_truncates += 1;
                if mode == "all-kept" || (mode == "random" && rng.range(0, 1) == 0) {
                    b.resize(*len as usize, 0);
                } else {
                    stats.dropped_truncates += 1;
                }
            }
            FileOp::Write { offset, data } => {
                stats.pending_writes += 1;
                let choice = match mode {
                    "durable" => 0,
                    "all-kept" => 1,
                    _ => rng.range(0, 9),
                };
                match choice {
                    0..=2 => stats.dropped_writes += 1,
                    3..=5 => {
                        stats.kept_writes += 1;
                        write_into(&mut b, *offset, data);
                    }
                    6 | 7 => {
                        // A prefix, cut at a sector boundary or at any byte.
                        stats.partial_writes += 1;
                        let len = data.len() as u64;
                        let first_boundary = (offset / SECTOR + 1) * SECTOR;
                        let cut = if rng.range(0, 1) == 0 && first_boundary < offset + len {
                            let last = (offset + len - 1) / SECTOR * SECTOR;
                            let k = rng.range(first_boundary / SECTOR, last / SECTOR) * SECTOR;
                            k - offset
                        } else {
                            rng.range(0, len.saturating_sub(1))
                        };
                        write_into(&mut b, *offset, &data[..cut as usize]);
                    }
                    _ => {
                        // Torn: each sector new, old or garbage, at least one garbage.
                        stats.torn_writes += 1;
                        let end = offset + data.len() as u64;
                        if (b.len() as u64) < end {
                            b.resize(end as usize, 0);
                        }
                        let first = offset / SECTOR;
                        let last = (end.max(1) - 1) / SECTOR;
                        let forced = rng.range(first, last);
                        for s in first..=last {
                            let lo = (s * SECTOR).max(*offset);
                            let hi = ((s + 1) * SECTOR).min(end);
                            let pick = if s == forced { 2 } else { rng.range(0, 2) };
                            match pick {
                                0 => b[lo as usize..hi as usize]
                                    .copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]),
                                1 => {}
                                _ => {
                                    for x in &mut b[lo as usize..hi as usize] {
                                        *x = rng.next_u64() as u8;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let full_len = apply_ops(&ino.durable, &ino.pending).len();
    if mode == "random" && b.len() < full_len && rng.range(0, 3) == 0 {
        // ALICE: the file's new length reached the disk but the data of its
        // appended blocks did not: they hold garbage or zeros.
        stats.garbage_tails += 1;
        let zeros = rng.range(0, 1) == 0;
        while b.len() < full_len {
            b.push(if zeros { 0 } else { rng.next_u64() as u8 });
        }
    }
    b
}

#[derive(Debug)]
struct PowerFile {
    inner: Box<dyn IoFile>,
    ino: usize,
    io: PowerIo,
}

impl Io for PowerIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let mut st = self.lock();
        let Some(rel) = st.rel(path) else {
            return StdIo.create(path);
        };
        st.point(false, format_args!("create {}", rel.display()));
        let inner = StdIo.create(path)?;
        let ino = st.inodes.len();
        st.inodes.push(PInode::default());
        let (dir, name) = PState::split(&rel);
        st.dir_op(&dir, DirOp::Link(name, Entry::File(ino)));
        Ok(Box::new(PowerFile {
            inner,
            ino,
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let mut st = self.lock();
        let Some(rel) = st.rel(path) else {
            return StdIo.open(path);
        };
        st.point(false, format_args!("open {}", rel.display()));
        let inner = StdIo.open(path)?;
        let ino = st.known(path, &rel)?;
        Ok(Box::new(PowerFile {
            inner,
            ino,
            io: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let (Some(rf), Some(rt)) = (st.rel(from), st.rel(to)) else {
            return StdIo.rename(from, to);
        };
        st.point(false, format_args!("rename {} {}", rf.display(), rt.display()));
        StdIo.rename(from, to)?;
        let (df, nf) = PState::split(&rf);
        let (dt, nt) = PState::split(&rt);
        assert_eq!(df, dt, "PowerIo models renames within one directory only");
        let ino = st.lookup(&rf).expect("renamed file is known to the model");
        if st.lookup(&rt) == Some(ino) {
            // Two links of one file: rename(2) does nothing.
            return Ok(());
        }
        st.dir_op(&df, DirOp::Rename(nf, nt, ino));
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let Some(rel) = st.rel(path) else {
            return StdIo.remove(path);
        };
        st.point(false, format_args!("remove {}", rel.display()));
        StdIo.remove(path)?;
        let (dir, name) = PState::split(&rel);
        st.dir_op(&dir, DirOp::Unlink(name));
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let Some(rel) = st.rel(dir) else {
            return StdIo.sync_dir(dir);
        };
        st.point(true, format_args!("sync_dir {}", rel.display()));
        StdIo.sync_dir(dir)?;
        if let Some(d) = st.dirs.get_mut(&rel) {
            d.durable = d.current.clone();
            d.pending.clear();
        }
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let (Some(rf), Some(rt)) = (st.rel(from), st.rel(to)) else {
            return std::fs::hard_link(from, to);
        };
        st.point(false, format_args!("link {} {}", rf.display(), rt.display()));
        let ino = st.known(from, &rf)?;
        std::fs::hard_link(from, to)?;
        // A new entry of `to`'s directory, durable when that directory is
        // synced; the file's bytes are the inode's (shared), as durable as
        // its own syncs made them.
        st.inodes[ino].linked = true;
        let (dt, nt) = PState::split(&rt);
        st.dir_op(&dt, DirOp::Link(nt, Entry::File(ino)));
        Ok(())
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let Some(rel) = st.rel(dir) else {
            return std::fs::create_dir_all(dir);
        };
        st.point(false, format_args!("create_dir {}", rel.display()));
        std::fs::create_dir_all(dir)?;
        if !rel.as_os_str().is_empty() && !st.dirs.contains_key(&rel) {
            st.dirs.insert(rel.clone(), PDir::default());
            let (parent, name) = PState::split(&rel);
            st.dir_op(&parent, DirOp::Link(name, Entry::Dir));
        }
        Ok(())
    }
}

impl IoFile for PowerFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.io.lock();
        st.point(
            false,
            format_args!("write ino {} at {offset} len {}", self.ino, buf.len()),
        );
        self.inner.write_at(offset, buf)?;
        st.inodes[self.ino].pending.push(FileOp::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let mut st = self.io.lock();
        st.point(true, format_args!("sync ino {}", self.ino));
        self.inner.sync()?;
        let ino = &mut st.inodes[self.ino];
        ino.durable = apply_ops(&ino.durable, &ino.pending);
        ino.pending.clear();
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut st = self.io.lock();
        st.point(false, format_args!("truncate ino {} to {len}", self.ino));
        self.inner.truncate(len)?;
        st.inodes[self.ino].pending.push(FileOp::Truncate(len));
        Ok(())
    }
    fn reserve(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mut st = self.io.lock();
        st.point(false, format_args!("reserve ino {} {offset}+{len}", self.ino));
        // Space only: neither the length nor the content changes.
        self.inner.reserve(offset, len)
    }
}

// ---------------------------------------------------------------------------
// An I/O seam that fails the n-th operation of one kind (fault injection)
// ---------------------------------------------------------------------------

/// The kinds of operation of the I/O seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Create,
    Open,
    Rename,
    Remove,
    SyncDir,
    CreateDir,
    Write,
    Sync,
    Truncate,
    Reserve,
}

impl OpKind {
    pub const ALL: [OpKind; 10] = [
        OpKind::Create,
        OpKind::Open,
        OpKind::Rename,
        OpKind::Remove,
        OpKind::SyncDir,
        OpKind::CreateDir,
        OpKind::Write,
        OpKind::Sync,
        OpKind::Truncate,
        OpKind::Reserve,
    ];

    /// The `op` of the `annal::Error::Io` a failure of this kind gives.
    pub fn error_op(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Open => "open",
            OpKind::Rename => "rename",
            OpKind::Remove => "remove",
            OpKind::SyncDir => "fsync directory",
            OpKind::CreateDir => "create directory",
            OpKind::Write => "write",
            OpKind::Sync => "fsync",
            OpKind::Truncate => "truncate",
            OpKind::Reserve => "reserve",
        }
    }
}

/// Which thread made a call: annal's sealer thread (`annal-sealer`), which
/// writes index files and stream tables concurrently with the writer, or any
/// other. Counting per role keeps the numbering deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Main,
    Sealer,
}

impl Role {
    fn current() -> Role {
        if std::thread::current().name() == Some("annal-sealer") {
            Role::Sealer
        } else {
            Role::Main
        }
    }
}

/// How an injected failure fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// `ENOSPC` (disk full), nothing written.
    NoSpace,
    /// `EIO`, nothing written.
    Eio,
    /// A write of which a prefix (`len / 2` bytes, at least 1 if any) reaches
    /// the file before `ENOSPC`.
    Short,
}

/// The failure to inject: the `n`-th (0-based, counted from [`FaultIo::arm`])
/// operation of `kind` made by `role` fails once; every other call works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub role: Role,
    pub kind: OpKind,
    pub n: u64,
    pub mode: FaultMode,
}

/// One operation seen through the seam while armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    pub role: Role,
    pub kind: OpKind,
    pub path: PathBuf,
    /// Bytes written (`write_at`), else 0.
    pub len: usize,
    /// Made after the fault fired.
    pub after_fault: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    armed: bool,
    fault: Option<Fault>,
    counts: HashMap<(Role, OpKind), u64>,
    ops: Vec<OpRecord>,
    /// The operation that failed, once it did.
    fired: Option<OpRecord>,
}

/// [`StdIo`] that records every operation made while armed (kind, path,
/// thread role) and fails one chosen operation ([`Fault`]).
#[derive(Debug, Clone, Default)]
pub struct FaultIo {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn IoFile>,
    path: PathBuf,
    io: FaultIo,
}

impl FaultIo {
    pub fn new() -> FaultIo {
        FaultIo::default()
    }

    fn st(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start recording and counting (and failing `fault`, if any).
    pub fn arm(&self, fault: Option<Fault>) {
        let mut s = self.st();
        s.armed = true;
        s.fault = fault;
    }

    /// Stop recording and failing.
    pub fn disarm(&self) {
        self.st().armed = false;
    }

    /// Operations per (role, kind) made while armed.
    pub fn counts(&self) -> HashMap<(Role, OpKind), u64> {
        self.st().counts.clone()
    }

    /// Every operation made while armed, in order.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.st().ops.clone()
    }

    /// The operation that failed, if the fault fired.
    pub fn fired(&self) -> Option<OpRecord> {
        self.st().fired.clone()
    }

    /// Record one call; `Some(mode)` if it must fail.
    fn enter(&self, kind: OpKind, path: &Path) -> Option<FaultMode> {
        self.enter_len(kind, path, 0)
    }

    fn enter_len(&self, kind: OpKind, path: &Path, len: usize) -> Option<FaultMode> {
        let mut s = self.st();
        if !s.armed {
            return None;
        }
        let role = Role::current();
        let n = {
            let c = s.counts.entry((role, kind)).or_insert(0);
            *c += 1;
            *c - 1
        };
        let after_fault = s.fired.is_some();
        let rec = OpRecord {
            role,
            kind,
            path: path.to_owned(),
            len,
            after_fault,
        };
        s.ops.push(rec.clone());
        match s.fault {
            Some(f) if f.role == role && f.kind == kind && f.n == n => {
                s.fired = Some(rec);
                Some(f.mode)
            }
            _ => None,
        }
    }
}

fn fault_error(mode: FaultMode, kind: OpKind, path: &Path) -> io::Error {
    let (code, name) = match mode {
        FaultMode::Eio => (5, "EIO"),
        FaultMode::NoSpace | FaultMode::Short => (28, "ENOSPC"),
    };
    io::Error::new(
        io::Error::from_raw_os_error(code).kind(),
        format!("injected {name} on {} of {}", kind.error_op(), path.display()),
    )
}

impl Io for FaultIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        if let Some(m) = self.enter(OpKind::Create, path) {
            return Err(fault_error(m, OpKind::Create, path));
        }
        Ok(Box::new(FaultFile {
            inner: StdIo.create(path)?,
            path: path.to_owned(),
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        if let Some(m) = self.enter(OpKind::Open, path) {
            return Err(fault_error(m, OpKind::Open, path));
        }
        Ok(Box::new(FaultFile {
            inner: StdIo.open(path)?,
            path: path.to_owned(),
            io: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(m) = self.enter(OpKind::Rename, from) {
            return Err(fault_error(m, OpKind::Rename, from));
        }
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        if let Some(m) = self.enter(OpKind::Remove, path) {
            return Err(fault_error(m, OpKind::Remove, path));
        }
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if let Some(m) = self.enter(OpKind::SyncDir, dir) {
            return Err(fault_error(m, OpKind::SyncDir, dir));
        }
        StdIo.sync_dir(dir)
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        if let Some(m) = self.enter(OpKind::CreateDir, dir) {
            return Err(fault_error(m, OpKind::CreateDir, dir));
        }
        StdIo.create_dir(dir)
    }
}

impl IoFile for FaultFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match self.io.enter_len(OpKind::Write, &self.path, buf.len()) {
            None => self.inner.write_at(offset, buf),
            Some(FaultMode::Short) => {
                let part = (buf.len() / 2).max(buf.len().min(1));
                self.inner.write_at(offset, &buf[..part])?;
                Err(fault_error(FaultMode::Short, OpKind::Write, &self.path))
            }
            Some(m) => Err(fault_error(m, OpKind::Write, &self.path)),
        }
    }
    fn sync(&self) -> io::Result<()> {
        if let Some(m) = self.io.enter(OpKind::Sync, &self.path) {
            return Err(fault_error(m, OpKind::Sync, &self.path));
        }
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        if let Some(m) = self.io.enter(OpKind::Truncate, &self.path) {
            return Err(fault_error(m, OpKind::Truncate, &self.path));
        }
        self.inner.truncate(len)
    }
    fn reserve(&self, offset: u64, len: u64) -> io::Result<bool> {
        if let Some(m) = self.io.enter(OpKind::Reserve, &self.path) {
            return Err(fault_error(m, OpKind::Reserve, &self.path));
        }
        self.inner.reserve(offset, len)
    }
}
