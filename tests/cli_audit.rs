//! The audit chain through the real binary, as an auditor uses it: `annal
//! anchor`, then `annal check --anchor` after more appends, after an edited
//! event (whose record CRC was fixed up, so that only the chain tells), with a
//! wrong anchor; a keyed log (`annal keygen`, `--key`); `--no-chain`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use annal::{EventData, ExpectedVersion, Log, Options};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(args)
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Append `n` batches of two events to the log in `dir` (library writer).
/// The byte edits below use format version 2's layout (every frame stores
/// its chain slot): the log is created in version 2 before the CLI appends
/// (a log keeps its version).
fn v2_log(dir: &Path) {
    if !dir.join("annal.head").exists() {
        let opts = annal::Options::default().format_version(2);
        annal::Log::open_with(dir, opts)
            .expect("create a v2 log")
            .close()
            .expect("close");
    }
}

fn append_batches(dir: &Path, from: u64, n: u64) {
    v2_log(dir);
    let log = Log::open_with(dir, Options::default().segment_size(8 * 1024)).expect("open");
    for i in from..from + n {
        let payload = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60));
        log.append(
            &format!("order-{}", i % 3),
            ExpectedVersion::Any,
            &[
                EventData::new("Placed", payload.clone().into_bytes()),
                EventData::new("Paid", payload.into_bytes()),
            ],
        )
        .expect("append");
    }
    log.close().expect("close");
}

fn take_anchor(dir: &Path) -> String {
    let out = run(&["anchor", p(dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = stdout(&out).trim().to_owned();
    assert!(line.parse::<annal::Anchor>().is_ok(), "{line}");
    line
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn anchor_then_append_then_check_holds_and_an_edit_is_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    append_batches(&dir, 0, 20);
    let first = take_anchor(&dir);
    assert!(first.starts_with("40:"), "{first}");
    append_batches(&dir, 20, 30);
    let second = take_anchor(&dir);
    assert!(second.starts_with("100:"), "{second}");

    let out = run(&["check", p(&dir), "--anchor", &first, "--anchor", &second]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains(&format!("anchor {first}: holds")), "{s}");
    assert!(s.contains(&format!("anchor {second}: holds")), "{s}");
    assert!(
        s.contains("audit chain: verified (unkeyed): 50 batch links recomputed, all hold"),
        "{s}"
    );

    // A wrong hash at a true boundary.
    let wrong = format!("40:{}", "0".repeat(64));
    let out = run(&["check", p(&dir), "--anchor", &wrong]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("history before position 40 differs from the anchor"),
        "{}",
        text(&out)
    );

    // Edit a payload byte of the first record of the third batch of the second
    // segment, and fix that record's CRC: every frame still validates.
    let seg = segments(&dir)[1].clone();
    let mut b = fs::read(&seg).expect("read segment");
    let mut off = 128;
    for _ in 0..2 {
        off += u64_at(&b, off + 8) as usize;
    }
    let position = u64_at(&b, off + 16);
    let rec = off + 72;
    let record_len = u32_at(&b, rec) as usize;
    let at = rec + record_len - 10;
    assert_eq!(b[at], b'x', "the payload's padding");
    b[at] = b'y';
    let crc = crc32fast::hash(&b[rec + 8..rec + record_len]);
    b[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &b).expect("write segment");
    // Readers see nothing wrong.
    let out = run(&["read", p(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(&["check", p(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    let want = format!(
        "{} at byte {}: audit chain broken: the batch at position {position} hashes to",
        seg.display(),
        off + 40
    );
    assert!(s.contains(&want), "expected {want:?} in\n{s}");
    assert!(
        s.contains(&format!("history differs from position {position} on")),
        "{s}"
    );
    assert_eq!(s.matches("audit chain broken").count(), 1, "{s}");

    // The earlier anchor (before the edit) still holds; the later one does not.
    assert!(position >= 40, "the edit is after the first anchor");
    let out = run(&["check", p(&dir), "--anchor", &first, "--anchor", &second, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("check --json parses");
    let anchors = doc["anchors"].as_array().expect("anchors");
    assert_eq!(anchors[0]["ok"], Value::Bool(true), "{doc}");
    assert_eq!(anchors[1]["ok"], Value::Bool(false), "{doc}");
    assert!(
        anchors[1]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("broken before the anchor"),
        "{doc}"
    );
    assert_eq!(doc["chain"]["status"], "verified", "{doc}");
    assert_eq!(doc["chain"]["broken"], 1, "{doc}");
}

#[test]
fn anchor_json_parses_and_matches_the_text_form() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    append_batches(&dir, 0, 3);
    let line = take_anchor(&dir);
    let out = run(&["anchor", p(&dir), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("anchor --json parses");
    assert_eq!(doc["position"], 6);
    assert_eq!(format!("6:{}", doc["hash"].as_str().expect("hash")), line);
    assert_eq!(doc["keyed"], Value::Bool(false));
    assert_eq!(doc["log_id"].as_str().expect("log_id").len(), 32);
}

#[test]
fn keyed_logs_need_the_key_to_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let key = tmp.path().join("chain.key");
    let other = tmp.path().join("other.key");
    let out = run(&["keygen", p(&key)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out).trim().len(), 32, "prints the key id: {}", text(&out));
    let out = run(&["keygen", p(&key)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an existing key file is kept: {}",
        text(&out)
    );
    assert_eq!(run(&["keygen", p(&other)]).status.code(), Some(0));

    for i in 0..3 {
        let data = format!("{{\"i\":{i}}}");
        let out = run(&[
            "append",
            p(&dir),
            "--key",
            p(&key),
            "--stream",
            "s",
            "--type",
            "T",
            "--data",
            &data,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    // Writing without the key is refused.
    let out = run(&["append", p(&dir), "--stream", "s", "--type", "T", "--data", "{}"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("--key"), "{}", text(&out));

    let out = run(&["anchor", p(&dir), "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("anchor --json parses");
    assert_eq!(doc["keyed"], Value::Bool(true));
    // Without the key, the anchor of a version-3 log is the one at its last
    // stored chain slot (spec 21.3): an earlier batch boundary.
    let anchor = format!(
        "{}:{}",
        doc["position"].as_u64().expect("position"),
        doc["hash"].as_str().expect("hash")
    );

    let out = run(&["check", p(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("keyed audit chain not verified: no key given"),
        "{}",
        text(&out)
    );

    let out = run(&["check", p(&dir), "--key", p(&key), "--anchor", &anchor]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("audit chain: verified (keyed): 3 batch links"),
        "{}",
        text(&out)
    );

    let out = run(&["check", p(&dir), "--key", p(&other)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("the key given is not the log's chain key"),
        "{}",
        text(&out)
    );
}

#[test]
fn logs_without_the_chain_have_no_anchor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let out = run(&[
        "append",
        p(&dir),
        "--no-chain",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&["anchor", p(&dir)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("has no audit chain"), "{}", text(&out));
    let out = run(&["check", p(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("audit chain: absent"), "{}", text(&out));
}
