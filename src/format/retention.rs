//! The retention record (spec 3.9, format version 4): the 80-byte payload
//! of an event of the system stream `$retention`, which says that the
//! segments before a position were removed from the front of the log by
//! log retention, by which rule, and what the chain hash is there.
//!
//! Invariants: [`RetentionRecord::decode`] accepts exactly the records the
//! spec allows (every reserved byte zero, each rule's limit present exactly
//! with its flag, the new start after the old one), so one record has one
//! encoding and a record that decodes re-encodes to the same bytes.

use std::mem::offset_of;

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The system stream retention records are appended to.
pub const RETENTION_STREAM: &str = "$retention";
/// The event type of every retention record.
pub const RETENTION_EVENT_TYPE: &str = "$retention";
/// `retention_version` of the records this build writes and reads.
pub const RETENTION_VERSION: u8 = 1;
/// Retention flag: segments were removed because they were older than `max_age`.
pub const RETAIN_BY_AGE: u8 = 1;
/// Retention flag: segments were removed because the log was larger than `max_bytes`.
pub const RETAIN_BY_SIZE: u8 = 2;
const RETAIN_KNOWN: u8 = RETAIN_BY_AGE | RETAIN_BY_SIZE;

/// The retention record (spec 3.9), as stored.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RetentionBody {
    pub retention_version: u8,
    pub flags: u8,
    pub reserved0: [u8; 6],
    pub removed_before: U64,
    pub previous_start: U64,
    pub newest_removed_timestamp: U64,
    pub max_age: U64,
    pub max_bytes: U64,
    pub chain_at: [u8; 32],
}

/// Bytes of a retention record.
pub const RETENTION_LEN: usize = size_of::<RetentionBody>();
const _: () = assert!(RETENTION_LEN == 80);

/// A retention record, decoded (spec 3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRecord {
    /// Every segment whose base is below this was removed; the segment
    /// based here is the log's first.
    pub removed_before: u64,
    /// The base of the log's first segment before this removal.
    pub previous_start: u64,
    /// The timestamp of the newest event removed (the `prev_timestamp` of
    /// the segment based at `removed_before`).
    pub newest_removed_timestamp: u64,
    /// With the age rule: the limit, nanoseconds (at least 1).
    pub max_age: Option<u64>,
    /// With the size rule: the limit, bytes (at least 1).
    pub max_bytes: Option<u64>,
    /// The chain hash at `removed_before` (the `chain_start` of the segment
    /// based there); zero in a log without the chain.
    pub chain_at: [u8; 32],
}

impl RetentionRecord {
    /// The 80 bytes of the record.
    pub fn encode(&self) -> [u8; RETENTION_LEN] {
        let mut flags = 0;
        if self.max_age.is_some() {
            flags |= RETAIN_BY_AGE;
        }
        if self.max_bytes.is_some() {
            flags |= RETAIN_BY_SIZE;
        }
        let r = RetentionBody {
            retention_version: RETENTION_VERSION,
            flags,
            reserved0: [0; 6],
            removed_before: U64::new(self.removed_before),
            previous_start: U64::new(self.previous_start),
            newest_removed_timestamp: U64::new(self.newest_removed_timestamp),
            max_age: U64::new(self.max_age.unwrap_or(0)),
            max_bytes: U64::new(self.max_bytes.unwrap_or(0)),
            chain_at: self.chain_at,
        };
        let mut out = [0u8; RETENTION_LEN];
        out.copy_from_slice(r.as_bytes());
        out
    }

