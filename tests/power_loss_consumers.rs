//! The power-cut simulator (`support::PowerIo`) over a durable
//! subscription's checkpoint writes, their creation and a projection
//! runner's saves (issue 19, spec 24): a writer, consumers and a runner in
//! one process, their files written through the log's I/O seam; crash
//! images before every sync and a sample of the other operations (torn,
//! dropped, kept writes; lost directory operations).
//!
//! The first test creates the checkpoint file before the first crash
//! point, then models every slot write and fsync and every save of the
//! runner (temporary file, fsync, rename, directory fsync). In every image:
//!
//! - the subscription opens (a torn slot leaves the other), resumes no
//!   earlier than its last commit that returned and never past what was
//!   acknowledged, and the events it then delivers are exactly the log's
//!   from there (no gap);
//! - the runner opens with a model equal to a rebuild of the image's log
//!   (exactly once).
//!
//! The second cuts the power at every operation of the creation itself (a
//! temporary file written and fsynced, hard-linked to the checkpoint's
//! name, removed, the directory fsynced; `PowerIo` models the link as a
//! directory entry, durable with the directory's fsync, for the temporary
//! file's inode) and of the first commits after it, for two creators whose
//! operations interleave as a seeded script says: two subscriptions, or
//! two creators of one (the first link wins; the other finds the file
//! there and never replaces it). In every image:
//!
//! - the log opens and removes the leftover temporary files;
//! - a subscription whose creation had returned exists;
//! - one that does not exist starts from its configured start when opened;
//!   one that exists resumes no earlier than its last commit that returned
//!   (nor than the start of the creator whose link won) and never past an
//!   acknowledged event, and delivers the log from there.
//!
//! The third shows the second catching a creation without the directory's
//! fsync, without the temporary file's, or with a rename for the link.

mod support;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use annal::io::{Io, IoFile};
use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options, Projection, RecordRef};
use support::{CapturePlan, PowerIo, Rng};

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

/// What had returned when an image was taken (the images are matched to
/// it by operation index).
#[derive(Debug, Clone, Copy, Default)]
struct Returned {
    /// The subscription's last commit that returned: its next position.
    committed: u64,
    /// After the last acknowledged event.
    acked: u64,
}

