//! Sealed segments kept outside the log directory (spec 23.7): in an object
//! store, read through a [`ColdTier`] that lists them, reads byte ranges of
//! them and fetches them whole into a bounded local cache on first use.
//!
//! A [`ColdFront`] puts them in front of the segments of a log directory:
//! the segments of a remote reader's partial copy, or those that local
//! retention removed from a log that ships to a store. A view then reads
//! them exactly as local sealed segments: each is opened by checking its
//! header and its seal (two ranged reads, no download); its index file is
//! fetched when a view first looks something up in it (checked against the
//! segment's length and seal, as a local one), and the segment itself when
//! a view first reads its records (the whole object, fetched into the cache
//! and checked against the manifest's length and BLAKE3 by the tier, then
//! against the header and seal it was opened from); every record is checked
//! as local ones are (CRC, chain).
//!
//! Invariants: the cold segments of a view are contiguous in position and
//! end where the directory's first segment starts, or the view is an error
//! naming the object that does not fit; the front keeps no mapping of a
//! segment (each view maps what it reads, which pins the cache's copy while
//! the view lives, and the cache may remove any copy no view holds) but
//! keeps the index cells it opened (the newest, within a budget), which
//! never change: the objects are immutable and named by their content. The
//! front asks the store only when its list does not fit the directory, and
//! not again for the same directory before a back-off; a store that cannot
//! be reached leaves the view local (with the segments the front opened
//! before, if they still fit), never fails a local read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::frame::seal_crc_in_tail;
use crate::format::{FRAME_HEADER_LEN, Layout, SEGMENT_HEADER_LEN};
use crate::index::IndexCell;
use crate::read::budget::max_mapped;
use crate::read::logview::ViewSegment;
use crate::read::sealed::{check_seal, parse_segment_header};
use crate::storage::mmap::{Fetch, Mapping};

mod asking;
mod checked;

use asking::Asking;
use checked::CheckedFetch;

/// The first back-off after the store failed, or after a refresh of the
/// list did not fit the directory: no request to the store before it
/// passed (for the same directory). Doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A sealed segment a [`ColdTier`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColdSegment {
    /// Its first position.
    pub base: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The object holding it (the remote log's URL and the object's name):
    /// names it in messages, and tells a rewritten segment (compaction)
    /// from the one it replaced, since objects are named by their content.
    pub name: PathBuf,
    /// The object holding its index file, named as [`ColdSegment::name`]
    /// (`None`: the store holds none, and the index is rebuilt from the
    /// segment).
    pub index: Option<PathBuf>,
    /// The length of the index object (0 if none).
    pub index_len: u64,
}

/// Sealed segments kept outside the log directory.
pub(crate) trait ColdTier: Send + Sync + std::fmt::Debug {
    /// The sealed segments it holds, in log order, as last learned (`None`:
    /// never learned; [`ColdTier::refresh`] learns them). Asks nothing of
    /// the store.
    fn segments(&self) -> Option<Arc<[ColdSegment]>>;

    /// The bytes `range` of each segment asked for (ranged reads, which
    /// may run at once), in the order asked: each exactly the range's
    /// length, or an error naming the object.
    fn read_ranges(&self, asks: &[(ColdSegment, Range<u64>)]) -> Result<Vec<Vec<u8>>>;

    /// What fetches `seg` into the local cache when a view first reads its
    /// records.
    fn fetcher(&self, seg: &ColdSegment) -> Arc<dyn Fetch>;

    /// What fetches the index file of `seg` into the local cache when a
    /// view first looks something up in it (`None`: the store holds none).
    fn index_fetcher(&self, seg: &ColdSegment) -> Option<Arc<dyn Fetch>>;

    /// Learn again which segments the store holds (the newest manifest).
    fn refresh(&self) -> Result<()>;

    /// Bytes of index files a [`ColdFront`] may keep open (and so held in
    /// the tier's cache) between views.
    fn index_budget(&self) -> u64;
}

/// A clock, for the back-off (tests set their own).
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The cold segments in front of a log directory's, opened once each.
pub(crate) struct ColdFront {
    tier: Arc<dyn ColdTier>,
    /// Segments opened so far, by base. Their index cells are one run:
    /// they share what streams are known absent from them (see
    /// `LogView::search_front`).
    opened: BTreeMap<u64, Opened>,
    /// When the front asks the store (boxed: a `Reader` holding a front
    /// stays small).
    asking: Box<Asking>,
}

