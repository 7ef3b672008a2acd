//! The on-disk structures of the log format (version 2, reading version 1 too),
//! in one place.
//!
//! Each struct here is the byte table of the same name in `spec/format.md`,
//! defined with zerocopy's little-endian field types so that it has alignment
//! 1, no padding, and one meaning on every platform. The offset constants are
//! derived from the structs (`offset_of!`) and a test checks them against the
//! spec's tables. Parsing functions take `&[u8]`, check every field before any
//! arithmetic uses it, and report [`Damage`] with a file offset.

pub(crate) mod blockfile;
pub(crate) mod damage;
pub(crate) mod frame;
pub(crate) mod hash;
pub(crate) mod names;
pub(crate) mod record;

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::{Damage, DamageKind};

/// `log_flags` bit 0: the log carries the audit chain.
pub const LOG_FLAG_CHAIN: u16 = 1;
/// `log_flags` bit 1: the chain is keyed (BLAKE3 keyed mode).
pub const LOG_FLAG_KEYED: u16 = 2;

/// The format version this build writes.
pub const CURRENT_FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const OLDEST_SUPPORTED_FORMAT_VERSION: u16 = 1;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
/// Magic bytes at the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"BTCH";
/// Magic bytes at the start of every head slot.
pub const HEAD_MAGIC: [u8; 4] = *b"HEAD";

/// Frame kind: a batch of events.
pub const FRAME_KIND_BATCH: u8 = 1;
/// Frame kind: the seal that ends a sealed segment.
pub const FRAME_KIND_SEAL: u8 = 2;
/// Frame kind: a signed checkpoint (spec 3.5, version 2).
pub const FRAME_KIND_CHECKPOINT: u8 = 3;
/// Length of a checkpoint frame: header and body (spec 3.5).
pub const CHECKPOINT_FRAME_LEN: usize = 176;

/// Segment header (spec section 2.1).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct SegmentHeader {
    pub magic: [u8; 8],
    pub format_version: U16,
    pub log_flags: U16,
    pub reserved0: U32,
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

/// Frame header (spec section 3.1).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct FrameHeader {
    pub magic: [u8; 4],
    pub header_crc: U32,
    pub frame_len: U64,
    pub first_position: U64,
    pub record_count: U32,
    pub kind: u8,
    pub flags: u8,
    pub reserved: U16,
    pub durable_end: U64,
    pub chain: [u8; 32],
}

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

/// One slot of the head file (spec section 5.2).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct HeadSlot {
    pub magic: [u8; 4],
    pub crc: U32,
    pub format_version: U16,
    pub flags: U16,
    pub reserved0: U32,
    pub sequence: U64,
    pub segment_base: U64,
    pub durable_end: U64,
    pub visible_end: U64,
    pub next_position: U64,
    pub reserved1: U64,
}

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
    pub reserved1: [u8; 52],
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

/// Magic of segment index files.
pub const IDX_MAGIC: [u8; 8] = *b"ANNALIDX";
/// Magic of the stream table.
pub const STB_MAGIC: [u8; 8] = *b"ANNALSTB";
/// Version of the index file layout.
pub const INDEX_VERSION: u16 = 1;
/// Version of the stream table layout.
pub const STREAM_TABLE_VERSION: u16 = 1;
/// Bytes of an index header.
pub const IDX_HEADER_LEN: usize = size_of::<IdxHeader>();
/// Bytes of an index stream row.
pub const IDX_STREAM_ROW_LEN: usize = size_of::<IdxStreamRow>();
/// Bytes of an index category or type row.
pub const IDX_NAMED_ROW_LEN: usize = size_of::<IdxNamedRow>();
/// Bytes of a stream table header.
pub const STB_HEADER_LEN: usize = size_of::<StbHeader>();
/// Bytes of a stream table row.
pub const STB_ROW_LEN: usize = size_of::<StbRow>();

