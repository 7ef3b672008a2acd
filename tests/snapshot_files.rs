//! Snapshot files (`spec/format.md`, section 20): format, store, golden vector.
//!
//! The golden vectors `spec/vectors/v1/snapshot/` + `snapshot.json` (format
//! version 1) and `spec/vectors/v1/snapshot-v2/` + `snapshot-v2.json`
//! (format version 2: with subject keys) are
//! assembled here byte by byte from the table of spec 20.2 by the "spec
//! assembly" helpers below, which use neither annal's encoder nor its
//! constants (only `crc32fast` for the CRC and `annal::stream_hash`, itself
//! checked against `index.json`'s vector). The tests check that the committed
//! files equal the assembly, that annal's save writes the same bytes under the
//! same name, and the store's behaviour: round trips, pruning to the newest K,
//! streams whose files share a hash prefix, every single-byte change and every
//! truncation detected, schema mismatches and `max_version`.
//!
//! To (re)write the vector from the spec assembly instead of comparing:
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --test snapshot_files
//! ```

mod golden;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use annal::io::{Io, IoFile, StdIo};
use annal::snapshot_testing as st;
use annal::{Error, KeyId, Snapshot, stream_hash};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use golden::{crc, hex, put, regenerating, vectors_dir};

// ============================================================== the plan

/// The stream of the golden vector (its hash is in `index.json`).
const STREAM: &str = "order-42";
const STREAM_HASH: u64 = 0x7d1d_eb86_a056_62d4;
const STREAM_VERSION: u64 = 2;
const POSITION: u64 = 7;
const SCHEMA_VERSION: u32 = 3;

/// The aggregate state of the golden vector; its payload is the postcard
/// encoding of this value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderState {
    total: u32,
    items: Vec<String>,
}

fn golden_state() -> OrderState {
    OrderState {
        total: 300,
        items: vec!["A-7".to_owned()],
    }
}

/// postcard: `total` as a varint (300 = `ac 02`), then the vector's length
/// (`01`), then the string's length (`03`) and bytes (`A-7`).
const GOLDEN_PAYLOAD: [u8; 7] = [0xac, 0x02, 0x01, 0x03, b'A', b'-', b'7'];

// ======================================================= spec assembly
//
// Everything in this section follows the table of spec 20.2; the offsets are
// its `offset` column.

/// Spec 20.2: header (64 bytes), stream name, payload; the CRC at 60 covers
/// `[0, 60)` followed by `[64, end)`.
fn assemble(stream: &str, stream_version: u64, position: u64, schema_version: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    put(&mut f, 0, b"ANNALSNP"); // magic
    put(&mut f, 8, &1u16.to_le_bytes()); // format_version
    // 10 flags: zero
    put(&mut f, 12, &(stream.len() as u16).to_le_bytes()); // stream_len
    // 14 reserved0: zero
    put(&mut f, 16, &stream_version.to_le_bytes());
    put(&mut f, 24, &position.to_le_bytes());
    put(&mut f, 32, &schema_version.to_le_bytes());
    // 36 reserved1: zero
    put(&mut f, 40, &(payload.len() as u64).to_le_bytes()); // payload_len
    // 48 reserved2 (12 bytes): zero
    f.extend_from_slice(stream.as_bytes());
    f.extend_from_slice(payload);
    reseal(&mut f);
    f
}

/// Spec 20.2, format version 2: the version 1 layout with `format_version`
/// 2, `key_count` at 36 and the key ids (8 bytes each, little-endian) between
/// the stream name and the payload. With no keys: the version 1 file.
fn assemble_keyed(
    stream: &str,
    stream_version: u64,
    position: u64,
    schema_version: u32,
    keys: &[u64],
    payload: &[u8],
) -> Vec<u8> {
    if keys.is_empty() {
        return assemble(stream, stream_version, position, schema_version, payload);
    }
    let mut f = assemble(stream, stream_version, position, schema_version, b"");
    put(&mut f, 8, &2u16.to_le_bytes()); // format_version
    put(&mut f, 36, &(keys.len() as u32).to_le_bytes()); // key_count
    put(&mut f, 40, &(payload.len() as u64).to_le_bytes()); // payload_len
    for k in keys {
        f.extend_from_slice(&k.to_le_bytes());
    }
    f.extend_from_slice(payload);
    reseal(&mut f);
    f
}

/// Recompute the CRC of an assembled file (for files that must pass the CRC
/// and fail a later check).
fn reseal(f: &mut [u8]) {
    let mut covered = f[..60].to_vec();
    covered.extend_from_slice(&f[64..]);
    let c = crc(&covered);
    put(f, 60, &c.to_le_bytes());
}

/// Spec 20.1: `{hash:016x}-{position:020}.snap`.
fn spec_file_name(stream: &str, position: u64) -> String {
    format!("{:016x}-{position:020}.snap", stream_hash(stream.as_bytes()))
}

/// The offset at which spec 20.3 reports a change of the single byte at `i`
/// of a valid file.
fn flip_offset(i: usize) -> u64 {
    match i {
        0..8 => 0,
        8..10 => 8,
        12..14 | 40..48 => 12,
        _ => 60,
    }
}

/// The offset at which spec 20.3 reports a change of the single byte at `i`
/// of a valid version 2 file `good`, changed into `bad`: `format_version`
/// turned into 1 leaves a key list the version 1 lengths do not account for
/// (12); `key_count` turned into 0 is a version 2 header without keys (8).
fn flip_offset_v2(good: &[u8], bad: &[u8], i: usize) -> u64 {
    let u16_at = |f: &[u8], at: usize| u16::from_le_bytes([f[at], f[at + 1]]);
    let u32_at = |f: &[u8], at: usize| u32::from_le_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    assert_eq!(u16_at(good, 8), 2);
    match i {
        0..8 => 0,
        8..10 if u16_at(bad, 8) == 1 => 12,
        8..10 => 8,
        36..40 if u32_at(bad, 36) == 0 => 8,
        12..14 | 36..48 => 12,
        _ => 60,
    }
}

/// The offset at which spec 20.3 reports a valid file cut to `len` bytes
/// (or extended to it).
fn length_offset(len: usize) -> u64 {
    if len < 64 { 0 } else { 12 }
}