impl std::fmt::Debug for ColdFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdFront")
            .field("tier", &self.tier)
            .field("opened", &self.opened.len())
            .field("asking", &self.asking)
            .finish_non_exhaustive()
    }
}

/// One segment the front opened.
#[derive(Debug)]
struct Opened {
    seg: ColdSegment,
    /// The segment as views see it; its mapping is never handed out (each
    /// view gets a fresh one), its index cell is.
    view: ViewSegment,
    /// The position after it (its seal's).
    next: u64,
}

/// What the front's list says of the segments below a directory's first.
enum Assembled {
    /// They fit: contiguous, ending at the directory's first segment.
    Fit(Vec<ViewSegment>),
    /// The store holds nothing below, and never will: its segments start
    /// at or above the directory's first.
    Settled,
    /// They do not fit (the list is older than the directory, or the store
    /// has a gap): the error naming the object, or `None` if the list is
    /// empty.
    Misfit(Option<Error>),
    /// Segments the front has not opened are needed, and the store cannot
    /// be asked, or failed (the error).
    Unreachable(Option<Error>),
}

/// Whether `e` is a failure of the store (a request that failed, an object
/// that is missing or not what the manifest says), not damage of a segment.
fn store_failure(e: &Error) -> bool {
    matches!(e, Error::Remote { .. } | Error::Io { .. })
}

impl ColdFront {
    /// A front of the segments `tier` holds.
    pub(crate) fn new(tier: Arc<dyn ColdTier>) -> ColdFront {
        ColdFront {
            tier,
            opened: BTreeMap::new(),
            asking: Box::new(Asking {
                clock: Arc::new(Instant::now),
                refreshed_for: None,
                quiet_until: None,
                backoff: Duration::ZERO,
                unreachable: false,
                settled: None,
            }),
        }
    }

    /// The front, measuring its back-off by `clock`.
    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> ColdFront {
        self.asking.clock = clock;
        self
    }

    /// The tier's segments below `first` (where the directory's first
    /// segment starts; `None`: the directory holds none), opened (header
    /// and seal checked, the header naming the log `log_id`; nothing
    /// mapped), in log order, contiguous, the last ending at `first`.
    ///
    /// The tier's list is taken as it is when it fits (no request); else
    /// the newest manifest is taken once, and if the segments still do not
    /// fit, the result is an error naming the object, the same for every
    /// view (no request) until the directory changes or a back-off passed.
    /// A store that holds nothing below `first` is asked once. A store that
    /// cannot be reached makes the result what the front opened before, if
    /// it still fits, else empty (the view is the directory's alone): not
    /// an error, and no request until a back-off passed; a read of a
    /// segment then fetched is an error naming its object.
    pub(crate) fn below(&mut self, first: Option<u64>, log_id: [u8; 16]) -> Result<Vec<ViewSegment>> {
        if first == Some(0) || (first.is_some() && self.asking.settled == first) {
            return Ok(Vec::new());
        }
        let now = (self.asking.clock)();
        let may_ask = self.asking.may_ask(now, first);
        let listed = match self.tier.segments() {
            Some(list) => self.assemble(&list, first, log_id, self.asking.may_read(now))?,
            None => Assembled::Misfit(None),
        };
        let misfit = match listed {
            Assembled::Fit(v) => return Ok(v),
            Assembled::Settled => return Ok(self.settle(first)),
            Assembled::Unreachable(e) => return Ok(self.unreachable(now, e)),
            Assembled::Misfit(e) => e,
        };
        if !may_ask {
            // Asked for this directory already (or the store is down):
            // the same answer until the back-off passed.
            return match misfit {
                Some(e) if !self.asking.unreachable => Err(e),
                _ => Ok(Vec::new()),
            };
        }
        self.asking.refreshed_for = Some(first);
        if let Err(e) = self.tier.refresh() {
            return match store_failure(&e) {
                true => Ok(self.unreachable(now, Some(e))),
                false => Err(e),
            };
        }
        let list = self.tier.segments().unwrap_or_else(|| Arc::from(Vec::new()));
        match self.assemble(&list, first, log_id, true)? {
            Assembled::Fit(v) => {
                self.asking.reached();
                Ok(v)
            }
            Assembled::Settled => {
                self.asking.reached();
                Ok(self.settle(first))
            }
            Assembled::Unreachable(e) => Ok(self.unreachable(now, e)),
            Assembled::Misfit(e) => {
                self.asking.back_off(now, false);
                match e {
                    Some(e) => Err(e),
                    None => Ok(Vec::new()),
                }
            }
        }
    }

