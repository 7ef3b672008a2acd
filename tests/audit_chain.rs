//! The audit chain against an attacker who rewrites history (issue 7).
//!
//! A forger (`tests/audit/mod.rs`) decodes a closed log, changes its events
//! and writes it back structurally valid: every CRC, position, stream
//! version, seal and head agrees, and the derived files are deleted. The
//! only thing that can give it away is the audit chain (and the anchors an
//! auditor kept outside the log). Each test asserts the specific chain
//! finding `annal::check` reports: the file, the byte offset (the frame's
//! chain slot, frame offset + 40, or a segment's `chain_start` at 56) and the
//! position from which the history differs; and that nothing *but* the chain
//! (and the deleted derived files) is reported, so that the forgery really
//! was structurally valid.
//!
//! Also documented as assertions: what the chain cannot see (an unkeyed
//! chain rewritten in full, a keyed chain checked without its key, the
//! newest batches cut off with no anchor past them).

mod audit;
mod common;

use std::path::{Path, PathBuf};

use annal::{Anchor, ChainKey, CheckOptions, CheckReport, EventData, ExpectedVersion, Finding, Log, Options};
use audit::{CHAIN_START, Chain, FRAME_CHAIN, Forgery, Scope};
use common::{Rng, fresh_copy, scratch};

// ================================================================ helpers

/// Small segments, so that a few dozen batches make several of them.
fn small() -> Options {
    Options::default().format_version(2).segment_size(4096)
}

/// Append `batches` batches over three streams (1 to 5 events each, payloads
/// of 20 to 120 bytes) and return the anchor before the first batch and
/// after each batch: `anchors[i]` is the anchor after `i` batches.
fn build(dir: &Path, opts: Options, batches: usize, seed: u64) -> Vec<Anchor> {
    let log = Log::open_with(dir, opts).expect("open");
    let mut rng = Rng::new(seed);
    let mut anchors = vec![log.anchor().expect("a new log has the chain")];
    for i in 0..batches {
        let stream = format!("acct-{}", i % 3);
        let payloads: Vec<Vec<u8>> = (0..1 + rng.below(5))
            .map(|_| {
                let n = 20 + rng.below(100) as usize;
                rng.bytes(n)
            })
            .collect();
        let events: Vec<EventData> = payloads
            .iter()
            .map(|p| EventData::new("Posted", p.as_slice()))
            .collect();
        log.append(&stream, ExpectedVersion::Any, &events).expect("append");
        anchors.push(log.anchor().expect("anchor"));
    }
    log.close().expect("close");
    anchors
}

fn check(dir: &Path, key: Option<&ChainKey>, anchors: &[Anchor]) -> CheckReport {
    let mut o = CheckOptions::default();
    if let Some(k) = key {
        o = o.key(k.clone());
    }
    for a in anchors {
        o = o.anchor(*a);
    }
    annal::check(dir, o).expect("check runs")
}

fn is_derived(f: &Finding) -> bool {
    let name = f
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.ends_with(".idx") || name.ends_with(".ckpt") || name == annal::STREAM_TABLE_FILE
}

fn is_chain(f: &Finding) -> bool {
    f.detail.starts_with("audit chain broken")
}

fn is_anchor(f: &Finding) -> bool {
    f.detail.starts_with("anchor ")
}

/// The chain problems, in log order (segment file names sort by position).
fn chain_problems(r: &CheckReport) -> Vec<Finding> {
    let mut v: Vec<Finding> = r.problems.iter().filter(|f| is_chain(f)).cloned().collect();
    v.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    v
}

/// Everything the forger should not have left behind: problems that are
/// neither about the chain, nor an anchor, nor a deleted derived file.
fn assert_structurally_valid(r: &CheckReport) {
    let other: Vec<&Finding> = r
        .problems
        .iter()
        .filter(|f| !is_chain(f) && !is_anchor(f) && !is_derived(f))
        .collect();
    assert!(other.is_empty(), "the forgery is not structurally valid: {other:#?}");
}

