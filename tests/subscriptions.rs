//! Subscriptions: catch-up then live delivery, exactly once and in order.
//!
//! In process: subscriber threads follow writer threads across many segment
//! rolls (a slow subscriber too), with every filter, and resume from
//! checkpoints. Across processes: a writer child process appends (rolling
//! segments) while `Reader`-based subscribers in this process and in a
//! subscriber child process follow it; every acknowledged event is seen
//! exactly once, in order. No assertion depends on timing.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annal::{EventData, ExpectedVersion, Log, Options, OwnedRecord, Reader, Subscription, category_of};
use support::{ChildProc, Rng, child_say};

/// Longest wait for an event that is known to come.
const PATIENCE: Duration = Duration::from_secs(20);

fn payload(writer: u32, i: u32) -> Vec<u8> {
    [writer, i].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Pull exactly `n` events (each must come within `PATIENCE`), then check that
/// nothing more is there right now.
fn take(sub: &mut Subscription, n: usize) -> Vec<OwnedRecord> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match sub.next_timeout(PATIENCE).expect("subscription read") {
            Some(r) => out.push(r),
            None => panic!("only {} of {n} events arrived", out.len()),
        }
    }
    out
}

fn positions(recs: &[OwnedRecord]) -> Vec<u64> {
    recs.iter().map(|r| r.position).collect()
}

fn all_records(log: &Log) -> Vec<OwnedRecord> {
    let view = log.view().expect("view");
    view.read_all(0).map(|r| r.expect("read").into()).collect()
}

