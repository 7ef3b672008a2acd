//! Unit tests of compaction's accounting, over segment outcomes built by
//! hand.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use std::path::Path;

/// A record of `$compaction` at `position`, written at `timestamp`.
fn found(position: u64, timestamp: u64, rec: CompactionRecord, before: &[(&str, u64)]) -> SystemEvent {
    SystemEvent::Compaction(FoundRecord {
        position,
        timestamp,
        payload_at: 1000,
        record: Ok(rec),
        before: before.iter().map(|(s, v)| (Box::from(*s), *v)).collect(),
    })
}

fn meta(position: u64, target: &str, rules: StreamRules) -> SystemEvent {
    SystemEvent::Meta {
        position,
        target: target.into(),
        rules: Some(rules),
    }
}

fn run(first_position: u64, count: u64, first_version: u64, stream: &str, timestamp: u64) -> RemovedRun {
    RemovedRun {
        first_position,
        count,
        first_version,
        timestamp,
        stream: stream.into(),
    }
}

fn batch(first_position: u64, count: u64, first_version: u64, stream: &str, offset: u64, ts: u64) -> BatchSpan {
    BatchSpan {
        first_position,
        count,
        first_version,
        stream: stream.into(),
        offset,
        first_timestamp: ts,
        last_timestamp: ts + 10,
    }
}

fn span(first_version: u64, last_version: u64) -> StreamSpan {
    StreamSpan {
        first_version,
        first_offset: 128,
        last_version,
    }
}

fn seg(base: u64, next: u64) -> SegOut {
    let mut o = SegOut::new(base, Path::new("/log").join(format!("{base}.seg")));
    o.complete = true;
    o.sealed = true;
    o.next_position = next;
    o.bytes = 4096;
    o.seal_chain = Some((4000, [5; 32]));
    o
}

/// Segment 0 (positions 0..100: streams `a`, `x` and their rules), the
/// compacted segment 1 (100..110), and the active segment 2 (from 110)
/// that holds its record at position 120.
///
/// Segment 1 originally held: `x` v10..12 at 100..103, `a` v5 at 103,
/// `x` v13 at 104, `a` v6..8 at 105..108, `x` v14..15 at 108..110. Left:
/// `a` v5 (103) and `a` v6..8 (105..108); removed: the three runs of `x`
/// (`x` is tombstoned, deleted below version 16: its newest event may go).
fn log() -> (Vec<SegOut>, CompactionRecord) {
    let mut s0 = seg(0, 100);
    s0.spans = vec![("a".into(), span(0, 4)), ("x".into(), span(0, 9))];
    let deleted = StreamRules {
        deleted: true,
        tombstone: true,
        truncate_before: Some(16),
        ..StreamRules::default()
    };
    s0.system = vec![meta(50, "x", StreamRules::default())];
    let mut s1 = seg(100, 110);
    s1.compacted = true;
    s1.chain_end = Some([9; 32]);
    s1.batches = vec![batch(103, 1, 5, "a", 128, 1_000), batch(105, 3, 6, "a", 256, 2_000)];
    s1.spans = vec![("a".into(), span(5, 8))];
    let rec = CompactionRecord {
        segment_base: 100,
        next_base: 110,
        compacted_len: 4096,
        original_end: [5; 32],
        compacted_end: [9; 32],
        removed: vec![
            run(100, 3, 10, "x", 500),
            run(104, 1, 13, "x", 1_500),
            run(108, 2, 14, "x", 2_500),
        ],
    };
    let mut s2 = seg(110, 130);
    s2.sealed = false;
    s2.seal_chain = None;
    s2.prev_timestamp = 3_000;
    s2.spans = vec![("$meta-x".into(), span(1, 1))];
    s2.system = vec![meta(115, "x", deleted), found(120, 10_000, rec.clone(), &[])];
    (vec![s0, s1, s2], rec)
}

