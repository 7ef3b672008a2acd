//! Feature `tracing`: what annal emits, captured by a subscriber and
//! checked against what the log did.
//!
//! One global subscriber (set once, for every thread: the sealer thread
//! indexes sealed segments) records every closed span, with its fields as
//! recorded by then, and every event, with the spans it happened in. Tests
//! run in parallel, so each test looks only at what names its own
//! directory: every span and event of annal carries the log directory or a
//! file in it, on itself or on a span it happened in.
//!
//! Cases: a group commit's span carries the events and bytes of a known
//! append, its fsync and its time; a roll gives a roll span and, on the
//! sealer thread, a seal span naming the sealed segment and its length;
//! opening a log whose tail was torn gives a truncation event naming the
//! file, offset and bytes cut, and the open span records it; a missing
//! index file gives an index rewrite event at open, a damaged one an event
//! when a read finds it and a rewrite event when the writer replaces it; a
//! missing stream table a rebuild event at open; a
//! damaged snapshot file, and one of another schema, give skip events; a
//! failed fsync gives an error event naming the cause; `check` gives a span
//! with its counts; a warning of `Recovery::warnings` is a warn event;
//! segments removed by retention and segments compacted are info events.

#![cfg(feature = "tracing")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use annal::segment::segment_file_name;
use annal::snapshot_testing as st;
use annal::{CheckOptions, Direction, Durability, Error, EventData, ExpectedVersion, Log, Options, Snapshot};
use support::TestIo;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// ------------------------------------------------------------ the capture

/// A closed span or an event, as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// A span's name, or an event's message.
    name: String,
    span: bool,
    level: Level,
    fields: BTreeMap<String, String>,
    /// The names and fields of the spans it is inside, innermost first.
    scope: Vec<(String, BTreeMap<String, String>)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn u64(&self, name: &str) -> u64 {
        let v = self
            .field(name)
            .unwrap_or_else(|| panic!("{} has no field {name}: {self:?}", self.name));
        v.parse()
            .unwrap_or_else(|_| panic!("{}: {name} = {v:?} is not a number", self.name))
    }

    /// Whether it, or a span it is inside, names `needle` in a field.
    fn mentions(&self, needle: &str) -> bool {
        self.fields.values().any(|v| v.contains(needle))
            || self.scope.iter().any(|(_, f)| f.values().any(|v| v.contains(needle)))
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let scope = ctx
            .event_scope(event)
            .map(|s| s.map(|span| (span.name().to_owned(), fields_of(&span))).collect())
            .unwrap_or_default();
        let name = f.0.remove("message").unwrap_or_default();
        push(Seen {
            name,
            span: false,
            level: *event.metadata().level(),
            fields: f.0,
            scope,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let scope = span
            .scope()
            .skip(1)
            .map(|s| (s.name().to_owned(), fields_of(&s)))
            .collect();
        push(Seen {
            name: span.name().to_owned(),
            span: true,
            level: *span.metadata().level(),
            fields: fields_of(&span),
            scope,
        });
    }
}

fn fields_of<S: for<'a> LookupSpan<'a>>(
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
) -> BTreeMap<String, String> {
    span.extensions()
        .get::<Fields>()
        .map(|f| f.0.clone())
        .unwrap_or_default()
}

fn push(s: Seen) {
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
}

/// Everything seen so far that names `dir` (or a file in it).
fn seen(dir: &Path) -> Vec<Seen> {
    let needle = dir.display().to_string();
    let all = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    all.iter().filter(|s| s.mentions(&needle)).cloned().collect()
}

fn spans(dir: &Path, name: &str) -> Vec<Seen> {
    seen(dir).into_iter().filter(|s| s.span && s.name == name).collect()
}

fn events(dir: &Path, message: &str) -> Vec<Seen> {
    seen(dir)
        .into_iter()
        .filter(|s| !s.span && s.name.contains(message))
        .collect()
}

// ------------------------------------------------------------ helpers

fn scratch() -> tempfile::TempDir {
    install();
    tempfile::tempdir().expect("tempdir")
}

fn seg(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_file_name(base))
}

