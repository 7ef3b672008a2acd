//! Durable subscriptions and the projection runner (issue 19).
//!
//! * `projection_catch_up`: a projection runner opened with no file on a
//!   log of N events (256-byte payloads, batches of 100 over 1,000 streams):
//!   a parallel rebuild, then its model and position saved; against
//!   `view.par_rebuild` of the same projection (no save) and a runner
//!   continuing from a file saved at half the log (a sequential fold of the
//!   other half, then a save).
//! * `checkpoint`: a durable subscription delivering and acknowledging N/10
//!   events, committing its checkpoint (write + fsync) every event, every
//!   100 events, and never (only at the end): what a checkpoint costs.
//! * live lag (printed, not a criterion group): appends of 100 events every
//!   2 ms (50,000 events/s, `ANNAL_BENCH_RATE`) for `ANNAL_BENCH_SECONDS`
//!   (default 5), a durable subscription on another thread acknowledging
//!   each event (commit every 100): from each append's acknowledgement to
//!   the delivery of its last event, p50, p99, max.
//!
//! `cargo bench --bench consumers`; `ANNAL_BENCH_EVENTS` sets N (default
//! 1,000,000; `ANNAL_BENCH_SCALE` multiplies it).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, Projection, RecordRef};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PAYLOAD: usize = 256;
const TYPES: [&str; 4] = ["OrderPlaced", "ItemAdded", "PaymentConfirmed", "OrderShipped"];

/// Events and payload bytes per event type.
struct PerType;

impl Projection for PerType {
    type Model = BTreeMap<String, (u64, u64)>;
    fn empty(&self) -> Self::Model {
        BTreeMap::new()
    }
    fn apply(&self, m: &mut Self::Model, r: &RecordRef<'_>) {
        let e = m.entry(r.event_type().to_owned()).or_default();
        e.0 += 1;
        e.1 += r.payload().len() as u64;
    }
    fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
        for (k, (n, s)) in b {
            let e = a.entry(k).or_default();
            e.0 += n;
            e.1 += s;
        }
        a
    }
}

fn catch_up(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_EVENTS", 1_000_000, 20_000);
    let payload = common::payload(PAYLOAD);
    let (_tmp, log) = common::batched_log("annal-bench-consumers-", n, &payload, &TYPES);
    let dir = log.dir().to_owned();
    let mut g = c.benchmark_group("projection_catch_up");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.throughput(Throughput::Elements(n));
    let file = dir.join("annal.proj.per-type");
    g.bench_function("runner_from_nothing", |b| {
        b.iter(|| {
            let _ = std::fs::remove_file(&file);
            let r = log.projection("per-type", PerType).open().expect("open");
            assert_eq!(r.position(), log.next_position());
            r.close().expect("close");
        })
    });
    g.bench_function("par_rebuild", |b| {
        b.iter(|| log.view().expect("view").par_rebuild(&PerType).expect("rebuild"))
    });
    // A file saved at half the log: the runner folds the other half.
    g.bench_function("runner_from_half", |b| {
        b.iter_batched(
            || write_half(&dir, &log, n),
            |()| {
                let r = log.projection("per-type", PerType).open().expect("open");
                assert_eq!(r.position(), log.next_position());
                r.close().expect("close");
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Leave `annal.proj.per-type` holding the model of the first half of the
/// log: a runner opened on a log of that half (a copy made once), its file
/// copied over.
fn write_half(dir: &std::path::Path, log: &annal::Log, n: u64) {
    use std::sync::OnceLock;
    static HALF: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = HALF.get_or_init(|| {
        let view = log.view().expect("view");
        let mut m = PerType.empty();
        let mut next = 0;
        for r in view.read_all(0).take((n / 2) as usize) {
            let r = r.expect("read");
            PerType.apply(&mut m, &r);
            next = r.position() + 1;
        }
        // The file's layout (spec 24.5), written here from the model.
        let model = postcard::to_allocvec(&m).expect("model");
        let mut out = Vec::new();
        out.extend_from_slice(b"ANNALPRJ");
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(&next.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(model.len() as u64).to_le_bytes());
        out.extend_from_slice(&model);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    });
    std::fs::write(dir.join("annal.proj.per-type"), bytes).expect("write the half file");
}

fn checkpoint(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_EVENTS", 1_000_000, 20_000) / 10;
    let payload = common::payload(PAYLOAD);
    let (_tmp, log) = common::batched_log("annal-bench-checkpoint-", n, &payload, &TYPES);
    let mut g = c.benchmark_group("checkpoint");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.throughput(Throughput::Elements(n));
    let mut k = 0u64;
    for (name, every) in [
        ("commit_every_1", 1u64),
        ("commit_every_100", 100),
        ("commit_at_end", u64::MAX),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                let mut sub = log
                    .durable_subscription(&format!("bench-{k}"))
                    .commit_every(every)
                    .commit_interval(Duration::from_secs(3600))
                    .open()
                    .expect("open");
                let mut got = 0u64;
                while let Some(r) = sub.try_next().expect("next") {
                    sub.ack(&r).expect("ack");
                    got += 1;
                }
                assert_eq!(got, n);
                sub.close().expect("close");
            })
        });
    }
    g.finish();
}

fn lag(_c: &mut Criterion) {
    if common::test_mode() {
        return;
    }
    let rate = common::env_u64("ANNAL_BENCH_RATE").unwrap_or(50_000);
    let seconds = common::env_u64("ANNAL_BENCH_SECONDS").unwrap_or(5);
    let tmp = common::scratch("annal-bench-consumer-lag-");
    let log = annal::Log::open(tmp.path().join("log")).expect("open");
    let payload = common::payload(PAYLOAD);
    let evs: Vec<EventData<'_>> = (0..100).map(|_| EventData::new("E", &payload[..])).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The consumer notes when it got each event; lags are matched after.
    let consumer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sub = log.durable_subscription("lag").commit_every(100).open().expect("open");
            let mut got = std::collections::HashMap::<u64, Instant>::new();
            loop {
                match sub.next_timeout(Duration::from_millis(50)).expect("next") {
                    Some(r) => {
                        got.insert(r.position, Instant::now());
                        sub.ack(&r).expect("ack");
                    }
                    None if stop.load(std::sync::atomic::Ordering::SeqCst) => return got,
                    None => {}
                }
            }
        })
    };
    let mut acked = Vec::<(u64, Instant)>::new();
    let every = Duration::from_secs_f64(100.0 / rate as f64);
    let start = Instant::now();
    let mut next = start;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let r = log
            .append(&format!("s-{}", i % 100), ExpectedVersion::Any, &evs)
            .expect("append");
        acked.push((r.last_position, Instant::now()));
        i += 1;
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let achieved = (i * 100) as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let got = consumer.join().expect("consumer");
    // Delivered before the append returned counts as no lag.
    let mut lags: Vec<Duration> = acked
        .iter()
        .filter_map(|(p, t)| got.get(p).map(|d| d.saturating_duration_since(*t)))
        .collect();
    assert_eq!(lags.len(), acked.len(), "every batch delivered");
    lags.sort_unstable();
    let q = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
    eprintln!(
        "durable subscription lag at {achieved:.0} events/s (target {rate}), commit every 100: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} batches)",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lags.len()
    );
    log.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = catch_up, checkpoint, lag
}
criterion_main!(benches);
