//! Segment indexes and the stream table (spec sections 16 to 18): the layer
//! between the format's bytes and the readers.
//!
//! * [`MemIndex`] (`mem.rs`): a segment's index in memory, built as batches
//!   are appended (the active segment) or by scanning a segment
//!   ([`IndexBuilder`]); `encode.rs` writes it as an `.idx` file.
//! * [`IdxFile`] (`idxfile.rs`): a sealed segment's `.idx` file, decoded from
//!   bytes and searched in place, every block checked on first use
//!   ([`blockfile`]).
//! * [`IndexCell`] and [`Index`] (`cell.rs`): a segment's index as readers
//!   see it, opened lazily and rebuilt from the segment if its file is
//!   missing or damaged, so reads stay correct.
//! * [`Layered`] (`layered.rs`): an active segment's index checkpoints
//!   (spec 17.5) and the in-memory index of the batches after them, as one
//!   index.
//! * [`streamtable`]: `annal.streams`, every stream's newest sealed version.
//!
//! Every decoder here works on bytes (`AsRef<[u8]>`); the path-based openers
//! only open and map the file first. Invariants: entries of a stream are in
//! version order, category, event type and frame entries in position order
//! (= offset order within a segment); a stream row's `prev` names the newest
//! earlier segment holding the stream; an I/O failure is never reported as
//! damage.

pub(crate) mod blockfile;
mod cell;
pub(crate) mod checkpoint;
mod encode;
mod idxfile;
mod layered;
mod mem;
pub(crate) mod streamtable;

pub(crate) use cell::{Index, IndexCell};
pub(crate) use idxfile::{IdxFile, seal_crc};
pub(crate) use layered::Layered;
pub(crate) use mem::{IndexBuilder, MemIndex, MemStream, NamedLists};

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

/// `(name, row, last_version)` of a stream row, for the stream table.
pub(crate) type StreamRowSummary = (Box<str>, u32, u64);

/// Which named section of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    Category,
    Type,
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

/// Bytes of a stream entry of an index (spec 17.2): `first_version`,
/// `frame_offset`, both `u64`.
pub(crate) const STREAM_ENTRY_LEN: usize = size_of::<[u64; 2]>();
/// Bytes of a category or event type entry: one `u64` offset.
pub(crate) const NAMED_ENTRY_LEN: usize = size_of::<u64>();
/// Bytes of a frame entry: `first_position`, `frame_offset`, both `u64`.
pub(crate) const FRAME_ENTRY_LEN: usize = size_of::<[u64; 2]>();
