//! Snapshot files (spec 20): the header's normative layout, file names, the
//! encoder and the decoder (every check of spec 20.3): the one definition
//! of the layout of both format versions (1: no subject keys; 2: the key
//! ids of the sealed events the state folded, spec 20.2). Storing snapshots
//! (temp file, fsync, rename, pruning, removal after an erasure) is
//! `es::snapshot`'s.
//!
//! Invariants: `parse(encode(s)) == s` for every snapshot `encode` accepts;
//! a snapshot without subject keys encodes as version 1, one with keys as
//! version 2; a parsed version 2 file names at least one key, strictly
//! ascending, each at least 1.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::Damage;
use crate::format::sealed::KeyId;

/// Magic bytes at the start of every snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALSNP";
/// Snapshot file layout version 1: a state that folded no sealed event.
pub(crate) const SNAPSHOT_FORMAT_V1: u16 = 1;
/// Snapshot file layout version 2: version 1 plus the subject key ids the
/// state depends on (spec 20.2).
pub(crate) const SNAPSHOT_FORMAT_V2: u16 = 2;
/// The newest snapshot file layout this build reads and writes (it reads
/// and writes every version from 1 to this one).
pub(crate) const SNAPSHOT_FORMAT_VERSION: u16 = SNAPSHOT_FORMAT_V2;
/// Bytes of one key id in a version 2 file's key list.
pub(crate) const SNAPSHOT_KEY_LEN: usize = 8;

/// Header of a snapshot file (spec 20.2): the normative layout.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct SnapshotHeader {
    pub magic: [u8; 8],
    pub format_version: U16,
    pub flags: U16,
    pub stream_len: U16,
    pub reserved0: U16,
    pub stream_version: U64,
    pub position: U64,
    pub schema_version: U32,
    /// Version 2: how many key ids follow the stream name (at least 1).
    /// Version 1: `reserved1`, must be zero.
    pub key_count: U32,
    pub payload_len: U64,
    pub reserved2: [u8; 12],
    pub crc: U32,
}

/// Bytes of the snapshot header.
pub(crate) const SNAPSHOT_HEADER_LEN: usize = size_of::<SnapshotHeader>();
/// Offset of the CRC field; the CRC covers every byte of the file but the
/// four at `[SNAPSHOT_CRC_OFFSET, SNAPSHOT_HEADER_LEN)`.
pub(crate) const SNAPSHOT_CRC_OFFSET: usize = offset_of!(SnapshotHeader, crc);
/// Offset of `stream_len`, reported when the length fields do not fill the file exactly.
pub(crate) const SNAPSHOT_LENGTH_OFFSET: u64 = offset_of!(SnapshotHeader, stream_len) as u64;
/// Offset of `format_version`.
const SNAPSHOT_VERSION_OFFSET: u64 = offset_of!(SnapshotHeader, format_version) as u64;

const _: () = assert!(SNAPSHOT_HEADER_LEN == 64);
const _: () = assert!(SNAPSHOT_CRC_OFFSET == 60);

/// One stream's state at a version: the payload is the aggregate's state,
/// serialized by the caller (the typed layer uses postcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The full stream name (1 to 65,535 bytes of UTF-8).
    pub stream: String,
    /// The version of the last event of the stream reflected in the state.
    pub stream_version: u64,
    /// The global position of that event (the event at `stream_version`).
    pub position: u64,
    /// The version of the aggregate's snapshot schema, chosen by the
    /// application; a load asks for one schema version and skips the others.
    pub schema_version: u32,
    /// The serialized state (opaque to annal).
    pub payload: Vec<u8>,
    /// The subject keys of the sealed events the state folded (erased ones
    /// included), strictly ascending: empty for a state that folded no
    /// sealed event (written as format version 1), else written as version
    /// 2. A load skips a snapshot that names an erased key, and erasing a
    /// subject removes every snapshot file that names its key (spec 20.5,
    /// 20.6).
    pub subject_keys: Vec<KeyId>,
}

