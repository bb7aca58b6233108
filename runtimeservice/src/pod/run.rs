//! RunPodSandbox: the checks of the pod's config, then the record, the
//! pinned namespaces, the pod cgroup, the network and the pid-namespace init,
//! each rolled back on failure.

use super::*;

pub(super) fn mode(
    opts: Option<&cri::NamespaceOption>,
    pick: fn(&cri::NamespaceOption) -> i32,
) -> cri::NamespaceMode {
    opts.map(pick)
        .and_then(|m| cri::NamespaceMode::try_from(m).ok())
        .unwrap_or(cri::NamespaceMode::Pod)
}

pub(super) fn namespace_options(config: &cri::PodSandboxConfig) -> Option<&cri::NamespaceOption> {
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
pub(super) fn validate_sysctls(
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

pub(super) fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Result<Option<String>> {
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
pub(super) struct Checked {
    userns: Option<crate::userns::Mappings>,
    host_net: bool,
    host_ipc: bool,
    resolv: Option<String>,
    sysctls: HashMap<String, String>,
    extras: NetworkExtras,
}

pub(super) fn rustix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl PodService {
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
        let userns = crate::userns::from_namespace_options(opts)?;
        if userns.is_some() && !self.user_namespaces(handler_name) {
            return Err(Error::FailedPrecondition(format!(
                "runtime handler {handler_name:?} cannot run pods in a user namespace of their \
                 own on this host (its Status reports user_namespaces: false; see gantry check)"
            )));
        }
        let host_net = mode(opts, |o| o.network) == cri::NamespaceMode::Node;
        let host_ipc = mode(opts, |o| o.ipc) == cri::NamespaceMode::Node;
        let sysctls = config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone())
            .unwrap_or_default();
        validate_sysctls(&sysctls, host_net, host_ipc)?;
        let extras = NetworkExtras::from_annotations(&config.annotations)?;
        crate::container::log_cap::effective_cap(self.config.log_max_bytes, &config.annotations)
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
                user_ns: None,
                userns_maps: userns,
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
                        userns,
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

    pub(super) async fn create(
        &self,
        id: &str,
        config: &cri::PodSandboxConfig,
        checked: Checked,
    ) -> Result<()> {
        let Checked {
            userns,
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
                r.user_ns = userns.map(|_| ns_dir.join("user"));
            })?;
            // An empty hostname keeps the one the new UTS namespace inherits.
            let host = config.hostname.clone();
            let dir = ns_dir.clone();
            match userns {
                None => {
                    let h = self.host.clone();
                    tokio::task::spawn_blocking(move || h.create_namespaces(&dir, which, &host))
                        .await
                        .map_err(Error::task("creating pod namespaces"))?
                        .map(|_| ())
                        .map_err(Error::host("creating pod namespaces"))?
                }
                Some(maps) => tokio::task::spawn_blocking(move || {
                    crate::userns::pin::create_for_pod(&dir, &maps, which, &host)
                })
                .await
                .map_err(Error::task("creating pod namespaces"))?
                .map(|_| ())?,
            }
        }
        if mode(namespace_options(config), |o| o.pid) == cri::NamespaceMode::Pod {
            let pid = self.start_pid_init(id).await?;
            if self.config.cgroup_driver == CgroupDriver::Cgroupfs {
                self.host.enter_cgroup(&pod_cgroup, pid)?;
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
            self.host
                .write_sysctls(ns, NsKind::Net, net_sysctls)
                .map_err(Error::host("entering the pod's network namespace"))?
                .map_err(Error::InvalidArgument)?;
        }
        if let (Some(ns), false) = (&rec.ipc_ns, ipc_sysctls.is_empty()) {
            self.host
                .write_sysctls(ns, NsKind::Ipc, ipc_sysctls)
                .map_err(Error::host("entering the pod's IPC namespace"))?
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
    pub(super) async fn start_pid_init(&self, id: &str) -> Result<i32> {
        let ns_dir = self.ns_dir.join(id);
        std::fs::create_dir_all(&ns_dir)
            .map_err(Error::io(format!("creating {}", ns_dir.display())))?;
        let pin = ns_dir.join("pid");
        self.store.update(id, |r| r.pid_ns = Some(pin.clone()))?;
        let user_ns = self.store.get(id).and_then(|r| r.user_ns);
        let line = self
            .host
            .start_pod_init(&self.monitor, id, user_ns.as_deref())
            .await
            .map_err(Error::io(format!("starting {}", self.monitor.display())))?;
        let pid: i32 = line
            .strip_prefix("ok ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::Host {
                context: "starting the pod's PID namespace init".into(),
                source: format!("the monitor said {line:?}").into(),
            })?;
        self.store.update(id, |r| r.init_pid = pid)?;
        self.host
            .pin_pid_namespace(pid, &pin)
            .map_err(Error::io("pinning the pod's PID namespace"))?;
        Ok(pid)
    }
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
