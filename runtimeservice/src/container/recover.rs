//! What the daemon finds at start: records rolled forward or back,
//! monitors re-attached, leases reconciled.

use super::*;

impl ContainerService {
    /// After a daemon start: interrupted creates are rolled back; live
    /// containers are watched again, and those whose monitor vanished
    /// without recording an exit are reported exited.
    pub async fn recover(&self) {
        // First, so that the leases of what is still mounted are known
        // before they are reconciled below.
        let unreaped = self.finish_reaps().await;
        let ids: Vec<String> = self.records().keys().cloned().collect();
        for id in ids {
            let live = self.records().get(&id).is_some_and(|r| {
                matches!(r.state, ContainerState::Created | ContainerState::Running)
            });
            // Watch first, then look: an exit in between is still heard.
            if live {
                if let Err(e) = self.exits.watch(&id, &self.cdir(&id)) {
                    crate::events::warn_unwatched(&id, &e);
                }
            }
            // A start cut short: whatever it got to run goes, and the
            // container is back to created, startable again.
            let unfinished_run = self.records().get(&id).cloned().filter(|r| {
                r.state == ContainerState::Created
                    && r.monitor_pid == 0
                    && (self.cdir(&id).join("pid").exists()
                        || !self.host.monitors_of(&id).is_empty())
            });
            if let Some(r) = unfinished_run {
                warn!(container = %id, "undoing a start that was interrupted");
                self.undo_run(&id, &r).await;
            }
            let Some(r) = self.fold_exit(&id) else {
                continue;
            };
            match r.state {
                ContainerState::Creating => {
                    warn!(container = %id, "rolling back a container whose creation was interrupted");
                    self.destroy(&id).await;
                }
                // Not run yet: no monitor to have lost.
                ContainerState::Created if r.monitor_pid == 0 => {}
                ContainerState::Created | ContainerState::Running => {
                    if !self.host.monitor_alive(r.monitor_pid, &id)
                        && !self.cdir(&id).join(EXIT_FILE).exists()
                    {
                        warn!(container = %id, "the monitor is gone and recorded no exit");
                        self.exits.unwatch(&id);
                        self.metrics.container_exited("Unknown");
                        let _ = self.update_then_emit(&id, |r| {
                            r.state = ContainerState::Exited;
                            r.exit_code = 255;
                            r.finished_at = now_nanos();
                            r.reason = "Unknown".into();
                            r.message = "the container monitor exited without recording the container's exit".into();
                            Some(cri::ContainerEventType::ContainerStoppedEvent)
                        });
                    }
                }
                ContainerState::Exited => {}
            }
        }
        // Leases of containers removed while the daemon was down or cut
        // short (a crash between removing the record and the lease).
        let live: HashMap<String, String> = self
            .records()
            .values()
            .map(|r| (r.id.clone(), r.image_id.clone()))
            .chain(unreaped)
            .collect();
        if let Err(e) = self.images.retain(&live).await {
            warn!(error = %e, "dropping the image leases of containers that are gone");
        }
    }

    /// Finishes the removals a stopped daemon left under `removing/`;
    /// returns the containers (with their image IDs) whose rootfs is still
    /// mounted, whose leases must stay until a later start unmounts it.
    async fn finish_reaps(&self) -> Vec<(String, String)> {
        let mut unreaped = Vec::new();
        for id in self.reaper.leftover_ids() {
            let dir = self.reaper.dir_of(&id);
            let rec = std::fs::read(dir.join(<ContainerRecord as Record>::FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<ContainerRecord>(&b).ok())
                .filter(|r| r.id == id);
            info!(container = %id, "finishing the removal of a container removed before the daemon stopped");
            let leftovers = reaper::Leftovers {
                id: id.clone(),
                pod_id: rec.as_ref().map(|r| r.pod_id.clone()).unwrap_or_default(),
                cgroup: None,
                runtime: rec.as_ref().and_then(|r| self.runtime(&r.handler).ok()),
                // Not known without the record: undone if there.
                kill_monitors: true,
                rootfs_mounted: rec.as_ref().is_none_or(|r| r.rootfs_mounted),
                dir: dir.clone(),
            };
            let released = leftovers.reap(&*self.host, &*self.images).await;
            if let Some(r) = rec.filter(|_| !released) {
                unreaped.push((id, r.image_id));
            }
        }
        unreaped
    }
}
