//! Helpers shared by the integration tests: scratch directories, crash images,
//! owned copies of records, a small seeded RNG and byte surgery on segments.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use annal::{LogView, RecordRef, Uuid};

/// A fresh temporary directory. Uses `/dev/shm` when it exists (many cases
/// below open logs, and every open fsyncs), else the system temp dir. The
/// semantics tested do not depend on the file system: crash images are copies.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix("annal-test-").tempdir_in(shm)
    {
        return d;
    }
    tempfile::Builder::new()
        .prefix("annal-test-")
        .tempdir()
        .expect("create a temp dir")
}

/// An owned copy of everything a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
    pub event_id: Uuid,
    pub schema_version: u32,
    pub timestamp: u64,
    /// The event's subject was erased (spec 3.8).
    pub erased: bool,
}

impl Rec {
    pub fn of(r: &RecordRef<'_>) -> Rec {
        Rec {
            position: r.position(),
            stream: r.stream().to_owned(),
            stream_version: r.stream_version(),
            event_type: r.event_type().to_owned(),
            metadata: r.metadata().to_owned(),
            payload: r.payload().to_owned(),
            event_id: r.event_id(),
            schema_version: r.schema_version(),
            timestamp: r.timestamp(),
            erased: r.is_erased(),
        }
    }

    /// [`Rec::of`] of `r` unsealed by `view` (spec 3.8).
    pub fn unsealed(view: &LogView, r: annal::RecordRef<'_>) -> annal::Result<Rec> {
        Ok(Rec::of(&view.unseal(r)?.record()))
    }
}

/// Every record from `from` on, or the first error.
pub fn read_all(view: &LogView, from: u64) -> annal::Result<Vec<Rec>> {
    view.read_all(from).map(|r| Rec::unsealed(view, r?)).collect()
}

/// The records returned before the first error, and that error (if any).
pub fn read_until_err(view: &LogView, from: u64) -> (Vec<Rec>, Option<annal::Error>) {
    let mut out = Vec::new();
    for r in view.read_all(from) {
        match r {
            Ok(r) => match Rec::unsealed(view, r) {
                Ok(r) => out.push(r),
                Err(e) => return (out, Some(e)),
            },
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Read a whole log through `annal::Reader` (no lock).
pub fn read_with_reader(dir: &Path) -> annal::Result<Vec<Rec>> {
    let reader = annal::Reader::open(dir)?;
    let view = reader.view()?;
    read_all(&view, 0)
}

/// The segment files of `dir`, in log order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Copy every file of the log in `src` (segments and head, not the lock) into `dst`.
/// A file gone since the listing (a writer's background temporary file,
/// renamed meanwhile) is left out, as a crash before it was made would.
pub fn copy_log(src: &Path, dst: &Path) {
    for e in fs::read_dir(src).expect("read log dir") {
        let e = e.expect("dir entry");
        let name = e.file_name();
        if name == annal::LOCK_FILE {
            continue;
        }
        match fs::copy(e.path(), dst.join(&name)) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let _ = fs::remove_file(dst.join(&name));
            }
            Err(err) => panic!("copy log file {}: {err}", e.path().display()),
        }
    }
}

/// What a killed writer leaves: a copy of the log directory taken while the
/// writer is still open (nothing closed cleanly, nothing fsynced by close).
pub fn crash_image(dir: &Path) -> tempfile::TempDir {
    let img = scratch();
    copy_log(dir, img.path());
    img
}

/// A fresh copy of a log (image or cleanly closed log) to damage.
pub fn fresh_copy(src: &Path) -> tempfile::TempDir {
    let d = scratch();
    copy_log(src, d.path());
    d
}

/// Name -> bytes of every file in `dir` except the lock file.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir).expect("read dir") {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name == annal::LOCK_FILE {
            continue;
        }
        m.insert(name, fs::read(e.path()).expect("read file"));
    }
    m
}

/// Names of every entry in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn file_len(p: &Path) -> u64 {
    fs::metadata(p).expect("stat").len()
}

/// Replace the bytes of file `p` with `f(bytes)`.
pub fn edit(p: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = fs::read(p).expect("read file");
    f(&mut b);
    fs::write(p, &b).expect("write file");
}

pub fn file_name(p: &Path) -> String {
    p.file_name().expect("file name").to_string_lossy().into_owned()
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A frame found by walking a segment's bytes (no validation beyond lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    pub offset: u64,
    pub len: u64,
    pub kind: u8,
    pub first_position: u64,
    pub record_count: u32,
}

/// Walk the frames of an undamaged segment file (spec 3.1: frame_len at 8,
/// first_position at 16, record_count at 24, kind at 28).
pub fn frames(seg: &[u8]) -> Vec<FrameAt> {
    let mut out = Vec::new();
    let mut off = 128usize;
    while off + 72 <= seg.len() {
        assert_eq!(&seg[off..off + 4], b"BTCH", "frame magic at {off}");
        let len = u64_at(seg, off + 8);
        out.push(FrameAt {
            offset: off as u64,
            len,
            kind: seg[off + 28],
            first_position: u64_at(seg, off + 16),
            record_count: u32_at(seg, off + 24),
        });
        off += len as usize;
    }
    assert_eq!(off, seg.len(), "frames fill the segment");
    out
}

/// Recompute the segment header CRC (bytes [0,124) stored at 124).
pub fn fix_segment_header_crc(seg: &mut [u8]) {
    let crc = crc32fast::hash(&seg[..124]);
    seg[124..128].copy_from_slice(&crc.to_le_bytes());
}

