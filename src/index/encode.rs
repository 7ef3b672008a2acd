//! Writing a [`MemIndex`] as an `.idx` file (spec 17): rows sorted by
//! `(hash, name)`, each section encoded by its own step, then the header, the
//! sections in spec order, padding to 8, and the block table and footer.
//!
//! Two layouts: version 2 (32-bit offsets and deltas, event type entries
//! pointing at batches), written whenever the segment allows it
//! ([`INDEX_V2_LIMIT`]), and version 1 (64-bit fields, event type entries
//! pointing at records), written otherwise and when `check` compares a
//! version 1 file. Version 1's record offsets are found by walking each
//! listed batch's records in the segment's bytes (the in-memory index lists
//! batches only).
//!
//! Invariant: the bytes are a pure function of the index, the segment's
//! identity (and, for version 1, bytes), the version and `resolve` (the
//! golden vectors pin them).

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use zerocopy::FromBytes;

use crate::format::frame::frame_records_at;
use crate::format::hash::stream_hash;
use crate::format::{
    ALIGN, FrameHeader, IDX_FLAG_CHECKPOINT, IDX_HEADER_LEN, IDX_MAGIC, IDX_NAMED_ROW_LEN, INDEX_V2_LIMIT,
    INDEX_VERSION_1, INDEX_VERSION_2, IdxHeader, IdxNamedRow, IdxStreamRow, IdxStreamRowV2, idx_lens,
};
use crate::index::blockfile;
use crate::index::{MemIndex, MemStream, NamedLists, Prev, StreamRowSummary};

/// What an index file describes (its header's identity fields).
struct Identity {
    segment_base: u64,
    /// A sealed segment's length, or a checkpoint's covered end.
    segment_len: u64,
    /// The seal's header CRC, or a checkpoint's last frame's.
    seal_crc: u32,
    /// A checkpoint: `(covered_from, last_frame)`.
    checkpoint: Option<(u64, u64)>,
    /// `index_version`: 1 or 2.
    version: u16,
}

/// The name area being built: names in the order rows are written.
#[derive(Default)]
struct Names(Vec<u8>);

impl Names {
    /// Append `n`; its offset in the area.
    fn add(&mut self, n: &str) -> u32 {
        let off = self.0.len() as u32;
        self.0.extend_from_slice(n.as_bytes());
        off
    }
}

/// One encoded section pair: rows, their entries, and the number of entries.
#[derive(Default)]
struct Section {
    rows: Vec<u8>,
    entries: Vec<u8>,
    entry_count: u32,
}

/// `items` sorted by `(hash(name), name)`, the order of every row section.
fn sorted_by_hash<'a, T>(items: impl Iterator<Item = (&'a str, T)>, h: &impl Fn(&str) -> u64) -> Vec<(&'a str, T)> {
    let mut v: Vec<(&str, T)> = items.collect();
    v.sort_unstable_by(|a, b| (h(a.0), a.0.as_bytes()).cmp(&(h(b.0), b.0.as_bytes())));
    v
}

/// The names and offsets of `m` sorted by `(hash(name), name)`.
fn sorted_named<'a>(m: &'a NamedLists, h: &impl Fn(&str) -> u64) -> Vec<(&'a str, &'a Vec<u64>)> {
    sorted_by_hash(m.iter(), h)
}

