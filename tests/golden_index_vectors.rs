//! Golden vectors of annal's derived files (`spec/format.md`, sections 16-19):
//! segment index files (`.idx`), the stream table (`annal.streams`), the
//! stream hash (FNV-1a) and categories.
//!
//! * `spec/vectors/v1/index.json`: FNV-1a 64 test vectors of the stream hash
//!   and the category of each name (spec 19), computed by [`fnv1a64`] and
//!   [`category`] below and checked against `annal::stream_hash` and
//!   `annal::category_of`.
//! * `spec/vectors/v1/indexed/` + `indexed.json`: a cleanly closed log of two
//!   sealed segments and an active one, with the `.idx` file of each sealed
//!   segment and the stream table, and the results of index-served reads.
//! * `spec/vectors/v2/indexed/` + `indexed.json`: the same log in format v2
//!   (the audit chain, spec 21, computed here with the `blake3` crate): the
//!   chain crosses the seals, and the seals' CRCs (the indexes' `seal_crc`)
//!   differ from v1's. `index.json` does not depend on the log format and is
//!   only in `v1/`.
//!
//! Everything is assembled here from the tables of `spec/format.md` alone,
//! with neither annal's encoders nor `annal::format` (only `crc32fast` for the
//! CRC):
//!
//! * the segments and the head file from the plan below (spec 2, 3, 5.2, 8),
//!   as `tests/golden_vectors.rs` does for one segment;
//! * the index files and the stream table from the *events* found by a
//!   minimal parser of the segment files (spec 2, 3): stream, version, event
//!   type, positions and frame and record offsets, plus each sealed segment's
//!   length and seal CRC.
//!
//! The tests check that
//!
//! 1. the committed segments, head file and JSON equal the spec assembly, and
//!    the committed `.idx` files and stream table equal what the spec tables
//!    give for the events of the *committed* segments;
//! 2. annal's writer, given the same log id, clock, event ids and segment
//!    size, writes every file byte for byte;
//! 3. `annal::Reader` and `annal::Log` opened on the committed vector return
//!    exactly the reads `indexed.json` lists, through the committed index files
//!    (no index is reported damaged or rebuilt).
//!
//! Where the spec leaves a choice open, the assembly follows annal's writer
//! and says so (search for "not fixed by the spec").
//!
//! To (re)write the vectors from the spec assembly instead of comparing:
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --test golden_index_vectors
//! ```

