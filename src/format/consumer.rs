//! The checkpoint file of a named durable subscription (spec 24): two
//! alternating CRC-protected slots, like the head file's, each saying where
//! the subscription resumes; and a projection's file (spec 24.5): its model
//! and checkpoint under one CRC. Pure bytes; reading, writing and locking
//! the files is `es::consumer`'s and `es::runner`'s.
//!
//! Invariants of a slot [`ConsumerSlot::parse`] accepts: magic, CRC, version
//! 1, zero flags. Of two valid slots the one with the
//! higher sequence is current; a torn slot is ignored in favour of the
//! other; a file with no valid slot is damage, never "start from 0".

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::crc;
use crate::format::damage::Damage;

/// Magic bytes at the start of every slot.
pub const CONSUMER_MAGIC: [u8; 8] = *b"ANNALSUB";
/// The slot version this build writes and reads.
pub const CONSUMER_VERSION: u16 = 1;

/// One slot of a subscription's checkpoint file (spec 24.2).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct ConsumerSlot {
    pub magic: [u8; 8],
    pub crc: U32,
    pub version: U16,
    pub flags: U16,
    pub sequence: U64,
    pub next_position: U64,
    pub next_version: U64,
    pub filter: [u8; 16],
    pub last_event: U64,
}

/// Bytes of one slot.
pub const CONSUMER_SLOT_LEN: usize = size_of::<ConsumerSlot>();
/// Bytes of the file (two slots).
pub const CONSUMER_FILE_LEN: usize = 2 * CONSUMER_SLOT_LEN;
/// The CRC covers `[CONSUMER_CRC_START, CONSUMER_SLOT_LEN)`.
pub const CONSUMER_CRC_START: usize = offset_of!(ConsumerSlot, version);
const CRC_OFFSET: usize = offset_of!(ConsumerSlot, crc);
const VERSION_OFFSET: usize = offset_of!(ConsumerSlot, version);
const FLAGS_OFFSET: usize = offset_of!(ConsumerSlot, flags);

const _: () = assert!(CONSUMER_SLOT_LEN == 64);
const _: () = assert!(CONSUMER_CRC_START == 12);

/// Where a subscription resumes, as one slot says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Slot sequence number (the higher of two valid slots is current).
    pub sequence: u64,
    /// The next position to deliver (every event below it was handled or
    /// passed over).
    pub next_position: u64,
    /// For a stream subscription, the next version to deliver (else 0).
    pub next_version: u64,
    /// The first 16 bytes of BLAKE3 of the subscription's filter (spec 24.3).
    pub filter: [u8; 16],
    /// The fingerprint of the event at `next_position - 1` ([`fingerprint`]
    /// of its id), 0 if none is named: what proves, at the next open, that
    /// the log still holds the events the consumer handled.
    pub last_event: u64,
}