/// The stream rows and stream entries; per row, `(name, row, last_version)`.
fn encode_streams(
    version: u16,
    streams: &[(&str, &MemStream)],
    h: &impl Fn(&str) -> u64,
    names: &mut Names,
    resolve: &mut dyn FnMut(&str) -> Prev,
) -> (Section, Vec<StreamRowSummary>) {
    let lens = idx_lens(version);
    let mut s = Section {
        rows: Vec::with_capacity(streams.len() * lens.stream_row),
        entries: Vec::with_capacity(streams.iter().map(|x| x.1.entries.len()).sum::<usize>() * lens.stream_entry),
        entry_count: 0,
    };
    let mut summary = Vec::with_capacity(streams.len());
    for (row, (name, st)) in streams.iter().enumerate() {
        let prev = resolve(name);
        let (hash, name_offset, name_len) = (
            U64::new(h(name)),
            U32::new(names.add(name)),
            U16::new(name.len() as u16),
        );
        let (entry_start, entry_count) = (U32::new(s.entry_count), U32::new(st.entries.len() as u32));
        if version == INDEX_VERSION_1 {
            let r = IdxStreamRow {
                hash,
                name_offset,
                name_len,
                reserved0: U16::ZERO,
                first_version: U64::new(st.first_version),
                last_version: U64::new(st.last_version),
                entry_start,
                entry_count,
                prev_segment: U64::new(prev.segment),
                prev_row: U32::new(prev.row),
                reserved1: U32::ZERO,
            };
            s.rows.extend_from_slice(r.as_bytes());
            for &(v, off) in &st.entries {
                s.entries.extend_from_slice(&v.to_le_bytes());
                s.entries.extend_from_slice(&off.to_le_bytes());
            }
        } else {
            // Deltas and offsets fit: `fits_v2` checked them.
            let r = IdxStreamRowV2 {
                hash,
                name_offset,
                name_len,
                reserved0: U16::ZERO,
                first_version: U64::new(st.first_version),
                last_delta: U32::new(st.last_version.wrapping_sub(st.first_version) as u32),
                entry_start,
                entry_count,
                prev_row: U32::new(prev.row),
                prev_segment: U64::new(prev.segment),
            };
            s.rows.extend_from_slice(r.as_bytes());
            for &(v, off) in &st.entries {
                s.entries
                    .extend_from_slice(&(v.wrapping_sub(st.first_version) as u32).to_le_bytes());
                s.entries.extend_from_slice(&(off as u32).to_le_bytes());
            }
        }
        s.entry_count += st.entries.len() as u32;
        summary.push((Box::<str>::from(*name), row as u32, st.last_version));
    }
    (s, summary)
}

/// The rows and entries of a category or event type section; `entries`
/// gives a row's entries (its list, or for version 1's event types the
/// records of the listed batches), `entry_len` their size (4: `u32`, 8: `u64`).
fn encode_named(
    list: &[(&str, &Vec<u64>)],
    h: &impl Fn(&str) -> u64,
    names: &mut Names,
    entry_len: usize,
    entries: &dyn Fn(&str, &[u64]) -> Vec<u64>,
) -> Section {
    let mut s = Section {
        rows: Vec::with_capacity(list.len() * IDX_NAMED_ROW_LEN),
        ..Section::default()
    };
    for (name, listed) in list {
        let offs = entries(name, listed);
        let r = IdxNamedRow {
            hash: U64::new(h(name)),
            name_offset: U32::new(names.add(name)),
            name_len: U16::new(name.len() as u16),
            reserved0: U16::ZERO,
            entry_start: U32::new(s.entry_count),
            entry_count: U32::new(offs.len() as u32),
            reserved1: U64::ZERO,
        };
        s.rows.extend_from_slice(r.as_bytes());
        for o in offs.iter() {
            match entry_len {
                4 => s.entries.extend_from_slice(&(*o as u32).to_le_bytes()),
                _ => s.entries.extend_from_slice(&o.to_le_bytes()),
            }
        }
        s.entry_count += offs.len() as u32;
    }
    s
}

/// The records of event type `ty` of the batch at `off` of `segment` (file
/// offsets): version 1's event type entries for a listed batch. Only a
/// segment of format version 1 or 2 can need index version 1 (a version-3
/// segment is shorter than 2^32 bytes, spec 3.6).
fn records_of_type(segment: &[u8], off: u64, ty: &str) -> impl Iterator<Item = u64> {
    let frame = usize::try_from(off)
        .ok()
        .and_then(|o| segment.get(o..))
        .and_then(|rest| {
            let (h, _) = FrameHeader::ref_from_prefix(rest).ok()?;
            rest.get(..usize::try_from(h.frame_len.get()).ok()?)
        })
        .unwrap_or_default();
    frame_records_at(frame, &crate::format::Layout::V2)
        .filter(move |(_, r)| r.event_type_bytes() == ty.as_bytes())
        .map(move |(o, _)| off + o as u64)
}

