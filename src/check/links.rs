//! The audit chain of one segment, as its frames are walked (spec 21): each
//! batch's link recomputed from the chain hash stored before it, each
//! checkpoint's chain slot and signature (spec 3.5, 21.5), the seal's slot,
//! and where the anchors' positions fall.
//!
//! Invariants: the walk continues from each batch's *stored* hash, so one
//! changed batch is one finding; in a log without the chain every slot must
//! be zero and no checkpoint may appear.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::outcome::{Break, SegCtx, SegOut};
use super::report::{Finding, finding};
use crate::audit::chain::{ChainHash, Chainer, PublicKey, hex};
use zerocopy::FromBytes;

use crate::format::{CheckpointBody, FRAME_CHAIN_OFFSET, FRAME_HEADER_V3_LEN, Layout, LogFormat};

/// The 32-byte chain slot of the frame header at the start of `frame` (zero
/// if the frame is too short, which a validated frame never is, or, in
/// version 3, stores none).
pub(super) fn chain_slot(frame: &[u8], layout: &Layout) -> ChainHash {
    let at = if layout.compact() {
        FRAME_HEADER_V3_LEN
    } else {
        FRAME_CHAIN_OFFSET
    };
    let mut c = [0u8; 32];
    if let Some(s) = frame.get(at..at + 32) {
        c.copy_from_slice(s);
    }
    c
}

/// File offset of the chain slot of the frame at `off` in `layout`.
pub(super) fn slot_at(off: u64, layout: &Layout) -> u64 {
    off + if layout.compact() {
        FRAME_HEADER_V3_LEN
    } else {
        FRAME_CHAIN_OFFSET
    } as u64
}

/// The audit chain of one segment, as its batches are walked.
pub(super) struct ChainLinks {
    /// The stored chain hash before the next batch (version 3: stored at
    /// the last slot, linked on from there when the chain can be computed).
    prev: ChainHash,
    /// Whether `prev` is known: in version 3 without the key of a keyed
    /// chain, not after a batch that stores no slot.
    prev_known: bool,
    layout: Layout,
    /// File offset of the last batch (version 3: whether the next stores a slot).
    last_batch: Option<u64>,
    links: u64,
    breaks: Vec<Break>,
    /// Non-zero chain slots in a log without the chain.
    zero_problems: Vec<Finding>,
    anchor_points: Vec<(u64, ChainHash, u64)>,
    anchor_inside: Vec<(u64, u64, u64, u64)>,
    /// The last frame seen is a checkpoint.
    last_is_checkpoint: bool,
    signed: u64,
    last_signed: Option<u64>,
    /// A compacted segment's chain after its last batch, set at its seal.
    chain_end: Option<ChainHash>,
}

impl ChainLinks {
    /// The chain of a segment whose header's `chain_start` is `start`.
    pub(super) fn new(start: ChainHash, layout: Layout) -> ChainLinks {
        ChainLinks {
            prev: start,
            prev_known: true,
            layout,
            last_batch: None,
            links: 0,
            breaks: Vec::new(),
            zero_problems: Vec::new(),
            anchor_points: Vec::new(),
            anchor_inside: Vec::new(),
            last_is_checkpoint: false,
            signed: 0,
            last_signed: None,
            chain_end: None,
        }
    }

    /// Hand what was found to the segment's outcome (the problems after
    /// those already there).
    pub(super) fn finish(self, out: &mut SegOut) {
        out.signed = self.signed;
        out.last_signed = self.last_signed;
        out.links = self.links;
        out.breaks = self.breaks;
        out.problems.extend(self.zero_problems);
        out.anchor_points = self.anchor_points;
        out.anchor_inside = self.anchor_inside;
        out.chain_end = self.chain_end;
    }

