//! What stream metadata hides (spec 3.7, format version 4): the rules of a
//! stream, read from the newest event of its metadata stream `$meta-S`, and
//! the visibility test every multi-stream read applies.
//!
//! Invariants: rules come only from the view itself (a view taken after a
//! metadata append returns sees it; one taken before does not); a metadata
//! event that does not decode is an error naming its segment file and
//! position, never ignored (ignoring it would show deleted events); in logs
//! of format versions 1 to 3 nothing is hidden and `$` names are ordinary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, corrupt};
use crate::format::meta::{
    META_CATEGORY, META_EVENT_TYPE, META_FORMAT_VERSION, StreamRules, is_system_stream, meta_stream, meta_target,
};
use crate::format::record::RecordRef;
use crate::read::logview::LogView;
pub(crate) use crate::read::visibility::{Hide, ViewRules, Visible};
use crate::types::Direction;

/// A stream's metadata (spec 3.7): what [`LogView::stream_metadata`]
/// returns and what `Log::set_stream_metadata` writes.
///
/// ```
/// use std::time::Duration;
/// let m = annal::StreamMetadata::new().max_count(100).max_age(Duration::from_secs(90 * 86_400));
/// assert_eq!(m.max_count, Some(100));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Events with a lower version are hidden.
    pub truncate_before: Option<u64>,
    /// Only this many newest events are visible (at least 1).
    pub max_count: Option<u64>,
    /// Events older than this are hidden (by their append time, against the
    /// reader's clock).
    pub max_age: Option<Duration>,
    /// Soft-deleted (`Log::delete_stream`): set by deletion, not by
    /// `set_stream_metadata`.
    pub deleted: bool,
    /// Hard-deleted (`Log::hard_delete_stream`): no append is accepted again.
    pub tombstoned: bool,
}

impl StreamMetadata {
    /// No rules: every event visible.
    pub fn new() -> StreamMetadata {
        StreamMetadata::default()
    }

    /// Hide the events with a version below `version`.
    pub fn truncate_before(mut self, version: u64) -> StreamMetadata {
        self.truncate_before = Some(version);
        self
    }

    /// Keep only the newest `n` events visible (`n` at least 1).
    pub fn max_count(mut self, n: u64) -> StreamMetadata {
        self.max_count = Some(n);
        self
    }

    /// Hide events appended longer than `age` ago (at least 1 ns).
    pub fn max_age(mut self, age: Duration) -> StreamMetadata {
        self.max_age = Some(age);
        self
    }

    pub(crate) fn from_rules(r: &StreamRules) -> StreamMetadata {
        StreamMetadata {
            truncate_before: r.truncate_before,
            max_count: r.max_count,
            max_age: r.max_age.map(Duration::from_nanos),
            deleted: r.deleted,
            tombstoned: r.tombstone,
        }
    }
}

/// The rules of one stream in one view, resolved against the view.
/// What `rules` leave visible of `stream` in `view`.
/// `whole`: the stream's newest version is looked up even if only a
/// deletion needs it (a read of the stream says whether it reads as
/// deleted; a read of many streams only hides, and needs the newest version
/// for `max_count` alone: one lookup per stream with that rule, not per
/// stream with rules).
fn resolve(view: &LogView, stream: &str, rules: StreamRules, whole: bool) -> Result<Visible> {
    let last = if rules.max_count.is_some() || (whole && rules.deleted) {
        view.raw_stream_version(stream)?
    } else {
        None
    };
    let now = if rules.max_age.is_some() { view.now() } else { 0 };
    Ok(Visible::new(rules, last, now))
}

/// Decode the rules record of metadata event `r`, or an error naming the
/// segment that holds it.
fn decode(view: &LogView, r: &RecordRef<'_>) -> Result<StreamRules> {
    let seg = &view.segments[view.segment_of(r.position())];
    if r.event_type() != META_EVENT_TYPE || r.schema_version() != 0 || !r.metadata().is_empty() {
        return Err(corrupt(
            &seg.path,
            0,
            format!(
                "the event at position {} of metadata stream {:?} is not a {META_EVENT_TYPE} event with schema version 0 \
                 and no metadata (spec 3.7)",
                r.position(),
                r.stream()
            ),
        ));
    }
    StreamRules::decode(r.payload()).map_err(|(at, detail)| {
        corrupt(
            &seg.path,
            0,
            format!(
                "the rules record of the event at position {} of {:?}, payload byte {at}: {detail}",
                r.position(),
                r.stream()
            ),
        )
    })
}