/// The first chain problem names `file` at `offset` and says the history
/// differs from `position` on.
fn assert_first_break(r: &CheckReport, file: &Path, offset: u64, position: u64) {
    assert_structurally_valid(r);
    let chain = chain_problems(r);
    let first = chain
        .first()
        .unwrap_or_else(|| panic!("no audit chain finding; problems: {:#?}", r.problems));
    println!("first chain finding: {first}");
    assert_eq!(
        (first.file.as_path(), first.offset),
        (file, offset),
        "where the first break is reported: {first}"
    );
    let want = format!("history differs from position {position} on");
    assert!(first.detail.contains(&want), "expected {want:?} in {first}");
    assert!(
        matches!(r.chain, annal::ChainStatus::Verified { broken, .. } if broken >= 1),
        "{:?}",
        r.chain
    );
}

/// Anchor verdicts, in the order given.
fn verdicts(r: &CheckReport) -> Vec<bool> {
    r.anchors.iter().map(|v| v.ok).collect()
}

/// A copy of the log in `src`, decoded.
fn forge(src: &Path) -> (tempfile::TempDir, Forgery) {
    let d = fresh_copy(src);
    let f = Forgery::read(d.path());
    (d, f)
}

/// The chain slot of batch `at` as last written: file and offset.
fn slot(f: &Forgery, at: audit::At) -> (PathBuf, u64) {
    (f.path(at.0), f.batch(at).offset + FRAME_CHAIN)
}

/// A batch in the middle of segment `s` (not its first, not its last), with
/// at least `min_records` records.
fn middle_batch(f: &Forgery, s: usize, min_records: u64) -> audit::At {
    let n = f.segments[s].batches.len();
    (1..n - 1)
        .map(|b| (s, b))
        .find(|&at| f.batch(at).len() >= min_records)
        .unwrap_or_else(|| panic!("segment {s} has no middle batch of {min_records} records"))
}

// ================================================================ the forger itself

/// Decoding and writing back without a change reproduces the segments byte
/// for byte, and check sees nothing but the deleted derived files: the
/// findings of the other tests come from the forgeries, not the forger.
#[test]
fn forger_round_trip_is_exact_and_clean() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 1);
    let before = common::snapshot(d.path());
    let mut f = Forgery::read(d.path());
    assert!(f.segments.len() >= 4, "{} segments", f.segments.len());
    f.write(Chain::Keep);
    let after = common::snapshot(d.path());
    for (name, bytes) in &before {
        if name.ends_with(".seg") {
            assert!(after.get(name) == Some(bytes), "{name} changed");
        }
    }
    let r = check(d.path(), None, &anchors);
    assert_structurally_valid(&r);
    assert!(chain_problems(&r).is_empty(), "{:#?}", r.problems);
    assert!(r.problems.iter().all(is_derived), "{:#?}", r.problems);
    // Deleting every index and the stream table is also what a crash before
    // the sealer's first write leaves: reported, as warnings (spec 17.4).
    assert!(
        r.problems.iter().chain(&r.warnings).any(is_derived),
        "the forger deletes the derived files"
    );
    assert!(verdicts(&r).iter().all(|&ok| ok), "{:#?}", r.anchors);
    // Recomputing the unkeyed chain in full gives the very same slots.
    f.write(Chain::Unkeyed(Scope::All));
    let again = common::snapshot(d.path());
    for (name, bytes) in &before {
        if name.ends_with(".seg") {
            assert!(
                again.get(name) == Some(bytes),
                "{name} changed by recomputing the chain"
            );
        }
    }
}

// ================================================================ 1. an edited payload

#[test]
fn edited_payload_with_fixed_crc_breaks_the_chain_at_its_batch() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 2);
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 2, 2);
    let first = f.batch(at).first_position();
    f.batch_mut(at).records[1].payload[0] ^= 0x01;
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &anchors);
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
    // Only that batch's link is broken: the later ones still follow from the
    // stored slots.
    assert_eq!(chain_problems(&r).len(), 1, "{:#?}", chain_problems(&r));
    // The anchors up to the batch hold, every later one fails.
    for (a, ok) in anchors.iter().zip(verdicts(&r)) {
        assert_eq!(ok, a.position <= first, "anchor {a}: {:?}", r.anchors);
    }
}

