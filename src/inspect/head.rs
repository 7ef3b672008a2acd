//! Inspection of the head file (spec 5.2): both slots, written or empty.

use zerocopy::IntoBytes;

use super::{crc, struct_at};
use crate::format::{HEAD_CRC_START, HEAD_FILE_LEN, HEAD_MAGIC, HEAD_SLOT_LEN, HeadSlot};

/// The head file (spec 5.2): both slots.
#[derive(Debug, Default)]
pub struct HeadDump {
    /// The slots present in the file, in file order.
    pub slots: Vec<SlotDump>,
    /// Why the description stops before the end of the file, or that the
    /// file has more bytes than two slots.
    pub stop: Option<String>,
}

impl HeadDump {
    /// How many written slots have a wrong magic or CRC.
    pub fn problems(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| matches!(s, SlotDump::Written(w) if !w.crc_ok))
            .count() as u64
    }
}

/// One slot of the head file.
#[derive(Debug, Clone)]
pub enum SlotDump {
    /// All zero: not written yet. Holds the slot's file offset.
    Empty(u64),
    /// A written slot.
    Written(HeadSlotDump),
}

/// The fields of a written head slot.
#[derive(Debug, Clone)]
pub struct HeadSlotDump {
    /// File offset of the slot.
    pub offset: u64,
    /// The magic as stored.
    pub magic: [u8; 4],
    /// `crc` as stored.
    pub crc: u32,
    /// Whether the magic is right and `crc` matches.
    pub crc_ok: bool,
    /// `format_version`.
    pub format_version: u16,
    /// `flags`.
    pub flags: u16,
    /// `reserved0`.
    pub reserved0: u32,
    /// `sequence`.
    pub sequence: u64,
    /// `segment_base`.
    pub segment_base: u64,
    /// `durable_end`.
    pub durable_end: u64,
    /// `visible_end`.
    pub visible_end: u64,
    /// `next_position`.
    pub next_position: u64,
    /// `reserved1`.
    pub reserved1: u64,
}

/// Describe the head file.
pub fn head(file: &[u8]) -> HeadDump {
    let len = file.len();
    let mut d = HeadDump::default();
    for o in [0, HEAD_SLOT_LEN] {
        let Some(s) = struct_at::<HeadSlot>(file, o) else {
            d.stop = Some(format!(
                "the head file needs {HEAD_FILE_LEN} bytes (two {HEAD_SLOT_LEN}-byte slots), the file has {len}"
            ));
            return d;
        };
        let bytes = s.as_bytes();
        if bytes.iter().all(|&b| b == 0) {
            d.slots.push(SlotDump::Empty(o as u64));
            continue;
        }
        let crc_ok = s.magic == HEAD_MAGIC && crc(bytes, HEAD_CRC_START, HEAD_SLOT_LEN) == s.crc.get();
        d.slots.push(SlotDump::Written(HeadSlotDump {
            offset: o as u64,
            magic: s.magic,
            crc: s.crc.get(),
            crc_ok,
            format_version: s.format_version.get(),
            flags: s.flags.get(),
            reserved0: s.reserved0.get(),
            sequence: s.sequence.get(),
            segment_base: s.segment_base.get(),
            durable_end: s.durable_end.get(),
            visible_end: s.visible_end.get(),
            next_position: s.next_position.get(),
            reserved1: s.reserved1.get(),
        }));
    }
    if len != HEAD_FILE_LEN {
        d.stop = Some(format!(
            "the head file has {len} bytes, expected {HEAD_FILE_LEN} (two {HEAD_SLOT_LEN}-byte slots)"
        ));
    }
    d
}
