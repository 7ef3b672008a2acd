//! The writer's side of the audit chain (spec 21): filling in the chain slot
//! of every frame the group-commit leader writes, and signing checkpoints.
//!
//! Hashing a batch costs about a third of what writing it costs, so for large
//! chunks the leader overlaps the two: a hasher thread computes the links
//! while the leader writes the chunk with every frame's magic zeroed, then the
//! leader fills in the chain slots and rewrites only the frame headers.
//!
//! Invariant: a frame is never in the file with a valid header but without
//! its chain. Until its header is rewritten, a frame has no magic, so to
//! recovery and readers it is an incomplete frame past the durable boundary
//! (the chunk is not synced before the headers are in): a crash between the
//! two writes leaves a torn tail, never a batch with a wrong chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerocopy::FromBytes;

use crate::audit::chain::{ChainHash, ChainKey, Chainer, SigningKey, fill_checkpoint};
use crate::format::frame::FrameCursor;
use crate::format::{
    FRAME_FLAG_CHAINED, FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, FRAME_KIND_BATCH, FRAME_KIND_CHECKPOINT, FRAME_MAGIC,
    FRAME_MAGIC_V3, FRAME_V3_MAGIC_OFFSET, FrameHeader, FrameHeaderV3, Layout,
};

/// Chunks at least this large, with frames of at least [`OVERLAP_MIN_FRAME`]
/// bytes on average, are hashed on the hasher thread while they are written.
const OVERLAP_MIN_CHUNK: usize = 16 << 10;
const OVERLAP_MIN_FRAME: usize = 8 << 10;
/// How long the hasher thread spins for its next job before it blocks.
const HASHER_SPIN: Duration = Duration::from_micros(200);

/// One frame of a chunk: where it is, its kind, and the chain hash its slot
/// must hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    offset: usize,
    len: usize,
    kind: u8,
    chain: ChainHash,
}

/// The links of every frame in `bytes` (whole frames as the writer encoded
/// them), continuing from `chain`, the hash after the batch that ends at
/// `position`. Returns the links and the chain hash and position after the
/// last batch. Reads only: the magic and chain slots are not hashed.
pub(crate) fn links(
    chainer: &Chainer<'_>,
    mut chain: ChainHash,
    mut position: u64,
    bytes: &[u8],
) -> (Vec<Link>, ChainHash, u64) {
    let mut out = Vec::new();
    let compact = chainer.compact();
    for (offset, len) in frames(bytes, compact) {
        let frame = &bytes[offset..offset + len];
        let Some(h) = fields(frame, compact) else {
            break;
        };
        if h.kind == FRAME_KIND_BATCH {
            chain = chainer.link(&chain, frame);
            position = h.next_position;
        }
        if h.slot {
            out.push(Link {
                offset,
                len,
                kind: h.kind,
                chain,
            });
        }
    }
    (out, chain, position)
}

/// What chaining needs of a frame header the writer encoded.
struct Fields {
    kind: u8,
    next_position: u64,
    /// The frame stores a chain slot (always in versions 1 and 2).
    slot: bool,
}

/// The [`Fields`] of the frame `frame` (whole, as encoded).
fn fields(frame: &[u8], compact: bool) -> Option<Fields> {
    if compact {
        let (h, _) = FrameHeaderV3::ref_from_prefix(frame).ok()?;
        Some(Fields {
            kind: h.kind,
            next_position: h.first_position.get() + u64::from(h.record_count.get()),
            slot: h.flags & FRAME_FLAG_CHAINED != 0,
        })
    } else {
        let (h, _) = FrameHeader::ref_from_prefix(frame).ok()?;
        Some(Fields {
            kind: h.kind,
            next_position: h.first_position.get() + u64::from(h.record_count.get()),
            slot: true,
        })
    }
}

/// `(offset, len)` of each frame in `bytes` (whole frames, as the writer
/// encoded them), from their headers' `frame_len`.
fn frames(bytes: &[u8], compact: bool) -> impl Iterator<Item = (usize, usize)> + '_ {
    let layout = if compact {
        Layout {
            version: 3,
            ..Layout::V2
        }
    } else {
        Layout::V2
    };
    FrameCursor::encoded_spans(bytes, layout)
}