const _: () = assert!(IDX_HEADER_LEN == 128);
const _: () = assert!(IDX_STREAM_ROW_LEN == 56);
const _: () = assert!(IDX_NAMED_ROW_LEN == 32);
const _: () = assert!(STB_HEADER_LEN == 64);
const _: () = assert!(STB_ROW_LEN == 40);

/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = size_of::<SegmentHeader>();
/// Offset of the segment header's CRC; the CRC covers `[0, SEGMENT_HEADER_CRC_OFFSET)`.
pub const SEGMENT_HEADER_CRC_OFFSET: usize = offset_of!(SegmentHeader, header_crc);
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = size_of::<FrameHeader>();
/// The largest `frame_len` of the format (1 GiB, spec 8), checked from the
/// frame header alone (spec 3.1): a header claiming more is not a frame, so
/// no reader, recovery or `check` reads or allocates more than this for one
/// frame, whatever a damaged or forged file claims. A writer's
/// `max_batch_bytes` (the whole frame) is at most this.
pub const MAX_FRAME_LEN: u64 = 1 << 30;
/// The frame header CRC covers `[FRAME_CRC_START, FRAME_HEADER_LEN)`.
pub const FRAME_CRC_START: usize = offset_of!(FrameHeader, frame_len);
/// Offset of the 32-byte chain slot in a frame header (spec 3.1, 21).
pub const FRAME_CHAIN_OFFSET: usize = offset_of!(FrameHeader, chain);
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = size_of::<RecordHeader>();
/// The record CRC covers `[RECORD_CRC_START, record_len)`.
pub const RECORD_CRC_START: usize = offset_of!(RecordHeader, position);
/// Bytes of one head slot.
pub const HEAD_SLOT_LEN: usize = size_of::<HeadSlot>();
/// Bytes of the head file (two slots).
pub const HEAD_FILE_LEN: usize = 2 * HEAD_SLOT_LEN;
/// The head slot CRC covers `[HEAD_CRC_START, HEAD_SLOT_LEN)`.
pub const HEAD_CRC_START: usize = offset_of!(HeadSlot, format_version);
/// Every frame and record starts at, and has a length that is, a multiple of this.
pub const ALIGN: u64 = 8;
/// Largest `record_len` the format can express.
pub const MAX_RECORD_LEN: u64 = (u32::MAX as u64) & !(ALIGN - 1);

const _: () = assert!(SEGMENT_HEADER_LEN == 128);
const _: () = assert!(SEGMENT_HEADER_CRC_OFFSET == 124);
const _: () = assert!(FRAME_HEADER_LEN == 72);
const _: () = assert!(FRAME_CRC_START == 8);
const _: () = assert!(RECORD_HEADER_LEN == 72);
const _: () = assert!(RECORD_CRC_START == 8);
const _: () = assert!(HEAD_SLOT_LEN == 64);
const _: () = assert!(HEAD_CRC_START == 8);

