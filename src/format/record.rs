//! Events going in ([`EventData`]) and records coming out ([`RecordRef`]).
//!
//! This module owns the record layout of spec section 3.2: encoding a record
//! into a buffer, and parsing one from bytes. A [`RecordRef`] borrows every
//! variable part (stream name, event type, metadata, payload) from the bytes it
//! was parsed from, which for replay are the memory-mapped segment: reading a
//! record copies nothing and allocates nothing.

use std::borrow::Cow;

use uuid::Uuid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::format::sealed::{KeyId, NONCE_LEN, Seal, SealState, SealedWith, SubjectWord};
use crate::format::{
    RECORD_CRC_OFFSET, RECORD_CRC_START, RECORD_FLAGS_OFFSET, RECORD_HEADER_LEN, RECORD_STREAM_LEN_OFFSET,
    RecordHeader, align_up,
};

/// One event to append: its type, payload and metadata, an optional id, the
/// payload's schema version, and the subject it names, if any.
///
/// An event that names a subject ([`EventData::with_subject`]) is stored
/// sealed: its payload and metadata encrypted with the subject's key, so
/// that [`Log::erase_subject`](crate::Log::erase_subject) can erase them
/// later (spec 3.8, 22).
///
/// ```
/// use annal::EventData;
/// let e = EventData::new("OrderPlaced", br#"{"total":42}"#)
///     .with_metadata(br#"{"user":"ann"}"#)
///     .with_schema_version(2);
/// assert_eq!(e.event_type, "OrderPlaced");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData<'a> {
    /// The event type, e.g. `OrderPlaced` (1 to 65,535 bytes of UTF-8).
    pub event_type: Cow<'a, str>,
    /// The payload bytes (opaque to annal).
    pub payload: Cow<'a, [u8]>,
    /// Metadata bytes (opaque to annal): user times, correlation ids, ...
    pub metadata: Cow<'a, [u8]>,
    /// The event id; generated (UUID v7) at append when `None`.
    pub id: Option<Uuid>,
    /// Schema version of the payload, for upcasting.
    pub schema_version: u32,
    /// The subject (a person) whose data the event holds: payload and
    /// metadata are then stored encrypted with the subject's key, and erased
    /// with it. 1 to 1024 bytes of UTF-8; format version 4.
    pub subject: Option<Cow<'a, str>>,
    /// Set by the writer on the sealed copy of an event it encodes.
    pub(crate) sealed: Option<SealedWith>,
    /// The payload is JSON text (record flag `JSON`, format version 5,
    /// spec 3.11): set by `EventData::json` and typed events of the JSON
    /// codec, never on bytes that were not serialised as JSON.
    pub(crate) json: bool,
}

/// Bytes an [`EventData`] takes as its payload or metadata, borrowed or
/// owned: `&[u8]`, byte string literals (`&[u8; N]`), `Vec<u8>`, `&Vec<u8>`,
/// `Box<[u8]>`, `String`, `&str`, `&String` and `Cow<[u8]>`.
pub trait Payload<'a> {
    /// The bytes, borrowed where they were borrowed.
    fn into_bytes(self) -> Cow<'a, [u8]>;
}

impl<'a> Payload<'a> for &'a [u8] {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a, const N: usize> Payload<'a> for &'a [u8; N] {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_slice())
    }
}

impl<'a> Payload<'a> for Vec<u8> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}

impl<'a> Payload<'a> for &'a Vec<u8> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_slice())
    }
}

impl<'a> Payload<'a> for Box<[u8]> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_vec())
    }
}

impl<'a> Payload<'a> for String {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}

impl<'a> Payload<'a> for &'a str {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> Payload<'a> for &'a String {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> Payload<'a> for Cow<'a, [u8]> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        self
    }
}