// ======================================================== the vector

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FieldJson {
    offset: u64,
    size: u64,
    field: String,
    value: Value,
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ErrorRuleJson {
    bytes: String,
    what: String,
    offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotJson {
    description: Vec<String>,
    snapshot_format_version: u16,
    file: String,
    file_name: FileNameJson,
    snapshot: SnapshotFieldsJson,
    length: u64,
    crc: String,
    fields: Vec<FieldJson>,
    bytes: String,
    single_byte_change_reported_at: Vec<ErrorRuleJson>,
    truncation_reported_at: Vec<ErrorRuleJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileNameJson {
    stream_hash: String,
    position: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotFieldsJson {
    stream: String,
    stream_version: u64,
    position: u64,
    schema_version: u32,
    payload: String,
    payload_postcard: OrderState,
    /// Format version 2 only: the subject key ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subject_keys: Vec<u64>,
}

struct Vector {
    /// Path of the snapshot file relative to the vector directory.
    file: String,
    bytes: Vec<u8>,
    json_text: String,
}

fn field(bytes: &[u8], offset: usize, size: usize, name: &str, value: Value) -> FieldJson {
    FieldJson {
        offset: offset as u64,
        size: size as u64,
        field: name.to_owned(),
        value,
        hex: hex(&bytes[offset..offset + size]),
    }
}

fn rule(bytes: &str, what: &str, offset: u64) -> ErrorRuleJson {
    ErrorRuleJson {
        bytes: bytes.to_owned(),
        what: what.to_owned(),
        offset,
    }
}

fn build_vector() -> Vector {
    let bytes = assemble(STREAM, STREAM_VERSION, POSITION, SCHEMA_VERSION, &GOLDEN_PAYLOAD);
    let name = spec_file_name(STREAM, POSITION);
    let file = format!("snapshots/{name}");
    let s_end = 64 + STREAM.len();
    let crc_value = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
    let json = SnapshotJson {
        description: [
            "One snapshot file (spec 20), as a save of stream order-42 writes it into <log>/snapshots/.",
            "The state is the postcard encoding of {total: 300 (u32), items: [\"A-7\"]}, saved with the \
             aggregate's snapshot schema version 3, at stream version 2, whose event has global position 7.",
            "The file name is the stream hash (FNV-1a 64 of the name, section 19) as 16 hex digits, '-', the \
             position as 20 digits, '.snap'.",
            "crc is CRC-32/ISO-HDLC of every byte of the file but the crc field: [0, 60) followed by [64, length).",
            "fields lists every byte range of the file in order; hex is the stored bytes, value their meaning \
             (integers little-endian).",
            "single_byte_change_reported_at and truncation_reported_at give the error offset of spec 20.3 for \
             any change of one byte, and for a file cut short or extended.",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        snapshot_format_version: 1,
        file: file.clone(),
        file_name: FileNameJson {
            stream_hash: format!("0x{STREAM_HASH:016x}"),
            position: POSITION,
            name,
        },
        snapshot: SnapshotFieldsJson {
            stream: STREAM.to_owned(),
            stream_version: STREAM_VERSION,
            position: POSITION,
            schema_version: SCHEMA_VERSION,
            payload: hex(&GOLDEN_PAYLOAD),
            payload_postcard: golden_state(),
            subject_keys: Vec::new(),
        },
        length: bytes.len() as u64,
        crc: format!("{crc_value:#010x}"),
        fields: vec![
            field(&bytes, 0, 8, "magic", json!("ANNALSNP")),
            field(&bytes, 8, 2, "format_version", json!(1)),
            field(&bytes, 10, 2, "flags", json!(0)),
            field(&bytes, 12, 2, "stream_len", json!(STREAM.len())),
            field(&bytes, 14, 2, "reserved0", json!(0)),
            field(&bytes, 16, 8, "stream_version", json!(STREAM_VERSION)),
            field(&bytes, 24, 8, "position", json!(POSITION)),
            field(&bytes, 32, 4, "schema_version", json!(SCHEMA_VERSION)),
            field(&bytes, 36, 4, "reserved1", json!(0)),
            field(&bytes, 40, 8, "payload_len", json!(GOLDEN_PAYLOAD.len())),
            field(&bytes, 48, 12, "reserved2", json!(0)),
            field(&bytes, 60, 4, "crc", json!(format!("{crc_value:#010x}"))),
            field(&bytes, 64, STREAM.len(), "stream name", json!(STREAM)),
            field(
                &bytes,
                s_end,
                GOLDEN_PAYLOAD.len(),
                "payload",
                json!(hex(&GOLDEN_PAYLOAD)),
            ),
        ],
        bytes: hex(&bytes),
        single_byte_change_reported_at: vec![
            rule("[0, 8)", "magic", 0),
            rule("[8, 10)", "format_version", 8),
            rule(
                "[12, 14), [40, 48)",
                "stream_len, payload_len: the lengths do not fill the file",
                12,
            ),
            rule("any other byte", "crc mismatch", 60),
        ],
        truncation_reported_at: vec![
            rule("fewer than 64 bytes", "no complete header", 0),
            rule(
                "64 bytes or more, other than the stated length",
                "the lengths do not fill the file",
                12,
            ),
        ],
    };
    let mut json_text = serde_json::to_string_pretty(&json).expect("serialize JSON");
    json_text.push('\n');
    Vector { file, bytes, json_text }
}

/// The spec-assembled vector; with `ANNAL_REGENERATE_VECTORS=1`, written to
/// `spec/vectors/v1/snapshot/` (once per test process, before any test reads it).
fn vector() -> &'static Vector {
    static V: OnceLock<Vector> = OnceLock::new();
    cached_vector(&V, "snapshot", build_vector)
}

/// `build`'s vector, kept in `cell`; with `ANNAL_REGENERATE_VECTORS=1`,
/// written to `spec/vectors/v1/<name>/` and `<name>.json` first.
fn cached_vector(cell: &'static OnceLock<Vector>, name: &str, build: fn() -> Vector) -> &'static Vector {
    cell.get_or_init(|| {
        let v = build();
        if regenerating() {
            let dir = vectors_dir().join(name);
            if dir.exists() {
                fs::remove_dir_all(&dir).expect("remove old vector directory");
            }
            let path = dir.join(&v.file);
            fs::create_dir_all(path.parent().expect("parent")).expect("create vector directory");
            fs::write(&path, &v.bytes).expect("write snapshot file");
            fs::write(vectors_dir().join(format!("{name}.json")), &v.json_text).expect("write JSON");
        }
        v
    })
}

// ==================================================== the vector, v2

/// The subject keys of the version 2 vector: the state folded sealed events
/// under keys 2 and 5.
const GOLDEN_KEYS: [u64; 2] = [2, 5];

fn build_vector_v2() -> Vector {
    let keys = GOLDEN_KEYS;
    let bytes = assemble_keyed(STREAM, STREAM_VERSION, POSITION, SCHEMA_VERSION, &keys, &GOLDEN_PAYLOAD);
    let name = spec_file_name(STREAM, POSITION);
    let file = format!("snapshots/{name}");
    let s_end = 64 + STREAM.len();
    let p_at = s_end + 8 * keys.len();
    let crc_value = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
    let mut fields = vec![
        field(&bytes, 0, 8, "magic", json!("ANNALSNP")),
        field(&bytes, 8, 2, "format_version", json!(2)),
        field(&bytes, 10, 2, "flags", json!(0)),
        field(&bytes, 12, 2, "stream_len", json!(STREAM.len())),
        field(&bytes, 14, 2, "reserved0", json!(0)),
        field(&bytes, 16, 8, "stream_version", json!(STREAM_VERSION)),
        field(&bytes, 24, 8, "position", json!(POSITION)),
        field(&bytes, 32, 4, "schema_version", json!(SCHEMA_VERSION)),
        field(&bytes, 36, 4, "key_count", json!(keys.len())),
        field(&bytes, 40, 8, "payload_len", json!(GOLDEN_PAYLOAD.len())),
        field(&bytes, 48, 12, "reserved2", json!(0)),
        field(&bytes, 60, 4, "crc", json!(format!("{crc_value:#010x}"))),
        field(&bytes, 64, STREAM.len(), "stream name", json!(STREAM)),
    ];
    for (i, k) in keys.iter().enumerate() {
        fields.push(field(
            &bytes,
            s_end + 8 * i,
            8,
            &format!("subject key {}", i + 1),
            json!(k),
        ));
    }
    fields.push(field(
        &bytes,
        p_at,
        GOLDEN_PAYLOAD.len(),
        "payload",
        json!(hex(&GOLDEN_PAYLOAD)),
    ));
    let json = SnapshotJson {
        description: [
            "One snapshot file of format version 2 (spec 20.2): the state of the version 1 vector (snapshot.json), \
             but folded from events sealed under subject keys 2 and 5, so the file names those keys.",
            "Version 2 is version 1 with format_version 2, key_count (at 36, reserved1 in version 1) and, between \
             the stream name and the payload, key_count key ids of 8 bytes, little-endian, strictly ascending, each \
             at least 1.",
            "The file name is the stream hash (FNV-1a 64 of the name, section 19) as 16 hex digits, '-', the \
             position as 20 digits, '.snap'.",
            "crc is CRC-32/ISO-HDLC of every byte of the file but the crc field: [0, 60) followed by [64, length).",
            "fields lists every byte range of the file in order; hex is the stored bytes, value their meaning \
             (integers little-endian).",
            "single_byte_change_reported_at and truncation_reported_at give the error offset of spec 20.3 for \
             any change of one byte, and for a file cut short or extended.",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        snapshot_format_version: 2,
        file: file.clone(),
        file_name: FileNameJson {
            stream_hash: format!("0x{STREAM_HASH:016x}"),
            position: POSITION,
            name,
        },
        snapshot: SnapshotFieldsJson {
            stream: STREAM.to_owned(),
            stream_version: STREAM_VERSION,
            position: POSITION,
            schema_version: SCHEMA_VERSION,
            payload: hex(&GOLDEN_PAYLOAD),
            payload_postcard: golden_state(),
            subject_keys: keys.to_vec(),
        },
        length: bytes.len() as u64,
        crc: format!("{crc_value:#010x}"),
        fields,
        bytes: hex(&bytes),
        single_byte_change_reported_at: vec![
            rule("[0, 8)", "magic", 0),
            rule(
                "[8, 10), to any value but 1",
                "format_version (another version, or version 2 with key_count 0)",
                8,
            ),
            rule(
                "[8, 10), to 1",
                "a version 1 file: its lengths do not account for the key list",
                12,
            ),
            rule("[36, 40), to 0", "a version 2 header without keys", 8),
            rule(
                "[12, 14), [36, 40) to any value but 0, [40, 48)",
                "stream_len, key_count, payload_len: the lengths do not fill the file",
                12,
            ),
            rule("any other byte (the key list included)", "crc mismatch", 60),
        ],
        truncation_reported_at: vec![
            rule("fewer than 64 bytes", "no complete header", 0),
            rule(
                "64 bytes or more, other than the stated length",
                "the lengths do not fill the file",
                12,
            ),
        ],
    };
    let mut json_text = serde_json::to_string_pretty(&json).expect("serialize JSON");
    json_text.push('\n');
    Vector { file, bytes, json_text }
}

/// The spec-assembled version 2 vector; with `ANNAL_REGENERATE_VECTORS=1`,
/// written to `spec/vectors/v1/snapshot-v2/` and `snapshot-v2.json`.
fn vector_v2() -> &'static Vector {
    static V: OnceLock<Vector> = OnceLock::new();
    cached_vector(&V, "snapshot-v2", build_vector_v2)
}

fn read_vector_file(rel: &str) -> Vec<u8> {
    vector();
    vector_v2();
    let path = vectors_dir().join(rel);
    fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (generate the vectors with ANNAL_REGENERATE_VECTORS=1)",
            path.display()
        )
    })
}

// ============================================================ helpers

fn snap(stream: &str, stream_version: u64, position: u64, schema_version: u32, payload: &[u8]) -> Snapshot {
    Snapshot {
        stream: stream.to_owned(),
        stream_version,
        position,
        schema_version,
        payload: payload.to_vec(),
        subject_keys: Vec::new(),
    }
}

fn keyed(s: Snapshot, keys: &[u64]) -> Snapshot {
    Snapshot {
        subject_keys: keys.iter().map(|&k| KeyId(k)).collect(),
        ..s
    }
}

fn golden_snapshot() -> Snapshot {
    snap(STREAM, STREAM_VERSION, POSITION, SCHEMA_VERSION, &GOLDEN_PAYLOAD)
}

fn std_io() -> Arc<dyn Io> {
    Arc::new(StdIo)
}

fn save(dir: &Path, s: &Snapshot, keep: usize) -> PathBuf {
    st::save(dir, std_io(), s, keep).unwrap_or_else(|e| panic!("save {s:?}: {e}"))
}

fn load(dir: &Path, stream: &str, schema: u32, max: Option<u64>) -> (Option<Snapshot>, Vec<String>) {
    st::load(dir, stream, schema, max).unwrap_or_else(|e| panic!("load {stream}: {e}"))
}

fn snap_dir(dir: &Path) -> PathBuf {
    dir.join(st::SNAPSHOT_DIR)
}

/// The names in `<dir>/snapshots/`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(snap_dir(dir))
        .expect("read snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn corrupt_offset(e: &Error) -> u64 {
    match e {
        Error::Corrupt { offset, .. } => *offset,
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, expected {} bytes; first difference at byte offset {first}",
        got.len(),
        want.len()
    );
}

// ================================================= golden vector tests

#[test]
fn stream_hash_is_the_one_of_index_json() {
    assert_eq!(stream_hash(STREAM.as_bytes()), STREAM_HASH);
    let index: Value =
        serde_json::from_str(&fs::read_to_string(vectors_dir().join("index.json")).expect("read index.json"))
            .expect("parse index.json");
    let row = index["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == STREAM)
        .expect("order-42 in index.json");
    assert_eq!(row["hash"], format!("0x{STREAM_HASH:016x}"));
}

#[test]
fn golden_payload_is_postcard() {
    assert_eq!(postcard::to_stdvec(&golden_state()).expect("postcard"), GOLDEN_PAYLOAD);
}

/// The committed vector is exactly what the spec table produces.
#[test]
fn committed_vector_equals_the_spec_assembly() {
    let v = vector();
    let dir = vectors_dir().join("snapshot");
    let names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .expect("read vector snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [spec_file_name(STREAM, POSITION)]);
    assert_eq!(
        fs::read_dir(&dir).expect("read vector dir").count(),
        1,
        "the vector holds only snapshots/"
    );
    assert_bytes_eq(&v.file, &read_vector_file(&format!("snapshot/{}", v.file)), &v.bytes);
    let committed: Value =
        serde_json::from_slice(&read_vector_file("snapshot.json")).expect("parse committed snapshot.json");
    let generated: Value = serde_json::from_str(&v.json_text).expect("parse generated JSON");
    assert_eq!(committed, generated, "snapshot.json differs from the spec assembly");
}

/// The JSON's field list tiles the file and its hex is the file.
#[test]
fn vector_json_is_consistent() {
    let j: SnapshotJson = serde_json::from_slice(&read_vector_file("snapshot.json")).expect("parse");
    let bytes = read_vector_file(&format!("snapshot/{}", j.file));
    assert_eq!(hex(&bytes), j.bytes);
    assert_eq!(bytes.len() as u64, j.length);
    let mut at = 0;
    for f in &j.fields {
        assert_eq!(f.offset, at, "field {} starts where the previous ended", f.field);
        assert_eq!(hex(&bytes[at as usize..(at + f.size) as usize]), f.hex);
        at += f.size;
    }
    assert_eq!(at, j.length);
    assert_eq!(
        j.file_name.name,
        format!("{:016x}-{:020}.snap", STREAM_HASH, j.snapshot.position)
    );
    assert_eq!(
        j.crc,
        format!(
            "{:#010x}",
            u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]])
        )
    );
}

/// annal's save writes the vector byte for byte, under the same name, and
/// decodes and loads it back.
#[test]
fn save_produces_the_golden_vector() {
    let v = vector();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = save(tmp.path(), &golden_snapshot(), 1);
    assert_eq!(path, tmp.path().join(&v.file));
    assert_bytes_eq("saved file", &fs::read(&path).expect("read saved"), &v.bytes);
    assert_eq!(st::encode(&golden_snapshot()).expect("encode"), v.bytes);
    assert_eq!(st::file_name(STREAM, POSITION), spec_file_name(STREAM, POSITION));

    // The committed file decodes to the planned snapshot, and loads from the
    // vector directory as it is.
    let committed = vectors_dir().join("snapshot").join(&v.file);
    let bytes = read_vector_file(&format!("snapshot/{}", v.file));
    assert_eq!(st::decode(&committed, &bytes).expect("decode"), golden_snapshot());
    let (got, warnings) = load(&vectors_dir().join("snapshot"), STREAM, SCHEMA_VERSION, None);
    assert!(warnings.is_empty(), "{warnings:?}");
    let got = got.expect("the vector's snapshot");
    assert_eq!(got, golden_snapshot());
    let state: OrderState = postcard::from_bytes(&got.payload).expect("postcard payload");
    assert_eq!(state, golden_state());
}

// ============================================================ store tests

#[test]
fn round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let cases = [
        snap("a", 0, 0, 0, b""),
        snap("order-1", 5, 17, 1, b"x"),
        snap("π-stream ✓", u64::MAX - 1, u64::MAX, u32::MAX, &big),
        snap(&"s".repeat(65_535), 3, 9, 2, b"long name"),
    ];
    for s in &cases {
        let path = save(tmp.path(), s, 3);
        assert_eq!(
            path.file_name().expect("name").to_string_lossy(),
            spec_file_name(&s.stream, s.position)
        );
        let bytes = fs::read(&path).expect("read");
        assert_eq!(
            bytes,
            assemble(&s.stream, s.stream_version, s.position, s.schema_version, &s.payload)
        );
        assert_eq!(st::decode(&path, &bytes).expect("decode"), *s);
        let (got, warnings) = load(tmp.path(), &s.stream, s.schema_version, None);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(got.as_ref(), Some(s));
    }
    // Saving the same snapshot again replaces the file with the same bytes.
    save(tmp.path(), &cases[1], 3);
    assert_eq!(load(tmp.path(), "order-1", 1, None).0.as_ref(), Some(&cases[1]));
    // No temp file is left behind.
    assert!(
        files(tmp.path()).iter().all(|n| n.ends_with(".snap")),
        "{:?}",
        files(tmp.path())
    );
}

