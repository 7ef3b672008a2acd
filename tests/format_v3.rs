//! Format version 3 (spec 3.6) end to end, beyond its golden vectors
//! (`tests/golden_v3_vectors.rs`): generated ids that are not stored, the
//! chain slots of some frames only and what `check` proves with them, and a
//! writer that continues the chain after a clean close and after a crash.

use std::fs;
use std::path::{Path, PathBuf};

use annal::{
    ChainKey, ChainStatus, CheckOptions, EventData, ExpectedVersion, Log, Options, Reader, Uuid, check, head_anchor,
    inspect,
};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn payload(i: u64) -> Vec<u8> {
    format!("event {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// `n` single-event appends to 7 streams; event `i` has an application id
/// when `i % 3 == 0`.
fn append(log: &Log, from: u64, n: u64) {
    for i in from..from + n {
        let mut e = EventData::new(if i % 2 == 0 { "Even" } else { "Odd" }, payload(i));
        if i % 3 == 0 {
            e = e.with_id(Uuid::from_u128(0xabc0_0000 + u128::from(i)));
        }
        log.append(&format!("s-{}", i % 7), ExpectedVersion::Any, &[e]).unwrap();
    }
}

fn ids(dir: &Path) -> Vec<Uuid> {
    let view = Reader::open(dir).unwrap().view().unwrap();
    view.read_all(0).map(|r| r.unwrap().event_id()).collect()
}

fn assert_clean(dir: &Path, opts: CheckOptions) -> annal::CheckReport {
    let r = check(dir, opts).unwrap();
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    r
}

#[test]
fn new_logs_are_version_5_and_generated_ids_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.format_version(), 5);
    append(&log, 0, 300);
    let from_writer: Vec<Uuid> = log.view().unwrap().read_all(0).map(|r| r.unwrap().event_id()).collect();
    log.close().unwrap();
    let from_reader = ids(dir.path());
    assert_eq!(from_writer, from_reader, "writer and reader derive the same ids");
    for (i, id) in from_reader.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(*id, Uuid::from_u128(0xabc0_0000 + i as u128), "a given id is kept");
        } else {
            assert_eq!(id.get_version_num(), 7, "a generated id is a UUID v7");
        }
    }
    let mut sorted = from_reader.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), from_reader.len(), "ids are distinct");
    // Only the given ids are in the file (spec 3.6: `ID` exactly when given).
    let bytes = fs::read(&segments(dir.path())[0]).unwrap();
    let dump = inspect::segment(&bytes);
    let stored = dump
        .frames
        .iter()
        .flat_map(|f| &f.records)
        .filter(|r| r.event_id.1)
        .count();
    assert_eq!(stored, 100);
    for (i, id) in from_reader.iter().enumerate() {
        let found = bytes.windows(16).any(|w| w == id.as_bytes());
        assert_eq!(found, i % 3 == 0, "event {i}: id in the file only if given");
    }
    // The same ids after a reopen by a writer, which also appends more.
    let log = Log::open(dir.path()).unwrap();
    append(&log, 300, 10);
    log.close().unwrap();
    assert_eq!(&ids(dir.path())[..300], &from_reader[..]);
}

