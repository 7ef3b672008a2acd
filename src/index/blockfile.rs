//! Derived files checked block by block (spec section 16).
//!
//! Index files and the stream table are searched in place. Their integrity
//! is checked lazily: the footer and the block CRC table when the file is
//! first opened, and each 4096-byte block the first time any byte of it is
//! read. So opening a log reads nothing of these files, and a lookup checks
//! only the few blocks it touches.
//!
//! A [`BlockFile`] works over any bytes (`B: AsRef<[u8]>`): a [`Mapping`] of
//! the file for readers and the writer ([`BlockFile::open_path`]), or a `Vec`
//! for fuzzers and tests ([`BlockFile::from_bytes`]). The footer layout is
//! [`crate::format::blockfile::BlockFooter`].
//!
//! Invariants: once constructed, `table_offset` (the checked region's length)
//! plus the CRC table and footer is exactly the length of the bytes, so every
//! offset below `table_offset` and every table entry lies inside them; a block
//! is marked verified only after its CRC matched.

use std::sync::atomic::{AtomicU64, Ordering};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::Damage;
use crate::format::ALIGN;
use crate::format::blockfile::{BLOCK, BLOCK_CRC_LEN, BlockFooter, FOOTER_CRC_OFFSET, FOOTER_LEN, FOOTER_MAGIC_OFFSET};
use crate::storage::mmap::Mapping;

/// Append the block CRC table and the footer to `body` (whose length must be a
/// multiple of 8), making it a complete derived file.
pub(crate) fn finish(mut body: Vec<u8>, magic: [u8; 8]) -> Vec<u8> {
    debug_assert_eq!(body.len() as u64 % ALIGN, 0);
    let table_offset = body.len();
    let blocks = table_offset.div_ceil(BLOCK);
    let mut table = Vec::with_capacity(blocks * BLOCK_CRC_LEN);
    for chunk in body.chunks(BLOCK) {
        table.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
    }
    let footer = BlockFooter::new(table_offset as u64, blocks as u64, crc32fast::hash(&table), magic);
    body.extend_from_slice(&table);
    body.extend_from_slice(footer.as_bytes());
    body
}

/// The bytes of a mapping, so that a [`BlockFile`] can be made over one.
impl AsRef<[u8]> for Mapping {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A derived file whose blocks are verified on first use, over its bytes `B`
/// (a [`Mapping`] unless said otherwise).
#[derive(Debug)]
pub(crate) struct BlockFile<B: AsRef<[u8]> = Mapping> {
    bytes: B,
    table_offset: usize,
    verified: Box<[AtomicU64]>,
}

impl<B: AsRef<[u8]>> BlockFile<B> {
    /// Check the footer and the block CRC table of the derived file `bytes`
    /// whose magic must be `magic` (spec 16, checks 1 to 5 in order).
    pub(crate) fn from_bytes(bytes: B, magic: [u8; 8]) -> Result<BlockFile<B>, Damage> {
        let all = bytes.as_ref();
        let len = all.len();
        let Some(foff) = len.checked_sub(FOOTER_LEN) else {
            return Err(Damage::corrupt(
                0,
                format!("expected at least a {FOOTER_LEN}-byte footer, found {len} bytes"),
            ));
        };
        let (body, footer) = all.split_at(foff);
        let f =
            BlockFooter::read_from_bytes(footer).map_err(|_| Damage::corrupt(foff as u64, "footer is not 32 bytes"))?;
        let foff = foff as u64;
        if f.magic != magic {
            return Err(Damage::corrupt(
                foff + FOOTER_MAGIC_OFFSET as u64,
                format!("expected footer magic {:?}", String::from_utf8_lossy(&magic)),
            ));
        }
        if f.footer_crc.get() != f.computed_crc() {
            return Err(Damage::corrupt(foff + FOOTER_CRC_OFFSET as u64, "footer CRC mismatch"));
        }
        let (table_offset, blocks) = (f.table_offset.get(), f.block_count.get());
        let expect_blocks = table_offset.div_ceil(BLOCK as u64);
        let expect_len = blocks
            .checked_mul(BLOCK_CRC_LEN as u64)
            .and_then(|t| t.checked_add(table_offset))
            .and_then(|x| x.checked_add(FOOTER_LEN as u64));
        let fits = table_offset.is_multiple_of(ALIGN) && blocks == expect_blocks && expect_len == Some(len as u64);
        let (Some(table_offset), true) = (usize::try_from(table_offset).ok(), fits) else {
            return Err(Damage::corrupt(
                foff,
                format!(
                    "footer says table_offset {table_offset} and {blocks} blocks, which does not fit a file of {len} bytes"
                ),
            ));
        };
        // `table_offset` lies inside the body, checked above.
        let table = body.get(table_offset..).unwrap_or_default();
        if crc32fast::hash(table) != f.table_crc.get() {
            return Err(Damage::corrupt(
                table_offset as u64,
                "block CRC table does not match its CRC in the footer",
            ));
        }
        let words = table_offset.div_ceil(BLOCK).div_ceil(64);
        let verified = (0..words).map(|_| AtomicU64::new(0)).collect();
        Ok(BlockFile {
            bytes,
            table_offset,
            verified,
        })
    }

