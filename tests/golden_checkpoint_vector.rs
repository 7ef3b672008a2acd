//! The golden vector of index checkpoints (spec 17.5): `spec/vectors/v2/checkpoint/`.
//!
//! A log written by annal's writer with a fixed log id, clock and event ids,
//! closed three times (each session appends, then closes): the active segment
//! gets a checkpoint at each close, and the third close merges its range
//! with the second's (spec 17.5, "Which ranges"). The test
//!
//! * (a) regenerates the directory (`ANNAL_REGENERATE_VECTORS=1` writes it)
//!   and checks it byte for byte against the committed files;
//! * (b) decodes every checkpoint file with the independent code below,
//!   from the spec's tables alone (not annal's decoder): name, footer and
//!   block CRCs (spec 16), header (17.1, 17.5), the binding to the segment
//!   (`last_frame`, `seal_crc`), and that the rows and entries of the chain
//!   list exactly the batches of the segment, each entry pointing at a batch
//!   of its stream;
//! * (c) reads the vector back through a writer and a reader;
//! * (d) does (b) and (c) with the version 1 checkpoints of the same log,
//!   as committed before index version 2 (`spec/vectors/index-v1/checkpoint/`):
//!   they are still read.

mod common;
mod golden;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{Direction, EventData, ExpectedVersion, Log, Options, Reader, Uuid};
use golden::{assert_tree_committed, crc, regenerating, vectors_dir_of};

const LOG_ID: [u8; 16] = *b"checkpoint-v2-id";

use common::{u32_at, u64_at};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The three sessions: (stream, event types) per append.
const SESSIONS: [&[(&str, &[&str])]; 3] = [
    &[
        ("order-1", &["OrderPlaced", "ItemAdded"]),
        ("customer-9", &["Registered"]),
        ("order-2", &["OrderPlaced"]),
        ("order-1", &["ItemAdded"]),
        ("order", &["Audited"]),
        ("order-2", &["OrderShipped", "OrderPaid"]),
        ("cart-7", &["CartOpened"]),
        ("cart-7", &["ItemAdded"]),
        ("customer-4", &["Registered"]),
        ("cart-7", &["CartClosed"]),
        ("customer-4", &["EmailChanged"]),
        ("order-4", &["OrderPlaced"]),
    ],
    &[("customer-9", &["EmailChanged"])],
    &[
        ("order-1", &["OrderShipped"]),
        ("order-3", &["OrderPlaced", "ItemAdded", "ItemAdded"]),
    ],
];

/// Write the log into `dir` (which must not exist).
fn write_log(dir: &Path) {
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000_000_000));
    let c = clock.clone();
    let opts = Options::default()
        .format_version(2)
        .log_id(LOG_ID)
        .clock(Arc::new(move || c.fetch_add(100, Ordering::SeqCst)));
    let mut n = 0u8;
    for session in SESSIONS {
        let log = Log::open_with(dir, opts.clone()).expect("open");
        for (stream, types) in session {
            let events: Vec<EventData<'static>> = types
                .iter()
                .map(|t| {
                    n += 1;
                    EventData::new(*t, format!("{{\"n\":{n}}}").into_bytes())
                        .with_id(Uuid::from_bytes(golden::id_from(n)))
                })
                .collect();
            log.append(stream, ExpectedVersion::Any, &events).expect("append");
        }
        log.close().expect("close");
    }
    let _ = fs::remove_file(dir.join(annal::LOCK_FILE));
}

fn committed() -> std::path::PathBuf {
    vectors_dir_of(2).join("checkpoint")
}

#[test]
fn writer_produces_the_checkpoint_vector() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    write_log(&dir);
    if regenerating() {
        let _ = fs::remove_dir_all(committed());
        fs::create_dir_all(committed()).expect("create vector dir");
        for (rel, bytes) in golden::tree(&dir) {
            fs::write(committed().join(rel), bytes).expect("write vector");
        }
    }
    assert_tree_committed(&dir, &committed());
    assert_eq!(golden::file_names(&dir), golden::file_names(&committed()));
}

