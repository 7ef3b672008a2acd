//! The in-memory index of one segment: built batch by batch as the writer
//! appends (the active segment), or by one walk over a segment's records
//! ([`IndexBuilder`], [`MemIndex::rebuild`]) when its `.idx` file is missing
//! or damaged. Its on-disk form is written by [`MemIndex::encode`]
//! (`encode.rs`) and read back by [`crate::index::IdxFile`].
//!
//! Invariants: a stream's entries are in version order, category, event type
//! and frame entries in position order (= offset order within a segment); an
//! index built by a walk holds complete batches only.

use std::collections::HashMap;

use crate::error::Damage;
use crate::format::frame::{Frame, RecordSink, frame_records_at, parse_header, walk_segment_records};
use crate::format::hash::category_of;
use crate::format::record::RecordRef;
use crate::format::{Layout, SegmentHeader};
use crate::index::{IdxFile, Named};

/// The index of one segment, in memory.
///
/// Built cheaply, batch by batch: one hash lookup per batch (its stream; the
/// stream remembers its category's slot), and per record only a comparison of
/// its event type with the previous record's and, for the first record of
/// its type in the batch, a push of the batch's offset.
#[derive(Debug, Default)]
pub(crate) struct MemIndex {
    /// Each stream with events in the segment.
    pub streams: HashMap<Box<str>, MemStream>,
    /// Frame offsets per category, in position order.
    pub categories: NamedLists,
    /// Per event type, the frame offset of every batch holding a record of
    /// the type, once per batch, in position order (spec 17.2, version 2;
    /// a version 1 file's record offsets become their batches' on reading).
    pub types: NamedLists,
    /// `(first_position, frame_offset)` per batch.
    pub frames: Vec<(u64, u64)>,
    /// Slot in `types` of the last record's event type.
    last_type: Option<usize>,
}

/// [`MemStream::category`] of a stream without a category.
const NO_CATEGORY: u32 = u32::MAX;

/// One stream's events in one segment.
#[derive(Debug)]
pub(crate) struct MemStream {
    pub first_version: u64,
    pub last_version: u64,
    /// `(first_version, frame_offset)` per batch.
    pub entries: Vec<(u64, u64)>,
    /// Slot of the stream's category in [`MemIndex::categories`], or
    /// `NO_CATEGORY` (a `u32` keeps the hash table's buckets small).
    category: u32,
}

/// Named lists of offsets (categories or event types): a name finds its slot
/// by one hash lookup; a caller that keeps the slot pushes without one.
#[derive(Debug, Default)]
pub(crate) struct NamedLists {
    slots: HashMap<Box<str>, usize>,
    lists: Vec<(Box<str>, Vec<u64>)>,
}

impl NamedLists {
    /// The offsets listed under `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Vec<u64>> {
        let &slot = self.slots.get(name)?;
        self.lists.get(slot).map(|(_, v)| v)
    }

    /// Every name and its offsets, in the order the names first appeared.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Vec<u64>)> {
        self.lists.iter().map(|(n, v)| (&**n, v))
    }

    /// The slot of `name`, added if new.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&s) = self.slots.get(name) {
            return s;
        }
        let s = self.lists.len();
        self.lists.push((name.into(), Vec::new()));
        self.slots.insert(name.into(), s);
        s
    }

    /// The slot of a name given as UTF-8 bytes (validated with its record).
    fn slot_bytes(&mut self, name: &[u8]) -> usize {
        match std::str::from_utf8(name) {
            Ok(n) => self.slot(n),
            // Unreachable for validated records; never panic on content.
            Err(_) => self.slot(&String::from_utf8_lossy(name)),
        }
    }

    fn push(&mut self, slot: usize, offset: u64) {
        if let Some((_, v)) = self.lists.get_mut(slot) {
            v.push(offset);
        }
    }

    /// Push `offset` unless the list already ends with it (a batch is listed
    /// once per event type).
    #[inline]
    fn push_once(&mut self, slot: usize, offset: u64) {
        if let Some((_, v)) = self.lists.get_mut(slot)
            && v.last() != Some(&offset)
        {
            v.push(offset);
        }
    }
}

/// Builds a [`MemIndex`] from the records of a single-pass walk
/// ([`walk_segment_records`]): each record's event type entry is added as the
/// walk validates it, the batch's stream, category and frame entries once the
/// batch is complete. The entries of a batch that turns out not to be complete
/// (the walk stopped in it) are taken out again by [`IndexBuilder::finish`].
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder<'a> {
    index: MemIndex,
    /// The batch being walked: its frame offset, stream, first version and
    /// records so far (0: none).
    frame_offset: u64,
    stream: &'a [u8],
    first_version: u64,
    count: u64,
    /// Event types in the index before this batch.
    types_before: usize,
    /// `(type slot, its entries before this batch)` per type of this batch.
    touched: Vec<(usize, usize)>,
}