impl<'a> EventData<'a> {
    /// An event with the given type and payload, no metadata, a generated id,
    /// and schema version 0.
    ///
    /// The payload is any [`Payload`]: a byte string literal (`b"{}"`), a
    /// slice, a `Vec<u8>`, a `String` or `&str`, or a `Cow`.
    ///
    /// ```
    /// use annal::EventData;
    /// let owned = EventData::new("Paid", vec![1, 2, 3]);
    /// let literal = EventData::new("Paid", b"\x01\x02\x03");
    /// let text = EventData::new("Noted", String::from("{}"));
    /// assert_eq!(owned.payload, literal.payload);
    /// assert_eq!(&*text.payload, b"{}");
    /// ```
    pub fn new(event_type: impl Into<Cow<'a, str>>, payload: impl Payload<'a>) -> Self {
        EventData {
            event_type: event_type.into(),
            payload: payload.into_bytes(),
            metadata: Cow::Borrowed(&[]),
            id: None,
            schema_version: 0,
            subject: None,
            sealed: None,
            json: false,
        }
    }

    /// Set the metadata.
    pub fn with_metadata(mut self, metadata: impl Payload<'a>) -> Self {
        self.metadata = metadata.into_bytes();
        self
    }

    /// Set the event id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Set the payload's schema version.
    pub fn with_schema_version(mut self, v: u32) -> Self {
        self.schema_version = v;
        self
    }

    /// Name the subject (a person) whose personal data the event holds: its
    /// payload and metadata are stored encrypted with the subject's key and
    /// read as erased once the subject is erased. Several events and streams
    /// may name one subject.
    ///
    /// ```
    /// use annal::EventData;
    /// let e = EventData::new("EmailChanged", br#"{"email":"ann@example.com"}"#)
    ///     .with_subject("customer-42");
    /// assert_eq!(e.subject.as_deref(), Some("customer-42"));
    /// ```
    pub fn with_subject(mut self, subject: impl Into<Cow<'a, str>>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Whether the payload is marked as JSON text (spec 3.11): events made
    /// by `EventData::json` (feature `json`) or by a typed event whose
    /// codec is JSON. A log of format version 5 stores the mark in the
    /// record; older logs refuse such events.
    ///
    /// ```
    /// let e = annal::EventData::new("Noted", b"{}");
    /// assert!(!e.is_json(), "bytes given as they are are opaque");
    /// ```
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// This event with its payload marked as JSON text (the caller
    /// serialised it with serde_json).
    #[cfg_attr(not(feature = "json"), allow(dead_code, reason = "marked only by the JSON codec"))]
    pub(crate) fn marked_json(mut self) -> Self {
        self.json = true;
        self
    }

    /// The sealed copy of this event (the writer's): `ciphertext` as its
    /// payload, no metadata, no subject name.
    pub(crate) fn sealed_copy(&self, ciphertext: Vec<u8>, with: SealedWith) -> EventData<'static> {
        EventData {
            event_type: Cow::Owned(self.event_type.clone().into_owned()),
            payload: Cow::Owned(ciphertext),
            metadata: Cow::Borrowed(&[]),
            id: self.id,
            schema_version: self.schema_version,
            subject: None,
            sealed: Some(with),
            json: self.json,
        }
    }

    /// The number of bytes this event occupies as a record in `stream`.
    pub(crate) fn record_len(&self, stream: &str) -> u64 {
        record_len(
            stream.len(),
            self.event_type.len(),
            self.metadata.len(),
            self.payload.len(),
        )
    }
}

/// `record_len` of spec 3.2 for the given part lengths; `u64::MAX` (more
/// than any record can be, [`crate::format::MAX_RECORD_LEN`]) if the sum does
/// not fit a `u64`. The parts of a parsed record (two `u16`, two `u32`) can
/// never get there; the sum is checked all the same.
pub(crate) fn record_len(stream: usize, event_type: usize, metadata: usize, payload: usize) -> u64 {
    [stream, event_type, metadata, payload]
        .into_iter()
        .try_fold(RECORD_HEADER_LEN as u64, |sum, n| {
            sum.checked_add(u64::try_from(n).ok()?)
        })
        .and_then(align_up)
        .unwrap_or(u64::MAX)
}

