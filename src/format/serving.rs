//! Versions of a projection (spec 24.8): the file names of a version's model
//! and lock, and the serving file `annal.proj.<name>~serving`, which names
//! the one version whose model readers are served. Pure bytes and names;
//! reading, writing, locking and the switch are `es::serving`'s.
//!
//! Invariants of a serving file [`decode_serving`] accepts: 40 bytes, magic,
//! CRC, version 1, zero flags, a serving version of at least 1 above the
//! previous one. A file that is not so is damage naming the offset, never
//! "nothing serves".

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::crc;
use crate::format::damage::Damage;

/// The prefix of every projection file name: `annal.proj.`.
pub const PROJECTION_FILE_PREFIX: &str = "annal.proj.";
/// Magic bytes at the start of a serving file.
pub const SERVING_MAGIC: [u8; 8] = *b"ANNALSRV";
/// The serving file version this build writes and reads.
pub const SERVING_VERSION: u16 = 1;

/// The serving file of a projection name (spec 24.8).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub(crate) struct ServingFile {
    pub magic: [u8; 8],
    pub crc: U32,
    pub version: U16,
    pub flags: U16,
    pub serving: U64,
    pub previous: U64,
    pub position: U64,
}

/// Bytes of a serving file.
pub const SERVING_FILE_LEN: usize = size_of::<ServingFile>();
/// The CRC covers `[SERVING_CRC_START, SERVING_FILE_LEN)`.
pub const SERVING_CRC_START: usize = offset_of!(ServingFile, version);
const CRC_OFFSET: usize = offset_of!(ServingFile, crc);
const VERSION_OFFSET: usize = offset_of!(ServingFile, version);
const FLAGS_OFFSET: usize = offset_of!(ServingFile, flags);
const SERVING_OFFSET: usize = offset_of!(ServingFile, serving);

const _: () = assert!(SERVING_FILE_LEN == 40);
const _: () = assert!(SERVING_CRC_START == 12);

/// What a serving file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Serving {
    /// The version that serves (at least 1).
    pub serving: u64,
    /// The version it took over from (0: the unversioned projection, or
    /// nothing).
    pub previous: u64,
    /// The serving version's position when it took over.
    pub position: u64,
}

/// A serving file's bytes.
pub(crate) fn encode_serving(s: &Serving) -> [u8; SERVING_FILE_LEN] {
    let mut f = ServingFile {
        magic: SERVING_MAGIC,
        crc: U32::ZERO,
        version: U16::new(SERVING_VERSION),
        flags: U16::ZERO,
        serving: U64::new(s.serving),
        previous: U64::new(s.previous),
        position: U64::new(s.position),
    };
    f.crc = U32::new(crc(f.as_bytes().get(SERVING_CRC_START..).unwrap_or_default()));
    let mut out = [0u8; SERVING_FILE_LEN];
    out.copy_from_slice(f.as_bytes());
    out
}

/// Decode a serving file's bytes.
pub(crate) fn decode_serving(bytes: &[u8]) -> Result<Serving, Damage> {
    if bytes.len() != SERVING_FILE_LEN {
        return Err(Damage::corrupt(
            0,
            format!(
                "expected a {SERVING_FILE_LEN}-byte serving file, found {} bytes",
                bytes.len()
            ),
        ));
    }
    let Ok(f) = ServingFile::ref_from_bytes(bytes) else {
        return Err(Damage::corrupt(0, "expected a serving file"));
    };
    if f.magic != SERVING_MAGIC {
        return Err(Damage::corrupt(
            0,
            format!("expected serving file magic \"ANNALSRV\", found {:02x?}", f.magic),
        ));
    }
    let want = crc(bytes.get(SERVING_CRC_START..).unwrap_or_default());
    if f.crc.get() != want {
        return Err(Damage::corrupt(
            CRC_OFFSET as u64,
            format!(
                "serving file CRC mismatch: expected {want:#010x}, found {:#010x}",
                f.crc.get()
            ),
        ));
    }
    if f.version.get() != SERVING_VERSION {
        return Err(Damage::corrupt(
            VERSION_OFFSET as u64,
            format!(
                "expected serving file version {SERVING_VERSION}, found {}",
                f.version.get()
            ),
        ));
    }
    if f.flags.get() != 0 {
        return Err(Damage::corrupt(
            FLAGS_OFFSET as u64,
            "expected serving file flags to be zero",
        ));
    }
    let (serving, previous) = (f.serving.get(), f.previous.get());
    if serving == 0 || serving <= previous {
        return Err(Damage::corrupt(
            SERVING_OFFSET as u64,
            format!("expected a serving version of at least 1 above the previous ({previous}), found {serving}"),
        ));
    }
    Ok(Serving {
        serving,
        previous,
        position: f.position.get(),
    })
}

