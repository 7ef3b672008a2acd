//! Readers on files of any length and any kind (issue 13, defects 5, 6, 23):
//! a file cut to any length is an error naming it, never a panic; a failure
//! to open or map a file is `Error::Io`, never corruption, and does not make
//! the writer rewrite anything; a frame claiming more than a reader accepts is
//! refused before anything is allocated or read.

mod common;

use std::fs;
use std::path::Path;

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use common::{frames, fresh_copy, read_all, segments};

/// A cleanly closed log of three small segments, with index files and a
/// stream table.
fn build() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), Options::default().segment_size(1024).format_version(2)).expect("open");
    for i in 0..24u64 {
        let events = [EventData::new("E", common::payload(i, 60))];
        log.append(&format!("s-{}", i % 4), ExpectedVersion::Any, &events)
            .expect("append");
    }
    log.close().expect("close");
    assert!(segments(dir.path()).len() >= 3, "{:?}", common::listing(dir.path()));
    dir
}

/// Every read a reader offers, run to completion; an error must name a file
/// inside the log directory.
fn read_everything(dir: &Path, label: &str) {
    let check = |e: Error| match &e {
        Error::Corrupt { path, .. } | Error::Io { path, .. } => {
            assert!(path.starts_with(dir), "{label}: error names {}: {e}", path.display())
        }
        Error::NotALog { .. } | Error::UnsupportedVersion { .. } => {}
        other => panic!("{label}: unexpected error {other}"),
    };
    let reader = match Reader::open(dir) {
        Ok(r) => r,
        Err(e) => return check(e),
    };
    let view = match reader.view() {
        Ok(v) => v,
        Err(e) => return check(e),
    };
    if let Err(e) = read_all(&view, 0) {
        check(e);
    }
    for s in ["s-0", "s-3", "none"] {
        for d in [Direction::Forward, Direction::Backward] {
            for r in view.read_stream(s, 0, d, u64::MAX) {
                if let Err(e) = r {
                    check(e);
                    break;
                }
            }
        }
    }
}

#[test]
fn files_cut_to_every_length_up_to_300_bytes_never_panic() {
    let log = build();
    let segs = segments(log.path());
    let names: Vec<String> = [
        common::file_name(&segs[0]),
        common::file_name(&segs[1]),
        common::file_name(segs.last().expect("segment")),
        common::file_name(&segs[0].with_extension("idx")),
        "annal.head".to_owned(),
        "annal.streams".to_owned(),
    ]
    .into();
    for name in &names {
        let full = fs::read(log.path().join(name)).expect("read");
        for len in 0..=300usize.min(full.len()) {
            let dir = fresh_copy(log.path());
            fs::write(dir.path().join(name), &full[..len]).expect("cut");
            read_everything(dir.path(), &format!("{name} cut to {len} bytes"));
        }
    }
}

#[test]
fn a_sealed_segment_shorter_than_a_header_and_a_seal_is_corrupt() {
    let log = build();
    let dir = fresh_copy(log.path());
    let first = segments(dir.path())[0].clone();
    let full = fs::read(&first).expect("read");
    for len in [128usize, 130, 199] {
        fs::write(&first, &full[..len]).expect("cut");
        match Reader::open(dir.path()).expect("reader").view() {
            Err(Error::Corrupt { path, offset, detail }) => {
                assert_eq!(path, first, "{len}: {detail}");
                assert!(offset <= len as u64, "{len}: {offset}: {detail}");
            }
            other => panic!("{len}: expected Error::Corrupt, got {other:?}"),
        }
    }
}

