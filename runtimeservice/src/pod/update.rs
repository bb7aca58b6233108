//! UpdatePodSandboxResources.

use super::*;

impl PodService {
    /// UpdatePodSandboxResources (in-place pod resize): applies the pod's
    /// new total resources (overhead included) to its cgroup. The pod must
    /// be ready and own a cgroup; see [`crate::cgroup::apply_pod_resources`]
    /// for what is refused.
    pub fn update_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let pod = self.store.find(id)?;
        if pod.state != crate::pod::PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if pod.cgroup.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} was created without a cgroup of its own",
                pod.id
            )));
        }
        let rel = crate::cgroup::pod_fs_path(self.config.cgroup_driver, &pod.cgroup);
        self.host.apply_pod_resources(&rel, resources)?;
        info!(pod = %pod.id, "pod resources updated");
        Ok(())
    }
}
