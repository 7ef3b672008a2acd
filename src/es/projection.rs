//! Projections: folding the log into a read model, sequentially or in
//! parallel with rayon.
//!
//! A [`Projection`] folds records into a model ([`Projection::apply`]) and
//! combines the models of two adjacent parts of the log
//! ([`Projection::merge`]). [`LogView::rebuild`] folds the whole log in
//! position order; the parallel rebuilds fold parts of the log independently
//! and merge the parts' models:
//!
//! * [`LogView::par_rebuild`] cuts the log into chunks of about equal bytes,
//!   at batch boundaries taken from the segment indexes' frame lists (a chunk
//!   may span segments or split one), folds the chunks in parallel and merges
//!   their models in log order. Correct for every projection that obeys the
//!   laws of [`Projection`].
//! * [`LogView::par_rebuild_by_stream`] folds each stream's events (read
//!   through the stream indexes) into its own model, in parallel, and merges
//!   the models in stream-name order. Correct only for projections whose model
//!   is a function of each stream's events separately (see there).
//!
//! Every batch is validated, record CRCs included, before the rebuild returns,
//! exactly as [`LogView::read_all`] does; the first damage found is returned
//! as the error, and no partial model is returned.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Result, corrupt};
use crate::format::frame::FrameCursor;
use crate::format::meta::is_system_stream;
use crate::format::record::RecordRef;
use crate::format::{FRAME_FIRST_POSITION_OFFSET, SEGMENT_BASE_POSITION_OFFSET, SEGMENT_HEADER_LEN};
use crate::index::Index;
use crate::read::rules::Hide;
use crate::read::view::{LogView, ViewSegment};
use crate::storage::mmap::Readahead;
use crate::types::Direction;

/// A fold of records into a read model, mergeable so that parts of the log can
/// be folded in parallel.
///
/// Laws (for every model `a`, `b`, `c` and every list of records `xs`, `ys`):
///
/// * `merge(empty(), a) == a == merge(a, empty())`: [`empty`](Projection::empty)
///   is the identity of [`merge`](Projection::merge);
/// * `merge(merge(a, b), c) == merge(a, merge(b, c))`: `merge` is associative
///   (it need not be commutative);
/// * `fold(xs ++ ys) == merge(fold(xs), fold(ys))`, where `fold(xs)` applies
///   `xs` in order to `empty()`: folding two adjacent parts of the log
///   separately and merging gives the fold of the whole.
///
/// [`LogView::rebuild`] only uses `empty` and `apply`; [`LogView::par_rebuild`]
/// relies on the three laws and then returns exactly what `rebuild` returns.
/// [`LogView::par_rebuild_by_stream`] moreover needs the model to depend on
/// each stream's events separately (see there).
///
/// `apply` is called once per record, in the hot loop: it should not allocate
/// except when the model grows. It should have no effect outside the model:
/// the parallel rebuilds apply a batch's records as they check them, so when
/// a batch turns out damaged, `apply` has seen some of its (well-formed)
/// records before the error is returned and the model dropped.
///
/// # Example
///
/// Count the events of each type, sequentially and in parallel:
///
/// ```
/// # fn main() -> annal::Result<()> {
/// use std::collections::HashMap;
///
/// use annal::{EventData, ExpectedVersion, Log, Options, Projection, RecordRef};
///
/// struct CountByType;
///
/// impl Projection for CountByType {
///     type Model = HashMap<String, u64>;
///
///     fn empty(&self) -> Self::Model {
///         HashMap::new()
///     }
///
///     fn apply(&self, model: &mut Self::Model, record: &RecordRef<'_>) {
///         // Allocate only for a type not seen before.
///         match model.get_mut(record.event_type()) {
///             Some(n) => *n += 1,
///             None => {
///                 model.insert(record.event_type().to_owned(), 1);
///             }
///         }
///     }
///
///     fn merge(&self, mut earlier: Self::Model, later: Self::Model) -> Self::Model {
///         for (ty, n) in later {
///             *earlier.entry(ty).or_default() += n;
///         }
///         earlier
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path())?;
/// for i in 0..100u32 {
///     let ty = if i % 4 == 0 { "Shipped" } else { "Placed" };
///     log.append(&format!("order-{}", i % 7), ExpectedVersion::Any, &[EventData::new(ty, b"{}")])?;
/// }
/// let view = log.view()?;
/// let counts = view.rebuild(&CountByType)?;
/// assert_eq!(counts["Placed"], 75);
/// assert_eq!(counts["Shipped"], 25);
/// assert_eq!(view.par_rebuild(&CountByType)?, counts);
/// // Counting is separable by stream: each stream's counts add up.
/// assert_eq!(view.par_rebuild_by_stream(&CountByType)?, counts);
/// # Ok(()) }
/// ```
pub trait Projection: Sync {
    /// The read model.
    type Model: Send;

