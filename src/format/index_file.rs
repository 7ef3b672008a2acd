//! The segment index file's header and rows (spec 17.1, 17.2). Reading
//! and writing index files is `index`'s; the layout is here.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Header of a segment index file (spec 17.1).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct IdxHeader {
    pub magic: [u8; 8],
    pub index_version: U16,
    pub flags: U16,
    pub reserved0: U32,
    pub segment_base: U64,
    pub segment_len: U64,
    pub hash_mask: U64,
    pub stream_count: U32,
    pub stream_entry_count: U32,
    pub category_count: U32,
    pub category_entry_count: U32,
    pub type_count: U32,
    pub type_entry_count: U32,
    pub frame_count: U32,
    pub names_len: U32,
    pub seal_crc: U32,
    /// Checkpoint files only (flag [`IDX_FLAG_CHECKPOINT`]): the first
    /// segment offset covered; zero in a sealed segment's index.
    pub covered_from: U64,
    /// Checkpoint files only: the offset of the last frame covered (which
    /// ends at `segment_len`); zero in a sealed segment's index.
    pub last_frame: U64,
    pub reserved1: [u8; 36],
}

/// Stream row of a segment index (spec 17.2).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct IdxStreamRow {
    pub hash: U64,
    pub name_offset: U32,
    pub name_len: U16,
    pub reserved0: U16,
    pub first_version: U64,
    pub last_version: U64,
    pub entry_start: U32,
    pub entry_count: U32,
    pub prev_segment: U64,
    pub prev_row: U32,
    pub reserved1: U32,
}

/// Stream row of a version 2 segment index (spec 17.2): the row of
/// version 1 without its reserved tail, `last_version` stored as its
/// distance from `first_version` (a segment holds fewer than 2^32 events),
/// and `prev_row` before `prev_segment` so that the row packs into 48 bytes.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct IdxStreamRowV2 {
    pub hash: U64,
    pub name_offset: U32,
    pub name_len: U16,
    pub reserved0: U16,
    pub first_version: U64,
    /// `last_version - first_version`.
    pub last_delta: U32,
    pub entry_start: U32,
    pub entry_count: U32,
    pub prev_row: U32,
    pub prev_segment: U64,
}

/// Category or event type row of a segment index (spec 17.2), the same in
/// both versions.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct IdxNamedRow {
    pub hash: U64,
    pub name_offset: U32,
    pub name_len: U16,
    pub reserved0: U16,
    pub entry_start: U32,
    pub entry_count: U32,
    pub reserved1: U64,
}

/// Magic of segment index files.
pub const IDX_MAGIC: [u8; 8] = *b"ANNALIDX";
/// Version of the index file layout a writer writes when the segment allows
/// it ([`INDEX_V2_LIMIT`]): version 2, compact entries (spec 17).
pub const INDEX_VERSION: u16 = INDEX_VERSION_2;
/// Index layout version 1: 64-bit entries, event type entries pointing at
/// records. Still read; written for a segment too large for version 2.
pub const INDEX_VERSION_1: u16 = 1;
/// Index layout version 2: 32-bit offsets and deltas, event type entries
/// pointing at batches.
pub const INDEX_VERSION_2: u16 = 2;
/// Version 2 holds every offset, position delta and version delta in a
/// `u32`: the segment (or checkpoint range end) must be shorter than this,
/// and every delta below it.
pub const INDEX_V2_LIMIT: u64 = 1 << 32;
/// Index header flag: the file is an index checkpoint of a range of the
/// active segment (spec 17.5), not the index of a sealed segment.
pub const IDX_FLAG_CHECKPOINT: u16 = 1;
/// Bytes of an index header.
pub const IDX_HEADER_LEN: usize = size_of::<IdxHeader>();
/// Bytes of an index stream row.
pub const IDX_STREAM_ROW_LEN: usize = size_of::<IdxStreamRow>();
/// Bytes of a version 2 index stream row.
pub const IDX_STREAM_ROW_V2_LEN: usize = size_of::<IdxStreamRowV2>();
/// Bytes of an index category or type row.
pub const IDX_NAMED_ROW_LEN: usize = size_of::<IdxNamedRow>();
/// Offset of an index header's `segment_base`.
pub const IDX_SEGMENT_BASE_OFFSET: usize = offset_of!(IdxHeader, segment_base);
/// Offset of an index header's `hash_mask`.
pub const IDX_HASH_MASK_OFFSET: usize = offset_of!(IdxHeader, hash_mask);
/// Offset of an index header's `seal_crc`.
pub const IDX_SEAL_CRC_OFFSET: usize = offset_of!(IdxHeader, seal_crc);

/// The sizes of one index layout version's rows and entries (spec 17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdxLens {
    pub stream_row: usize,
    pub stream_entry: usize,
    pub named_entry: usize,
    pub frame_entry: usize,
    /// Bytes `[from, to)` of a stream row holding `prev_segment` and
    /// `prev_row` (which one segment alone cannot tell, spec 16).
    pub back_pointer: (usize, usize),
}

/// Row and entry sizes of index version `version` (1 or 2; anything else is
/// taken as 2, and is rejected by the header check before use).
pub(crate) const fn idx_lens(version: u16) -> IdxLens {
    if version == INDEX_VERSION_1 {
        IdxLens {
            stream_row: IDX_STREAM_ROW_LEN,
            stream_entry: 16,
            named_entry: 8,
            frame_entry: 16,
            back_pointer: (
                offset_of!(IdxStreamRow, prev_segment),
                offset_of!(IdxStreamRow, reserved1),
            ),
        }
    } else {
        IdxLens {
            stream_row: IDX_STREAM_ROW_V2_LEN,
            stream_entry: 8,
            named_entry: 4,
            frame_entry: 8,
            back_pointer: (offset_of!(IdxStreamRowV2, prev_row), IDX_STREAM_ROW_V2_LEN),
        }
    }
}

const _: () = assert!(IDX_HEADER_LEN == 128);
const _: () = assert!(IDX_STREAM_ROW_V2_LEN == 48);
const _: () = assert!(offset_of!(IdxStreamRowV2, first_version) == 16);
const _: () = assert!(offset_of!(IdxStreamRowV2, last_delta) == 24);
const _: () = assert!(offset_of!(IdxStreamRowV2, entry_start) == 28);
const _: () = assert!(offset_of!(IdxStreamRowV2, prev_row) == 36);
const _: () = assert!(offset_of!(IdxStreamRowV2, prev_segment) == 40);
const _: () = assert!(IDX_STREAM_ROW_LEN == 56);
const _: () = assert!(IDX_NAMED_ROW_LEN == 32);
