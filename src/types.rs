//! Value types of the public API that every layer shares: the concurrency
//! condition of an append, and the direction and start of a read. They hold no
//! behaviour beyond formatting, so the error type (which names an expected
//! version) and the writer and readers can all use them without importing
//! each other.

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// The direction of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// Where a stream read starts: a stream version, or either end.
///
/// `u64` converts to [`StreamPosition::At`], so a version can be passed as
/// it is.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{Direction, EventData, ExpectedVersion, Log, StreamPosition};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// log.append("order-1", ExpectedVersion::Any, &[EventData::new("A", b""), EventData::new("B", b"")])?;
/// let view = log.view()?;
/// let newest = view.read_stream("order-1", StreamPosition::End, Direction::Backward, 1).next().expect("one")?;
/// assert_eq!(newest.event_type(), "B");
/// let from_one: Vec<_> = view.read_stream("order-1", 1, Direction::Forward, 10).collect();
/// assert_eq!(from_one.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPosition {
    /// The stream's first event (version 0).
    Start,
    /// The stream's newest event (reading backward), or past it (forward:
    /// nothing).
    End,
    /// This stream version.
    At(u64),
}

impl StreamPosition {
    /// The stream version this position names (`End` is `u64::MAX`).
    pub fn version(self) -> u64 {
        match self {
            StreamPosition::Start => 0,
            StreamPosition::End => u64::MAX,
            StreamPosition::At(v) => v,
        }
    }
}

impl From<u64> for StreamPosition {
    fn from(version: u64) -> StreamPosition {
        StreamPosition::At(version)
    }
}

/// Now, by the system clock, in nanoseconds since the Unix epoch (0 before
/// it, `u64::MAX` past 2554): the default clock of writers and views.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
