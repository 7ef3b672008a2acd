//! Signed checkpoints (spec 3.5, 21.5): a writer with a signing key writes
//! checkpoint frames every N events, before every seal and at close; each
//! signs the chain hash at its position; readers never see them; recovery
//! and reopening treat them like any frame.

mod common;

use std::fs;

use annal::{EventData, ExpectedVersion, Log, Options, PublicKey, SigningKey};
use common::{FrameAt, frames, read_all, scratch, segments, u64_at};

const CHECKPOINT: u8 = 3;

fn signer() -> SigningKey {
    SigningKey::from_bytes([0x5a; 32])
}

fn append_n(log: &Log, batches: u64, per_batch: usize) {
    for b in 0..batches {
        let payload = vec![b as u8; 40];
        let events: Vec<_> = (0..per_batch)
            .map(|_| EventData::new("Tick", payload.as_slice()))
            .collect();
        log.append(&format!("s-{}", b % 3), ExpectedVersion::Any, &events)
            .unwrap();
    }
}

/// Every checkpoint frame of every segment: (segment bytes, frame).
fn checkpoints(dir: &std::path::Path) -> Vec<(Vec<u8>, FrameAt)> {
    let mut out = Vec::new();
    for seg in segments(dir) {
        let bytes = fs::read(&seg).unwrap();
        for f in frames(&bytes) {
            if f.kind == CHECKPOINT {
                out.push((bytes.clone(), f));
            }
        }
    }
    out
}

fn verify(bytes: &[u8], f: &FrameAt, key: &PublicKey) -> bool {
    let o = f.offset as usize;
    let mut log_id = [0u8; 16];
    log_id.copy_from_slice(&bytes[16..32]);
    let mut chain = [0u8; 32];
    chain.copy_from_slice(&bytes[o + 40..o + 72]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&bytes[o + 104..o + 168]);
    assert_eq!(
        &bytes[o + 72..o + 104],
        &key.0,
        "the frame names the signer's public key"
    );
    key.verify(&log_id, u64_at(bytes, o + 16), &chain, &sig)
}

#[test]
fn checkpoints_are_signed_every_n_events_before_seals_and_at_close() {
    let dir = scratch();
    let opts = Options::default()
        .format_version(2)
        .segment_size(16 << 10)
        .signing_key(signer())
        .checkpoint_every(25);
    let log = Log::open_with(dir.path(), opts).unwrap();
    append_n(&log, 60, 4); // 240 events
    let anchor = log.anchor().unwrap();
    log.close().unwrap();

    let pk = signer().public_key();
    let cps = checkpoints(dir.path());
    assert!(cps.len() >= 240 / 28, "found {} checkpoints", cps.len());
    for (bytes, f) in &cps {
        assert!(verify(bytes, f, &pk), "checkpoint at {} verifies", f.offset);
    }
    // The last checkpoint (written at close) signs the head.
    let (bytes, last) = cps.last().unwrap();
    let o = last.offset as usize;
    assert_eq!(last.first_position, anchor.position);
    assert_eq!(&bytes[o + 40..o + 72], &anchor.hash);

    // Every sealed segment's last frame before its seal is a checkpoint.
    let segs = segments(dir.path());
    assert!(segs.len() >= 2, "small segments roll");
    for seg in &segs[..segs.len() - 1] {
        let fs_ = frames(&fs::read(seg).unwrap());
        let n = fs_.len();
        assert_eq!(fs_[n - 1].kind, 2, "{seg:?} ends with a seal");
        assert_eq!(fs_[n - 2].kind, CHECKPOINT, "{seg:?}: a checkpoint precedes the seal");
    }

    // Readers never see checkpoints: every event, in order, once.
    let log = Log::open_with(dir.path(), Options::default().format_version(2)).unwrap();
    let all = read_all(&log.view().unwrap(), 0).unwrap();
    assert_eq!(all.len(), 240);
    assert!(all.iter().enumerate().all(|(i, r)| r.position == i as u64));
    assert_eq!(log.anchor().unwrap(), anchor, "reopening continues from the same head");
    log.close().unwrap();
    let r = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
}

#[test]
fn reopening_with_or_without_the_key_keeps_every_checkpoint_valid() {
    let dir = scratch();
    let signed = Options::default()
        .format_version(2)
        .signing_key(signer())
        .checkpoint_every(4);
    let log = Log::open_with(dir.path(), signed.clone()).unwrap();
    append_n(&log, 3, 2);
    log.close().unwrap();
    let before = checkpoints(dir.path()).len();
    assert_eq!(before, 2, "one after 4 events, one at close");
    let log = Log::open_with(dir.path(), Options::default().format_version(2)).unwrap();
    append_n(&log, 3, 1);
    log.close().unwrap();
    assert_eq!(checkpoints(dir.path()).len(), before, "no key, no checkpoint");
    let log = Log::open_with(dir.path(), signed).unwrap();
    append_n(&log, 1, 3);
    log.close().unwrap();
    let pk = signer().public_key();
    let cps = checkpoints(dir.path());
    assert_eq!(cps.len(), before + 1);
    for (bytes, f) in &cps {
        assert!(verify(bytes, f, &pk));
    }
    let log = Log::open_with(dir.path(), Options::default().format_version(2)).unwrap();
    assert_eq!(read_all(&log.view().unwrap(), 0).unwrap().len(), 12);
}

