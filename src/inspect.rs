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
//! checksum as matching or not, and stops (with [`stop`](SegmentDump::stop)
//! saying why) only where a length makes the rest of the file unreadable.
//! A description never changes with the file's name, except that a head
//! file whose first slot is empty is recognised by its name.

use std::io;
use std::mem::{offset_of, size_of};
use std::path::Path;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::es::snapshot::{SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SnapshotHeader};
use crate::format::names::HEAD_FILE;
use crate::format::record::record_len;
use crate::format::{
    CHECKPOINT_FRAME_LEN, FRAME_CRC_START, FRAME_HEADER_LEN, FRAME_KIND_BATCH, FRAME_KIND_CHECKPOINT,
    FRAME_KIND_SEAL, FRAME_MAGIC, FrameHeader, HEAD_CRC_START, HEAD_FILE_LEN, HEAD_MAGIC, HEAD_SLOT_LEN, HeadSlot,
    IDX_HEADER_LEN, IDX_MAGIC, IdxHeader, RECORD_CRC_START, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_CRC_OFFSET,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC, STB_HEADER_LEN, STB_MAGIC, SegmentHeader, StbHeader,
};
use crate::index::blockfile::{BLOCK, FOOTER_LEN};

// ------------------------------------------------------------ pending layouts
//
// The checkpoint body (spec 3.5) and the footer of derived files (spec 16)
// have no struct in `crate::format` yet. Until they do, their tables are
// written here, once, and every offset below is derived from them; when the
// format module gains them, these two structs go and the imports change.

/// The body of a checkpoint frame, after its frame header (spec 3.5).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct CheckpointBody {
    public_key: [u8; 32],
    signature: [u8; 64],
    body_crc: U32,
    reserved: U32,
}

/// The footer that ends an index file and the stream table (spec 16).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct BlockFooter {
    table_offset: U64,
    block_count: U64,
    table_crc: U32,
    footer_crc: U32,
    magic: [u8; 8],
}

const _: () = assert!(FRAME_HEADER_LEN + size_of::<CheckpointBody>() == CHECKPOINT_FRAME_LEN);
const _: () = assert!(size_of::<BlockFooter>() == FOOTER_LEN);

/// Bytes of one entry of the block CRC table (spec 16).
const BLOCK_CRC_LEN: usize = size_of::<u32>();
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
    f.take(meta.len())
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Read)?;
    Ok(bytes)
}

// ------------------------------------------------------------ segments

/// A segment file (spec 2, 3): its header and every frame, in file order.
#[derive(Debug, Default)]
pub struct SegmentDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<SegmentHeaderDump>,
    /// The frames, up to the first that cannot be followed (which is listed
    /// too if its header could be read).
    pub frames: Vec<FrameDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

impl SegmentDump {
    /// How many checksums do not match: header, frame headers, records,
    /// checkpoint bodies.
    pub fn problems(&self) -> u64 {
        let header = self.header.as_ref().map_or(0, |h| u64::from(!h.crc_ok));
        header + self.frames.iter().map(FrameDump::problems).sum::<u64>()
    }

    /// How many records the frames hold (as far as they were read).
    pub fn record_count(&self) -> u64 {
        self.frames.iter().map(|f| f.records.len() as u64).sum()
    }
}

/// The fields of a segment header (spec 2.1).
#[derive(Debug, Clone)]
pub struct SegmentHeaderDump {
    /// `format_version`.
    pub format_version: u16,
    /// `log_flags`.
    pub log_flags: u16,
    /// `log_id`.
    pub log_id: [u8; 16],
    /// `base_position`.
    pub base_position: u64,
    /// `prev_timestamp`.
    pub prev_timestamp: u64,
    /// `created_at`.
    pub created_at: u64,
    /// `chain_start`.
    pub chain_start: [u8; 32],
    /// `key_id`.
    pub key_id: [u8; 16],
    /// `header_crc` as stored.
    pub header_crc: u32,
    /// Whether `header_crc` matches the header.
    pub crc_ok: bool,
}

