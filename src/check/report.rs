//! The public face of [`check`]: its options ([`CheckOptions`])
//! and what it returns ([`CheckReport`], [`Finding`], [`ChainStatus`],
//! [`AnchorVerdict`], [`SignatureSummary`], [`Hidden`], [`CompactedSegment`]),
//! with their `Display` and serialisation, and the constructors of findings
//! the other steps share.
//!
//! Invariants: a [`Finding`] names one file and one byte offset in it; the
//! texts built here are matched by tests and by users' scripts, so they do
//! not change. Nothing here reads a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

#[cfg(doc)]
use super::check;
use crate::audit::chain::{Anchor, ChainKey, PublicKey};
use crate::audit::subjects::MasterKey;
use crate::error::{Damage, DamageKind};
use crate::format::CHECKPOINT_FRAME_LEN;
#[cfg(doc)]
use crate::{error::Error, writer::Options};

/// A progress callback: `(bytes checked so far, bytes to check in all)`.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Options of [`check`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    pub(super) repair: bool,
    pub(super) progress: Option<ProgressFn>,
    pub(super) key: Option<ChainKey>,
    pub(super) anchors: Vec<Anchor>,
    pub(super) public_key: Option<PublicKey>,
    pub(super) max_batch_bytes: Option<u64>,
    pub(super) now: Option<u64>,
    pub(super) master_key: Option<MasterKey>,
}

impl fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckOptions")
            .field("repair", &self.repair)
            .field("progress", &self.progress.is_some())
            .field("key", &self.key)
            .field("anchors", &self.anchors)
            .field("public_key", &self.public_key)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("now", &self.now)
            .field("master_key", &self.master_key.is_some())
            .finish()
    }
}

impl CheckOptions {
    /// Repair what can be repaired (see the module documentation): takes the
    /// writer lock, so it fails with [`Error::Locked`] while a writer holds
    /// the log.
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Call `f(done, total)` (in bytes) as the check progresses, from any
    /// thread.
    pub fn progress(mut self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The secret key of a keyed audit chain (spec 21.4), to recompute its
    /// links. Without it, a keyed chain is not verified (a warning). A key
    /// whose id is not the log's `key_id`, or a key given for a log whose
    /// chain is not keyed, is a problem. With [`CheckOptions::repair`], the
    /// key is also given to the writer open that repairs (a keyed log needs
    /// it).
    pub fn key(mut self, key: ChainKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Check that the log's history up to `anchor.position` is the one the
    /// anchor was taken from (see [`AnchorVerdict`]). May be given several
    /// times.
    pub fn anchor(mut self, anchor: Anchor) -> Self {
        self.anchors.push(anchor);
        self
    }

    /// Verify the signed checkpoints (spec 21.5) with `key`: every
    /// checkpoint must be signed by it and its signature must verify, and
    /// every sealed segment must end with a checkpoint before its seal. The
    /// result is in [`CheckReport::signatures`].
    pub fn public_key(mut self, key: PublicKey) -> Self {
        self.public_key = Some(key);
        self
    }

    /// The largest frame to read (default: the format's
    /// [`MAX_FRAME_LEN`](crate::format::MAX_FRAME_LEN), 1 GiB, which bounds
    /// every writer's [`Options::max_batch_bytes`]): a frame claiming more is
    /// reported without being read, so that a length in a file never decides
    /// how much `check` reads or holds in memory. A lower value (the writer's
    /// `max_batch_bytes`) bounds `check`'s memory further.
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = Some(bytes);
        self
    }

    /// The time (nanoseconds since the Unix epoch) against which `max_age`
    /// rules of stream metadata are measured in [`CheckReport::hidden`]
    /// (default: the system clock when the check runs). For tests and for
    /// asking what a reader at another time would see.
    pub fn now(mut self, nanos: u64) -> Self {
        self.now = Some(nanos);
        self
    }

    /// The master key of a wrapped subject key file (spec 22), so that the
    /// check can open every sealed record with its key. Without it, a
    /// wrapped key file is reported as not verified (a warning), not as
    /// damage.
    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// The largest frame a writer with these limits writes.
    pub(super) fn max_frame(&self) -> u64 {
        self.max_batch_bytes
            .unwrap_or(DEFAULT_MAX_BATCH_BYTES)
            .max(CHECKPOINT_FRAME_LEN as u64)
    }
}

/// The format's limit on a frame (spec 8).
const DEFAULT_MAX_BATCH_BYTES: u64 = crate::format::MAX_FRAME_LEN;

/// What [`check`] found of the signed checkpoints (spec 21.5), when given a
/// public key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SignatureSummary {
    /// Checkpoints whose signature verified with the key given.
    pub verified: u64,
    /// The position of the newest verified checkpoint: the history before it
    /// is attested by the key's holder (if the chain verified too).
    pub last_signed_position: Option<u64>,
    /// Events after the newest verified checkpoint (not yet signed).
    pub unsigned_events: u64,
}

