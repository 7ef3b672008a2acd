//! Compatibility of format v2 builds with format v1 logs (`spec/format.md`,
//! section 15): a v1 log, the frozen golden vectors of `spec/vectors/v1/`,
//! opened by the current writer stays v1. It gets no chain, the segments it
//! creates are v1 segments (version 1, `log_flags` 0, zero `chain_start`,
//! `key_id` and chain slots), its head file stays v1, `annal::check` passes,
//! and reads return the old events followed by the new ones.

mod golden;

use std::fs;
use std::path::Path;

use annal::{ChainKey, CheckOptions, Error, EventData, ExpectedVersion, Log, LogView, Options, Reader};
use golden::{EventJson, copy_dir, crc, event_of, file_names, vectors_dir};
use serde_json::Value;

/// Small enough that the appends below roll a new segment in both vectors.
const SEGMENT_SIZE: u64 = 900;
/// Events appended to the old log: 6 batches of one event each.
const NEW_BATCHES: usize = 6;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The events listed in a v1 vector JSON (`segment` or `segments`), in order.
fn listed_events(json: &Value) -> Vec<EventJson> {
    let segments: Vec<&Value> = match (json.get("segment"), json.get("segments")) {
        (Some(s), _) => vec![s],
        (None, Some(Value::Array(a))) => a.iter().collect(),
        _ => panic!("the JSON lists no segment"),
    };
    segments
        .iter()
        .flat_map(|s| s["frames"].as_array().expect("frames").iter())
        .flat_map(|f| f["records"].as_array().expect("records").iter())
        .map(|r| serde_json::from_value(r.clone()).expect("a listed event"))
        .collect()
}

fn read_events(view: &LogView) -> Vec<EventJson> {
    view.read_all(0).map(|r| event_of(&r.expect("read"))).collect()
}

/// Every segment file of `dir`, in log order.
fn segment_files(dir: &Path) -> Vec<String> {
    file_names(dir).into_iter().filter(|n| n.ends_with(".seg")).collect()
}

/// Asserts that the segment `file` is a format v1 segment throughout: header
/// version 1, `log_flags` 0, `chain_start`, `key_id` and reserved bytes zero,
/// a valid header CRC, and every frame's chain slot zero.
fn assert_v1_segment(dir: &Path, file: &str) {
    let b = fs::read(dir.join(file)).expect("read segment");
    assert_eq!(&b[0..8], b"ANNALSEG", "{file}: magic");
    assert_eq!(u16_at(&b, 8), 1, "{file}: format_version");
    assert_eq!(u16_at(&b, 10), 0, "{file}: log_flags");
    assert!(
        b[56..124].iter().all(|&x| x == 0),
        "{file}: chain_start, key_id, reserved1 zero"
    );
    assert_eq!(crc(&b[0..124]).to_le_bytes(), b[124..128], "{file}: header_crc");
    let mut at = 128usize;
    let mut frames = 0;
    while at < b.len() {
        let h = &b[at..at + 72];
        assert_eq!(&h[0..4], b"BTCH", "{file}: frame at {at}");
        assert!(
            h[40..72].iter().all(|&x| x == 0),
            "{file}: chain slot of the frame at {at} is zero"
        );
        at += u64_at(h, 8) as usize;
        frames += 1;
    }
    assert_eq!(at, b.len(), "{file}: frames end at the end of the file");
    assert!(frames > 0, "{file}: holds frames");
}

/// Asserts that both slots of the head file carry format_version 1 (spec 5.2).
fn assert_v1_head(dir: &Path) {
    let h = fs::read(dir.join(annal::HEAD_FILE)).expect("read head");
    for slot in [0usize, 64] {
        if &h[slot..slot + 4] == b"HEAD" {
            assert_eq!(u16_at(&h, slot + 8), 1, "head slot at {slot}: format_version");
        }
    }
}

fn assert_stays_v1(log: &Log) {
    assert_eq!(log.format_version(), 1, "Log::format_version");
    assert_eq!(log.chain_mode(), (false, false), "Log::chain_mode");
    assert_eq!(log.anchor(), None, "Log::anchor");
}

