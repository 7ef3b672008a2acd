//! Inspection: what the bytes of each kind of log file say, field by field,
//! for `annal dump` and other tools that show damaged files.
//!
//! Not part of the supported API (hidden from the docs), but stable enough
//! for the CLI. Every function works on `&[u8]` and returns owned
//! descriptions; [`read_file`] is the one path wrapper. The layouts are the
//! library's own structs (`crate::format`, the snapshot header): every offset
//! here is derived from them with `offset_of!`/`size_of`, and no caller needs
//! one.
//!
//! Invariants: nothing here panics or overflows on any bytes. Unlike the
//! strict parsers (`FrameHeader::parse`, `validate_frame`, `parse_record`,
//! the head decoder), which refuse a structure at its first bad field, an
//! inspection is lenient: it decodes every field it can reach, marks each
//! checksum as matching or not, and stops (with a `stop` saying why) only
//! where a length makes the rest of the file unreadable. A description
//! never depends on the file's name, except that a head file whose first
//! slot is empty is recognised by its name.
//!
//! One file per kind: `segment` (segments: frames, records, checkpoints),
//! `derived` (index files, the stream table, snapshots: the block footer and
//! headers), `head` (the head file); everything is re-exported here.

mod derived;
mod head;
mod segment;
#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;

use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::es::snapshot::SNAPSHOT_MAGIC;
use crate::format::names::HEAD_FILE;
use crate::format::{HEAD_MAGIC, IDX_MAGIC, SEGMENT_MAGIC, STB_MAGIC};

pub use derived::{
    BlockChecks, FooterDump, IndexContentDump, IndexDump, IndexHeaderDump, IndexNamedRowDump, IndexStreamRowDump,
    SnapshotDump, SnapshotHeaderDump, StreamRowDump, StreamTableDump, StreamTableHeaderDump, index, snapshot,
    stream_table, stream_table_rows,
};
pub use head::{HeadDump, HeadSlotDump, SlotDump, head};
pub use segment::{
    CheckpointDump, FrameDump, RecordDump, RulesDump, RulesError, SegmentDump, SegmentHeaderDump, segment,
};

/// Length of the magic that starts a segment, index, stream table or snapshot.
const MAGIC_LEN: usize = SEGMENT_MAGIC.len();

// ------------------------------------------------------------ helpers

/// Lowercase hex of `bytes`, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `len` bytes of `bytes` at `at`, if they are all there.
fn field(bytes: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(len)?)
}

/// The `T` at `at` of `bytes`, if all of it is there.
fn struct_at<T: FromBytes + KnownLayout + Immutable>(bytes: &[u8], at: usize) -> Option<&T> {
    T::ref_from_prefix(bytes.get(at..)?).ok().map(|(t, _)| t)
}

/// The little-endian `u32` at `at`, or 0 past the end.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    field(bytes, at, 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

/// CRC-32 of `bytes[start..end]`, or 0 if that is not there.
fn crc(bytes: &[u8], start: usize, end: usize) -> u32 {
    bytes.get(start..end).map_or(0, crc32fast::hash)
}

// ------------------------------------------------------------ file kinds

/// The kinds of file [`inspect`] describes.
#[derive(Debug)]
pub enum FileDump {
    /// A segment (`.seg`).
    Segment(SegmentDump),
    /// A segment index (`.idx`).
    Index(IndexDump),
    /// The stream table (`annal.streams`).
    StreamTable(StreamTableDump),
    /// A snapshot (`.snap`).
    Snapshot(SnapshotDump),
    /// The head file (`annal.head`).
    Head(HeadDump),
}

impl FileDump {
    /// Why the description stops before the end of the file, if it does.
    pub fn stop(&self) -> Option<&str> {
        match self {
            FileDump::Segment(d) => d.stop.as_deref(),
            FileDump::Index(d) => d.stop.as_deref(),
            FileDump::StreamTable(d) => d.stop.as_deref(),
            FileDump::Snapshot(d) => d.stop.as_deref(),
            FileDump::Head(d) => d.stop.as_deref(),
        }
    }

    /// How many checksums (or blocks) in the description do not match.
    pub fn problems(&self) -> u64 {
        match self {
            FileDump::Segment(d) => d.problems(),
            FileDump::Index(d) => d.footer.as_ref().map_or(0, FooterDump::problems),
            FileDump::StreamTable(d) => d.footer.as_ref().map_or(0, FooterDump::problems),
            FileDump::Snapshot(d) => d.header.as_ref().map_or(0, |h| u64::from(!h.crc_ok)),
            FileDump::Head(d) => d.problems(),
        }
    }
}

/// The bytes are not one of the file kinds [`inspect`] knows.
#[derive(Debug)]
pub struct NotAnnal {
    /// The first bytes of the file (at most the length of a magic).
    pub first_bytes: Vec<u8>,
}

/// Describe the file `bytes`, recognised by its magic bytes; `file_name` (the
/// last part of its path) recognises a head file whose first slot is empty.
pub fn inspect(bytes: &[u8], file_name: Option<&str>) -> Result<FileDump, NotAnnal> {
    let magic = bytes.get(..MAGIC_LEN);
    let head_magic = bytes.get(..HEAD_MAGIC.len());
    Ok(if magic == Some(&SEGMENT_MAGIC[..]) {
        FileDump::Segment(segment(bytes))
    } else if magic == Some(&IDX_MAGIC[..]) {
        FileDump::Index(index(bytes))
    } else if magic == Some(&STB_MAGIC[..]) {
        FileDump::StreamTable(stream_table(bytes))
    } else if magic == Some(&SNAPSHOT_MAGIC[..]) {
        FileDump::Snapshot(snapshot(bytes))
    } else if head_magic == Some(&HEAD_MAGIC[..])
        || file_name == Some(HEAD_FILE) && head_magic.is_some_and(|m| m.iter().all(|&b| b == 0))
    {
        FileDump::Head(head(bytes))
    } else {
        return Err(NotAnnal {
            first_bytes: magic.unwrap_or(bytes).to_vec(),
        });
    })
}

/// The `record_len` (spec 3.2) of a record with parts of these lengths:
/// its header, the parts, and the padding to a multiple of 8; `u64::MAX` if
/// that does not fit a `u64`. For tools that check an event against the
/// format's limits before appending it.
pub fn record_len(stream: usize, event_type: usize, metadata: usize, payload: usize) -> u64 {
    crate::format::record::record_len(stream, event_type, metadata, payload)
}

/// Why [`read_file`] could not read a file.
#[derive(Debug)]
pub enum ReadFailure {
    /// It could not be opened (a missing file among others).
    Open(io::Error),
    /// It is not a regular file (a directory, FIFO, device, ...).
    NotRegular,
    /// It was opened, but stat or read failed.
    Read(io::Error),
}

/// Read the whole of the regular file at `path` (following symlinks), at
/// most its size when opened. It is opened non-blocking, so that a FIFO
/// under the name is refused rather than waited on.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadFailure> {
    use io::Read;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let f = o.open(path).map_err(ReadFailure::Open)?;
    let meta = f.metadata().map_err(ReadFailure::Read)?;
    if !meta.is_file() {
        return Err(ReadFailure::NotRegular);
    }
    let mut bytes = Vec::new();
    f.take(meta.len()).read_to_end(&mut bytes).map_err(ReadFailure::Read)?;
    Ok(bytes)
}
