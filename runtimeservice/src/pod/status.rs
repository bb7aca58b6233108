//! PodSandboxStatus and ListPodSandbox.

use super::*;

pub(super) fn state_of(r: &PodRecord) -> cri::PodSandboxState {
    match r.state {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        _ => cri::PodSandboxState::SandboxNotready,
    }
}

impl PodService {
    pub(super) fn resolve(&self, id: &str) -> Result<Option<String>> {
        self.store.resolve(id)
    }

    pub fn status(&self, id: &str, verbose: bool) -> Result<cri::PodSandboxStatusResponse> {
        let rec = self.store.find(id)?;
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "id": rec.id,
                "state": format!("{:?}", rec.state),
                "netns": rec.netns,
                "ipcNamespace": rec.ipc_ns,
                "utsNamespace": rec.uts_ns,
                "pidNamespace": rec.pid_ns,
                "initPid": rec.init_pid,
                "network": rec.network,
                "cgroup": rec.cgroup,
                "runtimeHandler": rec.runtime_handler,
                "podDir": self.store.pod_dir(&rec.id),
                "config": rec.config,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        let opts = namespace_options(&rec.config).cloned().unwrap_or_default();
        let ip = rec.ips.first().cloned().unwrap_or_default();
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                state: state_of(&rec) as i32,
                created_at: rec.created_at,
                network: Some(cri::PodSandboxNetworkStatus {
                    ip,
                    additional_ips: rec
                        .ips
                        .iter()
                        .skip(1)
                        .map(|ip| cri::PodIp { ip: ip.clone() })
                        .collect(),
                }),
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(opts),
                    }),
                }),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
                runtime_handler: rec.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    pub fn list(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        // Built from the records in place: kubelet lists every second, and
        // cloning whole records (configs included) first cost more than
        // the answer.
        let records = self.store.records();
        records
            .values()
            .filter(|r| r.state != PodState::Creating)
            .filter(|r| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && f.state
                            .as_ref()
                            .is_none_or(|s| s.state == state_of(r) as i32)
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config.labels.get(k) == Some(v))
                }
            })
            .map(|r| cri::PodSandbox {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                state: state_of(r) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect()
    }
}
