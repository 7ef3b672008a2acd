//! A forger for the audit-chain tests (`tests/audit_chain.rs`): it reads a
//! closed log's segment files, decodes every frame and record by the byte
//! tables of `spec/format.md` (sections 2 and 3; the chain fields of format
//! version 2), lets a test change the history, and writes the log back
//! *structurally valid*: positions renumbered contiguously, stream versions
//! renumbered per stream, timestamps made non-decreasing, every record CRC,
//! frame header CRC and segment header CRC recomputed, seals, base positions,
//! `prev_timestamp`s and file names fixed, `durable_end`s kept within their
//! frame, a fresh head file written, and the derived files (`*.idx`,
//! `annal.streams`) deleted so that they do not give the forgery away.
//!
//! What it does to the chain slots is the attacker model ([`Chain`]): leave
//! them as they were, or recompute them (without a key, or with a key of its
//! own), over the whole log or only part of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const SEGMENT_HEADER_LEN: usize = 128;
pub const FRAME_HEADER_LEN: usize = 72;
pub const RECORD_HEADER_LEN: usize = 72;
/// Frame header offset of the chain slot (spec 3.1).
pub const FRAME_CHAIN: u64 = 40;
/// Segment header offset of `chain_start` (spec 2.1).
pub const CHAIN_START: u64 = 56;

const GENESIS_DOMAIN: &[u8] = b"annal chain v2\0\0";

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}
fn arr32(b: &[u8]) -> [u8; 32] {
    b[..32].try_into().unwrap()
}

/// One event record, decoded (spec 3.2). `position` and `stream_version` are
/// as read; [`Forgery::write`] renumbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub position: u64,
    pub stream_version: u64,
    pub timestamp: u64,
    pub event_id: [u8; 16],
    pub schema_version: u32,
    pub stream: String,
    pub event_type: String,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Record {
    /// Spec 3.2: header, body, zero padding to a multiple of 8, CRC of
    /// `[8, record_len)` at 4.
    fn encode(&self) -> Vec<u8> {
        let body = self.stream.len() + self.event_type.len() + self.metadata.len() + self.payload.len();
        let len = (RECORD_HEADER_LEN + body).next_multiple_of(8);
        let mut r = vec![0u8; len];
        put(&mut r, 0, &(len as u32).to_le_bytes());
        put(&mut r, 8, &self.position.to_le_bytes());
        put(&mut r, 16, &self.stream_version.to_le_bytes());
        put(&mut r, 24, &self.timestamp.to_le_bytes());
        put(&mut r, 32, &self.event_id);
        put(&mut r, 48, &self.schema_version.to_le_bytes());
        // 52 flags: zero
        put(&mut r, 54, &(self.stream.len() as u16).to_le_bytes());
        put(&mut r, 56, &(self.event_type.len() as u16).to_le_bytes());
        // 58 reserved0: zero
        put(&mut r, 60, &(self.metadata.len() as u32).to_le_bytes());
        put(&mut r, 64, &(self.payload.len() as u32).to_le_bytes());
        // 68 reserved1: zero
        let mut at = RECORD_HEADER_LEN;
        for part in [
            self.stream.as_bytes(),
            self.event_type.as_bytes(),
            &self.metadata,
            &self.payload,
        ] {
            put(&mut r, at, part);
            at += part.len();
        }
        let crc = crc32fast::hash(&r[8..]);
        put(&mut r, 4, &crc.to_le_bytes());
        r
    }

    fn decode(b: &[u8]) -> (Record, usize) {
        let len = u32_at(b, 0) as usize;
        assert_eq!(
            u32_at(b, 4),
            crc32fast::hash(&b[8..len]),
            "record CRC of the original log"
        );
        let stream_len = u16_at(b, 54) as usize;
        let type_len = u16_at(b, 56) as usize;
        let meta_len = u32_at(b, 60) as usize;
        let payload_len = u32_at(b, 64) as usize;
        let mut at = RECORD_HEADER_LEN;
        let mut take = |n: usize| {
            let s = b[at..at + n].to_vec();
            at += n;
            s
        };
        let stream = String::from_utf8(take(stream_len)).unwrap();
        let event_type = String::from_utf8(take(type_len)).unwrap();
        let metadata = take(meta_len);
        let payload = take(payload_len);
        let r = Record {
            position: u64_at(b, 8),
            stream_version: u64_at(b, 16),
            timestamp: u64_at(b, 24),
            event_id: b[32..48].try_into().unwrap(),
            schema_version: u32_at(b, 48),
            stream,
            event_type,
            metadata,
            payload,
        };
        (r, len)
    }
}

