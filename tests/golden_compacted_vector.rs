//! Golden vector of compaction (`spec/format.md` sections 3.10 and 15), in
//! `spec/vectors/v4/compacted/` + `compacted.json`: a format version 4 log
//! written by annal's writer (fixed log id, a scripted clock,
//! `Durability::Buffered`, the audit chain on, `segment_size` 512) with
//! three streams: `cart-1`, soft-deleted (`delete_stream`); `sensor-1`,
//! appended in batches of 3 events of one type and kept under `max_count`
//! 2; `order-1`, without rules. Then `compact()` rewrote the two sealed
//! segments that held hidden events: segment 0 lost every event (it is a
//! header and a seal); segment 6 lost a whole `sensor-1` batch and the
//! first record of the next one (whose record for version 7 had no `TYPE`
//! and got one), and kept `cart-1`'s newest event, hidden but kept (spec
//! 3.10: only a tombstoned stream loses its newest event). One more
//! append, then the log was closed.
//!
//! The JSON is computed from the committed bytes by code written from the
//! spec alone: the v3 reader of `tests/golden/v3.rs` (which reads version 4
//! segments, `COMPACTED` ones included) and the compaction record decoder
//! below (never annal's). The test checks that
//!
//! 1. the independent reader reads the committed bytes to the committed
//!    JSON: every segment (base, `segment_flags`, `prev_timestamp`,
//!    `chain_start`, its batches, the chains at its end, the positions it
//!    skips), every compaction record field by field with its runs, every
//!    rules record, and every event left, with the rule that hides it (the
//!    v4 rules decoder and visibility rule of `tests/golden/v4.rs`);
//! 2. each record accounts for its compacted segment: the positions the
//!    segment skips are exactly its runs (stream and versions contiguous
//!    with the events left), `compacted_end` is the chain linked from
//!    `chain_start` through the rewritten batches, `original_end` the seal's
//!    slot and the next segment's `chain_start`, `next_base` the seal's
//!    `first_position` and the next segment's base, `compacted_len` the
//!    file's length; every run is hidden by the rules recorded before the
//!    record and holds no stream's newest event; segments without
//!    `COMPACTED` skip nothing;
//! 3. annal's `Reader` returns exactly the visible events left (and reads
//!    `sensor-1` from version 0 as 7, 8, `cart-1` as deleted), and
//!    `annal::check` reports no problem and lists each compacted segment;
//! 4. annal's writer, given the same log id, clock and calls, writes the
//!    committed segment files and head byte for byte; and the originals it wrote
//!    before `compact()`, rewritten by the rules of 3.10 with this file's
//!    own encoder (header flag, cut batches, chain links and slots at the
//!    new offsets, the original seal's chain), are the committed files.
//!
//! ```text
//! ANNAL_REGENERATE_VECTORS=1 cargo test --all-features --test golden_compacted_vector
//! ```

mod golden;
#[path = "golden/v3.rs"]
mod v3;
#[path = "golden/v4.rs"]
mod v4;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{
    CheckOptions, Direction, Durability, Error, EventData, ExpectedVersion, Log, Options, Reader, StreamMetadata,
};
use serde::{Deserialize, Serialize};

use golden::{assert_bytes_eq, crc, hex, put, regenerating};

const LOG_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const CLOCK_START: u64 = 1_700_000_000_000_000_000;
const CLOCK_STEP: u64 = 1_000;
const MAX_COUNT: u64 = 2;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/v4")
}

fn append(log: &Log, stream: &str, event_type: &str, payloads: &[&str]) {
    let events: Vec<EventData<'_>> = payloads
        .iter()
        .map(|p| EventData::new(event_type, p.as_bytes().to_vec()))
        .collect();
    log.append(stream, ExpectedVersion::Any, &events).expect("append");
}

/// The segment files of `dir` and their bytes.
fn segments_of(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|(b, p)| (b, fs::read(p).expect("read segment")))
        .collect()
}

