//! Format version 4 (spec 3.7), from the spec's tables alone: a decoder of
//! the 40-byte rules record of a `$meta-S` event and the visibility rule.
//! Used by `tests/golden_v4_vectors.rs` and
//! `tests/golden_compacted_vector.rs`.
//!
//! Nothing here calls annal (in particular not `annal::format::meta`): the
//! bytes are read from the table of spec 3.7 and the rule is its
//! "Visibility" paragraph, written out.

#![allow(dead_code)]

/// Spec 3.7: the prefix of a system stream.
pub const SYSTEM_PREFIX: &str = "$";
/// Spec 3.7: the metadata stream of `S` is `$meta-S`.
pub const META_PREFIX: &str = "$meta-";
/// Spec 3.7: the event type of every metadata event.
pub const META_TYPE: &str = "$metadata";
/// Spec 3.7: the length of the rules record.
pub const RULES_LEN: usize = 40;

/// Spec 3.7 `flags`, bit by bit.
pub const DELETED: u8 = 1;
pub const TOMBSTONE: u8 = 2;
pub const TRUNCATE_BEFORE: u8 = 4;
pub const MAX_COUNT: u8 = 8;
pub const MAX_AGE: u8 = 16;
/// The names of the flags, in bit order.
pub const FLAG_NAMES: [(u8, &str); 5] = [
    (DELETED, "DELETED"),
    (TOMBSTONE, "TOMBSTONE"),
    (TRUNCATE_BEFORE, "TRUNCATE_BEFORE"),
    (MAX_COUNT, "MAX_COUNT"),
    (MAX_AGE, "MAX_AGE"),
];

/// One rules record, field by field (spec 3.7 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub rules_version: u8,
    pub flags: u8,
    pub truncate_before: u64,
    pub max_count: u64,
    pub max_age: u64,
}

impl Rules {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn flag_names(&self) -> Vec<String> {
        FLAG_NAMES
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, n)| (*n).to_owned())
            .collect()
    }

    /// The 40 bytes of this record (spec 3.7 table).
    pub fn encode(&self) -> [u8; RULES_LEN] {
        let mut b = [0u8; RULES_LEN];
        b[0] = self.rules_version;
        b[1] = self.flags;
        b[8..16].copy_from_slice(&self.truncate_before.to_le_bytes());
        b[16..24].copy_from_slice(&self.max_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.max_age.to_le_bytes());
        b
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Spec 3.7: the rules record `p`, or the first rule it breaks.
pub fn decode_rules(p: &[u8]) -> Result<Rules, String> {
    if p.len() != RULES_LEN {
        return Err(format!("payload of {} bytes, not 40", p.len()));
    }
    let r = Rules {
        rules_version: p[0],
        flags: p[1],
        truncate_before: u64_at(p, 8),
        max_count: u64_at(p, 16),
        max_age: u64_at(p, 24),
    };
    if r.rules_version != 1 {
        return Err(format!("rules_version {}", r.rules_version));
    }
    if r.flags & 0xe0 != 0 {
        return Err(format!("flags {:#04x}: bits 5-7 set", r.flags));
    }
    if p[2..8].iter().any(|&b| b != 0) {
        return Err("reserved0 not zero".into());
    }
    if p[32..40].iter().any(|&b| b != 0) {
        return Err("reserved1 not zero".into());
    }
    if !r.has(TRUNCATE_BEFORE) && r.truncate_before != 0 {
        return Err("truncate_before without TRUNCATE_BEFORE".into());
    }
    if r.has(MAX_COUNT) && r.max_count == 0 || !r.has(MAX_COUNT) && r.max_count != 0 {
        return Err(format!("max_count {} with flags {:#04x}", r.max_count, r.flags));
    }
    if r.has(MAX_AGE) && r.max_age == 0 || !r.has(MAX_AGE) && r.max_age != 0 {
        return Err(format!("max_age {} with flags {:#04x}", r.max_age, r.flags));
    }
    if r.has(DELETED) && !r.has(TRUNCATE_BEFORE) {
        return Err("DELETED without TRUNCATE_BEFORE".into());
    }
    Ok(r)
}

/// Spec 3.7: a metadata event (type, schema version, metadata, payload),
/// or why it is damage.
pub fn decode_meta_event(
    event_type: &str,
    schema_version: u32,
    metadata: &[u8],
    payload: &[u8],
) -> Result<Rules, String> {
    if event_type != META_TYPE || schema_version != 0 || !metadata.is_empty() {
        return Err(format!(
            "type {event_type:?}, schema version {schema_version}, {} bytes of metadata",
            metadata.len()
        ));
    }
    decode_rules(payload)
}

pub fn is_system(stream: &str) -> bool {
    stream.starts_with(SYSTEM_PREFIX)
}

/// `S` of a metadata stream `$meta-S` (spec 3.7).
pub fn meta_target(stream: &str) -> Option<&str> {
    stream.strip_prefix(META_PREFIX)
}

/// Spec 19: the part before the first `-`.
pub fn category(stream: &str) -> Option<&str> {
    stream.split_once('-').map(|(c, _)| c)
}

/// Spec 3.7 "Visibility": `None` if the event of version `v`, timestamp
/// `t` of a stream with rules `r` (newest metadata event) and newest
/// version `last` is visible at `now`, else the first rule that hides it.
pub fn hidden_by(r: Option<&Rules>, last: u64, v: u64, t: u64, now: u64) -> Option<&'static str> {
    let r = r?;
    if r.has(TOMBSTONE) {
        return Some("TOMBSTONE");
    }
    if r.has(TRUNCATE_BEFORE) && v < r.truncate_before {
        return Some("TRUNCATE_BEFORE");
    }
    // v + max_count > L, in u128 so that no sum overflows.
    if r.has(MAX_COUNT) && u128::from(v) + u128::from(r.max_count) <= u128::from(last) {
        return Some("MAX_COUNT");
    }
    // t + max_age >= now; a sum past 2^64 - 1 counts as visible.
    if r.has(MAX_AGE) && u128::from(t) + u128::from(r.max_age) < u128::from(now) {
        return Some("MAX_AGE");
    }
    None
}

/// Spec 3.7: whether a stream with rules `r` and newest version `last`
/// (`None`: no event) reads as deleted; `Some(tombstoned)`.
pub fn reads_as_deleted(r: Option<&Rules>, last: Option<u64>) -> Option<bool> {
    let r = r?;
    if r.has(TOMBSTONE) {
        return Some(true);
    }
    let any_at_or_above = last.is_some_and(|l| l >= r.truncate_before);
    (r.has(DELETED) && !any_at_or_above).then_some(false)
}
