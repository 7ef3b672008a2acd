//! Replicas and remote readers (issue 18, spec 23.6): a local read-only
//! copy of a remote log kept up to date round by round, read by `Reader`s
//! (subscriptions included), surviving a crash of its own, refusing to
//! become what it is not; `Reader::open_remote` over a temporary cache.
//!
//! - a replica follows rounds of shipping (new parts, segments sealed
//!   between rounds, new sealed segments) and reads as the source, event
//!   for event; `check` on it is clean;
//! - a subscription of a `Reader` on the replica sees every event once, in
//!   order, while rounds arrive;
//! - bytes a crash left past the replica's head are cut at the next open;
//! - a compaction of the source rewrites the replica's segment;
//! - a directory that is a log (or holds other files) is refused, a replica
//!   of another log diverges and copies nothing;
//! - a remote reader reads what was shipped, sees later rounds at its next
//!   view, and removes its cache when dropped;
//! - on SeaweedFS: a remote reader tails a live log shipped by its writer
//!   (one remote log shared by the writer's replicator thread and the
//!   reader's runtime: requests never wait on a connection of a runtime
//!   that is not running).

#![cfg(feature = "remote")]

mod remote_support;

use remote_support::*;

use std::time::Duration;

use annal::remote::{Follow, REPLICA_FILE, RemoteReader, Replica, Replicator};
use annal::{Error, Options, Reader};

#[test]
fn a_replica_follows_rounds_and_reads_as_the_source() {
    let (tmp, src, log) = source(40);
    let remote = memory();
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    let dst = tmp.path().join("replica");
    let mut replica = Replica::open(remote.clone(), &dst).unwrap();
    // Nothing shipped yet: nothing to copy, no error.
    assert_eq!(rt.block_on(replica.sync_once()).unwrap().manifest_seq, 0);
    let mut batches = 40;
    for round in 0..12u64 {
        rt.block_on(rep.ship_once()).unwrap();
        let r = rt.block_on(replica.sync_once()).unwrap();
        assert_eq!(r.next_position, log.next_position(), "round {round}: {r:?}");
        assert_eq!(events(&dst), events(&src), "round {round}");
        // Rounds alternate a few events (a part of the active segment) and
        // enough to seal the active segment and more.
        let n = if round % 2 == 0 { 3 } else { 120 };
        append(&log, batches, n);
        batches += n;
    }
    rt.block_on(rep.ship_once()).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    // An idle round copies nothing.
    let idle = rt.block_on(replica.sync_once()).unwrap();
    assert_eq!((idle.objects, idle.bytes), (0, 0), "{idle:?}");
    assert_eq!(events(&dst), events(&src));
    drop(replica);
    clean(&dst);
    log.close().unwrap();
}

#[test]
fn a_reader_subscription_on_a_replica_sees_every_event_once() {
    let (tmp, src, log) = source(10);
    let remote = memory();
    let dst = tmp.path().join("replica");
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    let mut replica = Replica::open(remote.clone(), &dst).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    let total = {
        let mut batches = 10;
        for _ in 0..8 {
            append(&log, batches, 50);
            batches += 50;
        }
        log.next_position()
    };
    let reader = Reader::open(&dst).unwrap();
    let sub = reader.subscribe_all(0);
    let copier = std::thread::spawn(move || {
        // Rounds of a few batches each: the subscription sees them arrive.
        let rt = remote_support::rt();
        loop {
            let shipped = rt.block_on(rep.ship_once()).unwrap();
            let copied = rt.block_on(replica.sync_once()).unwrap();
            if copied.next_position == shipped.durable_position && copied.next_position == total {
                return replica;
            }
        }
    });
    let mut seen = Vec::new();
    for r in sub {
        let r = r.unwrap();
        seen.push(r.position);
        if r.position + 1 == total {
            break;
        }
    }
    let replica = copier.join().unwrap();
    let expected: Vec<u64> = events(&src).iter().map(|e| e.0).collect();
    assert_eq!(seen, expected, "every event once, in order");
    drop(replica);
    log.close().unwrap();
}

