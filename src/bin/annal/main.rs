//! The `annal` command-line tool: a thin face over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// annal: inspect and verify annal event logs.
///
/// Exit codes: 0 success; 1 the command ran and found a problem; 2 the command
/// could not run (bad arguments, not a log, unreadable path).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay every record of a log (without taking the writer lock), checking
    /// each record's CRC, and print a summary.
    ///
    /// Example: annal stats /var/lib/myapp/events
    Stats {
        /// The log directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Stats { dir } => match stats(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ annal::Error::Corrupt { .. }) => {
                eprintln!("annal: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("annal: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn stats(dir: &std::path::Path) -> annal::Result<()> {
    let mut reader = annal::Reader::open(dir)?;
    let view = reader.view()?;
    let mut streams = std::collections::HashSet::new();
    let (mut events, mut first_ts, mut last_ts) = (0u64, None, 0u64);
    for rec in view.read_all(0) {
        let rec = rec?;
        events += 1;
        first_ts.get_or_insert(rec.timestamp());
        last_ts = rec.timestamp();
        if !streams.contains(rec.stream()) {
            streams.insert(rec.stream().to_owned());
        }
    }
    println!("directory:  {}", dir.display());
    println!("segments:   {}", view.segment_count());
    println!("bytes:      {}", view.len_bytes());
    println!("events:     {events}");
    println!("streams:    {}", streams.len());
    if let Some(f) = first_ts {
        println!("timestamps: {f} .. {last_ts} (ns since the Unix epoch)");
    }
    Ok(())
}
