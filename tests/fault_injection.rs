//! Scenario: disk full and I/O errors at every point (issue 8, item 5).
//!
//! Each workload (appends with `Buffered` and `Fsync` durability, segment
//! rolls with the sealer thread's index and stream-table writes, explicit
//! `sync`, `close`, snapshot writes through `Repository`, `Log::open`
//! recovery of a torn tail and of missing derived files, creating a new log,
//! the audit chain keyed and with signed checkpoints and overlapped hashing
//! of large batches) runs once through a recording seam ([`FaultIo`]) to
//! enumerate its I/O operations per (thread, kind). Then, for every
//! operation `i` of every kind, the workload runs again with operation `i`
//! failing once (`ENOSPC` and `EIO`; for writes also a short write: half the
//! buffer reaches the file, then `ENOSPC`). For every fault point:
//!
//! * the call that fails returns `Error::Io` naming the operation and the
//!   file, or (when the failure happened on the sealer thread) a later call
//!   returns `Error::Poisoned` naming it; nothing panics (also not on annal's
//!   own threads);
//! * a failure in the writer's files (segments, head, index files, stream
//!   table) poisons the writer: every later append, `sync` and `close`
//!   returns `Error::Poisoned`, and the writer makes no further segment or
//!   head I/O, although the seam works again;
//! * a failure writing a snapshot file fails that save only: the log is not
//!   poisoned and appends go on; no partial snapshot is ever visible;
//! * a failed reserve (`fallocate`) or a failed removal of a leftover temp
//!   file is ignored by design;
//! * everything acknowledged before stays readable, in this process's views
//!   and after reopening with the real file system; an append that failed is
//!   whole or absent after the reopen;
//! * after reopening, the log opens (a torn tail may be cut), takes appends,
//!   closes cleanly, and `annal::check` (with the chain key and the signing
//!   public key) finds no problem and verifies the audit chain.
//!
//! The number of fault points per workload and kind is printed.
//!
//! Writes fail with `ENOSPC`, `EIO` and short; in CI the other kinds fail
//! with one error each (`ENOSPC` for create, rename, create-directory and
//! reserve, `EIO` for the rest), and signed checkpoints are verified at one
//! fault point in 8 (a verification costs ~90 ms in a debug build). About
//! 700 fault points, ~10 s in a debug build.
//!
//! Environment: `ANNAL_FAULTS_FULL=1` fails every kind with both `ENOSPC`
//! and `EIO`, verifies signatures at every point, runs three more workloads
//! (rolls with `Fsync`, recovery of a keyed and signed log, signed
//! checkpoints with `Fsync` and rolls) and 8 random workloads instead of 1
//! (about 3,000 fault points, ~6 minutes). `ANNAL_TEST_SEED` fixes the seed
//! of the random workloads.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{
    Aggregate, ChainKey, ChainStatus, CheckOptions, Durability, Error, Event, EventData, ExecuteError, ExpectedVersion,
    Log, Options, Repository, SigningKey,
};
use serde::{Deserialize, Serialize};
use support::{Ack, Fault, FaultIo, FaultMode, OpKind, OpRecord, Rec, Role, read_view};

// ---------------------------------------------------------------------------
// Panics on annal's own threads
// ---------------------------------------------------------------------------

static ANNAL_THREAD_PANICS: AtomicU64 = AtomicU64::new(0);

/// Count panics on annal's threads (`annal-sealer`, `annal-hasher`): they
/// would not fail a test by themselves.
fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("annal-")) {
                ANNAL_THREAD_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            prev(info);
        }));
    });
}

// ---------------------------------------------------------------------------
// An aggregate for the snapshot workload
// ---------------------------------------------------------------------------

#[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
struct Counter {
    value: i64,
}

#[derive(Serialize, Deserialize)]
enum CounterEvent {
    Added(i64),
}

impl Event for CounterEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = i64;
    type Error = String;
    fn handle(&self, add: &i64) -> Result<Vec<CounterEvent>, String> {
        Ok(vec![CounterEvent::Added(*add)])
    }
    fn apply(&mut self, CounterEvent::Added(n): &CounterEvent) {
        self.value += n;
    }
}

