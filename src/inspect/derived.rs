//! Inspection of derived files: index files (spec 17) and the stream table
//! (spec 18), whose header is followed by a block CRC table and a footer
//! (spec 16), and snapshot files (spec 20.2).

use std::mem::{offset_of, size_of};

use zerocopy::IntoBytes;

use super::{crc, field, struct_at, u32_at};
use crate::es::snapshot::{SNAPSHOT_HEADER_LEN, SnapshotHeader};
use crate::format::blockfile::{BLOCK, FOOTER_LEN};
use crate::format::{
    IDX_HEADER_LEN, IDX_NAMED_ROW_LEN, INDEX_VERSION_1, IdxHeader, IdxNamedRow, IdxStreamRow, IdxStreamRowV2,
    STB_HEADER_LEN, STB_ROW_LEN, StbHeader, StbRow, idx_lens,
};

// The footer of derived files (spec 16) has no struct in `crate::format`
// yet. Until it does, its table is written here, once, and every offset of it
// below is derived from it; when the format module gains it, this struct goes
// and the import changes.

use crate::format::BlockFooter;

/// Bytes of one entry of the block CRC table (spec 16).
const BLOCK_CRC_LEN: usize = size_of::<u32>();

/// The footer of an index file or the stream table (spec 16), and the
/// checks it allows.
#[derive(Debug, Clone)]
pub struct FooterDump {
    /// `table_offset`: the length of the checked region.
    pub table_offset: u64,
    /// `block_count`.
    pub block_count: u64,
    /// The footer's magic.
    pub magic: [u8; 8],
    /// Whether the footer CRC matches.
    pub footer_crc_ok: bool,
    /// The block checks; `None` if the footer does not fit the file.
    pub blocks: Option<BlockChecks>,
}

/// The CRC checks of a derived file's blocks.
#[derive(Debug, Clone)]
pub struct BlockChecks {
    /// Whether the block CRC table matches its CRC in the footer.
    pub table_crc_ok: bool,
    /// How many blocks fail their CRC.
    pub bad_blocks: u64,
}

impl FooterDump {
    /// How many checks fail: the footer CRC, the table CRC, and each block.
    pub fn problems(&self) -> u64 {
        let blocks = self
            .blocks
            .as_ref()
            .map_or(0, |b| u64::from(!b.table_crc_ok) + b.bad_blocks);
        u64::from(!self.footer_crc_ok) + blocks
    }
}

/// Describe the footer at the end of `file`, if the file has room for one,
/// and why the description stops: the file is too short for a footer, or
/// the footer does not fit the file (its blocks are then not checked).
fn footer(file: &[u8]) -> (Option<FooterDump>, Option<String>) {
    let len = file.len();
    let Some(f) = len
        .checked_sub(FOOTER_LEN)
        .and_then(|at| struct_at::<BlockFooter>(file, at))
    else {
        let why = format!("the file has {len} bytes, too few for the {FOOTER_LEN}-byte footer");
        return (None, Some(why));
    };
    let (table_offset, block_count) = (f.table_offset.get(), f.block_count.get());
    let mut d = FooterDump {
        table_offset,
        block_count,
        magic: f.magic,
        footer_crc_ok: crc(f.as_bytes(), 0, offset_of!(BlockFooter, footer_crc)) == f.footer_crc.get(),
        blocks: None,
    };
    let expect_len = block_count
        .checked_mul(BLOCK_CRC_LEN as u64)
        .and_then(|t| t.checked_add(table_offset))
        .and_then(|t| t.checked_add(FOOTER_LEN as u64));
    if expect_len != Some(len as u64) || block_count != table_offset.div_ceil(BLOCK as u64) {
        let why = format!(
            "the footer does not match the file: table_offset {table_offset} + {BLOCK_CRC_LEN} x block_count \
             {block_count} + {FOOTER_LEN} should be the file length {len}"
        );
        return (Some(d), Some(why));
    }
    // Both lie inside the file: checked above.
    let t = table_offset as usize;
    let table = file.get(t..len - FOOTER_LEN).unwrap_or_default();
    let bad_blocks = table
        .chunks_exact(BLOCK_CRC_LEN)
        .enumerate()
        .filter(|&(i, stored)| {
            let start = i * BLOCK;
            crc(file, start, (start + BLOCK).min(t)) != u32_at(stored, 0)
        })
        .count() as u64;
    d.blocks = Some(BlockChecks {
        table_crc_ok: crc32fast::hash(table) == f.table_crc.get(),
        bad_blocks,
    });
    (Some(d), None)
}

