//! Index hits are checked against the records they point to (issue 13,
//! defect 8): an `.idx` whose CRCs are valid but whose entries for one stream
//! (or category, or event type) point at another's batches is reported as
//! damaged and replaced by an index rebuilt from the segment, so reads return
//! exactly the right events. The files are index version 2 (spec 17.2).

mod common;

use std::fs;
use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, LogView, Options, Reader};
use common::{segments, u32_at, u64_at};

const HEADER: usize = 128;
/// Spec 17.2, version 2: a stream row, a named row, and their entries.
const STREAM_ROW: usize = 48;
const NAMED_ROW: usize = 32;
const STREAM_ENTRY: usize = 8;
const NAMED_ENTRY: usize = 4;

/// Two streams of two categories, four single-event batches each,
/// interleaved, all in the first (sealed) segment; then a second segment.
fn build() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(2000)).expect("open");
    for i in 0..4u8 {
        for s in ["alpha-1", "beta-1"] {
            log.append(s, ExpectedVersion::Any, &[EventData::new("E", vec![i; 20])])
                .expect("append");
        }
    }
    // Fill the segment so that it is sealed.
    for i in 0..20u8 {
        log.append("other-1", ExpectedVersion::Any, &[EventData::new("F", vec![i; 100])])
            .expect("append");
    }
    log.close().expect("close");
    assert!(segments(dir.path()).len() >= 2);
    dir
}

