//! The stream table `annal.streams` (spec section 18): the newest version of
//! every stream in the sealed segments, and where its newest sealed events are.
//!
//! It is mapped and searched in place (binary search by hash, then the full
//! name), so opening a log costs nothing per stream, and it is rewritten
//! (temp file, rename) after each seal by merging the previous table with the
//! new segment's stream rows: a linear merge of two sorted lists.
//!
//! [`StreamTable::from_bytes`] decodes a table from any bytes (a `Vec` in
//! fuzzers and tests); [`StreamTable::open`] maps the file and calls it.
//!
//! Invariants of an opened table: its `stream_count` rows and `names_len`
//! bytes of names fill the checked region exactly (checked arithmetic on the
//! file's values); each row is checked when read (reserved fields zero, name
//! inside the name area, segment and version below `next_segment`).

use std::mem::offset_of;
use std::path::Path;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::Damage;
use crate::format::hash::stream_hash;
use crate::format::{ALIGN, STB_HEADER_LEN, STB_MAGIC, STB_ROW_LEN, STREAM_TABLE_VERSION, StbHeader, StbRow};
use crate::index::Prev;
use crate::index::blockfile::{self, BlockFile};
use crate::storage::mmap::Mapping;

pub use crate::format::names::STREAM_TABLE_FILE;

/// A stream table over its bytes `B` (a [`Mapping`] of the file unless said
/// otherwise).
#[derive(Debug)]
pub(crate) struct StreamTable<B: AsRef<[u8]> = Mapping> {
    bf: BlockFile<B>,
    next_segment: u64,
    mask: u64,
    count: u64,
    names_at: usize,
    names_len: u64,
}

/// One stream's entry: its newest version and newest sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableEntry {
    pub last_version: u64,
    pub at: Prev,
}

impl StreamTable {
    /// Ask the kernel for the rows a lookup of `name` probes first (see
    /// [`crate::index::prefetch_guess`]).
    pub(crate) fn prefetch_lookup(&self, name: &str) {
        let hash = stream_hash(name.as_bytes());
        crate::index::prefetch_guess(&self.bf, STB_HEADER_LEN, STB_ROW_LEN, self.count, hash, self.mask);
    }

    /// Open `path` (`Ok(None)` if it does not exist): map it and decode it
    /// with [`StreamTable::from_bytes`]. A failure to open or map the file is
    /// an I/O failure ([`Damage::is_io`]), not damage.
    pub(crate) fn open(path: &Path) -> Result<Option<StreamTable>, Damage> {
        match BlockFile::open_path(path, STB_MAGIC)? {
            Some(bf) => StreamTable::from_block_file(bf).map(Some),
            None => Ok(None),
        }
    }
}

