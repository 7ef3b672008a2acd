//! The corruption matrix (issue 8, item 3): one reference log with every kind of
//! file annal writes (sealed segments with their `.idx`, the active segment,
//! the stream table, the head file, snapshot files; audit chain on, signed
//! checkpoints), and for every file kind every damage kind: single-bit flips
//! (a sample covering every structure), zeroed 4 KiB pages, truncations,
//! appended garbage, two records swapped, the file deleted. Each case runs on
//! a fresh copy of the reference log and asserts:
//!
//! * `annal::check` (chain verified, public key given) reports it: a problem
//!   naming the damaged file at an offset inside (or at the start of) the
//!   damaged structure; or, where the spec says the case is not damage, the
//!   documented classification (a warning, or nothing) — see [`Expect`];
//!   and no finding names another file (issue 13: a finding points at the
//!   damaged bytes and only there), except one marked as a consequence;
//! * every byte of the head file and of one checkpoint frame (the sealed
//!   segment's last) is flipped, whatever the sample;
//! * readers (`Reader` read-only, and `Log::open` with `read_all` and
//!   `read_stream` of every stream) never return a record that differs from
//!   the reference; segment damage makes them return an error (or, for a
//!   writer open, refuse), never a silently shorter log;
//! * damaged index files and stream tables fall back: every read is complete
//!   and correct, and after a writer open the check is clean again (rebuilt);
//! * a damaged snapshot is skipped with a warning and the aggregate is rebuilt
//!   from events to the same state.
//!
//! A table of cases tried / detected per file kind and damage kind is printed.
//!
//! Environment: `ANNAL_TEST_SEED` picks the sample of bit positions (printed);
//! `ANNAL_MATRIX_FULL=1` flips one bit in every byte of every damaged file
//! (every bit of the files of 4 KiB or less) instead of a sample.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use annal::{
    Aggregate, CheckOptions, CheckReport, Direction, Durability, EventData, ExpectedVersion, Log, Options, PublicKey,
    Repository, SigningKey,
};
use common::{Rec, Rng, u32_at, u64_at};

const SEGMENT_SIZE: u64 = 12 * 1024;
const TALLY: &str = "tally-1";

fn signer() -> SigningKey {
    SigningKey::from_bytes([0x3c; 32])
}

// ---------------------------------------------------------------------------
// An aggregate, so that the log has snapshot files.

use common::{Tally, TallyEvent};

// ---------------------------------------------------------------------------
// The reference log.

struct Reference {
    dir: tempfile::TempDir,
    recs: Vec<Rec>,
    streams: BTreeMap<String, Vec<Rec>>,
    tally: Tally,
    pk: PublicKey,
}

fn build() -> Reference {
    let dir = common::scratch();
    let opts = Options::default()
        .format_version(2)
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Buffered)
        .signing_key(signer())
        .checkpoint_every(1000);
    let log = Log::open_with(dir.path(), opts).expect("create the reference log");
    let repo = Repository::<Tally>::new(&log).snapshot_every(3, 3);
    let mut i: u64 = 0;
    // Four sealed segments, then a few batches in the active one.
    let mut extra = 0;
    while extra < 6 {
        if common::segments(dir.path()).len() >= 4 {
            extra += 1;
        }
        match i % 4 {
            // Batches of 1 to 3 events of different sizes (padding varies).
            0 | 1 => {
                let n = 1 + i % 3;
                let events: Vec<EventData<'static>> = (0..n)
                    .map(|j| {
                        let tag = i * 10 + j;
                        EventData::new(
                            if j % 2 == 0 { "Opened" } else { "Changed" },
                            common::payload(tag, (tag as usize * 29) % 90 + 1),
                        )
                        .with_metadata(common::payload(tag + 99, (tag as usize * 13) % 23))
                        .with_schema_version(j as u32)
                    })
                    .collect();
                log.append(&format!("acct-{}", i % 3), ExpectedVersion::Any, &events)
                    .expect("append");
            }
            // Batches of two records of the same length (for swaps).
            2 => {
                let events: Vec<EventData<'static>> = (0..2)
                    .map(|j| EventData::new("Fixed", common::payload(i * 10 + j, 40)))
                    .collect();
                log.append("fixed-0", ExpectedVersion::Any, &events).expect("append");
            }
            _ => {
                repo.execute(TALLY, &vec![i as i64, -(i as i64) / 3])
                    .expect("tally command");
            }
        }
        i += 1;
    }
    log.close().expect("close the reference log");
    let recs = common::read_with_reader(dir.path()).expect("read the reference log");
    assert!(recs.iter().enumerate().all(|(i, r)| r.position == i as u64));
    let mut streams: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    for r in &recs {
        streams.entry(r.stream.clone()).or_default().push(r.clone());
    }
    let mut tally = Tally::default();
    for r in &streams[TALLY] {
        let e: TallyEvent = postcard::from_bytes(&r.payload).expect("decode tally event");
        tally.apply(&e);
    }
    let pk = signer().public_key();
    let report = annal::check(dir.path(), CheckOptions::default().public_key(pk)).expect("check");
    assert!(report.is_ok(), "the reference log is clean: {:?}", report.problems);
    assert!(report.warnings.is_empty(), "no warnings: {:?}", report.warnings);
    assert!(
        report.signatures.as_ref().is_some_and(|s| s.verified > 0),
        "checkpoints verified: {:?}",
        report.signatures
    );
    Reference {
        dir,
        recs,
        streams,
        tally,
        pk,
    }
}

