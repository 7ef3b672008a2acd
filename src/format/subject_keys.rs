//! The subject key file `annal.keys` (spec 22): its header and entries, the
//! offsets derived from them, encoding, and the decoder with the torn-tail
//! rule. Pure bytes: no I/O and no cryptography (wrapping, unwrapping and
//! the master-key check are `audit::subjects`'s; this module only carries
//! their bytes).
//!
//! Invariants of a file [`decode`] accepts: a header with magic, version,
//! CRC, known flags, zero reserved fields, zero check bytes when not wrapped,
//! and `96 <= base_len <= file length`; then entries, each 8-byte aligned,
//! CRC'd, of a known kind, with key ids 1, 2, 3, ... in file order, distinct
//! UTF-8 subjects of 1 to [`MAX_SUBJECT_LEN`] bytes, zero padding, and a
//! `committed` offset that follows the write rules of spec 22.4. The one
//! damage it tolerates is a torn tail: an incomplete or CRC-failing entry at
//! or past the durable boundary (spec 22.5), which it reports in
//! [`KeysFile::torn`] with the entries before it.
#![allow(
    dead_code,
    reason = "used by audit::subjects, whose SubjectKeys the writer and readers use once issue 16 is integrated"
)]

use std::collections::HashSet;
use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::damage::Damage;
use crate::format::{all_zero, crc};

/// File name of the subject key file, in the log directory.
pub(crate) const KEYS_FILE: &str = "annal.keys";
/// Temporary name of the key file while it is replaced (spec 22.4).
pub(crate) const KEYS_TMP_FILE: &str = "annal.keys.tmp";

/// Magic bytes at the start of the key file.
pub(crate) const KEYS_MAGIC: [u8; 8] = *b"ANNALKEY";
/// The key file layout version this build reads and writes.
pub(crate) const KEYS_FILE_VERSION: u16 = 1;
/// Header `flags` bit 0: key material is wrapped by a master key.
pub(crate) const KEYS_FLAG_WRAPPED: u16 = 1;

/// Entry kind: a subject's data key.
pub(crate) const ENTRY_KIND_KEY: u8 = 1;
/// Entry kind: an erased key (the id alone).
pub(crate) const ENTRY_KIND_ERASED: u8 = 2;

/// Longest subject, in bytes of UTF-8.
pub(crate) const MAX_SUBJECT_LEN: usize = 1024;
/// Longest entry: a key entry of a wrapped file with the longest subject.
pub(crate) const MAX_ENTRY_LEN: usize = (ENTRY_HEADER_LEN + WRAPPED_MATERIAL_LEN + MAX_SUBJECT_LEN).next_multiple_of(8);
/// Bytes of a data key (and of a master key).
pub(crate) const DATA_KEY_LEN: usize = 32;
/// Bytes of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// The key file's header (spec 22.2).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct KeysHeader {
    pub magic: [u8; 8],
    pub file_version: U16,
    pub flags: U16,
    pub reserved0: U32,
    pub log_id: [u8; 16],
    pub generation: U64,
    pub base_len: U64,
    pub check_nonce: [u8; NONCE_LEN],
    pub check_tag: [u8; TAG_LEN],
    pub reserved1: U32,
    pub header_crc: U32,
}

/// The header of every entry (spec 22.3).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct EntryHeader {
    pub crc: U32,
    pub kind: u8,
    pub flags: u8,
    pub subject_len: U16,
    pub entry_len: U32,
    pub reserved: U32,
    pub key_id: U64,
    pub committed: U64,
}

/// The key material of a key entry in a wrapped file (spec 22.3).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct WrappedKey {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: [u8; DATA_KEY_LEN],
    pub tag: [u8; TAG_LEN],
}

