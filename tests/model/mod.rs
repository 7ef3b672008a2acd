//! A simple in-memory model of a log's streams, shared by the stream/index
//! tests (`streams_model`, `hash_collisions`, `index_damage`,
//! `streams_concurrency`), and the checks that compare a [`LogView`] with it:
//! every read the indexes serve (`read_all` both ways, one stream both ways, a
//! category, an event type, `stream_version`) from many starting points, and
//! the expected-version rules of appends.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use annal::{Direction, Error, EventData, ExpectedVersion, Log, LogView, Options, Reader, RecordRef, Uuid};

// ------------------------------------------------------------------ helpers

#[path = "../common/mod.rs"]
mod common;
pub use common::{Rng, scratch};

/// Copy every regular file of `from` into `to` (created), except temporary
/// files; a file that disappears meanwhile (renamed by the writer) is skipped.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        if e.file_name().to_string_lossy().ends_with(".tmp") || !e.file_type().expect("file type").is_file() {
            continue;
        }
        match std::fs::copy(e.path(), to.join(e.file_name())) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("copy {}: {err}", e.path().display()),
        }
    }
}

/// Files of `dir` ending in `ext` (e.g. `"idx"`), sorted by name.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, turning a panic into `Err(message)` without printing it (other
/// threads' panics still print).
pub fn catch_quiet<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    res.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

// ------------------------------------------------------------------ model

/// Everything a record holds except its timestamp (which the library picks;
/// the checks compare it across read paths instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub ty: String,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
    pub id: Uuid,
    pub schema: u32,
}

impl Ev {
    pub fn of(r: &RecordRef<'_>) -> Ev {
        Ev {
            position: r.position(),
            stream: r.stream().to_owned(),
            version: r.stream_version(),
            ty: r.event_type().to_owned(),
            metadata: r.metadata().to_owned(),
            payload: r.payload().to_owned(),
            id: r.event_id(),
            schema: r.schema_version(),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEv {
    pub ty: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<u8>,
    pub schema: u32,
}

impl NewEv {
    pub fn new(ty: &str, payload: Vec<u8>) -> NewEv {
        NewEv {
            ty: ty.to_owned(),
            payload,
            metadata: Vec::new(),
            schema: 0,
        }
    }
}

/// The log as a list of events plus, per stream, the positions of its events.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub events: Vec<Ev>,
    pub streams: BTreeMap<String, Vec<u64>>,
}

pub fn category_of(stream: &str) -> Option<&str> {
    stream.split_once('-').map(|(c, _)| c)
}

impl Model {
    pub fn version(&self, stream: &str) -> Option<u64> {
        self.streams.get(stream).map(|p| p.len() as u64 - 1)
    }

    pub fn admits(&self, stream: &str, expected: ExpectedVersion) -> bool {
        let v = self.version(stream);
        match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => v.is_none(),
            ExpectedVersion::StreamExists => v.is_some(),
            ExpectedVersion::Exact(x) => v == Some(x),
        }
    }

    /// The ids the next batch of `n` events gets (unique in the log).
    fn id_for(position: u64) -> Uuid {
        Uuid::from_u128(0x0123_4567_89ab_0000_0000_0000_0000_0000 | position as u128)
    }

    pub fn push(&mut self, stream: &str, evs: &[NewEv]) {
        for e in evs {
            let position = self.events.len() as u64;
            let positions = self.streams.entry(stream.to_owned()).or_default();
            let version = positions.len() as u64;
            positions.push(position);
            self.events.push(Ev {
                position,
                stream: stream.to_owned(),
                version,
                ty: e.ty.clone(),
                metadata: e.metadata.clone(),
                payload: e.payload.clone(),
                id: Model::id_for(position),
                schema: e.schema,
            });
        }
    }

    pub fn len(&self) -> u64 {
        self.events.len() as u64
    }

    pub fn categories(&self) -> BTreeSet<String> {
        self.streams
            .keys()
            .filter_map(|s| category_of(s).map(str::to_owned))
            .collect()
    }

    pub fn types(&self) -> BTreeSet<String> {
        self.events.iter().map(|e| e.ty.clone()).collect()
    }

    pub fn all_from(&self, from: u64) -> Vec<Ev> {
        self.events.iter().filter(|e| e.position >= from).cloned().collect()
    }

    pub fn all_backward(&self, from: u64) -> Vec<Ev> {
        self.events
            .iter()
            .rev()
            .filter(|e| e.position <= from)
            .cloned()
            .collect()
    }

    pub fn stream(&self, stream: &str, from: u64, dir: Direction, max: u64) -> Vec<Ev> {
        let Some(ps) = self.streams.get(stream) else {
            return Vec::new();
        };
        let evs = ps.iter().map(|&p| &self.events[p as usize]);
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        match dir {
            Direction::Forward => evs.filter(|e| e.version >= from).take(max).cloned().collect(),
            Direction::Backward => evs.rev().filter(|e| e.version <= from).take(max).cloned().collect(),
        }
    }

    pub fn category(&self, cat: &str, from: u64) -> Vec<Ev> {
        self.events
            .iter()
            .filter(|e| e.position >= from && category_of(&e.stream) == Some(cat))
            .cloned()
            .collect()
    }

    pub fn event_type(&self, ty: &str, from: u64) -> Vec<Ev> {
        self.events
            .iter()
            .filter(|e| e.position >= from && e.ty == ty)
            .cloned()
            .collect()
    }
}

// ------------------------------------------------------------------ appends

fn to_data(evs: &[NewEv], first_position: u64) -> Vec<EventData<'_>> {
    evs.iter()
        .enumerate()
        .map(|(i, e)| {
            EventData::new(e.ty.as_str(), e.payload.as_slice())
                .with_metadata(e.metadata.as_slice())
                .with_schema_version(e.schema)
                .with_id(Model::id_for(first_position + i as u64))
        })
        .collect()
}

