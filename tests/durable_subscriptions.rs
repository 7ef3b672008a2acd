//! Named durable subscriptions (issue 19, spec 24): a consumer resumes after
//! a restart or a crash at the first event it had not acknowledged, never
//! past one it had not handled.
//!
//! - resuming after close, and after a crash (the subscription forgotten,
//!   nothing committed since): what was acknowledged and committed is not
//!   delivered again, nothing is skipped;
//! - a seeded model: random deliveries, acknowledgements, commits, crashes
//!   and reopens while a writer appends; every event of the filter is
//!   handled, in order, and each resume starts exactly at the committed
//!   checkpoint;
//! - filters: category, stream (by version), event types, a predicate;
//! - one consumer per name (locked), the filter it was created with, names
//!   that are plain file names, links refused;
//! - a torn newer slot falls back to the older checkpoint (a repeat, never a
//!   skip); no valid slot is an error naming the file;
//! - from another process's point of view: a `Reader`'s durable
//!   subscription.

mod support;

use std::time::Duration;

use annal::{Error, EventData, ExpectedVersion, Log, OwnedRecord, Reader};
use support::Rng;

fn append(log: &Log, stream: &str, ty: &str, n: usize) {
    for _ in 0..n {
        log.append(stream, ExpectedVersion::Any, &[EventData::new(ty, b"{}")])
            .unwrap();
    }
}

fn drain(sub: &mut annal::DurableSubscription) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    while let Some(r) = sub.try_next().unwrap() {
        out.push(r);
    }
    out
}

#[test]
fn a_subscription_resumes_after_close_at_the_next_unacknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 5);
    let mut sub = log.durable_subscription("billing").open().unwrap();
    let got = drain(&mut sub);
    assert_eq!(got.len(), 5);
    // Three handled and acknowledged; the other two not.
    sub.ack(&got[2]).unwrap();
    sub.close().unwrap();
    let mut sub = log.durable_subscription("billing").open().unwrap();
    assert_eq!(sub.committed(), 3);
    let again: Vec<u64> = drain(&mut sub).iter().map(|r| r.position).collect();
    assert_eq!(again, [3, 4]);
    // The checkpoint file is the consumer's: check passes over it.
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.file.to_string_lossy().contains("annal.sub")),
        "{report:?}"
    );
    // Acknowledging an event not delivered is refused.
    let mut late = got[0].clone();
    late.position = 9;
    assert!(matches!(sub.ack(&late), Err(Error::InvalidArgument(_))));
}

#[test]
fn after_a_crash_what_was_acknowledged_since_the_last_commit_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 10);
    let mut sub = log.durable_subscription("crashy").commit_every(4).open().unwrap();
    let got = drain(&mut sub);
    for r in &got[..6] {
        sub.ack(r).unwrap();
    }
    // Committed at the 4th acknowledgement; the 5th and 6th are not. A
    // crash: the process is gone, nothing more is written.
    sub.abandon();
    let sub = log.durable_subscription("crashy").open().unwrap();
    assert_eq!(sub.committed(), 4);
    drop(sub);
    let bytes = std::fs::read(dir.path().join("annal.sub.crashy")).unwrap();
    assert_eq!(bytes.len(), 128);
    let next_position = |slot: &[u8]| u64::from_le_bytes(slot[24..32].try_into().unwrap());
    let seq = |slot: &[u8]| u64::from_le_bytes(slot[16..24].try_into().unwrap());
    let (a, b) = bytes.split_at(64);
    let current = if seq(b) > seq(a) { b } else { a };
    assert_eq!(
        next_position(current),
        4,
        "resumes at the 5th event: acknowledged ones repeat, none is skipped"
    );
}