/// Write the vector's log into `dir` with annal's writer; returns the
/// segment files as they were just before `compact()`.
fn write_log(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let n = Arc::new(AtomicU64::new(0));
    let clock = Arc::new(move || CLOCK_START + n.fetch_add(1, Ordering::SeqCst) * CLOCK_STEP);
    let opts = Options::default()
        // A version 4 vector (new logs are version 5).
        .format_version(4)
        .log_id(LOG_ID)
        .clock(clock)
        .durability(Durability::Buffered)
        .segment_size(512);
    let log = Log::open_with(dir, opts).expect("open");
    // Segment 0: nothing in it will be left.
    append(&log, "cart-1", "Added", &["{\"sku\":\"A-1\"}", "{\"sku\":\"B-2\"}"]);
    append(&log, "sensor-1", "Read", &["{\"t\":1}", "{\"t\":2}", "{\"t\":3}"]);
    append(&log, "cart-1", "Removed", &["{\"sku\":\"A-1\"}"]);
    // Segment 1: kept events between removed ones, and a batch that loses
    // its first record (the next one, without TYPE, gets it).
    append(&log, "order-1", "Placed", &["{\"n\":1}"]);
    append(&log, "sensor-1", "Read", &["{\"t\":4}", "{\"t\":5}", "{\"t\":6}"]);
    append(&log, "cart-1", "Added", &["{\"sku\":\"C-3\"}"]);
    append(&log, "sensor-1", "Read", &["{\"t\":7}", "{\"t\":8}", "{\"t\":9}"]);
    // The rules, then enough to seal the segment that holds the last
    // hidden event.
    log.set_stream_metadata("sensor-1", StreamMetadata::new().max_count(MAX_COUNT))
        .expect("max_count");
    log.delete_stream("cart-1", ExpectedVersion::Any).expect("delete");
    append(&log, "order-1", "Paid", &["{\"n\":2}"]);
    append(&log, "order-1", "Packed", &["{\"n\":3}"]);
    append(&log, "order-1", "Shipped", &["{\"n\":4}"]);
    let before = segments_of(dir);
    let r = log.compact().expect("compact");
    assert_eq!(r.compacted.len(), 2, "{r:?}");
    append(&log, "order-1", "Delivered", &["{\"n\":5}"]);
    log.close().expect("close");
    before
}

/// The segment files of `dir`.
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            Some((n.strip_suffix(".seg")?.parse().ok()?, e.path()))
        })
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Gap {
    first_position: u64,
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch {
    offset: u64,
    chained: bool,
    durable_end: u32,
    first_position: u64,
    record_count: u32,
    stream: String,
    first_version: u64,
    /// `rflags` of each record, in order.
    rflags: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    file: String,
    len: u64,
    base_position: u64,
    segment_flags: u16,
    flag_names: Vec<String>,
    prev_timestamp: u64,
    chain_start: String,
    batches: Vec<Batch>,
    /// The chain after the segment's last batch (`chain_start` without one).
    chain_end: String,
    /// The seal's `first_position` and chain slot (sealed segments).
    seal_next: Option<u64>,
    seal_chain: Option<String>,
    /// Positions in `[base, seal_next)` no frame holds.
    gaps: Vec<Gap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    gap: u64,
    first_position: u64,
    count: u64,
    first_version: u64,
    timestamp: u64,
    stream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    position: u64,
    payload: String,
    compaction_version: u8,
    flags: u8,
    segment_base: u64,
    next_base: u64,
    compacted_len: u64,
    removed_count: u64,
    run_count: u64,
    original_end: String,
    compacted_end: String,
    runs: Vec<Run>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    position: u64,
    stream: String,
    stream_version: u64,
    event_type: String,
    payload: String,
}

/// An application event left in the files, and the rule that hides it
/// (spec 3.7), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeftEvent {
    #[serde(flatten)]
    event: Event,
    hidden_by: Option<String>,
}

