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

use crate::format::{
    CHECKPOINT_FRAME_PUBLIC_KEY_OFFSET, CHECKPOINT_FRAME_SIGNATURE_OFFSET, CheckpointBody, FRAME_CHAIN_OFFSET,
    FRAME_HEADER_LEN, LogFormat,
};

/// The 32-byte chain slot of the frame header at the start of `frame` (zero
/// if the frame is too short, which a validated frame never is).
pub(super) fn chain_slot(frame: &[u8]) -> ChainHash {
    let mut c = [0u8; 32];
    if let Some(s) = frame.get(FRAME_CHAIN_OFFSET..FRAME_HEADER_LEN) {
        c.copy_from_slice(s);
    }
    c
}

/// The audit chain of one segment, as its batches are walked.
pub(super) struct ChainLinks {
    /// The stored chain hash before the next batch.
    prev: ChainHash,
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
}

impl ChainLinks {
    /// The chain of a segment whose header's `chain_start` is `start`.
    pub(super) fn new(start: ChainHash) -> ChainLinks {
        ChainLinks {
            prev: start,
            links: 0,
            breaks: Vec::new(),
            zero_problems: Vec::new(),
            anchor_points: Vec::new(),
            anchor_inside: Vec::new(),
            last_is_checkpoint: false,
            signed: 0,
            last_signed: None,
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
        let stored = chain_slot(frame);
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
        if stored != self.prev {
            self.breaks.push(Break {
                finding: finding(
                    path,
                    off + FRAME_CHAIN_OFFSET as u64,
                    format!(
                        "audit chain broken: the checkpoint at position {p} holds chain {}, but the chain after the \
                         batch before it is {}; the checkpoint was altered",
                        hex(&stored),
                        hex(&self.prev)
                    ),
                ),
                affects: p.saturating_add(1),
            });
        }
        // The body was checked when the frame was walked (its CRC, spec 3.5).
        let Some(body) = frame
            .get(FRAME_HEADER_LEN..)
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
                    off + CHECKPOINT_FRAME_SIGNATURE_OFFSET as u64,
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
                off + CHECKPOINT_FRAME_PUBLIC_KEY_OFFSET as u64,
                format!(
                    "the checkpoint at position {p} is signed by public key {}, not by the key given ({})",
                    hex(key),
                    hex(&pk.0)
                ),
            ));
        } else if !pk.verify(&log.log_id, p, &stored, &signature) {
            self.zero_problems.push(finding(
                path,
                off + CHECKPOINT_FRAME_SIGNATURE_OFFSET as u64,
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
        let stored = chain_slot(frame);
        let slot = off + FRAME_CHAIN_OFFSET as u64;
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
                self.breaks.push(Break {
                    finding: finding(
                        path,
                        slot,
                        format!(
                            "audit chain broken: the batch at position {p} hashes to {}, but its chain slot holds \
                             {}; history differs from position {p} on",
                            hex(&computed),
                            hex(&stored)
                        ),
                    ),
                    affects: p.saturating_add(1),
                });
            }
        }
        self.prev = stored;
        let end = f.next_position();
        let mut i = ctx.anchors.partition_point(|&a| a <= f.first_position);
        while let Some(&a) = ctx.anchors.get(i)
            && a <= end
        {
            if a == end {
                self.anchor_points.push((a, stored, off));
            } else {
                self.anchor_inside.push((a, f.first_position, end, off));
            }
            i += 1;
        }
    }

    /// With a public key given, a sealed segment of a chained log must end
    /// with a checkpoint just before its seal (at file offset `seal_off`).
    pub(super) fn require_checkpoint(&mut self, ctx: &SegCtx<'_>, path: &Path, chained: bool, seal_off: u64) {
        if ctx.public_key.is_some() && chained && !self.last_is_checkpoint {
            self.zero_problems.push(finding(
                path,
                seal_off,
                "expected a signed checkpoint just before the seal of a sealed segment (spec 21.5); it is missing: \
                 the checkpoint was removed, or the writer had no signing key",
            ));
        }
    }

    /// The seal (at file offset `off`, after position `next`): its chain slot
    /// must repeat the last batch's (or `chain_start` without a batch).
    pub(super) fn seal(&mut self, path: &Path, chained: bool, seal: ChainHash, off: u64, next: u64) {
        let slot = off + FRAME_CHAIN_OFFSET as u64;
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
        } else if seal != self.prev {
            self.breaks.push(Break {
                finding: finding(
                    path,
                    slot,
                    format!(
                        "audit chain broken: the seal's chain slot holds {}, but the chain after the segment's last \
                         batch is {}; history differs from position {next} on",
                        hex(&seal),
                        hex(&self.prev)
                    ),
                ),
                affects: next.saturating_add(1),
            });
        }
    }
}
