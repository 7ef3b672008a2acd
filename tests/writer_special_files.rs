//! Scenario: special files and lying lengths under a log's file names
//! (issue 13, defects 10 and 23, the writer's side).
//!
//! A FIFO named `annal.lock`, `annal.head`, `annal.streams`, an `.idx`, the
//! newest `.seg` or a `.snap` must not hang `Log::open` or a snapshot load
//! (opening a FIFO for reading waits for a writer); a symlink to `/dev/zero`
//! under those names must not be followed (it would grow memory without
//! bound). Each case runs in a thread with a generous deadline, so that a
//! regression fails instead of hanging the suite. A frame header in a
//! sparse file claiming 4 GiB is refused by the limits (`max_batch_bytes`)
//! before any of its body is read.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annal::io::StdIo;
use annal::{EventData, ExpectedVersion, HEAD_FILE, LOCK_FILE, Log, Options, STREAM_TABLE_FILE, Snapshot};

const DEADLINE: Duration = Duration::from_secs(120);

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn opts() -> Options {
    Options::default().segment_size(4096)
}

/// A closed log of several segments, with indexes, a stream table and one
/// snapshot; returns the snapshot's path.
fn make_log(dir: &Path) -> PathBuf {
    let log = Log::open_with(dir, opts()).expect("open");
    let pad = vec![b'p'; 400];
    for i in 0..30 {
        log.append(
            &format!("s-{}", i % 3),
            ExpectedVersion::Any,
            &[EventData::new("E", &pad[..])],
        )
        .expect("append");
    }
    log.close().expect("close");
    assert!(segments(dir).len() >= 3);
    let snap = Snapshot {
        stream: "s-0".into(),
        stream_version: 0,
        position: 0,
        schema_version: 1,
        payload: b"state".to_vec(),
        subject_keys: Vec::new(),
    };
    annal::snapshot_testing::save(dir, Arc::new(StdIo), &snap, 1).expect("snapshot")
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

fn zero_link(path: &Path) {
    let _ = fs::remove_file(path);
    std::os::unix::fs::symlink("/dev/zero", path).expect("symlink");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// `Log::open` fails with an error naming the file.
    Refused,
    /// `Log::open` works (the file is a derived hint, rebuilt) and the log
    /// reads back whole.
    Works,
}

/// Put a special file under `name` (chosen by `pick`) and open the log in a
/// thread with a deadline.
fn case(what: &str, pick: fn(&Path) -> PathBuf, plant: fn(&Path), want: Want) {
    let dir = tempfile::tempdir().expect("tempdir");
    make_log(dir.path());
    let path = pick(dir.path());
    plant(&path);
    let d = dir.path().to_owned();
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    let res = support::within(DEADLINE, &format!("Log::open with {what}"), move || {
        let r = Log::open_with(&d, opts()).map(|log| {
            // Reading every stream goes through the indexes and the table.
            let view = log.view().expect("view");
            let mut n = 0usize;
            for s in 0..3 {
                for r in view.read_stream(&format!("s-{s}"), 0, annal::Direction::Forward, u64::MAX) {
                    r.expect("read");
                    n += 1;
                }
            }
            log.close().expect("close");
            n
        });
        r.map_err(|e| e.to_string())
    });
    match (want, res) {
        (Want::Refused, Err(m)) => assert!(m.contains(&name), "{what}: the error names {name}: {m}"),
        (Want::Works, Ok(n)) => assert_eq!(n, 30, "{what}: every event reads back"),
        (w, r) => panic!("{what}: expected {w:?}, got {r:?}"),
    }
}

fn lock(d: &Path) -> PathBuf {
    d.join(LOCK_FILE)
}
fn head(d: &Path) -> PathBuf {
    d.join(HEAD_FILE)
}
fn table(d: &Path) -> PathBuf {
    d.join(STREAM_TABLE_FILE)
}
fn first_idx(d: &Path) -> PathBuf {
    segments(d)[0].with_extension("idx")
}
fn newest_seg(d: &Path) -> PathBuf {
    segments(d).pop().expect("a segment")
}

#[test]
fn a_fifo_as_the_lock_file_does_not_hang_open() {
    case("a FIFO as annal.lock", lock, mkfifo, Want::Refused);
}

#[test]
fn a_fifo_as_the_head_does_not_hang_open() {
    case("a FIFO as annal.head", head, mkfifo, Want::Refused);
}

#[test]
fn a_fifo_as_the_stream_table_does_not_hang_open() {
    case("a FIFO as annal.streams", table, mkfifo, Want::Works);
}

#[test]
fn a_fifo_as_an_index_does_not_hang_open() {
    case("a FIFO as an .idx", first_idx, mkfifo, Want::Works);
}

#[test]
fn a_fifo_as_the_newest_segment_does_not_hang_open() {
    case("a FIFO as the newest .seg", newest_seg, mkfifo, Want::Refused);
}

#[test]
fn a_head_linked_to_dev_zero_is_not_followed() {
    case("annal.head -> /dev/zero", head, zero_link, Want::Refused);
}

#[test]
fn a_stream_table_linked_to_dev_zero_is_not_followed() {
    case("annal.streams -> /dev/zero", table, zero_link, Want::Works);
}

#[test]
fn an_index_linked_to_dev_zero_is_not_followed() {
    case("an .idx -> /dev/zero", first_idx, zero_link, Want::Works);
}

#[test]
fn a_lock_file_linked_to_dev_zero_is_not_followed() {
    case("annal.lock -> /dev/zero", lock, zero_link, Want::Refused);
}

#[test]
fn a_special_snapshot_file_hangs_no_load_and_no_save() {
    for (what, plant) in [("a FIFO", mkfifo as fn(&Path)), ("a link to /dev/zero", zero_link)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap_path = make_log(dir.path());
        plant(&snap_path);
        let d = dir.path().to_owned();
        let (found, warnings) = support::within(DEADLINE, &format!("a snapshot load with {what}"), move || {
            let log = Log::open_with(&d, opts()).expect("open");
            log.close().expect("close");
            annal::snapshot_testing::load(&d, "s-0", 1, None).expect("load")
        });
        assert!(found.is_none(), "{what}");
        assert!(
            warnings.iter().any(|w| w.contains(".snap")),
            "{what}: the skipped file is reported: {warnings:?}"
        );
        // A new save replaces it (never writing through it) and prunes it.
        let d = dir.path().to_owned();
        support::within(DEADLINE, &format!("a snapshot save with {what}"), move || {
            let snap = Snapshot {
                stream: "s-0".into(),
                stream_version: 1,
                position: 3,
                schema_version: 1,
                payload: b"newer".to_vec(),
                subject_keys: Vec::new(),
            };
            annal::snapshot_testing::save(&d, Arc::new(StdIo), &snap, 1).expect("save")
        });
        let (found, _) = annal::snapshot_testing::load(dir.path(), "s-0", 1, None).expect("load");
        assert_eq!(found.expect("the new snapshot").payload, b"newer");
    }
}

/// Defect 23: a frame header claiming 4 GiB, in a sparse file that holds 4
/// GiB of holes after it. `Log::open` read all of it (23 s, 4.2 GB); now the
/// header is checked against `max_batch_bytes` first and the body never read.
#[test]
fn a_frame_claiming_four_gib_in_a_sparse_file_is_a_torn_tail_cut_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    log.append("s", ExpectedVersion::Any, &[EventData::new("E", b"{}".as_slice())])
        .expect("append");
    log.close().expect("close");
    let seg = newest_seg(dir.path());
    let mut bytes = fs::read(&seg).expect("read");
    let end = bytes.len() as u64;
    // A copy of the first frame's header, claiming 4 GiB, its CRC recomputed.
    let mut h = bytes[128..200].to_vec();
    let claimed: u64 = 4 << 30;
    h[8..16].copy_from_slice(&claimed.to_le_bytes());
    h[16..24].copy_from_slice(&1u64.to_le_bytes());
    let crc = crc32fast::hash(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&h);
    fs::write(&seg, &bytes).expect("write");
    let f = fs::OpenOptions::new().write(true).open(&seg).expect("open");
    f.set_len(end + claimed + 4096).expect("sparse");
    drop(f);
    let d = dir.path().to_owned();
    // The header claims more than the format's MAX_FRAME_LEN (spec 3.1), so it
    // is not a frame: it lies past the durable boundary of this cleanly
    // closed log (the head says `end`), so it is a torn tail, cut without
    // reading the 4 GiB it claims.
    let log = support::within(DEADLINE, "Log::open of a sparse frame", move || {
        Log::open(&d).expect("a torn tail is cut")
    });
    let cut = log.recovery().truncated.clone().expect("the tail was cut");
    assert_eq!(cut.path, seg);
    assert_eq!(cut.offset, end);
    assert_eq!(cut.bytes_removed, claimed + 4096);
    assert_eq!(fs::metadata(&seg).expect("stat").len(), end);
    let view = log.view().expect("view");
    assert_eq!(view.read_all(0).count(), 1);
    log.close().expect("close");
}
