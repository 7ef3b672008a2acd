//! Event sourcing on top of the log: typed events (serde with a codec:
//! postcard, or JSON with the `json` feature; with upcasting), aggregates with optimistic concurrency and snapshots,
//! snapshot files, projections (sequential and parallel rebuilds), and
//! erasing subjects (`erasure`: the key, then what snapshots hold).
//!
//! This layer uses the log through its public API ([`crate::Log`],
//! [`crate::LogView`]) plus the parallel-rebuild hooks of the read layer.

pub(crate) mod aggregate;
#[cfg(feature = "tokio")]
mod asynchronous;
pub(crate) mod codec;
pub(crate) mod competing;
pub(crate) mod consumer;
#[cfg(feature = "cqrs-es")]
pub mod cqrs;
mod erasure;
pub(crate) mod projection;
pub(crate) mod runner;
pub(crate) mod serving;
pub(crate) mod snapshot;
pub mod typed;
