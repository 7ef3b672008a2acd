//! Simulated power loss at thousands of crash points (issue 8).
//!
//! Random seeded workloads (appends with Buffered and Fsync durability,
//! explicit syncs, small segments so that segments roll and index files and
//! the stream table are written, aggregates with snapshots, the audit chain,
//! sometimes keyed or signed, events that name subjects and erasures of
//! subjects, reopen cycles) run on [`support::PowerIo`], a
//! power-cut simulator on the I/O seam. Before every `sync`/`sync_dir` and a
//! sample of the other operations it takes crash images: durable bytes plus,
//! per pending write, dropped / kept / kept in part / torn into garbage, files
//! grown with garbage, pending directory operations lost or kept. Each image
//! is then checked:
//!
//! - a `Reader` on the image, before any writer, returns only records that
//!   were written, contiguous, whole batches, never fails once events were
//!   acknowledged, and changes no file;
//! - `Log::open` succeeds; recovery never cuts a file below what its last
//!   sync made durable; every durable-acknowledged event is present and
//!   intact; the log is a prefix of what was written, ending at a batch
//!   boundary (no record of an incomplete batch); an event whose subject's
//!   erasure returned before the crash reads as erased (no erased key comes
//!   back), one whose erasure was in flight reads either way;
//! - aggregates load the same state with and without snapshots (a damaged or
//!   lost snapshot is skipped, never wrong);
//! - an append continues at the next position; after close, `annal::check`
//!   finds no problem, the audit chain verifies, signed checkpoints verify.
//!
//! A reader on a crash image stops where the head published the log's end;
//! the head is written in place without a sync per append, so a reader may
//! show fewer than the acknowledged events until a writer opens the log
//! (counted and printed, not a failure).
//!
//! Two regression tests below pin the bugs the simulator found.
//!
//! Environment:
//! - `ANNAL_TEST_SEED`: the base seed (printed).
//! - `ANNAL_POWER_TRACE=1`: print every I/O operation with its index;
//!   `ANNAL_POWER_DUMP_OP=N`: keep a copy of the images taken before
//!   operation N in the temp dir (debugging aids).
//! - `ANNAL_POWER_VERBOSE=1`: print each workload's setup and time.
//! - `ANNAL_POWER_POINTS`: how many crash images to check (default 2000,
//!   about 30 s in a debug build); e.g. `ANNAL_POWER_POINTS=12000` for a long
//!   run (`cargo test --test power_loss power_cut -- --nocapture`).

mod common;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use annal::{
    ChainKey, ChainStatus, CheckOptions, Durability, EventData, ExpectedVersion, Log, Options, Repository, SigningKey,
};
use support::{CapturePlan, CrashImage, ImageStats, PointKind, PowerCtx, PowerIo, Rng};

// ---------------------------------------------------------------------------
// An aggregate whose state depends on every event and their order
// ---------------------------------------------------------------------------

use common::{Tally, TallyEvent};

const TALLIES: [&str; 2] = ["tally-a", "tally-b"];

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// One record as the workload wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    stream: String,
    version: u64,
    event_type: String,
    payload: Vec<u8>,
}

/// What the workload knows of an event that names a subject (spec 3.8).
#[derive(Debug, Clone, Default)]
struct Sealed {
    subject: Option<String>,
    /// The erasure (its index in `Run::erasures`) that erases it: the first
    /// erasure of its subject that started after it was appended.
    erased_by: Option<usize>,
}

/// Options of one workload.
#[derive(Clone)]
struct Setup {
    segment_size: u64,
    chain_key: Option<[u8; 32]>,
    signing: Option<([u8; 32], u64)>,
}

