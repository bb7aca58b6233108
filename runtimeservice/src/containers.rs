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
use crate::error::{Error, Result};
use crate::events::{Events, Exit, ExitWatcher};
use crate::interactive::{
    connect_attach, open_pty, receive_terminal, BoxReader, BoxWriter, ExecSession, Pty,
};
use crate::metrics::{phase, ContainerCounts, LogDrops, RuntimeMetrics};
use crate::oci::{CliRuntime, ExecStreams, ExecTarget, ExecTerminal, OciRuntime};
use crate::pod::{new_id, private_dir, tighten, write_atomic, PodState};
use crate::pods::PodService;
use crate::rootfs_path::{Rootfs, RootfsError};
use crate::spec::{generate, image_volumes, PidNamespace, SpecInput};

/// What the runtime needs to know of an image: the image service answers.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub id: String,
    /// The reference to report as `image_ref` (a repo digest if known).
    pub image_ref: String,
    /// Layer directories, bottom first.
    pub snapshots: Vec<PathBuf>,
    /// The image config JSON.
    pub config: Value,
    /// Set when the name is an OCI artifact: stored, but no container image.
    pub artifact_type: Option<String>,
}

/// The image store as containers see it. A container holds its image (and
/// each image it mounts) from create to remove through leases named after
/// it, so removing the image meanwhile takes only its name.
#[async_trait::async_trait]
pub trait ImageLookup: Send + Sync + 'static {
    /// Resolves `image` and holds its content under the lease `lease` for
    /// the container `owner` until [`Self::release`]; `None` when no usable
    /// image has that name.
    async fn acquire(&self, image: &str, lease: &str, owner: &str)
        -> Result<Option<ResolvedImage>>;
    /// Lets go of every lease of the container `owner`.
    async fn release(&self, owner: &str) -> Result<()>;
    /// Reconciles the leases with the containers that exist, given with
    /// their image IDs: leases of others go (containers removed while a
    /// crash kept their leases), and a container that holds none (made
    /// before leases existed) gets one on its image.
    async fn retain(&self, live: &HashMap<String, String>) -> Result<()>;
}

const RECORD_VERSION: u32 = 1;

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

#[derive(Deserialize)]
struct ExitFile {
    exit_code: i32,
    signal: i32,
    finished_at: i64,
}

/// How long a measured writable-layer size is reported before it is
/// measured again (cAdvisor, too, walks layers about once a minute).
const FS_USAGE_TTL_NS: i64 = 60_000_000_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn secs(nanos: i64) -> u64 {
    u64::try_from(nanos / 1_000_000_000).unwrap_or(0)
}