/// The bytes of a frame's magic: hidden (zeroed) while the frame waits for
/// its chain slot.
fn magic_range(compact: bool) -> std::ops::Range<usize> {
    if compact {
        FRAME_V3_MAGIC_OFFSET..FRAME_V3_MAGIC_OFFSET + FRAME_MAGIC_V3.len()
    } else {
        0..FRAME_MAGIC.len()
    }
}

/// Fill in the chain slots (and checkpoint signatures) of the frames in
/// `bytes` that store one, restoring each such frame's magic.
fn apply(bytes: &mut [u8], links: &[Link], signer: Option<(&SigningKey, &[u8; 16])>, compact: bool) {
    for l in links {
        let Some(frame) = bytes.get_mut(l.offset..l.offset + l.len) else {
            continue;
        };
        if let Some(magic) = frame.get_mut(magic_range(compact)) {
            magic.copy_from_slice(if compact { &FRAME_MAGIC_V3[..] } else { &FRAME_MAGIC[..] });
        }
        let header_len = if compact {
            FRAME_HEADER_V3_LEN + crate::format::CHAIN_SLOT_LEN
        } else {
            FRAME_HEADER_LEN
        };
        if l.kind == FRAME_KIND_CHECKPOINT
            && let Some((key, log_id)) = signer
            && let Some(position) = fields(frame, compact).map(|f| f.next_position)
            && let Some(body) = frame.get_mut(header_len..)
        {
            fill_checkpoint(body, key, log_id, position, &l.chain);
        }
        if compact {
            FrameHeaderV3::set_chain(frame, &l.chain);
        } else {
            FrameHeader::set_chain(frame, &l.chain);
        }
    }
}

/// A hashing job: a chunk and the chain state before it.
struct Job {
    bytes: Arc<Vec<u8>>,
    chain: ChainHash,
    position: u64,
}

type Done = (Vec<Link>, ChainHash, u64);

/// What the leader and the hasher thread share. The leader offers a job; the
/// hasher takes it if it gets there first. If the leader finishes its write
/// and finds the job still on offer, it takes it back and hashes it itself,
/// so a hasher thread that is not scheduled (a busy machine) never makes the
/// leader wait: at worst the chunk is hashed on the leader's thread, as with
/// no hasher at all.
#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    /// A job is on offer (a hint for the hasher's polling).
    offered: AtomicBool,
    /// The hasher took a job and has not yet delivered its result.
    busy: AtomicBool,
    stop: AtomicBool,
}

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    done: Option<Done>,
}

/// The leader's handle on the hasher thread (owned with the writer's I/O
/// state, so only the leader uses it). Dropping it stops the thread.
pub(crate) struct HasherThread {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

impl std::fmt::Debug for HasherThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HasherThread")
    }
}

impl Drop for HasherThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

