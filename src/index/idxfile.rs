//! The on-disk index of a sealed segment (`.idx`, spec 17), decoded from its
//! bytes and searched in place: [`IdxFile::from_bytes`] over any bytes (a
//! `Vec` in fuzzers and tests), [`IdxFile::open_for`] over a mapping of the
//! file. Every block is checked on first use ([`BlockFile`]).
//!
//! Both layouts are read (spec 17.1): version 2 (32-bit offsets and deltas,
//! event type entries pointing at batches) and version 1 (64-bit fields,
//! event type entries pointing at records). Accessors answer in one form
//! whatever the version: absolute versions, positions and offsets, and for
//! an event type the offset of a batch (a version 1 record offset becomes
//! the offset of the batch holding it, found among the frame entries).
//!
//! Invariants of an opened file: its header matches the segment (base, length,
//! seal CRC); its sections, sized by the header's counts, fill the checked
//! region exactly; rows are checked when read (entries in range, versions
//! ordered, names inside the name area).

use std::mem::offset_of;
use std::path::Path;

use zerocopy::FromBytes;

use crate::error::Damage;
use crate::format::hash::stream_hash;
use crate::format::{
    ALIGN, FRAME_HEADER_V3_LEN, IDX_FLAG_CHECKPOINT, IDX_HEADER_LEN, IDX_MAGIC, IDX_NAMED_ROW_LEN, INDEX_VERSION_1,
    INDEX_VERSION_2, IdxHeader, IdxLens, IdxNamedRow, IdxStreamRow, IdxStreamRowV2, SEGMENT_HEADER_LEN, idx_lens,
};
use crate::index::blockfile::BlockFile;
use crate::index::{Named, Prev, StreamInfo};
use crate::storage::mmap::Mapping;

/// A `.idx` file (spec 17) over its bytes `B` (a [`Mapping`] of the file
/// unless said otherwise).
#[derive(Debug)]
pub(crate) struct IdxFile<B: AsRef<[u8]> = Mapping> {
    bf: BlockFile<B>,
    h: IdxHeader,
    /// Row and entry sizes of the file's `index_version`.
    lens: IdxLens,
    streams_at: usize,
    stream_entries_at: usize,
    cats_at: usize,
    cat_entries_at: usize,
    types_at: usize,
    type_entries_at: usize,
    frames_at: usize,
    names_at: usize,
}

impl IdxFile {
    /// The length of its stream rows.
    pub(crate) fn stream_row_len(&self) -> usize {
        self.lens.stream_row
    }

    /// Ask the kernel for the rows around where a search for `name` looks
    /// first (see [`crate::index::prefetch_guess`]).
    pub(crate) fn prefetch_stream_row(&self, name: &str) {
        let hash = stream_hash(name.as_bytes());
        let count = u64::from(self.h.stream_count.get());
        crate::index::prefetch_guess(
            &self.bf,
            self.streams_at,
            self.lens.stream_row,
            count,
            hash,
            self.mask(),
        );
    }

    /// Ask the kernel for the pages of the entries of stream row `s`, at most
    /// `max` of them, from entry `from` on (a hint; see [`BlockFile::prefetch`]).
    pub(crate) fn prefetch_stream_entries(&self, s: &StreamInfo, from: u32, max: u32) {
        let n = s.entry_count.saturating_sub(from).min(max) as usize;
        let at = self.stream_entries_at + (s.entry_start as usize + from as usize) * self.lens.stream_entry;
        self.bf.prefetch(at, n * self.lens.stream_entry);
    }

    /// Open `path` for `segment` (the sealed segment's bytes): map the file
    /// and decode it with [`IdxFile::open`]. `Ok(None)` if the file does not
    /// exist; a failure to open or map it is an I/O failure
    /// ([`Damage::is_io`]), not damage.
    pub(crate) fn open_for(path: &Path, base: u64, segment: &[u8]) -> Result<Option<IdxFile>, Damage> {
        let seal_crc = seal_crc(segment)?;
        match BlockFile::open_path(path, IDX_MAGIC)? {
            Some(bf) => IdxFile::open(bf, base, segment.len() as u64, seal_crc).map(Some),
            None => Ok(None),
        }
    }
}

