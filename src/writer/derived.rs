//! Derived files (spec 1, 17, 18): index files of sealed segments and the
//! stream table, written atomically (temp file, fsync, rename, directory
//! fsync), rebuilt from the segments when missing or damaged.
//!
//! Invariant: a derived file is never the only record of anything; the
//! segments are the truth and every derived file can be rebuilt from them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, corrupt};
use crate::format::hash::stream_hash;
use crate::index::streamtable::{self, STREAM_TABLE_FILE, StreamTable, TableEntry};
use crate::index::{self, MemIndex, Prev};
use crate::read::view::ViewSegment;
use crate::storage::io::Io;

use super::results::Recovery;

pub(crate) use crate::format::names::index_file_name;
pub(crate) use crate::storage::io::write_derived;

/// The newest segment before the one being indexed that holds `name`, and
/// its row there: from the stream table, or, if the table is damaged, by
/// searching the earlier segments' indexes.
pub(crate) fn resolve_prev(table: Option<&StreamTable>, earlier: &[ViewSegment], name: &str) -> Prev {
    let search = |segs: &[ViewSegment]| {
        for seg in segs.iter().rev() {
            if let Ok(Some(i)) = seg.find_stream(name) {
                return Some(Prev {
                    segment: seg.base,
                    row: i.row,
                });
            }
        }
        None
    };
    let Some(t) = table else {
        return search(earlier).unwrap_or(Prev::NONE);
    };
    // Segments the table does not cover are searched first (newest first).
    let covered = earlier.partition_point(|s| s.base < t.next_segment());
    if let Some(p) = search(&earlier[covered..]) {
        return p;
    }
    let below = earlier.last().map_or(0, |s| s.base + 1);
    match t.lookup(name) {
        Ok(None) => Prev::NONE,
        // The table may cover segments after the one being indexed.
        Ok(Some(e)) if e.at.segment < below => e.at,
        _ => search(&earlier[..covered]).unwrap_or(Prev::NONE),
    }
}

/// Build a stream table covering `sealed` (all sealed segments, in order)
/// from their indexes: the repair path, `O(segments × streams)`.
pub(crate) fn rebuild_table(sealed: &[ViewSegment], next_segment: u64, hash_mask: u64) -> Result<Vec<u8>> {
    let mut latest: HashMap<Box<str>, TableEntry> = HashMap::new();
    for seg in sealed {
        let idx = seg.index.get(seg.bytes()?)?;
        for (name, row, last_version) in seg.stream_rows(&idx)? {
            latest.insert(
                name,
                TableEntry {
                    last_version,
                    at: Prev { segment: seg.base, row },
                },
            );
        }
    }
    let mut rows: Vec<(u64, &[u8], TableEntry)> = latest
        .iter()
        .map(|(n, e)| (stream_hash(n.as_bytes()) & hash_mask, n.as_bytes(), *e))
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    Ok(streamtable::encode(rows.into_iter(), next_segment, hash_mask))
}

/// Write the index of every sealed segment that has none (a crash between
/// sealing and indexing), spec 17.4. Existing indexes are not read.
pub(super) fn ensure_indexes(
    io: &dyn Io,
    dir: &Path,
    sealed: &[ViewSegment],
    mask: u64,
    report: &mut Recovery,
) -> Result<()> {
    for (i, seg) in sealed.iter().enumerate() {
        let idx_path = dir.join(index_file_name(seg.base));
        if idx_path.exists() {
            continue;
        }
        let bytes = seg.bytes()?;
        // Walked whole: read ahead, not page by page.
        seg.map.sequential();
        let mem = MemIndex::rebuild(bytes).map_err(|d| d.at(&*seg.path))?;
        let seal_crc = index::seal_crc(bytes).map_err(|d| d.at(&*seg.path))?;
        let earlier = &sealed[..i];
        let (idx, _) = mem.encode(
            seg.base,
            bytes.len() as u64,
            seal_crc,
            mask,
            &mut |name| resolve_prev(None, earlier, name),
            bytes,
        );
        write_derived(io, dir, &idx_path, &idx)?;
        crate::trace::event!(WARN, file = %idx_path.display(), why = "missing",
            "annal rewrote an index file from its segment");
        // The segment's cell may already hold an index rebuilt in memory
        // (recovery looked the segment up before this): switch it to the file,
        // so that the stream table built next records the file's rows.
        seg.index.retry_disk(bytes);
        report.rebuilt_indexes.push(idx_path);
    }
    Ok(())
}

/// Open the stream table, bringing it up to date with the sealed segments
/// (spec 18): merge the segments it does not cover, or rebuild it.
pub(super) fn ensure_table(
    io: &dyn Io,
    dir: &Path,
    sealed: &[ViewSegment],
    active_base: u64,
    mask: u64,
    report: &mut Recovery,
) -> Result<Option<Arc<StreamTable>>> {
    let path = dir.join(STREAM_TABLE_FILE);
    if sealed.is_empty() {
        return Ok(None);
    }
    let reopen = |path: &Path| -> Result<StreamTable> {
        StreamTable::open(path)
            .map_err(|d| d.at(path))?
            .ok_or_else(|| corrupt(path, 0, "the stream table just written is missing"))
    };
    let table = match StreamTable::open(&path) {
        Ok(Some(t)) if t.next_segment() == active_base => Some(t),
        Ok(Some(mut t)) if sealed.iter().any(|s| s.base == t.next_segment()) => {
            // Merge the segments sealed after the table was written.
            for (i, seg) in sealed.iter().enumerate() {
                if seg.base < t.next_segment() {
                    continue;
                }
                let next_segment = sealed.get(i + 1).map_or(active_base, |s| s.base);
                let rows = seg.stream_rows(&seg.index.get(seg.bytes()?)?)?;
                let bytes = match streamtable::merge(Some(&t), &rows, seg.base, next_segment, mask) {
                    Ok(b) => b,
                    Err(_) => rebuild_table(sealed, active_base, mask)?,
                };
                write_derived(io, dir, &path, &bytes)?;
                t = reopen(&path)?;
                if t.next_segment() == active_base {
                    break;
                }
            }
            report.rebuilt_stream_table = true;
            crate::trace::event!(INFO, file = %path.display(), why = "behind the sealed segments",
                "annal brought the stream table up to date");
            Some(t)
        }
        // An I/O failure is not damage: the table may be intact.
        Err(d) if d.is_io() => return Err(d.at(&path)),
        _ => None,
    };
    let table = match table {
        Some(t) => Some(t),
        None => {
            let b = rebuild_table(sealed, active_base, mask)?;
            write_derived(io, dir, &path, &b)?;
            crate::trace::event!(WARN, file = %path.display(), why = "missing or damaged",
                "annal rebuilt the stream table from the segments");
            report.rebuilt_stream_table = true;
            Some(reopen(&path)?)
        }
    };
    Ok(table.map(Arc::new))
}