#[test]
fn in_process_catch_up_then_live_across_rolls() {
    const WRITERS: u32 = 4;
    const PER_WRITER: u32 = 300;
    const EXISTING: u32 = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().segment_size(4 << 10)).expect("open");
    // Existing events, for the catch-up.
    for i in 0..EXISTING {
        let stream = format!("acct-{}", i % 3);
        log.append(&stream, ExpectedVersion::Any, &[EventData::new("Old", payload(99, i))])
            .expect("append");
    }
    let total = (EXISTING + WRITERS * PER_WRITER) as usize;
    let stream_count = |name: &str| -> usize {
        // Existing: i % 3; writer w: streams acct-(i%3) for even w, misc-w for odd w.
        let old = (0..EXISTING).filter(|i| format!("acct-{}", i % 3) == name).count();
        let new = (0..WRITERS)
            .flat_map(|w| (0..PER_WRITER).map(move |i| (w, i)))
            .filter(|&(w, i)| writer_stream(w, i) == name)
            .count();
        old + new
    };
    let acct1 = stream_count("acct-1");
    let acct = (0..3).map(|k| stream_count(&format!("acct-{k}"))).sum::<usize>();

    let (all, slow, one, cat) = std::thread::scope(|s| {
        let log = &log;
        let all = s.spawn(move || {
            let mut sub = log.subscribe_all(0);
            let recs = take(&mut sub, total);
            (recs, sub.try_next().expect("try_next"))
        });
        let slow = s.spawn(move || {
            let mut sub = log.subscribe_all(0);
            let mut out = Vec::new();
            while out.len() < total {
                let r = sub.next_timeout(PATIENCE).expect("read").expect("event in time");
                if r.position.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                out.push(r);
            }
            (out, sub.try_next().expect("try_next"))
        });
        let one = s.spawn(move || {
            let mut sub = log.subscribe_stream("acct-1", 0);
            let recs = take(&mut sub, acct1);
            (recs, sub.try_next().expect("try_next"))
        });
        let cat = s.spawn(move || {
            let mut sub = log.subscribe_category("acct", 0);
            let recs = take(&mut sub, acct);
            (recs, sub.try_next().expect("try_next"))
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                s.spawn(move || {
                    let mut rng = Rng::new(u64::from(w) + 1);
                    for i in 0..PER_WRITER {
                        log.append(
                            &writer_stream(w, i),
                            ExpectedVersion::Any,
                            &[EventData::new("New", payload(w, i))],
                        )
                        .expect("append");
                        if rng.range(0, 20) == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let j = |h: std::thread::ScopedJoinHandle<'_, (Vec<OwnedRecord>, Option<OwnedRecord>)>| {
            h.join().expect("subscriber")
        };
        (j(all), j(slow), j(one), j(cat))
    });

    let log_recs = all_records(&log);
    assert!(
        log.view().expect("view").segment_count() > 10,
        "the test must roll segments"
    );
    assert_eq!(log_recs.len(), total);
    for (name, (recs, extra)) in [("all", &all), ("slow", &slow)] {
        assert_eq!(extra, &None, "{name}: an event past the end (duplicate?)");
        assert_eq!(
            positions(recs),
            (0..total as u64).collect::<Vec<_>>(),
            "{name}: positions"
        );
        assert_eq!(recs, &log_recs, "{name}: events differ from the log");
    }
    let want_one: Vec<OwnedRecord> = log_recs.iter().filter(|r| r.stream == "acct-1").cloned().collect();
    assert_eq!(one.1, None);
    assert_eq!(one.0, want_one, "stream subscription");
    assert_eq!(
        one.0.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        (0..acct1 as u64).collect::<Vec<_>>()
    );
    let want_cat: Vec<OwnedRecord> = log_recs
        .iter()
        .filter(|r| category_of(&r.stream) == Some("acct"))
        .cloned()
        .collect();
    assert_eq!(cat.1, None);
    assert_eq!(cat.0, want_cat, "category subscription");
    log.close().expect("close");
}

fn writer_stream(w: u32, i: u32) -> String {
    if w.is_multiple_of(2) {
        format!("acct-{}", i % 3)
    } else {
        format!("misc-{w}")
    }
}

#[test]
fn resume_from_checkpoint_delivers_the_next_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), Options::default().segment_size(1 << 10)).expect("open");
    for i in 0..40u32 {
        let stream = if i.is_multiple_of(2) { "order-1" } else { "user-1" };
        log.append(stream, ExpectedVersion::Any, &[EventData::new("E", payload(0, i))])
            .expect("append");
    }
    let everything = all_records(&log);

    // All: handle 17 events, checkpoint = last handled position.
    let mut sub = log.subscribe_all(0);
    let handled = take(&mut sub, 17);
    let checkpoint = handled.last().expect("handled").position;
    drop(sub);
    let mut sub = log.subscribe_all(checkpoint + 1);
    let rest = take(&mut sub, everything.len() - 17);
    assert_eq!(sub.try_next().expect("try_next"), None);
    assert_eq!([handled, rest].concat(), everything);

    // Stream: checkpoint = last handled version.
    let mut sub = log.subscribe_stream("order-1", 0);
    let handled = take(&mut sub, 5);
    let checkpoint = handled.last().expect("handled").stream_version;
    let mut sub = log.subscribe_stream("order-1", checkpoint + 1);
    let next = sub.try_next().expect("try_next").expect("next event");
    assert_eq!((next.stream.as_str(), next.stream_version), ("order-1", 5));
    let rest = take(&mut sub, 14);
    assert_eq!(sub.try_next().expect("try_next"), None);
    let versions: Vec<u64> = handled
        .iter()
        .chain([&next])
        .chain(&rest)
        .map(|r| r.stream_version)
        .collect();
    assert_eq!(versions, (0..20).collect::<Vec<_>>());

    // Category: checkpoint = last handled position; and `position()`.
    let mut sub = log.subscribe_category("user", 0);
    let handled = take(&mut sub, 3);
    let checkpoint = handled.last().expect("handled").position;
    let resume_at = sub.position();
    assert!(resume_at > checkpoint, "position() is past the last handled event");
    let mut again = log.subscribe_category("user", checkpoint + 1);
    let next = again.try_next().expect("try_next").expect("next event");
    assert_eq!(next.position, checkpoint + 2, "the next user-1 event");
    let via_position = log.subscribe_category("user", resume_at).try_next().expect("try_next");
    assert_eq!(
        via_position.as_ref(),
        Some(&next),
        "resuming from position() gives the same next event"
    );
    let rest = take(&mut again, 16);
    assert_eq!(again.try_next().expect("try_next"), None);
    assert!(rest.iter().all(|r| r.stream == "user-1"));
    // Caught up: position() is past the whole log, resuming there is empty.
    assert_eq!(again.position(), 40);
    assert_eq!(
        log.subscribe_category("user", again.position())
            .try_next()
            .expect("try"),
        None
    );

    // A live event after a resume arrives once.
    log.append("user-1", ExpectedVersion::Any, &[EventData::new("E", payload(1, 0))])
        .expect("append");
    let live = again.next_timeout(PATIENCE).expect("read").expect("live event");
    assert_eq!(live.position, 40);
    assert_eq!(again.try_next().expect("try_next"), None);
    log.close().expect("close");
}