/// Round `n` up to a multiple of [`ALIGN`]; `None` if that does not fit a
/// `u64` (only a length read from a file, or a sum of them, gets that far).
pub(crate) const fn align_up(n: u64) -> Option<u64> {
    n.checked_next_multiple_of(ALIGN)
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn check_version(found: u16, offset: u64) -> Result<(), Damage> {
    if (OLDEST_SUPPORTED_FORMAT_VERSION..=CURRENT_FORMAT_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(Damage {
            offset,
            kind: DamageKind::Version(found),
        })
    }
}

// ---------------------------------------------------------------- segment header

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
            reserved0: U32::ZERO,
            log_id: log.log_id,
            base_position: U64::new(base_position),
            prev_timestamp: U64::new(prev_timestamp),
            created_at: U64::new(created_at),
            chain_start: if log.chained() { chain_start } else { [0; 32] },
            key_id: if log.keyed() { log.key_id } else { [0; 16] },
            reserved1: [0; 20],
            header_crc: U32::ZERO,
        };
        h.header_crc = U32::new(crc(&h.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]));
        h
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
        check_version(h.format_version.get(), offset_of!(SegmentHeader, format_version) as u64)?;
        let want = crc(&h.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]);
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
                offset_of!(SegmentHeader, log_flags) as u64,
                format!(
                    "expected log_flags of format v{version} (bits {known:#x}, keyed only with the chain), found {flags:#06x}"
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

// ---------------------------------------------------------------- frame header

impl FrameHeader {
    /// A new frame header with its CRC filled in.
    pub(crate) fn new(
        kind: u8,
        frame_len: u64,
        first_position: u64,
        record_count: u32,
        durable_end: u64,
    ) -> FrameHeader {
        let mut h = FrameHeader {
            magic: FRAME_MAGIC,
            header_crc: U32::ZERO,
            frame_len: U64::new(frame_len),
            first_position: U64::new(first_position),
            record_count: U32::new(record_count),
            kind,
            flags: 0,
            reserved: U16::ZERO,
            durable_end: U64::new(durable_end),
            chain: [0; 32],
        };
        h.header_crc = U32::new(crc(&h.as_bytes()[FRAME_CRC_START..]));
        h
    }

    /// Store `chain` in the chain slot of the frame header at the start of
    /// `frame` and recompute its CRC. `frame` holds at least the header.
    pub(crate) fn set_chain(frame: &mut [u8], chain: &[u8; 32]) {
        if let Some(slot) = frame.get_mut(FRAME_CHAIN_OFFSET..FRAME_HEADER_LEN) {
            slot.copy_from_slice(chain);
        }
        if let Some(body) = frame.get(FRAME_CRC_START..FRAME_HEADER_LEN) {
            let c = crc(body).to_le_bytes();
            frame[4..8].copy_from_slice(&c);
        }
    }

    /// Parse the frame header at the start of `bytes`, which lie at file
    /// offset `off` (only named in errors, where offsets past it saturate), checking magic, CRC and every field that does not need the
    /// frame's body (spec 3.1). The rest of the frame need not be present; the
    /// caller checks `frame_len` against what is available.
    pub(crate) fn parse(bytes: &[u8], off: u64) -> Result<&FrameHeader, Damage> {
        let Ok((h, _)) = FrameHeader::ref_from_prefix(bytes) else {
            return Err(Damage::corrupt(
                off,
                format!(
                    "expected a {FRAME_HEADER_LEN}-byte frame header, found {} bytes before the end of the file",
                    bytes.len()
                ),
            ));
        };
        if h.magic != FRAME_MAGIC {
            return Err(Damage::corrupt(
                off,
                format!("expected frame magic \"BTCH\", found {:02x?}", h.magic),
            ));
        }
        let want = crc(&h.as_bytes()[FRAME_CRC_START..]);
        if h.header_crc.get() != want {
            return Err(Damage::corrupt(
                off.saturating_add(4),
                format!(
                    "frame header CRC mismatch: expected {want:#010x}, found {:#010x}",
                    h.header_crc.get()
                ),
            ));
        }
        let len = h.frame_len.get();
        if len < FRAME_HEADER_LEN as u64 || len % ALIGN != 0 || len > MAX_FRAME_LEN {
            return Err(Damage::corrupt(
                off.saturating_add(8),
                format!(
                    "expected frame_len to be a multiple of 8, at least {FRAME_HEADER_LEN} and at most {MAX_FRAME_LEN}, \
                     found {len}"
                ),
            ));
        }
        match h.kind {
            FRAME_KIND_BATCH if h.record_count.get() == 0 => {
                return Err(Damage::corrupt(
                    off.saturating_add(24),
                    "expected a batch to hold at least one record, found 0",
                ));
            }
            FRAME_KIND_SEAL if h.record_count.get() != 0 || len != FRAME_HEADER_LEN as u64 => {
                return Err(Damage::corrupt(
                    off,
                    format!(
                        "expected a seal frame of {FRAME_HEADER_LEN} bytes and 0 records, found {len} bytes and {} records",
                        h.record_count.get()
                    ),
                ));
            }
            FRAME_KIND_CHECKPOINT if h.record_count.get() != 0 || len != CHECKPOINT_FRAME_LEN as u64 => {
                return Err(Damage::corrupt(
                    off,
                    format!(
                        "expected a checkpoint frame of {CHECKPOINT_FRAME_LEN} bytes and 0 records, found {len} bytes and {} records",
                        h.record_count.get()
                    ),
                ));
            }
            FRAME_KIND_BATCH | FRAME_KIND_SEAL | FRAME_KIND_CHECKPOINT => {}
            other => {
                return Err(Damage::corrupt(
                    off.saturating_add(28),
                    format!("expected frame kind 1, 2 or 3, found {other}"),
                ));
            }
        }
        // Positions are u64 (spec 3.1): a frame's records must not run past
        // the last one (found by fuzzing: the sum overflowed, a panic in
        // debug builds).
        if h.first_position
            .get()
            .checked_add(u64::from(h.record_count.get()))
            .is_none()
        {
            return Err(Damage::corrupt(
                off.saturating_add(16),
                "expected first_position + record_count to fit in 64 bits",
            ));
        }
        // The chain slot is covered by the CRC; its value is the audit
        // chain's business (spec 21), checked by `check`, not by readers.
        if h.flags != 0 || h.reserved.get() != 0 {
            return Err(Damage::corrupt(
                off.saturating_add(29),
                "expected frame flags and reserved fields to be zero",
            ));
        }
        let durable = h.durable_end.get();
        if durable < SEGMENT_HEADER_LEN as u64 || durable > off {
            return Err(Damage::corrupt(
                off.saturating_add(32),
                format!(
                    "expected durable_end between {SEGMENT_HEADER_LEN} and the frame offset {off}, found {durable}"
                ),
            ));
        }
        Ok(h)
    }
}

// ---------------------------------------------------------------- head slot

impl HeadSlot {
    /// A new slot with its CRC filled in.
    pub(crate) fn new(
        version: u16,
        sequence: u64,
        segment_base: u64,
        durable_end: u64,
        visible_end: u64,
        next_position: u64,
    ) -> HeadSlot {
        let mut s = HeadSlot {
            magic: HEAD_MAGIC,
            crc: U32::ZERO,
            format_version: U16::new(version),
            flags: U16::ZERO,
            reserved0: U32::ZERO,
            sequence: U64::new(sequence),
            segment_base: U64::new(segment_base),
            durable_end: U64::new(durable_end),
            visible_end: U64::new(visible_end),
            next_position: U64::new(next_position),
            reserved1: U64::ZERO,
        };
        s.crc = U32::new(crc(&s.as_bytes()[HEAD_CRC_START..]));
        s
    }

    /// Parse one slot; `at` is its file offset, for error messages.
    pub(crate) fn parse(bytes: &[u8], at: u64) -> Result<&HeadSlot, Damage> {
        let Ok((s, _)) = HeadSlot::ref_from_prefix(bytes) else {
            return Err(Damage::corrupt(
                at,
                format!("expected a {HEAD_SLOT_LEN}-byte head slot, found {} bytes", bytes.len()),
            ));
        };
        if s.magic != HEAD_MAGIC {
            return Err(Damage::corrupt(
                at,
                format!("expected head magic \"HEAD\", found {:02x?}", s.magic),
            ));
        }
        let want = crc(&s.as_bytes()[HEAD_CRC_START..]);
        if s.crc.get() != want {
            return Err(Damage::corrupt(
                at.saturating_add(4),
                format!(
                    "head slot CRC mismatch: expected {want:#010x}, found {:#010x}",
                    s.crc.get()
                ),
            ));
        }
        check_version(s.format_version.get(), at.saturating_add(8))?;
        if s.flags.get() != 0 || s.reserved0.get() != 0 || s.reserved1.get() != 0 {
            return Err(Damage::corrupt(
                at.saturating_add(10),
                "expected head slot flags and reserved fields to be zero",
            ));
        }
        let (d, v) = (s.durable_end.get(), s.visible_end.get());
        if d < SEGMENT_HEADER_LEN as u64 || d > v {
            return Err(Damage::corrupt(
                at.saturating_add(32),
                format!("expected {SEGMENT_HEADER_LEN} <= durable_end <= visible_end, found {d} and {v}"),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of spec/format.md's tables, written out by hand.
    #[test]
    fn offsets_match_the_spec_tables() {
        assert_eq!(offset_of!(SegmentHeader, format_version), 8);
        assert_eq!(offset_of!(SegmentHeader, log_flags), 10);
        assert_eq!(offset_of!(SegmentHeader, reserved0), 12);
        assert_eq!(offset_of!(SegmentHeader, log_id), 16);
        assert_eq!(offset_of!(SegmentHeader, base_position), 32);
        assert_eq!(offset_of!(SegmentHeader, prev_timestamp), 40);
        assert_eq!(offset_of!(SegmentHeader, created_at), 48);
        assert_eq!(offset_of!(SegmentHeader, chain_start), 56);
        assert_eq!(offset_of!(SegmentHeader, key_id), 88);
        assert_eq!(offset_of!(SegmentHeader, reserved1), 104);
        assert_eq!(offset_of!(SegmentHeader, header_crc), 124);

        assert_eq!(offset_of!(FrameHeader, header_crc), 4);
        assert_eq!(offset_of!(FrameHeader, frame_len), 8);
        assert_eq!(offset_of!(FrameHeader, first_position), 16);
        assert_eq!(offset_of!(FrameHeader, record_count), 24);
        assert_eq!(offset_of!(FrameHeader, kind), 28);
        assert_eq!(offset_of!(FrameHeader, flags), 29);
        assert_eq!(offset_of!(FrameHeader, reserved), 30);
        assert_eq!(offset_of!(FrameHeader, durable_end), 32);
        assert_eq!(offset_of!(FrameHeader, chain), 40);

        assert_eq!(offset_of!(RecordHeader, crc), 4);
        assert_eq!(offset_of!(RecordHeader, position), 8);
        assert_eq!(offset_of!(RecordHeader, stream_version), 16);
        assert_eq!(offset_of!(RecordHeader, timestamp), 24);
        assert_eq!(offset_of!(RecordHeader, event_id), 32);
        assert_eq!(offset_of!(RecordHeader, schema_version), 48);
        assert_eq!(offset_of!(RecordHeader, flags), 52);
        assert_eq!(offset_of!(RecordHeader, stream_len), 54);
        assert_eq!(offset_of!(RecordHeader, type_len), 56);
        assert_eq!(offset_of!(RecordHeader, reserved0), 58);
        assert_eq!(offset_of!(RecordHeader, metadata_len), 60);
        assert_eq!(offset_of!(RecordHeader, payload_len), 64);
        assert_eq!(offset_of!(RecordHeader, reserved1), 68);

        assert_eq!(offset_of!(HeadSlot, crc), 4);
        assert_eq!(offset_of!(HeadSlot, format_version), 8);
        assert_eq!(offset_of!(HeadSlot, sequence), 16);
        assert_eq!(offset_of!(HeadSlot, segment_base), 24);
        assert_eq!(offset_of!(HeadSlot, durable_end), 32);
        assert_eq!(offset_of!(HeadSlot, visible_end), 40);
        assert_eq!(offset_of!(HeadSlot, next_position), 48);
        assert_eq!(offset_of!(HeadSlot, reserved1), 56);

        assert_eq!(offset_of!(IdxHeader, segment_base), 16);
        assert_eq!(offset_of!(IdxHeader, hash_mask), 32);
        assert_eq!(offset_of!(IdxHeader, stream_count), 40);
        assert_eq!(offset_of!(IdxHeader, frame_count), 64);
        assert_eq!(offset_of!(IdxHeader, names_len), 68);
        assert_eq!(offset_of!(IdxHeader, seal_crc), 72);
        assert_eq!(offset_of!(IdxHeader, reserved1), 76);
        assert_eq!(offset_of!(IdxStreamRow, first_version), 16);
        assert_eq!(offset_of!(IdxStreamRow, entry_start), 32);
        assert_eq!(offset_of!(IdxStreamRow, prev_segment), 40);
        assert_eq!(offset_of!(IdxStreamRow, prev_row), 48);
        assert_eq!(offset_of!(IdxNamedRow, entry_start), 16);
        assert_eq!(offset_of!(IdxNamedRow, reserved1), 24);
        assert_eq!(offset_of!(StbHeader, next_segment), 16);
        assert_eq!(offset_of!(StbHeader, stream_count), 32);
        assert_eq!(offset_of!(StbHeader, names_len), 40);
        assert_eq!(offset_of!(StbRow, last_version), 16);
        assert_eq!(offset_of!(StbRow, segment), 24);
        assert_eq!(offset_of!(StbRow, row), 32);
    }

    #[test]
    fn crc_is_the_iso_hdlc_crc() {
        assert_eq!(crc(b"123456789"), 0xCBF4_3926);
    }

    const PLAIN: LogFormat = LogFormat {
        log_id: [7; 16],
        version: CURRENT_FORMAT_VERSION,
        flags: 0,
        key_id: [0; 16],
    };

    #[test]
    fn headers_round_trip() {
        let h = SegmentHeader::new(&PLAIN, 42, 5, 6, [0; 32]);
        let p = SegmentHeader::parse(h.as_bytes()).unwrap();
        assert_eq!(p.base_position.get(), 42);
        let f = FrameHeader::new(FRAME_KIND_BATCH, 144, 3, 1, 128);
        assert_eq!(FrameHeader::parse(f.as_bytes(), 128).unwrap().first_position.get(), 3);
        assert!(
            FrameHeader::parse(f.as_bytes(), 127).is_err(),
            "durable_end past the frame offset"
        );
        let s = HeadSlot::new(2, 1, 0, 128, 200, 9);
        assert_eq!(HeadSlot::parse(s.as_bytes(), 0).unwrap().next_position.get(), 9);
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut h = SegmentHeader::new(&PLAIN, 0, 0, 0, [0; 32]);
        h.format_version = U16::new(9);
        h.header_crc = U32::new(crc(&h.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]));
        let e = SegmentHeader::parse(h.as_bytes()).unwrap_err();
        assert_eq!(e.kind, DamageKind::Version(9));
        assert_eq!(e.offset, 8);
    }

    #[test]
    fn log_flags_follow_the_version() {
        let chained = LogFormat {
            flags: LOG_FLAG_CHAIN | LOG_FLAG_KEYED,
            key_id: [3; 16],
            ..PLAIN
        };
        let h = SegmentHeader::new(&chained, 0, 0, 0, [5; 32]);
        assert_eq!(LogFormat::of(SegmentHeader::parse(h.as_bytes()).unwrap()), chained);
        // Keyed without the chain, unknown bits, and any flag in v1 are refused.
        for (version, flags) in [(2, 2), (2, 4), (1, 1)] {
            let mut h = SegmentHeader::new(&PLAIN, 0, 0, 0, [0; 32]);
            h.format_version = U16::new(version);
            h.log_flags = U16::new(flags);
            h.header_crc = U32::new(crc(&h.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]));
            assert_eq!(
                SegmentHeader::parse(h.as_bytes()).unwrap_err().offset,
                10,
                "{version} {flags}"
            );
        }
    }
}
