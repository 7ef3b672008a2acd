//! `annal append` and `annal import`.
//!
//! Every input is read bounded by the limits the writer enforces
//! ([`MAX_EVENT_BYTES`], [`MAX_BATCH_BYTES`]): a payload from a file, a device
//! or stdin, or an import line, is refused as soon as it is longer than any
//! event could be, before it is read whole.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use annal::format::{FRAME_HEADER_LEN, MAX_RECORD_LEN};
use annal::{Durability, EventData, ExpectedVersion, Log, Options, Uuid};
use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonfmt::{base64_decode, check_depth, escape, json_error, json_value};
use crate::{CmdResult, Failure, out_err};

/// Largest metadata + payload of one event that `append` and `import` write
/// (the library's default `Options::max_event_bytes`).
pub const MAX_EVENT_BYTES: u64 = 64 << 20;
/// Largest encoded batch (the library's default `Options::max_batch_bytes`).
pub const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Longest import line: an event of [`MAX_EVENT_BYTES`] in base64, plus 1 MiB
/// for the names (escaped) and the other fields.
pub const MAX_LINE_BYTES: u64 = MAX_EVENT_BYTES.div_ceil(3) * 4 + (1 << 20);

pub const APPEND_HELP: &str = "Examples:
  annal append ./events --stream order-42 --type OrderPlaced --data '{\"total\":42}'
  annal append ./events --stream order-42 --type OrderPaid --expected-version 0 --sync --data '{}'
  echo '{\"sku\":\"A-7\"}' | annal append ./events --stream order-42 --type ItemAdded --json
  annal append ./events --stream order-42 --type OrderPaid --expected-version 0 --data '{}'   # exit 1
  annal append ./small --segment-size 256 --stream s --type T --data '{\"n\":1}'

Prints the event's position and the stream's new version. With --sync, exits 0
only once the event is durable (fsynced).

The payload is stored byte for byte. --data must be one JSON value (as
serde_json parses it: numbers of any size and repeated keys are kept exactly
as written; nesting at most 128 deep); --metadata likewise. --data-file takes
any bytes. Without either, the payload is read from stdin, and one trailing
newline is removed (so `echo '{}' |` stores `{}`). A payload plus metadata of
more than 64 MiB is refused before it is read whole. A stream name must be 1
to 65535 bytes without a NUL character (no command could name it again).

--segment-size is the size at which this command rolls to a new segment
(default 256 MiB). It is not stored in the log: each command that writes uses
the size it is given. Small values make sealed segments, index files and a
stream table appear on small logs (to try `annal dump`).

Exit codes: 0 appended; 1 refused (wrong expected version, idempotency
conflict, log locked by another writer); 2 could not run (bad arguments, data
that is not JSON or too large, the directory is not a log, unreadable path or
data file).";

pub const IMPORT_HELP: &str = "Examples:
  annal read ./events --json | annal import ./copy
  annal read ./events --json > events.jsonl
  annal import ./copy2 events.jsonl --batch 1 --sync --segment-size 256

Input: one JSON object per line:
  {\"stream\": \"order-1\", \"type\": \"Placed\", \"data\": {...}, \"metadata\": {...}, \"id\": \"<uuid>\"}
\"metadata\" and \"id\" are optional; \"data_base64\" / \"metadata_base64\" carry
non-JSON bytes; \"schema_version\" is optional; \"codec\": \"json\" (as `read --json`
writes it) marks the data as JSON (it must be one JSON value; a log of format
version 5); other fields (position, version,
timestamp) are ignored; events keep their ids. JSON data and metadata are
stored byte for byte as they are written in the line (never re-serialised:
big integers, 1E5, repeated keys and key order stay as they are), so
`read --json | import` copies payloads exactly; they must be valid JSON nested
at most 128 deep. Consecutive lines of one stream are appended as one batch (at
most --batch events), with expected version `any`. The log is created only
once a first valid line has been read; reading a terminal prints a hint.