/// What [`check`] found of the audit chain (spec 21).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainStatus {
    /// The log carries no audit chain (format version 1, or created without
    /// it), or no segment header could be read.
    #[default]
    Absent,
    /// Every link was recomputed from the batches' bytes.
    Verified {
        /// The chain is keyed (and the key given was the log's).
        keyed: bool,
        /// Batches whose link was recomputed.
        batches: u64,
        /// Broken links found (each is also a problem).
        broken: u64,
    },
    /// The links could not be recomputed; only the stored chain values were
    /// compared with each other.
    NotVerified {
        /// The chain is keyed.
        keyed: bool,
        /// Why (no key given, a wrong key, segments that disagree on the
        /// log's format).
        reason: String,
    },
}

impl fmt::Display for ChainStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainStatus::Absent => write!(f, "absent (the log has no audit chain)"),
            ChainStatus::Verified { keyed, batches, broken } => {
                let kind = if *keyed { "keyed" } else { "unkeyed" };
                if *broken == 0 {
                    write!(f, "verified ({kind}): {batches} batch links recomputed, all hold")
                } else {
                    write!(
                        f,
                        "verified ({kind}): {batches} batch links recomputed, {broken} broken"
                    )
                }
            }
            ChainStatus::NotVerified { keyed, reason } => {
                let kind = if *keyed { "keyed" } else { "unkeyed" };
                write!(f, "not verified ({kind}): {reason}")
            }
        }
    }
}

/// The verdict on one anchor given to [`check`] ([`CheckOptions::anchor`]).
///
/// An anchor holds iff the log has the audit chain, its position is a batch
/// boundary of the log (or 0), no link of the chain before it is broken, and
/// the chain hash recomputed there equals the anchor's hash: then the history
/// before the anchor's position is the one the anchor was taken from. An
/// anchor that does not hold is also a problem in [`CheckReport::problems`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AnchorVerdict {
    /// The anchor, as given.
    #[serde(serialize_with = "anchor_as_text")]
    pub anchor: Anchor,
    /// It holds.
    pub ok: bool,
    /// Why it holds, or where the history differs from it.
    pub detail: String,
    /// The anchor's position lies before the log's first position, and a
    /// retention record accounts for the removal (spec 3.9): the position
    /// the log starts at now. Not a problem (`ok` is false: nothing before
    /// that position is left to verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by_retention: Option<u64>,
    /// The anchor's position lies strictly inside a segment that compaction
    /// rewrote (spec 3.10), which a compaction record accounts for: the
    /// position of that record. The chain there can no longer be
    /// recomputed; not a problem (`ok` is false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by_compaction: Option<u64>,
}

impl AnchorVerdict {
    /// The anchor was superseded (by retention or by compaction): it does
    /// not hold, and that is not a problem.
    pub fn superseded(&self) -> bool {
        self.superseded_by_retention.is_some() || self.superseded_by_compaction.is_some()
    }
}

fn anchor_as_text<S: serde::Serializer>(a: &Anchor, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// One finding of [`check`]: where, and what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The file concerned.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// What was expected and what was found.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.file.display(), self.offset, self.detail)
    }
}

