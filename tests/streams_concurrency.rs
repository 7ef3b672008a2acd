//! Streams under concurrency: 8 threads append to many streams (each to its
//! own streams with `Exact` and `Any`, and all of them to a few shared streams
//! with `Any` and with optimistic `Exact` retries), with segments small enough
//! to roll all the time, while reader threads take views (`Log::view` and a
//! `Reader`) and read random streams. Every read stream's versions are
//! contiguous from 0 and agree with what the appenders were acknowledged;
//! everything acknowledged before a view was taken is in it; category reads
//! agree with stream reads of the same view. At the end, and after a reopen,
//! every stream is exactly what the appenders were acknowledged.

mod model;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Log, LogView, Options, Reader};
use model::{Rng, catch_quiet, scratch};

const WRITERS: usize = 8;
const OWN_STREAMS: usize = 5;
const SHARED_STREAMS: usize = 4;

/// Per stream: version -> (position, payload).
type Acked = Mutex<HashMap<String, BTreeMap<u64, (u64, Vec<u8>)>>>;

fn own_stream(t: usize, k: usize) -> String {
    format!("w{t}-{k}")
}

fn shared_stream(k: usize) -> String {
    format!("shared-{k}")
}

fn all_streams() -> Vec<String> {
    let mut v: Vec<String> = (0..WRITERS)
        .flat_map(|t| (0..OWN_STREAMS).map(move |k| own_stream(t, k)))
        .collect();
    v.extend((0..SHARED_STREAMS).map(shared_stream));
    v
}

fn record(acked: &Acked, stream: &str, r: &annal::AppendResult, payloads: Vec<Vec<u8>>) {
    let n = payloads.len() as u64;
    assert_eq!(r.last_position - r.first_position + 1, n, "{stream}: {r:?}");
    let mut a = acked.lock().expect("acked");
    let m = a.entry(stream.to_owned()).or_default();
    for (j, p) in payloads.into_iter().enumerate() {
        let v = r.stream_version + 1 - n + j as u64;
        let prev = m.insert(v, (r.first_position + j as u64, p));
        assert!(prev.is_none(), "{stream}: version {v} acknowledged twice");
    }
}

fn batch(t: usize, i: usize, n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|j| {
            let mut p = format!("{t}:{i}:{j}:").into_bytes();
            p.extend(rng.bytes_below(60).iter().map(|b| b'a' + b % 26));
            p
        })
        .collect()
}

fn append(
    log: &Log,
    stream: &str,
    expected: ExpectedVersion,
    payloads: &[Vec<u8>],
) -> annal::Result<annal::AppendResult> {
    let evs: Vec<EventData<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(j, p)| EventData::new(if j % 2 == 0 { "A" } else { "B" }, p.as_slice()))
        .collect();
    log.append(stream, expected, &evs)
}

