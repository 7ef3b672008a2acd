//! Loading an aggregate from its snapshot beside replaying its whole stream,
//! measured in the same group.
//!
//! Group `snapshot`: one stream `account-1` of N typed events (postcard
//! payloads: deposits with a short memo and withdrawals, appended with
//! `Durability::Buffered` in batches of 100), folded by the `Account`
//! aggregate (balance, counts, memo bytes). After the appends,
//! `Repository::snapshot` writes a snapshot at the stream's last version.
//!
//! * `annal_from_snapshot`: `Repository::load` of the stream: finds and reads
//!   the newest snapshot file, checks and decodes it, and replays the events
//!   after it (none);
//! * `annal_full_replay`: the same repository with `ignore_snapshots()`:
//!   reads the stream's N events through the stream index, decodes each and
//!   applies it.
//!
//! Both loads are asserted once to give the same state and version. The
//! ratio table shows times only: a load from a snapshot reads no events, so
//! an events/s rate would describe events it never touched.
//!
//! `cargo bench --bench snapshot`; `ANNAL_BENCH_SNAPSHOT_EVENTS` sets N
//! (default 100,000; `ANNAL_BENCH_SCALE` multiplies the default; 2,000 under
//! `-- --test`).

mod common;

use std::hint::black_box;
use std::time::Instant;

use annal::{Aggregate, Durability, Event, ExpectedVersion, Log, Options, Repository};
use common::Figure;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

const STREAM: &str = "account-1";
const BATCH: u64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { cents: u64, memo: String },
    Withdrawn { cents: u64 },
}

impl Event for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u64,
    withdrawals: u64,
    memo_bytes: u64,
}

impl Aggregate for Account {
    type Event = AccountEvent;
    type Command = AccountEvent;
    type Error = String;

    fn handle(&self, command: &AccountEvent) -> Result<Vec<AccountEvent>, String> {
        match command {
            AccountEvent::Withdrawn { cents } if *cents as i64 > self.balance => Err("insufficient funds".into()),
            c => Ok(vec![c.clone()]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { cents, memo } => {
                self.balance += *cents as i64;
                self.deposits += 1;
                self.memo_bytes += memo.len() as u64;
            }
            AccountEvent::Withdrawn { cents } => {
                self.balance -= *cents as i64;
                self.withdrawals += 1;
            }
        }
    }
}

/// Event `i` of the stream: three deposits for every withdrawal, so the
/// balance never goes negative.
fn event(i: u64) -> AccountEvent {
    if i % 4 == 3 {
        AccountEvent::Withdrawn { cents: 100 + i % 50 }
    } else {
        AccountEvent::Deposited {
            cents: 100 + i % 97,
            memo: format!("invoice {i:08} paid by transfer"),
        }
    }
}

/// Append `n` events to `STREAM` in batches; returns their payload bytes.
fn build_stream(log: &Log, n: u64) -> u64 {
    let mut bytes = 0;
    let mut i = 0;
    while i < n {
        let batch: Vec<AccountEvent> = (i..n.min(i + BATCH)).map(event).collect();
        for e in &batch {
            bytes += annal::typed::encode(e).expect("encode").payload.len() as u64;
        }
        log.append_typed(STREAM, ExpectedVersion::Any, &batch).expect("append");
        i += batch.len() as u64;
    }
    bytes
}

fn snapshot(c: &mut Criterion) {
    let n = common::size("ANNAL_BENCH_SNAPSHOT_EVENTS", 100_000, 2_000);

    let start = Instant::now();
    let dir = common::scratch("annal-bench-snapshot-");
    let log = Log::open_with(
        dir.path().join("log"),
        Options::default().durability(Durability::Buffered),
    )
    .expect("open");
    let bytes = build_stream(&log, n);
    let snap = Repository::<Account>::new(&log);
    assert_eq!(snap.snapshot(STREAM).expect("snapshot"), Some(n - 1));
    let full = Repository::<Account>::new(&log).ignore_snapshots();
    eprintln!(
        "snapshot: {n} events ({:.1} MB of payloads) in one stream, built in {:.1} s",
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    // Same state and version either way; the snapshot is used and nothing
    // follows it.
    let a = snap.load(STREAM).expect("load from the snapshot");
    let b = full.load(STREAM).expect("load replaying every event");
    assert_eq!((&a.state, a.version), (&b.state, b.version));
    assert_eq!(a.version, Some(n - 1));
    assert_eq!((a.snapshot_version, a.replayed), (Some(n - 1), 0));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!((b.snapshot_version, b.replayed), (None, n));

    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Elements(n));
    // A full replay takes tens of milliseconds.
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.bench_function("annal_from_snapshot", |b| {
        b.iter(|| black_box(snap.load(STREAM).expect("load from the snapshot")))
    });
    g.bench_function("annal_full_replay", |b| {
        b.iter(|| black_box(full.load(STREAM).expect("load replaying every event")))
    });
    g.finish();

    // No rates: a load from a snapshot reads no events (it stands for them).
    Figure::new("snapshot", 0, 0)
        .row(
            "annal_from_snapshot",
            &[("full replay", "annal_full_replay", Some(100.0))],
        )
        .save();
    drop((snap, full));
    log.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = snapshot
}
criterion_main!(benches);
