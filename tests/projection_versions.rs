//! Rebuild without downtime (issue 19, spec 24.8): a new version of a
//! projection builds beside the one serving and takes over atomically.
//!
//! - the old version serves (steps, saves, its model read by a reader of
//!   the serving model) while the new one catches up; after the switch the
//!   reader loads the new model, the old runner gets `Superseded` at its
//!   next step and save (and writes nothing), a superseded version is not
//!   opened again, and its files are retired;
//! - the same with the old version's runner in another process (through a
//!   `Reader`): it serves until the switch, then sees it and retires;
//! - an unversioned projection is upgraded by a version like any other;
//! - automatic take-overs, at a position or when caught up;
//! - two concurrent take-overs from one version: exactly one wins;
//! - a take-over compares the version its runner last saw serve, never one
//!   it reads again: of two versions that saw one serve, the second to take
//!   over fails (`ServingChanged`) instead of replacing the first, and a
//!   version opened when nothing served does not replace one that took
//!   over during its rebuild;
//! - the switch lock is waited for a bounded time (`Locked` naming it), and
//!   a retirement takes it, fsyncing the directory before it removes;
//! - a save or a switch whose temporary file a writer's recovery removed
//!   starts again; names that could be another name's files are refused;
//! - a crash at every file operation of the whole life (first serving
//!   version, the new one built, saved, switched, the old one retired),
//!   as a process crash (the files as they are) and as a power cut (only
//!   what was fsynced, names only once their directory was): every image
//!   has at most one serving version, whose model equals a rebuild of the
//!   events below its position, and the switch completes from it;
//! - a damaged serving file is `Corrupt`, naming the file and the offset.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::io::{Io, IoFile, StdIo};
use annal::{
    Error, EventData, ExpectedVersion, Log, Options, Projection, Reader, RecordRef, ServingProjection, TakeOver,
};
use support::{ChildProc, child_say};

/// Version 1's model: events per stream.
struct PerStream;

impl Projection for PerStream {
    type Model = BTreeMap<String, u64>;
    fn empty(&self) -> Self::Model {
        BTreeMap::new()
    }
    fn apply(&self, m: &mut Self::Model, r: &RecordRef<'_>) {
        *m.entry(r.stream().to_owned()).or_default() += 1;
    }
    fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
        for (k, v) in b {
            *a.entry(k).or_default() += v;
        }
        a
    }
}

/// Version 2's model (another type): the positions folded, in order.
struct Positions;

impl Projection for Positions {
    type Model = Vec<u64>;
    fn empty(&self) -> Vec<u64> {
        Vec::new()
    }
    fn apply(&self, m: &mut Vec<u64>, r: &RecordRef<'_>) {
        m.push(r.position());
    }
    fn merge(&self, mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
        a.extend(b);
        a
    }
}