/// Append through `log` and through the model; the outcome (success with the
/// right positions and version, or a `WrongExpectedVersion` naming the model's
/// version) must be what the model says. Returns whether it was appended.
pub fn append(log: &Log, m: &mut Model, stream: &str, expected: ExpectedVersion, evs: &[NewEv], ctx: &str) -> bool {
    let admitted = m.admits(stream, expected);
    let before = m.version(stream);
    let first = m.len();
    let res = log.append(stream, expected, &to_data(evs, first));
    if admitted {
        let r = res.unwrap_or_else(|e| panic!("{ctx}: append to {stream:?} with {expected:?} failed: {e}"));
        let n = evs.len() as u64;
        let want_version = before.map_or(n - 1, |v| v + n);
        assert_eq!(
            (r.first_position, r.last_position, r.stream_version),
            (first, first + n - 1, want_version),
            "{ctx}: append result for {stream:?} with {expected:?}"
        );
        m.push(stream, evs);
        true
    } else {
        match res {
            Err(Error::WrongExpectedVersion {
                stream: s,
                expected: e,
                actual,
            }) => {
                assert_eq!(s, stream, "{ctx}: error names the stream");
                assert_eq!(e, expected, "{ctx}: error names the expectation");
                assert_eq!(
                    actual, before,
                    "{ctx}: {stream:?} with {expected:?}: the error's actual version is not the stream's"
                );
            }
            Err(e) => panic!("{ctx}: append to {stream:?} with {expected:?}: unexpected error {e}"),
            Ok(r) => panic!(
                "{ctx}: append to {stream:?} (version {before:?}) with {expected:?} succeeded ({r:?}) but must fail"
            ),
        }
        false
    }
}

/// Check `Log::stream_version` and the expected-version rules for every
/// stream in `names` (and a few missing ones) with appends that must fail;
/// then make a few appends that must succeed (`Exact` with the right version,
/// `NoStream` on a missing stream, `StreamExists`).
pub fn probe_expected(log: &Log, m: &mut Model, names: &[String], rng: &mut Rng, ctx: &str) {
    let ev = |rng: &mut Rng| vec![NewEv::new("Probe", rng.bytes_below(24))];
    let mut all: Vec<String> = names.to_vec();
    all.extend(missing_names(m, names));
    for s in &all {
        let v = m.version(s);
        let got = log
            .stream_version(s)
            .unwrap_or_else(|e| panic!("{ctx}: Log::stream_version({s:?}): {e}"));
        assert_eq!(got, v, "{ctx}: Log::stream_version({s:?})");
        let wrong: Vec<ExpectedVersion> = match v {
            Some(v) => {
                let mut w = vec![
                    ExpectedVersion::NoStream,
                    ExpectedVersion::Exact(v + 1),
                    ExpectedVersion::Exact(u64::MAX),
                ];
                if v > 0 {
                    w.push(ExpectedVersion::Exact(v - 1));
                    w.push(ExpectedVersion::Exact(0));
                }
                w
            }
            None => vec![
                ExpectedVersion::StreamExists,
                ExpectedVersion::Exact(0),
                ExpectedVersion::Exact(1),
            ],
        };
        for w in wrong {
            let e = ev(rng);
            assert!(!append(log, m, s, w, &e, ctx));
        }
    }
    // A few right ones.
    for _ in 0..3 {
        let s = rng.pick(names).clone();
        let expected = match m.version(&s) {
            Some(v) if rng.below(2) == 0 => ExpectedVersion::Exact(v),
            Some(_) => ExpectedVersion::StreamExists,
            None => ExpectedVersion::NoStream,
        };
        let e = ev(rng);
        assert!(append(log, m, &s, expected, &e, ctx));
    }
}

