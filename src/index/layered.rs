//! The index of an active segment whose start is covered by index
//! checkpoints (spec 17.5): the checkpoint files of consecutive ranges
//! `[128, e1)`, `[e1, e2)`, … (the *base*, oldest first) and an in-memory
//! index of the batches after the last of them (the *tail*), seen as one
//! index: a stream's entries, a category's or event type's entries and the
//! frames are those of every layer, in order.
//!
//! Invariants: the layers cover consecutive, disjoint byte ranges of one
//! segment, so concatenating their lists keeps offset (and version) order;
//! the tail grows (the writer appends to it), the base never does; a base
//! found damaged is replaced, as a whole, by an index rebuilt from the
//! segment's bytes `[0, base_end)`, and the checkpoint files are then only
//! reported, never read again through this index.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::error::Damage;
use crate::index::{Index, MemIndex, NO_ROW, Named, StreamInfo};

/// An index checkpoint base and an in-memory tail, as one index.
#[derive(Debug)]
pub(crate) struct Layered {
    /// The base layers, oldest first: checkpoint files ([`Index::Disk`]), or
    /// one index rebuilt from the segment ([`Index::Mem`]) once a file was
    /// found damaged.
    base: RwLock<Arc<[Index]>>,
    /// The checkpoint files of the base, oldest first (named in reports).
    pub(crate) files: Vec<PathBuf>,
    /// The segment offset where the base ends and the tail starts.
    pub(crate) base_end: u64,
    /// The batches from `base_end` on.
    pub(crate) tail: Arc<RwLock<MemIndex>>,
    /// The base layers' rows of the stream, category or event type looked
    /// up last (a read asks for its entries one by one): `(what, name, per
    /// base layer (entry_start, entry_count))`.
    last: Mutex<Option<Rows>>,
}

/// Per base layer, a row: `(stream info, entry_start, entry_count)`.
type LayerRows = Arc<[Option<(StreamInfo, u32, u32)>]>;

