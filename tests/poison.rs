//! Scenario: a write or fsync fails, and the writer is poisoned (spec 13).
//!
//! Through an I/O seam that fails chosen calls, each case appends until one
//! append fails with the injected I/O error. From then on every append and
//! every `sync` returns `Error::Poisoned`, even once the seam works again (a
//! later fsync that succeeds proves nothing after Linux dropped dirty pages),
//! and the writer writes nothing more. Reopened with the real file system,
//! the log holds every acknowledged append intact, the failed batch whole or
//! not at all, and takes appends again.
//!
//! Cases: a failed fsync (`Durability::Fsync`); a failed, torn write
//! (`Durability::Buffered`); a failure in each step of a segment roll (the
//! fsync of the segment being sealed, the create of the next segment, the
//! fsync of its header); a failed write of a head slot (after the batch was durable: that
//! append is acknowledged, the next call is poisoned); and several threads
//! appending when the fsync fails.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options};
use support::{Ack, Ctl, Rec, TestIo, assert_acks_present, assert_contiguous, assert_stream_versions, read_view};

const STREAMS: usize = 4;

/// Whether the batch whose append failed may be in the log after a reopen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// It was never written, or only torn: it must be absent.
    Absent,
    /// It was written before the failure (e.g. the fsync failed): whole or absent.
    WholeOrAbsent,
    /// The failure came after the batch was durable (the head slot): the
    /// append is acknowledged, the next one fails with `Poisoned` naming the
    /// failure and is absent.
    AckedThenPoisoned,
}

struct Case {
    name: &'static str,
    durability: Durability,
    segment_size: u64,
    /// Number of successful appends before the switch is turned on.
    arm_after: usize,
    /// Turn the failure on or off.
    arm: fn(&Ctl, bool),
    /// `op` of the expected `Error::Io`.
    op: &'static str,
    failed: Failed,
    /// The failure is in a segment roll.
    roll: bool,
}

fn payloads(i: usize, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|j| format!("append {i} event {j} {}", "x".repeat(100)).into_bytes())
        .collect()
}

