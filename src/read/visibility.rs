//! What stream metadata leaves visible (spec 3.7), as values: one stream's
//! resolved rules ([`Visible`]), every stream's in a view ([`ViewRules`]),
//! and what a multi-stream read hides ([`Hide`]). Found by `rules`, which
//! reads them from a view; kept here, below both the view and `rules`, so
//! that a view can hold them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::error::Error;
use crate::format::meta::StreamRules;
use crate::format::record::RecordRef;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Visible {
    pub rules: StreamRules,
    /// The stream's newest version in the view (whatever is hidden), when
    /// the rules need it (`max_count`, or a deletion read by a stream read);
    /// `None` otherwise.
    pub last: Option<u64>,
    /// Lowest visible version (`u64::MAX`: none).
    pub min_version: u64,
    /// Oldest visible timestamp.
    pub min_timestamp: u64,
}

impl Visible {
    /// What `rules` leave visible of a stream whose newest version is
    /// `last`, at time `now` (read only with a `max_age` rule).
    pub fn new(rules: StreamRules, last: Option<u64>, now: u64) -> Visible {
        Visible {
            rules,
            last,
            min_version: rules.min_version(last),
            min_timestamp: if rules.max_age.is_some() {
                rules.min_timestamp(now)
            } else {
                0
            },
        }
    }

    /// Whether an event of the stream with version `v` and timestamp `t` is visible.
    pub fn shows(&self, v: u64, t: u64) -> bool {
        v >= self.min_version && t >= self.min_timestamp
    }

    /// [`Error::StreamDeleted`] if the stream reads as deleted.
    pub fn deleted(&self, stream: &str) -> Option<Error> {
        self.rules.reads_as_deleted(self.last).then(|| Error::StreamDeleted {
            stream: stream.to_owned(),
            tombstoned: self.rules.tombstone,
        })
    }
}

/// Every stream of a view that has rules, found from the `$meta` category.
#[derive(Debug, Default)]
pub(crate) struct ViewRules {
    /// By the stream name's bytes: a record's are looked up as stored, not
    /// converted to a `str` per record.
    streams: HashMap<Box<[u8]>, Visible>,
}

impl ViewRules {
    pub fn new(streams: HashMap<Box<str>, Visible>) -> ViewRules {
        ViewRules {
            streams: streams.into_iter().map(|(s, v)| (s.into_boxed_bytes(), v)).collect(),
        }
    }

    /// No stream has rules.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The visibility of the stream named `stream` (its name's bytes), if
    /// it has rules.
    pub fn get(&self, stream: &[u8]) -> Option<&Visible> {
        self.streams.get(stream)
    }
}

/// A view's rules, computed on first use and shared by its clones.
pub(crate) type RulesCell = Arc<OnceLock<Arc<ViewRules>>>;

/// What a read of the whole log, a category or an event type hides in a
/// log with metadata: events of system streams (unless the read names them)
/// and what each stream's rules hide.
#[derive(Debug, Clone)]
pub(crate) struct Hide {
    rules: Option<Arc<ViewRules>>,
    system: bool,
}

impl Hide {
    /// Hiding system streams (unless `system`) and what `rules` hide.
    pub fn new(rules: Option<Arc<ViewRules>>, system: bool) -> Hide {
        Hide { rules, system }
    }

    /// Whether `step` of an iterator is a record that `hide` hides (to be
    /// skipped).
    #[inline]
    pub fn skips<T>(hide: &Option<Hide>, step: &Result<Option<RecordRef<'_>>, T>) -> bool {
        matches!((hide, step), (Some(h), Ok(Some(r))) if h.hides(r))
    }

    /// Whether record `r` is hidden.
    #[inline]
    pub fn hides(&self, r: &RecordRef<'_>) -> bool {
        if r.stream_bytes().first() == Some(&b'$') {
            return !self.system;
        }
        match &self.rules {
            None => false,
            Some(m) => m
                .streams
                .get(r.stream_bytes())
                .is_some_and(|v| !v.shows(r.stream_version(), r.timestamp())),
        }
    }
}
