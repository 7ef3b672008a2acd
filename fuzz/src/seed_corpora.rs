//! Write seed corpora for every target from the golden vectors in
//! `spec/vectors/{v1,v2}`: `cargo run --release --bin seed_corpora` (from
//! `fuzz/`). Writes `corpus/<target>/` (ignored by git).
use std::path::{Path, PathBuf};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A v2 log with signed checkpoint frames, sealed segments, indexes and a
/// stream table (the golden vectors have no checkpoints).
fn signed_log(dir: &Path) {
    use annal::{EventData, ExpectedVersion, Log, Options, SigningKey};
    let _ = std::fs::remove_dir_all(dir);
    let opts = Options::default()
        .segment_size(1024)
        .signing_key(SigningKey::from_bytes([7; 32]))
        .checkpoint_every(3);
    let log = Log::open_with(dir, opts).expect("open");
    for i in 0..12u64 {
        let ev = EventData::new("Placed", format!("{{\"n\":{i}}}").into_bytes()).with_metadata(b"m".as_slice());
        log.append(&format!("order-{}", i % 3), ExpectedVersion::Any, &[ev])
            .expect("append");
    }
    log.close().expect("close");
}

fn main() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let signed = std::env::temp_dir().join(format!("annal-seed-{}", std::process::id()));
    signed_log(&signed);
    let mut cases: Vec<(String, PathBuf)> = vec![("signed".into(), signed.clone())];
    for version in ["v1", "v2"] {
        for case in files(&vectors.join(version)) {
            let tag = format!("{version}-{}", case.file_name().unwrap_or_default().to_string_lossy());
            cases.push((tag, case));
        }
    }
    let mut n = 0;
    {
        for (tag, case) in cases {
            if !case.is_dir() {
                continue;
            }
            let joined = annal::fuzzing::join_dir(&case);
            if !joined.is_empty() {
                write("open_dir", &tag, &joined);
                n += 1;
            }
            for f in files(&case).into_iter().chain(files(&case.join("snapshots"))) {
                let fname = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let Ok(bytes) = std::fs::read(&f) else { continue };
                let name = format!("{tag}-{fname}");
                let target = match f.extension().and_then(|e| e.to_str()) {
                    Some("seg") => "segment",
                    Some("snap") => "snapshot",
                    Some("idx") => {
                        let seg = std::fs::read(f.with_extension("seg")).unwrap_or_default();
                        let mut input = vec![3u8];
                        input.extend_from_slice(&(seg.len().min(u16::MAX as usize) as u16).to_le_bytes());
                        input.extend_from_slice(&seg[..seg.len().min(u16::MAX as usize)]);
                        input.extend_from_slice(&bytes);
                        write("index", &format!("{name}-with-seg"), &input);
                        let mut alone = vec![0u8];
                        alone.extend_from_slice(&bytes);
                        write("index", &name, &alone);
                        n += 2;
                        continue;
                    }
                    _ if fname == annal::HEAD_FILE => "head",
                    _ if fname == annal::STREAM_TABLE_FILE => "stream_table",
                    _ => continue,
                };
                write(target, &name, &bytes);
                n += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&signed);
    println!("wrote {n} seeds under corpus/");
}
