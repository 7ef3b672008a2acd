//! Storage: where bytes live and how they get there.
//!
//! This layer owns every operation on files that is not a decoder: the I/O
//! seam through which the writer creates, writes, syncs, renames and
//! truncates files ([`io`]), the one module that maps files into memory
//! ([`mmap`], the crate's only `unsafe` with the soundness argument beside
//! it), the head file's reading and crash-safe writing ([`head`]), and the
//! writer lock that keeps one writer per directory (`writer_lock`).
//!
//! It imports only [`crate::format`] (and [`crate::error`]); the byte layouts
//! it reads and writes are defined there, once.

pub(crate) mod head;
pub mod io;
pub(crate) mod mmap;
pub(crate) mod resync;
pub(crate) mod writer_lock;
