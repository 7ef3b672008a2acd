//! `annal check` against hostile files (issue 13, defects 9, 10 and 23, the
//! check side): FIFOs, symlinks and sparse files under the log's file names,
//! a symlinked or world-writable log directory or `snapshots/`.
//!
//! * check never hangs on a FIFO (a hang is this test never finishing), never
//!   follows a symlink, and reports each such file as a problem naming the
//!   file and what it is;
//! * the largest single allocation while checking a sparse file of GiBs (a
//!   head, a snapshot, an active segment whose frame claims 4 GiB) stays
//!   bounded by the limits, not by the lengths the files claim;
//! * `snapshots/` as a symlink is not followed (a warning), and
//!   `check --repair` deletes nothing through it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use annal::{CheckOptions, CheckReport, EventData, ExpectedVersion, Log, Options};

struct Largest;

/// The largest single allocation (or reallocation) since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only records
// the largest size asked for.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

/// Tests that measure the largest allocation run one at a time.
static MEASURE: Mutex<()> = Mutex::new(());

/// What a check may allocate at once: far below the GiBs the files claim.
const BOUND: usize = 64 << 20;

fn check_measured(dir: &Path) -> (CheckReport, usize) {
    let _g = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    let r = annal::check(dir, CheckOptions::default()).expect("check runs");
    (r, LARGEST.load(Ordering::Relaxed))
}

/// A closed log with sealed segments (indexes, a stream table), snapshots
/// folder, and a few batches in the active segment.
fn log() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().format_version(2).segment_size(8 * 1024)).expect("open");
    for i in 0..60u64 {
        log.append(
            &format!("s-{}", i % 4),
            ExpectedVersion::Any,
            &[EventData::new("E", common::payload(i, 200))],
        )
        .expect("append");
    }
    log.close().expect("close");
    assert!(common::segments(dir.path()).len() >= 3);
    let r = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(r.is_ok() && r.warnings.is_empty(), "{:?} {:?}", r.problems, r.warnings);
    dir
}

fn mkfifo(p: &Path) {
    let _ = fs::remove_file(p);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

fn problem_naming<'a>(r: &'a CheckReport, p: &Path) -> Option<&'a annal::Finding> {
    r.problems.iter().find(|f| f.file == p)
}

fn newest_idx(dir: &Path) -> PathBuf {
    let segs = common::segments(dir);
    segs[segs.len() - 2].with_extension("idx")
}

fn a_snapshot(dir: &Path) -> PathBuf {
    // The name's form is not checked by check: any `*.snap`.
    dir.join("snapshots").join("0000000000000001-00000000000000000003.snap")
}

#[test]
fn a_fifo_under_any_name_is_reported_not_waited_on() {
    let base = log();
    let names: Vec<PathBuf> = vec![
        base.path().join(annal::HEAD_FILE),
        base.path().join(annal::STREAM_TABLE_FILE),
        newest_idx(base.path()),
        common::segments(base.path()).pop().expect("segments"),
        a_snapshot(base.path()),
    ];
    for (i, _) in names.iter().enumerate() {
        let copy = common::fresh_copy(base.path());
        let target = copy.path().join(names[i].strip_prefix(base.path()).expect("inside"));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        mkfifo(&target);
        let r = annal::check(copy.path(), CheckOptions::default()).expect("check runs");
        let f = problem_naming(&r, &target)
            .unwrap_or_else(|| panic!("{}: no problem naming it: {:?}", target.display(), r.problems));
        assert!(f.detail.contains("a FIFO"), "{f}");
        assert_eq!(f.offset, 0, "{f}");
    }
}

#[test]
fn a_symlink_to_dev_zero_is_reported_not_followed() {
    let base = log();
    for name in [PathBuf::from(annal::HEAD_FILE), a_snapshot(Path::new(""))] {
        let copy = common::fresh_copy(base.path());
        let target = copy.path().join(&name);
        let _ = fs::remove_file(&target);
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        symlink("/dev/zero", &target).expect("symlink");
        let (r, largest) = check_measured(copy.path());
        let f = problem_naming(&r, &target)
            .unwrap_or_else(|| panic!("{}: no problem naming it: {:?}", target.display(), r.problems));
        assert!(f.detail.contains("a symlink to /dev/zero"), "{f}");
        assert!(largest < BOUND, "largest allocation {largest} bytes");
    }
}

/// Make `p` a sparse file of `len` bytes that starts with `start`.
fn sparse(p: &Path, start: &[u8], len: u64) {
    let _ = fs::remove_file(p);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, start).expect("write");
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open")
        .set_len(len)
        .expect("set_len");
}