#[test]
fn load_without_a_folder_or_snapshot_finds_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(load(tmp.path(), "order-1", 0, None), (None, vec![]));
    save(tmp.path(), &snap("order-1", 0, 0, 0, b"a"), 1);
    assert_eq!(load(tmp.path(), "order-2", 0, None), (None, vec![]));
}

#[test]
fn invalid_arguments_write_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (s, keep) in [
        (snap("order-1", 0, 0, 0, b""), 0),
        (snap("", 0, 0, 0, b""), 1),
        (snap(&"s".repeat(65_536), 0, 0, 0, b""), 1),
    ] {
        let e = st::save(tmp.path(), std_io(), &s, keep).expect_err("invalid");
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    }
    assert!(!snap_dir(tmp.path()).exists());
}

#[test]
fn keep_k_prunes_older_snapshots_of_the_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Another stream's snapshots are never touched by this stream's saves.
    save(dir, &snap("other", 0, 1, 0, b"o0"), 5);
    for v in 0..10u64 {
        save(dir, &snap("order-1", v, 10 * v + 2, 0, &v.to_le_bytes()), 3);
    }
    let mut want: Vec<String> = [72, 82, 92].iter().map(|&p| spec_file_name("order-1", p)).collect();
    want.push(spec_file_name("other", 1));
    want.sort();
    assert_eq!(files(dir), want);
    assert_eq!(load(dir, "order-1", 0, None).0.map(|s| s.stream_version), Some(9));
    assert_eq!(load(dir, "order-1", 0, Some(7)).0.map(|s| s.stream_version), Some(7));
    assert_eq!(load(dir, "order-1", 0, Some(6)), (None, vec![]));

    // Saving an older version than the newest K keeps the file just written.
    let p5 = save(dir, &snap("order-1", 5, 52, 0, b"v5"), 3);
    assert!(p5.exists());
    assert_eq!(load(dir, "order-1", 0, Some(6)).0.map(|s| s.stream_version), Some(5));
    // The next save prunes back to the newest 3.
    save(dir, &snap("order-1", 10, 102, 0, b"v10"), 3);
    let mut want: Vec<String> = [82, 92, 102].iter().map(|&p| spec_file_name("order-1", p)).collect();
    want.push(spec_file_name("other", 1));
    want.sort();
    assert_eq!(files(dir), want);
    // keep = 1 leaves only the newest.
    save(dir, &snap("order-1", 11, 112, 0, b"v11"), 1);
    let mut want = vec![spec_file_name("order-1", 112), spec_file_name("other", 1)];
    want.sort();
    assert_eq!(files(dir), want);
    assert_eq!(load(dir, "other", 0, None).0, Some(snap("other", 0, 1, 0, b"o0")));
}

