//! The verdict on each anchor given ([`CheckOptions::anchor`]): whether the
//! log's history before the anchor's position is the one the anchor was
//! taken from, and if not, where it differs.
//!
//! Invariants: an anchor holds only if the chain was recomputed, the log is
//! readable up to its position, no link before it is broken, its position
//! is a batch boundary (or 0) and the chain hash there equals the anchor's.
//! Every anchor that does not hold is also one problem, but for one that
//! retention or compaction superseded (spec 3.9, 3.10); a rewrite is placed
//! between the latest anchor that holds and the earliest that does not. An
//! anchor at the end of a compacted segment is compared with its seal's
//! chain slot (the original segment's end, which its compaction record
//! states and the next segment joins), never with the rewritten batches.

use std::path::{Path, PathBuf};

use super::compaction::Accounted;
use super::outcome::{Break, SegOut};
#[cfg(doc)]
use super::report::CheckOptions;
use super::report::{AnchorVerdict, ChainStatus, CheckReport, Finding, finding};
use crate::audit::chain::{Anchor, ChainHash, Chainer, hex};

/// What the anchors are checked against: the segments' outcomes and the
/// chain across them.
pub(super) struct History<'a> {
    pub(super) outs: &'a [SegOut],
    /// The first segment whose header could be read.
    pub(super) first: &'a SegOut,
    /// The links were recomputed with this (`None`: not verified).
    pub(super) chainer: Option<&'a Chainer<'a>>,
    /// The broken links, in log order.
    pub(super) breaks: &'a [Break],
    /// The position where reading the log stopped first, if it did.
    pub(super) damaged_at: Option<u64>,
    /// The log's first position and the retention record that accounts for
    /// it, if log retention removed its front (spec 3.9).
    pub(super) retained: Option<(u64, u64)>,
    /// The compacted segments compaction records account for (spec 3.10).
    pub(super) compacted: &'a [Accounted],
}

/// One anchor's verdict, where to report it, and whether the history was
/// rewritten (self-consistent, yet not the anchor's).
struct Verdict {
    ok: bool,
    detail: String,
    file: PathBuf,
    offset: u64,
    rewritten: bool,
    /// Superseded by retention at this position (spec 3.9): not a problem.
    superseded: Option<u64>,
    /// Superseded by compaction, recorded at this position (spec 3.10): not
    /// a problem.
    compacted: Option<u64>,
}

impl Verdict {
    fn fail(detail: String, file: &Path, offset: u64) -> Verdict {
        Verdict {
            ok: false,
            detail,
            file: file.to_owned(),
            offset,
            rewritten: false,
            superseded: None,
            compacted: None,
        }
    }
}

/// Check each anchor, in the order given: the verdicts go to
/// `report.anchors`, each one that does not hold to `report.problems`.
pub(super) fn check_anchors(h: &History<'_>, anchors: &[Anchor], report: &mut CheckReport) {
    let mut verdicts: Vec<(AnchorVerdict, Finding, bool)> = Vec::new();
    for a in anchors {
        let v = h.verdict(a, &report.chain);
        let f = finding(&v.file, v.offset, format!("anchor {a}: {}", v.detail));
        verdicts.push((
            AnchorVerdict {
                anchor: *a,
                ok: v.ok,
                detail: v.detail,
                superseded_by_retention: v.superseded,
                superseded_by_compaction: v.compacted,
            },
            f,
            v.rewritten,
        ));
    }
    // A rewrite lies between the latest anchor that holds and the earliest
    // that does not.
    let holding: Vec<u64> = verdicts
        .iter()
        .filter(|v| v.0.ok)
        .map(|v| v.0.anchor.position)
        .collect();
    for (mut v, mut f, rewritten) in verdicts {
        let p = v.anchor.position;
        if rewritten && let Some(q) = holding.iter().copied().filter(|&q| q < p).max() {
            let more = format!(" (the anchor at position {q} holds: the rewrite is between positions {q} and {p})");
            f.detail.push_str(&more);
            v.detail.push_str(&more);
        }
        if !v.ok && !v.superseded() {
            report.problems.push(f);
        }
        report.anchors.push(v);
    }
}