/// Names that are not streams of the model but look like them (prefixes,
/// extensions, bare categories).
pub fn missing_names(m: &Model, names: &[String]) -> Vec<String> {
    let mut cands: Vec<String> = vec![
        "missing-stream".into(),
        "missing".into(),
        "cat0".into(),
        "cat0-".into(),
        "x".into(),
    ];
    for n in names.iter().take(4) {
        cands.push(format!("{n}x"));
        cands.push(format!("{n}-0"));
        let mut p = n.clone();
        p.pop();
        if !p.is_empty() {
            cands.push(p);
        }
        cands.push(n.to_uppercase());
    }
    let mut out: Vec<String> = cands.into_iter().filter(|c| !m.streams.contains_key(c)).collect();
    out.sort();
    out.dedup();
    out
}

// ------------------------------------------------------------------ checks

type Got = Vec<Ev>;

fn collect<'a>(it: impl Iterator<Item = annal::Result<RecordRef<'a>>>, ts: &[u64], what: &str) -> Got {
    let mut out = Vec::new();
    for r in it {
        let r = r.unwrap_or_else(|e| panic!("{what}: read failed after {} records: {e}", out.len()));
        let ev = Ev::of(&r);
        if let Some(&t) = ts.get(ev.position as usize) {
            assert_eq!(r.timestamp(), t, "{what}: timestamp of position {}", ev.position);
        }
        out.push(ev);
    }
    out
}

fn same(got: &Got, want: &Got, what: &str) {
    if got == want {
        return;
    }
    let brief = |v: &Got| -> Vec<(u64, String, u64)> {
        v.iter()
            .map(|e| (e.position, e.stream.clone(), e.version))
            .take(40)
            .collect()
    };
    // Find the first difference for the message.
    let i = got.iter().zip(want.iter()).take_while(|(a, b)| a == b).count();
    panic!(
        "{what}: got {} records, want {}; first difference at index {i}: got {:?}, want {:?}\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        got.get(i),
        want.get(i),
        brief(got),
        brief(want)
    );
}

