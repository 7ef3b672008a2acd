//! What the parallel per-segment pass shares and returns: the context every
//! segment's check reads ([`SegCtx`]) and one segment's outcome ([`SegOut`]),
//! which the sequential pass (versions, back pointers, the stream table, the
//! audit chain across segments) then walks in order.
//!
//! Invariants: a `SegOut` holds only what its own segment's bytes say; all
//! that depends on earlier segments is decided in the sequential pass.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::report::CheckOptions;
use super::report::Finding;
use crate::audit::chain::{ChainHash, ChainKey, PublicKey};
use crate::format::LogFormat;
use crate::format::compaction::CompactionRecord;
use crate::format::meta::StreamRules;
use crate::index::Prev;
use crate::storage::head::Head;

/// Where a stream's events are in one segment.
pub(super) struct StreamSpan {
    pub(super) first_version: u64,
    /// Offset of the first batch of the stream in the segment.
    pub(super) first_offset: u64,
    pub(super) last_version: u64,
}

/// Index status of a sealed segment.
pub(super) enum IdxState {
    /// Not applicable (active segment, or the segment itself is damaged).
    None,
    Missing,
    Damaged,
    /// Valid; the prev pointers it holds, per stream row.
    Valid(Vec<(Box<str>, u32, Prev)>),
}

/// What checking one segment found.
pub(super) struct SegOut {
    pub(super) base: u64,
    pub(super) path: PathBuf,
    pub(super) problems: Vec<Finding>,
    pub(super) warnings: Vec<Finding>,
    pub(super) records: u64,
    /// Records sealed for a subject (spec 3.8).
    pub(super) sealed_records: u64,
    pub(super) bytes: u64,
    pub(super) log_id: Option<[u8; 16]>,
    /// Whether the segment was readable to its end (or its durable end).
    pub(super) complete: bool,
    pub(super) sealed: bool,
    pub(super) next_position: u64,
    pub(super) spans: Vec<(Box<str>, StreamSpan)>,
    /// `(name, row, last_version)` per stream row (sealed segments).
    pub(super) rows: Vec<(Box<str>, u32, u64)>,
    pub(super) idx: IdxState,
    pub(super) idx_bytes: u64,
    /// The format its header states (`None` if the header is unreadable).
    pub(super) format: Option<LogFormat>,
    /// The header's `chain_start`.
    pub(super) chain_start: ChainHash,
    /// The seal's file offset and chain slot (sealed segments).
    pub(super) seal_chain: Option<(u64, ChainHash)>,
    /// Batch links recomputed.
    pub(super) links: u64,
    /// Broken links found in the segment (batch links, the seal).
    pub(super) breaks: Vec<Break>,
    /// `(position, chain hash, offset of the batch's chain slot)` for each
    /// anchor position at which a batch of this segment ends (version 3: the
    /// hash recomputed, and the batch's own offset, where it stores no slot).
    pub(super) anchor_points: Vec<(u64, ChainHash, u64)>,
    /// `(position, batch first position, batch end, frame offset)` for each
    /// anchor position strictly inside a batch of this segment.
    pub(super) anchor_inside: Vec<(u64, u64, u64, u64)>,
    /// Checkpoints whose signature verified, and the newest one's position.
    pub(super) signed: u64,
    pub(super) last_signed: Option<u64>,
    /// The header has `segment_flags` bit `COMPACTED` (spec 3.10).
    pub(super) compacted: bool,
    /// The header's `prev_timestamp`.
    pub(super) prev_timestamp: u64,
    /// A compacted segment's chain after its last batch (`chain_start` if
    /// none), when it could be computed; `None` otherwise.
    pub(super) chain_end: Option<ChainHash>,
    /// A compacted segment's batches, in order (empty for other segments).
    pub(super) batches: Vec<BatchSpan>,
    /// Events of the system streams compaction is checked against
    /// (format version 4): `$compaction` records and `$meta-S` events.
    pub(super) system: Vec<SystemEvent>,
}