fn writer(log: &Log, acked: &Acked, t: usize, batches: usize) -> u64 {
    let mut rng = Rng::new(t as u64 * 7919);
    let mut tracked: Vec<Option<u64>> = vec![None; OWN_STREAMS];
    let mut conflicts = 0u64;
    for i in 0..batches {
        let n = 1 + rng.below(3) as usize;
        let payloads = batch(t, i, n, &mut rng);
        if rng.below(10) < 7 {
            let k = rng.below(OWN_STREAMS as u64) as usize;
            let s = own_stream(t, k);
            if let Some(v) = tracked[k]
                && rng.below(20) == 0
            {
                // A wrong expectation on a stream only this thread writes.
                match append(log, &s, ExpectedVersion::Exact(v + 1), &payloads) {
                    Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(v), "{s}"),
                    other => panic!("{s}: Exact({}) must fail, got {other:?}", v + 1),
                }
            }
            let expected = match (tracked[k], rng.below(2)) {
                (Some(v), 0) => ExpectedVersion::Exact(v),
                (None, 0) => ExpectedVersion::NoStream,
                _ => ExpectedVersion::Any,
            };
            let r = append(log, &s, expected, &payloads)
                .unwrap_or_else(|e| panic!("{s}: append with {expected:?} (tracked {:?}): {e}", tracked[k]));
            let want = tracked[k].map_or(n as u64 - 1, |v| v + n as u64);
            assert_eq!(r.stream_version, want, "{s}: version after append with {expected:?}");
            tracked[k] = Some(r.stream_version);
            record(acked, &s, &r, payloads);
        } else {
            let s = shared_stream(rng.below(SHARED_STREAMS as u64) as usize);
            if rng.below(2) == 0 {
                let r = append(log, &s, ExpectedVersion::Any, &payloads).unwrap_or_else(|e| panic!("{s}: {e}"));
                record(acked, &s, &r, payloads);
                continue;
            }
            // Optimistic: read the version, append expecting it, retry on conflict.
            loop {
                let v = log.stream_version(&s).expect("stream_version");
                // Give the other appenders a chance to get in between.
                std::thread::yield_now();
                let expected = v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                match append(log, &s, expected, &payloads) {
                    Ok(r) => {
                        assert_eq!(r.stream_version, v.map_or(n as u64 - 1, |v| v + n as u64), "{s}");
                        record(acked, &s, &r, payloads);
                        break;
                    }
                    Err(Error::WrongExpectedVersion { actual, .. }) => {
                        assert!(actual > v, "{s}: versions only grow: expected {v:?}, actual {actual:?}");
                        conflicts += 1;
                    }
                    Err(e) => panic!("{s}: {e}"),
                }
            }
        }
    }
    conflicts
}

/// Read `stream` forward through `view`: versions contiguous from 0,
/// everything in `before` (acknowledged before the view was taken) present,
/// and every event that is acknowledged by now equal to its acknowledgement.
fn check_stream_read(view: &LogView, acked: &Acked, stream: &str, before: usize, ctx: &str) -> usize {
    let mut got: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    for r in view.read_stream(stream, 0, Direction::Forward, u64::MAX) {
        let r = r.unwrap_or_else(|e| panic!("{ctx}: read {stream}: {e}"));
        assert_eq!(
            r.stream(),
            stream,
            "{ctx}: read_stream({stream}) returned position {} (version {}) of another stream after {} events",
            r.position(),
            r.stream_version(),
            got.len()
        );
        got.push((r.stream_version(), r.position(), r.payload().to_owned()));
    }
    for (i, (v, _, _)) in got.iter().enumerate() {
        assert_eq!(*v, i as u64, "{ctx}: {stream}: versions are not contiguous from 0");
    }
    assert!(
        got.len() >= before,
        "{ctx}: {stream}: {} events acknowledged before the view, only {} visible",
        before,
        got.len()
    );
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "{ctx}: {stream}: positions not increasing"
    );
    let version = view.stream_version(stream).expect("stream_version");
    assert_eq!(
        version,
        got.len().checked_sub(1).map(|v| v as u64),
        "{ctx}: {stream}: stream_version"
    );
    let back: Vec<u64> = view
        .read_stream(stream, u64::MAX, Direction::Backward, 3)
        .map(|r| r.map(|r| r.stream_version()))
        .collect::<annal::Result<_>>()
        .unwrap_or_else(|e| panic!("{ctx}: read {stream} backward: {e}"));
    let want: Vec<u64> = (0..got.len() as u64).rev().take(3).collect();
    assert_eq!(back, want, "{ctx}: {stream}: newest three, backward");
    let a = acked.lock().expect("acked");
    if let Some(m) = a.get(stream) {
        for (v, pos, payload) in &got {
            if let Some((apos, apayload)) = m.get(v) {
                assert_eq!((pos, payload), (apos, apayload), "{ctx}: {stream} version {v}");
            }
        }
    }
    got.len()
}

