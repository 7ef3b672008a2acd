//! The projection runner (issue 19, spec 24.5): a projection's model and
//! checkpoint saved together, so that after any crash it continues from
//! exactly what it saved: its model always equals a fresh rebuild.
//!
//! - steps and crashes at random in one process (seeded): after each
//!   reopen the model equals `LogView::rebuild` of the same events;
//! - a kill test: runner processes (through a `Reader`) killed at random
//!   moments while this process appends; the model, a list of the positions
//!   it folded, has no gap and no repeat after every restart (exactly once),
//!   and a durable subscription's side-effect file in the same process has
//!   no gap (at least once: repeats only of what followed its last commit);
//! - a new version under a new name builds beside the running one;
//! - one runner per name, a damaged file is an error naming it, a model
//!   whose type changed is refused.

mod support;

use std::io::Write;
use std::time::Duration;

use annal::{Error, EventData, ExpectedVersion, Log, Projection, Reader, RecordRef};
use support::{ChildProc, Rng, child_say};

/// The positions folded, in order: a gap or a repeat shows.
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

/// Events per stream: an order-independent model (a map).
struct PerStream;

impl Projection for PerStream {
    type Model = std::collections::BTreeMap<String, u64>;
    fn empty(&self) -> Self::Model {
        Default::default()
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

fn append(log: &Log, n: u64) {
    for i in 0..n {
        log.append(
            &format!("s-{}", i % 5),
            ExpectedVersion::Any,
            &[EventData::new("E", b"{}")],
        )
        .unwrap();
    }
}

#[test]
fn random_steps_and_crashes_keep_the_model_equal_to_a_rebuild() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 50);
    let open = |log: &Log, every: u64| {
        log.projection("per-stream", PerStream)
            .save_every(every)
            .open()
            .unwrap()
    };
    let mut runner = open(&log, 1 + rng.range(0, 20));
    for _ in 0..200 {
        match rng.range(0, 10) {
            0..=4 => append(&log, rng.range(1, 20)),
            5..=7 => {
                runner.step(Duration::ZERO).unwrap();
            }
            8 => {
                // A crash: what was not saved is folded again, exactly once.
                runner.abandon();
                runner = open(&log, 1 + rng.range(0, 20));
            }
            _ => {
                runner.close().unwrap();
                runner = open(&log, 1 + rng.range(0, 20));
            }
        }
        // Opened or stepped: caught up with a view; no append since.
        let view = log.view().unwrap();
        if runner.position() == view.next_position() {
            assert_eq!(runner.model(), &view.rebuild(&PerStream).unwrap(), "seed {seed}");
        }
    }
    runner.step(Duration::ZERO).unwrap();
    assert_eq!(runner.model(), &log.view().unwrap().rebuild(&PerStream).unwrap());
}

#[test]
fn a_new_version_builds_beside_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 30);
    let mut v1 = log.projection("positions-v1", Positions).open().unwrap();
    append(&log, 10);
    // v2 builds (a parallel rebuild) while v1 keeps serving.
    let v2 = log.projection("positions-v2", Positions).open().unwrap();
    assert_eq!(v2.model().len(), 40);
    assert_eq!(v1.model().len(), 30, "v1 serves what it had");
    v1.step(Duration::ZERO).unwrap();
    assert_eq!(v1.model(), v2.model());
}

#[test]
fn one_runner_per_name_damage_named_and_a_changed_model_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 5);
    let held = log.projection("p", Positions).open().unwrap();
    assert!(matches!(
        log.projection("p", Positions).open(),
        Err(Error::Locked { .. })
    ));
    held.close().unwrap();
    // Another model type under the same name.
    struct Text;
    impl Projection for Text {
        type Model = (String, String, String);
        fn empty(&self) -> Self::Model {
            Default::default()
        }
        fn apply(&self, _: &mut Self::Model, _: &RecordRef<'_>) {}
        fn merge(&self, a: Self::Model, _: Self::Model) -> Self::Model {
            a
        }
    }
    match log.projection("p", Text).open() {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("annal.proj.p"), "{m}"),
        other => panic!("{other:?}"),
    }
    let path = dir.path().join("annal.proj.p");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match log.projection("p", Positions).open() {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------ kill test

const CHILD_FN: &str = "runner_child";
const ENV_DIR: &str = "ANNAL_RUNNER_DIR";
const ENV_SEED: &str = "ANNAL_RUNNER_SEED";

/// The child: a projection runner and a durable subscription through a
/// `Reader`, stepping until killed. The subscription's handler appends each
/// event's position to `handled.txt` (a side effect), then acknowledges it.
#[test]
fn runner_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(ENV_DIR), std::env::var(ENV_SEED)) else {
        return;
    };
    let mut rng = Rng::new(seed.parse().unwrap());
    let dir = std::path::PathBuf::from(dir);
    let mut runner = Reader::open(&dir)
        .unwrap()
        .projection("positions", Positions)
        .save_every(rng.range(1, 30))
        .open()
        .unwrap();
    let mut sub = Reader::open(&dir)
        .unwrap()
        .durable_subscription("effects")
        .commit_every(rng.range(1, 30))
        .open()
        .unwrap();
    let mut effects = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("handled.txt"))
        .unwrap();
    child_say("READY");
    loop {
        runner.step(Duration::from_millis(2)).unwrap();
        while let Some(r) = sub.try_next().unwrap() {
            // One write per line: a kill never leaves half a line that the
            // next child's line would run on from.
            effects.write_all(format!("{}\n", r.position).as_bytes()).unwrap();
            sub.ack(&r).unwrap();
        }
    }
}

