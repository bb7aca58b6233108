//! The content-addressed blob store: `blobs/sha256/<hex>` under the image
//! root. A blob becomes visible only after every byte was checked against its
//! digest and size: it is written to `ingest/`, fsynced and renamed into
//! place, so a crash or a bad download never leaves a partial blob under a
//! digest name.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::reference::digest_hex;

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `bytes` to `path` atomically and durably (see
/// [`gantry_common::fs::write_atomic_mode`]); the store's files are not
/// secret.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    gantry_common::fs::write_atomic_mode(path, bytes, 0o644)
}

/// A temp file that removes itself unless its path was cleared.
struct TempPath(PathBuf, std::fs::File);

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<TempPath> {
    for attempt in 0..16u32 {
        let name = format!(".tmp-{}-{}-{attempt}", std::process::id(), unique());
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok(TempPath(path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a unique temp file"))
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48)
}

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    /// One lock per digest being written, so concurrent pulls of images that
    /// share a blob download it once.
    inflight: gantry_common::locks::KeyedLocks,
    /// Partial downloads found and removed at open.
    leftovers_removed: usize,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        std::fs::create_dir_all(&blobs)
            .map_err(Error::io(format!("creating {}", blobs.display())))?;
        // Whatever is left in ingest/ is from a write that never completed.
        let leftovers_removed = std::fs::read_dir(&ingest).map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::remove_dir_all(&ingest);
        std::fs::create_dir_all(&ingest)
            .map_err(Error::io(format!("creating {}", ingest.display())))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
            inflight: Default::default(),
            leftovers_removed,
        })
    }

    pub fn leftovers_removed(&self) -> usize {
        self.leftovers_removed
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Serialises writers of one digest; hold the guard while checking for and
    /// writing the blob.
    pub async fn lock(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.inflight.lock(digest).await
    }

    /// Stores bytes already in memory after checking them.
    pub fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                digest: digest.to_string(),
                reason: format!("content hashes to {actual}"),
            });
        }
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        // A unique temp name: concurrent pulls may store the same manifest,
        // and renaming identical content over itself is harmless.
        let mut staged =
            tempfile_in(&self.root.join("ingest")).map_err(Error::io("creating ingest file"))?;
        staged
            .1
            .write_all(bytes)
            .and_then(|_| staged.1.sync_all())
            .and_then(|_| std::fs::rename(&staged.0, &path))
            .map_err(Error::io(format!("storing blob {digest}")))?;
        staged.0 = PathBuf::new();
        Ok(())
    }

    /// Streams a blob into the store, verifying size and digest on the fly;
    /// `on_chunk` sees the byte count of every chunk (progress, metrics).
    pub async fn ingest<S, E>(
        &self,
        digest: &str,
        size: u64,
        mut body: S,
        mut on_chunk: impl FnMut(u64),
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::error::Error,
    {
        let path = self.blob_path(digest)?;
        let ingest_dir = self.root.join("ingest");
        let mut staged = tempfile_in(&ingest_dir).map_err(Error::io("creating ingest file"))?;
        let mut file = tokio::fs::File::from_std(
            staged
                .1
                .try_clone()
                .map_err(Error::io("cloning ingest file handle"))?,
        );
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Unreachable {
                endpoint: format!("blob {digest}"),
                reason: crate::registry::error_chain(&e),
            })?;
            written += chunk.len() as u64;
            if written > size {
                return Err(Error::DigestMismatch {
                    digest: digest.to_string(),
                    reason: format!(
                        "registry sent more than the {size} bytes the manifest declares"
                    ),
                });
            }
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(Error::io("writing ingest file"))?;
            on_chunk(chunk.len() as u64);
        }
        if written != size {
            return Err(Error::DigestMismatch {
                digest: digest.to_string(),
                reason: format!("registry sent {written} bytes, the manifest declares {size}"),
            });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(Error::DigestMismatch {
                digest: digest.to_string(),
                reason: format!("downloaded content hashes to {actual}"),
            });
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(Error::io("flushing ingest file"))?;
        file.sync_all()
            .await
            .map_err(Error::io("syncing ingest file"))?;
        std::fs::rename(&staged.0, &path)
            .map_err(Error::io(format!("committing blob {digest}")))?;
        staged.0 = PathBuf::new();
        Ok(())
    }

    /// Starts writing a blob whose bytes arrive piecemeal and are checked
    /// only at the end ([`Ingest::verify`]): nothing is visible under the
    /// digest until [`VerifiedBlob::commit`], and a dropped ingest leaves
    /// nothing behind.
    pub fn begin(&self, digest: &str, size: u64) -> Result<Ingest> {
        let path = self.blob_path(digest)?;
        let staged =
            tempfile_in(&self.root.join("ingest")).map_err(Error::io("creating ingest file"))?;
        Ok(Ingest {
            digest: digest.to_string(),
            size,
            path,
            staged,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Reads a stored blob, refusing blobs over `max` bytes.
    pub fn read(&self, digest: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let len = std::fs::metadata(&path)
            .map_err(Error::io(format!("reading blob {digest}")))?
            .len();
        if len > max {
            return Err(Error::LimitExceeded(format!(
                "blob {digest} is {len} bytes, over {max}"
            )));
        }
        std::fs::read(&path).map_err(Error::io(format!("reading blob {digest}")))
    }

    /// All stored digests.
    pub fn list(&self) -> Result<Vec<String>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(&dir).map_err(Error::io(format!("listing {}", dir.display())))?
        {
            let entry = entry.map_err(Error::io("listing blobs"))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    pub fn remove(&self, digest: &str) -> Result<()> {
        match std::fs::remove_file(self.blob_path(digest)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing blob {digest}"))(e)),
        }
    }
}

/// A blob being written, hashed as it goes.
pub struct Ingest {
    digest: String,
    size: u64,
    path: PathBuf,
    staged: TempPath,
    hasher: Sha256,
    written: u64,
}

impl Ingest {
    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes; more than the declared size is refused.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.size {
            return Err(Error::DigestMismatch {
                digest: self.digest.clone(),
                reason: format!(
                    "registry sent more than the {} bytes the manifest declares",
                    self.size
                ),
            });
        }
        self.hasher.update(bytes);
        self.staged
            .1
            .write_all(bytes)
            .map_err(Error::io("writing ingest file"))
    }

    /// Checks size and digest and makes the bytes durable, still under the
    /// temp name.
    pub fn verify(self) -> Result<VerifiedBlob> {
        if self.written != self.size {
            return Err(Error::DigestMismatch {
                digest: self.digest,
                reason: format!(
                    "registry sent {} bytes, the manifest declares {}",
                    self.written, self.size
                ),
            });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                digest: self.digest,
                reason: format!("downloaded content hashes to {actual}"),
            });
        }
        self.staged
            .1
            .sync_all()
            .map_err(Error::io("syncing ingest file"))?;
        Ok(VerifiedBlob {
            digest: self.digest,
            path: self.path,
            staged: self.staged,
        })
    }
}

