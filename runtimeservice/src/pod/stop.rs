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
        let init = if rec.init_pid > 0 || rec.pid_ns.is_some() {
            self.host.pod_init(&rec.id, rec.init_pid)
        } else {
            None
        };
        if let Some(pid) = init {
            // Killing a PID namespace's init ends every process in it.
            let _ = self.host.kill(pid, libc::SIGKILL);
        }
        let pinned = Self::pinned(rec);
        let pid_pin = rec.pid_ns.clone();
        let host = self.host.clone();
        let user_pin = rec.user_ns.clone();
        let _ = tokio::task::spawn_blocking(move || {
            host.remove_namespaces(&pinned);
            // The user namespace goes last: it owns the others.
            if let Some(p) = user_pin {
                host.unpin(&p);
            }
            if let Some(p) = pid_pin {
                host.unpin(&p);
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
                return Err(Error::NetworkNotReady(format!(
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