/// Bytes of the header; the first entry starts here.
pub(crate) const KEYS_HEADER_LEN: usize = size_of::<KeysHeader>();
/// The header CRC covers `[0, KEYS_HEADER_CRC_OFFSET)`.
pub(crate) const KEYS_HEADER_CRC_OFFSET: usize = offset_of!(KeysHeader, header_crc);
/// Bytes of an entry header.
pub(crate) const ENTRY_HEADER_LEN: usize = size_of::<EntryHeader>();
/// An entry's CRC covers `[ENTRY_CRC_START, entry_len)` of the entry.
pub(crate) const ENTRY_CRC_START: usize = offset_of!(EntryHeader, kind);
/// Bytes of the key material of a key entry in a plain file.
pub(crate) const PLAIN_MATERIAL_LEN: usize = DATA_KEY_LEN;
/// Bytes of the key material of a key entry in a wrapped file.
pub(crate) const WRAPPED_MATERIAL_LEN: usize = size_of::<WrappedKey>();

const _: () = assert!(KEYS_HEADER_LEN == 96);
const _: () = assert!(KEYS_HEADER_CRC_OFFSET == 92);
const _: () = assert!(ENTRY_HEADER_LEN == 32);
const _: () = assert!(ENTRY_CRC_START == 4);
const _: () = assert!(WRAPPED_MATERIAL_LEN == 72);
const _: () = assert!(MAX_ENTRY_LEN == 1128);

const OFF_VERSION: u64 = offset_of!(KeysHeader, file_version) as u64;
const OFF_FLAGS: u64 = offset_of!(KeysHeader, flags) as u64;
const OFF_RESERVED0: u64 = offset_of!(KeysHeader, reserved0) as u64;
const OFF_GENERATION: u64 = offset_of!(KeysHeader, generation) as u64;
const OFF_BASE_LEN: u64 = offset_of!(KeysHeader, base_len) as u64;
const OFF_CHECK_NONCE: u64 = offset_of!(KeysHeader, check_nonce) as u64;
const OFF_RESERVED1: u64 = offset_of!(KeysHeader, reserved1) as u64;
const OFF_HEADER_CRC: u64 = KEYS_HEADER_CRC_OFFSET as u64;
/// Offset of the header's `log_id` (a key file of another log is reported there).
pub(crate) const KEYS_LOG_ID_OFFSET: u64 = offset_of!(KeysHeader, log_id) as u64;
/// Offset of the header's master-key check (nonce, then tag).
pub(crate) const KEYS_CHECK_OFFSET: u64 = OFF_CHECK_NONCE;

const E_KIND: u64 = offset_of!(EntryHeader, kind) as u64;
const E_FLAGS: u64 = offset_of!(EntryHeader, flags) as u64;
const E_SUBJECT_LEN: u64 = offset_of!(EntryHeader, subject_len) as u64;
const E_LEN: u64 = offset_of!(EntryHeader, entry_len) as u64;
const E_RESERVED: u64 = offset_of!(EntryHeader, reserved) as u64;
const E_KEY_ID: u64 = offset_of!(EntryHeader, key_id) as u64;
const E_COMMITTED: u64 = offset_of!(EntryHeader, committed) as u64;

impl KeysHeader {
    /// A header with its CRC filled in. `check` is the master-key check
    /// (nonce, tag) of a wrapped file; `None` for a plain one.
    pub(crate) fn new(
        log_id: [u8; 16],
        generation: u64,
        base_len: u64,
        check: Option<([u8; NONCE_LEN], [u8; TAG_LEN])>,
    ) -> KeysHeader {
        let (flags, (check_nonce, check_tag)) = match check {
            Some(c) => (KEYS_FLAG_WRAPPED, c),
            None => (0, ([0; NONCE_LEN], [0; TAG_LEN])),
        };
        let mut h = KeysHeader {
            magic: KEYS_MAGIC,
            file_version: U16::new(KEYS_FILE_VERSION),
            flags: U16::new(flags),
            reserved0: U32::ZERO,
            log_id,
            generation: U64::new(generation),
            base_len: U64::new(base_len),
            check_nonce,
            check_tag,
            reserved1: U32::ZERO,
            header_crc: U32::ZERO,
        };
        h.header_crc = U32::new(h.computed_crc());
        h
    }

