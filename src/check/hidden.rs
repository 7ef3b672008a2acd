//! What stream metadata hides (spec 3.7, format version 4): after the scan,
//! every stream with rules (the newest event of its metadata stream `$meta-S`,
//! read through a view of the log) is walked, and each of its events that the
//! rules hide is counted against the first rule that hides it, in the order
//! tombstone, deleted, truncate_before, max_count, max_age.
//!
//! Invariants: a hidden event is never a problem; it is reported in
//! [`CheckReport::hidden`]. A metadata event that does not decode is a
//! problem naming its segment file (the byte of its payload that fails, when
//! the payload is reached) and the event's position, with the error a
//! [`LogView`] returns for it. `max_age` is measured against the check's
//! clock ([`CheckOptions::now`], else the system's). In a log of a format
//! version before 4, nothing is hidden.

use std::collections::HashMap;
use std::path::Path;

use super::report::{CheckOptions, CheckReport, Hidden, HiddenBy, finding};
use crate::error::Error;
use crate::format::meta::{META_CATEGORY, StreamRules, is_system_stream, meta_target};
use crate::format::record::RecordRef;
use crate::read::view::{LogView, Reader};
use crate::types::Direction;

/// The rule that hides an event of version `v` and timestamp `t` of a stream
/// whose newest version is `last`, the first in the order of the spec's
/// list; `None`: visible.
fn hidden_by(r: &StreamRules, v: u64, t: u64, last: u64, now: u64) -> Option<HiddenBy> {
    if r.tombstone {
        return Some(HiddenBy::Tombstone);
    }
    if let Some(tb) = r.truncate_before
        && v < tb
    {
        return Some(if r.deleted {
            HiddenBy::Deleted { truncate_before: tb }
        } else {
            HiddenBy::TruncateBefore { version: tb }
        });
    }
    if let Some(n) = r.max_count
        && v.saturating_add(n) <= last
    {
        return Some(HiddenBy::MaxCount { count: n });
    }
    if let Some(a) = r.max_age
        && t.checked_add(a).is_some_and(|s| s < now)
    {
        return Some(HiddenBy::MaxAge { nanos: a });
    }
    None
}

/// The problem for metadata event `r`, whose rules the view refused with `e`.
fn bad_metadata(view: &LogView, r: &RecordRef<'_>, e: Error, report: &mut CheckReport) {
    match e {
        Error::Corrupt { path, offset, detail } => {
            let within = StreamRules::decode(r.payload()).err().map_or(0, |(at, _)| at as u64);
            let offset = view.file_offset(r.payload()).map_or(offset, |(_, p)| p + within);
            report.problems.push(finding(&path, offset, detail));
        }
        e => report.problems.push(finding(
            view.segments.last().map_or(Path::new(""), |s| s.path.as_path()),
            0,
            format!(
                "the metadata event at position {} of {:?} could not be read: {e}",
                r.position(),
                r.stream()
            ),
        )),
    }
}

/// Add to `report` what the rules of every stream hide (and a problem for
/// each metadata event that does not decode).
pub(super) fn check_hidden(dir: &Path, opts: &CheckOptions, report: &mut CheckReport) {
    // Damage the scan found already stops the view: nothing to add then.
    let not_evaluated = |report: &mut CheckReport, e: Error| {
        if report.problems.is_empty() {
            report.warnings.push(finding(
                dir,
                0,
                format!("what stream metadata hides was not evaluated: {e}"),
            ));
        }
    };
    let view = match Reader::open(dir).and_then(|r| r.view()) {
        Ok(v) => v,
        Err(e) => return not_evaluated(report, e),
    };
    if !view.has_rules() {
        return;
    }
    // The newest decoded rules of each stream, and the position that set
    // them; a stream whose newest metadata event does not decode has none.
    let mut newest: HashMap<Box<str>, Option<(StreamRules, u64)>> = HashMap::new();
    for r in view.read_named_raw(META_CATEGORY) {
        let r = match r {
            Ok(r) => r,
            Err(e) => return not_evaluated(report, e),
        };
        let Some(target) = meta_target(r.stream()) else {
            continue;
        };
        let rules = match view.metadata_event_rules(&r) {
            Ok(rules) => Some((rules, r.position())),
            Err(e) => {
                bad_metadata(&view, &r, e, report);
                None
            }
        };
        newest.insert(target.into(), rules);
    }
    // The check's clock ([`CheckOptions::now`], else the system's).
    let now = opts.now.unwrap_or_else(|| view.now());
    let mut streams: Vec<(Box<str>, StreamRules, u64)> = newest
        .into_iter()
        .filter(|(s, _)| !is_system_stream(s))
        .filter_map(|(s, r)| r.map(|(rules, at)| (s, rules, at)))
        .collect();
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    for (stream, rules, set_at) in streams {
        match hidden_in(&view, &stream, &rules, set_at, now) {
            Ok(h) => report.hidden.extend(h),
            Err(e) => {
                if report.problems.is_empty() {
                    report.warnings.push(finding(
                        dir,
                        0,
                        format!("what the metadata of stream {stream:?} hides was not evaluated: {e}"),
                    ));
                }
            }
        }
    }
}

/// What `rules` (set at position `set_at`) hide of `stream`, one entry per
/// rule that hides something, in the order of [`HiddenBy`].
fn hidden_in(
    view: &LogView,
    stream: &str,
    rules: &StreamRules,
    set_at: u64,
    now: u64,
) -> crate::error::Result<Vec<Hidden>> {
    let Some(last) = view.raw_stream_version(stream)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Hidden> = Vec::new();
    for r in view.read_stream_raw(stream, 0, Direction::Forward, u64::MAX) {
        let r = r?;
        let Some(by) = hidden_by(rules, r.stream_version(), r.timestamp(), last, now) else {
            continue;
        };
        let p = r.position();
        match out.iter_mut().find(|h| h.rule == by) {
            Some(h) => {
                h.events += 1;
                h.last_position = p;
            }
            None => out.push(Hidden {
                stream: stream.to_owned(),
                rule: by,
                events: 1,
                first_position: p,
                last_position: p,
                set_at,
            }),
        }
    }
    out.sort_by_key(|h| h.rule.rank());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rule_in_order_names_the_event() {
        let r = StreamRules {
            deleted: true,
            truncate_before: Some(5),
            max_count: Some(2),
            max_age: Some(10),
            ..StreamRules::default()
        };
        assert_eq!(
            hidden_by(&r, 1, 0, 9, 100),
            Some(HiddenBy::Deleted { truncate_before: 5 })
        );
        assert_eq!(hidden_by(&r, 6, 0, 9, 100), Some(HiddenBy::MaxCount { count: 2 }));
        assert_eq!(hidden_by(&r, 8, 0, 9, 100), Some(HiddenBy::MaxAge { nanos: 10 }));
        assert_eq!(hidden_by(&r, 8, 90, 9, 100), None);
        assert_eq!(hidden_by(&r, 8, u64::MAX, 9, 100), None);
        let t = StreamRules { tombstone: true, ..r };
        assert_eq!(hidden_by(&t, 9, 99, 9, 100), Some(HiddenBy::Tombstone));
        let tb = StreamRules { deleted: false, ..r };
        assert_eq!(
            hidden_by(&tb, 4, 99, 9, 100),
            Some(HiddenBy::TruncateBefore { version: 5 })
        );
    }
}
