//! Scenario: group commit and `sync` under concurrency.
//!
//! * Many threads append single-event batches with `Durability::Fsync`: all
//!   succeed, the log holds them all after a reopen, and they share fsyncs
//!   (fewer fsyncs than appends, counted through the I/O seam). The counts are
//!   printed; no timing is asserted.
//! * `sync` with `Durability::Buffered` makes what was appended before it
//!   survive: a copy of the log's files taken while it is open (no close)
//!   reopens with every event, and so does the image of only the bytes that
//!   were fsynced (an I/O seam that keeps a "durable" copy of every file),
//!   taken while appenders keep going.
//! * Appenders, `sync` callers and `view` callers running together finish
//!   (no deadlock), in both durability modes.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Log, Options};
use support::{
    Ack, CrashIo, Ctl, Rec, TestIo, assert_acks_present, assert_contiguous, assert_stream_versions, read_log,
    read_view, within,
};

fn payload(thread: usize, i: usize) -> Vec<u8> {
    format!("thread {thread} append {i}").into_bytes()
}

fn expected_for(v: Option<u64>) -> ExpectedVersion {
    v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

#[test]
fn concurrent_fsync_appends_share_fsyncs() {
    const THREADS: usize = 16;
    const APPENDS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let io = TestIo::new();
    let ctl = io.ctl.clone();
    let log = Arc::new(
        Log::open_with(
            dir.path(),
            Options::default().durability(Durability::Fsync).io(Arc::new(io)),
        )
        .expect("open"),
    );
    let (syncs0, writes0) = (Ctl::get(&ctl.seg_syncs), Ctl::get(&ctl.seg_writes));

    let acks = within(Duration::from_secs(120), "the Fsync appenders", {
        let log = log.clone();
        move || {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        let s = format!("fsync-{t}");
                        let mut acks = Vec::with_capacity(APPENDS);
                        let mut version = None;
                        for i in 0..APPENDS {
                            let p = payload(t, i);
                            let r = log
                                .append(&s, expected_for(version), &[EventData::new("Committed", p.as_slice())])
                                .unwrap_or_else(|e| panic!("thread {t}, append {i}: {e}"));
                            version = Some(r.stream_version);
                            acks.push(Ack::new(&s, r, vec![p]));
                        }
                        acks
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("appender panicked"))
                .collect::<Vec<Ack>>()
        }
    });
    let appends = (THREADS * APPENDS) as u64;
    let fsyncs = Ctl::get(&ctl.seg_syncs) - syncs0;
    let writes = Ctl::get(&ctl.seg_writes) - writes0;
    println!(
        "group commit: {appends} appends ({THREADS} threads x {APPENDS}), {fsyncs} fsyncs, {writes} writes, \
         {:.2} events per fsync, {:.2} events per write",
        appends as f64 / fsyncs as f64,
        appends as f64 / writes as f64
    );
    assert_eq!(acks.len() as u64, appends);
    assert!(fsyncs > 0, "Fsync appends must fsync");
    assert!(
        fsyncs < appends,
        "group commit must share fsyncs between concurrent appenders: {fsyncs} fsyncs for {appends} appends"
    );
    assert!(writes <= appends, "one write per commit group at most: {writes} writes");
    // Every acknowledged append was durable, so positions are exactly 0..appends.
    let mut positions: Vec<u64> = acks.iter().map(|a| a.result.first_position).collect();
    positions.sort_unstable();
    assert!(
        positions.iter().copied().eq(0..appends),
        "positions are assigned once each"
    );
    drop(log);

    let recs = read_log(dir.path());
    assert_eq!(recs.len() as u64, appends);
    assert_contiguous(&recs);
    let last = assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    for t in 0..THREADS {
        assert_eq!(last[&format!("fsync-{t}")], APPENDS as u64 - 1);
    }
}

/// Copy the log's files into `dst` while it is open: the head file first,
/// then the segments in order (so the head never names a segment the copy
/// lacks).
fn copy_log(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    std::fs::copy(src.join(annal::HEAD_FILE), dst.join(annal::HEAD_FILE)).expect("copy head");
    let mut segs: Vec<_> = std::fs::read_dir(src)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    for p in segs {
        std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy segment");
    }
}

fn append_concurrently(log: &Arc<Log>, threads: usize, appends: usize, prefix: &str) -> Vec<Ack> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let s = format!("{prefix}-{t}");
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for i in 0..appends {
                    let p: Vec<Vec<u8>> = (0..1 + i % 4).map(|j| payload(t, i * 10 + j)).collect();
                    let r = log
                        .append(&s, ExpectedVersion::Any, &support::events("Buffered", &p))
                        .unwrap_or_else(|e| panic!("append: {e}"));
                    acks.push(Ack::new(&s, r, p));
                }
                acks
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("appender panicked"))
        .collect()
}

