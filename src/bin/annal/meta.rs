//! `annal delete` and `annal metadata`: stream deletion and stream metadata
//! (spec 3.7, format version 4), through the writer like `annal append`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::{AppendResult, Direction, Durability, ExpectedVersion, Log, Reader, StreamMetadata};
use clap::Args;

use crate::jsonfmt::escape;
use crate::write::{SegmentSizeArg, check_stream_name, parse_expected, write_options};
use crate::{CmdResult, Failure, out_err};

/// The first format version with stream metadata (spec 3.7).
const META_FORMAT_VERSION: u16 = 4;

pub const DELETE_HELP: &str = "Examples:
  annal append ./carts --stream cart-1 --type ItemAdded --data '{\"sku\":\"A-7\"}'
  annal delete ./carts cart-1 --expected-version 0
  annal read ./carts --stream cart-1   # exit 1
  annal append ./carts --stream cart-1 --type ItemAdded --expected-version no-stream --data '{}'
  annal append ./carts --stream cart-2 --type ItemAdded --data '{}'
  annal delete ./carts cart-2 --hard --json
  annal append ./carts --stream cart-2 --type ItemAdded --data '{}'   # exit 1

Deletes a stream by appending one metadata event (to the system stream
$meta-STREAM, spec 3.7): atomic, durable with --sync, and chained like any
other append. Prints the position of that event (--json: position, stream,
hard).

What it promises: from the moment it returns, reading the stream fails with
\"stream ... is deleted\" (exit 1), distinct from a stream that never existed,
and its events are hidden from every read (by stream, category, event type,
the whole log, tail). A soft delete (the default) allows a new life: the next
append (--expected-version no-stream is accepted) goes on at the next version,
and reads show only the events of the new life. --hard writes a tombstone:
every later append to the stream, and every change of its metadata, is refused
for good (exit 1).

What it does not promise: the events are not erased. Their bytes stay in the
segment files until the log is compacted; `annal check` and `annal dump` still
show them. Needs a log of format version 4 (logs of older versions are
refused, exit 1, nothing appended).

Exit codes: 0 deleted; 1 refused (wrong expected version, the stream is
already hard-deleted, a log of format version before 4, log locked by another
writer); 2 could not run (bad arguments, a system stream ($...), the directory
is not a log, unreadable path).";

pub const METADATA_HELP: &str = "Examples:
  annal append ./sensors --stream sensor-1 --type Read --data '{\"c\":20}'
  annal append ./sensors --stream sensor-1 --type Read --data '{\"c\":21}'
  annal append ./sensors --stream sensor-1 --type Read --data '{\"c\":22}'
  annal metadata ./sensors sensor-1 --max-count 2
  annal read ./sensors --stream sensor-1
  annal metadata ./sensors sensor-1 --max-count 100 --max-age 90d --json
  annal metadata ./sensors sensor-1
  annal metadata ./sensors sensor-1 --clear

Without options, prints the stream's metadata: whether it is deleted, and
the rules that hide its older events. With --truncate-before, --max-count,
--max-age or --clear, sets them (one metadata event appended to the system
stream $meta-STREAM, spec 3.7) and prints the new metadata. The three rules
are set together, as Log::set_stream_metadata does: a rule not given is
removed (to change one, give the others again); --clear removes all three.
A deletion is kept: on a deleted stream, the truncate-before the deletion set
stays unless --truncate-before is given (a lower one shows deleted events
again).

With --json, one object: stream, deleted, hard_deleted, reads_as_deleted
(deleted and no new life since), truncate_before, max_count, max_age (as
--max-age takes it) and max_age_ns (null when not set), and position (of the
metadata event) when it set them.

--truncate-before N hides the events with a version below N; --max-count N
keeps only the N newest events visible (N at least 1); --max-age hides events
appended longer ago than a whole number with a unit: 90d, 12h, 30m, 45s or
500ms (days, hours, minutes, seconds, milliseconds; at least 1 ms), measured
against the reader's clock at each read.