/// One frame (spec 3.1) and what it holds.
#[derive(Debug, Clone)]
pub struct FrameDump {
    /// File offset of the frame.
    pub offset: u64,
    /// `kind`.
    pub kind: u8,
    /// `frame_len`.
    pub len: u64,
    /// `first_position`.
    pub first_position: u64,
    /// `record_count`.
    pub count: u32,
    /// `durable_end`.
    pub durable_end: u64,
    /// The audit chain slot.
    pub chain: [u8; 32],
    /// Whether `header_crc` matches the frame header.
    pub header_crc_ok: bool,
    /// The records of a batch, up to the first that cannot be read.
    pub records: Vec<RecordDump>,
    /// The body of a checkpoint frame.
    pub checkpoint: Option<CheckpointDump>,
}

impl FrameDump {
    /// The name of the frame's kind: `batch`, `seal`, `checkpoint` or `invalid`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FRAME_KIND_BATCH => "batch",
            FRAME_KIND_SEAL => "seal",
            FRAME_KIND_CHECKPOINT => "checkpoint",
            _ => "invalid",
        }
    }

    fn problems(&self) -> u64 {
        let records = self.records.iter().filter(|r| !r.crc_ok).count() as u64;
        let body = self.checkpoint.as_ref().map_or(0, |c| u64::from(!c.body_crc_ok));
        u64::from(!self.header_crc_ok) + records + body
    }
}

/// One record of a batch (spec 3.2).
#[derive(Debug, Clone)]
pub struct RecordDump {
    /// File offset of the record.
    pub offset: u64,
    /// `record_len`.
    pub len: u32,
    /// `position`.
    pub position: u64,
    /// The stream name as stored.
    pub stream: Vec<u8>,
    /// `stream_version`.
    pub stream_version: u64,
    /// The event type as stored.
    pub event_type: Vec<u8>,
    /// `schema_version`.
    pub schema_version: u32,
    /// `stream_len`.
    pub stream_len: u16,
    /// `type_len`.
    pub type_len: u16,
    /// `metadata_len`.
    pub metadata_len: u32,
    /// `payload_len`.
    pub payload_len: u32,
    /// Whether the record CRC matches.
    pub crc_ok: bool,
}

/// The body of a signed checkpoint (spec 3.5).
#[derive(Debug, Clone)]
pub struct CheckpointDump {
    /// The signer's public key; `None` if the file ends before it.
    pub public_key: Option<[u8; 32]>,
    /// The signature; `None` if the file ends before it.
    pub signature: Option<[u8; 64]>,
    /// Whether the frame has a checkpoint's length and its body CRC matches.
    pub body_crc_ok: bool,
}

/// Describe a segment file.
pub fn segment(file: &[u8]) -> SegmentDump {
    let mut d = SegmentDump::default();
    let Some(h) = struct_at::<SegmentHeader>(file, 0) else {
        d.stop = Some(format!(
            "the segment header needs {SEGMENT_HEADER_LEN} bytes, the file has {}",
            file.len()
        ));
        return d;
    };
    d.header = Some(SegmentHeaderDump {
        format_version: h.format_version.get(),
        log_flags: h.log_flags.get(),
        log_id: h.log_id,
        base_position: h.base_position.get(),
        prev_timestamp: h.prev_timestamp.get(),
        created_at: h.created_at.get(),
        chain_start: h.chain_start,
        key_id: h.key_id,
        header_crc: h.header_crc.get(),
        crc_ok: crc(file, 0, SEGMENT_HEADER_CRC_OFFSET) == h.header_crc.get(),
    });
    let mut off = SEGMENT_HEADER_LEN;
    while off < file.len() {
        let (frame, next) = frame_at(file, off);
        d.frames.extend(frame);
        match next {
            Ok(end) => off = end,
            Err(stop) => {
                d.stop = Some(stop);
                break;
            }
        }
    }
    d
}

