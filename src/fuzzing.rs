//! Decoder entry points for fuzzers and property tests, **not a stable API**.
//!
//! Each function takes untrusted bytes (or a directory of untrusted files) and
//! runs them through the same decoders that recovery, `check` and readers use.
//! The property the callers check: no panic, no hang, no allocation sized by
//! an unchecked length. Results are discarded; errors are expected.
//!
//! Used by `fuzz/fuzz_targets/*` (cargo-fuzz) and `tests/decoders_proptest.rs`.

use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zerocopy::FromBytes;

use crate::format::blockfile::{BLOCK_CRC_LEN, BlockFooter, FOOTER_CRC_OFFSET, FOOTER_TABLE_CRC_OFFSET};
use crate::format::frame::{RecordSink, frame_records, resync_max_durable, walk_segment_records};
use crate::format::{FRAME_KIND_BATCH, FrameHeader, HeadSlot, IdxHeader, RecordHeader, SegmentHeader};
use crate::index::streamtable::StreamTable;
use crate::index::{IdxFile, MemIndex, Named};
use crate::{CheckOptions, Direction, Log, Options, Reader};

/// Recompute every checksum a length walk of the segment in `bytes` reaches
/// (the header CRC, each frame header CRC, each record CRC), so that a
/// fuzzer's mutations get past the checksums to the decoders behind them.
pub fn fix_segment_crcs(bytes: &mut [u8]) {
    use crate::format::{FRAME_CRC_START, FRAME_HEADER_LEN, RECORD_CRC_START, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let crc_at = |b: &mut [u8], range: std::ops::Range<usize>, at: usize| {
        if let Some(c) = b.get(range).map(crc32fast::hash) {
            b[at..at + 4].copy_from_slice(&c.to_le_bytes());
        }
    };
    if bytes.len() < SEGMENT_HEADER_LEN {
        return;
    }
    use crate::format::SEGMENT_HEADER_CRC_OFFSET;
    crc_at(bytes, 0..SEGMENT_HEADER_CRC_OFFSET, SEGMENT_HEADER_CRC_OFFSET);
    const FRAME_LEN_AT: usize = offset_of!(FrameHeader, frame_len);
    const FRAME_KIND_AT: usize = offset_of!(FrameHeader, kind);
    const FRAME_CRC_AT: usize = offset_of!(FrameHeader, header_crc);
    const RECORD_CRC_AT: usize = offset_of!(RecordHeader, crc);
    let u64_at = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .map_or(0, |x| u64::from_le_bytes(x.try_into().unwrap_or_default()))
    };
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map_or(0, |x| u32::from_le_bytes(x.try_into().unwrap_or_default()))
    };
    let mut off = SEGMENT_HEADER_LEN;
    while off + FRAME_HEADER_LEN <= bytes.len() && bytes[off..].starts_with(&crate::format::FRAME_MAGIC) {
        let len = u64_at(bytes, off + FRAME_LEN_AT);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| off.checked_add(l))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        if bytes[off + FRAME_KIND_AT] == FRAME_KIND_BATCH {
            let mut r = off + FRAME_HEADER_LEN;
            while r + RECORD_HEADER_LEN <= end {
                let rlen = u32_at(bytes, r) as usize;
                if rlen < RECORD_HEADER_LEN || r + rlen > end {
                    break;
                }
                crc_at(bytes, r + RECORD_CRC_START..r + rlen, r + RECORD_CRC_AT);
                r += rlen;
            }
        }
        crc_at(bytes, off + FRAME_CRC_START..off + FRAME_HEADER_LEN, off + FRAME_CRC_AT);
        if len < FRAME_HEADER_LEN as u64 || end >= bytes.len() {
            break;
        }
        off = end;
    }
}