impl<B: AsRef<[u8]>> StreamTable<B> {
    /// Decode the stream table `bytes` (the whole file): its footer and block
    /// table, then its header (spec 18).
    #[cfg_attr(
        not(any(test, feature = "fuzzing")),
        allow(
            dead_code,
            reason = "the decoder over plain bytes: fuzz targets and tests feed it directly"
        )
    )]
    pub(crate) fn from_bytes(bytes: B) -> Result<StreamTable<B>, Damage> {
        StreamTable::from_block_file(BlockFile::from_bytes(bytes, STB_MAGIC)?)
    }

    fn from_block_file(bf: BlockFile<B>) -> Result<StreamTable<B>, Damage> {
        let h = StbHeader::read_from_bytes(bf.get(0, STB_HEADER_LEN)?)
            .map_err(|_| Damage::corrupt(0, "stream table header is too short"))?;
        if h.magic != STB_MAGIC || h.table_version.get() != STREAM_TABLE_VERSION {
            return Err(Damage::corrupt(
                0,
                format!("expected stream table magic and version {STREAM_TABLE_VERSION}"),
            ));
        }
        if h.flags.get() != 0 || h.reserved0.get() != 0 || h.reserved1.iter().any(|&b| b != 0) {
            return Err(Damage::corrupt(
                offset_of!(StbHeader, flags) as u64,
                "expected stream table flags and reserved fields to be zero",
            ));
        }
        let count = h.stream_count.get();
        let names_len = h.names_len.get();
        // Every length here comes from the file: checked arithmetic
        // throughout (found by fuzzing: `next_multiple_of` overflowed, a
        // panic in debug builds, a wrapped length in release builds).
        let rows_end = count
            .checked_mul(STB_ROW_LEN as u64)
            .and_then(|r| r.checked_add(STB_HEADER_LEN as u64));
        let padded_end = rows_end
            .and_then(|r| r.checked_add(names_len))
            .and_then(|e| e.checked_next_multiple_of(ALIGN));
        let names_at = match (rows_end, padded_end) {
            (Some(r), Some(e)) if e == bf.len() as u64 => usize::try_from(r).ok(),
            _ => None,
        };
        let Some(names_at) = names_at else {
            return Err(Damage::corrupt(
                offset_of!(StbHeader, stream_count) as u64,
                format!(
                    "expected stream_count {count} rows of {STB_ROW_LEN} bytes and names_len {names_len} \
                     (padded to 8) to fill the {} bytes before the block table, they do not",
                    bf.len()
                ),
            ));
        };
        Ok(StreamTable {
            next_segment: h.next_segment.get(),
            mask: h.hash_mask.get(),
            count,
            names_at,
            names_len,
            bf,
        })
    }

    /// Base of the first segment the table does not cover.
    pub(crate) fn next_segment(&self) -> u64 {
        self.next_segment
    }

    fn row(&self, i: u64) -> Result<(StbRow, &[u8]), Damage> {
        let (r, at) = self.row_only(i)?;
        let name = self.row_name(&r, at)?;
        Ok((r, name))
    }

    /// Row `i` and its offset, checked, without its name (a search compares
    /// hashes first: reading the name of every row probed would read a
    /// page of the name area per probe).
    fn row_only(&self, i: u64) -> Result<(StbRow, usize), Damage> {
        // `i < count`, and `open` checked that `count` rows fit the file, so
        // none of this can overflow; it is checked all the same, so that a
        // wrong caller gets an error and not a wrapped offset.
        let at = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(STB_ROW_LEN))
            .and_then(|x| x.checked_add(STB_HEADER_LEN))
            .filter(|_| i < self.count)
            .ok_or_else(|| {
                Damage::corrupt(
                    offset_of!(StbHeader, stream_count) as u64,
                    format!("row {i} of a table of {} rows", self.count),
                )
            })?;
        let r = StbRow::read_from_bytes(self.bf.get(at, STB_ROW_LEN)?)
            .map_err(|_| Damage::corrupt(at as u64, "short stream table row"))?;
        if r.reserved0.get() != 0 || r.reserved1.get() != 0 {
            return Err(Damage::corrupt(
                (at + offset_of!(StbRow, reserved0)) as u64,
                "expected the row's reserved fields (at 14 and 36) to be zero",
            ));
        }
        // The row's segment is a covered one, so its base lies below
        // `next_segment` (spec 18); the stream's newest event lies in it, so
        // its position, which is at least its stream version (spec 11: both
        // contiguous from 0), does too. A row that says otherwise is damage:
        // a writer trusting it would wrap versions (issue 13 defect 21).
        let (segment, version) = (r.segment.get(), r.last_version.get());
        if segment >= self.next_segment || version >= self.next_segment {
            return Err(Damage::corrupt(
                (at + offset_of!(StbRow, last_version)) as u64,
                format!(
                    "expected the row's last_version and segment below next_segment {}, found {version} and {segment}",
                    self.next_segment
                ),
            ));
        }
        Ok((r, at))
    }

    /// The name of row `r`, found at offset `at`.
    fn row_name(&self, r: &StbRow, at: usize) -> Result<&[u8], Damage> {
        let (off, len) = (u64::from(r.name_offset.get()), u64::from(r.name_len.get()));
        // u32 + u16 cannot overflow a u64; the name area lies inside the
        // mapped file, so its offsets fit a usize.
        let name_at = (off + len <= self.names_len)
            .then(|| usize::try_from(off).ok()?.checked_add(self.names_at))
            .flatten()
            .ok_or_else(|| {
                Damage::corrupt(
                    (at + offset_of!(StbRow, name_offset)) as u64,
                    format!(
                        "expected the row's name ({len} bytes at {off}) inside the name area of {} bytes",
                        self.names_len
                    ),
                )
            })?;
        self.bf.get(name_at, usize::from(r.name_len.get()))
    }

    /// Look a stream up by name.
    pub(crate) fn lookup(&self, name: &str) -> Result<Option<TableEntry>, Damage> {
        let hash = stream_hash(name.as_bytes()) & self.mask;
        let mut lo =
            crate::index::lower_bound_by_hash(self.count, hash, self.mask, |i| Ok(self.row_only(i)?.0.hash.get()))?;
        while lo < self.count {
            let (r, at) = self.row_only(lo)?;
            if r.hash.get() != hash {
                break;
            }
            if self.row_name(&r, at)? == name.as_bytes() {
                return Ok(Some(TableEntry {
                    last_version: r.last_version.get(),
                    at: Prev {
                        segment: r.segment.get(),
                        row: r.row.get(),
                    },
                }));
            }
            lo += 1;
        }
        Ok(None)
    }

    /// Every row, in table order: `(hash, name, entry)`.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Result<(u64, &[u8], TableEntry), Damage>> + '_ {
        (0..self.count).map(|i| {
            let (r, n) = self.row(i)?;
            Ok((
                r.hash.get(),
                n,
                TableEntry {
                    last_version: r.last_version.get(),
                    at: Prev {
                        segment: r.segment.get(),
                        row: r.row.get(),
                    },
                },
            ))
        })
    }
}

