//! Container and pod stats and the CRI metrics, read from cgroups, the
//! writable layer and each pod's network namespace.

use super::*;

/// How long a measured writable-layer size is reported before it is
/// measured again (cAdvisor, too, walks layers about once a minute).
pub(super) const FS_USAGE_TTL_NS: i64 = 60_000_000_000;

/// Whether a container's writable layer is walked for the answer or
/// reported as last walked (at most [`FS_USAGE_TTL_NS`] ago, with the time
/// it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layer {
    Walk,
    Cached,
}

/// The interfaces of each pod with a network namespace (in `pods`' order,
/// skipping those without), read from inside each namespace by one thread.
pub(super) fn pod_networks(
    pods: &[crate::pod::PodRecord],
) -> Vec<Option<Vec<crate::cri_metrics::NetDev>>> {
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

impl ContainerService {
    /// The directory holding every container's writable layer (and image
    /// volumes, and the logs of pods without a log directory), with the
    /// bytes and inodes it uses: ImageFsInfo's container filesystem.
    /// Mounted rootfs views are on other devices and not counted twice.
    pub fn writable_usage(&self) -> (PathBuf, u64, u64) {
        let (bytes, inodes) = crate::stats::dir_usage(self.records.dir());
        (self.records.dir().to_path_buf(), bytes, inodes)
    }

    /// Changes whenever a container or pod event is sent (created,
    /// started, stopped, removed): [`Self::writable_usage`] measured at
    /// another generation may be out of date.
    pub fn fs_generation(&self) -> u64 {
        self.fs_generation
            .load(std::sync::atomic::Ordering::Acquire)
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
        let pods = self.ready_pods();
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
                m::device_of(self.records.dir(), &info)
            })
            .clone();
        let capacity = m::fs_capacity(self.records.dir());
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
                    let (measured, used, _) = self.writable_usage_cached(&c.id, now);
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

    /// The writable layer's size (bytes, inodes), and when it was measured.
    pub(super) fn writable_usage_cached(&self, id: &str, now: i64) -> (i64, u64, u64) {
        if let Some(&(at, bytes, inodes)) = lock(&self.fs_usage).get(id) {
            if now.saturating_sub(at) < FS_USAGE_TTL_NS {
                return (at, bytes, inodes);
            }
        }
        let (bytes, inodes) = crate::stats::dir_usage(&self.cdir(id).join("upper"));
        lock(&self.fs_usage).insert(id.to_string(), (now, bytes, inodes));
        (now, bytes, inodes)
    }

    /// A container's usage as read now: its cgroup if it runs, and its
    /// writable layer (walked now, or as last walked: see [`Layer`]).
    pub(super) fn stats_of(&self, r: &ContainerRecord, layer: Layer) -> cri::ContainerStats {
        let now = now_nanos();
        let sample = if r.state == ContainerState::Running {
            crate::stats::read_cgroup(Path::new("/sys/fs/cgroup"), &self.cgroup_path(r))
        } else {
            None
        };
        let sample = sample.unwrap_or_default();
        let (measured, bytes, inodes) = match layer {
            Layer::Walk => {
                let (bytes, inodes) = crate::stats::dir_usage(&self.cdir(&r.id).join("upper"));
                (now, bytes, inodes)
            }
            Layer::Cached => self.writable_usage_cached(&r.id, now),
        };
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
                timestamp: measured,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.records.dir().display().to_string(),
                }),
                used_bytes: u(bytes),
                inodes_used: u(inodes),
            }),
            swap: None,
            // Pressure stall information (CRI 1.34) is not read yet.
            io: None,
        }
    }

    /// `ContainerStats`: one container, read afresh, its layer walked now.
    pub fn stats(&self, id: &str) -> Result<cri::ContainerStats> {
        Ok(self.stats_of(&self.existing(id)?, Layer::Walk))
    }

    /// `ListContainerStats`: from the latest background sample where the
    /// container has not changed state since, else read now (see
    /// [`sampler`](super::sampler)). Blocking: it may read kernel files.
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
        let sample = self.sampler.fresh();
        let ids: Vec<String> = self.list(f).into_iter().map(|c| c.id).collect();
        ids.iter()
            .filter_map(|id| self.refresh(id))
            .map(|r| {
                sample
                    .as_ref()
                    .and_then(|s| s.container(&r))
                    .unwrap_or_else(|| self.stats_of(&r, Layer::Cached))
            })
            .collect()
    }

    /// A pod's usage: read from the pod's cgroup, which holds its
    /// containers and its init (or the sum of its containers' for pods from
    /// before pods had one), plus its network interfaces read inside its
    /// network namespace. Read afresh, layers walked now.
    pub fn pod_stats(&self, pod_id: &str) -> Result<cri::PodSandboxStats> {
        let pod = self.pods.store.find(pod_id)?;
        let network = pod_networks(std::slice::from_ref(&pod))
            .into_iter()
            .next()
            .flatten();
        let containers: Vec<ContainerRecord> = self
            .in_pod(pod_id)
            .iter()
            .filter_map(|id| self.refresh(id))
            .collect();
        Ok(self.pod_stats_with(&pod, network, &containers, Layer::Walk))
    }

    /// The records of the pods that are ready, whose usage is measured.
    pub(super) fn ready_pods(&self) -> Vec<crate::pod::PodRecord> {
        let mut pods = self.pods.store.list();
        pods.retain(|p| p.state == PodState::Ready);
        pods
    }

    /// Every container (its exit folded in), grouped by pod.
    pub(super) fn containers_by_pod(&self) -> HashMap<String, Vec<ContainerRecord>> {
        let ids: Vec<String> = self.records().keys().cloned().collect();
        let mut by_pod: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
        for r in ids.iter().filter_map(|id| self.refresh(id)) {
            by_pod.entry(r.pod_id.clone()).or_default().push(r);
        }
        by_pod
    }

    /// [`Self::pod_stats`] of a pod whose interfaces were read already and
    /// whose containers are `containers`.
    pub(super) fn pod_stats_with(
        &self,
        pod: &crate::pod::PodRecord,
        network: Option<Vec<crate::cri_metrics::NetDev>>,
        records: &[ContainerRecord],
        layer: Layer,
    ) -> cri::PodSandboxStats {
        let pod_id = pod.id.clone();
        let containers: Vec<cri::ContainerStats> =
            records.iter().map(|r| self.stats_of(r, layer)).collect();
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
        let u = |v: u64| Some(cri::UInt64Value { value: v });
        let interfaces: Vec<cri::NetworkInterfaceUsage> = network
            .unwrap_or_default()
            .into_iter()
            .map(|d| cri::NetworkInterfaceUsage {
                rx_bytes: u(d.rx_bytes),
                rx_errors: u(d.rx_errors),
                tx_bytes: u(d.tx_bytes),
                tx_errors: u(d.tx_errors),
                name: d.name,
            })
            .collect();
        let processes: u64 = records
            .iter()
            .filter(|r| r.state == ContainerState::Running)
            .map(|r| crate::stats::process_count(Path::new("/sys/fs/cgroup"), &self.cgroup_path(r)))
            .sum();
        cri::PodSandboxStats {
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
        }
    }

    /// Drops the CPU sample kept for a pod's usage rate.
    pub fn forget_pod(&self, pod_id: &str) {
        self.cpu_rates.forget(&format!("pod:{pod_id}"));
    }

    /// CPU and memory of a pod as the sum of its containers'.
    pub(super) fn summed_usage(
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

    /// `ListPodSandboxStats`: each ready pod from the latest background
    /// sample where neither the pod nor its containers changed since, the
    /// others read now (see [`sampler`](super::sampler)). Blocking: it may
    /// read kernel files and enter network namespaces.
    pub fn list_pod_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let f = filter.map(|f| cri::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            state: None,
        });
        let sample = self.sampler.fresh();
        let pods: Vec<crate::pod::PodRecord> = self
            .pods
            .list(f)
            .into_iter()
            .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
            .filter_map(|p| self.pods.store.find(&p.id).ok())
            .collect();
        let mut by_pod = self.containers_by_pod();
        let mut out: Vec<Option<cri::PodSandboxStats>> = Vec::with_capacity(pods.len());
        let mut missed = Vec::new();
        for p in &pods {
            let records = by_pod.get(&p.id).map(Vec::as_slice).unwrap_or_default();
            let sampled = sample.as_ref().and_then(|s| s.pod(p, records));
            if sampled.is_none() {
                missed.push(p.clone());
            }
            out.push(sampled);
        }
        // The pods read now: every namespace entered from one thread, not
        // a thread per pod.
        let mut networks = pod_networks(&missed).into_iter();
        let mut fresh = missed.iter().map(|p| {
            let network = p.netns.as_ref().and_then(|_| networks.next().flatten());
            let records = by_pod.remove(&p.id).unwrap_or_default();
            self.pod_stats_with(p, network, &records, Layer::Cached)
        });
        out.into_iter()
            .filter_map(|s| s.or_else(|| fresh.next()))
            .collect()
    }
}