impl MemIndex {
    /// Encode as an index file (spec 17) of the sealed segment `segment`
    /// (its bytes, `segment_len` of them) based at `segment_base`: version 2
    /// if the segment allows it, else version 1. `resolve` gives, for a
    /// stream, the newest earlier segment holding it and its row there.
    /// Returns the bytes and, per stream in row order, `(name, row,
    /// last_version)`.
    pub(crate) fn encode(
        &self,
        segment_base: u64,
        segment_len: u64,
        seal_crc: u32,
        hash_mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
        segment: &[u8],
    ) -> (Vec<u8>, Vec<StreamRowSummary>) {
        let version = self.version_for(segment_base, segment_len, INDEX_V2_LIMIT);
        self.encode_version(
            version,
            segment_base,
            segment_len,
            seal_crc,
            hash_mask,
            resolve,
            segment,
        )
        .unwrap_or_default()
    }

    /// [`MemIndex::encode`] in layout `version` (1 or 2): `None` if this
    /// index does not fit version 2 and `version` is 2 (`check` compares a
    /// file with the index rebuilt in the file's own version).
    #[expect(
        clippy::too_many_arguments,
        reason = "the header's identity fields, named as in the spec"
    )]
    pub(crate) fn encode_version(
        &self,
        version: u16,
        segment_base: u64,
        segment_len: u64,
        seal_crc: u32,
        hash_mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
        segment: &[u8],
    ) -> Option<(Vec<u8>, Vec<StreamRowSummary>)> {
        let id = Identity {
            segment_base,
            segment_len,
            seal_crc,
            checkpoint: None,
            version,
        };
        self.encode_as(&id, hash_mask, resolve, segment)
    }

    /// Encode as an index checkpoint (spec 17.5) of bytes `[from, to)` of the
    /// active segment based at `segment_base` (whose bytes `segment` holds
    /// at least up to `to`), whose last frame starts at `last_frame` and has
    /// the header CRC `frame_crc`: version 2 if the range allows it, else 1.
    /// The index must hold exactly the batches of that range; back pointers
    /// are `NONE`.
    pub(crate) fn encode_checkpoint(
        &self,
        segment_base: u64,
        range: (u64, u64),
        last_frame: u64,
        frame_crc: u32,
        hash_mask: u64,
        segment: &[u8],
    ) -> Vec<u8> {
        let version = self.version_for(segment_base, range.1, INDEX_V2_LIMIT);
        self.encode_checkpoint_version(version, segment_base, range, last_frame, frame_crc, hash_mask, segment)
            .unwrap_or_default()
    }

    /// [`MemIndex::encode_checkpoint`] in layout `version` (`None`: it does
    /// not fit version 2).
    #[expect(
        clippy::too_many_arguments,
        reason = "the header's identity fields, named as in the spec"
    )]
    pub(crate) fn encode_checkpoint_version(
        &self,
        version: u16,
        segment_base: u64,
        (from, to): (u64, u64),
        last_frame: u64,
        frame_crc: u32,
        hash_mask: u64,
        segment: &[u8],
    ) -> Option<Vec<u8>> {
        let id = Identity {
            segment_base,
            segment_len: to,
            seal_crc: frame_crc,
            checkpoint: Some((from, last_frame)),
            version,
        };
        self.encode_as(&id, hash_mask, &mut |_| Prev::NONE, segment)
            .map(|e| e.0)
    }

    /// The layout a writer uses for this index of a segment (or checkpoint
    /// range) based at `base` and ending at `end`: version 2 if `end` and
    /// every position and version delta are below `limit` (`INDEX_V2_LIMIT`;
    /// a parameter so that tests reach the fallback), else version 1.
    pub(crate) fn version_for(&self, base: u64, end: u64, limit: u64) -> u16 {
        if self.fits_v2(base, end, limit) {
            INDEX_VERSION_2
        } else {
            INDEX_VERSION_1
        }
    }

    /// Whether every offset and delta of a version 2 encoding is below
    /// `limit` (at most 2^32).
    fn fits_v2(&self, base: u64, end: u64, limit: u64) -> bool {
        let limit = limit.min(INDEX_V2_LIMIT);
        // Frame offsets lie below `end`; positions and versions grow with
        // offsets, so the last frame and each stream's span are the largest.
        end < limit
            && self
                .frames
                .last()
                .is_none_or(|&(p, o)| p.wrapping_sub(base) < limit && p >= base && o < limit)
            && self
                .streams
                .values()
                .all(|s| s.last_version >= s.first_version && s.last_version - s.first_version < limit)
    }

    fn encode_as(
        &self,
        id: &Identity,
        hash_mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
        segment: &[u8],
    ) -> Option<(Vec<u8>, Vec<StreamRowSummary>)> {
        if id.version != INDEX_VERSION_1 && !self.fits_v2(id.segment_base, id.segment_len, INDEX_V2_LIMIT) {
            return None;
        }
        let lens = idx_lens(id.version);
        let h = |name: &str| stream_hash(name.as_bytes()) & hash_mask;
        let streams = sorted_by_hash(self.streams.iter().map(|(k, v)| (&**k, v)), &h);
        let (cats, types) = (sorted_named(&self.categories, &h), sorted_named(&self.types, &h));
        // Names are added in row order: streams, categories, event types.
        let mut names = Names::default();
        let (st, summary) = encode_streams(id.version, &streams, &h, &mut names, resolve);
        let listed = |_: &str, offs: &[u64]| offs.to_vec();
        let cat = encode_named(&cats, &h, &mut names, lens.named_entry, &listed);
        // Version 1 lists the records of each type; the index lists batches.
        let records = |ty: &str, offs: &[u64]| offs.iter().flat_map(|&off| records_of_type(segment, off, ty)).collect();
        let ty = if id.version == INDEX_VERSION_1 {
            encode_named(&types, &h, &mut names, lens.named_entry, &records)
        } else {
            encode_named(&types, &h, &mut names, lens.named_entry, &listed)
        };
        let frames = self.encode_frames(id.version, id.segment_base);
        let header = IdxHeader {
            magic: IDX_MAGIC,
            index_version: U16::new(id.version),
            flags: U16::new(if id.checkpoint.is_some() {
                IDX_FLAG_CHECKPOINT
            } else {
                0
            }),
            reserved0: U32::ZERO,
            segment_base: U64::new(id.segment_base),
            segment_len: U64::new(id.segment_len),
            hash_mask: U64::new(hash_mask),
            stream_count: U32::new(streams.len() as u32),
            stream_entry_count: U32::new(st.entry_count),
            category_count: U32::new(cats.len() as u32),
            category_entry_count: U32::new(cat.entry_count),
            type_count: U32::new(types.len() as u32),
            type_entry_count: U32::new(ty.entry_count),
            frame_count: U32::new(self.frames.len() as u32),
            names_len: U32::new(names.0.len() as u32),
            seal_crc: U32::new(id.seal_crc),
            covered_from: U64::new(id.checkpoint.map_or(0, |c| c.0)),
            last_frame: U64::new(id.checkpoint.map_or(0, |c| c.1)),
            reserved1: [0; 36],
        };
        let parts = [
            &st.rows,
            &st.entries,
            &cat.rows,
            &cat.entries,
            &ty.rows,
            &ty.entries,
            &frames,
            &names.0,
        ];
        let mut body =
            Vec::with_capacity(IDX_HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>() + ALIGN as usize);
        body.extend_from_slice(header.as_bytes());
        for part in parts {
            body.extend_from_slice(part);
        }
        body.resize(body.len().next_multiple_of(ALIGN as usize), 0);
        Some((blockfile::finish(body, IDX_MAGIC), summary))
    }

    /// The frame section: per batch, `(first_position, frame_offset)` as two
    /// `u64` (version 1) or `(first_position - base, frame_offset)` as two
    /// `u32` (version 2).
    fn encode_frames(&self, version: u16, base: u64) -> Vec<u8> {
        let mut frames = Vec::with_capacity(self.frames.len() * idx_lens(version).frame_entry);
        for &(p, o) in &self.frames {
            if version == INDEX_VERSION_1 {
                frames.extend_from_slice(&p.to_le_bytes());
                frames.extend_from_slice(&o.to_le_bytes());
            } else {
                frames.extend_from_slice(&(p.wrapping_sub(base) as u32).to_le_bytes());
                frames.extend_from_slice(&(o as u32).to_le_bytes());
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::INDEX_VERSION_2;
    use crate::index::{IdxFile, Named};
    use crate::{EventData, ExpectedVersion, Log, Options};

    /// A closed log's first segment: batches of several streams and mixed
    /// event types (a type twice in one batch, a batch of one type only).
    /// Format version 2: only such a segment can need index version 1.
    fn segment() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), Options::default().format_version(2)).unwrap();
        let ev = |t: &'static str| EventData::new(t, b"payload".as_slice());
        for (s, types) in [
            ("order-1", &["A", "B", "A"][..]),
            ("order-2", &["B"]),
            ("cart-1", &["C", "C"]),
            ("order-1", &["B", "C"]),
            ("plain", &["A"]),
        ] {
            let evs: Vec<EventData<'_>> = types.iter().map(|t| ev(t)).collect();
            log.append(s, ExpectedVersion::Any, &evs).unwrap();
        }
        log.close().unwrap();
        std::fs::read(dir.path().join(crate::format::names::segment_file_name(0))).unwrap()
    }

    /// What a decoded file answers, in the in-memory index's terms.
    fn answers<B: AsRef<[u8]>>(f: &IdxFile<B>, m: &MemIndex) {
        for (name, s) in &m.streams {
            let info = f.find_stream(name).unwrap().unwrap();
            assert_eq!(
                (info.first_version, info.last_version),
                (s.first_version, s.last_version)
            );
            let entries: Vec<(u64, u64)> = (0..info.entry_count)
                .map(|i| f.stream_entry(&info, i).unwrap())
                .collect();
            assert_eq!(entries, s.entries, "{name}");
        }
        for (kind, lists) in [(Named::Category, &m.categories), (Named::Type, &m.types)] {
            for (name, want) in lists.iter() {
                let (start, n) = f.find_named(kind, name).unwrap().unwrap();
                let mut got: Vec<u64> = (0..n).map(|i| f.named_entry(kind, start + i).unwrap()).collect();
                // A version 1 file lists records: their batches, once.
                got.dedup();
                assert_eq!(&got, want, "{kind:?} {name}");
            }
        }
        let frames: Vec<(u64, u64)> = (0..f.frame_count()).map(|i| f.frame(i).unwrap()).collect();
        assert_eq!(frames, m.frames);
    }

    /// Both layouts encode the same index and decode to it; version 2 lists
    /// each batch once per event type, version 1 each record; the index
    /// read back from either encodes to the same bytes.
    #[test]
    fn both_versions_round_trip() {
        let seg = segment();
        let m = MemIndex::rebuild(&seg).unwrap();
        assert_eq!(m.types.get("A"), Some(&vec![m.frames[0].1, m.frames[4].1]));
        assert_eq!(m.types.get("C").map(Vec::len), Some(2));
        let len = seg.len() as u64;
        let mut none = |_: &str| Prev::NONE;
        let (v2, rows2) = m.encode(0, len, 7, u64::MAX, &mut none, &seg);
        assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), INDEX_VERSION_2);
        let (v1, rows1) = m
            .encode_version(INDEX_VERSION_1, 0, len, 7, u64::MAX, &mut none, &seg)
            .unwrap();
        assert_eq!(u16::from_le_bytes([v1[8], v1[9]]), INDEX_VERSION_1);
        assert_eq!(rows1, rows2);
        assert!(v2.len() < v1.len());
        let f2 = IdxFile::from_bytes_with(&v2[..], 0, len, 7).unwrap();
        let f1 = IdxFile::from_bytes_with(&v1[..], 0, len, 7).unwrap();
        assert_eq!((f1.version(), f2.version()), (INDEX_VERSION_1, INDEX_VERSION_2));
        // Version 1 lists the 9 records by type, version 2 the 7 pairs of
        // (batch, type): A twice, B three times, C twice.
        let types_of = |f: &IdxFile<&[u8]>| -> u32 { f.named_rows(Named::Type).unwrap().iter().map(|r| r.2).sum() };
        assert_eq!((types_of(&f1), types_of(&f2)), (9, 7));
        answers(&f2, &m);
        answers(&f1, &m);
        for f in [&f1, &f2] {
            let back = MemIndex::from_idx(f).unwrap();
            assert_eq!(back.encode(0, len, 7, u64::MAX, &mut none, &seg).0, v2);
        }
    }

    /// A segment too large for version 2 (forced here with a small limit:
    /// its length, a position delta or a stream's version span reaching it)
    /// is written in version 1, which reads back the same.
    #[test]
    fn too_large_for_version_2_falls_back_to_version_1() {
        let seg = segment();
        let m = MemIndex::rebuild(&seg).unwrap();
        let len = seg.len() as u64;
        assert_eq!(m.version_for(0, len, INDEX_V2_LIMIT), INDEX_VERSION_2);
        assert_eq!(m.version_for(0, len, len + 1), INDEX_VERSION_2);
        // The segment's length reaches the limit.
        assert_eq!(m.version_for(0, len, len), INDEX_VERSION_1);
        // The last batch's position delta (8 events before it) reaching the
        // limit.
        assert_eq!(m.frames.last().unwrap().0, 8);
        let mut wide = MemIndex::default();
        wide.append(&m);
        wide.frames.last_mut().unwrap().0 = INDEX_V2_LIMIT;
        assert_eq!(wide.version_for(0, len, INDEX_V2_LIMIT), INDEX_VERSION_1);
        assert!(
            wide.encode_version(INDEX_VERSION_2, 0, len, 7, u64::MAX, &mut |_| Prev::NONE, &seg)
                .is_none()
        );
        // A stream spanning 2^32 versions in the segment.
        let mut span = MemIndex::default();
        span.append(&m);
        span.streams.get_mut("order-1").unwrap().last_version = INDEX_V2_LIMIT;
        assert_eq!(span.version_for(0, len, INDEX_V2_LIMIT), INDEX_VERSION_1);
        // What `encode` writes for a large segment: version 1, and it reads
        // back as the index.
        let v = m.version_for(0, len, 64);
        assert_eq!(v, INDEX_VERSION_1);
        let (bytes, _) = m
            .encode_version(v, 0, len, 7, u64::MAX, &mut |_| Prev::NONE, &seg)
            .unwrap();
        let f = IdxFile::from_bytes_with(&bytes[..], 0, len, 7).unwrap();
        assert_eq!(f.version(), INDEX_VERSION_1);
        answers(&f, &m);
        // A checkpoint of a range too large: version 1 as well.
        let ck = m
            .encode_checkpoint_version(v, 0, (128, len), m.frames.last().unwrap().1, 7, u64::MAX, &seg)
            .unwrap();
        assert_eq!(u16::from_le_bytes([ck[8], ck[9]]), INDEX_VERSION_1);
    }
}
