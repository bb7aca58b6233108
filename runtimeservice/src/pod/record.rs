//! Pod sandbox records and the store that keeps them.
//!
//! A sandbox is one JSON record, `sandboxes/<id>/sandbox.json`, written
//! atomically and changed only through [`PodStore::update`]. The record is
//! written *before* any host side effect, in state `Creating`: it is the
//! intent log. A daemon that dies mid-`RunPodSandbox` finds the record at
//! start and undoes whatever the record says may exist (CNI attachment,
//! pinned namespaces, files), so nothing leaks and the name is free again.
//!
//! ```text
//!  RunPodSandbox      all host effects done        StopPodSandbox
//! ──────────────► Creating ───────────────► Ready ─────────────────► NotReady
//!                    │ failure or crash                                 │
//!                    └──► rolled back, record removed     RemovePodSandbox ──► gone
//! ```
//!
//! Pod names are reserved from the records themselves, so a stale
//! reservation cannot outlive the record that made it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gantry_proto::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PodState {
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub version: u32,
    pub id: String,
    pub state: PodState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub config: PodSandboxConfig,
    /// The handler name the pod asked for ("" for the default).
    pub runtime_handler: String,
    pub netns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// The pinned PID namespace of a pod whose containers share one, and
    /// its init process.
    #[serde(default)]
    pub pid_ns: Option<PathBuf>,
    #[serde(default)]
    pub init_pid: i32,
    /// The pinned user namespace of a pod with `hostUsers: false`, which
    /// owns its network, IPC, UTS and PID namespaces, and its mappings.
    #[serde(default)]
    pub user_ns: Option<PathBuf>,
    #[serde(default)]
    pub userns_maps: Option<crate::userns::Mappings>,
    /// The CNI network the pod was attached to, once the ADD succeeded or
    /// may have happened.
    pub network: Option<String>,
    pub ips: Vec<String>,
    /// The pod's cgroup: a path under the hierarchy roots (cgroupfs) or a
    /// slice name (systemd). Empty in records from before pods had one.
    #[serde(default)]
    pub cgroup: String,
    /// The cgroup directories gantry made for the pod, recorded before
    /// each was made; only these are ever removed.
    #[serde(default)]
    pub cgroup_created: Vec<PathBuf>,
}

impl PodRecord {
    /// The key kubelet's names are unique by.
    pub fn name_key(&self) -> String {
        name_key(&self.config)
    }
}

pub fn name_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// Writes a record whole or not at all, readable by root only: records and
/// specs hold the container's environment, where Secrets end up.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes `dir` (and its missing parents) a directory only root can enter,
/// tightening one an older gantry left open: records, bundles and upper
/// directories hold Secret values, setuid binaries and device nodes.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700)
}

