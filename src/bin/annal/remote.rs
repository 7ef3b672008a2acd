//! `annal replicate`, `annal restore` and `annal follow` (feature `remote`,
//! spec 23): a log shipped to object storage, rebuilt from it, and copied
//! from it as a read-only replica; `read`, `stats` and `check` of a URL read
//! a copy of the remote log ([`RemoteCopy`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use annal::remote::{Follow, RemoteLog, Replica, ReplicaReport, Replicator, RestoreTo, ShipReport, restore};
use clap::Args;

use crate::{CmdResult, Failure, out_err};

pub const REPLICATE_HELP: &str = "Examples:
  annal append ./shipped --stream order-1 --type Placed --data '{}'
  annal replicate ./shipped file://$PWD/backup --once
  annal append ./shipped --stream order-1 --type Paid --data '{}'
  annal replicate ./shipped file://$PWD/backup --once --json
  annal replicate ./shipped file://$PWD/backup --once --keep-versions 1 --keep-grace 1ms

To S3 (or SeaweedFS, MinIO, ...), following the log every 500 ms:
annal replicate ./orders s3://my-bucket/orders --interval-ms 500

Ships what the log holds durably to the remote log at URL: each sealed
segment and its index file as objects named by their content, the active
segment's durable bytes in parts, then a new version of the manifest (spec
23). The first round takes the remote log with a new fencing epoch; a
replicator that finds a newer epoch stops (exit 1) and ships nothing more.
Without --once it ships every --interval-ms until interrupted, printing a
line per round that shipped something (lag: positions durable here and not
in the store).

With --keep-versions N the replicator also collects the remote log's
garbage (spec 23.8): manifest versions older than the newest N go (with
--once after the round; when following, once 2N versions pile up), and so
do objects that no kept version names (parts of segments since shipped
whole, segments compaction rewrote) once they were uploaded and named by no
version for --keep-grace (default 1h; the 1ms above is for a demonstration
only: a reader that read an older manifest a moment ago may find its
objects gone). Readers that start from the newest
manifest are unaffected. With --json the collection is a line of its own,
with \"collected\": true.

s3:// addresses are configured from the standard AWS environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ALLOW_HTTP); file:// is a local folder.

Exit codes: 0 shipped (or nothing new); 1 refused (another writer holds the
remote log, an object does not match its manifest, corrupt data); 2 could
not run (bad arguments, not a log, the store cannot be reached).";

pub const RESTORE_HELP: &str = "Examples:
  annal append ./shipped-too --stream order-1 --type Placed --data '{}'
  annal append ./shipped-too --stream order-1 --type Paid --data '{}'
  annal replicate ./shipped-too file://$PWD/backup-too --once
  annal restore file://$PWD/backup-too ./restored
  annal check ./restored
  annal restore file://$PWD/backup-too ./restored-at-0 --to-position 0
  annal read ./restored-at-0
  annal restore file://$PWD/backup-too ./restored # exit 1

From S3, as it was at a time (nanoseconds since the Unix epoch):
annal restore s3://my-bucket/orders ./orders-then --to-time 1764750000000000000

Rebuilds a log in DIR (created; it must be empty) from the newest manifest
of the remote log at URL: every object checked against the length and
BLAKE3 the manifest gives, then, with --to-position P, cut after the last
batch whose positions are all at or below P, or with --to-time T (nanoseconds
since the Unix epoch), after the last batch whose events were all appended
at or before T. Batches are never split. `annal check DIR` on the result is
clean, and an anchor taken from the original at or below the cut verifies.

Exit codes: 0 restored; 1 refused (an object does not match its manifest,
DIR holds files); 2 could not run (bad arguments, the store cannot be
reached, nothing was shipped there).";

pub const FOLLOW_HELP: &str = "Examples:
  annal append ./followed --stream order-1 --type Placed --data '{}'
  annal replicate ./followed file://$PWD/followed-store --once
  annal follow file://$PWD/followed-store ./replica --once
  annal read ./replica
  annal append ./followed --stream order-1 --type Paid --data '{}'
  annal replicate ./followed file://$PWD/followed-store --once
  annal follow file://$PWD/followed-store ./replica --once --json
  annal read ./followed-store # exit 2
  annal read file://$PWD/followed-store --stream order-1
  annal check file://$PWD/followed-store

