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

With --remote URL (the store the log ships to, spec 23), only segments the
store holds confirmed are removed: the log's replicator ships what is
durable, reads each sealed segment back from the store and compares it with
the local file by BLAKE3, and the rule removes only those that matched
(printed: confirmed_below). A store that cannot be reached or read back
removes nothing (exit 1). The removed segments stay readable from the store
(`annal read URL`, `Reader::with_remote`, a writer with replicate_to).

Exit codes: 0 done (also when nothing had to go); 1 refused (a log of format
version before 4, log locked by another writer, corrupt data, the store
could not confirm); 2 could not run (bad arguments, the directory is not a
log).";

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
    /// The remote log this log ships to (s3://BUCKET/PREFIX, file:///PATH):
    /// remove only segments it holds confirmed (needs the remote feature).
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
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
    let mut rule = Retention::new();
    if let Some(d) = a.max_age {
        rule = rule.max_age(d);
    }
    if let Some(n) = a.max_bytes {
        rule = rule.max_bytes(n);
    }
    let opts = write_options(&a.size, &a.chain, Durability::Fsync)?;
    let (report, first, confirmed_below) = match &a.remote {
        Some(url) => retain_confirmed(a, opts, rule, url)?,
        None => {
            let log = Log::open_with(&a.dir, opts).map_err(crate::audit::open_failure)?;
            let report = apply(&log, rule)?;
            let first = log.first_position();
            log.close()?;
            (report, first, None)
        }
    };
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
            "confirmed_below": confirmed_below,
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
    } else if let Some(rule) = report.rule.filter(|_| !report.removed_segments.is_empty()) {
        writeln!(
            out,
            "removed {} segment(s), {} bytes, by {rule}: the log starts at position {first}",
            report.removed_segments.len(),
            report.removed_bytes
        )
        .map_err(out_err)?;
    } else {
        writeln!(out, "nothing to remove: the log starts at position {first}").map_err(out_err)?;
    }
    if let Some(c) = confirmed_below {
        writeln!(out, "the store holds confirmed every segment below position {c}").map_err(out_err)?;
    }
    Ok(())
}

/// Apply `rule` to `log` (closed again on failure).
fn apply(log: &Log, rule: Retention) -> Result<annal::RetentionReport, Failure> {
    log.apply_retention_with(rule).map_err(|e| {
        let _ = log.clone().close();
        let refused = matches!(e, annal::Error::InvalidArgument(_));
        let f = Failure::from(e);
        if refused { Failure::problem(f.message) } else { f }
    })
}

/// `annal retain --remote URL`: the log opened with its replicator to
/// `url`, confirming; the rule removes only segments the store holds
/// confirmed. Returns the report (of everything removed, by the rounds and
/// by the last pass), the first position left and where confirmation
/// reached.
#[cfg(feature = "remote")]
fn retain_confirmed(
    a: &RetainArgs,
    opts: annal::Options,
    rule: Retention,
    url: &str,
) -> Result<(annal::RetentionReport, u64, Option<u64>), Failure> {
    use annal::remote::{Follow, RemoteLog};
    let remote = RemoteLog::open(url)?;
    let before = segment_files(&a.dir)?;
    let follow =
        Follow::every(Duration::from_millis(20)).backoff(Duration::from_millis(20), Duration::from_millis(500));
    let log = opts
        .retention(rule)
        .replicate_to(remote, follow)
        .open(&a.dir)
        .map_err(crate::audit::open_failure)?;
    // A round that succeeded: what it confirmed is what the rule may remove
    // (by the pass below, or by the replicator's thread, whichever first).
    let started = std::time::Instant::now();
    let confirmed = loop {
        let status = log.replication().unwrap_or_default();
        if let Some(last) = status.last {
            break last;
        }
        if status.stopped || started.elapsed() > Duration::from_secs(120) {
            let _ = log.close();
            return Err(Failure::problem(format!(
                "{url}: the store could not confirm the log's segments ({}); nothing was removed that it does not hold",
                status.error.unwrap_or_else(|| "no round succeeded within 120 s".into())
            )));
        }
        // No round succeeded yet, so nothing was removed yet.
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut report = apply(&log, rule)?;
    let first = log.first_position();
    log.close()?;
    // What the replicator's rounds removed before the last pass, from the
    // files gone (by name: the active segment grows meanwhile).
    let after: std::collections::HashSet<PathBuf> = segment_files(&a.dir)?.into_iter().map(|(p, _)| p).collect();
    let gone: Vec<&(PathBuf, u64)> = before.iter().filter(|(p, _)| !after.contains(p)).collect();
    let gone_segments = gone
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .count();
    if gone_segments > report.removed_segments.len() {
        report.removed_segments = gone
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
            .map(|(p, _)| p.clone())
            .collect();
        report.removed_bytes = gone.iter().map(|(_, n)| n).sum();
        report.rule = report.rule.or(Some(match (a.max_age, a.max_bytes) {
            (Some(_), Some(_)) => "age and size",
            (Some(_), None) => "age",
            _ => "size",
        }));
    }
    Ok((report, first, Some(confirmed.confirmed_below)))
}

/// The segment and index files of the log in `dir`, with their lengths.
#[cfg(feature = "remote")]
fn segment_files(dir: &std::path::Path) -> Result<Vec<(PathBuf, u64)>, Failure> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Failure::usage(format!("cannot read the directory {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "seg" || x == "idx")
            && let Ok(m) = e.metadata()
        {
            out.push((path, m.len()));
        }
    }
    Ok(out)
}

/// Without the `remote` feature, --remote is refused.
#[cfg(not(feature = "remote"))]
fn retain_confirmed(
    _a: &RetainArgs,
    _opts: annal::Options,
    _rule: Retention,
    url: &str,
) -> Result<(annal::RetentionReport, u64, Option<u64>), Failure> {
    Err(Failure::usage(format!(
        "{url}: --remote needs annal built with the remote feature"
    )))
}