/// The fields of a record that the writer decides.
pub(crate) struct Stamp {
    pub position: u64,
    pub stream_version: u64,
    pub timestamp: u64,
    pub event_id: [u8; 16],
}

/// Append one record to `out`. The caller has checked every length against the
/// format limits (see `Log::append`). `crc` is a fresh hasher, cloned for the
/// record's CRC: a writer encoding a batch makes one and spares the CPU
/// feature detection of `crc32fast::hash` per record.
#[inline]
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    stream: &str,
    ev: &EventData<'_>,
    stamp: &Stamp,
    crc: &crc32fast::Hasher,
) {
    let len = ev.record_len(stream);
    let start = out.len();
    let header = RecordHeader {
        record_len: U32::new(len as u32),
        crc: U32::ZERO,
        position: U64::new(stamp.position),
        stream_version: U64::new(stamp.stream_version),
        timestamp: U64::new(stamp.timestamp),
        event_id: stamp.event_id,
        schema_version: U32::new(ev.schema_version),
        flags: U16::ZERO,
        stream_len: U16::new(stream.len() as u16),
        type_len: U16::new(ev.event_type.len() as u16),
        reserved0: U16::ZERO,
        metadata_len: U32::new(ev.metadata.len() as u32),
        payload_len: U32::new(ev.payload.len() as u32),
        reserved1: U32::ZERO,
    };
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(ev.event_type.as_bytes());
    out.extend_from_slice(&ev.metadata);
    out.extend_from_slice(&ev.payload);
    out.resize(start + len as usize, 0);
    let mut h = crc.clone();
    #[expect(
        clippy::indexing_slicing,
        reason = "`out` was just extended to `start + len`, and `len` is at least a record header"
    )]
    {
        h.update(&out[start + RECORD_CRC_START..]);
        out[start + RECORD_CRC_OFFSET..start + RECORD_CRC_START].copy_from_slice(&h.finalize().to_le_bytes());
    }
}

