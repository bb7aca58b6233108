//! What the pod and container lifecycles do to the host, behind one trait:
//! cgroups, pinned namespaces and sysctls in them, mounts, signals, the
//! view of which processes live, and the monitor processes started for pods
//! and containers. [`RealHost`] does it (the daemon's); the services take a
//! `Arc<dyn Host>` at construction, so the lifecycles can run against a
//! recording double in tests, without root.
//!
//! What a lifecycle writes in its own state directories (records, bundles,
//! `resolv.conf`) is not a host effect here: tests give it a temporary
//! directory. Reads for stats and metrics (`/sys/fs/cgroup`, `/proc`) and
//! the interactive exec sessions do not go through it either.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use gantry_cni::netns::{self, NsError, NsKind, PinnedNamespaces, Private};

use crate::cgroup::{self, Hierarchy};
use crate::error::Result;

#[async_trait::async_trait]
pub trait Host: Send + Sync + 'static {
    /// Makes `cgroup` (a path below the hierarchy roots) in every
    /// hierarchy. `created` is told, once and before anything is made,
    /// every directory that will be new, so a crash still knows what to
    /// remove ([`cgroup::create`]).
    fn create_cgroup(
        &self,
        cgroup: &str,
        created: &mut dyn FnMut(&[PathBuf]) -> Result<()>,
    ) -> Result<()>;
    /// Moves `pid` into `cgroup` in every hierarchy.
    fn enter_cgroup(&self, cgroup: &str, pid: i32) -> Result<()>;
    /// Removes cgroup directories made by [`Host::create_cgroup`], deepest
    /// first; blocks a little while a cgroup's last process exits.
    fn remove_cgroup_dirs(&self, dirs: &[PathBuf]) -> std::result::Result<(), String>;
    /// Writes a pod's new total resources into its cgroup
    /// ([`cgroup::apply_pod_resources`]).
    fn apply_pod_resources(
        &self,
        cgroup: &str,
        resources: &gantry_proto::v1::LinuxContainerResources,
    ) -> Result<()>;
    /// Whether a cgroup directory made for a pod still exists.
    fn cgroup_dir_exists(&self, dir: &Path) -> bool;
    /// Where container cgroups are found (`/sys/fs/cgroup`): a container's
    /// cgroup path is relative to it and to each v1 hierarchy below it.
    fn cgroup_root(&self) -> &Path;
    /// Removes a container's (empty) cgroup from every hierarchy; one that
    /// still has processes stays.
    fn remove_container_cgroup(&self, cgroup: &str);
    /// SIGKILLs every process in container cgroup `cgroup` at once, if
    /// `init` (the container's init PID) is in it, without running the
    /// container's runtime ([`cgroup::kill_all`]). `Ok(false)`: it does not
    /// apply here (cgroup v1 only, a kernel before 5.14, the init gone or
    /// elsewhere) and the runtime has to kill the container.
    fn kill_cgroup(&self, cgroup: &str, init: i32) -> std::io::Result<bool>;

    /// Creates and pins the namespaces `which` asks for under `dir`.
    fn create_namespaces(
        &self,
        dir: &Path,
        which: Private,
        hostname: &str,
    ) -> std::result::Result<PinnedNamespaces, NsError>;
    /// Unpins namespaces; missing pins are fine.
    fn remove_namespaces(&self, pinned: &PinnedNamespaces);
    /// Whether `path` still pins a namespace.
    fn is_pinned(&self, path: &Path) -> bool;
    /// Writes `sysctls` (dotted names) inside the namespace pinned at `ns`.
    /// The outer error is entering the namespace; the inner one a write
    /// the kernel refused.
    fn write_sysctls(
        &self,
        ns: &Path,
        kind: NsKind,
        sysctls: Vec<(String, String)>,
    ) -> std::result::Result<std::result::Result<(), String>, NsError>;
    /// Pins the PID namespace of `pid` at `pin` (a file made here).
    fn pin_pid_namespace(&self, pid: i32, pin: &Path) -> std::io::Result<()>;
    /// Unmounts and deletes a pin or mount point; missing is fine.
    fn unpin(&self, pin: &Path);

    /// Starts the init of a pod's shared PID namespace (`monitor
    /// --pod-init id`, inside the pod's user namespace pinned at `userns`
    /// if it has one) and returns its report line.
    async fn start_pod_init(
        &self,
        monitor: &Path,
        id: &str,
        userns: Option<&Path>,
    ) -> std::io::Result<String>;
    /// The live init of pod `id`: `recorded` if it still is that, else
    /// one found by its command line.
    fn pod_init(&self, id: &str, recorded: i32) -> Option<i32>;
    /// Starts a container's monitor with `args`, its stderr to `log`, and
    /// returns the first line it reports (the monitor itself keeps
    /// running).
    async fn run_monitor(
        &self,
        monitor: &Path,
        args: &[OsString],
        log: &Path,
    ) -> std::io::Result<String>;
    /// Whether `pid` is container `id`'s monitor (PIDs wrap).
    fn monitor_alive(&self, pid: i32, id: &str) -> bool;
    /// Every live monitor process of container `id`.
    fn monitors_of(&self, id: &str) -> Vec<i32>;
    /// SIGKILLs a monitor process and, if it leads one, its process group
    /// (the runtime it runs goes with it).
    fn kill_monitor(&self, pid: i32);
    /// Whether `pid` is a live process (not gone, not a zombie).
    fn process_running(&self, pid: i32) -> bool;
    /// Sends `signal` to `pid`.
    fn kill(&self, pid: i32, signal: i32) -> std::io::Result<()>;

    /// Mounts the overlay of `lower` (top first) with `upper` and `work` on
    /// `target`.
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()>;
    /// Mounts the read-only overlay of `lower` (top first, at least two)
    /// on `target`, with no upper layer.
    fn mount_overlay_readonly(&self, lower: &[PathBuf], target: &Path) -> std::io::Result<()>;
    /// Bind-mounts `source` on `target`.
    fn bind(&self, source: &Path, target: &Path) -> std::io::Result<()>;
    /// Makes the bind mount at `target` read-only.
    fn remount_readonly(&self, target: &Path) -> std::io::Result<()>;
    /// Detaches whatever is mounted at `target`.
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
}

