//! The log shipped to object storage (feature `remote`, spec 23): a remote
//! log is a folder of immutable objects in an S3 bucket (or any store the
//! `object_store` crate speaks: S3-compatible stores, a local folder,
//! memory) plus a manifest, versioned as one object per version.
//!
//! - [`RemoteLog`]: an address (`s3://bucket/prefix`, `file:///path`) and
//!   the store behind it, configured from the standard AWS environment
//!   variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`);
//! - [`Replicator`]: ships what a log directory holds durably (sealed
//!   segments and their index files whole, the active segment in parts) and
//!   writes a new manifest, taking the remote log with a fencing epoch
//!   first (a newer epoch in the store stops it: [`Error::Fenced`]);
//! - [`restore`]: a local log rebuilt from a manifest, cut at a batch
//!   boundary;
//! - [`Replica`]: a local read-only copy kept up to date round by round
//!   (`annal follow`), read by any [`Reader`](crate::Reader);
//! - [`RemoteReader`] ([`Reader::open_remote`](crate::Reader::open_remote)):
//!   views of a remote log over a replica in a cache directory.
//!
//! Invariants: an object is written once and never changed (segment and
//! part objects are named by their content's BLAKE3; a manifest version is
//! created only if absent, `If-None-Match: *`); a manifest names only
//! objects written before it, each with its length and BLAKE3, which every
//! read checks; the latest manifest is found by probing names upward from
//! a known one, never from a listing.

mod gc;
mod manifest;
mod reader;
mod replica;
mod restore;
mod ship;
mod tier;
mod transfer;

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

pub use gc::{GcReport, Keep};
pub use manifest::{ActiveEntry, Manifest, Part, SealedEntry, Shipped};
pub use reader::RemoteReader;
pub use replica::{REPLICA_FILE, Replica, ReplicaReport};
pub use restore::{RestoreReport, RestoreTo, restore};
pub use ship::{Follow, Replicator, ShipReport};
pub use tier::{CacheStats, DEFAULT_CACHE_BYTES};
pub(crate) use tier::{RemoteTier, SegmentCache};

/// A remote log: a store and the prefix its objects live under.
#[derive(Debug, Clone)]
pub struct RemoteLog {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// The longest one request may take before it counts as failed.
    timeout: std::time::Duration,
}

/// How long one request to the store may take by default before it counts
/// as failed (and is retried by a following replicator).
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The runtime every S3 request of this process runs on (one thread,
/// started with the first remote log). Connections are pooled per store and
/// a pooled connection belongs to the runtime that opened it: a store used
/// from two runtimes (a writer's replicator thread and a remote reader's
/// current-thread runtime, say) would otherwise park requests on a
/// connection whose runtime is not being driven, until they time out.
fn io_runtime(url: &str) -> Result<tokio::runtime::Handle> {
    static IO: std::sync::OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    match IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("annal-remote-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    }) {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(Error::Remote {
            object: url.to_owned(),
            detail: format!("starting the runtime for requests: {e}"),
        }),
    }
}

/// What a create-if-absent put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    /// This put created the object.
    Created,
    /// The object already existed (it was left as it was).
    Existed,
}

impl RemoteLog {
    /// The remote log at `url`: `s3://bucket/prefix` (credentials, endpoint
    /// and region from the standard AWS environment variables; conditional
    /// puts by ETag, which S3 and SeaweedFS honour) or `file:///path` (a
    /// local folder, created if missing).
    pub fn open(url: &str) -> Result<RemoteLog> {
        RemoteLog::open_with_options(url, std::iter::empty::<(&str, &str)>())
    }