/// A `$meta-S` event's rules record, field by field (spec 3.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RulesRow {
    position: u64,
    stream: String,
    flags: u8,
    flag_names: Vec<String>,
    truncate_before: u64,
    max_count: u64,
    max_age: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Vector {
    note: String,
    log_id: String,
    segments: Vec<Segment>,
    compaction: Vec<Record>,
    /// The rules of the `$meta-S` events, in position order.
    rules: Vec<RulesRow>,
    /// Events of application streams left in the files, in position order,
    /// each with the rule that hides it (`read_all` returns those without).
    events: Vec<LeftEvent>,
    /// Events of system streams (`$meta-…`, `$compaction`), payloads in hex.
    system_events: Vec<Event>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8"))
}

/// Spec 3.10, the compaction record, decoded from its table alone; a
/// record that breaks a rule of the table panics (it is damage).
fn decode_record(position: u64, p: &[u8]) -> Record {
    assert!(p.len() >= 112, "a compaction record has 112 bytes before its runs");
    assert_eq!(p[0], 1, "compaction_version");
    assert_eq!(p[1], 0, "flags must be zero");
    assert!(p[2..8].iter().all(|&b| b == 0), "reserved0");
    let segment_base = u64_at(p, 8);
    let next_base = u64_at(p, 16);
    assert!(next_base > segment_base, "next_base above segment_base");
    let (removed_count, run_count) = (u64_at(p, 32), u64_at(p, 40));
    let mut runs = Vec::new();
    let mut at = 112;
    let mut end_of_previous = segment_base;
    for _ in 0..run_count {
        let (gap, next) = v3::get_varint(p, at, p.len()).expect("gap");
        let (count, next) = v3::get_varint(p, next, p.len()).expect("count");
        let (first_version, next) = v3::get_varint(p, next, p.len()).expect("first_version");
        let (timestamp, next) = v3::get_varint(p, next, p.len()).expect("timestamp");
        let (stream_len, next) = v3::get_varint(p, next, p.len()).expect("stream_len");
        assert!(count >= 1, "a run has at least one event");
        assert!((1..=65_535).contains(&stream_len), "stream_len");
        let stop = next + stream_len as usize;
        assert!(stop <= p.len(), "the stream name lies in the record");
        let stream = std::str::from_utf8(&p[next..stop]).expect("UTF-8").to_owned();
        let first_position = end_of_previous.checked_add(gap).expect("position");
        end_of_previous = first_position.checked_add(count).expect("run end");
        assert!(
            end_of_previous <= next_base,
            "runs lie inside [segment_base, next_base)"
        );
        runs.push(Run {
            gap,
            first_position,
            count,
            first_version,
            timestamp,
            stream,
        });
        at = stop;
    }
    assert_eq!(at, p.len(), "the record ends with its last run");
    assert_eq!(
        runs.iter().map(|r| r.count).sum::<u64>(),
        removed_count,
        "removed_count is the sum of the runs' counts"
    );
    Record {
        position,
        payload: hex(p),
        compaction_version: p[0],
        flags: p[1],
        segment_base,
        next_base,
        compacted_len: u64_at(p, 24),
        removed_count,
        run_count,
        original_end: hex(&p[48..80]),
        compacted_end: hex(&p[80..112]),
        runs,
    }
}

/// The chain after the last batch of a walked segment, linked from its
/// `chain_start` (spec 21.2), every stored batch slot compared on the way.
fn chain_end(bytes: &[u8], walk: &v3::Walk) -> [u8; 32] {
    v3::verify_chain(bytes, walk, None).unwrap_or_else(|at| panic!("chain breaks at {at}"))
}

