//! The `annal` command-line tool: a thin face over the library.

mod audit;
mod check;
mod compact;
mod dump;
mod jsonfmt;
mod meta;
mod read;
#[cfg(feature = "remote")]
mod remote;
mod retain;
mod write;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the command ran and found a problem or was refused (wrong expected version,
     log locked by a writer, corrupt data, a bad input line, a deleted stream)
  2  the command could not run (bad arguments, not a log, unreadable path)";

/// annal: append to, read, follow and inspect annal event logs.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append one event to a stream (creating the log if the directory is empty).
    #[command(after_help = write::APPEND_HELP)]
    Append(write::AppendArgs),
    /// Append events from JSON lines (the output of `annal read --json`).
    #[command(after_help = write::IMPORT_HELP)]
    Import(write::ImportArgs),
    /// Delete a stream (soft: a new life may follow; --hard: for good); its events are hidden from reads.
    #[command(after_help = meta::DELETE_HELP)]
    Delete(meta::DeleteArgs),
    /// Print a stream's metadata, or set the rules that hide its older events (count, age, version).
    #[command(after_help = meta::METADATA_HELP)]
    Metadata(meta::MetadataArgs),
    /// Erase subjects: destroy their keys, so that their events read as erased (crypto-shredding).
    #[command(after_help = meta::ERASE_HELP)]
    Erase(meta::EraseArgs),
    /// Remove whole sealed segments from the front of the log by age or size (log retention), recorded first.
    #[command(after_help = retain::RETAIN_HELP)]
    Retain(retain::RetainArgs),
    /// Rewrite sealed segments without the events stream metadata hides (compaction), recorded first.
    #[command(after_help = compact::COMPACT_HELP)]
    Compact(compact::CompactArgs),
    /// Print events (the whole log, a stream, a category or an event type).
    #[command(after_help = read::READ_HELP)]
    Read(read::ReadArgs),
    /// Follow a log like `tail -f`, printing events as they are appended.
    #[command(after_help = read::TAIL_HELP)]
    Tail(read::TailArgs),
    /// Replay every record (checking CRCs) and print a summary of the log.
    #[command(after_help = read::STATS_HELP)]
    Stats(read::StatsArgs),
    /// Print the structure of one log file (segment, index, stream table, snapshot).
    #[command(after_help = dump::DUMP_HELP)]
    Dump(dump::DumpArgs),
    #[command(about = "Verify every file of a log (segments, indexes, stream table, snapshots); --repair fixes")]
    Check(check::CheckArgs),
    /// Print the anchor at the head of the audit chain (POSITION:HASH), to keep outside the system.
    #[command(after_help = audit::ANCHOR_HELP)]
    Anchor(audit::AnchorArgs),
    /// Write a new secret key for a keyed audit chain to a new file; print its id.
    #[command(after_help = audit::KEYGEN_HELP)]
    Keygen(audit::KeygenArgs),
    /// Ship the log's durable bytes to object storage (S3, file://), once or following it.
    #[cfg(feature = "remote")]
    #[command(after_help = remote::REPLICATE_HELP)]
    Replicate(remote::ReplicateArgs),
    /// Rebuild a log from object storage, optionally cut at a position or a time.
    #[cfg(feature = "remote")]
    #[command(after_help = remote::RESTORE_HELP)]
    Restore(remote::RestoreArgs),
    /// Keep a local read-only copy of a log in object storage up to date (a replica).
    #[cfg(feature = "remote")]
    #[command(after_help = remote::FOLLOW_HELP)]
    Follow(remote::FollowArgs),
}

/// A failure of a command: a message for stderr and the exit code.
pub struct Failure {
    /// 1: ran and found a problem or was refused; 2: could not run.
    pub code: u8,
    /// Plain, actionable message.
    pub message: String,
}

