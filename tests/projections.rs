//! Projections: `LogView::rebuild` (sequential), `par_rebuild` (balanced
//! chunks of the log) and `par_rebuild_by_stream` (one fold per stream) give
//! exactly the same models, on random logs (several streams, small segments,
//! reopens), through the writer's views and through a `Reader`, in thread
//! pools of several sizes and with many chunk counts. Three projections: counts
//! per event type (commutative), a per-stream history where the order of a
//! stream's events matters, and the global order of positions (chunks only).
//! Chunks are balanced by bytes, and damage is reported by every rebuild.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use annal::{EventData, ExpectedVersion, Log, LogView, Options, Projection, Reader, RecordRef};
use common::scratch;
use proptest::prelude::*;

// ------------------------------------------------------------------ projections

/// Events per event type: commutative, separable by stream.
struct CountByType;

impl Projection for CountByType {
    type Model = BTreeMap<String, u64>;

    fn empty(&self) -> Self::Model {
        BTreeMap::new()
    }

    fn apply(&self, model: &mut Self::Model, record: &RecordRef<'_>) {
        match model.get_mut(record.event_type()) {
            Some(n) => *n += 1,
            None => {
                model.insert(record.event_type().to_owned(), 1);
            }
        }
    }

    fn merge(&self, mut earlier: Self::Model, later: Self::Model) -> Self::Model {
        for (k, n) in later {
            *earlier.entry(k).or_default() += n;
        }
        earlier
    }
}

/// FNV-1a of a record's version, type and payload.
fn digest(r: &RecordRef<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&r.stream_version().to_le_bytes());
    eat(r.event_type_bytes());
    eat(r.payload());
    h
}

/// Odd base of the polynomial hashes (arithmetic mod 2^64).
const BASE: u64 = 0x9e37_79b9_7f4a_7c15;

/// The history of one stream: versions seen (and whether they follow each
/// other), a polynomial hash of the digests in order (`hash = Σ d_i ·
/// BASE^(len-1-i)`, so the hash of `xs ++ ys` is `hash(xs) · BASE^len(ys) +
/// hash(ys)`: associative), and the digest of the last event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct History {
    first_version: u64,
    last_version: u64,
    in_order: bool,
    len: u64,
    pow: u64,
    hash: u64,
    last: u64,
}

impl History {
    fn one(r: &RecordRef<'_>) -> History {
        let d = digest(r);
        History {
            first_version: r.stream_version(),
            last_version: r.stream_version(),
            in_order: true,
            len: 1,
            pow: BASE,
            hash: d,
            last: d,
        }
    }

    /// `self` followed by `later`.
    fn then(&mut self, later: &History) {
        self.in_order = self.in_order && later.in_order && self.last_version + 1 == later.first_version;
        self.last_version = later.last_version;
        self.len += later.len;
        self.hash = self.hash.wrapping_mul(later.pow).wrapping_add(later.hash);
        self.pow = self.pow.wrapping_mul(later.pow);
        self.last = later.last;
    }
}

/// Per stream, its [`History`]: the order of a stream's events matters;
/// separable by stream.
struct StreamHistory;

impl Projection for StreamHistory {
    type Model = BTreeMap<String, History>;

    fn empty(&self) -> Self::Model {
        BTreeMap::new()
    }

    fn apply(&self, model: &mut Self::Model, record: &RecordRef<'_>) {
        match model.get_mut(record.stream()) {
            Some(h) => h.then(&History::one(record)),
            None => {
                model.insert(record.stream().to_owned(), History::one(record));
            }
        }
    }

    fn merge(&self, mut earlier: Self::Model, later: Self::Model) -> Self::Model {
        for (k, h) in later {
            match earlier.get_mut(&k) {
                Some(e) => e.then(&h),
                None => {
                    earlier.insert(k, h);
                }
            }
        }
        earlier
    }
}

/// The global order: the positions seen form one run from `first` to `last`
/// (`contiguous`), with a polynomial hash of `(position, stream)` in log
/// order. Not separable by stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    first: u64,
    last: u64,
    contiguous: bool,
    pow: u64,
    hash: u64,
}

struct GlobalOrder;

impl GlobalOrder {
    fn then(a: &mut Run, b: &Run) {
        a.contiguous = a.contiguous && b.contiguous && a.last + 1 == b.first;
        a.last = b.last;
        a.hash = a.hash.wrapping_mul(b.pow).wrapping_add(b.hash);
        a.pow = a.pow.wrapping_mul(b.pow);
    }
}

impl Projection for GlobalOrder {
    type Model = Option<Run>;

    fn empty(&self) -> Self::Model {
        None
    }

