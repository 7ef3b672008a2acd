//! Crash tests of shipping (issue 18) against a real SeaweedFS: the writer
//! killed while it ships, the object store killed and restarted under a
//! shipping writer, a volume server of a SeaweedFS cluster killed under one.
//!
//! - A writer killed at random moments (`SIGKILL`, seeded: the seed is
//!   printed, `ANNAL_TEST_SEED` repeats it; `ANNAL_REMOTE_KILLS` rounds,
//!   6 unless set): a child process (this test binary, `remote_crash_child`)
//!   appends batches of 1 to 4 events with `Durability::Fsync` and its own
//!   replicator (`Options::replicate_to`, a round every 5 ms), and reports
//!   every acknowledged append and every shipped position it sees. After
//!   each kill a restore is a prefix of the killed log (read by `Reader`),
//!   of whole batches, holding everything reported shipped and at most the
//!   one batch in flight past the acknowledged ones, and `check` is clean
//!   on it. Then either this process recovers the log with a new replicator
//!   (a newer epoch), appends, closes and finds it all shipped, or the next
//!   child recovers it with its own replicator; later rounds ship on top.
//! - The store killed (`SIGKILL`) and restarted on the same ports and data
//!   while a writer appends and ships: rounds fail and are retried with
//!   backoff, appends go on, and after the restart everything is shipped;
//!   the restore reads as the log, event for event.
//! - A cluster (`scripts/seaweedfs.sh start-cluster`: a master with
//!   replication 001, volume servers in one rack, a filer with its S3
//!   gateway): with three volume servers, one killed mid-run, reads and
//!   writes go on; with two, SeaweedFS refuses writes while one is down (a
//!   volume takes a write only when both copies do), so rounds fail until
//!   it is back, reads go on from the copy left, and nothing is lost.
//! - A remote log taken by a writer that shipped nothing before it died (its
//!   first manifest version names nothing): a restore is refused, as for a
//!   remote log without a manifest.
//!
//! The writer-kill test uses the SeaweedFS of the test process
//! (`remote_support::seaweed`); the store and cluster tests start their own
//! (they kill it, or parts of it), stopped when the test ends.

#![cfg(feature = "remote")]

mod remote_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annal::remote::{Follow, RemoteLog, RestoreTo, restore};
use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options};
use remote_support::{clean, events, restores_whole, rt, s3, seaweed};
use support::{ChildProc, Rng, child_say};

const CHILD_FN: &str = "remote_crash_child";
const ENV_DIR: &str = "ANNAL_REMOTE_CRASH_DIR";
const ENV_URL: &str = "ANNAL_REMOTE_CRASH_URL";
const ENV_SEED: &str = "ANNAL_REMOTE_CRASH_SEED";
const ENV_ROUND: &str = "ANNAL_REMOTE_CRASH_ROUND";
/// The last word of every complete report line (a line cut by the kill lacks it).
const EOL: &str = "~";
const PATIENCE: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn opts() -> Options {
    Options::default().segment_size(16 << 10).durability(Durability::Fsync)
}

/// The events of batch `tag`: `n` payloads `TAG K/N PAD`, so that every
/// event says which batch it belongs to and where in it.
fn batch(tag: &str, n: u64, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| format!("{tag} {k}/{n} {}", "x".repeat(rng.range(20, 200) as usize)).into_bytes())
        .collect()
}

fn append_batch(log: &Log, tag: &str, rng: &mut Rng) -> annal::AppendResult {
    let payloads = batch(tag, rng.range(1, 4), rng);
    let evs: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("E", p.as_slice())).collect();
    log.append(&format!("s-{}", rng.range(0, 11)), ExpectedVersion::Any, &evs)
        .expect("append")
}

/// `(tag, k, n)` of an event written by [`batch`].
fn place(payload: &[u8]) -> (String, u64, u64) {
    let text = String::from_utf8_lossy(payload);
    let mut words = text.split(' ');
    let tag = words.next().unwrap_or_default().to_owned();
    let (k, n) = words
        .next()
        .and_then(|w| w.split_once('/'))
        .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))
        .unwrap_or_else(|| panic!("not an event of this test: {text:?}"));
    (tag, k, n)
}

type Event = (u64, String, u64, Vec<u8>);