fn check(outs: &[SegOut]) -> (CheckReport, Compaction) {
    let mut report = CheckReport::default();
    let c = check_compaction(outs, true, false, &mut report);
    (report, c)
}

/// Replace the record in the active segment of `outs`.
fn with_record(outs: &mut [SegOut], rec: CompactionRecord) {
    outs[2].system[1] = found(120, 10_000, rec, &[]);
}

#[test]
fn a_compacted_segment_its_record_accounts_for_is_clean_and_listed() {
    let (outs, _) = log();
    let (r, c) = check(&outs);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.compaction.len(), 1);
    let s = &r.compaction[0];
    assert_eq!(
        (s.base, s.next_base, s.record_position, s.removed_events, s.runs),
        (100, 110, 120, 6, 3)
    );
    assert!(s.to_string().contains("6 event(s) in 3 run(s) removed"), "{s}");
    assert_eq!(c.accounted.len(), 1);
    assert!(c.breaks.is_empty());
    // The streams of the segment, counting the runs.
    let spans = &c.spans[&1];
    let x = spans.iter().find(|(s, _)| &**s == "x").unwrap();
    assert_eq!((x.1.first_version, x.1.last_version), (10, 15));
    let a = spans.iter().find(|(s, _)| &**s == "a").unwrap();
    assert_eq!((a.1.first_version, a.1.last_version), (5, 8));
}

#[test]
fn without_a_matching_record_the_seal_is_a_problem_and_a_break() {
    let (mut outs, rec) = log();
    outs[2].system.pop();
    let (r, c) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].offset, 4000);
    assert!(r.problems[0].detail.contains("no compaction record accounts for"));
    assert_eq!(c.breaks.len(), 1);
    assert_eq!(c.breaks[0].affects, 101);
    assert!(r.compaction.is_empty());
    for (field, bad) in [
        (
            "compacted_len",
            CompactionRecord {
                compacted_len: 4095,
                ..rec.clone()
            },
        ),
        (
            "original_end",
            CompactionRecord {
                original_end: [6; 32],
                ..rec.clone()
            },
        ),
        (
            "compacted_end",
            CompactionRecord {
                compacted_end: [6; 32],
                ..rec.clone()
            },
        ),
    ] {
        let (mut outs, _) = log();
        with_record(&mut outs, bad);
        let (r, _) = check(&outs);
        assert_eq!(r.problems.len(), 1, "{field}: {:?}", r.problems);
        assert!(r.problems[0].detail.contains("the newest compaction record"), "{field}");
    }
}

#[test]
fn the_newest_matching_record_is_used_and_a_newer_one_not_swapped_in_is_a_warning() {
    let (mut outs, rec) = log();
    // A newer compaction of the same segment whose file never replaced it.
    let newer = CompactionRecord {
        compacted_len: 2048,
        ..rec.clone()
    };
    outs[2].system.push(found(125, 11_000, newer, &[]));
    let (r, _) = check(&outs);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].detail.contains("was not swapped in"));
    assert_eq!(r.compaction[0].record_position, 120);
}

