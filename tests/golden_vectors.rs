//! Golden vectors of annal's log format (`spec/format.md`, section 15), v1
//! and v2.
//!
//! `spec/vectors/v1/` (frozen: format v1, no chain) and `spec/vectors/v2/`
//! (format v2, the audit chain of spec 21) each hold these vectors, each a
//! log directory and a JSON description of it:
//!
//! * `simple/` + `simple.json`: one segment with two batches, cleanly closed;
//! * `torn/` + `torn.json`: the same two batches and a third one cut short in
//!   the middle of its record, with the head file a crashed writer leaves;
//! * `corrupt/` + `corrupt.json`: `simple/` with one byte of a durable record
//!   flipped;
//!
//! and `v2/` also `keyed/` + `keyed.json`: `simple/` written with a keyed
//! chain (the published TEST key `[0x42; 32]`).
//!
//! The bytes are assembled here from the tables of `spec/format.md` alone, by
//! the helpers of `tests/golden/mod.rs`, which use neither annal's encoder,
//! `annal::format` nor annal's chain code (only `crc32fast` for the CRC and
//! the `blake3` crate for the chain, straight from spec 21.2). The tests
//! check that
//!
//! 1. the committed files and JSON equal the spec assembly, and regenerating
//!    gives the committed files byte for byte (so v1 stays frozen);
//! 2. annal's writer, given the same log id, clock and event ids, writes the
//!    same bytes (and, for the torn vector, the same crash image): v1 with
//!    `Options::format_version(1)`, v2 by default, keyed with the test key;
//! 3. recovery of the torn vector and the error reported for the corrupt
//!    vector are the ones the JSON documents.
//!
//! To (re)write the vectors from the spec assembly instead of comparing:
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --test golden_vectors
//! ```