/// Every batch in `evs` is whole: its events in order, in one stream, the
/// last one closing its batch.
fn whole_batches(evs: &[Event], what: &str) {
    let mut open: Option<(String, String, u64, u64)> = None;
    for (pos, stream, _, payload) in evs {
        let (tag, k, n) = place(payload);
        match &mut open {
            Some((t, s, last, count)) if *last + 1 < *count => {
                assert!(
                    *t == tag && *s == *stream && k == *last + 1 && n == *count,
                    "{what}: position {pos} is {tag} {k}/{n} in {stream}, expected {t} {}/{count} in {s}",
                    *last + 1
                );
                *last = k;
            }
            _ => {
                assert_eq!(
                    k, 0,
                    "{what}: position {pos} starts in the middle of batch {tag} ({k}/{n})"
                );
                open = Some((tag, stream.clone(), 0, n));
            }
        }
    }
    if let Some((t, _, last, count)) = open {
        assert_eq!(
            last + 1,
            count,
            "{what}: the last batch {t} is cut ({} of {count})",
            last + 1
        );
    }
}

fn shipped(log: &Log) -> u64 {
    log.replication().and_then(|s| s.last).map_or(0, |r| r.shipped_position)
}

// ------------------------------------------------------- the writer killed

/// The writer process: `ready NEXT ~` once open, then `ack NEXT ~` after
/// every acknowledged append and `shipped POSITION EPOCH ~` whenever its
/// replicator reports a new shipped position, until it is killed.
#[test]
fn remote_crash_child() {
    let (Ok(dir), Ok(url), Ok(seed), Ok(round)) = (
        std::env::var(ENV_DIR),
        std::env::var(ENV_URL),
        std::env::var(ENV_SEED),
        std::env::var(ENV_ROUND),
    ) else {
        return;
    };
    let remote = RemoteLog::open(&url)
        .expect("child remote")
        .request_timeout(Duration::from_secs(5));
    let log = opts()
        .replicate_to(remote, Follow::every(ms(5)))
        .open(&dir)
        .expect("child open");
    child_say(&format!("ready {} {EOL}", log.next_position()));
    let mut rng = Rng::new(seed.parse().expect("child seed"));
    let mut reported = 0;
    let start = Instant::now();
    // Killed long before this; the bound only keeps a lost child from running on.
    for i in 0u64.. {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        let r = append_batch(&log, &format!("c{round}-{i}"), &mut rng);
        child_say(&format!("ack {} {EOL}", r.last_position + 1));
        if let Some(last) = log.replication().and_then(|s| s.last)
            && last.shipped_position != reported
        {
            reported = last.shipped_position;
            child_say(&format!("shipped {reported} {} {EOL}", last.epoch));
        }
    }
}

/// What a killed child said.
#[derive(Debug, Default)]
struct Said {
    ready: Option<u64>,
    acked: u64,
    shipped: u64,
    epochs: Vec<u64>,
}

impl Said {
    fn hear(&mut self, line: &str) {
        let w: Vec<&str> = line.split(' ').collect();
        if w.last() != Some(&EOL) {
            return;
        }
        let n = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
        match (w[0], n(1), n(2)) {
            ("ready", Some(p), _) => self.ready = Some(p),
            ("ack", Some(p), _) => self.acked = self.acked.max(p),
            ("shipped", Some(p), Some(e)) => {
                self.shipped = self.shipped.max(p);
                if self.epochs.last() != Some(&e) {
                    self.epochs.push(e);
                }
            }
            _ => {}
        }
    }
}

