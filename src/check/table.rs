//! The stream table (spec 18): read once, before the segments are listed,
//! then compared byte for byte with the table rebuilt from the sealed
//! segments it covers.
//!
//! Invariants: the file decoded and the file compared are the same inode
//! (a table replaced between the two opens is read again); no more of it is
//! read than the rebuilt table and one byte; a missing table is a warning (a
//! crash before its first write leaves none), a damaged one a problem that
//! repair removes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::derived::{compare_derived, encode_table, exact_finding, first_difference};
use super::files::{Opened, hash_mask_of, open_checked, read_prefix, still_names, u64_at};
use super::outcome::SegOut;
use super::report::{CheckReport, Finding, damage_finding, finding};
use crate::error::{Damage, Result};
use crate::format::names::index_file_name;
use crate::format::{IDX_HEADER_LEN, STB_HEADER_LEN, STB_ROW_LEN};
use crate::index::streamtable::{STREAM_TABLE_FILE, StreamTable, TableEntry};

/// The stream table as read before the segments are listed.
pub(super) enum TableRead {
    /// No stream table.
    Missing,
    /// Not a regular file (described).
    NotRegular(String),
    /// Damaged: what failed, and the open file (to name the first byte that
    /// differs from the rebuilt table) if it is a regular file.
    Damaged(Damage, Option<(fs::File, u64)>),
    /// Valid blocks and header; the open file (read again, bounded, for the
    /// byte comparison: the same inode as the one decoded) and its length.
    Valid(StreamTable, fs::File, u64),
}

/// Read the stream table once, consistently: the file decoded and the file
/// compared later are the same inode, even if a writer replaces the table
/// meanwhile (then the read is retried).
pub(super) fn read_table(dir: &Path) -> Result<TableRead> {
    let path = dir.join(STREAM_TABLE_FILE);
    let mut tries = 0;
    loop {
        tries += 1;
        let (f, len) = match open_checked(&path)? {
            Opened::Missing => return Ok(TableRead::Missing),
            Opened::NotRegular(d) => return Ok(TableRead::NotRegular(d)),
            Opened::File(f, len) => (f, len),
        };
        let decoded = StreamTable::open(&path);
        if !still_names(&path, &f) && tries < 5 {
            // Replaced by a writer between the two opens: read it again.
            continue;
        }
        return Ok(match decoded {
            Ok(Some(t)) => TableRead::Valid(t, f, len),
            Ok(None) => TableRead::Missing,
            // An operating-system failure (EMFILE, ENOMEM) says nothing about
            // the file's bytes: an error of the check, never a finding.
            Err(d) if d.is_io() => return Err(d.at(&path)),
            Err(d) => TableRead::Damaged(d, Some((f, len))),
        });
    }
}

/// The table's `next_segment` as read: a valid table's, or a damaged one's
/// if it names a segment (the table is then rebuilt with it, to name the
/// first byte that differs).
pub(super) fn table_next(dir: &Path, read: &TableRead, bases: &[u64]) -> Option<u64> {
    match read {
        TableRead::Valid(t, _, _) => Some(t.next_segment()),
        // A damaged table's next_segment, as it reads: the table is rebuilt
        // with it to name the first byte that differs.
        TableRead::Damaged(_, Some((f, _))) => read_prefix(f, &dir.join(STREAM_TABLE_FILE), STB_HEADER_LEN as u64)
            .ok()
            .and_then(|b| u64_at(&b, crate::format::STB_NEXT_SEGMENT_OFFSET))
            .filter(|n| bases.contains(n)),
        _ => None,
    }
}

/// What the stream table is compared with, from the sequential pass.
pub(super) struct TableExpect<'a> {
    pub(super) dir: &'a Path,
    pub(super) bases: &'a [u64],
    pub(super) outs: &'a [SegOut],
    pub(super) writer_active: bool,
    /// Some segment is sealed and complete (a table is due).
    pub(super) any_sealed: bool,
    /// The table's `next_segment` as read ([`table_next`]).
    pub(super) next: Option<u64>,
    /// The rows the table must hold, if they can be told (not past a
    /// damaged segment it covers).
    pub(super) entries: Option<HashMap<Box<str>, TableEntry>>,
}