    /// Length of the checked region.
    pub(crate) fn len(&self) -> usize {
        self.table_offset
    }

    /// `len` bytes at `off` of the checked region, after verifying the blocks
    /// they lie in.
    #[inline]
    pub(crate) fn get(&self, off: usize, len: usize) -> Result<&[u8], Damage> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.table_offset)
            .ok_or_else(|| self.past_the_end(off, len))?;
        let bytes = self.bytes.as_ref();
        if len > 0 {
            for block in off / BLOCK..=(end - 1) / BLOCK {
                self.verify(block, bytes)?;
            }
        }
        bytes
            .get(off..end)
            .ok_or_else(|| Damage::corrupt(off as u64, "the file's bytes changed length"))
    }

    #[cold]
    fn past_the_end(&self, off: usize, len: usize) -> Damage {
        Damage::corrupt(
            off as u64,
            format!(
                "{len} bytes at {off} lie past the checked region ({})",
                self.table_offset
            ),
        )
    }

    #[inline]
    fn verify(&self, block: usize, bytes: &[u8]) -> Result<(), Damage> {
        let (word, bit) = (block / 64, 1u64 << (block % 64));
        let Some(w) = self.verified.get(word) else {
            return Err(Damage::corrupt((block * BLOCK) as u64, "block past the block table"));
        };
        if w.load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        self.verify_block(block, bytes)?;
        w.fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }

    /// Check block `block` against its entry in the CRC table.
    #[cold]
    #[inline(never)]
    fn verify_block(&self, block: usize, bytes: &[u8]) -> Result<(), Damage> {
        let start = block * BLOCK;
        let end = (start + BLOCK).min(self.table_offset);
        let entry = self.table_offset + block * BLOCK_CRC_LEN;
        let stored = bytes
            .get(entry..entry + BLOCK_CRC_LEN)
            .and_then(|b| U32::read_from_bytes(b).ok());
        let data = bytes.get(start..end);
        match (stored, data) {
            (Some(s), Some(d)) if crc32fast::hash(d) == s.get() => Ok(()),
            _ => Err(Damage::corrupt(
                start as u64,
                format!("block {block} (bytes {start}..{end}) fails its CRC"),
            )),
        }
    }

    /// The `u64` at `off`.
    #[inline]
    pub(crate) fn u64(&self, off: usize) -> Result<u64, Damage> {
        let b = self.get(off, size_of::<u64>())?;
        Ok(U64::read_from_bytes(b).map_or(0, U64::get))
    }
}

impl BlockFile {
    /// Ask the kernel for the pages of `[off, off + len)` of the checked
    /// region, without waiting (see [`Mapping::prefetch`]): a hint for a
    /// read that knows which entries it will touch next.
    pub(crate) fn prefetch(&self, off: usize, len: usize) {
        let end = off.saturating_add(len).min(self.table_offset);
        if off < end {
            self.bytes.prefetch(off as u64, (end - off) as u64);
        }
    }

    /// Map the file at `path` and check its footer and block table
    /// (`Ok(None)` if it does not exist): opens the file
    /// ([`crate::storage::io::open_read`]), maps it ([`Mapping`]) and calls
    /// [`BlockFile::from_bytes`].
    ///
    /// A failure to open, stat or map the file (`EMFILE`, `EACCES`, `ENOMEM`,
    /// ...) says nothing about its bytes: it is returned as an I/O failure
    /// ([`Damage::is_io`], which [`Damage::at`] turns into `Error::Io`),
    /// never as damage, so that no caller rebuilds or rewrites an intact file
    /// because of it. Only something other than a regular file under the
    /// name (a symlink, FIFO, directory, ...) is damage of this derived file:
    /// it must be a regular file, and it is rebuilt.
    pub(crate) fn open_path(path: &std::path::Path, magic: [u8; 8]) -> Result<Option<BlockFile>, Damage> {
        let file = match crate::storage::io::open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if crate::storage::io::not_a_regular_file(&e) => {
                return Err(Damage::corrupt(0, format!("expected a regular file: {e}")));
            }
            Err(e) => return Err(Damage::io("open", &e)),
        };
        let len = file.metadata().map_err(|e| Damage::io("stat", &e))?.len();
        // SAFETY: index files and the stream table are written whole under a
        // temporary name and renamed into place, never modified afterwards
        // (mmap module, case 3): this inode's bytes do not change.
        let map = unsafe { Mapping::map(&file, len, path) }.map_err(|e| map_failure(&e))?;
        // Opening reads the footer and the whole block CRC table (4 bytes a
        // block, at the end): one read of them, not a fault per page of a
        // mapping advised random.
        let tail = tail_len(len);
        map.prefetch(len - tail, tail);
        BlockFile::from_bytes(map, magic).map(Some)
    }
}

