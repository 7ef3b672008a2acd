//! Scenario: many threads race appends with optimistic concurrency on one log.
//!
//! * `Exact(n)` races on one stream: in every round exactly one appender wins,
//!   every other gets `WrongExpectedVersion` naming the winner's version, and
//!   the stream ends with contiguous versions holding the winners' events.
//! * `NoStream` races: exactly one appender creates each stream.
//! * Many threads on many streams with `Any` and `Exact`: every acknowledged
//!   batch is in the log after a reopen, at its positions and versions, and
//!   every stream's versions are contiguous.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use annal::{AppendResult, Durability, Error, EventData, ExpectedVersion, Log, Options};
use support::{Ack, Rng, assert_acks_present, assert_contiguous, assert_stream_versions, read_log};

const THREADS: usize = 8;

fn payload(round: u64, thread: usize, i: usize) -> Vec<u8> {
    format!("r{round}-t{thread}-e{i}").into_bytes()
}

/// `THREADS` threads race `Exact(v)` on one stream for `rounds` rounds; thread
/// `t` appends `1 + t % 3` events per attempt.
fn exact_races(durability: Durability, rounds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        Log::open_with(
            dir.path(),
            Options::default().durability(durability).segment_size(64 << 10),
        )
        .expect("open"),
    );
    let stream = "contested";
    let first = log
        .append(
            stream,
            ExpectedVersion::NoStream,
            &[EventData::new("Created", b"seed".as_slice())],
        )
        .expect("create stream");
    assert_eq!(first.stream_version, 0);

    let version = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, version, barrier) = (log.clone(), version.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut out: Vec<(u64, u64, Result<AppendResult, Error>)> = Vec::new();
                for round in 0..rounds {
                    // Read before the start line: the previous winner stored
                    // its version before the previous finish line.
                    let expected = version.load(Ordering::SeqCst);
                    barrier.wait();
                    let payloads: Vec<Vec<u8>> = (0..1 + t % 3).map(|i| payload(round, t, i)).collect();
                    let evs = support::events("Raced", &payloads);
                    let res = log.append(stream, ExpectedVersion::Exact(expected), &evs);
                    if let Ok(r) = &res {
                        version.store(r.stream_version, Ordering::SeqCst);
                    }
                    out.push((round, expected, res));
                    barrier.wait();
                }
                out
            })
        })
        .collect();
    let per_thread: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("appender panicked"))
        .collect();

    // round -> (winner thread, its result); every loser names the winner's version.
    let mut winners: Vec<(usize, AppendResult)> = Vec::new();
    for round in 0..rounds {
        let mut won: Vec<(usize, AppendResult)> = Vec::new();
        let mut lost: Vec<(usize, u64, Option<u64>, ExpectedVersion)> = Vec::new();
        let mut expected_all = None;
        for (t, results) in per_thread.iter().enumerate() {
            let (r, expected, res) = &results[round as usize];
            assert_eq!(*r, round);
            assert_eq!(
                *expected_all.get_or_insert(*expected),
                *expected,
                "threads disagree on the version"
            );
            match res {
                Ok(ok) => won.push((t, *ok)),
                Err(Error::WrongExpectedVersion {
                    stream: s,
                    expected,
                    actual,
                }) => {
                    assert_eq!(s, stream);
                    lost.push((t, 0, *actual, *expected));
                }
                Err(e) => panic!("round {round}, thread {t}: unexpected error {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {} winners: {won:?}", won.len());
        let (wt, w) = won[0];
        let expected = expected_all.expect("threads");
        assert_eq!(
            w.stream_version,
            expected + 1 + (wt % 3) as u64,
            "round {round}: winner's version"
        );
        assert_eq!(w.last_position - w.first_position, (wt % 3) as u64);
        assert_eq!(lost.len(), THREADS - 1);
        for (t, _, actual, exp) in lost {
            assert_eq!(
                exp,
                ExpectedVersion::Exact(expected),
                "round {round}, thread {t}: expected echoed"
            );
            assert_eq!(
                actual,
                Some(w.stream_version),
                "round {round}, thread {t}: actual must be the winner's version"
            );
        }
        winners.push((wt, w));
    }
    assert_eq!(
        log.stream_version(stream).unwrap(),
        Some(winners.last().expect("rounds").1.stream_version)
    );
    drop(log); // the only other handles were in the joined threads

    let recs = read_log(dir.path());
    assert_contiguous(&recs);
    let last = assert_stream_versions(&recs);
    assert_eq!(
        last.get(stream).copied(),
        Some(winners.last().expect("rounds").1.stream_version)
    );
    assert_eq!(recs.len() as u64, winners.last().expect("rounds").1.last_position + 1);
    assert_eq!(recs[0].payload, b"seed");
    for (round, (wt, w)) in winners.iter().enumerate() {
        for (i, pos) in (w.first_position..=w.last_position).enumerate() {
            assert_eq!(
                recs[pos as usize].payload,
                payload(round as u64, *wt, i),
                "round {round}, position {pos}"
            );
        }
    }
}

#[test]
fn exact_races_have_one_winner_per_round_buffered() {
    exact_races(Durability::Buffered, 300);
}

#[test]
fn exact_races_have_one_winner_per_round_fsync() {
    exact_races(Durability::Fsync, 60);
}

#[test]
fn no_stream_races_create_each_stream_once() {
    const STREAMS: usize = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path()).expect("open"));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for s in 0..STREAMS {
                    let stream = format!("new-{s}");
                    let payloads: Vec<Vec<u8>> = (0..1 + t % 2).map(|i| payload(s as u64, t, i)).collect();
                    barrier.wait();
                    let res = log.append(
                        &stream,
                        ExpectedVersion::NoStream,
                        &support::events("Created", &payloads),
                    );
                    out.push(res.map(|r| Ack::new(&stream, r, payloads)));
                }
                out
            })
        })
        .collect();
    let per_thread: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("appender panicked"))
        .collect();
    let mut acks = Vec::new();
    for s in 0..STREAMS {
        let stream = format!("new-{s}");
        let winners: Vec<&Ack> = per_thread.iter().filter_map(|r| r[s].as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "stream {stream}: {} creators", winners.len());
        let w = winners[0];
        assert_eq!(w.first_version(), 0, "the creator's first event has version 0");
        for (t, r) in per_thread.iter().enumerate() {
            match &r[s] {
                Ok(_) => {}
                Err(Error::WrongExpectedVersion {
                    stream: st,
                    expected,
                    actual,
                }) => {
                    assert_eq!(st, &stream);
                    assert_eq!(*expected, ExpectedVersion::NoStream);
                    assert_eq!(*actual, Some(w.result.stream_version), "thread {t}, {stream}");
                }
                Err(e) => panic!("thread {t}, {stream}: unexpected error {e}"),
            }
        }
        acks.push(w.clone());
    }
    // StreamExists now holds for every stream, NoStream for none.
    for s in 0..STREAMS {
        let stream = format!("new-{s}");
        assert!(matches!(
            log.append(
                &stream,
                ExpectedVersion::NoStream,
                &[EventData::new("Again", b"".as_slice())]
            ),
            Err(Error::WrongExpectedVersion { .. })
        ));
        let r = log
            .append(
                &stream,
                ExpectedVersion::StreamExists,
                &[EventData::new("More", b"more".as_slice())],
            )
            .expect("StreamExists on a created stream");
        acks.push(Ack::new(&stream, r, vec![b"more".to_vec()]));
    }
    drop(log);

    let recs = read_log(dir.path());
    assert_contiguous(&recs);
    assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    let total: usize = acks.iter().map(|a| a.payloads.len()).sum();
    assert_eq!(recs.len(), total, "nothing but the acknowledged batches");
}

