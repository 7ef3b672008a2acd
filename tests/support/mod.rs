//! Helpers shared by the concurrency and failure integration tests: owned
//! copies of records, checks of the log invariants, I/O seams that count,
//! fail or keep a "durable" image, and child processes running this very
//! test binary.
//!
//! Every test file uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
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
    let log =
        annal::Log::open(dir, annal::Options::default()).unwrap_or_else(|e| panic!("reopen {}: {e}", dir.display()));
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

/// An append that returned `Ok`, with what it appended.
#[derive(Debug, Clone)]
pub struct Ack {
    pub stream: String,
    pub result: AppendResult,
    pub payloads: Vec<Vec<u8>>,
}

impl Ack {
    pub fn new(stream: &str, result: AppendResult, payloads: Vec<Vec<u8>>) -> Ack {
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
/// `BTCH`, `frame_len` 72 and kind 2 (spec 3.1, 3.4).
fn ends_with_seal(buf: &[u8]) -> bool {
    let Some(start) = buf.len().checked_sub(72) else {
        return false;
    };
    let h = &buf[start..];
    h[0..4] == *b"BTCH" && h[8..16] == 72u64.to_le_bytes() && h[28] == 2
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
