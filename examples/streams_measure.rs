//! Measurements of stream reads and open time on a large interleaved log.
//!
//! Builds a log of EVENTS events (256-byte payloads) spread over STREAMS
//! streams `order-{i}`: appends of 1 to 5 events (seeded), round-robin over the
//! streams, so every segment holds nearly every stream. Then it measures:
//!
//! * (a) `Log::open` time (median of 5 opens, each followed by `close`) of this
//!   log and of a 1M-event log over the same streams;
//! * (b) resident memory (`VmRSS`, with its `RssAnon` and `RssFile` parts, from
//!   `/proc/self/status`) of a fresh process before and after `Log::open`, per
//!   stream;
//! * (c) full reads of 1000 random streams (`read_stream` forward from version
//!   0): median and p99 microseconds per read, events per read;
//! * (d) the same reads in SQLite holding the same events (built from the annal
//!   log in transactions of 10,000 rows; WAL; `UNIQUE(stream, version)`).
//!
//! Run: `cargo run --release --example streams_measure -- [EVENTS] [STREAMS] [DIR]`
//! (defaults 10,000,000 and 100,000; DIR defaults to a fresh directory under the
//! system temp dir, removed at the end). Needs about 8 GB of disk for the
//! defaults.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use annal::{Direction, EventData, ExpectedVersion, Log, LogView};
use rusqlite::Connection;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;
/// Per-read durations and `(events, payload bytes)` per read.
type Timed = (Vec<Duration>, Vec<(u64, u64)>);

const PAYLOAD: usize = 256;
const MAX_BATCH: u64 = 5;
const READS: usize = 1000;
const OPENS: usize = 5;
const SMALL_EVENTS: u64 = 1_000_000;

/// splitmix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

fn arg_u64(i: usize, default: u64) -> BoxResult<u64> {
    match std::env::args().nth(i) {
        Some(s) => Ok(s.replace('_', "").parse()?),
        None => Ok(default),
    }
}

fn names(streams: u64) -> Vec<String> {
    (0..streams).map(|i| format!("order-{i}")).collect()
}

/// Append `events` events round-robin over `names` in batches of 1..=5.
/// Returns the number of appends.
fn build_log(dir: &Path, events: u64, names: &[String], seed: u64) -> BoxResult<u64> {
    let payload = vec![b'x'; PAYLOAD];
    let batch: Vec<EventData<'_>> = (0..MAX_BATCH)
        .map(|_| EventData::new("ItemAdded", payload.as_slice()))
        .collect();
    let log = Log::open(dir)?;
    let mut rng = Rng(seed);
    let (mut written, mut appends, mut s) = (0u64, 0u64, 0usize);
    while written < events {
        let k = (1 + rng.below(MAX_BATCH)).min(events - written);
        log.append(&names[s], ExpectedVersion::Any, &batch[..k as usize])?;
        written += k;
        appends += 1;
        s = (s + 1) % names.len();
    }
    log.close()?;
    Ok(appends)
}

/// The same events in SQLite, read from the annal log, 10,000 rows per
/// transaction. Returns the database size in bytes.
fn build_sqlite(path: &Path, log_dir: &Path) -> BoxResult<u64> {
    let mut db = Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -262144;
         CREATE TABLE events (
             position INTEGER PRIMARY KEY,
             stream TEXT NOT NULL,
             version INTEGER NOT NULL,
             type TEXT NOT NULL,
             ts INTEGER NOT NULL,
             data BLOB NOT NULL,
             metadata BLOB NOT NULL,
             UNIQUE (stream, version)
         );",
    )?;
    let log = Log::open(log_dir)?;
    let view = log.view()?;
    let mut recs = view.read_all(0).peekable();
    while recs.peek().is_some() {
        let tx = db.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (position, stream, version, type, ts, data, metadata)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in recs.by_ref().take(10_000) {
                let r = r?;
                ins.execute(rusqlite::params![
                    r.position() as i64,
                    r.stream(),
                    r.stream_version() as i64,
                    r.event_type(),
                    r.timestamp() as i64,
                    r.payload(),
                    r.metadata(),
                ])?;
            }
        }
        tx.commit()?;
    }
    drop(view);
    log.close()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    drop(db);
    Ok(std::fs::metadata(path)?.len())
}

fn dir_bytes(dir: &Path) -> BoxResult<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

/// `(segments, active segment bytes)` of a closed log.
fn layout(dir: &Path) -> BoxResult<(usize, u64)> {
    let log = Log::open(dir)?;
    let view = log.view()?;
    let r = (
        view.segment_count(),
        view.segment_bytes()
            .last()
            .map_or(0, |b| b.map_or(0, |b| b.len() as u64)),
    );
    drop(view);
    log.close()?;
    Ok(r)
}

fn median(d: &mut [Duration]) -> Duration {
    d.sort_unstable();
    d[d.len() / 2]
}

/// Median, p99 and max of per-read times in microseconds.
fn summary(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort_unstable();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let p99 = d[((d.len() * 99).div_ceil(100)).saturating_sub(1)];
    (us(d[d.len() / 2]), us(p99), us(d[d.len() - 1]))
}

