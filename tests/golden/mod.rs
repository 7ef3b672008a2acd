//! Helpers shared by the golden-vector tests (`tests/golden_vectors.rs`,
//! `tests/golden_index_vectors.rs` and `tests/snapshot_files.rs`): the spec
//! table assemblers of segments, records, frames and head files, the vector
//! directory and a few comparison and I/O helpers.
//!
//! Not every test uses every helper.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annal::{EventData, RecordRef, Uuid};
use serde::{Deserialize, Serialize};

// ============================================================== the plan

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub event_type: &'static str,
    pub payload: &'static str,
    pub metadata: &'static str,
    pub id: [u8; 16],
    pub schema_version: u32,
}

/// The 16 bytes `first, first + 1, ..., first + 15`.
pub const fn id_from(first: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        b[i] = first + i as u8;
        i += 1;
    }
    b
}

// ======================================================= spec assembly
//
// Everything in this section follows the byte tables of spec/format.md; the
// offsets are the `offset` column of the tables.

pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// The log format a vector is written in: version 1 (no chain), or version 2
/// with the audit chain, plain or keyed (spec 2.1, 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub version: u16,
    /// The log carries the chain (`log_flags` bit 0).
    pub chain: bool,
    /// The secret key of a keyed chain (`log_flags` bit 1). Test keys only.
    pub key: Option<[u8; 32]>,
}

/// The chain key of the `keyed` vector. A TEST KEY, published in the
/// vectors: never use it for anything else.
pub const TEST_CHAIN_KEY: [u8; 32] = [0x42; 32];

/// An all-zero chain hash: the chain slots of a log without the chain.
pub const ZERO_CHAIN: [u8; 32] = [0; 32];

impl Format {
    pub const V1: Format = Format {
        version: 1,
        chain: false,
        key: None,
    };
    pub const V2: Format = Format {
        version: 2,
        chain: true,
        key: None,
    };
    pub const V2_KEYED: Format = Format {
        version: 2,
        chain: true,
        key: Some(TEST_CHAIN_KEY),
    };

    /// Spec 2.1: `log_flags` (bit 0 CHAIN, bit 1 KEYED).
    pub fn log_flags(&self) -> u16 {
        u16::from(self.chain) | (u16::from(self.key.is_some()) << 1)
    }

    /// Spec 21.4: the key id stored in a keyed log's segment headers: the
    /// first 16 bytes of `blake3::derive_key("annal 2026-11 chain key id",
    /// key)`; zero without a key.
    pub fn key_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        if let Some(k) = &self.key {
            id.copy_from_slice(&blake3::derive_key("annal 2026-11 chain key id", k)[..16]);
        }
        id
    }

    /// H(x) of spec 21.2: plain BLAKE3, or BLAKE3 keyed mode with the key.
    fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = match &self.key {
            Some(k) => blake3::Hasher::new_keyed(k),
            None => blake3::Hasher::new(),
        };
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    /// Spec 21.2: genesis = H("annal chain v2\0\0" || log_id); zero without
    /// the chain.
    pub fn genesis(&self, log_id: &[u8; 16]) -> [u8; 32] {
        if !self.chain {
            return ZERO_CHAIN;
        }
        self.hash(&[b"annal chain v2\0\0", log_id])
    }

    /// Spec 21.2: the chain after the batch frame `frame` (whole frame bytes)
    /// = H(chain before || frame [8, 40) || frame [72, frame_len)); zero
    /// without the chain.
    pub fn link(&self, prev: &[u8; 32], frame: &[u8]) -> [u8; 32] {
        if !self.chain {
            return ZERO_CHAIN;
        }
        self.hash(&[prev, &frame[8..40], &frame[72..]])
    }

    /// The directory of this format version's vectors.
    pub fn vectors_dir(&self) -> PathBuf {
        vectors_dir_of(self.version)
    }
}