impl<'a> IndexBuilder<'a> {
    /// The index of the complete batches seen.
    pub(crate) fn finish(mut self) -> MemIndex {
        self.rollback();
        self.index
    }

    /// The first record of a batch.
    #[inline(never)]
    fn start_batch(&mut self, frame_offset: u64, rec: &RecordRef<'a>) {
        self.rollback();
        self.frame_offset = frame_offset;
        self.stream = rec.stream_bytes();
        self.first_version = rec.stream_version();
        self.types_before = self.index.types.lists.len();
    }

    /// Take out the type entries of the batch being walked.
    fn rollback(&mut self) {
        if self.count == 0 {
            return;
        }
        let types = &mut self.index.types;
        for &(slot, len) in &self.touched {
            if let Some((_, v)) = types.lists.get_mut(slot) {
                v.truncate(len);
            }
        }
        for (name, _) in types.lists.drain(self.types_before.min(types.lists.len())..) {
            types.slots.remove(&name);
        }
        self.index.last_type = None;
        self.touched.clear();
        self.count = 0;
    }
}

impl<'a> RecordSink<'a> for IndexBuilder<'a> {
    #[inline]
    fn record(&mut self, frame_offset: u64, _record_offset: u64, rec: &RecordRef<'a>) {
        if self.count == 0 || frame_offset != self.frame_offset {
            self.start_batch(frame_offset, rec);
        }
        let slot = self.index.type_slot(rec.event_type_bytes());
        let types = &mut self.index.types.lists;
        if self.touched.last().is_none_or(|t| t.0 != slot) && !self.touched.iter().any(|t| t.0 == slot) {
            self.touched.push((slot, types.get(slot).map_or(0, |(_, v)| v.len())));
        }
        if let Some((_, v)) = types.get_mut(slot)
            && v.last() != Some(&frame_offset)
        {
            v.push(frame_offset);
        }
        self.count += 1;
    }

    fn batch(&mut self, frame_offset: u64, frame: &Frame) {
        if self.count > 0 && frame_offset == self.frame_offset {
            let stream = String::from_utf8_lossy(self.stream);
            self.index.add_batch_head(
                frame_offset,
                frame.first_position,
                &stream,
                self.first_version,
                self.count,
            );
            self.touched.clear();
            self.count = 0;
        }
    }
}

/// `a == b` for short names without a call to `memcmp`.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8).map_or(0, |w| {
            u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
        })
    };
    match a.len() {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => {
            let last = a.len() - 8;
            word(a, 0) == word(b, 0) && word(a, last) == word(b, last)
        }
        _ => a == b,
    }
}