    fn computed_crc(&self) -> u32 {
        crc(self.as_bytes().get(..KEYS_HEADER_CRC_OFFSET).unwrap_or_default())
    }

    /// Whether key material is wrapped by a master key (flag bit 0).
    pub(crate) fn wrapped(&self) -> bool {
        self.flags.get() & KEYS_FLAG_WRAPPED != 0
    }

    /// Parse and check the header at the start of the file's `bytes` (spec
    /// 22.5 step 1, checks in the order listed there; `base_len` against the
    /// file's length).
    pub(crate) fn parse(bytes: &[u8]) -> Result<&KeysHeader, Damage> {
        let Ok((h, _)) = KeysHeader::ref_from_prefix(bytes) else {
            return Err(Damage::corrupt(
                0,
                format!(
                    "expected a {KEYS_HEADER_LEN}-byte key file header, found a file of {} bytes",
                    bytes.len()
                ),
            ));
        };
        if h.magic != KEYS_MAGIC {
            return Err(Damage::corrupt(
                0,
                format!("expected key file magic \"ANNALKEY\", found {:02x?}", h.magic),
            ));
        }
        let want = h.computed_crc();
        if h.header_crc.get() != want {
            return Err(Damage::corrupt(
                OFF_HEADER_CRC,
                format!(
                    "key file header CRC mismatch: expected {want:#010x}, found {:#010x}",
                    h.header_crc.get()
                ),
            ));
        }
        let version = h.file_version.get();
        if version != KEYS_FILE_VERSION {
            return Err(Damage::corrupt(
                OFF_VERSION,
                format!(
                    "key file version {version} is not supported (this build reads version {KEYS_FILE_VERSION}); \
                     use a newer annal"
                ),
            ));
        }
        let flags = h.flags.get();
        if flags & !KEYS_FLAG_WRAPPED != 0 {
            return Err(Damage::corrupt(
                OFF_FLAGS,
                format!("expected key file flags 0 or 1, found {flags:#06x}"),
            ));
        }
        if h.reserved0.get() != 0 {
            return Err(Damage::corrupt(OFF_RESERVED0, "expected reserved0 to be zero"));
        }
        if h.generation.get() == 0 {
            return Err(Damage::corrupt(
                OFF_GENERATION,
                "expected a generation of at least 1, found 0",
            ));
        }
        let base = h.base_len.get();
        let n = bytes.len() as u64;
        if base < KEYS_HEADER_LEN as u64 || !base.is_multiple_of(8) {
            return Err(Damage::corrupt(
                OFF_BASE_LEN,
                format!("expected base_len to be a multiple of 8 of at least {KEYS_HEADER_LEN}, found {base}"),
            ));
        }
        if base > n {
            return Err(Damage::corrupt(
                OFF_BASE_LEN,
                format!(
                    "expected at least base_len = {base} bytes (the file as last replaced), found {n}: the file was cut"
                ),
            ));
        }
        let check_is_zero = all_zero(&h.check_nonce) && all_zero(&h.check_tag);
        if !h.wrapped() && !check_is_zero {
            return Err(Damage::corrupt(
                OFF_CHECK_NONCE,
                "expected the master-key check to be zero in a file that is not wrapped",
            ));
        }
        if h.reserved1.get() != 0 {
            return Err(Damage::corrupt(OFF_RESERVED1, "expected reserved1 to be zero"));
        }
        Ok(h)
    }
}

/// Bytes of key material per key entry: 32 plain, 72 wrapped.
pub(crate) const fn material_len(wrapped: bool) -> usize {
    if wrapped {
        WRAPPED_MATERIAL_LEN
    } else {
        PLAIN_MATERIAL_LEN
    }
}