    /// [`RemoteLog::open`] with S3 settings given here rather than in the
    /// environment (each over the environment's): `object_store`'s
    /// configuration keys, such as `aws_endpoint_url`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`, `aws_allow_http`.
    pub fn open_with_options<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<RemoteLog> {
        let bad = |detail: String| Error::Remote {
            object: url.to_owned(),
            detail,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("expected s3://BUCKET/PREFIX".into()));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env();
            for (k, v) in options {
                let key = k
                    .as_ref()
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| bad(format!("the option {:?}: {e}", k.as_ref())))?;
                builder = builder.with_config(key, v);
            }
            let store = builder
                .with_http_connector(object_store::client::SpawnedReqwestConnector::new(io_runtime(url)?))
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                .build()
                .map_err(|e| bad(format!("configuring the S3 client: {e}")))?;
            return Ok(RemoteLog::from_store(Arc::new(store), prefix, url));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("expected file:///ABSOLUTE/PATH".into()));
            }
            std::fs::create_dir_all(path).map_err(|e| bad(format!("creating the folder: {e}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| bad(format!("opening the folder: {e}")))?;
            return Ok(RemoteLog::from_store(Arc::new(store), "", url));
        }
        Err(bad("expected an address s3://BUCKET/PREFIX or file:///PATH".into()))
    }

    /// A remote log in `store` under `prefix`; `url` names it in messages.
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> RemoteLog {
        RemoteLog {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.to_owned(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The longest one request may take before it counts as failed
    /// ([`DEFAULT_REQUEST_TIMEOUT`] unless set).
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> RemoteLog {
        self.timeout = timeout;
        self
    }

    /// Run one request against the store, failing it after the timeout.
    async fn request<T>(
        &self,
        object: &str,
        what: &str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| self.error(object, format!("{what}: no answer within {:?}", self.timeout)))
    }

    /// The bytes `range` of `object`: exactly the range's length, or an
    /// error naming the object.
    pub(crate) async fn get_range(&self, object: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let want = range.end - range.start;
        let at = range.start;
        let got = self
            .request(object, "GET (a range)", self.store.get_range(&self.path(object), range))
            .await?;
        match got {
            Ok(b) if b.len() as u64 == want => Ok(b.to_vec()),
            Ok(b) => Err(self.error(
                object,
                format!("expected {want} bytes at offset {at}, found {}", b.len()),
            )),
            Err(object_store::Error::NotFound { .. }) => {
                Err(self.error(object, "expected the object the manifest names, found none"))
            }
            Err(e) => Err(self.error(object, format!("GET of {want} bytes at offset {at}: {e}"))),
        }
    }

    /// Run `f` on the process's I/O runtime and wait for it, from code
    /// that is not async (a reader's view, a mapping made on first use).
    /// Blocks the calling thread as a file read does.
    pub(crate) fn block<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let rt = io_runtime(&self.url)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .map_err(|_| self.error("", "the request's task ended without an answer"))?
    }

    /// The address this remote log was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, object: &str) -> ObjectPath {
        object.split('/').fold(self.prefix.clone(), |p, part| p.child(part))
    }

    /// An error naming `object` of this remote log.
    pub(crate) fn error(&self, object: &str, detail: impl std::fmt::Display) -> Error {
        Error::Remote {
            object: format!("{}/{object}", self.url.trim_end_matches('/')),
            detail: detail.to_string(),
        }
    }

    /// The bytes of `object`; `Ok(None)` if there is none.
    pub(crate) async fn get(&self, object: &str) -> Result<Option<bytes::Bytes>> {
        let path = self.path(object);
        let got = self
            .request(object, "GET", async {
                match self.store.get(&path).await {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                }
            })
            .await?;
        match got {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(object, format!("GET: {e}"))),
        }
    }

    /// Write `object` (a content-addressed one: the same name always holds
    /// the same bytes).
    pub(crate) async fn put(&self, object: &str, bytes: Vec<u8>) -> Result<()> {
        self.request(
            object,
            "PUT",
            self.store.put(&self.path(object), PutPayload::from(bytes)),
        )
        .await?
        .map(|_| ())
        .map_err(|e| self.error(object, format!("PUT: {e}")))
    }

    /// Create `object` with `bytes` unless it exists (`If-None-Match: *`).
    pub(crate) async fn create(&self, object: &str, bytes: Vec<u8>) -> Result<Created> {
        let opts = PutOptions::from(PutMode::Create);
        let path = self.path(object);
        let put = self.store.put_opts(&path, PutPayload::from(bytes), opts);
        match self.request(object, "PUT (If-None-Match)", put).await? {
            Ok(_) => Ok(Created::Created),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(Created::Existed)
            }
            Err(e) => Err(self.error(object, format!("PUT: {e}"))),
        }
    }

    /// The manifest `seq`, if it exists.
    pub(crate) async fn manifest(&self, seq: u64) -> Result<Option<Manifest>> {
        let object = manifest::manifest_object(seq);
        match self.get(&object).await? {
            None => Ok(None),
            Some(b) => {
                let m =
                    Manifest::decode(&b).map_err(|(at, what)| self.error(&object, format!("at byte {at}: {what}")))?;
                if m.seq != seq {
                    return Err(self.error(&object, format!("expected \"seq\": {seq} (its name), found {}", m.seq)));
                }
                Ok(Some(m))
            }
        }
    }

    /// The newest manifest, found by probing `manifest/<seq>` upward from
    /// `from` (a version known to exist, or 1): `None` if the remote log has
    /// none. Versions are created in order and removed only from the oldest
    /// on (spec 23.8), so the versions that exist are `floor..=newest`:
    /// gallop up in doubling steps to the first missing one, then search
    /// between the last found and it (O(log n) GETs, whatever the number of
    /// versions).
    ///
    /// If `from` was removed by garbage collection, the search starts at
    /// the floor instead; and since a collection may remove the versions
    /// the search passes over while it runs, the floor is read after it: a
    /// floor above the version found starts the search again from there.
    pub async fn latest_manifest_from(&self, from: u64) -> Result<Option<Manifest>> {
        let mut from = from.max(1);
        for _ in 0..8 {
            let Some(mut newest) = self.first_manifest_from(from).await? else {
                return Ok(None);
            };
            let mut step = 1u64;
            let mut missing = loop {
                let seq = newest.seq.saturating_add(step);
                match self.manifest(seq).await? {
                    Some(m) => newest = m,
                    None => break seq,
                }
                step = step.saturating_mul(2);
            };
            while missing - newest.seq > 1 {
                let mid = newest.seq + (missing - newest.seq) / 2;
                match self.manifest(mid).await? {
                    Some(m) => newest = m,
                    None => missing = mid,
                }
            }
            let floor = self.floor().await?;
            if floor <= newest.seq {
                return Ok(Some(newest));
            }
            from = floor;
        }
        Err(self.error(
            manifest::FLOOR_OBJECT,
            "expected the newest manifest version at or above the floor, found the floor above every version found \
             in 8 searches (the floor keeps moving)",
        ))
    }

    /// The newest manifest (`None`: nothing was shipped here yet).
    pub async fn latest_manifest(&self) -> Result<Option<Manifest>> {
        self.latest_manifest_from(1).await
    }

    /// Manifest `from`, or, if it was collected, the floor's (spec 23.8:
    /// read again while a collection moves the floor): `None` if the remote
    /// log has no manifest from there on (`from` is 1: nothing was shipped).
    async fn first_manifest_from(&self, from: u64) -> Result<Option<Manifest>> {
        if let Some(m) = self.manifest(from).await? {
            return Ok(Some(m));
        }
        for _ in 0..8 {
            let floor = self.floor().await?;
            if floor <= from {
                if from == 1 {
                    // Nothing was shipped, or nothing collected.
                    return Ok(None);
                }
                // A version read before is gone, and the floor is not above
                // it: a floor moved back, or versions removed by hand.
                return Err(self.error(
                    &manifest::manifest_object(from),
                    format!(
                        "expected this version (read before) or a floor above it, found neither (the floor is \
                         {floor})"
                    ),
                ));
            }
            if let Some(m) = self.manifest(floor).await? {
                return Ok(Some(m));
            }
        }
        Err(self.error(
            manifest::FLOOR_OBJECT,
            "expected the manifest the floor names, found none in 8 tries (the floor keeps moving, or a version \
             above it was removed)",
        ))
    }
}