    fn apply(&self, model: &mut Self::Model, r: &RecordRef<'_>) {
        let d = r.position().wrapping_mul(31).wrapping_add(stream_digest(r.stream()));
        let one = Run {
            first: r.position(),
            last: r.position(),
            contiguous: true,
            pow: BASE,
            hash: d,
        };
        match model {
            Some(m) => GlobalOrder::then(m, &one),
            None => *model = Some(one),
        }
    }

    fn merge(&self, earlier: Self::Model, later: Self::Model) -> Self::Model {
        match (earlier, later) {
            (Some(mut a), Some(b)) => {
                GlobalOrder::then(&mut a, &b);
                Some(a)
            }
            (a, None) => a,
            (None, b) => b,
        }
    }
}

fn stream_digest(s: &str) -> u64 {
    s.bytes().fold(7u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64))
}

// ------------------------------------------------------------------ checks

fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        [1, 3, 8]
            .iter()
            .map(|&n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("thread pool")
            })
            .collect()
    });
    match threads {
        1 => &pools[0],
        3 => &pools[1],
        _ => &pools[2],
    }
}

/// Chunk counts tried besides the default: one chunk, a few, more chunks than
/// batches.
const CHUNKS: [usize; 7] = [1, 2, 3, 5, 13, 64, 400];

/// Every parallel rebuild of `p` equals the sequential one; returns it.
fn same_everywhere<P: Projection>(view: &LogView, p: &P, by_stream: bool, what: &str) -> P::Model
where
    P::Model: PartialEq + std::fmt::Debug,
{
    let seq = view.rebuild(p).expect("rebuild");
    assert_eq!(view.par_rebuild(p).expect("par_rebuild"), seq, "{what}: par_rebuild");
    for threads in [1, 3, 8] {
        let par = pool(threads).install(|| view.par_rebuild(p)).expect("par_rebuild");
        assert_eq!(par, seq, "{what}: par_rebuild on {threads} threads");
    }
    for n in CHUNKS {
        let par = pool(3)
            .install(|| view.par_rebuild_chunks(p, n))
            .expect("par_rebuild_chunks");
        assert_eq!(par, seq, "{what}: par_rebuild with {n} chunks");
    }
    if by_stream {
        assert_eq!(
            view.par_rebuild_by_stream(p).expect("par_rebuild_by_stream"),
            seq,
            "{what}: par_rebuild_by_stream"
        );
        let par = pool(3)
            .install(|| view.par_rebuild_by_stream(p))
            .expect("par_rebuild_by_stream");
        assert_eq!(par, seq, "{what}: par_rebuild_by_stream on 3 threads");
    }
    seq
}

/// The chunks of `view` for `n` cover its positions once, in order, and their
/// bytes add up to (about) the whole.
fn chunks_cover(view: &LogView, n: usize) {
    let chunks = view.chunk_bounds(n).expect("chunk_bounds");
    if view.next_position() == 0 {
        assert!(chunks.iter().all(|c| c.0.is_empty()), "{chunks:?}");
        return;
    }
    assert!(chunks.len() <= n.max(1), "{n} chunks asked, {} made", chunks.len());
    let mut at = 0;
    for (range, _) in &chunks {
        assert_eq!(range.start, at, "{chunks:?}");
        assert!(range.end >= range.start, "{chunks:?}");
        at = range.end;
    }
    assert_eq!(at, view.next_position(), "{chunks:?}");
    let bytes: u64 = chunks.iter().map(|c| c.1).sum();
    assert!(
        bytes <= view.len_bytes() && bytes + 128 >= view.len_bytes(),
        "{bytes} of {}",
        view.len_bytes()
    );
}

/// What the workload wrote, per stream: `(type, payload)` in order.
type Expected = BTreeMap<String, Vec<(String, Vec<u8>)>>;