What it promises: reads hide what the rules hide from the moment it returns
(by stream, category, event type, the whole log, tail). What it does not
promise: hidden events are not erased. Their bytes stay in the segment files
until the log is compacted; `annal check` and `annal dump` still show them,
and lowering --truncate-before shows them again. Needs a log of format
version 4 (older logs are refused, exit 1).

Exit codes: 0 printed or set; 1 refused (the stream is hard-deleted, a log of
format version before 4, log locked by another writer); 2 could not run (bad
arguments or duration, a system stream ($...), the directory is not a log,
unreadable path).";

pub const ERASE_HELP: &str = "Examples:
  annal append ./crm --stream customer-7 --type EmailChanged --subject ann --data '{\"email\":\"ann@example.com\"}'
  annal read ./crm --stream customer-7 --json   # the payload, decrypted
  annal erase ./crm ann
  annal read ./crm --stream customer-7 --json   # \"erased\":true, no data

Destroys the data key of each SUBJECT in annal.keys (spec 22: the file is
replaced atomically and fsynced), so that every event appended with
--subject SUBJECT reads as erased from then on: its envelope (position,
stream, version, type, time, id) stays, its payload and metadata are gone.
The audit chain still verifies (it covers the ciphertext). A subject named
again later gets a new key. Prints each subject's erased key id, or says it
had no key (--json: one object per subject).

What it cannot reach: copies of annal.keys made before (backups, file system
blocks), and processes that loaded the key before and do not reload it.
annal.keys is the one file to protect (spec 22.7).

Exit codes: 0 done (also when a subject had no key); 1 refused (a log of
format version before 4, log locked by another writer); 2 could not run (bad
arguments, the directory is not a log, annal.keys damaged or unreadable:
nothing was erased).";

/// Arguments of `annal erase`.
#[derive(Args)]
pub struct EraseArgs {
    /// The log directory (an existing log).
    dir: PathBuf,
    /// The subjects to erase.
    #[arg(required = true)]
    subjects: Vec<String>,
    /// Print the result as JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// Arguments of `annal delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// The log directory (an existing log).
    dir: PathBuf,
    /// The stream to delete.
    stream: String,
    /// Condition on the stream: any, no-stream, exists, or the version N of its last event.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected_version: ExpectedVersion,
    /// Hard-delete: a tombstone; no append to the stream is ever accepted again.
    #[arg(long)]
    hard: bool,
    /// Exit only once the deletion is durable (fsynced).
    #[arg(long)]
    sync: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    size: SegmentSizeArg,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// Arguments of `annal metadata`.
#[derive(Args)]
pub struct MetadataArgs {
    /// The log directory (an existing log).
    dir: PathBuf,
    /// The stream whose metadata to print or set.
    stream: String,
    /// Set: hide the events with a version below N.
    #[arg(long, value_name = "N")]
    truncate_before: Option<u64>,
    /// Set: keep only the N newest events visible (N at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_count: Option<u64>,
    /// Set: hide events older than DURATION: a whole number with a unit, 90d,
    /// 12h, 30m, 45s or 500ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Set: remove all three rules (every event visible again, unless deleted).
    #[arg(long, conflicts_with_all = ["truncate_before", "max_count", "max_age"])]
    clear: bool,
    /// Exit only once the new metadata is durable (fsynced).
    #[arg(long)]
    sync: bool,
    /// Print the metadata as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    size: SegmentSizeArg,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// A duration: a whole number with a unit d, h, m, s or ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("{s:?} is not a duration: a whole number with a unit d, h, m, s or ms (90d, 12h, 30m, 45s, 500ms)");
    let t = s.trim();
    let i = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = t.split_at(i);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms_per: u64 = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        "ms" => 1,
        _ => return Err(bad()),
    };
    let ms = n
        .checked_mul(ms_per)
        .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    if ms == 0 {
        return Err(format!("{s:?}: a maximum age must be at least 1 ms"));
    }
    Ok(Duration::from_millis(ms))
}