/// One batch of a compacted segment, as found.
pub(super) struct BatchSpan {
    pub(super) first_position: u64,
    pub(super) count: u64,
    pub(super) first_version: u64,
    pub(super) stream: Box<str>,
    /// The frame's file offset.
    pub(super) offset: u64,
    /// The timestamps of its first and last records.
    pub(super) first_timestamp: u64,
    pub(super) last_timestamp: u64,
}

/// An event of a system stream that compaction is checked against.
pub(super) enum SystemEvent {
    /// An event of `$compaction` (spec 3.10).
    Compaction(FoundRecord),
    /// An event of `$meta-S` (spec 3.7): its position, `S`, and its rules
    /// (`None` if they do not decode: `hidden` reports that).
    Meta {
        position: u64,
        target: Box<str>,
        rules: Option<StreamRules>,
    },
}

/// An event of `$compaction` as found in a segment.
pub(super) struct FoundRecord {
    pub(super) position: u64,
    pub(super) timestamp: u64,
    /// The file offset of its payload.
    pub(super) payload_at: u64,
    /// The record, or `(file offset, why)` if it does not decode.
    pub(super) record: Result<CompactionRecord, (u64, String)>,
    /// For each stream its runs name: the stream's newest version in this
    /// segment before the record, if it has one there.
    pub(super) before: Vec<(Box<str>, u64)>,
}

impl SegOut {
    /// Nothing found yet of the segment at `base`, file `path`.
    pub(super) fn new(base: u64, path: PathBuf) -> SegOut {
        SegOut {
            base,
            path,
            problems: Vec::new(),
            warnings: Vec::new(),
            records: 0,
            sealed_records: 0,
            bytes: 0,
            log_id: None,
            complete: false,
            sealed: false,
            next_position: base,
            spans: Vec::new(),
            rows: Vec::new(),
            idx: IdxState::None,
            idx_bytes: 0,
            format: None,
            chain_start: [0; 32],
            seal_chain: None,
            links: 0,
            breaks: Vec::new(),
            anchor_points: Vec::new(),
            anchor_inside: Vec::new(),
            signed: 0,
            last_signed: None,
            compacted: false,
            prev_timestamp: 0,
            chain_end: None,
            batches: Vec::new(),
            system: Vec::new(),
        }
    }
}

/// A broken link of the audit chain.
#[derive(Clone)]
pub(super) struct Break {
    pub(super) finding: Finding,
    /// The smallest anchor position whose history it concerns.
    pub(super) affects: u64,
}

/// What every segment's check reads (and the progress it adds to).
pub(super) struct SegCtx<'a> {
    pub(super) dir: &'a Path,
    pub(super) head: Option<Head>,
    pub(super) writer_active: bool,
    pub(super) progress: Option<&'a (dyn Fn(u64, u64) + Send + Sync)>,
    pub(super) done: AtomicU64,
    pub(super) total: u64,
    /// The chain key given, if any.
    pub(super) key: Option<&'a ChainKey>,
    /// The anchors' positions, sorted, without duplicates.
    pub(super) anchors: Vec<u64>,
    /// The public key of signed checkpoints, if given.
    pub(super) public_key: Option<&'a PublicKey>,
    /// The base of the newest segment that has an index file. The sealer
    /// indexes sealed segments in order (and recovery rebuilds missing ones
    /// in order), so the sealed segments after it lacking an index are what
    /// a crash while the sealer lagged behind leaves.
    pub(super) last_indexed: Option<u64>,
    /// The largest frame a writer writes ([`CheckOptions::max_batch_bytes`]).
    pub(super) max_frame: u64,
    /// Checkpoint signatures verified against the key they name (without a
    /// public key given).
    pub(super) self_checked: AtomicU64,
}

impl SegCtx<'_> {
    /// Count `n` more bytes checked, and report progress.
    pub(super) fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(p) = self.progress {
            p(done.min(self.total), self.total);
        }
    }
}
