//! `annal append --subject`, `annal erase`, `annal read` of sealed and
//! erased events, `--master-key` and `annal keygen --master` (issue 16,
//! spec 3.8 and 22), driven through the built binary; and README's library
//! example of "Erasing personal data", compiled and run here.

use std::path::Path;

use serde_json::Value;

mod cli_support;
use cli_support::{ok, p, run, text};

fn read_json(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut all = vec!["read", p(dir), "--json"];
    all.extend_from_slice(extra);
    let out = ok(run(&all));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Every file under `dir` whose bytes hold `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let path = e.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[test]
fn append_read_erase_read_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("crm");
    let email = r#"{"email":"ann@example.com"}"#;
    ok(run(&[
        "append",
        p(&dir),
        "--stream",
        "customer-7",
        "--type",
        "EmailChanged",
        "--subject",
        "ann",
        "--data",
        email,
        "--metadata",
        r#"{"ip":"10.0.0.1"}"#,
    ]));
    ok(run(&[
        "append",
        p(&dir),
        "--stream",
        "customer-7",
        "--type",
        "Noted",
        "--data",
        "{}",
    ]));
    assert!(holding(&dir, "ann@example.com").is_empty(), "no plaintext on disk");
    let lines = read_json(&dir, &["--stream", "customer-7"]);
    assert_eq!(lines[0]["data"]["email"], "ann@example.com");
    assert_eq!(lines[0]["metadata"]["ip"], "10.0.0.1");
    assert_eq!(lines[0]["subject_key"], 1);
    assert!(lines[1].get("subject_key").is_none());

    let out = ok(run(&["erase", p(&dir), "ann", "bob", "--json"]));
    let said: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(said[0]["erased_key"], 1);
    assert_eq!(said[1]["erased_key"], Value::Null);
    let lines = read_json(&dir, &[]);
    assert_eq!(lines[0]["erased"], true);
    assert!(lines[0].get("data").is_none() && lines[0].get("metadata").is_none());
    assert_eq!(lines[0]["type"], "EmailChanged");
    assert_eq!(lines[1]["data"], serde_json::json!({}));
    let plain = text(&ok(run(&["read", p(&dir)])).stdout);
    assert!(
        plain.lines().next().unwrap().ends_with("EmailChanged  <erased>"),
        "{plain}"
    );

    let out = ok(run(&["check", p(&dir), "--json"]));
    let report: Value = serde_json::from_str(&text(&out.stdout)).expect("json");
    assert_eq!(report["ok"], true);
    assert_eq!(report["subjects"]["erased"], 1);
    assert_eq!(report["subjects"]["erased_keys"], 1);
    let dump = text(&ok(run(&["dump", &format!("{}/00000000000000000000.seg", p(&dir))])).stdout);
    assert!(dump.contains("sealed for subject key 1 nonce="), "{dump}");

    // Bad arguments: exit 2, nothing erased.
    let out = run(&["erase", p(&dir), ""]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_master_key_file_wraps_the_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("crm");
    let key = tmp.path().join("master.key");
    ok(run(&["keygen", "--master", p(&key)]));
    let k = p(&key);
    ok(run(&[
        "append",
        p(&dir),
        "--stream",
        "c-1",
        "--type",
        "T",
        "--subject",
        "ann",
        "--data",
        "{\"a\":1}",
        "--master-key",
        k,
    ]));
    // Without it: refused, naming annal.keys (reads of sealed events, and
    // opening the log for writing).
    for args in [
        vec!["read", p(&dir)],
        vec!["append", p(&dir), "--stream", "c-1", "--type", "T", "--data", "{}"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("annal.keys"), "{}", text(&out.stderr));
    }
    assert_eq!(read_json(&dir, &["--master-key", k])[0]["data"]["a"], 1);
    let out = ok(run(&["check", p(&dir), "--master-key", k, "--json"]));
    let report: Value = serde_json::from_str(&text(&out.stdout)).expect("json");
    assert_eq!(report["subjects"]["sealed"], 1);
    ok(run(&["erase", p(&dir), "ann", "--master-key", k]));
    assert_eq!(read_json(&dir, &["--master-key", k])[0]["erased"], true);
}

// README: begin
use annal::{Direction, EventData, ExpectedVersion, Log};

fn erase_a_customer(log: &Log) -> annal::Result<()> {
    let email = EventData::new("EmailChanged", br#"{"email":"ann@example.com"}"#).with_subject("customer-42");
    log.append("customer-42", ExpectedVersion::Any, &[email])?;
    let view = log.view()?;
    let rec = view
        .read_stream("customer-42", 0, Direction::Forward, 1)
        .next()
        .unwrap()?;
    assert_eq!(view.unseal(rec)?.payload(), br#"{"email":"ann@example.com"}"#);

    log.erase_subject("customer-42")?;
    let erased = view.unseal(rec)?;
    assert!(erased.is_erased() && erased.payload().is_empty());
    assert_eq!(erased.record().event_type(), "EmailChanged");
    Ok(())
}
// README: end

#[test]
fn the_readme_library_example_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(tmp.path(), annal::Options::default()).expect("open");
    erase_a_customer(&log).expect("the README example");
    log.close().expect("close");
}

#[test]
fn the_readme_library_example_is_this_one() {
    cli_support::assert_readme_example(include_str!("cli_subjects.rs"), "Erasing personal data");
}
