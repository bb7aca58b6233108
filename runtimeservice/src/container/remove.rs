//! RemoveContainer and what a container leaves behind: runtime state,
//! monitors, cgroups, mounts, leases.

use super::*;

/// Removes a container's (empty) cgroup from every hierarchy under `root`:
/// the v2 tree itself and each v1 controller's. A cgroup that still has
/// processes cannot be removed, and stays.
pub(super) fn remove_cgroup(root: &Path, cgroup: &str) {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let hierarchies = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for dir in std::iter::once(root.to_path_buf()).chain(hierarchies) {
        let _ = std::fs::remove_dir(dir.join(rel));
    }
}

/// SIGKILLs every monitor process of container `id`: the monitor proper
/// leads its own process group (it called setsid), which takes the
/// runtime's run with it; the short-lived relay does not, so it alone is
/// killed.
pub(super) fn kill_stray_monitors(id: &str) {
    for pid in monitors_of(id) {
        // SAFETY: getpgid and kill on a PID just checked to be this
        // container's monitor.
        unsafe {
            let target = if libc::getpgid(pid) == pid { -pid } else { pid };
            warn!(container = %id, pid, "killing a monitor left from an interrupted create");
            libc::kill(target, libc::SIGKILL);
        }
    }
}

/// The PIDs of container `id`'s monitor processes.
pub(super) fn monitors_of(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| monitor_alive(*pid, id))
        .collect()
}

impl ContainerService {
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
            kill_stray_monitors(id);
        }
        if let Ok(rt) = self.runtime(&rec.handler) {
            if let Err(e) = rt.delete(id, true).await {
                warn!(container = %id, error = %e, "deleting from the runtime");
            }
        }
        let cgroup = self.cgroup_path(rec);
        if !cgroup.is_empty() {
            remove_cgroup(Path::new("/sys/fs/cgroup"), &cgroup);
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
        crate::container::image_volume::unmount_all(&self.cdir(id));
        // Before anything is deleted: below these are the pod's volumes.
        crate::userns::idmap::unbind_all(&self.cdir(id).join("idmapped"));
        if rec.rootfs_mounted {
            let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(self.cdir(id));
        self.cpu_rates.forget(id);
        lock(&self.cgroup_paths).remove(id);
        lock(&self.fs_usage).remove(id);
        self.records().remove(id);
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
