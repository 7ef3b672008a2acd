//! Writing a [`MemIndex`] as an `.idx` file (spec 17): rows sorted by
//! `(hash, name)`, each section encoded by its own step, then the header, the
//! sections in spec order, padding to 8, and the block table and footer.
//!
//! Invariant: the bytes are a pure function of the index, the segment's
//! identity and `resolve` (the golden vectors pin them).

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::format::hash::stream_hash;
use crate::format::{
    ALIGN, IDX_FLAG_CHECKPOINT, IDX_HEADER_LEN, IDX_MAGIC, IDX_NAMED_ROW_LEN, IDX_STREAM_ROW_LEN, INDEX_VERSION,
    IdxHeader, IdxNamedRow, IdxStreamRow,
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
    streams: &[(&str, &MemStream)],
    h: &impl Fn(&str) -> u64,
    names: &mut Names,
    resolve: &mut dyn FnMut(&str) -> Prev,
) -> (Section, Vec<StreamRowSummary>) {
    let mut s = Section {
        rows: Vec::with_capacity(streams.len() * IDX_STREAM_ROW_LEN),
        ..Section::default()
    };
    let mut summary = Vec::with_capacity(streams.len());
    for (row, (name, st)) in streams.iter().enumerate() {
        let prev = resolve(name);
        let r = IdxStreamRow {
            hash: U64::new(h(name)),
            name_offset: U32::new(names.add(name)),
            name_len: U16::new(name.len() as u16),
            reserved0: U16::ZERO,
            first_version: U64::new(st.first_version),
            last_version: U64::new(st.last_version),
            entry_start: U32::new(s.entry_count),
            entry_count: U32::new(st.entries.len() as u32),
            prev_segment: U64::new(prev.segment),
            prev_row: U32::new(prev.row),
            reserved1: U32::ZERO,
        };
        s.rows.extend_from_slice(r.as_bytes());
        for &(v, off) in &st.entries {
            s.entries.extend_from_slice(&v.to_le_bytes());
            s.entries.extend_from_slice(&off.to_le_bytes());
        }
        s.entry_count += st.entries.len() as u32;
        summary.push((Box::<str>::from(*name), row as u32, st.last_version));
    }
    (s, summary)
}

/// The rows and entries of a category or event type section.
fn encode_named(list: &[(&str, &Vec<u64>)], h: &impl Fn(&str) -> u64, names: &mut Names) -> Section {
    let mut s = Section {
        rows: Vec::with_capacity(list.len() * IDX_NAMED_ROW_LEN),
        ..Section::default()
    };
    for (name, offs) in list {
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
            s.entries.extend_from_slice(&o.to_le_bytes());
        }
        s.entry_count += offs.len() as u32;
    }
    s
}

impl MemIndex {
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
        let id = Identity {
            segment_base,
            segment_len,
            seal_crc,
            checkpoint: None,
        };
        self.encode_as(&id, hash_mask, resolve)
    }

    /// Encode as an index checkpoint (spec 17.5) of bytes `[from, to)` of the
    /// active segment based at `segment_base`, whose last frame starts at
    /// `last_frame` and has the header CRC `frame_crc`. The index must hold
    /// exactly the batches of that range; back pointers are `NONE`.
    pub(crate) fn encode_checkpoint(
        &self,
        segment_base: u64,
        (from, to): (u64, u64),
        last_frame: u64,
        frame_crc: u32,
        hash_mask: u64,
    ) -> Vec<u8> {
        let id = Identity {
            segment_base,
            segment_len: to,
            seal_crc: frame_crc,
            checkpoint: Some((from, last_frame)),
        };
        self.encode_as(&id, hash_mask, &mut |_| Prev::NONE).0
    }

    fn encode_as(
        &self,
        id: &Identity,
        hash_mask: u64,
        resolve: &mut dyn FnMut(&str) -> Prev,
    ) -> (Vec<u8>, Vec<StreamRowSummary>) {
        let h = |name: &str| stream_hash(name.as_bytes()) & hash_mask;
        let streams = sorted_by_hash(self.streams.iter().map(|(k, v)| (&**k, v)), &h);
        let (cats, types) = (sorted_named(&self.categories, &h), sorted_named(&self.types, &h));
        // Names are added in row order: streams, categories, event types.
        let mut names = Names::default();
        let (st, summary) = encode_streams(&streams, &h, &mut names, resolve);
        let cat = encode_named(&cats, &h, &mut names);
        let ty = encode_named(&types, &h, &mut names);
        let frames = self.encode_frames();
        let header = IdxHeader {
            magic: IDX_MAGIC,
            index_version: U16::new(INDEX_VERSION),
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
        (blockfile::finish(body, IDX_MAGIC), summary)
    }

    /// The frame section: `(first_position, frame_offset)` per batch.
    fn encode_frames(&self) -> Vec<u8> {
        let mut frames = Vec::with_capacity(self.frames.len() * crate::index::FRAME_ENTRY_LEN);
        for &(p, o) in &self.frames {
            frames.extend_from_slice(&p.to_le_bytes());
            frames.extend_from_slice(&o.to_le_bytes());
        }
        frames
    }
}
