//! Golden vectors of annal's log format v1 (`spec/format.md`, section 15).
//!
//! `spec/vectors/v1/` holds three vectors, each a log directory and a JSON
//! description of it:
//!
//! * `simple/` + `simple.json`: one segment with two batches, cleanly closed;
//! * `torn/` + `torn.json`: the same two batches and a third one cut short in
//!   the middle of its record, with the head file a crashed writer leaves;
//! * `corrupt/` + `corrupt.json`: `simple/` with one byte of a durable record
//!   flipped.
//!
//! The bytes are assembled here from the tables of `spec/format.md` alone, by
//! the small helpers of the "spec assembly" section below, which use neither
//! annal's encoder nor `annal::format` (only `crc32fast` for the CRC). The
//! tests check that
//!
//! 1. the committed files and JSON equal the spec assembly;
//! 2. annal's writer, given the same log id, clock and event ids, writes the
//!    same bytes (and, for the torn vector, the same crash image);
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

use annal::{Error, EventData, ExpectedVersion, Log, LogView, Options, Reader, Uuid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use golden::{
    Event, EventJson, HeadSlot, assert_bytes_eq, batch_frame, crc, event_data, event_of, file_names, head_file, hex,
    id_from, lines, planned_clock, record, regenerating, segment_header, vectors_dir,
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

/// Segment 0 of a new log holding `batches`, as written by a writer in
/// `Durability::Buffered` mode that has not fsynced since creating the
/// segment: every frame's `durable_end` is 128. Positions start at 0 and are
/// contiguous (spec 11.1); stream versions start at 0 per stream (11.2).
fn assemble_segment(batches: &[Batch]) -> (Vec<u8>, Vec<FrameLayout>) {
    let mut seg = segment_header(LOG_ID, 0, 0, CREATED_AT);
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
                position: pos,
                stream_version: version,
                timestamp: b.timestamp,
                stream: b.stream,
                event: *ev,
            });
            at += r.len() as u64;
            records.push(r);
        }
        let frame = batch_frame(position, SEGMENT_HEADER_LEN, &records);
        frames.push(FrameLayout {
            offset,
            len: frame.len() as u64,
            first_position: position,
            durable_end: SEGMENT_HEADER_LEN,
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
    records: Vec<RecordJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentJson {
    file: String,
    length: u64,
    base_position: u64,
    prev_timestamp: u64,
    created_at: u64,
    /// The complete frames, in file order.
    frames: Vec<FrameJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeadSlotJson {
    file_offset: u64,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimpleJson {
    description: Vec<String>,
    format_version: u16,
    /// The 16 bytes of the log id, in hex.
    log_id: String,
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
        event: event_json(r),
    }
}

fn frame_json(f: &FrameLayout) -> FrameJson {
    FrameJson {
        offset: f.offset,
        frame_len: f.len,
        kind: 1,
        first_position: f.first_position,
        record_count: f.records.len() as u32,
        durable_end: f.durable_end,
        records: f.records.iter().map(record_json).collect(),
    }
}

fn segment_json(length: u64, frames: &[FrameLayout]) -> SegmentJson {
    SegmentJson {
        file: SEGMENT_FILE.to_owned(),
        length,
        base_position: 0,
        prev_timestamp: 0,
        created_at: CREATED_AT,
        frames: frames.iter().map(frame_json).collect(),
    }
}

fn head_json(history: &[HeadSlot]) -> HeadJson {
    let mut slots: Vec<HeadSlotJson> = Vec::new();
    for s in history {
        slots.retain(|j| j.file_offset != s.file_offset());
        slots.push(HeadSlotJson {
            file_offset: s.file_offset(),
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
    name: &'static str,
    segment: Vec<u8>,
    head: Vec<u8>,
    /// The JSON description, fields in declaration order.
    json_text: String,
}

impl Vector {
    fn new(name: &'static str, segment: Vec<u8>, head: Vec<u8>, json: &impl Serialize) -> Vector {
        let mut json_text = serde_json::to_string_pretty(json).expect("serialize JSON");
        json_text.push('\n');
        Vector {
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

fn build_simple() -> Vector {
    let batches = [BATCH_1, BATCH_2];
    let (segment, frames) = assemble_segment(&batches);
    let history = writer_head_history(&frames, true);
    let json = SimpleJson {
        description: lines(&[
            "A cleanly closed log of one segment holding two batches, written by a writer in Durability::Buffered \
             mode with an explicit log id, clock and event ids, then closed.",
            "Batch 1: stream order-1, events OrderPlaced and ItemAdded. Batch 2: stream customer-9, event Registered.",
            "Every frame's durable_end is 128: nothing was fsynced before close. The head's current slot has \
             durable_end = visible_end = the segment length (spec 5.2, a cleanly closed log).",
            "Offsets are file offsets. metadata and payload are the bytes as UTF-8 text. Integers are exact u64.",
            "The directory holds no annal.lock (a writer creates it when it opens the log).",
        ]),
        format_version: 1,
        log_id: hex(&LOG_ID),
        files: vec![SEGMENT_FILE.to_owned(), HEAD_FILE.to_owned()],
        writer: writer_json(&batches, &history),
        segment: segment_json(segment.len() as u64, &frames),
        head: head_json(&history),
    };
    Vector::new("simple", segment, head_file(&history), &json)
}

fn build_torn() -> Vector {
    let batches = [BATCH_1, BATCH_2, BATCH_3];
    let (full, frames) = assemble_segment(&batches);
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
    let json = TornJson {
        description: lines(&[
            "A crash image: the two batches of simple.json, then a third batch (stream order-1, event OrderShipped) \
             whose write was cut short in the middle of its record, by a writer in Durability::Buffered mode that \
             never fsynced.",
            "The file ends after the torn frame's 72-byte header (intact), its record's 72-byte header, the stream \
             name and the first 5 bytes of the event type.",
            "The head file is the one the writer left: the crash struck during the write of batch 3, before the \
             head slot that follows that write, so the current slot is the one written after batch 2 \
             (durable_end 128, visible_end = end of batch 2).",
            "Recovery (spec 6): the durable boundary B is 128 (every frame header and the head say 128); the first \
             frame that is not complete is batch 3 at X = end of batch 2 >= B, so the tail [X, end) is removed \
             and the two complete batches remain.",
        ]),
        format_version: 1,
        log_id: hex(&LOG_ID),
        files: vec![SEGMENT_FILE.to_owned(), HEAD_FILE.to_owned()],
        writer: writer_json(&batches, &history),
        segment: segment_json(segment.len() as u64, complete),
        torn_frame: TornFrameJson {
            offset: torn.offset,
            frame_len: torn.len,
            kind: 1,
            first_position: torn.first_position,
            record_count: torn.records.len() as u32,
            durable_end: torn.durable_end,
            bytes_in_file: cut - torn.offset,
            records: torn.records.iter().map(record_json).collect(),
        },
        head: head_json(&history),
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
    Vector::new("torn", segment, head_file(&history), &json)
}

fn build_corrupt() -> Vector {
    let simple = build_simple();
    let (_, frames) = assemble_segment(&[BATCH_1, BATCH_2]);
    let frame = &frames[0];
    let rec = &frame.records[0];
    let ev = &rec.event;
    let payload_at = rec.offset + 72 + (rec.stream.len() + ev.event_type.len() + ev.metadata.len()) as u64;
    let mut segment = simple.segment.clone();
    let original = segment[payload_at as usize];
    let flipped = original ^ FLIP_MASK;
    segment[payload_at as usize] = flipped;
    let end = frames.last().map_or(SEGMENT_HEADER_LEN, FrameLayout::end);
    let json = CorruptJson {
        description: lines(&[
            "The cleanly closed log of simple.json (same head file) with one byte flipped: the first payload byte \
             of the record at position 0, in batch 1.",
            "The log was cleanly closed, so its durable boundary is its end (spec 5.2): the damage lies below it \
             and is corruption, not a torn write. Opening for writing fails with Corrupt and removes nothing; \
             a reader returns an error, never the flipped data.",
            "expected_error.offset is what annal reports: the crc field (record offset 4) of the damaged record. \
             damaged_frame_offset is X of spec 6 step 4, the offset of the batch that is not complete.",
        ]),
        format_version: 1,
        log_id: hex(&LOG_ID),
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
    Vector::new("corrupt", segment, simple.head, &json)
}

fn write_vector(v: &Vector) {
    let dir = vectors_dir().join(v.name);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove old vector directory");
    }
    fs::create_dir_all(&dir).expect("create vector directory");
    fs::write(dir.join(SEGMENT_FILE), &v.segment).expect("write segment");
    fs::write(dir.join(HEAD_FILE), &v.head).expect("write head");
    fs::write(vectors_dir().join(format!("{}.json", v.name)), &v.json_text).expect("write JSON");
}

/// The spec-assembled vectors; with `ANNAL_REGENERATE_VECTORS=1`, written to
/// `spec/vectors/v1/` (once per test process, before any test reads them).
fn vectors() -> &'static [Vector; 3] {
    static V: OnceLock<[Vector; 3]> = OnceLock::new();
    V.get_or_init(|| {
        let v = [build_simple(), build_torn(), build_corrupt()];
        if regenerating() {
            v.iter().for_each(write_vector);
        }
        v
    })
}

fn load_json<T: serde::de::DeserializeOwned>(name: &str) -> T {
    vectors();
    golden::load_json(name)
}

// ============================================================ helpers

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A fresh copy of vector `name`'s directory.
fn copy_vector(name: &str) -> tempfile::TempDir {
    vectors();
    golden::copy_dir(&vectors_dir().join(name))
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

// ============================================================== tests

#[test]
fn crc_is_the_one_the_spec_names() {
    assert_eq!(crc(b"123456789"), 0xCBF4_3926);
}

/// (a) The committed vectors are exactly what the spec tables produce.
#[test]
fn committed_vectors_equal_the_spec_assembly() {
    for v in vectors() {
        let dir = vectors_dir().join(v.name);
        assert_eq!(
            file_names(&dir),
            names(&[SEGMENT_FILE, HEAD_FILE]),
            "files of {}",
            dir.display()
        );
        let seg = fs::read(dir.join(SEGMENT_FILE)).expect("read segment");
        assert_bytes_eq(&format!("{}/{SEGMENT_FILE}", v.name), &seg, &v.segment);
        let head = fs::read(dir.join(HEAD_FILE)).expect("read head");
        assert_bytes_eq(&format!("{}/{HEAD_FILE}", v.name), &head, &v.head);
        let json: Value = load_json(&format!("{}.json", v.name));
        assert_eq!(json, v.json(), "{}.json differs from the spec assembly", v.name);
    }
}

/// The simple vector's layout, as its JSON states it, is consistent with the
/// spec's arithmetic (header 128, frames back to back, 8-aligned).
#[test]
fn simple_json_layout_is_consistent() {
    let j: SimpleJson = load_json("simple.json");
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

/// (b) annal's writer writes the simple vector byte for byte.
#[test]
fn writer_produces_the_simple_vector() {
    let j: SimpleJson = load_json("simple.json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (clock, calls) = planned_clock(j.writer.clock_readings.clone());
    let log = Log::open(&dir, Options::default().log_id(LOG_ID).clock(clock)).expect("create log");
    assert!(log.recovery().created);
    for b in [BATCH_1, BATCH_2] {
        append(&log, &b);
    }
    log.close().expect("close");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        j.writer.clock_readings.len(),
        "clock readings taken by the writer"
    );
    assert_eq!(file_names(&dir), names(&[SEGMENT_FILE, HEAD_FILE, LOCK_FILE]));
    assert_eq!(fs::read(dir.join(LOCK_FILE)).expect("read lock").len(), 0);
    let want = vectors_dir().join("simple");
    assert_bytes_eq(
        "writer's segment vs simple vector",
        &fs::read(dir.join(SEGMENT_FILE)).expect("read segment"),
        &fs::read(want.join(SEGMENT_FILE)).expect("read vector segment"),
    );
    assert_bytes_eq(
        "writer's head file vs simple vector",
        &fs::read(dir.join(HEAD_FILE)).expect("read head"),
        &fs::read(want.join(HEAD_FILE)).expect("read vector head"),
    );
}

/// The torn vector is a true crash image of annal's writer: its head file is
/// the writer's head file after batch 2, and its segment is a prefix of what
/// the writer writes for batch 3.
#[test]
fn writer_crash_image_matches_the_torn_vector() {
    let j: TornJson = load_json("torn.json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (clock, calls) = planned_clock(j.writer.clock_readings.clone());
    let log = Log::open(&dir, Options::default().log_id(LOG_ID).clock(clock)).expect("create log");
    append(&log, &BATCH_1);
    append(&log, &BATCH_2);
    let want = vectors_dir().join("torn");
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

/// The simple vector reads back as its JSON says, through a reader and
/// through a writer (which finds nothing to recover).
#[test]
fn simple_vector_reads_back() {
    let j: SimpleJson = load_json("simple.json");
    let want = expected_events(&j.segment.frames);

    let tmp = copy_vector("simple");
    let mut reader = Reader::open(tmp.path()).expect("open reader");
    let view = reader.view().expect("reader view");
    assert_eq!(read_events(&view).expect("read through reader"), want);
    assert_eq!(view.next_position(), want.len() as u64);
    drop(view);
    drop(reader);

    let before = fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment");
    let log = Log::open(tmp.path(), Options::default()).expect("open simple vector");
    assert_eq!(log.recovery(), &annal::Recovery::default());
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

/// (c) Recovery of the torn vector: truncation and the records that remain.
#[test]
fn torn_vector_recovers_as_documented() {
    let j: TornJson = load_json("torn.json");
    let want: Vec<EventJson> = j.expected_recovery.records.iter().map(|r| r.event.clone()).collect();

    // A reader (no lock, never modifies) already sees exactly the complete batches.
    let tmp = copy_vector("torn");
    let torn_bytes = fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment");
    {
        let mut reader = Reader::open(tmp.path()).expect("open reader");
        let view = reader.view().expect("reader view");
        assert_eq!(read_events(&view).expect("read through reader"), want);
    }
    assert_bytes_eq(
        "torn segment after reading",
        &fs::read(tmp.path().join(SEGMENT_FILE)).expect("read segment"),
        &torn_bytes,
    );

    let log = Log::open(tmp.path(), Options::default()).expect("open torn vector");
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
        &fs::read(vectors_dir().join("simple").join(SEGMENT_FILE)).expect("read simple segment"),
    );
    log.close().expect("close");
}

/// (d) The corrupt vector: `Corrupt` with the documented file and offset,
/// nothing removed, and a reader never returns the flipped data.
#[test]
fn corrupt_vector_is_reported_and_nothing_removed() {
    let j: CorruptJson = load_json("corrupt.json");
    let e = &j.expected_error;
    assert_eq!(e.kind, "Corrupt");
    let tmp = copy_vector("corrupt");
    let seg_path = tmp.path().join(SEGMENT_FILE);
    let head_path = tmp.path().join(HEAD_FILE);
    let seg_before = fs::read(&seg_path).expect("read segment");
    let head_before = fs::read(&head_path).expect("read head");
    assert_eq!(seg_before[j.flipped_byte.offset as usize], j.flipped_byte.flipped);

    match Log::open(tmp.path(), Options::default()) {
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
    let mut reader = Reader::open(tmp.path()).expect("open reader");
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
