//! `annal retain` (issue 16, spec 3.9), driven through the built binary:
//! what it removes and prints, `--json`, its refusals and exit codes, and
//! what `annal check` then says (the retention, superseded anchors).

use std::path::Path;

use serde_json::Value;

mod cli_support;
use cli_support::{ok, p, run, text};

/// A log of `n` events in 1 KiB segments, written through the library.
fn log_of(dir: &Path, n: u64, version: Option<u16>) {
    let mut o = annal::Options::default().segment_size(1024);
    if let Some(v) = version {
        o = o.format_version(v);
    }
    let log = annal::Log::open_with(dir, o).expect("open");
    for i in 0..n {
        log.append(
            &format!("host-{}", i % 3),
            annal::ExpectedVersion::Any,
            &[annal::EventData::new("Sample", format!("{{\"i\":{i}}}").into_bytes())],
        )
        .expect("append");
    }
    log.close().expect("close");
}

#[test]
fn retain_removes_the_front_and_check_accounts_for_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("metrics");
    log_of(&dir, 20, None);
    let anchor = text(&ok(run(&["anchor", p(&dir)])).stdout).trim().to_owned();
    {
        let log = annal::Log::open_with(&dir, annal::Options::default().segment_size(1024)).expect("open");
        for i in 20..80u64 {
            log.append(
                "host-1",
                annal::ExpectedVersion::Any,
                &[annal::EventData::new("Sample", format!("{i}").into_bytes())],
            )
            .expect("append");
        }
        log.close().expect("close");
    }
    let out = text(&ok(run(&["retain", p(&dir), "--max-bytes", "4K", "--json"])).stdout);
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["rule"], "size", "{v}");
    let first = v["first_position"].as_u64().expect("first_position");
    assert!(first > 20, "{v}");
    assert!(v["removed_segments"].as_u64().expect("n") > 0);
    assert!(v["record_position"].as_u64().is_some());
    // Nothing more to remove: exit 0 and says so.
    let again = text(&ok(run(&["retain", p(&dir), "--max-bytes", "4K"])).stdout);
    assert!(again.starts_with("nothing to remove"), "{again}");
    // check: ok, the retention named, the old anchor superseded.
    let out = text(&ok(run(&["check", p(&dir), "--anchor", &anchor])).stdout);
    assert!(
        out.contains(&format!("retention: the log starts at position {first}")),
        "{out}"
    );
    assert!(out.contains("superseded: superseded by retention at"), "{out}");
    let out = text(&ok(run(&["check", p(&dir), "--json", "--anchor", &anchor])).stdout);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["retention"]["first_position"], first);
    assert_eq!(v["anchors"][0]["superseded_by_retention"], first);
    // stats and read start at the first position.
    let out = text(&ok(run(&["stats", p(&dir)])).stdout);
    assert!(out.contains(&format!("positions:     {first} ..")), "{out}");
    let out = text(&ok(run(&["read", p(&dir), "--limit", "1"])).stdout);
    assert!(out.trim_start().starts_with(&first.to_string()), "{out}");
}

#[test]
fn retain_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // No rule: usage.
    let dir = tmp.path().join("a");
    log_of(&dir, 5, None);
    assert_eq!(run(&["retain", p(&dir)]).status.code(), Some(2));
    // Not a log: could not run.
    assert_eq!(
        run(&["retain", p(&tmp.path().join("none")), "--max-age", "1d"])
            .status
            .code(),
        Some(2)
    );
    // A version 3 log: refused, nothing removed.
    let old = tmp.path().join("v3");
    log_of(&old, 40, Some(3));
    let before = std::fs::read_dir(&old).expect("dir").count();
    let out = run(&["retain", p(&old), "--max-bytes", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("format version 4"), "{}", text(&out.stderr));
    assert!(old.join("00000000000000000000.seg").exists());
    assert_eq!(std::fs::read_dir(&old).expect("dir").count(), before);
}