/// The frame at `off` (if its header could be read), and the offset of the
/// next one or why the segment cannot be followed past it.
fn frame_at(file: &[u8], off: usize) -> (Option<FrameDump>, Result<usize, String>) {
    let left = file.len().saturating_sub(off);
    let Some(h) = struct_at::<FrameHeader>(file, off) else {
        return (
            None,
            Err(format!(
                "at offset {off}: {left} trailing bytes, too few for a {FRAME_HEADER_LEN}-byte frame header (a torn tail?)"
            )),
        );
    };
    if h.magic != FRAME_MAGIC {
        return (
            None,
            Err(format!(
                "at offset {off}: no frame magic \"BTCH\" (found {})",
                hex(&h.magic)
            )),
        );
    }
    let header_crc = crc(h.as_bytes(), FRAME_CRC_START, FRAME_HEADER_LEN);
    let mut frame = FrameDump {
        offset: off as u64,
        kind: h.kind,
        len: h.frame_len.get(),
        first_position: h.first_position.get(),
        count: h.record_count.get(),
        durable_end: h.durable_end.get(),
        chain: h.chain,
        header_crc_ok: header_crc == h.header_crc.get(),
        records: Vec::new(),
        checkpoint: None,
    };
    let remaining = left as u64;
    let len = frame.len;
    let end = match usize::try_from(len) {
        Ok(l) if len >= FRAME_HEADER_LEN as u64 && len.is_multiple_of(8) && len <= remaining => off + l,
        _ => {
            let why = format!(
                "frame at offset {off}: frame_len {len} is not a multiple of 8 of at least {FRAME_HEADER_LEN} that \
                 fits in the {remaining} bytes left"
            );
            return (Some(frame), Err(why));
        }
    };
    let next = match frame.kind {
        FRAME_KIND_BATCH => batch_records(file, off, end, &mut frame).map(|()| end),
        FRAME_KIND_SEAL if end != file.len() => Err(format!(
            "the seal at offset {off} is followed by {} more bytes",
            file.len() - end
        )),
        FRAME_KIND_SEAL => Ok(end),
        FRAME_KIND_CHECKPOINT => {
            frame.checkpoint = Some(checkpoint(file, off, len));
            Ok(end)
        }
        kind => Err(format!("frame at offset {off}: invalid kind {kind}")),
    };
    (Some(frame), next)
}

/// Read the records of the batch frame `[off, end)` into `frame.records`.
fn batch_records(file: &[u8], off: usize, end: usize, frame: &mut FrameDump) -> Result<(), String> {
    let count = frame.count;
    let mut r = off + FRAME_HEADER_LEN;
    for i in 0..count {
        let in_frame = file.get(r..end).unwrap_or_default();
        let Some(h) = struct_at::<RecordHeader>(in_frame, 0) else {
            return Err(format!(
                "frame at offset {off}: record {i} of {count} at offset {r} does not fit in the frame"
            ));
        };
        let (s, t, m, p) = (
            h.stream_len.get(),
            h.type_len.get(),
            h.metadata_len.get(),
            h.payload_len.get(),
        );
        let rec_len = h.record_len.get();
        let computed = record_len(s.into(), t.into(), m as usize, p as usize);
        let left = in_frame.len();
        let Some(rec) = in_frame
            .get(..rec_len as usize)
            .filter(|_| u64::from(rec_len) == computed)
        else {
            return Err(format!(
                "record at offset {r}: record_len {rec_len} is invalid (lengths give {computed}, {left} bytes left in \
                 the frame)"
            ));
        };
        // `rec` holds the header and both names: its length is `computed`.
        let names = rec.get(RECORD_HEADER_LEN..).unwrap_or_default();
        let (stream, rest) = names.split_at_checked(usize::from(s)).unwrap_or_default();
        frame.records.push(RecordDump {
            offset: r as u64,
            len: rec_len,
            position: h.position.get(),
            stream: stream.to_vec(),
            stream_version: h.stream_version.get(),
            event_type: rest.get(..usize::from(t)).unwrap_or_default().to_vec(),
            schema_version: h.schema_version.get(),
            stream_len: s,
            type_len: t,
            metadata_len: m,
            payload_len: p,
            crc_ok: crc(rec, RECORD_CRC_START, rec.len()) == h.crc.get(),
        });
        r += rec.len();
    }
    if r != end {
        return Err(format!(
            "frame at offset {off}: its {count} records end at offset {r}, the frame at {end}"
        ));
    }
    Ok(())
}

/// The body of the checkpoint frame at `off`, of `frame_len` bytes.
fn checkpoint(file: &[u8], off: usize, frame_len: u64) -> CheckpointDump {
    let body = off + FRAME_HEADER_LEN;
    let key_at = body + offset_of!(CheckpointBody, public_key);
    let sig_at = body + offset_of!(CheckpointBody, signature);
    let crc_at = body + offset_of!(CheckpointBody, body_crc);
    CheckpointDump {
        public_key: field(file, key_at, 32).and_then(|b| b.try_into().ok()),
        signature: field(file, sig_at, 64).and_then(|b| b.try_into().ok()),
        body_crc_ok: frame_len == CHECKPOINT_FRAME_LEN as u64 && crc(file, body, crc_at) == u32_at(file, crc_at),
    }
}