#[test]
fn random_deliveries_acks_commits_and_crashes_handle_every_event_in_order() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        // Orders and customers interleaved; the subscription wants orders.
        let mut expected = Vec::new();
        // Events handled (acknowledged), in delivery order, repeats included.
        let mut handled: Vec<u64> = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        let name = format!("model-{round}");
        let open = |log: &Log| {
            log.durable_subscription(&name)
                .category("order")
                .commit_every(1 + rng_commit(round))
                .open()
                .unwrap()
        };
        let mut sub = open(&log);
        // The position the last (re)open resumed at, to check against the
        // first delivery after it.
        let mut resumed_at = Some(0u64);
        let mut acked_next = 0u64;
        for _ in 0..400 {
            match rng.range(0, 9) {
                0..=2 => {
                    let stream = if rng.range(0, 2) == 0 { "customer-1" } else { "order-7" };
                    let r = log
                        .append(stream, ExpectedVersion::Any, &[EventData::new("E", b"{}")])
                        .unwrap();
                    if stream.starts_with("order") {
                        expected.push(r.first_position);
                    }
                }
                3..=6 => {
                    if let Some(r) = sub.try_next().unwrap() {
                        if let Some(at) = resumed_at.take() {
                            assert_eq!(
                                Some(&r.position),
                                expected.iter().find(|&&p| p >= at),
                                "seed {seed}: a resume starts at the first event at or after the checkpoint"
                            );
                        }
                        // Delivered in order: a repeat goes back, never past a gap.
                        if let Some(&last) = pending.last().or(handled.last()) {
                            assert!(
                                r.position <= last || expected.iter().find(|&&p| p > last) == Some(&r.position),
                                "seed {seed}: {} after {last} skips an event",
                                r.position
                            );
                        }
                        pending.push(r.position);
                        // Acknowledging an event acknowledges those delivered
                        // before it: they are handled.
                        if rng.range(0, 3) != 0 {
                            sub.ack(&r).unwrap();
                            acked_next = r.position + 1;
                            handled.append(&mut pending);
                        }
                    }
                }
                7 => {
                    sub.commit().unwrap();
                    assert_eq!(
                        sub.committed(),
                        acked_next,
                        "seed {seed}: a commit writes what was acknowledged"
                    );
                }
                8 => {
                    // A crash: nothing more is written; the file says what it says.
                    // Delivered and not acknowledged: not handled.
                    pending.clear();
                    let at = sub.committed();
                    assert!(at <= acked_next, "seed {seed}: never past what was acknowledged");
                    sub.abandon();
                    sub = open(&log);
                    assert_eq!(sub.committed(), at, "seed {seed}: the file holds the last commit");
                    resumed_at = Some(at);
                    acked_next = at;
                }
                _ => {
                    pending.clear();
                    let at = {
                        let mut s = sub;
                        s.commit().unwrap();
                        let at = s.committed();
                        s.close().unwrap();
                        at
                    };
                    sub = open(&log);
                    assert_eq!(sub.committed(), at);
                    resumed_at = Some(at);
                    acked_next = at;
                }
            }
        }
        // Drain and acknowledge everything: every event of the filter was
        // handled at least once, and the handled sequence without repeats
        // is the filter's sequence.
        handled.append(&mut pending);
        while let Some(r) = sub.try_next().unwrap() {
            handled.push(r.position);
            sub.ack(&r).unwrap();
        }
        let mut firsts = Vec::new();
        for p in &handled {
            if firsts.last().is_none_or(|l| p > l) {
                firsts.push(*p);
            }
        }
        assert_eq!(firsts, expected, "seed {seed}, round {round}");
        drop(sub);
    }
}

fn rng_commit(round: u64) -> u64 {
    [0, 1, 3, 7, 0, 2][round as usize % 6]
}