/// Recompute a block file's block CRC table, table CRC and footer CRC
/// (spec 17), where its footer's `table_offset` fits the file.
pub fn fix_blockfile(bytes: &mut [u8]) {
    use crate::format::blockfile::{BLOCK, FOOTER_LEN};
    let Some(foot) = bytes.len().checked_sub(FOOTER_LEN) else {
        return;
    };
    let Ok(footer) = BlockFooter::read_from_bytes(&bytes[foot..]) else {
        return;
    };
    let Ok(table) = usize::try_from(footer.table_offset.get()) else {
        return;
    };
    let blocks = table.div_ceil(BLOCK);
    if table > foot || blocks.checked_mul(BLOCK_CRC_LEN).and_then(|t| t.checked_add(table)) != Some(foot) {
        return;
    }
    for b in 0..blocks {
        let c = crc32fast::hash(&bytes[b * BLOCK..((b + 1) * BLOCK).min(table)]);
        let at = table + b * BLOCK_CRC_LEN;
        bytes[at..at + BLOCK_CRC_LEN].copy_from_slice(&c.to_le_bytes());
    }
    let c = crc32fast::hash(&bytes[table..foot]);
    let at = foot + FOOTER_TABLE_CRC_OFFSET;
    bytes[at..at + BLOCK_CRC_LEN].copy_from_slice(&c.to_le_bytes());
    let c = crc32fast::hash(&bytes[foot..foot + FOOTER_CRC_OFFSET]);
    let at = foot + FOOTER_CRC_OFFSET;
    bytes[at..at + BLOCK_CRC_LEN].copy_from_slice(&c.to_le_bytes());
}

