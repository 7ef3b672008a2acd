//! Inspection of segment files (spec 2, 3): the header, every frame, the
//! records of each batch and the body of each checkpoint, in file order, up
//! to the first length that cannot be followed.

use std::mem::offset_of;

use zerocopy::IntoBytes;

use super::{crc, hex, struct_at, u32_at};
use crate::format::batch::{BodyContext, parse_body};
use crate::format::meta::{META_EVENT_TYPE, META_FORMAT_VERSION, META_STREAM_PREFIX, StreamRules};
use crate::format::record::RecordRef;
use crate::format::record::record_len;
use crate::format::{
    CHECKPOINT_FRAME_LEN, FRAME_CRC_START, FRAME_FLAG_CHAINED, FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, FRAME_KIND_BATCH,
    FRAME_KIND_CHECKPOINT, FRAME_KIND_SEAL, FRAME_MAGIC, FRAME_MAGIC_V3, FrameHeader, FrameHeaderV3, Layout,
    RECORD_CRC_START, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_CRC_OFFSET, SEGMENT_HEADER_LEN, SegmentHeader,
};

// The checkpoint body (spec 3.5) has no struct in `crate::format` yet. Until
// it does, its table is written here, once, and every offset of it below is
// derived from it; when the format module gains it, this struct goes and the
// import changes.

use crate::format::CheckpointBody;

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
    /// `segment_flags` (bit 0 `COMPACTED`, spec 3.10).
    pub segment_flags: u16,
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
    /// The audit chain slot (zero where the frame stores none: version 3).
    pub chain: [u8; 32],
    /// Whether `header_crc` matches the frame header.
    pub header_crc_ok: bool,
    /// Version 3 (spec 3.6): the header's length (32, or 64 with a chain
    /// slot) and whether `body_crc` matches the body; `None` before.
    pub v3: Option<(u32, bool)>,
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

    /// How many checksums of this frame do not match: its header, its records, a checkpoint body.
    pub fn problems(&self) -> u64 {
        let records = self
            .records
            .iter()
            .map(|r| {
                u64::from(!r.crc_ok)
                    + u64::from(matches!(r.rules, Some(Err(_))))
                    + u64::from(matches!(r.retention, Some(Err(_))))
            })
            .sum::<u64>();
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
    /// Whether the record CRC matches (version 3: the batch's `body_crc`).
    pub crc_ok: bool,
    /// The event id, and whether it is stored (version 3 does not store a
    /// generated id, spec 9).
    pub event_id: ([u8; 16], bool),
    /// Format version 4: an event of a metadata stream `$meta-S` (spec
    /// 3.7), its rules record decoded, or what is wrong with it; `None` for
    /// every other event.
    pub rules: Option<Result<RulesDump, RulesError>>,
    /// Format version 4: a record sealed for a subject (spec 3.8), its key
    /// id and nonce; the payload is then the ciphertext.
    pub sealed: Option<(u64, [u8; 24])>,
    /// Format version 5: the record's `JSON` flag (spec 3.11), its payload
    /// declared JSON text.
    pub json: bool,
    /// Format version 4: an event of `$retention` (spec 3.9), its retention
    /// record decoded, or what is wrong with it; `None` for every other
    /// event.
    pub retention: Option<Result<crate::format::retention::RetentionRecord, RulesError>>,
}

/// The rules record of a metadata event (spec 3.7), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulesDump {
    /// `DELETED`.
    pub deleted: bool,
    /// `TOMBSTONE`.
    pub tombstone: bool,
    /// `truncate_before`, with its flag.
    pub truncate_before: Option<u64>,
    /// `max_count`, with its flag.
    pub max_count: Option<u64>,
    /// `max_age` in nanoseconds, with its flag.
    pub max_age: Option<u64>,
}