// ------------------------------------------------------------ derived files

/// The footer of an index file or the stream table (spec 16), and the
/// checks it allows.
#[derive(Debug, Clone)]
pub struct FooterDump {
    /// `table_offset`: the length of the checked region.
    pub table_offset: u64,
    /// `block_count`.
    pub block_count: u64,
    /// The footer's magic.
    pub magic: [u8; 8],
    /// Whether the footer CRC matches.
    pub footer_crc_ok: bool,
    /// The block checks; `None` if the footer does not fit the file.
    pub blocks: Option<BlockChecks>,
}

/// The CRC checks of a derived file's blocks.
#[derive(Debug, Clone)]
pub struct BlockChecks {
    /// Whether the block CRC table matches its CRC in the footer.
    pub table_crc_ok: bool,
    /// How many blocks fail their CRC.
    pub bad_blocks: u64,
}

impl FooterDump {
    fn problems(&self) -> u64 {
        let blocks = self
            .blocks
            .as_ref()
            .map_or(0, |b| u64::from(!b.table_crc_ok) + b.bad_blocks);
        u64::from(!self.footer_crc_ok) + blocks
    }
}

/// Describe the footer at the end of `file`; `Err` says why it cannot be read
/// or does not fit the file (the footer fields are then still returned if
/// they could be read).
fn footer(file: &[u8]) -> (Option<FooterDump>, Option<String>) {
    let len = file.len();
    let Some(f) = len.checked_sub(FOOTER_LEN).and_then(|at| struct_at::<BlockFooter>(file, at)) else {
        let why = format!("the file has {len} bytes, too few for the {FOOTER_LEN}-byte footer");
        return (None, Some(why));
    };
    let (table_offset, block_count) = (f.table_offset.get(), f.block_count.get());
    let mut d = FooterDump {
        table_offset,
        block_count,
        magic: f.magic,
        footer_crc_ok: crc(f.as_bytes(), 0, offset_of!(BlockFooter, footer_crc)) == f.footer_crc.get(),
        blocks: None,
    };
    let expect_len = block_count
        .checked_mul(BLOCK_CRC_LEN as u64)
        .and_then(|t| t.checked_add(table_offset))
        .and_then(|t| t.checked_add(FOOTER_LEN as u64));
    if expect_len != Some(len as u64) || block_count != table_offset.div_ceil(BLOCK as u64) {
        let why = format!(
            "the footer does not match the file: table_offset {table_offset} + {BLOCK_CRC_LEN} x block_count \
             {block_count} + {FOOTER_LEN} should be the file length {len}"
        );
        return (Some(d), Some(why));
    }
    // Both lie inside the file: checked above.
    let t = table_offset as usize;
    let table = file.get(t..len - FOOTER_LEN).unwrap_or_default();
    let bad_blocks = table
        .chunks_exact(BLOCK_CRC_LEN)
        .enumerate()
        .filter(|&(i, stored)| {
            let start = i * BLOCK;
            crc(file, start, (start + BLOCK).min(t)) != u32_at(stored, 0)
        })
        .count() as u64;
    d.blocks = Some(BlockChecks {
        table_crc_ok: crc32fast::hash(table) == f.table_crc.get(),
        bad_blocks,
    });
    (Some(d), None)
}

/// A segment index file (spec 17): its header and footer.
#[derive(Debug, Default)]
pub struct IndexDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<IndexHeaderDump>,
    /// The footer, if the file has room for one.
    pub footer: Option<FooterDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

/// The fields of an index header (spec 17.1).
#[derive(Debug, Clone)]
pub struct IndexHeaderDump {
    /// `index_version`.
    pub index_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `segment_base`.
    pub segment_base: u64,
    /// `segment_len`.
    pub segment_len: u64,
    /// `hash_mask`.
    pub hash_mask: u64,
    /// `stream_count`.
    pub stream_count: u32,
    /// `stream_entry_count`.
    pub stream_entry_count: u32,
    /// `category_count`.
    pub category_count: u32,
    /// `category_entry_count`.
    pub category_entry_count: u32,
    /// `type_count`.
    pub type_count: u32,
    /// `type_entry_count`.
    pub type_entry_count: u32,
    /// `frame_count`.
    pub frame_count: u32,
    /// `names_len`.
    pub names_len: u32,
    /// `seal_crc`.
    pub seal_crc: u32,
}

