//! The frame header (spec 3.1): magic, CRC, `frame_len`, positions, kind,
//! durable end and the chain slot; the frame kinds and the frame size limit;
//! and the compact frame header of version 3 (spec 3.6, [`FrameHeaderV3`]),
//! whose chain slot is optional, with [`HeaderInfo`], what either says;
//! `Frame`, what a frame holds, and `parse_header`, the header checks of
//! either layout, which the walk (`frame`) and the header fields
//! (`frame_fields`) share.
//!
//! Invariants of a header [`FrameHeader::parse`] accepts: magic and CRC,
//! `frame_len` a multiple of 8 in `[72, MAX_FRAME_LEN]`, a kind of 1 to 3
//! with the count and length that kind requires, positions that fit in 64
//! bits, zero flags, and `durable_end` in `[128, frame offset]`.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::batch::BodyContext;
use crate::format::damage::Damage;
use crate::format::{ALIGN, CHECKPOINT_FRAME_LEN, Layout, SEGMENT_HEADER_LEN, crc};

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

/// Magic of a version-3 frame header (spec 3.6), at offset 4.
pub const FRAME_MAGIC_V3: [u8; 2] = *b"F3";
/// Version-3 frame flag: a 32-byte chain slot follows the fixed header.
pub const FRAME_FLAG_CHAINED: u8 = 1;
/// In a chained version-3 log, the first batch whose offset falls in a new
/// block of this many bytes of its segment carries a chain slot (spec 3.6).
pub const CHAIN_BLOCK: u64 = 16 << 10;
/// Bytes of a chain slot.
pub const CHAIN_SLOT_LEN: usize = 32;

/// Frame header of format version 3 (spec 3.6): 32 bytes, followed by a
/// 32-byte chain slot when `flags` has [`FRAME_FLAG_CHAINED`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct FrameHeaderV3 {
    pub header_crc: U32,
    pub magic: [u8; 2],
    pub kind: u8,
    pub flags: u8,
    pub frame_len: U32,
    pub record_count: U32,
    pub first_position: U64,
    pub durable_end: U32,
    pub body_crc: U32,
}

/// Bytes of a version-3 frame header without its chain slot.
pub const FRAME_HEADER_V3_LEN: usize = size_of::<FrameHeaderV3>();
/// Offset of a version-3 header's magic (the CRC covers `[4, header_len)`).
pub const FRAME_V3_MAGIC_OFFSET: usize = offset_of!(FrameHeaderV3, magic);
/// Offset of a version-3 header's `kind`.
pub const FRAME_V3_KIND_OFFSET: usize = offset_of!(FrameHeaderV3, kind);
/// Offset of a version-3 header's `flags`.
pub const FRAME_V3_FLAGS_OFFSET: usize = offset_of!(FrameHeaderV3, flags);
/// Offset of a version-3 header's `frame_len`.
pub const FRAME_V3_LEN_OFFSET: usize = offset_of!(FrameHeaderV3, frame_len);
/// Offset of a version-3 header's `record_count`.
pub const FRAME_V3_RECORD_COUNT_OFFSET: usize = offset_of!(FrameHeaderV3, record_count);
/// Offset of a version-3 header's `first_position`.
pub const FRAME_V3_FIRST_POSITION_OFFSET: usize = offset_of!(FrameHeaderV3, first_position);
/// Offset of a version-3 header's `durable_end`.
pub const FRAME_V3_DURABLE_END_OFFSET: usize = offset_of!(FrameHeaderV3, durable_end);
/// Offset of a version-3 header's `body_crc`.
pub const FRAME_V3_BODY_CRC_OFFSET: usize = offset_of!(FrameHeaderV3, body_crc);
/// The bytes of a version-3 frame header that a chain link hashes:
/// `[FRAME_V3_KIND_OFFSET, FRAME_V3_BODY_CRC_OFFSET)` (spec 21.2): not the
/// magic (fixed; a writer hides it while a frame waits for its chain slot),
/// nor the CRCs (derived), nor the slot (the result).
pub const FRAME_V3_LINKED: std::ops::Range<usize> = FRAME_V3_KIND_OFFSET..FRAME_V3_BODY_CRC_OFFSET;

const _: () = assert!(FRAME_HEADER_V3_LEN == 32);

/// What a frame header says, in either layout (versions 1 and 2: spec 3.1;
/// version 3: spec 3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderInfo {
    pub kind: u8,
    pub frame_len: u64,
    pub first_position: u64,
    pub record_count: u32,
    pub durable_end: u64,
    /// Bytes before the body: 72 (v1, v2); 32 or 64 (v3).
    pub header_len: usize,
    /// The frame stores a chain slot (always in v2 where the log is chained).
    pub chained: bool,
    /// Version 3: the CRC of the body; 0 otherwise.
    pub body_crc: u32,
}

