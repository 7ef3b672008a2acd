//! The audit chain (spec section 21): a BLAKE3 hash chain over batches that
//! makes any change to the history of a log evident.
//!
//! This module owns the exact hash inputs (genesis, links), the optional
//! secret key of keyed mode ([`ChainKey`]), and [`Anchor`]s (a position and
//! the chain hash there, kept outside the log by an auditor). It works on
//! `&[u8]` and never touches files except to read or write a key file.
//!
//! Invariants: `link` hashes exactly the frame bytes the spec lists (the frame
//! header after its CRC field, up to the chain slot, then the records), so a
//! changed byte of a batch, a removed, reordered or inserted batch, all change
//! every later chain hash. The key never reaches a log file; only its
//! [`ChainKey::id`] (a one-way derivation) does.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use zerocopy::IntoBytes;

use crate::format::{CheckpointBody, CheckpointMessage, FRAME_CHAIN_OFFSET, FRAME_CRC_START, FRAME_HEADER_LEN};

/// A chain hash: 32 bytes of BLAKE3 output.
pub type ChainHash = [u8; 32];

/// ASCII prefix of the genesis input (spec 21.2).
const GENESIS_DOMAIN: &[u8] = b"annal chain v2\0\0";
/// BLAKE3 `derive_key` context of a key's id (spec 21.4).
const KEY_ID_CONTEXT: &str = "annal 2026-11 chain key id";

/// The secret key of keyed mode: 32 bytes, given to the writer and to `check`
/// and never stored in the log.
///
/// ```
/// let key = annal::ChainKey::generate()?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("chain.key");
/// key.write_file(&path)?;
/// assert_eq!(annal::ChainKey::from_file(&path)?.id(), key.id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey([u8; 32]);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "ChainKey(id {})", hex(&self.id()))
    }
}

impl ChainKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ChainKey {
        ChainKey(bytes)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<ChainKey> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)
            .map_err(|e| Error::InvalidArgument(format!("the operating system gave no random bytes: {e}")))?;
        Ok(ChainKey(k))
    }

    /// Read a key file: 64 hexadecimal digits, optionally followed by a
    /// newline (the form [`ChainKey::write_file`] writes). Refuses a file
    /// that its group or others may access (mode bits `0o077`, as ssh does
    /// for private keys), a file that is not a regular file, and a file of
    /// more than 128 bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ChainKey> {
        read_hex_file(path.as_ref(), "chain key", true).map(ChainKey)
    }

    /// Write the key as 64 hexadecimal digits and a newline to a new file,
    /// readable and writable by its owner only (mode 0600 on Unix). Fails if
    /// the file exists.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_hex_file(path.as_ref(), &self.0, 0o600)
    }

    /// The key's public id (spec 21.4): a one-way derivation stored in every
    /// segment header of a keyed log, so that a wrong key is told apart from
    /// a tampered log. It reveals nothing usable about the key.
    pub fn id(&self) -> [u8; 16] {
        let full = blake3::derive_key(KEY_ID_CONTEXT, &self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        id
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Bytes of a checkpoint frame's body (spec 3.5): public key, signature,
/// body CRC, reserved (the layout is [`CheckpointBody`]).
#[allow(unused_imports, reason = "the old path of the constant")]
pub(crate) use crate::format::CHECKPOINT_BODY_LEN;

/// The ed25519 key a writer signs checkpoints with (spec 21.5). Keep it
/// secret; give its [`PublicKey`] to auditors.
///
/// ```
/// let key = annal::SigningKey::generate()?;
/// let dir = tempfile::tempdir()?;
/// key.write_file(dir.path().join("signing.key"))?;
/// key.public_key().write_file(dir.path().join("signing.pub"))?;
/// let back = annal::PublicKey::from_file(dir.path().join("signing.pub"))?;
/// assert_eq!(back, key.public_key());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", hex(&self.public_key().0))
    }
}

impl SigningKey {
    /// A key from its 32-byte secret seed.
    pub fn from_bytes(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<SigningKey> {
        Ok(SigningKey::from_bytes(*ChainKey::generate()?.bytes()))
    }

    /// Read a key file (64 hexadecimal digits: the secret seed). Refuses a
    /// file that its group or others may access, as [`ChainKey::from_file`]
    /// does.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SigningKey> {
        read_hex_file(path.as_ref(), "signing key", true).map(SigningKey::from_bytes)
    }

    /// Write the secret seed to a new file (mode 0600 on Unix).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_hex_file(path.as_ref(), &self.0.to_bytes(), 0o600)
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Sign the checkpoint of `log_id` at `position` with chain hash `chain`.
    pub(crate) fn sign(&self, log_id: &[u8; 16], position: u64, chain: &ChainHash) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(&checkpoint_message(log_id, position, chain)).to_bytes()
    }
}

/// An ed25519 public key (RFC 8032 encoding) that verifies signed checkpoints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex(&self.0))
    }
}

