//! The frame header (spec 3.1): magic, CRC, `frame_len`, positions, kind,
//! durable end and the chain slot; the frame kinds and the frame size limit.
//!
//! Invariants of a header [`FrameHeader::parse`] accepts: magic and CRC,
//! `frame_len` a multiple of 8 in `[72, MAX_FRAME_LEN]`, a kind of 1 to 3
//! with the count and length that kind requires, positions that fit in 64
//! bits, zero flags, and `durable_end` in `[128, frame offset]`.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::Damage;
use crate::format::{ALIGN, CHECKPOINT_FRAME_LEN, SEGMENT_HEADER_LEN, crc};

/// Magic bytes at the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"BTCH";

/// Frame kind: a batch of events.
pub const FRAME_KIND_BATCH: u8 = 1;
/// Frame kind: the seal that ends a sealed segment.
pub const FRAME_KIND_SEAL: u8 = 2;
/// Frame kind: a signed checkpoint (spec 3.5, version 2).
pub const FRAME_KIND_CHECKPOINT: u8 = 3;

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
/// Offset of a frame header's CRC.
pub const FRAME_HEADER_CRC_OFFSET: usize = offset_of!(FrameHeader, header_crc);
/// Offset of a frame header's `frame_len`.
pub const FRAME_LEN_OFFSET: usize = offset_of!(FrameHeader, frame_len);
/// Offset of a frame header's `first_position`.
pub const FRAME_FIRST_POSITION_OFFSET: usize = offset_of!(FrameHeader, first_position);
/// Offset of a frame header's `record_count`.
pub const FRAME_RECORD_COUNT_OFFSET: usize = offset_of!(FrameHeader, record_count);
/// Offset of a frame header's `kind`.
pub const FRAME_KIND_OFFSET: usize = offset_of!(FrameHeader, kind);
/// Offset of a frame header's `flags` (then `reserved`).
pub const FRAME_FLAGS_OFFSET: usize = offset_of!(FrameHeader, flags);
/// Offset of a frame header's `durable_end`.
pub const FRAME_DURABLE_END_OFFSET: usize = offset_of!(FrameHeader, durable_end);
/// Offset of the 32-byte chain slot in a frame header (spec 3.1, 21).
pub const FRAME_CHAIN_OFFSET: usize = offset_of!(FrameHeader, chain);

const _: () = assert!(FRAME_HEADER_LEN == 72);
const _: () = assert!(FRAME_CRC_START == 8);

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
        h.header_crc = U32::new(h.computed_crc());
        h
    }

    /// The CRC `header_crc` must hold: of the bytes from `frame_len` on.
    #[inline]
    pub(crate) fn computed_crc(&self) -> u32 {
        #[expect(
            clippy::indexing_slicing,
            reason = "FRAME_CRC_START is an offset inside FrameHeader (offset_of!)"
        )]
        crc(&self.as_bytes()[FRAME_CRC_START..])
    }

    /// Store `chain` in the chain slot of the frame header at the start of
    /// `frame` and recompute its CRC. `frame` holds at least the header.
    pub(crate) fn set_chain(frame: &mut [u8], chain: &[u8; 32]) {
        if let Some(slot) = frame.get_mut(FRAME_CHAIN_OFFSET..FRAME_HEADER_LEN) {
            slot.copy_from_slice(chain);
        }
        if let Some(body) = frame.get(FRAME_CRC_START..FRAME_HEADER_LEN) {
            let c = crc(body).to_le_bytes();
            if let Some(slot) = frame.get_mut(FRAME_HEADER_CRC_OFFSET..FRAME_CRC_START) {
                slot.copy_from_slice(&c);
            }
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
        let want = h.computed_crc();
        if h.header_crc.get() != want {
            return Err(Damage::corrupt(
                off.saturating_add(FRAME_HEADER_CRC_OFFSET as u64),
                format!(
                    "frame header CRC mismatch: expected {want:#010x}, found {:#010x}",
                    h.header_crc.get()
                ),
            ));
        }
        let len = h.frame_len.get();
        if len < FRAME_HEADER_LEN as u64 || len % ALIGN != 0 || len > MAX_FRAME_LEN {
            return Err(Damage::corrupt(
                off.saturating_add(FRAME_LEN_OFFSET as u64),
                format!(
                    "expected frame_len to be a multiple of 8, at least {FRAME_HEADER_LEN} and at most {MAX_FRAME_LEN}, \
                     found {len}"
                ),
            ));
        }
        match h.kind {
            FRAME_KIND_BATCH if h.record_count.get() == 0 => {
                return Err(Damage::corrupt(
                    off.saturating_add(FRAME_RECORD_COUNT_OFFSET as u64),
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
                    off.saturating_add(FRAME_KIND_OFFSET as u64),
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
                off.saturating_add(FRAME_FIRST_POSITION_OFFSET as u64),
                "expected first_position + record_count to fit in 64 bits",
            ));
        }
        // The chain slot is covered by the CRC; its value is the audit
        // chain's business (spec 21), checked by `check`, not by readers.
        if h.flags != 0 || h.reserved.get() != 0 {
            return Err(Damage::corrupt(
                off.saturating_add(FRAME_FLAGS_OFFSET as u64),
                "expected frame flags and reserved fields to be zero",
            ));
        }
        let durable = h.durable_end.get();
        if durable < SEGMENT_HEADER_LEN as u64 || durable > off {
            return Err(Damage::corrupt(
                off.saturating_add(FRAME_DURABLE_END_OFFSET as u64),
                format!(
                    "expected durable_end between {SEGMENT_HEADER_LEN} and the frame offset {off}, found {durable}"
                ),
            ));
        }
        Ok(h)
    }
}
