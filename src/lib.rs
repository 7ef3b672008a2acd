//! # annal: an embedded, append-only event store
//!
//! annal stores events in an append-only log of segment files whose format is
//! documented byte for byte in `spec/format.md`. Writers append batches
//! atomically with optimistic concurrency per stream; readers replay the log
//! through memory mappings, zero-copy, checking a CRC per record.
//!
//! ## Overview of types and modules
//!
//! * [`Log`]: the writer (one per log, across processes): [`Log::append`],
//!   [`Log::sync`], [`Log::view`], [`Log::close`]. Configured by [`Options`]
//!   ([`Durability`], segment size, limits, the I/O seam).
//! * [`EventData`]: an event to append. [`ExpectedVersion`]: the concurrency
//!   condition. [`AppendResult`]: positions and the stream's new version.
//! * [`LogView`]: a consistent point-in-time view; [`LogView::read_all`]
//!   yields [`RecordRef`]s that borrow from the mapping.
//! * [`Reader`]: views for processes that do not hold the writer lock.
//! * [`Error`]: the one error type, with path and byte offset.
//! * [`io`]: the I/O seam through which the writer does every file operation.
//!
//! ## Example
//!
//! ```
//! # fn main() -> annal::Result<()> {
//! use annal::{Durability, EventData, ExpectedVersion, Log, Options, Reader};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open_with(dir.path(), Options::default().durability(Durability::Fsync))?;
//! log.append("order-7", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])?;
//!
//! // Another process (or thread) reads without the lock.
//! let mut reader = Reader::open(dir.path())?;
//! let view = reader.view()?;
//! let types: Vec<String> = view
//!     .read_all(0)
//!     .map(|r| r.map(|r| r.event_type().to_owned()))
//!     .collect::<annal::Result<_>>()?;
//! assert_eq!(types, ["Placed"]);
//! log.close()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod audit;
mod check;
mod error;
mod es;
pub mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod index;
#[doc(hidden)]
pub mod inspect;
mod read;
#[cfg(feature = "remote")]
pub mod remote;
mod storage;
mod trace;
mod types;
mod writer;

pub use storage::io;

/// Segment file names (spec section 1).
pub mod segment {
    pub use crate::format::names::{SEGMENT_SUFFIX, parse_segment_file_name, segment_file_name};
}

pub use audit::chain::{Anchor, ChainHash, ChainKey, PublicKey, SigningKey};
pub use audit::subjects::MasterKey;
pub use check::{
    AnchorVerdict, ChainStatus, CompactedSegment, Hidden, HiddenBy, Retained, SignatureSummary, SubjectSummary,
};
pub use check::{CheckOptions, CheckReport, Finding, ProgressFn, check};
pub use error::{Error, Result};
pub use es::aggregate::{Aggregate, AsOf, ExecuteError, Executed, Loaded, Repository};
pub use es::competing::{CompetingBuilder, CompetingConsumer};
pub use es::consumer::{
    DurableBuilder, DurableSubscription, MAX_SUBSCRIPTION_NAME, OnFailure, Parked, Retry, SUBSCRIPTION_FILE_PREFIX,
};
#[cfg(feature = "cqrs-es")]
pub use es::cqrs;
pub use es::projection::Projection;
pub use es::runner::{PROJECTION_FILE_PREFIX, ProjectionBuilder, ProjectionRunner, TakeOver, TakenOver};
pub use es::serving::{Served, ServingProjection};
pub use es::snapshot::Snapshot;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use es::snapshot::testing as snapshot_testing;
pub use es::typed;
pub use es::typed::{Codec, Event, Typed, Upcasters};
pub use format::hash::{category_of, stream_hash};
pub use format::names::{HEAD_FILE, LOCK_FILE, STREAM_TABLE_FILE};
pub use format::record::{EventData, Payload, RecordRef};
pub use format::sealed::KeyId;
pub use read::anchor::{ChainHead, chain_head, head_anchor};
pub use read::owned::IntoRecords;
pub use read::query::{ReadAllBackward, ReadNamed, ReadStream};
pub use read::rules::StreamMetadata;
#[cfg(feature = "tokio")]
pub use read::subscription::SubscriptionStream;
pub use read::subscription::{DEFAULT_POLL_INTERVAL, OwnedRecord, Subscription, SubscriptionFilter};
#[doc(hidden)]
pub use read::view::set_default_max_mapped_segments;
pub use read::view::{LogView, ReadAll, ReadOptions, Reader, Unrecovered, Unsealed};
pub use types::{Direction, ExpectedVersion, StreamPosition};
pub use uuid::Uuid;
#[cfg(feature = "remote")]
pub use writer::ReplicationStatus;
pub use writer::{AppendResult, Clock, Durability, Log, Options, Recovery, Truncation};
pub use writer::{CompactionReport, Retention, RetentionReport};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<crate::Log>();
        assert_send_sync::<crate::LogView>();
        assert_send_sync::<crate::Reader>();
        assert_send_sync::<crate::Error>();
    }
}