#[test]
fn a_torn_checkpoint_is_cut_like_any_torn_frame() {
    let dir = scratch();
    let opts = Options::default()
        .format_version(2)
        .signing_key(signer())
        .checkpoint_every(2);
    let log = Log::open_with(dir.path(), opts).unwrap();
    append_n(&log, 2, 1); // the second batch is followed by a checkpoint
    let image = common::crash_image(dir.path());
    drop(log);
    let seg = segments(image.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let cp = *frames(&bytes).last().unwrap();
    assert_eq!(cp.kind, CHECKPOINT);
    // Power cut while the checkpoint was being written: half of it reached the disk.
    fs::write(&seg, &bytes[..cp.offset as usize + 100]).unwrap();
    let log = Log::open_with(image.path(), Options::default().format_version(2)).unwrap();
    let cut = log.recovery().truncated.clone().expect("the torn checkpoint is cut");
    assert_eq!(cut.offset, cp.offset);
    assert_eq!(read_all(&log.view().unwrap(), 0).unwrap().len(), 2, "both batches stay");
}

#[test]
fn signing_needs_a_chain() {
    let dir = scratch();
    let err = Log::open_with(
        dir.path(),
        Options::default().format_version(2).chain(false).signing_key(signer()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("audit chain"), "{err}");
}

/// Recompute every chain slot of a one-segment log after an edit, as a forger
/// without the signing key would (unkeyed BLAKE3, spec 21.2), fixing the
/// frame header CRCs.
fn rechain(seg: &mut [u8]) {
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&seg[56..88]);
    for f in frames(seg) {
        let o = f.offset as usize;
        if f.kind == 1 {
            let mut h = blake3::Hasher::new();
            h.update(&prev);
            h.update(&seg[o + 8..o + 40]);
            h.update(&seg[o + 72..o + f.len as usize]);
            prev = *h.finalize().as_bytes();
        }
        seg[o + 40..o + 72].copy_from_slice(&prev);
        common::fix_frame_header_crc(seg, o);
    }
}

fn problems(dir: &std::path::Path, pk: Option<PublicKey>) -> Vec<String> {
    let mut o = annal::CheckOptions::default();
    if let Some(k) = pk {
        o = o.public_key(k);
    }
    annal::check(dir, o)
        .unwrap()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn check_verifies_signatures_and_catches_a_consistent_rewrite() {
    let dir = scratch();
    let opts = Options::default()
        .format_version(2)
        .signing_key(signer())
        .checkpoint_every(6);
    let log = Log::open_with(dir.path(), opts).unwrap();
    append_n(&log, 10, 2); // checkpoints at 6, 12, 18 events and at close (20)
    let head = log.anchor().unwrap();
    log.close().unwrap();
    let pk = signer().public_key();

    let r = annal::check(dir.path(), annal::CheckOptions::default().public_key(pk)).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    let s = r.signatures.unwrap();
    assert_eq!(
        (s.verified, s.last_signed_position, s.unsigned_events),
        (4, Some(head.position), 0)
    );
    // Another key: every checkpoint is reported as signed by someone else.
    let other = SigningKey::from_bytes([9; 32]).public_key();
    let p = problems(dir.path(), Some(other));
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p.iter().all(|m| m.contains("not by the key given")), "{p:?}");

    // A forger edits event 7 (in the 4th batch), fixes its CRC and recomputes
    // the whole unkeyed chain: self-consistent, but the checkpoints after the
    // edit no longer verify, with the key given as with the key each
    // checkpoint names (issue 13, defect 4: a forger who does not sign is
    // caught without the public key too).
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let f = frames(&bytes)
        .into_iter()
        .find(|f| f.kind == 1 && f.first_position == 6)
        .unwrap();
    let rec = f.offset as usize + 72;
    let rec_len = common::u32_at(&bytes, rec) as usize;
    bytes[rec + rec_len - 9] ^= 0x40; // a payload byte (before the padding)
    let crc = crc32fast::hash(&bytes[rec + 8..rec + rec_len]);
    bytes[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    rechain(&mut bytes);
    fs::write(&seg, &bytes).unwrap();
    // The forger also deletes the derived files that no longer match (the
    // index checkpoints, spec 17.5).
    common::remove_checkpoints(dir.path());
    let p = problems(dir.path(), None);
    assert_eq!(p.len(), 3, "without a public key, the same three fail: {p:?}");
    assert!(
        p.iter()
            .all(|m| m.contains("does not verify against the public key the checkpoint names")),
        "{p:?}"
    );
    assert!(p[0].contains("position 12"), "{p:?}");
    let r = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    let note = r
        .signature_note
        .expect("a note on what a check without --public-key proves");
    assert!(note.contains("only --public-key proves who signed"), "{note}");
    let p = problems(dir.path(), Some(pk));
    assert_eq!(p.len(), 3, "the checkpoints at 12, 18 and 20 no longer verify: {p:?}");
    assert!(p.iter().all(|m| m.contains("does not verify")), "{p:?}");
    assert!(p[0].contains("position 12"), "{p:?}");
}

#[test]
fn an_altered_checkpoint_breaks_the_chain() {
    let dir = scratch();
    let log = Log::open_with(
        dir.path(),
        Options::default()
            .format_version(2)
            .signing_key(signer())
            .checkpoint_every(4),
    )
    .unwrap();
    append_n(&log, 4, 2);
    log.close().unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let cp = frames(&bytes).into_iter().find(|f| f.kind == CHECKPOINT).unwrap();
    let o = cp.offset as usize;
    bytes[o + 50] ^= 1;
    common::fix_frame_header_crc(&mut bytes, o);
    fs::write(&seg, &bytes).unwrap();
    let p = problems(dir.path(), None);
    // The chain slot no longer repeats the chain, and the signature (over
    // that chain hash) no longer verifies against the key it names.
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains(&format!("at byte {}", o + 40)) && m.contains("checkpoint was altered")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains(&format!("at byte {}", o + 104)) && m.contains("does not verify")),
        "{p:?}"
    );
}

