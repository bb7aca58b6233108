//! CRI metrics: the cAdvisor-named series kubelet serves on
//! `/metrics/cadvisor` when it takes pod and container stats from the
//! runtime (`ListMetricDescriptors`, `ListPodSandboxMetrics`). This module
//! owns the metric families gantry emits, reading one cgroup (each file
//! once, v1 controllers or the v2 unified tree), counting the descriptors
//! and sockets of the processes in it, parsing a network namespace's
//! `/proc/net/dev`, and turning those readings into CRI `Metric`s. Which
//! pods and containers are read is [`crate::container`]'s business.
//!
//! Labels are those kubelet gives cAdvisor's series ([`BASE_LABELS`]), so
//! dashboards that select by `namespace`, `pod` and `container` keep
//! working; pod-level series have an empty `container`, as cAdvisor's pod
//! cgroup series do. The CRI carries values as unsigned integers, so the
//! `_seconds` families are whole seconds, rounded down.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use gantry_proto::v1 as cri;

/// Label keys of every series, in this order: the CRI container name (""
/// for the pod itself), the cgroup path (cAdvisor's `id`), the image, the
/// container's (or pod's) ID, the pod's namespace and name.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric family: what `ListMetricDescriptors` describes.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// Label keys after [`BASE_LABELS`].
    pub extra: &'static [&'static str],
    pub kind: cri::MetricType,
}

const fn counter(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        extra,
        kind: cri::MetricType::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        extra,
        kind: cri::MetricType::Gauge,
    }
}

const NONE: &[&str] = &[];
const IFACE: &[&str] = &["interface"];
const DEVICE: &[&str] = &["device"];