Each line is checked in full as it is read (JSON, names of 1 to 65535 bytes
without NUL, sizes: metadata + payload at most 64 MiB, a line at most
about 86 MiB). A bad line stops the import with its line number and the count
of events imported; every line before it stays committed. Exit codes: 0
imported; 1 stopped at a bad line or a refused or failed append (log locked,
idempotency conflict, disk full); 2 could not run (bad arguments, not a log,
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
    /// Metadata, as JSON (stored byte for byte).
    #[arg(long)]
    metadata: Option<String>,
    /// The subject (a person) whose personal data the event holds: payload
    /// and metadata are stored encrypted with the subject's key, and erased
    /// with it (`annal erase`).
    #[arg(long)]
    subject: Option<String>,
    /// The payload, as JSON (stored byte for byte).
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the payload (any bytes) from this file. Without --data or
    /// --data-file, stdin is read (one trailing newline removed).
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Exit only once the event is durable (fsynced).
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

/// `--segment-size` of the commands that write.
#[derive(Args, Debug, Default)]
pub struct SegmentSizeArg {
    /// Roll to a new segment once a segment reaches this size: bytes, or with
    /// a suffix K, M or G (powers of 1024). Default 256M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    segment_size: Option<u64>,
}

/// A size in bytes: digits with an optional suffix K, M, G (KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 0),
        Some((i, _)) => match t[i..].to_ascii_uppercase().as_str() {
            "K" | "KB" | "KIB" => (&t[..i], 10),
            "M" | "MB" | "MIB" => (&t[..i], 20),
            "G" | "GB" | "GIB" => (&t[..i], 30),
            _ => return Err(format!("{s:?} is not a size (bytes, or a number with K, M or G)")),
        },
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or a number with K, M or G)"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("a segment size must be at least 1 byte".into());
    }
    Ok(bytes)
}

/// The options every writing command opens a log with.
pub fn write_options(
    size: &SegmentSizeArg,
    chain: &crate::audit::WriteChainArgs,
    d: Durability,
) -> Result<Options, Failure> {
    let mut opts = Options::default()
        .durability(d)
        .max_event_bytes(MAX_EVENT_BYTES)
        .max_batch_bytes(MAX_BATCH_BYTES);
    if let Some(n) = size.segment_size {
        opts = opts.segment_size(n);
    }
    chain.apply(opts)
}

pub fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
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

/// Refuse a stream name the log cannot take or no command could name again.
pub fn check_stream_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > u16::MAX as usize {
        return Err(format!(
            "a stream name must be 1 to 65535 bytes, found {} bytes",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err(format!(
            "the stream name {:?} contains a NUL character: refused, since no command could name the stream \
             again (a command-line argument cannot hold NUL)",
            escape(s)
        ));
    }
    Ok(())
}

/// Refuse an event type the log cannot take.
fn check_type_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > u16::MAX as usize {
        return Err(format!(
            "an event type must be 1 to 65535 bytes, found {} bytes",
            s.len()
        ));
    }
    Ok(())
}

/// Check one event against every limit the writer checks at append (so that
/// a bad event is found before anything of its batch is written).
fn check_event(stream: &str, event_type: &str, metadata: usize, payload: usize) -> Result<u64, String> {
    check_stream_name(stream)?;
    check_type_name(event_type)?;
    let body = metadata as u64 + payload as u64;
    if body > MAX_EVENT_BYTES {
        return Err(format!(
            "metadata + payload is {body} bytes, more than the {MAX_EVENT_BYTES} bytes an event may have"
        ));
    }
    let len = annal::inspect::record_len(stream.len(), event_type.len(), metadata, payload);
    if len > MAX_RECORD_LEN || len + FRAME_HEADER_LEN as u64 > MAX_BATCH_BYTES {
        return Err(format!("the event encodes to {len} bytes, more than a batch may hold"));
    }
    Ok(len)
}

/// Validate JSON given for `what` (one value, nested at most 128 deep); the
/// text is stored as given, never re-serialised.
fn check_json(what: &str, s: &str) -> Result<(), Failure> {
    json_value(s)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("{what} is not valid JSON: {e}")))
}

/// Read at most `limit` bytes from `r`; more is an error naming `what`.
/// Reads at most `limit + extra + 1` bytes, so an endless input (a device, a
/// pipe) costs no more memory than the largest event.
fn read_bounded(r: impl Read, limit: u64, extra: u64, what: &str) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    r.take(limit + extra + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure::usage(format!("cannot read {what}: {e}")))?;
    if buf.len() as u64 > limit + extra {
        return Err(Failure::usage(format!(
            "{what} is longer than {limit} bytes, the most an event's payload may have here (64 MiB for metadata \
             and payload together); nothing was appended"
        )));
    }
    Ok(buf)
}

