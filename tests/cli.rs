//! The `annal` binary, driven as a user would.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod cli_support;
use cli_support::{annal, run, run_stdin, text};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn import_then_read_json_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let input = [
        r#"{"stream":"order-1","type":"Placed","data":{"a":1,"b":[1,2,"x"]},"id":"0190a6f2-1c3e-7000-8000-000000000001"}"#,
        r#"{"stream":"order-1","type":"Paid","data":{},"metadata":{"user":"ann"},"id":"0190a6f2-1c3e-7000-8000-000000000002"}"#,
        r#"{"stream":"blob-7","type":"Raw","data_base64":"AAH/YmluYXJ5","metadata_base64":"/w==","id":"0190a6f2-1c3e-7000-8000-000000000003"}"#,
        r#"{"stream":"order-2","type":"Empty","data_base64":"","id":"0190a6f2-1c3e-7000-8000-000000000004"}"#,
        r#"{"stream":"order-1","type":"Shipped","data":"a string","schema_version":3,"id":"0190a6f2-1c3e-7000-8000-000000000005"}"#,
    ];
    let out = run_stdin(
        &["import", p(&dir), "-", "--batch", "2", "--sync"],
        input.join("\n").as_bytes(),
    );
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imported 5 events"), "{}", text(&out.stdout));
    assert!(
        out.stderr.is_empty(),
        "no progress bar when piped: {}",
        text(&out.stderr)
    );

    let out = run(&["read", p(&dir), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), input.len());
    let mut versions = std::collections::HashMap::new();
    for (i, (got, want)) in lines.iter().zip(input).enumerate() {
        let mut got = got.clone();
        let want: Value = serde_json::from_str(want).expect("input json");
        let g = got.as_object_mut().expect("object");
        assert_eq!(g.remove("position"), Some(Value::from(i as u64)));
        let ts = g.remove("timestamp").expect("timestamp");
        let ts = ts.as_str().expect("timestamp string");
        assert!(ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        let stream = want["stream"].as_str().expect("stream").to_owned();
        let v = versions.entry(stream).or_insert(0u64);
        assert_eq!(g.remove("version"), Some(Value::from(*v)));
        *v += 1;
        assert_eq!(got, want);
    }

    // The output of `read --json` imports into another log unchanged.
    let dir2 = tmp.path().join("log2");
    let out = run_stdin(&["import", p(&dir2)], &out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = run(&["read", p(&dir), "--json"]);
    let b = run(&["read", p(&dir2), "--json"]);
    let strip = |o: &Output| -> Vec<Value> {
        text(&o.stdout)
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).expect("json");
                v.as_object_mut().expect("object").remove("timestamp");
                v
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));

    // Filters.
    let out = run(&["read", p(&dir), "--stream", "order-1", "--from", "1", "--json"]);
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let out = run(&["read", p(&dir), "--category", "order", "--backward", "--limit", "1"]);
    assert!(text(&out.stdout).contains("Shipped"), "{}", text(&out.stdout));
    let out = run(&["read", p(&dir), "--event-type", "Raw"]);
    assert!(text(&out.stdout).contains("blob-7@0"), "{}", text(&out.stdout));
}