pub const CPU_USAGE: Family = counter(
    "container_cpu_usage_seconds_total",
    "Cumulative CPU time consumed, in whole seconds (cpu=\"total\").",
    &["cpu"],
);
pub const CPU_USER: Family = counter(
    "container_cpu_user_seconds_total",
    "Cumulative user CPU time consumed, in whole seconds.",
    NONE,
);
pub const CPU_SYSTEM: Family = counter(
    "container_cpu_system_seconds_total",
    "Cumulative system CPU time consumed, in whole seconds.",
    NONE,
);
pub const CFS_PERIODS: Family = counter(
    "container_cpu_cfs_periods_total",
    "Number of elapsed CFS enforcement periods.",
    NONE,
);
pub const CFS_THROTTLED_PERIODS: Family = counter(
    "container_cpu_cfs_throttled_periods_total",
    "Number of CFS periods in which the cgroup was throttled.",
    NONE,
);
pub const CFS_THROTTLED_SECONDS: Family = counter(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time the cgroup was throttled, in whole seconds.",
    NONE,
);
pub const MEMORY_USAGE: Family = gauge(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, page cache included.",
    NONE,
);
pub const MEMORY_MAX_USAGE: Family = gauge(
    "container_memory_max_usage_bytes",
    "Highest memory usage recorded, in bytes.",
    NONE,
);
pub const MEMORY_WORKING_SET: Family = gauge(
    "container_memory_working_set_bytes",
    "Current working set in bytes: usage less inactive page cache.",
    NONE,
);
pub const MEMORY_RSS: Family = gauge(
    "container_memory_rss",
    "Anonymous and swap cache memory in bytes.",
    NONE,
);
pub const MEMORY_CACHE: Family = gauge(
    "container_memory_cache",
    "Page cache memory in bytes.",
    NONE,
);
pub const MEMORY_MAPPED_FILE: Family = gauge(
    "container_memory_mapped_file",
    "Memory-mapped file bytes.",
    NONE,
);
pub const MEMORY_SWAP: Family = gauge("container_memory_swap", "Swap used, in bytes.", NONE);
pub const MEMORY_FAILCNT: Family = counter(
    "container_memory_failcnt",
    "Number of times memory usage hit the limit.",
    NONE,
);
pub const MEMORY_FAILURES: Family = counter(
    "container_memory_failures_total",
    "Cumulative count of page faults (failure_type pgfault or pgmajfault) in the cgroup itself (scope container, cgroup v1 only) or with its descendants (scope hierarchy).",
    &["failure_type", "scope"],
);
pub const OOM_EVENTS: Family = counter(
    "container_oom_events_total",
    "Count of processes the OOM killer killed in the cgroup.",
    NONE,
);
pub const SPEC_MEMORY_LIMIT: Family = gauge(
    "container_spec_memory_limit_bytes",
    "Memory limit in bytes; 0 when there is none.",
    NONE,
);
pub const PROCESSES: Family = gauge("container_processes", "Number of processes running.", NONE);
pub const THREADS: Family = gauge(
    "container_threads",
    "Number of threads running (tasks, as the pids controller counts them).",
    NONE,
);
pub const THREADS_MAX: Family = gauge(
    "container_threads_max",
    "Most threads allowed (pids.max); 0 when unlimited.",
    NONE,
);
pub const FILE_DESCRIPTORS: Family = gauge(
    "container_file_descriptors",
    "Number of open file descriptors.",
    NONE,
);
pub const SOCKETS: Family = gauge("container_sockets", "Number of open sockets.", NONE);
pub const START_TIME: Family = gauge(
    "container_start_time_seconds",
    "Start time since the Unix epoch, in whole seconds.",
    NONE,
);
pub const LAST_SEEN: Family = gauge(
    "container_last_seen",
    "Last time the runtime read the series, in whole seconds since the Unix epoch.",
    NONE,
);
pub const FS_USAGE: Family = gauge(
    "container_fs_usage_bytes",
    "Bytes the container's writable layer takes on its filesystem (measured at most once a minute).",
    DEVICE,
);
pub const FS_LIMIT: Family = gauge(
    "container_fs_limit_bytes",
    "Size in bytes of the filesystem holding the writable layer.",
    DEVICE,
);
pub const FS_INODES_FREE: Family = gauge(
    "container_fs_inodes_free",
    "Free inodes on the filesystem holding the writable layer.",
    DEVICE,
);
pub const FS_INODES_TOTAL: Family = gauge(
    "container_fs_inodes_total",
    "Inodes of the filesystem holding the writable layer.",
    DEVICE,
);
pub const NET_RX_BYTES: Family = counter(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    IFACE,
);
pub const NET_RX_PACKETS: Family = counter(
    "container_network_receive_packets_total",
    "Cumulative count of packets received.",
    IFACE,
);
pub const NET_RX_ERRORS: Family = counter(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    IFACE,
);
pub const NET_RX_DROPPED: Family = counter(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving.",
    IFACE,
);
pub const NET_TX_BYTES: Family = counter(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    IFACE,
);
pub const NET_TX_PACKETS: Family = counter(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted.",
    IFACE,
);
pub const NET_TX_ERRORS: Family = counter(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    IFACE,
);
pub const NET_TX_DROPPED: Family = counter(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting.",
    IFACE,
);

/// Every family gantry emits, and no other.
pub const FAMILIES: &[&Family] = &[
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEMORY_USAGE,
    &MEMORY_MAX_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_CACHE,
    &MEMORY_MAPPED_FILE,
    &MEMORY_SWAP,
    &MEMORY_FAILCNT,
    &MEMORY_FAILURES,
    &OOM_EVENTS,
    &SPEC_MEMORY_LIMIT,
    &PROCESSES,
    &THREADS,
    &THREADS_MAX,
    &FILE_DESCRIPTORS,
    &SOCKETS,
    &START_TIME,
    &LAST_SEEN,
    &FS_USAGE,
    &FS_LIMIT,
    &FS_INODES_FREE,
    &FS_INODES_TOTAL,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_ERRORS,
    &NET_RX_DROPPED,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_ERRORS,
    &NET_TX_DROPPED,
];

/// The answer of `ListMetricDescriptors`.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| cri::MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(f.extra)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

/// The series of one pod or container, sharing its base labels and the
/// time they were read.
pub struct Series {
    base: Vec<String>,
    timestamp: i64,
    pub metrics: Vec<cri::Metric>,
}

