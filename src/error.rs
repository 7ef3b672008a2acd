//! The one error type of annal.
//!
//! Every variant that concerns a file carries its path, and every variant that
//! concerns a place in a file carries the byte offset, so that a message alone
//! says where to look.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub(crate) use crate::format::damage::{Damage, DamageKind};
use crate::types::ExpectedVersion;

/// Result alias used throughout annal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in annal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What annal was doing ("open", "write", "fsync", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes that must be valid are not: a CRC mismatch, a bad length, a broken
    /// invariant. Nothing was modified.
    #[error("corrupt log data in {path} at byte offset {offset}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in that file of the damaged structure.
        offset: u64,
        /// What was expected and what was found.
        detail: String,
    },
    /// A file was written by a format version this build cannot read.
    #[error(
        "{path} at byte offset {offset}: format version {found} is not supported \
         (this build reads versions {oldest} to {current}); use a newer annal"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Offset of the version field.
        offset: u64,
        /// The version found.
        found: u16,
        /// Oldest version this build reads.
        oldest: u16,
        /// Newest version this build reads and writes.
        current: u16,
    },
    /// The optimistic-concurrency check of an append failed; nothing was written.
    #[error("wrong expected version for stream {stream:?}: expected {expected}, but the stream {}", ActualVersion(*actual))]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's current version (`None`: the stream does not exist).
        actual: Option<u64>,
    },
    /// The stream reads as deleted (spec 3.7): soft-deleted with no event
    /// since, or hard-deleted (`tombstoned`, after which the writer refuses
    /// every append to it and every change of its metadata). A stream that
    /// never existed reads as no events, never as this.
    #[error("stream {stream:?} is {}", if *tombstoned { "hard-deleted (tombstoned)" } else { "deleted" })]
    StreamDeleted {
        /// The stream.
        stream: String,
        /// Hard-deleted: no append will ever be accepted again.
        tombstoned: bool,
    },
    /// Another holder (in this or another process) holds the lock file:
    /// the log's writer lock, or a subscription's, a partition's, a
    /// projection runner's or a projection switch's lock.
    #[error(
        "{path} is locked by another holder (the log's writer, or a consumer, runner or switch of that name); close \
         it first (a log can be opened read-only beside its writer)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory exists but is not an annal log.
    #[error("{path} is not an annal log: {detail}")]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A write or fsync failed earlier; the writer refuses further writes
    /// because the state of unsynced data is unknown. Reopen the log.
    #[error("the log writer is poisoned by an earlier I/O failure ({cause}); reopen the log to recover")]
    Poisoned {
        /// The failure that poisoned the writer.
        cause: String,
    },
    /// An append repeats part of an earlier append (some of its event ids
    /// match the events stored at the expected versions, some do not).
    /// Nothing was written.
    #[error("idempotency conflict on stream {stream:?}: {detail}")]
    IdempotencyConflict {
        /// The stream appended to.
        stream: String,
        /// Which ids matched.
        detail: String,
    },
    /// A payload could not be decoded as the requested event type.
    #[error("cannot decode the {event_type:?} event at position {position}: {detail}")]
    Decode {
        /// Position of the record.
        position: u64,
        /// Its event type.
        event_type: String,
        /// What the decoder said.
        detail: String,
    },
    /// A value could not be encoded (postcard).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// An argument is outside what annal accepts and no more specific
    /// variant below says how.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An append was given no events.
    #[error("invalid argument: an append needs at least one event")]
    EmptyBatch,
    /// A stream name is empty or longer than 65,535 bytes.
    #[error("invalid argument: a stream name must be 1 to 65535 bytes, found {len} bytes")]
    StreamNameLength {
        /// The name's length in bytes.
        len: usize,
    },
    /// An event type is empty or longer than 65,535 bytes.
    #[error("invalid argument: event {index}: an event type must be 1 to 65535 bytes, found {len} bytes")]
    EventTypeLength {
        /// The event's index in the batch.
        index: usize,
        /// The event type's length in bytes.
        len: usize,
    },
    /// More events in one batch than a frame can count (2^32 - 1).
    #[error("invalid argument: too many events in one batch ({count}; at most 4294967295)")]
    TooManyEvents {
        /// The number of events given.
        count: usize,
    },
    /// An event's metadata plus payload is larger than
    /// `Options::max_event_bytes` or the format's record limit.
    #[error(
        "invalid argument: event {index}: metadata + payload is {size} bytes, more than max_event_bytes ({limit}) or the format limit"
    )]
    EventTooLarge {
        /// The event's index in the batch.
        index: usize,
        /// Its metadata plus payload, in bytes.
        size: u64,
        /// The largest accepted.
        limit: u64,
    },
    /// A batch encodes to more bytes than `Options::max_batch_bytes`.
    #[error("invalid argument: the batch encodes to {size} bytes, more than max_batch_bytes ({limit})")]
    BatchTooLarge {
        /// The encoded batch's length in bytes.
        size: u64,
        /// The largest accepted.
        limit: u64,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// An object of a remote log (spec 23) could not be read or written, or
    /// does not hold what it should: `object` names it (URL and name), and
    /// for damage the byte offset within it.
    #[error("remote log object {object}: {detail}")]
    Remote {
        /// The object (the remote log's URL and the object's name).
        object: String,
        /// What failed, or what was expected and found (with the offset).
        detail: String,
    },
    /// Another writer took the remote log (spec 23.3): this one ships
    /// nothing more.
    #[error("the remote log {url} was taken by another writer (epoch {found}, this writer's {ours}): shipping stopped")]
    Fenced {
        /// The remote log.
        url: String,
        /// This writer's epoch.
        ours: u64,
        /// The newer epoch found in the store.
        found: u64,
    },
    /// A replica's files disagree with the remote log it copies (spec 23.6):
    /// it is kept as it is and copies nothing more.
    #[error("{path}: the replica diverged from the remote log {url}: {detail}; remove the directory and follow again")]
    Diverged {
        /// The replica's directory (or the file that differs).
        path: PathBuf,
        /// The remote log.
        url: String,
        /// What differs (with the offset, where a byte does).
        detail: String,
    },
    /// A durable subscription's handler kept failing on an event and the
    /// run was told to stop (the event is not acknowledged).
    #[error("subscription {subscription:?}: the handler failed on the event at position {position}: {detail}")]
    Handler {
        /// The subscription.
        subscription: String,
        /// The event's position.
        position: u64,
        /// The handler's last error.
        detail: String,
    },
    /// A durable subscription's checkpoint names events the log no longer
    /// holds (spec 24.4): it does not resume on its own.
    #[error("{path}: {detail}")]
    LostEvents {
        /// The checkpoint file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A version of a projection (spec 24.8) was superseded: a higher
    /// version took over serving its name. Its runner begins no save from
    /// then on (its files may be retired); a runner of it is not opened
    /// again.
    /// `version` 0 is the unversioned projection.
    #[error(
        "projection {name:?}: version {version} was superseded by version {by}, which serves now; it saves nothing more"
    )]
    Superseded {
        /// The projection's name.
        name: String,
        /// The superseded version (0: the unversioned projection).
        version: u64,
        /// The version that serves.
        by: u64,
    },
    /// A version of a projection did not take over (spec 24.8): the
    /// serving file, read under the switch lock, does not name `expected`,
    /// the version its runner last read from it (at its open, its latest
    /// step or save, or a take-over that failed so; a take-over never reads
    /// it again to choose what it replaces): another version took over
    /// since. Nothing was switched. The runner now remembers `found` and
    /// builds beside it; a later take-over replaces that one.
    #[error(
        "projection {name:?}: version {version} did not take over: version {found} serves, not version {expected} as this runner last saw"
    )]
    ServingChanged {
        /// The projection's name.
        name: String,
        /// The version that tried to take over.
        version: u64,
        /// The serving version its runner last read (0: no serving file:
        /// the unversioned projection, or none).
        expected: u64,
        /// The serving version found.
        found: u64,
    },
    /// The audit chain's key is missing, not needed, or not the log's.
    #[error("{path}: {detail}")]
    ChainKey {
        /// The segment whose header names the log's key (or says it has none).
        path: PathBuf,
        /// What was expected and what was given.
        detail: String,
    },
    /// A forward read of a stream asked for versions that log retention
    /// removed (spec 3.9) from a version above 0 (a read from version 0
    /// starts at the first surviving one): what followed `from_version` is
    /// gone, so the read does not pretend to continue from it.
    #[error(
        "stream {stream:?}: versions {from_version} to {} were removed by log retention; its first version left is {first_version}",
        first_version.saturating_sub(1)
    )]
    RemovedByRetention {
        /// The stream.
        stream: String,
        /// The version the read asked for.
        from_version: u64,
        /// The stream's first version still in the log.
        first_version: u64,
    },
    /// A forward read of a stream asked for versions that compaction
    /// removed (spec 3.10: they were hidden by the stream's rules when it
    /// ran, and the rules show them now), from a version above the lowest
    /// one the rules show: the read does not pretend to continue from it.
    #[error(
        "stream {stream:?}: versions {from_version} to {} were removed by compaction; its first version left is {first_version}",
        first_version.saturating_sub(1)
    )]
    RemovedByCompaction {
        /// The stream.
        stream: String,
        /// The version the read asked for.
        from_version: u64,
        /// The stream's first version still in the log.
        first_version: u64,
    },
}

struct ActualVersion(Option<u64>);

impl fmt::Display for ActualVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("does not exist"),
            Some(v) => write!(f, "is at version {v}"),
        }
    }
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// An [`Error::Corrupt`] naming `path` and `offset`.
pub(crate) fn corrupt(path: &std::path::Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

impl Damage {
    /// Attach the file path.
    pub(crate) fn at(self, path: impl Into<PathBuf>) -> Error {
        match self.kind {
            DamageKind::Corrupt(detail) => Error::Corrupt {
                path: path.into(),
                offset: self.offset,
                detail,
            },
            DamageKind::Version(found) => Error::UnsupportedVersion {
                path: path.into(),
                offset: self.offset,
                found,
                oldest: crate::format::OLDEST_SUPPORTED_FORMAT_VERSION,
                current: crate::format::CURRENT_FORMAT_VERSION,
            },
            DamageKind::Io(f) => Error::Io {
                op: f.op,
                path: path.into(),
                source: f.to_io_error(),
            },
        }
    }
}