/// One event batch (spec 3.3) and its stored chain slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub records: Vec<Record>,
    pub durable_end: u64,
    /// The chain slot as stored (as read, or as last written).
    pub chain: [u8; 32],
    /// File offset of the frame as read (for reference only).
    pub offset: u64,
}

impl Batch {
    pub fn first_position(&self) -> u64 {
        self.records[0].position
    }
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }
}

/// A seal frame (spec 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub durable_end: u64,
    pub chain: [u8; 32],
}

/// One segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The 128-byte header as read; base position, prev timestamp, chain
    /// start and CRC are rewritten on write.
    pub header: Vec<u8>,
    pub batches: Vec<Batch>,
    pub seal: Option<Seal>,
}

impl Segment {
    pub fn base(&self) -> u64 {
        u64_at(&self.header, 32)
    }
    pub fn chain_start(&self) -> [u8; 32] {
        arr32(&self.header[56..])
    }
    pub fn log_id(&self) -> [u8; 16] {
        self.header[16..32].try_into().unwrap()
    }
    pub fn format_version(&self) -> u16 {
        u16_at(&self.header, 8)
    }
    pub fn file_name(&self) -> String {
        format!("{:020}.seg", self.base())
    }
}

/// Which chain slots the forger recomputes.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Everything, from the genesis hash in the first segment's
    /// `chain_start` on.
    All,
    /// The batches and the seal of segment `i` only, from its stored
    /// `chain_start`: a self-consistent segment; the next segment's
    /// `chain_start` is left as it was.
    Segment(usize),
    /// Every batch whose (new) first position is at least this, every
    /// later segment's `chain_start` and seal, continuing from the stored
    /// chain slot before it.
    From(u64),
}

/// What the forger does with the chain slots.
#[derive(Debug, Clone, Copy)]
pub enum Chain {
    /// Mode (a): leave every stored slot as it was (a naive attacker).
    Keep,
    /// Mode (b): recompute with plain BLAKE3 (an attacker who knows the
    /// format but has no key).
    Unkeyed(Scope),
    /// Mode (c): recompute in keyed mode with this (wrong) key.
    Keyed([u8; 32], Scope),
}

fn hasher(key: Option<&[u8; 32]>) -> blake3::Hasher {
    match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    }
}

/// `H(b"annal chain v2\0\0" || log_id)` (plain or keyed).
pub fn genesis(key: Option<&[u8; 32]>, log_id: &[u8; 16]) -> [u8; 32] {
    let mut h = hasher(key);
    h.update(GENESIS_DOMAIN);
    h.update(log_id);
    *h.finalize().as_bytes()
}

/// `H(prev || frame[8, 40) || frame[72, frame_len))`.
pub fn link(key: Option<&[u8; 32]>, prev: &[u8; 32], frame: &[u8]) -> [u8; 32] {
    let mut h = hasher(key);
    h.update(prev);
    h.update(&frame[8..40]);
    h.update(&frame[72..]);
    *h.finalize().as_bytes()
}

/// A whole log, decoded.
#[derive(Debug, Clone)]
pub struct Forgery {
    pub dir: PathBuf,
    pub segments: Vec<Segment>,
}

/// Where one batch is: `(segment index, batch index)`.
pub type At = (usize, usize);

impl Forgery {
    /// Decode every segment of the (closed) log in `dir`. Panics on anything
    /// that is not a valid log: the input is an honest log.
    pub fn read(dir: &Path) -> Forgery {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        names.sort();
        let segments = names.iter().map(|p| decode_segment(&fs::read(p).unwrap())).collect();
        Forgery {
            dir: dir.to_owned(),
            segments,
        }
    }

    pub fn log_id(&self) -> [u8; 16] {
        self.segments[0].log_id()
    }

