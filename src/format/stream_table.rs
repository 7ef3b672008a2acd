//! The stream table's header and rows (spec 18). Reading and writing the
//! table is `index::streamtable`'s; the layout is here.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Header of the stream table (spec 18).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct StbHeader {
    pub magic: [u8; 8],
    pub table_version: U16,
    pub flags: U16,
    pub reserved0: U32,
    pub next_segment: U64,
    pub hash_mask: U64,
    pub stream_count: U64,
    pub names_len: U64,
    pub reserved1: [u8; 16],
}

/// Row of the stream table (spec 18).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct StbRow {
    pub hash: U64,
    pub name_offset: U32,
    pub name_len: U16,
    pub reserved0: U16,
    pub last_version: U64,
    pub segment: U64,
    pub row: U32,
    pub reserved1: U32,
}

/// Magic of the stream table.
pub const STB_MAGIC: [u8; 8] = *b"ANNALSTB";
/// Version of the stream table layout.
pub const STREAM_TABLE_VERSION: u16 = 1;
/// Bytes of a stream table header.
pub const STB_HEADER_LEN: usize = size_of::<StbHeader>();
/// Bytes of a stream table row.
pub const STB_ROW_LEN: usize = size_of::<StbRow>();
/// Offset of the stream table header's `next_segment`.
pub const STB_NEXT_SEGMENT_OFFSET: usize = offset_of!(StbHeader, next_segment);
/// Offset of the stream table header's `hash_mask`.
pub const STB_HASH_MASK_OFFSET: usize = offset_of!(StbHeader, hash_mask);

const _: () = assert!(STB_HEADER_LEN == 64);
const _: () = assert!(STB_ROW_LEN == 40);