fn append(log: &Log, n: u64) {
    for i in 0..n {
        log.append(
            &format!("s-{}", i % 3),
            ExpectedVersion::Any,
            &[EventData::new("E", b"{}")],
        )
        .unwrap();
    }
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn the_old_version_serves_while_the_new_one_builds_then_it_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 30);
    // Nothing serves: version 1 serves at once.
    let mut v1 = log.projection("p", PerStream).version(1).save_every(1).open().unwrap();
    assert!(v1.is_serving());
    let mut reader = ServingProjection::new(dir.path(), "p").unwrap();
    let served = reader.load::<BTreeMap<String, u64>>().unwrap().unwrap();
    assert_eq!((served.version, served.position), (1, 30));
    assert_eq!(served.model, log.view().unwrap().rebuild(&PerStream).unwrap());

    // Version 2 (another model type) builds beside it; version 1 keeps
    // serving, and its saves are what the reader loads.
    append(&log, 10);
    let mut v2 = log.projection("p", Positions).version(2).save_every(1).open().unwrap();
    assert!(!v2.is_serving());
    assert_eq!(v2.model().len(), 40);
    append(&log, 5);
    v1.step(Duration::ZERO).unwrap();
    assert!(v1.is_serving());
    assert!(!reader.changed().unwrap());
    let served = reader.load::<BTreeMap<String, u64>>().unwrap().unwrap();
    assert_eq!((served.version, served.position), (1, 45));
    assert_eq!(served.model.values().sum::<u64>(), 45);
    assert_eq!(
        files(dir.path(), "annal.proj."),
        [
            "annal.proj.p~serving",
            "annal.proj.p~serving.lock",
            "annal.proj.p~v1",
            "annal.proj.p~v1.lock",
            "annal.proj.p~v2",
            "annal.proj.p~v2.lock"
        ]
    );

    // The switch: v2 catches up (the 5 new events), saves, takes over. v1's
    // runner still holds its lock: its files stay.
    let taken = v2.take_over().unwrap();
    assert_eq!((taken.previous, taken.retired), (Some(1), false));
    assert!(v2.is_serving());
    assert_eq!(v2.model(), &log.view().unwrap().rebuild(&Positions).unwrap());
    assert!(reader.changed().unwrap());
    let served = reader.load_raw().unwrap().unwrap();
    assert_eq!((served.version, served.position), (2, 45));
    let served = reader.load::<Vec<u64>>().unwrap().unwrap();
    assert_eq!(served.model, (0..45).collect::<Vec<u64>>());
    assert!(!reader.changed().unwrap());

    // The old runner learns it at its next step and save, and writes
    // nothing more.
    let v1_file = dir.path().join("annal.proj.p~v1");
    let before = std::fs::read(&v1_file).unwrap();
    append(&log, 3);
    for _ in 0..2 {
        match v1.step(Duration::ZERO) {
            Err(Error::Superseded { name, version, by }) => assert_eq!((name.as_str(), version, by), ("p", 1, 2)),
            other => panic!("{other:?}"),
        }
    }
    assert!(!v1.is_serving());
    assert!(matches!(v1.save(), Err(Error::Superseded { version: 1, by: 2, .. })));
    assert_eq!(
        std::fs::read(&v1_file).unwrap(),
        before,
        "a superseded runner saves nothing"
    );
    // A runner of version 1 is not opened again (its lock held or not).
    assert!(matches!(
        log.projection("p", PerStream).version(1).open(),
        Err(Error::Superseded { version: 1, by: 2, .. })
    ));
    v1.retire().unwrap();
    assert!(matches!(
        log.projection("p", PerStream).version(1).open(),
        Err(Error::Superseded { version: 1, by: 2, .. })
    ));
    // The unversioned projection of the name is superseded too.
    assert!(matches!(
        log.projection("p", PerStream).open(),
        Err(Error::Superseded { version: 0, by: 2, .. })
    ));
    assert_eq!(
        files(dir.path(), "annal.proj."),
        [
            "annal.proj.p~serving",
            "annal.proj.p~serving.lock",
            "annal.proj.p~v2",
            "annal.proj.p~v2.lock"
        ]
    );
    // The new version goes on serving, live.
    v2.step(Duration::ZERO).unwrap();
    assert_eq!(v2.model(), &log.view().unwrap().rebuild(&Positions).unwrap());
    v2.close().unwrap();
    let mut again = log.projection("p", Positions).version(2).open().unwrap();
    assert!(again.is_serving());
    assert_eq!(again.take_over().unwrap().previous, None, "it already serves");
    assert_eq!(reader.load::<Vec<u64>>().unwrap().unwrap().position, 48);
}

const CHILD_FN: &str = "old_version_child";
const ENV_DIR: &str = "ANNAL_VERSIONS_DIR";