/// Check every projection on `view` against the sequential rebuild and the
/// sequential rebuild against `want`.
fn check_view(view: &LogView, want: &Expected, what: &str) {
    let total: usize = want.values().map(Vec::len).sum();
    assert_eq!(view.next_position(), total as u64, "{what}");

    let counts = same_everywhere(view, &CountByType, true, &format!("{what}: counts"));
    let mut want_counts = BTreeMap::new();
    for evs in want.values() {
        for (ty, _) in evs {
            *want_counts.entry(ty.clone()).or_insert(0u64) += 1;
        }
    }
    assert_eq!(counts, want_counts, "{what}: counts");

    let hist = same_everywhere(view, &StreamHistory, true, &format!("{what}: histories"));
    assert_eq!(
        hist.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (s, h) in &hist {
        assert!(h.in_order && h.first_version == 0, "{what}: {s}: {h:?}");
        assert_eq!(h.len, want[s].len() as u64, "{what}: {s}");
    }

    let run = same_everywhere(view, &GlobalOrder, false, &format!("{what}: global order"));
    match run {
        None => assert_eq!(total, 0),
        Some(r) => assert!(
            r.contiguous && r.first == 0 && r.last + 1 == total as u64,
            "{what}: {r:?}"
        ),
    }

    let streams: BTreeSet<String> = view.streams().expect("streams").into_iter().collect();
    assert_eq!(streams, want.keys().cloned().collect(), "{what}: streams");
    for n in [1, 4, 9, 100] {
        chunks_cover(view, n);
    }
}

fn check_reader(dir: &Path, want: &Expected, what: &str) {
    let reader = Reader::open(dir).expect("open reader");
    let view = reader.view().expect("reader view");
    check_view(&view, want, what);
}

// ------------------------------------------------------------------ workloads

const TYPES: [&str; 4] = ["Placed", "Paid", "Shipped", "Cancelled"];

#[derive(Debug, Clone)]
enum Step {
    Append {
        stream: usize,
        events: Vec<(usize, Vec<u8>)>,
    },
    Reopen,
    Check,
}

fn stream_name(i: usize) -> String {
    match i % 3 {
        0 => format!("order-{i}"),
        1 => format!("cart-{i}"),
        _ => format!("plain{i}"),
    }
}

fn step(streams: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (
            0..streams,
            prop::collection::vec((0..TYPES.len(), prop::collection::vec(any::<u8>(), 0..48)), 1..6)
        )
            .prop_map(|(stream, events)| Step::Append { stream, events }),
        1 => Just(Step::Reopen),
        1 => Just(Step::Check),
    ]
}

fn workload() -> impl Strategy<Value = (usize, u64, Vec<Step>)> {
    (1..9usize, 400..3000u64)
        .prop_flat_map(|(streams, seg)| (Just(streams), Just(seg), prop::collection::vec(step(streams), 0..120)))
}

fn run((_, segment_size, steps): &(usize, u64, Vec<Step>)) {
    let dir = scratch();
    let opts = || Options::default().segment_size(*segment_size);
    let mut log = Log::open_with(dir.path(), opts()).expect("open");
    let mut want = Expected::new();
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Append { stream, events } => {
                let name = stream_name(*stream);
                let evs: Vec<EventData<'_>> = events
                    .iter()
                    .map(|(t, p)| EventData::new(TYPES[*t], p.as_slice()))
                    .collect();
                log.append(&name, ExpectedVersion::Any, &evs).expect("append");
                let w = want.entry(name).or_default();
                w.extend(events.iter().map(|(t, p)| (TYPES[*t].to_owned(), p.clone())));
            }
            Step::Reopen => {
                log.close().expect("close");
                log = Log::open_with(dir.path(), opts()).expect("reopen");
            }
            Step::Check => {
                check_view(&log.view().expect("view"), &want, &format!("writer, step {i}"));
                check_reader(dir.path(), &want, &format!("reader, step {i}"));
            }
        }
    }
    check_view(&log.view().expect("view"), &want, "writer, end");
    check_reader(dir.path(), &want, "reader, end");
    log.close().expect("close");
    check_reader(dir.path(), &want, "reader after close");
    let log = Log::open_with(dir.path(), opts()).expect("reopen");
    check_view(&log.view().expect("view"), &want, "writer after reopen");
    log.close().expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parallel_rebuilds_equal_the_sequential_one(w in workload()) {
        run(&w);
    }
}

/// Append `n` batches round-robin over `streams` streams, payload sizes
/// varying; returns what was written.
fn fill(log: &Log, n: usize, streams: usize, want: &mut Expected) {
    for i in 0..n {
        let name = stream_name(i % streams);
        let events: Vec<(usize, Vec<u8>)> = (0..1 + i % 4)
            .map(|j| ((i + j) % TYPES.len(), vec![(i * 7 + j) as u8; (i * 13 + j * 5) % 150]))
            .collect();
        let evs: Vec<EventData<'_>> = events
            .iter()
            .map(|(t, p)| EventData::new(TYPES[*t], p.as_slice()))
            .collect();
        log.append(&name, ExpectedVersion::Any, &evs).expect("append");
        let w = want.entry(name).or_default();
        w.extend(events.iter().map(|(t, p)| (TYPES[*t].to_owned(), p.clone())));
    }
}

