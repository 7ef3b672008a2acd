//! A fetched cold segment checked against the ranged reads it was opened
//! from (spec 23.7).

use std::path::PathBuf;
use std::sync::Arc;

use super::ends;
use crate::error::{Error, Result};
use crate::storage::io::read_exact_at;
use crate::storage::mmap::{Fetch, Fetched};

/// A segment's fetch, checked against the header and the end the segment
/// was opened from (by ranged reads, which no hash covers): the fetched
/// copy is checked against the manifest's BLAKE3 by the tier, so a copy
/// whose first or last bytes differ means the ranged reads returned other
/// bytes than the object holds, and the view was opened from them.
#[derive(Debug)]
pub(super) struct CheckedFetch {
    pub(super) inner: Arc<dyn Fetch>,
    pub(super) name: PathBuf,
    pub(super) len: u64,
    pub(super) head: Vec<u8>,
    pub(super) tail: Vec<u8>,
}

// SAFETY: returns what `inner` returned (a `Fetch`, which vouches for it),
// after reading some of its bytes.
unsafe impl Fetch for CheckedFetch {
    fn fetch(&self) -> Result<Fetched> {
        let got = self.inner.fetch()?;
        let (head, tail) = ends(self.len);
        for (range, want) in [(head, &self.head), (tail, &self.tail)] {
            let mut found = vec![0u8; want.len()];
            read_exact_at(&got.file, &mut found, range.start).map_err(|e| Error::io("read", &got.path, e))?;
            if found != *want {
                return Err(Error::Remote {
                    object: self.name.display().to_string(),
                    detail: format!(
                        "expected bytes [{}, {}) of the object to be those a ranged read of it returned when the \
                         segment was opened, found others: the store returned other bytes than the object holds",
                        range.start, range.end
                    ),
                });
            }
        }
        Ok(got)
    }
}
