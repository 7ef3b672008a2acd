//! Golden vector of format version 5 (spec 3.11, 10): the record flag
//! `JSON`, which says a payload is JSON text. In `spec/vectors/v5/`:
//!
//! * `json/` (`00000000000000000000.seg`, `annal.head`, `annal.keys`) +
//!   `json.json`: a log written by annal's writer (fixed log id, a scripted
//!   clock, keys and nonces from a fixed seed: the test hook
//!   `Options::fixed_random`, never for real data), cleanly closed, by the
//!   script of [`SCRIPT`]: `EventData::json` beside an opaque payload in
//!   one batch; a typed event of the JSON codec followed, in the same batch,
//!   by a typed event of the same event type in postcard (so the second
//!   record has neither `TYPE` nor `JSON`); and a JSON event sealed for a
//!   subject (`SUBJECT` and `JSON` together).
//!
//! The JSON is computed from the committed bytes by code written from the
//! spec alone: the v3/v4/v5 reader of `tests/golden/v3.rs` (which knows the
//! `JSON` bit of version 5 and nothing of annal). The tests check that
//!
//! 1. annal's writer, given the same log id, clock and seed, writes the
//!    committed segment, head file and key file byte for byte;
//! 2. the independent reader reads the committed bytes to the committed
//!    JSON: `JSON` is set exactly on the events the script marked, and every
//!    such payload that is not sealed is one JSON value;
//! 3. annal's reads (`Reader`, `LogView::unseal`, `annal::typed::decode`)
//!    return the same flags, and decode each typed event with the codec its
//!    record names; `check` passes;
//! 4. the same segment labelled version 4 (its `format_version` and the head
//!    slots' changed, CRCs recomputed) is damage at the first `JSON`
//!    record's `rflags` byte: a version 4 reader rejects the flag, it never
//!    misreads it (spec 10).
//!
//! To (re)write the vector:
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --all-features --test golden_v5_json
//! ```

mod golden;
#[path = "golden/v3.rs"]
mod v3;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use annal::typed::Codec;
use annal::{Durability, Error, Event, EventData, ExpectedVersion, Log, Options, Reader};
use serde::{Deserialize, Serialize};

use golden::{assert_bytes_eq, crc, hex, regenerating};

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const CLOCK_START: u64 = 1_700_000_000_000_000_000;
const CLOCK_STEP: u64 = 1_000;
const SEED: u64 = 5;
const NAME: &str = "json";
const SEGMENT_FILE: &str = "00000000000000000000.seg";
const HEAD_FILE: &str = "annal.head";
const KEYS_FILE: &str = "annal.keys";

/// `ItemAdded` as the application writes it now: JSON, schema version 1.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ItemAddedJson {
    sku: String,
    cents: u64,
}
impl Event for ItemAddedJson {
    const SCHEMA_VERSION: u32 = 1;
    const CODEC: Codec = Codec::Json;
    fn event_type(&self) -> &'static str {
        "ItemAdded"
    }
}

/// `ItemAdded` as an older build wrote it: postcard.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ItemAddedPostcard {
    sku: String,
    cents: u64,
}
impl Event for ItemAddedPostcard {
    fn event_type(&self) -> &'static str {
        "ItemAdded"
    }
}

/// The appends of the script: (stream, events), one batch each.
fn script() -> Vec<(&'static str, Vec<EventData<'static>>)> {
    let json = |t: &'static str, v: serde_json::Value| EventData::json(t, &v).expect("json");
    vec![
        (
            "order-1",
            vec![
                json("OrderPlaced", serde_json::json!({"customer": "ann", "total": 42})),
                EventData::new("Noted", b"\x00\x01 opaque".to_vec()),
            ],
        ),
        (
            "order-1",
            vec![
                annal::typed::encode(&ItemAddedJson {
                    sku: "A-7".into(),
                    cents: 250,
                })
                .expect("encode"),
                annal::typed::encode(&ItemAddedPostcard {
                    sku: "B-2".into(),
                    cents: 99,
                })
                .expect("encode"),
            ],
        ),
        (
            "customer-1",
            vec![json("EmailChanged", serde_json::json!({"email": "ann@example.com"})).with_subject("ann")],
        ),
    ]
}

/// Whether each event of the script, in position order, is marked JSON.
fn script_marks() -> Vec<bool> {
    script()
        .iter()
        .flat_map(|(_, evs)| evs.iter().map(EventData::is_json))
        .collect()
}

fn write_log(dir: &Path) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let clock = Arc::new(move || CLOCK_START + c.fetch_add(1, Ordering::SeqCst) as u64 * CLOCK_STEP);
    let opts = Options::default()
        .durability(Durability::Buffered)
        .log_id(LOG_ID)
        .clock(clock)
        .fixed_random(SEED);
    let log = Log::open_with(dir, opts).expect("create log");
    assert_eq!(log.format_version(), 5, "new logs are version 5");
    for (stream, events) in script() {
        log.append(stream, ExpectedVersion::Any, &events).expect("append");
    }
    log.close().expect("close");
}

