//! `annal retain`: log retention (spec 3.9), through the writer like
//! `annal append`: whole sealed segments removed from the front of the log
//! by age or total size, after a durable `$retention` record says so.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use annal::{Durability, Log, Reader, Retention};
use clap::Args;

use crate::meta::{format_duration, parse_duration};
use crate::write::{SegmentSizeArg, parse_size, write_options};
use crate::{CmdResult, Failure, out_err};

pub const RETAIN_HELP: &str = "Examples:
  annal append ./kept --stream host-1 --type Sample --data '{\"cpu\":0.5}'
  annal retain ./kept --max-age 90d
  annal retain ./kept --max-bytes 10G --json
  annal check ./kept

Removes whole sealed segments from the front of the log, oldest first, never
the active one: by age (a segment whose newest event is older than
--max-age) and by size (the oldest segments while the segment and index files
together exceed --max-bytes). Before any file is removed, one event is
appended to the system stream $retention (spec 3.9) saying which segments go
and by which rule; it is durable and chained like any append. Prints what was
removed (--json: removed_segments, removed_bytes, first_position,
record_position, rule).

What it promises: the events left are unchanged and read exactly as before
(a stream whose first events were removed starts at its first surviving
version); `annal check` proves the removal was recorded, and reports anchors
from before the new start as superseded by retention, never as a rewrite.
Stream metadata whose events were in removed segments is appended again first,
so deleted streams stay deleted. A crash at any point leaves a log that opens;
the next open finishes a recorded removal.

What it does not promise: the removed events are gone for good (keep a copy
first if you need one). A stream all of whose events were removed reads as
no events, and its next append starts at version 0 again. Needs a log of
format version 4 (older logs are refused, exit 1, nothing removed).

Exit codes: 0 done (also when nothing had to go); 1 refused (a log of format
version before 4, log locked by another writer, corrupt data); 2 could not
run (bad arguments, the directory is not a log).";

/// Arguments of `annal retain`.
#[derive(Args)]
pub struct RetainArgs {
    /// The log directory (an existing log).
    dir: PathBuf,
    /// Remove sealed segments whose newest event is older than DURATION: a
    /// whole number with a unit, 90d, 12h, 30m, 45s or 500ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log's segment and index
    /// files exceed SIZE: bytes, or with a suffix K, M or G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    size: SegmentSizeArg,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// Run `annal retain`.
pub fn retain(a: &RetainArgs) -> CmdResult {
    if a.max_age.is_none() && a.max_bytes.is_none() {
        return Err(Failure::usage("give --max-age, --max-bytes or both"));
    }
    if a.max_bytes == Some(0) {
        return Err(Failure::usage("--max-bytes must be at least 1"));
    }
    // Reader::open refuses a directory that is not a log without touching it.
    Reader::open(&a.dir)?;
    let opts = write_options(&a.size, &a.chain, Durability::Fsync)?;
    let log = Log::open_with(&a.dir, opts).map_err(crate::audit::open_failure)?;
    let mut rule = Retention::new();
    if let Some(d) = a.max_age {
        rule = rule.max_age(d);
    }
    if let Some(n) = a.max_bytes {
        rule = rule.max_bytes(n);
    }
    let report = match log.apply_retention_with(rule) {
        Ok(r) => r,
        Err(e) => {
            let _ = log.close();
            let refused = matches!(e, annal::Error::InvalidArgument(_));
            let f = Failure::from(e);
            return Err(if refused { Failure::problem(f.message) } else { f });
        }
    };
    let first = log.first_position();
    log.close()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "removed_segments": report.removed_segments.len(),
            "removed_bytes": report.removed_bytes,
            "first_position": first,
            "record_position": report.record_position,
            "rule": report.rule,
            "max_age": a.max_age.map(format_duration),
            "max_bytes": a.max_bytes,
        });
        writeln!(out, "{v}").map_err(out_err)?;
    } else if let (Some(at), Some(rule)) = (report.record_position, report.rule) {
        writeln!(
            out,
            "removed {} segment(s), {} bytes, by {rule}: the log starts at position {first} (recorded at position {at})",
            report.removed_segments.len(),
            report.removed_bytes
        )
        .map_err(out_err)?;
    } else {
        writeln!(out, "nothing to remove: the log starts at position {first}").map_err(out_err)?;
    }
    Ok(())
}
