//! The head file's slot (spec 5.2) and decoding the head file's bytes: the
//! durable and visible ends a writer published. Pure bytes; reading and
//! writing the file is `storage::head`'s.
//!
//! Invariants of a slot [`HeadSlot::parse`] accepts: magic, CRC, a supported
//! version, zero flags and reserved fields, `128 <= durable_end <=
//! visible_end`.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::{Damage, DamageKind};
use crate::format::{SEGMENT_HEADER_LEN, check_version, crc};

/// Magic bytes at the start of every head slot.
pub const HEAD_MAGIC: [u8; 4] = *b"HEAD";

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

/// Bytes of one head slot.
pub const HEAD_SLOT_LEN: usize = size_of::<HeadSlot>();
/// Bytes of the head file (two slots).
pub const HEAD_FILE_LEN: usize = 2 * HEAD_SLOT_LEN;
/// The head slot CRC covers `[HEAD_CRC_START, HEAD_SLOT_LEN)`.
pub const HEAD_CRC_START: usize = offset_of!(HeadSlot, format_version);
/// Offset of a head slot's CRC.
pub const HEAD_CRC_OFFSET: usize = offset_of!(HeadSlot, crc);
/// Offset of a head slot's `format_version`.
pub const HEAD_FORMAT_VERSION_OFFSET: usize = offset_of!(HeadSlot, format_version);
/// Offset of a head slot's `flags` (then the reserved fields).
pub const HEAD_FLAGS_OFFSET: usize = offset_of!(HeadSlot, flags);
/// Offset of a head slot's `durable_end`.
pub const HEAD_DURABLE_END_OFFSET: usize = offset_of!(HeadSlot, durable_end);

const _: () = assert!(HEAD_SLOT_LEN == 64);
const _: () = assert!(HEAD_CRC_START == 8);

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
        s.crc = U32::new(s.computed_crc());
        s
    }

    /// The CRC `crc` must hold: of the bytes from `format_version` on.
    pub(crate) fn computed_crc(&self) -> u32 {
        #[expect(
            clippy::indexing_slicing,
            reason = "HEAD_CRC_START is an offset inside HeadSlot (offset_of!)"
        )]
        crc(&self.as_bytes()[HEAD_CRC_START..])
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
        let want = s.computed_crc();
        if s.crc.get() != want {
            return Err(Damage::corrupt(
                at.saturating_add(HEAD_CRC_OFFSET as u64),
                format!(
                    "head slot CRC mismatch: expected {want:#010x}, found {:#010x}",
                    s.crc.get()
                ),
            ));
        }
        check_version(
            s.format_version.get(),
            at.saturating_add(HEAD_FORMAT_VERSION_OFFSET as u64),
        )?;
        if s.flags.get() != 0 || s.reserved0.get() != 0 || s.reserved1.get() != 0 {
            return Err(Damage::corrupt(
                at.saturating_add(HEAD_FLAGS_OFFSET as u64),
                "expected head slot flags and reserved fields to be zero",
            ));
        }
        let (d, v) = (s.durable_end.get(), s.visible_end.get());
        if d < SEGMENT_HEADER_LEN as u64 || d > v {
            return Err(Damage::corrupt(
                at.saturating_add(HEAD_DURABLE_END_OFFSET as u64),
                format!("expected {SEGMENT_HEADER_LEN} <= durable_end <= visible_end, found {d} and {v}"),
            ));
        }
        Ok(s)
    }
}

/// The decoded current slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Slot sequence number.
    pub sequence: u64,
    /// Base position of the segment the ends refer to.
    pub segment_base: u64,
    /// File offset below which every byte is durable.
    pub durable_end: u64,
    /// File offset up to which readers may deliver.
    pub visible_end: u64,
    /// Position of the first record past `visible_end`.
    pub next_position: u64,
}

/// Decode the current slot from the head file's bytes. `None` if no slot is
/// valid; the damage of each invalid slot is returned for reporting. A slot
/// that is intact (magic and CRC) but of an unsupported format version is an
/// error, not a slot to ignore: a newer writer wrote it.
pub(crate) fn decode_head(bytes: &[u8]) -> Result<(Option<Head>, Vec<Damage>), Damage> {
    let mut best: Option<Head> = None;
    let mut damage = Vec::new();
    for i in 0..2 {
        let at = i * HEAD_SLOT_LEN;
        let slot = bytes.get(at..).unwrap_or(&[]);
        match HeadSlot::parse(slot, at as u64) {
            Ok(s) => {
                let h = Head {
                    sequence: s.sequence.get(),
                    segment_base: s.segment_base.get(),
                    durable_end: s.durable_end.get(),
                    visible_end: s.visible_end.get(),
                    next_position: s.next_position.get(),
                };
                if best.is_none_or(|b| h.sequence > b.sequence) {
                    best = Some(h);
                }
            }
            Err(
                d @ Damage {
                    kind: DamageKind::Version(_),
                    ..
                },
            ) => return Err(d),
            Err(d) => damage.push(d),
        }
    }
    Ok((best, damage))
}
