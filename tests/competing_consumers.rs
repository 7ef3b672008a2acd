//! Competing consumers (issue 19, spec 24.7): members of one named
//! subscription share its partitions; each stream is handled by one member
//! at a time, in order; partitions move as members join, leave and die.
//!
//! - in one process: members join and leave while a writer appends; every
//!   event is handled exactly once, and each stream's versions come in
//!   order, across handoffs;
//! - members in child processes, killed at random and replaced: every event
//!   is handled; a repeat is only the last event a killed member handled in
//!   a partition (it died before acknowledging it); within a member, each
//!   stream's versions increase.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, Log, Reader};
use support::{ChildProc, Rng, child_say};

const STREAMS: u64 = 24;

fn append(log: &Log, from: u64, n: u64) {
    for i in from..from + n {
        log.append(
            &format!("acct-{}", i % STREAMS),
            ExpectedVersion::Any,
            &[EventData::new("E", b"{}")],
        )
        .unwrap();
    }
}

#[test]
fn members_joining_and_leaving_handle_every_event_once_in_stream_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 0, 100);
    // (stream, version, member) in the order handled, across members.
    let handled = Arc::new(Mutex::new(Vec::<(String, u64, usize)>::new()));
    let total = 400u64;
    let spawn = |id: usize, lifetime: Duration| {
        let log = log.clone();
        let handled = Arc::clone(&handled);
        std::thread::spawn(move || {
            let mut m = log
                .competing_subscription("ledger", 8)
                .commit_every(1)
                .rebalance_every(Duration::from_millis(5))
                .open()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < lifetime {
                if let Some(r) = m.next_timeout(Duration::from_millis(5)).unwrap() {
                    handled.lock().unwrap().push((r.stream.clone(), r.stream_version, id));
                    m.ack(&r).unwrap();
                }
                if handled.lock().unwrap().len() as u64 >= total {
                    break;
                }
            }
            m.close().unwrap();
        })
    };
    let first = spawn(0, Duration::from_secs(60));
    let short = spawn(1, Duration::from_millis(150));
    append(&log, 100, 150);
    let later = spawn(2, Duration::from_secs(60));
    append(&log, 250, 150);
    short.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (handled.lock().unwrap().len() as u64) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    first.join().unwrap();
    later.join().unwrap();
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len() as u64, total, "every event once");
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (s, v, _) in handled.iter() {
        let n = next.entry(s.as_str()).or_default();
        assert_eq!(v, n, "{s}: versions in order, none twice");
        *n += 1;
    }
    let members: std::collections::BTreeSet<usize> = handled.iter().map(|h| h.2).collect();
    assert!(members.len() >= 2, "the work was shared: {members:?}");
}

// ------------------------------------------------------------ processes

const CHILD_FN: &str = "member_child";
const ENV_DIR: &str = "ANNAL_MEMBER_DIR";
const ENV_ID: &str = "ANNAL_MEMBER_ID";

/// A member in its own process: handles each event by writing `position
/// stream version partition` to `member-<id>.txt`, then acknowledges it.
#[test]
fn member_child() {
    let (Ok(dir), Ok(id)) = (std::env::var(ENV_DIR), std::env::var(ENV_ID)) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let mut m = Reader::open(&dir)
        .unwrap()
        .competing_subscription("ledger", 6)
        .commit_every(1)
        .rebalance_every(Duration::from_millis(10))
        .open()
        .unwrap();
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(format!("member-{id}.txt")))
        .unwrap();
    child_say("READY");
    loop {
        if let Some(r) = m.next_timeout(Duration::from_millis(10)).unwrap() {
            let k = m.partition_of(&r.stream);
            // One write per line: a kill never leaves half a line.
            out.write_all(format!("{} {} {} {k}\n", r.position, r.stream, r.stream_version).as_bytes())
                .unwrap();
            m.ack(&r).unwrap();
        }
    }
}

/// `(position, stream, version, partition)` lines of a member's file (a
/// line cut by a kill is dropped).
fn lines_of(path: &std::path::Path) -> Vec<(u64, String, u64, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.first()?.parse().ok()?,
                (*f.get(1)?).to_owned(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn members_killed_and_replaced_hand_their_partitions_on() {
    let seed = support::test_seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let log = Log::open(dir.path()).unwrap();
    append(&log, 0, 60);
    let mut next_id = 0u32;
    let mut spawn = || {
        next_id += 1;
        let id = next_id.to_string();
        let mut c = ChildProc::spawn(CHILD_FN, &[(ENV_DIR, &dir_s), (ENV_ID, &id)]);
        assert_eq!(c.line(Duration::from_secs(30)).as_deref(), Some("READY"));
        (next_id, c)
    };
    let mut alive: Vec<(u32, ChildProc)> = (0..4).map(|_| spawn()).collect();
    let mut killed: Vec<u32> = Vec::new();
    let mut appended = 60;
    for _ in 0..4 {
        append(&log, appended, 40);
        appended += 40;
        std::thread::sleep(Duration::from_millis(rng.range(10, 60)));
        let victim = rng.range(0, alive.len() as u64 - 1) as usize;
        let (id, mut c) = alive.remove(victim);
        c.child.kill().unwrap();
        c.wait(Duration::from_secs(30));
        killed.push(id);
        alive.push(spawn());
    }
    let view = log.view().unwrap();
    let all: Vec<(u64, String, u64)> = view
        .read_all(0)
        .map(|r| {
            let r = r.unwrap();
            (r.position(), r.stream().to_owned(), r.stream_version())
        })
        .collect();
    // Wait until the members alive have handled everything.
    let files = |upto: u32| -> BTreeMap<u32, Vec<(u64, String, u64, u32)>> {
        (1..=upto)
            .map(|id| (id, lines_of(&dir.path().join(format!("member-{id}.txt")))))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: std::collections::HashSet<u64> = files(next_id).values().flatten().map(|l| l.0).collect();
        if all.iter().all(|e| seen.contains(&e.0)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, mut c) in alive {
        c.child.kill().unwrap();
        c.wait(Duration::from_secs(30));
    }
    let by_member = files(next_id);
    let mut count: HashMap<u64, u32> = HashMap::new();
    for lines in by_member.values() {
        for l in lines {
            *count.entry(l.0).or_default() += 1;
        }
        // Within a member, each stream's versions increase.
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (_, s, v, _) in lines {
            if let Some(&p) = last.get(s.as_str()) {
                assert!(*v > p, "seed {seed}: {s} version {v} after {p} in one member");
            }
            last.insert(s, *v);
        }
    }
    for e in &all {
        assert!(
            count.get(&e.0).is_some_and(|&n| n >= 1),
            "seed {seed}: position {} never handled",
            e.0
        );
    }
    // A repeat is the last event a killed member handled in a partition.
    let mut last_of_killed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for id in &killed {
        let mut last: HashMap<u32, u64> = HashMap::new();
        for l in &by_member[id] {
            last.insert(l.3, l.0);
        }
        last_of_killed.extend(last.values());
    }
    for (p, n) in &count {
        if *n > 1 {
            assert!(
                *n == 2 && last_of_killed.contains(p),
                "seed {seed}: position {p} handled {n} times, not the last of a killed member"
            );
        }
    }
}