/// Encode `snap` as the bytes of its file (spec 20.2): format version 1
/// when it names no subject key, else version 2. Errors (nothing is
/// written): a stream name of 0 or more than 65,535 bytes, or subject keys
/// that are not strictly ascending ids of at least 1 (or more than
/// `u32::MAX` of them).
pub(crate) fn encode(snap: &Snapshot) -> Result<Vec<u8>, String> {
    let stream_len = u16::try_from(snap.stream.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!(
                "a snapshot's stream name must be 1 to 65535 bytes, found {} bytes",
                snap.stream.len()
            )
        })?;
    let keys = &snap.subject_keys;
    let key_count = u32::try_from(keys.len()).map_err(|_| {
        format!(
            "a snapshot names at most {} subject keys, found {}",
            u32::MAX,
            keys.len()
        )
    })?;
    if keys.first().is_some_and(|k| k.0 == 0) || keys.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
        return Err(format!(
            "a snapshot's subject keys must be strictly ascending ids of at least 1, found {keys:?}"
        ));
    }
    let version = if keys.is_empty() {
        SNAPSHOT_FORMAT_V1
    } else {
        SNAPSHOT_FORMAT_V2
    };
    let header = SnapshotHeader {
        magic: SNAPSHOT_MAGIC,
        format_version: U16::new(version),
        flags: U16::ZERO,
        stream_len: U16::new(stream_len),
        reserved0: U16::ZERO,
        stream_version: U64::new(snap.stream_version),
        position: U64::new(snap.position),
        schema_version: U32::new(snap.schema_version),
        key_count: U32::new(key_count),
        payload_len: U64::new(snap.payload.len() as u64),
        reserved2: [0; 12],
        crc: U32::ZERO,
    };
    let mut bytes = Vec::with_capacity(
        SNAPSHOT_HEADER_LEN + snap.stream.len() + SNAPSHOT_KEY_LEN * keys.len() + snap.payload.len(),
    );
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(snap.stream.as_bytes());
    for k in keys {
        bytes.extend_from_slice(&k.0.to_le_bytes());
    }
    bytes.extend_from_slice(&snap.payload);
    let crc = file_crc(&bytes);
    if let Some(field) = bytes.get_mut(SNAPSHOT_CRC_OFFSET..SNAPSHOT_HEADER_LEN) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(bytes)
}

/// Extension of snapshot file names.
pub(crate) const SNAPSHOT_EXT: &str = ".snap";

/// The CRC of a snapshot file: CRC-32 of every byte except the CRC field.
/// `bytes` is at least [`SNAPSHOT_HEADER_LEN`] long.
pub(crate) fn file_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes.get(..SNAPSHOT_CRC_OFFSET).unwrap_or_default());
    h.update(bytes.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default());
    h.finalize()
}

/// The file name of the snapshot of the stream with hash `hash` at global
/// position `position` (spec 20.1).
pub(crate) fn file_name(hash: u64, position: u64) -> String {
    format!("{hash:016x}-{position:020}{SNAPSHOT_EXT}")
}

/// Parse a snapshot file name into (stream hash, position); `None` for any
/// other name (temp files included).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_EXT)?;
    let (hash, pos) = stem.split_once('-')?;
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hash.len() != 16 || !hash.bytes().all(hex) || pos.len() != 20 || !pos.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((u64::from_str_radix(hash, 16).ok()?, pos.parse().ok()?))
}

/// Bytes of a file's key list, as its header states them (0 in version 1).
pub(crate) fn key_list_len(h: &SnapshotHeader) -> u64 {
    if h.format_version.get() == SNAPSHOT_FORMAT_V2 {
        SNAPSHOT_KEY_LEN as u64 * u64::from(h.key_count.get())
    } else {
        0
    }
}

/// The checks of spec 20.3 that need only the header and the file length:
/// magic, format version (version 2 with at least one key), and lengths
/// that fill the file exactly.
pub(crate) fn check_header(h: &SnapshotHeader, file_len: u64) -> Result<(), Damage> {
    if h.magic != SNAPSHOT_MAGIC {
        return Err(Damage::corrupt(
            0,
            format!("expected snapshot magic \"ANNALSNP\", found {:02x?}", h.magic),
        ));
    }
    let version = h.format_version.get();
    if !(SNAPSHOT_FORMAT_V1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(Damage::corrupt(
            SNAPSHOT_VERSION_OFFSET,
            format!(
                "snapshot format version {version} is not supported (this build reads versions \
                 {SNAPSHOT_FORMAT_V1} to {SNAPSHOT_FORMAT_VERSION})"
            ),
        ));
    }
    if version == SNAPSHOT_FORMAT_V2 && h.key_count.get() == 0 {
        return Err(Damage::corrupt(
            SNAPSHOT_VERSION_OFFSET,
            "snapshot format version 2 with key_count 0: a version 2 file names at least one subject key \
             (a state without keys is written as version 1)",
        ));
    }
    let (stream_len, payload_len) = (h.stream_len.get(), h.payload_len.get());
    let keys_len = key_list_len(h);
    // No overflow: 64 + 65535 + 8 * (2^32 - 1) fits in a u64 with room.
    let want = (SNAPSHOT_HEADER_LEN as u64 + u64::from(stream_len) + keys_len).checked_add(payload_len);
    if want != Some(file_len) {
        let keys = if version == SNAPSHOT_FORMAT_V2 {
            format!(" + 8 * key_count ({})", h.key_count.get())
        } else {
            String::new()
        };
        return Err(Damage::corrupt(
            SNAPSHOT_LENGTH_OFFSET,
            format!(
                "expected the file to be {SNAPSHOT_HEADER_LEN} + stream_len ({stream_len}){keys} + payload_len \
                 ({payload_len}) bytes long, found {file_len} bytes"
            ),
        ));
    }
    Ok(())
}

