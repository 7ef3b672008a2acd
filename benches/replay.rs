//! Replay of a whole log beside its baselines, measured in the same group.
//!
//! Group `replay`: a log of N events (256-byte payloads, type `ItemAdded`,
//! appended with `Durability::Buffered` in batches of 100, batch `b` to stream
//! `order-{b % 1000}`), read from a `LogView` of the open log. Every
//! function reads every event once per iteration and sums the payload lengths
//! (or, for the limits, the bytes):
//!
//! * `annal_crc`: `view.read_all(0)`, every record's CRC checked (the default);
//! * `annal_no_crc`: `view.read_all_with(0, ReadOptions::default().verify_crc(false))`
//!   (structure still checked);
//! * `annal_crc_nochain`: `annal_crc` over the same events in a log opened
//!   with `Options::chain(false)`. Readers ignore the chain, so this should
//!   equal `annal_crc`; it is measured to show it;
//! * `chain_verify`: the audit chain verified over the mapped segments, as
//!   `check` does it without the CRCs: every segment's `chain_start` (genesis
//!   for the first), then BLAKE3 per batch frame (the previous hash, frame
//!   bytes [8, 40) and the records) compared with the frame's `chain` slot and
//!   with the seal's; the last hash is compared with `Log::anchor()`;
//! * `check`: `annal::check` on the log's directory with default options
//!   (every segment, CRCs, the chain once `check` verifies it, index files,
//!   the stream table), while the writer still holds the log;
//! * `check_nochain`: the same on the log without the chain;
//! * `sqlite_scan`: the same events in SQLite (WAL, `UNIQUE(stream, version)`,
//!   `synchronous = NORMAL`, see `common::sqlite_open`), `SELECT data FROM
//!   events ORDER BY position` through a cached prepared statement, summing the
//!   blob lengths;
//! * `limit_crc32fast`: crc32fast over the same mapped segment bytes
//!   (`view.segment_bytes()`), the cost of checking every byte once;
//! * `limit_sum`: a plain sum of the same mapped bytes as little-endian u64
//!   words, the memory bandwidth.
//!
//! Everything is in the page cache (the log was just written and is read once
//! before timing), so these are CPU figures, not disk figures.
//!
//! The table's MB/s count payload bytes (N × 256); the mapped segments are
//! about 1.4× that (record and frame headers, names), as the line printed
//! before the run says.
//!
//! `cargo bench --bench replay`; `ANNAL_BENCH_REPLAY_EVENTS` sets N (default
//! 1,000,000; `ANNAL_BENCH_SCALE` multiplies the default; 20,000 under
//! `-- --test`). Filter with e.g. `-- replay/annal_crc`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use annal::{ChainHash, CheckOptions, LogView, Options, ReadOptions};
use common::Figure;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;

const PAYLOAD: usize = 256;
const EVENT_TYPE: &str = "ItemAdded";

fn annal_sum(view: &LogView, opts: ReadOptions) -> u64 {
    let mut sum = 0u64;
    for r in view.read_all_with(0, opts) {
        sum += r.expect("read").payload().len() as u64;
    }
    sum
}

fn sqlite_sum(db: &Connection) -> u64 {
    let mut stmt = db
        .prepare_cached("SELECT data FROM events ORDER BY position")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut sum = 0u64;
    while let Some(row) = rows.next().expect("step") {
        let data = row.get_ref(0).expect("column").as_blob().expect("blob");
        sum += data.len() as u64;
    }
    sum
}

fn crc_limit(view: &LogView) -> u64 {
    view.segment_bytes()
        .map(|b| crc32fast::hash(b.expect("segment maps")) as u64)
        .sum()
}

fn sum_limit(view: &LogView) -> u64 {
    let mut sum = 0u64;
    for bytes in view.segment_bytes() {
        let bytes = bytes.expect("segment maps");
        let words = bytes.chunks_exact(8);
        let tail: u64 = words.remainder().iter().map(|&b| b as u64).sum();
        sum = words.fold(sum.wrapping_add(tail), |s, w| {
            s.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")))
        });
    }
    sum
}

/// Domain of the genesis hash (spec 21.2).
const GENESIS_DOMAIN: &[u8; 16] = b"annal chain v2\0\0";
const SEGMENT_HEADER_LEN: usize = 128;
const FRAME_HEADER_LEN: usize = 72;

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// Verify the audit chain of the (plain, unkeyed) log in `view`'s mapped
/// segments: returns the chain hash after the last batch and the number of
/// batches. Panics on any mismatch (the log was just written by annal).
fn chain_verify(view: &LogView) -> (ChainHash, u64) {
    let mut chain: Option<ChainHash> = None;
    let mut batches = 0u64;
    for seg in view.segment_bytes() {
        let seg = seg.expect("segment maps");
        let header = &seg[..SEGMENT_HEADER_LEN];
        let start: ChainHash = header[56..88].try_into().expect("32 bytes");
        let expected = chain.unwrap_or_else(|| {
            let mut h = blake3::Hasher::new();
            h.update(GENESIS_DOMAIN);
            h.update(&header[16..32]);
            *h.finalize().as_bytes()
        });
        assert_eq!(start, expected, "chain_start");
        let mut prev = start;
        let mut off = SEGMENT_HEADER_LEN;
        if u16::from_le_bytes([header[8], header[9]]) >= 3 {
            // Format version 3 (spec 3.6, 21.2): a 32-byte header, a chain
            // slot in some frames only; the link hashes [6, 28) and the body.
            while let Some(fh) = seg.get(off..off + 32) {
                if &fh[4..6] != b"F3" {
                    break;
                }
                let len = u32::from_le_bytes(fh[8..12].try_into().expect("4 bytes")) as usize;
                let header_len = if fh[7] & 1 != 0 { 64 } else { 32 };
                let stored = (header_len == 64).then(|| &seg[off + 32..off + 64]);
                if fh[6] == 1 {
                    let frame = &seg[off..off + len];
                    let mut h = blake3::Hasher::new();
                    h.update(&prev);
                    h.update(&frame[6..28]);
                    h.update(&frame[header_len..]);
                    prev = *h.finalize().as_bytes();
                    batches += 1;
                }
                if let Some(s) = stored {
                    assert_eq!(s, prev, "chain at byte {off}");
                }
                off += len;
            }
            chain = Some(prev);
            continue;
        }
        while let Some(fh) = seg.get(off..off + FRAME_HEADER_LEN) {
            if &fh[..4] != b"BTCH" {
                break;
            }
            let len = le_u64(&fh[8..16]) as usize;
            let stored = &fh[40..72];
            match fh[28] {
                1 => {
                    let frame = &seg[off..off + len];
                    let mut h = blake3::Hasher::new();
                    h.update(&prev);
                    h.update(&frame[8..40]);
                    h.update(&frame[FRAME_HEADER_LEN..]);
                    prev = *h.finalize().as_bytes();
                    assert_eq!(stored, prev, "batch chain at byte {off}");
                    batches += 1;
                }
                _ => assert_eq!(stored, prev, "seal chain at byte {off}"),
            }
            off += len;
        }
        chain = Some(prev);
    }
    (chain.expect("a segment"), batches)
}