/// Base positions of the segments of a view (from their headers).
pub fn segment_bases(view: &LogView) -> Vec<u64> {
    view.segment_bytes()
        .map(|b| b.expect("segment maps"))
        .map(|b| u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")))
        .collect()
}

/// Compare every kind of read of `view` with the model, from random and
/// boundary starting points. `names` are the streams the workload uses
/// (some may not exist yet). Panics naming `ctx` on the first difference.
pub fn check_view(view: &LogView, m: &Model, names: &[String], rng: &mut Rng, ctx: &str) {
    // The whole log forward: also fixes the timestamps other reads must agree with.
    let mut ts = Vec::new();
    let mut all = Vec::new();
    for r in view.read_all(0) {
        let r = r.unwrap_or_else(|e| panic!("{ctx}: read_all(0) failed after {} records: {e}", all.len()));
        ts.push(r.timestamp());
        all.push(Ev::of(&r));
    }
    same(&all, &m.events, &format!("{ctx}: read_all(0)"));
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ctx}: timestamps decrease");
    assert_eq!(view.next_position(), m.len(), "{ctx}: next_position");

    let n = m.len();
    let mut froms: Vec<u64> = vec![0, n, n.saturating_sub(1)];
    let bases = segment_bases(view);
    if let Some(&b) = bases.get(rng.below(bases.len().max(1) as u64) as usize) {
        froms.push(b);
        froms.push(b.saturating_sub(1));
    }
    froms.push(rng.below(n + 2));
    froms.sort_unstable();
    froms.dedup();

    for &from in &froms {
        if from > 0 {
            let got = collect(view.read_all(from), &ts, &format!("{ctx}: read_all({from})"));
            same(&got, &m.all_from(from), &format!("{ctx}: read_all({from})"));
        }
        let got = collect(
            view.read_all_backward(from),
            &ts,
            &format!("{ctx}: read_all_backward({from})"),
        );
        same(
            &got,
            &m.all_backward(from),
            &format!("{ctx}: read_all_backward({from})"),
        );
    }
    let got = collect(
        view.read_all_backward(u64::MAX),
        &ts,
        &format!("{ctx}: read_all_backward(MAX)"),
    );
    same(
        &got,
        &m.all_backward(u64::MAX),
        &format!("{ctx}: read_all_backward(MAX)"),
    );

    // Streams.
    let mut streams: Vec<String> = names.to_vec();
    streams.extend(m.streams.keys().cloned());
    streams.extend(missing_names(m, names));
    streams.sort();
    streams.dedup();
    for s in &streams {
        let v = m.version(s);
        let got = view
            .stream_version(s)
            .unwrap_or_else(|e| panic!("{ctx}: view.stream_version({s:?}): {e}"));
        assert_eq!(got, v, "{ctx}: view.stream_version({s:?})");
        let len = v.map_or(0, |v| v + 1);
        let mut reads = vec![
            (0, Direction::Forward, u64::MAX),
            (u64::MAX, Direction::Backward, u64::MAX),
        ];
        for _ in 0..2 {
            let from = match rng.below(6) {
                0 => 0,
                1 => len.saturating_sub(1),
                2 => len,
                3 => u64::MAX,
                _ => rng.below(len + 2),
            };
            let max = match rng.below(5) {
                0 => 0,
                1 => 1,
                2 => u64::MAX,
                _ => 1 + rng.below(len + 2),
            };
            let dir = if rng.below(2) == 0 {
                Direction::Forward
            } else {
                Direction::Backward
            };
            reads.push((from, dir, max));
        }
        for (from, dir, max) in reads {
            let what = format!("{ctx}: read_stream({s:?}, {from}, {dir:?}, {max})");
            let got = collect(view.read_stream(s, from, dir, max), &ts, &what);
            same(&got, &m.stream(s, from, dir, max), &what);
        }
    }

    // Categories and event types.
    let mut cats: Vec<String> = m.categories().into_iter().collect();
    cats.extend(["nocat", "cat", "cat0-1", "plain0", "Placed"].map(String::from));
    cats.extend(names.iter().filter(|s| !s.contains('-')).cloned());
    cats.sort();
    cats.dedup();
    let mut types: Vec<String> = m.types().into_iter().collect();
    types.extend(["NoSuchType", "Place", "Placedx", "cat0"].map(String::from));
    types.sort();
    types.dedup();
    for (kind, list) in [("category", &cats), ("type", &types)] {
        for name in list {
            let mut fs = vec![0, rng.below(n + 1), *rng.pick(&froms)];
            fs.dedup();
            for from in fs {
                let what = format!("{ctx}: read_{kind}({name:?}, {from})");
                let (got, want) = if kind == "category" {
                    (
                        collect(view.read_category(name, from), &ts, &what),
                        m.category(name, from),
                    )
                } else {
                    (
                        collect(view.read_event_type(name, from), &ts, &what),
                        m.event_type(name, from),
                    )
                };
                same(&got, &want, &what);
            }
        }
    }
}

/// `check_view` through a fresh `Reader` (no lock).
pub fn check_reader(dir: &Path, m: &Model, names: &[String], rng: &mut Rng, ctx: &str) -> Vec<String> {
    let reader = Reader::open(dir).unwrap_or_else(|e| panic!("{ctx}: Reader::open: {e}"));
    let view = reader.view().unwrap_or_else(|e| panic!("{ctx}: Reader::view: {e}"));
    check_view(&view, m, names, rng, &format!("{ctx} [reader]"));
    view.index_damage()
}

// ------------------------------------------------------------------ workloads

/// How an append of a workload states its expectation (resolved against the
/// model when it runs).
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Any,
    /// `Exact(current)`, or `NoStream` for a missing stream.
    Right,
    /// `StreamExists` or `NoStream`, whichever is right.
    RightShape,
    /// `Exact(current + 1 + k)` (or `Exact(k)` on a missing stream): fails.
    WrongExact(u64),
    /// `StreamExists` or `NoStream`, whichever is wrong: fails.
    WrongShape,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Append `events` (`(type index, payload length)`) to stream `stream`.
    Append {
        stream: usize,
        events: Vec<(usize, usize)>,
        expect: Expect,
    },
    /// Close the log and open it again.
    Reopen,
    /// Check every read against the model (writer view and a `Reader`).
    Check,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub names: Vec<String>,
    pub types: Vec<String>,
    pub segment_size: u64,
    pub steps: Vec<Step>,
    pub seed: u64,
}