impl LogView {
    /// Whether this view's log gives metadata its meaning (format version 4
    /// or later; the newest segment's version is the log's).
    pub(crate) fn has_rules(&self) -> bool {
        self.segments
            .last()
            .is_some_and(|s| s.layout.version >= META_FORMAT_VERSION)
    }

    /// The newest version of `stream` in the view, nothing hidden.
    pub(crate) fn raw_stream_version(&self, stream: &str) -> Result<Option<u64>> {
        self.read_stream_raw(stream, u64::MAX, Direction::Backward, 1)
            .next()
            .transpose()
            .map(|r| r.map(|r| r.stream_version()))
    }

    /// The rules of `stream` from the newest event of its metadata stream
    /// (`None`: no rules, or a log without metadata).
    pub(crate) fn stream_rules(&self, stream: &str) -> Result<Option<StreamRules>> {
        if !self.has_rules() || is_system_stream(stream) {
            return Ok(None);
        }
        let meta = meta_stream(stream);
        match self.read_stream_raw(&meta, u64::MAX, Direction::Backward, 1).next() {
            None => Ok(None),
            Some(r) => decode(self, &r?).map(Some),
        }
    }

    /// What the rules of `stream` leave visible in this view (`None`: all).
    pub(crate) fn visible(&self, stream: &str) -> Result<Option<Visible>> {
        match self.stream_rules(stream)? {
            Some(rules) => resolve(self, stream, rules, true).map(Some),
            None => Ok(None),
        }
    }

    /// The metadata of `stream` in this view: `None` if it has none (every
    /// event visible, or a log of a format version before 4).
    pub fn stream_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>> {
        Ok(self.stream_rules(stream)?.map(|r| StreamMetadata::from_rules(&r)))
    }

    /// The rules of every stream that has metadata in this view (the newest
    /// event of each metadata stream; empty in a log of a format version
    /// before 4).
    pub(crate) fn all_stream_rules(&self) -> Result<HashMap<Box<str>, StreamRules>> {
        let mut newest = HashMap::new();
        if !self.has_rules() {
            return Ok(newest);
        }
        for r in self.read_named_raw(META_CATEGORY) {
            let r = r?;
            let Some(target) = meta_target(r.stream()) else {
                continue;
            };
            newest.insert(target.into(), decode(self, &r)?);
        }
        Ok(newest)
    }

    /// What a multi-stream read hides (`None`: nothing, a log without
    /// metadata); `system`: the read names system streams (their category
    /// or event type), so their events are delivered.
    pub(crate) fn hide(&self, system: bool) -> Result<Option<Hide>> {
        if !self.has_rules() {
            return Ok(None);
        }
        Ok(Some(Hide::new(self.rules()?, system)))
    }

    /// The rules of every stream of the view that has some (`None` in a log
    /// without metadata, or with no metadata event), computed once per view.
    pub(crate) fn rules(&self) -> Result<Option<Arc<ViewRules>>> {
        if !self.has_rules() {
            return Ok(None);
        }
        if let Some(r) = self.rules.get() {
            return Ok((!r.is_empty()).then(|| r.clone()));
        }
        let newest = self.all_stream_rules()?;
        let mut streams = HashMap::with_capacity(newest.len());
        for (s, rules) in newest {
            let v = resolve(self, &s, rules, false)?;
            streams.insert(s, v);
        }
        let built = Arc::new(ViewRules::new(streams));
        let _ = self.rules.set(built);
        let r = self.rules.get().cloned().unwrap_or_default();
        Ok((!r.is_empty()).then_some(r))
    }
}

impl LogView {
    /// The rules record of metadata event `r` (an event of a `$meta-S`
    /// stream of this view), or the error a read returns for it: for `check`,
    /// which reports every metadata event that does not decode.
    pub(crate) fn metadata_event_rules(&self, r: &RecordRef<'_>) -> Result<StreamRules> {
        decode(self, r)
    }
}
