//! Sealed segments read from the store (issue 18, spec 23.7): a remote
//! reader copies only the newest segment, opens each sealed segment by two
//! ranged reads (its header and its seal), fetches a segment whole into a
//! bounded cache only when a view reads it, and reads exactly what a local
//! reader reads; damage in the store is an error naming the object.
//!
//! The store counts its requests (whole GETs and ranged GETs by object), so
//! "fetches only what it reads" is asserted on counts, not on time.

#![cfg(feature = "remote")]

mod remote_support;

use remote_support::*;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use annal::remote::{RemoteLog, RemoteReader, Replicator};
use annal::{Direction, Error, EventData, ExpectedVersion, LogView, Reader, StreamPosition};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetResult, ObjectStore, PutOptions, PutPayload, PutResult};

/// An in-memory store that records every GET: `(object, ranged)`.
#[derive(Debug, Default)]
struct CountingStore {
    inner: InMemory,
    gets: Mutex<Vec<(String, bool)>>,
    puts: AtomicU64,
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingStore")
    }
}

impl CountingStore {
    /// Whole GETs of sealed segment objects since the last call.
    fn take_gets(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut *self.gets.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        let ranged = options.range.is_some();
        self.gets.lock().unwrap().push((location.to_string(), ranged));
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &ObjectPath) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(
        &self,
        _prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        panic!("a remote log is never listed: listings can lie")
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&ObjectPath>,
    ) -> object_store::Result<object_store::ListResult> {
        panic!("a remote log is never listed: listings can lie")
    }

    async fn copy(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

fn stream(view: &LogView, name: &str, dir: Direction) -> Vec<(u64, u64)> {
    let from = match dir {
        Direction::Forward => StreamPosition::Start,
        _ => StreamPosition::End,
    };
    view.read_stream(name, from, dir, u64::MAX)
        .map(|r| {
            let r = r.unwrap();
            (r.position(), r.stream_version())
        })
        .collect()
}

/// Whole GETs of sealed segment objects among `gets`.
fn segment_fetches(gets: &[(String, bool)]) -> Vec<&str> {
    gets.iter()
        .filter(|(o, ranged)| !ranged && o.contains("/segments/") && o.ends_with(".seg"))
        .map(|(o, _)| o.as_str())
        .collect()
}

/// The bases of the segment files in `dir`, in order.
fn segment_bases(dir: &std::path::Path) -> Vec<u64> {
    let mut b: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".seg").and_then(|b| b.parse().ok())
        })
        .collect();
    b.sort_unstable();
    b
}