/// What [`Layered::last`] holds.
type Rows = (Option<Named>, Box<str>, LayerRows);

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Layered {
    /// The index of a segment whose bytes `[128, base_end)` the checkpoint
    /// files `base` (opened from `files`) cover, and whose later batches
    /// `tail` holds.
    pub(crate) fn new(base: Vec<Index>, files: Vec<PathBuf>, base_end: u64, tail: Arc<RwLock<MemIndex>>) -> Layered {
        Layered {
            base: RwLock::new(base.into()),
            files,
            base_end,
            tail,
            last: Mutex::new(None),
        }
    }

    /// The layers, oldest first (the tail last).
    fn layers(&self) -> impl Iterator<Item = Index> {
        let base = self.base();
        let tail = Index::Mem(self.tail.clone());
        (0..base.len())
            .filter_map(move |i| base.get(i).cloned())
            .chain(std::iter::once(tail))
    }

    /// The base layers, oldest first.
    pub(crate) fn base(&self) -> Arc<[Index]> {
        read(&self.base).clone()
    }

    /// Whether the base is still the checkpoint files (not rebuilt).
    pub(crate) fn base_on_disk(&self) -> bool {
        read(&self.base).iter().all(|i| matches!(i, Index::Disk(_)))
    }

    /// Replace the base by `rebuilt`, the index of the segment's bytes
    /// `[0, base_end)` built by scanning them.
    pub(crate) fn replace_base(&self, rebuilt: MemIndex) {
        let mut base = self.base.write().unwrap_or_else(|p| p.into_inner());
        *base = Arc::new([Index::Mem(Arc::new(RwLock::new(rebuilt)))]);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Per base layer, the rows of `name` (a stream if `kind` is `None`):
    /// `(stream info, entry_start, entry_count)`, `None` where it has none.
    fn base_rows(&self, base: &[Index], kind: Option<Named>, name: &str) -> Result<LayerRows, Damage> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, n, rows)) = last.as_ref()
            && *k == kind
            && **n == *name
            && rows.len() == base.len()
        {
            return Ok(rows.clone());
        }
        let rows: LayerRows = base
            .iter()
            .map(|l| match kind {
                None => Ok(l.find_stream(name)?.map(|s| (s, s.entry_start, s.entry_count))),
                Some(k) => Ok(l.find_named(k, name)?.map(|(start, n)| {
                    let none = StreamInfo {
                        row: NO_ROW,
                        first_version: 0,
                        last_version: 0,
                        entry_start: start,
                        entry_count: n,
                        prev: None,
                    };
                    (none, start, n)
                })),
            })
            .collect::<Result<Vec<_>, Damage>>()?
            .into();
        *last = Some((kind, name.into(), rows.clone()));
        Ok(rows)
    }

    /// The whole index in memory: every base layer read and the tail
    /// appended (for the sealed segment's index file, or a merged
    /// checkpoint).
    pub(crate) fn merged(&self) -> Result<MemIndex, Damage> {
        let mut m = MemIndex::default();
        for layer in self.base().iter() {
            match layer {
                Index::Disk(f) => m.append(&MemIndex::from_idx(&**f)?),
                Index::Mem(t) => m.append(&read(t)),
                Index::Layered(l) => m.append(&l.merged()?),
            }
        }
        m.append(&read(&self.tail));
        Ok(m)
    }

    /// Find a stream: its versions and entries over every layer (its row is
    /// not one row of one file, and where its earlier events are is not
    /// known).
    pub(crate) fn find_stream(&self, name: &str) -> Result<Option<StreamInfo>, Damage> {
        let mut found: Option<StreamInfo> = None;
        for layer in self.layers() {
            if let Some(s) = layer.find_stream(name)? {
                found = Some(match found {
                    None => StreamInfo {
                        row: NO_ROW,
                        entry_start: 0,
                        prev: None,
                        ..s
                    },
                    Some(f) => StreamInfo {
                        last_version: s.last_version,
                        entry_count: f.entry_count.saturating_add(s.entry_count),
                        ..f
                    },
                });
            }
        }
        Ok(found)
    }

    /// Entry `i` of a stream over every layer.
    pub(crate) fn stream_entry(&self, name: &str, mut i: u32) -> Result<Option<(u64, u64)>, Damage> {
        let base = self.base();
        let rows = self.base_rows(&base, None, name)?;
        for (layer, row) in base.iter().zip(rows.iter()) {
            let Some((s, _, n)) = row else { continue };
            if i < *n {
                return layer.stream_entry(name, s, i);
            }
            i -= n;
        }
        let tail = Index::Mem(self.tail.clone());
        match tail.find_stream(name)? {
            Some(s) if i < s.entry_count => tail.stream_entry(name, &s, i),
            _ => Ok(None),
        }
    }

    /// Number of entries of a category or event type over every layer.
    pub(crate) fn find_named(&self, kind: Named, name: &str) -> Result<Option<(u32, u32)>, Damage> {
        let mut total: Option<u32> = None;
        for layer in self.layers() {
            if let Some((_, n)) = layer.find_named(kind, name)? {
                total = Some(total.unwrap_or(0).saturating_add(n));
            }
        }
        Ok(total.map(|n| (0, n)))
    }

    /// Entry `i` of a category or event type over every layer.
    pub(crate) fn named_entry(&self, kind: Named, name: &str, mut i: u32) -> Result<Option<u64>, Damage> {
        let base = self.base();
        let rows = self.base_rows(&base, Some(kind), name)?;
        for (layer, row) in base.iter().zip(rows.iter()) {
            let Some((_, start, n)) = row else { continue };
            if i < *n {
                return layer.named_entry(kind, name, *start, i);
            }
            i -= n;
        }
        let tail = Index::Mem(self.tail.clone());
        match tail.find_named(kind, name)? {
            Some((start, n)) if i < n => tail.named_entry(kind, name, start, i),
            _ => Ok(None),
        }
    }

    /// Number of batches over every layer.
    pub(crate) fn frame_count(&self) -> u32 {
        self.layers().fold(0u32, |n, l| n.saturating_add(l.frame_count()))
    }

    /// Batch `i` over every layer.
    pub(crate) fn frame(&self, mut i: u32) -> Result<Option<(u64, u64)>, Damage> {
        for layer in self.layers() {
            let n = layer.frame_count();
            if i < n {
                return layer.frame(i);
            }
            i -= n;
        }
        Ok(None)
    }

    /// The names of the streams with a batch that starts below `len` (the
    /// tail may hold batches past a view's end).
    pub(crate) fn names_below(&self, len: u64) -> Result<Vec<Box<str>>, Damage> {
        let mut all: std::collections::HashSet<Box<str>> = std::collections::HashSet::new();
        for layer in self.base().iter() {
            match layer {
                Index::Disk(f) => all.extend(f.stream_rows()?.into_iter().map(|r| r.0)),
                Index::Mem(m) => all.extend(read(m).streams.keys().cloned()),
                Index::Layered(l) => all.extend(l.names_below(len)?),
            }
        }
        let tail = read(&self.tail);
        all.extend(
            tail.streams
                .iter()
                .filter(|(_, s)| s.entries.first().is_some_and(|e| e.1 < len))
                .map(|(n, _)| n.clone()),
        );
        Ok(all.into_iter().collect())
    }

    /// Every stream's name and newest version over every layer.
    pub(crate) fn stream_versions(&self) -> Result<Vec<(Box<str>, u64)>, Damage> {
        let mut all: std::collections::HashMap<Box<str>, u64> = std::collections::HashMap::new();
        for layer in self.layers() {
            match layer {
                Index::Disk(f) => {
                    for (n, _, v) in f.stream_rows()? {
                        all.insert(n, v);
                    }
                }
                Index::Mem(m) => {
                    for (n, s) in &read(&m).streams {
                        all.insert(n.clone(), s.last_version);
                    }
                }
                Index::Layered(l) => all.extend(l.stream_versions()?),
            }
        }
        Ok(all.into_iter().collect())
    }
}
