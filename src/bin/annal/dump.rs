//! `annal dump`: the structure of one file, parsed from the bytes with
//! bounds-checked code of its own (spec/format.md), never trusting a length.

use std::io::Write;
use std::path::{Path, PathBuf};

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

Exit codes: 0 the file parsed and every checksum matched; 1 a bad checksum or
an unparseable structure was found; 2 could not run (unreadable or missing
file, not an annal file).";

/// Arguments of `annal dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// The file: a segment (.seg), an index (.idx), the stream table
    /// (annal.streams), the head file (annal.head) or a snapshot (.snap).
    file: PathBuf,
}

/// Little-endian field access that never panics.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.0.get(off..off.checked_add(len)?)
    }
    fn u8(&self, off: usize) -> u8 {
        self.0.get(off).copied().unwrap_or(0)
    }
    fn u16(&self, off: usize) -> u16 {
        self.get(off, 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, off: usize) -> u32 {
        self.get(off, 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, off: usize) -> u64 {
        self.get(off, 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    }
    fn crc(&self, off: usize, end: usize) -> u32 {
        self.0.get(off..end).map_or(0, crc32fast::hash)
    }
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "BAD" }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn name(b: &[u8]) -> String {
    format!("\"{}\"", crate::jsonfmt::escape(&String::from_utf8_lossy(b)))
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

/// Read the whole of a regular file (never a FIFO or device, which could
/// block or never end), at most its size when opened.
fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let f = o.open(path).map_err(|e| missing(path, &e))?;
    let meta = f
        .metadata()
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Failure::usage(format!("{} is not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    f.take(meta.len())
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

/// The outcome of a dump: the text so far and, if any, the problem found.
struct Dump {
    text: String,
    problems: u64,
    stop: Option<String>,
}

impl Dump {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }
}

/// Run `annal dump`.
pub fn dump(a: &DumpArgs) -> CmdResult {
    let bytes = read_file(&a.file)?;
    let mut d = Dump {
        text: String::new(),
        problems: 0,
        stop: None,
    };
    d.line(format!("file: {} ({} bytes)", a.file.display(), bytes.len()));
    let b = Bytes(&bytes);
    match b.get(0, 8) {
        Some(b"ANNALSEG") => dump_segment(&b, &mut d),
        Some(b"ANNALIDX") => dump_index(&b, &mut d),
        Some(b"ANNALSTB") => dump_stream_table(&b, &mut d),
        Some(b"ANNALSNP") => dump_snapshot(&b, &mut d),
        _ if b.get(0, 4) == Some(b"HEAD")
            || a.file.file_name().is_some_and(|n| n == annal::HEAD_FILE) && b.get(0, 4) == Some(&[0; 4]) =>
        {
            dump_head(&b, &mut d)
        }
        _ => {
            return Err(Failure::usage(format!(
                "{} is not an annal segment, index, stream table, head or snapshot file (its first 8 bytes are {})",
                a.file.display(),
                hex(b.get(0, 8).unwrap_or(&bytes))
            )));
        }
    }
    std::io::stdout().lock().write_all(d.text.as_bytes()).map_err(out_err)?;
    if let Some(stop) = d.stop {
        return Err(Failure::problem(format!("{}: {stop}", a.file.display())));
    }
    if d.problems > 0 {
        return Err(Failure::problem(format!(
            "{}: {} checksum or field problem(s) found (marked BAD above)",
            a.file.display(),
            d.problems
        )));
    }
    Ok(())
}

fn dump_segment(b: &Bytes<'_>, d: &mut Dump) {
    let len = b.0.len();
    if len < 128 {
        d.stop = Some(format!("the segment header needs 128 bytes, the file has {len}"));
        return;
    }
    let crc_ok = b.crc(0, 124) == b.u32(124);
    d.problems += u64::from(!crc_ok);
    d.line("segment header:");
    d.line("  magic:          ANNALSEG");
    d.line(format!("  format_version: {}", b.u16(8)));
    d.line(format!("  log_flags:      {}", b.u16(10)));
    d.line(format!("  log_id:         {}", hex(b.get(16, 16).unwrap_or_default())));
    d.line(format!("  base_position:  {}", b.u64(32)));
    d.line(format!("  prev_timestamp: {}", b.u64(40)));
    d.line(format!("  created_at:     {}", b.u64(48)));
    d.line(format!("  chain_start:    {}", hex(b.get(56, 32).unwrap_or_default())));
    d.line(format!("  key_id:         {}", hex(b.get(88, 16).unwrap_or_default())));
    d.line(format!("  header_crc:     {:#010x} {}", b.u32(124), ok(crc_ok)));
    let mut off = 128usize;
    let (mut frames, mut records) = (0u64, 0u64);
    while off < len {
        if len - off < 72 {
            d.stop = Some(format!(
                "at offset {off}: {} trailing bytes, too few for a 72-byte frame header (a torn tail?)",
                len - off
            ));
            return;
        }
        if b.get(off, 4) != Some(b"BTCH") {
            d.stop = Some(format!(
                "at offset {off}: no frame magic \"BTCH\" (found {})",
                hex(b.get(off, 4).unwrap_or_default())
            ));
            return;
        }
        let hcrc_ok = b.crc(off + 8, off + 72) == b.u32(off + 4);
        let frame_len = b.u64(off + 8);
        let first = b.u64(off + 16);
        let count = b.u32(off + 24);
        let kind = b.u8(off + 28);
        let durable_end = b.u64(off + 32);
        let kind_name = match kind {
            1 => "batch",
            2 => "seal",
            3 => "checkpoint",
            _ => "invalid",
        };
        d.problems += u64::from(!hcrc_ok);
        d.line(format!(
            "frame @{off} kind={kind}({kind_name}) len={frame_len} first_position={first} count={count} \
             durable_end={durable_end} chain={} header_crc={}",
            hex(b.get(off + 40, 32).unwrap_or_default()),
            ok(hcrc_ok)
        ));
        frames += 1;
        let remaining = (len - off) as u64;
        if frame_len < 72 || !frame_len.is_multiple_of(8) || frame_len > remaining {
            d.stop = Some(format!(
                "frame at offset {off}: frame_len {frame_len} is not a multiple of 8 of at least 72 that fits in \
                 the {remaining} bytes left"
            ));
            return;
        }
        let end = off + frame_len as usize;
        match kind {
            1 => {
                let mut r = off + 72;
                for i in 0..count {
                    if end - r < 72 {
                        d.stop = Some(format!(
                            "frame at offset {off}: record {i} of {count} at offset {r} does not fit in the frame"
                        ));
                        return;
                    }
                    let rec_len = b.u32(r) as usize;
                    let stream_len = b.u16(r + 54) as usize;
                    let type_len = b.u16(r + 56) as usize;
                    let meta_len = b.u32(r + 60) as usize;
                    let payload_len = b.u32(r + 64) as usize;
                    let computed = (72 + stream_len + type_len + meta_len + payload_len).div_ceil(8) * 8;
                    if rec_len < 72 || !rec_len.is_multiple_of(8) || rec_len > end - r || rec_len != computed {
                        d.stop = Some(format!(
                            "record at offset {r}: record_len {rec_len} is invalid (lengths give {computed}, \
                             {} bytes left in the frame)",
                            end - r
                        ));
                        return;
                    }
                    let crc_ok = b.crc(r + 8, r + rec_len) == b.u32(r + 4);
                    d.problems += u64::from(!crc_ok);
                    let body = r + 72;
                    d.line(format!(
                        "  record @{r} len={rec_len} position={} stream={} version={} type={} schema_version={} \
                         stream_len={stream_len} type_len={type_len} metadata_len={meta_len} \
                         payload_len={payload_len} crc={}",
                        b.u64(r + 8),
                        name(b.get(body, stream_len).unwrap_or_default()),
                        b.u64(r + 16),
                        name(b.get(body + stream_len, type_len).unwrap_or_default()),
                        b.u32(r + 48),
                        ok(crc_ok)
                    ));
                    records += 1;
                    r += rec_len;
                }
                if r != end {
                    d.stop = Some(format!(
                        "frame at offset {off}: its {count} records end at offset {r}, the frame at {end}"
                    ));
                    return;
                }
            }
            2 => {
                if end != len {
                    d.stop = Some(format!(
                        "the seal at offset {off} is followed by {} more bytes",
                        len - end
                    ));
                    return;
                }
            }
            3 => {
                let body_ok = frame_len == 176 && b.crc(off + 72, off + 168) == b.u32(off + 168);
                d.problems += u64::from(!body_ok);
                d.line(format!(
                    "  checkpoint public_key={} signature={} body_crc={}",
                    hex(b.get(off + 72, 32).unwrap_or_default()),
                    hex(b.get(off + 104, 64).unwrap_or_default()),
                    ok(body_ok)
                ));
            }
            _ => {
                d.stop = Some(format!("frame at offset {off}: invalid kind {kind}"));
                return;
            }
        }
        off = end;
    }
    d.line(format!("{frames} frames, {records} records"));
}

/// The footer of an index or stream table (spec 16).
fn dump_footer(b: &Bytes<'_>, d: &mut Dump) {
    let len = b.0.len();
    if len < 32 {
        d.stop = Some(format!("the file has {len} bytes, too few for the 32-byte footer"));
        return;
    }
    let f = len - 32;
    let table_offset = b.u64(f);
    let block_count = b.u64(f + 8);
    let footer_ok = b.crc(f, f + 20) == b.u32(f + 20);
    d.problems += u64::from(!footer_ok);
    d.line("footer:");
    d.line(format!("  table_offset: {table_offset}"));
    d.line(format!("  block_count:  {block_count}"));
    d.line(format!(
        "  magic:        {}",
        name(b.get(f + 24, 8).unwrap_or_default())
    ));
    d.line(format!("  footer_crc:   {}", ok(footer_ok)));
    let expect_len = block_count
        .checked_mul(4)
        .and_then(|t| t.checked_add(table_offset))
        .and_then(|t| t.checked_add(32));
    if expect_len != Some(len as u64) || block_count != table_offset.div_ceil(4096) {
        d.stop = Some(format!(
            "the footer does not match the file: table_offset {table_offset} + 4 x block_count {block_count} + 32 \
             should be the file length {len}"
        ));
        return;
    }
    let t = table_offset as usize;
    let table_ok = b.crc(t, t + 4 * block_count as usize) == b.u32(f + 16);
    d.problems += u64::from(!table_ok);
    d.line(format!("  table_crc:    {}", ok(table_ok)));
    let mut bad = 0u64;
    for i in 0..block_count as usize {
        let start = i * 4096;
        let stop = (start + 4096).min(t);
        if b.crc(start, stop) != b.u32(t + 4 * i) {
            bad += 1;
        }
    }
    d.problems += bad;
    d.line(format!("  blocks:       {block_count} ({bad} with a BAD CRC)"));
}

fn dump_index(b: &Bytes<'_>, d: &mut Dump) {
    if b.0.len() < 128 {
        d.stop = Some(format!("the index header needs 128 bytes, the file has {}", b.0.len()));
        return;
    }
    d.line("index header:");
    d.line("  magic:                ANNALIDX");
    for (label, v) in [
        ("index_version", u64::from(b.u16(8))),
        ("flags", u64::from(b.u16(10))),
        ("segment_base", b.u64(16)),
        ("segment_len", b.u64(24)),
    ] {
        d.line(format!("  {:<21} {v}", format!("{label}:")));
    }
    d.line(format!("  hash_mask:            {:#018x}", b.u64(32)));
    for (label, off) in [
        ("stream_count", 40),
        ("stream_entry_count", 44),
        ("category_count", 48),
        ("category_entry_count", 52),
        ("type_count", 56),
        ("type_entry_count", 60),
        ("frame_count", 64),
        ("names_len", 68),
    ] {
        d.line(format!("  {:<21} {}", format!("{label}:"), b.u32(off)));
    }
    d.line(format!("  seal_crc:             {:#010x}", b.u32(72)));
    dump_footer(b, d);
}

fn dump_stream_table(b: &Bytes<'_>, d: &mut Dump) {
    if b.0.len() < 64 {
        d.stop = Some(format!(
            "the stream table header needs 64 bytes, the file has {}",
            b.0.len()
        ));
        return;
    }
    d.line("stream table header:");
    d.line("  magic:         ANNALSTB");
    d.line(format!("  table_version: {}", b.u16(8)));
    d.line(format!("  flags:         {}", b.u16(10)));
    d.line(format!("  next_segment:  {}", b.u64(16)));
    d.line(format!("  hash_mask:     {:#018x}", b.u64(24)));
    d.line(format!("  stream_count:  {}", b.u64(32)));
    d.line(format!("  names_len:     {}", b.u64(40)));
    dump_footer(b, d);
}

fn dump_snapshot(b: &Bytes<'_>, d: &mut Dump) {
    let len = b.0.len();
    if len < 64 {
        d.stop = Some(format!("the snapshot header needs 64 bytes, the file has {len}"));
        return;
    }
    let stream_len = b.u16(12) as usize;
    let payload_len = b.u64(40);
    let mut crc = crc32fast::Hasher::new();
    crc.update(b.get(0, 60).unwrap_or_default());
    crc.update(b.0.get(64..).unwrap_or_default());
    let crc_ok = crc.finalize() == b.u32(60);
    d.problems += u64::from(!crc_ok);
    d.line("snapshot header:");
    d.line("  magic:          ANNALSNP");
    d.line(format!("  format_version: {}", b.u16(8)));
    d.line(format!("  flags:          {}", b.u16(10)));
    d.line(format!("  stream_len:     {stream_len}"));
    d.line(format!(
        "  stream:         {}",
        name(b.get(64, stream_len).unwrap_or(b"<beyond the end of the file>"))
    ));
    d.line(format!("  stream_version: {}", b.u64(16)));
    d.line(format!("  position:       {}", b.u64(24)));
    d.line(format!("  schema_version: {}", b.u32(32)));
    d.line(format!("  payload_len:    {payload_len}"));
    d.line(format!("  crc:            {:#010x} {}", b.u32(60), ok(crc_ok)));
    let expect = 64u64 + stream_len as u64 + payload_len;
    if expect != len as u64 {
        d.stop = Some(format!(
            "the header gives a file length of {expect}, the file has {len} bytes"
        ));
    }
}

/// The head file (spec 5.2): two 64-byte slots.
fn dump_head(b: &Bytes<'_>, d: &mut Dump) {
    let len = b.0.len();
    for slot in 0..2usize {
        let o = slot * 64;
        let Some(bytes) = b.get(o, 64) else {
            d.stop = Some(format!(
                "the head file needs 128 bytes (two 64-byte slots), the file has {len}"
            ));
            return;
        };
        if bytes.iter().all(|&x| x == 0) {
            d.line(format!("slot {slot} @{o}: empty (all zero: not written yet)"));
            continue;
        }
        let crc_ok = b.get(o, 4) == Some(b"HEAD") && b.crc(o + 8, o + 64) == b.u32(o + 4);
        d.problems += u64::from(!crc_ok);
        d.line(format!("slot {slot} @{o}:"));
        d.line(format!("  magic:          {}", name(b.get(o, 4).unwrap_or_default())));
        d.line(format!("  crc:            {:#010x} {}", b.u32(o + 4), ok(crc_ok)));
        d.line(format!("  format_version: {}", b.u16(o + 8)));
        d.line(format!("  flags:          {}", b.u16(o + 10)));
        d.line(format!("  reserved0:      {}", b.u32(o + 12)));
        d.line(format!("  sequence:       {}", b.u64(o + 16)));
        d.line(format!("  segment_base:   {}", b.u64(o + 24)));
        d.line(format!("  durable_end:    {}", b.u64(o + 32)));
        d.line(format!("  visible_end:    {}", b.u64(o + 40)));
        d.line(format!("  next_position:  {}", b.u64(o + 48)));
        d.line(format!("  reserved1:      {}", b.u64(o + 56)));
    }
    if len != 128 {
        d.stop = Some(format!(
            "the head file has {len} bytes, expected 128 (two 64-byte slots)"
        ));
    }
}
