//! How a container's end reaches its record: the monitor's exit file,
//! folded in by the exit watcher or by whoever looks first.

use super::*;

impl ContainerService {
    /// Listens for containers that exit on their own and records each exit
    /// (with its STOPPED event) as soon as the monitor has written it.
    pub fn spawn_exit_watcher(self: &Arc<Self>) -> Result<()> {
        let afd = self
            .exits
            .async_fd()
            .map_err(Error::io("registering the inotify instance"))?;
        // The task keeps the watcher, not the service, alive while it waits.
        let weak = Arc::downgrade(self);
        let watcher = self.exits.clone();
        tokio::spawn(async move {
            loop {
                let batch = match watcher.next(&afd).await {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "the exit watcher failed; exits are noticed only when containers are looked at");
                        watcher.disable();
                        return;
                    }
                };
                let Some(svc) = weak.upgrade() else { return };
                let mut ids = Vec::new();
                for exit in batch {
                    match exit {
                        Exit::Container(id) => ids.push(id),
                        Exit::Rescan => {
                            warn!("the inotify queue overflowed; looking at every live container");
                            ids.extend(svc.exits.watched());
                        }
                    }
                }
                ids.sort();
                ids.dedup();
                for id in ids {
                    let svc = svc.clone();
                    // Waits behind a create, start or stop of the same
                    // container, so its events keep their order.
                    tokio::spawn(async move {
                        let _guard = svc.lock(&id).await;
                        svc.fold_exit(&id);
                    });
                }
            }
        });
        Ok(())
    }

    /// The record with any recorded exit folded in, unless an operation on
    /// the container is under way: that operation (or the exit watcher,
    /// which waits for it) folds the exit, so events keep their order.
    pub(super) fn refresh(&self, id: &str) -> Option<ContainerRecord> {
        // The watcher folds a watched container's exit the moment the
        // monitor records it: no file to read on this (hot) path.
        if self.exits.is_watched(id) {
            return self.records().get(id).cloned();
        }
        match self.locks.try_lock(id) {
            Some(_guard) => self.fold_exit(id),
            None => self.records().get(id).cloned(),
        }
    }

    /// Folds the monitor's exit file into the record and sends STOPPED; the
    /// caller holds the container's lock.
    pub(super) fn fold_exit(&self, id: &str) -> Option<ContainerRecord> {
        let rec = self.records().get(id).cloned()?;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Some(rec);
        }
        let Some(exit) = ContainerExit::read(&self.cdir(id)) else {
            return Some(rec);
        };
        // The cgroup outlives the processes until the runtime deletes the
        // container, so the OOM count is still there to read.
        let oom = exit.signal == libc::SIGKILL
            && crate::stats::oom_kills(self.host.cgroup_root(), &self.cgroup_path(&rec)) > 0;
        let updated = self.update_then_emit(id, |r| {
            r.state = ContainerState::Exited;
            r.exit_code = exit.exit_code;
            r.finished_at = exit.finished_at;
            r.reason = if oom {
                "OOMKilled".into()
            } else if exit.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            if exit.signal != 0 {
                r.message = format!("killed by signal {}", exit.signal);
            }
            Some(cri::ContainerEventType::ContainerStoppedEvent)
        });
        match updated {
            Ok(r) => {
                self.exits.unwatch(id);
                self.metrics.container_exited(&r.reason);
                info!(container = %id, exit_code = r.exit_code, reason = %r.reason, "container exited");
                Some(r)
            }
            Err(e) => {
                warn!(container = %id, error = %e, "recording the container's exit");
                Some(rec)
            }
        }
    }
}
