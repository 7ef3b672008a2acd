//! Index hits are checked against the records they point to (issue 13,
//! defect 8): an `.idx` whose CRCs are valid but whose entries for one stream
//! (or category) point at another's batches is reported as damaged and
//! replaced by an index rebuilt from the segment, so reads return exactly the
//! right events.

mod common;

use std::fs;
use std::path::Path;

use annal::{Direction, EventData, ExpectedVersion, Log, LogView, Options, Reader};
use common::{segments, u32_at, u64_at};

const HEADER: usize = 128;
const STREAM_ROW: usize = 56;
const NAMED_ROW: usize = 32;

/// Two streams of two categories, four single-event batches each,
/// interleaved, all in the first (sealed) segment; then a second segment.
fn build() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open(dir.path(), Options::default().segment_size(2000)).expect("open");
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

/// Swap the entry lists of two rows whose entry counts are equal: for
/// stream rows the `frame_offset` halves of the 16-byte entries, for named
/// rows the 8-byte entries. Returns how many rows were swapped.
fn swap_entries(idx: &mut [u8], rows_at: usize, row_len: usize, count: usize, entries_at: usize, entry_len: usize) {
    let (start_at, count_at) = if row_len == STREAM_ROW { (32, 36) } else { (16, 20) };
    let row = |i: usize| rows_at + i * row_len;
    let mut pairs = Vec::new();
    for a in 0..count {
        for b in a + 1..count {
            let (ca, cb) = (u32_at(idx, row(a) + count_at), u32_at(idx, row(b) + count_at));
            if ca == cb && ca == 4 {
                pairs.push((a, b));
            }
        }
    }
    let (a, b) = pairs[0];
    let (sa, sb) = (
        u32_at(idx, row(a) + start_at) as usize,
        u32_at(idx, row(b) + start_at) as usize,
    );
    let field = entry_len - 8;
    for k in 0..4 {
        let (x, y) = (
            entries_at + (sa + k) * entry_len + field,
            entries_at + (sb + k) * entry_len + field,
        );
        for j in 0..8 {
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
    let streams = u32_at(&idx, 40) as usize;
    let stream_entries = u32_at(&idx, 44) as usize;
    let cats = u32_at(&idx, 48) as usize;
    let entries_at = HEADER + streams * STREAM_ROW;
    swap_entries(&mut idx, HEADER, STREAM_ROW, streams, entries_at, 16);
    let cats_at = entries_at + stream_entries * 16;
    swap_entries(&mut idx, cats_at, NAMED_ROW, cats, cats_at + cats * NAMED_ROW, 8);
    reseal(&mut idx);
    fs::write(&idx_path, &idx).expect("write idx");
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
