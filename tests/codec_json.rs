//! Typed-event codecs and JSON payloads (spec 3.11): an event type chooses
//! postcard (the default) or JSON; a JSON payload's record carries the
//! `JSON` flag of format version 5; every reader decodes by the record's
//! flag, not by the reading type. Older logs keep their version and refuse
//! JSON-marked events. `annal read --json` prints a JSON payload as a JSON
//! value with `"codec":"json"`, postcard payloads as base64, and `import`
//! marks the JSON ones again.

use std::fs;
use std::path::Path;

use annal::typed::{Codec, decode};
use annal::{
    Aggregate, CheckOptions, Direction, Error, Event, EventData, ExpectedVersion, Log, Options, Reader, Repository,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod cli_support;
use cli_support::{p, run, run_stdin, text};

// ======================================================= the event types

/// An account's events as the application writes them now: JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Account {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl Event for Account {
    const CODEC: Codec = Codec::Json;
    fn event_type(&self) -> &'static str {
        match self {
            Account::Opened { .. } => "Opened",
            Account::Deposited { .. } => "Deposited",
            Account::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// The same events as an older build wrote them: postcard (the default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountV0 {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl Event for AccountV0 {
    fn event_type(&self) -> &'static str {
        match self {
            AccountV0::Opened { .. } => "Opened",
            AccountV0::Deposited { .. } => "Deposited",
            AccountV0::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// The account aggregate (its events: [`Account`], JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Balance {
    owner: Option<String>,
    cents: u64,
}

enum Command {
    Open(String),
    Deposit(u64),
    Withdraw(u64),
}

impl Aggregate for Balance {
    type Event = Account;
    type Command = Command;
    type Error = String;

    fn handle(&self, c: &Command) -> Result<Vec<Account>, String> {
        match c {
            Command::Open(owner) if self.owner.is_none() => Ok(vec![Account::Opened { owner: owner.clone() }]),
            Command::Open(_) => Err("already open".into()),
            Command::Deposit(n) => Ok(vec![Account::Deposited { cents: *n }]),
            Command::Withdraw(n) if *n <= self.cents => Ok(vec![Account::Withdrawn { cents: *n }]),
            Command::Withdraw(_) => Err("insufficient funds".into()),
        }
    }

    fn apply(&mut self, e: &Account) {
        match e {
            Account::Opened { owner } => self.owner = Some(owner.clone()),
            Account::Deposited { cents } => self.cents += cents,
            Account::Withdrawn { cents } => self.cents -= cents,
        }
    }
}

fn payloads(log: &Log, stream: &str) -> Vec<(bool, Vec<u8>)> {
    let view = log.view().expect("view");
    view.read_stream(stream, 0, Direction::Forward, u64::MAX)
        .map(|r| {
            let r = r.expect("record");
            (r.is_json(), r.payload().to_vec())
        })
        .collect()
}

// ============================================================ the tests

#[test]
fn typed_json_events_round_trip_through_append_typed_and_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    assert_eq!(log.format_version(), 5);
    let events = [
        Account::Opened {
            owner: "ann \"the\" owner\n".into(),
        },
        Account::Deposited { cents: 1_000 },
    ];
    log.append_typed("account-1", ExpectedVersion::NoStream, &events)
        .expect("append");
    // Stored as serde_json's bytes, flagged JSON.
    let stored = payloads(&log, "account-1");
    for ((json, bytes), e) in stored.iter().zip(&events) {
        assert!(json, "a JSON-coded event's record is flagged JSON");
        assert_eq!(bytes, &serde_json::to_vec(e).expect("json"));
    }
    // Decoded back, by `decode` and by `Typed`.
    let view = log.view().expect("view");
    let got: Vec<Account> = view
        .read_stream("account-1", 0, Direction::Forward, u64::MAX)
        .map(|r| decode(&r.expect("record")).expect("decode"))
        .collect();
    assert_eq!(got, events);
    let up = annal::Upcasters::new();
    let r = view.read_all(0).next().expect("one").expect("record");
    let typed = annal::Typed::new(r, &up).expect("typed");
    assert_eq!(typed.codec().expect("codec"), Codec::Json);
    assert_eq!(typed.decode::<Account>().expect("decode"), events[0]);
    // EventData::json: any serde value, flagged too.
    let e = EventData::json("Noted", &serde_json::json!({"n": [1, 2]})).expect("json");
    assert!(e.is_json());
    log.append("notes-1", ExpectedVersion::Any, &[e]).expect("append");
    assert_eq!(payloads(&log, "notes-1"), [(true, br#"{"n":[1,2]}"#.to_vec())]);
    log.close().expect("close");
    // A Reader of another handle sees the flag too.
    let reader = Reader::open(dir.path()).expect("reader");
    let view = reader.view().expect("view");
    let flags: Vec<bool> = view.read_all(0).map(|r| r.expect("record").is_json()).collect();
    assert_eq!(flags, [true, true, true]);
}

#[test]
fn a_repository_aggregate_folds_a_stream_that_mixes_postcard_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    // Events an older build wrote in postcard...
    log.append_typed(
        "account-7",
        ExpectedVersion::NoStream,
        &[
            AccountV0::Opened { owner: "bob".into() },
            AccountV0::Deposited { cents: 500 },
        ],
    )
    .expect("append postcard");
    // ...then commands through a repository whose events are JSON.
    let repo: Repository<Balance> = Repository::new(&log);
    repo.execute("account-7", &Command::Deposit(250)).expect("deposit");
    repo.execute("account-7", &Command::Withdraw(100)).expect("withdraw");
    for refused in [Command::Withdraw(10_000), Command::Open("eve".into())] {
        // (Open: the postcard `Opened` was folded into the state.)
        assert!(matches!(
            repo.execute("account-7", &refused),
            Err(annal::ExecuteError::Rejected(_))
        ));
    }
    let flags: Vec<bool> = payloads(&log, "account-7").into_iter().map(|(j, _)| j).collect();
    assert_eq!(flags, [false, false, true, true], "each record names its codec");
    // The load decodes each event with its record's codec.
    let loaded = repo.load("account-7").expect("load");
    assert_eq!(loaded.state.owner.as_deref(), Some("bob"));
    assert_eq!(loaded.state.cents, 650);
    assert_eq!(loaded.version, Some(3));
    // And so does `decode` into either type: the reading type's codec is
    // never used to read.
    let view = log.view().expect("view");
    let as_v0: Vec<AccountV0> = view
        .read_stream("account-7", 0, Direction::Forward, u64::MAX)
        .map(|r| decode(&r.expect("record")).expect("decode"))
        .collect();
    assert_eq!(as_v0[3], AccountV0::Withdrawn { cents: 100 });
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn a_json_event_sealed_for_a_subject_keeps_its_flag_and_check_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    let e = EventData::json("EmailChanged", &serde_json::json!({"email": "ann@example.com"}))
        .expect("json")
        .with_subject("ann");
    log.append("customer-1", ExpectedVersion::Any, &[e]).expect("append");
    let view = log.view().expect("view");
    let r = view.read_all(0).next().expect("one").expect("record");
    assert!(r.is_sealed() && r.is_json());
    assert!(decode::<Value>(&r).is_err(), "sealed: unseal first");
    let u = view.unseal(r).expect("unseal");
    let v: Value = decode(&u.record()).expect("decode");
    assert_eq!(v["email"], "ann@example.com");
    drop(view);
    log.erase_subject("ann").expect("erase").expect("a live key");
    let view = log.view().expect("view");
    let u = view
        .unseal(view.read_all(0).next().expect("one").expect("record"))
        .expect("unseal");
    assert!(u.is_erased() && u.record().is_json(), "the flag is envelope: it stays");
    drop(view);
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn a_version_4_log_opens_reads_and_appends_and_refuses_json_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().format_version(4)).expect("create v4");
    log.append_typed(
        "account-1",
        ExpectedVersion::NoStream,
        &[AccountV0::Opened { owner: "c".into() }],
    )
    .expect("postcard");
    log.append("blob-1", ExpectedVersion::Any, &[EventData::new("Raw", br#"{"a":1}"#)])
        .expect("opaque");
    log.close().expect("close");

    // Reopened with the defaults of this build: still version 4.
    let log = Log::open(dir.path()).expect("open v4");
    assert_eq!(log.format_version(), 4);
    let version = |log: &Log| log.view().expect("view").stream_version("account-1").expect("version");
    assert_eq!(version(&log), Some(0));
    // A JSON event, as EventData or typed, is refused: nothing written.
    let json = EventData::json("Deposited", &serde_json::json!({"cents": 1})).expect("json");
    for err in [
        log.append("account-1", ExpectedVersion::Any, std::slice::from_ref(&json))
            .expect_err("refused"),
        log.append_typed("account-1", ExpectedVersion::Any, &[Account::Deposited { cents: 1 }])
            .expect_err("refused"),
        log.append(
            "account-1",
            ExpectedVersion::Any,
            &[EventData::new("Fine", b"x"), json.clone()],
        )
        .expect_err("one JSON event refuses the batch"),
    ] {
        match err {
            Error::InvalidArgument(m) => assert!(m.contains("format version 5") && m.contains("version 4"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(version(&log), Some(0), "nothing written");
    // Postcard and opaque appends go on.
    log.append_typed(
        "account-1",
        ExpectedVersion::Exact(0),
        &[AccountV0::Deposited { cents: 9 }],
    )
    .expect("append");
    let got: Vec<AccountV0> = {
        let view = log.view().expect("view");
        view.read_stream("account-1", 0, Direction::Forward, u64::MAX)
            .map(|r| {
                let r = r.expect("record");
                assert!(!r.is_json());
                decode(&r).expect("decode")
            })
            .collect()
    };
    assert_eq!(got.len(), 2);
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn the_committed_version_4_vector_opens_reads_and_appends() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/v4/metadata");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in fs::read_dir(&src).expect("vector") {
        let f = f.expect("entry");
        fs::copy(f.path(), tmp.path().join(f.file_name())).expect("copy");
    }
    let before = {
        let r = Reader::open(tmp.path()).expect("reader");
        let v = r.view().expect("view");
        v.read_all(0).count()
    };
    let log = Log::open(tmp.path()).expect("open the v4 vector");
    assert_eq!(log.format_version(), 4);
    log.append("order-9", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])
        .expect("append");
    assert!(matches!(
        log.append(
            "order-9",
            ExpectedVersion::Any,
            &[EventData::json("Paid", &1).expect("json")]
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(log.view().expect("view").read_all(0).count(), before + 1);
    log.close().expect("close");
    let seg = fs::read(tmp.path().join("00000000000000000000.seg")).expect("segment");
    assert_eq!(u16::from_le_bytes([seg[8], seg[9]]), 4, "the segment stays version 4");
    let report = annal::check(tmp.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn cli_read_json_prints_json_payloads_as_json_and_postcard_as_base64() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = Log::open(&dir).expect("open");
    log.append_typed(
        "account-1",
        ExpectedVersion::NoStream,
        &[AccountV0::Opened { owner: "ann".into() }],
    )
    .expect("postcard");
    log.append_typed(
        "account-1",
        ExpectedVersion::Exact(0),
        &[Account::Deposited { cents: 42 }],
    )
    .expect("json");
    // Opaque bytes that are JSON text: printed as data, never flagged.
    log.append(
        "note-1",
        ExpectedVersion::Any,
        &[EventData::new("Noted", br#"{"x":1}"#)],
    )
    .expect("opaque");
    // JSON text with whitespace around it: flagged, but not exact JSON for
    // a JSON line: base64, with the codec.
    log.append(
        "note-1",
        ExpectedVersion::Any,
        &[EventData::json_text("Noted", b" [1, 2]\n").expect("json text")],
    )
    .expect("json text");
    log.close().expect("close");

    let out = run(&["read", p(&dir), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 4);
    // The postcard event: base64 of its bytes, no codec.
    let postcard = annal::typed::encode(&AccountV0::Opened { owner: "ann".into() }).expect("encode");
    assert_eq!(lines[0]["type"], "Opened");
    assert!(lines[0].get("codec").is_none() && lines[0].get("data").is_none());
    assert_eq!(
        lines[0]["data_base64"].as_str().map(|s| s.len()),
        Some(postcard.payload.len().div_ceil(3) * 4)
    );
    // The JSON event: its value, and the codec.
    assert_eq!(lines[1]["codec"], "json");
    assert_eq!(lines[1]["data"], serde_json::json!({"Deposited": {"cents": 42}}));
    assert!(lines[1].get("data_base64").is_none());
    // Opaque JSON text: data, no codec (as before version 5).
    assert!(lines[2].get("codec").is_none());
    assert_eq!(lines[2]["data"], serde_json::json!({"x": 1}));
    assert_eq!(lines[3]["codec"], "json");
    assert_eq!(lines[3]["data_base64"], "IFsxLCAyXQo=");

    // `read --json | import` keeps the mark and the bytes.
    let copy = tmp.path().join("copy");
    let out = run_stdin(&["import", p(&copy), "-"], &out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reader = Reader::open(&copy).expect("reader");
    let view = reader.view().expect("view");
    let got: Vec<(bool, Vec<u8>)> = view
        .read_all(0)
        .map(|r| {
            let r = r.expect("record");
            (r.is_json(), r.payload().to_vec())
        })
        .collect();
    assert_eq!(
        got,
        [
            (false, postcard.payload.to_vec()),
            (true, br#"{"Deposited":{"cents":42}}"#.to_vec()),
            (false, br#"{"x":1}"#.to_vec()),
            (true, b" [1, 2]\n".to_vec()),
        ]
    );
    // A codec other than json, or json data that is not JSON, is refused.
    for bad in [
        r#"{"stream":"s","type":"T","data":{},"codec":"yaml"}"#,
        r#"{"stream":"s","type":"T","data_base64":"AAE=","codec":"json"}"#,
    ] {
        let out = run_stdin(&["import", p(&tmp.path().join("bad")), "-"], bad.as_bytes());
        assert!(!out.status.success(), "{bad}");
        assert!(text(&out.stderr).contains("codec"), "{}", text(&out.stderr));
    }
}

#[test]
fn dump_names_the_json_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = Log::open(&dir).expect("open");
    log.append(
        "s",
        ExpectedVersion::Any,
        &[
            EventData::json("T", &[1, 2]).expect("json"),
            EventData::new("T", b"[1,2]"),
        ],
    )
    .expect("append");
    log.close().expect("close");
    let out = run(&["dump", p(&dir.join("00000000000000000000.seg"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("payload: JSON").count(),
        1,
        "{}",
        text(&out.stdout)
    );
}