On another machine, following an S3 log every 500 ms, with a reader beside it:
annal follow s3://my-bucket/orders ./orders-replica --interval-ms 500 &
annal tail ./orders-replica

Keeps DIR a read-only copy of the remote log at URL: each round reads the
newest manifest and copies what DIR lacks (sealed segments and index files
once, a segment rewritten by compaction again, the active segment's new
parts), every object checked against the length and BLAKE3 the manifest
gives, then moves DIR's head file over it, so `annal read`, `annal tail` and
a Reader in any process see whole batches as they arrive. DIR is created, or
must be a replica already (it holds annal.replica); the follower holds its
writer lock. Without --once it copies every --interval-ms until
interrupted, printing a line per round that copied something.

`annal read`, `annal stats` and `annal check` also take a URL instead of a
directory, with the same checks (CRCs, seals, the chain, --anchor). `read`
and `stats` copy only the newest segment into a temporary directory and
read each sealed segment from the store when they first need it (its
header and seal by ranged reads, its index file, then the segment, into a
bounded temporary cache); `check` copies the whole remote log into a
temporary directory first. Both are removed afterwards.

Exit codes: 0 copied (or nothing new); 1 refused (DIR diverged from the
remote log, an object does not match its manifest, corrupt data); 2 could
not run (bad arguments, DIR is a log or holds other files, the store cannot
be reached).";

/// Arguments of `annal follow`.
#[derive(Args)]
pub struct FollowArgs {
    /// The remote log: s3://BUCKET/PREFIX or file:///PATH.
    url: String,
    /// The replica's directory (created, or a replica already).
    dir: PathBuf,
    /// Copy what is new once and exit.
    #[arg(long)]
    once: bool,
    /// Time between rounds, without --once.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Print each round as a JSON line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `annal replicate`.
#[derive(Args)]
pub struct ReplicateArgs {
    /// The log directory.
    dir: PathBuf,
    /// The remote log: s3://BUCKET/PREFIX or file:///PATH.
    url: String,
    /// Ship everything durable once and exit.
    #[arg(long)]
    once: bool,
    /// Time between rounds, without --once.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Print each round as a JSON line.
    #[arg(long)]
    json: bool,
    /// Collect garbage, keeping the newest N manifest versions (spec 23.8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep_versions: Option<u64>,
    /// With --keep-versions: remove unnamed objects only once this old (a
    /// whole number with a unit: 90d, 12h, 30m, 45s, 500ms; default 1h).
    #[arg(long, value_name = "DURATION", value_parser = crate::meta::parse_duration, requires = "keep_versions")]
    keep_grace: Option<Duration>,
}

/// Arguments of `annal restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The remote log: s3://BUCKET/PREFIX or file:///PATH.
    url: String,
    /// The directory to restore into (created; it must be empty).
    dir: PathBuf,
    /// Keep the batches whose positions are all at or below this one.
    #[arg(long, conflicts_with = "to_time")]
    to_position: Option<u64>,
    /// Keep the batches appended at or before this time (ns since the epoch).
    #[arg(long)]
    to_time: Option<u64>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the async runtime: {e}")))
}

fn failure(e: annal::Error) -> Failure {
    match e {
        annal::Error::Fenced { .. } | annal::Error::Diverged { .. } | annal::Error::Remote { .. } => {
            Failure::problem(e)
        }
        e => e.into(),
    }
}