impl Failure {
    /// The command ran and found a problem (exit 1).
    pub fn problem(message: impl fmt::Display) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// The command could not run (exit 2).
    pub fn usage(message: impl fmt::Display) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<annal::Error> for Failure {
    fn from(e: annal::Error) -> Failure {
        let code = match &e {
            annal::Error::WrongExpectedVersion { .. }
            | annal::Error::Locked { .. }
            | annal::Error::IdempotencyConflict { .. }
            | annal::Error::Corrupt { .. }
            | annal::Error::Poisoned { .. }
            | annal::Error::Decode { .. }
            | annal::Error::StreamDeleted { .. }
            | annal::Error::RemovedByRetention { .. }
            | annal::Error::RemovedByCompaction { .. } => 1,
            _ => 2,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // `read`, `stats` and `check` of a URL run on a copy of the remote log.
    let _copy = match remote_copy(&mut cli.command) {
        Ok(copy) => copy,
        Err(f) => {
            eprintln!("annal: {}", jsonfmt::escape_controls(&f.message));
            return ExitCode::from(f.code);
        }
    };
    let result = match &cli.command {
        Command::Append(a) => write::append(a),
        Command::Import(a) => write::import(a),
        Command::Delete(a) => meta::delete(a),
        Command::Metadata(a) => meta::metadata(a),
        Command::Erase(a) => meta::erase(a),
        Command::Retain(a) => retain::retain(a),
        Command::Compact(a) => compact::compact(a),
        Command::Read(a) => read::read(a),
        Command::Tail(a) => read::tail(a),
        Command::Stats(a) => read::stats(a),
        Command::Dump(a) => dump::dump(a),
        Command::Check(a) => return check::run(a),
        Command::Anchor(a) => audit::anchor(a),
        Command::Keygen(a) => audit::keygen(a),
        #[cfg(feature = "remote")]
        Command::Replicate(a) => remote::replicate(a),
        #[cfg(feature = "remote")]
        Command::Restore(a) => remote::restore_cmd(a),
        #[cfg(feature = "remote")]
        Command::Follow(a) => remote::follow(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`annal read | head`): not an error.
        Err(f) if f.code == 0 => ExitCode::SUCCESS,
        Err(f) => {
            // Messages may quote names from the log or the input: never let
            // them forge a line or drive the terminal.
            eprintln!("annal: {}", jsonfmt::escape_controls(&f.message));
            ExitCode::from(f.code)
        }
    }
}

/// The directory argument of the commands that read a log, if they take a
/// remote log's URL too.
fn read_dir_arg(command: &mut Command) -> Option<&mut std::path::PathBuf> {
    match command {
        Command::Read(a) => Some(&mut a.dir),
        Command::Stats(a) => Some(&mut a.dir),
        Command::Check(a) => Some(&mut a.dir),
        _ => None,
    }
}

/// If `command` reads a remote log's URL, copy it into a temporary
/// directory (kept while the returned value lives) and point the command
/// there.
#[cfg(feature = "remote")]
fn remote_copy(command: &mut Command) -> Result<Option<remote::RemoteCopy>, Failure> {
    if let Command::Check(a) = command
        && a.repair
        && remote::is_url(&a.dir)
    {
        return Err(Failure::usage(
            "check --repair takes a log directory: a remote log is repaired where it is written",
        ));
    }
    let Some(dir) = read_dir_arg(command).filter(|d| remote::is_url(d)) else {
        return Ok(None);
    };
    let url = dir.to_string_lossy().into_owned();
    // `read` and `stats` read a partial copy (the newest segment) and the
    // sealed segments from the store, fetched as they are read; `check`
    // reads every byte, from a whole copy.
    let copy = match command {
        Command::Read(_) | Command::Stats(_) => remote::RemoteCopy::partial(&url)?,
        _ => remote::RemoteCopy::fetch(&url)?,
    };
    match command {
        Command::Read(a) => (a.dir, a.remote) = (copy.dir().to_owned(), Some(url)),
        Command::Stats(a) => (a.dir, a.remote) = (copy.dir().to_owned(), Some(url)),
        _ => {
            if let Some(dir) = read_dir_arg(command) {
                *dir = copy.dir().to_owned();
            }
        }
    }
    Ok(Some(copy))
}

/// Without the `remote` feature, a URL is refused with a clear message.
#[cfg(not(feature = "remote"))]
fn remote_copy(command: &mut Command) -> Result<Option<()>, Failure> {
    match read_dir_arg(command).and_then(|d| d.to_str()) {
        Some(s) if s.starts_with("s3://") || s.starts_with("file://") => Err(Failure::usage(format!(
            "{s}: reading a remote log needs annal built with the remote feature"
        ))),
        _ => Ok(None),
    }
}

/// Map an output error: a closed pipe ends the command quietly (exit 0).
pub fn out_err(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure {
            code: 0,
            message: String::new(),
        }
    } else {
        Failure::usage(format!("cannot write to standard output: {e}"))
    }
}
