//! The value types of the writer's API: [`AppendResult`] (what an append
//! did), and [`Recovery`] / [`Truncation`] (what opening the log did). Plain
//! values. ([`ExpectedVersion`], the condition of an append, is shared with
//! the error type and lives in `crate::types`.)

use std::path::PathBuf;

pub use crate::types::ExpectedVersion;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// Global position of the batch's first event.
    pub first_position: u64,
    /// Global position of the batch's last event.
    pub last_position: u64,
    /// The stream's version after the append (the version of its last event):
    /// pass it as `ExpectedVersion::Exact` to the next append.
    pub stream_version: u64,
}

/// What opening the log did to recover from a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The log did not exist and was created.
    pub created: bool,
    /// A torn tail was removed from the active segment.
    pub truncated: Option<Truncation>,
    /// An active segment whose header was torn (a crash while creating it, so
    /// it held no events) was rewritten as an empty segment.
    pub reinitialized: Option<PathBuf>,
    /// Temporary files of an interrupted write that were deleted.
    pub removed_temp_files: Vec<PathBuf>,
    /// Index files that were missing (a crash between sealing a segment and
    /// indexing it) and were rebuilt from their segments.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// The stream table was missing, damaged or behind and was rebuilt.
    pub rebuilt_stream_table: bool,
    /// Things found while opening that did not stop it but need a person's
    /// attention: a log directory or `snapshots/` folder that is a symlink or
    /// writable by others, ... Each names the file and what was found.
    pub warnings: Vec<String>,
}

#[cfg(feature = "tracing")]
impl Recovery {
    /// Record what opening did on its span (`segments`: how many the log
    /// has), and each warning as a `warn` event.
    pub(crate) fn trace(&self, span: &tracing::Span, segments: usize) {
        let cut = self.truncated.as_ref().map_or(0, |t| t.bytes_removed);
        crate::trace::record!(
            span,
            segments = segments,
            created = self.created,
            truncated_bytes = cut,
            rebuilt_indexes = self.rebuilt_indexes.len()
        );
        for w in &self.warnings {
            crate::trace::event!(WARN, warning = %w, "annal warning (open)");
        }
    }
}

/// A torn tail removed by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// Where the file was cut (its new length).
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes_removed: u64,
    /// Why the data at `offset` was not a complete batch.
    pub reason: String,
}

#[cfg(feature = "remote")]
/// How far the log's in-process replicator got ([`Log::replication`]).
///
/// [`Log::replication`]: crate::Log::replication
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ReplicationStatus {
    /// Rounds run.
    pub rounds: u64,
    /// The last round that succeeded.
    pub last: Option<crate::remote::ShipReport>,
    /// The last round's error, if it failed (cleared by a round that
    /// succeeds).
    pub error: Option<String>,
    /// The replicator stopped for good: the log closed, or another writer
    /// holds the remote log (then `error` says so).
    pub stopped: bool,
}
