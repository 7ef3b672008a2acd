//! The async API (feature `tokio`): appends and syncs that never block the
//! runtime thread, proven without timing: on a `current_thread` runtime an
//! I/O seam holds the fsync until another task on the same runtime releases
//! it, which that task can only do if the append did not block the thread
//! (a blocking implementation deadlocks, and the watchdog fails the test).
//! Also: group commits shared by a thousand tasks on one thread, poisoning,
//! async subscriptions (`futures::Stream`, on a log and on a reader), event
//! type filters, and `execute_async` with snapshots.
#![cfg(feature = "tokio")]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use annal::io::{Io, IoFile, StdIo};
use annal::{
    Aggregate, Durability, Error, Event, EventData, ExpectedVersion, Log, Options, Reader, Repository,
    SubscriptionFilter,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A seam over the real file system whose segment fsyncs, once armed, wait
/// at a gate until released; it counts segment fsyncs and can fail them.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    fail: AtomicBool,
    state: Mutex<GateState>,
    cv: Condvar,
    segment_syncs: AtomicUsize,
}

#[derive(Debug, Default)]
struct GateState {
    /// Threads waiting at the gate now.
    waiting: usize,
    released: bool,
}

impl Gate {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.cv.notify_all();
    }

    fn someone_waits(&self) -> bool {
        self.state.lock().unwrap().waiting > 0
    }

    fn pass(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.waiting += 1;
        self.cv.notify_all();
        while !s.released {
            s = self.cv.wait(s).unwrap();
        }
        s.waiting -= 1;
    }
}

#[derive(Debug, Clone)]
struct GateIo(Arc<Gate>);

#[derive(Debug)]
struct GateFile {
    inner: Box<dyn IoFile>,
    gate: Option<Arc<Gate>>,
}

impl GateIo {
    fn wrap(&self, path: &Path, f: Box<dyn IoFile>) -> Box<dyn IoFile> {
        let segment = path.to_string_lossy().ends_with(annal::segment::SEGMENT_SUFFIX);
        Box::new(GateFile {
            inner: f,
            gate: segment.then(|| self.0.clone()),
        })
    }
}

