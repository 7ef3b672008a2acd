//! The main job of README.md: append 1,000,000 events across 10,000 streams in
//! batches of 100 (`Durability::Buffered`), `sync()` once, reopen the log,
//! replay it with CRC checks, check every byte and the audit chain, and print
//! throughput and the anchor of the head.
//!
//! Run: `cargo run --release --example quickstart [DIR]` (default: a fresh
//! directory under the system temp dir, removed at the end unless DIR is given).

use std::time::Instant;

use annal::{Durability, EventData, ExpectedVersion, Log, Options};

const EVENTS: u64 = 1_000_000;
const STREAMS: u64 = 10_000;
const BATCH: u64 = 100;
const PAYLOAD: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, _tmp) = match std::env::args_os().nth(1) {
        Some(d) => (std::path::PathBuf::from(d), None),
        None => {
            let t = tempfile::Builder::new().prefix("annal-quickstart-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let durability = Durability::Buffered;
    println!("annal quickstart: {EVENTS} events, {STREAMS} streams, batches of {BATCH}, {PAYLOAD}-byte payloads");
    println!("directory:  {}", dir.display());
    println!("durability: {durability:?} (one sync() at the end)");

    // Append.
    let log = Log::open_with(&dir, Options::default().durability(durability))?;
    // A directory given on the command line may already hold a log: append
    // after what is there and replay only what this run appended.
    let first = log.next_position();
    let bytes_before = log.view()?.len_bytes();
    let payload = vec![b'x'; PAYLOAD];
    let events: Vec<EventData<'_>> = (0..BATCH)
        .map(|_| EventData::new("ItemAdded", payload.as_slice()).with_metadata(br#"{"by":"quickstart"}"#.as_slice()))
        .collect();
    let mut names: Vec<String> = (0..STREAMS).map(|i| format!("order-{i}")).collect();
    let start = Instant::now();
    for b in 0..EVENTS / BATCH {
        let stream = &names[(b % STREAMS) as usize];
        log.append(stream, ExpectedVersion::Any, &events)?;
    }
    let buffered_secs = start.elapsed().as_secs_f64();
    log.sync()?;
    let append_secs = start.elapsed().as_secs_f64();
    let bytes = log.view()?.len_bytes() - bytes_before;
    log.close()?;
    names.clear();

    // Reopen and replay.
    let start = Instant::now();
    let log = Log::open(&dir)?;
    let open_secs = start.elapsed().as_secs_f64();
    let view = log.view()?;
    let start = Instant::now();
    let (mut count, mut payload_bytes) = (0u64, 0u64);
    for rec in view.read_all(first) {
        let rec = rec?;
        count += 1;
        payload_bytes += rec.payload().len() as u64;
    }
    let replay_secs = start.elapsed().as_secs_f64();
    assert_eq!(count, EVENTS, "replay must return every appended event");
    assert_eq!(payload_bytes, EVENTS * PAYLOAD as u64);

    let mb = bytes as f64 / 1e6;
    println!("log size:   {mb:.1} MB in {} segment(s)", view.segment_count());
    println!(
        "append:     {:>12.0} events/s  {:>8.1} MB/s  ({append_secs:.2} s, including the final sync)",
        EVENTS as f64 / append_secs,
        mb / append_secs
    );
    println!(
        "            {:>12.0} events/s  {:>8.1} MB/s  ({buffered_secs:.2} s handing batches to the OS, {:.2} s in sync())",
        EVENTS as f64 / buffered_secs,
        mb / buffered_secs,
        append_secs - buffered_secs
    );
    println!("reopen:     {open_secs:.3} s (sealed segments are indexed; only the active one is scanned)");
    println!(
        "replay:     {:>12.0} events/s  {:>8.1} MB/s  ({replay_secs:.2} s, CRC-checked, zero-copy)",
        EVENTS as f64 / replay_secs,
        mb / replay_secs
    );
    // The audit chain (on by default): verify every CRC and every link in
    // parallel, and print the anchor an auditor would keep outside the log.
    let anchor = log.anchor();
    drop(view);
    log.close()?;
    let start = Instant::now();
    let mut opts = annal::CheckOptions::default();
    if let Some(a) = anchor {
        opts = opts.anchor(a);
    }
    let report = annal::check(&dir, opts)?;
    let check_secs = start.elapsed().as_secs_f64();
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
    println!(
        "check:      {:>12.0} events/s  {:>8.1} MB/s  ({check_secs:.2} s: every CRC, index and audit-chain link)",
        report.records as f64 / check_secs,
        report.bytes as f64 / 1e6 / check_secs
    );
    if let Some(a) = anchor {
        println!("anchor:     {a}  (annal check DIR --anchor {a})");
    }
    Ok(())
}
