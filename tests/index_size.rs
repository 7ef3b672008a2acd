//! Bytes of `.idx` per event (issue 15): 200,000 single-event appends of
//! 256-byte payloads over 2,000 streams, segments of 16 MiB (several seal).
//! Prints, for the sealed segments, the bytes of the index files the writer
//! wrote (index version 2) and what the same indexes take in version 1,
//! computed from the version 2 headers' counts with the version 1 sizes of
//! spec 17.1 (exact: with one event per batch, version 1 lists as many
//! event type entries as version 2). Run with
//!
//! ```text
//! cargo test --release --test index_size -- --ignored --nocapture
//! ```

mod common;

use annal::{EventData, ExpectedVersion, Log, Options};

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")))
}

/// Bytes of a derived file (spec 16) whose checked region is `region` bytes
/// before padding.
fn file_len(region: u64) -> u64 {
    let region = region.next_multiple_of(8);
    region + 4 * region.div_ceil(4096) + 32
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn idx_bytes_per_event() {
    const EVENTS: u64 = 200_000;
    const STREAMS: u64 = 2_000;
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(16 << 20)).expect("open");
    let payload = vec![0x5au8; 256];
    let types = ["Opened", "Deposited", "Withdrawn", "Closed"];
    for i in 0..EVENTS {
        let stream = format!("account-{}", i % STREAMS);
        let ev = EventData::new(types[(i % 4) as usize], payload.as_slice());
        log.append(&stream, ExpectedVersion::Any, &[ev]).expect("append");
    }
    log.close().expect("close");
    let (mut v2, mut v1, mut events, mut segments) = (0u64, 0u64, 0u64, 0u64);
    let mut parts = [0u64; 8];
    for seg in common::segments(dir.path()) {
        let idx_path = seg.with_extension("idx");
        let Ok(idx) = std::fs::read(&idx_path) else { continue };
        assert_eq!(u16::from_le_bytes([idx[8], idx[9]]), 2, "index_version");
        segments += 1;
        let c: Vec<u64> = (0..8).map(|i| u32_at(&idx, 40 + 4 * i)).collect();
        // Single-event batches: one event per frame entry.
        events += c[6];
        assert_eq!(c[5], c[6], "one type entry per single-event batch");
        v2 += idx.len() as u64;
        let v2_region = 128 + 48 * c[0] + 8 * c[1] + 32 * c[2] + 4 * c[3] + 32 * c[4] + 4 * c[5] + 8 * c[6] + c[7];
        assert_eq!(file_len(v2_region), idx.len() as u64, "version 2 layout");
        let v1_region = 128 + 56 * c[0] + 16 * c[1] + 32 * c[2] + 8 * c[3] + 32 * c[4] + 8 * c[5] + 16 * c[6] + c[7];
        v1 += file_len(v1_region);
        for (p, (n, size)) in parts.iter_mut().zip(c.iter().zip([48, 8, 32, 4, 32, 4, 8, 1])) {
            *p += n * size;
        }
    }
    assert!(segments >= 3, "several sealed segments: {segments}");
    let per = |b: u64| b as f64 / events as f64;
    println!("sealed segments: {segments}, events in them: {events}");
    println!("index version 1 (before): {v1} bytes, {:.2} bytes/event", per(v1));
    println!("index version 2 (after):  {v2} bytes, {:.2} bytes/event", per(v2));
    let labels = [
        "stream rows",
        "stream entries",
        "category rows",
        "category entries",
        "type rows",
        "type entries",
        "frame entries",
        "names",
    ];
    for (l, p) in labels.iter().zip(parts) {
        println!("  v2 {l:<17} {:>10} bytes {:>6.2} bytes/event", p, per(p));
    }
    assert!(v2 < v1);
}