#[test]
fn filters_by_category_stream_event_type_and_predicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 2);
    append(&log, "customer-1", "Joined", 2);
    append(&log, "order-2", "Paid", 2);
    let positions = |sub: &mut annal::DurableSubscription| -> Vec<u64> {
        let got = drain(sub);
        if let Some(last) = got.last() {
            sub.ack(last).unwrap();
        }
        got.iter().map(|r| r.position).collect()
    };
    let mut cat = log.durable_subscription("cat").category("order").open().unwrap();
    assert_eq!(positions(&mut cat), [0, 1, 4, 5]);
    let mut stream = log.durable_subscription("stream").stream("order-2").open().unwrap();
    let got = drain(&mut stream);
    assert_eq!(got.iter().map(|r| r.stream_version).collect::<Vec<_>>(), [0, 1]);
    stream.ack(&got[0]).unwrap();
    stream.close().unwrap();
    let mut stream = log.durable_subscription("stream").stream("order-2").open().unwrap();
    assert_eq!(stream.committed(), 1, "a stream subscription keeps a version");
    assert_eq!(
        drain(&mut stream).iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        [1]
    );
    let mut types = log
        .durable_subscription("types")
        .event_types(["Paid", "Joined"])
        .open()
        .unwrap();
    assert_eq!(positions(&mut types), [2, 3, 4, 5]);
    let mut pred = log
        .durable_subscription("pred")
        .matching(|r| r.position % 2 == 1)
        .commit_every(1)
        .open()
        .unwrap();
    assert_eq!(positions(&mut pred), [1, 3, 5]);
    pred.close().unwrap();
    // Passed-over events count as handled: nothing comes back.
    let mut pred = log
        .durable_subscription("pred")
        .matching(|r| r.position % 2 == 1)
        .open()
        .unwrap();
    assert_eq!(pred.committed(), 6);
    assert!(drain(&mut pred).is_empty());
}

#[test]
fn one_consumer_per_name_the_same_filter_and_plain_names() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 1);
    let held = log.durable_subscription("one").category("order").open().unwrap();
    assert!(matches!(
        log.durable_subscription("one").category("order").open(),
        Err(Error::Locked { .. })
    ));
    drop(held);
    match log.durable_subscription("one").category("customer").open() {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("annal.sub.one") && m.contains("another filter"), "{m}"),
        other => panic!("{other:?}"),
    }
    for bad in ["", ".hidden", "a/b", "../up", "x y", &"n".repeat(101)] {
        assert!(
            matches!(log.durable_subscription(bad).open(), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    // A link in place of the file is never followed.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::write(&target, [0u8; 128]).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("annal.sub.linked")).unwrap();
    assert!(log.durable_subscription("linked").open().is_err());
    assert_eq!(std::fs::read(&target).unwrap(), [0u8; 128]);
}

#[test]
fn a_torn_newer_slot_repeats_and_no_valid_slot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 6);
    let mut sub = log.durable_subscription("torn").commit_every(1).open().unwrap();
    let got = drain(&mut sub);
    sub.ack(&got[1]).unwrap(); // sequence 2: next 2, second slot
    sub.ack(&got[3]).unwrap(); // sequence 3: next 4, first slot
    sub.close().unwrap();
    let path = dir.path().join("annal.sub.torn");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 0xff; // the first slot (the newer) torn
    std::fs::write(&path, &bytes).unwrap();
    let sub = log.durable_subscription("torn").open().unwrap();
    assert_eq!(sub.committed(), 2, "the older checkpoint: a repeat, never a skip");
    drop(sub);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    bytes[64] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match log.durable_subscription("torn").open() {
        Err(Error::Corrupt { path: p, offset, .. }) => assert_eq!((p, offset), (path.clone(), 0)),
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        log.durable_subscription("torn").open(),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn a_readers_durable_subscription_follows_the_writer_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 3);
    let mut sub = Reader::open(dir.path())
        .unwrap()
        .durable_subscription("remote-billing")
        .commit_every(1)
        .open()
        .unwrap();
    let first = sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    sub.ack(&first).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || append(&log, "order-2", "Placed", 3))
    };
    let mut seen = vec![first.position];
    while seen.len() < 6 {
        let r = sub
            .next_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("live events arrive");
        sub.ack(&r).unwrap();
        seen.push(r.position);
    }
    writer.join().unwrap();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    sub.close().unwrap();
    let sub = Reader::open(dir.path())
        .unwrap()
        .durable_subscription("remote-billing")
        .open()
        .unwrap();
    assert_eq!(sub.committed(), 6);
}

