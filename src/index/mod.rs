//! Segment indexes: in memory for the active segment, on disk (`.idx`, spec
//! section 17) for sealed ones.
//!
//! [`MemIndex`] is built as batches are appended (or by scanning a segment);
//! [`IdxFile`] is its on-disk form, mapped and searched in place with every
//! block checked on first use. [`IndexCell`] is the index of one segment as
//! readers see it: opened lazily, and replaced by an index rebuilt from the
//! segment if the file is missing or damaged, so reads stay correct.
//!
//! Invariants: entries of a stream are in version order, category, event type
//! and frame entries in position order (= offset order within a segment); a
//! stream row's `prev` names the newest earlier segment holding the stream.

pub(crate) mod blockfile;
pub(crate) mod streamtable;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Damage, Error};
use crate::format::frame::{Frame, RecordSink, frame_records_at, walk_segment_records};
use crate::format::hash::{category_of, stream_hash};
use crate::format::record::RecordRef;
use crate::format::{
    IDX_HEADER_LEN, IDX_MAGIC, IDX_NAMED_ROW_LEN, IDX_STREAM_ROW_LEN, INDEX_VERSION, IdxHeader, IdxNamedRow,
    IdxStreamRow, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::index::blockfile::BlockFile;

/// No earlier segment.
pub(crate) const NO_SEGMENT: u64 = u64::MAX;
/// No row (or not known).
pub(crate) const NO_ROW: u32 = u32::MAX;

/// Where a stream's previous events are: the newest earlier segment holding
/// it, and its row in that segment's index (`NO_ROW` if not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prev {
    pub segment: u64,
    pub row: u32,
}

