//! The head of a log's audit chain read from its files (spec 21), for an
//! auditor who takes anchors while a writer runs: [`head_anchor`] and
//! [`chain_head`].
//!
//! Read-only and lock-free: it goes through [`Reader::view`], so it sees what
//! readers see (up to the head file's `visible_end`), never takes the writer
//! lock and works while a writer appends. Cost: the reader's view (the active
//! segment's visible bytes validated, each sealed segment's seal read), then a
//! walk over the frame headers of the last segment only.

use std::path::Path;

use crate::audit::chain::{Anchor, ChainHash, Chainer};
use crate::error::{Error, Result};
use crate::format::frame::FrameCursor;
use crate::format::{FRAME_KIND_BATCH, LogFormat, SegmentHeader};
use crate::read::view::Reader;

/// The head of a log's audit chain and what the log says about its chain:
/// what [`chain_head`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainHead {
    /// The position after the last visible batch and the chain hash there.
    pub anchor: Anchor,
    /// The chain is keyed (spec 21.4): verifying it needs the key.
    pub keyed: bool,
    /// The log's id (from its segment headers).
    pub log_id: [u8; 16],
}

/// The anchor at the head of the log in `dir`: the position after the last
/// visible batch and the chain hash stored with that batch (or the chain
/// hash before the last segment's first batch if it holds none: the genesis
/// hash for an empty log). `None` if the log has no audit chain.
///
/// Read-only: it never takes the writer lock, and works while a writer
/// appends (it sees what a [`Reader`] sees). It does not read the whole log:
/// only the visible part of the last segment is read and validated.
///
/// Errors: [`Error::NotALog`] if `dir` holds no log; [`Error::Corrupt`] for
/// damage a reader would report; [`Error::Io`].
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use annal::{EventData, ExpectedVersion, Log, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// log.append("order-1", ExpectedVersion::NoStream, &[EventData::new("Placed", b"{}")])?;
/// log.sync()?;
/// let anchor = annal::head_anchor(dir.path())?.expect("new logs carry the chain");
/// assert_eq!(anchor.position, 1);
/// assert_eq!(Some(anchor), log.anchor());
/// log.close()?;
/// # Ok(()) }
/// ```
pub fn head_anchor(dir: &Path) -> Result<Option<Anchor>> {
    Ok(chain_head(dir)?.map(|h| h.anchor))
}

/// [`head_anchor`], with whether the chain is keyed and the log's id.
pub fn chain_head(dir: &Path) -> Result<Option<ChainHead>> {
    let view = Reader::open(dir)?.view()?;
    // The last segment only (`segment_bytes().last()` would map them all).
    let Some(bytes) = view.last_segment_bytes().transpose()? else {
        return Err(Error::NotALog {
            path: dir.to_owned(),
            detail: "it holds no visible segment".into(),
        });
    };
    // The reader validated the header and every frame of these bytes.
    let seg_path = view.last_segment_path().unwrap_or(dir);
    let header = SegmentHeader::parse(bytes).map_err(|d| d.at(seg_path))?;
    let format = LogFormat::of(header);
    if !format.chained() {
        return Ok(None);
    }
    let (position, hash) = last_chain(bytes, header, view.next_position(), format.keyed());
    Ok(Some(ChainHead {
        anchor: Anchor { position, hash },
        keyed: format.keyed(),
        log_id: header.log_id,
    }))
}

/// The anchor after the last batch among the frames of `segment` (a
/// segment's bytes whose frames are all complete, ending at position
/// `end`): the chain slot stored with that batch (or the header's
/// `chain_start` if it holds no batch). Walks frame headers only (the reader
/// validated the bodies), stopping at the first frame that does not check.
///
/// Version 3 stores a slot in some batches only (spec 3.6): the batches after
/// the last stored slot are linked here, which needs no key in a plain log;
/// in a keyed log (no key given) the anchor is the one at the last stored
/// slot, an earlier batch boundary.
fn last_chain(segment: &[u8], header: &SegmentHeader, end: u64, keyed: bool) -> (u64, ChainHash) {
    let mut at = (header.base_position.get(), header.chain_start);
    let mut unlinked: Vec<&[u8]> = Vec::new();
    let mut frames = FrameCursor::segment(segment, header, false);
    while let Some(Ok(f)) = frames.peek() {
        if f.frame.kind == FRAME_KIND_BATCH {
            match f.chain() {
                Some(c) => {
                    at = (f.frame.next_position(), c);
                    unlinked.clear();
                }
                None => unlinked.push(f.bytes),
            }
        }
        frames.skip(&f);
    }
    if unlinked.is_empty() || keyed {
        return if unlinked.is_empty() { (end, at.1) } else { at };
    }
    let chainer = Chainer::new(None).for_layout(frames.layout());
    let hash = unlinked.iter().fold(at.1, |c, frame| chainer.link(&c, frame));
    (end, hash)
}
