//! Moving whole files to and from the store in bounded memory: uploads of
//! large files in parts (multipart), downloads as a stream of chunks, each
//! checked against the manifest's length and BLAKE3 as it arrives.
//!
//! Invariants: at most [`CHUNK`] bytes of a file (times the parts in
//! flight) are in memory at once; a download hands its bytes to the caller
//! before the last check, so a caller that wrote them undoes the write when
//! the download fails (the error names the object and what differed).

use std::fs::File;
use std::path::Path;

use object_store::{ObjectStore, WriteMultipart};

use crate::error::{Error, Result};
use crate::read::view::pread;

use super::RemoteLog;
use super::manifest::Shipped;

/// The size of one chunk read from a file or one part of an upload: files
/// up to this size are uploaded in one request.
pub(crate) const CHUNK: usize = 8 << 20;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// BLAKE3 of the first `len` bytes of `file` (64 hex digits), read in
/// chunks.
pub(crate) fn hash_file(file: &File, path: &Path, len: u64) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).unwrap_or(CHUNK).min(CHUNK);
        let chunk = buf.get_mut(..n).unwrap_or_default();
        pread(file, chunk, at, path)?;
        hasher.update(chunk);
        at += n as u64;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

impl RemoteLog {
    /// Upload the first `len` bytes of `file` as `object` unless an object
    /// of that length is there (content-addressed: the name says the bytes).
    /// Up to [`CHUNK`] bytes in one request; larger files in parts of
    /// [`CHUNK`] bytes, each read when its turn comes.
    pub(crate) async fn upload_file(&self, object: &str, file: &File, path: &Path, len: u64) -> Result<()> {
        if len <= CHUNK as u64 {
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            pread(file, &mut bytes, 0, path)?;
            self.create(object, bytes).await?;
            return Ok(());
        }
        if self.len_of(object).await? == Some(len) {
            return Ok(());
        }
        let store_path = self.path(object);
        let upload = self
            .request(object, "multipart upload", self.store.put_multipart(&store_path))
            .await?
            .map_err(|e| self.error(object, format!("starting a multipart upload: {e}")))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        while at < len {
            let n = usize::try_from(len - at).unwrap_or(CHUNK).min(CHUNK);
            let chunk = buf.get_mut(..n).unwrap_or_default();
            pread(file, chunk, at, path)?;
            let waited = self
                .request(object, "upload part", w.wait_for_capacity(PARTS_IN_FLIGHT))
                .await;
            if let Err(e) = waited.and_then(|r| r.map_err(|e| self.error(object, format!("uploading a part: {e}")))) {
                let _ = w.abort().await;
                return Err(e);
            }
            w.write(chunk);
            at += n as u64;
        }
        self.request(object, "complete multipart upload", w.finish())
            .await?
            .map(|_| ())
            .map_err(|e| self.error(object, format!("completing the multipart upload: {e}")))
    }

    /// Stream `s`'s object to `sink` chunk by chunk, checking that it is
    /// `s.len` bytes (never reading past them) with BLAKE3 `s.blake3`. An
    /// error names the object; the sink has then seen bytes that must not be
    /// used.
    pub(crate) async fn download(&self, s: &Shipped, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let path = self.path(&s.object);
        let got = self.request(&s.object, "GET", self.store.get(&path)).await?;
        let mut stream = match got {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.error(&s.object, "expected the object the manifest names, found none"));
            }
            Err(e) => return Err(self.error(&s.object, format!("GET: {e}"))),
        };
        let mut hasher = blake3::Hasher::new();
        let mut seen = 0u64;
        loop {
            let next = async { Ok(std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await) };
            let chunk = match self.request(&s.object, "GET (reading the body)", next).await? {
                Ok(None) => break,
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) | Err(e) => return Err(self.error(&s.object, format!("GET: {e}"))),
            };
            seen += chunk.len() as u64;
            if seen > s.len {
                return Err(self.error(
                    &s.object,
                    format!("expected {} bytes (the manifest), found more", s.len),
                ));
            }
            hasher.update(&chunk);
            sink(&chunk)?;
        }
        if seen != s.len {
            return Err(self.error(
                &s.object,
                format!("expected {} bytes (the manifest), found {seen}", s.len),
            ));
        }
        let hash = hasher.finalize().to_hex().to_string();
        if hash != s.blake3 {
            return Err(self.error(
                &s.object,
                format!("expected BLAKE3 {} (the manifest), found {hash}", s.blake3),
            ));
        }
        Ok(())
    }

    /// The length of `object`, if it exists.
    async fn len_of(&self, object: &str) -> Result<Option<u64>> {
        match self
            .request(object, "HEAD", self.store.head(&self.path(object)))
            .await?
        {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(object, format!("HEAD: {e}"))),
        }
    }
}

/// A sink writing a download to `file` from offset `at` on.
pub(crate) fn to_file<'a>(
    file: &'a dyn crate::storage::io::IoFile,
    path: &'a Path,
    mut at: u64,
) -> impl FnMut(&[u8]) -> Result<()> + 'a {
    move |chunk: &[u8]| {
        file.write_at(at, chunk).map_err(|e| Error::io("write", path, e))?;
        at += chunk.len() as u64;
        Ok(())
    }
}
