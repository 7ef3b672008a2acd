//! `annal dump`: the structure of one file, as the library's inspection
//! API (`annal::inspect`) decodes it; this module only prints. It knows no
//! offset or layout of the format.

use std::io::Write;
use std::path::{Path, PathBuf};

use annal::inspect::{
    self, FileDump, FooterDump, FrameDump, HeadDump, IndexDump, ReadFailure, SegmentDump, SlotDump, SnapshotDump,
    StreamTableDump,
};
use clap::Args;

use crate::{CmdResult, Failure, out_err};

pub const DUMP_HELP: &str = "Examples:
  annal dump ./events/00000000000000000000.seg
  annal dump ./events/annal.head
  annal append ./rolled --segment-size 256 --stream s --type T --data '{\"n\":1}'
  annal append ./rolled --segment-size 256 --stream s --type T --data '{\"n\":2}'
  annal dump ./rolled/00000000000000000000.idx
  annal dump ./rolled/annal.streams

Segments (.seg): the header fields, then every frame (offset, kind, len,
first_position, count, durable_end, audit chain hash, header CRC), every
record (offset, len, position, stream, version, type, lengths, CRC ok/bad) and
every signed checkpoint (public key, signature, body CRC). Index files (.idx),
the stream table (annal.streams) and snapshots (.snap): the header fields and
checksums. The head file (annal.head): both slots, with their CRCs. The file
type is recognised by its magic bytes. Parsing stops with a message at the
first structure that cannot be parsed. Names are escaped as in `annal read`.

Index files and the stream table exist only once a segment was sealed: a log
smaller than its segment size (256 MiB by default) has none yet. The examples
above make one that rolls at 256 bytes (--segment-size of `annal append`).

Exit codes: 0 the file parsed and every checksum matched; 1 a bad checksum, a
rules record that does not decode or an unparseable structure was found; 2 could not run (unreadable or missing
file, not an annal file).";

/// Arguments of `annal dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// The file: a segment (.seg), an index (.idx) or index checkpoint
    /// (.ckpt), the stream table
    /// (annal.streams), the head file (annal.head) or a snapshot (.snap).
    file: PathBuf,
}

/// Why `path` cannot be dumped when it does not exist: a derived file that
/// is not written yet gets an explanation.
fn missing(path: &Path, e: &std::io::Error) -> Failure {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let why = if file.ends_with(".idx") || file == annal::STREAM_TABLE_FILE {
        " (index files and the stream table are written once a segment is sealed: a log smaller than its \
         segment size, 256 MiB by default, has none yet; `annal append DIR --segment-size 256 ...` makes a log \
         that rolls at 256 bytes)"
    } else {
        ""
    };
    Failure::usage(format!("cannot read {}: {e}{why}", path.display()))
}

/// Read the file, with the command's messages for each failure.
fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    inspect::read_file(path).map_err(|f| match f {
        ReadFailure::Open(e) => missing(path, &e),
        ReadFailure::NotRegular => Failure::usage(format!("{} is not a regular file", path.display())),
        ReadFailure::Read(e) => Failure::usage(format!("cannot read {}: {e}", path.display())),
    })
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "BAD" }
}

/// A rule's value, or `-` when its flag is not set.
fn or_unset(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".to_owned())
}

fn name(b: &[u8]) -> String {
    format!("\"{}\"", crate::jsonfmt::escape(&String::from_utf8_lossy(b)))
}

/// The text of a dump, line by line.
#[derive(Default)]
struct Text(String);

