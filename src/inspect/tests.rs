//! Inspection of files a real writer wrote, and of every damaged variant of
//! them: the descriptions say what the files hold, and no bytes panic.

use super::*;
use crate::{Durability, EventData, ExpectedVersion, Log, Options};

/// The files of a log with sealed segments (so index files and a stream
/// table), read into memory: `(file name, bytes)`.
fn written_log() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options::default().segment_size(600).durability(Durability::Fsync);
    let log = Log::open_with(dir.path(), opts).expect("open");
    for i in 0..6u32 {
        let ev = EventData::new("Placed", format!("{{\"n\":{i}}}").into_bytes());
        log.append(&format!("order-{}", i % 2), ExpectedVersion::Any, &[ev])
            .expect("append");
    }
    log.close().expect("close");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read"))
        })
        .filter(|(name, _)| name != crate::LOCK_FILE)
        .collect();
    files.sort();
    files
}

fn snapshot_bytes() -> Vec<u8> {
    let snap = crate::Snapshot {
        stream: "order-1".into(),
        stream_version: 4,
        position: 9,
        schema_version: 2,
        payload: b"state".to_vec(),
        subject_keys: Vec::new(),
    };
    crate::es::snapshot::encode(&snap).expect("encode")
}

#[test]
fn intact_files_are_described_without_problems() {
    let files = written_log();
    let kinds: Vec<&str> = files.iter().map(|(n, _)| n.rsplit('.').next().unwrap_or("")).collect();
    for kind in ["seg", "idx", "streams", "head"] {
        assert!(kinds.contains(&kind), "no .{kind} file among {kinds:?}");
    }
    let (mut records, mut segments, mut sealed) = (0, 0, 0);
    for (name, bytes) in &files {
        let d = inspect(bytes, Some(name)).expect("an annal file");
        assert_eq!(d.stop(), None, "{name}");
        assert_eq!(d.problems(), 0, "{name}");
        match d {
            FileDump::Segment(s) => {
                assert!(s.header.as_ref().is_some_and(|h| h.crc_ok));
                sealed += u64::from(s.frames.last().is_some_and(|f| f.kind_name() == "seal"));
                segments += 1;
                records += s.record_count();
                for r in s.frames.iter().flat_map(|f| &f.records) {
                    assert_eq!(r.event_type, b"Placed");
                    assert!(r.stream.starts_with(b"order-"));
                }
            }
            FileDump::Head(h) => assert!(
                matches!(h.slots.as_slice(), [SlotDump::Written(_), _])
                    || matches!(h.slots.as_slice(), [_, SlotDump::Written(_)])
            ),
            FileDump::Index(i) => assert!(i.footer.is_some_and(|f| f.blocks.is_some())),
            FileDump::StreamTable(t) => {
                assert_eq!(t.header.map(|h| h.stream_count), Some(2));
                let mut names: Vec<Vec<u8>> = stream_table_rows(bytes).into_iter().filter_map(|r| r.name).collect();
                names.sort();
                assert_eq!(names, [b"order-0".to_vec(), b"order-1".to_vec()]);
            }
            FileDump::Snapshot(_) => panic!("no snapshot was written"),
        }
    }
    assert_eq!(records, 6);
    assert!(
        segments > 1 && sealed == segments - 1,
        "{sealed} of {segments} segments sealed"
    );
    let snap = snapshot(&snapshot_bytes());
    assert_eq!(snap.stop, None);
    let h = snap.header.expect("header");
    assert!(h.crc_ok);
    assert_eq!(h.stream.as_deref(), Some(&b"order-1"[..]));
}

#[test]
fn a_flipped_record_byte_is_a_bad_crc_not_a_stop() {
    let files = written_log();
    let (_, seg) = files.iter().find(|(n, _)| n.ends_with(".seg")).expect("a segment");
    let d = segment(seg);
    let rec = d.frames.iter().flat_map(|f| &f.records).next().expect("a record");
    let mut bad = seg.clone();
    let last = rec.offset as usize + rec.len as usize - 1;
    bad[last - 8] ^= 0xff;
    let d = segment(&bad);
    assert_eq!(d.stop, None);
    assert_eq!(d.problems(), 1);
}

#[test]
fn no_damage_panics() {
    let mut files = written_log();
    files.push(("x.snap".into(), snapshot_bytes()));
    // A tiny deterministic generator: no dependency, the same run every time.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, bytes) in &files {
        for cut in 0..bytes.len().min(400) {
            let _ = inspect(&bytes[..cut], Some(name));
        }
        for _ in 0..300 {
            let mut b = bytes.clone();
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
            if next() % 2 == 0 {
                let at = (next() % b.len() as u64) as usize;
                b[at..].iter_mut().take(8).for_each(|x| *x = 0xff);
            }
            let _ = inspect(&b, Some(name));
            let _ = stream_table_rows(&b);
        }
    }
}

#[test]
fn lengths_near_the_top_of_their_range_are_stops_not_overflows() {
    let mut snap = snapshot_bytes();
    let at = std::mem::offset_of!(crate::es::snapshot::SnapshotHeader, payload_len);
    snap[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let d = snapshot(&snap);
    let sum = (snap.len() - 5) as u128 + u128::from(u64::MAX);
    assert!(d.stop.is_some_and(|s| s.contains(&sum.to_string())));
    let mut idx = crate::index::blockfile::finish(IDX_MAGIC.iter().copied().chain([0; 120]).collect(), IDX_MAGIC);
    let n = idx.len();
    idx[n - 24..n - 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(index(&idx).stop.is_some());
}

#[test]
fn unknown_files_are_refused_with_their_first_bytes() {
    let e = inspect(b"hello world", Some("notes.txt")).expect_err("not annal");
    assert_eq!(hex(&e.first_bytes), "68656c6c6f20776f");
    assert!(inspect(&[0; 128], Some("other")).is_err());
    let d = inspect(&[0; 128], Some(HEAD_FILE)).expect("an empty head file");
    assert!(matches!(d, FileDump::Head(h) if h.slots.len() == 2 && h.stop.is_none()));
}
