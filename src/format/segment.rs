//! The segment header (spec 2.1) and what it says about the whole log
//! ([`LogFormat`]: id, format version, `log_flags`, key id).
//!
//! Invariants of a header [`SegmentHeader::parse`] accepts: magic, a
//! supported version, its CRC, only the flags of its version (keyed only with
//! the chain), and zero reserved bytes (`chain_start` and `key_id` zero
//! unless the flags use them).

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::Damage;
use crate::format::{all_zero, check_version, crc};

/// `log_flags` bit 0: the log carries the audit chain.
pub const LOG_FLAG_CHAIN: u16 = 1;
/// `log_flags` bit 1: the chain is keyed (BLAKE3 keyed mode).
pub const LOG_FLAG_KEYED: u16 = 2;

/// `segment_flags` bit 0 (format version 4, spec 3.10): the segment was
/// rewritten by compaction; its batches may leave gaps in position.
pub const SEGMENT_FLAG_COMPACTED: u16 = 1;
/// Offset of the segment header's `segment_flags`.
pub const SEGMENT_FLAGS_OFFSET: usize = offset_of!(SegmentHeader, segment_flags);

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";

/// Segment header (spec section 2.1).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct SegmentHeader {
    pub magic: [u8; 8],
    pub format_version: U16,
    pub log_flags: U16,
    pub segment_flags: U16,
    pub reserved0: U16,
    pub log_id: [u8; 16],
    pub base_position: U64,
    pub prev_timestamp: U64,
    pub created_at: U64,
    pub chain_start: [u8; 32],
    pub key_id: [u8; 16],
    pub reserved1: [u8; 20],
    pub header_crc: U32,
}

/// What every segment header of one log says about the whole log: its id,
/// the format version it is written in, its `log_flags` (the audit chain,
/// spec 21) and the id of its chain key (keyed mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogFormat {
    pub log_id: [u8; 16],
    pub version: u16,
    pub flags: u16,
    pub key_id: [u8; 16],
}

impl LogFormat {
    /// What the segment header `h` says.
    pub(crate) fn of(h: &SegmentHeader) -> LogFormat {
        LogFormat {
            log_id: h.log_id,
            version: h.format_version.get(),
            flags: h.log_flags.get(),
            key_id: h.key_id,
        }
    }

    /// Whether the log carries the audit chain.
    pub(crate) fn chained(&self) -> bool {
        self.flags & LOG_FLAG_CHAIN != 0
    }

    /// Whether the chain is keyed.
    pub(crate) fn keyed(&self) -> bool {
        self.flags & LOG_FLAG_KEYED != 0
    }
}

/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = size_of::<SegmentHeader>();
/// Offset of the segment header's CRC; the CRC covers `[0, SEGMENT_HEADER_CRC_OFFSET)`.
pub const SEGMENT_HEADER_CRC_OFFSET: usize = offset_of!(SegmentHeader, header_crc);
/// Offset of the segment header's `format_version`.
pub const SEGMENT_FORMAT_VERSION_OFFSET: usize = offset_of!(SegmentHeader, format_version);
/// Offset of the segment header's `log_flags`.
pub const SEGMENT_LOG_FLAGS_OFFSET: usize = offset_of!(SegmentHeader, log_flags);
/// Offset of the segment header's `log_id`.
pub const SEGMENT_LOG_ID_OFFSET: usize = offset_of!(SegmentHeader, log_id);
/// Offset of the segment header's `base_position`.
pub const SEGMENT_BASE_POSITION_OFFSET: usize = offset_of!(SegmentHeader, base_position);
/// Offset of the segment header's `prev_timestamp`.
pub const SEGMENT_PREV_TIMESTAMP_OFFSET: usize = offset_of!(SegmentHeader, prev_timestamp);
/// Offset of the segment header's `created_at`.
pub const SEGMENT_CREATED_AT_OFFSET: usize = offset_of!(SegmentHeader, created_at);
/// Offset of the segment header's `chain_start`.
pub const SEGMENT_CHAIN_START_OFFSET: usize = offset_of!(SegmentHeader, chain_start);
/// Offset of the segment header's `key_id`.
pub const SEGMENT_KEY_ID_OFFSET: usize = offset_of!(SegmentHeader, key_id);

const _: () = assert!(SEGMENT_HEADER_LEN == 128);
const _: () = assert!(SEGMENT_HEADER_CRC_OFFSET == 124);