fn repo(log: &Log) -> Repository<Counter> {
    Repository::<Counter>::new(log).snapshot_every(2, 1)
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Append `events` events of `size` bytes to stream `stream`.
    Append {
        stream: u8,
        events: u8,
        size: u32,
    },
    Sync,
    /// `Repository::execute` (snapshot every 2 events, keep 1).
    Execute {
        stream: u8,
        add: i64,
    },
    /// `Repository::snapshot`.
    Snapshot {
        stream: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A new log, opened before arming.
    Fresh,
    /// A copy of the template, opened before arming.
    Template,
    /// A copy of the (damaged) template, opened while armed.
    RecoverTemplate,
    /// A log created while armed (in a directory that does not exist yet).
    Create,
}

#[derive(Clone)]
struct Workload {
    name: String,
    opts: Options,
    keyed: bool,
    signed: bool,
    start: Start,
    steps: Vec<Step>,
    /// Assert that overlapped hashing (a chunk written with frames hidden,
    /// then their headers) happened.
    expect_overlap: bool,
}

fn chain_key() -> ChainKey {
    ChainKey::from_bytes([7; 32])
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes([9; 32])
}

fn stream_name(s: u8) -> String {
    format!("s-{s}")
}

fn counter_name(s: u8) -> String {
    format!("counter-{s}")
}

fn payload(tag: u64, size: u32) -> Vec<u8> {
    let mut p = common::payload(tag, size as usize);
    if let Some(b) = p.first_mut() {
        *b = b'p';
    }
    p
}

fn base_opts(d: Durability, segment_size: u64) -> Options {
    Options::default()
        .format_version(2)
        .durability(d)
        .segment_size(segment_size)
}

fn append(stream: u8, events: u8, size: u32) -> Step {
    Step::Append { stream, events, size }
}

fn workload(name: &str, opts: Options, start: Start, steps: Vec<Step>) -> Workload {
    Workload {
        name: name.to_owned(),
        opts,
        keyed: false,
        signed: false,
        start,
        steps,
        expect_overlap: false,
    }
}

fn appends_steps() -> Vec<Step> {
    vec![
        append(0, 1, 100),
        append(1, 3, 200),
        append(0, 2, 50),
        Step::Sync,
        append(2, 1, 1000),
        append(1, 1, 10),
        Step::Sync,
        append(0, 4, 300),
    ]
}

fn roll_steps() -> Vec<Step> {
    let mut s = Vec::new();
    for i in 0..14u8 {
        s.push(append(i % 3, 1 + i % 2, 600));
        if i == 6 {
            s.push(Step::Sync);
        }
    }
    s
}

fn signed_steps() -> Vec<Step> {
    vec![
        append(0, 1, 20_000),
        append(1, 2, 12_000),
        append(2, 1, 100),
        Step::Sync,
        append(0, 1, 30_000),
        append(1, 1, 50),
        append(2, 1, 25_000),
        append(0, 3, 200),
    ]
}

fn snapshot_steps() -> Vec<Step> {
    vec![
        Step::Execute { stream: 0, add: 5 },
        Step::Execute { stream: 0, add: 3 },
        Step::Execute { stream: 1, add: 1 },
        Step::Execute { stream: 1, add: 2 },
        Step::Snapshot { stream: 0 },
        Step::Execute { stream: 0, add: -1 },
        Step::Execute { stream: 0, add: 4 },
    ]
}

fn signed(mut w: Workload) -> Workload {
    w.opts = w
        .opts
        .chain_key(chain_key())
        .signing_key(signing_key())
        .checkpoint_every(2);
    w.keyed = true;
    w.signed = true;
    w
}

/// The fixed workloads.
fn fixed_workloads() -> Vec<Workload> {
    vec![
        workload(
            "append, Buffered",
            base_opts(Durability::Buffered, 1 << 20),
            Start::Fresh,
            appends_steps(),
        ),
        workload(
            "append, Fsync",
            base_opts(Durability::Fsync, 1 << 20),
            Start::Fresh,
            appends_steps(),
        ),
        workload(
            "segment rolls, Buffered",
            base_opts(Durability::Buffered, 4096),
            Start::Fresh,
            roll_steps(),
        ),
        {
            let mut s = signed(workload(
                "keyed chain, signed checkpoints, overlapped hashing, rolls",
                base_opts(Durability::Buffered, 64 << 10),
                Start::Fresh,
                signed_steps(),
            ));
            s.expect_overlap = true;
            s
        },
        workload(
            "snapshots through Repository",
            base_opts(Durability::Buffered, 1 << 20),
            Start::Fresh,
            snapshot_steps(),
        ),
        workload(
            "recovery on open: torn tail, missing index and stream table, leftover temp file",
            base_opts(Durability::Buffered, 4096),
            Start::RecoverTemplate,
            vec![append(0, 1, 100), append(5, 2, 300), Step::Sync],
        ),
        workload(
            "create a new log",
            base_opts(Durability::Fsync, 4096),
            Start::Create,
            vec![append(0, 1, 10), append(1, 1, 4000)],
        ),
    ]
}

/// More workloads, run with `ANNAL_FAULTS_FULL` only.
fn more_workloads() -> Vec<Workload> {
    vec![
        workload(
            "segment rolls, Fsync",
            base_opts(Durability::Fsync, 4096),
            Start::Fresh,
            roll_steps(),
        ),
        signed(workload(
            "recovery on open, keyed and signed",
            base_opts(Durability::Buffered, 4096),
            Start::RecoverTemplate,
            vec![append(0, 1, 100), Step::Sync],
        )),
        signed(workload(
            "signed checkpoints, Fsync, rolls",
            base_opts(Durability::Fsync, 8192),
            Start::Template,
            roll_steps(),
        )),
    ]
}

/// A random workload from `seed`.
fn random_workload(seed: u64) -> Workload {
    let mut rng = common::Rng::new(seed);
    let d = if rng.below(2) == 0 {
        Durability::Buffered
    } else {
        Durability::Fsync
    };
    let seg = *rng.pick(&[4096u64, 16 << 10, 64 << 10]);
    let start = *rng.pick(&[Start::Fresh, Start::Template]);
    let mut steps = Vec::new();
    for _ in 0..rng.below(10) + 4 {
        let step = match rng.below(10) {
            0 => Step::Sync,
            1 => Step::Execute {
                stream: rng.below(2) as u8,
                add: rng.below(10) as i64 - 3,
            },
            2 => append(rng.below(4) as u8, 1, 16_000 + rng.below(20_000) as u32),
            _ => append(rng.below(4) as u8, 1 + rng.below(4) as u8, 1 + rng.below(900) as u32),
        };
        steps.push(step);
    }
    let mut w = workload(&format!("random (seed {seed})"), base_opts(d, seg), start, steps);
    if rng.below(2) == 0 {
        w = signed(w);
    }
    w.name = format!("{} {d:?}, segment {seg}, {start:?}, signed {}", w.name, w.signed);
    w
}

// ---------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------

/// A log with several sealed segments, closed cleanly; with `damage`, a torn
/// tail (garbage past the end of the active segment), one index file and the
/// stream table removed, and a leftover temp file.
fn make_template(w: &Workload, damage: bool) -> (tempfile::TempDir, Vec<Rec>) {
    let dir = common::scratch();
    let opts = w.opts.clone();
    let log = Log::open_with(dir.path(), opts.segment_size(4096)).expect("open the template");
    for i in 0..24u64 {
        let s = stream_name((i % 3) as u8);
        let p = vec![payload(1_000_000 + i, 300)];
        log.append(&s, ExpectedVersion::Any, &support::events("Template", &p))
            .expect("template append");
    }
    log.close().expect("close the template");
    let log = Log::open_with(dir.path(), w.opts.clone()).expect("reopen the template");
    let recs = read_view(&log.view().expect("view"), 0);
    log.close().expect("close the template");
    if damage {
        let segs = common::segments(dir.path());
        assert!(segs.len() >= 3, "the template has sealed segments");
        let last = segs.last().expect("a segment");
        let mut rng = common::Rng::new(99);
        let garbage = rng.bytes(300);
        common::edit(last, |b| b.extend_from_slice(&garbage));
        let idx = segs[1].with_extension("idx");
        std::fs::remove_file(&idx).expect("remove an index file");
        std::fs::remove_file(dir.path().join(annal::STREAM_TABLE_FILE)).expect("remove the stream table");
        std::fs::write(dir.path().join("00000000000000000000.idx.tmp"), b"junk").expect("temp file");
    }
    (dir, recs)
}

// ---------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------

/// An attempted call that failed, and what it tried to append.
#[derive(Debug, Clone)]
struct Attempt {
    stream: String,
    payloads: Vec<Vec<u8>>,
}

/// What one run observed.
#[derive(Debug, Default)]
struct Observed {
    /// The fault fired.
    fired: Option<OpRecord>,
    /// A call returned an error.
    errored: bool,
    /// The writer was poisoned.
    poisoned: bool,
    /// The failure was in `Log::open`.
    open_failed: bool,
    ops: Vec<OpRecord>,
}

fn expected_for(v: Option<u64>) -> ExpectedVersion {
    v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// The error of a failing call: the injected `Error::Io` of the operation
/// that failed (its kind and file), or `Error::Poisoned` naming it.
fn assert_clear_error(ctx: &str, e: &Error, fired: Option<&OpRecord>) {
    match e {
        Error::Io { op, path, source } => {
            let f = fired.unwrap_or_else(|| panic!("{ctx}: an I/O error with no fault injected: {e}"));
            assert!(
                source.to_string().contains("injected"),
                "{ctx}: the error is the injected one: {e}"
            );
            assert_eq!(
                f.role,
                Role::Main,
                "{ctx}: a sealer failure surfaces as Poisoned, got {e}"
            );
            assert_eq!(*op, f.kind.error_op(), "{ctx}: the error names the operation: {e}");
            assert_eq!(path, &f.path, "{ctx}: the error names the file: {e}");
        }
        Error::Poisoned { cause } => {
            assert!(fired.is_some(), "{ctx}: poisoned with no fault injected: {e}");
            assert!(cause.contains("injected"), "{ctx}: the cause names the failure: {e}");
        }
        other => panic!("{ctx}: expected Error::Io or Error::Poisoned, got {other:?} ({other})"),
    }
}

fn assert_poisoned<T: std::fmt::Debug>(ctx: &str, r: Result<T, Error>) {
    match r {
        Err(Error::Poisoned { cause }) => assert!(cause.contains("injected"), "{ctx}: cause {cause:?}"),
        other => panic!("{ctx}: expected Error::Poisoned, got {other:?}"),
    }
}

/// Whether `path` is one of the writer's own files: a segment or the head.
fn is_writer_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg") || path.file_name().is_some_and(|n| n == annal::HEAD_FILE)
}

fn in_snapshots(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str() == annal::snapshot_testing::SNAPSHOT_DIR)
}