/// The child: version 1's runner through a `Reader`, saving at every event,
/// stepping until it is superseded; then it retires.
#[test]
fn old_version_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else { return };
    let mut v1 = Reader::open(&dir)
        .unwrap()
        .projection("p", Positions)
        .version(1)
        .save_every(1)
        .open()
        .unwrap();
    child_say(&format!("READY {}", v1.is_serving()));
    loop {
        match v1.step(Duration::from_millis(5)) {
            Ok(_) => {}
            Err(Error::Superseded { version, by, .. }) => {
                child_say(&format!("SUPERSEDED {version} {by}"));
                v1.retire().unwrap();
                child_say("RETIRED");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn the_old_version_serves_from_another_process_until_the_new_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 20);
    let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, dir.path().to_str().unwrap())]);
    assert_eq!(child.line(Duration::from_secs(60)).as_deref(), Some("READY true"));
    // What the other process saves is what a reader of the serving model
    // loads, as it comes.
    let mut reader = ServingProjection::new(dir.path(), "p").unwrap();
    append(&log, 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let served = loop {
        let served = reader.load::<Vec<u64>>().unwrap().unwrap();
        if served.position == 30 {
            break served;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never saved position 30"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!((served.version, served.model), (1, (0..30).collect::<Vec<u64>>()));
    // Version 2 builds here while the child serves, then takes over; the
    // child holds its lock, so its files stay until it retires them.
    let mut v2 = log.projection("p", Positions).version(2).open().unwrap();
    assert!(!v2.is_serving());
    append(&log, 5);
    let taken = v2.take_over().unwrap();
    assert_eq!((taken.previous, taken.retired), (Some(1), false));
    assert_eq!(child.line(Duration::from_secs(60)).as_deref(), Some("SUPERSEDED 1 2"));
    assert_eq!(child.line(Duration::from_secs(60)).as_deref(), Some("RETIRED"));
    assert!(child.wait(Duration::from_secs(60)).success());
    assert!(!dir.path().join("annal.proj.p~v1").exists());
    assert!(!dir.path().join("annal.proj.p~v1.lock").exists());
    assert!(reader.changed().unwrap());
    let served = reader.load::<Vec<u64>>().unwrap().unwrap();
    assert_eq!((served.version, served.position), (2, 35));
    assert_eq!(served.model, log.view().unwrap().rebuild(&Positions).unwrap());
}

#[test]
fn an_unversioned_projection_is_upgraded_by_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 12);
    // A runner of the unversioned projection, through a Reader (another
    // process's way), serving as before versions existed.
    let mut old = Reader::open(dir.path())
        .unwrap()
        .projection("p", PerStream)
        .save_every(1)
        .open()
        .unwrap();
    assert!(old.is_serving());
    let reader = log.serving_projection("p").unwrap();
    assert_eq!(reader.version().unwrap(), Some(0));
    // Version 1 builds beside the unversioned file: it does not serve yet.
    let mut v1 = log.projection("p", Positions).version(1).open().unwrap();
    assert!(!v1.is_serving());
    assert_eq!(reader.version().unwrap(), Some(0));
    append(&log, 4);
    old.step(Duration::ZERO).unwrap();
    assert_eq!(old.model().values().sum::<u64>(), 16);
    let taken = v1.take_over().unwrap();
    assert_eq!((taken.previous, taken.retired), (Some(0), false));
    assert_eq!(reader.version().unwrap(), Some(1));
    assert!(matches!(
        old.step(Duration::ZERO),
        Err(Error::Superseded { version: 0, by: 1, .. })
    ));
    assert!(matches!(old.close(), Err(Error::Superseded { .. })));
    // Its lock is free now: retired by a reader of the serving model.
    assert_eq!(reader.retire_superseded().unwrap(), [0]);
    assert_eq!(reader.retire_superseded().unwrap(), Vec::<u64>::new());
    assert!(!dir.path().join("annal.proj.p").exists());
    assert!(!dir.path().join("annal.proj.p.lock").exists());
    assert!(matches!(
        log.projection("p", PerStream).open(),
        Err(Error::Superseded { version: 0, by: 1, .. })
    ));
    // An unversioned runner never takes over.
    let other = log.projection("q", PerStream).open().unwrap();
    let mut other = other;
    assert!(matches!(other.take_over(), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_version_takes_over_by_itself_at_a_position_or_when_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 10);
    let mut v1 = log.projection("p", Positions).version(1).open().unwrap();
    let mut v2 = log
        .projection("p", Positions)
        .version(2)
        .take_over(TakeOver::AtPosition(15))
        .open()
        .unwrap();
    assert!(!v2.is_serving());
    append(&log, 4);
    v2.step(Duration::ZERO).unwrap();
    assert!(!v2.is_serving(), "at position 14");
    append(&log, 1);
    v2.step(Duration::ZERO).unwrap();
    assert!(v2.is_serving(), "at position 15");
    assert!(matches!(v1.step(Duration::ZERO), Err(Error::Superseded { by: 2, .. })));
    let v3 = log
        .projection("p", Positions)
        .version(3)
        .take_over(TakeOver::WhenCaughtUp)
        .open()
        .unwrap();
    assert!(v3.is_serving());
    assert_eq!(log.serving_projection("p").unwrap().version().unwrap(), Some(3));
    assert!(matches!(v2.save(), Err(Error::Superseded { version: 2, by: 3, .. })));
    drop((v1, v2));
    // Both superseded versions' locks are free now.
    assert_eq!(
        log.serving_projection("p").unwrap().retire_superseded().unwrap(),
        [1, 2]
    );
}

#[test]
fn two_concurrent_take_overs_from_one_version_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 20);
    let mut wins = [0u32; 2];
    for round in 0..24 {
        let name = format!("p{round}");
        let v1 = log.projection(&name, Positions).version(1).open().unwrap();
        let v2 = log.projection(&name, Positions).version(2).open().unwrap();
        let v3 = log.projection(&name, Positions).version(3).open().unwrap();
        // Both saw version 1 serve (at their open): that is what each
        // take-over compares, never a version read again, so whichever
        // switches second fails, whatever the timing.
        assert!(v1.is_serving() && !v2.is_serving() && !v3.is_serving());
        append(&log, 1);
        let barrier = std::sync::Barrier::new(2);
        let (mut v2, mut v3, r2, r3) = std::thread::scope(|s| {
            let t2 = s.spawn(|| {
                let mut v2 = v2;
                barrier.wait();
                let r = v2.take_over();
                (v2, r)
            });
            let t3 = s.spawn(|| {
                let mut v3 = v3;
                barrier.wait();
                let r = v3.take_over();
                (v3, r)
            });
            let (v2, r2) = t2.join().unwrap();
            let (v3, r3) = t3.join().unwrap();
            (v2, v3, r2, r3)
        });
        let serving = log.serving_projection(&name).unwrap().version().unwrap();
        match (r2, r3) {
            (
                Ok(t),
                Err(Error::ServingChanged {
                    version,
                    expected,
                    found,
                    ..
                }),
            ) => {
                // 2 won; 3 saw 1 serve: it now builds beside 2 and takes
                // over from it when asked again.
                assert_eq!(t.previous, Some(1));
                assert_eq!((version, expected, found), (3, 1, 2));
                assert_eq!(serving, Some(2));
                assert!(v2.is_serving() && !v3.is_serving());
                assert_eq!(v3.take_over().unwrap().previous, Some(2));
                wins[0] += 1;
            }
            (Err(Error::Superseded { version, by, .. }), Ok(t)) => {
                // 3 won: 2 can never serve.
                assert_eq!(t.previous, Some(1));
                assert_eq!((version, by), (2, 3));
                assert_eq!(serving, Some(3));
                assert!(!v2.is_serving() && v3.is_serving());
                wins[1] += 1;
            }
            (r2, r3) => panic!("round {round}: exactly one wins: {r2:?} {r3:?}"),
        }
        assert!(matches!(v2.step(Duration::ZERO), Err(Error::Superseded { by: 3, .. })));
        drop((v1, v2, v3));
    }
    eprintln!("version 2 won {} rounds, version 3 {}", wins[0], wins[1]);
}

