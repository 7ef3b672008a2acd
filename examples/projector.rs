//! A projection service that survives `kill -9` (issue 19): it keeps the
//! revenue per customer of a log's `order` events up to date, from another
//! process than the writer's (through a `Reader`), saving its model with its
//! position every 100 events or every second. Killed at any moment and
//! started again, it continues from what it saved: its totals equal a
//! rebuild of the log, every event counted exactly once.
//!
//! ```sh
//! cargo run --example projector -- ./shop &              # the service
//! annal append ./shop --stream order-1 --type Placed --data '{"customer":"ada","total":42}'
//! kill -9 %1; cargo run --example projector -- ./shop    # continues, nothing counted twice
//! ```
//!
//! `cargo run --example projector -- DIR [--once]`: with `--once` it catches
//! up, prints the totals and exits (what the test of this example runs).

use std::collections::BTreeMap;
use std::time::Duration;

use annal::{Projection, Reader, RecordRef};

/// Revenue per customer, from `{"customer": "...", "total": N}` payloads of
/// the events of `order-*` streams; other events and payloads are passed
/// over.
pub struct Revenue;

impl Projection for Revenue {
    type Model = BTreeMap<String, u64>;

    fn empty(&self) -> Self::Model {
        BTreeMap::new()
    }

    fn apply(&self, m: &mut Self::Model, r: &RecordRef<'_>) {
        if annal::category_of(r.stream()) != Some("order") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(r.payload()) else {
            return;
        };
        if let (Some(c), Some(t)) = (v["customer"].as_str(), v["total"].as_u64()) {
            *m.entry(c.to_owned()).or_default() += t;
        }
    }

    fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
        for (c, t) in b {
            *a.entry(c).or_default() += t;
        }
        a
    }
}

fn print(m: &BTreeMap<String, u64>, position: u64) {
    let line: Vec<String> = m.iter().map(|(c, t)| format!("{c}={t}")).collect();
    println!("revenue after position {position}: {}", line.join(" "));
}

fn main() -> annal::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "./shop".to_owned());
    let once = args.any(|a| a == "--once");
    run(&dir, once)
}

/// Run the service on the log in `dir`: catch up (printing the totals),
/// then, unless `once`, fold new events as they come, printing the totals
/// after each step that folded some.
pub fn run(dir: &str, once: bool) -> annal::Result<()> {
    let mut runner = Reader::open(dir)?
        .projection("revenue", Revenue)
        .save_every(100)
        .save_interval(Duration::from_secs(1))
        .open()?;
    print(runner.model(), runner.position());
    if once {
        return runner.close();
    }
    loop {
        if runner.step(Duration::from_millis(200))? > 0 {
            print(runner.model(), runner.position());
        }
    }
}