/// One event as stored in the log, borrowed from the bytes it was read from
/// (for replay: the memory-mapped segment).
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    position: u64,
    stream_version: u64,
    timestamp: u64,
    event_id: [u8; 16],
    schema_version: u32,
    /// The subject's key and the seal state (spec 3.8), beside
    /// `schema_version` so that the record is no larger for it. While
    /// [`SealState::Sealed`], `metadata` holds the record's nonce (a sealed
    /// record has no metadata of its own: it is inside the ciphertext).
    subject: SubjectWord,
    /// The record flag `JSON` (format version 5, spec 3.11).
    json: bool,
    // UTF-8 is checked when the record's batch is validated; the accessors
    // convert lazily so replay that does not look at names pays nothing.
    stream: &'a [u8],
    event_type: &'a [u8],
    metadata: &'a [u8],
    payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// A record of a version-3 batch, from its parts (`format::batch`).
    #[expect(clippy::too_many_arguments, reason = "one record's fields, built in one place")]
    #[inline(always)]
    pub(crate) fn from_parts(
        position: u64,
        stream_version: u64,
        timestamp: u64,
        event_id: [u8; 16],
        schema_version: u32,
        stream: &'a [u8],
        event_type: &'a [u8],
        metadata: &'a [u8],
        payload: &'a [u8],
    ) -> Self {
        RecordRef {
            position,
            stream_version,
            timestamp,
            event_id,
            schema_version,
            stream,
            event_type,
            metadata,
            payload,
            subject: SubjectWord::NONE,
            json: false,
        }
    }

    /// The record with the `JSON` flag set if `json` (spec 3.11).
    #[inline(always)]
    pub(crate) fn json_if(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// The record as stored sealed for key `key` with `nonce` (its
    /// metadata is empty: it is inside the ciphertext).
    #[inline(always)]
    pub(crate) fn sealed_with(mut self, key: u64, nonce: &'a [u8; NONCE_LEN]) -> Self {
        self.subject = SubjectWord::new(key, SealState::Sealed);
        self.metadata = nonce;
        self
    }

    /// The subject part of a record still sealed, as stored: its key id
    /// and nonce.
    pub(crate) fn seal(&self) -> Option<Seal<'a>> {
        match self.subject.state()? {
            SealState::Sealed => Some(Seal {
                key: self.subject.key()?,
                nonce: self.metadata.try_into().ok()?,
            }),
            SealState::Opened | SealState::Erased => None,
        }
    }

    /// The record with `metadata` and `payload` in place of what it holds,
    /// in the state `state` (a sealed record decrypted or erased).
    pub(crate) fn with_content<'b>(&self, metadata: &'b [u8], payload: &'b [u8], state: SealState) -> RecordRef<'b>
    where
        'a: 'b,
    {
        RecordRef {
            metadata,
            payload,
            subject: self
                .subject
                .key()
                .map_or(SubjectWord::NONE, |k| SubjectWord::new(k, state)),
            ..*self
        }
    }

    /// A record of format version 1 or 2 whose header is `header`.
    #[inline(always)]
    fn of_header(
        header: &RecordHeader,
        stream: &'a [u8],
        event_type: &'a [u8],
        metadata: &'a [u8],
        payload: &'a [u8],
    ) -> Self {
        Self::from_parts(
            header.position.get(),
            header.stream_version.get(),
            header.timestamp.get(),
            header.event_id,
            header.schema_version.get(),
            stream,
            event_type,
            metadata,
            payload,
        )
    }

    /// The event's global position in the log (0-based, contiguous).
    pub fn position(&self) -> u64 {
        self.position
    }
    /// The event's version within its stream (0-based, contiguous).
    pub fn stream_version(&self) -> u64 {
        self.stream_version
    }
    /// Append time: nanoseconds since the Unix epoch; never decreases with position.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// The event id.
    pub fn event_id(&self) -> Uuid {
        Uuid::from_bytes(self.event_id)
    }
    /// The payload's schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
    /// The stream name.
    pub fn stream(&self) -> &'a str {
        // Validated as UTF-8 with its batch (`validate_frame`); never empty then.
        std::str::from_utf8(self.stream).unwrap_or_default()
    }
    /// The stream name as stored (UTF-8 bytes), without conversion.
    pub fn stream_bytes(&self) -> &'a [u8] {
        self.stream
    }
    /// The event type.
    pub fn event_type(&self) -> &'a str {
        std::str::from_utf8(self.event_type).unwrap_or_default()
    }
    /// The event type as stored (UTF-8 bytes), without conversion.
    pub fn event_type_bytes(&self) -> &'a [u8] {
        self.event_type
    }
    /// The metadata bytes. Empty for a record that is still sealed
    /// ([`RecordRef::is_sealed`]: its metadata is inside the ciphertext) or
    /// erased.
    pub fn metadata(&self) -> &'a [u8] {
        if self.is_sealed() { &[] } else { self.metadata }
    }
    /// The payload bytes. For a record that is still sealed
    /// ([`RecordRef::is_sealed`]) this is the ciphertext as stored, never
    /// the event's payload: read sealed records through
    /// [`LogView::unseal`](crate::LogView::unseal), which decrypts them (or
    /// says they are erased). Empty for an erased record.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The key of the subject the event names, if it names one (spec 3.8):
    /// whether it is still sealed, decrypted or erased.
    pub fn subject_key(&self) -> Option<KeyId> {
        self.subject.key().map(KeyId)
    }
    /// Whether payload and metadata are the stored ciphertext of a subject's
    /// event, not yet decrypted: see [`LogView::unseal`](crate::LogView::unseal).
    #[inline]
    pub fn is_sealed(&self) -> bool {
        self.subject.state() == Some(SealState::Sealed)
    }
    /// Whether the record says its payload is JSON text (the record flag
    /// `JSON` of format version 5, spec 3.11): typed events decode it with
    /// serde_json, `annal read --json` prints it as a JSON value. `false`
    /// for every record of an older log, and for payloads appended as
    /// bytes (opaque, or postcard from typed events).
    #[inline]
    pub fn is_json(&self) -> bool {
        self.json
    }
    /// Whether the event's subject was erased: the envelope (position,
    /// stream, version, type, time, id) stays, payload and metadata are gone.
    pub fn is_erased(&self) -> bool {
        self.subject.state() == Some(SealState::Erased)
    }
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("position", &self.position())
            .field("stream", &self.stream())
            .field("stream_version", &self.stream_version())
            .field("event_type", &self.event_type())
            .field("timestamp", &self.timestamp())
            .field("event_id", &self.event_id())
            .field("schema_version", &self.schema_version())
            .field("metadata_len", &self.metadata().len())
            .field("payload_len", &self.payload.len())
            .field("subject_key", &self.subject_key())
            .field("seal", &self.subject.state())
            .field("json", &self.json)
            .finish()
    }
}

