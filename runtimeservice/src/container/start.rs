//! StartContainer.

use super::*;

impl ContainerService {
    pub async fn start(&self, id: &str) -> Result<()> {
        let id = self
            .resolve(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let _guard = self.lock(&id).await;
        let rec = self
            .fold_exit(&id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if rec.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}, not created",
                rec.state
            )));
        }
        let rt = self.runtime(&rec.handler)?;
        // Taken before the start: a process that exits at once may be
        // reaped, and its finish time written, before `start` returns.
        let started_at = now_nanos();
        let (monitor_pid, pid) = if rec.monitor_pid != 0 {
            // Created by an earlier gantry, whose monitor had the runtime
            // create it at once.
            rt.start(&id).await?;
            (rec.monitor_pid, rec.pid)
        } else {
            // Watched before the monitor exists, so no exit goes unheard.
            if let Err(e) = self.exits.watch(&id, &self.cdir(&id)) {
                crate::events::warn_unwatched(&id, &e);
            }
            let started = Instant::now();
            let ran = self.run_monitor(&id, &rec, &*rt).await;
            // The monitor's report comes once `<runtime> run` is done.
            self.metrics
                .observe_runtime(rt.name(), "run", started.elapsed(), ran.is_ok());
            match ran {
                Ok(pids) => {
                    self.log_drops.track(&id);
                    self.metrics.observe_phase(phase::RUNTIME_START, started);
                    pids
                }
                Err(e) => {
                    // As containerd: a container that could not start has
                    // exited, with the reason why.
                    warn!(container = %id, error = %e, "container start failed");
                    self.exits.unwatch(&id);
                    self.undo_run(&id, &rec).await;
                    let message = e.to_string();
                    self.update_then_emit(&id, |r| {
                        r.state = ContainerState::Exited;
                        r.exit_code = 128;
                        r.finished_at = now_nanos();
                        r.reason = "StartError".into();
                        r.message = message;
                        Some(cri::ContainerEventType::ContainerStoppedEvent)
                    })?;
                    self.metrics.container_exited("StartError");
                    return Err(e);
                }
            }
        };
        self.update_then_emit(&id, |r| {
            r.state = ContainerState::Running;
            r.started_at = started_at;
            r.monitor_pid = monitor_pid;
            r.pid = pid;
            Some(cri::ContainerEventType::ContainerStartedEvent)
        })?;
        info!(container = %id, "container started");
        Ok(())
    }
}