impl<B: AsRef<[u8]>> IdxFile<B> {
    /// Decode the index file `bytes` (the whole file) of the sealed segment
    /// `segment` based at `base`: its footer and block table, then its header.
    #[cfg_attr(
        not(any(test, feature = "fuzzing")),
        allow(
            dead_code,
            reason = "the decoder over plain bytes: fuzz targets and tests feed it directly"
        )
    )]
    pub(crate) fn from_bytes(bytes: B, base: u64, segment: &[u8]) -> Result<IdxFile<B>, Damage> {
        let seal_crc = seal_crc(segment)?;
        IdxFile::from_bytes_with(bytes, base, segment.len() as u64, seal_crc)
    }

    /// Decode the index file `bytes` of the segment with the given base,
    /// length and seal CRC (without the segment's bytes).
    #[cfg_attr(
        not(any(test, feature = "fuzzing")),
        allow(
            dead_code,
            reason = "the decoder over plain bytes: fuzz targets and tests feed it directly"
        )
    )]
    pub(crate) fn from_bytes_with(bytes: B, base: u64, segment_len: u64, seal_crc: u32) -> Result<IdxFile<B>, Damage> {
        IdxFile::open(BlockFile::from_bytes(bytes, IDX_MAGIC)?, base, segment_len, seal_crc)
    }

    /// Check the header of an index for the segment with the given base,
    /// length and seal CRC.
    pub(crate) fn open(bf: BlockFile<B>, base: u64, segment_len: u64, seal_crc: u32) -> Result<IdxFile<B>, Damage> {
        let h = header(&bf)?;
        if h.flags.get() != 0
            || h.reserved0.get() != 0
            || h.covered_from.get() != 0
            || h.last_frame.get() != 0
            || h.reserved1.iter().any(|&b| b != 0)
        {
            return Err(Damage::corrupt(
                offset_of!(IdxHeader, flags) as u64,
                "expected index flags and reserved fields to be zero",
            ));
        }
        if h.segment_base.get() != base || h.segment_len.get() != segment_len || h.seal_crc.get() != seal_crc {
            return Err(Damage::corrupt(
                offset_of!(IdxHeader, segment_base) as u64,
                format!(
                    "index is for segment base {} length {} seal CRC {:#010x}, not for base {base} length {segment_len} \
                     seal CRC {seal_crc:#010x}",
                    h.segment_base.get(),
                    h.segment_len.get(),
                    h.seal_crc.get()
                ),
            ));
        }
        IdxFile::layout(bf, h)
    }

    /// Check the header of an index checkpoint (spec 17.5) of bytes
    /// `[from, to)` of the active segment based at `base` (the range its file
    /// name gives). Its binding to the segment (the last frame's header CRC,
    /// [`IdxFile::checkpoint_binding`]) is the caller's to check.
    pub(crate) fn open_checkpoint(bf: BlockFile<B>, base: u64, from: u64, to: u64) -> Result<IdxFile<B>, Damage> {
        let h = header(&bf)?;
        if h.flags.get() != IDX_FLAG_CHECKPOINT || h.reserved0.get() != 0 || h.reserved1.iter().any(|&b| b != 0) {
            return Err(Damage::corrupt(
                offset_of!(IdxHeader, flags) as u64,
                format!("expected the checkpoint flag ({IDX_FLAG_CHECKPOINT}) alone and reserved fields zero"),
            ));
        }
        let last = h.last_frame.get();
        if h.segment_base.get() != base
            || h.covered_from.get() != from
            || h.segment_len.get() != to
            || last < from
            || last.saturating_add(FRAME_HEADER_V3_LEN as u64) > to
        {
            return Err(Damage::corrupt(
                offset_of!(IdxHeader, segment_base) as u64,
                format!(
                    "checkpoint is for segment base {} bytes [{}, {}) last frame at {last}, not for base {base} \
                     bytes [{from}, {to}) as its name says",
                    h.segment_base.get(),
                    h.covered_from.get(),
                    h.segment_len.get(),
                ),
            ));
        }
        IdxFile::layout(bf, h)
    }

    /// For a checkpoint: `(last_frame, its header CRC)`, which bind it to the
    /// segment's bytes.
    pub(crate) fn checkpoint_binding(&self) -> (u64, u32) {
        (self.h.last_frame.get(), self.h.seal_crc.get())
    }

    /// The segment bytes `[from, to)` the index covers (a sealed segment's:
    /// `[128, its length)`).
    pub(crate) fn covered(&self) -> (u64, u64) {
        if self.h.flags.get() == IDX_FLAG_CHECKPOINT {
            (self.h.covered_from.get(), self.h.segment_len.get())
        } else {
            (SEGMENT_HEADER_LEN as u64, self.h.segment_len.get())
        }
    }

    /// The sections' places from a checked header.
    fn layout(bf: BlockFile<B>, h: IdxHeader) -> Result<IdxFile<B>, Damage> {
        let lens = idx_lens(h.index_version.get());
        let sizes = [
            h.stream_count.get() as usize * lens.stream_row,
            h.stream_entry_count.get() as usize * lens.stream_entry,
            h.category_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.category_entry_count.get() as usize * lens.named_entry,
            h.type_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.type_entry_count.get() as usize * lens.named_entry,
            h.frame_count.get() as usize * lens.frame_entry,
            h.names_len.get() as usize,
        ];
        let mut at = [0usize; 8];
        let mut pos = IDX_HEADER_LEN;
        for (i, s) in sizes.iter().enumerate() {
            at[i] = pos;
            pos = pos.saturating_add(*s);
        }
        if pos.next_multiple_of(ALIGN as usize) != bf.len() {
            return Err(Damage::corrupt(
                offset_of!(IdxHeader, stream_count) as u64,
                format!(
                    "index counts describe {pos} bytes, but the checked region is {} bytes",
                    bf.len()
                ),
            ));
        }
        Ok(IdxFile {
            h,
            lens,
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

    fn mask(&self) -> u64 {
        self.h.hash_mask.get()
    }

    /// The file's `index_version` (1 or 2).
    pub(crate) fn version(&self) -> u16 {
        self.h.index_version.get()
    }

    fn is_v1(&self) -> bool {
        self.version() == INDEX_VERSION_1
    }

    /// The `u32` at `off` of the checked region.
    fn u32(&self, off: usize) -> Result<u32, Damage> {
        let b = self.bf.get(off, size_of::<u32>())?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
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

    /// Stream row `i` in version 1's form (a version 2 row's
    /// `last_version` computed from its delta).
    fn stream_row(&self, i: u32) -> Result<IdxStreamRow, Damage> {
        let at = self.streams_at + i as usize * self.lens.stream_row;
        let bytes = self.bf.get(at, self.lens.stream_row)?;
        let r = if self.is_v1() {
            IdxStreamRow::read_from_bytes(bytes).map_err(|_| Damage::corrupt(at as u64, "short stream row"))?
        } else {
            let r =
                IdxStreamRowV2::read_from_bytes(bytes).map_err(|_| Damage::corrupt(at as u64, "short stream row"))?;
            let last = r.first_version.get().checked_add(u64::from(r.last_delta.get()));
            let Some(last) = last else {
                return Err(Damage::corrupt(at as u64, "stream row's versions are out of range"));
            };
            IdxStreamRow {
                hash: r.hash,
                name_offset: r.name_offset,
                name_len: r.name_len,
                reserved0: r.reserved0,
                first_version: r.first_version,
                last_version: last.into(),
                entry_start: r.entry_start,
                entry_count: r.entry_count,
                prev_segment: r.prev_segment,
                prev_row: r.prev_row,
                reserved1: 0.into(),
            }
        };
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
        let lo = crate::index::lower_bound_by_hash(u64::from(count), hash, self.mask(), |i| {
            Ok(row_hash_name(u32::try_from(i).unwrap_or(u32::MAX))?.0)
        })?;
        let mut i = u32::try_from(lo).unwrap_or(count);
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

    /// The stream's row at `row`, if that row holds a name with the hash of
    /// `name` (its name is not read: a reader reaching a row through a back
    /// pointer checks the batch the row leads to, which names the stream,
    /// and compares names only if the two disagree).
    pub(crate) fn stream_at_hash(&self, row: u32, name: &str) -> Result<Option<StreamInfo>, Damage> {
        if row >= self.h.stream_count.get() {
            return Ok(None);
        }
        let r = self.stream_row(row)?;
        if r.hash.get() != stream_hash(name.as_bytes()) & self.mask() {
            return Ok(None);
        }
        Ok(Some(self.info(row, &r)))
    }

    /// Entry `i` of a stream: `(first_version, frame_offset)` (version 2:
    /// the row's `first_version` plus the entry's delta).
    pub(crate) fn stream_entry(&self, s: &StreamInfo, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.stream_entries_at + (s.entry_start as usize + i as usize) * self.lens.stream_entry;
        if self.is_v1() {
            return Ok((self.bf.u64(at)?, self.bf.u64(at + size_of::<u64>())?));
        }
        let delta = self.u32(at)?;
        let off = self.u32(at + size_of::<u32>())?;
        // Saturating: a wrong version is caught by the check of the batch.
        Ok((s.first_version.saturating_add(u64::from(delta)), u64::from(off)))
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

    /// Entry `i` (absolute) of a named section: the offset of a batch. A
    /// version 1 event type entry (a record's offset) answers the offset of
    /// the batch holding the record: the last frame entry at or before it
    /// (consecutive records of one batch then give the same batch, which
    /// readers take once).
    pub(crate) fn named_entry(&self, kind: Named, i: u32) -> Result<u64, Damage> {
        let base = match kind {
            Named::Category => self.cat_entries_at,
            Named::Type => self.type_entries_at,
        };
        let at = base + i as usize * self.lens.named_entry;
        if !self.is_v1() {
            return self.u32(at).map(u64::from);
        }
        let off = self.bf.u64(at)?;
        match kind {
            Named::Category => Ok(off),
            Named::Type => self.batch_holding(off),
        }
    }

    /// The offset of the last batch (frame entry) starting at or before
    /// `off`, or `off` itself if none does (the hit then fails its check).
    fn batch_holding(&self, off: u64) -> Result<u64, Damage> {
        let (mut lo, mut hi) = (0u32, self.frame_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.frame(mid)?.1 <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match lo.checked_sub(1) {
            Some(f) => Ok(self.frame(f)?.1),
            None => Ok(off),
        }
    }

    /// Number of batches.
    pub(crate) fn frame_count(&self) -> u32 {
        self.h.frame_count.get()
    }

    /// Batch `i`: `(first_position, frame_offset)` (version 2: the
    /// segment's base plus the entry's delta).
    pub(crate) fn frame(&self, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.frames_at + i as usize * self.lens.frame_entry;
        if self.is_v1() {
            return Ok((self.bf.u64(at)?, self.bf.u64(at + size_of::<u64>())?));
        }
        let delta = self.u32(at)?;
        let off = self.u32(at + size_of::<u32>())?;
        Ok((
            self.h.segment_base.get().saturating_add(u64::from(delta)),
            u64::from(off),
        ))
    }

    /// Every category or event type row: `(name, entry_start, entry_count)`.
    pub(crate) fn named_rows(&self, kind: Named) -> Result<Vec<(Box<str>, u32, u32)>, Damage> {
        let count = match kind {
            Named::Category => self.h.category_count.get(),
            Named::Type => self.h.type_count.get(),
        };
        (0..count)
            .map(|i| {
                let r = self.named_row(kind, i)?;
                let name = self.name(r.name_offset.get(), r.name_len.get())?;
                let at = (self.names_at as u64) + u64::from(r.name_offset.get());
                let name = std::str::from_utf8(name).map_err(|_| Damage::corrupt(at, "a name is not UTF-8"))?;
                Ok((name.into(), r.entry_start.get(), r.entry_count.get()))
            })
            .collect()
    }

    /// Every stream row: `(name, row, last_version)`, for rebuilding the stream table.
    pub(crate) fn stream_rows(&self) -> Result<Vec<(Box<str>, u32, u64)>, Damage> {
        (0..self.h.stream_count.get())
            .map(|i| {
                let r = self.stream_row(i)?;
                let name = self.name(r.name_offset.get(), r.name_len.get())?;
                let at = (self.names_at as u64) + u64::from(r.name_offset.get());
                let name = std::str::from_utf8(name).map_err(|_| Damage::corrupt(at, "stream name is not UTF-8"))?;
                Ok((name.into(), i, r.last_version.get()))
            })
            .collect()
    }
}

/// The header of an index file or checkpoint: its magic and version checked.
fn header<B: AsRef<[u8]>>(bf: &BlockFile<B>) -> Result<IdxHeader, Damage> {
    let h = IdxHeader::read_from_bytes(bf.get(0, IDX_HEADER_LEN)?)
        .map_err(|_| Damage::corrupt(0, "index header is too short"))?;
    if h.magic != IDX_MAGIC || !matches!(h.index_version.get(), INDEX_VERSION_1 | INDEX_VERSION_2) {
        return Err(Damage::corrupt(
            0,
            format!("expected index magic and version {INDEX_VERSION_1} or {INDEX_VERSION_2}"),
        ));
    }
    Ok(h)
}

/// The `header_crc` of the seal at the end of a sealed segment.
pub(crate) fn seal_crc(segment: &[u8]) -> Result<u32, Damage> {
    crate::format::frame::seal_header_crc(segment).ok_or_else(|| Damage::corrupt(0, "segment too short to be sealed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MemIndex;

    /// An index decoded from a `Vec` answers the lookups of the index it was
    /// encoded from, and a header for another segment is damage at the
    /// field's offset.
    #[test]
    fn decodes_from_bytes() {
        let mut m = MemIndex::default();
        m.add_batch(128, 0, "order-1", 0, 2, ["Placed", "Paid"].into_iter());
        m.add_batch(400, 2, "user-7", 0, 1, ["Placed"].into_iter());
        let (bytes, rows) = m.encode(0, 4096, 0xdead_beef, u64::MAX, &mut |_| Prev::NONE, &[]);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), crate::format::INDEX_VERSION_2);
        assert_eq!(rows.len(), 2);
        let f = IdxFile::from_bytes_with(bytes.clone(), 0, 4096, 0xdead_beef).unwrap();
        let s = f.find_stream("order-1").unwrap().unwrap();
        assert_eq!((s.first_version, s.last_version, s.entry_count), (0, 1, 1));
        assert_eq!(f.stream_entry(&s, 0).unwrap(), (0, 128));
        let (start, n) = f.find_named(Named::Type, "Placed").unwrap().unwrap();
        assert_eq!(n, 2);
        // Event type entries name batches.
        assert_eq!(f.named_entry(Named::Type, start + 1).unwrap(), 400);
        assert_eq!(f.find_named(Named::Category, "order").unwrap().map(|c| c.1), Some(1));
        assert_eq!((f.frame_count(), f.frame(1).unwrap()), (2, (2, 400)));
        assert!(f.find_stream("nope").unwrap().is_none());
        let e = IdxFile::from_bytes_with(&bytes[..], 1, 4096, 0xdead_beef).unwrap_err();
        assert_eq!(e.offset, offset_of!(IdxHeader, segment_base) as u64);
    }
}