#[test]
fn sparse_head_and_snapshot_of_gibs_cost_no_more_than_their_structure() {
    let base = log();

    let copy = common::fresh_copy(base.path());
    let head = copy.path().join(annal::HEAD_FILE);
    let bytes = fs::read(&head).expect("read head");
    sparse(&head, &bytes, 3 << 30);
    let (r, largest) = check_measured(copy.path());
    let f = problem_naming(&r, &head).unwrap_or_else(|| panic!("{:?}", r.problems));
    assert!(
        f.detail
            .contains("expected a 128-byte head file, found 3221225472 bytes"),
        "{f}"
    );
    assert!(largest < BOUND, "largest allocation {largest} bytes");

    let copy = common::fresh_copy(base.path());
    let snap = a_snapshot(copy.path());
    // A header claiming a payload of 256 MiB - 65 bytes (stream name "s"):
    // more than check holds in memory at once; checked by streaming.
    let mut h = vec![0u8; 65];
    h[..8].copy_from_slice(b"ANNALSNP");
    h[8] = 1;
    h[12] = 1;
    h[40..48].copy_from_slice(&((256u64 << 20) - 65).to_le_bytes());
    h[64] = b's';
    sparse(&snap, &h, 256 << 20);
    let (r, largest) = check_measured(copy.path());
    let f = problem_naming(&r, &snap).unwrap_or_else(|| panic!("{:?}", r.problems));
    assert!(f.detail.contains("CRC"), "{f}");
    assert!(largest < BOUND, "largest allocation {largest} bytes");
}

/// A frame header claiming `frame_len` at `off` of a segment, CRC fixed.
fn claim(seg: &mut [u8], off: usize, frame_len: u64) {
    seg[off + 8..off + 16].copy_from_slice(&frame_len.to_le_bytes());
    common::fix_frame_header_crc(seg, off);
}

#[test]
fn a_frame_claiming_4_gib_is_not_read() {
    let base = log();
    // The active segment, sparse to 4 GiB + a page, its last frame claiming
    // 4 GiB: past the durable boundary? No: the head says the log was closed
    // there, so it is damage, reported without reading 4 GiB.
    let copy = common::fresh_copy(base.path());
    let seg = common::segments(copy.path()).pop().expect("segments");
    let mut b = fs::read(&seg).expect("read");
    let last = common::frames(&b).pop().expect("a frame");
    claim(&mut b, last.offset as usize, 4 << 30);
    sparse(&seg, &b, (4 << 30) + 8192);
    let (r, largest) = check_measured(copy.path());
    let f = problem_naming(&r, &seg).unwrap_or_else(|| panic!("{:?} {:?}", r.problems, r.warnings));
    assert!(f.detail.contains("at most 1073741824, found 4294967296"), "{f}");
    assert!(largest < BOUND, "largest allocation {largest} bytes");

    // A sealed segment (mapped): the same, its bytes never touched.
    let copy = common::fresh_copy(base.path());
    let seg = common::segments(copy.path())[1].clone();
    let mut b = fs::read(&seg).expect("read");
    let first = common::frames(&b)[0];
    claim(&mut b, first.offset as usize, 4 << 30);
    sparse(&seg, &b, (4 << 30) + 8192);
    let (r, largest) = check_measured(copy.path());
    let f = problem_naming(&r, &seg).unwrap_or_else(|| panic!("{:?}", r.problems));
    assert!(f.detail.contains("at most 1073741824, found 4294967296"), "{f}");
    assert_eq!(f.offset, first.offset + 8);
    assert!(largest < BOUND, "largest allocation {largest} bytes");
}

#[test]
fn a_symlinked_snapshots_folder_is_not_followed_and_repair_deletes_nothing_there() {
    let base = log();
    let outside = common::scratch();
    let victim = outside.path().join("0000000000000001-00000000000000000003.snap");
    fs::write(&victim, b"not a snapshot, and not annal's").expect("write");
    let _ = fs::remove_dir_all(base.path().join("snapshots"));
    symlink(outside.path(), base.path().join("snapshots")).expect("symlink");

    let r = annal::check(base.path(), CheckOptions::default()).expect("check");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.file == base.path().join("snapshots") && w.detail.contains("is a symlink")),
        "{:?}",
        r.warnings
    );
    let r = annal::check(base.path(), CheckOptions::default().repair(true)).expect("repair");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(
        victim.exists(),
        "repair deleted a file outside the log: {:?}",
        r.repairs
    );
}

#[test]
fn a_world_writable_log_directory_is_warned_about() {
    let base = log();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let r = annal::check(base.path(), CheckOptions::default()).expect("check");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.file == base.path() && w.detail.contains("writable by anyone")),
        "{:?}",
        r.warnings
    );
}
