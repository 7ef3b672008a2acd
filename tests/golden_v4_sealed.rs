//! Golden vector of sealed records (spec 3.8, 22): events that name a
//! subject, stored encrypted, one subject erased. In `spec/vectors/v4/`:
//!
//! * `sealed/` (`00000000000000000000.seg`, `annal.head`, `annal.keys`) +
//!   `sealed.json`: a log written by annal's writer (fixed log id, a
//!   scripted clock, keys and nonces from a fixed seed: the test hook
//!   `Options::fixed_random`, never for real data), cleanly closed, by the
//!   script of [`SCRIPT`]: `ann` and `bob` named, `bob` erased, `bob` named
//!   again (a new key).
//!
//! The JSON is computed from the committed bytes by code written from the
//! spec alone: the v3/v4 reader of `tests/golden/v3.rs` (records, the
//! `SUBJECT` flag), the key file read from the tables of spec 22.2 and
//! 22.3 here, and XChaCha20-Poly1305 with the AAD of spec 3.8 built here
//! (the `chacha20poly1305` crate directly, never annal's code). The tests
//! check that
//!
//! 1. annal's writer, given the same log id, clock and seed, writes the
//!    committed segment, head file and key file byte for byte;
//! 2. the independent reader reads the committed bytes to the committed
//!    JSON: every sealed record opens with its live key to the plaintext
//!    the script appended, and the erased subject's records have no key;
//!    no plaintext is in any file;
//! 3. annal's reads (`Reader`, `LogView::unseal`) return the same: the
//!    plaintexts, and the erased events as erased with their envelopes;
//! 4. every single-byte change of a live sealed record's nonce or sealed
//!    payload (with the frame's CRCs recomputed from spec 3.6, so that only
//!    the AEAD can see it) makes annal's unseal an `Error::Corrupt` naming
//!    the segment, never a wrong plaintext; and the audit chain still
//!    verifies on the committed bytes (it covers the ciphertext).
//!
//! To (re)write the vector:
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --all-features --test golden_v4_sealed
//! ```

mod golden;
#[path = "golden/v3.rs"]
mod v3;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use golden::{assert_bytes_eq, crc, hex, regenerating};

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const CLOCK_START: u64 = 1_700_000_000_000_000_000;
const CLOCK_STEP: u64 = 1_000;
const SEED: u64 = 7;
const NAME: &str = "sealed";
const SEGMENT_FILE: &str = "00000000000000000000.seg";
const HEAD_FILE: &str = "annal.head";
const KEYS_FILE: &str = "annal.keys";