    /// One complete checkpoint frame at file offset `off` (spec 3.5, 21.5):
    /// its chain slot repeats the stored chain after the batch before it; with
    /// a public key, its signature verifies.
    pub(super) fn checkpoint(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        log: &LogFormat,
        frame: &[u8],
        f: &crate::format::frame::Frame,
        off: u64,
    ) {
        let stored = chain_slot(frame, &self.layout);
        let p = f.first_position;
        self.last_is_checkpoint = true;
        if !log.chained() {
            self.zero_problems.push(finding(
                path,
                off + crate::format::FRAME_KIND_OFFSET as u64,
                "expected no checkpoint frame in a log without the audit chain",
            ));
            return;
        }
        if self.prev_known && stored != self.prev {
            self.broken(
                path,
                slot_at(off, &self.layout),
                p.saturating_add(1),
                format!(
                    "audit chain broken: the checkpoint at position {p} holds chain {}, but the chain after the \
                         batch before it is {}; the checkpoint was altered",
                    hex(&stored),
                    hex(&self.prev)
                ),
            );
        }
        // The body was checked when the frame was walked (its CRC, spec 3.5).
        let body_at = f.header_len as usize;
        let (key_at, sig_at) = (
            body_at + crate::format::CHECKPOINT_PUBLIC_KEY_OFFSET,
            body_at + crate::format::CHECKPOINT_SIGNATURE_OFFSET,
        );
        let Some(body) = frame
            .get(body_at..)
            .and_then(|b| CheckpointBody::ref_from_prefix(b).ok())
        else {
            return;
        };
        let (key, signature) = (&body.0.public_key, body.0.signature);
        let Some(pk) = ctx.public_key else {
            // Without a public key: the key the checkpoint names. That
            // catches damage and a forger who does not sign (spec 21.5);
            // only a key given proves who signed (the report says so).
            let named = *key;
            ctx.self_checked.fetch_add(1, Ordering::Relaxed);
            if !PublicKey(named).verify(&log.log_id, p, &stored, &signature) {
                self.zero_problems.push(finding(
                    path,
                    off + sig_at as u64,
                    format!(
                        "the signature of the checkpoint at position {p} does not verify against the public key \
                         the checkpoint names ({}): the checkpoint (its key, signature, position or chain hash) \
                         was altered or forged",
                        hex(key)
                    ),
                ));
            }
            return;
        };
        if *key != pk.0 {
            self.zero_problems.push(finding(
                path,
                off + key_at as u64,
                format!(
                    "the checkpoint at position {p} is signed by public key {}, not by the key given ({})",
                    hex(key),
                    hex(&pk.0)
                ),
            ));
        } else if !pk.verify(&log.log_id, p, &stored, &signature) {
            self.zero_problems.push(finding(
                path,
                off + sig_at as u64,
                format!(
                    "the signature of the checkpoint at position {p} does not verify: the checkpoint (its position \
                     or chain hash) was forged or altered"
                ),
            ));
        } else {
            self.signed += 1;
            self.last_signed = Some(p);
        }
    }

