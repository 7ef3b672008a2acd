//! Codecs of typed events: how an [`Event`](crate::Event) becomes payload
//! bytes, and how a record's payload is read back.
//!
//! Postcard is the default (compact, zero-copy for borrowed fields). JSON
//! (serde_json, feature `json`) is chosen per event type with
//! [`Event::CODEC`](crate::Event::CODEC); its records carry the `JSON` flag
//! of format version 5 (spec 3.11), so that any reader, `annal read --json`
//! included, knows the payload is JSON text.
//!
//! Invariant: a payload is decoded with the codec its **record** names (the
//! `JSON` flag: serde_json; none: postcard), never the one the reading type
//! would write. So a stream may hold both, an event type may move from one
//! codec to the other, and events written before the move still decode.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::record::{EventData, RecordRef};

/// The encoding of a typed event's payload.
///
/// ```
/// use annal::typed::Codec;
/// use serde::Serialize;
/// #[derive(Serialize)]
/// struct Renamed { name: String }
/// impl annal::Event for Renamed {
///     // `Codec::Json` with the `json` feature.
///     const CODEC: Codec = Codec::Postcard;
///     fn event_type(&self) -> &'static str { "Renamed" }
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// postcard (the default): compact binary, not self-describing; the
    /// record carries no mark (spec 3.11: an unmarked payload is opaque to
    /// the format).
    #[default]
    Postcard,
    /// JSON text by serde_json (feature `json`); the record carries the
    /// `JSON` flag, which needs a log of format version 5.
    #[cfg(feature = "json")]
    Json,
}

impl Codec {
    /// The codec a record's payload is read with: [`Codec::Json`] if the
    /// record has the `JSON` flag ([`RecordRef::is_json`]), otherwise
    /// [`Codec::Postcard`]. Without the `json` feature a JSON record is an
    /// [`Error::Decode`] saying so.
    pub fn of_record(record: &RecordRef<'_>) -> Result<Codec> {
        Codec::of_flag(record.is_json(), record.position(), record.event_type())
    }

    /// [`Codec::of_record`] from the record's `JSON` flag (`position` and
    /// `event_type` name the record in the error).
    pub(crate) fn of_flag(json: bool, position: u64, event_type: &str) -> Result<Codec> {
        if !json {
            return Ok(Codec::Postcard);
        }
        #[cfg(feature = "json")]
        {
            let _ = (position, event_type);
            Ok(Codec::Json)
        }
        #[cfg(not(feature = "json"))]
        {
            Err(Error::Decode {
                position,
                event_type: event_type.to_owned(),
                detail: "the record's payload is JSON (flag JSON, spec 3.11): build annal with the `json` feature to \
                         decode it"
                    .into(),
            })
        }
    }

    /// Serialise `value` with this codec.
    pub fn to_bytes<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        match self {
            Codec::Postcard => postcard::to_allocvec(value).map_err(|e| Error::Encode(e.to_string())),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_vec(value).map_err(|e| Error::Encode(e.to_string())),
        }
    }

    /// Deserialise `bytes` with this codec; the error text is the codec's.
    /// Borrowed `&str` fields of JSON work only for strings without escapes
    /// (serde_json's rule); use `String` or `Cow<str>` for JSON events.
    pub fn from_bytes<'b, T: Deserialize<'b>>(self, bytes: &'b [u8]) -> std::result::Result<T, String> {
        match self {
            Codec::Postcard => postcard::from_bytes(bytes).map_err(|e| format!("postcard: {e}")),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}")),
        }
    }

    /// `data` marked as this codec's (the `JSON` flag for [`Codec::Json`]).
    pub(crate) fn mark(self, data: EventData<'static>) -> EventData<'static> {
        match self {
            Codec::Postcard => data,
            #[cfg(feature = "json")]
            Codec::Json => data.marked_json(),
        }
    }
}

#[cfg(feature = "json")]
impl EventData<'static> {
    /// An event whose payload is `value` serialised as JSON by serde_json,
    /// marked as JSON (the record flag `JSON` of format version 5, spec
    /// 3.11): typed events read it with serde_json, and `annal read --json`
    /// prints it as a JSON value. Appending it to a log of an older format
    /// version is refused ([`Error::InvalidArgument`]), never stored
    /// unmarked. Feature `json`.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// let e = annal::EventData::json("OrderPlaced", &serde_json::json!({"total": 42}))?;
    /// assert_eq!(&*e.payload, br#"{"total":42}"#);
    /// assert!(e.is_json());
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<std::borrow::Cow<'static, str>>,
        value: &T,
    ) -> Result<EventData<'static>> {
        let payload = serde_json::to_vec(value).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(EventData::new(event_type, payload).marked_json())
    }
}

#[cfg(feature = "json")]
impl<'a> EventData<'a> {
    /// An event whose payload is `text`, already JSON, kept byte for byte
    /// (whitespace, key order and number spelling as given) and marked as
    /// JSON like [`EventData::json`]. Text that is not exactly one JSON value
    /// (whitespace around it allowed) is refused ([`Error::InvalidArgument`]).
    /// Feature `json`.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// let e = annal::EventData::json_text("Noted", br#"{"b": 1, "a": 2}"#)?;
    /// assert_eq!(&*e.payload, br#"{"b": 1, "a": 2}"#);
    /// assert!(annal::EventData::json_text("Noted", b"{oops").is_err());
    /// # Ok(()) }
    /// ```
    pub fn json_text(
        event_type: impl Into<std::borrow::Cow<'a, str>>,
        text: impl crate::Payload<'a>,
    ) -> Result<EventData<'a>> {
        let data = EventData::new(event_type, text);
        serde_json::from_slice::<serde::de::IgnoredAny>(&data.payload)
            .map_err(|e| Error::InvalidArgument(format!("the payload is not one JSON value: {e}")))?;
        Ok(data.marked_json())
    }
}