/// One step of the script.
enum Op {
    /// Append to a stream: (type, payload, metadata, subject) each.
    Append(
        &'static str,
        &'static [(&'static str, &'static str, &'static str, Option<&'static str>)],
    ),
    Erase(&'static str),
}

const SCRIPT: &[Op] = &[
    Op::Append(
        "customer-1",
        &[
            (
                "Registered",
                r#"{"email":"ann@example.com"}"#,
                r#"{"ip":"10.0.0.1"}"#,
                Some("ann"),
            ),
            ("Noted", r#"{"note":"public"}"#, "", None),
        ],
    ),
    Op::Append(
        "customer-2",
        &[(
            "Registered",
            r#"{"email":"bob@example.com"}"#,
            r#"{"ip":"10.0.0.2"}"#,
            Some("bob"),
        )],
    ),
    Op::Erase("bob"),
    Op::Append(
        "customer-2",
        &[("Returned", r#"{"email":"bob@new.example"}"#, "", Some("bob"))],
    ),
    Op::Append("customer-1", &[("Moved", r#"{"street":"1 Main St"}"#, "", Some("ann"))]),
];

/// One event of the script: (stream, type, payload, metadata, subject,
/// erased by the script).
type ScriptEvent = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    bool,
);

/// The events in position order.
fn script_events() -> Vec<ScriptEvent> {
    let mut out = Vec::new();
    let mut erased_before: Vec<(&str, usize)> = Vec::new();
    for op in SCRIPT {
        match op {
            Op::Append(s, evs) => {
                for (t, p, m, subj) in evs.iter() {
                    out.push((*s, *t, *p, *m, *subj, false));
                }
            }
            Op::Erase(who) => erased_before.push((who, out.len())),
        }
    }
    for (who, n) in erased_before {
        for e in out.iter_mut().take(n) {
            if e.4 == Some(who) {
                e.5 = true;
            }
        }
    }
    out
}

fn write_log(dir: &Path) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let clock = Arc::new(move || CLOCK_START + c.fetch_add(1, Ordering::SeqCst) as u64 * CLOCK_STEP);
    let opts = Options::default()
        // A version 4 vector (new logs are version 5).
        .format_version(4)
        .durability(Durability::Buffered)
        .log_id(LOG_ID)
        .clock(clock)
        .fixed_random(SEED);
    let log = Log::open_with(dir, opts).expect("create log");
    for op in SCRIPT {
        match op {
            Op::Append(s, evs) => {
                let events: Vec<EventData<'_>> = evs
                    .iter()
                    .map(|(t, p, m, subj)| {
                        let e = EventData::new(*t, p.as_bytes()).with_metadata(m.as_bytes());
                        match subj {
                            Some(x) => e.with_subject(*x),
                            None => e,
                        }
                    })
                    .collect();
                log.append(s, ExpectedVersion::Any, &events).expect("append");
            }
            Op::Erase(who) => {
                log.erase_subject(who).expect("erase").expect("a live key");
            }
        }
    }
    log.close().expect("close");
}

// ============================================ the key file, from spec 22

/// Spec 22.3, entry by entry: key id → `Some(data key)` (kind 1) or `None`
/// (kind 2, erased), for a file without `WRAPPED`.
fn spec_keys(file: &[u8]) -> BTreeMap<u64, Option<[u8; 32]>> {
    assert_eq!(&file[0..8], b"ANNALKEY", "magic");
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), 1, "file_version");
    assert_eq!(u16::from_le_bytes([file[10], file[11]]), 0, "flags: not WRAPPED");
    assert_eq!(&file[16..32], &LOG_ID, "log_id");
    assert_eq!(
        u32::from_le_bytes(file[92..96].try_into().unwrap()),
        crc(&file[..92]),
        "header_crc"
    );
    let mut out = BTreeMap::new();
    let mut at = 96;
    while at < file.len() {
        let entry_len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        let e = &file[at..at + entry_len];
        assert_eq!(
            u32::from_le_bytes(e[0..4].try_into().unwrap()),
            crc(&e[4..]),
            "entry crc at {at}"
        );
        let key_id = u64::from_le_bytes(e[16..24].try_into().unwrap());
        match e[4] {
            1 => out.insert(key_id, Some(e[32..64].try_into().unwrap())),
            2 => out.insert(key_id, None),
            k => panic!("entry kind {k} at {at}"),
        };
        at += entry_len;
    }
    out
}

/// Spec 3.8: the AAD of a sealed record.
fn spec_aad(key_id: u64, stream: &str, event_type: &str) -> Vec<u8> {
    let mut a = b"annal sealed v4\0".to_vec();
    a.extend_from_slice(&LOG_ID);
    a.extend_from_slice(&key_id.to_le_bytes());
    a.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    a.extend_from_slice(stream.as_bytes());
    a.extend_from_slice(&(event_type.len() as u16).to_le_bytes());
    a.extend_from_slice(event_type.as_bytes());
    a
}

/// Spec 3.8: the sealed plaintext split into (metadata, payload).
fn spec_split(plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (meta_len, n) = v3::get_varint(plain, 0, plain.len()).expect("metadata_len");
    let meta_end = n + meta_len as usize;
    (plain[n..meta_end].to_vec(), plain[meta_end..].to_vec())
}

// ============================================================ the JSON

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct SealedJson {
    description: Vec<String>,
    /// Key id → "live" or "erased" (spec 22.3).
    keys: BTreeMap<u64, String>,
    events: Vec<EventJson>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct EventJson {
    position: u64,
    stream: String,
    version: u64,
    event_type: String,
    /// File offset of the record's `rflags` byte.
    offset: u64,
    rflags: u8,
    key_id: Option<u64>,
    nonce: Option<String>,
    /// The sealed payload (hex), for sealed records.
    sealed_payload: Option<String>,
    erased: bool,
    /// The event's metadata and payload (decrypted for a live sealed
    /// record; `None` if erased).
    metadata: Option<String>,
    payload: Option<String>,
}

fn describe(seg: &[u8], keys_file: &[u8]) -> SealedJson {
    let walk = v3::walk_segment(seg, 0).unwrap_or_else(|at| panic!("segment damaged at {at}"));
    assert_eq!(walk.incomplete, None);
    assert_eq!(walk.header.format_version, 4);
    v3::verify_chain(seg, &walk, None).expect("the chain verifies over the ciphertext");
    let keys = spec_keys(keys_file);
    let events = walk
        .events()
        .iter()
        .map(|e| {
            let (metadata, payload, erased) = match e.sealed {
                None => (Some(e.metadata.clone()), Some(e.payload.clone()), false),
                Some((key_id, nonce)) => match keys.get(&key_id).unwrap_or_else(|| panic!("key {key_id} unknown")) {
                    None => (None, None, true),
                    Some(k) => {
                        let plain = XChaCha20Poly1305::new(k.into())
                            .decrypt(
                                XNonce::from_slice(&nonce),
                                Payload {
                                    msg: &e.payload,
                                    aad: &spec_aad(key_id, &e.stream, &e.event_type),
                                },
                            )
                            .expect("a live sealed record opens");
                        let (m, p) = spec_split(&plain);
                        (Some(m), Some(p), false)
                    }
                },
            };
            let text = |b: Vec<u8>| String::from_utf8(b).expect("the script's texts");
            EventJson {
                position: e.position,
                stream: e.stream.clone(),
                version: e.stream_version,
                event_type: e.event_type.clone(),
                offset: e.offset,
                rflags: e.rflags,
                key_id: e.sealed.map(|s| s.0),
                nonce: e.sealed.map(|s| hex(&s.1)),
                sealed_payload: e.sealed.map(|_| hex(&e.payload)),
                erased,
                metadata: metadata.map(text),
                payload: payload.map(text),
            }
        })
        .collect();
    SealedJson {
        description: golden::lines(&[
            "Format version 4 sealed records (spec 3.8) and the subject key file (spec 22).",
            "customer-1: Registered (subject ann, with metadata), Noted (no subject);",
            "customer-2: Registered (subject bob); then bob erased; then customer-2: Returned",
            "(subject bob again: a new key); customer-1: Moved (subject ann).",
            "Keys and nonces from a fixed seed (test hook); clock scripted; log id 00 01 .. 0f.",
            "Decrypted here with XChaCha20-Poly1305 from the spec's tables; erased: no key.",
        ]),
        keys: keys
            .iter()
            .map(|(id, k)| (*id, if k.is_some() { "live" } else { "erased" }.to_owned()))
            .collect(),
        events,
    }
}

fn vector_dir() -> PathBuf {
    static DONE: OnceLock<()> = OnceLock::new();
    let dir = golden::vectors_dir_of(4);
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
            let keys = fs::read(out.join(KEYS_FILE)).expect("keys");
            let text = serde_json::to_string_pretty(&describe(&seg, &keys)).expect("json") + "\n";
            fs::write(dir.join(format!("{NAME}.json")), text).expect("write JSON");
        }
    });
    dir
}

fn committed(file: &str) -> Vec<u8> {
    fs::read(vector_dir().join(NAME).join(file)).expect("read committed vector file")
}

fn committed_json() -> SealedJson {
    golden::load_json_from(&vector_dir(), &format!("{NAME}.json"))
}

// ============================================================ the tests

#[test]
fn writer_produces_the_sealed_v4_vector() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_log(tmp.path());
    for f in [SEGMENT_FILE, HEAD_FILE, KEYS_FILE] {
        assert_bytes_eq(
            &format!("writer's {f} vs v4/sealed"),
            &fs::read(tmp.path().join(f)).expect("read"),
            &committed(f),
        );
    }
}

