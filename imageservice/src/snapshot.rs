//! Per-layer snapshot directories: `snapshots/<diff-id hex>/`, each holding
//! exactly one unpacked layer in overlay form. Layers shared by several
//! images are unpacked once. A snapshot is built under a temp name and
//! renamed into place only when its content matched the diff ID.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::mediatype::Compression;
use crate::reference::digest_hex;
use crate::unpack::{unpack_layer, UnpackStats};

#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    inflight: crate::locks::KeyedLocks,
    /// Half-unpacked snapshots found and removed at open.
    leftovers_removed: usize,
}

const TEMP_PREFIX: &str = ".tmp-";

impl SnapshotStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("creating {}", root.display())))?;
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
        if stats.diff_id != diff_id {
            return Err(Error::DigestMismatch {
                digest: diff_id.to_string(),
                reason: format!(
                    "the layer unpacks to content with diff ID {}",
                    stats.diff_id
                ),
            });
        }
        // Checked and renamed under the lock the caller's drop takes, so a
        // snapshot is either committed before its pull gave up (and that
        // pull's cleanup sees it) or not at all.
        let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
        if !*wanted {
            return Err(Error::Internal(format!(
                "unpack of {diff_id} abandoned: its pull failed"
            )));
        }
        std::fs::rename(&tmp, &final_path).map_err(Error::io("committing snapshot"))?;
        Ok(stats)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
