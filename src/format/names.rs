//! File names of a log directory (spec section 1), in one place.
//!
//! Stream names never become file names (they are user input): every name a
//! log directory holds is one of these, derived from numbers annal chose.

/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record has position `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base position named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of the index file (`.idx`) of the segment based at `base`.
pub(crate) fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// Suffix of index checkpoint file names (spec 17.5).
pub const CHECKPOINT_SUFFIX: &str = ".ckpt";

/// The file name of the index checkpoint of bytes `[from, to)` of the
/// active segment based at `base` (spec 17.5).
pub(crate) fn checkpoint_file_name(base: u64, from: u64, to: u64) -> String {
    format!("{base:020}-{from:020}-{to:020}{CHECKPOINT_SUFFIX}")
}

/// `(base, from, to)` named by an index checkpoint file name, if it is one.
pub(crate) fn parse_checkpoint_file_name(name: &str) -> Option<(u64, u64, u64)> {
    let rest = name.strip_suffix(CHECKPOINT_SUFFIX)?;
    let mut parts = rest.split('-');
    let mut next = || -> Option<u64> {
        let d = parts.next()?;
        if d.len() != 20 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        d.parse().ok()
    };
    let (base, from, to) = (next()?, next()?, next()?);
    if parts.next().is_some() || from >= to {
        return None;
    }
    Some((base, from, to))
}

/// Suffix of a segment file retired by compaction (spec 3.10).
pub const RETIRED_SUFFIX: &str = ".retired";

/// The name of a hard link to the original of the segment based at `base`,
/// which compaction replaced at `at` (seconds since the Unix epoch): kept a
/// while for views that had not mapped it yet (spec 3.10).
pub(crate) fn retired_file_name(base: u64, at: u64) -> String {
    format!("{base:020}.{at:020}{RETIRED_SUFFIX}")
}

/// `(base, at)` named by a retired segment's file name, if it is one.
pub(crate) fn parse_retired_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_suffix(RETIRED_SUFFIX)?;
    let (base, at) = rest.split_once('.')?;
    let num = |d: &str| {
        (d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
            .then(|| d.parse().ok())
            .flatten()
    };
    Some((num(base)?, num(at)?))
}

/// File name of the head file.
pub const HEAD_FILE: &str = "annal.head";

/// File name of the lock file.
pub const LOCK_FILE: &str = "annal.lock";

/// File name of the stream table.
pub const STREAM_TABLE_FILE: &str = "annal.streams";

/// Folder of snapshot files, inside the log directory.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(81920), "00000000000000081920.seg");
        assert_eq!(parse_segment_file_name("00000000000000081920.seg"), Some(81920));
        assert_eq!(parse_segment_file_name("0000000000000008192.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000008192x.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000081920.idx"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
        let c = checkpoint_file_name(4096, 128, 65536);
        assert_eq!(c, "00000000000000004096-00000000000000000128-00000000000000065536.ckpt");
        assert_eq!(parse_checkpoint_file_name(&c), Some((4096, 128, 65536)));
        assert_eq!(
            parse_checkpoint_file_name("00000000000000004096-00000000000000000128.ckpt"),
            None
        );
        assert_eq!(
            parse_checkpoint_file_name("00000000000000004096-00000000000000065536-00000000000000000128.ckpt"),
            None
        );
        assert_eq!(
            parse_checkpoint_file_name("00000000000000004096-00000000000000000128-00000000000000065536-1.ckpt"),
            None
        );
    }
}
