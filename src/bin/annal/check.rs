//! `annal check`: verify a log and optionally repair it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use annal::{Anchor, CheckOptions, CheckReport, Error, Finding};

use crate::jsonfmt::escape_controls;

/// Examples of `annal check --help`: each runs as printed (tests/cli_examples.rs).
const CHECK_HELP: &str = "Examples:
  annal check ./events
  annal check --json ./events > report.json
  annal check --repair ./events
  annal check ./events --anchor \"$(annal anchor ./events)\"

--repair takes the writer lock: stop the writer first (with a writer running,
it exits 1 and changes nothing). --anchor takes a line printed by
`annal anchor` earlier (kept outside the system).";

/// Verify every file of a log: segments (framing, every record's CRC,
/// positions, stream versions, batch completeness), index files and the stream
/// table (against the segments), the head file and snapshot files.
///
/// The audit chain, in logs that carry it: every batch's link is recomputed
/// (a keyed chain needs --key; without it only the stored values are compared,
/// with a warning). Each --anchor POSITION:HASH (from `annal anchor`) is
/// checked: it holds if the history before POSITION is the one it was taken
/// from; otherwise check says where the history differs.
///
/// Read-only unless --repair. A torn tail past the durable boundary (a crash)
/// is a warning, not a problem: the next writer open, or --repair, removes it.
/// A missing index file of a sealed segment is a problem, except for the last
/// segment and the sealed segments after the newest one that has an index (a
/// crash right after sealing, or a sealer that lagged behind), which are
/// warnings; a missing stream table is a warning. The next writer open, or
/// --repair, rebuilds them. While a writer holds the log, what it is still
/// writing (a missing index included) is not reported as damage.
///
/// Exit codes: 0 no problems (warnings allowed); 1 problems found, or --repair
/// refused because another writer holds the log; 2 the check could not run
/// (not a log, unreadable, a bad --key file).
#[derive(clap::Args, Debug)]
#[command(after_help = CHECK_HELP)]
pub struct CheckArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Print one JSON document (problems, warnings, repairs, summary) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Take the writer lock and repair: cut a torn tail, rebuild missing or
    /// damaged index files and stream table, remove damaged snapshots. Never
    /// removes events from sealed segments. Prints what it did.
    #[arg(long)]
    pub repair: bool,
    /// An anchor POSITION:HASH printed by `annal anchor` earlier: check that the
    /// history before POSITION is unchanged. Repeatable.
    #[arg(long = "anchor", value_name = "POSITION:HASH")]
    pub anchors: Vec<Anchor>,
    /// The key file of a keyed audit chain (see `annal keygen`), to verify its
    /// links (and, with --repair, to open the log for writing).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The public key file of signed checkpoints (see `annal keygen
    /// --signing`): verify every checkpoint's signature, and that every
    /// sealed segment ends with one. Needs no secret.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    #[command(flatten)]
    pub master: crate::audit::MasterKeyArg,
}

/// Run `annal check`.
pub fn run(args: &CheckArgs) -> ExitCode {
    let mut opts = CheckOptions::default().repair(args.repair);
    for a in &args.anchors {
        opts = opts.anchor(*a);
    }
    if let Some(p) = &args.key {
        match crate::audit::read_key(p) {
            Ok(k) => opts = opts.key(k),
            Err(f) => {
                eprintln!("annal: {}", f.message);
                return ExitCode::from(f.code);
            }
        }
    }
    match args.master.key() {
        Ok(Some(k)) => opts = opts.master_key(k),
        Ok(None) => {}
        Err(f) => {
            eprintln!("annal: {}", f.message);
            return ExitCode::from(f.code);
        }
    }
    if let Some(p) = &args.public_key {
        match crate::audit::read_public_key(p) {
            Ok(k) => opts = opts.public_key(k),
            Err(f) => {
                eprintln!("annal: {}", f.message);
                return ExitCode::from(f.code);
            }
        }
    }
    let bar = if !args.json && std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} checking [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        let p = pb.clone();
        opts = opts.progress(move |done, total| {
            p.set_length(total);
            p.set_position(done);
        });
        Some(pb)
    } else {
        None
    };
    let result = annal::check(&args.dir, opts);
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e @ Error::Locked { .. }) => {
            eprintln!("annal: cannot repair: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("annal: {e}");
            return ExitCode::from(2);
        }
    };
    // Not yet recovered (spec 7): a log that no writer holds and that was not
    // cleanly closed holds bytes past what readers deliver. `--repair` has
    // just recovered it; otherwise say so, as every command does.
    let unrecovered = if args.repair || report.writer_active {
        None
    } else {
        annal::Reader::open(&args.dir)
            .and_then(|r| r.view())
            .ok()
            .and_then(|v| v.unrecovered().cloned())
    };
    if args.json {
        print_json(&report, unrecovered.as_ref());
    } else {
        print_text(&args.dir, &report);
        if let Some(u) = &unrecovered {
            println!("WARNING: {}", escape_controls(&u.to_string()));
        }
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn mb_per_sec(r: &CheckReport) -> f64 {
    let secs = r.elapsed.as_secs_f64();
    if secs > 0.0 { r.bytes as f64 / 1e6 / secs } else { 0.0 }
}

fn print_json(r: &CheckReport, unrecovered: Option<&annal::Unrecovered>) {
    let doc = serde_json::json!({
        "ok": r.is_ok(),
        "problems": r.problems,
        "warnings": r.warnings,
        "repairs": r.repairs,
        "chain": r.chain,
        "anchors": r.anchors,
        "signatures": r.signatures,
        "signature_note": r.signature_note,
        "hidden": r.hidden,
        "subjects": r.subjects,
        "retention": r.retention,
        "compaction": r.compaction,
        "unrecovered": unrecovered.map(|u| serde_json::json!({
            "segment": u.segment.display().to_string(),
            "offset": u.offset,
            "position": u.position,
        })),
        "summary": {
            "files": r.files,
            "records": r.records,
            "bytes": r.bytes,
            "elapsed_secs": r.elapsed.as_secs_f64(),
            "writer_active": r.writer_active,
        },
    });
    match serde_json::to_string_pretty(&doc) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("annal: cannot encode the report as JSON: {e}"),
    }
}

