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
        .segment_size(16 << 10)
        .signing_key(signer())
        .checkpoint_every(25);
    let log = Log::open(dir.path(), opts).unwrap();
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
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let all = read_all(&log.view().unwrap(), 0).unwrap();
    assert_eq!(all.len(), 240);
    assert!(all.iter().enumerate().all(|(i, r)| r.position == i as u64));
    assert_eq!(log.anchor().unwrap(), anchor, "reopening continues from the same head");
    log.close().unwrap();
    assert!(
        annal::check(dir.path(), annal::CheckOptions::default())
            .unwrap()
            .is_ok()
    );
}

#[test]
fn reopening_with_or_without_the_key_keeps_every_checkpoint_valid() {
    let dir = scratch();
    let signed = Options::default().signing_key(signer()).checkpoint_every(4);
    let log = Log::open(dir.path(), signed.clone()).unwrap();
    append_n(&log, 3, 2);
    log.close().unwrap();
    let before = checkpoints(dir.path()).len();
    assert_eq!(before, 2, "one after 4 events, one at close");
    let log = Log::open(dir.path(), Options::default()).unwrap();
    append_n(&log, 3, 1);
    log.close().unwrap();
    assert_eq!(checkpoints(dir.path()).len(), before, "no key, no checkpoint");
    let log = Log::open(dir.path(), signed).unwrap();
    append_n(&log, 1, 3);
    log.close().unwrap();
    let pk = signer().public_key();
    let cps = checkpoints(dir.path());
    assert_eq!(cps.len(), before + 1);
    for (bytes, f) in &cps {
        assert!(verify(bytes, f, &pk));
    }
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(read_all(&log.view().unwrap(), 0).unwrap().len(), 12);
}

#[test]
fn a_torn_checkpoint_is_cut_like_any_torn_frame() {
    let dir = scratch();
    let opts = Options::default().signing_key(signer()).checkpoint_every(2);
    let log = Log::open(dir.path(), opts).unwrap();
    append_n(&log, 2, 1); // the second batch is followed by a checkpoint
    let image = common::crash_image(dir.path());
    drop(log);
    let seg = segments(image.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let cp = *frames(&bytes).last().unwrap();
    assert_eq!(cp.kind, CHECKPOINT);
    // Power cut while the checkpoint was being written: half of it reached the disk.
    fs::write(&seg, &bytes[..cp.offset as usize + 100]).unwrap();
    let log = Log::open(image.path(), Options::default()).unwrap();
    let cut = log.recovery().truncated.clone().expect("the torn checkpoint is cut");
    assert_eq!(cut.offset, cp.offset);
    assert_eq!(read_all(&log.view().unwrap(), 0).unwrap().len(), 2, "both batches stay");
}

#[test]
fn signing_needs_a_chain() {
    let dir = scratch();
    let err = Log::open(dir.path(), Options::default().chain(false).signing_key(signer())).unwrap_err();
    assert!(err.to_string().contains("audit chain"), "{err}");
}
