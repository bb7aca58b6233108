//! StopPodSandbox: the network torn down and the namespaces released.

use super::*;

impl PodService {
    pub(super) fn pinned(rec: &PodRecord) -> PinnedNamespaces {
        PinnedNamespaces {
            net: rec.netns.clone(),
            ipc: rec.ipc_ns.clone(),
            uts: rec.uts_ns.clone(),
        }
    }

    /// Undoes every host effect a record says may exist. Safe to repeat.
    pub(super) async fn teardown(&self, rec: &PodRecord) -> bool {
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
        let user_pin = rec.user_ns.clone();
        let _ = tokio::task::spawn_blocking(move || {
            netns::remove(&pinned);
            // The user namespace goes last: it owns the others.
            if let Some(p) = user_pin {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_file(&p);
            }
            if let Some(p) = pid_pin {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_file(&p);
            }
        })
        .await;
        let _ = std::fs::remove_dir(self.ns_dir.join(&rec.id));
        clean
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
                // The mappings stay: the status still reports them.
                r.user_ns = None;
            })?;
            info!("pod sandbox stopped");
            Ok(rec.state == PodState::Ready)
        }
        .instrument(span)
        .await
    }
}