/// An entry to encode.
#[derive(Clone, Copy)]
pub(crate) enum EntryBody<'a> {
    /// A live key: the subject and the stored key material (32 or 72 bytes).
    Key { subject: &'a str, material: &'a [u8] },
    /// An erased key.
    Erased,
}

impl EntryBody<'_> {
    /// Bytes the entry takes, padding included (a multiple of 8).
    pub(crate) fn len(&self) -> usize {
        match self {
            EntryBody::Key { subject, material } => key_entry_len(material.len(), subject.len()),
            EntryBody::Erased => ENTRY_HEADER_LEN,
        }
    }
}

fn key_entry_len(material: usize, subject: usize) -> usize {
    (ENTRY_HEADER_LEN + material + subject).next_multiple_of(8)
}

/// Append one entry to `out` (spec 22.3); a subject is at most
/// [`MAX_SUBJECT_LEN`] bytes (the caller checks). `committed` is the offset below
/// which the file is durable before this entry exists (spec 22.4). Entries
/// are appended at multiples of 8, so `out.len()` stays one.
pub(crate) fn push_entry(out: &mut Vec<u8>, key_id: u64, body: EntryBody<'_>, committed: u64) {
    let start = out.len();
    let len = body.len();
    let (kind, subject_len) = match body {
        EntryBody::Key { subject, .. } => (ENTRY_KIND_KEY, subject.len()),
        EntryBody::Erased => (ENTRY_KIND_ERASED, 0),
    };
    let h = EntryHeader {
        crc: U32::ZERO,
        kind,
        flags: 0,
        subject_len: U16::new(u16::try_from(subject_len).unwrap_or(u16::MAX)),
        entry_len: U32::new(u32::try_from(len).unwrap_or(u32::MAX)),
        reserved: U32::ZERO,
        key_id: U64::new(key_id),
        committed: U64::new(committed),
    };
    out.extend_from_slice(h.as_bytes());
    if let EntryBody::Key { subject, material } = body {
        out.extend_from_slice(material);
        out.extend_from_slice(subject.as_bytes());
    }
    out.resize(start + len, 0);
    let c = crc(out.get(start + ENTRY_CRC_START..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + ENTRY_CRC_START) {
        slot.copy_from_slice(&c.to_le_bytes());
    }
}

/// A whole key file's bytes, written by a replace (creation or rewrite):
/// the header then `entries` (key ids 1, 2, 3, ... in order), every
/// `committed` the file's length (spec 22.4).
pub(crate) fn encode_file<'a>(
    log_id: [u8; 16],
    generation: u64,
    check: Option<([u8; NONCE_LEN], [u8; TAG_LEN])>,
    entries: impl Iterator<Item = EntryBody<'a>> + Clone,
) -> Vec<u8> {
    let total = KEYS_HEADER_LEN + entries.clone().map(|e| e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(KeysHeader::new(log_id, generation, total as u64, check).as_bytes());
    for (i, e) in entries.enumerate() {
        push_entry(&mut out, i as u64 + 1, e, total as u64);
    }
    out
}

/// A decoded entry, borrowing from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEntry<'a> {
    /// File offset of the entry.
    pub offset: u64,
    pub key_id: u64,
    pub body: RawBody<'a>,
}

/// What a decoded entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawBody<'a> {
    /// A live key: the subject and the stored material (32 bytes plain, 72 wrapped).
    Key {
        subject: &'a str,
        material: &'a [u8],
    },
    Erased,
}

/// A decoded key file.
#[derive(Debug)]
pub(crate) struct KeysFile<'a> {
    pub header: &'a KeysHeader,
    pub entries: Vec<RawEntry<'a>>,
    /// End of the last valid entry: the file's length unless the tail is torn.
    pub valid_len: u64,
    /// The damage of the torn tail at `valid_len` (spec 22.5), if any: the
    /// writer cuts the file there, a reader ignores the bytes from there.
    pub torn: Option<Damage>,
}