/// A segment index file (spec 17): its header and footer.
#[derive(Debug, Default)]
pub struct IndexDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<IndexHeaderDump>,
    /// The footer, if the file has room for one.
    pub footer: Option<FooterDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
    /// The rows and entries (spec 17.2), as far as they lie in the file.
    pub content: IndexContentDump,
}

/// The sections of an index file or checkpoint (spec 17.2), either layout
/// version, each field as stored. Nothing here is checked against a CRC:
/// see the footer for that. Rows and entries are listed as far as the
/// header's counts and the checked region (or the file) allow.
#[derive(Debug, Default, Clone)]
pub struct IndexContentDump {
    /// Stream rows, in file order.
    pub streams: Vec<IndexStreamRowDump>,
    /// Category rows, in file order.
    pub categories: Vec<IndexNamedRowDump>,
    /// Event type rows, in file order.
    pub types: Vec<IndexNamedRowDump>,
    /// Frame entries as stored: version 1 `(first_position,
    /// frame_offset)`; version 2 `(position_delta, frame_offset)`.
    pub frames: Vec<(u64, u64)>,
}

/// One stream row of an index (spec 17.2), as stored.
#[derive(Debug, Clone)]
pub struct IndexStreamRowDump {
    /// File offset of the row.
    pub offset: u64,
    /// `hash`.
    pub hash: u64,
    /// `name_offset`.
    pub name_offset: u32,
    /// `name_len`.
    pub name_len: u16,
    /// The name; `None` if the row points outside the name area or the file.
    pub name: Option<Vec<u8>>,
    /// `reserved0`.
    pub reserved0: u16,
    /// `first_version`.
    pub first_version: u64,
    /// Version 1: `last_version`; version 2: `last_delta`.
    pub last: u64,
    /// `entry_start`.
    pub entry_start: u32,
    /// `entry_count`.
    pub entry_count: u32,
    /// `prev_segment`.
    pub prev_segment: u64,
    /// `prev_row`.
    pub prev_row: u32,
    /// Version 1 only: `reserved1`.
    pub reserved1: Option<u32>,
    /// The row's stream entries as stored: version 1 `(first_version,
    /// frame_offset)`; version 2 `(version_delta, frame_offset)`.
    pub entries: Vec<(u64, u64)>,
}

/// One category or event type row of an index (spec 17.2), as stored.
#[derive(Debug, Clone)]
pub struct IndexNamedRowDump {
    /// File offset of the row.
    pub offset: u64,
    /// `hash`.
    pub hash: u64,
    /// `name_offset`.
    pub name_offset: u32,
    /// `name_len`.
    pub name_len: u16,
    /// The name; `None` if the row points outside the name area or the file.
    pub name: Option<Vec<u8>>,
    /// `reserved0`.
    pub reserved0: u16,
    /// `entry_start`.
    pub entry_start: u32,
    /// `entry_count`.
    pub entry_count: u32,
    /// `reserved1`.
    pub reserved1: u64,
    /// The row's entries: frame offsets (categories; event types in
    /// version 2) or record offsets (event types in version 1).
    pub entries: Vec<u64>,
}