/// Something that works in rounds against a remote log: a replicator, a
/// replica.
pub(crate) trait Rounds {
    /// What a round reports.
    type Report;
    /// One round.
    async fn round(&mut self) -> Result<Self::Report>;
    /// Whether a failed round ends the following (else it is retried).
    fn fatal(e: &Error) -> bool;
}

/// Run a round of `r` every `follow.interval` until `stop` completes. A
/// round that fails with an error `R::fatal` does not name (the store, the
/// network, a timeout) is retried after a backoff (doubling from
/// `min_backoff` to `max_backoff`, reset by a round that succeeds); a fatal
/// one ends the following with it. `each` sees every round's outcome.
pub(crate) async fn rounds<R: Rounds>(
    r: &mut R,
    follow: Follow,
    mut each: impl FnMut(&Result<R::Report>),
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = follow.min_backoff;
    loop {
        let round = r.round().await;
        each(&round);
        let wait = match &round {
            Ok(_) => {
                backoff = follow.min_backoff;
                follow.interval
            }
            Err(e) if R::fatal(e) => return round.map(|_| ()),
            Err(_) => {
                let w = backoff;
                backoff = backoff.saturating_mul(2).min(follow.max_backoff);
                w
            }
        };
        let mut sleep = std::pin::pin!(tokio::time::sleep(wait));
        let stopped = std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(true);
            }
            sleep.as_mut().poll(cx).map(|()| false)
        })
        .await;
        if stopped {
            return Ok(());
        }
    }
}
