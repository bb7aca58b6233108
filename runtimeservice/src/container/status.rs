//! ContainerStatus and ListContainers, and the counts behind the metrics.

use super::*;

/// Whether `pid` is container `id`'s monitor: PIDs wrap, so its command
/// line must name the container too.
pub fn monitor_alive(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let s = String::from_utf8_lossy(&c);
            s.contains("gantry-monitor") && s.contains(id)
        })
        .unwrap_or(false)
}

pub(super) fn status_of(r: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: r.config.image.clone(),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r.log_path.clone(),
        resources: r
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        image_id: r.image_id.clone(),
        user: r.user.clone(),
        stop_signal: crate::signal::recorded(r.stop_signal) as i32,
    }
}

pub(super) fn cri_state(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Creating | ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

impl ContainerService {
    /// The statuses of a pod's containers, for PodSandboxStatus.
    pub fn statuses_in_pod(&self, pod_id: &str) -> Vec<cri::ContainerStatus> {
        self.in_pod(pod_id)
            .iter()
            .filter_map(|id| self.refresh(id))
            .filter(|r| r.state != ContainerState::Creating)
            .map(|r| status_of(&r))
            .collect()
    }

    /// Containers by state and handler, live monitors and their dropped
    /// log bytes, for the metrics.
    pub fn counts(&self) -> ContainerCounts {
        let recs: Vec<ContainerRecord> = self.records().values().cloned().collect();
        let mut c = ContainerCounts::default();
        let mut seen = Vec::new();
        for r in recs {
            let state = match r.state {
                ContainerState::Creating => "creating",
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
            };
            *c.by_state.entry((state, r.handler.clone())).or_insert(0) += 1;
            if r.state == ContainerState::Running && self.host.monitor_alive(r.monitor_pid, &r.id) {
                c.monitors_alive += 1;
            }
            if r.monitor_pid != 0 {
                seen.push((
                    r.id.clone(),
                    gantry_monitor::crilog::read_dropped(&self.cdir(&r.id)),
                ));
            }
        }
        c.log_dropped_bytes = self.log_drops.observe(&seen);
        c
    }

    /// Every container of a pod, for StopPodSandbox and RemovePodSandbox.
    pub fn in_pod(&self, pod_id: &str) -> Vec<String> {
        self.records()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn status(&self, id: &str, verbose: bool) -> Result<cri::ContainerStatusResponse> {
        let not_found = || Error::NotFound(format!("container {id}"));
        let full = self.resolve(id)?.ok_or_else(not_found)?;
        // A watched container's record is current; only others may have
        // an exit to fold in first.
        if !self.exits.is_watched(&full) {
            self.refresh(&full);
        }
        // Built from the record in place: kubelet asks for every changed
        // container, and the record holds the whole config.
        let (status, pid, monitor_pid, handler) = {
            let recs = self.records();
            let r = recs.get(&full).ok_or_else(not_found)?;
            (status_of(r), r.pid, r.monitor_pid, r.handler.clone())
        };
        let id = full;
        let mut info = HashMap::new();
        if verbose {
            let spec: Value = std::fs::read(self.cdir(&id).join("bundle/config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            info.insert(
                "info".to_string(),
                serde_json::json!({"pid": pid, "monitorPid": monitor_pid, "runtimeSpec": spec, "handler": handler}).to_string(),
            );
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub fn list(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        // Only live containers nobody watches need their exit file read.
        let unwatched: Vec<String> = self
            .records()
            .values()
            .filter(|r| is_live(r) && !self.exits.is_watched(&r.id))
            .map(|r| r.id.clone())
            .collect();
        for id in unwatched {
            self.refresh(&id);
        }
        let recs = self.records();
        recs.values()
            .filter(|r| r.state != ContainerState::Creating)
            .filter(|r| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
                        && f.state
                            .as_ref()
                            .is_none_or(|s| s.state == cri_state(r.state) as i32)
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config.labels.get(k) == Some(v))
                }
            })
            .map(|r| cri::Container {
                id: r.id.clone(),
                pod_sandbox_id: r.pod_id.clone(),
                metadata: r.config.metadata.clone(),
                image: r.config.image.clone(),
                image_ref: r.image_ref.clone(),
                state: cri_state(r.state) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                image_id: r.image_id.clone(),
            })
            .collect()
    }
}
