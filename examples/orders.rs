//! The classic order aggregate on annal: commands checked against real rules,
//! events appended with optimistic concurrency, snapshots every 100 events, a
//! revenue-per-customer projection rebuilt sequentially and in parallel, and a
//! temporal query ("what did this order look like before payment").
//!
//! Run: `cargo run --release --example orders [ORDERS] [BIG]` (defaults 20,000
//! orders, and one long order of 2,000 items; `BIG` = 100000 loads a
//! 100,000-event stream with and without its snapshot).

use std::collections::HashMap;
use std::time::Instant;

use annal::{Aggregate, AsOf, Direction, Event, Log, Options, Projection, RecordRef, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum OrderEvent {
    OrderPlaced { customer: String },
    ItemAdded { sku: String, cents: u64 },
    PaymentConfirmed { cents: u64 },
    OrderShipped { carrier: String },
}

impl Event for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::ItemAdded { .. } => "ItemAdded",
            OrderEvent::PaymentConfirmed { .. } => "PaymentConfirmed",
            OrderEvent::OrderShipped { .. } => "OrderShipped",
        }
    }
}

enum Command {
    Place { customer: String },
    AddItem { sku: String, cents: u64 },
    ConfirmPayment { cents: u64 },
    Ship { carrier: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
enum Status {
    #[default]
    New,
    Placed,
    Paid,
    Shipped,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    status: Status,
    customer: String,
    items: u64,
    total_cents: u64,
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = Command;
    type Error = String;
    const SNAPSHOT_VERSION: u32 = 1;

    fn handle(&self, command: &Command) -> Result<Vec<OrderEvent>, String> {
        use Status::*;
        match (command, self.status) {
            (Command::Place { customer }, New) => Ok(vec![OrderEvent::OrderPlaced {
                customer: customer.clone(),
            }]),
            (Command::Place { .. }, _) => Err("the order is already placed".into()),
            (Command::AddItem { sku, cents }, Placed) => Ok(vec![OrderEvent::ItemAdded {
                sku: sku.clone(),
                cents: *cents,
            }]),
            (Command::AddItem { .. }, New) => Err("place the order first".into()),
            (Command::AddItem { .. }, _) => Err("no items can be added after payment".into()),
            (Command::ConfirmPayment { cents }, Placed) if self.items == 0 => {
                let _ = cents;
                Err("nothing to pay for".into())
            }
            (Command::ConfirmPayment { cents }, Placed) if *cents != self.total_cents => Err(format!(
                "payment of {cents} does not match the total {}",
                self.total_cents
            )),
            (Command::ConfirmPayment { cents }, Placed) => Ok(vec![OrderEvent::PaymentConfirmed { cents: *cents }]),
            (Command::ConfirmPayment { .. }, _) => Err("the order cannot be paid now".into()),
            (Command::Ship { carrier }, Paid) => Ok(vec![OrderEvent::OrderShipped {
                carrier: carrier.clone(),
            }]),
            (Command::Ship { .. }, Shipped) => Err("already shipped".into()),
            (Command::Ship { .. }, _) => Err("no shipping before payment".into()),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced { customer } => {
                self.status = Status::Placed;
                self.customer = customer.clone();
            }
            OrderEvent::ItemAdded { cents, .. } => {
                self.items += 1;
                self.total_cents += cents;
            }
            OrderEvent::PaymentConfirmed { .. } => self.status = Status::Paid,
            OrderEvent::OrderShipped { .. } => self.status = Status::Shipped,
        }
    }
}

/// Revenue per customer: per order stream, its customer and what was paid,
/// merged per stream (so it can be folded in chunks or per stream).
struct Revenue;

#[derive(Default, PartialEq, Debug)]
struct RevenueModel {
    orders: HashMap<String, (Option<String>, u64)>,
}

impl RevenueModel {
    fn per_customer(&self) -> HashMap<&str, u64> {
        let mut out = HashMap::new();
        for (customer, paid) in self.orders.values() {
            if let Some(c) = customer {
                *out.entry(c.as_str()).or_default() += paid;
            }
        }
        out
    }
}

impl Projection for Revenue {
    type Model = RevenueModel;

    fn empty(&self) -> RevenueModel {
        RevenueModel::default()
    }

    fn apply(&self, model: &mut RevenueModel, record: &RecordRef<'_>) {
        let Ok(event) = annal::typed::decode::<OrderEvent>(record) else {
            return;
        };
        let entry = || (None, 0);
        match event {
            OrderEvent::OrderPlaced { customer } => {
                model.orders.entry(record.stream().to_owned()).or_insert_with(entry).0 = Some(customer);
            }
            OrderEvent::PaymentConfirmed { cents } => {
                model.orders.entry(record.stream().to_owned()).or_insert_with(entry).1 += cents;
            }
            _ => {}
        }
    }

    fn merge(&self, mut earlier: RevenueModel, later: RevenueModel) -> RevenueModel {
        for (stream, (customer, paid)) in later.orders {
            let e = earlier.orders.entry(stream).or_insert((None, 0));
            if customer.is_some() {
                e.0 = customer;
            }
            e.1 += paid;
        }
        earlier
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let big_items: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let tmp = tempfile::Builder::new().prefix("annal-orders-").tempdir()?;
    let log = Log::open_with(tmp.path(), Options::default().segment_size(64 << 20))?;
    let repo = Repository::<Order>::new(&log).snapshot_every(100, 2);
    println!("annal orders example: {orders} orders in {}", tmp.path().display());

    // Commands: place, add 1..=6 items, pay, ship; one long order of 2,000 items.
    let start = Instant::now();
    let mut executed = 0u64;
    let mut rejected = 0u64;
    for i in 0..orders {
        let stream = format!("order-{i}");
        let customer = format!("customer-{}", i % 500);
        repo.execute(&stream, &Command::Place { customer })?;
        let items = 1 + i % 6;
        for k in 0..items {
            let sku = format!("sku-{k}");
            repo.execute(
                &stream,
                &Command::AddItem {
                    sku,
                    cents: 100 * (k + 1),
                },
            )?;
        }
        // A rule at work: no shipping before payment.
        if repo.execute(&stream, &Command::Ship { carrier: "DHL".into() }).is_err() {
            rejected += 1;
        }
        let total: u64 = (0..items).map(|k| 100 * (k + 1)).sum();
        repo.execute(&stream, &Command::ConfirmPayment { cents: total })?;
        // And no items after payment.
        if repo
            .execute(
                &stream,
                &Command::AddItem {
                    sku: "late".into(),
                    cents: 1,
                },
            )
            .is_err()
        {
            rejected += 1;
        }
        if i % 2 == 0 {
            repo.execute(&stream, &Command::Ship { carrier: "DHL".into() })?;
        }
        executed += items + 3 + (i % 2 == 0) as u64;
    }
    let big = "order-big";
    repo.execute(
        big,
        &Command::Place {
            customer: "customer-vip".into(),
        },
    )?;
    for k in 0..big_items {
        repo.execute(
            big,
            &Command::AddItem {
                sku: format!("bulk-{k}"),
                cents: 5,
            },
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "commands:   {executed} executed, {rejected} rejected by the rules, {} events in {secs:.2} s ({:.0} commands/s)",
        log.next_position(),
        (executed + rejected) as f64 / secs
    );

    // Load the long order with and without its snapshot.
    let start = Instant::now();
    let with = repo.load(big)?;
    let t_with = start.elapsed();
    let plain = Repository::<Order>::new(&log).ignore_snapshots();
    let start = Instant::now();
    let without = plain.load(big)?;
    let t_without = start.elapsed();
    assert_eq!(with.state, without.state, "snapshots never change the state");
    println!(
        "load:       {big} ({} events): {:?} from the snapshot at version {:?} + {} events, {:?} replaying all {}",
        with.version.map_or(0, |v| v + 1),
        t_with,
        with.snapshot_version,
        with.replayed,
        t_without,
        without.replayed
    );

    // Temporal query: the order as it was just before payment.
    let view = log.view()?;
    let stream = "order-5";
    let paid_at = view.read_stream(stream, 0, Direction::Forward, u64::MAX).find_map(|r| {
        r.ok()
            .filter(|r| r.event_type() == "PaymentConfirmed")
            .map(|r| r.stream_version())
    });
    if let Some(v) = paid_at {
        let start = Instant::now();
        let before = repo.load_as_of(stream, AsOf::Version(v - 1))?;
        let now = repo.load(stream)?;
        println!(
            "temporal:   {stream} before payment: {:?}, {} items, {} cents; now: {:?} ({:?})",
            before.state.status,
            before.state.items,
            before.state.total_cents,
            now.state.status,
            start.elapsed()
        );
    }

    // The revenue projection, sequentially and in parallel.
    let start = Instant::now();
    let seq = view.rebuild(&Revenue)?;
    let t_seq = start.elapsed();
    let start = Instant::now();
    let par = view.par_rebuild(&Revenue)?;
    let t_par = start.elapsed();
    let start = Instant::now();
    let by_stream = view.par_rebuild_by_stream(&Revenue)?;
    let t_stream = start.elapsed();
    assert_eq!(seq, par, "parallel chunks give the sequential result");
    assert_eq!(seq, by_stream, "per-stream folding gives the sequential result");
    let revenue = seq.per_customer();
    let mut top: Vec<(&&str, &u64)> = revenue.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "projection: revenue of {} customers over {} events: sequential {t_seq:?}, parallel chunks {t_par:?}, per stream {t_stream:?}",
        revenue.len(),
        view.next_position()
    );
    for (c, cents) in top.iter().take(3) {
        println!("            {c}: {:.2}", **cents as f64 / 100.0);
    }
    log.close()?;
    Ok(())
}