/// Open + close `OPENS` times: median, min and max.
fn open_times(dir: &Path) -> BoxResult<(Duration, Duration, Duration)> {
    let mut t = Vec::with_capacity(OPENS);
    for _ in 0..OPENS {
        let start = Instant::now();
        let log = Log::open(dir)?;
        std::hint::black_box(log.next_position());
        log.close()?;
        t.push(start.elapsed());
    }
    let m = median(&mut t);
    Ok((m, t[0], t[t.len() - 1]))
}

/// `(VmRSS, RssAnon, RssFile)` of this process in bytes.
fn rss() -> BoxResult<[u64; 3]> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mut out = [0u64; 3];
    for line in status.lines() {
        let slot = match line.split(':').next() {
            Some("VmRSS") => 0,
            Some("RssAnon") => 1,
            Some("RssFile") => 2,
            _ => continue,
        };
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or("malformed /proc/self/status")?
            .parse()?;
        out[slot] = kb * 1024;
    }
    Ok(out)
}

/// Child mode: RSS before and after `Log::open` in a fresh process, printed as
/// six numbers (before, after) × (VmRSS, RssAnon, RssFile).
fn rss_child(dir: &Path) -> BoxResult<()> {
    let before = rss()?;
    let log = Log::open(dir)?;
    let after = rss()?;
    std::hint::black_box(log.next_position());
    println!(
        "{} {} {} {} {} {}",
        before[0], before[1], before[2], after[0], after[1], after[2]
    );
    log.close()?;
    Ok(())
}

/// `[before, after]` × `[VmRSS, RssAnon, RssFile]`, measured in a child process.
fn rss_of_open(dir: &Path) -> BoxResult<[[u64; 3]; 2]> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--rss-child")
        .arg(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!("rss child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: Vec<u64> = String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    if v.len() != 6 {
        return Err("rss child printed an unexpected line".into());
    }
    Ok([[v[0], v[1], v[2]], [v[3], v[4], v[5]]])
}

fn annal_read(view: &LogView, stream: &str) -> annal::Result<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    for r in view.read_stream(stream, 0, Direction::Forward, u64::MAX) {
        n += 1;
        bytes += r?.payload().len() as u64;
    }
    Ok((n, bytes))
}

fn sqlite_read(db: &Connection, stream: &str) -> rusqlite::Result<(u64, u64)> {
    let mut stmt = db.prepare_cached("SELECT data FROM events WHERE stream = ?1 ORDER BY version")?;
    let mut rows = stmt.query([stream])?;
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(row) = rows.next()? {
        n += 1;
        bytes += row.get_ref(0)?.as_blob()?.len() as u64;
    }
    Ok((n, bytes))
}

/// Time `read` on each stream: per-read durations and `(events, bytes)`.
fn time_reads<E>(
    picks: &[usize],
    names: &[String],
    mut read: impl FnMut(&str) -> Result<(u64, u64), E>,
) -> Result<Timed, E> {
    let mut times = Vec::with_capacity(picks.len());
    let mut got = Vec::with_capacity(picks.len());
    for &p in picks {
        let start = Instant::now();
        let r = read(&names[p])?;
        times.push(start.elapsed());
        got.push(r);
    }
    Ok((times, got))
}

