//! Metrics the daemon itself owns: the disk under its state root (read at
//! each scrape) and the streaming sessions open. The services' own metrics
//! live with them (`gantry_imageservice::metrics`,
//! `gantry_runtimeservice::metrics`); all are described in
//! `deploy/metrics.md`.

use std::path::PathBuf;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Size and free space of the file system holding the state root, read
/// with `statvfs` at each scrape: the disk that fills when images, layers
/// and container logs pile up.
pub struct StateRootCollector {
    root: PathBuf,
    descs: Vec<Desc>,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
}

fn size_gauge() -> IntGauge {
    gauge(
        "gantry_state_root_size_bytes",
        "Size of the file system holding gantry's root directory",
    )
}

fn available_gauge() -> IntGauge {
    gauge(
        "gantry_state_root_available_bytes",
        "Bytes available to gantry on the file system holding its root directory",
    )
}

fn inodes_free_gauge() -> IntGauge {
    gauge(
        "gantry_state_root_inodes_free",
        "Free inodes on the file system holding gantry's root directory",
    )
}

impl StateRootCollector {
    pub fn new(root: PathBuf) -> Self {
        let descs = [size_gauge(), available_gauge(), inodes_free_gauge()]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        StateRootCollector { root, descs }
    }
}

fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl Collector for StateRootCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A root that cannot be read exports nothing rather than a zero an
        // alert would take for a full disk; `up` and the logs tell why.
        let Ok(st) = rustix::fs::statvfs(&self.root) else {
            return Vec::new();
        };
        let (size, available, inodes_free) = (size_gauge(), available_gauge(), inodes_free_gauge());
        size.set(clamp(st.f_blocks.saturating_mul(st.f_frsize)));
        available.set(clamp(st.f_bavail.saturating_mul(st.f_frsize)));
        inodes_free.set(clamp(st.f_favail));
        [size, available, inodes_free]
            .iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

/// Streaming sessions (exec, attach, port forward) by kind: open now, and
/// started since the daemon started.
#[derive(Clone)]
pub struct SessionMetrics {
    open: IntGaugeVec,
    started: IntCounterVec,
}

pub const SESSION_KINDS: [&str; 3] = ["exec", "attach", "portforward"];

impl SessionMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = SessionMetrics {
            open: IntGaugeVec::new(
                Opts::new(
                    "gantry_streaming_sessions",
                    "Streaming sessions open, by kind",
                ),
                &["kind"],
            )?,
            started: IntCounterVec::new(
                Opts::new(
                    "gantry_streaming_sessions_total",
                    "Streaming sessions started, by kind",
                ),
                &["kind"],
            )?,
        };
        for k in SESSION_KINDS {
            m.open.with_label_values(&[k]);
            m.started.with_label_values(&[k]);
        }
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.started.clone()))?;
        Ok(m)
    }

    pub fn unregistered() -> Self {
        Self::new(&Registry::new())
            .unwrap_or_else(|_| unreachable!("a fresh registry accepts every metric once"))
    }

    /// Counts a session as open until the returned guard is dropped.
    pub fn open(&self, kind: &str) -> SessionGuard {
        self.started.with_label_values(&[kind]).inc();
        let gauge = self.open.with_label_values(&[kind]);
        gauge.inc();
        SessionGuard(gauge)
    }
}

pub struct SessionGuard(IntGauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name` with label `kind` (if given).
    fn value(r: &Registry, name: &str, kind: Option<&str>) -> Option<f64> {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&r.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(series, _)| {
                series.split('{').next() == Some(name)
                    && kind.is_none_or(|k| series.contains(&format!("kind=\"{k}\"")))
            })
            .and_then(|(_, v)| v.parse().ok())
    }

    fn sample(r: &Registry, name: &str) -> Option<f64> {
        value(r, name, None)
    }

    #[test]
    fn the_state_root_disk_is_read_at_scrape() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        r.register(Box::new(StateRootCollector::new(d.path().to_path_buf())))
            .unwrap();
        let size = sample(&r, "gantry_state_root_size_bytes").unwrap();
        let avail = sample(&r, "gantry_state_root_available_bytes").unwrap();
        assert!(
            size > 0.0 && avail <= size,
            "size {size}, available {avail}"
        );

        let gone = Registry::new();
        gone.register(Box::new(StateRootCollector::new(d.path().join("missing"))))
            .unwrap();
        assert_eq!(sample(&gone, "gantry_state_root_size_bytes"), None);
    }

    #[test]
    fn a_session_is_open_while_its_guard_lives() {
        let r = Registry::new();
        let m = SessionMetrics::new(&r).unwrap();
        let value = |name: &str, kind: &str| value(&r, name, Some(kind));
        assert_eq!(value("gantry_streaming_sessions", "attach"), Some(0.0));
        let g = m.open("exec");
        let _g2 = m.open("exec");
        assert_eq!(value("gantry_streaming_sessions", "exec"), Some(2.0));
        drop(g);
        assert_eq!(value("gantry_streaming_sessions", "exec"), Some(1.0));
        assert_eq!(value("gantry_streaming_sessions_total", "exec"), Some(2.0));
    }
}
