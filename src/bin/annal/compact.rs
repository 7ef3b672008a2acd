//! `annal compact`: compaction (spec 3.10), through the writer like
//! `annal retain`: sealed segments rewritten without the events that stream
//! metadata hides, each after a durable `$compaction` record accounts for it.

use std::io::Write;
use std::path::{Path, PathBuf};

use annal::{Durability, Log, Reader};
use clap::Args;

use crate::write::{SegmentSizeArg, write_options};
use crate::{CmdResult, Failure, out_err};

pub const COMPACT_HELP: &str = "Examples:
  annal append ./tidy --stream cart-1 --type ItemAdded --data '{\"sku\":\"A-7\"}'
  annal delete ./tidy cart-1
  annal compact ./tidy
  annal compact ./tidy --json
  annal check ./tidy

Rewrites the sealed segments of the log without the events that stream
metadata hides (deleted streams, --truncate-before, --max-count, --max-age of
annal metadata), and swaps each rewritten file in for the original after one
event appended to the system stream $compaction (spec 3.10) says what was
removed; it is durable and chained like any append. Prints what it did
(--json: compacted, removed_events, bytes_before, bytes_after,
record_positions, unchanged).

What it promises: the events left are unchanged (positions, versions, ids,
bytes) and every read returns exactly what it returned before; positions keep
gaps where events were removed. The newest event of each stream stays, still
hidden if its rules hide it (the stream's version goes on from it), unless the
stream is hard-deleted (annal delete --hard), which may lose them all; events
of system streams stay. `annal check` proves each rewrite was recorded and still
verifies the chain; an anchor taken inside a compacted segment is reported
as superseded by compaction, never as a rewrite. A crash at any point leaves
the original segment or the rewritten one, whole.

What it does not promise: the active segment is never compacted, so events
hidden there stay until the log rolls to a new segment (at --segment-size of
the writer, 256M by default; an append with a smaller --segment-size rolls
it sooner), then compact again. Erasing a subject removes nothing: its events
keep their envelope and ciphertext (the key is gone). Removed bytes may
survive in file-system blocks, snapshots of the disk and backups made
before. Needs a log of format version 4 (older logs are refused, exit 1,
nothing changed).

Exit codes: 0 done (also when nothing had to go); 1 refused (a log of format
version before 4, log locked by another writer, corrupt data); 2 could not
run (bad arguments, the directory is not a log).";

/// Arguments of `annal compact`.
#[derive(Args)]
pub struct CompactArgs {
    /// The log directory (an existing log).
    dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Keep no copy of the rewritten segments' originals: the removed
    /// events' bytes leave the directory at once. Without it, each original
    /// stays under a `.retired` name for 10 minutes, for readers in other
    /// processes that had not mapped it yet (spec 3.10).
    #[arg(long)]
    drop_originals: bool,
    #[command(flatten)]
    size: SegmentSizeArg,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// The last part of a path, for output.
fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Run `annal compact`.
pub fn compact(a: &CompactArgs) -> CmdResult {
    // Reader::open refuses a directory that is not a log without touching it.
    Reader::open(&a.dir)?;
    let mut opts = write_options(&a.size, &a.chain, Durability::Fsync)?;
    if a.drop_originals {
        opts = opts.retired_grace(std::time::Duration::ZERO);
    }
    let log = Log::open_with(&a.dir, opts).map_err(crate::audit::open_failure)?;
    if log.format_version() < 4 {
        let v = log.format_version();
        let _ = log.close();
        return Err(Failure::problem(format!(
            "compaction needs a log of format version 4; this log is version {v} (nothing changed)"
        )));
    }
    let report = match log.compact() {
        Ok(r) => r,
        Err(e) => {
            let _ = log.close();
            let refused = matches!(e, annal::Error::InvalidArgument(_));
            let f = Failure::from(e);
            return Err(if refused { Failure::problem(f.message) } else { f });
        }
    };
    log.close()?;
    let names: Vec<String> = report.compacted.iter().map(|p| file_name(p)).collect();
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "compacted": names,
            "removed_events": report.removed_events,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "record_positions": report.record_positions,
            "unchanged": report.unchanged,
        });
        writeln!(out, "{v}").map_err(out_err)?;
        return Ok(());
    }
    for (i, name) in names.iter().enumerate() {
        match report.record_positions.get(i) {
            Some(at) => writeln!(out, "compacted {name} (recorded at position {at})"),
            None => writeln!(out, "compacted {name}"),
        }
        .map_err(out_err)?;
    }
    if names.is_empty() {
        writeln!(
            out,
            "nothing to compact: {} sealed segment(s) hold no hidden events (the active segment is never compacted)",
            report.unchanged
        )
        .map_err(out_err)?;
    } else {
        writeln!(
            out,
            "removed {} event(s) from {} segment(s), {} bytes -> {} bytes; {} sealed segment(s) unchanged",
            report.removed_events,
            names.len(),
            report.bytes_before,
            report.bytes_after,
            report.unchanged
        )
        .map_err(out_err)?;
    }
    Ok(())
}