/// Check the key ids in `list` (whole 8-byte ids; a trailing partial id
/// is ignored), at offset `list_at` of the file, following `prev` (the id
/// before them, if the list is read in pieces): each must be at least 1 and
/// greater than the one before (spec 20.3, check 9). Errors at the offset
/// of the first id that is not.
pub(crate) fn check_key_ids(list: &[u8], list_at: u64, prev: Option<KeyId>) -> Result<Vec<KeyId>, Damage> {
    let mut keys: Vec<KeyId> = Vec::with_capacity(list.len() / SNAPSHOT_KEY_LEN);
    let mut prev = prev;
    for (i, chunk) in list.chunks_exact(SNAPSHOT_KEY_LEN).enumerate() {
        let id = u64::from_le_bytes(<[u8; SNAPSHOT_KEY_LEN]>::try_from(chunk).unwrap_or_default());
        let at = list_at + (i * SNAPSHOT_KEY_LEN) as u64;
        match prev {
            None if id == 0 => {
                return Err(Damage::corrupt(at, "expected subject key ids of at least 1, found 0"));
            }
            Some(p) if id <= p.0 => {
                return Err(Damage::corrupt(
                    at,
                    format!("expected strictly ascending subject key ids, found {id} after {}", p.0),
                ));
            }
            _ => {}
        }
        prev = Some(KeyId(id));
        keys.push(KeyId(id));
    }
    Ok(keys)
}

/// Read and check the key list of a file whose header `h` passed
/// [`check_header`], `read(offset, len, out)` appending `len` bytes of the
/// file at `offset` to `out`, in pieces of at most `chunk` bytes (a
/// multiple of 8), so that no key count decides an allocation beyond
/// `chunk`. Calls `each` with every piece's ids; errors: `read`'s, or the
/// damage of [`check_key_ids`].
pub(crate) fn read_key_list<E>(
    h: &SnapshotHeader,
    chunk: u64,
    mut read: impl FnMut(u64, u64, &mut Vec<u8>) -> Result<(), E>,
    mut each: impl FnMut(&[KeyId]),
) -> Result<Result<(), Damage>, E> {
    let chunk = (chunk / SNAPSHOT_KEY_LEN as u64).max(1) * SNAPSHOT_KEY_LEN as u64;
    let start = SNAPSHOT_HEADER_LEN as u64 + u64::from(h.stream_len.get());
    let end = start + key_list_len(h);
    let (mut at, mut prev, mut buf) = (start, None, Vec::new());
    while at < end {
        buf.clear();
        read(at, (end - at).min(chunk), &mut buf)?;
        if buf.len() < SNAPSHOT_KEY_LEN {
            break;
        }
        match check_key_ids(&buf, at, prev) {
            Ok(keys) => {
                prev = keys.last().copied().or(prev);
                each(&keys);
            }
            Err(d) => return Ok(Err(d)),
        }
        at += buf.len() as u64;
    }
    Ok(Ok(()))
}

