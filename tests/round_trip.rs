//! Property: whatever sequence of appends, rolls and reopens, the log reads back
//! exactly what was appended (positions, streams, versions, types, bytes, ids,
//! schema versions), `read_all(k)` starts at `k`, timestamps never decrease,
//! and a failed optimistic-concurrency check changes nothing.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{Clock, Durability, Error, EventData, ExpectedVersion, Log, Options, Uuid};
use common::{Rec, read_all};
use proptest::prelude::*;

const STREAMS: [&str; 4] = ["order-1", "order-2", "cart", "流-7"];
const TYPES: [&str; 4] = ["Placed", "ItemAdded", "Ü", "a-rather-long-event-type-name"];
const SEGMENT_SIZE: u64 = 4096;

#[derive(Debug, Clone)]
struct Ev {
    ty: usize,
    payload: Vec<u8>,
    metadata: Vec<u8>,
    id: Option<u128>,
    schema: u32,
}

/// How the append states its expectation (resolved against the model).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    /// NoStream or StreamExists, whichever is right.
    RightShape,
    /// Exact(current) (or NoStream for a new stream).
    RightExact,
    /// Exact(something else).
    WrongExact(u64),
    /// NoStream or StreamExists, whichever is wrong.
    WrongShape,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        events: Vec<Ev>,
        expect: Expect,
    },
    /// Close and reopen, then verify, reading from `k % (len + 1)`.
    Reopen { k: u64 },
}

/// 0 to 299 bytes, mostly short (so that several batches share a segment).
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..32),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0..TYPES.len(),
        bytes(),
        bytes(),
        prop::option::of(any::<u128>()),
        any::<u32>(),
    )
        .prop_map(|(ty, payload, metadata, id, schema)| Ev {
            ty,
            payload,
            metadata,
            id,
            schema,
        })
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        3 => Just(Expect::Any),
        2 => Just(Expect::RightShape),
        3 => Just(Expect::RightExact),
        1 => (0u64..4).prop_map(Expect::WrongExact),
        1 => Just(Expect::WrongShape),
    ]
}

/// 1 to 19 events, mostly few.
fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop_oneof![
        3 => prop::collection::vec(ev(), 1..4),
        1 => prop::collection::vec(ev(), 1..20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS.len(), events(), expect())
            .prop_map(|(stream, events, expect)| Op::Append { stream, events, expect }),
        1 => any::<u64>().prop_map(|k| Op::Reopen { k }),
    ]
}

/// What the model knows of one record; the id and timestamp of a record whose
/// id the log generated are learnt at the first read and pinned afterwards.
#[derive(Debug, Clone)]
struct Model {
    position: u64,
    stream: String,
    stream_version: u64,
    event_type: String,
    payload: Vec<u8>,
    metadata: Vec<u8>,
    id: Option<Uuid>,
    schema_version: u32,
    batch: usize,
    seen: Option<(Uuid, u64)>,
}

fn opts(durability: Durability, clock: &Option<Clock>) -> Options {
    let o = Options::default().segment_size(SEGMENT_SIZE).durability(durability);
    match clock {
        Some(c) => o.clock(c.clone()),
        None => o,
    }
}

/// A clock that jumps back and forth (within about a millisecond of a fixed
/// instant): timestamps must still never decrease (spec 9).
fn erratic_clock() -> Clock {
    let calls = Arc::new(AtomicU64::new(0));
    Arc::new(move || {
        let c = calls.fetch_add(1, Ordering::Relaxed);
        1_700_000_000_000_000_000 + (c.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44)
    })
}