/// The fingerprint of an event id: its first 8 bytes, little-endian, or 1
/// if those are all zero (0 names no event).
pub(crate) fn fingerprint(id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(id.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(b).max(1)
}

impl ConsumerSlot {
    /// The slot stating `c`, its CRC filled in.
    pub(crate) fn new(c: &Checkpoint) -> ConsumerSlot {
        let mut s = ConsumerSlot {
            magic: CONSUMER_MAGIC,
            crc: U32::ZERO,
            version: U16::new(CONSUMER_VERSION),
            flags: U16::ZERO,
            sequence: U64::new(c.sequence),
            next_position: U64::new(c.next_position),
            next_version: U64::new(c.next_version),
            filter: c.filter,
            last_event: U64::new(c.last_event),
        };
        s.crc = U32::new(s.computed_crc());
        s
    }

    fn computed_crc(&self) -> u32 {
        crc(self.as_bytes().get(CONSUMER_CRC_START..).unwrap_or_default())
    }

    /// Parse one slot; `at` is its file offset, for error messages.
    pub(crate) fn parse(bytes: &[u8], at: u64) -> Result<Checkpoint, Damage> {
        let Ok((s, _)) = ConsumerSlot::ref_from_prefix(bytes) else {
            return Err(Damage::corrupt(
                at,
                format!(
                    "expected a {CONSUMER_SLOT_LEN}-byte checkpoint slot, found {} bytes",
                    bytes.len()
                ),
            ));
        };
        if s.magic != CONSUMER_MAGIC {
            return Err(Damage::corrupt(
                at,
                format!("expected checkpoint magic \"ANNALSUB\", found {:02x?}", s.magic),
            ));
        }
        let want = s.computed_crc();
        if s.crc.get() != want {
            return Err(Damage::corrupt(
                at.saturating_add(CRC_OFFSET as u64),
                format!(
                    "checkpoint slot CRC mismatch: expected {want:#010x}, found {:#010x}",
                    s.crc.get()
                ),
            ));
        }
        if s.version.get() != CONSUMER_VERSION {
            return Err(Damage::corrupt(
                at.saturating_add(VERSION_OFFSET as u64),
                format!(
                    "expected checkpoint version {CONSUMER_VERSION}, found {}",
                    s.version.get()
                ),
            ));
        }
        if s.flags.get() != 0 {
            return Err(Damage::corrupt(
                at.saturating_add(FLAGS_OFFSET as u64),
                "expected checkpoint flags to be zero",
            ));
        }
        Ok(Checkpoint {
            sequence: s.sequence.get(),
            next_position: s.next_position.get(),
            next_version: s.next_version.get(),
            filter: s.filter,
            last_event: s.last_event.get(),
        })
    }
}

/// Decode a checkpoint file's bytes: the current slot. A file of any other
/// length, or with no valid slot, is damage (the first slot's, or the
/// length's); one torn slot is not.
pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, Damage> {
    if bytes.len() != CONSUMER_FILE_LEN {
        return Err(Damage::corrupt(
            0,
            format!(
                "expected a {CONSUMER_FILE_LEN}-byte checkpoint file, found {} bytes",
                bytes.len()
            ),
        ));
    }
    let first = ConsumerSlot::parse(bytes, 0);
    let second = ConsumerSlot::parse(
        bytes.get(CONSUMER_SLOT_LEN..).unwrap_or_default(),
        CONSUMER_SLOT_LEN as u64,
    );
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(d), Err(_)) => Err(d),
    }
}

/// The offset of the slot the checkpoint with `sequence` is written to:
/// odd sequences in the first slot, even in the second.
pub(crate) fn slot_offset(sequence: u64) -> u64 {
    if sequence % 2 == 1 { 0 } else { CONSUMER_SLOT_LEN as u64 }
}

/// Magic bytes at the start of a projection file (spec 24.5).
pub const PROJECTION_MAGIC: [u8; 8] = *b"ANNALPRJ";
/// The projection file version this build writes and reads.
pub const PROJECTION_VERSION: u16 = 1;
/// Bytes before the model in a projection file.
pub const PROJECTION_HEADER_LEN: usize = 40;
/// The longest model a projection file may hold (1 GiB): a larger length is
/// damage, never an allocation.
pub const MAX_PROJECTION_MODEL: u64 = 1 << 30;

/// A projection file's bytes (spec 24.5): the model (already serialized),
/// the position after the last event folded into it and that event's
/// [`fingerprint`] (0: none), one CRC over all.
pub(crate) fn encode_projection(next_position: u64, last_event: u64, model: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROJECTION_HEADER_LEN + model.len() + 4);
    out.extend_from_slice(&PROJECTION_MAGIC);
    out.extend_from_slice(&PROJECTION_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&next_position.to_le_bytes());
    out.extend_from_slice(&last_event.to_le_bytes());
    out.extend_from_slice(&(model.len() as u64).to_le_bytes());
    out.extend_from_slice(model);
    let c = crc(&out);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b.get(at..at + 8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(a)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(b.get(at..at + 2).unwrap_or(&[0; 2]));
    u16::from_le_bytes(a)
}

