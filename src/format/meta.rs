//! System streams and the rules record of stream metadata (spec 3.7,
//! format version 4): the names, and the 40-byte payload of a `$metadata`
//! event, encoded and decoded.
//!
//! Invariants: [`StreamRules::decode`] accepts exactly the records the spec
//! allows (every reserved byte zero, every flag's field consistent), so one
//! set of rules has one encoding and a record that decodes re-encodes to the
//! same bytes.

use std::mem::offset_of;

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first character of a system stream's name.
pub const SYSTEM_PREFIX: char = '$';
/// The prefix of a metadata stream's name: `$meta-S` holds the metadata of `S`.
pub const META_STREAM_PREFIX: &str = "$meta-";
/// The category of every metadata stream.
pub const META_CATEGORY: &str = "$meta";
/// The event type of every metadata event.
pub const META_EVENT_TYPE: &str = "$metadata";
/// The format version that gives system streams and metadata their meaning.
pub const META_FORMAT_VERSION: u16 = 4;

/// `rules_version` of the records this build writes and reads.
pub const RULES_VERSION: u8 = 1;
/// Rules flag: soft-deleted.
pub const RULE_DELETED: u8 = 1;
/// Rules flag: hard-deleted (a tombstone).
pub const RULE_TOMBSTONE: u8 = 2;
/// Rules flag: `truncate_before` is set.
pub const RULE_TRUNCATE_BEFORE: u8 = 4;
/// Rules flag: `max_count` is set.
pub const RULE_MAX_COUNT: u8 = 8;
/// Rules flag: `max_age` is set.
pub const RULE_MAX_AGE: u8 = 16;
const RULE_KNOWN: u8 = RULE_DELETED | RULE_TOMBSTONE | RULE_TRUNCATE_BEFORE | RULE_MAX_COUNT | RULE_MAX_AGE;

/// The rules record (spec 3.7), as stored.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RulesRecord {
    pub rules_version: u8,
    pub flags: u8,
    pub reserved0: [u8; 6],
    pub truncate_before: U64,
    pub max_count: U64,
    pub max_age: U64,
    pub reserved1: U64,
}

/// Bytes of a rules record.
pub const RULES_LEN: usize = size_of::<RulesRecord>();
const _: () = assert!(RULES_LEN == 40);

/// Whether `name` is a system stream's (spec 3.7).
pub fn is_system_stream(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

/// The metadata stream of `stream`.
pub fn meta_stream(stream: &str) -> String {
    format!("{META_STREAM_PREFIX}{stream}")
}

/// The stream whose metadata stream is `name`, if it is one.
pub fn meta_target(name: &str) -> Option<&str> {
    name.strip_prefix(META_STREAM_PREFIX)
}

/// One stream's rules, decoded (spec 3.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamRules {
    pub deleted: bool,
    pub tombstone: bool,
    pub truncate_before: Option<u64>,
    pub max_count: Option<u64>,
    /// Nanoseconds.
    pub max_age: Option<u64>,
}

impl StreamRules {
    /// The 40 bytes of the record. `max_count` and `max_age` of zero are
    /// stored as absent (they are at least 1 when present).
    pub fn encode(&self) -> [u8; RULES_LEN] {
        let (max_count, max_age) = (self.max_count.filter(|&n| n > 0), self.max_age.filter(|&n| n > 0));
        let truncate_before = if self.deleted {
            Some(self.truncate_before.unwrap_or(0))
        } else {
            self.truncate_before
        };
        let mut flags = 0;
        for (on, bit) in [
            (self.deleted, RULE_DELETED),
            (self.tombstone, RULE_TOMBSTONE),
            (truncate_before.is_some(), RULE_TRUNCATE_BEFORE),
            (max_count.is_some(), RULE_MAX_COUNT),
            (max_age.is_some(), RULE_MAX_AGE),
        ] {
            if on {
                flags |= bit;
            }
        }
        let r = RulesRecord {
            rules_version: RULES_VERSION,
            flags,
            reserved0: [0; 6],
            truncate_before: U64::new(truncate_before.unwrap_or(0)),
            max_count: U64::new(max_count.unwrap_or(0)),
            max_age: U64::new(max_age.unwrap_or(0)),
            reserved1: U64::new(0),
        };
        let mut out = [0u8; RULES_LEN];
        out.copy_from_slice(r.as_bytes());
        out
    }

