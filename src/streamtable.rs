//! The stream table `annal.streams` (spec section 18): the newest version of
//! every stream in the sealed segments, and where its newest sealed events are.
//!
//! It is mapped and searched in place (binary search by hash, then the full
//! name), so opening a log costs nothing per stream, and it is rewritten
//! (temp file, rename) after each seal by merging the previous table with the
//! new segment's stream rows: a linear merge of two sorted lists.

use std::path::Path;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::blockfile::{self, BlockFile};
use crate::error::Damage;
use crate::format::{STB_HEADER_LEN, STB_MAGIC, STB_ROW_LEN, STREAM_TABLE_VERSION, StbHeader, StbRow};
use crate::hash::stream_hash;
use crate::index::Prev;

/// File name of the stream table.
pub const STREAM_TABLE_FILE: &str = "annal.streams";

/// A mapped stream table.
#[derive(Debug)]
pub(crate) struct StreamTable {
    bf: BlockFile,
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
    /// Open `path` (`Ok(None)` if it does not exist).
    pub(crate) fn open(path: &Path) -> Result<Option<StreamTable>, Damage> {
        let Some(bf) = BlockFile::open_path(path, STB_MAGIC)? else {
            return Ok(None);
        };
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
                10,
                "expected stream table flags and reserved fields to be zero",
            ));
        }
        let count = h.stream_count.get();
        let names_len = h.names_len.get();
        let rows_end = count
            .checked_mul(STB_ROW_LEN as u64)
            .and_then(|r| r.checked_add(STB_HEADER_LEN as u64));
        let end = rows_end.and_then(|r| r.checked_add(names_len));
        if end.map(|e| e.next_multiple_of(8)) != Some(bf.len() as u64) {
            return Err(Damage::corrupt(32, "stream table counts do not fit the file"));
        }
        let names_at = rows_end.unwrap_or(0) as usize;
        Ok(Some(StreamTable {
            next_segment: h.next_segment.get(),
            mask: h.hash_mask.get(),
            count,
            names_at,
            names_len,
            bf,
        }))
    }

    /// Base of the first segment the table does not cover.
    pub(crate) fn next_segment(&self) -> u64 {
        self.next_segment
    }

    fn row(&self, i: u64) -> Result<(StbRow, &[u8]), Damage> {
        let at = STB_HEADER_LEN + i as usize * STB_ROW_LEN;
        let r = StbRow::read_from_bytes(self.bf.get(at, STB_ROW_LEN)?)
            .map_err(|_| Damage::corrupt(at as u64, "short stream table row"))?;
        let (off, len) = (r.name_offset.get() as u64, r.name_len.get() as u64);
        if off + len > self.names_len {
            return Err(Damage::corrupt(at as u64, "row's name lies outside the name area"));
        }
        let name = self.bf.get(self.names_at + off as usize, len as usize)?;
        Ok((r, name))
    }

    /// Look a stream up by name.
    pub(crate) fn lookup(&self, name: &str) -> Result<Option<TableEntry>, Damage> {
        let hash = stream_hash(name.as_bytes()) & self.mask;
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.row(mid)?.0.hash.get() < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        while lo < self.count {
            let (r, n) = self.row(lo)?;
            if r.hash.get() != hash {
                break;
            }
            if n == name.as_bytes() {
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
    body.resize(body.len().next_multiple_of(8), 0);
    blockfile::finish(body, STB_MAGIC)
}

/// Merge `old` (if any) with the stream rows of the newly indexed segment
/// `segment` (`(name, row, last_version)`), newer entries winning, into a new
/// table covering segments below `next_segment`.
pub(crate) fn merge(
    old: Option<&StreamTable>,
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