fn main() -> BoxResult<()> {
    if std::env::args().nth(1).as_deref() == Some("--rss-child") {
        let dir = std::env::args_os().nth(2).ok_or("--rss-child DIR")?;
        return rss_child(Path::new(&dir));
    }
    let events = arg_u64(1, 10_000_000)?;
    let streams = arg_u64(2, 100_000)?.max(1);
    let (root, _tmp): (PathBuf, _) = match std::env::args_os().nth(3) {
        Some(d) => (PathBuf::from(d), None),
        None => {
            let t = tempfile::Builder::new().prefix("annal-streams-measure-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let big_dir = root.join("log-big");
    let small_dir = root.join("log-1m");
    let db_path = root.join("events.sqlite");
    let names = names(streams);
    println!(
        "streams_measure: {events} events over {streams} streams (~{} per stream), {PAYLOAD}-byte payloads, \
         appends of 1..={MAX_BATCH} events round-robin over the streams, default options (256 MiB segments, Buffered)",
        events / streams
    );
    println!("directory: {}", root.display());

    // Build.
    let start = Instant::now();
    let appends = build_log(&big_dir, events, &names, 1)?;
    let t_big = start.elapsed().as_secs_f64();
    let (big_segs, big_active) = layout(&big_dir)?;
    let big_bytes = dir_bytes(&big_dir)?;
    println!(
        "build annal:  {appends} appends in {t_big:.1} s ({:.0} events/s); {:.2} GB in {big_segs} segments \
         (active segment {:.1} MB)",
        events as f64 / t_big,
        big_bytes as f64 / 1e9,
        big_active as f64 / 1e6
    );
    let start = Instant::now();
    let small_appends = build_log(&small_dir, SMALL_EVENTS, &names, 2)?;
    let t_small = start.elapsed().as_secs_f64();
    let (small_segs, small_active) = layout(&small_dir)?;
    println!(
        "build annal:  1M-event log, {small_appends} appends in {t_small:.1} s; {:.2} GB in {small_segs} segments \
         (active segment {:.1} MB)",
        dir_bytes(&small_dir)? as f64 / 1e9,
        small_active as f64 / 1e6
    );
    let start = Instant::now();
    let db_bytes = build_sqlite(&db_path, &big_dir)?;
    let t_db = start.elapsed().as_secs_f64();
    println!(
        "build sqlite: {events} rows in {t_db:.1} s ({:.0} rows/s), {:.2} GB \
         (WAL, synchronous=NORMAL, cache_size=256 MiB while loading)",
        events as f64 / t_db,
        db_bytes as f64 / 1e9
    );

    // (a) open time.
    let open_big = open_times(&big_dir)?;
    let open_small = open_times(&small_dir)?;

    // (b) memory of an open log, in a fresh process.
    let rss_big = rss_of_open(&big_dir)?;
    let rss_small = rss_of_open(&small_dir)?;

    // (c) annal reads: 1000 random streams, then the same streams again.
    let mut rng = Rng(0x5eed);
    let picks: Vec<usize> = (0..READS).map(|_| rng.below(streams) as usize).collect();
    let log = Log::open(&big_dir)?;
    let view = log.view()?;
    let (annal_first, annal_got) = time_reads(&picks, &names, |s| annal_read(&view, s))?;
    let (annal_again, _) = time_reads(&picks, &names, |s| annal_read(&view, s))?;
    drop(view);
    log.close()?;

    // (d) SQLite reads of the same streams, on a fresh connection (default
    // cache size; the WAL mode is persistent).
    let db = Connection::open(&db_path)?;
    let (sqlite_first, sqlite_got) = time_reads(&picks, &names, |s| sqlite_read(&db, s))?;
    let (sqlite_again, _) = time_reads(&picks, &names, |s| sqlite_read(&db, s))?;
    drop(db);
    if annal_got != sqlite_got {
        return Err("annal and SQLite returned different events for some stream".into());
    }
    let total_events: u64 = annal_got.iter().map(|g| g.0).sum();
    let per_read = total_events as f64 / READS as f64;
    let (min_ev, max_ev) = (
        annal_got.iter().map(|g| g.0).min().unwrap_or(0),
        annal_got.iter().map(|g| g.0).max().unwrap_or(0),
    );

    // Report.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!();
    println!("(a) Log::open + close, {OPENS} runs");
    println!(
        "    {:<28} {:>10} {:>10} {:>10} {:>9} {:>12}",
        "log", "median ms", "min ms", "max ms", "segments", "active MB"
    );
    for (label, (m, lo, hi), segs, active) in [
        (format!("{events} events"), open_big, big_segs, big_active),
        (format!("{SMALL_EVENTS} events"), open_small, small_segs, small_active),
    ] {
        println!(
            "    {label:<28} {:>10.2} {:>10.2} {:>10.2} {segs:>9} {:>12.1}",
            ms(m),
            ms(lo),
            ms(hi),
            active as f64 / 1e6
        );
    }
    println!();
    println!("(b) resident memory of a fresh process before / after Log::open ({streams} streams)");
    println!(
        "    {:<28} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "log", "VmRSS before", "VmRSS after", "delta", "delta/stream", "anon/stream"
    );
    for (label, [before, after]) in [
        (format!("{events} events"), rss_big),
        (format!("{SMALL_EVENTS} events"), rss_small),
    ] {
        let d = after[0] as i64 - before[0] as i64;
        let anon = after[1] as i64 - before[1] as i64;
        let file = after[2] as i64 - before[2] as i64;
        println!(
            "    {label:<28} {:>9.1} MB {:>9.1} MB {:>9.1} MB {:>11.1} B {:>11.1} B   (file-backed delta {:.1} MB)",
            before[0] as f64 / 1e6,
            after[0] as f64 / 1e6,
            d as f64 / 1e6,
            d as f64 / streams as f64,
            anon as f64 / streams as f64,
            file as f64 / 1e6
        );
    }
    println!();
    println!(
        "(c, d) full reads of {READS} random streams from the {events}-event log: {per_read:.1} events per read \
         (min {min_ev}, max {max_ev})"
    );
    println!(
        "    {:<44} {:>11} {:>11} {:>11} {:>12}",
        "", "median us", "p99 us", "max us", "us/event"
    );
    for (label, times) in [
        ("annal read_stream (first pass after open)", annal_first),
        ("annal read_stream (same streams again)", annal_again),
        ("sqlite indexed SELECT (first pass)", sqlite_first),
        ("sqlite indexed SELECT (same streams again)", sqlite_again),
    ] {
        let (m, p99, max) = summary(times);
        println!(
            "    {label:<44} {m:>11.1} {p99:>11.1} {max:>11.1} {:>12.2}",
            m / per_read
        );
    }
    Ok(())
}