/// Two streams whose files share a hash prefix: B's snapshot stored under A's
/// hash (what a true 64-bit collision would produce). Loads of A never return
/// B's state and do not report B's file; saves of A never remove it.
#[test]
fn streams_sharing_a_hash_never_mix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (a, b) = ("order-1", "order-2");
    assert_ne!(stream_hash(a.as_bytes()), stream_hash(b.as_bytes()));
    save(dir, &snap(a, 0, 0, 1, b"A0"), 5);
    save(dir, &snap(a, 1, 10, 1, b"A1"), 5);
    // B's snapshots at positions 20 and 40 (newer than every A snapshot),
    // one with A's schema version and one with another, under A's hash.
    let b_files = [
        (spec_file_name(a, 20), assemble(b, 0, 20, 1, b"B0")),
        (spec_file_name(a, 40), assemble(b, 1, 40, 9, b"B1")),
    ];
    for (name, bytes) in &b_files {
        fs::write(snap_dir(dir).join(name), bytes).expect("write B's file");
    }
    for max in [None, Some(1), Some(5)] {
        let (got, warnings) = load(dir, a, 1, max);
        assert_eq!(got, Some(snap(a, 1, 10, 1, b"A1")), "max {max:?}");
        assert!(warnings.is_empty(), "B's files are not A's to report: {warnings:?}");
    }
    assert_eq!(load(dir, a, 1, Some(0)).0, Some(snap(a, 0, 0, 1, b"A0")));
    // B's schema-9 state is never A's; only A's own files are reported.
    let (got, warnings) = load(dir, a, 9, None);
    assert_eq!((got, warnings.len()), (None, 2), "{warnings:?}");
    for (name, _) in &b_files {
        assert!(warnings.iter().all(|w| !w.contains(name.as_str())), "{warnings:?}");
    }
    // B's own loads look under B's hash, where nothing is.
    assert_eq!(load(dir, b, 1, None), (None, vec![]));

    // A save of A with keep 1 prunes A's older snapshots, never B's files,
    // even those older than the new snapshot.
    save(dir, &snap(a, 2, 50, 1, b"A2"), 1);
    let mut want = vec![spec_file_name(a, 20), spec_file_name(a, 40), spec_file_name(a, 50)];
    want.sort();
    assert_eq!(files(dir), want);
    for (name, bytes) in &b_files {
        assert_eq!(&fs::read(snap_dir(dir).join(name)).expect("B's file"), bytes);
    }
    assert_eq!(load(dir, a, 1, None).0, Some(snap(a, 2, 50, 1, b"A2")));
    assert_eq!(load(dir, a, 1, Some(1)), (None, vec![]));
}