fn print_round(out: &mut std::io::StdoutLock<'static>, r: &ShipReport, json: bool, always: bool) -> CmdResult {
    if json {
        writeln!(
            out,
            "{{\"manifest\":{},\"epoch\":{},\"objects\":{},\"bytes\":{},\"shipped_position\":{},\"durable_position\":{},\"lag_positions\":{},\"lag_seconds\":{:.3}}}",
            r.manifest_seq,
            r.epoch,
            r.objects,
            r.bytes,
            r.shipped_position,
            r.durable_position,
            r.lag_positions,
            r.lag.as_secs_f64()
        )
        .map_err(out_err)?;
    } else if always || r.objects > 0 {
        writeln!(
            out,
            "manifest {} (epoch {}): {} object(s), {} bytes shipped; the store holds positions below {}, lag {} position(s), {:.3} s",
            r.manifest_seq,
            r.epoch,
            r.objects,
            r.bytes,
            r.shipped_position,
            r.lag_positions,
            r.lag.as_secs_f64()
        )
        .map_err(out_err)?;
    }
    out.flush().map_err(out_err)
}

pub fn replicate(a: &ReplicateArgs) -> CmdResult {
    let remote = RemoteLog::open(&a.url).map_err(|e| Failure::usage(e.to_string()))?;
    let mut rep = Replicator::new(&a.dir, remote);
    let rt = runtime()?;
    let keep = a.keep_versions.map(|n| {
        let k = annal::remote::Keep::versions(n);
        a.keep_grace.map_or(k, |g| k.grace(g))
    });
    let mut out = std::io::stdout().lock();
    if a.once {
        let r = rt.block_on(rep.ship_once()).map_err(failure)?;
        print_round(&mut out, &r, a.json, true)?;
        if let Some(k) = keep {
            let g = rt.block_on(rep.collect_garbage(k)).map_err(failure)?;
            if a.json {
                let v = serde_json::json!({
                    "collected": true,
                    "floor": g.floor,
                    "manifests_removed": g.manifests_removed,
                    "objects_removed": g.objects_removed,
                    "bytes_removed": g.bytes_removed,
                });
                writeln!(out, "{v}").map_err(out_err)?;
            } else {
                writeln!(
                    out,
                    "collected: manifest versions below {} ({} removed), {} objects ({} bytes) no kept version names",
                    g.floor, g.manifests_removed, g.objects_removed, g.bytes_removed
                )
                .map_err(out_err)?;
            }
        }
        return Ok(());
    }
    drop(out);
    follow_rounds(a.interval_ms, a.json, print_round, |follow, each, stop| {
        let follow = match keep {
            Some(k) => follow.keep(k),
            None => follow,
        };
        rt.block_on(rep.follow(follow, each, stop))
    })
}