impl Prev {
    pub const NONE: Prev = Prev {
        segment: NO_SEGMENT,
        row: NO_ROW,
    };
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------ in memory

/// The index of one segment, in memory.
///
/// Built cheaply, batch by batch: one hash lookup per batch (its stream; the
/// stream remembers its category's slot), and per record only a comparison of
/// its event type with the previous record's and a push of its offset.
#[derive(Debug, Default)]
pub(crate) struct MemIndex {
    /// Each stream with events in the segment.
    pub streams: HashMap<Box<str>, MemStream>,
    /// Frame offsets per category, in position order.
    pub categories: NamedLists,
    /// Record offsets per event type, in position order.
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
    fn record(&mut self, frame_offset: u64, record_offset: u64, rec: &RecordRef<'a>) {
        if self.count == 0 || frame_offset != self.frame_offset {
            self.start_batch(frame_offset, rec);
        }
        let slot = self.index.type_slot(rec.event_type_bytes());
        let types = &mut self.index.types.lists;
        if self.touched.last().is_none_or(|t| t.0 != slot) && !self.touched.iter().any(|t| t.0 == slot) {
            self.touched.push((slot, types.get(slot).map_or(0, |(_, v)| v.len())));
        }
        if let Some((_, v)) = types.get_mut(slot) {
            v.push(record_offset);
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
    /// version, event count, and `(record offset, event type)` per record.
    pub(crate) fn add_batch<'t>(
        &mut self,
        frame_offset: u64,
        first_position: u64,
        stream: &str,
        first_version: u64,
        count: u64,
        records: impl Iterator<Item = (u64, &'t str)>,
    ) {
        self.add_batch_bytes(
            frame_offset,
            first_position,
            stream,
            first_version,
            count,
            records.map(|(o, t)| (o, t.as_bytes())),
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
        records: impl Iterator<Item = (u64, &'t [u8])>,
    ) {
        for (off, ty) in records {
            let slot = self.type_slot(ty);
            self.types.push(slot, off);
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
    /// are added per record).
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
    pub(crate) fn add_frame(&mut self, frame: &[u8], frame_offset: u64) {
        let mut recs = frame_records_at(frame).peekable();
        let Some((_, first)) = recs.peek().copied() else { return };
        // `record_count` of the validated frame header.
        let count = frame
            .get(24..28)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) as u64;
        self.add_batch_bytes(
            frame_offset,
            first.position(),
            first.stream(),
            first.stream_version(),
            count,
            recs.map(|(o, r)| (frame_offset + o as u64, r.event_type_bytes())),
        );
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

    /// Encode as an index file (spec 17). `resolve` gives, for a stream, the
    /// newest earlier segment holding it and its row there. Returns
    /// the bytes and, per stream in row order, `(name, row, last_version)`.
    pub(crate) fn encode(
        &self,
        segment_base: u64,
        segment_len: u64,
        seal_crc: u32,
        hash_mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
    ) -> (Vec<u8>, Vec<StreamRowSummary>) {
        let h = |name: &str| stream_hash(name.as_bytes()) & hash_mask;
        let mut streams: Vec<(&str, &MemStream)> = self.streams.iter().map(|(k, v)| (&**k, v)).collect();
        streams.sort_unstable_by(|a, b| (h(a.0), a.0.as_bytes()).cmp(&(h(b.0), b.0.as_bytes())));
        fn sorted_named(m: &NamedLists, h: impl Fn(&str) -> u64) -> Vec<(&str, &Vec<u64>)> {
            let mut v: Vec<(&str, &Vec<u64>)> = m.iter().collect();
            v.sort_unstable_by(|a, b| (h(a.0), a.0.as_bytes()).cmp(&(h(b.0), b.0.as_bytes())));
            v
        }
        let cats = sorted_named(&self.categories, h);
        let types = sorted_named(&self.types, h);

        let mut names: Vec<u8> = Vec::new();
        let mut add_name = |n: &str| {
            let off = names.len() as u32;
            names.extend_from_slice(n.as_bytes());
            off
        };
        let mut stream_rows = Vec::with_capacity(streams.len() * IDX_STREAM_ROW_LEN);
        let mut stream_entries = Vec::new();
        let mut out_rows = Vec::with_capacity(streams.len());
        let mut entry_count = 0u32;
        for (row, (name, s)) in streams.iter().enumerate() {
            let prev = resolve(name);
            let r = IdxStreamRow {
                hash: U64::new(h(name)),
                name_offset: U32::new(add_name(name)),
                name_len: U16::new(name.len() as u16),
                reserved0: U16::ZERO,
                first_version: U64::new(s.first_version),
                last_version: U64::new(s.last_version),
                entry_start: U32::new(entry_count),
                entry_count: U32::new(s.entries.len() as u32),
                prev_segment: U64::new(prev.segment),
                prev_row: U32::new(prev.row),
                reserved1: U32::ZERO,
            };
            stream_rows.extend_from_slice(r.as_bytes());
            for &(v, off) in &s.entries {
                stream_entries.extend_from_slice(&v.to_le_bytes());
                stream_entries.extend_from_slice(&off.to_le_bytes());
            }
            entry_count += s.entries.len() as u32;
            out_rows.push((Box::<str>::from(*name), row as u32, s.last_version));
        }
        let named = |list: &[(&str, &Vec<u64>)], add_name: &mut dyn FnMut(&str) -> u32| {
            let mut rows = Vec::with_capacity(list.len() * IDX_NAMED_ROW_LEN);
            let mut entries = Vec::new();
            let mut n = 0u32;
            for (name, offs) in list {
                let r = IdxNamedRow {
                    hash: U64::new(h(name)),
                    name_offset: U32::new(add_name(name)),
                    name_len: U16::new(name.len() as u16),
                    reserved0: U16::ZERO,
                    entry_start: U32::new(n),
                    entry_count: U32::new(offs.len() as u32),
                    reserved1: U64::ZERO,
                };
                rows.extend_from_slice(r.as_bytes());
                for o in offs.iter() {
                    entries.extend_from_slice(&o.to_le_bytes());
                }
                n += offs.len() as u32;
            }
            (rows, entries, n)
        };
        let (cat_rows, cat_entries, cat_n) = named(&cats, &mut add_name);
        let (type_rows, type_entries, type_n) = named(&types, &mut add_name);
        let mut frames = Vec::with_capacity(self.frames.len() * 16);
        for &(p, o) in &self.frames {
            frames.extend_from_slice(&p.to_le_bytes());
            frames.extend_from_slice(&o.to_le_bytes());
        }
        let header = IdxHeader {
            magic: IDX_MAGIC,
            index_version: U16::new(INDEX_VERSION),
            flags: U16::ZERO,
            reserved0: U32::ZERO,
            segment_base: U64::new(segment_base),
            segment_len: U64::new(segment_len),
            hash_mask: U64::new(hash_mask),
            stream_count: U32::new(streams.len() as u32),
            stream_entry_count: U32::new(entry_count),
            category_count: U32::new(cats.len() as u32),
            category_entry_count: U32::new(cat_n),
            type_count: U32::new(types.len() as u32),
            type_entry_count: U32::new(type_n),
            frame_count: U32::new(self.frames.len() as u32),
            names_len: U32::new(names.len() as u32),
            seal_crc: U32::new(seal_crc),
            reserved1: [0; 52],
        };
        let mut body = Vec::with_capacity(
            IDX_HEADER_LEN
                + stream_rows.len()
                + stream_entries.len()
                + cat_rows.len()
                + cat_entries.len()
                + type_rows.len()
                + type_entries.len()
                + frames.len()
                + names.len()
                + 8,
        );
        body.extend_from_slice(header.as_bytes());
        for part in [
            &stream_rows,
            &stream_entries,
            &cat_rows,
            &cat_entries,
            &type_rows,
            &type_entries,
            &frames,
            &names,
        ] {
            body.extend_from_slice(part);
        }
        body.resize(body.len().next_multiple_of(8), 0);
        (blockfile::finish(body, IDX_MAGIC), out_rows)
    }
}

// ------------------------------------------------------------------ on disk

/// `(name, row, last_version)` of a stream row, for the stream table.
pub(crate) type StreamRowSummary = (Box<str>, u32, u64);

/// Which named section of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    Category,
    Type,
}

/// A mapped `.idx` file (spec 17).
#[derive(Debug)]
pub(crate) struct IdxFile {
    bf: BlockFile,
    h: IdxHeader,
    streams_at: usize,
    stream_entries_at: usize,
    cats_at: usize,
    cat_entries_at: usize,
    types_at: usize,
    type_entries_at: usize,
    frames_at: usize,
    names_at: usize,
}

/// A stream's row in a segment index, as the reader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub row: u32,
    pub first_version: u64,
    pub last_version: u64,
    pub entry_start: u32,
    pub entry_count: u32,
    /// `None`: not known.
    pub prev: Option<Prev>,
}

impl IdxFile {
    /// Open and check the header of an index for the segment with the given
    /// base, length and seal CRC.
    pub(crate) fn open(bf: BlockFile, base: u64, segment_len: u64, seal_crc: u32) -> Result<IdxFile, Damage> {
        let h = IdxHeader::read_from_bytes(bf.get(0, IDX_HEADER_LEN)?)
            .map_err(|_| Damage::corrupt(0, "index header is too short"))?;
        if h.magic != IDX_MAGIC || h.index_version.get() != INDEX_VERSION {
            return Err(Damage::corrupt(
                0,
                format!("expected index magic and version {INDEX_VERSION}"),
            ));
        }
        if h.flags.get() != 0 || h.reserved0.get() != 0 || h.reserved1.iter().any(|&b| b != 0) {
            return Err(Damage::corrupt(
                10,
                "expected index flags and reserved fields to be zero",
            ));
        }
        if h.segment_base.get() != base || h.segment_len.get() != segment_len || h.seal_crc.get() != seal_crc {
            return Err(Damage::corrupt(
                16,
                format!(
                    "index is for segment base {} length {} seal CRC {:#010x}, not for base {base} length {segment_len} \
                     seal CRC {seal_crc:#010x}",
                    h.segment_base.get(),
                    h.segment_len.get(),
                    h.seal_crc.get()
                ),
            ));
        }
        let sizes = [
            h.stream_count.get() as usize * IDX_STREAM_ROW_LEN,
            h.stream_entry_count.get() as usize * 16,
            h.category_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.category_entry_count.get() as usize * 8,
            h.type_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.type_entry_count.get() as usize * 8,
            h.frame_count.get() as usize * 16,
            h.names_len.get() as usize,
        ];
        let mut at = [0usize; 8];
        let mut pos = IDX_HEADER_LEN;
        for (i, s) in sizes.iter().enumerate() {
            at[i] = pos;
            pos = pos.saturating_add(*s);
        }
        if pos.next_multiple_of(8) != bf.len() {
            return Err(Damage::corrupt(
                40,
                format!(
                    "index counts describe {pos} bytes, but the checked region is {} bytes",
                    bf.len()
                ),
            ));
        }
        Ok(IdxFile {
            h,
            streams_at: at[0],
            stream_entries_at: at[1],
            cats_at: at[2],
            cat_entries_at: at[3],
            types_at: at[4],
            type_entries_at: at[5],
            frames_at: at[6],
            names_at: at[7],
            bf,
        })
    }

    /// Open `path` for `segment` (the sealed segment's bytes).
    /// `Ok(None)` if the file does not exist.
    pub(crate) fn open_for(path: &Path, base: u64, segment: &[u8]) -> Result<Option<IdxFile>, Damage> {
        let seal_crc = seal_crc(segment)?;
        match BlockFile::open_path(path, IDX_MAGIC)? {
            Some(bf) => IdxFile::open(bf, base, segment.len() as u64, seal_crc).map(Some),
            None => Ok(None),
        }
    }

    fn mask(&self) -> u64 {
        self.h.hash_mask.get()
    }

    fn name(&self, off: u32, len: u16) -> Result<&[u8], Damage> {
        let (off, len) = (off as usize, len as usize);
        if off + len > self.h.names_len.get() as usize {
            return Err(Damage::corrupt(
                (self.names_at + off) as u64,
                "a row's name lies outside the name area",
            ));
        }
        self.bf.get(self.names_at + off, len)
    }

    fn stream_row(&self, i: u32) -> Result<IdxStreamRow, Damage> {
        let at = self.streams_at + i as usize * IDX_STREAM_ROW_LEN;
        let r = IdxStreamRow::read_from_bytes(self.bf.get(at, IDX_STREAM_ROW_LEN)?)
            .map_err(|_| Damage::corrupt(at as u64, "short stream row"))?;
        let end = r.entry_start.get() as u64 + r.entry_count.get() as u64;
        if end > self.h.stream_entry_count.get() as u64
            || r.entry_count.get() == 0
            || r.first_version.get() > r.last_version.get()
        {
            return Err(Damage::corrupt(
                at as u64,
                "stream row's entries or versions are out of range",
            ));
        }
        Ok(r)
    }

    fn info(&self, row: u32, r: &IdxStreamRow) -> StreamInfo {
        StreamInfo {
            row,
            first_version: r.first_version.get(),
            last_version: r.last_version.get(),
            entry_start: r.entry_start.get(),
            entry_count: r.entry_count.get(),
            prev: Some(Prev {
                segment: r.prev_segment.get(),
                row: r.prev_row.get(),
            }),
        }
    }

    /// Binary search rows `[0, count)` at `at` of `row_len` for `hash`,
    /// then compare full names.
    fn search(
        &self,
        count: u32,
        hash: u64,
        name: &[u8],
        row_hash_name: &dyn Fn(u32) -> Result<(u64, u32, u16), Damage>,
    ) -> Result<Option<u32>, Damage> {
        let (mut lo, mut hi) = (0u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if row_hash_name(mid)?.0 < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut i = lo;
        while i < count {
            let (h, off, len) = row_hash_name(i)?;
            if h != hash {
                break;
            }
            if self.name(off, len)? == name {
                return Ok(Some(i));
            }
            i += 1;
        }
        Ok(None)
    }

    /// Find a stream by name.
    pub(crate) fn find_stream(&self, name: &str) -> Result<Option<StreamInfo>, Damage> {
        let hash = stream_hash(name.as_bytes()) & self.mask();
        let found = self.search(self.h.stream_count.get(), hash, name.as_bytes(), &|i| {
            let r = self.stream_row(i)?;
            Ok((r.hash.get(), r.name_offset.get(), r.name_len.get()))
        })?;
        match found {
            Some(row) => Ok(Some(self.info(row, &self.stream_row(row)?))),
            None => Ok(None),
        }
    }

    /// The stream's row at `row`, if that row holds this stream's name.
    pub(crate) fn stream_at(&self, row: u32, name: &str) -> Result<Option<StreamInfo>, Damage> {
        if row >= self.h.stream_count.get() {
            return Ok(None);
        }
        let r = self.stream_row(row)?;
        if self.name(r.name_offset.get(), r.name_len.get())? != name.as_bytes() {
            return Ok(None);
        }
        Ok(Some(self.info(row, &r)))
    }

    /// Entry `i` of a stream: `(first_version, frame_offset)`.
    pub(crate) fn stream_entry(&self, s: &StreamInfo, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.stream_entries_at + (s.entry_start as usize + i as usize) * 16;
        Ok((self.bf.u64(at)?, self.bf.u64(at + 8)?))
    }

    fn named_row(&self, kind: Named, i: u32) -> Result<IdxNamedRow, Damage> {
        let base = match kind {
            Named::Category => self.cats_at,
            Named::Type => self.types_at,
        };
        let at = base + i as usize * IDX_NAMED_ROW_LEN;
        let r = IdxNamedRow::read_from_bytes(self.bf.get(at, IDX_NAMED_ROW_LEN)?)
            .map_err(|_| Damage::corrupt(at as u64, "short row"))?;
        let total = match kind {
            Named::Category => self.h.category_entry_count.get(),
            Named::Type => self.h.type_entry_count.get(),
        };
        if r.entry_start.get() as u64 + r.entry_count.get() as u64 > total as u64 {
            return Err(Damage::corrupt(at as u64, "row's entries are out of range"));
        }
        Ok(r)
    }

    /// Find a category or event type: `(entry_start, entry_count)`.
    pub(crate) fn find_named(&self, kind: Named, name: &str) -> Result<Option<(u32, u32)>, Damage> {
        let count = match kind {
            Named::Category => self.h.category_count.get(),
            Named::Type => self.h.type_count.get(),
        };
        let hash = stream_hash(name.as_bytes()) & self.mask();
        let found = self.search(count, hash, name.as_bytes(), &|i| {
            let r = self.named_row(kind, i)?;
            Ok((r.hash.get(), r.name_offset.get(), r.name_len.get()))
        })?;
        match found {
            Some(i) => {
                let r = self.named_row(kind, i)?;
                Ok(Some((r.entry_start.get(), r.entry_count.get())))
            }
            None => Ok(None),
        }
    }

    /// Entry `i` (absolute) of a named section: a frame or record offset.
    pub(crate) fn named_entry(&self, kind: Named, i: u32) -> Result<u64, Damage> {
        let base = match kind {
            Named::Category => self.cat_entries_at,
            Named::Type => self.type_entries_at,
        };
        self.bf.u64(base + i as usize * 8)
    }

    /// Number of batches.
    pub(crate) fn frame_count(&self) -> u32 {
        self.h.frame_count.get()
    }

    /// Batch `i`: `(first_position, frame_offset)`.
    pub(crate) fn frame(&self, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.frames_at + i as usize * 16;
        Ok((self.bf.u64(at)?, self.bf.u64(at + 8)?))
    }

    /// Every stream row: `(name, row, last_version)`, for rebuilding the stream table.
    pub(crate) fn stream_rows(&self) -> Result<Vec<(Box<str>, u32, u64)>, Damage> {
        (0..self.h.stream_count.get())
            .map(|i| {
                let r = self.stream_row(i)?;
                let name = self.name(r.name_offset.get(), r.name_len.get())?;
                let name = std::str::from_utf8(name).map_err(|_| Damage::corrupt(0, "stream name is not UTF-8"))?;
                Ok((name.into(), i, r.last_version.get()))
            })
            .collect()
    }
}

/// The `header_crc` of the seal at the end of a sealed segment.
pub(crate) fn seal_crc(segment: &[u8]) -> Result<u32, Damage> {
    let at = segment.len().saturating_sub(crate::format::FRAME_HEADER_LEN);
    if at < SEGMENT_HEADER_LEN {
        return Err(Damage::corrupt(0, "segment too short to be sealed"));
    }
    let mut b = [0u8; 4];
    b.copy_from_slice(&segment[at + 4..at + 8]);
    Ok(u32::from_le_bytes(b))
}

// ------------------------------------------------------------------ cells

/// A segment's index as readers use it.
#[derive(Debug, Clone)]
pub(crate) enum Index {
    Mem(Arc<RwLock<MemIndex>>),
    Disk(Arc<IdxFile>),
}

/// The index of one segment, shared by every view of it.
#[derive(Debug)]
pub(crate) struct IndexCell {
    /// The `.idx` path (sealed segments) or `None` (active segment).
    path: Option<PathBuf>,
    base: u64,
    state: RwLock<Option<Index>>,
    /// Damage found in the index file (reported; the index was rebuilt).
    damage: Mutex<Option<Error>>,
    /// The writer rewrote the file after the damage.
    rewritten: AtomicBool,
    /// The index in use was rebuilt because the file did not exist.
    missing: AtomicBool,
    /// Counter the writer watches: bumped when damage is found.
    notify: OnceLock<Arc<AtomicU64>>,
}

impl IndexCell {
    /// A cell for the segment based at `base` whose index file is `path`
    /// (`None` for the active segment, whose index lives only in memory),
    /// holding `index` or, if `None`, opening the file on first use.
    pub(crate) fn new(base: u64, path: Option<PathBuf>, index: Option<Index>) -> IndexCell {
        IndexCell {
            path,
            base,
            state: RwLock::new(index),
            damage: Mutex::new(None),
            rewritten: AtomicBool::new(false),
            missing: AtomicBool::new(false),
            notify: OnceLock::new(),
        }
    }

    /// Have `counter` bumped whenever damage is found in this index (the
    /// writer then rewrites the file).
    pub(crate) fn notify(&self, counter: &Arc<AtomicU64>) {
        let _ = self.notify.set(counter.clone());
    }

    /// If the index in use was rebuilt because its file did not exist, and
    /// the file exists now, switch to it (frees the in-memory index).
    pub(crate) fn retry_disk(&self, segment: &[u8]) {
        if !self.missing.load(Ordering::Acquire) {
            return;
        }
        if let Some(p) = &self.path
            && let Ok(Some(f)) = IdxFile::open_for(p, self.base, segment)
        {
            self.set(Index::Disk(Arc::new(f)));
            self.missing.store(false, Ordering::Release);
        }
    }

    /// Whether the index in use was rebuilt because its file did not exist
    /// (so [`IndexCell::retry_disk`] may switch to the file).
    pub(crate) fn is_missing(&self) -> bool {
        self.missing.load(Ordering::Acquire)
    }

    /// A cell for the same segment and index file holding nothing yet (it
    /// opens the file on first use): for a cache that lets go of this one's
    /// mapping. Damage found in this cell is not carried over (the file is
    /// checked again when opened); the writer's notification is.
    pub(crate) fn fresh(&self) -> IndexCell {
        let cell = IndexCell::new(self.base, self.path.clone(), None);
        if let Some(n) = self.notify.get() {
            cell.notify(n);
        }
        cell
    }

    /// The index file was rewritten from the in-memory index now in use.
    pub(crate) fn mark_rewritten(&self) {
        self.rewritten.store(true, Ordering::Release);
    }

    /// Replace the index in use (the writer, once it wrote the file).
    pub(crate) fn set(&self, index: Index) {
        *lock_write(&self.state) = Some(index);
    }

    /// The index, opening the file on first use; a missing or damaged file is
    /// replaced by an index rebuilt from `segment` (and the damage recorded).
    pub(crate) fn get(&self, segment: &[u8]) -> Result<Index, Error> {
        if let Some(i) = lock_read(&self.state).as_ref() {
            return Ok(i.clone());
        }
        let mut st = lock_write(&self.state);
        if let Some(i) = st.as_ref() {
            return Ok(i.clone());
        }
        let idx = match &self.path {
            Some(p) => match IdxFile::open_for(p, self.base, segment) {
                Ok(Some(f)) => Index::Disk(Arc::new(f)),
                Ok(None) => self.rebuilt(p, segment, None)?,
                // Not damage: the file may well be intact (EMFILE, ENOMEM,
                // ...). Reported as such, and nothing is rebuilt or rewritten.
                Err(d) if d.is_io() => return Err(d.at(p)),
                Err(d) => self.rebuilt(p, segment, Some(d))?,
            },
            None => {
                // Live cells are created with their index; nothing to open.
                let mem = MemIndex::rebuild(segment).map_err(|d| d.at(self.segment_path()))?;
                Index::Mem(Arc::new(RwLock::new(mem)))
            }
        };
        *st = Some(idx.clone());
        Ok(idx)
    }

    /// Rebuild from the segment; `damage`: what was wrong with the file
    /// (`None`: it does not exist).
    fn rebuilt(&self, path: &Path, segment: &[u8], damage: Option<Damage>) -> Result<Index, Error> {
        let seg_path = path.with_extension("seg");
        let mem = MemIndex::rebuild(segment).map_err(|d| d.at(&seg_path))?;
        if let Some(d) = damage {
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.at(path));
            if let Some(n) = self.notify.get() {
                n.fetch_add(1, Ordering::AcqRel);
            }
        } else {
            // Not written yet (a reader racing the writer's sealer) or
            // deleted (the writer rebuilds it when it opens the log): not
            // damage; `retry_disk` picks the file up once it exists.
            self.missing.store(true, Ordering::Release);
        }
        Ok(Index::Mem(Arc::new(RwLock::new(mem))))
    }

    /// Replace a disk index found damaged while in use by one rebuilt from
    /// `segment`.
    pub(crate) fn damaged(&self, segment: &[u8], d: Damage) -> Result<Index, Error> {
        let Some(p) = self.path.clone() else {
            return Err(d.at(self.segment_path()));
        };
        let idx = self.rebuilt(&p, segment, Some(d))?;
        *lock_write(&self.state) = Some(idx.clone());
        Ok(idx)
    }

    /// The segment file this index describes (for messages): beside the
    /// index file, or, for the active segment's cell (no index file), its
    /// name alone, the directory being unknown here.
    fn segment_path(&self) -> PathBuf {
        match &self.path {
            Some(p) => p.with_extension("seg"),
            None => PathBuf::from(crate::format::names::segment_file_name(self.base)),
        }
    }

    /// The damage found in this segment's index file, if any.
    pub(crate) fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string())
    }

    /// Whether the index in use was rebuilt (its file is damaged or missing).
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.damage.lock().unwrap_or_else(|p| p.into_inner()).is_some() && !self.rewritten.load(Ordering::Acquire)
    }

    /// The index currently in use, if one was loaded.
    pub(crate) fn current(&self) -> Option<Index> {
        lock_read(&self.state).clone()
    }
}

impl Index {
    /// Find a stream in this segment.
    pub(crate) fn find_stream(&self, name: &str) -> Result<Option<StreamInfo>, Damage> {
        match self {
            Index::Disk(f) => f.find_stream(name),
            Index::Mem(m) => Ok(lock_read(m).streams.get(name).map(|s| StreamInfo {
                row: NO_ROW,
                first_version: s.first_version,
                last_version: s.last_version,
                entry_start: 0,
                entry_count: s.entries.len() as u32,
                prev: None,
            })),
        }
    }