impl fmt::Display for PublicKey {
    /// The 64 hexadecimal digits of a public key file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl PublicKey {
    /// Read a public key file (64 hexadecimal digits).
    pub fn from_file(path: impl AsRef<Path>) -> Result<PublicKey> {
        read_hex_file(path.as_ref(), "public key", false).map(PublicKey)
    }

    /// Write the key to a new file (mode 0644 on Unix).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_hex_file(path.as_ref(), &self.0, 0o644)
    }

    /// Whether `signature` is this key's signature of the checkpoint of
    /// `log_id` at `position` with chain hash `chain` (spec 21.5).
    pub fn verify(&self, log_id: &[u8; 16], position: u64, chain: &ChainHash, signature: &[u8; 64]) -> bool {
        use ed25519_dalek::Verifier;
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify(&checkpoint_message(log_id, position, chain), &sig).is_ok()
    }
}

fn checkpoint_message(log_id: &[u8; 16], position: u64, chain: &ChainHash) -> [u8; 80] {
    let mut m = [0u8; 80];
    m.copy_from_slice(CheckpointMessage::new(log_id, position, chain).as_bytes());
    m
}

/// Fill in the body of a checkpoint frame (spec 3.5): `body` is the frame's
/// bytes `[72, 176)`, laid out as a [`CheckpointBody`].
pub(crate) fn fill_checkpoint(body: &mut [u8], key: &SigningKey, log_id: &[u8; 16], position: u64, chain: &ChainHash) {
    let Some(out) = body.get_mut(..CHECKPOINT_BODY_LEN) else {
        return;
    };
    let b = CheckpointBody::new(key.public_key().0, key.sign(log_id, position, chain));
    out.copy_from_slice(b.as_bytes());
}

/// Most bytes read from a key file: 64 hexadecimal digits, a line ending
/// and a little slack. A longer file is refused without reading it all, so a
/// key path naming `/dev/zero` or a huge file cannot grow memory.
const KEY_FILE_MAX: usize = 128;

/// Read a key file of 64 hexadecimal digits. Only a regular file is read (a
/// FIFO or device is refused without blocking), and at most
/// [`KEY_FILE_MAX`] bytes of it. A `secret` key file must be accessible by
/// its owner only, as ssh requires of private keys: group or other
/// permission bits are refused, naming the file and its mode.
pub(crate) fn read_hex_file(path: &Path, what: &str, secret: bool) -> Result<[u8; 32]> {
    use std::io::Read;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never wait for a writer of a FIFO; no effect on a regular file.
        o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = o.open(path).map_err(|e| Error::io("open", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: expected a {what} file, found {}",
            path.display(),
            crate::storage::io::file_kind(&meta.file_type())
        )));
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let who = if mode & 0o004 != 0 {
                "readable by others"
            } else if mode & 0o040 != 0 {
                "readable by its group"
            } else {
                "accessible by its group or others"
            };
            return Err(Error::InvalidArgument(format!(
                "{what} file {p} has mode {mode:04o}: {who}; a secret key must be accessible by its owner only \
                 (chmod 600 {p})",
                p = path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut text = Vec::with_capacity(KEY_FILE_MAX + 1);
    file.take(KEY_FILE_MAX as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("read", path, e))?;
    if text.len() > KEY_FILE_MAX {
        return Err(Error::InvalidArgument(format!(
            "{}: expected a {what} file of 64 hexadecimal digits (32 bytes), found more than {KEY_FILE_MAX} bytes",
            path.display()
        )));
    }
    let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    parse_hex32(trimmed).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: expected a {what} file of 64 hexadecimal digits (32 bytes), found {} bytes that are not",
            path.display(),
            text.len()
        ))
    })
}

