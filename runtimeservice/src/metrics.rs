//! The runtime service's Prometheus metrics: what the pod, container, CNI
//! and OCI runtime code observes as it works ([`RuntimeMetrics`], made by
//! the daemon on its registry and handed down, as the image service's are),
//! and the gauges computed from the in-memory state at each scrape
//! ([`StateCollector`]). Every metric is described in `deploy/metrics.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::container::ContainerService;
use crate::pod::PodService;

/// Phases of bringing a pod's container up, as `gantry_pod_start_phase_seconds`
/// labels them.
pub mod phase {
    /// Making the pod's cgroup.
    pub const CGROUP: &str = "cgroup";
    /// Making and pinning the pod's namespaces (and its PID namespace init).
    pub const NAMESPACES: &str = "namespaces";
    /// The CNI ADD of the pod's network.
    pub const CNI_ADD: &str = "cni_add";
    /// CreateContainer's work: rootfs, volumes, OCI spec.
    pub const RUNTIME_CREATE: &str = "runtime_create";
    /// StartContainer's work: the monitor and `<runtime> run --detach`.
    pub const RUNTIME_START: &str = "runtime_start";
    pub const ALL: [&str; 5] = [CGROUP, NAMESPACES, CNI_ADD, RUNTIME_CREATE, RUNTIME_START];
}

/// Container exit reasons, as ContainerStatus reports them.
pub const EXIT_REASONS: [&str; 5] = ["Completed", "Error", "OOMKilled", "StartError", "Unknown"];

#[derive(Clone)]
pub struct RuntimeMetrics {
    pod_start_phase: HistogramVec,
    cni_seconds: HistogramVec,
    cni_errors: IntCounterVec,
    runtime_seconds: HistogramVec,
    runtime_errors: IntCounterVec,
    container_exits: IntCounterVec,
}

impl RuntimeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let latency = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        let m = RuntimeMetrics {
            pod_start_phase: HistogramVec::new(
                HistogramOpts::new(
                    "gantry_pod_start_phase_seconds",
                    "Time spent in each phase of starting a pod and its containers",
                )
                .buckets(latency.to_vec()),
                &["phase"],
            )?,
            cni_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "gantry_cni_operation_seconds",
                    "CNI operation latency by operation and network (plugin chain)",
                )
                .buckets(latency.to_vec()),
                &["op", "network"],
            )?,
            cni_errors: IntCounterVec::new(
                Opts::new(
                    "gantry_cni_errors_total",
                    "Failed CNI operations by operation and network (plugin chain)",
                ),
                &["op", "network"],
            )?,
            runtime_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "gantry_runtime_operation_seconds",
                    "OCI runtime command latency by handler and operation",
                )
                .buckets(latency.to_vec()),
                &["handler", "op"],
            )?,
            runtime_errors: IntCounterVec::new(
                Opts::new(
                    "gantry_runtime_errors_total",
                    "Failed OCI runtime commands by handler and operation",
                ),
                &["handler", "op"],
            )?,
            container_exits: IntCounterVec::new(
                Opts::new(
                    "gantry_container_exits_total",
                    "Container exits by reason (Completed, Error, OOMKilled, StartError, Unknown)",
                ),
                &["reason"],
            )?,
        };
        for p in phase::ALL {
            // Every phase's series exists from the start.
            m.pod_start_phase.with_label_values(&[p]);
        }
        for r in EXIT_REASONS {
            m.container_exits.with_label_values(&[r]);
        }
        registry.register(Box::new(m.pod_start_phase.clone()))?;
        registry.register(Box::new(m.cni_seconds.clone()))?;
        registry.register(Box::new(m.cni_errors.clone()))?;
        registry.register(Box::new(m.runtime_seconds.clone()))?;
        registry.register(Box::new(m.runtime_errors.clone()))?;
        registry.register(Box::new(m.container_exits.clone()))?;
        Ok(m)
    }

    /// Metrics that go nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new())
            .unwrap_or_else(|_| unreachable!("a fresh registry accepts every metric once"))
    }

    pub(crate) fn observe_phase(&self, phase: &str, since: Instant) {
        self.pod_start_phase
            .with_label_values(&[phase])
            .observe(since.elapsed().as_secs_f64());
    }

    /// Records one CNI operation; the error series is touched either way,
    /// so that it exists (at 0) once the network has been used.
    pub(crate) fn observe_cni(&self, op: &str, network: &str, elapsed: Duration, ok: bool) {
        self.cni_seconds
            .with_label_values(&[op, network])
            .observe(elapsed.as_secs_f64());
        self.cni_errors
            .with_label_values(&[op, network])
            .inc_by(u64::from(!ok));
    }

    pub(crate) fn observe_runtime(&self, handler: &str, op: &str, elapsed: Duration, ok: bool) {
        self.runtime_seconds
            .with_label_values(&[handler, op])
            .observe(elapsed.as_secs_f64());
        self.runtime_errors
            .with_label_values(&[handler, op])
            .inc_by(u64::from(!ok));
    }

    pub(crate) fn container_exited(&self, reason: &str) {
        let reason = if EXIT_REASONS.contains(&reason) {
            reason
        } else {
            "Unknown"
        };
        self.container_exits.with_label_values(&[reason]).inc();
    }
}