/// Run `w` in `dir` (prepared) with `fault`; returns what was observed, the
/// acknowledged appends and the attempted ones that failed.
fn run_workload(w: &Workload, dir: &Path, fault: Option<Fault>) -> (Observed, Vec<Ack>, Vec<Attempt>) {
    let ctx = format!("[{}] fault {fault:?}", w.name);
    let io = FaultIo::new();
    let opts = w.opts.clone().io(Arc::new(io.clone()));
    let mut obs = Observed::default();
    let mut acks = Vec::new();
    let mut attempts = Vec::new();
    let armed_at_open = matches!(w.start, Start::RecoverTemplate | Start::Create);
    if armed_at_open {
        io.arm(fault);
    }
    let log = match Log::open_with(dir, opts) {
        Ok(l) => l,
        Err(e) => {
            obs.fired = io.fired();
            assert!(armed_at_open, "{ctx}: open failed with no fault armed: {e}");
            assert_clear_error(&format!("{ctx}: Log::open"), &e, obs.fired.as_ref());
            assert!(
                matches!(e, Error::Io { .. }),
                "{ctx}: a failed open returns the I/O error"
            );
            obs.errored = true;
            obs.open_failed = true;
            obs.ops = io.ops();
            return (obs, acks, attempts);
        }
    };
    if !armed_at_open {
        io.arm(fault);
    }
    let mut first_error: Option<(Error, usize)> = None;
    // Run the steps until one fails and poisons the writer (a failed
    // snapshot save does not: the steps go on).
    for (i, step) in w.steps.iter().enumerate() {
        let tag = i as u64 + 1;
        let res: Result<(), Error> = match *step {
            Step::Append { stream, events, size } => {
                let s = stream_name(stream);
                let p: Vec<Vec<u8>> = (0..events).map(|j| payload(tag * 100 + j as u64, size)).collect();
                let exp = expected_for(log.stream_version(&s).expect("stream_version"));
                match log.append(&s, exp, &support::events("Step", &p)) {
                    Ok(r) => {
                        acks.push(Ack::new(&s, r, p));
                        Ok(())
                    }
                    Err(e) => {
                        attempts.push(Attempt { stream: s, payloads: p });
                        Err(e)
                    }
                }
            }
            Step::Sync => log.sync(),
            Step::Execute { stream, add } => {
                let s = counter_name(stream);
                let p = annal::typed::encode(&CounterEvent::Added(add))
                    .expect("encode")
                    .payload
                    .into_owned();
                let before = log.stream_version(&s).expect("stream_version");
                match repo(&log).execute(&s, &add) {
                    Ok(x) => {
                        let r = x.appended.expect("an event was appended");
                        acks.push(Ack::new(&s, r, vec![p]));
                        // The events are in; the snapshot after them failed.
                        match x.snapshot_error {
                            Some(e) => Err(std::sync::Arc::try_unwrap(e).expect("the only reference")),
                            None => Ok(()),
                        }
                    }
                    Err(ExecuteError::Log(e)) => {
                        let after = log.stream_version(&s).expect("stream_version");
                        if after != before && !matches!(e, Error::Poisoned { .. }) && !log_poisoned(&log) {
                            // The append went in; the snapshot after it failed.
                            let v = after.expect("appended");
                            let pos = log.next_position() - 1;
                            acks.push(Ack::new(
                                &s,
                                support::Appended {
                                    first_position: pos,
                                    last_position: pos,
                                    stream_version: v,
                                },
                                vec![p],
                            ));
                        } else {
                            attempts.push(Attempt {
                                stream: s,
                                payloads: vec![p],
                            });
                        }
                        Err(e)
                    }
                    Err(other) => panic!("{ctx}: execute failed: {other}"),
                }
            }
            Step::Snapshot { stream } => repo(&log).snapshot(&counter_name(stream)).map(|_| ()),
        };
        if let Err(e) = res {
            obs.fired = io.fired();
            assert_clear_error(&format!("{ctx}: step {step:?}"), &e, obs.fired.as_ref());
            obs.errored = true;
            let mark = io.ops().len();
            if log_poisoned(&log) {
                let f = obs.fired.clone().expect("fired");
                assert!(
                    !in_snapshots(&f.path),
                    "{ctx}: a failed snapshot save must not poison the log ({e})"
                );
                first_error = Some((e, mark));
                break;
            }
            // Not poisoned: only a snapshot save may have failed (a snapshot
            // file, or the fsync of the log directory after creating the
            // snapshot folder).
            let f = obs.fired.clone().expect("fired");
            let snapshot_step = matches!(step, Step::Execute { .. } | Step::Snapshot { .. });
            assert!(
                snapshot_step
                    && !matches!(e, Error::Poisoned { .. })
                    && (in_snapshots(&f.path) || (f.kind == OpKind::SyncDir && f.path == dir)),
                "{ctx}: the log must be poisoned after {e} (failed {f:?})"
            );
        }
    }
    let poisoned = first_error.is_some() || log_poisoned(&log);
    if let Some((_, mark)) = &first_error {
        // Poisoned: every later call refuses, and does no I/O on the writer's files.
        for round in 0..2 {
            for s in 0..3u8 {
                let s = stream_name(s);
                let ev = [EventData::new("After", b"after".as_slice())];
                let exp = expected_for(log.stream_version(&s).expect("stream_version"));
                assert_poisoned(&format!("{ctx}: Exact append, round {round}"), log.append(&s, exp, &ev));
                assert_poisoned(
                    &format!("{ctx}: Any append, round {round}"),
                    log.append(&s, ExpectedVersion::Any, &ev),
                );
            }
            assert_poisoned(&format!("{ctx}: sync, round {round}"), log.sync());
            match repo(&log).execute(&counter_name(0), &1) {
                Err(ExecuteError::Log(Error::Poisoned { .. })) => {}
                other => panic!("{ctx}: execute on a poisoned log: {other:?}"),
            }
        }
        let ops = io.ops();
        let late: Vec<&OpRecord> = ops[*mark..]
            .iter()
            .filter(|o| o.role == Role::Main && is_writer_file(&o.path))
            .collect();
        assert!(late.is_empty(), "{ctx}: a poisoned writer did I/O: {late:?}");
    }
    // What was acknowledged is readable from this process's view.
    let view = log.view().expect("view");
    let recs = read_view(&view, 0);
    support::assert_contiguous(&recs);
    support::assert_acks_present(&recs, &acks);
    drop(view);
    let closed = log.close();
    obs.fired = io.fired();
    match closed {
        Ok(()) => assert!(!poisoned, "{ctx}: close of a poisoned log succeeded"),
        Err(e) => {
            assert_clear_error(&format!("{ctx}: close"), &e, obs.fired.as_ref());
            if poisoned {
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "{ctx}: close of a poisoned log: {e}"
                );
            }
            obs.errored = true;
            obs.poisoned |= matches!(e, Error::Poisoned { .. });
        }
    }
    obs.poisoned |= poisoned;
    obs.ops = io.ops();
    (obs, acks, attempts)
}

