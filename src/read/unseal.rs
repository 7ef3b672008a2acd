//! Records as their readers need them: [`Unsealed`], a record whose payload
//! and metadata can be read, and [`LogView::unseal`], which makes one from
//! any record a view returned (spec 3.8).
//!
//! A record that names no subject is its own content (borrowed from the
//! mapping, nothing copied). A record sealed for a subject is decrypted with
//! the subject's key into a buffer the [`Unsealed`] owns (zeroized when it
//! is dropped); once the subject is erased it reads as erased: its envelope
//! stays, payload and metadata are empty, and [`Unsealed::is_erased`] says
//! so. A sealed record whose ciphertext does not open is damage, reported
//! with the segment and the byte offset of its payload.

use crate::audit::keyring::{Plain, UnsealFailure, Unsealing};
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::record::RecordRef;
use crate::format::sealed::{KeyId, SealState};
use crate::read::logview::LogView;

/// A record whose payload and metadata can be read: as stored for an event
/// that names no subject, decrypted for one that does, or erased. Made by
/// [`LogView::unseal`].
///
/// ```
/// # fn main() -> annal::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use annal::{EventData, ExpectedVersion, Log, Options};
/// let log = Log::open(dir.path())?;
/// let ev = EventData::new("EmailChanged", b"ann@example.com").with_subject("customer-42");
/// log.append("customer-42", ExpectedVersion::Any, &[ev])?;
/// let view = log.view()?;
/// let rec = view.read_stream("customer-42", 0, annal::Direction::Forward, 1).next().unwrap()?;
/// assert!(rec.is_sealed());
/// assert_eq!(view.unseal(rec)?.payload(), b"ann@example.com");
///
/// log.erase_subject("customer-42")?;
/// let rec = view.read_stream("customer-42", 0, annal::Direction::Forward, 1).next().unwrap()?;
/// let erased = view.unseal(rec)?;
/// assert!(erased.is_erased() && erased.payload().is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Unsealed<'a> {
    record: RecordRef<'a>,
    /// A decrypted record's sealed plaintext.
    opened: Option<Plain>,
    erased: bool,
}

impl std::fmt::Debug for Unsealed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("position", &self.record.position())
            .field("subject_key", &self.record.subject_key())
            .field("erased", &self.erased)
            .finish_non_exhaustive()
    }
}

impl<'a> Unsealed<'a> {
    /// A record that names no subject (or was unsealed already).
    pub(crate) fn plain(record: RecordRef<'a>) -> Unsealed<'a> {
        Unsealed {
            record,
            opened: None,
            erased: false,
        }
    }

    /// The record, readable: its payload and metadata are the event's (for
    /// a sealed record, the decrypted ones; empty if erased). Borrows this
    /// value when it holds a decrypted payload.
    pub fn record(&self) -> RecordRef<'_> {
        match &self.opened {
            Some(p) => self.record.with_content(p.metadata(), p.payload(), SealState::Opened),
            None => self.record,
        }
    }

    /// The record as stored, for a record whose payload is borrowed from
    /// the mapping (no subject, or erased): `None` for a decrypted one.
    pub fn stored(&self) -> Option<RecordRef<'a>> {
        self.opened.is_none().then_some(self.record)
    }

    /// The event's payload (empty if erased).
    pub fn payload(&self) -> &[u8] {
        match &self.opened {
            Some(p) => p.payload(),
            None => self.record.payload(),
        }
    }

    /// The event's metadata (empty if erased).
    pub fn metadata(&self) -> &[u8] {
        match &self.opened {
            Some(p) => p.metadata(),
            None => self.record.metadata(),
        }
    }

    /// Whether the event's subject was erased: the envelope (position,
    /// stream, version, type, time, id) is all that is left.
    pub fn is_erased(&self) -> bool {
        self.erased
    }

    /// The key of the subject the event names, if any.
    pub fn subject_key(&self) -> Option<KeyId> {
        self.record.subject_key()
    }
}

impl LogView {
    /// `record` (one this view returned) made readable: as it is when it
    /// names no subject; decrypted with its subject's key when it is
    /// sealed; or erased, when the subject was erased (spec 3.8, 22).
    ///
    /// Errors: the key file cannot be read (or its master key is missing or
    /// wrong), names no key of that id even after a reload (keys were lost:
    /// damage of `annal.keys`), or the ciphertext does not open (the
    /// record was changed: [`Error::Corrupt`] naming the segment and the
    /// byte offset of the payload).
    pub fn unseal<'a>(&self, record: RecordRef<'a>) -> Result<Unsealed<'a>> {
        let Some(seal) = record.seal() else {
            return Ok(Unsealed::plain(record));
        };
        let ring = self.keys()?;
        match ring.unseal(&record, seal) {
            Ok(Unsealing::Opened(plain)) => Ok(Unsealed {
                record,
                opened: Some(plain),
                erased: false,
            }),
            Ok(Unsealing::Erased) => Ok(Unsealed {
                record: record.with_content(&[], &[], SealState::Erased),
                opened: None,
                erased: true,
            }),
            Err(UnsealFailure::Keys(e)) => Err(e),
            Err(UnsealFailure::Unknown { key, known, path }) => Err(Error::Corrupt {
                path,
                offset: 0,
                detail: format!(
                    "the event at position {} names subject key {key}, which the key file does not hold \
                     (it holds {known} keys, and was reloaded): keys were lost, this is not an erasure",
                    record.position()
                ),
            }),
            Err(UnsealFailure::Damaged(detail)) => {
                let (path, offset) = match self.file_offset(record.payload()) {
                    Some((p, o)) => (p.to_owned(), o),
                    None => (self.last_segment_path().map(Path::to_owned).unwrap_or_default(), 0),
                };
                Err(Error::Corrupt { path, offset, detail })
            }
        }
    }
}
