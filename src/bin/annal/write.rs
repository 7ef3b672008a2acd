//! `annal append` and `annal import`.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;

use annal::{Durability, EventData, ExpectedVersion, Log, Options, Uuid};
use clap::Args;
use serde_json::Value;

use crate::jsonfmt::base64_decode;
use crate::{CmdResult, Failure, out_err};

pub const APPEND_HELP: &str = "Examples:
  annal append ./events --stream order-42 --type OrderPlaced --data '{\"total\":42}'
  annal append ./events --stream order-42 --type OrderPaid --expected-version 0 --sync --data '{}'
  echo '{\"sku\":\"A-7\"}' | annal append ./events --stream order-42 --type ItemAdded --json

Prints the event's position and the stream's new version. With --sync, exits 0
only once the event is durable (fsynced).

Exit codes: 0 appended; 1 refused (wrong expected version, idempotency
conflict, log locked by another writer); 2 could not run (bad arguments, the
directory is not a log, unreadable path or data file).";

pub const IMPORT_HELP: &str = "Example:
  annal read ./old --json | annal import ./new
  annal import ./events events.jsonl --batch 500 --sync

Input: one JSON object per line:
  {\"stream\": \"order-1\", \"type\": \"Placed\", \"data\": {...}, \"metadata\": {...}, \"id\": \"<uuid>\"}
\"metadata\" and \"id\" are optional; \"data_base64\" / \"metadata_base64\" carry
non-JSON bytes; \"schema_version\" is optional; other fields (position, version,
timestamp) are ignored; events keep their ids. JSON data is stored as compact
JSON. Consecutive lines of one stream are appended as one batch (at most
--batch events), with expected version `any`.

A bad line stops the import with its line number; every line before it stays
committed. Exit codes: 0 imported; 1 stopped at a bad line or a refused append
(log locked, idempotency conflict); 2 could not run (bad arguments, not a log,
unreadable input).";

/// Arguments of `annal append`.
#[derive(Args)]
pub struct AppendArgs {
    /// The log directory (created if it does not exist or is empty).
    dir: PathBuf,
    /// The stream to append to.
    #[arg(long)]
    stream: String,
    /// The event type.
    #[arg(long = "type")]
    event_type: String,
    /// Condition on the stream: any, no-stream, exists, or the version N of its last event.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected_version: ExpectedVersion,
    /// The event id (a UUID); generated if absent. Appending the same id again is a no-op.
    #[arg(long)]
    id: Option<Uuid>,
    /// Metadata, as JSON.
    #[arg(long)]
    metadata: Option<String>,
    /// The payload, as JSON.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the payload (any bytes) from this file. Without --data or --data-file, stdin is read.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Exit only once the event is durable (fsynced).
    #[arg(long)]
    sync: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse::<u64>()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("{n:?} is not any, no-stream, exists or a version number")),
    }
}

fn check_json(what: &str, s: &str) -> Result<(), Failure> {
    serde_json::from_str::<Value>(s)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("{what} is not valid JSON ({e}); quote it for the shell")))
}

/// Run `annal append`.
pub fn append(a: &AppendArgs) -> CmdResult {
    let payload: Vec<u8> = match (&a.data, &a.data_file) {
        (Some(d), _) => {
            check_json("--data", d)?;
            d.as_bytes().to_vec()
        }
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| Failure::usage(format!("cannot read --data-file {}: {e}", f.display())))?
        }
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!("annal: reading the payload from stdin (end with Ctrl-D; or use --data / --data-file)");
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("cannot read the payload from stdin: {e}")))?;
            buf
        }
    };
    if let Some(m) = &a.metadata {
        check_json("--metadata", m)?;
    }
    let durability = if a.sync {
        Durability::Fsync
    } else {
        Durability::Buffered
    };
    let log = Log::open(&a.dir, a.chain.apply(Options::default().durability(durability))?)
        .map_err(crate::audit::open_failure)?;
    let mut ev = EventData::new(a.event_type.as_str(), payload);
    if let Some(m) = &a.metadata {
        ev = ev.with_metadata(m.as_bytes());
    }
    if let Some(id) = a.id {
        ev = ev.with_id(id);
    }
    let result = log.append(&a.stream, a.expected_version, &[ev]);
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = log.close();
            return Err(e.into());
        }
    };
    if a.sync {
        log.sync()?;
    }
    log.close()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "position": r.last_position,
            "stream": a.stream,
            "stream_version": r.stream_version,
        });
        writeln!(out, "{v}").map_err(out_err)?;
    } else {
        writeln!(
            out,
            "appended at position {} ({} version {})",
            r.last_position, a.stream, r.stream_version
        )
        .map_err(out_err)?;
    }
    Ok(())
}