/// The rule of a stream's metadata (spec 3.7) that hides events, with its
/// value: what [`Hidden::rule`] names.
///
/// When several rules hide an event, the first in this order names it:
/// tombstone, deleted, truncate_before, max_count, max_age.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HiddenBy {
    /// The stream is hard-deleted (`Log::hard_delete_stream`): every event
    /// is hidden.
    Tombstone,
    /// The stream is soft-deleted (`Log::delete_stream`): the events below
    /// `truncate_before` are hidden.
    Deleted {
        /// The lowest version the deletion leaves visible.
        truncate_before: u64,
    },
    /// `truncate_before`: the events with a lower version are hidden.
    TruncateBefore {
        /// The lowest visible version.
        version: u64,
    },
    /// `max_count`: only the newest `count` events are visible.
    MaxCount {
        /// How many newest events are visible.
        count: u64,
    },
    /// `max_age`: the events older than this, by the check's clock
    /// ([`CheckOptions::now`]), are hidden.
    MaxAge {
        /// The age, in nanoseconds.
        nanos: u64,
    },
}

impl HiddenBy {
    /// Its place in the order rules are named in.
    pub(super) fn rank(&self) -> u8 {
        match self {
            HiddenBy::Tombstone => 0,
            HiddenBy::Deleted { .. } => 1,
            HiddenBy::TruncateBefore { .. } => 2,
            HiddenBy::MaxCount { .. } => 3,
            HiddenBy::MaxAge { .. } => 4,
        }
    }
}

impl fmt::Display for HiddenBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiddenBy::Tombstone => write!(f, "tombstone"),
            HiddenBy::Deleted { truncate_before } => write!(f, "deleted below version {truncate_before}"),
            HiddenBy::TruncateBefore { version } => write!(f, "truncate_before {version}"),
            HiddenBy::MaxCount { count } => write!(f, "max_count {count}"),
            HiddenBy::MaxAge { nanos } => write!(f, "max_age {:?}", Duration::from_nanos(*nanos)),
        }
    }
}

/// Events of one stream that one rule of its metadata hides (spec 3.7): they
/// are in the segments and every read but `check` and `dump` skips them. Not
/// damage.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hidden {
    /// The stream.
    pub stream: String,
    /// The rule that hides them (the first that does, see [`HiddenBy`]).
    #[serde(flatten)]
    pub rule: HiddenBy,
    /// How many events it hides.
    pub events: u64,
    /// The position of the first event it hides.
    pub first_position: u64,
    /// The position of the last event it hides.
    pub last_position: u64,
    /// The position of the metadata event (the newest of `$meta-<stream>`)
    /// that set the rule.
    pub set_at: u64,
}

impl fmt::Display for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} event(s) hidden by {} (positions {} to {}, set at position {})",
            self.events, self.rule, self.first_position, self.last_position, self.set_at
        )
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// Damage: the log (or a derived file) is not as the format requires.
    pub problems: Vec<Finding>,
    /// Things that are not damage but worth knowing (a torn tail that the
    /// next writer open removes, a writer in progress, ...).
    pub warnings: Vec<Finding>,
    /// What `repair` did, one line per action (empty without repair).
    pub repairs: Vec<String>,
    /// A writer held the log during the check.
    pub writer_active: bool,
    /// Files checked.
    pub files: u64,
    /// Records checked (CRC included).
    pub records: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Time taken.
    #[serde(skip)]
    pub elapsed: Duration,
    /// The audit chain: absent, verified, or not verified and why.
    pub chain: ChainStatus,
    /// One verdict per anchor given, in the order given.
    pub anchors: Vec<AnchorVerdict>,
    /// The signed checkpoints, if a public key was given
    /// ([`CheckOptions::public_key`]).
    pub signatures: Option<SignatureSummary>,
    /// Without a public key, every checkpoint's signature is verified against
    /// the public key the checkpoint itself names: that catches damage and a
    /// careless forgery, but not a forger who signs with a key of their own.
    /// When the log holds checkpoints and no public key was given, this says
    /// so (one line, for the CLI to print); `None` otherwise.
    pub signature_note: Option<String>,
    /// In a log of format version 4: the events that stream metadata hides
    /// (spec 3.7), one entry per stream and rule, streams in name order. They
    /// are not damage and are never in [`CheckReport::problems`]; a metadata
    /// event that does not decode is.
    pub hidden: Vec<Hidden>,
    /// The events sealed for a subject (spec 3.8): each was opened with its
    /// key, or found erased. `None` when the log was not walked for them
    /// (a format before 4, or damage found first).
    pub subjects: Option<SubjectSummary>,
    /// The log's front was removed by log retention (spec 3.9) and a
    /// retention record accounts for it; `None` for a log that starts at
    /// position 0 (a front removed without a record is a problem).
    pub retention: Option<Retained>,
    /// In a log of format version 4: the segments compaction rewrote
    /// (spec 3.10), each accounted for by a compaction record, in log order.
    /// A compacted segment no record accounts for is a problem instead.
    pub compaction: Vec<CompactedSegment>,
}