/// The vector as the independent reader sees the log in `dir`.
fn describe(dir: &Path) -> Vector {
    let mut segments = Vec::new();
    let mut compaction = Vec::new();
    let mut events = Vec::new();
    let mut system_events = Vec::new();
    let mut rules: Vec<RulesRow> = Vec::new();
    for (base, path) in segment_files(dir) {
        let bytes = fs::read(&path).expect("read segment");
        let walk = v3::walk_segment(&bytes, base).unwrap_or_else(|at| panic!("{}: damage at {at}", path.display()));
        assert!(walk.incomplete.is_none(), "{}: a complete segment", path.display());
        assert_eq!(walk.header.format_version, 4);
        assert_eq!(walk.header.log_id, LOG_ID);
        let end = chain_end(&bytes, &walk);
        let seal = walk.frames.iter().find(|f| f.head.kind == 2);
        for e in walk.events() {
            let system = e.stream.starts_with('$');
            let event = Event {
                position: e.position,
                stream: e.stream.clone(),
                stream_version: e.stream_version,
                event_type: e.event_type.clone(),
                payload: if system {
                    hex(&e.payload)
                } else {
                    String::from_utf8(e.payload.clone()).expect("utf-8")
                },
            };
            if e.stream == "$compaction" {
                assert_eq!((e.event_type.as_str(), e.schema_version), ("$compacted", 0));
                assert!(e.metadata.is_empty());
                compaction.push(decode_record(e.position, &e.payload));
            }
            if let Some(target) = v4::meta_target(&e.stream) {
                let r = v4::decode_meta_event(&e.event_type, e.schema_version, &e.metadata, &e.payload)
                    .unwrap_or_else(|why| panic!("metadata event at {}: {why}", e.position));
                rules.push(RulesRow {
                    position: e.position,
                    stream: target.to_owned(),
                    flags: r.flags,
                    flag_names: r.flag_names(),
                    truncate_before: r.truncate_before,
                    max_count: r.max_count,
                    max_age: r.max_age,
                });
            }
            if system {
                system_events.push(event);
            } else {
                events.push(event);
            }
        }
        let flags = walk.header.segment_flags;
        segments.push(Segment {
            file: path.file_name().expect("name").to_string_lossy().into_owned(),
            len: bytes.len() as u64,
            base_position: base,
            segment_flags: flags,
            flag_names: if flags & v3::SEGMENT_FLAG_COMPACTED != 0 {
                vec!["COMPACTED".to_owned()]
            } else {
                Vec::new()
            },
            prev_timestamp: walk.header.prev_timestamp,
            chain_start: hex(&walk.header.chain_start),
            batches: walk
                .frames
                .iter()
                .filter(|f| f.head.kind == 1)
                .map(|f| Batch {
                    offset: f.offset,
                    chained: f.head.chained,
                    durable_end: f.head.durable_end,
                    first_position: f.head.first_position,
                    record_count: f.head.record_count,
                    stream: f.stream.clone(),
                    first_version: f.first_version,
                    rflags: f.events.iter().map(|e| e.rflags).collect(),
                })
                .collect(),
            chain_end: hex(&end),
            seal_next: seal.map(|s| s.head.first_position),
            seal_chain: seal.and_then(|s| s.slot).map(|s| hex(&s)),
            gaps: walk
                .gaps()
                .into_iter()
                .map(|(first_position, count)| Gap { first_position, count })
                .collect(),
        });
    }
    // Spec 3.7 "Visibility" against the newest rules of each stream and
    // its newest version left (compaction keeps the newest event of a
    // stream that is not tombstoned); no rule here has `MAX_AGE`, so no
    // `now` is needed.
    assert!(rules.iter().all(|r| r.max_age == 0));
    let events = events
        .iter()
        .map(|e: &Event| {
            let r = rules.iter().rev().find(|r| r.stream == e.stream).map(rules_of);
            let last = events
                .iter()
                .filter(|o| o.stream == e.stream)
                .map(|o| o.stream_version)
                .max()
                .expect("e itself");
            LeftEvent {
                event: e.clone(),
                hidden_by: v4::hidden_by(r.as_ref(), last, e.stream_version, 0, 0).map(str::to_owned),
            }
        })
        .collect();
    Vector {
        note: "spec 3.10: a log whose sealed segments compaction rewrote without the events of a soft-deleted \
               stream and those max_count 2 hides; every field computed from the committed bytes by \
               tests/golden_compacted_vector.rs"
            .to_owned(),
        log_id: hex(&LOG_ID),
        segments,
        compaction,
        rules,
        events,
        system_events,
    }
}