/// Every batch is a link; the first batch of a segment and the first in each
/// new 16 KiB block store a slot; `check` recomputes every link.
#[test]
fn chain_slots_follow_the_block_rule_and_every_link_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().segment_size(64 << 10)).unwrap();
    append(&log, 0, 3000);
    let anchor = log.anchor().unwrap();
    log.close().unwrap();
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "several segments");
    let mut batches = 0u64;
    for s in &segs {
        let d = inspect::segment(&fs::read(s).unwrap());
        let mut prev: Option<u64> = None;
        for f in &d.frames {
            let (header_len, body_ok) = f.v3.expect("a version-3 frame");
            assert!(body_ok);
            if f.kind_name() != "batch" {
                assert_eq!(header_len, 64, "seals store the chain");
                continue;
            }
            batches += 1;
            let must = prev.is_none_or(|p| p / 16384 != f.offset / 16384);
            assert_eq!(header_len == 64, must, "{} at {}", s.display(), f.offset);
            prev = Some(f.offset);
        }
    }
    assert_eq!(batches, 3000);
    let r = assert_clean(dir.path(), CheckOptions::default().anchor(anchor));
    match r.chain {
        ChainStatus::Verified { batches: b, broken, .. } => assert_eq!((b, broken), (3000, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(head_anchor(dir.path()).unwrap(), Some(anchor));
}

/// A payload changed with both CRCs fixed is found by the chain: at the next
/// stored slot of its segment (or at its seal), and by an anchor.
#[test]
fn an_edit_with_fixed_crcs_breaks_the_chain_at_the_next_slot() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().segment_size(64 << 10)).unwrap();
    append(&log, 0, 1000);
    let anchor = log.anchor().unwrap();
    log.close().unwrap();
    let seg = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    let d = inspect::segment(&bytes);
    // A batch that stores no slot, and the next one that does.
    let batches: Vec<_> = d.frames.iter().filter(|f| f.kind_name() == "batch").collect();
    let i = batches
        .iter()
        .position(|f| f.v3.unwrap().0 == 32 && f.offset > 20_000)
        .unwrap();
    let f = batches[i];
    let next_slot = d
        .frames
        .iter()
        .find(|g| g.offset > f.offset && g.v3.unwrap().0 == 64)
        .unwrap();
    let (off, len) = (f.offset as usize, f.len as usize);
    // The payload's first byte ("event ...").
    let at = off + bytes[off..off + len].windows(6).position(|w| w == b"event ").unwrap();
    bytes[at] ^= 0x01;
    let body_crc = crc32fast::hash(&bytes[off + 32..off + len]);
    bytes[off + 28..off + 32].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[off + 4..off + 32]);
    bytes[off..off + 4].copy_from_slice(&header_crc.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    // Reads see a valid log (the CRCs were fixed): only the chain tells.
    let view = Reader::open(dir.path()).unwrap().view().unwrap();
    assert_eq!(view.read_all(0).count(), 1000);
    let r = check(dir.path(), CheckOptions::default().anchor(anchor)).unwrap();
    let chain: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.detail.starts_with("audit chain broken"))
        .collect();
    assert_eq!(chain.len(), 1, "{:#?}", r.problems);
    assert_eq!(chain[0].offset, next_slot.offset + 32, "found at the next slot");
    assert!(
        r.anchors.iter().any(|a| !a.ok),
        "the anchor taken before the edit no longer holds"
    );
}

/// After a clean close (index checkpoints cover the segment, the last batch
/// stores no slot) and after a crash, a writer links its next batches to
/// the right chain hash.
#[test]
fn the_writer_continues_the_chain_after_a_close_and_after_a_crash() {
    for keyed in [false, true] {
        let key = ChainKey::from_bytes([7; 32]);
        let opts = || {
            let o = Options::default().index_checkpoint_bytes(4 << 10);
            if keyed { o.chain_key(key.clone()) } else { o }
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        append(&log, 0, 500);
        log.close().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        append(&log, 500, 500);
        log.sync().unwrap();
        // A crash image: the files as they are while the writer is open.
        let image = tempfile::tempdir().unwrap();
        for e in fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                fs::copy(&p, image.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        log.close().unwrap();
        let crashed = Log::open_with(image.path(), opts()).unwrap();
        append(&crashed, 1000, 50);
        let anchor = crashed.anchor().unwrap();
        crashed.close().unwrap();
        let o = if keyed {
            CheckOptions::default().key(key.clone())
        } else {
            CheckOptions::default()
        };
        let r = assert_clean(image.path(), o.anchor(anchor));
        assert!(
            matches!(r.chain, ChainStatus::Verified { broken: 0, .. }),
            "{:?}",
            r.chain
        );
        assert!(r.anchors.iter().all(|a| a.ok));
    }
}

/// Without the key, the anchor of a keyed version-3 log is the one at its
/// last stored slot, and it holds when checked with the key.
#[test]
fn a_keyed_log_without_its_key_anchors_at_the_last_slot() {
    let key = ChainKey::from_bytes([9; 32]);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().chain_key(key.clone())).unwrap();
    append(&log, 0, 200);
    let head = log.anchor().unwrap();
    log.close().unwrap();
    let a = head_anchor(dir.path()).unwrap().unwrap();
    assert!(a.position <= head.position && a.position > 0, "{a:?} {head:?}");
    assert_clean(dir.path(), CheckOptions::default().key(key).anchor(a).anchor(head));
}
