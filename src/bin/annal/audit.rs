//! The audit chain on the command line: `annal anchor`, `annal keygen`, and
//! the `--key` / `--no-chain` options of the commands that write.

use std::path::{Path, PathBuf};

use annal::{ChainKey, Options};
use clap::Args;

use crate::{CmdResult, Failure, out_err};

pub const ANCHOR_HELP: &str = "Examples:
  annal anchor ./events
  annal anchor ./events --json

Prints POSITION:HASH (with --json: {\"position\", \"hash\", \"keyed\", \"log_id\"}).
Keep the anchor outside the system (a ticket, an email, a notary, another
machine). Later, `annal check DIR --anchor POSITION:HASH` proves that the
history before POSITION is unchanged (exit 0), or says where it differs
(exit 1: the history was changed, or the anchor given is not the one printed
here, e.g. mistyped). Read-only: works while a writer appends, and sees what
readers see.

Exit codes: 0 printed; 1 the log is damaged; 2 could not run (not a log, or
the log has no audit chain: it was created with --no-chain or by annal 0.x
format version 1).";

pub const KEYGEN_HELP: &str = "Examples:
  annal keygen ./events.key
  annal append ./keyed --key ./events.key --stream s --type T --data '{}'
  annal check ./keyed --key ./events.key

The key file holds 64 hexadecimal digits (mode 0600). A key file that group
or others can read is refused by every command, naming the file and its mode.
A log created with a key is keyed for good: every writer needs the key, and
so does `check` to verify the chain. Keep the key away from the log's machine
and its backups: whoever holds it can rewrite the chain. The log stores only
the key's id (printed).

Exit codes: 0 written; 2 could not run (the file exists, or cannot be written).";

/// Options of the commands that open a log for writing.
#[derive(Args, Debug)]
pub struct WriteChainArgs {
    /// The key file of a keyed audit chain (see `annal keygen`): needed to
    /// write to a keyed log; a log created with it is keyed.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Create the log without the audit chain (no effect on an existing log,
    /// which keeps what it was created with).
    #[arg(long, conflicts_with = "key")]
    no_chain: bool,
    /// An ed25519 signing key file (see `annal keygen --signing`): write
    /// signed checkpoints of the audit chain.
    #[arg(long, value_name = "FILE", conflicts_with = "no_chain")]
    signing_key: Option<PathBuf>,
    /// Events between signed checkpoints (with --signing-key).
    #[arg(long, value_name = "N", requires = "signing_key")]
    checkpoint_every: Option<u64>,
    #[command(flatten)]
    master: MasterKeyArg,
}

/// `--master-key`: the master key of a wrapped subject key file.
#[derive(Args, Debug, Default)]
pub struct MasterKeyArg {
    /// The master key file (see `annal keygen --master`) that wraps the
    /// subjects' keys in annal.keys (spec 22): needed by every command on a
    /// log whose key file is wrapped; a key file created with it is wrapped.
    #[arg(long, value_name = "FILE")]
    master_key: Option<PathBuf>,
}

impl MasterKeyArg {
    /// The key, read from its file (exit 2 if it cannot be used).
    pub fn key(&self) -> Result<Option<annal::MasterKey>, Failure> {
        self.master_key
            .as_ref()
            .map(|p| annal::MasterKey::from_file(p).map_err(key_failure))
            .transpose()
    }

    /// `reader`, unsealing with the master key if one was given.
    pub fn apply_to(&self, reader: &mut annal::Reader) -> Result<(), Failure> {
        if let Some(k) = self.key()? {
            reader.master_key(k);
        }
        Ok(())
    }
}

impl WriteChainArgs {
    /// `opts` with the chain options given.
    pub fn apply(&self, opts: Options) -> Result<Options, Failure> {
        let mut opts = opts.chain(!self.no_chain);
        if let Some(p) = &self.signing_key {
            opts = opts.signing_key(read_signing_key(p)?);
        }
        if let Some(n) = self.checkpoint_every {
            opts = opts.checkpoint_every(n);
        }
        if let Some(k) = self.master.key()? {
            opts = opts.master_key(k);
        }
        Ok(match &self.key {
            Some(p) => opts.chain_key(read_key(p)?),
            None => opts,
        })
    }
}

/// A failure to open a log for writing, with a hint for key errors.
pub fn open_failure(e: annal::Error) -> Failure {
    let hint = matches!(e, annal::Error::ChainKey { .. });
    let mut f = Failure::from(e);
    if hint {
        f.message.push_str(
            " (a chain key file is given with --key FILE, a master key of annal.keys with --master-key FILE; \
             see annal keygen --help)",
        );
    }
    f
}

/// Read a chain key file (exit 2 if it cannot be read, is not a key, or
/// can be read by group or others: the library's rules, spec 21.4).
pub fn read_key(path: &Path) -> Result<ChainKey, Failure> {
    ChainKey::from_file(path).map_err(key_failure)
}

/// Read a signing key file (the same rules as a chain key).
fn read_signing_key(path: &Path) -> Result<annal::SigningKey, Failure> {
    annal::SigningKey::from_file(path).map_err(key_failure)
}

/// Read a public key file (any mode: it is no secret).
pub fn read_public_key(path: &Path) -> Result<annal::PublicKey, Failure> {
    annal::PublicKey::from_file(path).map_err(key_failure)
}

/// A key file that cannot be used: exit 2, with the library's message
/// (which names the file, and its mode when it is readable by others).
fn key_failure(e: annal::Error) -> Failure {
    Failure::usage(match e {
        annal::Error::InvalidArgument(m) => m,
        e => e.to_string(),
    })
}

/// Arguments of `annal anchor`.
#[derive(Args, Debug)]
pub struct AnchorArgs {
    /// The log directory.
    dir: PathBuf,
    /// Print {"position", "hash", "keyed", "log_id"} as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `annal anchor`.
pub fn anchor(a: &AnchorArgs) -> CmdResult {
    // The anchor names the chain as far as it is recorded; say so if the log
    // holds events past what a reader can vouch for (spec 7).
    if let Ok(reader) = annal::Reader::open(&a.dir)
        && let Ok(view) = reader.view()
    {
        crate::read::warn_unrecovered(&view);
    }
    let Some(head) = annal::chain_head(&a.dir)? else {
        return Err(Failure::usage(format!(
            "{}: the log has no audit chain (it was created with --no-chain, or in format version 1), so it has \
             no anchor",
            a.dir.display()
        )));
    };
    use std::io::Write;
    let line = if a.json {
        serde_json::json!({
            "position": head.anchor.position,
            "hash": head.anchor.to_string().split_once(':').map(|(_, h)| h.to_owned()).unwrap_or_default(),
            "keyed": head.keyed,
            "log_id": annal::Uuid::from_bytes(head.log_id).simple().to_string(),
        })
        .to_string()
    } else {
        head.anchor.to_string()
    };
    writeln!(std::io::stdout(), "{line}").map_err(out_err)
}

/// Arguments of `annal keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The key file to create (fails if it exists).
    file: PathBuf,
    /// Write an ed25519 signing key for signed checkpoints instead, and its
    /// public key to FILE.pub (for auditors: `annal check --public-key`).
    #[arg(long)]
    signing: bool,
    /// Write a master key for the subject key file instead (`--master-key`
    /// of the other commands): keep it outside the log directory and its
    /// backups.
    #[arg(long, conflicts_with = "signing")]
    master: bool,
}

/// Run `annal keygen`.
pub fn keygen(a: &KeygenArgs) -> CmdResult {
    if a.master {
        annal::MasterKey::generate()?.write_file(&a.file)?;
        eprintln!("annal: wrote a new master key to {}", a.file.display());
        return Ok(());
    }
    if a.signing {
        let key = annal::SigningKey::generate()?;
        let mut public = a.file.clone().into_os_string();
        public.push(".pub");
        let public = PathBuf::from(public);
        if public.exists() {
            return Err(Failure::usage(format!("{} exists; not overwritten", public.display())));
        }
        key.write_file(&a.file)?;
        key.public_key().write_file(&public)?;
        eprintln!(
            "annal: wrote a new signing key to {} and its public key to {} (follows)",
            a.file.display(),
            public.display()
        );
        use std::io::Write;
        return writeln!(std::io::stdout(), "{}", key.public_key()).map_err(out_err);
    }
    let key = ChainKey::generate()?;
    key.write_file(&a.file)?;
    let id = annal::Uuid::from_bytes(key.id()).simple().to_string();
    eprintln!("annal: wrote a new chain key to {} (its id follows)", a.file.display());
    use std::io::Write;
    writeln!(std::io::stdout(), "{id}").map_err(out_err)
}