/// A writer shipping to SeaweedFS, killed at random moments, round after
/// round on the same log and remote log (see the module's documentation).
#[test]
fn a_writer_killed_while_shipping_loses_nothing_it_shipped() {
    let seed = std::env::var("ANNAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(remote_support::rand_suffix);
    let kills: u64 = std::env::var("ANNAL_REMOTE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    println!("seed {seed} (ANNAL_TEST_SEED={seed} repeats it), {kills} kills");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let remote = s3("killed");
    let rt = rt();
    let settings: Vec<(String, String)> = seaweed()
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();
    let dir_s = dir.to_str().expect("utf-8 temporary folder").to_owned();
    // The positions after the last batch acknowledged, reported shipped
    // (or restored), and the newest epoch seen.
    let (mut acked, mut shipped, mut epoch) = (0u64, 0u64, 0u64);
    let mut healed_rounds = 0;
    for round in 0..kills {
        let child_seed = (seed ^ round.wrapping_mul(0x9e37_79b9)).to_string();
        let round_s = round.to_string();
        let mut env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend([
            (ENV_DIR, dir_s.as_str()),
            (ENV_URL, remote.url()),
            (ENV_SEED, child_seed.as_str()),
            (ENV_ROUND, round_s.as_str()),
        ]);
        let mut child = ChildProc::spawn(CHILD_FN, &env);
        let mut said = Said::default();
        while said.ready.is_none() {
            let line = child.line(PATIENCE).expect("the child exited before it was ready");
            said.hear(&line);
        }
        let ready = said.ready.unwrap_or_default();
        assert!(
            ready >= acked,
            "round {round}: the log reopened at {ready}, acknowledged up to {acked}"
        );
        // One kill in four lands while the replicator takes the remote log.
        let delay = ms(if rng.range(0, 3) == 0 {
            rng.range(0, 30)
        } else {
            rng.range(100, 700)
        });
        let start = Instant::now();
        while start.elapsed() < delay {
            while let Some(line) = child.try_line() {
                said.hear(&line);
            }
            std::thread::sleep(ms(1));
        }
        child.child.kill().expect("kill the child");
        child.wait(PATIENCE);
        for line in child.rest() {
            said.hear(&line);
        }
        acked = acked.max(ready).max(said.acked);
        shipped = shipped.max(said.shipped);
        for &e in &said.epochs {
            assert!(e > epoch, "round {round}: epoch {e} after {epoch}: {said:?}");
            epoch = e;
        }
        let when = format!("round {round} (killed after {delay:?}, seed {seed})");
        // The killed log, as a reader sees it: everything acknowledged.
        let source = events(&dir);
        assert!(
            source.len() as u64 >= acked,
            "{when}: {} events, acknowledged {acked}",
            source.len()
        );
        whole_batches(&source, &when);
        let restored = tmp.path().join(format!("restore-{round}"));
        let newest = rt.block_on(remote.latest_manifest()).unwrap();
        if newest
            .as_ref()
            .is_none_or(|m| m.sealed.is_empty() && m.active.as_ref().is_none_or(|a| a.parts.is_empty()))
        {
            // Killed before the first manifest, or between the one that took
            // the remote log (it names nothing) and the first that ships:
            // nothing was shipped, and a restore says so.
            assert_eq!(shipped, 0, "{when}: {said:?}");
            let e = rt.block_on(restore(&remote, &restored, RestoreTo::Latest)).unwrap_err();
            assert!(matches!(e, Error::Remote { .. }), "{when}: {e}");
            println!(
                "{when}: nothing shipped yet (newest manifest {:?})",
                newest.map(|m| m.seq)
            );
        } else {
            let report = rt.block_on(restore(&remote, &restored, RestoreTo::Latest)).unwrap();
            let got = events(&restored);
            assert_eq!(report.next_position, got.len() as u64, "{when}: {report:?}");
            assert!(
                got.len() <= source.len(),
                "{when}: restored {} of {}",
                got.len(),
                source.len()
            );
            assert!(
                got[..] == source[..got.len()],
                "{when}: the restore is no prefix of the log"
            );
            whole_batches(&got, &when);
            assert!(
                got.len() as u64 >= shipped,
                "{when}: restored {}, the writer reported {shipped} shipped",
                got.len()
            );
            // Past the acknowledged events, the one batch in flight at most.
            let beyond: std::collections::BTreeSet<String> = got
                .iter()
                .skip(usize::try_from(acked).unwrap())
                .map(|e| place(&e.3).0)
                .collect();
            assert!(beyond.len() <= 1, "{when}: shipped unacknowledged batches {beyond:?}");
            clean(&restored);
            shipped = shipped.max(got.len() as u64);
            println!(
                "{when}: {} acknowledged, {} in the log, {} restored (manifest {}), epochs {:?}",
                acked,
                source.len(),
                got.len(),
                report.manifest_seq,
                said.epochs
            );
        }
        // Recover here with a new replicator (a newer epoch) and ship it all,
        // or leave the crashed log to the next child (always in the last round).
        if round + 1 == kills || rng.range(0, 1) == 0 {
            healed_rounds += 1;
            let log = opts()
                .replicate_to(
                    remote.clone().request_timeout(Duration::from_secs(5)),
                    Follow::every(ms(5)),
                )
                .open(&dir)
                .unwrap();
            assert!(
                log.next_position() >= acked,
                "{when}: recovered at {}",
                log.next_position()
            );
            for i in 0..3 {
                append_batch(&log, &format!("p{round}-{i}"), &mut rng);
            }
            let handle = log.clone();
            let next = log.next_position();
            log.close().unwrap();
            let status = handle.replication().unwrap();
            assert!(status.stopped && status.error.is_none(), "{when}: {status:?}");
            let last = status.last.as_ref().unwrap();
            assert_eq!(last.shipped_position, next, "{when}: {status:?}");
            assert!(last.epoch > epoch, "{when}: epoch {} after {epoch}", last.epoch);
            epoch = last.epoch;
            (acked, shipped) = (next, next);
            // Recovery kept what was shipped, and the remote log holds it all.
            restores_whole(&rt, &remote, &dir, &tmp.path().join(format!("restore-{round}-healed")));
        }
    }
    println!("{kills} kills, {healed_rounds} recovered here, {acked} events, last epoch {epoch}");
}

/// A remote log a writer took (the manifest version it takes it with names
/// nothing) and shipped nothing to, as a writer killed or failing between
/// that version and its first shipping round leaves it: a restore says
/// nothing was shipped (it said it restored 0 segments, leaving an empty
/// directory, which is no log).
#[test]
fn a_restore_of_a_remote_log_taken_but_never_shipped_to_is_refused() {
    use object_store::{ObjectStore, PutPayload};
    let store = Arc::new(object_store::memory::InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "taken", "memory://taken");
    let taken = annal::remote::Manifest {
        version: 1,
        seq: 1,
        epoch: 1,
        writer: "ab".repeat(16),
        log_id: "cd".repeat(16),
        sealed: Vec::new(),
        active: None,
        next_position: 0,
        written_at: 1,
        newest_event_at: None,
    };
    let rt = rt();
    let at = object_store::path::Path::from("taken/manifest/00000000000000000001");
    rt.block_on(store.put(&at, PutPayload::from(taken.encode()))).unwrap();
    assert_eq!(rt.block_on(remote.latest_manifest()).unwrap(), Some(taken));
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    match rt.block_on(restore(&remote, &dst, RestoreTo::Latest)) {
        Err(Error::Remote { object, detail }) => {
            assert!(object.ends_with("manifest/00000000000000000001"), "{object}");
            assert!(detail.contains("nothing was shipped"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}

// ---------------------------------------------------------- a store of its own

/// A SeaweedFS started by `scripts/seaweedfs.sh` for one test (`start` or
/// `start-cluster`), stopped when dropped (or when this process exits).
struct Weed {
    dir: PathBuf,
    settings: Vec<(String, String)>,
}

impl Weed {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seaweedfs.sh")
    }

    /// Run the script with `args`; its output.
    fn run(args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(Weed::script()).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run scripts/seaweedfs.sh");
        assert!(
            out.status.success(),
            "scripts/seaweedfs.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn start(command: &str, env: &[(&str, &str)]) -> Weed {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "annal-weed-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let out = Weed::run(&[command, dir.to_str().unwrap(), &std::process::id().to_string()], env);
        let settings = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .filter(|(k, _)| k.starts_with("aws_"))
            .collect();
        Weed { dir, settings }
    }

    /// Run `command` of the script on this server (`restart`, `kill-volume`, ...).
    fn then(&self, command: &str, args: &[&str]) {
        let mut all = vec![command, self.dir.to_str().unwrap()];
        all.extend(args);
        Weed::run(&all, &[]);
    }

    fn remote(&self, prefix: &str) -> RemoteLog {
        RemoteLog::open_with_options(&format!("s3://annal/{prefix}"), self.settings.iter().cloned()).unwrap()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Weed::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A writer appending batches on one thread (one a millisecond) while its
/// replicator ships them; another thread watches the replicator's status.
struct Busy {
    log: Log,
    stop: Arc<AtomicBool>,
    appender: std::thread::JoinHandle<()>,
    watcher: std::thread::JoinHandle<Seen>,
}

/// What the watcher saw of the replicator.
#[derive(Debug, Default)]
struct Seen {
    /// Polls that found the last round failed.
    failed: u64,
    /// The first of their errors.
    first_error: Option<String>,
    /// The most positions appended and not shipped at one time.
    max_lag: u64,
}

impl Busy {
    fn start(src: &Path, remote: RemoteLog) -> Busy {
        let follow = Follow::every(ms(5)).backoff(ms(10), ms(200));
        let log = opts().replicate_to(remote, follow).open(src).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let appender = std::thread::spawn(move || {
            let mut rng = Rng::new(7);
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                append_batch(&l, &format!("b{i}"), &mut rng);
                i += 1;
                // A busy writer, not a flood: the logs stay small enough
                // to restore quickly.
                std::thread::sleep(ms(1));
            }
        });
        let (l, s) = (log.clone(), stop.clone());
        let watcher = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !s.load(Ordering::SeqCst) {
                let status = l.replication().unwrap();
                if let Some(e) = status.error {
                    seen.failed += 1;
                    seen.first_error.get_or_insert(e);
                }
                let done = status.last.map_or(0, |r| r.shipped_position);
                seen.max_lag = seen.max_lag.max(l.next_position().saturating_sub(done));
                std::thread::sleep(ms(1));
            }
            seen
        });
        Busy {
            log,
            stop,
            appender,
            watcher,
        }
    }

    /// Wait until the replicator reports `position` shipped.
    fn wait_shipped(&self, position: u64, within: Duration, what: &str) {
        let start = Instant::now();
        while shipped(&self.log) < position {
            assert!(
                start.elapsed() < within,
                "{what}: {position} not shipped within {within:?}: {:?}",
                self.log.replication()
            );
            std::thread::sleep(ms(2));
        }
    }

    /// Stop appending, close the log: everything is shipped, the last round
    /// succeeded. Returns what the watcher saw and the log's length.
    fn finish(self, what: &str) -> (Seen, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.appender.join().unwrap();
        let seen = self.watcher.join().unwrap();
        let handle = self.log.clone();
        let next = self.log.next_position();
        self.log.close().unwrap();
        let status = handle.replication().unwrap();
        assert!(status.stopped, "{what}: {status:?}");
        assert!(status.error.is_none(), "{what}: {status:?}");
        assert_eq!(
            status.last.as_ref().map(|r| (r.shipped_position, r.lag_positions)),
            Some((next, 0)),
            "{what}: {status:?}"
        );
        println!(
            "{what}: {next} events shipped in {} rounds; {} polls saw a failed round ({:?}); at most {} behind",
            status.rounds,
            seen.failed,
            seen.first_error
                .as_deref()
                .map(|e| e.chars().take(400).collect::<String>()),
            seen.max_lag
        );
        (seen, next)
    }
}

/// A restore made now holds a prefix of the log in `src` (which goes on),
/// of whole batches, and `check` is clean on it.
fn restores_a_prefix(remote: &RemoteLog, src: &Path, dst: &Path, what: &str) -> usize {
    let rt = rt();
    rt.block_on(restore(remote, dst, RestoreTo::Latest)).unwrap();
    let got = events(dst);
    let source = events(src);
    assert!(got.len() <= source.len() && got[..] == source[..got.len()], "{what}");
    whole_batches(&got, what);
    clean(dst);
    got.len()
}

// ------------------------------------------------------ the store restarted

/// SeaweedFS killed under a shipping writer and started again after 3 s on
/// the same ports and data: the failed rounds are retried with backoff,
/// the writer appends throughout, and once the store is back it ships
/// everything.
#[test]
fn the_store_killed_and_restarted_mid_upload_loses_nothing() {
    let weed = Weed::start("start", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let remote = weed
        .remote(&format!("restart-{}", remote_support::rand_suffix()))
        .request_timeout(Duration::from_secs(2));
    let busy = Busy::start(&src, remote.clone());
    busy.wait_shipped(1, PATIENCE, "before the kill");
    std::thread::sleep(ms(200));
    let before = busy.log.next_position();
    let killed = Instant::now();
    weed.then("restart", &["3"]);
    let back = killed.elapsed();
    let after = busy.log.next_position();
    assert!(
        after > before,
        "appends went on while the store was down: {before} -> {after}"
    );
    busy.wait_shipped(after, PATIENCE, "after the restart");
    println!(
        "the store was down for {back:?}; {} events appended meanwhile; all of them shipped {:?} after it was back",
        after - before,
        killed.elapsed() - back
    );
    std::thread::sleep(ms(200));
    let (seen, _) = busy.finish("store restarted");
    assert!(seen.failed > 0, "rounds failed while the store was down: {seen:?}");
    restores_whole(&rt(), &remote, &src, &tmp.path().join("dst"));
}

// ------------------------------------------------------------- the cluster

/// The files of volume server `n` of `weed` hold data (not only headers).
fn holds_data(weed: &Weed, n: u32) -> bool {
    std::fs::read_dir(weed.dir.join(format!("volume-{n}")))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().ends_with(".dat") && e.metadata().is_ok_and(|m| m.len() > 8))
}

/// Three volume servers (replication 001), one killed mid-run: the master
/// takes the volumes that lost a copy out of the writable ones and grows new
/// ones on the two left, so writes go on; reads of what was shipped come
/// from the copies left; after close everything restores event for event.
#[test]
fn on_a_cluster_a_volume_server_killed_mid_run_loses_nothing() {
    let weed = Weed::start("start-cluster", &[("ANNAL_WEED_VOLUME_SERVERS", "3")]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let remote = weed.remote("cluster").request_timeout(Duration::from_secs(3));
    let busy = Busy::start(&src, remote.clone());
    busy.wait_shipped(1, PATIENCE, "before the kill");
    std::thread::sleep(ms(300));
    let victim = 1 + (remote_support::rand_suffix() % 3) as u32;
    assert!(holds_data(&weed, victim), "volume server {victim} holds copies");
    weed.then("kill-volume", &[&victim.to_string()]);
    let at_kill = busy.log.next_position();
    // Reads go on: what was shipped restores from the copies left.
    let restored = restores_a_prefix(&remote, &src, &tmp.path().join("during"), "during the outage");
    // Writes go on too.
    busy.wait_shipped(at_kill, PATIENCE, "after the kill");
    std::thread::sleep(ms(200));
    let (_, next) = busy.finish(&format!("volume server {victim} of 3 killed"));
    println!("{restored} events restored while it was down, {at_kill} appended when it died, {next} in all");
    restores_whole(&rt(), &remote, &src, &tmp.path().join("dst"));
}

/// Two volume servers (replication 001), one killed: SeaweedFS refuses
/// writes (both copies take every write; the master cannot grow volumes
/// with one server), so rounds fail (each request times out), the writer
/// appends on, and reads of what was shipped go on from the copy left. Once
/// the server is back, everything is shipped and restores event for event.
#[test]
fn on_a_cluster_of_two_volume_servers_writes_wait_for_the_second() {
    let weed = Weed::start("start-cluster", &[("ANNAL_WEED_VOLUME_SERVERS", "2")]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let remote = weed.remote("pair").request_timeout(Duration::from_secs(2));
    let busy = Busy::start(&src, remote.clone());
    busy.wait_shipped(1, PATIENCE, "before the kill");
    std::thread::sleep(ms(300));
    weed.then("kill-volume", &["2"]);
    let killed = Instant::now();
    let shipped_at_kill = shipped(&busy.log);
    let restored = restores_a_prefix(&remote, &src, &tmp.path().join("during"), "during the outage");
    while killed.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(ms(10));
    }
    let status = busy.log.replication().unwrap();
    let stalled = shipped(&busy.log);
    weed.then("start-volume", &["2"]);
    let at_start = busy.log.next_position();
    busy.wait_shipped(at_start, PATIENCE, "after the volume server is back");
    std::thread::sleep(ms(200));
    let (seen, next) = busy.finish("volume server 2 of 2 killed and started again");
    println!(
        "{restored} events restored while it was down; shipped {shipped_at_kill} at the kill, \
         {stalled} 2.5 s later ({:?}); {at_start} appended when it was back, {next} in all",
        status.error.as_deref().map(|e| e.chars().take(400).collect::<String>())
    );
    assert!(seen.failed > 0, "rounds failed while a copy was missing: {seen:?}");
    restores_whole(&rt(), &remote, &src, &tmp.path().join("dst"));
}