/// The rules record of a row.
fn rules_of(r: &RulesRow) -> v4::Rules {
    v4::Rules {
        rules_version: 1,
        flags: r.flags,
        truncate_before: r.truncate_before,
        max_count: r.max_count,
        max_age: r.max_age,
    }
}

/// Check 2: every record accounts for its compacted segment, and the
/// segments join.
fn check_accounts(v: &Vector) {
    assert_eq!(v.segments[0].base_position, 0);
    assert_eq!(v.segments[0].chain_start, hex(&v3::genesis(None, &LOG_ID)));
    for (i, s) in v.segments.iter().enumerate() {
        let next = v.segments.get(i + 1);
        match next {
            Some(n) => {
                assert_eq!(
                    s.seal_next,
                    Some(n.base_position),
                    "{}: the seal names the next base",
                    s.file
                );
                assert_eq!(
                    s.seal_chain.as_ref(),
                    Some(&n.chain_start),
                    "{}: the seal joins",
                    s.file
                );
            }
            None => assert_eq!(s.seal_next, None, "the last segment is active"),
        }
        if s.flag_names.is_empty() {
            assert!(s.gaps.is_empty(), "{}: a segment not compacted skips nothing", s.file);
            if let Some(c) = &s.seal_chain {
                assert_eq!(
                    c, &s.chain_end,
                    "{}: its seal holds the chain after its last batch",
                    s.file
                );
            }
            continue;
        }
        // The newest record of the segment describes its file.
        let rec = v
            .compaction
            .iter()
            .rev()
            .find(|r| r.segment_base == s.base_position)
            .unwrap_or_else(|| panic!("{}: a compacted segment no record accounts for", s.file));
        assert_eq!(rec.next_base, s.seal_next.expect("sealed"), "{}: next_base", s.file);
        assert_eq!(rec.compacted_len, s.len, "{}: compacted_len", s.file);
        assert_eq!(
            Some(&rec.original_end),
            s.seal_chain.as_ref(),
            "{}: original_end",
            s.file
        );
        assert_eq!(
            Some(&rec.original_end),
            next.map(|n| &n.chain_start),
            "{}: original_end joins the next segment",
            s.file
        );
        assert_eq!(rec.compacted_end, s.chain_end, "{}: compacted_end", s.file);
        let gaps: Vec<Gap> = rec
            .runs
            .iter()
            .map(|r| Gap {
                first_position: r.first_position,
                count: r.count,
            })
            .collect();
        // Adjacent runs (of batches that lost all their records) make one
        // gap.
        let mut merged: Vec<Gap> = Vec::new();
        for g in gaps {
            match merged.last_mut() {
                Some(m) if m.first_position + m.count == g.first_position => m.count += g.count,
                _ => merged.push(g),
            }
        }
        assert_eq!(merged, s.gaps, "{}: the positions skipped are the runs", s.file);
        // Each stream's versions, kept events and runs together, are
        // contiguous in position order.
        let mut by_stream: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        for b in &s.batches {
            for i in 0..u64::from(b.record_count) {
                by_stream
                    .entry(&b.stream)
                    .or_default()
                    .push((b.first_position + i, b.first_version + i));
            }
        }
        for r in &rec.runs {
            for i in 0..r.count {
                by_stream
                    .entry(&r.stream)
                    .or_default()
                    .push((r.first_position + i, r.first_version + i));
            }
        }
        for (stream, mut pv) in by_stream {
            pv.sort();
            for w in pv.windows(2) {
                assert_eq!(w[1].1, w[0].1 + 1, "{}: {stream}'s versions are contiguous", s.file);
            }
        }
        // Every run is hidden by the rules recorded before the record, and
        // none holds the newest event of a stream that is not tombstoned.
        for r in &rec.runs {
            let rules = v
                .rules
                .iter()
                .rev()
                .find(|m| m.stream == r.stream && m.position < rec.position)
                .map(rules_of)
                .unwrap_or_else(|| panic!("{}: no rules hide the run {r:?}", s.file));
            let last = v
                .events
                .iter()
                .filter(|e| e.event.stream == r.stream && e.event.position < rec.position)
                .map(|e| e.event.stream_version)
                .max()
                .expect("the stream's newest event is left");
            for version in r.first_version..r.first_version + r.count {
                assert!(
                    v4::hidden_by(Some(&rules), last, version, 0, 0).is_some(),
                    "{}: {} version {version} is not hidden",
                    s.file,
                    r.stream
                );
                assert!(rules.has(v4::TOMBSTONE) || version < last, "the newest event is kept");
            }
        }
    }
}

