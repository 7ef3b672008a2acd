//! Index hits checked against what they point to, shared by the
//! index-served reads (`query`, `stream`): reading the batch an entry points
//! at, validating it before any of its records is used, and switching to the
//! index rebuilt from the segment when a hit does not match.
//!
//! Invariants: index files are hints; nothing read through them is returned
//! before the batch it comes from is validated (CRCs included), and a hit
//! that does not match its record is damage of the index file (reported and
//! rebuilt), or, for an index built from the segment, of the segment.

use crate::error::{Damage, Result, corrupt};
use crate::format::batch::peek_head;
use crate::format::frame::{parse_header, validate_frame_each};
use crate::format::record::{RecordRef, parse_record};
use crate::format::{FRAME_HEADER_LEN, FRAME_KIND_BATCH};
use crate::index::Index;
use crate::read::logview::{LogView, ViewSegment};

impl LogView {
    /// The position in `segments` of the segment based at `base`.
    pub(super) fn segment_at(&self, base: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&base, |s| s.base).ok()
    }

    /// The segment holding `position`, if any.
    pub(super) fn segment_of(&self, position: u64) -> usize {
        self.segments.partition_point(|s| s.base <= position).saturating_sub(1)
    }
}

/// An iterator's answer for one step: an error or the end ends it for good.
pub(super) fn fused<T>(done: &mut bool, step: Result<Option<T>>) -> Option<Result<T>> {
    match step {
        Ok(Some(r)) => Some(Ok(r)),
        Ok(None) => {
            *done = true;
            None
        }
        Err(e) => {
            *done = true;
            Some(Err(e))
        }
    }
}

/// The stream name and first stream version of the batch at `off` of `seg`
/// (the first record, parsed with its CRC checked), or `None` past the
/// visible end. Used to check an index hit before using it.
pub(super) fn batch_head(seg: &ViewSegment, off: u64) -> Result<Option<(&[u8], u64)>> {
    let bytes = seg.bytes()?;
    let Some(rest) = bytes.get(offset_plus(off, 0)..).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let h = parse_header(rest, off, &seg.layout).map_err(|d| d.at(&*seg.path))?;
    if h.kind != FRAME_KIND_BATCH {
        return Ok(Some((&[], u64::MAX)));
    }
    if seg.layout.compact() {
        // Version 3: the stream and first version lead the body. They are
        // compared with the index before the batch is validated; nothing of
        // the batch is returned before `load_batch` validates it whole (its
        // body CRC), and bytes that do not even parse are damage now.
        let body = rest
            .get(h.header_len as usize..)
            .and_then(|b| b.get(..(h.len as usize).saturating_sub(h.header_len as usize)));
        if let Some(head) = body.and_then(peek_head) {
            return Ok(Some(head));
        }
        let d = validate_frame_each(rest, off, true, &seg.layout, |_, _| {})
            .err()
            .unwrap_or_else(|| Damage::corrupt(off, "expected a batch whose stream name and version parse"));
        return Err(d.at(&*seg.path));
    }
    let rec = rest.get(FRAME_HEADER_LEN..).unwrap_or_default();
    let (rec, _) = parse_record(rec, true)
        .map_err(|(o, d)| Damage::corrupt(off.saturating_add((FRAME_HEADER_LEN + o) as u64), d).at(&*seg.path))?;
    Ok(Some((rec.stream_bytes(), rec.stream_version())))
}

/// Validate the batch at `off` of `seg` and push its records accepted by
/// `keep` onto `buf` in the order they are to be popped (`rev`: reversed
/// position order is popped last-first, i.e. newest first). `Ok(false)` if the
/// batch lies past the visible end of the segment.
pub(super) fn load_batch<'a>(
    seg: &'a ViewSegment,
    off: u64,
    buf: &mut Vec<RecordRef<'a>>,
    newest_first: bool,
    keep: impl Fn(&RecordRef<'a>) -> bool,
) -> Result<bool> {
    let bytes: &'a [u8] = seg.bytes()?;
    let Some(rest) = usize::try_from(off)
        .ok()
        .and_then(|o| bytes.get(o..))
        .filter(|r| !r.is_empty())
    else {
        return Ok(false);
    };
    let start = buf.len();
    let checked = validate_frame_each(rest, off, true, &seg.layout, |_, r| {
        if keep(&r) {
            buf.push(r);
        }
    });
    if let Err(d) = checked {
        // Never return part of a batch that is not complete.
        buf.truncate(start);
        return Err(d.at(&*seg.path));
    }
    if !newest_first {
        buf[start..].reverse();
    }
    Ok(true)
}

/// An index hit that does not match the record it points to (`detail`): if
/// the index in use is a file, the mismatch is reported as damage of that file
/// ([`LogView::index_damage`]) and the index rebuilt from the segment is
/// returned, with `f` run on it; an index built from the segment itself
/// cannot disagree with it, so there it is corruption of the segment.
pub(super) fn mismatch<T>(
    seg: &ViewSegment,
    index: &Index,
    detail: String,
    f: impl Fn(&Index) -> Result<T, Damage>,
) -> Result<(Index, T)> {
    if index.is_from_files() {
        seg.repinned(Damage::corrupt(0, detail), f)
    } else {
        Err(corrupt(&seg.path, 0, detail))
    }
}

/// `off + k` as an index into a mapping, saturating: offsets come from index
/// files (hints), so `off` may be anything; a saturated index finds nothing.
pub(super) fn offset_plus(off: u64, k: usize) -> usize {
    usize::try_from(off).unwrap_or(usize::MAX).saturating_add(k)
}