/// Stream names for a workload: `cat{c}-{i}` in `cats` categories, plus some
/// with more dashes, without a dash, and non-ASCII.
pub fn stream_names(n: usize, cats: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 7 {
            6 => format!("plain{i}"),
            5 => format!("cat{}-x-{i}", i % cats),
            4 if i % 3 == 1 => format!("流{}-{i}", i % cats),
            // The empty category (spec 19).
            3 if i % 2 == 1 => format!("-{i}"),
            _ => format!("cat{}-{i}", i % cats),
        })
        .collect()
}

pub const TYPES: [&str; 4] = ["Placed", "ItemAdded", "Shipped-Late", "Ü"];

fn expected_for(m: &Model, stream: &str, e: Expect) -> ExpectedVersion {
    let v = m.version(stream);
    match (e, v) {
        (Expect::Any, _) => ExpectedVersion::Any,
        (Expect::Right, Some(v)) => ExpectedVersion::Exact(v),
        (Expect::Right, None) => ExpectedVersion::NoStream,
        (Expect::RightShape, Some(_)) => ExpectedVersion::StreamExists,
        (Expect::RightShape, None) => ExpectedVersion::NoStream,
        (Expect::WrongExact(k), Some(v)) => ExpectedVersion::Exact(v + 1 + k),
        (Expect::WrongExact(k), None) => ExpectedVersion::Exact(k),
        (Expect::WrongShape, Some(_)) => ExpectedVersion::NoStream,
        (Expect::WrongShape, None) => ExpectedVersion::StreamExists,
    }
}