/// Spec 2.1: the segment header (128 bytes) of a segment in format `fmt`,
/// whose chain starts at `chain_start` (zero without the chain).
pub fn segment_header_in(
    fmt: &Format,
    log_id: [u8; 16],
    base_position: u64,
    prev_timestamp: u64,
    created_at: u64,
    chain_start: &[u8; 32],
) -> Vec<u8> {
    let mut h = vec![0u8; 128];
    put(&mut h, 0, b"ANNALSEG"); // magic
    put(&mut h, 8, &fmt.version.to_le_bytes()); // format_version
    put(&mut h, 10, &fmt.log_flags().to_le_bytes()); // log_flags
    // 12 reserved0: zero
    put(&mut h, 16, &log_id);
    put(&mut h, 32, &base_position.to_le_bytes());
    put(&mut h, 40, &prev_timestamp.to_le_bytes());
    put(&mut h, 48, &created_at.to_le_bytes());
    put(&mut h, 56, chain_start); // chain_start (32 bytes)
    put(&mut h, 88, &fmt.key_id()); // key_id (16 bytes)
    // 104 reserved1 (20 bytes): zero
    let c = crc(&h[0..124]);
    put(&mut h, 124, &c.to_le_bytes()); // header_crc of [0, 124)
    h
}

/// Spec 2.1: the segment header of a format v1 segment.
pub fn segment_header(log_id: [u8; 16], base_position: u64, prev_timestamp: u64, created_at: u64) -> Vec<u8> {
    segment_header_in(
        &Format::V1,
        log_id,
        base_position,
        prev_timestamp,
        created_at,
        &ZERO_CHAIN,
    )
}

/// Spec 3.2: one record (72-byte header, body, zero padding to a multiple of 8).
pub fn record(position: u64, stream_version: u64, timestamp: u64, stream: &str, ev: &Event) -> Vec<u8> {
    let parts = [
        stream.as_bytes(),
        ev.event_type.as_bytes(),
        ev.metadata.as_bytes(),
        ev.payload.as_bytes(),
    ];
    let len = (72 + parts.iter().map(|p| p.len()).sum::<usize>()).next_multiple_of(8);
    let mut r = vec![0u8; len];
    put(&mut r, 0, &(len as u32).to_le_bytes()); // record_len
    put(&mut r, 8, &position.to_le_bytes());
    put(&mut r, 16, &stream_version.to_le_bytes());
    put(&mut r, 24, &timestamp.to_le_bytes());
    put(&mut r, 32, &ev.id); // event_id: the UUID's 16 bytes in RFC 9562 order
    put(&mut r, 48, &ev.schema_version.to_le_bytes());
    // 52 flags: zero
    put(&mut r, 54, &(stream.len() as u16).to_le_bytes()); // stream_len
    put(&mut r, 56, &(ev.event_type.len() as u16).to_le_bytes()); // type_len
    // 58 reserved0: zero
    put(&mut r, 60, &(ev.metadata.len() as u32).to_le_bytes()); // metadata_len
    put(&mut r, 64, &(ev.payload.len() as u32).to_le_bytes()); // payload_len
    // 68 reserved1: zero
    let mut at = 72;
    for p in parts {
        put(&mut r, at, p);
        at += p.len();
    }
    // [at, len): zero padding
    let c = crc(&r[8..]);
    put(&mut r, 4, &c.to_le_bytes()); // crc of [8, record_len)
    r
}

/// Spec 3.1: a 72-byte frame header of `kind` (1 event batch, 2 seal) for a
/// frame of `frame_len` bytes, with `chain` in its chain slot.
pub fn frame_header_with_chain(
    kind: u8,
    frame_len: u64,
    first_position: u64,
    record_count: u32,
    durable_end: u64,
    chain: &[u8; 32],
) -> Vec<u8> {
    let mut f = vec![0u8; 72];
    put(&mut f, 0, b"BTCH"); // magic
    put(&mut f, 8, &frame_len.to_le_bytes());
    put(&mut f, 16, &first_position.to_le_bytes());
    put(&mut f, 24, &record_count.to_le_bytes());
    f[28] = kind;
    // 29 flags, 30 reserved: zero
    put(&mut f, 32, &durable_end.to_le_bytes());
    put(&mut f, 40, chain); // chain (32 bytes)
    let c = crc(&f[8..72]);
    put(&mut f, 4, &c.to_le_bytes()); // header_crc of [8, 72)
    f
}

