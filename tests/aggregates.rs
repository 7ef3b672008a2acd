//! Aggregates and the repository: commands, optimistic concurrency with
//! retries, snapshots that never change the loaded state, temporal loads.

use std::sync::Arc;

use annal::{Aggregate, AsOf, Event, ExecuteError, Log, Options, Repository};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// A tally whose state depends on the order of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    sum: i64,
    /// A rolling digest of the sequence of values (order matters).
    digest: u64,
    last: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum TallyEvent {
    Added(i64),
}

impl Event for TallyEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl Aggregate for Tally {
    type Event = TallyEvent;
    type Command = Vec<i64>;
    type Error = String;

    fn handle(&self, values: &Vec<i64>) -> Result<Vec<TallyEvent>, String> {
        if self.sum + values.iter().sum::<i64>() < 0 {
            return Err("the sum may not go negative".into());
        }
        Ok(values.iter().map(|v| TallyEvent::Added(*v)).collect())
    }

    fn apply(&mut self, TallyEvent::Added(v): &TallyEvent) {
        self.sum += v;
        self.digest = self.digest.wrapping_mul(31).wrapping_add(*v as u64);
        self.last.push(*v);
        if self.last.len() > 3 {
            self.last.remove(0);
        }
    }
}

/// The same events, with a snapshot schema that no stored snapshot has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TallyV7(Tally);

impl Aggregate for TallyV7 {
    type Event = TallyEvent;
    type Command = Vec<i64>;
    type Error = String;
    const SNAPSHOT_VERSION: u32 = 7;
    fn handle(&self, c: &Vec<i64>) -> Result<Vec<TallyEvent>, String> {
        self.0.handle(c)
    }
    fn apply(&mut self, e: &TallyEvent) {
        self.0.apply(e)
    }
}

fn fold(values: &[i64]) -> Tally {
    let mut t = Tally::default();
    for v in values {
        t.apply(&TallyEvent::Added(*v));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_never_change_the_loaded_state(
        commands in prop::collection::vec((0usize..3, prop::collection::vec(-3i64..20, 1..4)), 1..60),
        every in 1u64..12,
        keep in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), Options::default().segment_size(4096)).unwrap();
        let snap = Repository::<Tally>::new(&log).snapshot_every(every, keep);
        let plain = Repository::<Tally>::new(&log).ignore_snapshots();
        let mut model: Vec<Vec<i64>> = vec![Vec::new(); 3];
        for (s, values) in &commands {
            let stream = format!("tally-{s}");
            let ok = fold(&model[*s]).handle(values).is_ok();
            match snap.execute(&stream, values) {
                Ok(_) => { prop_assert!(ok); model[*s].extend(values); }
                Err(ExecuteError::Rejected(_)) => prop_assert!(!ok),
                Err(e) => panic!("{e}"),
            }
        }
        for (s, values) in model.iter().enumerate() {
            let stream = format!("tally-{s}");
            let a = snap.load(&stream).unwrap();
            let b = plain.load(&stream).unwrap();
            prop_assert!(b.snapshot_version.is_none());
            prop_assert_eq!(&a.state, &fold(values));
            prop_assert_eq!(&b.state, &fold(values));
            prop_assert_eq!(a.version, values.len().checked_sub(1).map(|v| v as u64));
            prop_assert!(a.warnings.is_empty(), "{:?}", a.warnings);
            if values.len() as u64 >= every {
                prop_assert!(a.snapshot_version.is_some(), "a snapshot was used");
                prop_assert!(a.replayed < every + 4);
            }
            // Temporal: the state as of every version.
            for v in 0..values.len() {
                let at = snap.load_as_of(&stream, AsOf::Version(v as u64)).unwrap();
                prop_assert_eq!(&at.state, &fold(&values[..=v]));
            }
            // Another snapshot schema: snapshots are skipped, same state.
            let other = Repository::<TallyV7>::new(&log).load(&stream).unwrap();
            prop_assert_eq!(&other.state.0, &fold(values));
        }
        // Damage every snapshot file: loads fall back to the events, with warnings.
        let snaps = dir.path().join("snapshots");
        if snaps.exists() {
            for f in std::fs::read_dir(&snaps).unwrap() {
                let p = f.unwrap().path();
                let mut b = std::fs::read(&p).unwrap();
                let i = b.len() / 2;
                b[i] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            }
            for (s, values) in model.iter().enumerate() {
                let a = snap.load(&format!("tally-{s}")).unwrap();
                prop_assert_eq!(&a.state, &fold(values));
                if a.snapshot_version.is_none() && values.len() as u64 >= every {
                    prop_assert!(!a.warnings.is_empty(), "a skipped snapshot is reported");
                }
            }
        }
    }
}

#[test]
fn racing_executes_retry_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let repo = Repository::<Tally>::new(&log).max_attempts(1000);
                let mut attempts = 0;
                for _ in 0..50 {
                    attempts += repo.execute("tally-shared", &vec![1]).unwrap().attempts;
                }
                attempts
            })
        })
        .collect();
    let attempts: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let loaded = Repository::<Tally>::new(&log).load("tally-shared").unwrap();
    assert_eq!((loaded.state.sum, loaded.version), (200, Some(199)));
    assert!(attempts >= 200);
    // With one attempt allowed, a conflict is reported as such.
    let repo = Repository::<Tally>::new(&log).max_attempts(1);
    assert!(repo.execute("tally-shared", &vec![-1000]).is_err());
}

#[test]
fn state_as_of_a_time_and_a_position() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let now = Arc::new(AtomicU64::new(100));
    let clock = now.clone();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let log = Log::open_with(dir.path(), opts).unwrap();
    let repo = Repository::<Tally>::new(&log).snapshot_every(2, 1);
    for (i, v) in [5i64, 7, 11, 13].iter().enumerate() {
        now.store(100 * (i as u64 + 1), Ordering::SeqCst);
        repo.execute("tally-1", &vec![*v]).unwrap();
        repo.execute("tally-2", &vec![1]).unwrap();
    }
    let at = |a: AsOf| repo.load_as_of("tally-1", a).unwrap();
    assert_eq!(at(AsOf::Time(250)).state, fold(&[5, 7]));
    assert_eq!(at(AsOf::Time(99)).version, None);
    assert_eq!(at(AsOf::Time(10_000)).state, fold(&[5, 7, 11, 13]));
    // Positions: tally-1 holds 0, 2, 4, 6.
    assert_eq!(at(AsOf::Position(3)).state, fold(&[5, 7]));
    assert_eq!(at(AsOf::Position(4)).state, fold(&[5, 7, 11]));
}
