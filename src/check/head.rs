//! The head file (spec 5.2): its length, both slots, and which of its
//! failures are damage and which a crash while a slot was written leaves.
//!
//! Invariants: at most `HEAD_FILE_LEN + 1` bytes are read; a slot that fails
//! while the other is valid is a warning, neither valid is a problem (a
//! warning while a writer holds the log).

use std::path::Path;

use super::files::{Opened, open_checked, read_prefix};
use super::report::{CheckReport, damage_finding, finding};
use crate::error::Result;
use crate::format::{HEAD_FILE_LEN, HEAD_SLOT_LEN, HeadSlot};
use crate::storage::head::{self, HEAD_FILE, Head};

/// Check the head file (spec 5.2), every byte of it, and return its current
/// slot.
///
/// * Its length must be 128 (it is created whole and written in place): any
///   other length is a problem.
/// * A slot that fails its checks while the other slot is valid is a
///   **warning** naming the slot's failed field: a crash while the writer
///   wrote that slot leaves exactly this, and readers use the other one;
///   the next writer open rewrites the file. The one exception is slot 1 all
///   zero beside a slot 0 of sequence 1 (a head never written since it was
///   created), which is not reported.
/// * Neither slot valid is a **problem** (a crash tears at most the slot
///   being written), except while a writer holds the log (a warning: the
///   slot read may be the one being written).
pub(super) fn check_head(dir: &Path, writer_active: bool, report: &mut CheckReport) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    let (f, len) = match open_checked(&path)? {
        Opened::Missing => return Ok(None),
        Opened::NotRegular(d) => {
            report.problems.push(finding(&path, 0, d));
            return Ok(None);
        }
        Opened::File(f, len) => (f, len),
    };
    // One byte more than a head holds: enough to tell a longer file, never
    // more (a head may be a sparse file of any length).
    let bytes = read_prefix(&f, &path, HEAD_FILE_LEN as u64 + 1)?;
    report.files += 1;
    report.bytes += bytes.len().min(HEAD_FILE_LEN) as u64;
    if len != HEAD_FILE_LEN as u64 {
        report.problems.push(finding(
            &path,
            len.min(HEAD_FILE_LEN as u64),
            format!(
                "expected a {HEAD_FILE_LEN}-byte head file, found {len} bytes (the head is created whole and \
                 written in place: no crash changes its length)"
            ),
        ));
    }
    let bytes = &bytes[..bytes.len().min(HEAD_FILE_LEN)];
    let current = match head::decode(bytes) {
        Ok((current, _)) => current,
        Err(d) => {
            report.problems.push(damage_finding(&path, &d));
            return Ok(None);
        }
    };
    let mut invalid = Vec::new();
    for i in 0..2 {
        let at = i * HEAD_SLOT_LEN;
        let slot = bytes.get(at..(at + HEAD_SLOT_LEN).min(bytes.len())).unwrap_or(&[]);
        let Err(d) = HeadSlot::parse(slot, at as u64) else {
            continue;
        };
        let never_written = i == 1
            && slot.len() == HEAD_SLOT_LEN
            && slot.iter().all(|&b| b == 0)
            && current.is_some_and(|h| h.sequence == 1);
        if !never_written {
            invalid.push((i, d));
        }
    }
    for (i, d) in invalid {
        let f = if current.is_some() {
            finding(
                &path,
                d.offset,
                format!(
                    "head slot {i} is not valid ({}); the other slot is current, so nothing is lost: a crash while \
                     the writer wrote this slot leaves it so, and the next writer open rewrites the head",
                    d.detail()
                ),
            )
        } else {
            finding(
                &path,
                d.offset,
                format!(
                    "head slot {i} is not valid ({}), and neither is the other: a crash tears at most the slot being \
                     written, so this is damage; the durable boundary is taken from the frames alone, and the next \
                     writer open rewrites the head",
                    d.detail()
                ),
            )
        };
        if current.is_some() || writer_active {
            report.warnings.push(f);
        } else {
            report.problems.push(f);
        }
    }
    Ok(current)
}
