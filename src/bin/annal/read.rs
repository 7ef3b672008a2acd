//! `annal read`, `annal tail` and `annal stats`: everything through
//! `annal::Reader`, without the writer lock.

use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use annal::{Direction, Reader, RecordRef};
use clap::Args;

use crate::jsonfmt::{escape, escape_controls, record_json, record_text, rfc3339};
use crate::{CmdResult, Failure, out_err};

pub const READ_HELP: &str = "Examples:
  annal read ./events
  annal read ./events --stream order-42 --json
  annal read ./events --category order --from 1000 --limit 20
  annal read ./events --backward --limit 10
  annal read ./events --json | annal import ./copy-of-events

--from is a stream version with --stream, a global position otherwise
(inclusive; with --backward the reading goes down from it; use --backward to
read from the end: there are no negative positions).

With --json, one object per line: position, stream, version, type, timestamp
(RFC 3339 UTC), id, then schema_version (only when it is not 0), then data and
metadata (metadata only when not empty). data and metadata are written byte for
byte as stored when the bytes are UTF-8 JSON: one JSON value as serde_json
parses it (numbers of any size, repeated keys and key order kept exactly as
written; arrays and objects nested at most 128 deep), with no whitespace
around it and no line break in it; otherwise as data_base64 / metadata_base64
(standard base64 of the exact bytes). So `read --json | import` copies every
payload exactly. An event whose record says its payload is JSON (format
version 5: EventData::json, typed events of the JSON codec) has
\"codec\":\"json\" before its data, and its data is that JSON value; other
payloads (opaque bytes, postcard-encoded typed events) are data when their
bytes happen to be exact JSON, data_base64 otherwise.

Without --json, one line per event; control characters in names, types and
text (newline, NUL, ESC, DEL, C1, bidirectional controls) and the backslash
are escaped (\\n, \\0, \\u{1b}, \\\\); non-UTF-8 payloads print as <N bytes binary>.

In a log of format version 4, events that stream metadata hides (annal
delete, annal metadata) are not shown, nor events of system streams ($...)
unless a read names them; a deleted stream read with --stream fails with
\"stream ... is deleted\" (or hard-deleted) and prints nothing.

Reads without the writer lock, so it works while a writer is running.
Exit codes: 0 success; 1 corrupt data found, or the stream is deleted; 2 could
not run (bad arguments, not a log, unreadable path).";

pub const TAIL_HELP: &str = "Examples:
  annal tail ./events --from 0 --limit 3
  annal tail ./events --stream order-42 --from 0 --limit 2 --json | head -n 1

Starts at the end of the log (only new events) unless --from is given (a
stream version with --stream, a global position otherwise), and follows until
interrupted (Ctrl-C), or until --limit events were printed. A stream that does
not exist yet is waited for. Each event is written and flushed as it arrives.
Output as for `annal read`.

Exit codes: 0 --limit reached or the output was closed; 1 corrupt data found;
2 could not run (bad arguments, not a log, unreadable path).";

pub const STATS_HELP: &str = "Examples:
  annal stats ./events
  annal stats ./events --json

Replays every record (checking each CRC) without the writer lock and prints
the number of segments, the segment bytes (the bytes of the segment files
that hold events; `annal check` counts the bytes of every file it reads),
events, streams, first and last position and timestamp, and the 10 largest
streams (names escaped as in `annal read`). On a terminal, a progress bar
shows the replay.

Exit codes: 0 success; 1 corrupt data found; 2 could not run (not a log,
unreadable path).";

/// A position or stream version for --from.
fn parse_from(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|_| {
        if s.starts_with('-') {
            format!(
                "{s:?}: positions and versions start at 0 and are never negative; to read from the end, use \
                 --backward (without --from), e.g. --backward --limit 10"
            )
        } else {
            format!("{s:?} is not a position or version (a whole number from 0 to 18446744073709551615)")
        }
    })
}

/// A count for --limit.
fn parse_limit(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a count of events (a whole number from 0)"))
}

/// Arguments of `annal read`.
#[derive(Args)]
pub struct ReadArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// The remote log `dir` is a partial copy of (set for a URL argument):
    /// its sealed segments are read from there.
    #[arg(skip)]
    pub remote: Option<String>,
    /// Only this stream.
    #[arg(long, conflicts_with_all = ["category", "event_type"])]
    stream: Option<String>,
    /// Only streams of this category (streams named `<category>-<id>`).
    #[arg(long, conflicts_with = "event_type")]
    category: Option<String>,
    /// Only events of this type.
    #[arg(long)]
    event_type: Option<String>,
    /// Start here: a stream version with --stream, a global position otherwise.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_from)]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Print at most this many events.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_limit)]
    limit: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    master: crate::audit::MasterKeyArg,
}

