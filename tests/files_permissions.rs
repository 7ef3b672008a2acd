//! Files and permissions (issue 8, item 7).
//!
//! * Every file annal creates (segments, index files, the stream table, the
//!   head file, the lock file, snapshot files, and the temp files they are
//!   written to) has mode `annal::io::FILE_MODE` (0o644) and every directory
//!   it creates (the log directory, `snapshots/`) mode 0o755: never
//!   world-writable, even with a permissive umask (the writer runs in a child
//!   process started with `umask 000`).
//! * annal never follows a symlink out of the log directory when it creates
//!   or writes a file: symlinks planted under the names it creates next (the
//!   next segment, `*.idx`, `*.idx.tmp`, `annal.streams(.tmp)`,
//!   `annal.head.tmp`, snapshot files and their temp names, the `snapshots`
//!   folder) or in place of the files it opens for writing (the active
//!   segment, the lock file) either are replaced (a temp name is unlinked and
//!   created anew, a final name is replaced by `rename`) or make the writer
//!   refuse with an error naming the path; nothing outside is created or
//!   modified.
//! * Stream names never reach a path: streams named like paths, with odd
//!   unicode or 65535 bytes long create no file but the log's own.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use annal::io::{FILE_MODE, Io, IoFile, StdIo};
use annal::{Aggregate, Durability, Event, EventData, ExpectedVersion, Log, Options, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Count(u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bumped;

impl Event for Bumped {
    fn event_type(&self) -> &'static str {
        "Bumped"
    }
}

impl Aggregate for Count {
    type Event = Bumped;
    type Command = u64;
    type Error = String;
    fn handle(&self, n: &u64) -> Result<Vec<Bumped>, String> {
        Ok((0..*n).map(|_| Bumped).collect())
    }
    fn apply(&mut self, _: &Bumped) {
        self.0 += 1;
    }
}

/// Every entry under `dir` (relative path -> (is_dir, is_symlink, bytes)).
fn tree(dir: &Path) -> BTreeMap<String, (bool, bool, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (bool, bool, Vec<u8>)>) {
        for e in fs::read_dir(dir).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).expect("lstat");
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        false,
                        true,
                        fs::read_link(&p)
                            .expect("readlink")
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                );
            } else if m.is_dir() {
                out.insert(rel, (true, false, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (false, false, fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A seam over `StdIo` that records the mode of every file and directory
/// right after it is created (temp files included).
#[derive(Debug, Default)]
struct ModeIo {
    seen: Mutex<Vec<(PathBuf, u32)>>,
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("lstat").permissions().mode() & 0o7777
}

impl Io for ModeIo {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        let f = StdIo.create(path)?;
        self.seen.lock().expect("lock").push((path.to_owned(), mode_of(path)));
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
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdIo.create_dir(dir)?;
        self.seen.lock().expect("lock").push((dir.to_owned(), mode_of(dir)));
        Ok(())
    }
}

const CHILD_ENV: &str = "ANNAL_PERMISSIONS_CHILD_DIR";

/// Run in a child process with `umask 000` by `modes_with_a_permissive_umask`
/// (does nothing otherwise): writes a log through a roll, snapshots and a
/// close, and checks the mode of every file and directory as it is created.
#[test]
fn child_writes_a_log() {
    let Ok(root) = std::env::var(CHILD_ENV) else { return };
    let dir = Path::new(&root).join("log");
    let io = Arc::new(ModeIo::default());
    let log = Log::open_with(
        &dir,
        Options::default()
            .segment_size(4096)
            .durability(Durability::Buffered)
            .io(io.clone()),
    )
    .expect("create the log");
    let repo = Repository::<Count>::new(&log).snapshot_every(2, 2);
    for i in 0..60u64 {
        log.append(
            &format!("s-{}", i % 3),
            ExpectedVersion::Any,
            &[EventData::new("E", vec![i as u8; 100])],
        )
        .expect("append");
        repo.execute("count-1", &1).expect("execute");
    }
    log.close().expect("close");
    let seen = io.seen.lock().expect("lock").clone();
    let mut kinds = BTreeMap::new();
    for (p, mode) in &seen {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let is_dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) || name == "snapshots" || name == "log";
        let want = if is_dir { 0o755 } else { FILE_MODE };
        assert_eq!(*mode, want, "{} created with mode {mode:o}", p.display());
        assert_eq!(mode & 0o002, 0, "{} is world-writable", p.display());
        let kind = if is_dir {
            "dir".to_owned()
        } else if let Some(n) = name.strip_suffix(".tmp") {
            format!("temp {}", n.rsplit('.').next().unwrap_or(""))
        } else {
            name.rsplit('.').next().unwrap_or("").to_owned()
        };
        *kinds.entry(kind).or_insert(0u32) += 1;
    }
    println!("modes checked at creation: {kinds:?}");
    for k in [
        "seg",
        "lock",
        "temp idx",
        "temp streams",
        "temp snap",
        "temp head",
        "dir",
    ] {
        assert!(kinds.contains_key(k), "no {k} file was created: {kinds:?}");
    }
}

#[test]
fn modes_with_a_permissive_umask() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let root = common::scratch();
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" --exact child_writes_a_log --nocapture --test-threads=1")
        .arg(&exe)
        .env(CHILD_ENV, root.path())
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("modes checked at creation"), "the child ran:\n{text}");
    // What is left on disk: the same modes.
    let dir = root.path().join("log");
    let mut n = 0;
    for (rel, (is_dir, is_link, _)) in tree(&dir) {
        assert!(!is_link, "{rel} is a symlink");
        let mode = mode_of(&dir.join(&rel));
        let want = if is_dir { 0o755 } else { FILE_MODE };
        assert_eq!(mode, want, "{rel} has mode {mode:o}");
        n += 1;
    }
    assert_eq!(mode_of(&dir), 0o755, "the log directory");
    assert!(n > 5, "files were checked");
}