    /// Decode a rules record: `Err((offset within the payload, what was
    /// expected))` for anything the spec does not allow.
    pub fn decode(b: &[u8]) -> Result<StreamRules, (usize, String)> {
        if b.len() != RULES_LEN {
            return Err((
                0,
                format!("expected a {RULES_LEN}-byte rules record, found {} bytes", b.len()),
            ));
        }
        let r = RulesRecord::read_from_bytes(b).map_err(|_| (0, "a rules record".to_string()))?;
        if r.rules_version != RULES_VERSION {
            return Err((
                offset_of!(RulesRecord, rules_version),
                format!("expected rules_version {RULES_VERSION}, found {}", r.rules_version),
            ));
        }
        let at_flags = offset_of!(RulesRecord, flags);
        if r.flags & !RULE_KNOWN != 0 {
            return Err((at_flags, format!("unknown rules flags {:#04x}", r.flags & !RULE_KNOWN)));
        }
        if r.reserved0 != [0; 6] {
            return Err((
                offset_of!(RulesRecord, reserved0),
                "expected reserved0 to be zero".into(),
            ));
        }
        if r.reserved1.get() != 0 {
            return Err((
                offset_of!(RulesRecord, reserved1),
                "expected reserved1 to be zero".into(),
            ));
        }
        let field = |bit: u8, v: U64, at: usize, min: u64, name: &str| -> Result<Option<u64>, (usize, String)> {
            match (r.flags & bit != 0, v.get()) {
                (true, v) if v >= min => Ok(Some(v)),
                (true, v) => Err((at, format!("expected {name} of at least {min}, found {v}"))),
                (false, 0) => Ok(None),
                (false, v) => Err((at, format!("expected {name} zero without its flag, found {v}"))),
            }
        };
        let truncate_before = field(
            RULE_TRUNCATE_BEFORE,
            r.truncate_before,
            offset_of!(RulesRecord, truncate_before),
            0,
            "truncate_before",
        )?;
        let max_count = field(
            RULE_MAX_COUNT,
            r.max_count,
            offset_of!(RulesRecord, max_count),
            1,
            "max_count",
        )?;
        let max_age = field(RULE_MAX_AGE, r.max_age, offset_of!(RulesRecord, max_age), 1, "max_age")?;
        let deleted = r.flags & RULE_DELETED != 0;
        if deleted && truncate_before.is_none() {
            return Err((at_flags, "expected TRUNCATE_BEFORE with DELETED".into()));
        }
        Ok(StreamRules {
            deleted,
            tombstone: r.flags & RULE_TOMBSTONE != 0,
            truncate_before,
            max_count,
            max_age,
        })
    }

    /// The lowest version of a stream whose newest version is `last` that
    /// these rules leave visible by version (truncation and count; age is
    /// applied per event). `u64::MAX` with a tombstone.
    pub fn min_version(&self, last: Option<u64>) -> u64 {
        if self.tombstone {
            return u64::MAX;
        }
        let by_count = match (self.max_count, last) {
            (Some(n), Some(l)) => (l + 1).saturating_sub(n),
            _ => 0,
        };
        self.truncate_before.unwrap_or(0).max(by_count)
    }

    /// The oldest timestamp these rules leave visible at time `now` (0: any).
    pub fn min_timestamp(&self, now: u64) -> u64 {
        self.max_age.map_or(0, |a| now.saturating_sub(a))
    }

    /// Whether a stream with these rules and newest version `last` reads as
    /// deleted (spec 3.7).
    pub fn reads_as_deleted(&self, last: Option<u64>) -> bool {
        self.tombstone || (self.deleted && last.is_none_or(|l| l < self.truncate_before.unwrap_or(0)))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_every_byte_is_checked() {
        let cases = [
            StreamRules::default(),
            StreamRules {
                deleted: true,
                truncate_before: Some(7),
                ..StreamRules::default()
            },
            StreamRules {
                tombstone: true,
                deleted: true,
                truncate_before: Some(0),
                ..StreamRules::default()
            },
            StreamRules {
                truncate_before: Some(3),
                max_count: Some(10),
                max_age: Some(90 * 86_400 * 1_000_000_000),
                ..StreamRules::default()
            },
        ];
        for r in cases {
            let b = r.encode();
            assert_eq!(StreamRules::decode(&b), Ok(r));
            // Every single-byte change is either refused or another valid
            // record that encodes to the changed bytes (a value field).
            for i in 0..RULES_LEN {
                for x in [1u8, 0x80] {
                    let mut c = b;
                    c[i] ^= x;
                    if let Ok(d) = StreamRules::decode(&c) {
                        assert_eq!(d.encode(), c, "byte {i}");
                        assert_ne!(d, r, "byte {i}");
                    }
                }
            }
        }
        assert!(StreamRules::decode(&[0; 39]).is_err());
        let mut b = StreamRules::default().encode();
        b[1] = RULE_DELETED;
        assert_eq!(StreamRules::decode(&b).unwrap_err().0, 1);
    }

    #[test]
    fn visibility_bounds() {
        let r = StreamRules {
            truncate_before: Some(5),
            max_count: Some(3),
            ..StreamRules::default()
        };
        assert_eq!(r.min_version(Some(20)), 18);
        assert_eq!(r.min_version(Some(6)), 5);
        assert_eq!(r.min_version(None), 5);
        let d = StreamRules {
            deleted: true,
            truncate_before: Some(10),
            ..StreamRules::default()
        };
        assert!(d.reads_as_deleted(Some(9)));
        assert!(!d.reads_as_deleted(Some(10)));
        assert_eq!(
            StreamRules {
                max_age: Some(10),
                ..StreamRules::default()
            }
            .min_timestamp(100),
            90
        );
        assert!(meta_target("$meta-order-1") == Some("order-1") && is_system_stream("$meta-x"));
    }
}
