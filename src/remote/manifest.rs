//! The manifest of a remote log (spec 23.2): what the store holds, as one
//! immutable object per version, `manifest/<seq>` (20 digits).
//!
//! Bytes: the line `ANNALMANIFEST 1\n`, a JSON object (the body), and the
//! line `\ncrc32 XXXXXXXX\n` (CRC-32, IEEE, of the body's bytes exactly as
//! stored, 8 lowercase hex digits). A manifest whose magic, CRC or JSON does
//! not hold is damage naming the object; it is never read as "no manifest".
//!
//! Invariants: a manifest lists only objects written before it (each with
//! its length and BLAKE3), sealed segments in base order and contiguous,
//! the active segment's parts contiguous from offset 0; `next_position` is
//! the position after the last whole batch the objects hold.

use serde::{Deserialize, Serialize};

/// The first line of a manifest object.
pub const MANIFEST_MAGIC: &[u8] = b"ANNALMANIFEST 1\n";
/// The version of the manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// One shipped object: its name under the log's prefix, length and BLAKE3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shipped {
    /// The object's name under the remote log's prefix.
    pub object: String,
    /// Its length in bytes.
    pub len: u64,
    /// BLAKE3 of its bytes, 64 lowercase hex digits.
    pub blake3: String,
}

/// A sealed segment in the store: the segment file and its index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedEntry {
    /// The segment's base position.
    pub base: u64,
    /// The segment file.
    pub segment: Shipped,
    /// Its index file, if it was shipped (a restore rebuilds a missing one).
    pub index: Option<Shipped>,
}

/// A piece of the active segment: bytes `[from, to)` of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// First byte (file offset).
    pub from: u64,
    /// One past the last byte.
    pub to: u64,
    /// The object holding them.
    pub shipped: Shipped,
}

/// The active segment as far as it was shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveEntry {
    /// The segment's base position.
    pub base: u64,
    /// Its bytes from offset 0, in order, without gaps.
    pub parts: Vec<Part>,
}

impl ActiveEntry {
    /// One past the last byte shipped.
    pub fn end(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.to)
    }
}

/// One version of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// This manifest's sequence number (its object is `manifest/<seq>`).
    pub seq: u64,
    /// The fencing epoch of the writer that wrote it (spec 23.3).
    pub epoch: u64,
    /// That writer's id (random per replicator), 32 hex digits.
    pub writer: String,
    /// The log's id (from its segment headers), 32 hex digits.
    pub log_id: String,
    /// Sealed segments, in base order.
    pub sealed: Vec<SealedEntry>,
    /// The active segment, if any of it was shipped.
    pub active: Option<ActiveEntry>,
    /// The position after the last whole batch the objects hold.
    pub next_position: u64,
    /// When this manifest was written (nanoseconds since the Unix epoch, the
    /// writer's clock).
    pub written_at: u64,
    /// The append time of the newest event shipped (nanoseconds), if any.
    pub newest_event_at: Option<u64>,
}

/// The floor object (spec 23.8): the oldest manifest version that may
/// still exist, once garbage collection removed older ones.
pub(crate) const FLOOR_OBJECT: &str = "manifest/floor";

/// The first line of the floor object.
const FLOOR_MAGIC: &[u8] = b"ANNALFLOOR 1\n";

/// The floor object's bytes (spec 23.8): the magic line, the version in
/// decimal and a line feed, then `crc32 ` and 8 hex digits of the CRC-32 of
/// that decimal line (digits and line feed) and a line feed.
pub(crate) fn encode_floor(seq: u64) -> Vec<u8> {
    let line = format!("{seq}\n");
    let mut out = FLOOR_MAGIC.to_vec();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(format!("crc32 {:08x}\n", crc32fast::hash(line.as_bytes())).as_bytes());
    out
}

/// Parse the floor object; `Err((offset, what was expected))`.
pub(crate) fn decode_floor(bytes: &[u8]) -> Result<u64, (u64, String)> {
    let rest = bytes
        .strip_prefix(FLOOR_MAGIC)
        .ok_or((0, "expected the line \"ANNALFLOOR 1\"".to_owned()))?;
    let at = FLOOR_MAGIC.len() as u64;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&n| (1..=20).contains(&n))
        .ok_or((at, "expected 1 to 20 decimal digits and a line feed".to_owned()))?;
    let (line, trailer) = rest.split_at(nl + 1);
    let digits = std::str::from_utf8(&line[..nl])
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|&v| v >= 1)
        .ok_or((at, "expected a manifest version of at least 1 in decimal".to_owned()))?;
    let want = format!("crc32 {:08x}\n", crc32fast::hash(line));
    if trailer != want.as_bytes() {
        return Err((
            at + line.len() as u64,
            format!(
                "expected the trailer {:?} (the CRC-32 of the version's line), found {:?}",
                want.trim_end(),
                String::from_utf8_lossy(trailer)
            ),
        ));
    }
    Ok(digits)
}

/// The object name of manifest `seq`.
pub fn manifest_object(seq: u64) -> String {
    format!("manifest/{seq:020}")
}