#[test]
fn power_cuts_during_checkpoints_and_saves_never_skip_nor_fold_twice() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let power = PowerIo::new(
        &dir,
        CapturePlan {
            per_sync: 1,
            op_permille: 100,
            per_op: 1,
            seed,
        },
    );
    power.set_enabled(false);
    let log = Options::default()
        .durability(Durability::Fsync)
        .io(Arc::new(power.clone()))
        .open(&dir)
        .unwrap();
    let mut sub = log
        .durable_subscription("s")
        .commit_every(rng.range(1, 4))
        .open()
        .unwrap();
    let mut runner = log
        .projection("p", Positions)
        .save_every(rng.range(1, 6))
        .open()
        .unwrap();
    power.set_enabled(true);
    // (operation index, what had returned by then), after each step.
    let mut timeline: Vec<(u64, Returned)> = vec![(power.ops(), Returned::default())];
    let mut now = Returned::default();
    for step in 0..150u64 {
        let n = rng.range(1, 3);
        let evs: Vec<EventData<'_>> = (0..n).map(|k| EventData::new("E", format!("{step}.{k}"))).collect();
        log.append(&format!("s-{}", step % 4), ExpectedVersion::Any, &evs)
            .unwrap();
        while let Some(r) = sub.try_next().unwrap() {
            if rng.range(0, 3) > 0 {
                sub.ack(&r).unwrap();
                now.acked = r.position + 1;
            }
        }
        if rng.range(0, 4) == 0 {
            sub.commit().unwrap();
        }
        now.committed = sub.committed();
        runner.step(Duration::ZERO).unwrap();
        if rng.range(0, 5) == 0 {
            runner.save().unwrap();
        }
        // Captures at later operations see at least what returned by now.
        timeline.push((power.ops(), now));
    }
    power.set_enabled(false);
    drop(sub);
    drop(runner);
    log.close().unwrap();
    let images = power.take_images();
    assert!(images.len() > 50, "{} images", images.len());
    let mut resumed_late = 0;
    for img in &images {
        let label = format!(
            "seed {seed}: power cut before op {} ({:?}, {}, variant {})",
            img.op, img.kind, img.mode, img.variant
        );
        // What had returned before this operation.
        let before = timeline
            .iter()
            .rev()
            .find(|(op, _)| *op <= img.op)
            .map(|t| t.1)
            .unwrap_or_default();
        let at = tempfile::tempdir().unwrap();
        img.write_to(at.path());
        let log = Log::open(at.path()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
        let end = log.view().unwrap().next_position();
        let mut sub = log
            .durable_subscription("s")
            .open()
            .unwrap_or_else(|e| panic!("{label}: the subscription opens: {e}"));
        let from = sub.committed();
        assert!(
            from >= before.committed.min(end),
            "{label}: resumes at {from}, before its commit at {} that returned",
            before.committed
        );
        // Never past an acknowledged event: a checkpoint only ever names
        // acknowledged ones (the acks after `before` can only raise it).
        let acked_max = timeline.last().map_or(0, |t| t.1.acked);
        assert!(
            from <= acked_max,
            "{label}: resumes at {from}, past every ack ({acked_max})"
        );
        resumed_late += usize::from(from > before.committed);
        let mut got = Vec::new();
        while let Some(r) = sub.try_next().unwrap() {
            got.push(r.position);
        }
        let all: Vec<u64> = log
            .view()
            .unwrap()
            .read_all(from)
            .map(|r| r.unwrap().position())
            .collect();
        assert_eq!(got, all, "{label}: delivers the log from its checkpoint, no gap");
        drop(sub);
        let runner = log
            .projection("p", Positions)
            .open()
            .unwrap_or_else(|e| panic!("{label}: the runner opens: {e}"));
        assert_eq!(
            runner.model(),
            &log.view().unwrap().rebuild(&Positions).unwrap(),
            "{label}: the model is the log's, each event once"
        );
        drop(runner);
        log.close().unwrap();
    }
    eprintln!(
        "{} images; {resumed_late} resumed past the commit returned before the cut",
        images.len()
    );
}

// ---------------------------------------------------------------------------
// Checkpoint creation under power cuts
// ---------------------------------------------------------------------------

thread_local! {
    /// Which creator this thread is (`None`: not scripted).
    static CREATOR: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Operations of the I/O seam that one creation of a checkpoint file does
/// (`create_shared` in `src/storage/io.rs`): create the temporary file,
/// write, fsync, link, remove it, fsync the directory.
const CREATE_OPS: usize = 6;

/// The order of the two creators' operations: both creates first (so both
/// have found no checkpoint file before either links one), then their
/// other operations shuffled.
fn script(rng: &mut Rng) -> Vec<usize> {
    let first = rng.range(0, 1) as usize;
    let mut rest: Vec<usize> = (0..2 * (CREATE_OPS - 1)).map(|i| i % 2).collect();
    for i in (1..rest.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        rest.swap(i, j);
    }
    let mut s = vec![first, 1 - first];
    s.extend(rest);
    s
}

#[derive(Debug, Default)]
struct TurnState {
    script: Vec<usize>,
    at: usize,
    /// The creator whose link succeeded first.
    linked_first: Option<usize>,
}

/// `PowerIo` with the operations of scripted threads (`CREATOR`) run one
/// at a time in the script's order; every other operation, and every one
/// after the script, runs as it comes.
#[derive(Debug, Clone)]
struct Turns {
    io: PowerIo,
    st: Arc<(Mutex<TurnState>, Condvar)>,
    flaw: Flaw,
}

/// A flaw put into the creators' operations, to see the test catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// The directory is not fsynced after the link.
    NoDirSync,
    /// The temporary file is not fsynced before the link.
    NoFileSync,
    /// The temporary file is renamed into place (replacing a file there).
    RenameForLink,
}

impl Turns {
    fn new(io: PowerIo, flaw: Flaw) -> Turns {
        Turns {
            io,
            st: Arc::new((Mutex::new(TurnState::default()), Condvar::new())),
            flaw,
        }
    }

