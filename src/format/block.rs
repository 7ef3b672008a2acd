//! The footer of the derived files checked block by block, index files and
//! the stream table (spec 16): where the block CRC table is, how many blocks
//! it covers, its CRC, the footer's CRC and the file's magic again. Mapping
//! and checking the blocks is `index::blockfile`'s; the layout is here.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::crc;

/// Size of a checked block of a derived file.
pub const BLOCK_LEN: usize = 4096;

/// Footer of a derived file (spec 16): its last 32 bytes.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct BlockFooter {
    /// File offset of the block CRC table (the end of the checked region).
    pub table_offset: U64,
    /// `ceil(table_offset / 4096)`.
    pub block_count: U64,
    /// CRC of the block CRC table.
    pub table_crc: U32,
    /// CRC of the footer's bytes before this field.
    pub footer_crc: U32,
    /// The file's magic again.
    pub magic: [u8; 8],
}

/// Bytes of a derived file's footer.
pub const BLOCK_FOOTER_LEN: usize = size_of::<BlockFooter>();
/// Offset of `table_offset` in the footer.
pub const BLOCK_FOOTER_TABLE_OFFSET_OFFSET: usize = offset_of!(BlockFooter, table_offset);
/// Offset of `block_count` in the footer.
pub const BLOCK_FOOTER_BLOCK_COUNT_OFFSET: usize = offset_of!(BlockFooter, block_count);
/// Offset of `table_crc` in the footer.
pub const BLOCK_FOOTER_TABLE_CRC_OFFSET: usize = offset_of!(BlockFooter, table_crc);
/// Offset of `footer_crc` in the footer; it covers `[0, BLOCK_FOOTER_CRC_OFFSET)`.
pub const BLOCK_FOOTER_CRC_OFFSET: usize = offset_of!(BlockFooter, footer_crc);
/// Offset of `magic` in the footer.
pub const BLOCK_FOOTER_MAGIC_OFFSET: usize = offset_of!(BlockFooter, magic);

const _: () = assert!(BLOCK_FOOTER_LEN == 32);
const _: () = assert!(BLOCK_FOOTER_CRC_OFFSET == 20);
const _: () = assert!(BLOCK_FOOTER_MAGIC_OFFSET == 24);

#[allow(dead_code, reason = "for index::blockfile to adopt (its owner's change)")]
impl BlockFooter {
    /// A footer with its CRC filled in.
    pub(crate) fn new(table_offset: u64, block_count: u64, table_crc: u32, magic: [u8; 8]) -> BlockFooter {
        let mut f = BlockFooter {
            table_offset: U64::new(table_offset),
            block_count: U64::new(block_count),
            table_crc: U32::new(table_crc),
            footer_crc: U32::ZERO,
            magic,
        };
        f.footer_crc = U32::new(f.crc());
        f
    }

    /// The CRC `footer_crc` must hold.
    pub(crate) fn crc(&self) -> u32 {
        crc(self.as_bytes().get(..BLOCK_FOOTER_CRC_OFFSET).unwrap_or_default())
    }

    /// The footer at the end of `file`, unchecked; `None` if the file is
    /// shorter than a footer.
    pub(crate) fn of_file(file: &[u8]) -> Option<&BlockFooter> {
        BlockFooter::ref_from_suffix(file).ok().map(|(_, f)| f)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trip() {
        let f = BlockFooter::new(4096, 1, 7, *b"ANNALIDX");
        let mut file = vec![0u8; 40];
        file.extend_from_slice(f.as_bytes());
        let back = BlockFooter::of_file(&file).unwrap();
        assert_eq!(back.table_offset.get(), 4096);
        assert_eq!(back.footer_crc.get(), back.crc());
        assert!(BlockFooter::of_file(&[0; 31]).is_none());
    }
}