/// Follow until interrupted (Ctrl-C), a round every `interval_ms`: `run`
/// drives the rounds (failed ones are retried with backoff by the library),
/// each round that did something is printed with `print`.
fn follow_rounds<R>(
    interval_ms: u64,
    json: bool,
    print: fn(&mut std::io::StdoutLock<'static>, &R, bool, bool) -> CmdResult,
    run: impl FnOnce(
        Follow,
        &mut dyn FnMut(&annal::Result<R>),
        std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
    ) -> annal::Result<()>,
) -> CmdResult {
    let mut out = std::io::stdout().lock();
    let mut printed = Ok(());
    let follow = Follow::every(Duration::from_millis(interval_ms.max(1)));
    let stop = Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let mut each = |round: &annal::Result<R>| match round {
        Ok(r) => {
            if printed.is_ok() {
                printed = print(&mut out, r, json, false);
            }
        }
        Err(e) => eprintln!("annal: a round failed ({e}); retrying"),
    };
    run(follow, &mut each, stop).map_err(failure)?;
    printed
}

pub fn restore_cmd(a: &RestoreArgs) -> CmdResult {
    let remote = RemoteLog::open(&a.url).map_err(|e| Failure::usage(e.to_string()))?;
    let to = match (a.to_position, a.to_time) {
        (Some(p), _) => RestoreTo::Position(p),
        (None, Some(t)) => RestoreTo::Time(t),
        (None, None) => RestoreTo::Latest,
    };
    let r = runtime()?.block_on(restore(&remote, &a.dir, to)).map_err(|e| match e {
        annal::Error::NotALog { .. } => Failure::problem(e),
        e => failure(e),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "restored manifest {}: {} segment(s), {} bytes; the log holds positions below {}{}",
        r.manifest_seq,
        r.segments,
        r.bytes,
        r.next_position,
        match r.cut {
            Some((base, off)) => format!(" (cut in segment {base} at byte {off})"),
            None => String::new(),
        }
    )
    .map_err(out_err)
}

fn print_copy(out: &mut std::io::StdoutLock<'static>, r: &ReplicaReport, json: bool, always: bool) -> CmdResult {
    if json {
        writeln!(
            out,
            "{{\"manifest\":{},\"objects\":{},\"bytes\":{},\"next_position\":{}}}",
            r.manifest_seq, r.objects, r.bytes, r.next_position
        )
        .map_err(out_err)?;
    } else if always || r.objects > 0 {
        writeln!(
            out,
            "manifest {}: copied {} object(s), {} bytes; the replica holds positions below {}",
            r.manifest_seq, r.objects, r.bytes, r.next_position
        )
        .map_err(out_err)?;
    }
    out.flush().map_err(out_err)
}

fn open_replica(url: &str, dir: &std::path::Path) -> Result<Replica, Failure> {
    let remote = RemoteLog::open(url).map_err(|e| Failure::usage(e.to_string()))?;
    Replica::open(remote, dir).map_err(|e| match e {
        annal::Error::NotALog { .. } => Failure::usage(e),
        e => failure(e),
    })
}

pub fn follow(a: &FollowArgs) -> CmdResult {
    let mut replica = open_replica(&a.url, &a.dir)?;
    let rt = runtime()?;
    let mut out = std::io::stdout().lock();
    if a.once {
        let r = rt.block_on(replica.sync_once()).map_err(failure)?;
        return print_copy(&mut out, &r, a.json, true);
    }
    drop(out);
    follow_rounds(a.interval_ms, a.json, print_copy, |follow, each, stop| {
        rt.block_on(replica.follow(follow, each, stop))
    })
}

/// Whether `arg` names a remote log (`s3://...`, `file://...`) rather than
/// a directory.
pub fn is_url(arg: &std::path::Path) -> bool {
    arg.to_str()
        .is_some_and(|s| s.starts_with("s3://") || s.starts_with("file://"))
}

/// A copy of a remote log in a new temporary directory, for the commands
/// that read a log (`read`, `stats`, `check`); removed when dropped.
pub struct RemoteCopy {
    dir: PathBuf,
    /// A partial copy's reader (it removes its directory when dropped).
    partial: Option<annal::remote::RemoteReader>,
}

impl RemoteCopy {
    /// Copy the remote log at `url` (its newest manifest) into a new
    /// temporary directory. The replica lets go of the directory's writer
    /// lock before the command reads it.
    pub fn fetch(url: &str) -> Result<RemoteCopy, Failure> {
        let dir = std::env::temp_dir().join(format!(
            "annal-copy-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| Failure::usage(format!("cannot create a directory for the copy {}: {e}", dir.display())))?;
        let copy = RemoteCopy { dir, partial: None };
        let mut replica = open_replica(url, &copy.dir)?;
        runtime()?.block_on(replica.sync_once()).map_err(failure)?;
        if replica.is_empty() {
            return Err(Failure::usage(format!(
                "{url}: expected a remote log with a shipped segment, found none (nothing was shipped there)"
            )));
        }
        Ok(copy)
    }

    /// A partial copy of the remote log at `url`: its newest segment only,
    /// in a new temporary directory; the command reads the sealed segments
    /// from the store (spec 23.7).
    pub fn partial(url: &str) -> Result<RemoteCopy, Failure> {
        let remote = RemoteLog::open(url).map_err(failure)?;
        let reader = annal::remote::RemoteReader::open(remote).map_err(|e| match e {
            annal::Error::Remote { ref detail, .. } if detail.contains("nothing was shipped") => Failure::usage(
                format!("{url}: expected a remote log with a shipped segment, found none (nothing was shipped there)"),
            ),
            e => failure(e),
        })?;
        Ok(RemoteCopy {
            dir: reader.dir().to_owned(),
            partial: Some(reader),
        })
    }

    /// The directory holding the copy.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for RemoteCopy {
    fn drop(&mut self) {
        if self.partial.take().is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