/// `(stream name, first_version, last_version, [(first_version, frame_offset)])`
type StreamRow = (String, u64, u64, Vec<(u64, u64)>);

/// A checkpoint file as the spec describes it, decoded independently.
struct Ckpt {
    from: u64,
    to: u64,
    streams: Vec<StreamRow>,
    /// `(category or type name, [offset])`
    categories: Vec<(String, Vec<u64>)>,
    types: Vec<(String, Vec<u64>)>,
    frames: Vec<(u64, u64)>,
}

/// Decode `bytes`, the checkpoint `name` of the segment `seg` (spec 16, 17.1,
/// 17.2, 17.5), asserting every rule on the way.
fn decode(name: &str, bytes: &[u8], seg: &[u8]) -> Ckpt {
    // Name: <base>-<from>-<to>.ckpt, 20 digits each.
    let stem = name.strip_suffix(".ckpt").expect("suffix");
    let parts: Vec<u64> = stem
        .split('-')
        .map(|p| {
            assert_eq!(p.len(), 20, "{name}");
            p.parse().expect("digits")
        })
        .collect();
    let (base, from, to) = (parts[0], parts[1], parts[2]);
    assert!(from < to, "{name}");

    // Spec 16: footer, block CRC table, block CRCs.
    let n = bytes.len();
    let footer = &bytes[n - 32..];
    assert_eq!(&footer[24..32], b"ANNALIDX", "{name}: footer magic");
    assert_eq!(u32_at(footer, 20), crc(&footer[..20]), "{name}: footer_crc");
    let table_offset = u64_at(footer, 0) as usize;
    let blocks = u64_at(footer, 8) as usize;
    assert_eq!(table_offset % 8, 0);
    assert_eq!(blocks, table_offset.div_ceil(4096));
    assert_eq!(n, table_offset + 4 * blocks + 32);
    assert_eq!(
        u32_at(footer, 16),
        crc(&bytes[table_offset..table_offset + 4 * blocks]),
        "{name}: table_crc"
    );
    for b in 0..blocks {
        let end = (4096 * (b + 1)).min(table_offset);
        assert_eq!(
            u32_at(bytes, table_offset + 4 * b),
            crc(&bytes[4096 * b..end]),
            "{name}: block {b}"
        );
    }

    // Spec 17.1 and 17.5: the header.
    let h = &bytes[..128];
    assert_eq!(&h[..8], b"ANNALIDX");
    let version = u16_at(h, 8);
    assert!(version == 1 || version == 2, "index_version");
    let v1 = version == 1;
    assert_eq!(u16_at(h, 10), 1, "flags: CHECKPOINT");
    assert_eq!(u32_at(h, 12), 0, "reserved0");
    assert_eq!(u64_at(h, 16), base, "segment_base");
    assert_eq!(u64_at(h, 24), to, "segment_len = to");
    assert_eq!(u64_at(h, 32), u64::MAX, "hash_mask");
    assert_eq!(u64_at(h, 76), from, "covered_from");
    let last_frame = u64_at(h, 84) as usize;
    assert!(h[92..128].iter().all(|&b| b == 0), "reserved1");
    // The binding: the last frame is a batch of the segment ending at `to`,
    // whose header_crc (CRC of its bytes [8, 72)) is `seal_crc`.
    let fh = &seg[last_frame..last_frame + 72];
    assert_eq!(&fh[..4], b"BTCH");
    assert_eq!(fh[28], 1, "the last frame is a batch");
    assert_eq!(u32_at(fh, 4), crc(&fh[8..72]));
    assert_eq!(u32_at(h, 72), u32_at(fh, 4), "seal_crc = the last frame's header_crc");
    assert_eq!(last_frame as u64 + u64_at(fh, 8), to, "the last frame ends at `to`");

    // Sections, back to back (17.1).
    let counts: Vec<usize> = (0..8).map(|i| u32_at(h, 40 + 4 * i) as usize).collect();
    let (sc, sec, cc, cec, tc, tec, fc, names_len) = (
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7],
    );
    // Version 1: 56-byte stream rows, 16-byte stream and frame entries,
    // 8-byte category and type entries; version 2: 48, 8 and 4.
    let (row_len, sentry, nentry, fentry) = if v1 { (56, 16, 8, 16) } else { (48, 8, 4, 8) };
    let streams_at = 128;
    let sentries_at = streams_at + row_len * sc;
    let cats_at = sentries_at + sentry * sec;
    let centries_at = cats_at + 32 * cc;
    let types_at = centries_at + nentry * cec;
    let tentries_at = types_at + 32 * tc;
    let frames_at = tentries_at + nentry * tec;
    let names_at = frames_at + fentry * fc;
    // An entry's `u32` (version 2) or `u64` (version 1) at `at`.
    let word = |at: usize| {
        if v1 {
            u64_at(bytes, at)
        } else {
            u64::from(u32_at(bytes, at))
        }
    };
    assert_eq!((names_at + names_len).next_multiple_of(8), table_offset);
    let name_of = |off: u32, len: u16| {
        String::from_utf8(bytes[names_at + off as usize..names_at + off as usize + len as usize].to_vec()).unwrap()
    };
    let hash = |s: &str| {
        let mut x: u64 = 0xcbf29ce484222325;
        for b in s.bytes() {
            x ^= b as u64;
            x = x.wrapping_mul(0x100000001b3);
        }
        x
    };
    let mut streams = Vec::new();
    let mut prev_key: Option<(u64, String)> = None;
    for r in 0..sc {
        let row = &bytes[streams_at + row_len * r..streams_at + row_len * (r + 1)];
        let name = name_of(u32_at(row, 8), u16_at(row, 12));
        assert_eq!(u64_at(row, 0), hash(&name), "{name}: hash");
        let key = (u64_at(row, 0), name.clone());
        assert!(
            prev_key
                .as_ref()
                .is_none_or(|p| (p.0, p.1.as_bytes()) < (key.0, key.1.as_bytes())),
            "sorted"
        );
        prev_key = Some(key);
        assert_eq!(
            u64_at(row, 40),
            u64::MAX,
            "{name}: prev_segment is NONE in a checkpoint"
        );
        let first = u64_at(row, 16);
        // Version 1: last_version u64 at 24, entry_start, entry_count at 32,
        // 36, prev_row at 48; version 2: last_version - first_version u32 at
        // 24, entry_start, entry_count at 28, 32, prev_row at 36.
        let (last, start, count, prev_row) = if v1 {
            (u64_at(row, 24), u32_at(row, 32), u32_at(row, 36), u32_at(row, 48))
        } else {
            (
                first + u64::from(u32_at(row, 24)),
                u32_at(row, 28),
                u32_at(row, 32),
                u32_at(row, 36),
            )
        };
        assert_eq!(prev_row, u32::MAX, "{name}: prev_row is NONE in a checkpoint");
        let (start, count) = (start as usize, count as usize);
        let entries: Vec<(u64, u64)> = (start..start + count)
            .map(|i| {
                let at = sentries_at + sentry * i;
                if v1 {
                    (u64_at(bytes, at), u64_at(bytes, at + 8))
                } else {
                    (first + u64::from(u32_at(bytes, at)), u64::from(u32_at(bytes, at + 4)))
                }
            })
            .collect();
        for &(v, off) in &entries {
            assert!(
                (from..to).contains(&off),
                "{name}: entry at {off} outside [{from}, {to})"
            );
            // The batch there holds the stream (its first record's name, at
            // record offset 72) at that version (record offset 16).
            let rec = off as usize + 72;
            let slen = u16_at(seg, rec + 54) as usize;
            assert_eq!(&seg[rec + 72..rec + 72 + slen], name.as_bytes());
            assert_eq!(u64_at(seg, rec + 16), v);
        }
        streams.push((name, first, last, entries));
    }
    let named = |rows_at: usize, count: usize, entries_at: usize| {
        (0..count)
            .map(|r| {
                let row = &bytes[rows_at + 32 * r..rows_at + 32 * (r + 1)];
                let (start, cnt) = (u32_at(row, 16) as usize, u32_at(row, 20) as usize);
                (
                    name_of(u32_at(row, 8), u16_at(row, 12)),
                    (start..start + cnt)
                        .map(|i| word(entries_at + nentry * i))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let frames: Vec<(u64, u64)> = (0..fc)
        .map(|i| {
            let at = frames_at + fentry * i;
            if v1 {
                (u64_at(bytes, at), u64_at(bytes, at + 8))
            } else {
                (base + u64::from(u32_at(bytes, at)), u64::from(u32_at(bytes, at + 4)))
            }
        })
        .collect();
    let types = named(types_at, tc, tentries_at);
    // Version 2's event type entries name batches of the range (each once,
    // in order) holding a record of the type; version 1's name records.
    if !v1 {
        for (ty, offs) in &types {
            assert!(offs.windows(2).all(|w| w[0] < w[1]), "{ty}: each batch once, in order");
            for off in offs {
                assert!(
                    frames.iter().any(|f| f.1 == *off),
                    "{ty}: {off} is a batch of the range"
                );
                let f = common::frames(seg)
                    .into_iter()
                    .find(|f| f.offset == *off)
                    .expect("a frame");
                let mut at = *off as usize + 72;
                let mut found = false;
                while at < (f.offset + f.len) as usize {
                    // Record: record_len u32 at 0, type_len u16 at 56, the
                    // stream name (stream_len u16 at 54) then the type after
                    // the 72-byte header.
                    let (slen, tlen) = (u16_at(seg, at + 54) as usize, u16_at(seg, at + 56) as usize);
                    found |= &seg[at + 72 + slen..at + 72 + slen + tlen] == ty.as_bytes();
                    at += (u32_at(seg, at) as usize).next_multiple_of(8);
                }
                assert!(found, "{ty}: the batch at {off} holds a record of the type");
            }
        }
    }
    Ckpt {
        from,
        to,
        streams,
        categories: named(cats_at, cc, centries_at),
        types,
        frames,
    }
}

/// The version 1 checkpoints of the vector's log (`spec/vectors/index-v1/`).
fn committed_v1() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/index-v1/checkpoint")
}

/// The vector with its checkpoints replaced by the version 1 ones.
fn copy_with_v1_checkpoints() -> tempfile::TempDir {
    let copy = golden::copy_dir(&committed());
    for n in golden::file_names(copy.path()).iter().filter(|n| n.ends_with(".ckpt")) {
        fs::remove_file(copy.path().join(n)).expect("remove");
    }
    for n in golden::file_names(&committed_v1()) {
        fs::copy(committed_v1().join(&n), copy.path().join(&n)).expect("copy");
    }
    copy
}

#[test]
fn checkpoint_vector_decodes_as_the_spec_says() {
    decodes_as_the_spec_says(&committed(), 2);
}

/// (d) The version 1 checkpoints decode as the spec's version 1 tables say.
#[test]
fn version_1_checkpoints_decode_as_the_spec_says() {
    let copy = copy_with_v1_checkpoints();
    decodes_as_the_spec_says(copy.path(), 1);
}

fn decodes_as_the_spec_says(dir: &Path, version: u16) {
    let seg_name = "00000000000000000000.seg";
    let seg = fs::read(dir.join(seg_name)).expect("segment");
    let mut ckpts: Vec<Ckpt> = golden::file_names(dir)
        .iter()
        .filter(|n| n.ends_with(".ckpt"))
        .map(|n| {
            let bytes = fs::read(dir.join(n)).unwrap();
            assert_eq!(u16_at(&bytes, 8), version, "{n}: index_version");
            decode(n, &bytes, &seg)
        })
        .collect();
    ckpts.sort_by_key(|c| c.from);
    // Two files: the first session's, and the second and third merged (the
    // third's range is more than half the second's).
    assert_eq!(ckpts.len(), 2);
    assert_eq!(ckpts[0].from, 128);
    assert_eq!(ckpts[1].from, ckpts[0].to, "consecutive ranges");
    assert_eq!(ckpts[1].to, seg.len() as u64, "the chain covers the whole segment");
    // Together they list every batch of the segment exactly once, in order.
    let batches: Vec<(u64, u64)> = common::frames(&seg)
        .iter()
        .filter(|f| f.kind == 1)
        .map(|f| (f.first_position, f.offset))
        .collect();
    let listed: Vec<(u64, u64)> = ckpts.iter().flat_map(|c| c.frames.clone()).collect();
    assert_eq!(listed, batches);
    // Every stream's entries over the chain: one per batch of the stream.
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &ckpts {
        for (name, first, last, entries) in &c.streams {
            assert_eq!(entries.first().map(|e| e.0), Some(*first));
            assert!(last >= first);
            per_stream
                .entry(name.clone())
                .or_default()
                .extend(entries.iter().map(|e| e.1));
        }
    }
    let expected_batches: usize = SESSIONS.iter().map(|s| s.len()).sum();
    assert_eq!(per_stream.values().map(Vec::len).sum::<usize>(), expected_batches);
    assert_eq!(per_stream["order-1"].len(), 3);
    // Categories: the stream `order` has none; `order-*` are in `order`.
    let order_cat: usize = ckpts
        .iter()
        .flat_map(|c| c.categories.iter().filter(|(n, _)| n == "order").map(|(_, v)| v.len()))
        .sum();
    assert_eq!(order_cat, 7);
    let item_added: usize = ckpts
        .iter()
        .flat_map(|c| c.types.iter().filter(|(n, _)| n == "ItemAdded").map(|(_, v)| v.len()))
        .sum();
    // Five records of type ItemAdded in four batches: version 1 lists the
    // records, version 2 the batches.
    assert_eq!(item_added, if version == 1 { 5 } else { 4 });
}

#[test]
fn checkpoint_vector_reads_back_through_a_writer_and_a_reader() {
    reads_back(golden::copy_dir(&committed()));
}

/// (d) The version 1 checkpoints are used as they are: read, checked clean,
/// and trusted by the writer's open.
#[test]
fn version_1_checkpoints_read_back_through_a_writer_and_a_reader() {
    let copy = copy_with_v1_checkpoints();
    let report = annal::check(copy.path(), annal::CheckOptions::default()).expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    reads_back(copy);
}

fn reads_back(copy: tempfile::TempDir) {
    let r = Reader::open(copy.path()).expect("reader");
    let view = r.view().expect("view");
    let types: Vec<String> = view
        .read_stream("order-3", 0, Direction::Forward, u64::MAX)
        .map(|e| e.unwrap().event_type().to_owned())
        .collect();
    assert_eq!(types, ["OrderPlaced", "ItemAdded", "ItemAdded"]);
    let items: Vec<(String, u64)> = view
        .read_event_type("ItemAdded", 0)
        .map(|e| e.map(|e| (e.stream().to_owned(), e.stream_version())).unwrap())
        .collect();
    let want = [
        ("order-1", 1),
        ("order-1", 2),
        ("cart-7", 1),
        ("order-3", 1),
        ("order-3", 2),
    ];
    assert_eq!(items, want.map(|(s, v)| (s.to_owned(), v)));
    assert!(view.index_damage().is_empty(), "{:?}", view.index_damage());
    let log = Log::open(copy.path()).expect("writer");
    assert!(log.recovery().warnings.is_empty(), "{:?}", log.recovery().warnings);
    log.append(
        "order-1",
        ExpectedVersion::Exact(3),
        &[EventData::new("X", b"{}".as_slice())],
    )
    .expect("expected version from the checkpoints");
    assert_eq!(log.view().unwrap().read_all(0).count(), 20);
    log.close().unwrap();
}
