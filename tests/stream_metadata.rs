//! Stream deletion and metadata (spec 3.7, issue 16), against a model: a
//! random history of appends, soft and hard deletions, truncations, max-count
//! and max-age changes, clock steps and reopens; after every step every read
//! (a stream forward, backward and from a middle version, the category, the
//! event type, the whole log both ways, the stream's version and metadata,
//! the writer's versions, projections rebuilt sequentially, in parallel and
//! by stream) equals what the model says is visible, and every
//! refusal (a tombstoned stream, a system stream) is the one the spec names.
//! After reopens, a cross-process `Reader` is compared too. Every other
//! event names one of three subjects (stored sealed, spec 3.8), and subjects
//! are erased at random: reads unseal to the payload, or to "erased" for
//! the events a subject had when it was erased. Log retention by size
//! (spec 3.9) removes the front of the log at random: the model drops the
//! events before the log's new start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annal::{Direction, Error, EventData, ExpectedVersion, Log, LogView, Options, Reader, StreamMetadata};
use proptest::prelude::*;

const STREAMS: usize = 4;
const MINUTE: u64 = 60 * 1_000_000_000;
/// Clock steps are 10 minutes, ages whole hours: a reader in another process
/// (whose clock is the system's, a few seconds past the start) sees nothing
/// hidden by age, deterministically.
const STEP: u64 = 10 * MINUTE;
const HOUR: u64 = 60 * MINUTE;

#[derive(Debug, Clone)]
enum Op {
    Append {
        s: usize,
        n: u64,
    },
    AppendNoStream {
        s: usize,
    },
    Delete {
        s: usize,
    },
    HardDelete {
        s: usize,
    },
    Meta {
        s: usize,
        tb: Option<u64>,
        mc: Option<u64>,
        age_h: Option<u64>,
    },
    Tick,
    Reopen,
    Erase {
        p: usize,
    },
    /// Log retention by size (spec 3.9): keep about this many KiB.
    Retain {
        kib: u64,
    },
    /// Compaction (spec 3.10) of the sealed segments.
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..STREAMS;
    prop_oneof![
        6 => (s.clone(), 1..4u64).prop_map(|(s, n)| Op::Append { s, n }),
        1 => s.clone().prop_map(|s| Op::AppendNoStream { s }),
        1 => s.clone().prop_map(|s| Op::Delete { s }),
        1 => (0..8usize).prop_map(|s| Op::HardDelete { s }),
        2 => (s, proptest::option::of(0..12u64), proptest::option::of(1..5u64), proptest::option::of(1..4u64))
            .prop_map(|(s, tb, mc, age_h)| Op::Meta { s, tb, mc, age_h }),
        3 => Just(Op::Tick),
        1 => Just(Op::Reopen),
        1 => (0..3usize).prop_map(|p| Op::Erase { p }),
        1 => (1..16u64).prop_map(|kib| Op::Retain { kib }),
        1 => Just(Op::Compact),
    ]
}

#[derive(Debug, Clone, Default)]
struct Rules {
    deleted: bool,
    tombstone: bool,
    tb: Option<u64>,
    mc: Option<u64>,
    age: Option<u64>,
}

#[derive(Debug, Clone)]
struct Ev {
    position: u64,
    version: u64,
    ts: u64,
    tag: String,
    subject: Option<String>,
    erased: bool,
    /// Compaction removed it (it still counts for the stream's version).
    removed: bool,
}

impl Ev {
    /// What a read returns of it (see [`tags`]).
    fn read_as(&self) -> String {
        if self.erased {
            ERASED.to_owned()
        } else {
            self.tag.clone()
        }
    }
}

/// How [`tags`] shows an erased event.
const ERASED: &str = "<erased>";

/// The subject the event at `position` names, if any.
fn subject_of(position: u64) -> Option<String> {
    position.is_multiple_of(2).then(|| format!("p{}", (position / 2) % 3))
}

/// Every event's payload: its tag, as a typed event (postcard), so that
/// aggregates can load it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TagEvent(String);

impl annal::Event for TagEvent {
    fn event_type(&self) -> &'static str {
        "E"
    }
}