fn expected_for(v: Option<u64>) -> ExpectedVersion {
    v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

fn assert_poisoned<T: std::fmt::Debug>(what: &str, res: Result<T, Error>) {
    match res {
        Err(Error::Poisoned { cause }) => {
            assert!(
                cause.contains("injected"),
                "{what}: the cause names the failure, got {cause:?}"
            )
        }
        other => panic!("{what}: expected Error::Poisoned, got {other:?}"),
    }
}

fn run(case: Case) {
    let name = case.name;
    let dir = tempfile::tempdir().expect("tempdir");
    let io = TestIo::new();
    let ctl = io.ctl.clone();
    let opts = Options::default()
        .durability(case.durability)
        .segment_size(case.segment_size);
    let log = Log::open_with(dir.path(), opts.clone().io(Arc::new(io))).expect("open");

    let stream = |i: usize| format!("p-{}", i % STREAMS);
    let mut versions: HashMap<String, Option<u64>> = (0..STREAMS).map(|i| (stream(i), None)).collect();
    let mut acks: Vec<Ack> = Vec::new();
    let mut failure = None;
    for i in 0..20_000 {
        if i == case.arm_after {
            (case.arm)(&ctl, true);
        }
        let s = stream(i);
        let p = payloads(i, 1 + i % 5);
        match log.append(&s, expected_for(versions[&s]), &support::events("Poison", &p)) {
            Ok(r) => {
                versions.insert(s.clone(), Some(r.stream_version));
                acks.push(Ack::new(&s, r, p));
            }
            Err(e) => {
                failure = Some((e, s, p));
                break;
            }
        }
    }
    let (err, failed_stream, failed_payloads) = failure.unwrap_or_else(|| panic!("{name}: no append failed"));
    match &err {
        Error::Io { op, .. } if case.failed != Failed::AckedThenPoisoned => {
            assert_eq!(*op, case.op, "{name}: failed operation ({err})")
        }
        // The batch was durable when the failure came: acknowledged, and the
        // next call reports the failure (issue 13, defect 11).
        Error::Poisoned { cause } if case.failed == Failed::AckedThenPoisoned => {
            assert!(cause.contains(&format!("{} ", case.op)), "{name}: {cause}")
        }
        other => panic!("{name}: the failing append must return the I/O error, got {other:?}"),
    }
    assert!(Ctl::get(&ctl.injected) >= 1);
    assert!(
        acks.len() >= case.arm_after,
        "{name}: appends before the switch succeeded"
    );
    println!("{name}: {} appends acknowledged, then: {err}", acks.len());

    // The seam works again; the writer must not trust it.
    (case.arm)(&ctl, false);
    let (writes, injected) = (Ctl::get(&ctl.seg_writes), Ctl::get(&ctl.injected));
    for round in 0..3 {
        for i in 0..STREAMS {
            let s = stream(i);
            let ev = [EventData::new("After", b"after".as_slice())];
            assert_poisoned(
                &format!("{name}: Exact append, round {round}"),
                log.append(&s, expected_for(versions[&s]), &ev),
            );
            assert_poisoned(
                &format!("{name}: Any append, round {round}"),
                log.append(&s, ExpectedVersion::Any, &ev),
            );
        }
        let ev = [EventData::new("After", b"after".as_slice())];
        assert_poisoned(
            &format!("{name}: new stream"),
            log.append("fresh", ExpectedVersion::NoStream, &ev),
        );
        assert_poisoned(&format!("{name}: sync, round {round}"), log.sync());
    }
    assert_eq!(
        Ctl::get(&ctl.seg_writes),
        writes,
        "{name}: a poisoned writer writes nothing"
    );
    assert_eq!(
        Ctl::get(&ctl.injected),
        injected,
        "{name}: a poisoned writer does not even try"
    );

    // What was acknowledged is still readable in this process.
    let recs = read_view(&log.view().expect("view of a poisoned log"), 0);
    assert_contiguous(&recs);
    assert_acks_present(&recs, &acks);
    assert_poisoned(&format!("{name}: close"), log.close());

    // Reopen with the real file system.
    let log = Log::open_with(dir.path(), opts.clone()).expect("reopen after the failure");
    println!("{name}: recovery on reopen: {:?}", log.recovery());
    let view = log.view().expect("view");
    let recs = read_view(&view, 0);
    assert_contiguous(&recs);
    let last = assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    let acked: usize = acks.iter().map(|a| a.payloads.len()).sum();
    if recs.len() == acked {
        println!("{name}: the failed batch is absent");
    } else {
        assert_eq!(
            case.failed,
            Failed::WholeOrAbsent,
            "{name}: the failed batch must be absent"
        );
        assert_eq!(
            recs.len(),
            acked + failed_payloads.len(),
            "{name}: the failed batch is whole or absent"
        );
        for (r, p) in recs[acked..].iter().zip(&failed_payloads) {
            assert_eq!(
                (&r.stream, &r.payload),
                (&failed_stream, p),
                "{name}: the surviving failed batch"
            );
        }
        println!("{name}: the failed batch survived whole");
    }
    if case.roll {
        assert!(view.segment_count() >= 2, "{name}: the failure was in a roll");
    }
    if ctl.torn_write.load(Ordering::SeqCst) {
        let t = log
            .recovery()
            .truncated
            .as_ref()
            .expect("the torn tail was cut on reopen");
        assert!(t.bytes_removed > 0);
    }

    // Appends work again, at the versions the reopened log has.
    for i in 0..STREAMS {
        assert_eq!(
            log.stream_version(&stream(i)).unwrap(),
            last.get(&stream(i)).copied(),
            "{name}: recovered version"
        );
    }
    let mut more = Vec::new();
    for i in 0..STREAMS * 3 {
        let s = stream(i);
        let expected = expected_for(log.stream_version(&s).unwrap());
        let p = payloads(100_000 + i, 2);
        let r = log
            .append(&s, expected, &support::events("Again", &p))
            .unwrap_or_else(|e| panic!("{name}: append after reopen: {e}"));
        more.push(Ack::new(&s, r, p));
    }
    log.sync().expect("sync after reopen");
    log.close().expect("close after reopen");
    let log = Log::open_with(dir.path(), opts).expect("second reopen");
    assert!(
        log.recovery().truncated.is_none(),
        "{name}: a clean close leaves nothing to cut"
    );
    let final_recs: Vec<Rec> = read_view(&log.view().expect("view"), 0);
    assert_contiguous(&final_recs);
    assert_stream_versions(&final_recs);
    assert_acks_present(&final_recs, &acks);
    assert_acks_present(&final_recs, &more);
    assert_eq!(final_recs.len(), recs.len() + STREAMS * 3 * 2);
    log.close().expect("close");
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    run(Case {
        name: "fsync fails",
        durability: Durability::Fsync,
        segment_size: 1 << 20,
        arm_after: 40,
        arm: |c, on| Ctl::set(&c.fail_seg_sync, on),
        op: "fsync",
        failed: Failed::WholeOrAbsent,
        roll: false,
    });
}

#[test]
fn failed_torn_write_poisons_until_reopen() {
    run(Case {
        name: "write fails after writing half",
        durability: Durability::Buffered,
        segment_size: 1 << 20,
        arm_after: 40,
        arm: |c, on| {
            Ctl::set(&c.torn_write, true);
            Ctl::set(&c.fail_seg_write, on);
        },
        op: "write",
        failed: Failed::Absent,
        roll: false,
    });
}

#[test]
fn failed_head_write_poisons_until_reopen() {
    run(Case {
        name: "head slot write fails",
        durability: Durability::Fsync,
        segment_size: 1 << 20,
        arm_after: 40,
        arm: |c, on| Ctl::set(&c.fail_head_write, on),
        op: "write",
        failed: Failed::AckedThenPoisoned,
        roll: false,
    });
}

#[test]
fn failed_fsync_of_the_segment_being_sealed_poisons_buffered() {
    run(Case {
        name: "roll: fsync of the sealed segment fails (Buffered)",
        durability: Durability::Buffered,
        segment_size: 16 << 10,
        arm_after: 0,
        arm: |c, on| Ctl::set(&c.fail_sealed_sync, on),
        op: "fsync",
        failed: Failed::Absent,
        roll: true,
    });
}

#[test]
fn failed_fsync_of_the_segment_being_sealed_poisons_fsync() {
    run(Case {
        name: "roll: fsync of the sealed segment fails (Fsync)",
        durability: Durability::Fsync,
        segment_size: 16 << 10,
        arm_after: 0,
        arm: |c, on| Ctl::set(&c.fail_sealed_sync, on),
        op: "fsync",
        failed: Failed::Absent,
        roll: true,
    });
}

#[test]
fn failed_create_of_the_next_segment_poisons() {
    run(Case {
        name: "roll: create of the next segment fails",
        durability: Durability::Fsync,
        segment_size: 16 << 10,
        arm_after: 0,
        arm: |c, on| Ctl::set(&c.fail_seg_create, on),
        op: "create",
        failed: Failed::Absent,
        roll: true,
    });
}

#[test]
fn failed_fsync_of_the_next_segments_header_poisons() {
    run(Case {
        name: "roll: fsync of the new segment's header fails",
        durability: Durability::Buffered,
        segment_size: 16 << 10,
        arm_after: 0,
        arm: |c, on| Ctl::set(&c.fail_new_seg_sync, on),
        op: "fsync",
        failed: Failed::Absent,
        roll: true,
    });
}

/// Several threads append with `Durability::Fsync` when the fsync fails: the
/// commit leader gets the I/O error, everyone else `Poisoned`, and every
/// acknowledged append survives a reopen.
#[test]
fn concurrent_appenders_share_one_failure() {
    const THREADS: usize = 6;
    let dir = tempfile::tempdir().expect("tempdir");
    let io = TestIo::new();
    let ctl = io.ctl.clone();
    let opts = Options::default().durability(Durability::Fsync).segment_size(32 << 10);
    let log = Arc::new(Log::open_with(dir.path(), opts.clone().io(Arc::new(io))).expect("open"));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, acked, stop) = (log.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let s = format!("t-{t}");
                let mut acks = Vec::new();
                let mut errors = Vec::new();
                let mut version = None;
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) && i > 0 {
                        break;
                    }
                    let p = payloads(t * 1_000_000 + i, 1 + i % 3);
                    match log.append(&s, expected_for(version), &support::events("Concurrent", &p)) {
                        Ok(r) if errors.is_empty() => {
                            version = Some(r.stream_version);
                            acks.push(Ack::new(&s, r, p));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => panic!("thread {t}: an append succeeded after an error: {r:?}"),
                        Err(e) => {
                            errors.push(e);
                            if errors.len() == 4 {
                                break;
                            }
                        }
                    }
                }
                (acks, errors)
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 150 {
        assert!(std::time::Instant::now() < deadline, "the appenders stalled");
        std::thread::yield_now();
    }
    Ctl::set(&ctl.fail_seg_sync, true);
    while Ctl::get(&ctl.injected) == 0 {
        assert!(std::time::Instant::now() < deadline, "no fsync failed");
        std::thread::yield_now();
    }
    Ctl::set(&ctl.fail_seg_sync, false);
    stop.store(true, Ordering::SeqCst);
    let mut acks = Vec::new();
    let mut io_errors = 0;
    for h in handles {
        let (a, errors) = h.join().expect("appender panicked");
        acks.extend(a);
        for e in errors {
            match e {
                Error::Io { op: "fsync", .. } => io_errors += 1,
                Error::Poisoned { .. } => {}
                other => panic!("unexpected error {other}"),
            }
        }
    }
    assert_eq!(
        io_errors, 1,
        "exactly one append (the commit leader's) sees the I/O error"
    );
    assert_poisoned("sync", log.sync());
    println!("{} appends acknowledged before the failure", acks.len());
    drop(log);

    let log = Log::open_with(dir.path(), opts).expect("reopen");
    let recs = read_view(&log.view().expect("view"), 0);
    assert_contiguous(&recs);
    assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    log.close().expect("close");
}