/// Run `annal append`.
pub fn append(a: &AppendArgs) -> CmdResult {
    check_stream_name(&a.stream).map_err(Failure::usage)?;
    check_type_name(&a.event_type).map_err(Failure::usage)?;
    if let Some(m) = &a.metadata {
        check_json("--metadata", m)?;
    }
    let meta_len = a.metadata.as_ref().map_or(0, |m| m.len() as u64);
    let room = MAX_EVENT_BYTES.saturating_sub(meta_len);
    let payload: Vec<u8> = match (&a.data, &a.data_file) {
        (Some(d), _) => {
            check_json("--data", d)?;
            d.as_bytes().to_vec()
        }
        (None, Some(f)) => {
            let file =
                File::open(f).map_err(|e| Failure::usage(format!("cannot open --data-file {}: {e}", f.display())))?;
            read_bounded(file, room, 0, &format!("--data-file {}", f.display()))?
        }
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!("annal: reading the payload from stdin (end with Ctrl-D; or use --data / --data-file)");
            }
            // One more byte for the trailing newline that is removed.
            let mut buf = read_bounded(std::io::stdin().lock(), room, 1, "the payload from stdin")?;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.len() as u64 > room {
                return Err(Failure::usage(format!(
                    "the payload from stdin is longer than {room} bytes, the most an event's payload may have here; \
                     nothing was appended"
                )));
            }
            buf
        }
    };
    check_event(&a.stream, &a.event_type, meta_len as usize, payload.len()).map_err(Failure::usage)?;
    let durability = if a.sync {
        Durability::Fsync
    } else {
        Durability::Buffered
    };
    let log =
        Log::open_with(&a.dir, write_options(&a.size, &a.chain, durability)?).map_err(crate::audit::open_failure)?;
    let mut ev = EventData::new(a.event_type.as_str(), payload);
    if let Some(m) = &a.metadata {
        ev = ev.with_metadata(m.as_bytes());
    }
    if let Some(id) = a.id {
        ev = ev.with_id(id);
    }
    if let Some(s) = &a.subject {
        ev = ev.with_subject(s.as_str());
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
            r.last_position,
            escape(&a.stream),
            r.stream_version
        )
        .map_err(out_err)?;
    }
    Ok(())
}

/// Arguments of `annal import`.
#[derive(Args)]
pub struct ImportArgs {
    /// The log directory (created, once a first valid line is read, if it
    /// does not exist or is empty).
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
    size: SegmentSizeArg,
    #[command(flatten)]
    chain: crate::audit::WriteChainArgs,
}

/// One input line as it is written (JSON data kept as its text).
#[derive(Deserialize)]
struct LineIn<'a> {
    stream: Option<serde_json::Value>,
    #[serde(rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(default, borrow, deserialize_with = "raw_some")]
    data: Option<&'a RawValue>,
    data_base64: Option<String>,
    #[serde(default, borrow, deserialize_with = "raw_some")]
    metadata: Option<&'a RawValue>,
    metadata_base64: Option<String>,
    id: Option<String>,
    schema_version: Option<serde_json::Value>,
    codec: Option<serde_json::Value>,
}

/// A present field as its raw text (`null` included: it is JSON data too).
fn raw_some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One checked input line.
struct Line {
    stream: String,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    id: Option<Uuid>,
    schema_version: u32,
    /// `"codec": "json"`: the data is marked as JSON (spec 3.11).
    json: bool,
    /// Its encoded size (record_len).
    len: u64,
}

fn bytes_field(key: &str, raw: Option<&RawValue>, b64: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    match (raw, b64) {
        (Some(_), Some(_)) => Err(format!("both \"{key}\" and \"{key}_base64\" are given; use one")),
        (Some(v), None) => {
            check_depth(v.get()).map_err(|e| format!("\"{key}\": {e}"))?;
            Ok(Some(v.get().as_bytes().to_vec()))
        }
        (None, Some(s)) => base64_decode(s).map(Some).map_err(|e| format!("\"{key}_base64\": {e}")),
        (None, None) => Ok(None),
    }
}

