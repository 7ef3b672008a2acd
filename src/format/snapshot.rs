//! The snapshot file's header (spec 20.2): the normative layout. Encoding,
//! decoding and storing snapshots is `es::snapshot`'s.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Magic bytes at the start of every snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALSNP";
/// Version of the snapshot file layout this build reads and writes.
pub(crate) const SNAPSHOT_FORMAT_VERSION: u16 = 1;

/// Header of a snapshot file (spec 20.2): the normative layout.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct SnapshotHeader {
    pub magic: [u8; 8],
    pub format_version: U16,
    pub flags: U16,
    pub stream_len: U16,
    pub reserved0: U16,
    pub stream_version: U64,
    pub position: U64,
    pub schema_version: U32,
    pub reserved1: U32,
    pub payload_len: U64,
    pub reserved2: [u8; 12],
    pub crc: U32,
}

/// Bytes of the snapshot header.
pub(crate) const SNAPSHOT_HEADER_LEN: usize = size_of::<SnapshotHeader>();
/// Offset of the CRC field; the CRC covers every byte of the file but the
/// four at `[SNAPSHOT_CRC_OFFSET, SNAPSHOT_HEADER_LEN)`.
pub(crate) const SNAPSHOT_CRC_OFFSET: usize = offset_of!(SnapshotHeader, crc);
/// Offset of `stream_len`, reported when the length fields do not fill the file exactly.
pub(crate) const SNAPSHOT_LENGTH_OFFSET: u64 = offset_of!(SnapshotHeader, stream_len) as u64;

const _: () = assert!(SNAPSHOT_HEADER_LEN == 64);
const _: () = assert!(SNAPSHOT_CRC_OFFSET == 60);