fn idx(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

fn len(p: &Path) -> u64 {
    fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len()
}

fn one(stream: &str, log: &Log, n: usize) {
    let evs: Vec<EventData> = (0..n).map(|i| EventData::new("T", format!("event {i}"))).collect();
    log.append(stream, ExpectedVersion::Any, &evs).expect("append");
}

fn segment_count(dir: &Path) -> usize {
    let names = fs::read_dir(dir).expect("list").flatten();
    names
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .count()
}

/// A log whose first segment (base 0) rolled once: sealed, indexed, and
/// holding stream `a`; closed.
fn rolled(dir: &Path) {
    let log = Options::default().segment_size(4096).open(dir).expect("open");
    for _ in 0..1000 {
        one("a", &log, 4);
        if segment_count(dir) > 1 {
            break;
        }
    }
    assert_eq!(segment_count(dir), 2, "one roll");
    log.close().expect("close");
}

// ------------------------------------------------------------ the cases

#[test]
fn a_group_commit_span_carries_the_events_and_bytes_of_an_append() {
    let dir = scratch();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .expect("open");
    let active = seg(dir.path(), 0);
    let before = len(&active);
    one("order-1", &log, 3);
    let written = len(&active) - before;
    log.close().expect("close");

    let commits: Vec<Seen> = spans(dir.path(), "annal.group_commit")
        .into_iter()
        .filter(|s| s.field("events") == Some("3"))
        .collect();
    assert_eq!(commits.len(), 1, "one group commit of the 3 events: {commits:#?}");
    let c = &commits[0];
    assert_eq!(c.level, Level::DEBUG);
    assert_eq!(c.u64("bytes"), written, "the group wrote the batch's bytes");
    assert_eq!(c.field("synced"), Some("true"), "Durability::Fsync syncs the group");
    c.u64("fsync_us");
}

#[test]
fn a_buffered_group_commit_is_not_synced() {
    let dir = scratch();
    let log = Log::open(dir.path()).expect("open");
    one("order-1", &log, 2);
    let commits = spans(dir.path(), "annal.group_commit");
    let c = commits
        .iter()
        .find(|s| s.field("events") == Some("2"))
        .unwrap_or_else(|| panic!("a group commit of the 2 events: {commits:#?}"));
    assert_eq!(c.field("synced"), Some("false"));
    assert_eq!(c.field("fsync_us"), None, "no fsync, no time");
    log.close().expect("close");
}

#[test]
fn a_roll_gives_a_roll_span_and_the_sealer_a_seal_span() {
    let dir = scratch();
    rolled(dir.path());
    let sealed = seg(dir.path(), 0);
    let sealed_name = sealed.display().to_string();
    let rolls = spans(dir.path(), "annal.roll");
    assert_eq!(rolls.len(), 1, "{rolls:#?}");
    assert_eq!(rolls[0].field("sealed"), Some(sealed_name.as_str()));
    let next = rolls[0].u64("base");
    assert!(
        seg(dir.path(), next).exists(),
        "the roll names the next segment's base {next}"
    );
    let seals = spans(dir.path(), "annal.seal");
    assert_eq!(seals.len(), 1, "{seals:#?}");
    let s = &seals[0];
    assert_eq!(s.field("segment"), Some(sealed_name.as_str()));
    assert_eq!(s.u64("base"), 0);
    assert_eq!(s.u64("bytes"), len(&sealed), "the sealed segment's length");
    assert_eq!(s.u64("next_segment"), next);
}

#[test]
fn a_torn_tail_at_open_gives_a_truncation_event() {
    let dir = scratch();
    let log = Log::open(dir.path()).expect("open");
    one("a", &log, 2);
    log.close().expect("close");
    let active = seg(dir.path(), 0);
    let end = len(&active);
    // Bytes past the durable end that are no frame: a torn write.
    let mut bytes = fs::read(&active).expect("read");
    bytes.extend_from_slice(&[0x5a; 40]);
    fs::write(&active, bytes).expect("write");

    let log = Log::open(dir.path()).expect("reopen");
    let cut = log.recovery().truncated.clone().expect("recovery cut the tail");
    log.close().expect("close");
    let evs = events(dir.path(), "torn tail");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let e = &evs[0];
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.field("file"), Some(active.display().to_string().as_str()));
    assert_eq!(e.u64("offset"), end);
    assert_eq!(e.u64("bytes"), 40);
    assert_eq!(e.field("reason"), Some(cut.reason.as_str()));
    assert!(
        e.scope.iter().any(|(name, _)| name == "annal.open"),
        "inside the open span: {e:#?}"
    );
    let opens: Vec<Seen> = spans(dir.path(), "annal.open")
        .into_iter()
        .filter(|s| s.field("truncated_bytes") == Some("40"))
        .collect();
    assert_eq!(opens.len(), 1, "the open records the bytes cut");
    assert_eq!(opens[0].u64("segments"), 1);
    assert_eq!(opens[0].field("created"), Some("false"));
}