    /// Every batch, in log order.
    pub fn batches(&self) -> Vec<At> {
        let mut out = Vec::new();
        for (s, seg) in self.segments.iter().enumerate() {
            for b in 0..seg.batches.len() {
                out.push((s, b));
            }
        }
        out
    }

    pub fn batch(&self, at: At) -> &Batch {
        &self.segments[at.0].batches[at.1]
    }

    pub fn batch_mut(&mut self, at: At) -> &mut Batch {
        &mut self.segments[at.0].batches[at.1]
    }

    /// The batch holding the event at `position` (as read / last written).
    pub fn batch_of(&self, position: u64) -> At {
        self.batches()
            .into_iter()
            .find(|&at| {
                let b = self.batch(at);
                (b.first_position()..b.first_position() + b.len()).contains(&position)
            })
            .unwrap_or_else(|| panic!("no batch holds position {position}"))
    }

    /// The event at `position`.
    pub fn record_mut(&mut self, position: u64) -> &mut Record {
        let at = self.batch_of(position);
        let b = self.batch_mut(at);
        let i = (position - b.first_position()) as usize;
        &mut b.records[i]
    }

    /// The position after the last event.
    pub fn end(&self) -> u64 {
        self.batches()
            .last()
            .map_or(0, |&at| self.batch(at).first_position() + self.batch(at).len())
    }

    /// Write the log back to its directory (see the module documentation),
    /// doing `chain` to the chain slots. Updates `self` to what was written
    /// (positions, versions, chain slots, base positions).
    pub fn write(&mut self, chain: Chain) {
        let (key, scope) = match chain {
            Chain::Keep => (None, None),
            Chain::Unkeyed(s) => (None, Some(s)),
            Chain::Keyed(k, s) => (Some(k), Some(s)),
        };
        let key = key.as_ref();
        let log_id = self.log_id();
        let mut pos = 0u64;
        let mut last_ts = 0u64;
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut run = [0u8; 32];
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for (s, seg) in self.segments.iter_mut().enumerate() {
            let mut buf = seg.header.clone();
            put(&mut buf, 32, &pos.to_le_bytes());
            put(&mut buf, 40, &last_ts.to_le_bytes());
            let recompute_start = match scope {
                Some(Scope::All) => true,
                Some(Scope::From(p)) => s > 0 && pos >= p,
                _ => false,
            };
            if recompute_start {
                run = if s == 0 { genesis(key, &log_id) } else { run };
                put(&mut buf, 56, &run);
            } else {
                run = arr32(&buf[56..]);
            }
            let c = crc32fast::hash(&buf[..124]);
            put(&mut buf, 124, &c.to_le_bytes());
            let mut last_recomputed = false;
            for batch in &mut seg.batches {
                let off = buf.len() as u64;
                let first = pos;
                let mut recs = Vec::new();
                for r in &mut batch.records {
                    r.position = pos;
                    pos += 1;
                    let v = versions.entry(r.stream.clone()).or_insert(0);
                    r.stream_version = *v;
                    *v += 1;
                    r.timestamp = r.timestamp.max(last_ts);
                    last_ts = r.timestamp;
                    recs.extend(r.encode());
                }
                batch.durable_end = batch.durable_end.clamp(SEGMENT_HEADER_LEN as u64, off);
                let mut frame = frame_header(
                    (FRAME_HEADER_LEN + recs.len()) as u64,
                    first,
                    batch.records.len() as u32,
                    1,
                    batch.durable_end,
                );
                frame.extend(recs);
                let recompute = match scope {
                    None => false,
                    Some(Scope::All) => true,
                    Some(Scope::Segment(i)) => i == s,
                    Some(Scope::From(p)) => first >= p,
                };
                if recompute {
                    batch.chain = link(key, &run, &frame);
                }
                run = batch.chain;
                last_recomputed = recompute;
                put(&mut frame, 40, &batch.chain);
                let c = crc32fast::hash(&frame[8..72]);
                put(&mut frame, 4, &c.to_le_bytes());
                batch.offset = off;
                buf.extend(frame);
            }
            if let Some(seal) = &mut seg.seal {
                let off = buf.len() as u64;
                seal.durable_end = seal.durable_end.clamp(SEGMENT_HEADER_LEN as u64, off);
                if last_recomputed {
                    seal.chain = run;
                }
                let mut frame = frame_header(FRAME_HEADER_LEN as u64, pos, 0, 2, seal.durable_end);
                put(&mut frame, 40, &seal.chain);
                let c = crc32fast::hash(&frame[8..72]);
                put(&mut frame, 4, &c.to_le_bytes());
                buf.extend(frame);
            }
            seg.header = buf[..SEGMENT_HEADER_LEN].to_vec();
            files.push((seg.file_name(), buf));
        }
        // Replace the files: the old segments (whose names may have changed),
        // the derived files and the head go; the forged segments and a head
        // that agrees with them come.
        for e in fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".seg") || name.ends_with(".idx") || name == "annal.streams" || name == "annal.head" {
                fs::remove_file(&p).unwrap();
            }
        }
        let last = files.last().expect("a log has a segment");
        let head = head_file(
            self.segments[0].format_version(),
            self.segments.last().unwrap().base(),
            last.1.len() as u64,
            pos,
        );
        for (name, bytes) in &files {
            fs::write(self.dir.join(name), bytes).unwrap();
        }
        fs::write(self.dir.join("annal.head"), head).unwrap();
    }

    /// The path of segment `i` (as last written).
    pub fn path(&self, i: usize) -> PathBuf {
        self.dir.join(self.segments[i].file_name())
    }
}