#[test]
fn buffered_sync_then_copy_reopens_with_every_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open_with(dir.path(), Options::default().segment_size(64 << 10)).expect("open"));
    let acks = append_concurrently(&log, 4, 400, "copy");
    log.sync().expect("sync");
    let next = log.next_position();

    let image = tempfile::tempdir().expect("tempdir");
    copy_log(dir.path(), image.path());
    // The writer goes on; the copy is independent of it.
    let later = append_concurrently(&log, 2, 50, "later");

    let img = Log::open(image.path()).expect("reopen the copy");
    assert!(
        img.recovery().truncated.is_none(),
        "nothing to cut: {:?}",
        img.recovery()
    );
    let recs = read_view(&img.view().expect("view"), 0);
    img.close().expect("close the copy");
    assert_eq!(
        recs.len() as u64,
        next,
        "the copy holds every event appended before sync()"
    );
    assert_contiguous(&recs);
    assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);

    drop(log);
    let recs = read_log(dir.path());
    assert_acks_present(&recs, &acks);
    assert_acks_present(&recs, &later);
}

#[test]
fn buffered_sync_makes_a_power_cut_image_complete() {
    const THREADS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let io = CrashIo::new();
    let log = Arc::new(
        Log::open_with(
            dir.path(),
            Options::default().segment_size(32 << 10).io(Arc::new(io.clone())),
        )
        .expect("open"),
    );
    let shared: Arc<Mutex<Vec<Ack>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, shared, stop) = (log.clone(), shared.clone(), stop.clone());
            std::thread::spawn(move || {
                let s = format!("crash-{t}");
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 20_000 {
                    let p: Vec<Vec<u8>> = (0..1 + i % 3).map(|j| payload(t, i * 10 + j)).collect();
                    let r = log
                        .append(&s, ExpectedVersion::Any, &support::events("Crash", &p))
                        .unwrap_or_else(|e| panic!("append: {e}"));
                    shared.lock().expect("acks").push(Ack::new(&s, r, p));
                    i += 1;
                }
            })
        })
        .collect();

    let images = tempfile::tempdir().expect("tempdir");
    let mut checked = Vec::new();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(40));
        let before: Vec<Ack> = shared.lock().expect("acks").clone();
        log.sync().expect("sync");
        let img = images.path().join(format!("image-{round}"));
        io.durable_image(&img); // appenders keep going meanwhile
        checked.push((img, before));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("appender panicked");
    }
    let all: Vec<Ack> = shared.lock().expect("acks").clone();
    log.sync().expect("final sync");
    let img = images.path().join("image-final");
    io.durable_image(&img);
    checked.push((img, all));

    for (img, before) in &checked {
        let l = Log::open(img).unwrap_or_else(|e| panic!("reopen the power-cut image {}: {e}", img.display()));
        let rec = l.recovery().clone();
        let recs: Vec<Rec> = read_view(&l.view().expect("view"), 0);
        l.close().expect("close image");
        let acked: usize = before.iter().map(|a| a.payloads.len()).sum();
        println!(
            "{}: {} events acknowledged before sync(), {} in the image, {} segments; recovery: {rec:?}",
            img.file_name().expect("name").to_string_lossy(),
            acked,
            recs.len(),
            std::fs::read_dir(img)
                .expect("dir")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
                })
                .count()
        );
        assert_contiguous(&recs);
        assert_stream_versions(&recs);
        assert_acks_present(&recs, before);
    }
    drop(log);
}

fn no_deadlock(durability: Durability) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        Log::open_with(
            dir.path(),
            Options::default().durability(durability).segment_size(32 << 10),
        )
        .expect("open"),
    );
    let appends = if durability == Durability::Fsync { 120 } else { 500 };
    let acks = within(Duration::from_secs(120), "appenders + sync + view", {
        let log = log.clone();
        move || {
            let done = Arc::new(AtomicBool::new(false));
            let syncers: Vec<_> = (0..2)
                .map(|_| {
                    let (log, done) = (log.clone(), done.clone());
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        while !done.load(Ordering::SeqCst) {
                            log.sync().expect("concurrent sync");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let viewer = {
                let (log, done) = (log.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while !done.load(Ordering::SeqCst) {
                        let v = log.view().expect("concurrent view");
                        let recs = read_view(&v, seen);
                        assert!(
                            recs.first().is_none_or(|r| r.position == seen),
                            "views continue where they ended"
                        );
                        seen += recs.len() as u64;
                        assert_eq!(v.next_position(), seen);
                    }
                    seen
                })
            };
            let acks = append_concurrently(&log, 6, appends, "busy");
            done.store(true, Ordering::SeqCst);
            let syncs: Vec<u64> = syncers
                .into_iter()
                .map(|h| h.join().expect("syncer panicked"))
                .collect();
            let seen = viewer.join().expect("viewer panicked");
            println!(
                "{durability:?}: {} appends, syncs per syncer {syncs:?}, viewer saw {seen} events",
                acks.len()
            );
            log.sync().expect("final sync");
            acks
        }
    });
    drop(log);
    let recs = read_log(dir.path());
    assert_contiguous(&recs);
    assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    let total: usize = acks.iter().map(|a| a.payloads.len()).sum();
    assert_eq!(recs.len(), total);
}

#[test]
fn appenders_sync_and_views_do_not_deadlock_buffered() {
    no_deadlock(Durability::Buffered);
}

#[test]
fn appenders_sync_and_views_do_not_deadlock_fsync() {
    no_deadlock(Durability::Fsync);
}