/// Parse and check a whole snapshot file (spec 20.3), in the order stated there.
pub(crate) fn parse(bytes: &[u8]) -> Result<Snapshot, Damage> {
    let Ok((h, _)) = SnapshotHeader::ref_from_prefix(bytes) else {
        return Err(Damage::corrupt(
            0,
            format!(
                "expected a {SNAPSHOT_HEADER_LEN}-byte snapshot header, found a file of {} bytes",
                bytes.len()
            ),
        ));
    };
    check_header(h, bytes.len() as u64)?;
    let want = file_crc(bytes);
    if h.crc.get() != want {
        return Err(Damage::corrupt(
            SNAPSHOT_CRC_OFFSET as u64,
            format!(
                "snapshot CRC mismatch: expected {want:#010x}, found {:#010x}",
                h.crc.get()
            ),
        ));
    }
    for (name, off, zero) in [
        ("flags", offset_of!(SnapshotHeader, flags), h.flags.get() == 0),
        (
            "reserved0",
            offset_of!(SnapshotHeader, reserved0),
            h.reserved0.get() == 0,
        ),
        (
            "reserved1",
            offset_of!(SnapshotHeader, key_count),
            h.format_version.get() != SNAPSHOT_FORMAT_V1 || h.key_count.get() == 0,
        ),
        (
            "reserved2",
            offset_of!(SnapshotHeader, reserved2),
            h.reserved2.iter().all(|&b| b == 0),
        ),
    ] {
        if !zero {
            return Err(Damage::corrupt(
                off as u64,
                format!("expected snapshot header field {name} to be zero"),
            ));
        }
    }
    // check_header proved 64 + stream_len + 8 * key_count + payload_len == bytes.len().
    let body = bytes.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default();
    let (stream, rest) = body
        .split_at_checked(h.stream_len.get() as usize)
        .unwrap_or((body, &[]));
    let (list, payload) = rest
        .split_at_checked(usize::try_from(key_list_len(h)).unwrap_or(usize::MAX))
        .unwrap_or((rest, &[]));
    if stream.is_empty() {
        return Err(Damage::corrupt(
            SNAPSHOT_LENGTH_OFFSET,
            "expected a stream name of at least 1 byte, found stream_len 0",
        ));
    }
    let stream = std::str::from_utf8(stream).map_err(|e| {
        Damage::corrupt(
            (SNAPSHOT_HEADER_LEN + e.valid_up_to()) as u64,
            "expected the stream name to be valid UTF-8",
        )
    })?;
    let subject_keys = check_key_ids(list, (SNAPSHOT_HEADER_LEN + stream.len()) as u64, None)?;
    Ok(Snapshot {
        stream: stream.to_owned(),
        stream_version: h.stream_version.get(),
        position: h.position.get(),
        schema_version: h.schema_version.get(),
        payload: payload.to_vec(),
        subject_keys,
    })
}

/// Decode and check a snapshot file's bytes (spec 20.3). If the file's name
/// (`name`) is a snapshot file name, the position in it must equal the
/// stored one.
pub(crate) fn decode(name: Option<&str>, bytes: &[u8]) -> Result<Snapshot, Damage> {
    let snap = parse(bytes)?;
    if let Some((_, pos)) = name.and_then(parse_file_name)
        && pos != snap.position
    {
        return Err(Damage::corrupt(
            offset_of!(SnapshotHeader, position) as u64,
            format!("expected position {pos} (from the file name), found {}", snap.position),
        ));
    }
    Ok(snap)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    fn keyed(keys: &[u64]) -> Vec<u8> {
        let snap = Snapshot {
            stream: "s".into(),
            stream_version: 0,
            position: 0,
            schema_version: 0,
            payload: b"state".to_vec(),
            subject_keys: keys.iter().map(|&k| KeyId(k)).collect(),
        };
        encode(&snap).unwrap_or_default()
    }

    /// The key list read in pieces of any size (one id, several, all) gives
    /// the same ids, and the same first error at the same offset, as the
    /// whole list checked at once: continuity holds across pieces.
    #[test]
    fn key_lists_read_in_pieces_check_like_whole_ones() {
        for keys in [
            vec![1u64, 2, 9, 10, 11],
            vec![3, 3],
            vec![1, 2, 9, 4],
            vec![0, 1],
            vec![7, 8, 1, 2],
        ] {
            let mut file = keyed(&[1, 2, 3, 4, 5].map(|i| i * 1000)[..keys.len()]);
            for (i, k) in keys.iter().enumerate() {
                let at = SNAPSHOT_HEADER_LEN + 1 + 8 * i;
                file[at..at + 8].copy_from_slice(&k.to_le_bytes());
            }
            let Ok((h, _)) = SnapshotHeader::ref_from_prefix(&file) else {
                panic!("header")
            };
            let whole = check_key_ids(&file[65..65 + 8 * keys.len()], 65, None);
            for chunk in [1, 8, 16, 24, 1 << 20] {
                let mut got = Vec::new();
                let read = |at: u64, n: u64, out: &mut Vec<u8>| -> Result<(), ()> {
                    out.extend_from_slice(&file[at as usize..(at + n) as usize]);
                    Ok(())
                };
                let r = read_key_list(h, chunk, read, |k| got.extend_from_slice(k)).unwrap_or(Ok(()));
                match &whole {
                    Ok(ids) => assert_eq!((r, &got), (Ok(()), ids), "{keys:?} in pieces of {chunk}"),
                    Err(d) => assert_eq!(
                        r.err().map(|e| e.offset),
                        Some(d.offset),
                        "{keys:?} in pieces of {chunk}"
                    ),
                }
            }
        }
    }
}
