//! A cqrs-es command round trip on annal against cqrs-es's in-memory store
//! (feature `cqrs-es`, issue 17), measured in the same group.
//!
//! Group `cqrs_round_trip`: one `CqrsFramework::execute` of a bank-account
//! command per iteration: load the aggregate (its events), handle the
//! command, persist the event it produces. Accounts rotate every 10
//! commands (an open, then deposits), so every load reads at most 9 events
//! whatever the iteration count. The event store mode (no snapshots), one
//! tokio current-thread runtime, `block_on` per command.
//!
//! * `mem_store`: cqrs-es's `MemStore` (a `HashMap` behind a lock);
//! * `annal_buffered`: `annal::cqrs::annal_cqrs` over a log with
//!   `Durability::Buffered` (the append is written, not fsynced);
//! * `annal_fsync`: the same with `Durability::Fsync` (one fsync per
//!   command: nothing else appends concurrently).
//!
//! `cargo bench --all-features --bench cqrs -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use annal::Durability;
use annal::cqrs::annal_cqrs;
use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventStore};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct BankAccount {
    opened: bool,
    balance: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Command {
    Open { account_id: String },
    Deposit { amount: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    AccountOpened { account_id: String },
    CustomerDepositedMoney { amount: f64, balance: f64 },
}

impl DomainEvent for Event {
    fn event_type(&self) -> String {
        match self {
            Event::AccountOpened { .. } => "AccountOpened".into(),
            Event::CustomerDepositedMoney { .. } => "CustomerDepositedMoney".into(),
        }
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Error = Refused;
    type Services = ();

    async fn handle(&mut self, command: Command, _: &(), sink: &EventSink<Self>) -> Result<(), Refused> {
        match command {
            Command::Open { .. } if self.opened => return Err(Refused("account already open")),
            Command::Open { account_id } => sink.write(Event::AccountOpened { account_id }, self).await,
            Command::Deposit { amount } => {
                let balance = self.balance + amount;
                sink.write(Event::CustomerDepositedMoney { amount, balance }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::AccountOpened { .. } => self.opened = true,
            Event::CustomerDepositedMoney { balance, .. } => self.balance = balance,
        }
    }
}

/// Command `i`: every 10th opens account `a<i/10>`, the others deposit.
fn command(i: u64) -> (String, Command) {
    let id = format!("a{}", i / 10);
    match i % 10 {
        0 => (id.clone(), Command::Open { account_id: id }),
        _ => (id, Command::Deposit { amount: 1.0 }),
    }
}

fn run<ES: EventStore<BankAccount>>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    cqrs: CqrsFramework<BankAccount, ES>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut i = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let (id, cmd) = command(i);
            i += 1;
            rt.block_on(cqrs.execute(&id, cmd)).expect("command");
            black_box(i)
        })
    });
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("cqrs_round_trip");
    run(
        &mut g,
        "mem_store",
        CqrsFramework::new(MemStore::<BankAccount>::default(), vec![], ()),
    );
    for (name, durability) in [
        ("annal_buffered", Durability::Buffered),
        ("annal_fsync", Durability::Fsync),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = annal::Options::default()
            .durability(durability)
            .open(dir.path())
            .expect("open");
        run(&mut g, name, annal_cqrs::<BankAccount>(log, vec![], ()));
    }
    g.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