    /// One complete batch frame at file offset `off`: recompute its link from
    /// the stored hash before it (if `chainer`), and continue from its stored
    /// hash, so that one changed batch is one finding.
    #[expect(
        clippy::too_many_arguments,
        reason = "the walk callback hands over its state piecewise"
    )]
    pub(super) fn batch(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        chained: bool,
        chainer: Option<&Chainer<'_>>,
        frame: &[u8],
        f: &crate::format::frame::Frame,
        off: u64,
    ) {
        self.last_is_checkpoint = false;
        if self.layout.compact() {
            self.batch_v3(ctx, path, chained, chainer, frame, f, off);
            return;
        }
        let stored = chain_slot(frame, &self.layout);
        let slot = slot_at(off, &self.layout);
        if !chained {
            if stored != [0; 32] {
                self.zero_problems.push(finding(
                    path,
                    slot,
                    format!(
                        "expected a zero chain slot in a log without the audit chain, found {}",
                        hex(&stored)
                    ),
                ));
            }
            return;
        }
        if let Some(c) = chainer {
            let computed = c.link(&self.prev, frame);
            self.links += 1;
            if computed != stored {
                let p = f.first_position;
                self.broken(
                    path,
                    slot,
                    p.saturating_add(1),
                    format!(
                        "audit chain broken: the batch at position {p} hashes to {}, but its chain slot holds \
                             {}; history differs from position {p} on",
                        hex(&computed),
                        hex(&stored)
                    ),
                );
            }
        }
        self.prev = stored;
        self.anchors_in(ctx, f, stored, off);
    }

    /// [`ChainLinks::batch`] in version 3 (spec 3.6, 21.2): a batch stores
    /// a slot exactly when it is the segment's first or the first in a new
    /// `CHAIN_BLOCK`; the chain runs on from the last stored slot by
    /// recomputed links, and each stored slot is compared with it.
    #[expect(clippy::too_many_arguments, reason = "as `batch`")]
    fn batch_v3(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        chained: bool,
        chainer: Option<&Chainer<'_>>,
        frame: &[u8],
        f: &crate::format::frame::Frame,
        off: u64,
    ) {
        let must = chained && crate::format::frame::batch_is_chained(off, self.last_batch);
        self.last_batch = Some(off);
        if must != f.chained {
            self.zero_problems.push(finding(
                path,
                off + crate::format::FRAME_V3_FLAGS_OFFSET as u64,
                if must {
                    "expected a chain slot in this batch (the segment's first, or the first in a new 16 KiB block; \
                     spec 3.6), found none"
                } else {
                    "expected no chain slot in this batch (spec 3.6), found one"
                },
            ));
        }
        if !chained {
            return;
        }
        let computed = match chainer {
            Some(c) if self.prev_known => {
                self.links += 1;
                Some(c.link(&self.prev, frame))
            }
            _ => None,
        };
        let p = f.first_position;
        let stored = f.chained.then(|| chain_slot(frame, &self.layout));
        if let (Some(c), Some(s)) = (computed, stored)
            && c != s
        {
            self.broken(
                path,
                slot_at(off, &self.layout),
                p.saturating_add(1),
                format!(
                    "audit chain broken: the batches up to position {} hash to {}, but the chain slot of the \
                         batch at position {p} holds {}; history differs before position {} (since the last \
                         chain slot before it)",
                    f.next_position(),
                    hex(&c),
                    hex(&s),
                    f.next_position()
                ),
            );
        }
        match stored.or(computed) {
            Some(h) => {
                self.prev = h;
                self.prev_known = true;
                self.anchors_in(ctx, f, h, off);
            }
            None => self.prev_known = false,
        }
    }

    /// The anchors that fall in or at the end of the batch `f` (at `off`),
    /// whose chain hash after it is `after`.
    fn anchors_in(&mut self, ctx: &SegCtx<'_>, f: &crate::format::frame::Frame, after: ChainHash, off: u64) {
        let stored = after;
        let end = f.next_position();
        let mut i = ctx.anchors.partition_point(|&a| a <= f.first_position);
        while let Some(&a) = ctx.anchors.get(i)
            && a <= end
        {
            if a == end {
                // Named at the batch's chain slot (version 3: at the batch
                // itself if it stores none).
                let at = if self.layout.compact() && !f.chained {
                    off
                } else {
                    slot_at(off, &self.layout)
                };
                self.anchor_points.push((a, stored, at));
            } else {
                self.anchor_inside.push((a, f.first_position, end, off));
            }
            i += 1;
        }
    }

    /// A broken link found at `at` of `path`; `affects` is the smallest
    /// anchor position whose history it concerns.
    fn broken(&mut self, path: &Path, at: u64, affects: u64, detail: String) {
        self.breaks.push(Break {
            finding: finding(path, at, detail),
            affects,
        });
    }

    /// With a public key given, a sealed segment of a chained log must end
    /// with a checkpoint just before its seal (at file offset `seal_off`);
    /// not a compacted one (spec 3.10: its checkpoints are not kept, its
    /// compaction record accounts for it).
    pub(super) fn require_checkpoint(
        &mut self,
        ctx: &SegCtx<'_>,
        path: &Path,
        chained: bool,
        compacted: bool,
        seal_off: u64,
    ) {
        if ctx.public_key.is_some() && chained && !compacted && !self.last_is_checkpoint {
            self.zero_problems.push(finding(
                path,
                seal_off,
                "expected a signed checkpoint just before the seal of a sealed segment (spec 21.5); it is missing: \
                 the checkpoint was removed, or the writer had no signing key",
            ));
        }
    }

    /// The seal (at file offset `off`, after position `next`): its chain slot
    /// must repeat the last batch's (or `chain_start` without a batch). In a
    /// compacted segment (spec 3.10) it holds the original segment's end
    /// instead, and the chain after the last batch is kept for the
    /// compaction record to account for.
    pub(super) fn seal(&mut self, path: &Path, chained: bool, seal: ChainHash, off: u64, next: u64) {
        let slot = slot_at(off, &self.layout);
        if self.layout.compacted {
            self.chain_end = match (chained, self.prev_known) {
                (false, _) => Some([0; 32]),
                (true, true) => Some(self.prev),
                (true, false) => None,
            };
            if !chained && seal != [0; 32] {
                self.zero_problems.push(finding(
                    path,
                    slot,
                    format!(
                        "expected a zero chain slot in the seal of a log without the audit chain, found {}",
                        hex(&seal)
                    ),
                ));
            }
            return;
        }
        if !chained {
            if seal != [0; 32] {
                self.zero_problems.push(finding(
                    path,
                    slot,
                    format!(
                        "expected a zero chain slot in the seal of a log without the audit chain, found {}",
                        hex(&seal)
                    ),
                ));
            }
        } else if self.prev_known && seal != self.prev {
            self.broken(
                path,
                slot,
                next.saturating_add(1),
                format!(
                    "audit chain broken: the seal's chain slot holds {}, but the chain after the segment's last \
                         batch is {}; history differs from position {next} on",
                    hex(&seal),
                    hex(&self.prev)
                ),
            );
        }
    }
}