/// Spec 3.1: a frame header with a zero chain slot (format v1).
pub fn frame_header(kind: u8, frame_len: u64, first_position: u64, record_count: u32, durable_end: u64) -> Vec<u8> {
    frame_header_with_chain(kind, frame_len, first_position, record_count, durable_end, &ZERO_CHAIN)
}

/// Spec 3.1, 3.3 and 21.2: an event batch frame (72-byte frame header,
/// records) in format `fmt`, given the chain before it; returns the frame and
/// the chain after it (both chains zero without the chain). The chain slot is
/// not hashed, but is covered by `header_crc`: the link is computed on the
/// frame with its slot still zero, then the slot is filled and the CRC taken.
pub fn batch_frame_in(
    fmt: &Format,
    chain_before: &[u8; 32],
    first_position: u64,
    durable_end: u64,
    records: &[Vec<u8>],
) -> (Vec<u8>, [u8; 32]) {
    let frame_len = 72 + records.iter().map(Vec::len).sum::<usize>() as u64;
    let mut f = frame_header(1, frame_len, first_position, records.len() as u32, durable_end);
    for r in records {
        f.extend_from_slice(r);
    }
    let chain = fmt.link(chain_before, &f);
    let header = frame_header_with_chain(1, frame_len, first_position, records.len() as u32, durable_end, &chain);
    f[..72].copy_from_slice(&header);
    (f, chain)
}

/// Spec 3.1 and 3.3: an event batch frame of format v1.
pub fn batch_frame(first_position: u64, durable_end: u64, records: &[Vec<u8>]) -> Vec<u8> {
    batch_frame_in(&Format::V1, &ZERO_CHAIN, first_position, durable_end, records).0
}

/// The values of one head slot (spec 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSlot {
    pub sequence: u64,
    pub segment_base: u64,
    pub durable_end: u64,
    pub visible_end: u64,
    pub next_position: u64,
}

impl HeadSlot {
    /// Spec 5.2: odd sequence numbers go to slot 0, even ones to slot 1.
    pub fn file_offset(&self) -> u64 {
        if self.sequence % 2 == 1 { 0 } else { 64 }
    }
}

/// Spec 5.2: one 64-byte head slot of a log in format `version`.
pub fn head_slot(version: u16, s: &HeadSlot) -> [u8; 64] {
    let mut b = [0u8; 64];
    put(&mut b, 0, b"HEAD"); // magic
    put(&mut b, 8, &version.to_le_bytes()); // format_version
    // 10 flags, 12 reserved0: zero
    put(&mut b, 16, &s.sequence.to_le_bytes());
    put(&mut b, 24, &s.segment_base.to_le_bytes());
    put(&mut b, 32, &s.durable_end.to_le_bytes());
    put(&mut b, 40, &s.visible_end.to_le_bytes());
    put(&mut b, 48, &s.next_position.to_le_bytes());
    // 56 reserved1: zero
    let c = crc(&b[8..64]);
    put(&mut b, 4, &c.to_le_bytes()); // crc of [8, 64)
    b
}

/// Spec 5.2: the 128-byte head file of a log in format `version` after
/// writing `slots` in order, each in place (a later slot overwrites the
/// earlier one of the same parity). Created zeroed (the spec does not say
/// what the slot not yet written holds; annal creates the file with it zero).
pub fn head_file_in(version: u16, slots: &[HeadSlot]) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    for s in slots {
        put(&mut f, s.file_offset() as usize, &head_slot(version, s));
    }
    f
}

/// Spec 5.2: the head file of a format v1 log.
pub fn head_file(slots: &[HeadSlot]) -> Vec<u8> {
    head_file_in(1, slots)
}

// ============================================================ JSON

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventJson {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub timestamp: u64,
    /// Canonical UUID text; its 32 hex digits are the 16 stored bytes in order.
    pub event_id: String,
    pub schema_version: u32,
    pub event_type: String,
    pub metadata: String,
    pub payload: String,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn lines(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| (*s).to_owned()).collect()
}

