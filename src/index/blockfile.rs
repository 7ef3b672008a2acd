//! Derived files checked block by block (spec section 16).
//!
//! Index files and the stream table are mapped and searched in place. Their
//! integrity is checked lazily: the footer and the block CRC table when the
//! file is first opened, and each 4096-byte block the first time any byte of
//! it is read. So opening a log reads nothing of these files, and a lookup
//! checks only the few blocks it touches.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Damage;
use crate::storage::mmap::Mapping;

/// Size of a checked block.
pub const BLOCK: usize = 4096;
/// Size of the footer.
pub const FOOTER_LEN: usize = 32;

/// Append the block CRC table and the footer to `body` (whose length must be a
/// multiple of 8), making it a complete derived file.
pub(crate) fn finish(mut body: Vec<u8>, magic: [u8; 8]) -> Vec<u8> {
    debug_assert_eq!(body.len() % 8, 0);
    let table_offset = body.len();
    let blocks = table_offset.div_ceil(BLOCK);
    let mut table = Vec::with_capacity(blocks * 4);
    for chunk in body.chunks(BLOCK) {
        table.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
    }
    let table_crc = crc32fast::hash(&table);
    body.extend_from_slice(&table);
    let mut footer = [0u8; FOOTER_LEN];
    footer[0..8].copy_from_slice(&(table_offset as u64).to_le_bytes());
    footer[8..16].copy_from_slice(&(blocks as u64).to_le_bytes());
    footer[16..20].copy_from_slice(&table_crc.to_le_bytes());
    let footer_crc = crc32fast::hash(&footer[..20]);
    footer[20..24].copy_from_slice(&footer_crc.to_le_bytes());
    footer[24..32].copy_from_slice(&magic);
    body.extend_from_slice(&footer);
    body
}

/// A mapped derived file whose blocks are verified on first use.
#[derive(Debug)]
pub(crate) struct BlockFile {
    map: Mapping,
    table_offset: usize,
    verified: Box<[AtomicU64]>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl BlockFile {
    /// Check the footer and the block CRC table.
    pub(crate) fn open(map: Mapping, magic: [u8; 8]) -> Result<BlockFile, Damage> {
        let bytes = map.bytes();
        let len = bytes.len();
        if len < FOOTER_LEN {
            return Err(Damage::corrupt(
                0,
                format!("expected at least a {FOOTER_LEN}-byte footer, found {len} bytes"),
            ));
        }
        let f = &bytes[len - FOOTER_LEN..];
        let foff = (len - FOOTER_LEN) as u64;
        if f[24..32] != magic {
            return Err(Damage::corrupt(
                foff + 24,
                format!("expected footer magic {:?}", String::from_utf8_lossy(&magic)),
            ));
        }
        let want = crc32fast::hash(&f[..20]);
        if u32_at(f, 20) != want {
            return Err(Damage::corrupt(foff + 20, "footer CRC mismatch"));
        }
        let table_offset = u64_at(f, 0);
        let blocks = u64_at(f, 8);
        let expect_blocks = table_offset.div_ceil(BLOCK as u64);
        let expect_len = table_offset
            .checked_add(blocks.saturating_mul(4))
            .and_then(|x| x.checked_add(FOOTER_LEN as u64));
        if !table_offset.is_multiple_of(8) || blocks != expect_blocks || expect_len != Some(len as u64) {
            return Err(Damage::corrupt(
                foff,
                format!(
                    "footer says table_offset {table_offset} and {blocks} blocks, which does not fit a file of {len} bytes"
                ),
            ));
        }
        // Both fit in the file, checked above.
        let table_offset = table_offset as usize;
        let table = &bytes[table_offset..len - FOOTER_LEN];
        if crc32fast::hash(table) != u32_at(f, 16) {
            return Err(Damage::corrupt(
                table_offset as u64,
                "block CRC table does not match its CRC in the footer",
            ));
        }
        let words = (blocks as usize).div_ceil(64);
        let verified = (0..words).map(|_| AtomicU64::new(0)).collect();
        Ok(BlockFile {
            map,
            table_offset,
            verified,
        })
    }

    /// Map the file at `path` and check its footer and block table
    /// (`Ok(None)` if it does not exist).
    ///
    /// A failure to open, stat or map the file (`EMFILE`, `EACCES`, `ENOMEM`,
    /// a directory or FIFO under the name, ...) says nothing about its bytes:
    /// it is returned as an I/O failure ([`Damage::is_io`], which
    /// [`Damage::at`] turns into `Error::Io`), never as damage, so that no
    /// caller rebuilds or rewrites an intact file because of it.
    pub(crate) fn open_path(path: &std::path::Path, magic: [u8; 8]) -> Result<Option<BlockFile>, Damage> {
        let file = match crate::storage::io::open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // A symlink or special file under the name: damage of this file
            // (it is rebuilt), not a failure of the operating system.
            Err(e) if crate::storage::io::not_a_regular_file(&e) => {
                return Err(Damage::corrupt(0, format!("expected a regular file: {e}")));
            }
            Err(e) => return Err(Damage::io("open", &e)),
        };
        let len = file.metadata().map_err(|e| Damage::io("stat", &e))?.len();
        let map = match Mapping::map(&file, len, path) {
            Ok(m) => m,
            Err(crate::error::Error::Io { source, .. }) => return Err(Damage::io("mmap", &source)),
            Err(e) => return Err(Damage::corrupt(0, e.to_string())),
        };
        BlockFile::open(map, magic).map(Some)
    }

