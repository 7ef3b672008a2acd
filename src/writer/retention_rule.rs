//! The values of log retention (spec 3.9): the rule ([`Retention`], given
//! to [`Options::retention`](crate::Options::retention)) and what one
//! application did ([`RetentionReport`]). Plain values: nothing here does
//! I/O or knows the writer (the protocol is in `retention`).

use std::path::PathBuf;
use std::time::Duration;

/// Log retention (spec 3.9): drop whole sealed segments from the front of
/// the log, oldest first, never the active one.
///
/// ```
/// use std::time::Duration;
/// use annal::{Options, Retention};
/// let opts = Options::default().retention(
///     Retention::new().max_age(Duration::from_secs(90 * 86_400)).max_bytes(10 << 30),
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
}

impl Retention {
    /// No rule: nothing is removed.
    pub fn new() -> Retention {
        Retention::default()
    }

    /// Remove a sealed segment once its newest event is older than `age`
    /// (by its append timestamp, against the writer's clock).
    pub fn max_age(mut self, age: Duration) -> Retention {
        self.max_age = Some(age).filter(|d| !d.is_zero());
        self
    }

    /// Remove the oldest sealed segments while the segment files and their
    /// index files together exceed `bytes`.
    pub fn max_bytes(mut self, bytes: u64) -> Retention {
        self.max_bytes = Some(bytes).filter(|&b| b > 0);
        self
    }

    /// The age limit, if set.
    pub fn age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The size limit, if set.
    pub fn bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one application of retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// The segment files removed, oldest first.
    pub removed_segments: Vec<PathBuf>,
    /// Bytes of the files removed (segments and their index files).
    pub removed_bytes: u64,
    /// The log's first position now, if segments were removed.
    pub removed_before: Option<u64>,
    /// The position of the retention record appended (none when nothing was
    /// removed, or when an open finished an earlier record's removal).
    pub record_position: Option<u64>,
    /// The rule that removed them: `age`, `size`, `age and size`, or
    /// `recorded` (an open finished a removal a crash interrupted).
    pub rule: Option<&'static str>,
}
