//! Log retention as `check` sees it (spec 3.9): a log whose first segment
//! does not start at position 0 must be accounted for by a retention
//! record (an event of `$retention`, read through a view of the log) whose
//! `removed_before` is at least that base; each record that names a segment
//! still in the log must state that segment's `chain_start`.
//!
//! Invariants: a missing front that a record accounts for is not damage
//! (reported in [`CheckReport::retention`]); one that no record accounts
//! for is one problem, at the first segment's `base_position`; a gap after
//! the first segment stays the sequential pass's problem. Anchors below the
//! accounted start are superseded, never "rewritten" (see `anchors`).

use std::path::Path;

use super::outcome::SegOut;
use super::report::{CheckReport, Retained, finding};
use crate::audit::chain::hex;
use crate::format::SEGMENT_BASE_POSITION_OFFSET;
use crate::format::retention::{RETENTION_STREAM, RetentionRecord};
use crate::read::view::Reader;
use crate::types::Direction;

/// What the log says about its front.
pub(super) struct Facts {
    /// The first segment's base.
    pub(super) first_base: u64,
    /// The retention records, `(position, record or why it does not decode)`.
    records: Vec<(u64, Result<RetentionRecord, String>)>,
    /// Why the records could not be read, if they could not.
    unread: Option<String>,
}

impl Facts {
    /// The newest record that decodes, with its position.
    fn newest(&self) -> Option<(u64, &RetentionRecord)> {
        self.records
            .iter()
            .rev()
            .find_map(|(p, r)| r.as_ref().ok().map(|r| (*p, r)))
    }

    /// The accounted start: the first segment's base and the position of the
    /// record that accounts for it, if one does (the base is above 0).
    pub(super) fn accounted(&self) -> Option<(u64, u64)> {
        if self.first_base == 0 {
            return None;
        }
        let (at, r) = self.newest()?;
        (r.removed_before >= self.first_base).then_some((self.first_base, at))
    }
}

/// Read the retention records of the log in `dir` (format version 4 only;
/// `with_records` false: none are looked for).
pub(super) fn facts(dir: &Path, outs: &[SegOut], with_records: bool) -> Facts {
    let first_base = outs.first().map_or(0, |o| o.base);
    let mut f = Facts {
        first_base,
        records: Vec::new(),
        unread: None,
    };
    if !with_records {
        return f;
    }
    let view = match Reader::open(dir).and_then(|r| r.view()) {
        Ok(v) => v,
        Err(e) => {
            f.unread = Some(e.to_string());
            return f;
        }
    };
    for r in view.read_stream_raw(RETENTION_STREAM, 0, Direction::Forward, u64::MAX) {
        match r {
            Ok(r) => f.records.push((
                r.position(),
                RetentionRecord::decode(r.payload()).map_err(|(at, why)| format!("payload byte {at}: {why}")),
            )),
            Err(e) => {
                f.unread = Some(e.to_string());
                break;
            }
        }
    }
    f
}

/// The segment holding `position`.
fn holder(outs: &[SegOut], position: u64) -> Option<&SegOut> {
    outs.iter().rfind(|o| o.base <= position)
}

/// Report what the log's front and its retention records say.
pub(super) fn check_retention(f: &Facts, outs: &[SegOut], chained: bool, report: &mut CheckReport) {
    let Some(first) = outs.first() else { return };
    for (p, r) in &f.records {
        if let Err(why) = r
            && let Some(o) = holder(outs, *p)
        {
            report.problems.push(finding(
                &o.path,
                0,
                format!("the retention record at position {p} does not decode (spec 3.9): {why}"),
            ));
        }
    }
    for (p, r) in f.records.iter().filter_map(|(p, r)| r.as_ref().ok().map(|r| (*p, r))) {
        if r.removed_before < f.first_base {
            continue;
        }
        let Some(o) = outs.iter().find(|o| o.base == r.removed_before) else {
            if let Some(h) = holder(outs, p) {
                report.problems.push(finding(
                    &h.path,
                    0,
                    format!(
                        "the retention record at position {p} says the log starts at position {}, but no segment \
                         starts there",
                        r.removed_before
                    ),
                ));
            }
            continue;
        };
        if chained && o.format.is_some() && o.chain_start != r.chain_at {
            report.problems.push(finding(
                &o.path,
                56,
                format!(
                    "the retention record at position {p} says the chain hash at position {} is {}, but the \
                     segment's chain_start holds {}: history differs from position {} on",
                    r.removed_before,
                    hex(&r.chain_at),
                    hex(&o.chain_start),
                    r.removed_before
                ),
            ));
        }
    }
    if let Some((at, r)) = f.newest()
        && r.removed_before > f.first_base
    {
        report.warnings.push(finding(
            &first.path,
            0,
            format!(
                "the retention record at position {at} removes the segments before position {}, but the log still \
                 starts at {}: a removal was interrupted; the next writer open (with a retention rule, when the log still \
                 starts at 0) or `annal retain` finishes it",
                r.removed_before, f.first_base
            ),
        ));
    }
    if f.first_base == 0 {
        return;
    }
    match (f.accounted(), f.newest(), &f.unread) {
        (Some((start, at)), Some((_, r)), _) => {
            report.retention = Some(Retained {
                first_position: start,
                record_position: at,
                removed_before: r.removed_before,
                rule: r.rule().to_owned(),
            });
        }
        (_, _, Some(why)) => report.problems.push(finding(
            &first.path,
            SEGMENT_BASE_POSITION_OFFSET as u64,
            format!(
                "the log starts at position {}: the segments before it are missing, and the retention records \
                 that could account for them could not be read ({why})",
                f.first_base
            ),
        )),
        _ => report.problems.push(finding(
            &first.path,
            SEGMENT_BASE_POSITION_OFFSET as u64,
            format!(
                "the log starts at position {}: the segments before it are missing, and no retention record \
                 (spec 3.9) accounts for them",
                f.first_base
            ),
        )),
    }
}
