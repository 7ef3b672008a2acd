//! `annal check` driven through the real binary: a clean log, damage in sealed
//! and active segments, missing and damaged index files, a torn tail in a
//! crash image (a warning) and its repair, and the JSON output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, Snapshot};

const SEGMENT_SIZE: u64 = 16 * 1024;

fn opts() -> Options {
    Options::default()
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Buffered)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn append_some(log: &Log, from: u64, n: u64) {
    for i in from..from + n {
        let stream = format!("order-{}", i % 7);
        let payload = vec![b'a' + (i % 26) as u8; 100 + (i % 50) as usize];
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[
                EventData::new("Placed", payload.clone()),
                EventData::new("Paid", payload),
            ],
        )
        .expect("append");
    }
}

/// A cleanly closed log with several sealed segments, their indexes, the
/// stream table and a snapshot.
fn clean_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), opts()).expect("open");
    append_some(&log, 0, 200);
    log.sync().expect("sync");
    let snap = Snapshot {
        stream: "order-1".into(),
        stream_version: 1,
        position: 3,
        schema_version: 1,
        payload: b"state".to_vec(),
        subject_keys: Vec::new(),
    };
    annal::snapshot_testing::save(dir.path(), Arc::new(annal::io::StdIo), &snap, 2).expect("snapshot");
    log.close().expect("close");
    assert!(files(dir.path(), "seg").len() >= 3, "several segments");
    dir
}

fn annal(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("check")
        .args(args)
        .arg(dir)
        .output()
        .expect("run annal")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(dir: &Path) -> (i32, serde_json::Value) {
    let o = annal(&["--json"], dir);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

fn flip(path: &Path, at: u64) {
    let mut b = fs::read(path).expect("read");
    b[at as usize] ^= 0x40;
    fs::write(path, b).expect("write");
}

/// Offset of the first record's payload in the first batch of a segment
/// (segment header 128 + frame header 72 + record header 72 + a few bytes).
const IN_FIRST_RECORD: u64 = 128 + 72 + 72 + 20;

#[test]
fn clean_log_passes_with_a_summary() {
    let dir = clean_log();
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("checked") && out.contains("400 records"), "{}", text(&o));
    assert!(!out.contains("PROBLEM") && !out.contains("WARNING"), "{}", text(&o));
    // No progress bar when stderr is not a terminal.
    assert!(o.stderr.is_empty(), "{}", text(&o));
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_a_problem_at_its_offset() {
    let dir = clean_log();
    let seg = files(dir.path(), "seg")[1].clone();
    flip(&seg, IN_FIRST_RECORD);
    let (code, v) = json(dir.path());
    assert_eq!(code, 1, "{v}");
    let p = &v["problems"][0];
    assert_eq!(p["file"].as_str(), seg.to_str(), "{v}");
    // Format version 3: the first frame's `body_crc` (spec 3.6) names it.
    assert_eq!(p["offset"].as_u64(), Some(128 + 28), "{v}");
}

#[test]
fn flipped_byte_in_the_active_segment_of_a_closed_log_is_a_problem() {
    let dir = clean_log();
    let seg = files(dir.path(), "seg").last().cloned().expect("active");
    assert!(
        fs::metadata(&seg).expect("stat").len() > IN_FIRST_RECORD,
        "active segment holds events"
    );
    flip(&seg, IN_FIRST_RECORD);
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("PROBLEM") && out.contains("durable boundary"),
        "{}",
        text(&o)
    );
    assert!(out.contains(&*seg.to_string_lossy()), "{}", text(&o));
}

#[test]
fn truncated_sealed_segment_is_a_problem() {
    let dir = clean_log();
    let seg = files(dir.path(), "seg")[0].clone();
    let len = fs::metadata(&seg).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 100)
        .expect("truncate");
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&*seg.to_string_lossy()),
        "{}",
        text(&o)
    );
}

#[test]
fn deleted_index_is_a_problem_that_repair_fixes() {
    let dir = clean_log();
    let idx = files(dir.path(), "idx")[0].clone();
    fs::remove_file(&idx).expect("remove");
    let (code, v) = json(dir.path());
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problems"][0]["file"].as_str(), idx.to_str(), "{v}");
    let o = annal(&["--repair"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rebuilt the index"),
        "{}",
        text(&o)
    );
    assert!(idx.exists());
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn flipped_byte_in_an_index_is_a_problem_that_repair_fixes() {
    let dir = clean_log();
    let idx = files(dir.path(), "idx")[1].clone();
    flip(&idx, 130);
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&*idx.to_string_lossy()),
        "{}",
        text(&o)
    );
    let o = annal(&["--repair"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn damaged_snapshot_is_a_problem_that_repair_removes() {
    let dir = clean_log();
    let snap = files(&dir.path().join("snapshots"), "snap")[0].clone();
    flip(&snap, 70);
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = annal(&["--repair"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!snap.exists());
}

/// A crash image: the files copied while the writer is open, after an
/// unsynced append, with the last batch cut in the middle.
#[test]
fn torn_tail_in_a_crash_image_is_a_warning_and_repair_cuts_it() {
    let src = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(src.path(), opts()).expect("open");
    append_some(&log, 0, 100);
    log.sync().expect("sync");
    let seg = files(src.path(), "seg").last().cloned().expect("active");
    let synced = fs::metadata(&seg).expect("stat").len();
    append_some(&log, 100, 1);
    let written = fs::metadata(&seg).expect("stat").len();
    assert!(written > synced, "the unsynced batch is in the active segment");

    // With the writer open, the unsynced end is in progress, not damage.
    let o = annal(&[], src.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // ... and repair is refused.
    let o = annal(&["--repair"], src.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked"), "{}", text(&o));

    let image = tempfile::tempdir().expect("tempdir");
    for e in fs::read_dir(src.path()).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            fs::copy(&p, image.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    drop(log);
    let cut = image.path().join(seg.file_name().expect("name"));
    let f = fs::OpenOptions::new().write(true).open(&cut).expect("open");
    f.set_len(synced + (written - synced) / 2).expect("cut");
    drop(f);

    let (code, v) = json(image.path());
    assert_eq!(code, 0, "{v}");
    let w = v["warnings"].as_array().expect("warnings");
    assert!(
        w.iter().any(|w| w["file"].as_str() == cut.to_str()
            && w["offset"].as_u64() == Some(synced)
            && w["detail"]
                .as_str()
                .is_some_and(|d| d.contains("torn tail") && d.contains("--repair"))),
        "{v}"
    );
    assert_eq!(v["summary"]["records"].as_u64(), Some(200), "{v}");

    let o = annal(&["--repair"], image.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("cut the torn tail"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::metadata(&cut).expect("stat").len(), synced);
    let (code, v) = json(image.path());
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn not_a_log_exits_2_with_a_plain_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = annal(&[], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not an annal log") && !err.contains("NotALog"),
        "{}",
        text(&o)
    );
}

#[test]
fn help_has_an_example() {
    let o = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["check", "--help"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("annal check ./events"),
        "{}",
        text(&o)
    );
}