/// Recompute the CRC of both head slots (spec 16).
pub fn fix_head_crcs(bytes: &mut [u8]) {
    use crate::format::{HEAD_CRC_START, HEAD_SLOT_LEN};
    for i in 0..2 {
        let at = i * HEAD_SLOT_LEN;
        if bytes.len() >= at + HEAD_SLOT_LEN {
            let c = crc32fast::hash(&bytes[at + HEAD_CRC_START..at + HEAD_SLOT_LEN]);
            let crc_at = at + offset_of!(HeadSlot, crc);
            bytes[crc_at..crc_at + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// Recompute a snapshot file's CRC (spec 20.2: every byte but the CRC field
/// at 60..64 of the 64-byte header).
pub fn fix_snapshot_crc(bytes: &mut [u8]) {
    use crate::format::{SNAPSHOT_CRC_OFFSET, SNAPSHOT_HEADER_LEN};
    if bytes.len() >= SNAPSHOT_HEADER_LEN {
        let c = crate::format::snapshot::file_crc(bytes);
        bytes[SNAPSHOT_CRC_OFFSET..SNAPSHOT_CRC_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
    }
}

/// Run `f` on `bytes`, then on a copy whose checksums `fix` recomputed (if
/// that changed anything): what fuzz targets and property tests call, so
/// that mutations reach the decoders behind the checksums.
pub fn with_fixed(bytes: &[u8], fix: impl Fn(&mut [u8]), f: impl Fn(&[u8])) {
    f(bytes);
    let mut v = bytes.to_vec();
    fix(&mut v);
    if v != bytes {
        f(&v);
    }
}

/// Names probed in lookups (a few that the golden vectors hold, and some that
/// they do not).
const PROBE_NAMES: [&str; 6] = ["order-1", "order-7", "user-2", "Placed", "", "x"];

/// Walk a whole segment file as recovery, `check` and readers do: header
/// parse, frame walk with CRCs (batches, checkpoints, seal), record parsing,
/// the resynchronisation scan, and an index rebuild followed by lookups.
pub fn segment(bytes: &[u8]) {
    let Ok(header) = SegmentHeader::parse(bytes) else {
        return;
    };
    struct Sink(u64);
    impl<'a> RecordSink<'a> for Sink {
        fn record(&mut self, _: u64, _: u64, rec: &crate::RecordRef<'a>) {
            self.0 = self
                .0
                .wrapping_add(rec.payload().len() as u64 + rec.stream().len() as u64 + rec.event_type().len() as u64);
        }
        fn batch(&mut self, _: u64, f: &crate::format::frame::Frame) {
            self.0 = self.0.wrapping_add(f.len);
        }
    }
    for verify in [true, false] {
        let walk = walk_segment_records(bytes, header, verify, &mut Sink(0));
        let _ = resync_max_durable(bytes, walk.end, &crate::format::Layout::of(header));
    }
    let mut batches = Vec::new();
    crate::format::frame::walk_segment(bytes, header, true, |b, f| {
        if f.kind == FRAME_KIND_BATCH && batches.len() < 64 {
            batches.push(b.to_vec());
        }
    });
    for b in &batches {
        for r in frame_records(b, &crate::format::Layout::of(header)) {
            let _ = (r.event_id(), r.metadata().len(), r.schema_version());
        }
    }
    let _ = crate::index::seal_crc(bytes);
    if let Ok(idx) = MemIndex::rebuild(bytes) {
        let idx = crate::index::Index::Mem(std::sync::Arc::new(std::sync::RwLock::new(idx)));
        probe_index(&idx);
    }
}

fn probe_index(idx: &crate::index::Index) {
    for name in PROBE_NAMES {
        if let Ok(Some(s)) = idx.find_stream(name) {
            for i in 0..s.entry_count.min(8) {
                let _ = idx.stream_entry(name, &s, i);
            }
            let _ = idx.stream_at(s.row, name);
        }
        for kind in [Named::Category, Named::Type] {
            if let Ok(Some((start, count))) = idx.find_named(kind, name) {
                for i in 0..count.min(8) {
                    let _ = idx.named_entry(kind, name, start, i);
                }
            }
        }
    }
    let n = idx.frame_count();
    for i in [0, 1, n / 2, n.saturating_sub(1), n, u32::MAX] {
        let _ = idx.frame(i);
    }
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// A scratch path unique to this process and call, under `TMPDIR` (fuzzers
/// are faster with `TMPDIR=/dev/shm`): for whole log directories only.
fn scratch(tag: &str) -> PathBuf {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("annal-fuzz-{}-{n}-{tag}", std::process::id()))
}

/// Decode `bytes` as the index file (spec 17) of `segment_bytes` (a sealed
/// segment; when `None`, the index is checked against a segment whose base,
/// length and seal CRC are taken from the index header itself, so that the
/// body is reached) and run every lookup. The bytes are decoded in place, as
/// a mapping of the file would be.
pub fn index(bytes: &[u8], segment_bytes: Option<&[u8]>) {
    let opened = match segment_bytes {
        Some(seg) => {
            let base = SegmentHeader::parse(seg).map_or(0, |h| h.base_position.get());
            IdxFile::from_bytes(bytes, base, seg)
        }
        None => {
            let (base, len, seal) = IdxHeader::read_from_prefix(bytes).map_or((0, 0, 0), |(h, _)| {
                (h.segment_base.get(), h.segment_len.get(), h.seal_crc.get())
            });
            IdxFile::from_bytes_with(bytes, base, len, seal)
        }
    };
    checkpoint(bytes);
    let Ok(idx) = opened else { return };
    // The decoder of merges: every row and entry read.
    let _ = MemIndex::from_idx(&idx);
    if let Ok(rows) = idx.stream_rows() {
        for (name, row, _) in rows.iter().take(16) {
            let _ = idx.stream_at(*row, name);
            if let Ok(Some(s)) = idx.find_stream(name) {
                for i in 0..s.entry_count.min(8) {
                    let _ = idx.stream_entry(&s, i);
                }
            }
        }
    }
    probe_idx_file(&idx);
}

/// Decode `bytes` as an index checkpoint (spec 17.5) of the range its own
/// header names, and run every lookup and the merge decoder.
fn checkpoint(bytes: &[u8]) {
    let Some((base, from, to)) = IdxHeader::read_from_prefix(bytes)
        .ok()
        .map(|(h, _)| (h.segment_base.get(), h.covered_from.get(), h.segment_len.get()))
    else {
        return;
    };
    let Ok(bf) = crate::index::blockfile::BlockFile::from_bytes(bytes, crate::format::IDX_MAGIC) else {
        return;
    };
    let Ok(c) = IdxFile::open_checkpoint(bf, base, from, to) else {
        return;
    };
    let _ = (c.checkpoint_binding(), c.covered());
    let _ = MemIndex::from_idx(&c);
    probe_idx_file(&c);
}

/// [`probe_index`] for an index file over any bytes: the lookups that
/// `Index::Disk` makes.
fn probe_idx_file<B: AsRef<[u8]>>(idx: &IdxFile<B>) {
    for name in PROBE_NAMES {
        if let Ok(Some(s)) = idx.find_stream(name) {
            for i in 0..s.entry_count.min(8) {
                let _ = idx.stream_entry(&s, i);
            }
            let _ = idx.stream_at(s.row, name);
        }
        for kind in [Named::Category, Named::Type] {
            if let Ok(Some((start, count))) = idx.find_named(kind, name) {
                for i in 0..count.min(8) {
                    let _ = idx.named_entry(kind, start.saturating_add(i));
                }
            }
        }
    }
    let n = idx.frame_count();
    for i in [0, 1, n / 2, n.saturating_sub(1)] {
        if i < n {
            let _ = idx.frame(i);
        }
    }
}

/// Decode `bytes` as the stream table (spec 18) and run lookups and a full
/// row scan.
pub fn stream_table(bytes: &[u8]) {
    let Ok(t) = StreamTable::from_bytes(bytes) else { return };
    let _ = t.next_segment();
    let mut names = Vec::new();
    for row in t.rows() {
        match row {
            Ok((_, name, _)) => {
                if names.len() < 16 {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            Err(_) => break,
        }
    }
    for name in names.iter().map(String::as_str).chain(PROBE_NAMES) {
        let _ = t.lookup(name);
    }
}

/// Decode `bytes` as a snapshot file (spec 20.3), under a snapshot file name
/// and under a name that is not one.
pub fn snapshot(bytes: &[u8]) {
    let _ = crate::es::snapshot::testing::decode(Path::new("x.snap"), bytes);
    let name = crate::es::snapshot::testing::file_name("order-7", 3);
    let _ = crate::es::snapshot::testing::decode(Path::new(&name), bytes);
}

/// Decode `bytes` as a head file (spec 16).
pub fn head(bytes: &[u8]) {
    let _ = crate::storage::head::decode(bytes);
}

/// Everything that reads a log directory: `check` (read-only, then with
/// repair), `Reader` views replayed forward, backward, per stream, category
/// and event type, `Log::open` (writer recovery) followed by a replay, one
/// append and a close, and a last reader pass. Modifies `dir`.
pub fn open_dir(dir: &Path) {
    let _ = crate::check(dir, CheckOptions::default());
    let _ = crate::read::anchor::chain_head(dir);
    replay_reader(dir);
    let _ = crate::check(dir, CheckOptions::default().repair(true));
    if let Ok(log) = Log::open_with(dir, Options::default().create(false)) {
        if let Ok(view) = log.view() {
            replay_view(&view);
        }
        let _ = log.append(
            "order-7",
            crate::ExpectedVersion::Any,
            &[crate::EventData::new("Placed", b"{}".as_slice())],
        );
        let _ = log.close();
    }
    replay_reader(dir);
}

fn replay_reader(dir: &Path) {
    let Ok(reader) = Reader::open(dir) else { return };
    if let Ok(view) = reader.view() {
        replay_view(&view);
    }
}

/// Panic if an iterator yields more items than the log has bytes: it would
/// be looping.
fn bounded<T>(it: impl Iterator<Item = crate::Result<T>>, bound: u64, what: &str, mut f: impl FnMut(T)) {
    let mut n = 0u64;
    for item in it {
        n += 1;
        assert!(
            n <= bound,
            "{what} yielded more than {bound} items: an endless iterator"
        );
        match item {
            Ok(x) => f(x),
            Err(_) => break,
        }
    }
}

fn replay_view(view: &crate::LogView) {
    let bound = view.len_bytes() / 8 + 16;
    let mut streams = Vec::new();
    let mut types = Vec::new();
    let _ = view.index_damage();
    bounded(view.read_all(0), bound, "read_all", |r| {
        if streams.len() < 4 && !streams.iter().any(|s: &String| s == r.stream()) {
            streams.push(r.stream().to_owned());
        }
        if types.len() < 2 && !types.iter().any(|s: &String| s == r.event_type()) {
            types.push(r.event_type().to_owned());
        }
    });
    let next = view.next_position();
    for from in [1, next / 2, next.saturating_sub(1)] {
        bounded(view.read_all(from), bound, "read_all(from)", |_| {});
    }
    bounded(
        view.read_all_backward(next.saturating_sub(1)),
        bound,
        "read_all_backward",
        |_| {},
    );
    for s in streams.iter().map(String::as_str).chain(["order-7", "nope"]) {
        for dir in [Direction::Forward, Direction::Backward] {
            bounded(view.read_stream(s, 0, dir, u64::MAX), bound, "read_stream", |_| {});
        }
        let _ = view.stream_version(s);
        if let Some(cat) = crate::category_of(s) {
            bounded(view.read_category(cat, 0), bound, "read_category", |_| {});
        }
    }
    for t in types.iter().map(String::as_str).chain(["Placed"]) {
        bounded(view.read_event_type(t, 0), bound, "read_event_type", |_| {});
    }
    for t in [0, 1_000, u64::MAX] {
        let _ = view.position_at_time(t);
    }
}

/// File kinds of [`split_dir`] chunks.
const KINDS: usize = 7;

/// Split fuzzer input into the files of a log directory: a sequence of
/// chunks `[kind: u8][len: u16 LE][len bytes]` (a short last chunk takes what
/// is left). With bit 7 of `kind` set, the chunk's checksums are recomputed
/// first ([`fix_segment_crcs`], [`fix_blockfile`], [`fix_head_crcs`]).
/// `(kind & 0x7f) % 7`: 0 the segment at base 0; 1 another segment, named by
/// the base position in its header (else the previous such name, else 1);
/// 2 the index of segment 0; 3 the index of the last other segment;
/// 4 `annal.head`; 5 `annal.streams`; 6 a snapshot file. A later chunk for
/// the same file name replaces an earlier one. Returns `(relative path,
/// bytes)`.
pub fn split_dir(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut second_base = 1u64;
    let mut rest = data;
    while let [kind, rest2 @ ..] = rest {
        let (len, body) = match rest2 {
            [a, b, body @ ..] => (u16::from_le_bytes([*a, *b]) as usize, body),
            _ => (0, &[][..]),
        };
        let len = len.min(body.len());
        let (bytes, next) = body.split_at(len);
        rest = next;
        let mut bytes = bytes.to_vec();
        let fix = kind & 0x80 != 0;
        let name = match (kind & 0x7f) as usize % KINDS {
            0 => {
                if fix {
                    fix_segment_crcs(&mut bytes);
                }
                crate::format::names::segment_file_name(0)
            }
            1 => {
                if fix {
                    fix_segment_crcs(&mut bytes);
                }
                if let Ok(h) = SegmentHeader::parse(&bytes)
                    && h.base_position.get() != 0
                {
                    second_base = h.base_position.get();
                }
                crate::format::names::segment_file_name(second_base)
            }
            k @ (2 | 3 | 5) => {
                if fix {
                    fix_blockfile(&mut bytes);
                }
                match k {
                    2 => crate::format::names::index_file_name(0),
                    3 => crate::format::names::index_file_name(second_base),
                    _ => crate::STREAM_TABLE_FILE.to_owned(),
                }
            }
            4 => {
                if fix {
                    fix_head_crcs(&mut bytes);
                }
                crate::HEAD_FILE.to_owned()
            }
            _ => format!(
                "{}/{}",
                crate::es::snapshot::SNAPSHOT_DIR,
                crate::es::snapshot::testing::file_name("order-7", 3)
            ),
        };
        files.retain(|(n, _)| *n != name);
        files.push((name, bytes));
    }
    files
}

/// The inverse of [`split_dir`] for the files of a real log directory
/// (to seed corpora): every segment and its index, the head, the stream table
/// and one snapshot, where present.
pub fn join_dir(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |kind: u8, bytes: &[u8]| {
        let len = bytes.len().min(u16::MAX as usize);
        out.push(kind);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..len]);
    };
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| crate::format::names::parse_segment_file_name(e.file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    for base in bases {
        let other = u8::from(base != 0);
        if let Ok(b) = std::fs::read(dir.join(crate::format::names::segment_file_name(base))) {
            push(other, &b);
        }
        if let Ok(b) = std::fs::read(dir.join(crate::format::names::index_file_name(base))) {
            push(2 + other, &b);
        }
    }
    for (kind, name) in [(4, crate::HEAD_FILE), (5, crate::STREAM_TABLE_FILE)] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            push(kind, &b);
        }
    }
    let snaps = dir.join(crate::es::snapshot::SNAPSHOT_DIR);
    if let Some(e) = std::fs::read_dir(snaps).into_iter().flatten().flatten().next()
        && let Ok(b) = std::fs::read(e.path())
    {
        push(6, &b);
    }
    out
}

/// Write the files of [`split_dir`]`(data)` into a fresh scratch directory,
/// run [`open_dir`] on it, and remove it.
pub fn open_dir_bytes(data: &[u8]) {
    let dir = scratch("dir");
    if std::fs::create_dir_all(dir.join(crate::es::snapshot::SNAPSHOT_DIR)).is_err() {
        return;
    }
    let ok = split_dir(data)
        .iter()
        .all(|(name, bytes)| std::fs::write(dir.join(name), bytes).is_ok());
    if ok {
        open_dir(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many OS reads the cross-process [`Reader`] has made of segment files
/// in this process so far (each `pread` of its active-segment walk, of
/// segment headers and seals): a test takes the difference around an
/// operation to bound the reads it makes.
pub fn reader_preads() -> u64 {
    crate::read::READER_PREADS.load(Ordering::Relaxed)
}

/// Counts of the advice annal gave the kernel about its mappings since the
/// process started (a test seam: see the module documentation of
/// `storage::mmap`). Process-wide: a test compares counts before and after
/// what it does, with nothing else mapping meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdviceCounts {
    /// Mappings advised `MADV_RANDOM` (each mapping, when it is made).
    pub random: u64,
    /// `MADV_WILLNEED` calls (readahead windows of sequential readers).
    pub willneed: u64,
    /// Bytes those `MADV_WILLNEED` calls covered.
    pub willneed_bytes: u64,
    /// Mappings advised `MADV_SEQUENTIAL` (segments `check` walks whole).
    pub sequential: u64,
}

/// The advice given so far (see [`AdviceCounts`]).
pub fn advice() -> AdviceCounts {
    let c = &crate::storage::mmap::counters::COUNTERS;
    AdviceCounts {
        random: c.random.load(Ordering::Relaxed),
        willneed: c.willneed.load(Ordering::Relaxed),
        willneed_bytes: c.willneed_bytes.load(Ordering::Relaxed),
        sequential: c.sequential.load(Ordering::Relaxed),
    }
}