/// Recompute the block CRCs, the table CRC and the footer CRC of a derived
/// file (spec 16) after its body was edited.
fn reseal(file: &mut [u8]) {
    let len = file.len();
    let table_offset = u64_at(file, len - 32) as usize;
    let blocks = u64_at(file, len - 24) as usize;
    for b in 0..blocks {
        let start = b * 4096;
        let end = (start + 4096).min(table_offset);
        let crc = crc32fast::hash(&file[start..end]);
        file[table_offset + b * 4..table_offset + b * 4 + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let table_crc = crc32fast::hash(&file[table_offset..table_offset + blocks * 4]);
    file[len - 16..len - 12].copy_from_slice(&table_crc.to_le_bytes());
    let footer_crc = crc32fast::hash(&file[len - 32..len - 12]);
    file[len - 12..len - 8].copy_from_slice(&footer_crc.to_le_bytes());
}

/// Swap the entry lists of two rows with `n` entries each: for stream rows
/// the `frame_offset` halves of the 8-byte entries, for named rows the 4-byte
/// entries (version 2).
fn swap_entries(idx: &mut [u8], rows_at: usize, row_len: usize, count: usize, entries_at: usize, n: u64) {
    let (start_at, count_at, entry_len, field) = if row_len == STREAM_ROW {
        (28, 32, STREAM_ENTRY, 4)
    } else {
        (16, 20, NAMED_ENTRY, 0)
    };
    let row = |i: usize| rows_at + i * row_len;
    let mut pairs = Vec::new();
    for a in 0..count {
        for b in a + 1..count {
            let (ca, cb) = (u32_at(idx, row(a) + count_at), u32_at(idx, row(b) + count_at));
            if ca == cb && u64::from(ca) == n {
                pairs.push((a, b));
            }
        }
    }
    let (a, b) = pairs[0];
    let (sa, sb) = (
        u32_at(idx, row(a) + start_at) as usize,
        u32_at(idx, row(b) + start_at) as usize,
    );
    for k in 0..n as usize {
        let (x, y) = (
            entries_at + (sa + k) * entry_len + field,
            entries_at + (sb + k) * entry_len + field,
        );
        for j in 0..4 {
            idx.swap(x + j, y + j);
        }
    }
}

/// Forge the first segment's index: alpha's stream entries point at beta's
/// batches and the reverse (same versions), and likewise the two
/// categories' entries; every CRC recomputed.
fn forge(dir: &Path) {
    let idx_path = segments(dir)[0].with_extension("idx");
    let mut idx = fs::read(&idx_path).expect("read idx");
    assert_eq!(u16::from_le_bytes([idx[8], idx[9]]), 2, "index_version");
    let streams = u32_at(&idx, 40) as usize;
    let stream_entries = u32_at(&idx, 44) as usize;
    let cats = u32_at(&idx, 48) as usize;
    let entries_at = HEADER + streams * STREAM_ROW;
    swap_entries(&mut idx, HEADER, STREAM_ROW, streams, entries_at, 4);
    let cats_at = entries_at + stream_entries * STREAM_ENTRY;
    swap_entries(&mut idx, cats_at, NAMED_ROW, cats, cats_at + cats * NAMED_ROW, 4);
    reseal(&mut idx);
    fs::write(&idx_path, &idx).expect("write idx");
}

/// Forge the first segment's index: the entry lists of the two event types
/// listed in two batches each (A and C, which share no batch) swapped, every
/// CRC recomputed.
fn forge_types(dir: &Path) {
    let idx_path = segments(dir)[0].with_extension("idx");
    let mut idx = fs::read(&idx_path).expect("read idx");
    let counts: Vec<usize> = (0..6).map(|i| u32_at(&idx, 40 + 4 * i) as usize).collect();
    let types_at =
        HEADER + counts[0] * STREAM_ROW + counts[1] * STREAM_ENTRY + counts[2] * NAMED_ROW + counts[3] * NAMED_ENTRY;
    let entries_at = types_at + counts[4] * NAMED_ROW;
    swap_entries(&mut idx, types_at, NAMED_ROW, counts[4], entries_at, 2);
    reseal(&mut idx);
    fs::write(&idx_path, &idx).expect("write idx");
}

/// Batches of mixed event types in the first (sealed) segment: type A is
/// in batches 1 and 3, B in 1, 3 and 4, C in 2 and 4.
fn build_types() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(2000)).expect("open");
    let ev = |t: &'static str| EventData::new(t, vec![7u8; 20]);
    for (s, types) in [
        ("m-1", &["A", "B"][..]),
        ("m-2", &["C"]),
        ("m-1", &["B", "A", "B"]),
        ("m-2", &["C", "B"]),
    ] {
        let evs: Vec<EventData> = types.iter().map(|t| ev(t)).collect();
        log.append(s, ExpectedVersion::Any, &evs).expect("append");
    }
    for i in 0..20u8 {
        log.append("other-1", ExpectedVersion::Any, &[EventData::new("F", vec![i; 100])])
            .expect("append");
    }
    log.close().expect("close");
    assert!(segments(dir.path()).len() >= 2);
    dir
}

/// `(position, event type)` of a type read from `from`.
fn by_type(view: &LogView, ty: &str, from: u64) -> Vec<(u64, String)> {
    view.read_event_type(ty, from)
        .map(|r| r.map(|r| (r.position(), r.event_type().to_owned())))
        .collect::<annal::Result<_>>()
        .unwrap_or_else(|e| panic!("read_event_type({ty}): {e}"))
}

fn stream(view: &LogView, name: &str, dir: Direction) -> Vec<(String, u64)> {
    let from = if dir == Direction::Forward { 0 } else { u64::MAX };
    view.read_stream(name, from, dir, u64::MAX)
        .map(|r| r.map(|r| (r.stream().to_owned(), r.stream_version())))
        .collect::<annal::Result<_>>()
        .unwrap_or_else(|e| panic!("read_stream({name}): {e}"))
}