/// Open the v1 vector `name` with the current writer (default options: they
/// create v2 logs with the chain), append, close; everything stays v1.
fn check_v1_vector_stays_v1(name: &str) {
    let json: Value = golden::load_json(&format!("{name}.json"));
    assert_eq!(json["format_version"], 1);
    let old = listed_events(&json);
    let tmp = copy_dir(&vectors_dir().join(name));
    let dir = tmp.path();
    let old_segments = segment_files(dir);
    let old_bytes: Vec<Vec<u8>> = old_segments
        .iter()
        .map(|n| fs::read(dir.join(n)).expect("read segment"))
        .collect();

    let log = Log::open_with(dir, Options::default().chain(true).segment_size(SEGMENT_SIZE)).expect("open v1 log");
    assert_eq!(
        log.recovery(),
        &annal::Recovery::default(),
        "{name}: nothing to recover"
    );
    assert_stays_v1(&log);
    assert_eq!(read_events(&log.view().expect("view")), old, "{name}: old events");
    let mut new = Vec::new();
    for i in 0..NEW_BATCHES {
        let payload = format!(r#"{{"n":{i}}}"#);
        let r = log
            .append(
                "compat-1",
                ExpectedVersion::Any,
                &[EventData::new("Appended", payload.as_bytes())],
            )
            .unwrap_or_else(|e| panic!("{name}: append {i}: {e}"));
        new.push((r.first_position, i));
    }
    assert_stays_v1(&log);
    let all = read_events(&log.view().expect("view"));
    log.close().expect("close");

    // Old events, then the new ones.
    assert_eq!(all.len(), old.len() + NEW_BATCHES);
    assert_eq!(all[..old.len()], old[..], "{name}: old events after appending");
    for (e, (position, i)) in all[old.len()..].iter().zip(&new) {
        assert_eq!(
            (e.position, e.stream.as_str(), e.event_type.as_str(), e.payload.clone()),
            (*position, "compat-1", "Appended", format!(r#"{{"n":{i}}}"#)),
            "{name}: new event {i}"
        );
    }

    // The old segments' events are untouched (the active one may have grown
    // and been sealed), and the writer created at least one new segment: all
    // of them v1.
    let segments = segment_files(dir);
    assert!(
        segments.len() > old_segments.len(),
        "{name}: a new segment was created: {segments:?}"
    );
    for (n, before) in old_segments.iter().zip(&old_bytes) {
        let after = fs::read(dir.join(n)).expect("read segment");
        assert_eq!(after[..before.len()], before[..], "{name}: {n} keeps its bytes");
    }
    for n in &segments {
        assert_v1_segment(dir, n);
    }
    assert_v1_head(dir);

    let report = annal::check(dir, CheckOptions::default()).expect("check runs");
    assert!(report.is_ok(), "{name}: check problems: {:?}", report.problems);
    assert_eq!(report.records, all.len() as u64, "{name}: records checked");

    // A reader sees the same, and a reopened writer still sees a v1 log.
    let reader = Reader::open(dir).expect("open reader");
    assert_eq!(read_events(&reader.view().expect("reader view")), all);
    drop(reader);
    let log = Log::open(dir).expect("reopen");
    assert_stays_v1(&log);
    log.close().expect("close");

    // A chain key for a log that is not keyed is refused, and changes nothing.
    let before = fs::read(dir.join(&segments[0])).expect("read segment");
    match Log::open_with(dir, Options::default().chain_key(ChainKey::from_bytes([0x42; 32]))) {
        Err(Error::ChainKey { .. }) => {}
        other => panic!("{name}: expected Error::ChainKey for a v1 log, got {other:?}"),
    }
    assert_eq!(fs::read(dir.join(&segments[0])).expect("read segment"), before);
}

#[test]
fn v1_simple_log_stays_v1_when_appended_to() {
    check_v1_vector_stays_v1("simple");
}

#[test]
fn v1_indexed_log_stays_v1_when_appended_to() {
    check_v1_vector_stays_v1("indexed");
}