impl FrameHeaderV3 {
    /// A new header with `header_crc` left zero (see [`FrameHeaderV3::seal_crc`]).
    pub(crate) fn new(
        kind: u8,
        chained: bool,
        frame_len: u64,
        first_position: u64,
        record_count: u32,
        durable_end: u64,
        body_crc: u32,
    ) -> FrameHeaderV3 {
        FrameHeaderV3 {
            header_crc: U32::ZERO,
            magic: FRAME_MAGIC_V3,
            kind,
            flags: if chained { FRAME_FLAG_CHAINED } else { 0 },
            frame_len: U32::new(frame_len as u32),
            record_count: U32::new(record_count),
            first_position: U64::new(first_position),
            durable_end: U32::new(durable_end as u32),
            body_crc: U32::new(body_crc),
        }
    }

    /// Bytes of the header with this `flags` byte: 32, or 64 with a chain slot.
    #[inline]
    pub(crate) fn len_with(flags: u8) -> usize {
        if flags & FRAME_FLAG_CHAINED != 0 {
            FRAME_HEADER_V3_LEN + CHAIN_SLOT_LEN
        } else {
            FRAME_HEADER_V3_LEN
        }
    }

    /// Fill in `header_crc` of the header at the start of `frame`: the CRC of
    /// `[4, header_len)` (the chain slot included when there is one).
    pub(crate) fn seal_crc(frame: &mut [u8]) {
        let flags = frame.get(FRAME_V3_FLAGS_OFFSET).copied().unwrap_or(0);
        let len = FrameHeaderV3::len_with(flags);
        if let Some(covered) = frame.get(4..len) {
            let c = crc(covered).to_le_bytes();
            if let Some(slot) = frame.get_mut(..4) {
                slot.copy_from_slice(&c);
            }
        }
    }

    /// Store `chain` in the chain slot of the chained version-3 frame at the
    /// start of `frame` and recompute its header CRC.
    pub(crate) fn set_chain(frame: &mut [u8], chain: &[u8; 32]) {
        if let Some(slot) = frame.get_mut(FRAME_HEADER_V3_LEN..FRAME_HEADER_V3_LEN + CHAIN_SLOT_LEN) {
            slot.copy_from_slice(chain);
        }
        FrameHeaderV3::seal_crc(frame);
    }

    /// Parse the version-3 frame header at the start of `bytes` (file offset
    /// `off`), with the checks of spec 3.6 in their order. `chained_log`:
    /// the log carries the audit chain (seals and checkpoints then carry a
    /// slot, and only then may a frame).
    pub(crate) fn parse(bytes: &[u8], off: u64, chained_log: bool) -> Result<HeaderInfo, Damage> {
        let at = |k: usize| off.saturating_add(k as u64);
        let Ok((h, _)) = FrameHeaderV3::ref_from_prefix(bytes) else {
            return Err(Damage::corrupt(
                off,
                format!(
                    "expected a {FRAME_HEADER_V3_LEN}-byte frame header, found {} bytes before the end of the file",
                    bytes.len()
                ),
            ));
        };
        if h.magic != FRAME_MAGIC_V3 {
            return Err(Damage::corrupt(
                at(FRAME_V3_MAGIC_OFFSET),
                format!("expected frame magic \"F3\", found {:02x?}", h.magic),
            ));
        }
        if h.flags & !FRAME_FLAG_CHAINED != 0 || (h.flags != 0 && !chained_log) {
            return Err(Damage::corrupt(
                at(FRAME_V3_FLAGS_OFFSET),
                format!(
                    "expected frame flags {} (the log {} the chain), found {:#04x}",
                    if chained_log { "0 or 1" } else { "0" },
                    if chained_log { "carries" } else { "does not carry" },
                    h.flags
                ),
            ));
        }
        let header_len = FrameHeaderV3::len_with(h.flags);
        let Some(covered) = bytes.get(4..header_len) else {
            return Err(Damage::corrupt(
                off,
                format!(
                    "expected a {header_len}-byte frame header, found {} bytes before the end of the file",
                    bytes.len()
                ),
            ));
        };
        let want = crc(covered);
        if h.header_crc.get() != want {
            return Err(Damage::corrupt(
                off,
                format!(
                    "frame header CRC mismatch: expected {want:#010x}, found {:#010x}",
                    h.header_crc.get()
                ),
            ));
        }
        let len = u64::from(h.frame_len.get());
        if len < header_len as u64 || len % ALIGN != 0 || len > MAX_FRAME_LEN {
            return Err(Damage::corrupt(
                at(FRAME_V3_LEN_OFFSET),
                format!(
                    "expected frame_len to be a multiple of 8, at least {header_len} and at most {MAX_FRAME_LEN}, \
                     found {len}"
                ),
            ));
        }
        let count = h.record_count.get();
        let chained = h.flags & FRAME_FLAG_CHAINED != 0;
        let checkpoint_len = (FRAME_HEADER_V3_LEN + CHAIN_SLOT_LEN + crate::format::CHECKPOINT_BODY_LEN) as u64;
        match h.kind {
            FRAME_KIND_BATCH if count == 0 => {
                return Err(Damage::corrupt(
                    at(FRAME_V3_RECORD_COUNT_OFFSET),
                    "expected a batch to hold at least one record, found 0",
                ));
            }
            FRAME_KIND_SEAL if count != 0 || len != header_len as u64 || chained != chained_log => {
                return Err(Damage::corrupt(
                    off,
                    format!(
                        "expected a seal frame of {} bytes (a chain slot exactly if the log is chained) and 0 records, \
                         found {len} bytes and {count} records",
                        FrameHeaderV3::len_with(u8::from(chained_log))
                    ),
                ));
            }
            FRAME_KIND_CHECKPOINT if count != 0 || !chained || len != checkpoint_len => {
                return Err(Damage::corrupt(
                    off,
                    format!(
                        "expected a chained checkpoint frame of {checkpoint_len} bytes and 0 records, found {len} bytes \
                         and {count} records"
                    ),
                ));
            }
            FRAME_KIND_BATCH | FRAME_KIND_SEAL | FRAME_KIND_CHECKPOINT => {}
            other => {
                return Err(Damage::corrupt(
                    at(FRAME_V3_KIND_OFFSET),
                    format!("expected frame kind 1, 2 or 3, found {other}"),
                ));
            }
        }
        let first = h.first_position.get();
        if first.checked_add(u64::from(count)).is_none() {
            return Err(Damage::corrupt(
                at(FRAME_V3_FIRST_POSITION_OFFSET),
                "expected first_position + record_count to fit in 64 bits",
            ));
        }
        let durable = u64::from(h.durable_end.get());
        if durable < SEGMENT_HEADER_LEN as u64 || durable > off {
            return Err(Damage::corrupt(
                at(FRAME_V3_DURABLE_END_OFFSET),
                format!(
                    "expected durable_end between {SEGMENT_HEADER_LEN} and the frame offset {off}, found {durable}"
                ),
            ));
        }
        if h.kind != FRAME_KIND_BATCH && h.body_crc.get() != 0 {
            return Err(Damage::corrupt(
                at(FRAME_V3_BODY_CRC_OFFSET),
                "expected body_crc to be zero in a seal or checkpoint frame",
            ));
        }
        Ok(HeaderInfo {
            kind: h.kind,
            frame_len: len,
            first_position: first,
            record_count: count,
            durable_end: durable,
            header_len,
            chained,
            body_crc: h.body_crc.get(),
        })
    }
}

