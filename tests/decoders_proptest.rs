//! Property tests of every decoder on hostile bytes (issue 8, item 4): random
//! bytes and mutated valid files (bit flips, byte sets, truncations,
//! insertions, length fields overwritten with huge values, CRCs recomputed
//! after the damage so that it reaches past the checksums) for segments,
//! index files, the stream table, snapshots, head files and whole log
//! directories, fed to the entry points in `annal::fuzzing` (the same ones the
//! cargo-fuzz targets in `fuzz/` use). The single-file decoders take the
//! bytes as they are, with no file written (`IdxFile`, `StreamTable` and
//! `BlockFile` decode any `AsRef<[u8]>`); only the directory cases write a
//! scratch log directory.
//!
//! Properties, per case:
//! * no panic (each case runs under `catch_unwind`; the failing input is
//!   printed in hex);
//! * no hang (a watchdog fails the test when one case takes longer than
//!   `CASE_TIMEOUT`);
//! * no allocation sized by an unchecked length (a counting global allocator
//!   records the largest single allocation while a case runs; it must stay
//!   under 64 × input length + 1 MiB, plus the fixed cost of opening a log for
//!   the directory cases, measured on the valid inputs).
//!
//! Seeded: the seed is printed; rerun with `ANNAL_TEST_SEED=<seed>`.
//! `ANNAL_FUZZ_CASES=<n>` multiplies the number of cases (default 1) for
//! longer runs. Regression inputs found by the fuzzers are in
//! `tests/fuzz_regressions/<target>/` and replayed by `fuzz_regressions`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, SigningKey, fuzzing};
use common::Rng;

// ------------------------------------------------------------ allocator

/// Records the largest single allocation while `TRACK` is on.
struct Counting;

static TRACK: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests of this binary measure allocations globally: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CASE_TIMEOUT: Duration = Duration::from_secs(20);