    /// Whether this operation of this thread carries `flaw`.
    fn flawed(&self, flaw: Flaw) -> bool {
        self.flaw == flaw && CREATOR.with(Cell::get).is_some()
    }

    fn set_script(&self, script: Vec<usize>) {
        let mut g = self.st.0.lock().unwrap();
        *g = TurnState {
            script,
            ..TurnState::default()
        };
    }

    fn linked_first(&self) -> Option<usize> {
        self.st.0.lock().unwrap().linked_first
    }

    /// Run `f` in this thread's turn.
    fn turn<T>(&self, f: impl FnOnce() -> T) -> T {
        self.turn_with(|_| f())
    }

    /// Run `f` in this thread's turn, given the turns' state.
    fn turn_with<T>(&self, f: impl FnOnce(&mut TurnState) -> T) -> T {
        let me = CREATOR.with(Cell::get);
        let (m, cv) = &*self.st;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        let Some(me) = me else { return f(&mut g) };
        while g.at < g.script.len() && g.script[g.at] != me {
            let (next, waited) = cv
                .wait_timeout(g, Duration::from_secs(120))
                .unwrap_or_else(|p| p.into_inner());
            // (Not a timing assertion: only a script that no longer matches
            // what a creation does gets here.)
            assert!(
                !waited.timed_out(),
                "creator {me} never got its turn at step {} of {:?}: does a checkpoint's creation still take \
                 {CREATE_OPS} operations of the I/O seam?",
                next.at,
                next.script
            );
            g = next;
        }
        // The operation runs in the turn: the next one waits for it.
        let out = f(&mut g);
        if g.at < g.script.len() {
            g.at += 1;
        }
        cv.notify_all();
        out
    }
}

#[derive(Debug)]
struct TurnFile {
    inner: Box<dyn IoFile>,
    turns: Turns,
}