fn lock(m: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HasherThread {
    /// Start a hasher thread for a chain keyed with `key` (or plain), if the
    /// machine has a second core to run it on.
    pub(crate) fn start(key: Option<ChainKey>, layout: Layout) -> Option<HasherThread> {
        // Asked once per process: the answer reads cgroup files, which would
        // cost every open of a log about a tenth of a millisecond.
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        if *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) < 2 {
            return None;
        }
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("annal-hasher".into())
            .spawn(move || {
                let chainer = Chainer::new(key.as_ref()).for_layout(&layout);
                let mut spin = true;
                while let Some(job) = next_job(&s, &mut spin) {
                    let r = links(&chainer, job.chain, job.position, &job.bytes);
                    drop(job.bytes);
                    lock(&s.slot).done = Some(r);
                    s.busy.store(false, Ordering::Release);
                }
            })
            .ok()?;
        Some(HasherThread {
            shared,
            thread: handle.thread().clone(),
        })
    }

    fn offer(&self, job: Job) {
        let mut slot = lock(&self.shared.slot);
        slot.job = Some(job);
        slot.done = None;
        self.shared.offered.store(true, Ordering::Release);
        drop(slot);
        self.thread.unpark();
    }

    /// The result of the job offered last: hashed by the hasher thread, or
    /// taken back and hashed here if the hasher had not started it.
    fn collect(&self, chainer: &Chainer<'_>) -> Option<Done> {
        let job = {
            let mut slot = lock(&self.shared.slot);
            self.shared.offered.store(false, Ordering::Release);
            slot.job.take()
        };
        if let Some(job) = job {
            return Some(links(chainer, job.chain, job.position, &job.bytes));
        }
        // The hasher is on it (or done): it is running, so wait briefly.
        let start = Instant::now();
        while self.shared.busy.load(Ordering::Acquire) {
            if start.elapsed() < HASHER_SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        lock(&self.shared.slot).done.take()
    }
}

/// The next job: spin briefly (appends in a stream come every few tens of
/// microseconds, and waking a parked thread costs more), then park until the
/// leader offers one. `None` when the handle was dropped.
///
/// The spin is only worth it while jobs come within it: `spin` says whether
/// the last job came within [`HASHER_SPIN`] of the wait's start. When they
/// come further apart (appends that each wait for an fsync, or a paused
/// writer), the thread parks at once, so it does not take a core from the
/// rest of the process (a replicator, the caller's own threads) for nothing;
/// a job that comes quickly again turns the spin back on.
fn next_job(s: &Shared, spin: &mut bool) -> Option<Job> {
    let waited = Instant::now();
    let mut start = waited;
    loop {
        if s.stop.load(Ordering::Acquire) {
            return None;
        }
        if s.offered.load(Ordering::Acquire) {
            let mut slot = lock(&s.slot);
            s.offered.store(false, Ordering::Release);
            if let Some(job) = slot.job.take() {
                s.busy.store(true, Ordering::Release);
                *spin = waited.elapsed() < HASHER_SPIN;
                return Some(job);
            }
        }
        if *spin && start.elapsed() < HASHER_SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::park();
            start = Instant::now();
        }
    }
}

/// The chain state the leader carries from chunk to chunk.
pub(crate) struct ChainState<'a> {
    pub chainer: Chainer<'a>,
    pub signer: Option<(&'a SigningKey, &'a [u8; 16])>,
    pub chain: ChainHash,
    pub position: u64,
}

/// Write the chunk `bytes` with `write(offset in chunk, bytes)` (the caller
/// maps it to a file offset), chaining every frame: inline for small chunks,
/// overlapped with the write on `hasher` for large ones. Returns the chunk
/// (its buffer is reused) and leaves `state` after its last batch.
/// Whether `write_chained` would hash `bytes` on a hasher thread (a chunk
/// large enough, of frames large enough, to be worth overlapping): a
/// writer starts its hasher thread the first time one comes, not when the
/// log is opened.
pub(crate) fn wants_hasher(bytes: &[u8], compact: bool) -> bool {
    bytes.len() >= OVERLAP_MIN_CHUNK && worth_overlapping(bytes.len(), frames(bytes, compact).count())
}

/// Whether a chunk of `len` bytes in `frames` frames is hashed on the
/// hasher thread.
fn worth_overlapping(len: usize, frames: usize) -> bool {
    frames > 0 && len >= OVERLAP_MIN_CHUNK && len / frames >= OVERLAP_MIN_FRAME
}