/// Whether the log refuses work because it is poisoned, without I/O: an
/// append whose expected version cannot match fails with
/// `WrongExpectedVersion` on a healthy log, before anything is written.
fn log_poisoned(log: &Log) -> bool {
    let ev = [EventData::new("Probe", b"probe".as_slice())];
    match log.append("probe", ExpectedVersion::Exact(u64::MAX), &ev) {
        Err(Error::Poisoned { .. }) => true,
        Err(Error::WrongExpectedVersion { .. }) => false,
        other => panic!("probe append: {other:?}"),
    }
}

/// Reopen with the real file system and check everything.
///
/// With `signatures`, `check` also verifies the signed checkpoints (about
/// 90 ms in a debug build, so only for some fault points unless
/// `ANNAL_FAULTS_FULL` is set).
fn verify_after(
    w: &Workload,
    dir: &Path,
    baseline: &[Rec],
    acks: &[Ack],
    attempts: &[Attempt],
    signatures: bool,
    ctx: &str,
) -> bool {
    // No partial snapshot is visible.
    let snaps = dir.join(annal::snapshot_testing::SNAPSHOT_DIR);
    if let Ok(rd) = std::fs::read_dir(&snaps) {
        for e in rd {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "tmp") {
                continue;
            }
            let bytes = std::fs::read(&p).expect("read snapshot");
            annal::snapshot_testing::decode(&p, &bytes)
                .unwrap_or_else(|e| panic!("{ctx}: a visible snapshot file does not decode: {e}"));
        }
    }
    let log =
        Log::open_with(dir, w.opts.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen with the real file system: {e}"));
    let tail_cut = log.recovery().truncated.is_some();
    let recs = read_view(&log.view().expect("view"), 0);
    support::assert_contiguous(&recs);
    let versions = support::assert_stream_versions(&recs);
    assert!(
        recs.len() >= baseline.len(),
        "{ctx}: the records before the run are kept"
    );
    for (a, b) in recs.iter().zip(baseline) {
        assert_eq!(a, b, "{ctx}: a record from before the run changed");
    }
    support::assert_acks_present(&recs, acks);
    // Every other record belongs to an attempt that failed, whole.
    let mut covered = vec![false; recs.len()];
    covered[..baseline.len()].fill(true);
    for a in acks {
        for p in a.result.first_position..=a.result.last_position {
            covered[p as usize] = true;
        }
    }
    let mut used = vec![false; attempts.len()];
    let mut i = 0;
    while i < recs.len() {
        if covered[i] {
            i += 1;
            continue;
        }
        let k = attempts
            .iter()
            .enumerate()
            .position(|(k, a)| {
                !used[k]
                    && recs.len() >= i + a.payloads.len()
                    && a.payloads
                        .iter()
                        .enumerate()
                        .all(|(j, p)| recs[i + j].stream == a.stream && recs[i + j].payload == *p && !covered[i + j])
            })
            .unwrap_or_else(|| {
                panic!(
                    "{ctx}: record {:?} was never acknowledged and is no whole failed append ({attempts:?})",
                    recs[i]
                )
            });
        used[k] = true;
        i += attempts[k].payloads.len();
    }
    // Snapshots agree with the events.
    let r = Repository::<Counter>::new(&log);
    for s in 0..2u8 {
        let with = r.load(&counter_name(s)).expect("load");
        assert!(with.warnings.is_empty(), "{ctx}: snapshot warnings {:?}", with.warnings);
        let replayed = Repository::<Counter>::new(&log)
            .ignore_snapshots()
            .load(&counter_name(s))
            .expect("load");
        assert_eq!(
            with.state,
            replayed.state,
            "{ctx}: snapshot state of {}",
            counter_name(s)
        );
    }
    // Appends go on.
    for (n, s) in ["s-0", "after-reopen"].iter().enumerate() {
        let exp = expected_for(versions.get(*s).copied());
        let p = vec![payload(9_000_000 + n as u64, 64)];
        log.append(s, exp, &support::events("Again", &p))
            .unwrap_or_else(|e| panic!("{ctx}: append after reopen: {e}"));
    }
    log.close().unwrap_or_else(|e| panic!("{ctx}: close after reopen: {e}"));
    let mut co = CheckOptions::default();
    if w.keyed {
        co = co.key(chain_key());
    }
    if w.signed && signatures {
        co = co.public_key(signing_key().public_key());
    }
    let report = annal::check(dir, co).unwrap_or_else(|e| panic!("{ctx}: check: {e}"));
    assert!(report.is_ok(), "{ctx}: check found problems: {:?}", report.problems);
    match &report.chain {
        ChainStatus::Verified { broken: 0, keyed, .. } => assert_eq!(*keyed, w.keyed, "{ctx}"),
        other => panic!("{ctx}: the audit chain does not verify: {other}"),
    }
    assert_eq!(report.records, recs.len() as u64 + 2, "{ctx}: check read every record");
    tail_cut
}

