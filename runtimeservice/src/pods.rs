//! The pod sandbox operations: run, stop, remove, status and list, over the
//! [`PodStore`] records, the pinned namespaces and the [`PodNetwork`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use gantry_cni::netns::{self, PinnedNamespaces, Private};
use gantry_proto::v1 as cri;
use tracing::{info, info_span, warn, Instrument};

use crate::cgroup::{self, Hierarchy};
use crate::config::{CgroupDriver, RuntimeConfig, RuntimeHandler};
use crate::error::{Error, Result};
use crate::metrics::{phase, RuntimeMetrics};
use crate::network::{NetworkExtras, PodNetwork, PodNetworkRequest};
use crate::pod::{new_id, PodRecord, PodState, PodStore, RECORD_VERSION};

pub struct PodService {
    /// As the daemon started; the handlers in force are in `handlers`.
    pub config: RuntimeConfig,
    /// The runtime handlers new pods may name; a reload replaces them
    /// ([`crate::containers::ContainerService::set_handlers`]).
    handlers: RwLock<Arc<BTreeMap<String, RuntimeHandler>>>,
    /// gantry-monitor, which also serves as the init of shared PID namespaces.
    monitor: PathBuf,
    pub store: PodStore,
    pub(crate) network: Arc<dyn PodNetwork>,
    /// Where namespaces are pinned: on tmpfs, so pins vanish with a reboot
    /// just as the namespaces do.
    ns_dir: PathBuf,
    /// The mounted cgroup hierarchies pod cgroups are made in.
    hierarchies: Vec<Hierarchy>,
    /// Taken while a pod's cgroup is made, removed or handed over.
    cgroup_handover: tokio::sync::Mutex<()>,
    pub(crate) metrics: RuntimeMetrics,
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn mode(
    opts: Option<&cri::NamespaceOption>,
    pick: fn(&cri::NamespaceOption) -> i32,
) -> cri::NamespaceMode {
    opts.map(pick)
        .and_then(|m| cri::NamespaceMode::try_from(m).ok())
        .unwrap_or(cri::NamespaceMode::Pod)
}

fn namespace_options(config: &cri::PodSandboxConfig) -> Option<&cri::NamespaceOption> {
    config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()
}

/// Sysctls a pod may set: those the kernel scopes to the pod's own IPC or
/// network namespace (not when it shares the host's).
fn validate_sysctls(
    sysctls: &HashMap<String, String>,
    host_net: bool,
    host_ipc: bool,
) -> Result<()> {
    for (name, value) in sysctls {
        let key = name.replace('/', ".");
        if key.is_empty()
            || key.starts_with('.')
            || key.contains("..")
            || !key.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            })
        {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} is not a valid name"
            )));
        }
        if value.contains(['\n', '\0']) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} has a value with a newline or NUL"
            )));
        }
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if ipc && host_ipc {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} would change the host: the pod shares the host IPC namespace"
            )));
        }
        if net && host_net {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} would change the host: the pod uses the host network"
            )));
        }
        if !ipc && !net {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} is not namespaced and cannot be set for one pod"
            )));
        }
    }
    Ok(())
}

fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Result<Option<String>> {
    let Some(dns) = dns else { return Ok(None) };
    let mut out = String::new();
    for s in &dns.servers {
        s.parse::<IpAddr>().map_err(|_| {
            Error::InvalidArgument(format!("DNS server {s:?} is not an IP address"))
        })?;
        out.push_str(&format!("nameserver {s}\n"));
    }
    for (what, items) in [("search", &dns.searches), ("options", &dns.options)] {
        if items
            .iter()
            .any(|i| i.is_empty() || i.contains(char::is_whitespace))
        {
            return Err(Error::InvalidArgument(format!(
                "DNS {what} entries must be single words"
            )));
        }
        if !items.is_empty() {
            out.push_str(&format!("{what} {}\n", items.join(" ")));
        }
    }
    Ok(Some(out))
}