/// The interfaces of each pod with a network namespace (in `pods`' order,
/// skipping those without), read from inside each namespace by one thread.
fn pod_networks(pods: &[crate::pod::PodRecord]) -> Vec<Option<Vec<crate::cri_metrics::NetDev>>> {
    use std::io::Read;
    let paths: Vec<PathBuf> = pods.iter().filter_map(|p| p.netns.clone()).collect();
    let n = paths.len();
    if n == 0 {
        return Vec::new();
    }
    let read = |_: &Path| {
        let mut text = String::new();
        std::fs::File::open("/proc/thread-self/net/dev")
            .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
            .map(|_| crate::cri_metrics::parse_net_dev(&text))
            .ok()
    };
    match gantry_cni::netns::for_each_netns(paths, read) {
        Ok(all) => all.into_iter().map(|r| r.ok().flatten()).collect(),
        Err(e) => {
            warn!(error = %e, "reading the pods' network counters");
            vec![None; n]
        }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One handler as containers use it: its command line, and whether it
/// honours `Mount.recursive_read_only` ([`crate::features`]).
struct Handler {
    runtime: CliRuntime,
    recursive_read_only: bool,
}

impl Handler {
    fn new(
        config: &RuntimeConfig,
        name: &str,
        h: &RuntimeHandler,
        metrics: &RuntimeMetrics,
    ) -> Handler {
        let runtime = CliRuntime {
            name: name.to_string(),
            // Looked up in PATH once, not at every runtime call; a missing
            // binary stays as named, to fail when used.
            binary: h.resolve().unwrap_or_else(|| h.path.clone()),
            args: h.args.clone(),
            root: config.state_dir.join("runtime").join(name),
            systemd_cgroup: config.cgroup_driver == crate::CgroupDriver::Systemd,
            exec_helper: (h.exec_mode() == crate::ExecMode::Native
                && !config.exec_helper_path.as_os_str().is_empty())
            .then(|| config.exec_helper_path.clone()),
            metrics: metrics.clone(),
        };
        let recursive_read_only =
            crate::features::recursive_read_only(name, &runtime.binary, &runtime.args);
        Handler {
            runtime,
            recursive_read_only,
        }
    }
}

/// What [`ContainerService::set_handlers`] changed, by handler name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandlerChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
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
                    crate::image_volume::unmount_all(&entry.path());
                    let _ = rustix::mount::unmount(
                        entry.path().join("bundle/rootfs"),
                        rustix::mount::UnmountFlags::DETACH,
                    );
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let runtimes = config
            .runtimes
            .iter()
            .map(|(name, h)| (name.clone(), Handler::new(&config, name, h, &pods.metrics)))
            .collect();
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

    /// The statuses of a pod's containers, for PodSandboxStatus.
    pub fn statuses_in_pod(&self, pod_id: &str) -> Vec<cri::ContainerStatus> {
        self.in_pod(pod_id)
            .iter()
            .filter_map(|id| self.refresh(id))
            .filter(|r| r.state != ContainerState::Creating)
            .map(|r| status_of(&r))
            .collect()
    }

    /// Listens for containers that exit on their own and records each exit
    /// (with its STOPPED event) as soon as the monitor has written it.
    pub fn spawn_exit_watcher(self: &Arc<Self>) -> Result<()> {
        let afd = self
            .exits
            .async_fd()
            .map_err(Error::io("registering the inotify instance"))?;
        // The task keeps the watcher, not the service, alive while it waits.
        let weak = Arc::downgrade(self);
        let watcher = self.exits.clone();
        tokio::spawn(async move {
            loop {
                let batch = match watcher.next(&afd).await {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "the exit watcher failed; exits are noticed only when containers are looked at");
                        watcher.disable();
                        return;
                    }
                };
                let Some(svc) = weak.upgrade() else { return };
                let mut ids = Vec::new();
                for exit in batch {
                    match exit {
                        Exit::Container(id) => ids.push(id),
                        Exit::Rescan => {
                            warn!("the inotify queue overflowed; looking at every live container");
                            ids.extend(svc.exits.watched());
                        }
                    }
                }
                ids.sort();
                ids.dedup();
                for id in ids {
                    let svc = svc.clone();
                    // Waits behind a create, start or stop of the same
                    // container, so its events keep their order.
                    tokio::spawn(async move {
                        let _guard = svc.lock(&id).await;
                        svc.fold_exit(&id);
                    });
                }
            }
        });
        Ok(())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(id).await
    }

    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn persist(&self, r: &ContainerRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.cdir(&r.id).join("container.json"), &bytes).map_err(Error::io(format!(
            "writing the record of container {}",
            r.id
        )))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Result<ContainerRecord> {
        self.update_then_emit(id, |r| {
            f(r);
            None
        })
    }

    /// Changes a record; if `f` names an event, sends it once the change is
    /// on disk, before anyone else can change the record again.
    fn update_then_emit(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord) -> Option<cri::ContainerEventType>,
    ) -> Result<ContainerRecord> {
        let mut recs = self.records();
        let mut r = recs
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let event = f(&mut r);
        self.persist(&r)?;
        recs.insert(id.to_string(), r.clone());
        if let Some(kind) = event {
            self.emit_locked(&recs, id, &r.pod_id, kind);
        }
        Ok(r)
    }

    /// Containers by state and handler, live monitors and their dropped
    /// log bytes, for the metrics.
    pub fn counts(&self) -> ContainerCounts {
        let recs: Vec<ContainerRecord> = self.records().values().cloned().collect();
        let mut c = ContainerCounts::default();
        let mut seen = Vec::new();
        for r in recs {
            let state = match r.state {
                ContainerState::Creating => "creating",
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
            };
            *c.by_state.entry((state, r.handler.clone())).or_insert(0) += 1;
            if r.state == ContainerState::Running && monitor_alive(r.monitor_pid, &r.id) {
                c.monitors_alive += 1;
            }
            if r.monitor_pid != 0 {
                seen.push((r.id.clone(), crate::crilog::read_dropped(&self.cdir(&r.id))));
            }
        }
        c.log_dropped_bytes = self.log_drops.observe(&seen);
        c
    }

    /// The directory holding every container's writable layer (and image
    /// volumes, and the logs of pods without a log directory), with the
    /// bytes and inodes it uses: ImageFsInfo's container filesystem.
    /// Mounted rootfs views are on other devices and not counted twice.
    pub fn writable_usage(&self) -> (PathBuf, u64, u64) {
        let (bytes, inodes) = crate::stats::dir_usage(&self.dir);
        (self.dir.clone(), bytes, inodes)
    }

    /// What a handler (by name; empty for the default) can do, for
    /// `Status`.
    pub fn handler_features(&self, handler: &str) -> cri::RuntimeHandlerFeatures {
        let name = if handler.is_empty() {
            &self.default_runtime
        } else {
            handler
        };
        cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: self
                .read_runtimes()
                .get(name)
                .is_some_and(|h| h.recursive_read_only),
            // Pods get no user namespace of their own yet.
            user_namespaces: false,
        }
    }

    fn read_runtimes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Handler>> {
        self.runtimes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn runtime(&self, handler: &str) -> Result<CliRuntime> {
        let name = if handler.is_empty() {
            &self.default_runtime
        } else {
            handler
        };
        self.read_runtimes()
            .get(name)
            .map(|h| h.runtime.clone())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("runtime handler {name:?} is not configured"))
            })
    }

    /// Puts a reloaded set of runtime handlers in force: added and changed
    /// ones serve new pods (and the next runtime call of existing
    /// containers on a changed one); removed ones are refused to new pods
    /// but kept for the containers of pods that run on them. The default
    /// handler and the other runtime settings are not reloadable.
    pub fn set_handlers(&self, handlers: &BTreeMap<String, RuntimeHandler>) -> HandlerChanges {
        let config = &self.pods.config;
        let old = self.pods.handlers();
        let mut changes = HandlerChanges::default();
        // Probing a runtime's features runs it: done before the lock.
        let mut fresh = Vec::new();
        for (name, h) in handlers {
            match old.get(name) {
                Some(o) if o == h => continue,
                Some(_) => changes.changed.push(name.clone()),
                None => changes.added.push(name.clone()),
            }
            fresh.push((name.clone(), Handler::new(config, name, h, &self.metrics)));
        }
        changes.removed = old
            .keys()
            .filter(|n| !handlers.contains_key(*n))
            .cloned()
            .collect();
        self.runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(fresh);
        self.pods.set_handlers(handlers.clone());
        changes
    }

    /// Full ID or unique prefix.
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("container ID is empty".into()));
        }
        let recs = self.records();
        if recs.contains_key(id) {
            return Ok(Some(id.to_string()));
        }
        let mut m = recs.keys().filter(|k| k.starts_with(id));
        match (m.next(), m.next()) {
            (Some(one), None) => Ok(Some(one.clone())),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "container ID prefix {id:?} is ambiguous"
            ))),
            _ => Ok(None),
        }
    }

    /// The record with any recorded exit folded in, unless an operation on
    /// the container is under way: that operation (or the exit watcher,
    /// which waits for it) folds the exit, so events keep their order.
    fn refresh(&self, id: &str) -> Option<ContainerRecord> {
        // The watcher folds a watched container's exit the moment the
        // monitor records it: no file to read on this (hot) path.
        if self.exits.is_watched(id) {
            return self.records().get(id).cloned();
        }
        match self.locks.try_lock(id) {
            Some(_guard) => self.fold_exit(id),
            None => self.records().get(id).cloned(),
        }
    }

    /// Folds the monitor's exit file into the record and sends STOPPED; the
    /// caller holds the container's lock.
    fn fold_exit(&self, id: &str) -> Option<ContainerRecord> {
        let rec = self.records().get(id).cloned()?;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Some(rec);
        }
        let Some(exit) = std::fs::read(self.cdir(id).join("exit.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitFile>(&b).ok())
        else {
            return Some(rec);
        };
        // The cgroup outlives the processes until the runtime deletes the
        // container, so the OOM count is still there to read.
        let oom = exit.signal == libc::SIGKILL
            && crate::stats::oom_kills(Path::new("/sys/fs/cgroup"), &self.cgroup_path(&rec)) > 0;
        let updated = self.update_then_emit(id, |r| {
            r.state = ContainerState::Exited;
            r.exit_code = exit.exit_code;
            r.finished_at = exit.finished_at;
            r.reason = if oom {
                "OOMKilled".into()
            } else if exit.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            if exit.signal != 0 {
                r.message = format!("killed by signal {}", exit.signal);
            }
            Some(cri::ContainerEventType::ContainerStoppedEvent)
        });
        match updated {
            Ok(r) => {
                self.exits.unwatch(id);
                self.metrics.container_exited(&r.reason);
                info!(container = %id, exit_code = r.exit_code, reason = %r.reason, "container exited");
                Some(r)
            }
            Err(e) => {
                warn!(container = %id, error = %e, "recording the container's exit");
                Some(rec)
            }
        }
    }

    pub async fn create(&self, pod_id: &str, config: cri::ContainerConfig) -> Result<String> {
        let pod = self.pods.store.find(pod_id)?;
        let pod_id = pod.id.clone();
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {pod_id} is not ready"
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("container metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "container metadata.name is required".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument("container image is required".into()));
        }
        let id = new_id()?;
        let image = match self.images.acquire(&image_name, &id, &id).await {
            Ok(Some(image)) => image,
            Ok(None) => return Err(Error::NotFound(format!("image {image_name:?}"))),
            Err(e) => {
                // The lease may be taken even if what it leads to is not
                // usable.
                self.release_images(&id).await;
                return Err(e);
            }
        };
        // Until the record exists, a failure must let go of the image
        // itself; after, destroy does.
        let recorded = self.record_new(&id, &pod, &pod_id, &meta, &config, &image);
        if let Err(e) = recorded {
            self.release_images(&id).await;
            return Err(e);
        }
        let span = info_span!("container", container = %id, pod = %pod_id, name = %meta.name);
        let _guard = self.lock(&id).await;
        let started = Instant::now();
        let result = self
            .create_inner(&id, &pod, &config, &image)
            .instrument(span.clone())
            .await;
        match result {
            Ok(()) => {
                self.metrics.observe_phase(phase::RUNTIME_CREATE, started);
                let _e = span.enter();
                info!("container created");
                Ok(id)
            }
            Err(e) => {
                warn!(container = %id, error = %e, "container create failed; rolling back");
                self.destroy(&id).await;
                Err(e)
            }
        }
    }

    /// Lets go of the images container `id` held; a failure leaves the
    /// leases to the reconciliation at the next start.
    async fn release_images(&self, id: &str) {
        if let Err(e) = self.images.release(id).await {
            warn!(container = %id, error = %e, "releasing the container's images");
        }
    }

    /// Checks the new container against the pod and its image and writes
    /// its first record (state `Creating`).
    fn record_new(
        &self,
        id: &str,
        pod: &crate::pod::PodRecord,
        pod_id: &str,
        meta: &cri::ContainerMetadata,
        config: &cri::ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<()> {
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.as_str())
            .unwrap_or_default();
        if let Some(artifact_type) = &image.artifact_type {
            return Err(Error::FailedPrecondition(format!(
                "image {image_name:?} is an OCI artifact ({artifact_type}), not a container \
                 image: it has no root file system to run"
            )));
        }
        let runtime = self.runtime(&pod.runtime_handler)?;
        let stop_signal = crate::signal::stop_signal(config, &image.config)?;
        let key = format!("{}_{}_{}", meta.name, meta.attempt, pod_id);
        let id = id.to_string();
        let pod_id = pod_id.to_string();
        {
            let mut recs = self.records();
            if let Some(other) = recs.values().find(|r| {
                let m = r.config.metadata.clone().unwrap_or_default();
                format!("{}_{}_{}", m.name, m.attempt, r.pod_id) == key
            }) {
                return Err(Error::AlreadyExists(format!(
                    "container name {key:?} is already used by {}",
                    other.id
                )));
            }
            let log_path = match (pod.config.log_directory.as_str(), config.log_path.as_str()) {
                (d, l) if !d.is_empty() && !l.is_empty() => crate::crilog::log_file(d, l)
                    .map_err(Error::InvalidArgument)?
                    .display()
                    .to_string(),
                (_, l) if l.starts_with('/') => {
                    return Err(Error::InvalidArgument(format!(
                        "log_path {l:?} is absolute; it must be relative to the pod's log_directory"
                    )))
                }
                _ => self.cdir(&id).join("container.log").display().to_string(),
            };
            let rec = ContainerRecord {
                version: RECORD_VERSION,
                id: id.clone(),
                pod_id: pod_id.clone(),
                state: ContainerState::Creating,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                config: config.clone(),
                image_id: image.id.clone(),
                image_ref: image.image_ref.clone(),
                log_path,
                handler: runtime.name.clone(),
                pid: 0,
                monitor_pid: 0,
                rootfs_mounted: true,
                user: None,
                stop_signal: stop_signal as i32,
            };
            private_dir(&self.cdir(&id).join("bundle"))
                .map_err(Error::io("creating the container directory"))?;
            if let Err(e) = self.persist(&rec) {
                let _ = std::fs::remove_dir_all(self.cdir(&id));
                return Err(e);
            }
            recs.insert(id.clone(), rec);
        }
        Ok(())
    }

    async fn create_inner(
        &self,
        id: &str,
        pod: &crate::pod::PodRecord,
        config: &cri::ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<()> {
        let cdir = self.cdir(id);
        let bundle = cdir.join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in [&rootfs, &cdir.join("upper"), &cdir.join("work")] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        if image.snapshots.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "image {} has no layers",
                image.id
            )));
        }
        let lower = image
            .snapshots
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            cdir.join("upper").display(),
            cdir.join("work").display()
        );
        let data = std::ffi::CString::new(data)
            .map_err(|_| Error::Internal("overlay options contain NUL".into()))?;
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| Error::Internal(format!("mounting the container rootfs: {e}")))?;
        let pid = self.pid_namespace(pod, config)?;
        let driver = self.pods.config.cgroup_driver;
        // Records from before pods owned a cgroup keep the old layout.
        let pod_cgroup = if pod.cgroup.is_empty() {
            let parent = pod
                .config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("/gantry");
            parent.to_string()
        } else {
            pod.cgroup.clone()
        };
        let cgroups_path = crate::cgroup::container_path(driver, &pod_cgroup, id);
        let image_mounts =
            crate::image_volume::mount_all(&*self.images, id, &cdir, &config.mounts).await?;
        // Each image VOLUME gets a directory of its own, seeded with what
        // the image has there, as containerd does; it goes with the
        // container's directory.
        let mut volumes = Vec::new();
        let root = Rootfs::open(&rootfs)?;
        for (i, dest) in image_volumes(&image.config, &config.mounts)?
            .into_iter()
            .enumerate()
        {
            let host = cdir.join("volumes").join(i.to_string());
            std::fs::create_dir_all(&host)
                .map_err(Error::io(format!("creating {}", host.display())))?;
            seed_volume(&root, &dest, &host)?;
            volumes.push((dest, host));
        }
        let security = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let apparmor = crate::apparmor::profile_for(&security, &crate::apparmor::Kernel)?;
        let spec = generate(&SpecInput {
            id,
            config,
            pod: &pod.config,
            image_config: &image.config,
            rootfs: &rootfs,
            pod_dir: &self.pods.store.pod_dir(&pod.id),
            netns: pod.netns.as_deref(),
            ipc_ns: pod.ipc_ns.as_deref(),
            uts_ns: pod.uts_ns.as_deref(),
            pid,
            cgroups_path: &cgroups_path,
            volumes: &volumes,
            image_mounts: &image_mounts,
            apparmor: apparmor.as_deref(),
            recursive_read_only: self
                .handler_features(&pod.runtime_handler)
                .recursive_read_only_mounts,
        })?;
        prepare_rootfs_paths(&rootfs, &spec)?;
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&bundle.join("config.json"), &spec_json)
            .map_err(Error::io("writing config.json"))?;
        // The runtime sees the container only at StartContainer; a command
        // the image lacks must fail here, as it does with runtimes that
        // create at once.
        if let Some(process) = spec.process() {
            let args = process.args().clone().unwrap_or_default();
            let env = process.env().clone().unwrap_or_default();
            let mounts: Vec<String> = spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().display().to_string())
                .collect();
            crate::rootfs_path::check_command(
                &rootfs,
                args.first().map(String::as_str).unwrap_or_default(),
                &env,
                &process.cwd().display().to_string(),
                &mounts,
            )
            .map_err(Error::FailedPrecondition)?;
        }
        let user = spec.process().as_ref().map(|p| {
            let u = p.user();
            cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: u.uid().into(),
                    gid: u.gid().into(),
                    supplemental_groups: u
                        .additional_gids()
                        .iter()
                        .flatten()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }
        });
        self.update_then_emit(id, |r| {
            r.state = ContainerState::Created;
            r.user = user;
            Some(cri::ContainerEventType::ContainerCreatedEvent)
        })?;
        Ok(())
    }

    /// Runs the created container: its monitor starts and runs the runtime
    /// (`run --detach`), which creates and starts it in one go (one
    /// runtime start-up instead of two). Returns the monitor's and the
    /// container's PIDs.
    async fn run_monitor(
        &self,
        id: &str,
        rec: &ContainerRecord,
        runtime: &CliRuntime,
    ) -> Result<(i32, i32)> {
        let cdir = self.cdir(id);
        let mut cmd = tokio::process::Command::new(&self.monitor);
        cmd.arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(cdir.join("bundle"))
            .arg("--runtime")
            .arg(&runtime.binary)
            .arg("--runtime-root")
            .arg(&runtime.root);
        for a in runtime.global_args() {
            cmd.arg("--runtime-arg").arg(a);
        }
        if rec.config.tty {
            cmd.arg("--tty").arg("true");
        }
        if rec.config.stdin {
            cmd.arg("--stdin").arg(if rec.config.stdin_once {
                "once"
            } else {
                "true"
            });
        }
        let node_cap = self.pods.config.log_max_bytes;
        // Checked when the pod ran; a record from before the check keeps
        // the node's cap.
        let log_cap = self
            .pods
            .store
            .get(&rec.pod_id)
            .and_then(|p| crate::crilog::effective_cap(node_cap, &p.config.annotations).ok())
            .unwrap_or(node_cap);
        let (log_dir, _) = log_dir_and_file(rec);
        cmd.arg("--log-max-bytes")
            .arg(log_cap.to_string())
            .arg("--log-dir")
            .arg(log_dir)
            .arg("--log-path")
            .arg(&rec.log_path)
            .arg("--exit-file")
            .arg(cdir.join("exit.json"))
            .arg("--pid-file")
            .arg(cdir.join("pid"))
            .stdin(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(cdir.join("monitor.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or(std::process::Stdio::null()),
            );
        private_dir(&runtime.root).map_err(Error::io("creating the runtime root"))?;
        // Only the report line is read: the monitor keeps running, so
        // waiting for its pipes to close (as `output()` does) would hang.
        cmd.stdout(std::process::Stdio::piped()).kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(Error::io(format!("starting {}", self.monitor.display())))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let mut reader = tokio::io::BufReader::new(stdout);
            tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
                .await
                .map_err(Error::io("reading the monitor's report"))?;
        }
        // The first monitor process exits right after relaying the report.
        let _ = child.wait().await;
        let line = line.trim().to_string();
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|p| p.parse().ok()),
            words.next().and_then(|p| p.parse().ok()),
        ) {
            (Some("ok"), Some(mpid), Some(cpid)) => Ok((mpid, cpid)),
            _ => {
                let msg = line.strip_prefix("error ").unwrap_or(&line).to_string();
                Err(Error::FailedPrecondition(format!(
                    "starting the container failed: {msg}"
                )))
            }
        }
    }

    /// Undoes whatever an unfinished run of a created container left: a
    /// monitor, the runtime's container, its cgroup, the monitor's files.
    /// The container is created again afterwards, and can be started.
    async fn undo_run(&self, id: &str, rec: &ContainerRecord) {
        self.release_runtime(id, rec, true).await;
        let cdir = self.cdir(id);
        for f in ["pid", "exit.json", "attach.sock"] {
            let _ = std::fs::remove_file(cdir.join(f));
        }
    }

    /// Takes the container out of its runtime: first its monitors, when
    /// asked (one left by a start cut short must not go on making a
    /// container that is being undone), then the runtime's container, then
    /// the cgroup, which the runtime's delete normally removes but a run
    /// cut short before the runtime saved its state leaves to us.
    async fn release_runtime(&self, id: &str, rec: &ContainerRecord, kill_monitors: bool) {
        if kill_monitors {
            kill_stray_monitors(id);
        }
        if let Ok(rt) = self.runtime(&rec.handler) {
            if let Err(e) = rt.delete(id, true).await {
                warn!(container = %id, error = %e, "deleting from the runtime");
            }
        }
        let cgroup = self.cgroup_path(rec);
        if !cgroup.is_empty() {
            remove_cgroup(Path::new("/sys/fs/cgroup"), &cgroup);
        }
    }

    /// The container's PID namespace per its (or else the pod's) options.
    fn pid_namespace(
        &self,
        pod: &crate::pod::PodRecord,
        config: &cri::ContainerConfig,
    ) -> Result<PidNamespace> {
        let own = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let pod_opts = pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let opts = own.or(pod_opts).unwrap_or_default();
        match cri::NamespaceMode::try_from(opts.pid).unwrap_or(cri::NamespaceMode::Container) {
            cri::NamespaceMode::Node => Ok(PidNamespace::Host),
            cri::NamespaceMode::Pod => match &pod.pid_ns {
                Some(p) => Ok(PidNamespace::Join(p.clone())),
                // The pod was not started with a shared PID namespace.
                None => Ok(PidNamespace::Private),
            },
            cri::NamespaceMode::Target => {
                let target = self
                    .resolve(&opts.target_id)?
                    .and_then(|id| self.refresh(&id))
                    .ok_or_else(|| {
                        Error::NotFound(format!("target container {}", opts.target_id))
                    })?;
                if target.state != ContainerState::Running {
                    return Err(Error::FailedPrecondition(format!(
                        "target container {} is not running",
                        target.id
                    )));
                }
                Ok(PidNamespace::Join(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    target.pid
                ))))
            }
            cri::NamespaceMode::Container => Ok(PidNamespace::Private),
        }
    }

    /// Undoes a container entirely: runtime state, rootfs mount, directory.
    /// Returns the record it removed, if there was one.
    async fn destroy(&self, id: &str) -> Option<ContainerRecord> {
        let rec = self.records().get(id).cloned()?;
        self.exits.unwatch(id);
        // Only a container not yet running can have a monitor left from a
        // start cut short; a running one's monitor records its exit.
        let unstarted = rec.state == ContainerState::Creating
            || rec.state == ContainerState::Created && rec.monitor_pid == 0;
        self.release_runtime(id, &rec, unstarted).await;
        // The monitor is gone (or never ran): its count of dropped log
        // bytes is final, and goes with the directory.
        self.log_drops
            .retire(id, crate::crilog::read_dropped(&self.cdir(id)));
        let rootfs = self.cdir(id).join("bundle/rootfs");
        crate::image_volume::unmount_all(&self.cdir(id));
        if rec.rootfs_mounted {
            let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(self.cdir(id));
        self.cpu_rates.forget(id);
        lock(&self.cgroup_paths).remove(id);
        lock(&self.fs_usage).remove(id);
        self.records().remove(id);
        // Only now that nothing is mounted from them may the image's
        // layers go.
        self.release_images(id).await;
        Some(rec)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        let id = self
            .resolve(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let _guard = self.lock(&id).await;
        let rec = self
            .fold_exit(&id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if rec.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}, not created",
                rec.state
            )));
        }
        let rt = self.runtime(&rec.handler)?;
        // Taken before the start: a process that exits at once may be
        // reaped, and its finish time written, before `start` returns.
        let started_at = now_nanos();
        let (monitor_pid, pid) = if rec.monitor_pid != 0 {
            // Created by an earlier gantry, whose monitor had the runtime
            // create it at once.
            rt.start(&id).await?;
            (rec.monitor_pid, rec.pid)
        } else {
            // Watched before the monitor exists, so no exit goes unheard.
            if let Err(e) = self.exits.watch(&id, &self.cdir(&id)) {
                crate::events::warn_unwatched(&id, &e);
            }
            let started = Instant::now();
            let ran = self.run_monitor(&id, &rec, &rt).await;
            // The monitor's report comes once `<runtime> run` is done.
            self.metrics
                .observe_runtime(&rt.name, "run", started.elapsed(), ran.is_ok());
            match ran {
                Ok(pids) => {
                    self.log_drops.track(&id);
                    self.metrics.observe_phase(phase::RUNTIME_START, started);
                    pids
                }
                Err(e) => {
                    // As containerd: a container that could not start has
                    // exited, with the reason why.
                    warn!(container = %id, error = %e, "container start failed");
                    self.exits.unwatch(&id);
                    self.undo_run(&id, &rec).await;
                    let message = e.to_string();
                    self.update_then_emit(&id, |r| {
                        r.state = ContainerState::Exited;
                        r.exit_code = 128;
                        r.finished_at = now_nanos();
                        r.reason = "StartError".into();
                        r.message = message;
                        Some(cri::ContainerEventType::ContainerStoppedEvent)
                    })?;
                    self.metrics.container_exited("StartError");
                    return Err(e);
                }
            }
        };
        self.update_then_emit(&id, |r| {
            r.state = ContainerState::Running;
            r.started_at = started_at;
            r.monitor_pid = monitor_pid;
            r.pid = pid;
            Some(cri::ContainerEventType::ContainerStartedEvent)
        })?;
        info!(container = %id, "container started");
        Ok(())
    }

    async fn wait_exit(&self, id: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (monitor, init) = self
            .records()
            .get(id)
            .map(|r| (r.monitor_pid, r.pid))
            .unwrap_or_default();
        // Most exits come within milliseconds of the signal: look again
        // soon, then less and less often.
        let mut pause = Duration::from_millis(2);
        loop {
            let exit_file = self.cdir(id).join("exit.json");
            // The file is looked for only once the monitor is seen gone: it
            // writes the file just before exiting, so looking first could
            // miss a file written a moment later and overwrite it.
            if !monitor_alive(monitor, id) && !process_running(init) && !exit_file.exists() {
                // The monitor died without recording the exit (it was
                // killed, or crashed): nobody else will. The code is
                // unknown, which 255 says, as the runtimes do.
                warn!(container = %id, "the container's monitor is gone; recording an unknown exit");
                let body = format!(
                    "{{\"exit_code\":255,\"signal\":0,\"finished_at\":{}}}\n",
                    now_nanos()
                );
                let _ = write_atomic(&exit_file, body.as_bytes());
            }
            if exit_file.exists() {
                self.fold_exit(id);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The container's stop signal (SIGTERM unless its config or image
    /// names another), `timeout` seconds, then SIGKILL. Stopped and unknown
    /// containers succeed.
    pub async fn stop(&self, id: &str, timeout: i64) -> Result<()> {
        let Some(id) = self.resolve(id)? else {
            return Ok(());
        };
        let _guard = self.lock(&id).await;
        let Some(rec) = self.fold_exit(&id) else {
            return Ok(());
        };
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Ok(());
        }
        // Nothing runs yet (the runtime runs it at start); as with
        // containerd, stopping a created container leaves it created.
        if rec.state == ContainerState::Created && rec.monitor_pid == 0 {
            return Ok(());
        }
        let rt = self.runtime(&rec.handler)?;
        if timeout > 0 && rec.state == ContainerState::Running {
            let signal = crate::signal::recorded(rec.stop_signal);
            let number = crate::signal::number(signal).unwrap_or(libc::SIGTERM);
            debug!(container = %id, signal = signal.as_str_name(), "stopping");
            match rt.kill(&id, number, false).await {
                Ok(()) | Err(Error::NotFound(_)) | Err(Error::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
            if self
                .wait_exit(&id, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        match rt.kill(&id, libc::SIGKILL, true).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            // runsc signals only started containers; deleting one that never
            // started ends what its create left running (the sandbox).
            Err(Error::FailedPrecondition(e)) if rec.state == ContainerState::Created => {
                debug!(container = %id, error = %e, "the runtime cannot signal it; deleting it");
                rt.delete(&id, true).await?;
            }
            Err(Error::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
        if !self.wait_exit(&id, Duration::from_secs(10)).await {
            return Err(Error::Internal(format!(
                "container {id} did not exit after SIGKILL"
            )));
        }
        info!(container = %id, "container stopped");
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let Some(id) = self.resolve(id)? else {
            return Ok(());
        };
        self.stop(&id, 0).await?;
        let _guard = self.lock(&id).await;
        if let Some(rec) = self.destroy(&id).await {
            let recs = self.records();
            self.emit_locked(
                &recs,
                &id,
                &rec.pod_id,
                cri::ContainerEventType::ContainerDeletedEvent,
            );
            drop(recs);
            info!(container = %id, "container removed");
        }
        Ok(())
    }

    /// The up-to-date record of a container named by ID or prefix.
    fn existing(&self, id: &str) -> Result<ContainerRecord> {
        self.resolve(id)?
            .and_then(|full| self.refresh(&full))
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn running(&self, id: &str) -> Result<ContainerRecord> {
        let r = self.existing(id)?;
        if r.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                r.id
            )));
        }
        Ok(r)
    }

    /// Runs a command in a running container; on timeout the process is
    /// killed and the call fails with DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<cri::ExecSyncResponse> {
        let (r, rt, pid_file) = self.exec_target(id, &cmd)?;
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let bundle = self.cdir(&r.id).join("bundle");
        let target = ExecTarget {
            id: &r.id,
            init_pid: r.pid,
            bundle: &bundle,
        };
        // Kubelet accepts messages up to 16 MiB; keep both streams under it.
        match rt
            .exec_sync(&target, &cmd, timeout, &pid_file, 8 << 20)
            .await?
        {
            Some(out) => Ok(cri::ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            }),
            None => Err(Error::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {timeout_secs}s and was killed",
                r.id
            ))),
        }
    }

    /// What an exec needs: the running container, its runtime, and a fresh
    /// file for the runtime to record the exec'd PID in.
    fn exec_target(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<(ContainerRecord, CliRuntime, PathBuf)> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let r = self.running(id)?;
        let rt = self.runtime(&r.handler)?;
        let pid_file = self
            .cdir(&r.id)
            .join(format!("exec-{}.pid", &new_id()?[..16]));
        Ok((r, rt, pid_file))
    }

    /// The full ID of a running container (the streaming RPCs check it
    /// before minting a URL).
    pub fn running_id(&self, id: &str) -> Result<String> {
        Ok(self.running(id)?.id)
    }

    /// Starts a command in a running container for a streaming session.
    pub async fn exec_session(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        streams: ExecStreams,
        initial_size: Option<(u16, u16)>,
    ) -> Result<ExecSession> {
        let (r, rt, pid_file) = self.exec_target(id, cmd)?;
        let bundle = self.cdir(&r.id).join("bundle");
        let target = ExecTarget {
            id: &r.id,
            init_pid: r.pid,
            bundle: &bundle,
        };
        if !tty {
            let mut child = rt
                .exec_interactive(&target, cmd, streams, &pid_file, None)
                .await?;
            return Ok(ExecSession {
                stdin: child.stdin.take().map(|s| Box::new(s) as BoxWriter),
                stdout: child.stdout.take().map(|s| Box::new(s) as BoxReader),
                stderr: child.stderr.take().map(|s| Box::new(s) as BoxReader),
                resize: None,
                child,
                pid_file,
                runtime: rt.clone(),
                container_id: r.id.clone(),
            });
        }
        let (mut session, master, relay) = if rt.native_exec() {
            let (master, session) =
                native_terminal(&rt, &target, cmd, streams, pid_file, initial_size).await?;
            (session, master, 0)
        } else {
            let (master, child) =
                relayed_terminal(&rt, &target, cmd, streams, &pid_file, initial_size).await?;
            // The runtime's exec has a terminal of its own, told of size
            // changes with SIGWINCH.
            let relay = child.id().unwrap_or(0) as i32;
            (ExecSession::new(child, pid_file, &rt, &r.id), master, relay)
        };
        let pty = match Pty::new(master, relay) {
            Ok(p) => p,
            Err(e) => {
                session.kill().await;
                return Err(Error::io("setting up the terminal")(e));
            }
        };
        if streams.stdin {
            session.stdin = Some(Box::new(pty.writer()));
        }
        session.stdout = Some(Box::new(pty.reader()));
        session.resize = Some(pty);
        Ok(session)
    }

    /// Connects to a running container's monitor for an attach session;
    /// also says whether the container has a terminal and an open stdin.
    pub async fn attach(&self, id: &str) -> Result<(tokio::net::UnixStream, bool, bool)> {
        let r = self.running(id)?;
        let stream = connect_attach(&self.cdir(&r.id)).await.map_err(|e| {
            Error::FailedPrecondition(format!(
                "container {} cannot be attached to (its monitor does not answer: {e})",
                r.id
            ))
        })?;
        Ok((stream, r.config.tty, r.config.stdin))
    }

    /// The network namespace to port-forward into, for a ready pod.
    pub fn port_forward_target(&self, pod_id: &str) -> Result<Option<PathBuf>> {
        let pod = self.pods.store.find(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        Ok(pod.netns.clone())
    }

    /// Asks the container's monitor to reopen its log file. The file is
    /// created here first, so it exists when the call returns.
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let r = self.running(id)?;
        if !monitor_alive(r.monitor_pid, &r.id) {
            return Err(Error::FailedPrecondition(format!(
                "the monitor of container {} is gone",
                r.id
            )));
        }
        let (dir, rel) = log_dir_and_file(&r);
        crate::crilog::open_log(&dir, &rel)
            .map_err(Error::io(format!("creating {}", r.log_path)))?;
        // SAFETY: signalling the monitor we verified by its command line.
        if unsafe { libc::kill(r.monitor_pid, libc::SIGUSR1) } != 0 {
            return Err(Error::Internal(format!(
                "signalling the monitor: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// New resources for a container. A running one gets them from the
    /// runtime at once; the spec is kept in step either way, so a created
    /// container starts with them, and ContainerStatus reports them.
    pub async fn update_resources(
        &self,
        id: &str,
        res: cri::LinuxContainerResources,
    ) -> Result<()> {
        let id = self.existing(id)?.id;
        let _guard = self.lock(&id).await;
        let r = self.existing(&id)?;
        let oci = crate::spec::oci_resources(&res);
        if r.state == ContainerState::Running {
            let file = self.cdir(&r.id).join("resources.json");
            write_atomic(&file, oci.to_string().as_bytes())
                .map_err(Error::io("writing resources.json"))?;
            self.runtime(&r.handler)?.update(&r.id, &file).await?;
        }
        if matches!(r.state, ContainerState::Created | ContainerState::Running) {
            let path = self.cdir(&r.id).join("bundle/config.json");
            let bytes =
                std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
            let mut spec: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("parsing {}: {e}", path.display())))?;
            // Only what the CRI resources say; device rules and pids stay.
            let current = &mut spec["linux"]["resources"];
            if !current.is_object() {
                *current = serde_json::json!({});
            }
            for key in ["memory", "cpu", "hugepageLimits", "unified"] {
                match oci.get(key) {
                    Some(v) => current[key] = v.clone(),
                    None => {
                        if let Some(o) = current.as_object_mut() {
                            o.remove(key);
                        }
                    }
                }
            }
            write_atomic(&path, spec.to_string().as_bytes())
                .map_err(Error::io("writing config.json"))?;
        }
        self.update(&r.id, |rec| {
            let linux = rec.config.linux.get_or_insert_with(Default::default);
            linux.resources = Some(res);
        })?;
        Ok(())
    }

    fn cgroup_path(&self, r: &ContainerRecord) -> String {
        if let Some(p) = lock(&self.cgroup_paths).get(&r.id) {
            return p.clone();
        }
        let path = std::fs::read(self.cdir(&r.id).join("bundle/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| {
                v["linux"]["cgroupsPath"]
                    .as_str()
                    .map(crate::cgroup::fs_path)
            })
            .unwrap_or_default();
        // A bundle not written yet is asked again next time.
        if !path.is_empty() {
            lock(&self.cgroup_paths).insert(r.id.clone(), path.clone());
        }
        path
    }

    /// `ListPodSandboxMetrics`: the series of every ready pod (its cgroup,
    /// its network namespace) and of each of its running containers (their
    /// cgroups, processes and writable layers). Blocking: it reads kernel
    /// files, so callers run it off the async workers.
    pub fn pod_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        use crate::cri_metrics::{self as m, BaseLabels, ProcessCounts, Series};
        let root = Path::new("/sys/fs/cgroup");
        let proc = Path::new("/proc");
        let v2 = m::unified(root);
        let driver = self.pods.config.cgroup_driver;
        let pods: Vec<crate::pod::PodRecord> = self
            .pods
            .store
            .list()
            .into_iter()
            .filter(|p| p.state == PodState::Ready)
            .collect();
        let live: Vec<String> = self
            .records()
            .values()
            .filter(|r| r.state == ContainerState::Running)
            .map(|r| r.id.clone())
            .collect();
        let mut by_pod: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
        for r in live.iter().filter_map(|id| self.refresh(id)) {
            if r.state == ContainerState::Running {
                by_pod.entry(r.pod_id.clone()).or_default().push(r);
            }
        }
        let mut nets = pod_networks(&pods).into_iter();
        let device = self
            .fs_device
            .get_or_init(|| {
                let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                m::device_of(&self.dir, &info)
            })
            .clone();
        let capacity = m::fs_capacity(&self.dir);
        let mut reader = m::Reader::default();
        let mut out = Vec::with_capacity(pods.len());
        for pod in &pods {
            let meta = pod.config.metadata.clone().unwrap_or_default();
            let mut container_metrics = Vec::new();
            let mut processes = ProcessCounts {
                fds: Some(0),
                sockets: Some(0),
                ..Default::default()
            };
            for c in by_pod.get(&pod.id).map(Vec::as_slice).unwrap_or_default() {
                let rel = self.cgroup_path(c);
                let usage = (!rel.is_empty())
                    .then(|| m::read_cgroup(&mut reader, root, v2, &rel))
                    .flatten();
                let Some(usage) = usage else {
                    debug!(pod = %pod.id, container = %c.id, "no cgroup to read metrics from");
                    continue;
                };
                let now = now_nanos();
                let image = c
                    .config
                    .image
                    .as_ref()
                    .map(|i| {
                        if i.user_specified_image.is_empty() {
                            i.image.as_str()
                        } else {
                            i.user_specified_image.as_str()
                        }
                    })
                    .unwrap_or("");
                let name = c.config.metadata.as_ref().map(|m| m.name.as_str());
                let mut s = Series::new(
                    BaseLabels {
                        container: name.unwrap_or(""),
                        cgroup: &rel,
                        image,
                        name: &c.id,
                        namespace: &meta.namespace,
                        pod: &meta.name,
                    },
                    now,
                );
                s.cgroup(&usage);
                let p = m::count_processes(proc, &usage.pids);
                processes.add(&p);
                s.processes(&p);
                s.push(&m::START_TIME, secs(c.started_at), &[]);
                s.push(&m::LAST_SEEN, secs(now), &[]);
                if let Some(cap) = &capacity {
                    let (measured, used) = self.writable_usage_cached(&c.id, now);
                    s.filesystem(&device, used, measured, cap);
                }
                container_metrics.push(cri::ContainerMetrics {
                    container_id: c.id.clone(),
                    metrics: s.metrics,
                });
            }
            let rel = if pod.cgroup.is_empty() {
                String::new()
            } else {
                crate::cgroup::pod_fs_path(driver, &pod.cgroup)
            };
            let usage = (!rel.is_empty())
                .then(|| m::read_cgroup(&mut reader, root, v2, &rel))
                .flatten();
            let now = now_nanos();
            let mut s = Series::new(
                BaseLabels {
                    container: "",
                    cgroup: &rel,
                    image: "",
                    name: &pod.id,
                    namespace: &meta.namespace,
                    pod: &meta.name,
                },
                now,
            );
            if let Some(usage) = usage {
                s.cgroup(&usage);
                // The pod's own processes (its init, where it has one) sit
                // in its cgroup, or on v2 in a leaf below it.
                let mut own = usage.pids.clone();
                if v2 {
                    let leaf = root
                        .join(rel.trim_start_matches('/'))
                        .join(crate::cgroup::V2_INIT_LEAF)
                        .join("cgroup.procs");
                    own.extend(reader.read(&leaf).map(m::pids_of).unwrap_or_default());
                }
                processes.add(&m::count_processes(proc, &own));
                s.processes(&processes);
            }
            s.push(&m::START_TIME, secs(pod.created_at), &[]);
            s.push(&m::LAST_SEEN, secs(now), &[]);
            if pod.netns.is_some() {
                if let Some(ifaces) = nets.next().flatten() {
                    s.network(&ifaces);
                }
            }
            out.push(cri::PodSandboxMetrics {
                pod_sandbox_id: pod.id.clone(),
                metrics: s.metrics,
                container_metrics,
            });
        }
        out
    }

    /// The writable layer's size, and when it was measured.
    fn writable_usage_cached(&self, id: &str, now: i64) -> (i64, u64) {
        if let Some(&(at, bytes)) = lock(&self.fs_usage).get(id) {
            if now.saturating_sub(at) < FS_USAGE_TTL_NS {
                return (at, bytes);
            }
        }
        let (bytes, _) = crate::stats::dir_usage(&self.cdir(id).join("upper"));
        lock(&self.fs_usage).insert(id.to_string(), (now, bytes));
        (now, bytes)
    }

    pub fn stats_of(&self, r: &ContainerRecord) -> cri::ContainerStats {
        let now = now_nanos();
        let sample = if r.state == ContainerState::Running {
            crate::stats::read_cgroup(Path::new("/sys/fs/cgroup"), &self.cgroup_path(r))
        } else {
            None
        };
        let sample = sample.unwrap_or_default();
        let (bytes, inodes) = crate::stats::dir_usage(&self.cdir(&r.id).join("upper"));
        let u = |v: u64| Some(cri::UInt64Value { value: v });
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u(sample.cpu_usage_ns),
                usage_nano_cores: self
                    .cpu_rates
                    .nano_cores(&r.id, now, sample.cpu_usage_ns)
                    .and_then(u),
                psi: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: u(sample.working_set),
                available_bytes: sample
                    .memory_limit
                    .map(|l| l.saturating_sub(sample.working_set))
                    .and_then(u),
                usage_bytes: u(sample.memory_usage),
                rss_bytes: u(sample.rss),
                page_faults: u(sample.page_faults),
                major_page_faults: u(sample.major_page_faults),
                psi: None,
            }),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.dir.display().to_string(),
                }),
                used_bytes: u(bytes),
                inodes_used: u(inodes),
            }),
            swap: None,
            // Pressure stall information (CRI 1.34) is not read yet.
            io: None,
        }
    }

    pub fn stats(&self, id: &str) -> Result<cri::ContainerStats> {
        Ok(self.stats_of(&self.existing(id)?))
    }

    pub fn list_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let f = filter.map(|f| cri::ContainerFilter {
            id: f.id,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
            state: None,
        });
        let ids: Vec<String> = self.list(f).into_iter().map(|c| c.id).collect();
        ids.iter()
            .filter_map(|id| self.refresh(id))
            .map(|r| self.stats_of(&r))
            .collect()
    }

    /// A pod's usage: read from the pod's cgroup, which holds its
    /// containers and its init (or the sum of its containers' for pods from
    /// before pods had one), plus its network interfaces read inside its
    /// network namespace.
    pub fn pod_stats(&self, pod_id: &str) -> Result<cri::PodSandboxStats> {
        let pod = self.pods.store.find(pod_id)?;
        let pod_id = pod.id.clone();
        let containers: Vec<cri::ContainerStats> = self
            .in_pod(&pod_id)
            .iter()
            .filter_map(|id| self.refresh(id))
            .map(|r| self.stats_of(&r))
            .collect();
        let now = now_nanos();
        let whole = (!pod.cgroup.is_empty() && pod.state == crate::pod::PodState::Ready)
            .then(|| crate::cgroup::pod_fs_path(self.pods.config.cgroup_driver, &pod.cgroup))
            .and_then(|p| crate::stats::read_cgroup(Path::new("/sys/fs/cgroup"), &p));
        let u = |v: u64| Some(cri::UInt64Value { value: v });
        let (cpu, memory) = match &whole {
            Some(s) => (
                cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u(s.cpu_usage_ns),
                    usage_nano_cores: self
                        .cpu_rates
                        .nano_cores(&format!("pod:{pod_id}"), now, s.cpu_usage_ns)
                        .and_then(u),
                    psi: None,
                },
                cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u(s.working_set),
                    available_bytes: s
                        .memory_limit
                        .map(|l| l.saturating_sub(s.working_set))
                        .and_then(u),
                    usage_bytes: u(s.memory_usage),
                    rss_bytes: u(s.rss),
                    page_faults: u(s.page_faults),
                    major_page_faults: u(s.major_page_faults),
                    psi: None,
                },
            ),
            None => self.summed_usage(&containers, now),
        };
        let network = pod.netns.as_ref().and_then(|ns| {
            gantry_cni::netns::run_in_netns(ns, || {
                std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
            })
            .ok()
        });
        let interfaces: Vec<cri::NetworkInterfaceUsage> = network
            .as_deref()
            .unwrap_or("")
            .lines()
            .skip(2)
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let u = |v: u64| Some(cri::UInt64Value { value: v });
                (f.len() >= 11 && name.trim() != "lo").then(|| cri::NetworkInterfaceUsage {
                    name: name.trim().to_string(),
                    rx_bytes: u(f[0]),
                    rx_errors: u(f[2]),
                    tx_bytes: u(f[8]),
                    tx_errors: u(f[10]),
                })
            })
            .collect();
        let processes: u64 = containers
            .iter()
            .filter_map(|c| c.attributes.as_ref())
            .filter_map(|a| self.records().get(&a.id).cloned())
            .filter(|r| r.state == ContainerState::Running)
            .map(|r| {
                crate::stats::process_count(Path::new("/sys/fs/cgroup"), &self.cgroup_path(&r))
            })
            .sum();
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: Some(cri::NetworkUsage {
                    timestamp: now,
                    default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
                    interfaces,
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: Some(cri::UInt64Value { value: processes }),
                }),
                containers,
                io: None,
            }),
            windows: None,
        })
    }

    /// Drops the CPU sample kept for a pod's usage rate.
    pub fn forget_pod(&self, pod_id: &str) {
        self.cpu_rates.forget(&format!("pod:{pod_id}"));
    }

    /// CPU and memory of a pod as the sum of its containers'.
    fn summed_usage(
        &self,
        containers: &[cri::ContainerStats],
        now: i64,
    ) -> (cri::CpuUsage, cri::MemoryUsage) {
        let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
            Some(cri::UInt64Value {
                value: containers.iter().filter_map(f).sum(),
            })
        };
        let cpu = cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: sum(&|c| {
                c.cpu
                    .as_ref()?
                    .usage_core_nano_seconds
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_nano_cores: sum(&|c| c.cpu.as_ref()?.usage_nano_cores.as_ref().map(|v| v.value)),
            psi: None,
        };
        let memory = cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: sum(&|c| {
                c.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            }),
            available_bytes: None,
            usage_bytes: sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
            rss_bytes: sum(&|c| c.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value)),
            page_faults: sum(&|c| c.memory.as_ref()?.page_faults.as_ref().map(|v| v.value)),
            major_page_faults: sum(&|c| {
                c.memory
                    .as_ref()?
                    .major_page_faults
                    .as_ref()
                    .map(|v| v.value)
            }),
            psi: None,
        };
        (cpu, memory)
    }

    pub fn list_pod_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let f = filter.map(|f| cri::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            state: None,
        });
        self.pods
            .list(f)
            .into_iter()
            .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
            .filter_map(|p| self.pod_stats(&p.id).ok())
            .collect()
    }

    /// Every container of a pod, for StopPodSandbox and RemovePodSandbox.
    pub fn in_pod(&self, pod_id: &str) -> Vec<String> {
        self.records()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn status(&self, id: &str, verbose: bool) -> Result<cri::ContainerStatusResponse> {
        let r = self.existing(id)?;
        let id = r.id.clone();
        let mut info = HashMap::new();
        if verbose {
            let spec: Value = std::fs::read(self.cdir(&id).join("bundle/config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            info.insert(
                "info".to_string(),
                serde_json::json!({"pid": r.pid, "monitorPid": r.monitor_pid, "runtimeSpec": spec, "handler": r.handler}).to_string(),
            );
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status_of(&r)),
            info,
        })
    }

    pub fn list(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        // Only live containers nobody watches need their exit file read.
        let unwatched: Vec<String> = self
            .records()
            .values()
            .filter(|r| is_live(r) && !self.exits.is_watched(&r.id))
            .map(|r| r.id.clone())
            .collect();
        for id in unwatched {
            self.refresh(&id);
        }
        let recs = self.records();
        recs.values()
            .filter(|r| r.state != ContainerState::Creating)
            .filter(|r| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
                        && f.state
                            .as_ref()
                            .is_none_or(|s| s.state == cri_state(r.state) as i32)
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config.labels.get(k) == Some(v))
                }
            })
            .map(|r| cri::Container {
                id: r.id.clone(),
                pod_sandbox_id: r.pod_id.clone(),
                metadata: r.config.metadata.clone(),
                image: r.config.image.clone(),
                image_ref: r.image_ref.clone(),
                state: cri_state(r.state) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                image_id: r.image_id.clone(),
            })
            .collect()
    }

    /// After a daemon start: interrupted creates are rolled back; live
    /// containers are watched again, and those whose monitor vanished
    /// without recording an exit are reported exited.
    pub async fn recover(&self) {
        let ids: Vec<String> = self.records().keys().cloned().collect();
        for id in ids {
            let live = self.records().get(&id).is_some_and(|r| {
                matches!(r.state, ContainerState::Created | ContainerState::Running)
            });
            // Watch first, then look: an exit in between is still heard.
            if live {
                if let Err(e) = self.exits.watch(&id, &self.cdir(&id)) {
                    crate::events::warn_unwatched(&id, &e);
                }
            }
            // A start cut short: whatever it got to run goes, and the
            // container is back to created, startable again.
            let unfinished_run = self.records().get(&id).cloned().filter(|r| {
                r.state == ContainerState::Created
                    && r.monitor_pid == 0
                    && (self.cdir(&id).join("pid").exists() || !monitors_of(&id).is_empty())
            });
            if let Some(r) = unfinished_run {
                warn!(container = %id, "undoing a start that was interrupted");
                self.undo_run(&id, &r).await;
            }
            let Some(r) = self.fold_exit(&id) else {
                continue;
            };
            match r.state {
                ContainerState::Creating => {
                    warn!(container = %id, "rolling back a container whose creation was interrupted");
                    self.destroy(&id).await;
                }
                // Not run yet: no monitor to have lost.
                ContainerState::Created if r.monitor_pid == 0 => {}
                ContainerState::Created | ContainerState::Running => {
                    if !monitor_alive(r.monitor_pid, &id)
                        && !self.cdir(&id).join("exit.json").exists()
                    {
                        warn!(container = %id, "the monitor is gone and recorded no exit");
                        self.exits.unwatch(&id);
                        self.metrics.container_exited("Unknown");
                        let _ = self.update_then_emit(&id, |r| {
                            r.state = ContainerState::Exited;
                            r.exit_code = 255;
                            r.finished_at = now_nanos();
                            r.reason = "Unknown".into();
                            r.message = "the container monitor exited without recording the container's exit".into();
                            Some(cri::ContainerEventType::ContainerStoppedEvent)
                        });
                    }
                }
                ContainerState::Exited => {}
            }
        }
        // Leases of containers removed while the daemon was down or cut
        // short (a crash between removing the record and the lease).
        let live: HashMap<String, String> = self
            .records()
            .values()
            .map(|r| (r.id.clone(), r.image_id.clone()))
            .collect();
        if let Err(e) = self.images.retain(&live).await {
            warn!(error = %e, "dropping the image leases of containers that are gone");
        }
    }
}