/// A copy of the whole log directory (with `snapshots/`, without the lock).
fn copy_all(src: &Path) -> tempfile::TempDir {
    let d = common::scratch();
    for e in fs::read_dir(src).expect("read log dir") {
        let e = e.expect("dir entry");
        let name = e.file_name();
        if name == annal::LOCK_FILE {
            continue;
        }
        if e.path().is_dir() {
            fs::create_dir(d.path().join(&name)).expect("mkdir");
            for f in fs::read_dir(e.path()).expect("read sub dir") {
                let f = f.expect("dir entry");
                fs::copy(f.path(), d.path().join(&name).join(f.file_name())).expect("copy");
            }
        } else {
            fs::copy(e.path(), d.path().join(&name)).expect("copy");
        }
    }
    d
}

// ---------------------------------------------------------------------------
// File kinds and their structures.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sealed,
    Active,
    Index,
    Table,
    Head,
    Snapshot,
}

impl Kind {
    fn all() -> [Kind; 6] {
        [
            Kind::Sealed,
            Kind::Active,
            Kind::Index,
            Kind::Table,
            Kind::Head,
            Kind::Snapshot,
        ]
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Sealed => "sealed segment",
            Kind::Active => "active segment",
            Kind::Index => "index file",
            Kind::Table => "stream table",
            Kind::Head => "head file",
            Kind::Snapshot => "snapshot file",
        }
    }
    fn is_segment(self) -> bool {
        matches!(self, Kind::Sealed | Kind::Active)
    }
    fn is_derived(self) -> bool {
        matches!(self, Kind::Index | Kind::Table)
    }
}

/// A leaf structure of a file: what it is, its bytes, and the structure that
/// contains it (the unit a reader or the check rejects: the segment header or
/// the frame for segments, the CRC block for derived files, the slot for the
/// head file, the whole file for a snapshot).
#[derive(Debug, Clone)]
struct Region {
    what: String,
    start: u64,
    end: u64,
    unit: (u64, u64),
    /// Another acceptable place for a finding (the whole block CRC table for
    /// one of its entries).
    alt: Option<(u64, u64)>,
}

fn rows(out: &mut Vec<Region>, prefix: &str, start: u64, end: u64, unit: (u64, u64)) {
    let mut at = start;
    while at < end {
        let e = (at + 8).min(end);
        out.push(Region {
            what: format!("{prefix} +{}", at - start),
            start: at,
            end: e,
            unit,
            alt: None,
        });
        at = e;
    }
}

