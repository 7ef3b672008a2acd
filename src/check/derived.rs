//! Derived files (index files, the stream table) against the bytes rebuilt
//! from the segments: rebuilding the table, finding the first byte that
//! differs, and wording the finding.
//!
//! Invariants: a finding names the first byte that differs from the rebuilt
//! file (leaving out what the segments alone cannot tell: an index's back
//! pointers); only the checked region of a block file is compared.

use std::collections::HashMap;
use std::path::Path;

use super::files::u64_at;
use super::report::{Finding, finding};
use crate::error::Damage;
use std::mem::offset_of;

use crate::format::{IDX_HEADER_LEN, IdxHeader, idx_lens};
use crate::index::streamtable::{self, TableEntry};
use crate::index::{NO_SEGMENT, Prev};

/// The stream table rebuilt from `entries`.
pub(super) fn encode_table(entries: &HashMap<Box<str>, TableEntry>, next: u64, mask: u64) -> Vec<u8> {
    let mut rows: Vec<(u64, &[u8], TableEntry)> = entries
        .iter()
        .map(|(n, e)| (crate::format::hash::stream_hash(n.as_bytes()) & mask, n.as_bytes(), *e))
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    streamtable::encode(rows.into_iter(), next, mask)
}

/// A back pointer, in words.
pub(super) fn prev_text(p: Prev) -> String {
    if p.segment == NO_SEGMENT {
        "no earlier segment".into()
    } else {
        format!("segment {} row {}", p.segment, p.row)
    }
}

/// The first byte at which an index file differs from the one rebuilt from
/// its segment, leaving out the back pointers of its `stream_rows` stream
/// rows (`prev_segment`, `prev_row`: bytes `[40, 52)` of a version 1 row,
/// `[36, 48)` of a version 2 row, the version being the rebuilt file's),
/// which the segment alone cannot tell. Also used for the stream table with
/// no rows to leave out.
///
/// Only the checked region is compared (spec 16): the block CRC table and
/// the footer depend on the back pointers too, and their own checks name the
/// field that fails.
pub(super) fn first_difference(expected: &[u8], found: &[u8], stream_rows: usize) -> Option<usize> {
    let version = expected
        .get(offset_of!(IdxHeader, index_version)..)
        .and_then(|b| b.get(..2))
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let lens = idx_lens(version);
    let rows = IDX_HEADER_LEN..IDX_HEADER_LEN + stream_rows * lens.stream_row;
    let (bp_from, bp_to) = lens.back_pointer;
    let back_pointer =
        |i: usize| rows.contains(&i) && (bp_from..bp_to).contains(&((i - IDX_HEADER_LEN) % lens.stream_row));
    let checked = expected
        .len()
        .checked_sub(crate::format::blockfile::FOOTER_LEN)
        .and_then(|f| u64_at(expected, f))
        .and_then(|t| usize::try_from(t).ok())
        .unwrap_or(0)
        .min(expected.len());
    expected[..checked]
        .iter()
        .zip(found)
        .enumerate()
        .position(|(i, (a, b))| a != b && !back_pointer(i))
}

/// A derived file's damage `d` (a failed block CRC, a header field),
/// named at the first byte `at` that differs from the rebuilt file.
pub(super) fn exact_finding(path: &Path, d: &Damage, at: usize, expected: &[u8], found: &[u8]) -> Finding {
    finding(
        path,
        at as u64,
        format!(
            "{}; the first byte that differs from the file rebuilt from the segments is here: expected {:#04x}, \
             found {:#04x}",
            d.detail(),
            expected.get(at).copied().unwrap_or(0),
            found.get(at).copied().unwrap_or(0)
        ),
    )
}

/// Compare a derived file with the bytes rebuilt from the segments; on a
/// difference, say where and (for the block region) whether the block's CRC
/// fails too.
///
/// `found` is the file's first bytes (at most one more than `expected`
/// holds), `found_len` its length.
pub(super) fn compare_derived(
    path: &Path,
    expected: &[u8],
    found: &[u8],
    found_len: u64,
    header_len: usize,
    row_len: usize,
) -> Option<Finding> {
    if expected == found && found_len == expected.len() as u64 {
        return None;
    }
    let at = expected.iter().zip(found).position(|(a, b)| a != b);
    let Some(at) = at else {
        return Some(finding(
            path,
            (expected.len() as u64).min(found_len),
            format!(
                "expected {} bytes (rebuilt from the segments), found {found_len} bytes",
                expected.len(),
            ),
        ));
    };
    let region = if at < header_len {
        "the header".to_owned()
    } else if found.len() >= blockfile_footer() && at >= found.len() - blockfile_footer() {
        "the footer".to_owned()
    } else {
        format!(
            "block {} (a row of {row_len} bytes at most starts near byte {})",
            at / crate::format::blockfile::BLOCK,
            at - (at - header_len) % row_len
        )
    };
    Some(finding(
        path,
        at as u64,
        format!(
            "the content differs from what the segments say, in {region}: expected byte {:#04x}, found {:#04x}",
            expected[at], found[at]
        ),
    ))
}

/// The length of a block file's footer.
const fn blockfile_footer() -> usize {
    crate::format::blockfile::FOOTER_LEN
}