/// Chunks are cut by bytes, not one per segment: a log of one segment is
/// split into as many chunks as asked, and on a log of many segments a chunk
/// spans several; either way every chunk is within 2× of the mean size.
#[test]
fn chunks_are_balanced_by_bytes() {
    for (segment_size, batches, want_segments) in [(64 << 20, 2000, 1), (8 << 10, 2000, 40)] {
        let dir = scratch();
        let log = Log::open_with(dir.path(), Options::default().segment_size(segment_size)).expect("open");
        let mut want = Expected::new();
        fill(&log, batches, 11, &mut want);
        let view = log.view().expect("view");
        assert!(
            view.segment_count() >= want_segments,
            "{} segments",
            view.segment_count()
        );
        for n in [2, 4, 8, 16, 32] {
            let chunks = view.chunk_bounds(n).expect("chunk_bounds");
            chunks_cover(&view, n);
            assert_eq!(chunks.len(), n, "{n} chunks over {} segments", view.segment_count());
            let mean = chunks.iter().map(|c| c.1).sum::<u64>() as f64 / chunks.len() as f64;
            for c in &chunks {
                let ratio = c.1 as f64 / mean;
                assert!((0.5..=2.0).contains(&ratio), "chunk {c:?} vs mean {mean}: {chunks:?}");
            }
        }
        if view.segment_count() == 1 {
            let n = rayon::current_num_threads() * 4;
            assert!(view.chunk_bounds(n).expect("chunk_bounds").len() > 1);
        }
        check_view(&view, &want, "balanced");
        log.close().expect("close");
        check_reader(dir.path(), &want, "balanced, reader");
    }
}

/// A view does not see events appended after it was taken, although the
/// writer's in-memory index of the active segment (shared with the view)
/// lists them: neither the chunks nor the stream list go past the view.
#[test]
fn a_view_ignores_later_appends() {
    // One segment (the active index is shared with the view), then many.
    for segment_size in [64 << 20, 4096] {
        let dir = scratch();
        let log = Log::open_with(dir.path(), Options::default().segment_size(segment_size)).expect("open");
        let mut want = Expected::new();
        fill(&log, 300, 5, &mut want);
        let view = log.view().expect("view");
        let mut more = want.clone();
        fill(&log, 50, 9, &mut more);
        log.append(
            "brand-new",
            ExpectedVersion::NoStream,
            &[EventData::new("Placed", b"x".as_slice())],
        )
        .expect("append");
        more.entry("brand-new".into())
            .or_default()
            .push(("Placed".into(), b"x".to_vec()));
        check_view(&view, &want, "old view");
        check_view(&log.view().expect("view"), &more, "new view");
        log.close().expect("close");
    }
}

/// A reader's view whose stream table covers segments past the view (the
/// writer sealed the view's last segment meanwhile): the streams are listed
/// from the indexes instead, and the view's own events only.
#[test]
fn a_stream_table_ahead_of_the_view() {
    let dir = scratch();
    let opts = || Options::default().segment_size(4096);
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let mut want = Expected::new();
    fill(&log, 200, 4, &mut want);
    log.sync().expect("sync");
    let before = scratch();
    copy_files(dir.path(), before.path());
    let segments = log.view().expect("view").segment_count();
    let mut i = 0;
    while log.view().expect("view").segment_count() < segments + 2 {
        let name = format!("later-{i}");
        log.append(&name, ExpectedVersion::Any, &[EventData::new("Paid", vec![1u8; 100])])
            .expect("append");
        i += 1;
    }
    log.close().expect("close");
    // The old files with the new stream table.
    let table = annal::STREAM_TABLE_FILE;
    std::fs::copy(dir.path().join(table), before.path().join(table)).expect("copy table");
    check_reader(before.path(), &want, "reader with a newer stream table");
}

fn copy_files(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        if e.file_type().expect("type").is_file() && !name.to_string_lossy().ends_with(".tmp") {
            std::fs::copy(e.path(), to.join(&name)).expect("copy");
        }
    }
}