fn segment_regions(b: &[u8]) -> Vec<Region> {
    let mut out = Vec::new();
    rows(&mut out, "segment header", 0, 128, (0, 128));
    for f in common::frames(b) {
        let (fs_, fe) = (f.offset, f.offset + f.len);
        let kind = match f.kind {
            1 => "batch",
            2 => "seal",
            3 => "checkpoint",
            _ => "frame",
        };
        for (off, name) in [
            (0, "magic+header_crc"),
            (8, "frame_len"),
            (16, "first_position"),
            (24, "count+kind+flags"),
            (32, "durable_end"),
            (40, "chain[0..8]"),
            (48, "chain[8..16]"),
            (56, "chain[16..24]"),
            (64, "chain[24..32]"),
        ] {
            out.push(Region {
                what: format!("{kind} frame header {name}"),
                start: fs_ + off,
                end: fs_ + off + 8,
                unit: (fs_, fe),
                alt: None,
            });
        }
        match f.kind {
            1 => {
                let mut r = fs_ + 72;
                for _ in 0..f.record_count {
                    let at = r as usize;
                    let len = u32_at(b, at) as u64;
                    rows(&mut out, "record header", r, r + 72, (fs_, fe));
                    // Name the header rows by field rather than offset.
                    let stream_len = u16::from_le_bytes([b[at + 54], b[at + 55]]) as u64;
                    let type_len = u16::from_le_bytes([b[at + 56], b[at + 57]]) as u64;
                    let meta_len = u32_at(b, at + 60) as u64;
                    let pay_len = u32_at(b, at + 64) as u64;
                    let mut p = r + 72;
                    for (n, l) in [
                        ("record stream name", stream_len),
                        ("record event type", type_len),
                        ("record metadata", meta_len),
                        ("record payload", pay_len),
                    ] {
                        if l > 0 {
                            out.push(Region {
                                what: n.into(),
                                start: p,
                                end: p + l,
                                unit: (fs_, fe),
                                alt: None,
                            });
                        }
                        p += l;
                    }
                    if p < r + len {
                        out.push(Region {
                            what: "record padding".into(),
                            start: p,
                            end: r + len,
                            unit: (fs_, fe),
                            alt: None,
                        });
                    }
                    r += len;
                }
                assert_eq!(r, fe, "records fill the frame");
            }
            3 => {
                for (s, e, n) in [
                    (72, 104, "checkpoint public_key"),
                    (104, 168, "checkpoint signature"),
                    (168, 176, "checkpoint body_crc+reserved"),
                ] {
                    out.push(Region {
                        what: n.into(),
                        start: fs_ + s,
                        end: fs_ + e,
                        unit: (fs_, fe),
                        alt: None,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Block files (spec 16): header, checked region in 4096-byte blocks, the
/// block CRC table, the footer.
fn blockfile_regions(b: &[u8], row_len: u64) -> Vec<Region> {
    let len = b.len() as u64;
    let table_offset = u64_at(b, b.len() - 32);
    let block_count = u64_at(b, b.len() - 24);
    assert_eq!(len, table_offset + 4 * block_count + 32, "block file layout");
    let block = |p: u64| {
        let s = p / 4096 * 4096;
        (s, (s + 4096).min(table_offset))
    };
    let mut out = Vec::new();
    rows(&mut out, "header", 0, 128, block(0));
    let mut at = 128;
    while at < table_offset {
        let e = (at + row_len).min(table_offset);
        out.push(Region {
            what: "section row".into(),
            start: at,
            end: e,
            unit: block(at),
            alt: None,
        });
        at = e;
    }
    for i in 0..block_count {
        out.push(Region {
            what: "block CRC table".into(),
            start: table_offset + 4 * i,
            end: table_offset + 4 * i + 4,
            // The entry of block i: reported at that block, or in the table.
            unit: block(4096 * i),
            alt: Some((table_offset, len - 33)),
        });
    }
    let f = len - 32;
    for (s, e, n) in [
        (0, 8, "footer table_offset"),
        (8, 16, "footer block_count"),
        (16, 20, "footer table_crc"),
        (20, 24, "footer footer_crc"),
        (24, 32, "footer magic"),
    ] {
        out.push(Region {
            what: n.into(),
            start: f + s,
            end: f + e,
            unit: (f, len),
            alt: None,
        });
    }
    out
}

fn head_regions() -> Vec<Region> {
    let mut out = Vec::new();
    for slot in 0..2u64 {
        rows(
            &mut out,
            &format!("slot {slot}"),
            slot * 64,
            slot * 64 + 64,
            (slot * 64, slot * 64 + 64),
        );
    }
    out
}

fn snapshot_regions(b: &[u8]) -> Vec<Region> {
    let len = b.len() as u64;
    let mut out = Vec::new();
    rows(&mut out, "snapshot header", 0, 64, (0, len));
    let stream_len = u16::from_le_bytes([b[12], b[13]]) as u64;
    out.push(Region {
        what: "snapshot stream name".into(),
        start: 64,
        end: 64 + stream_len,
        unit: (0, len),
        alt: None,
    });
    if 64 + stream_len < len {
        out.push(Region {
            what: "snapshot payload".into(),
            start: 64 + stream_len,
            end: len,
            unit: (0, len),
            alt: None,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Cases.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    BitFlip,
    ZeroPage,
    Truncate,
    Garbage,
    Swap,
    Delete,
}

impl Damage {
    fn name(self) -> &'static str {
        match self {
            Damage::BitFlip => "bit flip",
            Damage::ZeroPage => "zeroed 4K page",
            Damage::Truncate => "truncation",
            Damage::Garbage => "appended garbage",
            Damage::Swap => "records swapped",
            Damage::Delete => "deleted",
        }
    }
}

/// What `check` must report.
#[derive(Debug, Clone)]
enum Expect {
    /// A problem naming the file, at an offset within one of the ranges
    /// (inclusive of both ends).
    Problem(Vec<(u64, u64)>),
    /// A problem naming the file (or whose detail names it: a deleted file),
    /// at any offset.
    ProblemNaming,
    /// Not damage by the spec: a warning naming the file at an offset in the
    /// range, and no problem. The reason is printed.
    Warning((u64, u64), &'static str),
    /// Not damage by the spec, and nothing to report. The reason is printed.
    Nothing(&'static str),
}

struct Case {
    kind: Kind,
    damage: Damage,
    /// Path of the damaged file, relative to the log directory.
    file: String,
    label: String,
    edit: Edit,
    expect: Expect,
    /// For a deleted segment: the segment after it.
    successor: Option<String>,
    /// Check and read-only readers only, no writer open: the exhaustive
    /// flips of every byte of the head and of a checkpoint body, whose
    /// structures the sampled cases also take through a writer open (keeps
    /// the run time about what it was before they were added).
    light: bool,
}

enum Edit {
    Flip(u64, u8),
    Zero(u64, u64),
    Truncate(u64),
    Append(Vec<u8>),
    SwapRanges((u64, u64), (u64, u64)),
    Delete,
}

fn apply(path: &Path, edit: &Edit) {
    match edit {
        Edit::Delete => fs::remove_file(path).expect("delete"),
        Edit::Truncate(n) => common::edit(path, |b| b.truncate(*n as usize)),
        Edit::Flip(at, bit) => common::edit(path, |b| b[*at as usize] ^= 1 << bit),
        Edit::Zero(s, e) => common::edit(path, |b| b[*s as usize..*e as usize].fill(0)),
        Edit::Append(g) => common::edit(path, |b| b.extend_from_slice(g)),
        Edit::SwapRanges((s1, e1), (s2, e2)) => common::edit(path, |b| {
            // [a][mid][c] -> [c][mid][a] (lengths may differ; the total does not).
            let (s1, e1, s2, e2) = (*s1 as usize, *e1 as usize, *s2 as usize, *e2 as usize);
            assert!(e1 <= s2);
            let mut out = b[..s1].to_vec();
            out.extend_from_slice(&b[s2..e2]);
            out.extend_from_slice(&b[e1..s2]);
            out.extend_from_slice(&b[s1..e1]);
            out.extend_from_slice(&b[e2..]);
            *b = out;
        }),
    }
}

fn unit_of(regions: &[Region], p: u64) -> (u64, u64) {
    regions
        .iter()
        .find(|r| r.start <= p && p < r.end)
        .map_or((0, p), |r| r.unit)
}

fn full() -> bool {
    std::env::var("ANNAL_MATRIX_FULL").is_ok_and(|v| v == "1")
}

const HEAD_SLOT_TORN: &str = "a head slot that fails its checks while the other is valid is what a crash while the \
                             writer wrote that slot leaves (spec 5.2): a warning naming the slot, and readers use the \
                             other slot";

fn cases_for(kind: Kind, file: &str, bytes: &[u8], rng: &mut Rng, extra_files: &[String]) -> Vec<Case> {
    let len = bytes.len() as u64;
    let regions = match kind {
        Kind::Sealed | Kind::Active => segment_regions(bytes),
        Kind::Index => blockfile_regions(bytes, 16),
        Kind::Table => blockfile_regions(bytes, 32),
        Kind::Head => head_regions(),
        Kind::Snapshot => snapshot_regions(bytes),
    };
    let mut cases = Vec::new();
    let mk = |damage, label: String, edit, expect| Case {
        kind,
        damage,
        file: file.to_owned(),
        label,
        edit,
        expect,
        successor: None,
        light: false,
    };
    // What damage inside [s, e) must be reported as.
    let expect_in = |s: u64, e: u64| -> Expect {
        match kind {
            // Damage to both slots is no crash: a problem.
            Kind::Head if s < 64 && e > 64 => Expect::Problem(vec![(0, 127)]),
            Kind::Head => Expect::Warning((s / 64 * 64, s / 64 * 64 + 63), HEAD_SLOT_TORN),
            _ => {
                let mut v = vec![(unit_of(&regions, s).0, e.max(s + 1) - 1)];
                if kind.is_derived() {
                    // The block CRC table entry of a block: either place.
                    v.push((s, e));
                }
                Expect::Problem(v)
            }
        }
    };

    // Bit flips: a sample of every kind of structure, or every byte.
    // (position, what, light)
    let mut positions: Vec<(u64, String, bool)> = Vec::new();
    if full() {
        for p in 0..len {
            let what = regions
                .iter()
                .find(|r| r.start <= p && p < r.end)
                .map_or("?".to_owned(), |r| r.what.clone());
            positions.push((p, what, false));
        }
    } else {
        let mut by_what: BTreeMap<&str, Vec<&Region>> = BTreeMap::new();
        for r in &regions {
            by_what.entry(&r.what).or_default().push(r);
        }
        let per = if kind.is_segment() { 1 } else { 2 };
        for (what, rs) in by_what {
            // Segments: every kind of structure over two runs (half of them,
            // picked by the seed, in each), to stay within the time budget.
            if kind.is_segment() && rng.below(2) == 0 {
                continue;
            }
            let mut rs = rs.clone();
            for _ in 0..per.min(rs.len()) {
                let r = rs.swap_remove(rng.below(rs.len() as u64) as usize);
                positions.push((r.start + rng.below(r.end - r.start), what.to_owned(), false));
            }
        }
        // Every byte of the body of the sealed segment's last checkpoint
        // (the one before its seal, spec 21.5), which readers step over and
        // only check verifies (issue 13, defect 3b).
        if kind == Kind::Sealed {
            let cp = regions
                .iter()
                .filter(|r| r.what.starts_with("checkpoint "))
                .map(|r| (r.start, r.end));
            let (s, e) = cp.fold((u64::MAX, 0), |(a, b), (s, e)| (a.min(s), b.max(e)));
            let last_cp: Vec<&Region> = regions
                .iter()
                .filter(|r| {
                    r.what.starts_with("checkpoint ") && !r.what.starts_with("checkpoint frame") && r.unit.1 == e
                })
                .collect();
            assert!(!last_cp.is_empty() && s < e, "the sealed segment holds a checkpoint");
            for r in last_cp {
                for p in r.start..r.end {
                    if !positions.iter().any(|x| x.0 == p) {
                        positions.push((p, r.what.clone(), true));
                    }
                }
            }
        }
        // Every byte of the head file (issue 13, defect 2).
        if kind == Kind::Head {
            for r in &regions {
                for p in r.start..r.end {
                    if !positions.iter().any(|x| x.0 == p) {
                        positions.push((p, r.what.clone(), true));
                    }
                }
            }
        }
    }
    for (p, what, light) in positions {
        let bits: Vec<u8> = if full() && len <= 4096 {
            (0..8).collect()
        } else {
            vec![rng.below(8) as u8]
        };
        for bit in bits {
            let r = regions.iter().find(|r| r.start <= p && p < r.end).expect("region");
            let mut expect = expect_in(p, p + 1);
            if let Expect::Problem(v) = &mut expect {
                v[0] = (r.unit.0, r.unit.1.max(r.unit.0 + 1) - 1);
                v.extend(r.alt);
            }
            let mut c = mk(
                Damage::BitFlip,
                format!("bit {bit} of byte {p} ({what})"),
                Edit::Flip(p, bit),
                expect,
            );
            c.light = light;
            cases.push(c);
        }
    }

    // Zeroed 4 KiB pages (a page already all zero is no damage: skipped).
    let mut s = 0;
    while s < len {
        let e = (s + 4096).min(len);
        if bytes[s as usize..e as usize].iter().any(|&b| b != 0) {
            cases.push(mk(
                Damage::ZeroPage,
                format!("bytes [{s}, {e}) zeroed"),
                Edit::Zero(s, e),
                expect_in(s, e),
            ));
        }
        s = e;
    }

    // Truncations.
    let mut cuts = vec![0, 1, 8, 64, 100, len / 2, len - 8, len - 1];
    if kind.is_segment() {
        let fr = common::frames(bytes);
        cuts.push(fr[fr.len() - 1].offset); // the last frame exactly
        cuts.push(fr[fr.len() / 2].offset); // a frame boundary in the middle
    }
    if kind.is_derived() {
        cuts.push(u64_at(bytes, bytes.len() - 32)); // the table and footer cut off
    }
    cuts.sort_unstable();
    cuts.dedup();
    for n in cuts.into_iter().filter(|&n| n < len) {
        let expect = match kind {
            // The head is created whole and written in place: no crash
            // changes its length.
            Kind::Head => Expect::Problem(vec![(n, n)]),
            // A truncated file: the cut structure (or the start of the next one).
            _ if n == 0 => Expect::Problem(vec![(0, 0)]),
            _ => Expect::Problem(vec![(unit_of(&regions, n - 1).0, n)]),
        };
        cases.push(mk(
            Damage::Truncate,
            format!("truncated to {n} of {len} bytes"),
            Edit::Truncate(n),
            expect,
        ));
    }

    // Appended garbage.
    for g in [8usize, 100, 4096] {
        let mut garbage = rng.bytes(g);
        if garbage.iter().all(|&b| b == 0) {
            garbage[0] = 1;
        }
        let expect = match kind {
            Kind::Active => Expect::Warning(
                (len, len),
                "bytes past the durable boundary of the active segment are a torn tail (spec 5.1, 6), removed \
                 by the next writer open",
            ),
            Kind::Head => Expect::Problem(vec![(len, len)]),
            // A block file is read from its footer, at the (new) end.
            Kind::Index | Kind::Table => Expect::Problem(vec![(0, len + g as u64)]),
            _ => Expect::Problem(vec![(len.min(unit_of(&regions, len - 1).0), len + g as u64)]),
        };
        cases.push(mk(
            Damage::Garbage,
            format!("{g} bytes of garbage appended"),
            Edit::Append(garbage),
            expect,
        ));
    }

    // Two records swapped.
    if kind.is_segment() {
        let mut recs: Vec<(u64, u64, u64)> = Vec::new(); // (frame start, rec start, rec end)
        for f in common::frames(bytes).iter().filter(|f| f.kind == 1) {
            let mut r = f.offset + 72;
            for _ in 0..f.record_count {
                let l = u32_at(bytes, r as usize) as u64;
                recs.push((f.offset, r, r + l));
                r += l;
            }
        }
        // Within one batch.
        if let Some(w) = recs
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].2 - w[0].1 == w[1].2 - w[1].1)
        {
            cases.push(mk(
                Damage::Swap,
                format!("records at {} and {} of one batch swapped", w[0].1, w[1].1),
                Edit::SwapRanges((w[0].1, w[0].2), (w[1].1, w[1].2)),
                Expect::Problem(vec![(w[0].0, w[1].2 - 1)]),
            ));
        }
        // Across two batches, records of the same length (frames keep their
        // lengths; positions and CRCs travel with the records).
        'outer: for (i, a) in recs.iter().enumerate() {
            for b in &recs[i + 1..] {
                if a.0 != b.0 && a.2 - a.1 == b.2 - b.1 {
                    cases.push(mk(
                        Damage::Swap,
                        format!("records at {} and {} of two batches swapped", a.1, b.1),
                        Edit::SwapRanges((a.1, a.2), (b.1, b.2)),
                        Expect::Problem(vec![(a.0, b.2 - 1)]),
                    ));
                    break 'outer;
                }
            }
        }
        // Two whole frames of the same length swapped.
        let fr = common::frames(bytes);
        'frames: for (i, a) in fr.iter().enumerate() {
            for b in &fr[i + 1..] {
                if a.len == b.len && a.kind == 1 && b.kind == 1 {
                    cases.push(mk(
                        Damage::Swap,
                        format!("batches at {} and {} swapped", a.offset, b.offset),
                        Edit::SwapRanges((a.offset, a.offset + a.len), (b.offset, b.offset + b.len)),
                        Expect::Problem(vec![(a.offset, b.offset + b.len - 1)]),
                    ));
                    break 'frames;
                }
            }
        }
    }
    if kind.is_derived() {
        let rows: Vec<&Region> = regions.iter().filter(|r| r.what == "section row").collect();
        if rows.len() >= 2 {
            let (a, b) = (rows[0], rows[rows.len() - 1]);
            cases.push(mk(
                Damage::Swap,
                format!("rows at {} and {} swapped", a.start, b.start),
                Edit::SwapRanges((a.start, a.end), (b.start, b.end)),
                Expect::Problem(vec![(a.unit.0, b.end - 1)]),
            ));
        }
    }
    if kind == Kind::Head {
        cases.push(mk(
            Damage::Swap,
            "the two slots swapped".into(),
            Edit::SwapRanges((0, 64), (64, 128)),
            Expect::Nothing("the current slot is the valid one with the larger sequence, wherever it lies (spec 5.2)"),
        ));
    }

    // Deleted.
    let expect = match kind {
        Kind::Head => Expect::Nothing(
            "the head file is optional: without it readers see every complete batch and recovery uses the frames \
             (spec 5.2); the next writer open writes a new one",
        ),
        Kind::Snapshot => Expect::Nothing(
            "snapshots are optional (spec 20): nothing records which exist; the aggregate is replayed from events",
        ),
        Kind::Table => Expect::Warning(
            (0, 0),
            "a crash after the first index but before the stream table's first write leaves none, and nothing \
             tells that state from a deleted table; it holds no event and the next writer open rebuilds it",
        ),
        _ => Expect::ProblemNaming,
    };
    cases.push(mk(Damage::Delete, "deleted".into(), Edit::Delete, expect));
    for f in extra_files {
        cases.push(Case {
            kind,
            damage: Damage::Delete,
            file: f.clone(),
            label: format!("{f} deleted"),
            edit: Edit::Delete,
            expect: Expect::ProblemNaming,
            successor: None,
            light: false,
        });
    }
    cases
}

// ---------------------------------------------------------------------------
// Running a case.

#[derive(Default, Clone, Copy)]
struct Tally2 {
    tried: u64,
    detected: u64,
    warned: u64,
    not_damage: u64,
}

fn names_file(f: &annal::Finding, dir: &Path, file: &str) -> bool {
    f.file == dir.join(file)
}

/// Records returned before the first error, the error, and whether opening
/// failed. Every record must equal the reference at its position.
fn check_records(got: &[Rec], reference: &[Rec], what: &str) {
    for r in got {
        let want = reference.get(r.position as usize);
        assert_eq!(Some(r), want, "{what}: a returned record differs from the reference");
    }
}

/// Read through `Reader`: Ok(records) if every read succeeded, Err(message)
/// if something failed (after checking what was returned).
fn read_reader(dir: &Path, r: &Reference, what: &str) -> Result<Vec<Rec>, String> {
    let reader = annal::Reader::open(dir).map_err(|e| e.to_string())?;
    let view = reader.view().map_err(|e| e.to_string())?;
    let (got, err) = common::read_until_err(&view, 0);
    check_records(&got, &r.recs, what);
    let mut failed = err.map(|e| e.to_string());
    for (name, want) in &r.streams {
        for item in view.read_stream(name, 0, Direction::Forward, u64::MAX) {
            match item {
                Ok(rec) => {
                    let rec = Rec::of(&rec);
                    assert_eq!(
                        want.get(rec.stream_version as usize),
                        Some(&rec),
                        "{what}: read_stream({name}) returned a record that differs from the reference"
                    );
                }
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                    break;
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(got),
    }
}

/// Open a writer and read everything; the log, if it opened.
fn read_log(dir: &Path, r: &Reference, what: &str) -> (Result<Vec<Rec>, String>, Option<Log>) {
    let log = match Log::open_with(dir, Options::default().format_version(2).create(false)) {
        Ok(l) => l,
        Err(e) => return (Err(e.to_string()), None),
    };
    let res = (|| {
        let view = log.view().map_err(|e| e.to_string())?;
        let (got, err) = common::read_until_err(&view, 0);
        check_records(&got, &r.recs, what);
        let mut failed = err.map(|e| e.to_string());
        for (name, want) in &r.streams {
            let mut n = 0;
            for item in view.read_stream(name, 0, Direction::Forward, u64::MAX) {
                match item {
                    Ok(rec) => {
                        let rec = Rec::of(&rec);
                        assert_eq!(
                            want.get(rec.stream_version as usize),
                            Some(&rec),
                            "{what}: read_stream({name}) through the writer returned a wrong record"
                        );
                        n += 1;
                    }
                    Err(e) => {
                        failed.get_or_insert(e.to_string());
                        break;
                    }
                }
            }
            if failed.is_none() && n != want.len() && got.len() == r.recs.len() {
                failed = Some(format!("read_stream({name}) returned {n} of {} events", want.len()));
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(got),
        }
    })();
    (res, Some(log))
}

fn checkpoint_body(label: &str) -> bool {
    [
        "(checkpoint public_key)",
        "(checkpoint signature)",
        "(checkpoint body_crc",
    ]
    .iter()
    .any(|w| label.contains(w))
}

fn run_case(r: &Reference, c: &Case, stats: &mut BTreeMap<(Kind, Damage), Tally2>, failures: &mut Vec<String>) {
    let copy = copy_all(r.dir.path());
    let dir = copy.path();
    let path = dir.join(&c.file);
    apply(&path, &c.edit);
    let what = format!("{} {} ({}): {}", c.kind.name(), c.file, c.damage.name(), c.label);
    let st = stats.entry((c.kind, c.damage)).or_default();
    st.tried += 1;

    // 1. check.
    let report: CheckReport = match annal::check(dir, CheckOptions::default().public_key(r.pk)) {
        Ok(rep) => rep,
        Err(e) => {
            failures.push(format!("{what}: check could not run: {e}"));
            return;
        }
    };
    let ok = match &c.expect {
        Expect::Problem(ranges) => {
            let hit = report.problems.iter().any(|f| {
                names_file(f, dir, &c.file) && ranges.iter().any(|&(lo, hi)| lo <= f.offset && f.offset <= hi)
            });
            if hit {
                st.detected += 1;
            } else {
                failures.push(format!(
                    "{what}: no problem naming the file in {ranges:?}; problems {:?} warnings {:?}",
                    report.problems.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                    report.warnings.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                ));
            }
            hit
        }
        Expect::ProblemNaming => {
            let name = Path::new(&c.file).file_name().map(|n| n.to_string_lossy().into_owned());
            // A deleted segment cannot be named by a finding on itself: the
            // gap is reported at the header of the segment after it.
            let hit = report.problems.iter().any(|f| {
                names_file(f, dir, &c.file)
                    || name.as_deref().is_some_and(|n| f.detail.contains(n))
                    || (c.kind.is_segment()
                        && c.successor.as_deref().is_some_and(|n| names_file(f, dir, n))
                        && f.offset < 128)
            });
            if hit {
                st.detected += 1;
            } else {
                failures.push(format!(
                    "{what}: no problem naming the file; problems {:?}",
                    report.problems.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                ));
            }
            hit
        }
        Expect::Warning((lo, hi), _) => {
            let hit = report.is_ok()
                && report
                    .warnings
                    .iter()
                    .any(|f| names_file(f, dir, &c.file) && *lo <= f.offset && f.offset <= *hi);
            if hit {
                st.warned += 1;
            } else {
                failures.push(format!(
                    "{what}: expected only a warning in [{lo}, {hi}]; problems {:?} warnings {:?}",
                    report.problems.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                    report.warnings.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                ));
            }
            hit
        }
        Expect::Nothing(_) => {
            st.not_damage += 1;
            if !report.is_ok() {
                failures.push(format!(
                    "{what}: not damage by the spec, yet problems {:?}",
                    report.problems.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                ));
            }
            report.is_ok()
        }
    };
    let _ = ok;
    // A finding points at the damaged bytes and only there (issue 13, defect
    // 3): no finding names another file, except one marked as a
    // consequence. (A deleted file cannot be named by a finding on itself.)
    if c.damage != Damage::Delete {
        let elsewhere: Vec<String> = report
            .problems
            .iter()
            .chain(&report.warnings)
            .filter(|f| !names_file(f, dir, &c.file) && !f.detail.starts_with("a consequence"))
            .map(|f| f.to_string())
            .collect();
        if !elsewhere.is_empty() {
            failures.push(format!(
                "{what}: findings in files other than the damaged one: {elsewhere:?}"
            ));
        }
    }

    // 2. Readers: never wrong data (asserted inside); damage is an error.
    let by_reader = read_reader(dir, r, &format!("{what} [Reader]"));
    let whole = |res: &Result<Vec<Rec>, String>| matches!(res, Ok(v) if v.len() == r.recs.len());
    match (c.kind, &c.expect) {
        // Readers skip checkpoint frames (spec 3.5); a sealed segment's
        // checkpoint body is not read by them (check verifies it): damage
        // there is an error or nothing, never wrong data.
        (k, _) if k.is_segment() && checkpoint_body(&c.label) => {
            if by_reader.is_ok() && !whole(&by_reader) {
                failures.push(format!("{what}: Reader returned a short log without an error"));
            }
        }
        (k, Expect::Problem(_) | Expect::ProblemNaming) if k.is_segment() => {
            if by_reader.is_ok() {
                failures.push(format!(
                    "{what}: Reader returned {} records and no error",
                    by_reader.as_ref().map_or(0, |v| v.len())
                ));
            }
        }
        _ => {
            if !whole(&by_reader) {
                failures.push(format!("{what}: Reader did not return the whole log: {by_reader:?}"));
            }
        }
    }

    if c.light {
        return;
    }
    // 3. A writer open: refuses segment damage or reads report it; derived
    // files are rebuilt; torn tails are cut.
    let (by_log, log) = read_log(dir, r, &format!("{what} [Log]"));
    match (c.kind, &c.expect) {
        (k, _) if k.is_segment() && checkpoint_body(&c.label) => {
            if by_log.is_ok() && !whole(&by_log) {
                failures.push(format!("{what}: the writer returned a short log without an error"));
            }
        }
        (k, Expect::Problem(_) | Expect::ProblemNaming) if k.is_segment() => {
            if by_log.is_ok() {
                failures.push(format!(
                    "{what}: Log::open and reads returned {} records and no error",
                    by_log.as_ref().map_or(0, |v| v.len())
                ));
            }
        }
        _ => {
            if !whole(&by_log) {
                failures.push(format!("{what}: the writer did not return the whole log: {by_log:?}"));
            }
        }
    }
    if let Some(log) = log {
        if c.kind == Kind::Snapshot {
            let repo = Repository::<Tally>::new(&log);
            match repo.load(TALLY) {
                Ok(l) => {
                    if l.state != r.tally {
                        failures.push(format!("{what}: the aggregate loaded a wrong state {:?}", l.state));
                    }
                    let newest_damaged = matches!(c.expect, Expect::Problem(_));
                    if newest_damaged && l.warnings.is_empty() {
                        failures.push(format!("{what}: the damaged snapshot was skipped without a warning"));
                    }
                }
                Err(e) => failures.push(format!("{what}: loading the aggregate failed: {e}")),
            }
        }
        if let Err(e) = log.close() {
            failures.push(format!("{what}: close failed: {e}"));
        }
        // Derived files (and the head) are rebuilt by the writer open.
        if c.kind.is_derived() {
            match annal::check(dir, CheckOptions::default().public_key(r.pk)) {
                Ok(rep) if rep.is_ok() => {}
                Ok(rep) if !c.kind.is_segment() || !matches!(c.expect, Expect::Problem(_) | Expect::ProblemNaming) => {
                    failures.push(format!(
                        "{what}: after a writer open the log is not clean: {:?}",
                        rep.problems.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                    ))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{what}: check after the writer open failed: {e}")),
            }
        }
    }
}

#[test]
fn corruption_matrix() {
    let seed = common::seed("corruption_matrix");
    let mut rng = Rng::new(seed);
    let r = build();
    let base = r.dir.path();
    let segs = common::segments(base);
    assert!(segs.len() >= 4, "several segments: {segs:?}");
    let sealed = common::file_name(&segs[1]);
    let active = common::file_name(&segs[segs.len() - 1]);
    let first = common::file_name(&segs[0]);
    let idx = sealed.replace(".seg", ".idx");
    let mut snaps: Vec<String> = fs::read_dir(base.join("snapshots"))
        .expect("snapshots folder")
        .map(|e| format!("snapshots/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    snaps.sort();
    assert!(snaps.len() >= 2, "a few snapshot files: {snaps:?}");
    // The newest snapshot of the tally (the one a load tries first).
    let snap = snaps.last().expect("a snapshot").clone();

    let mut cases = Vec::new();
    for kind in Kind::all() {
        let (file, extra): (String, Vec<String>) = match kind {
            Kind::Sealed => (sealed.clone(), vec![first.clone()]),
            Kind::Active => (active.clone(), vec![]),
            Kind::Index => (idx.clone(), vec![]),
            Kind::Table => (annal::STREAM_TABLE_FILE.to_owned(), vec![]),
            Kind::Head => (annal::HEAD_FILE.to_owned(), vec![]),
            Kind::Snapshot => (snap.clone(), vec![]),
        };
        let bytes = fs::read(base.join(&file)).expect("read reference file");
        if kind.is_segment() {
            // Checkpoints before every seal and at close (spec 21.5).
            assert!(
                common::frames(&bytes).iter().any(|f| f.kind == 3),
                "the {} holds a signed checkpoint",
                kind.name()
            );
        }
        cases.extend(cases_for(kind, &file, &bytes, &mut rng, &extra));
    }
    let seg_names: Vec<String> = segs.iter().map(|p| common::file_name(p)).collect();
    for c in cases.iter_mut().filter(|c| c.kind.is_segment()) {
        if let Some(i) = seg_names.iter().position(|n| *n == c.file) {
            c.successor = seg_names.get(i + 1).cloned();
        }
    }

    let start = std::time::Instant::now();
    let mut stats = BTreeMap::new();
    let mut failures = Vec::new();
    println!("{} cases", cases.len());
    for (i, c) in cases.iter().enumerate() {
        run_case(&r, c, &mut stats, &mut failures);
        if i % 100 == 99 {
            println!("  {} cases in {:.1?}", i + 1, start.elapsed());
        }
    }

    println!(
        "\ncorruption matrix: {} cases in {:.1?} (seed {seed})",
        cases.len(),
        start.elapsed()
    );
    println!(
        "{:<16} {:<18} {:>6} {:>9} {:>7} {:>11}",
        "file", "damage", "tried", "detected", "warned", "not damage"
    );
    for ((k, d), s) in &stats {
        println!(
            "{:<16} {:<18} {:>6} {:>9} {:>7} {:>11}",
            k.name(),
            d.name(),
            s.tried,
            s.detected,
            s.warned,
            s.not_damage
        );
    }
    let mut reasons: BTreeMap<String, &str> = BTreeMap::new();
    for c in &cases {
        match &c.expect {
            Expect::Warning(_, why) | Expect::Nothing(why) => {
                reasons.insert(format!("{} / {}", c.kind.name(), c.damage.name()), why);
            }
            _ => {}
        }
    }
    println!("exceptions (asserted as classified):");
    for (k, why) in reasons {
        println!("  {k}: {why}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (see above)",
        failures.len(),
        cases.len()
    );
}