impl MemIndex {
    /// Record a batch: its frame offset, first position, stream, first
    /// version, event count, and each record's event type (the batch is
    /// listed once under each of its event types).
    pub(crate) fn add_batch<'t>(
        &mut self,
        frame_offset: u64,
        first_position: u64,
        stream: &str,
        first_version: u64,
        count: u64,
        types: impl Iterator<Item = &'t str>,
    ) {
        self.add_batch_bytes(
            frame_offset,
            first_position,
            stream,
            first_version,
            count,
            types.map(str::as_bytes),
        );
    }

    /// [`MemIndex::add_batch`] with event types as UTF-8 bytes.
    fn add_batch_bytes<'t>(
        &mut self,
        frame_offset: u64,
        first_position: u64,
        stream: &str,
        first_version: u64,
        count: u64,
        types: impl Iterator<Item = &'t [u8]>,
    ) {
        for ty in types {
            let slot = self.type_slot(ty);
            self.types.push_once(slot, frame_offset);
        }
        self.add_batch_head(frame_offset, first_position, stream, first_version, count);
    }

    /// The slot of event type `ty`: a hash lookup only when it differs from
    /// the previous record's.
    #[inline]
    fn type_slot(&mut self, ty: &[u8]) -> usize {
        if let Some(s) = self.last_type
            && self
                .types
                .lists
                .get(s)
                .is_some_and(|(n, _)| same_name(n.as_bytes(), ty))
        {
            return s;
        }
        self.new_type_slot(ty)
    }

    #[cold]
    #[inline(never)]
    fn new_type_slot(&mut self, ty: &[u8]) -> usize {
        let s = self.types.slot_bytes(ty);
        self.last_type = Some(s);
        s
    }

    /// A batch's stream, category and frame entries (its event type entries
    /// are added per record, once per type).
    fn add_batch_head(&mut self, frame_offset: u64, first_position: u64, stream: &str, first_version: u64, count: u64) {
        let last_version = first_version.saturating_add(count.saturating_sub(1));
        let category = match self.streams.get_mut(stream) {
            Some(s) => {
                s.last_version = last_version;
                s.entries.push((first_version, frame_offset));
                s.category
            }
            None => {
                // A segment holds far fewer than 2^32 batches, so slots fit.
                let category = category_of(stream).map_or(NO_CATEGORY, |c| self.categories.slot(c) as u32);
                self.streams.insert(
                    stream.into(),
                    MemStream {
                        first_version,
                        last_version,
                        entries: vec![(first_version, frame_offset)],
                        category,
                    },
                );
                category
            }
        };
        if category != NO_CATEGORY {
            self.categories.push(category as usize, frame_offset);
        }
        self.frames.push((first_position, frame_offset));
    }

    /// Record a batch frame that `validate_frame` accepted, at `frame_offset`.
    pub(crate) fn add_frame(&mut self, frame: &[u8], frame_offset: u64, layout: &Layout) {
        let mut recs = frame_records_at(frame, layout).peekable();
        let Some((_, first)) = recs.peek().copied() else { return };
        // `record_count` of the validated frame header.
        let count = parse_header(frame, u64::MAX, layout).map_or(0, |h| u64::from(h.count));
        self.add_batch_bytes(
            frame_offset,
            first.position(),
            first.stream(),
            first.stream_version(),
            count,
            recs.map(|(_, r)| r.event_type_bytes()),
        );
    }

    /// The index an index file holds (every row and entry read, every block
    /// checked): to merge index checkpoints (spec 17.5), which cover
    /// consecutive ranges of one segment, with [`MemIndex::append`].
    pub(crate) fn from_idx<B: AsRef<[u8]>>(f: &IdxFile<B>) -> Result<MemIndex, Damage> {
        let mut m = MemIndex::default();
        for (kind, lists) in [(Named::Category, &mut m.categories), (Named::Type, &mut m.types)] {
            for (name, start, count) in f.named_rows(kind)? {
                let slot = lists.slot(&name);
                for i in 0..count {
                    // A version 1 file lists records: their batches, once.
                    let off = f.named_entry(kind, start.saturating_add(i))?;
                    lists.push_once(slot, off);
                }
            }
        }
        for (name, row, _) in f.stream_rows()? {
            let Some(info) = f.stream_at(row, &name)? else {
                return Err(Damage::corrupt(
                    0,
                    format!("stream row {row} does not hold its own name"),
                ));
            };
            let entries = (0..info.entry_count)
                .map(|i| f.stream_entry(&info, i))
                .collect::<Result<Vec<_>, Damage>>()?;
            let category = category_of(&name).map_or(NO_CATEGORY, |c| m.categories.slot(c) as u32);
            m.streams.insert(
                name,
                MemStream {
                    first_version: info.first_version,
                    last_version: info.last_version,
                    entries,
                    category,
                },
            );
        }
        m.frames = (0..f.frame_count())
            .map(|i| f.frame(i))
            .collect::<Result<Vec<_>, Damage>>()?;
        Ok(m)
    }

    /// Append the index of the bytes that follow this index's in the same
    /// segment (`later`'s offsets all lie past this one's).
    pub(crate) fn append(&mut self, later: &MemIndex) {
        for (name, offs) in later.categories.iter() {
            let slot = self.categories.slot(name);
            if let Some((_, v)) = self.categories.lists.get_mut(slot) {
                v.extend_from_slice(offs);
            }
        }
        for (name, offs) in later.types.iter() {
            let slot = self.types.slot(name);
            if let Some((_, v)) = self.types.lists.get_mut(slot) {
                v.extend_from_slice(offs);
            }
        }
        for (name, s) in &later.streams {
            match self.streams.get_mut(name) {
                Some(mine) => {
                    mine.last_version = s.last_version;
                    mine.entries.extend_from_slice(&s.entries);
                }
                None => {
                    let category = category_of(name).map_or(NO_CATEGORY, |c| self.categories.slot(c) as u32);
                    self.streams.insert(
                        name.clone(),
                        MemStream {
                            first_version: s.first_version,
                            last_version: s.last_version,
                            entries: s.entries.clone(),
                            category,
                        },
                    );
                }
            }
        }
        self.frames.extend_from_slice(&later.frames);
        self.last_type = None;
    }

    /// The index of the batches whose frames start in `[from, to)` (entries
    /// are in offset order, so each list's part is one run).
    pub(crate) fn range(&self, from: u64, to: u64) -> MemIndex {
        fn run(v: &[u64], from: u64, to: u64) -> &[u64] {
            let a = v.partition_point(|&o| o < from);
            let b = v.partition_point(|&o| o < to);
            v.get(a..b).unwrap_or(&[])
        }
        let mut m = MemIndex::default();
        for (src, dst) in [(&self.categories, &mut m.categories), (&self.types, &mut m.types)] {
            for (name, offs) in src.iter() {
                let part = run(offs, from, to);
                if !part.is_empty() {
                    let slot = dst.slot(name);
                    if let Some((_, v)) = dst.lists.get_mut(slot) {
                        v.extend_from_slice(part);
                    }
                }
            }
        }
        for (name, s) in &self.streams {
            let a = s.entries.partition_point(|e| e.1 < from);
            let b = s.entries.partition_point(|e| e.1 < to);
            let Some(part) = s.entries.get(a..b).filter(|p| !p.is_empty()) else {
                continue;
            };
            // The last version in the range: the next entry's first version
            // minus one, or the stream's last if the range holds its newest.
            let last_version = match s.entries.get(b) {
                Some(next) => next.0.saturating_sub(1),
                None => s.last_version,
            };
            let category = category_of(name).map_or(NO_CATEGORY, |c| m.categories.slot(c) as u32);
            m.streams.insert(
                name.clone(),
                MemStream {
                    first_version: part.first().map_or(0, |e| e.0),
                    last_version,
                    entries: part.to_vec(),
                    category,
                },
            );
        }
        let a = self.frames.partition_point(|f| f.1 < from);
        let b = self.frames.partition_point(|f| f.1 < to);
        m.frames = self.frames.get(a..b).unwrap_or(&[]).to_vec();
        m
    }

    /// Build the index of a whole segment by scanning it once (every batch is
    /// validated, CRCs included). Prev pointers are unknown.
    pub(crate) fn rebuild(segment: &[u8]) -> Result<MemIndex, Damage> {
        let header = SegmentHeader::parse(segment)?;
        let mut builder = IndexBuilder::default();
        let walk = walk_segment_records(segment, header, true, &mut builder);
        match walk.stop {
            Some(d) => Err(d),
            None => Ok(builder.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Prev;
    use crate::{EventData, ExpectedVersion, Log};

    /// The index file encoding of `m`, to compare two indexes.
    fn encoded(m: &MemIndex) -> Vec<u8> {
        m.encode(0, 0, 0, u64::MAX, &mut |_| Prev::NONE, &[]).0
    }

    /// A segment whose last batch has a bad third record: the single-pass
    /// builder has indexed the first two records' event types (one of them new)
    /// when the walk stops, and must take them out again.
    #[test]
    fn builder_drops_the_records_of_an_incomplete_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let ev = |t: &'static str| EventData::new(t, b"payload".as_slice());
        log.append("order-1", ExpectedVersion::Any, &[ev("A"), ev("B")])
            .unwrap();
        log.append("order-2", ExpectedVersion::Any, &[ev("B")]).unwrap();
        log.append("order-1", ExpectedVersion::Any, &[ev("A")]).unwrap();
        log.append("cart-1", ExpectedVersion::Any, &[ev("B"), ev("C"), ev("A")])
            .unwrap();
        log.close().unwrap();
        let path = dir.path().join(crate::format::names::segment_file_name(0));
        let mut bytes = std::fs::read(path).unwrap();
        let whole = MemIndex::rebuild(&bytes).unwrap();
        assert_eq!(whole.frames.len(), 4);
        assert!(whole.types.get("C").is_some());

        // Damage the payload of the last record (the file ends with it and its padding).
        let n = bytes.len();
        bytes[n - 9] ^= 0x40;
        let header = *SegmentHeader::parse(&bytes).unwrap();
        let mut b = IndexBuilder::default();
        let walk = walk_segment_records(&bytes, &header, true, &mut b);
        assert!(walk.stop.is_some());
        let built = b.finish();
        assert_eq!(built.frames.len(), 3);
        assert!(built.types.get("C").is_none());
        assert!(!built.streams.contains_key("cart-1"));
        assert!(built.categories.get("cart").is_none());

        // The same as the index of the complete batches alone.
        let complete = MemIndex::rebuild(&bytes[..walk.end as usize]).unwrap();
        assert_eq!(encoded(&built), encoded(&complete));
        // "B" is in the first two batches (twice in none): one entry each.
        assert_eq!(built.types.get("B").map(Vec::len), Some(2));
        assert_eq!(whole.types.get("A").map(Vec::len), Some(3));
    }

    #[test]
    fn same_name_compares_like_slices() {
        let names: [&[u8]; 9] = [
            b"",
            b"a",
            b"ab",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgi",
            b"ItemAdded",
            b"ItemAddee",
            b"a much longer event type name",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
