//! Sealed records (spec 3.8): the bytes of an event that names a subject,
//! as pure functions. What the AEAD encrypts (the *sealed plaintext*: the
//! metadata's length, the metadata, the payload), what it authenticates
//! besides (the AAD: the log, the key id, the stream and the event type), and
//! how the record names its key and nonce. The cipher itself and the keys
//! live in `audit::subjects`; the record's place in a batch body is
//! `batch`'s.
//!
//! Invariants: a sealed plaintext splits back into exactly the metadata and
//! payload it was made of, and nothing else splits (a bad length is an
//! error with its offset); the AAD is one byte string per (log, key, stream,
//! type), with lengths that make it unambiguous.

use zeroize::Zeroizing;

pub(crate) use crate::format::subject_keys::{NONCE_LEN, TAG_LEN};
use crate::format::varint::{get_varint, put_varint};

/// The id of a data key: 1, 2, 3, ... in the order keys were created, never
/// reused (spec 22.3). A sealed event names its key by it
/// ([`RecordRef::subject_key`](crate::RecordRef::subject_key)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

/// The 16 ASCII bytes that start every AAD of a sealed event.
pub(crate) const AAD_CONTEXT: &[u8; 16] = b"annal sealed v4\0";

/// How a sealed event is stored besides its ciphertext: the key and the
/// nonce (spec 3.8), decided by the writer before the batch is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedWith {
    pub key: u64,
    pub nonce: [u8; NONCE_LEN],
}

impl std::fmt::Debug for SealedWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedWith")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where a record stands with its subject's key (see [`Seal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SealState {
    /// As stored: the payload is the ciphertext, the metadata empty.
    Sealed,
    /// Decrypted: payload and metadata are the plaintext's.
    Opened,
    /// The subject was erased: payload and metadata are gone (empty).
    Erased,
}

/// The subject part of a sealed record as stored: its key id and nonce.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seal<'a> {
    pub key: u64,
    pub nonce: &'a [u8; NONCE_LEN],
}

/// The largest key id a record may name (spec 3.8: `key_id` is 1 to
/// 2^30 − 1), so that a record's key and its [`SealState`] pack into 32 bits
/// ([`SubjectWord`]) and a record is no larger for it.
pub(crate) const MAX_KEY_ID: u64 = (1 << 30) - 1;

/// A record's subject key and seal state in one word: bits 0–29 the key id
/// (0: the record names no subject), bits 30–31 the state (0 sealed, 1
/// opened, 2 erased).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SubjectWord(u32);

impl SubjectWord {
    /// A record that names no subject.
    pub(crate) const NONE: SubjectWord = SubjectWord(0);

    /// Key `key` (1 to [`MAX_KEY_ID`], checked by the parser) in `state`.
    #[inline]
    pub(crate) fn new(key: u64, state: SealState) -> SubjectWord {
        let s = match state {
            SealState::Sealed => 0,
            SealState::Opened => 1,
            SealState::Erased => 2,
        };
        SubjectWord((key & MAX_KEY_ID) as u32 | (s << 30))
    }

    /// The key id, if the record names a subject.
    #[inline]
    pub(crate) fn key(self) -> Option<u64> {
        match u64::from(self.0) & MAX_KEY_ID {
            0 => None,
            k => Some(k),
        }
    }

    /// The state, if the record names a subject.
    #[inline]
    pub(crate) fn state(self) -> Option<SealState> {
        self.key()?;
        Some(match self.0 >> 30 {
            0 => SealState::Sealed,
            1 => SealState::Opened,
            _ => SealState::Erased,
        })
    }
}

/// The sealed plaintext of an event (spec 3.8): `metadata_len` as a
/// varint, the metadata, the payload. Zeroized when dropped.
pub(crate) fn sealed_plaintext(metadata: &[u8], payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(10 + metadata.len() + payload.len()));
    put_varint(&mut out, metadata.len() as u64);
    out.extend_from_slice(metadata);
    out.extend_from_slice(payload);
    out
}

/// Split a sealed plaintext into `(metadata, payload)` as byte ranges of
/// `plain`. Errors: `(offset in plain, what was expected)`.
pub(crate) fn split_plaintext(
    plain: &[u8],
) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>), (usize, String)> {
    let (meta_len, n) =
        get_varint(plain).map_err(|e| (0, format!("expected the metadata length as a varint ({e:?})")))?;
    let rest = plain.len() - n;
    match usize::try_from(meta_len) {
        Ok(m) if m <= rest => Ok((n..n + m, n + m..plain.len())),
        _ => Err((
            0,
            format!("expected a metadata length of at most {rest} bytes (what follows it), found {meta_len}"),
        )),
    }
}

/// The AAD of a sealed event (spec 3.8): [`AAD_CONTEXT`], the log's id,
/// the key id (8 bytes), the stream's length (2 bytes) and name, the event
/// type's length (2 bytes) and name. Lengths are at most 65535 (checked
/// before any event is sealed, and by the parser for stored ones).
pub(crate) fn aad(log_id: &[u8; 16], key: u64, stream: &[u8], event_type: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 16 + 8 + 4 + stream.len() + event_type.len());
    out.extend_from_slice(AAD_CONTEXT);
    out.extend_from_slice(log_id);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream);
    out.extend_from_slice(&(event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(event_type);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintexts_split_back_and_bad_lengths_do_not() {
        for (m, p) in [(&b""[..], &b""[..]), (b"meta", b"payload"), (&[7u8; 300][..], b"")] {
            let plain = sealed_plaintext(m, p);
            let (mr, pr) = split_plaintext(&plain).unwrap();
            assert_eq!((plain.get(mr), plain.get(pr)), (Some(m), Some(p)));
        }
        assert!(split_plaintext(&[]).is_err());
        assert!(split_plaintext(&[5, 1, 2]).is_err());
        assert!(split_plaintext(&[0x80]).is_err());
    }

    #[test]
    fn aads_differ_by_every_part() {
        let id = [1u8; 16];
        let a = aad(&id, 1, b"s", b"t");
        assert_eq!(a.len(), 16 + 16 + 8 + 2 + 1 + 2 + 1);
        assert_ne!(a, aad(&[2u8; 16], 1, b"s", b"t"));
        assert_ne!(a, aad(&id, 2, b"s", b"t"));
        assert_ne!(aad(&id, 1, b"st", b""), aad(&id, 1, b"s", b"t"));
    }
}