#[test]
fn independent_reader_reads_the_committed_sealed_vector() {
    let json = committed_json();
    assert_eq!(describe(&committed(SEGMENT_FILE), &committed(KEYS_FILE)), json);
    // What the script appended, and what it erased.
    let script = script_events();
    assert_eq!(json.events.len(), script.len());
    for (e, (stream, t, p, m, subj, erased)) in json.events.iter().zip(&script) {
        assert_eq!((e.stream.as_str(), e.event_type.as_str()), (*stream, *t));
        assert_eq!(e.key_id.is_some(), subj.is_some(), "sealed iff it names a subject");
        assert_eq!(e.erased, *erased);
        if !erased {
            assert_eq!(e.payload.as_deref(), Some(*p));
            assert_eq!(e.metadata.as_deref(), Some(*m));
        }
    }
    assert_eq!(json.keys.values().filter(|k| *k == "erased").count(), 1);
    // No plaintext in any file of the log (only ciphertext was written).
    for (_, _, p, m, subj, _) in &script {
        for text in [p, m] {
            if subj.is_some() && !text.is_empty() {
                for f in [SEGMENT_FILE, HEAD_FILE, KEYS_FILE] {
                    let bytes = committed(f);
                    assert!(
                        !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
                        "{text} in {f}"
                    );
                }
            }
        }
    }
    // The erased entry forgets its subject (spec 22.3): `bob` is named only
    // by its new key's entry.
    assert_eq!(committed(KEYS_FILE).windows(3).filter(|w| *w == b"bob").count(), 1);
}