/// The values of [`BASE_LABELS`] for one pod or container.
pub struct BaseLabels<'a> {
    pub container: &'a str,
    pub cgroup: &'a str,
    pub image: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
}

impl Series {
    pub fn new(labels: BaseLabels<'_>, timestamp: i64) -> Series {
        Series {
            base: [
                labels.container,
                labels.cgroup,
                labels.image,
                labels.name,
                labels.namespace,
                labels.pod,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            timestamp,
            metrics: Vec::new(),
        }
    }

    /// One sample of `family`; `extra` are the values of its own labels.
    pub fn push(&mut self, family: &Family, value: u64, extra: &[&str]) {
        debug_assert_eq!(extra.len(), family.extra.len(), "{}", family.name);
        let mut label_values = Vec::with_capacity(self.base.len() + extra.len());
        label_values.extend(self.base.iter().cloned());
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.metrics.push(cri::Metric {
            name: family.name.into(),
            timestamp: self.timestamp,
            metric_type: family.kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn push_some(&mut self, family: &Family, value: Option<u64>) {
        if let Some(v) = value {
            self.push(family, v, &[]);
        }
    }

    /// The series a cgroup reading gives (CPU, memory, OOM kills, tasks).
    pub fn cgroup(&mut self, u: &CgroupUsage) {
        if let Some(ns) = u.cpu_ns {
            self.push(&CPU_USAGE, ns / NANOS, &["total"]);
        }
        self.push_some(&CPU_USER, u.user_ns.map(|n| n / NANOS));
        self.push_some(&CPU_SYSTEM, u.system_ns.map(|n| n / NANOS));
        self.push_some(&CFS_PERIODS, u.periods);
        self.push_some(&CFS_THROTTLED_PERIODS, u.throttled_periods);
        self.push_some(&CFS_THROTTLED_SECONDS, u.throttled_ns.map(|n| n / NANOS));
        self.push_some(&MEMORY_USAGE, u.memory_usage);
        self.push_some(&MEMORY_MAX_USAGE, u.memory_max_usage);
        self.push_some(&MEMORY_WORKING_SET, u.working_set);
        self.push_some(&MEMORY_RSS, u.rss);
        self.push_some(&MEMORY_CACHE, u.cache);
        self.push_some(&MEMORY_MAPPED_FILE, u.mapped_file);
        self.push_some(&MEMORY_SWAP, u.swap);
        self.push_some(&MEMORY_FAILCNT, u.failcnt);
        for (kind, scope, v) in &u.faults {
            self.push(&MEMORY_FAILURES, *v, &[kind, scope]);
        }
        self.push_some(&OOM_EVENTS, u.oom_kills);
        self.push_some(&SPEC_MEMORY_LIMIT, u.memory_limit);
        self.push_some(&THREADS, u.threads);
        self.push_some(&THREADS_MAX, u.threads_max);
    }

    /// Processes, and their descriptors and sockets where they were counted.
    pub fn processes(&mut self, p: &ProcessCounts) {
        self.push(&PROCESSES, p.processes, &[]);
        self.push_some(&FILE_DESCRIPTORS, p.fds);
        self.push_some(&SOCKETS, p.sockets);
    }

    pub fn network(&mut self, ifaces: &[NetDev]) {
        for i in ifaces {
            let l = [i.name.as_str()];
            self.push(&NET_RX_BYTES, i.rx_bytes, &l);
            self.push(&NET_RX_PACKETS, i.rx_packets, &l);
            self.push(&NET_RX_ERRORS, i.rx_errors, &l);
            self.push(&NET_RX_DROPPED, i.rx_dropped, &l);
            self.push(&NET_TX_BYTES, i.tx_bytes, &l);
            self.push(&NET_TX_PACKETS, i.tx_packets, &l);
            self.push(&NET_TX_ERRORS, i.tx_errors, &l);
            self.push(&NET_TX_DROPPED, i.tx_dropped, &l);
        }
    }

    /// The writable layer's use of its filesystem; its size was measured
    /// at `measured_at`, which that sample carries.
    pub fn filesystem(&mut self, device: &str, used_bytes: u64, measured_at: i64, fs: &FsCapacity) {
        let d = [device];
        self.push(&FS_USAGE, used_bytes, &d);
        if let Some(m) = self.metrics.last_mut() {
            m.timestamp = measured_at;
        }
        self.push(&FS_LIMIT, fs.bytes, &d);
        self.push(&FS_INODES_FREE, fs.inodes_free, &d);
        self.push(&FS_INODES_TOTAL, fs.inodes, &d);
    }
}

const NANOS: u64 = 1_000_000_000;

/// Reads small kernel files into one reused buffer.
#[derive(Default)]
pub struct Reader {
    buf: String,
}

/// Kernel files read here are small, but `cgroup.procs` grows with the
/// processes a container forks: a cap keeps one hostile container from
/// making every poll read megabytes.
const MAX_FILE: u64 = 1 << 20;

impl Reader {
    pub fn read(&mut self, p: &Path) -> Option<&str> {
        self.buf.clear();
        File::open(p)
            .ok()?
            .take(MAX_FILE)
            .read_to_string(&mut self.buf)
            .ok()?;
        Some(&self.buf)
    }

    fn u64(&mut self, p: &Path) -> Option<u64> {
        self.read(p)?.trim().parse().ok()
    }

    /// A limit file: a number, or `max` (v2) for none, which reads as 0 like
    /// v1's near-2^63 "unlimited".
    fn limit(&mut self, p: &Path) -> Option<u64> {
        let t = self.read(p)?.trim();
        if t == "max" {
            return Some(0);
        }
        t.parse()
            .ok()
            .map(|v: u64| if v >= 1 << 62 { 0 } else { v })
    }
}

/// `key value` lines, as memory.stat, cpu.stat and memory.events are.
pub fn keyed(text: &str, keys: &[&str]) -> Vec<Option<u64>> {
    let mut out = vec![None; keys.len()];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|want| *want == k) {
            out[i] = v.trim().parse().ok();
        }
    }
    out
}

/// What one cgroup tells, each file read once; `None` where the file or
/// field is missing (a controller not mounted or not enabled).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_max_usage: Option<u64>,
    /// 0 when unlimited.
    pub memory_limit: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub failcnt: Option<u64>,
    /// (failure_type, scope, count).
    pub faults: Vec<(&'static str, &'static str, u64)>,
    pub oom_kills: Option<u64>,
    /// The processes directly in this cgroup (not its children).
    pub pids: Vec<i32>,
    pub threads: Option<u64>,
    /// 0 when unlimited.
    pub threads_max: Option<u64>,
}

/// Whether the hierarchy under `root` is the v2 unified one (rather than
/// v1 controllers, each mounted in a directory of its own).
pub fn unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Reads the cgroup at `rel` (relative to the hierarchy roots under
/// `root`); `None` when it exists in no hierarchy.
pub fn read_cgroup(r: &mut Reader, root: &Path, v2: bool, rel: &str) -> Option<CgroupUsage> {
    let rel = rel.trim_start_matches('/');
    if v2 {
        read_v2(r, &root.join(rel))
    } else {
        read_v1(r, root, rel)
    }
}

fn read_v2(r: &mut Reader, dir: &Path) -> Option<CgroupUsage> {
    let procs = r.read(&dir.join("cgroup.procs"))?;
    let mut u = CgroupUsage {
        pids: pids_of(procs),
        ..Default::default()
    };
    if let Some(t) = r.read(&dir.join("cpu.stat")) {
        let k = keyed(
            t,
            &[
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ],
        );
        let us = |v: Option<u64>| v.map(|v| v.saturating_mul(1000));
        u.cpu_ns = us(k[0]);
        u.user_ns = us(k[1]);
        u.system_ns = us(k[2]);
        u.periods = k[3];
        u.throttled_periods = k[4];
        u.throttled_ns = us(k[5]);
    }
    u.memory_usage = r.u64(&dir.join("memory.current"));
    if u.memory_usage.is_some() {
        u.memory_max_usage = r.u64(&dir.join("memory.peak"));
        u.memory_limit = r.limit(&dir.join("memory.max"));
        if let Some(t) = r.read(&dir.join("memory.stat")) {
            let k = keyed(
                t,
                &[
                    "anon",
                    "file",
                    "file_mapped",
                    "inactive_file",
                    "pgfault",
                    "pgmajfault",
                ],
            );
            u.rss = k[0];
            u.cache = k[1];
            u.mapped_file = k[2];
            u.working_set = u.memory_usage.map(|m| m.saturating_sub(k[3].unwrap_or(0)));
            // v2 counts faults with the descendants only.
            for (kind, v) in [("pgfault", k[4]), ("pgmajfault", k[5])] {
                if let Some(v) = v {
                    u.faults.push((kind, "hierarchy", v));
                }
            }
        }
        u.swap = r.u64(&dir.join("memory.swap.current"));
        if let Some(t) = r.read(&dir.join("memory.events")) {
            let k = keyed(t, &["max", "oom_kill"]);
            u.failcnt = k[0];
            u.oom_kills = k[1];
        }
    }
    u.threads = r.u64(&dir.join("pids.current"));
    u.threads_max = r.limit(&dir.join("pids.max"));
    Some(u)
}

fn read_v1(r: &mut Reader, root: &Path, rel: &str) -> Option<CgroupUsage> {
    let mut u = CgroupUsage::default();
    let mut found = false;
    let controller = |names: &[&str], probe: &str| {
        names
            .iter()
            .map(|n| root.join(n).join(rel))
            .find(|d| d.join(probe).exists())
    };
    if let Some(d) = controller(&["cpuacct", "cpu,cpuacct"], "cpuacct.usage") {
        found = true;
        u.cpu_ns = r.u64(&d.join("cpuacct.usage"));
        if let Some(t) = r.read(&d.join("cpuacct.stat")) {
            let k = keyed(t, &["user", "system"]);
            let hz = clock_ticks();
            let ns = |v: Option<u64>| v.map(|t| t.saturating_mul(NANOS / hz));
            u.user_ns = ns(k[0]);
            u.system_ns = ns(k[1]);
        }
    }
    if let Some(d) = controller(&["cpu", "cpu,cpuacct"], "cpu.stat") {
        found = true;
        if let Some(t) = r.read(&d.join("cpu.stat")) {
            let k = keyed(t, &["nr_periods", "nr_throttled", "throttled_time"]);
            u.periods = k[0];
            u.throttled_periods = k[1];
            u.throttled_ns = k[2];
        }
    }
    let mem = root.join("memory").join(rel);
    if let Some(usage) = r.u64(&mem.join("memory.usage_in_bytes")) {
        found = true;
        u.memory_usage = Some(usage);
        u.memory_max_usage = r.u64(&mem.join("memory.max_usage_in_bytes"));
        u.memory_limit = r.limit(&mem.join("memory.limit_in_bytes"));
        u.failcnt = r.u64(&mem.join("memory.failcnt"));
        if let Some(t) = r.read(&mem.join("memory.stat")) {
            let k = keyed(
                t,
                &[
                    "total_rss",
                    "total_cache",
                    "total_mapped_file",
                    "total_swap",
                    "total_inactive_file",
                    "pgfault",
                    "pgmajfault",
                    "total_pgfault",
                    "total_pgmajfault",
                ],
            );
            u.rss = k[0];
            u.cache = k[1];
            u.mapped_file = k[2];
            u.swap = k[3];
            u.working_set = Some(usage.saturating_sub(k[4].unwrap_or(0)));
            for (kind, scope, v) in [
                ("pgfault", "container", k[5]),
                ("pgmajfault", "container", k[6]),
                ("pgfault", "hierarchy", k[7]),
                ("pgmajfault", "hierarchy", k[8]),
            ] {
                if let Some(v) = v {
                    u.faults.push((kind, scope, v));
                }
            }
        }
        if let Some(t) = r.read(&mem.join("memory.oom_control")) {
            u.oom_kills = keyed(t, &["oom_kill"])[0];
        }
    }
    let pids = root.join("pids").join(rel);
    if let Some(t) = r.read(&pids.join("cgroup.procs")) {
        found = true;
        u.pids = pids_of(t);
        u.threads = r.u64(&pids.join("pids.current"));
        u.threads_max = r.limit(&pids.join("pids.max"));
    } else if let Some(t) = r.read(&mem.join("cgroup.procs")) {
        u.pids = pids_of(t);
    }
    found.then_some(u)
}

pub fn pids_of(procs: &str) -> Vec<i32> {
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `USER_HZ`, the unit of cpuacct.stat.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Processes of a cgroup, with their open descriptors and sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCounts {
    pub processes: u64,
    /// `None` when there were too many processes to look through.
    pub fds: Option<u64>,
    /// `None` when there were too many processes or descriptors.
    pub sockets: Option<u64>,
}

impl ProcessCounts {
    pub fn add(&mut self, o: &ProcessCounts) {
        self.processes += o.processes;
        self.fds = self.fds.zip(o.fds).map(|(a, b)| a + b);
        self.sockets = self.sockets.zip(o.sockets).map(|(a, b)| a + b);
    }
}

/// Looking through more processes than this for their descriptors, or
/// resolving more descriptors than this for sockets, would let one
/// container make every poll slow; past these the counts are left out
/// rather than guessed.
pub const MAX_SCANNED_PROCESSES: usize = 1024;
pub const MAX_RESOLVED_FDS: u64 = 16 * 1024;

/// Counts the descriptors and sockets of `pids`, under `proc` (normally
/// `/proc`). A process that exited meanwhile counts for nothing.
pub fn count_processes(proc: &Path, pids: &[i32]) -> ProcessCounts {
    let mut c = ProcessCounts {
        processes: pids.len() as u64,
        fds: None,
        sockets: None,
    };
    if pids.len() > MAX_SCANNED_PROCESSES {
        return c;
    }
    let (mut fds, mut sockets, mut resolve) = (0u64, 0u64, true);
    for pid in pids {
        let dir = proc.join(pid.to_string()).join("fd");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            fds += 1;
            if fds > MAX_RESOLVED_FDS {
                resolve = false;
            }
            if resolve
                && std::fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                sockets += 1;
            }
        }
    }
    c.fds = Some(fds);
    c.sockets = resolve.then_some(sockets);
    c
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A pod may make interfaces of its own (with NET_ADMIN); this many are
/// reported, loopback left out as cAdvisor does.
pub const MAX_INTERFACES: usize = 64;

/// Parses `/proc/net/dev` as seen inside a network namespace.
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 12 && name != "lo" && !name.is_empty()).then(|| NetDev {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .take(MAX_INTERFACES)
        .collect()
}

/// Size and inodes of a filesystem.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsCapacity {
    pub bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_capacity(path: &Path) -> Option<FsCapacity> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(FsCapacity {
        bytes: s.f_blocks.saturating_mul(s.f_frsize),
        inodes: s.f_files,
        inodes_free: s.f_ffree,
    })
}

/// The device of the filesystem holding `path`, as mountinfo names the
/// mount's source (`/dev/vda1`), else its `major:minor`.
pub fn device_of(path: &Path, mountinfo: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return String::new();
    };
    let dev = m.dev();
    let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
    // The last mount of that device whose mount point holds `path`: the
    // one on top.
    gantry_common::mountinfo::parse(mountinfo)
        .into_iter()
        .rev()
        .find(|m| m.device == id && path.starts_with(&m.mount_point))
        .map(|m| m.source)
        .unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn descriptors_are_unique_and_carry_the_base_labels() {
        let d = descriptors();
        assert_eq!(d.len(), FAMILIES.len());
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len(), "a family is listed twice");
        for x in &d {
            assert!(x.name.starts_with("container_"), "{}", x.name);
            assert_eq!(x.label_keys[..6], BASE_LABELS.map(String::from));
            assert!(!x.help.is_empty());
        }
        let net = d
            .iter()
            .find(|x| x.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(net.label_keys.last().map(String::as_str), Some("interface"));
    }