#[test]
fn a_take_over_compares_the_version_its_runner_saw_not_one_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 10);
    // The unversioned projection serves; versions 1 and 2 (manual) both
    // see it serve, and build beside it.
    let old = log.projection("p", PerStream).save_every(1).open().unwrap();
    let mut v1 = log.projection("p", Positions).version(1).open().unwrap();
    let mut v2 = log.projection("p", Positions).version(2).open().unwrap();
    assert!(!v1.is_serving() && !v2.is_serving());
    append(&log, 2);
    assert_eq!(v1.take_over().unwrap().previous, Some(0));
    // Version 2 was promoted over version 0, which no longer serves: it
    // does not replace version 1, which nobody told it of.
    match v2.take_over() {
        Err(Error::ServingChanged {
            name,
            version,
            expected,
            found,
        }) => assert_eq!((name.as_str(), version, expected, found), ("p", 2, 0, 1)),
        other => panic!("{other:?}"),
    }
    let serving = log.serving_projection("p").unwrap();
    assert_eq!(serving.version().unwrap(), Some(1));
    assert!(v1.is_serving() && !v2.is_serving());
    // It has seen version 1 serve now: promoted again, it takes over.
    assert_eq!(v2.take_over().unwrap().previous, Some(1));
    assert_eq!(serving.version().unwrap(), Some(2));
    assert!(matches!(v1.step(Duration::ZERO), Err(Error::Superseded { by: 2, .. })));
    drop((old, v1));
    assert_eq!(serving.retire_superseded().unwrap(), [0, 1]);
}

/// Version 2's model, the positions as `Positions`, whose first event
/// folded (in its rebuild) waits until the test lets it go on.
struct Gated {
    gate: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Projection for Gated {
    type Model = Vec<u64>;
    fn empty(&self) -> Vec<u64> {
        Vec::new()
    }
    fn apply(&self, m: &mut Vec<u64>, r: &RecordRef<'_>) {
        let gate = self.gate.lock().unwrap().take();
        if let Some((rebuilding, go_on)) = gate {
            rebuilding.send(()).unwrap();
            go_on.recv().unwrap();
        }
        m.push(r.position());
    }
    fn merge(&self, mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
        a.extend(b);
        a
    }
}

#[test]
fn a_version_opened_when_nothing_served_does_not_replace_one_that_took_over_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 10);
    let (rebuilding, in_rebuild) = std::sync::mpsc::channel();
    let (go_on, gate) = std::sync::mpsc::channel();
    let gated = Gated {
        gate: Mutex::new(Some((rebuilding, gate))),
    };
    // Version 2's rebuild runs in a pool of its own, so that version 1's
    // rebuild (in the global pool) never waits for the thread held at the
    // gate.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    std::thread::scope(|s| {
        let opening = s.spawn(|| pool.install(|| log.projection("p", gated).version(2).open()));
        // Version 2 read "nothing serves" and is rebuilding.
        in_rebuild.recv().unwrap();
        let v1 = log.projection("p", Positions).version(1).open().unwrap();
        assert!(v1.is_serving(), "nothing served: version 1 serves at once");
        go_on.send(()).unwrap();
        let mut v2 = opening.join().unwrap().unwrap();
        // Nobody promoted version 2: it builds beside version 1.
        assert!(!v2.is_serving());
        assert_eq!(log.serving_projection("p").unwrap().version().unwrap(), Some(1));
        assert_eq!(v2.model(), &(0..10).collect::<Vec<u64>>());
        assert_eq!(v2.take_over().unwrap().previous, Some(1));
        drop(v1);
    });
}