// ============================================================ the JSON

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct VectorJson {
    description: Vec<String>,
    format_version: u16,
    events: Vec<EventJson>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct EventJson {
    position: u64,
    stream: String,
    version: u64,
    event_type: String,
    schema_version: u32,
    /// File offset of the record's `rflags` byte.
    offset: u64,
    rflags: u8,
    /// `rflags` bit 5 (spec 3.11).
    json: bool,
    /// `rflags` bit 4 (spec 3.8): the key id.
    key_id: Option<u64>,
    /// The payload as stored (the sealed payload for a sealed record), hex.
    payload_hex: String,
    /// A record with `JSON` that is not sealed: its payload as text.
    payload_json: Option<String>,
}

fn describe(seg: &[u8]) -> VectorJson {
    let walk = v3::walk_segment(seg, 0).unwrap_or_else(|at| panic!("segment damaged at {at}"));
    assert_eq!(walk.incomplete, None);
    v3::verify_chain(seg, &walk, None).expect("the chain verifies");
    let events = walk
        .events()
        .iter()
        .map(|e| {
            let json = e.rflags & v3::RFLAG_JSON != 0;
            EventJson {
                position: e.position,
                stream: e.stream.clone(),
                version: e.stream_version,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                offset: e.offset,
                rflags: e.rflags,
                json,
                key_id: e.sealed.map(|s| s.0),
                payload_hex: hex(&e.payload),
                payload_json: (json && e.sealed.is_none())
                    .then(|| String::from_utf8(e.payload.clone()).expect("JSON text is UTF-8")),
            }
        })
        .collect();
    VectorJson {
        description: golden::lines(&[
            "Format version 5: the record flag JSON (rflags bit 5, spec 3.11).",
            "order-1: OrderPlaced (EventData::json), Noted (opaque bytes), in one batch;",
            "order-1: ItemAdded (typed, JSON codec, schema 1), ItemAdded (typed, postcard: no TYPE, no JSON);",
            "customer-1: EmailChanged (EventData::json, sealed for subject ann: SUBJECT and JSON).",
            "Keys and nonces from a fixed seed (test hook); clock scripted; log id 00 01 .. 0f.",
        ]),
        format_version: walk.header.format_version,
        events,
    }
}

fn vector_dir() -> PathBuf {
    static DONE: OnceLock<()> = OnceLock::new();
    let dir = golden::vectors_dir_of(5);
    DONE.get_or_init(|| {
        if regenerating() {
            let tmp = tempfile::tempdir().expect("tempdir");
            write_log(tmp.path());
            let out = dir.join(NAME);
            if out.exists() {
                fs::remove_dir_all(&out).expect("remove old vector");
            }
            fs::create_dir_all(&out).expect("create vector directory");
            for f in [SEGMENT_FILE, HEAD_FILE, KEYS_FILE] {
                fs::copy(tmp.path().join(f), out.join(f)).expect("copy vector file");
            }
            let seg = fs::read(out.join(SEGMENT_FILE)).expect("segment");
            let text = serde_json::to_string_pretty(&describe(&seg)).expect("json") + "\n";
            fs::write(dir.join(format!("{NAME}.json")), text).expect("write JSON");
        }
    });
    dir
}

fn committed(file: &str) -> Vec<u8> {
    fs::read(vector_dir().join(NAME).join(file)).expect("read committed vector file")
}

fn committed_json() -> VectorJson {
    golden::load_json_from(&vector_dir(), &format!("{NAME}.json"))
}

fn log_copy() -> tempfile::TempDir {
    golden::copy_dir(&vector_dir().join(NAME))
}

// ============================================================ the tests

#[test]
fn writer_produces_the_v5_json_vector() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_log(tmp.path());
    for f in [SEGMENT_FILE, HEAD_FILE, KEYS_FILE] {
        assert_bytes_eq(
            &format!("writer's {f} vs v5/json"),
            &fs::read(tmp.path().join(f)).expect("read"),
            &committed(f),
        );
    }
}

#[test]
fn independent_reader_reads_the_committed_json_vector() {
    let json = committed_json();
    assert_eq!(describe(&committed(SEGMENT_FILE)), json);
    assert_eq!(json.format_version, 5);
    let flags: Vec<bool> = json.events.iter().map(|e| e.json).collect();
    assert_eq!(flags, script_marks(), "JSON exactly where the script marked it");
    assert_eq!(flags, [true, false, true, false, true]);
    // The postcard ItemAdded follows a JSON one of the same type: no TYPE,
    // no JSON (the flag is per record, not inherited like the type).
    assert_eq!(json.events[3].rflags & (v3::RFLAG_TYPE | v3::RFLAG_JSON), 0);
    // Sealed and JSON together; only the ciphertext is stored.
    let sealed = &json.events[4];
    assert!(sealed.key_id.is_some() && sealed.json && sealed.payload_json.is_none());
    assert!(
        !committed(SEGMENT_FILE)
            .windows(b"ann@example.com".len())
            .any(|w| w == b"ann@example.com")
    );
    for e in &json.events {
        if let Some(text) = &e.payload_json {
            serde_json::from_str::<serde_json::Value>(text).expect("a JSON record's payload is JSON");
            assert_eq!(text.trim(), text, "one JSON value, nothing around it");
        }
    }
}

