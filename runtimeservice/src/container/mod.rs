//! Containers: records, rootfs, the monitor that owns each one, and the CRI
//! lifecycle (create, start, stop, remove, status, list).
//!
//! ```text
//!  CreateContainer        StartContainer       exit (monitor records it)
//! ─────────────► Created ───────────────► Running ───────────────────► Exited
//!     │ failure: rolled back                                   RemoveContainer ─► gone
//! ```
//!
//! Like pods, a record is written in state `Creating` before the rootfs is
//! mounted or a monitor started, so a daemon killed mid-create finds the
//! record at start and rolls it back. The monitor writes `exit.json` in the
//! container's directory; that file, not the daemon, is the source of truth
//! for how a container ended, so exits that happen while the daemon is down
//! are reported with their real codes.
//!
//! Every change of state is made while holding the container's operation
//! lock and the records lock, and sends its CRI event (CREATED, STARTED,
//! STOPPED, DELETED; see [`crate::events`]) before the records lock is let
//! go: subscribers see each container's events in the order they happened,
//! and STOPPED exactly once, whoever noticed the exit first (the exit
//! watcher, StopContainer, or a status call).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gantry_proto::v1 as cri;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::{RuntimeConfig, RuntimeHandler};
use crate::container::rootfs_path::{Rootfs, RootfsError};
use crate::error::{Error, Result};
use crate::events::{Events, Exit, ExitWatcher};
use crate::exec::{
    connect_attach, open_pty, receive_terminal, BoxReader, BoxWriter, ExecSession, Pty,
};
use crate::metrics::{phase, ContainerCounts, LogDrops, RuntimeMetrics};
use crate::oci::spec::{generate, image_volumes, PidNamespace, SpecInput};
use crate::oci::{CliRuntime, ExecStreams, ExecTarget, ExecTerminal, OciRuntime};
use crate::pod::PodService;
use crate::pod::{new_id, private_dir, tighten, write_atomic, PodState};

mod create;
mod exec;
mod exit_watch;
mod handler;
mod image;
pub mod image_volume;
pub mod log_cap;
mod record;
mod recover;
mod remove;
mod rootfs;
pub mod rootfs_path;
mod start;
mod stats;
mod status;
mod stop;
mod update;
mod userns;

pub use self::handler::HandlerChanges;
pub use self::image::{ImageLookup, ResolvedImage};
pub use self::record::{ContainerRecord, ContainerState};
pub use self::status::monitor_alive;
use self::{handler::*, record::*, remove::*, rootfs::*, status::*};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub struct ContainerService {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, ContainerRecord>>,
    locks: crate::locks::KeyedLocks,
    pods: Arc<PodService>,
    images: Arc<dyn ImageLookup>,
    /// By handler name: those configured, and those a reload removed, which
    /// the containers of running pods still use (new pods cannot name them:
    /// [`PodService`] admits only configured handlers).
    runtimes: RwLock<BTreeMap<String, Handler>>,
    default_runtime: String,
    monitor: PathBuf,
    cpu_rates: crate::stats::CpuRates,
    /// Each container's cgroup (relative to the hierarchy roots), read once
    /// from its bundle: stats and metrics are polled for every container.
    cgroup_paths: Mutex<HashMap<String, String>>,
    /// Writable-layer sizes (when measured, bytes) for the metrics: walking
    /// a layer is the costliest read, so it is repeated at most every
    /// [`FS_USAGE_TTL_NS`].
    fs_usage: Mutex<HashMap<String, (i64, u64)>>,
    /// The device label of the filesystem holding the writable layers.
    fs_device: std::sync::OnceLock<String>,
    /// Container and sandbox events for `GetContainerEvents`.
    pub events: Arc<Events>,
    exits: Arc<ExitWatcher>,
    metrics: RuntimeMetrics,
    log_drops: LogDrops,
}

type Records = BTreeMap<String, ContainerRecord>;

impl ContainerService {
    pub fn new(
        pods: Arc<PodService>,
        images: Arc<dyn ImageLookup>,
        monitor: PathBuf,
    ) -> Result<Self> {
        let config = pods.config.clone();
        let dir = config.root.join("containers");
        private_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut records = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(Error::io("listing containers"))?
            .flatten()
        {
            let path = entry.path().join("container.json");
            tighten(&entry.path(), 0o700)
                .and_then(|()| tighten(&path, 0o600))
                .and_then(|()| tighten(&entry.path().join("bundle/config.json"), 0o600))
                .map_err(Error::io(format!("tightening {}", entry.path().display())))?;
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContainerRecord>(&b).ok())
            {
                Some(r) if r.version == RECORD_VERSION => {
                    records.insert(r.id.clone(), r);
                }
                Some(r) => {
                    warn!(path = %path.display(), version = r.version, "unknown container record version")
                }
                None => {
                    // The record is written before anything else is made
                    // and removed last but for the directory, so a directory
                    // without one is a create that never committed or a
                    // removal that was cut short: nothing references it.
                    warn!(path = %path.display(), "removing a container directory without a record");
                    crate::container::image_volume::unmount_all(&entry.path());
                    crate::userns::idmap::unbind_all(&entry.path().join("idmapped"));
                    let _ = rustix::mount::unmount(
                        entry.path().join("bundle/rootfs"),
                        rustix::mount::UnmountFlags::DETACH,
                    );
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        // Each handler's probes run its runtime (features, the user
        // namespace trial): all handlers at once, so start-up waits for
        // the slowest, not for their sum.
        let runtimes: BTreeMap<String, Handler> =
            handler::new_all(&config, config.runtimes.iter(), &pods.metrics);
        for (name, h) in &runtimes {
            pods.set_user_namespaces(name, h.user_namespaces);
        }
        let log_drops = LogDrops::default();
        for r in records.values().filter(|r| r.monitor_pid != 0) {
            log_drops.track(&r.id);
        }
        Ok(ContainerService {
            metrics: pods.metrics.clone(),
            log_drops,
            dir,
            records: Mutex::new(records),
            locks: Default::default(),
            pods,
            images,
            runtimes: RwLock::new(runtimes),
            default_runtime: config.default_runtime.clone(),
            monitor,
            cpu_rates: Default::default(),
            cgroup_paths: Default::default(),
            fs_usage: Default::default(),
            fs_device: Default::default(),
            events: Default::default(),
            exits: Arc::new(
                ExitWatcher::new().map_err(Error::io("creating the inotify instance"))?,
            ),
        })
    }

    /// Sends a container's event while the caller holds the records lock, so
    /// events go out in the order the records changed. `pod_sandbox_status`
    /// and `containers_statuses` describe the pod as it is now, as kubelet's
    /// evented PLEG expects.
    fn emit_locked(&self, recs: &Records, id: &str, pod_id: &str, kind: cri::ContainerEventType) {
        let containers_statuses = recs
            .values()
            .filter(|r| r.pod_id == pod_id && r.state != ContainerState::Creating)
            .map(status_of)
            .collect();
        let pod_sandbox_status = self.pods.status(pod_id, false).ok().and_then(|s| s.status);
        self.events.send(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// A sandbox's event, with the same pod and container details as a
    /// container's: sandboxes are reported under their own ID, as
    /// containerd's CRI plugin does.
    pub fn emit_pod_event(&self, pod_id: &str, kind: cri::ContainerEventType) {
        let recs = self.records();
        self.emit_locked(&recs, pod_id, pod_id, kind);
    }

    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(id).await
    }
}
