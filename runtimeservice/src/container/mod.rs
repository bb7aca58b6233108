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
//! RemoveContainer moves the container's directory out of `containers/`
//! into `removing/` and returns; a background reaper (`reaper.rs`) deletes
//! it from the runtime, unmounts and removes it, and lets go of its image,
//! or the next start does if the daemon stops first.
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
use crate::oci::{ExecStreams, ExecTarget, ExecTerminal, OciRuntime, RuntimeMaker};
use crate::pod::PodService;
use crate::pod::{new_id, PodState};
use gantry_common::exit::{ContainerExit, EXIT_FILE};
use gantry_common::fs::{private_dir, tighten, write_atomic};
use gantry_common::locks::KeyedLocks;
use gantry_common::records::{Lookup, Record, RecordStore, Skipped};
use gantry_common::time::{now_nanos, secs};

mod create;
mod exec;
mod exit_watch;
mod handler;
mod image;
pub mod image_volume;
#[cfg(test)]
mod lifecycle_tests;
pub mod log_cap;
mod reaper;
mod record;
mod recover;
mod remove;
mod rootfs;
pub mod rootfs_path;
mod sampler;
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
use self::{handler::*, record::*, rootfs::*, status::*, update::bundle_cgroup};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ContainerService {
    records: RecordStore<ContainerRecord>,
    locks: KeyedLocks,
    pods: Arc<PodService>,
    /// The pods' host: containers' mounts, cgroups and processes.
    host: Arc<dyn crate::host::Host>,
    images: Arc<dyn ImageLookup>,
    /// By handler name: those configured, and those a reload removed, which
    /// the containers of running pods still use (new pods cannot name them:
    /// [`PodService`] admits only configured handlers).
    runtimes: RwLock<BTreeMap<String, Handler>>,
    /// Makes the runtime of each handler, at start and at a reload.
    runtime_maker: Arc<dyn RuntimeMaker>,
    default_runtime: String,
    monitor: PathBuf,
    cpu_rates: crate::stats::CpuRates,
    /// Each container's cgroup (relative to the hierarchy roots), read once
    /// from its bundle: stats and metrics are polled for every container.
    cgroup_paths: Mutex<HashMap<String, String>>,
    /// Writable-layer sizes (when measured, bytes) for the metrics: walking
    /// a layer is the costliest read, so it is repeated at most every
    /// [`FS_USAGE_TTL_NS`].
    fs_usage: Mutex<HashMap<String, (i64, u64, u64)>>,
    /// The latest background sample of every ready pod's usage, which the
    /// list stats calls answer from.
    sampler: sampler::Sampler,
    /// The device label of the filesystem holding the writable layers.
    fs_device: std::sync::OnceLock<String>,
    /// Container and sandbox events for `GetContainerEvents`.
    pub events: Arc<Events>,
    /// Counts the events sent: each marks a change in what the containers
    /// hold on disk (see [`ContainerService::fs_generation`]).
    fs_generation: std::sync::atomic::AtomicU64,
    exits: Arc<ExitWatcher>,
    /// Finishes the removals RemoveContainer leaves off its path.
    reaper: reaper::Reaper,
    metrics: RuntimeMetrics,
    log_drops: LogDrops,
}

type Records = BTreeMap<String, ContainerRecord>;

impl ContainerService {
    pub fn new(
        pods: Arc<PodService>,
        images: Arc<dyn ImageLookup>,
        runtime_maker: Arc<dyn RuntimeMaker>,
        monitor: PathBuf,
    ) -> Result<Self> {
        let config = pods.config.clone();
        let dir = config.root.join("containers");
        let (records, skipped) = RecordStore::<ContainerRecord>::open(&dir).map_err(Error::io(
            format!("opening the container records in {}", dir.display()),
        ))?;
        for s in skipped {
            match s {
                Skipped::UnknownVersion { path, version } => {
                    warn!(path = %path.display(), version, "unknown container record version")
                }
                Skipped::Debris { dir, why } => {
                    // The record is written before anything else is made
                    // and removed last but for the directory, so a directory
                    // without one is a create that never committed or a
                    // removal that was cut short: nothing references it.
                    warn!(path = %dir.display(), error = %why, "removing a container directory without a record");
                    crate::container::image_volume::unmount_all(&*pods.host, &dir);
                    crate::userns::idmap::unbind_all(&dir.join("idmapped"));
                    let _ = pods.host.unmount(&dir.join("bundle/rootfs"));
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        for id in records.map().keys() {
            let spec = records.dir_of(id).join("bundle/config.json");
            tighten(&spec, 0o600).map_err(Error::io(format!("tightening {}", spec.display())))?;
        }
        // Each handler's probes run its runtime (features, the user
        // namespace trial): all handlers at once, so start-up waits for
        // the slowest, not for their sum.
        let runtimes: BTreeMap<String, Handler> = handler::new_all(
            &*runtime_maker,
            &config,
            config.runtimes.iter(),
            &pods.metrics,
        );
        for (name, h) in &runtimes {
            pods.set_user_namespaces(name, h.user_namespaces);
        }
        let reaper = reaper::Reaper::open(&config.root).map_err(Error::io(format!(
            "opening {}",
            config.root.join(reaper::REMOVING).display()
        )))?;
        let log_drops = LogDrops::default();
        for r in records.values().iter().filter(|r| r.monitor_pid != 0) {
            log_drops.track(&r.id);
        }
        Ok(ContainerService {
            metrics: pods.metrics.clone(),
            log_drops,
            reaper,
            records,
            locks: Default::default(),
            host: pods.host.clone(),
            pods,
            images,
            runtimes: RwLock::new(runtimes),
            runtime_maker,
            default_runtime: config.default_runtime.clone(),
            monitor,
            cpu_rates: Default::default(),
            cgroup_paths: Default::default(),
            fs_usage: Default::default(),
            sampler: sampler::Sampler::new(config.stats_collection_period),
            fs_generation: Default::default(),
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
        self.fs_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        // Stopping a pod of 200 containers sends 200 events of 200
        // statuses each.
        if !self.events.wanted() {
            return;
        }
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
