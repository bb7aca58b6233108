//! RemoveContainer and what a container leaves behind: runtime state,
//! monitors, cgroups, mounts, leases.

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

    /// Undoes a container entirely: runtime state, rootfs mount, directory.
    /// Returns the record it removed, if there was one.
    pub(super) async fn destroy(&self, id: &str) -> Option<ContainerRecord> {
        let rec = self.records().get(id).cloned()?;
        self.exits.unwatch(id);
        // Only a container not yet running can have a monitor left from a
        // start cut short; a running one's monitor records its exit.
        let unstarted = rec.state == ContainerState::Creating
            || rec.state == ContainerState::Created && rec.monitor_pid == 0;
        self.release_runtime(id, &rec, unstarted).await;
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
        self.cpu_rates.forget(id);
        lock(&self.cgroup_paths).remove(id);
        lock(&self.fs_usage).remove(id);
        self.records.forget(id);
        // Only now that nothing is mounted from them may the image's
        // layers go.
        self.release_images(id).await;
        Some(rec)
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let Some(id) = self.resolve(id)? else {
            return Ok(());
        };
        self.stop(&id, 0).await?;
        let _guard = self.lock(&id).await;
        if let Some(rec) = self.destroy(&id).await {
            let recs = self.records();
            self.emit_locked(
                &recs,
                &id,
                &rec.pod_id,
                cri::ContainerEventType::ContainerDeletedEvent,
            );
            drop(recs);
            info!(container = %id, "container removed");
        }
        Ok(())
    }
}
