//! The image service's Prometheus metrics.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ImageMetrics {
    pull_bytes: IntCounter,
    pull_duration: Histogram,
    pulls: IntCounterVec,
    store_bytes: IntGauge,
    orphans: IntCounterVec,
    layers: IntCounterVec,
}

impl ImageMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = ImageMetrics {
            pull_bytes: IntCounter::new(
                "gantry_image_pull_bytes_total",
                "Bytes downloaded from registries",
            )?,
            pull_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "gantry_image_pull_duration_seconds",
                    "Time to pull and unpack an image",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ]),
            )?,
            pulls: IntCounterVec::new(
                Opts::new("gantry_image_pulls_total", "Image pulls by result"),
                &["result"],
            )?,
            store_bytes: IntGauge::new(
                "gantry_image_store_bytes",
                "Bytes used by the image store at the last measurement",
            )?,
            orphans: IntCounterVec::new(
                Opts::new(
                    "gantry_image_orphans_removed_total",
                    "Blobs, snapshots and partial downloads of interrupted pulls removed at start",
                ),
                &["kind"],
            )?,
            layers: IntCounterVec::new(
                Opts::new(
                    "gantry_image_layers_total",
                    "Layers of pulled images: unpacked by the pull, or reused from the store",
                ),
                &["result"],
            )?,
        };
        m.layers.with_label_values(&["unpacked"]);
        m.layers.with_label_values(&["reused"]);
        registry.register(Box::new(m.layers.clone()))?;
        registry.register(Box::new(m.orphans.clone()))?;
        registry.register(Box::new(m.pull_bytes.clone()))?;
        registry.register(Box::new(m.pull_duration.clone()))?;
        registry.register(Box::new(m.pulls.clone()))?;
        registry.register(Box::new(m.store_bytes.clone()))?;
        Ok(m)
    }

    /// Metrics that go nowhere, for tests.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new())
            .unwrap_or_else(|_| unreachable!("a fresh registry accepts every metric once"))
    }

    pub(crate) fn add_pull_bytes(&self, n: u64) {
        self.pull_bytes.inc_by(n);
    }

    pub(crate) fn observe_pull(&self, elapsed: Duration, ok: bool) {
        self.pull_duration.observe(elapsed.as_secs_f64());
        self.pulls
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    pub(crate) fn layer_reused(&self) {
        self.layers.with_label_values(&["reused"]).inc();
    }

    pub(crate) fn layer_unpacked(&self) {
        self.layers.with_label_values(&["unpacked"]).inc();
    }

    pub(crate) fn add_orphans(&self, kind: &str, n: usize) {
        // Touched even at zero, so the series exists from the start.
        self.orphans.with_label_values(&[kind]).inc_by(n as u64);
    }

    pub(crate) fn set_store_bytes(&self, bytes: u64) {
        self.store_bytes.set(bytes.min(i64::MAX as u64) as i64);
    }
}
