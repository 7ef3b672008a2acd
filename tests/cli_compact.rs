//! `annal compact` (spec 3.10), driven through the built binary: a deleted
//! stream's events leave every file of the log, the other streams read as
//! before, `--json` parses, `annal check` passes; `--master-key` is needed
//! where the key file is wrapped; logs before format version 4 are refused.

use std::path::Path;

use serde_json::Value;

mod cli_support;
use cli_support::{ok, p, run, text};

/// The marker in every payload of the stream that is deleted.
const SECRET: &[u8] = b"S3CR3T-PAYLOAD";

/// A log in 1 KiB segments: `secret-1` (10 events whose payloads hold
/// [`SECRET`]) interleaved with `keep-a` and `keep-b`, then 60 more events
/// of the kept streams, so that every `secret-1` event lies in a sealed
/// segment. Returns the anchor after the first 5 events (inside the first
/// segment, so superseded once it is compacted).
fn build(dir: &Path) -> String {
    let log = annal::Log::open_with(dir, annal::Options::default().segment_size(1024)).expect("open");
    let mut anchor = None;
    let append = |s: &str, data: String| {
        log.append(
            s,
            annal::ExpectedVersion::Any,
            &[annal::EventData::new("Noted", data.into_bytes())],
        )
        .expect("append");
    };
    for i in 0..10 {
        append(
            "secret-1",
            format!("{{\"s\":\"{}-{i}\"}}", String::from_utf8_lossy(SECRET)),
        );
        append("keep-a", format!("{{\"a\":{i}}}"));
        if i == 1 {
            anchor = log.anchor();
        }
        append("keep-b", format!("{{\"b\":{i}}}"));
    }
    for i in 10..40 {
        append("keep-a", format!("{{\"a\":{i}}}"));
        append("keep-b", format!("{{\"b\":{i}}}"));
    }
    log.close().expect("close");
    let anchor = anchor.expect("a chained log has an anchor");
    assert_eq!(anchor.position, 5);
    anchor.to_string()
}

/// Every file under `dir` (recursively) that holds `needle` anywhere in its
/// bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.extend(files_holding(&path, needle));
            continue;
        }
        let bytes = std::fs::read(&path).expect("read a file");
        if bytes.windows(needle.len()).any(|w| w == needle) {
            out.push(path.display().to_string());
        }
    }
    out
}

fn read(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["read", p(dir), "--json"];
    all.extend_from_slice(args);
    text(&ok(run(&all)).stdout)
}

#[test]
fn compact_removes_a_deleted_stream_from_every_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build(&dir);
    let segments = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
        })
        .count();
    assert!(segments > 3, "a log of several segments: {segments}");
    ok(run(&["delete", p(&dir), "secret-1", "--hard"]));
    let (whole, a, b) = (
        read(&dir, &[]),
        read(&dir, &["--stream", "keep-a"]),
        read(&dir, &["--stream", "keep-b"]),
    );
    assert_eq!(a.lines().count(), 40);
    assert!(!files_holding(&dir, SECRET).is_empty(), "the bytes are there before");

    let out = text(&ok(run(&["compact", p(&dir), "--json", "--drop-originals"])).stdout);
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["removed_events"], 10, "{v}");
    let compacted = v["compacted"].as_array().expect("compacted");
    assert!(!compacted.is_empty(), "{v}");
    assert!(
        compacted
            .iter()
            .all(|n| n.as_str().is_some_and(|n| n.ends_with(".seg"))),
        "{v}"
    );
    assert_eq!(
        v["record_positions"].as_array().expect("positions").len(),
        compacted.len(),
        "{v}"
    );
    assert!(v["bytes_after"].as_u64() < v["bytes_before"].as_u64(), "{v}");
    assert!(v["unchanged"].as_u64().is_some(), "{v}");

    // Every byte of every file: the deleted payloads are gone.
    assert_eq!(files_holding(&dir, SECRET), Vec::<String>::new());
    // The other streams, and the whole log, read exactly as before.
    assert_eq!(read(&dir, &["--stream", "keep-a"]), a);
    assert_eq!(read(&dir, &["--stream", "keep-b"]), b);
    assert_eq!(read(&dir, &[]), whole);
    // The hard-deleted stream still reads as deleted.
    let out = run(&["read", p(&dir), "--stream", "secret-1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // check passes.
    let out = text(&ok(run(&["check", p(&dir)])).stdout);
    assert!(out.contains(": ok"), "{out}");
    // Nothing left to remove: exit 0, says so, and the JSON is empty.
    let again = text(&ok(run(&["compact", p(&dir)])).stdout);
    assert!(again.starts_with("nothing to compact"), "{again}");
    let out = text(&ok(run(&["compact", p(&dir), "--json"])).stdout);
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["removed_events"], 0, "{v}");
    assert_eq!(v["compacted"].as_array().map(Vec::len), Some(0), "{v}");
}

