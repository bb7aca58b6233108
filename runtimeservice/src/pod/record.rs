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

use std::path::{Path, PathBuf};

use gantry_common::locks::KeyedLocks;
use gantry_common::records::{Lookup, Record, RecordStore, Skipped};

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

impl Record for PodRecord {
    const FILE: &'static str = "sandbox.json";
    const VERSION: u32 = RECORD_VERSION;
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> u32 {
        self.version
    }
}

/// All sandbox records, in memory and on disk.
pub struct PodStore {
    records: RecordStore<PodRecord>,
    /// One lock per pod, so calls on one pod run one at a time.
    locks: KeyedLocks,
}

impl PodStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let (records, skipped) = RecordStore::open(dir).map_err(Error::io(format!(
            "opening the sandbox records in {}",
            dir.display()
        )))?;
        for s in skipped {
            match s {
                Skipped::UnknownVersion { path, version } => {
                    warn!(path = %path.display(), version, "unknown sandbox record version")
                }
                // A directory without a readable record was never
                // committed to: nothing references it.
                Skipped::Debris { dir, why } => {
                    warn!(path = %dir.display(), error = %why, "removing sandbox directory without a record");
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        Ok(PodStore {
            records,
            locks: Default::default(),
        })
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.records.dir_of(id)
    }

    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(id).await
    }

    /// Persists a new record, failing if its name is taken. The name is
    /// reserved in memory first, so a concurrent run of the same name gets
    /// AlreadyExists even while this one is still being written.
    pub fn insert(&self, rec: PodRecord) -> Result<()> {
        let key = rec.name_key();
        if let Err(other) = self.records.reserve(rec.clone(), |p| p.name_key() == key) {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {key:?} is already used by sandbox {}",
                other.id
            )));
        }
        if let Err(e) = self.records.persist(&rec) {
            self.records.forget(&rec.id);
            let _ = std::fs::remove_dir_all(self.pod_dir(&rec.id));
            return Err(Error::io(format!(
                "writing the record of sandbox {}",
                rec.id
            ))(e));
        }
        Ok(())
    }

    /// Changes a record through `f` and persists it before the change is
    /// visible. The caller holds the pod's lock.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut PodRecord)) -> Result<PodRecord> {
        self.records
            .update(id, f)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))?
            .map_err(Error::io(format!("writing the record of sandbox {id}")))
    }

    /// Forgets a pod and deletes its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.records.remove(id).map_err(Error::io(format!(
            "removing {}",
            self.pod_dir(id).display()
        )))
    }

    pub fn get(&self, id: &str) -> Option<PodRecord> {
        self.records.get(id)
    }

    /// Full ID or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod sandbox ID is empty".into()));
        }
        match self.records.resolve(id) {
            Lookup::Found(full) => Ok(Some(full)),
            Lookup::NotFound => Ok(None),
            Lookup::Ambiguous => Err(Error::InvalidArgument(format!(
                "pod sandbox ID prefix {id:?} is ambiguous"
            ))),
        }
    }

    /// The record of a pod named by full ID or unique prefix, or NotFound.
    pub fn find(&self, id: &str) -> Result<PodRecord> {
        self.resolve(id)?
            .and_then(|full| self.get(&full))
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))
    }

    pub fn list(&self) -> Vec<PodRecord> {
        self.records.values()
    }

    /// The records, to read in place: hold the guard only for map work.
    pub fn records(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, PodRecord>> {
        self.records.map()
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