/// Describe a segment index file.
pub fn index(file: &[u8]) -> IndexDump {
    let Some(h) = struct_at::<IdxHeader>(file, 0) else {
        return IndexDump {
            stop: Some(format!(
                "the index header needs {IDX_HEADER_LEN} bytes, the file has {}",
                file.len()
            )),
            ..IndexDump::default()
        };
    };
    let (footer, stop) = footer(file);
    IndexDump {
        header: Some(IndexHeaderDump {
            index_version: h.index_version.get(),
            flags: h.flags.get(),
            segment_base: h.segment_base.get(),
            segment_len: h.segment_len.get(),
            hash_mask: h.hash_mask.get(),
            stream_count: h.stream_count.get(),
            stream_entry_count: h.stream_entry_count.get(),
            category_count: h.category_count.get(),
            category_entry_count: h.category_entry_count.get(),
            type_count: h.type_count.get(),
            type_entry_count: h.type_entry_count.get(),
            frame_count: h.frame_count.get(),
            names_len: h.names_len.get(),
            seal_crc: h.seal_crc.get(),
        }),
        footer,
        stop,
    }
}

/// The stream table (spec 18): its header and footer.
#[derive(Debug, Default)]
pub struct StreamTableDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<StreamTableHeaderDump>,
    /// The footer, if the file has room for one.
    pub footer: Option<FooterDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

/// The fields of the stream table's header (spec 18).
#[derive(Debug, Clone)]
pub struct StreamTableHeaderDump {
    /// `table_version`.
    pub table_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `next_segment`.
    pub next_segment: u64,
    /// `hash_mask`.
    pub hash_mask: u64,
    /// `stream_count`.
    pub stream_count: u64,
    /// `names_len`.
    pub names_len: u64,
}

/// Describe the stream table.
pub fn stream_table(file: &[u8]) -> StreamTableDump {
    let Some(h) = struct_at::<StbHeader>(file, 0) else {
        return StreamTableDump {
            stop: Some(format!(
                "the stream table header needs {STB_HEADER_LEN} bytes, the file has {}",
                file.len()
            )),
            ..StreamTableDump::default()
        };
    };
    let (footer, stop) = footer(file);
    StreamTableDump {
        header: Some(StreamTableHeaderDump {
            table_version: h.table_version.get(),
            flags: h.flags.get(),
            next_segment: h.next_segment.get(),
            hash_mask: h.hash_mask.get(),
            stream_count: h.stream_count.get(),
            names_len: h.names_len.get(),
        }),
        footer,
        stop,
    }
}

// ------------------------------------------------------------ snapshots

/// A snapshot file (spec 20.2): its header.
#[derive(Debug, Default)]
pub struct SnapshotDump {
    /// The header; `None` if the file is shorter than one.
    pub header: Option<SnapshotHeaderDump>,
    /// Why the description stops before the end of the file, if it does.
    pub stop: Option<String>,
}

/// The fields of a snapshot header, and the stream name after it.
#[derive(Debug, Clone)]
pub struct SnapshotHeaderDump {
    /// `format_version`.
    pub format_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `stream_len`.
    pub stream_len: u16,
    /// The stream name; `None` if the file ends before it does.
    pub stream: Option<Vec<u8>>,
    /// `stream_version`.
    pub stream_version: u64,
    /// `position`.
    pub position: u64,
    /// `schema_version`.
    pub schema_version: u32,
    /// `payload_len`.
    pub payload_len: u64,
    /// `crc` as stored.
    pub crc: u32,
    /// Whether `crc` matches the file.
    pub crc_ok: bool,
}