/// The category read agrees with the stream reads of the same view.
fn check_category(view: &LogView, category: &str, streams: &[String], ctx: &str) {
    let mut per: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut last = None;
    for r in view.read_category(category, 0) {
        let r = r.unwrap_or_else(|e| panic!("{ctx}: read_category({category}): {e}"));
        assert!(last < Some(r.position()), "{ctx}: category read out of order");
        last = Some(r.position());
        per.entry(r.stream().to_owned())
            .or_default()
            .push((r.stream_version(), r.position()));
    }
    for s in streams.iter().filter(|s| model::category_of(s) == Some(category)) {
        let want: Vec<(u64, u64)> = view
            .read_stream(s, 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| (r.stream_version(), r.position())))
            .collect::<annal::Result<_>>()
            .expect("read stream");
        assert_eq!(
            per.remove(s.as_str()).unwrap_or_default(),
            want,
            "{ctx}: {s} in category {category}"
        );
    }
    assert!(
        per.is_empty(),
        "{ctx}: category {category} holds other streams: {:?}",
        per.keys()
    );
}

enum ViewSource<'a> {
    Log(&'a Log),
    Reader(Reader),
}

/// Failures seen by the readers (they go on reading after one).
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

fn reader_loop(
    mut src: ViewSource<'_>,
    acked: &Acked,
    done: &AtomicBool,
    seed: u64,
    reads: &AtomicU64,
    fails: &Failures,
) {
    let streams = all_streams();
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    loop {
        let finished = done.load(Ordering::Acquire);
        let s = rng.pick(&streams).clone();
        let category = rng.below(8) == 0;
        let res = catch_quiet(|| {
            let before = acked.lock().expect("acked").get(&s).map_or(0, |m| m.len());
            let (view, ctx) = match &mut src {
                ViewSource::Log(log) => (log.view().expect("view"), format!("log view #{n}")),
                ViewSource::Reader(r) => (r.view().expect("reader view"), format!("reader view #{n}")),
            };
            check_stream_read(&view, acked, &s, before, &ctx);
            if category {
                let cat = model::category_of(&s).expect("category").to_owned();
                check_category(&view, &cat, &streams, &ctx);
            }
            assert!(view.index_damage().is_empty(), "{ctx}: {:?}", view.index_damage());
        });
        if let Err(msg) = res {
            fails.count.fetch_add(1, Ordering::Relaxed);
            let mut f = fails.first.lock().expect("failures");
            if f.len() < 12 {
                f.push(msg);
            }
        }
        n += 1;
        if finished {
            break;
        }
    }
    reads.fetch_add(n, Ordering::Relaxed);
}

/// Every stream is exactly what was acknowledged.
fn check_final(view: &LogView, acked: &Acked, ctx: &str) -> u64 {
    let a = acked.lock().expect("acked");
    let mut total = 0;
    for s in all_streams() {
        let want: Vec<(u64, u64, Vec<u8>)> = a
            .get(&s)
            .map(|m| m.iter().map(|(v, (p, d))| (*v, *p, d.clone())).collect())
            .unwrap_or_default();
        let got: Vec<(String, u64, u64, Vec<u8>)> = view
            .read_stream(&s, 0, Direction::Forward, u64::MAX)
            .map(|r| {
                r.map(|r| {
                    (
                        r.stream().to_owned(),
                        r.stream_version(),
                        r.position(),
                        r.payload().to_owned(),
                    )
                })
            })
            .collect::<annal::Result<_>>()
            .unwrap_or_else(|e| panic!("{ctx}: {s}: {e}"));
        let brief = |v: &[(&str, u64, u64)]| format!("{:?}", &v[..v.len().min(60)]);
        let got_b: Vec<(&str, u64, u64)> = got.iter().map(|g| (g.0.as_str(), g.1, g.2)).collect();
        let want_b: Vec<(&str, u64, u64)> = want.iter().map(|w| (s.as_str(), w.0, w.1)).collect();
        assert!(
            got.iter()
                .map(|g| (&g.0, g.1, g.2, &g.3))
                .eq(want.iter().map(|w| (&s, w.0, w.1, &w.2))),
            "{ctx}: {s}: events differ from the acknowledged ones\n got (stream, version, position): {}\nwant: {}",
            brief(&got_b),
            brief(&want_b)
        );
        assert_eq!(
            view.stream_version(&s).expect("version"),
            want.last().map(|w| w.0),
            "{ctx}: {s}"
        );
        total += want.len() as u64;
    }
    assert_eq!(
        view.next_position(),
        total,
        "{ctx}: every event belongs to an acknowledged append"
    );
    let mut positions: Vec<u64> = a.values().flat_map(|m| m.values().map(|(p, _)| *p)).collect();
    positions.sort_unstable();
    assert!(
        positions.iter().enumerate().all(|(i, p)| *p == i as u64),
        "{ctx}: positions 0..n"
    );
    total
}