/// The host itself.
pub struct RealHost {
    /// The mounted cgroup hierarchies pod cgroups are made in.
    hierarchies: Vec<Hierarchy>,
    cgroup_root: PathBuf,
}

impl RealHost {
    pub fn new() -> RealHost {
        RealHost {
            hierarchies: cgroup::hierarchies(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl Default for RealHost {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `pid`'s command line holds every one of `words` (PIDs wrap, so
/// a recorded PID is trusted only with the right command line).
fn cmdline_has(pid: i32, words: &[&str]) -> bool {
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let s = String::from_utf8_lossy(&c);
                words.iter().all(|w| s.contains(w))
            })
            .unwrap_or(false)
}

fn proc_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

#[async_trait::async_trait]
impl Host for RealHost {
    fn create_cgroup(
        &self,
        cgroup: &str,
        created: &mut dyn FnMut(&[PathBuf]) -> Result<()>,
    ) -> Result<()> {
        cgroup::create(&self.hierarchies, cgroup, created)
    }

    fn enter_cgroup(&self, cgroup: &str, pid: i32) -> Result<()> {
        cgroup::enter(&self.hierarchies, cgroup, pid)
    }

    fn remove_cgroup_dirs(&self, dirs: &[PathBuf]) -> std::result::Result<(), String> {
        cgroup::remove(dirs)
    }

    fn apply_pod_resources(
        &self,
        cgroup: &str,
        resources: &gantry_proto::v1::LinuxContainerResources,
    ) -> Result<()> {
        cgroup::apply_pod_resources(&self.hierarchies, cgroup, resources)
    }

    fn cgroup_dir_exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    fn remove_container_cgroup(&self, cgroup: &str) {
        let rel = cgroup.trim_start_matches('/');
        if rel.is_empty() {
            return;
        }
        let hierarchies = std::fs::read_dir(&self.cgroup_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path());
        for dir in std::iter::once(self.cgroup_root.clone()).chain(hierarchies) {
            let _ = std::fs::remove_dir(dir.join(rel));
        }
    }

    fn kill_cgroup(&self, cgroup: &str, init: i32) -> std::io::Result<bool> {
        if init <= 0 {
            return Ok(false);
        }
        // A few lines; bounded all the same.
        let mut text = String::new();
        let read = std::fs::File::open(format!("/proc/{init}/cgroup")).and_then(|f| {
            std::io::Read::read_to_string(&mut std::io::Read::take(f, 64 << 10), &mut text)
        });
        if read.is_err() {
            // Gone already: the runtime's kill says how it ended.
            return Ok(false);
        }
        cgroup::kill_all(&self.hierarchies, cgroup, &text)
    }

    fn create_namespaces(
        &self,
        dir: &Path,
        which: Private,
        hostname: &str,
    ) -> std::result::Result<PinnedNamespaces, NsError> {
        netns::create(dir, which, hostname)
    }

    fn remove_namespaces(&self, pinned: &PinnedNamespaces) {
        netns::remove(pinned)
    }

    fn is_pinned(&self, path: &Path) -> bool {
        netns::is_pinned(path)
    }

    fn write_sysctls(
        &self,
        ns: &Path,
        kind: NsKind,
        sysctls: Vec<(String, String)>,
    ) -> std::result::Result<std::result::Result<(), String>, NsError> {
        let which = match kind {
            NsKind::Net => "network",
            NsKind::Ipc => "IPC",
            NsKind::Uts => "UTS",
        };
        netns::run_in_ns(ns, kind, move || {
            for (k, v) in &sysctls {
                let path = Path::new("/proc/sys").join(k.replace('.', "/"));
                std::fs::write(&path, v).map_err(|e| format!("{which} sysctl {k}={v}: {e}"))?;
            }
            Ok(())
        })
    }

    fn pin_pid_namespace(&self, pid: i32, pin: &Path) -> std::io::Result<()> {
        std::fs::File::create(pin)?;
        rustix::mount::mount_bind(format!("/proc/{pid}/ns/pid").as_str(), pin)?;
        Ok(())
    }

    fn unpin(&self, pin: &Path) {
        let _ = rustix::mount::unmount(pin, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(pin);
    }

    async fn start_pod_init(
        &self,
        monitor: &Path,
        id: &str,
        userns: Option<&Path>,
    ) -> std::io::Result<String> {
        let mut cmd = tokio::process::Command::new(monitor);
        cmd.arg("--pod-init").arg(id);
        if let Some(u) = userns {
            cmd.arg("--userns").arg(u);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn pod_init(&self, id: &str, recorded: i32) -> Option<i32> {
        let is_init = |pid: i32| cmdline_has(pid, &["--pod-init", id]);
        if is_init(recorded) {
            return Some(recorded);
        }
        proc_pids().find(|pid| is_init(*pid))
    }

    async fn run_monitor(
        &self,
        monitor: &Path,
        args: &[OsString],
        log: &Path,
    ) -> std::io::Result<String> {
        let mut cmd = tokio::process::Command::new(monitor);
        cmd.args(args).stdin(std::process::Stdio::null()).stderr(
            std::fs::File::create(log)
                .map(std::process::Stdio::from)
                .unwrap_or(std::process::Stdio::null()),
        );
        // Only the report line is read: the monitor keeps running, so
        // waiting for its pipes to close (as `output()` does) would hang.
        cmd.stdout(std::process::Stdio::piped()).kill_on_drop(false);
        let mut child = cmd.spawn()?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let mut reader = tokio::io::BufReader::new(stdout);
            tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line).await?;
        }
        // The first monitor process exits right after relaying the report.
        let _ = child.wait().await;
        Ok(line.trim().to_string())
    }

    fn monitor_alive(&self, pid: i32, id: &str) -> bool {
        crate::container::monitor_alive(pid, id)
    }

    fn monitors_of(&self, id: &str) -> Vec<i32> {
        proc_pids()
            .filter(|pid| crate::container::monitor_alive(*pid, id))
            .collect()
    }

    fn kill_monitor(&self, pid: i32) {
        // The monitor proper leads its own process group (it called
        // setsid), which takes the runtime's run with it; the short-lived
        // relay does not, so it alone is killed.
        let pid = rustix::process::Pid::from_raw(pid);
        let Some(pid) = pid else { return };
        let leads = rustix::process::getpgid(Some(pid)).is_ok_and(|g| g == pid);
        let _ = if leads {
            rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        } else {
            rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        };
    }

    fn process_running(&self, pid: i32) -> bool {
        pid > 0
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
                })
                .unwrap_or(false)
    }

    fn kill(&self, pid: i32, signal: i32) -> std::io::Result<()> {
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: kill takes no pointers; the caller checked that `pid` is
        // the process it means.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()> {
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower_dirs(lower),
            upper.display(),
            work.display()
        );
        overlay(target, &data, rustix::mount::MountFlags::empty())
    }

    fn mount_overlay_readonly(&self, lower: &[PathBuf], target: &Path) -> std::io::Result<()> {
        let data = format!("lowerdir={}", lower_dirs(lower));
        overlay(target, &data, rustix::mount::MountFlags::RDONLY)
    }

    fn bind(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        rustix::mount::mount_bind(source, target)?;
        Ok(())
    }

    fn remount_readonly(&self, target: &Path) -> std::io::Result<()> {
        use rustix::mount::MountFlags;
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)?;
        Ok(())
    }
}

fn lower_dirs(lower: &[PathBuf]) -> String {
    lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn overlay(target: &Path, data: &str, flags: rustix::mount::MountFlags) -> std::io::Result<()> {
    let data = std::ffi::CString::new(data).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "overlay options contain NUL",
        )
    })?;
    rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()))?;
    Ok(())
}