impl Setup {
    fn options(&self) -> Options {
        let mut o = Options::default().segment_size(self.segment_size);
        if let Some(k) = self.chain_key {
            o = o.chain_key(ChainKey::from_bytes(k));
        }
        if let Some((k, every)) = self.signing {
            o = o.signing_key(SigningKey::from_bytes(k)).checkpoint_every(every);
        }
        o
    }
    /// `signatures`: verify the signed checkpoints too (slow in a debug
    /// build: done for a sample of the images).
    fn check_options(&self, signatures: bool) -> CheckOptions {
        let mut c = CheckOptions::default();
        if let Some(k) = self.chain_key {
            c = c.key(ChainKey::from_bytes(k));
        }
        if let Some((k, _)) = self.signing.filter(|_| signatures) {
            c = c.public_key(SigningKey::from_bytes(k).public_key());
        }
        c
    }
    fn describe(&self) -> String {
        format!(
            "segment_size {}, keyed {}, signed {:?}",
            self.segment_size,
            self.chain_key.is_some(),
            self.signing.map(|s| s.1)
        )
    }
}

/// Totals over the whole run.
#[derive(Debug, Default)]
struct Totals {
    workloads: u64,
    ops: u64,
    points: HashSet<(u64, u64)>,
    sync_points: u64,
    op_points: u64,
    images: u64,
    modes: BTreeMap<&'static str, u64>,
    stats: ImageStats,
    images_torn: u64,
    images_partial: u64,
    images_garbage_tail: u64,
    images_lost_dir: u64,
    truncated_on_open: u64,
    reader_errors: u64,
    reader_behind: u64,
    reader_open_errors: u64,
    reader_records: u64,
    acked_events: u64,
    snapshot_warnings: u64,
    snapshot_used: u64,
    empty_images: u64,
    signature_checks: u64,
    signatures_verified: u64,
    /// Images where the reader returned fewer than the acknowledged events
    /// and said the log is unrecovered.
    reader_unrecovered: u64,
    /// Images of a cleanly closed log (the reader said nothing).
    closed_images: u64,
    /// Erasures of subjects the workloads ran, and records read as erased.
    erasures: u64,
    erased_reads: u64,
    /// Time spent: writing images, reader, open+read, aggregates, append+close, check.
    phase: [std::time::Duration; 6],
}

struct Run<'a> {
    setup: Setup,
    io: PowerIo,
    wants: Vec<Want>,
    /// Per position: its subject, and the erasure that erases it.
    sealed: Vec<Sealed>,
    /// The subjects erased, in order (the last one may be in flight).
    erasures: Vec<String>,
    batch_ends: HashSet<u64>,
    versions: HashMap<String, u64>,
    ctx: PowerCtx,
    label: String,
    totals: &'a mut Totals,
    /// The images being checked are of a cleanly closed log.
    closed: bool,
}

impl Run<'_> {
    fn note(&mut self) {
        self.io.set_ctx(self.ctx);
    }

    fn record(&mut self, stream: &str, r: &annal::AppendResult, events: &[(String, Vec<u8>)]) {
        self.record_sealed(stream, r, events, None);
    }

    /// [`Run::record`] of events that name `subject`.
    fn record_sealed(
        &mut self,
        stream: &str,
        r: &annal::AppendResult,
        events: &[(String, Vec<u8>)],
        subject: Option<&str>,
    ) {
        assert_eq!(r.first_position, self.wants.len() as u64, "{}", self.label);
        for _ in events {
            self.sealed.push(Sealed {
                subject: subject.map(str::to_owned),
                erased_by: None,
            });
        }
        for (ty, payload) in events {
            let v = self.versions.get(stream).map_or(0, |v| v + 1);
            self.versions.insert(stream.to_owned(), v);
            self.wants.push(Want {
                stream: stream.to_owned(),
                version: v,
                event_type: ty.clone(),
                payload: payload.clone(),
            });
        }
        assert_eq!(r.last_position + 1, self.wants.len() as u64, "{}", self.label);
        self.batch_ends.insert(self.wants.len() as u64);
        self.ctx.written = self.wants.len() as u64;
    }

    /// Check every image taken since the last call.
    fn check_images(&mut self) {
        for img in self.io.take_images() {
            check_image(self, &img);
        }
    }
}