/// Takes group and other permissions off `path` (leaving `mode`'s bits),
/// if it has any. A missing file is not an error.
pub(crate) fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_symlink() && m.permissions().mode() & 0o077 & !mode != 0 => {
            tracing::info!(path = %path.display(), "tightening permissions left by an older gantry");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// All sandbox records, in memory and on disk.
pub struct PodStore {
    dir: PathBuf,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    /// One lock per pod, so calls on one pod run one at a time.
    locks: crate::locks::KeyedLocks,
}

impl PodStore {
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut pods = BTreeMap::new();
        for entry in std::fs::read_dir(dir)
            .map_err(Error::io("listing sandboxes"))?
            .flatten()
        {
            let path = entry.path().join("sandbox.json");
            tighten(&entry.path(), 0o700)
                .and_then(|()| tighten(&path, 0o600))
                .map_err(Error::io(format!("tightening {}", entry.path().display())))?;
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<PodRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) if rec.version == RECORD_VERSION => {
                    pods.insert(rec.id.clone(), rec);
                }
                Ok(rec) => {
                    warn!(path = %path.display(), version = rec.version, "unknown sandbox record version")
                }
                Err(e) => {
                    // A directory without a readable record was never
                    // committed to: nothing references it.
                    warn!(path = %path.display(), error = %e, "removing sandbox directory without a record");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(PodStore {
            dir: dir.to_path_buf(),
            pods: Mutex::new(pods),
            locks: Default::default(),
        })
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PodRecord>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(id).await
    }

    /// Persists a new record, failing if its name is taken.
    pub fn insert(&self, rec: PodRecord) -> Result<()> {
        let mut pods = self.pods();
        let key = rec.name_key();
        if let Some(other) = pods.values().find(|p| p.name_key() == key) {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {key:?} is already used by sandbox {}",
                other.id
            )));
        }
        let dir = self.pod_dir(&rec.id);
        private_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        self.persist(&rec)?;
        pods.insert(rec.id.clone(), rec);
        Ok(())
    }

    fn persist(&self, rec: &PodRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.pod_dir(&rec.id).join("sandbox.json"), &bytes).map_err(Error::io(
            format!("writing the record of sandbox {}", rec.id),
        ))
    }

    /// Changes a record through `f` and persists it before the change is
    /// visible.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut PodRecord)) -> Result<PodRecord> {
        let mut pods = self.pods();
        let mut rec = pods
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))?;
        f(&mut rec);
        self.persist(&rec)?;
        pods.insert(id.to_string(), rec.clone());
        Ok(rec)
    }

    /// Forgets a pod and deletes its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.pod_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", dir.display()))(e)),
        }
        self.pods().remove(id);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<PodRecord> {
        self.pods().get(id).cloned()
    }

    /// Full ID or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod sandbox ID is empty".into()));
        }
        let pods = self.pods();
        if pods.contains_key(id) {
            return Ok(Some(id.to_string()));
        }
        let mut matches = pods.keys().filter(|k| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Ok(Some(one.clone())),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "pod sandbox ID prefix {id:?} is ambiguous"
            ))),
            _ => Ok(None),
        }
    }

    /// The record of a pod named by full ID or unique prefix, or NotFound.
    pub fn find(&self, id: &str) -> Result<PodRecord> {
        self.resolve(id)?
            .and_then(|full| self.get(&full))
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))
    }

    pub fn list(&self) -> Vec<PodRecord> {
        self.pods().values().cloned().collect()
    }
}

/// A new random sandbox ID (64 hex digits, as kubelet expects).
pub fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").map_err(Error::io("opening /dev/urandom"))?;
    std::io::Read::read_exact(&mut f, &mut buf).map_err(Error::io("reading /dev/urandom"))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::v1::PodSandboxMetadata;

    fn rec(id: &str, name: &str) -> PodRecord {
        PodRecord {
            version: RECORD_VERSION,
            id: id.into(),
            state: PodState::Creating,
            created_at: 1,
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.into(),
                    uid: "u".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            netns: None,
            ipc_ns: None,
            uts_ns: None,
            pid_ns: None,
            init_pid: 0,
            user_ns: None,
            userns_maps: None,
            network: None,
            ips: vec![],
            cgroup: String::new(),
            cgroup_created: vec![],
        }
    }

    #[test]
    fn records_persist_names_are_unique_and_prefixes_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = PodStore::open(dir.path()).unwrap();
        store.insert(rec("abc123", "web")).unwrap();
        assert!(matches!(
            store.insert(rec("def456", "web")),
            Err(Error::AlreadyExists(_))
        ));
        store.insert(rec("abd999", "db")).unwrap();
        store
            .update("abc123", |r| r.state = PodState::Ready)
            .unwrap();
        assert_eq!(store.resolve("abc").unwrap().as_deref(), Some("abc123"));
        assert!(store.resolve("ab").is_err());
        assert_eq!(store.resolve("zzz").unwrap(), None);

        // A directory with no record (a crash before the first write) goes.
        std::fs::create_dir(dir.path().join("orphan")).unwrap();
        let again = PodStore::open(dir.path()).unwrap();
        assert_eq!(again.get("abc123").unwrap().state, PodState::Ready);
        assert_eq!(again.list().len(), 2);
        assert!(!dir.path().join("orphan").exists());
        again.remove("abc123").unwrap();
        again.remove("abc123").unwrap();
        assert!(again.get("abc123").is_none());
        assert!(
            again.insert(rec("new1", "web")).is_ok(),
            "the name is free once the record is gone"
        );
    }
}