#[test]
fn many_threads_many_streams_keep_versions_exact() {
    const STREAMS: u64 = 6;
    const OPS: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open_with(dir.path(), Options::default().segment_size(128 << 10)).expect("open"));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                let mut acks = Vec::new();
                let mut conflicts = 0u64;
                for op in 0..OPS {
                    let stream = format!("s-{}", rng.range(0, STREAMS - 1));
                    let n = rng.range(1, 4) as usize;
                    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(op as u64, t, i)).collect();
                    let evs = support::events("Mixed", &payloads);
                    let expected = match rng.range(0, 2) {
                        0 => ExpectedVersion::Any,
                        _ => match log.stream_version(&stream).unwrap() {
                            Some(v) => ExpectedVersion::Exact(v),
                            None => ExpectedVersion::NoStream,
                        },
                    };
                    match log.append(&stream, expected, &evs) {
                        Ok(r) => {
                            if let ExpectedVersion::Exact(v) = expected {
                                assert_eq!(r.stream_version, v + n as u64, "Exact({v}) appended {n} events");
                            }
                            if expected == ExpectedVersion::NoStream {
                                assert_eq!(r.stream_version, n as u64 - 1);
                            }
                            acks.push(Ack::new(&stream, r, payloads));
                        }
                        Err(Error::WrongExpectedVersion {
                            stream: s,
                            expected: e,
                            actual,
                        }) => {
                            assert_eq!(s, stream);
                            assert_eq!(e, expected);
                            assert_ne!(expected, ExpectedVersion::Any, "Any never conflicts");
                            match expected {
                                ExpectedVersion::Exact(v) => assert_ne!(actual, Some(v)),
                                _ => assert!(actual.is_some(), "NoStream failed on a missing stream"),
                            }
                            conflicts += 1;
                        }
                        Err(e) => panic!("thread {t}: unexpected error {e}"),
                    }
                }
                (acks, conflicts)
            })
        })
        .collect();
    let mut acks: Vec<Ack> = Vec::new();
    let mut conflicts = 0;
    for h in handles {
        let (a, c) = h.join().expect("appender panicked");
        acks.extend(a);
        conflicts += c;
    }
    let in_memory: HashMap<String, Option<u64>> = (0..STREAMS)
        .map(|s| format!("s-{s}"))
        .map(|s| (s.clone(), log.stream_version(&s).unwrap()))
        .collect();
    drop(log);
    println!("{} acknowledged appends, {conflicts} conflicts", acks.len());

    // The acknowledged batches of each stream tile its versions 0..=last.
    let mut by_stream: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for a in &acks {
        by_stream.entry(&a.stream).or_default().push(a);
    }
    for (s, list) in by_stream.iter_mut() {
        list.sort_by_key(|a| a.result.stream_version);
        let mut next = 0;
        for a in list.iter() {
            assert_eq!(
                a.first_version(),
                next,
                "stream {s}: versions of acknowledged batches overlap or skip"
            );
            next = a.result.stream_version + 1;
            // Positions grow with versions within a stream.
        }
        for w in list.windows(2) {
            assert!(
                w[0].result.last_position < w[1].result.first_position,
                "stream {s}: positions out of version order"
            );
        }
        assert_eq!(in_memory[*s], Some(next - 1), "stream {s}: Log::stream_version");
    }

    let recs = read_log(dir.path());
    assert_contiguous(&recs);
    let last = assert_stream_versions(&recs);
    assert_acks_present(&recs, &acks);
    let total: usize = acks.iter().map(|a| a.payloads.len()).sum();
    assert_eq!(recs.len(), total, "the log holds exactly the acknowledged events");
    for (s, v) in &in_memory {
        assert_eq!(last.get(s).copied(), *v, "stream {s} after reopen");
    }
}