/// Encode a table from rows sorted by `(hash, name)`.
pub(crate) fn encode<'a>(
    rows: impl ExactSizeIterator<Item = (u64, &'a [u8], TableEntry)>,
    next_segment: u64,
    hash_mask: u64,
) -> Vec<u8> {
    let count = rows.len();
    let mut body = vec![0u8; STB_HEADER_LEN];
    body.reserve(count * STB_ROW_LEN);
    let mut names = Vec::new();
    for (hash, name, e) in rows {
        let r = StbRow {
            hash: U64::new(hash),
            name_offset: U32::new(names.len() as u32),
            name_len: U16::new(name.len() as u16),
            reserved0: U16::ZERO,
            last_version: U64::new(e.last_version),
            segment: U64::new(e.at.segment),
            row: U32::new(e.at.row),
            reserved1: U32::ZERO,
        };
        body.extend_from_slice(r.as_bytes());
        names.extend_from_slice(name);
    }
    let h = StbHeader {
        magic: STB_MAGIC,
        table_version: U16::new(STREAM_TABLE_VERSION),
        flags: U16::ZERO,
        reserved0: U32::ZERO,
        next_segment: U64::new(next_segment),
        hash_mask: U64::new(hash_mask),
        stream_count: U64::new(count as u64),
        names_len: U64::new(names.len() as u64),
        reserved1: [0; 16],
    };
    body[..STB_HEADER_LEN].copy_from_slice(h.as_bytes());
    body.extend_from_slice(&names);
    body.resize(body.len().next_multiple_of(ALIGN as usize), 0);
    blockfile::finish(body, STB_MAGIC)
}