// ---------------------------------------------------------------------------
// Symlinks.

fn opts() -> Options {
    Options::default().segment_size(4096).durability(Durability::Buffered)
}

fn fill(log: &Log, stream: &str, n: usize) {
    for i in 0..n {
        log.append(stream, ExpectedVersion::Any, &[EventData::new("E", vec![i as u8; 200])])
            .expect("append");
    }
}

/// A scratch root holding `log/` and `outside/` (with one file in it).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = common::scratch();
    let dir = root.path().join("log");
    let outside = root.path().join("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    fs::write(outside.join("victim"), b"outside content").expect("write victim");
    (root, dir, outside)
}

fn assert_outside_untouched(outside: &Path, what: &str) {
    let t = tree(outside);
    let names: Vec<&String> = t.keys().collect();
    assert_eq!(names, ["victim"], "{what}: files appeared outside the log: {names:?}");
    assert_eq!(t["victim"].2, b"outside content", "{what}: a file outside was modified");
}

/// Derived files and temp files: planted links are unlinked or replaced.
#[test]
fn symlinks_under_derived_and_temp_names_are_replaced() {
    let (_root, dir, outside) = setup();
    let log = Log::open_with(&dir, opts()).expect("create");
    fill(&log, "a", 3);
    log.close().expect("close");
    let active = common::segments(&dir).pop().expect("a segment");
    let base = common::file_name(&active).replace(".seg", "");
    // Links planted before the writer opens: the head temp file (a leftover
    // temp name), the index of the active segment, the stream table.
    let victim = outside.join("victim");
    let dangling = outside.join("new-file");
    symlink(&dangling, dir.join("annal.head.tmp")).expect("symlink");
    symlink(&victim, dir.join(format!("{base}.idx"))).expect("symlink");
    symlink(&victim, dir.join(annal::STREAM_TABLE_FILE)).expect("symlink");
    symlink(&victim, dir.join(annal::HEAD_FILE).with_extension("old")).expect("symlink");
    let log = Log::open_with(&dir, opts()).expect("reopen");
    // Links planted while it runs: the temp names of the derived files it
    // writes at the next roll, and of a snapshot.
    symlink(&dangling, dir.join(format!("{base}.idx.tmp"))).expect("symlink");
    symlink(&dangling, dir.join(format!("{}.tmp", annal::STREAM_TABLE_FILE))).expect("symlink");
    let snaps = dir.join("snapshots");
    fs::create_dir(&snaps).expect("mkdir snapshots");
    let repo = Repository::<Count>::new(&log).snapshot_every(1, 5);
    repo.execute("count-1", &1).expect("execute");
    let pos = log.next_position();
    let snap_name = annal::snapshot_testing::file_name("count-1", pos);
    symlink(&victim, snaps.join(&snap_name)).expect("symlink");
    symlink(&dangling, snaps.join(format!("{snap_name}.tmp"))).expect("symlink");
    repo.execute("count-1", &1)
        .expect("a snapshot replaces the planted link");
    fill(&log, "a", 60); // rolls several segments
    log.close().expect("close");
    assert!(common::segments(&dir).len() > 2, "the writer rolled");
    assert_outside_untouched(&outside, "derived and temp names");
    // Every file annal wrote is a regular file now (the `.old` link is not
    // annal's and stays).
    for (rel, (_, is_link, _)) in tree(&dir) {
        assert!(!is_link || rel == "annal.old", "{rel} is still a symlink");
    }
    let reader = annal::Reader::open(&dir).expect("reader");
    assert_eq!(
        common::read_all(&reader.view().expect("view"), 0).expect("read").len(),
        65
    );
}

