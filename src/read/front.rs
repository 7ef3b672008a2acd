//! The log's start (spec 3.9): position 0, or, after log retention removed
//! segments from the front, the first segment left, which the newest
//! retention record (an event of `$retention`) must account for.
//!
//! Invariant: a view whose first segment does not start at 0 is used only
//! if a retention record in it says the segments before were removed (its
//! `removed_before` at least the first segment's base); otherwise the first
//! segment is missing, and that is [`Error::Corrupt`] naming the file that
//! should hold position 0, as it was before retention existed.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::names::segment_file_name;
use crate::format::retention::{RETENTION_STREAM, RetentionRecord};
use crate::read::logview::LogView;
use crate::types::Direction;

/// The newest retention record of `view` and its position, if any; a
/// record that does not decode is [`Error::Corrupt`] naming its position.
pub(crate) fn newest_retention(view: &LogView) -> Result<Option<(u64, RetentionRecord)>> {
    let Some(r) = view
        .read_stream_raw(RETENTION_STREAM, u64::MAX, Direction::Backward, 1)
        .next()
        .transpose()?
    else {
        return Ok(None);
    };
    match RetentionRecord::decode(r.payload()) {
        Ok(rec) => Ok(Some((r.position(), rec))),
        Err((at, why)) => Err(Error::Corrupt {
            path: view.segments[view.segment_of(r.position())].path.to_path_buf(),
            offset: 0,
            detail: format!(
                "the retention record at position {} does not decode (spec 3.9): payload byte {at}: {why}",
                r.position()
            ),
        }),
    }
}

/// Check that `view` (of the log in `dir`) starts at position 0 or where a
/// retention record says it does.
pub(crate) fn check_front(view: &LogView, dir: &Path) -> Result<()> {
    let Some(first) = view.segments.first().map(|s| s.base).filter(|&b| b > 0) else {
        return Ok(());
    };
    if newest_retention(view)?.is_some_and(|(_, r)| r.removed_before >= first) {
        return Ok(());
    }
    Err(missing_front(dir, first))
}

/// The error of a log in `dir` whose first segment, based at `first`, does
/// not start at 0 and that no retention record accounts for.
pub(crate) fn missing_front(dir: &Path, first: u64) -> Error {
    Error::Corrupt {
        path: dir.join(segment_file_name(0)),
        offset: 0,
        detail: format!(
            "expected the log's first segment {} (position 0), found none: the first segment present is {}, and no \
             retention record (spec 3.9) says the segments before it were removed (a segment file is missing)",
            segment_file_name(0),
            segment_file_name(first)
        ),
    }
}
