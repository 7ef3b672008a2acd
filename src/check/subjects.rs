//! The events that name a subject (spec 3.8, format version 4): after the
//! scan, every sealed record of the log (hidden ones included) is opened with
//! its key through a view, and the key file `annal.keys` (spec 22) is read in
//! full.
//!
//! Invariants: an erased event is never a problem; it is counted in
//! [`CheckReport::subjects`]. A sealed payload that does not open is a
//! problem naming its segment file and the payload's offset; a key id the key
//! file does not hold (keys lost) and a damaged key file are problems naming
//! `annal.keys`. A wrapped key file checked without its master key is a
//! warning: its keys were not verified, which is no damage.

use std::path::Path;

use super::report::{CheckOptions, CheckReport, SubjectSummary, finding};
use crate::error::Error;
use crate::format::subject_keys::KEYS_FILE;
use crate::read::view::Reader;

/// Add to `report` what the sealed records and the key file hold.
pub(super) fn check_subjects(dir: &Path, opts: &CheckOptions, report: &mut CheckReport) {
    let not_verified = |report: &mut CheckReport, e: Error| {
        report.warnings.push(finding(
            &dir.join(KEYS_FILE),
            0,
            format!("the events sealed for subjects were not verified: {e}"),
        ));
    };
    let mut reader = match Reader::open(dir) {
        Ok(r) => r,
        Err(e) => return not_verified(report, e),
    };
    if let Some(k) = &opts.master_key {
        reader.master_key(k.clone());
    }
    // Damage the scan found already stops the view: nothing to add then.
    let view = match reader.view() {
        Ok(v) => v,
        Err(e) if report.problems.is_empty() => return not_verified(report, e),
        Err(_) => return,
    };
    let mut sum = SubjectSummary::default();
    for r in view.read_all(0).unhidden() {
        let r = match r {
            Ok(r) => r,
            Err(e) if report.problems.is_empty() => return not_verified(report, e),
            Err(_) => return,
        };
        if !r.is_sealed() {
            continue;
        }
        match view.unseal(r) {
            Ok(u) if u.is_erased() => sum.erased += 1,
            Ok(_) => sum.sealed += 1,
            Err(e) => match keys_problem(e) {
                // The key file itself is damaged: said once, nothing more
                // opens.
                Ok((path, offset, detail)) if path.ends_with(KEYS_FILE) => {
                    return report.problems.push(finding(&path, offset, detail));
                }
                Ok((path, offset, detail)) => report.problems.push(finding(&path, offset, detail)),
                // The master key is missing or wrong: nothing more opens.
                Err(e) => return not_verified(report, e),
            },
        }
    }
    match view.keys().and_then(|k| k.load_summary()) {
        Ok((live, erased, torn)) => {
            sum.live_keys = live;
            sum.erased_keys = erased;
            if let Some(at) = torn {
                report.warnings.push(finding(
                    &dir.join(KEYS_FILE),
                    at,
                    "a torn tail of an append that never returned (no key in it was handed out); \
                     the next writer open cuts it"
                        .to_owned(),
                ));
            }
        }
        Err(e) => match keys_problem(e) {
            Ok((path, offset, detail)) => report.problems.push(finding(&path, offset, detail)),
            Err(e) => return not_verified(report, e),
        },
    }
    report.subjects = Some(sum);
}

/// The damage `e` names (file, offset, what), or `e` itself when it is no
/// damage (a master key missing or wrong, an I/O error).
fn keys_problem(e: Error) -> Result<(std::path::PathBuf, u64, String), Error> {
    match e {
        Error::Corrupt { path, offset, detail } => Ok((path, offset, detail)),
        e => Err(e),
    }
}