/// The bytes at the end of a block file of `len` bytes that opening it
/// reads: its block CRC table (4 bytes per block) and footer, rounded up.
pub(crate) fn tail_len(len: u64) -> u64 {
    (len / (BLOCK as u64 / 4)).saturating_add(2 * BLOCK as u64).min(len)
}

/// A failure to map a file as an I/O failure, whatever error the mapping
/// reported: a mapping that cannot be made says nothing about the file's bytes.
fn map_failure(e: &crate::error::Error) -> Damage {
    match e {
        crate::error::Error::Io { source, .. } => Damage::io("mmap", source),
        other => Damage::io("mmap", &std::io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_checked_lazily() {
        let body: Vec<u8> = (0..10_000u32).flat_map(|i| (i as u64).to_le_bytes()).collect();
        let file = finish(body.clone(), *b"ANNALIDX");
        let bf = BlockFile::from_bytes(file.clone(), *b"ANNALIDX").unwrap();
        assert_eq!(bf.get(8 * 9999, 8).unwrap(), &9999u64.to_le_bytes());
        assert_eq!(bf.u64(8 * 9999).unwrap(), 9999);
        let mut bad = file.clone();
        bad[5000] ^= 1;
        let bf = BlockFile::from_bytes(&bad[..], *b"ANNALIDX").unwrap();
        assert!(bf.get(0, 8).is_ok(), "block 0 is intact");
        assert!(bf.get(4096, 8).is_err(), "block 1 is damaged");
        assert!(bf.get(bf.len() - 8, 16).is_err(), "past the end");
        assert!(BlockFile::from_bytes(&file[..file.len() - 1], *b"ANNALIDX").is_err());
    }

    /// The spec 16 checks, in order, with the offsets they name.
    #[test]
    fn footer_checks_name_their_offsets() {
        let file = finish(vec![7u8; 64], *b"ANNALSTB");
        let n = file.len() as u64;
        let open = |b: &[u8]| BlockFile::from_bytes(b, *b"ANNALSTB").map(|_| ()).unwrap_err().offset;
        assert_eq!(open(&file[..31]), 0);
        assert_eq!(open(&finish(vec![7u8; 64], *b"ANNALIDX")), n - 32 + 24);
        let mut b = file.clone();
        b[file.len() - 32 + 21] ^= 1;
        assert_eq!(open(&b), n - 32 + 20);
        let mut b = file.clone();
        let foot = BlockFooter::new(65, 1, 0, *b"ANNALSTB");
        b[file.len() - 32..].copy_from_slice(foot.as_bytes());
        assert_eq!(open(&b), n - 32);
        let mut b = file.clone();
        b[64] ^= 1;
        assert_eq!(open(&b), 64);
    }

    /// A failure to open a derived file that says nothing about its bytes is
    /// an I/O failure, never damage (issue 14): here `ENAMETOOLONG`, which
    /// holds for root too, unlike a permission error. And something other than
    /// a regular file under the name is damage, as before.
    #[test]
    fn open_failures_are_io_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("x".repeat(300));
        let d = BlockFile::open_path(&long, *b"ANNALIDX").unwrap_err();
        assert!(d.is_io(), "{d:?}");
        let e = d.at(&long);
        assert!(matches!(e, crate::error::Error::Io { op: "open", .. }), "{e:?}");
        assert!(e.to_string().contains(&*long.to_string_lossy()), "{e}");

        let sub = dir.path().join("00000000000000000000.idx");
        std::fs::create_dir(&sub).unwrap();
        let d = BlockFile::open_path(&sub, *b"ANNALIDX").unwrap_err();
        assert!(!d.is_io(), "{d:?}");
        assert!(
            BlockFile::open_path(&dir.path().join("missing"), *b"ANNALIDX")
                .unwrap()
                .is_none()
        );

        let e = map_failure(&crate::error::Error::InvalidArgument("too big".into()));
        assert!(e.is_io(), "{e:?}");
    }
}