/// Batches large enough for the writer to hash them on its hasher thread
/// while it writes them (see `chaining`): the chain and the signatures come
/// out the same as when hashed inline, across rolls and a reopen.
#[test]
fn large_batches_hashed_while_written_verify() {
    let dir = scratch();
    let opts = Options::default()
        .format_version(2)
        .segment_size(1 << 20)
        .signing_key(signer())
        .checkpoint_every(150);
    let payload = vec![0xabu8; 256];
    let events: Vec<_> = (0..100).map(|_| EventData::new("Big", payload.as_slice())).collect();
    for round in 0..2 {
        let log = Log::open_with(dir.path(), opts.clone()).unwrap();
        for i in 0..40 {
            log.append(&format!("big-{}", i % 7), ExpectedVersion::Any, &events)
                .unwrap();
        }
        let anchor = log.anchor().unwrap();
        log.close().unwrap();
        assert_eq!(anchor.position, (round + 1) * 4000);
        let r = annal::check(
            dir.path(),
            annal::CheckOptions::default()
                .public_key(signer().public_key())
                .anchor(anchor),
        )
        .unwrap();
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            matches!(r.chain, annal::ChainStatus::Verified { broken: 0, .. }),
            "{}",
            r.chain
        );
        assert!(r.signatures.unwrap().verified >= 20 * (round + 1));
    }
    assert!(segments(dir.path()).len() >= 3);
}

/// Events per stream, summed in any order (for the parallel rebuild).
struct CountByStream;

impl annal::Projection for CountByStream {
    type Model = std::collections::BTreeMap<String, u64>;
    fn empty(&self) -> Self::Model {
        Default::default()
    }
    fn apply(&self, model: &mut Self::Model, r: &annal::RecordRef<'_>) {
        *model.entry(r.stream().to_owned()).or_default() += 1;
    }
    fn merge(&self, mut earlier: Self::Model, later: Self::Model) -> Self::Model {
        for (k, n) in later {
            *earlier.entry(k).or_default() += n;
        }
        earlier
    }
}

/// Readers that walk frames (replay, backward reads, stream reads through
/// the indexes, parallel rebuilds cut at batch offsets) step over checkpoints.
#[test]
fn every_reader_steps_over_checkpoints() {
    let dir = scratch();
    let opts = Options::default()
        .format_version(2)
        .segment_size(8 << 10)
        .signing_key(signer())
        .checkpoint_every(3);
    let log = Log::open_with(dir.path(), opts).unwrap();
    append_n(&log, 90, 2);
    let view = log.view().unwrap();
    assert_eq!(read_all(&view, 0).unwrap().len(), 180);
    assert_eq!(read_all(&view, 77).unwrap().first().unwrap().position, 77);
    assert_eq!(view.read_all_backward(u64::MAX).count(), 180);
    let s1 = view.read_stream("s-1", 0, annal::Direction::Forward, u64::MAX);
    assert_eq!(
        s1.map(|r| r.unwrap().stream_version()).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    let seq = view.rebuild(&CountByStream).unwrap();
    assert_eq!(view.par_rebuild(&CountByStream).unwrap(), seq);
    assert_eq!(seq.values().sum::<u64>(), 180);
    drop(view);
    log.close().unwrap();
    assert!(checkpoints(dir.path()).len() >= 30);
}
