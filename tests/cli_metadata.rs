//! `annal delete`, `annal metadata` and `annal read` of a deleted stream
//! (issue 16, spec 3.7), driven through the built binary; and README's
//! library example of that section, compiled and run here.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod cli_support;
use cli_support::{ok, p, run, text};

/// `annal append DIR --stream S --type T --data {}` with extra arguments; asserts it succeeded.
fn append(dir: &Path, stream: &str, extra: &[&str]) -> Output {
    let mut args = vec!["append", p(dir), "--stream", stream, "--type", "T", "--data", "{}"];
    args.extend_from_slice(extra);
    run(&args)
}

/// The `--json` lines of `annal read DIR ARGS`.
fn read_json(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["read", p(dir), "--json"];
    all.extend_from_slice(args);
    let out = ok(run(&all));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn versions(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|l| l["version"].as_u64().expect("version")).collect()
}

#[test]
fn delete_then_read_exits_1_with_a_message_and_prints_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "cart-1", &[]));
    ok(append(&dir, "cart-1", &[]));
    let out = ok(run(&["delete", p(&dir), "cart-1", "--expected-version", "1"]));
    let said = text(&out.stdout);
    assert!(said.starts_with("deleted cart-1 at position 2"), "{said}");

    for json in [false, true] {
        let mut args = vec!["read", p(&dir), "--stream", "cart-1"];
        if json {
            args.push("--json");
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("stream \"cart-1\" is deleted"), "{err}");
        assert!(!err.contains("StreamDeleted"), "Display, not Debug: {err}");
    }
    // Hidden from the whole log too; a stream that never existed reads as no events.
    assert!(read_json(&dir, &[]).is_empty());
    assert!(read_json(&dir, &["--stream", "cart-9"]).is_empty());
    // The metadata says so.
    let out = ok(run(&["metadata", p(&dir), "cart-1"]));
    let said = text(&out.stdout);
    assert!(said.contains("deleted:         deleted ("), "{said}");
    assert!(said.contains("truncate before: 2\n"), "{said}");
}