/// How an entry failed.
enum Fault {
    /// Incomplete, an impossible length, or a CRC mismatch: what a torn write leaves.
    Torn(Damage),
    /// CRC-valid but wrong: never a torn write.
    Bad(Damage),
}

/// Decode a key file (spec 22.2 to 22.5, checks in the order listed there).
pub(crate) fn decode(bytes: &[u8]) -> Result<KeysFile<'_>, Damage> {
    let header = KeysHeader::parse(bytes)?;
    let wrapped = header.wrapped();
    let n = bytes.len() as u64;
    let base = header.base_len.get();
    let mut entries: Vec<RawEntry<'_>> = Vec::new();
    let mut subjects: HashSet<&str> = HashSet::new();
    let mut p = KEYS_HEADER_LEN as u64;
    let mut prev_committed = base;
    while p < n {
        let fault = match entry_at(bytes, p, wrapped) {
            Ok((e, committed, len)) => match check_in_sequence(&e, committed, len, p, base, prev_committed, &entries)
                .and_then(|()| check_subject(&e, &mut subjects))
            {
                Ok(()) => {
                    entries.push(e);
                    prev_committed = committed;
                    p = p.saturating_add(len);
                    continue;
                }
                Err(f) => f,
            },
            Err(f) => f,
        };
        let damage = match fault {
            Fault::Bad(d) => return Err(d),
            Fault::Torn(d) => d,
        };
        // The durable boundary: nothing below it may be torn (spec 22.5).
        let boundary = prev_committed.max(max_committed_after(bytes, p));
        if p < boundary {
            return Err(Damage::corrupt(
                damage.offset,
                format!(
                    "{} (the entry at {p} lies below the durable boundary {boundary}: damage, not a torn tail)",
                    damage.detail()
                ),
            ));
        }
        return Ok(KeysFile {
            header,
            entries,
            valid_len: p,
            torn: Some(damage),
        });
    }
    Ok(KeysFile {
        header,
        entries,
        valid_len: n,
        torn: None,
    })
}

