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
//! and checked against the manifest's length and BLAKE3 by the tier); every
//! record is checked as local ones are (CRC, chain).
//!
//! Invariants: the cold segments of a view are contiguous in position and
//! end where the directory's first segment starts, or the view is an error
//! naming the object that does not fit; the front keeps no mapping: each
//! view maps what it reads, which pins the cache's copy while the view
//! lives, and the cache may remove any copy no view holds.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::frame::seal_crc_in_tail;
use crate::format::{FRAME_HEADER_LEN, Layout, SEGMENT_HEADER_LEN};
use crate::index::IndexCell;
use crate::read::logview::ViewSegment;
use crate::read::sealed::{check_seal, parse_segment_header};
use crate::storage::mmap::{Fetch, Mapping};

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
}

/// Sealed segments kept outside the log directory.
pub(crate) trait ColdTier: Send + Sync + std::fmt::Debug {
    /// The sealed segments it holds now, in log order.
    fn segments(&self) -> Result<Arc<[ColdSegment]>>;

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

    /// Learn again which segments the store holds (its list did not reach
    /// the directory's first segment: the directory moved on since).
    fn refresh(&self) -> Result<()>;
}

/// The cold segments in front of a log directory's, opened once each.
#[derive(Debug)]
pub(crate) struct ColdFront {
    tier: Arc<dyn ColdTier>,
    /// Segments opened so far, with the position after each (its seal's).
    opened: Vec<(ColdSegment, ViewSegment, u64)>,
}

impl ColdFront {
    /// A front of the segments `tier` holds.
    pub(crate) fn new(tier: Arc<dyn ColdTier>) -> ColdFront {
        ColdFront {
            tier,
            opened: Vec::new(),
        }
    }

    /// The tier's segments below `first` (where the directory's first
    /// segment starts; `None`: the directory holds none), opened (header
    /// and seal checked, the header naming the log `log_id`; nothing
    /// mapped), in log order, contiguous, the last ending at `first`.
    pub(crate) fn below(&mut self, first: Option<u64>, log_id: [u8; 16]) -> Result<Vec<ViewSegment>> {
        match self.assemble(first, log_id) {
            Ok(v) if !v.is_empty() || first.is_none_or(|f| f == 0) => Ok(v),
            // Nothing below, or not up to the directory's first segment:
            // the tier's list may be older than the directory.
            _ => {
                self.tier.refresh()?;
                self.assemble(first, log_id)
            }
        }
    }

    /// [`ColdFront::below`] from the tier's list as it is.
    fn assemble(&mut self, first: Option<u64>, log_id: [u8; 16]) -> Result<Vec<ViewSegment>> {
        if first == Some(0) {
            self.opened.clear();
            return Ok(Vec::new());
        }
        let all = self.tier.segments()?;
        let wanted: Vec<&ColdSegment> = all.iter().filter(|s| first.is_none_or(|f| s.base < f)).collect();
        self.opened.retain(|(c, ..)| wanted.contains(&c));
        let new: Vec<ColdSegment> = wanted
            .iter()
            .filter(|w| !self.opened.iter().any(|(c, ..)| c == **w))
            .map(|w| (*w).clone())
            .collect();
        self.open(&new, log_id)?;
        let mut out = Vec::with_capacity(wanted.len());
        let mut expected = wanted.first().map(|w| w.base);
        for w in &wanted {
            let Some((c, vs, next)) = self.opened.iter().find(|(c, ..)| c == *w) else {
                continue;
            };
            if Some(c.base) != expected {
                return Err(Error::Corrupt {
                    path: c.name.clone(),
                    offset: crate::format::SEGMENT_BASE_POSITION_OFFSET as u64,
                    detail: format!(
                        "expected a segment starting at position {}, found {} (the store's segments have a gap)",
                        expected.unwrap_or(0),
                        c.base
                    ),
                });
            }
            expected = Some(*next);
            out.push(vs.clone());
        }
        // The view maps (and so pins in the cache) what it reads, for as
        // long as it lives; the front keeps unmapped segments only.
        for (_, vs, _) in &mut self.opened {
            if let Some(fresh) = vs.map.fresh() {
                vs.map = Arc::new(fresh);
            }
            vs.index = Arc::new(vs.index.fresh());
        }
        if let (Some(first), Some(end), Some(last)) = (first, expected, wanted.last())
            && end != first
        {
            return Err(Error::Corrupt {
                path: last.name.clone(),
                offset: last.len,
                detail: format!(
                    "expected the store's segments below the log directory's to end at position {first}, where \
                     its first segment starts; they end at {end}"
                ),
            });
        }
        Ok(out)
    }

    /// Open `segs`: their headers and seals, read by ranged reads all at
    /// once.
    fn open(&mut self, segs: &[ColdSegment], log_id: [u8; 16]) -> Result<()> {
        if segs.is_empty() {
            return Ok(());
        }
        let mut asks = Vec::with_capacity(segs.len() * 2);
        for s in segs {
            asks.push((s.clone(), 0..s.len.min(SEGMENT_HEADER_LEN as u64)));
            let tail = s
                .len
                .saturating_sub(SEGMENT_HEADER_LEN as u64)
                .min(FRAME_HEADER_LEN as u64);
            asks.push((s.clone(), s.len - tail..s.len));
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
            // describe is known from the seal.
            let index = match (self.tier.index_fetcher(s), &s.index, seal_crc_in_tail(tail, &layout)) {
                (Some(fetch), Some(name), Some(crc)) => IndexCell::fetched(s.base, name.clone(), fetch, s.len, crc),
                _ => IndexCell::new(s.base, None, None),
            };
            let vs = ViewSegment {
                base: s.base,
                map: Arc::new(Mapping::fetched(self.tier.fetcher(s), s.len)),
                path: Arc::new(s.name.clone()),
                index: Arc::new(index),
                layout,
            };
            self.opened.push((s.clone(), vs, seal.first_position));
        }
        self.opened.sort_by_key(|(c, ..)| c.base);
        Ok(())
    }
}
