//! Damage: what a decoder reports about bytes that do not hold what the
//! format says, before the file's path is known.
//!
//! Decoders work on `&[u8]` and report offsets relative to the start of the
//! file they were given; the caller attaches the path (`Damage::at`, in
//! `crate::error`), turning damage into `Error::Corrupt` or
//! `Error::UnsupportedVersion`, and an I/O failure carried here into
//! `Error::Io`, never into corruption.

use std::io;

/// Damage found by a parser, before the path is known. Parsers work on `&[u8]`
/// and report offsets relative to the start of the file they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub kind: DamageKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DamageKind {
    Corrupt(String),
    Version(u16),
    /// Not damage: an operating-system call failed while opening or reading
    /// the file (`at` turns it into [`Error::Io`], never corruption).
    Io(IoFailure),
}

/// An I/O failure carried through code that reports [`Damage`], rebuilt as an
/// `io::Error` (same OS error code) when the path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IoFailure {
    pub op: &'static str,
    kind: io::ErrorKind,
    raw: Option<i32>,
    message: String,
}

impl IoFailure {
    pub(crate) fn to_io_error(&self) -> io::Error {
        match self.raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl Damage {
    pub(crate) fn corrupt(offset: u64, detail: impl Into<String>) -> Damage {
        Damage {
            offset,
            kind: DamageKind::Corrupt(detail.into()),
        }
    }

    /// An I/O failure (`op` failed with `e`), not damage.
    pub(crate) fn io(op: &'static str, e: &io::Error) -> Damage {
        Damage {
            offset: 0,
            kind: DamageKind::Io(IoFailure {
                op,
                kind: e.kind(),
                raw: e.raw_os_error(),
                message: e.to_string(),
            }),
        }
    }

    /// Whether this is an I/O failure rather than damage.
    pub(crate) fn is_io(&self) -> bool {
        matches!(self.kind, DamageKind::Io(_))
    }

    pub(crate) fn detail(&self) -> String {
        match &self.kind {
            DamageKind::Corrupt(d) => d.clone(),
            DamageKind::Version(v) => format!("unsupported format version {v}"),
            DamageKind::Io(f) => format!("{} failed: {}", f.op, f.message),
        }
    }
}