/// Parse the entry at `p` on its own: length, CRC, kind, flags, reserved,
/// subject length, exact length, padding. Returns the entry, its
/// `committed` and its length.
fn entry_at(bytes: &[u8], p: u64, wrapped: bool) -> Result<(RawEntry<'_>, u64, u64), Fault> {
    let n = bytes.len() as u64;
    let rest = usize::try_from(p).ok().and_then(|p| bytes.get(p..)).unwrap_or_default();
    let Ok((h, _)) = EntryHeader::ref_from_prefix(rest) else {
        return Err(Fault::Torn(Damage::corrupt(
            p,
            format!(
                "expected a {ENTRY_HEADER_LEN}-byte entry header, found {} bytes at the end of the file",
                rest.len()
            ),
        )));
    };
    let len = u64::from(h.entry_len.get());
    if !(ENTRY_HEADER_LEN as u64..=MAX_ENTRY_LEN as u64).contains(&len) || !len.is_multiple_of(8) {
        return Err(Fault::Torn(Damage::corrupt(
            p + E_LEN,
            format!(
                "expected an entry length that is a multiple of 8 from {ENTRY_HEADER_LEN} to {MAX_ENTRY_LEN}, found {len}"
            ),
        )));
    }
    if len > n - p {
        return Err(Fault::Torn(Damage::corrupt(
            p + E_LEN,
            format!(
                "expected an entry of {len} bytes, found {} bytes to the end of the file",
                n - p
            ),
        )));
    }
    let entry = rest.get(..len as usize).unwrap_or_default();
    let want = crc(entry.get(ENTRY_CRC_START..).unwrap_or_default());
    if h.crc.get() != want {
        return Err(Fault::Torn(Damage::corrupt(
            p,
            format!("entry CRC mismatch: expected {want:#010x}, found {:#010x}", h.crc.get()),
        )));
    }
    let bad = |at: u64, detail: String| Fault::Bad(Damage::corrupt(p + at, detail));
    if h.flags != 0 {
        return Err(bad(E_FLAGS, format!("expected entry flags 0, found {:#04x}", h.flags)));
    }
    if h.reserved.get() != 0 {
        return Err(bad(E_RESERVED, "expected the entry's reserved field to be zero".into()));
    }
    let subject_len = usize::from(h.subject_len.get());
    let body = match h.kind {
        ENTRY_KIND_KEY => {
            if subject_len == 0 || subject_len > MAX_SUBJECT_LEN {
                return Err(bad(
                    E_SUBJECT_LEN,
                    format!("expected a subject of 1 to {MAX_SUBJECT_LEN} bytes, found subject_len {subject_len}"),
                ));
            }
            let m = material_len(wrapped);
            let want_len = key_entry_len(m, subject_len) as u64;
            if len != want_len {
                return Err(bad(
                    E_LEN,
                    format!(
                        "expected a key entry of {want_len} bytes ({ENTRY_HEADER_LEN} + {m} + subject_len \
                         {subject_len}, padded to 8), found {len}"
                    ),
                ));
            }
            let material = entry.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + m).unwrap_or_default();
            let s_at = ENTRY_HEADER_LEN + m;
            let subject = entry.get(s_at..s_at + subject_len).unwrap_or_default();
            if !all_zero(entry.get(s_at + subject_len..).unwrap_or_default()) {
                return Err(bad(
                    (s_at + subject_len) as u64,
                    "expected the entry's padding to be zero".into(),
                ));
            }
            let subject = std::str::from_utf8(subject).map_err(|e| {
                bad(
                    (s_at + e.valid_up_to()) as u64,
                    "expected the subject to be valid UTF-8".into(),
                )
            })?;
            RawBody::Key { subject, material }
        }
        ENTRY_KIND_ERASED => {
            if subject_len != 0 || len != ENTRY_HEADER_LEN as u64 {
                return Err(bad(
                    E_SUBJECT_LEN,
                    format!(
                        "expected an erased entry of {ENTRY_HEADER_LEN} bytes with subject_len 0, found \
                         subject_len {subject_len} and {len} bytes"
                    ),
                ));
            }
            RawBody::Erased
        }
        k => {
            return Err(bad(
                E_KIND,
                format!("expected entry kind {ENTRY_KIND_KEY} (key) or {ENTRY_KIND_ERASED} (erased), found {k}"),
            ));
        }
    };
    let e = RawEntry {
        offset: p,
        key_id: h.key_id.get(),
        body,
    };
    Ok((e, h.committed.get(), len))
}

/// The checks of an entry against the ones before it: its key id and its
/// `committed` (spec 22.4).
fn check_in_sequence(
    e: &RawEntry<'_>,
    committed: u64,
    len: u64,
    p: u64,
    base: u64,
    prev_committed: u64,
    before: &[RawEntry<'_>],
) -> Result<(), Fault> {
    let want_id = before.len() as u64 + 1;
    if e.key_id != want_id {
        return Err(Fault::Bad(Damage::corrupt(
            p + E_KEY_ID,
            format!(
                "expected key id {want_id} (ids are 1, 2, 3, ... in file order), found {}",
                e.key_id
            ),
        )));
    }
    let ok = if p < base {
        p + len <= base && committed == base
    } else {
        committed == prev_committed || committed == p
    };
    if !ok {
        let want = if p < base {
            format!("an entry ending by base_len {base} with committed = {base}")
        } else {
            format!("committed = {prev_committed} (the previous entry's) or {p} (its own offset)")
        };
        return Err(Fault::Bad(Damage::corrupt(
            p + E_COMMITTED,
            format!("expected {want}, found committed {committed} and length {len}"),
        )));
    }
    Ok(())
}

fn check_subject<'a>(e: &RawEntry<'a>, seen: &mut HashSet<&'a str>) -> Result<(), Fault> {
    if let RawBody::Key { subject, .. } = e.body
        && !seen.insert(subject)
    {
        return Err(Fault::Bad(Damage::corrupt(
            e.offset + ENTRY_HEADER_LEN as u64,
            "expected each subject once, found a second key entry of a subject".to_owned(),
        )));
    }
    Ok(())
}

