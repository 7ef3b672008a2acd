//! Where the subject keys' fresh keys and nonces come from (spec 22): the
//! operating system's generator, or, for tests and golden vectors only, a
//! fixed seed (a BLAKE3 stream), so that files are deterministic.

use crate::error::{Error, Result};

/// Where fresh keys and nonces come from: the operating system, or (tests,
/// golden vectors) a fixed seed, so that the file's bytes are deterministic.
pub(crate) enum Random {
    Os,
    #[cfg(any(test, feature = "fuzzing"))]
    Fixed {
        seed: u64,
        counter: std::sync::atomic::AtomicU64,
    },
}

impl Random {
    /// Fill `buf` with random bytes.
    pub(crate) fn fill(&self, buf: &mut [u8]) -> Result<()> {
        match self {
            Random::Os => getrandom::fill(buf)
                .map_err(|e| Error::InvalidArgument(format!("the operating system gave no random bytes: {e}"))),
            #[cfg(any(test, feature = "fuzzing"))]
            Random::Fixed { seed, counter } => {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut h = blake3::Hasher::new();
                h.update(&seed.to_le_bytes()).update(&n.to_le_bytes());
                h.finalize_xof().fill(buf);
                Ok(())
            }
        }
    }
}
