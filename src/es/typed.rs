//! Typed events: application event types encoded with a [`Codec`]
//! (postcard by default, JSON with the `json` feature), and upcasting of
//! older payloads.
//!
//! An [`Event`] is any serde type that names its event type (stored in each
//! record, so category and type reads work on typed logs too), the schema
//! version its payload is written with, and its codec ([`Event::CODEC`]).
//! [`decode`] reads a record's payload into an event type with the codec
//! the record names (its `JSON` flag, spec 3.11), whatever the reading type
//! would write: a stream may mix codecs. Postcard types with `&str`/`&[u8]`
//! fields borrow them straight from the memory-mapped segment (zero-copy).
//! [`Upcasters`] turn payloads written with an older schema version into the
//! current form before decoding; [`Typed`] carries a record together with
//! its upcast payload.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::es::codec::Codec;
use crate::format::record::{EventData, RecordRef};
use crate::read::subscription::OwnedRecord;
use crate::{AppendResult, ExpectedVersion};

/// An application event type.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// enum OrderEvent<'a> {
///     Placed { customer: &'a str },
///     ItemAdded { sku: &'a str, cents: u64 },
/// }
/// impl annal::Event for OrderEvent<'_> {
///     fn event_type(&self) -> &'static str {
///         match self {
///             OrderEvent::Placed { .. } => "OrderPlaced",
///             OrderEvent::ItemAdded { .. } => "ItemAdded",
///         }
///     }
/// }
/// ```
pub trait Event: Serialize {
    /// Schema version of the payloads written now (see [`Upcasters`]).
    const SCHEMA_VERSION: u32 = 0;
    /// The codec payloads are written with now: [`Codec::Postcard`] by
    /// default; `Codec::Json` (feature `json`) writes JSON text and marks the
    /// record as JSON (format version 5, spec 3.11). Reading never uses
    /// this: a record is decoded with the codec it names, so changing it
    /// leaves older events readable.
    const CODEC: Codec = Codec::Postcard;
    /// The event type stored in the record, e.g. the variant's name.
    fn event_type(&self) -> &'static str;

    /// The subject (a person) whose personal data the event holds, if any:
    /// the event is then stored sealed with the subject's key and read as
    /// erased once the subject is erased (spec 3.8,
    /// [`EventData::with_subject`]). `None` by default.
    fn subject(&self) -> Option<&str> {
        None
    }
}

/// Encode a typed event as [`EventData`] with its [`Event::CODEC`] (a JSON
/// payload marked as JSON; sealed for its [`Event::subject`], if it names
/// one).
pub fn encode<E: Event>(event: &E) -> Result<EventData<'static>> {
    let payload = E::CODEC.to_bytes(event)?;
    let data = E::CODEC.mark(EventData::new(event.event_type(), payload).with_schema_version(E::SCHEMA_VERSION));
    Ok(match event.subject() {
        Some(s) => data.with_subject(s.to_owned()),
        None => data,
    })
}

/// Decode a record's payload as it is stored (no upcasting), with the codec
/// the record names ([`Codec::of_record`]: serde_json for a record flagged
/// JSON, postcard otherwise). Borrowed fields of `E` point into the
/// record's bytes (the mapping): nothing is copied.
///
/// A record of an event that names a subject must be unsealed first
/// ([`LogView::unseal`](crate::LogView::unseal)); a sealed or erased record
/// is an [`Error::Decode`] saying so (see [`Typed::decode_unless_erased`]
/// for the erased case as a value).
pub fn decode<'a, E: Deserialize<'a>>(record: &RecordRef<'a>) -> Result<E> {
    decode_bytes(record, record.payload())
}

fn decode_bytes<'b, E: Deserialize<'b>>(record: &RecordRef<'_>, payload: &'b [u8]) -> Result<E> {
    if record.is_sealed() || record.is_erased() {
        return Err(Error::Decode {
            position: record.position(),
            event_type: record.event_type().to_owned(),
            detail: if record.is_sealed() {
                "the event names a subject and is stored sealed: unseal it first (LogView::unseal)".into()
            } else {
                "the event's subject was erased: only its envelope is left".into()
            },
        });
    }
    Codec::of_record(record)?
        .from_bytes(payload)
        .map_err(|detail| Error::Decode {
            position: record.position(),
            event_type: record.event_type().to_owned(),
            detail,
        })
}

impl OwnedRecord {
    /// Decode the payload of a subscription's record as it is stored (no
    /// upcasting), with the codec the record names ([`OwnedRecord::json`]:
    /// serde_json; otherwise postcard), like [`decode`] does for a
    /// [`RecordRef`]. Borrowed fields of `E` point into this record.
    ///
    /// An erased event ([`OwnedRecord::erased`]) has no payload: it is an
    /// [`Error::Decode`] saying so.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{Event, ExpectedVersion, Log};
    /// use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Deposited { cents: u64 }
    /// impl Event for Deposited {
    ///     fn event_type(&self) -> &'static str { "Deposited" }
    /// }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append_typed("account-1", ExpectedVersion::NoStream, &[Deposited { cents: 5 }])?;
    /// let first = log.subscribe_category("account", 0).next().expect("one event")?;
    /// assert_eq!(first.decode::<Deposited>()?, Deposited { cents: 5 });
    /// # Ok(()) }
    /// ```
    pub fn decode<'a, E: Deserialize<'a>>(&'a self) -> Result<E> {
        let failed = |detail: String| Error::Decode {
            position: self.position,
            event_type: self.event_type.clone(),
            detail,
        };
        if self.erased {
            return Err(failed(
                "the event's subject was erased: only its envelope is left".into(),
            ));
        }
        Codec::of_flag(self.json, self.position, &self.event_type)?
            .from_bytes(&self.payload)
            .map_err(failed)
    }
}