#[test]
fn a_caught_up_subscription_times_out_without_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    let mut sub = log.subscribe_all(0);
    assert_eq!(sub.next_timeout(Duration::from_millis(30)).expect("read"), None);
    let reader = Reader::open(dir.path()).expect("reader");
    let mut rsub = reader.subscribe_all(0).poll_interval(Duration::from_millis(5));
    assert_eq!(rsub.next_timeout(Duration::from_millis(30)).expect("read"), None);
    log.append("a-1", ExpectedVersion::Any, &[EventData::new("E", b"".as_slice())])
        .expect("append");
    assert_eq!(sub.next_timeout(PATIENCE).expect("read").map(|r| r.position), Some(0));
    assert_eq!(rsub.next_timeout(PATIENCE).expect("read").map(|r| r.position), Some(0));
    log.close().expect("close");
}

// ---------------------------------------------------------------------------
// Across processes
// ---------------------------------------------------------------------------

const CHILD_WRITER: &str = "child_sub_writer";
const CHILD_SUBSCRIBER: &str = "child_sub_subscriber";
const ENV_DIR: &str = "ANNAL_SUB_DIR";
const ENV_ROLE: &str = "ANNAL_SUB_ROLE";
const BATCHES: u32 = 400;
const END_STREAM: &str = "control-end";

fn batch_stream(b: u32) -> String {
    match b % 4 {
        0 | 1 => format!("acct-{}", b % 3),
        2 => "acct-x".to_owned(),
        _ => format!("misc-{}", b % 5),
    }
}

/// The writer process: reports `READY`, `ACK first last` per batch, and
/// finally appends one event to `END_STREAM` and reports `DONE next_position`.
#[test]
fn child_sub_writer() {
    let (Ok(dir), Ok(role)) = (std::env::var(ENV_DIR), std::env::var(ENV_ROLE)) else {
        return;
    };
    assert_eq!(role, "writer");
    let log = Log::open_with(&dir, Options::default().segment_size(8 << 10)).expect("child open");
    // Some events before anyone subscribes, for the catch-up.
    let mut rng = Rng::new(7);
    let mut batch = 0u32;
    let append = |log: &Log, batch: u32, rng: &mut Rng| {
        let size = rng.range(1, 12) as u32;
        let payloads: Vec<Vec<u8>> = (0..size).map(|i| payload(batch, i)).collect();
        let evs: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("B", p.as_slice())).collect();
        let r = log
            .append(&batch_stream(batch), ExpectedVersion::Any, &evs)
            .expect("child append");
        child_say(&format!("ACK {} {}", r.first_position, r.last_position));
    };
    while batch < 50 {
        append(&log, batch, &mut rng);
        batch += 1;
    }
    child_say("READY");
    while batch < BATCHES {
        append(&log, batch, &mut rng);
        if batch.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(2));
        }
        batch += 1;
    }
    let r = log
        .append(
            END_STREAM,
            ExpectedVersion::NoStream,
            &[EventData::new("End", b"".as_slice())],
        )
        .expect("child end");
    log.close().expect("child close");
    child_say(&format!("DONE {}", r.last_position + 1));
}

/// A subscriber process: follows the log with a `Reader` until the end
/// event, checking contiguity, then reports `SEEN count checksum`.
#[test]
fn child_sub_subscriber() {
    let (Ok(dir), Ok(role)) = (std::env::var(ENV_DIR), std::env::var(ENV_ROLE)) else {
        return;
    };
    assert_eq!(role, "subscriber");
    let reader = Reader::open(&dir).expect("child reader");
    let mut sub = reader.subscribe_all(0).poll_interval(Duration::from_millis(10));
    let mut count = 0u64;
    let mut sum = 0u64;
    loop {
        let r = sub.next_timeout(PATIENCE).expect("child read").expect("event in time");
        assert_eq!(r.position, count, "child subscriber: positions must be contiguous");
        sum = sum.wrapping_mul(31).wrapping_add(checksum(&r));
        count += 1;
        if r.stream == END_STREAM {
            break;
        }
    }
    assert_eq!(sub.try_next().expect("child try_next"), None);
    child_say(&format!("SEEN {count} {sum}"));
}

fn checksum(r: &OwnedRecord) -> u64 {
    r.payload
        .iter()
        .chain(r.stream.as_bytes())
        .fold(r.position ^ (r.stream_version << 32), |h, &b| {
            h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b)
        })
}

