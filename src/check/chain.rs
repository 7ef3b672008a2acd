//! The audit chain across segments (spec 21), after the parallel pass: the
//! log's format in every segment, the key given against the log's, the
//! genesis hash, the joins between segments (each `chain_start` against the
//! previous seal), then the anchors ([`check_anchors`]). Sets
//! [`CheckReport::chain`] and [`CheckReport::anchors`].
//!
//! Invariants: every broken link is one problem, in log order (genesis,
//! then per segment its join and its own links); the links are said to be
//! verified only if they were recomputed (an unkeyed chain, or a keyed one
//! with its key, in segments that agree on the format).

use super::anchors::{History, check_anchors};
use super::compaction::Compaction;
use super::outcome::{Break, SegOut};
use super::report::{AnchorVerdict, ChainStatus, CheckOptions, CheckReport, anchor_finding, finding};
use crate::audit::chain::{ChainKey, Chainer, hex};
use crate::format::LogFormat;

/// The sequential part of the audit chain check: the log's format across
/// segments, the key, genesis and the joins between segments, then the
/// anchors. Sets `report.chain` and `report.anchors`.
pub(super) fn check_chain(
    outs: &[SegOut],
    opts: &CheckOptions,
    retained: Option<(u64, u64)>,
    compaction: &Compaction,
    report: &mut CheckReport,
) {
    let Some(first) = outs.iter().find(|o| o.format.is_some()) else {
        for a in &opts.anchors {
            let detail = "no segment header of the log could be read (see the problems above)".to_owned();
            if let Some(o) = outs.first() {
                report.problems.push(anchor_finding(a, &o.path, 0, &detail));
            }
            report.anchors.push(AnchorVerdict {
                anchor: *a,
                ok: false,
                detail,
                superseded_by_retention: None,
                superseded_by_compaction: None,
            });
        }
        return;
    };
    let Some(fmt) = first.format else { return };
    let agree = formats_agree(outs, &fmt, report);
    if !fmt.chained() {
        no_chain(first, &fmt, opts, report);
        return;
    }

    let keyed = fmt.keyed();
    // Why the links could not be recomputed, if they could not.
    let (key, mut not_verified) = chain_key(first, &fmt, opts, report);
    if !agree && not_verified.is_none() {
        not_verified = Some("the segments disagree on the log's format (see the problems)".to_owned());
    }
    let chainer = not_verified.is_none().then(|| Chainer::new(key));
    let (breaks, damaged_at, links) = breaks_in_order(outs, first, chainer.as_ref(), retained.map(|r| r.0));
    report.problems.extend(breaks.iter().map(|b| b.finding.clone()));
    report.chain = match not_verified {
        None => ChainStatus::Verified {
            keyed,
            batches: links,
            broken: breaks.len() as u64,
        },
        Some(reason) => ChainStatus::NotVerified { keyed, reason },
    };
    // A compacted segment no record accounts for breaks the history of
    // every anchor after it (already a problem, spec 3.10).
    let mut all = breaks;
    all.extend(compaction.breaks.iter().cloned());
    all.sort_by_key(|b| b.affects);
    let history = History {
        outs,
        first,
        chainer: chainer.as_ref(),
        breaks: &all,
        damaged_at,
        retained,
        compacted: &compaction.accounted,
    };
    check_anchors(&history, &opts.anchors, report);
}

/// Every segment states the first one's format (version, flags, key id).
fn formats_agree(outs: &[SegOut], fmt: &LogFormat, report: &mut CheckReport) -> bool {
    let mut agree = true;
    for o in outs {
        if let Some(f) = o.format
            && (f.version, f.flags, f.key_id) != (fmt.version, fmt.flags, fmt.key_id)
        {
            agree = false;
            report.problems.push(finding(
                &o.path,
                8,
                format!(
                    "the segment's format (version {}, log_flags {:#06x}, key_id {}) differs from the first \
                     segment's (version {}, log_flags {:#06x}, key_id {})",
                    f.version,
                    f.flags,
                    hex(&f.key_id),
                    fmt.version,
                    fmt.flags,
                    hex(&fmt.key_id)
                ),
            ));
        }
    }
    agree
}