#[test]
fn runners_killed_at_random_fold_every_event_exactly_once() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 20);
    let writer = {
        let log = log.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        (
            std::thread::spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    append(&log, 3);
                    std::thread::sleep(Duration::from_micros(300));
                }
            }),
            stop,
        )
    };
    for round in 0..8 {
        let child_seed = rng.next_u64().to_string();
        let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s), (ENV_SEED, &child_seed)]);
        let ready = child.line(Duration::from_secs(30)).expect("the child is ready");
        assert_eq!(ready, "READY", "round {round}");
        std::thread::sleep(Duration::from_millis(rng.range(5, 60)));
        child.child.kill().unwrap();
        child.wait(Duration::from_secs(30));
        // What the killed runner saved (the file, decoded by the spec's
        // layout): the positions folded, no gap, no repeat, from 0, and
        // exactly the events below the saved position.
        let file = std::fs::read(dir.path().join("annal.proj.positions")).unwrap();
        let next = u64::from_le_bytes(file[16..24].try_into().unwrap());
        let len = u64::from_le_bytes(file[32..40].try_into().unwrap()) as usize;
        let model: Vec<u64> = postcard::from_bytes(&file[40..40 + len]).unwrap();
        let view = log.view().unwrap();
        let all: Vec<u64> = view.read_all(0).map(|r| r.unwrap().position()).collect();
        let below: Vec<u64> = all.iter().copied().take_while(|&p| p < next).collect();
        assert_eq!(model, below, "seed {seed}, round {round}: exactly once, in order");
        // Opened here, it continues from the file: still exactly once.
        let again = log.projection("positions", Positions).open().unwrap();
        let now: Vec<u64> = log.view().unwrap().read_all(0).map(|r| r.unwrap().position()).collect();
        assert_eq!(
            again.model()[..],
            now[..again.model().len()],
            "seed {seed}, round {round}"
        );
        again.abandon();
        // The side effects: every event up to the last one handled, in
        // order; a repeat only goes back (to the last commit), never past a
        // gap.
        let handled: Vec<u64> = std::fs::read_to_string(dir.path().join("handled.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let mut next = 0usize;
        for (i, &p) in handled.iter().enumerate() {
            let at = all.iter().position(|&q| q == p).expect("a handled event exists");
            assert!(at <= next, "seed {seed}, round {round}: entry {i} ({p}) skips an event");
            next = next.max(at + 1);
        }
    }
    writer.1.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.0.join().unwrap();
}

#[test]
fn a_saved_model_of_events_the_log_lost_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 5);
    log.close().unwrap();
    // The durable state a power loss leaves: these 5 events.
    let durable = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), durable.path().join(e.file_name())).unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    append(&log, 5);
    log.projection("lossy", Positions).open().unwrap().close().unwrap();
    log.close().unwrap();
    let saved = std::fs::read(dir.path().join("annal.proj.lossy")).unwrap();
    for new_events in [0, 2, 9] {
        let image = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(durable.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), image.path().join(e.file_name())).unwrap();
        }
        std::fs::write(image.path().join("annal.proj.lossy"), &saved).unwrap();
        let log = Log::open(image.path()).unwrap();
        append(&log, new_events);
        let r = log.projection("lossy", Positions).open().unwrap();
        assert_eq!(
            r.model(),
            &log.view().unwrap().rebuild(&Positions).unwrap(),
            "{new_events} new events: the model is this log's"
        );
    }
}