#[test]
fn schema_mismatch_is_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    save(dir, &snap("order-1", 2, 20, 1, b"old schema"), 5);
    let newer = save(dir, &snap("order-1", 3, 30, 2, b"new schema"), 5);
    let (got, warnings) = load(dir, "order-1", 1, None);
    assert_eq!(got, Some(snap("order-1", 2, 20, 1, b"old schema")));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let name = newer.file_name().expect("name").to_string_lossy().into_owned();
    assert!(warnings[0].contains(&name), "{warnings:?}");
    assert!(warnings[0].contains("schema version 2"), "{warnings:?}");
    assert_eq!(
        load(dir, "order-1", 2, None),
        (Some(snap("order-1", 3, 30, 2, b"new schema")), vec![])
    );
    // Newer than max_version: skipped silently, no schema warning.
    assert_eq!(
        load(dir, "order-1", 1, Some(2)),
        (Some(snap("order-1", 2, 20, 1, b"old schema")), vec![])
    );
    let (got, warnings) = load(dir, "order-1", 7, None);
    assert_eq!((got, warnings.len()), (None, 2));
}

#[test]
fn max_version_is_respected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for (v, p) in [(0, 3), (4, 11), (9, 30)] {
        save(dir, &snap("s-1", v, p, 0, &[v as u8]), 10);
    }
    for (max, want) in [
        (None, Some(9)),
        (Some(u64::MAX), Some(9)),
        (Some(9), Some(9)),
        (Some(8), Some(4)),
        (Some(4), Some(4)),
        (Some(3), Some(0)),
        (Some(0), Some(0)),
    ] {
        let (got, warnings) = load(dir, "s-1", 0, max);
        assert_eq!(got.map(|s| s.stream_version), want, "max {max:?}");
        assert!(warnings.is_empty());
    }
}

// ============================================================ damage

/// A log directory holding the golden snapshot (newest) and an older valid
/// snapshot of the same stream.
fn dir_with_older(newest: &[u8]) -> (tempfile::TempDir, PathBuf, Snapshot) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let older = snap(STREAM, 1, 4, SCHEMA_VERSION, b"older");
    save(tmp.path(), &older, 5);
    let path = snap_dir(tmp.path()).join(spec_file_name(STREAM, POSITION));
    fs::write(&path, newest).expect("write newest");
    (tmp, path, older)
}

/// Every change of a single byte (three masks per byte) is detected: decode
/// reports it at the offset of spec 20.3, load skips the file with a warning
/// naming it and returns the older snapshot.
#[test]
fn every_single_byte_change_is_detected() {
    let good = vector().bytes.clone();
    let path = PathBuf::from("snapshots").join(spec_file_name(STREAM, POSITION));
    let name = spec_file_name(STREAM, POSITION);
    let (tmp, on_disk, older) = dir_with_older(&good);
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            let e = st::decode(&path, &bad).expect_err("a changed byte must be detected");
            assert_eq!(corrupt_offset(&e), flip_offset(i), "byte {i} ^ {mask:#04x}: {e}");
            if mask == 0x01 {
                fs::write(&on_disk, &bad).expect("write damaged");
                let (got, warnings) = load(tmp.path(), STREAM, SCHEMA_VERSION, None);
                assert_eq!(got.as_ref(), Some(&older), "byte {i}");
                assert_eq!(warnings.len(), 1, "byte {i}: {warnings:?}");
                assert!(warnings[0].contains(&name), "{warnings:?}");
                assert!(
                    warnings[0].contains(&format!("byte offset {}", flip_offset(i))),
                    "{warnings:?}"
                );
            }
        }
    }
}

#[test]
fn truncation_and_extension_are_detected() {
    let good = vector().bytes.clone();
    let path = PathBuf::from(spec_file_name(STREAM, POSITION));
    let (tmp, on_disk, older) = dir_with_older(&good);
    let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for extra in [&[0u8][..], &[0; 8], b"garbage"] {
        let mut longer = good.clone();
        longer.extend_from_slice(extra);
        cases.push(longer);
    }
    for bad in cases {
        let e = st::decode(&path, &bad).expect_err("a wrong length must be detected");
        assert_eq!(
            corrupt_offset(&e),
            length_offset(bad.len()),
            "length {}: {e}",
            bad.len()
        );
        fs::write(&on_disk, &bad).expect("write damaged");
        let (got, warnings) = load(tmp.path(), STREAM, SCHEMA_VERSION, None);
        assert_eq!(got.as_ref(), Some(&older), "length {}", bad.len());
        assert_eq!(warnings.len(), 1, "length {}: {warnings:?}", bad.len());
    }
}

/// Files that pass the CRC but break a later check of spec 20.3.
#[test]
fn checks_after_the_crc() {
    let good = vector().bytes.clone();
    let name = PathBuf::from(spec_file_name(STREAM, POSITION));
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("flags", with(&good, 10, &[1]), 10),
        ("reserved0", with(&good, 15, &[0x80]), 14),
        ("reserved1", with(&good, 36, &[1]), 36),
        ("reserved2", with(&good, 59, &[1]), 48),
        ("invalid UTF-8", with(&good, 64 + 3, &[0xff]), 64 + 3),
        ("stream_len 0", assemble_raw("", &[]), 12),
        (
            "position differs from the file name",
            assemble(STREAM, STREAM_VERSION, 8, SCHEMA_VERSION, b""),
            24,
        ),
    ];
    for (what, bytes, offset) in cases {
        let e = st::decode(&name, &bytes).expect_err(what);
        assert_eq!(corrupt_offset(&e), offset, "{what}: {e}");
    }
    // The position check applies only to snapshot file names.
    let other = assemble(STREAM, STREAM_VERSION, 8, SCHEMA_VERSION, b"");
    assert_eq!(st::decode(Path::new("fuzz-input"), &other).expect("decode").position, 8);

    /// `good` with `bytes` at `at`, CRC recomputed.
    fn with(good: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut f = good.to_vec();
        put(&mut f, at, bytes);
        reseal(&mut f);
        f
    }
    /// A file whose stream name is `stream` (even empty).
    fn assemble_raw(stream: &str, payload: &[u8]) -> Vec<u8> {
        let mut f = assemble("x", 0, POSITION, 0, payload);
        f.remove(64);
        put(&mut f, 12, &(stream.len() as u16).to_le_bytes());
        reseal(&mut f);
        f
    }
}

/// Lengths claiming more than the file holds are rejected before any
/// allocation; a newer format version is skipped (and never pruned).
#[test]
fn huge_lengths_and_newer_versions() {
    let mut f = vector().bytes.clone();
    f[40..48].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    reseal(&mut f);
    let e = st::decode(Path::new("x"), &f).expect_err("huge payload_len");
    assert_eq!(corrupt_offset(&e), 12);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    save(dir, &snap(STREAM, 0, 1, SCHEMA_VERSION, b"v0"), 5);
    let huge = snap_dir(dir).join(spec_file_name(STREAM, 5));
    fs::write(&huge, &f).expect("write");
    let mut v3 = vector().bytes.clone();
    v3[8] = 3;
    reseal(&mut v3);
    let newer = snap_dir(dir).join(spec_file_name(STREAM, 3));
    fs::write(&newer, &v3).expect("write");
    let e = st::decode(&newer, &v3).expect_err("version 3");
    assert_eq!(corrupt_offset(&e), 8);
    let (got, warnings) = load(dir, STREAM, SCHEMA_VERSION, None);
    assert_eq!(got.map(|s| s.position), Some(1));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("version 3")), "{warnings:?}");

    // A save prunes the damaged file but keeps the newer-version one.
    save(dir, &snap(STREAM, 9, 90, SCHEMA_VERSION, b"v9"), 1);
    let mut want = vec![spec_file_name(STREAM, 3), spec_file_name(STREAM, 90)];
    want.sort();
    assert_eq!(files(dir), want);
}