/// Links under names annal creates with `create_new` (the next segment):
/// the writer refuses with an error naming the path.
#[test]
fn a_symlink_under_the_next_segment_name_is_refused() {
    // Planted under every name the next roll could take.
    let (_root, dir, outside) = setup();
    let log = Log::open_with(&dir, opts()).expect("create");
    let np = log.next_position();
    for p in np + 1..np + 60 {
        symlink(outside.join(format!("seg-{p}")), dir.join(format!("{p:020}.seg"))).expect("symlink");
    }
    let mut err = None;
    for i in 0..60 {
        if let Err(e) = log.append("a", ExpectedVersion::Any, &[EventData::new("E", vec![i as u8; 200])]) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the roll onto a planted link fails");
    let msg = err.to_string();
    assert!(msg.contains(".seg"), "the error names the segment: {msg}");
    drop(log);
    assert_outside_untouched(&outside, "next segment");
}

/// The active segment replaced by a link to a file outside: the writer
/// refuses to open it (it would append outside the log).
#[test]
fn a_symlinked_active_segment_is_refused() {
    let (_root, dir, outside) = setup();
    let log = Log::open_with(&dir, opts()).expect("create");
    fill(&log, "a", 2);
    log.close().expect("close");
    let active = common::segments(&dir).pop().expect("segment");
    let copy = outside.join("active-copy");
    fs::rename(&active, &copy).expect("move the active segment out");
    symlink(&copy, &active).expect("symlink");
    let before = fs::read(&copy).expect("read");
    match Log::open_with(&dir, opts()) {
        Ok(log) => {
            fill(&log, "a", 2);
            log.close().expect("close");
            panic!("the writer wrote through a symlinked active segment");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&common::file_name(&active)),
                "the error names the segment: {msg}"
            );
        }
    }
    assert_eq!(
        fs::read(&copy).expect("read"),
        before,
        "the file outside was not modified"
    );
}

/// The lock file as a link (to a file outside, or dangling): refused.
#[test]
fn a_symlinked_lock_file_is_refused() {
    let (_root, dir, outside) = setup();
    let log = Log::open_with(&dir, opts()).expect("create");
    fill(&log, "a", 1);
    log.close().expect("close");
    fs::remove_file(dir.join(annal::LOCK_FILE)).expect("rm lock");
    symlink(outside.join("victim"), dir.join(annal::LOCK_FILE)).expect("symlink");
    let e = Log::open_with(&dir, opts()).expect_err("a symlinked lock file is refused");
    assert!(e.to_string().contains(annal::LOCK_FILE), "names the lock file: {e}");
    assert_outside_untouched(&outside, "lock file");
    // A dangling one is refused too, and nothing is created outside.
    fs::remove_file(dir.join(annal::LOCK_FILE)).expect("rm lock");
    symlink(outside.join("new-lock"), dir.join(annal::LOCK_FILE)).expect("symlink");
    let e = Log::open_with(&dir, opts()).expect_err("a dangling symlinked lock file is refused");
    assert!(e.to_string().contains(annal::LOCK_FILE), "names the lock file: {e}");
    assert_outside_untouched(&outside, "dangling lock file");
}