/// A directory or FIFO under an index file's name is damage of that derived
/// file (it must be a regular file): never waited on, read around through
/// the index rebuilt from the segment, and reported. (An operating-system
/// failure such as `EMFILE` is `Error::Io` instead: `io::not_a_regular_file`
/// tells them apart, unit-tested in `io.rs`.)
#[test]
fn a_special_file_in_an_index_place_is_damage_read_around() {
    let log = build();
    let want: Vec<u64> = {
        let reader = Reader::open(log.path()).expect("reader");
        let view = reader.view().expect("view");
        view.read_stream("s-0", 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| r.position()))
            .collect::<annal::Result<_>>()
            .expect("intact read")
    };
    assert!(!want.is_empty());
    for kind in ["directory", "fifo"] {
        let dir = fresh_copy(log.path());
        let idx = segments(dir.path())[0].with_extension("idx");
        fs::remove_file(&idx).expect("remove idx");
        match kind {
            "directory" => fs::create_dir(&idx).expect("mkdir"),
            _ => {
                let st = std::process::Command::new("mkfifo")
                    .arg(&idx)
                    .status()
                    .expect("run mkfifo");
                assert!(st.success(), "mkfifo");
            }
        }
        let reader = Reader::open(dir.path()).expect("reader");
        let view = reader.view().expect("view");
        let got: Vec<u64> = view
            .read_stream("s-0", 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| r.position()))
            .collect::<annal::Result<_>>()
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(got, want, "{kind}");
        let damage = view.index_damage();
        assert!(
            damage.iter().any(|d| d.contains(&*idx.to_string_lossy())),
            "{kind}: {damage:?}"
        );
    }
}

/// A frame header claiming 4 GiB in a sparse file: refused before any
/// allocation or read of the frame, with its offset.
#[test]
fn a_frame_claiming_4_gib_is_refused_before_any_allocation() {
    let dir = common::scratch();
    let log = Log::open_with(
        dir.path(),
        Options::default().durability(Durability::Fsync).format_version(2),
    )
    .expect("open");
    for i in 0..6u64 {
        log.append(
            "s",
            ExpectedVersion::Any,
            &[EventData::new("E", common::payload(i, 30))],
        )
        .expect("append");
    }
    log.close().expect("close");
    let seg = segments(dir.path()).pop().expect("segment");
    let bytes = fs::read(&seg).expect("read");
    let fr = frames(&bytes);
    let victim = fr[3];
    let claimed: u64 = 4 << 30;
    common::edit(&seg, |b| {
        let o = victim.offset as usize;
        b[o + 8..o + 16].copy_from_slice(&claimed.to_le_bytes());
        common::fix_frame_header_crc(b, o);
    });
    // Sparse: the file claims the length, the disk holds 8 KB.
    let f = fs::OpenOptions::new().write(true).open(&seg).expect("open");
    f.set_len(victim.offset + claimed + 4096).expect("set_len");
    drop(f);
    // With the index checkpoint of the segment, the frame is not walked when
    // the view is taken: a read of it refuses it, with the same offset.
    let view = Reader::open(dir.path()).expect("reader").view().expect("view");
    match common::read_until_err(&view, 0).1 {
        Some(Error::Corrupt { path, offset, detail }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, victim.offset + 8, "{detail}");
        }
        other => panic!("expected Error::Corrupt from the read, got {other:?}"),
    }
    drop(view);
    // Without it, the walk of the active segment refuses it.
    common::remove_checkpoints(dir.path());
    match Reader::open(dir.path()).expect("reader").view() {
        Err(Error::Corrupt { path, offset, detail }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, victim.offset + 8, "{detail}");
            // The refusal comes from the length check that precedes the
            // buffer's allocation and the frame's read.
            assert!(detail.contains("at most 1073741824, found"), "{detail}");
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// A segment cut below the head's durable end, then read: a corrupt error,
/// not a panic, naming the segment (the file shrank after the writer wrote
/// the head).
#[test]
fn the_active_segment_cut_below_the_head_is_corrupt() {
    let log = build();
    let dir = fresh_copy(log.path());
    let last = segments(dir.path()).pop().expect("segment");
    let len = common::file_len(&last);
    let f = fs::OpenOptions::new().write(true).open(&last).expect("open");
    f.set_len(len - 8).expect("cut");
    drop(f);
    match Reader::open(dir.path()).expect("reader").view() {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, last),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}
