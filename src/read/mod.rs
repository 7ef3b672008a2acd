//! Reading: point-in-time views of a log, the cross-process reader, queries
//! by stream, category and event type, subscriptions, and the head anchor.
//!
//! Nothing here writes a log file or imports the writer: a view is built from
//! what a segment's bytes prove (plus hints from derived files that are
//! checked against the records they point to). The writer hands out views of
//! its own log through the same types, which is why `writer` sits above this
//! layer. Imports: [`crate::format`], [`crate::storage`], [`crate::index`],
//! [`crate::audit`].

pub(crate) mod anchor;
pub(crate) mod query;
pub(crate) mod subscription;
pub(crate) mod view;
