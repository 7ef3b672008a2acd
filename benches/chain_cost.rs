//! What a per-record-digest chain would cost an append, against the chain
//! annal has (spec 3.10, "Why a record rather than per-record digests").
//!
//! Group `chain_cost`: one real batch frame of 100 records with 256-byte
//! payloads (stream `order-1`, type `ItemAdded`), as the writer encodes it
//! (format version 4, chain on), taken from a segment file written by
//! `Log::append`. Everything is in memory; this is BLAKE3 alone.
//!
//! * `batch_at_once`: one BLAKE3 over the whole frame's bytes, what the
//!   chain's link (spec 21.2) hashes per batch.
//! * `per_record`: one `blake3::hash` per record (its bytes as stored), then
//!   one hash over the 100 digests: the least a chain of per-record digests
//!   would hash per batch.
//!
//! Criterion's throughput is the frame's length, so both rows' MB/s count the
//! same bytes.
//!
//! `cargo bench --bench chain_cost -- --warm-up-time 1 --measurement-time 3`.

mod common;

use std::hint::black_box;

use annal::inspect::FileDump;
use annal::{EventData, ExpectedVersion, Options};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECORDS: usize = 100;
const PAYLOAD: usize = 256;

/// The bytes of one batch frame of `RECORDS` records, and `(offset, len)`
/// of each record inside it.
fn real_batch() -> (Vec<u8>, Vec<(usize, usize)>) {
    let dir = common::scratch("chain-cost");
    let path = dir.path().join("log");
    let log = annal::Log::open_with(&path, Options::default().durability(annal::Durability::Buffered)).expect("open");
    let payload = common::payload(PAYLOAD);
    let events: Vec<EventData<'_>> = (0..RECORDS)
        .map(|_| EventData::new("ItemAdded", payload.as_slice()))
        .collect();
    log.append("order-1", ExpectedVersion::Any, &events).expect("append");
    log.close().expect("close");
    let seg = std::fs::read(path.join(annal::segment::segment_file_name(0))).expect("read the segment");
    let Ok(FileDump::Segment(dump)) = annal::inspect::inspect(&seg, None) else {
        panic!("not a segment");
    };
    let frame = dump
        .frames
        .iter()
        .find(|f| f.records.len() == RECORDS)
        .expect("the batch of 100 records");
    let start = usize::try_from(frame.offset).expect("offset");
    let end = start + usize::try_from(frame.len).expect("len");
    let records = frame
        .records
        .iter()
        .map(|r| (usize::try_from(r.offset).expect("offset") - start, r.len as usize))
        .collect();
    (seg[start..end].to_vec(), records)
}

/// One BLAKE3 over the batch's bytes.
fn batch_at_once(frame: &[u8]) -> [u8; 32] {
    *blake3::hash(frame).as_bytes()
}

/// One BLAKE3 per record, then one over the digests.
fn per_record(frame: &[u8], records: &[(usize, usize)]) -> [u8; 32] {
    let mut digests = Vec::with_capacity(records.len() * 32);
    for &(at, len) in records {
        digests.extend_from_slice(blake3::hash(&frame[at..at + len]).as_bytes());
    }
    *blake3::hash(&digests).as_bytes()
}

fn bench(c: &mut Criterion) {
    let (frame, records) = real_batch();
    assert_eq!(records.len(), RECORDS);
    let record_bytes: usize = records.iter().map(|r| r.1).sum();
    eprintln!(
        "chain_cost: frame of {} bytes, {} records of {} bytes ({} bytes of records)",
        frame.len(),
        records.len(),
        records[0].1,
        record_bytes
    );
    let mut g = c.benchmark_group("chain_cost");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("batch_at_once", |b| b.iter(|| batch_at_once(black_box(&frame))));
    g.bench_function("per_record", |b| {
        b.iter(|| per_record(black_box(&frame), black_box(&records)))
    });
    g.finish();
    common::Figure::new("chain_cost", RECORDS as u64, (RECORDS * PAYLOAD) as u64)
        .row("batch_at_once", &[("per-record digests", "per_record", None)])
        .save();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);