fn frame_header(len: u64, first_position: u64, count: u32, kind: u8, durable_end: u64) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN];
    put(&mut f, 0, b"BTCH");
    put(&mut f, 8, &len.to_le_bytes());
    put(&mut f, 16, &first_position.to_le_bytes());
    put(&mut f, 24, &count.to_le_bytes());
    f[28] = kind;
    // 29 flags, 30 reserved: zero
    put(&mut f, 32, &durable_end.to_le_bytes());
    f
}

/// Spec 5.2: a head file whose slot 0 says everything up to `end` of the
/// last segment is durable and visible; slot 1 is zero.
fn head_file(format_version: u16, segment_base: u64, end: u64, next_position: u64) -> Vec<u8> {
    let mut h = vec![0u8; 128];
    put(&mut h, 0, b"HEAD");
    put(&mut h, 8, &format_version.to_le_bytes());
    put(&mut h, 16, &1u64.to_le_bytes());
    put(&mut h, 24, &segment_base.to_le_bytes());
    put(&mut h, 32, &end.to_le_bytes());
    put(&mut h, 40, &end.to_le_bytes());
    put(&mut h, 48, &next_position.to_le_bytes());
    let c = crc32fast::hash(&h[8..64]);
    put(&mut h, 4, &c.to_le_bytes());
    h
}

fn decode_segment(bytes: &[u8]) -> Segment {
    assert_eq!(&bytes[..8], b"ANNALSEG");
    assert_eq!(u32_at(bytes, 124), crc32fast::hash(&bytes[..124]));
    let mut seg = Segment {
        header: bytes[..SEGMENT_HEADER_LEN].to_vec(),
        batches: Vec::new(),
        seal: None,
    };
    let mut off = SEGMENT_HEADER_LEN;
    while off < bytes.len() {
        let f = &bytes[off..];
        assert_eq!(&f[..4], b"BTCH", "frame magic at {off}");
        assert_eq!(u32_at(f, 4), crc32fast::hash(&f[8..72]), "frame CRC at {off}");
        let len = u64_at(f, 8) as usize;
        let count = u32_at(f, 24) as usize;
        let kind = f[28];
        let durable_end = u64_at(f, 32);
        let chain = arr32(&f[40..]);
        match kind {
            1 => {
                let mut records = Vec::with_capacity(count);
                let mut at = FRAME_HEADER_LEN;
                for _ in 0..count {
                    let (r, n) = Record::decode(&f[at..len]);
                    records.push(r);
                    at += n;
                }
                assert_eq!(at, len, "records fill the frame at {off}");
                seg.batches.push(Batch {
                    records,
                    durable_end,
                    chain,
                    offset: off as u64,
                });
            }
            2 => {
                assert_eq!(off + len, bytes.len(), "the seal ends the file");
                seg.seal = Some(Seal { durable_end, chain });
            }
            k => panic!("frame kind {k} at {off}"),
        }
        off += len;
    }
    seg
}