fn log_copy() -> tempfile::TempDir {
    golden::copy_dir(&vector_dir().join(NAME))
}

#[test]
fn annal_reads_the_sealed_vector_as_the_spec_says() {
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
            (r.position(), r.stream(), r.stream_version()),
            (e.position, e.stream.as_str(), e.version)
        );
        assert_eq!(r.event_type(), e.event_type);
        assert_eq!(u.subject_key().map(|k| k.0), e.key_id);
        assert_eq!(u.is_erased(), e.erased);
        if !e.erased {
            assert_eq!(Some(String::from_utf8_lossy(u.payload()).into_owned()), e.payload);
            assert_eq!(Some(String::from_utf8_lossy(u.metadata()).into_owned()), e.metadata);
        } else {
            assert!(u.payload().is_empty() && u.metadata().is_empty());
        }
    }
    // And through a writer reopening it.
    let log = Log::open(tmp.path()).expect("open");
    let v = log.view().expect("view");
    let erased: Vec<bool> = v
        .read_all(0)
        .map(|r| v.unseal(r.unwrap()).unwrap().is_erased())
        .collect();
    assert_eq!(erased, json.events.iter().map(|e| e.erased).collect::<Vec<_>>());
    log.close().expect("close");
    let report = annal::check(tmp.path(), annal::CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{report:?}");
}

/// Recompute the CRCs of the v3 frame holding file offset `at` (spec 3.6:
/// `body_crc` at +28 over the body, `header_crc` at +0 over [4, header_len)).
fn fix_frame_crcs(seg: &mut [u8], at: usize) {
    let walk = v3::walk_segment(&committed(SEGMENT_FILE), 0).expect("walk");
    let f = walk
        .frames
        .iter()
        .find(|f| (f.offset as usize..f.end() as usize).contains(&at))
        .expect("a frame holds the offset");
    let (off, end, hl) = (f.offset as usize, f.end() as usize, f.head.header_len());
    let body = crc(&seg[off + hl..end]);
    seg[off + 28..off + 32].copy_from_slice(&body.to_le_bytes());
    let header = crc(&seg[off + 4..off + hl]);
    seg[off..off + 4].copy_from_slice(&header.to_le_bytes());
}

#[test]
fn every_change_of_a_live_sealed_record_is_found_by_the_aead() {
    let json = committed_json();
    let seg = committed(SEGMENT_FILE);
    let walk = v3::walk_segment(&seg, 0).expect("walk");
    let mut tried = 0;
    for (e, r) in json.events.iter().zip(walk.events()) {
        if e.erased || e.key_id.is_none() {
            continue;
        }
        // The nonce and the sealed payload: from the nonce's first byte to
        // the record's end, less the payload_len varint.
        let nonce_at = (r.offset + r.len) as usize - r.payload.len() - 1 - 24;
        let payload_at = (r.offset + r.len) as usize - r.payload.len();
        for at in (nonce_at..nonce_at + 24).chain(payload_at..payload_at + r.payload.len()) {
            let tmp = log_copy();
            let mut bad = seg.clone();
            bad[at] ^= 0x01;
            fix_frame_crcs(&mut bad, at);
            fs::write(tmp.path().join(SEGMENT_FILE), &bad).expect("write");
            let reader = Reader::open(tmp.path()).expect("reader");
            let view = reader.view().expect("the frame is well formed: its CRCs were fixed");
            let rec = view.read_all(e.position).next().expect("the record").expect("parses");
            match view.unseal(rec) {
                Err(Error::Corrupt { path, offset, .. }) => {
                    assert_eq!(path.file_name().unwrap(), SEGMENT_FILE);
                    assert_eq!(offset as usize, payload_at, "the offset of the sealed payload");
                }
                other => panic!("byte {at} changed: {other:?}"),
            }
            tried += 1;
        }
    }
    assert!(tried > 100, "{tried} changes tried");
}