/// What [`check`] found of the events that name a subject (spec 3.8, 22).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubjectSummary {
    /// Sealed events whose key is live: each one's sealed payload opened.
    pub sealed: u64,
    /// Sealed events whose subject was erased (only their envelope is left;
    /// not damage).
    pub erased: u64,
    /// Live keys in `annal.keys`.
    pub live_keys: u64,
    /// Erased keys in `annal.keys`.
    pub erased_keys: u64,
}

/// A log whose front log retention removed (spec 3.9), as `check` found it
/// accounted for.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// The log's first position: the base of its first segment.
    pub first_position: u64,
    /// The position of the newest retention record.
    pub record_position: u64,
    /// What that record says was removed: the segments before this position.
    pub removed_before: u64,
    /// Its rule: `age`, `size` or `age and size`.
    pub rule: String,
}

impl fmt::Display for Retained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the log starts at position {}: the segments before position {} were removed by retention (rule: {}), \
             recorded at position {}",
            self.first_position, self.removed_before, self.rule, self.record_position
        )
    }
}

/// A segment rewritten by compaction (spec 3.10), as `check` found it
/// accounted for by a compaction record.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompactedSegment {
    /// The segment file.
    pub path: PathBuf,
    /// Its base position.
    pub base: u64,
    /// The base of the segment after it (its seal's `first_position`).
    pub next_base: u64,
    /// The position of the compaction record that accounts for it.
    pub record_position: u64,
    /// The events missing from it, as the record lists them.
    pub removed_events: u64,
    /// The runs (events removed from one original batch each) the record lists.
    pub runs: u64,
    /// With a public key given ([`CheckOptions::public_key`]): whether a
    /// verified signed checkpoint comes after the record (and so signs it).
    /// A compacted segment keeps no signed checkpoint of its own: its record
    /// accounts for it. `None` without a public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_signed: Option<bool>,
}

impl fmt::Display for CompactedSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .path
            .file_name()
            .map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        write!(
            f,
            "segment {name} (positions {} to {}) was compacted: {} event(s) in {} run(s) removed, accounted for by \
             the compaction record at position {}",
            self.base, self.next_base, self.removed_events, self.runs, self.record_position
        )?;
        match self.record_signed {
            Some(true) => write!(
                f,
                "; it has no signed checkpoint of its own: a signed checkpoint after the record signs it"
            ),
            Some(false) => write!(
                f,
                "; it has no signed checkpoint of its own: its compaction record accounts for it, and the record (at \
                 position {}) comes after the last signed checkpoint",
                self.record_position
            ),
            None => Ok(()),
        }
    }
}

impl CheckReport {
    /// No problems (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A finding at byte `offset` of `file`.
pub(super) fn finding(file: &Path, offset: u64, detail: impl Into<String>) -> Finding {
    Finding {
        file: file.to_owned(),
        offset,
        detail: detail.into(),
    }
}

/// A finding for the damage `d` a decoder reported in `file`.
pub(super) fn damage_finding(file: &Path, d: &Damage) -> Finding {
    let detail = match &d.kind {
        DamageKind::Corrupt(s) => s.clone(),
        DamageKind::Version(v) => format!("unsupported format version {v} (use a newer annal)"),
        DamageKind::Io(_) => d.detail(),
    };
    finding(file, d.offset, detail)
}

/// A finding about the anchor `a`.
pub(super) fn anchor_finding(a: &Anchor, file: &Path, offset: u64, detail: &str) -> Finding {
    finding(file, offset, format!("anchor {a}: {detail}"))
}
