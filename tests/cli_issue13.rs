//! Regression tests for the CLI defects of issue 13: --segment-size (7),
//! escaped human output (12), key files readable by others (13), byte-exact
//! JSON copies (14), import that checks each line as it reads it (16),
//! misleading messages (18, 19) and reads bounded by the limits (23).
//!
//! Inputs that never end (`/dev/zero`) run under `ulimit -v` so that an
//! unbounded read fails the test (allocation failure) instead of exhausting
//! the machine: the assertion is on the exit code and message, never on time.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod cli_support;
use cli_support::{run, run_stdin, text};

/// Run `annal ARGS` through `sh` with at most 1 GiB of address space, so an
/// input read whole (a device) makes the process fail, not the machine.
fn run_bounded(script_args: &str) -> Output {
    let cmd = format!(
        "ulimit -v 1048576; exec '{}' {script_args}",
        env!("CARGO_BIN_EXE_annal")
    );
    Command::new("sh").args(["-c", &cmd]).output().expect("run sh")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// Every event of the log at `dir`: (stream, type, payload, metadata).
fn events(dir: &Path) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let r = annal::Reader::open(dir).expect("reader");
    let view = r.view().expect("view");
    view.read_all(0)
        .map(|rec| {
            let rec = rec.expect("record");
            (
                rec.stream().to_owned(),
                rec.event_type().to_owned(),
                rec.payload().to_vec(),
                rec.metadata().to_vec(),
            )
        })
        .collect()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

// ---- 7: --segment-size ----

#[test]
fn append_and_import_take_a_segment_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a");
    for n in 0..3 {
        let data = format!("{{\"n\":{n}}}");
        let o = run(&[
            "append",
            p(&dir),
            "--segment-size",
            "256",
            "--stream",
            "s",
            "--type",
            "T",
            "--data",
            &data,
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(segments(&dir), 3, "a batch larger than 256 bytes fills a segment");
    assert!(dir.join("00000000000000000000.idx").exists());
    assert!(dir.join(annal::STREAM_TABLE_FILE).exists());

    let lines = "{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n".repeat(4);
    let copy = tmp.path().join("b");
    let o = run_stdin(
        &["import", p(&copy), "--segment-size", "256", "--batch", "1"],
        lines.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(segments(&copy), 4);
    let o = run(&[
        "append",
        p(&dir),
        "--segment-size",
        "0",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "append",
        p(&dir),
        "--segment-size",
        "1K",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

// ---- 12: escaped human output ----

#[test]
fn read_stats_and_dump_escape_control_characters_in_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let hostile = [
        "evil\n       9  2026-01-01T00:00:00.000000000Z  forged@0  Forged  {}",
        "nul\0name",
        "esc\x1b[31mred",
        "del\x7f-c1\u{85}-bidi\u{202e}txt",
    ];
    {
        let log = annal::Log::open_with(&dir, annal::Options::default()).expect("open");
        for s in hostile {
            log.append(
                s,
                annal::ExpectedVersion::Any,
                &[annal::EventData::new(
                    "T\x1b]0;title\x07",
                    b"line1\nline2\x1b[2J".as_slice(),
                )],
            )
            .expect("append");
        }
        log.close().expect("close");
    }
    let unsafe_char = |c: char| c.is_control() && c != '\n' || c == '\u{202e}';
    let o = run(&["read", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), hostile.len(), "one line per event:\n{out}");
    assert!(!out.chars().any(unsafe_char), "{out:?}");
    assert!(
        out.contains("evil\\n ") && out.contains("nul\\0name") && out.contains("esc\\u{1b}[31mred"),
        "{out}"
    );
    assert!(out.contains("line1\\nline2\\u{1b}[2J"), "{out}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("9  2026")),
        "a forged line:\n{out}"
    );

    let o = run(&["stats", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.chars().any(unsafe_char), "{out:?}");
    assert!(!out.lines().any(|l| l.trim_start().starts_with("9  2026")), "{out}");

    let o = run(&["dump", p(&dir.join("00000000000000000000.seg"))]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stdout).chars().any(unsafe_char));

    // Error messages quoting a name are escaped too.
    let o = run(&[
        "append",
        p(&dir),
        "--stream",
        hostile[2],
        "--type",
        "T",
        "--expected-version",
        "7",
        "--data",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("wrong expected version") && !err.chars().any(unsafe_char),
        "{err:?}"
    );

    // JSON output stays JSON (escaped by JSON's rules) and round-trips the names.
    let o = run(&["read", p(&dir), "--json"]);
    let names: Vec<String> = text(&o.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["stream"]
                .as_str()
                .expect("s")
                .to_owned()
        })
        .collect();
    assert_eq!(names, hostile);
}

// ---- 13: key files ----

#[test]
fn a_key_file_readable_by_others_is_refused_naming_file_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("k.key");
    let o = run(&["keygen", p(&key)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dir = tmp.path().join("log");
    let append = |key: &str| {
        run(&[
            "append",
            p(&dir),
            "--key",
            key,
            "--stream",
            "s",
            "--type",
            "T",
            "--data",
            "1",
        ])
    };
    assert!(append(p(&key)).status.success());
    for mode in [0o644, 0o640, 0o604, 0o666] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let o = append(p(&key));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "mode {mode:o}: {err}");
        assert!(err.contains(p(&key)) && err.contains(&format!("{mode:04o}")), "{err}");
        let o = run(&["check", p(&dir), "--key", p(&key)]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains(&format!("{mode:04o}")), "{}", text(&o.stderr));
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    assert!(append(p(&key)).status.success());
    // A signing key too.
    let sk = tmp.path().join("s.key");
    assert!(run(&["keygen", "--signing", p(&sk)]).status.success());
    std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let signed = tmp.path().join("signed");
    let o = run(&[
        "append",
        p(&signed),
        "--signing-key",
        p(&sk),
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("0644"), "{}", text(&o.stderr));
}

#[test]
fn a_key_from_a_device_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    for opt in ["--key", "--signing-key"] {
        let o = run_bounded(&format!(
            "append '{}' {opt} /dev/zero --stream s --type T --data 1",
            p(&dir)
        ));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("found a device"), "{}", text(&o.stderr));
    }
    let o = run_bounded(&format!("check '{}' --public-key /dev/zero", p(&dir)));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    // A big regular file is read no further than a key's length.
    let big = tmp.path().join("big.key");
    std::fs::write(&big, vec![b'a'; 1 << 20]).expect("write");
    let o = run(&["check", p(&dir), "--public-key", p(&big)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("more than 128 bytes"), "{}", text(&o.stderr));
}

// ---- 14: byte-exact JSON ----

const EXACT: &str = r#"{"b":18446744073709551616,"a":12345678901234567890123,"c":1E5,"a":-0.0,"d":1e400,"e":"\u00e9"}"#;

#[test]
fn read_json_and_import_keep_json_byte_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let o = run(&[
        "append",
        p(&dir),
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        EXACT,
        "--metadata",
        "[1.0,{\"z\":0,\"a\":1}]",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Stored as given, read back as written.
    assert_eq!(events(&dir)[0].2, EXACT.as_bytes());
    let o = run(&["read", p(&dir), "--json"]);
    let line = text(&o.stdout);
    assert!(line.contains(&format!(",\"data\":{EXACT}")), "{line}");
    assert!(line.contains(",\"metadata\":[1.0,{\"z\":0,\"a\":1}]}"), "{line}");

    // A copy is a copy: read --json | import, then compare the bytes.
    let copy = tmp.path().join("copy");
    let o = run_stdin(&["import", p(&copy)], line.as_bytes());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(events(&copy), events(&dir));

    // JSON written inside an import line is stored as written (not re-serialised).
    let raw = format!("{{\"stream\":\"t\",\"type\":\"T\",\"data\": {EXACT} ,\"metadata\":{{\"k\":1,\"k\":2}}}}\n");
    let o = run_stdin(&["import", p(&copy)], raw.as_bytes());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let last = events(&copy).pop().expect("event");
    assert_eq!(
        (last.2.as_slice(), last.3.as_slice()),
        (EXACT.as_bytes(), b"{\"k\":1,\"k\":2}".as_slice())
    );

    // Bytes that are JSON but would not come back exactly go as base64.
    for (i, data) in [" {}", "{\n}", "{} "].into_iter().enumerate() {
        let dir2 = tmp.path().join(format!("ws{i}"));
        let o = run(&["append", p(&dir2), "--stream", "s", "--type", "T", "--data", data]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = run(&["read", p(&dir2), "--json"]);
        assert!(text(&o.stdout).contains("\"data_base64\""), "{}", text(&o.stdout));
        let back = tmp.path().join(format!("back{i}"));
        assert!(run_stdin(&["import", p(&back)], &o.stdout).status.success());
        assert_eq!(events(&back)[0].2, data.as_bytes());
    }
}

#[test]
fn invalid_json_is_still_refused_with_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    for bad in ["{x}", "[1,]", "", &format!("{}{}", "[".repeat(200), "]".repeat(200))] {
        let o = run(&["append", p(&dir), "--stream", "s", "--type", "T", "--data", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = text(&o.stderr);
        assert!(err.contains("--data is not valid JSON"), "{err}");
        assert!(!err.contains("quote it for the shell"), "{err}");
        assert!(!err.contains("at line"), "one line, no line number: {err}");
    }
    assert!(!dir.exists(), "nothing created for a refused append");
}

#[test]
fn a_stream_name_with_nul_is_refused_at_import_and_append() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let input = "{\"stream\":\"ok\",\"type\":\"T\",\"data\":1}\n{\"stream\":\"a\\u0000b\",\"type\":\"T\",\"data\":1}\n";
    let o = run_stdin(&["import", p(&dir)], input.as_bytes());
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("NUL") && err.contains("the 1 events before it"),
        "{err}"
    );
    assert_eq!(events(&dir).len(), 1);
}

// ---- 16: import checks each line as it reads it ----

#[test]
fn a_bad_line_keeps_every_line_before_it_in_the_same_batch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let long = "x".repeat(70_000);
    let cases = [
        // Name too long for the format, in the same stream as the lines before.
        format!("{{\"stream\":\"s\",\"type\":\"{long}\",\"data\":1}}"),
        format!("{{\"stream\":\"{long}\",\"type\":\"T\",\"data\":1}}"),
        "{\"stream\":\"s\",\"type\":\"\",\"data\":1}".to_owned(),
        "{\"stream\":\"s\",\"type\":\"T\"}".to_owned(),
    ];
    for (i, bad) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("log{i}"));
        let ok = "{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n";
        let input = format!("{ok}{ok}{bad}\n{ok}");
        let o = run_stdin(&["import", p(&dir)], input.as_bytes());
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("line 3") && err.contains("the 2 events before it were imported"),
            "{err}"
        );
        assert_eq!(events(&dir).len(), 2, "{err}");
    }
}

#[test]
fn an_import_json_error_names_one_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let o = run_stdin(
        &["import", p(&dir)],
        b"{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n\n{\"stream\": x}\n",
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("line 3: ") && err.contains("column"), "{err}");
    assert!(!err.contains("line 1") && !err.contains("at line"), "{err}");
}

#[test]
fn import_creates_the_log_only_at_a_first_valid_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let o = run_stdin(&["import", p(&dir)], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("imported 0 events"));
    let o = run_stdin(&["import", p(&dir)], b"not json\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.exists(), "no log directory for an input without a valid line");
}

// ---- 23: reads bounded by the limits ----

#[test]
fn endless_inputs_are_refused_within_the_limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let d = p(&dir);
    let o = run_bounded(&format!("import '{d}' /dev/zero"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("line 1: longer than"), "{}", text(&o.stderr));
    let o = run_bounded(&format!("import '{d}' < /dev/zero"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let o = run_bounded(&format!("append '{d}' --stream s --type T --data-file /dev/zero"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("longer than 67108864 bytes"),
        "{}",
        text(&o.stderr)
    );
    let o = run_bounded(&format!("append '{d}' --stream s --type T < /dev/zero"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("from stdin is longer than"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.exists());
}

#[test]
fn an_oversized_event_line_is_refused_with_its_number() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let ok = "{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n";
    // A JSON string payload one byte over 64 MiB: the line fits, the event does not.
    let mut big = String::from("{\"stream\":\"s\",\"type\":\"T\",\"data\":\"");
    big.push_str(&"y".repeat((64 << 20) - 1));
    big.push_str("\"}\n");
    let input = format!("{ok}{big}{ok}");
    let o = run_stdin(&["import", p(&dir)], input.as_bytes());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2") && err.contains("more than the 67108864 bytes"),
        "{err}"
    );
    assert!(err.contains("the 1 events before it were imported"), "{err}");
    assert_eq!(events(&dir).len(), 1);
}

// ---- 18, 19: messages and help ----

#[test]
fn stdin_data_loses_one_trailing_newline_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    for (input, stored) in [(&b"{}\n"[..], &b"{}"[..]), (b"a\n\n", b"a\n"), (b"x", b"x")] {
        let o = run_stdin(&["append", p(&dir), "--stream", "s", "--type", "T"], input);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(events(&dir).pop().expect("event").2, stored);
    }
}

#[test]
fn negative_from_gets_a_message_that_helps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for cmd in ["read", "tail"] {
        let o = run(&[cmd, p(tmp.path()), "--from", "-1"]);
        assert_eq!(o.status.code(), Some(2));
        let err = text(&o.stderr);
        assert!(err.contains("never negative") && err.contains("--backward"), "{err}");
        assert!(!err.contains("-- -1"), "{err}");
    }
}

#[test]
fn dump_explains_missing_derived_files_and_dumps_the_head() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    assert!(
        run(&["append", p(&dir), "--stream", "s", "--type", "T", "--data", "1"])
            .status
            .success()
    );
    let o = run(&["dump", p(&dir.join("00000000000000000000.idx"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("written once a segment is sealed"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["dump", p(&dir.join(annal::HEAD_FILE))]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("next_position:  1") && out.contains("ok"), "{out}");
    // One flipped bit in a written slot is reported.
    let mut head = std::fs::read(dir.join(annal::HEAD_FILE)).expect("head");
    let slot = if head[..4] == *b"HEAD" { 0 } else { 64 };
    head[slot + 50] ^= 1;
    std::fs::write(dir.join(annal::HEAD_FILE), head).expect("write");
    let o = run(&["dump", p(&dir.join(annal::HEAD_FILE))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("BAD"));
}

#[test]
fn a_wrong_anchor_may_be_mistyped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    for _ in 0..2 {
        assert!(
            run(&["append", p(&dir), "--stream", "s", "--type", "T", "--data", "1"])
                .status
                .success()
        );
    }
    let anchor = text(&run(&["anchor", p(&dir)]).stdout).trim().to_owned();
    let (pos, hash) = anchor.split_once(':').expect("anchor");
    let mut typo = hash.to_owned();
    let last = if typo.ends_with('0') { "1" } else { "0" };
    typo.replace_range(typo.len() - 1.., last);
    let o = run(&["check", p(&dir), "--anchor", &format!("{pos}:{typo}")]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(out.contains("DIFFERS") && out.contains("mistyped"), "{out}");
}

#[test]
fn a_failed_write_says_how_many_events_were_imported() {
    // The file size limit makes a segment write fail (EFBIG; SIGXFSZ ignored)
    // after some batches were written: a real write failure, mid-import.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let input = tmp.path().join("in.jsonl");
    let line = "{\"stream\":\"s\",\"type\":\"T\",\"data\":{\"n\":1234567890}}\n";
    std::fs::write(&input, line.repeat(5000)).expect("write");
    let cmd = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' import '{}' '{}' --batch 10",
        env!("CARGO_BIN_EXE_annal"),
        p(&dir),
        p(&input)
    );
    let o = Command::new("sh").args(["-c", &cmd]).output().expect("sh");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // "lines A-B: write ...: File too large ...; the N events before line A were imported"
    let (lines, rest) = err.split_once(": write ").expect(&err);
    let first: u64 = lines
        .rsplit(' ')
        .next()
        .and_then(|r| r.split('-').next())
        .and_then(|a| a.parse().ok())
        .expect(&err);
    let tail = format!("the {} events before line {first} were imported", first - 1);
    assert!(rest.contains(&tail), "{err}");
    assert_eq!(events(&dir).len() as u64, first - 1, "{err}");
}

#[test]
fn import_from_a_terminal_says_so_and_creates_nothing_until_a_line() {
    // `script` gives the command a terminal; its input ends at once.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to make a terminal");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let cmd = format!("'{}' import '{}'", env!("CARGO_BIN_EXE_annal"), p(&dir));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let out = text(&o.stdout);
    assert!(out.contains("reading JSON lines from the terminal"), "{out}");
    assert!(!dir.exists(), "{out}");
}

/// Defect 1: every command that reads says when the log was not cleanly
/// closed and not yet recovered (here: both head slots damaged, so no slot
/// vouches for the active segment), and stops saying it once `check
/// --repair` (a writer open) has recovered the log.
#[test]
fn every_reading_command_says_when_the_log_is_not_yet_recovered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let d = p(&dir);
    for i in 0..3 {
        let o = run(&[
            "append",
            d,
            "--stream",
            "s-1",
            "--type",
            "T",
            "--data",
            &format!("{{\"i\":{i}}}"),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let clean = run(&["read", d]);
    assert!(clean.status.success());
    assert!(
        !text(&clean.stderr).contains("not been recovered"),
        "{}",
        text(&clean.stderr)
    );

    // Damage the magic of both head slots: a crash image cannot do this, but
    // it leaves no valid slot, which is what the reader must signal.
    let head = dir.join(annal::HEAD_FILE);
    let mut bytes = std::fs::read(&head).expect("head");
    bytes[0] ^= 0xff;
    bytes[64] ^= 0xff;
    std::fs::write(&head, &bytes).expect("write head");

    for args in [
        vec!["read", d],
        vec!["stats", d],
        vec!["anchor", d],
        vec!["tail", d, "--limit", "0"],
    ] {
        let o = run(&args);
        let err = text(&o.stderr);
        if args[0] != "tail" {
            assert!(err.contains("not been recovered"), "{args:?}: {err}");
            assert!(err.contains("position"), "{args:?}: {err}");
        }
    }
    let read = run(&["read", d]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    assert_eq!(
        text(&read.stdout).lines().count(),
        3,
        "the complete batches are still delivered"
    );
    let stats = run(&["stats", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    assert!(v["unrecovered"]["position"].is_u64(), "{v}");
    let check = run(&["check", d]);
    assert!(
        text(&check.stdout).contains("not been recovered"),
        "{}",
        text(&check.stdout)
    );

    let repair = run(&["check", d, "--repair"]);
    assert!(
        repair.status.success(),
        "{}{}",
        text(&repair.stdout),
        text(&repair.stderr)
    );
    let after = run(&["read", d]);
    assert!(
        !text(&after.stderr).contains("not been recovered"),
        "{}",
        text(&after.stderr)
    );
    assert_eq!(text(&after.stdout).lines().count(), 3);
}
