//! The compaction record (spec 3.10, format version 4): the payload of an
//! event of the system stream `$compaction`, which says that one sealed
//! segment was rewritten without events that stream metadata hid, which
//! events those were (as runs: a stream, its versions, their positions), and
//! which chain hashes bind the rewritten file to the history it replaces.
//!
//! Invariants: [`CompactionRecord::decode`] accepts exactly the records the
//! spec allows (reserved bytes zero, runs in position order inside the
//! segment, not overlapping, each of at least one event, stream names of 1
//! to 65,535 bytes of UTF-8, the total matching `removed_count`), so one
//! record has one encoding and a record that decodes re-encodes to the same
//! bytes. Decoding allocates at most in proportion to the payload's length.

use std::mem::offset_of;

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::varint::{get_varint, put_varint};

/// The system stream compaction records are appended to.
pub const COMPACTION_STREAM: &str = "$compaction";
/// The event type of every compaction record.
pub const COMPACTION_EVENT_TYPE: &str = "$compacted";
/// `compaction_version` of the records this build writes and reads.
pub const COMPACTION_VERSION: u8 = 1;

/// The fixed part of a compaction record (spec 3.10), as stored; the runs
/// follow it.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CompactionHead {
    pub compaction_version: u8,
    pub flags: u8,
    pub reserved0: [u8; 6],
    pub segment_base: U64,
    pub next_base: U64,
    pub compacted_len: U64,
    pub removed_count: U64,
    pub run_count: U64,
    pub original_end: [u8; 32],
    pub compacted_end: [u8; 32],
}

/// Bytes of the fixed part of a compaction record.
pub const COMPACTION_HEAD_LEN: usize = size_of::<CompactionHead>();
const _: () = assert!(COMPACTION_HEAD_LEN == 112);

/// Events removed from one batch of the original segment: the first
/// `count` records of a batch of `stream`, from version `first_version` at
/// position `first_position`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemovedRun {
    /// Position of the first event removed.
    pub first_position: u64,
    /// Events removed (at least 1).
    pub count: u64,
    /// Version of the first event removed.
    pub first_version: u64,
    /// The timestamp of the removed events (every record of a batch has its
    /// batch's timestamp, spec 3.6).
    pub timestamp: u64,
    /// The stream they belonged to.
    pub stream: String,
}

impl RemovedRun {
    /// The position after the run's last event.
    pub fn end(&self) -> u64 {
        self.first_position.saturating_add(self.count)
    }
}

/// A compaction record, decoded (spec 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionRecord {
    /// The base position of the segment rewritten.
    pub segment_base: u64,
    /// The base of the segment after it (its seal's `first_position`).
    pub next_base: u64,
    /// Bytes of the rewritten segment file.
    pub compacted_len: u64,
    /// The chain hash at the end of the segment as it was first written
    /// (its seal's chain slot, which the rewritten seal keeps); zero in a
    /// log without the chain.
    pub original_end: [u8; 32],
    /// The chain hash after the rewritten segment's last batch, linked from
    /// its `chain_start` (spec 3.10); zero in a log without the chain.
    pub compacted_end: [u8; 32],
    /// Every run of events missing from the rewritten segment (those of
    /// earlier compactions of the segment included), in position order.
    pub removed: Vec<RemovedRun>,
}

impl CompactionRecord {
    /// Events removed, in all runs.
    pub fn removed_count(&self) -> u64 {
        self.removed.iter().map(|r| r.count).fold(0u64, u64::saturating_add)
    }

    /// The bytes of the record.
    pub fn encode(&self) -> Vec<u8> {
        let head = CompactionHead {
            compaction_version: COMPACTION_VERSION,
            flags: 0,
            reserved0: [0; 6],
            segment_base: U64::new(self.segment_base),
            next_base: U64::new(self.next_base),
            compacted_len: U64::new(self.compacted_len),
            removed_count: U64::new(self.removed_count()),
            run_count: U64::new(self.removed.len() as u64),
            original_end: self.original_end,
            compacted_end: self.compacted_end,
        };
        let mut out = head.as_bytes().to_vec();
        let mut at = self.segment_base;
        for r in &self.removed {
            put_varint(&mut out, r.first_position.saturating_sub(at));
            put_varint(&mut out, r.count);
            put_varint(&mut out, r.first_version);
            put_varint(&mut out, r.timestamp);
            put_varint(&mut out, r.stream.len() as u64);
            out.extend_from_slice(r.stream.as_bytes());
            at = r.end();
        }
        out
    }

