//! The projection service example (`examples/projector.rs`) survives
//! `kill -9`: run in child processes that are killed at random moments
//! while this process appends orders, then caught up once more, its totals
//! equal a rebuild of the log (every event counted exactly once).

#![cfg(feature = "json")]

mod support;

#[path = "../examples/projector.rs"]
#[allow(dead_code)]
mod projector;

use std::time::Duration;

use annal::{EventData, ExpectedVersion, Log, Reader};
use support::{ChildProc, Rng};

const CHILD_FN: &str = "projector_child";
const ENV_DIR: &str = "ANNAL_PROJECTOR_DIR";

/// The example's service, in a child process, until killed.
#[test]
fn projector_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    support::child_say("STARTED");
    projector::run(&dir, false).unwrap();
}

#[test]
fn the_example_service_survives_kill_9() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let log = Log::open(dir.path()).unwrap();
    let mut n = 0u64;
    let mut order = |log: &Log| {
        n += 1;
        let customer = ["ada", "bob", "cy"][(n % 3) as usize];
        let data = format!("{{\"customer\":\"{customer}\",\"total\":{}}}", n % 50 + 1);
        log.append(
            &format!("order-{n}"),
            ExpectedVersion::Any,
            &[EventData::new("Placed", data)],
        )
        .unwrap();
        log.append(
            &format!("customer-{customer}"),
            ExpectedVersion::Any,
            &[EventData::new("Seen", b"{}")],
        )
        .unwrap();
    };
    for _ in 0..50 {
        order(&log);
    }
    for round in 0..5 {
        let mut child = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s)]);
        assert_eq!(
            child.line(Duration::from_secs(30)).as_deref(),
            Some("STARTED"),
            "round {round}"
        );
        for _ in 0..rng.range(20, 200) {
            order(&log);
        }
        std::thread::sleep(Duration::from_millis(rng.range(1, 80)));
        child.child.kill().unwrap();
        child.wait(Duration::from_secs(30));
    }
    let caught_up = Reader::open(dir.path())
        .unwrap()
        .projection("revenue", projector::Revenue)
        .open()
        .unwrap();
    let rebuilt = log.view().unwrap().rebuild(&projector::Revenue).unwrap();
    assert_eq!(caught_up.model(), &rebuilt, "seed {seed}");
    assert_eq!(rebuilt.values().sum::<u64>(), (1..=n).map(|k| k % 50 + 1).sum::<u64>());
}
