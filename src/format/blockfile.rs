//! The block footer of derived files (spec 16): index files and the stream
//! table end with a table of one CRC per 4096-byte block of their body and
//! this 32-byte footer, which locates and checks that table.
//!
//! Layout (little-endian): `table_offset` (where the CRC table starts = the
//! length of the checked body, a multiple of 8), `block_count` (entries in the
//! table, `ceil(table_offset / BLOCK)`), `table_crc` (CRC of the table),
//! `footer_crc` (CRC of the footer's bytes before it), and the file's magic.
//! Offsets are derived from the struct, never written by hand elsewhere.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of a checked block.
pub const BLOCK: usize = 4096;

/// Bytes of one entry of the block CRC table (a little-endian `u32`).
pub const BLOCK_CRC_LEN: usize = size_of::<u32>();

/// The footer at the end of every derived file (spec 16).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct BlockFooter {
    /// Offset of the block CRC table: the length of the checked region.
    pub table_offset: U64,
    /// Number of blocks (entries in the CRC table).
    pub block_count: U64,
    /// CRC of the block CRC table.
    pub table_crc: U32,
    /// CRC of the footer's bytes `[0, FOOTER_CRC_OFFSET)`.
    pub footer_crc: U32,
    /// The file kind's magic.
    pub magic: [u8; 8],
}

/// Size of the footer.
pub const FOOTER_LEN: usize = size_of::<BlockFooter>();
/// Offset of `table_crc` in the footer.
pub const FOOTER_TABLE_CRC_OFFSET: usize = offset_of!(BlockFooter, table_crc);
/// Offset of `footer_crc`; the footer CRC covers `[0, FOOTER_CRC_OFFSET)`.
pub const FOOTER_CRC_OFFSET: usize = offset_of!(BlockFooter, footer_crc);
/// Offset of the magic in the footer.
pub const FOOTER_MAGIC_OFFSET: usize = offset_of!(BlockFooter, magic);

const _: () = assert!(FOOTER_LEN == 32);
const _: () = assert!(FOOTER_TABLE_CRC_OFFSET == 16);
const _: () = assert!(FOOTER_CRC_OFFSET == 20);
const _: () = assert!(FOOTER_MAGIC_OFFSET == 24);

impl BlockFooter {
    /// The footer for a body of `table_offset` bytes in `blocks` blocks whose
    /// CRC table has CRC `table_crc`, with its own CRC filled in.
    pub(crate) fn new(table_offset: u64, blocks: u64, table_crc: u32, magic: [u8; 8]) -> BlockFooter {
        let mut f = BlockFooter {
            table_offset: U64::new(table_offset),
            block_count: U64::new(blocks),
            table_crc: U32::new(table_crc),
            footer_crc: U32::ZERO,
            magic,
        };
        f.footer_crc = U32::new(f.computed_crc());
        f
    }

    /// The CRC of the footer's bytes before `footer_crc`.
    pub(crate) fn computed_crc(&self) -> u32 {
        let b = self.as_bytes();
        crc32fast::hash(b.get(..FOOTER_CRC_OFFSET).unwrap_or(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_spec() {
        assert_eq!(offset_of!(BlockFooter, table_offset), 0);
        assert_eq!(offset_of!(BlockFooter, block_count), 8);
        assert_eq!(FOOTER_TABLE_CRC_OFFSET, 16);
        assert_eq!(FOOTER_CRC_OFFSET, 20);
        assert_eq!(FOOTER_MAGIC_OFFSET, 24);
        assert_eq!(FOOTER_LEN, 32);
    }
}
