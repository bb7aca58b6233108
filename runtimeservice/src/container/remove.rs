//! RemoveContainer and what a container leaves behind: runtime state,
//! monitors, cgroups, mounts, leases. RemoveContainer itself only takes the
//! container out of view, durably; [`super::reaper`] undoes the rest.

use super::reaper::Leftovers;
use super::*;

impl ContainerService {
    /// SIGKILLs every monitor process of container `id` (and the runtime
    /// each runs).
    pub(super) fn kill_stray_monitors(&self, id: &str) {
        for pid in self.host.monitors_of(id) {
            warn!(container = %id, pid, "killing a monitor left from an interrupted create");
            self.host.kill_monitor(pid);
        }
    }

    /// Takes the container out of its runtime: first its monitors, when
    /// asked (one left by a start cut short must not go on making a
    /// container that is being undone), then the runtime's container, then
    /// the cgroup, which the runtime's delete normally removes but a run
    /// cut short before the runtime saved its state leaves to us.
    pub(super) async fn release_runtime(
        &self,
        id: &str,
        rec: &ContainerRecord,
        kill_monitors: bool,
    ) {
        if kill_monitors {
            self.kill_stray_monitors(id);
        }
        if let Ok(rt) = self.runtime(&rec.handler) {
            if let Err(e) = rt.delete(id, true).await {
                warn!(container = %id, error = %e, "deleting from the runtime");
            }
        }
        let cgroup = self.cgroup_path(rec);
        if !cgroup.is_empty() {
            self.host.remove_container_cgroup(&cgroup);
        }
    }

    /// Undoes a container entirely, before returning: runtime state, rootfs
    /// mount, directory. Returns the record it removed, if there was one.
    /// For what never became a container (a create rolled back), and for
    /// a removal whose directory could not be moved out.
    pub(super) async fn destroy(&self, id: &str) -> Option<ContainerRecord> {
        let rec = self.records().get(id).cloned()?;
        self.exits.unwatch(id);
        self.release_runtime(id, &rec, never_ran(&rec)).await;
        // The monitor is gone (or never ran): its count of dropped log
        // bytes is final, and goes with the directory.
        self.log_drops
            .retire(id, gantry_monitor::crilog::read_dropped(&self.cdir(id)));
        let rootfs = self.cdir(id).join("bundle/rootfs");
        crate::container::image_volume::unmount_all(&*self.host, &self.cdir(id));
        // Before anything is deleted: below these are the pod's volumes.
        crate::userns::idmap::unbind_all(&self.cdir(id).join("idmapped"));
        if rec.rootfs_mounted {
            // Not mounted (a create cut short before the mount) is fine.
            let _ = self.host.unmount(&rootfs);
        }
        // The writable layer can be large: the worker is handed off while
        // it is removed.
        let _ = gantry_common::records::blocking(|| std::fs::remove_dir_all(self.cdir(id)));
        self.forget_caches(id);
        self.records.forget(id);
        // Only now that nothing is mounted from them may the image's
        // layers go.
        self.release_images(id).await;
        Some(rec)
    }

    fn forget_caches(&self, id: &str) {
        self.cpu_rates.forget(id);
        lock(&self.cgroup_paths).remove(id);
        lock(&self.fs_usage).remove(id);
    }

    /// Takes a stopped container out of the CRI's view in one durable step,
    /// its directory renamed under `removing/`, and returns what is left to
    /// undo there; `None` (nothing changed) if the directory could not be
    /// moved.
    fn move_out(&self, id: &str, rec: &ContainerRecord) -> Option<Leftovers> {
        // The reaper reads it from the bundle if it is not known yet.
        let cgroup = lock(&self.cgroup_paths).get(id).cloned();
        self.exits.unwatch(id);
        let dir = self.reaper.dir_of(id);
        if let Err(e) = self.records.move_out(id, &dir) {
            if self.records().contains_key(id) {
                warn!(container = %id, error = %e, "moving the container's directory out; removing it in place");
                return None;
            }
            warn!(container = %id, error = %e, "syncing the removal of the container's directory");
        }
        self.log_drops
            .retire(id, gantry_monitor::crilog::read_dropped(&dir));
        self.forget_caches(id);
        Some(Leftovers {
            id: id.to_string(),
            pod_id: rec.pod_id.clone(),
            dir,
            runtime: self.runtime(&rec.handler).ok(),
            cgroup,
            kill_monitors: never_ran(rec),
            rootfs_mounted: rec.rootfs_mounted,
        })
    }

    /// RemoveContainer: stops the container, takes it out of view (see
    /// [`Self::move_out`]), sends DELETED and returns; the reaper removes
    /// the rest in the background.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let Some(id) = self.resolve(id)? else {
            return Ok(());
        };
        self.stop(&id, 0).await?;
        let _guard = self.lock(&id).await;
        let Some(rec) = self.records().get(&id).cloned() else {
            return Ok(());
        };
        let leftovers = self.move_out(&id, &rec);
        if leftovers.is_none() && self.destroy(&id).await.is_none() {
            return Ok(());
        }
        let recs = self.records();
        self.emit_locked(
            &recs,
            &id,
            &rec.pod_id,
            cri::ContainerEventType::ContainerDeletedEvent,
        );
        drop(recs);
        if let Some(leftovers) = leftovers {
            self.reaper
                .spawn(leftovers, self.host.clone(), self.images.clone());
        }
        info!(container = %id, "container removed");
        Ok(())
    }

    /// Waits for the reaps of the pod's removed containers: the pod's own
    /// removal takes the cgroup and volumes they may still use.
    pub async fn wait_reaped(&self, pod_id: &str) {
        self.reaper.wait_pod(pod_id).await;
    }

    /// Waits for every reap under way (at shutdown).
    pub async fn wait_all_reaped(&self) {
        self.reaper.wait_all().await;
    }
}

/// Only a container not yet running can have a monitor left from a start
/// cut short; a running one's monitor records its exit.
fn never_ran(rec: &ContainerRecord) -> bool {
    rec.state == ContainerState::Creating
        || rec.state == ContainerState::Created && rec.monitor_pid == 0
}