/// What RunPodSandbox derived from the config and checked before making
/// anything.
struct Checked {
    host_net: bool,
    host_ipc: bool,
    resolv: Option<String>,
    sysctls: HashMap<String, String>,
    extras: NetworkExtras,
}

fn write_sysctls(which: &str, sysctls: &[(String, String)]) -> std::result::Result<(), String> {
    for (k, v) in sysctls {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).map_err(|e| format!("{which} sysctl {k}={v}: {e}"))?;
    }
    Ok(())
}

impl PodService {
    pub fn new(
        config: RuntimeConfig,
        network: Arc<dyn PodNetwork>,
        monitor: PathBuf,
    ) -> Result<Self> {
        let store = PodStore::open(&config.root.join("sandboxes"))?;
        let ns_dir = config.state_dir.join("pods");
        std::fs::create_dir_all(&ns_dir)
            .map_err(Error::io(format!("creating {}", ns_dir.display())))?;
        Ok(PodService {
            handlers: RwLock::new(Arc::new(config.runtimes.clone())),
            config,
            monitor,
            store,
            network,
            ns_dir,
            hierarchies: cgroup::hierarchies(),
            cgroup_handover: tokio::sync::Mutex::new(()),
            metrics: RuntimeMetrics::default(),
        })
    }

    /// Where pod and container operations are measured (the containers of
    /// these pods report to the same place).
    pub fn with_metrics(mut self, metrics: RuntimeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Pods by (state, handler), for the metrics.
    pub fn counts(&self) -> std::collections::BTreeMap<(&'static str, String), i64> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.store.list() {
            let state = match r.state {
                PodState::Creating => "creating",
                PodState::Ready => "ready",
                PodState::NotReady => "notready",
            };
            let handler = if r.runtime_handler.is_empty() {
                self.config.default_runtime.clone()
            } else {
                r.runtime_handler
            };
            *out.entry((state, handler)).or_insert(0) += 1;
        }
        out
    }

