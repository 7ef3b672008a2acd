//! When a cold front asks the store: the back-off after a failure or a
//! refresh that did not fit, and the settled empty result (spec 23.7).

use std::time::{Duration, Instant};

use super::{BACKOFF_MAX, BACKOFF_MIN, Clock};

/// When the front asks the store (a refresh of its list, ranged reads).
pub(super) struct Asking {
    /// The clock of the back-off.
    pub(super) clock: Clock,
    /// The directory's first segment the last refresh was for.
    pub(super) refreshed_for: Option<Option<u64>>,
    /// No request before this instant: the store failed (every request
    /// waits), or a refresh for `refreshed_for` did not fit (another
    /// waits, unless the directory changed).
    pub(super) quiet_until: Option<Instant>,
    /// The last wait set.
    pub(super) backoff: Duration,
    /// The last request failed: the store cannot be reached.
    pub(super) unreachable: bool,
    /// The directory's first segment below which the store was found to
    /// hold nothing (its segments start at or above it): settled, asked
    /// again never (the store's first segment never moves down).
    pub(super) settled: Option<u64>,
}

impl std::fmt::Debug for Asking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asking")
            .field("refreshed_for", &self.refreshed_for)
            .field("quiet_until", &self.quiet_until)
            .field("backoff", &self.backoff)
            .field("unreachable", &self.unreachable)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Asking {
    /// Wait before the next request: after a failure of the store, or a
    /// refresh that did not fit.
    pub(super) fn back_off(&mut self, now: Instant, unreachable: bool) {
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.quiet_until = Some(now + self.backoff);
        self.unreachable = unreachable;
    }

    /// A request succeeded.
    pub(super) fn reached(&mut self) {
        self.unreachable = false;
        self.backoff = Duration::ZERO;
        self.quiet_until = None;
    }

    /// Whether the front may read ranges of objects now (to open segments
    /// its list names): unless the store failed and the back-off did not
    /// pass yet.
    pub(super) fn may_read(&self, now: Instant) -> bool {
        !self.unreachable || self.quiet_until.is_none_or(|t| now >= t)
    }

    /// Whether the front may take the newest manifest now, for a directory
    /// whose first segment is `first`: unless the store failed, or a
    /// refresh for the same directory did not fit, and the back-off did
    /// not pass yet.
    pub(super) fn may_ask(&self, now: Instant, first: Option<u64>) -> bool {
        match self.quiet_until {
            Some(t) if now < t => !self.unreachable && self.refreshed_for != Some(first),
            _ => true,
        }
    }
}
