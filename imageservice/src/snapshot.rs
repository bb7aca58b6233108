//! Per-layer snapshot directories: `snapshots/<diff-id hex>/`, each holding
//! exactly one unpacked layer in overlay form. Layers shared by several
//! images are unpacked once. A snapshot is built under a temp name and
//! renamed into place only when its content matched the diff ID.
//!
//! A layer is unpacked either from its stored blob (a repair) or while it
//! downloads ([`SnapshotStore::create_streamed`]): the bytes go at once to
//! the blob being written and through decompression into the snapshot, and
//! both are committed only once the blob matched its digest and the
//! snapshot its diff ID.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};

use crate::config::Limits;
use crate::content::Ingest;
use crate::error::{Error, Result};
use crate::mediatype::Compression;
use crate::reference::digest_hex;
use crate::unpack::{unpack_layer, unpack_stream, UnpackStats};

/// Downloaded pieces queued for a layer's unpack; with the pieces hyper
/// hands out this bounds what one layer holds in memory to about a MiB.
const FEED_DEPTH: usize = 16;

#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    inflight: gantry_common::locks::KeyedLocks,
    /// Half-unpacked snapshots found and removed at open.
    leftovers_removed: usize,
}

const TEMP_PREFIX: &str = ".tmp-";

impl SnapshotStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("creating {}", root.display())))?;
        spread_children(root);
        // Snapshots that never finished unpacking.
        let mut leftovers_removed = 0;
        for entry in std::fs::read_dir(root)
            .map_err(Error::io("listing snapshots"))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                leftovers_removed += 1;
            }
        }
        Ok(SnapshotStore {
            root: root.to_path_buf(),
            inflight: Default::default(),
            leftovers_removed,
        })
    }

    pub fn leftovers_removed(&self) -> usize {
        self.leftovers_removed
    }

    pub fn path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join(digest_hex(diff_id)?))
    }

    pub fn contains(&self, diff_id: &str) -> bool {
        self.path(diff_id).map(|p| p.is_dir()).unwrap_or(false)
    }

    pub async fn lock(&self, diff_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.inflight.lock(diff_id).await
    }

    /// Unpacks `blob` as the snapshot for `diff_id` on a blocking thread.
    /// Nothing is left behind on failure, nor when the caller stops waiting
    /// (its pull failed on another layer): the blocking unpack cannot be
    /// interrupted, so it commits only if the caller still wants it.
    pub async fn create(
        &self,
        diff_id: &str,
        blob: PathBuf,
        compression: Compression,
        limits: Limits,
    ) -> Result<UnpackStats> {
        let root = self.root.clone();
        let diff_id = diff_id.to_string();
        let wanted = Wanted(Arc::new(Mutex::new(true)));
        let still_wanted = wanted.0.clone();
        tokio::task::spawn_blocking(move || {
            create_blocking(&root, &diff_id, &blob, compression, &limits, &still_wanted)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?
    }

    /// Unpacks a layer as `body` downloads it, into the snapshot for
    /// `diff_id`, writing the compressed bytes to `blob` on the way. The
    /// blob and the snapshot are committed together, only when the blob
    /// matched its digest and size and the snapshot its diff ID, and only
    /// while the caller still waits; otherwise neither is left behind. A
    /// failed download is the error, whatever the unpack made of the
    /// truncated stream; a corrupt blob is a digest mismatch even where it
    /// also failed to unpack.
    pub async fn create_streamed<S, E>(
        &self,
        diff_id: &str,
        blob: Ingest,
        compression: Compression,
        limits: Limits,
        mut body: S,
        mut on_chunk: impl FnMut(u64),
    ) -> Result<UnpackStats>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error,
    {
        let root = self.root.clone();
        let diff = diff_id.to_string();
        let wanted = Wanted(Arc::new(Mutex::new(true)));
        let still_wanted = wanted.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(FEED_DEPTH);
        let size = blob.size();
        let task = tokio::task::spawn_blocking(move || {
            let mut tee = Tee {
                rx,
                blob: Some(blob),
                current: Bytes::new(),
                ended: false,
                failure: None,
            };
            create_streamed_blocking(
                &root,
                &diff,
                &mut tee,
                size,
                compression,
                &limits,
                &still_wanted,
            )
        });
        let mut fed = Ok(());
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    on_chunk(chunk.len() as u64);
                    if tx.send(Feed::Data(chunk)).await.is_err() {
                        // The unpack stopped: its result says why.
                        break;
                    }
                }
                Err(e) => {
                    fed = Err(Error::Unreachable {
                        endpoint: format!("layer {diff_id}"),
                        reason: crate::registry::error_chain(&e),
                    });
                    break;
                }
            }
        }
        if fed.is_ok() {
            let _ = tx.send(Feed::End).await;
        }
        drop(tx);
        let unpacked = task
            .await
            .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?;
        drop(wanted);
        fed?;
        unpacked
    }

    /// Unpacks `blob` as the snapshot for `diff_id` on the calling thread:
    /// for the repair at start, before anything else runs.
    pub fn create_now(
        &self,
        diff_id: &str,
        blob: &Path,
        compression: Compression,
        limits: &Limits,
    ) -> Result<UnpackStats> {
        create_blocking(
            &self.root,
            diff_id,
            blob,
            compression,
            limits,
            &Mutex::new(true),
        )
    }

    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(Error::io("listing snapshots"))? {
            let entry = entry.map_err(Error::io("listing snapshots"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TEMP_PREFIX) {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    pub fn remove(&self, diff_id: &str) -> Result<()> {
        match std::fs::remove_dir_all(self.path(diff_id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing snapshot {diff_id}"))(e)),
        }
    }
}

/// One piece of a download for [`SnapshotStore::create_streamed`], or the
/// news that it arrived whole.
enum Feed {
    Data(Bytes),
    End,
}

/// The download as a reader, each piece written to the blob as it is read.
struct Tee {
    rx: tokio::sync::mpsc::Receiver<Feed>,
    blob: Option<Ingest>,
    current: Bytes,
    ended: bool,
    /// Why the stream stopped short: the blob could not be written, more
    /// bytes came than declared, or the download broke off.
    failure: Option<Error>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            if self.failure.is_some() {
                return Err(io::Error::other("the layer download failed"));
            }
            match self.rx.blocking_recv() {
                Some(Feed::Data(piece)) => {
                    let written = match self.blob.as_mut() {
                        Some(blob) => blob.write(&piece),
                        None => Err(Error::Internal("layer blob already verified".into())),
                    };
                    if let Err(e) = written {
                        self.failure = Some(e);
                        return Err(io::Error::other("storing the layer blob failed"));
                    }
                    self.current = piece;
                }
                Some(Feed::End) => self.ended = true,
                None => {
                    self.failure = Some(Error::Internal("the layer download stopped".into()));
                    return Err(io::Error::other("the layer download stopped"));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn create_streamed_blocking(
    root: &Path,
    diff_id: &str,
    tee: &mut Tee,
    size: u64,
    compression: Compression,
    limits: &Limits,
    wanted: &Mutex<bool>,
) -> Result<UnpackStats> {
    let final_path = root.join(digest_hex(diff_id)?);
    let tmp = root.join(format!(
        "{TEMP_PREFIX}{}-{}",
        digest_hex(diff_id)?,
        crate::content::unique()
    ));
    std::fs::create_dir(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let unpacked = unpack_stream(&mut *tee, size, &tmp, compression, limits);
    let result = (|| {
        // The rest of the download (all of it when the unpack gave up
        // early) still goes through the blob, so that corrupt content is
        // told apart from a hostile layer.
        if tee.failure.is_none() {
            let _ = io::copy(&mut *tee, &mut io::sink());
        }
        if let Some(e) = tee.failure.take() {
            return Err(e);
        }
        let blob = tee
            .blob
            .take()
            .ok_or_else(|| Error::Internal("layer blob taken twice".into()))?
            .verify()?;
        let stats = unpacked?;
        commit_snapshot(&stats, diff_id, wanted, &tmp, &final_path, || blob.commit())?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Marks `dir` as the top of directory hierarchies (`chattr +T`), so that
/// ext4 places each snapshot made in it in a block group of its own choice
/// (Orlov) instead of its parent's. Without that, every file of a new
/// snapshot is allocated in the group where the snapshots removed just
/// before were, and on ext4 without a journal each allocation then skips
/// the recently freed inodes one by one: unpacking 5000 files right after
/// removing as many took seconds instead of a fraction of one. Only a hint:
/// other filesystems refuse it and nothing changes.
fn spread_children(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    let outcome = ioctl_getflags(&fd).and_then(|flags| {
        if flags.contains(IFlags::TOPDIR) {
            Ok(())
        } else {
            ioctl_setflags(&fd, flags | IFlags::TOPDIR)
        }
    });
    if let Err(e) = outcome {
        tracing::debug!(dir = %dir.display(), error = %e, "snapshot root not marked as top directory");
    }
}

/// Cleared when the future waiting for an unpack is dropped.
struct Wanted(Arc<Mutex<bool>>);

impl Drop for Wanted {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

fn create_blocking(
    root: &Path,
    diff_id: &str,
    blob: &Path,
    compression: Compression,
    limits: &Limits,
    wanted: &Mutex<bool>,
) -> Result<UnpackStats> {
    let final_path = root.join(digest_hex(diff_id)?);
    let tmp = root.join(format!(
        "{TEMP_PREFIX}{}-{}",
        digest_hex(diff_id)?,
        crate::content::unique()
    ));
    std::fs::create_dir(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let result = unpack_layer(blob, &tmp, compression, limits).and_then(|stats| {
        commit_snapshot(&stats, diff_id, wanted, &tmp, &final_path, || Ok(()))?;
        Ok(stats)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Commits an unpacked snapshot (and first, with `also`, whatever goes
/// with it: the streamed blob) if it is the layer the image names and its
/// pull still wants it. Checked and renamed under the lock the caller's
/// drop takes, so a snapshot is either committed before its pull gave up
/// (and that pull's cleanup sees it) or not at all.
fn commit_snapshot(
    stats: &UnpackStats,
    diff_id: &str,
    wanted: &Mutex<bool>,
    tmp: &Path,
    final_path: &Path,
    also: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if stats.diff_id != diff_id {
        return Err(Error::DigestMismatch {
            digest: diff_id.to_string(),
            reason: format!(
                "the layer unpacks to content with diff ID {}",
                stats.diff_id
            ),
        });
    }
    let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
    if !*wanted {
        return Err(Error::Internal(format!(
            "unpack of {diff_id} abandoned: its pull failed"
        )));
    }
    also()?;
    std::fs::rename(tmp, final_path).map_err(Error::io("committing snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{sha256_digest, ContentStore};

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            // Raw, so that hostile names survive.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(tar: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, tar).unwrap();
        gz.finish().unwrap()
    }

    /// The body as a download hands it over, in pieces of `piece` bytes,
    /// broken off with an error after `fail_after` pieces if given.
    fn body(
        bytes: &[u8],
        piece: usize,
        fail_after: Option<usize>,
    ) -> impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Unpin {
        let mut pieces: Vec<std::result::Result<Bytes, std::io::Error>> = bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if let Some(n) = fail_after {
            pieces.truncate(n);
            pieces.push(Err(std::io::Error::other("connection reset")));
        }
        futures_util::stream::iter(pieces)
    }

    struct Stores {
        dir: tempfile::TempDir,
        content: ContentStore,
        snapshots: SnapshotStore,
    }

    impl Stores {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let content = ContentStore::open(&dir.path().join("content")).unwrap();
            let snapshots = SnapshotStore::open(&dir.path().join("snapshots")).unwrap();
            Stores {
                dir,
                content,
                snapshots,
            }
        }

        /// Streams `sent` as the blob `digest` of `size` bytes into the
        /// snapshot `diff_id`.
        async fn stream(
            &self,
            digest: &str,
            size: u64,
            diff_id: &str,
            sent: impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Unpin,
        ) -> Result<UnpackStats> {
            let blob = self.content.begin(digest, size).unwrap();
            let mut seen = 0;
            let r = self
                .snapshots
                .create_streamed(
                    diff_id,
                    blob,
                    Compression::Gzip,
                    Limits::default(),
                    sent,
                    |n| seen += n,
                )
                .await;
            assert!(seen <= size.max(1) * 2);
            r
        }

        /// Nothing but what was committed: no temp snapshot, no ingest file.
        fn leftovers(&self) -> Vec<String> {
            let mut out = Vec::new();
            for dir in ["snapshots", "content/ingest"] {
                for e in std::fs::read_dir(self.dir.path().join(dir))
                    .unwrap()
                    .flatten()
                {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(TEMP_PREFIX) {
                        out.push(format!("{dir}/{name}"));
                    }
                }
            }
            out
        }
    }

    /// Where the filesystem takes the Orlov hint at all (ext4), the
    /// snapshot root carries it.
    #[test]
    fn the_snapshot_root_spreads_its_snapshots_over_block_groups() {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags, Mode, OFlags};
        let dir = tempfile::tempdir().unwrap();
        let open_dir = |p: &Path| {
            rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
        };
        let probe = dir.path().join("probe");
        std::fs::create_dir(&probe).unwrap();
        let fd = open_dir(&probe);
        let supported = ioctl_getflags(&fd)
            .and_then(|f| ioctl_setflags(&fd, f | IFlags::TOPDIR))
            .is_ok();
        let root = dir.path().join("snapshots");
        SnapshotStore::open(&root).unwrap();
        let flags = ioctl_getflags(open_dir(&root));
        if supported {
            assert!(flags.unwrap().contains(IFlags::TOPDIR));
        } else {
            eprintln!("skipping: this filesystem takes no TOPDIR flag");
        }
    }

    #[tokio::test]
    async fn a_streamed_layer_commits_its_blob_and_snapshot_together() {
        let s = Stores::new();
        let tar = tar_of(&[("a/b", b"bee"), ("c", &[9u8; 100_000])]);
        let gz = gzip(&tar);
        let (digest, diff_id) = (sha256_digest(&gz), sha256_digest(&tar));
        let stats = s
            .stream(&digest, gz.len() as u64, &diff_id, body(&gz, 1000, None))
            .await
            .unwrap();
        assert_eq!(stats.diff_id, diff_id);
        assert_eq!(stats.entries, 2);
        assert!(s.snapshots.contains(&diff_id));
        let snap = s.snapshots.path(&diff_id).unwrap();
        assert_eq!(std::fs::read(snap.join("a/b")).unwrap(), b"bee");
        assert_eq!(std::fs::read(snap.join("c")).unwrap(), vec![9u8; 100_000]);
        // The blob is kept whole, for repairs and leases.
        assert_eq!(s.content.read(&digest, u64::MAX).unwrap(), gz);
        assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    }

    #[tokio::test]
    async fn a_corrupt_layer_commits_nothing() {
        let tar = tar_of(&[("f", &[7u8; 4096])]);
        let gz = gzip(&tar);
        let (digest, diff_id) = (sha256_digest(&gz), sha256_digest(&tar));
        let mut flipped_end = gz.clone();
        let last = flipped_end.len() - 1;
        flipped_end[last] ^= 0xff;
        let mut flipped_data = gz.clone();
        flipped_data[gz.len() / 2] ^= 0x55;
        let mut longer = gz.clone();
        longer.extend_from_slice(b"trailing");
        for (what, sent) in [
            ("gzip trailer", flipped_end),
            ("compressed data", flipped_data),
            ("extra bytes", longer),
            ("short", gz[..gz.len() - 3].to_vec()),
        ] {
            let s = Stores::new();
            let e = s
                .stream(&digest, gz.len() as u64, &diff_id, body(&sent, 512, None))
                .await
                .unwrap_err();
            match &e {
                Error::DigestMismatch { digest: d, .. } => assert_eq!(d, &digest, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            assert!(!s.snapshots.contains(&diff_id), "{what}");
            assert!(!s.content.contains(&digest), "{what}: the blob stays");
            assert!(s.content.list().unwrap().is_empty(), "{what}");
            assert!(s.snapshots.list().unwrap().is_empty(), "{what}");
            assert!(s.leftovers().is_empty(), "{what}: {:?}", s.leftovers());
        }
    }

    #[tokio::test]
    async fn a_layer_that_is_not_its_diff_id_or_is_hostile_commits_nothing() {
        let tar = tar_of(&[("f", b"x")]);
        let gz = gzip(&tar);
        let digest = sha256_digest(&gz);
        let s = Stores::new();
        let wrong = sha256_digest(b"another layer");
        let e = s
            .stream(&digest, gz.len() as u64, &wrong, body(&gz, 64, None))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::DigestMismatch { digest: d, .. } if d == &wrong),
            "{e:?}"
        );
        assert!(s.content.list().unwrap().is_empty());
        assert!(s.snapshots.list().unwrap().is_empty());

        // Verified bytes, but an entry that would leave the snapshot.
        let evil = tar_of(&[("../escaped", b"x")]);
        let gz = gzip(&evil);
        let e = s
            .stream(
                &sha256_digest(&gz),
                gz.len() as u64,
                &sha256_digest(&evil),
                body(&gz, 64, None),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UnsafeEntry { .. }), "{e:?}");
        assert!(s.content.list().unwrap().is_empty());
        assert!(s.snapshots.list().unwrap().is_empty());
        assert!(!s.dir.path().join("escaped").exists());
        assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    }

    #[tokio::test]
    async fn a_broken_download_is_the_error_and_leaves_nothing() {
        let tar = tar_of(&[("f", &[3u8; 50_000])]);
        let gz = gzip(&tar);
        let (digest, diff_id) = (sha256_digest(&gz), sha256_digest(&tar));
        let s = Stores::new();
        let e = s
            .stream(&digest, gz.len() as u64, &diff_id, body(&gz, 16, Some(2)))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        assert!(s.content.list().unwrap().is_empty());
        assert!(s.snapshots.list().unwrap().is_empty());
        assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    }

    /// A pull that gives up (another layer failed) while its layer still
    /// unpacks: the unpack finishes on its thread and commits nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_stream_commits_nothing() {
        let tar = tar_of(&[("f", &[5u8; 200_000])]);
        let gz = gzip(&tar);
        let (digest, diff_id) = (sha256_digest(&gz), sha256_digest(&tar));
        let s = Stores::new();
        // Half the body, then a download that never ends.
        let half = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            Bytes::copy_from_slice(&gz[..gz.len() / 2]),
        )])
        .chain(futures_util::stream::pending());
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            s.stream(&digest, gz.len() as u64, &diff_id, Box::pin(half)),
        )
        .await;
        assert!(r.is_err(), "the stream cannot finish");
        // The unpack thread sees the end of its feed and cleans up.
        for _ in 0..100 {
            if s.leftovers().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
        assert!(s.content.list().unwrap().is_empty());
        assert!(s.snapshots.list().unwrap().is_empty());
    }
}