/// Arguments of `annal import`.
#[derive(Args)]
pub struct ImportArgs {
    /// The log directory (created if it does not exist or is empty).
    dir: PathBuf,
    /// JSON-lines file to import; `-` or absent reads stdin.
    file: Option<PathBuf>,
    /// Most events per batch (consecutive lines of one stream share a batch).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Exit only once every imported event is durable (fsynced).
    #[arg(long)]
    sync: bool,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// One parsed input line.
struct Line {
    stream: String,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    id: Option<Uuid>,
    schema_version: u32,
}

fn bytes_field(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<Vec<u8>>, String> {
    let b64 = format!("{key}_base64");
    match (o.get(key), o.get(&b64)) {
        (Some(_), Some(_)) => Err(format!("both {key:?} and {b64:?} are given; use one")),
        (Some(v), None) => Ok(Some(serde_json::to_vec(v).map_err(|e| e.to_string())?)),
        (None, Some(Value::String(s))) => base64_decode(s).map(Some).map_err(|e| format!("{b64:?}: {e}")),
        (None, Some(_)) => Err(format!("{b64:?} must be a string")),
        (None, None) => Ok(None),
    }
}

fn parse_line(text: &str) -> Result<Line, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("expected a JSON object".into());
    };
    let string = |key: &str| match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{key:?} must be a non-empty string")),
        None => Err(format!("missing {key:?}")),
    };
    let stream = string("stream")?;
    let event_type = string("type")?;
    let data = bytes_field(&o, "data")?.ok_or("missing \"data\" (or \"data_base64\")")?;
    let metadata = bytes_field(&o, "metadata")?.unwrap_or_default();
    let id = match o.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Uuid::parse_str(s).map_err(|e| format!("\"id\" is not a UUID: {e}"))?),
        Some(_) => return Err("\"id\" must be a UUID string".into()),
    };
    let schema_version = match o.get("schema_version") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("\"schema_version\" must be an integer from 0 to 4294967295")?,
    };
    Ok(Line {
        stream,
        event_type,
        data,
        metadata,
        id,
        schema_version,
    })
}

struct Batch {
    first_line: u64,
    lines: Vec<Line>,
}

fn flush(log: &Log, batch: &mut Batch, imported: &mut u64, batches: &mut u64) -> Result<(), Failure> {
    if batch.lines.is_empty() {
        return Ok(());
    }
    let events: Vec<EventData<'_>> = batch
        .lines
        .iter()
        .map(|l| {
            let mut e = EventData::new(l.event_type.as_str(), l.data.as_slice())
                .with_metadata(l.metadata.as_slice())
                .with_schema_version(l.schema_version);
            if let Some(id) = l.id {
                e = e.with_id(id);
            }
            e
        })
        .collect();
    let last = batch.first_line + batch.lines.len() as u64 - 1;
    log.append(&batch.lines[0].stream, ExpectedVersion::Any, &events)
        .map_err(|e| {
            let f = Failure::from(e);
            Failure {
                code: f.code,
                message: format!("lines {}-{last}: {}", batch.first_line, f.message),
            }
        })?;
    *imported += batch.lines.len() as u64;
    *batches += 1;
    batch.lines.clear();
    Ok(())
}

/// Run `annal import`.
pub fn import(a: &ImportArgs) -> CmdResult {
    let (input, size): (Box<dyn BufRead>, Option<u64>) = match &a.file {
        None => (Box::new(BufReader::new(std::io::stdin())), None),
        Some(p) if p.as_os_str() == "-" => (Box::new(BufReader::new(std::io::stdin())), None),
        Some(p) => {
            let f = File::open(p).map_err(|e| Failure::usage(format!("cannot open {}: {e}", p.display())))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1 << 20, f)), size)
        }
    };
    let log = Log::open(&a.dir, a.chain.apply(Options::default())?).map_err(crate::audit::open_failure)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = match size {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        };
        Some(bar)
    } else {
        None
    };
    let result = import_lines(&log, input, a.batch, bar.as_ref());
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // Whatever happened, what was appended stays committed: sync if asked, close.
    let sync = if a.sync {
        log.sync().map_err(Failure::from)
    } else {
        Ok(())
    };
    let close = log.close().map_err(Failure::from);
    let (imported, batches) = result?;
    sync?;
    close?;
    writeln!(std::io::stdout(), "imported {imported} events in {batches} batches").map_err(out_err)?;
    Ok(())
}

fn import_lines(
    log: &Log,
    mut input: Box<dyn BufRead>,
    max_batch: u64,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(u64, u64), Failure> {
    let (mut imported, mut batches) = (0u64, 0u64);
    let mut batch = Batch {
        first_line: 1,
        lines: Vec::new(),
    };
    let mut buf = String::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = match input.read_line(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                flush(log, &mut batch, &mut imported, &mut batches)?;
                return Err(Failure::problem(format!(
                    "line {}: cannot read: {e}; {imported} events before it were imported",
                    line_no + 1
                )));
            }
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some(b) = bar {
            b.inc(n as u64);
            if line_no.is_multiple_of(1024) {
                b.set_message(format!("{line_no} lines"));
            }
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let line = match parse_line(text) {
            Ok(l) => l,
            Err(e) => {
                flush(log, &mut batch, &mut imported, &mut batches)?;
                return Err(Failure::problem(format!(
                    "line {line_no}: {e}; the {imported} events before it were imported, nothing after it"
                )));
            }
        };
        if batch.lines.len() as u64 >= max_batch || batch.lines.first().is_some_and(|f| f.stream != line.stream) {
            flush(log, &mut batch, &mut imported, &mut batches)?;
        }
        if batch.lines.is_empty() {
            batch.first_line = line_no;
        }
        batch.lines.push(line);
    }
    flush(log, &mut batch, &mut imported, &mut batches)?;
    Ok((imported, batches))
}