#[test]
fn a_missing_index_file_gives_a_rewrite_event_at_open() {
    let dir = scratch();
    rolled(dir.path());
    let idx0 = idx(dir.path(), 0);
    fs::remove_file(&idx0).expect("remove the index");

    let log = Log::open(dir.path()).expect("reopen");
    assert_eq!(log.recovery().rebuilt_indexes, std::slice::from_ref(&idx0));
    log.close().expect("close");
    let evs = events(dir.path(), "rewrote an index file");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].level, Level::WARN);
    assert_eq!(evs[0].field("file"), Some(idx0.display().to_string().as_str()));
    assert_eq!(evs[0].field("why"), Some("missing"));
    assert!(
        spans(dir.path(), "annal.open")
            .iter()
            .any(|s| s.field("rebuilt_indexes") == Some("1"))
    );
}

#[test]
fn a_missing_stream_table_gives_a_rebuild_event_at_open() {
    let dir = scratch();
    rolled(dir.path());
    let table = dir.path().join(annal::STREAM_TABLE_FILE);
    fs::remove_file(&table).expect("remove the stream table");

    let log = Log::open(dir.path()).expect("reopen");
    assert!(log.recovery().rebuilt_stream_table);
    log.close().expect("close");
    let evs = events(dir.path(), "rebuilt the stream table");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].field("file"), Some(table.display().to_string().as_str()));
    assert_eq!(evs[0].field("why"), Some("missing or damaged"));
}

#[test]
fn a_damaged_index_file_gives_a_damage_event_then_a_rewrite_event() {
    let dir = scratch();
    rolled(dir.path());
    let idx0 = idx(dir.path(), 0);
    let mut bytes = fs::read(&idx0).expect("read");
    bytes[0] ^= 0xff;
    fs::write(&idx0, bytes).expect("write");

    let log = Log::open(dir.path()).expect("reopen");
    let idx_name = idx0.display().to_string();
    assert!(events(dir.path(), "index file damaged").is_empty(), "not read yet");
    let view = log.view().expect("view");
    let read = view
        .read_stream("a", 0, Direction::Forward, 1)
        .next()
        .expect("an event")
        .expect("read");
    assert_eq!(read.stream(), "a");
    assert_eq!(view.index_damage().len(), 1);
    let found = events(dir.path(), "index file damaged");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].level, Level::WARN);
    assert_eq!(found[0].field("file"), Some(idx_name.as_str()));
    assert_eq!(found[0].u64("offset"), 0);
    // The writer replaces the file (here at close).
    drop(view);
    log.close().expect("close");
    let rewrites = events(dir.path(), "rewrote an index file");
    assert_eq!(rewrites.len(), 1, "{rewrites:#?}");
    assert_eq!(rewrites[0].field("file"), Some(idx_name.as_str()));
    assert_eq!(rewrites[0].field("why"), Some("found damaged by a read"));
}