fn open(dir: &std::path::Path, master: &crate::audit::MasterKeyArg, remote: Option<&str>) -> Result<Reader, Failure> {
    let mut r = Reader::open(dir)?;
    master.apply_to(&mut r)?;
    #[cfg(feature = "remote")]
    if let Some(url) = remote {
        let remote = annal::remote::RemoteLog::open(url)?;
        r = r.with_remote(remote, annal::remote::DEFAULT_CACHE_BYTES)?;
    }
    #[cfg(not(feature = "remote"))]
    let _ = remote;
    Ok(r)
}

/// Say on standard error that the log was not cleanly closed and not yet
/// recovered (spec 7): the view holds back what it cannot vouch for, and
/// says so rather than ending quietly.
pub fn warn_unrecovered(view: &annal::LogView) {
    if let Some(u) = view.unrecovered() {
        eprintln!("annal: warning: {}", escape_controls(&u.to_string()));
    }
}

/// Print `rec`, a record of `view`, unsealed (spec 3.8: decrypted, or
/// erased).
fn write_record(out: &mut impl Write, view: &annal::LogView, rec: &RecordRef<'_>, json: bool) -> Result<(), Failure> {
    let u = view.unseal(*rec)?;
    let rec = &u.record();
    if json {
        writeln!(out, "{}", record_json(rec)).map_err(out_err)
    } else {
        writeln!(out, "{}", record_text(rec)).map_err(out_err)
    }
}

/// Run `annal read`.
pub fn read(a: &ReadArgs) -> CmdResult {
    let reader = open(&a.dir, &a.master, a.remote.as_deref())?;
    let view = reader.view()?;
    warn_unrecovered(&view);
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let iter: Box<dyn Iterator<Item = annal::Result<RecordRef<'_>>>> = match (&a.stream, &a.category, &a.event_type) {
        (Some(s), _, _) => {
            let (from, dir) = if a.backward {
                (a.from.unwrap_or(u64::MAX), Direction::Backward)
            } else {
                (a.from.unwrap_or(0), Direction::Forward)
            };
            Box::new(view.read_stream(s, from, dir, limit))
        }
        (None, c, t) if c.is_some() || t.is_some() => {
            let from = if a.backward { 0 } else { a.from.unwrap_or(0) };
            let named = match (c, t) {
                (Some(c), _) => view.read_category(c, from),
                (_, Some(t)) => view.read_event_type(t, from),
                _ => unreachable!("one of category and event type is set"),
            };
            if a.backward {
                // Named reads go forward: keep the newest `limit` at or below --from.
                let upto = a.from.unwrap_or(u64::MAX);
                let mut keep: VecDeque<RecordRef<'_>> = VecDeque::new();
                for rec in named {
                    let rec = rec?;
                    if rec.position() > upto {
                        break;
                    }
                    if keep.len() as u64 >= limit {
                        keep.pop_front();
                    }
                    if limit > 0 {
                        keep.push_back(rec);
                    }
                }
                Box::new(keep.into_iter().rev().map(Ok))
            } else {
                Box::new(named)
            }
        }
        _ => {
            if a.backward {
                Box::new(view.read_all_backward(a.from.unwrap_or(u64::MAX)))
            } else {
                Box::new(view.read_all(a.from.unwrap_or(0)))
            }
        }
    };
    for rec in iter.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        let rec = rec?;
        write_record(&mut out, &view, &rec, a.json)?;
    }
    out.flush().map_err(out_err)?;
    Ok(())
}

/// Arguments of `annal tail`.
#[derive(Args)]
pub struct TailArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Only this stream (it may not exist yet).
    #[arg(long, conflicts_with = "category")]
    stream: Option<String>,
    /// Only streams of this category.
    #[arg(long)]
    category: Option<String>,
    /// Start here (a stream version with --stream, a global position otherwise)
    /// instead of at the end of the log.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_from)]
    from: Option<u64>,
    /// Exit 0 once this many events were printed.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_limit)]
    limit: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    master: crate::audit::MasterKeyArg,
}