/// Check the stream table as read; a damaged one is added to `remove`.
pub(super) fn check_table(
    t: &TableExpect<'_>,
    read: TableRead,
    report: &mut CheckReport,
    remove: &mut Vec<(PathBuf, &'static str)>,
) -> Result<()> {
    let table_path = t.dir.join(STREAM_TABLE_FILE);
    match read {
        TableRead::Missing if t.any_sealed => {
            let f = finding(
                &table_path,
                0,
                "the stream table is missing; the next writer open (or annal check --repair) rebuilds it",
            );
            // The table is written for the first time after the first
            // sealed segment's index (by the sealer thread, or by the open
            // that recovers a log without one, after every missing index):
            // a crash before that write leaves no table, whatever indexes
            // exist. Once written it is only ever replaced by a rename. So a
            // missing table is a state a crash can leave, and it holds no
            // event: a warning.
            report.warnings.push(f);
        }
        TableRead::Missing => {}
        TableRead::NotRegular(d) => {
            report.problems.push(finding(&table_path, 0, d));
        }
        TableRead::Damaged(d, file) => {
            let f = t.damaged(&table_path, &d, file.as_ref().map(|(f, _)| f))?;
            report.problems.push(f);
            remove.push((table_path.clone(), "a damaged stream table"));
        }
        TableRead::Valid(table, file, len) => {
            report.files += 1;
            report.bytes += len;
            t.valid(&table_path, &table, &file, len, report, remove)?;
        }
    }
    Ok(())
}

impl TableExpect<'_> {
    /// A table that does not decode (`d`): the finding, at the first byte
    /// that differs from the rebuilt table if that can be told.
    fn damaged(&self, table_path: &Path, d: &Damage, file: Option<&fs::File>) -> Result<Finding> {
        let mut f = damage_finding(table_path, d);
        if let (Some(file), Some(entries), Some(next)) = (file, &self.entries, self.next) {
            // The log's hash mask from an index file (the table's own may
            // be the damaged byte).
            let mask = self
                .bases
                .iter()
                .find_map(|&b| {
                    let p = self.dir.join(index_file_name(b));
                    match open_checked(&p) {
                        Ok(Opened::File(f, _)) => read_prefix(&f, &p, IDX_HEADER_LEN as u64)
                            .ok()
                            .and_then(|h| u64_at(&h, crate::format::IDX_HASH_MASK_OFFSET)),
                        _ => None,
                    }
                })
                .unwrap_or_else(|| hash_mask_of(self.dir));
            let expected = encode_table(entries, next, mask);
            let found = read_prefix(file, table_path, expected.len() as u64 + 1)?;
            if let Some(at) = first_difference(&expected, &found, 0) {
                f = exact_finding(table_path, d, at, &expected, &found);
            }
        }
        Ok(f)
    }

    /// A table that decodes: its `next_segment`, its bytes against the
    /// rebuilt table, and whether it is behind the segments.
    fn valid(
        &self,
        table_path: &Path,
        t: &StreamTable,
        file: &fs::File,
        len: u64,
        report: &mut CheckReport,
        remove: &mut Vec<(PathBuf, &'static str)>,
    ) -> Result<()> {
        let outs = self.outs;
        let active_base = outs.last().map_or(0, |o| o.base);
        let next = t.next_segment();
        let head_bytes = read_prefix(file, table_path, STB_HEADER_LEN as u64)?;
        let mask = u64_at(&head_bytes, crate::format::STB_HASH_MASK_OFFSET).unwrap_or(u64::MAX);
        if !self.bases.contains(&next) && next != outs.last().map_or(0, |o| o.next_position) {
            report.problems.push(finding(
                table_path,
                16,
                format!("expected next_segment to be the base of a segment, found {next}"),
            ));
            remove.push((table_path.to_owned(), "a damaged stream table"));
        } else if let Some(entries) = &self.entries {
            let expected = encode_table(entries, next, mask);
            // No more than the rebuilt table and one byte: enough to
            // tell any difference, bounded by what the segments say.
            let bytes = read_prefix(file, table_path, expected.len() as u64 + 1)?;
            if let Some(f) = compare_derived(table_path, &expected, &bytes, len, STB_HEADER_LEN, STB_ROW_LEN) {
                report.problems.push(f);
                remove.push((table_path.to_owned(), "a damaged stream table"));
            }
            if next < active_base && !outs.last().is_some_and(|o| o.sealed) {
                let covered_sealed = outs.iter().any(|o| o.base >= next && o.base < active_base);
                if covered_sealed && !self.writer_active {
                    report.warnings.push(finding(
                        table_path,
                        16,
                        format!(
                            "the stream table covers segments below {next} only; the next writer open \
                             brings it up to date"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