fn snap(stream: &str, version: u64, schema: u32) -> Snapshot {
    Snapshot {
        stream: stream.to_owned(),
        stream_version: version,
        position: version,
        schema_version: schema,
        payload: b"state".to_vec(),
        subject_keys: Vec::new(),
    }
}

#[test]
fn snapshot_saves_loads_and_skips_are_traced() {
    let dir = scratch();
    let io: Arc<dyn annal::io::Io> = Arc::new(annal::io::StdIo);
    let good = st::save(dir.path(), io.clone(), &snap("acct-1", 3, 1), 5).expect("save");
    let saves = spans(dir.path(), "annal.snapshot_save");
    assert_eq!(saves.len(), 1, "{saves:#?}");
    assert_eq!(saves[0].field("stream"), Some("acct-1"));
    assert_eq!(saves[0].u64("version"), 3);
    assert_eq!(saves[0].u64("bytes"), len(&good));

    // A newer snapshot, damaged: skipped, and the older one loaded.
    let bad = st::save(dir.path(), io.clone(), &snap("acct-1", 7, 1), 5).expect("save");
    let mut bytes = fs::read(&bad).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&bad, bytes).expect("write");
    let (loaded, warnings) = st::load(dir.path(), "acct-1", 1, None).expect("load");
    assert_eq!(loaded.map(|s| s.stream_version), Some(3));
    assert_eq!(warnings.len(), 1);
    let skips = events(dir.path(), "skipped a snapshot");
    assert_eq!(skips.len(), 1, "{skips:#?}");
    assert_eq!(skips[0].level, Level::WARN);
    assert_eq!(skips[0].field("stream"), Some("acct-1"));
    assert_eq!(skips[0].field("why"), Some(warnings[0].as_str()));
    assert!(
        skips[0]
            .field("why")
            .is_some_and(|w| w.contains(&bad.display().to_string()))
    );
    let loads = spans(dir.path(), "annal.snapshot_load");
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].u64("version"), 3);

    // Another schema: skipped, and said why.
    let (loaded, _) = st::load(dir.path(), "acct-1", 2, None).expect("load");
    assert!(loaded.is_none());
    let skips = events(dir.path(), "skipped a snapshot");
    assert_eq!(
        skips.len(),
        3,
        "the damaged file again, and the other schema: {skips:#?}"
    );
    assert!(skips.iter().any(|s| {
        s.field("why")
            .is_some_and(|w| w.contains("schema version 1, expected 2"))
    }));
    let loads = spans(dir.path(), "annal.snapshot_load");
    assert!(
        loads.iter().any(|s| s.field("version").is_none()),
        "nothing found, no version"
    );
}

#[test]
fn a_failed_fsync_poisons_with_an_error_event() {
    let dir = scratch();
    let io = TestIo::new();
    let ctl = io.ctl.clone();
    let log = Options::default()
        .durability(Durability::Fsync)
        .io(Arc::new(io))
        .open(dir.path())
        .expect("open");
    one("a", &log, 1);
    assert!(events(dir.path(), "poisoned").is_empty());
    support::Ctl::set(&ctl.fail_seg_sync, true);
    let err = log
        .append("a", ExpectedVersion::Any, &[EventData::new("T", "x")])
        .expect_err("the fsync fails");
    assert!(matches!(err, Error::Io { op: "fsync", .. }), "{err:?}");
    let evs = events(dir.path(), "poisoned");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].level, Level::ERROR);
    assert!(
        evs[0].field("cause").is_some_and(|c| c.contains("injected")),
        "{evs:#?}"
    );
    let commits = spans(dir.path(), "annal.group_commit");
    assert!(
        commits
            .iter()
            .any(|s| s.field("events") == Some("1") && s.field("synced").is_none()),
        "the failed group's span has no fsync result: {commits:#?}"
    );
    assert!(log.close().is_err());
}