    /// The runtime handlers in force.
    pub fn handlers(&self) -> Arc<BTreeMap<String, RuntimeHandler>> {
        self.handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_handlers(&self, handlers: BTreeMap<String, RuntimeHandler>) {
        *self.handlers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(handlers);
    }

    /// Brings records in line with the host after a start: half-made pods
    /// are rolled back, pods whose namespaces vanished are not ready.
    pub async fn recover(&self) {
        for rec in self.store.list() {
            match rec.state {
                PodState::Creating => {
                    warn!(pod = %rec.id, "rolling back a sandbox whose creation was interrupted");
                    self.teardown(&rec).await;
                    if let Err(e) = self.remove_cgroup(&rec).await {
                        warn!(pod = %rec.id, error = %e, "removing the cgroup of an interrupted sandbox");
                    }
                    if let Err(e) = self.store.remove(&rec.id) {
                        warn!(pod = %rec.id, error = %e, "removing an interrupted sandbox");
                    }
                }
                PodState::Ready => {
                    let gone = [&rec.netns, &rec.ipc_ns, &rec.uts_ns]
                        .into_iter()
                        .flatten()
                        .any(|p| !netns::is_pinned(p));
                    if gone {
                        warn!(pod = %rec.id, "namespaces of a ready sandbox are gone; marking it not ready");
                        let _ = self.store.update(&rec.id, |r| r.state = PodState::NotReady);
                    } else if let Some(d) = rec.cgroup_created.iter().find(|d| !d.is_dir()) {
                        warn!(pod = %rec.id, cgroup = %d.display(), "the cgroup of a ready sandbox is gone; marking it not ready");
                        let _ = self.store.update(&rec.id, |r| r.state = PodState::NotReady);
                    }
                }
                PodState::NotReady => {}
            }
        }
        info!(pods = self.store.list().len(), "sandboxes recovered");
    }

    /// Has the network free what belongs to pods gantry no longer has
    /// attached (CNI GC). Run at start, after [`PodService::recover`] and
    /// before any RunPodSandbox can attach a pod.
    pub async fn gc_network(&self) {
        let Some(current) = self.network.current_name() else {
            return;
        };
        let live: Vec<String> = self
            .store
            .list()
            .into_iter()
            .filter(|r| r.network.as_deref() == Some(current.as_str()))
            .map(|r| r.id)
            .collect();
        if let Err(e) = self.network.gc(&live).await {
            warn!(network = %current, error = %e, "CNI GC failed");
        }
    }

    fn pinned(rec: &PodRecord) -> PinnedNamespaces {
        PinnedNamespaces {
            net: rec.netns.clone(),
            ipc: rec.ipc_ns.clone(),
            uts: rec.uts_ns.clone(),
        }
    }

    /// Undoes every host effect a record says may exist. Safe to repeat.
    async fn teardown(&self, rec: &PodRecord) -> bool {
        let mut clean = true;
        if let Some(network) = &rec.network {
            if let Err(e) = self
                .network
                .detach(network, &rec.id, rec.netns.as_deref())
                .await
            {
                warn!(pod = %rec.id, error = %e, "detaching the pod network");
                clean = false;
            }
        }
        // A crash between starting the init and recording its PID leaves
        // only the pin path in the record: then the init is found by name.
        let init = if rec.init_pid > 0 && pod_init_alive(rec.init_pid, &rec.id) {
            Some(rec.init_pid)
        } else if rec.pid_ns.is_some() {
            find_pod_init(&rec.id)
        } else {
            None
        };
        if let Some(pid) = init {
            // SAFETY: the PID was checked to be this pod's init; killing a
            // PID namespace's init ends every process in it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let pinned = Self::pinned(rec);
        let pid_pin = rec.pid_ns.clone();
        let _ = tokio::task::spawn_blocking(move || {
            netns::remove(&pinned);
            if let Some(p) = pid_pin {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_file(&p);
            }
        })
        .await;
        let _ = std::fs::remove_dir(self.ns_dir.join(&rec.id));
        clean
    }

    /// Removes the cgroup directories gantry made for the pod.
    ///
    /// Pods given the same cgroup_parent share one cgroup, made by the
    /// first of them: while another pod is in it, its directories are
    /// handed to that pod, and whoever goes last removes them. Decisions
    /// are taken one at a time, on fresh records, and a pod that has
    /// handed over (or removed) its cgroup drops out as an heir, so two
    /// pods going at once cannot hand the directories to each other.
    async fn remove_cgroup(&self, rec: &PodRecord) -> Result<()> {
        let _one_at_a_time = self.cgroup_handover.lock().await;
        let rec = self.store.get(&rec.id).unwrap_or_else(|| rec.clone());
        if rec.cgroup_created.is_empty() {
            return Ok(());
        }
        let dirs = rec.cgroup_created.clone();
        let heir = (!rec.cgroup.is_empty())
            .then(|| {
                self.store
                    .list()
                    .into_iter()
                    .find(|p| p.id != rec.id && p.cgroup == rec.cgroup)
            })
            .flatten();
        match heir {
            Some(heir) => {
                self.store.update(&heir.id, |r| {
                    for d in dirs {
                        if !r.cgroup_created.contains(&d) {
                            r.cgroup_created.push(d);
                        }
                    }
                })?;
            }
            None => {
                tokio::task::spawn_blocking(move || cgroup::remove(&dirs))
                    .await
                    .map_err(|e| Error::Internal(format!("cgroup task: {e}")))?
                    .map_err(|e| Error::Internal(format!("removing the pod cgroup: {e}")))?;
            }
        }
        if self.store.get(&rec.id).is_some() {
            self.store.update(&rec.id, |r| {
                r.cgroup_created.clear();
                r.cgroup.clear();
            })?;
        }
        Ok(())
    }

    /// Makes the pod's cgroup (cgroupfs driver only: under systemd the
    /// runtime has systemd make the slice).
    async fn create_cgroup(&self, id: &str, parent: &str) -> Result<String> {
        // Not while another pod's cgroup is being removed or handed over:
        // what exists, and who is there to inherit it, must not change
        // half-way.
        let _one_at_a_time = self.cgroup_handover.lock().await;
        let driver = self.config.cgroup_driver;
        let path = cgroup::pod_cgroup(driver, parent, id);
        if driver != CgroupDriver::Cgroupfs {
            self.store.update(id, |r| r.cgroup = path.clone())?;
            return Ok(path);
        }
        // One record write, before any directory is made.
        cgroup::create(&self.hierarchies, &path, |dirs| {
            self.store
                .update(id, |r| {
                    r.cgroup = path.clone();
                    r.cgroup_created.extend_from_slice(dirs);
                })
                .map(drop)
        })?;
        Ok(path)
    }

    pub async fn run(&self, config: cri::PodSandboxConfig, handler: String) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("pod sandbox metadata is required".into()))?;
        for (what, v) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if v.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "pod sandbox metadata.{what} is required"
                )));
            }
        }
        let handlers = self.handlers();
        if !handler.is_empty() && !handlers.contains_key(&handler) {
            return Err(Error::InvalidArgument(format!(
                "runtime handler {handler:?} is not configured (known: {})",
                handlers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let handler_name = if handler.is_empty() {
            &self.config.default_runtime
        } else {
            &handler
        };
        // A handler may be configured for a runtime this host lacks; the
        // pod is refused now rather than failing at its first container.
        if let Some(h) = handlers.get(handler_name) {
            if h.resolve().is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "runtime handler {handler_name:?}: its binary {} is not installed",
                    h.path.display()
                )));
            }
        }
        let opts = namespace_options(&config);
        let host_net = mode(opts, |o| o.network) == cri::NamespaceMode::Node;
        let host_ipc = mode(opts, |o| o.ipc) == cri::NamespaceMode::Node;
        let sysctls = config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone())
            .unwrap_or_default();
        validate_sysctls(&sysctls, host_net, host_ipc)?;
        let extras = NetworkExtras::from_annotations(&config.annotations)?;
        crate::crilog::effective_cap(self.config.log_max_bytes, &config.annotations)
            .map_err(Error::InvalidArgument)?;
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        cgroup::validate_parent(self.config.cgroup_driver, &cgroup_parent)?;
        let resolv = resolv_conf(config.dns_config.as_ref())?;
        if !config.hostname.is_empty()
            && (config.hostname.len() > 64 || config.hostname.contains(['\n', '\0', '/']))
        {
            return Err(Error::InvalidArgument(format!(
                "hostname {:?} is not valid",
                config.hostname
            )));
        }

        let id = new_id()?;
        let span = info_span!("pod", pod = %id, name = %meta.name, namespace = %meta.namespace);
        async {
            let _guard = self.store.lock(&id).await;
            let rec = PodRecord {
                version: RECORD_VERSION,
                id: id.clone(),
                state: PodState::Creating,
                created_at: now_nanos(),
                config: config.clone(),
                runtime_handler: handler.clone(),
                netns: None,
                ipc_ns: None,
                uts_ns: None,
                pid_ns: None,
                init_pid: 0,
                network: None,
                ips: Vec::new(),
                cgroup: String::new(),
                cgroup_created: Vec::new(),
            };
            self.store.insert(rec)?;
            match self
                .create(
                    &id,
                    &config,
                    Checked {
                        host_net,
                        host_ipc,
                        resolv,
                        sysctls,
                        extras,
                    },
                )
                .await
            {
                Ok(()) => {
                    info!("pod sandbox ready");
                    Ok(id.clone())
                }
                Err(e) => {
                    warn!(error = %e, "pod sandbox failed; rolling back");
                    if let Some(rec) = self.store.get(&id) {
                        self.teardown(&rec).await;
                        if let Err(e) = self.remove_cgroup(&rec).await {
                            warn!(error = %e, "removing the pod cgroup");
                        }
                    }
                    let _ = self.store.remove(&id);
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn create(
        &self,
        id: &str,
        config: &cri::PodSandboxConfig,
        checked: Checked,
    ) -> Result<()> {
        let Checked {
            host_net,
            host_ipc,
            resolv,
            sysctls,
            extras,
        } = checked;
        let pod_dir = self.store.pod_dir(id);
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or("");
        let started = std::time::Instant::now();
        let pod_cgroup = self.create_cgroup(id, parent).await?;
        self.metrics.observe_phase(phase::CGROUP, started);
        // Files the pod's containers will mount.
        let resolv = match resolv {
            Some(r) => r,
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(pod_dir.join("resolv.conf"), resolv)
            .map_err(Error::io("writing resolv.conf"))?;
        let hostname = if config.hostname.is_empty() {
            rustix_hostname()
        } else {
            config.hostname.clone()
        };
        std::fs::write(pod_dir.join("hostname"), format!("{hostname}\n"))
            .map_err(Error::io("writing hostname"))?;
        std::fs::write(
            pod_dir.join("hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        )
        .map_err(Error::io("writing hosts"))?;

        let started = std::time::Instant::now();
        let which = Private {
            net: !host_net,
            ipc: !host_ipc,
            uts: !host_net,
        };
        if which.net || which.ipc || which.uts {
            let ns_dir = self.ns_dir.join(id);
            std::fs::create_dir_all(&ns_dir)
                .map_err(Error::io(format!("creating {}", ns_dir.display())))?;
            // Record where the pins will be before making them, so a crash
            // in between still finds them.
            self.store.update(id, |r| {
                r.netns = which.net.then(|| ns_dir.join("net"));
                r.ipc_ns = which.ipc.then(|| ns_dir.join("ipc"));
                r.uts_ns = which.uts.then(|| ns_dir.join("uts"));
            })?;
            // An empty hostname keeps the one the new UTS namespace inherits.
            let host = config.hostname.clone();
            let dir = ns_dir.clone();
            tokio::task::spawn_blocking(move || netns::create(&dir, which, &host))
                .await
                .map_err(|e| Error::Internal(format!("namespace task: {e}")))?
                .map_err(|e| Error::Internal(format!("creating pod namespaces: {e}")))?;
        }
        if mode(namespace_options(config), |o| o.pid) == cri::NamespaceMode::Pod {
            let pid = self.start_pid_init(id).await?;
            if self.config.cgroup_driver == CgroupDriver::Cgroupfs {
                cgroup::enter(&self.hierarchies, &pod_cgroup, pid)?;
            }
        }
        self.metrics.observe_phase(phase::NAMESPACES, started);
        let rec = self
            .store
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))?;

        let (net_sysctls, ipc_sysctls): (Vec<_>, Vec<_>) = sysctls
            .iter()
            .map(|(k, v)| (k.replace('/', "."), v.clone()))
            .partition(|(k, _)| k.starts_with("net."));
        if let (Some(ns), false) = (&rec.netns, net_sysctls.is_empty()) {
            netns::run_in_netns(ns, move || write_sysctls("network", &net_sysctls))
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(Error::InvalidArgument)?;
        }
        if let (Some(ns), false) = (&rec.ipc_ns, ipc_sysctls.is_empty()) {
            netns::run_in_ns(ns, netns::NsKind::Ipc, move || {
                write_sysctls("IPC", &ipc_sysctls)
            })
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::InvalidArgument)?;
        }

        if let Some(ns) = &rec.netns {
            let meta = config.metadata.clone().unwrap_or_default();
            let req = PodNetworkRequest {
                id: id.to_string(),
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                netns: ns.clone(),
                port_mappings: config
                    .port_mappings
                    .iter()
                    .filter(|p| p.host_port > 0)
                    .map(|p| {
                        let proto = match cri::Protocol::try_from(p.protocol) {
                            Ok(cri::Protocol::Udp) => "udp",
                            Ok(cri::Protocol::Sctp) => "sctp",
                            _ => "tcp",
                        };
                        (
                            p.container_port,
                            p.host_port,
                            proto.to_string(),
                            p.host_ip.clone(),
                        )
                    })
                    .collect(),
                dns: config
                    .dns_config
                    .as_ref()
                    .map(|d| (d.servers.clone(), d.searches.clone(), d.options.clone())),
                extras,
            };
            // The network name is recorded before ADD: a crash during ADD
            // must still lead to a DEL.
            if let Some(name) = self.network.current_name() {
                self.store.update(id, |r| r.network = Some(name))?;
            }
            let started = std::time::Instant::now();
            let attached = self.network.attach(&req).await?;
            self.metrics.observe_phase(phase::CNI_ADD, started);
            self.store.update(id, |r| {
                r.network = Some(attached.network.clone());
                r.ips = attached
                    .ips
                    .iter()
                    .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
                    .collect();
            })?;
        }
        self.store.update(id, |r| r.state = PodState::Ready)?;
        Ok(())
    }

    /// Starts the init of the pod's shared PID namespace and pins it.
    async fn start_pid_init(&self, id: &str) -> Result<i32> {
        let ns_dir = self.ns_dir.join(id);
        std::fs::create_dir_all(&ns_dir)
            .map_err(Error::io(format!("creating {}", ns_dir.display())))?;
        let pin = ns_dir.join("pid");
        self.store.update(id, |r| r.pid_ns = Some(pin.clone()))?;
        let out = tokio::process::Command::new(&self.monitor)
            .arg("--pod-init")
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .await
            .map_err(Error::io(format!("starting {}", self.monitor.display())))?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let pid: i32 = line
            .strip_prefix("ok ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                Error::Internal(format!("starting the pod's PID namespace init: {line}"))
            })?;
        self.store.update(id, |r| r.init_pid = pid)?;
        std::fs::File::create(&pin).map_err(Error::io(format!("creating {}", pin.display())))?;
        rustix::mount::mount_bind(format!("/proc/{pid}/ns/pid").as_str(), &pin)
            .map_err(|e| Error::Internal(format!("pinning the pod's PID namespace: {e}")))?;
        Ok(pid)
    }

    fn resolve(&self, id: &str) -> Result<Option<String>> {
        self.store.resolve(id)
    }

    /// Stops the pod: network torn down, namespaces released. Unknown pods
    /// and repeated calls succeed; the answer says whether this call is the
    /// one that took the pod out of Ready.
    /// UpdatePodSandboxResources (in-place pod resize): applies the pod's
    /// new total resources (overhead included) to its cgroup. The pod must
    /// be ready and own a cgroup; see [`crate::cgroup::apply_pod_resources`]
    /// for what is refused.
    pub fn update_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let pod = self.store.find(id)?;
        if pod.state != crate::pod::PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if pod.cgroup.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} was created without a cgroup of its own",
                pod.id
            )));
        }
        let rel = crate::cgroup::pod_fs_path(self.config.cgroup_driver, &pod.cgroup);
        crate::cgroup::apply_pod_resources(&crate::cgroup::hierarchies(), &rel, resources)?;
        info!(pod = %pod.id, "pod resources updated");
        Ok(())
    }

    pub async fn stop(&self, id: &str) -> Result<bool> {
        let Some(id) = self.resolve(id)? else {
            return Ok(false);
        };
        let span = info_span!("pod", pod = %id);
        async {
            let _guard = self.store.lock(&id).await;
            let Some(rec) = self.store.get(&id) else {
                return Ok(false);
            };
            if !self.teardown(&rec).await {
                return Err(Error::Network(format!(
                    "tearing down the network of pod {id} failed; retry StopPodSandbox"
                )));
            }
            self.store.update(&id, |r| {
                r.state = PodState::NotReady;
                r.network = None;
                r.netns = None;
                r.ipc_ns = None;
                r.uts_ns = None;
                r.pid_ns = None;
                r.init_pid = 0;
            })?;
            info!("pod sandbox stopped");
            Ok(rec.state == PodState::Ready)
        }
        .instrument(span)
        .await
    }

    /// Removes the pod and all its state, stopping it first if needed. The
    /// answers say whether this call stopped it and whether it removed it.
    pub async fn remove(&self, id: &str) -> Result<(bool, bool)> {
        let Some(id) = self.resolve(id)? else {
            return Ok((false, false));
        };
        let stopped = self.stop(&id).await?;
        let _guard = self.store.lock(&id).await;
        let Some(rec) = self.store.get(&id) else {
            return Ok((stopped, false));
        };
        self.remove_cgroup(&rec).await?;
        self.store.remove(&id)?;
        info!(pod = %id, "pod sandbox removed");
        Ok((stopped, true))
    }

    pub fn status(&self, id: &str, verbose: bool) -> Result<cri::PodSandboxStatusResponse> {
        let rec = self.store.find(id)?;
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "id": rec.id,
                "state": format!("{:?}", rec.state),
                "netns": rec.netns,
                "ipcNamespace": rec.ipc_ns,
                "utsNamespace": rec.uts_ns,
                "pidNamespace": rec.pid_ns,
                "initPid": rec.init_pid,
                "network": rec.network,
                "cgroup": rec.cgroup,
                "runtimeHandler": rec.runtime_handler,
                "podDir": self.store.pod_dir(&rec.id),
                "config": rec.config,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        let opts = namespace_options(&rec.config).cloned().unwrap_or_default();
        let ip = rec.ips.first().cloned().unwrap_or_default();
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                state: state_of(&rec) as i32,
                created_at: rec.created_at,
                network: Some(cri::PodSandboxNetworkStatus {
                    ip,
                    additional_ips: rec
                        .ips
                        .iter()
                        .skip(1)
                        .map(|ip| cri::PodIp { ip: ip.clone() })
                        .collect(),
                }),
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(opts),
                    }),
                }),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
                runtime_handler: rec.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    pub fn list(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        self.store
            .list()
            .into_iter()
            .filter(|r| r.state != PodState::Creating)
            .filter(|r| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && f.state
                            .as_ref()
                            .is_none_or(|s| s.state == state_of(r) as i32)
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config.labels.get(k) == Some(v))
                }
            })
            .map(|r| cri::PodSandbox {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                state: state_of(&r) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect()
    }
}

