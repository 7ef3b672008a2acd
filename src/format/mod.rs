//! The on-disk structures of the log format (version 4, reading versions 1 to 3 too),
//! in one place: one file per table of `spec/format.md`, re-exported here so
//! that `crate::format::X` names every one.
//!
//! Each struct is the byte table of the same name in `spec/format.md`,
//! defined with zerocopy's little-endian field types so that it has alignment
//! 1, no padding, and one meaning on every platform. Every offset constant is
//! derived from its struct (`offset_of!`), written once here, and a test
//! checks them against the spec's tables. Parsing functions take `&[u8]`,
//! check every field before any arithmetic uses it, and report [`Damage`] with
//! a file offset; they never index out of bounds (`clippy::indexing_slicing`
//! is denied here) and never do I/O.
//!
//! | file | spec | holds |
//! |---|---|---|
//! | `segment` | 2.1 | [`SegmentHeader`], [`LogFormat`], `log_flags` |
//! | `frame_header` | 3.1 | [`FrameHeader`], frame kinds |
//! | `record_header` | 3.2 | [`RecordHeader`] |
//! | `checkpoint` | 3.5 | [`CheckpointBody`] |
//! | `head` | 5.2 | [`HeadSlot`], [`decode_head`] |
//! | `index_file` | 17 | [`IdxHeader`], [`IdxStreamRow`], [`IdxNamedRow`] |
//! | `stream_table` | 18 | [`StbHeader`], [`StbRow`] |
//! | `blockfile` | 16 | [`BlockFooter`] |
//! | `snapshot` | 20.2 | [`SnapshotHeader`] |
//! | `frame` | 3.3, 3.4, 3.6, 6 | frame validation (both layouts), [`frame::FrameCursor`], the segment walk |
//! | `frame_fields` | 3.1, 3.6, 17 | seals and batch headers encoded, chain slots, index bindings, unchecked search fields, resynchronisation |
//! | `batch` | 3.6, 9 | the version-3 batch body: varints, generated ids, encoding and parsing |
//! | `record` | 3.2 | encoding and parsing records |
//! | `meta` | 3.7 | system stream names, the rules record of stream metadata |
//! | `sealed` | 3.8 | sealed records: the sealed plaintext, the AAD, key ids |
//! | `varint` | 3.6 | LEB128 varints, minimal only |
//! | `retention` | 3.9 | the retention record of the `$retention` stream |
//! | `consumer` | 24 | the checkpoint slots of a named durable subscription |
//! | `serving` | 24.8 | versions of a projection: their file names, the serving file |
//! | `names`, `hash`, `damage` | 1, 17.3 | file names, stream hashes, [`Damage`] |
#![deny(clippy::indexing_slicing)]

pub(crate) mod batch;
pub(crate) mod blockfile;
pub(crate) mod compaction;
pub(crate) mod consumer;
pub(crate) mod damage;
pub(crate) mod frame;
mod frame_fields;
pub(crate) mod hash;
pub(crate) mod meta;
pub(crate) mod names;
pub(crate) mod record;
pub(crate) mod retention;
pub(crate) mod sealed;
pub(crate) mod serving;
pub(crate) mod varint;

mod checkpoint;
mod frame_header;
mod head;
mod index_file;
mod record_header;
mod segment;
pub(crate) mod snapshot;
mod stream_table;
pub(crate) mod subject_keys;

pub(crate) use blockfile::BlockFooter;
pub use checkpoint::*;
pub use frame_header::*;
pub use head::*;
pub use index_file::*;
pub use record_header::*;
pub use segment::*;
pub(crate) use snapshot::*;
pub use stream_table::*;

use crate::format::damage::{Damage, DamageKind};

/// The format version this build writes.
pub const CURRENT_FORMAT_VERSION: u16 = 5;
/// The oldest format version this build reads.
pub const OLDEST_SUPPORTED_FORMAT_VERSION: u16 = 1;

/// Every frame and record starts at, and has a length that is, a multiple of this.
pub const ALIGN: u64 = 8;

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

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use std::mem::offset_of;

    use zerocopy::IntoBytes;
    use zerocopy::little_endian::{U16, U32};

    use super::*;

    /// The offsets of spec/format.md's tables, written out by hand.
    #[test]
    fn offsets_match_the_spec_tables() {
        assert_eq!(offset_of!(SegmentHeader, format_version), 8);
        assert_eq!(offset_of!(SegmentHeader, log_flags), 10);
        assert_eq!(offset_of!(SegmentHeader, segment_flags), 12);
        assert_eq!(offset_of!(SegmentHeader, reserved0), 14);
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
        assert_eq!(offset_of!(IdxHeader, covered_from), 76);
        assert_eq!(offset_of!(IdxHeader, last_frame), 84);
        assert_eq!(offset_of!(IdxHeader, reserved1), 92);
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

        assert_eq!(CHECKPOINT_FRAME_PUBLIC_KEY_OFFSET, 72);
        assert_eq!(CHECKPOINT_FRAME_SIGNATURE_OFFSET, 104);
        assert_eq!(CHECKPOINT_FRAME_BODY_CRC_OFFSET, 168);
        assert_eq!(CHECKPOINT_FRAME_RESERVED_OFFSET, 172);

        assert_eq!(offset_of!(SnapshotHeader, stream_len), 12);
        assert_eq!(offset_of!(SnapshotHeader, crc), 60);
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