/// Parse and check one line against every limit of an append.
fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let l: LineIn<'_> = serde_json::from_str(text).map_err(|e| format!("not a valid line: {}", json_error(&e)))?;
    let string = |key: &str, v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{key}\" must be a string")),
        None => Err(format!("missing \"{key}\"")),
    };
    let stream = string("stream", l.stream)?;
    let event_type = string("type", l.event_type)?;
    let data = bytes_field("data", l.data, l.data_base64.as_deref())?.ok_or("missing \"data\" (or \"data_base64\")")?;
    let metadata = bytes_field("metadata", l.metadata, l.metadata_base64.as_deref())?.unwrap_or_default();
    let id = match l.id {
        None => None,
        Some(s) => Some(Uuid::parse_str(&s).map_err(|e| format!("\"id\" is not a UUID: {e}"))?),
    };
    let schema_version = match l.schema_version {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("\"schema_version\" must be an integer from 0 to 4294967295")?,
    };
    let json = match l.codec {
        None => false,
        Some(serde_json::Value::String(c)) if c == "json" => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_err() {
                return Err("\"codec\" is \"json\" but the data is not one JSON value".into());
            }
            true
        }
        Some(_) => return Err("\"codec\" must be \"json\" (or absent: bytes as they are)".into()),
    };
    let len = check_event(&stream, &event_type, metadata.len(), data.len())?;
    Ok(Line {
        stream,
        event_type,
        data,
        metadata,
        id,
        schema_version,
        json,
        len,
    })
}

struct Batch {
    first_line: u64,
    lines: Vec<Line>,
    /// Encoded size: frame header and records.
    bytes: u64,
}

/// What an import did so far.
#[derive(Default)]
struct Progress {
    imported: u64,
    batches: u64,
}

fn flush(log: Option<&Log>, batch: &mut Batch, done: &mut Progress) -> Result<(), Failure> {
    let (Some(log), false) = (log, batch.lines.is_empty()) else {
        return Ok(());
    };
    let events: Vec<EventData<'_>> = batch
        .lines
        .iter()
        .map(|l| {
            let e = if l.json {
                // Checked by `parse_line` to be one JSON value; kept byte for byte.
                EventData::json_text(l.event_type.as_str(), l.data.as_slice()).map_err(Failure::from)?
            } else {
                EventData::new(l.event_type.as_str(), l.data.as_slice())
            };
            let mut e = e
                .with_metadata(l.metadata.as_slice())
                .with_schema_version(l.schema_version);
            if let Some(id) = l.id {
                e = e.with_id(id);
            }
            Ok(e)
        })
        .collect::<Result<_, Failure>>()?;
    let last = batch.first_line + batch.lines.len() as u64 - 1;
    log.append(&batch.lines[0].stream, ExpectedVersion::Any, &events)
        .map_err(|e| {
            let f = Failure::from(e);
            let lines = if last == batch.first_line {
                format!("line {last}")
            } else {
                format!("lines {}-{last}", batch.first_line)
            };
            // Exit 1 whatever failed: the import ran, and stopped part way.
            Failure {
                code: 1,
                message: format!(
                    "{lines}: {}; the {} events before line {} were imported, nothing from it on",
                    f.message, done.imported, batch.first_line
                ),
            }
        })?;
    done.imported += batch.lines.len() as u64;
    done.batches += 1;
    batch.lines.clear();
    batch.bytes = FRAME_HEADER_LEN as u64;
    Ok(())
}

/// Reads lines of at most `limit` bytes (without the newline), never more
/// than `limit + 1` bytes of one line into memory.
struct LineReader<R> {
    inner: R,
    limit: u64,
}

enum LineError {
    Io(std::io::Error),
    TooLong,
}

impl<R: BufRead> LineReader<R> {
    /// The next line into `buf` (without its newline); `Ok(None)` at the end.
    /// Returns the bytes consumed, newline included.
    fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, LineError> {
        buf.clear();
        let mut consumed = 0u64;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Io(e)),
            };
            if avail.is_empty() {
                return Ok((consumed > 0).then_some(consumed));
            }
            let (content, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            if buf.len() as u64 + content as u64 > self.limit {
                return Err(LineError::TooLong);
            }
            buf.extend_from_slice(&avail[..content]);
            self.inner.consume(used);
            consumed += used as u64;
            if done {
                return Ok(Some(consumed));
            }
        }
    }
}

