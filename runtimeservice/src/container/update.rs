//! UpdateContainerResources and ReopenContainerLog.

use super::*;

impl ContainerService {
    /// Asks the container's monitor to reopen its log file. The file is
    /// created here first, so it exists when the call returns.
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let r = self.running(id)?;
        if !self.host.monitor_alive(r.monitor_pid, &r.id) {
            return Err(Error::FailedPrecondition(format!(
                "the monitor of container {} is gone",
                r.id
            )));
        }
        let (dir, rel) = log_dir_and_file(&r);
        gantry_monitor::crilog::open_log(&dir, &rel)
            .map_err(Error::io(format!("creating {}", r.log_path)))?;
        // The monitor was verified by its command line.
        self.host
            .kill(r.monitor_pid, libc::SIGUSR1)
            .map_err(Error::io("signalling the monitor to reopen the log"))?;
        Ok(())
    }

    /// New resources for a container. A running one gets them from the
    /// runtime at once; the spec is kept in step either way, so a created
    /// container starts with them, and ContainerStatus reports them.
    pub async fn update_resources(
        &self,
        id: &str,
        res: cri::LinuxContainerResources,
    ) -> Result<()> {
        let id = self.existing(id)?.id;
        let _guard = self.lock(&id).await;
        let r = self.existing(&id)?;
        let oci = crate::oci::spec::oci_resources(&res);
        if r.state == ContainerState::Running {
            let file = self.cdir(&r.id).join("resources.json");
            write_atomic(&file, oci.to_string().as_bytes())
                .map_err(Error::io("writing resources.json"))?;
            self.runtime(&r.handler)?.update(&r.id, &file).await?;
        }
        if matches!(r.state, ContainerState::Created | ContainerState::Running) {
            let path = self.cdir(&r.id).join("bundle/config.json");
            let bytes =
                std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
            let mut spec: Value = serde_json::from_slice(&bytes)
                .map_err(Error::corrupt(format!("parsing {}", path.display())))?;
            // Only what the CRI resources say; device rules and pids stay.
            let current = &mut spec["linux"]["resources"];
            if !current.is_object() {
                *current = serde_json::json!({});
            }
            for key in ["memory", "cpu", "hugepageLimits", "unified"] {
                match oci.get(key) {
                    Some(v) => current[key] = v.clone(),
                    None => {
                        if let Some(o) = current.as_object_mut() {
                            o.remove(key);
                        }
                    }
                }
            }
            write_atomic(&path, spec.to_string().as_bytes())
                .map_err(Error::io("writing config.json"))?;
        }
        self.update(&r.id, |rec| {
            let linux = rec.config.linux.get_or_insert_with(Default::default);
            linux.resources = Some(res);
        })?;
        Ok(())
    }

    pub(super) fn cgroup_path(&self, r: &ContainerRecord) -> String {
        if let Some(p) = lock(&self.cgroup_paths).get(&r.id) {
            return p.clone();
        }
        let path = bundle_cgroup(&self.cdir(&r.id));
        // A bundle not written yet is asked again next time.
        if !path.is_empty() {
            lock(&self.cgroup_paths).insert(r.id.clone(), path.clone());
        }
        path
    }
}

/// The cgroup (relative to the hierarchy roots) the bundle in container
/// directory `dir` names; empty if it names none or is not there.
pub(super) fn bundle_cgroup(dir: &Path) -> String {
    std::fs::read(dir.join("bundle/config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v["linux"]["cgroupsPath"]
                .as_str()
                .map(crate::cgroup::fs_path)
        })
        .unwrap_or_default()
}
