//! What RemoveContainer leaves behind once the container is gone from the
//! CRI's view: its runtime state, cgroup, mounts, writable layer, bundle
//! and image leases, cleared off the RPC's path.
//!
//! RemoveContainer renames the container's directory from `containers/` to
//! `removing/` (one rename, both parents synced): from then on the removal
//! is durable, whatever happens to the daemon. The directory, record
//! included, is all the reaper needs: a reap cut short by a crash or a
//! shutdown is finished at the next start by [`ContainerService::recover`],
//! before the image leases are reconciled. Mounts follow their directory
//! through a rename, so they are undone at the new path.

use tokio::sync::{watch, Semaphore};

use super::*;

/// The directory, beside `containers/` on the same filesystem, holding the
/// directories of removed containers not yet reaped.
pub(super) const REMOVING: &str = "removing";

/// Reaps run at the same time: enough to keep up with a pod of hundreds of
/// containers being removed, few enough that their runtime processes and
/// deletions do not crowd out the RPCs.
const REAP_PARALLEL: usize = 4;

/// The reaps under way, so that what depends on a container being entirely
/// gone (its pod's removal, which takes the pod's cgroup and volumes) can
/// wait for them.
pub(super) struct Reaper {
    dir: PathBuf,
    slots: Arc<Semaphore>,
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    pod_id: String,
    done: watch::Receiver<bool>,
}

/// One removed container's leftovers and what it takes to undo them.
pub(super) struct Leftovers {
    pub id: String,
    pub pod_id: String,
    /// Its directory, under `removing/`.
    pub dir: PathBuf,
    /// Its runtime, if its handler is still known.
    pub runtime: Option<Arc<dyn OciRuntime>>,
    /// Its cgroup, if known; else read from its bundle.
    pub cgroup: Option<String>,
    /// Monitors may be left from a start cut short (only a container that
    /// never ran can have one).
    pub kill_monitors: bool,
    pub rootfs_mounted: bool,
}

impl Reaper {
    pub(super) fn open(root: &Path) -> std::io::Result<Reaper> {
        let dir = root.join(REMOVING);
        private_dir(&dir)?;
        Ok(Reaper {
            dir,
            slots: Arc::new(Semaphore::new(REAP_PARALLEL)),
            pending: Mutex::default(),
        })
    }

    pub(super) fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The containers whose directory is waiting under `removing/` (left by
    /// a daemon that stopped before reaping them).
    pub(super) fn leftover_ids(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Reaps in the background; the caller has returned by the time it
    /// starts.
    pub(super) fn spawn(
        &self,
        leftovers: Leftovers,
        host: Arc<dyn crate::host::Host>,
        images: Arc<dyn ImageLookup>,
    ) {
        let (done_tx, done) = watch::channel(false);
        lock(&self.pending).insert(
            leftovers.id.clone(),
            Pending {
                pod_id: leftovers.pod_id.clone(),
                done,
            },
        );
        let slots = self.slots.clone();
        let span = info_span!("reap", container = %leftovers.id, pod = %leftovers.pod_id);
        tokio::spawn(
            async move {
                // Never closed: an error would only mean no limit.
                let _slot = slots.acquire_owned().await;
                let _ = leftovers.reap(&*host, &*images).await;
                // The entry goes when the waiters are told; a waiter that
                // looks after this sees the reap finished or no entry.
                let _ = done_tx.send(true);
            }
            .instrument(span),
        );
        self.prune();
    }

    /// Drops the entries of finished reaps, and of reap tasks cut short.
    fn prune(&self) {
        lock(&self.pending).retain(|_, p| !*p.done.borrow() && p.done.has_changed().is_ok());
    }

    /// Waits until every reap of a container of `pod_id` started so far has
    /// finished.
    pub(super) async fn wait_pod(&self, pod_id: &str) {
        self.wait(|p| p == pod_id).await
    }

    /// Waits until every reap started so far has finished.
    pub(super) async fn wait_all(&self) {
        self.wait(|_| true).await
    }

    async fn wait(&self, of_pod: impl Fn(&str) -> bool) {
        let waits: Vec<watch::Receiver<bool>> = lock(&self.pending)
            .values()
            .filter(|p| of_pod(&p.pod_id))
            .map(|p| p.done.clone())
            .collect();
        for mut done in waits {
            // A sender dropped without sending is a reap task that was cut
            // short (the runtime shutting down): nothing more to wait for,
            // and its directory is finished at the next start.
            let _ = done.wait_for(|d| *d).await;
        }
        self.prune();
    }

    /// Whether a reap of container `id` is under way.
    #[cfg(test)]
    pub(super) fn is_pending(&self, id: &str) -> bool {
        lock(&self.pending)
            .get(id)
            .is_some_and(|p| !*p.done.borrow())
    }
}

impl Leftovers {
    /// Undoes, in this order: monitors, the runtime's container and its
    /// cgroup, mounts (image volumes, idmapped binds, which sit on the
    /// pod's volumes, then the rootfs), the image leases, which must
    /// outlive every mount of the image's layers, and last the directory.
    /// A rootfs that cannot be unmounted keeps its leases and directory,
    /// and is tried again at the next start. Returns whether the leases
    /// were let go.
    pub(super) async fn reap(self, host: &dyn crate::host::Host, images: &dyn ImageLookup) -> bool {
        let id = &self.id;
        if self.kill_monitors {
            for pid in host.monitors_of(id) {
                warn!(container = %id, pid, "killing a monitor left from an interrupted create");
                host.kill_monitor(pid);
            }
        }
        if let Some(rt) = &self.runtime {
            if let Err(e) = rt.delete(id, true).await {
                warn!(container = %id, error = %e, "deleting from the runtime");
            }
        }
        let cgroup = self
            .cgroup
            .clone()
            .unwrap_or_else(|| bundle_cgroup(&self.dir));
        if !cgroup.is_empty() {
            host.remove_container_cgroup(&cgroup);
        }
        let dir = &self.dir;
        crate::container::image_volume::unmount_all(host, dir);
        crate::userns::idmap::unbind_all(&dir.join("idmapped"));
        if self.rootfs_mounted {
            match host.unmount(&dir.join("bundle/rootfs")) {
                // Not a mount point (a create cut short before the mount,
                // or a reap done up to here before a restart) is fine.
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => {
                    warn!(container = %id, error = %e,
                        "unmounting a removed container's rootfs; trying again at the next start");
                    return false;
                }
            }
        }
        // Nothing is mounted from the image's layers any more.
        if let Err(e) = images.release(id).await {
            warn!(container = %id, error = %e, "releasing the container's images");
        }
        // Last: the directory is what says a reap is still to be done.
        match gantry_common::records::blocking(|| std::fs::remove_dir_all(dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(container = %id, path = %dir.display(), error = %e,
                    "removing a removed container's directory; trying again at the next start");
            }
            _ => debug!(container = %id, "container reaped"),
        }
        true
    }
}
