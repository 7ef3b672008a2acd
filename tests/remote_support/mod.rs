//! What the remote tests share: logs of small segments, the stores (in
//! memory, and the SeaweedFS that `scripts/seaweedfs.sh` starts for the
//! test process), and the checks of a restored or replicated copy.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use annal::remote::{RemoteLog, RestoreTo, restore};
use annal::{CheckOptions, Durability, EventData, ExpectedVersion, Log, Options, Reader};
use object_store::ObjectStore;
use object_store::memory::InMemory;

/// `(position, stream, version, payload)` of every event of the log in `dir`.
pub fn events(dir: &Path) -> Vec<(u64, String, u64, Vec<u8>)> {
    view_events(&Reader::open(dir).unwrap().view().unwrap())
}

/// `(position, stream, version, payload)` of every event of `view`.
pub fn view_events(view: &annal::LogView) -> Vec<(u64, String, u64, Vec<u8>)> {
    view.read_all(0)
        .map(|r| {
            let r = r.unwrap();
            (
                r.position(),
                r.stream().to_owned(),
                r.stream_version(),
                r.payload().to_vec(),
            )
        })
        .collect()
}

pub fn clean(dir: &Path) {
    let report = annal::check(dir, CheckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A log of small segments: `rounds` rounds of batches of 1 to 4 events
/// over 12 streams, durable (`Fsync`), so several sealed segments and an
/// active one.
pub fn append(log: &Log, from: u64, batches: u64) {
    for i in from..from + batches {
        let n = 1 + i % 4;
        let evs: Vec<EventData> = (0..n)
            .map(|k| EventData::new("E", format!("batch {i} event {k} {}", "x".repeat(60))))
            .collect();
        log.append(&format!("s-{}", i % 12), ExpectedVersion::Any, &evs)
            .unwrap();
    }
}

pub fn log_in(dir: &Path) -> Log {
    Options::default()
        .segment_size(16 << 10)
        .durability(Durability::Fsync)
        .open(dir)
        .unwrap()
}

/// A log of `batches` batches (see [`append`]) in a new temporary folder:
/// `(folder, log directory, log)`.
pub fn source(batches: u64) -> (tempfile::TempDir, std::path::PathBuf, Log) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let log = log_in(&src);
    append(&log, 0, batches);
    (tmp, src, log)
}

/// Restore the newest manifest of `remote` into `dst`: it reads as the log
/// in `src`, event for event, and `check` is clean.
pub fn restores_whole(rt: &tokio::runtime::Runtime, remote: &RemoteLog, src: &Path, dst: &Path) {
    rt.block_on(restore(remote, dst, RestoreTo::Latest)).unwrap();
    assert_eq!(events(dst), events(src));
    clean(dst);
}

pub fn memory() -> RemoteLog {
    RemoteLog::from_store(Arc::new(InMemory::new()), "logs/one", "memory://logs/one")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------------ SeaweedFS

/// The S3 settings of the SeaweedFS started for this test process.
pub fn seaweed() -> &'static Vec<(String, String)> {
    static SERVER: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("annal-weed-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seaweedfs.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .expect("run scripts/seaweedfs.sh");
        assert!(
            out.status.success(),
            "scripts/seaweedfs.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .filter(|(k, _)| k.starts_with("aws_"))
            .collect()
    })
}

pub fn s3(prefix: &str) -> RemoteLog {
    let unique = format!("{prefix}-{}-{}", std::process::id(), rand_suffix());
    RemoteLog::open_with_options(&format!("s3://annal/{unique}"), seaweed().iter().cloned()).unwrap()
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

/// The raw S3 store of the SeaweedFS, for conditional puts.
pub fn s3_store() -> Arc<dyn ObjectStore> {
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("annal")
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
    for (k, v) in seaweed() {
        b = b.with_config(k.parse().unwrap(), v);
    }
    Arc::new(b.build().unwrap())
}