impl FrameHeader {
    /// What this (version 1 or 2) header says.
    #[inline]
    pub(crate) fn info(&self) -> HeaderInfo {
        HeaderInfo {
            kind: self.kind,
            frame_len: self.frame_len.get(),
            first_position: self.first_position.get(),
            record_count: self.record_count.get(),
            durable_end: self.durable_end.get(),
            header_len: FRAME_HEADER_LEN,
            chained: true,
            body_crc: 0,
        }
    }
}

/// What a complete frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: u8,
    pub len: u64,
    pub first_position: u64,
    pub count: u32,
    pub durable_end: u64,
    /// Timestamp of the first record (batches only, once validated; 0 otherwise).
    pub first_timestamp: u64,
    /// Timestamp of the last record (batches only, once validated; 0 otherwise).
    pub last_timestamp: u64,
    /// Bytes of the header (72 in versions 1 and 2; 32 or 64 in version 3).
    pub header_len: u32,
    /// The header stores a chain slot (versions 1 and 2: always, zero when
    /// the log has no chain).
    pub chained: bool,
    /// Version 3: the CRC of the body (`body_crc`); 0 otherwise.
    pub body_crc: u32,
}

impl Frame {
    /// One past the last position of this frame.
    pub fn next_position(&self) -> u64 {
        self.first_position + self.count as u64
    }

    /// What the header `h` says (timestamps 0 until the body is validated).
    #[inline]
    fn of_info(h: HeaderInfo) -> Frame {
        Frame {
            kind: h.kind,
            len: h.frame_len,
            first_position: h.first_position,
            count: h.record_count,
            durable_end: h.durable_end,
            first_timestamp: 0,
            last_timestamp: 0,
            header_len: h.header_len as u32,
            chained: h.chained,
            body_crc: h.body_crc,
        }
    }
}

/// Parse and check the frame header at the start of `bytes` (file offset
/// `off`) in the segment's `layout` (spec 3.1, or 3.6 for version 3): the
/// header checks, nothing of the body.
#[inline]
pub(crate) fn parse_header(bytes: &[u8], off: u64, layout: &Layout) -> Result<Frame, Damage> {
    if layout.compact() {
        FrameHeaderV3::parse(bytes, off, layout.chained).map(Frame::of_info)
    } else {
        FrameHeader::parse(bytes, off).map(|h| Frame::of_info(h.info()))
    }
}

/// What parsing the version-3 body of `frame` (at file offset `off`) needs.
#[inline]
pub(crate) fn body_context(frame: &Frame, off: u64, layout: &Layout) -> BodyContext {
    BodyContext {
        first_position: frame.first_position,
        count: frame.count,
        prev_timestamp: layout.prev_timestamp,
        id_seed: layout.id_seed,
        at: off + u64::from(frame.header_len),
        header_len: frame.header_len as usize,
        version: layout.version,
    }
}