/// An aggregate that keeps the tags of its stream's events, in order (an
/// erased event as [`ERASED`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Tags(Vec<String>);

impl annal::Aggregate for Tags {
    type Event = TagEvent;
    type Command = ();
    type Error = String;
    fn handle(&self, _: &()) -> Result<Vec<TagEvent>, String> {
        Ok(Vec::new())
    }
    fn apply(&mut self, e: &TagEvent) {
        self.0.push(e.0.clone());
    }
    fn apply_erased(&mut self, _: &annal::RecordRef<'_>) {
        self.0.push(ERASED.to_owned());
    }
}

fn event(tag: String, position: u64) -> EventData<'static> {
    let e = EventData::new("E", postcard::to_allocvec(&TagEvent(tag)).unwrap());
    match subject_of(position) {
        Some(p) => e.with_subject(p),
        None => e,
    }
}

#[derive(Debug, Default)]
struct Model {
    events: Vec<Vec<Ev>>,
    rules: Vec<Option<Rules>>,
    next_position: u64,
    /// Streams outside the model's, deleted while they had no events
    /// (`true`: hard).
    others: std::collections::HashMap<String, bool>,
}

fn name(s: usize) -> String {
    format!("s-{s}")
}

impl Model {
    fn new() -> Model {
        Model {
            events: vec![Vec::new(); STREAMS],
            rules: vec![None; STREAMS],
            next_position: 0,
            others: Default::default(),
        }
    }

    fn last(&self, s: usize) -> Option<u64> {
        self.events[s].last().map(|e| e.version)
    }

    /// The version a writer finds for stream `s`: a tombstoned stream whose
    /// events compaction removed has none left.
    fn found(&self, s: usize) -> Option<u64> {
        self.events[s].iter().rev().find(|e| !e.removed).map(|e| e.version)
    }

    fn reads_as_deleted(&self, s: usize) -> bool {
        self.rules[s]
            .as_ref()
            .is_some_and(|r| r.tombstone || (r.deleted && self.last(s).is_none_or(|l| l < r.tb.unwrap_or(0))))
    }

    fn visible(&self, s: usize, now: u64) -> Vec<Ev> {
        let Some(r) = &self.rules[s] else {
            return self.events[s].iter().filter(|e| !e.removed).cloned().collect();
        };
        if r.tombstone {
            return Vec::new();
        }
        let last = self.last(s);
        self.events[s]
            .iter()
            .filter(|e| !e.removed)
            .filter(|e| r.tb.is_none_or(|t| e.version >= t))
            .filter(|e| r.mc.is_none_or(|n| last.is_some_and(|l| e.version + n > l)))
            .filter(|e| r.age.is_none_or(|a| e.ts.saturating_add(a) >= now))
            .cloned()
            .collect()
    }

    /// Every visible event of every stream, in position order.
    fn all_visible(&self, now: u64) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = (0..STREAMS)
            .flat_map(|s| self.visible(s, now).into_iter().map(|e| (e.position, e.read_as())))
            .collect();
        v.sort();
        v
    }
}

/// The positions of the events a projection is given.
struct Positions;

impl annal::Projection for Positions {
    type Model = std::collections::BTreeSet<u64>;
    fn empty(&self) -> Self::Model {
        Default::default()
    }
    fn apply(&self, m: &mut Self::Model, r: &annal::RecordRef<'_>) {
        assert!(!r.is_sealed(), "projections get records unsealed");
        m.insert(r.position());
    }
    fn apply_erased(&self, m: &mut Self::Model, r: &annal::RecordRef<'_>) {
        assert!(r.is_erased());
        m.insert(r.position());
    }
    fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
        a.extend(b);
        a
    }
}

/// Each record's position and payload, unsealed (or [`ERASED`]).
fn tags<'a>(
    view: &'a LogView,
    it: impl Iterator<Item = annal::Result<annal::RecordRef<'a>>>,
) -> annal::Result<Vec<(u64, String)>> {
    it.map(|r| {
        let u = view.unseal(r?)?;
        Ok((
            u.record().position(),
            if u.is_erased() {
                ERASED.to_owned()
            } else {
                postcard::from_bytes::<String>(u.payload()).unwrap()
            },
        ))
    })
    .collect()
}