impl std::fmt::Debug for RuntimeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeMetrics")
    }
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}

/// The log bytes each container's monitor reported dropped, as last seen,
/// and those of containers since removed (whose count files went with
/// them). Kept so that the total only grows, whatever the order of
/// scrapes, reports and removals: a container's count is followed only
/// from its start to its removal, and only upwards.
#[derive(Debug, Default)]
pub(crate) struct LogDrops {
    inner: std::sync::Mutex<(std::collections::HashMap<String, u64>, u64)>,
}

impl LogDrops {
    fn lock(&self) -> std::sync::MutexGuard<'_, (std::collections::HashMap<String, u64>, u64)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a container whose monitor runs.
    pub(crate) fn track(&self, id: &str) {
        self.lock().0.entry(id.to_string()).or_insert(0);
    }

    /// Takes the counts read now (of followed containers only: one removed
    /// meanwhile stays removed) and returns the total.
    pub(crate) fn observe(&self, seen: &[(String, u64)]) -> u64 {
        let mut g = self.lock();
        for (id, n) in seen {
            if let Some(v) = g.0.get_mut(id) {
                *v = (*v).max(*n);
            }
        }
        g.0.values().fold(g.1, |a, b| a.saturating_add(*b))
    }

    /// A removed container's last count joins the removed ones.
    pub(crate) fn retire(&self, id: &str, last: u64) {
        let mut g = self.lock();
        let seen = g.0.remove(id).unwrap_or(0);
        g.1 = g.1.saturating_add(seen.max(last));
    }
}

/// What the container service counts at a scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ContainerCounts {
    /// Containers by (state, handler).
    pub by_state: BTreeMap<(&'static str, String), i64>,
    /// Monitors whose process is there.
    pub monitors_alive: i64,
    /// Log bytes monitors dropped, those of removed containers included.
    pub log_dropped_bytes: u64,
}

/// Gauges computed from the pod and container records at each scrape:
/// nothing to keep in step as records change, and a scrape costs one pass
/// over the records (and a `/proc` read per running container).
pub struct StateCollector {
    pods: Arc<PodService>,
    containers: Arc<ContainerService>,
    descs: Vec<Desc>,
}

const POD_STATES: [&str; 3] = ["creating", "ready", "notready"];
const CONTAINER_STATES: [&str; 4] = ["creating", "created", "running", "exited"];

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
}

fn pods_vec() -> IntGaugeVec {
    gauge_vec(
        "gantry_pods",
        "Pod sandboxes by state and runtime handler",
        &["state", "handler"],
    )
}

fn containers_vec() -> IntGaugeVec {
    gauge_vec(
        "gantry_containers",
        "Containers by state and runtime handler",
        &["state", "handler"],
    )
}

fn monitors_gauge() -> IntGauge {
    IntGauge::new("gantry_monitors_alive", "Container monitor processes alive")
        .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
}

