//! Typed events: postcard payloads decoded zero-copy from the mapping,
//! upcasting of older schema versions, and time-based positions.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::typed::{decode, encode};
use annal::{Event, EventData, ExpectedVersion, Log, Options, Typed, Upcasters};
use serde::{Deserialize, Serialize};

struct Counting;

thread_local! {
    // Per thread: the tests of this file run in parallel.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

fn count() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum OrderEvent<'a> {
    Placed { customer: &'a str, note: &'a [u8] },
    ItemAdded { sku: &'a str, cents: u64 },
}

impl Event for OrderEvent<'_> {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "OrderPlaced",
            OrderEvent::ItemAdded { .. } => "ItemAdded",
        }
    }
}

#[test]
fn decoding_borrows_from_the_mapping_and_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).unwrap();
    for i in 0..100u64 {
        let customer = format!("customer-{i}");
        let sku = format!("sku-{i}");
        let events = [
            OrderEvent::Placed {
                customer: &customer,
                note: b"fragile",
            },
            OrderEvent::ItemAdded { sku: &sku, cents: i },
        ];
        log.append_typed(&format!("order-{i}"), ExpectedVersion::NoStream, &events)
            .unwrap();
    }
    let view = log.view().unwrap();
    let ranges: Vec<std::ops::Range<usize>> = view
        .segment_bytes()
        .map(|b| b.expect("segment maps"))
        .map(|b| b.as_ptr() as usize..b.as_ptr() as usize + b.len())
        .collect();
    let inside = |p: *const u8| ranges.iter().any(|r| r.contains(&(p as usize)));
    // What stream metadata hides is looked up once per view (spec 3.7), on
    // its first read of the whole log: not the cost per event counted here.
    assert!(view.read_all(0).next().is_some());
    let before = allocs();
    let (mut n, mut cents) = (0u64, 0u64);
    for rec in view.read_all(0) {
        let rec = rec.unwrap();
        match decode::<OrderEvent<'_>>(&rec).unwrap() {
            OrderEvent::Placed { customer, note } => {
                assert!(
                    inside(customer.as_ptr()) && inside(note.as_ptr()),
                    "borrowed from the mapping"
                );
                assert_eq!(note, b"fragile");
                assert_eq!(rec.event_type(), "OrderPlaced");
            }
            OrderEvent::ItemAdded { sku, cents: c } => {
                assert!(inside(sku.as_ptr()));
                cents += c;
            }
        }
        n += 1;
    }
    let allocs = allocs() - before;
    assert_eq!((n, cents), (200, (0..100).sum()));
    assert_eq!(allocs, 0, "typed replay of {n} events allocated {allocs} times");
}

/// Version 2 of a "Renamed" event; version 0 held the name only, version 1
/// added the old name, version 2 a reason.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Renamed {
    name: String,
    old: String,
    reason: String,
}

impl Event for Renamed {
    const SCHEMA_VERSION: u32 = 2;
    fn event_type(&self) -> &'static str {
        "Renamed"
    }
}

fn enc<T: Serialize>(v: &T) -> annal::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| annal::Error::Encode(e.to_string()))
}

fn dec<'a, T: Deserialize<'a>>(b: &'a [u8]) -> annal::Result<T> {
    postcard::from_bytes(b).map_err(|e| annal::Error::Encode(e.to_string()))
}

#[test]
fn upcasters_bring_old_payloads_to_the_current_form() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let v0 = EventData::new("Renamed", enc(&"ann".to_string()).unwrap()).with_schema_version(0);
    let v1 = EventData::new("Renamed", enc(&("bob".to_string(), "ann".to_string())).unwrap()).with_schema_version(1);
    log.append("user-1", ExpectedVersion::Any, &[v0, v1]).unwrap();
    let now = Renamed {
        name: "cy".into(),
        old: "bob".into(),
        reason: "typo".into(),
    };
    log.append("user-1", ExpectedVersion::Any, &[encode(&now).unwrap()])
        .unwrap();

    let mut up = Upcasters::new();
    up.register("Renamed", 0, |b| enc(&(dec::<String>(b)?, String::new())));
    up.register("Renamed", 1, |b| {
        let (name, old): (String, String) = dec(b)?;
        enc(&Renamed {
            name,
            old,
            reason: "unknown".into(),
        })
    });
    let view = log.view().unwrap();
    let got: Vec<(u32, Renamed)> = view
        .read_all(0)
        .map(|r| {
            let t = Typed::new(r.unwrap(), &up).unwrap();
            (t.record().schema_version(), t.decode::<Renamed>().unwrap())
        })
        .collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "stored versions are untouched"
    );
    assert_eq!(
        got.into_iter().map(|g| g.1).collect::<Vec<_>>(),
        [
            Renamed {
                name: "ann".into(),
                old: String::new(),
                reason: "unknown".into()
            },
            Renamed {
                name: "bob".into(),
                old: "ann".into(),
                reason: "unknown".into()
            },
            now,
        ]
    );
    // A payload that is not what its type says is an error naming the event.
    let bad = EventData::new("Renamed", vec![0xff; 3]).with_schema_version(2);
    log.append("user-1", ExpectedVersion::Any, &[bad]).unwrap();
    let view = log.view().unwrap();
    let last = view.read_all(3).next().unwrap().unwrap();
    let e = Typed::new(last, &up).unwrap().decode::<Renamed>().unwrap_err();
    assert!(matches!(e, annal::Error::Decode { position: 3, .. }), "{e}");
}

#[test]
fn position_at_time_is_found_by_search_across_segments() {
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(2048)
        .clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let log = Log::open_with(dir.path(), opts).unwrap();
    // Timestamps 10, 20, 30, ... with some repeated (a clock that stalls).
    let mut stamps = Vec::new();
    for i in 0..300u64 {
        let t = 10 * (i - i % 3) + 10;
        now.store(t, Ordering::SeqCst);
        log.append("s-1", ExpectedVersion::Any, &[EventData::new("E", vec![0u8; 40])])
            .unwrap();
        stamps.push(t);
    }
    let view = log.view().unwrap();
    assert!(view.segment_count() > 5);
    for t in [0, 5, 10, 15, 20, 29, 30, 1000, 1005, 2980, 2990, 3000, 5000] {
        let want = stamps.iter().filter(|&&s| s <= t).count() as u64;
        assert_eq!(view.position_at_time(t).unwrap(), want, "time {t}");
        let upto = view.read_all(0).until(want).count() as u64;
        assert_eq!(upto, want);
    }
}
