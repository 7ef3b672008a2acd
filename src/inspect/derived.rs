//! Inspection of derived files: index files (spec 17) and the stream table
//! (spec 18), whose header is followed by a block CRC table and a footer
//! (spec 16), and snapshot files (spec 20.2).

use std::mem::{offset_of, size_of};

use zerocopy::IntoBytes;

use super::{crc, field, struct_at, u32_at};
use crate::es::snapshot::{SNAPSHOT_HEADER_LEN, SnapshotHeader};
use crate::format::blockfile::{BLOCK, FOOTER_LEN};
use crate::format::{IDX_HEADER_LEN, IdxHeader, STB_HEADER_LEN, STB_ROW_LEN, StbHeader, StbRow};

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
        payload_len,
        crc: h.crc.get(),
        crc_ok: c.finalize() == h.crc.get(),
    };
    // In u128: a payload_len near u64::MAX must not overflow the sum.
    let expect = SNAPSHOT_HEADER_LEN as u128 + u128::from(stream_len) + u128::from(payload_len);
    let stop = (expect != len as u128)
        .then(|| format!("the header gives a file length of {expect}, the file has {len} bytes"));
    SnapshotDump {
        header: Some(header),
        stop,
    }
}
