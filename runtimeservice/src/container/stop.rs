//! StopContainer: the stop signal, the grace period, the kill.

use super::*;

impl ContainerService {
    pub(super) async fn wait_exit(&self, id: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (monitor, init) = self
            .records()
            .get(id)
            .map(|r| (r.monitor_pid, r.pid))
            .unwrap_or_default();
        // Most exits come within milliseconds of the signal: look again
        // soon, then less and less often.
        let mut pause = Duration::from_millis(2);
        loop {
            let exit_file = ContainerExit::path(&self.cdir(id));
            // The file is looked for only once the monitor is seen gone: it
            // writes the file just before exiting, so looking first could
            // miss a file written a moment later and overwrite it.
            if !self.host.monitor_alive(monitor, id)
                && !self.host.process_running(init)
                && !exit_file.exists()
            {
                // The monitor died without recording the exit (it was
                // killed, or crashed): nobody else will. The code is
                // unknown, which 255 says, as the runtimes do.
                warn!(container = %id, "the container's monitor is gone; recording an unknown exit");
                let unknown = ContainerExit {
                    exit_code: 255,
                    signal: 0,
                    finished_at: now_nanos(),
                };
                let _ = unknown.write(&self.cdir(id));
            }
            if exit_file.exists() {
                self.fold_exit(id);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The container's stop signal (SIGTERM unless its config or image
    /// names another), `timeout` seconds, then SIGKILL. Stopped and unknown
    /// containers succeed.
    pub async fn stop(&self, id: &str, timeout: i64) -> Result<()> {
        self.stop_with(id, timeout, None).await
    }

    /// SIGKILLs a running container's processes through its cgroup, without
    /// starting its runtime (a process start costs more CPU than the kill,
    /// and a pod's stop may kill hundreds). False when the runtime has to do
    /// it: a sandboxed runtime, no `cgroup.kill`, the init not where the
    /// record says.
    fn kill_by_cgroup(&self, rec: &ContainerRecord, rt: &dyn OciRuntime) -> bool {
        if rec.state != ContainerState::Running || rec.pid <= 0 || !rt.kills_by_cgroup() {
            return false;
        }
        let cgroup = self.cgroup_path(rec);
        // Only the container's own cgroup (`<pod cgroup>/<id>`, or the
        // systemd driver's `gantry-<id>.scope`): never the pod's above it.
        let leaf = cgroup.rsplit('/').next().unwrap_or_default();
        if !(leaf == rec.id
            || leaf == format!("{}-{}.scope", crate::cgroup::SYSTEMD_PREFIX, rec.id))
        {
            return false;
        }
        match self.host.kill_cgroup(&cgroup, rec.pid) {
            Ok(killed) => killed,
            Err(e) => {
                debug!(container = %rec.id, error = %e, "killing the container's cgroup failed; asking the runtime");
                false
            }
        }
    }

    /// [`Self::stop`]; a runtime process is started (for the kill) only
    /// while holding one of `runtime_slots`, if given: a pod's stop waits
    /// for all its containers' exits at once but bounds how many runtime
    /// processes it starts together.
    pub(crate) async fn stop_with(
        &self,
        id: &str,
        timeout: i64,
        runtime_slots: Option<&tokio::sync::Semaphore>,
    ) -> Result<()> {
        let Some(id) = self.resolve(id)? else {
            return Ok(());
        };
        let _guard = self.lock(&id).await;
        let Some(rec) = self.fold_exit(&id) else {
            return Ok(());
        };
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Ok(());
        }
        // Nothing runs yet (the runtime runs it at start); as with
        // containerd, stopping a created container leaves it created.
        if rec.state == ContainerState::Created && rec.monitor_pid == 0 {
            return Ok(());
        }
        let rt = self.runtime(&rec.handler)?;
        if timeout > 0 && rec.state == ContainerState::Running {
            let signal = crate::signal::recorded(rec.stop_signal);
            let number = crate::signal::number(signal).unwrap_or(libc::SIGTERM);
            debug!(container = %id, signal = signal.as_str_name(), "stopping");
            match rt.kill(&id, number, false).await {
                Ok(()) | Err(Error::NotFound(_)) | Err(Error::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
            if self
                .wait_exit(&id, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        if self.kill_by_cgroup(&rec, &*rt) {
            debug!(container = %id, "killed through its cgroup");
        } else {
            // Closed never: the semaphore is the caller's, alive all along.
            let _slot = match runtime_slots {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            match rt.kill(&id, libc::SIGKILL, true).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                // runsc signals only started containers; deleting one that
                // never started ends what its create left running (the
                // sandbox).
                Err(Error::FailedPrecondition(e)) if rec.state == ContainerState::Created => {
                    debug!(container = %id, error = %e, "the runtime cannot signal it; deleting it");
                    rt.delete(&id, true).await?;
                }
                Err(Error::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !self.wait_exit(&id, Duration::from_secs(10)).await {
            // A process stuck in the kernel (uninterruptible I/O): the
            // node's problem, and StopContainer may be retried.
            return Err(Error::Host {
                context: format!("stopping container {id}"),
                source: "it did not exit within 10 s of SIGKILL".into(),
            });
        }
        info!(container = %id, "container stopped");
        Ok(())
    }
}