fn run(durability: Durability, batches: usize) {
    let dir = scratch();
    let opts = || Options::default().segment_size(4096).durability(durability);
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let acked: Acked = Mutex::new(HashMap::new());
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let fails = Failures::default();
    let conflicts = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (log, acked) = (&log, &acked);
                sc.spawn(move || writer(log, acked, t, batches))
            })
            .collect();
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let (log, acked, done, reads, fails) = (&log, &acked, &done, &reads, &fails);
            readers.push(sc.spawn(move || reader_loop(ViewSource::Log(log), acked, done, 1000 + r, reads, fails)));
        }
        {
            let (acked, done, reads, fails) = (&acked, &done, &reads, &fails);
            let path = dir.path().to_owned();
            readers.push(sc.spawn(move || {
                let reader = Reader::open(&path).expect("reader");
                reader_loop(ViewSource::Reader(reader), acked, done, 2000, reads, fails)
            }));
        }
        let conflicts: u64 = writers.into_iter().map(|w| w.join().expect("writer panicked")).sum();
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("reader panicked");
        }
        conflicts
    });
    let total = check_final(&log.view().expect("view"), &acked, "end, live log");
    // The writer's own idea of each stream's version.
    for s in all_streams() {
        let want = acked
            .lock()
            .expect("acked")
            .get(&s)
            .and_then(|m| m.keys().last().copied());
        assert_eq!(log.stream_version(&s).expect("version"), want, "{s}");
    }
    log.close().expect("close");
    check_after_reopen(dir.path(), &acked, opts());
    let segments = model::files_with_ext(dir.path(), "seg").len();
    println!(
        "{durability:?}: {total} events in {segments} segments, {} reads during appends, {conflicts} optimistic conflicts",
        reads.load(Ordering::Relaxed)
    );
    assert!(segments > 20, "segments rolled during the run");
    let n = fails.count.load(Ordering::Relaxed);
    assert!(
        n == 0,
        "{durability:?}: {n} of {} reads during appends failed; the first ones:\n{}",
        reads.load(Ordering::Relaxed),
        fails.first.lock().expect("failures").join("\n")
    );
}

fn check_after_reopen(dir: &Path, acked: &Acked, opts: Options) {
    let reader = Reader::open(dir).expect("reader");
    check_final(&reader.view().expect("view"), acked, "after close, reader");
    let log = Log::open_with(dir, opts).expect("reopen");
    assert!(
        log.recovery().rebuilt_indexes.is_empty() && !log.recovery().rebuilt_stream_table,
        "{:?}",
        log.recovery()
    );
    // Versions straight from the stream table, before any read.
    for s in all_streams() {
        let want = acked
            .lock()
            .expect("acked")
            .get(&s)
            .and_then(|m| m.keys().last().copied());
        assert_eq!(log.stream_version(&s).expect("version"), want, "{s} after reopen");
        if let Some(v) = want {
            match append(&log, &s, ExpectedVersion::Exact(v + 1), &[b"x".to_vec()]) {
                Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(v), "{s}"),
                other => panic!("{s}: Exact({}) after reopen must fail, got {other:?}", v + 1),
            }
        }
    }
    check_final(&log.view().expect("view"), acked, "after reopen, log");
    log.close().expect("close");
}

#[test]
fn concurrent_appends_and_reads_buffered() {
    run(Durability::Buffered, 400);
}

#[test]
fn concurrent_appends_and_reads_fsync() {
    run(Durability::Fsync, 150);
}