    /// The store holds nothing below `first`, for good.
    fn settle(&mut self, first: Option<u64>) -> Vec<ViewSegment> {
        if first.is_some() {
            self.asking.settled = first;
        }
        Vec::new()
    }

    /// The store cannot be reached (`e`: what failed): back off, and show
    /// the directory alone.
    fn unreachable(&mut self, now: Instant, e: Option<Error>) -> Vec<ViewSegment> {
        if let Some(e) = e {
            self.asking.back_off(now, true);
            crate::trace::event!(WARN, error = %e,
                "annal cannot reach the store holding the segments below the log directory's; views show the \
                 directory alone until it answers");
            let _ = e;
        }
        Vec::new()
    }

    /// The segments of `list` below `first`, opened (those the front has
    /// not opened yet by ranged reads, if `may_read`), checked to fit.
    fn assemble(
        &mut self,
        list: &[ColdSegment],
        first: Option<u64>,
        log_id: [u8; 16],
        may_read: bool,
    ) -> Result<Assembled> {
        let below = first.map_or(list.len(), |f| list.partition_point(|s| s.base < f));
        let wanted = list.get(..below).unwrap_or_default();
        if wanted.is_empty() {
            return Ok(match list.is_empty() {
                true => Assembled::Misfit(None),
                false => Assembled::Settled,
            });
        }
        // Keep what was opened of the same objects; open the others.
        let mut kept = BTreeMap::new();
        let mut new = Vec::new();
        for w in wanted {
            match self.opened.remove(&w.base) {
                Some(o) if o.seg == *w => {
                    kept.insert(w.base, o);
                }
                _ => new.push(w.clone()),
            }
        }
        self.opened = kept;
        if !new.is_empty() {
            if !may_read {
                return Ok(Assembled::Unreachable(None));
            }
            match self.open(&new, log_id) {
                Ok(()) => self.asking.reached(),
                Err(e) if store_failure(&e) => return Ok(Assembled::Unreachable(Some(e))),
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::with_capacity(self.opened.len());
        let mut expected: Option<u64> = None;
        for o in self.opened.values() {
            if let Some(e) = expected
                && o.seg.base != e
            {
                return Ok(Assembled::Misfit(Some(Error::Corrupt {
                    path: o.seg.name.clone(),
                    offset: crate::format::SEGMENT_BASE_POSITION_OFFSET as u64,
                    detail: format!(
                        "expected a segment starting at position {e}, found {} (the store's segments have a gap)",
                        o.seg.base
                    ),
                })));
            }
            expected = Some(o.next);
            // The view maps (and so pins in the cache) what it reads, for
            // as long as it lives; the front's own mapping stays unmapped.
            let mut vs = o.view.clone();
            if let Some(fresh) = vs.map.fresh() {
                vs.map = Arc::new(fresh);
            }
            out.push(vs);
        }
        if let (Some(first), Some(end), Some(last)) = (first, expected, self.opened.values().next_back())
            && end != first
        {
            return Ok(Assembled::Misfit(Some(Error::Corrupt {
                path: last.seg.name.clone(),
                offset: last.seg.len,
                detail: format!(
                    "expected the store's segments below the log directory's to end at position {first}, where \
                     its first segment starts; they end at {end}"
                ),
            })));
        }
        self.trim_indexes();
        Ok(Assembled::Fit(out))
    }

    /// Keep at most [`max_mapped`] index cells open, of at most the tier's
    /// [`ColdTier::index_budget`] bytes: let go of those of the oldest
    /// segments beyond (views that hold them keep them).
    fn trim_indexes(&mut self) {
        let (max, budget) = (max_mapped(), self.tier.index_budget());
        let (mut count, mut bytes) = (0usize, 0u64);
        for o in self.opened.values_mut().rev() {
            if !o.view.index.is_open() {
                continue;
            }
            count += 1;
            bytes = bytes.saturating_add(o.seg.index_len);
            if count > max || bytes > budget {
                o.view.index = Arc::new(o.view.index.fresh());
            }
        }
    }

    /// Open `segs`: their headers and seals, read by ranged reads all at
    /// once.
    fn open(&mut self, segs: &[ColdSegment], log_id: [u8; 16]) -> Result<()> {
        let mut asks = Vec::with_capacity(segs.len() * 2);
        for s in segs {
            let (head, tail) = ends(s.len);
            asks.push((s.clone(), head));
            asks.push((s.clone(), tail));
        }
        let got = self.tier.read_ranges(&asks)?;
        for (s, bytes) in segs.iter().zip(got.chunks(2)) {
            let [head, tail] = bytes else {
                return Err(Error::Corrupt {
                    path: s.name.clone(),
                    offset: 0,
                    detail: "expected its header and its end from the store, found fewer ranges".into(),
                });
            };
            let header = parse_segment_header(head, &s.name, s.base)?;
            if header.log_id != log_id {
                return Err(Error::Corrupt {
                    path: s.name.clone(),
                    offset: std::mem::offset_of!(crate::format::SegmentHeader, log_id) as u64,
                    detail: format!(
                        "expected log id {} (the log directory's), found {}: the store holds another log",
                        crate::audit::chain::hex(&log_id),
                        crate::audit::chain::hex(&header.log_id)
                    ),
                });
            }
            let layout = Layout::of(&header);
            let seal = check_seal(s.len, tail, &layout, &s.name)?;
            // The index is opened without the segment: what it must
            // describe is known from the seal. Without an index object,
            // it is built from the segment.
            let index = match (self.tier.index_fetcher(s), &s.index, seal_crc_in_tail(tail, &layout)) {
                (Some(fetch), Some(name), Some(crc)) => {
                    IndexCell::fetched(s.base, name.clone(), s.name.clone(), fetch, s.len, crc)
                }
                _ => IndexCell::unindexed(s.base, s.name.clone()),
            };
            let fetch = Arc::new(CheckedFetch {
                inner: self.tier.fetcher(s),
                name: s.name.clone(),
                len: s.len,
                head: head.clone(),
                tail: tail.clone(),
            });
            // One run with the segments opened before (or the first).
            let run = self.opened.values().next().map(|o| o.view.index.clone());
            let view = ViewSegment {
                base: s.base,
                map: Arc::new(Mapping::fetched(fetch, s.len)),
                path: Arc::new(s.name.clone()),
                index: Arc::new(index.in_run_of(run.as_deref())),
                layout,
            };
            self.opened.insert(
                s.base,
                Opened {
                    seg: s.clone(),
                    view,
                    next: seal.first_position,
                },
            );
        }
        Ok(())
    }
}

/// The byte ranges that open a segment of `len` bytes (spec 23.7, step 2):
/// its header, `[0, min(len, 128))`, and its last `min(len - 128, 72)`
/// bytes, which end with its seal (72 bytes in format versions 1 and 2,
/// 64 or 32 in later ones: the longest is read, and the seal is taken from
/// its end).
fn ends(len: u64) -> (Range<u64>, Range<u64>) {
    let header = SEGMENT_HEADER_LEN as u64;
    let tail = len.saturating_sub(header).min(FRAME_HEADER_LEN as u64);
    (0..len.min(header), len - tail..len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::segment_file_name;
    use crate::read::logview::LogView;
    use crate::storage::mmap::Fetched;
    use crate::types::Direction;
    use crate::{EventData, ExpectedVersion, StreamPosition};
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    /// What the store was asked.
    #[derive(Debug, Default)]
    struct Counts {
        refreshes: AtomicU64,
        ranges: AtomicU64,
        segment_fetches: AtomicU64,
        index_fetches: AtomicU64,
    }

    /// A store over the segment files of a log directory, which counts
    /// what it is asked and can be down.
    #[derive(Debug)]
    struct Store {
        dir: PathBuf,
        /// What it holds.
        holds: Vec<ColdSegment>,
        /// What the tier learned of it.
        learned: Mutex<Option<Arc<[ColdSegment]>>>,
        down: Arc<AtomicBool>,
        counts: Arc<Counts>,
        /// Segments whose fetched copy is this file instead.
        swapped: Mutex<Vec<(u64, PathBuf)>>,
    }

    fn name(base: u64, ext: &str) -> PathBuf {
        PathBuf::from(format!("mem://t/segments/{base:020}.{ext}"))
    }

    fn down_error(object: &str) -> Error {
        Error::Remote {
            object: object.into(),
            detail: "the store is down".into(),
        }
    }

    impl Store {
        /// A store holding the segments of `dir` based at `bases`, without
        /// an index object for those in `unindexed`.
        fn new(dir: &Path, bases: &[u64], unindexed: &[u64]) -> Arc<Store> {
            let holds = bases
                .iter()
                .map(|&b| {
                    let idx = dir.join(crate::format::names::index_file_name(b));
                    let indexed = !unindexed.contains(&b) && idx.exists();
                    ColdSegment {
                        base: b,
                        len: std::fs::metadata(dir.join(segment_file_name(b))).unwrap().len(),
                        name: name(b, "seg"),
                        index: indexed.then(|| name(b, "idx")),
                        index_len: if indexed {
                            std::fs::metadata(&idx).unwrap().len()
                        } else {
                            0
                        },
                    }
                })
                .collect();
            Arc::new(Store {
                dir: dir.to_owned(),
                holds,
                learned: Mutex::new(None),
                down: Arc::new(AtomicBool::new(false)),
                counts: Arc::new(Counts::default()),
                swapped: Mutex::new(Vec::new()),
            })
        }

        fn file_fetch(&self, path: PathBuf, counter: fn(&Counts) -> &AtomicU64, object: PathBuf) -> Arc<dyn Fetch> {
            Arc::new(FileFetch {
                path,
                object,
                down: self.down.clone(),
                counts: self.counts.clone(),
                counter,
            })
        }
    }

    impl ColdTier for Store {
        fn segments(&self) -> Option<Arc<[ColdSegment]>> {
            self.learned.lock().unwrap().clone()
        }

        fn read_ranges(&self, asks: &[(ColdSegment, Range<u64>)]) -> Result<Vec<Vec<u8>>> {
            let mut out = Vec::new();
            for (seg, range) in asks {
                self.counts.ranges.fetch_add(1, SeqCst);
                if self.down.load(SeqCst) {
                    return Err(down_error(&seg.name.display().to_string()));
                }
                let bytes = std::fs::read(self.dir.join(segment_file_name(seg.base))).unwrap();
                out.push(bytes[range.start as usize..range.end as usize].to_vec());
            }
            Ok(out)
        }

        fn fetcher(&self, seg: &ColdSegment) -> Arc<dyn Fetch> {
            let swapped = self
                .swapped
                .lock()
                .unwrap()
                .iter()
                .find(|(b, _)| *b == seg.base)
                .map(|x| x.1.clone());
            let path = swapped.unwrap_or_else(|| self.dir.join(segment_file_name(seg.base)));
            self.file_fetch(path, |c| &c.segment_fetches, seg.name.clone())
        }

        fn index_fetcher(&self, seg: &ColdSegment) -> Option<Arc<dyn Fetch>> {
            let path = self.dir.join(crate::format::names::index_file_name(seg.base));
            Some(self.file_fetch(path, |c| &c.index_fetches, seg.index.clone()?))
        }

        fn refresh(&self) -> Result<()> {
            self.counts.refreshes.fetch_add(1, SeqCst);
            if self.down.load(SeqCst) {
                return Err(down_error("mem://t/manifest/"));
            }
            *self.learned.lock().unwrap() = Some(Arc::from(self.holds.clone()));
            Ok(())
        }

        fn index_budget(&self) -> u64 {
            u64::MAX
        }
    }

    /// Fetches a file of the test (never written while mapped).
    #[derive(Debug)]
    struct FileFetch {
        path: PathBuf,
        object: PathBuf,
        down: Arc<AtomicBool>,
        counts: Arc<Counts>,
        counter: fn(&Counts) -> &AtomicU64,
    }

    // SAFETY: the files of these tests are written before the test reads
    // them and never again.
    unsafe impl Fetch for FileFetch {
        fn fetch(&self) -> Result<Fetched> {
            (self.counter)(&self.counts).fetch_add(1, SeqCst);
            if self.down.load(SeqCst) {
                return Err(down_error(&self.object.display().to_string()));
            }
            let file = std::fs::File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
            Ok(Fetched {
                file,
                path: self.path.clone(),
                pin: Arc::new(()),
            })
        }
    }

    /// A log of small segments, one stream per batch (`b-<i>`): its
    /// directory and its segments' bases.
    fn source() -> (tempfile::TempDir, PathBuf, Vec<u64>) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let log = crate::Options::default().segment_size(16 << 10).open(&src).unwrap();
        for i in 0..600 {
            let evs: Vec<EventData> = (0..3)
                .map(|k| EventData::new("E", format!("{i}.{k} {}", "x".repeat(80))))
                .collect();
            log.append(&format!("b-{i}"), ExpectedVersion::Any, &evs).unwrap();
        }
        log.close().unwrap();
        let bases = crate::read::reader::list_segments(&src).unwrap();
        assert!(bases.len() >= 9, "{bases:?}");
        (tmp, src, bases)
    }

    /// The directory's sealed segments from `first` on (the newest, active
    /// one left out), the position after them and the log id.
    fn local(src: &Path, bases: &[u64], first: u64) -> (Vec<ViewSegment>, u64, [u8; 16]) {
        let mut segs = Vec::new();
        let (mut next, mut log_id) = (0, [0; 16]);
        for &b in &bases[..bases.len() - 1] {
            if b >= first {
                let (vs, n, header) = crate::read::sealed::open_sealed_header(src, b).unwrap();
                (next, log_id) = (n, header.log_id);
                segs.push(vs);
            }
        }
        (segs, next, log_id)
    }

    /// A view of the directory from `first` on with `front` in front.
    fn view(front: &mut ColdFront, src: &Path, bases: &[u64], first: u64) -> Result<LogView> {
        let (segs, next, log_id) = local(src, bases, first);
        let cold = front.below(Some(first), log_id)?;
        Ok(LogView::new(segs, next, None).with_front(cold))
    }

    /// A clock the test moves.
    fn clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let n = now.clone();
        (Arc::new(move || *n.lock().unwrap()), now)
    }

    fn advance(now: &Mutex<Instant>, by: Duration) {
        let mut n = now.lock().unwrap();
        *n += by;
    }

    fn positions(view: &LogView, stream: &str) -> Vec<u64> {
        view.read_stream(stream, StreamPosition::Start, Direction::Forward, u64::MAX)
            .map(|r| r.unwrap().position())
            .collect()
    }

    #[test]
    fn views_ask_the_store_only_when_its_list_does_not_fit_and_keep_their_index_cells() {
        let (_tmp, src, bases) = source();
        let first = bases[4];
        let store = Store::new(&src, &bases[..4], &[]);
        let mut front = ColdFront::new(store.clone());
        let v1 = view(&mut front, &src, &bases, first).unwrap();
        assert_eq!(v1.front, 4);
        assert_eq!(store.counts.refreshes.load(SeqCst), 1, "the list was never learned");
        assert_eq!(store.counts.ranges.load(SeqCst), 8, "a header and an end per segment");
        // A stream of the store's first segment: its index, then its records.
        assert_eq!(positions(&v1, "b-0"), [0, 1, 2]);
        let index_fetches = store.counts.index_fetches.load(SeqCst);
        for _ in 0..5 {
            let v = view(&mut front, &src, &bases, first).unwrap();
            assert_eq!(v.segment_count(), v1.segment_count());
            // The same index cells (opened once), new mappings.
            for i in 0..4 {
                assert!(Arc::ptr_eq(&v.segments[i].index, &v1.segments[i].index));
                assert!(!Arc::ptr_eq(&v.segments[i].map, &v1.segments[i].map));
            }
            assert_eq!(positions(&v, "b-0"), [0, 1, 2]);
        }
        assert_eq!(store.counts.refreshes.load(SeqCst), 1);
        assert_eq!(store.counts.ranges.load(SeqCst), 8);
        assert_eq!(store.counts.index_fetches.load(SeqCst), index_fetches);
    }

    #[test]
    fn a_store_that_holds_nothing_below_the_directory_is_asked_once() {
        let (_tmp, src, bases) = source();
        let first = bases[4];
        // The store starts at the directory's first segment.
        let store = Store::new(&src, &bases[4..bases.len() - 1], &[]);
        let mut front = ColdFront::new(store.clone());
        for _ in 0..10 {
            let v = view(&mut front, &src, &bases, first).unwrap();
            assert_eq!(v.front, 0);
        }
        assert_eq!(store.counts.refreshes.load(SeqCst), 1);
        assert_eq!(store.counts.ranges.load(SeqCst), 0);
    }

    #[test]
    fn an_empty_store_is_asked_again_only_after_a_back_off() {
        let (_tmp, src, bases) = source();
        let store = Store::new(&src, &[], &[]);
        let (clock, now) = clock();
        let mut front = ColdFront::new(store.clone()).with_clock(clock);
        for _ in 0..10 {
            assert_eq!(view(&mut front, &src, &bases, bases[4]).unwrap().front, 0);
        }
        assert_eq!(store.counts.refreshes.load(SeqCst), 1);
        advance(&now, BACKOFF_MIN);
        assert_eq!(view(&mut front, &src, &bases, bases[4]).unwrap().front, 0);
        assert_eq!(store.counts.refreshes.load(SeqCst), 2);
        // The directory moved on: asked at once.
        assert_eq!(view(&mut front, &src, &bases, bases[5]).unwrap().front, 0);
        assert_eq!(store.counts.refreshes.load(SeqCst), 3);
    }

    #[test]
    fn a_store_that_is_down_leaves_views_local_and_is_asked_again_after_a_back_off() {
        let (_tmp, src, bases) = source();
        let first = bases[4];
        let store = Store::new(&src, &bases[..4], &[]);
        store.down.store(true, SeqCst);
        let (clock, now) = clock();
        let mut front = ColdFront::new(store.clone()).with_clock(clock);
        for _ in 0..10 {
            // Local reads work; the store's segments are not in the view.
            let v = view(&mut front, &src, &bases, first).unwrap();
            assert_eq!(v.front, 0);
            assert_eq!(v.read_all(0).next().unwrap().unwrap().position(), first);
        }
        assert_eq!(store.counts.refreshes.load(SeqCst), 1, "no request while backing off");
        advance(&now, BACKOFF_MIN);
        assert_eq!(view(&mut front, &src, &bases, first).unwrap().front, 0);
        assert_eq!(store.counts.refreshes.load(SeqCst), 2);
        // Twice as long now.
        advance(&now, BACKOFF_MIN);
        assert_eq!(view(&mut front, &src, &bases, first).unwrap().front, 0);
        assert_eq!(store.counts.refreshes.load(SeqCst), 2);
        // Back up: once the back-off passed, the view shows the whole log.
        store.down.store(false, SeqCst);
        advance(&now, BACKOFF_MIN);
        let v = view(&mut front, &src, &bases, first).unwrap();
        assert_eq!(v.front, 4);
        assert_eq!(v.read_all(0).next().unwrap().unwrap().position(), 0);
        drop(v);
        // Down again: the segments opened before still fit, so views show
        // them without asking; a read that needs one not fetched yet is an
        // error naming its object.
        store.down.store(true, SeqCst);
        let (refreshes, ranges) = (store.counts.refreshes.load(SeqCst), store.counts.ranges.load(SeqCst));
        let v = view(&mut front, &src, &bases, first).unwrap();
        assert_eq!(v.front, 4);
        assert_eq!(store.counts.refreshes.load(SeqCst), refreshes);
        assert_eq!(store.counts.ranges.load(SeqCst), ranges);
        match v.read_all(0).next().unwrap() {
            Err(Error::Remote { object, .. }) => assert_eq!(object, name(0, "seg").display().to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_store_with_a_gap_is_an_error_naming_the_object_asked_for_once_per_directory() {
        let (_tmp, src, bases) = source();
        let held = [bases[0], bases[1], bases[3]];
        let store = Store::new(&src, &held, &[]);
        let (clock, now) = clock();
        let mut front = ColdFront::new(store.clone()).with_clock(clock);
        for _ in 0..3 {
            match view(&mut front, &src, &bases, bases[4]) {
                Err(Error::Corrupt { path, .. }) => assert_eq!(path, name(bases[3], "seg")),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.counts.refreshes.load(SeqCst), 1);
        advance(&now, BACKOFF_MIN);
        assert!(view(&mut front, &src, &bases, bases[4]).is_err());
        assert_eq!(store.counts.refreshes.load(SeqCst), 2);
    }

    #[test]
    fn a_fetched_segment_must_hold_the_bytes_it_was_opened_from() {
        let (tmp, src, bases) = source();
        let store = Store::new(&src, &bases[..4], &[]);
        // The store's whole object differs from its ranged reads at its end.
        let mut bytes = std::fs::read(src.join(segment_file_name(0))).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        let other = tmp.path().join("other.seg");
        std::fs::write(&other, &bytes).unwrap();
        store.swapped.lock().unwrap().push((0, other));
        let mut front = ColdFront::new(store.clone());
        let v = view(&mut front, &src, &bases, bases[4]).unwrap();
        match v.read_all(0).next().unwrap() {
            Err(Error::Remote { object, detail }) => {
                assert_eq!(object, name(0, "seg").display().to_string());
                assert!(detail.contains("ranged read"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The stream of a batch held by the segment based at `base` alone.
    fn stream_in(src: &Path, bases: &[u64], base: u64) -> String {
        let end = bases.iter().find(|&&b| b > base).copied().unwrap();
        let whole = crate::Reader::open(src).unwrap().view().unwrap();
        let mut names: Vec<(String, u64)> = whole
            .read_all(0)
            .map(|r| r.unwrap())
            .map(|r| (r.stream().to_owned(), r.position()))
            .collect();
        names.retain(|(n, _)| n.starts_with("b-"));
        let inside = |n: &str| {
            names
                .iter()
                .filter(|(m, _)| m == n)
                .all(|(_, p)| (base..end).contains(p))
        };
        names.iter().map(|(n, _)| n.clone()).find(|n| inside(n)).unwrap()
    }

    #[test]
    fn stream_lookups_search_the_store_once_per_stream_and_never_skip_a_segment() {
        let (_tmp, src, bases) = source();
        // The store's first segment has no index object.
        let store = Store::new(&src, &bases[..6], &[0]);
        let mut front = ColdFront::new(store.clone());
        let v = view(&mut front, &src, &bases, bases[4]).unwrap();
        // A stream only that segment holds is found: the segment is
        // searched by its bytes (fetched for it), not skipped.
        assert_eq!(positions(&v, "b-0"), [0, 1, 2]);
        assert!(store.counts.segment_fetches.load(SeqCst) >= 1);
        // A stream no segment holds: every index searched once, then
        // known absent below the directory's first segment.
        assert!(positions(&v, "ghost").is_empty());
        let absent = v.segments[0].index.known_absent().unwrap().clone();
        assert_eq!(absent.below("ghost"), bases[4]);
        let fetches = store.counts.index_fetches.load(SeqCst);
        drop(v);
        // The directory moved on (retention): the segments added to the
        // front are searched, those below are not searched again.
        let w = view(&mut front, &src, &bases, bases[6]).unwrap();
        assert_eq!(w.front, 6);
        assert!(Arc::ptr_eq(w.segments[0].index.known_absent().unwrap(), &absent));
        assert!(positions(&w, "ghost").is_empty());
        assert_eq!(absent.below("ghost"), bases[6]);
        assert_eq!(
            store.counts.index_fetches.load(SeqCst),
            fetches + 2,
            "the two new segments' indexes"
        );
        // A stream in a segment added to the front is found there, though
        // it was known absent below the former end.
        let mid = stream_in(&src, &bases, bases[5]);
        absent.record(&mid, bases[4]);
        assert_eq!(positions(&w, &mid).len(), 3, "{mid}");
        // What the run knows is taken as it is: segments below are skipped
        // (here a record that is not true, to show it).
        absent.record("b-0", bases[4]);
        assert!(positions(&w, "b-0").is_empty());
    }

    #[test]
    fn open_reads_the_header_and_the_longest_seal() {
        assert_eq!(ends(10_000), (0..128, 10_000 - 72..10_000));
        assert_eq!(ends(128 + 32), (0..128, 128..160));
        assert_eq!(ends(100), (0..100, 100..100));
    }
}