fn run_workload(seed: u64, budget: u64, totals: &mut Totals) {
    let mut rng = Rng::new(seed);
    let setup = Setup {
        segment_size: *[1536u64, 2048, 4096, 8192].get(rng.range(0, 3) as usize).expect("size"),
        chain_key: (rng.range(0, 3) == 0).then(|| seed_bytes(&mut rng)),
        signing: (rng.range(0, 3) == 0).then(|| (seed_bytes(&mut rng), rng.range(6, 24))),
    };
    let dir = common::scratch();
    let root = dir.path().join("log");
    std::fs::create_dir(&root).expect("create log dir");
    let plan = CapturePlan {
        per_sync: 1 + (rng.range(0, 2) == 0) as u32,
        op_permille: 150,
        per_op: 1,
        seed: seed ^ 0x5EED,
    };
    let io = PowerIo::new(&root, plan);
    let label = format!("workload seed {seed} ({})", setup.describe());
    // Signing and verifying are slow in a debug build: fewer images there.
    let budget = if setup.signing.is_some() { budget / 4 } else { budget };
    let mut run = Run {
        setup: setup.clone(),
        io: io.clone(),
        wants: Vec::new(),
        sealed: Vec::new(),
        erasures: Vec::new(),
        batch_ends: HashSet::from([0]),
        versions: HashMap::new(),
        ctx: PowerCtx::default(),
        label,
        totals,
        closed: false,
    };
    run.totals.workloads += 1;
    if std::env::var_os("ANNAL_POWER_VERBOSE").is_some() {
        println!("{}", run.label);
    }
    let start_images = run.totals.images;
    let mut durability = if rng.range(0, 1) == 0 {
        Durability::Buffered
    } else {
        Durability::Fsync
    };
    let mut log = Some(
        Log::open_with(&root, setup.options().durability(durability).io(Arc::new(io.clone()))).expect("create the log"),
    );
    run.check_images();
    let steps = rng.range(25, 60);
    for step in 0..steps {
        if run.totals.images - start_images >= budget {
            break;
        }
        let l = log.as_ref().expect("open log");
        match rng.range(0, 99) {
            0..=5 => {
                // Erase a subject (spec 22): its events read as erased once
                // it returns, in every image taken after; before, as written.
                let who = format!("p{}", rng.range(0, 2));
                let i = run.erasures.len();
                for w in run.sealed.iter_mut() {
                    if w.subject.as_deref() == Some(&*who) && w.erased_by.is_none() {
                        w.erased_by = Some(i);
                    }
                }
                run.erasures.push(who.clone());
                run.totals.erasures += 1;
                l.erase_subject(&who).expect("erase");
                run.ctx.erased = run.erasures.len() as u64;
                run.note();
            }
            6..=54 => {
                let stream = format!("s-{}", rng.range(0, 4));
                let subject = (rng.range(0, 2) == 0).then(|| format!("p{}", rng.range(0, 2)));
                let n = rng.range(1, 4);
                let events: Vec<(String, Vec<u8>)> = (0..n)
                    .map(|i| {
                        let len = rng.range(1, 400) as usize;
                        (
                            format!("T{}", (step + i) % 3),
                            common::payload(seed ^ (step << 8) ^ i, len),
                        )
                    })
                    .collect();
                let data: Vec<EventData<'_>> = events
                    .iter()
                    .map(|(t, p)| {
                        let e = EventData::new(t.clone(), p.as_slice());
                        match &subject {
                            Some(s) => e.with_subject(s.as_str()),
                            None => e,
                        }
                    })
                    .collect();
                let r = l.append(&stream, ExpectedVersion::Any, &data).expect("append");
                run.record_sealed(&stream, &r, &events, subject.as_deref());
                if durability == Durability::Fsync {
                    run.ctx.acked = run.wants.len() as u64;
                }
                run.note();
            }
            55..=69 => {
                let stream = TALLIES[rng.range(0, 1) as usize];
                let values: Vec<i64> = (0..rng.range(1, 3)).map(|_| rng.range(0, 200) as i64 - 50).collect();
                let repo = Repository::<Tally>::new(l).snapshot_every(rng.range(2, 6), 2);
                let ex = repo.execute(stream, &values).expect("execute");
                let r = ex.appended.expect("events appended");
                let events: Vec<(String, Vec<u8>)> = values
                    .iter()
                    .map(|v| {
                        let p = postcard::to_allocvec(&TallyEvent::Added(*v)).expect("encode");
                        ("Added".to_owned(), p)
                    })
                    .collect();
                run.record(stream, &r, &events);
                if durability == Durability::Fsync || ex.snapshot_written {
                    // A snapshot save syncs the log first.
                    run.ctx.acked = run.wants.len() as u64;
                }
                if ex.snapshot_written {
                    run.ctx.snapshots += 1;
                }
                run.note();
            }
            70..=79 => {
                l.sync().expect("sync");
                run.ctx.acked = run.wants.len() as u64;
                run.note();
            }
            80..=87 => {
                let stream = TALLIES[rng.range(0, 1) as usize];
                let repo = Repository::<Tally>::new(l);
                if repo.snapshot(stream).expect("snapshot").is_some() {
                    run.ctx.acked = run.wants.len() as u64;
                    run.ctx.snapshots += 1;
                    run.note();
                }
            }
            88..=93 => {
                // A reader on the live log sees everything written.
                let recs = common::read_all(&l.view().expect("view"), 0).expect("read live");
                assert_eq!(recs.len(), run.wants.len(), "{}", run.label);
            }
            _ => {
                // Reopen: a clean close (everything durable), or a killed
                // process (nothing lost, nothing synced by a close).
                let l = log.take().expect("open log");
                if rng.range(0, 1) == 0 {
                    l.close().expect("close");
                    run.ctx.acked = run.wants.len() as u64;
                    run.note();
                } else {
                    drop(l);
                }
                durability = if rng.range(0, 1) == 0 {
                    Durability::Buffered
                } else {
                    Durability::Fsync
                };
                let l = Log::open_with(&root, setup.options().durability(durability).io(Arc::new(io.clone())))
                    .unwrap_or_else(|e| panic!("{}: reopen the live log: {e}", run.label));
                assert_eq!(l.next_position(), run.wants.len() as u64, "{}", run.label);
                log = Some(l);
            }
        }
        run.check_images();
    }
    // A last crash point after the final operation, then a clean close, and
    // a crash point after it: images of a cleanly closed log.
    io.capture_now(2);
    run.check_images();
    if let Some(l) = log.take() {
        l.close().unwrap_or_else(|e| panic!("{}: close: {e}", run.label));
    }
    run.check_images();
    run.closed = true;
    io.capture_now(1);
    run.check_images();
    io.set_enabled(false);
    // The model agrees with the live directory (the simulator's self-check).
    let model = io.current_files();
    for (rel, bytes) in &model {
        let live = std::fs::read(root.join(rel)).expect("read live file");
        assert!(
            &live == bytes,
            "{}: the model of {} differs from the live file",
            run.label,
            rel.display()
        );
    }
    run.totals.ops += io.ops();
}