fn dropped_counter() -> IntCounter {
    IntCounter::new(
        "gantry_container_log_dropped_bytes_total",
        "Container output bytes not written to the log (over the size cap, or the log could not be written)",
    )
    .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
}

impl StateCollector {
    pub fn new(pods: Arc<PodService>, containers: Arc<ContainerService>) -> Self {
        let descs = [
            pods_vec().desc(),
            containers_vec().desc(),
            monitors_gauge().desc(),
            dropped_counter().desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        StateCollector {
            pods,
            containers,
            descs,
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let handlers: Vec<String> = self.pods.config.runtimes.keys().cloned().collect();
        let pods = pods_vec();
        // Every configured handler's series exist, at 0 when empty, so an
        // alert on them has something to compare.
        for h in &handlers {
            for s in POD_STATES {
                pods.with_label_values(&[s, h]);
            }
        }
        for ((state, handler), n) in self.pods.counts() {
            pods.with_label_values(&[state, &handler]).set(n);
        }
        let counts = self.containers.counts();
        let containers = containers_vec();
        for h in &handlers {
            for s in CONTAINER_STATES {
                containers.with_label_values(&[s, h]);
            }
        }
        for ((state, handler), n) in &counts.by_state {
            containers
                .with_label_values(&[*state, handler.as_str()])
                .set(*n);
        }
        let monitors = monitors_gauge();
        monitors.set(counts.monitors_alive);
        let dropped = dropped_counter();
        dropped.inc_by(counts.log_dropped_bytes);
        let mut out = pods.collect();
        out.extend(containers.collect());
        out.extend(monitors.collect());
        out.extend(dropped.collect());
        out
    }
}

/// The value of the series `name` (a histogram's `_count`) carrying
/// `labels`, as a scrape shows it.
#[cfg(test)]
pub(crate) fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .ok()?;
    let text = String::from_utf8(buf).ok()?;
    let counted = format!("{name}_count");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let base = series.split('{').next().unwrap_or_default();
            (base == name || base == counted)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(registry, name, labels)
    }

    #[test]
    fn dropped_log_bytes_never_go_down() {
        let d = LogDrops::default();
        d.track("a");
        d.track("b");
        assert_eq!(d.observe(&[("a".into(), 10), ("b".into(), 5)]), 15);
        // An older reading does not lower a count.
        assert_eq!(d.observe(&[("a".into(), 7)]), 15);
        d.retire("a", 12);
        // A reading taken before the removal, applied after it, is ignored.
        assert_eq!(d.observe(&[("a".into(), 12), ("b".into(), 6)]), 18);
        d.retire("never-started", 0);
        d.retire("b", 0);
        assert_eq!(d.observe(&[]), 18);
    }

    #[test]
    fn operations_count_their_errors_and_touch_their_series() {
        let r = Registry::new();
        let m = RuntimeMetrics::new(&r).unwrap();
        m.observe_cni("ADD", "net", Duration::from_millis(5), true);
        let l = [("op", "ADD"), ("network", "net")];
        assert_eq!(value(&r, "gantry_cni_errors_total", &l), Some(0.0));
        m.observe_cni("ADD", "net", Duration::from_millis(5), false);
        assert_eq!(value(&r, "gantry_cni_errors_total", &l), Some(1.0));
        assert_eq!(value(&r, "gantry_cni_operation_seconds", &l), Some(2.0));

        m.observe_runtime("runc", "kill", Duration::from_millis(1), false);
        let l = [("handler", "runc"), ("op", "kill")];
        assert_eq!(value(&r, "gantry_runtime_errors_total", &l), Some(1.0));

        assert_eq!(
            value(
                &r,
                "gantry_container_exits_total",
                &[("reason", "OOMKilled")]
            ),
            Some(0.0),
            "every reason exists from the start"
        );
        m.container_exited("OOMKilled");
        m.container_exited("something a record made up");
        assert_eq!(
            value(
                &r,
                "gantry_container_exits_total",
                &[("reason", "OOMKilled")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&r, "gantry_container_exits_total", &[("reason", "Unknown")]),
            Some(1.0),
            "reasons stay a closed set"
        );
    }
}