mod golden;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use annal::{Direction, EventData, ExpectedVersion, Log, LogView, Options, Reader, RecordRef, Uuid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use golden::{
    Event, EventJson, Format, HeadSlot, assert_bytes_eq, assert_tree_committed, batch_frame_in, chain_hex, crc,
    event_data, event_of, file_names, frame_header_with_chain, head_file_in, head_slot, hex, id_from, lines,
    planned_clock, put, record, regenerating, segment_header_in,
};

// ============================================================== the plan

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
/// `Options::segment_size`: small enough that the eight batches below fill
/// two segments and start a third (see `the_plan_splits_the_same_way_under_both_readings_of_section_8`).
const SEGMENT_SIZE: u64 = 900;
/// The first clock reading: `created_at` of segment 0.
const T0: u64 = 1_700_000_000_000_000_000;
/// The clock reading taken when the writer creates a new segment comes this
/// long after the timestamp of the batch that did not fit (informative only).
const ROLL_CLOCK_DELAY: u64 = 50;
/// The stream hash mask written into every derived file (spec 17.1: all ones
/// except in tests that force collisions).
const HASH_MASK: u64 = u64::MAX;

const VECTOR: &str = "indexed";
const HEAD_FILE: &str = "annal.head";
const LOCK_FILE: &str = "annal.lock";
const STREAM_TABLE_FILE: &str = "annal.streams";

/// Spec 2.1, 3.1: lengths of the segment header and of a frame header.
const SEGMENT_HEADER_LEN: u64 = 128;
const FRAME_HEADER_LEN: u64 = 72;
/// Spec 16: block size and footer length of derived files.
const BLOCK: usize = 4096;
const FOOTER_LEN: usize = 32;
/// Spec 17.1, 18: header lengths; 17.2, 18: row and entry sizes.
const IDX_HEADER_LEN: usize = 128;
const IDX_NAMED_ROW_LEN: usize = 32;
/// Spec 17.1: the index layout a writer writes (version 2), and the older
/// one it still reads (version 1).
const INDEX_VERSION: u16 = 2;

/// Spec 17.1: `(stream row, stream entry, named entry, frame entry)` sizes of
/// index version `v`.
const fn idx_sizes(v: u16) -> (usize, usize, usize, usize) {
    if v == 1 { (56, 16, 8, 16) } else { (48, 8, 4, 8) }
}
const STB_HEADER_LEN: usize = 64;
const STB_ROW_LEN: usize = 40;
/// Spec 17.2: "none" values of `prev_segment` and `prev_row`.
const NO_SEGMENT: u64 = 0xFFFF_FFFF_FFFF_FFFF;
const NO_ROW: u32 = 0xFFFF_FFFF;

/// One `append` call: one or more events of one stream, one timestamp (the
/// writer's clock reading for it).
#[derive(Debug, Clone, Copy)]
struct Batch {
    stream: &'static str,
    timestamp: u64,
    events: &'static [Event],
}

const fn ev(event_type: &'static str, payload: &'static str, metadata: &'static str, id: u8, sv: u32) -> Event {
    Event {
        event_type,
        payload,
        metadata,
        id: id_from(id),
        schema_version: sv,
    }
}

/// The appends, in order. Streams `order-1` and `order-2` (category `order`),
/// `customer-9` (category `customer`) and `order` (no `-`: no category, though
/// its name equals the category `order`). Segment 0 gets batches 1-3, segment
/// 1 batches 4-6, the active segment 2 batches 7-8.
const BATCHES: [Batch; 8] = [
    Batch {
        stream: "order-1",
        timestamp: T0 + 100,
        events: &[
            ev("OrderPlaced", r#"{"total":42}"#, r#"{"user":"ann"}"#, 0x01, 1),
            ev("ItemAdded", r#"{"sku":"A-7"}"#, "", 0x11, 0),
        ],
    },
    Batch {
        stream: "customer-9",
        timestamp: T0 + 200,
        events: &[ev("Registered", "ann", "", 0x21, 3)],
    },
    Batch {
        stream: "order",
        timestamp: T0 + 300,
        events: &[ev("Audited", r#"{"by":"ops"}"#, "", 0x31, 0)],
    },
    Batch {
        stream: "order-2",
        timestamp: T0 + 400,
        events: &[ev("OrderPlaced", r#"{"total":7}"#, r#"{"user":"bob"}"#, 0x41, 1)],
    },
    Batch {
        stream: "order-1",
        timestamp: T0 + 500,
        events: &[ev("OrderShipped", r#"{"carrier":"DHL"}"#, "", 0x51, 0)],
    },
    Batch {
        stream: "order-1",
        timestamp: T0 + 600,
        events: &[
            ev("ItemAdded", r#"{"sku":"B-2"}"#, "", 0x61, 0),
            ev("ItemAdded", r#"{"sku":"C-3"}"#, "", 0x71, 0),
        ],
    },
    Batch {
        stream: "customer-9",
        timestamp: T0 + 700,
        events: &[ev("EmailChanged", "ann@example.com", "", 0x81, 1)],
    },
    Batch {
        stream: "order-2",
        timestamp: T0 + 800,
        events: &[ev("OrderShipped", r#"{"carrier":"UPS"}"#, "", 0x91, 0)],
    },
];

/// Names of the hash test vectors of `index.json`: the spec's three, the names
/// of the indexed vector, and a few more (non-ASCII, several `-`, leading `-`).
const HASH_NAMES: &[&str] = &[
    "",
    "a",
    "foobar",
    "order-42",
    "order",
    "order-1",
    "order-2",
    "customer",
    "customer-9",
    "a-b-c",
    "-x",
    "café-7",
    "注文-1",
    "OrderPlaced",
    "ItemAdded",
    "Registered",
    "Audited",
    "OrderShipped",
    "EmailChanged",
];

// ================================================= spec: hash, category

/// Spec 19: 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`) over the UTF-8 bytes of the name.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Spec 19 and the `hash` columns of 17.2 and 18: the hash ANDed with the
/// file's `hash_mask`.
fn hash(name: &str) -> u64 {
    fnv1a64(name.as_bytes()) & HASH_MASK
}

/// Spec 19: the part of the name before the first `-`; none without a `-`.
fn category(stream: &str) -> Option<&str> {
    stream.find('-').map(|i| &stream[..i])
}

// ============================================ spec: segments and head file
//
// Spec 2, 3 and 5.2, as in tests/golden_vectors.rs; the offsets are the
// `offset` column of the tables.

/// Spec 3.4: a seal; with the chain (21.2), its chain slot holds the chain
/// after the segment's last batch.
fn seal_frame(next_position: u64, durable_end: u64, chain: &[u8; 32]) -> Vec<u8> {
    frame_header_with_chain(2, 72, next_position, 0, durable_end, chain)
}

/// The segment files, the writer's clock readings and its head slots.
struct AssembledLog {
    /// `(base_position, bytes)` per segment, in log order.
    segments: Vec<(u64, Vec<u8>)>,
    /// The chain after the last batch (zero without the chain).
    chain: [u8; 32],
    clock_readings: Vec<u64>,
    head_history: Vec<HeadSlot>,
}

/// The log a writer in `Durability::Buffered` mode writes for `batches` with
/// `segment_size` [`SEGMENT_SIZE`], then closes:
///
/// * spec 8: a batch goes into the active segment if it fits within
///   `segment_size`; otherwise the segment is sealed (spec 3.4) and the batch
///   starts the next one, whose `prev_timestamp` is the last timestamp before
///   it (spec 2.1, 9). "Fits" is read as annal does: the segment's length
///   before the seal plus the batch is at most `segment_size` (the plan is
///   chosen so that counting the 72-byte seal gives the same split);
/// * nothing is fsynced before close except sealed segments (at the roll), so
///   every frame header, seals included, carries `durable_end` 128 (spec 5.1
///   rule 1; a new segment's durable end starts at its header);
/// * clock readings: `created_at` of segment 0, then one per append (its
///   timestamp), and, for an append that does not fit, the `created_at` of
///   the new segment right after its timestamp;
/// * head slots (annal's schedule, not fixed by spec 5.2): sequence 1 when the
///   log is created, one after each append (durable end 128, visible end = the
///   end of the batch in its segment), two at close (durable = visible = the
///   end of the active segment).
///
/// In format `fmt`: with the chain, segment 0's `chain_start` is the genesis,
/// each batch links to the one before, a seal carries the chain after the
/// segment's last batch and the next segment starts from it (spec 21.2).
fn assemble_log(fmt: &Format, batches: &[Batch]) -> AssembledLog {
    let mut clock_readings = vec![T0];
    let mut chain = fmt.genesis(&LOG_ID);
    let mut segments = vec![(0u64, segment_header_in(fmt, LOG_ID, 0, 0, T0, &chain))];
    let mut head_history = vec![HeadSlot {
        sequence: 1,
        segment_base: 0,
        durable_end: SEGMENT_HEADER_LEN,
        visible_end: SEGMENT_HEADER_LEN,
        next_position: 0,
    }];
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let (mut position, mut last_timestamp) = (0u64, 0u64);
    for b in batches {
        assert!(b.timestamp >= last_timestamp, "the plan's timestamps do not decrease");
        clock_readings.push(b.timestamp);
        let first_version = versions.get(b.stream).map_or(0, |v| v + 1);
        let records: Vec<Vec<u8>> = b
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| record(position + i as u64, first_version + i as u64, b.timestamp, b.stream, e))
            .collect();
        let (frame, after) = batch_frame_in(fmt, &chain, position, SEGMENT_HEADER_LEN, &records);
        let (_, seg) = segments.last_mut().expect("a segment");
        if seg.len() as u64 > SEGMENT_HEADER_LEN && (seg.len() + frame.len()) as u64 > SEGMENT_SIZE {
            seg.extend_from_slice(&seal_frame(position, SEGMENT_HEADER_LEN, &chain));
            let created_at = b.timestamp + ROLL_CLOCK_DELAY;
            clock_readings.push(created_at);
            segments.push((
                position,
                segment_header_in(fmt, LOG_ID, position, last_timestamp, created_at, &chain),
            ));
        }
        chain = after;
        let (base, seg) = segments.last_mut().expect("a segment");
        seg.extend_from_slice(&frame);
        position += b.events.len() as u64;
        last_timestamp = b.timestamp;
        versions.insert(b.stream, first_version + b.events.len() as u64 - 1);
        head_history.push(HeadSlot {
            sequence: head_history.len() as u64 + 1,
            segment_base: *base,
            durable_end: SEGMENT_HEADER_LEN,
            visible_end: seg.len() as u64,
            next_position: position,
        });
    }
    let (base, seg) = segments.last().expect("a segment");
    for _ in 0..2 {
        head_history.push(HeadSlot {
            sequence: head_history.len() as u64 + 1,
            segment_base: *base,
            durable_end: seg.len() as u64,
            visible_end: seg.len() as u64,
            next_position: position,
        });
    }
    AssembledLog {
        segments,
        chain,
        clock_readings,
        head_history,
    }
}

// ==================================== spec: minimal segment parser (2, 3)

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[derive(Debug, Clone)]
struct ParsedRecord {
    offset: u64,
    len: u64,
    /// The record's `crc` field (spec 3.2).
    crc: u32,
    position: u64,
    stream_version: u64,
    timestamp: u64,
    event_id: [u8; 16],
    schema_version: u32,
    stream: String,
    event_type: String,
    metadata: Vec<u8>,
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct ParsedFrame {
    offset: u64,
    len: u64,
    /// The frame's `header_crc` (spec 3.1).
    header_crc: u32,
    first_position: u64,
    durable_end: u64,
    /// The chain slot (spec 3.1).
    chain: [u8; 32],
    records: Vec<ParsedRecord>,
}

#[derive(Debug, Clone, Copy)]
struct ParsedSeal {
    offset: u64,
    first_position: u64,
    durable_end: u64,
    chain: [u8; 32],
    header_crc: u32,
}

#[derive(Debug, Clone)]
struct ParsedSegment {
    file: String,
    length: u64,
    /// The segment header's `header_crc` (spec 2.1).
    header_crc: u32,
    format_version: u16,
    log_flags: u16,
    base_position: u64,
    prev_timestamp: u64,
    created_at: u64,
    chain_start: [u8; 32],
    key_id: [u8; 16],
    /// The event batches, in file order.
    frames: Vec<ParsedFrame>,
    /// The seal, if the segment is sealed.
    seal: Option<ParsedSeal>,
}

/// Parse a cleanly written segment (spec 2, 3): header, then frames from
/// offset 128 to the end of the file, a seal only as the last frame. Checks
/// magics and CRCs; panics on anything unexpected (the vector is clean).
fn parse_segment(file: &str, b: &[u8]) -> ParsedSegment {
    assert!(b.len() >= 128 && &b[0..8] == b"ANNALSEG", "{file}: segment header");
    assert_eq!(u32_at(b, 124), crc(&b[0..124]), "{file}: header_crc");
    let mut seg = ParsedSegment {
        file: file.to_owned(),
        length: b.len() as u64,
        header_crc: u32_at(b, 124),
        format_version: u16_at(b, 8),
        log_flags: u16_at(b, 10),
        base_position: u64_at(b, 32),
        prev_timestamp: u64_at(b, 40),
        created_at: u64_at(b, 48),
        chain_start: b[56..88].try_into().expect("32 bytes"),
        key_id: b[88..104].try_into().expect("16 bytes"),
        frames: Vec::new(),
        seal: None,
    };
    let mut at = 128usize;
    while at < b.len() {
        assert!(seg.seal.is_none(), "{file}: a frame after the seal");
        let h = &b[at..at + 72];
        assert_eq!(&h[0..4], b"BTCH", "{file}: frame magic at {at}");
        assert_eq!(u32_at(h, 4), crc(&h[8..72]), "{file}: frame header_crc at {at}");
        let frame_len = u64_at(h, 8) as usize;
        let first_position = u64_at(h, 16);
        let record_count = u32_at(h, 24);
        let durable_end = u64_at(h, 32);
        let chain: [u8; 32] = h[40..72].try_into().expect("32 bytes");
        match h[28] {
            2 => {
                seg.seal = Some(ParsedSeal {
                    offset: at as u64,
                    first_position,
                    durable_end,
                    chain,
                    header_crc: u32_at(h, 4),
                });
            }
            1 => {
                let mut records = Vec::new();
                let mut r_at = at + 72;
                for _ in 0..record_count {
                    let r = &b[r_at..];
                    let len = u32_at(r, 0) as usize;
                    let r = &r[..len];
                    assert_eq!(u32_at(r, 4), crc(&r[8..]), "{file}: record crc at {r_at}");
                    let (sl, tl) = (u16_at(r, 54) as usize, u16_at(r, 56) as usize);
                    let (ml, pl) = (u32_at(r, 60) as usize, u32_at(r, 64) as usize);
                    let body = &r[72..];
                    records.push(ParsedRecord {
                        offset: r_at as u64,
                        len: len as u64,
                        crc: u32_at(r, 4),
                        position: u64_at(r, 8),
                        stream_version: u64_at(r, 16),
                        timestamp: u64_at(r, 24),
                        event_id: r[32..48].try_into().expect("16 bytes"),
                        schema_version: u32_at(r, 48),
                        stream: String::from_utf8(body[..sl].to_vec()).expect("UTF-8 stream name"),
                        event_type: String::from_utf8(body[sl..sl + tl].to_vec()).expect("UTF-8 event type"),
                        metadata: body[sl + tl..sl + tl + ml].to_vec(),
                        payload: body[sl + tl + ml..sl + tl + ml + pl].to_vec(),
                    });
                    r_at += len;
                }
                assert_eq!(r_at, at + frame_len, "{file}: records fill the frame at {at}");
                seg.frames.push(ParsedFrame {
                    offset: at as u64,
                    len: frame_len as u64,
                    header_crc: u32_at(h, 4),
                    first_position,
                    durable_end,
                    chain,
                    records,
                });
            }
            k => panic!("{file}: frame kind {k} at {at}"),
        }
        at += frame_len;
    }
    assert_eq!(at, b.len(), "{file}: frames end at the end of the file");
    seg
}

/// The stream of a batch (spec 3.3: one stream per batch).
fn frame_stream(f: &ParsedFrame) -> &str {
    &f.records[0].stream
}

// ============================================ spec: derived files (16-18)

/// Spec 16: append the block CRC table and the footer to the checked region
/// `body` (a multiple of 8 bytes long).
fn finish_derived(mut body: Vec<u8>, magic: &[u8; 8]) -> Vec<u8> {
    assert_eq!(body.len() % 8, 0, "table_offset is a multiple of 8");
    let table_offset = body.len();
    let block_count = table_offset.div_ceil(BLOCK);
    let mut table = Vec::new();
    for i in 0..block_count {
        let block = &body[BLOCK * i..(BLOCK * (i + 1)).min(table_offset)];
        table.extend_from_slice(&crc(block).to_le_bytes());
    }
    let mut footer = [0u8; FOOTER_LEN];
    put(&mut footer, 0, &(table_offset as u64).to_le_bytes());
    put(&mut footer, 8, &(block_count as u64).to_le_bytes());
    put(&mut footer, 16, &crc(&table).to_le_bytes()); // table_crc
    let c = crc(&footer[0..20]);
    put(&mut footer, 20, &c.to_le_bytes()); // footer_crc of [0, 20)
    put(&mut footer, 24, magic);
    body.extend_from_slice(&table);
    body.extend_from_slice(&footer);
    body
}

/// Append `names_len` bytes of names, then zeros to a multiple of 8.
fn push_padded(body: &mut Vec<u8>, names: &[u8]) {
    body.extend_from_slice(names);
    body.resize(body.len().next_multiple_of(8), 0);
}

/// The name area (spec 17.2, 18): spec 17.2 fixes its order. Each row's name
/// is stored once per row, in section order (stream rows, then category rows,
/// then event type rows) and row order, with no sharing: a name used by two
/// rows is stored twice.
#[derive(Debug, Default)]
struct NameArea {
    bytes: Vec<u8>,
}

impl NameArea {
    fn add(&mut self, name: &str) -> u32 {
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name.as_bytes());
        off
    }
}

#[derive(Debug, Clone)]
struct StreamRow {
    name: String,
    hash: u64,
    name_offset: u32,
    first_version: u64,
    last_version: u64,
    entry_start: u32,
    /// `(first_version, frame_offset)` per batch.
    entries: Vec<(u64, u64)>,
    prev_segment: u64,
    prev_row: u32,
}

#[derive(Debug, Clone)]
struct NamedRow {
    name: String,
    hash: u64,
    name_offset: u32,
    entry_start: u32,
    /// Frame offsets (categories, and event types in version 2) or record
    /// offsets (event types in version 1).
    entries: Vec<u64>,
}

/// One `.idx` file (spec 17), before encoding.
#[derive(Debug, Clone)]
struct IndexModel {
    /// `index_version`: 1 or 2.
    version: u16,
    file: String,
    segment_base: u64,
    segment_len: u64,
    seal_crc: u32,
    streams: Vec<StreamRow>,
    categories: Vec<NamedRow>,
    types: Vec<NamedRow>,
    /// `(first_position, frame_offset)` per batch.
    frames: Vec<(u64, u64)>,
    names: Vec<u8>,
}

fn sort_by_hash_and_name<T>(rows: &mut [T], key: impl Fn(&T) -> (u64, &str)) {
    rows.sort_by(|a, b| {
        let (ha, na) = key(a);
        let (hb, nb) = key(b);
        (ha, na.as_bytes()).cmp(&(hb, nb.as_bytes()))
    });
}

/// Named rows from `(name, entry)` pairs in position order, sorted by
/// `(hash, name bytes)`, entries grouped per row in that order.
fn named_rows(pairs: &[(&str, u64)]) -> Vec<NamedRow> {
    let mut rows: Vec<NamedRow> = Vec::new();
    for &(name, entry) in pairs {
        match rows.iter_mut().find(|r| r.name == name) {
            Some(r) => r.entries.push(entry),
            None => rows.push(NamedRow {
                name: name.to_owned(),
                hash: hash(name),
                name_offset: 0,
                entry_start: 0,
                entries: vec![entry],
            }),
        }
    }
    sort_by_hash_and_name(&mut rows, |r| (r.hash, &r.name));
    let mut start = 0;
    for r in &mut rows {
        r.entry_start = start;
        start += r.entries.len() as u32;
    }
    rows
}

/// Spec 17: the index of every sealed segment of `segments` (in log order),
/// from their events. `prev_segment`/`prev_row` name the newest earlier
/// segment holding the stream and the stream's row in that segment's index.
fn build_indexes(segments: &[ParsedSegment], version: u16) -> Vec<IndexModel> {
    let mut out: Vec<IndexModel> = Vec::new();
    for seg in segments {
        let Some(seal) = seg.seal else { continue };
        // Stream rows: one per stream, entries one per batch in version order.
        let mut streams: Vec<StreamRow> = Vec::new();
        for f in &seg.frames {
            let name = frame_stream(f);
            let first = f.records[0].stream_version;
            let last = f.records[f.records.len() - 1].stream_version;
            match streams.iter_mut().find(|r| r.name == name) {
                Some(r) => {
                    r.last_version = last;
                    r.entries.push((first, f.offset));
                }
                None => streams.push(StreamRow {
                    name: name.to_owned(),
                    hash: hash(name),
                    name_offset: 0,
                    first_version: first,
                    last_version: last,
                    entry_start: 0,
                    entries: vec![(first, f.offset)],
                    prev_segment: NO_SEGMENT,
                    prev_row: NO_ROW,
                }),
            }
        }
        sort_by_hash_and_name(&mut streams, |r| (r.hash, &r.name));
        let mut start = 0;
        for r in &mut streams {
            r.entry_start = start;
            start += r.entries.len() as u32;
            if let Some((seg_base, row)) = out.iter().rev().find_map(|m| {
                m.streams
                    .iter()
                    .position(|s| s.name == r.name)
                    .map(|i| (m.segment_base, i))
            }) {
                r.prev_segment = seg_base;
                r.prev_row = row as u32;
            }
        }
        // Category entries: batches in position order; event type entries:
        // records in position order (version 1), or the batches holding a
        // record of the type, each once, in position order (version 2).
        let cat_pairs: Vec<(&str, u64)> = seg
            .frames
            .iter()
            .filter_map(|f| category(frame_stream(f)).map(|c| (c, f.offset)))
            .collect();
        let type_pairs: Vec<(&str, u64)> = seg
            .frames
            .iter()
            .flat_map(|f| {
                let mut seen: Vec<&str> = Vec::new();
                f.records.iter().filter_map(move |r| {
                    if version == 1 {
                        return Some((r.event_type.as_str(), r.offset));
                    }
                    if seen.contains(&r.event_type.as_str()) {
                        return None;
                    }
                    seen.push(r.event_type.as_str());
                    Some((r.event_type.as_str(), f.offset))
                })
            })
            .collect();
        let mut categories = named_rows(&cat_pairs);
        let mut types = named_rows(&type_pairs);
        let mut names = NameArea::default();
        for r in &mut streams {
            r.name_offset = names.add(&r.name);
        }
        for r in categories.iter_mut().chain(types.iter_mut()) {
            r.name_offset = names.add(&r.name);
        }
        out.push(IndexModel {
            version,
            file: format!("{:020}.idx", seg.base_position),
            segment_base: seg.base_position,
            segment_len: seg.length,
            seal_crc: seal.header_crc,
            streams,
            categories,
            types,
            frames: seg.frames.iter().map(|f| (f.first_position, f.offset)).collect(),
            names: names.bytes,
        });
    }
    out
}

fn entry_count<T>(rows: &[T], n: impl Fn(&T) -> usize) -> u32 {
    rows.iter().map(n).sum::<usize>() as u32
}

/// File offsets where each part of an index file starts (spec 17.1: back to
/// back, in this order, after the 128-byte header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct IdxLayoutJson {
    stream_rows: u64,
    stream_entries: u64,
    category_rows: u64,
    category_entries: u64,
    type_rows: u64,
    type_entries: u64,
    frames: u64,
    name_area: u64,
    /// The 0-7 zero bytes after the name area.
    name_padding: u64,
    /// `table_offset` (spec 16).
    block_crc_table: u64,
    footer: u64,
}

fn idx_layout(m: &IndexModel) -> IdxLayoutJson {
    let mut at = IDX_HEADER_LEN as u64;
    let mut next = |len: usize| {
        let here = at;
        at += len as u64;
        here
    };
    let (row, sentry, nentry, fentry) = idx_sizes(m.version);
    let stream_rows = next(m.streams.len() * row);
    let stream_entries = next(entry_count(&m.streams, |r| r.entries.len()) as usize * sentry);
    let category_rows = next(m.categories.len() * IDX_NAMED_ROW_LEN);
    let category_entries = next(entry_count(&m.categories, |r| r.entries.len()) as usize * nentry);
    let type_rows = next(m.types.len() * IDX_NAMED_ROW_LEN);
    let type_entries = next(entry_count(&m.types, |r| r.entries.len()) as usize * nentry);
    let frames = next(m.frames.len() * fentry);
    let name_area = next(m.names.len());
    let name_padding = next(0);
    let block_crc_table = name_padding.next_multiple_of(8);
    let blocks = block_crc_table.div_ceil(BLOCK as u64);
    IdxLayoutJson {
        stream_rows,
        stream_entries,
        category_rows,
        category_entries,
        type_rows,
        type_entries,
        frames,
        name_area,
        name_padding,
        block_crc_table,
        footer: block_crc_table + 4 * blocks,
    }
}

/// Spec 17: encode an index file in its version's layout.
fn encode_index(m: &IndexModel) -> Vec<u8> {
    let v1 = m.version == 1;
    // 17.1 header.
    let mut h = vec![0u8; IDX_HEADER_LEN];
    put(&mut h, 0, b"ANNALIDX");
    put(&mut h, 8, &m.version.to_le_bytes()); // index_version
    // 10 flags, 12 reserved0: zero
    put(&mut h, 16, &m.segment_base.to_le_bytes());
    put(&mut h, 24, &m.segment_len.to_le_bytes());
    put(&mut h, 32, &HASH_MASK.to_le_bytes());
    put(&mut h, 40, &(m.streams.len() as u32).to_le_bytes());
    put(&mut h, 44, &entry_count(&m.streams, |r| r.entries.len()).to_le_bytes());
    put(&mut h, 48, &(m.categories.len() as u32).to_le_bytes());
    put(
        &mut h,
        52,
        &entry_count(&m.categories, |r| r.entries.len()).to_le_bytes(),
    );
    put(&mut h, 56, &(m.types.len() as u32).to_le_bytes());
    put(&mut h, 60, &entry_count(&m.types, |r| r.entries.len()).to_le_bytes());
    put(&mut h, 64, &(m.frames.len() as u32).to_le_bytes());
    put(&mut h, 68, &(m.names.len() as u32).to_le_bytes());
    put(&mut h, 72, &m.seal_crc.to_le_bytes());
    // 76 reserved1 (52 bytes): zero
    let mut body = h;
    // 17.2 stream rows (56 bytes in version 1, 48 in version 2).
    for r in &m.streams {
        let mut row = vec![0u8; idx_sizes(m.version).0];
        put(&mut row, 0, &r.hash.to_le_bytes());
        put(&mut row, 8, &r.name_offset.to_le_bytes());
        put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
        // 14 reserved0: zero
        put(&mut row, 16, &r.first_version.to_le_bytes());
        if v1 {
            put(&mut row, 24, &r.last_version.to_le_bytes());
            put(&mut row, 32, &r.entry_start.to_le_bytes());
            put(&mut row, 36, &(r.entries.len() as u32).to_le_bytes());
            put(&mut row, 40, &r.prev_segment.to_le_bytes());
            put(&mut row, 48, &r.prev_row.to_le_bytes());
            // 52 reserved1: zero
        } else {
            put(&mut row, 24, &((r.last_version - r.first_version) as u32).to_le_bytes());
            put(&mut row, 28, &r.entry_start.to_le_bytes());
            put(&mut row, 32, &(r.entries.len() as u32).to_le_bytes());
            put(&mut row, 36, &r.prev_row.to_le_bytes());
            put(&mut row, 40, &r.prev_segment.to_le_bytes());
        }
        body.extend_from_slice(&row);
    }
    // Stream entries: first_version, frame_offset (16 bytes), or
    // first_version - the row's first_version, frame_offset (8 bytes).
    for r in &m.streams {
        for &(v, off) in &r.entries {
            if v1 {
                body.extend_from_slice(&v.to_le_bytes());
                body.extend_from_slice(&off.to_le_bytes());
            } else {
                body.extend_from_slice(&((v - r.first_version) as u32).to_le_bytes());
                body.extend_from_slice(&(off as u32).to_le_bytes());
            }
        }
    }
    // Category rows and entries, then event type rows and entries.
    for rows in [&m.categories, &m.types] {
        for r in rows {
            let mut row = [0u8; IDX_NAMED_ROW_LEN];
            put(&mut row, 0, &r.hash.to_le_bytes());
            put(&mut row, 8, &r.name_offset.to_le_bytes());
            put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
            // 14 reserved0: zero
            put(&mut row, 16, &r.entry_start.to_le_bytes());
            put(&mut row, 20, &(r.entries.len() as u32).to_le_bytes());
            // 24 reserved1: zero
            body.extend_from_slice(&row);
        }
        for r in rows {
            for &off in &r.entries {
                if v1 {
                    body.extend_from_slice(&off.to_le_bytes());
                } else {
                    body.extend_from_slice(&(off as u32).to_le_bytes());
                }
            }
        }
    }
    // Frame entries: first_position, frame_offset (16 bytes), or
    // first_position - segment_base, frame_offset (8 bytes).
    for &(p, off) in &m.frames {
        if v1 {
            body.extend_from_slice(&p.to_le_bytes());
            body.extend_from_slice(&off.to_le_bytes());
        } else {
            body.extend_from_slice(&((p - m.segment_base) as u32).to_le_bytes());
            body.extend_from_slice(&(off as u32).to_le_bytes());
        }
    }
    push_padded(&mut body, &m.names);
    assert_eq!(body.len() as u64, idx_layout(m).block_crc_table);
    finish_derived(body, b"ANNALIDX")
}

#[derive(Debug, Clone)]
struct TableRow {
    name: String,
    hash: u64,
    name_offset: u32,
    last_version: u64,
    segment: u64,
    row: u32,
}

/// The stream table (spec 18), before encoding.
#[derive(Debug, Clone)]
struct TableModel {
    next_segment: u64,
    rows: Vec<TableRow>,
    names: Vec<u8>,
}

/// Spec 18: the stream table covering every sealed segment: per stream, its
/// newest version in a covered segment, the newest covered segment holding it
/// and its row there. `next_segment` is the first segment not covered: the
/// one after the last sealed segment (the seal's `first_position`).
fn build_table(segments: &[ParsedSegment], indexes: &[IndexModel]) -> TableModel {
    let mut rows: Vec<TableRow> = Vec::new();
    for m in indexes {
        for (i, s) in m.streams.iter().enumerate() {
            rows.retain(|r| r.name != s.name);
            rows.push(TableRow {
                name: s.name.clone(),
                hash: s.hash,
                name_offset: 0,
                last_version: s.last_version,
                segment: m.segment_base,
                row: i as u32,
            });
        }
    }
    sort_by_hash_and_name(&mut rows, |r| (r.hash, &r.name));
    let mut names = NameArea::default();
    for r in &mut rows {
        r.name_offset = names.add(&r.name);
    }
    let next_segment = segments
        .iter()
        .filter_map(|s| s.seal)
        .next_back()
        .map_or(0, |s| s.first_position);
    TableModel {
        next_segment,
        rows,
        names: names.bytes,
    }
}

/// File offsets of the parts of the stream table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StbLayoutJson {
    rows: u64,
    name_area: u64,
    name_padding: u64,
    block_crc_table: u64,
    footer: u64,
}

fn stb_layout(t: &TableModel) -> StbLayoutJson {
    let rows = STB_HEADER_LEN as u64;
    let name_area = rows + (t.rows.len() * STB_ROW_LEN) as u64;
    let name_padding = name_area + t.names.len() as u64;
    let block_crc_table = name_padding.next_multiple_of(8);
    StbLayoutJson {
        rows,
        name_area,
        name_padding,
        block_crc_table,
        footer: block_crc_table + 4 * block_crc_table.div_ceil(BLOCK as u64),
    }
}

/// Spec 18: encode the stream table.
fn encode_table(t: &TableModel) -> Vec<u8> {
    let mut body = vec![0u8; STB_HEADER_LEN];
    put(&mut body, 0, b"ANNALSTB");
    put(&mut body, 8, &1u16.to_le_bytes()); // table_version
    // 10 flags, 12 reserved0: zero
    put(&mut body, 16, &t.next_segment.to_le_bytes());
    put(&mut body, 24, &HASH_MASK.to_le_bytes());
    put(&mut body, 32, &(t.rows.len() as u64).to_le_bytes());
    put(&mut body, 40, &(t.names.len() as u64).to_le_bytes());
    // 48 reserved1 (16 bytes): zero
    for r in &t.rows {
        let mut row = [0u8; STB_ROW_LEN];
        put(&mut row, 0, &r.hash.to_le_bytes());
        put(&mut row, 8, &r.name_offset.to_le_bytes());
        put(&mut row, 12, &(r.name.len() as u16).to_le_bytes());
        // 14 reserved0: zero
        put(&mut row, 16, &r.last_version.to_le_bytes());
        put(&mut row, 24, &r.segment.to_le_bytes());
        put(&mut row, 32, &r.row.to_le_bytes());
        // 36 reserved1: zero
        body.extend_from_slice(&row);
    }
    push_padded(&mut body, &t.names);
    assert_eq!(body.len() as u64, stb_layout(t).block_crc_table);
    finish_derived(body, b"ANNALSTB")
}

/// The derived files of the log whose segments are `segments`:
/// `(file name, bytes)` per sealed segment's index, then the stream table.
fn derived_files(segments: &[ParsedSegment]) -> Vec<(String, Vec<u8>)> {
    let indexes = build_indexes(segments, INDEX_VERSION);
    let table = build_table(segments, &indexes);
    let mut files: Vec<(String, Vec<u8>)> = indexes.iter().map(|m| (m.file.clone(), encode_index(m))).collect();
    files.push((STREAM_TABLE_FILE.to_owned(), encode_table(&table)));
    files
}

// ============================================================ JSON

fn hex64(x: u64) -> String {
    format!("{x:#018x}")
}

fn hex32(x: u32) -> String {
    format!("{x:#010x}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HashVectorJson {
    name: String,
    /// The UTF-8 bytes of the name, in hex.
    utf8: String,
    /// FNV-1a 64 of the bytes (unmasked).
    hash: String,
    /// Spec 19: the part before the first `-`, or null without a `-`.
    category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HashVectorsJson {
    description: Vec<String>,
    algorithm: String,
    offset_basis: String,
    prime: String,
    vectors: Vec<HashVectorJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordJson {
    offset: u64,
    record_len: u64,
    /// The record's `crc` field (spec 3.2), hex.
    crc: String,
    #[serde(flatten)]
    event: EventJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FrameJson {
    offset: u64,
    frame_len: u64,
    kind: u8,
    first_position: u64,
    record_count: u32,
    durable_end: u64,
    /// The frame header's `header_crc` (spec 3.1), hex.
    header_crc: String,
    /// Format v2 with the chain: the chain slot (the chain after the batch), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    records: Vec<RecordJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SealJson {
    offset: u64,
    frame_len: u64,
    kind: u8,
    /// The position the next segment starts at.
    first_position: u64,
    record_count: u32,
    durable_end: u64,
    /// Format v2 with the chain: the chain slot (the chain after the
    /// segment's last batch), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    /// The seal's `header_crc`: the index's `seal_crc`.
    header_crc: String,
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
    /// Format v2: the header's `log_flags`, `chain_start` (hex; the genesis
    /// for segment 0, the previous seal's chain after) and `key_id` (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// The event batches, in file order.
    frames: Vec<FrameJson>,
    /// The seal frame (null for the active segment).
    seal: Option<SealJson>,
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
    current_sequence: u64,
    slots: Vec<HeadSlotJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WriterJson {
    durability: String,
    segment_size: u64,
    /// The writer's clock readings, in the order the writer takes them.
    clock_readings: Vec<u64>,
    /// Every head slot written, in order (annal's schedule).
    head_slots_written: Vec<HeadSlot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IdxHeaderJson {
    magic: String,
    index_version: u16,
    flags: u16,
    segment_base: u64,
    segment_len: u64,
    hash_mask: String,
    stream_count: u32,
    stream_entry_count: u32,
    category_count: u32,
    category_entry_count: u32,
    type_count: u32,
    type_entry_count: u32,
    frame_count: u32,
    names_len: u32,
    seal_crc: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamEntryJson {
    first_version: u64,
    frame_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamRowJson {
    /// Index of the row in the stream section.
    row: u32,
    name: String,
    hash: String,
    name_offset: u32,
    name_len: u16,
    first_version: u64,
    last_version: u64,
    entry_start: u32,
    entry_count: u32,
    /// 18446744073709551615 (`0xFFFF_FFFF_FFFF_FFFF`): none.
    prev_segment: u64,
    /// 4294967295 (`0xFFFF_FFFF`): none.
    prev_row: u32,
    /// Stream entries `[entry_start, entry_start + entry_count)`.
    entries: Vec<StreamEntryJson>,
}

/// The fields of a category or event type row (spec 17.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NamedRowJson {
    row: u32,
    name: String,
    hash: String,
    name_offset: u32,
    name_len: u16,
    entry_start: u32,
    entry_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CategoryRowJson {
    #[serde(flatten)]
    fields: NamedRowJson,
    /// Category entries: offsets of the frames of the category's batches.
    frame_offsets: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TypeRowJson {
    #[serde(flatten)]
    fields: NamedRowJson,
    /// Version 1's event type entries: offsets of the records of the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record_offsets: Option<Vec<u64>>,
    /// Version 2's event type entries: offsets of the frames of the batches
    /// holding a record of the type, each once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frame_offsets: Option<Vec<u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FrameEntryJson {
    first_position: u64,
    frame_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FooterJson {
    table_offset: u64,
    block_count: u64,
    /// The block CRC table: one CRC per 4096-byte block of `[0, table_offset)`.
    block_crcs: Vec<String>,
    table_crc: String,
    footer_crc: String,
    magic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexJson {
    file: String,
    length: u64,
    header: IdxHeaderJson,
    layout: IdxLayoutJson,
    stream_rows: Vec<StreamRowJson>,
    category_rows: Vec<CategoryRowJson>,
    type_rows: Vec<TypeRowJson>,
    frames: Vec<FrameEntryJson>,
    /// The `names_len` bytes of the name area, as text.
    name_area: String,
    footer: FooterJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StbHeaderJson {
    magic: String,
    table_version: u16,
    flags: u16,
    next_segment: u64,
    hash_mask: String,
    stream_count: u64,
    names_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StbRowJson {
    /// Index of the row in the table.
    table_row: u64,
    name: String,
    hash: String,
    name_offset: u32,
    name_len: u16,
    last_version: u64,
    segment: u64,
    /// The stream's row in that segment's index.
    row: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamTableJson {
    file: String,
    length: u64,
    header: StbHeaderJson,
    layout: StbLayoutJson,
    rows: Vec<StbRowJson>,
    name_area: String,
    footer: FooterJson,
}

/// One read and the positions of the records it returns, in order (the
/// events are those of `segments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call")]
enum ReadJson {
    #[serde(rename = "read_stream")]
    Stream {
        stream: String,
        from_version: u64,
        direction: String,
        max_count: u64,
        positions: Vec<u64>,
    },
    #[serde(rename = "read_category")]
    Category {
        category: String,
        from: u64,
        positions: Vec<u64>,
    },
    #[serde(rename = "read_event_type")]
    EventType {
        event_type: String,
        from: u64,
        positions: Vec<u64>,
    },
    #[serde(rename = "read_all_backward")]
    AllBackward { from: u64, positions: Vec<u64> },
}

impl ReadJson {
    fn positions(&self) -> &[u64] {
        match self {
            ReadJson::Stream { positions, .. }
            | ReadJson::Category { positions, .. }
            | ReadJson::EventType { positions, .. }
            | ReadJson::AllBackward { positions, .. } => positions,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexedJson {
    description: Vec<String>,
    format_version: u16,
    log_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_flags: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainJson>,
    files: Vec<String>,
    writer: WriterJson,
    segments: Vec<SegmentJson>,
    head: HeadJson,
    indexes: Vec<IndexJson>,
    stream_table: StreamTableJson,
    reads: Vec<ReadJson>,
}

fn event_json(r: &ParsedRecord) -> EventJson {
    EventJson {
        position: r.position,
        stream: r.stream.clone(),
        stream_version: r.stream_version,
        timestamp: r.timestamp,
        event_id: Uuid::from_bytes(r.event_id).to_string(),
        schema_version: r.schema_version,
        event_type: r.event_type.clone(),
        metadata: String::from_utf8_lossy(&r.metadata).into_owned(),
        payload: String::from_utf8_lossy(&r.payload).into_owned(),
    }
}

/// Format v2: the audit chain of the log (spec 21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChainJson {
    /// `BLAKE3` (plain; the indexed vector is not keyed).
    hash: String,
    /// H("annal chain v2\0\0" || log_id), hex.
    genesis: String,
    /// `Log::anchor()` of the closed log: `POSITION:HEX64`.
    anchor: String,
}

fn segment_json(s: &ParsedSegment) -> SegmentJson {
    let v2 = s.format_version >= 2;
    let fmt = Format {
        version: s.format_version,
        chain: s.log_flags & 1 != 0,
        key: None,
    };
    SegmentJson {
        file: s.file.clone(),
        length: s.length,
        base_position: s.base_position,
        prev_timestamp: s.prev_timestamp,
        created_at: s.created_at,
        header_crc: hex32(s.header_crc),
        log_flags: v2.then_some(s.log_flags),
        chain_start: v2.then(|| hex(&s.chain_start)),
        key_id: v2.then(|| hex(&s.key_id)),
        frames: s
            .frames
            .iter()
            .map(|f| FrameJson {
                offset: f.offset,
                frame_len: f.len,
                kind: 1,
                first_position: f.first_position,
                record_count: f.records.len() as u32,
                durable_end: f.durable_end,
                header_crc: hex32(f.header_crc),
                chain: chain_hex(&fmt, &f.chain),
                records: f
                    .records
                    .iter()
                    .map(|r| RecordJson {
                        offset: r.offset,
                        record_len: r.len,
                        crc: hex32(r.crc),
                        event: event_json(r),
                    })
                    .collect(),
            })
            .collect(),
        seal: s.seal.map(|x| SealJson {
            offset: x.offset,
            frame_len: FRAME_HEADER_LEN,
            kind: 2,
            first_position: x.first_position,
            record_count: 0,
            durable_end: x.durable_end,
            chain: chain_hex(&fmt, &x.chain),
            header_crc: hex32(x.header_crc),
        }),
    }
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

/// The footer and block CRC table of a derived file, read back from its bytes
/// (spec 16), for the JSON.
fn footer_json(bytes: &[u8]) -> FooterJson {
    let f = &bytes[bytes.len() - FOOTER_LEN..];
    let table_offset = u64_at(f, 0);
    let block_count = u64_at(f, 8);
    FooterJson {
        table_offset,
        block_count,
        block_crcs: (0..block_count as usize)
            .map(|i| hex32(u32_at(bytes, table_offset as usize + 4 * i)))
            .collect(),
        table_crc: hex32(u32_at(f, 16)),
        footer_crc: hex32(u32_at(f, 20)),
        magic: String::from_utf8_lossy(&f[24..32]).into_owned(),
    }
}

fn index_json(m: &IndexModel, bytes: &[u8]) -> IndexJson {
    let named = |rows: &[NamedRow]| -> Vec<(NamedRowJson, Vec<u64>)> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let fields = NamedRowJson {
                    row: i as u32,
                    name: r.name.clone(),
                    hash: hex64(r.hash),
                    name_offset: r.name_offset,
                    name_len: r.name.len() as u16,
                    entry_start: r.entry_start,
                    entry_count: r.entries.len() as u32,
                };
                (fields, r.entries.clone())
            })
            .collect()
    };
    IndexJson {
        file: m.file.clone(),
        length: bytes.len() as u64,
        header: IdxHeaderJson {
            magic: "ANNALIDX".to_owned(),
            index_version: m.version,
            flags: 0,
            segment_base: m.segment_base,
            segment_len: m.segment_len,
            hash_mask: hex64(HASH_MASK),
            stream_count: m.streams.len() as u32,
            stream_entry_count: entry_count(&m.streams, |r| r.entries.len()),
            category_count: m.categories.len() as u32,
            category_entry_count: entry_count(&m.categories, |r| r.entries.len()),
            type_count: m.types.len() as u32,
            type_entry_count: entry_count(&m.types, |r| r.entries.len()),
            frame_count: m.frames.len() as u32,
            names_len: m.names.len() as u32,
            seal_crc: hex32(m.seal_crc),
        },
        layout: idx_layout(m),
        stream_rows: m
            .streams
            .iter()
            .enumerate()
            .map(|(i, r)| StreamRowJson {
                row: i as u32,
                name: r.name.clone(),
                hash: hex64(r.hash),
                name_offset: r.name_offset,
                name_len: r.name.len() as u16,
                first_version: r.first_version,
                last_version: r.last_version,
                entry_start: r.entry_start,
                entry_count: r.entries.len() as u32,
                prev_segment: r.prev_segment,
                prev_row: r.prev_row,
                entries: r
                    .entries
                    .iter()
                    .map(|&(first_version, frame_offset)| StreamEntryJson {
                        first_version,
                        frame_offset,
                    })
                    .collect(),
            })
            .collect(),
        category_rows: named(&m.categories)
            .into_iter()
            .map(|(fields, frame_offsets)| CategoryRowJson { fields, frame_offsets })
            .collect(),
        type_rows: named(&m.types)
            .into_iter()
            .map(|(fields, offsets)| TypeRowJson {
                fields,
                record_offsets: (m.version == 1).then(|| offsets.clone()),
                frame_offsets: (m.version != 1).then_some(offsets),
            })
            .collect(),
        frames: m
            .frames
            .iter()
            .map(|&(first_position, frame_offset)| FrameEntryJson {
                first_position,
                frame_offset,
            })
            .collect(),
        name_area: String::from_utf8(m.names.clone()).expect("UTF-8 names"),
        footer: footer_json(bytes),
    }
}

fn table_json(t: &TableModel, bytes: &[u8]) -> StreamTableJson {
    StreamTableJson {
        file: STREAM_TABLE_FILE.to_owned(),
        length: bytes.len() as u64,
        header: StbHeaderJson {
            magic: "ANNALSTB".to_owned(),
            table_version: 1,
            flags: 0,
            next_segment: t.next_segment,
            hash_mask: hex64(HASH_MASK),
            stream_count: t.rows.len() as u64,
            names_len: t.names.len() as u64,
        },
        layout: stb_layout(t),
        rows: t
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| StbRowJson {
                table_row: i as u64,
                name: r.name.clone(),
                hash: hex64(r.hash),
                name_offset: r.name_offset,
                name_len: r.name.len() as u16,
                last_version: r.last_version,
                segment: r.segment,
                row: r.row,
            })
            .collect(),
        name_area: String::from_utf8(t.names.clone()).expect("UTF-8 names"),
        footer: footer_json(bytes),
    }
}

fn hash_vectors_json() -> HashVectorsJson {
    HashVectorsJson {
        description: lines(&[
            "Test vectors of the stream hash (spec 19): 64-bit FNV-1a over the UTF-8 bytes of the name, before the \
             file's hash_mask is applied (every annal file written outside tests has hash_mask \
             0xffffffffffffffff, so these are the values stored in index and stream table rows).",
            "The same function names streams, categories and event types. category is the category of the name \
             read as a stream name (spec 19): the part before the first '-', or null if the name has no '-' (a \
             leading '-' gives the empty category).",
            "utf8 is the hashed bytes in hex; hash is the 64-bit value in hex.",
        ]),
        algorithm: "FNV-1a, 64-bit".to_owned(),
        offset_basis: hex64(0xcbf2_9ce4_8422_2325),
        prime: hex64(0x0000_0100_0000_01b3),
        vectors: HASH_NAMES
            .iter()
            .map(|n| HashVectorJson {
                name: (*n).to_owned(),
                utf8: hex(n.as_bytes()),
                hash: hex64(fnv1a64(n.as_bytes())),
                category: category(n).map(str::to_owned),
            })
            .collect(),
    }
}

// ===================================================== expected reads

/// The reads `indexed.json` lists, with the records each returns by the
/// semantics of the read calls (annal's API, spec 19 for categories):
///
/// * `read_stream(s, v, Forward, n)`: the first `n` events of `s` with
///   version >= `v`, oldest first; `Backward`: the first `n` with version <=
///   `v`, newest first;
/// * `read_category(c, p)`: events at position >= `p` of every stream whose
///   category is `c`, in position order;
/// * `read_event_type(t, p)`: events of type `t` at position >= `p`;
/// * `read_all_backward(p)`: every event at position <= `p`, newest first.
fn expected_reads(events: &[ParsedRecord]) -> Vec<ReadJson> {
    let all = u64::MAX;
    let stream = |name: &str, from: u64, dir: Direction, max: u64| {
        let mut sel: Vec<&ParsedRecord> = events
            .iter()
            .filter(|e| {
                e.stream == name
                    && match dir {
                        Direction::Forward => e.stream_version >= from,
                        Direction::Backward => e.stream_version <= from,
                    }
            })
            .collect();
        if dir == Direction::Backward {
            sel.reverse();
        }
        ReadJson::Stream {
            stream: name.to_owned(),
            from_version: from,
            direction: format!("{dir:?}"),
            max_count: max,
            positions: sel.iter().take(max as usize).map(|e| e.position).collect(),
        }
    };
    let cat = |name: &str, from: u64| ReadJson::Category {
        category: name.to_owned(),
        from,
        positions: events
            .iter()
            .filter(|e| category(&e.stream) == Some(name) && e.position >= from)
            .map(|e| e.position)
            .collect(),
    };
    let ty = |name: &str, from: u64| ReadJson::EventType {
        event_type: name.to_owned(),
        from,
        positions: events
            .iter()
            .filter(|e| e.event_type == name && e.position >= from)
            .map(|e| e.position)
            .collect(),
    };
    let back = |from: u64| ReadJson::AllBackward {
        from,
        positions: events
            .iter()
            .rev()
            .filter(|e| e.position <= from)
            .map(|e| e.position)
            .collect(),
    };
    let mut reads = Vec::new();
    for s in ["order-1", "order-2", "customer-9", "order"] {
        reads.push(stream(s, 0, Direction::Forward, all));
        reads.push(stream(s, all, Direction::Backward, all));
    }
    reads.extend([
        // Starting inside a batch, inside a segment, and limited.
        stream("order-1", 1, Direction::Forward, all),
        stream("order-1", 2, Direction::Forward, 2),
        stream("order-1", 3, Direction::Backward, 3),
        stream("order-1", 0, Direction::Backward, all),
        // No such stream (the second is in category "order").
        stream("order-3", 0, Direction::Forward, all),
        stream("customer", 0, Direction::Forward, all),
    ]);
    reads.extend([
        cat("order", 0),
        cat("order", 7), // inside batch 6 (positions 6 and 7)
        cat("order", 8),
        cat("customer", 0),
        cat("customer", 3),
        cat("order-1", 0), // a stream name, not a category
        cat("nope", 0),
    ]);
    let mut types: Vec<&str> = Vec::new();
    for e in events {
        if !types.contains(&e.event_type.as_str()) {
            types.push(&e.event_type);
        }
    }
    for t in types {
        reads.push(ty(t, 0));
    }
    reads.extend([ty("ItemAdded", 2), ty("ItemAdded", 7), ty("nope", 0)]);
    reads.extend([back(all), back(6), back(3), back(0)]);
    reads
}

// ========================================================= the vector

struct Vector {
    fmt: Format,
    /// `(file name, bytes)` of every file of `indexed/`.
    files: Vec<(String, Vec<u8>)>,
    json_text: String,
    hash_json_text: String,
}

fn to_json_text(v: &impl Serialize) -> String {
    let mut t = serde_json::to_string_pretty(v).expect("serialize JSON");
    t.push('\n');
    t
}

fn parse_all(segments: &[(String, Vec<u8>)]) -> Vec<ParsedSegment> {
    segments.iter().map(|(n, b)| parse_segment(n, b)).collect()
}

fn build_vector(fmt: Format) -> Vector {
    let log = assemble_log(&fmt, &BATCHES);
    let seg_files: Vec<(String, Vec<u8>)> = log
        .segments
        .iter()
        .map(|(base, bytes)| (format!("{base:020}.seg"), bytes.clone()))
        .collect();
    let parsed = parse_all(&seg_files);
    let indexes = build_indexes(&parsed, INDEX_VERSION);
    let table = build_table(&parsed, &indexes);
    let idx_bytes: Vec<Vec<u8>> = indexes.iter().map(encode_index).collect();
    let table_bytes = encode_table(&table);
    let mut files = seg_files.clone();
    for (m, b) in indexes.iter().zip(&idx_bytes) {
        files.push((m.file.clone(), b.clone()));
    }
    files.push((STREAM_TABLE_FILE.to_owned(), table_bytes.clone()));
    files.push((HEAD_FILE.to_owned(), head_file_in(fmt.version, &log.head_history)));
    files.sort();
    let events: Vec<ParsedRecord> = parsed
        .iter()
        .flat_map(|s| s.frames.iter().flat_map(|f| f.records.iter().cloned()))
        .collect();
    let mut description = lines(&[
        "A cleanly closed log of three segments written by annal's writer with Options::default() \
             .segment_size(900), Durability::Buffered, an explicit log id, clock and event ids, then closed: \
             segments 0 and 4 are sealed and have index files (spec 17), segment 8 is the active segment (its \
             index lives in memory only); annal.streams (spec 18) covers the two sealed segments.",
        "Appends: order-1 [OrderPlaced, ItemAdded] (one batch of two events), customer-9 [Registered], order \
             [Audited]; then (segment 4) order-2 [OrderPlaced], order-1 [OrderShipped], order-1 [ItemAdded, \
             ItemAdded]; then (segment 8) customer-9 [EmailChanged], order-2 [OrderShipped]. Categories: order \
             (order-1, order-2) and customer (customer-9); the stream 'order' has no '-' and so no category, \
             although its name equals the category 'order'.",
        "Spec 8: a batch goes into the active segment if it fits within segment_size, else the segment is \
             sealed and the batch starts the next one. The sizes are chosen so that counting or not counting the \
             72-byte seal in 'fits' gives the same split.",
        "Every frame's durable_end (seals included) is 128: nothing but the sealed segments (at each roll) \
             was fsynced before close, and a new segment's durable end starts at its header.",
        "Index files: rows sorted by (masked hash, name bytes), entries as spec 17.2; frame entries list the \
             batches only (no seal, no checkpoint). The name area holds each row's name once per row, as spec \
             17.2 fixes it: stream rows first, then category rows, then event type rows, each in row order, \
             without sharing (so 'order' is stored twice in segment 0's index: a stream name and a category \
             name). The stream table stores its names in row order (spec 18).",
        "hash, hash_mask and CRC values are hex strings (a CRC: 0x and 8 lowercase hex digits); every other \
             integer is an exact JSON number (u64; prev_segment 18446744073709551615 and prev_row 4294967295 mean \
             none). metadata and payload are the bytes as UTF-8 text. The CRCs listed: each segment header's \
             header_crc (spec 2.1), each frame's and seal's header_crc (3.1), each record's crc (3.2), each head \
             slot's crc (5.2), and the derived files' block CRCs, table_crc and footer_crc (16).",
        "layout: the file offset at which each part of a derived file starts (name_padding: the 0-7 zero \
             bytes after the name area; block_crc_table: table_offset of spec 16; footer: the 32-byte footer). \
             footer: the footer's fields and the block CRC table (one CRC per 4096-byte block of [0, \
             table_offset)). Each row lists its own entries (stream entries, frame_offsets of category entries, \
             frame_offsets of event type entries: index version 2, spec 17.2, lists each batch holding a \
             record of the type once). Stream and frame entries are shown decoded: absolute first_version, \
             first_position and frame_offset, whatever the layout stores.",
        "reads: calls on a view of the log (annal::Reader or annal::Log) and the positions of the records \
             they return, in order; the records are those listed under segments.",
        "The directory holds no annal.lock (a writer creates it when it opens the log).",
    ]);
    if fmt.version >= 2 {
        description.extend(lines(&[
            "Format v2 (spec 21): every segment header has log_flags 1 (CHAIN); segment 0's chain_start is the \
             genesis H(\"annal chain v2\\0\\0\" || log_id), each later segment's chain_start is the chain in \
             the seal of the segment before; each batch frame's chain slot [40, 72) holds the chain after it, \
             H(chain before || frame bytes [8, 40) || frame bytes [72, frame_len)), and each seal's chain slot \
             the chain after its segment's last batch; the slots are covered by header_crc, so the seals' \
             header_crc (the indexes' seal_crc) differ from v1's. The head file's slots carry format_version 2.",
            "chain, chain_start and key_id are lowercase hex (key_id zero: not keyed). chain.anchor is \
             Log::anchor() of the closed log: POSITION:HASH, the position after the last batch and the chain \
             there.",
        ]));
    }
    let json = IndexedJson {
        description,
        format_version: fmt.version,
        log_id: hex(&LOG_ID),
        log_flags: (fmt.version >= 2).then(|| fmt.log_flags()),
        chain: fmt.chain.then(|| ChainJson {
            hash: "BLAKE3".to_owned(),
            genesis: hex(&fmt.genesis(&LOG_ID)),
            anchor: format!(
                "{}:{}",
                BATCHES.iter().map(|b| b.events.len() as u64).sum::<u64>(),
                hex(&log.chain)
            ),
        }),
        files: files.iter().map(|(n, _)| n.clone()).collect(),
        writer: WriterJson {
            durability: "Buffered".to_owned(),
            segment_size: SEGMENT_SIZE,
            clock_readings: log.clock_readings.clone(),
            head_slots_written: log.head_history.clone(),
        },
        segments: parsed.iter().map(segment_json).collect(),
        head: head_json(fmt.version, &log.head_history),
        indexes: indexes.iter().zip(&idx_bytes).map(|(m, b)| index_json(m, b)).collect(),
        stream_table: table_json(&table, &table_bytes),
        reads: expected_reads(&events),
    };
    Vector {
        fmt,
        files,
        json_text: to_json_text(&json),
        hash_json_text: to_json_text(&hash_vectors_json()),
    }
}

/// Write `v` under `base` (its format's vector directory, or a temporary
/// one); `index.json` does not depend on the log format version and is
/// written with the v1 set only.
fn write_vector_to(base: &Path, v: &Vector) {
    let dir = base.join(VECTOR);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove old vector directory");
    }
    fs::create_dir_all(&dir).expect("create vector directory");
    for (name, bytes) in &v.files {
        fs::write(dir.join(name), bytes).expect("write vector file");
    }
    fs::write(base.join(format!("{VECTOR}.json")), &v.json_text).expect("write indexed.json");
    if v.fmt.version == 1 {
        fs::write(base.join("index.json"), &v.hash_json_text).expect("write index.json");
    }
}

/// The spec-assembled vectors, v1 then v2; with
/// `ANNAL_REGENERATE_VECTORS=1`, written to `spec/vectors/v1/` and
/// `spec/vectors/v2/` (once per test process, before any test reads them).
fn vectors() -> &'static [Vector; 2] {
    static V: OnceLock<[Vector; 2]> = OnceLock::new();
    V.get_or_init(|| {
        let v = [build_vector(Format::V1), build_vector(Format::V2)];
        if regenerating() {
            for x in &v {
                fs::create_dir_all(x.fmt.vectors_dir()).expect("create vectors directory");
                write_vector_to(&x.fmt.vectors_dir(), x);
            }
        }
        v
    })
}

fn vector(fmt: &Format) -> &'static Vector {
    vectors()
        .iter()
        .find(|v| v.fmt == *fmt)
        .expect("a vector of the format")
}

/// `index.json` (format independent): in `spec/vectors/v1/`.
fn load_json<T: serde::de::DeserializeOwned>(name: &str) -> T {
    vectors();
    golden::load_json(name)
}

fn load_indexed_json(fmt: &Format) -> IndexedJson {
    vectors();
    golden::load_json_from(&fmt.vectors_dir(), &format!("{VECTOR}.json"))
}

// ============================================================ helpers

fn committed_dir(fmt: &Format) -> PathBuf {
    vectors();
    fmt.vectors_dir().join(VECTOR)
}

/// The committed segment files, `(name, bytes)` in log order.
fn committed_segments(fmt: &Format) -> Vec<(String, Vec<u8>)> {
    let dir = committed_dir(fmt);
    file_names(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| {
            let b = fs::read(dir.join(&n)).expect("read segment");
            (n, b)
        })
        .collect()
}

/// A fresh copy of the committed vector directory.
fn copy_vector(fmt: &Format) -> tempfile::TempDir {
    golden::copy_dir(&committed_dir(fmt))
}

/// Options of a writer creating a log in `fmt`.
fn options(fmt: &Format) -> Options {
    if fmt.version == 1 {
        Options::default().format_version(1)
    } else {
        Options::default().format_version(2)
    }
}

fn collect<'a>(it: impl Iterator<Item = annal::Result<RecordRef<'a>>>) -> annal::Result<Vec<EventJson>> {
    it.map(|r| r.map(|r| event_of(&r))).collect()
}

fn run_read(view: &LogView, read: &ReadJson) -> annal::Result<Vec<EventJson>> {
    match read {
        ReadJson::Stream {
            stream,
            from_version,
            direction,
            max_count,
            ..
        } => {
            let dir = match direction.as_str() {
                "Forward" => Direction::Forward,
                "Backward" => Direction::Backward,
                d => panic!("unknown direction {d:?}"),
            };
            collect(view.read_stream(stream, *from_version, dir, *max_count))
        }
        ReadJson::Category { category, from, .. } => collect(view.read_category(category, *from)),
        ReadJson::EventType { event_type, from, .. } => collect(view.read_event_type(event_type, *from)),
        ReadJson::AllBackward { from, .. } => collect(view.read_all_backward(*from)),
    }
}

/// Run every read of `j` on `view` and compare with the JSON's records.
fn check_reads(who: &str, view: &LogView, j: &IndexedJson) {
    let by_position: HashMap<u64, &EventJson> = j
        .segments
        .iter()
        .flat_map(|s| {
            s.frames
                .iter()
                .flat_map(|f| f.records.iter().map(|r| (r.event.position, &r.event)))
        })
        .collect();
    for read in &j.reads {
        let want: Vec<EventJson> = read
            .positions()
            .iter()
            .map(|p| (*by_position.get(p).expect("position of a listed record")).clone())
            .collect();
        let got = run_read(view, read).unwrap_or_else(|e| panic!("{who}: {read:?} failed: {e}"));
        assert_eq!(got, want, "{who}: {read:?}");
    }
    assert_eq!(view.index_damage(), Vec::<String>::new(), "{who}: index damage");
}

fn unchanged_file_names(j: &IndexedJson) -> Vec<String> {
    j.files
        .iter()
        .filter(|n| n.ends_with(".idx") || n.ends_with(".seg") || *n == STREAM_TABLE_FILE)
        .cloned()
        .collect()
}

// ============================================================== tests

#[test]
fn crc_is_the_one_the_spec_names() {
    assert_eq!(crc(b"123456789"), 0xCBF4_3926);
}

/// `index.json`: the spec's literal values, the library's hash and category
/// function, and the committed file.
#[test]
fn hash_vectors_match_the_spec_and_the_library() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    assert_eq!(category("order-42"), Some("order"));
    assert_eq!(category("a-b-c"), Some("a"));
    assert_eq!(category("orders"), None);
    let j: HashVectorsJson = load_json("index.json");
    assert_eq!(
        serde_json::to_value(&j).expect("to value"),
        serde_json::from_str::<Value>(&vector(&Format::V1).hash_json_text).expect("parse generated"),
        "index.json differs from the spec computation"
    );
    for name in ["", "a", "foobar", "order-42", "order", "customer-9"] {
        assert!(j.vectors.iter().any(|v| v.name == name), "index.json lists {name:?}");
    }
    assert!(
        j.vectors.iter().any(|v| !v.name.is_ascii()),
        "index.json lists a non-ASCII name"
    );
    for v in &j.vectors {
        assert_eq!(v.utf8, hex(v.name.as_bytes()), "{:?}", v.name);
        assert_eq!(
            v.hash,
            hex64(annal::stream_hash(v.name.as_bytes())),
            "annal::stream_hash({:?})",
            v.name
        );
        assert_eq!(
            v.category.as_deref(),
            annal::category_of(&v.name),
            "annal::category_of({:?})",
            v.name
        );
    }
    // index.json does not depend on the log format version: one copy, in v1/.
    assert!(!Format::V2.vectors_dir().join("index.json").exists());
}

/// Section 8 read two ways (the seal counted in "fits" or not) splits the
/// plan's batches into the same segments, so the vector does not depend on it.
#[test]
fn the_plan_splits_the_same_way_under_both_readings_of_section_8() {
    for fmt in [Format::V1, Format::V2] {
        let log = assemble_log(&fmt, &BATCHES);
        let parsed: Vec<ParsedSegment> = log
            .segments
            .iter()
            .map(|(b, s)| parse_segment(&format!("{b:020}.seg"), s))
            .collect();
        assert_eq!(parsed.len(), 3, "two sealed segments and the active one");
        for (i, s) in parsed.iter().enumerate() {
            let content_end = s.seal.map_or(s.length, |x| x.offset);
            assert!(
                content_end + FRAME_HEADER_LEN <= SEGMENT_SIZE,
                "segment {i}: its batches and a seal fit"
            );
            if let Some(next) = parsed.get(i + 1) {
                let first = &next.frames[0];
                assert!(
                    content_end + first.len > SEGMENT_SIZE,
                    "segment {i}: the next batch does not fit even without the seal"
                );
            }
        }
    }
}

/// (a) The committed segments, head file and JSON are the spec assembly.
#[test]
fn committed_vector_equals_the_spec_assembly() {
    for v in vectors() {
        let dir = committed_dir(&v.fmt);
        let label = format!("v{}/{VECTOR}", v.fmt.version);
        let want: BTreeSet<String> = v.files.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(file_names(&dir), want, "files of {}", dir.display());
        for (name, bytes) in &v.files {
            let got = fs::read(dir.join(name)).expect("read vector file");
            assert_bytes_eq(&format!("{label}/{name}"), &got, bytes);
        }
        let j: Value = golden::load_json_from(&v.fmt.vectors_dir(), &format!("{VECTOR}.json"));
        let want: Value = serde_json::from_str(&v.json_text).expect("parse generated JSON");
        assert_eq!(j, want, "{label}.json differs from the spec assembly");
    }
}

/// Regenerating the vectors (into a temporary directory) gives the committed
/// files byte for byte, JSON text included: the v1 set (with `index.json`)
/// is frozen, and the v2 set is what the generator writes.
#[test]
fn regenerated_vectors_are_byte_identical_to_the_committed_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for v in vectors() {
        let base = tmp.path().join(format!("v{}", v.fmt.version));
        fs::create_dir_all(&base).expect("create directory");
        write_vector_to(&base, v);
        assert_tree_committed(&base, &v.fmt.vectors_dir());
    }
}

/// (a) The committed index files and stream table are what the spec tables
/// give for the events of the committed segment files.
#[test]
fn committed_derived_files_follow_from_the_committed_segments() {
    for fmt in [Format::V1, Format::V2] {
        let dir = committed_dir(&fmt);
        let segments = committed_segments(&fmt);
        assert_eq!(segments.len(), 3);
        let parsed = parse_all(&segments);
        let derived = derived_files(&parsed);
        let names: Vec<&str> = derived.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "00000000000000000000.idx",
                "00000000000000000004.idx",
                STREAM_TABLE_FILE
            ]
        );
        for (name, want) in &derived {
            let got = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
            assert_bytes_eq(
                &format!("committed v{}/{name} vs spec assembly", fmt.version),
                &got,
                want,
            );
        }
        // No index for the active segment.
        assert!(!dir.join("00000000000000000008.idx").exists());
    }
}

/// The JSON's layout arithmetic is consistent with spec 16-18.
#[test]
fn indexed_json_layout_is_consistent() {
    for fmt in [Format::V1, Format::V2] {
        let j = load_indexed_json(&fmt);
        assert_eq!(j.format_version, fmt.version);
        assert_eq!(j.indexes.len(), 2);
        for (ix, seg) in j.indexes.iter().zip(&j.segments) {
            let (h, l) = (&ix.header, &ix.layout);
            assert_eq!(h.segment_base, seg.base_position);
            assert_eq!(h.segment_len, seg.length);
            assert_eq!(Some(&h.seal_crc), seg.seal.as_ref().map(|s| &s.header_crc));
            assert_eq!(h.index_version, INDEX_VERSION);
            let (row, sentry, nentry, fentry) = idx_sizes(h.index_version);
            let (row, sentry, nentry, fentry) = (row as u64, sentry as u64, nentry as u64, fentry as u64);
            assert_eq!(l.stream_rows, 128);
            assert_eq!(l.stream_entries, l.stream_rows + row * u64::from(h.stream_count));
            assert_eq!(
                l.category_rows,
                l.stream_entries + sentry * u64::from(h.stream_entry_count)
            );
            assert_eq!(l.category_entries, l.category_rows + 32 * u64::from(h.category_count));
            assert_eq!(
                l.type_rows,
                l.category_entries + nentry * u64::from(h.category_entry_count)
            );
            assert_eq!(l.type_entries, l.type_rows + 32 * u64::from(h.type_count));
            assert_eq!(l.frames, l.type_entries + nentry * u64::from(h.type_entry_count));
            assert_eq!(l.name_area, l.frames + fentry * u64::from(h.frame_count));
            assert_eq!(l.name_padding, l.name_area + u64::from(h.names_len));
            assert_eq!(l.block_crc_table, l.name_padding.next_multiple_of(8));
            assert_eq!(ix.footer.table_offset, l.block_crc_table);
            assert_eq!(ix.footer.block_count, l.block_crc_table.div_ceil(4096));
            assert_eq!(ix.length, l.footer + 32);
            assert_eq!(l.footer, l.block_crc_table + 4 * ix.footer.block_count);
            assert_eq!(ix.name_area.len() as u64, u64::from(h.names_len));
            let frames: Vec<(u64, u64)> = seg.frames.iter().map(|f| (f.first_position, f.offset)).collect();
            let listed: Vec<(u64, u64)> = ix.frames.iter().map(|f| (f.first_position, f.frame_offset)).collect();
            assert_eq!(listed, frames, "{}: frame entries", ix.file);
            for r in &ix.stream_rows {
                let at = r.name_offset as usize;
                assert_eq!(&ix.name_area[at..at + r.name_len as usize], r.name);
            }
        }
        let t = &j.stream_table;
        assert_eq!(t.layout.rows, 64);
        assert_eq!(t.layout.name_area, 64 + 40 * t.header.stream_count);
        assert_eq!(t.header.next_segment, j.segments[2].base_position);
        assert_eq!(t.length, t.layout.footer + 32);
        assert_eq!(t.footer.table_offset, t.layout.block_crc_table);
    }
}

/// The chain across segments of the committed v2 files follows from spec
/// 21.2 (computed here with the `blake3` crate): segment 0 starts at the
/// genesis, each batch links to the one before, each seal carries the chain
/// after its segment's last batch and the next segment starts from it; the
/// JSON says the same.
#[test]
fn indexed_v2_chain_crosses_segments_as_defined() {
    let fmt = Format::V2;
    let j = load_indexed_json(&fmt);
    let parsed = parse_all(&committed_segments(&fmt));
    let mut chain = fmt.genesis(&LOG_ID);
    for (s, sj) in parsed.iter().zip(&j.segments) {
        assert_eq!((s.format_version, s.log_flags), (2, 1), "{}", s.file);
        assert_eq!(s.chain_start, chain, "{}: chain_start", s.file);
        assert_eq!(sj.chain_start.as_deref(), Some(hex(&chain).as_str()));
        assert_eq!(s.key_id, [0; 16], "{}: key_id", s.file);
        let bytes = fs::read(committed_dir(&fmt).join(&s.file)).expect("read segment");
        for (f, fj) in s.frames.iter().zip(&sj.frames) {
            chain = fmt.link(&chain, &bytes[f.offset as usize..(f.offset + f.len) as usize]);
            assert_eq!(f.chain, chain, "{}: chain of the batch at {}", s.file, f.offset);
            assert_eq!(fj.chain.as_deref(), Some(hex(&chain).as_str()));
        }
        if let Some(seal) = &s.seal {
            assert_eq!(seal.chain, chain, "{}: the seal's chain", s.file);
        }
    }
    let c = j.chain.as_ref().expect("chain in JSON");
    assert_eq!(c.genesis, hex(&fmt.genesis(&LOG_ID)));
    assert_eq!(c.anchor, format!("10:{}", hex(&chain)));
    // v1: no chain anywhere.
    for s in parse_all(&committed_segments(&Format::V1)) {
        assert_eq!((s.format_version, s.log_flags, s.chain_start), (1, 0, [0; 32]));
        assert!(s.frames.iter().all(|f| f.chain == [0; 32]));
        assert!(s.seal.is_none_or(|x| x.chain == [0; 32]));
    }
}

/// (b) annal's writer, given the plan's log id, clock, event ids and segment
/// size, writes every file of the vector byte for byte.
fn check_writer_produces_indexed(fmt: Format) {
    let j = load_indexed_json(&fmt);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (clock, calls) = planned_clock(j.writer.clock_readings.clone());
    let opts = options(&fmt).segment_size(SEGMENT_SIZE).log_id(LOG_ID).clock(clock);
    let log = Log::open_with(&dir, opts).expect("create log");
    assert!(log.recovery().created);
    for b in &BATCHES {
        let events: Vec<EventData<'_>> = b.events.iter().map(event_data).collect();
        log.append(b.stream, ExpectedVersion::Any, &events)
            .unwrap_or_else(|e| panic!("append to {}: {e}", b.stream));
    }
    assert_eq!(log.format_version(), fmt.version);
    assert_eq!(log.chain_mode(), (fmt.chain, false));
    assert_eq!(
        log.anchor().map(|a| a.to_string()),
        j.chain.as_ref().map(|c| c.anchor.clone()),
        "Log::anchor"
    );
    log.close().expect("close");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        j.writer.clock_readings.len(),
        "clock readings taken by the writer"
    );
    let mut want: BTreeSet<String> = j.files.iter().cloned().collect();
    want.insert(LOCK_FILE.to_owned());
    // The index checkpoint of the active segment (spec 17.5; its bytes are
    // pinned by the `checkpoint` vector).
    want.insert(golden::checkpoint_name(&dir, 8));
    assert_eq!(file_names(&dir), want, "files the writer leaves");
    let committed = committed_dir(&fmt);
    for name in &j.files {
        assert_bytes_eq(
            &format!("writer's {name} vs the v{} {VECTOR} vector", fmt.version),
            &fs::read(dir.join(name)).expect("read written file"),
            &fs::read(committed.join(name)).expect("read vector file"),
        );
    }
}

/// (b) With `format_version(1)`, the writer writes the v1 indexed vector.
#[test]
fn writer_produces_the_indexed_vector() {
    check_writer_produces_indexed(Format::V1);
}

/// (b) A new log (format v2) is the v2 indexed vector byte for byte.
#[test]
fn writer_produces_the_indexed_v2_vector() {
    check_writer_produces_indexed(Format::V2);
}

/// (c) A reader of the committed vector returns exactly the reads of the JSON,
/// through the committed index files and stream table, and changes nothing.
fn check_reads_back_through_a_reader(fmt: Format) {
    let j = load_indexed_json(&fmt);
    let tmp = copy_vector(&fmt);
    let before: Vec<(String, Vec<u8>)> = j
        .files
        .iter()
        .map(|n| (n.clone(), fs::read(tmp.path().join(n)).expect("read")))
        .collect();
    let reader = Reader::open(tmp.path()).expect("open reader");
    let view = reader.view().expect("reader view");
    assert_eq!(view.segment_count(), 3);
    assert_eq!(view.next_position(), 10);
    check_reads("reader", &view, &j);
    drop(view);
    drop(reader);
    for (name, bytes) in &before {
        assert_bytes_eq(
            &format!("{name} after reading"),
            &fs::read(tmp.path().join(name)).expect("read"),
            bytes,
        );
    }
    assert_eq!(file_names(tmp.path()), j.files.iter().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn indexed_vector_reads_back_through_a_reader() {
    check_reads_back_through_a_reader(Format::V1);
}

#[test]
fn indexed_v2_vector_reads_back_through_a_reader() {
    check_reads_back_through_a_reader(Format::V2);
}

/// (c) A writer opening the committed vector finds nothing to recover or
/// rebuild, returns exactly the reads of the JSON, and leaves the segments,
/// index files and stream table as they are.
fn check_reads_back_through_a_writer(fmt: Format) {
    let j = load_indexed_json(&fmt);
    let tmp = copy_vector(&fmt);
    let keep = unchanged_file_names(&j);
    let before: Vec<(String, Vec<u8>)> = keep
        .iter()
        .map(|n| (n.clone(), fs::read(tmp.path().join(n)).expect("read")))
        .collect();
    let log = Log::open_with(tmp.path(), Options::default().segment_size(SEGMENT_SIZE)).expect("open indexed vector");
    assert_eq!(
        log.recovery(),
        &annal::Recovery::default(),
        "nothing recovered or rebuilt"
    );
    assert_eq!(log.format_version(), fmt.version, "an existing log keeps its version");
    assert_eq!(
        log.anchor().map(|a| a.to_string()),
        j.chain.as_ref().map(|c| c.anchor.clone()),
        "Log::anchor of the reopened log"
    );
    assert_eq!(log.next_position(), 10);
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for r in j.segments.iter().flat_map(|s| s.frames.iter().flat_map(|f| &f.records)) {
        newest.insert(&r.event.stream, r.event.stream_version);
    }
    assert_eq!(newest.len(), 4);
    for (stream, version) in newest {
        assert_eq!(
            log.stream_version(stream).expect("stream_version"),
            Some(version),
            "{stream}"
        );
    }
    assert_eq!(log.stream_version("order-3").expect("stream_version"), None);
    let view = log.view().expect("view");
    assert_eq!(view.segment_count(), 3);
    check_reads("writer", &view, &j);
    drop(view);
    log.close().expect("close");
    for (name, bytes) in &before {
        assert_bytes_eq(
            &format!("{name} after open and close"),
            &fs::read(tmp.path().join(name)).expect("read"),
            bytes,
        );
    }
}

#[test]
fn indexed_vector_reads_back_through_a_writer() {
    check_reads_back_through_a_writer(Format::V1);
}

#[test]
fn indexed_v2_vector_reads_back_through_a_writer() {
    check_reads_back_through_a_writer(Format::V2);
}

/// Every segment and head CRC `indexed.json` lists is the CRC the spec's
/// tables name, computed here from the committed bytes: each segment
/// header's over `[0, 124)` (spec 2.1), each frame's and seal's header over
/// its `[8, 72)` (3.1), each record's over its `[8, record_len)` (3.2), each
/// head slot's over its `[8, 64)` (5.2).
#[test]
fn json_crcs_are_the_crcs_of_the_committed_bytes() {
    let hex_crc = |v: &Value| -> u32 {
        let s = v.as_str().expect("a CRC is a hex string");
        u32::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex")
    };
    for fmt in [Format::V1, Format::V2] {
        let dir = committed_dir(&fmt);
        let j: Value = golden::load_json_from(&fmt.vectors_dir(), &format!("{VECTOR}.json"));
        let mut records = 0;
        for s in j["segments"].as_array().expect("segments") {
            let file = s["file"].as_str().expect("file");
            let b = fs::read(dir.join(file)).expect("read segment");
            assert_eq!(hex_crc(&s["header_crc"]), crc(&b[..124]), "{file}: header_crc");
            let mut frames: Vec<&Value> = s["frames"].as_array().expect("frames").iter().collect();
            if !s["seal"].is_null() {
                frames.push(&s["seal"]);
            }
            for f in frames {
                let off = f["offset"].as_u64().expect("offset") as usize;
                assert_eq!(
                    hex_crc(&f["header_crc"]),
                    crc(&b[off + 8..off + 72]),
                    "{file}: frame at {off}"
                );
                for r in f.get("records").and_then(Value::as_array).into_iter().flatten() {
                    let at = r["offset"].as_u64().expect("offset") as usize;
                    let len = r["record_len"].as_u64().expect("record_len") as usize;
                    assert_eq!(hex_crc(&r["crc"]), crc(&b[at + 8..at + len]), "{file}: record at {at}");
                    records += 1;
                }
            }
        }
        assert!(records > 0, "records listed");
        let head = fs::read(dir.join("annal.head")).expect("read head");
        for s in j["head"]["slots"].as_array().expect("slots") {
            let at = s["file_offset"].as_u64().expect("file_offset") as usize;
            assert_eq!(hex_crc(&s["crc"]), crc(&head[at + 8..at + 64]), "head slot at {at}");
        }
    }
}

/// Index version 1 (spec 17.1) is still read. `spec/vectors/index-v1/` holds
/// the version 1 index files of the indexed vectors as committed before
/// version 2: they are what the spec's version 1 tables give for the
/// committed segments, and, put in place of the version 2 files, a reader
/// and a writer return exactly the JSON's reads through them (no damage,
/// nothing rebuilt or rewritten) and `annal::check` finds nothing.
#[test]
fn version_1_index_files_are_still_read() {
    for fmt in [Format::V1, Format::V2] {
        let old = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("spec/vectors/index-v1")
            .join(format!("seg-v{}", fmt.version));
        let parsed = parse_all(&committed_segments(&fmt));
        let v1 = build_indexes(&parsed, 1);
        assert_eq!(v1.len(), 2);
        let tmp = copy_vector(&fmt);
        for m in &v1 {
            let bytes = fs::read(old.join(&m.file)).expect("read version 1 index");
            assert_bytes_eq(&format!("index-v1/{}", m.file), &bytes, &encode_index(m));
            assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
            fs::write(tmp.path().join(&m.file), &bytes).expect("put version 1 index");
        }
        let j = load_indexed_json(&fmt);
        {
            let reader = Reader::open(tmp.path()).expect("open reader");
            let view = reader.view().expect("reader view");
            check_reads("reader of version 1 indexes", &view, &j);
        }
        let report = annal::check(tmp.path(), annal::CheckOptions::default()).expect("check");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let log = Log::open_with(tmp.path(), Options::default().segment_size(SEGMENT_SIZE)).expect("open");
        assert_eq!(log.recovery(), &annal::Recovery::default(), "nothing rebuilt");
        let view = log.view().expect("view");
        check_reads("writer over version 1 indexes", &view, &j);
        drop(view);
        log.close().expect("close");
        for m in &v1 {
            assert_bytes_eq(
                &format!("{} after open and close", m.file),
                &fs::read(tmp.path().join(&m.file)).expect("read"),
                &fs::read(old.join(&m.file)).expect("read"),
            );
        }
    }
}
