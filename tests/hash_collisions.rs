//! Hash collisions never mix streams (spec 19): with the hidden test knob
//! `stream_hash_mask`, index files and the stream table store narrowed hashes
//! (mask 0: every stream, category and event type shares one hash; mask 0x1:
//! about half do), so every lookup goes through the "compare the full name of
//! every row with that hash" path. Reads per stream, per category and per
//! event type must still be exact, and expected-version checks must use the
//! right stream, after reopens too (when lookups go through the index files
//! and the stream table).

mod model;

use std::path::Path;

use annal::{Direction, ExpectedVersion, Log, Options, Reader, STREAM_TABLE_FILE};
use model::{
    Model, NewEv, Rng, append, check_reader, check_view, files_with_ext, probe_expected, run_workload, workload,
};
use proptest::prelude::*;

fn masked(mask: u64) -> impl Fn(u64) -> Options {
    move |size| Options::default().segment_size(size).stream_hash_mask(mask)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn all_streams_collide(w in workload(120)) {
        run_workload(&w, &masked(0), "mask 0");
    }

    #[test]
    fn half_the_streams_collide(w in workload(120)) {
        run_workload(&w, &masked(0x1), "mask 0x1");
    }
}

/// The `hash_mask` fields of every index file and of the stream table.
fn stored_masks(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = files_with_ext(dir, "idx")
        .iter()
        .map(|p| {
            let b = std::fs::read(p).expect("read idx");
            u64::from_le_bytes(b[32..40].try_into().expect("8 bytes"))
        })
        .collect();
    let t = std::fs::read(dir.join(STREAM_TABLE_FILE)).expect("read stream table");
    v.push(u64::from_le_bytes(t[24..32].try_into().expect("8 bytes")));
    v
}

fn ev(ty: &str, tag: u64) -> Vec<NewEv> {
    vec![NewEv::new(ty, tag.to_le_bytes().repeat(1 + (tag % 9) as usize))]
}

/// Two colliding streams at different versions, with names that are
/// prefixes of each other, spread over many sealed segments.
fn colliding_streams(mask: u64) {
    let dir = model::scratch();
    let opts = || Options::default().segment_size(2048).stream_hash_mask(mask);
    let names: Vec<String> = ["acct-1", "acct-10", "acct-1-0", "acct", "acctx-1", "ledger", "a", "b"]
        .map(String::from)
        .to_vec();
    let mut m = Model::default();
    let mut rng = Rng::new(mask);
    let log = Log::open_with(dir.path(), opts()).expect("open");
    let ctx = format!("mask {mask:#x}");
    // "acct-1" ends at version 40, "acct-10" at 12, the others somewhere else.
    for i in 0..120u64 {
        let s = match i % 10 {
            0..=2 => "acct-1",
            3 if i < 40 => "acct-10",
            4 => "acct-1-0",
            5 => "acct",
            6 => "acctx-1",
            7 => "ledger",
            8 => "a",
            _ => "b",
        };
        let s = if i % 10 == 3 && i >= 40 { "acct-1" } else { s };
        let ty = if i % 2 == 0 { "Opened" } else { "Opened2" };
        let expected = m.version(s).map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        assert!(append(&log, &mut m, s, expected, &ev(ty, i), &ctx));
    }
    let v1 = m.version("acct-1").expect("acct-1");
    let v10 = m.version("acct-10").expect("acct-10");
    assert_ne!(v1, v10);
    log.close().expect("close");
    assert!(
        stored_masks(dir.path()).iter().all(|&x| x == mask),
        "{ctx}: the knob must narrow every stored hash"
    );
    assert!(
        files_with_ext(dir.path(), "idx").len() >= 3,
        "{ctx}: several sealed segments"
    );

    // Straight after a reopen: the versions come from the stream table.
    let log = Log::open_with(dir.path(), opts()).expect("reopen");
    let cross = [
        ("acct-10", ExpectedVersion::Exact(v1)),
        ("acct-1", ExpectedVersion::Exact(v10)),
        ("acct-1-0", ExpectedVersion::Exact(v1)),
        ("acct-2", ExpectedVersion::StreamExists),
        ("acct-2", ExpectedVersion::Exact(v10)),
        ("acct-10", ExpectedVersion::NoStream),
        ("acct-1", ExpectedVersion::NoStream),
    ];
    for (s, e) in cross {
        assert!(!append(
            &log,
            &mut m,
            s,
            e,
            &ev("X", 1),
            &format!("{ctx} cross {s} {e:?}")
        ));
    }
    assert!(append(
        &log,
        &mut m,
        "acct-10",
        ExpectedVersion::Exact(v10),
        &ev("Y", 2),
        &ctx
    ));
    assert!(append(
        &log,
        &mut m,
        "acct-1",
        ExpectedVersion::Exact(v1),
        &ev("Y", 3),
        &ctx
    ));
    assert!(append(
        &log,
        &mut m,
        "acct-2",
        ExpectedVersion::NoStream,
        &ev("Y", 4),
        &ctx
    ));
    let view = log.view().expect("view");
    for s in ["acct-1", "acct-10", "acct-2"] {
        let got: Vec<String> = view
            .read_stream(s, 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| r.stream().to_owned()))
            .collect::<annal::Result<_>>()
            .expect("read");
        assert!(got.iter().all(|g| g == s), "{ctx}: {s} read {got:?}");
        assert_eq!(got.len() as u64, m.version(s).expect("exists") + 1);
    }
    check_view(&view, &m, &names, &mut rng, &ctx);
    probe_expected(&log, &mut m, &names, &mut rng, &ctx);
    drop(view);
    log.close().expect("close");
    let dmg = check_reader(dir.path(), &m, &names, &mut rng, &ctx);
    assert!(dmg.is_empty(), "{dmg:?}");

    // Rebuilt derived files use the mask too and still never mix streams.
    std::fs::remove_file(dir.path().join(STREAM_TABLE_FILE)).expect("remove table");
    let idx = files_with_ext(dir.path(), "idx");
    std::fs::remove_file(&idx[idx.len() / 2]).expect("remove idx");
    let log = Log::open_with(dir.path(), opts()).expect("reopen after removing derived files");
    assert!(log.recovery().rebuilt_stream_table, "{ctx}");
    assert_eq!(
        log.recovery().rebuilt_indexes,
        vec![idx[idx.len() / 2].clone()],
        "{ctx}"
    );
    assert!(
        stored_masks(dir.path()).iter().all(|&x| x == mask),
        "{ctx}: rebuilt files"
    );
    probe_expected(&log, &mut m, &names, &mut rng, &format!("{ctx} rebuilt"));
    let view = log.view().expect("view");
    check_view(&view, &m, &names, &mut rng, &format!("{ctx} rebuilt"));
    drop(view);
    log.close().expect("close");
    let dmg = check_reader(dir.path(), &m, &names, &mut rng, &format!("{ctx} rebuilt"));
    assert!(dmg.is_empty(), "{dmg:?}");
}