/// Compare every read of `view` with the model at time `now`.
fn check_view(view: &LogView, m: &Model, now: u64, ctx: &str) {
    for s in 0..STREAMS {
        let vis = m.visible(s, now);
        let fwd = tags(view, view.read_stream(&name(s), 0, Direction::Forward, u64::MAX));
        if m.reads_as_deleted(s) {
            let tomb = m.rules[s].as_ref().is_some_and(|r| r.tombstone);
            match fwd {
                Err(Error::StreamDeleted { stream, tombstoned }) => {
                    assert_eq!((stream.as_str(), tombstoned), (name(s).as_str(), tomb), "{ctx}: s{s}");
                }
                other => panic!("{ctx}: s{s} reads as deleted in the model, got {other:?}"),
            }
            assert_eq!(view.stream_version(&name(s)).unwrap(), None, "{ctx}: s{s} version");
            continue;
        }
        let want: Vec<(u64, String)> = vis.iter().map(|e| (e.position, e.read_as())).collect();
        assert_eq!(fwd.unwrap(), want, "{ctx}: s{s} forward");
        let back = tags(view, view.read_stream(&name(s), u64::MAX, Direction::Backward, 3)).unwrap();
        let want_back: Vec<(u64, String)> = want.iter().rev().take(3).cloned().collect();
        assert_eq!(back, want_back, "{ctx}: s{s} backward");
        if let Some(mid) = vis.get(vis.len() / 2) {
            let from = tags(
                view,
                view.read_stream(&name(s), mid.version, Direction::Forward, u64::MAX),
            )
            .unwrap();
            assert_eq!(from, want[vis.len() / 2..], "{ctx}: s{s} from version {}", mid.version);
        }
        // From version 0 with hidden versions below: starts at the first visible.
        assert_eq!(
            view.stream_version(&name(s)).unwrap(),
            vis.last().map(|e| e.version),
            "{ctx}: s{s} version"
        );
        let meta = view.stream_metadata(&name(s)).unwrap();
        match (&m.rules[s], meta) {
            (None, None) => {}
            (Some(r), Some(got)) => {
                assert_eq!(
                    (got.deleted, got.tombstoned, got.truncate_before, got.max_count),
                    (r.deleted, r.tombstone, r.tb, r.mc),
                    "{ctx}: s{s} metadata"
                );
                assert_eq!(got.max_age.map(|d| d.as_nanos() as u64), r.age, "{ctx}: s{s} max_age");
            }
            (r, got) => panic!("{ctx}: s{s} metadata: model {r:?}, view {got:?}"),
        }
    }
    let all = m.all_visible(now);
    assert_eq!(tags(view, view.read_all(0)).unwrap(), all, "{ctx}: read_all");
    assert_eq!(tags(view, view.read_category("s", 0)).unwrap(), all, "{ctx}: category");
    assert_eq!(
        tags(view, view.read_event_type("E", 0)).unwrap(),
        all,
        "{ctx}: event type"
    );
    let mut back = tags(view, view.read_all_backward(u64::MAX)).unwrap();
    back.reverse();
    assert_eq!(back, all, "{ctx}: read_all_backward");
    // Projections see what the reads see.
    let positions: std::collections::BTreeSet<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(view.rebuild(&Positions).unwrap(), positions, "{ctx}: rebuild");
    assert_eq!(
        view.par_rebuild_chunks(&Positions, 5).unwrap(),
        positions,
        "{ctx}: par_rebuild"
    );
    assert_eq!(
        view.par_rebuild_by_stream(&Positions).unwrap(),
        positions,
        "{ctx}: par_rebuild_by_stream"
    );
    // Metadata events are there for whoever names them.
    let metas = m.rules.iter().filter(|r| r.is_some()).count() + m.others.len();
    let seen: std::collections::HashSet<String> = view
        .read_category("$meta", 0)
        .map(|r| r.unwrap().stream().to_owned())
        .collect();
    assert_eq!(seen.len(), metas, "{ctx}: $meta streams");
}