#[test]
fn a_record_of_an_original_segment_is_a_warning_and_one_naming_no_segment_a_problem() {
    let (mut outs, rec) = log();
    // The swap never happened: segment 1 is the original.
    outs[1].compacted = false;
    outs[1].batches.clear();
    let (r, _) = check(&outs);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].detail.contains("is the original"),
        "{}",
        r.warnings[0].detail
    );
    assert!(r.compaction.is_empty());

    let (mut outs, _) = log();
    with_record(
        &mut outs,
        CompactionRecord {
            segment_base: 101,
            ..rec
        },
    );
    let (r, _) = check(&outs);
    assert!(
        r.problems.iter().any(|p| p.detail.contains("no segment starts there")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_record_that_does_not_decode_is_a_problem_at_its_byte() {
    let (mut outs, _) = log();
    outs[2].system.push(SystemEvent::Compaction(FoundRecord {
        position: 126,
        timestamp: 1,
        payload_at: 777,
        record: Err((779, "bad".into())),
        before: Vec::new(),
    }));
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1);
    assert_eq!(
        (r.problems[0].file.as_path(), r.problems[0].offset),
        (outs[2].path.as_path(), 779)
    );
}

#[test]
fn gaps_must_be_exactly_the_runs() {
    let (_, rec) = log();
    // A run missing: positions 104..105 skipped, unaccounted.
    let mut missing = rec.clone();
    missing.removed.remove(1);
    // A run that overlaps a batch kept.
    let mut overlap = rec.clone();
    overlap.removed[1] = run(105, 1, 13, "x", 1_500);
    // A run past the last batch that leaves a gap before the seal.
    let mut short = rec.clone();
    short.removed[2] = run(108, 1, 14, "x", 2_500);
    for (what, bad, at) in [
        ("missing", missing, 256),
        ("overlap", overlap, 256),
        ("short", short, 4000),
    ] {
        let (mut outs, _) = log();
        with_record(&mut outs, bad);
        let (r, _) = check(&outs);
        assert!(
            r.problems
                .iter()
                .any(|p| p.offset == at && p.detail.contains("skips positions")),
            "{what}: {:?}",
            r.problems
        );
    }
}

#[test]
fn versions_of_the_segment_and_the_runs_are_contiguous_together() {
    let (mut outs, mut rec) = log();
    rec.removed[1].first_version = 14;
    rec.removed[2].first_version = 15;
    with_record(&mut outs, rec);
    let (r, _) = check(&outs);
    let p: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.detail.contains("to continue at version 13"))
        .collect();
    assert_eq!(p.len(), 1, "{:?}", r.problems);
    assert_eq!(p[0].offset, 256, "the frame after the run");
}

#[test]
fn every_run_must_be_hidden_by_a_rule_recorded_before_the_record() {
    // The deletion comes after the record: nothing hid the runs then.
    let (mut outs, _) = log();
    let SystemEvent::Meta { position, .. } = &mut outs[2].system[0] else {
        panic!()
    };
    *position = 121;
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
    assert!(
        r.problems[..2].iter().all(|p| p.detail.contains("did not hide them")),
        "{:?}",
        r.problems
    );
    assert!(r.problems[2].detail.contains("newest event"), "{:?}", r.problems);

    // No metadata at all.
    let (mut outs, _) = log();
    outs[0].system.clear();
    outs[2].system.remove(0);
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
    assert!(
        r.problems[0].detail.contains("had no metadata"),
        "{}",
        r.problems[0].detail
    );

    // A system stream's events are never removed.
    let (mut outs, mut rec) = log();
    rec.removed[0].stream = "$meta-x".into();
    with_record(&mut outs, rec);
    let (r, _) = check(&outs);
    assert!(
        r.problems.iter().any(|p| p.detail.contains("system streams")),
        "{:?}",
        r.problems
    );
}

#[test]
fn max_count_keeps_the_newest_and_never_removes_the_last_event() {
    let keep = |n| StreamRules {
        max_count: Some(n),
        ..StreamRules::default()
    };
    // max_count 1: x's newest before the record is 15 (in a run): hides
    // 10..14 but not 15, the newest event of x, which stays.
    let (mut outs, _) = log();
    outs[2].system[0] = meta(115, "x", keep(1));
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].detail.contains("newest event"),
        "{}",
        r.problems[0].detail
    );
    assert_eq!(r.problems[0].offset, 4000);
    // max_count 3 with v16 before the record: hides 10..13, not 14.
    outs[2].system[0] = meta(115, "x", keep(3));
    outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].detail.contains("did not hide them"),
        "{}",
        r.problems[0].detail
    );
    assert_eq!(r.problems[0].offset, 4000);

    // With x appended to after the segment (version 16, before the
    // record), max_count 1 hides every run.
    let (mut outs, _) = log();
    outs[2].system[0] = meta(115, "x", keep(1));
    outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
    let (r, _) = check(&outs);
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    // truncate_before above the newest: hides it, but compaction keeps
    // the newest event of a stream that is not tombstoned.
    let (mut outs, _) = log();
    outs[2].system[0] = meta(
        115,
        "x",
        StreamRules {
            truncate_before: Some(20),
            ..StreamRules::default()
        },
    );
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].detail.contains("newest event"),
        "{}",
        r.problems[0].detail
    );
}