mod golden;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use annal::{ChainKey, Error, EventData, ExpectedVersion, Log, LogView, Options, Reader, Uuid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use golden::{
    Event, EventJson, Format, HeadSlot, assert_bytes_eq, assert_tree_committed, batch_frame_in, chain_hex, crc,
    event_data, event_of, file_names, head_file_in, head_slot, hex, id_from, lines, planned_clock, record,
    regenerating, segment_header_in,
};

// ============================================================== the plan

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
/// `created_at` of the segment (the first clock reading of the writer).
const CREATED_AT: u64 = 1_700_000_000_000_000_000;
const SEGMENT_FILE: &str = "00000000000000000000.seg";
const HEAD_FILE: &str = "annal.head";
const LOCK_FILE: &str = "annal.lock";
/// Spec 2.1: the segment header is 128 bytes; spec 5.1 rule 1: the durable
/// boundary is at least 128. A writer in `Durability::Buffered` mode that has
/// not fsynced since creating the segment carries this value as `durable_end`
/// in every frame header it writes.
const SEGMENT_HEADER_LEN: u64 = 128;

/// One `append` call: one or more events of one stream, one timestamp.
#[derive(Debug, Clone, Copy)]
struct Batch {
    stream: &'static str,
    timestamp: u64,
    events: &'static [Event],
}

const BATCH_1: Batch = Batch {
    stream: "order-1",
    timestamp: 1_700_000_000_000_000_100,
    events: &[
        Event {
            event_type: "OrderPlaced",
            payload: r#"{"total":42}"#,
            metadata: r#"{"user":"ann"}"#,
            id: id_from(0x01),
            schema_version: 1,
        },
        Event {
            event_type: "ItemAdded",
            payload: r#"{"sku":"A-7"}"#,
            metadata: "",
            id: id_from(0x11),
            schema_version: 0,
        },
    ],
};

const BATCH_2: Batch = Batch {
    stream: "customer-9",
    timestamp: 1_700_000_000_000_000_200,
    events: &[Event {
        event_type: "Registered",
        payload: "ann",
        metadata: "",
        id: id_from(0x21),
        schema_version: 3,
    }],
};

/// The batch the crash tears (torn vector only).
const BATCH_3: Batch = Batch {
    stream: "order-1",
    timestamp: 1_700_000_000_000_000_300,
    events: &[Event {
        event_type: "OrderShipped",
        payload: r#"{"carrier":"DHL"}"#,
        metadata: "",
        id: id_from(0x31),
        schema_version: 0,
    }],
};

/// Bytes of the torn batch's record that reached the file: the 72-byte record
/// header, the stream name `order-1` and the first 5 bytes (`Order`) of the
/// event type.
const TORN_RECORD_BYTES_KEPT: u64 = 72 + 7 + 5;

/// The description line of every vector that lists CRCs.
const CRC_NOTE: &str = "CRC values are hex strings (0x and 8 lowercase hex digits) of the u32 stored little-endian in the \
                        field: the segment header's header_crc (spec 2.1), each frame's header_crc (3.1), each record's \
                        crc (3.2) and each head slot's crc (5.2); every one is CRC-32/ISO-HDLC as spec 'Conventions' \
                        says, over the bytes the spec's tables name.";

/// The corrupt vector flips the first payload byte of the first record
/// (`{` = 0x7b becomes `z` = 0x7a) with this mask.
const FLIP_MASK: u8 = 0x01;

// ======================================================= spec assembly
//
// Everything in this section follows the byte tables of spec/format.md; the
// offsets are the `offset` column of the tables.

#[derive(Debug, Clone)]
struct RecordLayout {
    offset: u64,
    len: u64,
    /// The record's `crc` field (spec 3.2).
    crc: u32,
    position: u64,
    stream_version: u64,
    timestamp: u64,
    stream: &'static str,
    event: Event,
}

#[derive(Debug, Clone)]
struct FrameLayout {
    offset: u64,
    len: u64,
    first_position: u64,
    durable_end: u64,
    /// The chain after the batch (spec 21.2; zero without the chain).
    chain: [u8; 32],
    /// The frame's `header_crc` (spec 3.1).
    header_crc: u32,
    records: Vec<RecordLayout>,
}

impl FrameLayout {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
    fn next_position(&self) -> u64 {
        self.first_position + self.records.len() as u64
    }
}

/// Segment 0 of a new log in format `fmt` holding `batches`, as written by a
/// writer in `Durability::Buffered` mode that has not fsynced since creating
/// the segment: every frame's `durable_end` is 128. Positions start at 0 and
/// are contiguous (spec 11.1); stream versions start at 0 per stream (11.2).
/// With the chain, the segment's `chain_start` is the genesis and each batch
/// links to the one before (spec 21.2).
fn assemble_segment(fmt: &Format, batches: &[Batch]) -> (Vec<u8>, Vec<FrameLayout>) {
    let genesis = fmt.genesis(&LOG_ID);
    let mut chain = genesis;
    let mut seg = segment_header_in(fmt, LOG_ID, 0, 0, CREATED_AT, &genesis);
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut position = 0u64;
    let mut frames = Vec::new();
    for b in batches {
        let offset = seg.len() as u64;
        let first_version = versions.get(b.stream).map_or(0, |v| v + 1);
        let mut records = Vec::new();
        let mut layouts = Vec::new();
        let mut at = offset + 72;
        for (i, ev) in b.events.iter().enumerate() {
            let (pos, version) = (position + i as u64, first_version + i as u64);
            let r = record(pos, version, b.timestamp, b.stream, ev);
            layouts.push(RecordLayout {
                offset: at,
                len: r.len() as u64,
                crc: u32_at(&r, 4),
                position: pos,
                stream_version: version,
                timestamp: b.timestamp,
                stream: b.stream,
                event: *ev,
            });
            at += r.len() as u64;
            records.push(r);
        }
        let (frame, after) = batch_frame_in(fmt, &chain, position, SEGMENT_HEADER_LEN, &records);
        chain = after;
        frames.push(FrameLayout {
            offset,
            len: frame.len() as u64,
            first_position: position,
            durable_end: SEGMENT_HEADER_LEN,
            chain,
            header_crc: u32_at(&frame, 4),
            records: layouts,
        });
        seg.extend_from_slice(&frame);
        position += b.events.len() as u64;
        versions.insert(b.stream, first_version + b.events.len() as u64 - 1);
    }
    (seg, frames)
}

/// The head slots the writer writes, in order, for a log created and then
/// appended to with `frames` in `Durability::Buffered` mode without a sync:
///
/// * sequence 1 when the log is created: durable = visible = 128;
/// * one per append, after its write: durable 128, visible = end of the batch;
/// * if `closed`, two at close: one after the final fsync and one after that,
///   both durable = visible = the end of the segment.
///
/// Spec 5.2 says *that* a slot is written after each write and each fsync, but
/// not exactly how many slots (hence which sequence numbers) a writer writes;
/// this is annal's writer's schedule, documented in the JSON.
fn writer_head_history(frames: &[FrameLayout], closed: bool) -> Vec<HeadSlot> {
    let mut slots = vec![HeadSlot {
        sequence: 1,
        segment_base: 0,
        durable_end: SEGMENT_HEADER_LEN,
        visible_end: SEGMENT_HEADER_LEN,
        next_position: 0,
    }];
    for f in frames {
        slots.push(HeadSlot {
            sequence: slots.len() as u64 + 1,
            segment_base: 0,
            durable_end: SEGMENT_HEADER_LEN,
            visible_end: f.end(),
            next_position: f.next_position(),
        });
    }
    if closed {
        let end = frames.last().map_or(SEGMENT_HEADER_LEN, FrameLayout::end);
        let next = frames.last().map_or(0, FrameLayout::next_position);
        for _ in 0..2 {
            slots.push(HeadSlot {
                sequence: slots.len() as u64 + 1,
                segment_base: 0,
                durable_end: end,
                visible_end: end,
                next_position: next,
            });
        }
    }
    slots
}

// ============================================================ JSON

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordJson {
    /// File offset of the record.
    offset: u64,
    record_len: u64,
    /// The record's `crc` field (spec 3.2), hex.
    crc: String,
    #[serde(flatten)]
    event: EventJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FrameJson {
    /// File offset of the frame.
    offset: u64,
    frame_len: u64,
    kind: u8,
    first_position: u64,
    record_count: u32,
    durable_end: u64,
    /// The frame header's `header_crc` (spec 3.1), hex.
    header_crc: String,
    /// Format v2 with the chain: the frame's chain slot (the chain after this
    /// batch), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    records: Vec<RecordJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentJson {
    file: String,
    length: u64,
    base_position: u64,
    prev_timestamp: u64,
    created_at: u64,
    /// The segment header's `header_crc` (spec 2.1), hex.
    header_crc: String,
    /// Format v2: the header's `log_flags`, `chain_start` (hex) and `key_id`
    /// (hex; zero unless keyed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// The complete frames, in file order.
    frames: Vec<FrameJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeadSlotJson {
    file_offset: u64,
    /// The slot's `crc` field (spec 5.2), hex.
    crc: String,
    #[serde(flatten)]
    slot: HeadSlot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeadJson {
    file: String,
    /// Sequence number of the current slot (the valid slot with the larger
    /// sequence).
    current_sequence: u64,
    slots: Vec<HeadSlotJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WriterJson {
    durability: String,
    /// The writer's clock readings, in the order the writer takes them.
    clock_readings: Vec<u64>,
    /// Sequence numbers of the head slots written, with what each says.
    head_slots_written: Vec<HeadSlot>,
}

/// Format v2: the audit chain of the log (spec 21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChainJson {
    /// `BLAKE3` or `BLAKE3 keyed`.
    hash: String,
    /// Keyed logs only: the key, hex. A published TEST key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test_key_note: Option<String>,
    /// The key id of the segment headers (zero unless keyed), hex.
    key_id: String,
    /// H("annal chain v2\0\0" || log_id), hex.
    genesis: String,
    /// `Log::anchor()` after the last batch the log holds: `POSITION:HEX64`.
    anchor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimpleJson {
    description: Vec<String>,
    format_version: u16,
    /// The 16 bytes of the log id, in hex.
    log_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainJson>,
    files: Vec<String>,
    writer: WriterJson,
    segment: SegmentJson,
    head: HeadJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TornFrameJson {
    /// File offset of the torn frame.
    offset: u64,
    /// What its (intact) header says.
    frame_len: u64,
    kind: u8,
    first_position: u64,
    record_count: u32,
    durable_end: u64,
    /// The intact header's `header_crc`, hex.
    header_crc: String,
    /// Format v2 with the chain: what the intact header's chain slot says
    /// (the chain after the whole batch), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    /// Bytes of the frame present in the file.
    bytes_in_file: u64,
    /// The records the frame was meant to hold.
    records: Vec<RecordJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TruncationJson {
    file: String,
    offset: u64,
    bytes_removed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecoveryJson {
    /// B of spec 5.1.
    durable_boundary: u64,
    /// X of spec 6 step 4: the first frame that is not complete.
    first_incomplete_frame: u64,
    truncated: TruncationJson,
    segment_length_after: u64,
    /// The records that remain, in position order.
    records: Vec<RecordJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TornJson {
    description: Vec<String>,
    format_version: u16,
    log_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainJson>,
    files: Vec<String>,
    writer: WriterJson,
    segment: SegmentJson,
    torn_frame: TornFrameJson,
    head: HeadJson,
    expected_recovery: RecoveryJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FlipJson {
    file: String,
    offset: u64,
    original: u8,
    flipped: u8,
    location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ErrorJson {
    kind: String,
    file: String,
    /// The byte offset reported with the error.
    offset: u64,
    location: String,
    /// X of spec 6 step 4: offset of the frame that is not complete.
    damaged_frame_offset: u64,
    /// B of spec 5.1.
    durable_boundary: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CorruptJson {
    description: Vec<String>,
    format_version: u16,
    log_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    based_on: String,
    files: Vec<String>,
    flipped_byte: FlipJson,
    expected_error: ErrorJson,
    bytes_removed: u64,
}

fn event_json(r: &RecordLayout) -> EventJson {
    EventJson {
        position: r.position,
        stream: r.stream.to_owned(),
        stream_version: r.stream_version,
        timestamp: r.timestamp,
        event_id: Uuid::from_bytes(r.event.id).to_string(),
        schema_version: r.event.schema_version,
        event_type: r.event.event_type.to_owned(),
        metadata: r.event.metadata.to_owned(),
        payload: r.event.payload.to_owned(),
    }
}

fn record_json(r: &RecordLayout) -> RecordJson {
    RecordJson {
        offset: r.offset,
        record_len: r.len,
        crc: hex32(r.crc),
        event: event_json(r),
    }
}

fn frame_json(fmt: &Format, f: &FrameLayout) -> FrameJson {
    FrameJson {
        offset: f.offset,
        frame_len: f.len,
        kind: 1,
        first_position: f.first_position,
        record_count: f.records.len() as u32,
        durable_end: f.durable_end,
        header_crc: hex32(f.header_crc),
        chain: chain_hex(fmt, &f.chain),
        records: f.records.iter().map(record_json).collect(),
    }
}

fn segment_json(fmt: &Format, length: u64, frames: &[FrameLayout]) -> SegmentJson {
    let v2 = fmt.version >= 2;
    let header = segment_header_in(fmt, LOG_ID, 0, 0, CREATED_AT, &fmt.genesis(&LOG_ID));
    SegmentJson {
        file: SEGMENT_FILE.to_owned(),
        length,
        base_position: 0,
        prev_timestamp: 0,
        created_at: CREATED_AT,
        header_crc: hex32(u32_at(&header, 124)),
        log_flags: v2.then(|| fmt.log_flags()),
        chain_start: v2.then(|| hex(&fmt.genesis(&LOG_ID))),
        key_id: v2.then(|| hex(&fmt.key_id())),
        frames: frames.iter().map(|f| frame_json(fmt, f)).collect(),
    }
}

/// The top-level `log_flags` (format v2 only).
fn log_flags_json(fmt: &Format) -> Option<u16> {
    (fmt.version >= 2).then(|| fmt.log_flags())
}

/// The top-level `chain` of a log with the chain whose last complete batch is
/// `last` (none: the anchor is the genesis at position 0).
fn chain_json(fmt: &Format, last: Option<&FrameLayout>) -> Option<ChainJson> {
    if !fmt.chain {
        return None;
    }
    let genesis = fmt.genesis(&LOG_ID);
    let anchor = last.map_or((0, genesis), |f| (f.next_position(), f.chain));
    Some(ChainJson {
        hash: if fmt.key.is_some() { "BLAKE3 keyed" } else { "BLAKE3" }.to_owned(),
        test_key: fmt.key.map(|k| hex(&k)),
        test_key_note: fmt.key.map(|_| {
            "TEST KEY, PUBLISHED HERE: it exists only to make this vector reproducible. Never use it to key a \
             real log."
                .to_owned()
        }),
        key_id: hex(&fmt.key_id()),
        genesis: hex(&genesis),
        anchor: format!("{}:{}", anchor.0, hex(&anchor.1)),
    })
}

fn head_json(version: u16, history: &[HeadSlot]) -> HeadJson {
    let mut slots: Vec<HeadSlotJson> = Vec::new();
    for s in history {
        slots.retain(|j| j.file_offset != s.file_offset());
        slots.push(HeadSlotJson {
            file_offset: s.file_offset(),
            crc: hex32(u32_at(&head_slot(version, s), 4)),
            slot: *s,
        });
    }
    slots.sort_by_key(|s| s.file_offset);
    HeadJson {
        file: HEAD_FILE.to_owned(),
        current_sequence: history.last().map_or(0, |s| s.sequence),
        slots,
    }
}

fn writer_json(batches: &[Batch], history: &[HeadSlot]) -> WriterJson {
    WriterJson {
        durability: "Buffered".to_owned(),
        clock_readings: clock_readings(batches),
        head_slots_written: history.to_vec(),
    }
}

/// The writer's clock readings: `created_at` when it creates the segment, then
/// one per append (the batch's timestamp).
fn clock_readings(batches: &[Batch]) -> Vec<u64> {
    std::iter::once(CREATED_AT)
        .chain(batches.iter().map(|b| b.timestamp))
        .collect()
}

// ========================================================= the vectors

struct Vector {
    fmt: Format,
    name: &'static str,
    segment: Vec<u8>,
    head: Vec<u8>,
    /// The JSON description, fields in declaration order.
    json_text: String,
}

impl Vector {
    fn new(fmt: Format, name: &'static str, segment: Vec<u8>, head: Vec<u8>, json: &impl Serialize) -> Vector {
        let mut json_text = serde_json::to_string_pretty(json).expect("serialize JSON");
        json_text.push('\n');
        Vector {
            fmt,
            name,
            segment,
            head,
            json_text,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.json_text).expect("parse generated JSON")
    }
}

/// The description lines every format v2 vector adds to its JSON.
fn v2_description(fmt: &Format) -> Vec<String> {
    let mut d = lines(&[
        "Format v2 (spec 21): the segment header has log_flags bit 0 (CHAIN) set and chain_start = the genesis \
         H(\"annal chain v2\\0\\0\" || log_id); each batch frame's chain slot [40, 72) holds the chain after it, \
         H(chain before || frame bytes [8, 40) || frame bytes [72, frame_len)), and is covered by header_crc. \
         The head file's slots carry format_version 2.",
        "chain, chain_start and key_id are lowercase hex. chain.anchor is Log::anchor() once the log holds the \
         complete batches listed: POSITION:HASH, the position after the last batch and the chain there.",
    ]);
    if fmt.key.is_some() {
        d.extend(lines(&[
            "Keyed: log_flags = 3 (CHAIN | KEYED); H is BLAKE3 in keyed mode with chain.test_key; key_id = the \
             first 16 bytes of blake3::derive_key(\"annal 2026-11 chain key id\", key). The key is never in the \
             log; opening it for writing needs it.",
            "chain.test_key IS A PUBLISHED TEST KEY (32 bytes of 0x42). Never use it for a real log.",
        ]));
    }
    d
}

fn build_simple(fmt: Format, name: &'static str) -> Vector {
    let batches = [BATCH_1, BATCH_2];
    let (segment, frames) = assemble_segment(&fmt, &batches);
    let history = writer_head_history(&frames, true);
    let mut description = lines(&[
        "A cleanly closed log of one segment holding two batches, written by a writer in Durability::Buffered \
         mode with an explicit log id, clock and event ids, then closed.",
        "Batch 1: stream order-1, events OrderPlaced and ItemAdded. Batch 2: stream customer-9, event Registered.",
        "Every frame's durable_end is 128: nothing was fsynced before close. The head's current slot has \
         durable_end = visible_end = the segment length (spec 5.2, a cleanly closed log).",
        "Offsets are file offsets. metadata and payload are the bytes as UTF-8 text. Integers are exact u64.",
        CRC_NOTE,
        "The directory holds no annal.lock (a writer creates it when it opens the log).",
    ]);
    if fmt.version >= 2 {
        description.extend(v2_description(&fmt));
    }
    let json = SimpleJson {
        description,
        format_version: fmt.version,
        log_id: hex(&LOG_ID),
        log_flags: log_flags_json(&fmt),
        chain: chain_json(&fmt, frames.last()),
        files: vec![SEGMENT_FILE.to_owned(), HEAD_FILE.to_owned()],
        writer: writer_json(&batches, &history),
        segment: segment_json(&fmt, segment.len() as u64, &frames),
        head: head_json(fmt.version, &history),
    };
    Vector::new(fmt, name, segment, head_file_in(fmt.version, &history), &json)
}

fn build_torn(fmt: Format) -> Vector {
    let batches = [BATCH_1, BATCH_2, BATCH_3];
    let (full, frames) = assemble_segment(&fmt, &batches);
    let (complete, torn) = frames.split_at(2);
    let torn = &torn[0];
    let cut = torn.records[0].offset + TORN_RECORD_BYTES_KEPT;
    let segment = full[..cut as usize].to_vec();
    // The writer crashed while writing batch 3, before the head slot that
    // follows that write: the head is as it was after batch 2.
    let history = writer_head_history(complete, false);
    let x = torn.offset;
    let remaining: Vec<RecordJson> = complete
        .iter()
        .flat_map(|f| f.records.iter().map(record_json))
        .collect();
    let mut description = lines(&[
        "A crash image: the two batches of simple.json, then a third batch (stream order-1, event OrderShipped) \
         whose write was cut short in the middle of its record, by a writer in Durability::Buffered mode that \
         never fsynced.",
        "The file ends after the torn frame's 72-byte header (intact), its record's 72-byte header, the stream \
         name and the first 5 bytes of the event type.",
        "The head file is the one the writer left: the crash struck during the write of batch 3, before the \
         head slot that follows that write, so the current slot is the one written after batch 2 \
         (durable_end 128, visible_end = end of batch 2).",
        CRC_NOTE,
        "Recovery (spec 6): the durable boundary B is 128 (every frame header and the head say 128); the first \
         frame that is not complete is batch 3 at X = end of batch 2 >= B, so the tail [X, end) is removed \
         and the two complete batches remain.",
    ]);
    if fmt.version >= 2 {
        description.extend(v2_description(&fmt));
        description.extend(lines(&[
            "The torn frame's intact header already holds the chain after the whole batch 3 (the writer computes \
             it before writing); recovery removes it with the frame, and the chain of the log is again the one \
             after batch 2 (chain.anchor).",
        ]));
    }
    let json = TornJson {
        description,
        format_version: fmt.version,
        log_id: hex(&LOG_ID),
        log_flags: log_flags_json(&fmt),
        chain: chain_json(&fmt, complete.last()),
        files: vec![SEGMENT_FILE.to_owned(), HEAD_FILE.to_owned()],
        writer: writer_json(&batches, &history),
        segment: segment_json(&fmt, segment.len() as u64, complete),
        torn_frame: TornFrameJson {
            offset: torn.offset,
            frame_len: torn.len,
            kind: 1,
            first_position: torn.first_position,
            record_count: torn.records.len() as u32,
            durable_end: torn.durable_end,
            header_crc: hex32(torn.header_crc),
            chain: chain_hex(&fmt, &torn.chain),
            bytes_in_file: cut - torn.offset,
            records: torn.records.iter().map(record_json).collect(),
        },
        head: head_json(fmt.version, &history),
        expected_recovery: RecoveryJson {
            durable_boundary: SEGMENT_HEADER_LEN,
            first_incomplete_frame: x,
            truncated: TruncationJson {
                file: SEGMENT_FILE.to_owned(),
                offset: x,
                bytes_removed: cut - x,
            },
            segment_length_after: x,
            records: remaining,
        },
    };
    Vector::new(fmt, "torn", segment, head_file_in(fmt.version, &history), &json)
}

fn build_corrupt(fmt: Format) -> Vector {
    let simple = build_simple(fmt, "simple");
    let (_, frames) = assemble_segment(&fmt, &[BATCH_1, BATCH_2]);
    let frame = &frames[0];
    let rec = &frame.records[0];
    let ev = &rec.event;
    let payload_at = rec.offset + 72 + (rec.stream.len() + ev.event_type.len() + ev.metadata.len()) as u64;
    let mut segment = simple.segment.clone();
    let original = segment[payload_at as usize];
    let flipped = original ^ FLIP_MASK;
    segment[payload_at as usize] = flipped;
    let end = frames.last().map_or(SEGMENT_HEADER_LEN, FrameLayout::end);
    let mut description = lines(&[
        "The cleanly closed log of simple.json (same head file) with one byte flipped: the first payload byte \
         of the record at position 0, in batch 1.",
        "The log was cleanly closed, so its durable boundary is its end (spec 5.2): the damage lies below it \
         and is corruption, not a torn write. Opening for writing fails with Corrupt and removes nothing; \
         a reader returns an error, never the flipped data.",
        "expected_error.offset is what annal reports: the crc field (record offset 4) of the damaged record. \
         damaged_frame_offset is X of spec 6 step 4, the offset of the batch that is not complete.",
    ]);
    if fmt.version >= 2 {
        description.extend(lines(&[
            "Format v2: the chain slots are those of simple.json (the record CRC fails first; the chain is not \
             recomputed by readers or recovery).",
        ]));
    }
    let json = CorruptJson {
        description,
        format_version: fmt.version,
        log_id: hex(&LOG_ID),
        log_flags: log_flags_json(&fmt),
        based_on: "simple.json".to_owned(),
        files: vec![SEGMENT_FILE.to_owned(), HEAD_FILE.to_owned()],
        flipped_byte: FlipJson {
            file: SEGMENT_FILE.to_owned(),
            offset: payload_at,
            original,
            flipped,
            location: format!(
                "first payload byte of the record at position 0 (frame at {}, record at {}, payload [{}, {}))",
                frame.offset,
                rec.offset,
                payload_at,
                payload_at + ev.payload.len() as u64
            ),
        },
        expected_error: ErrorJson {
            kind: "Corrupt".to_owned(),
            file: SEGMENT_FILE.to_owned(),
            offset: rec.offset + 4,
            location: format!(
                "the crc field (record offset 4) of the record at file offset {}, whose CRC no longer matches",
                rec.offset
            ),
            damaged_frame_offset: frame.offset,
            durable_boundary: end,
        },
        bytes_removed: 0,
    };
    Vector::new(fmt, "corrupt", segment, simple.head, &json)
}

/// Write `v` under `base` (its format's vector directory, or a temporary one).
fn write_vector_to(base: &Path, v: &Vector) {
    let dir = base.join(v.name);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove old vector directory");
    }
    fs::create_dir_all(&dir).expect("create vector directory");
    fs::write(dir.join(SEGMENT_FILE), &v.segment).expect("write segment");
    fs::write(dir.join(HEAD_FILE), &v.head).expect("write head");
    fs::write(base.join(format!("{}.json", v.name)), &v.json_text).expect("write JSON");
}

/// The spec-assembled vectors of this file: v1 `simple`, `torn`, `corrupt`
/// and v2 `simple`, `torn`, `corrupt`, `keyed`. With
/// `ANNAL_REGENERATE_VECTORS=1`, written to `spec/vectors/v1/` and
/// `spec/vectors/v2/` (once per test process, before any test reads them).
fn vectors() -> &'static [Vector] {
    static V: OnceLock<Vec<Vector>> = OnceLock::new();
    V.get_or_init(|| {
        let mut v = Vec::new();
        for fmt in [Format::V1, Format::V2] {
            v.push(build_simple(fmt, "simple"));
            v.push(build_torn(fmt));
            v.push(build_corrupt(fmt));
        }
        v.push(build_simple(Format::V2_KEYED, "keyed"));
        if regenerating() {
            for x in &v {
                fs::create_dir_all(x.fmt.vectors_dir()).expect("create vectors directory");
                write_vector_to(&x.fmt.vectors_dir(), x);
            }
        }
        v
    })
}

/// The directory of the vectors of `fmt`'s version, once regenerated if asked.
fn dir_of(fmt: &Format) -> std::path::PathBuf {
    vectors();
    fmt.vectors_dir()
}

fn load_json<T: serde::de::DeserializeOwned>(fmt: &Format, name: &str) -> T {
    golden::load_json_from(&dir_of(fmt), name)
}

// ============================================================ helpers

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A fresh copy of vector `name`'s directory in `fmt`'s version.
fn copy_vector(fmt: &Format, name: &str) -> tempfile::TempDir {
    golden::copy_dir(&dir_of(fmt).join(name))
}

/// Options of a writer creating a log in `fmt` (and of one opening it: a keyed
/// log needs its key).
fn options(fmt: &Format) -> Options {
    let mut o = Options::default().format_version(fmt.version);

    if let Some(k) = fmt.key {
        o = o.chain_key(ChainKey::from_bytes(k));
    }
    o
}

/// The writer's view of the log's format is `fmt`, and its anchor is the one
/// the JSON lists.
fn assert_log_format(log: &Log, fmt: &Format, chain: Option<&ChainJson>) {
    assert_eq!(log.format_version(), fmt.version, "Log::format_version");
    assert_eq!(log.chain_mode(), (fmt.chain, fmt.key.is_some()), "Log::chain_mode");
    assert_eq!(
        log.anchor().map(|a| a.to_string()),
        chain.map(|c| c.anchor.clone()),
        "Log::anchor"
    );
}

fn append(log: &Log, b: &Batch) {
    let events: Vec<EventData<'_>> = b.events.iter().map(event_data).collect();
    log.append(b.stream, ExpectedVersion::Any, &events)
        .unwrap_or_else(|e| panic!("append to {}: {e}", b.stream));
}

fn read_events(view: &LogView) -> annal::Result<Vec<EventJson>> {
    view.read_all(0).map(|r| r.map(|r| event_of(&r))).collect()
}

fn expected_events(frames: &[FrameJson]) -> Vec<EventJson> {
    frames
        .iter()
        .flat_map(|f| f.records.iter().map(|r| r.event.clone()))
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A CRC as the JSON writes it: `0x` and 8 lowercase hex digits.
fn hex32(x: u32) -> String {
    format!("{x:#010x}")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn chain_at(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("32 bytes")
}

// ============================================================== tests

#[test]
fn crc_is_the_one_the_spec_names() {
    assert_eq!(crc(b"123456789"), 0xCBF4_3926);
}

/// (a) The committed vectors, v1 and v2, are exactly what the spec tables
/// produce.
#[test]
fn committed_vectors_equal_the_spec_assembly() {
    for v in vectors() {
        let base = dir_of(&v.fmt);
        let dir = base.join(v.name);
        assert_eq!(
            file_names(&dir),
            names(&[SEGMENT_FILE, HEAD_FILE]),
            "files of {}",
            dir.display()
        );
        let label = format!("v{}/{}", v.fmt.version, v.name);
        let seg = fs::read(dir.join(SEGMENT_FILE)).expect("read segment");
        assert_bytes_eq(&format!("{label}/{SEGMENT_FILE}"), &seg, &v.segment);
        let head = fs::read(dir.join(HEAD_FILE)).expect("read head");
        assert_bytes_eq(&format!("{label}/{HEAD_FILE}"), &head, &v.head);
        let json: Value = golden::load_json_from(&base, &format!("{}.json", v.name));
        assert_eq!(json, v.json(), "{label}.json differs from the spec assembly");
    }
}

/// Regenerating the vectors (into a temporary directory) gives the committed
/// files byte for byte, JSON text included: the v1 set is frozen, and the v2
/// set is what the generator writes.
#[test]
fn regenerated_vectors_are_byte_identical_to_the_committed_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for v in vectors() {
        let base = tmp.path().join(format!("v{}", v.fmt.version));
        fs::create_dir_all(&base).expect("create directory");
        write_vector_to(&base, v);
    }
    for version in [1u16, 2] {
        assert_tree_committed(
            &tmp.path().join(format!("v{version}")),
            &golden::vectors_dir_of(version),
        );
    }
}

/// The simple vectors' layout, as their JSON states it, is consistent with
/// the spec's arithmetic (header 128, frames back to back, 8-aligned).
#[test]
fn simple_json_layout_is_consistent() {
    for (fmt, name) in [
        (Format::V1, "simple"),
        (Format::V2, "simple"),
        (Format::V2_KEYED, "keyed"),
    ] {
        let j: SimpleJson = load_json(&fmt, &format!("{name}.json"));
        assert_eq!(j.format_version, fmt.version);
        let mut at = SEGMENT_HEADER_LEN;
        let mut pos = 0;
        for f in &j.segment.frames {
            assert_eq!(f.offset, at);
            assert_eq!(f.offset % 8, 0);
            assert_eq!(f.first_position, pos);
            let mut r_at = f.offset + 72;
            for r in &f.records {
                assert_eq!(r.offset, r_at);
                assert_eq!(r.record_len % 8, 0);
                assert_eq!(r.event.position, pos);
                r_at += r.record_len;
                pos += 1;
            }
            assert_eq!(f.offset + f.frame_len, r_at);
            at = r_at;
        }
        assert_eq!(j.segment.length, at);
        let current = j
            .head
            .slots
            .iter()
            .find(|s| s.slot.sequence == j.head.current_sequence)
            .expect("current slot");
        assert_eq!((current.slot.durable_end, current.slot.visible_end), (at, at));
        assert_eq!(current.slot.next_position, pos);
    }
}

/// The chain values of the committed v2 files and JSON follow from the
/// definition of spec 21 (genesis, link, key id, computed here with the
/// `blake3` crate, not annal's chain code), read straight from the bytes.
#[test]
fn v2_chain_values_follow_the_definition() {
    for (fmt, name) in [(Format::V2, "simple"), (Format::V2_KEYED, "keyed")] {
        let j: SimpleJson = load_json(&fmt, &format!("{name}.json"));
        let seg = fs::read(dir_of(&fmt).join(name).join(SEGMENT_FILE)).expect("read segment");
        let label = format!("v2/{name}");
        assert_eq!(u16_at(&seg, 8), 2, "{label}: format_version");
        assert_eq!(u16_at(&seg, 10), fmt.log_flags(), "{label}: log_flags");
        assert_eq!(Some(u16_at(&seg, 10)), j.log_flags, "{label}: log_flags in JSON");
        let genesis = fmt.genesis(&LOG_ID);
        let mut want_genesis = match fmt.key {
            Some(k) => blake3::Hasher::new_keyed(&k),
            None => blake3::Hasher::new(),
        };
        want_genesis.update(b"annal chain v2\0\0");
        want_genesis.update(&LOG_ID);
        assert_eq!(genesis, *want_genesis.finalize().as_bytes());
        assert_eq!(chain_at(&seg, 56), genesis, "{label}: chain_start is the genesis");
        assert_eq!(j.segment.chain_start.as_deref(), Some(hex(&genesis).as_str()));
        assert_eq!(&seg[88..104], &fmt.key_id(), "{label}: key_id");
        assert_eq!(j.segment.key_id.as_deref(), Some(hex(&fmt.key_id())).as_deref());
        if let Some(k) = fmt.key {
            assert_eq!(fmt.key_id(), ChainKey::from_bytes(k).id(), "{label}: ChainKey::id");
        } else {
            assert_eq!(fmt.key_id(), [0; 16]);
        }
        assert!(seg[104..124].iter().all(|&b| b == 0), "{label}: reserved1");
        let c = j.chain.as_ref().expect("chain in JSON");
        assert_eq!(c.genesis, hex(&genesis));
        let mut chain = genesis;
        for f in &j.segment.frames {
            let frame = &seg[f.offset as usize..(f.offset + f.frame_len) as usize];
            assert_eq!(u64_at(frame, 8), f.frame_len);
            chain = fmt.link(&chain, frame);
            assert_eq!(
                chain_at(frame, 40),
                chain,
                "{label}: chain slot of the frame at {}",
                f.offset
            );
            assert_eq!(f.chain.as_deref(), Some(hex(&chain).as_str()));
            assert_eq!(
                crc(&frame[8..72]).to_le_bytes(),
                frame[4..8],
                "{label}: header_crc covers the chain"
            );
        }
        let next = j
            .segment
            .frames
            .last()
            .map_or(0, |f| f.first_position + u64::from(f.record_count));
        assert_eq!(c.anchor, format!("{next}:{}", hex(&chain)));
    }
    // The keyed chain and the plain one differ from the genesis on.
    assert_ne!(Format::V2.genesis(&LOG_ID), Format::V2_KEYED.genesis(&LOG_ID));
}

/// The v2 simple segment differs from the v1 one only where format v2 says:
/// the header's format_version, log_flags, chain_start and CRC, and each
/// frame's chain slot and header CRC.
#[test]
fn v2_differs_from_v1_only_in_version_flags_and_chain() {
    let v1 = fs::read(dir_of(&Format::V1).join("simple").join(SEGMENT_FILE)).expect("read v1");
    let v2 = fs::read(dir_of(&Format::V2).join("simple").join(SEGMENT_FILE)).expect("read v2");
    assert_eq!(v1.len(), v2.len());
    let j: SimpleJson = load_json(&Format::V2, "simple.json");
    let mut allowed = vec![(8, 12), (56, 88), (124, 128)];
    for f in &j.segment.frames {
        let o = f.offset as usize;
        allowed.push((o + 4, o + 8));
        allowed.push((o + 40, o + 72));
    }
    for (i, (a, b)) in v1.iter().zip(&v2).enumerate() {
        if a != b {
            assert!(
                allowed.iter().any(|&(s, e)| (s..e).contains(&i)),
                "byte {i} differs between v1 and v2: {a:#04x} vs {b:#04x}"
            );
        }
    }
    let h1 = fs::read(dir_of(&Format::V1).join("simple").join(HEAD_FILE)).expect("read v1 head");
    let h2 = fs::read(dir_of(&Format::V2).join("simple").join(HEAD_FILE)).expect("read v2 head");
    for slot in [0usize, 64] {
        assert_eq!(
            (u16_at(&h1, slot + 8), u16_at(&h2, slot + 8)),
            (1, 2),
            "head slot format_version"
        );
        assert_eq!(h1[slot + 16..slot + 64], h2[slot + 16..slot + 64], "head slot fields");
    }
}

/// (b) annal's writer writes the simple vector of `fmt` byte for byte.
fn check_writer_produces_simple(fmt: Format, name: &str) {
    let j: SimpleJson = load_json(&fmt, &format!("{name}.json"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (clock, calls) = planned_clock(j.writer.clock_readings.clone());
    let log = Log::open_with(&dir, options(&fmt).log_id(LOG_ID).clock(clock)).expect("create log");
    assert!(log.recovery().created);
    for b in [BATCH_1, BATCH_2] {
        append(&log, &b);
    }
    assert_log_format(&log, &fmt, j.chain.as_ref());
    log.close().expect("close");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        j.writer.clock_readings.len(),
        "clock readings taken by the writer"
    );
    let ckpt = golden::checkpoint_name(&dir, 0);
    assert_eq!(
        file_names(&dir),
        names(&[SEGMENT_FILE, HEAD_FILE, LOCK_FILE, ckpt.as_str()])
    );
    assert_eq!(fs::read(dir.join(LOCK_FILE)).expect("read lock").len(), 0);
    let want = dir_of(&fmt).join(name);
    let label = format!("v{}/{name}", fmt.version);
    assert_bytes_eq(
        &format!("writer's segment vs {label} vector"),
        &fs::read(dir.join(SEGMENT_FILE)).expect("read segment"),
        &fs::read(want.join(SEGMENT_FILE)).expect("read vector segment"),
    );
    assert_bytes_eq(
        &format!("writer's head file vs {label} vector"),
        &fs::read(dir.join(HEAD_FILE)).expect("read head"),
        &fs::read(want.join(HEAD_FILE)).expect("read vector head"),
    );
}

/// (b) With `format_version(1)`, annal's writer writes the v1 simple vector.
#[test]
fn writer_produces_the_simple_vector() {
    check_writer_produces_simple(Format::V1, "simple");
}

/// (b) A new log (format v2, the chain) is the v2 simple vector byte for byte.
#[test]
fn writer_produces_the_simple_v2_vector() {
    check_writer_produces_simple(Format::V2, "simple");
}

/// (b) A new log with the test chain key is the v2 keyed vector.
#[test]
fn writer_produces_the_keyed_v2_vector() {
    check_writer_produces_simple(Format::V2_KEYED, "keyed");
}

/// The torn vector is a true crash image of annal's writer: its head file is
/// the writer's head file after batch 2, and its segment is a prefix of what
/// the writer writes for batch 3.
fn check_writer_crash_image(fmt: Format) {
    let j: TornJson = load_json(&fmt, "torn.json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (clock, calls) = planned_clock(j.writer.clock_readings.clone());
    let log = Log::open_with(&dir, options(&fmt).log_id(LOG_ID).clock(clock)).expect("create log");
    append(&log, &BATCH_1);
    append(&log, &BATCH_2);
    assert_log_format(&log, &fmt, j.chain.as_ref());
    let want = dir_of(&fmt).join("torn");
    assert_bytes_eq(
        "writer's head file after batch 2 vs torn vector",
        &fs::read(dir.join(HEAD_FILE)).expect("read head"),
        &fs::read(want.join(HEAD_FILE)).expect("read vector head"),
    );
    append(&log, &BATCH_3);
    assert_eq!(calls.load(Ordering::SeqCst), j.writer.clock_readings.len());
    let seg = fs::read(dir.join(SEGMENT_FILE)).expect("read segment");
    let torn = fs::read(want.join(SEGMENT_FILE)).expect("read vector segment");
    assert_eq!(seg.len() as u64, j.torn_frame.offset + j.torn_frame.frame_len);
    assert_eq!(torn.len() as u64, j.torn_frame.offset + j.torn_frame.bytes_in_file);
    assert_bytes_eq("writer's segment prefix vs torn vector", &seg[..torn.len()], &torn);
    log.close().expect("close");
}

#[test]
fn writer_crash_image_matches_the_torn_vector() {
    check_writer_crash_image(Format::V1);
}

#[test]
fn writer_crash_image_matches_the_torn_v2_vector() {
    check_writer_crash_image(Format::V2);
}

/// The simple vector reads back as its JSON says, through a reader and
/// through a writer (which finds nothing to recover).
fn check_simple_reads_back(fmt: Format, name: &str) {
    let j: SimpleJson = load_json(&fmt, &format!("{name}.json"));
    let want = expected_events(&j.segment.frames);

    let tmp = copy_vector(&fmt, name);
    // A reader needs no key: readers ignore the chain.
    let reader = Reader::open(tmp.path()).expect("open reader");
    let view = reader.view().expect("reader view");
    assert_eq!(read_events(&view).expect("read through reader"), want);
    assert_eq!(view.next_position(), want.len() as u64);
    drop(view);
    drop(reader);

    let before = fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment");
    if fmt.key.is_some() {
        // Opening a keyed log for writing without its key fails and changes nothing.
        match Log::open(tmp.path()) {
            Err(Error::ChainKey { .. }) => {}
            other => panic!("{name}: expected Error::ChainKey without the key, got {other:?}"),
        }
    }
    // An existing log keeps its format whatever the options say (v1 stays
    // v1 with the default options, which create v2 logs).
    let opts = match fmt.key {
        Some(k) => Options::default().chain_key(ChainKey::from_bytes(k)),
        None => Options::default(),
    };
    let log = Log::open_with(tmp.path(), opts).expect("open simple vector");
    assert_eq!(log.recovery(), &annal::Recovery::default());
    assert_log_format(&log, &fmt, j.chain.as_ref());
    assert_eq!(
        read_events(&log.view().expect("view")).expect("read through writer"),
        want
    );
    log.close().expect("close");
    assert_bytes_eq(
        "simple segment after open and close",
        &fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment"),
        &before,
    );
}

#[test]
fn simple_vector_reads_back() {
    check_simple_reads_back(Format::V1, "simple");
}

#[test]
fn simple_v2_vector_reads_back() {
    check_simple_reads_back(Format::V2, "simple");
}

#[test]
fn keyed_v2_vector_reads_back() {
    check_simple_reads_back(Format::V2_KEYED, "keyed");
}

/// (c) Recovery of the torn vector: truncation and the records that remain.
fn check_torn_recovers(fmt: Format) {
    let j: TornJson = load_json(&fmt, "torn.json");
    let want: Vec<EventJson> = j.expected_recovery.records.iter().map(|r| r.event.clone()).collect();

    // A reader (no lock, never modifies) already sees exactly the complete batches.
    let tmp = copy_vector(&fmt, "torn");
    let torn_bytes = fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment");
    {
        let reader = Reader::open(tmp.path()).expect("open reader");
        let view = reader.view().expect("reader view");
        assert_eq!(read_events(&view).expect("read through reader"), want);
    }
    assert_bytes_eq(
        "torn segment after reading",
        &fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment"),
        &torn_bytes,
    );

    let log = Log::open(tmp.path()).expect("open torn vector");
    let rec = log.recovery();
    assert!(!rec.created && rec.reinitialized.is_none());
    let t = rec.truncated.as_ref().expect("a torn tail was removed");
    let expected = &j.expected_recovery.truncated;
    assert_eq!(file_name(&t.path), expected.file);
    assert_eq!(
        (t.offset, t.bytes_removed),
        (expected.offset, expected.bytes_removed),
        "truncation (offset, bytes removed); reason: {}",
        t.reason
    );
    // After recovery the chain is again the one after batch 2.
    assert_log_format(&log, &fmt, j.chain.as_ref());
    let view = log.view().expect("view");
    assert_eq!(read_events(&view).expect("read after recovery"), want);
    assert_eq!(view.next_position(), want.len() as u64);
    drop(view);
    let after = fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment");
    assert_eq!(after.len() as u64, j.expected_recovery.segment_length_after);
    // What remains is the simple vector's segment.
    assert_bytes_eq(
        "recovered torn segment vs simple vector",
        &after,
        &fs::read(dir_of(&fmt).join("simple").join(SEGMENT_FILE)).expect("read simple segment"),
    );
    log.close().expect("close");
}

#[test]
fn torn_vector_recovers_as_documented() {
    check_torn_recovers(Format::V1);
}

#[test]
fn torn_v2_vector_recovers_as_documented() {
    check_torn_recovers(Format::V2);
}

/// (d) The corrupt vector: `Corrupt` with the documented file and offset,
/// nothing removed, and a reader never returns the flipped data.
fn check_corrupt_is_reported(fmt: Format) {
    let j: CorruptJson = load_json(&fmt, "corrupt.json");
    let e = &j.expected_error;
    assert_eq!(e.kind, "Corrupt");
    let tmp = copy_vector(&fmt, "corrupt");
    let seg_path = tmp.path().join(SEGMENT_FILE);
    let head_path = tmp.path().join(HEAD_FILE);
    let seg_before = fs::read(&seg_path).expect("read segment");
    let head_before = fs::read(&head_path).expect("read head");
    assert_eq!(seg_before[j.flipped_byte.offset as usize], j.flipped_byte.flipped);

    match Log::open(tmp.path()) {
        Err(Error::Corrupt { path, offset, detail }) => {
            assert_eq!(file_name(&path), e.file, "file of the error ({detail})");
            assert_eq!(offset, e.offset, "offset of the error ({detail})");
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    assert_bytes_eq(
        "corrupt segment after a failed open",
        &fs::read(&seg_path).expect("read"),
        &seg_before,
    );
    assert_bytes_eq(
        "head after a failed open",
        &fs::read(&head_path).expect("read"),
        &head_before,
    );
    assert!(
        file_names(tmp.path()).is_subset(&names(&[SEGMENT_FILE, HEAD_FILE, LOCK_FILE])),
        "files after a failed open: {:?}",
        file_names(tmp.path())
    );

    // A reader fails too: when taking the view (it validates the active segment
    // up to the durable end), or at the latest when reading batch 1.
    let reader = Reader::open(tmp.path()).expect("open reader");
    let err = match reader.view() {
        Err(err) => err,
        Ok(view) => {
            let mut items = view.read_all(0);
            match items.next() {
                Some(Err(err)) => err,
                Some(Ok(r)) => panic!("a reader returned a record of the damaged batch: {r:?}"),
                None => panic!("a reader returned no error for the corrupt vector"),
            }
        }
    };
    match err {
        Error::Corrupt { path, offset, .. } => {
            assert_eq!(file_name(&path), e.file);
            assert_eq!(offset, e.offset);
        }
        other => panic!("expected Error::Corrupt from the reader, got {other:?}"),
    }
    assert_bytes_eq(
        "corrupt segment after reading",
        &fs::read(&seg_path).expect("read"),
        &seg_before,
    );
}

#[test]
fn corrupt_vector_is_reported_and_nothing_removed() {
    check_corrupt_is_reported(Format::V1);
}

#[test]
fn corrupt_v2_vector_is_reported_and_nothing_removed() {
    check_corrupt_is_reported(Format::V2);
}

/// Every CRC the JSON lists is the CRC the spec's tables name, computed here
/// from the committed bytes: the segment header's over `[0, 124)` (spec 2.1),
/// each frame header's over its `[8, 72)` (3.1), each record's over its
/// `[8, record_len)` (3.2), each head slot's over its `[8, 64)` (5.2).
#[test]
fn json_crcs_are_the_crcs_of_the_committed_bytes() {
    fn check(label: &str, seg: &[u8], head: &[u8], j: &Value) {
        let want = |v: &Value, what: &str| -> u32 {
            let s = v.as_str().unwrap_or_else(|| panic!("{label}: {what} is a hex string"));
            u32::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex")
        };
        let segment = &j["segment"];
        assert_eq!(
            want(&segment["header_crc"], "segment header_crc"),
            crc(&seg[..124]),
            "{label}: segment header_crc"
        );
        assert_eq!(u32_at(seg, 124), crc(&seg[..124]), "{label}: stored header_crc");
        let mut frames: Vec<&Value> = segment["frames"].as_array().expect("frames").iter().collect();
        if let Some(t) = j.get("torn_frame") {
            frames.push(t);
        }
        let mut n = 0;
        for f in frames {
            let off = f["offset"].as_u64().expect("offset") as usize;
            let h = &seg[off..off + 72];
            assert_eq!(
                want(&f["header_crc"], "frame header_crc"),
                crc(&h[8..]),
                "{label}: frame at {off}"
            );
            assert_eq!(
                u32_at(h, 4),
                crc(&h[8..]),
                "{label}: stored header_crc of the frame at {off}"
            );
            for r in f["records"].as_array().expect("records") {
                let at = r["offset"].as_u64().expect("offset") as usize;
                let len = r["record_len"].as_u64().expect("record_len") as usize;
                let w = want(&r["crc"], "record crc");
                if at + len <= seg.len() {
                    assert_eq!(w, crc(&seg[at + 8..at + len]), "{label}: record at {at}");
                    assert_eq!(u32_at(seg, at + 4), w, "{label}: stored crc of the record at {at}");
                } else {
                    // The torn record: its header reached the file, its body did not.
                    assert_eq!(u32_at(seg, at + 4), w, "{label}: stored crc of the torn record at {at}");
                }
                n += 1;
            }
        }
        assert!(n > 0, "{label}: records listed");
        for s in j["head"]["slots"].as_array().expect("slots") {
            let at = s["file_offset"].as_u64().expect("file_offset") as usize;
            assert_eq!(
                want(&s["crc"], "slot crc"),
                crc(&head[at + 8..at + 64]),
                "{label}: head slot at {at}"
            );
            assert_eq!(
                u32_at(head, at + 4),
                crc(&head[at + 8..at + 64]),
                "{label}: stored slot crc at {at}"
            );
        }
    }
    for (fmt, name) in [
        (Format::V1, "simple"),
        (Format::V1, "torn"),
        (Format::V2, "simple"),
        (Format::V2, "torn"),
        (Format::V2_KEYED, "keyed"),
    ] {
        let dir = dir_of(&fmt);
        let seg = fs::read(dir.join(name).join(SEGMENT_FILE)).expect("read segment");
        let head = fs::read(dir.join(name).join(HEAD_FILE)).expect("read head");
        let j: Value = golden::load_json_from(&dir, &format!("{name}.json"));
        check(&format!("v{}/{name}", fmt.version), &seg, &head, &j);
    }
}