/// The real file system, each call named in `calls` (`op file-name`).
#[derive(Debug, Clone, Default)]
struct Recording {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn note(&self, op: &str, path: &Path) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.calls.lock().unwrap().push(format!("{op} {name}"));
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Io for Recording {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.note("create", path);
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.note("rename", to);
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.note("remove", path);
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.calls.lock().unwrap().push("sync directory".into());
        StdIo.sync_dir(dir)
    }
}

/// Hold the switch lock of `p` in `dir` as a switch in another process
/// would (an `flock` of another open).
fn hold_switch_lock(dir: &Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("annal.proj.p~serving.lock"))
        .unwrap();
    f.lock().unwrap();
    f
}

#[test]
fn the_switch_lock_is_waited_for_a_bounded_time_and_retiring_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let io = Recording::default();
    let log = Log::open_with(dir.path(), Options::default().io(Arc::new(io.clone()))).unwrap();
    append(&log, 5);
    let v1 = log.projection("p", Positions).version(1).open().unwrap();
    let mut v2 = log.projection("p", Positions).version(2).open().unwrap();
    let taken = v2.take_over().unwrap();
    assert_eq!(
        (taken.previous, taken.retired),
        (Some(1), false),
        "version 1's runner is open"
    );
    drop(v1);
    let lock_path = dir.path().join("annal.proj.p~serving.lock");
    let serving = log.serving_projection("p").unwrap();

    // A process stopped while it holds the switch lock (between the rename
    // of a switch and its directory fsync, say): a take-over and a
    // retirement wait a few seconds, then report the lock, and change
    // nothing.
    let held = hold_switch_lock(dir.path());
    let mut v3 = log.projection("p", Positions).version(3).open().unwrap();
    assert!(!v3.is_serving());
    match v3.take_over() {
        Err(Error::Locked { path }) => assert_eq!(path, lock_path),
        other => panic!("{other:?}"),
    }
    assert!(!v3.is_serving());
    match serving.retire_superseded() {
        Err(Error::Locked { path }) => assert_eq!(path, lock_path),
        other => panic!("{other:?}"),
    }
    assert_eq!(serving.version().unwrap(), Some(2));
    assert!(dir.path().join("annal.proj.p~v1").exists());
    assert!(dir.path().join("annal.proj.p~v1.lock").exists());

    // Let go: the retirement makes the directory durable (the switch's
    // rename with it) before it removes anything.
    drop(held);
    io.take();
    assert_eq!(serving.retire_superseded().unwrap(), [1]);
    let calls = io.take();
    let first_removal = calls.iter().position(|c| c.starts_with("remove")).unwrap();
    assert_eq!(calls[first_removal - 1], "sync directory", "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("sync directory"), "{calls:?}");
    assert!(calls.contains(&"remove annal.proj.p~v1".to_owned()), "{calls:?}");
    assert!(calls.contains(&"remove annal.proj.p~v1.lock".to_owned()), "{calls:?}");
    assert_eq!(v3.take_over().unwrap().previous, Some(2));
}

/// The real file system, but the first `sweeps` renames of a projection's
/// temporary file find it removed just before, as a writer's recovery in
/// another process removing `*.tmp` would.
#[derive(Debug)]
struct Sweeping {
    sweeps: AtomicU64,
}

impl Io for Sweeping {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if is_projection(from)
            && self
                .sweeps
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            std::fs::remove_file(from)?;
        }
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

