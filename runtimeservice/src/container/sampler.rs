//! The background stats sampler: every `stats_collection_period` it reads
//! the usage of every ready pod and of its containers (cgroups, writable
//! layers, network counters), and ListPodSandboxStats and
//! ListContainerStats answer from its latest sample, as cAdvisor's
//! housekeeping and CRI-O's stats collection period do. Read on each call,
//! those figures cost about 0.3 ms per pod, which at 110 pods put kubelet's
//! stats poll far past the latency of every other call.
//!
//! Each figure keeps the time it was read, so kubelet's rates stay right.
//! What the sample cannot speak for is read by the call itself: a container
//! whose state changed since (started, exited), a pod whose containers
//! changed, a pod new since; and everything when no sample is younger than
//! two periods (sampling off, or stalled).

use std::time::{Duration, Instant};

use super::stats::{pod_networks, Layer};
use super::*;

/// One pass over every ready pod.
pub(super) struct Sample {
    taken: Instant,
    /// By pod id: its stats, and its containers with the state each had.
    pods: HashMap<String, (Vec<(String, ContainerState)>, cri::PodSandboxStats)>,
    /// By container id: its stats and the state it had.
    containers: HashMap<String, (ContainerState, cri::ContainerStats)>,
}

impl Sample {
    /// The container's sampled stats, unless it changed state since.
    pub(super) fn container(&self, r: &ContainerRecord) -> Option<cri::ContainerStats> {
        let (state, stats) = self.containers.get(&r.id)?;
        (*state == r.state).then(|| stats.clone())
    }

    /// The pod's sampled stats, unless its containers (which, or their
    /// states) changed since.
    pub(super) fn pod(
        &self,
        pod: &crate::pod::PodRecord,
        containers: &[ContainerRecord],
    ) -> Option<cri::PodSandboxStats> {
        let (held, stats) = self.pods.get(&pod.id)?;
        let same = held.len() == containers.len()
            && containers
                .iter()
                .all(|r| held.iter().any(|(id, st)| *id == r.id && *st == r.state));
        same.then(|| stats.clone())
    }
}

pub(super) struct Sampler {
    period: Option<Duration>,
    latest: Mutex<Option<Arc<Sample>>>,
}

impl Sampler {
    pub(super) fn new(period_secs: u64) -> Sampler {
        Sampler {
            period: (period_secs > 0).then(|| Duration::from_secs(period_secs)),
            latest: Mutex::new(None),
        }
    }

    /// The latest sample, if sampling is on and it is younger than two
    /// periods: one late pass is tolerated, a stalled sampler is not.
    pub(super) fn fresh(&self) -> Option<Arc<Sample>> {
        let period = self.period?;
        let latest = lock(&self.latest).clone()?;
        (latest.taken.elapsed() < 2 * period).then_some(latest)
    }
}