/// A duration in the largest unit that divides it (the form --max-age takes;
/// nanoseconds when no unit of it does).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ] {
        if ns > 0 && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// Open the existing log in `dir` with a writer: never creates one.
fn open_writer(
    dir: &Path,
    size: &SegmentSizeArg,
    chain: &crate::audit::WriteChainArgs,
    sync: bool,
) -> Result<Log, Failure> {
    // Reader::open refuses a directory that is not a log without touching it;
    // Log::open would create a log in an empty one.
    Reader::open(dir)?;
    let durability = if sync { Durability::Fsync } else { Durability::Buffered };
    let log = Log::open_with(dir, write_options(size, chain, durability)?).map_err(crate::audit::open_failure)?;
    let v = log.format_version();
    if v < META_FORMAT_VERSION {
        let _ = log.close();
        return Err(Failure::problem(format!(
            "{} is a log of format version {v}: stream deletion, metadata and subjects need format version \
             {META_FORMAT_VERSION} (spec 3.7, 3.8); refused, nothing was written",
            dir.display()
        )));
    }
    Ok(log)
}

/// Close `log` after `result` (syncing first if asked), keeping the first error.
fn finish<T>(log: Log, result: annal::Result<T>, sync: bool) -> Result<T, Failure> {
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = log.close();
            return Err(e.into());
        }
    };
    if sync {
        log.sync()?;
    }
    log.close()?;
    Ok(r)
}

/// Run `annal erase`.
pub fn erase(a: &EraseArgs) -> CmdResult {
    if let Some(s) = a.subjects.iter().find(|s| s.is_empty() || s.len() > 1024) {
        return Err(Failure::usage(format!(
            "a subject must be 1 to 1024 bytes, found {} bytes",
            s.len()
        )));
    }
    let log = open_writer(&a.dir, &SegmentSizeArg::default(), &a.chain, true)?;
    let names: Vec<&str> = a.subjects.iter().map(String::as_str).collect();
    let result = log.erase_subjects(&names);
    let erased = finish(log, result, false)?;
    let mut out = std::io::stdout().lock();
    for (subject, key) in a.subjects.iter().zip(erased) {
        if a.json {
            let v = serde_json::json!({ "subject": subject, "erased_key": key.map(|k| k.0) });
            writeln!(out, "{v}").map_err(out_err)?;
        } else if let Some(k) = key {
            writeln!(
                out,
                "erased {} (key {}): its events read as erased",
                escape(subject),
                k.0
            )
            .map_err(out_err)?;
        } else {
            writeln!(
                out,
                "{} has no key (never named, or erased already): nothing to erase",
                escape(subject)
            )
            .map_err(out_err)?;
        }
    }
    Ok(())
}

fn check_name(stream: &str) -> Result<(), Failure> {
    check_stream_name(stream).map_err(Failure::usage)?;
    if stream.starts_with('$') {
        return Err(Failure::usage(format!(
            "stream {:?} is a system stream (its name starts with '$', spec 3.7): it has no metadata and \
             cannot be deleted",
            escape(stream)
        )));
    }
    Ok(())
}

/// Whether `stream` reads as deleted in a view of `log` taken now.
fn reads_as_deleted(log: &Log, stream: &str) -> annal::Result<bool> {
    let view = log.view()?;
    let first = view.read_stream(stream, 0, Direction::Forward, 1).next();
    match first {
        Some(Err(annal::Error::StreamDeleted { .. })) => Ok(true),
        Some(Err(e)) => Err(e),
        _ => Ok(false),
    }
}