// ---------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------

fn full() -> bool {
    std::env::var("ANNAL_FAULTS_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn modes(kind: OpKind, full: bool) -> Vec<FaultMode> {
    match kind {
        OpKind::Write => vec![FaultMode::NoSpace, FaultMode::Eio, FaultMode::Short],
        _ if full => vec![FaultMode::NoSpace, FaultMode::Eio],
        OpKind::Create | OpKind::Rename | OpKind::CreateDir | OpKind::Reserve => vec![FaultMode::NoSpace],
        _ => vec![FaultMode::Eio],
    }
}

/// Per (role, kind): fault points run, calls that failed, writers poisoned,
/// failures tolerated.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    points: u64,
    errored: u64,
    poisoned: u64,
    tolerated: u64,
    open_failed: u64,
    tail_cut: u64,
}

/// Prepare a directory for `w`: a fresh one, a copy of the template, or a
/// path inside a fresh one that does not exist yet.
fn prepare(w: &Workload, template: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let tmp = common::scratch();
    let dir = match w.start {
        Start::Fresh => tmp.path().to_owned(),
        Start::Template | Start::RecoverTemplate => {
            common::copy_log(template.expect("template"), tmp.path());
            tmp.path().to_owned()
        }
        Start::Create => tmp.path().join("new-log"),
    };
    (tmp, dir)
}