impl ContainerService {
    /// Starts sampling (when `stats_collection_period` is not 0): a pass
    /// now, then one each period. The task holds the service weakly and
    /// ends with it.
    pub fn spawn_stats_sampler(self: &Arc<Self>) {
        let Some(period) = self.sampler.period else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            // After a stall, one pass and back on the beat; never a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                if let Err(e) = tokio::task::spawn_blocking(move || svc.take_sample()).await {
                    warn!(error = %e, "sampling pod and container stats");
                }
            }
        });
    }

    /// One pass: every ready pod's stats with its containers', their
    /// writable layers as last walked (at most a minute ago). Blocking.
    pub(super) fn take_sample(&self) {
        let taken = Instant::now();
        let pods = self.ready_pods();
        let by_pod = self.containers_by_pod();
        let mut networks = pod_networks(&pods).into_iter();
        let mut sample = Sample {
            taken,
            pods: HashMap::with_capacity(pods.len()),
            containers: HashMap::new(),
        };
        for p in &pods {
            let network = p.netns.as_ref().and_then(|_| networks.next().flatten());
            let records = by_pod.get(&p.id).map(Vec::as_slice).unwrap_or_default();
            let stats = self.pod_stats_with(p, network, records, Layer::Cached);
            let containers = stats.linux.as_ref().map(|l| l.containers.as_slice());
            for (r, c) in records.iter().zip(containers.unwrap_or_default()) {
                sample.containers.insert(r.id.clone(), (r.state, c.clone()));
            }
            let held = records.iter().map(|r| (r.id.clone(), r.state)).collect();
            sample.pods.insert(p.id.clone(), (held, stats));
        }
        debug!(
            pods = sample.pods.len(),
            containers = sample.containers.len(),
            took_ms = taken.elapsed().as_millis() as u64,
            "sampled pod and container stats"
        );
        *lock(&self.sampler.latest) = Some(Arc::new(sample));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container_config, pod_config, World};

    fn cpu_at(s: &cri::ContainerStats) -> i64 {
        s.cpu.as_ref().map(|c| c.timestamp).unwrap_or_default()
    }

    fn pod_cpu_at(s: &cri::PodSandboxStats) -> i64 {
        let linux = s.linux.as_ref();
        linux
            .and_then(|l| l.cpu.as_ref())
            .map(|c| c.timestamp)
            .unwrap_or_default()
    }

    fn by_id(stats: Vec<cri::ContainerStats>) -> HashMap<String, i64> {
        stats
            .iter()
            .map(|s| (s.attributes.clone().unwrap_or_default().id, cpu_at(s)))
            .collect()
    }

    async fn running(svc: &ContainerService, pod: &str, name: &str) -> String {
        let id = svc.create(pod, container_config(name)).await.unwrap();
        svc.start(&id).await.unwrap();
        id
    }

    #[tokio::test]
    async fn list_calls_answer_from_the_sample_and_read_what_changed_since() {
        let w = World::new();
        let web = w.pods.run(pod_config("web"), String::new()).await.unwrap();
        let db = w.pods.run(pod_config("db"), String::new()).await.unwrap();
        let svc = Arc::new(w.containers());
        let a = running(&svc, &web, "a").await;
        let b = running(&svc, &db, "b").await;
        svc.take_sample();
        let sampled = by_id(svc.list_stats(None));
        let pods: HashMap<String, i64> = svc
            .list_pod_stats(None)
            .iter()
            .map(|s| (s.attributes.clone().unwrap_or_default().id, pod_cpu_at(s)))
            .collect();
        assert_eq!(sampled.len(), 2);
        assert_eq!(pods.len(), 2);

        // Nothing changed: the same figures, read at the same moments.
        assert_eq!(by_id(svc.list_stats(None)), sampled);
        for s in svc.list_pod_stats(None) {
            let id = s.attributes.clone().unwrap_or_default().id;
            assert_eq!(pod_cpu_at(&s), pods[&id], "pod {id}");
        }

        // A stopped container and a new one are read by the call; the
        // untouched container still comes from the sample.
        svc.stop(&a, 0).await.unwrap();
        let c = running(&svc, &web, "c").await;
        let now = by_id(svc.list_stats(None));
        assert_eq!(now.len(), 3);
        assert!(now[&a] > sampled[&a], "the stopped container is read again");
        assert!(now[&c] > sampled[&b], "the new container is read");
        assert_eq!(now[&b], sampled[&b]);
        // So is the pod whose containers changed; the other pod is not.
        for s in svc.list_pod_stats(None) {
            let id = s.attributes.clone().unwrap_or_default().id;
            if id == web {
                assert!(pod_cpu_at(&s) > pods[&id]);
                let held = s.linux.map(|l| l.containers.len());
                assert_eq!(held, Some(2), "both of web's containers");
            } else {
                assert_eq!(pod_cpu_at(&s), pods[&id]);
            }
        }
        // A filter picks from the sample too.
        let only_b = svc.list_stats(Some(cri::ContainerStatsFilter {
            id: b.clone(),
            ..Default::default()
        }));
        assert_eq!(by_id(only_b), HashMap::from([(b.clone(), sampled[&b])]));

        // The next pass takes the changes in.
        svc.take_sample();
        let resampled = by_id(svc.list_stats(None));
        assert_eq!(by_id(svc.list_stats(None)), resampled);
        assert!(resampled[&b] > sampled[&b]);
    }

    #[tokio::test]
    async fn an_old_sample_is_not_used() {
        let w = World::new();
        let pod = w.pods.run(pod_config("web"), String::new()).await.unwrap();
        let svc = Arc::new(w.containers());
        let a = running(&svc, &pod, "a").await;
        svc.take_sample();
        let sampled = by_id(svc.list_stats(None));
        {
            let mut latest = lock(&svc.sampler.latest);
            let period = svc.sampler.period.unwrap();
            let old = latest.take().unwrap();
            *latest = Some(Arc::new(Sample {
                taken: Instant::now().checked_sub(2 * period).unwrap(),
                pods: old.pods.clone(),
                containers: old.containers.clone(),
            }));
        }
        assert!(svc.sampler.fresh().is_none());
        assert!(by_id(svc.list_stats(None))[&a] > sampled[&a]);
    }

    #[test]
    fn sampling_off_keeps_no_sample_in_use() {
        let s = Sampler::new(0);
        *lock(&s.latest) = Some(Arc::new(Sample {
            taken: Instant::now(),
            pods: HashMap::new(),
            containers: HashMap::new(),
        }));
        assert!(s.fresh().is_none());
        assert!(Sampler::new(10).fresh().is_none(), "no pass yet");
    }

    #[tokio::test]
    async fn the_sampler_takes_a_pass_when_started() {
        let w = World::new();
        let pod = w.pods.run(pod_config("web"), String::new()).await.unwrap();
        let svc = Arc::new(w.containers());
        running(&svc, &pod, "a").await;
        svc.spawn_stats_sampler();
        // The first pass is due at once; bounded, not timed.
        for _ in 0..500 {
            if svc.sampler.fresh().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = svc.sampler.fresh().expect("a pass after start");
        assert_eq!((s.pods.len(), s.containers.len()), (1, 1));
    }
}