/// Run `annal delete`.
pub fn delete(a: &DeleteArgs) -> CmdResult {
    check_name(&a.stream)?;
    let log = open_writer(&a.dir, &a.size, &a.chain, a.sync)?;
    let result = if a.hard {
        log.hard_delete_stream(&a.stream, a.expected_version)
    } else {
        log.delete_stream(&a.stream, a.expected_version)
    };
    let r: AppendResult = finish(log, result, a.sync)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "position": r.last_position,
            "stream": a.stream,
            "hard": a.hard,
        });
        writeln!(out, "{v}").map_err(out_err)?;
    } else if a.hard {
        writeln!(
            out,
            "hard-deleted {} at position {}: reads say it is deleted, and no append to it will ever be accepted",
            escape(&a.stream),
            r.last_position
        )
        .map_err(out_err)?;
    } else {
        writeln!(
            out,
            "deleted {} at position {}: reads say it is deleted until an append starts a new life at the next version",
            escape(&a.stream),
            r.last_position
        )
        .map_err(out_err)?;
    }
    Ok(())
}

/// Run `annal metadata`.
pub fn metadata(a: &MetadataArgs) -> CmdResult {
    check_name(&a.stream)?;
    let set = a.clear || a.truncate_before.is_some() || a.max_count.is_some() || a.max_age.is_some();
    let log = open_writer(&a.dir, &a.size, &a.chain, a.sync)?;
    let (position, meta) = if set {
        let mut m = StreamMetadata::new();
        // A deletion hides the events below its truncate-before: keep it
        // unless one is given (the library would set 0, showing them again).
        let kept = match log.stream_metadata(&a.stream) {
            Ok(current) => current.filter(|c| c.deleted).and_then(|c| c.truncate_before),
            Err(e) => return finish(log, Err(e), false),
        };
        if let Some(v) = a.truncate_before.or(kept) {
            m = m.truncate_before(v);
        }
        if let Some(n) = a.max_count {
            m = m.max_count(n);
        }
        if let Some(d) = a.max_age {
            m = m.max_age(d);
        }
        let result = log.set_stream_metadata(&a.stream, m).and_then(|r| {
            let m = log.stream_metadata(&a.stream)?;
            Ok((Some(r.last_position), (m, reads_as_deleted(&log, &a.stream)?)))
        });
        finish(log, result, a.sync)?
    } else {
        let result = log
            .stream_metadata(&a.stream)
            .and_then(|m| Ok((None, (m, reads_as_deleted(&log, &a.stream)?))));
        finish(log, result, false)?
    };
    let (meta, reads_deleted) = meta;
    let m = meta.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = serde_json::json!({
            "stream": a.stream,
            "deleted": m.deleted,
            "hard_deleted": m.tombstoned,
            "reads_as_deleted": reads_deleted,
            "truncate_before": m.truncate_before,
            "max_count": m.max_count,
            "max_age": m.max_age.map(format_duration),
            "max_age_ns": m.max_age.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        });
        if let (Some(p), Some(o)) = (position, v.as_object_mut()) {
            o.insert("position".into(), p.into());
        }
        writeln!(out, "{v}").map_err(out_err)?;
        return Ok(());
    }
    let mut s = String::new();
    use std::fmt::Write as _;
    if let Some(p) = position {
        let _ = writeln!(s, "set the metadata of {} at position {p}", escape(&a.stream));
    }
    let none = || "none".to_owned();
    let deleted = match (m.deleted, m.tombstoned, reads_deleted) {
        (_, true, _) => "hard-deleted (no append is ever accepted again)",
        (true, false, true) => "deleted (until an append starts a new life at the next version)",
        (true, false, false) => "deleted, then a new life (the versions from truncate before on are visible)",
        (false, false, _) => "no",
    };
    let _ = writeln!(s, "stream:          {}", escape(&a.stream));
    let _ = writeln!(s, "deleted:         {deleted}");
    let _ = writeln!(
        s,
        "truncate before: {}",
        m.truncate_before.map_or_else(none, |v| v.to_string())
    );
    let _ = writeln!(
        s,
        "max count:       {}",
        m.max_count.map_or_else(none, |v| v.to_string())
    );
    let _ = writeln!(s, "max age:         {}", m.max_age.map_or_else(none, format_duration));
    out.write_all(s.as_bytes()).map_err(out_err)?;
    Ok(())
}