#[test]
fn a_failing_handler_is_retried_then_parked_or_stops_the_run() {
    use annal::{OnFailure, Retry};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 8);
    let ms = Duration::from_millis;
    // Positions 2 and 5 always fail; 3 fails twice, then succeeds.
    let mut attempts = std::collections::HashMap::<u64, u32>::new();
    let handled = std::cell::RefCell::new(Vec::new());
    let seen = std::cell::Cell::new(0u32);
    let mut sub = log.durable_subscription("parking").commit_every(1).open().unwrap();
    sub.run(
        Retry::new(3, OnFailure::Park).backoff(ms(1), ms(2)),
        ms(5),
        |r| {
            let n = attempts.entry(r.position).or_default();
            *n += 1;
            seen.set(seen.get() + 1);
            match r.position {
                2 | 5 => Err(format!("cannot bill {}\nat all", r.position)),
                3 if *n < 3 => Err("not yet".to_owned()),
                p => {
                    handled.borrow_mut().push(p);
                    Ok(())
                }
            }
        },
        // 8 events: five at the first attempt, three at the third.
        || seen.get() >= 5 + 3 * 3,
    )
    .unwrap();
    let handled = handled.into_inner();
    assert_eq!(handled, [0, 1, 3, 4, 6, 7]);
    assert_eq!(attempts[&2], 3);
    assert_eq!(attempts[&3], 3);
    let parked = sub.parked().unwrap();
    assert_eq!(parked.iter().map(|p| p.position).collect::<Vec<_>>(), [2, 5]);
    assert_eq!(parked[0].why, "cannot bill 2 at all", "one line each");
    assert_eq!(sub.committed(), 8, "parked events are acknowledged");
    sub.close().unwrap();

    // Stop: the run ends with the error; the event is delivered again.
    let mut sub = log.durable_subscription("stopping").commit_every(1).open().unwrap();
    let err = sub
        .run(
            Retry::new(2, OnFailure::Stop).backoff(ms(1), ms(1)),
            ms(5),
            |r| if r.position == 4 { Err("down") } else { Ok(()) },
            || false,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Handler { position: 4, .. }), "{err}");
    sub.close().unwrap();
    let mut sub = log.durable_subscription("stopping").open().unwrap();
    assert_eq!(sub.try_next().unwrap().unwrap().position, 4);
    // A damaged parked list is an error naming it.
    std::fs::write(dir.path().join("annal.sub.parking.parked"), "2\tx\n").unwrap();
    let p = log.durable_subscription("parking").open().unwrap();
    assert!(matches!(p.parked(), Err(Error::Corrupt { offset: 0, .. })));
}

/// Copy the files of the log in `from` (segments, index files, head, stream
/// table; no checkpoint) into a new directory.
fn copy_log(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !name.starts_with("annal.sub.") && !name.starts_with("annal.proj.") && e.file_type().unwrap().is_file() {
            // A writer's temporary file renamed since the listing is left out.
            match std::fs::copy(e.path(), to.path().join(&name)) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {name}: {err}"),
            }
        }
    }
    to
}