/// A flipped payload byte in a sealed segment: every rebuild reports it.
#[test]
fn damage_is_reported_by_every_rebuild() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).expect("open");
    let mut want = Expected::new();
    fill(&log, 100, 3, &mut want);
    log.append(
        "order-x",
        ExpectedVersion::Any,
        &[EventData::new("Placed", b"MARKER-MARKER".as_slice())],
    )
    .expect("append");
    fill(&log, 200, 3, &mut want);
    log.close().expect("close");
    let mut hit = false;
    for e in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "seg") {
            let mut bytes = std::fs::read(&path).expect("read");
            if let Some(at) = bytes.windows(13).position(|w| w == b"MARKER-MARKER") {
                bytes[at + 3] ^= 0x20;
                std::fs::write(&path, &bytes).expect("write");
                hit = true;
            }
        }
    }
    assert!(hit);
    let reader = Reader::open(dir.path()).expect("open reader");
    let view = reader.view().expect("view");
    assert!(view.segment_count() > 2);
    let is_corrupt = |r: annal::Result<_>| matches!(r, Err(annal::Error::Corrupt { .. }));
    assert!(is_corrupt(view.rebuild(&CountByType).map(|_| ())));
    assert!(is_corrupt(view.par_rebuild(&CountByType).map(|_| ())));
    for n in CHUNKS {
        assert!(
            is_corrupt(view.par_rebuild_chunks(&CountByType, n).map(|_| ())),
            "{n} chunks"
        );
    }
    assert!(is_corrupt(view.par_rebuild_by_stream(&CountByType).map(|_| ())));
    assert!(is_corrupt(view.par_rebuild(&GlobalOrder).map(|_| ())));
}

/// The history projection is sensitive to the order of a stream's events
/// (so the tests above would catch a parallel rebuild that reorders them),
/// and the global-order one to the interleaving of streams.
#[test]
fn the_order_sensitive_projections_see_order() {
    let dir = scratch();
    let log = Log::open(dir.path()).expect("open");
    let mut want = Expected::new();
    fill(&log, 40, 2, &mut want);
    let view = log.view().expect("view");
    let recs: Vec<RecordRef<'_>> = view.read_all(0).collect::<annal::Result<_>>().expect("read");
    let fold = |rs: &[RecordRef<'_>]| {
        let mut m = StreamHistory.empty();
        for r in rs {
            StreamHistory.apply(&mut m, r);
        }
        m
    };
    let forward = fold(&recs);
    assert_eq!(forward, view.rebuild(&StreamHistory).expect("rebuild"));
    // Swap two events of one stream.
    let s0: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i].stream() == recs[0].stream())
        .collect();
    let mut swapped = recs.clone();
    swapped.swap(s0[1], s0[2]);
    assert_ne!(fold(&swapped), forward);
    // By stream, the global order is not what rebuild gives.
    assert_ne!(
        view.par_rebuild_by_stream(&GlobalOrder).expect("by stream"),
        view.rebuild(&GlobalOrder).expect("rebuild")
    );
    log.close().expect("close");
}

/// Timings on a log of 1M events (run with `cargo test --release --test
/// projections -- --ignored --nocapture`).
#[test]
#[ignore]
fn timings_on_a_million_events() {
    let dir = scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(64 << 20)).expect("open");
    let t = Instant::now();
    let payload = [7u8; 100];
    let mut n = 0u64;
    let mut i = 0usize;
    while n < 1_000_000 {
        let evs: Vec<EventData<'_>> = (0..4)
            .map(|j| EventData::new(TYPES[(i + j) % 4], &payload[..(i * 13 + j) % 100]))
            .collect();
        log.append(&stream_name(i % 1000), ExpectedVersion::Any, &evs)
            .expect("append");
        n += 4;
        i += 1;
    }
    let view = log.view().expect("view");
    println!(
        "log: {} events, {} streams, {} segments, {:.0} MB, written in {:.2?}; {} rayon threads",
        view.next_position(),
        view.streams().expect("streams").len(),
        view.segment_count(),
        view.len_bytes() as f64 / 1e6,
        t.elapsed(),
        rayon::current_num_threads()
    );
    for threads in [2, 1] {
        pool_of(threads).install(|| {
            println!("-- in a pool of {threads} threads");
            timings(&view, "counts", &CountByType, true);
            timings(&view, "histories", &StreamHistory, true);
            timings(&view, "global order", &GlobalOrder, false);
        });
    }
    log.close().expect("close");
}

fn pool_of(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn time<T>(what: &str, f: impl Fn() -> annal::Result<T>) -> T {
    let _ = f().expect(what);
    let mut best = std::time::Duration::MAX;
    let mut out = None;
    for _ in 0..5 {
        let t = Instant::now();
        out = Some(f().expect(what));
        best = best.min(t.elapsed());
    }
    println!("{what:<40} {best:>10.2?} (best of 5)");
    out.expect("ran")
}

fn timings<P: Projection>(view: &LogView, name: &str, p: &P, by_stream: bool)
where
    P::Model: PartialEq + std::fmt::Debug,
{
    let seq = time(&format!("{name}: rebuild"), || view.rebuild(p));
    assert_eq!(time(&format!("{name}: par_rebuild"), || view.par_rebuild(p)), seq);
    if by_stream {
        assert_eq!(
            time(&format!("{name}: par_rebuild_by_stream"), || view
                .par_rebuild_by_stream(p)),
            seq
        );
    }
}