#[test]
fn a_save_or_a_switch_whose_temporary_a_recovery_removed_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Sweeping {
        sweeps: AtomicU64::new(0),
    });
    let log = Log::open_with(dir.path(), Options::default().io(io.clone())).unwrap();
    append(&log, 5);
    // Opening saves version 1's model, then switches to it (nothing
    // served): both renames find their temporary file gone, twice each.
    io.sweeps.store(2, Ordering::SeqCst);
    let mut v1 = log.projection("p", Positions).version(1).save_every(1).open().unwrap();
    assert!(v1.is_serving());
    assert_eq!(io.sweeps.load(Ordering::SeqCst), 0);
    io.sweeps.store(3, Ordering::SeqCst);
    append(&log, 2);
    v1.step(Duration::ZERO).unwrap();
    let mut v2 = log.projection("p", Positions).version(2).open().unwrap();
    v2.take_over().unwrap();
    assert_eq!(io.sweeps.load(Ordering::SeqCst), 0);
    assert_eq!(
        files(dir.path(), "annal.proj."),
        [
            "annal.proj.p~serving",
            "annal.proj.p~serving.lock",
            "annal.proj.p~v1",
            "annal.proj.p~v1.lock",
            "annal.proj.p~v2",
            "annal.proj.p~v2.lock"
        ],
        "no temporary file left"
    );
    let served = log
        .serving_projection("p")
        .unwrap()
        .load::<Vec<u64>>()
        .unwrap()
        .unwrap();
    assert_eq!((served.version, served.model), (2, (0..7).collect::<Vec<u64>>()));
    // A sweep at every try: reported, the old model intact.
    io.sweeps.store(u64::MAX, Ordering::SeqCst);
    append(&log, 1);
    v2.step(Duration::ZERO).unwrap();
    match v2.save() {
        Err(Error::Io {
            op: "rename", source, ..
        }) => assert_eq!(source.kind(), io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    let served = log
        .serving_projection("p")
        .unwrap()
        .load::<Vec<u64>>()
        .unwrap()
        .unwrap();
    assert_eq!(served.position, 7);
    drop(v1);
}

#[test]
fn a_temporary_file_left_by_a_crashed_save_is_removed_by_the_next_runner() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 3);
    log.projection("p", Positions)
        .version(1)
        .open()
        .unwrap()
        .close()
        .unwrap();
    let left = dir.path().join("annal.proj.p~v1.00112233445566ff.tmp");
    let other = dir.path().join("annal.proj.p~v2.00112233445566ff.tmp");
    std::fs::write(&left, b"torn").unwrap();
    std::fs::write(&other, b"not version 1's").unwrap();
    let v1 = log.projection("p", Positions).version(1).open().unwrap();
    assert!(!left.exists());
    assert!(other.exists());
    drop(v1);
}

#[test]
fn names_that_could_name_another_names_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    // The model of `b.lock` would be the lock file of `b`'s version 0; a
    // writer's recovery removes `*.tmp`; `b.parked` would be `b`'s parked
    // list.
    for name in ["b.lock", "b.tmp", "b.parked", "b.Lock"] {
        assert!(
            matches!(log.projection(name, Positions).open(), Err(Error::InvalidArgument(_))),
            "{name}"
        );
        assert!(
            matches!(
                log.projection(name, Positions).version(1).open(),
                Err(Error::InvalidArgument(_))
            ),
            "{name}"
        );
        assert!(
            matches!(ServingProjection::new(dir.path(), name), Err(Error::InvalidArgument(_))),
            "{name}"
        );
        assert!(
            matches!(log.durable_subscription(name).open(), Err(Error::InvalidArgument(_))),
            "{name}"
        );
    }
    assert_eq!(
        files(dir.path(), "annal.proj."),
        Vec::<String>::new(),
        "nothing created"
    );
    assert_eq!(files(dir.path(), "annal.sub."), Vec::<String>::new(), "nothing created");
    log.projection("b.locks", Positions).open().unwrap();
}

#[test]
fn a_damaged_serving_file_is_corrupt_naming_it_and_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 3);
    let mut v1 = log.projection("p", Positions).version(1).open().unwrap();
    let path = dir.path().join("annal.proj.p~serving");
    let good = std::fs::read(&path).unwrap();
    assert_eq!(good.len(), 40);
    let reader = ServingProjection::new(dir.path(), "p").unwrap();
    for (at, offset) in [(0usize, 0u64), (8, 8), (13, 8), (20, 8), (39, 8)] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        for e in [
            reader.version().unwrap_err(),
            v1.step(Duration::ZERO).unwrap_err(),
            log.projection("p", Positions).version(2).open().unwrap_err(),
        ] {
            match e {
                Error::Corrupt { path: p, offset: o, .. } => assert_eq!((p, o), (path.clone(), offset), "byte {at}"),
                other => panic!("byte {at}: {other:?}"),
            }
        }
    }
    std::fs::write(&path, &good[..39]).unwrap();
    assert!(matches!(reader.version(), Err(Error::Corrupt { offset: 0, .. })));
    std::fs::write(&path, &good).unwrap();
    v1.step(Duration::ZERO).unwrap();
    assert!(matches!(
        ServingProjection::new(dir.path(), "../p"),
        Err(Error::InvalidArgument(_))
    ));
}

// ---------------------------------------------------------------- crashes