    /// A stream by its row (disk) or name (memory).
    pub(crate) fn stream_at(&self, row: u32, name: &str) -> Result<Option<StreamInfo>, Damage> {
        match self {
            Index::Disk(f) if row != NO_ROW => match f.stream_at(row, name)? {
                Some(i) => Ok(Some(i)),
                None => f.find_stream(name),
            },
            _ => self.find_stream(name),
        }
    }

    /// Entry `i` of stream `name` described by `s`.
    pub(crate) fn stream_entry(&self, name: &str, s: &StreamInfo, i: u32) -> Result<Option<(u64, u64)>, Damage> {
        match self {
            Index::Disk(f) => {
                if i < s.entry_count {
                    f.stream_entry(s, i).map(Some)
                } else {
                    Ok(None)
                }
            }
            Index::Mem(m) => Ok(lock_read(m)
                .streams
                .get(name)
                .and_then(|st| st.entries.get(i as usize).copied())),
        }
    }

    /// Number of entries of a category or type, and a handle to read them.
    pub(crate) fn find_named(&self, kind: Named, name: &str) -> Result<Option<(u32, u32)>, Damage> {
        match self {
            Index::Disk(f) => f.find_named(kind, name),
            Index::Mem(m) => {
                let g = lock_read(m);
                let map = match kind {
                    Named::Category => &g.categories,
                    Named::Type => &g.types,
                };
                Ok(map.get(name).map(|v| (0, v.len() as u32)))
            }
        }
    }