#[test]
fn bytes_a_crash_left_past_the_replicas_head_are_cut_at_the_next_open() {
    let (tmp, src, log) = source(30);
    let remote = memory();
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    let dst = tmp.path().join("replica");
    let mut replica = Replica::open(remote.clone(), &dst).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    drop(replica);
    // A round that wrote part of its bytes and crashed before its head.
    let active = newest_segment(&dst);
    let len = std::fs::metadata(&active).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
    std::io::Write::write_all(&mut f, &[0xAB; 300]).unwrap();
    drop(f);
    let mut replica = Replica::open(remote.clone(), &dst).unwrap();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len, "cut back to the head");
    append(&log, 30, 20);
    rt.block_on(rep.ship_once()).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    assert_eq!(events(&dst), events(&src));
    drop(replica);
    clean(&dst);
    log.close().unwrap();
}

/// The bytes of every segment file of `dir`.
fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// The segment file of `dir` with the highest base.
fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn a_compaction_of_the_source_rewrites_the_replicas_segment() {
    let (tmp, src, log) = source(200);
    // Hide most of one stream, roll, and compact the sealed segments.
    log.set_stream_metadata("s-3", annal::StreamMetadata::new().max_count(1))
        .unwrap();
    let remote = memory();
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    let dst = tmp.path().join("replica");
    let mut replica = Replica::open(remote.clone(), &dst).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    let before = segment_bytes(&dst);
    let report = log.compact().unwrap();
    assert!(!report.compacted.is_empty(), "{report:?}");
    rt.block_on(rep.ship_once()).unwrap();
    let r = rt.block_on(replica.sync_once()).unwrap();
    assert!(r.objects > 0, "{r:?}");
    assert_eq!(events(&dst), events(&src));
    // The replica's files are the rewritten ones, byte for byte.
    let after = segment_bytes(&dst);
    assert!(after < before, "{after} < {before}");
    assert_eq!(after, segment_bytes(&src));
    drop(replica);
    clean(&dst);
    log.close().unwrap();
}