/// Merge `old` (if any) with the stream rows of the newly indexed segment
/// `segment` (`(name, row, last_version)`), newer entries winning, into a new
/// table covering segments below `next_segment`.
pub(crate) fn merge<B: AsRef<[u8]>>(
    old: Option<&StreamTable<B>>,
    new_rows: &[(Box<str>, u32, u64)],
    segment: u64,
    next_segment: u64,
    hash_mask: u64,
) -> Result<Vec<u8>, Damage> {
    let mut new: Vec<(u64, &[u8], TableEntry)> = new_rows
        .iter()
        .map(|(n, row, v)| {
            (
                stream_hash(n.as_bytes()) & hash_mask,
                n.as_bytes(),
                TableEntry {
                    last_version: *v,
                    at: Prev { segment, row: *row },
                },
            )
        })
        .collect();
    new.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut old_rows: Vec<(u64, &[u8], TableEntry)> = match old {
        Some(t) => t.rows().collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if old.is_some_and(|t| t.mask != hash_mask) {
        // Written with another hash mask: rehash, so one mask holds throughout.
        for r in &mut old_rows {
            r.0 = stream_hash(r.1) & hash_mask;
        }
        old_rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    }
    let mut out = Vec::with_capacity(old_rows.len() + new.len());
    let (mut i, mut j) = (0, 0);
    while i < old_rows.len() || j < new.len() {
        match (old_rows.get(i), new.get(j)) {
            (Some(a), Some(b)) => match (a.0, a.1).cmp(&(b.0, b.1)) {
                std::cmp::Ordering::Less => {
                    out.push(*a);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(*b);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push(*b);
                    i += 1;
                    j += 1;
                }
            },
            (Some(a), None) => {
                out.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                out.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(encode(out.into_iter(), next_segment, hash_mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u64, names_len: u64) -> StbHeader {
        StbHeader {
            magic: STB_MAGIC,
            table_version: U16::new(STREAM_TABLE_VERSION),
            flags: U16::ZERO,
            reserved0: U32::ZERO,
            next_segment: U64::new(100),
            hash_mask: U64::new(u64::MAX),
            stream_count: U64::new(count),
            names_len: U64::new(names_len),
            reserved1: [0; 16],
        }
    }

    /// Make `body` (padded to 8) a complete table file and decode it.
    fn open_body(mut body: Vec<u8>) -> Result<Option<StreamTable<Vec<u8>>>, Damage> {
        body.resize(body.len().next_multiple_of(8), 0);
        StreamTable::from_bytes(blockfile::finish(body, STB_MAGIC)).map(Some)
    }

    /// The path-based opener decodes the same file (and a missing file is
    /// `None`, not damage).
    #[test]
    fn open_maps_the_file_and_decodes_it() {
        let entry = TableEntry {
            last_version: 3,
            at: Prev { segment: 0, row: 1 },
        };
        let name: &[u8] = b"order-1";
        let bytes = encode([(stream_hash(name), name, entry)].into_iter(), 100, u64::MAX);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STREAM_TABLE_FILE);
        assert!(StreamTable::open(&path).unwrap().is_none());
        std::fs::write(&path, &bytes).unwrap();
        let t = StreamTable::open(&path).unwrap().unwrap();
        assert_eq!(t.lookup("order-1").unwrap(), Some(entry));
        assert_eq!(
            StreamTable::from_bytes(bytes).unwrap().lookup("order-1").unwrap(),
            Some(entry)
        );
    }

    /// Defect 17 (issue 13): the fuzzer's input, a valid 64-byte header whose
    /// `names_len` brings the end of the name area within 8 of `u64::MAX`, so
    /// that rounding it up to a multiple of 8 overflowed (`attempt to add
    /// with overflow` in `next_multiple_of`, reached through `open`).
    #[test]
    fn names_len_near_u64_max_is_damage_not_a_panic() {
        for names_len in [u64::MAX - 64, u64::MAX - 64 - 3, u64::MAX - 64 - 7, u64::MAX] {
            let e = open_body(header(0, names_len).as_bytes().to_vec()).unwrap_err();
            assert_eq!(e.offset, 32, "{names_len}");
            assert!(e.detail().contains("names_len"), "{e:?}");
        }
        // Row counts whose byte size overflows, alone or with the names.
        for (count, names_len) in [(u64::MAX, 0), (u64::MAX / 40, 64), ((u64::MAX - 64) / 40, 8)] {
            let e = open_body(header(count, names_len).as_bytes().to_vec()).unwrap_err();
            assert_eq!(e.offset, 32, "{count} {names_len}");
        }
    }

    #[test]
    fn a_name_outside_the_name_area_is_damage() {
        let entry = TableEntry {
            last_version: 3,
            at: Prev { segment: 0, row: 1 },
        };
        let name: &[u8] = b"order-1";
        let good = encode([(stream_hash(name), name, entry)].into_iter(), 100, u64::MAX);
        let body_len = good.len() - crate::format::blockfile::FOOTER_LEN - 4;
        let mut body = good[..body_len].to_vec();
        let t = open_body(body.clone()).unwrap().unwrap();
        assert_eq!(t.lookup("order-1").unwrap(), Some(entry));
        // name_offset u32::MAX, name_len u16::MAX: past an area of 8 bytes.
        body[STB_HEADER_LEN + 8..STB_HEADER_LEN + 14].copy_from_slice(&[0xff; 6]);
        let t = open_body(body).unwrap().unwrap();
        let e = t.lookup("order-1").unwrap_err();
        assert_eq!(e.offset, (STB_HEADER_LEN + 8) as u64);
        assert!(t.rows().next().unwrap().is_err());
    }

    /// A table with one row for `order-1`, its body (without block table and
    /// footer) and its `next_segment` 100.
    fn one_row(last_version: u64, segment: u64) -> Vec<u8> {
        let entry = TableEntry {
            last_version,
            at: Prev { segment, row: 0 },
        };
        let name: &[u8] = b"order-1";
        let t = encode([(stream_hash(name), name, entry)].into_iter(), 100, u64::MAX);
        t[..t.len() - crate::format::blockfile::FOOTER_LEN - 4].to_vec()
    }

    /// Issue 13 defect 21 at the parser: a row claiming a version (or a
    /// segment) that no covered segment can hold is damage, so that a writer
    /// falls back to the segments' indexes instead of wrapping versions.
    #[test]
    fn impossible_versions_and_segments_are_damage() {
        let ok = open_body(one_row(99, 99)).unwrap().unwrap();
        assert_eq!(ok.lookup("order-1").unwrap().map(|e| e.last_version), Some(99));
        for (v, seg) in [(u64::MAX - 1, 0), (u64::MAX, 0), (100, 0), (0, 100), (0, u64::MAX)] {
            let t = open_body(one_row(v, seg)).unwrap().unwrap();
            let e = t.lookup("order-1").unwrap_err();
            assert_eq!(e.offset, (STB_HEADER_LEN + 16) as u64, "{v} {seg}");
            assert!(e.detail().contains("below next_segment 100"), "{e:?}");
            assert!(t.rows().next().unwrap().is_err());
            assert!(merge(Some(&t), &[], 100, 200, u64::MAX).is_err());
        }
    }

    #[test]
    fn nonzero_reserved_row_fields_are_damage() {
        for at in [14, 15, 36, 39] {
            let mut body = one_row(1, 0);
            body[STB_HEADER_LEN + at] = 1;
            let t = open_body(body).unwrap().unwrap();
            assert_eq!(t.lookup("order-1").unwrap_err().offset, (STB_HEADER_LEN + 14) as u64);
        }
    }
}
