//! The record header (spec 3.2): the fixed 72 bytes before a record's
//! stream name, event type, metadata and payload. Encoding and parsing
//! records is `format::record`'s.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::ALIGN;

/// Record header (spec section 3.2).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct RecordHeader {
    pub record_len: U32,
    pub crc: U32,
    pub position: U64,
    pub stream_version: U64,
    pub timestamp: U64,
    pub event_id: [u8; 16],
    pub schema_version: U32,
    pub flags: U16,
    pub stream_len: U16,
    pub type_len: U16,
    pub reserved0: U16,
    pub metadata_len: U32,
    pub payload_len: U32,
    pub reserved1: U32,
}

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = size_of::<RecordHeader>();
/// The record CRC covers `[RECORD_CRC_START, record_len)`.
pub const RECORD_CRC_START: usize = offset_of!(RecordHeader, position);
/// Offset of a record's CRC.
pub const RECORD_CRC_OFFSET: usize = offset_of!(RecordHeader, crc);
/// Offset of a record's `position`.
pub const RECORD_POSITION_OFFSET: usize = offset_of!(RecordHeader, position);
/// Offset of a record's `stream_version`.
pub const RECORD_STREAM_VERSION_OFFSET: usize = offset_of!(RecordHeader, stream_version);
/// Offset of a record's `timestamp`.
pub const RECORD_TIMESTAMP_OFFSET: usize = offset_of!(RecordHeader, timestamp);
/// Offset of a record's `event_id`.
pub const RECORD_EVENT_ID_OFFSET: usize = offset_of!(RecordHeader, event_id);
/// Offset of a record's `flags` (then `stream_len`, `type_len`, `reserved0`).
pub const RECORD_FLAGS_OFFSET: usize = offset_of!(RecordHeader, flags);
/// Offset of a record's `stream_len`.
pub const RECORD_STREAM_LEN_OFFSET: usize = offset_of!(RecordHeader, stream_len);
/// Largest `record_len` the format can express.
pub const MAX_RECORD_LEN: u64 = (u32::MAX as u64) & !(ALIGN - 1);

const _: () = assert!(RECORD_HEADER_LEN == 72);
const _: () = assert!(RECORD_CRC_START == 8);