pub(crate) fn write_chained<E>(
    state: &mut ChainState<'_>,
    hasher: Option<&HasherThread>,
    mut bytes: Vec<u8>,
    mut write: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let compact = state.chainer.compact();
    let spans: Vec<(usize, usize)> = frames(&bytes, compact).collect();
    let overlap = hasher.filter(|_| worth_overlapping(bytes.len(), spans.len()));
    let Some(h) = overlap else {
        let (l, chain, position) = links(&state.chainer, state.chain, state.position, &bytes);
        apply(&mut bytes, &l, state.signer, compact);
        write(0, &bytes)?;
        (state.chain, state.position) = (chain, position);
        return Ok(bytes);
    };
    // Hide every frame that stores a chain slot (no magic) until the slot is
    // filled in.
    for &(offset, len) in &spans {
        if fields(&bytes[offset..offset + len], compact).is_some_and(|f| f.slot) {
            bytes[offset..][magic_range(compact)].fill(0);
        }
    }
    let shared = Arc::new(bytes);
    h.offer(Job {
        bytes: shared.clone(),
        chain: state.chain,
        position: state.position,
    });
    let written = write(0, &shared);
    let result = h.collect(&state.chainer);
    let mut bytes = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
    let (l, chain, position) = match result {
        Some(r) => r,
        // The hasher thread is gone: hash here.
        None => links(&state.chainer, state.chain, state.position, &bytes),
    };
    written?;
    apply(&mut bytes, &l, state.signer, compact);
    for link in &l {
        // A checkpoint's body (signature) is written with its header.
        let len = if link.kind == FRAME_KIND_CHECKPOINT {
            link.len
        } else if compact {
            FRAME_HEADER_V3_LEN + crate::format::CHAIN_SLOT_LEN
        } else {
            FRAME_HEADER_LEN
        };
        write(link.offset, &bytes[link.offset..link.offset + len])?;
    }
    (state.chain, state.position) = (chain, position);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CHECKPOINT_BODY_LEN, CHECKPOINT_FRAME_LEN, FRAME_KIND_SEAL};
    use zerocopy::IntoBytes;

    /// A chunk of `n` batch frames of `len` bytes (records are opaque to the
    /// chain), then a checkpoint and a seal.
    fn chunk(n: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let h = FrameHeader::new(FRAME_KIND_BATCH, len as u64, 10 * i as u64, 10, 128);
            out.extend_from_slice(h.as_bytes());
            out.extend((FRAME_HEADER_LEN..len).map(|b| (b * 7 + i) as u8));
        }
        let cp = FrameHeader::new(
            FRAME_KIND_CHECKPOINT,
            CHECKPOINT_FRAME_LEN as u64,
            10 * n as u64,
            0,
            128,
        );
        out.extend_from_slice(cp.as_bytes());
        out.extend_from_slice(&[0; CHECKPOINT_BODY_LEN]);
        let seal = FrameHeader::new(FRAME_KIND_SEAL, 72, 10 * n as u64, 0, 128);
        out.extend_from_slice(seal.as_bytes());
        out
    }

    /// The chunk as chained, the writes made, the chain and position after.
    type Run = (Vec<u8>, Vec<(usize, Vec<u8>)>, ChainHash, u64);

    fn run(hasher: Option<&HasherThread>, bytes: Vec<u8>) -> Run {
        let key = SigningKey::from_bytes([1; 32]);
        let mut state = ChainState {
            chainer: Chainer::new(None),
            signer: Some((&key, &[2; 16])),
            chain: [3; 32],
            position: 0,
        };
        let mut writes = Vec::new();
        let out = write_chained::<()>(&mut state, hasher, bytes, |off, b| {
            writes.push((off, b.to_vec()));
            Ok(())
        })
        .unwrap();
        (out, writes, state.chain, state.position)
    }

    #[test]
    fn overlapped_hashing_gives_the_inline_result_and_hides_frames_until_chained() {
        let Some(h) = HasherThread::start(None, Layout::V2) else {
            return;
        };
        for round in 0..20 {
            let bytes = chunk(3, 24 << 10);
            let (inline, w1, c1, p1) = run(None, bytes.clone());
            let (overlap, w2, c2, p2) = run(Some(&h), bytes);
            assert_eq!(inline, overlap, "round {round}");
            assert_eq!((c1, p1), (c2, p2));
            assert_eq!(p1, 30);
            assert_eq!(w1.len(), 1, "inline: one write");
            // Overlapped: the chunk first, with no frame magic anywhere, then
            // each frame's header (the checkpoint with its signature).
            assert_eq!(w2.len(), 1 + 5);
            let first = &w2[0].1;
            for f in [0, 24 << 10, 48 << 10, 72 << 10, (72 << 10) + 176] {
                assert_ne!(first[f..f + 4], FRAME_MAGIC, "frame at {f} hidden");
            }
            let mut patched = first.clone();
            for (off, b) in &w2[1..] {
                patched[*off..*off + b.len()].copy_from_slice(b);
            }
            assert_eq!(patched, overlap, "the header writes complete the chunk");
        }
    }
}
