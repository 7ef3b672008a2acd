//! Rebuilding a projection over the whole log, sequentially and in parallel,
//! measured in the same group.
//!
//! Group `rebuild`: a log of N events (256-byte payloads, appended with
//! `Durability::Buffered` in batches of 100, batch `b` to stream
//! `order-{b % 1000}`, the events of a batch cycling through four event
//! types), read from a `LogView` of the open log. The projection `Stats` does
//! per-event work on every record: it counts events and sums payload bytes
//! per event type (a map keyed by the type name), counts events per stream
//! bucket (FNV-1a of the stream name, 64 buckets) and keeps the total payload
//! bytes and the newest timestamp; its merge adds counts, so it is
//! associative with the empty model as identity.
//!
//! * `annal_sequential`: `view.rebuild(&Stats)` (one thread, CRCs checked);
//! * `annal_par_rebuild`: `view.par_rebuild(&Stats)` (balanced chunks on
//!   rayon's global pool, CRCs checked), whose model is asserted once to equal
//!   the sequential one. The pool's thread count is printed to stderr.
//!
//! Everything is in the page cache (the log was just written and is read
//! before timing), so these are CPU figures.
//!
//! `cargo bench --bench rebuild`; `ANNAL_BENCH_REBUILD_EVENTS` sets N (default
//! 1,000,000; `ANNAL_BENCH_SCALE` multiplies the default; 20,000 under
//! `-- --test`); `RAYON_NUM_THREADS` sets the pool size.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use annal::{Projection, RecordRef};
use common::Figure;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const TYPES: [&str; 4] = ["OrderPlaced", "ItemAdded", "PaymentConfirmed", "OrderShipped"];
const BUCKETS: usize = 64;

/// What the projection computes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    /// Per event type: (events, payload bytes).
    by_type: BTreeMap<String, (u64, u64)>,
    /// Events per stream bucket.
    by_bucket: [u64; BUCKETS],
    payload_bytes: u64,
    last_timestamp: u64,
}

/// Per-type and per-stream-bucket statistics of the whole log.
struct Stats;

impl Projection for Stats {
    type Model = Model;

    fn empty(&self) -> Model {
        Model {
            by_type: BTreeMap::new(),
            by_bucket: [0; BUCKETS],
            payload_bytes: 0,
            last_timestamp: 0,
        }
    }

    fn apply(&self, m: &mut Model, r: &RecordRef<'_>) {
        let bytes = r.payload().len() as u64;
        // Allocate only for a type not seen before.
        match m.by_type.get_mut(r.event_type()) {
            Some((n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => {
                m.by_type.insert(r.event_type().to_owned(), (1, bytes));
            }
        }
        m.by_bucket[(annal::stream_hash(r.stream_bytes()) % BUCKETS as u64) as usize] += 1;
        m.payload_bytes += bytes;
        m.last_timestamp = m.last_timestamp.max(r.timestamp());
    }

    fn merge(&self, mut earlier: Model, later: Model) -> Model {
        for (ty, (n, b)) in later.by_type {
            let e = earlier.by_type.entry(ty).or_default();
            e.0 += n;
            e.1 += b;
        }
        for (a, b) in earlier.by_bucket.iter_mut().zip(later.by_bucket) {
            *a += b;
        }
        earlier.payload_bytes += later.payload_bytes;
        earlier.last_timestamp = earlier.last_timestamp.max(later.last_timestamp);
        earlier
    }
}

fn rebuild(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_REBUILD_EVENTS", 1_000_000, 20_000);
    let payload = common::payload(PAYLOAD);

    let start = Instant::now();
    let (_dir, log) = common::batched_log("annal-bench-rebuild-", n, &payload, &TYPES);
    let view = log.view().expect("view");
    assert_eq!(view.next_position(), n);
    eprintln!(
        "rebuild: {n} events, {} segment(s), {:.1} MB mapped, built in {:.1} s; rayon threads: {}",
        view.segment_count(),
        view.len_bytes() as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );

    // Both give the same model (and the page cache is warm).
    let seq = view.rebuild(&Stats).expect("rebuild");
    let par = view.par_rebuild(&Stats).expect("par_rebuild");
    assert_eq!(seq, par, "par_rebuild must give the sequential model");
    assert_eq!(seq.payload_bytes, n * PAYLOAD as u64);
    assert_eq!(seq.by_type.values().map(|(n, _)| n).sum::<u64>(), n);

    let mut g = c.benchmark_group("rebuild");
    g.throughput(Throughput::Elements(n));
    // Iterations take tens to hundreds of milliseconds.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    g.bench_function("annal_sequential", |b| {
        b.iter(|| black_box(view.rebuild(&Stats).expect("rebuild")))
    });
    g.bench_function("annal_par_rebuild", |b| {
        b.iter(|| black_box(view.par_rebuild(&Stats).expect("par_rebuild")))
    });
    g.finish();

    Figure::new("rebuild", n, n * PAYLOAD as u64)
        .row("annal_par_rebuild", &[("sequential", "annal_sequential", Some(1.7))])
        .metric(
            "annal_par_rebuild",
            "rayon threads",
            rayon::current_num_threads() as f64,
            None,
        )
        .save();
    drop(view);
    log.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = rebuild
}
criterion_main!(benches);
