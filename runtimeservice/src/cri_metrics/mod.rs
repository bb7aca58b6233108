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

mod read;
pub use read::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
