//! Competing consumers (spec 24.7): processes sharing one named durable
//! subscription, each stream handled by one of them at a time.
//!
//! The subscription is cut into `n` partitions by stream hash; partition
//! `k` is an ordinary durable subscription with its own checkpoint file
//! (`annal.sub.<name>~<k>`) whose lock is the lease: the member holding it
//! delivers the partition's events. Members announce themselves with a
//! locked member file (`annal.sub.<name>~member.<id>`); each member holds
//! about `n / members` partitions, takes free ones and gives back extra
//! ones (committed first) as members come and go. A member that dies lets
//! go of its locks with its process: its partitions are taken by the
//! others at their next rebalance and resume at their checkpoints.
//!
//! Invariants: a stream's events are delivered by one member at a time, in
//! order (one partition per stream, one holder per partition); a partition
//! is given back only when everything it delivered was acknowledged, after
//! a commit, so a handoff repeats nothing; a crash repeats what the dead
//! member acknowledged since its last commit (at least once).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::hash::stream_hash;
use crate::read::subscription::{DEFAULT_POLL_INTERVAL, OwnedRecord};
use crate::read::view::Reader;
use crate::writer::Log;

use super::consumer::{DurableBuilder, DurableSubscription, SUBSCRIPTION_FILE_PREFIX, check_name};

/// One setting of the members' partitions, applied to each partition's
/// builder.
type Setting = Arc<dyn Fn(DurableBuilder) -> DurableBuilder + Send + Sync>;

/// What the partitions read from.
#[derive(Debug, Clone)]
enum Source {
    Log(Log),
    /// A log directory, read by a new [`Reader`] per partition.
    Dir(PathBuf),
}

/// Options of a competing consumer, from [`Log::competing_subscription`] or
/// [`Reader::competing_subscription`]; [`open`](CompetingBuilder::open)
/// joins.
#[must_use = "a builder does nothing until it is opened"]
pub struct CompetingBuilder {
    source: Source,
    name: String,
    partitions: u32,
    settings: Vec<Setting>,
    rebalance_every: Duration,
}

impl std::fmt::Debug for CompetingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompetingBuilder")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Join the competing subscription `name`, cut into `partitions`
    /// partitions by stream hash (the same number for every member, for
    /// good: it is part of each partition's filter). See
    /// [`CompetingConsumer`].
    pub fn competing_subscription(&self, name: &str, partitions: u32) -> CompetingBuilder {
        CompetingBuilder::new(Source::Log(self.clone()), name, partitions)
    }
}

impl Reader {
    /// [`Log::competing_subscription`] for a member in another process than
    /// the writer's.
    pub fn competing_subscription(self, name: &str, partitions: u32) -> CompetingBuilder {
        CompetingBuilder::new(Source::Dir(self.dir().to_owned()), name, partitions)
    }
}

impl CompetingBuilder {
    fn new(source: Source, name: &str, partitions: u32) -> CompetingBuilder {
        CompetingBuilder {
            source,
            name: name.to_owned(),
            partitions: partitions.max(1),
            settings: Vec::new(),
            rebalance_every: Duration::from_millis(200),
        }
    }

    fn with(mut self, s: impl Fn(DurableBuilder) -> DurableBuilder + Send + Sync + 'static) -> CompetingBuilder {
        self.settings.push(Arc::new(s));
        self
    }

    /// Only the events of the streams of `category`.
    pub fn category(self, category: &str) -> CompetingBuilder {
        let c = category.to_owned();
        self.with(move |b| b.category(&c))
    }

    /// Only events of these types.
    pub fn event_types<S: Into<String>>(self, types: impl IntoIterator<Item = S>) -> CompetingBuilder {
        let t: Vec<String> = types.into_iter().map(Into::into).collect();
        self.with(move |b| b.event_types(t.clone()))
    }

    /// Only events `keep` accepts (see [`DurableBuilder::matching`]).
    pub fn matching(self, keep: impl Fn(&OwnedRecord) -> bool + Send + Sync + 'static) -> CompetingBuilder {
        let keep = Arc::new(keep);
        self.with(move |b| {
            let k = Arc::clone(&keep);
            b.matching(move |r| k(r))
        })
    }

    /// Each partition's checkpoint is written after this many
    /// acknowledgements (see [`DurableBuilder::commit_every`]).
    pub fn commit_every(self, acks: u64) -> CompetingBuilder {
        self.with(move |b| b.commit_every(acks))
    }

    /// How often a member looks at the other members and takes or gives
    /// back partitions (default 200 ms).
    pub fn rebalance_every(mut self, every: Duration) -> CompetingBuilder {
        self.rebalance_every = every;
        self
    }

