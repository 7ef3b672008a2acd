//! Segment indexes and the stream table (spec sections 16 to 18): the layer
//! between the format's bytes and the readers.
//!
//! * [`MemIndex`] (`mem.rs`): a segment's index in memory, built as batches
//!   are appended (the active segment) or by scanning a segment
//!   ([`IndexBuilder`]); `encode.rs` writes it as an `.idx` file.
//! * [`IdxFile`] (`idxfile.rs`): a sealed segment's `.idx` file, decoded from
//!   bytes and searched in place, every block checked on first use
//!   ([`blockfile`]).
//! * [`IndexCell`] and [`Index`] (`cell.rs`): a segment's index as readers
//!   see it, opened lazily and rebuilt from the segment if its file is
//!   missing or damaged, so reads stay correct.
//! * [`Layered`] (`layered.rs`): an active segment's index checkpoints
//!   (spec 17.5) and the in-memory index of the batches after them, as one
//!   index.
//! * [`streamtable`]: `annal.streams`, every stream's newest sealed version.
//!
//! Every decoder here works on bytes (`AsRef<[u8]>`); the path-based openers
//! only open and map the file first. Invariants: entries of a stream are in
//! version order, category, event type and frame entries in position order
//! (= offset order within a segment); a stream row's `prev` names the newest
//! earlier segment holding the stream; an I/O failure is never reported as
//! damage.

pub(crate) mod blockfile;
mod cell;
pub(crate) mod checkpoint;
mod encode;
mod idxfile;
mod layered;
mod mem;
pub(crate) mod streamtable;

pub(crate) use cell::{Index, IndexCell};
pub(crate) use idxfile::{IdxFile, seal_crc};
pub(crate) use layered::Layered;
pub(crate) use mem::{IndexBuilder, MemIndex, MemStream, NamedLists};

/// No earlier segment.
pub(crate) const NO_SEGMENT: u64 = u64::MAX;
/// No row (or not known).
pub(crate) const NO_ROW: u32 = u32::MAX;

/// Where a stream's previous events are: the newest earlier segment holding
/// it, and its row in that segment's index (`NO_ROW` if not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prev {
    pub segment: u64,
    pub row: u32,
}

impl Prev {
    pub const NONE: Prev = Prev {
        segment: NO_SEGMENT,
        row: NO_ROW,
    };
}

/// `(name, row, last_version)` of a stream row, for the stream table.
pub(crate) type StreamRowSummary = (Box<str>, u32, u64);

/// Which named section of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    Category,
    Type,
}

/// A stream's row in a segment index, as the reader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub row: u32,
    pub first_version: u64,
    pub last_version: u64,
    pub entry_start: u32,
    pub entry_count: u32,
    /// `None`: not known.
    pub prev: Option<Prev>,
}

/// The first `i` in `[0, count)` whose row hash (`hash_at(i)`) is at least
/// `target` (`count` if none), for rows sorted by hash whose hashes lie in
/// `[0, mask]`. Stream, category and event type hashes are close to
/// uniform there, so a few interpolation probes narrow the range to a few
/// rows before a binary search finishes: a lookup in a cold file reads two
/// or three pages of rows, where a binary search reads about `log2(count /
/// rows per page)`. The bounds are those of a binary search on the sorted
/// hashes, so the result is right whatever the hashes' distribution (a
/// file's rows are hints: their order is checked where they are used).
/// Bytes of rows asked for either side of a search's first guess
/// ([`prefetch_guess`]): more than three standard deviations of where a row
/// lies among 100,000 rows of 48 bytes with evenly spread hashes.
const GUESS_SPAN: usize = 24 << 10;

/// Ask the kernel for the rows of `bf` (`count` rows of `row_len` bytes at
/// `rows_at`, sorted by masked hash) around the one a search for `hash`
/// probes first ([`lower_bound_by_hash`]), so that a cold search finds them
/// read or on their way. A hint: nothing is read or checked.
pub(crate) fn prefetch_guess(
    bf: &blockfile::BlockFile,
    rows_at: usize,
    row_len: usize,
    count: u64,
    hash: u64,
    mask: u64,
) {
    if count == 0 {
        return;
    }
    let guess = u128::from(hash & mask) * u128::from(count) / (u128::from(mask) + 1);
    let guess = usize::try_from(guess)
        .unwrap_or(usize::MAX)
        .min(usize::try_from(count - 1).unwrap_or(usize::MAX));
    let at = rows_at.saturating_add(guess.saturating_mul(row_len));
    let from = at.saturating_sub(GUESS_SPAN).max(rows_at);
    bf.prefetch(from, at.saturating_add(GUESS_SPAN) - from);
}

pub(crate) fn lower_bound_by_hash<E>(
    count: u64,
    target: u64,
    mask: u64,
    hash_at: impl Fn(u64) -> Result<u64, E>,
) -> Result<u64, E> {
    let (mut lo, mut hi) = (0u64, count);
    // Every row in [lo, hi) has a hash in [hash_lo, hash_hi).
    let (mut hash_lo, mut hash_hi) = (0u128, u128::from(mask) + 1);
    for _ in 0..3 {
        if hi - lo <= 16 {
            break;
        }
        let t = u128::from(target).clamp(hash_lo, hash_hi.saturating_sub(1).max(hash_lo));
        let span = (hash_hi - hash_lo).max(1);
        let offset = (t - hash_lo) * u128::from(hi - lo) / span;
        let guess = lo.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX)).min(hi - 1);
        let h = hash_at(guess)?;
        if h < target {
            lo = guess + 1;
            hash_lo = hash_lo.max(u128::from(h));
        } else {
            hi = guess;
            hash_hi = hash_hi.min(u128::from(h) + 1);
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if hash_at(mid)? < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::lower_bound_by_hash;

    /// The same answer as a binary search, for uniform, clustered, equal and
    /// narrow-mask hashes.
    #[test]
    fn lower_bound_by_hash_agrees_with_a_binary_search() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sets: Vec<(Vec<u64>, u64)> = vec![
            ((0..5000).map(|_| next()).collect(), u64::MAX),
            ((0..5000).map(|_| next() >> 60).collect(), u64::MAX),
            ((0..5000).map(|_| next() & 0xF).collect(), 0xF),
            (vec![7; 300], u64::MAX),
            (vec![], u64::MAX),
            ((0..100).map(|i| u64::MAX - i).collect(), u64::MAX),
        ];
        for (mut v, mask) in sets {
            v.sort_unstable();
            let mut targets: Vec<u64> = v.iter().copied().take(200).collect();
            targets.extend([0, 1, u64::MAX, u64::MAX / 2, 8, 16]);
            targets.extend((0..200).map(|_| next() & mask));
            for t in targets {
                let want = v.partition_point(|&h| h < t) as u64;
                let got = lower_bound_by_hash::<()>(v.len() as u64, t, mask, |i| Ok(v[i as usize])).unwrap();
                assert_eq!(got, want, "target {t:#x} in {} hashes", v.len());
            }
        }
    }
}