/// Recompute the CRC of the frame header at `off` (bytes [8,72) stored at 4).
pub fn fix_frame_header_crc(seg: &mut [u8], off: usize) {
    let crc = crc32fast::hash(&seg[off + 8..off + 72]);
    seg[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
}

/// splitmix64: small, seedable, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// Random bytes, fewer than `max`.
    pub fn bytes_below(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max) as usize;
        self.bytes(len)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// The seed for a randomized test: `ANNAL_TEST_SEED` if set, else derived from
/// the clock. Printed so that a failure can be reproduced.
pub fn seed(test: &str) -> u64 {
    let s = match std::env::var("ANNAL_TEST_SEED") {
        Ok(v) => v.parse().expect("ANNAL_TEST_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    println!("{test}: seed {s} (rerun with ANNAL_TEST_SEED={s})");
    s
}

/// A payload of `n` bytes derived from `tag` (deterministic, not all equal).
pub fn payload(tag: u64, n: usize) -> Vec<u8> {
    let mut r = Rng::new(tag.wrapping_mul(0x1234_5678_9ABC_DEF1) ^ n as u64);
    r.bytes(n)
}

// ---------------------------------------------------------------------------
// An aggregate whose state depends on every event and their order (for tests
// that need snapshot files)
// ---------------------------------------------------------------------------

/// Sum, order-dependent digest and count of the values added.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub sum: i64,
    pub digest: u64,
    pub count: u64,
}

/// The one event of [`Tally`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TallyEvent {
    Added(i64),
}

impl annal::Event for TallyEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl annal::Aggregate for Tally {
    type Event = TallyEvent;
    type Command = Vec<i64>;
    type Error = String;
    fn handle(&self, values: &Vec<i64>) -> Result<Vec<TallyEvent>, String> {
        Ok(values.iter().map(|v| TallyEvent::Added(*v)).collect())
    }
    fn apply(&mut self, TallyEvent::Added(v): &TallyEvent) {
        self.sum += v;
        self.digest = self.digest.wrapping_mul(31).wrapping_add(*v as u64);
        self.count += 1;
    }
}

/// Remove the index checkpoints (spec 17.5) of the log in `dir`, so that
/// the next open walks the whole active segment (as after a crash before
/// any checkpoint); returns how many there were.
pub fn remove_checkpoints(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "ckpt") {
            std::fs::remove_file(&p).expect("remove checkpoint");
            n += 1;
        }
    }
    n
}

/// The file operations a [`DirImages`] seam can take an image at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Create,
    Rename,
    Remove,
    SyncDir,
}

/// When a [`DirImages`] seam copies the log directory: before or after an
/// operation, given the operation and the path it creates, renames to or
/// removes.
pub type ImageWhen = fn(IoOp, &Path) -> bool;

/// An I/O seam that copies the log directory (its files) into `root/img-N`
/// before or after the operations `before` / `after` choose, at most `max`
/// times, while `on`: a crash image there.
#[derive(Debug)]
pub struct DirImages {
    dir: PathBuf,
    root: PathBuf,
    before: ImageWhen,
    after: ImageWhen,
    max: usize,
    pub on: std::sync::atomic::AtomicBool,
    images: std::sync::Mutex<Vec<PathBuf>>,
}

impl DirImages {
    pub fn new(dir: &Path, root: &Path, before: ImageWhen, after: ImageWhen, max: usize) -> DirImages {
        DirImages {
            dir: dir.to_owned(),
            root: root.to_owned(),
            before,
            after,
            max,
            on: std::sync::atomic::AtomicBool::new(true),
            images: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The images taken, in order.
    pub fn images(&self) -> Vec<PathBuf> {
        self.images.lock().unwrap().clone()
    }

    fn image(&self, take: bool) {
        if !take || !self.on.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut imgs = self.images.lock().unwrap();
        if imgs.len() >= self.max {
            return;
        }
        let to = self.root.join(format!("img-{}", imgs.len()));
        fs::create_dir_all(&to).unwrap();
        for e in fs::read_dir(&self.dir).unwrap().flatten() {
            if e.path().is_file() {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        imgs.push(to);
    }

    fn around<T>(&self, op: IoOp, path: &Path, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        self.image((self.before)(op, path));
        let r = f()?;
        self.image((self.after)(op, path));
        Ok(r)
    }
}

impl annal::io::Io for DirImages {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn annal::io::IoFile>> {
        self.around(IoOp::Create, path, || annal::io::StdIo.create(path))
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn annal::io::IoFile>> {
        annal::io::StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.around(IoOp::Rename, to, || annal::io::StdIo.rename(from, to))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.around(IoOp::Remove, path, || annal::io::StdIo.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.around(IoOp::SyncDir, dir, || annal::io::StdIo.sync_dir(dir))
    }
}

/// For [`DirImages`]: never.
pub fn never(_: IoOp, _: &Path) -> bool {
    false
}

/// For [`DirImages`]: at every operation.
pub fn always(_: IoOp, _: &Path) -> bool {
    true
}

/// For [`DirImages`]: at a rename to a segment file (the swap of a
/// compaction, spec 3.10).
pub fn segment_rename(op: IoOp, to: &Path) -> bool {
    op == IoOp::Rename && to.extension().is_some_and(|x| x == "seg")
}
