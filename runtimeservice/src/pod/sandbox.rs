//! StopPodSandbox and RemovePodSandbox as a whole: the pod's containers
//! first (in parallel, bounded), then the pod itself, with the sandbox
//! events kubelet's evented PLEG expects. The pod-only steps are
//! [`PodService::stop`] (`stop.rs`) and [`PodService::remove`]
//! (`remove.rs`).

use futures_util::StreamExt;

use super::*;
use crate::container::ContainerService;

/// Containers of one pod stopped or removed at the same time: enough to
/// stop a pod of 200 containers well within crictl's 2 s, few enough that
/// the runtime processes do not swamp the node.
const POD_STOP_PARALLEL: usize = 16;

impl PodService {
    /// StopPodSandbox: stops every container of the pod (with no grace
    /// period, as the CRI asks), then the pod. Idempotent.
    pub async fn stop_sandbox(&self, containers: &Arc<ContainerService>, id: &str) -> Result<()> {
        let Some(full) = self.store.resolve(id)? else {
            return Ok(());
        };
        for_each_container(containers, &full, false).await?;
        if self.stop(&full).await? {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    /// RemovePodSandbox: removes every container of the pod, then the pod
    /// (stopping it first if needed). Idempotent.
    pub async fn remove_sandbox(&self, containers: &Arc<ContainerService>, id: &str) -> Result<()> {
        let Some(full) = self.store.resolve(id)? else {
            return Ok(());
        };
        for_each_container(containers, &full, true).await?;
        // The containers' cgroups sit in the pod's, and their idmapped
        // binds on its volumes: the pod goes only after they have.
        containers.wait_reaped(&full).await;
        containers.forget_pod(&full);
        let (stopped, removed) = self.remove(&full).await?;
        if stopped {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerStoppedEvent);
        }
        if removed {
            containers.emit_pod_event(&full, cri::ContainerEventType::ContainerDeletedEvent);
        }
        Ok(())
    }
}

/// Stops (or removes) every container of a pod, `POD_STOP_PARALLEL` at a
/// time; the first failure is returned once all have been tried.
async fn for_each_container(
    containers: &Arc<ContainerService>,
    pod_id: &str,
    remove: bool,
) -> Result<()> {
    let results: Vec<Result<()>> = futures_util::stream::iter(containers.in_pod(pod_id))
        .map(|id| {
            let containers = containers.clone();
            async move {
                if remove {
                    containers.remove(&id).await
                } else {
                    containers.stop(&id, 0).await
                }
            }
        })
        .buffer_unordered(POD_STOP_PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}