/// Copy the log while its writer is open (the sealer may be writing an index
/// file or the stream table: a crash image), open the copy with a writer and
/// check it against the model, expected versions included.
pub fn crash_image(dir: &Path, m: &Model, names: &[String], opts: &Options, rng: &mut Rng, ctx: &str) {
    let ctx = format!("{ctx} [crash image]");
    let img = scratch();
    copy_dir(dir, img.path());
    let mut m = m.clone();
    let log = Log::open_with(img.path(), opts.clone()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    assert!(log.recovery().truncated.is_none(), "{ctx}: {:?}", log.recovery());
    probe_expected(&log, &mut m, names, rng, &ctx);
    let view = log.view().unwrap_or_else(|e| panic!("{ctx}: view: {e}"));
    check_view(&view, &m, names, rng, &ctx);
    assert!(view.index_damage().is_empty(), "{ctx}: {:?}", view.index_damage());
    drop(view);
    log.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
}

/// Run a workload on a fresh log opened with `opts(segment_size)`, checking
/// against the model at every `Check`, after every reopen and at the end.
/// Returns the number of events appended.
pub fn run_workload(w: &Workload, opts: &dyn Fn(u64) -> Options, label: &str) -> u64 {
    let dir = scratch();
    let mut rng = Rng::new(w.seed);
    let mut m = Model::default();
    let mut size = w.segment_size;
    let open = |size: u64| Log::open_with(dir.path(), opts(size)).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let mut log = open(size);
    let mut images = 0;
    let mut reopens = 0;
    for (i, step) in w.steps.iter().enumerate() {
        let ctx = format!("{label} step {i} ({step:?})");
        match step {
            Step::Append { stream, events, expect } => {
                let s = &w.names[*stream];
                let evs: Vec<NewEv> = events
                    .iter()
                    .map(|&(t, len)| NewEv {
                        ty: w.types[t % w.types.len()].clone(),
                        payload: rng.bytes(len),
                        metadata: if rng.below(4) == 0 { rng.bytes(9) } else { Vec::new() },
                        schema: rng.below(3) as u32,
                    })
                    .collect();
                let expected = expected_for(&m, s, *expect);
                let appended = append(&log, &mut m, s, expected, &evs, &ctx);
                let should = matches!(expect, Expect::Any | Expect::Right | Expect::RightShape);
                assert_eq!(appended, should, "{ctx}: outcome");
            }
            Step::Reopen => {
                log.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
                // Sometimes with another segment size.
                if rng.below(3) == 0 {
                    size = *rng.pick(&[2048, 3072, 4096, 8192]);
                }
                log = open(size);
                reopens += 1;
                let r = log.recovery();
                assert!(
                    r.rebuilt_indexes.is_empty() && !r.rebuilt_stream_table && r.truncated.is_none(),
                    "{ctx}: a clean reopen rebuilt derived files or truncated: {r:?}"
                );
                // The stream state right after opening comes from the stream
                // table and the indexes: check it before anything is read.
                probe_expected(
                    &log,
                    &mut m,
                    &w.names,
                    &mut rng,
                    &format!("{ctx} after reopen {reopens}"),
                );
                let view = log.view().unwrap_or_else(|e| panic!("{ctx}: view: {e}"));
                check_view(&view, &m, &w.names, &mut rng, &ctx);
                assert!(view.index_damage().is_empty(), "{ctx}: {:?}", view.index_damage());
            }
            Step::Check => {
                let view = log.view().unwrap_or_else(|e| panic!("{ctx}: view: {e}"));
                check_view(&view, &m, &w.names, &mut rng, &ctx);
                assert!(view.index_damage().is_empty(), "{ctx}: {:?}", view.index_damage());
                let dmg = check_reader(dir.path(), &m, &w.names, &mut rng, &ctx);
                assert!(dmg.is_empty(), "{ctx}: reader found index damage {dmg:?}");
                if rng.below(2) == 0 {
                    crash_image(dir.path(), &m, &w.names, &opts(size), &mut rng, &ctx);
                    images += 1;
                }
            }
        }
    }
    let ctx = format!("{label} end");
    probe_expected(&log, &mut m, &w.names, &mut rng, &ctx);
    let view = log.view().unwrap_or_else(|e| panic!("{ctx}: view: {e}"));
    check_view(&view, &m, &w.names, &mut rng, &ctx);
    drop(view);
    let dmg = check_reader(dir.path(), &m, &w.names, &mut rng, &ctx);
    assert!(dmg.is_empty(), "{ctx}: reader found index damage {dmg:?}");
    log.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    // Once more after a final reopen, through both.
    let ctx = format!("{label} final reopen");
    let dmg = check_reader(dir.path(), &m, &w.names, &mut rng, &ctx);
    assert!(dmg.is_empty(), "{ctx}: reader found index damage {dmg:?}");
    let log = open(size);
    probe_expected(&log, &mut m, &w.names, &mut rng, &ctx);
    let view = log.view().unwrap_or_else(|e| panic!("{ctx}: view: {e}"));
    check_view(&view, &m, &w.names, &mut rng, &ctx);
    drop(view);
    if std::env::var_os("MODEL_STATS").is_some() {
        eprintln!(
            "{label}: {} events, {} streams, {} segments, {reopens} reopens, {images} crash images",
            m.len(),
            m.streams.len(),
            files_with_ext(dir.path(), "seg").len()
        );
    }
    log.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    m.len()
}

// ------------------------------------------------------------------ strategies

/// How appends state their expectation: mostly right, sometimes wrong.
pub fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        4 => Just(Expect::Any),
        4 => Just(Expect::Right),
        1 => Just(Expect::RightShape),
        1 => (0u64..3).prop_map(Expect::WrongExact),
        1 => Just(Expect::WrongShape),
    ]
}

/// Workloads of up to `max_steps` steps (see [`Workload`]).
pub fn workload(max_steps: usize) -> impl Strategy<Value = Workload> {
    (
        1usize..=30,
        1usize..=3,
        prop::sample::select(vec![2048u64, 3072, 4096, 8192]),
        any::<u64>(),
    )
        .prop_flat_map(move |(n, cats, segment_size, seed)| {
            let append = (
                0..n,
                prop::collection::vec((0usize..4, prop_oneof![3 => 0usize..64, 1 => 64usize..400]), 1..=8),
                expect(),
            )
                .prop_map(|(stream, events, expect)| Step::Append { stream, events, expect });
            let step = prop_oneof![
                24 => append,
                1 => Just(Step::Reopen),
                1 => Just(Step::Check),
            ];
            prop::collection::vec(step, 1..max_steps).prop_map(move |steps| Workload {
                names: stream_names(n, cats),
                types: TYPES.iter().map(|t| t.to_string()).collect(),
                segment_size,
                steps,
                seed,
            })
        })
}