/// Run `w` once clean (enumerating its operations), then once per fault
/// point; returns the tallies.
fn exercise(w: &Workload, full: bool) -> BTreeMap<(Role, OpKind), Tally> {
    let started = std::time::Instant::now();
    let needs_template = matches!(w.start, Start::Template | Start::RecoverTemplate);
    let (template, baseline) = if needs_template {
        let (d, recs) = make_template(w, w.start == Start::RecoverTemplate);
        (Some(d), recs)
    } else {
        (None, Vec::new())
    };
    let tpath = template.as_ref().map(|t| t.path());

    // The clean run.
    let (_tmp, dir) = prepare(w, tpath);
    let (obs, acks, attempts) = run_workload(w, &dir, None);
    let ctx = format!("[{}] clean run", w.name);
    assert!(!obs.errored, "{ctx}: a call failed with no fault");
    assert!(attempts.is_empty());
    verify_after(w, &dir, &baseline, &acks, &attempts, true, &ctx);
    let mut counts: BTreeMap<(Role, OpKind), u64> = BTreeMap::new();
    for o in &obs.ops {
        *counts.entry((o.role, o.kind)).or_default() += 1;
    }
    if w.expect_overlap && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        // Overlapped hashing writes a large chunk with its frames hidden,
        // then each frame's header alone (72 bytes; a checkpoint with its
        // signature, 176): every one of these writes is a fault point.
        let seg_writes = |o: &&OpRecord| o.kind == OpKind::Write && o.path.extension().is_some_and(|e| e == "seg");
        let rewrites = obs
            .ops
            .iter()
            .filter(seg_writes)
            .filter(|o| o.len == 72 || o.len == 176)
            .count();
        let chunks = obs.ops.iter().filter(seg_writes).filter(|o| o.len >= 16 << 10).count();
        assert!(rewrites > 0, "{ctx}: overlapped hashing was not exercised");
        println!(
            "[{}] overlapped hashing: {chunks} chunks of 16 KiB or more, {rewrites} frame header rewrites",
            w.name
        );
    }
    println!("[{}] operations: {counts:?}", w.name);

    let mut tallies: BTreeMap<(Role, OpKind), Tally> = BTreeMap::new();
    let mut points = 0u64;
    for (&(role, kind), &count) in &counts {
        for n in 0..count {
            for mode in modes(kind, full) {
                let fault = Fault { role, kind, n, mode };
                let ctx = format!("[{}] fault {fault:?}", w.name);
                let (_tmp, dir) = prepare(w, tpath);
                let (obs, acks, attempts) = run_workload(w, &dir, Some(fault));
                let fired = obs
                    .fired
                    .clone()
                    .unwrap_or_else(|| panic!("{ctx}: the fault point was not reached"));
                let tolerated = !obs.errored;
                if tolerated {
                    // Only a reserve (a hint) and the removal of a stale temp
                    // file before writing it may fail unnoticed.
                    let ok = fired.kind == OpKind::Reserve
                        || (fired.kind == OpKind::Remove && fired.path.extension().is_some_and(|e| e == "tmp"));
                    assert!(ok, "{ctx}: the failure of {fired:?} went unreported");
                }
                points += 1;
                let signatures = full || points % 8 == 1;
                let tail_cut = verify_after(w, &dir, &baseline, &acks, &attempts, signatures, &ctx);
                let t = tallies.entry((role, kind)).or_default();
                t.points += 1;
                t.errored += u64::from(obs.errored);
                t.poisoned += u64::from(obs.poisoned);
                t.tolerated += u64::from(tolerated);
                t.open_failed += u64::from(obs.open_failed);
                t.tail_cut += u64::from(tail_cut);
            }
        }
    }
    let total: u64 = tallies.values().map(|t| t.points).sum();
    println!("[{}] {total} fault points in {:.1?}:", w.name, started.elapsed());
    for ((role, kind), t) in &tallies {
        println!(
            "    {role:?} {kind:?}: {} points, {} failed a call, {} poisoned, {} tolerated, {} failed the open, {} tails cut",
            t.points, t.errored, t.poisoned, t.tolerated, t.open_failed, t.tail_cut
        );
    }
    assert_eq!(
        ANNAL_THREAD_PANICS.load(Ordering::SeqCst),
        0,
        "a thread of annal panicked"
    );
    tallies
}