fn multiplier() -> usize {
    std::env::var("ANNAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

// ------------------------------------------------------------ harness

#[derive(Clone, Copy, Debug)]
enum Target {
    Segment,
    Index,
    StreamTable,
    Snapshot,
    Head,
    Dir,
}

impl Target {
    /// The decoder entry point on `data` as given (the property tests
    /// recompute checksums themselves, for half of the mutants).
    fn run(self, data: &[u8]) {
        match self {
            Target::Segment => fuzzing::segment(data),
            Target::Index => index_input(data),
            Target::StreamTable => fuzzing::stream_table(data),
            Target::Snapshot => fuzzing::snapshot(data),
            Target::Head => fuzzing::head(data),
            Target::Dir => fuzzing::open_dir_bytes(data),
        }
    }

    /// What the cargo-fuzz target of the same name runs on `data`, exactly
    /// (as given, then with checksums recomputed where the target does so),
    /// so that an input saved by the fuzzer replays here.
    fn fuzz_target(self, data: &[u8]) {
        match self {
            Target::Segment => fuzzing::with_fixed(data, fuzzing::fix_segment_crcs, fuzzing::segment),
            Target::Index => index_input(data),
            Target::StreamTable => fuzzing::with_fixed(data, fuzzing::fix_blockfile, fuzzing::stream_table),
            Target::Snapshot => fuzzing::with_fixed(data, fuzzing::fix_snapshot_crc, fuzzing::snapshot),
            Target::Head => fuzzing::with_fixed(data, fuzzing::fix_head_crcs, fuzzing::head),
            Target::Dir => fuzzing::open_dir_bytes(data),
        }
    }
}

/// The `index` fuzz target (`fuzz/fuzz_targets/index.rs`), input layout
/// `[flag][seg_len u16][segment][index]` when `flag & 1`, else
/// `[flag][index]`; with `flag & 2` both checksums are recomputed first.
fn index_input(data: &[u8]) {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let (mut seg, mut idx) = match rest {
        [a, b, rest @ ..] if flag & 1 == 1 => {
            let n = (u16::from_le_bytes([*a, *b]) as usize).min(rest.len());
            let (s, i) = rest.split_at(n);
            (Some(s.to_vec()), i.to_vec())
        }
        _ => (None, rest.to_vec()),
    };
    if flag & 2 == 2 {
        if let Some(s) = seg.as_mut() {
            fuzzing::fix_segment_crcs(s);
        }
        fuzzing::fix_blockfile(&mut idx);
    }
    fuzzing::index(&idx, seg.as_deref());
}

fn index_with_segment(seg: &[u8], idx: &[u8]) -> Vec<u8> {
    let n = seg.len().min(u16::MAX as usize);
    let mut v = vec![1u8];
    v.extend_from_slice(&(n as u16).to_le_bytes());
    v.extend_from_slice(&seg[..n]);
    v.extend_from_slice(idx);
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Run every input of `cases` through `target` on a worker thread under a
/// watchdog; returns the largest single allocation seen in any case relative
/// to its bound. Fails on a panic, a hang or an allocation over the bound.
fn run_cases(target: Target, cases: Vec<Vec<u8>>, fixed_alloc: usize) -> usize {
    run_cases_with(target, Target::run, cases, fixed_alloc)
}

/// [`run_cases`] with `run` (a [`Target`] method) as the entry point.
fn run_cases_with(target: Target, run: fn(Target, &[u8]), cases: Vec<Vec<u8>>, fixed_alloc: usize) -> usize {
    let (tx, rx) = mpsc::channel::<(usize, Result<usize, String>)>();
    let total = cases.len();
    let worker = std::thread::spawn(move || {
        for (i, data) in cases.into_iter().enumerate() {
            LARGEST.store(0, Ordering::Relaxed);
            TRACK.store(true, Ordering::Relaxed);
            let r = std::panic::catch_unwind(|| run(target, &data));
            TRACK.store(false, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            let bound = 64 * data.len() + (1 << 20) + fixed_alloc;
            let verdict = match r {
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panic: {msg}\ninput ({} bytes): {}", data.len(), hex(&data)))
                }
                Ok(()) if largest > bound => Err(format!(
                    "one allocation of {largest} bytes for a {}-byte input (bound {bound})\ninput: {}",
                    data.len(),
                    hex(&data)
                )),
                Ok(()) => Ok(largest),
            };
            let stop = verdict.is_err();
            if tx.send((i, verdict)).is_err() || stop {
                return;
            }
        }
    });
    let mut largest = 0;
    for _ in 0..total {
        match rx.recv_timeout(CASE_TIMEOUT) {
            Ok((_, Ok(l))) => largest = largest.max(l),
            Ok((i, Err(e))) => panic!("{target:?} case {i}: {e}"),
            Err(_) => panic!("{target:?}: a case ran longer than {CASE_TIMEOUT:?} (hang)"),
        }
    }
    worker.join().expect("worker");
    largest
}

// ------------------------------------------------------------ mutations

/// Damage `data` in 1 to 4 places.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = data.len() as u64;
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len) as usize;
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len) as usize;
                let r = rng.next_u64() as u8;
                data[at] = *rng.pick(&[0x00, 0xFF, 0x7F, 0x80, r]);
            }
            2 => data.truncate(rng.below(len + 1) as usize),
            3 => {
                let at = rng.below(len + 1) as usize;
                let ins = rng.bytes_below(64);
                data.splice(at..at, ins);
            }
            4 | 5 if len >= 8 => {
                // A length or count field overwritten with a huge value, at
                // an aligned offset (where the format keeps its fields).
                let width = *rng.pick(&[2usize, 4, 8]);
                let at = (rng.below(len - width as u64 + 1) as usize) & !(width - 1);
                let r = rng.next_u64();
                let v: u64 = *rng.pick(&[
                    u64::MAX,
                    u64::MAX - 1,
                    u32::MAX as u64,
                    i32::MAX as u64,
                    1 << 40,
                    r,
                    len * 2,
                ]);
                data[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            6 if len > 8 => {
                // Remove a range.
                let at = rng.below(len) as usize;
                let n = rng.below((len - at as u64).min(256) + 1) as usize;
                data.drain(at..at + n);
            }
            _ if len > 0 => {
                // Copy a range over another (duplicated frames, rows).
                let from = rng.below(len) as usize;
                let to = rng.below(len) as usize;
                let n = (rng.below(128) as usize).min(data.len() - from).min(data.len() - to);
                let chunk = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&chunk);
            }
            _ => data.extend(rng.bytes_below(32)),
        }
    }
}