// ================================================================ 2. removed, reordered, inserted batches

/// One base log for the structural edits of test 2.
fn base_log() -> (tempfile::TempDir, Vec<Anchor>) {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 3);
    (d, anchors)
}

#[test]
fn deleted_batch_is_caught_where_it_was() {
    let (d, _) = base_log();
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 1, 1);
    let first = f.batch(at).first_position();
    f.segments[at.0].batches.remove(at.1);
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &[]);
    // The batch now in its place (renumbered) does not follow the one before.
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
}

#[test]
fn deleted_record_is_caught_at_its_batch() {
    let (d, _) = base_log();
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 2, 3);
    let first = f.batch(at).first_position();
    f.batch_mut(at).records.remove(1);
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &[]);
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
}

#[test]
fn reordered_batches_are_caught_at_the_first() {
    let (d, _) = base_log();
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 1, 1);
    let first = f.batch(at).first_position();
    f.segments[at.0].batches.swap(at.1, at.1 + 1);
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &[]);
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
}

#[test]
fn duplicated_batch_is_caught_at_the_copy() {
    let (d, _) = base_log();
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 2, 1);
    let copy = f.batch(at).clone();
    let copy_at = (at.0, at.1 + 1);
    let copy_first = copy.first_position() + copy.len();
    f.segments[at.0].batches.insert(copy_at.1, copy);
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &[]);
    let (file, off) = slot(&f, copy_at);
    assert_first_break(&r, &file, off, copy_first);
}

#[test]
fn inserted_forged_batch_is_caught_at_the_forgery() {
    let (d, _) = base_log();
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 1, 1);
    let first = f.batch(at).first_position();
    // A new batch of a stream of its own, with new ids, carrying the chain
    // slot of the batch before it (a naive attacker's best guess).
    let prev = f.batch((at.0, at.1 - 1)).clone();
    let mut forged = prev.clone();
    forged.records.truncate(1);
    forged.records[0].stream = "acct-forged".into();
    forged.records[0].event_id = [0x5a; 16];
    forged.records[0].payload = b"transfer 1000000 to mallory".to_vec();
    f.segments[at.0].batches.insert(at.1, forged);
    f.write(Chain::Keep);
    let r = check(fd.path(), None, &[]);
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
}

// ================================================================ 3. a whole segment replaced

#[test]
fn self_consistent_forged_segment_is_caught_at_the_next_join_and_by_a_later_anchor() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 4);
    let (fd, mut f) = forge(d.path());
    assert!(f.segments.len() >= 4);
    // Every event of segment 1 rewritten (same sizes, so that the segment
    // still ends where the next begins).
    let edited = f.segments[1].base();
    for b in &mut f.segments[1].batches {
        for r in &mut b.records {
            r.payload.iter_mut().for_each(|x| *x = b'X');
        }
    }
    // Recompute segment 1's chain from its stored chain_start: the segment is
    // consistent in itself, and its seal agrees with its last batch.
    f.write(Chain::Unkeyed(Scope::Segment(1)));
    let seg2_base = f.segments[2].base();
    let r = check(fd.path(), None, &anchors);
    assert_first_break(&r, &f.path(2), CHAIN_START, seg2_base);
    assert_eq!(chain_problems(&r).len(), 1, "{:#?}", chain_problems(&r));
    println!("chain: {}", r.chain);
    // An anchor taken after the edit fails; one taken before it holds.
    for (a, v) in anchors.iter().zip(&r.anchors) {
        assert_eq!(v.ok, a.position <= edited, "anchor {a}: {}", v.detail);
    }
    let later = r
        .anchors
        .iter()
        .find(|v| v.anchor.position > edited && v.anchor.position < seg2_base)
        .expect("an anchor inside the forged segment, after the edit");
    println!("anchor inside the forged segment: {}", later.detail);
}

