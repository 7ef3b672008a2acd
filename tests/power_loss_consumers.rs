//! The power-cut simulator (`support::PowerIo`) over a durable
//! subscription's checkpoint writes and a projection runner's saves (issue
//! 19, spec 24): a writer, a consumer and a runner in one process, their
//! files written through the log's I/O seam; crash images before every
//! sync and a sample of the other operations (torn, dropped, kept writes;
//! lost directory operations). In every image:
//!
//! - the subscription opens (a torn slot leaves the other), resumes no
//!   earlier than its last commit that returned and never past what was
//!   acknowledged, and the events it then delivers are exactly the log's
//!   from there (no gap);
//! - the runner opens with a model equal to a rebuild of the image's log
//!   (exactly once).
//!
//! The checkpoint file is created before the first crash point (its
//! creation links a temporary file into place, and `PowerIo` does not model
//! links); every slot write, fsync and every save of the runner (temporary
//! file, fsync, rename, directory fsync) is modelled.

mod support;

use std::sync::Arc;
use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, Projection, RecordRef};
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
