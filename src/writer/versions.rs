//! A stream's current version, where an expected version is decided: the
//! active index, then segments sealed but not yet in the stream table, then
//! the stream table, which is only a hint (spec 18): a hit counts once the
//! segments confirm it; otherwise the version comes from the segments, the
//! table (or index) is rebuilt, and a warning is kept.

use std::sync::atomic::Ordering;

use crate::error::{Damage, Result};
use crate::format::frame::{frame_records, validate_frame};
use crate::format::names::segment_file_name;
use crate::index::streamtable::{STREAM_TABLE_FILE, TableEntry};
use crate::read::view::ViewSegment;

use super::lock;
use super::state::{Inner, State, read_index};

impl Inner {
    /// The current version of `stream`: the active index, then segments sealed
    /// but not yet in the stream table, then the table (or, if the table is
    /// damaged, the sealed segments' indexes).
    pub(super) fn current_version(&self, st: &State, stream: &str) -> Result<Option<u64>> {
        if let Some(s) = read_index(&st.index).streams.get(stream) {
            return Ok(Some(s.last_version));
        }
        // Index checkpoints (spec 17.5) of the active segment, then of the
        // segments sealed but not yet in the table: hints, confirmed by
        // the segment.
        if st.layered.is_some()
            && let Some(v) = self.confirmed_version(&self.active_view_segment()?, stream)?
        {
            return Ok(Some(v));
        }
        for (base, m, layered) in st.unpersisted.iter().rev() {
            if let Some(s) = read_index(m).streams.get(stream) {
                return Ok(Some(s.last_version));
            }
            if layered.is_some() {
                let seg = lock(&self.published).sealed.iter().find(|s| s.base == *base).cloned();
                if let Some(seg) = seg
                    && let Some(v) = self.confirmed_version(&seg, stream)?
                {
                    return Ok(Some(v));
                }
            }
        }
        let sealed_now = || lock(&self.published).sealed.clone();
        if let Some(t) = &st.table {
            match t.lookup(stream) {
                Ok(None) => return Ok(None),
                // A hint: used only if the segments confirm it.
                Ok(Some(e)) if table_hit_holds(&sealed_now(), stream, e)? => return Ok(Some(e.last_version)),
                Ok(Some(e)) => {
                    self.warn(format!(
                        "{}: the stream table says stream {stream:?} is at version {} (segment {}), but the segments \
                         do not confirm it; the version was taken from the segments and the table is rebuilt",
                        self.dir.join(STREAM_TABLE_FILE).display(),
                        e.last_version,
                        segment_file_name(e.at.segment)
                    ));
                    self.table_damaged.store(true, Ordering::Release);
                }
                Err(d) => {
                    self.warn(format!(
                        "{}: the stream table is damaged at byte {} ({}); stream {stream:?}'s version was taken from \
                         the segments and the table is rebuilt",
                        self.dir.join(STREAM_TABLE_FILE).display(),
                        d.offset,
                        d.detail()
                    ));
                    self.table_damaged.store(true, Ordering::Release);
                }
            }
        }
        let sealed = sealed_now();
        for seg in sealed.iter().rev() {
            if let Some(v) = self.confirmed_version(seg, stream)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The newest version of `stream` in `seg`, by its index, confirmed by
    /// the segment's records; an index that does not hold is rebuilt from
    /// the segment (reported, and a damaged index file rewritten by the
    /// leader).
    fn confirmed_version(&self, seg: &ViewSegment, stream: &str) -> Result<Option<u64>> {
        let Some(i) = seg.find_stream(stream)? else {
            return Ok(None);
        };
        if last_version_holds(seg, stream, i.last_version)? {
            return Ok(Some(i.last_version));
        }
        let detail = format!(
            "the index says stream {stream:?} ends at version {} here, but the segment's records do not",
            i.last_version
        );
        self.warn(format!("{}: {detail}; the index is rebuilt", seg.path.display()));
        let idx = seg.index.damaged(&seg.path, seg.bytes()?, Damage::corrupt(0, detail))?;
        Ok(idx
            .find_stream(stream)
            .map_err(|d| d.at(&*seg.path))?
            .map(|i| i.last_version))
    }
}

/// Whether the stream table's entry `e` for `stream` is confirmed by the
/// segments (spec 18: the table is a hint): the segment it names holds the
/// stream's records up to exactly `e.last_version`, and no later sealed
/// segment holds the stream. Costs one index lookup per sealed segment after
/// the one named, and one frame's CRC.
fn table_hit_holds(sealed: &[ViewSegment], stream: &str, e: TableEntry) -> Result<bool> {
    let Ok(i) = sealed.binary_search_by_key(&e.at.segment, |s| s.base) else {
        return Ok(false);
    };
    if !last_version_holds(&sealed[i], stream, e.last_version)? {
        return Ok(false);
    }
    for later in &sealed[i + 1..] {
        if later.find_stream(stream)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `seg` holds `stream`'s records up to exactly `last_version`: its
/// index lists the stream with that last version, and the last frame the
/// index gives for the stream is intact (CRC) and holds a record of the
/// stream at `last_version` and none at a later version.
fn last_version_holds(seg: &ViewSegment, stream: &str, last_version: u64) -> Result<bool> {
    let found = seg.with_index(|i| {
        let Some(info) = i.find_stream(stream)? else {
            return Ok(None);
        };
        let Some(last) = info.entry_count.checked_sub(1) else {
            return Ok(None);
        };
        Ok(i.stream_entry(stream, &info, last)?
            .map(|(_, off)| (info.last_version, off)))
    })?;
    let Some((indexed, frame_offset)) = found else {
        return Ok(false);
    };
    if indexed != last_version {
        return Ok(false);
    }
    let bytes = seg.bytes()?;
    let Some(rest) = usize::try_from(frame_offset).ok().and_then(|o| bytes.get(o..)) else {
        return Ok(false);
    };
    let Ok(frame) = validate_frame(rest, frame_offset, true, &seg.layout) else {
        return Ok(false);
    };
    let Some(frame_bytes) = usize::try_from(frame.len).ok().and_then(|l| rest.get(..l)) else {
        return Ok(false);
    };
    let mut seen = false;
    for r in frame_records(frame_bytes, &seg.layout) {
        if r.stream() == stream {
            match r.stream_version().cmp(&last_version) {
                std::cmp::Ordering::Equal => seen = true,
                std::cmp::Ordering::Greater => return Ok(false),
                std::cmp::Ordering::Less => {}
            }
        }
    }
    Ok(seen)
}