use fuzzing::{fix_blockfile, fix_head_crcs, fix_segment_crcs, fix_snapshot_crc};

// ------------------------------------------------------------ valid inputs

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors")
}

/// Log directories to mutate: every golden vector, and a fresh v2 log with
/// signed checkpoints, several sealed segments, indexes and a stream table.
fn valid_dirs(scratch: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for v in ["v1", "v2"] {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(vectors().join(v))
            .expect("vectors")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        dirs.extend(cases);
    }
    let fresh = scratch.join("signed");
    let key = SigningKey::from_bytes([7; 32]);
    let log = Log::open_with(
        &fresh,
        Options::default()
            .format_version(2)
            .durability(Durability::Buffered)
            .segment_size(1024)
            .signing_key(key)
            .checkpoint_every(3),
    )
    .expect("open");
    for i in 0..12u64 {
        let stream = format!("order-{}", i % 3);
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[EventData::new("Placed", format!("{{\"n\":{i}}}").into_bytes()).with_metadata(b"m".as_slice())],
        )
        .expect("append");
    }
    log.close().expect("close");
    dirs.push(fresh);
    dirs
}

/// Every file of `dirs` (including `snapshots/`), by extension or name.
fn files_of(dirs: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for d in dirs {
        for sub in [d.clone(), d.join("snapshots")] {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&sub)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            for p in v {
                let b = std::fs::read(&p).expect("read");
                out.push((p, b));
            }
        }
    }
    out
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|e| e.to_str()).unwrap_or("")
}

/// `n` random inputs of up to `max` bytes, then `m` mutants of each valid
/// input (half with checksums recomputed by `fix`).
fn cases(
    rng: &mut Rng,
    valid: &[Vec<u8>],
    random: usize,
    max: u64,
    mutants: usize,
    fix: &dyn Fn(&mut Vec<u8>),
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = valid.to_vec();
    for _ in 0..random {
        out.push(rng.bytes_below(max));
    }
    for v in valid {
        for _ in 0..mutants {
            let mut m = v.clone();
            mutate(rng, &mut m);
            if rng.below(2) == 0 {
                fix(&mut m);
            }
            out.push(m);
        }
    }
    out
}

struct Inputs {
    _scratch: tempfile::TempDir,
    segments: Vec<Vec<u8>>,
    indexes: Vec<(Vec<u8>, Vec<u8>)>,
    tables: Vec<Vec<u8>>,
    snapshots: Vec<Vec<u8>>,
    heads: Vec<Vec<u8>>,
    dirs: Vec<Vec<u8>>,
    dir_paths: Vec<PathBuf>,
}

