//! Doubles of everything the lifecycles touch outside their state
//! directories, for unit tests that run without root: a host that keeps
//! its cgroups, pins and mounts as files under a temporary directory and
//! its processes in a table, a runtime and monitors that live in that
//! table, a network and an image store. Each records what it was asked, and
//! each step can be made to fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use gantry_cni::netns::{NsError, NsKind, PinnedNamespaces, Private};

use crate::cgroup::{self, Hierarchy};
use crate::container::{ImageLookup, ResolvedImage};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::oci::{
    ContainerIo, ExecOutput, ExecStreams, ExecTarget, ExecTerminal, OciRuntime, RuntimeInvocation,
    RuntimeMaker, RuntimeState,
};
use crate::pod::network::{Attached, PodNetwork, PodNetworkRequest};
use crate::{RuntimeConfig, RuntimeHandler, RuntimeMetrics};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

use gantry_common::time::now_nanos;

fn io_failure(what: &str) -> std::io::Error {
    std::io::Error::other(format!("{what} failed (injected)"))
}

/// A process of the fake host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proc {
    PodInit(String),
    Monitor(String),
    /// A container's init, run by its monitor.
    Init(String),
}

#[derive(Debug, Default)]
pub struct HostState {
    /// Every call, in order, as "<what> <details>".
    pub calls: Vec<String>,
    /// Pinned namespaces (files under the test's state directory).
    pub pins: BTreeSet<PathBuf>,
    /// Mount points of container rootfs overlays.
    pub mounts: BTreeSet<PathBuf>,
    /// The (device, inode) of each mount point's directory: a mount
    /// follows its directory when an ancestor is renamed, as the kernel's
    /// do, so it can be unmounted at the new path.
    mount_dirs: BTreeMap<PathBuf, (u64, u64)>,
    /// Live processes by PID.
    pub procs: BTreeMap<i32, Proc>,
    /// Sysctls written, as (namespace pin, name, value).
    pub sysctls: Vec<(PathBuf, String, String)>,
    /// Containers' monitors: container ID to (monitor PID, init PID, exit
    /// file).
    monitors: BTreeMap<String, (i32, i32, PathBuf)>,
    /// Calls that fail, by their name (the first word in `calls`).
    pub fail: BTreeSet<&'static str>,
    /// The host has no `cgroup.kill` (cgroup v1, or Linux before 5.14).
    pub no_cgroup_kill: bool,
    next_pid: i32,
}