    /// The model before any event.
    fn empty(&self) -> Self::Model;

    /// Fold one record into the model. A record whose event names a
    /// subject arrives decrypted (spec 3.8): its payload and metadata are
    /// the event's.
    fn apply(&self, model: &mut Self::Model, record: &RecordRef<'_>);

    /// Fold a record whose subject was erased
    /// ([`Log::erase_subject`](crate::Log::erase_subject)) into the model,
    /// in place of [`apply`](Projection::apply): only its envelope is left
    /// (position, stream, version, type, time, id; payload and metadata are
    /// empty). The default ignores it.
    fn apply_erased(&self, model: &mut Self::Model, record: &RecordRef<'_>) {
        let _ = (model, record);
    }

    /// Combine the model of an earlier part of the log with that of the part
    /// right after it; must be associative, with [`empty`](Projection::empty)
    /// as identity.
    fn merge(&self, earlier: Self::Model, later: Self::Model) -> Self::Model;
}

/// A place in the log at a batch boundary: segment `seg` (or
/// `segments.len()`: the end of the log), frame offset `off` in it, and the
/// position of the frame's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    seg: usize,
    off: usize,
    pos: u64,
}

impl Cut {
    fn key(&self) -> (usize, usize) {
        (self.seg, self.off)
    }
}

impl LogView {
    /// Fold every visible record, in position order (a fold over
    /// [`LogView::read_all`]`(0)`), into `p`'s model.
    ///
    /// Returns the first damage met (a CRC mismatch, a broken frame) as the
    /// error.
    pub fn rebuild<P: Projection>(&self, p: &P) -> Result<P::Model> {
        let mut model = p.empty();
        for r in self.read_all(0) {
            self.fold_into(p, &mut model, &r?)?;
        }
        Ok(model)
    }

    /// Fold `r` into `model`: as it is, or unsealed (spec 3.8: decrypted
    /// for [`Projection::apply`], or erased for
    /// [`Projection::apply_erased`]).
    #[inline]
    pub(crate) fn fold_into<P: Projection>(&self, p: &P, model: &mut P::Model, r: &RecordRef<'_>) -> Result<()> {
        if !r.is_sealed() {
            p.apply(model, r);
            return Ok(());
        }
        let u = self.unseal(*r)?;
        if u.is_erased() {
            p.apply_erased(model, &u.record());
        } else {
            p.apply(model, &u.record());
        }
        Ok(())
    }

    /// [`LogView::rebuild`] in parallel over chunks of the log.
    ///
    /// The log is cut at batch boundaries (from the segment indexes' frame
    /// lists) into about `4 × rayon::current_num_threads()` chunks of roughly
    /// equal bytes, whatever the segment sizes: a chunk may span segment
    /// boundaries or split a segment. Each chunk is folded from
    /// [`Projection::empty`] on its own thread, validating every batch (record
    /// CRCs included) as [`LogView::read_all`] does, and the chunks' models are
    /// merged in log order with [`Projection::merge`].
    ///
    /// If `p` obeys the laws of [`Projection`], the result is exactly that of
    /// [`LogView::rebuild`]. Run it inside a `rayon::ThreadPool::install` to
    /// choose the pool.
    pub fn par_rebuild<P: Projection>(&self, p: &P) -> Result<P::Model> {
        self.par_rebuild_chunks(p, rayon::current_num_threads().saturating_mul(4))
    }