#[test]
fn unkeyed_chain_rewritten_in_full_needs_an_anchor() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 5);
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 1, 1);
    let edited = f.batch(at).first_position();
    f.batch_mut(at).records[0].payload = b"rewritten".to_vec();
    f.write(Chain::Unkeyed(Scope::All));
    // Without an anchor: an unkeyed chain recomputed from genesis is
    // self-consistent, and check cannot tell (the documented limitation).
    let r = check(fd.path(), None, &[]);
    assert_structurally_valid(&r);
    assert!(chain_problems(&r).is_empty(), "{:#?}", r.problems);
    assert!(
        matches!(
            r.chain,
            annal::ChainStatus::Verified {
                keyed: false,
                broken: 0,
                ..
            }
        ),
        "{:?}",
        r.chain
    );
    // An anchor taken before the forgery, past the edited batch, catches it;
    // anchors before the edit still hold.
    let r = check(fd.path(), None, &anchors);
    assert!(chain_problems(&r).is_empty());
    for (a, v) in anchors.iter().zip(&r.anchors) {
        assert_eq!(v.ok, a.position <= edited, "anchor {a}: {}", v.detail);
    }
    let head = r.anchors.last().expect("the head anchor");
    assert!(!head.ok);
    println!("head anchor on a full rewrite: {}", head.detail);
    assert!(
        r.problems.iter().any(is_anchor),
        "a failed anchor is a problem: {:#?}",
        r.problems
    );
}

/// The attacker need not start at genesis: recomputing the unkeyed chain
/// from the edited batch on is just as invisible without an anchor, and just
/// as visible with one.
#[test]
fn unkeyed_chain_rewritten_from_the_edit_on_needs_an_anchor() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 8);
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 2, 1);
    let edited = f.batch(at).first_position();
    f.batch_mut(at).records[0].payload = b"rewritten".to_vec();
    f.write(Chain::Unkeyed(Scope::From(edited)));
    let r = check(fd.path(), None, &[]);
    assert_structurally_valid(&r);
    assert!(chain_problems(&r).is_empty(), "{:#?}", r.problems);
    let r = check(fd.path(), None, &anchors);
    for (a, v) in anchors.iter().zip(&r.anchors) {
        assert_eq!(v.ok, a.position <= edited, "anchor {a}: {}", v.detail);
    }
}

/// The newest batch of the active segment, edited with its CRC fixed and the
/// head file deleted (so that the durable boundary comes from the frames
/// alone, and the last frame lies past it): still a problem, not a torn tail.
#[test]
fn edited_newest_batch_is_a_problem_even_without_a_head() {
    let d = scratch();
    build(d.path(), small(), 40, 9);
    let (fd, mut f) = forge(d.path());
    let at = *f.batches().last().expect("batches");
    let first = f.batch(at).first_position();
    f.batch_mut(at).records[0].payload[0] ^= 0x10;
    f.write(Chain::Keep);
    std::fs::remove_file(fd.path().join(annal::HEAD_FILE)).expect("remove the head");
    let r = check(fd.path(), None, &[]);
    let (file, off) = slot(&f, at);
    assert_first_break(&r, &file, off, first);
}

// ================================================================ 4. keyed chains

const KEY: [u8; 32] = [0x4b; 32];
const WRONG: [u8; 32] = [0x57; 32];

fn f_path0(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.seg", 0))
}

fn keyed_log() -> (tempfile::TempDir, Vec<Anchor>) {
    let d = scratch();
    let anchors = build(d.path(), small().chain_key(ChainKey::from_bytes(KEY)), 30, 6);
    (d, anchors)
}