/// The `snapshots` folder as a link to a folder outside: saving refuses.
#[test]
fn a_symlinked_snapshots_folder_is_refused() {
    let (_root, dir, outside) = setup();
    let log = Log::open_with(&dir, opts()).expect("create");
    symlink(&outside, dir.join("snapshots")).expect("symlink");
    let repo = Repository::<Count>::new(&log).snapshot_every(1, 5);
    // The command's event is appended; the snapshot after it is refused and
    // reported (Executed::snapshot_error), and so is an explicit snapshot.
    let x = repo.execute("count-1", &1).expect("the command's event is appended");
    let msg = format!("{:?}", x.snapshot_error);
    assert!(
        !x.snapshot_written && x.snapshot_error.is_some(),
        "a snapshot into a symlinked folder is refused: {msg}"
    );
    assert!(msg.contains("snapshots"), "the error names the folder: {msg}");
    let e = repo
        .snapshot("count-1")
        .expect_err("an explicit snapshot is refused too");
    assert!(e.to_string().contains("snapshots"), "{e}");
    log.close().expect("close");
    assert_outside_untouched(&outside, "snapshots folder");
}

/// Stream names never become paths.
#[test]
fn stream_names_never_reach_a_path() {
    let root = common::scratch();
    let dir = root.path().join("log");
    let before_root = tree(root.path());
    let long = "x/".repeat(65535 / 2) + "y";
    assert_eq!(long.len(), 65535);
    let names = [
        "../../etc/x",
        "/abs",
        "a/b",
        "..",
        ".",
        "snapshots/../../z",
        "ß∂ƒ😀\u{202e}gnp.seg",
        "00000000000000000000.seg",
        "annal.lock",
        long.as_str(),
    ];
    let log = Log::open_with(&dir, opts().max_event_bytes(1 << 20).max_batch_bytes(1 << 20)).expect("create");
    let repo = Repository::<Count>::new(&log).snapshot_every(1, 2);
    for (i, n) in names.iter().enumerate() {
        log.append(n, ExpectedVersion::Any, &[EventData::new("E", vec![i as u8; 300])])
            .unwrap_or_else(|e| panic!("append to {n:?}: {e}"));
        repo.execute(n, &2).unwrap_or_else(|e| panic!("execute on {n:?}: {e}"));
        repo.snapshot(n).unwrap_or_else(|e| panic!("snapshot of {n:?}: {e}"));
    }
    fill(&log, "plain", 20);
    log.close().expect("close");
    assert!(!Path::new("/abs").exists(), "/abs was created");
    // Outside the log directory: only the log directory is new.
    let after_root: Vec<String> = tree(root.path())
        .into_keys()
        .filter(|k| !k.starts_with("log/") && k != "log")
        .collect();
    assert_eq!(after_root, before_root.into_keys().collect::<Vec<_>>());
    // Inside: only the names of spec section 1.
    let seg = |s: &str, ext: &str| {
        s.len() == 20 + ext.len() && s.ends_with(ext) && s[..20].bytes().all(|b| b.is_ascii_digit())
    };
    let snap = |s: &str| {
        s.len() == 16 + 1 + 20 + 5
            && s.ends_with(".snap")
            && s[..16].bytes().all(|b| b.is_ascii_hexdigit())
            && &s[16..17] == "-"
            && s[17..37].bytes().all(|b| b.is_ascii_digit())
    };
    let ckpt = |s: &str| {
        s.strip_suffix(".ckpt").is_some_and(|n| {
            let parts: Vec<&str> = n.split('-').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| p.len() == 20 && p.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let mut snaps = 0;
    for (rel, (is_dir, is_link, _)) in tree(&dir) {
        assert!(!is_link, "{rel}");
        let ok = match rel.split_once('/') {
            None => {
                rel == annal::LOCK_FILE
                    || rel == annal::HEAD_FILE
                    || rel == annal::STREAM_TABLE_FILE
                    || (rel == "snapshots" && is_dir)
                    || seg(&rel, ".seg")
                    || seg(&rel, ".idx")
                    || ckpt(&rel)
            }
            Some(("snapshots", f)) => {
                snaps += 1;
                snap(f)
            }
            _ => false,
        };
        assert!(ok, "unexpected entry {rel:?} in the log directory");
    }
    assert!(snaps >= names.len(), "every stream has a snapshot ({snaps})");
    // And the data is all there, under its names.
    let reader = annal::Reader::open(&dir).expect("reader");
    let view = reader.view().expect("view");
    for n in names {
        assert_eq!(view.stream_version(n).expect("version"), Some(2), "{n:?}");
    }
}