/// Decode a projection file: `(next_position, last_event, model bytes)`.
pub(crate) fn decode_projection(bytes: &[u8]) -> Result<(u64, u64, &[u8]), Damage> {
    if bytes.len() < PROJECTION_HEADER_LEN + 4 {
        return Err(Damage::corrupt(
            0,
            format!(
                "expected a projection file of at least {} bytes, found {}",
                PROJECTION_HEADER_LEN + 4,
                bytes.len()
            ),
        ));
    }
    if bytes.get(..8) != Some(&PROJECTION_MAGIC[..]) {
        return Err(Damage::corrupt(0, "expected projection magic \"ANNALPRJ\""));
    }
    let version = le_u16(bytes, 8);
    if version != PROJECTION_VERSION {
        return Err(Damage::corrupt(
            8,
            format!("expected projection file version {PROJECTION_VERSION}, found {version}"),
        ));
    }
    if le_u16(bytes, 10) != 0 || le_u64(bytes, 12) & 0xffff_ffff != 0 {
        return Err(Damage::corrupt(
            10,
            "expected projection flags and reserved bytes to be zero",
        ));
    }
    let len = le_u64(bytes, 32);
    let want = (PROJECTION_HEADER_LEN as u64 + 4).saturating_add(len);
    if len > MAX_PROJECTION_MODEL || want != bytes.len() as u64 {
        return Err(Damage::corrupt(
            32,
            format!(
                "expected a model length that fills the file ({} bytes after the header and CRC), found {len}",
                bytes.len().saturating_sub(PROJECTION_HEADER_LEN + 4)
            ),
        ));
    }
    let body = bytes.len() - 4;
    let mut c = [0u8; 4];
    c.copy_from_slice(bytes.get(body..).unwrap_or(&[0; 4]));
    let stored = u32::from_le_bytes(c);
    let computed = crc(bytes.get(..body).unwrap_or_default());
    if stored != computed {
        return Err(Damage::corrupt(
            body as u64,
            format!("projection file CRC mismatch: expected {computed:#010x}, found {stored:#010x}"),
        ));
    }
    Ok((
        le_u64(bytes, 16),
        le_u64(bytes, 24),
        bytes.get(PROJECTION_HEADER_LEN..body).unwrap_or_default(),
    ))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn cp(sequence: u64, next_position: u64) -> Checkpoint {
        Checkpoint {
            sequence,
            next_position,
            next_version: 0,
            filter: [7; 16],
            last_event: 9,
        }
    }

    fn file(a: &Checkpoint, b: &Checkpoint) -> Vec<u8> {
        let mut v = ConsumerSlot::new(a).as_bytes().to_vec();
        v.extend_from_slice(ConsumerSlot::new(b).as_bytes());
        v
    }

    #[test]
    fn the_newer_slot_wins_and_a_torn_one_is_passed_over() {
        let bytes = file(&cp(3, 30), &cp(4, 40));
        assert_eq!(decode_checkpoint(&bytes).unwrap().next_position, 40);
        for at in 0..CONSUMER_FILE_LEN {
            let mut torn = bytes.clone();
            torn[at] ^= 0x10;
            let got = decode_checkpoint(&torn).unwrap();
            let want = if at < CONSUMER_SLOT_LEN { 40 } else { 30 };
            assert_eq!(got.next_position, want, "byte {at} flipped");
        }
    }

    #[test]
    fn no_valid_slot_or_a_wrong_length_is_damage_never_a_fresh_start() {
        let mut bytes = file(&cp(1, 10), &cp(2, 20));
        bytes[0] ^= 1;
        bytes[CONSUMER_SLOT_LEN + 20] ^= 1;
        let d = decode_checkpoint(&bytes).unwrap_err();
        assert_eq!(d.offset, 0, "{d:?}");
        for len in [0, 1, 64, 127, 129] {
            let d = decode_checkpoint(&vec![0u8; len]).unwrap_err();
            assert!(d.detail().contains("128-byte"), "{d:?}");
        }
    }

    #[test]
    fn a_projection_file_round_trips_and_every_flipped_byte_is_damage() {
        let bytes = encode_projection(42, 7, b"model bytes");
        assert_eq!(decode_projection(&bytes).unwrap(), (42, 7, &b"model bytes"[..]));
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            assert!(decode_projection(&b).is_err(), "byte {at}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_projection(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