/// Follow with a `Reader` subscription until it has passed position `end`
/// (once known); `min_poll` keeps the parent subscribers polling fast.
fn follow(mut sub: Subscription, end: &AtomicU64) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    loop {
        let target = end.load(Ordering::Acquire);
        if target != u64::MAX && sub.position() >= target {
            assert_eq!(sub.try_next().expect("try_next"), None, "an event past the end");
            return out;
        }
        if let Some(r) = sub.next_timeout(Duration::from_millis(200)).expect("read") {
            out.push(r);
        }
        assert!(out.len() < 1 << 20, "runaway subscription");
    }
}

#[test]
fn reader_subscriptions_follow_a_writer_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut writer = ChildProc::spawn(CHILD_WRITER, &[(ENV_DIR, &path), (ENV_ROLE, "writer")]);
    let mut acks: Vec<(u64, u64)> = Vec::new();
    loop {
        let line = writer.line(PATIENCE).expect("writer READY");
        if line == "READY" {
            break;
        }
        acks.push(parse_ack(&line));
    }
    let mut sub_child = ChildProc::spawn(CHILD_SUBSCRIBER, &[(ENV_DIR, &path), (ENV_ROLE, "subscriber")]);
    let end = AtomicU64::new(u64::MAX);
    let (all, one, cat, done) = std::thread::scope(|s| {
        let end = &end;
        let open = || Reader::open(dir.path()).expect("reader");
        let all = s.spawn(move || follow(open().subscribe_all(0).poll_interval(Duration::from_millis(5)), end));
        let one = s.spawn(move || follow(open().subscribe_stream("acct-x", 0), end));
        let cat = s.spawn(move || follow(open().subscribe_category("acct", 0), end));
        let mut done = None;
        while let Some(line) = writer.line(Duration::from_secs(60)) {
            if let Some(n) = line.strip_prefix("DONE ") {
                done = Some(n.parse::<u64>().expect("DONE number"));
                break;
            }
            acks.push(parse_ack(&line));
        }
        let status = writer.wait(PATIENCE);
        assert!(status.success(), "writer failed: {status}");
        let done = done.expect("writer reports DONE");
        end.store(done, Ordering::Release);
        let j = |h: std::thread::ScopedJoinHandle<'_, Vec<OwnedRecord>>| h.join().expect("subscriber");
        (j(all), j(one), j(cat), done)
    });

    // Every acknowledged event exactly once, in order, with its payload.
    assert_eq!(all.len() as u64, done);
    assert_eq!(positions(&all), (0..done).collect::<Vec<_>>());
    assert_eq!(acks.len() as u32, BATCHES);
    for (b, &(first, last)) in acks.iter().enumerate() {
        for (i, p) in (first..=last).enumerate() {
            let r = &all[p as usize];
            assert_eq!(r.stream, batch_stream(b as u32), "stream at {p}");
            assert_eq!(r.payload, payload(b as u32, i as u32), "payload at {p}");
        }
    }
    assert_eq!(all.last().map(|r| r.stream.as_str()), Some(END_STREAM));
    assert!(
        Reader::open(dir.path())
            .expect("reader")
            .view()
            .expect("view")
            .segment_count()
            > 5,
        "the writer must roll segments"
    );
    let want_one: Vec<OwnedRecord> = all.iter().filter(|r| r.stream == "acct-x").cloned().collect();
    assert_eq!(one, want_one, "stream subscription");
    let want_cat: Vec<OwnedRecord> = all
        .iter()
        .filter(|r| category_of(&r.stream) == Some("acct"))
        .cloned()
        .collect();
    assert_eq!(cat, want_cat, "category subscription");

    // The subscriber process saw the same events.
    let want_sum = all
        .iter()
        .fold(0u64, |s, r| s.wrapping_mul(31).wrapping_add(checksum(r)));
    let seen = sub_child.line(PATIENCE).expect("subscriber report");
    assert_eq!(seen, format!("SEEN {done} {want_sum}"));
    let status = sub_child.wait(PATIENCE);
    assert!(status.success(), "subscriber process failed: {status}");
}

fn parse_ack(line: &str) -> (u64, u64) {
    let w: Vec<&str> = line.split(' ').collect();
    assert!(w.len() == 3 && w[0] == "ACK", "unexpected writer line {line:?}");
    let n = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("bad line {line:?}"));
    (n(w[1]), n(w[2]))
}