fn state_of(r: &PodRecord) -> cri::PodSandboxState {
    match r.state {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        _ => cri::PodSandboxState::SandboxNotready,
    }
}

/// Whether `pid` is still this pod's PID-namespace init (PIDs wrap).
fn pod_init_alive(pid: i32, id: &str) -> bool {
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let s = String::from_utf8_lossy(&c);
                s.contains("--pod-init") && s.contains(id)
            })
            .unwrap_or(false)
}

fn find_pod_init(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .find(|pid| pod_init_alive(*pid, id))
}

fn rustix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_pass() {
        let ok: HashMap<String, String> = [
            ("net.ipv4.ip_forward", "1"),
            ("kernel.shm_rmid_forced", "1"),
            ("net/core/somaxconn", "1024"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        validate_sysctls(&ok, false, false).unwrap();
        for (k, v, host_net, host_ipc) in [
            ("kernel.panic", "1", false, false),
            ("vm.swappiness", "1", false, false),
            ("net.ipv4.ip_forward", "1", true, false),
            ("kernel.msgmax", "1", false, true),
            ("net..x", "1", false, false),
            ("net.ipv4.ip_forward", "1\n2", false, false),
            ("../etc/passwd", "x", false, false),
        ] {
            let m: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(
                validate_sysctls(&m, host_net, host_ipc).is_err(),
                "{k}={v:?} accepted"
            );
        }
    }

    #[test]
    fn resolv_conf_is_built_and_checked() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap().unwrap(),
            "nameserver 10.96.0.10\nnameserver fd00::a\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        let bad = cri::DnsConfig {
            servers: vec!["not-an-ip".into()],
            ..Default::default()
        };
        assert!(resolv_conf(Some(&bad)).is_err());
        assert!(resolv_conf(None).unwrap().is_none());
    }
}