#[test]
fn colliding_streams_mask_0() {
    colliding_streams(0);
}

#[test]
fn colliding_streams_mask_1() {
    colliding_streams(0x1);
}

/// Each file records the mask it was written with (spec 17.1, 18), so a log
/// written with one mask and reopened with another must still find every
/// stream: old files keep their mask, new ones get the new mask, and the
/// stream table merged from both must be searchable with one.
#[test]
fn mask_changes_across_reopens() {
    let dir = model::scratch();
    let names: Vec<String> = (0..10).map(|i| format!("s{}-{i}", i % 3)).collect();
    let mut m = Model::default();
    let mut rng = Rng::new(99);
    for (round, mask) in [0u64, u64::MAX, 0x1, 0, u64::MAX].into_iter().enumerate() {
        let ctx = format!("round {round} mask {mask:#x}");
        let log =
            Log::open_with(dir.path(), Options::default().segment_size(2048).stream_hash_mask(mask)).expect("open");
        // Right after opening: versions of streams written under other masks.
        probe_expected(&log, &mut m, &names, &mut rng, &format!("{ctx} after open"));
        for i in 0..40u64 {
            let s = &names[((i * 7 + round as u64) % names.len() as u64) as usize];
            let expected = m.version(s).map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            assert!(append(&log, &mut m, s, expected, &ev("T", i), &ctx));
        }
        probe_expected(&log, &mut m, &names, &mut rng, &ctx);
        let view = log.view().expect("view");
        check_view(&view, &m, &names, &mut rng, &ctx);
        drop(view);
        log.close().expect("close");
        let reader = Reader::open(dir.path()).expect("reader");
        let view = reader.view().expect("view");
        check_view(&view, &m, &names, &mut rng, &format!("{ctx} reader"));
    }
}

/// A reader follows back pointers comparing only the rows' hashes (a cold
/// read then reads one page of each index, not two): a back pointer that
/// leads to another stream's row with the same hash (here an index file
/// rewritten with a well-formed but wrong `prev_row`, its block CRCs fixed)
/// must still give exactly the stream's own events, both ways, and the
/// stream's own row is found by name.
#[test]
fn a_back_pointer_to_a_colliding_row_never_mixes_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), masked(0)(64 << 10)).expect("open");
    for i in 0..200u64 {
        for s in ["a-1", "b-1"] {
            log.append(
                s,
                ExpectedVersion::Any,
                &[annal::EventData::new(
                    "E",
                    format!("{s}:{i}:{}", "x".repeat(500)).into_bytes(),
                )],
            )
            .expect("append");
        }
    }
    log.close().expect("close");
    let idx = files_with_ext(dir.path(), "idx");
    assert!(idx.len() >= 3, "{} index files", idx.len());
    // In the newest sealed segment's index, point stream b-1's back pointer
    // at row 0 of the segment before, which (rows sorted by name under mask
    // 0) is a-1's.
    let newest = idx.last().expect("an index");
    let mut b = std::fs::read(newest).expect("read idx");
    let (header, row) = (128usize, 48usize);
    // Row 1 is b-1's (a-1 sorts first); its prev_row is at byte 36 of the row.
    let prev_row = header + row + 36;
    assert_eq!(
        u32::from_le_bytes(b[prev_row..prev_row + 4].try_into().unwrap()),
        1,
        "b-1 is row 1 before"
    );
    b[prev_row..prev_row + 4].copy_from_slice(&0u32.to_le_bytes());
    annal::fuzzing::fix_blockfile(&mut b);
    std::fs::write(newest, &b).expect("write idx");

    let r = Reader::open(dir.path()).expect("reader");
    let view = r.view().expect("view");
    for dir_ in [Direction::Forward, Direction::Backward] {
        let got: Vec<String> = view
            .read_stream(
                "b-1",
                if dir_ == Direction::Forward { 0 } else { u64::MAX },
                dir_,
                u64::MAX,
            )
            .map(|r| r.map(|r| String::from_utf8(r.payload().to_vec()).unwrap()))
            .collect::<annal::Result<_>>()
            .expect("read b-1");
        let mut want: Vec<String> = (0..200).map(|i| format!("b-1:{i}:{}", "x".repeat(500))).collect();
        if dir_ == Direction::Backward {
            want.reverse();
        }
        assert_eq!(got, want, "{dir_:?}");
    }
}