/// Names that are not snapshot file names are ignored; a directory with a
/// snapshot name is reported as unreadable; leftover temp files of the
/// stream's hash are removed by its next save.
#[test]
fn other_entries_in_the_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    save(dir, &snap(STREAM, 0, 1, 0, b"v0"), 5);
    let sd = snap_dir(dir);
    let leftover = format!("{}.tmp", spec_file_name(STREAM, 2));
    let other_leftover = format!("{}.tmp", spec_file_name("zzz", 2));
    for junk in [
        "README",
        leftover.as_str(),
        other_leftover.as_str(),
        &format!("{STREAM_HASH:016X}-00000000000000000003.snap"),
        &format!("{STREAM_HASH:016x}-3.snap"),
    ] {
        fs::write(sd.join(junk), vector().bytes.as_slice()).expect("write junk");
    }
    fs::create_dir(sd.join(spec_file_name(STREAM, 4))).expect("mkdir");
    let (got, warnings) = load(dir, STREAM, 0, None);
    assert_eq!(got.map(|s| s.position), Some(1));
    assert_eq!(
        warnings.len(),
        1,
        "only the directory named like a snapshot: {warnings:?}"
    );
    assert!(warnings[0].contains(&spec_file_name(STREAM, 4)), "{warnings:?}");

    save(dir, &snap(STREAM, 1, 5, 0, b"v1"), 5);
    let names = files(dir);
    assert!(!names.contains(&leftover), "{names:?}");
    assert!(
        names.contains(&other_leftover),
        "another hash's temp file stays: {names:?}"
    );
    assert!(
        names.contains(&spec_file_name(STREAM, 4)),
        "unreadable entries are left alone"
    );
}

// ======================================================== the I/O seam

/// [`StdIo`] that records every call, and can fail renames.
#[derive(Debug, Default)]
struct RecordingIo {
    log: Arc<Mutex<Vec<String>>>,
    fail_rename: AtomicBool,
}

#[derive(Debug)]
struct RecordingFile {
    inner: Box<dyn IoFile>,
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// `path` relative to the log directory `base`.
fn rel(base: &Path, path: &Path) -> String {
    let r = path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned();
    if r.is_empty() { ".".to_owned() } else { r }
}

impl RecordingIo {
    fn push(&self, s: String) {
        self.log.lock().expect("log").push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

/// A recording seam whose paths are shown relative to `base`.
#[derive(Debug)]
struct Seam {
    base: PathBuf,
    rec: RecordingIo,
}

impl Io for Seam {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let name = rel(&self.base, path);
        self.rec.push(format!("create {name}"));
        Ok(Box::new(RecordingFile {
            inner: StdIo.create(path)?,
            name,
            log: self.rec.log.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        let name = rel(&self.base, path);
        self.rec.push(format!("open {name}"));
        Ok(Box::new(RecordingFile {
            inner: StdIo.open(path)?,
            name,
            log: self.rec.log.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rec
            .push(format!("rename {} {}", rel(&self.base, from), rel(&self.base, to)));
        if self.rec.fail_rename.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected rename failure"));
        }
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.rec.push(format!("remove {}", rel(&self.base, path)));
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.rec.push(format!("sync_dir {}", rel(&self.base, dir)));
        StdIo.sync_dir(dir)
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.rec.push(format!("create_dir {}", rel(&self.base, dir)));
        fs::create_dir_all(dir)
    }
}

impl IoFile for RecordingFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.log
            .lock()
            .expect("log")
            .push(format!("write {} {offset} {}", self.name, buf.len()));
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.log.lock().expect("log").push(format!("sync {}", self.name));
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.log
            .lock()
            .expect("log")
            .push(format!("truncate {} {len}", self.name));
        self.inner.truncate(len)
    }
}

/// A save creates the folder and fsyncs the log directory, then writes a temp
/// file, fsyncs it, renames it and fsyncs the folder, all through the seam;
/// pruning removes through the seam. A failed rename leaves no snapshot, and
/// the next save removes the leftover temp file.
#[test]
fn saves_go_through_the_seam_atomically() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let seam = Arc::new(Seam {
        base: dir.to_owned(),
        rec: RecordingIo::default(),
    });
    let io: Arc<dyn Io> = seam.clone();
    let name = spec_file_name(STREAM, POSITION);
    let len = vector().bytes.len();
    st::save(dir, io.clone(), &golden_snapshot(), 1).expect("save");
    assert_eq!(
        seam.rec.take(),
        [
            "create_dir snapshots".to_owned(),
            "sync_dir .".to_owned(),
            format!("remove snapshots/{name}.tmp"),
            format!("create snapshots/{name}.tmp"),
            format!("write snapshots/{name}.tmp 0 {len}"),
            format!("sync snapshots/{name}.tmp"),
            format!("rename snapshots/{name}.tmp snapshots/{name}"),
            "sync_dir snapshots".to_owned(),
        ]
    );

    // A newer save whose rename fails: an error, no new snapshot, the old one
    // kept, a temp file left (ignored by loads).
    seam.rec.fail_rename.store(true, Ordering::SeqCst);
    let newer = snap(STREAM, 3, 8, SCHEMA_VERSION, b"newer");
    let e = st::save(dir, io.clone(), &newer, 1).expect_err("rename fails");
    assert!(matches!(e, Error::Io { op: "rename", .. }), "{e:?}");
    let newer_name = spec_file_name(STREAM, 8);
    assert_eq!(files(dir), [name.clone(), format!("{newer_name}.tmp")]);
    assert_eq!(
        load(dir, STREAM, SCHEMA_VERSION, None),
        (Some(golden_snapshot()), vec![])
    );
    seam.rec.take();

    // The next save of the stream removes the leftover and prunes through the seam.
    seam.rec.fail_rename.store(false, Ordering::SeqCst);
    let newest = snap(STREAM, 4, 9, SCHEMA_VERSION, b"newest");
    st::save(dir, io, &newest, 1).expect("save");
    let calls = seam.rec.take();
    assert!(
        calls.contains(&format!("remove snapshots/{newer_name}.tmp")),
        "{calls:?}"
    );
    assert!(calls.contains(&format!("remove snapshots/{name}")), "{calls:?}");
    assert_eq!(files(dir), [spec_file_name(STREAM, 9)]);
    assert_eq!(load(dir, STREAM, SCHEMA_VERSION, None), (Some(newest), vec![]));
}

/// Concurrent saves of several streams (two threads per stream) and loads:
/// every load returns a whole snapshot of its own stream, and at the end each
/// stream keeps exactly its newest K.
#[test]
fn concurrent_saves_and_loads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let streams = ["c-1", "c-2", "c-3"];
    std::thread::scope(|s| {
        for (k, stream) in streams.iter().enumerate() {
            for half in 0..2u64 {
                let dir = dir.clone();
                s.spawn(move || {
                    for v in (half..40).step_by(2) {
                        let payload = format!("{stream}:{v}").into_bytes();
                        save(&dir, &snap(stream, v, v * 10 + k as u64, 0, &payload), 2);
                    }
                });
            }
            let dir = dir.clone();
            s.spawn(move || {
                for _ in 0..40 {
                    let (got, warnings) = load(&dir, stream, 0, None);
                    assert!(warnings.is_empty(), "{warnings:?}");
                    if let Some(g) = got {
                        assert_eq!(g.stream, *stream);
                        assert_eq!(g.payload, format!("{stream}:{}", g.stream_version).into_bytes());
                    }
                }
            });
        }
    });
    for (k, stream) in streams.iter().enumerate() {
        let (got, _) = load(&dir, stream, 0, None);
        assert_eq!(got.map(|g| g.stream_version), Some(39));
        let n = files(&dir)
            .iter()
            .filter(|f| f.starts_with(&format!("{:016x}-", stream_hash(stream.as_bytes()))))
            .count();
        assert_eq!(n, 2, "stream {k} keeps its newest 2");
    }
}

// ============================================================ fuzzing

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// decode never panics on arbitrary bytes.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = st::decode(Path::new("fuzz"), &bytes);
    }