pub(crate) fn write_hex_file(path: &Path, bytes: &[u8; 32], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(format!("{}\n", hex(bytes)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

/// The hash function of a log's chain: plain BLAKE3, or BLAKE3 keyed mode.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chainer<'k> {
    key: Option<&'k [u8; 32]>,
    /// Frames of format version 3 (spec 3.6): the link hashes other header bytes.
    compact: bool,
}

impl<'k> Chainer<'k> {
    /// Plain BLAKE3 (`key = None`) or keyed, for frames of format version 1 or 2.
    pub(crate) fn new(key: Option<&'k ChainKey>) -> Chainer<'k> {
        Chainer {
            key: key.map(ChainKey::bytes),
            compact: false,
        }
    }

    /// Whether this chains frames of format version 3.
    pub(crate) fn compact(&self) -> bool {
        self.compact
    }

    /// The same hash function, for frames of `layout`.
    pub(crate) fn for_layout(self, layout: &crate::format::Layout) -> Chainer<'k> {
        Chainer {
            compact: layout.compact(),
            ..self
        }
    }

    fn hasher(&self) -> blake3::Hasher {
        match self.key {
            Some(k) => blake3::Hasher::new_keyed(k),
            None => blake3::Hasher::new(),
        }
    }

    /// The chain hash before the first batch of the log (spec 21.2).
    pub(crate) fn genesis(&self, log_id: &[u8; 16]) -> ChainHash {
        let mut h = self.hasher();
        h.update(GENESIS_DOMAIN);
        h.update(log_id);
        *h.finalize().as_bytes()
    }

    /// The chain hash after the batch frame `frame` (its whole bytes, header
    /// included; the header's CRCs and chain slot are not hashed), given the
    /// chain hash before it (spec 21.2). `frame` must hold at least its
    /// header (72 bytes; version 3: 32, or 64 with a chain slot).
    pub(crate) fn link(&self, prev: &ChainHash, frame: &[u8]) -> ChainHash {
        let mut h = self.hasher();
        h.update(prev);
        if self.compact {
            let flags = frame.get(crate::format::FRAME_V3_FLAGS_OFFSET).copied().unwrap_or(0);
            let header_len = crate::format::FrameHeaderV3::len_with(flags);
            h.update(frame.get(crate::format::FRAME_V3_LINKED).unwrap_or_default());
            h.update(frame.get(header_len..).unwrap_or_default());
        } else {
            h.update(frame.get(FRAME_CRC_START..FRAME_CHAIN_OFFSET).unwrap_or_default());
            h.update(frame.get(FRAME_HEADER_LEN..).unwrap_or_default());
        }
        *h.finalize().as_bytes()
    }
}

/// A point in a log's history that an auditor keeps outside the log: the
/// number of events before it (`position`, always at a batch boundary) and
/// the chain hash after the batch that ends there. Written and parsed as
/// `POSITION:HASH` with the hash in 64 lowercase hexadecimal digits.
///
/// ```
/// let a: annal::Anchor = "42:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".parse()?;
/// assert_eq!(a.position, 42);
/// assert_eq!(a.to_string().parse::<annal::Anchor>()?, a);
/// # Ok::<(), annal::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Anchor {
    /// Events before the anchor: the position of the first event after it.
    pub position: u64,
    /// The chain hash at that point (the genesis hash for position 0).
    pub hash: ChainHash,
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, hex(&self.hash))
    }
}

impl FromStr for Anchor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Anchor> {
        let bad = || {
            Error::InvalidArgument(format!(
                "expected an anchor POSITION:HASH (a number, a colon, 64 hexadecimal digits), found {s:?}"
            ))
        };
        let (p, h) = s.trim().split_once(':').ok_or_else(bad)?;
        let position = p.parse().map_err(|_| bad())?;
        let hash = parse_hex32(h.as_bytes()).ok_or_else(bad)?;
        Ok(Anchor { position, hash })
    }
}

/// Lowercase hexadecimal digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_hex32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *o = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_plain_differ_and_links_cover_records() {
        let key = ChainKey::from_bytes([9; 32]);
        let plain = Chainer::new(None);
        let keyed = Chainer::new(Some(&key));
        assert_ne!(plain.genesis(&[1; 16]), keyed.genesis(&[1; 16]));
        assert_ne!(plain.genesis(&[1; 16]), plain.genesis(&[2; 16]));
        let mut frame = vec![0u8; 200];
        let g = plain.genesis(&[1; 16]);
        let a = plain.link(&g, &frame);
        // The CRC field and the chain slot are not hashed.
        frame[4] = 1;
        frame[40] = 1;
        assert_eq!(plain.link(&g, &frame), a);
        frame[8] = 1;
        assert_ne!(plain.link(&g, &frame), a);
        frame[8] = 0;
        frame[199] = 1;
        assert_ne!(plain.link(&g, &frame), a);
    }

    #[test]
    fn anchors_parse_and_print() {
        let a = Anchor {
            position: 7,
            hash: [0xab; 32],
        };
        assert_eq!(a.to_string().parse::<Anchor>().unwrap(), a);
        for bad in ["", "7", "x:ab", "7:abc", &format!("7:{}", "g".repeat(64))] {
            assert!(bad.parse::<Anchor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoints_verify_only_with_their_key_and_content() {
        let k = SigningKey::from_bytes([3; 32]);
        let sig = k.sign(&[1; 16], 10, &[2; 32]);
        let p = k.public_key();
        assert!(p.verify(&[1; 16], 10, &[2; 32], &sig));
        assert!(!p.verify(&[1; 16], 11, &[2; 32], &sig));
        assert!(!p.verify(&[1; 16], 10, &[3; 32], &sig));
        assert!(!p.verify(&[9; 16], 10, &[2; 32], &sig));
        assert!(
            !SigningKey::from_bytes([4; 32])
                .public_key()
                .verify(&[1; 16], 10, &[2; 32], &sig)
        );
    }

    #[test]
    fn key_id_is_stable() {
        let k = ChainKey::from_bytes([0; 32]);
        assert_eq!(k.id(), ChainKey::from_bytes([0; 32]).id());
        assert_ne!(k.id(), ChainKey::from_bytes([1; 32]).id());
        assert!(!format!("{k:?}").contains("0000000000"));
    }
}
