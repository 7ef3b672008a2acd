//! The golden vector of a durable subscription's checkpoint file (spec 24):
//! `spec/vectors/consumer/annal.sub.billing`; of a projection file (24.5):
//! `annal.proj.per-stream`; of a serving file (24.8):
//! `annal.proj.per-stream~serving`.
//!
//! A subscription `billing` of the category `order`, committing at every
//! acknowledgement: created (sequence 1, next position 0, first slot), then
//! two acknowledgements (sequence 2 in the second slot, sequence 3 in the
//! first). The test
//!
//! * (a) writes the file through annal (`ANNAL_REGENERATE_VECTORS=1` writes
//!   the committed copy) and compares it byte for byte;
//! * (b) decodes it with the independent code below, from the spec's table
//!   alone: magic, CRC-32 of bytes 12..64, version, flags, sequence, next
//!   position and version, the filter's BLAKE3 prefix of "category:order",
//!   the last event's fingerprint; the current slot is the one with the
//!   higher sequence;
//! * (c) opens the committed copy through annal: it resumes where the
//!   vector says.

mod golden;

use std::path::Path;

use annal::{EventData, ExpectedVersion, Log};
use golden::{crc, regenerating};

fn committed() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/consumer/annal.sub.billing")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The id of the events of the vectors: bytes `n, n+1, ..., n+15`.
fn id(n: u8) -> [u8; 16] {
    std::array::from_fn(|i| n.wrapping_add(i as u8))
}

/// A log of 4 events: order-1 x2, customer-1, order-2, with the ids
/// `id(10)`, `id(20)`, `id(30)`, `id(40)`.
fn log_in(dir: &Path) -> Log {
    let log = Log::open(dir).unwrap();
    for (k, stream) in ["order-1", "order-1", "customer-1", "order-2"].into_iter().enumerate() {
        let ev = EventData::new("E", b"{}").with_id(annal::Uuid::from_bytes(id(10 * (k as u8 + 1))));
        log.append(stream, ExpectedVersion::Any, &[ev]).unwrap();
    }
    log
}

/// The fingerprint of an id (spec 24.2): its first 8 bytes, little-endian.
fn fp(id: [u8; 16]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().unwrap())
}

/// (b): the slot at `at` of `file`, decoded from the spec's table.
fn slot(file: &[u8], at: usize) -> (u64, u64, u64, [u8; 16], u64) {
    let s = &file[at..at + 64];
    assert_eq!(&s[0..8], b"ANNALSUB", "magic at {at}");
    assert_eq!(
        u32::from_le_bytes(s[8..12].try_into().unwrap()),
        crc(&s[12..64]),
        "crc at {at}"
    );
    assert_eq!(u16_at(s, 12), 1, "version");
    assert_eq!(u16_at(s, 14), 0, "flags");
    (
        u64_at(s, 16),
        u64_at(s, 24),
        u64_at(s, 32),
        s[40..56].try_into().unwrap(),
        u64_at(s, 56),
    )
}

#[test]
fn the_checkpoint_file_is_the_committed_vector_and_decodes_from_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let mut sub = log
        .durable_subscription("billing")
        .category("order")
        .commit_every(1)
        .open()
        .unwrap();
    let a = sub.try_next().unwrap().unwrap();
    sub.ack(&a).unwrap();
    let b = sub.try_next().unwrap().unwrap();
    sub.ack(&b).unwrap();
    sub.close().unwrap();
    let written = std::fs::read(dir.path().join("annal.sub.billing")).unwrap();
    if regenerating() {
        std::fs::create_dir_all(committed().parent().unwrap()).unwrap();
        std::fs::write(committed(), &written).unwrap();
    }
    let file = std::fs::read(committed()).unwrap();
    assert_eq!(written, file, "annal writes the committed vector byte for byte");
    assert_eq!(file.len(), 128);
    let filter: [u8; 16] = blake3::hash(b"category:order").as_bytes()[..16].try_into().unwrap();
    // Sequence 3 (odd: the first slot) is current: next position 2 (after
    // order-1@1, position 1); sequence 2 (second slot) said 1.
    assert_eq!(slot(&file, 0), (3, 2, 0, filter, fp(id(20))));
    assert_eq!(slot(&file, 64), (2, 1, 0, filter, fp(id(10))));
    // (c) annal resumes at the vector's checkpoint: the next order event is
    // order-2 at position 3 (customer-1 at 2 is not of the category).
    let dir2 = tempfile::tempdir().unwrap();
    let log2 = log_in(dir2.path());
    std::fs::copy(committed(), dir2.path().join("annal.sub.billing")).unwrap();
    let mut again = log2.durable_subscription("billing").category("order").open().unwrap();
    assert_eq!(again.committed(), 2);
    assert_eq!(again.try_next().unwrap().unwrap().position, 3);
}

/// Events counted per stream, as a list of `(stream, count)`: a model with a
/// few postcard fields (a varint length, strings, varints).
struct PerStream;

impl annal::Projection for PerStream {
    type Model = Vec<(String, u64)>;
    fn empty(&self) -> Self::Model {
        Vec::new()
    }
    fn apply(&self, m: &mut Self::Model, r: &annal::RecordRef<'_>) {
        match m.iter_mut().find(|(s, _)| s == r.stream()) {
            Some((_, n)) => *n += 1,
            None => m.push((r.stream().to_owned(), 1)),
        }
    }
    fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
        for (s, n) in b {
            match a.iter_mut().find(|(x, _)| *x == s) {
                Some((_, k)) => *k += n,
                None => a.push((s, n)),
            }
        }
        a
    }
}