/// An I/O seam that crashes the projection's files at their `crash_at`-th
/// operation: that operation and every later one on a file whose name
/// starts with `annal.proj.` fail, as if the process had died there (the
/// log's own files go on). It keeps what a power cut at that moment would
/// leave of those files: contents as of their last fsync, names as of
/// their directory's last fsync.
#[derive(Debug, Clone)]
struct CutIo {
    state: Arc<Mutex<Cut>>,
    crash_at: u64,
    ops: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Cut {
    /// Inode contents: (written, durable).
    nodes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Names now, and as of the last directory fsync.
    names: HashMap<PathBuf, usize>,
    durable_names: HashMap<PathBuf, usize>,
    /// A projection file's name changed since the last directory fsync.
    dirty: bool,
    /// The power-cut image at the crash: name and durable contents.
    image: Option<Vec<(PathBuf, Vec<u8>)>>,
}

fn is_projection(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("annal.proj."))
}

impl CutIo {
    fn new(crash_at: u64) -> CutIo {
        CutIo {
            state: Arc::default(),
            crash_at,
            ops: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Cut> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count an operation on a projection file; the crash at `crash_at`
    /// (the power-cut image is taken then).
    fn op(&self, path: &Path) -> io::Result<()> {
        if !is_projection(path) {
            return Ok(());
        }
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n < self.crash_at {
            return Ok(());
        }
        let mut s = self.state();
        if s.image.is_none() {
            let image = s
                .durable_names
                .iter()
                .map(|(p, &node)| (p.clone(), s.nodes[node].1.clone()))
                .collect();
            s.image = Some(image);
        }
        Err(io::Error::other(format!(
            "crashed at operation {n} ({})",
            path.display()
        )))
    }
}

#[derive(Debug)]
struct CutFile {
    inner: Box<dyn IoFile>,
    path: PathBuf,
    node: Option<usize>,
    io: CutIo,
}

impl Io for CutIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.op(path)?;
        let inner = StdIo.create(path)?;
        let node = is_projection(path).then(|| {
            let mut s = self.state();
            s.nodes.push(Default::default());
            let node = s.nodes.len() - 1;
            s.names.insert(path.to_owned(), node);
            s.dirty = true;
            node
        });
        Ok(Box::new(CutFile {
            inner,
            path: path.to_owned(),
            node,
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.op(path)?;
        let inner = StdIo.open(path)?;
        let node = self.state().names.get(path).copied();
        Ok(Box::new(CutFile {
            inner,
            path: path.to_owned(),
            node,
            io: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(to)?;
        StdIo.rename(from, to)?;
        let mut s = self.state();
        if let Some(node) = s.names.remove(from) {
            s.names.insert(to.to_owned(), node);
            s.dirty = true;
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op(path)?;
        StdIo.remove(path)?;
        let mut s = self.state();
        s.dirty |= s.names.remove(path).is_some();
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // A directory fsync after a projection file's name changed counts
        // as one of the projection's operations (the log's own do not).
        let dirty = self.state().dirty;
        if dirty {
            self.op(&dir.join("annal.proj.(directory)"))?;
        }
        StdIo.sync_dir(dir)?;
        let mut s = self.state();
        s.durable_names = s.names.clone();
        s.dirty = false;
        Ok(())
    }
}

impl IoFile for CutFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.io.op(&self.path)?;
        self.inner.write_at(offset, buf)?;
        if let Some(node) = self.node {
            let mut s = self.io.state();
            let w = &mut s.nodes[node].0;
            let end = offset as usize + buf.len();
            if w.len() < end {
                w.resize(end, 0);
            }
            w[offset as usize..end].copy_from_slice(buf);
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        self.io.op(&self.path)?;
        self.inner.sync()?;
        if let Some(node) = self.node {
            let mut s = self.io.state();
            s.nodes[node].1 = s.nodes[node].0.clone();
        }
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.io.op(&self.path)?;
        self.inner.truncate(len)?;
        if let Some(node) = self.node {
            self.io.state().nodes[node].0.resize(len as usize, 0);
        }
        Ok(())
    }
}

/// The whole life of a switch, through `io`: version 1 serves, version 2
/// builds beside it while it serves, takes over, version 1 learns it and
/// retires. Stops at the first failure (the crash).
fn switch_scenario(dir: &Path, io: &CutIo) -> annal::Result<()> {
    let log = Log::open_with(
        dir,
        Options::default()
            .durability(annal::Durability::Fsync)
            .io(Arc::new(io.clone())),
    )?;
    let append = |n: u64| -> annal::Result<()> {
        for i in 0..n {
            log.append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                &[EventData::new("E", b"{}")],
            )?;
        }
        Ok(())
    };
    // Saves every 4 events folded, never by the clock: the same operations
    // in every run.
    let open = |version: u64| {
        log.projection("p", Positions)
            .version(version)
            .save_every(4)
            .save_interval(Duration::from_secs(3600))
            .open()
    };
    append(20)?;
    let mut v1 = open(1)?;
    append(6)?;
    v1.step(Duration::ZERO)?;
    let mut v2 = open(2)?;
    append(5)?;
    v1.step(Duration::ZERO)?;
    v2.step(Duration::ZERO)?;
    append(2)?;
    let taken = v2.take_over()?;
    assert_eq!(taken.previous, Some(1));
    match v1.step(Duration::ZERO) {
        Err(Error::Superseded { .. }) => {}
        other => panic!("the old runner is superseded: {other:?}"),
    }
    v1.retire()?;
    v2.close()?;
    log.close()
}

/// What any crash image must hold, and the switch completed from it.
fn check_image(dir: &Path, what: &str) {
    let log = Log::open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
    let positions: Vec<u64> = log.view().unwrap().read_all(0).map(|r| r.unwrap().position()).collect();
    let mut reader = log.serving_projection("p").unwrap();
    // At most one version serves (the serving file names one, or none
    // before version 1's first switch), and its model is the fold of
    // exactly the events below its position.
    let version = reader.version().unwrap_or_else(|e| panic!("{what}: {e}"));
    match reader.load::<Vec<u64>>().unwrap_or_else(|e| panic!("{what}: {e}")) {
        Some(served) => {
            assert!(matches!(served.version, 1 | 2), "{what}: {served:?}");
            assert_eq!(Some(served.version), version, "{what}");
            let below: Vec<u64> = positions.iter().copied().filter(|&p| p < served.position).collect();
            assert_eq!(served.model, below, "{what}: the serving model is a rebuild's");
            // Readers never go back in time across a switch: the model
            // serving is not older than the position it took over at (the
            // serving file's, spec 24.8: bytes 32..40).
            if let Ok(file) = std::fs::read(dir.join("annal.proj.p~serving")) {
                let at = u64::from_le_bytes(file[32..40].try_into().unwrap());
                assert!(
                    served.position >= at,
                    "{what}: model at {} < taken over at {at}",
                    served.position
                );
            }
        }
        None => assert_eq!(version, None, "{what}"),
    }
    // Every model file left decodes (none is torn).
    for f in files(dir, "annal.proj.p~v") {
        if !f.ends_with(".lock") && !f.ends_with(".tmp") {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            assert!(bytes.starts_with(b"ANNALPRJ"), "{what}: {f}");
        }
    }
    // The deployment goes on from here: version 2 takes over (or already
    // serves), its model equals a fresh rebuild, version 1 is superseded,
    // and its files can be retired.
    let mut v2 = log
        .projection("p", Positions)
        .version(2)
        .open()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    v2.take_over().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(v2.is_serving(), "{what}");
    assert_eq!(v2.model(), &positions, "{what}");
    assert!(
        matches!(
            log.projection("p", Positions).version(1).open(),
            Err(Error::Superseded { version: 1, by: 2, .. })
        ),
        "{what}"
    );
    reader.retire_superseded().unwrap();
    assert!(!dir.join("annal.proj.p~v1").exists(), "{what}");
    let served = reader.load::<Vec<u64>>().unwrap().unwrap();
    assert_eq!((served.version, served.model), (2, positions), "{what}");
}

#[test]
fn a_crash_at_every_step_of_the_switch_leaves_one_serving_version() {
    // The operations of a life without a crash.
    let dir = tempfile::tempdir().unwrap();
    let io = CutIo::new(u64::MAX);
    switch_scenario(dir.path(), &io).unwrap();
    let total = io.ops.load(Ordering::SeqCst);
    assert!(total > 30, "{total} operations");
    eprintln!("{total} operations, each crashed");
    check_image(dir.path(), "no crash");
    for crash_at in 0..total {
        let dir = tempfile::tempdir().unwrap();
        let io = CutIo::new(crash_at);
        assert!(
            switch_scenario(dir.path(), &io).is_err(),
            "operation {crash_at} of {total} fails"
        );
        let image = io.state().image.clone().expect("the crash took an image");
        // A power cut: the log's files (fsynced at every append) and what
        // was durable of the projection's.
        let cut = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            if !is_projection(&e.path()) {
                std::fs::copy(e.path(), cut.path().join(e.file_name())).unwrap();
            }
        }
        for (path, bytes) in &image {
            std::fs::write(cut.path().join(path.file_name().unwrap()), bytes).unwrap();
        }
        check_image(cut.path(), &format!("power cut at operation {crash_at} of {total}"));
        // A process crash: the files as they are.
        check_image(dir.path(), &format!("process crash at operation {crash_at} of {total}"));
    }
}