impl Text {
    fn line(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}

/// Run `annal dump`.
pub fn dump(a: &DumpArgs) -> CmdResult {
    let bytes = read_file(&a.file)?;
    let file_name = a.file.file_name().and_then(|n| n.to_str());
    let d = inspect::inspect(&bytes, file_name).map_err(|n| {
        Failure::usage(format!(
            "{} is not an annal segment, index, stream table, head or snapshot file (its first 8 bytes are {})",
            a.file.display(),
            inspect::hex(&n.first_bytes)
        ))
    })?;
    let mut t = Text::default();
    t.line(format!("file: {} ({} bytes)", a.file.display(), bytes.len()));
    match &d {
        FileDump::Segment(s) => print_segment(s, &mut t),
        FileDump::Index(i) => print_index(i, &mut t),
        FileDump::StreamTable(s) => print_stream_table(s, &mut t),
        FileDump::Snapshot(s) => print_snapshot(s, &mut t),
        FileDump::Head(h) => print_head(h, &mut t),
    }
    std::io::stdout().lock().write_all(t.0.as_bytes()).map_err(out_err)?;
    if let Some(stop) = d.stop() {
        return Err(Failure::problem(format!("{}: {stop}", a.file.display())));
    }
    let problems = d.problems();
    if problems > 0 {
        return Err(Failure::problem(format!(
            "{}: {problems} checksum or field problem(s) found (marked BAD above)",
            a.file.display(),
        )));
    }
    Ok(())
}

fn print_segment(d: &SegmentDump, t: &mut Text) {
    let Some(h) = &d.header else { return };
    t.line("segment header:");
    t.line("  magic:          ANNALSEG");
    t.line(format!("  format_version: {}", h.format_version));
    t.line(format!("  log_flags:      {}", h.log_flags));
    let compacted = if h.segment_flags & annal::format::SEGMENT_FLAG_COMPACTED != 0 {
        " (compacted, spec 3.10: positions may have gaps)"
    } else {
        ""
    };
    t.line(format!("  segment_flags:  {}{compacted}", h.segment_flags));
    t.line(format!("  log_id:         {}", inspect::hex(&h.log_id)));
    t.line(format!("  base_position:  {}", h.base_position));
    t.line(format!("  prev_timestamp: {}", h.prev_timestamp));
    t.line(format!("  created_at:     {}", h.created_at));
    t.line(format!("  chain_start:    {}", inspect::hex(&h.chain_start)));
    t.line(format!("  key_id:         {}", inspect::hex(&h.key_id)));
    t.line(format!("  header_crc:     {:#010x} {}", h.header_crc, ok(h.crc_ok)));
    for f in &d.frames {
        print_frame(f, t);
    }
    if d.stop.is_none() {
        t.line(format!("{} frames, {} records", d.frames.len(), d.record_count()));
    }
}

fn print_frame(f: &FrameDump, t: &mut Text) {
    t.line(format!(
        "frame @{} kind={}({}) len={} first_position={} count={} durable_end={} chain={} header_crc={}",
        f.offset,
        f.kind,
        f.kind_name(),
        f.len,
        f.first_position,
        f.count,
        f.durable_end,
        inspect::hex(&f.chain),
        ok(f.header_crc_ok)
    ));
    if let Some((header_len, body_ok)) = f.v3 {
        t.line(format!("  v3 header_len={header_len} body_crc={}", ok(body_ok)));
    }
    for r in &f.records {
        t.line(format!(
            "  record @{} len={} position={} stream={} version={} type={} schema_version={} stream_len={} \
             type_len={} metadata_len={} payload_len={} crc={} event_id={}{}",
            r.offset,
            r.len,
            r.position,
            name(&r.stream),
            r.stream_version,
            name(&r.event_type),
            r.schema_version,
            r.stream_len,
            r.type_len,
            r.metadata_len,
            r.payload_len,
            ok(r.crc_ok),
            uuid::Uuid::from_bytes(r.event_id.0),
            if r.event_id.1 { "" } else { " (generated, not stored)" }
        ));
        if r.json {
            t.line("    payload: JSON (record flag JSON, spec 3.11)");
        }
        if let Some((key, nonce)) = &r.sealed {
            t.line(format!(
                "    sealed for subject key {key} nonce={} (payload: metadata and payload encrypted, with the tag)",
                nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
        }
        match &r.rules {
            None => {}
            Some(Ok(rules)) => t.line(format!(
                "    rules flags={} truncate_before={} max_count={} max_age={}",
                match rules.flag_names().join("|") {
                    f if f.is_empty() => "none".to_owned(),
                    f => f,
                },
                or_unset(rules.truncate_before.map(|v| v.to_string())),
                or_unset(rules.max_count.map(|v| v.to_string())),
                or_unset(
                    rules
                        .max_age
                        .map(|n| format!("{:?}", std::time::Duration::from_nanos(n)))
                ),
            )),
            Some(Err(e)) => t.line(format!(
                "    rules BAD at byte {} (payload byte {}): {}",
                e.offset,
                e.payload_offset,
                crate::jsonfmt::escape_controls(&e.detail)
            )),
        }
        match &r.retention {
            None => {}
            Some(Ok(rec)) => t.line(format!(
                "    retention rule={} removed_before={} previous_start={} newest_removed_timestamp={} max_age={} \
                 max_bytes={} chain_at={}",
                rec.rule(),
                rec.removed_before,
                rec.previous_start,
                rec.newest_removed_timestamp,
                or_unset(rec.max_age.map(|n| format!("{:?}", std::time::Duration::from_nanos(n)))),
                or_unset(rec.max_bytes.map(|v| v.to_string())),
                rec.chain_at.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )),
            Some(Err(e)) => t.line(format!(
                "    retention BAD at byte {} (payload byte {}): {}",
                e.offset,
                e.payload_offset,
                crate::jsonfmt::escape_controls(&e.detail)
            )),
        }
    }
    if let Some(c) = &f.checkpoint {
        t.line(format!(
            "  checkpoint public_key={} signature={} body_crc={}",
            c.public_key.map(|k| inspect::hex(&k)).unwrap_or_default(),
            c.signature.map(|s| inspect::hex(&s)).unwrap_or_default(),
            ok(c.body_crc_ok)
        ));
    }
}

/// The footer of an index or stream table (spec 16).
fn print_footer(f: Option<&FooterDump>, t: &mut Text) {
    let Some(f) = f else { return };
    t.line("footer:");
    t.line(format!("  table_offset: {}", f.table_offset));
    t.line(format!("  block_count:  {}", f.block_count));
    t.line(format!("  magic:        {}", name(&f.magic)));
    t.line(format!("  footer_crc:   {}", ok(f.footer_crc_ok)));
    if let Some(b) = &f.blocks {
        t.line(format!("  table_crc:    {}", ok(b.table_crc_ok)));
        t.line(format!(
            "  blocks:       {} ({} with a BAD CRC)",
            f.block_count, b.bad_blocks
        ));
    }
}

fn print_index(d: &IndexDump, t: &mut Text) {
    let Some(h) = &d.header else { return };
    t.line("index header:");
    t.line("  magic:                ANNALIDX");
    for (label, v) in [
        ("index_version", u64::from(h.index_version)),
        ("flags", u64::from(h.flags)),
        ("segment_base", h.segment_base),
        ("segment_len", h.segment_len),
    ] {
        t.line(format!("  {:<21} {v}", format!("{label}:")));
    }
    t.line(format!("  hash_mask:            {:#018x}", h.hash_mask));
    for (label, v) in [
        ("stream_count", h.stream_count),
        ("stream_entry_count", h.stream_entry_count),
        ("category_count", h.category_count),
        ("category_entry_count", h.category_entry_count),
        ("type_count", h.type_count),
        ("type_entry_count", h.type_entry_count),
        ("frame_count", h.frame_count),
        ("names_len", h.names_len),
    ] {
        t.line(format!("  {:<21} {v}", format!("{label}:")));
    }
    t.line(format!("  seal_crc:             {:#010x}", h.seal_crc));
    if h.flags & 1 == 1 {
        // An index checkpoint of the active segment (spec 17.5).
        t.line(format!("  covered_from:         {}", h.covered_from));
        t.line(format!("  last_frame:           {}", h.last_frame));
    }
    print_index_content(&d.content, h.index_version, t);
    print_footer(d.footer.as_ref(), t);
}

/// The rows and entries of an index (spec 17.2), every field as stored in
/// the file's layout version.
fn print_index_content(c: &inspect::IndexContentDump, version: u16, t: &mut Text) {
    let v1 = version == 1;
    let or_none = |n: &Option<Vec<u8>>| n.as_deref().map_or_else(|| "<outside the name area>".to_owned(), name);
    for (i, r) in c.streams.iter().enumerate() {
        t.line(format!(
            "stream row {i} @{}: hash={:#018x} name_offset={} name_len={} name={} reserved0={} first_version={} {}={} \
             entry_start={} entry_count={} prev_segment={} prev_row={}{}",
            r.offset,
            r.hash,
            r.name_offset,
            r.name_len,
            or_none(&r.name),
            r.reserved0,
            r.first_version,
            if v1 { "last_version" } else { "last_delta" },
            r.last,
            r.entry_start,
            r.entry_count,
            r.prev_segment,
            r.prev_row,
            r.reserved1.map_or_else(String::new, |x| format!(" reserved1={x}")),
        ));
        let entries: Vec<String> = r.entries.iter().map(|(v, o)| format!("({v}, {o})")).collect();
        t.line(format!(
            "  entries ({}, frame_offset): {}",
            if v1 { "first_version" } else { "version_delta" },
            entries.join(" ")
        ));
    }
    for (label, rows, what) in [
        ("category", &c.categories, "frame_offset"),
        (
            "event type",
            &c.types,
            if v1 { "record_offset" } else { "frame_offset" },
        ),
    ] {
        for (i, r) in rows.iter().enumerate() {
            t.line(format!(
                "{label} row {i} @{}: hash={:#018x} name_offset={} name_len={} name={} reserved0={} entry_start={} \
                 entry_count={} reserved1={}",
                r.offset,
                r.hash,
                r.name_offset,
                r.name_len,
                or_none(&r.name),
                r.reserved0,
                r.entry_start,
                r.entry_count,
                r.reserved1
            ));
            let entries: Vec<String> = r.entries.iter().map(u64::to_string).collect();
            t.line(format!("  entries ({what}): {}", entries.join(" ")));
        }
    }
    let frames: Vec<String> = c.frames.iter().map(|(p, o)| format!("({p}, {o})")).collect();
    t.line(format!(
        "frames ({}, frame_offset): {}",
        if v1 { "first_position" } else { "position_delta" },
        frames.join(" ")
    ));
}

fn print_stream_table(d: &StreamTableDump, t: &mut Text) {
    let Some(h) = &d.header else { return };
    t.line("stream table header:");
    t.line("  magic:         ANNALSTB");
    t.line(format!("  table_version: {}", h.table_version));
    t.line(format!("  flags:         {}", h.flags));
    t.line(format!("  next_segment:  {}", h.next_segment));
    t.line(format!("  hash_mask:     {:#018x}", h.hash_mask));
    t.line(format!("  stream_count:  {}", h.stream_count));
    t.line(format!("  names_len:     {}", h.names_len));
    print_footer(d.footer.as_ref(), t);
}

fn print_snapshot(d: &SnapshotDump, t: &mut Text) {
    let Some(h) = &d.header else { return };
    t.line("snapshot header:");
    t.line("  magic:          ANNALSNP");
    t.line(format!("  format_version: {}", h.format_version));
    t.line(format!("  flags:          {}", h.flags));
    t.line(format!("  stream_len:     {}", h.stream_len));
    t.line(format!(
        "  stream:         {}",
        name(h.stream.as_deref().unwrap_or(b"<beyond the end of the file>"))
    ));
    t.line(format!("  stream_version: {}", h.stream_version));
    t.line(format!("  position:       {}", h.position));
    t.line(format!("  schema_version: {}", h.schema_version));
    if h.format_version == 2 {
        t.line(format!("  key_count:      {}", h.key_count));
        let keys: Vec<String> = h.subject_keys.iter().map(u64::to_string).collect();
        t.line(format!("  subject keys:   {}", keys.join(", ")));
    }
    t.line(format!("  payload_len:    {}", h.payload_len));
    t.line(format!("  crc:            {:#010x} {}", h.crc, ok(h.crc_ok)));
}

/// The head file (spec 5.2): both slots.
fn print_head(d: &HeadDump, t: &mut Text) {
    for (i, slot) in d.slots.iter().enumerate() {
        let s = match slot {
            SlotDump::Empty(o) => {
                t.line(format!("slot {i} @{o}: empty (all zero: not written yet)"));
                continue;
            }
            SlotDump::Written(s) => s,
        };
        t.line(format!("slot {i} @{}:", s.offset));
        t.line(format!("  magic:          {}", name(&s.magic)));
        t.line(format!("  crc:            {:#010x} {}", s.crc, ok(s.crc_ok)));
        t.line(format!("  format_version: {}", s.format_version));
        t.line(format!("  flags:          {}", s.flags));
        t.line(format!("  reserved0:      {}", s.reserved0));
        t.line(format!("  sequence:       {}", s.sequence));
        t.line(format!("  segment_base:   {}", s.segment_base));
        t.line(format!("  durable_end:    {}", s.durable_end));
        t.line(format!("  visible_end:    {}", s.visible_end));
        t.line(format!("  next_position:  {}", s.next_position));
        t.line(format!("  reserved1:      {}", s.reserved1));
    }
}