fn exercise_all(ws: Vec<Workload>) {
    watch_panics();
    let full = full();
    let mut grand: HashMap<OpKind, u64> = HashMap::new();
    for w in &ws {
        for ((_, kind), t) in exercise(w, full) {
            *grand.entry(kind).or_default() += t.points;
        }
    }
    let mut g: Vec<_> = grand.into_iter().collect();
    g.sort();
    println!(
        "total: {} fault points over {} workloads: {g:?}",
        g.iter().map(|x| x.1).sum::<u64>(),
        ws.len()
    );
}

#[test]
fn appends_syncs_and_close() {
    let ws = fixed_workloads();
    exercise_all(ws.into_iter().take(2).collect());
}

#[test]
fn segment_rolls_and_the_sealer() {
    let ws = fixed_workloads();
    exercise_all(ws.into_iter().skip(2).take(1).collect());
}

#[test]
fn keyed_chain_signed_checkpoints_and_overlapped_hashing() {
    let ws = fixed_workloads();
    exercise_all(ws.into_iter().skip(3).take(1).collect());
}

#[test]
fn snapshot_writes() {
    let ws = fixed_workloads();
    exercise_all(ws.into_iter().skip(4).take(1).collect());
}

#[test]
fn recovery_and_creation_on_open() {
    let ws = fixed_workloads();
    exercise_all(ws.into_iter().skip(5).collect());
}

#[test]
fn more_workloads_when_full() {
    if full() {
        exercise_all(more_workloads());
    }
}