/// `annal check` accepts what `annal compact` leaves: each rewrite accounted
/// for by its `$compaction` record (spec 3.10, "`check`"), both after a
/// deletion and after `max_count`, in text and in JSON.
#[test]
fn check_passes_after_compact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let anchor = build(&dir);
    ok(run(&["delete", p(&dir), "secret-1"]));
    ok(run(&["metadata", p(&dir), "keep-a", "--max-count", "1"]));
    let v: Value =
        serde_json::from_str(text(&ok(run(&["compact", p(&dir), "--json", "--drop-originals"])).stdout).trim())
            .expect("json");
    assert!(v["removed_events"].as_u64().is_some_and(|n| n > 10), "{v}");
    let first_record = v["record_positions"][0].as_u64().expect("a record position");
    let out = text(&ok(run(&["check", p(&dir), "--anchor", &anchor])).stdout);
    assert!(out.contains(": ok"), "{out}");
    assert!(out.contains("was compacted"), "{out}");
    assert!(
        out.contains(&format!("superseded: superseded by compaction at {first_record}")),
        "the anchor inside the first segment: {out}"
    );
    let out = text(&ok(run(&["check", p(&dir), "--json", "--anchor", &anchor])).stdout);
    let c: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["anchors"][0]["superseded_by_compaction"], first_record, "{c}");
}

/// A soft deletion keeps the stream's newest event (it carries the version
/// the next append goes on from): its bytes stay, every older event's go.
#[test]
fn a_soft_deleted_stream_keeps_its_newest_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build(&dir);
    ok(run(&["delete", p(&dir), "secret-1"]));
    let v: Value =
        serde_json::from_str(text(&ok(run(&["compact", p(&dir), "--json", "--drop-originals"])).stdout).trim())
            .expect("json");
    assert_eq!(v["removed_events"], 9, "{v}");
    let marker = |i: u32| format!("{}-{i}\"", String::from_utf8_lossy(SECRET)).into_bytes();
    for i in 0..9 {
        assert_eq!(files_holding(&dir, &marker(i)), Vec::<String>::new(), "event {i}");
    }
    assert_eq!(files_holding(&dir, &marker(9)).len(), 1, "the newest event stays");
    let out = run(&["read", p(&dir), "--stream", "secret-1"]);
    assert_eq!(out.status.code(), Some(1), "still deleted: {}", text(&out.stderr));
    // A new life goes on at the next version.
    let out = text(
        &ok(run(&[
            "append",
            p(&dir),
            "--stream",
            "secret-1",
            "--type",
            "T",
            "--data",
            "{}",
        ]))
        .stdout,
    );
    assert!(out.contains("secret-1 version 10"), "{out}");
}

#[test]
fn compact_prints_what_it_did() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build(&dir);
    ok(run(&["metadata", p(&dir), "keep-a", "--max-count", "1"]));
    let out = text(&ok(run(&["compact", p(&dir)])).stdout);
    let last = out.lines().last().expect("a summary line");
    assert!(last.starts_with("removed "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("compacted 0") && l.contains("recorded at position")),
        "{out}"
    );
    // max_count keeps the newest event; the other stream is untouched.
    assert_eq!(read(&dir, &["--stream", "keep-a"]).lines().count(), 1);
    assert_eq!(read(&dir, &["--stream", "keep-b"]).lines().count(), 40);
}

#[test]
fn compact_needs_the_master_key_of_a_wrapped_key_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("crm");
    let key = tmp.path().join("master.key");
    ok(run(&["keygen", "--master", p(&key)]));
    let k = p(&key);
    for i in 0..12 {
        let data = format!("{{\"i\":{i}}}");
        for s in ["gone-1", "kept-1"] {
            ok(run(&[
                "append",
                p(&dir),
                "--stream",
                s,
                "--type",
                "T",
                "--subject",
                "ann",
                "--data",
                &data,
                "--master-key",
                k,
                "--segment-size",
                "512",
            ]));
        }
    }
    ok(run(&["delete", p(&dir), "gone-1", "--master-key", k]));
    let out = run(&["compact", p(&dir)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("annal.keys"), "{}", text(&out.stderr));
    let out = text(&ok(run(&["compact", p(&dir), "--master-key", k, "--json"])).stdout);
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert!(v["removed_events"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(
        read(&dir, &["--stream", "kept-1", "--master-key", k]).lines().count(),
        12
    );
    ok(run(&["check", p(&dir), "--master-key", k]));
}

#[test]
fn compact_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Not a log: could not run.
    let out = run(&["compact", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A log of format version 3: refused, nothing changed.
    let dir = tmp.path().join("v3");
    let log = annal::Log::open_with(&dir, annal::Options::default().format_version(3)).expect("open");
    log.append(
        "s",
        annal::ExpectedVersion::Any,
        &[annal::EventData::new("T", b"{}".as_slice())],
    )
    .expect("append");
    log.close().expect("close");
    let out = run(&["compact", p(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("format version 4"), "{}", text(&out.stderr));
}