/// Removes a container's (empty) cgroup from every hierarchy under `root`:
/// the v2 tree itself and each v1 controller's. A cgroup that still has
/// processes cannot be removed, and stays.
fn remove_cgroup(root: &Path, cgroup: &str) {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let hierarchies = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for dir in std::iter::once(root.to_path_buf()).chain(hierarchies) {
        let _ = std::fs::remove_dir(dir.join(rel));
    }
}

/// SIGKILLs every monitor process of container `id`: the monitor proper
/// leads its own process group (it called setsid), which takes the
/// runtime's run with it; the short-lived relay does not, so it alone is
/// killed.
fn kill_stray_monitors(id: &str) {
    for pid in monitors_of(id) {
        // SAFETY: getpgid and kill on a PID just checked to be this
        // container's monitor.
        unsafe {
            let target = if libc::getpgid(pid) == pid { -pid } else { pid };
            warn!(container = %id, pid, "killing a monitor left from an interrupted create");
            libc::kill(target, libc::SIGKILL);
        }
    }
}

/// The PIDs of container `id`'s monitor processes.
fn monitors_of(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| monitor_alive(*pid, id))
        .collect()
}

/// Whether `pid` is still this container's monitor (PIDs wrap, so the
/// command line must name the container too).
/// Copies what the image holds at `dest` (resolved inside the rootfs) into
/// the volume directory `host`. Symlinks inside are copied as links, never
/// followed; anything but a directory at `dest` is not copied.
fn seed_volume(root: &Rootfs, dest: &str, host: &Path) -> Result<()> {
    let dir = match root.open_dir(dest) {
        Ok(Some(fd)) => fd,
        Ok(None) | Err(RootfsError::NotDirectory { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // The handle's /proc link names the directory found inside the rootfs;
    // below it, copy_tree follows nothing.
    let at = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    copy_tree(&at, host).map_err(Error::io(format!("seeding the volume {dest}")))?;
    let meta = rustix::fs::fstat(&dir)
        .map_err(|e| Error::io(format!("reading the volume {dest}"))(e.into()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host, std::fs::Permissions::from_mode(meta.st_mode & 0o7777))
        .map_err(Error::io("setting a volume's mode"))?;
    std::os::unix::fs::lchown(host, Some(meta.st_uid), Some(meta.st_gid))
        .map_err(Error::io("setting a volume's owner"))
}

/// Makes the process's working directory and the destinations of its bind
/// mounts inside the rootfs, before any runtime sees them: every runtime
/// then finds them there, made by the one resolver that keeps an image's
/// symlinks inside the rootfs. Destinations below a filesystem the runtime
/// makes itself (`/dev`, `/proc`, `/sys`) are its own business.
fn prepare_rootfs_paths(rootfs: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let root = Rootfs::open(rootfs)?;
    if let Some(p) = spec.process() {
        root.mkdir_all(&p.cwd().display().to_string(), 0o755)?;
    }
    let mounts = spec.mounts().clone().unwrap_or_default();
    let is_bind = |m: &oci_spec::runtime::Mount| {
        m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
    };
    let runtime_made: Vec<String> = mounts
        .iter()
        .filter(|m| !is_bind(m))
        .map(|m| m.destination().display().to_string())
        .collect();
    for m in mounts.iter().filter(|m| is_bind(m)) {
        let dest = m.destination().display().to_string();
        if runtime_made
            .iter()
            .any(|r| dest.starts_with(&format!("{}/", r.trim_end_matches('/'))))
        {
            continue;
        }
        // The source is the host's (kubelet's or ours), not the image's.
        let dir = m.source().as_ref().is_some_and(|s| s.is_dir());
        root.ensure_mount_point(&dest, dir)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            // Devices, sockets and fifos are not copied into volumes.
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// A container's log file split where symlinks stop being trusted: the
/// pod's log directory (kubelet's), and the path below it.
fn log_dir_and_file(r: &ContainerRecord) -> (PathBuf, PathBuf) {
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

/// Whether `pid` is a live process (not gone, not a zombie).
fn process_running(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
            })
            .unwrap_or(false)
}

/// Whether `pid` is container `id`'s monitor: PIDs wrap, so its command
/// line must name the container too.
pub fn monitor_alive(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let s = String::from_utf8_lossy(&c);
            s.contains("gantry-monitor") && s.contains(id)
        })
        .unwrap_or(false)
}

fn status_of(r: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: r.config.image.clone(),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r.log_path.clone(),
        resources: r
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        image_id: r.image_id.clone(),
        user: r.user.clone(),
        stop_signal: crate::signal::recorded(r.stop_signal) as i32,
    }
}

fn is_live(r: &ContainerRecord) -> bool {
    matches!(r.state, ContainerState::Created | ContainerState::Running)
}

fn cri_state(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Creating | ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

/// A terminal exec through gantry-exec: the helper opens the terminal
/// in the container and sends its master back over a socket pair.
async fn native_terminal(
    rt: &CliRuntime,
    target: &ExecTarget<'_>,
    cmd: &[String],
    streams: ExecStreams,
    pid_file: PathBuf,
    size: Option<(u16, u16)>,
) -> Result<(OwnedFd, ExecSession)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(Error::io("creating the console socket pair"))?;
    let child = rt
        .exec_interactive(
            target,
            cmd,
            streams,
            &pid_file,
            Some(ExecTerminal::Console {
                console: theirs.into(),
                size,
            }),
        )
        .await?;
    let mut session = ExecSession::new(child, pid_file, rt, target.id);
    let stderr = session.child.stderr.take();
    // Generous: the helper only joins the container and opens a pty,
    // but the machine may be loaded.
    match receive_terminal(ours, Duration::from_secs(60)).await {
        Ok(master) => Ok((master, session)),
        Err(e) => {
            let said = match stderr {
                Some(mut err) => {
                    let read = crate::oci::read_capped(&mut err, 4096);
                    tokio::time::timeout(Duration::from_secs(5), read)
                        .await
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            session.kill().await;
            let said = String::from_utf8_lossy(&said);
            let said = said.trim();
            Err(Error::Internal(format!(
                "exec in container {}: {}",
                target.id,
                if said.is_empty() {
                    e.to_string()
                } else {
                    said.to_string()
                }
            )))
        }
    }
}

/// A terminal exec through the runtime's exec, which relays the
/// command's terminal to a pty of ours; returns its master and the
/// runtime's exec process.
async fn relayed_terminal(
    rt: &CliRuntime,
    target: &ExecTarget<'_>,
    cmd: &[String],
    streams: ExecStreams,
    pid_file: &Path,
    initial_size: Option<(u16, u16)>,
) -> Result<(OwnedFd, tokio::process::Child)> {
    let (master, follower) = open_pty(true)?;
    if let Some((w, h)) = initial_size {
        Pty::set_size(&master, w, h);
    }
    // The container's own process, with the command, a terminal and
    // its first size, for the runtime to size its own terminal with.
    let process_file = pid_file.with_extension("json");
    let spec: Value = std::fs::read(target.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::Internal(format!("reading the spec of container {}", target.id)))?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = Value::Bool(true);
    if let Some((w, h)) = initial_size {
        process["consoleSize"] = serde_json::json!({"height": h, "width": w});
    }
    write_atomic(&process_file, process.to_string().as_bytes())
        .map_err(Error::io("writing the exec process"))?;
    let spawned = rt
        .exec_interactive(
            target,
            cmd,
            streams,
            pid_file,
            Some(ExecTerminal::Relay {
                follower: &follower,
                process_file: &process_file,
            }),
        )
        .await;
    match spawned {
        // Only the exec process holds the follower now (ours drops
        // here), so the terminal reads EOF once it is gone.
        Ok(child) => Ok((master, child)),
        Err(e) => {
            let _ = std::fs::remove_file(&process_file);
            Err(e)
        }
    }
}