#[test]
fn untouched_keyed_log_verifies_with_its_key_only() {
    let (d, anchors) = keyed_log();
    let key = ChainKey::from_bytes(KEY);
    let r = check(d.path(), Some(&key), &anchors);
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(
        matches!(
            r.chain,
            annal::ChainStatus::Verified {
                keyed: true,
                broken: 0,
                ..
            }
        ),
        "{:?}",
        r.chain
    );
    assert!(verdicts(&r).iter().all(|&ok| ok), "{:#?}", r.anchors);

    // Without the key: not verified, a warning, not a problem.
    let r = check(d.path(), None, &[]);
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(
        matches!(r.chain, annal::ChainStatus::NotVerified { keyed: true, .. }),
        "{:?}",
        r.chain
    );
    let w: Vec<&Finding> = r.warnings.iter().filter(|w| w.detail.contains("key")).collect();
    assert!(
        !w.is_empty(),
        "a warning that the keyed chain was not verified: {:#?}",
        r.warnings
    );
    println!("without the key: {}", w[0]);

    // With a wrong key: a problem.
    let r = check(d.path(), Some(&ChainKey::from_bytes(WRONG)), &[]);
    let p: Vec<&Finding> = r.problems.iter().filter(|p| p.detail.contains("key")).collect();
    assert_eq!(p.len(), 1, "one problem about the key: {:#?}", r.problems);
    println!("wrong key: {}", p[0]);
    // At the segment header's key_id (spec 2.1, v2: [88, 104)).
    assert_eq!((p[0].file.as_path(), p[0].offset), (f_path0(d.path()).as_path(), 88));
    assert!(
        matches!(r.chain, annal::ChainStatus::NotVerified { keyed: true, .. }),
        "{:?}",
        r.chain
    );
}

#[test]
fn keyed_chain_rewritten_without_the_key_is_caught_from_genesis() {
    let (d, anchors) = keyed_log();
    let key = ChainKey::from_bytes(KEY);
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 1, 1);
    f.batch_mut(at).records[0].payload = b"rewritten".to_vec();
    // Mode b over everything: unkeyed BLAKE3 from genesis, the keyed flag
    // and key id left as they are.
    f.write(Chain::Unkeyed(Scope::All));
    let r = check(fd.path(), Some(&key), &[]);
    assert_first_break(&r, &f.path(0), CHAIN_START, 0);
    // Every anchor fails, even the one at genesis.
    let r = check(fd.path(), Some(&key), &anchors);
    assert!(r.anchors.iter().all(|v| !v.ok), "{:#?}", r.anchors);

    // Without the key check cannot tell (only a warning): the keyed chain is
    // what protects such a log, and it needs the key.
    let r = check(fd.path(), None, &[]);
    assert_structurally_valid(&r);
    assert!(chain_problems(&r).is_empty(), "{:#?}", r.problems);
    assert!(
        matches!(r.chain, annal::ChainStatus::NotVerified { keyed: true, .. }),
        "{:?}",
        r.chain
    );
}

#[test]
fn keyed_chain_rewritten_from_the_edit_is_caught_at_the_first_forged_batch() {
    let (d, _) = keyed_log();
    let key = ChainKey::from_bytes(KEY);
    for (name, chain) in [
        ("no key (mode b)", Chain::Unkeyed as fn(Scope) -> Chain),
        ("wrong key (mode c)", |s| Chain::Keyed(WRONG, s)),
    ] {
        let (fd, mut f) = forge(d.path());
        let at = middle_batch(&f, 2, 1);
        let first = f.batch(at).first_position();
        f.batch_mut(at).records[0].payload = b"rewritten".to_vec();
        f.write(chain(Scope::From(first)));
        let r = check(fd.path(), Some(&key), &[]);
        println!("{name}:");
        let (file, off) = slot(&f, at);
        assert_first_break(&r, &file, off, first);
    }
    // Mode c over everything: the genesis, hashed with the wrong key.
    let (fd, mut f) = forge(d.path());
    let at = middle_batch(&f, 2, 1);
    f.batch_mut(at).records[0].payload = b"rewritten".to_vec();
    f.write(Chain::Keyed(WRONG, Scope::All));
    let r = check(fd.path(), Some(&key), &[]);
    assert_first_break(&r, &f.path(0), CHAIN_START, 0);
}

// ================================================================ 5. anchors at random positions

#[test]
fn random_anchors_fail_exactly_after_the_edit() {
    let seed = common::seed("random_anchors_fail_exactly_after_the_edit");
    let mut outer = Rng::new(seed);
    for round in 0..3 {
        let seed = outer.next_u64();
        println!("round {round}: seed {seed}");
        random_round(seed);
    }
}

