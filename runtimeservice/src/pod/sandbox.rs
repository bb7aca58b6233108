//! StopPodSandbox and RemovePodSandbox as a whole: the pod's containers
//! first (in parallel, bounded), then the pod itself, with the sandbox
//! events kubelet's evented PLEG expects. The pod-only steps are
//! [`PodService::stop`] (`stop.rs`) and [`PodService::remove`]
//! (`remove.rs`).

use futures_util::StreamExt;

use super::*;
use crate::container::ContainerService;

/// Runtime processes one pod's stop or removal starts at the same time:
/// enough to keep both cores busy, few enough not to swamp the node. A
/// container killed through its cgroup needs none.
const POD_STOP_PARALLEL: usize = 16;

impl PodService {
    /// StopPodSandbox: stops every container of the pod (with no grace
    /// period, as the CRI asks), then the pod. Idempotent.
    pub async fn stop_sandbox(&self, containers: &Arc<ContainerService>, id: &str) -> Result<()> {
        let Some(full) = self.store.resolve(id)? else {
            return Ok(());
        };
        stop_containers(containers, &full).await?;
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
        remove_containers(containers, &full).await?;
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

/// Stops every container of a pod with no grace period: all killed and
/// their exits waited for together, at most `POD_STOP_PARALLEL` runtime
/// processes at a time for those the runtime has to kill. Each container's
/// stop is a task of its own: recording an exit writes (and syncs) its
/// record, which in one task would happen one container after another.
/// The first failure is returned once all have been tried.
async fn stop_containers(containers: &Arc<ContainerService>, pod_id: &str) -> Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(POD_STOP_PARALLEL));
    let tasks: Vec<_> = containers
        .in_pod(pod_id)
        .into_iter()
        .map(|id| {
            let containers = containers.clone();
            let slots = slots.clone();
            let span = info_span!("container", container = %id);
            tokio::spawn(
                async move { containers.stop_with(&id, 0, Some(&slots)).await }.instrument(span),
            )
        })
        .collect();
    let mut first = Ok(());
    for t in tasks {
        let result = t
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("stopping a container: {e}"))));
        if first.is_ok() {
            first = result;
        }
    }
    first
}

/// Removes every container of a pod, `POD_STOP_PARALLEL` at a time (each
/// removal runs the runtime); the first failure is returned once all have
/// been tried.
async fn remove_containers(containers: &Arc<ContainerService>, pod_id: &str) -> Result<()> {
    let results: Vec<Result<()>> = futures_util::stream::iter(containers.in_pod(pod_id))
        .map(|id| {
            let containers = containers.clone();
            async move { containers.remove(&id).await }
        })
        .buffer_unordered(POD_STOP_PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}
