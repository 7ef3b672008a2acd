//! The on-disk index of a sealed segment (`.idx`, spec 17), decoded from its
//! bytes and searched in place: [`IdxFile::from_bytes`] over any bytes (a
//! `Vec` in fuzzers and tests), [`IdxFile::open_for`] over a mapping of the
//! file. Every block is checked on first use ([`BlockFile`]).
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
    ALIGN, FRAME_HEADER_LEN, IDX_FLAG_CHECKPOINT, IDX_HEADER_LEN, IDX_MAGIC, IDX_NAMED_ROW_LEN, IDX_STREAM_ROW_LEN,
    INDEX_VERSION, IdxHeader, IdxNamedRow, IdxStreamRow, SEGMENT_HEADER_LEN,
};
use crate::index::blockfile::BlockFile;
use crate::index::{FRAME_ENTRY_LEN, NAMED_ENTRY_LEN, Named, Prev, STREAM_ENTRY_LEN, StreamInfo};
use crate::storage::mmap::Mapping;

/// A `.idx` file (spec 17) over its bytes `B` (a [`Mapping`] of the file
/// unless said otherwise).
#[derive(Debug)]
pub(crate) struct IdxFile<B: AsRef<[u8]> = Mapping> {
    bf: BlockFile<B>,
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

impl IdxFile {
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
            || last.saturating_add(FRAME_HEADER_LEN as u64) > to
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
        let sizes = [
            h.stream_count.get() as usize * IDX_STREAM_ROW_LEN,
            h.stream_entry_count.get() as usize * STREAM_ENTRY_LEN,
            h.category_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.category_entry_count.get() as usize * NAMED_ENTRY_LEN,
            h.type_count.get() as usize * IDX_NAMED_ROW_LEN,
            h.type_entry_count.get() as usize * NAMED_ENTRY_LEN,
            h.frame_count.get() as usize * FRAME_ENTRY_LEN,
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

    /// Entry `i` of a stream: `(first_version, frame_offset)`.
    pub(crate) fn stream_entry(&self, s: &StreamInfo, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.stream_entries_at + (s.entry_start as usize + i as usize) * STREAM_ENTRY_LEN;
        Ok((self.bf.u64(at)?, self.bf.u64(at + size_of::<u64>())?))
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
        self.bf.u64(base + i as usize * NAMED_ENTRY_LEN)
    }

    /// Number of batches.
    pub(crate) fn frame_count(&self) -> u32 {
        self.h.frame_count.get()
    }

    /// Batch `i`: `(first_position, frame_offset)`.
    pub(crate) fn frame(&self, i: u32) -> Result<(u64, u64), Damage> {
        let at = self.frames_at + i as usize * FRAME_ENTRY_LEN;
        Ok((self.bf.u64(at)?, self.bf.u64(at + size_of::<u64>())?))
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
    if h.magic != IDX_MAGIC || h.index_version.get() != INDEX_VERSION {
        return Err(Damage::corrupt(
            0,
            format!("expected index magic and version {INDEX_VERSION}"),
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
        m.add_batch(128, 0, "order-1", 0, 2, [(200, "Placed"), (280, "Paid")].into_iter());
        m.add_batch(400, 2, "user-7", 0, 1, [(472, "Placed")].into_iter());
        let (bytes, rows) = m.encode(0, 4096, 0xdead_beef, u64::MAX, &mut |_| Prev::NONE);
        assert_eq!(rows.len(), 2);
        let f = IdxFile::from_bytes_with(bytes.clone(), 0, 4096, 0xdead_beef).unwrap();
        let s = f.find_stream("order-1").unwrap().unwrap();
        assert_eq!((s.first_version, s.last_version, s.entry_count), (0, 1, 1));
        assert_eq!(f.stream_entry(&s, 0).unwrap(), (0, 128));
        let (start, n) = f.find_named(Named::Type, "Placed").unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(f.named_entry(Named::Type, start + 1).unwrap(), 472);
        assert_eq!(f.find_named(Named::Category, "order").unwrap().map(|c| c.1), Some(1));
        assert_eq!((f.frame_count(), f.frame(1).unwrap()), (2, (2, 400)));
        assert!(f.find_stream("nope").unwrap().is_none());
        let e = IdxFile::from_bytes_with(&bytes[..], 1, 4096, 0xdead_beef).unwrap_err();
        assert_eq!(e.offset, offset_of!(IdxHeader, segment_base) as u64);
    }
}