#[test]
fn setting_metadata_keeps_a_deletion_unless_truncate_before_is_given() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "c", &[]));
    ok(append(&dir, "c", &[]));
    ok(run(&["delete", p(&dir), "c"]));
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["metadata", p(&dir), "c", "--json"];
        all.extend_from_slice(args);
        let out = ok(run(&all));
        serde_json::from_str(text(&out.stdout).trim()).expect("json")
    };
    for args in [&["--max-count", "5"][..], &["--clear"][..], &["--max-age", "1h"][..]] {
        let v = json(args);
        assert_eq!(v["deleted"], true, "{args:?}: {v}");
        assert_eq!(v["reads_as_deleted"], true, "{args:?}: {v}");
        assert_eq!(v["truncate_before"], 2, "{args:?}: {v}");
        let out = run(&["read", p(&dir), "--stream", "c"]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: still deleted");
    }
    // A new life: still flagged deleted, no longer read as deleted.
    ok(append(&dir, "c", &["--expected-version", "no-stream"]));
    let v = json(&[]);
    assert_eq!(
        (v["deleted"].clone(), v["reads_as_deleted"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(versions(&read_json(&dir, &["--stream", "c"])), [2]);
    // An explicit lower truncate-before shows the deleted events again.
    let v = json(&["--truncate-before", "0"]);
    assert_eq!(v["truncate_before"], 0);
    assert_eq!(versions(&read_json(&dir, &["--stream", "c"])), [0, 1, 2]);
}

#[test]
fn soft_delete_then_append_with_no_stream_starts_a_new_life_at_the_next_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "cart-1", &[]));
    ok(append(&dir, "cart-1", &[]));
    ok(run(&["delete", p(&dir), "cart-1"]));
    let out = ok(append(&dir, "cart-1", &["--expected-version", "no-stream"]));
    assert!(
        text(&out.stdout).contains("(cart-1 version 2)"),
        "{}",
        text(&out.stdout)
    );
    let stream = read_json(&dir, &["--stream", "cart-1"]);
    assert_eq!(versions(&stream), [2]);
    let all = read_json(&dir, &[]);
    assert_eq!(
        versions(&all),
        [2],
        "the whole log hides the old life and $meta: {all:?}"
    );
    assert_eq!(all[0]["stream"], "cart-1");
    // The stream lives again: no-stream is refused now.
    let out = append(&dir, "cart-1", &["--expected-version", "no-stream"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn hard_delete_refuses_every_later_append_and_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "cart-2", &[]));
    let out = ok(run(&["delete", p(&dir), "cart-2", "--hard", "--json"]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(v["hard"], true);
    assert_eq!(v["stream"], "cart-2");
    assert_eq!(v["position"], 1);

    for extra in [&[][..], &["--expected-version", "no-stream"][..]] {
        let out = append(&dir, "cart-2", extra);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("hard-deleted"), "{}", text(&out.stderr));
    }
    let out = run(&["read", p(&dir), "--stream", "cart-2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("stream \"cart-2\" is hard-deleted"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        vec!["delete", p(&dir), "cart-2"],
        vec!["delete", p(&dir), "cart-2", "--hard"],
        vec!["metadata", p(&dir), "cart-2", "--max-count", "1"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("hard-deleted"), "{}", text(&out.stderr));
    }
    let out = ok(run(&["metadata", p(&dir), "cart-2", "--json"]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(
        (v["deleted"].clone(), v["hard_deleted"].clone()),
        (true.into(), true.into())
    );
}

#[test]
fn metadata_max_count_2_then_read_shows_the_two_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    for _ in 0..5 {
        ok(append(&dir, "sensor-1", &[]));
    }
    let out = ok(run(&["metadata", p(&dir), "sensor-1", "--max-count", "2"]));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("set the metadata of sensor-1 at position 5\n"),
        "{said}"
    );
    assert!(said.contains("max count:       2\n"), "{said}");
    assert!(said.contains("truncate before: none\n"), "{said}");
    assert_eq!(versions(&read_json(&dir, &["--stream", "sensor-1"])), [3, 4]);
    assert_eq!(versions(&read_json(&dir, &["--category", "sensor"])), [3, 4]);
    assert_eq!(versions(&read_json(&dir, &[])), [3, 4]);
    // --clear shows every event again.
    ok(run(&["metadata", p(&dir), "sensor-1", "--clear"]));
    assert_eq!(versions(&read_json(&dir, &["--stream", "sensor-1"])), [0, 1, 2, 3, 4]);
    // --truncate-before alone (max count removed: the three are set together).
    ok(run(&["metadata", p(&dir), "sensor-1", "--truncate-before", "1"]));
    assert_eq!(versions(&read_json(&dir, &["--stream", "sensor-1"])), [1, 2, 3, 4]);
}

#[test]
fn metadata_json_output_parses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "sensor-1", &[]));
    // No metadata yet.
    let out = ok(run(&["metadata", p(&dir), "sensor-1", "--json"]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(v["stream"], "sensor-1");
    assert_eq!(v["deleted"], false);
    assert_eq!(v["hard_deleted"], false);
    assert!(v["truncate_before"].is_null() && v["max_count"].is_null() && v["max_age"].is_null());
    assert!(v.get("position").is_none(), "nothing was set: {v}");

    let out = ok(run(&[
        "metadata",
        p(&dir),
        "sensor-1",
        "--truncate-before",
        "1",
        "--max-count",
        "3",
        "--max-age",
        "90d",
        "--json",
    ]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(v["position"], 1);
    assert_eq!(v["truncate_before"], 1);
    assert_eq!(v["max_count"], 3);
    assert_eq!(v["max_age"], "90d");
    assert_eq!(v["max_age_ns"], 90u64 * 86_400 * 1_000_000_000);
    // Every unit the help names, shown back as given.
    for d in ["90d", "12h", "30m", "45s", "500ms"] {
        let out = ok(run(&["metadata", p(&dir), "sensor-1", "--max-age", d, "--json"]));
        let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
        assert_eq!(v["max_age"], d);
    }
    // Read back by a command that sets nothing.
    let out = ok(run(&["metadata", p(&dir), "sensor-1", "--json"]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(v["max_age"], "500ms");
    assert!(v["max_count"].is_null());
}

#[test]
fn bad_durations_and_arguments_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "s", &[]));
    for bad in ["5w", "90", "d", "0s", "1.5h", "-1s", "90 d", ""] {
        let out = run(&["metadata", p(&dir), "s", "--max-age", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    let out = run(&["metadata", p(&dir), "s", "--max-age", "5w"]);
    assert!(
        text(&out.stderr).contains("90d, 12h, 30m, 45s, 500ms"),
        "{}",
        text(&out.stderr)
    );
    let help = ok(run(&["metadata", "--help"]));
    let help = text(&help.stdout);
    assert!(
        ["90d", "12h", "30m", "45s", "500ms"].iter().all(|d| help.contains(d)),
        "{help}"
    );
    for args in [
        vec!["metadata", p(&dir), "s", "--max-count", "0"],
        vec!["metadata", p(&dir), "s", "--clear", "--max-count", "2"],
        vec!["metadata", p(&dir), "$meta-s"],
        vec!["delete", p(&dir), "$meta-s"],
        vec!["delete", p(&dir), "s", "--expected-version", "maybe"],
        vec!["delete", p(&dir), ""],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
    // Nothing was set by any of them.
    assert_eq!(versions(&read_json(&dir, &["--stream", "s"])), [0]);
    let out = ok(run(&["metadata", p(&dir), "s", "--json"]));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert!(v["max_count"].is_null() && v["max_age"].is_null());
}

#[test]
fn a_wrong_expected_version_is_refused_with_exit_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    ok(append(&dir, "s", &[]));
    for ev in ["5", "no-stream"] {
        let out = run(&["delete", p(&dir), "s", "--expected-version", ev]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("wrong expected version"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(versions(&read_json(&dir, &["--stream", "s"])), [0]);
    ok(run(&["delete", p(&dir), "s", "--expected-version", "exists", "--sync"]));
}

#[test]
fn a_version_3_log_refuses_delete_and_metadata() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v3");
    let log = annal::Log::open_with(&dir, annal::Options::default().format_version(3)).expect("open v3");
    log.append("s", annal::ExpectedVersion::Any, &[annal::EventData::new("T", b"{}")])
        .expect("append");
    log.close().expect("close");
    for args in [
        vec!["delete", p(&dir), "s"],
        vec!["delete", p(&dir), "s", "--hard"],
        vec!["metadata", p(&dir), "s", "--max-count", "1"],
        vec!["metadata", p(&dir), "s"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("format version 3") && err.contains("need format version 4") && err.contains("nothing"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(versions(&read_json(&dir, &["--stream", "s"])), [0]);
}

#[test]
fn a_log_held_by_a_writer_is_refused_and_no_log_is_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = annal::Log::open_with(tmp.path(), annal::Options::default()).expect("open");
    log.append("s", annal::ExpectedVersion::Any, &[annal::EventData::new("T", b"{}")])
        .expect("append");
    for args in [
        vec!["delete", p(tmp.path()), "s"],
        vec!["metadata", p(tmp.path()), "s"],
        vec!["metadata", p(tmp.path()), "s", "--max-count", "1"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("locked"), "{}", text(&out.stderr));
    }
    log.close().expect("close");

    // A directory that is not a log is not made one.
    let missing = tmp.path().join("missing");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for d in [&missing, &empty] {
        for args in [vec!["delete", p(d), "s"], vec!["metadata", p(d), "s"]] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("not an annal log"), "{}", text(&out.stderr));
        }
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(&empty).expect("read_dir").count(), 0);
}

// README: begin
use std::time::Duration;

use annal::{Direction, Error, EventData, ExpectedVersion, Log, StreamMetadata};

fn delete_and_keep_recent(log: &Log) -> annal::Result<()> {
    let added = || [EventData::new("ItemAdded", br#"{"sku":"A-7"}"#)];
    log.append("cart-7", ExpectedVersion::NoStream, &added())?;
    log.delete_stream("cart-7", ExpectedVersion::Exact(0))?;
    // Reads say so at once, distinctly from a stream that never existed.
    let view = log.view()?;
    let first = view.read_stream("cart-7", 0, Direction::Forward, 10).next();
    let deleted = matches!(first, Some(Err(Error::StreamDeleted { tombstoned: false, .. })));
    assert!(deleted);
    // A soft delete allows a new life, at the next version.
    let r = log.append("cart-7", ExpectedVersion::NoStream, &added())?;
    assert_eq!(r.stream_version, 1);

    // Keep only the 100 newest readings, and none older than 90 days.
    let readings: Vec<EventData<'_>> = (0..150).map(|_| EventData::new("Read", b"{}")).collect();
    log.append("sensor-7", ExpectedVersion::NoStream, &readings)?;
    let ninety_days = Duration::from_secs(90 * 86_400);
    log.set_stream_metadata("sensor-7", StreamMetadata::new().max_count(100).max_age(ninety_days))?;
    let view = log.view()?;
    let kept = view.read_stream("sensor-7", 0, Direction::Forward, u64::MAX).count();
    assert_eq!(kept, 100);
    assert_eq!(view.stream_metadata("sensor-7")?.and_then(|m| m.max_count), Some(100));

    // A hard delete is forever.
    log.hard_delete_stream("cart-7", ExpectedVersion::Any)?;
    let again = log.append("cart-7", ExpectedVersion::Any, &added());
    assert!(matches!(again, Err(Error::StreamDeleted { tombstoned: true, .. })));
    Ok(())
}
// README: end

#[test]
fn the_readme_library_example_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(tmp.path(), annal::Options::default()).expect("open");
    delete_and_keep_recent(&log).expect("the README example");
    log.close().expect("close");
}

#[test]
fn the_readme_library_example_is_this_one() {
    cli_support::assert_readme_example(
        include_str!("cli_metadata.rs"),
        "Deleting streams and keeping only recent events",
    );
}
