//! The body of a signed checkpoint frame (spec 3.5): the 104 bytes after its
//! frame header. Signing and verifying are `audit`'s; the layout and the
//! completeness check (body CRC, zero reserved bytes) are here.
//!
//! Invariant of a body [`CheckpointBody::check`] accepts: `body_crc` is the
//! CRC of the public key and signature, and `reserved` is zero.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::FRAME_HEADER_LEN;
use crate::format::damage::Damage;

/// Body of a checkpoint frame (spec 3.5), after its 72-byte header.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct CheckpointBody {
    /// The ed25519 public key that made the signature.
    pub public_key: [u8; 32],
    /// The ed25519 signature of the message of spec 21.5.
    pub signature: [u8; 64],
    /// CRC of `public_key` and `signature`.
    pub body_crc: U32,
    /// Must be zero.
    pub reserved: U32,
}

/// Bytes of a checkpoint frame's body (spec 3.5).
pub const CHECKPOINT_BODY_LEN: usize = size_of::<CheckpointBody>();
/// Length of a checkpoint frame: header and body (spec 3.5).
pub const CHECKPOINT_FRAME_LEN: usize = FRAME_HEADER_LEN + CHECKPOINT_BODY_LEN;
/// Offset of `public_key` within the body.
pub const CHECKPOINT_PUBLIC_KEY_OFFSET: usize = offset_of!(CheckpointBody, public_key);
/// Offset of `signature` within the body.
pub const CHECKPOINT_SIGNATURE_OFFSET: usize = offset_of!(CheckpointBody, signature);
/// Offset of `body_crc` within the body; the CRC covers `[0, CHECKPOINT_BODY_CRC_OFFSET)`.
pub const CHECKPOINT_BODY_CRC_OFFSET: usize = offset_of!(CheckpointBody, body_crc);
/// Offset of `reserved` within the body.
pub const CHECKPOINT_RESERVED_OFFSET: usize = offset_of!(CheckpointBody, reserved);
/// Offset of `public_key` within the frame.
pub const CHECKPOINT_FRAME_PUBLIC_KEY_OFFSET: usize = FRAME_HEADER_LEN + CHECKPOINT_PUBLIC_KEY_OFFSET;
/// Offset of `signature` within the frame.
pub const CHECKPOINT_FRAME_SIGNATURE_OFFSET: usize = FRAME_HEADER_LEN + CHECKPOINT_SIGNATURE_OFFSET;
/// Offset of `body_crc` within the frame.
pub const CHECKPOINT_FRAME_BODY_CRC_OFFSET: usize = FRAME_HEADER_LEN + CHECKPOINT_BODY_CRC_OFFSET;
/// Offset of `reserved` within the frame.
pub const CHECKPOINT_FRAME_RESERVED_OFFSET: usize = FRAME_HEADER_LEN + CHECKPOINT_RESERVED_OFFSET;

/// The message a checkpoint signs (spec 21.5): a domain prefix, the log's
/// id, the checkpoint's `first_position` and the chain hash there.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct CheckpointMessage {
    /// [`CHECKPOINT_DOMAIN`].
    pub domain: [u8; 24],
    /// The log's id.
    pub log_id: [u8; 16],
    /// The checkpoint frame's `first_position`.
    pub position: U64,
    /// The chain hash after the last batch before the checkpoint.
    pub chain: [u8; 32],
}

/// Domain prefix of the signed message (spec 21.5): 19 ASCII bytes, 5 zeros.
pub const CHECKPOINT_DOMAIN: &[u8; 24] = b"annal checkpoint v2\0\0\0\0\0";

impl CheckpointMessage {
    /// The message for `log_id` at `position` with chain hash `chain`.
    pub(crate) fn new(log_id: &[u8; 16], position: u64, chain: &[u8; 32]) -> CheckpointMessage {
        CheckpointMessage {
            domain: *CHECKPOINT_DOMAIN,
            log_id: *log_id,
            position: U64::new(position),
            chain: *chain,
        }
    }
}

const _: () = assert!(size_of::<CheckpointMessage>() == 80);
const _: () = assert!(CHECKPOINT_BODY_LEN == 104);
const _: () = assert!(CHECKPOINT_FRAME_LEN == 176);
const _: () = assert!(CHECKPOINT_FRAME_BODY_CRC_OFFSET == 168);
const _: () = assert!(CHECKPOINT_FRAME_RESERVED_OFFSET == 172);

impl CheckpointBody {
    /// A body holding `public_key` and `signature`, its CRC filled in.
    pub(crate) fn new(public_key: [u8; 32], signature: [u8; 64]) -> CheckpointBody {
        let mut b = CheckpointBody {
            public_key,
            signature,
            body_crc: U32::ZERO,
            reserved: U32::ZERO,
        };
        b.body_crc = U32::new(b.crc());
        b
    }

    /// The CRC `body_crc` must hold: of the public key and the signature.
    pub(crate) fn crc(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.public_key);
        h.update(&self.signature);
        h.finalize()
    }

    /// Check the body at the start of `body` (the bytes after the header of
    /// a checkpoint frame; `body_off` is the body's file offset): its CRC,
    /// then its reserved bytes (spec 3.5, in this order). The signature is
    /// `check`'s business.
    pub(crate) fn check(body: &[u8], body_off: u64) -> Result<&CheckpointBody, Damage> {
        let off = body_off.saturating_sub(FRAME_HEADER_LEN as u64);
        let Ok((b, _)) = CheckpointBody::ref_from_prefix(body) else {
            // The frame header said 176 bytes, and they are there: only a
            // caller passing a short body gets here.
            return Err(Damage::corrupt(
                off,
                format!(
                    "expected a {CHECKPOINT_BODY_LEN}-byte checkpoint body, found {} bytes",
                    body.len()
                ),
            ));
        };
        let (want, found) = (b.crc(), b.body_crc.get());
        if want != found {
            return Err(Damage::corrupt(
                off.saturating_add(CHECKPOINT_FRAME_BODY_CRC_OFFSET as u64),
                format!("checkpoint body CRC mismatch: expected {want:#010x}, found {found:#010x}"),
            ));
        }
        if b.reserved.get() != 0 {
            return Err(Damage::corrupt(
                off.saturating_add(CHECKPOINT_FRAME_RESERVED_OFFSET as u64),
                "expected the checkpoint's reserved bytes to be zero",
            ));
        }
        Ok(b)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;
    use crate::format::crc;

    #[test]
    fn the_crc_covers_key_and_signature() {
        let b = CheckpointBody::new([1; 32], [2; 64]);
        let bytes = b.as_bytes();
        assert_eq!(b.body_crc.get(), crc(bytes.get(..96).unwrap()));
        assert!(CheckpointBody::check(bytes, 572).is_ok());
        let mut bad = bytes.to_vec();
        bad[100] = 1;
        assert_eq!(CheckpointBody::check(&bad, 572).unwrap_err().offset, 672);
        bad[0] ^= 1;
        assert_eq!(CheckpointBody::check(&bad, 572).unwrap_err().offset, 668);
    }
}