type Upcast = Box<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

/// Functions that turn a payload of `(event type, schema version v)` into
/// version `v + 1`; applied in a chain until no function matches. A
/// function gets and returns bytes in the codec of the record it upcasts
/// ([`Typed::codec`]): JSON text for a record flagged JSON, postcard
/// otherwise.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::Upcasters;
/// let mut up = Upcasters::new();
/// // Version 0 of "Renamed" held a name only; version 1 adds a reason.
/// up.register("Renamed", 0, |old: &[u8]| {
///     let name: String = postcard::from_bytes(old).map_err(|e| annal::Error::Encode(e.to_string()))?;
///     postcard::to_allocvec(&(name, "unknown")).map_err(|e| annal::Error::Encode(e.to_string()))
/// });
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Upcasters {
    map: HashMap<(String, u32), Upcast>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Register the function turning `event_type` payloads of schema version
    /// `from_version` into version `from_version + 1`.
    pub fn register(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.map.insert((event_type.to_owned(), from_version), Box::new(f));
        self
    }

    /// The record's payload in its current form and its schema version:
    /// borrowed from the record when no upcaster applies. An erased record
    /// has no payload to upcast: it is returned as it is. A sealed one must
    /// be unsealed first ([`LogView::unseal`](crate::LogView::unseal)).
    pub fn upcast<'a>(&self, record: &RecordRef<'a>) -> Result<(Cow<'a, [u8]>, u32)> {
        let mut payload = Cow::Borrowed(record.payload());
        let mut version = record.schema_version();
        if record.is_sealed() {
            return Err(Error::Decode {
                position: record.position(),
                event_type: record.event_type().to_owned(),
                detail: "the event names a subject and is stored sealed: unseal it before upcasting".into(),
            });
        }
        if self.map.is_empty() || record.is_erased() {
            return Ok((payload, version));
        }
        // Bounded: each step raises the version; a cycle is impossible.
        while let Some(f) = self.map.get(&(record.event_type().to_owned(), version)) {
            payload = Cow::Owned(f(&payload)?);
            version = version.checked_add(1).ok_or_else(|| Error::Decode {
                position: record.position(),
                event_type: record.event_type().to_owned(),
                detail: "schema version overflow while upcasting".into(),
            })?;
        }
        Ok((payload, version))
    }
}

/// A record with its payload upcast to the current schema version.
#[derive(Debug, Clone)]
pub struct Typed<'a> {
    record: RecordRef<'a>,
    payload: Cow<'a, [u8]>,
    schema_version: u32,
}

impl<'a> Typed<'a> {
    /// Upcast `record` with `upcasters`.
    pub fn new(record: RecordRef<'a>, upcasters: &Upcasters) -> Result<Typed<'a>> {
        let (payload, schema_version) = upcasters.upcast(&record)?;
        Ok(Typed {
            record,
            payload,
            schema_version,
        })
    }

    /// The stored record.
    pub fn record(&self) -> &RecordRef<'a> {
        &self.record
    }

    /// The payload in its current form.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload's schema version after upcasting.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The codec the payload is decoded with: the one the record names
    /// ([`Codec::of_record`]).
    pub fn codec(&self) -> Result<Codec> {
        Codec::of_record(&self.record)
    }

    /// Decode the (upcast) payload. Borrowed fields point into the mapping
    /// when no upcaster applied, into this value's buffer otherwise. An
    /// erased event is an error here; [`Typed::decode_unless_erased`] gives
    /// it as a value.
    pub fn decode<'t, E: Deserialize<'t>>(&'t self) -> Result<E> {
        decode_bytes(&self.record, &self.payload)
    }

    /// Whether the event's subject was erased (only its envelope is left).
    pub fn is_erased(&self) -> bool {
        self.record.is_erased()
    }

    /// The event, or `None` if its subject was erased: the erased case as
    /// a value rather than an error.
    pub fn decode_unless_erased<'t, E: Deserialize<'t>>(&'t self) -> Result<Option<E>> {
        if self.is_erased() {
            return Ok(None);
        }
        self.decode().map(Some)
    }
}
impl crate::Log {
    /// Append typed events (each encoded with its [`Event::CODEC`], see
    /// [`crate::typed`]) as one atomic batch.
    pub fn append_typed<E: Event>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<AppendResult> {
        let data = events.iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.append(stream, expected, &data)
    }
}