/// Run `annal import`.
pub fn import(a: &ImportArgs) -> CmdResult {
    let opts = write_options(&a.size, &a.chain, Durability::Buffered)?;
    let stdin = |p: Option<&PathBuf>| p.is_none_or(|p| p.as_os_str() == "-");
    let (input, size): (Box<dyn BufRead>, Option<u64>) = if stdin(a.file.as_ref()) {
        if std::io::stdin().is_terminal() {
            eprintln!(
                "annal: reading JSON lines from the terminal (end with Ctrl-D); to import a file: annal import DIR FILE"
            );
        }
        (Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())), None)
    } else {
        let p = a.file.as_deref().unwrap_or(Path::new("-"));
        let f = File::open(p).map_err(|e| Failure::usage(format!("cannot open {}: {e}", p.display())))?;
        let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 20, f)), size)
    };
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
    let mut log: Option<Log> = None;
    let mut done = Progress::default();
    let result = import_lines(&a.dir, opts, &mut log, &mut done, input, a.batch, bar.as_ref());
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // Whatever happened, what was appended stays committed: sync if asked, close.
    let mut after = Ok(());
    if let Some(log) = log {
        if a.sync {
            after = log.sync().map_err(Failure::from);
        }
        let close = log.close().map_err(Failure::from);
        after = after.and(close);
    }
    result?;
    after.map_err(|f| Failure {
        code: f.code,
        message: format!(
            "{}; {} events had been appended, their durability is not confirmed",
            f.message, done.imported
        ),
    })?;
    writeln!(
        std::io::stdout(),
        "imported {} events in {} batches",
        done.imported,
        done.batches
    )
    .map_err(out_err)?;
    Ok(())
}

fn import_lines(
    dir: &Path,
    opts: Options,
    log: &mut Option<Log>,
    done: &mut Progress,
    input: Box<dyn BufRead>,
    max_batch: u64,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(), Failure> {
    let mut batch = Batch {
        first_line: 1,
        lines: Vec::new(),
        bytes: FRAME_HEADER_LEN as u64,
    };
    let mut reader = LineReader {
        inner: input,
        limit: MAX_LINE_BYTES,
    };
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut opts = Some(opts);
    loop {
        let next = reader.next(&mut buf);
        let stop = |done: &Progress, what: String| {
            Failure::problem(format!(
                "line {}: {what}; the {} events before it were imported, nothing from it on",
                line_no + 1,
                done.imported
            ))
        };
        let n = match next {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                flush(log.as_ref(), &mut batch, done)?;
                return Err(stop(
                    done,
                    match e {
                        LineError::Io(e) => format!("cannot read: {e}"),
                        LineError::TooLong => {
                            format!("longer than {MAX_LINE_BYTES} bytes, more than a line of the largest event needs")
                        }
                    },
                ));
            }
        };
        if let Some(b) = bar {
            b.inc(n);
            if line_no.is_multiple_of(1024) {
                b.set_message(format!("{line_no} lines"));
            }
        }
        if buf.trim_ascii().is_empty() {
            line_no += 1;
            continue;
        }
        let line = match parse_line(buf.trim_ascii()) {
            Ok(l) => l,
            Err(e) => {
                flush(log.as_ref(), &mut batch, done)?;
                return Err(stop(done, e));
            }
        };
        line_no += 1;
        if log.is_none()
            && let Some(o) = opts.take()
        {
            *log = Some(Log::open_with(dir, o).map_err(crate::audit::open_failure)?);
        }
        if batch.lines.len() as u64 >= max_batch
            || batch.lines.first().is_some_and(|f| f.stream != line.stream)
            || batch.bytes + line.len > MAX_BATCH_BYTES
        {
            flush(log.as_ref(), &mut batch, done)?;
        }
        if batch.lines.is_empty() {
            batch.first_line = line_no;
        }
        batch.bytes += line.len;
        batch.lines.push(line);
    }
    flush(log.as_ref(), &mut batch, done)
}