#[test]
fn the_projection_file_is_the_committed_vector_and_decodes_from_the_spec() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/consumer/annal.proj.per-stream");
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    log.projection("per-stream", PerStream).open().unwrap().close().unwrap();
    let written = std::fs::read(dir.path().join("annal.proj.per-stream")).unwrap();
    if regenerating() {
        std::fs::write(&committed, &written).unwrap();
    }
    let file = std::fs::read(&committed).unwrap();
    assert_eq!(written, file, "annal writes the committed vector byte for byte");
    // (b) from the spec's table: magic, version, flags, reserved, the
    // position after the last event (4), the model's length, the model
    // (postcard: a varint count, then per entry a varint-length string and
    // a varint), the CRC-32 of everything before it.
    assert_eq!(&file[0..8], b"ANNALPRJ");
    assert_eq!(u16_at(&file, 8), 1);
    assert_eq!(u16_at(&file, 10), 0);
    assert_eq!(&file[12..16], &[0, 0, 0, 0]);
    assert_eq!(u64_at(&file, 16), 4);
    assert_eq!(u64_at(&file, 24), fp(id(40)), "the last event folded: order-2's");
    let len = u64_at(&file, 32) as usize;
    assert_eq!(file.len(), 40 + len + 4);
    let model = &file[40..40 + len];
    let mut want = vec![3u8];
    for (s, n) in [("order-1", 2u8), ("customer-1", 1), ("order-2", 1)] {
        want.push(s.len() as u8);
        want.extend_from_slice(s.as_bytes());
        want.push(n);
    }
    assert_eq!(model, &want[..]);
    let body = file.len() - 4;
    assert_eq!(u32::from_le_bytes(file[body..].try_into().unwrap()), crc(&file[..body]));
    // (c) a runner opened on the committed file continues from it.
    let dir2 = tempfile::tempdir().unwrap();
    let log2 = log_in(dir2.path());
    std::fs::copy(&committed, dir2.path().join("annal.proj.per-stream")).unwrap();
    log2.append("order-9", ExpectedVersion::Any, &[EventData::new("E", b"{}")])
        .unwrap();
    let r = log2.projection("per-stream", PerStream).open().unwrap();
    assert_eq!(r.position(), 5);
    assert_eq!(r.model().last(), Some(&("order-9".to_owned(), 1)));
}

#[test]
fn the_serving_file_is_the_committed_vector_and_decodes_from_the_spec() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/consumer/annal.proj.per-stream~serving");
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    // Version 1 serves at once (nothing served); version 2 builds beside it
    // and takes over at position 4; version 1's files are retired.
    log.projection("per-stream", PerStream)
        .version(1)
        .open()
        .unwrap()
        .close()
        .unwrap();
    let mut v2 = log.projection("per-stream", PerStream).version(2).open().unwrap();
    let taken = v2.take_over().unwrap();
    assert_eq!((taken.previous, taken.retired), (Some(1), true));
    v2.close().unwrap();
    let written = std::fs::read(dir.path().join("annal.proj.per-stream~serving")).unwrap();
    if regenerating() {
        std::fs::write(&committed, &written).unwrap();
    }
    let file = std::fs::read(&committed).unwrap();
    assert_eq!(written, file, "annal writes the committed vector byte for byte");
    // (b) from the spec's table: 40 bytes, magic, CRC-32 of bytes 12..40,
    // version, flags, the serving version, the previous one, the position
    // it took over at.
    assert_eq!(file.len(), 40);
    assert_eq!(&file[0..8], b"ANNALSRV");
    assert_eq!(u32::from_le_bytes(file[8..12].try_into().unwrap()), crc(&file[12..40]));
    assert_eq!(u16_at(&file, 12), 1);
    assert_eq!(u16_at(&file, 14), 0);
    assert_eq!(u64_at(&file, 16), 2, "serving");
    assert_eq!(u64_at(&file, 24), 1, "previous");
    assert_eq!(u64_at(&file, 32), 4, "position");
    // A version's model file is a projection file (24.5): the same bytes
    // as the unversioned vector of the same projection over the same log.
    let v2_file = std::fs::read(dir.path().join("annal.proj.per-stream~v2")).unwrap();
    let unversioned =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/consumer/annal.proj.per-stream"))
            .unwrap();
    assert_eq!(v2_file, unversioned);
    assert!(!dir.path().join("annal.proj.per-stream~v1").exists(), "retired");
    // (c) annal reads the committed file: version 2 serves, version 1 and
    // the unversioned projection are superseded, version 2's runner serves
    // (rebuilt here: its model file is not copied).
    let dir2 = tempfile::tempdir().unwrap();
    let log2 = log_in(dir2.path());
    std::fs::copy(&committed, dir2.path().join("annal.proj.per-stream~serving")).unwrap();
    let serving = annal::ServingProjection::new(dir2.path(), "per-stream").unwrap();
    assert_eq!(serving.version().unwrap(), Some(2));
    for v in [0, 1] {
        match log2.projection("per-stream", PerStream).version(v).open() {
            Err(annal::Error::Superseded { version, by, .. }) => assert_eq!((version, by), (v, 2)),
            other => panic!("version {v}: {other:?}"),
        }
    }
    let r = log2.projection("per-stream", PerStream).version(2).open().unwrap();
    assert!(r.is_serving());
    assert_eq!(r.position(), 4);
}