/// A log without the audit chain: a key given is a problem, and no anchor
/// can hold.
fn no_chain(first: &SegOut, fmt: &LogFormat, opts: &CheckOptions, report: &mut CheckReport) {
    if opts.key.is_some() {
        report.problems.push(finding(
            &first.path,
            10,
            format!(
                "a chain key was given, but the log has no audit chain (format version {}, log_flags {:#06x})",
                fmt.version, fmt.flags
            ),
        ));
    }
    report.chain = ChainStatus::Absent;
    for a in &opts.anchors {
        let detail = format!(
            "the log has no audit chain (format version {}, log_flags {:#06x}): no anchor can hold",
            fmt.version, fmt.flags
        );
        report.problems.push(anchor_finding(a, &first.path, 10, &detail));
        report.anchors.push(AnchorVerdict {
            anchor: *a,
            ok: false,
            detail,
            superseded_by_retention: None,
            superseded_by_compaction: None,
        });
    }
}

/// The key to recompute a chained log's links with, and why they cannot be
/// recomputed (no key for a keyed chain, a wrong key), if they cannot.
fn chain_key<'k>(
    first: &SegOut,
    fmt: &LogFormat,
    opts: &'k CheckOptions,
    report: &mut CheckReport,
) -> (Option<&'k ChainKey>, Option<String>) {
    match (fmt.keyed(), &opts.key) {
        (false, Some(_)) => {
            report.problems.push(finding(
                &first.path,
                10,
                "a chain key was given, but the log's audit chain is not keyed",
            ));
            (None, None)
        }
        (false, None) => (None, None),
        (true, None) => {
            report.warnings.push(finding(
                &first.path,
                88,
                "keyed audit chain not verified: no key given (only the stored chain values were compared with \
                 each other; give the key to verify every link)",
            ));
            (None, Some("no key given".to_owned()))
        }
        (true, Some(k)) if k.id() != fmt.key_id => {
            report.problems.push(finding(
                &first.path,
                88,
                format!(
                    "the key given is not the log's chain key: its id is {}, the log's key_id is {}",
                    hex(&k.id()),
                    hex(&fmt.key_id)
                ),
            ));
            (None, Some("the key given is not the log's chain key".to_owned()))
        }
        (true, Some(k)) => (Some(k), None),
    }
}