/// Describe a snapshot file.
pub fn snapshot(file: &[u8]) -> SnapshotDump {
    let len = file.len();
    let Some(h) = struct_at::<SnapshotHeader>(file, 0) else {
        return SnapshotDump {
            header: None,
            stop: Some(format!(
                "the snapshot header needs {SNAPSHOT_HEADER_LEN} bytes, the file has {len}"
            )),
        };
    };
    let stream_len = h.stream_len.get();
    let payload_len = h.payload_len.get();
    // The CRC covers every byte of the file but its own field.
    let mut c = crc32fast::Hasher::new();
    c.update(file.get(..offset_of!(SnapshotHeader, crc)).unwrap_or_default());
    c.update(file.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default());
    let header = SnapshotHeaderDump {
        format_version: h.format_version.get(),
        flags: h.flags.get(),
        stream_len,
        stream: field(file, SNAPSHOT_HEADER_LEN, stream_len.into()).map(<[u8]>::to_vec),
        stream_version: h.stream_version.get(),
        position: h.position.get(),
        schema_version: h.schema_version.get(),
        payload_len,
        crc: h.crc.get(),
        crc_ok: c.finalize() == h.crc.get(),
    };
    // In u128: a payload_len near u64::MAX must not overflow the sum.
    let expect = SNAPSHOT_HEADER_LEN as u128 + u128::from(stream_len) + u128::from(payload_len);
    let stop = (expect != len as u128)
        .then(|| format!("the header gives a file length of {expect}, the file has {len} bytes"));
    SnapshotDump {
        header: Some(header),
        stop,
    }
}

// ------------------------------------------------------------ the head file

/// The head file (spec 5.2): both slots.
#[derive(Debug, Default)]
pub struct HeadDump {
    /// The slots present in the file, in file order.
    pub slots: Vec<SlotDump>,
    /// Why the description stops before the end of the file, or that the
    /// file has more bytes than two slots.
    pub stop: Option<String>,
}

impl HeadDump {
    fn problems(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| matches!(s, SlotDump::Written(w) if !w.crc_ok))
            .count() as u64
    }
}

/// One slot of the head file.
#[derive(Debug, Clone)]
pub enum SlotDump {
    /// All zero: not written yet. Holds the slot's file offset.
    Empty(u64),
    /// A written slot.
    Written(HeadSlotDump),
}

/// The fields of a written head slot.
#[derive(Debug, Clone)]
pub struct HeadSlotDump {
    /// File offset of the slot.
    pub offset: u64,
    /// The magic as stored.
    pub magic: [u8; 4],
    /// `crc` as stored.
    pub crc: u32,
    /// Whether the magic is right and `crc` matches.
    pub crc_ok: bool,
    /// `format_version`.
    pub format_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `reserved0`.
    pub reserved0: u32,
    /// `sequence`.
    pub sequence: u64,
    /// `segment_base`.
    pub segment_base: u64,
    /// `durable_end`.
    pub durable_end: u64,
    /// `visible_end`.
    pub visible_end: u64,
    /// `next_position`.
    pub next_position: u64,
    /// `reserved1`.
    pub reserved1: u64,
}

/// Describe the head file.
pub fn head(file: &[u8]) -> HeadDump {
    let len = file.len();
    let mut d = HeadDump::default();
    for o in [0, HEAD_SLOT_LEN] {
        let Some(s) = struct_at::<HeadSlot>(file, o) else {
            d.stop = Some(format!(
                "the head file needs {HEAD_FILE_LEN} bytes (two {HEAD_SLOT_LEN}-byte slots), the file has {len}"
            ));
            return d;
        };
        let bytes = s.as_bytes();
        if bytes.iter().all(|&b| b == 0) {
            d.slots.push(SlotDump::Empty(o as u64));
            continue;
        }
        let crc_ok = s.magic == HEAD_MAGIC && crc(bytes, HEAD_CRC_START, HEAD_SLOT_LEN) == s.crc.get();
        d.slots.push(SlotDump::Written(HeadSlotDump {
            offset: o as u64,
            magic: s.magic,
            crc: s.crc.get(),
            crc_ok,
            format_version: s.format_version.get(),
            flags: s.flags.get(),
            reserved0: s.reserved0.get(),
            sequence: s.sequence.get(),
            segment_base: s.segment_base.get(),
            durable_end: s.durable_end.get(),
            visible_end: s.visible_end.get(),
            next_position: s.next_position.get(),
            reserved1: s.reserved1.get(),
        }));
    }
    if len != HEAD_FILE_LEN {
        d.stop = Some(format!(
            "the head file has {len} bytes, expected {HEAD_FILE_LEN} (two {HEAD_SLOT_LEN}-byte slots)"
        ));
    }
    d
}