    /// Entry `start + i` of a category or type.
    pub(crate) fn named_entry(&self, kind: Named, name: &str, start: u32, i: u32) -> Result<Option<u64>, Damage> {
        match self {
            Index::Disk(f) => f.named_entry(kind, start + i).map(Some),
            Index::Mem(m) => {
                let g = lock_read(m);
                let map = match kind {
                    Named::Category => &g.categories,
                    Named::Type => &g.types,
                };
                Ok(map.get(name).and_then(|v| v.get(i as usize).copied()))
            }
        }
    }

    /// Number of batches.
    pub(crate) fn frame_count(&self) -> u32 {
        match self {
            Index::Disk(f) => f.frame_count(),
            Index::Mem(m) => lock_read(m).frames.len() as u32,
        }
    }

    /// Batch `i`: `(first_position, frame_offset)`.
    pub(crate) fn frame(&self, i: u32) -> Result<Option<(u64, u64)>, Damage> {
        match self {
            Index::Disk(f) => {
                if i < f.frame_count() {
                    f.frame(i).map(Some)
                } else {
                    Ok(None)
                }
            }
            Index::Mem(m) => Ok(lock_read(m).frames.get(i as usize).copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventData, ExpectedVersion, Log, Options};

    /// The index file encoding of `m`, to compare two indexes.
    fn encoded(m: &MemIndex) -> Vec<u8> {
        m.encode(0, 0, 0, u64::MAX, &mut |_| Prev::NONE).0
    }

    /// A segment whose last batch has a bad third record: the single-pass
    /// builder has indexed the first two records' event types (one of them new)
    /// when the walk stops, and must take them out again.
    #[test]
    fn builder_drops_the_records_of_an_incomplete_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
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
        assert_eq!(built.types.get("B").map(Vec::len), Some(2));
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