    /// Arbitrary snapshots round-trip through encode/decode and match the
    /// spec assembly; any changed byte is reported.
    #[test]
    fn encode_decode_round_trip(
        stream in "[a-z0-9-]{1,40}|\\PC{1,10}",
        version in any::<u64>(),
        position in any::<u64>(),
        schema in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        keys in proptest::collection::btree_set(1u64.., 0..5),
    ) {
        let keys: Vec<u64> = keys.into_iter().collect();
        let s = keyed(snap(&stream, version, position, schema, &payload), &keys);
        let bytes = st::encode(&s).expect("encode");
        prop_assert_eq!(&bytes, &assemble_keyed(&stream, version, position, schema, &keys, &payload));
        let path = PathBuf::from(spec_file_name(&stream, position));
        prop_assert_eq!(st::decode(&path, &bytes).expect("decode"), s);
        let i = flip.index(bytes.len());
        let mut bad = bytes.clone();
        bad[i] ^= mask;
        let e = st::decode(&path, &bad).expect_err("changed byte");
        let want = if keys.is_empty() { flip_offset(i) } else { flip_offset_v2(&bytes, &bad, i) };
        prop_assert_eq!(corrupt_offset(&e), want);
    }

    /// Files with a valid CRC but arbitrary header fields never panic and are
    /// either rejected or decode to exactly what they state.
    #[test]
    fn resealed_headers_never_panic(
        header in proptest::collection::vec(any::<u8>(), 64),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        version in 1u16..=2,
    ) {
        let mut f = header;
        f[..8].copy_from_slice(b"ANNALSNP");
        f[8..10].copy_from_slice(&version.to_le_bytes());
        f.extend_from_slice(&tail);
        reseal(&mut f);
        if let Ok(s) = st::decode(Path::new("fuzz"), &f) {
            prop_assert_eq!(st::encode(&s).expect("encode"), f);
        }
    }
}

// ============================================== format version 2: keys

fn golden_keyed() -> Snapshot {
    keyed(golden_snapshot(), &GOLDEN_KEYS)
}

/// The committed version 2 vector is exactly what the spec table produces.
#[test]
fn committed_v2_vector_equals_the_spec_assembly() {
    let v = vector_v2();
    let dir = vectors_dir().join("snapshot-v2");
    let names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .expect("read vector snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [spec_file_name(STREAM, POSITION)]);
    assert_eq!(fs::read_dir(&dir).expect("read vector dir").count(), 1);
    assert_bytes_eq(&v.file, &read_vector_file(&format!("snapshot-v2/{}", v.file)), &v.bytes);
    let committed: Value =
        serde_json::from_slice(&read_vector_file("snapshot-v2.json")).expect("parse committed snapshot-v2.json");
    let generated: Value = serde_json::from_str(&v.json_text).expect("parse generated JSON");
    assert_eq!(committed, generated, "snapshot-v2.json differs from the spec assembly");
}

/// The version 2 JSON's field list tiles the file; its key list and payload
/// are where the spec puts them; version 1 and 2 differ only in the
/// version, key_count, the key list and the CRC.
#[test]
fn v2_vector_json_is_consistent() {
    let j: SnapshotJson = serde_json::from_slice(&read_vector_file("snapshot-v2.json")).expect("parse");
    let bytes = read_vector_file(&format!("snapshot-v2/{}", j.file));
    assert_eq!(hex(&bytes), j.bytes);
    assert_eq!(bytes.len() as u64, j.length);
    assert_eq!(j.length, 64 + STREAM.len() as u64 + 8 * 2 + GOLDEN_PAYLOAD.len() as u64);
    let mut at = 0;
    for f in &j.fields {
        assert_eq!(f.offset, at, "field {} starts where the previous ended", f.field);
        assert_eq!(hex(&bytes[at as usize..(at + f.size) as usize]), f.hex);
        at += f.size;
    }
    assert_eq!(at, j.length);
    assert_eq!(j.snapshot.subject_keys, GOLDEN_KEYS);
    let v1 = vector().bytes.clone();
    let mut as_v1 = bytes.clone();
    as_v1.drain(72..88);
    put(&mut as_v1, 8, &1u16.to_le_bytes());
    put(&mut as_v1, 36, &[0; 4]);
    reseal(&mut as_v1);
    assert_eq!(as_v1, v1);
}

/// annal writes the version 2 vector byte for byte for a snapshot with
/// keys, and reads it back with its keys; the version 1 vector stays what a
/// snapshot without keys writes.
#[test]
fn save_produces_the_v2_vector() {
    let v = vector_v2();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = save(tmp.path(), &golden_keyed(), 1);
    assert_eq!(path, tmp.path().join(&v.file));
    assert_bytes_eq("saved file", &fs::read(&path).expect("read saved"), &v.bytes);
    assert_eq!(st::encode(&golden_keyed()).expect("encode"), v.bytes);
    assert_eq!(st::encode(&golden_snapshot()).expect("encode"), vector().bytes);
    let committed = vectors_dir().join("snapshot-v2").join(&v.file);
    assert_eq!(st::decode(&committed, &v.bytes).expect("decode"), golden_keyed());
    let (got, warnings) = load(&vectors_dir().join("snapshot-v2"), STREAM, SCHEMA_VERSION, None);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(got, Some(golden_keyed()));
    // Keys that are not strictly ascending ids of at least 1 are refused.
    for bad in [&[0u64][..], &[3, 3], &[5, 2]] {
        let e = st::save(tmp.path(), std_io(), &keyed(golden_snapshot(), bad), 1).expect_err("bad keys");
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e:?}");
    }
}

/// Every change of a single byte of the version 2 vector (every mask) is
/// detected at the offset of spec 20.3; a load skips the file with a
/// warning and returns the older snapshot.
#[test]
fn v2_every_single_byte_change_is_detected() {
    let good = vector_v2().bytes.clone();
    let path = PathBuf::from("snapshots").join(spec_file_name(STREAM, POSITION));
    let name = spec_file_name(STREAM, POSITION);
    let (tmp, on_disk, older) = dir_with_older(&good);
    assert_eq!(load(tmp.path(), STREAM, SCHEMA_VERSION, None).0, Some(golden_keyed()));
    for i in 0..good.len() {
        for mask in 1..=255u8 {
            let mut bad = good.clone();
            bad[i] ^= mask;
            let e = st::decode(&path, &bad).expect_err("a changed byte must be detected");
            let want = flip_offset_v2(&good, &bad, i);
            assert_eq!(corrupt_offset(&e), want, "byte {i} ^ {mask:#04x}: {e}");
            if mask == 0x01 {
                fs::write(&on_disk, &bad).expect("write damaged");
                let (got, warnings) = load(tmp.path(), STREAM, SCHEMA_VERSION, None);
                assert_eq!(got.as_ref(), Some(&older), "byte {i}");
                assert_eq!(warnings.len(), 1, "byte {i}: {warnings:?}");
                assert!(warnings[0].contains(&name), "{warnings:?}");
                assert!(warnings[0].contains(&format!("byte offset {want}")), "{warnings:?}");
            }
        }
    }
}

#[test]
fn v2_truncation_and_extension_are_detected() {
    let good = vector_v2().bytes.clone();
    let path = PathBuf::from(spec_file_name(STREAM, POSITION));
    let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for extra in [&[0u8][..], &[0; 8], b"garbage"] {
        let mut longer = good.clone();
        longer.extend_from_slice(extra);
        cases.push(longer);
    }
    for bad in cases {
        let e = st::decode(&path, &bad).expect_err("a wrong length must be detected");
        assert_eq!(
            corrupt_offset(&e),
            length_offset(bad.len()),
            "length {}: {e}",
            bad.len()
        );
    }
}

/// Version 2 files that pass the CRC but break a later check: key ids of
/// 0, or not strictly ascending (at the offset of the offending id); the
/// field at 36 is `key_count`, not a reserved field.
#[test]
fn v2_checks_after_the_crc() {
    let name = PathBuf::from(spec_file_name(STREAM, POSITION));
    let file = |keys: &[u64]| assemble_keyed(STREAM, STREAM_VERSION, POSITION, SCHEMA_VERSION, keys, b"p");
    for (keys, offset) in [
        (&[0u64][..], 72),
        (&[0, 4], 72),
        (&[4, 4], 80),
        (&[5, 2], 80),
        (&[1, 2, 2], 88),
    ] {
        let e = st::decode(&name, &file(keys)).expect_err("bad key list");
        assert_eq!(corrupt_offset(&e), offset, "{keys:?}: {e}");
    }
    for keys in [&[1u64][..], &[1, 2, u64::MAX]] {
        let got = st::decode(&name, &file(keys)).expect("decode");
        assert_eq!(got.subject_keys, keys.iter().map(|&k| KeyId(k)).collect::<Vec<_>>());
    }
    let mut flags = file(&[1]);
    put(&mut flags, 10, &[1]);
    reseal(&mut flags);
    assert_eq!(corrupt_offset(&st::decode(&name, &flags).expect_err("flags")), 10);
    // A version 2 header without keys, even with lengths that fit.
    let mut empty = file(&[]);
    put(&mut empty, 8, &[2]);
    reseal(&mut empty);
    assert_eq!(corrupt_offset(&st::decode(&name, &empty).expect_err("key_count 0")), 8);
}

/// A load skips a snapshot that names an erased key, with a warning naming
/// the file and the key ("superseded by the erasure of key K"), and uses the
/// next one.
#[test]
fn loads_skip_snapshots_naming_an_erased_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let plain = snap(STREAM, 1, 4, SCHEMA_VERSION, b"older");
    save(dir, &plain, 5);
    let newer = save(dir, &golden_keyed(), 5);
    let load_e = |erased: &[u64]| {
        let erased: Vec<KeyId> = erased.iter().map(|&k| KeyId(k)).collect();
        st::load_erased(dir, STREAM, SCHEMA_VERSION, &erased).expect("load")
    };
    assert_eq!(load_e(&[]), (Some(golden_keyed()), vec![]));
    assert_eq!(load_e(&[1, 3, 4]), (Some(golden_keyed()), vec![]));
    let (got, warnings) = load_e(&[5]);
    assert_eq!(got, Some(plain));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let file = newer.file_name().expect("name").to_string_lossy().into_owned();
    assert!(warnings[0].contains(&file), "{warnings:?}");
    assert!(
        warnings[0].contains("superseded by the erasure of key 5"),
        "{warnings:?}"
    );
}

