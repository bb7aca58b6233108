//! What the daemon finds at start: pods being made rolled back, pid
//! inits re-found, networks of pods that are gone released.

use super::*;

impl PodService {
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
                        .any(|p| !self.host.is_pinned(p));
                    if gone {
                        warn!(pod = %rec.id, "namespaces of a ready sandbox are gone; marking it not ready");
                        let _ = self.store.update(&rec.id, |r| r.state = PodState::NotReady);
                    } else if let Some(d) = rec
                        .cgroup_created
                        .iter()
                        .find(|d| !self.host.cgroup_dir_exists(d))
                    {
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
}