impl SegmentHeader {
    /// A new header with its CRC filled in. `chain_start` is the chain hash
    /// before the segment's first batch (zero if the log has no chain).
    pub(crate) fn new(
        log: &LogFormat,
        base_position: u64,
        prev_timestamp: u64,
        created_at: u64,
        chain_start: [u8; 32],
    ) -> SegmentHeader {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            format_version: U16::new(log.version),
            log_flags: U16::new(log.flags),
            segment_flags: U16::ZERO,
            reserved0: U16::ZERO,
            log_id: log.log_id,
            base_position: U64::new(base_position),
            prev_timestamp: U64::new(prev_timestamp),
            created_at: U64::new(created_at),
            chain_start: if log.chained() { chain_start } else { [0; 32] },
            key_id: if log.keyed() { log.key_id } else { [0; 16] },
            reserved1: [0; 20],
            header_crc: U32::ZERO,
        };
        h.header_crc = U32::new(h.computed_crc());
        h
    }

    /// The CRC `header_crc` must hold: of the bytes before it.
    pub(crate) fn computed_crc(&self) -> u32 {
        #[expect(
            clippy::indexing_slicing,
            reason = "SEGMENT_HEADER_CRC_OFFSET is an offset inside SegmentHeader (offset_of!)"
        )]
        crc(&self.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET])
    }

    /// Parse and check the header at the start of `file` (spec 2.1).
    pub(crate) fn parse(file: &[u8]) -> Result<&SegmentHeader, Damage> {
        let Ok((h, _)) = SegmentHeader::ref_from_prefix(file) else {
            return Err(Damage::corrupt(
                0,
                format!(
                    "expected a {SEGMENT_HEADER_LEN}-byte segment header, found a file of {} bytes",
                    file.len()
                ),
            ));
        };
        if h.magic != SEGMENT_MAGIC {
            return Err(Damage::corrupt(
                0,
                format!("expected segment magic {:?}, found {:02x?}", "ANNALSEG", h.magic),
            ));
        }
        check_version(h.format_version.get(), SEGMENT_FORMAT_VERSION_OFFSET as u64)?;
        let want = h.computed_crc();
        if h.header_crc.get() != want {
            return Err(Damage::corrupt(
                SEGMENT_HEADER_CRC_OFFSET as u64,
                format!(
                    "segment header CRC mismatch: expected {want:#010x}, found {:#010x}",
                    h.header_crc.get()
                ),
            ));
        }
        let (version, flags) = (h.format_version.get(), h.log_flags.get());
        let known = if version >= 2 {
            LOG_FLAG_CHAIN | LOG_FLAG_KEYED
        } else {
            0
        };
        let keyed_without_chain = flags & LOG_FLAG_KEYED != 0 && flags & LOG_FLAG_CHAIN == 0;
        if flags & !known != 0 || keyed_without_chain {
            return Err(Damage::corrupt(
                SEGMENT_LOG_FLAGS_OFFSET as u64,
                format!(
                    "expected log_flags of format v{version} (bits {known:#x}, keyed only with the chain), found {flags:#06x}"
                ),
            ));
        }
        let segment_flags = h.segment_flags.get();
        let known_segment = if version >= crate::format::meta::META_FORMAT_VERSION {
            SEGMENT_FLAG_COMPACTED
        } else {
            0
        };
        if segment_flags & !known_segment != 0 {
            return Err(Damage::corrupt(
                SEGMENT_FLAGS_OFFSET as u64,
                format!(
                    "expected segment_flags of format v{version} (bits {known_segment:#x}), found {segment_flags:#06x}"
                ),
            ));
        }
        let log = LogFormat::of(h);
        let chain_start: &[u8] = if log.chained() { &[] } else { &h.chain_start[..] };
        let key_id: &[u8] = if log.keyed() { &[] } else { &h.key_id[..] };
        for (name, off, bytes) in [
            (
                "reserved0",
                offset_of!(SegmentHeader, reserved0),
                h.reserved0.as_bytes(),
            ),
            ("chain_start", offset_of!(SegmentHeader, chain_start), chain_start),
            ("key_id", offset_of!(SegmentHeader, key_id), key_id),
            ("reserved1", offset_of!(SegmentHeader, reserved1), &h.reserved1[..]),
        ] {
            if !all_zero(bytes) {
                return Err(Damage::corrupt(
                    off as u64,
                    format!("expected segment header field {name} to be zero"),
                ));
            }
        }
        Ok(h)
    }
}

/// How the frames of one segment are laid out, and what reading a version-3
/// batch needs besides its bytes: everything a reader takes from the
/// segment header to read any frame of the segment on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The segment's `format_version`.
    pub version: u16,
    /// The log carries the audit chain.
    pub chained: bool,
    /// The segment header's `prev_timestamp` (version 3 stores batch
    /// timestamps from it).
    pub prev_timestamp: u64,
    /// Version 3: the log's generated-id seed (`format::batch::id_seed`).
    pub id_seed: u128,
    /// Version 4: the segment was rewritten by compaction (spec 3.10): its
    /// frames may skip positions.
    pub compacted: bool,
}

impl Layout {
    /// Versions 1 and 2: frames and records of spec 3.1 to 3.5, which need
    /// nothing from the segment header.
    pub(crate) const V2: Layout = Layout {
        version: 2,
        chained: true,
        prev_timestamp: 0,
        id_seed: 0,
        compacted: false,
    };

    /// The layout of the segment whose header is `h`.
    pub(crate) fn of(h: &SegmentHeader) -> Layout {
        Layout {
            compacted: h.segment_flags.get() & SEGMENT_FLAG_COMPACTED != 0,
            ..Layout::for_log(&LogFormat::of(h), h.prev_timestamp.get())
        }
    }

    /// The layout of a segment of the log `log` whose header's
    /// `prev_timestamp` is `prev_timestamp`.
    pub(crate) fn for_log(log: &LogFormat, prev_timestamp: u64) -> Layout {
        if log.version < 3 {
            return Layout::V2;
        }
        Layout {
            version: log.version,
            chained: log.chained(),
            prev_timestamp,
            id_seed: crate::format::batch::id_seed(&log.log_id),
            compacted: false,
        }
    }

    /// Version 3 (spec 3.6): compact frames and batches.
    #[inline]
    pub(crate) fn compact(&self) -> bool {
        self.version >= 3
    }
}