#[test]
fn a_log_directory_is_never_made_a_replica() {
    let (tmp, src, log) = source(5);
    let remote = memory();
    let mut rep = Replicator::new(&src, remote.clone());
    rt().block_on(rep.ship_once()).unwrap();
    log.close().unwrap();
    let before = events(&src);
    match Replica::open(remote.clone(), &src) {
        Err(Error::NotALog { detail, .. }) => assert!(detail.contains(REPLICA_FILE), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(!src.join(REPLICA_FILE).exists());
    assert_eq!(events(&src), before);
    // Nor a file, nor a link to a directory.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Replica::open(remote.clone(), &file),
        Err(Error::NotALog { .. })
    ));
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &link).unwrap();
    std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    assert!(matches!(Replica::open(remote, &link), Err(Error::NotALog { .. })));
    assert!(
        std::fs::read_dir(tmp.path().join("elsewhere"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_replica_of_another_log_diverges_and_copies_nothing() {
    let (tmp, src, log) = source(20);
    let (_tmp2, other_src, other) = source(20);
    let (one, two) = (memory(), memory());
    let rt = rt();
    rt.block_on(Replicator::new(&src, one.clone()).ship_once()).unwrap();
    rt.block_on(Replicator::new(&other_src, two.clone()).ship_once())
        .unwrap();
    let dst = tmp.path().join("replica");
    let mut replica = Replica::open(one, &dst).unwrap();
    rt.block_on(replica.sync_once()).unwrap();
    drop(replica);
    let before = events(&dst);
    let mut wrong = Replica::open(two, &dst).unwrap();
    match rt.block_on(wrong.sync_once()) {
        Err(Error::Diverged { detail, .. }) => assert!(detail.contains("log id"), "{detail}"),
        other => panic!("{other:?}"),
    }
    drop(wrong);
    assert_eq!(events(&dst), before);
    // A replica is locked while it lives: a second one (or a writer) is refused.
    let _held = Replica::open(memory(), &dst).unwrap();
    assert!(matches!(Replica::open(memory(), &dst), Err(Error::Locked { .. })));
    assert!(matches!(annal::Log::open(&dst), Err(Error::Locked { .. })));
    log.close().unwrap();
    other.close().unwrap();
}

#[test]
fn a_remote_reader_reads_what_was_shipped_and_removes_its_cache() {
    let (tmp, src, log) = source(80);
    let url = format!("file://{}", tmp.path().join("store").display());
    let remote = annal::remote::RemoteLog::open(&url).unwrap();
    // Nothing shipped: a clear error, and no cache left behind.
    match Reader::open_remote(&url) {
        Err(Error::Remote { detail, .. }) => assert!(detail.contains("nothing was shipped"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let rt = rt();
    let mut rep = Replicator::new(&src, remote.clone());
    rt.block_on(rep.ship_once()).unwrap();
    let reader = Reader::open_remote(&url).unwrap();
    let cache = reader.dir().to_owned();
    let read = |view: &annal::LogView| -> Vec<u64> { view.read_all(0).map(|r| r.unwrap().position()).collect() };
    assert_eq!(
        read(&reader.view().unwrap()),
        (0..log.next_position()).collect::<Vec<_>>()
    );
    // The same checks as a local read: a stream, backwards, by its index.
    let local = Reader::open(&src).unwrap().view().unwrap();
    let stream = |v: &annal::LogView| -> Vec<u64> {
        v.read_stream("s-5", annal::StreamPosition::End, annal::Direction::Backward, 7)
            .map(|r| r.unwrap().position())
            .collect()
    };
    assert_eq!(stream(&reader.view().unwrap()), stream(&local));
    append(&log, 80, 200);
    rt.block_on(rep.ship_once()).unwrap();
    assert_eq!(
        read(&reader.view().unwrap()),
        (0..log.next_position()).collect::<Vec<_>>()
    );
    drop(reader);
    assert!(!cache.exists(), "the temporary cache is removed");
    // A kept cache: reused by the next open, which copies only what is new.
    let kept = tmp.path().join("kept");
    drop(RemoteReader::open_in(remote.clone(), &kept).unwrap());
    append(&log, 280, 3);
    rt.block_on(rep.ship_once()).unwrap();
    let again = RemoteReader::open_in(remote, &kept).unwrap();
    assert_eq!(
        read(&again.view().unwrap()),
        (0..log.next_position()).collect::<Vec<_>>()
    );
    assert!(kept.join(REPLICA_FILE).exists());
    log.close().unwrap();
}

#[test]
fn on_seaweedfs_a_remote_reader_tails_a_live_log() {
    let remote = s3("tail");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = Options::default()
        .segment_size(16 << 10)
        .durability(annal::Durability::Fsync)
        .replicate_to(remote.clone(), Follow::every(Duration::from_millis(5)))
        .open(&src)
        .unwrap();
    append(&log, 0, 5);
    // The remote reader opens once something was shipped.
    let reader = loop {
        match RemoteReader::open(remote.clone()) {
            Ok(r) => break r,
            Err(Error::Remote { detail, .. }) if detail.contains("nothing was shipped") => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut seen = 0u64;
    let mut batches = 5;
    // Appends continue while the reader tails: each view sees a prefix of
    // the log that only grows, whole batches only.
    for _ in 0..40 {
        append(&log, batches, 10);
        batches += 10;
        let view = reader.view().unwrap();
        let positions: Vec<u64> = view.read_all(0).map(|r| r.unwrap().position()).collect();
        assert_eq!(positions, (0..positions.len() as u64).collect::<Vec<_>>());
        assert!(positions.len() as u64 >= seen, "never shrinks");
        seen = positions.len() as u64;
    }
    let next = log.next_position();
    let handle = log.clone();
    log.close().unwrap();
    let status = handle.replication().unwrap();
    assert!(status.error.is_none(), "{status:?}");
    // After the writer's last round, the reader sees everything.
    let view = reader.view().unwrap();
    assert_eq!(view.read_all(0).count() as u64, next);
    assert_eq!(view_events(&view), events(&src));
}