    /// Join: announce this member (a locked member file), then take
    /// partitions (see [`CompetingConsumer::rebalance`]).
    pub fn open(self) -> Result<CompetingConsumer> {
        check_name(&self.name)?;
        let dir = match &self.source {
            Source::Log(l) => l.dir().to_owned(),
            Source::Dir(d) => d.clone(),
        };
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::io("draw a member id in", &dir, std::io::Error::other(e)))?;
        let member_path = dir.join(format!(
            "{}{}",
            member_prefix(&self.name),
            crate::audit::chain::hex(&id)
        ));
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true);
        crate::storage::io::no_follow(&mut o);
        let member = o.open(&member_path).map_err(|e| Error::io("create", &member_path, e))?;
        member.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => Error::Locked {
                path: member_path.clone(),
            },
            std::fs::TryLockError::Error(e) => Error::io("lock", &member_path, e),
        })?;
        let mut c = CompetingConsumer {
            source: self.source,
            dir,
            name: self.name,
            partitions: self.partitions,
            settings: self.settings,
            held: BTreeMap::new(),
            member_path,
            _member: member,
            offset: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            last_rebalance: None,
            rebalance_every: self.rebalance_every,
            cursor: 0,
        };
        c.rebalance()?;
        Ok(c)
    }
}

/// `annal.sub.<name>~member.`: the prefix of the member files of `name`.
fn member_prefix(name: &str) -> String {
    format!("{SUBSCRIPTION_FILE_PREFIX}{name}~member.")
}

/// Whether another open file holds a lock on `path`.
fn held_by_another(path: &Path) -> bool {
    match crate::storage::io::open_read(path) {
        Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// A member of a competing subscription (spec 24.7): it delivers the events
/// of the partitions it holds, in order within each stream, and hands
/// partitions to and from the other members as they come and go.
pub struct CompetingConsumer {
    source: Source,
    dir: PathBuf,
    name: String,
    partitions: u32,
    settings: Vec<Setting>,
    held: BTreeMap<u32, DurableSubscription>,
    member_path: PathBuf,
    _member: File,
    /// Where this member starts looking for free partitions.
    offset: u32,
    last_rebalance: Option<Instant>,
    rebalance_every: Duration,
    /// The partition to read first next time (round robin).
    cursor: u32,
}

impl std::fmt::Debug for CompetingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompetingConsumer")
            .field("name", &self.name)
            .field("member", &self.member_path)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CompetingConsumer {
    /// The partitions this member holds.
    pub fn partitions(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// The partition of `stream`: its hash modulo the partition count.
    pub fn partition_of(&self, stream: &str) -> u32 {
        u32::try_from(stream_hash(stream.as_bytes()) % u64::from(self.partitions)).unwrap_or(0)
    }

    /// The members alive now (their member files locked), this one
    /// included; member files left by dead members are removed.
    fn members(&self) -> Result<u32> {
        let prefix = member_prefix(&self.name);
        let mut alive = 1u32;
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))? {
            let e = e.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let path = e.path();
            if path == self.member_path || !e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                continue;
            }
            if held_by_another(&path) {
                alive += 1;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(alive)
    }

    fn open_partition(&self, k: u32) -> Result<DurableSubscription> {
        let b = match &self.source {
            Source::Log(l) => l.durable_subscription(&self.name),
            Source::Dir(d) => Reader::open(d)?.durable_subscription(&self.name),
        };
        let b = self.settings.iter().fold(b, |b, s| s(b));
        b.partition(k, self.partitions).open()
    }

    /// Look at the members now: give back the partitions beyond this
    /// member's share (only those whose deliveries were all acknowledged,
    /// committed first), then take free ones up to it. The share is the
    /// partition count divided by the members alive, rounded up.
    pub fn rebalance(&mut self) -> Result<()> {
        self.last_rebalance = Some(Instant::now());
        let members = self.members()?;
        let share = self.partitions.div_ceil(members);
        while self.held.len() > share as usize {
            let Some(k) = self.held.iter().rev().find(|(_, s)| s.idle()).map(|(k, _)| *k) else {
                break;
            };
            if let Some(s) = self.held.remove(&k) {
                s.close()?;
            }
        }
        for i in 0..self.partitions {
            if self.held.len() >= share as usize {
                break;
            }
            let k = (self.offset.wrapping_add(i)) % self.partitions;
            if self.held.contains_key(&k) {
                continue;
            }
            match self.open_partition(k) {
                Ok(s) => {
                    self.held.insert(k, s);
                }
                Err(Error::Locked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next event of a partition this member holds, waiting up to
    /// `timeout`; rebalances when due.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.last_rebalance.is_none_or(|t| t.elapsed() >= self.rebalance_every) {
                self.rebalance()?;
            }
            let keys: Vec<u32> = self.held.keys().copied().collect();
            let n = keys.len();
            for i in 0..n {
                let k = keys[(self.cursor as usize + i) % n];
                if let Some(s) = self.held.get_mut(&k)
                    && let Some(r) = s.try_next()?
                {
                    self.cursor = self.cursor.wrapping_add(1);
                    return Ok(Some(r));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(DEFAULT_POLL_INTERVAL / 4));
        }
    }

    /// Acknowledge `r` (see [`DurableSubscription::ack`]) in its partition.
    pub fn ack(&mut self, r: &OwnedRecord) -> Result<()> {
        let k = self.partition_of(&r.stream);
        match self.held.get_mut(&k) {
            Some(s) => s.ack(r),
            None => Err(Error::InvalidArgument(format!(
                "subscription {:?}: position {} is of partition {k}, which this member does not hold",
                self.name, r.position
            ))),
        }
    }

    /// Commit every partition held, give them back, and leave.
    pub fn close(mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        for (_, s) in held {
            s.close()?;
        }
        let _ = std::fs::remove_file(&self.member_path);
        Ok(())
    }
}

impl Drop for CompetingConsumer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.member_path);
    }
}
