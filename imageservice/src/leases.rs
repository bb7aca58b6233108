//! The claims containers hold on image content: one record per lease,
//! `leases/<lease id>.json`, written atomically, naming its owner (a
//! container ID) and every blob and snapshot it keeps alive. While a lease
//! exists garbage collection leaves that content alone, even after the
//! image that brought it is removed, so a running container never loses
//! its lower layers. The records survive restarts and crashes; leases
//! whose owner no longer exists are dropped by the runtime's reconciliation
//! at start ([`crate::store::ImageStore::retain_owners`]).
//!
//! This module only keeps the records; the store takes its write lock
//! around every change, so that a lease and a garbage collection never
//! race.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::content::write_atomic;
use crate::error::{Error, Result};

const RECORD_VERSION: u32 = 1;
/// Lease and owner IDs are file names: container IDs are 64 hex digits,
/// and a volume's lease adds a short suffix.
const MAX_ID_LEN: usize = 128;

/// One claim on an image's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContentLease {
    pub version: u32,
    pub id: String,
    /// Whose lease it is: released together, and dropped at start when the
    /// owner is gone.
    pub owner: String,
    /// The image the lease was taken on (its ID); it may have been removed
    /// since.
    pub image: String,
    /// The blob digests and snapshot diff IDs kept alive.
    pub keys: Vec<String>,
}

#[derive(Debug)]
pub struct LeaseStore {
    dir: PathBuf,
    leases: RwLock<BTreeMap<String, ContentLease>>,
}

/// Refuses IDs that are not plain file names.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {id:?} must be 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl LeaseStore {
    /// Loads every lease under `dir`; unreadable records are skipped with a
    /// warning (their content is then only kept if an image needs it).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut leases = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(Error::io("listing leases"))? {
            let entry = entry.map_err(Error::io("listing leases"))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                // Temp files from an interrupted write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ContentLease>(&b).map_err(|e| e.to_string()))
            {
                Ok(l) if l.version == RECORD_VERSION && check_id("lease", &l.id).is_ok() => {
                    leases.insert(l.id.clone(), l);
                }
                Ok(l) => {
                    warn!(path = %path.display(), version = l.version, "skipping a lease of unknown version or ID")
                }
                Err(e) => warn!(path = %path.display(), error = %e, "skipping an unreadable lease"),
            }
        }
        Ok(LeaseStore {
            dir: dir.to_path_buf(),
            leases: RwLock::new(leases),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ContentLease>> {
        self.leases.read().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        check_id("lease", id)?;
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Records a lease (replacing one of the same ID) on disk, then in
    /// memory.
    pub fn put(&self, lease: ContentLease) -> Result<()> {
        check_id("lease owner", &lease.owner)?;
        let bytes =
            serde_json::to_vec_pretty(&lease).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.path(&lease.id)?, &bytes)
            .map_err(Error::io(format!("writing lease {}", lease.id)))?;
        self.leases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lease.id.clone(), lease);
        Ok(())
    }

    /// Drops the leases `pred` selects and returns them. A record that
    /// cannot be removed from disk stays, in memory too, so that memory
    /// never claims less than the disk does.
    pub fn remove_where(&self, pred: impl Fn(&ContentLease) -> bool) -> Result<Vec<ContentLease>> {
        let doomed: Vec<ContentLease> = self.read().values().filter(|l| pred(l)).cloned().collect();
        for ContentLease { id, .. } in &doomed {
            match std::fs::remove_file(self.path(id)?) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing lease {id}"))(e)),
            }
            self.leases
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        if !doomed.is_empty() {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io("syncing the lease directory"))?;
        }
        Ok(doomed)
    }

    /// Every blob and snapshot some lease keeps.
    pub fn keys(&self) -> HashSet<String> {
        self.read()
            .values()
            .flat_map(|l| l.keys.iter().cloned())
            .collect()
    }

    pub fn list(&self) -> Vec<ContentLease> {
        self.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, owner: &str, keys: &[&str]) -> ContentLease {
        ContentLease {
            version: RECORD_VERSION,
            id: id.into(),
            owner: owner.into(),
            image: "sha256:aa".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn leases_persist_and_go_by_owner() {
        let d = tempfile::tempdir().unwrap();
        let s = LeaseStore::open(d.path()).unwrap();
        s.put(lease("c1", "c1", &["a", "b"])).unwrap();
        s.put(lease("c1.volume-0", "c1", &["c"])).unwrap();
        s.put(lease("c2", "c2", &["b"])).unwrap();
        // A write cut short leaves a temp file, which the next open drops.
        std::fs::write(d.path().join(".tmp-1-2-3"), b"{").unwrap();
        drop(s);
        let s = LeaseStore::open(d.path()).unwrap();
        assert_eq!(s.list().len(), 3);
        assert!(!d.path().join(".tmp-1-2-3").exists());
        let all: HashSet<String> = ["a", "b", "c"].iter().map(|k| k.to_string()).collect();
        assert_eq!(s.keys(), all);
        assert_eq!(s.remove_where(|l| l.owner == "c1").unwrap().len(), 2);
        assert_eq!(s.keys(), HashSet::from(["b".to_string()]));
        drop(s);
        let s = LeaseStore::open(d.path()).unwrap();
        assert_eq!(s.list(), vec![lease("c2", "c2", &["b"])]);
    }

    #[test]
    fn ids_are_plain_file_names() {
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129), "a b"] {
            assert!(check_id("lease", bad).is_err(), "{bad:?}");
        }
        for good in ["abc123", "c1.volume-0", &"f".repeat(64)] {
            check_id("lease", good).unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let s = LeaseStore::open(d.path()).unwrap();
        assert!(s.put(lease("../escape", "c", &[])).is_err());
        assert!(s.put(lease("ok", "../c", &[])).is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn unreadable_records_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.json"), b"not json").unwrap();
        let s = LeaseStore::open(d.path()).unwrap();
        assert!(s.list().is_empty());
    }
}