fn print_finding(kind: &str, f: &Finding) {
    println!("{kind}: {}", escape_controls(&f.to_string()));
}

fn print_text(dir: &std::path::Path, r: &CheckReport) {
    for a in &r.repairs {
        println!("repair: {a}");
    }
    for f in &r.problems {
        print_finding("PROBLEM", f);
    }
    for f in &r.warnings {
        print_finding("WARNING", f);
    }
    println!("audit chain: {}", r.chain);
    if let Some(ret) = &r.retention {
        println!("retention: {ret}");
    }
    for c in &r.compaction {
        println!("compaction: {}", escape_controls(&c.to_string()));
    }
    for v in &r.anchors {
        let verdict = match (v.ok, v.superseded()) {
            (true, _) => "holds",
            (false, true) => "superseded",
            (false, false) => "DIFFERS",
        };
        println!("anchor {}: {verdict}: {}", v.anchor, escape_controls(&v.detail));
        if !v.ok && !v.superseded() {
            println!(
                "  (either the history was changed, or this anchor was mistyped or taken from another log: compare it \
                 character by character with the copy kept outside the system)"
            );
        }
    }
    if let Some(s) = &r.signatures {
        match s.last_signed_position {
            Some(p) => println!(
                "signed checkpoints: {} verified; the newest signs the history before position {p}; {} event(s) \
                 after it are not signed yet",
                s.verified, s.unsigned_events
            ),
            None => println!(
                "signed checkpoints: none verified; {} event(s) are not signed",
                s.unsigned_events
            ),
        }
    }
    if let Some(note) = &r.signature_note {
        println!("note: {}", escape_controls(note));
    }
    println!(
        "checked {} files ({} bytes in all files), {} records in {:.3} s ({:.0} MB/s)",
        r.files,
        r.bytes,
        r.records,
        r.elapsed.as_secs_f64(),
        mb_per_sec(r)
    );
    print_hidden(r);
    if let Some(s) = &r.subjects
        && (s.sealed + s.erased + s.live_keys + s.erased_keys) > 0
    {
        println!(
            "subjects: {} sealed events opened with their keys, {} erased (envelope only); \
             annal.keys: {} live keys, {} erased",
            s.sealed, s.erased, s.live_keys, s.erased_keys
        );
    }
    let dir = dir.display().to_string();
    let dir = escape_controls(&dir);
    match (r.problems.len(), r.warnings.len()) {
        (0, 0) => println!("{dir}: ok"),
        (0, w) => println!("{dir}: ok, {w} warning(s)"),
        (p, w) => println!("{dir}: {p} problem(s), {w} warning(s)"),
    }
}

/// One line per stream with events its metadata hides (spec 3.7): not
/// damage, what every read but `check` and `dump` skips.
fn print_hidden(r: &CheckReport) {
    let mut i = 0;
    while let Some(first) = r.hidden.get(i) {
        let same: Vec<_> = r.hidden[i..].iter().take_while(|h| h.stream == first.stream).collect();
        i += same.len();
        let rules: Vec<String> = same
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let events = if h.events == 1 { "event" } else { "events" };
                let what = if k == 0 {
                    format!("{events} hidden by")
                } else {
                    "by".into()
                };
                format!("{} {what} {}", h.events, h.rule)
            })
            .collect();
        let from = same.iter().map(|h| h.first_position).min().unwrap_or_default();
        let to = same.iter().map(|h| h.last_position).max().unwrap_or_default();
        println!(
            "stream {}: {} (set at position {}; positions {from} to {to})",
            escape_controls(&first.stream),
            rules.join(", "),
            first.set_at
        );
    }
}