fn check_records(dir: &std::path::Path) -> u64 {
    let report = annal::check(dir, CheckOptions::default()).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    report.records
}

fn replay(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_REPLAY_EVENTS", 1_000_000, 20_000);
    let payload = common::payload(PAYLOAD);

    let start = Instant::now();
    let (dir, log) = common::batched_log("annal-bench-replay-", n, &payload, &[EVENT_TYPE]);
    let view = log.view().expect("view");
    assert_eq!(view.next_position(), n);
    assert_eq!(log.chain_mode(), (true, false));
    let (dir_off, log_off) = common::batched_log_with(
        "annal-bench-replay-nochain-",
        n,
        &payload,
        &[EVENT_TYPE],
        Options::default().chain(false),
    );
    let view_off = log_off.view().expect("view");
    assert_eq!(view_off.next_position(), n);
    assert_eq!(log_off.chain_mode(), (false, false));
    let db = common::sqlite_copy(&dir.path().join("events.sqlite"), &view);
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    eprintln!(
        "replay: {n} events, {} segment(s), {:.1} MB mapped, built in {:.1} s",
        view.segment_count(),
        view.len_bytes() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    // Every function sees the same events (and warms the page cache).
    let want = n * PAYLOAD as u64;
    assert_eq!(annal_sum(&view, ReadOptions::default()), want);
    assert_eq!(annal_sum(&view, ReadOptions::default().verify_crc(false)), want);
    assert_eq!(annal_sum(&view_off, ReadOptions::default()), want);
    assert_eq!(sqlite_sum(&db), want);
    black_box((crc_limit(&view), sum_limit(&view)));
    let anchor = log.anchor().expect("a chained log has an anchor");
    assert_eq!(chain_verify(&view), (anchor.hash, n.div_ceil(100)));
    let (log_dir, log_off_dir) = (dir.path().join("log"), dir_off.path().join("log"));
    assert_eq!(check_records(&log_dir), n);
    assert_eq!(check_records(&log_off_dir), n);

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(n));
    // Iterations take tens to hundreds of milliseconds.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    g.bench_function("annal_crc", |b| {
        b.iter(|| black_box(annal_sum(&view, ReadOptions::default())))
    });
    g.bench_function("annal_no_crc", |b| {
        b.iter(|| black_box(annal_sum(&view, ReadOptions::default().verify_crc(false))))
    });
    g.bench_function("annal_crc_nochain", |b| {
        b.iter(|| black_box(annal_sum(&view_off, ReadOptions::default())))
    });
    g.bench_function("chain_verify", |b| b.iter(|| black_box(chain_verify(&view))));
    g.bench_function("check", |b| b.iter(|| black_box(check_records(&log_dir))));
    g.bench_function("check_nochain", |b| b.iter(|| black_box(check_records(&log_off_dir))));
    g.bench_function("sqlite_scan", |b| b.iter(|| black_box(sqlite_sum(&db))));
    g.bench_function("limit_crc32fast", |b| b.iter(|| black_box(crc_limit(&view))));
    g.bench_function("limit_sum", |b| b.iter(|| black_box(sum_limit(&view))));
    g.finish();

    Figure::new("replay", n, n * PAYLOAD as u64)
        .row(
            "annal_crc",
            &[
                ("SQLite scan", "sqlite_scan", Some(2.5)),
                ("crc32fast", "limit_crc32fast", Some(0.5)),
                ("memory sum", "limit_sum", None),
                ("log without chain", "annal_crc_nochain", None),
            ],
        )
        .row(
            "annal_no_crc",
            &[("SQLite scan", "sqlite_scan", None), ("memory sum", "limit_sum", None)],
        )
        .row("annal_crc_nochain", &[("crc32fast", "limit_crc32fast", None)])
        .row(
            "chain_verify",
            &[
                ("crc32fast", "limit_crc32fast", None),
                ("replay annal_crc", "annal_crc", None),
            ],
        )
        .row(
            "check",
            &[
                ("chain verify (BLAKE3 per batch)", "chain_verify", None),
                ("check without chain", "check_nochain", None),
            ],
        )
        .save();
    drop((view, view_off));
    log.close().expect("close");
    log_off.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = replay
}
criterion_main!(benches);