/// Resolve `e` against the stream's current version: the condition, and
/// whether it must succeed.
fn resolve(e: Expect, current: Option<u64>) -> (ExpectedVersion, bool) {
    match (e, current) {
        (Expect::Any, _) => (ExpectedVersion::Any, true),
        (Expect::RightShape, None) => (ExpectedVersion::NoStream, true),
        (Expect::RightShape, Some(_)) => (ExpectedVersion::StreamExists, true),
        (Expect::RightExact, None) => (ExpectedVersion::NoStream, true),
        (Expect::RightExact, Some(v)) => (ExpectedVersion::Exact(v), true),
        (Expect::WrongExact(d), None) => (ExpectedVersion::Exact(d), false),
        (Expect::WrongExact(d), Some(v)) => {
            // Anything but v: below it when possible, else above.
            let wrong = if v > d { v - d - 1 } else { v + d + 1 };
            (ExpectedVersion::Exact(wrong), false)
        }
        (Expect::WrongShape, None) => (ExpectedVersion::StreamExists, false),
        (Expect::WrongShape, Some(_)) => (ExpectedVersion::NoStream, false),
    }
}

/// Check the log against the model: full replay through the writer's view and
/// through a `Reader`, and a replay from `k`.
fn verify(log: &Log, dir: &Path, model: &mut [Model], k: u64) {
    let view = log.view().expect("view");
    assert_eq!(view.next_position(), model.len() as u64, "view.next_position");
    let got = read_all(&view, 0).expect("read_all(0)");
    assert_eq!(got.len(), model.len(), "number of records");
    let mut last_ts = 0;
    for (i, (g, m)) in got.iter().zip(model.iter_mut()).enumerate() {
        assert_eq!(g.position, i as u64, "position of record {i}");
        assert_eq!(g.position, m.position);
        assert_eq!(g.stream, m.stream, "stream of record {i}");
        assert_eq!(g.stream_version, m.stream_version, "stream version of record {i}");
        assert_eq!(g.event_type, m.event_type, "type of record {i}");
        assert_eq!(g.payload, m.payload, "payload of record {i}");
        assert_eq!(g.metadata, m.metadata, "metadata of record {i}");
        assert_eq!(g.schema_version, m.schema_version, "schema version of record {i}");
        match m.id {
            Some(id) => assert_eq!(g.event_id, id, "id of record {i}"),
            None => assert_eq!(
                g.event_id.get_version_num(),
                7,
                "a generated id is a UUID v7 (record {i})"
            ),
        }
        match m.seen {
            Some((id, ts)) => assert_eq!(
                (g.event_id, g.timestamp),
                (id, ts),
                "id/timestamp of record {i} changed"
            ),
            None => m.seen = Some((g.event_id, g.timestamp)),
        }
        assert!(g.timestamp >= last_ts, "timestamp of record {i} goes back");
        last_ts = g.timestamp;
    }
    // One timestamp per batch.
    for w in got.windows(2).zip(model.windows(2)) {
        if w.1[0].batch == w.1[1].batch {
            assert_eq!(w.0[0].timestamp, w.0[1].timestamp, "one timestamp per batch");
        }
    }
    let k = k % (got.len() as u64 + 1);
    let tail = read_all(&view, k).expect("read_all(k)");
    assert_eq!(
        tail.first().map(|r| r.position),
        (k < got.len() as u64).then_some(k),
        "read_all({k}) start"
    );
    assert_eq!(tail, got[k as usize..], "read_all({k})");

    let reader = annal::Reader::open(dir).expect("Reader::open");
    let rview = reader.view().expect("Reader::view");
    let rgot: Vec<Rec> = read_all(&rview, 0).expect("Reader read_all(0)");
    assert_eq!(rgot, got, "Reader sees what the writer sees");
    assert_eq!(read_all(&rview, k).expect("Reader read_all(k)"), got[k as usize..]);
}