impl Io for GateIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(self.wrap(path, StdIo.create(path)?))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        Ok(self.wrap(path, StdIo.open(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

impl IoFile for GateFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        if let Some(g) = &self.gate {
            if g.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            g.pass();
            if g.armed.load(Ordering::SeqCst) {
                g.segment_syncs.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

fn gated_log(dir: &Path, gate: &Arc<Gate>) -> Log {
    Options::default()
        .durability(Durability::Fsync)
        .io(Arc::new(GateIo(gate.clone())))
        .open(dir)
        .expect("open")
}

/// Run `body` on a current-thread runtime on its own thread; a deadlock
/// (the runtime thread blocked) fails the test instead of hanging it.
fn on_one_thread<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{what}: the runtime thread never finished: an async call blocked it"))
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Yield to the runtime until `cond` holds (no timing: each turn lets the
/// other tasks run).
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

#[test]
fn an_async_append_waits_for_its_fsync_while_another_task_on_the_thread_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let log = gated_log(dir.path(), &gate);
    let (log2, gate2) = (log.clone(), gate.clone());
    let durable = on_one_thread("append_async", move || {
        current_thread().block_on(async move {
            gate2.arm();
            let appender = {
                let log = log2.clone();
                tokio::spawn(async move {
                    log.append_async("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])
                        .await
                })
            };
            // The committer thread is now inside the fsync, held at the gate;
            // this task runs all the same.
            until(|| gate2.someone_waits()).await;
            assert!(!appender.is_finished(), "acknowledged before its fsync returned");
            gate2.release();
            let r = appender.await.expect("task").expect("append");
            assert_eq!((r.first_position, r.stream_version), (0, 0));
            log2.view().expect("view").next_position()
        })
    });
    assert_eq!(durable, 1);
    assert!(gate.segment_syncs.load(Ordering::SeqCst) >= 1);
    log.close().expect("close");
    let reopened = Log::open(dir.path()).expect("reopen");
    assert_eq!(reopened.stream_version("order-1").expect("version"), Some(0));
}

#[test]
fn a_thousand_async_appenders_on_one_thread_share_their_fsyncs() {
    const TASKS: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let log = gated_log(dir.path(), &gate);
    let (log2, gate2) = (log.clone(), gate.clone());
    let acked = on_one_thread("1000 appenders", move || {
        current_thread().block_on(async move {
            gate2.arm();
            let tasks: Vec<_> = (0..TASKS)
                .map(|i| {
                    let log = log2.clone();
                    tokio::spawn(async move {
                        let payload = i.to_le_bytes();
                        log.append_async(
                            &format!("s-{i}"),
                            ExpectedVersion::NoStream,
                            &[EventData::new("E", &payload)],
                        )
                        .await
                    })
                })
                .collect();
            // Every task has queued its batch (one thread: none of them
            // blocked it), while the first group's fsync waits at the gate.
            until(|| log2.next_position() == TASKS && gate2.someone_waits()).await;
            gate2.release();
            let mut acked = 0;
            for t in tasks {
                t.await.expect("task").expect("append");
                acked += 1;
            }
            acked
        })
    });
    assert_eq!(acked, TASKS);
    // The first group's fsync, then one for the 999 queued behind it.
    let syncs = gate.segment_syncs.load(Ordering::SeqCst);
    assert!(syncs <= 2, "{syncs} segment fsyncs for {TASKS} appends queued together");
    log.close().expect("close");
    let view = Reader::open(dir.path()).expect("reader").view().expect("view");
    assert_eq!(view.next_position(), TASKS);
}

#[test]
fn sync_and_async_appenders_share_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.append(
                        &format!("sync-{t}"),
                        ExpectedVersion::Any,
                        &[EventData::new("E", vec![i])],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    log.append_async(
                        &format!("async-{}", i % 10),
                        ExpectedVersion::Any,
                        &[EventData::new("E", b"x")],
                    )
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        log.sync_async().await.unwrap();
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.next_position(), 300);
    for i in 0..10 {
        assert_eq!(log.stream_version(&format!("async-{i}")).unwrap(), Some(9));
    }
    log.close().unwrap();
}

#[test]
fn a_failed_fsync_fails_the_async_append_and_poisons_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let log = gated_log(dir.path(), &gate);
    gate.fail.store(true, Ordering::SeqCst);
    let rt = current_thread();
    let err = rt
        .block_on(log.append_async("s-1", ExpectedVersion::Any, &[EventData::new("E", b"x")]))
        .expect_err("the fsync failed");
    assert!(
        matches!(err, Error::Poisoned { ref cause } if cause.contains("injected")),
        "{err}"
    );
    let again = rt.block_on(log.append_async("s-1", ExpectedVersion::Any, &[EventData::new("E", b"x")]));
    assert!(matches!(again, Err(Error::Poisoned { .. })), "{again:?}");
    assert!(matches!(rt.block_on(log.sync_async()), Err(Error::Poisoned { .. })));
}

#[test]
fn an_async_subscription_is_woken_by_the_writer_on_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append(
        "order-1",
        ExpectedVersion::Any,
        &[EventData::new("Placed", b"1"), EventData::new("Paid", b"2")],
    )
    .unwrap();
    let got = on_one_thread("subscription", move || {
        current_thread().block_on(async move {
            let mut sub = log.subscribe_all(0).into_stream();
            let mut paid = log.subscribe_category("order", 0).event_types(["Paid"]).into_stream();
            assert_eq!(sub.next().await.unwrap().unwrap().position, 0);
            assert_eq!(sub.next().await.unwrap().unwrap().position, 1);
            assert_eq!(paid.next().await.unwrap().unwrap().position, 1);
            // Caught up: the next poll is pending until another task on this
            // thread appends.
            let appender = {
                let log = log.clone();
                tokio::spawn(async move {
                    log.append_async("order-2", ExpectedVersion::Any, &[EventData::new("Paid", b"3")])
                        .await
                        .unwrap()
                })
            };
            let live = sub.next().await.unwrap().unwrap();
            let live_paid = paid.next().await.unwrap().unwrap();
            appender.await.unwrap();
            (live.position, live.stream, live_paid.position, live_paid.event_type)
        })
    });
    assert_eq!(got, (2, "order-2".to_owned(), 2, "Paid".to_owned()));
}

#[test]
fn an_async_subscription_on_a_reader_polls_with_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append("a-1", ExpectedVersion::Any, &[EventData::new("E", b"1")])
        .unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    let sub = reader.subscribe_all(0).poll_interval(Duration::from_millis(1));
    assert_eq!(annal::Subscription::filter(&sub), &SubscriptionFilter::All);
    let mut sub = sub.into_stream();
    let rt = current_thread();
    rt.block_on(async {
        assert_eq!(sub.next().await.unwrap().unwrap().position, 0);
        // The writer here stands for another process: a thread, not a task.
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                log.append("a-1", ExpectedVersion::Any, &[EventData::new("E", b"2")])
                    .unwrap();
            })
        };
        let next = sub.next().await.unwrap().unwrap();
        assert_eq!((next.position, next.stream_version), (1, 1));
        writer.join().unwrap();
    });
}

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Serialize, Deserialize)]
enum AccountEvent {
    Deposited(i64),
    Withdrew(i64),
}