    #[test]
    fn v1_controllers_are_read_once_each() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let rel = "gantry/pod/c";
        write(
            &root.join("cpuacct").join(rel),
            "cpuacct.usage",
            "2500000000\n",
        );
        write(
            &root.join("cpuacct").join(rel),
            "cpuacct.stat",
            "user 150\nsystem 70\n",
        );
        write(
            &root.join("cpu").join(rel),
            "cpu.stat",
            "nr_periods 10\nnr_throttled 3\nthrottled_time 4000000000\n",
        );
        let mem = root.join("memory").join(rel);
        write(&mem, "memory.usage_in_bytes", "10000\n");
        write(&mem, "memory.max_usage_in_bytes", "20000\n");
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&mem, "memory.failcnt", "2\n");
        write(
            &mem,
            "memory.stat",
            "cache 1\nrss 2\npgfault 5\npgmajfault 1\ntotal_cache 3000\ntotal_rss 6000\n\
             total_mapped_file 700\ntotal_swap 0\ntotal_inactive_file 1000\n\
             total_pgfault 50\ntotal_pgmajfault 4\n",
        );
        write(
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let pids = root.join("pids").join(rel);
        write(&pids, "cgroup.procs", "12\n34\n");
        write(&pids, "pids.current", "5\n");
        write(&pids, "pids.max", "max\n");
        assert!(!unified(root));
        let u = read_cgroup(&mut Reader::default(), root, false, "/gantry/pod/c").unwrap();
        let hz = clock_ticks();
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: Some(2_500_000_000),
                user_ns: Some(150 * (NANOS / hz)),
                system_ns: Some(70 * (NANOS / hz)),
                periods: Some(10),
                throttled_periods: Some(3),
                throttled_ns: Some(4_000_000_000),
                memory_usage: Some(10000),
                memory_max_usage: Some(20000),
                memory_limit: Some(0),
                working_set: Some(9000),
                rss: Some(6000),
                cache: Some(3000),
                mapped_file: Some(700),
                swap: Some(0),
                failcnt: Some(2),
                faults: vec![
                    ("pgfault", "container", 5),
                    ("pgmajfault", "container", 1),
                    ("pgfault", "hierarchy", 50),
                    ("pgmajfault", "hierarchy", 4),
                ],
                oom_kills: Some(1),
                pids: vec![12, 34],
                threads: Some(5),
                threads_max: Some(0),
            }
        );
        assert!(read_cgroup(&mut Reader::default(), root, false, "nope").is_none());
    }

    #[test]
    fn v2_files_are_read_once_each() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        write(root, "cgroup.controllers", "cpu memory pids\n");
        let c = root.join("gantry/pod/c");
        write(&c, "cgroup.procs", "7\n");
        write(
            &c,
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n\
             nr_periods 4\nnr_throttled 1\nthrottled_usec 2500000\n",
        );
        write(&c, "memory.current", "8192\n");
        write(&c, "memory.max", "65536\n");
        write(
            &c,
            "memory.stat",
            "anon 4096\nfile 2048\nfile_mapped 1024\ninactive_file 512\npgfault 9\npgmajfault 2\n",
        );
        write(
            &c,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(&c, "pids.current", "2\n");
        write(&c, "pids.max", "100\n");
        assert!(unified(root));
        let u = read_cgroup(&mut Reader::default(), root, true, "gantry/pod/c").unwrap();
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: Some(3_000_000_000),
                user_ns: Some(2_000_000_000),
                system_ns: Some(1_000_000_000),
                periods: Some(4),
                throttled_periods: Some(1),
                throttled_ns: Some(2_500_000_000),
                memory_usage: Some(8192),
                memory_max_usage: None,
                memory_limit: Some(65536),
                working_set: Some(7680),
                rss: Some(4096),
                cache: Some(2048),
                mapped_file: Some(1024),
                swap: None,
                failcnt: Some(3),
                faults: vec![("pgfault", "hierarchy", 9), ("pgmajfault", "hierarchy", 2)],
                oom_kills: Some(1),
                pids: vec![7],
                threads: Some(2),
                threads_max: Some(100),
            }
        );
        assert!(read_cgroup(&mut Reader::default(), root, true, "gone").is_none());
    }

    #[test]
    fn every_series_matches_its_descriptor() {
        let u = CgroupUsage {
            cpu_ns: Some(3_900_000_000),
            user_ns: Some(2_000_000_000),
            system_ns: Some(1_000_000_000),
            periods: Some(1),
            throttled_periods: Some(1),
            throttled_ns: Some(1),
            memory_usage: Some(1),
            memory_max_usage: Some(1),
            memory_limit: Some(0),
            working_set: Some(1),
            rss: Some(1),
            cache: Some(1),
            mapped_file: Some(1),
            swap: Some(1),
            failcnt: Some(1),
            faults: vec![("pgfault", "hierarchy", 1)],
            oom_kills: Some(0),
            pids: vec![1],
            threads: Some(1),
            threads_max: Some(0),
        };
        let mut s = Series::new(
            BaseLabels {
                container: "app",
                cgroup: "/gantry/p/c",
                image: "busybox",
                name: "c",
                namespace: "ns",
                pod: "p",
            },
            42,
        );
        s.cgroup(&u);
        s.processes(&ProcessCounts {
            processes: 1,
            fds: Some(3),
            sockets: Some(0),
        });
        s.network(&[NetDev {
            name: "eth0".into(),
            ..Default::default()
        }]);
        s.filesystem("/dev/vda1", 4096, 42, &FsCapacity::default());
        s.push(&START_TIME, 1, &[]);
        s.push(&LAST_SEEN, 2, &[]);
        let d = descriptors();
        let mut seen = std::collections::BTreeSet::new();
        for m in &s.metrics {
            let desc = d.iter().find(|x| x.name == m.name).unwrap();
            assert_eq!(m.label_values.len(), desc.label_keys.len(), "{}", m.name);
            assert_eq!(m.timestamp, 42);
            seen.insert(m.name.clone());
        }
        // Everything described can be emitted.
        assert_eq!(seen.len(), FAMILIES.len());
        let cpu = s
            .metrics
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        // Whole seconds, rounded down; a counter; cpu="total".
        assert_eq!(cpu.value.as_ref().unwrap().value, 3);
        assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
        assert_eq!(
            cpu.label_values,
            ["app", "/gantry/p/c", "busybox", "c", "ns", "p", "total"]
        );
    }

    #[test]
    fn net_dev_is_parsed_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n  \
             bad: 1 2 x\n";
        assert_eq!(
            parse_net_dev(text),
            vec![NetDev {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let many: String = std::iter::repeat_n("h\nh\n", 1)
            .chain((0..100).map(|_| "x: 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"))
            .collect();
        assert_eq!(parse_net_dev(&many).len(), MAX_INTERFACES);
    }

    #[test]
    fn descriptors_and_sockets_of_processes_are_counted() {
        let me = std::process::id() as i32;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let before = count_processes(Path::new("/proc"), &[me]);
        let extra = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let after = count_processes(Path::new("/proc"), &[me, i32::MAX]);
        drop((listener, extra));
        assert_eq!(after.processes, 2);
        // Other test threads open files too, so only the socket is certain.
        assert!(after.fds.unwrap() >= 3);
        assert!(after.sockets.unwrap() > before.sockets.unwrap_or(0));
        let many = vec![me; MAX_SCANNED_PROCESSES + 1];
        let c = count_processes(Path::new("/proc"), &many);
        assert_eq!((c.fds, c.sockets), (None, None));
        let mut sum = ProcessCounts {
            processes: 1,
            fds: Some(1),
            sockets: Some(1),
        };
        sum.add(&c);
        assert_eq!((sum.processes, sum.fds), (1 + c.processes, None));
    }

    #[test]
    fn the_device_comes_from_mountinfo() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
        let info = format!(
            "21 1 {id} / / rw - ext4 /dev/fake1 rw\n22 21 0:99 / /other rw - tmpfs none rw\n"
        );
        assert_eq!(device_of(d.path(), &info), "/dev/fake1");
        assert_eq!(device_of(d.path(), ""), id);
        assert!(fs_capacity(d.path()).unwrap().bytes > 0);
    }
}
