//! The face of reading that the writer, `check` and `es` use: every type
//! and function a view involves, re-exported from the files that define them
//! (`logview`, `replay`, `reader`, `sealed`, `budget`), so that
//! `crate::read::view::X` stays the one path to them.
//!
//! This module defines nothing, and none of the files it re-exports imports
//! it (they import each other directly), so the module graph keeps no
//! cycle.

pub use crate::read::budget::set_default_max_mapped_segments;
pub(crate) use crate::read::budget::{max_mapped, trim_mappings};
pub(crate) use crate::read::logview::ViewSegment;
pub use crate::read::logview::{LogView, ReadOptions, Unrecovered};
pub use crate::read::reader::Reader;
#[cfg(feature = "remote")]
pub(crate) use crate::read::reader::list_segments;
pub use crate::read::replay::ReadAll;
#[cfg(feature = "remote")]
pub(crate) use crate::read::sealed::pread;
pub(crate) use crate::read::sealed::{open_sealed, open_sealed_in, prefetch_open, read_segment_header};
pub use crate::read::unseal::Unsealed;