impl Manifest {
    /// The manifest's bytes (spec 23.2).
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut out = Vec::with_capacity(MANIFEST_MAGIC.len() + body.len() + 16);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(&body)).as_bytes());
        out
    }

    /// Parse a manifest's bytes; `Err((offset, what was expected))`.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, (u64, String)> {
        let body = bytes
            .strip_prefix(MANIFEST_MAGIC)
            .ok_or((0, "expected the line \"ANNALMANIFEST 1\"".to_owned()))?;
        const TRAILER: usize = "\ncrc32 00000000\n".len();
        let split = body
            .len()
            .checked_sub(TRAILER)
            .ok_or((bytes.len() as u64, "expected the crc32 line at the end".to_owned()))?;
        let (json, trailer) = body.split_at(split);
        let at = (MANIFEST_MAGIC.len() + split) as u64;
        let hex = trailer
            .strip_prefix(b"\ncrc32 ")
            .and_then(|t| t.strip_suffix(b"\n"))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or((at, "expected \"\\ncrc32 XXXXXXXX\\n\" at the end".to_owned()))?;
        let crc = crc32fast::hash(json);
        if crc != hex {
            return Err((
                MANIFEST_MAGIC.len() as u64,
                format!("expected the body's CRC-32 to be {hex:08x} (its trailer), found {crc:08x}"),
            ));
        }
        let m: Manifest = serde_json::from_slice(json).map_err(|e| {
            (
                MANIFEST_MAGIC.len() as u64,
                format!("expected the manifest's JSON: {e}"),
            )
        })?;
        if m.version != MANIFEST_VERSION {
            return Err((
                MANIFEST_MAGIC.len() as u64,
                format!("expected manifest version {MANIFEST_VERSION}, found {}", m.version),
            ));
        }
        m.validate().map_err(|e| (MANIFEST_MAGIC.len() as u64, e))?;
        Ok(m)
    }

    /// The invariants of the module doc.
    fn validate(&self) -> Result<(), String> {
        for w in self.sealed.windows(2) {
            if w[0].base >= w[1].base {
                return Err(format!(
                    "expected sealed segments in base order, found {} then {}",
                    w[0].base, w[1].base
                ));
            }
        }
        if let (Some(a), Some(last)) = (&self.active, self.sealed.last())
            && a.base <= last.base
        {
            return Err(format!(
                "expected the active segment after the sealed ones, found base {}",
                a.base
            ));
        }
        if let Some(a) = &self.active {
            let mut at = 0;
            for p in &a.parts {
                if p.from != at || p.to <= p.from || p.shipped.len != p.to - p.from {
                    return Err(format!(
                        "expected the active segment's parts contiguous from 0, found [{}, {}) after {at}",
                        p.from, p.to
                    ));
                }
                at = p.to;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            seq: 3,
            epoch: 2,
            writer: "00".repeat(16),
            log_id: "11".repeat(16),
            sealed: vec![SealedEntry {
                base: 0,
                segment: Shipped {
                    object: "segments/x.seg".into(),
                    len: 10,
                    blake3: "ab".repeat(32),
                },
                index: None,
            }],
            active: Some(ActiveEntry {
                base: 7,
                parts: vec![Part {
                    from: 0,
                    to: 128,
                    shipped: Shipped {
                        object: "tail/a".into(),
                        len: 128,
                        blake3: "cd".repeat(32),
                    },
                }],
            }),
            next_position: 7,
            written_at: 1,
            newest_event_at: Some(2),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_every_changed_byte_is_found() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Manifest::decode(&b).is_err(), "byte {i} changed, still read");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// The golden vectors of spec/vectors/remote (made from the spec by a
    /// script, not by this code) decode to their values, which encode to
    /// the same bytes.
    #[test]
    fn golden_vectors() {
        let floor = include_bytes!("../../spec/vectors/remote/floor");
        assert_eq!(decode_floor(floor), Ok(1234));
        assert_eq!(encode_floor(1234), floor);
        let bytes = include_bytes!("../../spec/vectors/remote/manifest-42");
        let m = Manifest::decode(bytes).unwrap();
        let shipped = |object: String, len: u64, h: &str| Shipped {
            object,
            len,
            blake3: h.repeat(32),
        };
        let want = Manifest {
            version: 1,
            seq: 42,
            epoch: 3,
            writer: "0123456789abcdef0123456789abcdef".into(),
            log_id: "fedcba9876543210fedcba9876543210".into(),
            sealed: vec![
                SealedEntry {
                    base: 0,
                    segment: shipped(
                        format!("segments/00000000000000000000-{}.seg", "a1".repeat(16)),
                        16384,
                        "a1",
                    ),
                    index: Some(shipped(
                        format!("segments/00000000000000000000-{}.idx", "b2".repeat(16)),
                        4096,
                        "b2",
                    )),
                },
                SealedEntry {
                    base: 120,
                    segment: shipped(
                        format!("segments/00000000000000000120-{}.seg", "c3".repeat(16)),
                        16000,
                        "c3",
                    ),
                    index: None,
                },
            ],
            active: Some(ActiveEntry {
                base: 250,
                parts: vec![Part {
                    from: 0,
                    to: 4096,
                    shipped: shipped(
                        format!(
                            "tail/00000000000000000250/00000000000000000000-00000000000000004096-{}",
                            "d4".repeat(16)
                        ),
                        4096,
                        "d4",
                    ),
                }],
            }),
            next_position: 262,
            written_at: 1_764_750_000_000_000_000,
            newest_event_at: Some(1_764_749_999_000_000_000),
        };
        assert_eq!(m, want);
        assert_eq!(want.encode(), bytes);
    }

    #[test]
    fn a_floor_round_trips_and_every_changed_byte_is_found() {
        let b = encode_floor(1234);
        assert_eq!(decode_floor(&b), Ok(1234));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(decode_floor(&c).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(decode_floor(&b[..n]).is_err(), "cut at {n}");
        }
        assert!(decode_floor(&encode_floor(0)).is_err(), "versions start at 1");
    }

    #[test]
    fn parts_with_a_gap_are_refused() {
        let mut m = sample();
        if let Some(a) = m.active.as_mut() {
            a.parts[0].from = 1;
        }
        let e = Manifest::decode(&m.encode()).unwrap_err();
        assert!(e.1.contains("contiguous"), "{e:?}");
    }
}
