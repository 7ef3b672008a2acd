//! The format of a log being opened for writing: the format a new log is
//! created in (from the options), the check that an existing log's chain
//! key matches the key given, and where the audit chain starts (spec 21).
//!
//! Invariant: a chain or signing key is never accepted for a log it cannot
//! protect, and a keyed log is never opened for writing without its key.

use std::path::Path;

use crate::audit::chain::{ChainHash, Chainer};
use crate::error::{Error, Result};
use crate::format::frame::{chain_slot, parse_header, seal_len};
use crate::format::{LOG_FLAG_CHAIN, LOG_FLAG_KEYED};
use crate::format::{Layout, LogFormat, SegmentHeader};

use super::options::Options;

/// The format of a log created by this open.
pub(super) fn new_format(opts: &Options) -> Result<LogFormat> {
    let supported = crate::format::OLDEST_SUPPORTED_FORMAT_VERSION..=crate::format::CURRENT_FORMAT_VERSION;
    if !supported.contains(&opts.format_version) {
        return Err(Error::InvalidArgument(format!(
            "format version {} was asked for a new log; this build writes versions {} to {}",
            opts.format_version,
            supported.start(),
            supported.end()
        )));
    }
    let chained = opts.chain && opts.format_version >= 2;
    if (opts.chain_key.is_some() || opts.signing_key.is_some()) && !chained {
        return Err(Error::InvalidArgument(
            "a chain key or signing key was given for a log created without the audit chain".into(),
        ));
    }
    let mut flags = 0;
    if chained {
        flags |= LOG_FLAG_CHAIN;
    }
    if opts.chain_key.is_some() {
        flags |= LOG_FLAG_KEYED;
    }
    Ok(LogFormat {
        log_id: opts.log_id.unwrap_or_else(|| uuid::Uuid::new_v4().into_bytes()),
        version: opts.format_version,
        flags,
        key_id: opts.chain_key.as_ref().map(|k| k.id()).unwrap_or_default(),
    })
}

/// The chain hash before a log's first batch (zero without a chain).
pub(super) fn genesis(format: &LogFormat, opts: &Options) -> ChainHash {
    if format.chained() {
        Chainer::new(opts.chain_key.as_ref()).genesis(&format.log_id)
    } else {
        [0; 32]
    }
}

/// The chain hash in the seal of a sealed segment (its last frame).
pub(super) fn seal_chain(bytes: &[u8]) -> ChainHash {
    let layout = SegmentHeader::parse(bytes).map_or(Layout::V2, Layout::of);
    let at = bytes.len().saturating_sub(seal_len(&layout));
    bytes
        .get(at..)
        .and_then(|seal| {
            parse_header(seal, at as u64, &layout)
                .ok()
                .and_then(|f| chain_slot(seal, &f))
        })
        .unwrap_or([0; 32])
}

/// A writer of a keyed log needs its key; a key for a log that is not keyed
/// is refused (it would protect nothing).
pub(super) fn check_key(found: &LogFormat, opts: &Options, path: &Path) -> Result<()> {
    if opts.signing_key.is_some() && !found.chained() {
        return Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "a signing key was given, but the log has no audit chain to sign".into(),
        });
    }
    match (&opts.chain_key, found.keyed()) {
        (None, true) => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "the log's audit chain is keyed: opening it for writing needs its key".into(),
        }),
        (Some(_), false) => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: "a chain key was given, but the log's audit chain is not keyed".into(),
        }),
        (Some(k), true) if k.id() != found.key_id => Err(Error::ChainKey {
            path: path.to_owned(),
            detail: format!(
                "the key given (id {}) is not the log's chain key (id {})",
                crate::audit::chain::hex(&k.id()),
                crate::audit::chain::hex(&found.key_id)
            ),
        }),
        _ => Ok(()),
    }
}
