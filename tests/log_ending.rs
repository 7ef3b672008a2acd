//! What waits on a log's publishes learns when none will come, and retries
//! wait for the append that beat them:
//! - a live subscription (iterator or `futures::Stream`) on a log that was
//!   closed through another clone delivers every event, then ends; on a
//!   poisoned log its last item is the cause;
//! - `Repository::execute` (and `execute_async`) retry after a conflict on
//!   a view that shows the winning append, so N commands racing on one
//!   stream with `Durability::Fsync` all succeed within N attempts (before,
//!   a retry decided again on the view from before the winner's fsync and
//!   spent its attempts at once).

mod support;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use annal::{Aggregate, Durability, Error, Event, EventData, ExpectedVersion, Log, Options, Repository};
#[cfg(feature = "tokio")]
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use support::{Ctl, TestIo};

/// A guard against a hang (never a speed limit).
const HANG: Duration = Duration::from_secs(60);

fn append(log: &Log, stream: &str, n: usize) {
    for i in 0..n {
        log.append(stream, ExpectedVersion::Any, &[EventData::new("E", format!("{i}"))])
            .unwrap();
    }
}

#[test]
fn a_blocking_subscription_ends_after_everything_once_another_clone_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let sub = log.subscribe_category("a", 0);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let got: Vec<u64> = sub.map(|r| r.unwrap().position).collect();
        tx.send(got).unwrap();
    });
    append(&log, "a-1", 10);
    append(&log, "b-1", 3);
    append(&log, "a-2", 5);
    log.close().unwrap();
    let got = rx.recv_timeout(HANG).expect("the subscription ended");
    let mut want: Vec<u64> = (0..10).collect();
    want.extend(13..18);
    assert_eq!(got, want);
}

#[test]
fn next_timeout_on_a_closed_log_says_closed_once_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, "a-1", 2);
    let mut sub = log.subscribe_all(0);
    log.clone().close().unwrap();
    assert_eq!(sub.try_next().unwrap().unwrap().position, 0);
    assert_eq!(sub.next_timeout(HANG).unwrap().unwrap().position, 1);
    assert!(matches!(sub.next_timeout(HANG), Err(Error::Closed)));
}

#[test]
fn a_subscription_on_a_poisoned_log_ends_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let io = TestIo::new();
    let log = Options::default()
        .durability(Durability::Fsync)
        .io(Arc::new(io.clone()))
        .open(dir.path())
        .unwrap();
    let sub = log.subscribe_all(0);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let got: Vec<annal::Result<u64>> = sub.map(|r| r.map(|r| r.position)).collect();
        tx.send(got).unwrap();
    });
    append(&log, "a-1", 3);
    Ctl::set(&io.ctl.fail_seg_sync, true);
    let failed = log.append("a-1", ExpectedVersion::Any, &[EventData::new("E", "lost")]);
    assert!(failed.is_err());
    let got = rx.recv_timeout(HANG).expect("the subscription ended");
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[..3].iter().map(|r| *r.as_ref().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(matches!(got[3], Err(Error::Poisoned { .. })), "{:?}", got[3]);
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "current_thread")]
async fn a_subscription_stream_ends_after_everything_once_the_log_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut events = log.subscribe_all(0).into_stream();
    let watcher = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(r) = events.next().await {
            got.push(r.unwrap().position);
        }
        got
    });
    // The watcher is pending, caught up, before anything is appended.
    tokio::task::yield_now().await;
    for i in 0..5 {
        log.append_async("a-1", ExpectedVersion::Any, &[EventData::new("E", format!("{i}"))])
            .await
            .unwrap();
    }
    let closing = log.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();
    let got = tokio::time::timeout(HANG, watcher)
        .await
        .expect("the stream ended")
        .unwrap();
    assert_eq!(got, (0..5).collect::<Vec<_>>());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Added(u64);

impl Event for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

impl Aggregate for Counter {
    type Event = Added;
    type Command = u64;
    type Error = String;
    fn handle(&self, n: &u64) -> Result<Vec<Added>, String> {
        Ok(vec![Added(*n)])
    }
    fn apply(&mut self, e: &Added) {
        self.total += e.0;
    }
}

#[test]
fn racing_commands_on_one_stream_all_land_within_as_many_attempts() {
    const RACERS: u32 = 8;
    let dir = tempfile::tempdir().unwrap();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .unwrap();
    let repo = Repository::<Counter>::new(&log).max_attempts(RACERS);
    for round in 0..5 {
        let barrier = Arc::new(std::sync::Barrier::new(RACERS as usize));
        let threads: Vec<_> = (0..RACERS)
            .map(|_| {
                let (repo, barrier) = (repo.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    repo.execute("counter-1", &1).map(|e| e.attempts)
                })
            })
            .collect();
        for t in threads {
            let attempts = t.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(attempts <= RACERS);
        }
    }
    assert_eq!(repo.load("counter-1").unwrap().state.total, 5 * u64::from(RACERS));
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_async_commands_on_one_stream_all_land_within_as_many_attempts() {
    const RACERS: u32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .unwrap();
    let repo = Repository::<Counter>::new(&log).max_attempts(RACERS);
    for round in 0..5 {
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let repo = repo.clone();
                tokio::spawn(async move { repo.execute_async("counter-1", &1).await.map(|e| e.attempts) })
            })
            .collect();
        for t in tasks {
            let attempts = t.await.unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(attempts <= RACERS);
        }
    }
    assert_eq!(repo.load("counter-1").unwrap().state.total, 5 * u64::from(RACERS));
}