/// The broken links in log order: genesis, then per segment its join and
/// its own. Also where reading the log stopped first (damage, a missing
/// segment), and the batch links recomputed.
fn breaks_in_order(
    outs: &[SegOut],
    first: &SegOut,
    chainer: Option<&Chainer<'_>>,
    retained: Option<u64>,
) -> (Vec<Break>, Option<u64>, u64) {
    let mut breaks: Vec<Break> = Vec::new();
    // A log whose front retention removed starts from its first segment's
    // chain_start, which the retention record states (spec 3.9).
    if let (Some(c), Some(o), Some(log_id)) = (chainer, outs.first(), first.log_id)
        && o.format.is_some()
        && o.base == 0
    {
        let genesis = c.genesis(&log_id);
        if o.chain_start != genesis {
            breaks.push(Break {
                finding: finding(
                    &o.path,
                    56,
                    format!(
                        "audit chain broken: the first segment's chain_start holds {}, but the genesis hash of the \
                         log is {}; history differs from position {} on",
                        hex(&o.chain_start),
                        hex(&genesis),
                        o.base
                    ),
                ),
                affects: 0,
            });
        }
    }
    // Where reading the log stopped first (damage, a missing segment).
    let mut damaged_at: Option<u64> = outs
        .first()
        .filter(|o| o.base != 0 && retained != Some(o.base))
        .map(|_| 0);
    let mut expect_next: Option<u64> = None;
    let mut links = 0;
    for (i, o) in outs.iter().enumerate() {
        if damaged_at.is_none() && (expect_next.is_some_and(|n| n != o.base) || o.format.is_none()) {
            damaged_at = Some(expect_next.unwrap_or(o.base));
        }
        if i > 0
            && let Some(prev) = outs.get(i - 1)
            && prev.complete
            && let Some((_, seal)) = prev.seal_chain
            && o.format.is_some()
            && o.chain_start != seal
        {
            breaks.push(Break {
                finding: finding(
                    &o.path,
                    56,
                    format!(
                        "audit chain broken: the segment's chain_start holds {}, but the previous segment's seal \
                         holds {}; history differs from position {} on",
                        hex(&o.chain_start),
                        hex(&seal),
                        o.base
                    ),
                ),
                affects: o.base.saturating_add(1),
            });
        }
        breaks.extend(o.breaks.iter().cloned());
        links += o.links;
        if damaged_at.is_none() && !o.complete {
            damaged_at = Some(o.next_position);
        }
        expect_next = Some(o.next_position);
    }
    (breaks, damaged_at, links)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::chain::Anchor;
    use crate::check::files::list_segments;
    use crate::check::{CheckOptions, CheckReport, check};
    use crate::format::frame::walk_segment;
    use crate::format::names::segment_file_name;
    use crate::format::{FRAME_HEADER_LEN, FRAME_KIND_BATCH, SEGMENT_HEADER_LEN, SegmentHeader};
    use crate::writer::{Log, Options};
    use crate::{EventData, ExpectedVersion};
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Format version 2: the edits below use its byte layout (every frame
    /// stores its chain slot; version 3 is covered by `tests/format_v3.rs`).
    fn opts() -> Options {
        Options::default().segment_size(8 * 1024).format_version(2)
    }

    /// Append `n` batches of 2 events; returns the anchor after each batch.
    fn append(log: &Log, n: usize) -> Vec<Anchor> {
        (0..n)
            .map(|i| {
                let p = vec![b'x'; 100 + i % 40];
                log.append(
                    &format!("s-{}", i % 5),
                    ExpectedVersion::Any,
                    &[EventData::new("A", p.clone()), EventData::new("B", p)],
                )
                .unwrap();
                log.anchor().unwrap()
            })
            .collect()
    }

    fn segs(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|b| dir.join(segment_file_name(b)))
            .collect()
    }

    /// File offsets of the batch frames of a segment file.
    fn batch_offsets(bytes: &[u8]) -> Vec<(usize, crate::format::frame::Frame)> {
        let header = *SegmentHeader::parse(bytes).unwrap();
        let start = bytes.as_ptr() as usize;
        let mut v = Vec::new();
        walk_segment(bytes, &header, false, |frame, f| {
            v.push((frame.as_ptr() as usize - start, *f))
        });
        v
    }

    /// Change a payload byte of the first record of the frame at `off`, and
    /// fix that record's CRC, so that only the chain can tell.
    fn edit_record(bytes: &mut [u8], off: usize) {
        let rec = off + FRAME_HEADER_LEN;
        let len = u32::from_le_bytes(bytes[rec..rec + 4].try_into().unwrap()) as usize;
        // The payload ends the record body (before padding); flip a byte well
        // inside it.
        let at = rec + len - 20;
        bytes[at] ^= 0x20;
        let crc = crc32fast::hash(&bytes[rec + 8..rec + len]);
        bytes[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Recompute every chain value of the log (as a forger without a key
    /// would for an unkeyed log), fixing header and frame CRCs.
    fn rechain(dir: &Path) {
        let mut prev = None;
        for p in segs(dir) {
            let mut b = fs::read(&p).unwrap();
            let h = *SegmentHeader::parse(&b).unwrap();
            let c = Chainer::new(None);
            let start = prev.unwrap_or_else(|| c.genesis(&h.log_id));
            b[56..88].copy_from_slice(&start);
            let crc = crc32fast::hash(&b[..124]);
            b[124..128].copy_from_slice(&crc.to_le_bytes());
            let mut chain = start;
            let mut off = SEGMENT_HEADER_LEN;
            while off + FRAME_HEADER_LEN <= b.len() {
                let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap()) as usize;
                if b[off + 28] == FRAME_KIND_BATCH {
                    chain = c.link(&chain, &b[off..off + len]);
                }
                b[off + 40..off + 72].copy_from_slice(&chain);
                let crc = crc32fast::hash(&b[off + 8..off + 72]);
                b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
                off += len;
            }
            fs::write(&p, &b).unwrap();
            prev = Some(chain);
        }
    }

    fn run(dir: &Path, o: CheckOptions) -> CheckReport {
        check(dir, o).unwrap()
    }

    #[test]
    fn a_clean_chain_verifies_and_anchors_hold() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        let genesis = log.anchor().unwrap();
        let anchors = append(&log, 60);
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), log.anchor());
        log.close().unwrap();
        assert!(segs(dir.path()).len() >= 3, "several segments");
        assert_eq!(genesis.position, 0);
        let mut o = CheckOptions::default().anchor(genesis);
        for a in anchors.iter().step_by(7) {
            o = o.anchor(*a);
        }
        let r = run(dir.path(), o);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(
            r.chain,
            ChainStatus::Verified {
                keyed: false,
                batches: 60,
                broken: 0
            }
        );
        assert_eq!(r.anchors.len(), 10);
        assert!(r.anchors.iter().all(|v| v.ok), "{:?}", r.anchors);
    }

    #[test]
    fn an_edited_batch_is_one_finding_with_file_offset_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        let anchors = append(&log, 60);
        log.close().unwrap();
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, f) = batch_offsets(&b)[2];
        edit_record(&mut b, off);
        fs::write(&seg, &b).unwrap();

        let before = anchors.iter().rfind(|a| a.position <= f.first_position).unwrap();
        let after = anchors.iter().find(|a| a.position > f.first_position).unwrap();
        let r = run(dir.path(), CheckOptions::default().anchor(*before).anchor(*after));
        let chain: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.detail.starts_with("audit chain"))
            .collect();
        assert_eq!(chain.len(), 1, "{:?}", r.problems);
        assert_eq!(chain[0].file, seg);
        assert_eq!(chain[0].offset, off as u64 + 40);
        let pos = f.first_position;
        assert!(
            chain[0]
                .detail
                .contains(&format!("history differs from position {pos} on")),
            "{}",
            chain[0].detail
        );
        assert!(r.anchors[0].ok, "{:?}", r.anchors[0]);
        assert!(!r.anchors[1].ok);
        assert!(
            r.anchors[1].detail.contains("broken before the anchor"),
            "{}",
            r.anchors[1].detail
        );
        assert!(
            matches!(r.chain, ChainStatus::Verified { broken: 1, .. }),
            "{:?}",
            r.chain
        );
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_anchors_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        let anchors = append(&log, 60);
        log.close().unwrap();
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, f) = batch_offsets(&b)[1];
        edit_record(&mut b, off);
        fs::write(&seg, &b).unwrap();
        rechain(dir.path());
        // The indexes name their segment's seal CRC: the forger rebuilds them.
        for e in fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "idx") {
                fs::remove_file(p).unwrap();
            }
        }
        Log::open_with(dir.path(), opts()).unwrap().close().unwrap();
        // Self-consistent: no finding without anchors.
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);

        let before = anchors.iter().rfind(|a| a.position <= f.first_position).unwrap();
        let after = anchors.iter().find(|a| a.position > f.first_position).unwrap();
        let last = anchors.last().unwrap();
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(*last).anchor(*before).anchor(*after),
        );
        assert!(!r.is_ok());
        assert!(
            !r.anchors[0].ok && r.anchors[1].ok && !r.anchors[2].ok,
            "{:?}",
            r.anchors
        );
        let d = &r.anchors[2].detail;
        assert!(d.contains("it was rewritten"), "{d}");
        assert!(
            d.contains(&format!("between positions {} and {}", before.position, after.position)),
            "{d}"
        );
    }

    #[test]
    fn anchors_past_the_end_or_inside_a_batch_fail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        let anchors = append(&log, 5);
        log.close().unwrap();
        let end = anchors.last().unwrap();
        let past = Anchor {
            position: end.position + 2,
            hash: end.hash,
        };
        let inside = Anchor {
            position: end.position - 1,
            hash: end.hash,
        };
        let wrong = Anchor {
            position: end.position,
            hash: [7; 32],
        };
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(past).anchor(inside).anchor(wrong),
        );
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.anchors[0]
                .detail
                .contains("the log ends at position 10, before the anchor at position 12")
        );
        assert!(
            r.anchors[1].detail.contains("not a batch boundary"),
            "{}",
            r.anchors[1].detail
        );
        assert!(
            r.anchors[2].detail.contains("it was rewritten"),
            "{}",
            r.anchors[2].detail
        );
    }

    #[test]
    fn keyed_chains_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainKey::from_bytes([3; 32]);
        let log = Log::open_with(dir.path(), opts().chain_key(key.clone())).unwrap();
        let anchors = append(&log, 30);
        log.close().unwrap();
        let a = *anchors.last().unwrap();

        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.detail.starts_with("keyed audit chain not verified: no key given"))
        );
        assert!(matches!(r.chain, ChainStatus::NotVerified { keyed: true, .. }));

        let r = run(dir.path(), CheckOptions::default().key(key).anchor(a));
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(matches!(
            r.chain,
            ChainStatus::Verified {
                keyed: true,
                batches: 30,
                broken: 0
            }
        ));

        let r = run(dir.path(), CheckOptions::default().key(ChainKey::from_bytes([4; 32])));
        assert!(
            r.problems
                .iter()
                .any(|p| p.detail.starts_with("the key given is not the log's chain key"))
        );

        // An unkeyed rewrite of a keyed log's segment breaks a join.
        let seg = segs(dir.path())[1].clone();
        let mut b = fs::read(&seg).unwrap();
        b[56] ^= 1;
        let crc = crc32fast::hash(&b[..124]);
        b[124..128].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &b).unwrap();
        let r = run(dir.path(), CheckOptions::default());
        let p = r
            .problems
            .iter()
            .find(|p| p.detail.contains("previous segment's seal"))
            .unwrap();
        assert_eq!((p.file.clone(), p.offset), (seg, 56));
    }

    #[test]
    fn logs_without_the_chain_must_have_zero_slots() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts().chain(false)).unwrap();
        assert_eq!(log.anchor(), None);
        append_plain(&log);
        log.close().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), None);
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.chain, ChainStatus::Absent);

        let a = Anchor {
            position: 2,
            hash: [0; 32],
        };
        let r = run(
            dir.path(),
            CheckOptions::default().anchor(a).key(ChainKey::from_bytes([1; 32])),
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(!r.anchors[0].ok);

        let seg = segs(dir.path())[0].clone();
        let mut b = fs::read(&seg).unwrap();
        let (off, _) = batch_offsets(&b)[0];
        b[off + 50] = 1;
        let crc = crc32fast::hash(&b[off + 8..off + 72]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &b).unwrap();
        let r = run(dir.path(), CheckOptions::default());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].offset, off as u64 + 40);
    }

    #[test]
    fn v1_logs_have_no_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts().format_version(1)).unwrap();
        append_plain(&log);
        log.close().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), None);
        let r = run(dir.path(), CheckOptions::default());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.chain, ChainStatus::Absent);
    }

    fn append_plain(log: &Log) {
        for _ in 0..3 {
            log.append("s", ExpectedVersion::Any, &[EventData::new("A", b"x".as_slice())])
                .unwrap();
        }
    }

    #[test]
    fn head_anchor_of_an_empty_log_is_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), opts()).unwrap();
        let g = log.anchor().unwrap();
        assert_eq!(crate::head_anchor(dir.path()).unwrap(), Some(g));
        let r = run(dir.path(), CheckOptions::default().anchor(g));
        assert!(r.is_ok() && r.anchors[0].ok, "{:?} {:?}", r.problems, r.anchors);
        log.close().unwrap();
    }
}