impl RulesDump {
    /// The names of the flags set, in bit order.
    pub fn flag_names(&self) -> Vec<&'static str> {
        [
            (self.deleted, "DELETED"),
            (self.tombstone, "TOMBSTONE"),
            (self.truncate_before.is_some(), "TRUNCATE_BEFORE"),
            (self.max_count.is_some(), "MAX_COUNT"),
            (self.max_age.is_some(), "MAX_AGE"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// What is wrong with the rules record of a metadata event (spec 3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    /// The file offset of the byte that fails (the payload's start when the
    /// event itself is not a metadata event).
    pub offset: u64,
    /// That byte's offset within the payload.
    pub payload_offset: u64,
    /// What was expected and found.
    pub detail: String,
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
        segment_flags: h.segment_flags.get(),
        log_id: h.log_id,
        base_position: h.base_position.get(),
        prev_timestamp: h.prev_timestamp.get(),
        created_at: h.created_at.get(),
        chain_start: h.chain_start,
        key_id: h.key_id,
        header_crc: h.header_crc.get(),
        crc_ok: crc(file, 0, SEGMENT_HEADER_CRC_OFFSET) == h.header_crc.get(),
    });
    let layout = Layout::of(h);
    let mut off = SEGMENT_HEADER_LEN;
    while off < file.len() {
        let (frame, next) = if layout.compact() {
            frame_at_v3(file, off, &layout)
        } else {
            frame_at(file, off)
        };
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
        v3: None,
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
            event_id: (h.event_id, true),
            rules: None,
            sealed: None,
            json: false,
            retention: None,
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

/// [`frame_at`] for a segment of format version 3 (spec 3.6).
fn frame_at_v3(file: &[u8], off: usize, layout: &Layout) -> (Option<FrameDump>, Result<usize, String>) {
    let left = file.len().saturating_sub(off);
    let Some(h) = struct_at::<FrameHeaderV3>(file, off) else {
        return (
            None,
            Err(format!(
                "at offset {off}: {left} trailing bytes, too few for a {FRAME_HEADER_V3_LEN}-byte frame header (a torn \
                 tail?)"
            )),
        );
    };
    if h.magic != FRAME_MAGIC_V3 {
        return (
            None,
            Err(format!(
                "at offset {off}: no frame magic \"F3\" (found {})",
                hex(&h.magic)
            )),
        );
    }
    let header_len = FrameHeaderV3::len_with(h.flags & FRAME_FLAG_CHAINED);
    let mut chain = [0u8; 32];
    if h.flags & FRAME_FLAG_CHAINED != 0
        && let Some(c) = file.get(off + FRAME_HEADER_V3_LEN..off + header_len)
    {
        chain.copy_from_slice(c);
    }
    let len = u64::from(h.frame_len.get());
    let body_end = usize::try_from(len)
        .ok()
        .and_then(|l| off.checked_add(l))
        .filter(|&e| e <= file.len());
    let body_crc_ok = body_end
        .and_then(|e| file.get(off + header_len..e))
        .is_some_and(|b| crc32fast::hash(b) == h.body_crc.get());
    let mut frame = FrameDump {
        offset: off as u64,
        kind: h.kind,
        len,
        first_position: h.first_position.get(),
        count: h.record_count.get(),
        durable_end: u64::from(h.durable_end.get()),
        chain,
        header_crc_ok: file
            .get(off + 4..off + header_len)
            .is_some_and(|b| crc32fast::hash(b) == h.header_crc.get()),
        records: Vec::new(),
        checkpoint: None,
        v3: Some((header_len as u32, h.kind != FRAME_KIND_BATCH || body_crc_ok)),
    };
    let end = match body_end {
        Some(e) if len >= header_len as u64 && len.is_multiple_of(8) => e,
        _ => {
            let why = format!(
                "frame at offset {off}: frame_len {len} is not a multiple of 8 of at least {header_len} that fits in \
                 the {left} bytes left"
            );
            return (Some(frame), Err(why));
        }
    };
    let next = match frame.kind {
        FRAME_KIND_BATCH => {
            let body = file.get(off + header_len..end).unwrap_or_default();
            let cx = BodyContext {
                first_position: frame.first_position,
                count: frame.count,
                prev_timestamp: layout.prev_timestamp,
                id_seed: layout.id_seed,
                at: (off + header_len) as u64,
                header_len,
                version: layout.version,
            };
            let mut starts = Vec::new();
            let parsed = parse_body(body, &cx, None, |at, r| starts.push((at, r)));
            let ends: Vec<usize> = starts.iter().skip(1).map(|(at, _)| *at).chain([end - off]).collect();
            for ((at, r), until) in starts.iter().zip(ends) {
                let stored = body
                    .get(at - header_len)
                    .is_some_and(|&f| f & crate::format::batch::RECORD_FLAG_ID != 0);
                frame.records.push(RecordDump {
                    offset: (off + at) as u64,
                    len: (until - at) as u32,
                    position: r.position(),
                    stream: r.stream_bytes().to_vec(),
                    stream_version: r.stream_version(),
                    event_type: r.event_type_bytes().to_vec(),
                    schema_version: r.schema_version(),
                    stream_len: r.stream_bytes().len() as u16,
                    type_len: r.event_type_bytes().len() as u16,
                    metadata_len: r.metadata().len() as u32,
                    payload_len: r.payload().len() as u32,
                    crc_ok: body_crc_ok,
                    event_id: (*r.event_id().as_bytes(), stored),
                    rules: (layout.version >= META_FORMAT_VERSION
                        && r.stream_bytes().starts_with(META_STREAM_PREFIX.as_bytes()))
                    .then(|| rules_of(file, r)),
                    sealed: r.seal().map(|s| (s.key, *s.nonce)),
                    json: r.is_json(),
                    retention: (layout.version >= META_FORMAT_VERSION
                        && r.stream_bytes() == crate::format::retention::RETENTION_STREAM.as_bytes())
                    .then(|| retention_of(file, r)),
                });
            }
            parsed
                .map(|_| end)
                .map_err(|d| format!("frame at offset {off}: {}", d.detail()))
        }
        FRAME_KIND_SEAL if end != file.len() => Err(format!(
            "the seal at offset {off} is followed by {} more bytes",
            file.len() - end
        )),
        FRAME_KIND_SEAL => Ok(end),
        FRAME_KIND_CHECKPOINT => {
            frame.checkpoint = Some(checkpoint_at(file, off + header_len, len == CHECKPOINT_V3_LEN));
            Ok(end)
        }
        kind => Err(format!("frame at offset {off}: invalid kind {kind}")),
    };
    (Some(frame), next)
}

/// The rules record of metadata event `r` (spec 3.7), borrowed from `file`.
fn rules_of(file: &[u8], r: &RecordRef<'_>) -> Result<RulesDump, RulesError> {
    let payload = r.payload();
    // The payload borrows from `file`: its start is its offset there.
    let start = (payload.as_ptr() as usize).wrapping_sub(file.as_ptr() as usize) as u64;
    if r.event_type_bytes() != META_EVENT_TYPE.as_bytes() || r.schema_version() != 0 || !r.metadata().is_empty() {
        return Err(RulesError {
            offset: start,
            payload_offset: 0,
            detail: format!(
                "an event of a metadata stream must be a {META_EVENT_TYPE} event with schema version 0 and no \
                 metadata (spec 3.7)"
            ),
        });
    }
    match StreamRules::decode(payload) {
        Ok(d) => Ok(RulesDump {
            deleted: d.deleted,
            tombstone: d.tombstone,
            truncate_before: d.truncate_before,
            max_count: d.max_count,
            max_age: d.max_age,
        }),
        Err((at, detail)) => Err(RulesError {
            offset: start + at as u64,
            payload_offset: at as u64,
            detail,
        }),
    }
}

/// The retention record of `$retention` event `r` (spec 3.9), borrowed
/// from `file`.
fn retention_of(file: &[u8], r: &RecordRef<'_>) -> Result<crate::format::retention::RetentionRecord, RulesError> {
    use crate::format::retention::{RETENTION_EVENT_TYPE, RetentionRecord};
    let payload = r.payload();
    let start = (payload.as_ptr() as usize).wrapping_sub(file.as_ptr() as usize) as u64;
    if r.event_type_bytes() != RETENTION_EVENT_TYPE.as_bytes() || r.schema_version() != 0 || !r.metadata().is_empty() {
        return Err(RulesError {
            offset: start,
            payload_offset: 0,
            detail: format!(
                "an event of $retention must be a {RETENTION_EVENT_TYPE} event with schema version 0 and no \
                 metadata (spec 3.9)"
            ),
        });
    }
    RetentionRecord::decode(payload).map_err(|(at, detail)| RulesError {
        offset: start + at as u64,
        payload_offset: at as u64,
        detail,
    })
}

/// Bytes of a version-3 checkpoint frame (spec 3.6).
const CHECKPOINT_V3_LEN: u64 = (FRAME_HEADER_V3_LEN + 32 + crate::format::CHECKPOINT_BODY_LEN) as u64;

/// The body of the checkpoint frame at `off`, of `frame_len` bytes. Each
/// field is read from the file wherever it is there, even if the frame is
/// too short for it: the dump shows what a damaged frame would hold.
fn checkpoint(file: &[u8], off: usize, frame_len: u64) -> CheckpointDump {
    checkpoint_at(file, off + FRAME_HEADER_LEN, frame_len == CHECKPOINT_FRAME_LEN as u64)
}

/// The checkpoint body at file offset `body`; `len_ok`: its frame has a
/// checkpoint's length.
fn checkpoint_at(file: &[u8], body: usize, len_ok: bool) -> CheckpointDump {
    let key_at = body + offset_of!(CheckpointBody, public_key);
    let sig_at = body + offset_of!(CheckpointBody, signature);
    let crc_at = body + offset_of!(CheckpointBody, body_crc);
    CheckpointDump {
        public_key: struct_at(file, key_at).copied(),
        signature: struct_at(file, sig_at).copied(),
        body_crc_ok: len_ok && crc(file, body, crc_at) == u32_at(file, crc_at),
    }
}