#[test]
fn annal_reads_the_v5_vector_and_decodes_by_the_record() {
    let json = committed_json();
    let tmp = log_copy();
    let reader = Reader::open(tmp.path()).expect("reader");
    let view = reader.view().expect("view");
    let got: Vec<_> = view
        .read_all(0)
        .map(|r| view.unseal(r.expect("record")).expect("unseal"))
        .collect();
    assert_eq!(got.len(), json.events.len());
    for (u, e) in got.iter().zip(&json.events) {
        let r = u.record();
        assert_eq!(
            (r.position(), r.stream(), r.event_type()),
            (e.position, e.stream.as_str(), e.event_type.as_str())
        );
        assert_eq!(r.is_json(), e.json, "position {}", e.position);
        assert_eq!(
            Codec::of_record(&r).expect("codec"),
            if e.json { Codec::Json } else { Codec::Postcard }
        );
    }
    // Both ItemAdded events decode into either type: the codec is the record's.
    for (i, want) in [(2, ("A-7", 250)), (3, ("B-2", 99))] {
        let r = got[i].record();
        let a: ItemAddedJson = annal::typed::decode(&r).expect("decode");
        let b: ItemAddedPostcard = annal::typed::decode(&r).expect("decode");
        assert_eq!((a.sku.as_str(), a.cents), want);
        assert_eq!((b.sku.as_str(), b.cents), want);
    }
    // The sealed JSON event opens to its JSON text, still flagged.
    let sealed = got[4].record();
    assert!(sealed.is_json());
    let v: serde_json::Value = annal::typed::decode(&sealed).expect("decode");
    assert_eq!(v, serde_json::json!({"email": "ann@example.com"}));
    drop(view);
    let report = annal::check(tmp.path(), annal::CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

/// Rewrite the segment header's and both head slots' `format_version`
/// (spec 2.1, 5.2) to `version`, their CRCs recomputed.
fn relabel(dir: &Path, version: u16) {
    let seg_path = dir.join(SEGMENT_FILE);
    let mut seg = fs::read(&seg_path).expect("segment");
    seg[8..10].copy_from_slice(&version.to_le_bytes());
    let c = crc(&seg[..124]);
    seg[124..128].copy_from_slice(&c.to_le_bytes());
    fs::write(&seg_path, seg).expect("write segment");
    let head_path = dir.join(HEAD_FILE);
    let mut head = fs::read(&head_path).expect("head");
    for at in [0usize, 64] {
        head[at + 8..at + 10].copy_from_slice(&version.to_le_bytes());
        let c = crc(&head[at + 8..at + 64]);
        head[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
    }
    fs::write(&head_path, head).expect("write head");
}

#[test]
fn the_json_flag_in_a_version_4_segment_is_damage_not_misread() {
    let json = committed_json();
    let first_json = json.events.iter().find(|e| e.json).expect("a JSON record");
    // The independent reader, as a version 4 reader, stops at that byte.
    let tmp = log_copy();
    relabel(tmp.path(), 4);
    let seg = fs::read(tmp.path().join(SEGMENT_FILE)).expect("segment");
    let walk = v3::walk_segment(&seg, 0).expect("the header is valid");
    assert_eq!(walk.incomplete.map(|(_, at)| at), Some(first_json.offset));
    // So does annal's: the batch is damage (it lies below the durable
    // boundary: nothing is cut), at the rflags byte.
    let first_error = match Reader::open(tmp.path()).and_then(|r| r.view()) {
        Err(e) => e,
        Ok(view) => view
            .read_all(0)
            .find_map(|r| r.err())
            .expect("an error, never the records"),
    };
    match first_error {
        Error::Corrupt { path, offset, .. } => {
            assert_eq!(path.file_name().unwrap(), SEGMENT_FILE);
            assert_eq!(offset, first_json.offset);
        }
        other => panic!("{other:?}"),
    }
    let report = annal::check(tmp.path(), annal::CheckOptions::default()).expect("check runs");
    assert!(!report.is_ok(), "check reports the flag in a version 4 segment");
    // Labelled 5 again, it reads.
    relabel(tmp.path(), 5);
    let reader = Reader::open(tmp.path()).expect("reader");
    assert_eq!(reader.view().expect("view").read_all(0).count(), json.events.len());
}