/// Spec 3.10 "The rewritten segment", from the original segment `orig` and
/// the record `rec` that lists its runs: the header with `COMPACTED`, each
/// batch that keeps a record with its first `k` records cut (the first kept
/// record given `TYPE` if it had none), `durable_end` its own offset, the
/// chain slots of 3.6 at the new offsets linked from `chain_start`, and a
/// seal at `next_base` holding the original seal's chain. (The seal's
/// `durable_end`, which 3.10 does not name, is taken as its own offset, like
/// the batches'.)
fn rewrite(orig: &[u8], base: u64, rec: &Record) -> Vec<u8> {
    let walk = v3::walk_segment(orig, base).expect("original segment");
    assert!(!walk.header.compacted());
    let removed = |p: u64| {
        rec.runs
            .iter()
            .any(|r| (r.first_position..r.first_position + r.count).contains(&p))
    };
    let mut out = orig[..128].to_vec();
    out[12] |= v3::SEGMENT_FLAG_COMPACTED as u8;
    let c = crc(&out[..124]);
    put(&mut out, 124, &c.to_le_bytes());
    let mut chain = walk.header.chain_start;
    let mut prev_batch = None;
    let mut seal_chain = None;
    for f in &walk.frames {
        if f.head.kind == 2 {
            assert_eq!(f.head.first_position, rec.next_base);
            seal_chain = f.slot;
            continue;
        }
        let k = f.events.iter().take_while(|e| removed(e.position)).count();
        assert!(
            f.events[k..].iter().all(|e| !removed(e.position)),
            "a run is a prefix of a batch"
        );
        if k > 0 {
            let run = rec.runs.iter().find(|r| r.first_position == f.head.first_position);
            assert_eq!(
                run.map(|r| r.timestamp),
                Some(f.timestamp),
                "a run states its batch's timestamp"
            );
        }
        if k == f.events.len() {
            continue;
        }
        let mut body = Vec::new();
        v3::put_varint(&mut body, f.timestamp - walk.header.prev_timestamp);
        v3::put_varint(&mut body, f.stream.len() as u64);
        body.extend_from_slice(f.stream.as_bytes());
        v3::put_varint(&mut body, f.first_version + k as u64);
        for (i, e) in f.events[k..].iter().enumerate() {
            let bytes = &orig[e.offset as usize..(e.offset + e.len) as usize];
            if i > 0 || e.rflags & v3::RFLAG_TYPE != 0 {
                body.extend_from_slice(bytes);
                continue;
            }
            // `rflags`, `event_id`, `schema_version` come before the type.
            let mut head = 1 + if e.rflags & v3::RFLAG_ID != 0 { 16 } else { 0 };
            if e.rflags & v3::RFLAG_SCHEMA != 0 {
                head = v3::get_varint(bytes, head, bytes.len()).expect("schema").1;
            }
            body.push(e.rflags | v3::RFLAG_TYPE);
            body.extend_from_slice(&bytes[1..head]);
            v3::put_varint(&mut body, e.event_type.len() as u64);
            body.extend_from_slice(e.event_type.as_bytes());
            body.extend_from_slice(&bytes[head..]);
        }
        let off = out.len() as u64;
        let chained = v3::stores_slot(true, off, prev_batch);
        let (frame, after) = v3::batch_frame(
            None,
            Some(&chain),
            chained,
            f.head.first_position + k as u64,
            f.head.record_count - k as u32,
            off as u32,
            &body,
        );
        chain = after.expect("chained log");
        out.extend_from_slice(&frame);
        prev_batch = Some(off);
    }
    let seal_at = out.len() as u32;
    out.extend_from_slice(&v3::seal_frame(
        Some(&seal_chain.expect("a sealed original")),
        rec.next_base,
        seal_at,
    ));
    out
}