#[test]
fn a_checkpoint_past_events_the_log_lost_never_skips_the_new_ones() {
    // The log as a power loss would leave it: 5 events durable; the
    // consumer had handled 10 (the last 5 appended Buffered and lost).
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 5);
    log.close().unwrap();
    let durable = copy_log(dir.path());
    let log = Log::open(dir.path()).unwrap();
    append(&log, "order-1", "Placed", 5);
    let mut sub = log.durable_subscription("lossy").commit_every(1).open().unwrap();
    let got = drain(&mut sub);
    sub.ack(got.last().unwrap()).unwrap();
    sub.close().unwrap();
    log.close().unwrap();
    let checkpoint = std::fs::read(dir.path().join("annal.sub.lossy")).unwrap();

    // Lost tail, nothing new yet: resume at the end, then the new events.
    let lost = copy_log(durable.path());
    std::fs::write(lost.path().join("annal.sub.lossy"), &checkpoint).unwrap();
    let log = Log::open(lost.path()).unwrap();
    let mut sub = log.durable_subscription("lossy").open().unwrap();
    assert_eq!(sub.committed(), 5, "clamped to the log's end");
    append(&log, "order-2", "New", 3);
    let again: Vec<(u64, String)> = drain(&mut sub).iter().map(|r| (r.position, r.stream.clone())).collect();
    assert_eq!(
        again,
        [(5, "order-2".into()), (6, "order-2".into()), (7, "order-2".into())]
    );
    drop(sub);
    log.close().unwrap();

    // Lost tail, and new events already took the positions: refused.
    let reused = copy_log(durable.path());
    std::fs::write(reused.path().join("annal.sub.lossy"), &checkpoint).unwrap();
    let log = Log::open(reused.path()).unwrap();
    append(&log, "order-3", "New", 7);
    match log.durable_subscription("lossy").open() {
        Err(Error::LostEvents { path, detail }) => {
            assert_eq!(path, reused.path().join("annal.sub.lossy"));
            assert!(detail.contains("position 9"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Told where to resume (the file removed, a start given), it goes on.
    std::fs::remove_file(reused.path().join("annal.sub.lossy")).unwrap();
    let mut sub = log.durable_subscription("lossy").start_at(5).open().unwrap();
    assert_eq!(drain(&mut sub).len(), 7);
}

#[test]
fn a_subscription_resumes_across_rolls_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = annal::Options::default()
        .segment_size(4 << 10)
        .open(dir.path())
        .unwrap();
    for i in 0..120u64 {
        let stream = if i % 2 == 0 { "order-1" } else { "order-2" };
        log.append(stream, ExpectedVersion::Any, &[EventData::new("E", vec![b'x'; 100])])
            .unwrap();
    }
    let mut sub = log.durable_subscription("through").commit_every(1).open().unwrap();
    let first: Vec<OwnedRecord> = (0..41).map(|_| sub.try_next().unwrap().unwrap()).collect();
    assert_eq!(
        first.last().unwrap().stream,
        "order-1",
        "the last one handled will be compacted away"
    );
    sub.ack(first.last().unwrap()).unwrap();
    sub.close().unwrap();
    // order-1 keeps its newest event only; compaction removes the others
    // from the sealed segments, the checkpoint's last event among them.
    log.set_stream_metadata("order-1", annal::StreamMetadata::new().max_count(1))
        .unwrap();
    for i in 0..40u64 {
        log.append(
            "order-2",
            ExpectedVersion::Any,
            &[EventData::new("E", vec![b'y'; 100 + i as usize])],
        )
        .unwrap();
    }
    let report = log.compact().unwrap();
    assert!(report.removed_events > 0, "{report:?}");
    let mut sub = log.durable_subscription("through").open().unwrap();
    let rest = drain(&mut sub);
    // What it delivers: the visible events after its checkpoint, in order.
    let expected: Vec<u64> = log
        .view()
        .unwrap()
        .read_all(first.last().unwrap().position + 1)
        .map(|r| r.unwrap().position())
        .collect();
    assert_eq!(rest.iter().map(|r| r.position).collect::<Vec<_>>(), expected);
    // Of order-1, only its newest event (position 118) is left visible.
    let order_1: Vec<u64> = rest
        .iter()
        .filter(|r| r.stream == "order-1")
        .map(|r| r.position)
        .collect();
    assert_eq!(order_1, [118], "hidden events stay hidden");
}
