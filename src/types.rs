//! Value types of the public API that every layer shares: the concurrency
//! condition of an append and the direction of a read. They hold no
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