#[test]
fn check_gives_a_span_with_its_counts() {
    let dir = scratch();
    let log = Log::open(dir.path()).expect("open");
    one("a", &log, 2);
    one("b", &log, 3);
    log.close().expect("close");
    let report = annal::check(dir.path(), CheckOptions::default()).expect("check");
    assert!(report.is_ok());
    let checks = spans(dir.path(), "annal.check");
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let c = &checks[0];
    assert_eq!(c.level, Level::INFO);
    assert_eq!(c.u64("records"), 5);
    assert_eq!(c.u64("records"), report.records);
    assert_eq!(c.u64("files"), report.files);
    assert_eq!(c.u64("problems"), 0);
    assert_eq!(c.field("repair"), Some("false"));
}

#[cfg(unix)]
#[test]
fn a_recovery_warning_is_a_warn_event() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let log = Log::open(dir.path()).expect("open");
    let warnings = log.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    log.close().expect("close");
    let evs = events(dir.path(), "annal warning");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].level, Level::WARN);
    assert_eq!(evs[0].field("warning"), Some(warnings[0].as_str()));
    let opens = spans(dir.path(), "annal.open");
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].field("created"), Some("true"));
}

#[test]
fn a_reader_open_is_traced() {
    let dir = scratch();
    Log::open(dir.path()).expect("open").close().expect("close");
    annal::Reader::open(dir.path()).expect("reader");
    assert_eq!(spans(dir.path(), "annal.reader_open").len(), 1);
}

#[test]
fn retention_removals_are_info_events() {
    let dir = scratch();
    let log = Options::default().segment_size(4096).open(dir.path()).expect("open");
    for _ in 0..1000 {
        one("a", &log, 4);
        if segment_count(dir.path()) > 4 {
            break;
        }
    }
    let report = log
        .apply_retention_with(annal::Retention::new().max_bytes(1))
        .expect("retain");
    log.close().expect("close");
    assert!(!report.removed_segments.is_empty(), "{report:?}");
    let evs = events(dir.path(), "retention removed a segment");
    assert_eq!(evs.len(), report.removed_segments.len(), "{evs:#?}");
    for (e, removed) in evs.iter().zip(&report.removed_segments) {
        assert_eq!(e.level, Level::INFO);
        assert_eq!(e.field("file"), Some(removed.display().to_string().as_str()));
    }
}

#[test]
fn compactions_are_info_events() {
    let dir = scratch();
    let log = Options::default().segment_size(4096).open(dir.path()).expect("open");
    for i in 0..40 {
        one(if i % 2 == 0 { "gone" } else { "kept" }, &log, 4);
    }
    log.hard_delete_stream("gone", ExpectedVersion::Any).expect("delete");
    let rolled_past = segment_count(dir.path()) + 1;
    for _ in 0..1000 {
        one("kept", &log, 4);
        if segment_count(dir.path()) > rolled_past {
            break;
        }
    }
    log.sync().expect("sync");
    let report = log.compact().expect("compact");
    log.close().expect("close");
    assert!(!report.compacted.is_empty(), "{report:?}");
    let evs = events(dir.path(), "compacted a segment");
    assert_eq!(evs.len(), report.compacted.len(), "{evs:#?}");
    let names: Vec<String> = report.compacted.iter().map(|p| p.display().to_string()).collect();
    assert!(
        evs.iter()
            .all(|e| e.level == Level::INFO && names.iter().any(|n| e.field("file") == Some(n)))
    );
    let removed: u64 = evs.iter().map(|e| e.u64("removed_events")).sum();
    assert_eq!(removed, report.removed_events);
    let after: u64 = evs.iter().map(|e| e.u64("bytes_after")).sum();
    assert_eq!(after, report.bytes_after);
}