thread_local! {
    /// Events compaction removed in this thread's runs.
    static COMPACTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Compare the live log's subscriptions and aggregate loads with the model
/// at time `now`.
fn check_live(l: &Log, m: &Model, now: u64, ctx: &str) {
    let owned = |r: annal::OwnedRecord| {
        let tag = if r.erased {
            ERASED.to_owned()
        } else {
            postcard::from_bytes::<String>(&r.payload).unwrap()
        };
        (r.position, tag)
    };
    let mut sub = l.subscribe_all(0);
    let mut got = Vec::new();
    while let Some(r) = sub.try_next().unwrap_or_else(|e| panic!("{ctx}: subscribe_all: {e}")) {
        got.push(owned(r));
    }
    assert_eq!(got, m.all_visible(now), "{ctx}: subscribe_all");
    for s in 0..STREAMS {
        let vis = m.visible(s, now);
        let repo = annal::Repository::<Tags>::new(l);
        if m.reads_as_deleted(s) {
            assert!(
                matches!(repo.load(&name(s)), Err(Error::StreamDeleted { .. })),
                "{ctx}: s{s} aggregate of a deleted stream"
            );
            continue;
        }
        let want: Vec<(u64, String)> = vis.iter().map(|e| (e.position, e.read_as())).collect();
        let mut sub = l.subscribe_stream(&name(s), 0);
        let mut got = Vec::new();
        while let Some(r) = sub
            .try_next()
            .unwrap_or_else(|e| panic!("{ctx}: subscribe_stream s{s}: {e}"))
        {
            got.push(owned(r));
        }
        assert_eq!(got, want, "{ctx}: s{s} subscribe_stream");
        let tags: Vec<String> = want.iter().map(|e| e.1.clone()).collect();
        let loaded = repo.load(&name(s)).unwrap_or_else(|e| panic!("{ctx}: s{s} load: {e}"));
        assert_eq!(loaded.state.0, tags, "{ctx}: s{s} aggregate");
        if let Some(mid) = vis.get(vis.len() / 2) {
            let upto = vis.len() / 2 + 1;
            let by_version = repo
                .load_as_of(&name(s), annal::AsOf::Version(mid.version))
                .unwrap_or_else(|e| panic!("{ctx}: s{s} load as of version: {e}"));
            assert_eq!(
                by_version.state.0,
                tags[..upto],
                "{ctx}: s{s} as of version {}",
                mid.version
            );
            let by_position = repo
                .load_as_of(&name(s), annal::AsOf::Position(mid.position))
                .unwrap_or_else(|e| panic!("{ctx}: s{s} load as of position: {e}"));
            assert_eq!(
                by_position.state.0,
                tags[..upto],
                "{ctx}: s{s} as of position {}",
                mid.position
            );
        }
    }
}

/// Run `ops` against the model; returns how many positions retention removed.
fn run(ops: &[Op]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let clock = Arc::new(AtomicU64::new(start));
    let c = clock.clone();
    let opts = Options::default()
        .segment_size(8 << 10)
        .clock(Arc::new(move || c.load(Ordering::SeqCst)));
    let mut log = Some(Log::open_with(dir.path(), opts.clone()).unwrap());
    let mut m = Model::new();
    let mut retained = 0;
    for (i, op) in ops.iter().enumerate() {
        let ctx = format!("step {i} {op:?}");
        let l = log.as_ref().unwrap();
        let now = clock.load(Ordering::SeqCst);
        match op {
            Op::Append { s, n } => {
                let tomb = m.rules[*s].as_ref().is_some_and(|r| r.tombstone);
                let evs: Vec<EventData<'_>> = (0..*n)
                    .map(|k| event(format!("{}:{}", m.next_position + k, s), m.next_position + k))
                    .collect();
                match l.append(&name(*s), ExpectedVersion::Any, &evs) {
                    Ok(r) => {
                        assert!(!tomb, "{ctx}: a tombstoned stream took an append");
                        for k in 0..*n {
                            let v = r.stream_version + 1 - n + k;
                            m.events[*s].push(Ev {
                                position: r.first_position + k,
                                version: v,
                                ts: now,
                                tag: format!("{}:{}", m.next_position + k, s),
                                subject: subject_of(m.next_position + k),
                                erased: false,
                                removed: false,
                            });
                        }
                        assert_eq!(r.first_position, m.next_position, "{ctx}");
                        m.next_position += n;
                    }
                    Err(Error::StreamDeleted { tombstoned: true, .. }) => assert!(tomb, "{ctx}"),
                    Err(e) => panic!("{ctx}: {e}"),
                }
            }
            Op::AppendNoStream { s } => {
                let ok = m.events[*s].is_empty() || m.reads_as_deleted(*s);
                let tomb = m.rules[*s].as_ref().is_some_and(|r| r.tombstone);
                let tag = format!("{}:{}", m.next_position, s);
                match l.append(
                    &name(*s),
                    ExpectedVersion::NoStream,
                    &[event(tag.clone(), m.next_position)],
                ) {
                    Ok(r) => {
                        assert!(ok && !tomb, "{ctx}: NoStream accepted");
                        assert_eq!(
                            r.stream_version,
                            m.last(*s).map_or(0, |v| v + 1),
                            "{ctx}: versions go on"
                        );
                        m.events[*s].push(Ev {
                            position: r.first_position,
                            version: r.stream_version,
                            ts: now,
                            tag,
                            subject: subject_of(m.next_position),
                            erased: false,
                            removed: false,
                        });
                        m.next_position += 1;
                    }
                    Err(Error::StreamDeleted { tombstoned: true, .. }) => assert!(tomb, "{ctx}"),
                    Err(Error::WrongExpectedVersion { .. }) => assert!(!ok, "{ctx}: NoStream refused"),
                    Err(e) => panic!("{ctx}: {e}"),
                }
            }
            Op::Delete { s } | Op::HardDelete { s } => {
                let hard = matches!(op, Op::HardDelete { .. });
                // HardDelete picks from 8: half the time a stream with no events.
                let (s, stream) = if *s < STREAMS {
                    (*s, name(*s))
                } else {
                    (usize::MAX, format!("x-{s}"))
                };
                let tomb = match s < STREAMS {
                    true => m.rules[s].as_ref().is_some_and(|r| r.tombstone),
                    false => m.others.get(&stream).copied().unwrap_or(false),
                };
                let expected = match s < STREAMS {
                    true => m.last(s).map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                    false => ExpectedVersion::Any,
                };
                let r = if hard {
                    l.hard_delete_stream(&stream, expected)
                } else {
                    l.delete_stream(&stream, expected)
                };
                match r {
                    Ok(_) => {
                        assert!(!tomb, "{ctx}: a tombstoned stream was deleted again");
                        m.next_position += 1;
                        if s >= STREAMS {
                            m.others.insert(stream.clone(), hard);
                        } else {
                            let old = m.rules[s].clone().unwrap_or_default();
                            let next = m.last(s).map_or(0, |v| v + 1);
                            m.rules[s] = Some(Rules {
                                deleted: true,
                                tombstone: hard || old.tombstone,
                                tb: Some(old.tb.unwrap_or(0).max(next)),
                                ..old
                            });
                        }
                    }
                    Err(Error::StreamDeleted { tombstoned: true, .. }) => assert!(tomb, "{ctx}"),
                    Err(e) => panic!("{ctx}: {e}"),
                }
            }
            Op::Meta { s, tb, mc, age_h } => {
                let tomb = m.rules[*s].as_ref().is_some_and(|r| r.tombstone);
                let mut md = StreamMetadata::new();
                if let Some(t) = tb {
                    md = md.truncate_before(*t);
                }
                if let Some(n) = mc {
                    md = md.max_count(*n);
                }
                if let Some(h) = age_h {
                    md = md.max_age(Duration::from_nanos(h * HOUR));
                }
                match l.set_stream_metadata(&name(*s), md) {
                    Ok(_) => {
                        assert!(!tomb, "{ctx}");
                        m.next_position += 1;
                        let old = m.rules[*s].clone().unwrap_or_default();
                        m.rules[*s] = Some(Rules {
                            tb: if old.deleted { tb.or(old.tb) } else { *tb },
                            mc: *mc,
                            age: age_h.map(|h| h * HOUR),
                            ..old
                        });
                    }
                    Err(Error::StreamDeleted { tombstoned: true, .. }) => assert!(tomb, "{ctx}"),
                    Err(e) => panic!("{ctx}: {e}"),
                }
            }
            Op::Tick => {
                clock.fetch_add(STEP, Ordering::SeqCst);
            }
            Op::Retain { kib } => {
                let before = l.first_position();
                l.apply_retention_with(annal::Retention::new().max_bytes(kib << 10))
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                // The events before the log's new start are gone; a stream
                // that lost them all starts again at version 0 (spec 3.9).
                let first = l.first_position();
                assert!(first >= before, "{ctx}: the start moved back");
                retained += first - before;
                for evs in m.events.iter_mut() {
                    evs.retain(|e| e.position >= first);
                }
                // The retention record and the metadata appended again.
                m.next_position = l.view().unwrap().next_position();
            }
            Op::Compact => {
                // Sealed segments: every one but the newest (the active).
                let mut bases: Vec<u64> = std::fs::read_dir(dir.path())
                    .unwrap()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
                    .collect();
                bases.sort_unstable();
                let active = bases.last().copied().unwrap_or(0);
                let r = l.compact().unwrap_or_else(|e| panic!("{ctx}: {e}"));
                COMPACTED.with(|c| c.set(c.get() + r.removed_events));
                // What the rules hide now in sealed segments goes, but the
                // newest event of a stream that is not tombstoned (spec 3.10).
                for s in 0..STREAMS {
                    let shown: std::collections::HashSet<u64> = m.visible(s, now).iter().map(|e| e.position).collect();
                    let deleted = m.rules[s].as_ref().is_some_and(|r| r.tombstone);
                    let newest = m.events[s].last().map(|e| e.position);
                    for e in m.events[s].iter_mut() {
                        let keep_newest = !deleted && Some(e.position) == newest;
                        if e.position < active && !shown.contains(&e.position) && !keep_newest {
                            e.removed = true;
                        }
                    }
                }
                m.next_position = l.view().unwrap().next_position();
            }
            Op::Erase { p } => {
                let who = format!("p{p}");
                let had = m
                    .events
                    .iter()
                    .flatten()
                    .any(|e| e.subject.as_deref() == Some(&*who) && !e.erased);
                let erased = l.erase_subject(&who).unwrap();
                // A refused append may have made a key too (keys are made
                // before the append's atomic step): no event names it then.
                assert!(
                    erased.is_some() || !had,
                    "{ctx}: live events named it, but it had no key"
                );
                for e in m.events.iter_mut().flatten() {
                    if e.subject.as_deref() == Some(&*who) {
                        e.erased = true;
                    }
                }
            }
            Op::Reopen => {
                log.take().unwrap().close().unwrap();
                // Another process, whose clock is the system's: nothing is
                // hidden by age there (see STEP).
                let r = Reader::open(dir.path()).unwrap();
                check_view(&r.view().unwrap(), &m, start, &format!("{ctx} (reader)"));
                log = Some(Log::open_with(dir.path(), opts.clone()).unwrap());
            }
        }
        let l = log.as_ref().unwrap();
        let now = clock.load(Ordering::SeqCst);
        check_view(&l.view().unwrap(), &m, now, &ctx);
        check_live(l, &m, now, &ctx);
        for s in 0..STREAMS {
            assert_eq!(
                l.stream_version(&name(s)).unwrap(),
                m.found(s),
                "{ctx}: writer's version of s{s}"
            );
        }
    }
    // System streams are the library's.
    let l = log.as_ref().unwrap();
    let e = l.append(
        "$meta-s-0",
        ExpectedVersion::Any,
        &[EventData::new("E", b"x".as_slice())],
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    retained
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_hides_exactly_what_the_rules_hide(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

/// A history that surely crosses segments: retention removes a front, and
/// every read (and a `Reader` after the reopen) still equals the model.
#[test]
fn retention_in_the_model_removes_a_front() {
    let mut ops = Vec::new();
    for i in 0..60 {
        ops.push(Op::Append { s: i % STREAMS, n: 3 });
        if i % 20 == 19 {
            ops.push(Op::Retain { kib: 4 });
        }
    }
    ops.extend([
        Op::Delete { s: 1 },
        Op::Erase { p: 0 },
        Op::Retain { kib: 2 },
        Op::Reopen,
    ]);
    ops.extend((0..4).map(|s| Op::Append { s, n: 1 }));
    assert!(run(&ops) > 0, "retention removed nothing");
}

/// A history that surely compacts: rules hide events in sealed segments,
/// compaction removes them, rules are lowered again (what compaction removed
/// stays gone), a tombstoned stream loses every event, and every read (and a
/// `Reader` after the reopen) still equals the model.
#[test]
fn compaction_in_the_model_removes_hidden_events_for_good() {
    let mut ops = Vec::new();
    for i in 0..90 {
        ops.push(Op::Append {
            s: i % STREAMS,
            n: 1 + (i % 3) as u64,
        });
    }
    ops.extend([
        Op::Meta {
            s: 0,
            tb: Some(20),
            mc: None,
            age_h: None,
        },
        Op::Meta {
            s: 2,
            tb: None,
            mc: Some(3),
            age_h: None,
        },
        Op::Delete { s: 1 },
        Op::HardDelete { s: 3 },
        Op::Erase { p: 1 },
        Op::Compact,
        Op::Meta {
            s: 0,
            tb: Some(2),
            mc: None,
            age_h: None,
        },
        Op::Meta {
            s: 2,
            tb: None,
            mc: None,
            age_h: None,
        },
        Op::Reopen,
        Op::AppendNoStream { s: 1 },
        Op::Append { s: 2, n: 2 },
        Op::Meta {
            s: 0,
            tb: None,
            mc: None,
            age_h: Some(1),
        },
        Op::Tick,
        Op::Tick,
        Op::Tick,
        Op::Tick,
        Op::Tick,
        Op::Tick,
        Op::Tick,
        Op::Compact,
        Op::Reopen,
        Op::Compact,
    ]);
    ops.extend((0..STREAMS).map(|s| Op::Append { s, n: 1 }));
    COMPACTED.with(|c| c.set(0));
    run(&ops);
    assert!(COMPACTED.with(|c| c.get()) > 0, "compaction removed nothing");
}

#[test]
fn a_version_3_log_refuses_deletion_and_keeps_dollar_names_ordinary() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().format_version(3)).unwrap();
    log.append("$meta-a", ExpectedVersion::Any, &[EventData::new("E", b"x".as_slice())])
        .unwrap();
    let e = log.delete_stream("a", ExpectedVersion::Any).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("format version 4")),
        "{e}"
    );
    let view = log.view().unwrap();
    assert_eq!(view.read_all(0).count(), 1, "an ordinary stream in a version 3 log");
    assert_eq!(view.stream_metadata("a").unwrap(), None);
}

