//! Snapshot files (spec 20): the header's normative layout, file names, and
//! the decoder (every check of spec 20.3). Encoding and storing snapshots
//! (temp file, fsync, rename, pruning) is `es::snapshot`'s.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::Damage;

/// Magic bytes at the start of every snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALSNP";
/// Version of the snapshot file layout this build reads and writes.
pub(crate) const SNAPSHOT_FORMAT_VERSION: u16 = 1;

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
    pub reserved1: U32,
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

/// The checks of spec 20.3 that need only the header and the file length:
/// magic, format version, and lengths that fill the file exactly.
pub(crate) fn check_header(h: &SnapshotHeader, file_len: u64) -> Result<(), Damage> {
    if h.magic != SNAPSHOT_MAGIC {
        return Err(Damage::corrupt(
            0,
            format!("expected snapshot magic \"ANNALSNP\", found {:02x?}", h.magic),
        ));
    }
    let version = h.format_version.get();
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(Damage::corrupt(
            offset_of!(SnapshotHeader, format_version) as u64,
            format!(
                "snapshot format version {version} is not supported (this build reads version {SNAPSHOT_FORMAT_VERSION})"
            ),
        ));
    }
    let (stream_len, payload_len) = (h.stream_len.get(), h.payload_len.get());
    let want = (SNAPSHOT_HEADER_LEN as u64 + stream_len as u64).checked_add(payload_len);
    if want != Some(file_len) {
        return Err(Damage::corrupt(
            SNAPSHOT_LENGTH_OFFSET,
            format!(
                "expected the file to be {SNAPSHOT_HEADER_LEN} + stream_len ({stream_len}) + payload_len \
                 ({payload_len}) bytes long, found {file_len} bytes"
            ),
        ));
    }
    Ok(())
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
            offset_of!(SnapshotHeader, reserved1),
            h.reserved1.get() == 0,
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
    // check_header proved 64 + stream_len + payload_len == bytes.len().
    let body = bytes.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default();
    let (stream, payload) = body
        .split_at_checked(h.stream_len.get() as usize)
        .unwrap_or((body, &[]));
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
    Ok(Snapshot {
        stream: stream.to_owned(),
        stream_version: h.stream_version.get(),
        position: h.position.get(),
        schema_version: h.schema_version.get(),
        payload: payload.to_vec(),
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