/// Parse the record at the start of `bytes` (which may hold more after it).
/// Returns the record and its length. Errors are `(offset within bytes, detail)`.
/// Stream name and event type are not checked for UTF-8 here: batch
/// validation does that once per distinct value (see `validate_frame`).
#[inline]
pub(crate) fn parse_record(bytes: &[u8], verify_crc: bool) -> Result<(RecordRef<'_>, usize), (usize, String)> {
    parse_record_with(bytes, verify_crc.then(crc32fast::Hasher::new).as_ref())
}

/// [`parse_record`], checking the CRC (and reserved fields and padding) when
/// given a fresh hasher: batch validation makes one per frame and clones it
/// for each record, which spares the CPU feature detection of
/// `crc32fast::hash` per record.
#[inline(always)]
pub(crate) fn parse_record_with<'a>(
    bytes: &'a [u8],
    crc: Option<&crc32fast::Hasher>,
) -> Result<(RecordRef<'a>, usize), (usize, String)> {
    let verify_crc = crc.is_some();
    let Ok((header, _)) = RecordHeader::ref_from_prefix(bytes) else {
        return Err(short_header(bytes.len()));
    };
    let len = header.record_len.get() as usize;
    let (s, t, m, p) = part_lens(header);
    let want = record_len(s, t, m, p);
    if len as u64 != want {
        return Err(bad_record_len(header, len));
    }
    let Some(rec) = bytes.get(..len) else {
        return Err(past_frame(len, bytes.len()));
    };
    if let Some(proto) = crc {
        let mut h = proto.clone();
        h.update(rec.get(RECORD_CRC_START..).unwrap_or_default());
        let got = h.finalize();
        if got != header.crc.get() {
            return Err(crc_mismatch(header, got));
        }
        if header.flags.get() != 0 || header.reserved0.get() != 0 || header.reserved1.get() != 0 {
            return Err(nonzero_reserved());
        }
    }
    if s == 0 || t == 0 {
        return Err(empty_name());
    }
    // Lengths were checked above: RECORD_HEADER_LEN + s + t + m + p == len
    // minus padding, and len <= rec.len(); the checked splits cannot fail.
    let Some((stream, event_type, metadata, payload, padding)) = split_parts(rec, s, t, m, p) else {
        return Err(bad_record_len(header, len));
    };
    if verify_crc && !zero_padding(rec, padding) {
        return Err(nonzero_padding(len, padding.len()));
    }
    Ok((RecordRef::of_header(header, stream, event_type, metadata, payload), len))
}