impl Io for Turns {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        let inner = self.turn(|| self.io.create(path))?;
        Ok(Box::new(TurnFile {
            inner,
            turns: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        let inner = self.turn(|| self.io.open(path))?;
        Ok(Box::new(TurnFile {
            inner,
            turns: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.turn(|| self.io.rename(from, to))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.turn(|| self.io.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.flawed(Flaw::NoDirSync) {
            return self.turn(|| Ok(()));
        }
        self.turn(|| self.io.sync_dir(dir))
    }
    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.turn_with(|st| {
            let r = if self.flawed(Flaw::RenameForLink) {
                self.io.rename(from, to)
            } else {
                self.io.hard_link(from, to)
            };
            if r.is_ok() && st.linked_first.is_none() {
                st.linked_first = CREATOR.with(Cell::get);
            }
            r
        })
    }
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.turn(|| self.io.create_dir(dir))
    }
}

impl IoFile for TurnFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.turns.turn(|| self.inner.write_at(offset, buf))
    }
    fn sync(&self) -> std::io::Result<()> {
        if self.turns.flawed(Flaw::NoFileSync) {
            return self.turns.turn(|| Ok(()));
        }
        self.turns.turn(|| self.inner.sync())
    }
    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.turns.turn(|| self.inner.truncate(len))
    }
    fn reserve(&self, offset: u64, len: u64) -> std::io::Result<bool> {
        self.turns.turn(|| self.inner.reserve(offset, len))
    }
}

/// What had returned for one subscription name.
#[derive(Debug, Clone, Copy, Default)]
struct Made {
    /// Its creation (an `open` that created or found the file) returned.
    created: bool,
    /// Its last commit that returned: the next position.
    committed: u64,
    /// After its last acknowledged event.
    acked: u64,
}

fn sub_file(name: &str) -> String {
    format!("{}{name}", annal::SUBSCRIPTION_FILE_PREFIX)
}

/// One round: a log of `prefill` durable events; two creators open
/// subscriptions `names` starting at `starts` at once (their operations
/// interleaved by a seeded script), each crash point an image; the one (or
/// two) opened consume, acknowledge and commit; more appends, more commits.
/// Returns the images checked, the images without and with the file.
fn creation_round(seed: u64, round: u64, names: [&str; 2], starts: [u64; 2], flaw: Flaw) -> (usize, usize, usize) {
    let mut rng = Rng::new(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    // Every operation a crash point while enabled.
    let power = PowerIo::new(
        &dir,
        CapturePlan {
            per_sync: 3,
            op_permille: 1000,
            per_op: 2,
            seed: rng.next_u64(),
        },
    );
    power.set_enabled(false);
    let turns = Turns::new(power.clone(), flaw);
    let log = Options::default()
        .durability(Durability::Fsync)
        .io(Arc::new(turns.clone()))
        .open(&dir)
        .unwrap();
    let prefill = 12;
    for i in 0..prefill {
        log.append(
            &format!("s-{}", i % 3),
            ExpectedVersion::Any,
            &[EventData::new("E", format!("p{i}"))],
        )
        .unwrap();
    }
    let same = names[0] == names[1];
    let mut made: BTreeMap<&str, Made> = names.iter().map(|n| (*n, Made::default())).collect();
    // (operation index, what had returned by then).
    let mut timeline: Vec<(u64, BTreeMap<&str, Made>)> = vec![(0, made.clone())];
    turns.set_script(script(&mut rng));
    power.set_enabled(true);
    let opened: Vec<(Result<annal::DurableSubscription, Error>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|k| {
                let log = log.clone();
                let power = power.clone();
                s.spawn(move || {
                    CREATOR.with(|c| c.set(Some(k)));
                    let r = log
                        .durable_subscription(names[k])
                        .start_at(starts[k])
                        .commit_every(u64::MAX)
                        .commit_interval(Duration::from_secs(3600))
                        .open();
                    // Every operation from this index on comes after the
                    // open returned.
                    (r, power.ops())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut subs = Vec::new();
    let mut returned_at = 0;
    for (k, (r, at)) in opened.into_iter().enumerate() {
        match r {
            Ok(sub) => {
                made.get_mut(names[k]).unwrap().created = true;
                returned_at = returned_at.max(at);
                subs.push(sub);
            }
            // Two creators of one subscription in one process: the one
            // that locks it first has it.
            Err(Error::Locked { .. }) if same => {}
            Err(e) => panic!("seed {seed} round {round}: creator {k} of {:?}: {e}", names[k]),
        }
    }
    assert_eq!(
        subs.len(),
        if same { 1 } else { 2 },
        "seed {seed} round {round}: subscriptions opened (two creators of one both holding it?)"
    );
    // The start of the creator whose link won is the file's.
    let winner = turns.linked_first().expect("a link succeeded");
    let file_start: BTreeMap<&str, u64> = if same {
        [(names[0], starts[winner])].into()
    } else {
        names.iter().copied().zip(starts).collect()
    };
    for sub in &subs {
        assert_eq!(
            sub.committed(),
            file_start[sub.name()],
            "seed {seed} round {round}: {} opened at its file's start",
            sub.name()
        );
    }
    for (name, m) in made.iter_mut() {
        m.committed = file_start[name];
        m.acked = file_start[name];
    }
    timeline.push((returned_at, made.clone()));
    // The first commits (and, between them, appends of the writer).
    for step in 0..4u64 {
        for sub in &mut subs {
            let name = sub.name().to_owned();
            let m = made.get_mut(name.as_str()).unwrap();
            while let Some(r) = sub.try_next().unwrap() {
                if rng.range(0, 2) > 0 {
                    sub.ack(&r).unwrap();
                    m.acked = r.position + 1;
                }
            }
            if rng.range(0, 2) > 0 {
                sub.commit().unwrap();
            }
            m.committed = sub.committed();
        }
        timeline.push((power.ops(), made.clone()));
        log.append(
            &format!("s-{step}"),
            ExpectedVersion::Any,
            &[EventData::new("E", format!("q{step}"))],
        )
        .unwrap();
    }
    power.set_enabled(false);
    drop(subs);
    log.close().unwrap();
    let last = timeline.last().unwrap().1.clone();
    let images = power.take_images();
    assert!(images.len() > 20, "{} images", images.len());
    let (mut absent, mut present) = (0, 0);
    for img in &images {
        let label = format!(
            "seed {seed} round {round} ({names:?} from {starts:?}): power cut before op {} ({:?}, {}, variant {})",
            img.op, img.kind, img.mode, img.variant
        );
        let before = &timeline.iter().rev().find(|(op, _)| *op <= img.op).unwrap().1;
        let at = tempfile::tempdir().unwrap();
        img.write_to(at.path());
        let log = Log::open(at.path()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
        let left: Vec<String> = std::fs::read_dir(at.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{label}: temporary files left after open: {left:?}");
        let end = log.view().unwrap().next_position();
        for (k, name) in names.iter().enumerate() {
            if same && k == 1 {
                break;
            }
            let exists = img.files.contains_key(Path::new(&sub_file(name)));
            let b = before[name];
            assert!(
                exists || !b.created,
                "{label}: {name}: its creation returned, its checkpoint file is lost"
            );
            let mut sub = log
                .durable_subscription(name)
                .start_at(starts[k])
                .open()
                .unwrap_or_else(|e| panic!("{label}: {name} opens: {e}"));
            let from = sub.committed();
            if exists {
                present += 1;
                let floor = b.committed.max(file_start[name]).min(end);
                assert!(
                    from >= floor,
                    "{label}: {name} resumes at {from}, before {floor} (its start, or its commit that returned)"
                );
                let ceiling = last[name].acked.max(file_start[name]);
                assert!(
                    from <= ceiling,
                    "{label}: {name} resumes at {from}, past every ack ({ceiling})"
                );
            } else {
                absent += 1;
                assert_eq!(
                    from,
                    starts[k].min(end),
                    "{label}: {name} did not exist: it starts where configured"
                );
            }
            let mut got = Vec::new();
            while let Some(r) = sub.try_next().unwrap() {
                got.push(r.position);
            }
            let all: Vec<u64> = log
                .view()
                .unwrap()
                .read_all(from)
                .map(|r| r.unwrap().position())
                .collect();
            assert_eq!(got, all, "{label}: {name} delivers the log from its checkpoint, no gap");
        }
        log.close().unwrap();
    }
    (images.len(), absent, present)
}

#[test]
fn power_cuts_while_checkpoints_are_created_lose_no_created_subscription_and_never_skip() {
    let seed = support::test_seed();
    let (mut images, mut absent, mut present) = (0, 0, 0);
    let rounds: [([&str; 2], [u64; 2]); 4] = [
        (["a", "b"], [0, 5]),
        (["a", "b"], [7, 2]),
        (["c", "c"], [3, 9]),
        (["c", "c"], [0, 6]),
    ];
    for (round, (names, starts)) in rounds.into_iter().enumerate() {
        let (n, a, p) = creation_round(seed, round as u64, names, starts, Flaw::None);
        images += n;
        absent += a;
        present += p;
    }
    // Both outcomes of a cut during a creation were seen.
    assert!(
        absent > 0 && present > 0,
        "{absent} without the file, {present} with it"
    );
    eprintln!("{images} images; subscriptions found absent {absent} times, present {present}");
}

/// The test above catches a creation that does not fsync the directory
/// after the link, or the temporary file before it, or that renames it
/// into place (two creators: the second replaces the first's file).
#[test]
fn a_flawed_checkpoint_creation_is_caught() {
    let seed = support::test_seed();
    let flaws: [(Flaw, &[&str]); 3] = [
        (Flaw::NoDirSync, &["its checkpoint file is lost"]),
        (Flaw::NoFileSync, &["opens: corrupt log data"]),
        // The second rename replaced the first's file: either both creators
        // hold the subscription (each locked its own file) or the one that
        // holds it has the other's start.
        (Flaw::RenameForLink, &["both holding it", "opened at its file's start"]),
    ];
    for (flaw, says) in flaws {
        let (names, starts) = if flaw == Flaw::RenameForLink {
            (["c", "c"], [3, 9])
        } else {
            (["a", "b"], [0, 5])
        };
        let caught = (0..4u64).find_map(|round| {
            let e = std::panic::catch_unwind(|| creation_round(seed, 100 + round, names, starts, flaw)).err()?;
            Some(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            )
        });
        let Some(why) = caught else {
            panic!("seed {seed}: {flaw:?} was not caught")
        };
        assert!(
            says.iter().any(|s| why.contains(s)),
            "seed {seed}: {flaw:?} caught for another reason: {why}"
        );
    }
}
