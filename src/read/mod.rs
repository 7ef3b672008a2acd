//! Reading: point-in-time views of a log, the cross-process reader, queries
//! by stream, category and event type, subscriptions, and the head anchor.
//!
//! Nothing here writes a log file or imports the writer: a view is built from
//! what a segment's bytes prove (plus hints from derived files that are
//! checked against the records they point to). The writer hands out views of
//! its own log through the same types, which is why `writer` sits above this
//! layer. Imports: [`crate::format`], [`crate::storage`], [`crate::index`],
//! [`crate::audit`].
//!
//! Files: `logview` (the view and its segments), `replay` (`read_all`),
//! `sealed` (opening sealed segments), `reader` (the cross-process reader),
//! `active` (its validation of the active segment), `budget` (how many
//! segments stay mapped), `query` (index-served reads: categories, types,
//! backward, by time), `stream` (one stream's reads), `hits` (the index-hit
//! checks they share), `rules` (what stream metadata hides, spec 3.7, read
//! from a view) and `visibility` (the same as values a view can hold),
//! `subscription`, `owned` (reads that own their view and yield owned
//! records), `anchor`, `unseal` (records made readable: sealed ones
//! decrypted or erased, spec 3.8), `front` (the log's start after retention,
//! spec 3.9), `cold` (sealed segments kept in an object store, read in
//! front of the directory's, spec 23.7); `view` re-exports what
//! other layers use, so that `crate::read::view::X` stays their one path.

mod active;
pub(crate) mod anchor;
mod budget;
#[cfg(feature = "remote")]
pub(crate) mod cold;
mod follow;
pub(crate) mod front;
mod hits;
mod logview;
pub(crate) mod owned;
pub(crate) mod query;
mod reader;
mod replay;
pub(crate) mod rules;
mod sealed;
mod visibility;
#[cfg(feature = "fuzzing")]
pub(crate) use sealed::READER_PREADS;
mod stream;
pub(crate) mod subscription;
mod unseal;
pub(crate) mod view;