fn dir_key(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl HostState {
    fn mounted(&mut self, target: &Path) {
        self.mounts.insert(target.to_path_buf());
        if let Some(key) = dir_key(target) {
            self.mount_dirs.insert(target.to_path_buf(), key);
        }
    }

    /// Whether `target` was a mount point, at its path or at the path its
    /// directory had before a rename.
    fn unmounted(&mut self, target: &Path) -> bool {
        let at = if self.mounts.contains(target) {
            Some(target.to_path_buf())
        } else {
            let key = dir_key(target);
            self.mount_dirs
                .iter()
                .find(|(p, k)| key == Some(**k) && dir_key(p) != key)
                .map(|(p, _)| p.clone())
        };
        let Some(at) = at else {
            return false;
        };
        self.mount_dirs.remove(&at);
        self.mounts.remove(&at)
    }
}

/// The host of a test: cgroups are directories under `cgroupfs` (one
/// cgroup2 hierarchy), pins are empty files, overlay mounts copy the lower
/// layers into the mount point, processes are entries in a table.
pub struct FakeHost {
    pub cgroupfs: PathBuf,
    state: Mutex<HostState>,
}

impl FakeHost {
    pub fn new(cgroupfs: &Path) -> Arc<FakeHost> {
        std::fs::create_dir_all(cgroupfs).expect("creating the fake cgroupfs");
        Arc::new(FakeHost {
            cgroupfs: cgroupfs.to_path_buf(),
            state: Mutex::new(HostState {
                next_pid: 1000,
                ..Default::default()
            }),
        })
    }

    pub fn state(&self) -> MutexGuard<'_, HostState> {
        lock(&self.state)
    }

    /// Makes the call named `what` fail from now on.
    pub fn fail(&self, what: &'static str) {
        self.state().fail.insert(what);
    }

    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The calls whose name is `what`.
    pub fn calls_to(&self, what: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.split(' ').next() == Some(what))
            .collect()
    }

    /// Records a call and says whether it is to fail.
    fn call(&self, what: &'static str, details: String) -> bool {
        let mut s = self.state();
        s.calls
            .push(format!("{what} {details}").trim_end().to_string());
        s.fail.contains(what)
    }

    fn spawn(&self, p: Proc) -> i32 {
        let mut s = self.state();
        s.next_pid += 1;
        let pid = s.next_pid;
        s.procs.insert(pid, p);
        pid
    }

    /// Container `id` ends as its monitor would record it: the exit file
    /// first, then the monitor and the init gone.
    pub fn exit_container(&self, id: &str, exit_code: i32, signal: i32) {
        let mut s = self.state();
        let Some((monitor, init, exit_file)) = s.monitors.get(id).cloned() else {
            return;
        };
        if !s.procs.contains_key(&init) {
            return;
        }
        let body = format!(
            "{{\"exit_code\":{exit_code},\"signal\":{signal},\"finished_at\":{}}}\n",
            now_nanos()
        );
        std::fs::write(&exit_file, body).expect("writing the fake exit file");
        s.procs.remove(&monitor);
        s.procs.remove(&init);
    }

    /// The monitor of container `id` dies without recording an exit.
    pub fn crash_monitor(&self, id: &str) {
        let mut s = self.state();
        if let Some((monitor, init, _)) = s.monitors.get(id).cloned() {
            s.procs.remove(&monitor);
            s.procs.remove(&init);
        }
    }

    fn hierarchy(&self) -> [Hierarchy; 1] {
        [Hierarchy {
            mount: self.cgroupfs.clone(),
            v2: true,
        }]
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            std::fs::create_dir_all(&dst)?;
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Host for FakeHost {
    fn create_cgroup(
        &self,
        cg: &str,
        created: &mut dyn FnMut(&[PathBuf]) -> Result<()>,
    ) -> Result<()> {
        if self.call("create_cgroup", cg.to_string()) {
            return Err(Error::Internal(format!("creating cgroup {cg} (injected)")));
        }
        cgroup::create(&self.hierarchy(), cg, created)
    }

    fn enter_cgroup(&self, cg: &str, pid: i32) -> Result<()> {
        if self.call("enter_cgroup", format!("{cg} {pid}")) {
            return Err(Error::Internal(format!("moving {pid} (injected)")));
        }
        Ok(())
    }

    fn remove_cgroup_dirs(&self, dirs: &[PathBuf]) -> std::result::Result<(), String> {
        if self.call("remove_cgroup_dirs", format!("{}", dirs.len())) {
            return Err("removing cgroups (injected)".into());
        }
        cgroup::remove(dirs)
    }

    fn apply_pod_resources(
        &self,
        cg: &str,
        resources: &gantry_proto::v1::LinuxContainerResources,
    ) -> Result<()> {
        self.call("apply_pod_resources", cg.to_string());
        cgroup::apply_pod_resources(&self.hierarchy(), cg, resources)
    }

    fn cgroup_dir_exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn cgroup_root(&self) -> &Path {
        &self.cgroupfs
    }

    fn remove_container_cgroup(&self, cg: &str) {
        self.call("remove_container_cgroup", cg.to_string());
        let rel = cg.trim_start_matches('/');
        if !rel.is_empty() {
            let _ = std::fs::remove_dir(self.cgroupfs.join(rel));
        }
    }

    fn create_namespaces(
        &self,
        dir: &Path,
        which: Private,
        hostname: &str,
    ) -> std::result::Result<PinnedNamespaces, NsError> {
        if self.call(
            "create_namespaces",
            format!(
                "net={} ipc={} uts={} {hostname}",
                which.net, which.ipc, which.uts
            ),
        ) {
            return Err(NsError::Sys {
                what: "unshare".into(),
                source: io_failure("unshare"),
            });
        }
        let pin = |on: bool, name: &str| -> std::io::Result<Option<PathBuf>> {
            if !on {
                return Ok(None);
            }
            let p = dir.join(name);
            std::fs::File::create(&p)?;
            self.state().pins.insert(p.clone());
            Ok(Some(p))
        };
        let sys = |e| NsError::Sys {
            what: "pinning".into(),
            source: e,
        };
        Ok(PinnedNamespaces {
            net: pin(which.net, "net").map_err(sys)?,
            ipc: pin(which.ipc, "ipc").map_err(sys)?,
            uts: pin(which.uts, "uts").map_err(sys)?,
        })
    }

    fn remove_namespaces(&self, pinned: &PinnedNamespaces) {
        for p in [&pinned.net, &pinned.ipc, &pinned.uts]
            .into_iter()
            .flatten()
        {
            self.unpin(p);
        }
    }

    fn is_pinned(&self, path: &Path) -> bool {
        self.state().pins.contains(path)
    }

    fn write_sysctls(
        &self,
        ns: &Path,
        kind: NsKind,
        sysctls: Vec<(String, String)>,
    ) -> std::result::Result<std::result::Result<(), String>, NsError> {
        if self.call("write_sysctls", format!("{kind:?} {}", ns.display())) {
            return Ok(Err("sysctl write refused (injected)".into()));
        }
        let mut s = self.state();
        if !s.pins.contains(ns) {
            return Err(NsError::Sys {
                what: format!("entering {}", ns.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        for (k, v) in sysctls {
            s.sysctls.push((ns.to_path_buf(), k, v));
        }
        Ok(Ok(()))
    }

    fn pin_pid_namespace(&self, pid: i32, pin: &Path) -> std::io::Result<()> {
        if self.call("pin_pid_namespace", format!("{pid} {}", pin.display())) {
            return Err(io_failure("bind mount"));
        }
        std::fs::File::create(pin)?;
        self.state().pins.insert(pin.to_path_buf());
        Ok(())
    }

    fn unpin(&self, pin: &Path) {
        self.call("unpin", pin.display().to_string());
        self.state().pins.remove(pin);
        let _ = std::fs::remove_file(pin);
    }

    async fn start_pod_init(
        &self,
        _monitor: &Path,
        id: &str,
        _userns: Option<&Path>,
    ) -> std::io::Result<String> {
        if self.call("start_pod_init", id.to_string()) {
            return Ok("error unshare: operation not permitted (injected)".into());
        }
        Ok(format!("ok {}", self.spawn(Proc::PodInit(id.to_string()))))
    }

    fn pod_init(&self, id: &str, recorded: i32) -> Option<i32> {
        let s = self.state();
        let is_init = |pid: &i32| s.procs.get(pid) == Some(&Proc::PodInit(id.to_string()));
        if is_init(&recorded) {
            return Some(recorded);
        }
        s.procs.keys().copied().find(is_init)
    }

    async fn run_monitor(
        &self,
        _monitor: &Path,
        args: &[OsString],
        _log: &Path,
    ) -> std::io::Result<String> {
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
        };
        let id = value("--id")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if self.call("run_monitor", id.clone()) {
            return Ok("error runc run: exec format error (injected)".into());
        }
        let (Some(exit_file), Some(pid_file)) = (value("--exit-file"), value("--pid-file")) else {
            return Ok("error missing arguments".into());
        };
        let monitor = self.spawn(Proc::Monitor(id.clone()));
        let init = self.spawn(Proc::Init(id.clone()));
        std::fs::write(&pid_file, init.to_string())?;
        self.state().monitors.insert(id, (monitor, init, exit_file));
        Ok(format!("ok {monitor} {init}"))
    }

    fn monitor_alive(&self, pid: i32, id: &str) -> bool {
        self.state().procs.get(&pid) == Some(&Proc::Monitor(id.to_string()))
    }

    fn monitors_of(&self, id: &str) -> Vec<i32> {
        let s = self.state();
        s.procs
            .iter()
            .filter(|(_, p)| **p == Proc::Monitor(id.to_string()))
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn kill_monitor(&self, pid: i32) {
        self.call("kill_monitor", pid.to_string());
        let mut s = self.state();
        if let Some(Proc::Monitor(id)) = s.procs.remove(&pid) {
            // Its process group: the runtime and what it started.
            if let Some((_, init, _)) = s.monitors.get(&id).cloned() {
                s.procs.remove(&init);
            }
        }
    }

    fn process_running(&self, pid: i32) -> bool {
        self.state().procs.contains_key(&pid)
    }

    fn kill_cgroup(&self, cgroup: &str, init: i32) -> std::io::Result<bool> {
        if self.call("kill_cgroup", format!("{cgroup} {init}")) {
            return Err(io_failure("kill_cgroup"));
        }
        if self.state().no_cgroup_kill {
            return Ok(false);
        }
        // As the kernel: only a live init in that very cgroup (each
        // container's is `<pod cgroup>/<id>`) takes the container down.
        let id = {
            let s = self.state();
            s.monitors
                .iter()
                .find(|(_, (_, i, _))| *i == init && s.procs.contains_key(i))
                .map(|(id, _)| id.clone())
        };
        match id {
            Some(id) if cgroup.rsplit('/').next() == Some(id.as_str()) => {
                self.exit_container(&id, 128 + libc::SIGKILL, libc::SIGKILL);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn kill(&self, pid: i32, signal: i32) -> std::io::Result<()> {
        self.call("kill", format!("{pid} {signal}"));
        let mut s = self.state();
        if !s.procs.contains_key(&pid) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        if signal == libc::SIGKILL {
            s.procs.remove(&pid);
        }
        Ok(())
    }

    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> std::io::Result<()> {
        if self.call("mount_overlay", target.display().to_string()) {
            return Err(io_failure("overlay mount"));
        }
        // What the merged view shows: the bottom layer first, the top last.
        for l in lower.iter().rev() {
            copy_dir(l, target)?;
        }
        self.state().mounted(target);
        Ok(())
    }

    fn mount_overlay_readonly(&self, lower: &[PathBuf], target: &Path) -> std::io::Result<()> {
        if self.call("mount_overlay_readonly", target.display().to_string()) {
            return Err(io_failure("overlay mount"));
        }
        for l in lower.iter().rev() {
            copy_dir(l, target)?;
        }
        self.state().mounted(target);
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        if self.call("bind", target.display().to_string()) {
            return Err(io_failure("bind mount"));
        }
        copy_dir(source, target)?;
        self.state().mounted(target);
        Ok(())
    }

    fn remount_readonly(&self, target: &Path) -> std::io::Result<()> {
        if self.call("remount_readonly", target.display().to_string()) {
            return Err(io_failure("remount"));
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        if self.call("unmount", target.display().to_string()) {
            // Busy: still mounted.
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        if self.state().unmounted(target) {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
    }
}

/// A runtime whose containers are the fake host's processes: a signal to
/// a container ends it as its monitor would record.
pub struct FakeRuntime {
    pub host: Arc<FakeHost>,
    pub name: String,
    pub root: PathBuf,
}

impl FakeRuntime {
    fn call(&self, what: &'static str, details: String) -> bool {
        self.host.call(what, details)
    }

    fn refused(&self, what: &str, id: &str) -> Error {
        Error::Internal(format!("{} {what} {id} failed (injected)", self.name))
    }
}

#[async_trait::async_trait]
impl OciRuntime for FakeRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn invocation(&self) -> RuntimeInvocation {
        RuntimeInvocation {
            binary: PathBuf::from("/nonexistent/fake-runtime"),
            root: self.root.clone(),
            global_args: Vec::new(),
        }
    }

    fn native_exec(&self) -> bool {
        false
    }

    fn kills_by_cgroup(&self) -> bool {
        // Whether it applies is the fake host's `no_cgroup_kill`.
        true
    }

    async fn create(&self, id: &str, _: &Path, _: &Path, _: ContainerIo) -> Result<()> {
        if self.call("runtime.create", id.to_string()) {
            return Err(self.refused("create", id));
        }
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<()> {
        if self.call("runtime.start", id.to_string()) {
            return Err(self.refused("start", id));
        }
        Ok(())
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        if self.call("runtime.kill", format!("{id} {signal} all={all}")) {
            return Err(self.refused("kill", id));
        }
        let running = {
            let s = self.host.state();
            s.monitors
                .get(id)
                .is_some_and(|(_, init, _)| s.procs.contains_key(init))
        };
        if !running {
            return Err(Error::NotFound(format!("container {id} in runtime fake")));
        }
        // A process that ignores its stop signal is the test's business:
        // it marks the signal failed and the container lives on.
        if signal == libc::SIGKILL || !self.host.state().fail.contains("ignore_stop_signal") {
            self.host.exit_container(id, 128 + signal, signal);
        }
        Ok(())
    }

    async fn delete(&self, id: &str, force: bool) -> Result<()> {
        if self.call("runtime.delete", format!("{id} force={force}")) {
            return Err(self.refused("delete", id));
        }
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<RuntimeState> {
        Err(Error::NotFound(format!("container {id}")))
    }

    async fn pause(&self, id: &str) -> Result<()> {
        Err(Error::Unimplemented(format!("pause {id}")))
    }

    async fn resume(&self, id: &str) -> Result<()> {
        Err(Error::Unimplemented(format!("resume {id}")))
    }

    async fn update(&self, id: &str, _: &Path) -> Result<()> {
        if self.call("runtime.update", id.to_string()) {
            return Err(self.refused("update", id));
        }
        Ok(())
    }

    async fn exec_sync(
        &self,
        target: &ExecTarget<'_>,
        cmd: &[String],
        _: Option<std::time::Duration>,
        _: &Path,
        _: usize,
    ) -> Result<Option<ExecOutput>> {
        self.call(
            "runtime.exec_sync",
            format!("{} {}", target.id, cmd.join(" ")),
        );
        Ok(Some(ExecOutput {
            stdout: cmd.join(" ").into_bytes(),
            stderr: Vec::new(),
            exit_code: 0,
        }))
    }

    async fn kill_exec(&self, _: &str, _: &Path) -> bool {
        true
    }

    async fn exec_interactive(
        &self,
        target: &ExecTarget<'_>,
        _: &[String],
        _: ExecStreams,
        _: &Path,
        _: Option<ExecTerminal<'_>>,
    ) -> Result<tokio::process::Child> {
        Err(Error::Unimplemented(format!(
            "interactive exec in {} (fake runtime)",
            target.id
        )))
    }
}

/// Makes a [`FakeRuntime`] for every handler; none honours recursive
/// read-only mounts.
pub struct FakeRuntimes(pub Arc<FakeHost>);

impl RuntimeMaker for FakeRuntimes {
    fn make(
        &self,
        config: &RuntimeConfig,
        name: &str,
        _: &RuntimeHandler,
        _: &RuntimeMetrics,
    ) -> crate::oci::MadeRuntime {
        let runtime = FakeRuntime {
            host: self.0.clone(),
            name: name.to_string(),
            root: config.state_dir.join("runtime").join(name),
        };
        crate::oci::MadeRuntime {
            runtime: Arc::new(runtime),
            recursive_read_only: false,
            user_namespaces: false,
        }
    }
}

#[derive(Default)]
pub struct NetworkState {
    pub calls: Vec<String>,
    /// Pod ID to the namespace it is attached in.
    pub attached: BTreeMap<String, PathBuf>,
    pub fail_attach: bool,
    pub fail_detach: bool,
}

/// A network that hands out one address per pod and remembers which pods
/// it has.
#[derive(Default)]
pub struct FakeNetwork {
    pub state: Mutex<NetworkState>,
}

impl FakeNetwork {
    pub fn state(&self) -> MutexGuard<'_, NetworkState> {
        lock(&self.state)
    }
}

#[async_trait::async_trait]
impl PodNetwork for FakeNetwork {
    async fn ready(&self) -> std::result::Result<(), (String, String)> {
        Ok(())
    }

    fn current_name(&self) -> Option<String> {
        Some("fakenet".into())
    }

    async fn attach(&self, req: &PodNetworkRequest) -> Result<Attached> {
        let mut s = self.state();
        s.calls.push(format!("attach {}", req.id));
        // ADD may have done part of its work before failing: the pod is
        // attached as far as a DEL is concerned.
        s.attached.insert(req.id.clone(), req.netns.clone());
        if s.fail_attach {
            return Err(Error::network("CNI ADD")(std::io::Error::other(
                "failed (injected)",
            )));
        }
        let n = s.attached.len();
        Ok(Attached {
            network: "fakenet".into(),
            ips: vec![format!("10.88.0.{n}/16")],
        })
    }

    async fn detach(&self, network: &str, id: &str, _: Option<&Path>) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("detach {network} {id}"));
        if s.fail_detach {
            return Err(Error::network("CNI DEL")(std::io::Error::other(
                "failed (injected)",
            )));
        }
        s.attached.remove(id);
        Ok(())
    }

    async fn gc(&self, live: &[String]) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("gc {}", live.join(",")));
        s.attached.retain(|id, _| live.contains(id));
        Ok(())
    }
}

/// An image store of one image, `app` (any other name is unknown), whose
/// single layer holds an executable `/bin/app` and a file `/data/hello`;
/// leases are kept in a map.
pub struct FakeImages {
    pub layer: PathBuf,
    pub leases: Mutex<BTreeMap<String, BTreeSet<String>>>,
    pub fail_acquire: Mutex<bool>,
}

impl FakeImages {
    pub fn new(dir: &Path) -> Arc<FakeImages> {
        use std::os::unix::fs::PermissionsExt;
        let layer = dir.join("layer");
        std::fs::create_dir_all(layer.join("bin")).expect("creating the fake layer");
        let app = layer.join("bin/app");
        std::fs::write(&app, "#!/bin/sh\n").expect("writing the fake binary");
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755))
            .expect("making the fake binary executable");
        // What an image volume of it may pick with image_sub_path.
        std::fs::create_dir_all(layer.join("data")).expect("creating the fake data dir");
        std::fs::write(layer.join("data/hello"), "hello\n").expect("writing the fake data");
        Arc::new(FakeImages {
            layer,
            leases: Default::default(),
            fail_acquire: Default::default(),
        })
    }

    /// The containers holding a lease.
    pub fn holders(&self) -> Vec<String> {
        lock(&self.leases).keys().cloned().collect()
    }
}

#[async_trait::async_trait]
impl ImageLookup for FakeImages {
    async fn acquire(
        &self,
        image: &str,
        lease: &str,
        owner: &str,
    ) -> Result<Option<ResolvedImage>> {
        if image != "app" {
            return Ok(None);
        }
        lock(&self.leases)
            .entry(owner.to_string())
            .or_default()
            .insert(lease.to_string());
        if *lock(&self.fail_acquire) {
            return Err(Error::Internal("reading the image (injected)".into()));
        }
        Ok(Some(ResolvedImage {
            id: "sha256:feed".into(),
            image_ref: "app@sha256:feed".into(),
            snapshots: vec![self.layer.clone()],
            config: serde_json::json!({"config": {"Entrypoint": ["/bin/app"]}}),
            artifact_type: None,
        }))
    }

    async fn release(&self, owner: &str) -> Result<()> {
        lock(&self.leases).remove(owner);
        Ok(())
    }

    async fn retain(&self, live: &HashMap<String, String>) -> Result<()> {
        lock(&self.leases).retain(|owner, _| live.contains_key(owner));
        Ok(())
    }
}

/// Services on fake host, runtime, network and images, with their state
/// under one temporary directory.
pub struct World {
    pub dir: tempfile::TempDir,
    pub host: Arc<FakeHost>,
    pub network: Arc<FakeNetwork>,
    pub images: Arc<FakeImages>,
    pub pods: Arc<crate::PodService>,
}

impl World {
    pub fn new() -> World {
        // On tmpfs where there is one: the records' fsyncs then cost
        // nothing, whatever else the disk is doing.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("creating a temporary directory");
        let host = FakeHost::new(&dir.path().join("cgroupfs"));
        let network = Arc::new(FakeNetwork::default());
        let images = FakeImages::new(&dir.path().join("images"));
        // RunPodSandbox refuses handlers whose binary is missing.
        let runc = dir.path().join("runc");
        std::fs::write(&runc, "").expect("writing the fake runtime binary");
        let config = RuntimeConfig {
            root: dir.path().join("root"),
            state_dir: dir.path().join("state"),
            default_runtime: "runc".into(),
            runtimes: [(
                "runc".to_string(),
                RuntimeHandler {
                    path: runc,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let pods = crate::PodService::new(
            config,
            network.clone(),
            host.clone(),
            dir.path().join("gantry-monitor"),
        )
        .expect("opening the pod service");
        World {
            dir,
            host,
            network,
            images,
            pods: Arc::new(pods),
        }
    }

    /// The container service on this world's pods.
    pub fn containers(&self) -> crate::container::ContainerService {
        crate::container::ContainerService::new(
            self.pods.clone(),
            self.images.clone(),
            Arc::new(FakeRuntimes(self.host.clone())),
            self.dir.path().join("gantry-monitor"),
        )
        .expect("opening the container service")
    }
}

/// A pod config kubelet could send: its own network, IPC and UTS
/// namespaces and a shared PID namespace.
pub fn pod_config(name: &str) -> gantry_proto::v1::PodSandboxConfig {
    use gantry_proto::v1 as cri;
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config of the image `app`.
pub fn container_config(name: &str) -> gantry_proto::v1::ContainerConfig {
    use gantry_proto::v1 as cri;
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "app".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
