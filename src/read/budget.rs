//! The mapping budget: how many sealed segments (each with its index file)
//! a [`Reader`](crate::Reader) or the writer keeps mapped between views.
//!
//! Invariant: trimming never unmaps what a view holds; it replaces the cached
//! segment by one that maps again on first use, and views taken before keep
//! their `Arc` of the old mapping.

use std::sync::Arc;

use crate::read::logview::ViewSegment;

/// Default bound on the sealed segments a [`Reader`](crate::Reader) (or the writer) keeps
/// mapped between views.
pub(crate) const DEFAULT_MAX_MAPPED: usize = 512;

static MAX_MAPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_MAPPED);

/// The bound on sealed segments kept mapped between views, for readers opened
/// from now on and for writers (default 512).
pub(crate) fn max_mapped() -> usize {
    MAX_MAPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Set the process-wide bound of [`max_mapped`]. For tests.
#[doc(hidden)]
pub fn set_default_max_mapped_segments(n: usize) {
    MAX_MAPPED.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Keep at most `max` of `sealed` mapped (segment or index file): let go of
/// the least recently mapped others, replacing them by segments that map
/// again on first use. Views taken before keep what they hold.
pub(crate) fn trim_mappings(sealed: &mut [ViewSegment], max: usize) {
    let mut live: Vec<(u64, usize)> = sealed
        .iter()
        .enumerate()
        .filter(|(_, s)| s.map.is_mapped() || s.index.current().is_some())
        .map(|(i, s)| (s.map.mapped_at(), i))
        .collect();
    if live.len() <= max {
        return;
    }
    live.sort_unstable();
    for &(_, i) in &live[..live.len() - max] {
        let s = &mut sealed[i];
        let Some(fresh) = s.map.fresh() else { continue };
        s.map = Arc::new(fresh);
        s.index = Arc::new(s.index.fresh());
    }
}