/// A blob that matched its digest, not yet visible in the store.
pub struct VerifiedBlob {
    digest: String,
    path: PathBuf,
    staged: TempPath,
}

impl VerifiedBlob {
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.staged.0, &self.path)
            .map_err(Error::io(format!("committing blob {}", self.digest)))?;
        self.staged.0 = PathBuf::new();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(bytes::Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verified_ingest_commits_and_bad_ingest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = sha256_digest(b"hello world");
        store
            .ingest(&good, 11, chunks(&[b"hello ", b"world"]), |_| {})
            .await
            .unwrap();
        assert_eq!(store.read(&good, 100).unwrap(), b"hello world");
        assert!(store.read(&good, 5).is_err());

        let wrong = sha256_digest(b"something else");
        let err = store
            .ingest(&wrong, 11, chunks(&[b"hello world"]), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        let err = store
            .ingest(&wrong, 3, chunks(&[b"hello world"]), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        let err = store
            .ingest(&wrong, 30, chunks(&[b"hello world"]), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert!(!store.contains(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(store.list().unwrap(), vec![good.clone()]);
        store.remove(&good).unwrap();
        store.remove(&good).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn put_bytes_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(store.put_bytes(&sha256_digest(b"a"), b"b").is_err());
        store.put_bytes(&sha256_digest(b"a"), b"a").unwrap();
        assert!(store.contains(&sha256_digest(b"a")));
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