fn run(ops: Vec<Op>, durability: Durability, clock: Option<Clock>, final_k: u64) {
    let dir = common::scratch();
    let mut log = Log::open_with(dir.path(), opts(durability, &clock)).expect("create");
    assert!(log.recovery().created);
    let mut model: Vec<Model> = Vec::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut batch = 0;
    for op in ops {
        match op {
            Op::Append { stream, events, expect } => {
                let name = STREAMS[stream];
                let current = versions.get(name).copied();
                assert_eq!(log.stream_version(name).unwrap(), current);
                let (expected, ok) = resolve(expect, current);
                let data: Vec<EventData<'_>> = events
                    .iter()
                    .map(|e| {
                        let d = EventData::new(TYPES[e.ty], e.payload.as_slice())
                            .with_metadata(e.metadata.as_slice())
                            .with_schema_version(e.schema);
                        match e.id {
                            Some(id) => d.with_id(Uuid::from_u128(id)),
                            None => d,
                        }
                    })
                    .collect();
                let before = log.next_position();
                let res = log.append(name, expected, &data);
                if !ok {
                    match res {
                        Err(Error::WrongExpectedVersion {
                            stream,
                            expected: e,
                            actual,
                        }) => {
                            assert_eq!((stream.as_str(), e, actual), (name, expected, current));
                        }
                        other => panic!(
                            "append with {expected:?} on {current:?}: expected WrongExpectedVersion, got {other:?}"
                        ),
                    }
                    assert_eq!(log.next_position(), before, "a rejected append changed the log");
                    assert_eq!(
                        log.stream_version(name).unwrap(),
                        current,
                        "a rejected append changed the stream"
                    );
                    assert_eq!(log.view().expect("view").next_position(), model.len() as u64);
                    continue;
                }
                let r = res.unwrap_or_else(|e| panic!("append with {expected:?} on {current:?}: {e}"));
                let n = events.len() as u64;
                let first_version = current.map_or(0, |v| v + 1);
                assert_eq!(r.first_position, model.len() as u64);
                assert_eq!(r.last_position, r.first_position + n - 1);
                assert_eq!(r.stream_version, first_version + n - 1);
                for (i, e) in events.iter().enumerate() {
                    model.push(Model {
                        position: r.first_position + i as u64,
                        stream: name.to_owned(),
                        stream_version: first_version + i as u64,
                        event_type: TYPES[e.ty].to_owned(),
                        payload: e.payload.clone(),
                        metadata: e.metadata.clone(),
                        id: e.id.map(Uuid::from_u128),
                        schema_version: e.schema,
                        batch,
                        seen: None,
                    });
                }
                batch += 1;
                versions.insert(name, r.stream_version);
                assert_eq!(log.next_position(), model.len() as u64);
            }
            Op::Reopen { k } => {
                log.close().expect("close");
                log = Log::open_with(dir.path(), opts(durability, &clock)).expect("reopen");
                assert_eq!(
                    log.recovery(),
                    &annal::Recovery::default(),
                    "a clean reopen recovers nothing"
                );
                assert_eq!(log.next_position(), model.len() as u64);
                for (s, v) in &versions {
                    assert_eq!(log.stream_version(s).unwrap(), Some(*v), "stream {s} after reopen");
                }
                verify(&log, dir.path(), &mut model, k);
            }
        }
    }
    verify(&log, dir.path(), &mut model, final_k);
    log.close().expect("close");
    let log = Log::open_with(dir.path(), opts(durability, &clock)).expect("final reopen");
    verify(&log, dir.path(), &mut model, final_k / 3);
    let view = log.view().expect("view");
    let bytes: u64 = model
        .iter()
        .map(|m| m.payload.len() as u64 + m.metadata.len() as u64)
        .sum();
    if bytes > 4 * SEGMENT_SIZE {
        assert!(
            view.segment_count() > 1,
            "{bytes} bytes of events, yet no segment rolled"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn appends_rolls_and_reopens_read_back_exactly(
        ops in prop::collection::vec(op(), 1..30),
        fsync in any::<bool>(),
        erratic in any::<bool>(),
        final_k in any::<u64>(),
    ) {
        let durability = if fsync { Durability::Fsync } else { Durability::Buffered };
        run(ops, durability, erratic.then(erratic_clock), final_k);
    }
}