fn seed_bytes(rng: &mut Rng) -> [u8; 32] {
    let mut k = [0u8; 32];
    for b in &mut k {
        *b = rng.next_u64() as u8;
    }
    k
}

// ---------------------------------------------------------------------------
// Checking one crash image
// ---------------------------------------------------------------------------

fn check_image(run: &mut Run<'_>, img: &CrashImage) {
    let t = &mut *run.totals;
    t.images += 1;
    if t.points.insert((t.workloads, img.op)) {
        match img.kind {
            PointKind::Sync => t.sync_points += 1,
            _ => t.op_points += 1,
        }
    }
    *t.modes.entry(img.mode).or_default() += 1;
    t.stats.add(&img.stats);
    t.images_torn += (img.stats.torn_writes > 0) as u64;
    t.images_partial += (img.stats.partial_writes > 0) as u64;
    t.images_garbage_tail += (img.stats.garbage_tails > 0) as u64;
    t.images_lost_dir += (img.stats.lost_dir_ops > 0) as u64;
    t.acked_events += img.ctx.acked;

    let label = format!(
        "{}: crash before op {} ({:?}, variant {}, mode {}, acked {}, written {})",
        run.label, img.op, img.kind, img.variant, img.mode, img.ctx.acked, img.ctx.written
    );
    let mut clock = Instant::now();
    let mut lap = |t: &mut Totals, i: usize| {
        t.phase[i] += clock.elapsed();
        clock = Instant::now();
    };
    let dir = common::scratch();
    img.write_to(dir.path());
    lap(t, 0);
    if let Ok(op) = std::env::var("ANNAL_POWER_DUMP_OP")
        && op == img.op.to_string()
    {
        // Debugging aid: keep a copy of this image.
        let keep = std::env::temp_dir().join(format!("power-dump-{}-{}", img.op, img.variant));
        let _ = std::fs::remove_dir_all(&keep);
        img.write_to(&keep);
        eprintln!("image kept in {}; files {:?}", keep.display(), img.stats);
    }
    let has_segments = img.files.keys().any(|p| p.extension().is_some_and(|e| e == "seg"));
    if !has_segments {
        // The power went before the first segment was durable.
        assert_eq!(img.ctx.acked, 0, "{label}: no segment, yet events were acknowledged");
        t.empty_images += 1;
        return;
    }

    // 1. A reader before any writer: never garbage, never changes a file.
    let before = tree(dir.path());
    match annal::Reader::open(dir.path()) {
        Err(e) => {
            // Only while no segment exists (handled above): NotALog.
            panic!("{label}: Reader::open: {e}");
        }
        Ok(reader) => match reader.view() {
            Err(e) => {
                // Only while nothing was acknowledged (a first segment torn
                // while being created); never hiding acknowledged events.
                assert_eq!(img.ctx.acked, 0, "{label}: Reader::view: {e}");
                t.reader_open_errors += 1;
            }
            Ok(view) => {
                let (recs, err) = common::read_until_err(&view, 0);
                if err.is_some() {
                    t.reader_errors += 1;
                }
                t.reader_records += recs.len() as u64;
                for (i, r) in recs.iter().enumerate() {
                    assert_eq!(r.position, i as u64, "{label}: reader positions");
                    assert_want(&run.wants, &run.sealed, img.ctx.erased, r, &label, "reader");
                }
                assert!(
                    run.batch_ends.contains(&(recs.len() as u64)),
                    "{label}: the reader returned {} records, part of a batch (error: {err:?})",
                    recs.len()
                );
                // A reader stops where the head published the log's end; the
                // head is not synced with every append, so after a power cut a
                // reader may see fewer than the acknowledged events (a writer's
                // open restores them, checked below). Never silently: the view
                // says it cannot vouch for the log from a position at or
                // before the first acknowledged event it misses.
                let missing = recs.len() as u64;
                if missing < img.ctx.acked {
                    t.reader_behind += 1;
                    let u = view.unrecovered().unwrap_or_else(|| {
                        panic!(
                            "{label}: the reader returned {missing} of {} acknowledged events without saying the log is unrecovered (error: {err:?})",
                            img.ctx.acked
                        )
                    });
                    assert!(u.position <= missing, "{label}: {u:?} vouches for a missing event");
                    t.reader_unrecovered += 1;
                }
                if run.closed {
                    assert_eq!(view.unrecovered(), None, "{label}: a cleanly closed log");
                    assert!(err.is_none(), "{label}: reading a cleanly closed log: {err:?}");
                    t.closed_images += 1;
                }
            }
        },
    }
    assert!(tree(dir.path()) == before, "{label}: a reader changed the image");
    lap(t, 1);

    // 2. The writer opens it.
    let opts = run.setup.options();
    let log = Log::open_with(dir.path(), opts.clone()).unwrap_or_else(|e| panic!("{label}: Log::open: {e}"));
    let rec = log.recovery().clone();
    if let Some(tr) = &rec.truncated {
        t.truncated_on_open += 1;
        let rel = tr.path.strip_prefix(dir.path()).expect("truncated file in the image");
        if let Some(&d) = img.durable_len.get(rel) {
            assert!(
                tr.offset >= d,
                "{label}: recovery cut {} at {} below its durable length {d}: {tr:?}",
                rel.display(),
                tr.offset
            );
        }
    }
    let recs = common::read_all(&log.view().expect("view"), 0).unwrap_or_else(|e| panic!("{label}: read: {e}"));
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.position, i as u64, "{label}: positions");
        assert_want(&run.wants, &run.sealed, img.ctx.erased, r, &label, "log");
        t.erased_reads += r.erased as u64;
    }
    let n = recs.len() as u64;
    assert!(
        n >= img.ctx.acked,
        "{label}: {n} records after recovery ({rec:?}), {} acknowledged",
        img.ctx.acked
    );
    // (Images are checked after the step that took them: `wants` holds the
    // batch that was in flight at the crash point.)
    assert!(
        n <= run.wants.len() as u64,
        "{label}: {n} records, only {} written",
        run.wants.len()
    );
    assert!(
        run.batch_ends.contains(&n),
        "{label}: the log ends at {n}, inside a batch (incomplete batch visible)"
    );

    lap(t, 2);
    // 3. Aggregates: snapshots never change the loaded state.
    for s in TALLIES {
        let with = Repository::<Tally>::new(&log)
            .load(s)
            .unwrap_or_else(|e| panic!("{label}: load {s}: {e}"));
        let without = Repository::<Tally>::new(&log)
            .ignore_snapshots()
            .load(s)
            .unwrap_or_else(|e| panic!("{label}: load {s} without snapshots: {e}"));
        assert_eq!(with.state, without.state, "{label}: {s}: {:?}", with.warnings);
        assert_eq!(with.version, without.version, "{label}: {s}");
        t.snapshot_warnings += with.warnings.len() as u64;
        t.snapshot_used += with.snapshot_version.is_some() as u64;
    }

    lap(t, 3);
    // 4. Appends continue.
    let r = log
        .append(
            "after-crash",
            ExpectedVersion::NoStream,
            &[EventData::new("Resumed", b"x".as_slice())],
        )
        .unwrap_or_else(|e| panic!("{label}: append after recovery: {e}"));
    assert_eq!(r.first_position, n, "{label}");
    log.close().unwrap_or_else(|e| panic!("{label}: close: {e}"));

    lap(t, 4);
    // 5. check: no problem, the chain verifies, signatures verify.
    let signatures = run.setup.signing.is_some() && (t.images.is_multiple_of(8) || img.kind == PointKind::Explicit);
    let report =
        annal::check(dir.path(), run.setup.check_options(signatures)).unwrap_or_else(|e| panic!("{label}: check: {e}"));
    assert!(report.is_ok(), "{label}: check problems: {:#?}", report.problems);
    assert_eq!(report.records, n + 1, "{label}");
    match &report.chain {
        ChainStatus::Verified { broken: 0, .. } => {}
        other => panic!("{label}: chain not verified: {other}"),
    }
    if signatures {
        let s = report.signatures.as_ref().expect("signatures checked");
        t.signature_checks += 1;
        t.signatures_verified += s.verified;
    }
    lap(t, 5);
}