fn random_round(seed: u64) {
    let mut rng = Rng::new(seed);
    let d = scratch();
    let log = Log::open_with(d.path(), Options::default().format_version(2).segment_size(64 << 10)).expect("open");
    let streams = ["orders", "payments", "audit", "users", "stock"];
    let mut anchors = Vec::new();
    let mut written = 0u64;
    while written < 300 << 10 || anchors.len() < 10 {
        let stream = *rng.pick(&streams);
        let n = 1 + rng.below(20);
        let payloads: Vec<Vec<u8>> = (0..n).map(|_| rng.bytes_below(200)).collect();
        written += payloads.iter().map(|p| 100 + p.len() as u64).sum::<u64>();
        let events: Vec<EventData> = payloads
            .iter()
            .map(|p| EventData::new("Changed", p.as_slice()))
            .collect();
        log.append(stream, ExpectedVersion::Any, &events).expect("append");
        if rng.below(10) == 0 {
            anchors.push(log.anchor().expect("anchor"));
        }
    }
    let last = log.anchor().expect("anchor");
    anchors.push(last);
    log.close().expect("close");
    assert_eq!(annal::head_anchor(d.path()).expect("head anchor"), Some(last));

    let r = check(d.path(), None, &anchors);
    assert!(r.is_ok(), "{:#?}", r.problems);
    assert!(verdicts(&r).iter().all(|&ok| ok), "{:#?}", r.anchors);

    let end = last.position;
    let edited = rng.below(end);
    let byte = rng.next_u64() as usize;
    for mode in [Chain::Keep, Chain::Unkeyed(Scope::All)] {
        let (fd, mut f) = forge(d.path());
        assert!(f.segments.len() >= 4, "{} segments", f.segments.len());
        let rec = f.record_mut(edited);
        if rec.payload.is_empty() {
            rec.payload.push(1);
        } else {
            let i = byte % rec.payload.len();
            rec.payload[i] ^= 0x80;
        }
        f.write(mode);
        let r = check(fd.path(), None, &anchors);
        assert_structurally_valid(&r);
        for (a, v) in anchors.iter().zip(&r.anchors) {
            assert_eq!(
                v.ok,
                a.position <= edited,
                "{mode:?}, event {edited} edited, anchor {a}: {}",
                v.detail
            );
        }
        let batch_first = f.batch(f.batch_of(edited)).first_position();
        match mode {
            Chain::Keep => {
                let at = f.batch_of(edited);
                let (file, off) = slot(&f, at);
                assert_first_break(&r, &file, off, batch_first);
            }
            _ => assert!(chain_problems(&r).is_empty(), "{:#?}", r.problems),
        }
    }
}

// ================================================================ 6. truncation

#[test]
fn truncating_the_newest_batches_needs_an_anchor_past_them() {
    let d = scratch();
    let anchors = build(d.path(), small(), 40, 7);
    let head = *anchors.last().expect("anchors");
    let (fd, mut f) = forge(d.path());
    let last = f.segments.len() - 1;
    assert!(f.segments[last].batches.len() >= 2, "the last segment has two batches");
    // Cut the last segment after its first batch.
    f.segments[last].batches.truncate(1);
    let cut = f.end();
    f.write(Chain::Keep);
    assert!(cut < head.position);
    let before = *anchors
        .iter()
        .find(|a| a.position == cut)
        .expect("an anchor at the cut");

    // No anchor past the cut: nothing to see (the limitation, asserted).
    let r = check(fd.path(), None, &[]);
    assert!(r.problems.iter().all(is_derived), "{:#?}", r.problems);
    assert!(
        matches!(r.chain, annal::ChainStatus::Verified { broken: 0, .. }),
        "{:?}",
        r.chain
    );
    let r = check(fd.path(), None, &[before]);
    assert!(r.problems.iter().all(is_derived), "{:#?}", r.problems);
    assert!(r.anchors[0].ok, "{}", r.anchors[0].detail);

    // The anchor at the old head is past the end of the log: it fails.
    let r = check(fd.path(), None, &[head]);
    assert_structurally_valid(&r);
    assert!(chain_problems(&r).is_empty());
    assert!(!r.anchors[0].ok);
    println!("anchor past the end: {}", r.anchors[0].detail);
    assert!(r.problems.iter().any(is_anchor), "{:#?}", r.problems);
}