/// Run `annal tail`: poll the reader from the last position seen.
pub fn tail(a: &TailArgs) -> CmdResult {
    let reader = open(&a.dir, &a.master, None)?;
    let (mut next, min_version) = match (&a.stream, a.from) {
        (Some(_), v) => (0, v),
        (None, Some(p)) => (p, None),
        (None, None) => (reader.view()?.next_position(), None),
    };
    // With --stream and no --from, only events appended from now on.
    let mut start_at_end = a.stream.is_some() && a.from.is_none();
    let mut out = std::io::stdout().lock();
    let poll = Duration::from_millis(75);
    let mut left = a.limit.unwrap_or(u64::MAX);
    if left == 0 {
        return Ok(());
    }
    let mut said: Option<annal::Unrecovered> = None;
    loop {
        let view = reader.view()?;
        if view.unrecovered() != said.as_ref() {
            warn_unrecovered(&view);
            said = view.unrecovered().cloned();
        }
        if start_at_end {
            next = view.next_position();
            start_at_end = false;
        }
        for rec in view.read_all(next) {
            let rec = rec?;
            next = rec.position() + 1;
            let wanted = match (&a.stream, &a.category) {
                (Some(s), _) => rec.stream() == s && min_version.is_none_or(|v| rec.stream_version() >= v),
                (_, Some(c)) => annal::category_of(rec.stream()) == Some(c.as_str()),
                _ => true,
            };
            if wanted {
                write_record(&mut out, &view, &rec, a.json)?;
                out.flush().map_err(out_err)?;
                left -= 1;
                if left == 0 {
                    return Ok(());
                }
            }
        }
        drop(view);
        std::thread::sleep(poll);
    }
}

/// Arguments of `annal stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// The remote log `dir` is a partial copy of (set for a URL argument).
    #[arg(skip)]
    pub remote: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    master: crate::audit::MasterKeyArg,
}

/// Run `annal stats`.
pub fn stats(a: &StatsArgs) -> CmdResult {
    let reader = open(&a.dir, &a.master, a.remote.as_deref())?;
    let view = reader.view()?;
    warn_unrecovered(&view);
    let mut streams: HashMap<String, u64> = HashMap::new();
    let mut events = 0u64;
    let mut first: Option<(u64, u64)> = None;
    let mut last: Option<(u64, u64)> = None;
    // A replay of a big log takes a while: show it on a terminal.
    let bar = if !a.json && std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(view.next_position());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        Some(pb)
    } else {
        None
    };
    for rec in view.read_all(0) {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                if let Some(pb) = &bar {
                    pb.finish_and_clear();
                }
                return Err(e.into());
            }
        };
        events += 1;
        if let Some(pb) = &bar
            && events.is_multiple_of(1 << 16)
        {
            pb.set_position(rec.position());
        }
        first.get_or_insert((rec.position(), rec.timestamp()));
        last = Some((rec.position(), rec.timestamp()));
        match streams.get_mut(rec.stream()) {
            Some(n) => *n += 1,
            None => {
                streams.insert(rec.stream().to_owned(), 1);
            }
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let mut top: Vec<(&String, &u64)> = streams.iter().collect();
    top.sort_by(|x, y| y.1.cmp(x.1).then_with(|| x.0.cmp(y.0)));
    top.truncate(10);
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "directory": a.dir.display().to_string(),
            "segments": view.segment_count(),
            "segment_bytes": view.len_bytes(),
            "unrecovered": view.unrecovered().map(|u| serde_json::json!({
                "segment": u.segment.display().to_string(),
                "offset": u.offset,
                "position": u.position,
            })),
            "events": events,
            "streams": streams.len(),
            "first_position": first.map(|f| f.0),
            "last_position": last.map(|l| l.0),
            "first_timestamp": first.map(|f| rfc3339(f.1)),
            "last_timestamp": last.map(|l| rfc3339(l.1)),
            "largest_streams": top.iter().map(|(s, n)| serde_json::json!({"stream": s, "events": n})).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}").map_err(out_err)?;
        return Ok(());
    }
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s, "directory:     {}", escape_controls(&a.dir.display().to_string()));
    let _ = writeln!(s, "segments:      {}", view.segment_count());
    let _ = writeln!(s, "segment bytes: {}", view.len_bytes());
    let _ = writeln!(s, "events:        {events}");
    let _ = writeln!(s, "streams:       {}", streams.len());
    if let (Some(f), Some(l)) = (first, last) {
        let _ = writeln!(s, "positions:     {} .. {}", f.0, l.0);
        let _ = writeln!(s, "timestamps:    {} .. {}", rfc3339(f.1), rfc3339(l.1));
    }
    if !top.is_empty() {
        let _ = writeln!(s, "largest streams:");
        for (name, n) in &top {
            let _ = writeln!(s, "  {n:>10}  {}", escape(name));
        }
    }
    out.write_all(s.as_bytes()).map_err(out_err)?;
    Ok(())
}