/// Bytes of the files with extension `ext` in the reader's segment cache,
/// on disk.
fn cache_bytes_of(reader: &RemoteReader, ext: &str) -> u64 {
    std::fs::read_dir(reader.dir().join("annal.cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Bytes of the files in the reader's segment cache, on disk.
fn cache_bytes_on_disk(reader: &RemoteReader) -> u64 {
    std::fs::read_dir(reader.dir().join("annal.cache"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_remote_reader_reads_sealed_segments_from_the_store_within_its_budget() {
    let (_tmp, src, log) = source(900);
    // A stream that only the newest batches hold.
    for i in 0..3 {
        log.append(
            "late",
            ExpectedVersion::Any,
            &[EventData::new("L", format!("late {i}"))],
        )
        .unwrap();
    }
    let store = Arc::new(CountingStore::default());
    let remote = RemoteLog::from_store(store.clone(), "logs/tiered", "memory://logs/tiered");
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    let local = Reader::open(&src).unwrap().view().unwrap();
    let sealed = local.segment_count() - 1;
    assert!(sealed >= 10, "{sealed} sealed segments");
    store.take_gets();

    let budget = 3 * (16 << 10) + 8 * 1024;
    let reader = RemoteReader::open_bounded(remote.clone(), budget).unwrap();
    // Opening read the manifests and the newest segment's parts, and each
    // sealed segment's header and seal by ranged reads: no whole segment.
    let view = reader.view().unwrap();
    let gets = store.take_gets();
    assert!(segment_fetches(&gets).is_empty(), "{gets:?}");
    let ranged = gets.iter().filter(|(o, r)| *r && o.contains("/segments/")).count();
    assert_eq!(ranged, 2 * sealed, "a header and a seal per sealed segment: {gets:?}");
    assert_eq!(view.segment_count(), local.segment_count());
    // Only the newest segment is in the reader's directory.
    let segs = std::fs::read_dir(reader.dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(segs, 1);

    // A stream held by the newest sealed segments fetches only those.
    assert_eq!(
        stream(&view, "late", Direction::Backward),
        stream(&local, "late", Direction::Backward)
    );
    let fetched = segment_fetches(&store.take_gets()).len();
    assert!(
        fetched <= 1,
        "{fetched} segments fetched for a stream in the newest ones"
    );
    drop(view);
    // A stream in every segment, its newest events: the index files of the
    // segments that hold it are read, and only the newest segments'
    // records.
    let bases = segment_bases(&src);
    for n in [3, 40] {
        let view = reader.view().unwrap();
        let newest: Vec<u64> = view
            .read_stream("s-3", StreamPosition::End, Direction::Backward, n)
            .map(|r| r.unwrap().position())
            .collect();
        assert_eq!(newest.len() as u64, n);
        // The sealed segments holding them (the newest one is local).
        let mut holding: Vec<u64> = newest
            .iter()
            .map(|p| *bases.iter().rfind(|b| *b <= p).unwrap())
            .filter(|b| Some(b) != bases.last())
            .collect();
        holding.dedup();
        let fetched = segment_fetches(&store.take_gets()).len();
        assert!(
            fetched <= holding.len(),
            "{fetched} segments fetched for the newest {n} events of a stream, held by {}",
            holding.len()
        );
        drop(view);
    }

    // A replay reads every segment: the same events as the local log.
    let view = reader.view().unwrap();
    assert_eq!(view_events(&view), view_events(&local));
    let stats = reader.cache_stats().unwrap();
    assert!(stats.held_bytes > budget, "a live view holds what it read: {stats:?}");
    for s in ["s-0", "s-7", "late"] {
        for d in [Direction::Forward, Direction::Backward] {
            assert_eq!(stream(&view, s, d), stream(&local, s, d), "{s} {d:?}");
        }
    }
    assert_eq!(
        view.read_category("s", 0)
            .map(|r| r.unwrap().position())
            .collect::<Vec<_>>(),
        local
            .read_category("s", 0)
            .map(|r| r.unwrap().position())
            .collect::<Vec<_>>()
    );
    drop(view);
    // Once no view holds them, the next refresh keeps the cache within its
    // budget, on disk too.
    reader.refresh().unwrap();
    let stats = reader.cache_stats().unwrap();
    assert!(stats.bytes <= budget, "{stats:?}");
    // What stays held is index files the reader keeps open between views
    // (at most half the budget), never a segment.
    assert!(stats.held_bytes <= budget / 2, "{stats:?}");
    assert!(stats.held_bytes <= cache_bytes_of(&reader, "idx"), "{stats:?}");
    assert_eq!(cache_bytes_on_disk(&reader), stats.bytes);
    assert!(stats.fetches as usize >= sealed, "{stats:?}");

    // Replays again, one view at a time: each fetches what the cache let go
    // of, never more than once per view, and reads the same events.
    let before = stats.fetches;
    assert_eq!(view_events(&reader.view().unwrap()), view_events(&local));
    let again = reader.cache_stats().unwrap().fetches - before;
    assert!(again as usize <= 2 * sealed, "a segment and its index at most: {again}");

    // New rounds: the reader follows, through seals, and reads them all.
    append(&log, 900, 300);
    rt.block_on(rep.ship_once()).unwrap();
    let local = Reader::open(&src).unwrap().view().unwrap();
    assert_eq!(view_events(&reader.view().unwrap()), view_events(&local));
    let segs = std::fs::read_dir(reader.dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(segs, 1, "still only the newest segment is copied");
    let dir = reader.dir().to_owned();
    drop(reader);
    assert!(!dir.exists());
    log.close().unwrap();
}

#[test]
fn damage_in_the_store_is_an_error_naming_the_object() {
    let (tmp, src, log) = source(500);
    let store_dir = tmp.path().join("store");
    let url = format!("file://{}", store_dir.display());
    let remote = RemoteLog::open(&url).unwrap();
    let rt = rt();
    rt.block_on(Replicator::new(&src, remote.clone()).ship_once()).unwrap();
    log.close().unwrap();
    let mut objects: Vec<_> = std::fs::read_dir(store_dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    objects.sort();
    assert!(objects.len() >= 4);

    // A byte in the middle of a sealed segment: the view opens (header and
    // seal are intact) and reading it fails on its BLAKE3, naming it.
    let mid = &objects[1];
    let mut bytes = std::fs::read(mid).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(mid, &bytes).unwrap();
    let reader = Reader::open_remote(&url).unwrap();
    let view = reader.view().unwrap();
    let name = mid.file_name().unwrap().to_string_lossy().into_owned();
    let err = view
        .read_all(0)
        .find_map(|r| r.err())
        .expect("an error, not a silent prefix");
    match &err {
        Error::Remote { object, detail } => {
            assert!(object.ends_with(&name), "{object}");
            assert!(detail.contains("BLAKE3"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Events before the damaged segment were delivered, and none after it.
    let delivered: Vec<u64> = view.read_all(0).map_while(|r| r.ok()).map(|r| r.position()).collect();
    assert_eq!(delivered.first(), Some(&0));
    drop(view);
    drop(reader);
    bytes[at] ^= 0x40;
    std::fs::write(mid, &bytes).unwrap();

    // A header damaged: the view itself fails, naming the object.
    let first = &objects[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[9] ^= 0x01;
    std::fs::write(first, &bytes).unwrap();
    let reader = Reader::open_remote(&url).unwrap();
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    match reader.view() {
        Err(Error::Corrupt { path, .. } | Error::UnsupportedVersion { path, .. }) => {
            assert!(path.to_string_lossy().ends_with(&name), "{path:?}")
        }
        other => panic!("{other:?}"),
    }
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("never happened: {what}");
}

#[test]
fn reads_below_what_local_retention_left_go_to_the_store() {
    use annal::remote::{Follow, RestoreTo, restore};
    let ms = std::time::Duration::from_millis;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let store = Arc::new(CountingStore::default());
    let remote = RemoteLog::from_store(store.clone(), "r", "memory://r");
    let log = annal::Options::default()
        .segment_size(16 << 10)
        .durability(annal::Durability::Fsync)
        .retention(annal::Retention::new().max_bytes(3 * (16 << 10)))
        .replicate_to(remote.clone(), Follow::every(ms(2)).backoff(ms(1), ms(4)))
        .remote_cache_bytes(4 * (16 << 10))
        .open(&src)
        .unwrap();
    // A stream that only the first segment holds, and one in every segment.
    log.append(
        "early",
        ExpectedVersion::Any,
        &[EventData::new("E", "first"), EventData::new("E", "second")],
    )
    .unwrap();
    append(&log, 0, 700);
    let next = log.next_position();
    eventually("the front removed and everything shipped", || {
        log.first_position() > 0
            && log
                .replication()
                .and_then(|s| s.last)
                .is_some_and(|r| r.shipped_position == next)
    });
    let first = log.first_position();
    assert!(first > 0);
    // The store holds the whole log: the reference.
    let dst = tmp.path().join("dst");
    rt().block_on(restore(&remote, &dst, RestoreTo::Latest)).unwrap();
    let whole = Reader::open(&dst).unwrap().view().unwrap();
    assert_eq!(whole.next_position(), next);

    // The writer's views show the whole log.
    let view = log.view().unwrap();
    assert_eq!(view_events(&view), view_events(&whole));
    assert_eq!(view.read_all(0).next().unwrap().unwrap().position(), 0);
    for s in ["early", "s-0", "s-5", "s-11"] {
        for d in [Direction::Forward, Direction::Backward] {
            assert_eq!(stream(&view, s, d), stream(&whole, s, d), "{s} {d:?}");
        }
    }
    assert_eq!(stream(&view, "early", Direction::Forward).len(), 2);
    drop(view);
    // A subscription from 0 delivers from 0.
    let mut sub = log.subscribe_all(0);
    let want: Vec<u64> = view_events(&whole).iter().map(|e| e.0).collect();
    let got: Vec<u64> = want.iter().map(|_| sub.next().unwrap().unwrap().position).collect();
    assert_eq!(got, want);
    drop(sub);

    // A reader of the directory alone starts where retention left it; with
    // the store, it reads the whole log.
    let local = Reader::open(&src).unwrap().view().unwrap();
    assert_eq!(local.read_all(0).next().unwrap().unwrap().position(), first);
    assert!(stream(&local, "early", Direction::Forward).is_empty());
    drop(local);
    let reader = Reader::open(&src)
        .unwrap()
        .with_remote(remote.clone(), 1 << 20)
        .unwrap();
    let view = reader.view().unwrap();
    assert_eq!(view_events(&view), view_events(&whole));
    for s in ["early", "s-3"] {
        for d in [Direction::Forward, Direction::Backward] {
            assert_eq!(stream(&view, s, d), stream(&whole, s, d), "{s} {d:?}");
        }
    }
    drop(view);
    // The writer's cache lives in the log directory, within its budget once
    // no view holds a copy.
    let _ = log.view().unwrap();
    let cache: u64 = std::fs::read_dir(src.join("annal.cache"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(cache <= 4 * (16 << 10), "{cache}");
    log.close().unwrap();
    clean(&src);
}

#[test]
fn annal_read_and_stats_of_a_url_read_sealed_segments_from_the_store() {
    let (tmp, src, log) = source(600);
    let url = format!("file://{}", tmp.path().join("store").display());
    let rt = rt();
    rt.block_on(Replicator::new(&src, RemoteLog::open(&url).unwrap()).ship_once())
        .unwrap();
    log.close().unwrap();
    let annal = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let local = src.to_str().unwrap();
    for extra in [&["--stream", "s-3"][..], &["--stream", "s-3", "--backward"], &[]] {
        let mut remote_args = vec!["read", url.as_str()];
        remote_args.extend_from_slice(extra);
        let mut local_args = vec!["read", local];
        local_args.extend_from_slice(extra);
        let (r, l) = (annal(&remote_args), annal(&local_args));
        assert!(!l.is_empty());
        assert_eq!(r, l, "{extra:?}");
    }
    let events =
        |s: &str| -> serde_json::Value { serde_json::from_str::<serde_json::Value>(s).unwrap()["events"].clone() };
    assert_eq!(
        events(&annal(&["stats", url.as_str(), "--json"])),
        events(&annal(&["stats", local, "--json"]))
    );
}

#[test]
fn a_stream_read_fetches_only_the_segments_it_reads_not_those_it_could_read_ahead() {
    // Batches of 20 events of one stream, ten streams in turn: the newest
    // 20 events of a stream are one batch, and a read ahead that counted a
    // batch per event wanted would reach into every older segment.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = log_in(&src);
    for i in 0..400u64 {
        let evs: Vec<EventData> = (0..20)
            .map(|k| EventData::new("E", format!("{i}.{k} {}", "x".repeat(100))))
            .collect();
        log.append(&format!("s-{}", i % 10), ExpectedVersion::Any, &evs)
            .unwrap();
    }
    let store = Arc::new(CountingStore::default());
    let remote = RemoteLog::from_store(store.clone(), "logs/ahead", "memory://logs/ahead");
    rt().block_on(Replicator::new(&src, remote.clone()).ship_once())
        .unwrap();
    log.close().unwrap();
    let bases = segment_bases(&src);
    assert!(bases.len() > 8, "{} segments", bases.len());
    let reader = RemoteReader::open(remote).unwrap();
    store.take_gets();
    let view = reader.view().unwrap();
    // s-3's newest batch is sealed (the newest batches are s-9's).
    let got: Vec<u64> = view
        .read_stream("s-3", StreamPosition::End, Direction::Backward, 20)
        .map(|r| r.unwrap().position())
        .collect();
    assert_eq!(got.len(), 20);
    let fetched = segment_fetches(&store.take_gets()).len();
    assert_eq!(fetched, 1, "the one segment holding the batch");
}

#[test]
fn annal_retain_with_remote_removes_only_what_the_store_holds_confirmed() {
    let (tmp, src, log) = source(700);
    log.close().unwrap();
    let url = format!("file://{}", tmp.path().join("store").display());
    let whole = events(&src);
    let segments = || {
        std::fs::read_dir(&src)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
            .count() as u64
    };
    let segments_before = segments();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
        .args([
            "retain",
            src.to_str().unwrap(),
            "--max-bytes",
            "48K",
            "--json",
            "--remote",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let first = v["first_position"].as_u64().unwrap();
    let confirmed = v["confirmed_below"].as_u64().unwrap();
    assert!(first > 0, "{v}");
    assert!(first <= confirmed, "{v}");
    assert!(v["removed_segments"].as_u64().unwrap() > 0, "{v}");
    // What it says it removed is what is gone (the active segment, grown
    // by the retention record, is not counted).
    assert_eq!(
        v["removed_segments"].as_u64().unwrap(),
        segments_before - segments(),
        "{v}"
    );
    // The store holds the whole log; the directory starts at `first`, and
    // with the store a reader sees the whole log again.
    let dst = tmp.path().join("dst");
    rt().block_on(annal::remote::restore(
        &RemoteLog::open(&url).unwrap(),
        &dst,
        annal::remote::RestoreTo::Latest,
    ))
    .unwrap();
    let user = |e: &Vec<(u64, String, u64, Vec<u8>)>| -> Vec<(u64, String, u64, Vec<u8>)> {
        e.iter().filter(|r| !r.1.starts_with('$')).cloned().collect()
    };
    assert_eq!(user(&events(&dst))[..whole.len()], whole[..]);
    assert_eq!(events(&src).first().unwrap().0, first);
    let reader = Reader::open(&src)
        .unwrap()
        .with_remote(RemoteLog::open(&url).unwrap(), 1 << 20)
        .unwrap();
    assert_eq!(user(&view_events(&reader.view().unwrap())), user(&events(&dst)));
    clean(&src);
}

#[cfg(unix)]
#[test]
fn a_writer_refuses_a_symlinked_cache_and_never_touches_what_it_points_to() {
    use annal::remote::Follow;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    log_in(&src).close().unwrap();
    // Another log's files, and a copy named as the cache names its own.
    let other = tmp.path().join("other-log");
    std::fs::create_dir(&other).unwrap();
    let files = [
        other.join("00000000000000000000.seg"),
        other.join("00000000000000000000.idx"),
        other.join("00000000000000000000-0123456789abcdef0123456789abcdef.seg"),
    ];
    for f in &files {
        std::fs::write(f, b"precious").unwrap();
    }
    std::os::unix::fs::symlink(&other, src.join("annal.cache")).unwrap();
    let ms = std::time::Duration::from_millis;
    let opened = annal::Options::default()
        .segment_size(16 << 10)
        .retention(annal::Retention::new().max_bytes(3 * (16 << 10)))
        .replicate_to(memory(), Follow::every(ms(2)))
        .open(&src);
    let err = opened.expect_err("a symlinked cache directory is refused");
    let msg = err.to_string();
    assert!(msg.contains("annal.cache") && msg.contains("symbolic link"), "{msg}");
    for f in &files {
        assert_eq!(std::fs::read(f).unwrap(), b"precious", "{}", f.display());
    }
    assert!(
        std::fs::symlink_metadata(src.join("annal.cache"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A store that can be down (every GET fails while it is), recording
/// every GET: `(object, ranged)`.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    down: std::sync::atomic::AtomicBool,
    gets: Mutex<Vec<(String, bool)>>,
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlakyStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.gets
            .lock()
            .unwrap()
            .push((location.to_string(), options.range.is_some()));
        if self.down.load(SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FlakyStore",
                source: "the store is down".into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &ObjectPath) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[test]
fn a_store_that_is_down_never_fails_local_reads_and_is_not_asked_at_every_view() {
    // A log whose front retention removed, every segment in the store.
    let (tmp, src, log) = source(700);
    log.close().unwrap();
    let folder = tmp.path().join("store");
    let url = format!("file://{}", folder.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["retain", src.to_str().unwrap(), "--max-bytes", "48K", "--remote", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = segment_bases(&src)[0];
    assert!(first > 0);
    let store = Arc::new(FlakyStore {
        inner: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&folder).unwrap()),
        down: Default::default(),
        gets: Default::default(),
    });
    let remote = RemoteLog::from_store(store.clone(), "", &url);
    let manifest_gets = || {
        std::mem::take(&mut *store.gets.lock().unwrap())
            .iter()
            .filter(|(o, _)| o.starts_with("manifest"))
            .count()
    };

    // Down from the start: views are the directory's, local reads work,
    // and the store is asked once, not at every view.
    store.down.store(true, SeqCst);
    let reader = Reader::open(&src)
        .unwrap()
        .with_remote(remote.clone(), 1 << 20)
        .unwrap();
    for _ in 0..20 {
        let view = reader.view().unwrap();
        assert_eq!(view.read_all(0).next().unwrap().unwrap().position(), first);
        assert!(!stream(&view, "s-3", Direction::Backward).is_empty());
    }
    let asked = manifest_gets();
    assert!((1..=3).contains(&asked), "{asked} GETs of manifests for 20 views");
    drop(reader);

    // Up: the whole log (its segments opened, none fetched), the store
    // asked once.
    store.down.store(false, SeqCst);
    let reader = Reader::open(&src)
        .unwrap()
        .with_remote(remote.clone(), 1 << 20)
        .unwrap();
    let segments = reader.view().unwrap().segment_count();
    assert!(segments > segment_bases(&src).len());
    assert!(manifest_gets() >= 1);
    for _ in 0..20 {
        assert_eq!(reader.view().unwrap().segment_count(), segments);
    }
    assert_eq!(manifest_gets(), 0, "a list that fits is not taken again");
    // Down again: the segments it opened still fit and are shown, without
    // a request; a read that needs one is an error naming its object.
    store.down.store(true, SeqCst);
    let view = reader.view().unwrap();
    assert_eq!(view.segment_count(), segments);
    assert_eq!(manifest_gets(), 0);
    match view.read_all(0).next().unwrap() {
        Err(Error::Remote { object, .. }) => {
            assert!(object.contains("segments/00000000000000000000-"), "{object}")
        }
        other => panic!("{other:?}"),
    }
    // Local reads still work.
    let newest = view
        .read_stream("s-3", StreamPosition::End, Direction::Backward, 1)
        .next()
        .unwrap();
    assert!(newest.unwrap().position() >= first);
}