    /// Decode a retention record: `Err((offset within the payload, what was
    /// expected))` for anything the spec does not allow.
    pub fn decode(b: &[u8]) -> Result<RetentionRecord, (usize, String)> {
        if b.len() != RETENTION_LEN {
            return Err((
                0,
                format!(
                    "expected a {RETENTION_LEN}-byte retention record, found {} bytes",
                    b.len()
                ),
            ));
        }
        let r = RetentionBody::read_from_bytes(b).map_err(|_| (0, "a retention record".to_string()))?;
        if r.retention_version != RETENTION_VERSION {
            return Err((
                offset_of!(RetentionBody, retention_version),
                format!(
                    "expected retention_version {RETENTION_VERSION}, found {}",
                    r.retention_version
                ),
            ));
        }
        let at_flags = offset_of!(RetentionBody, flags);
        if r.flags & !RETAIN_KNOWN != 0 {
            return Err((
                at_flags,
                format!("unknown retention flags {:#04x}", r.flags & !RETAIN_KNOWN),
            ));
        }
        if r.flags == 0 {
            return Err((at_flags, "expected at least one rule (AGE or SIZE)".into()));
        }
        if r.reserved0 != [0; 6] {
            return Err((
                offset_of!(RetentionBody, reserved0),
                "expected reserved0 to be zero".into(),
            ));
        }
        let field = |bit: u8, v: U64, at: usize, name: &str| -> Result<Option<u64>, (usize, String)> {
            match (r.flags & bit != 0, v.get()) {
                (true, 0) => Err((at, format!("expected {name} of at least 1 with its flag, found 0"))),
                (true, v) => Ok(Some(v)),
                (false, 0) => Ok(None),
                (false, v) => Err((at, format!("expected {name} zero without its flag, found {v}"))),
            }
        };
        let max_age = field(RETAIN_BY_AGE, r.max_age, offset_of!(RetentionBody, max_age), "max_age")?;
        let max_bytes = field(
            RETAIN_BY_SIZE,
            r.max_bytes,
            offset_of!(RetentionBody, max_bytes),
            "max_bytes",
        )?;
        let (removed_before, previous_start) = (r.removed_before.get(), r.previous_start.get());
        if removed_before <= previous_start {
            return Err((
                offset_of!(RetentionBody, removed_before),
                format!("expected removed_before above previous_start {previous_start}, found {removed_before}"),
            ));
        }
        Ok(RetentionRecord {
            removed_before,
            previous_start,
            newest_removed_timestamp: r.newest_removed_timestamp.get(),
            max_age,
            max_bytes,
            chain_at: r.chain_at,
        })
    }

    /// The rule as text: `age`, `size` or `age and size`.
    pub fn rule(&self) -> &'static str {
        match (self.max_age.is_some(), self.max_bytes.is_some()) {
            (true, true) => "age and size",
            (true, false) => "age",
            _ => "size",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn sample() -> RetentionRecord {
        RetentionRecord {
            removed_before: 120,
            previous_start: 40,
            newest_removed_timestamp: 7_000,
            max_age: Some(90),
            max_bytes: None,
            chain_at: [9; 32],
        }
    }

    #[test]
    fn offsets_are_the_spec_table() {
        assert_eq!(offset_of!(RetentionBody, flags), 1);
        assert_eq!(offset_of!(RetentionBody, removed_before), 8);
        assert_eq!(offset_of!(RetentionBody, previous_start), 16);
        assert_eq!(offset_of!(RetentionBody, newest_removed_timestamp), 24);
        assert_eq!(offset_of!(RetentionBody, max_age), 32);
        assert_eq!(offset_of!(RetentionBody, max_bytes), 40);
        assert_eq!(offset_of!(RetentionBody, chain_at), 48);
    }

    #[test]
    fn round_trips_and_rejects_every_reserved_or_inconsistent_byte() {
        let r = sample();
        let b = r.encode();
        assert_eq!(RetentionRecord::decode(&b), Ok(r));
        assert_eq!(r.rule(), "age");
        // Every single-byte change either fails or decodes to other values
        // that re-encode to the changed bytes (one encoding per record).
        for i in 0..RETENTION_LEN {
            let mut c = b;
            c[i] ^= 0x01;
            match RetentionRecord::decode(&c) {
                Ok(d) => assert_eq!(d.encode(), c, "byte {i}"),
                Err((at, _)) => assert!(at <= i, "byte {i} reported at {at}"),
            }
        }
        assert!(RetentionRecord::decode(&b[..79]).is_err());
        let mut none = b;
        none[1] = 0;
        assert!(RetentionRecord::decode(&none).is_err());
        let mut backwards = b;
        backwards[8..16].copy_from_slice(&40u64.to_le_bytes());
        assert!(RetentionRecord::decode(&backwards).is_err());
    }
}