#[test]
fn bad_import_line_stops_with_its_number_and_keeps_earlier_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let input = "{\"stream\":\"s-1\",\"type\":\"A\",\"data\":1}\n{\"stream\":\"s-1\",\"type\":\"A\",\"data\":2}\n{\"stream\":\"s-1\"}\n{\"stream\":\"s-1\",\"type\":\"A\",\"data\":3}\n";
    let out = run_stdin(&["import", p(&dir)], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 3"), "{}", text(&out.stderr));
    let out = run(&["read", p(&dir)]);
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn append_with_wrong_expected_version_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let out = run(&[
        "append",
        p(&dir),
        "--stream",
        "acct-1",
        "--type",
        "Opened",
        "--data",
        "{}",
        "--sync",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("position 0"), "{}", text(&out.stdout));
    let out = run_stdin(
        &[
            "append",
            p(&dir),
            "--stream",
            "acct-1",
            "--type",
            "Credited",
            "--expected-version",
            "0",
            "--json",
        ],
        b"{\"amount\":5}",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["position"], 1);
    assert_eq!(v["stream_version"], 1);

    let out = run(&[
        "append",
        p(&dir),
        "--stream",
        "acct-1",
        "--type",
        "X",
        "--expected-version",
        "no-stream",
        "--data",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("wrong expected version") && err.contains("acct-1"),
        "{err}"
    );
    assert!(!err.contains("WrongExpectedVersion"), "Display, not Debug: {err}");

    let out = run(&[
        "append",
        p(&dir),
        "--stream",
        "a",
        "--type",
        "X",
        "--expected-version",
        "maybe",
        "--data",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["append", p(&dir), "--stream", "a", "--type", "X", "--data", "not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not valid JSON"), "{}", text(&out.stderr));
}

#[test]
fn append_to_a_log_held_by_a_writer_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = annal::Log::open_with(tmp.path(), annal::Options::default()).expect("open");
    let out = run(&["append", p(tmp.path()), "--stream", "s", "--type", "T", "--data", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("locked"), "{}", text(&out.stderr));
    // The log is opened at the first valid line (an empty input opens nothing).
    let out = run_stdin(
        &["import", p(tmp.path())],
        b"{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("locked"), "{}", text(&out.stderr));
    log.close().expect("close");
}

#[test]
fn commands_on_a_directory_that_is_not_a_log_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("notes.txt"), "hello").expect("write");
    let d = p(tmp.path());
    for args in [
        vec!["append", d, "--stream", "s", "--type", "T", "--data", "1"],
        vec!["read", d],
        vec!["stats", d],
        vec!["tail", d],
        vec!["read", "/nonexistent/annal/log"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("not an annal log"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["dump", &format!("{d}/notes.txt")]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tail_sees_events_appended_by_another_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let out = run(&["append", p(&dir), "--stream", "other", "--type", "Init", "--data", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut child = annal()
        .args(["tail", p(&dir), "--stream", "feed-1", "--from", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("line")).is_err() {
                break;
            }
        }
    });
    for i in 0..3 {
        let data = format!("{{\"n\":{i}}}");
        let out = run(&[
            "append",
            p(&dir),
            "--stream",
            "feed-1",
            "--type",
            "Tick",
            "--data",
            &data,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        run(&["append", p(&dir), "--stream", "other", "--type", "Noise", "--data", "1"]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            got.push(serde_json::from_str::<Value>(&line).expect("json line"));
        }
    }
    child.kill().expect("kill tail");
    let _ = child.wait();
    assert_eq!(got.len(), 3, "tail printed {got:?}");
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["stream"], "feed-1");
        assert_eq!(v["version"], i as u64);
        assert_eq!(v["data"]["n"], i as u64);
    }
}

#[test]
fn stats_and_dump_describe_a_real_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    {
        // Small segments, so that there are sealed segments with indexes and a stream table.
        let log = annal::Log::open_with(&dir, annal::Options::default().segment_size(4096)).expect("open");
        for i in 0..200u32 {
            let stream = format!("order-{}", i % 7);
            let payload = format!("{{\"i\":{i}}}");
            log.append(
                &stream,
                annal::ExpectedVersion::Any,
                &[annal::EventData::new("Placed", payload.into_bytes())],
            )
            .expect("append");
        }
        log.close().expect("close");
    }
    let out = run(&["stats", p(&dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for field in [
        "segments:",
        "segment bytes:",
        "events:        200",
        "streams:       7",
        "positions:     0 .. 199",
        "largest streams:",
    ] {
        assert!(s.contains(field), "missing {field:?} in\n{s}");
    }
    let out = run(&["stats", p(&dir), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["events"], 200);
    assert_eq!(v["streams"], 7);
    assert_eq!(v["largest_streams"][0]["events"], 29);

    let seg = dir.join("00000000000000000000.seg");
    let out = run(&["dump", p(&seg)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for field in [
        "magic:          ANNALSEG",
        "base_position:  0",
        "kind=1(batch)",
        "kind=2(seal)",
        "stream=\"order-0\"",
        "crc=ok",
    ] {
        assert!(s.contains(field), "missing {field:?} in\n{s}");
    }
    assert!(!s.contains("BAD"), "{s}");

    let idx = dir.join("00000000000000000000.idx");
    let out = run(&["dump", p(&idx)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ANNALIDX") && text(&out.stdout).contains("stream_count:"));
    let out = run(&["dump", p(&dir.join("annal.streams"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ANNALSTB") && text(&out.stdout).contains("stream_count:  7"));

    // A flipped byte in a record: reported as BAD, exit 1, no panic.
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[128 + 72 + 80] ^= 0xff;
    let broken = tmp.path().join("broken.seg");
    std::fs::write(&broken, &bytes).expect("write");
    let out = run(&["dump", p(&broken)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("crc=BAD"));
    // Garbage after the header: a clear message, exit 1, no panic.
    bytes.truncate(128);
    // A version-3 frame header (spec 3.6): CRC, magic `F3`, kind 1, flags 0,
    // then a `frame_len` of 4 GiB.
    bytes.extend_from_slice(b"\0\0\0\0F3\x01\x00\xff\xff\xff\xff");
    bytes.resize(128 + 80, 7);
    std::fs::write(&broken, &bytes).expect("write");
    let out = run(&["dump", p(&broken)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("frame_len"), "{}", text(&out.stderr));
}

#[test]
fn every_subcommand_help_has_an_example_and_exit_codes() {
    for sub in ["append", "import", "read", "tail", "stats", "dump", "check"] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        let s = text(&out.stdout);
        assert!(s.contains("Example"), "{sub} --help has no example:\n{s}");
        assert!(s.contains("Exit codes"), "{sub} --help has no exit codes:\n{s}");
    }
    let out = run(&["--help"]);
    assert!(text(&out.stdout).contains("Exit codes"));
    let out = run(&["read"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dump_of_a_snapshot_whose_lengths_overflow_is_a_message_not_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let snap = tmp.path().join("x.snap");
    let mut bytes = b"ANNALSNP".to_vec();
    bytes.resize(68, 0xff);
    std::fs::write(&snap, &bytes).expect("write");
    let out = run(&["dump", p(&snap)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // 64 + 65535 + u64::MAX, computed without wrapping.
    assert!(
        err.contains("file length of 18446744073709617214, the file has 68 bytes"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("crc:            0xffffffff BAD"));
}