    /// Decode a compaction record: `Err((offset within the payload, what
    /// was expected))` for anything the spec does not allow.
    pub fn decode(b: &[u8]) -> Result<CompactionRecord, (usize, String)> {
        let Some((head, mut rest)) = b
            .split_at_checked(COMPACTION_HEAD_LEN)
            .and_then(|(h, r)| CompactionHead::read_from_bytes(h).ok().map(|h| (h, r)))
        else {
            return Err((
                0,
                format!(
                    "expected a compaction record of at least {COMPACTION_HEAD_LEN} bytes, found {} bytes",
                    b.len()
                ),
            ));
        };
        if head.compaction_version != COMPACTION_VERSION {
            return Err((
                offset_of!(CompactionHead, compaction_version),
                format!(
                    "expected compaction_version {COMPACTION_VERSION}, found {}",
                    head.compaction_version
                ),
            ));
        }
        if head.flags != 0 || head.reserved0 != [0; 6] {
            return Err((
                offset_of!(CompactionHead, flags),
                "expected flags and reserved0 to be zero".to_string(),
            ));
        }
        let (base, next) = (head.segment_base.get(), head.next_base.get());
        if next <= base {
            return Err((
                offset_of!(CompactionHead, next_base),
                format!("expected next_base above segment_base {base}, found {next}"),
            ));
        }
        let runs = head.run_count.get();
        // Each run takes at least 6 bytes: bound the count by the payload.
        if runs > (rest.len() / 6) as u64 {
            return Err((
                offset_of!(CompactionHead, run_count),
                format!(
                    "run_count {runs} does not fit in the {} bytes after the head",
                    rest.len()
                ),
            ));
        }
        let mut removed = Vec::with_capacity(runs as usize);
        let mut at = base;
        let mut total = 0u64;
        for _ in 0..runs {
            let off = b.len() - rest.len();
            let mut field = |what: &str| -> Result<u64, (usize, String)> {
                let o = b.len() - rest.len();
                let (v, n) = get_varint(rest).map_err(|e| (o, format!("{what}: {e:?}")))?;
                rest = rest.get(n..).unwrap_or_default();
                Ok(v)
            };
            let gap = field("a run's gap")?;
            let count = field("a run's count")?;
            let first_version = field("a run's first_version")?;
            let timestamp = field("a run's timestamp")?;
            let stream_len = field("a run's stream_len")?;
            let first_position = at
                .checked_add(gap)
                .ok_or((off, "a run past position 2^64 - 1".to_string()))?;
            let end = first_position.checked_add(count);
            if count == 0 || end.is_none_or(|e| e > next) || first_version.checked_add(count - 1).is_none() {
                return Err((
                    off,
                    format!(
                        "expected a run of at least one event inside the segment [{base}, {next}), found {count} \
                         events from position {first_position} (version {first_version})"
                    ),
                ));
            }
            if !(1..=u64::from(u16::MAX)).contains(&stream_len) {
                return Err((
                    off,
                    format!("expected a stream name of 1 to 65535 bytes, found {stream_len}"),
                ));
            }
            let name_at = b.len() - rest.len();
            let Some((name, tail)) = rest.split_at_checked(stream_len as usize) else {
                return Err((
                    name_at,
                    format!("expected {stream_len} bytes of stream name, found the end"),
                ));
            };
            let stream = std::str::from_utf8(name)
                .map_err(|_| (name_at, "expected the stream name to be UTF-8".to_string()))?
                .to_owned();
            rest = tail;
            at = end.unwrap_or(next);
            total = total.saturating_add(count);
            removed.push(RemovedRun {
                first_position,
                count,
                first_version,
                timestamp,
                stream,
            });
        }
        if !rest.is_empty() {
            return Err((
                b.len() - rest.len(),
                format!("expected the record to end, found {} more bytes", rest.len()),
            ));
        }
        if total != head.removed_count.get() {
            return Err((
                offset_of!(CompactionHead, removed_count),
                format!(
                    "expected removed_count {total} (the runs' sum), found {}",
                    head.removed_count.get()
                ),
            ));
        }
        Ok(CompactionRecord {
            segment_base: base,
            next_base: next,
            compacted_len: head.compacted_len.get(),
            original_end: head.original_end,
            compacted_end: head.compacted_end,
            removed,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    fn sample() -> CompactionRecord {
        CompactionRecord {
            segment_base: 100,
            next_base: 200,
            compacted_len: 4096,
            original_end: [7; 32],
            compacted_end: [9; 32],
            removed: vec![
                RemovedRun {
                    first_position: 100,
                    count: 3,
                    first_version: 0,
                    timestamp: 1_700_000_000_000_000_000,
                    stream: "order-1".into(),
                },
                RemovedRun {
                    first_position: 150,
                    count: 1,
                    first_version: 3,
                    timestamp: 1_700_000_000_000_000_001,
                    stream: "order-1".into(),
                },
            ],
        }
    }

    #[test]
    fn a_record_round_trips_and_has_one_encoding() {
        let r = sample();
        let b = r.encode();
        assert_eq!(b.len(), COMPACTION_HEAD_LEN + 2 * (4 + 9 + 7));
        assert_eq!(CompactionRecord::decode(&b).unwrap(), r);
        assert_eq!(CompactionRecord::decode(&b).unwrap().encode(), b);
    }

    #[test]
    fn every_truncation_and_every_reserved_byte_is_refused() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(CompactionRecord::decode(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        for i in 1..8 {
            let mut c = b.clone();
            c[i] = 1;
            assert!(CompactionRecord::decode(&c).is_err(), "byte {i}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(CompactionRecord::decode(&extra).is_err());
    }

    #[test]
    fn runs_outside_the_segment_or_overlapping_are_refused() {
        let mut r = sample();
        r.removed[1].first_position = 199;
        r.removed[1].count = 2;
        assert!(CompactionRecord::decode(&r.encode()).is_err(), "past next_base");
        let mut r = sample();
        r.removed[0].count = 0;
        assert!(CompactionRecord::decode(&r.encode()).is_err(), "empty run");
        let mut b = sample().encode();
        // A removed_count that is not the sum.
        b[offset_of!(CompactionHead, removed_count)] ^= 1;
        assert!(CompactionRecord::decode(&b).is_err());
    }
}