#[test]
fn max_age_is_judged_by_the_runs_timestamps_within_the_segments_bounds() {
    let age = |a| StreamRules {
        max_age: Some(a),
        ..StreamRules::default()
    };
    // The record is written at 10_000; the runs' timestamps are 500, 1_500
    // and 2_500 (bounded by the header's 0, the batches at 1_000..1_010
    // and 2_000..2_010, and the next segment's prev_timestamp 3_000). The
    // last run holds x's newest, which a stream with only max_age keeps: so
    // `x` v16 comes first.
    let (mut outs, _) = log();
    outs[2].system[0] = meta(115, "x", age(5_000));
    outs[2].system[1] = found(120, 10_000, log().1, &[("x", 16)]);
    let (r, _) = check(&outs);
    assert!(
        r.problems.is_empty() && r.warnings.is_empty(),
        "{:?} {:?}",
        r.problems,
        r.warnings
    );
    // max_age 8_000 hides what is older than 2_000: the last run (2_500)
    // was visible: a problem at the seal, and no warning.
    outs[2].system[0] = meta(115, "x", age(8_000));
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].offset, 4000);
    assert!(
        r.problems[0].detail.contains("did not hide them"),
        "{}",
        r.problems[0].detail
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // A stated timestamp outside the bounds the segment gives is a lie.
    let (mut outs, mut rec) = log();
    rec.removed[1].timestamp = 2_500;
    outs[2].system[0] = meta(115, "x", age(5_000));
    outs[2].system[1] = found(120, 10_000, rec, &[("x", 16)]);
    let (r, _) = check(&outs);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].detail.contains("bound it to"), "{}", r.problems[0].detail);
}

#[test]
fn the_newest_version_before_a_record_counts_runs_and_surviving_events() {
    let (outs, rec) = log();
    let recs = [Rec {
        seg: 2,
        found: match &outs[2].system[1] {
            SystemEvent::Compaction(f) => f,
            SystemEvent::Meta { .. } => unreachable!(),
        },
        rec: &rec,
    }];
    let accepted: Vec<(usize, &Rec<'_>)> = vec![(1, &recs[0])];
    let idx = RunIndex::new(&outs, &accepted);
    assert_eq!(idx.run_before("x", 120), Some(15));
    assert_eq!(idx.run_before("x", 109), Some(14));
    assert_eq!(idx.run_before("x", 101), Some(10));
    assert_eq!(idx.run_before("x", 100), None);
    assert_eq!(idx.surviving_before("x", 1), Some(9));
    assert_eq!(idx.surviving_before("x", 0), None);
    assert_eq!(idx.newest_before(&recs[0], "x"), Some(15));
    assert_eq!(idx.newest_before(&recs[0], "nope"), None);
}

#[test]
fn with_a_public_key_the_report_says_whether_a_signature_covers_the_record() {
    let (mut outs, _) = log();
    outs[2].last_signed = Some(125);
    let mut report = CheckReport::default();
    check_compaction(&outs, true, true, &mut report);
    assert_eq!(report.compaction[0].record_signed, Some(true));
    outs[2].last_signed = Some(118);
    let mut report = CheckReport::default();
    check_compaction(&outs, true, true, &mut report);
    assert_eq!(report.compaction[0].record_signed, Some(false));
    assert!(
        report.compaction[0]
            .to_string()
            .contains("comes after the last signed checkpoint")
    );
}
