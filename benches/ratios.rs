//! The table of ratios: reads the results criterion saved for every bench
//! group that describes itself (`annal-figure.json`, written by
//! `common::Figure`) and prints one Markdown table: per figure, annal's time
//! per iteration, events/s and MB/s of user data, and each ratio against the
//! baselines measured in the same group (SQLite, the hardware limit, or
//! another annal mode), with the target and whether it is met.
//!
//! Not a measurement itself (`bench = false` in Cargo.toml): run the benches
//! first. `benches/ratios.sh` does both: a quick pass of every bench, then
//! `cargo bench --bench ratios`.
//!
//! A ratio is `time(baseline) / time(annal)`: above 1, annal is faster. Times
//! are criterion's median per iteration.

mod common;

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

/// Median time per iteration in nanoseconds of `group/bench`, and when it was
/// measured.
fn median_ns(dir: &Path, group: &str, bench: &str) -> Option<(f64, SystemTime)> {
    let path = dir.join(group).join(bench).join("new").join("estimates.json");
    let text = fs::read_to_string(&path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let ns = v["median"]["point_estimate"].as_f64()?;
    let when = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    Some((ns, when))
}

/// Targets met and missed so far.
#[derive(Default)]
struct Tally {
    met: usize,
    missed: usize,
}

impl Tally {
    /// The verdict on `value` against `target` (the least value asked for),
    /// counted.
    fn judge(&mut self, value: f64, target: Option<f64>) -> &'static str {
        match target {
            Some(t) if value >= t => {
                self.met += 1;
                "met"
            }
            Some(_) => {
                self.missed += 1;
                "**missed**"
            }
            None => "",
        }
    }
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// Sort key: the section order of BENCHMARKS.md, then numbers compared as
/// numbers (so `x10` follows `x1` and `4096B` follows `256B`).
fn sort_key(group: &str) -> (usize, Vec<(String, u64)>) {
    const ORDER: [&str; 8] = [
        "append_buffered",
        "append_fsync",
        "group_commit",
        "replay",
        "read_stream",
        "rebuild",
        "snapshot",
        "open",
    ];
    let section = ORDER.iter().position(|p| group.starts_with(p)).unwrap_or(ORDER.len());
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for ch in group.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
        } else {
            if !num.is_empty() {
                parts.push((std::mem::take(&mut text), num.parse().unwrap_or(0)));
                num.clear();
            }
            text.push(ch);
        }
    }
    parts.push((text, num.parse().unwrap_or(0)));
    (section, parts)
}

fn main() {
    if common::test_mode() {
        // `cargo bench -- --test` would only check that this builds.
        return;
    }
    let dir = common::criterion_dir();
    let mut groups: Vec<(String, Value)> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let text = fs::read_to_string(e.path().join("annal-figure.json")).ok()?;
                    let v: Value = serde_json::from_str(&text).ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    if groups.is_empty() {
        eprintln!(
            "no bench results in {}: run the benches first (benches/ratios.sh runs them and prints this table)",
            dir.display()
        );
        std::process::exit(2);
    }
    groups.sort_by_key(|(g, _)| sort_key(g));

    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Machine: {cores} cores, {cpu}. Results from {}.\n", dir.display());
    println!("| figure | annal | time/iter | events/s | MB/s | ratio | target | |");
    println!("|---|---|--:|--:|--:|---|--:|---|");

    let mut tally = Tally::default();
    let mut stale = Vec::new();
    let mut unmeasured = Vec::new();
    let newest = groups
        .iter()
        .flat_map(|(g, v)| {
            v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| median_ns(&dir, g, r["bench"].as_str()?).map(|(_, t)| t))
        })
        .max();
    for (group, v) in &groups {
        let events = v["events"].as_f64().unwrap_or(0.0);
        let bytes = v["bytes"].as_f64().unwrap_or(0.0);
        for row in v["rows"].as_array().into_iter().flatten() {
            let Some(bench) = row["bench"].as_str() else { continue };
            let Some((ns, when)) = median_ns(&dir, group, bench) else {
                unmeasured.push(format!("{group}/{bench}"));
                continue;
            };
            if let Some(newest) = newest
                && newest.duration_since(when).is_ok_and(|d| d.as_secs() > 3600)
            {
                stale.push(format!("{group}/{bench}"));
            }
            let per_s = if ns > 0.0 { 1e9 / ns } else { 0.0 };
            let ev = if events > 0.0 {
                fmt_rate(events * per_s)
            } else {
                String::new()
            };
            let mb = match bytes * per_s / 1e6 {
                0.0 => String::new(),
                m if m < 10.0 => format!("{m:.2}"),
                m => format!("{m:.0}"),
            };
            let vs = row["vs"].as_array().cloned().unwrap_or_default();
            if vs.is_empty() {
                println!("| {group} | {bench} | {} | {ev} | {mb} | | | |", fmt_time(ns));
            }
            for (i, c) in vs.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or("?");
                let other = c["bench"].as_str().unwrap_or("?");
                let (ratio, verdict, target) = match median_ns(&dir, group, other) {
                    Some((other_ns, _)) => {
                        let r = other_ns / ns;
                        let target = c["target"].as_f64();
                        let verdict = tally.judge(r, target);
                        (
                            format!("{r:.2}× {name} ({})", fmt_time(other_ns)),
                            verdict,
                            target.map_or(String::new(), |t| format!("≥ {t:.2}×")),
                        )
                    }
                    None => (format!("{name}: no result"), "", String::new()),
                };
                if i == 0 {
                    println!(
                        "| {group} | {bench} | {} | {ev} | {mb} | {ratio} | {target} | {verdict} |",
                        fmt_time(ns)
                    );
                } else {
                    println!("| | | | | | {ratio} | {target} | {verdict} |");
                }
            }
        }
        for m in v["metrics"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or("?");
            let value = m["value"].as_f64().unwrap_or(0.0);
            let bench = m["bench"].as_str().unwrap_or("?");
            let target = m["target"].as_f64();
            let verdict = tally.judge(value, target);
            let target = target.map_or(String::new(), |t| format!("≥ {t}"));
            let value = if value.abs() < 10.0 {
                format!("{value:.2}")
            } else {
                format!("{value:.1}")
            };
            println!("| | {bench} | | | | {value} {name} | {target} | {verdict} |");
        }
    }
    println!("\nTargets: {} met, {} missed.", tally.met, tally.missed);
    if !unmeasured.is_empty() {
        println!(
            "Described but without results (filtered out?): {}",
            unmeasured.join(", ")
        );
    }
    if !stale.is_empty() {
        println!(
            "Older than the newest result by more than an hour (re-run their benches): {}",
            stale.join(", ")
        );
    }
}