#[test]
fn a_deleted_stream_is_told_from_one_that_never_existed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append(
        "a-1",
        ExpectedVersion::NoStream,
        &[EventData::new("E", b"x".as_slice())],
    )
    .unwrap();
    log.delete_stream("a-1", ExpectedVersion::Exact(0)).unwrap();
    let view = log.view().unwrap();
    assert!(view.read_stream("never-1", 0, Direction::Forward, 10).next().is_none());
    assert!(matches!(
        view.read_stream("a-1", 0, Direction::Forward, 10).next(),
        Some(Err(Error::StreamDeleted { tombstoned: false, .. }))
    ));
    // The deletion checked the expected version.
    let e = log.delete_stream("a-1", ExpectedVersion::Exact(5)).unwrap_err();
    assert!(matches!(e, Error::WrongExpectedVersion { .. }), "{e}");
    // A subscription to it waits for its new life instead of failing.
    let mut sub = log.subscribe_stream("a-1", 0);
    assert!(sub.next_timeout(Duration::from_millis(1)).unwrap().is_none());
    log.append(
        "a-1",
        ExpectedVersion::Exact(0),
        &[EventData::new("E", b"y".as_slice())],
    )
    .unwrap();
    let r = sub
        .next_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the new life");
    assert_eq!((r.stream_version, r.payload.as_slice()), (1, b"y".as_slice()));
}