impl Event for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited(_) => "Deposited",
            AccountEvent::Withdrew(_) => "Withdrew",
        }
    }
}

impl Aggregate for Account {
    type Event = AccountEvent;
    type Command = i64;
    type Error = String;
    fn handle(&self, amount: &i64) -> Result<Vec<AccountEvent>, String> {
        match *amount {
            a if a >= 0 => Ok(vec![AccountEvent::Deposited(a)]),
            a if self.balance + a >= 0 => Ok(vec![AccountEvent::Withdrew(-a)]),
            _ => Err("insufficient funds".into()),
        }
    }
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited(a) => self.balance += a,
            AccountEvent::Withdrew(a) => self.balance -= a,
        }
    }
}

#[test]
fn execute_async_runs_commands_from_many_tasks_with_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let log = Options::default()
        .durability(Durability::Fsync)
        .open(dir.path())
        .unwrap();
    let repo = Repository::<Account>::new(&log).snapshot_every(5, 2).max_attempts(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let snapshots = rt.block_on(async {
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let repo = repo.clone();
                tokio::spawn(async move { repo.execute_async(&format!("account-{}", i % 4), &10).await })
            })
            .collect();
        let mut snapshots = 0;
        for t in tasks {
            let done = t.await.unwrap().unwrap();
            assert!(done.snapshot_error.is_none());
            snapshots += u32::from(done.snapshot_written);
        }
        let refused = repo.execute_async("account-0", &-1000).await.expect_err("overdrawn");
        assert!(refused.to_string().contains("insufficient funds"), "{refused}");
        snapshots
    });
    assert!(
        snapshots >= 4,
        "{snapshots} snapshots for 4 streams of 10 events every 5"
    );
    for a in 0..4 {
        let state = Repository::<Account>::new(&log).load(&format!("account-{a}")).unwrap();
        assert_eq!((state.state.balance, state.version), (100, Some(9)));
        assert!(state.snapshot_version.is_some(), "loaded from a snapshot");
    }
    log.close().unwrap();
}

#[test]
fn async_handles_are_send_and_static() {
    fn send_static<T: Send + 'static>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let repo = Repository::<Account>::new(&log);
    let sub = log.subscribe_all(0);
    send_static(&sub);
    send_static(&sub.into_stream());
    send_static(&repo);
    fn send<T: Send>(_: &T) {}
    let events = [EventData::new("E", b"x")];
    let append = log.append_async("s", ExpectedVersion::Any, &events);
    send(&append);
    let execute = repo.execute_async("account-1", &1);
    send(&execute);
    drop((append, execute));
}