    /// Length of the checked region.
    pub(crate) fn len(&self) -> usize {
        self.table_offset
    }

    /// `len` bytes at `off` of the checked region, after verifying the blocks
    /// they lie in.
    pub(crate) fn get(&self, off: usize, len: usize) -> Result<&[u8], Damage> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.table_offset)
            .ok_or_else(|| {
                Damage::corrupt(
                    off as u64,
                    format!(
                        "{len} bytes at {off} lie past the checked region ({})",
                        self.table_offset
                    ),
                )
            })?;
        let bytes = self.map.bytes();
        if len > 0 {
            for block in off / BLOCK..=(end - 1) / BLOCK {
                self.verify(block, bytes)?;
            }
        }
        Ok(&bytes[off..end])
    }

    fn verify(&self, block: usize, bytes: &[u8]) -> Result<(), Damage> {
        let (word, bit) = (block / 64, 1u64 << (block % 64));
        let Some(w) = self.verified.get(word) else {
            return Err(Damage::corrupt((block * BLOCK) as u64, "block past the block table"));
        };
        if w.load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        let start = block * BLOCK;
        let end = (start + BLOCK).min(self.table_offset);
        let stored = u32_at(bytes, self.table_offset + block * 4);
        if crc32fast::hash(&bytes[start..end]) != stored {
            return Err(Damage::corrupt(
                start as u64,
                format!("block {block} (bytes {start}..{end}) fails its CRC"),
            ));
        }
        w.fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }

    /// The `u64` at `off`.
    pub(crate) fn u64(&self, off: usize) -> Result<u64, Damage> {
        Ok(u64_at(self.get(off, 8)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(bytes: &[u8]) -> (tempfile::TempDir, Mapping) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let m = Mapping::map(&f, bytes.len() as u64, &p).unwrap();
        (dir, m)
    }

    #[test]
    fn blocks_are_checked_lazily() {
        let body: Vec<u8> = (0..10_000u32).flat_map(|i| (i as u64).to_le_bytes()).collect();
        let file = finish(body.clone(), *b"ANNALIDX");
        let (_d, m) = mapped(&file);
        let bf = BlockFile::open(m, *b"ANNALIDX").unwrap();
        assert_eq!(bf.get(8 * 9999, 8).unwrap(), &9999u64.to_le_bytes());
        let mut bad = file.clone();
        bad[5000] ^= 1;
        let (_d, m) = mapped(&bad);
        let bf = BlockFile::open(m, *b"ANNALIDX").unwrap();
        assert!(bf.get(0, 8).is_ok(), "block 0 is intact");
        assert!(bf.get(4096, 8).is_err(), "block 1 is damaged");
        assert!(bf.get(bf.len() - 8, 16).is_err(), "past the end");
        let (_d, m) = mapped(&file[..file.len() - 1]);
        assert!(BlockFile::open(m, *b"ANNALIDX").is_err());
    }
}