/// Relative path -> bytes of every file under `dir` (recursively).
fn tree(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut BTreeMap<std::path::PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).expect("read dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_owned();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `r` is what was written at its position; an event whose subject's
/// erasure had returned (`erased` erasures had, when the image was taken)
/// reads as erased, one whose subject's erasure was in flight may read
/// either way, and no erased key comes back.
fn assert_want(wants: &[Want], sealed: &[Sealed], erased: u64, r: &common::Rec, label: &str, who: &str) {
    let i = r.position as usize;
    let w = wants
        .get(i)
        .unwrap_or_else(|| panic!("{label}: {who} returned position {} never written", r.position));
    let erased_by = sealed.get(i).and_then(|s| s.erased_by);
    let must = erased_by.is_some_and(|e| (e as u64) < erased);
    let may = erased_by.is_some_and(|e| e as u64 == erased);
    if r.erased {
        assert!(
            must || may,
            "{label}: {who}: record {} reads as erased, its subject was not",
            r.position
        );
        assert!(
            r.payload.is_empty() && r.metadata.is_empty(),
            "{label}: {who}: erased, yet a payload"
        );
        return;
    }
    assert!(!must, "{label}: {who}: record {}: an erased key came back", r.position);
    let got = Want {
        stream: r.stream.clone(),
        version: r.stream_version,
        event_type: r.event_type.clone(),
        payload: r.payload.clone(),
    };
    assert!(
        &got == w,
        "{label}: {who}: record {} is not what was written: {got:?} vs {w:?}",
        r.position
    );
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn power_cut_at_thousands_of_crash_points() {
    let base = common::seed("power_cut_at_thousands_of_crash_points");
    let target: u64 = std::env::var("ANNAL_POWER_POINTS")
        .ok()
        .map(|v| v.parse().expect("ANNAL_POWER_POINTS must be a number"))
        .unwrap_or(2000);
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut workload_time = std::time::Duration::ZERO;
    let mut i = 0u64;
    while totals.images < target {
        let seed = base.wrapping_add(i);
        // Each workload checks at most a share of the images, so that many
        // workloads (setups) are covered.
        let w = Instant::now();
        let before = totals.images;
        run_workload(seed, (target / 10).max(50), &mut totals);
        workload_time += w.elapsed();
        if std::env::var_os("ANNAL_POWER_VERBOSE").is_some() {
            println!("  {} images in {:?}", totals.images - before, w.elapsed());
        }
        i += 1;
    }
    let t = &totals;
    println!(
        "power loss: {} workloads, {} I/O operations, {} crash points ({} before a sync or directory sync, {} before another operation or at the end), {} images checked in {:.1?}",
        t.workloads,
        t.ops,
        t.points.len(),
        t.sync_points,
        t.op_points,
        t.images,
        start.elapsed()
    );
    println!("  image modes: {:?}", t.modes);
    println!(
        "  images with torn writes {}, with partial writes {}, with garbage tails {}, with lost directory operations {}, without any segment {}",
        t.images_torn, t.images_partial, t.images_garbage_tail, t.images_lost_dir, t.empty_images
    );
    println!("  outcomes: {:?}", t.stats);
    println!(
        "  recovery cut a torn tail in {} images; readers stopped at an error in {} images ({} records read), failed (Reader::view) on {} images with nothing acknowledged, returned fewer than the acknowledged events in {} images; {} acknowledged events verified; snapshots used {} times, skipped with a warning {} times",
        t.truncated_on_open,
        t.reader_errors,
        t.reader_records,
        t.reader_open_errors,
        t.reader_behind,
        t.acked_events,
        t.snapshot_used,
        t.snapshot_warnings
    );
    println!(
        "  signed checkpoints verified by check on {} images ({} signatures)",
        t.signature_checks, t.signatures_verified
    );
    println!("  time in workloads (including image checks) {workload_time:?}");
    println!(
        "  time in image checks (write, reader, open+read, aggregates, append+close, check): {:?}",
        t.phase
    );
    println!(
        "  readers behind the acknowledged events said the log is unrecovered in {} images; {} images of a cleanly closed log read in full with no signal",
        t.reader_unrecovered, t.closed_images
    );
    println!(
        "  {} erasures of subjects; {} records read as erased after recovery",
        t.erasures, t.erased_reads
    );
    assert!(t.images_torn > 0 && t.images_lost_dir > 0 && t.images_garbage_tail > 0);
    assert!(t.closed_images > 0, "no image of a cleanly closed log was checked");
    assert!(t.erasures > 0 && t.erased_reads > 0, "no erasure was exercised");
}

/// Regression (found by the simulator): a power cut just after a roll created
/// the next segment, before the sealed segment's index and the stream table
/// were written. The open reinitialized the torn new segment (reading the
/// sealed segment's index, rebuilt in memory because its file was missing),
/// wrote the index file, then merged the stream table from the in-memory
/// index, whose rows are unnumbered: the table named no rows and `check`
/// reported it as differing from the segments.
#[test]
fn recovery_that_writes_a_missing_index_merges_real_rows_into_the_stream_table() {
    let dir = common::scratch();
    let opts = || Options::default().segment_size(1024);
    let log = Log::open_with(dir.path(), opts()).expect("create");
    let mut tag = 0u64;
    let mut append = |log: &Log| {
        tag += 1;
        let p = common::payload(tag, 150);
        log.append(
            &format!("s-{}", tag % 3),
            ExpectedVersion::Any,
            &[EventData::new("E", p.as_slice())],
        )
        .expect("append");
    };
    while common::segments(dir.path()).len() < 2 {
        append(&log);
    }
    append(&log);
    // The table covers the first segment (written after the roll, maybe by
    // another thread: wait for it); the head names the second.
    let start = Instant::now();
    while !dir.path().join(annal::STREAM_TABLE_FILE).exists() {
        assert!(start.elapsed().as_secs() < 10, "the stream table is never written");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let table = std::fs::read(dir.path().join(annal::STREAM_TABLE_FILE)).expect("table");
    let head = std::fs::read(dir.path().join(annal::HEAD_FILE)).expect("head");
    while common::segments(dir.path()).len() < 3 {
        append(&log);
    }
    drop(log);
    let segs = common::segments(dir.path());
    let (second, third) = (&segs[1], &segs[2]);
    // The power cut: the third segment's header never reached the disk, nor
    // the second's index, nor the table and head written after the roll.
    std::fs::write(third, b"").expect("empty the new segment");
    std::fs::remove_file(second.with_extension("idx")).expect("remove the index");
    std::fs::write(dir.path().join(annal::STREAM_TABLE_FILE), &table).expect("old table");
    std::fs::write(dir.path().join(annal::HEAD_FILE), &head).expect("old head");

    let log = Log::open_with(dir.path(), opts()).expect("open after the power cut");
    let rec = log.recovery().clone();
    assert_eq!(rec.reinitialized.as_deref(), Some(third.as_path()), "{rec:?}");
    assert_eq!(rec.rebuilt_indexes, vec![second.with_extension("idx")], "{rec:?}");
    assert!(rec.rebuilt_stream_table, "{rec:?}");
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{:#?}", report.problems);
}

/// Regression (found by the simulator): a power cut during a roll tears the
/// new segment's header, and the head's in-place slot writes (one sector)
/// are torn too, so no head rules the new segment out. A reader failed the
/// whole view on the torn header, hiding every durable event before it; it
/// now reads the segments before it (the writer's open rewrites it).
#[test]
fn reader_without_a_head_skips_a_segment_torn_while_being_created() {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(1024)).expect("create");
    let mut tag = 0u64;
    while common::segments(dir.path()).len() < 3 {
        tag += 1;
        let p = common::payload(tag, 150);
        log.append("s", ExpectedVersion::Any, &[EventData::new("E", p.as_slice())])
            .expect("append");
    }
    log.close().expect("close");
    let all = common::read_with_reader(dir.path()).expect("read");
    let segs = common::segments(dir.path());
    let newest = segs.last().expect("segment");
    let base: u64 = common::file_name(newest)
        .trim_end_matches(".seg")
        .parse()
        .expect("base");
    let before: Vec<_> = all.iter().filter(|r| r.position < base).cloned().collect();
    assert!(!before.is_empty() && before.len() < all.len());
    let mut rng = common::Rng::new(common::seed("reader_torn_new_segment"));
    for len in [0usize, 1, 40, 127, 128] {
        let img = common::fresh_copy(dir.path());
        let header = std::fs::read(newest).expect("read")[..128].to_vec();
        let mut torn = header.clone();
        for b in &mut torn[len.min(100)..] {
            *b = rng.next_u64() as u8;
        }
        torn.truncate(len);
        std::fs::write(img.path().join(common::file_name(newest)), &torn).expect("tear");
        // Both head slots torn: garbage over the head file's sector.
        let garbage = rng.bytes(128);
        std::fs::write(img.path().join(annal::HEAD_FILE), &garbage).expect("tear the head");
        let got = common::read_with_reader(img.path()).unwrap_or_else(|e| panic!("torn to {len} bytes: {e}"));
        assert_eq!(got, before, "torn to {len} bytes");
        let log = Log::open_with(img.path(), Options::default().segment_size(1024)).expect("writer open");
        assert_eq!(log.next_position(), base, "torn to {len} bytes");
        log.close().expect("close");
    }
}