// ===================================================== vector files

/// `spec/vectors/v{version}`.
pub fn vectors_dir_of(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("spec/vectors/v{version}"))
}

/// `spec/vectors/v1`: the format v1 vectors, and the vectors that do not
/// depend on the log format version (`index.json`, `snapshot/`).
pub fn vectors_dir() -> PathBuf {
    vectors_dir_of(1)
}

pub fn regenerating() -> bool {
    std::env::var_os("ANNAL_REGENERATE_VECTORS").is_some_and(|v| v == "1")
}

/// Reads and parses `vectors_dir()/name`. The caller first makes sure the
/// vectors are regenerated if asked to.
pub fn load_json<T: serde::de::DeserializeOwned>(name: &str) -> T {
    load_json_from(&vectors_dir(), name)
}

/// Reads and parses `dir/name`.
pub fn load_json_from<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> T {
    let path = dir.join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (generate the vectors with ANNAL_REGENERATE_VECTORS=1)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A fresh copy of the vector directory `src`.
pub fn copy_dir(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.expect("directory entry");
        fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy vector file");
    }
    tmp
}

// ============================================================ helpers

pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, expected {} bytes; first difference at byte offset {first}: got {:02x?}, expected {:02x?}",
        got.len(),
        want.len(),
        got.get(first..(first + 16).min(got.len())).unwrap_or(&[]),
        want.get(first..(first + 16).min(want.len())).unwrap_or(&[]),
    );
}

/// Every file under `dir` (recursively), as `(path relative to dir, bytes)`,
/// sorted by path.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).expect("read file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Asserts that every file under `generated` exists under `committed` with
/// the same bytes (the committed directory may hold more files: those other
/// tests generate).
pub fn assert_tree_committed(generated: &Path, committed: &Path) {
    let files = tree(generated);
    assert!(!files.is_empty(), "nothing generated under {}", generated.display());
    for (rel, bytes) in files {
        let path = committed.join(&rel);
        let got = fs::read(&path).unwrap_or_else(|e| panic!("read committed {}: {e}", path.display()));
        assert_bytes_eq(&format!("committed {} vs regenerated", path.display()), &got, &bytes);
    }
}

/// Lowercase hex of a 32-byte chain hash (`None` for a log without the chain:
/// the JSON then omits the field).
pub fn chain_hex(fmt: &Format, chain: &[u8; 32]) -> Option<String> {
    fmt.chain.then(|| hex(chain))
}

pub fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read directory")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// The name of the index checkpoint (spec 17.5) a writer leaves at close
/// for the active segment based at `base` in `dir`: it covers the whole
/// segment (the vector `checkpoint` pins its bytes).
pub fn checkpoint_name(dir: &Path, base: u64) -> String {
    let len = fs::metadata(dir.join(format!("{base:020}.seg")))
        .expect("active segment")
        .len();
    format!("{base:020}-{:020}-{len:020}.ckpt", 128)
}

/// A clock returning `readings` in order (then the last one again), and the
/// number of times it was called.
pub fn planned_clock(readings: Vec<u64>) -> (Arc<dyn Fn() -> u64 + Send + Sync>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let clock = move || {
        let i = c.fetch_add(1, Ordering::SeqCst);
        readings[i.min(readings.len() - 1)]
    };
    (Arc::new(clock), calls)
}

pub fn event_data(e: &Event) -> EventData<'static> {
    EventData::new(e.event_type, e.payload.as_bytes())
        .with_metadata(e.metadata.as_bytes())
        .with_id(Uuid::from_bytes(e.id))
        .with_schema_version(e.schema_version)
}

pub fn event_of(r: &RecordRef<'_>) -> EventJson {
    EventJson {
        position: r.position(),
        stream: r.stream().to_owned(),
        stream_version: r.stream_version(),
        timestamp: r.timestamp(),
        event_id: r.event_id().to_string(),
        schema_version: r.schema_version(),
        event_type: r.event_type().to_owned(),
        metadata: String::from_utf8_lossy(r.metadata()).into_owned(),
        payload: String::from_utf8_lossy(r.payload()).into_owned(),
    }
}