/// Parse the next record of a batch that `validate_frame` accepted, and
/// return it with the bytes after it.
///
/// Validation already checked every record of the batch (lengths, CRCs,
/// names), so this only follows the lengths; it still bounds-checks every
/// slice and returns `None`, rather than panicking, on bytes that do not
/// parse (which a validated batch never holds).
#[inline]
pub(crate) fn parse_validated(bytes: &[u8]) -> Option<(RecordRef<'_>, &[u8])> {
    let (header, _) = RecordHeader::ref_from_prefix(bytes).ok()?;
    let (rec, rest) = bytes.split_at_checked(header.record_len.get() as usize)?;
    let (s, t, m, p) = part_lens(header);
    let (stream, event_type, metadata, payload, _) = split_parts(rec, s, t, m, p)?;
    Some((
        RecordRef::of_header(header, stream, event_type, metadata, payload),
        rest,
    ))
}

/// Whether `padding`, the end of the record `rec`, is all zero bytes. There
/// are at most 7 (records are padded to a multiple of 8 bytes), so this reads
/// the record's last 8 bytes as one word.
#[inline(always)]
fn zero_padding(rec: &[u8], padding: &[u8]) -> bool {
    match (padding.len(), rec.last_chunk::<8>()) {
        (0, _) => true,
        (n @ 1..=7, Some(last)) => u64::from_le_bytes(*last) >> (64 - 8 * n) == 0,
        _ => padding.iter().all(|&b| b == 0),
    }
}

/// `(stream_len, type_len, metadata_len, payload_len)` of a record header.
#[inline(always)]
fn part_lens(h: &RecordHeader) -> (usize, usize, usize, usize) {
    (
        h.stream_len.get() as usize,
        h.type_len.get() as usize,
        h.metadata_len.get() as usize,
        h.payload_len.get() as usize,
    )
}

/// The parts of the record `rec` (header included) and its padding.
type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// Split `rec` after its header into stream, type, metadata, payload and
/// padding; `None` if the lengths do not fit.
#[inline(always)]
fn split_parts(rec: &[u8], s: usize, t: usize, m: usize, p: usize) -> Option<Parts<'_>> {
    let body = rec.get(RECORD_HEADER_LEN..)?;
    let (stream, body) = body.split_at_checked(s)?;
    let (event_type, body) = body.split_at_checked(t)?;
    let (metadata, body) = body.split_at_checked(m)?;
    let (payload, padding) = body.split_at_checked(p)?;
    Some((stream, event_type, metadata, payload, padding))
}

// Error details, kept out of the parsing fast path.

#[cold]
#[inline(never)]
fn short_header(have: usize) -> (usize, String) {
    (
        0,
        format!("expected a {RECORD_HEADER_LEN}-byte record header, found {have} bytes before the end of the frame"),
    )
}

#[cold]
#[inline(never)]
fn bad_record_len(h: &RecordHeader, len: usize) -> (usize, String) {
    let (s, t, m, p) = part_lens(h);
    let want = record_len(s, t, m, p);
    (
        0,
        format!("expected record_len {want} (from the part lengths {s}+{t}+{m}+{p}), found {len}"),
    )
}

#[cold]
#[inline(never)]
fn past_frame(len: usize, have: usize) -> (usize, String) {
    (
        0,
        format!("record_len {len} runs past the end of its frame ({have} bytes remain)"),
    )
}

#[cold]
#[inline(never)]
fn crc_mismatch(h: &RecordHeader, got: u32) -> (usize, String) {
    (
        RECORD_CRC_OFFSET,
        format!(
            "record CRC mismatch: stored {:#010x}, computed {got:#010x}",
            h.crc.get()
        ),
    )
}

#[cold]
#[inline(never)]
fn nonzero_reserved() -> (usize, String) {
    (
        RECORD_FLAGS_OFFSET,
        "expected record flags and reserved fields to be zero in format v1".into(),
    )
}

#[cold]
#[inline(never)]
fn empty_name() -> (usize, String) {
    (
        RECORD_STREAM_LEN_OFFSET,
        "expected a non-empty stream name and event type".into(),
    )
}