/// The model file of `name` at `version`: `annal.proj.<name>` for version 0
/// (the unversioned projection), `annal.proj.<name>~v<version>` above.
pub(crate) fn model_file_name(name: &str, version: u64) -> String {
    if version == 0 {
        format!("{PROJECTION_FILE_PREFIX}{name}")
    } else {
        format!("{PROJECTION_FILE_PREFIX}{name}~v{version}")
    }
}

/// The lock file of a version's runner: its model file's name and `.lock`.
pub(crate) fn lock_file_name(name: &str, version: u64) -> String {
    format!("{}.lock", model_file_name(name, version))
}

/// The serving file of `name`: `annal.proj.<name>~serving`.
pub(crate) fn serving_file_name(name: &str) -> String {
    format!("{PROJECTION_FILE_PREFIX}{name}~serving")
}

/// The lock held while the serving file of `name` is switched:
/// `annal.proj.<name>~serving.lock`.
pub(crate) fn switch_lock_name(name: &str) -> String {
    format!("{}.lock", serving_file_name(name))
}

/// The version of `name` whose model file is `file` (0: the unversioned
/// one), if it is one: `v` followed by a decimal number of at least 1
/// without leading zeros.
pub(crate) fn parse_model_file_name(name: &str, file: &str) -> Option<u64> {
    let rest = file.strip_prefix(PROJECTION_FILE_PREFIX)?.strip_prefix(name)?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix("~v")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_file_round_trips_and_every_flipped_byte_is_damage() {
        let s = Serving {
            serving: 3,
            previous: 1,
            position: 99,
        };
        let bytes = encode_serving(&s);
        assert_eq!(decode_serving(&bytes).unwrap(), s);
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes;
                b[at] ^= 1 << bit;
                assert!(decode_serving(&b).is_err(), "byte {at} bit {bit}");
            }
        }
        for cut in 0..bytes.len() {
            assert_eq!(decode_serving(&bytes[..cut]).unwrap_err().offset, 0, "cut at {cut}");
        }
    }

    #[test]
    fn a_serving_version_not_above_the_previous_is_damage_at_its_offset() {
        for (serving, previous) in [(0, 0), (2, 2), (1, 5)] {
            let bytes = encode_serving(&Serving {
                serving,
                previous,
                position: 0,
            });
            assert_eq!(decode_serving(&bytes).unwrap_err().offset, 16);
        }
    }

    #[test]
    fn names_of_versions_are_apart_from_every_plain_name() {
        assert_eq!(model_file_name("b", 0), "annal.proj.b");
        assert_eq!(model_file_name("b", 12), "annal.proj.b~v12");
        assert_eq!(lock_file_name("b", 12), "annal.proj.b~v12.lock");
        assert_eq!(serving_file_name("b"), "annal.proj.b~serving");
        assert_eq!(switch_lock_name("b"), "annal.proj.b~serving.lock");
        assert_eq!(parse_model_file_name("b", "annal.proj.b"), Some(0));
        assert_eq!(parse_model_file_name("b", "annal.proj.b~v7"), Some(7));
        for other in [
            "annal.proj.b~v07",
            "annal.proj.b~v",
            "annal.proj.b~v7.lock",
            "annal.proj.b~v7.tmp",
            "annal.proj.b~v7.0123456789abcdef.tmp",
            "annal.proj.b~serving",
            "annal.proj.bc",
            "annal.proj.b.x",
            "annal.sub.b",
        ] {
            assert_eq!(parse_model_file_name("b", other), None, "{other}");
        }
    }
}
