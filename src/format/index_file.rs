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

/// Category or event type row of a segment index (spec 17.2).
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
/// Version of the index file layout.
pub const INDEX_VERSION: u16 = 1;
/// Index header flag: the file is an index checkpoint of a range of the
/// active segment (spec 17.5), not the index of a sealed segment.
pub const IDX_FLAG_CHECKPOINT: u16 = 1;
/// Bytes of an index header.
pub const IDX_HEADER_LEN: usize = size_of::<IdxHeader>();
/// Bytes of an index stream row.
pub const IDX_STREAM_ROW_LEN: usize = size_of::<IdxStreamRow>();
/// Bytes of an index category or type row.
pub const IDX_NAMED_ROW_LEN: usize = size_of::<IdxNamedRow>();
/// Offset of an index header's `segment_base`.
pub const IDX_SEGMENT_BASE_OFFSET: usize = offset_of!(IdxHeader, segment_base);
/// Offset of an index header's `hash_mask`.
pub const IDX_HASH_MASK_OFFSET: usize = offset_of!(IdxHeader, hash_mask);
/// Offset of an index header's `seal_crc`.
pub const IDX_SEAL_CRC_OFFSET: usize = offset_of!(IdxHeader, seal_crc);

const _: () = assert!(IDX_HEADER_LEN == 128);
const _: () = assert!(IDX_STREAM_ROW_LEN == 56);
const _: () = assert!(IDX_NAMED_ROW_LEN == 32);