/// The largest `committed` of any entry at an 8-aligned offset after `p`
/// whose length fits the file and whose CRC holds (0 if none): the
/// survivors of a write past a bad entry, which tell a torn tail (all of
/// them from the same write: `committed <= p`) from damage followed by later
/// writes (spec 22.5). At most one CRC of at most [`MAX_ENTRY_LEN`] bytes per
/// offset: linear in the file's length.
fn max_committed_after(bytes: &[u8], p: u64) -> u64 {
    let n = bytes.len();
    let mut best = 0;
    let mut q = usize::try_from(p).unwrap_or(usize::MAX).saturating_add(8);
    while q.saturating_add(ENTRY_HEADER_LEN) <= n {
        if let Some(rest) = bytes.get(q..)
            && let Ok((h, _)) = EntryHeader::ref_from_prefix(rest)
        {
            let len = h.entry_len.get() as usize;
            if (ENTRY_HEADER_LEN..=MAX_ENTRY_LEN).contains(&len)
                && len.is_multiple_of(8)
                && len <= rest.len()
                && matches!(h.kind, ENTRY_KIND_KEY | ENTRY_KIND_ERASED)
                && rest
                    .get(ENTRY_CRC_START..len)
                    .is_some_and(|covered| crc(covered) == h.crc.get())
            {
                best = best.max(h.committed.get());
            }
        }
        q += 8;
    }
    best
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    /// The offsets of spec 22's tables, written out by hand.
    #[test]
    fn offsets_match_the_spec_tables() {
        assert_eq!(offset_of!(KeysHeader, file_version), 8);
        assert_eq!(offset_of!(KeysHeader, flags), 10);
        assert_eq!(offset_of!(KeysHeader, reserved0), 12);
        assert_eq!(offset_of!(KeysHeader, log_id), 16);
        assert_eq!(offset_of!(KeysHeader, generation), 32);
        assert_eq!(offset_of!(KeysHeader, base_len), 40);
        assert_eq!(offset_of!(KeysHeader, check_nonce), 48);
        assert_eq!(offset_of!(KeysHeader, check_tag), 72);
        assert_eq!(offset_of!(KeysHeader, reserved1), 88);
        assert_eq!(offset_of!(KeysHeader, header_crc), 92);
        assert_eq!(offset_of!(EntryHeader, kind), 4);
        assert_eq!(offset_of!(EntryHeader, flags), 5);
        assert_eq!(offset_of!(EntryHeader, subject_len), 6);
        assert_eq!(offset_of!(EntryHeader, entry_len), 8);
        assert_eq!(offset_of!(EntryHeader, reserved), 12);
        assert_eq!(offset_of!(EntryHeader, key_id), 16);
        assert_eq!(offset_of!(EntryHeader, committed), 24);
        assert_eq!(offset_of!(WrappedKey, ciphertext), 24);
        assert_eq!(offset_of!(WrappedKey, tag), 56);
    }

    const LOG: [u8; 16] = [9; 16];

    fn file(entries: &[EntryBody<'_>]) -> Vec<u8> {
        encode_file(LOG, 1, None, entries.iter().copied())
    }

    #[test]
    fn a_replaced_file_round_trips() {
        let k = [7u8; 32];
        let bytes = file(&[
            EntryBody::Key {
                subject: "alice",
                material: &k,
            },
            EntryBody::Erased,
            EntryBody::Key {
                subject: "bob",
                material: &k,
            },
        ]);
        assert_eq!(bytes.len(), 96 + 72 + 32 + 72);
        let f = decode(&bytes).unwrap();
        assert!(f.torn.is_none());
        assert_eq!(f.valid_len, bytes.len() as u64);
        assert_eq!(f.header.base_len.get(), bytes.len() as u64);
        let ids: Vec<u64> = f.entries.iter().map(|e| e.key_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            f.entries[2].body,
            RawBody::Key {
                subject: "bob",
                material: &k
            }
        );
        assert_eq!(f.entries[1].body, RawBody::Erased);
    }

    #[test]
    fn appended_writes_follow_the_committed_rule() {
        let k = [1u8; 32];
        let mut bytes = file(&[EntryBody::Key {
            subject: "a",
            material: &k,
        }]);
        let w1 = bytes.len() as u64;
        push_entry(
            &mut bytes,
            2,
            EntryBody::Key {
                subject: "b",
                material: &k,
            },
            w1,
        );
        push_entry(
            &mut bytes,
            3,
            EntryBody::Key {
                subject: "c",
                material: &k,
            },
            w1,
        );
        let w2 = bytes.len() as u64;
        push_entry(
            &mut bytes,
            4,
            EntryBody::Key {
                subject: "d",
                material: &k,
            },
            w2,
        );
        assert_eq!(decode(&bytes).unwrap().entries.len(), 4);

        // A torn first entry of the last write: cut there, with its write.
        let mut torn = bytes.clone();
        torn[w2 as usize + 40] ^= 1;
        let f = decode(&torn).unwrap();
        assert_eq!((f.entries.len(), f.valid_len), (3, w2));
        // Torn inside the write of "b" and "c", whose survivor "c" says
        // committed = w1: still a torn tail if nothing later follows.
        let mut torn = bytes[..w2 as usize].to_vec();
        torn[w1 as usize + 40] ^= 1;
        let f = decode(&torn).unwrap();
        assert_eq!((f.entries.len(), f.valid_len), (1, w1));
        // The same damage with a later write after it: an error at the entry.
        let mut bad = bytes.clone();
        bad[w1 as usize + 40] ^= 1;
        let e = decode(&bad).unwrap_err();
        assert_eq!(e.offset, w1, "{e:?}");
        assert!(e.detail().contains("durable boundary"), "{e:?}");
        // Incomplete last entry.
        let f = decode(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!((f.entries.len(), f.valid_len), (3, w2));
        // A wrong committed value, CRC recomputed: never a torn tail.
        let mut wrong = bytes.clone();
        push_entry(&mut wrong, 5, EntryBody::Erased, w1);
        assert_eq!(decode(&wrong).unwrap_err().offset, bytes.len() as u64 + E_COMMITTED);
    }

    #[test]
    fn a_cut_replaced_file_is_an_error() {
        let k = [1u8; 32];
        let bytes = file(&[
            EntryBody::Key {
                subject: "a",
                material: &k,
            },
            EntryBody::Key {
                subject: "b",
                material: &k,
            },
        ]);
        let e = decode(&bytes[..96 + 72]).unwrap_err();
        assert_eq!(e.offset, OFF_BASE_LEN);
        // Damage inside the replaced part is below the boundary.
        let mut bad = bytes.clone();
        bad[96 + 72 + 40] ^= 1;
        assert_eq!(decode(&bad).unwrap_err().offset, 96 + 72);
    }

    #[test]
    fn duplicates_and_wrong_ids_are_errors() {
        let k = [1u8; 32];
        let bytes = file(&[
            EntryBody::Key {
                subject: "a",
                material: &k,
            },
            EntryBody::Key {
                subject: "a",
                material: &k,
            },
        ]);
        assert_eq!(decode(&bytes).unwrap_err().offset, 96 + 72 + 32);
        let mut b = file(&[EntryBody::Erased]);
        let w = b.len() as u64;
        push_entry(&mut b, 3, EntryBody::Erased, w);
        assert_eq!(decode(&b).unwrap_err().offset, w + E_KEY_ID);
    }
}