#[test]
fn random_workloads() {
    let seed = common::seed("random_workloads");
    let n = if full() { 8 } else { 1 };
    exercise_all((0..n).map(|i| random_workload(seed.wrapping_add(i))).collect());
}

/// Regression: a roll that failed (or crashed) after sealing a segment and
/// creating the next one, but before its header and the sealed segment's
/// index were written. Recovery reinitializes the new segment (reading the
/// sealed one's last timestamp through its index, rebuilt in memory since
/// the file is missing), rebuilds the index file, then the stream table:
/// which must point at the rows of the index file, not at the "no row" of
/// the in-memory index (it did, and `annal::check` reported the table).
#[test]
fn torn_new_segment_with_a_missing_index_rebuilds_a_valid_stream_table() {
    let dir = common::scratch();
    let opts = base_opts(Durability::Buffered, 4096);
    let log = Log::open_with(dir.path(), opts.clone()).expect("open");
    for i in 0..20u64 {
        let p = vec![payload(i, 300)];
        log.append(
            &stream_name((i % 3) as u8),
            ExpectedVersion::Any,
            &support::events("E", &p),
        )
        .expect("append");
    }
    log.close().expect("close");
    let segs = common::segments(dir.path());
    assert!(segs.len() >= 2);
    let (last, prev) = (&segs[segs.len() - 1], &segs[segs.len() - 2]);
    // The new segment was created, its header never written.
    std::fs::write(last, b"").expect("truncate the newest segment");
    std::fs::remove_file(dir.path().join(annal::HEAD_FILE)).expect("remove head");
    std::fs::remove_file(prev.with_extension("idx")).expect("remove index");
    std::fs::remove_file(dir.path().join(annal::STREAM_TABLE_FILE)).expect("remove table");

    let log = Log::open_with(dir.path(), opts).expect("reopen");
    assert!(log.recovery().reinitialized.is_some(), "{:?}", log.recovery());
    assert!(log.recovery().rebuilt_stream_table);
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
}

/// Regression: when the sealer thread failed, an append racing with it could
/// see the writer poisoned before the cause was recorded, and returned
/// `Error::Poisoned` with an empty cause. Threads append while the sealer's
/// first index write fails; every `Poisoned` must name the failure. (A race:
/// a stress test, which without the fix failed in some runs, not all.)
#[test]
fn poisoned_by_the_sealer_always_names_the_cause() {
    let rounds = if full() { 1000 } else { 150 };
    for round in 0..rounds {
        let dir = common::scratch();
        let io = FaultIo::new();
        let opts = base_opts(Durability::Buffered, 4096).io(Arc::new(io.clone()));
        let log = Arc::new(Log::open_with(dir.path(), opts).expect("open"));
        io.arm(Some(Fault {
            role: Role::Sealer,
            kind: OpKind::Write,
            n: 0,
            mode: FaultMode::Eio,
        }));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let p = vec![vec![b'x'; 700]];
                    let ev = support::events("E", &p);
                    let s = format!("s-{t}");
                    for _ in 0..1_000_000 {
                        if let Err(e) = log.append(&s, ExpectedVersion::Any, &ev) {
                            return e;
                        }
                    }
                    panic!("the sealer's failure never surfaced");
                })
            })
            .collect();
        for h in threads {
            let err = h.join().expect("appender");
            match &err {
                Error::Poisoned { cause } => assert!(
                    cause.contains("injected EIO"),
                    "round {round}: the cause of the poisoning is missing: {err}"
                ),
                other => panic!("round {round}: expected Poisoned, got {other}"),
            }
        }
    }
}

/// A snapshot that cannot be written after a command's append does not make
/// `execute` fail: the command's events are in the log (a retry would apply
/// it twice). The error is reported in `Executed::snapshot_error`, the log
/// stays usable, and the aggregate loads from its events.
#[test]
fn a_failed_snapshot_after_an_append_is_reported_not_returned_as_failure() {
    let dir = common::scratch();
    let io = Arc::new(FaultIo::new());
    let log = Log::open_with(dir.path(), Options::default().format_version(2).io(io.clone())).expect("open");
    let repo = repo(&log);
    repo.execute("counter-x", &1).expect("first command");
    // The snapshot due after the second event: fail the creation of its
    // temp file (the first file created from here on).
    io.arm(Some(Fault {
        role: Role::Main,
        kind: OpKind::Create,
        n: 0,
        mode: FaultMode::NoSpace,
    }));
    let x = repo.execute("counter-x", &2).expect("the append went in");
    io.disarm();
    assert!(x.appended.is_some());
    assert!(!x.snapshot_written);
    let e = x.snapshot_error.expect("the snapshot failure is reported");
    assert!(matches!(&*e, Error::Io { op: "create", .. }), "{e}");
    // Not poisoned: the next command appends.
    repo.execute("counter-x", &3).expect("the log stays usable");
    assert_eq!(repo.load("counter-x").expect("load").state.value, 6);
}
