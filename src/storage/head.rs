//! The head file `annal.head` (spec 5.2): the writer's record of the durable
//! and the visible end of the log, in two alternating CRC-protected slots.
//!
//! The writer writes a slot only after the bytes it describes are written
//! (`visible_end`) or durable (`durable_end`), so any intact slot states a true
//! fact; a torn slot is ignored in favour of the other.
//!
//! This module owns the file's I/O (reading it, creating it atomically,
//! writing slots); the slot layout and decoding the bytes are
//! `format::head`'s ([`decode`] is re-exported from there).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;

use crate::error::{Error, Result};
pub use crate::format::Head;
pub(crate) use crate::format::decode_head as decode;
use crate::format::{HEAD_FILE_LEN, HEAD_SLOT_LEN, HeadSlot};
use crate::storage::io::{Io, IoFile};

pub use crate::format::names::HEAD_FILE;

/// Read the head file of `dir`. `Ok(None)` if it does not exist or no slot is
/// valid.
pub(crate) fn read(dir: &Path) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    let mut bytes = Vec::with_capacity(HEAD_FILE_LEN);
    match crate::storage::io::open_read(&path) {
        Ok(f) => {
            f.take(HEAD_FILE_LEN as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("read", &path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &path, e)),
    }
    Ok(decode(&bytes).map_err(|d| d.at(&path))?.0)
}

/// The writer's handle on the head file.
#[derive(Debug)]
pub(crate) struct HeadWriter {
    file: Box<dyn IoFile>,
    path: PathBuf,
    sequence: u64,
    /// The log's format version, written into every slot.
    version: u16,
    /// What the current slot says, while it is known to be durable.
    durable: Option<Head>,
}

impl HeadWriter {
    /// Create a new head file in `dir` atomically (temp file, fsync, rename,
    /// directory fsync) holding `head` in slot 0, replacing any existing one.
    /// Slots carry format version `version` (that of the log's segments).
    pub(crate) fn create(io: &dyn Io, dir: &Path, head: Head, version: u16) -> Result<HeadWriter> {
        let path = dir.join(HEAD_FILE);
        let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
        let mut bytes = [0u8; HEAD_FILE_LEN];
        let slot = HeadSlot::new(
            version,
            1,
            head.segment_base,
            head.durable_end,
            head.visible_end,
            head.next_position,
        );
        bytes[..HEAD_SLOT_LEN].copy_from_slice(slot.as_bytes());
        let _ = io.remove(&tmp);
        let f = io.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_at(0, &bytes).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
        drop(f);
        io.rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        io.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
        let file = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(HeadWriter {
            file,
            path,
            sequence: 1,
            version,
            durable: Some(Head { sequence: 1, ..head }),
        })
    }

    /// Write the next slot (not synced; see the module docs).
    /// Keep writing the existing head file of a log that was closed cleanly
    /// and opened without change: its current slot (`current`, durable)
    /// already says what a new file would, so nothing is written or synced
    /// (opening a log costs no fsync); the next write goes to the other slot.
    pub(crate) fn reuse(io: &dyn Io, dir: &Path, current: Head, version: u16) -> Result<HeadWriter> {
        let path = dir.join(HEAD_FILE);
        let file = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(HeadWriter {
            file,
            path,
            sequence: current.sequence,
            version,
            durable: Some(current),
        })
    }

    /// Whether the current slot, durable, already says `head` (its
    /// sequence aside): writing it again would change nothing.
    pub(crate) fn already_says(&self, head: &Head) -> bool {
        self.durable.is_some_and(|d| {
            Head {
                sequence: d.sequence,
                ..*head
            } == d
        })
    }

    pub(crate) fn write(&mut self, head: Head) -> Result<()> {
        self.durable = None;
        let seq = self.sequence + 1;
        let slot = HeadSlot::new(
            self.version,
            seq,
            head.segment_base,
            head.durable_end,
            head.visible_end,
            head.next_position,
        );
        let at = if seq % 2 == 1 { 0 } else { HEAD_SLOT_LEN as u64 };
        self.file
            .write_at(at, slot.as_bytes())
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.sequence = seq;
        Ok(())
    }

    /// Make the head file durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync().map_err(|e| Error::io("fsync", &self.path, e))
    }
}