    /// [`LogView::par_rebuild`] with about `chunks` chunks (for tests and
    /// tuning).
    #[doc(hidden)]
    pub fn par_rebuild_chunks<P: Projection>(&self, p: &P, chunks: usize) -> Result<P::Model> {
        let cuts = self.cuts(chunks)?;
        let hide = self.hide(false)?;
        cuts.par_windows(2)
            .map(|w| self.fold_chunk(p, &w[0], &w[1], hide.as_ref()))
            .try_reduce(|| p.empty(), |a, b| Ok(p.merge(a, b)))
    }

    /// The chunks [`LogView::par_rebuild_chunks`] folds for `chunks`: per
    /// chunk, its range of positions and its size in bytes (for tests).
    #[doc(hidden)]
    pub fn chunk_bounds(&self, chunks: usize) -> Result<Vec<(Range<u64>, u64)>> {
        let cuts = self.cuts(chunks)?;
        let (starts, total) = self.segment_starts();
        let global = |c: &Cut| starts.get(c.seg).map_or(total, |s| s + c.off as u64);
        let end_pos = |c: &Cut| {
            if c.seg < self.segments.len() {
                c.pos
            } else {
                self.next_position()
            }
        };
        Ok(cuts
            .windows(2)
            .map(|w| (w[0].pos..end_pos(&w[1]), global(&w[1]) - global(&w[0])))
            .collect())
    }

    /// [`LogView::rebuild`] in parallel by stream: every stream's events (read
    /// with [`LogView::read_stream`], in version order) are folded into a model
    /// of their own, in parallel, and the streams' models are merged in the
    /// order of the stream names (sorted by bytes, as [`LogView::streams`]
    /// lists them).
    ///
    /// # Contract
    ///
    /// The result equals that of [`LogView::rebuild`] only if the model is a
    /// function of each stream's events separately: applying events of
    /// different streams in either order gives the same model, so that
    /// `rebuild(log) == merge(fold(stream s1), merge(fold(stream s2), ...))`.
    /// Equivalently, besides the laws of [`Projection`], `merge` must commute
    /// for models of different streams. Counts per stream or per event type,
    /// a per-stream state machine, the last event of each stream are such
    /// projections; anything that depends on the interleaving of streams (the
    /// global order of positions, "the last event of the log") is not, and
    /// must use [`LogView::par_rebuild`].
    ///
    /// Also checks that the streams hold every visible record (an error if
    /// the indexes and the log disagree).
    pub fn par_rebuild_by_stream<P: Projection>(&self, p: &P) -> Result<P::Model> {
        let streams = self.streams()?;
        let hide = self.hide(false)?;
        let (model, count) = streams
            .par_iter()
            .map(|s| self.fold_stream(p, s, hide.is_some()))
            .try_reduce(|| (p.empty(), 0), |a, b| Ok((p.merge(a.0, b.0), a.1 + b.1)))?;
        let want = self.event_count()?;
        if count != want
            && let Some(seg) = self.segments.last()
        {
            return Err(corrupt(
                &seg.path.with_extension("idx"),
                0,
                format!("the streams' indexes hold {count} events, but the log holds {want}"),
            ));
        }
        Ok(model)
    }