fn inputs() -> Inputs {
    let scratch = common::scratch();
    let dirs = valid_dirs(scratch.path());
    let files = files_of(&dirs);
    let mut i = Inputs {
        segments: Vec::new(),
        indexes: Vec::new(),
        tables: Vec::new(),
        snapshots: Vec::new(),
        heads: Vec::new(),
        dirs: dirs.iter().map(|d| fuzzing::join_dir(d)).collect(),
        dir_paths: dirs.clone(),
        _scratch: scratch,
    };
    for (p, b) in &files {
        match ext(p) {
            "seg" => i.segments.push(b.clone()),
            "idx" => {
                let seg = std::fs::read(p.with_extension("seg")).expect("segment of index");
                i.indexes.push((seg, b.clone()));
            }
            "snap" => i.snapshots.push(b.clone()),
            _ if name(p) == annal::HEAD_FILE => i.heads.push(b.clone()),
            _ if name(p) == annal::STREAM_TABLE_FILE => i.tables.push(b.clone()),
            _ => {}
        }
    }
    assert!(i.segments.len() >= 10 && i.indexes.len() >= 4, "valid inputs found");
    // The checksum fixers recompute what the writer wrote: a no-op on valid
    // files (the `corrupt` vectors aside), so they only ever move damage past
    // the checksums.
    let unchanged = |b: &[u8], fix: &dyn Fn(&mut [u8])| {
        let mut v = b.to_vec();
        fix(&mut v);
        v == b
    };
    let segs_fixed = i
        .segments
        .iter()
        .filter(|s| unchanged(s, &|b| fix_segment_crcs(b)))
        .count();
    assert!(segs_fixed >= i.segments.len() - 2, "segment CRC fixer is faithful");
    assert!(i.indexes.iter().all(|(_, x)| unchanged(x, &|b| fix_blockfile(b))));
    assert!(i.tables.iter().all(|x| unchanged(x, &|b| fix_blockfile(b))));
    assert!(i.heads.iter().all(|x| unchanged(x, &|b| fix_head_crcs(b))));
    assert!(i.snapshots.iter().all(|x| unchanged(x, &|b| fix_snapshot_crc(b))));
    assert!(!i.tables.is_empty() && !i.snapshots.is_empty() && !i.heads.is_empty());
    i
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------ tests

#[test]
fn decoders_survive_random_and_mutated_files() {
    let _g = lock();
    let seed = common::seed("decoders_survive_random_and_mutated_files");
    let mut rng = Rng::new(seed);
    let k = multiplier();
    let inp = inputs();

    let segs = cases(&mut rng, &inp.segments, 300 * k, 2048, 60 * k, &|s| fix_segment_crcs(s));
    let n_seg = segs.len();
    run_cases(Target::Segment, segs, 0);

    // Index: mutate the index (footer fixed half the time) or its segment.
    let mut idx = Vec::new();
    for _ in 0..200 * k {
        idx.push(rng.bytes_below(1024));
    }
    for (seg, ix) in &inp.indexes {
        idx.push(index_with_segment(seg, ix));
        for _ in 0..80 * k {
            let (mut s, mut x) = (seg.clone(), ix.clone());
            if rng.below(4) == 0 {
                mutate(&mut rng, &mut s);
                fix_segment_crcs(&mut s);
            } else {
                mutate(&mut rng, &mut x);
                if rng.below(3) != 0 {
                    fix_blockfile(&mut x);
                }
            }
            idx.push(if rng.below(4) == 0 {
                let mut v = vec![0u8];
                v.extend_from_slice(&x);
                v
            } else {
                index_with_segment(&s, &x)
            });
        }
    }
    let n_idx = idx.len();
    run_cases(Target::Index, idx, 0);

    let fix_bf = |b: &mut Vec<u8>| fix_blockfile(b);
    let tables = cases(&mut rng, &inp.tables, 200 * k, 1024, 150 * k, &fix_bf);
    let n_tab = tables.len();
    run_cases(Target::StreamTable, tables, 0);

    let snaps = cases(&mut rng, &inp.snapshots, 200 * k, 512, 200 * k, &|b| {
        fix_snapshot_crc(b)
    });
    let n_snap = snaps.len();
    run_cases(Target::Snapshot, snaps, 0);

    let heads = cases(&mut rng, &inp.heads, 200 * k, 300, 100 * k, &|b| fix_head_crcs(b));
    let n_head = heads.len();
    run_cases(Target::Head, heads, 0);

    println!(
        "cases: segment {n_seg}, index {n_idx}, stream_table {n_tab}, snapshot {n_snap}, head {n_head} \
         (all without panic, hang or oversized allocation)"
    );
}

#[test]
fn log_directories_survive_mutated_files() {
    let _g = lock();
    let seed = common::seed("log_directories_survive_mutated_files");
    let mut rng = Rng::new(seed);
    let k = multiplier();
    let inp = inputs();
    // The chunk layout carries a directory faithfully: every valid one reads
    // (the `corrupt` vectors are damaged on purpose).
    for (d, path) in inp.dirs.iter().zip(&inp.dir_paths) {
        let files = fuzzing::split_dir(d);
        if path.ends_with("corrupt") || !files.iter().any(|(n, _)| n.ends_with(".seg")) {
            continue;
        }
        let tmp = common::scratch();
        std::fs::create_dir_all(tmp.path().join("snapshots")).expect("mkdir");
        for (fname, bytes) in files {
            std::fs::write(tmp.path().join(fname), bytes).expect("write");
        }
        let view = annal::Reader::open(tmp.path())
            .and_then(|r| r.view())
            .expect("valid dir opens");
        let n = view
            .read_all(0)
            .collect::<annal::Result<Vec<_>>>()
            .expect("valid dir reads")
            .len();
        assert!(
            n > 0 || view.next_position() == 0,
            "records read from a split directory"
        );
    }
    // The fixed cost of opening a log (buffers sized by options, not by file
    // content), measured on the valid directories.
    let fixed = run_cases(Target::Dir, inp.dirs.clone(), 0);
    println!("largest single allocation on valid directories: {fixed} bytes");
    let mut dirs = Vec::new();
    for _ in 0..20 * k {
        dirs.push(rng.bytes_below(512));
    }
    for d in &inp.dirs {
        for _ in 0..12 * k {
            // Damage one file of the directory, in place, with CRCs fixed half
            // the time, so the chunk layout stays intact.
            let mut files = fuzzing::split_dir(d);
            let pick = rng.below(files.len() as u64) as usize;
            let (fname, bytes) = &mut files[pick];
            mutate(&mut rng, bytes);
            if rng.below(2) == 0 {
                if fname.ends_with(".seg") {
                    fix_segment_crcs(bytes);
                } else if fname.ends_with(".idx") || fname == annal::STREAM_TABLE_FILE {
                    fix_blockfile(bytes);
                } else if fname == annal::HEAD_FILE {
                    fix_head_crcs(bytes);
                } else {
                    fix_snapshot_crc(bytes);
                }
            }
            let mut out = Vec::new();
            for (fname, bytes) in &files {
                let kind = kind_of(fname);
                let n = bytes.len().min(u16::MAX as usize);
                out.push(kind);
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.extend_from_slice(&bytes[..n]);
            }
            dirs.push(out);
        }
    }
    let n = dirs.len();
    run_cases(Target::Dir, dirs, fixed);
    println!("cases: open_dir {n} (check, repair, readers, writer recovery, append)");
}

/// The `split_dir` kind of a file name in a split directory.
fn kind_of(fname: &str) -> u8 {
    if fname.ends_with(".seg") {
        if fname == "00000000000000000000.seg" { 0 } else { 1 }
    } else if fname.ends_with(".idx") {
        if fname == "00000000000000000000.idx" { 2 } else { 3 }
    } else if fname == annal::HEAD_FILE {
        4
    } else if fname == annal::STREAM_TABLE_FILE {
        5
    } else {
        6
    }
}

/// Inputs that crashed, hung or over-allocated under the fuzzers, minimised:
/// `tests/fuzz_regressions/<target>/*` (target = a cargo-fuzz target name).
#[test]
fn fuzz_regressions() {
    let _g = lock();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut total = 0;
    for (dir, target) in [
        ("segment", Target::Segment),
        ("index", Target::Index),
        ("stream_table", Target::StreamTable),
        ("snapshot", Target::Snapshot),
        ("head", Target::Head),
        ("open_dir", Target::Dir),
    ] {
        let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .map(|p| {
                let b = std::fs::read(&p).expect("read regression input");
                (p, b)
            })
            .collect();
        inputs.sort();
        total += inputs.len();
        let fixed = if matches!(target, Target::Dir) { 8 << 20 } else { 0 };
        run_cases_with(
            target,
            Target::fuzz_target,
            inputs.into_iter().map(|(_, b)| b).collect(),
            fixed,
        );
    }
    println!("fuzz regressions replayed: {total}");
}

/// A batch of `n >= 2` records in a valid vector segment: (segment bytes,
/// frame offset).
fn segment_with_batch_of(n: u32) -> (Vec<u8>, usize) {
    for v in ["v2", "v1"] {
        for case in ["simple", "keyed", "indexed", "torn"] {
            let p = vectors().join(v).join(case).join("00000000000000000000.seg");
            let Ok(seg) = std::fs::read(&p) else { continue };
            if let Some(f) = common::frames(&seg)
                .into_iter()
                .find(|f| f.kind == 1 && f.record_count >= n)
            {
                return (seg, f.offset as usize);
            }
        }
    }
    panic!("no vector segment has a batch of {n} records");
}

/// Found by the property test above: a batch whose first record has stream
/// version `u64::MAX` (checksums valid) made batch validation compute
/// `u64::MAX + 1` for the next record, a panic in debug builds.
#[test]
fn stream_version_at_u64_max_is_damage_not_a_panic() {
    let _g = lock();
    let (mut seg, off) = segment_with_batch_of(2);
    let rec = off + 72;
    seg[rec + 16..rec + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_segment_crcs(&mut seg);
    fuzzing::segment(&seg);
    let dir = common::scratch();
    std::fs::write(dir.path().join("00000000000000000000.seg"), &seg).expect("write");
    let read = annal::Reader::open(dir.path()).and_then(|r| r.view()).and_then(|v| {
        v.read_all(0)
            .map(|r| r.map(|r| r.position()))
            .collect::<annal::Result<Vec<_>>>()
    });
    // Without a head file the damaged batch reads as a torn tail: either way
    // none of its records is returned.
    let batch_first = common::u64_at(&seg, off + 16);
    match read {
        Ok(positions) => assert!(positions.iter().all(|p| *p < batch_first), "{positions:?}"),
        Err(e) => assert!(e.to_string().contains("00000000000000000000.seg"), "{e}"),
    }
    fuzzing::open_dir(dir.path());
}

/// Found while fixing the above: a frame whose `first_position +
/// record_count` does not fit in 64 bits (a segment based at `u64::MAX`, its
/// checksums valid) overflowed when the walk computed the next position.
#[test]
fn positions_past_u64_max_are_damage_not_a_panic() {
    let _g = lock();
    let (mut seg, _) = segment_with_batch_of(1);
    seg[40..48].copy_from_slice(&u64::MAX.to_le_bytes()); // header base_position
    let first = common::frames(&seg)[0];
    let off = first.offset as usize;
    seg[off + 16..off + 24].copy_from_slice(&u64::MAX.to_le_bytes()); // first_position
    let mut rec = off + 72;
    for i in 0..first.record_count as u64 {
        seg[rec + 8..rec + 16].copy_from_slice(&u64::MAX.wrapping_add(i).to_le_bytes());
        rec += common::u32_at(&seg, rec) as usize;
    }
    fix_segment_crcs(&mut seg);
    fuzzing::segment(&seg);
    let dir = common::scratch();
    std::fs::write(dir.path().join("18446744073709551615.seg"), &seg).expect("write");
    fuzzing::open_dir(dir.path());
}

/// Found by `log_directories_survive_mutated_files` (ANNAL_FUZZ_CASES=6): a
/// one-record batch whose stream version is `u64::MAX` (checksums valid)
/// made `check` compute the batch's last version as `u64::MAX + 1 - 1`, a
/// panic in debug builds. Now it is a finding: the stream starts at 0.
#[test]
fn check_reports_a_stream_version_at_u64_max() {
    let _g = lock();
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().format_version(2)).expect("open");
    log.append(
        "order-1",
        ExpectedVersion::Any,
        &[EventData::new("Placed", b"{}".as_slice())],
    )
    .expect("append");
    log.append(
        "order-1",
        ExpectedVersion::Any,
        &[EventData::new("Placed", b"{}".as_slice())],
    )
    .expect("append");
    log.close().expect("close");
    let seg = dir.path().join("00000000000000000000.seg");
    common::edit(&seg, |b| {
        let f = common::frames(b)[0];
        let rec = f.offset as usize + 72;
        b[rec + 16..rec + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        fix_segment_crcs(b);
    });
    let report = annal::check(dir.path(), annal::CheckOptions::default()).expect("check runs");
    assert!(!report.is_ok(), "the version is reported");
    let text = format!("{:?}", report.problems);
    assert!(text.contains("00000000000000000000.seg"), "{text}");
    fuzzing::open_dir(dir.path());
}