impl History<'_> {
    /// The verdict on the anchor `a`; `chain` is the chain's status (why it
    /// was not verified, if it was not).
    fn verdict(&self, a: &Anchor, chain: &ChainStatus) -> Verdict {
        let (outs, first) = (self.outs, self.first);
        let p = a.position;
        if let Some((start, at)) = self.retained.filter(|r| p < r.0) {
            let o = outs.first().unwrap_or(first);
            return Verdict {
                superseded: Some(start),
                ..Verdict::fail(
                    format!(
                        "superseded by retention at {start}: the events before position {start} were removed by \
                         log retention (the retention record at position {at}); nothing before the anchor is left \
                         to verify"
                    ),
                    &o.path,
                    32,
                )
            };
        }
        if let Some(c) = self.compacted.iter().find(|c| c.base < p && p < c.next_base) {
            let at = c.record_position;
            return Verdict {
                compacted: Some(at),
                ..Verdict::fail(
                    format!(
                        "superseded by compaction at {at}: the segment of positions {} to {} was rewritten without \
                         events its streams' metadata hid (the compaction record at position {at} accounts for it), \
                         so the chain at position {p} can no longer be recomputed",
                        c.base, c.next_base
                    ),
                    &c.path,
                    c.seal_slot,
                )
            };
        }
        if let Some(d) = self.damaged_at.filter(|&d| d < p || d == 0) {
            let o = outs.iter().rfind(|o| o.base <= d).or(outs.first());
            let (file, off) = o.map_or((first.path.clone(), 0), |o| (o.path.clone(), 0));
            return Verdict::fail(
                format!(
                    "the log cannot be read past position {d} (see the problems above), before the anchor at \
                     position {p}: the history before it cannot be verified"
                ),
                &file,
                off,
            );
        }
        if let Some(b) = self.breaks.iter().find(|b| b.affects <= p) {
            return Verdict::fail(
                format!(
                    "the audit chain is broken before the anchor at position {p}: {}",
                    b.finding
                ),
                &b.finding.file,
                b.finding.offset,
            );
        }
        if let Some((stored, file, offset)) = self.stored_at(p) {
            return self.against_stored(a, stored, file, offset, chain);
        }
        let log_end = outs.last().map_or(0, |o| o.next_position);
        if p > log_end {
            let o = outs.last().unwrap_or(first);
            return Verdict::fail(
                format!(
                    "the log ends at position {log_end}, before the anchor at position {p}: events were removed, or \
                     the anchor is from another log"
                ),
                &o.path,
                o.bytes,
            );
        }
        if let Some((o, x)) = outs
            .iter()
            .find_map(|o| o.anchor_inside.iter().find(|x| x.0 == p).map(|x| (o, x)))
        {
            return Verdict::fail(
                format!(
                    "position {p} is not a batch boundary of the log: the batch of positions {}..{} spans it; the \
                     anchor is from another log, or the history was rewritten",
                    x.1, x.2
                ),
                &o.path,
                x.3,
            );
        }
        Verdict::fail(
            format!("position {p} is not a batch boundary of the log"),
            &first.path,
            0,
        )
    }

    /// The stored chain hash at position `p`, where it is stored (file and
    /// offset), if `p` is 0 or the end of a batch.
    fn stored_at(&self, p: u64) -> Option<(ChainHash, &Path, u64)> {
        if let Some(c) = self.compacted.iter().find(|c| c.next_base == p) {
            // The seal of a compacted segment keeps the original's end
            // (spec 3.10).
            return Some((c.seal_chain, c.path.as_path(), c.seal_slot));
        }
        if p == 0 || self.retained.is_some_and(|r| r.0 == p) {
            // The chain hash at the log's start: genesis at 0, or, after
            // retention, the first segment's chain_start (spec 3.9).
            self.outs
                .first()
                .filter(|o| o.base == p)
                .map(|o| (o.chain_start, o.path.as_path(), 56))
        } else {
            self.outs.iter().find_map(|o| {
                o.anchor_points
                    .iter()
                    .find(|x| x.0 == p)
                    .map(|x| (x.1, o.path.as_path(), x.2))
            })
        }
    }

    /// The anchor `a` against the chain hash `stored` at its position.
    fn against_stored(&self, a: &Anchor, stored: ChainHash, file: &Path, offset: u64, chain: &ChainStatus) -> Verdict {
        let p = a.position;
        let expected = match self.chainer {
            Some(c) if p == 0 => self.first.log_id.map(|id| c.genesis(&id)).unwrap_or(stored),
            _ => stored,
        };
        let verified = self.chainer.is_some();
        if expected == a.hash && verified {
            Verdict {
                ok: true,
                detail: format!("the history before position {p} is the one the anchor was taken from"),
                file: file.to_owned(),
                offset,
                rewritten: false,
                superseded: None,
                compacted: None,
            }
        } else if expected == a.hash {
            Verdict::fail(
                format!(
                    "not verified: the stored chain at position {p} equals the anchor, but the links cannot be \
                     recomputed ({})",
                    match chain {
                        ChainStatus::NotVerified { reason, .. } => reason.as_str(),
                        _ => "unknown",
                    }
                ),
                file,
                offset,
            )
        } else if verified {
            Verdict {
                rewritten: true,
                ..Verdict::fail(
                    format!(
                        "history before position {p} differs from the anchor, though the stored chain is \
                         self-consistent: it was rewritten"
                    ),
                    file,
                    offset,
                )
            }
        } else {
            Verdict::fail(
                format!(
                    "history before position {p} differs from the anchor: the chain stored there is {}",
                    hex(&stored)
                ),
                file,
                offset,
            )
        }
    }
}