    /// Events in the view: its positions, less those compaction removed
    /// (spec 3.10: counted from the batch headers of compacted segments).
    fn event_count(&self) -> Result<u64> {
        let mut n = 0u64;
        for (i, s) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).map_or(self.next_position(), |x| x.base);
            if !s.layout.compacted {
                n += end.saturating_sub(s.base);
                continue;
            }
            let bytes = s.bytes()?;
            let rest = bytes.get(SEGMENT_HEADER_LEN..).unwrap_or_default();
            let mut frames = FrameCursor::new(rest, SEGMENT_HEADER_LEN as u64, s.base, false, s.layout);
            while let Some(f) = frames.peek() {
                let f = f.map_err(|d| d.at(&*s.path))?;
                if f.frame.kind == crate::format::FRAME_KIND_BATCH {
                    n += u64::from(f.frame.count);
                }
                frames.skip(&f);
            }
        }
        Ok(n)
    }

    /// The name of every stream with at least one visible event, sorted.
    ///
    /// Listed from the stream table (the sealed segments it covers) and the
    /// indexes of the other segments, without reading any event.
    pub fn streams(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        let mut from = 0;
        // The table is used only if every segment it covers is a sealed
        // segment of this view (a reader's view may lag behind the table).
        if let (Some(t), Some(last)) = (&self.table, self.segments.last())
            && t.next_segment() <= last.base
        {
            let rows: Option<Vec<String>> = t
                .rows()
                .map(|r| {
                    r.ok()
                        .and_then(|(_, n, _)| std::str::from_utf8(n).ok().map(str::to_owned))
                })
                .collect();
            // A damaged table is not trusted: every index is listed instead.
            if let Some(rows) = rows {
                names = rows;
                from = self.segments.partition_point(|s| s.base < t.next_segment());
            }
        }
        for seg in &self.segments[from..] {
            visible_stream_names(seg, &mut names)?;
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Fold one stream's events; also returns how many there were.
    /// Fold one stream's visible events; returns the model and the number
    /// of events the stream holds, hidden ones included (for the check that
    /// the streams hold every event). `rules`: the log has metadata (spec
    /// 3.7): system streams are not folded, and each stream's rules apply.
    fn fold_stream<P: Projection>(&self, p: &P, stream: &str, rules: bool) -> Result<(P::Model, u64)> {
        let mut model = p.empty();
        let mut n = 0;
        let system = rules && is_system_stream(stream);
        let visible = if rules && !system { self.visible(stream)? } else { None };
        for r in self.read_stream_raw(stream, 0, Direction::Forward, u64::MAX) {
            let r = r?;
            n += 1;
            if system || visible.is_some_and(|v| !v.shows(r.stream_version(), r.timestamp())) {
                continue;
            }
            self.fold_into(p, &mut model, &r)?;
        }
        Ok((model, n))
    }

    /// Byte offset of each segment in the concatenation of the view's
    /// segments, and the total.
    fn segment_starts(&self) -> (Vec<u64>, u64) {
        let mut starts = Vec::with_capacity(self.segments.len());
        let mut total = 0u64;
        for s in self.segments.iter() {
            starts.push(total);
            total += s.len();
        }
        (starts, total)
    }

    /// The start of segment `seg` (`segments.len()`: the end of the log).
    fn segment_start(&self, seg: usize) -> Cut {
        Cut {
            seg,
            off: SEGMENT_HEADER_LEN,
            pos: self.segments.get(seg).map_or(u64::MAX, |s| s.base),
        }
    }

    /// Cut the log at batch boundaries into about `chunks` parts of about
    /// equal bytes: the first cut is the start of the log, the last its end.
    fn cuts(&self, chunks: usize) -> Result<Vec<Cut>> {
        let Some(first) = self.segments.first() else {
            return Ok(Vec::new());
        };
        let n = chunks.max(1) as u128;
        let (starts, total) = self.segment_starts();
        let mut cuts = Vec::with_capacity(chunks.max(1) + 1);
        cuts.push(Cut {
            seg: 0,
            off: SEGMENT_HEADER_LEN,
            pos: first.base,
        });
        for k in 1..n {
            let target = (total as u128 * k / n) as u64;
            let s = starts.partition_point(|&st| st <= target).saturating_sub(1);
            let seg = &self.segments[s];
            let len = seg.len();
            let local = target - starts[s];
            // The first batch starting at or after `local` (and before the
            // visible end: the writer's active index may list later ones).
            let found = seg.with_index(|x| {
                let (mut lo, mut hi) = (0u32, x.frame_count());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if x.frame(mid)?.is_some_and(|f| f.1 < local) {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                Ok(x.frame(lo)?.filter(|f| f.1 < len))
            })?;
            let cut = match found {
                Some((pos, off)) => Cut {
                    seg: s,
                    off: off as usize,
                    pos,
                },
                None => self.segment_start(s + 1),
            };
            if cuts.last().is_none_or(|c: &Cut| c.key() < cut.key()) {
                cuts.push(cut);
            }
        }
        let end = self.segment_start(self.segments.len());
        if cuts.last().is_none_or(|c| c.key() < end.key()) {
            cuts.push(end);
        }
        Ok(cuts)
    }

    /// Fold the batches from cut `a` up to cut `b`, validating each one
    /// (structure, continuity of positions and record CRCs) as
    /// [`LogView::read_all`] does.
    fn fold_chunk<P: Projection>(&self, p: &P, a: &Cut, b: &Cut, hide: Option<&Hide>) -> Result<P::Model> {
        let mut model = p.empty();
        let (mut seg, mut off, mut pos) = (a.seg, a.off, a.pos);
        while (seg, off) < b.key() {
            let Some(s) = self.segments.get(seg) else { break };
            let bytes = s.bytes()?;
            let Some(rest) = bytes.get(off..).filter(|r| !r.is_empty()) else {
                seg += 1;
                off = SEGMENT_HEADER_LEN;
                if let Some(next) = self.segments.get(seg)
                    && next.base != pos
                {
                    return Err(corrupt(
                        &next.path,
                        SEGMENT_BASE_POSITION_OFFSET as u64,
                        format!(
                            "expected the segment to start at position {pos}, found base position {}",
                            next.base
                        ),
                    ));
                }
                continue;
            };
            // One pass: records are applied as they are checked. If a batch
            // turns out damaged, the error discards the whole model.
            let mut frames = FrameCursor::new(rest, off as u64, pos, true, s.layout);
            // The mapping is advised for random access (`storage::mmap`): it
            // is advised sequential while the chunk's cursor walks it.
            let mut ahead = Readahead::forward();
            let mut failed = None;
            while (seg, off) < b.key() {
                ahead.at(&s.map, off as u64);
                let Some(step) = frames.step_each(|_, r| {
                    if failed.is_none()
                        && hide.is_none_or(|h| !h.hides(&r))
                        && let Err(e) = self.fold_into(p, &mut model, &r)
                    {
                        failed = Some(e);
                    }
                }) else {
                    break;
                };
                step.map_err(|d| d.at(&*s.path))?;
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                // Bytes after a seal are damage of the seal's segment, even
                // where the chunk ends at the seal.
                if frames.sealed()
                    && let Some(Err(d)) = frames.peek()
                {
                    return Err(d.at(&*s.path));
                }
                off = frames.offset() as usize;
                pos = frames.next_position();
            }
        }
        if let Some(s) = self.segments.get(b.seg) {
            if (seg, off) != b.key() {
                return Err(corrupt(
                    &s.path,
                    b.off as u64,
                    format!(
                        "the index lists a batch at offset {}, but the frames run past it to offset {off}",
                        b.off
                    ),
                ));
            }
            // A compacted segment (spec 3.10) may skip positions before it.
            if pos != b.pos && !(s.layout.compacted && pos < b.pos) {
                return Err(corrupt(
                    &s.path,
                    b.off as u64 + FRAME_FIRST_POSITION_OFFSET as u64,
                    format!(
                        "expected a frame starting at position {pos}, but the index says {}",
                        b.pos
                    ),
                ));
            }
        }
        Ok(model)
    }
}

/// Push the names of the streams of `seg` that have a visible event (the
/// writer's in-memory index of the active segment also lists batches past a
/// view's visible end).
fn visible_stream_names(seg: &ViewSegment, names: &mut Vec<String>) -> Result<()> {
    let bytes = seg.bytes()?;
    let idx = seg.index.get(bytes)?;
    match &idx {
        Index::Mem(m) => {
            let len = bytes.len() as u64;
            let g = m.read().unwrap_or_else(|p| p.into_inner());
            names.extend(
                g.streams
                    .iter()
                    .filter(|(_, s)| s.entries.first().is_some_and(|e| e.1 < len))
                    .map(|(n, _)| n.to_string()),
            );
        }
        Index::Disk(_) => names.extend(seg.stream_rows(&idx)?.into_iter().map(|(n, _, _)| n.into_string())),
        Index::Layered(l) => names.extend(
            l.names_below(bytes.len() as u64)
                .map_err(|d| d.at(&*seg.path))?
                .into_iter()
                .map(String::from),
        ),
    }
    Ok(())
}