#[cold]
#[inline(never)]
fn nonzero_padding(len: usize, padding: usize) -> (usize, String) {
    (len - padding, "expected zero padding bytes".into())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_crc() {
        let ev = EventData::new("Type", b"payload".as_slice()).with_metadata(b"m".as_slice());
        let mut out = Vec::new();
        let stamp = Stamp {
            position: 7,
            stream_version: 3,
            timestamp: 99,
            event_id: [1; 16],
        };
        encode_record(&mut out, "s-1", &ev, &stamp, &crc32fast::Hasher::new());
        assert_eq!(out.len() % 8, 0);
        let (r, len) = parse_record(&out, true).unwrap();
        assert_eq!(len, out.len());
        assert_eq!((r.position(), r.stream_version(), r.timestamp()), (7, 3, 99));
        assert_eq!(
            (r.stream(), r.event_type(), r.metadata(), r.payload()),
            ("s-1", "Type", &b"m"[..], &b"payload"[..])
        );
        for i in 8..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(parse_record(&bad, true).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn every_padding_length_is_checked() {
        let stamp = Stamp {
            position: 0,
            stream_version: 0,
            timestamp: 0,
            event_id: [0; 16],
        };
        for p in 0..8usize {
            let payload = vec![0xa5u8; p];
            let ev = EventData::new("T", payload.as_slice());
            let mut out = Vec::new();
            encode_record(&mut out, "s", &ev, &stamp, &crc32fast::Hasher::new());
            let pad = out.len() - (RECORD_HEADER_LEN + 2 + p);
            let (r, len) = parse_record(&out, true).unwrap();
            assert_eq!((r.payload(), len), (payload.as_slice(), out.len()));
            let (r, rest) = parse_validated(&out).unwrap();
            assert_eq!((r.payload(), rest.len()), (payload.as_slice(), 0));
            for i in out.len() - pad..out.len() {
                let mut bad = out.clone();
                bad[i] = 1;
                // With the CRC recomputed, only the padding check catches it.
                let crc = crc32fast::hash(&bad[RECORD_CRC_START..]);
                bad[4..8].copy_from_slice(&crc.to_le_bytes());
                let err = parse_record(&bad, true).unwrap_err();
                assert_eq!(err.0, out.len() - pad, "padding byte {i} of {pad}");
                assert!(parse_record(&bad, false).is_ok());
            }
        }
    }

    /// Part lengths read from a file are summed with checked arithmetic: the
    /// largest a header can claim is an error, and a sum past `u64::MAX` (not
    /// reachable from a header, only from the `usize` API) is `u64::MAX`,
    /// more than any record may be.
    #[test]
    fn the_largest_part_lengths_are_an_error_not_a_panic() {
        assert_eq!(record_len(usize::MAX, 1, 1, 1), u64::MAX);
        assert_eq!(record_len(0, 0, 0, usize::MAX - 71), u64::MAX, "the sum overflows");
        assert_eq!(record_len(0, 0, 0, usize::MAX - 75), u64::MAX, "rounding up overflows");
        assert_eq!(record_len(0, 0, 0, usize::MAX - 79), u64::MAX - 7);
        assert_eq!(record_len(1, 1, 0, 0), 80);
        let max = RecordHeader {
            record_len: U32::new(u32::MAX),
            crc: U32::ZERO,
            position: U64::new(u64::MAX),
            stream_version: U64::new(u64::MAX),
            timestamp: U64::new(u64::MAX),
            event_id: [0xff; 16],
            schema_version: U32::new(u32::MAX),
            flags: U16::ZERO,
            stream_len: U16::new(u16::MAX),
            type_len: U16::new(u16::MAX),
            reserved0: U16::ZERO,
            metadata_len: U32::new(u32::MAX),
            payload_len: U32::new(u32::MAX),
            reserved1: U32::ZERO,
        };
        for verify in [true, false] {
            let e = parse_record(max.as_bytes(), verify).unwrap_err();
            assert!(e.1.contains("expected record_len"), "{e:?}");
        }
        assert!(parse_validated(max.as_bytes()).is_none());
    }
}
