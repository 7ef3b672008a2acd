//! The audit chain: hash links over batches, keys, signed checkpoints, and
//! the writer's chaining of batches as they are committed.
//!
//! [`chain`] owns the exact hash inputs (genesis, links), the secret key of
//! keyed mode, signing keys and anchors; [`chaining`] fills the chain slots
//! of frames in the writer's commit path (overlapping hashing with I/O).
//! Verification of a whole log lives in `check`, which walks the segments.
//! This layer imports [`crate::format`] and [`crate::storage`] only.

pub(crate) mod chain;
pub(crate) mod chaining;
pub(crate) mod keyring;
mod random;
pub(crate) mod subjects;
