//! A container's record: its state on disk and in memory, and the
//! one way it changes (persist, then emit).

use super::*;

pub(super) const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    pub pod_id: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub config: cri::ContainerConfig,
    pub image_id: String,
    pub image_ref: String,
    pub log_path: String,
    pub handler: String,
    pub pid: i32,
    pub monitor_pid: i32,
    /// The rootfs may be mounted: set in the very first record (unmounting
    /// a rootfs never mounted is harmless), which spares the create path a
    /// record write between making the directory and mounting.
    pub rootfs_mounted: bool,
    /// The identity the container's process runs with, from its spec
    /// (ContainerStatus.user); absent in records of older versions.
    #[serde(default)]
    pub user: Option<cri::ContainerUser>,
    /// The `cri::Signal` StopContainer sends first, settled at create
    /// ([`crate::signal::stop_signal`]); 0 in older records, which were
    /// stopped with SIGTERM.
    #[serde(default)]
    pub stop_signal: i32,
}

/// A container's log file split where symlinks stop being trusted: the
/// pod's log directory (kubelet's), and the path below it.
pub(super) fn log_dir_and_file(r: &ContainerRecord) -> (PathBuf, PathBuf) {
    let full = Path::new(&r.log_path);
    let rel = Path::new(&r.config.log_path);
    // The record's path ends with the request's log_path when a log
    // directory was given; else the file is the daemon's own.
    let dir = match full.to_str().zip(rel.to_str()) {
        Some((f, l)) if !l.is_empty() && f.ends_with(&format!("/{l}")) => {
            Path::new(&f[..f.len() - l.len() - 1])
        }
        _ => full.parent().unwrap_or(Path::new("/")),
    };
    let rel = full.strip_prefix(dir).unwrap_or(full);
    (dir.to_path_buf(), rel.to_path_buf())
}

pub(super) fn is_live(r: &ContainerRecord) -> bool {
    matches!(r.state, ContainerState::Created | ContainerState::Running)
}

impl Record for ContainerRecord {
    const FILE: &'static str = "container.json";
    const VERSION: u32 = RECORD_VERSION;
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> u32 {
        self.version
    }
}

impl ContainerService {
    /// The records, for reading: held only for map operations.
    pub(super) fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.map()
    }

    pub(super) fn cdir(&self, id: &str) -> PathBuf {
        self.records.dir_of(id)
    }

    pub(super) fn persist(&self, r: &ContainerRecord) -> Result<()> {
        self.records.persist(r).map_err(Error::io(format!(
            "writing the record of container {}",
            r.id
        )))
    }

    pub(super) fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        self.update_then_emit(id, |r| {
            f(r);
            None
        })
    }

    /// Changes a record; if `f` names an event, sends it once the change is
    /// on disk, before anyone else can change the record again.
    pub(super) fn update_then_emit(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord) -> Option<cri::ContainerEventType>,
    ) -> Result<ContainerRecord> {
        let (r, ()) = self
            .records
            .modify(id, f, |recs, r, event| {
                if let Some(kind) = event {
                    self.emit_locked(recs, id, &r.pod_id, kind);
                }
            })
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?
            .map_err(Error::io(format!("writing the record of container {id}")))?;
        Ok(r)
    }

    /// Full ID or unique prefix.
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("container ID is empty".into()));
        }
        match self.records.resolve(id) {
            Lookup::Found(full) => Ok(Some(full)),
            Lookup::NotFound => Ok(None),
            Lookup::Ambiguous => Err(Error::InvalidArgument(format!(
                "container ID prefix {id:?} is ambiguous"
            ))),
        }
    }

    /// The up-to-date record of a container named by ID or prefix.
    pub(super) fn existing(&self, id: &str) -> Result<ContainerRecord> {
        self.resolve(id)?
            .and_then(|full| self.refresh(&full))
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    pub(super) fn running(&self, id: &str) -> Result<ContainerRecord> {
        let r = self.existing(id)?;
        if r.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                r.id
            )));
        }
        Ok(r)
    }

    /// The full ID of a running container (the streaming RPCs check it
    /// before minting a URL).
    pub fn running_id(&self, id: &str) -> Result<String> {
        Ok(self.running(id)?.id)
    }
}