/// The little-endian `u64` at `at`, if it is there.
fn u64_in(bytes: &[u8], at: usize) -> Option<u64> {
    field(bytes, at, 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

/// The entry of `len` bytes (4 or 8, a `u32` or `u64`) at `at`.
fn word_in(bytes: &[u8], at: usize, len: usize) -> Option<u64> {
    if len == 8 {
        u64_in(bytes, at)
    } else {
        field(bytes, at, 4).map(|_| u64::from(u32_at(bytes, at)))
    }
}

/// Entries `[start, start + count)` of the section at `at` (entries of
/// `len` bytes, pairs if `pair`), as far as they lie in `region`.
fn entries_in(region: &[u8], at: Option<usize>, start: u32, count: u32, len: usize) -> Vec<u64> {
    let Some(at) = at else { return Vec::new() };
    (0..count)
        .map_while(|i| {
            let k = usize::try_from(u64::from(start) + u64::from(i)).ok()?;
            word_in(region, at.checked_add(k.checked_mul(len)?)?, len)
        })
        .collect()
}

/// Describe the rows and entries of an index file (spec 17.2).
fn index_content(file: &[u8], h: &IdxHeader) -> IndexContentDump {
    let v1 = h.index_version.get() == INDEX_VERSION_1;
    let lens = idx_lens(h.index_version.get());
    let table_at = file
        .len()
        .checked_sub(FOOTER_LEN)
        .and_then(|at| struct_at::<BlockFooter>(file, at))
        .and_then(|f| usize::try_from(f.table_offset.get()).ok());
    let region = table_at.and_then(|t| file.get(..t)).unwrap_or(file);
    let sizes = [
        (h.stream_count.get(), lens.stream_row),
        (h.stream_entry_count.get(), lens.stream_entry),
        (h.category_count.get(), IDX_NAMED_ROW_LEN),
        (h.category_entry_count.get(), lens.named_entry),
        (h.type_count.get(), IDX_NAMED_ROW_LEN),
        (h.type_entry_count.get(), lens.named_entry),
        (h.frame_count.get(), lens.frame_entry),
        (h.names_len.get(), 1),
    ];
    // Where each section starts (`None` past `usize`).
    let mut at = [None; 8];
    let mut pos = Some(IDX_HEADER_LEN);
    for (slot, (n, size)) in at.iter_mut().zip(sizes) {
        *slot = pos;
        pos = pos.and_then(|p| p.checked_add((n as usize).checked_mul(size)?));
    }
    let names_len = h.names_len.get();
    let name = |off: u32, len: u16| {
        at[7]
            .filter(|_| u64::from(off) + u64::from(len) <= u64::from(names_len))
            .and_then(|n| n.checked_add(off as usize))
            .and_then(|n| field(region, n, len.into()))
            .map(<[u8]>::to_vec)
    };
    let half = lens.stream_entry / 2;
    let streams = (0..h.stream_count.get())
        .map_while(|i| {
            let off = at[0]?.checked_add((i as usize).checked_mul(lens.stream_row)?)?;
            let mut d = if v1 {
                let r = struct_at::<IdxStreamRow>(region, off)?;
                IndexStreamRowDump {
                    offset: off as u64,
                    hash: r.hash.get(),
                    name_offset: r.name_offset.get(),
                    name_len: r.name_len.get(),
                    name: name(r.name_offset.get(), r.name_len.get()),
                    reserved0: r.reserved0.get(),
                    first_version: r.first_version.get(),
                    last: r.last_version.get(),
                    entry_start: r.entry_start.get(),
                    entry_count: r.entry_count.get(),
                    prev_segment: r.prev_segment.get(),
                    prev_row: r.prev_row.get(),
                    reserved1: Some(r.reserved1.get()),
                    entries: Vec::new(),
                }
            } else {
                let r = struct_at::<IdxStreamRowV2>(region, off)?;
                IndexStreamRowDump {
                    offset: off as u64,
                    hash: r.hash.get(),
                    name_offset: r.name_offset.get(),
                    name_len: r.name_len.get(),
                    name: name(r.name_offset.get(), r.name_len.get()),
                    reserved0: r.reserved0.get(),
                    first_version: r.first_version.get(),
                    last: u64::from(r.last_delta.get()),
                    entry_start: r.entry_start.get(),
                    entry_count: r.entry_count.get(),
                    prev_segment: r.prev_segment.get(),
                    prev_row: r.prev_row.get(),
                    reserved1: None,
                    entries: Vec::new(),
                }
            };
            let words = entries_in(
                region,
                at[1],
                d.entry_start.saturating_mul(2),
                d.entry_count.saturating_mul(2),
                half,
            );
            d.entries = words.chunks_exact(2).map(|w| (w[0], w[1])).collect();
            Some(d)
        })
        .collect();
    let named = |rows_at: Option<usize>, count: u32, entries_at: Option<usize>| -> Vec<IndexNamedRowDump> {
        (0..count)
            .map_while(|i| {
                let off = rows_at?.checked_add((i as usize).checked_mul(IDX_NAMED_ROW_LEN)?)?;
                let r = struct_at::<IdxNamedRow>(region, off)?;
                Some(IndexNamedRowDump {
                    offset: off as u64,
                    hash: r.hash.get(),
                    name_offset: r.name_offset.get(),
                    name_len: r.name_len.get(),
                    name: name(r.name_offset.get(), r.name_len.get()),
                    reserved0: r.reserved0.get(),
                    entry_start: r.entry_start.get(),
                    entry_count: r.entry_count.get(),
                    reserved1: r.reserved1.get(),
                    entries: entries_in(
                        region,
                        entries_at,
                        r.entry_start.get(),
                        r.entry_count.get(),
                        lens.named_entry,
                    ),
                })
            })
            .collect()
    };
    let half = lens.frame_entry / 2;
    let words = entries_in(region, at[6], 0, h.frame_count.get().saturating_mul(2), half);
    IndexContentDump {
        streams,
        categories: named(at[2], h.category_count.get(), at[3]),
        types: named(at[4], h.type_count.get(), at[5]),
        frames: words.chunks_exact(2).map(|w| (w[0], w[1])).collect(),
    }
}

/// The fields of an index header (spec 17.1).
#[derive(Debug, Clone)]
pub struct IndexHeaderDump {
    /// `index_version`.
    pub index_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `segment_base`.
    pub segment_base: u64,
    /// `segment_len`.
    pub segment_len: u64,
    /// `hash_mask`.
    pub hash_mask: u64,
    /// `stream_count`.
    pub stream_count: u32,
    /// `stream_entry_count`.
    pub stream_entry_count: u32,
    /// `category_count`.
    pub category_count: u32,
    /// `category_entry_count`.
    pub category_entry_count: u32,
    /// `type_count`.
    pub type_count: u32,
    /// `type_entry_count`.
    pub type_entry_count: u32,
    /// `frame_count`.
    pub frame_count: u32,
    /// `names_len`.
    pub names_len: u32,
    /// `seal_crc` (of an index checkpoint: its last frame's header CRC).
    pub seal_crc: u32,
    /// `covered_from` (index checkpoints, spec 17.5; zero in an index file).
    pub covered_from: u64,
    /// `last_frame` (index checkpoints; zero in an index file).
    pub last_frame: u64,
}

/// Describe a segment index file or an index checkpoint.
pub fn index(file: &[u8]) -> IndexDump {
    let Some(h) = struct_at::<IdxHeader>(file, 0) else {
        return IndexDump {
            stop: Some(format!(
                "the index header needs {IDX_HEADER_LEN} bytes, the file has {}",
                file.len()
            )),
            ..IndexDump::default()
        };
    };
    let (footer, stop) = footer(file);
    IndexDump {
        header: Some(IndexHeaderDump {
            index_version: h.index_version.get(),
            flags: h.flags.get(),
            segment_base: h.segment_base.get(),
            segment_len: h.segment_len.get(),
            hash_mask: h.hash_mask.get(),
            stream_count: h.stream_count.get(),
            stream_entry_count: h.stream_entry_count.get(),
            category_count: h.category_count.get(),
            category_entry_count: h.category_entry_count.get(),
            type_count: h.type_count.get(),
            type_entry_count: h.type_entry_count.get(),
            frame_count: h.frame_count.get(),
            names_len: h.names_len.get(),
            seal_crc: h.seal_crc.get(),
            covered_from: h.covered_from.get(),
            last_frame: h.last_frame.get(),
        }),
        footer,
        stop,
        content: index_content(file, h),
    }
}

/// The stream table (spec 18): its header and footer.
#[derive(Debug, Default)]
pub struct StreamTableDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<StreamTableHeaderDump>,
    /// The footer, if the file has room for one.
    pub footer: Option<FooterDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

/// The fields of the stream table's header (spec 18).
#[derive(Debug, Clone)]
pub struct StreamTableHeaderDump {
    /// `table_version`.
    pub table_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `next_segment`.
    pub next_segment: u64,
    /// `hash_mask`.
    pub hash_mask: u64,
    /// `stream_count`.
    pub stream_count: u64,
    /// `names_len`.
    pub names_len: u64,
}

/// Describe the stream table.
pub fn stream_table(file: &[u8]) -> StreamTableDump {
    let Some(h) = struct_at::<StbHeader>(file, 0) else {
        return StreamTableDump {
            stop: Some(format!(
                "the stream table header needs {STB_HEADER_LEN} bytes, the file has {}",
                file.len()
            )),
            ..StreamTableDump::default()
        };
    };
    let (footer, stop) = footer(file);
    StreamTableDump {
        header: Some(StreamTableHeaderDump {
            table_version: h.table_version.get(),
            flags: h.flags.get(),
            next_segment: h.next_segment.get(),
            hash_mask: h.hash_mask.get(),
            stream_count: h.stream_count.get(),
            names_len: h.names_len.get(),
        }),
        footer,
        stop,
    }
}

/// One row of the stream table (spec 18).
#[derive(Debug, Clone)]
pub struct StreamRowDump {
    /// File offset of the row.
    pub offset: u64,
    /// `hash`.
    pub hash: u64,
    /// The stream name; `None` if the row points outside the name area or
    /// the file.
    pub name: Option<Vec<u8>>,
    /// `last_version`.
    pub last_version: u64,
    /// `segment`.
    pub segment: u64,
    /// `row`.
    pub row: u32,
}

/// The rows of the stream table `file`: as many of its `stream_count` as lie
/// before the block table (before the end of the file if the footer cannot
/// be read), in file order. Nothing here is checked against a CRC: see
/// [`stream_table`] for that.
pub fn stream_table_rows(file: &[u8]) -> Vec<StreamRowDump> {
    let Some(h) = struct_at::<StbHeader>(file, 0) else {
        return Vec::new();
    };
    let table_at = file
        .len()
        .checked_sub(FOOTER_LEN)
        .and_then(|at| struct_at::<BlockFooter>(file, at))
        .and_then(|f| usize::try_from(f.table_offset.get()).ok());
    let region = table_at.and_then(|t| file.get(..t)).unwrap_or(file);
    let count = h.stream_count.get();
    let names_len = h.names_len.get();
    let names_at = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(STB_ROW_LEN)?.checked_add(STB_HEADER_LEN));
    (0..count)
        .map_while(|i| {
            let at = usize::try_from(i)
                .ok()?
                .checked_mul(STB_ROW_LEN)?
                .checked_add(STB_HEADER_LEN)?;
            let r = struct_at::<StbRow>(region, at)?;
            let (off, len) = (r.name_offset.get(), r.name_len.get());
            let name = names_at
                .filter(|_| u64::from(off) + u64::from(len) <= names_len)
                .and_then(|n| n.checked_add(usize::try_from(off).ok()?))
                .and_then(|n| field(region, n, len.into()))
                .map(<[u8]>::to_vec);
            Some(StreamRowDump {
                offset: at as u64,
                hash: r.hash.get(),
                name,
                last_version: r.last_version.get(),
                segment: r.segment.get(),
                row: r.row.get(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- snapshots

/// A snapshot file (spec 20.2): its header.
#[derive(Debug, Default)]
pub struct SnapshotDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<SnapshotHeaderDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

/// The fields of a snapshot header, and the stream name after it.
#[derive(Debug, Clone)]
pub struct SnapshotHeaderDump {
    /// `format_version`.
    pub format_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `stream_len`.
    pub stream_len: u16,
    /// The stream name; `None` if the file ends before it does.
    pub stream: Option<Vec<u8>>,
    /// `stream_version`.
    pub stream_version: u64,
    /// `position`.
    pub position: u64,
    /// `schema_version`.
    pub schema_version: u32,
    /// `key_count` (format version 2; `reserved1` in version 1).
    pub key_count: u32,
    /// Format version 2: the subject key ids after the stream name (as far
    /// as the file holds them); empty in version 1.
    pub subject_keys: Vec<u64>,
    /// `payload_len`.
    pub payload_len: u64,
    /// `crc` as stored.
    pub crc: u32,
    /// Whether `crc` matches the file.
    pub crc_ok: bool,
}

/// Describe a snapshot file.
pub fn snapshot(file: &[u8]) -> SnapshotDump {
    let len = file.len();
    let Some(h) = struct_at::<SnapshotHeader>(file, 0) else {
        return SnapshotDump {
            header: None,
            stop: Some(format!(
                "the snapshot header needs {SNAPSHOT_HEADER_LEN} bytes, the file has {len}"
            )),
        };
    };
    let stream_len = h.stream_len.get();
    let payload_len = h.payload_len.get();
    let keys_len = crate::format::snapshot::key_list_len(h);
    let keys_at = SNAPSHOT_HEADER_LEN + usize::from(stream_len);
    let subject_keys = file
        .get(keys_at.min(len)..)
        .unwrap_or_default()
        .chunks_exact(8)
        .take(usize::try_from(keys_len / 8).unwrap_or(usize::MAX))
        .map(|c| u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default()))
        .collect();
    // The CRC covers every byte of the file but its own field.
    let mut c = crc32fast::Hasher::new();
    c.update(file.get(..offset_of!(SnapshotHeader, crc)).unwrap_or_default());
    c.update(file.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default());
    let header = SnapshotHeaderDump {
        format_version: h.format_version.get(),
        flags: h.flags.get(),
        stream_len,
        stream: field(file, SNAPSHOT_HEADER_LEN, stream_len.into()).map(<[u8]>::to_vec),
        stream_version: h.stream_version.get(),
        position: h.position.get(),
        schema_version: h.schema_version.get(),
        key_count: h.key_count.get(),
        subject_keys,
        payload_len,
        crc: h.crc.get(),
        crc_ok: c.finalize() == h.crc.get(),
    };
    // In u128: a payload_len near u64::MAX must not overflow the sum.
    let expect = SNAPSHOT_HEADER_LEN as u128 + u128::from(stream_len) + u128::from(keys_len) + u128::from(payload_len);
    let stop = (expect != len as u128)
        .then(|| format!("the header gives a file length of {expect}, the file has {len} bytes"));
    SnapshotDump {
        header: Some(header),
        stop,
    }
}

#[cfg(test)]
mod index_content_tests {
    use super::index;

    fn vector(rel: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    /// Every row and entry of both layout versions, as stored: the indexed
    /// vector's first index in version 2 and in version 1.
    #[test]
    fn both_versions_are_described_field_by_field() {
        let v2 = index(&vector("spec/vectors/v1/indexed/00000000000000000000.idx"));
        let v1 = index(&vector("spec/vectors/index-v1/seg-v1/00000000000000000000.idx"));
        assert_eq!(v2.header.as_ref().map(|h| h.index_version), Some(2));
        assert_eq!(v1.header.as_ref().map(|h| h.index_version), Some(1));
        for d in [&v1, &v2] {
            assert!(d.stop.is_none() && d.footer.as_ref().is_some_and(|f| f.problems() == 0));
            let c = &d.content;
            assert_eq!((c.streams.len(), c.categories.len(), c.types.len()), (3, 2, 4));
            let names: Vec<&[u8]> = c.streams.iter().filter_map(|r| r.name.as_deref()).collect();
            assert_eq!(names, [&b"customer-9"[..], b"order", b"order-1"]);
            // order-1: versions 0 and 1 in one batch at 128.
            let o = &c.streams[2];
            assert_eq!((o.first_version, o.last, o.entries.clone()), (0, 1, vec![(0, 128)]));
            // Positions 0..3 in the segment based at 0: deltas equal positions.
            assert_eq!(c.frames, [(0, 128), (2, 424), (3, 592)]);
        }
        assert_eq!((v1.content.streams[0].offset, v2.content.streams[1].offset), (128, 176));
        assert_eq!(v1.content.streams[0].reserved1, Some(0));
        assert_eq!(v2.content.streams[0].reserved1, None);
        // ItemAdded: the record at 320 (version 1), its batch at 128 (version 2).
        let item = |d: &super::IndexDump| {
            d.content
                .types
                .iter()
                .find(|r| r.name.as_deref() == Some(&b"ItemAdded"[..]))
                .unwrap()
                .entries
                .clone()
        };
        assert_eq!((item(&v1), item(&v2)), (vec![320], vec![128]));
    }
}

#[cfg(test)]
mod snapshot_tests {
    /// Both snapshot vectors are described whole: version 2 with its key list.
    #[test]
    fn both_snapshot_versions_are_described() {
        let read = |rel: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
        let name = "snapshots/7d1deb86a05662d4-00000000000000000007.snap";
        let v1 = super::snapshot(&read(&format!("spec/vectors/v1/snapshot/{name}")));
        let v2 = super::snapshot(&read(&format!("spec/vectors/v1/snapshot-v2/{name}")));
        for (d, version, keys) in [(&v1, 1, vec![]), (&v2, 2, vec![2, 5])] {
            assert!(d.stop.is_none(), "{:?}", d.stop);
            let h = d.header.as_ref().unwrap();
            assert!(h.crc_ok);
            assert_eq!(
                (h.format_version, h.key_count as usize, &h.subject_keys),
                (version, keys.len(), &keys)
            );
        }
    }
}