#[test]
fn an_index_pointing_at_another_streams_batches_is_caught_and_rebuilt() {
    let log = build();
    for direction in [Direction::Forward, Direction::Backward] {
        let dir = common::fresh_copy(log.path());
        forge(dir.path());
        let view = Reader::open(dir.path()).expect("reader").view().expect("view");
        let mut got = stream(&view, "alpha-1", direction);
        if direction == Direction::Backward {
            got.reverse();
        }
        let want: Vec<_> = (0..4).map(|v| ("alpha-1".to_owned(), v)).collect();
        assert_eq!(got, want, "{direction:?}");
        let damage = view.index_damage();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert!(
            damage[0].contains("alpha-1") && damage[0].contains("beta-1"),
            "the report names both streams: {damage:?}"
        );
        // The other stream too, from the rebuilt index.
        let beta = stream(&view, "beta-1", Direction::Forward);
        assert_eq!(beta, (0..4).map(|v| ("beta-1".to_owned(), v)).collect::<Vec<_>>());
    }
}

#[test]
fn an_index_pointing_a_category_at_another_categorys_batches_is_caught_and_rebuilt() {
    let log = build();
    let dir = common::fresh_copy(log.path());
    forge(dir.path());
    let view = Reader::open(dir.path()).expect("reader").view().expect("view");
    let got: Vec<String> = view
        .read_category("alpha", 0)
        .map(|r| r.map(|r| r.stream().to_owned()))
        .collect::<annal::Result<_>>()
        .expect("read_category");
    assert_eq!(got, vec!["alpha-1".to_owned(); 4]);
    assert_eq!(view.index_damage().len(), 1, "{:?}", view.index_damage());
}

/// A type read returns exactly the records of the type, also from batches
/// holding other types, from any position on; each batch is listed once per
/// type in the file.
#[test]
fn a_type_read_returns_exactly_the_records_of_the_type() {
    let log = build_types();
    let view = Reader::open(log.path()).expect("reader").view().expect("view");
    let a = |v: &[u64], t: &str| v.iter().map(|&p| (p, t.to_owned())).collect::<Vec<_>>();
    assert_eq!(by_type(&view, "A", 0), a(&[0, 4], "A"));
    assert_eq!(by_type(&view, "B", 0), a(&[1, 3, 5, 7], "B"));
    assert_eq!(by_type(&view, "B", 4), a(&[5, 7], "B"));
    assert_eq!(by_type(&view, "C", 3), a(&[6], "C"));
    assert_eq!(by_type(&view, "C", 7), a(&[], "C"));
    assert!(view.index_damage().is_empty(), "{:?}", view.index_damage());
    let idx = fs::read(segments(log.path())[0].with_extension("idx")).expect("idx");
    // Four batches of m-1/m-2, the rest of other-1: A two entries, B
    // three, C two, F one per other batch.
    let frames = u32_at(&idx, 64);
    assert_eq!(u32_at(&idx, 60), 2 + 3 + 2 + (frames - 4), "type_entry_count");
}

/// A version 2 event type entry pointing at a batch without a record of the
/// type is damage: reported, the index rebuilt, and the read still exact.
#[test]
fn an_index_pointing_a_type_at_batches_without_it_is_caught_and_rebuilt() {
    let log = build_types();
    let want: Vec<Vec<(u64, String)>> = {
        let view = Reader::open(log.path()).expect("reader").view().expect("view");
        ["A", "B", "C"].iter().map(|t| by_type(&view, t, 0)).collect()
    };
    for (i, ty) in ["A", "B", "C"].iter().enumerate() {
        let dir = common::fresh_copy(log.path());
        forge_types(dir.path());
        let view = Reader::open(dir.path()).expect("reader").view().expect("view");
        assert_eq!(by_type(&view, ty, 0), want[i], "{ty}");
        let damage = view.index_damage();
        if *ty == "B" {
            assert!(damage.is_empty(), "B's entries are intact: {damage:?}");
        } else {
            assert_eq!(damage.len(), 1, "{ty}: {damage:?}");
            assert!(damage[0].contains("no record"), "{damage:?}");
            // The other swapped type, now from the rebuilt index.
            let other = if *ty == "A" { 2 } else { 0 };
            assert_eq!(by_type(&view, ["A", "B", "C"][other], 0), want[other]);
        }
    }
}