/// After an erasure, every snapshot file naming an erased key goes (read
/// from its header and key list), with damaged version 2 files and leftover
/// temp files, through the seam, then the folder is fsynced; version 1
/// files, files naming only live keys, newer versions and other names stay.
#[test]
fn remove_erased_takes_what_names_an_erased_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let v1 = save(dir, &snap(STREAM, 0, 1, 0, b"plain"), 9);
    let named = save(dir, &keyed(snap(STREAM, 1, 2, 0, b"ann's"), &[2, 5]), 9);
    let live = save(dir, &keyed(snap("other-1", 0, 3, 0, b"bob's"), &[3]), 9);
    let sd = snap_dir(dir);
    let damaged = sd.join(spec_file_name(STREAM, 4));
    let mut cut = assemble_keyed(STREAM, 3, 4, 0, &[3], b"cut short");
    cut.truncate(cut.len() - 2);
    fs::write(&damaged, &cut).expect("write");
    let newer_version = sd.join(spec_file_name(STREAM, 5));
    let mut v3 = assemble_keyed(STREAM, 4, 5, 0, &[5], b"v3");
    put(&mut v3, 8, &3u16.to_le_bytes());
    reseal(&mut v3);
    fs::write(&newer_version, &v3).expect("write");
    let temp = sd.join(format!("{}.tmp", spec_file_name("other-1", 6)));
    fs::write(&temp, b"a save cut short").expect("write");
    let readme = sd.join("README");
    fs::write(&readme, b"not ours").expect("write");

    let seam = Arc::new(Seam {
        base: dir.to_owned(),
        rec: RecordingIo::default(),
    });
    let mut removed = st::remove_erased(dir, seam.clone(), &[KeyId(5)]).expect("remove");
    removed.sort();
    let mut want = vec![named, damaged, temp];
    want.sort();
    assert_eq!(removed, want);
    let calls = seam.rec.take();
    assert_eq!(calls.len(), 4, "{calls:?}");
    for p in &want {
        assert!(calls.contains(&format!("remove {}", rel(dir, p))), "{calls:?}");
    }
    assert_eq!(calls.last().map(String::as_str), Some("sync_dir snapshots"));
    for p in [&v1, &live, &newer_version, &readme] {
        assert!(p.exists(), "{} stays", p.display());
    }
    // Nothing more to remove: nothing removed, no fsync.
    assert_eq!(
        st::remove_erased(dir, seam.clone(), &[KeyId(5)]).expect("again"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(seam.rec.take(), Vec::<String>::new());
    // A missing folder has nothing to remove.
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(
        st::remove_erased(empty.path(), std_io(), &[KeyId(1)])
            .expect("none")
            .is_empty()
    );
}

/// A save whose key is erased before it writes writes nothing; one whose
/// key is erased while it writes removes its file again (and fsyncs the
/// folder), and prunes nothing.
#[test]
fn saves_of_erased_keys_are_not_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let older = keyed(snap(STREAM, 1, 4, SCHEMA_VERSION, b"older"), &[1]);
    save(dir, &older, 1);
    let seam = Arc::new(Seam {
        base: dir.to_owned(),
        rec: RecordingIo::default(),
    });
    let always = |k: KeyId| k == KeyId(5);
    let got = st::save_with(dir, seam.clone(), &golden_keyed(), 1, &always).expect("save");
    assert_eq!(got, None);
    assert_eq!(seam.rec.take(), Vec::<String>::new(), "nothing written");
    // Erased between the write and the check after it.
    let asked = AtomicBool::new(false);
    let later = |k: KeyId| k == KeyId(5) && asked.swap(true, Ordering::SeqCst);
    let got = st::save_with(dir, seam.clone(), &golden_keyed(), 1, &later).expect("save");
    assert_eq!(got, None);
    let name = spec_file_name(STREAM, POSITION);
    let calls = seam.rec.take();
    assert!(
        calls.contains(&format!("rename snapshots/{name}.tmp snapshots/{name}")),
        "{calls:?}"
    );
    let tail: Vec<String> = calls[calls.len() - 2..].to_vec();
    assert_eq!(
        tail,
        [format!("remove snapshots/{name}"), "sync_dir snapshots".to_owned()]
    );
    assert_eq!(files(dir), [spec_file_name(STREAM, 4)], "the older one is not pruned");
    assert_eq!(load(dir, STREAM, SCHEMA_VERSION, None).0, Some(older));
}