/// Copy the committed log to a scratch directory (checks and readers may
/// not touch the committed files; a writer would).
fn scratch_copy(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for e in fs::read_dir(src).expect("dir").flatten() {
        fs::copy(e.path(), d.path().join(e.file_name())).expect("copy");
    }
    d
}

#[test]
fn compacted_log_vector() {
    let dir = vector_dir().join("compacted");
    let json = vector_dir().join("compacted.json");
    if regenerating() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        write_log(&dir);
        // Only the segments and the head are committed: every other file
        // is derived (spec 1) or the lock.
        for e in fs::read_dir(&dir).expect("dir").flatten() {
            let n = e.file_name().into_string().unwrap_or_default();
            if !(n.ends_with(".seg") || n == "annal.head") {
                fs::remove_file(e.path()).expect("rm");
            }
        }
        let v = describe(&dir);
        fs::write(&json, serde_json::to_string_pretty(&v).expect("json") + "\n").expect("write json");
    }
    // 1. The committed bytes read to the committed JSON.
    let want: Vector = serde_json::from_str(&fs::read_to_string(&json).expect("read json")).expect("parse json");
    let got = describe(&dir);
    assert_eq!(got, want, "the committed bytes, read from the spec alone");
    // 2. Each record accounts for its segment; the vector shows what it
    // is meant to.
    check_accounts(&got);
    let compacted: Vec<&Segment> = got.segments.iter().filter(|s| !s.flag_names.is_empty()).collect();
    assert_eq!(compacted.len(), 2);
    assert_eq!(got.compaction.len(), 2);
    assert!(compacted[0].batches.is_empty(), "the first segment lost every event");
    assert!(
        compacted[1].gaps.len() >= 2,
        "a batch wholly removed and a prefix of another"
    );
    assert_eq!(compacted[0].chain_end, compacted[0].chain_start);
    let cut = compacted[1]
        .batches
        .iter()
        .find(|b| b.stream == "sensor-1")
        .expect("sensor-1's newest batch");
    assert_eq!(
        (cut.first_version, cut.record_count, cut.rflags.clone()),
        (7, 2, vec![v3::RFLAG_TYPE, 0]),
        "the batch of versions 6..8 lost version 6; version 7 got TYPE"
    );
    assert!(
        got.segments
            .iter()
            .any(|s| s.flag_names.is_empty() && s.seal_next.is_some()),
        "a sealed segment with nothing to remove is left as it is"
    );
    let left = |stream: &str| -> Vec<(u64, Option<String>)> {
        got.events
            .iter()
            .filter(|e| e.event.stream == stream)
            .map(|e| (e.event.stream_version, e.hidden_by.clone()))
            .collect()
    };
    assert_eq!(
        left("cart-1"),
        [(3, Some("TRUNCATE_BEFORE".to_owned()))],
        "a soft-deleted stream keeps its newest event, hidden"
    );
    assert_eq!(left("sensor-1"), [(7, None), (8, None)]);
    let visible: Vec<Event> = got
        .events
        .iter()
        .filter(|e| e.hidden_by.is_none())
        .map(|e| e.event.clone())
        .collect();
    // 3. annal's readers and check.
    let copy = scratch_copy(&dir);
    let reader = Reader::open(copy.path()).expect("reader");
    let view = reader.view().expect("view");
    let read: Vec<Event> = view
        .read_all(0)
        .map(|r| {
            let r = r.expect("read");
            Event {
                position: r.position(),
                stream: r.stream().to_owned(),
                stream_version: r.stream_version(),
                event_type: r.event_type().to_owned(),
                payload: String::from_utf8(r.payload().to_vec()).expect("utf-8"),
            }
        })
        .collect();
    assert_eq!(read, visible, "annal's read_all");
    let sensor: Vec<u64> = view
        .read_stream("sensor-1", 0, Direction::Forward, u64::MAX)
        .map(|r| r.expect("read").stream_version())
        .collect();
    assert_eq!(
        sensor,
        [7, 8],
        "sensor-1 from version 0 starts at the first version left"
    );
    assert!(matches!(
        view.read_stream("cart-1", 0, Direction::Forward, u64::MAX).next(),
        Some(Err(Error::StreamDeleted { .. }))
    ));
    drop(view);
    let report = annal::check(copy.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert_eq!(report.compaction.len(), compacted.len(), "{:#?}", report.compaction);
    // 4. annal's writer writes the segments byte for byte, and its
    // originals rewrite, by spec 3.10, to the committed files.
    let fresh = tempfile::tempdir().expect("tempdir");
    let originals = write_log(fresh.path());
    let (a, b) = (segment_files(fresh.path()), segment_files(&dir));
    assert_eq!(
        a.iter().map(|f| f.0).collect::<Vec<_>>(),
        b.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    for ((_, p), (_, q)) in a.iter().zip(&b) {
        assert_bytes_eq(
            &p.file_name().expect("name").to_string_lossy(),
            &fs::read(p).expect("read"),
            &fs::read(q).expect("read"),
        );
    }
    assert_bytes_eq(
        "annal.head",
        &fs::read(fresh.path().join("annal.head")).expect("read"),
        &fs::read(dir.join("annal.head")).expect("read"),
    );
    for s in &compacted {
        let rec = got
            .compaction
            .iter()
            .rev()
            .find(|r| r.segment_base == s.base_position)
            .expect("record");
        let (_, orig) = originals
            .iter()
            .find(|(base, _)| *base == s.base_position)
            .expect("the original");
        assert_bytes_eq(
            &format!("{} rewritten from the original", s.file),
            &rewrite(orig, s.base_position, rec),
            &fs::read(dir.join(&s.file)).expect("read"),
        );
    }
}

/// The independent reader accepts the gaps only with `COMPACTED`: the same
/// bytes with the flag cleared (header CRC recomputed) stop at the first
/// frame after a gap, found at its `first_position` (spec 3.6 step 5).
#[test]
fn gaps_need_the_compacted_flag() {
    let dir = vector_dir().join("compacted");
    let v: Vector = serde_json::from_str(&fs::read_to_string(vector_dir().join("compacted.json")).expect("read json"))
        .expect("parse json");
    for s in v.segments.iter().filter(|s| !s.gaps.is_empty()) {
        let mut bytes = fs::read(dir.join(&s.file)).expect("read");
        bytes[12] &= !(v3::SEGMENT_FLAG_COMPACTED as u8);
        let c = crc(&bytes[..124]);
        put(&mut bytes, 124, &c.to_le_bytes());
        let walk = v3::walk_segment(&bytes, s.base_position).expect("header");
        let first_gap = s.gaps[0].first_position;
        // The first frame past the first gap: a batch, or the seal.
        let after = s
            .batches
            .iter()
            .find(|b| b.first_position > first_gap)
            .map_or(s.len - 64, |b| b.offset);
        assert_eq!(walk.incomplete, Some((after, after + 16)), "{}", s.file);
    }
}
